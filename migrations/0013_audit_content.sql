-- Content hashes in the audit trail (docs/AUDIT.md): clue.submit records the SHA-256 of the
-- clue's submitted fields and, when it has one, of its reporter's contact details, so that
-- `cluectl audit verify --checkpoint` can recompute them from the current rows (as note.add
-- has done for a note's text since 0005). Submitted fields never change after submit; the
-- reporter's row changes only its owner_unit, which is not hashed.
--
-- The encodings: each value's text, as "<length in bytes>:<text>\n", in the order below;
-- booleans as true/false, the categories as their text[] literal. server/service/
-- audit_proof.c recomputes them with the same expressions, in its own SQL text.

CREATE FUNCTION clue_content_sha256(c clues) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
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

CREATE FUNCTION clue_reporter_sha256(r clue_reporters) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT encode(sha256(convert_to(concat(
    octet_length(r.name), ':', r.name, E'\n',
    octet_length(r.phone), ':', r.phone, E'\n',
    octet_length(r.address), ':', r.address, E'\n',
    octet_length(r.email), ':', r.email, E'\n'),
    'UTF8')), 'hex')
$$;

-- Replaces clue_submit of 0008_named_errors.sql: the same, and the clue.submit event's
-- details carry content_sha256 and (with a reporter) reporter_sha256.
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
  PERFORM clue_request_record(p_actor_user, p_request_id, 'SubmitClue', c.id, NULL, c.owner_unit);
  RETURN c;
END $$;
