-- Identity and audit: units, users, bearer tokens, and the append-only, hash-chained audit
-- trail. schema_migrations belongs to the migration runner and is not created here.

-- ---- units ---------------------------------------------------------------------------------

-- A GROUP's liaison room must be a ROOM. The rule is declarative, so no race can break it:
-- liaison_kind is 'ROOM' whenever liaison_room_id is set, and (liaison_room_id, liaison_kind)
-- must match (id, kind) of an existing unit. The same key makes it impossible to change a
-- room's kind while a group still names it.
CREATE TABLE units (
  id              bigserial PRIMARY KEY,
  kind            text NOT NULL CHECK (kind IN ('ROOM', 'GROUP', 'REGION', 'ADMIN')),
  code            text NOT NULL UNIQUE CHECK (code ~ '^[A-Za-z0-9_]{1,32}$'),
  name            text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
  liaison_room_id bigint,
  host_units      text[] NOT NULL DEFAULT '{}' CHECK (array_position(host_units, NULL) IS NULL),
  created_at      timestamptz NOT NULL DEFAULT now(),
  liaison_kind    text GENERATED ALWAYS AS (CASE WHEN liaison_room_id IS NOT NULL THEN 'ROOM' END) STORED,
  CONSTRAINT units_id_kind_key UNIQUE (id, kind),
  CONSTRAINT units_liaison_only_for_groups CHECK ((kind = 'GROUP') = (liaison_room_id IS NOT NULL)),
  CONSTRAINT units_liaison_is_a_room FOREIGN KEY (liaison_room_id, liaison_kind) REFERENCES units (id, kind)
);

COMMENT ON COLUMN units.code IS 'short code used in registration numbers, e.g. G03 in G03-2026-0042';
COMMENT ON COLUMN units.liaison_room_id IS 'a GROUP''s liaison ROOM (对口联系); NULL for every other kind';
COMMENT ON COLUMN units.host_units IS 'a GROUP''s host units (驻在单位)';
COMMENT ON COLUMN units.liaison_kind IS 'derived, for the units_liaison_is_a_room key';

CREATE INDEX units_liaison_room_idx ON units (liaison_room_id) WHERE liaison_room_id IS NOT NULL;

-- ---- users and tokens --------------------------------------------------------------------------

CREATE TABLE users (
  id         bigserial PRIMARY KEY,
  unit_id    bigint NOT NULL REFERENCES units (id),
  name       text NOT NULL CHECK (btrim(name) <> ''),
  role       text NOT NULL CHECK (role IN ('MEMBER', 'LEADER', 'AUDITOR', 'ADMIN')),
  disabled   boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT users_unit_name_key UNIQUE (unit_id, name)
);

-- Tokens are stored only as SHA-256 of the secret; the secret is shown once when issued.
CREATE TABLE tokens (
  id           bigserial PRIMARY KEY,
  user_id      bigint NOT NULL REFERENCES users (id),
  token_sha256 bytea NOT NULL UNIQUE CHECK (octet_length(token_sha256) = 32),
  note         text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz
);

CREATE INDEX tokens_user_idx ON tokens (user_id);

-- ---- audit events ----------------------------------------------------------------------------

-- Rows are appended by audit_append() only. Each subject (subject_type, subject_id) has its
-- own hash chain: prev_hash is the hash of the subject's previous event, hash is SHA-256 of
-- audit_canonical(row). audit_heads holds each chain's head; locking that row serialises the
-- appends to one chain without a global lock.
CREATE TABLE audit_events (
  seq           bigserial PRIMARY KEY,
  at            timestamptz NOT NULL DEFAULT clock_timestamp(),
  actor_user_id bigint,
  actor_unit_id bigint,
  action        text NOT NULL,
  subject_type  text NOT NULL,
  subject_id    bigint NOT NULL,
  owner_unit    bigint,
  from_state    text,
  to_state      text,
  reason        text,
  details       text NOT NULL DEFAULT '{}',
  prev_hash     bytea,
  hash          bytea NOT NULL,
  txid          bigint NOT NULL DEFAULT txid_current()
);

COMMENT ON COLUMN audit_events.owner_unit IS 'the clue''s owner unit when the subject is clue-scoped, else NULL';
COMMENT ON COLUMN audit_events.details IS 'a jsonb value rendered as text, hashed as stored';

CREATE INDEX audit_events_subject_idx ON audit_events (subject_type, subject_id, seq);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_user_id);
CREATE INDEX audit_events_at_idx ON audit_events (at);
CREATE INDEX audit_events_owner_idx ON audit_events (owner_unit, seq) WHERE owner_unit IS NOT NULL;

CREATE TABLE audit_heads (
  subject_type text NOT NULL,
  subject_id   bigint NOT NULL,
  last_seq     bigint,
  last_hash    bytea,
  PRIMARY KEY (subject_type, subject_id)
);

-- The database refuses to change or remove audit rows, whoever asks. (A superuser can still
-- disable the trigger; the hash chains are what detect that.)
CREATE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_append_only
  BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

-- The canonical encoding that is hashed. Fields in this order: seq; at as integer
-- microseconds since the Unix epoch; actor_user_id; actor_unit_id; action; subject_type;
-- subject_id; from_state; to_state; reason; details; prev_hash as lower-case hex. Each field
-- is its text (NULL as the empty string) emitted as "<length in bytes>:<text>\n"; the whole
-- is UTF-8. Verifiers in other languages recompute exactly this.
CREATE FUNCTION audit_canonical(e audit_events) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT string_agg(octet_length(convert_to(f, 'UTF8'))::text || ':' || f || E'\n', '' ORDER BY n)
  FROM (
    SELECT coalesce(v, '') AS f, n
    FROM unnest(ARRAY[
      e.seq::text,
      ((extract(epoch FROM e.at) * 1000000)::bigint)::text,
      e.actor_user_id::text,
      e.actor_unit_id::text,
      e.action,
      e.subject_type,
      e.subject_id::text,
      e.from_state,
      e.to_state,
      e.reason,
      e.details,
      encode(e.prev_hash, 'hex')
    ]) WITH ORDINALITY AS t(v, n)
  ) fields
$$;

-- SHA-256 of the canonical encoding: what audit_events.hash must equal.
CREATE FUNCTION audit_hash(e audit_events) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT sha256(convert_to(audit_canonical(e), 'UTF8'))
$$;

-- Append one event to its subject's chain, in the caller's transaction. The chain head is
-- locked before seq is drawn, so within a chain seq order is chain order.
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
  p_details      jsonb
) RETURNS audit_events
LANGUAGE plpgsql AS $$
DECLARE
  e audit_events;
  head_hash bytea;
BEGIN
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
  e.txid := txid_current();
  e.hash := audit_hash(e);

  INSERT INTO audit_events VALUES (e.*);

  UPDATE audit_heads
  SET last_seq = e.seq, last_hash = e.hash
  WHERE subject_type = p_subject_type AND subject_id = p_subject_id;

  PERFORM pg_notify('audit_events', e.seq::text);
  RETURN e;
END
$$;
