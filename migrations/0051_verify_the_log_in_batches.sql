-- VerifyAuditChain over the whole log in batches of chains (docs/AUDIT.md, "Verifying").
--
-- audit_verify(NULL, NULL) hashes every event of the log in one statement. Its cost grows with
-- the log, and past about two million events on a small machine it runs past
-- --db-statement-timeout (30 s), so the whole log could no longer be verified at all, and a
-- cancel waited for its end. audit_verify_range() is the same judgement, over the chains whose
-- (subject_type, subject_id) lies after (p_after_type, p_after_id) and, unless p_upto_type is
-- NULL, up to (p_upto_type, p_upto_id) included: each chain is judged whole, in one batch (a
-- chain's events and its head are read in the batch's snapshot), so the batches' verdicts
-- together are the log's. clued walks the chains in batches of a bounded number of heads, one
-- statement each, and keeps the problem of the lowest seq; a chain appended to after its batch
-- was judged is judged by the next VerifyAuditChain, as events appended after a single
-- statement's snapshot always were. The judgement itself is 0004's, unchanged.

CREATE FUNCTION audit_verify_range(p_after_type text, p_after_id bigint, p_upto_type text, p_upto_id bigint)
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
    WHERE (e.subject_type, e.subject_id) > ($1, $2)
      AND ($3::text IS NULL OR (e.subject_type, e.subject_id) <= ($3, $4))
    WINDOW w AS (PARTITION BY e.subject_type, e.subject_id ORDER BY e.seq)
  ),
  hd AS MATERIALIZED (
    SELECT a.subject_type AS st, a.subject_id AS sid, a.last_seq, a.last_hash
    FROM audit_heads a
    WHERE (a.subject_type, a.subject_id) > ($1, $2)
      AND ($3::text IS NULL OR (a.subject_type, a.subject_id) <= ($3, $4))
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
  $q$ USING p_after_type, p_after_id, p_upto_type, p_upto_id;
END
$fn$;

-- Replaces audit_verify of 0004_audit.sql: one subject's chain is the range that holds it
-- alone, the whole log the range of every chain; one judgement, kept in one place.
CREATE OR REPLACE FUNCTION audit_verify(p_subject_type text, p_subject_id bigint)
RETURNS TABLE (subjects_checked bigint, events_checked bigint, subject_type text, subject_id bigint,
               seq bigint, problem text, detail text)
LANGUAGE sql STABLE AS $fn$
  SELECT * FROM audit_verify_range(coalesce(p_subject_type, ''),
                                   CASE WHEN p_subject_type IS NULL THEN 0 ELSE p_subject_id - 1 END,
                                   p_subject_type, p_subject_id)
$fn$;
