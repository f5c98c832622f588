-- An assignment the lead room made under a joint case ends when the clue leaves the case
-- (docs/COOPERATION.md, "Lifetime").
--
-- The lead room's LEADER assigns handlers to a clue of its joint case, and the row kept the
-- clue's owner as the unit that assigned (0019): it counted for as long as that owner kept
-- the clue. Once the clue left the case the lead room no longer saw it, so it could neither
-- see nor end the assignment, while the user it had seconded kept seeing another unit's clue
-- and adding notes to it. Now:
--
--   - clue_handlers.assigned_by_unit records the unit the assigning leader acted for;
--   - case_remove_clue() deletes, in its transaction, the rows the case's lead room made when
--     it does not own the clue, and its case.remove_clue event names the users whose
--     assignment it ended (unassigned_user_ids, left out when none), as the handover's event
--     does since 0032. Assignments by the owner unit's own leaders stay;
--   - clue_set_handler() refuses an assignment or unassignment the lead room's leader was
--     allowed while the clue was in the case and that reaches the database after the clue
--     left it (CLVER: reload and retry, when the server answers as it now sees the clue).
--
-- Cases have no end of their own (no call closes or dissolves one): leaving the case is the
-- one way a clue's tie to its lead room ends. A handover ends every assignment anyway (0032).

ALTER TABLE clue_handlers ADD COLUMN assigned_by_unit bigint REFERENCES units (id);

-- Users never change units, so the assigner's unit now is the unit it acted for.
UPDATE clue_handlers h SET assigned_by_unit = u.unit_id FROM users u WHERE u.id = h.assigned_by;

ALTER TABLE clue_handlers ALTER COLUMN assigned_by_unit SET NOT NULL;

COMMENT ON COLUMN clue_handlers.assigned_by_unit IS
  'the unit of the leader who assigned: the owner, or the lead room of the clue''s joint case';

-- Assignments already left behind by a clue that left the case whose lead room made them:
-- they end now, each with a clue.unassign event on the clue's chain that says why (no actor:
-- nobody asked for it, as the bootstrap's events have none). A lead room's assignment was
-- made under the clue's current case only if the clue had joined it by then; one made under
-- an earlier case of the same lead room ends too.
DO $$
DECLARE
  x record;
BEGIN
  FOR x IN
    SELECT h.clue_id, h.user_id, u.unit_id AS user_unit, c.owner_unit, c.state, h.assigned_by_unit
    FROM clue_handlers h
    JOIN clues c ON c.id = h.clue_id AND c.owner_unit = h.owner_unit
    JOIN users u ON u.id = h.user_id
    WHERE h.assigned_by_unit <> c.owner_unit
      AND NOT EXISTS (SELECT 1 FROM case_clues cc JOIN joint_cases jc ON jc.id = cc.case_id
                      WHERE cc.clue_id = h.clue_id AND jc.lead_unit = h.assigned_by_unit
                        AND cc.added_at <= h.assigned_at)
    ORDER BY h.clue_id, h.user_id
  LOOP
    DELETE FROM clue_handlers WHERE clue_id = x.clue_id AND user_id = x.user_id;
    PERFORM audit_append(NULL, NULL, 'clue.unassign', 'clue', x.clue_id, x.owner_unit, NULL, NULL,
                         'the clue had left the joint case whose lead room assigned the handler (migration 0034)',
                         jsonb_build_object('user_id', x.user_id, 'user_unit_id', x.user_unit, 'state', x.state,
                                            'assigned_by_unit_id', x.assigned_by_unit, 'cause', 'left_case'));
  END LOOP;
END
$$;

-- Replaces clue_set_handler of 0019_handlers_recusal.sql: the same, the assigning unit
-- recorded, and a lead room's call refused once the clue has left its case.
CREATE OR REPLACE FUNCTION clue_set_handler(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                            p_now_ms bigint, p_clue bigint, p_seen_owner bigint, p_user bigint,
                                            p_assign boolean, p_reason text)
RETURNS clues LANGUAGE plpgsql AS $$
DECLARE
  method text := CASE WHEN p_assign THEN 'AssignHandler' ELSE 'UnassignHandler' END;
  o clue_outcome := clue_request_begin(p_actor_user, p_request_id, method, p_clue, NULL);
  c clues;
  u users;
BEGIN
  IF (o.clue).id IS NOT NULL THEN
    RETURN o.clue;
  END IF;
  c := clue_lock_seen_owner(p_clue, p_seen_owner);
  -- The server allowed a leader of another unit than the owner as the lead room of the clue's
  -- joint case. Leaving the case bumps the clue's version, which this call does not compare:
  -- under the clue's lock, the case it is in now says whether that still holds.
  IF p_actor_unit <> c.owner_unit AND joint_case_lead(c.joint_case_id) IS DISTINCT FROM p_actor_unit THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s left its joint case meanwhile; reload it and retry', p_clue);
  END IF;
  SELECT * INTO u FROM users WHERE id = p_user;
  IF p_assign THEN
    PERFORM pg_advisory_xact_lock(hashtextextended('clue_handlers/' || p_clue || '/' || p_user, 0));
    IF EXISTS (SELECT 1 FROM recusals WHERE clue_id = p_clue AND user_id = p_user) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
        'user %s is recused from this clue and cannot be assigned to it', p_user);
    END IF;
    INSERT INTO clue_handlers (clue_id, user_id, owner_unit, assigned_by, assigned_by_unit, assigned_at)
    VALUES (p_clue, p_user, c.owner_unit, p_actor_user, p_actor_unit, clue_ms_ts(p_now_ms))
    ON CONFLICT (clue_id, user_id) DO UPDATE
      SET owner_unit = EXCLUDED.owner_unit, assigned_by = EXCLUDED.assigned_by,
          assigned_by_unit = EXCLUDED.assigned_by_unit, assigned_at = EXCLUDED.assigned_at
      WHERE clue_handlers.owner_unit <> EXCLUDED.owner_unit;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
        'user %s is already a handler of this clue', p_user);
    END IF;
  ELSE
    DELETE FROM clue_handlers WHERE clue_id = p_clue AND user_id = p_user AND owner_unit = c.owner_unit;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
        'user %s is not a handler of this clue', p_user);
    END IF;
  END IF;
  PERFORM audit_append(p_actor_user, p_actor_unit, CASE WHEN p_assign THEN 'clue.assign' ELSE 'clue.unassign' END,
                       'clue', c.id, c.owner_unit, NULL, NULL, p_reason,
                       jsonb_build_object('user_id', p_user, 'user_unit_id', u.unit_id, 'state', c.state,
                                          'request_id', p_request_id));
  PERFORM clue_request_record(p_actor_user, p_request_id, method, c.id, NULL, c.owner_unit);
  RETURN c;
END $$;

-- Replaces case_remove_clue of 0008_named_errors.sql: the same, and the assignments the
-- case's lead room made, when it does not own the clue, ended with the clue's membership.
CREATE OR REPLACE FUNCTION case_remove_clue(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint,
                                            p_case bigint, p_clue bigint, p_version bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
  c clues;
  ended bigint[];
BEGIN
  SELECT * INTO c FROM clues WHERE id = p_clue AND version = p_version AND pending_proposal_id IS NULL
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    PERFORM clue_refuse_stale(p_clue, p_version);
  END IF;
  UPDATE clues SET joint_case_id = NULL, version = version + 1, updated_at = clue_ms_ts(p_now_ms)
  WHERE id = c.id RETURNING * INTO c;
  DELETE FROM case_clues WHERE clue_id = c.id;
  -- The lead room assigned as the case's lead; that ends here. The event names the handlers
  -- whose assignment ended (those that counted: made while the owner owned the clue).
  WITH gone AS (DELETE FROM clue_handlers h
                WHERE h.clue_id = c.id AND h.assigned_by_unit = jc.lead_unit AND jc.lead_unit <> c.owner_unit
                RETURNING h.user_id, h.owner_unit)
  SELECT array_agg(gone.user_id ORDER BY gone.user_id) FILTER (WHERE gone.owner_unit = c.owner_unit)
  INTO ended FROM gone;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'case.remove_clue', 'clue', c.id, c.owner_unit, NULL, NULL,
                       p_reason, jsonb_strip_nulls(jsonb_build_object(
                         'case_id', jc.id, 'lead_unit_id', jc.lead_unit, 'state', c.state,
                         'version', c.version, 'unassigned_user_ids', to_jsonb(ended))));
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;
