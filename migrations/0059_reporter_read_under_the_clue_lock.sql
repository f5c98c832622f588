-- The read of a clue's reporter looks, under the clue's lock, at what its caller's sight of
-- the reporter rests on. GetClue decides on a first read of the clue; the reporter's read
-- (which appends its clue.reporter_read event) came after it, checked the owner unit alone
-- and took no lock: a leader recused meanwhile (RecordRecusal holds the clue until it
-- commits) still got the reporter's contact details, logged after the recusal. The clue's
-- row is now held FOR SHARE first (so a recusal or a handover being written is waited for),
-- and a caller recused by then is answered as a fresh GetClue would be ("clue not found");
-- a clue handed over meanwhile reads no reporter, as before.

-- Replaces clue_read_reporter of 0003_clues.sql: the clue held, the caller's recusal looked
-- for under it.
CREATE OR REPLACE FUNCTION clue_read_reporter(p_actor_user bigint, p_actor_unit bigint, p_clue bigint)
RETURNS SETOF clue_reporters LANGUAGE plpgsql AS $$
DECLARE
  r clues;
  rp clue_reporters;
BEGIN
  SELECT * INTO r FROM clues WHERE id = p_clue AND owner_unit = p_actor_unit FOR SHARE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM clue_refuse_recused(r, p_actor_user, 'clue not found');
  SELECT * INTO rp FROM clue_reporters WHERE clue_id = p_clue;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.reporter_read', 'clue', p_clue, rp.owner_unit, NULL, NULL,
                       NULL, '{}'::jsonb);
  RETURN NEXT rp;
END $$;
