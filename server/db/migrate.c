/* The migration runner. Blocking libpq on purpose: it runs before the event loop. */

#include "db/migrate.h"

#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "audit/sha256.h"
#include "db/db.h"
#include "db/replication.h"
#include "db/schema_check.h"
#include "log.h"

#ifndef CLUED_MIGRATIONS_DIR
#define CLUED_MIGRATIONS_DIR "migrations"
#endif

/* Session-level advisory lock key shared by every runner of every clued version. */
#define MIGRATE_LOCK_KEY "hashtextextended('clued schema_migrations', 0)"
#define MIGRATE_LOCK_SQL "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")"
#define MIGRATE_TRY_LOCK_SQL "SELECT pg_try_advisory_lock(" MIGRATE_LOCK_KEY ")"

/* Who holds the lock. pg_locks shows every session's locks to any role, and pg_stat_activity
 * every session's role and application name; when its session started only for a session of
 * a role this one is a member of (or with pg_read_all_stats), NULL otherwise. A bigint advisory
 * key is shown split: its high half in classid, its low half in objid, objsubid 1. */
#define MIGRATE_LOCK_HOLDER_SQL                                                                    \
  "SELECT l.pid, a.usename, nullif(a.application_name, ''),"                                       \
  " to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"                 \
  " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"                                 \
  " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"                                \
  " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"             \
  " AND ((l.classid::int8 << 32) | l.objid::int8) = " MIGRATE_LOCK_KEY " LIMIT 1"

#define MIGRATE_TABLE_SQL                                                                          \
  "CREATE TABLE IF NOT EXISTS schema_migrations ("                                                 \
  " version bigint PRIMARY KEY,"                                                                   \
  " name text NOT NULL,"                                                                           \
  " checksum text NOT NULL,"                                                                       \
  " applied_at timestamptz NOT NULL DEFAULT now())"

typedef struct migration {
  long long version;
  char name[256]; /* the file name */
  char *sql;      /* the file's content, NUL-terminated */
  char sha[65];   /* SHA-256 of the content, lower-case hex */
} migration_t;

typedef struct migration_set {
  migration_t *v;
  size_t n, cap;
} migration_set_t;

/* libpq messages end with a newline (sometimes several lines); keep the first line. */
static const char *first_line(const char *msg, char *buf, size_t len) {
  size_t n = strcspn(msg ? msg : "", "\n");

  if (n >= len)
    n = len - 1;
  memcpy(buf, msg ? msg : "", n);
  buf[n] = '\0';
  return buf;
}

const char *db_migrations_default_dir(void) {
  return CLUED_MIGRATIONS_DIR;
}

const char *db_migrate_strerror(int rc) {
  switch (rc) {
  case 0:
    return "ok";
  case DB_ENOMEM:
    return "out of memory";
  case DB_MIGRATE_ECONNECT:
    return "cannot connect to the database";
  case DB_MIGRATE_EDIR:
    return "cannot read the migrations directory, or it holds no migrations";
  case DB_MIGRATE_EFILE:
    return "bad migration file";
  case DB_MIGRATE_ECHECKSUM:
    return "an applied migration was changed";
  case DB_MIGRATE_ESQL:
    return "a migration failed";
  case DB_MIGRATE_ENEWER:
    return "the schema is newer than this clued";
  case DB_MIGRATE_EUNREADABLE:
    return "the role may not read schema_migrations";
  case DB_MIGRATE_EROLE:
    return "the role may not migrate this database";
  default:
    return "unknown migration error";
  }
}

/* ---- the directory ------------------------------------------------------------------------ */

static void set_free(migration_set_t *set) {
  for (size_t i = 0; i < set->n; i++)
    free(set->v[i].sql);
  free(set->v);
  memset(set, 0, sizeof(*set));
}

/* 0: a migration name, version set; 1: not a migration (ignored); -1: ends in .sql but is not
 * NNNN_name.sql, which is refused rather than silently skipped. */
static int parse_name(const char *name, long long *version) {
  size_t len = strlen(name), digits = 0;
  const char *p;

  if (name[0] == '.' || len < 5 || strcmp(name + len - 4, ".sql") != 0)
    return 1;
  for (p = name; *p >= '0' && *p <= '9'; p++)
    digits++;
  if (digits == 0 || digits > 18 || *p != '_' || p + 1 >= name + len - 4)
    return -1;
  for (const char *q = p + 1; q < name + len - 4; q++)
    if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
          *q == '_' || *q == '-' || *q == '.'))
      return -1;
  *version = strtoll(name, NULL, 10);
  return 0;
}

static int sha256_hex(const char *data, size_t len, char out[65]) {
  uint8_t md[SHA256_LEN];

  if (sha256_digest(data, len, md) != 0)
    return -1;
  for (unsigned i = 0; i < SHA256_LEN; i++)
    snprintf(out + 2 * i, 3, "%02x", md[i]);
  return 0;
}

/* Read path into a new NUL-terminated buffer. */
static int read_file(const char *path, char **out, size_t *outlen) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL, *nbuf;
  size_t len = 0, cap = 0, n;

  if (!f)
    return DB_MIGRATE_EFILE;
  for (;;) {
    if (cap - len < 4096) {
      cap = cap ? cap * 2 : 16384;
      nbuf = realloc(buf, cap);
      if (!nbuf) {
        free(buf);
        fclose(f);
        return DB_ENOMEM;
      }
      buf = nbuf;
    }
    n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0)
      break;
  }
  if (ferror(f)) {
    free(buf);
    fclose(f);
    return DB_MIGRATE_EFILE;
  }
  fclose(f);
  buf[len] = '\0';
  *out = buf;
  *outlen = len;
  return 0;
}

static int cmp_version(const void *a, const void *b) {
  const migration_t *x = a, *y = b;
  return x->version < y->version ? -1 : x->version > y->version;
}

/* No NUL byte (SQL text), and the checksum recorded when applied. */
static int check_content(migration_t *m, size_t len, const char *where) {
  if (memchr(m->sql, '\0', len)) {
    log_error("%s: contains a NUL byte", where);
    return DB_MIGRATE_EFILE;
  }
  if (sha256_hex(m->sql, len, m->sha) != 0) {
    log_error("%s: cannot compute SHA-256", where);
    return DB_ENOMEM;
  }
  return 0;
}

static int check_versions(migration_set_t *set);

/* Load every migration of dir, sorted by version, with content and checksum. */
static int load_dir(const char *dir, migration_set_t *set) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int rc = 0;

  if (!d) {
    log_error("cannot open migrations directory %s: %s", dir, strerror(errno));
    return DB_MIGRATE_EDIR;
  }
  while (rc == 0 && (e = readdir(d))) {
    char path[4096];
    struct stat st;
    migration_t *m;
    long long version;
    size_t len;
    int kind = parse_name(e->d_name, &version);

    if (kind > 0)
      continue;
    if (kind < 0 || strlen(e->d_name) >= sizeof(m->name)) {
      log_error("%s/%s: not a migration name (want NNNN_name.sql)", dir, e->d_name);
      rc = DB_MIGRATE_EFILE;
      break;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
      log_error("%s: not a regular file", path);
      rc = DB_MIGRATE_EFILE;
      break;
    }
    if (set->n == set->cap) {
      size_t cap = set->cap ? set->cap * 2 : 16;
      migration_t *v = realloc(set->v, cap * sizeof(*v));
      if (!v) {
        rc = DB_ENOMEM;
        break;
      }
      set->v = v;
      set->cap = cap;
    }
    m = &set->v[set->n];
    memset(m, 0, sizeof(*m));
    m->version = version;
    snprintf(m->name, sizeof(m->name), "%s", e->d_name);
    rc = read_file(path, &m->sql, &len);
    if (rc != 0) {
      log_error("cannot read %s: %s", path, rc == DB_ENOMEM ? "out of memory" : strerror(errno));
      break;
    }
    set->n++;
    rc = check_content(m, len, path);
  }
  closedir(d);
  /* A directory with no migration at all is the wrong one (--migrations /etc): said so here,
   * rather than read as a schema newer than every file it lacks, or as nothing to do. */
  if (rc == 0 && set->n == 0) {
    log_error("%s holds no migrations (files named NNNN_name.sql): is it the right directory?",
              dir);
    rc = DB_MIGRATE_EDIR;
  }
  if (rc == 0)
    rc = check_versions(set);
  if (rc != 0)
    set_free(set);
  return rc;
}

/* The built-in migrations, checked exactly as files read from a directory are. */
static int load_embedded(migration_set_t *set) {
  int rc = 0;

  if ((set->v = calloc(db_embedded_nmigrations ? db_embedded_nmigrations : 1, sizeof(*set->v))) == NULL)
    return DB_ENOMEM;
  set->cap = db_embedded_nmigrations;
  for (size_t i = 0; rc == 0 && i < db_embedded_nmigrations; i++) {
    const db_embedded_migration_t *e = &db_embedded_migrations[i];
    migration_t *m = &set->v[set->n];
    if (parse_name(e->name, &m->version) != 0 || strlen(e->name) >= sizeof(m->name)) {
      log_error("built-in %s: not a migration name (want NNNN_name.sql)", e->name);
      rc = DB_MIGRATE_EFILE;
      break;
    }
    snprintf(m->name, sizeof(m->name), "%s", e->name);
    if ((m->sql = malloc(e->len + 1)) == NULL) {
      rc = DB_ENOMEM;
      break;
    }
    memcpy(m->sql, e->sql, e->len);
    m->sql[e->len] = '\0';
    set->n++;
    rc = check_content(m, e->len, e->name);
  }
  if (rc == 0)
    rc = check_versions(set);
  if (rc != 0)
    set_free(set);
  return rc;
}

long long db_schema_version(const char **name) {
  long long best = 0, v;
  const char *best_name = "";

  for (size_t i = 0; i < db_embedded_nmigrations; i++)
    if (parse_name(db_embedded_migrations[i].name, &v) == 0 && v > best) {
      best = v;
      best_name = db_embedded_migrations[i].name;
    }
  if (name)
    *name = best_name;
  return best;
}

static int load_set(const char *dir, migration_set_t *set) {
  return dir ? load_dir(dir, set) : load_embedded(set);
}

/* Versions sorted and unique. */
static int check_versions(migration_set_t *set) {
  int rc = 0;

  if (set->n > 1) {
    qsort(set->v, set->n, sizeof(*set->v), cmp_version);
    for (size_t i = 1; i < set->n; i++)
      if (set->v[i].version == set->v[i - 1].version) {
        log_error("%s and %s have the same version", set->v[i - 1].name, set->v[i].name);
        rc = DB_MIGRATE_EFILE;
        break;
      }
  }
  return rc;
}

/* ---- the database --------------------------------------------------------------------------- */

static void on_notice(void *arg, const PGresult *res) {
  const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

  (void)arg;

  /* NOTICEs ("relation already exists, skipping") are noise here; warnings are not. */
  if (sev && msg && strcmp(sev, "NOTICE") != 0 && strcmp(sev, "DEBUG") != 0 &&
      strcmp(sev, "INFO") != 0 && strcmp(sev, "LOG") != 0)
    log_warn("server %s: %s", sev, msg);
}

/* A blocking session waits DB_DEFAULT_CONNECT_TIMEOUT_MS for each host of the connection
 * string, as the pool does: a host that accepts the connection and then never answers (the
 * failed primary of a failover) would hold migrate, bootstrap or serve's start for ever, and
 * the next host of the list would never be tried. The connection string's own connect_timeout,
 * or PGCONNECT_TIMEOUT, wins (dbname is expanded after it). */
PGconn *db_session_connect(const char *conninfo, const char *application) {
  const char *timeout = getenv("PGCONNECT_TIMEOUT");
  char default_s[16];
  const char *keys[] = {"connect_timeout", "dbname", "fallback_application_name", "options", NULL};
  const char *vals[] = {timeout && *timeout ? timeout : default_s, conninfo ? conninfo : "",
                        application, NULL, NULL};
  PQconninfoOption none = {0}, *opts;
  char *err = NULL, *options = NULL, line[512];
  const char *own, *enc;
  PGconn *c = NULL;
  int n;

  /* libpq's error for a string it cannot parse quotes the string, password included. */
  if (!db_conninfo_parses(vals[1])) {
    log_error("cannot connect: the database URL " DB_CONNINFO_UNPARSABLE);
    return NULL;
  }
  snprintf(default_s, sizeof(default_s), "%d", DB_DEFAULT_CONNECT_TIMEOUT_MS / 1000);
  /* A string libpq cannot parse (a bare database name) has no options of its own. */
  opts = PQconninfoParse(vals[1], &err);
  PQfreemem(err);
  own = db_own_options(opts ? opts : &none);
  n = snprintf(NULL, 0, "%s %s", own, DB_SESSION_PINS);
  if ((options = malloc((size_t)n + 1)) != NULL) {
    snprintf(options, (size_t)n + 1, "%s %s", own, DB_SESSION_PINS);
    vals[3] = options;
    c = PQconnectdbParams(keys, vals, 1);
  }
  PQconninfoFree(opts);
  free(options);
  if (!c) {
    log_error("cannot connect: out of memory");
    return NULL;
  }
  if (PQstatus(c) != CONNECTION_OK) {
    first_line(PQerrorMessage(c), line, sizeof(line));
    /* Since 0063 only the owner and clued_runtime (and roles granted it) may connect: a role
     * outside clued_runtime, or a member that does not inherit its privileges, lands here. */
    if (strstr(line, "permission denied for database") != NULL)
      log_error("cannot connect: %s: role \"%s\" may not connect to database \"%s\": clued "
                "serves as a member of clued_runtime that inherits its privileges (not "
                "NOINHERIT), migrates as the database's owner (README \"Database roles\")",
                line, PQuser(c), PQdb(c));
    else
      log_error("cannot connect: %s", line);
    PQfinish(c);
    return NULL;
  }
  /* Text reaches the database as UTF-8 (client_encoding): a database of another encoding
   * would refuse what it cannot hold (EUC_CN, GBK), or keep it garbled (LATIN1). SQL_ASCII
   * keeps the bytes as they come. */
  enc = PQparameterStatus(c, "server_encoding");
  if (enc && strcmp(enc, "UTF8") != 0 && strcmp(enc, "SQL_ASCII") != 0) {
    log_error("the database's encoding is %s: clued keeps text in UTF-8 and needs a database "
              "created with ENCODING 'UTF8' (CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE "
              "template0)",
              enc);
    PQfinish(c);
    return NULL;
  }
  PQsetNoticeReceiver(c, on_notice, NULL);
  return c;
}

static PGconn *migrate_connect(const char *conninfo) {
  return db_session_connect(conninfo, "clued-migrate");
}

/* Run a statement; on failure log it (with what) and return NULL. */
static PGresult *run(PGconn *c, const char *what, const char *sql, int n, const char *const *vals) {
  PGresult *r = PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  char line[512];

  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
    return r;
  log_error("%s: %s", what,
            first_line(r ? PQresultErrorMessage(r) : PQerrorMessage(c), line, sizeof(line)));
  PQclear(r);
  return NULL;
}

static int run_ok(PGconn *c, const char *what, const char *sql) {
  PGresult *r = run(c, what, sql, 0, NULL);
  PQclear(r);
  return r ? 0 : -1;
}

/* The row of schema_migrations for version, or -1. */
static int applied_row(const PGresult *applied, long long version) {
  for (int i = 0; applied && i < PQntuples(applied); i++)
    if (strtoll(PQgetvalue(applied, i, 0), NULL, 10) == version)
      return i;
  return -1;
}

/* Check the applied migrations against the set, read from dir (NULL: built in): each must
 * still be the file that was applied. One the set does not have (a newer binary applied it)
 * is a warning for migrate, which changes nothing it does not know; with newer_is_error
 * (serve), a refusal, DB_MIGRATE_ENEWER. */
static int check_applied(const migration_set_t *set, const char *dir, const PGresult *applied,
                         int newer_is_error) {
  for (int i = 0; applied && i < PQntuples(applied); i++) {
    long long version = strtoll(PQgetvalue(applied, i, 0), NULL, 10);
    const char *name = PQgetvalue(applied, i, 1);
    const char *sha = PQgetvalue(applied, i, 2);
    const migration_t *m = NULL;

    for (size_t j = 0; j < set->n && !m; j++)
      if (set->v[j].version == version)
        m = &set->v[j];
    if (!m && newer_is_error && dir) {
      log_error("%s (version %lld) is applied but not in %s (--migrations): the schema is newer "
                "than the migrations there, and may no longer be what they define; serve with "
                "the directory that applied it, or without --migrations",
                name, version, dir);
      return DB_MIGRATE_ENEWER;
    }
    if (!m && newer_is_error) {
      log_error(
          "%s (version %lld) is applied but this binary does not have it: the schema is newer "
          "than this clued, and may no longer be what it reads and writes; run the clued that "
          "applied it, or a later one",
          name, version);
      return DB_MIGRATE_ENEWER;
    }
    if (!m) {
      log_warn("%s (version %lld) is applied but not in %s", name, version,
               dir ? dir : "the migrations built into this clued");
      continue;
    }
    if (strcmp(m->name, name) != 0) {
      log_error("%s: version %lld was applied as %s; a migration cannot be renamed", m->name,
                version, name);
      return DB_MIGRATE_ECHECKSUM;
    }
    if (strcmp(m->sha, sha) != 0) {
      log_error("%s was changed after it was applied (applied sha256 %s, file now %s); restore it "
                "and put the change in a new migration",
                m->name, sha, m->sha);
      return DB_MIGRATE_ECHECKSUM;
    }
  }
  return 0;
}

/* Describe where in the file a statement failed: "line N" from the error position. */
static void report_failure(const migration_t *m, const PGresult *r) {
  const char *pos = PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION);
  const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char *ctx = PQresultErrorField(r, PG_DIAG_CONTEXT);
  char where[64] = "", line[512], cline[256];

  if (pos) {
    long chars = strtol(pos, NULL, 10), seen = 0, lineno = 1;
    /* The position counts characters, not bytes: skip UTF-8 continuation bytes. */
    for (const unsigned char *s = (const unsigned char *)m->sql; *s && seen < chars - 1; s++) {
      if ((*s & 0xC0) != 0x80)
        seen++;
      if (*s == '\n')
        lineno++;
    }
    snprintf(where, sizeof(where), " at line %ld", lineno);
  }
  log_error("%s failed%s: %s (SQLSTATE %s)%s%s; rolled back", m->name, where,
            first_line(PQresultErrorMessage(r), line, sizeof(line)), state ? state : "?",
            ctx ? " in " : "", ctx ? first_line(ctx, cline, sizeof(cline)) : "");
}

static double ms_since(const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* A member of the role that owns the audit tables may migrate (migrate checks who): what a
 * migration makes (a function dropped and made again, a table) is then the member's, which
 * the owner's SECURITY DEFINER functions may not use and the member's removal fails on. So
 * each migration runs as the owner (SET LOCAL ROLE), when the migrating role is a member. */
#define MIGRATE_AS_OWNER_SQL                                                                       \
  "SELECT set_config('role', o, true) FROM (SELECT pg_catalog.pg_get_userbyid(relowner)::text o"   \
  " FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass('public.audit_events')) x"         \
  " WHERE o <> current_user AND pg_catalog.pg_has_role(current_user, o, 'MEMBER')"

/* Apply one migration in its own transaction. */
static int apply_one(PGconn *c, const migration_t *m) {
  char version[32];
  const char *vals[3] = {version, m->name, m->sha};
  struct timespec t0;
  PGresult *r;

  clock_gettime(CLOCK_MONOTONIC, &t0);
  snprintf(version, sizeof(version), "%lld", m->version);
  if (run_ok(c, m->name, "BEGIN") != 0 || run_ok(c, m->name, MIGRATE_AS_OWNER_SQL) != 0) {
    PQclear(PQexec(c, "ROLLBACK"));
    return DB_MIGRATE_ESQL;
  }
  /* The simple query protocol: a file holds many statements. */
  r = PQexec(c, m->sql);
  if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK &&
      PQresultStatus(r) != PGRES_EMPTY_QUERY) {
    report_failure(m, r);
    PQclear(r);
    PQclear(PQexec(c, "ROLLBACK"));
    return DB_MIGRATE_ESQL;
  }
  PQclear(r);
  r = run(c, m->name,
          "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1::bigint, $2, $3)", 3,
          vals);
  if (!r || run_ok(c, m->name, "COMMIT") != 0) {
    PQclear(r);
    PQclear(PQexec(c, "ROLLBACK"));
    return DB_MIGRATE_ESQL;
  }
  PQclear(r);
  log_info("applied %s (%.0f ms)", m->name, ms_since(&t0));
  return 0;
}

/* Take the migration lock. Another migrate holding it is expected (runs from several machines
 * at once are safe, README), and so is waiting for it; but not a wait without a word: a run
 * that must wait says once for whom, and how long it waited when it goes on. The wait has no
 * bound of clued's own: a lock_timeout in the connection string's options bounds it (and every
 * statement of the migrations). */
static int take_migrate_lock(PGconn *c) {
  PGresult *r = run(c, "taking the migration lock", MIGRATE_TRY_LOCK_SQL, 0, NULL);
  char line[512], who[512];
  struct timespec t0;
  int got;

  if (!r)
    return -1;
  got = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  if (got)
    return 0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  r = run(c, "looking for the migration lock's holder", MIGRATE_LOCK_HOLDER_SQL, 0, NULL);
  if (r && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) {
    int migrate = !PQgetisnull(r, 0, 2) && strcmp(PQgetvalue(r, 0, 2), "clued-migrate") == 0;
    int n = snprintf(who, sizeof(who), "pid %s, role \"%s\"", PQgetvalue(r, 0, 0),
                     PQgetisnull(r, 0, 1) ? "?" : PQgetvalue(r, 0, 1));
    if (!PQgetisnull(r, 0, 2) && n > 0 && (size_t)n < sizeof(who))
      n += snprintf(who + n, sizeof(who) - (size_t)n, ", application \"%s\"", PQgetvalue(r, 0, 2));
    if (!PQgetisnull(r, 0, 3) && n > 0 && (size_t)n < sizeof(who))
      snprintf(who + n, sizeof(who) - (size_t)n, ", connected at %s", PQgetvalue(r, 0, 3));
    if (migrate)
      log_info("waiting for the migration lock, which another clued migrate holds (%s); this "
               "run goes on when it is done",
               who);
    else
      log_warn("waiting for the migration lock, which another session holds (%s), not one "
               "named clued-migrate: this run goes on when that session releases it or ends",
               who);
  } else if (r && PQntuples(r) == 1) {
    log_warn("waiting for the migration lock, which a prepared transaction holds "
             "(pg_prepared_xacts); this run goes on when it is committed or rolled back");
  } else {
    log_info("waiting for the migration lock, which another session holds; this run goes on "
             "when it is released");
  }
  PQclear(r);
  r = PQexec(c, MIGRATE_LOCK_SQL);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    /* lock_timeout (55P03) or statement_timeout (57014) from the connection's options. */
    if (state && msg && (strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0))
      log_error("gave up waiting for the migration lock after %.1f s: %s", ms_since(&t0) / 1e3,
                msg);
    else
      log_error("taking the migration lock: %s",
                first_line(r ? PQresultErrorMessage(r) : PQerrorMessage(c), line, sizeof(line)));
    PQclear(r);
    return -1;
  }
  PQclear(r);
  log_info("took the migration lock after waiting %.1f s", ms_since(&t0) / 1e3);
  return 0;
}

/* May the role connected migrate this database? Objects a migration creates belong to the role
 * that runs it, and only their owner (or a superuser) may replace them later: a run as any role
 * but the schema's owner leaves objects the owner's next run cannot replace. The owner is the
 * owner of schema_migrations, or on a database not yet migrated, of the database. A superuser
 * that is not the owner is refused unless allow_superuser; a role that is neither the owner nor
 * a member of it (the runtime role) is told which role migrates, rather than "permission
 * denied". */
static int check_migrator(PGconn *c, int allow_superuser) {
  static const char sql[] =
      "SELECT current_user, r.rolsuper,"
      " coalesce(pg_get_userbyid(m.relowner), pg_get_userbyid(d.datdba)),"
      " pg_has_role(current_user, coalesce(m.relowner, d.datdba), 'MEMBER'), m.oid IS NOT NULL"
      " FROM pg_roles r"
      " CROSS JOIN (SELECT datdba FROM pg_database WHERE datname = current_database()) d"
      " LEFT JOIN pg_class m ON m.oid = to_regclass('schema_migrations')"
      " WHERE r.rolname = current_user";
  PGresult *r = run(c, "checking the database role", sql, 0, NULL);
  const char *role, *owner;
  int rc = 0;

  if (!r)
    return DB_MIGRATE_ESQL;
  if (PQntuples(r) != 1) {
    PQclear(r);
    log_error("checking the database role: the current role was not found in pg_roles");
    return DB_MIGRATE_EROLE;
  }
  role = PQgetvalue(r, 0, 0);
  owner = PQgetvalue(r, 0, 2);
  if (strcmp(PQgetvalue(r, 0, 1), "t") == 0 && strcmp(role, owner) != 0) {
    if (allow_superuser) {
      log_warn("migrating as \"%s\", a superuser, although %s belongs to \"%s\" "
               "(--allow-superuser): what this run creates belongs to \"%s\", and a later "
               "migrate as \"%s\" cannot replace it",
               role, strcmp(PQgetvalue(r, 0, 4), "t") == 0 ? "the schema" : "the database", owner,
               role, owner);
    } else {
      log_error("refusing to migrate as \"%s\", a superuser: %s belongs to \"%s\", and what "
                "this run created would belong to \"%s\", which a later migrate as \"%s\" "
                "could not replace; migrate as \"%s\" (README \"Database roles\"), or pass "
                "--allow-superuser",
                role, strcmp(PQgetvalue(r, 0, 4), "t") == 0 ? "the schema" : "the database", owner,
                role, owner, owner);
      rc = DB_MIGRATE_EROLE;
    }
  } else if (strcmp(PQgetvalue(r, 0, 1), "t") != 0 && strcmp(PQgetvalue(r, 0, 3), "t") != 0) {
    log_error("role \"%s\" may not migrate this database: migrate as \"%s\", the owner of %s "
              "(README \"Database roles\"); serve runs as the runtime role, a member of "
              "clued_runtime",
              role, owner, strcmp(PQgetvalue(r, 0, 4), "t") == 0 ? "the schema" : "the database");
    rc = DB_MIGRATE_EROLE;
  }
  PQclear(r);
  return rc;
}

/* ---- clued's functions and triggers ------------------------------------------------------ */

/* What the migrations of set leave (db/schema_check.h); a statement the reader cannot follow
 * is logged as an error, or with warn_only as a warning. */
static int expect_load(const migration_set_t *set, schema_expect_t **out, int warn_only) {
  schema_expect_t *e = schema_expect_new();
  char err[400];
  int rc = 0;

  if (!e)
    return DB_ENOMEM;
  for (size_t i = 0; rc == 0 && i < set->n; i++) {
    rc = schema_expect_add(e, set->v[i].name, set->v[i].sql, strlen(set->v[i].sql), err,
                           sizeof(err));
    if (rc == -1 && warn_only)
      log_warn("cannot check clued's functions and triggers: %s", err);
    else if (rc == -1)
      log_error("reading the functions and triggers the migrations define: %s", err);
  }
  if (rc != 0) {
    schema_expect_free(e);
    return rc == -1 ? DB_MIGRATE_EFILE : DB_ENOMEM;
  }
  *out = e;
  return 0;
}

/* Run schema_catalog_sql on c and compare it with e. Returns 0 with the differences in *d, *n
 * and the newer version applied (0: none) in *newer, or a negative error code (logged). */
static int schema_diffs(PGconn *c, const schema_expect_t *e, schema_diff_t **d, size_t *n,
                        long long *newer) {
  PGresult *r = run(c, "reading clued's functions and triggers", schema_catalog_sql, 0, NULL);
  schema_row_t *rows;
  int nrows, rc;

  if (!r)
    return DB_MIGRATE_ESQL;
  nrows = PQntuples(r);
  rows = calloc((size_t)nrows + 1, sizeof(*rows));
  if (!rows) {
    PQclear(r);
    return DB_ENOMEM;
  }
  for (int i = 0; i < nrows; i++) {
#define COL(k) (PQgetisnull(r, i, k) ? NULL : PQgetvalue(r, i, k))
    rows[i].kind = PQgetvalue(r, i, 0)[0];
    rows[i].name = COL(1);
    rows[i].args = COL(2);
    rows[i].ident = COL(3);
    rows[i].hash = COL(4);
    rows[i].tgtype = atoi(PQgetvalue(r, i, 5)); /* "" when NULL */
    rows[i].enabled = PQgetvalue(r, i, 6)[0];
    rows[i].attrs = COL(7);
    rows[i].config = COL(8);
#undef COL
  }
  rc = schema_compare(e, rows, (size_t)nrows, d, n, newer) == 0 ? 0 : DB_ENOMEM;
  free(rows);
  PQclear(r);
  return rc;
}

int db_schema_expect(const char *dir, schema_expect_t **out) {
  migration_set_t set = {0};
  int rc = load_set(dir, &set);

  if (rc == 0)
    rc = expect_load(&set, out, 0);
  set_free(&set);
  return rc;
}

int db_schema_check(const char *conninfo, const char *dir) {
  migration_set_t set = {0};
  schema_expect_t *e = NULL;
  schema_diff_t *d = NULL;
  size_t n = 0;
  long long newer;
  PGconn *c = NULL;
  int rc;

  rc = load_set(dir, &set);
  if (rc == 0)
    rc = expect_load(&set, &e, 0);
  if (rc == 0 && (c = migrate_connect(conninfo)) == NULL)
    rc = DB_MIGRATE_ECONNECT;
  if (rc == 0)
    rc = schema_diffs(c, e, &d, &n, &newer);
  if (rc == 0) {
    for (size_t i = 0; i < n; i++)
      log_error("%s", d[i].message);
    rc = (int)n;
  }
  schema_diffs_free(d, n);
  PQfinish(c);
  schema_expect_free(e);
  set_free(&set);
  return rc;
}

/* migrate --repair: make clued's functions and triggers what the migrations say, in one
 * transaction, and check that they are before it commits. */
static int repair(PGconn *c, const schema_expect_t *e) {
  schema_diff_t *d = NULL;
  size_t n = 0;
  long long newer;
  int rc, repaired = 0;

  if (run_ok(c, "repair", "BEGIN") != 0)
    return DB_MIGRATE_ESQL;
  rc = schema_diffs(c, e, &d, &n, &newer);
  if (rc == 0 && newer) {
    log_error("repair: the database has migration %lld applied, which this clued does not "
              "have: repair with the clued that applied it",
              newer);
    rc = DB_MIGRATE_ENEWER;
  }
  for (size_t i = 0; rc == 0 && i < n; i++) {
    PGresult *r;
    log_warn("repairing: %s", d[i].message);
    r = PQexec(c, d[i].repair);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
      char line[512];
      log_error("repair failed: %s; nothing was changed",
                first_line(PQresultErrorMessage(r), line, sizeof(line)));
      rc = DB_MIGRATE_ESQL;
    }
    PQclear(r);
  }
  if (rc == 0 && n > 0) {
    schema_diffs_free(d, n);
    d = NULL;
    n = 0;
    rc = schema_diffs(c, e, &d, &n, &newer);
    for (size_t i = 0; rc == 0 && i < n; i++)
      log_error("still after the repair: %s", d[i].message);
    if (rc == 0 && n > 0)
      rc = DB_MIGRATE_ESQL;
    repaired = 1;
  }
  if (rc == 0 && run_ok(c, "repair", "COMMIT") == 0) {
    if (!repaired)
      log_info("clued's functions and triggers are what the migrations define: nothing to "
               "repair");
    else
      log_info("repaired: clued's functions and triggers are what the migrations define");
  } else {
    PQclear(PQexec(c, "ROLLBACK"));
    if (rc == 0)
      rc = DB_MIGRATE_ESQL;
  }
  schema_diffs_free(d, n);
  return rc;
}

/* After a plain migrate: say what differs, and how to repair it. */
static void warn_drift(PGconn *c, const schema_expect_t *e) {
  schema_diff_t *d = NULL;
  size_t n = 0;
  long long newer;

  if (schema_diffs(c, e, &d, &n, &newer) != 0)
    return;
  for (size_t i = 0; i < n; i++)
    log_warn("%s", d[i].message);
  if (n > 0)
    log_warn("clued serve refuses calls while clued's functions or triggers differ from the "
             "migrations: run `clued migrate --repair` as the schema's owner to restore them");
  schema_diffs_free(d, n);
}

static int migrate_run(const char *conninfo, const char *dir, int allow_superuser, int repair_too) {
  migration_set_t set = {0};
  schema_expect_t *expect = NULL;
  PGconn *c = NULL;
  PGresult *applied = NULL;
  long long latest = -1;
  int rc, napplied = 0;

  rc = load_set(dir, &set);
  if (rc != 0)
    return rc;
  c = migrate_connect(conninfo);
  if (!c) {
    rc = DB_MIGRATE_ECONNECT;
    goto out;
  }
  /* client_min_messages first, so CREATE ... IF NOT EXISTS stays quiet. Under the lock, a
   * second runner waits for the first and then finds its work done. */
  if (run_ok(c, "session set-up", "SET client_min_messages = warning") != 0 ||
      take_migrate_lock(c) != 0) {
    rc = DB_MIGRATE_ECONNECT;
    goto out;
  }
  rc = check_migrator(c, allow_superuser);
  if (rc != 0)
    goto out;
  if (run_ok(c, "creating schema_migrations", MIGRATE_TABLE_SQL) != 0) {
    rc = DB_MIGRATE_ECONNECT;
    goto out;
  }
  applied = run(c, "reading schema_migrations",
                "SELECT version, name, checksum FROM schema_migrations ORDER BY version", 0, NULL);
  if (!applied) {
    rc = DB_MIGRATE_ESQL;
    goto out;
  }
  rc = check_applied(&set, dir, applied, 0);
  if (rc != 0)
    goto out;
  if (PQntuples(applied) > 0)
    latest = strtoll(PQgetvalue(applied, PQntuples(applied) - 1, 0), NULL, 10);
  for (size_t i = 0; i < set.n; i++) {
    const migration_t *m = &set.v[i];

    if (applied_row(applied, m->version) >= 0)
      continue;
    if (m->version < latest) {
      log_error("%s is older than the applied version %lld; give it a higher number", m->name,
                latest);
      rc = DB_MIGRATE_EFILE;
      goto out;
    }
    rc = apply_one(c, m);
    if (rc != 0)
      goto out;
    napplied++;
  }
  /* Named by the schema version, as `clued version` names it: the count of files may differ
   * (a number left out). A newer clued's migration, warned of above, is the schema's. */
  if (set.n && set.v[set.n - 1].version > latest)
    latest = set.v[set.n - 1].version;
  if (napplied == 0)
    log_info("up to date: schema %lld (%zu migration(s) %s%s)", latest, set.n,
             dir ? "in " : "built in", dir ? dir : "");
  else
    log_info("%d migration(s) applied: schema %lld", napplied, latest);
  /* What the migrations, now applied, define: repaired, or differences warned of (a plain
   * migrate does not fail over a statement the reader cannot follow). */
  if (repair_too) {
    rc = expect_load(&set, &expect, 0);
    if (rc == 0)
      rc = repair(c, expect);
  } else if (expect_load(&set, &expect, 1) == 0) {
    warn_drift(c, expect);
  }

out:
  PQclear(applied);
  PQfinish(c); /* also releases the advisory lock */
  schema_expect_free(expect);
  set_free(&set);
  return rc;
}

int db_migrate(const char *conninfo, const char *dir, int allow_superuser) {
  return migrate_run(conninfo, dir, allow_superuser, 0);
}

int db_migrate_repair(const char *conninfo, const char *dir, int allow_superuser) {
  return migrate_run(conninfo, dir, allow_superuser, 1);
}

int db_migrations_pending(const char *conninfo, const char *dir, char *first_pending, size_t len) {
  migration_set_t set = {0};
  PGconn *c;
  PGresult *exists = NULL, *applied = NULL;
  int rc, pending = 0;

  if (first_pending && len > 0)
    first_pending[0] = '\0';
  rc = load_set(dir, &set);
  if (rc != 0)
    return rc;
  c = migrate_connect(conninfo);
  if (!c) {
    rc = DB_MIGRATE_ECONNECT;
    goto out;
  }
  /* The runtime role reads schema_migrations through clued_runtime's grants, which
   * 0009_runtime_role.sql made: before it, or for a role outside clued_runtime, reading it
   * would only say "permission denied". */
  exists = run(c, "looking for schema_migrations",
               "SELECT to_regclass('schema_migrations') IS NOT NULL,"
               " coalesce(has_table_privilege(to_regclass('schema_migrations'), 'SELECT'), false),"
               " coalesce((SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles"
               "           WHERE rolname = 'clued_runtime'), false), current_user,"
               " coalesce((SELECT has_table_privilege(oid, to_regclass('schema_migrations'),"
               "           'SELECT') FROM pg_roles WHERE rolname = 'clued_runtime'), false)",
               0, NULL);
  if (!exists) {
    rc = DB_MIGRATE_ESQL;
    goto out;
  }
  if (strcmp(PQgetvalue(exists, 0, 0), "t") == 0 && strcmp(PQgetvalue(exists, 0, 1), "t") != 0) {
    if (strcmp(PQgetvalue(exists, 0, 2), "t") == 0 && strcmp(PQgetvalue(exists, 0, 4), "t") == 0)
      log_error("role \"%s\" is a member of clued_runtime, which may read schema_migrations, "
                "but does not inherit its privileges (NOINHERIT): `ALTER ROLE ... INHERIT`, or "
                "serve as a role that inherits them (README \"Database roles\")",
                PQgetvalue(exists, 0, 3));
    else if (strcmp(PQgetvalue(exists, 0, 2), "t") == 0)
      log_error("neither role \"%s\" nor clued_runtime may read schema_migrations: either "
                "migrations are pending (from 0009_runtime_role.sql on, the schema is granted to "
                "clued_runtime; run `clued migrate` as the schema's owner first), or the "
                "database was restored without its privileges (pg_restore --no-privileges): "
                "restore it with them",
                PQgetvalue(exists, 0, 3));
    else
      log_error(
          "role \"%s\" may not read schema_migrations: it is not a member of clued_runtime, "
          "which the schema is granted to (0009_runtime_role.sql, README \"Database roles\"), "
          "or that migration is still pending; run `clued migrate` as the schema's owner and "
          "serve as a member of clued_runtime",
          PQgetvalue(exists, 0, 3));
    rc = DB_MIGRATE_EUNREADABLE;
    goto out;
  }
  if (strcmp(PQgetvalue(exists, 0, 0), "t") == 0) {
    applied =
        run(c, "reading schema_migrations",
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version", 0, NULL);
    if (!applied) {
      rc = DB_MIGRATE_ESQL;
      goto out;
    }
    rc = check_applied(&set, dir, applied, 1);
    if (rc != 0)
      goto out;
  }
  for (size_t i = 0; i < set.n; i++) {
    if (applied_row(applied, set.v[i].version) >= 0)
      continue;
    if (pending++ == 0 && first_pending && len > 0)
      snprintf(first_pending, len, "%s", set.v[i].name);
  }
  rc = pending;

out:
  PQclear(exists);
  PQclear(applied);
  PQfinish(c);
  set_free(&set);
  return rc;
}

/* What a role reaching past the audit triggers holds (db_role_privileged): one row each, in
 * this order, naming the role that holds it and, when that is a role the session's user is a
 * member of (directly or not), that user's memberships of it, whose grant a REVOKE takes back.
 * The session's user, not current_user: a role set in the connection's options can be reset.
 * A member of a role may SET ROLE to it and so holds its attributes (SUPERUSER, CREATEROLE).
 *   superuser: anything, session_replication_role = replica included.
 *   owner: the owner of audit_events (or a member of it) may ALTER it, DISABLE TRIGGER too.
 *   schema: the owner of its schema (in PostgreSQL 15, public belongs to pg_database_owner,
 *     the database's owner) may drop the audit tables and create others in their place.
 *   createrole: may grant itself roles; before PostgreSQL 16 any role but a superuser, the
 *     owner and the pg_*_server_* roles included. From 16 only those it has ADMIN OPTION on;
 *     still refused, since the runtime role has no use for it and its reach differs by version.
 *   pg_execute_server_program, pg_write_server_files: run programs, write files, as the
 *     server's operating-system user: its data files and configuration, so as a superuser.
 *   pg_read_server_files: reads every database's data files and the server's key.
 *   pg_write_all_data: INSERT, UPDATE and DELETE on every table, past the grants that keep
 *     audit_events and audit_heads to clued's functions (forged events, moved chain heads).
 * A superuser is named as that alone. Not here: BYPASSRLS (clued's tables have no row
 * security), REPLICATION (reads the cluster's WAL; writes nothing, and
 * session_replication_role needs a superuser), pg_read_all_data (the runtime role reads
 * clued's tables anyway). */
static const char role_reach_sql[] =
    "WITH me AS (SELECT oid, rolname, rolsuper FROM pg_roles WHERE rolname = session_user),"
    " reach AS (SELECT r.oid, r.rolsuper, r.rolcreaterole FROM pg_roles r, me"
    "           WHERE pg_has_role(me.oid, r.oid, 'MEMBER')),"
    " a AS (SELECT c.relowner, n.nspowner, n.nspname::text FROM pg_class c"
    "       JOIN pg_namespace n ON n.oid = c.relnamespace"
    "       WHERE c.oid = to_regclass('audit_events')),"
    " held(ord, kind, target, detail) AS ("
    "   SELECT 0, 'superuser', reach.oid, NULL FROM reach, me"
    "    WHERE reach.rolsuper AND (reach.oid = me.oid OR NOT me.rolsuper)"
    "   UNION ALL SELECT 1, 'owner', relowner, NULL FROM a"
    "   UNION ALL SELECT 2, 'schema', nspowner, nspname FROM a, me"
    "    WHERE NOT pg_has_role(me.oid, relowner, 'MEMBER')"
    "   UNION ALL SELECT 3, 'createrole', oid, NULL FROM reach WHERE rolcreaterole"
    "   UNION ALL SELECT 4, rolname::text, oid, NULL FROM pg_roles WHERE rolname IN"
    "    ('pg_execute_server_program', 'pg_write_server_files', 'pg_read_server_files',"
    "     'pg_write_all_data'))"
    " SELECT h.kind, pg_get_userbyid(h.target), h.detail,"
    "  (SELECT string_agg(quote_ident(pg_get_userbyid(m.member)), ', '"
    "                     ORDER BY pg_get_userbyid(m.member))"
    "   FROM pg_auth_members m"
    "   WHERE m.roleid = h.target AND pg_has_role(me.oid, m.member, 'MEMBER')),"
    "  quote_ident(pg_get_userbyid(h.target)), me.rolname"
    " FROM me, held h WHERE pg_has_role(me.oid, h.target, 'MEMBER')"
    "  AND (h.kind = 'superuser' OR NOT EXISTS (SELECT 1 FROM reach WHERE rolsuper))"
    " ORDER BY h.ord, h.kind, 2";

/* What the predefined role granted lets its members do. */
static const char *grant_reach(const char *role) {
  if (strcmp(role, "pg_execute_server_program") == 0)
    return "runs programs on the database server as its operating-system user (COPY ... TO "
           "PROGRAM), and so may do what a superuser may";
  if (strcmp(role, "pg_write_server_files") == 0)
    return "writes files on the database server as its operating-system user, its data files "
           "and configuration included, and so may do what a superuser may";
  if (strcmp(role, "pg_read_server_files") == 0)
    return "reads files on the database server as its operating-system user: every database's "
           "data files, its configuration and its key";
  return "may INSERT, UPDATE and DELETE in every table, past the grants that keep audit_events "
         "and audit_heads to clued's functions";
}

/* Append one reason to why (separated by "; "), truncating. */
static void why_add(char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void why_add(char *why, size_t len, const char *fmt, ...) {
  size_t used = why ? strlen(why) : 0;
  va_list ap;

  if (!why || used + 3 >= len)
    return;
  if (used > 0) {
    memcpy(why + used, "; ", 3);
    used += 2;
  }
  va_start(ap, fmt);
  vsnprintf(why + used, len - used, fmt, ap);
  va_end(ap);
}

int db_role_privileged(const char *conninfo, char *why, size_t len) {
  PGconn *c = migrate_connect(conninfo);
  PGresult *r;
  int rc = 0;

  if (why && len > 0)
    why[0] = '\0';
  if (!c)
    return DB_MIGRATE_ECONNECT;
  r = run(c, "checking the database role", role_reach_sql, 0, NULL);
  if (!r) {
    PQfinish(c);
    return DB_MIGRATE_ESQL;
  }
  for (int i = 0; i < PQntuples(r); i++) {
    const char *kind = PQgetvalue(r, i, 0), *target = PQgetvalue(r, i, 1);
    const char *detail = PQgetvalue(r, i, 2), *via = PQgetvalue(r, i, 3);
    const char *target_q = PQgetvalue(r, i, 4), *role = PQgetvalue(r, i, 5);
    int direct = strcmp(target, role) == 0;
    char revoke[512] = "";

    rc = 1;
    if (!PQgetisnull(r, i, 3))
      snprintf(revoke, sizeof(revoke), " (REVOKE %s FROM %s)", target_q, via);
    if (strcmp(kind, "superuser") == 0 && direct)
      why_add(why, len, "role \"%s\" is a superuser", role);
    else if (strcmp(kind, "superuser") == 0)
      why_add(why, len, "role \"%s\" is a member of \"%s\", a superuser it may SET ROLE to%s", role,
              target, revoke);
    else if (strcmp(kind, "owner") == 0 && direct)
      why_add(why, len, "role \"%s\" owns the audit tables", role);
    else if (strcmp(kind, "owner") == 0)
      why_add(why, len, "role \"%s\" is a member of \"%s\", which owns the audit tables%s", role,
              target, revoke);
    else if (strcmp(kind, "schema") == 0 && strcmp(target, "pg_database_owner") == 0)
      why_add(why, len,
              "role \"%s\" owns the database (or is a member of its owner), and so the schema "
              "\"%s\", from which it may drop the audit tables and create others in their place",
              role, detail);
    else if (strcmp(kind, "schema") == 0)
      why_add(why, len,
              "role \"%s\" is%s \"%s\", the owner of the schema \"%s\", from which it may drop "
              "the audit tables and create others in their place%s",
              role, direct ? "" : " a member of", target, detail, revoke);
    else if (strcmp(kind, "createrole") == 0 && direct)
      why_add(why, len,
              "role \"%s\" has CREATEROLE, with which it may grant itself other roles (before "
              "PostgreSQL 16 any but a superuser, the schema's owner included) (ALTER ROLE %s "
              "NOCREATEROLE)",
              role, target_q);
    else if (strcmp(kind, "createrole") == 0)
      why_add(why, len,
              "role \"%s\" is a member of \"%s\", which has CREATEROLE: with it, it may grant "
              "itself other roles (before PostgreSQL 16 any but a superuser, the schema's owner "
              "included)%s",
              role, target, revoke);
    else
      why_add(why, len, "role \"%s\" is a member of %s, which %s%s", role, target,
              grant_reach(target), revoke);
  }
  PQclear(r);
  PQfinish(c);
  return rc;
}

int db_sync_replica(const char *conninfo, char *why, size_t len) {
  PGconn *c = migrate_connect(conninfo);
  PGresult *r;
  int rc;

  if (why && len > 0)
    why[0] = '\0';
  if (!c)
    return DB_MIGRATE_ECONNECT;
  r = run(c, "checking synchronous replication", db_sync_check_sql, 0, NULL);
  if (!r) {
    PQfinish(c);
    return DB_MIGRATE_ESQL;
  }
  if (PQntuples(r) == 1)
    rc = db_sync_verdict(PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
                         PQgetvalue(r, 0, 3), why, len);
  else
    rc = db_sync_verdict(NULL, NULL, NULL, NULL, why, len);
  PQclear(r);
  PQfinish(c);
  return rc;
}
