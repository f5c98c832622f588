-- A user recused from a clue learns nothing of it from an aggregate (docs/COOPERATION.md,
-- "Recusal"). For that user the clue does not exist: every read answers as for a missing clue,
-- and so must every count. Until now GetStatistics' unit figures and the monthly bulletin
-- counted it all the same ("they count what each unit did, not clues"): a recused member who
-- read their unit's figures before and after learnt when the clue was checked, closed (and
-- how: the disposal), filed or transferred, how long it had stayed in each stage (the
-- medians), whether it was overdue, and, from the bulletin, the rectification items recorded
-- from it. Now both leave out, for that user, every event of a clue they are recused from, its
-- deadline, and the ledger items recorded from it, as ListItems and GetLedgerStats do:
--
--   - clue_stats() (same arguments): the unit rows too are over the clues p_viewer_user is not
--     recused from, as its case rows already were (0036);
--   - clue_bulletin() takes the calling user, p_viewer_user, and leaves out the same for it.
--
-- The server passes NULL for auditors and administrators, who are never recused (only MEMBERs
-- and LEADERs of working units are) and whose figures count everything. The filter is the one
-- ListClues uses (clue_scope_sql()'s AUTHZ_SCOPE_UNRECUSED): the user's few recusals, read
-- once by their index (recusals_user_idx) and hashed, against the rows already read; nothing
-- is asked per clue.

-- Replaces clue_stats of 0041_case_stats_in_pages.sql: the unit rows, too, leave out the clues
-- the user p_viewer_user is recused from (every event of them, and their deadlines), as the
-- case rows already did; the same arguments, the same rows otherwise.
--
-- GetStatistics over the period [p_from_ms, p_to_ms) for the units p_units (decided by the
-- server from the caller's scope); "now" for overdue counts is p_now_ms, the server's clock.
-- Periods are judged on the audit events' own times. One row per unit (kind 'unit', in id
-- order), then one per joint case (kind 'case', in id order). Every figure, of a unit or of a
-- case, is over the clues the user p_viewer_user is not recused from (all of them when NULL,
-- as for auditors and administrators): for that user a clue they are recused from does not
-- exist, so none of its events and not its deadline count anywhere (docs/COOPERATION.md).
-- Definitions, per unit, all by the owner_unit the event recorded (the owner at the time of
-- the transition):
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
-- the user p_viewer_user is not recused from, as GetJointCase lists them to that user:
-- clues = members now; closed and transferred = member clues that entered CLOSED /
-- TRANSFERRED_TO_JUDICIAL in the period; overdue_now as for units. A case without
-- such a member clue has a row of zeros. Of the cases chosen, only those with an id above
-- p_case_after (0: all), the first p_case_limit of them in id order (0: none): a page of
-- GetStatistics' case rows, the server asking for one more than it sends to know whether
-- more follow.
CREATE OR REPLACE FUNCTION clue_stats(p_from_ms bigint, p_to_ms bigint, p_now_ms bigint, p_units bigint[],
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
      AND e.subject_id NOT IN (SELECT r.clue_id FROM recusals r WHERE r.user_id = p_viewer_user)
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
        AND e.subject_id NOT IN (SELECT r.clue_id FROM recusals r WHERE r.user_id = p_viewer_user)
    ) x
    GROUP BY x.owner_unit
  ),
  overdue AS (
    SELECT c.owner_unit AS unit, count(*) AS n FROM clues c
    WHERE c.owner_unit = ANY (p_units) AND c.stage_deadline < clue_ms_ts(p_now_ms)
      AND c.id NOT IN (SELECT r.clue_id FROM recusals r WHERE r.user_id = p_viewer_user)
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

DROP FUNCTION clue_bulletin(bigint[], bigint, bigint[]);

-- Replaces clue_bulletin of 0015_bulletin.sql: the same figures, over what the user
-- p_viewer_user may know of: the clues they are not recused from (their events and deadlines)
-- and the rectification items not recorded from such a clue. NULL counts everything (auditors
-- and administrators).
--
-- The monthly bulletin (通报, StatsService.GetBulletin, issue 14): per GROUP and REGION, the
-- month's clue figures from the audit trail (as clue_stats() counts them: the events
-- clue.submit, clue.move and proposal.approve, for the unit that owned the clue then), the
-- clues overdue now, the rectification ledger's figures, and how many consecutive months the
-- unit has gone without a decision on any clue (零通报).
--
-- p_bounds are the month boundaries the server computed (domain/bulletin.h): p_bounds[1] the
-- start of the month after the bulletin's, p_bounds[2] the start of the bulletin's month, and
-- p_bounds[k + 2] the start of the month k months before it. Month k (0: the bulletin's) is
-- [p_bounds[k + 2], p_bounds[k + 1]). A unit's streak is the number of months from month 0
-- back to the first in which it decided on a clue or did not yet exist at the month's end,
-- counting at most array_length(p_bounds) - 1 months.
CREATE FUNCTION clue_bulletin(p_bounds bigint[], p_now_ms bigint, p_units bigint[], p_viewer_user bigint)
RETURNS TABLE (id bigint, code text, name text, kind text, received bigint, disposed bigint,
               d_check bigint, d_talk bigint, d_no_action bigint, d_shelved bigint, d_finding bigint,
               d_sanction bigint, filed bigint, transferred bigint, overdue_now bigint, rect_found bigint,
               rect_verified bigint, rect_overdue bigint, zero_months int)
LANGUAGE sql STABLE
SET plan_cache_mode = force_custom_plan SET jit = off AS $$
  WITH
  b AS (
    SELECT g.k - 1 AS k, clue_ms_ts(p_bounds[g.k + 1]) AS m_from, clue_ms_ts(p_bounds[g.k]) AS m_to
    FROM generate_series(1, array_length(p_bounds, 1) - 1) g(k)
  ),
  ev AS (
    SELECT e.owner_unit, e.from_state, e.to_state, e.action, e.details, e.at FROM audit_events e
    WHERE e.subject_type = 'clue' AND e.action IN ('clue.submit', 'clue.move', 'proposal.approve')
      AND e.owner_unit = ANY (p_units)
      AND e.at >= clue_ms_ts(p_bounds[array_length(p_bounds, 1)]) AND e.at < clue_ms_ts(p_bounds[1])
      AND e.subject_id NOT IN (SELECT r.clue_id FROM recusals r WHERE r.user_id = p_viewer_user)
  ),
  cur AS (
    SELECT ev.owner_unit AS unit,
           count(*) FILTER (WHERE ev.from_state IS NULL) AS received,
           count(*) FILTER (WHERE ev.from_state IS NOT NULL) AS disposed,
           count(*) FILTER (WHERE ev.from_state = 'ACCEPTED' AND ev.to_state = 'PRELIMINARY_CHECK') AS d_check,
           count(*) FILTER (WHERE ev.from_state = 'ACCEPTED' AND ev.to_state = 'CLOSED'
                              AND ev.details::jsonb ->> 'disposal' = 'TALK_OR_LETTER_INQUIRY') AS d_talk,
           count(*) FILTER (WHERE ev.from_state = 'ACCEPTED' AND ev.to_state = 'CLOSED'
                              AND ev.details::jsonb ->> 'disposal' = 'NO_FURTHER_ACTION') AS d_no_action,
           count(*) FILTER (WHERE ev.from_state = 'ACCEPTED' AND ev.to_state = 'CLOSED'
                              AND ev.details::jsonb ->> 'disposal' = 'SHELVED') AS d_shelved,
           count(*) FILTER (WHERE ev.from_state = 'PRELIMINARY_CHECK' AND ev.to_state = 'CLOSED') AS d_finding,
           count(*) FILTER (WHERE ev.from_state = 'FILED' AND ev.to_state = 'CLOSED') AS d_sanction,
           count(*) FILTER (WHERE ev.to_state = 'FILED') AS filed,
           count(*) FILTER (WHERE ev.to_state = 'TRANSFERRED_TO_JUDICIAL') AS transferred
    FROM ev WHERE ev.at >= clue_ms_ts(p_bounds[2])
    GROUP BY ev.owner_unit
  ),
  busy AS (
    SELECT DISTINCT ev.owner_unit AS unit, b.k FROM ev JOIN b ON ev.at >= b.m_from AND ev.at < b.m_to
    WHERE ev.from_state IS NOT NULL
  ),
  overdue AS (
    SELECT c.owner_unit AS unit, count(*) AS n FROM clues c
    WHERE c.owner_unit = ANY (p_units) AND c.stage_deadline < clue_ms_ts(p_now_ms)
      AND c.id NOT IN (SELECT r.clue_id FROM recusals r WHERE r.user_id = p_viewer_user)
    GROUP BY c.owner_unit
  ),
  rect AS (
    SELECT i.supervising_unit AS unit,
           count(*) FILTER (WHERE i.created_at >= clue_ms_ts(p_bounds[2]) AND i.created_at < clue_ms_ts(p_bounds[1]))
             AS found,
           count(*) FILTER (WHERE i.verified_at >= clue_ms_ts(p_bounds[2]) AND i.verified_at < clue_ms_ts(p_bounds[1]))
             AS verified,
           count(*) FILTER (WHERE i.verified_at IS NULL AND i.deadline < clue_ms_ts(p_now_ms)) AS overdue
    FROM rect_items i WHERE i.supervising_unit = ANY (p_units)
      AND (i.source_clue IS NULL
           OR i.source_clue NOT IN (SELECT r.clue_id FROM recusals r WHERE r.user_id = p_viewer_user))
    GROUP BY i.supervising_unit
  )
  SELECT u.id, u.code, u.name, u.kind, coalesce(k.received, 0), coalesce(k.disposed, 0), coalesce(k.d_check, 0),
         coalesce(k.d_talk, 0), coalesce(k.d_no_action, 0), coalesce(k.d_shelved, 0), coalesce(k.d_finding, 0),
         coalesce(k.d_sanction, 0), coalesce(k.filed, 0), coalesce(k.transferred, 0), coalesce(o.n, 0),
         coalesce(r.found, 0), coalesce(r.verified, 0), coalesce(r.overdue, 0),
         (SELECT coalesce(min(b.k), array_length(p_bounds, 1) - 1)::int FROM b
          WHERE u.created_at >= b.m_to OR EXISTS (SELECT 1 FROM busy WHERE busy.unit = u.id AND busy.k = b.k))
  FROM units u
  LEFT JOIN cur k ON k.unit = u.id
  LEFT JOIN overdue o ON o.unit = u.id
  LEFT JOIN rect r ON r.unit = u.id
  WHERE u.id = ANY (p_units)
  ORDER BY u.id
$$;
