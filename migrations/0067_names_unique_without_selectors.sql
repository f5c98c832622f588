-- A name's key (0061_names_unique_as_text.sql) leaves out variation selectors, and a group's
-- host units are each one unit as text.
--
-- NFKC keeps variation selectors (U+FE00-FE0F, U+E0100-E01EF) and the Mongolian free
-- variation selectors (U+180B-180D, U+180F): "G1-leader" and "G1-leader" followed by U+FE0F,
-- which print alike, had two keys, and both could be users of one unit. A selector picks a
-- glyph of the character before it, never another character, so a name is the same text
-- with or without one: the key now drops them before NFKC. (clued refuses a selector after a
-- character it does not vary, validate_text(); names made before keep theirs.)
--
-- CreateUnit refused a host unit named twice as bytes (clued, after trimming); "ABC局" and
-- "ＡＢＣ局" (full-width), the same text, passed as two. admin_create_unit() now refuses
-- two whose keys are equal (CLARG, naming host_units, as clued's refusal does).
--
-- The two unique indexes on the key are built again. Rows that already conflict under the new
-- key fail this migration, naming them, and nothing changes: rename all but one of each group
-- (UPDATE units/users SET name = ... as the schema's owner), then migrate again.

-- Replaces name_key of 0061_names_unique_as_text.sql: variation selectors left out.
CREATE OR REPLACE FUNCTION name_key(p_name text)
RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
  -- A database's encoding never changes: the same name, the same key.
  IF current_setting('server_encoding') <> 'UTF8' THEN
    RETURN p_name;
  END IF;
  RETURN normalize(regexp_replace(p_name, '[\u180B-\u180D\u180F\uFE00-\uFE0F\U000E0100-\U000E01EF]', '', 'g'),
                   NFKC);
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
      'names that are the same text in Unicode (NFKC, without variation selectors) must be told apart first',
      'units ' || units_same, 'users (of one unit) ' || users_same,
      'rename all but one of each group (UPDATE units or users SET name = ... WHERE id = ...) and migrate again');
  END IF;
END $$;

REINDEX INDEX units_name_text_key;
REINDEX INDEX users_unit_name_text_key;

-- Replaces admin_create_unit of 0061_names_unique_as_text.sql: host units whose keys are equal
-- refused.
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
  IF (SELECT count(DISTINCT name_key(h)) FROM unnest(p_host_units) h) < coalesce(cardinality(p_host_units), 0) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG', MESSAGE = 'host_units names the same unit more than once';
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
