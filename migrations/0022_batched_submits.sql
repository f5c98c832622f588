-- Batched submits (issue 11): clue_submit_many() does the work of many clue_submit() calls in
-- one statement and one transaction, so that PostgreSQL pays the executor's per-statement
-- set-up, the commit and the WAL flush once per batch instead of once per submission, and a
-- unit's counter row, locked from the numbers' draw to the commit, hands out a run of numbers
-- per flush instead of one.
--
-- The contract (docs/WRITES.md, "Batched submits"): parameter i is the array of every call's
-- parameter i of clue_submit() of 0018_one_statement_writes.sql, in call order; the result is
-- one row per call it completed, with the clue, the caller (user, unit) and the call's 1-based
-- position ord. Each completed call gets exactly what clue_submit() would have given it, in
-- the same transaction order: the clue row, the next gapless number of its (unit, year) (the
-- calls of one unit in one batch take consecutive numbers in call order), the reporter row,
-- the clue.submit event with the same fields, details and canonical hash on a new chain, and
-- the request record. A call it leaves out (no row for its ord) is one it could not do exactly
-- so: its (user, request_id) already has a record (a retry: clue_submit answers it with the
-- first clue, or refuses another method's key), its unit does not exist, or a key parameter is
-- NULL. clued runs such a call again on its own with clue_submit(). Anything else that would
-- fail one call (a constraint, two calls with one key) raises, and the whole batch rolls back
-- and is run again call by call.
--
-- The audit rows are written, as always, by a SECURITY DEFINER append alone: audit_append_many()
-- appends one event to each of several distinct chains, with the order of audit_append() (the
-- transaction id first, the chain heads created or locked, then the seqs drawn in event order).
--
-- Both functions keep generic plans (plan_cache_mode): their statements take arrays, and a
-- custom plan per call (PostgreSQL's default for the first calls, and whenever the generic
-- plan's estimate looks worse, as it does for arrays of unknown length) cost more than the
-- batch saved: 2.2 ms per batch of 1 to 16 against 0.6 to 2.2 ms with the generic plans.

-- ---- the audit append, for many chains --------------------------------------------------------

-- Appends event i (the i-th element of every array) to the chain (p_subject_type[i],
-- p_subject_id[i]); the chains must be distinct. Each event is the one audit_append(...,
-- p_token) of 0018 would append: the same columns, canonical hash (audit_hash()) and chain
-- link. The transaction id is taken first; new chain heads are created in (subject type, id)
-- order, existing ones locked in that order; then the seqs are drawn in array order, and the
-- events inserted and the heads moved forward in one statement. Returns the events, in seq
-- order. SECURITY DEFINER with a fixed search_path, like audit_append(): with it the runtime
-- role appends audit rows, and nothing else.
CREATE FUNCTION audit_append_many(
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  -- See 0004: a transaction id first, then (below) the seqs.
  x bigint := txid_current();
  n int := coalesce(cardinality(p_subject_id), 0);
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
  IF (SELECT count(DISTINCT (t, i)) FROM unnest(p_subject_type, p_subject_id) AS u(t, i)) <> n THEN
    RAISE EXCEPTION 'audit_append_many: one event per chain';
  END IF;

  -- The chain heads: the new ones created (a clue's chain is new), in subject order.
  WITH h AS (
    INSERT INTO audit_heads (subject_type, subject_id)
    SELECT u.t, u.i FROM unnest(p_subject_type, p_subject_id) AS u(t, i) ORDER BY u.t, u.i
    ON CONFLICT DO NOTHING
    RETURNING 1
  )
  SELECT count(*) INTO fresh FROM h;
  IF fresh < n THEN
    -- Chains that have a head already: lock them, in subject order, before the seqs.
    PERFORM 1 FROM audit_heads hd
    WHERE (hd.subject_type, hd.subject_id) IN (SELECT u.t, u.i FROM unnest(p_subject_type, p_subject_id) AS u(t, i))
    ORDER BY hd.subject_type, hd.subject_id
    FOR UPDATE;
  END IF;

  -- The seqs drawn in array order over the sorted rows; the columns in table order as in
  -- audit_append(): seq, at, actor, action, subject, owner, from, to, reason, details,
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

-- ---- many submissions in one statement ---------------------------------------------------------

-- clue_submit() of 0018 for many calls: parameter i is the array of the calls' parameter i,
-- in call order, except p_categories: one element per call, that call's text[] in its text
-- form ('{a,b}'; NULL as clue_submit takes NULL). One row per completed call: the clue, the
-- caller, ord (the call's 1-based position). See the head of this file for what is left out.
-- The statements, for the whole batch: the idempotency keys' advisory locks (sorted, so that
-- two batches cannot deadlock), then one statement that reads the records and unit codes,
-- draws the numbers (one upsert per (unit, year), in that order), inserts the clues, the
-- reporters and the request records, and appends the events through audit_append_many().
CREATE FUNCTION clue_submit_many(
  p_actor_user bigint[], p_actor_unit bigint[], p_request_id uuid[], p_now_ms bigint[], p_deadline_ms bigint[],
  p_year int[], p_title text[], p_summary text[], p_source text[], p_subject_name text[],
  p_subject_position text[], p_subject_rank text[], p_subject_top boolean[], p_host_unit text[],
  p_categories text[], p_rep_name text[], p_rep_phone text[], p_rep_address text[], p_rep_email text[],
  p_token bigint[])
RETURNS TABLE (clue clues, actor_user bigint, actor_unit bigint, ord int)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
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
    -- The calls this batch does: no record for the key, an existing unit, the keys given.
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
