-- A leaf is appended only if it is the leaf of the event audit_events holds at its seq.
--
-- The builder takes the leaves of the events its server's tail decided, from the tail's ring
-- in memory (server/audit/tree.c). After a failover to an asynchronous standby that lacked
-- the last events, that ring still held the old primary's events: the builder appended their
-- leaves to the new primary's audit_leaves, for seqs it does not have and for seqs it had
-- handed out again to other events, and signed checkpoints over them. audit_tree_append()
-- now recomputes each leaf from the stored row in the same statement (one lookup by the
-- primary key per leaf) and appends nothing, and signs nothing, unless every leaf matches.

-- The leaf hash of an event as stored: what audit_leaf_hash() in server/audit/merkle.c
-- computes from AUDIT_LEAF_COLS (server/audit/tree.h), and tests/e2e/tlog.py from the row
-- (docs/AUDIT.md, "Canonical event"): SHA-256(0x00 || "clued-audit-leaf-v1\n" || per field
-- "-\n" for NULL, else "<byte length>:<text>\n"), the fields from actor_token_id on left out
-- while NULL. Text reaches clued as UTF-8 (migrate.c), so lengths are counted in UTF-8.
CREATE FUNCTION audit_leaf_field(f text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN f IS NULL THEN E'-\n'
         ELSE octet_length(pg_catalog.convert_to(f, 'UTF8'))::text || ':' || f || E'\n' END
$$;

CREATE FUNCTION audit_event_leaf(e audit_events) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT pg_catalog.sha256('\x00'::bytea || pg_catalog.convert_to(concat(
    E'clued-audit-leaf-v1\n',
    audit_leaf_field(e.seq::text),
    audit_leaf_field((CASE WHEN abs(extract(epoch FROM e.at)) < 9e12
                      THEN (extract(epoch FROM e.at) * 1000000)::bigint END)::text),
    audit_leaf_field(e.actor_user_id::text),
    audit_leaf_field(e.actor_unit_id::text),
    audit_leaf_field(e.action),
    audit_leaf_field(e.subject_type),
    audit_leaf_field(e.subject_id::text),
    audit_leaf_field(e.owner_unit::text),
    audit_leaf_field(e.from_state),
    audit_leaf_field(e.to_state),
    audit_leaf_field(e.reason),
    audit_leaf_field(e.details),
    audit_leaf_field(encode(e.prev_hash, 'hex')),
    audit_leaf_field(encode(e.hash, 'hex')),
    CASE WHEN e.actor_token_id IS NOT NULL THEN audit_leaf_field(e.actor_token_id::text) END
  ), 'UTF8'))
$$;

-- Replaces audit_tree_append of 0012_audit_tree.sql: besides 'ok', 'busy' and 'moved', it
-- answers 'gone <seq>' (no event has that seq) or 'differs <seq>' (the event at that seq
-- does not hash to the leaf given) for the first leaf, in seq order, that audit_events does
-- not back, and then appends neither the leaves nor the checkpoint. The builder then drops
-- what it had read of the log and reads it again from the database (docs/AUDIT.md).
CREATE OR REPLACE FUNCTION audit_tree_append(p_first bigint, p_seqs bigint[], p_leaves bytea[],
                                             p_size bigint, p_root bytea, p_note text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  n bigint;
  bad record;
BEGIN
  -- 0x636c7565 = 'clue': the tree builder's lock, held to the end of this transaction.
  IF NOT pg_try_advisory_xact_lock(1668052325, 1) THEN
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
