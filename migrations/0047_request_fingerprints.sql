-- A request_id names one request, not one kind of call (docs/WRITES.md, "Retries").
--
-- A key reused for another kind of call, or for the same kind on another clue, proposal or
-- item, was refused (INVALID_ARGUMENT "request_id ... was already used for another call").
-- Reused for the same kind of call with other fields (SubmitClue of another clue, a move to
-- another state, a note with another text), it was taken for a retry: the caller was
-- answered the first call's result, and what it asked for was lost.
--
-- Every request record now keeps the request's fingerprint (request_sha256): SHA-256 of a
-- canonical encoding of the decoded request message without its request_id, which clued
-- computes (server/service/request_sha256.c) and passes to the write. Not the wire bytes:
-- protobuf serialisation is not canonical, and two clients (or one client's two versions) may
-- send the same fields differently. The functions that look a key's record up under its
-- lock compare it there, in the statement that already reads the record:
--
--   - clue_request_begin() (every single write on a clue or a proposal), rect_request_begin()
--     (the ledger's writes) and case_create() raise CLARG "request_id ... was already used for
--     a different request (<method>)" when the fingerprints differ, before anything is written;
--   - the batched submissions and moves record each call's fingerprint; a call whose key is
--     recorded already is left out of the batch and runs alone, where the above compares it.
--
-- The server's facts read, which answers most retries without a write, compares the
-- fingerprint it reads with the call's (clue_request_same() in server/service/clue_row.c).
--
-- A record written before this migration has no fingerprint (NULL) and matches any request
-- of its kind, as every retry did before; so does a call made without one (bootstrap's
-- clue_submit() and rect_create(), whose keys are new each time).

ALTER TABLE clue_requests ADD COLUMN request_sha256 bytea;
ALTER TABLE rect_requests ADD COLUMN request_sha256 bytea;

-- Replaces clue_request_begin of 0033_recusals_and_request_keys_checked_in_the_write.sql:
-- the same, and a retry whose fingerprint differs from the first call's refused.
DROP FUNCTION clue_request_begin(p_user bigint, p_request_id uuid, p_method text, p_clue bigint,
                                 p_proposal bigint);
CREATE FUNCTION clue_request_begin(p_user bigint, p_request_id uuid, p_method text, p_clue bigint,
                                   p_proposal bigint, p_request_sha256 bytea)
 RETURNS clue_outcome
 LANGUAGE plpgsql
AS $$
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
  -- The same kind of call, with other fields: not a retry. A record of before
  -- 0047_request_fingerprints.sql, or a call without a fingerprint, matches any.
  IF q.request_sha256 <> p_request_sha256 THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('request_id %s was already used for a different request (%s)', p_request_id, q.method);
  END IF;
  SELECT * INTO c FROM clues WHERE id = q.clue_id;
  o.clue := c;
  IF q.proposal_id IS NOT NULL THEN
    SELECT * INTO p FROM proposals WHERE id = q.proposal_id;
    o.proposal := p;
  END IF;
  RETURN o;
END $$;

-- Replaces clue_request_record of 0016_lean_writes.sql:
-- the same, and the call's fingerprint recorded.
DROP FUNCTION clue_request_record(p_user bigint, p_request_id uuid, p_method text, p_clue bigint,
                                  p_proposal bigint, p_owner bigint);
CREATE FUNCTION clue_request_record(p_user bigint, p_request_id uuid, p_method text, p_clue bigint,
                                    p_proposal bigint, p_owner bigint, p_request_sha256 bytea)
 RETURNS void
 LANGUAGE plpgsql
AS $$
BEGIN
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit, request_sha256)
  VALUES (p_user, p_request_id, p_method, p_clue, p_proposal, p_owner, p_request_sha256);
END $$;

-- Replaces rect_request_begin of 0035_ledger_recusals_checked_in_the_write.sql:
-- the same, and a retry whose fingerprint differs from the first call's refused.
DROP FUNCTION rect_request_begin(p_user bigint, p_request_id uuid, p_method text, p_item bigint);
CREATE FUNCTION rect_request_begin(p_user bigint, p_request_id uuid, p_method text, p_item bigint,
                                   p_request_sha256 bytea)
 RETURNS rect_items
 LANGUAGE plpgsql
AS $$
DECLARE
  q rect_requests;
  other text;
  it rect_items;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('clue_requests/' || p_user || '/' || p_request_id, 0));
  SELECT method INTO other FROM clue_requests WHERE user_id = p_user AND request_id = p_request_id;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('request_id %s was already used for another call (%s)', p_request_id, other);
  END IF;
  SELECT * INTO q FROM rect_requests WHERE user_id = p_user AND request_id = p_request_id;
  IF NOT FOUND THEN
    -- A first call. The server decided it on facts read before this transaction; a recusal of
    -- the caller from the item's source clue recorded since refuses it now.
    IF p_item IS NOT NULL
       AND EXISTS (SELECT 1 FROM rect_items i JOIN recusals r ON r.clue_id = i.source_clue
                   WHERE i.id = p_item AND r.user_id = p_user) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'rectification item not found';
    END IF;
    RETURN NULL;
  END IF;
  IF q.method <> p_method OR (p_item IS NOT NULL AND q.item_id <> p_item) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('request_id %s was already used for another call (%s)', p_request_id, q.method);
  END IF;
  -- The same kind of call, with other fields: not a retry. A record of before
  -- 0047_request_fingerprints.sql, or a call without a fingerprint, matches any.
  IF q.request_sha256 <> p_request_sha256 THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('request_id %s was already used for a different request (%s)', p_request_id, q.method);
  END IF;
  SELECT * INTO it FROM rect_items WHERE id = q.item_id;
  RETURN it;
END $$;

-- Replaces clue_submit of 0018_one_statement_writes.sql:
-- the same, with the call's fingerprint, which its request record keeps and a retry must match.
DROP FUNCTION clue_submit(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                          p_now_ms bigint, p_deadline_ms bigint, p_year integer, p_title text,
                          p_summary text, p_source text, p_subject_name text,
                          p_subject_position text, p_subject_rank text, p_subject_top boolean,
                          p_host_unit text, p_categories text[], p_rep_name text, p_rep_phone text,
                          p_rep_address text, p_rep_email text, p_token bigint);
CREATE FUNCTION clue_submit(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                            p_now_ms bigint, p_deadline_ms bigint, p_year integer, p_title text,
                            p_summary text, p_source text, p_subject_name text,
                            p_subject_position text, p_subject_rank text, p_subject_top boolean,
                            p_host_unit text, p_categories text[], p_rep_name text,
                            p_rep_phone text, p_rep_address text, p_rep_email text, p_token bigint,
                            p_request_sha256 bytea DEFAULT NULL)
 RETURNS clues
 LANGUAGE plpgsql
AS $$
DECLARE
  o clue_outcome;
  c clues;
  r clue_reporters;
  code text;
  n int;
  now_ts timestamptz := clue_ms_ts(p_now_ms);
  reporter boolean := coalesce(p_rep_name, '') <> '' OR coalesce(p_rep_phone, '') <> ''
                      OR coalesce(p_rep_address, '') <> '' OR coalesce(p_rep_email, '') <> '';
  details jsonb;
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'SubmitClue', NULL, NULL, p_request_sha256);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o.clue;
  END IF;
  SELECT units.code INTO code FROM units WHERE id = p_actor_unit;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('unit %s not found', p_actor_unit);
  END IF;
  INSERT INTO clue_counters AS k (unit_id, year, last_seq) VALUES (p_actor_unit, p_year, 1)
  ON CONFLICT (unit_id, year) DO UPDATE SET last_seq = k.last_seq + 1
  RETURNING last_seq INTO n;
  INSERT INTO clues (registration_number, reg_unit, reg_year, reg_seq, title, summary, source,
                     subject_name, subject_position, subject_rank_level, subject_is_top_leader, host_unit,
                     violation_categories, has_reporter, state, owner_unit, created_by, created_at,
                     updated_at, stage_entered_at, stage_deadline)
  VALUES (format('%s-%s-%s', code, p_year, CASE WHEN n < 10000 THEN lpad(n::text, 4, '0') ELSE n::text END),
          p_actor_unit, p_year, n, p_title, p_summary, p_source, p_subject_name,
          coalesce(p_subject_position, ''), coalesce(p_subject_rank, ''), coalesce(p_subject_top, false),
          p_host_unit, coalesce(p_categories, '{}'), reporter, 'ACCEPTED', p_actor_unit, p_actor_user,
          now_ts, now_ts, now_ts, clue_ms_ts(p_deadline_ms))
  RETURNING * INTO c;
  details := jsonb_build_object('registration_number', c.registration_number, 'title', c.title,
                                'source', c.source, 'subject_name', c.subject_name,
                                'host_unit', c.host_unit, 'has_reporter', reporter,
                                'version', c.version, 'stage_deadline_ms', p_deadline_ms,
                                'request_id', p_request_id, 'content_sha256', clue_content_sha256(c));
  IF reporter THEN
    INSERT INTO clue_reporters (clue_id, owner_unit, name, phone, address, email)
    VALUES (c.id, c.owner_unit, coalesce(p_rep_name, ''), coalesce(p_rep_phone, ''),
            coalesce(p_rep_address, ''), coalesce(p_rep_email, ''))
    RETURNING * INTO r;
    -- The reporter is never written to the audit trail; only that there is one, and a hash.
    details := details || jsonb_build_object('reporter_sha256', clue_reporter_sha256(r));
  END IF;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.submit', 'clue', c.id, c.owner_unit, NULL, 'ACCEPTED',
                       NULL, details, p_token);
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit, request_sha256)
  VALUES (p_actor_user, p_request_id, 'SubmitClue', c.id, NULL, c.owner_unit, p_request_sha256);
  RETURN c;
END $$;

-- Replaces clue_submit_many of 0033_recusals_and_request_keys_checked_in_the_write.sql:
-- the same, and each call's fingerprint recorded (a retry is left out, and runs alone).
DROP FUNCTION clue_submit_many(p_actor_user bigint[], p_actor_unit bigint[], p_request_id uuid[],
                               p_now_ms bigint[], p_deadline_ms bigint[], p_year integer[],
                               p_title text[], p_summary text[], p_source text[],
                               p_subject_name text[], p_subject_position text[],
                               p_subject_rank text[], p_subject_top boolean[], p_host_unit text[],
                               p_categories text[], p_rep_name text[], p_rep_phone text[],
                               p_rep_address text[], p_rep_email text[], p_token bigint[]);
CREATE FUNCTION clue_submit_many(p_actor_user bigint[], p_actor_unit bigint[], p_request_id uuid[],
                                 p_now_ms bigint[], p_deadline_ms bigint[], p_year integer[],
                                 p_title text[], p_summary text[], p_source text[],
                                 p_subject_name text[], p_subject_position text[],
                                 p_subject_rank text[], p_subject_top boolean[], p_host_unit text[],
                                 p_categories text[], p_rep_name text[], p_rep_phone text[],
                                 p_rep_address text[], p_rep_email text[], p_token bigint[],
                                 p_request_sha256 bytea[] DEFAULT NULL)
 RETURNS TABLE(clue clues, actor_user bigint, actor_unit bigint, ord integer)
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
 SET enable_seqscan TO 'off'
 SET enable_hashjoin TO 'off'
 SET enable_mergejoin TO 'off'
AS $$
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
                p_categories, p_rep_name, p_rep_phone, p_rep_address, p_rep_email, p_token, coalesce(p_request_sha256, '{}'))
           WITH ORDINALITY AS u(usr, unit, req, now_ms, deadline_ms, yr, title, summary, source, subject_name,
                                subject_position, subject_rank, subject_top, host_unit, categories,
                                rep_name, rep_phone, rep_address, rep_email, token, sha, o)
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
    INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit, request_sha256)
    SELECT cn.usr, cn.req, 'SubmitClue', (cn.c).id, NULL, (cn.c).owner_unit, cn.sha FROM cn ORDER BY cn.o
  )
  SELECT d.c, d.usr, d.unit, d.o::int FROM d CROSS JOIN a ORDER BY d.o;
END $$;

-- Replaces clue_apply_move of 0037_writes_recheck_under_the_clue_lock.sql:
-- the same, with the call's fingerprint, which its request record keeps and a retry must match.
DROP FUNCTION clue_apply_move(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                              p_now_ms bigint, p_clue bigint, p_expected_version bigint,
                              p_from text, p_to text, p_action text, p_reason text, p_details jsonb,
                              p_deadline_ms bigint, p_token bigint);
CREATE FUNCTION clue_apply_move(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                p_now_ms bigint, p_clue bigint, p_expected_version bigint,
                                p_from text, p_to text, p_action text, p_reason text,
                                p_details jsonb, p_deadline_ms bigint, p_token bigint,
                                p_request_sha256 bytea DEFAULT NULL)
 RETURNS clue_outcome
 LANGUAGE plpgsql
AS $$
DECLARE
  o clue_outcome;
  c clues;
  now_ts timestamptz := clue_ms_ts(p_now_ms);
  deadline_ts timestamptz := clue_ms_ts(p_deadline_ms);
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'RequestTransition', p_clue, NULL, p_request_sha256);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o;
  END IF;
  -- Of two racing moves the second re-reads the row the first changed, re-checks the WHERE
  -- against it and updates nothing.
  UPDATE clues SET
    state = p_to,
    version = version + 1,
    updated_at = now_ts,
    stage_entered_at = now_ts,
    stage_deadline = deadline_ts,
    deadline_extended = false,
    disposal = coalesce(p_details ->> 'disposal', disposal),
    finding = coalesce(p_details ->> 'finding', finding),
    sanction_kind = coalesce(p_details ->> 'sanction_kind', sanction_kind),
    persons_disciplined = coalesce((p_details ->> 'persons_disciplined')::int, persons_disciplined),
    receiving_organ = coalesce(p_details ->> 'receiving_organ', receiving_organ),
    closed_at = CASE WHEN deadline_ts IS NULL THEN now_ts END,
    pending_proposal_id = NULL,
    pending_reviewer_unit = NULL
  WHERE id = p_clue AND version = p_expected_version AND state = p_from AND pending_proposal_id IS NULL
  RETURNING * INTO c;
  IF NOT FOUND THEN
    PERFORM clue_refuse_stale(p_clue, p_expected_version);
  END IF;
  -- The update holds the clue now, so a recusal that held it first has committed; the
  -- refusal undoes the update.
  PERFORM clue_refuse_recused(c, p_actor_user, 'clue not found');
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.move', 'clue', c.id, c.owner_unit, p_from, p_to, p_reason,
                       coalesce(p_details, '{}') || jsonb_build_object('action', p_action, 'version', c.version,
                                                                       'stage_deadline_ms', p_deadline_ms,
                                                                       'request_id', p_request_id),
                       p_token);
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit, request_sha256)
  VALUES (p_actor_user, p_request_id, 'RequestTransition', c.id, NULL, c.owner_unit, p_request_sha256);
  o.clue := c;
  RETURN o;
END $$;

-- Replaces clue_apply_moves of 0037_writes_recheck_under_the_clue_lock.sql:
-- the same, and each move's fingerprint recorded (a retry is left out: alone, clue_apply_move() compares it).
DROP FUNCTION clue_apply_moves(p_actor_user bigint[], p_actor_unit bigint[], p_request_id uuid[],
                               p_now_ms bigint[], p_clue bigint[], p_expected_version bigint[],
                               p_from text[], p_to text[], p_action text[], p_reason text[],
                               p_details jsonb[], p_deadline_ms bigint[], p_token bigint[],
                               p_direct boolean);
CREATE FUNCTION clue_apply_moves(p_actor_user bigint[], p_actor_unit bigint[], p_request_id uuid[],
                                 p_now_ms bigint[], p_clue bigint[], p_expected_version bigint[],
                                 p_from text[], p_to text[], p_action text[], p_reason text[],
                                 p_details jsonb[], p_deadline_ms bigint[], p_token bigint[],
                                 p_direct boolean, p_request_sha256 bytea[] DEFAULT NULL)
 RETURNS TABLE(ord integer, clue clues, proposal proposals)
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
 SET enable_seqscan TO 'off'
 SET enable_hashjoin TO 'off'
 SET enable_mergejoin TO 'off'
AS $$
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
  -- out (and refused alone by its compare-and-swap). So is every move of a clue that had a
  -- recusal: a look at recusals here would read the snapshot taken before the update waited
  -- for the clue, which a recusal's writer holds until it commits, while has_recusals is
  -- read again from the row the update locks (the first recusal sets it in its own
  -- transaction). Alone, clue_apply_move() looks under the lock and refuses a recused caller
  -- as a missing clue; a clue without recusals, almost every one, costs no probe. And one
  -- whose key a ledger call used is left out (refused alone, as reused). Each move done
  -- records its request.
  WITH i AS MATERIALIZED (
    SELECT s.*, clue_ms_ts(s.now_ms) AS now_ts, clue_ms_ts(s.dl) AS deadline_ts
    FROM unnest(p_actor_user, p_actor_unit, p_request_id, p_now_ms, p_clue, p_expected_version, p_from, p_to,
                p_action, p_reason, p_details, p_deadline_ms, p_token, coalesce(p_request_sha256, '{}')) WITH ORDINALITY
           AS s(au, aun, rid, now_ms, cid, ver, f, t, act, reason, details, dl, tok, sha, k)
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
      AND NOT c.has_recusals
      AND NOT EXISTS (SELECT 1 FROM rect_requests x WHERE x.user_id = i.au AND x.request_id = i.rid)
      AND (NOT p_direct
           OR (c.owner_unit = i.aun
               AND NOT EXISTS (SELECT 1 FROM clue_requests r WHERE r.user_id = i.au AND r.request_id = i.rid)))
    RETURNING c AS row, i.*
  ), q AS (
    INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit, request_sha256)
    SELECT u.au, u.rid, 'RequestTransition', (u.row).id, NULL, (u.row).owner_unit, u.sha FROM u
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

-- Replaces proposal_create of 0037_writes_recheck_under_the_clue_lock.sql:
-- the same, with the call's fingerprint, which its request record keeps and a retry must match.
DROP FUNCTION proposal_create(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                              p_now_ms bigint, p_clue bigint, p_expected_version bigint,
                              p_from text, p_to text, p_action text, p_reason text, p_details jsonb,
                              p_reviewer_unit bigint);
CREATE FUNCTION proposal_create(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                p_now_ms bigint, p_clue bigint, p_expected_version bigint,
                                p_from text, p_to text, p_action text, p_reason text,
                                p_details jsonb, p_reviewer_unit bigint,
                                p_request_sha256 bytea DEFAULT NULL)
 RETURNS clue_outcome
 LANGUAGE plpgsql
AS $$
DECLARE
  o clue_outcome;
  c clues;
  p proposals;
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'RequestTransition', p_clue, NULL, p_request_sha256);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o;
  END IF;
  SELECT * INTO c FROM clues WHERE id = p_clue AND version = p_expected_version AND state = p_from
                               AND pending_proposal_id IS NULL
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    PERFORM clue_refuse_stale(p_clue, p_expected_version);
  END IF;
  PERFORM clue_refuse_recused(c, p_actor_user, 'clue not found');
  INSERT INTO proposals (clue_id, owner_unit, from_state, target, reason, details, proposer_user, proposer_unit,
                         reviewer_unit, clue_version, created_at)
  VALUES (c.id, c.owner_unit, p_from, p_to, p_reason, coalesce(p_details, '{}'), p_actor_user, p_actor_unit,
          p_reviewer_unit, c.version, clue_ms_ts(p_now_ms))
  RETURNING * INTO p;
  UPDATE clues SET pending_proposal_id = p.id, pending_reviewer_unit = p.reviewer_unit
  WHERE id = c.id RETURNING * INTO c;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'proposal.create', 'clue', c.id, c.owner_unit, p_from, p_to,
                       p_reason, coalesce(p_details, '{}') || jsonb_build_object(
                         'proposal_id', p.id, 'action', p_action, 'reviewer_unit_id', p.reviewer_unit,
                         'version', c.version, 'request_id', p_request_id));
  PERFORM clue_request_record(p_actor_user, p_request_id, 'RequestTransition', c.id, p.id, c.owner_unit, p_request_sha256);
  o.clue := c;
  o.proposal := p;
  RETURN o;
END $$;

-- Replaces proposal_decide of 0037_writes_recheck_under_the_clue_lock.sql:
-- the same, with the call's fingerprint, which its request record keeps and a retry must match.
DROP FUNCTION proposal_decide(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                              p_now_ms bigint, p_proposal bigint, p_approve boolean, p_comment text,
                              p_action text, p_deadline_ms bigint);
CREATE FUNCTION proposal_decide(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                p_now_ms bigint, p_proposal bigint, p_approve boolean,
                                p_comment text, p_action text, p_deadline_ms bigint,
                                p_request_sha256 bytea DEFAULT NULL)
 RETURNS clue_outcome
 LANGUAGE plpgsql
AS $$
DECLARE
  o clue_outcome;
  c clues;
  p proposals;
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'ReviewProposal', NULL, p_proposal, p_request_sha256);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o;
  END IF;
  SELECT * INTO p FROM proposals WHERE id = p_proposal FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'proposal not found';
  END IF;
  SELECT * INTO c FROM clues WHERE id = p.clue_id FOR NO KEY UPDATE;
  PERFORM clue_refuse_recused(c, p_actor_user, 'proposal not found');
  IF p.status <> 'PENDING' THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = 'proposal was already decided';
  END IF;
  IF p_approve THEN
    IF c.version <> p.clue_version OR c.state <> p.from_state OR c.pending_proposal_id IS DISTINCT FROM p.id THEN
      RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
        'clue %s changed since the proposal was made (now version %s, proposal made at version %s); '
        'reject the proposal and propose again', p.clue_id, c.version, p.clue_version);
    END IF;
    c := clue_enter_state(p.clue_id, p.target, p.details, p_now_ms, p_deadline_ms);
  ELSE
    UPDATE clues SET pending_proposal_id = NULL, pending_reviewer_unit = NULL
    WHERE id = p.clue_id AND pending_proposal_id = p.id
    RETURNING * INTO c;
    IF NOT FOUND THEN
      SELECT * INTO c FROM clues WHERE id = p.clue_id;
    END IF;
  END IF;
  UPDATE proposals
  SET status = CASE WHEN p_approve THEN 'APPROVED' ELSE 'REJECTED' END,
      review_comment = p_comment, reviewed_by = p_actor_user, decided_at = clue_ms_ts(p_now_ms)
  WHERE id = p.id
  RETURNING * INTO p;
  PERFORM audit_append(p_actor_user, p_actor_unit,
                       CASE WHEN p_approve THEN 'proposal.approve' ELSE 'proposal.reject' END,
                       'clue', c.id, c.owner_unit, p.from_state, p.target, p_comment,
                       p.details || jsonb_build_object(
                         'proposal_id', p.id, 'action', p_action, 'proposer_user_id', p.proposer_user,
                         'version', c.version,
                         'stage_deadline_ms', CASE WHEN p_approve THEN p_deadline_ms END,
                         'request_id', p_request_id));
  PERFORM clue_request_record(p_actor_user, p_request_id, 'ReviewProposal', c.id, p.id, c.owner_unit, p_request_sha256);
  o.clue := c;
  o.proposal := p;
  RETURN o;
END $$;

-- Replaces clue_handover of 0037_writes_recheck_under_the_clue_lock.sql:
-- the same, with the call's fingerprint, which its request record keeps and a retry must match.
DROP FUNCTION clue_handover(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                            p_now_ms bigint, p_clue bigint, p_expected_version bigint,
                            p_to_unit bigint, p_reason text);
CREATE FUNCTION clue_handover(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                              p_now_ms bigint, p_clue bigint, p_expected_version bigint,
                              p_to_unit bigint, p_reason text, p_request_sha256 bytea DEFAULT NULL)
 RETURNS clue_outcome
 LANGUAGE plpgsql
AS $$
DECLARE
  o clue_outcome;
  c clues;
  p proposals;
  pid bigint;
  from_unit bigint;
  ended bigint[];
  now_ts timestamptz := clue_ms_ts(p_now_ms);
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'HandOver', p_clue, NULL, p_request_sha256);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o;
  END IF;
  SELECT pending_proposal_id INTO pid FROM clues WHERE id = p_clue;
  IF pid IS NOT NULL THEN
    PERFORM 1 FROM proposals WHERE id = pid FOR NO KEY UPDATE;
  END IF;
  SELECT * INTO c FROM clues WHERE id = p_clue FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'clue not found';
  END IF;
  PERFORM clue_refuse_recused(c, p_actor_user, 'clue not found');
  IF c.version <> p_expected_version THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s is at version %s, not the expected %s: it changed meanwhile; reload it and retry',
      p_clue, c.version, p_expected_version);
  END IF;
  IF c.pending_proposal_id IS DISTINCT FROM pid THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s changed meanwhile; reload it and retry', p_clue);
  END IF;
  from_unit := c.owner_unit;

  IF pid IS NOT NULL THEN
    UPDATE proposals SET status = 'WITHDRAWN', decided_at = now_ts
    WHERE id = pid RETURNING * INTO p;
    PERFORM audit_append(p_actor_user, p_actor_unit, 'proposal.withdraw', 'clue', c.id, from_unit,
                         p.from_state, p.target, p_reason,
                         jsonb_build_object('proposal_id', p.id, 'reviewer_unit_id', p.reviewer_unit,
                                            'cause', 'handover', 'to_unit_id', p_to_unit,
                                            'request_id', p_request_id));
  END IF;

  UPDATE clues SET owner_unit = p_to_unit, version = version + 1, updated_at = now_ts,
                   pending_proposal_id = NULL, pending_reviewer_unit = NULL
  WHERE id = c.id RETURNING * INTO c;
  UPDATE clue_reporters SET owner_unit = p_to_unit WHERE clue_id = c.id;
  UPDATE proposals SET owner_unit = p_to_unit WHERE clue_id = c.id;
  UPDATE clue_requests SET owner_unit = p_to_unit WHERE clue_id = c.id;
  UPDATE notes SET owner_unit = p_to_unit WHERE clue_id = c.id;
  UPDATE case_clues SET owner_unit = p_to_unit WHERE clue_id = c.id;
  -- Every assignment ends here, for good: the rows go, so that no later handover back to the
  -- unit that made them can bring them back. The event names the handlers it ended.
  WITH gone AS (DELETE FROM clue_handlers h WHERE h.clue_id = c.id RETURNING h.user_id, h.owner_unit)
  SELECT array_agg(gone.user_id ORDER BY gone.user_id) FILTER (WHERE gone.owner_unit = from_unit)
  INTO ended FROM gone;

  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.handover', 'clue', c.id, c.owner_unit, NULL, NULL,
                       p_reason, jsonb_strip_nulls(jsonb_build_object(
                         'from_unit_id', from_unit, 'to_unit_id', p_to_unit, 'state', c.state,
                         'registration_number', c.registration_number, 'version', c.version,
                         'withdrawn_proposal_id', pid, 'case_id', c.joint_case_id,
                         'unassigned_user_ids', to_jsonb(ended), 'request_id', p_request_id)));
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, owner_unit, clue_version, request_sha256)
  VALUES (p_actor_user, p_request_id, 'HandOver', c.id, c.owner_unit, c.version, p_request_sha256);
  o.clue := c;
  IF pid IS NOT NULL THEN
    o.proposal := p;
  END IF;
  RETURN o;
END $$;

-- Replaces note_add of 0039_note_time_in_its_event.sql:
-- the same, with the call's fingerprint, which its request record keeps and a retry must match.
DROP FUNCTION note_add(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint,
                       p_clue bigint, p_seen_owner bigint, p_kind text, p_text text);
CREATE FUNCTION note_add(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                         p_now_ms bigint, p_clue bigint, p_seen_owner bigint, p_kind text,
                         p_text text, p_request_sha256 bytea DEFAULT NULL)
 RETURNS notes
 LANGUAGE plpgsql
AS $$
DECLARE
  o clue_outcome;
  c clues;
  n notes;
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'AddNote', p_clue, NULL, p_request_sha256);
  IF (o.clue).id IS NOT NULL THEN
    SELECT x.* INTO n FROM clue_requests q JOIN notes x ON x.id = q.note_id
    WHERE q.user_id = p_actor_user AND q.request_id = p_request_id;
    RETURN n;
  END IF;
  SELECT * INTO c FROM clues WHERE id = p_clue FOR SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'clue not found';
  END IF;
  PERFORM clue_refuse_recused(c, p_actor_user, 'clue not found');
  IF c.owner_unit <> p_seen_owner THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s was handed over meanwhile; reload it and retry', p_clue);
  END IF;
  INSERT INTO notes (clue_id, owner_unit, kind, text, author_user, author_unit, created_at)
  VALUES (c.id, c.owner_unit, p_kind, p_text, p_actor_user, p_actor_unit, clue_ms_ts(p_now_ms))
  RETURNING * INTO n;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'note.add', 'clue', c.id, c.owner_unit, NULL, NULL, NULL,
                       jsonb_build_object('note_id', n.id, 'kind', n.kind, 'text_bytes', octet_length(n.text),
                                          'text_sha256', encode(sha256(convert_to(n.text, 'UTF8')), 'hex'),
                                          'created_ms', p_now_ms, 'request_id', p_request_id));
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, note_id, owner_unit, request_sha256)
  VALUES (p_actor_user, p_request_id, 'AddNote', c.id, n.id, c.owner_unit, p_request_sha256);
  RETURN n;
END $$;

-- Replaces clue_extend_deadline of 0037_writes_recheck_under_the_clue_lock.sql:
-- the same, with the call's fingerprint, which its request record keeps and a retry must match.
DROP FUNCTION clue_extend_deadline(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                   p_now_ms bigint, p_clue bigint, p_expected_version bigint,
                                   p_days integer, p_reason text);
CREATE FUNCTION clue_extend_deadline(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                     p_now_ms bigint, p_clue bigint, p_expected_version bigint,
                                     p_days integer, p_reason text,
                                     p_request_sha256 bytea DEFAULT NULL)
 RETURNS clues
 LANGUAGE plpgsql
AS $$
DECLARE
  o clue_outcome;
  c clues;
  old_ms bigint;
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'ExtendDeadline', p_clue, NULL, p_request_sha256);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o.clue;
  END IF;
  SELECT * INTO c FROM clues WHERE id = p_clue AND version = p_expected_version AND pending_proposal_id IS NULL
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    PERFORM clue_refuse_stale(p_clue, p_expected_version);
  END IF;
  PERFORM clue_refuse_recused(c, p_actor_user, 'clue not found');
  old_ms := (extract(epoch FROM c.stage_deadline) * 1000)::bigint;
  UPDATE clues SET
    stage_deadline = stage_deadline + (p_days::bigint * 86400000) * interval '1 millisecond',
    deadline_extended = true,
    version = version + 1,
    updated_at = clue_ms_ts(p_now_ms)
  WHERE id = p_clue
  RETURNING * INTO c;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.deadline_extend', 'clue', c.id, c.owner_unit, NULL, NULL,
                       p_reason, jsonb_build_object('state', c.state, 'days', p_days, 'old_deadline_ms', old_ms,
                                                    'new_deadline_ms', old_ms + p_days::bigint * 86400000,
                                                    'version', c.version, 'request_id', p_request_id));
  PERFORM clue_request_record(p_actor_user, p_request_id, 'ExtendDeadline', c.id, NULL, c.owner_unit, p_request_sha256);
  RETURN c;
END $$;

-- Replaces clue_set_handler of 0037_writes_recheck_under_the_clue_lock.sql:
-- the same, with the call's fingerprint, which its request record keeps and a retry must match.
DROP FUNCTION clue_set_handler(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                               p_now_ms bigint, p_clue bigint, p_seen_owner bigint,
                               p_seen_state text, p_user bigint, p_assign boolean, p_reason text);
CREATE FUNCTION clue_set_handler(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                 p_now_ms bigint, p_clue bigint, p_seen_owner bigint,
                                 p_seen_state text, p_user bigint, p_assign boolean, p_reason text,
                                 p_request_sha256 bytea DEFAULT NULL)
 RETURNS clues
 LANGUAGE plpgsql
AS $$
DECLARE
  method text := CASE WHEN p_assign THEN 'AssignHandler' ELSE 'UnassignHandler' END;
  o clue_outcome := clue_request_begin(p_actor_user, p_request_id, method, p_clue, NULL, p_request_sha256);
  c clues;
  u users;
BEGIN
  IF (o.clue).id IS NOT NULL THEN
    RETURN o.clue;
  END IF;
  c := clue_lock_seen_owner(p_clue, p_seen_owner, p_actor_user);
  PERFORM clue_refuse_left_case(c, p_actor_unit);
  -- The server allowed the assignment in the state it read (a terminal state takes none); a
  -- move since, which this call does not compare by version, asks for a new decision. An
  -- unassignment is allowed in every state.
  IF p_assign AND c.state <> p_seen_state THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s changed meanwhile (now %s); reload it and retry', p_clue, c.state);
  END IF;
  SELECT * INTO u FROM users WHERE id = p_user;
  IF p_assign THEN
    PERFORM pg_advisory_xact_lock(hashtextextended('clue_handlers/' || p_clue || '/' || p_user, 0));
    IF EXISTS (SELECT 1 FROM recusals WHERE clue_id = p_clue AND user_id = p_user) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
        'user %s is recused from this clue and cannot be assigned to it', p_user);
    END IF;
    INSERT INTO clue_handlers (clue_id, user_id, owner_unit, assigned_by, assigned_by_unit, assigned_at)
    VALUES (p_clue, p_user, c.owner_unit, p_actor_user, p_actor_unit, clue_ms_ts(p_now_ms))
    ON CONFLICT (clue_id, user_id) DO UPDATE
      SET owner_unit = EXCLUDED.owner_unit, assigned_by = EXCLUDED.assigned_by,
          assigned_by_unit = EXCLUDED.assigned_by_unit, assigned_at = EXCLUDED.assigned_at
      WHERE clue_handlers.owner_unit <> EXCLUDED.owner_unit;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
        'user %s is already a handler of this clue', p_user);
    END IF;
  ELSE
    DELETE FROM clue_handlers WHERE clue_id = p_clue AND user_id = p_user AND owner_unit = c.owner_unit;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
        'user %s is not a handler of this clue', p_user);
    END IF;
  END IF;
  PERFORM audit_append(p_actor_user, p_actor_unit, CASE WHEN p_assign THEN 'clue.assign' ELSE 'clue.unassign' END,
                       'clue', c.id, c.owner_unit, NULL, NULL, p_reason,
                       jsonb_build_object('user_id', p_user, 'user_unit_id', u.unit_id, 'state', c.state,
                                          'request_id', p_request_id));
  PERFORM clue_request_record(p_actor_user, p_request_id, method, c.id, NULL, c.owner_unit, p_request_sha256);
  RETURN c;
END $$;

-- Replaces clue_recuse of 0043_overseers_recused_by_their_own.sql:
-- the same, with the call's fingerprint, which its request record keeps and a retry must match.
DROP FUNCTION clue_recuse(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                          p_now_ms bigint, p_clue bigint, p_seen_owner bigint, p_user bigint,
                          p_reason text);
CREATE FUNCTION clue_recuse(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                            p_now_ms bigint, p_clue bigint, p_seen_owner bigint, p_user bigint,
                            p_reason text, p_request_sha256 bytea DEFAULT NULL)
 RETURNS recusals
 LANGUAGE plpgsql
AS $$
DECLARE
  o clue_outcome := clue_request_begin(p_actor_user, p_request_id, 'RecordRecusal', p_clue, NULL, p_request_sha256);
  c clues;
  u users;
  r recusals;
  was_handler boolean;
BEGIN
  IF (o.clue).id IS NOT NULL THEN
    SELECT x.* INTO r FROM clue_requests q JOIN recusals x ON x.id = q.recusal_id
    WHERE q.user_id = p_actor_user AND q.request_id = p_request_id;
    RETURN r;
  END IF;
  c := clue_lock_seen_owner(p_clue, p_seen_owner, p_actor_user);
  SELECT * INTO u FROM users WHERE id = p_user;
  -- The user records their own conflict, or a leader of their unit does: neither stands on
  -- the clue's case. Anyone else is a leader of the owner or of the case's lead room, and
  -- records none for the staff of a unit overseeing the clue.
  IF p_user <> p_actor_user AND u.unit_id IS DISTINCT FROM p_actor_unit THEN
    PERFORM clue_refuse_left_case(c, p_actor_unit);
    IF u.unit_id <> c.owner_unit AND
       (u.unit_id = c.pending_reviewer_unit OR
        u.unit_id = (SELECT ou.liaison_room_id FROM units ou WHERE ou.id = c.owner_unit) OR
        (c.joint_case_id IS NOT NULL AND u.unit_id = joint_case_lead(c.joint_case_id))) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
        'user %s''s unit oversees clue %s since it was read (a proposal or a joint case meanwhile); reload it and retry',
        p_user, p_clue);
    END IF;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('clue_handlers/' || p_clue || '/' || p_user, 0));
  INSERT INTO recusals (clue_id, user_id, reason, recorded_by, recorded_by_unit, recorded_at)
  VALUES (p_clue, p_user, p_reason, p_actor_user, p_actor_unit, clue_ms_ts(p_now_ms))
  ON CONFLICT (clue_id, user_id) DO NOTHING
  RETURNING * INTO r;
  IF r.id IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CLDUP', MESSAGE = format('user %s is already recused from this clue', p_user);
  END IF;
  DELETE FROM clue_handlers WHERE clue_id = p_clue AND user_id = p_user;
  was_handler := FOUND;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.recuse', 'clue', c.id, c.owner_unit, NULL, NULL, p_reason,
                       jsonb_build_object('recusal_id', r.id, 'user_id', p_user, 'user_unit_id', u.unit_id,
                                          'self', p_user = p_actor_user, 'unassigned', was_handler,
                                          'request_id', p_request_id));
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, recusal_id, owner_unit, request_sha256)
  VALUES (p_actor_user, p_request_id, 'RecordRecusal', c.id, r.id, c.owner_unit, p_request_sha256);
  RETURN r;
END $$;

-- Replaces case_create of 0037_writes_recheck_under_the_clue_lock.sql:
-- the same, and a retry whose fingerprint differs from the first call's refused, the fingerprint recorded.
DROP FUNCTION case_create(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                          p_now_ms bigint, p_title text, p_basis text, p_participants bigint[],
                          p_clues bigint[], p_clue_versions bigint[]);
CREATE FUNCTION case_create(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                            p_now_ms bigint, p_title text, p_basis text, p_participants bigint[],
                            p_clues bigint[], p_clue_versions bigint[],
                            p_request_sha256 bytea DEFAULT NULL)
 RETURNS SETOF joint_case_row
 LANGUAGE plpgsql
AS $$
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
    IF q.request_sha256 <> p_request_sha256 THEN
      RAISE EXCEPTION USING ERRCODE = 'CLARG',
        MESSAGE = format('request_id %s was already used for a different request (%s)', p_request_id, q.method);
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
    PERFORM case_join(p_actor_user, p_actor_unit, jc, m.clue_id, m.version, p_now_ms, NULL, p_request_id,
                      format('clue_ids: clue %s: clue not found', m.clue_id));
  END LOOP;
  INSERT INTO clue_requests (user_id, request_id, method, case_id, owner_unit, request_sha256)
  VALUES (p_actor_user, p_request_id, 'CreateJointCase', jc.id, jc.lead_unit, p_request_sha256);
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- Replaces rect_create of 0035_ledger_recusals_checked_in_the_write.sql:
-- the same, with the call's fingerprint, which its request record keeps and a retry must match.
DROP FUNCTION rect_create(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                          p_now_ms bigint, p_host_unit text, p_description text, p_category text,
                          p_source text, p_clue bigint, p_case bigint, p_deadline_ms bigint);
CREATE FUNCTION rect_create(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                            p_now_ms bigint, p_host_unit text, p_description text, p_category text,
                            p_source text, p_clue bigint, p_case bigint, p_deadline_ms bigint,
                            p_request_sha256 bytea DEFAULT NULL)
 RETURNS rect_items
 LANGUAGE plpgsql
AS $$
DECLARE
  it rect_items := rect_request_begin(p_actor_user, p_request_id, 'CreateItem', NULL, p_request_sha256);
  now_ts timestamptz := clue_ms_ts(p_now_ms);
  owned boolean;
BEGIN
  IF it.id IS NOT NULL THEN
    RETURN it;
  END IF;
  IF p_source = 'CLUE' THEN
    PERFORM 1 FROM clues WHERE id = p_clue AND owner_unit = p_actor_unit FOR SHARE;
    owned := FOUND;
    -- After the clue's lock, which a recusal's writer holds until it commits (clue_recuse()
    -- locks the clue for no key update), so no recusal of the caller slips past. First: a
    -- recused caller learns nothing of the clue, not even that it changed owner.
    IF EXISTS (SELECT 1 FROM recusals r WHERE r.clue_id = p_clue AND r.user_id = p_actor_user) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'source_clue_id: clue not found';
    END IF;
    IF NOT owned THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE',
        MESSAGE = format('source_clue_id: clue %s changed owner meanwhile', p_clue);
    END IF;
  END IF;
  INSERT INTO rect_items (host_unit, description, category, source, source_clue, source_case, deadline,
                          supervising_unit, created_by, created_at, updated_at)
  VALUES (p_host_unit, p_description, p_category, p_source, p_clue, p_case, clue_ms_ts(p_deadline_ms),
          p_actor_unit, p_actor_user, now_ts, now_ts)
  RETURNING * INTO it;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'rect.create', 'rectification', it.id, it.supervising_unit,
                       NULL, 'OPEN', NULL,
                       jsonb_build_object('host_unit', it.host_unit, 'description', it.description,
                                          'category', it.category, 'source', it.source,
                                          'source_clue_id', it.source_clue, 'source_case_id', it.source_case,
                                          'deadline_ms', p_deadline_ms, 'version', it.version,
                                          'request_id', p_request_id));
  INSERT INTO rect_requests (user_id, request_id, method, item_id, request_sha256)
  VALUES (p_actor_user, p_request_id, 'CreateItem', it.id, p_request_sha256);
  RETURN it;
END $$;

-- Replaces rect_move of 0014_rectification.sql:
-- the same, with the call's fingerprint, which its request record keeps and a retry must match.
DROP FUNCTION rect_move(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_method text,
                        p_now_ms bigint, p_item bigint, p_expected bigint, p_from text, p_to text,
                        p_text text, p_note_ids bigint[]);
CREATE FUNCTION rect_move(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                          p_method text, p_now_ms bigint, p_item bigint, p_expected bigint,
                          p_from text, p_to text, p_text text, p_note_ids bigint[],
                          p_request_sha256 bytea DEFAULT NULL)
 RETURNS rect_items
 LANGUAGE plpgsql
AS $$
DECLARE
  it rect_items := rect_request_begin(p_actor_user, p_request_id, p_method, p_item, p_request_sha256);
  cur rect_items;
  bad bigint;
  now_ts timestamptz := clue_ms_ts(p_now_ms);
  notes bigint[] := coalesce(p_note_ids, '{}');
BEGIN
  IF it.id IS NOT NULL THEN
    RETURN it;
  END IF;
  SELECT * INTO cur FROM rect_items WHERE id = p_item FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'rectification item not found';
  END IF;
  IF cur.version <> p_expected THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER',
      MESSAGE = format('rectification item %s is at version %s, not %s; read it again', p_item, cur.version,
                       p_expected);
  END IF;
  IF cur.state <> p_from THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE',
      MESSAGE = format('rectification item %s is %s, no longer %s', p_item, cur.state, p_from);
  END IF;
  SELECT x.id INTO bad FROM unnest(notes) AS x(id)
  WHERE NOT EXISTS (SELECT 1 FROM notes n WHERE n.id = x.id
                      AND (n.clue_id = cur.source_clue
                           OR n.clue_id IN (SELECT cc.clue_id FROM case_clues cc WHERE cc.case_id = cur.source_case)))
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('note_ids: note %s is not a note of the item''s source clue or case', bad);
  END IF;
  UPDATE rect_items SET
    state = p_to,
    version = version + 1,
    updated_at = now_ts,
    plan = CASE WHEN p_method = 'RecordPlan' THEN p_text ELSE plan END,
    plan_note_ids = CASE WHEN p_method = 'RecordPlan' THEN notes ELSE plan_note_ids END,
    evidence = CASE WHEN p_method = 'Submit' THEN p_text ELSE evidence END,
    evidence_note_ids = CASE WHEN p_method = 'Submit' THEN notes ELSE evidence_note_ids END,
    verify_comment = CASE WHEN p_method = 'Verify' THEN coalesce(p_text, '') ELSE verify_comment END,
    reopen_reason = CASE WHEN p_method = 'Reopen' THEN p_text ELSE reopen_reason END,
    verified_at = CASE WHEN p_to = 'VERIFIED' THEN now_ts END
  WHERE id = p_item
  RETURNING * INTO it;
  PERFORM audit_append(p_actor_user, p_actor_unit,
                       'rect.' || CASE p_method WHEN 'RecordPlan' THEN 'record_plan' ELSE lower(p_method) END,
                       'rectification', it.id, it.supervising_unit, p_from, p_to,
                       CASE WHEN p_method IN ('Verify', 'Reopen') THEN p_text END,
                       jsonb_build_object('version', it.version, 'request_id', p_request_id)
                       || CASE WHEN p_method IN ('RecordPlan', 'Submit')
                               THEN jsonb_build_object(CASE p_method WHEN 'Submit' THEN 'evidence' ELSE 'plan' END,
                                                       p_text, 'note_ids', to_jsonb(notes))
                               ELSE '{}'::jsonb END);
  INSERT INTO rect_requests (user_id, request_id, method, item_id, request_sha256)
  VALUES (p_actor_user, p_request_id, p_method, it.id, p_request_sha256);
  RETURN it;
END $$;
