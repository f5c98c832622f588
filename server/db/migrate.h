#ifndef CLUED_DB_MIGRATE_H
#define CLUED_DB_MIGRATE_H

/* Schema migrations: files named NNNN_name.sql (NNNN the version, digits) applied in version
 * order, each in its own transaction, under a PostgreSQL advisory lock so that concurrent
 * runners apply each file once. schema_migrations records version, file name, the file's
 * SHA-256 (hex) and when it was applied; an applied file whose content changed stops the run.
 *
 * These calls use blocking libpq: they are for `clued migrate` and the start of `clued
 * serve`, before the event loop runs, never on the loop. A migration cannot contain
 * statements that refuse to run in a transaction block (CREATE INDEX CONCURRENTLY ...). */

#include <libpq-fe.h>
#include <stddef.h>
#include <stdio.h>

/** Error codes (DB_ENOMEM from db.h is also returned). */
enum {
  DB_MIGRATE_ECONNECT = -20,    /* cannot connect, or the session set-up failed */
  DB_MIGRATE_EDIR = -21,        /* the migrations directory cannot be read, or holds no
                                   migration (a wrong --migrations) */
  DB_MIGRATE_EFILE = -22,       /* a file is unreadable, misnamed, contains NUL, or a version
                                   appears twice */
  DB_MIGRATE_ECHECKSUM = -23,   /* an applied migration's file changed or was renamed */
  DB_MIGRATE_ESQL = -24,        /* a migration failed and was rolled back */
  DB_MIGRATE_ENEWER = -25,      /* the database has a migration applied that this binary does
                                   not know: its schema is newer (db_migrations_pending) */
  DB_MIGRATE_EUNREADABLE = -26, /* the role may not read schema_migrations: the migrations
                                   that grant clued_runtime the schema are pending, or the
                                   role is not in clued_runtime (db_migrations_pending) */
  DB_MIGRATE_EROLE = -27,       /* the role may not migrate: a superuser that does not own the
                                   schema, or a role neither its owner nor a member of it
                                   (db_migrate) */
};

/** One migration built into the binary: migrations/NNNN_name.sql as it was at build time. */
typedef struct db_embedded_migration {
  const char *name; /* the file name */
  const char *sql;  /* its exact bytes, NUL-terminated */
  size_t len;
} db_embedded_migration_t;

/** The migrations built in (cmake/embed_migrations.cmake), used when dir is NULL. */
extern const db_embedded_migration_t db_embedded_migrations[];
extern const size_t db_embedded_nmigrations;

/** The source tree's migrations directory the build embedded (CLUED_MIGRATIONS_DIR). */
const char *db_migrations_default_dir(void);

/**
 * A blocking session as the pool's are (db.h's DB_SESSION_PINS after the connection string's
 * own options), so that migrate, bootstrap and serve's start-up checks see what the running
 * server will. NULL when it cannot connect, or the database's encoding is neither UTF8 nor
 * SQL_ASCII (logged).
 */
PGconn *db_session_connect(const char *conninfo, const char *application);

/**
 * The schema version this binary expects: the highest built-in migration's version (0 with
 * none); its file name goes to *name when name is not NULL.
 */
long long db_schema_version(const char **name);

/**
 * Apply the pending migrations of dir (NULL: the built-in ones) to the database at conninfo,
 * as the role owning the schema (schema_migrations; on a database not migrated yet, the
 * database): a superuser that is not that role is refused (DB_MIGRATE_EROLE) unless
 * allow_superuser, since the objects it created would belong to it and the owner's later runs
 * could not replace them; a role neither the owner nor a member of it is refused too. A run that
 * finds the migration lock held logs once whom it waits for, then waits (a lock_timeout in
 * conninfo's options bounds the wait: DB_MIGRATE_ECONNECT). Progress and errors go to the log
 * (log.h). Migrations applied before a failure stay applied. Returns 0
 * or a negative error code above.
 */
int db_migrate(const char *conninfo, const char *dir, int allow_superuser)
    __attribute__((warn_unused_result));

/**
 * db_migrate, then make clued's functions and triggers what the migrations define
 * (db/schema_check.h): re-create a function whose body was replaced or that was dropped (with
 * the ALTER FUNCTION, GRANT and REVOKE statements the migrations made on it), drop an overload
 * of one of their names that no migration defines, re-create a trigger that was dropped or
 * replaced and enable one that was disabled. One transaction, checked before it commits: all
 * or nothing. Each repair is logged. Returns 0 or a negative error code above.
 */
int db_migrate_repair(const char *conninfo, const char *dir, int allow_superuser)
    __attribute__((warn_unused_result));

typedef struct schema_expect schema_expect_t;

/**
 * What the migrations of dir (NULL: the built-in ones) say clued's functions and triggers are
 * (db/schema_check.h), to *out (free with schema_expect_free). Errors are logged. Returns 0
 * or a negative error code above.
 */
int db_schema_expect(const char *dir, schema_expect_t **out) __attribute__((warn_unused_result));

/**
 * Compare clued's functions and triggers in the database at conninfo with what the
 * migrations of dir (NULL: the built-in ones) define, logging each difference as an error.
 * Returns how many differ (0: none), or a negative error code above.
 */
int db_schema_check(const char *conninfo, const char *dir) __attribute__((warn_unused_result));

/**
 * Count the migrations of dir (NULL: the built-in ones) not yet applied, without changing the
 * database; the first one's file name goes to first_pending (truncated to len, "" if none;
 * may be NULL). Also checks the applied ones' checksums, and refuses (DB_MIGRATE_ENEWER) a
 * database with a migration applied that dir does not have: a newer binary's, whose schema
 * this one may misread or miswrite, and (DB_MIGRATE_EUNREADABLE) one whose schema_migrations
 * the role may not read, saying whether migrations are pending or the role is not a member of
 * clued_runtime. Errors go to the log (log.h). Returns the count, or a negative error code
 * above.
 */
int db_migrations_pending(const char *conninfo, const char *dir, char *first_pending, size_t len)
    __attribute__((warn_unused_result));

/**
 * Is the role conninfo logs in as able to rewrite the audit record, by disabling the audit
 * triggers or writing past them: a superuser, the owner of the audit tables or of their schema,
 * a role with CREATEROLE, or a member of any of them or of pg_execute_server_program,
 * pg_write_server_files, pg_read_server_files or pg_write_all_data (migrate.c says why each)?
 * Returns 1 (and each reason, such as `role "x" is a superuser`, with the ALTER ROLE or REVOKE
 * that takes it away, joined by "; " in why, truncated to len), 0 when it is not, or a
 * negative error code above (logged).
 */
int db_role_privileged(const char *conninfo, char *why, size_t len)
    __attribute__((warn_unused_result));

/**
 * Does the primary conninfo reaches keep every commit on a synchronous standby before it
 * answers (db/replication.h)? Returns 1, 0 with the reason in why, or a negative error code
 * above (logged).
 */
int db_sync_replica(const char *conninfo, char *why, size_t len) __attribute__((warn_unused_result));

/** A short description of an error code above. */
const char *db_migrate_strerror(int rc);

#endif
