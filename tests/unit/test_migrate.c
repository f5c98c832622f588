/* The migration runner against a real PostgreSQL: fresh database, re-runs, new files,
 * changed files, failures, concurrent runners, bad directories; then the real migrations/
 * with checks of the audit trail's append-only rule and hash chain, recomputed here. */

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "db/db.h"
#include "db/migrate.h"
#include "log.h"
#include "pg_fixture.h"

static pg_fixture_t pg;

/* One scratch database and one scratch migrations directory per test. */
typedef struct mctx {
  char db[128];
  char conninfo[1024];
  char dir[64];
  PGconn *conn; /* for checks, opened lazily */
  char *logbuf;
  size_t loglen;
  FILE *log;
} mctx_t;

static int mctx_setup(void **state) {
  mctx_t *m = calloc(1, sizeof(*m));

  if (!m || pgfx_create_db(&pg, "test_migrate", m->db, sizeof(m->db)) != 0)
    return -1;
  pgfx_conninfo(&pg, m->db, m->conninfo, sizeof(m->conninfo));
  snprintf(m->dir, sizeof(m->dir), "/tmp/clued-migrations.XXXXXX");
  if (!mkdtemp(m->dir))
    return -1;
  m->log = open_memstream(&m->logbuf, &m->loglen);
  log_set_stream(m->log); /* what db_migrate logs, for the checks */
  *state = m;
  return m->log ? 0 : -1;
}

static int mctx_teardown(void **state) {
  mctx_t *m = *state;
  char cmd[128];

  if (m->conn)
    PQfinish(m->conn);
  log_set_stream(NULL);
  fclose(m->log);
  free(m->logbuf);
  pgfx_drop_db(&pg, m->db);
  snprintf(cmd, sizeof(cmd), "rm -rf %s", m->dir);
  if (system(cmd) != 0)
    fprintf(stderr, "test_migrate: cannot remove %s\n", m->dir);
  free(m);
  return 0;
}

static const char *logtext(mctx_t *m) {
  fflush(m->log);
  return m->logbuf ? m->logbuf : "";
}

static void clear_log(mctx_t *m) {
  fflush(m->log);
  rewind(m->log);
  fflush(m->log);
  if (m->logbuf)
    m->logbuf[0] = '\0';
}

static void write_file(mctx_t *m, const char *name, const char *content) {
  char path[256];
  FILE *f;

  snprintf(path, sizeof(path), "%s/%s", m->dir, name);
  f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(fputs(content, f) >= 0, 1);
  assert_int_equal(fclose(f), 0);
}

static PGconn *conn(mctx_t *m) {
  if (!m->conn)
    m->conn = pgfx_connect(&pg, m->db);
  assert_non_null(m->conn);
  return m->conn;
}

/* The first value of sql as a string in buf. */
static const char *value(mctx_t *m, const char *sql, char *buf, size_t len) {
  assert_int_equal(pgfx_value(conn(m), sql, buf, len), 0);
  return buf;
}

static void sha256_hex(const char *s, size_t len, char out[65]) {
  unsigned char md[32];
  unsigned int n = 0;

  assert_int_equal(EVP_Digest(s, len, md, &n, EVP_sha256(), NULL), 1);
  for (unsigned i = 0; i < n; i++)
    snprintf(out + 2 * i, 3, "%02x", md[i]);
}

#define FILE_A "-- first\nCREATE TABLE a (x int);\nINSERT INTO a VALUES (1);\n"
#define FILE_B "CREATE TABLE b (s text);\nINSERT INTO b VALUES ('线索 ü');\n"

/* ---- the runner -------------------------------------------------------------------------------
 */

static void test_fresh_then_noop(void **state) {
  mctx_t *m = *state;
  char first[64], buf[512], before[512], sha[65], want[256];

  write_file(m, "0001_a.sql", FILE_A);
  write_file(m, "0002_b.sql", FILE_B);
  write_file(m, "README.md", "not a migration\n");
  assert_int_equal(db_migrations_pending(m->conninfo, m->dir, first, sizeof(first)), 2);
  assert_string_equal(first, "0001_a.sql");

  assert_int_equal(db_migrate(m->conninfo, m->dir, 0), 0);
  assert_non_null(strstr(logtext(m), "applied 0001_a.sql"));
  assert_non_null(strstr(logtext(m), "applied 0002_b.sql"));
  assert_string_equal(value(m, "SELECT s FROM b", buf, sizeof(buf)), "线索 ü");
  sha256_hex(FILE_A, strlen(FILE_A), sha);
  snprintf(want, sizeof(want), "1|0001_a.sql|%s", sha);
  assert_string_equal(value(m,
                            "SELECT version || '|' || name || '|' || checksum FROM "
                            "schema_migrations WHERE version = 1",
                            buf, sizeof(buf)),
                      want);
  assert_string_equal(value(m, "SELECT count(*) FROM schema_migrations WHERE applied_at <= now()",
                            buf, sizeof(buf)),
                      "2");
  assert_int_equal(db_migrations_pending(m->conninfo, m->dir, first, sizeof(first)), 0);
  assert_string_equal(first, "");

  /* Again: nothing to do, nothing re-run. */
  value(m, "SELECT string_agg(applied_at::text, ',' ORDER BY version) FROM schema_migrations",
        before, sizeof(before));
  clear_log(m);
  assert_int_equal(db_migrate(m->conninfo, m->dir, 0), 0);
  assert_non_null(strstr(logtext(m), "up to date"));
  assert_null(strstr(logtext(m), "applied 0001"));
  assert_string_equal(
      value(m, "SELECT string_agg(applied_at::text, ',' ORDER BY version) FROM schema_migrations",
            buf, sizeof(buf)),
      before);
  assert_string_equal(value(m, "SELECT count(*) FROM a", buf, sizeof(buf)), "1");

  /* A new file is pending, then applied. */
  write_file(m, "0003_c.sql", "ALTER TABLE a ADD COLUMN y int;");
  assert_int_equal(db_migrations_pending(m->conninfo, m->dir, first, sizeof(first)), 1);
  assert_string_equal(first, "0003_c.sql");
  assert_int_equal(db_migrate(m->conninfo, m->dir, 0), 0);
  assert_int_equal(db_migrations_pending(m->conninfo, m->dir, NULL, 0), 0);
  assert_string_equal(value(m, "SELECT max(version) FROM schema_migrations", buf, sizeof(buf)),
                      "3");
}

static void test_changed_file_refused(void **state) {
  mctx_t *m = *state;
  char buf[64], from[256], to[256];

  write_file(m, "0001_a.sql", FILE_A);
  assert_int_equal(db_migrate(m->conninfo, m->dir, 0), 0);
  write_file(m, "0001_a.sql", FILE_A "-- an innocent edit\n");
  write_file(m, "0002_d.sql", "CREATE TABLE d (x int);");
  clear_log(m);
  assert_int_equal(db_migrate(m->conninfo, m->dir, 0), DB_MIGRATE_ECHECKSUM);
  assert_non_null(strstr(logtext(m), "0001_a.sql was changed after it was applied"));
  /* It stopped before applying anything. */
  assert_string_equal(value(m, "SELECT to_regclass('d') IS NULL", buf, sizeof(buf)), "t");
  assert_int_equal(db_migrations_pending(m->conninfo, m->dir, NULL, 0), DB_MIGRATE_ECHECKSUM);

  /* Renaming an applied file is refused too. */
  write_file(m, "0001_a.sql", FILE_A);
  snprintf(from, sizeof(from), "%s/0001_a.sql", m->dir);
  snprintf(to, sizeof(to), "%s/0001_renamed.sql", m->dir);
  assert_int_equal(rename(from, to), 0);
  clear_log(m);
  assert_int_equal(db_migrate(m->conninfo, m->dir, 0), DB_MIGRATE_ECHECKSUM);
  assert_non_null(strstr(logtext(m), "cannot be renamed"));
}

static void test_failed_migration_rolls_back(void **state) {
  mctx_t *m = *state;
  char buf[64];

  write_file(m, "0001_a.sql", FILE_A);
  write_file(m, "0002_bad.sql",
             "-- 线索\nCREATE TABLE partial (x int);\n\nSELECT no_such_column FROM partial;\n");
  write_file(m, "0003_after.sql", "CREATE TABLE after_bad (x int);");
  assert_int_equal(db_migrate(m->conninfo, m->dir, 0), DB_MIGRATE_ESQL);
  assert_non_null(strstr(logtext(m), "applied 0001_a.sql"));
  assert_non_null(strstr(logtext(m), "0002_bad.sql failed at line 4"));
  assert_non_null(strstr(logtext(m), "42703"));
  assert_string_equal(value(m,
                            "SELECT to_regclass('partial') IS NULL AND "
                            "to_regclass('after_bad') IS NULL",
                            buf, sizeof(buf)),
                      "t");
  assert_string_equal(value(m, "SELECT count(*) FROM schema_migrations", buf, sizeof(buf)), "1");
  assert_int_equal(db_migrations_pending(m->conninfo, m->dir, buf, sizeof(buf)), 2);
  assert_string_equal(buf, "0002_bad.sql");
}

static void test_out_of_order_refused(void **state) {
  mctx_t *m = *state;

  write_file(m, "0001_a.sql", FILE_A);
  write_file(m, "0005_b.sql", FILE_B);
  assert_int_equal(db_migrate(m->conninfo, m->dir, 0), 0);
  write_file(m, "0003_late.sql", "SELECT 1;");
  clear_log(m);
  assert_int_equal(db_migrate(m->conninfo, m->dir, 0), DB_MIGRATE_EFILE);
  assert_non_null(strstr(logtext(m), "0003_late.sql is older than the applied version 5"));
}

static void test_concurrent_runners(void **state) {
  enum { NRUNNERS = 4 };
  mctx_t *m = *state;
  pid_t pids[NRUNNERS];
  char buf[256];

  write_file(m, "0001_runs.sql",
             "CREATE TABLE runs (file text);\nINSERT INTO runs VALUES ('0001');\n"
             "SELECT pg_sleep(0.3);\n");
  write_file(m, "0002_more.sql", "INSERT INTO runs VALUES ('0002');\n");
  write_file(m, "0003_last.sql", "INSERT INTO runs VALUES ('0003');\nSELECT pg_sleep(0.2);\n");
  fflush(NULL);
  for (int i = 0; i < NRUNNERS; i++) {
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0) {
      FILE *quiet = fopen("/dev/null", "w");
      int rc;
      log_set_stream(quiet);
      rc = db_migrate(m->conninfo, m->dir, 0);
      _exit(rc == 0 ? 0 : 10 - rc);
    }
  }
  for (int i = 0; i < NRUNNERS; i++) {
    int status;
    assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
  }
  assert_string_equal(
      value(m, "SELECT string_agg(file, ',' ORDER BY file) FROM runs", buf, sizeof(buf)),
      "0001,0002,0003");
  assert_string_equal(value(m, "SELECT count(*) FROM schema_migrations", buf, sizeof(buf)), "3");
}

static void test_bad_directories(void **state) {
  mctx_t *m = *state;
  char sub[128];

  /* Empty: the wrong directory (--migrations /etc), refused and named rather than read as
   * nothing to do, or by serve as a schema newer than every file it lacks. */
  clear_log(m);
  assert_int_equal(db_migrate(m->conninfo, m->dir, 0), DB_MIGRATE_EDIR);
  assert_non_null(strstr(logtext(m), "holds no migrations"));
  assert_int_equal(db_migrations_pending(m->conninfo, m->dir, NULL, 0), DB_MIGRATE_EDIR);
  /* Missing. */
  snprintf(sub, sizeof(sub), "%s/missing", m->dir);
  assert_int_equal(db_migrate(m->conninfo, sub, 0), DB_MIGRATE_EDIR);
  assert_int_equal(db_migrations_pending(m->conninfo, sub, NULL, 0), DB_MIGRATE_EDIR);
  /* A .sql file that is not NNNN_name.sql is refused, not skipped. */
  write_file(m, "create_things.sql", "SELECT 1;");
  clear_log(m);
  assert_int_equal(db_migrate(m->conninfo, m->dir, 0), DB_MIGRATE_EFILE);
  assert_non_null(strstr(logtext(m), "create_things.sql: not a migration name"));
  snprintf(sub, sizeof(sub), "%s/create_things.sql", m->dir);
  assert_int_equal(unlink(sub), 0);
  /* Two files with one version. */
  write_file(m, "0001_a.sql", FILE_A);
  write_file(m, "1_b.sql", FILE_B);
  clear_log(m);
  assert_int_equal(db_migrate(m->conninfo, m->dir, 0), DB_MIGRATE_EFILE);
  assert_non_null(strstr(logtext(m), "have the same version"));
  /* No database. */
  snprintf(sub, sizeof(sub), "%s/1_b.sql", m->dir);
  assert_int_equal(unlink(sub), 0);
  clear_log(m);
  assert_int_equal(db_migrate("host=/nonexistent/clued port=1 dbname=x", m->dir, 0),
                   DB_MIGRATE_ECONNECT);
  assert_non_null(strstr(logtext(m), "cannot connect"));
  assert_int_equal(
      db_migrations_pending("host=/nonexistent/clued port=1 dbname=x", m->dir, NULL, 0),
      DB_MIGRATE_ECONNECT);
  assert_string_equal(db_migrate_strerror(DB_MIGRATE_ECHECKSUM),
                      "an applied migration was changed");
}

/* ---- the real schema
 * ------------------------------------------------------------------------------ */

/* Microseconds since the epoch from "YYYY-MM-DD HH:MM:SS[.ffffff]+00" (TimeZone UTC). */
static long long parse_utc_micros(const char *s) {
  struct tm tm;
  int y, mo, d, h, mi, sec, n = 0;
  long long us = 0;
  int digits = 0;

  assert_int_equal(sscanf(s, "%d-%d-%d %d:%d:%d%n", &y, &mo, &d, &h, &mi, &sec, &n), 6);
  if (s[n] == '.')
    for (n++; s[n] >= '0' && s[n] <= '9'; n++, digits++)
      us = us * 10 + (s[n] - '0');
  for (; digits < 6; digits++)
    us *= 10;
  assert_string_equal(s + n, "+00");
  memset(&tm, 0, sizeof(tm));
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  return (long long)timegm(&tm) * 1000000 + us;
}

/* Append "<bytes>:<text>\n" to buf. */
static void field(char *buf, size_t len, const char *text) {
  size_t n = strlen(buf);
  snprintf(buf + n, len - n, "%zu:%s\n", strlen(text), text);
}

/* The project's migrations, however many there are by now. */
static int count_sql_files(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;

  assert_non_null(d);
  while ((e = readdir(d)) != NULL) {
    size_t len = strlen(e->d_name);
    n += len > 4 && strcmp(e->d_name + len - 4, ".sql") == 0;
  }
  closedir(d);
  return n;
}

static void test_real_migrations_and_audit_chain(void **state) {
  mctx_t *m = *state;
  PGconn *c;
  PGresult *r;
  char buf[256], first[64];
  char prev[2][65] = {"", ""};

  assert_int_equal(db_migrations_pending(m->conninfo, NULL, first, sizeof(first)),
                   count_sql_files(db_migrations_default_dir()));
  assert_string_equal(first, "0001_identity.sql");
  assert_int_equal(db_migrate(m->conninfo, NULL, 0), 0);
  assert_non_null(strstr(logtext(m), "applied 0001_identity.sql"));
  assert_int_equal(db_migrations_pending(m->conninfo, NULL, NULL, 0), 0);
  assert_int_equal(db_migrate(m->conninfo, db_migrations_default_dir(), 0), 0);

  c = conn(m);
  assert_int_equal(pgfx_exec(c, "SET TimeZone = 'UTC'"), 0);
  /* Two subjects, interleaved, with NULLs, Unicode and JSON details. */
  assert_int_equal(
      pgfx_exec(c, "SELECT audit_append(1, 10, 'submit', 'clue', 5, 10, NULL, 'ACCEPTED', "
                   "'举报 线索', '{\"title\": \"线索\", \"n\": 1}');"
                   "SELECT audit_append(2, 20, 'create', 'user', 9, NULL, NULL, NULL, NULL, NULL);"
                   "SELECT audit_append(1, 10, 'move', 'clue', 5, 10, 'ACCEPTED', "
                   "'PRELIMINARY_CHECK', 'needs a check', '{}');"
                   "SELECT audit_append(NULL, NULL, 'note', 'clue', 5, 10, NULL, NULL, '', NULL);"),
      0);

  r = PQexec(c, "SELECT seq, at, actor_user_id, actor_unit_id, action, subject_type, subject_id, "
                "from_state, to_state, reason, details, encode(prev_hash, 'hex'), "
                "encode(hash, 'hex') FROM audit_events ORDER BY seq");
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  assert_int_equal(PQntuples(r), 4);
  for (int i = 0; i < PQntuples(r); i++) {
    char canon[2048] = "", micros[32], hash[65];
    int chain = strcmp(PQgetvalue(r, i, 5), "clue") == 0 ? 0 : 1;

    snprintf(micros, sizeof(micros), "%lld", parse_utc_micros(PQgetvalue(r, i, 1)));
    field(canon, sizeof(canon), PQgetvalue(r, i, 0));
    field(canon, sizeof(canon), micros);
    for (int col = 2; col <= 11; col++)
      field(canon, sizeof(canon), PQgetvalue(r, i, col)); /* NULL reads as "" */
    sha256_hex(canon, strlen(canon), hash);
    assert_string_equal(PQgetvalue(r, i, 12), hash);
    /* Each event links to the previous event of its own subject. */
    assert_string_equal(PQgetvalue(r, i, 11), prev[chain]);
    snprintf(prev[chain], sizeof(prev[chain]), "%s", hash);
  }
  assert_string_equal(PQgetvalue(r, 0, 10), "{\"n\": 1, \"title\": \"线索\"}");
  PQclear(r);
  /* The chain heads point at the last event of each subject. */
  value(m, "SELECT encode(last_hash, 'hex') FROM audit_heads WHERE subject_type = 'clue'", buf,
        sizeof(buf));
  assert_string_equal(buf, prev[0]);

  /* Append-only, whoever asks (this connection is a superuser). */
  r = PQexec(c, "UPDATE audit_events SET reason = 'rewritten' WHERE seq = 1");
  assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
  assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501");
  PQclear(r);
  r = PQexec(c, "DELETE FROM audit_events WHERE seq = 2");
  assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
  PQclear(r);
  r = PQexec(c, "TRUNCATE audit_events");
  assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
  PQclear(r);
  assert_string_equal(value(m, "SELECT count(*) FROM audit_events", buf, sizeof(buf)), "4");
}

static int group_setup(void **state) {
  (void)state;
  if (pgfx_start(&pg) != 0) {
    fprintf(stderr, "test_migrate: cannot start PostgreSQL\n");
    return -1;
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  pgfx_stop(&pg);
  return 0;
}

#define T(f) cmocka_unit_test_setup_teardown(f, mctx_setup, mctx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_fresh_then_noop),
      T(test_changed_file_refused),
      T(test_failed_migration_rolls_back),
      T(test_out_of_order_refused),
      T(test_concurrent_runners),
      T(test_bad_directories),
      T(test_real_migrations_and_audit_chain),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
