-- Several callers' plain moves in one statement and one transaction (issue 11). Under load
-- clued gathers the plain moves that are ready to be written while earlier ones are still
-- running, and sends them as one call of clue_apply_moves(): one executor start-up per
-- statement kind instead of one per move, and one commit (one WAL flush) for all of them.
-- A lone move still goes alone, through clue_apply_move() (0018).
--
-- The contract with clued (server/service/batch.c):
-- - parameter i is the array of every move's parameter i of clue_apply_move(), in the order
--   of the moves; the result has one row per move done, with ord, the move's position
--   (1-based) in the arrays;
-- - a move it does not do (its compare-and-swap matched no row: a stale version, a concurrent
--   move, a proposal now pending) has no row and nothing of it is written: clued then runs
--   that move alone, through clue_apply_move(), which gives its own answer or error;
-- - an error fails every move of the call (nothing is written): clued then runs each alone.
--   Among such errors: a request id already recorded (a unique violation of clue_requests),
--   a deadlock with another batch.
-- Each move done is exactly what clue_apply_move() does for it: the same update, the same
-- event (fields, details, hash, chain: through audit_append_many() of
-- 0022_batched_submits.sql) and the same request record.
--
-- The function plans its statements once per connection (force_generic_plan): with arrays
-- for parameters PostgreSQL would otherwise plan every statement again on every call.

-- ---- many plain moves ----------------------------------------------------------------------------

-- clue_apply_move() of 0018_one_statement_writes.sql for many moves of distinct clues: see the
-- contract at the top. The moves are taken in clue order (the row locks of two batches are
-- then taken in one order); the update is the same compare-and-swap, so a move whose clue
-- changed since clued read it matches no row and is left out.
CREATE FUNCTION clue_apply_moves(
  p_actor_user bigint[], p_actor_unit bigint[], p_request_id uuid[], p_now_ms bigint[], p_clue bigint[],
  p_expected_version bigint[], p_from text[], p_to text[], p_action text[], p_reason text[], p_details jsonb[],
  p_deadline_ms bigint[], p_token bigint[])
RETURNS TABLE (ord int, clue clues, proposal proposals) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  m record;
BEGIN
  -- Two moves of one clue: the update takes the clue once, for one of them; the other is left
  -- out (and refused alone by its compare-and-swap).
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
    RETURNING c AS row, i.*
  )
  SELECT array_agg(u.row ORDER BY u.k) AS rows, array_agg(u.k::int ORDER BY u.k) AS ks,
         array_agg((u.row).id ORDER BY u.k) AS ids, array_agg((u.row).owner_unit ORDER BY u.k) AS owners,
         array_agg(u.au ORDER BY u.k) AS au, array_agg(u.aun ORDER BY u.k) AS aun,
         array_agg(u.rid ORDER BY u.k) AS rid, array_agg(u.f ORDER BY u.k) AS f,
         array_agg(u.t ORDER BY u.k) AS t, array_agg(u.reason ORDER BY u.k) AS reason,
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
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit)
  SELECT s.au, s.rid, 'RequestTransition', s.id, NULL, s.owner
  FROM unnest(m.au, m.rid, m.ids, m.owners) AS s(au, rid, id, owner);

  -- (A composite array unnested beside others would be expanded into its columns.)
  RETURN QUERY SELECT m.ks[s.j], m.rows[s.j], NULL::proposals FROM generate_subscripts(m.ks, 1) AS s(j);
END $$;
