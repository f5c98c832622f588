-- Whether a clue has ever had a handler or a recusal (issue 11). Every read of a clue asks
-- about the caller's assignment and recusal (0019): index probes and a sub-select per clue,
-- for clues that almost all have neither. The flags let a read skip them: set by a trigger
-- with the first row, never cleared (a clue whose handlers all left is asked as before).
-- Neither column is indexed, so a move's update stays HOT.

ALTER TABLE clues ADD COLUMN has_handlers boolean NOT NULL DEFAULT false,
                  ADD COLUMN has_recusals boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN clues.has_handlers IS 'a clue_handlers row was ever written for this clue';
COMMENT ON COLUMN clues.has_recusals IS 'a recusals row was ever written for this clue';

UPDATE clues SET has_handlers = true WHERE id IN (SELECT clue_id FROM clue_handlers);
UPDATE clues SET has_recusals = true WHERE id IN (SELECT clue_id FROM recusals);

CREATE FUNCTION clue_mark_cooperation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'clue_handlers' THEN
    UPDATE clues SET has_handlers = true WHERE id = NEW.clue_id AND NOT has_handlers;
  ELSE
    UPDATE clues SET has_recusals = true WHERE id = NEW.clue_id AND NOT has_recusals;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER clue_handlers_mark AFTER INSERT ON clue_handlers
  FOR EACH ROW EXECUTE FUNCTION clue_mark_cooperation();
CREATE TRIGGER recusals_mark AFTER INSERT ON recusals
  FOR EACH ROW EXECUTE FUNCTION clue_mark_cooperation();

-- Replaces clue_lock_seen_owner of 0019_handlers_recusal.sql: the same checks, under the lock
-- the trigger above needs. A FOR SHARE lock would have to grow into an update lock there, and
-- two first assignments of one clue, each holding a share, would wait for each other.
CREATE OR REPLACE FUNCTION clue_lock_seen_owner(p_clue bigint, p_seen_owner bigint) RETURNS clues
LANGUAGE plpgsql AS $$
DECLARE
  c clues;
BEGIN
  SELECT * INTO c FROM clues WHERE id = p_clue FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'clue not found';
  END IF;
  IF c.owner_unit <> p_seen_owner THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s was handed over meanwhile; reload it and retry', p_clue);
  END IF;
  RETURN c;
END $$;
