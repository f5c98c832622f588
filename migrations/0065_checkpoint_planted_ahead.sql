-- A checkpoint row stored ahead of the tree is not taken for the builder's own.
--
-- audit_checkpoints refuses UPDATE and DELETE, not INSERT: a role that may write the table (its
-- owner, a superuser) could store a note for a size the tree had not reached. When the builder
-- got there, its own checkpoint went nowhere (ON CONFLICT DO NOTHING), the append answered 'ok',
-- and the builder took the stored note for its own: nothing halted or was logged, and the
-- checkpoint of that size, the one an auditor's `audit checkpoint --out` keeps, was the
-- planted one. Now an append whose checkpoint finds another note at its size appends nothing
-- and answers 'checkpoint <size>': the builder halts and says so, as for any checkpoint it
-- did not sign over the tree it holds. The same note again (a retry) is no conflict.

-- Replaces audit_tree_append of 0063_only_clueds_roles_connect.sql: another note stored at
-- the checkpoint's size is refused before anything is appended.
CREATE OR REPLACE FUNCTION audit_tree_append(p_first bigint, p_seqs bigint[], p_leaves bytea[],
                                             p_size bigint, p_root bytea, p_note text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  n bigint;
  bad record;
  stored text;
BEGIN
  -- The tree builder's lock, held to the end of this transaction.
  PERFORM 1 FROM audit_tree_lock FOR UPDATE SKIP LOCKED;
  IF NOT FOUND THEN
    RETURN 'busy';
  END IF;
  SELECT coalesce(max(idx) + 1, 0) INTO n FROM audit_leaves;
  IF n <> p_first THEN
    RETURN 'moved';
  END IF;
  SELECT l.seq, e.seq IS NULL AS gone INTO bad
  FROM unnest(p_seqs, p_leaves) AS l(seq, leaf)
  LEFT JOIN audit_events e ON e.seq = l.seq
  WHERE e.seq IS NULL OR audit_event_leaf(e) IS DISTINCT FROM l.leaf
  ORDER BY l.seq
  LIMIT 1;
  IF FOUND THEN
    RETURN CASE WHEN bad.gone THEN 'gone ' ELSE 'differs ' END || coalesce(bad.seq::text, 'NULL');
  END IF;
  IF p_note IS NOT NULL THEN
    SELECT c.note INTO stored FROM audit_checkpoints c WHERE c.tree_size = p_size;
    IF FOUND AND stored IS DISTINCT FROM p_note THEN
      RETURN 'checkpoint ' || p_size;
    END IF;
  END IF;
  INSERT INTO audit_leaves (idx, seq, leaf)
  SELECT p_first + i - 1, p_seqs[i], p_leaves[i]
  FROM generate_subscripts(p_seqs, 1) AS i;
  IF p_note IS NOT NULL THEN
    INSERT INTO audit_checkpoints (tree_size, root, note)
    VALUES (p_size, p_root, p_note)
    ON CONFLICT (tree_size) DO NOTHING;
  END IF;
  RETURN 'ok';
END
$$;
