-- Administration is never locked out (README, the paragraph after "Tokens." that says so).
--
-- An administrator *works* while it is an enabled ADMIN user holding a live (unrevoked)
-- token: only such a one can call the AdminService, and only it can issue an ADMIN a new
-- token. Until now two admins disabling each other at once both succeeded, the only admin
-- could revoke its own only token, and `clued bootstrap` then answered "already
-- bootstrapped" because disabled admins and admins without a token still counted: only a
-- database superuser could recover.
--
-- Now:
-- 1. DisableUser of an ADMIN, and RevokeToken / RevokeMyToken of an ADMIN's token, refuse
--    (CLPRE, FAILED_PRECONDITION) a change that would leave no working administrator. The
--    check reads what other transactions may be changing at that moment, so every change
--    that can take an administrator away takes one advisory lock first, 'clued.admins', in
--    its own transaction (before any row lock, so no lock order cycles): of two admins
--    disabling each other at once, the second waits, then finds its target the last one.
--    Under that lock the caller is also looked at again: an admin disabled, or whose token
--    was revoked, while its call waited for the lock is refused, so the outcome is that of
--    the calls made one after the other.
-- 2. `clued bootstrap` (admin_bootstrap, run by the schema's owner) creates a new ADMIN user
--    and token when no administrator works, instead of answering "already bootstrapped",
--    and is refused only while one works. It takes the same lock, after its own.
--
-- Changes that only add administrators (CreateUser, IssueToken, IssueMyToken) take no lock:
-- none can make the check of 1. wrong.

-- Whether an administrator works other than p_except_user, with a token other than
-- p_except_token (either NULL for none). 'ADMIN' here is the role of the users who
-- administer (data, as in admin_bootstrap), not a rule of the domain.
CREATE FUNCTION admin_working_exists(p_except_user bigint, p_except_token bigint)
RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT 1 FROM users u JOIN tokens t ON t.user_id = u.id
                 WHERE u.role = 'ADMIN' AND NOT u.disabled AND t.revoked_at IS NULL
                   AND u.id IS DISTINCT FROM p_except_user AND t.id IS DISTINCT FROM p_except_token)
$$;

-- Called first by a change that may take an administrator away: disabling the user p_user,
-- or (p_token not NULL) revoking the token p_token. When the user (the token's user) is an
-- ADMIN, takes the lock 'clued.admins' until the end of the transaction, then refuses the
-- change if it would leave no administrator working, or if the caller p_actor_user (or its
-- acting token, clued.token_id) was disabled (revoked) while the call waited. The caller's
-- own checks (not found, already disabled or revoked) come after, on rows locked after this
-- lock; a change that takes nobody away (the user already disabled, the token already
-- revoked) passes here.
-- A user's role never changes, so it is read before the lock.
CREATE FUNCTION admin_keep_one_working(p_actor_user bigint, p_user bigint, p_token bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  acting bigint := nullif(current_setting('clued.token_id', true), '')::bigint;
BEGIN
  IF p_token IS NOT NULL THEN
    SELECT user_id INTO p_user FROM tokens WHERE id = p_token;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM users WHERE id = p_user AND role = 'ADMIN') THEN
    RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('clued.admins'));
  -- Each statement below takes a new snapshot (READ COMMITTED): it sees every change
  -- committed before the lock was granted.
  IF p_token IS NULL THEN
    IF EXISTS (SELECT 1 FROM users WHERE id = p_user AND NOT disabled)
       AND NOT admin_working_exists(p_user, NULL) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
        'user %s is the last enabled ADMIN holding a live token: disabling it would lock administration out; '
        'issue another ADMIN a token first', p_user);
    END IF;
  ELSIF EXISTS (SELECT 1 FROM tokens t JOIN users u ON u.id = t.user_id
                WHERE t.id = p_token AND t.revoked_at IS NULL AND NOT u.disabled)
        AND NOT admin_working_exists(NULL, p_token) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
      'token %s is the last live token of the last enabled ADMIN holding one: revoking it would lock '
      'administration out; issue a new one first', p_token);
  END IF;
  IF p_actor_user IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users WHERE id = p_actor_user AND NOT disabled) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('user %s, the caller, was disabled meanwhile', p_actor_user);
  END IF;
  IF acting IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tokens WHERE id = acting AND revoked_at IS NULL) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('token %s, the caller''s, was revoked meanwhile', acting);
  END IF;
END $$;

-- Replaces admin_disable_user of 0011_admin_named_errors.sql: an ADMIN user is disabled
-- under the lock of admin_keep_one_working(), and never the last one working.
CREATE OR REPLACE FUNCTION admin_disable_user(p_actor_user bigint, p_actor_unit bigint, p_user bigint, p_reason text)
RETURNS users LANGUAGE plpgsql AS $$
DECLARE
  u users;
BEGIN
  IF p_user = p_actor_user THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = 'administrators cannot disable themselves';
  END IF;
  PERFORM admin_keep_one_working(p_actor_user, p_user, NULL);
  SELECT * INTO u FROM users WHERE id = p_user FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('user %s not found', p_user);
  END IF;
  IF u.disabled THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('user %s is already disabled', p_user);
  END IF;
  UPDATE users SET disabled = true WHERE id = p_user RETURNING * INTO u;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'user.disable', 'user', u.id, NULL, NULL, NULL, p_reason,
                       '{}'::jsonb);
  RETURN u;
END $$;

-- Replaces admin_revoke_token of 0011_admin_named_errors.sql: an ADMIN's token is revoked
-- under the lock of admin_keep_one_working(), and never the last live one of the last
-- enabled ADMIN. token_revoke_own (RevokeMyToken) calls this one.
CREATE OR REPLACE FUNCTION admin_revoke_token(p_actor_user bigint, p_actor_unit bigint, p_token bigint)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  t tokens;
BEGIN
  PERFORM admin_keep_one_working(p_actor_user, NULL, p_token);
  SELECT * INTO t FROM tokens WHERE id = p_token FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('token %s not found', p_token);
  END IF;
  IF t.revoked_at IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('token %s is already revoked', p_token);
  END IF;
  UPDATE tokens SET revoked_at = clock_timestamp() WHERE id = p_token RETURNING * INTO t;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'token.revoke', 'user', t.user_id, NULL, NULL, NULL, NULL,
                       jsonb_build_object('token_id', t.id));
  RETURN t;
END $$;

-- Replaces admin_bootstrap of 0040_token_hash_in_its_event.sql: refused (no row) only while
-- an administrator works; otherwise a new ADMIN user with a new token, in the first ADMIN
-- unit (made if there is none), named "admin", or "admin-2", "admin-3", ... when that name
-- is taken there (by an ADMIN disabled or without a token). Its events are those of the
-- first bootstrap. Owner only, as 0042_bootstrap_by_the_owner.sql made it (CREATE OR
-- REPLACE keeps the grants).
CREATE OR REPLACE FUNCTION admin_bootstrap(p_sha256_hex text)
RETURNS SETOF users LANGUAGE plpgsql AS $$
DECLARE
  un units;
  u users;
  t tokens;
  nm text := 'admin';
  n integer := 1;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('clued.bootstrap'));
  PERFORM pg_advisory_xact_lock(hashtext('clued.admins'));
  IF admin_working_exists(NULL, NULL) THEN
    RETURN;
  END IF;
  SELECT * INTO un FROM units WHERE kind = 'ADMIN' ORDER BY id LIMIT 1;
  IF NOT FOUND THEN
    INSERT INTO units (kind, code, name) VALUES ('ADMIN', 'ADM', 'Administration') RETURNING * INTO un;
    PERFORM audit_append(NULL, NULL, 'unit.create', 'unit', un.id, NULL, NULL, NULL, 'bootstrap',
                         jsonb_build_object('kind', un.kind, 'code', un.code, 'name', un.name));
  END IF;
  WHILE EXISTS (SELECT 1 FROM users WHERE unit_id = un.id AND name = nm) LOOP
    n := n + 1;
    nm := 'admin-' || n;
  END LOOP;
  INSERT INTO users (unit_id, name, role) VALUES (un.id, nm, 'ADMIN') RETURNING * INTO u;
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
