-- Separation of duties (DESIGN.md §4, §5): every token records who issued it, every audit
-- event records the token that acted, and every user manages their own tokens.
--
-- A token issued by someone other than its user is an enrollment token (an ADMIN enrolling a
-- LEADER, say). The server refuses reporter contacts to it; its user exchanges it for a
-- personal token (TokenService.IssueMyToken), which nobody else has seen.

-- ---- who issued a token --------------------------------------------------------------------

ALTER TABLE tokens ADD COLUMN issued_by bigint REFERENCES users (id);

-- Tokens issued before this migration: the actor of their token.issue event; the bootstrap
-- token (issued with no actor) is its user's own.
UPDATE tokens t
SET issued_by = coalesce((SELECT e.actor_user_id FROM audit_events e
                          WHERE e.action = 'token.issue' AND e.subject_type = 'user'
                            AND e.subject_id = t.user_id
                            AND e.details::jsonb ->> 'token_id' = t.id::text
                          ORDER BY e.seq LIMIT 1),
                         t.user_id);

ALTER TABLE tokens ALTER COLUMN issued_by SET NOT NULL;

COMMENT ON COLUMN tokens.issued_by IS
  'the user who issued the token; another than user_id makes it an enrollment token';

-- ---- which token acted -------------------------------------------------------------------

-- The acting token travels as the transaction-local setting clued.token_id, which the server
-- sets in the same transaction as the statement it runs for a call (svc_query); audit_append
-- reads it. Events appended outside a call (bootstrap, migrations) have none.
ALTER TABLE audit_events ADD COLUMN actor_token_id bigint;

COMMENT ON COLUMN audit_events.actor_token_id IS
  'the token the actor authenticated with (tokens.id); NULL when no token acted';

CREATE INDEX audit_events_token_idx ON audit_events (actor_token_id) WHERE actor_token_id IS NOT NULL;

-- Replaces audit_canonical of 0004_audit.sql. The encoding is unchanged for events without an
-- acting token; an event with one gets a thirteenth field, actor_token_id, after prev_hash, in
-- the same "<length in bytes>:<text>\n" form. So a changed or removed token id breaks the
-- chain like any other field, and every hash stored before this migration still holds.
CREATE OR REPLACE FUNCTION audit_canonical(e audit_events) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT concat(
    octet_length(convert_to(e.seq::text, 'UTF8')), ':', e.seq, E'\n',
    octet_length(convert_to(((extract(epoch FROM e.at) * 1000000)::bigint)::text, 'UTF8')), ':',
      (extract(epoch FROM e.at) * 1000000)::bigint, E'\n',
    octet_length(convert_to(coalesce(e.actor_user_id::text, ''), 'UTF8')), ':', e.actor_user_id, E'\n',
    octet_length(convert_to(coalesce(e.actor_unit_id::text, ''), 'UTF8')), ':', e.actor_unit_id, E'\n',
    octet_length(convert_to(coalesce(e.action, ''), 'UTF8')), ':', e.action, E'\n',
    octet_length(convert_to(coalesce(e.subject_type, ''), 'UTF8')), ':', e.subject_type, E'\n',
    octet_length(convert_to(coalesce(e.subject_id::text, ''), 'UTF8')), ':', e.subject_id, E'\n',
    octet_length(convert_to(coalesce(e.from_state, ''), 'UTF8')), ':', e.from_state, E'\n',
    octet_length(convert_to(coalesce(e.to_state, ''), 'UTF8')), ':', e.to_state, E'\n',
    octet_length(convert_to(coalesce(e.reason, ''), 'UTF8')), ':', e.reason, E'\n',
    octet_length(convert_to(coalesce(e.details, ''), 'UTF8')), ':', e.details, E'\n',
    octet_length(convert_to(coalesce(encode(e.prev_hash, 'hex'), ''), 'UTF8')), ':',
      encode(e.prev_hash, 'hex'), E'\n',
    CASE WHEN e.actor_token_id IS NOT NULL THEN
      octet_length(e.actor_token_id::text) || ':' || e.actor_token_id || E'\n'
    END)
$$;

-- Replaces audit_append of 0004_audit.sql: the same append (transaction id before seq, chain
-- head locked, NOTIFY), now also recording the acting token from clued.token_id. It keeps
-- what 0009_runtime_role.sql made of it: SECURITY DEFINER with a fixed search_path, the only
-- way the runtime role writes audit rows.
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

  INSERT INTO audit_heads (subject_type, subject_id)
  VALUES (p_subject_type, p_subject_id)
  ON CONFLICT DO NOTHING;

  SELECT last_hash INTO head_hash
  FROM audit_heads
  WHERE subject_type = p_subject_type AND subject_id = p_subject_id
  FOR UPDATE;

  e.seq := nextval(pg_get_serial_sequence('audit_events', 'seq'));
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

  PERFORM pg_notify('audit_events', e.seq::text);
  RETURN e;
END
$$;

-- ---- issuing -------------------------------------------------------------------------------

-- Replaces admin_issue_token of 0002_admin.sql: the issuer is recorded, and the event says
-- whether the token is an enrollment token.
CREATE OR REPLACE FUNCTION admin_issue_token(p_actor_user bigint, p_actor_unit bigint, p_user bigint,
                                             p_sha256_hex text, p_note text)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  t tokens;
  dis boolean;
BEGIN
  SELECT disabled INTO dis FROM users WHERE id = p_user;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CL005', MESSAGE = format('user %s not found', p_user);
  END IF;
  IF dis THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = format('user %s is disabled', p_user);
  END IF;
  INSERT INTO tokens (user_id, token_sha256, note, issued_by)
  VALUES (p_user, decode(p_sha256_hex, 'hex'), p_note, p_actor_user)
  RETURNING * INTO t;
  -- The token itself is never recorded; its id is.
  PERFORM audit_append(p_actor_user, p_actor_unit, 'token.issue', 'user', p_user, NULL, NULL, NULL, NULL,
                       jsonb_build_object('token_id', t.id, 'note', p_note,
                                          'enrollment', t.issued_by <> t.user_id));
  RETURN t;
END $$;

-- Replaces admin_bootstrap of 0002_admin.sql: the bootstrap token is the first ADMIN's own.
CREATE OR REPLACE FUNCTION admin_bootstrap(p_sha256_hex text)
RETURNS SETOF users LANGUAGE plpgsql AS $$
DECLARE
  un units;
  u users;
  t tokens;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('clued.bootstrap'));
  IF EXISTS (SELECT 1 FROM users WHERE role = 'ADMIN') THEN
    RETURN;
  END IF;
  SELECT * INTO un FROM units WHERE kind = 'ADMIN' ORDER BY id LIMIT 1;
  IF NOT FOUND THEN
    INSERT INTO units (kind, code, name) VALUES ('ADMIN', 'ADM', 'Administration') RETURNING * INTO un;
    PERFORM audit_append(NULL, NULL, 'unit.create', 'unit', un.id, NULL, NULL, NULL, 'bootstrap',
                         jsonb_build_object('kind', un.kind, 'code', un.code, 'name', un.name));
  END IF;
  INSERT INTO users (unit_id, name, role) VALUES (un.id, 'admin', 'ADMIN') RETURNING * INTO u;
  PERFORM audit_append(NULL, NULL, 'user.create', 'user', u.id, NULL, NULL, NULL, 'bootstrap',
                       jsonb_build_object('unit_id', u.unit_id, 'name', u.name, 'role', u.role));
  INSERT INTO tokens (user_id, token_sha256, note, issued_by)
  VALUES (u.id, decode(p_sha256_hex, 'hex'), 'bootstrap', u.id)
  RETURNING * INTO t;
  PERFORM audit_append(NULL, NULL, 'token.issue', 'user', u.id, NULL, NULL, NULL, 'bootstrap',
                       jsonb_build_object('token_id', t.id, 'note', 'bootstrap', 'enrollment', false));
  RETURN NEXT u;
END $$;

-- ---- a user's own tokens -------------------------------------------------------------------

-- TokenService.IssueMyToken: a personal token for the caller. At most p_max_live unrevoked
-- tokens per user (the user's row is locked, so two racing issues cannot both pass).
CREATE FUNCTION token_issue_own(p_actor_user bigint, p_actor_unit bigint, p_sha256_hex text, p_note text,
                                p_max_live integer)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  live bigint;
BEGIN
  PERFORM 1 FROM users WHERE id = p_actor_user FOR UPDATE;
  SELECT count(*) INTO live FROM tokens WHERE user_id = p_actor_user AND revoked_at IS NULL;
  IF live >= p_max_live THEN
    RAISE EXCEPTION USING ERRCODE = 'CLLIM', MESSAGE = format(
      'you already have %s unrevoked tokens, the most allowed: revoke one first', live);
  END IF;
  RETURN admin_issue_token(p_actor_user, p_actor_unit, p_actor_user, p_sha256_hex, p_note);
END $$;

-- TokenService.RevokeMyToken: another user's token answers exactly as a missing one does
-- (admin_revoke_token's message), then the revocation is admin_revoke_token's own.
CREATE FUNCTION token_revoke_own(p_actor_user bigint, p_actor_unit bigint, p_token bigint)
RETURNS tokens LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tokens WHERE id = p_token AND user_id = p_actor_user) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('token %s not found', p_token);
  END IF;
  RETURN admin_revoke_token(p_actor_user, p_actor_unit, p_token);
END $$;
