-- A token's stored hash pinned by its token.issue event. A bearer string authenticates as the
-- user of the tokens row whose token_sha256 is its SHA-256 (server/rpc/auth.c); the event
-- recorded the token's id, user, note and whether it is an enrollment token, but nothing of
-- the hash, so a database superuser could put the hash of a secret he knows into a live
-- token's row and act as its user with no event. The event now records hash_sha256, the
-- SHA-256 of the stored hash (hex), which `cluectl audit verify --checkpoint` compares with
-- the row's (ExportAuditEvents' current_facts).
--
-- It reveals nothing usable: the stored hash is itself the SHA-256 of 32 random bytes (the
-- token, auth_token_new()), so neither it nor its hash can be turned back into the token, and
-- no call accepts a hash in place of a token. Hashing it once more keeps even the lookup key
-- out of the trail, whose readers (auditors, a witness's copies) need not hold it. Tokens
-- issued before this migration have no hash_sha256 in their event and are not judged on it.

-- Replaces admin_issue_token of 0011_admin_named_errors.sql: the same, and hash_sha256 in
-- its event. token_issue_own() (IssueMyToken) and `clued bootstrap --demo-tokens` issue
-- through it.
CREATE OR REPLACE FUNCTION admin_issue_token(p_actor_user bigint, p_actor_unit bigint, p_user bigint,
                                             p_sha256_hex text, p_note text)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  t tokens;
  dis boolean;
BEGIN
  SELECT disabled INTO dis FROM users WHERE id = p_user;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('user %s not found', p_user);
  END IF;
  IF dis THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('user %s is disabled', p_user);
  END IF;
  INSERT INTO tokens (user_id, token_sha256, note, issued_by)
  VALUES (p_user, decode(p_sha256_hex, 'hex'), p_note, p_actor_user)
  RETURNING * INTO t;
  -- The token itself is never recorded; its id is, and the hash of its stored hash.
  PERFORM audit_append(p_actor_user, p_actor_unit, 'token.issue', 'user', p_user, NULL, NULL, NULL, NULL,
                       jsonb_build_object('token_id', t.id, 'note', p_note,
                                          'enrollment', t.issued_by <> t.user_id,
                                          'hash_sha256', encode(sha256(t.token_sha256), 'hex')));
  RETURN t;
END $$;

-- Replaces admin_bootstrap of 0010_tokens.sql: the same, and hash_sha256 in the bootstrap
-- token's event.
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
                       jsonb_build_object('token_id', t.id, 'note', 'bootstrap', 'enrollment', false,
                                          'hash_sha256', encode(sha256(t.token_sha256), 'hex')));
  RETURN NEXT u;
END $$;
