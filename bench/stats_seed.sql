-- Bulk data for bench/stats.py: working units with a leader each, and clues with histories
-- spread over the months before a given end time, written straight into the tables (much
-- faster than through the API, which would stamp every event with the time of the run).
--
-- pg_temp.stats_seed(n, t_end, rooms, groups, regions) adds `rooms` ROOMs, `groups` GROUPs
-- (liaison rooms round robin) and `regions` REGIONs, then n clues submitted uniformly over
-- the 420 days before t_end by a random one of those units, each following a path of the
-- state machine with random stage durations; events later than t_end do not happen, so a
-- clue stays in the stage it was in at t_end, with that stage's deadline (30/90/90 days).
-- Co-review moves get their proposal.create event before the approving proposal.approve
-- (the proposals rows themselves are not written). Audit rows are inserted with valid
-- per-subject hash chains and chain heads, and seq in time order, so VerifyAuditChain and
-- the audit-reading code see what the real write path would have produced. Returns the
-- number of audit events written.

CREATE FUNCTION pg_temp.stats_seed(n int, t_end timestamptz, rooms int, groups int, regions int)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  first_unit bigint;
  base bigint;
  total bigint;
  maxk int;
BEGIN
  PERFORM setseed(0.42);
  SELECT coalesce(max(id), 0) + 1 INTO first_unit FROM units;
  PERFORM admin_create_unit(NULL, NULL, 'ROOM', format('BR%s', i), format('bench room %s', i), NULL, '{}')
  FROM generate_series(1, rooms) i;
  PERFORM admin_create_unit(NULL, NULL, 'GROUP', format('BG%s', i), format('bench group %s', i),
                            (SELECT id FROM units WHERE code = format('BR%s', 1 + (i - 1) % rooms)), '{}')
  FROM generate_series(1, groups) i;
  PERFORM admin_create_unit(NULL, NULL, 'REGION', format('BX%s', i), format('bench region %s', i), NULL, '{}')
  FROM generate_series(1, regions) i;
  PERFORM admin_create_user(NULL, NULL, u.id, 'leader', 'LEADER') FROM units u WHERE u.id >= first_unit;

  CREATE TEMP TABLE seed_units ON COMMIT DROP AS
    SELECT row_number() OVER (ORDER BY u.id) - 1 AS ix, u.id, u.code, s.id AS leader
    FROM units u JOIN users s ON s.unit_id = u.id AND s.name = 'leader'
    WHERE u.id >= first_unit;

  -- One row per clue: its unit, path and the times of its transitions (NULL: not taken).
  CREATE TEMP TABLE seed_clues ON COMMIT DROP AS
  WITH r AS (
    SELECT i, floor(random() * (rooms + groups + regions))::int AS ux,
           t_end - random() * interval '420 days' AS t_sub,
           random() AS p1, random() AS p2, random() AS p3, random() AS p4,
           (3 + random() * 45) * interval '1 day' AS d_acc,
           (10 + random() * 120) * interval '1 day' AS d_chk,
           (20 + random() * 150) * interval '1 day' AS d_fil,
           (1 + random() * 6) * interval '1 day' AS d_review
    FROM generate_series(1, n) i
  ), p AS (
    SELECT r.*, su.id AS unit, su.code, su.leader,
           CASE WHEN p1 < 0.40 THEN 'CLOSED' WHEN p1 < 0.90 THEN 'PRELIMINARY_CHECK' END AS a_to,
           (ARRAY['TALK_OR_LETTER_INQUIRY', 'NO_FURTHER_ACTION', 'SHELVED'])[1 + floor(p2 * 3)::int] AS disposal,
           CASE WHEN p3 < 0.50 THEN 'CLOSED' WHEN p3 < 0.85 THEN 'FILED' END AS c_to,
           CASE WHEN p4 < 0.70 THEN 'CLOSED' WHEN p4 < 0.90 THEN 'TRANSFERRED_TO_JUDICIAL' END AS f_to
    FROM r JOIN seed_units su ON su.ix = r.ux
  )
  SELECT i, unit, code, leader, t_sub, a_to, disposal, c_to, f_to, d_review,
         CASE WHEN a_to IS NOT NULL AND t_sub + d_acc < t_end THEN t_sub + d_acc END AS t_a,
         CASE WHEN a_to = 'PRELIMINARY_CHECK' AND c_to IS NOT NULL AND t_sub + d_acc + d_chk < t_end
              THEN t_sub + d_acc + d_chk END AS t_c,
         CASE WHEN a_to = 'PRELIMINARY_CHECK' AND c_to = 'FILED' AND f_to IS NOT NULL
                   AND t_sub + d_acc + d_chk + d_fil < t_end
              THEN t_sub + d_acc + d_chk + d_fil END AS t_f
  FROM p;

  ALTER TABLE seed_clues ADD COLUMN clue_id bigint;
  UPDATE seed_clues SET clue_id = nextval(pg_get_serial_sequence('clues', 'id'));

  INSERT INTO clues (id, registration_number, reg_unit, reg_year, reg_seq, title, summary, source, subject_name,
                     host_unit, state, version, owner_unit, created_by, created_at, updated_at, stage_entered_at,
                     stage_deadline, disposal, finding, sanction_kind, persons_disciplined, receiving_organ, closed_at)
  SELECT s.clue_id, format('%s-%s-%s', s.code, s.y, lpad(s.seq::text, 5, '0')), s.unit, s.y, s.seq,
         format('bench clue %s', s.i), 'bench summary', 'LETTER_VISIT_REPORT', format('subject %s', s.i), 'host',
         s.state, s.version, s.unit, s.leader, s.t_sub, s.entered, s.entered,
         CASE s.state WHEN 'ACCEPTED' THEN s.entered + interval '30 days'
                      WHEN 'PRELIMINARY_CHECK' THEN s.entered + interval '90 days'
                      WHEN 'FILED' THEN s.entered + interval '90 days' END,
         CASE WHEN s.a_to = 'CLOSED' AND s.t_a IS NOT NULL THEN s.disposal END,
         CASE WHEN s.c_to = 'CLOSED' AND s.t_c IS NOT NULL THEN 'no violation found' END,
         CASE WHEN s.f_to = 'CLOSED' AND s.t_f IS NOT NULL THEN 'party warning' END,
         CASE WHEN s.f_to = 'CLOSED' AND s.t_f IS NOT NULL THEN 1 END,
         CASE WHEN s.f_to = 'TRANSFERRED_TO_JUDICIAL' AND s.t_f IS NOT NULL THEN 'procuratorate' END,
         CASE WHEN s.state IN ('CLOSED', 'TRANSFERRED_TO_JUDICIAL') THEN s.entered END
  FROM (
    SELECT c.*, extract(year FROM c.t_sub)::int AS y,
           row_number() OVER (PARTITION BY c.unit, extract(year FROM c.t_sub) ORDER BY c.t_sub) AS seq,
           CASE WHEN c.t_f IS NOT NULL THEN c.f_to WHEN c.t_c IS NOT NULL THEN c.c_to
                WHEN c.t_a IS NOT NULL THEN c.a_to ELSE 'ACCEPTED' END AS state,
           1 + (c.t_a IS NOT NULL)::int + (c.t_c IS NOT NULL)::int + (c.t_f IS NOT NULL)::int AS version,
           coalesce(c.t_f, c.t_c, c.t_a, c.t_sub) AS entered
    FROM seed_clues c
  ) s;

  INSERT INTO clue_counters AS k (unit_id, year, last_seq)
  SELECT reg_unit, reg_year, max(reg_seq) FROM clues GROUP BY reg_unit, reg_year
  ON CONFLICT (unit_id, year) DO UPDATE SET last_seq = greatest(k.last_seq, excluded.last_seq);

  -- The events, k numbering each clue's chain.
  CREATE TEMP TABLE seed_events ON COMMIT DROP AS
  SELECT row_number() OVER (PARTITION BY e.subject_id ORDER BY e.at, e.ord) AS k, e.*
  FROM (
    SELECT c.clue_id AS subject_id, c.t_sub AS at, 0 AS ord, c.leader, c.unit, 'clue.submit' AS action,
           NULL::text AS from_state, 'ACCEPTED' AS to_state, NULL::text AS reason,
           jsonb_build_object('title', format('bench clue %s', c.i), 'version', 1) AS details
    FROM seed_clues c
    UNION ALL
    SELECT c.clue_id, c.t_a, 1, c.leader, c.unit, 'clue.move', 'ACCEPTED', c.a_to, 'bench move',
           jsonb_strip_nulls(jsonb_build_object('action', CASE c.a_to WHEN 'CLOSED' THEN 'close_accepted'
                                                ELSE 'start_preliminary_check' END,
                                                'disposal', CASE WHEN c.a_to = 'CLOSED' THEN c.disposal END))
    FROM seed_clues c WHERE c.t_a IS NOT NULL
    UNION ALL
    SELECT c.clue_id, c.t_c - c.d_review, 2, c.leader, c.unit, 'proposal.create', 'PRELIMINARY_CHECK', 'FILED',
           'bench proposal', jsonb_build_object('action', 'file_case')
    FROM seed_clues c WHERE c.t_c IS NOT NULL AND c.c_to = 'FILED'
    UNION ALL
    SELECT c.clue_id, c.t_c, 3, c.leader, c.unit,
           CASE c.c_to WHEN 'FILED' THEN 'proposal.approve' ELSE 'clue.move' END, 'PRELIMINARY_CHECK', c.c_to,
           'bench move', jsonb_build_object('action', CASE c.c_to WHEN 'FILED' THEN 'file_case' ELSE 'close_check' END)
    FROM seed_clues c WHERE c.t_c IS NOT NULL
    UNION ALL
    SELECT c.clue_id, c.t_f - c.d_review, 4, c.leader, c.unit, 'proposal.create', 'FILED', 'TRANSFERRED_TO_JUDICIAL',
           'bench proposal', jsonb_build_object('action', 'transfer')
    FROM seed_clues c WHERE c.t_f IS NOT NULL AND c.f_to = 'TRANSFERRED_TO_JUDICIAL'
    UNION ALL
    SELECT c.clue_id, c.t_f, 5, c.leader, c.unit,
           CASE c.f_to WHEN 'CLOSED' THEN 'clue.move' ELSE 'proposal.approve' END, 'FILED', c.f_to, 'bench move',
           jsonb_build_object('action', CASE c.f_to WHEN 'CLOSED' THEN 'close_filed' ELSE 'transfer' END)
    FROM seed_clues c WHERE c.t_f IS NOT NULL
  ) e;

  -- seq in time order, after every existing event.
  SELECT count(*) INTO total FROM seed_events;
  base := nextval(pg_get_serial_sequence('audit_events', 'seq'));
  PERFORM setval(pg_get_serial_sequence('audit_events', 'seq'), base + total);
  CREATE TEMP TABLE seed_audit ON COMMIT DROP AS
  SELECT e.k, base + row_number() OVER (ORDER BY e.at, e.subject_id, e.k) AS seq,
         date_trunc('microseconds', e.at) AS at, e.leader AS actor_user_id, e.unit AS actor_unit_id, e.action,
         'clue'::text AS subject_type, e.subject_id, e.unit AS owner_unit, e.from_state, e.to_state, e.reason,
         e.details::text AS details, NULL::bytea AS prev_hash, NULL::bytea AS hash
  FROM seed_events e;
  CREATE INDEX ON seed_audit (k, subject_id);
  ANALYZE seed_audit;

  -- Hash chains, one link of every chain per round.
  SELECT max(k) INTO maxk FROM seed_audit;
  FOR j IN 1..maxk LOOP
    IF j > 1 THEN
      UPDATE seed_audit t SET prev_hash = p.hash
      FROM seed_audit p WHERE t.k = j AND p.k = j - 1 AND p.subject_id = t.subject_id;
    END IF;
    UPDATE seed_audit t SET hash = audit_hash(ROW(t.seq, t.at, t.actor_user_id, t.actor_unit_id, t.action,
                                                  t.subject_type, t.subject_id, t.owner_unit, t.from_state,
                                                  t.to_state, t.reason, t.details, t.prev_hash, NULL, 0,
                                                  NULL)::audit_events)
    WHERE t.k = j;
  END LOOP;

  INSERT INTO audit_events (seq, at, actor_user_id, actor_unit_id, action, subject_type, subject_id, owner_unit,
                            from_state, to_state, reason, details, prev_hash, hash)
  SELECT seq, at, actor_user_id, actor_unit_id, action, subject_type, subject_id, owner_unit, from_state,
         to_state, reason, details, prev_hash, hash
  FROM seed_audit ORDER BY seq;
  INSERT INTO audit_heads (subject_type, subject_id, last_seq, last_hash)
  SELECT DISTINCT ON (subject_id) 'clue', subject_id, seq, hash FROM seed_audit ORDER BY subject_id, seq DESC;
  RETURN total;
END $$;
