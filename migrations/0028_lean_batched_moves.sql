-- Two statements fewer in a batch of moves (issue 11). A batch's fixed cost is mostly the
-- executor's start-up of each statement inside the functions (docs/WRITES.md).
--
-- 1. audit_append_many(), for events other than clue.submit (whose chains are new), locks the
--    chains that have a head first, in subject order. When that is every chain of the call,
--    each once (a batch of moves: a clue's chain exists from its submission), it goes straight
--    to the events: no count of distinct chains and no INSERT of heads that are all there.
--    Otherwise, and for submissions, it creates the new heads in subject order as 0022 did;
--    when that makes n heads with those found (a batch of submissions: every chain new), the
--    chains are distinct and all held, and the count of distinct chains is skipped too; else
--    it counts them (one event per chain, or it raises) and locks the heads that were there.
--    The events, their fields, hashes, seqs and chain links are 0022's, drawn after every head
--    is locked.
-- 2. clue_apply_moves() writes the request records in the statement that moves the clues (a
--    data-modifying WITH), not in a statement of its own. The records, the locks (keys first,
--    then clues, then chain heads) and the answer are 0025's.
--
-- One client, generic plans, alternated: a batch of eight moves 1.30-1.38 ms before, 1.26-1.28
-- ms after; batches of submissions unchanged.

-- Replaces audit_append_many of 0022_batched_submits.sql (the settings of 0026 kept): the
-- heads' step of 1. above; the rest as it was.
CREATE OR REPLACE FUNCTION audit_append_many(
  p_actor_user   bigint[],
  p_actor_unit   bigint[],
  p_action       text[],
  p_subject_type text[],
  p_subject_id   bigint[],
  p_owner_unit   bigint[],
  p_from         text[],
  p_to           text[],
  p_reason       text[],
  p_details      jsonb[],
  p_token        bigint[]
) RETURNS SETOF audit_events
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
  -- See 0004: a transaction id first, then (below) the seqs.
  x bigint := txid_current();
  n int := coalesce(cardinality(p_subject_id), 0);
  have int := 0;
  fresh int;
BEGIN
  IF n = 0 THEN
    RETURN;
  END IF;
  IF coalesce(cardinality(p_actor_user), 0) <> n OR coalesce(cardinality(p_actor_unit), 0) <> n
     OR coalesce(cardinality(p_action), 0) <> n OR coalesce(cardinality(p_subject_type), 0) <> n
     OR coalesce(cardinality(p_owner_unit), 0) <> n OR coalesce(cardinality(p_from), 0) <> n
     OR coalesce(cardinality(p_to), 0) <> n OR coalesce(cardinality(p_reason), 0) <> n
     OR coalesce(cardinality(p_details), 0) <> n OR coalesce(cardinality(p_token), 0) <> n THEN
    RAISE EXCEPTION 'audit_append_many: the arrays differ in length';
  END IF;

  -- A clue.submit starts its chain: a batch of submissions creates its heads first, as 0022
  -- did. Any other event extends a chain that exists: the heads are locked first, in subject
  -- order, and when that finds all n (distinct rows: n distinct chains) nothing else is needed.
  IF p_action[1] IS DISTINCT FROM 'clue.submit' THEN
    SELECT count(*) INTO have
    FROM (SELECT 1 FROM audit_heads hd
          WHERE (hd.subject_type, hd.subject_id) IN (SELECT u.t, u.i FROM unnest(p_subject_type, p_subject_id) AS u(t, i))
          ORDER BY hd.subject_type, hd.subject_id
          FOR UPDATE) l;
  END IF;
  IF have < n THEN
    -- The new chains' heads, created in subject order. The heads found and those created are
    -- distinct rows: together n of them mean n distinct chains.
    WITH h AS (
      INSERT INTO audit_heads (subject_type, subject_id)
      SELECT u.t, u.i FROM unnest(p_subject_type, p_subject_id) AS u(t, i) ORDER BY u.t, u.i
      ON CONFLICT DO NOTHING
      RETURNING 1
    )
    SELECT count(*) INTO fresh FROM h;
    IF have + fresh < n THEN
      IF (SELECT count(DISTINCT (t, i)) FROM unnest(p_subject_type, p_subject_id) AS u(t, i)) <> n THEN
        RAISE EXCEPTION 'audit_append_many: one event per chain';
      END IF;
      -- Chains whose head was there (or another transaction created meanwhile): lock every
      -- head, in subject order, before the seqs (those held stay held).
      PERFORM 1 FROM audit_heads hd
      WHERE (hd.subject_type, hd.subject_id) IN (SELECT u.t, u.i FROM unnest(p_subject_type, p_subject_id) AS u(t, i))
      ORDER BY hd.subject_type, hd.subject_id
      FOR UPDATE;
    END IF;
  END IF;

  -- As 0022: the seqs drawn in array order over the sorted rows; the columns in table order as
  -- in audit_append(): seq, at, actor, action, subject, owner, from, to, reason, details,
  -- prev_hash, hash (next), txid, actor_token_id.
  RETURN QUERY
  WITH e0 AS MATERIALIZED (
    SELECT ROW(nextval('audit_events_seq_seq'), date_trunc('microseconds', clock_timestamp()),
               s.au, s.aun, s.act, s.st, s.sid, s.ow, s.fr, s.tt, s.re, coalesce(s.de, '{}'::jsonb)::text,
               s.last_hash, NULL::bytea, x, s.tok)::audit_events AS e
    FROM (SELECT u.*, hd.last_hash
          FROM unnest(p_actor_user, p_actor_unit, p_action, p_subject_type, p_subject_id, p_owner_unit,
                      p_from, p_to, p_reason, p_details, p_token)
                 WITH ORDINALITY AS u(au, aun, act, st, sid, ow, fr, tt, re, de, tok, o)
          JOIN audit_heads hd ON hd.subject_type = u.st AND hd.subject_id = u.sid
          ORDER BY u.o) s
  ), e1 AS MATERIALIZED (
    SELECT (e0.e).seq, (e0.e).at, (e0.e).actor_user_id, (e0.e).actor_unit_id, (e0.e).action,
           (e0.e).subject_type, (e0.e).subject_id, (e0.e).owner_unit, (e0.e).from_state, (e0.e).to_state,
           (e0.e).reason, (e0.e).details, (e0.e).prev_hash, audit_hash(e0.e) AS hash, (e0.e).txid,
           (e0.e).actor_token_id
    FROM e0
  ), ins AS (
    INSERT INTO audit_events SELECT * FROM e1 ORDER BY e1.seq
  ), mv AS (
    UPDATE audit_heads hd SET last_seq = e1.seq, last_hash = e1.hash
    FROM e1
    WHERE hd.subject_type = e1.subject_type AND hd.subject_id = e1.subject_id
  )
  SELECT * FROM e1 ORDER BY e1.seq;
END
$$;

-- Replaces clue_apply_moves of 0025_batched_move_keys.sql (the settings of 0026 kept): the
-- request records as 2. above; the rest as it was.
CREATE OR REPLACE FUNCTION clue_apply_moves(
  p_actor_user bigint[], p_actor_unit bigint[], p_request_id uuid[], p_now_ms bigint[], p_clue bigint[],
  p_expected_version bigint[], p_from text[], p_to text[], p_action text[], p_reason text[], p_details jsonb[],
  p_deadline_ms bigint[], p_token bigint[])
RETURNS TABLE (ord int, clue clues, proposal proposals) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_hashjoin = off
SET enable_mergejoin = off AS $$
DECLARE
  m record;
BEGIN
  -- The request ids' locks first, as clue_request_begin() takes each: in key order, so that two
  -- batches cannot deadlock on them.
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
