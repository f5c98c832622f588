-- The audit log's Merkle tree and its signed checkpoints (docs/AUDIT.md).
--
-- Every audit event, in seq order, is one leaf of an RFC 9162 Merkle tree. clued computes
-- the leaf hashes itself after the events commit, following the same committed-tail
-- frontier as WatchEvents, so appending an event takes no lock beyond its own chain's head.
-- These tables only keep what clued computed: the tree is checked against checkpoints
-- signed with a key the database never sees, so a row rewritten here is detected the same
-- way as a rewritten event.

-- Leaf idx is the event's position in the tree (0-based). Rolled-back seqs are not leaves.
CREATE TABLE audit_leaves (
  idx  bigint PRIMARY KEY CHECK (idx >= 0),
  seq  bigint NOT NULL UNIQUE,
  leaf bytea NOT NULL CHECK (octet_length(leaf) = 32)
);

-- One row per published checkpoint: the signed note (C2SP tlog-checkpoint) and, for
-- queries, the size and root it signs.
CREATE TABLE audit_checkpoints (
  tree_size bigint PRIMARY KEY CHECK (tree_size >= 0),
  root      bytea NOT NULL CHECK (octet_length(root) = 32),
  note      text NOT NULL,
  at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE FUNCTION audit_tree_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_leaves_append_only
  BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_leaves
  FOR EACH STATEMENT EXECUTE FUNCTION audit_tree_refuse_change();

CREATE TRIGGER audit_checkpoints_append_only
  BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION audit_tree_refuse_change();

-- Append leaves p_first.. (p_seqs[i], p_leaves[i]) and, when p_note is not NULL, the
-- checkpoint (p_size, p_root, p_note). Only the holder of the tree's advisory lock appends,
-- and only at the tree's current end: two instances can never both append, nor append
-- out of order. Returns 'ok', 'busy' (another instance holds the lock) or 'moved' (the tree
-- is not p_first leaves long: read it again).
CREATE FUNCTION audit_tree_append(p_first bigint, p_seqs bigint[], p_leaves bytea[],
                                  p_size bigint, p_root bytea, p_note text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  n bigint;
BEGIN
  -- 0x636c7565 = 'clue': the tree builder's lock, held to the end of this transaction.
  IF NOT pg_try_advisory_xact_lock(1668052325, 1) THEN
    RETURN 'busy';
  END IF;
  SELECT coalesce(max(idx) + 1, 0) INTO n FROM audit_leaves;
  IF n <> p_first THEN
    RETURN 'moved';
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

-- audit_tree_append() (SECURITY DEFINER, as audit_append) is the only writer: the runtime
-- role reads the tree and its checkpoints, and appends only through it (0009's default
-- privileges would also let it INSERT and UPDATE directly).
REVOKE INSERT, UPDATE ON audit_leaves, audit_checkpoints FROM clued_runtime;
