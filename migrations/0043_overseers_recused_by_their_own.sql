-- A unit's recusals of its overseers' staff (docs/COOPERATION.md, "Who records").
--
-- A recusal hides the clue from the recused user. A LEADER of the owner unit could record one
-- for anyone, so a group could recuse its liaison room's leaders from its own clue: they lost
-- sight of it and, every one recused, could review none of its proposals. Now the staff of a
-- unit that oversees the clue (the owner's liaison room, the lead room of its joint case, the
-- reviewer of its pending proposal; never the owner itself) are recused only by themselves or
-- a LEADER of their own unit. clued decides so on the facts it read; under the clue's lock the
-- write looks again, since a proposal made or a case joined meanwhile can make the user's unit
-- an overseer: such a recording is refused as a change made meanwhile (CLVER), and nothing is
-- recorded.

-- Replaces clue_recuse of 0037_writes_recheck_under_the_clue_lock.sql: the same, and a
-- recording for a user of a unit overseeing the clue, by someone outside that unit, refused.
CREATE OR REPLACE FUNCTION clue_recuse(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint,
                                       p_clue bigint, p_seen_owner bigint, p_user bigint, p_reason text)
RETURNS recusals LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome := clue_request_begin(p_actor_user, p_request_id, 'RecordRecusal', p_clue, NULL);
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
  SELECT * INTO u FROM users WHERE id = p_user;
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
  PERFORM pg_advisory_xact_lock(hashtextextended('clue_handlers/' || p_clue || '/' || p_user, 0));
  INSERT INTO recusals (clue_id, user_id, reason, recorded_by, recorded_by_unit, recorded_at)
  VALUES (p_clue, p_user, p_reason, p_actor_user, p_actor_unit, clue_ms_ts(p_now_ms))
  ON CONFLICT (clue_id, user_id) DO NOTHING
  RETURNING * INTO r;
  IF r.id IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CLDUP', MESSAGE = format('user %s is already recused from this clue', p_user);
  END IF;
  DELETE FROM clue_handlers WHERE clue_id = p_clue AND user_id = p_user;
  was_handler := FOUND;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.recuse', 'clue', c.id, c.owner_unit, NULL, NULL, p_reason,
                       jsonb_build_object('recusal_id', r.id, 'user_id', p_user, 'user_unit_id', u.unit_id,
                                          'self', p_user = p_actor_user, 'unassigned', was_handler,
                                          'request_id', p_request_id));
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, recusal_id, owner_unit)
  VALUES (p_actor_user, p_request_id, 'RecordRecusal', c.id, r.id, c.owner_unit);
  RETURN r;
END $$;
