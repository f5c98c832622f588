#ifndef CLUED_TEST_PG_FIXTURE_H
#define CLUED_TEST_PG_FIXTURE_H

/* A PostgreSQL server for unit tests that need one: the cluster named by CLUED_TEST_PGHOST /
 * CLUED_TEST_PGPORT when set (scripts/test starts one), otherwise a throwaway cluster started
 * with scripts/pg-test and stopped at the end. Tests work in scratch databases they create
 * and drop. Header-only: each unit test is a program of its own. */

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef CLUED_MIGRATIONS_DIR
#error "CLUED_MIGRATIONS_DIR is set by the build"
#endif
#define PGFX_SCRIPT CLUED_MIGRATIONS_DIR "/../scripts/pg-test"

typedef struct pg_fixture {
  char host[256];
  char port[16];
  char owned_dir[256]; /* set when this process started the cluster */
} pg_fixture_t;

static inline int pgfx_start(pg_fixture_t *f) {
  const char *host = getenv("CLUED_TEST_PGHOST");
  const char *port = getenv("CLUED_TEST_PGPORT");
  char cmd[512], line[512];
  FILE *out;

  memset(f, 0, sizeof(*f));
  if (host && *host) {
    snprintf(f->host, sizeof(f->host), "%s", host);
    snprintf(f->port, sizeof(f->port), "%s", port && *port ? port : "5432");
    return 0;
  }
  snprintf(f->owned_dir, sizeof(f->owned_dir), "/tmp/clued-unit-pg.XXXXXX");
  if (!mkdtemp(f->owned_dir))
    return -1;
  snprintf(cmd, sizeof(cmd), "%s start %s", PGFX_SCRIPT, f->owned_dir);
  out = popen(cmd, "r");
  if (!out)
    return -1;
  if (!fgets(line, sizeof(line), out) || sscanf(line, "%255s %15s", f->host, f->port) != 2) {
    pclose(out);
    return -1;
  }
  return pclose(out) == 0 ? 0 : -1;
}

/* Start a cluster of this process's own, whatever the environment says (for tests that stop
 * and restart the server). */
static inline int pgfx_start_private(pg_fixture_t *f) {
  const char *host = getenv("CLUED_TEST_PGHOST");
  char *saved = host ? strdup(host) : NULL;
  int rc;

  unsetenv("CLUED_TEST_PGHOST");
  rc = pgfx_start(f);
  if (saved) {
    setenv("CLUED_TEST_PGHOST", saved, 1);
    free(saved);
  }
  return rc;
}

/* pg_ctl stop or start on a cluster this process owns; 0 on success. Blocks until done. */
static inline int pgfx_ctl(const pg_fixture_t *f, const char *action) {
  char cmd[2048];

  if (!f->owned_dir[0])
    return -1;
  snprintf(cmd, sizeof(cmd),
           "bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1); "
           "as=; [ \"$(id -u)\" -eq 0 ] && as='runuser -u postgres --'; "
           "if [ %s = stop ]; then $as $bin/pg_ctl -D %s/data -m fast -w stop >/dev/null; "
           "else $as $bin/pg_ctl -D %s/data -l %s/postgres.log -w -o \"-k %s "
           "-c listen_addresses='' -p %s -c fsync=off\" start >/dev/null; fi",
           action, f->owned_dir, f->owned_dir, f->owned_dir, f->owned_dir, f->port);
  return system(cmd) == 0 ? 0 : -1;
}

static inline void pgfx_stop(pg_fixture_t *f) {
  char cmd[512];

  if (!f->owned_dir[0])
    return;
  snprintf(cmd, sizeof(cmd), "%s stop %s", PGFX_SCRIPT, f->owned_dir);
  if (system(cmd) != 0)
    fprintf(stderr, "pg_fixture: stopping %s failed\n", f->owned_dir);
  f->owned_dir[0] = '\0';
}

static inline void pgfx_conninfo(const pg_fixture_t *f, const char *db, char *buf, size_t len) {
  snprintf(buf, len, "host=%s port=%s user=postgres dbname=%s", f->host, f->port, db);
}

/* A blocking connection for test set-up and checks; NULL (and a message) on failure. */
static inline PGconn *pgfx_connect(const pg_fixture_t *f, const char *db) {
  char ci[600];
  PGconn *c;

  pgfx_conninfo(f, db, ci, sizeof(ci));
  c = PQconnectdb(ci);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "pg_fixture: %s", PQerrorMessage(c));
    PQfinish(c);
    return NULL;
  }
  return c;
}

/* Run sql on c; returns 0 if it succeeded. */
static inline int pgfx_exec(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

  if (!ok)
    fprintf(stderr, "pg_fixture: %s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
  return ok ? 0 : -1;
}

/* The first value of a one-row query, copied into buf ("" for NULL); 0 on success. */
static inline int pgfx_value(PGconn *c, const char *sql, char *buf, size_t len) {
  PGresult *r = PQexec(c, sql);
  int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) >= 1;

  if (ok)
    snprintf(buf, len, "%s", PQgetvalue(r, 0, 0));
  else
    fprintf(stderr, "pg_fixture: %s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
  return ok ? 0 : -1;
}

/* Create a fresh database named prefix_<pid>_<n> into name; 0 on success. */
static inline int pgfx_create_db(const pg_fixture_t *f, const char *prefix, char *name,
                                 size_t len) {
  static unsigned counter;
  char sql[256];
  PGconn *c = pgfx_connect(f, "postgres");
  int rc;

  if (!c)
    return -1;
  snprintf(name, len, "%s_%ld_%u", prefix, (long)getpid(), ++counter);
  snprintf(sql, sizeof(sql), "CREATE DATABASE \"%s\"", name);
  rc = pgfx_exec(c, sql);
  PQfinish(c);
  return rc;
}

static inline void pgfx_drop_db(const pg_fixture_t *f, const char *name) {
  char sql[256];
  PGconn *c = pgfx_connect(f, "postgres");

  if (!c)
    return;
  snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", name);
  (void)pgfx_exec(c, sql);
  PQfinish(c);
}

#endif
