-- The SECURITY DEFINER functions run with their owner's rights, past the append-only rules
-- the runtime role is held to: only clued's runtime role (and the owner) may call them.
-- PostgreSQL gives EXECUTE on every new function to PUBLIC, and 0004, 0016, 0030 and 0056
-- never took it back: any role that could log in to the database (a reporting user with no
-- grant at all) could append events as anyone, hold a seq open to stall the log's readers,
-- or write a checkpoint row that halts the tree's builder.
REVOKE EXECUTE ON FUNCTION audit_append(bigint, bigint, text, text, bigint, bigint, text, text,
                                        text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION audit_append(bigint, bigint, text, text, bigint, bigint, text, text,
                                        text, jsonb, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION audit_append_many(bigint[], bigint[], text[], text[], bigint[],
                                             bigint[], text[], text[], text[], jsonb[],
                                             bigint[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION audit_tree_append(bigint, bigint[], bytea[], bigint, bytea, text)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_append(bigint, bigint, text, text, bigint, bigint, text, text,
                                       text, jsonb) TO clued_runtime;
GRANT EXECUTE ON FUNCTION audit_append(bigint, bigint, text, text, bigint, bigint, text, text,
                                       text, jsonb, bigint) TO clued_runtime;
GRANT EXECUTE ON FUNCTION audit_append_many(bigint[], bigint[], text[], text[], bigint[],
                                            bigint[], text[], text[], text[], jsonb[],
                                            bigint[]) TO clued_runtime;
GRANT EXECUTE ON FUNCTION audit_tree_append(bigint, bigint[], bytea[], bigint, bytea, text)
  TO clued_runtime;
