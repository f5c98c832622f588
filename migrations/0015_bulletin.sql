-- The monthly bulletin (通报, StatsService.GetBulletin, issue 14): per GROUP and REGION, the
-- month's clue figures from the audit trail (as clue_stats() of 0006 counts them: the events
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
CREATE FUNCTION clue_bulletin(p_bounds bigint[], p_now_ms bigint, p_units bigint[])
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
