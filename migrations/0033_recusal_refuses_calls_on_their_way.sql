-- A recusal recorded while a call is on its way refuses the call (docs/COOPERATION.md).
--
-- clued decides a write on the facts it read first, then sends it. A recusal of the caller
-- committed in between did not stop the write: a recusal does not move the clue's version, so
-- the compare-and-swap let it through (a recused reviewer's approval, a recused member's note,
-- a recused leader's handover). The writes now look for such a recusal in their own
-- transaction, after the request key's lock:
--
--   - clue_request_begin(), which every single write on a clue or a proposal calls first
--     (moves, co-review proposals and reviews, notes, handovers, deadline extensions,
--     assignments, recusals): a first call of a recused caller raises CLNOF, "clue not found"
--     ("proposal not found" for a review), what the server answers a recused caller;
--   - clue_apply_moves(), the batched moves: the move of a recused caller is left out of the
--     update, and runs alone, where clue_request_begin() refuses it.
--
-- The check sees every recusal committed before the write's statement began, so a recusal
-- that commits between the server's facts read and its write (a round trip at least) refuses
-- the write. One that commits while the write is already past that check orders after it.

-- Replaces clue_request_begin of 0008_named_errors.sql: the same, and a first call of a
-- caller recused from the clue refused.
CREATE OR REPLACE FUNCTION clue_request_begin(p_user bigint, p_request_id uuid, p_method text, p_clue bigint,
                                              p_proposal bigint)
RETURNS clue_outcome LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests;
  o clue_outcome;
  c clues;
  p proposals;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('clue_requests/' || p_user || '/' || p_request_id, 0));
  SELECT * INTO q FROM clue_requests WHERE user_id = p_user AND request_id = p_request_id;
  IF NOT FOUND THEN
    -- A first call. The server decided it on facts read before this transaction; a recusal
    -- of the caller recorded since (which does not move the clue's version) refuses it now,
    -- as the server refuses a recused caller: the clue, or the proposal, is missing.
    IF EXISTS (SELECT 1 FROM recusals r
               WHERE r.user_id = p_user
                 AND r.clue_id = coalesce(p_clue, (SELECT x.clue_id FROM proposals x WHERE x.id = p_proposal))) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLNOF',
        MESSAGE = CASE WHEN p_clue IS NULL THEN 'proposal not found' ELSE 'clue not found' END;
    END IF;
    RETURN o;
  END IF;
  IF q.method <> p_method OR (p_clue IS NOT NULL AND q.clue_id <> p_clue)
     OR (p_proposal IS NOT NULL AND q.proposal_id IS DISTINCT FROM p_proposal) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('request_id %s was already used for another call (%s)', p_request_id, q.method);
  END IF;
  SELECT * INTO c FROM clues WHERE id = q.clue_id;
  o.clue := c;
  IF q.proposal_id IS NOT NULL THEN
    SELECT * INTO p FROM proposals WHERE id = q.proposal_id;
    o.proposal := p;
  END IF;
  RETURN o;
END $$;

-- Replaces clue_apply_moves of 0029_direct_moves.sql: the same, and the move of a caller recused
-- from the clue left out.
CREATE OR REPLACE FUNCTION clue_apply_moves(
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
  -- out (and refused alone by its compare-and-swap). So is the move of a caller recused from
  -- the clue since the server decided it (refused alone as a missing clue, by
  -- clue_request_begin()). Each move done records its request.
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
      AND (NOT c.has_recusals
           OR NOT EXISTS (SELECT 1 FROM recusals x WHERE x.clue_id = c.id AND x.user_id = i.au))
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
