-- GetStatistics' case rows come in pages (proto/clue/v1/stats.proto GetStatisticsRequest):
-- clue_stats() listed every joint case of the scope whatever the period, zeros included, and
-- cases never end, so its answer grew with every case ever made until it passed a gRPC
-- client's 4 MiB limit, and then the unit figures could not be read either. It now takes the
-- case id a page follows (p_case_after; 0: from the first) and how many case rows at most
-- (p_case_limit; 0: none), and lists the cases chosen as before, in id order, from that id on
-- and no more: only those rows' member clues and audit events are read. The unit rows are
-- unchanged and whole in every call.

DROP FUNCTION clue_stats(bigint, bigint, bigint, bigint[], bigint, bigint);

-- Replaces clue_stats of 0036_case_stats_follow_recusals.sql: the same unit rows; of the case
-- rows, at most p_case_limit, of the cases with an id above p_case_after.
--
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
-- Per joint case: the cases in which one of p_units takes part (leads or joins) or with a
-- member clue owned by one of them, narrowed to the cases unit p_viewer_unit leads or joins
-- unless it is NULL (auditors and administrators see all). The member clues counted are those
-- the user p_viewer_user is not recused from (all of them when NULL), as GetJointCase lists
-- them to that user: clues = members now; closed and transferred = member clues that entered
-- CLOSED / TRANSFERRED_TO_JUDICIAL in the period; overdue_now as for units. A case without
-- such a member clue has a row of zeros. Of the cases chosen, only those with an id above
-- p_case_after (0: all), the first p_case_limit of them in id order (0: none): a page of
-- GetStatistics' case rows, the server asking for one more than it sends to know whether
-- more follow.
CREATE FUNCTION clue_stats(p_from_ms bigint, p_to_ms bigint, p_now_ms bigint, p_units bigint[],
                           p_viewer_unit bigint, p_viewer_user bigint, p_case_after bigint,
                           p_case_limit integer)
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
  -- A clue the viewer is recused from is, for them, no member of its case (docs/COOPERATION.md),
  -- here and in members.
  cases AS (
    SELECT DISTINCT k.case_id FROM (
      SELECT c.joint_case_id AS case_id FROM clues c
      WHERE c.joint_case_id IS NOT NULL AND c.owner_unit = ANY (p_units)
        AND NOT (c.has_recusals AND clue_user_recused(c.id, p_viewer_user))
      UNION ALL
      SELECT joint_cases_of_unit(u) FROM unnest(p_units) u
    ) k
    WHERE k.case_id IS NOT NULL AND k.case_id > p_case_after
      AND (p_viewer_unit IS NULL OR k.case_id IN (SELECT joint_cases_of_unit(p_viewer_unit)))
    -- One page: what follows reads only these cases' member clues and events.
    ORDER BY k.case_id LIMIT p_case_limit
  ),
  members AS (
    SELECT c.id, c.joint_case_id AS case_id, c.stage_deadline FROM clues c
    WHERE c.joint_case_id IN (SELECT case_id FROM cases)
      AND NOT (c.has_recusals AND clue_user_recused(c.id, p_viewer_user))
  ),
  -- Every case chosen, a case without a member clue with zeros.
  case_rows AS (
    SELECT k.case_id, count(m.id) AS clues,
           count(m.id) FILTER (WHERE m.stage_deadline < clue_ms_ts(p_now_ms)) AS overdue_now,
           coalesce(sum(x.closed), 0)::bigint AS closed, coalesce(sum(x.transferred), 0)::bigint AS transferred
    FROM cases k
    LEFT JOIN members m ON m.case_id = k.case_id
    LEFT JOIN LATERAL (
      SELECT count(*) FILTER (WHERE e.to_state = 'CLOSED') AS closed,
             count(*) FILTER (WHERE e.to_state = 'TRANSFERRED_TO_JUDICIAL') AS transferred
      FROM audit_events e
      WHERE e.subject_type = 'clue' AND e.action IN ('clue.submit', 'clue.move', 'proposal.approve')
        AND e.subject_id = m.id AND e.at >= clue_ms_ts(p_from_ms) AND e.at < clue_ms_ts(p_to_ms)) x ON true
    GROUP BY k.case_id
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
