-- AuditService support: an append that WatchEvents can follow without gaps or reordering,
-- a faster (inlinable) form of the canonical encoding, and the chain verifier.

-- ---- ordering for watchers ---------------------------------------------------------------

-- WatchEvents delivers events in seq order and must never skip one that commits late
-- (server/service/audit_watch.c explains the argument in full). It relies on two facts:
--   1. nextval() hands out seq values in increasing order of time. That holds only with
--      CACHE 1 (with a per-session cache a session could draw a small value long after
--      another drew a larger one), so it is pinned here rather than left to the default.
--   2. The transaction that appends an event holds a transaction id before it draws the
--      event's seq. Then, once a reader's snapshot has shown seq h > g and not g, g's
--      transaction has an id below any id assigned after that snapshot (the reader takes
--      one with txid_current()), and once the oldest running id (xmin) reaches it, g's
--      transaction has ended: if g is still absent it was rolled back.
DO $$
BEGIN
  EXECUTE format('ALTER SEQUENCE %s CACHE 1', pg_get_serial_sequence('audit_events', 'seq'));
END
$$;

-- Same signature, canonical hashing and NOTIFY as in 0001; what changes is that the
-- transaction id is assigned (txid_current()) before nextval() draws seq.
CREATE OR REPLACE FUNCTION audit_append(
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
  -- Fact 2 above: a transaction id first, then (below) the seq.
  e.txid := txid_current();

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
  e.hash := audit_hash(e);

  INSERT INTO audit_events VALUES (e.*);

  UPDATE audit_heads
  SET last_seq = e.seq, last_hash = e.hash
  WHERE subject_type = p_subject_type AND subject_id = p_subject_id;

  PERFORM pg_notify('audit_events', e.seq::text);
  RETURN e;
END
$$;

-- ---- the canonical encoding, inlinable ---------------------------------------------------

-- The encoding is exactly the one 0001 defines (and documents): each field's text, NULL as
-- the empty string, as "<length in bytes>:<text>\n", in the same order. The 0001 body builds
-- it with unnest and string_agg, which the planner cannot inline, so verifying 100,000
-- events paid a function call per event. This body is one expression: audit_hash(e) inlines
-- into the verifier's query. concat() renders NULL as '' just as coalesce(v, '') did.
CREATE OR REPLACE FUNCTION audit_canonical(e audit_events) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT concat(
    octet_length(convert_to(e.seq::text, 'UTF8')), ':', e.seq, E'\n',
    octet_length(convert_to(((extract(epoch FROM e.at) * 1000000)::bigint)::text, 'UTF8')), ':',
      (extract(epoch FROM e.at) * 1000000)::bigint, E'\n',
    octet_length(convert_to(coalesce(e.actor_user_id::text, ''), 'UTF8')), ':', e.actor_user_id, E'\n',
    octet_length(convert_to(coalesce(e.actor_unit_id::text, ''), 'UTF8')), ':', e.actor_unit_id, E'\n',
    octet_length(convert_to(coalesce(e.action, ''), 'UTF8')), ':', e.action, E'\n',
    octet_length(convert_to(coalesce(e.subject_type, ''), 'UTF8')), ':', e.subject_type, E'\n',
    octet_length(convert_to(coalesce(e.subject_id::text, ''), 'UTF8')), ':', e.subject_id, E'\n',
    octet_length(convert_to(coalesce(e.from_state, ''), 'UTF8')), ':', e.from_state, E'\n',
    octet_length(convert_to(coalesce(e.to_state, ''), 'UTF8')), ':', e.to_state, E'\n',
    octet_length(convert_to(coalesce(e.reason, ''), 'UTF8')), ':', e.reason, E'\n',
    octet_length(convert_to(coalesce(e.details, ''), 'UTF8')), ':', e.details, E'\n',
    octet_length(convert_to(coalesce(encode(e.prev_hash, 'hex'), ''), 'UTF8')), ':',
      encode(e.prev_hash, 'hex'), E'\n')
$$;

-- ---- chain heads ---------------------------------------------------------------------------

-- A chain's head anchors its end: without it, removing a chain's last event would leave a
-- valid-looking shorter chain. Heads move only forward (audit_append's UPDATE); removing
-- them is refused like changes to audit_events. A superuser can disable this trigger too,
-- and the verifier then reports the unanchored chain.
CREATE FUNCTION audit_heads_refuse_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_heads rows cannot be removed: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_heads_keep
  BEFORE DELETE OR TRUNCATE ON audit_heads
  FOR EACH STATEMENT EXECUTE FUNCTION audit_heads_refuse_delete();

-- ---- the verifier -------------------------------------------------------------------------

-- Recompute every chain (or the one of p_subject_type/p_subject_id) and report the first
-- broken link, lowest seq first. One row: the counts, then subject/seq/problem/detail of
-- the broken link, all NULL when every chain holds.
--
-- Two stages. The first walks every chain in seq order with window functions and checks
-- what a sound chain must satisfy: the first event has no prev_hash, every other names the
-- hash of the event before it, every hash equals audit_hash() of its row, and the head
-- names the last event and its hash. A chain passing all of that is exactly the linked
-- list audit_append wrote, so most chains cost one sequential pass. The second stage runs
-- only over the events of chains that failed, and names the problem; it needs to know which
-- event a hash belongs to and how many events name a hash as predecessor (hash aggregates).
-- An event e of a failed chain is judged in this order:
--   after  e comes after the event the head names -> FORGED (appended behind the head).
--   link   e.prev_hash must be the hash of the chain's previous event (NULL for the first).
--          If it is not: it names no event of the chain -> MISSING_PREDECESSOR (that event
--          was removed, or rewritten so that its hash changed); it names another event and e
--          is "forged" (below) -> FORGED; else -> REORDERED.
--   hash   e.hash must equal audit_hash(e). If not: something continues e (an event names
--          e.hash, or the next event names the recomputed hash, or the head names e) ->
--          CHANGED_CONTENT; else e was made up -> FORGED.
--   head   the event the head names must carry the head's hash, else CHANGED_CONTENT.
--   fork   e is "forged" when nothing continues it (no event names e.hash and the head does
--          not) while its predecessor is continued by another event too: a valid-looking
--          event squeezed into the chain.
--   start  a chain with events but no head was not written by audit_append -> FORGED at its
--          first event.
-- A head naming a seq that no event has -> MISSING_PREDECESSOR at that seq (the chain's
-- last events were removed). An event that merely lacks a successor because the successor
-- was removed is not forged (its predecessor has no other successor); the removal is
-- reported where the chain resumes, or at the head.
--
-- A superuser who rewrites a chain's events from some point on and its head consistently is
-- not detectable from the database alone; exporting heads elsewhere now and then closes that.
CREATE FUNCTION audit_verify(p_subject_type text, p_subject_id bigint)
RETURNS TABLE (subjects_checked bigint, events_checked bigint, subject_type text, subject_id bigint,
               seq bigint, problem text, detail text)
LANGUAGE plpgsql STABLE SET work_mem = '64MB' AS $fn$
BEGIN
  -- EXECUTE plans with the actual arguments, so the whole-table case is planned as such.
  RETURN QUERY EXECUTE $q$
  WITH ev AS MATERIALIZED (
    SELECT e.seq, e.subject_type AS st, e.subject_id AS sid, e.prev_hash AS p, e.hash AS h,
           audit_hash(e) AS calc,
           lag(e.hash) OVER w AS before_h,
           lag(e.seq) OVER w AS before_seq,
           lead(e.prev_hash) OVER w AS after_p,
           lead(e.seq) OVER w IS NULL AS is_last
    FROM audit_events e
    WHERE $1::text IS NULL OR (e.subject_type = $1 AND e.subject_id = $2)
    WINDOW w AS (PARTITION BY e.subject_type, e.subject_id ORDER BY e.seq)
  ),
  hd AS MATERIALIZED (
    SELECT a.subject_type AS st, a.subject_id AS sid, a.last_seq, a.last_hash
    FROM audit_heads a
    WHERE $1::text IS NULL OR (a.subject_type = $1 AND a.subject_id = $2)
  ),
  ends AS (
    SELECT ev.st, ev.sid, ev.seq, ev.h, hd.st IS NOT NULL AS has_head, hd.last_seq, hd.last_hash
    FROM ev LEFT JOIN hd ON hd.st = ev.st AND hd.sid = ev.sid
    WHERE ev.is_last
  ),
  failed AS MATERIALIZED (
    SELECT st, sid FROM ev WHERE p IS DISTINCT FROM before_h OR calc <> h
    UNION
    SELECT st, sid FROM ends
    WHERE NOT has_head OR last_seq IS DISTINCT FROM seq OR last_hash IS DISTINCT FROM h
  ),
  fe AS MATERIALIZED (
    SELECT ev.*, coalesce(ev.p, '\x'::bytea) AS pk  -- '' stands for "no predecessor"
    FROM ev JOIN failed f ON f.st = ev.st AND f.sid = ev.sid
  ),
  by_hash AS (SELECT st, sid, h, min(seq) AS seq FROM fe GROUP BY st, sid, h),
  by_prev AS (SELECT st, sid, pk, count(*) AS n FROM fe GROUP BY st, sid, pk),
  x AS (
    SELECT fe.*, tgt.seq AS p_seq, hd.last_seq, hd.last_hash, hd.st IS NOT NULL AS has_head,
           (succ.n IS NOT NULL OR fe.h = hd.last_hash) AS continued,
           (fe.after_p = fe.calc OR (fe.seq = hd.last_seq AND hd.last_hash = fe.calc)) AS calc_continued,
           (succ.n IS NULL AND hd.last_hash IS DISTINCT FROM fe.h AND sib.n > 1) AS forged
    FROM fe
    LEFT JOIN by_hash tgt ON tgt.st = fe.st AND tgt.sid = fe.sid AND tgt.h = fe.p
    LEFT JOIN by_prev sib ON sib.st = fe.st AND sib.sid = fe.sid AND sib.pk = fe.pk
    LEFT JOIN by_prev succ ON succ.st = fe.st AND succ.sid = fe.sid AND succ.pk = fe.h
    LEFT JOIN hd ON hd.st = fe.st AND hd.sid = fe.sid
  ),
  judged AS (
    SELECT x.st, x.sid, x.seq,
      CASE
        WHEN x.seq > x.last_seq THEN 'FORGED'
        WHEN x.p IS DISTINCT FROM x.before_h THEN
          CASE
            WHEN x.p IS NOT NULL AND x.p_seq IS NULL THEN 'MISSING_PREDECESSOR'
            WHEN x.forged THEN 'FORGED'
            ELSE 'REORDERED'
          END
        WHEN x.calc <> x.h AND (x.continued OR x.calc_continued) THEN 'CHANGED_CONTENT'
        WHEN x.calc <> x.h THEN 'FORGED'
        WHEN x.seq = x.last_seq AND x.h <> x.last_hash THEN 'CHANGED_CONTENT'
        WHEN x.forged THEN 'FORGED'
        WHEN NOT x.has_head AND x.before_seq IS NULL THEN 'FORGED'
      END AS problem,
      CASE
        WHEN x.seq > x.last_seq THEN
          format('appended behind the chain head, which names seq %s as the chain''s last event', x.last_seq)
        WHEN x.p IS DISTINCT FROM x.before_h THEN
          CASE
            WHEN x.p IS NOT NULL AND x.p_seq IS NULL AND x.before_seq IS NULL THEN
              format('prev_hash %s names no event of the chain: the chain''s first event(s), before seq %s, were removed',
                     left(encode(x.p, 'hex'), 16), x.seq)
            WHEN x.p IS NOT NULL AND x.p_seq IS NULL THEN
              format('prev_hash %s names no event of the chain: an event between seq %s and seq %s was removed, or seq %s was rewritten',
                     left(encode(x.p, 'hex'), 16), x.before_seq, x.seq, x.before_seq)
            WHEN x.forged THEN
              format('inserted: it continues %s, which another event of the chain continues, and nothing continues it',
                     coalesce('seq ' || x.p_seq, 'the start of the chain'))
            WHEN x.p IS NULL THEN
              format('it claims to start the chain, but seq %s comes before it', x.before_seq)
            ELSE
              format('prev_hash names seq %s, but the event before it in the chain is %s', x.p_seq,
                     coalesce('seq ' || x.before_seq, 'none (it is the first)'))
          END
        WHEN x.calc <> x.h AND x.continued THEN
          'the stored hash does not match the event''s content: the event was changed'
        WHEN x.calc <> x.h AND x.calc_continued THEN
          'the stored hash was altered: the next link names the hash of the content as stored'
        WHEN x.calc <> x.h THEN
          'the stored hash does not match the content and nothing continues the event: it was inserted'
        WHEN x.seq = x.last_seq AND x.h <> x.last_hash THEN
          'the chain head records another hash for this event: the event was replaced'
        WHEN x.forged THEN
          format('inserted: it continues %s, which another event of the chain continues, and nothing continues it',
                 coalesce('seq ' || x.p_seq, 'the start of the chain'))
        ELSE 'no chain head is recorded for this subject: its events were not written by audit_append'
      END AS detail
    FROM x
  ),
  head_problems AS (
    SELECT hd.st, hd.sid, hd.last_seq AS seq, 'MISSING_PREDECESSOR' AS problem,
           CASE WHEN ends.seq IS NULL THEN
             format('the chain head names seq %s, but the chain has no events: they were removed', hd.last_seq)
           ELSE
             format('the chain head names seq %s, which is missing: the chain''s last event(s) after seq %s were removed',
                    hd.last_seq, ends.seq)
           END AS detail
    FROM hd
    LEFT JOIN ends ON ends.st = hd.st AND ends.sid = hd.sid
    WHERE hd.last_seq IS NOT NULL AND hd.last_seq IS DISTINCT FROM ends.seq
      AND NOT EXISTS (SELECT 1 FROM fe WHERE fe.st = hd.st AND fe.sid = hd.sid AND fe.seq = hd.last_seq)
  ),
  first_problem AS (
    SELECT * FROM (
      SELECT st, sid, seq, problem, detail FROM judged WHERE problem IS NOT NULL
      UNION ALL
      SELECT st, sid, seq, problem, detail FROM head_problems
    ) a
    ORDER BY seq, st, sid
    LIMIT 1
  )
  SELECT (SELECT count(*) FROM (SELECT st, sid FROM ends UNION SELECT st, sid FROM hd) s),
         (SELECT count(*) FROM ev),
         f.st, f.sid, f.seq, f.problem, f.detail
  FROM (SELECT 1) one LEFT JOIN first_problem f ON true
  $q$ USING p_subject_type, p_subject_id;
END
$fn$;
