-- Batched moves take their request ids' locks (issue 11). clue_apply_move() serialises the
-- calls of one (user, request_id) with an advisory lock on the key (clue_request_begin(), 0003)
-- and then looks the key's record up. clue_apply_moves() of 0024_batched_moves.sql did not take
-- that lock, so a call of the key running alone could look the record up before a batch that
-- used the key committed, and then fail on the record's unique key (ALREADY_EXISTS) instead of
-- being refused as a reuse of the key (INVALID_ARGUMENT), or answered as a retry. Now the
-- batch takes every key's lock first, in key order: a call alone with one of its keys runs
-- before or after the whole batch. The rest of the function is unchanged.

-- Replaces clue_apply_moves of 0024_batched_moves.sql.
CREATE OR REPLACE FUNCTION clue_apply_moves(
  p_actor_user bigint[], p_actor_unit bigint[], p_request_id uuid[], p_now_ms bigint[], p_clue bigint[],
  p_expected_version bigint[], p_from text[], p_to text[], p_action text[], p_reason text[], p_details jsonb[],
  p_deadline_ms bigint[], p_token bigint[])
RETURNS TABLE (ord int, clue clues, proposal proposals) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  m record;
BEGIN
  -- The request ids' locks first, as clue_request_begin() takes each: in key order, so that two
  -- batches cannot deadlock on them.
  PERFORM pg_advisory_xact_lock(l.key)
  FROM (SELECT DISTINCT hashtextextended('clue_requests/' || x.u || '/' || x.r, 0) AS key
        FROM unnest(p_actor_user, p_request_id) AS x(u, r) ORDER BY 1) l;
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
