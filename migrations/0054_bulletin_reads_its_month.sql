-- GetBulletin reads the bulletin's month and, per unit, back to its last decision; no longer
-- every transition of ten years, once per unit.
--
-- clue_bulletin() of 0048 gathered every transition of the units over the 120 months the
-- zero-disposal streak may cover (ev: most of the audit trail, spilled to disk for its
-- details), and then, for each unit, a sub-select over the 120 months scanned that whole set
-- again to find in which months the unit had decided on a clue (busy, planned inside the
-- sub-select and so run once per unit). Its cost was units x transitions: 2.5-2.9 s of
-- PostgreSQL at 100,000 clues (bench/stats_seed.sql, 68 units), 10-15 s at 300,000 clues (132
-- units), and it would have passed --db-statement-timeout (30 s) well before a million clues,
-- after which no monthly bulletin could be produced. Now 50-80 ms and 115-125 ms.
--
-- The same figures, read by index:
--   - the month's counts from the month's transitions only (audit_events_clue_transitions_idx,
--     owner_unit and at);
--   - the streak from each unit's last decision before the month's end and within the months
--     it covers: that index read backwards from the month's end, one unit at a time, stopping
--     at the first decision (of a clue the viewer is not recused from). The months between it
--     and the bulletin's are the months without one; the unit's creation still ends the streak
--     as before. The latest decision lies in the latest month that has one, so the month found
--     is the one the old sub-select found.
-- test_bulletin_cost compares this function with 0048's definition over random histories and
-- counts the rows it reads.

-- Replaces clue_bulletin of 0048_aggregates_follow_recusals.sql: the same arguments and figures,
-- read from the month's transitions and each unit's last decision instead of every transition
-- of the 120 months, once per unit.
--
-- The monthly bulletin (通报, StatsService.GetBulletin, issue 14): per GROUP and REGION, the
-- month's clue figures from the audit trail (as clue_stats() counts them: the events
-- clue.submit, clue.move and proposal.approve, for the unit that owned the clue then), the
-- clues overdue now, the rectification ledger's figures, and how many consecutive months the
-- unit has gone without a decision on any clue (零通报). Every figure leaves out what the user
-- p_viewer_user may not know of: the clues they are recused from (their events and deadlines)
-- and the rectification items recorded from such a clue. NULL counts everything (auditors and
-- administrators).
--
-- p_bounds are the month boundaries the server computed (domain/bulletin.h), newest first:
-- p_bounds[1] the start of the month after the bulletin's, p_bounds[2] the start of the
-- bulletin's month, and p_bounds[k + 2] the start of the month k months before it. Month k (0:
-- the bulletin's) is [p_bounds[k + 2], p_bounds[k + 1]). A unit's streak is the number of
-- months from month 0 back to the first in which it decided on a clue or did not yet exist at
-- the month's end, counting at most array_length(p_bounds) - 1 months.
CREATE OR REPLACE FUNCTION clue_bulletin(p_bounds bigint[], p_now_ms bigint, p_units bigint[], p_viewer_user bigint)
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
  -- The month's transitions (month 0).
  cur AS (
    SELECT e.owner_unit AS unit,
           count(*) FILTER (WHERE e.from_state IS NULL) AS received,
           count(*) FILTER (WHERE e.from_state IS NOT NULL) AS disposed,
           count(*) FILTER (WHERE e.from_state = 'ACCEPTED' AND e.to_state = 'PRELIMINARY_CHECK') AS d_check,
           count(*) FILTER (WHERE e.from_state = 'ACCEPTED' AND e.to_state = 'CLOSED'
                              AND e.details::jsonb ->> 'disposal' = 'TALK_OR_LETTER_INQUIRY') AS d_talk,
           count(*) FILTER (WHERE e.from_state = 'ACCEPTED' AND e.to_state = 'CLOSED'
                              AND e.details::jsonb ->> 'disposal' = 'NO_FURTHER_ACTION') AS d_no_action,
           count(*) FILTER (WHERE e.from_state = 'ACCEPTED' AND e.to_state = 'CLOSED'
                              AND e.details::jsonb ->> 'disposal' = 'SHELVED') AS d_shelved,
           count(*) FILTER (WHERE e.from_state = 'PRELIMINARY_CHECK' AND e.to_state = 'CLOSED') AS d_finding,
           count(*) FILTER (WHERE e.from_state = 'FILED' AND e.to_state = 'CLOSED') AS d_sanction,
           count(*) FILTER (WHERE e.to_state = 'FILED') AS filed,
           count(*) FILTER (WHERE e.to_state = 'TRANSFERRED_TO_JUDICIAL') AS transferred
    FROM audit_events e
    WHERE e.subject_type = 'clue' AND e.action IN ('clue.submit', 'clue.move', 'proposal.approve')
      AND e.owner_unit = ANY (p_units)
      AND e.at >= clue_ms_ts(p_bounds[2]) AND e.at < clue_ms_ts(p_bounds[1])
      AND e.subject_id NOT IN (SELECT r.clue_id FROM recusals r WHERE r.user_id = p_viewer_user)
    GROUP BY e.owner_unit
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
          WHERE u.created_at >= b.m_to OR (ld.at >= b.m_from AND ld.at < b.m_to))
  FROM units u
  LEFT JOIN cur k ON k.unit = u.id
  LEFT JOIN overdue o ON o.unit = u.id
  LEFT JOIN rect r ON r.unit = u.id
  -- The unit's last decision in the months counted: its transitions read backwards from the
  -- month's end, up to the first decision.
  LEFT JOIN LATERAL (
    SELECT e.at FROM audit_events e
    WHERE e.subject_type = 'clue' AND e.action IN ('clue.submit', 'clue.move', 'proposal.approve')
      AND e.owner_unit = u.id AND e.from_state IS NOT NULL
      AND e.at >= clue_ms_ts(p_bounds[array_length(p_bounds, 1)]) AND e.at < clue_ms_ts(p_bounds[1])
      AND e.subject_id NOT IN (SELECT r.clue_id FROM recusals r WHERE r.user_id = p_viewer_user)
    ORDER BY e.at DESC LIMIT 1
  ) ld ON true
  WHERE u.id = ANY (p_units)
  ORDER BY u.id
$$;
