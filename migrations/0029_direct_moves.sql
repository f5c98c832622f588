-- A plain move written without a facts read first (issue 11: as few round trips per mutation
-- as the state machine allows). clued asks the database for the clue before a move so that
-- domain/authz.c can decide; for the common move, a LEADER moving a clue of their own unit,
-- everything the decision needs but four facts of the clue is in the request and the caller's
-- principal. clued then decides those in C (authz_move_unread()) and sends the write at once,
-- with the four left to the write's guard below, evaluated under the clue's row lock:
--
--   - the clue is owned by the caller's unit;
--   - no recusal was ever recorded for it (has_recusals, 0020: nobody is recused from it, so
--     neither the caller nor every leader of a unit is);
--   - the caller's request id has no record (it is a first call, not a retry or a reuse);
--   - and, as for every move, the state, version and no pending proposal (0016).
--
-- A move the guard leaves out has no row, and nothing of it was written; clued then reads its
-- facts and decides as before, which gives the answer or refusal it would have had.
--
-- clue_apply_moves() takes a flag for that guard (p_direct); without it, it is 0028's. The
-- 13-argument form is dropped: clued calls the new one with false after a facts read.
DROP FUNCTION clue_apply_moves(bigint[], bigint[], uuid[], bigint[], bigint[], bigint[], text[], text[], text[],
                               text[], jsonb[], bigint[], bigint[]);

-- Replaces clue_apply_moves of 0028_lean_batched_moves.sql: the same, with p_direct's guard.
CREATE FUNCTION clue_apply_moves(
  p_actor_user bigint[], p_actor_unit bigint[], p_request_id uuid[], p_now_ms bigint[], p_clue bigint[],
  p_expected_version bigint[], p_from text[], p_to text[], p_action text[], p_reason text[], p_details jsonb[],
  p_deadline_ms bigint[], p_token bigint[], p_direct boolean)
RETURNS TABLE (ord int, clue clues, proposal proposals) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_hashjoin = off
SET enable_mergejoin = off AS $$
DECLARE
  m record;
BEGIN
  -- The request ids' locks first, as clue_request_begin() takes each: in key order, so that two
  -- batches cannot deadlock on them. Held, they also keep the guard's "no record" true until
  -- this transaction ends: every writer of a record takes its key's lock first.
  PERFORM pg_advisory_xact_lock(l.key)
  FROM (SELECT DISTINCT hashtextextended('clue_requests/' || x.u || '/' || x.r, 0) AS key
        FROM unnest(p_actor_user, p_request_id) AS x(u, r) ORDER BY 1) l;
  -- Two moves of one clue: the update takes the clue once, for one of them; the other is left
  -- out (and refused alone by its compare-and-swap). Each move done records its request.
  WITH i AS MATERIALIZED (
    SELECT s.*, clue_ms_ts(s.now_ms) AS now_ts, clue_ms_ts(s.dl) AS deadline_ts
    FROM unnest(p_actor_user, p_actor_unit, p_request_id, p_now_ms, p_clue, p_expected_version, p_from, p_to,
                p_action, p_reason, p_details, p_deadline_ms, p_token) WITH ORDINALITY
           AS s(au, aun, rid, now_ms, cid, ver, f, t, act, reason, details, dl, tok, k)
    ORDER BY s.cid
  ), u AS (
    UPDATE clues c SET
      state = i.t,
      version = c.version + 1,
      updated_at = i.now_ts,
      stage_entered_at = i.now_ts,
      stage_deadline = i.deadline_ts,
      deadline_extended = false,
      disposal = coalesce(i.details ->> 'disposal', c.disposal),
      finding = coalesce(i.details ->> 'finding', c.finding),
      sanction_kind = coalesce(i.details ->> 'sanction_kind', c.sanction_kind),
      persons_disciplined = coalesce((i.details ->> 'persons_disciplined')::int, c.persons_disciplined),
      receiving_organ = coalesce(i.details ->> 'receiving_organ', c.receiving_organ),
      closed_at = CASE WHEN i.deadline_ts IS NULL THEN i.now_ts END,
      pending_proposal_id = NULL,
      pending_reviewer_unit = NULL
    FROM i
    WHERE c.id = i.cid AND c.version = i.ver AND c.state = i.f AND c.pending_proposal_id IS NULL
      AND (NOT p_direct
           OR (c.owner_unit = i.aun AND NOT c.has_recusals
               AND NOT EXISTS (SELECT 1 FROM clue_requests r WHERE r.user_id = i.au AND r.request_id = i.rid)))
    RETURNING c AS row, i.*
  ), q AS (
    INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit)
    SELECT u.au, u.rid, 'RequestTransition', (u.row).id, NULL, (u.row).owner_unit FROM u
  )
  SELECT array_agg(u.row ORDER BY u.k) AS rows, array_agg(u.k::int ORDER BY u.k) AS ks,
         array_agg((u.row).id ORDER BY u.k) AS ids, array_agg((u.row).owner_unit ORDER BY u.k) AS owners,
         array_agg(u.au ORDER BY u.k) AS au, array_agg(u.aun ORDER BY u.k) AS aun,
         array_agg(u.f ORDER BY u.k) AS f, array_agg(u.t ORDER BY u.k) AS t,
         array_agg(u.reason ORDER BY u.k) AS reason,
         array_agg(coalesce(u.details, '{}') || jsonb_build_object('action', u.act, 'version', (u.row).version,
                                                                   'stage_deadline_ms', u.dl,
                                                                   'request_id', u.rid) ORDER BY u.k) AS details,
         array_agg(u.tok ORDER BY u.k) AS tok
  INTO m FROM u;
  IF m.ks IS NULL THEN
    RETURN;
  END IF;

  PERFORM audit_append_many(m.au, m.aun, array_fill('clue.move'::text, ARRAY[cardinality(m.ks)]),
                            array_fill('clue'::text, ARRAY[cardinality(m.ks)]),
                            m.ids, m.owners,
                            m.f, m.t, m.reason, m.details, m.tok);

  -- (A composite array unnested beside others would be expanded into its columns.)
  RETURN QUERY SELECT m.ks[s.j], m.rows[s.j], NULL::proposals FROM generate_subscripts(m.ks, 1) AS s(j);
END $$;
