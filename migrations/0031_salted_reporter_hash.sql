-- A salt for each reporter's hash.
--
-- The clue.submit event records reporter_sha256, a SHA-256 of the reporter's contact details
-- (0013), so that a changed reporter row is detected. Unsalted, it let anyone who reads the
-- event (the owner unit's members, the liaison room, a seconded handler, a joint case's
-- participants, an enrollment token), though never shown the reporter, test a guessed name
-- and phone number offline; the event's own hash covers the details, so withholding the field
-- alone would not help. From here on each reporter row carries 32 random bytes, never shown
-- to anyone, that its hash starts with: without the database the hash confirms nothing.
--
-- The salt is two gen_random_uuid() (pg_strong_random(), 2 x 122 random bits; pgcrypto is
-- not installed), given by the column's DEFAULT so that every path that inserts a reporter
-- (clue_submit(), clue_submit_many()) gets one without naming it. Rows from before this
-- migration keep a NULL salt and hash exactly as before, so every older event still
-- verifies. The default is set after the column is added, so that those rows are not
-- filled.
--
-- Privileges: the runtime role's table-wide SELECT, INSERT and UPDATE on clue_reporters
-- (0009) cover the new column. It needs SELECT on it (clue_read_reporter() reads rp.*, an
-- insert reads the row back to hash it, ExportAuditEvents recomputes the hash); no RPC
-- returns it: GetClue reads name, phone, address and email by name.

ALTER TABLE clue_reporters ADD COLUMN salt bytea;
ALTER TABLE clue_reporters
  ALTER COLUMN salt SET DEFAULT uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid());
ALTER TABLE clue_reporters ADD CONSTRAINT clue_reporters_salt_len CHECK (octet_length(salt) = 32);

-- Replaces clue_reporter_sha256 of 0016_lean_writes.sql: SHA-256 of the row's salt followed
-- by the same text as before; with no salt (rows from before 0031), exactly the hash of 0013.
-- server/service/audit_proof.c (ExportAuditEvents) writes the same expression out.
CREATE OR REPLACE FUNCTION clue_reporter_sha256(r clue_reporters) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT encode(sha256(coalesce(r.salt, ''::bytea) || convert_to(concat(
    octet_length(r.name), ':', r.name, E'\n',
    octet_length(r.phone), ':', r.phone, E'\n',
    octet_length(r.address), ':', r.address, E'\n',
    octet_length(r.email), ':', r.email, E'\n'),
    'UTF8')), 'hex')
$$;
