-- The monthly bulletin counts the items recorded and verified in its month from the ledger's
-- audit events, as it counts its clue figures, not from the item rows' stamps.
--
-- clue_bulletin() of 0054 counted "items recorded in the month" by rect_items.created_at and
-- "items verified in the month" by rect_items.verified_at. Those stamps hold clued's clock
-- (rect_create() and rect_move(), p_now_ms), while the item's events, and every clue figure,
-- hold the database's (audit_append(), clock_timestamp()): with the two clocks apart, work done
-- in the same second near a month's end was split between two bulletins. And no event records
-- the stamps, so `cluectl audit verify --checkpoint` cannot check them: a database superuser
-- could move an item's recording or verification into another month, and its figures with it,
-- with nothing to show it. The events rect.create and rect.verify are in the hash chains and
-- the Merkle tree, with their time; the figures now follow them (a verified item is VERIFIED
-- for good, so an item has at most one rect.verify). "Overdue now" still reads the items as
-- they are: their state and deadline, which the replay checks against the chains.
--
-- audit_events_rect_bulletin_idx (owner unit and time, over these two actions only: two
-- entries per item) reads the month's events of the units covered, as
-- audit_events_clue_transitions_idx reads their transitions; without it the month's events
-- of every kind were read (audit_events_at_brin), or every ledger event ever.
CREATE INDEX audit_events_rect_bulletin_idx ON audit_events (owner_unit, at)
  WHERE subject_type = 'rectification' AND action IN ('rect.create', 'rect.verify');

-- Replaces clue_bulletin of 0054_bulletin_reads_its_month.sql: the same arguments and figures,
-- but rect_found and rect_verified count the month's rect.create and rect.verify events of
-- the unit (by the events' time, in the months of p_bounds), not the items whose created_at
-- and verified_at fall in the month.
--
-- The monthly bulletin (通报, StatsService.GetBulletin, issue 14): per GROUP and REGION, the
-- month's clue figures from the audit trail (as clue_stats() counts them: the events
-- clue.submit, clue.move and proposal.approve, for the unit that owned the clue then), the
-- clues overdue now, the rectification ledger's figures (the items recorded and verified in
-- the month from the audit trail too: the events rect.create and rect.verify, for the unit
-- that supervised the item; the items overdue now from the items), and how many consecutive
-- months the unit has gone without a decision on any clue (零通报). Every figure leaves out
-- what the user p_viewer_user may not know of: the clues they are recused from (their events
-- and deadlines) and the rectification items recorded from such a clue (their events and
-- deadlines). NULL counts everything (auditors and administrators).
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
  -- The month's ledger events (month 0): rect.create and rect.verify, for the unit that
  -- supervised the item then (its owner_unit), leaving out the items recorded from a clue the
  -- viewer is recused from.
  rect_ev AS (
    SELECT e.owner_unit AS unit,
           count(*) FILTER (WHERE e.action = 'rect.create') AS found,
           count(*) FILTER (WHERE e.action = 'rect.verify') AS verified
    FROM audit_events e
    WHERE e.subject_type = 'rectification' AND e.action IN ('rect.create', 'rect.verify')
      AND e.owner_unit = ANY (p_units)
      AND e.at >= clue_ms_ts(p_bounds[2]) AND e.at < clue_ms_ts(p_bounds[1])
      AND e.subject_id NOT IN (SELECT i.id FROM rect_items i JOIN recusals r ON r.clue_id = i.source_clue
                               WHERE r.user_id = p_viewer_user)
    GROUP BY e.owner_unit
  ),
  -- The items overdue now, from the items as they are.
  rect AS (
    SELECT i.supervising_unit AS unit,
           count(*) FILTER (WHERE i.verified_at IS NULL AND i.deadline < clue_ms_ts(p_now_ms)) AS overdue
    FROM rect_items i WHERE i.supervising_unit = ANY (p_units)
      AND (i.source_clue IS NULL
           OR i.source_clue NOT IN (SELECT r.clue_id FROM recusals r WHERE r.user_id = p_viewer_user))
    GROUP BY i.supervising_unit
  )
  SELECT u.id, u.code, u.name, u.kind, coalesce(k.received, 0), coalesce(k.disposed, 0), coalesce(k.d_check, 0),
         coalesce(k.d_talk, 0), coalesce(k.d_no_action, 0), coalesce(k.d_shelved, 0), coalesce(k.d_finding, 0),
         coalesce(k.d_sanction, 0), coalesce(k.filed, 0), coalesce(k.transferred, 0), coalesce(o.n, 0),
         coalesce(v.found, 0), coalesce(v.verified, 0), coalesce(r.overdue, 0),
         (SELECT coalesce(min(b.k), array_length(p_bounds, 1) - 1)::int FROM b
          WHERE u.created_at >= b.m_to OR (ld.at >= b.m_from AND ld.at < b.m_to))
  FROM units u
  LEFT JOIN cur k ON k.unit = u.id
  LEFT JOIN overdue o ON o.unit = u.id
  LEFT JOIN rect_ev v ON v.unit = u.id
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
