-- Unit names, and user names within a unit, are unique as text, not as bytes. Two names that
-- Unicode holds to be the same text passed as two: "Café" with U+00E9 and with "e" and a
-- combining acute (U+0301), a CJK compatibility ideograph (U+F907) and the ideograph it stands
-- for (U+9F9C), "Ｇ１" in full-width letters and "G1". They look alike on every screen, so an
-- administrator, or a reader of the audit trail, could not tell the two units or users apart:
-- one would pass for the other, which is what the unique names (units_name_key,
-- users_unit_name_key) and the trimming and refusals of validate_name are for. Now a name's
-- key is its NFKC form (name_key()), unique like the name itself, and a name whose key is
-- taken is refused as an exact duplicate is: CLDUP (ALREADY_EXISTS), naming the name that
-- exists, or, for two additions at once, the unique index's violation (svc_fail_db's
-- duplicates).
--
-- Names are stored as given; only their keys are normalized. normalize() needs a database of
-- encoding UTF8; in one of SQL_ASCII (which clued accepts too) the key is the name's bytes, as
-- before. PostgreSQL's Unicode tables may grow in a major upgrade; by Unicode's stability
-- policy only the key of a name with a character unassigned before could change, and REINDEX
-- of the two indexes below sets them right, as after a collation's change.
--
-- Rows that already conflict fail this migration, naming them, and nothing changes: rename all
-- but one of each group (no call renames; UPDATE units/users SET name = ... as the schema's
-- owner), then migrate again.

CREATE FUNCTION name_key(p_name text)
RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
  -- A database's encoding never changes: the same name, the same key.
  IF current_setting('server_encoding') <> 'UTF8' THEN
    RETURN p_name;
  END IF;
  RETURN normalize(p_name, NFKC);
END $$;

DO $$
DECLARE
  units_same text;
  users_same text;
BEGIN
  SELECT string_agg(ids, '; ' ORDER BY ids) INTO units_same
    FROM (SELECT string_agg(id::text, ', ' ORDER BY id) AS ids
            FROM units GROUP BY name_key(name) HAVING count(*) > 1) g;
  SELECT string_agg(ids, '; ' ORDER BY ids) INTO users_same
    FROM (SELECT string_agg(id::text, ', ' ORDER BY id) AS ids
            FROM users GROUP BY unit_id, name_key(name) HAVING count(*) > 1) g;
  IF units_same IS NOT NULL OR users_same IS NOT NULL THEN
    RAISE EXCEPTION USING MESSAGE = concat_ws('; ',
      'names that are the same text in Unicode (NFKC) must be told apart first',
      'units ' || units_same, 'users (of one unit) ' || users_same,
      'rename all but one of each group (UPDATE units or users SET name = ... WHERE id = ...) and migrate again');
  END IF;
END $$;

CREATE UNIQUE INDEX units_name_text_key ON units (name_key(name));
CREATE UNIQUE INDEX users_unit_name_text_key ON users (unit_id, name_key(name));

-- Replaces admin_create_unit of 0011_admin_named_errors.sql: a name the same text as another
-- unit's is that name, and the refusal names the one that exists.
CREATE OR REPLACE FUNCTION admin_create_unit(p_actor_user bigint, p_actor_unit bigint, p_kind text, p_code text,
                                             p_name text, p_liaison bigint, p_host_units text[])
RETURNS units LANGUAGE plpgsql AS $$
DECLARE
  u units;
  other text;
BEGIN
  IF p_liaison IS NOT NULL AND NOT EXISTS (SELECT 1 FROM units WHERE id = p_liaison) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG', MESSAGE = format('liaison_room_id %s is not an existing ROOM unit', p_liaison);
  END IF;
  IF EXISTS (SELECT 1 FROM units WHERE code = p_code) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLDUP', MESSAGE = format('a unit with code %s already exists', p_code);
  END IF;
  SELECT name INTO other FROM units WHERE name_key(name) = name_key(p_name);
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLDUP', MESSAGE = format('a unit named %s already exists', other);
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

-- Replaces admin_create_user of 0011_admin_named_errors.sql: a name the same text as another
-- user's of the unit is that name, and the refusal names the one that exists.
CREATE OR REPLACE FUNCTION admin_create_user(p_actor_user bigint, p_actor_unit bigint, p_unit bigint, p_name text,
                                             p_role text)
RETURNS users LANGUAGE plpgsql AS $$
DECLARE
  u users;
  other text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM units WHERE id = p_unit) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('unit %s not found', p_unit);
  END IF;
  SELECT name INTO other FROM users WHERE unit_id = p_unit AND name_key(name) = name_key(p_name);
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLDUP',
      MESSAGE = format('unit %s already has a user named %s', p_unit, other);
  END IF;
  INSERT INTO users (unit_id, name, role) VALUES (p_unit, p_name, p_role) RETURNING * INTO u;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'user.create', 'user', u.id, NULL, NULL, NULL, NULL,
                       jsonb_build_object('unit_id', u.unit_id, 'name', u.name, 'role', u.role));
  RETURN u;
END $$;

-- Replaces admin_bootstrap_make of 0049_bootstrap_new_admin.sql: the next free name is free as
-- text, so that a user an administrator named "ａｄｍｉｎ-2" does not stop `bootstrap --new-admin`.
CREATE OR REPLACE FUNCTION admin_bootstrap_make(p_sha256_hex text, p_reason text)
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
  WHILE EXISTS (SELECT 1 FROM users WHERE unit_id = un.id AND name_key(name) = name_key(nm)) LOOP
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
