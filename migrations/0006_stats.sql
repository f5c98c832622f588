-- Stage deadlines and statistics (DESIGN.md §2 "Stage deadlines", §6): ExtendDeadline's write,
-- GetStatistics' query, and the indexes that keep the latter fast on a large audit trail.
--
-- Entering a stage already sets its deadline and clears deadline_extended
-- (clue_enter_state() of 0003), so a clue may extend each stage's deadline once.

-- ---- ExtendDeadline --------------------------------------------------------------------------

-- Extend the current stage's deadline of clue p_clue by p_days days (of 86,400 s each, as the
-- server counts stage deadlines), once per stage; the server has decided who may. Compare-and-
-- swap on the version; the deadline grows from the current deadline, not from now, so an
-- overdue clue stays overdue unless the extension reaches past now. Refused meanwhile:
-- a pending proposal (it was made against this version; review it first), a terminal state
-- or a stage without a deadline. Returns the clue, or the first call's for a retried
-- request_id. Audit action clue.deadline_extend: no from/to (the state does not change); the
-- old and new deadlines are in the details.
CREATE FUNCTION clue_extend_deadline(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_clue bigint,
  p_expected_version bigint, p_days int, p_reason text)
RETURNS clues LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome;
  c clues;
  old_ms bigint;
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'ExtendDeadline', p_clue, NULL);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o.clue;
  END IF;
  SELECT * INTO c FROM clues
  WHERE id = p_clue AND version = p_expected_version AND pending_proposal_id IS NULL
    AND state NOT IN ('CLOSED', 'TRANSFERRED_TO_JUDICIAL') AND stage_deadline IS NOT NULL
    AND NOT deadline_extended
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    SELECT * INTO c FROM clues WHERE id = p_clue;
    IF FOUND AND c.version = p_expected_version AND c.deadline_extended THEN
      RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = 'the deadline of the current stage was already extended once';
    END IF;
    IF FOUND AND c.version = p_expected_version AND c.stage_deadline IS NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = format('clue is %s; its stage has no deadline to extend',
                                                              c.state);
    END IF;
    PERFORM clue_refuse_stale(p_clue, p_expected_version);
  END IF;
  old_ms := (extract(epoch FROM c.stage_deadline) * 1000)::bigint;
  UPDATE clues SET
    stage_deadline = stage_deadline + (p_days::bigint * 86400000) * interval '1 millisecond',
    deadline_extended = true,
    version = version + 1,
    updated_at = clue_ms_ts(p_now_ms)
  WHERE id = p_clue
  RETURNING * INTO c;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.deadline_extend', 'clue', c.id, c.owner_unit, NULL, NULL,
                       p_reason, jsonb_build_object('state', c.state, 'days', p_days, 'old_deadline_ms', old_ms,
                                                    'new_deadline_ms', old_ms + p_days::bigint * 86400000,
                                                    'version', c.version, 'request_id', p_request_id));
  PERFORM clue_request_record(p_actor_user, p_request_id, 'ExtendDeadline', c.id, NULL, c.owner_unit);
  RETURN c;
END $$;

-- ---- statistics ------------------------------------------------------------------------------

-- The transitions of clues are the audit events clue.submit (nothing -> ACCEPTED), clue.move
-- (a move without co-review) and proposal.approve (a co-review move, applied on approval),
-- each carrying from/to and the clue's owner unit at the time. Two partial indexes over them
-- serve GetStatistics: by unit and time, to find a few units' transitions of a period; and in
-- chain order with what the statistics read, so that a period of every unit is one index-only
-- scan already ordered for measuring the time between a clue's transitions.
CREATE INDEX audit_events_clue_transitions_idx ON audit_events (owner_unit, at)
  WHERE subject_type = 'clue' AND action IN ('clue.submit', 'clue.move', 'proposal.approve');
CREATE INDEX audit_events_clue_chain_idx ON audit_events (subject_id, seq)
  INCLUDE (at, owner_unit, from_state, to_state)
  WHERE subject_type = 'clue' AND action IN ('clue.submit', 'clue.move', 'proposal.approve');

-- The title of joint case p_case (0005_cases.sql), or NULL.
CREATE FUNCTION joint_case_title(p_case bigint) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT title FROM joint_cases WHERE id = p_case $$;

-- GetStatistics over the period [p_from_ms, p_to_ms) for the units p_units (decided by the
-- server from the caller's scope); "now" for overdue counts is p_now_ms, the server's clock.
-- Periods are judged on the audit events' own times. One row per unit (kind 'unit', in id
-- order), then one per joint case (kind 'case', in id order). Definitions, per unit, all by
-- the owner_unit the event recorded (the owner at the time of the transition):
--   received         clue.submit events (the submitting unit; a handover is not a receipt,
--                    and what happens after it counts for the new owner)
--   checks_started   transitions into PRELIMINARY_CHECK
--   filed            transitions into FILED (approved proposals)
--   closed           transitions into CLOSED, split by disposal: from ACCEPTED by the
--                    disposal the move carried (TALK_OR_LETTER_INQUIRY, NO_FURTHER_ACTION,
--                    SHELVED); from PRELIMINARY_CHECK as FINDING; from FILED as SANCTION
--   transferred      transitions into TRANSFERRED_TO_JUDICIAL (approved proposals)
--   overdue_now      clues the unit owns now whose current stage deadline is before now
--                    (terminal clues have none)
--   median_*         median days spent in ACCEPTED, PRELIMINARY_CHECK and FILED by the stages
--                    completed (left) in the period, from entering to leaving, counted for
--                    the unit that moved the clue out (the stay began under whoever owned the
--                    clue then); 0 when none
--   zero_disposal    the unit disposed of no clue in the period: no transition into
--                    PRELIMINARY_CHECK, CLOSED, FILED or TRANSFERRED_TO_JUDICIAL (every
--                    decision on a clue counts), and the unit existed before the period ended
-- Per joint case: the cases with a member clue owned by one of p_units or in which one of them
-- participates, narrowed to the cases unit p_viewer_unit leads or joins unless it is NULL
-- (auditors and administrators see all). Figures cover all member clues of such a case (as
-- its participants see them): clues = members now; closed and transferred = member clues that
-- entered CLOSED / TRANSFERRED_TO_JUDICIAL in the period; overdue_now as for units.
CREATE FUNCTION clue_stats(p_from_ms bigint, p_to_ms bigint, p_now_ms bigint, p_units bigint[],
                           p_viewer_unit bigint)
RETURNS TABLE (kind text, id bigint, code text, name text, received bigint, checks_started bigint,
               filed bigint, closed bigint, closed_talk bigint, closed_no_action bigint, closed_shelved bigint,
               closed_finding bigint, closed_sanction bigint, transferred bigint, overdue_now bigint,
               median_accepted double precision, median_check double precision, median_filed double precision,
               zero_disposal boolean, clues bigint)
LANGUAGE plpgsql STABLE
-- A report over many rows: plans for this call's own arguments (one unit or all of them want
-- different plans), enough memory to sort in memory, and no JIT, whose compile time costs
-- more than it saves here.
SET plan_cache_mode = force_custom_plan SET work_mem = '32MB' SET jit = off AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH
  -- The period's transitions of the units in chain order, each exit from a stage with the
  -- days since the transition that entered that stage: the clue's previous transition. That
  -- is the previous row here when it entered the stage left (states only move forward, so no
  -- transition can lie between two that match up); otherwise (it predates the period, or a
  -- unit outside p_units made it) one index lookup finds it.
  tr AS (
    SELECT e.owner_unit, e.from_state, e.to_state,
           CASE WHEN e.from_state IS NOT NULL THEN date_part('epoch', e.at - CASE
             WHEN lag(e.to_state) OVER w = e.from_state THEN lag(e.at) OVER w
             ELSE (SELECT CASE WHEN p.to_state = e.from_state THEN p.at END FROM audit_events p
                   WHERE p.subject_type = 'clue' AND p.action IN ('clue.submit', 'clue.move', 'proposal.approve')
                     AND p.subject_id = e.subject_id AND p.seq < e.seq
                   ORDER BY p.seq DESC LIMIT 1) END) / 86400 END AS days
    FROM audit_events e
    WHERE e.subject_type = 'clue' AND e.action IN ('clue.submit', 'clue.move', 'proposal.approve')
      AND e.owner_unit = ANY (p_units) AND e.at >= clue_ms_ts(p_from_ms) AND e.at < clue_ms_ts(p_to_ms)
    WINDOW w AS (PARTITION BY e.subject_id ORDER BY e.seq)
  ),
  counts AS (
    SELECT tr.owner_unit AS unit,
           count(*) FILTER (WHERE tr.from_state IS NULL) AS received,
           count(*) FILTER (WHERE tr.to_state = 'PRELIMINARY_CHECK') AS checks_started,
           count(*) FILTER (WHERE tr.to_state = 'FILED') AS filed,
           count(*) FILTER (WHERE tr.to_state = 'CLOSED') AS closed,
           count(*) FILTER (WHERE tr.to_state = 'CLOSED' AND tr.from_state = 'PRELIMINARY_CHECK') AS closed_finding,
           count(*) FILTER (WHERE tr.to_state = 'CLOSED' AND tr.from_state = 'FILED') AS closed_sanction,
           count(*) FILTER (WHERE tr.to_state = 'TRANSFERRED_TO_JUDICIAL') AS transferred,
           count(*) FILTER (WHERE tr.from_state IS NOT NULL) AS disposals,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY tr.days) FILTER (WHERE tr.from_state = 'ACCEPTED') AS m_accepted,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY tr.days)
             FILTER (WHERE tr.from_state = 'PRELIMINARY_CHECK') AS m_check,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY tr.days) FILTER (WHERE tr.from_state = 'FILED') AS m_filed
    FROM tr GROUP BY tr.owner_unit
  ),
  -- The disposals of clues closed from ACCEPTED, from the moves' details. Apart from tr so that
  -- only these rows are read from the table (in time order, as they were appended).
  disposals AS (
    SELECT x.owner_unit AS unit,
           count(*) FILTER (WHERE x.disposal = 'TALK_OR_LETTER_INQUIRY') AS closed_talk,
           count(*) FILTER (WHERE x.disposal = 'NO_FURTHER_ACTION') AS closed_no_action,
           count(*) FILTER (WHERE x.disposal = 'SHELVED') AS closed_shelved
    FROM (
      SELECT e.owner_unit, e.details::jsonb ->> 'disposal' AS disposal FROM audit_events e
      WHERE e.subject_type = 'clue' AND e.action = 'clue.move' AND e.from_state = 'ACCEPTED' AND e.to_state = 'CLOSED'
        AND e.owner_unit = ANY (p_units) AND e.at >= clue_ms_ts(p_from_ms) AND e.at < clue_ms_ts(p_to_ms)
    ) x
    GROUP BY x.owner_unit
  ),
  overdue AS (
    SELECT c.owner_unit AS unit, count(*) AS n FROM clues c
    WHERE c.owner_unit = ANY (p_units) AND c.stage_deadline < clue_ms_ts(p_now_ms)
    GROUP BY c.owner_unit
  ),
  cases AS (
    SELECT DISTINCT k.case_id FROM (
      SELECT c.joint_case_id AS case_id FROM clues c
      WHERE c.joint_case_id IS NOT NULL AND c.owner_unit = ANY (p_units)
      UNION ALL
      SELECT joint_cases_of_unit(u) FROM unnest(p_units) u
    ) k
    WHERE k.case_id IS NOT NULL
      AND (p_viewer_unit IS NULL OR k.case_id IN (SELECT joint_cases_of_unit(p_viewer_unit)))
  ),
  members AS (
    SELECT c.id, c.joint_case_id AS case_id, c.stage_deadline FROM clues c
    WHERE c.joint_case_id IN (SELECT case_id FROM cases)
  ),
  case_rows AS (
    SELECT m.case_id, count(*) AS clues,
           count(*) FILTER (WHERE m.stage_deadline < clue_ms_ts(p_now_ms)) AS overdue_now,
           sum(x.closed)::bigint AS closed, sum(x.transferred)::bigint AS transferred
    FROM members m CROSS JOIN LATERAL (
      SELECT count(*) FILTER (WHERE e.to_state = 'CLOSED') AS closed,
             count(*) FILTER (WHERE e.to_state = 'TRANSFERRED_TO_JUDICIAL') AS transferred
      FROM audit_events e
      WHERE e.subject_type = 'clue' AND e.action IN ('clue.submit', 'clue.move', 'proposal.approve')
        AND e.subject_id = m.id AND e.at >= clue_ms_ts(p_from_ms) AND e.at < clue_ms_ts(p_to_ms)) x
    GROUP BY m.case_id
  )
  SELECT 'unit'::text, u.id, u.code, u.name, coalesce(k.received, 0), coalesce(k.checks_started, 0),
         coalesce(k.filed, 0), coalesce(k.closed, 0), coalesce(d.closed_talk, 0), coalesce(d.closed_no_action, 0),
         coalesce(d.closed_shelved, 0), coalesce(k.closed_finding, 0), coalesce(k.closed_sanction, 0),
         coalesce(k.transferred, 0), coalesce(o.n, 0), coalesce(k.m_accepted, 0), coalesce(k.m_check, 0),
         coalesce(k.m_filed, 0), coalesce(k.disposals, 0) = 0 AND u.created_at < clue_ms_ts(p_to_ms),
         NULL::bigint
  FROM units u
  LEFT JOIN counts k ON k.unit = u.id
  LEFT JOIN disposals d ON d.unit = u.id
  LEFT JOIN overdue o ON o.unit = u.id
  WHERE u.id = ANY (p_units)
  UNION ALL
  SELECT 'case'::text, r.case_id, NULL::text, joint_case_title(r.case_id), NULL::bigint, NULL::bigint,
         NULL::bigint, r.closed, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint,
         r.transferred, r.overdue_now, NULL::double precision, NULL::double precision, NULL::double precision,
         NULL::boolean, r.clues
  FROM case_rows r
  ORDER BY 1 DESC, 2;
END $$;
