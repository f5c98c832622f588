-- A move and a submit in one statement of their own (issue 11). Until now clued wrapped
-- each audited write in BEGIN; SELECT set_config('clued.token_id', ...); the call; COMMIT:
-- four statements in one round trip, only so that audit_append() could read the acting
-- token from a transaction-local setting. Here the two hottest writes take the token as a
-- parameter and pass it down to the append, so clued sends them as one prepared statement
-- that is its own (implicit) transaction. The other writes keep the setting (0010_tokens.sql).
--
-- And less work per write:
-- 1. audit_append(..., p_token) builds the event in one assignment (not one plpgsql
--    statement per field) and inserts it and moves the chain head in one statement. The
--    same event, the same canonical hash (audit_hash()), the same order: the transaction id
--    first, the chain head locked, then the seq (see 0004_audit.sql and docs/AUDIT.md).
-- 2. clue_requests: the foreign keys of user_id, clue_id and owner_unit are dropped. Each
--    cost a query per request record (PostgreSQL checks a foreign key with a query of its
--    own), and rows are written only by the functions, with the caller's own user and the
--    clue and owner unit the same statement has just read or written. Users, units and
--    clues are never deleted.
-- 3. audit_events_at_idx becomes a BRIN index. Events are appended in time order, so a
--    block range summary finds a time range (ListAuditEvents' from/to filter) in the few
--    ranges that hold it, and an append no longer inserts into a B-tree on `at`.

ALTER TABLE clue_requests
  DROP CONSTRAINT clue_requests_user_id_fkey,
  DROP CONSTRAINT clue_requests_clue_id_fkey,
  DROP CONSTRAINT clue_requests_owner_unit_fkey;

DROP INDEX audit_events_at_idx;
CREATE INDEX audit_events_at_brin ON audit_events USING brin (at);

-- ---- the audit append, with the token as a parameter ------------------------------------------

-- The audit_append of 0016_lean_writes.sql with the acting token p_token as a parameter
-- instead of the setting clued.token_id. SECURITY DEFINER with a fixed search_path like the
-- other: the only way the runtime role writes audit rows.
CREATE FUNCTION audit_append(
  p_actor_user   bigint,
  p_actor_unit   bigint,
  p_action       text,
  p_subject_type text,
  p_subject_id   bigint,
  p_owner_unit   bigint,
  p_from         text,
  p_to           text,
  p_reason       text,
  p_details      jsonb,
  p_token        bigint
) RETURNS audit_events
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  -- See 0004: a transaction id first, then (below) the seq.
  x bigint := txid_current();
  e audit_events;
  head_hash bytea;
BEGIN
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

  -- The columns in table order: seq, at (timestamptz keeps microseconds, so the value hashed
  -- is the value stored), actor, action, subject, owner, from, to, reason, details,
  -- prev_hash, hash (below), txid, actor_token_id.
  e := ROW(nextval('audit_events_seq_seq'), date_trunc('microseconds', clock_timestamp()),
           p_actor_user, p_actor_unit, p_action, p_subject_type, p_subject_id, p_owner_unit,
           p_from, p_to, p_reason, coalesce(p_details, '{}'::jsonb)::text, head_hash, NULL::bytea,
           x, p_token)::audit_events;
  e.hash := audit_hash(e);

  WITH ev AS (INSERT INTO audit_events VALUES (e.*))
  UPDATE audit_heads
  SET last_seq = e.seq, last_hash = e.hash
  WHERE subject_type = p_subject_type AND subject_id = p_subject_id;

  RETURN e;
END
$$;

-- ---- the two hottest calls, with the token ---------------------------------------------------

DROP FUNCTION clue_submit(bigint, bigint, uuid, bigint, bigint, int, text, text, text, text, text, text,
                          boolean, text, text[], text, text, text, text);

-- The clue_submit of 0016_lean_writes.sql with the acting token p_token, recorded in the
-- event: the same clue, number, reporter, event and request record.
CREATE FUNCTION clue_submit(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_deadline_ms bigint,
  p_year int, p_title text, p_summary text, p_source text, p_subject_name text, p_subject_position text,
  p_subject_rank text, p_subject_top boolean, p_host_unit text, p_categories text[],
  p_rep_name text, p_rep_phone text, p_rep_address text, p_rep_email text, p_token bigint)
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
                       NULL, details, p_token);
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit)
  VALUES (p_actor_user, p_request_id, 'SubmitClue', c.id, NULL, c.owner_unit);
  RETURN c;
END $$;

DROP FUNCTION clue_apply_move(bigint, bigint, uuid, bigint, bigint, bigint, text, text, text, text, jsonb, bigint);

-- The clue_apply_move of 0016_lean_writes.sql with the acting token p_token, recorded in the
-- event: the same checks, compare-and-swap, change, event and request record.
CREATE FUNCTION clue_apply_move(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_clue bigint,
  p_expected_version bigint, p_from text, p_to text, p_action text, p_reason text, p_details jsonb,
  p_deadline_ms bigint, p_token bigint)
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
                                                                       'request_id', p_request_id),
                       p_token);
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit)
  VALUES (p_actor_user, p_request_id, 'RequestTransition', c.id, NULL, c.owner_unit);
  o.clue := c;
  RETURN o;
END $$;
