-- The AdminService's functions in the form of 0008_named_errors.sql: named SQLSTATEs (mapped
-- to gRPC codes by server/service/sql_errors.c), and no rule of the domain repeated. Which
-- role fits which unit kind, and that a liaison unit is a ROOM, are decided in C
-- (authz_role_fits_unit, authz_liaison_fits) from the unit's kind read before the call; a
-- unit's kind never changes, so nothing here needs to check it again.

-- Replaces admin_create_unit of 0002_admin.sql: the liaison's kind is checked by the domain;
-- here only that it still exists.
CREATE OR REPLACE FUNCTION admin_create_unit(p_actor_user bigint, p_actor_unit bigint, p_kind text, p_code text,
                                             p_name text, p_liaison bigint, p_host_units text[])
RETURNS units LANGUAGE plpgsql AS $$
DECLARE
  u units;
BEGIN
  IF p_liaison IS NOT NULL AND NOT EXISTS (SELECT 1 FROM units WHERE id = p_liaison) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG', MESSAGE = format('liaison_room_id %s is not an existing ROOM unit', p_liaison);
  END IF;
  IF EXISTS (SELECT 1 FROM units WHERE code = p_code) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLDUP', MESSAGE = format('a unit with code %s already exists', p_code);
  END IF;
  IF EXISTS (SELECT 1 FROM units WHERE name = p_name) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLDUP', MESSAGE = format('a unit named %s already exists', p_name);
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

-- Replaces admin_create_user of 0002_admin.sql: whether the role fits the unit's kind is the
-- domain's decision (authz_role_fits_unit), no longer repeated (and differently) here.
CREATE OR REPLACE FUNCTION admin_create_user(p_actor_user bigint, p_actor_unit bigint, p_unit bigint, p_name text,
                                             p_role text)
RETURNS users LANGUAGE plpgsql AS $$
DECLARE
  u users;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM units WHERE id = p_unit) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('unit %s not found', p_unit);
  END IF;
  IF EXISTS (SELECT 1 FROM users WHERE unit_id = p_unit AND name = p_name) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLDUP',
      MESSAGE = format('unit %s already has a user named %s', p_unit, p_name);
  END IF;
  INSERT INTO users (unit_id, name, role) VALUES (p_unit, p_name, p_role) RETURNING * INTO u;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'user.create', 'user', u.id, NULL, NULL, NULL, NULL,
                       jsonb_build_object('unit_id', u.unit_id, 'name', u.name, 'role', u.role));
  RETURN u;
END $$;

-- Replaces admin_disable_user of 0002_admin.sql: named SQLSTATEs.
CREATE OR REPLACE FUNCTION admin_disable_user(p_actor_user bigint, p_actor_unit bigint, p_user bigint, p_reason text)
RETURNS users LANGUAGE plpgsql AS $$
DECLARE
  u users;
BEGIN
  SELECT * INTO u FROM users WHERE id = p_user FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('user %s not found', p_user);
  END IF;
  IF u.disabled THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('user %s is already disabled', p_user);
  END IF;
  IF p_user = p_actor_user THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = 'administrators cannot disable themselves';
  END IF;
  UPDATE users SET disabled = true WHERE id = p_user RETURNING * INTO u;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'user.disable', 'user', u.id, NULL, NULL, NULL, p_reason,
                       '{}'::jsonb);
  RETURN u;
END $$;

-- Replaces admin_issue_token of 0010_tokens.sql: named SQLSTATEs; the issuer is recorded as there.
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
  -- The token itself is never recorded; its id is.
  PERFORM audit_append(p_actor_user, p_actor_unit, 'token.issue', 'user', p_user, NULL, NULL, NULL, NULL,
                       jsonb_build_object('token_id', t.id, 'note', p_note,
                                          'enrollment', t.issued_by <> t.user_id));
  RETURN t;
END $$;

-- Replaces admin_revoke_token of 0002_admin.sql: named SQLSTATEs.
CREATE OR REPLACE FUNCTION admin_revoke_token(p_actor_user bigint, p_actor_unit bigint, p_token bigint)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  t tokens;
BEGIN
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
