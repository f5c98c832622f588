-- A joint case holds at most 1,000 clues. GetJointCase answers a case with all its clues in
-- one message; without a bound, a lead room adding clue after clue would make the case too
-- large for any client to read (past gRPC's default 4 MiB at about 13,000 clues). One
-- CreateJointCase names at most 200 (case.c, CASE_MAX_CLUES); AddClueToCase counts the clues
-- the case holds under the case's lock, so two adds at once cannot pass the bound together.

-- Replaces case_add_clue of 0037_writes_recheck_under_the_clue_lock.sql: the same, refused
-- with FAILED_PRECONDITION once the case holds 1,000 clues.
CREATE OR REPLACE FUNCTION case_add_clue(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint, p_case bigint,
                                         p_clue bigint, p_version bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
  held bigint;
BEGIN
  SELECT count(*) INTO held FROM case_clues WHERE case_id = jc.id;
  IF held >= 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
      'joint case %s holds %s clues, the most one case may hold; open another case for more', jc.id, held);
  END IF;
  PERFORM case_join(p_actor_user, p_actor_unit, jc, p_clue, p_version, p_now_ms, p_reason, NULL, 'clue not found');
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;
