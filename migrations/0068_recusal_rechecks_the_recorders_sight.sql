-- A recusal is written only while its recorder still sees the clue (docs/COOPERATION.md, "Who
-- records": the recorder must see the clue, else NOT_FOUND).
--
-- clue_recuse() looked again under the clue's lock at the owner (clue_lock_seen_owner()) and,
-- for a recorder other than the user or a leader of the user's unit, at the lead room's
-- standing (clue_refuse_left_case()). The user and a leader of the user's unit stand on
-- nothing of the clue's case, so nothing was looked at for them; but their sight of the clue
-- may rest on what another call ends: a member of a unit taking part in the clue's joint case,
-- a handler seconded from another unit, a member of the unit reviewing the clue's pending
-- proposal. A recording decided while the recorder saw the clue, and reaching the database
-- after the unit was removed from the case, the clue taken out of it, the assignment ended or
-- the review decided, was written and answered OK (a fresh call: NOT_FOUND "clue not found"),
-- and the clue's chain logged a unit that no longer saw the clue acting on it.
--
-- clued now reads, for every recorder, whether the recorder still sees the clue, with the
-- predicate every read uses (the clue scope's condition, service/clue_scope.c), and passes it
-- as p_recorder_sees; the write refuses a recorder who does not, after the clue's lock, as a
-- fresh call and a missing clue are refused: CLNOF "clue not found", which clued answers with
-- a missing clue's rich details. Nothing is written (no recusal, no event, no record under the
-- key, has_recusals left as it was).
--
-- The ordering this gives, as AddNote's (service/note.c): clued's transaction takes the
-- request key's lock, then the clue's (FOR NO KEY UPDATE, as clue_lock_seen_owner() takes it),
-- each in a statement of its own, and reads the sight in the third statement, whose snapshot
-- is taken once both are held. Every change that ends sight by holding the clue until it
-- commits (the clue taken out of its case, an assignment ended, a review decided, the clue
-- handed over) is therefore either committed before that snapshot and seen, or waits for the
-- recusal and comes after it, when the recorder still saw the clue. A unit removed from the
-- case (case_remove_participant()) takes the case's row, not the clue: a removal that
-- committed before the recusal's write took its locks is seen in that snapshot and refuses the
-- recording; one still being written then is not waited for, and the recusal, decided and
-- written while the removal had not yet committed, is recorded, as a note is in the same race.
-- The sight is read after clue_request_begin()'s look at the key, so a retry of a recording
-- that landed is answered by its recusal, as before, whoever sees the clue now.

DROP FUNCTION clue_recuse(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint,
                          p_clue bigint, p_seen_owner bigint, p_user bigint, p_reason text,
                          p_request_sha256 bytea);

-- Replaces clue_recuse of 0060_recusal_recorded_twice_at_once.sql: the same, and a recorder
-- who no longer sees the clue (p_recorder_sees, read by clued after the clue's lock) refused
-- as for a missing clue.
CREATE FUNCTION clue_recuse(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                            p_now_ms bigint, p_clue bigint, p_seen_owner bigint, p_user bigint,
                            p_reason text, p_recorder_sees boolean, p_request_sha256 bytea DEFAULT NULL)
 RETURNS recusals
 LANGUAGE plpgsql
AS $$
DECLARE
  o clue_outcome := clue_request_begin(p_actor_user, p_request_id, 'RecordRecusal', p_clue, NULL, p_request_sha256);
  c clues;
  u users;
  r recusals;
  was_handler boolean;
BEGIN
  IF (o.clue).id IS NOT NULL THEN
    SELECT x.* INTO r FROM clue_requests q JOIN recusals x ON x.id = q.recusal_id
    WHERE q.user_id = p_actor_user AND q.request_id = p_request_id;
    RETURN r;
  END IF;
  c := clue_lock_seen_owner(p_clue, p_seen_owner, p_actor_user);
  -- Whoever records, the recorder must see the clue; the sight a case, an assignment or a
  -- review lent it may have ended since clued decided. NULL (not said) refuses too.
  IF p_recorder_sees IS NOT TRUE THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'clue not found';
  END IF;
  -- FOR SHARE, as clue_set_handler(): a disable being written is waited for and seen.
  SELECT * INTO u FROM users WHERE id = p_user FOR SHARE;
  -- The user records their own conflict, or a leader of their unit does: neither stands on
  -- the clue's case. Anyone else is a leader of the owner or of the case's lead room, and
  -- records none for the staff of a unit overseeing the clue.
  IF p_user <> p_actor_user AND u.unit_id IS DISTINCT FROM p_actor_unit THEN
    PERFORM clue_refuse_left_case(c, p_actor_unit);
    IF u.unit_id <> c.owner_unit AND
       (u.unit_id = c.pending_reviewer_unit OR
        u.unit_id = (SELECT ou.liaison_room_id FROM units ou WHERE ou.id = c.owner_unit) OR
        (c.joint_case_id IS NOT NULL AND u.unit_id = joint_case_lead(c.joint_case_id))) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
        'user %s''s unit oversees clue %s since it was read (a proposal or a joint case meanwhile); reload it and retry',
        p_user, p_clue);
    END IF;
  END IF;
  IF u.disabled THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = 'user_id must name an active MEMBER or LEADER of a GROUP, ROOM or REGION';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('clue_handlers/' || p_clue || '/' || p_user, 0));
  INSERT INTO recusals (clue_id, user_id, reason, recorded_by, recorded_by_unit, recorded_at)
  VALUES (p_clue, p_user, p_reason, p_actor_user, p_actor_unit, clue_ms_ts(p_now_ms))
  ON CONFLICT (clue_id, user_id) DO NOTHING
  RETURNING * INTO r;
  -- Another recording of this user committed since the facts read (the two waited for each
  -- other at the clue's lock): refused as the later recording would be had it read after
  -- (authz_can_recuse(): FAILED_PRECONDITION), not as a duplicate of this call's own.
  IF r.id IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('user %s is already recused from this clue', p_user);
  END IF;
  DELETE FROM clue_handlers WHERE clue_id = p_clue AND user_id = p_user;
  was_handler := FOUND;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.recuse', 'clue', c.id, c.owner_unit, NULL, NULL, p_reason,
                       jsonb_build_object('recusal_id', r.id, 'user_id', p_user, 'user_unit_id', u.unit_id,
                                          'self', p_user = p_actor_user, 'unassigned', was_handler,
                                          'request_id', p_request_id));
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, recusal_id, owner_unit, request_sha256)
  VALUES (p_actor_user, p_request_id, 'RecordRecusal', c.id, r.id, c.owner_unit, p_request_sha256);
  RETURN r;
END $$;
