-- AdminService changes as server-side functions: each call is one statement, one
-- transaction and one round trip, and appends its audit event in that same transaction.
-- Errors meant for the client use SQLSTATE 'CLnnn' where nnn is the gRPC status code.

CREATE FUNCTION admin_create_unit(p_actor_user bigint, p_actor_unit bigint, p_kind text, p_code text,
                                  p_name text, p_liaison bigint, p_host_units text[])
RETURNS units LANGUAGE plpgsql AS $$
DECLARE
  u units;
BEGIN
  IF p_liaison IS NOT NULL AND NOT EXISTS (SELECT 1 FROM units WHERE id = p_liaison AND kind = 'ROOM') THEN
    RAISE EXCEPTION USING ERRCODE = 'CL003',
      MESSAGE = format('liaison_room_id %s is not an existing ROOM unit', p_liaison);
  END IF;
  IF EXISTS (SELECT 1 FROM units WHERE code = p_code) THEN
    RAISE EXCEPTION USING ERRCODE = 'CL006', MESSAGE = format('a unit with code %s already exists', p_code);
  END IF;
  IF EXISTS (SELECT 1 FROM units WHERE name = p_name) THEN
    RAISE EXCEPTION USING ERRCODE = 'CL006', MESSAGE = format('a unit named %s already exists', p_name);
  END IF;
  INSERT INTO units (kind, code, name, liaison_room_id, host_units)
  VALUES (p_kind, p_code, p_name, p_liaison, coalesce(p_host_units, '{}'))
  RETURNING * INTO u;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'unit.create', 'unit', u.id, NULL, NULL, NULL, NULL,
                       jsonb_build_object('kind', u.kind, 'code', u.code, 'name', u.name,
                                          'liaison_room_id', u.liaison_room_id,
                                          'host_units', to_jsonb(u.host_units)));
  RETURN u;
END $$;

CREATE FUNCTION admin_create_user(p_actor_user bigint, p_actor_unit bigint, p_unit bigint, p_name text,
                                  p_role text)
RETURNS users LANGUAGE plpgsql AS $$
DECLARE
  k text;
  u users;
BEGIN
  SELECT kind INTO k FROM units WHERE id = p_unit;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CL005', MESSAGE = format('unit %s not found', p_unit);
  END IF;
  IF (p_role IN ('ADMIN', 'AUDITOR')) <> (k = 'ADMIN') THEN
    RAISE EXCEPTION USING ERRCODE = 'CL003', MESSAGE = format(
      'role %s cannot belong to a %s unit (ADMIN and AUDITOR users belong to ADMIN units; MEMBER and LEADER to ROOM, GROUP or REGION units)',
      p_role, k);
  END IF;
  IF EXISTS (SELECT 1 FROM users WHERE unit_id = p_unit AND name = p_name) THEN
    RAISE EXCEPTION USING ERRCODE = 'CL006',
      MESSAGE = format('unit %s already has a user named %s', p_unit, p_name);
  END IF;
  INSERT INTO users (unit_id, name, role) VALUES (p_unit, p_name, p_role) RETURNING * INTO u;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'user.create', 'user', u.id, NULL, NULL, NULL, NULL,
                       jsonb_build_object('unit_id', u.unit_id, 'name', u.name, 'role', u.role));
  RETURN u;
END $$;

CREATE FUNCTION admin_disable_user(p_actor_user bigint, p_actor_unit bigint, p_user bigint, p_reason text)
RETURNS users LANGUAGE plpgsql AS $$
DECLARE
  u users;
BEGIN
  SELECT * INTO u FROM users WHERE id = p_user FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CL005', MESSAGE = format('user %s not found', p_user);
  END IF;
  IF u.disabled THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = format('user %s is already disabled', p_user);
  END IF;
  IF p_user = p_actor_user THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = 'administrators cannot disable themselves';
  END IF;
  UPDATE users SET disabled = true WHERE id = p_user RETURNING * INTO u;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'user.disable', 'user', u.id, NULL, NULL, NULL, p_reason,
                       '{}'::jsonb);
  RETURN u;
END $$;

CREATE FUNCTION admin_issue_token(p_actor_user bigint, p_actor_unit bigint, p_user bigint, p_sha256_hex text,
                                  p_note text)
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
  INSERT INTO tokens (user_id, token_sha256, note) VALUES (p_user, decode(p_sha256_hex, 'hex'), p_note)
  RETURNING * INTO t;
  -- The token itself is never recorded; its id is.
  PERFORM audit_append(p_actor_user, p_actor_unit, 'token.issue', 'user', p_user, NULL, NULL, NULL, NULL,
                       jsonb_build_object('token_id', t.id, 'note', p_note));
  RETURN t;
END $$;

CREATE FUNCTION admin_revoke_token(p_actor_user bigint, p_actor_unit bigint, p_token bigint)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  t tokens;
BEGIN
  SELECT * INTO t FROM tokens WHERE id = p_token FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CL005', MESSAGE = format('token %s not found', p_token);
  END IF;
  IF t.revoked_at IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = format('token %s is already revoked', p_token);
  END IF;
  UPDATE tokens SET revoked_at = clock_timestamp() WHERE id = p_token RETURNING * INTO t;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'token.revoke', 'user', t.user_id, NULL, NULL, NULL, NULL,
                       jsonb_build_object('token_id', t.id));
  RETURN t;
END $$;

-- The first administrator. Returns the new user, or no row when an ADMIN user exists.
CREATE FUNCTION admin_bootstrap(p_sha256_hex text)
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
  INSERT INTO tokens (user_id, token_sha256, note) VALUES (u.id, decode(p_sha256_hex, 'hex'), 'bootstrap')
  RETURNING * INTO t;
  PERFORM audit_append(NULL, NULL, 'token.issue', 'user', u.id, NULL, NULL, NULL, 'bootstrap',
                       jsonb_build_object('token_id', t.id, 'note', 'bootstrap'));
  RETURN NEXT u;
END $$;
