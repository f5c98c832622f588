-- A batch of submissions appends its events without the statement that created their chains'
-- heads first (issue 11; docs/WRITES.md "New chains in one statement (0030)").
--
-- audit_append_many() called with clue.submit events only (clue_submit_many()'s call) inserts
-- the events and then their heads, with their last seq and hash, in one statement: a new
-- clue's chain has no head to lock, no previous hash to read and nothing to move forward. A
-- chain that has a head already fails the heads' INSERT on its primary key, and with it the
-- whole transaction: a submission never restarts or forks a chain. The events themselves (the
-- transaction id before the seqs, the seqs in array order, the fields and the hash) are 0022's.
-- Every other call is 0028's, unchanged.
--
-- One client calling clue_submit_many() with eight submissions per batch, generic plans, the
-- two versions alternated: 1.18-1.29 ms before, 1.11-1.12 ms after (docs/WRITES.md).

-- Replaces audit_append_many of 0028_lean_batched_moves.sql: the clue.submit path above; the
-- rest as it was.
CREATE OR REPLACE FUNCTION audit_append_many(
  p_actor_user   bigint[],
  p_actor_unit   bigint[],
  p_action       text[],
  p_subject_type text[],
  p_subject_id   bigint[],
  p_owner_unit   bigint[],
  p_from         text[],
  p_to           text[],
  p_reason       text[],
  p_details      jsonb[],
  p_token        bigint[]
) RETURNS SETOF audit_events
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
  -- See 0004: a transaction id first, then (below) the seqs.
  x bigint := txid_current();
  n int := coalesce(cardinality(p_subject_id), 0);
  have int := 0;
  fresh int;
BEGIN
  IF n = 0 THEN
    RETURN;
  END IF;
  IF coalesce(cardinality(p_actor_user), 0) <> n OR coalesce(cardinality(p_actor_unit), 0) <> n
     OR coalesce(cardinality(p_action), 0) <> n OR coalesce(cardinality(p_subject_type), 0) <> n
     OR coalesce(cardinality(p_owner_unit), 0) <> n OR coalesce(cardinality(p_from), 0) <> n
     OR coalesce(cardinality(p_to), 0) <> n OR coalesce(cardinality(p_reason), 0) <> n
     OR coalesce(cardinality(p_details), 0) <> n OR coalesce(cardinality(p_token), 0) <> n THEN
    RAISE EXCEPTION 'audit_append_many: the arrays differ in length';
  END IF;

  -- Every event a clue.submit: each starts a chain of its own (a new clue's), so there is no
  -- head to lock or read. The events go straight in, and the heads are inserted as they end,
  -- in subject order: a chain that has a head already (or two events of one chain) fails the
  -- INSERT (unique key), so a chain is never restarted and never forks.
  IF p_action <@ ARRAY['clue.submit'] THEN
    RETURN QUERY
    WITH e0 AS MATERIALIZED (
      SELECT ROW(nextval('audit_events_seq_seq'), date_trunc('microseconds', clock_timestamp()),
                 s.au, s.aun, s.act, s.st, s.sid, s.ow, s.fr, s.tt, s.re, coalesce(s.de, '{}'::jsonb)::text,
                 NULL::bytea, NULL::bytea, x, s.tok)::audit_events AS e
      FROM (SELECT u.*
            FROM unnest(p_actor_user, p_actor_unit, p_action, p_subject_type, p_subject_id, p_owner_unit,
                        p_from, p_to, p_reason, p_details, p_token)
                   WITH ORDINALITY AS u(au, aun, act, st, sid, ow, fr, tt, re, de, tok, o)
            ORDER BY u.o) s
    ), e1 AS MATERIALIZED (
      SELECT (e0.e).seq, (e0.e).at, (e0.e).actor_user_id, (e0.e).actor_unit_id, (e0.e).action,
             (e0.e).subject_type, (e0.e).subject_id, (e0.e).owner_unit, (e0.e).from_state, (e0.e).to_state,
             (e0.e).reason, (e0.e).details, (e0.e).prev_hash, audit_hash(e0.e) AS hash, (e0.e).txid,
             (e0.e).actor_token_id
      FROM e0
    ), ins AS (
      INSERT INTO audit_events SELECT * FROM e1 ORDER BY e1.seq
    ), hd AS (
      INSERT INTO audit_heads (subject_type, subject_id, last_seq, last_hash)
      SELECT e1.subject_type, e1.subject_id, e1.seq, e1.hash FROM e1 ORDER BY e1.subject_type, e1.subject_id
    )
    SELECT * FROM e1 ORDER BY e1.seq;
    RETURN;
  END IF;

  -- Events of other kinds: as 0028. (Before 0030 a clue.submit also took this path: the heads
  -- created first, as 0022 did.) Any other event extends a chain that exists: the heads are locked first, in subject
  -- order, and when that finds all n (distinct rows: n distinct chains) nothing else is needed.
  IF p_action[1] IS DISTINCT FROM 'clue.submit' THEN
    SELECT count(*) INTO have
    FROM (SELECT 1 FROM audit_heads hd
          WHERE (hd.subject_type, hd.subject_id) IN (SELECT u.t, u.i FROM unnest(p_subject_type, p_subject_id) AS u(t, i))
          ORDER BY hd.subject_type, hd.subject_id
          FOR UPDATE) l;
  END IF;
  IF have < n THEN
    -- The new chains' heads, created in subject order. The heads found and those created are
    -- distinct rows: together n of them mean n distinct chains.
    WITH h AS (
      INSERT INTO audit_heads (subject_type, subject_id)
      SELECT u.t, u.i FROM unnest(p_subject_type, p_subject_id) AS u(t, i) ORDER BY u.t, u.i
      ON CONFLICT DO NOTHING
      RETURNING 1
    )
    SELECT count(*) INTO fresh FROM h;
    IF have + fresh < n THEN
      IF (SELECT count(DISTINCT (t, i)) FROM unnest(p_subject_type, p_subject_id) AS u(t, i)) <> n THEN
        RAISE EXCEPTION 'audit_append_many: one event per chain';
      END IF;
      -- Chains whose head was there (or another transaction created meanwhile): lock every
      -- head, in subject order, before the seqs (those held stay held).
      PERFORM 1 FROM audit_heads hd
      WHERE (hd.subject_type, hd.subject_id) IN (SELECT u.t, u.i FROM unnest(p_subject_type, p_subject_id) AS u(t, i))
      ORDER BY hd.subject_type, hd.subject_id
      FOR UPDATE;
    END IF;
  END IF;

  -- As 0022: the seqs drawn in array order over the sorted rows; the columns in table order as
  -- in audit_append(): seq, at, actor, action, subject, owner, from, to, reason, details,
  -- prev_hash, hash (next), txid, actor_token_id.
  RETURN QUERY
  WITH e0 AS MATERIALIZED (
    SELECT ROW(nextval('audit_events_seq_seq'), date_trunc('microseconds', clock_timestamp()),
               s.au, s.aun, s.act, s.st, s.sid, s.ow, s.fr, s.tt, s.re, coalesce(s.de, '{}'::jsonb)::text,
               s.last_hash, NULL::bytea, x, s.tok)::audit_events AS e
    FROM (SELECT u.*, hd.last_hash
          FROM unnest(p_actor_user, p_actor_unit, p_action, p_subject_type, p_subject_id, p_owner_unit,
                      p_from, p_to, p_reason, p_details, p_token)
                 WITH ORDINALITY AS u(au, aun, act, st, sid, ow, fr, tt, re, de, tok, o)
          JOIN audit_heads hd ON hd.subject_type = u.st AND hd.subject_id = u.sid
          ORDER BY u.o) s
  ), e1 AS MATERIALIZED (
    SELECT (e0.e).seq, (e0.e).at, (e0.e).actor_user_id, (e0.e).actor_unit_id, (e0.e).action,
           (e0.e).subject_type, (e0.e).subject_id, (e0.e).owner_unit, (e0.e).from_state, (e0.e).to_state,
           (e0.e).reason, (e0.e).details, (e0.e).prev_hash, audit_hash(e0.e) AS hash, (e0.e).txid,
           (e0.e).actor_token_id
    FROM e0
  ), ins AS (
    INSERT INTO audit_events SELECT * FROM e1 ORDER BY e1.seq
  ), mv AS (
    UPDATE audit_heads hd SET last_seq = e1.seq, last_hash = e1.hash
    FROM e1
    WHERE hd.subject_type = e1.subject_type AND hd.subject_id = e1.subject_id
  )
  SELECT * FROM e1 ORDER BY e1.seq;
END
$$;
