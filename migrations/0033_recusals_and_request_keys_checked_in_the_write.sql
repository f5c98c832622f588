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
--
-- And one request key names one call of a user across clues, cases and the ledger, both ways
-- (docs/LEDGER.md). The ledger refused a key a clue or case call had used (rect_request_begin()
-- of 0014); a key first used by a ledger call was taken by a clue or case call as a new one.
-- Every clue and case writer now looks for it in rect_requests too, under the key's lock, which
-- the ledger takes as well:
--
--   - clue_request_begin() (every single write on a clue or a proposal) and case_create() raise
--     CLARG "request_id ... was already used for another call (<method>)", as for a key a
--     clue call used;
--   - the batched submissions and moves leave such a call out, and it runs alone, where
--     clue_request_begin() refuses it.

-- A key a ledger call of p_user used (rect_requests) is no first call of a clue or case
-- writer: CLARG, as rect_request_begin() answers a key a clue call used. The caller holds the
-- key's lock.
CREATE FUNCTION clue_request_refuse_ledger_key(p_user bigint, p_request_id uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  other text;
BEGIN
  SELECT x.method INTO other FROM rect_requests x WHERE x.user_id = p_user AND x.request_id = p_request_id;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('request_id %s was already used for another call (%s)', p_request_id, other);
  END IF;
END $$;

-- Replaces clue_request_begin of 0008_named_errors.sql: the same, and a first call of a
-- caller recused from the clue, or on a key a ledger call used, refused.
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
    PERFORM clue_request_refuse_ledger_key(p_user, p_request_id);
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

-- Replaces case_create of 0008_named_errors.sql: the same, and a key a ledger call used refused.
CREATE OR REPLACE FUNCTION case_create(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_title text, p_basis text,
  p_participants bigint[], p_clues bigint[], p_clue_versions bigint[])
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests;
  jc joint_cases;
  m record;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('clue_requests/' || p_actor_user || '/' || p_request_id, 0));
  SELECT * INTO q FROM clue_requests WHERE user_id = p_actor_user AND request_id = p_request_id;
  IF NOT FOUND THEN
    PERFORM clue_request_refuse_ledger_key(p_actor_user, p_request_id);
  ELSE
    IF q.method <> 'CreateJointCase' THEN
      RAISE EXCEPTION USING ERRCODE = 'CLARG',
        MESSAGE = format('request_id %s was already used for another call (%s)', p_request_id, q.method);
    END IF;
    RETURN QUERY SELECT * FROM joint_case_rows(q.case_id, p_actor_unit);
    RETURN;
  END IF;
  IF coalesce(array_length(p_clues, 1), 0) <> coalesce(array_length(p_clue_versions, 1), 0) THEN
    RAISE EXCEPTION 'case_create: % clues but % versions', array_length(p_clues, 1),
      array_length(p_clue_versions, 1);
  END IF;
  INSERT INTO joint_cases (title, basis, lead_unit, created_by, created_at)
  VALUES (p_title, coalesce(p_basis, ''), p_actor_unit, p_actor_user, clue_ms_ts(p_now_ms))
  RETURNING * INTO jc;
  INSERT INTO case_participants (case_id, unit_id, added_by, added_at)
  SELECT jc.id, u, p_actor_user, clue_ms_ts(p_now_ms) FROM unnest(p_participants) u;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'case.create', 'case', jc.id, NULL, NULL, NULL, NULL,
                       jsonb_build_object('title', jc.title, 'basis', jc.basis, 'lead_unit_id', jc.lead_unit,
                                          'participant_unit_ids', to_jsonb(coalesce(p_participants, '{}')),
                                          'clue_ids', to_jsonb(coalesce(p_clues, '{}')),
                                          'request_id', p_request_id));
  -- In id order, as every creation locks them: two creations naming the same clues wait for
  -- each other instead of deadlocking.
  FOR m IN SELECT * FROM unnest(p_clues, p_clue_versions) AS t(clue_id, version) ORDER BY clue_id LOOP
    PERFORM case_join(p_actor_user, p_actor_unit, jc, m.clue_id, m.version, p_now_ms, NULL, p_request_id);
  END LOOP;
  INSERT INTO clue_requests (user_id, request_id, method, case_id, owner_unit)
  VALUES (p_actor_user, p_request_id, 'CreateJointCase', jc.id, jc.lead_unit);
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- Replaces clue_submit_many of 0022_batched_submits.sql (with the settings of
-- 0026_batch_index_plans.sql): the same, and a call whose key a ledger call used left out.
CREATE OR REPLACE FUNCTION clue_submit_many(
  p_actor_user bigint[], p_actor_unit bigint[], p_request_id uuid[], p_now_ms bigint[], p_deadline_ms bigint[],
  p_year int[], p_title text[], p_summary text[], p_source text[], p_subject_name text[],
  p_subject_position text[], p_subject_rank text[], p_subject_top boolean[], p_host_unit text[],
  p_categories text[], p_rep_name text[], p_rep_phone text[], p_rep_address text[], p_rep_email text[],
  p_token bigint[])
RETURNS TABLE (clue clues, actor_user bigint, actor_unit bigint, ord int)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_hashjoin = off
SET enable_mergejoin = off AS $$
#variable_conflict use_column
DECLARE
  n int := coalesce(cardinality(p_actor_user), 0);
BEGIN
  IF n = 0 THEN
    RETURN;
  END IF;
  IF coalesce(cardinality(p_actor_unit), 0) <> n OR coalesce(cardinality(p_request_id), 0) <> n
     OR coalesce(cardinality(p_now_ms), 0) <> n OR coalesce(cardinality(p_deadline_ms), 0) <> n
     OR coalesce(cardinality(p_year), 0) <> n OR coalesce(cardinality(p_title), 0) <> n
     OR coalesce(cardinality(p_summary), 0) <> n OR coalesce(cardinality(p_source), 0) <> n
     OR coalesce(cardinality(p_subject_name), 0) <> n OR coalesce(cardinality(p_subject_position), 0) <> n
     OR coalesce(cardinality(p_subject_rank), 0) <> n OR coalesce(cardinality(p_subject_top), 0) <> n
     OR coalesce(cardinality(p_host_unit), 0) <> n OR coalesce(cardinality(p_categories), 0) <> n
     OR coalesce(cardinality(p_rep_name), 0) <> n OR coalesce(cardinality(p_rep_phone), 0) <> n
     OR coalesce(cardinality(p_rep_address), 0) <> n OR coalesce(cardinality(p_rep_email), 0) <> n
     OR coalesce(cardinality(p_token), 0) <> n THEN
    RAISE EXCEPTION 'clue_submit_many: the arrays differ in length';
  END IF;

  -- clue_request_begin()'s lock on every key, in key order: a retry of one of these calls
  -- running on its own meanwhile waits for this transaction and then finds its record.
  PERFORM count(pg_advisory_xact_lock(k.key))
  FROM (SELECT DISTINCT hashtextextended('clue_requests/' || u.usr || '/' || u.req, 0) AS key
        FROM unnest(p_actor_user, p_request_id) AS u(usr, req)
        WHERE u.usr IS NOT NULL AND u.req IS NOT NULL
        ORDER BY 1) k;

  RETURN QUERY
  WITH i AS MATERIALIZED (
    -- The calls this batch does: no record for the key (of a clue, case or ledger call), an
    -- existing unit, the keys given.
    SELECT u.*, un.code,
           coalesce(u.rep_name, '') <> '' OR coalesce(u.rep_phone, '') <> ''
             OR coalesce(u.rep_address, '') <> '' OR coalesce(u.rep_email, '') <> '' AS reporter
    FROM unnest(p_actor_user, p_actor_unit, p_request_id, p_now_ms, p_deadline_ms, p_year, p_title, p_summary,
                p_source, p_subject_name, p_subject_position, p_subject_rank, p_subject_top, p_host_unit,
                p_categories, p_rep_name, p_rep_phone, p_rep_address, p_rep_email, p_token)
           WITH ORDINALITY AS u(usr, unit, req, now_ms, deadline_ms, yr, title, summary, source, subject_name,
                                subject_position, subject_rank, subject_top, host_unit, categories,
                                rep_name, rep_phone, rep_address, rep_email, token, o)
    JOIN units un ON un.id = u.unit
    WHERE u.usr IS NOT NULL AND u.req IS NOT NULL AND u.yr IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM clue_requests q WHERE q.user_id = u.usr AND q.request_id = u.req)
      AND NOT EXISTS (SELECT 1 FROM rect_requests x WHERE x.user_id = u.usr AND x.request_id = u.req)
  ), k AS (
    -- One counter upsert per (unit, year), in that order (the lock order), by the calls' count.
    INSERT INTO clue_counters AS k (unit_id, year, last_seq)
    SELECT i.unit, i.yr, count(*) FROM i GROUP BY i.unit, i.yr ORDER BY i.unit, i.yr
    ON CONFLICT (unit_id, year) DO UPDATE SET last_seq = k.last_seq + excluded.last_seq
    RETURNING k.unit_id, k.year, k.last_seq
  ), num AS MATERIALIZED (
    -- The unit's calls take the run of numbers that ends at the new last_seq, in call order.
    SELECT i.*, k.last_seq - count(*) OVER w + row_number() OVER w AS nr
    FROM i JOIN k ON k.unit_id = i.unit AND k.year = i.yr
    WINDOW w AS (PARTITION BY i.unit, i.yr ORDER BY i.o ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
  ), c AS (
    INSERT INTO clues AS c (registration_number, reg_unit, reg_year, reg_seq, title, summary, source,
                            subject_name, subject_position, subject_rank_level, subject_is_top_leader, host_unit,
                            violation_categories, has_reporter, state, owner_unit, created_by, created_at,
                            updated_at, stage_entered_at, stage_deadline)
    SELECT format('%s-%s-%s', num.code, num.yr,
                  CASE WHEN num.nr < 10000 THEN lpad(num.nr::text, 4, '0') ELSE num.nr::text END),
           num.unit, num.yr, num.nr, num.title, num.summary, num.source, num.subject_name,
           coalesce(num.subject_position, ''), coalesce(num.subject_rank, ''), coalesce(num.subject_top, false),
           num.host_unit, coalesce(num.categories::text[], '{}'), num.reporter, 'ACCEPTED', num.unit, num.usr,
           clue_ms_ts(num.now_ms), clue_ms_ts(num.now_ms), clue_ms_ts(num.now_ms), clue_ms_ts(num.deadline_ms)
    FROM num ORDER BY num.o
    RETURNING c
  ), cn AS MATERIALIZED (
    SELECT c.c, num.*
    FROM c JOIN num ON (c.c).reg_unit = num.unit AND (c.c).reg_year = num.yr AND (c.c).reg_seq = num.nr
  ), r AS (
    INSERT INTO clue_reporters AS r (clue_id, owner_unit, name, phone, address, email)
    SELECT (cn.c).id, (cn.c).owner_unit, coalesce(cn.rep_name, ''), coalesce(cn.rep_phone, ''),
           coalesce(cn.rep_address, ''), coalesce(cn.rep_email, '')
    FROM cn WHERE cn.reporter ORDER BY cn.o
    RETURNING r
  ), d AS MATERIALIZED (
    -- clue_submit()'s details; the reporter is never written to the audit trail, only that
    -- there is one, and a hash.
    SELECT cn.*,
           jsonb_build_object('registration_number', (cn.c).registration_number, 'title', (cn.c).title,
                              'source', (cn.c).source, 'subject_name', (cn.c).subject_name,
                              'host_unit', (cn.c).host_unit, 'has_reporter', cn.reporter,
                              'version', (cn.c).version, 'stage_deadline_ms', cn.deadline_ms,
                              'request_id', cn.req, 'content_sha256', clue_content_sha256(cn.c))
             || CASE WHEN cn.reporter THEN jsonb_build_object('reporter_sha256', clue_reporter_sha256(r.r))
                     ELSE '{}'::jsonb END AS details
    FROM cn LEFT JOIN r ON (r.r).clue_id = (cn.c).id
  ), a AS (
    SELECT count(*) AS events
    FROM (SELECT array_agg(d.usr ORDER BY d.o) AS usr, array_agg(d.unit ORDER BY d.o) AS unit,
                 array_agg((d.c).id ORDER BY d.o) AS id, array_agg((d.c).owner_unit ORDER BY d.o) AS owner,
                 array_agg(d.details ORDER BY d.o) AS details, array_agg(d.token ORDER BY d.o) AS token,
                 count(*)::int AS n
          FROM d) g,
         audit_append_many(g.usr, g.unit, array_fill('clue.submit'::text, ARRAY[g.n]),
                           array_fill('clue'::text, ARRAY[g.n]), g.id, g.owner, array_fill(NULL::text, ARRAY[g.n]),
                           array_fill('ACCEPTED'::text, ARRAY[g.n]), array_fill(NULL::text, ARRAY[g.n]),
                           g.details, g.token)
    WHERE g.n > 0
  ), q AS (
    INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit)
    SELECT cn.usr, cn.req, 'SubmitClue', (cn.c).id, NULL, (cn.c).owner_unit FROM cn ORDER BY cn.o
  )
  SELECT d.c, d.usr, d.unit, d.o::int FROM d CROSS JOIN a ORDER BY d.o;
END $$;

-- Replaces clue_apply_moves of 0029_direct_moves.sql: the same, and the move of a caller recused
-- from the clue, or on a key a ledger call used, left out.
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
  -- clue_request_begin()), and one whose key a ledger call used (refused alone, as reused).
  -- Each move done records its request.
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
      AND NOT EXISTS (SELECT 1 FROM rect_requests x WHERE x.user_id = i.au AND x.request_id = i.rid)
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
