-- The write path at the database's pace (issue 11): the same rows, events, hashes and
-- checks, for less work per call.
--
-- 1. No NOTIFY per event. PostgreSQL serialises the commits of all notifying transactions
--    on one lock held through the commit's WAL flush, so a NOTIFY in every audited
--    transaction turned group commit into one flush per call. clued wakes its own watchers
--    when a call's transaction commits; other instances follow the committed tail
--    (service/audit_watch.c). The revocation triggers of 0007 still notify: they are rare
--    and must reach every instance at once.
-- 2. No SQL-language helper on the hot path that PostgreSQL cannot inline. A SQL function
--    that is not inlined is parsed and planned again on every call; a plpgsql function
--    keeps its statements' plans per connection. The helpers whose body is one expression
--    are declared STABLE, as what they call is (concat() and timestamptz arithmetic are
--    STABLE, and an IMMUTABLE function with a STABLE body is never inlined); the ones whose
--    body is a statement become plpgsql.
-- 3. A move's compare-and-swap is its UPDATE: the WHERE re-checked against a concurrently
--    changed row (as the former SELECT ... FOR NO KEY UPDATE did) takes the same row lock.
-- 4. audit_append locks an existing chain head in one statement, and draws the seq from the
--    sequence by name.

-- ---- helpers: inlinable or planned once per connection -------------------------------------

-- Replaces clue_ms_ts of 0003_clues.sql: same body, STABLE (timestamptz + interval is), so
-- that it is inlined into the calling statement.
CREATE OR REPLACE FUNCTION clue_ms_ts(p_ms bigint) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN p_ms IS NULL OR p_ms = 0 THEN NULL
              ELSE timestamptz 'epoch' + p_ms * interval '1 millisecond' END
$$;

-- Replaces clue_content_sha256 of 0013_audit_content.sql: same body and encoding, STABLE
-- (concat() is), so that it is inlined.
CREATE OR REPLACE FUNCTION clue_content_sha256(c clues) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT encode(sha256(convert_to(concat(
    octet_length(c.title), ':', c.title, E'\n',
    octet_length(c.summary), ':', c.summary, E'\n',
    octet_length(c.source), ':', c.source, E'\n',
    octet_length(c.subject_name), ':', c.subject_name, E'\n',
    octet_length(c.subject_position), ':', c.subject_position, E'\n',
    octet_length(c.subject_rank_level), ':', c.subject_rank_level, E'\n',
    octet_length(c.subject_is_top_leader::text), ':', c.subject_is_top_leader::text, E'\n',
    octet_length(c.host_unit), ':', c.host_unit, E'\n',
    octet_length(c.violation_categories::text), ':', c.violation_categories::text, E'\n'),
    'UTF8')), 'hex')
$$;

-- Replaces clue_reporter_sha256 of 0013_audit_content.sql: same body and encoding, STABLE.
CREATE OR REPLACE FUNCTION clue_reporter_sha256(r clue_reporters) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT encode(sha256(convert_to(concat(
    octet_length(r.name), ':', r.name, E'\n',
    octet_length(r.phone), ':', r.phone, E'\n',
    octet_length(r.address), ':', r.address, E'\n',
    octet_length(r.email), ':', r.email, E'\n'),
    'UTF8')), 'hex')
$$;

-- Replaces clue_request_record of 0003_clues.sql: the same INSERT, in plpgsql so that its
-- plan is kept (every mutating function calls it).
CREATE OR REPLACE FUNCTION clue_request_record(p_user bigint, p_request_id uuid, p_method text, p_clue bigint,
                                               p_proposal bigint, p_owner bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit)
  VALUES (p_user, p_request_id, p_method, p_clue, p_proposal, p_owner);
END $$;

-- Replaces clue_enter_state of 0008_named_errors.sql: the same UPDATE, in plpgsql so that
-- its plan is kept (proposal_decide calls it).
CREATE OR REPLACE FUNCTION clue_enter_state(p_clue bigint, p_to text, p_details jsonb, p_now_ms bigint,
                                            p_deadline_ms bigint)
RETURNS clues LANGUAGE plpgsql AS $$
DECLARE
  c clues;
BEGIN
  UPDATE clues SET
    state = p_to,
    version = version + 1,
    updated_at = clue_ms_ts(p_now_ms),
    stage_entered_at = clue_ms_ts(p_now_ms),
    stage_deadline = clue_ms_ts(p_deadline_ms),
    deadline_extended = false,
    disposal = coalesce(p_details ->> 'disposal', disposal),
    finding = coalesce(p_details ->> 'finding', finding),
    sanction_kind = coalesce(p_details ->> 'sanction_kind', sanction_kind),
    persons_disciplined = coalesce((p_details ->> 'persons_disciplined')::int, persons_disciplined),
    receiving_organ = coalesce(p_details ->> 'receiving_organ', receiving_organ),
    closed_at = CASE WHEN clue_ms_ts(p_deadline_ms) IS NULL THEN clue_ms_ts(p_now_ms) END,
    pending_proposal_id = NULL,
    pending_reviewer_unit = NULL
  WHERE id = p_clue
  RETURNING * INTO c;
  RETURN c;
END $$;

-- ---- the audit append ------------------------------------------------------------------------

-- Replaces audit_append of 0010_tokens.sql: the same event, canonical hash and chain (the
-- transaction id before the seq, the chain head locked before the seq is drawn, the acting
-- token from clued.token_id), without the NOTIFY (see 1. above). An existing head is read
-- and locked in one statement; a new one is inserted, or, if a concurrent transaction
-- inserted it first, locked once that one has ended, as before. Still SECURITY DEFINER with
-- a fixed search_path, the only way the runtime role writes audit rows.
CREATE OR REPLACE FUNCTION audit_append(
  p_actor_user   bigint,
  p_actor_unit   bigint,
  p_action       text,
  p_subject_type text,
  p_subject_id   bigint,
  p_owner_unit   bigint,
  p_from         text,
  p_to           text,
  p_reason       text,
  p_details      jsonb
) RETURNS audit_events
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  e audit_events;
  head_hash bytea;
BEGIN
  -- See 0004: a transaction id first, then (below) the seq.
  e.txid := txid_current();

  SELECT last_hash INTO head_hash
  FROM audit_heads
  WHERE subject_type = p_subject_type AND subject_id = p_subject_id
  FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO audit_heads (subject_type, subject_id)
    VALUES (p_subject_type, p_subject_id)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
      SELECT last_hash INTO head_hash
      FROM audit_heads
      WHERE subject_type = p_subject_type AND subject_id = p_subject_id
      FOR UPDATE;
    END IF;
  END IF;

  e.seq := nextval('audit_events_seq_seq');
  -- timestamptz keeps microseconds, so the value hashed is the value stored.
  e.at := date_trunc('microseconds', clock_timestamp());
  e.actor_user_id := p_actor_user;
  e.actor_unit_id := p_actor_unit;
  e.action := p_action;
  e.subject_type := p_subject_type;
  e.subject_id := p_subject_id;
  e.owner_unit := p_owner_unit;
  e.from_state := p_from;
  e.to_state := p_to;
  e.reason := p_reason;
  e.details := coalesce(p_details, '{}'::jsonb)::text;
  e.prev_hash := head_hash;
  e.actor_token_id := nullif(current_setting('clued.token_id', true), '')::bigint;
  e.hash := audit_hash(e);

  INSERT INTO audit_events VALUES (e.*);

  UPDATE audit_heads
  SET last_seq = e.seq, last_hash = e.hash
  WHERE subject_type = p_subject_type AND subject_id = p_subject_id;

  RETURN e;
END
$$;

-- ---- the two hottest calls -------------------------------------------------------------------

-- Replaces clue_submit of 0013_audit_content.sql: the same clue, number, reporter, event
-- (details and content hashes unchanged) and request record; the record's INSERT is inline
-- and the hashes inlined (2. above).
CREATE OR REPLACE FUNCTION clue_submit(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_deadline_ms bigint,
  p_year int, p_title text, p_summary text, p_source text, p_subject_name text, p_subject_position text,
  p_subject_rank text, p_subject_top boolean, p_host_unit text, p_categories text[],
  p_rep_name text, p_rep_phone text, p_rep_address text, p_rep_email text)
RETURNS clues LANGUAGE plpgsql AS $$
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
  o := clue_request_begin(p_actor_user, p_request_id, 'SubmitClue', NULL, NULL);
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
                       NULL, details);
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit)
  VALUES (p_actor_user, p_request_id, 'SubmitClue', c.id, NULL, c.owner_unit);
  RETURN c;
END $$;

-- Replaces clue_apply_move of 0003_clues.sql: the same checks, change, event and request
-- record. The compare-and-swap (version, state, no pending proposal) is the UPDATE's WHERE
-- (3. above); clue_enter_state's assignments are inline.
CREATE OR REPLACE FUNCTION clue_apply_move(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_clue bigint,
  p_expected_version bigint, p_from text, p_to text, p_action text, p_reason text, p_details jsonb,
  p_deadline_ms bigint)
RETURNS clue_outcome LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome;
  c clues;
  now_ts timestamptz := clue_ms_ts(p_now_ms);
  deadline_ts timestamptz := clue_ms_ts(p_deadline_ms);
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'RequestTransition', p_clue, NULL);
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
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.move', 'clue', c.id, c.owner_unit, p_from, p_to, p_reason,
                       coalesce(p_details, '{}') || jsonb_build_object('action', p_action, 'version', c.version,
                                                                       'stage_deadline_ms', p_deadline_ms,
                                                                       'request_id', p_request_id));
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit)
  VALUES (p_actor_user, p_request_id, 'RequestTransition', c.id, NULL, c.owner_unit);
  o.clue := c;
  RETURN o;
END $$;
