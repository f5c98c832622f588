-- Two recordings of one user's recusal on one clue at once: both read the facts before either
-- wrote, so both were allowed, and the later one, under the clue's lock, found the recusal the
-- other had just recorded. clue_recuse() raised CLDUP for it, which clued answers
-- ALREADY_EXISTS: a client that takes ALREADY_EXISTS for "my own retry already landed" was told
-- something false (another recorder's recusal, another reason). A recording made after the
-- first one is FAILED_PRECONDITION "user N is already recused from this clue"
-- (docs/COOPERATION.md, "Twice"); the racing one now answers the same, with the same message
-- (CLPRE, whose precondition detail sql_errors.c names "already recused" as the fresh refusal
-- does). Nothing else changes; nothing is written either way.

-- Replaces clue_recuse of 0050_writes_recheck_what_authorized_them.sql: the same, and a
-- recusal of the user recorded meanwhile refused as CLPRE, as a fresh call is, not CLDUP.
CREATE OR REPLACE FUNCTION clue_recuse(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                       p_now_ms bigint, p_clue bigint, p_seen_owner bigint, p_user bigint,
                                       p_reason text, p_request_sha256 bytea DEFAULT NULL)
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
