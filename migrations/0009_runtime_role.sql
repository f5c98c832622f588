-- Least privilege. `clued migrate` runs as the role that owns the schema; `clued serve` runs as
-- a login role that is a member of clued_runtime and owns nothing. Owning a table is what lets
-- a role ALTER it (DISABLE TRIGGER among others), so the runtime role cannot switch off the
-- append-only triggers; and it holds no UPDATE or DELETE on audit events, chain heads or notes,
-- so it cannot rewrite them even with the triggers in place.
--
-- Set-up (scripts/run, scripts/pg-test, docker/) creates the login roles, as a superuser:
--   CREATE ROLE clued_owner LOGIN;                       -- owns the database, migrates
--   CREATE ROLE clued_runtime NOLOGIN;                   -- the privileges below
--   CREATE ROLE clued LOGIN IN ROLE clued_runtime;       -- serves
-- This migration creates clued_runtime itself when the migrating role may (a superuser, or a
-- role with CREATEROLE), so that an existing installation keeps migrating.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'clued_runtime') THEN
    CREATE ROLE clued_runtime NOLOGIN;
  END IF;
END
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO clued_runtime;

-- Reads: every table (what a caller may see is decided per call, above the database).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO clued_runtime;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO clued_runtime;

-- Rows the workflow changes in place.
GRANT INSERT, UPDATE ON units, users, tokens, clue_counters, clues, clue_reporters, proposals,
  clue_requests, joint_cases TO clued_runtime;
-- Membership rows come and go (a participant or a clue leaves a case) and follow a handover.
GRANT INSERT, UPDATE, DELETE ON case_participants, case_clues TO clued_runtime;
-- Notes are appended, never changed: only their owner_unit follows the clue on a handover
-- (clue_handover), and notes_refuse_change() refuses a change to any other column.
GRANT INSERT, UPDATE (owner_unit) ON notes TO clued_runtime;
-- Audit events and chain heads: no INSERT, UPDATE or DELETE at all. audit_append() alone writes
-- them, with its owner's rights; it appends and moves a head forward, nothing else.
DO $$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
            WHERE p.proname = 'audit_append' AND p.pronamespace = 'public'::regnamespace LOOP
    EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = public, pg_temp', f);
  END LOOP;
END
$$;

-- Tables and sequences that later migrations create (as the same owner) are readable and
-- writable but not deletable by the runtime role; a table that must be append-only or
-- deletable says so in its own migration. A function that writes audit rows must call
-- audit_append(), and a migration that replaces audit_append() must keep SECURITY DEFINER.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO clued_runtime;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO clued_runtime;
