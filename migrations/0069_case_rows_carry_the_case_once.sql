-- A case's own columns once per case, and at most 64 participants after its creation.
--
-- joint_case_rows() answered one row per member clue, and each row carried the case's title,
-- basis (up to 20,000 bytes), participants and the caller's part in it, which clued reads
-- from the case's first row only. PostgreSQL sent them once per clue: a case of 1,000 clues
-- cost about 20 MB for a reply of about 67 KB, in every GetJointCase, every case of a
-- ListJointCases page, and every change of a case's members, which answers with the case
-- under its lock. The first row (in the order the clues joined) now carries them, the others
-- only the case's id and their clue.
--
-- CreateJointCase names at most 64 participants, but AddParticipant added any number: a case
-- grew past the bound its creation keeps. case_add_participant() now counts them under the
-- case's lock, so that two additions at once cannot both pass it.

-- Replaces joint_case_rows of 0044_rows_the_audit_can_account_for.sql. The same rows in the
-- same order; title, basis, lead_unit, created_by, created_ms, in_case and participants only
-- on the first (NULL on the others), so that the database sends each once per case.
CREATE OR REPLACE FUNCTION joint_case_rows(p_case bigint, p_unit bigint) RETURNS SETOF joint_case_row
LANGUAGE sql STABLE AS $$
  SELECT x.id,
         CASE WHEN x.n = 1 THEN x.title END,
         CASE WHEN x.n = 1 THEN x.basis END,
         CASE WHEN x.n = 1 THEN x.lead_unit END,
         CASE WHEN x.n = 1 THEN x.created_by END,
         CASE WHEN x.n = 1 THEN (extract(epoch FROM x.created_at) * 1000)::bigint END,
         CASE WHEN x.n = 1 THEN joint_case_has_unit(x.id, p_unit) END,
         CASE WHEN x.n = 1 THEN (SELECT string_agg(cp.unit_id::text, ',' ORDER BY cp.unit_id)
                                 FROM case_participants cp WHERE cp.case_id = x.id) END,
         x.clue_id, x.registration_number, x.clue_title, x.state, x.owner_unit,
         (extract(epoch FROM x.stage_deadline) * 1000)::bigint,
         (extract(epoch FROM x.added_at) * 1000)::bigint
  FROM (SELECT jc.id, jc.title, jc.basis, jc.lead_unit, jc.created_by, jc.created_at,
               c.id AS clue_id, c.registration_number, c.title AS clue_title, c.state, c.owner_unit,
               c.stage_deadline, cc.added_at,
               row_number() OVER (ORDER BY cc.added_at, cc.clue_id) AS n
        FROM joint_cases jc
        LEFT JOIN (case_clues cc JOIN clues c ON c.id = cc.clue_id AND c.joint_case_id = cc.case_id)
          ON cc.case_id = jc.id
        WHERE jc.id = p_case) x
  ORDER BY x.n
$$;

-- Replaces case_add_participant of 0008_named_errors.sql. The same, and a 65th participant
-- refused under the case's lock (CLPRE), as CreateJointCase refuses a 65th in its list; a unit
-- that already takes part is still CLDUP.
CREATE OR REPLACE FUNCTION case_add_participant(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint,
                                                p_case bigint, p_unit bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
  others bigint;
BEGIN
  SELECT count(*) INTO others FROM case_participants WHERE case_id = jc.id AND unit_id <> p_unit;
  IF others >= 64 THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
      'joint case %s has %s participant units, the most one case may have', jc.id, others);
  END IF;
  INSERT INTO case_participants (case_id, unit_id, added_by, added_at)
  VALUES (jc.id, p_unit, p_actor_user, clue_ms_ts(p_now_ms))
  ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLDUP',
      MESSAGE = format('unit %s already takes part in joint case %s', p_unit, jc.id);
  END IF;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'case.add_participant', 'case', jc.id, NULL, NULL, NULL,
                       p_reason, jsonb_build_object('unit_id', p_unit));
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;
