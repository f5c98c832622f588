#include "service/schema_watch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "db/migrate.h"
#include "db/schema_check.h"
#include "log.h"
#include "service/health.h"

struct schema_watch {
  server_t *srv;
  schema_expect_t *expect;
  uv_timer_t timer;
  int checking; /* a check is in flight */
  int closed;
  size_t drift;         /* differences the last check found */
  uint64_t seen;        /* a hash of their messages: a changed set is logged again */
  uint64_t checks;      /* checks finished */
  long long newer_told; /* the newer schema version last warned of */
  unsigned failed;      /* checks that failed in a row, the database answering */
};

/* A check that keeps failing while the database answers (a REVOKE of schema_migrations, a
 * lock held on it) would let whatever it hides be served unchecked: after this many in a row,
 * calls are refused as for a difference, until a check runs. */
#define SCHEMA_CHECK_FAILS_MAX 3

/* FNV-1a over the messages: the same differences are logged once, not at every check. */
static uint64_t diffs_hash(const schema_diff_t *d, size_t n) {
  uint64_t h = 1469598103934665603ull;

  for (size_t i = 0; i < n; i++)
    for (const char *p = d[i].message; *p; p++)
      h = (h ^ (unsigned char)*p) * 1099511628211ull;
  return h ^ n;
}

static void judge(schema_watch_t *w, const schema_diff_t *d, size_t n) {
  server_t *srv = w->srv;
  uint64_t h = diffs_hash(d, n);
  int allow = srv->cfg.allow_schema_drift;

  if (n > 0 && (w->drift == 0 || h != w->seen)) {
    for (size_t i = 0; i < n; i++)
      log_error("schema check: %s", d[i].message);
    if (allow)
      log_error("schema check: %zu of clued's functions or triggers differ from its "
                "migrations; serving anyway (--allow-schema-drift); `clued migrate --repair` "
                "restores them",
                n);
    else
      log_error("schema check: %zu of clued's functions or triggers differ from its "
                "migrations: refusing calls (UNAVAILABLE, Health NOT_SERVING) until `clued "
                "migrate --repair`, run as the schema's owner, restores them",
                n);
  } else if (n == 0 && w->drift > 0) {
    log_info("schema check: clued's functions and triggers are what its migrations define "
             "again%s",
             allow ? "" : ": serving");
  }
  w->drift = n;
  w->seen = h;
  srv->schema_refusing = n > 0 && !allow ? SCHEMA_REFUSING_DRIFT : SCHEMA_REFUSING_NONE;
  health_set_schema(srv, !srv->schema_refusing);
}

static void checked(const db_result_t *r, void *arg) {
  schema_watch_t *w = arg;
  schema_row_t *rows;
  schema_diff_t *d = NULL;
  size_t n = 0;
  long long newer = 0;
  int nrows;

  w->checking = 0;
  if (w->closed)
    return;
  if (r->err != DB_OK) {
    const char *why = r->message && *r->message ? r->message : db_strerror(r->err);
    int allow = w->srv->cfg.allow_schema_drift;

    /* The pool's health covers a lost database, and its bounds a busy one (a full queue):
     * only the check's own statement failing counts. */
    if (r->err != DB_EQUERY) {
      if (r->err != DB_EUNAVAILABLE)
        log_warn("schema check failed: %s", why);
      return;
    }
    if (++w->failed < SCHEMA_CHECK_FAILS_MAX) {
      log_warn("schema check failed: %s", why);
      return;
    }
    if (w->failed == SCHEMA_CHECK_FAILS_MAX)
      log_error("schema check failed %u times in a row (%s): clued cannot tell whether its "
                "functions and triggers are what its migrations define; %s",
                w->failed, why,
                allow ? "serving anyway (--allow-schema-drift)"
                      : "refusing calls (UNAVAILABLE, Health NOT_SERVING) until a check runs");
    if (!allow && w->srv->schema_refusing == SCHEMA_REFUSING_NONE) {
      w->srv->schema_refusing = SCHEMA_REFUSING_UNCHECKED;
      health_set_schema(w->srv, 0);
    }
    return;
  }
  if (w->failed >= SCHEMA_CHECK_FAILS_MAX)
    log_info("schema check: it runs again");
  w->failed = 0;
  nrows = db_rows(r);
  rows = calloc((size_t)nrows + 1, sizeof(*rows));
  if (!rows) {
    log_warn("schema check: out of memory");
    return;
  }
  for (int i = 0; i < nrows; i++) {
    const char *kind = db_value(r, i, 0), *type = db_value(r, i, 5), *en = db_value(r, i, 6);
    rows[i].kind = kind ? kind[0] : 0;
    rows[i].name = db_value(r, i, 1);
    rows[i].args = db_value(r, i, 2);
    rows[i].ident = db_value(r, i, 3);
    rows[i].hash = db_value(r, i, 4);
    rows[i].tgtype = type ? atoi(type) : 0;
    rows[i].enabled = en ? en[0] : 0;
    rows[i].attrs = db_value(r, i, 7);
    rows[i].config = db_value(r, i, 8);
  }
  if (schema_compare(w->expect, rows, (size_t)nrows, &d, &n, &newer) != 0) {
    free(rows);
    log_warn("schema check: out of memory");
    return;
  }
  free(rows);
  w->checks++;
  if (newer) {
    /* A newer clued migrated the database under this one (an upgrade with this server still
     * running): its functions may take what this binary does not send (a request's
     * fingerprint, a recheck's argument) and so skip checks, and this binary's writes may no
     * longer be what the schema expects. Its definitions are not this binary's to judge
     * either: refused, as serve refuses such a schema at start, until this server runs the
     * clued that applied them. */
    if (newer != w->newer_told)
      log_error("schema check: the database has migration %lld applied, newer than this clued's "
                "%lld: refusing calls (UNAVAILABLE, Health NOT_SERVING); run the clued that "
                "applied it here",
                newer, schema_expect_version(w->expect));
    w->newer_told = newer;
    schema_diffs_free(d, n);
    w->drift = 0;
    w->srv->schema_refusing = SCHEMA_REFUSING_NEWER;
    health_set_schema(w->srv, 0);
    return;
  }
  if (w->newer_told) {
    log_info("schema check: the database's migrations are this clued's again");
    w->newer_told = 0;
  }
  judge(w, d, n);
  schema_diffs_free(d, n);
}

static void on_timer(uv_timer_t *t) {
  schema_watch_t *w = t->data;

  if (w->checking || w->closed || !w->srv->db)
    return;
  if (db_query(w->srv->db, schema_catalog_sql, 0, NULL, checked, w) == 0)
    w->checking = 1;
}

int schema_watch_start(server_t *srv) {
  schema_watch_t *w;

  if (!srv->db)
    return 0;
  w = calloc(1, sizeof(*w));
  if (!w)
    return -ENOMEM;
  w->srv = srv;
  if (db_schema_expect(srv->cfg.migrations_dir, &w->expect) != 0) {
    free(w);
    return -EINVAL; /* logged */
  }
  srv->schema_watch = w;
  uv_timer_init(srv->loop, &w->timer);
  w->timer.data = w;
  /* At once, so that the metric and Health follow from the start; then every interval. */
  uv_timer_start(&w->timer, on_timer, 0, srv->cfg.schema_check_ms);
  return 0;
}

void schema_watch_close(server_t *srv) {
  schema_watch_t *w = srv->schema_watch;

  if (!w)
    return;
  w->closed = 1; /* a check in flight ends with the pool, before schema_watch_free() */
  uv_close((uv_handle_t *)&w->timer, NULL);
}

void schema_watch_free(server_t *srv) {
  schema_watch_t *w = srv->schema_watch;

  if (!w)
    return;
  schema_expect_free(w->expect);
  free(w);
  srv->schema_watch = NULL;
}

int schema_watch_stats(const server_t *srv, size_t *drift, uint64_t *checks) {
  const schema_watch_t *w = srv->schema_watch;

  *drift = w ? w->drift : 0;
  *checks = w ? w->checks : 0;
  return w != NULL;
}
