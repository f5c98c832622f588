-- Fewer index entries per write (issue 11). A move's UPDATE of clues changed indexed
-- columns (state, updated_at, stage_deadline), so PostgreSQL could not update the row in
-- place on its page (a HOT update) and added an entry to every one of the table's indexes;
-- an audited event added one to each of audit_events' indexes, and a request record one to
-- a clue_id index no query reads.
--
-- clues: what a move changes is no longer indexed, and pages keep room for the new row
-- version, so a move's UPDATE is a HOT update that writes no index entry at all.
--   - clues_state_idx (state, id) and clues_owner_state_idx (owner_unit, state, id): a
--     ListClues state filter walks id descending in the caller's scope (primary key, or
--     clues_owner_idx (owner_unit, id) for a unit's own clues) and filters by state.
--   - clues_updated_idx (updated_at): an updated_at range of ListClues filters the same walk.
--   - clues_deadline_idx (stage_deadline): ListClues' overdue filter filters the same walk;
--     the statistics count a few units' overdue clues through clues_owner_idx.
--   What remains on clues is written once, at submit: the primary key, the registration
--   number's two unique keys, (owner_unit, id), created_at, and the two partial indexes of
--   rarely set columns (joint_case_id, pending_reviewer_unit), which a move leaves NULL.
-- audit_heads: the chain head is updated by every event; its pages keep room for that.
-- audit_events: audit_events_owner_idx (owner_unit, seq) serves no query: statistics and
--   bulletins read a unit's clue transitions by audit_events_clue_transitions_idx
--   (owner_unit, at), and ListAuditEvents' scope filter goes through clues.
-- clue_requests: clue_requests_clue_idx (clue_id) serves no query (requests are read by
--   their key, and clues are never deleted).

DROP INDEX clues_state_idx;
DROP INDEX clues_owner_state_idx;
DROP INDEX clues_updated_idx;
DROP INDEX clues_deadline_idx;
DROP INDEX audit_events_owner_idx;
DROP INDEX clue_requests_clue_idx;

-- Room on each page for the updated versions of its rows (new pages only; VACUUM FULL or
-- CLUSTER would repack old ones). A clue row is some hundreds of bytes; a head row ~80.
ALTER TABLE clues SET (fillfactor = 80);
ALTER TABLE audit_heads SET (fillfactor = 70);
