-- `clued bootstrap --new-admin` makes another ADMIN user and token even while an administrator
-- works: for an administrator whose only token was lost but not revoked (nobody can revoke it
-- through the API without another administrator). Like admin_bootstrap, run by the schema's
-- owner only, under the same locks, and audited: its events carry the reason
-- 'bootstrap --new-admin'.

-- The ADMIN unit (made if there is none), user and token of a bootstrap, with their events
-- under p_reason; the caller holds the locks 'clued.bootstrap' and 'clued.admins'.
CREATE FUNCTION admin_bootstrap_make(p_sha256_hex text, p_reason text)
RETURNS users LANGUAGE plpgsql AS $$
DECLARE
  un units;
  u users;
  t tokens;
  nm text := 'admin';
  n integer := 1;
BEGIN
  SELECT * INTO un FROM units WHERE kind = 'ADMIN' ORDER BY id LIMIT 1;
  IF NOT FOUND THEN
    INSERT INTO units (kind, code, name) VALUES ('ADMIN', 'ADM', 'Administration') RETURNING * INTO un;
    PERFORM audit_append(NULL, NULL, 'unit.create', 'unit', un.id, NULL, NULL, NULL, p_reason,
                         jsonb_build_object('kind', un.kind, 'code', un.code, 'name', un.name));
  END IF;
  WHILE EXISTS (SELECT 1 FROM users WHERE unit_id = un.id AND name = nm) LOOP
    n := n + 1;
    nm := 'admin-' || n;
  END LOOP;
  INSERT INTO users (unit_id, name, role) VALUES (un.id, nm, 'ADMIN') RETURNING * INTO u;
  PERFORM audit_append(NULL, NULL, 'user.create', 'user', u.id, NULL, NULL, NULL, p_reason,
                       jsonb_build_object('unit_id', u.unit_id, 'name', u.name, 'role', u.role));
  INSERT INTO tokens (user_id, token_sha256, note, issued_by)
  VALUES (u.id, decode(p_sha256_hex, 'hex'), 'bootstrap', u.id)
  RETURNING * INTO t;
  PERFORM audit_append(NULL, NULL, 'token.issue', 'user', u.id, NULL, NULL, NULL, p_reason,
                       jsonb_build_object('token_id', t.id, 'note', 'bootstrap', 'enrollment', false,
                                          'hash_sha256', encode(sha256(t.token_sha256), 'hex')));
  RETURN u;
END $$;

-- Replaces admin_bootstrap of 0045_administration_never_locked_out.sql: the same rule, its
-- making moved to admin_bootstrap_make().
CREATE OR REPLACE FUNCTION admin_bootstrap(p_sha256_hex text)
RETURNS SETOF users LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('clued.bootstrap'));
  PERFORM pg_advisory_xact_lock(hashtext('clued.admins'));
  IF admin_working_exists(NULL, NULL) THEN
    RETURN;
  END IF;
  RETURN NEXT admin_bootstrap_make(p_sha256_hex, 'bootstrap');
END $$;

-- Another ADMIN user with a new token, whether or not an administrator works.
CREATE FUNCTION admin_bootstrap_new(p_sha256_hex text)
RETURNS users LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('clued.bootstrap'));
  PERFORM pg_advisory_xact_lock(hashtext('clued.admins'));
  RETURN admin_bootstrap_make(p_sha256_hex, 'bootstrap --new-admin');
END $$;

REVOKE EXECUTE ON FUNCTION admin_bootstrap_make(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION admin_bootstrap_make(text, text) FROM clued_runtime;
REVOKE EXECUTE ON FUNCTION admin_bootstrap_new(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION admin_bootstrap_new(text) FROM clued_runtime;
