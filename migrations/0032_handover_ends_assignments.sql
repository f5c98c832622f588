-- A handover ends the clue's assignments for good (docs/COOPERATION.md).
--
-- Until now a handover ended an assignment by the owner changing: a clue_handlers row counts
-- only while the unit that made it owns the clue. A handover back to that unit made the row
-- count again, without a new decision on the audit trail. The handover now deletes the clue's
-- handler rows in its transaction, and its clue.handover event names the users whose
-- assignment it ended (unassigned_user_ids, left out when none).

-- Replaces clue_handover of 0008_named_errors.sql: the same, and the handler rows deleted.
CREATE OR REPLACE FUNCTION clue_handover(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                         p_now_ms bigint, p_clue bigint, p_expected_version bigint,
                                         p_to_unit bigint, p_reason text)
RETURNS clue_outcome LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome;
  c clues;
  p proposals;
  pid bigint;
  from_unit bigint;
  ended bigint[];
  now_ts timestamptz := clue_ms_ts(p_now_ms);
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'HandOver', p_clue, NULL);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o;
  END IF;
  SELECT pending_proposal_id INTO pid FROM clues WHERE id = p_clue;
  IF pid IS NOT NULL THEN
    PERFORM 1 FROM proposals WHERE id = pid FOR NO KEY UPDATE;
  END IF;
  SELECT * INTO c FROM clues WHERE id = p_clue FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'clue not found';
  END IF;
  IF c.version <> p_expected_version THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s is at version %s, not the expected %s: it changed meanwhile; reload it and retry',
      p_clue, c.version, p_expected_version);
  END IF;
  IF c.pending_proposal_id IS DISTINCT FROM pid THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s changed meanwhile; reload it and retry', p_clue);
  END IF;
  from_unit := c.owner_unit;

  IF pid IS NOT NULL THEN
    UPDATE proposals SET status = 'WITHDRAWN', decided_at = now_ts
    WHERE id = pid RETURNING * INTO p;
    PERFORM audit_append(p_actor_user, p_actor_unit, 'proposal.withdraw', 'clue', c.id, from_unit,
                         p.from_state, p.target, p_reason,
                         jsonb_build_object('proposal_id', p.id, 'reviewer_unit_id', p.reviewer_unit,
                                            'cause', 'handover', 'to_unit_id', p_to_unit,
                                            'request_id', p_request_id));
  END IF;

  UPDATE clues SET owner_unit = p_to_unit, version = version + 1, updated_at = now_ts,
                   pending_proposal_id = NULL, pending_reviewer_unit = NULL
  WHERE id = c.id RETURNING * INTO c;
  UPDATE clue_reporters SET owner_unit = p_to_unit WHERE clue_id = c.id;
  UPDATE proposals SET owner_unit = p_to_unit WHERE clue_id = c.id;
  UPDATE clue_requests SET owner_unit = p_to_unit WHERE clue_id = c.id;
  UPDATE notes SET owner_unit = p_to_unit WHERE clue_id = c.id;
  UPDATE case_clues SET owner_unit = p_to_unit WHERE clue_id = c.id;
  -- Every assignment ends here, for good: the rows go, so that no later handover back to the
  -- unit that made them can bring them back. The event names the handlers it ended.
  WITH gone AS (DELETE FROM clue_handlers h WHERE h.clue_id = c.id RETURNING h.user_id, h.owner_unit)
  SELECT array_agg(gone.user_id ORDER BY gone.user_id) FILTER (WHERE gone.owner_unit = from_unit)
  INTO ended FROM gone;

  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.handover', 'clue', c.id, c.owner_unit, NULL, NULL,
                       p_reason, jsonb_strip_nulls(jsonb_build_object(
                         'from_unit_id', from_unit, 'to_unit_id', p_to_unit, 'state', c.state,
                         'registration_number', c.registration_number, 'version', c.version,
                         'withdrawn_proposal_id', pid, 'case_id', c.joint_case_id,
                         'unassigned_user_ids', to_jsonb(ended), 'request_id', p_request_id)));
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, owner_unit, clue_version)
  VALUES (p_actor_user, p_request_id, 'HandOver', c.id, c.owner_unit, c.version);
  o.clue := c;
  IF pid IS NOT NULL THEN
    o.proposal := p;
  END IF;
  RETURN o;
END $$;
