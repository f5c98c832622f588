-- Only clued's roles connect to its database, and no other role can stop the audit tree.
--
-- The tree's builder took a transaction-level advisory lock of a fixed key before appending
-- leaves. Advisory locks have no privileges: any role that could log in to the database
-- (PostgreSQL gives CONNECT on a new database to PUBLIC) could take that key and hold it, and
-- the leaves and signed checkpoints stopped, with no error, while events went on. The builder
-- now locks the one row of audit_tree_lock, which no role but the owner may lock (FOR UPDATE
-- needs UPDATE on the table; not even clued_runtime holds it).
CREATE TABLE audit_tree_lock (
  one boolean PRIMARY KEY DEFAULT true CHECK (one)
);
INSERT INTO audit_tree_lock DEFAULT VALUES;
REVOKE ALL ON audit_tree_lock FROM PUBLIC, clued_runtime;
-- audit_tree_append() runs with its owner's rights: the table is that role's, also when a
-- member of it migrates (the table would be the member's, and every append refused).
DO $$
BEGIN
  EXECUTE format('ALTER TABLE audit_tree_lock OWNER TO %I',
                 (SELECT r.rolname FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
                   WHERE p.oid = 'audit_tree_append(bigint, bigint[], bytea[], bigint, bytea, text)'::regprocedure));
END
$$;

-- Replaces audit_tree_append of 0056_leaves_backed_by_their_events.sql: the builder's lock is
-- the row of audit_tree_lock, not an advisory lock any role could hold.
CREATE OR REPLACE FUNCTION audit_tree_append(p_first bigint, p_seqs bigint[], p_leaves bytea[],
                                             p_size bigint, p_root bytea, p_note text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  n bigint;
  bad record;
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

-- The other advisory locks (the order of administrative writes, of a user's request keys, of
-- a clue's handlers) can be held by any role that connects as well. So CONNECT and TEMPORARY
-- are taken from PUBLIC and given to clued_runtime (the owner keeps them): an operator grants
-- CONNECT to another role (a reporting user) on purpose. Only the database's owner (or a
-- superuser) may change its privileges; another migrating role is told what to run.
DO $$
DECLARE
  db name := current_database();
BEGIN
  IF pg_has_role((SELECT datdba FROM pg_database WHERE datname = db), 'USAGE') THEN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', db);
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO clued_runtime', db);
  ELSE
    RAISE WARNING 'every role may connect to database %: run, as its owner, REVOKE CONNECT, TEMPORARY ON DATABASE % FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE % TO clued_runtime',
      quote_ident(db), quote_ident(db), quote_ident(db);
  END IF;
END
$$;
