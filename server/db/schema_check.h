#ifndef CLUED_DB_SCHEMA_CHECK_H
#define CLUED_DB_SCHEMA_CHECK_H

/* What clued's migrations say its functions and triggers are, and how the database's differ.
 *
 * The migrations are read as PostgreSQL would run them, in order: CREATE [OR REPLACE]
 * FUNCTION name(args) ... AS $tag$ body $tag$ defines (or replaces) a function of the schema
 * public, keyed by its name and input argument types, and DROP FUNCTION removes one; CREATE
 * TRIGGER, DROP TRIGGER, DROP TABLE and ALTER TABLE ... ENABLE/DISABLE TRIGGER do the same
 * for triggers (CREATE RULE on a table of public is an error: the check reports every rule).
 * What is left is what the database must hold: each function's final body,
 * which PostgreSQL keeps exactly as the text between the dollar quotes (pg_proc.prosrc), with
 * the attributes its last CREATE and the ALTER FUNCTION statements since gave it (language,
 * return type, volatility, strictness, SECURITY DEFINER, LEAKPROOF, PARALLEL, SET clauses), and
 * each trigger's table, timing and events (with UPDATE OF columns), its WHEN condition, the
 * function it calls, and that it fires; and, whatever the migrations say, no rule on a table
 * of public and no EXECUTE on a SECURITY DEFINER function for any role but its owner and
 * clued_runtime.
 *
 * Nothing here touches the database: schema_catalog_sql is the one query that reads what the
 * database holds, and schema_compare() judges its rows. db/migrate.c runs it with blocking
 * libpq (serve's start-up, migrate --repair), service/schema_watch.c on the pool. A statement
 * this reader cannot follow (a single-quoted or SQL-standard body, a renamed function) is an
 * error, never a guess: the check on a freshly migrated database must find nothing. */

#include <stddef.h>

typedef struct schema_expect schema_expect_t;

/** One difference between the database and the migrations. */
typedef struct schema_diff {
  char *message; /* "function f(bigint) differs from its definition in 0037_x.sql: ..." */
  char *repair;  /* SQL (one or more statements) that makes it what the migrations say */
} schema_diff_t;

/**
 * One row of schema_catalog_sql. Strings are borrowed from the result for the call.
 * kind 'f': a function of the schema public (name, args = its input argument types as
 * oidvectortypes() prints them, ident = its regprocedure text, hash = SHA-256 of its prosrc,
 * lower-case hex). kind 't': a trigger of a table of public that PostgreSQL did not make
 * itself (name, args = its table, hash = the function it calls: a name, or a regprocedure
 * text when that function is not in public; tgtype, enabled as pg_trigger has them).
 * kind 'r': a rule on a table of public, but a view's own _RETURN (name, args = its table,
 * ident = "rule ON table" quoted for DROP RULE, attrs = "ON UPDATE DO INSTEAD" or the like).
 * kind 'g': one grantee of EXECUTE on a function of public other than its owner and
 * clued_runtime (name, args and ident as for 'f'; hash = the grantee, PUBLIC or a role's name
 * quoted as needed; attrs = the role that granted it when not the owner, else NULL).
 * kind 'v': the highest version in schema_migrations (args).
 * kind 's': a setting of the session that decides whether clued's triggers fire (name, and
 * args its value): session_replication_role, which must be origin.
 * attrs and config: for a function, its attributes ("vpfffs plpgsql bigint": provolatile,
 * proparallel, then t or f for proisstrict, prosecdef, proleakproof, proretset, then its
 * language and format_type() of its return type) and its proconfig entries, sorted and
 * newline-joined (NULL: none); for a trigger, its UPDATE OF columns, sorted and ", "-joined,
 * and its WHEN condition as pg_get_triggerdef() prints it (NULL: none).
 */
typedef struct schema_row {
  char kind;
  const char *name;
  const char *args;
  const char *ident;
  const char *hash;
  int tgtype;
  char enabled;
  const char *attrs;
  const char *config;
} schema_row_t;

/** The catalog query: columns kind, name, args, ident, hash, tgtype, enabled, attrs, config. */
extern const char schema_catalog_sql[];

/** A new, empty expectation. Returns NULL when out of memory. */
schema_expect_t *schema_expect_new(void);

/** Free e (NULL is fine). */
void schema_expect_free(schema_expect_t *e);

/**
 * Read one migration (file: its name NNNN_name.sql, copied), after those added before it. Returns
 * 0, -1 with the reason (file and line) in err, or -ENOMEM.
 */
int schema_expect_add(schema_expect_t *e, const char *file, const char *sql, size_t len, char *err,
                      size_t errlen) __attribute__((warn_unused_result));

/** The highest version of the migrations added (their names' leading number). */
long long schema_expect_version(const schema_expect_t *e);

/** How many CREATE [OR REPLACE] FUNCTION statements of the schema public were read. */
size_t schema_expect_creates(const schema_expect_t *e);

/** The functions the migrations leave. */
size_t schema_expect_nfunctions(const schema_expect_t *e);

/**
 * The i-th of them: name, argument types ("bigint, bigint[]"), body and the file of its last
 * definition. Any out-parameter may be NULL.
 */
void schema_expect_function(const schema_expect_t *e, size_t i, const char **name,
                            const char **args, const char **body, size_t *body_len,
                            const char **file);

/** The triggers the migrations leave. */
size_t schema_expect_ntriggers(const schema_expect_t *e);

/** The i-th of them: name, table, function called, tgtype bits, enabled ('O' or 'D', ...). */
void schema_expect_trigger(const schema_expect_t *e, size_t i, const char **name,
                           const char **table, const char **func, int *tgtype, char *enabled);

/**
 * The i-th function's attributes as the migrations leave them, in schema_row_t's attrs and
 * config forms (config "" when there is none). The strings live as long as e.
 */
void schema_expect_function_attrs(const schema_expect_t *e, size_t i, const char **attrs,
                                  const char **config);

/**
 * The i-th trigger's UPDATE OF columns (sorted, ", "-joined; "" when none) and its WHEN
 * condition as written in its migration (NULL when none). Any out-parameter may be NULL.
 */
void schema_expect_trigger_when(const schema_expect_t *e, size_t i, const char **columns,
                                const char **when);

/**
 * Compare rows (schema_catalog_sql's) with e: an overload of one of clued's function names
 * that the migrations do not define, a function whose body or attributes differ or that is
 * missing, EXECUTE on a function the migrations leave SECURITY DEFINER for a role other than
 * its owner and clued_runtime, a trigger that is missing, calls another function, fires on
 * other events or columns or under another WHEN condition, or is not enabled, and any rule on
 * a table of public (the migrations define none).
 * Other functions and triggers are not clued's and are not judged. A row of kind 'v' newer
 * than the migrations sets *newer to its version (0 otherwise; newer may be NULL) and the
 * comparison still runs. The differences go to *out (*nout of them; free with
 * schema_diffs_free), rules first, then extra overloads, functions, EXECUTE grants and
 * triggers, each with the SQL that repairs it in that order. Returns 0 or -ENOMEM (nothing
 * returned).
 */
int schema_compare(const schema_expect_t *e, const schema_row_t *rows, size_t nrows,
                   schema_diff_t **out, size_t *nout, long long *newer)
    __attribute__((warn_unused_result));

/** Free what schema_compare() returned. */
void schema_diffs_free(schema_diff_t *d, size_t n);

#endif
