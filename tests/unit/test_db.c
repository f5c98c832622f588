/* The asynchronous pool against a real PostgreSQL: results, errors, transactions, the wait
 * queue, concurrency, LISTEN, shutdown with work in flight, and lost connections. Every test
 * counts callbacks, runs the loop, and ends with uv_loop_close() == 0. */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "db/db.h"
#include "pg_fixture.h"

static pg_fixture_t pg;
static pg_fixture_t restart_pg; /* test_server_restart's own cluster; teardown stops it */
static char dbname[128];
static char conninfo[1024];

typedef struct tctx {
  uv_loop_t loop;
  db_pool_t *pool;
  int size;
  int closed;
  int in_submit; /* set around db_query/db_txn: a callback must never see it */
  int completed;
  int ok, equery, equeue, eunavail, eclosed,
      ecanceled;   /* ecanceled: also DB_EREFUSED (never ran) */
  char health[64]; /* "1", "10", "101": every health change, in order */
  int ready;       /* listener ready callbacks */
  int notified;
  int sent; /* pg_notify() queries completed */
  char payload[128];
  char channel[128];
} tctx_t;

/* ---- loop helpers ------------------------------------------------------------------------ */

static void on_tick(uv_timer_t *t) {
  (void)t;
}

static void on_tick_closed(uv_handle_t *h) {
  *(int *)h->data = 1;
}

/* Run the loop until pred(arg) holds or ms pass; returns pred's last value. A repeating timer
 * keeps UV_RUN_ONCE returning so the condition is re-checked. */
static int run_until(uv_loop_t *loop, int (*pred)(void *), void *arg, unsigned ms) {
  uv_timer_t tick;
  int closed = 0;
  uint64_t end;

  uv_update_time(loop);
  end = uv_now(loop) + ms;
  uv_timer_init(loop, &tick);
  tick.data = &closed;
  uv_timer_start(&tick, on_tick, 10, 10);
  while (!pred(arg) && uv_now(loop) < end)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&tick, on_tick_closed);
  while (!closed)
    uv_run(loop, UV_RUN_NOWAIT);
  return pred(arg);
}

typedef struct want {
  tctx_t *t;
  int n;
} want_t;

static int want_completed(void *arg) {
  want_t *w = arg;
  return w->t->completed >= w->n;
}

static void wait_completed(tctx_t *t, int n, unsigned ms) {
  want_t w = {t, n};
  assert_true(run_until(&t->loop, want_completed, &w, ms));
}

static int all_idle(void *arg) {
  tctx_t *t = arg;
  db_stats_t st;
  db_pool_stats(t->pool, &st);
  return st.idle == t->size;
}

static void on_health(int healthy, void *arg) {
  tctx_t *t = arg;
  size_t n = strlen(t->health);

  assert_false(t->closed);
  if (n + 1 < sizeof(t->health)) {
    t->health[n] = healthy ? '1' : '0';
    t->health[n + 1] = '\0';
  }
}

static void ctx_open_cfg(tctx_t *t, db_config_t *cfg, int wait_idle) {
  memset(t, 0, sizeof(*t));
  assert_int_equal(uv_loop_init(&t->loop), 0);
  t->size = cfg->size;
  assert_int_equal(db_pool_new(&t->loop, cfg, &t->pool), 0);
  db_pool_on_health(t->pool, on_health, t);
  if (wait_idle)
    assert_true(run_until(&t->loop, all_idle, t, 10000));
}

static void ctx_open_backoff(tctx_t *t, int size, size_t queue_max, unsigned min_ms) {
  db_config_t cfg = {0};

  cfg.conninfo = conninfo;
  cfg.size = size;
  cfg.queue_max = queue_max;
  cfg.reconnect_min_ms = min_ms;
  cfg.reconnect_max_ms = 10 * min_ms;
  ctx_open_cfg(t, &cfg, 1);
}

static void ctx_open(tctx_t *t, int size, size_t queue_max) {
  ctx_open_backoff(t, size, queue_max, 50);
}

static void on_pool_closed(void *arg) {
  ((tctx_t *)arg)->closed = 1;
}

static int is_closed(void *arg) {
  return ((tctx_t *)arg)->closed;
}

static void ctx_close(tctx_t *t) {
  db_pool_close(t->pool, on_pool_closed, t);
  assert_true(run_until(&t->loop, is_closed, t, 5000));
  assert_int_equal(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&t->loop), 0);
}

/* ---- callbacks ------------------------------------------------------------------------------- */

/* One request's outcome. */
typedef struct rec {
  tctx_t *t;
  int called;
  int err;
  char sqlstate[6];
  char message[256];
  int nres;
  int rows;
  char value[256];
  int value_null;
  int expect; /* for value checks in bulk tests */
  int order;  /* its place among the test's completions, 1 first */
} rec_t;

static void count_err(tctx_t *t, int err) {
  switch (err) {
  case DB_OK:
    t->ok++;
    break;
  case DB_EQUERY:
    t->equery++;
    break;
  case DB_EQUEUE:
    t->equeue++;
    break;
  case DB_EUNAVAILABLE:
    t->eunavail++;
    break;
  case DB_ECLOSED:
    t->eclosed++;
    break;
  case DB_ECANCELED:
  case DB_EREFUSED:
    t->ecanceled++;
    break;
  default:
    fail_msg("unexpected error %d", err);
  }
}

static void on_rec(const db_result_t *r, void *arg) {
  rec_t *x = arg;
  const char *v;

  assert_false(x->t->in_submit);
  x->called++;
  x->err = r->err;
  snprintf(x->sqlstate, sizeof(x->sqlstate), "%s", r->sqlstate);
  snprintf(x->message, sizeof(x->message), "%s", r->message ? r->message : "");
  x->nres = r->nres;
  x->rows = db_rows(r);
  v = db_value(r, 0, 0);
  x->value_null = v == NULL;
  snprintf(x->value, sizeof(x->value), "%s", v ? v : "");
  count_err(x->t, r->err);
  x->order = ++x->t->completed;
}

static void query(tctx_t *t, rec_t *x, const char *sql, int n, const char *const *vals) {
  memset(x, 0, sizeof(*x));
  x->t = t;
  t->in_submit = 1;
  assert_int_equal(db_query(t->pool, sql, n, vals, on_rec, x), 0);
  t->in_submit = 0;
}

/* A query on behalf of owner, with a handle for db_cancel(). Returns db_query_opts()'s code. */
/* A query with options o. Returns db_query_opts()'s code. */
static int query_opts(tctx_t *t, rec_t *x, const db_opts_t *o, const char *sql, int n,
                      const char *const *vals) {
  int rc;

  memset(x, 0, sizeof(*x));
  x->t = t;
  t->in_submit = 1;
  rc = db_query_opts(t->pool, o, sql, n, vals, on_rec, x);
  t->in_submit = 0;
  return rc;
}

static int query_as(tctx_t *t, rec_t *x, uint64_t owner, db_req_t **h, const char *sql, int n,
                    const char *const *vals) {
  db_opts_t o = {.owner = owner, .handle = h};

  return query_opts(t, x, &o, sql, n, vals);
}

static void txn(tctx_t *t, rec_t *x, const db_stmt_t *st, int n) {
  memset(x, 0, sizeof(*x));
  x->t = t;
  t->in_submit = 1;
  assert_int_equal(db_txn(t->pool, st, n, on_rec, x), 0);
  t->in_submit = 0;
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void on_basic(const db_result_t *r, void *arg) {
  tctx_t *t = arg;

  assert_int_equal(r->err, DB_OK);
  assert_int_equal(r->nres, 1);
  assert_int_equal(db_rows(r), 1);
  assert_string_equal(db_value(r, 0, 0), "42");
  assert_null(db_value(r, 0, 1));
  assert_null(db_value(r, 0, 2));
  assert_string_equal(db_value(r, 0, 3), "héllo 世界");
  assert_null(db_value(r, 1, 0)); /* out of range */
  assert_null(db_value(r, 0, 9));
  assert_string_equal(r->sqlstate, "");
  t->completed++;
}

static void test_query_result_and_params(void **state) {
  tctx_t t;
  rec_t rows;
  const char *vals[] = {"41", NULL, "héllo 世界"};

  (void)state;
  ctx_open(&t, 2, 16);
  assert_true(db_pool_healthy(t.pool));
  assert_int_equal(
      db_query(t.pool, "SELECT $1::int + 1, NULL::text, $2::text, $3::text", 3, vals, on_basic, &t),
      0);
  query(&t, &rows, "SELECT g FROM generate_series(1, 5) g", 0, NULL);
  wait_completed(&t, 2, 5000);
  assert_int_equal(rows.err, DB_OK);
  assert_int_equal(rows.rows, 5);
  assert_string_equal(rows.value, "1");
  ctx_close(&t);
}

static void test_sql_error(void **state) {
  tctx_t t;
  rec_t missing, divzero, after;

  (void)state;
  ctx_open(&t, 1, 16); /* one connection: the last query reuses the failed one's */
  query(&t, &missing, "SELECT * FROM no_such_table", 0, NULL);
  query(&t, &divzero, "SELECT 1 / 0", 0, NULL);
  query(&t, &after, "SELECT 7", 0, NULL);
  wait_completed(&t, 3, 5000);
  assert_int_equal(missing.err, DB_EQUERY);
  assert_string_equal(missing.sqlstate, "42P01");
  assert_non_null(strstr(missing.message, "no_such_table"));
  assert_int_equal(divzero.err, DB_EQUERY);
  assert_string_equal(divzero.sqlstate, "22012");
  assert_int_equal(after.err, DB_OK);
  assert_string_equal(after.value, "7");
  ctx_close(&t);
}

static void on_user_error(const db_result_t *r, void *arg) {
  tctx_t *t = arg;
  assert_int_equal(r->err, DB_EQUERY);
  /* 22012 is a data exception: the caller's input, not an internal fault. */
  assert_true(db_error_is_user(r));
  t->completed++;
}

static void on_internal_error(const db_result_t *r, void *arg) {
  tctx_t *t = arg;
  assert_int_equal(r->err, DB_EQUERY);
  assert_false(db_error_is_user(r));
  t->completed++;
}

static void test_error_classes(void **state) {
  tctx_t t;

  (void)state;
  ctx_open(&t, 1, 16);
  assert_int_equal(db_query(t.pool, "SELECT 1 / 0", 0, NULL, on_user_error, &t), 0);
  assert_int_equal(db_query(t.pool, "SELEKT", 0, NULL, on_internal_error, &t), 0);
  wait_completed(&t, 2, 5000);
  ctx_close(&t);
}

static void on_txn_commit(const db_result_t *r, void *arg) {
  tctx_t *t = arg;

  assert_int_equal(r->err, DB_OK);
  assert_int_equal(r->nres, 4);
  for (int i = 0; i < 4; i++)
    assert_non_null(r->res[i]);
  assert_int_equal(PQresultStatus(r->res[0]), PGRES_COMMAND_OK);
  assert_string_equal(PQcmdTuples(r->res[1]), "2");
  /* db_value reads the last statement's result. */
  assert_string_equal(db_value(r, 0, 0), "3");
  t->completed++;
}

static void test_txn_commits_all(void **state) {
  tctx_t t;
  rec_t create, count;
  const char *two[] = {"2", "3"};
  db_stmt_t st[] = {
      {"INSERT INTO txn_ok VALUES (1)", 0, NULL},
      {"INSERT INTO txn_ok VALUES ($1::int), ($2::int)", 2, two},
      {"UPDATE txn_ok SET x = x WHERE x = 1", 0, NULL},
      {"SELECT count(*) FROM txn_ok", 0, NULL},
  };

  (void)state;
  ctx_open(&t, 1, 16); /* FIFO on one connection orders the three requests */
  query(&t, &create, "CREATE TABLE txn_ok (x int)", 0, NULL);
  t.in_submit = 1;
  assert_int_equal(db_txn(t.pool, st, 4, on_txn_commit, &t), 0);
  t.in_submit = 0;
  query(&t, &count, "SELECT count(*) FROM txn_ok", 0, NULL);
  wait_completed(&t, 3, 5000);
  assert_int_equal(create.err, DB_OK);
  assert_int_equal(count.err, DB_OK);
  assert_string_equal(count.value, "3");
  ctx_close(&t);
}

static void on_txn_fail(const db_result_t *r, void *arg) {
  tctx_t *t = arg;

  assert_int_equal(r->err, DB_EQUERY);
  assert_string_equal(r->sqlstate, "22012");
  assert_int_equal(r->nres, 4);
  assert_non_null(r->res[0]);
  assert_non_null(r->res[1]);
  assert_non_null(r->res[2]); /* the failing statement's error result */
  assert_int_equal(PQresultStatus(r->res[2]), PGRES_FATAL_ERROR);
  assert_null(r->res[3]); /* never ran */
  assert_null(db_value(r, 0, 0));
  assert_int_equal(db_rows(r), 0);
  t->completed++;
}

static void on_txn_commit_fails(const db_result_t *r, void *arg) {
  tctx_t *t = arg;

  /* A deferred constraint fails at COMMIT, after every statement succeeded. */
  assert_int_equal(r->err, DB_EQUERY);
  assert_string_equal(r->sqlstate, "23505");
  assert_non_null(r->res[0]);
  assert_non_null(r->res[1]);
  t->completed++;
}

static void test_txn_rolls_back_all(void **state) {
  tctx_t t;
  rec_t create, count, check, create2, count2;
  db_stmt_t st[] = {
      {"INSERT INTO txn_bad VALUES (1)", 0, NULL},
      {"INSERT INTO txn_bad VALUES (2)", 0, NULL},
      {"SELECT 1 / 0", 0, NULL},
      {"INSERT INTO txn_bad VALUES (3)", 0, NULL},
  };
  db_stmt_t dup[] = {
      {"INSERT INTO txn_def VALUES (1)", 0, NULL},
      {"INSERT INTO txn_def VALUES (1)", 0, NULL},
  };

  (void)state;
  ctx_open(&t, 1, 16);
  query(&t, &create, "CREATE TABLE txn_bad (x int)", 0, NULL);
  t.in_submit = 1;
  assert_int_equal(db_txn(t.pool, st, 4, on_txn_fail, &t), 0);
  t.in_submit = 0;
  /* Same connection: this fails with 25P02 if the aborted transaction were still open. */
  query(&t, &count, "SELECT count(*) FROM txn_bad", 0, NULL);
  query(&t, &check, "SELECT count(*) FROM txn_bad", 0, NULL);
  query(&t, &create2, "CREATE TABLE txn_def (x int UNIQUE DEFERRABLE INITIALLY DEFERRED)", 0, NULL);
  t.in_submit = 1;
  assert_int_equal(db_txn(t.pool, dup, 2, on_txn_commit_fails, &t), 0);
  t.in_submit = 0;
  query(&t, &count2, "SELECT count(*) FROM txn_def", 0, NULL);
  wait_completed(&t, 7, 5000);
  assert_int_equal(create.err, DB_OK);
  assert_int_equal(count.err, DB_OK);
  assert_string_equal(count.value, "0");
  assert_int_equal(check.err, DB_OK);
  assert_int_equal(create2.err, DB_OK);
  assert_int_equal(count2.err, DB_OK);
  assert_string_equal(count2.value, "0");
  ctx_close(&t);
}

static void test_open_transaction_is_rolled_back(void **state) {
  tctx_t t;
  rec_t begin, create;
  PGconn *other;
  char n[16];

  (void)state;
  ctx_open(&t, 1, 16);
  query(&t, &begin, "BEGIN", 0, NULL);
  query(&t, &create, "CREATE TABLE left_open (x int)", 0, NULL);
  wait_completed(&t, 2, 5000);
  assert_int_equal(begin.err, DB_OK);
  assert_int_equal(create.err, DB_OK);
  /* Another session sees the table only if the CREATE committed on its own, that is if the
   * pool rolled the BEGIN back before reusing the connection. */
  other = pgfx_connect(&pg, dbname);
  assert_non_null(other);
  assert_int_equal(
      pgfx_value(other, "SELECT count(*) FROM pg_class WHERE relname = 'left_open'", n, sizeof(n)),
      0);
  PQfinish(other);
  assert_string_equal(n, "1");
  ctx_close(&t);
}

static void test_txn_empty_and_big(void **state) {
  tctx_t t;
  rec_t empty, big, bigres;
  char *param = malloc(8u << 20 | 1);
  const char *vals[1];
  db_stmt_t st[1];

  (void)state;
  assert_non_null(param);
  memset(param, 'x', 8u << 20);
  param[8u << 20] = '\0';
  vals[0] = param;
  st[0].sql = "SELECT length($1)";
  st[0].nparams = 1;
  st[0].values = vals;
  ctx_open(&t, 1, 16);
  txn(&t, &empty, NULL, 0);
  /* 8 MiB does not fit the socket buffer: PQflush returns 1 and the pool waits for
   * UV_WRITABLE. */
  txn(&t, &big, st, 1);
  free(param); /* parameters were copied */
  query(&t, &bigres, "SELECT repeat('y', 8 << 20)", 0, NULL);
  wait_completed(&t, 3, 20000);
  assert_int_equal(empty.err, DB_OK);
  assert_int_equal(empty.nres, 0);
  assert_int_equal(empty.rows, 0);
  assert_int_equal(big.err, DB_OK);
  assert_string_equal(big.value, "8388608");
  assert_int_equal(bigres.err, DB_OK);
  assert_int_equal(bigres.rows, 1);
  ctx_close(&t);
}

static void test_queue_overflow(void **state) {
  tctx_t t;
  rec_t r[7];
  const char *v[7][1] = {{"0"}, {"1"}, {"2"}, {"3"}, {"4"}, {"5"}, {"6"}};
  db_stats_t st;

  (void)state;
  ctx_open(&t, 2, 3);
  for (int i = 0; i < 7; i++)
    query(&t, &r[i], "SELECT $1::int FROM pg_sleep(0.2)", 1, v[i]);
  db_pool_stats(t.pool, &st);
  assert_int_equal(st.busy, 2);
  assert_int_equal(st.queued, 3);
  /* Refusals are delivered later, never from inside db_query. */
  assert_int_equal(t.completed, 0);
  wait_completed(&t, 7, 10000);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(r[i].err, DB_OK);
    assert_string_equal(r[i].value, v[i][0]);
  }
  assert_int_equal(r[5].err, DB_EQUEUE);
  assert_int_equal(r[6].err, DB_EQUEUE);
  assert_int_equal(t.ok, 5);
  assert_int_equal(t.equeue, 2);
  ctx_close(&t);
}

static void on_bulk(const db_result_t *r, void *arg) {
  rec_t *x = arg;
  char want[32];

  assert_false(x->t->in_submit);
  assert_int_equal(r->err, DB_OK);
  snprintf(want, sizeof(want), "%d", x->expect * 2);
  assert_string_equal(db_value(r, 0, 0), want);
  x->called++;
  x->t->completed++;
}

static void test_many_concurrent(void **state) {
  enum { NQ = 300, NT = 50 };
  tctx_t t;
  rec_t *recs = calloc(NQ + NT, sizeof(rec_t));
  char(*num)[16] = calloc(NQ + NT, 16);

  (void)state;
  assert_non_null(recs);
  assert_non_null(num);
  ctx_open(&t, 4, 1000);
  t.in_submit = 1;
  for (int i = 0; i < NQ + NT; i++) {
    const char *v[1] = {num[i]};
    recs[i].t = &t;
    recs[i].expect = i;
    snprintf(num[i], 16, "%d", i);
    if (i < NQ) {
      assert_int_equal(db_query(t.pool, "SELECT $1::int * 2", 1, v, on_bulk, &recs[i]), 0);
    } else {
      db_stmt_t st[2] = {{"SELECT 1", 0, NULL}, {"SELECT $1::int * 2", 1, v}};
      assert_int_equal(db_txn(t.pool, st, 2, on_bulk, &recs[i]), 0);
    }
  }
  t.in_submit = 0;
  wait_completed(&t, NQ + NT, 30000);
  for (int i = 0; i < NQ + NT; i++)
    assert_int_equal(recs[i].called, 1);
  free(num);
  free(recs);
  ctx_close(&t);
}

static void on_count_tick(uv_timer_t *tm) {
  (*(int *)tm->data)++;
}

static void test_slow_query_does_not_block_loop(void **state) {
  tctx_t t;
  rec_t slow;
  uv_timer_t timer;
  int ticks = 0, ticks_at_done;

  (void)state;
  ctx_open(&t, 2, 16);
  uv_timer_init(&t.loop, &timer);
  timer.data = &ticks;
  uv_timer_start(&timer, on_count_tick, 50, 50);
  query(&t, &slow, "SELECT pg_sleep(1)", 0, NULL);
  wait_completed(&t, 1, 5000);
  ticks_at_done = ticks;
  uv_close((uv_handle_t *)&timer, NULL);
  assert_int_equal(slow.err, DB_OK);
  /* About 20 ticks of 50 ms fit in one second when the loop never blocks, at most one if it
   * blocked; leave room for a loaded machine. */
  assert_true(ticks_at_done >= 8);
  ctx_close(&t);
}

static void on_notify(const char *channel, const char *payload, void *arg) {
  tctx_t *t = arg;

  snprintf(t->channel, sizeof(t->channel), "%s", channel);
  snprintf(t->payload, sizeof(t->payload), "%s", payload);
  t->notified++;
}

static void on_notify_sent(const db_result_t *r, void *arg) {
  assert_int_equal(r->err, DB_OK);
  ((tctx_t *)arg)->sent++;
}

#define TEST_CHANNEL "Clued test \"chan\""

static void notify(tctx_t *t, const char *payload) {
  const char *v[] = {TEST_CHANNEL, payload};
  assert_int_equal(db_query(t->pool, "SELECT pg_notify($1, $2)", 2, v, on_notify_sent, t), 0);
}

static void on_ready(void *arg) {
  tctx_t *t = arg;
  t->ready++;
  notify(t, "héllo 世界");
}

/* The listener may hear the notification before the sender's query result is read: wait for
 * both, or closing the pool would fail the sender with DB_ECLOSED. */
static int got_notify(void *arg) {
  tctx_t *t = arg;
  return t->notified > 0 && t->sent > 0;
}

static void test_listen_receives_notify(void **state) {
  tctx_t t;

  (void)state;
  ctx_open(&t, 1, 16);
  /* The channel is matched exactly: mixed case, a space and a quote survive quoting. */
  assert_int_equal(db_listen_ex(t.pool, TEST_CHANNEL, on_notify, on_ready, &t), 0);
  assert_true(run_until(&t.loop, got_notify, &t, 5000));
  assert_int_equal(t.ready, 1);
  assert_string_equal(t.channel, TEST_CHANNEL);
  assert_string_equal(t.payload, "héllo 世界");
  ctx_close(&t);
}

static void test_close_with_work_in_flight(void **state) {
  tctx_t t;
  rec_t r[5], dummy;
  uint64_t t0;

  (void)state;
  ctx_open(&t, 2, 16);
  assert_int_equal(db_listen(t.pool, "close_test", on_notify, &t), 0);
  for (int i = 0; i < 5; i++)
    query(&t, &r[i], "SELECT pg_sleep(5)", 0, NULL); /* 2 in flight, 3 waiting */
  uv_update_time(&t.loop);
  t0 = uv_now(&t.loop);
  db_pool_close(t.pool, on_pool_closed, &t);
  assert_int_equal(t.completed, 0); /* not from inside db_pool_close */
  assert_int_equal(db_query(t.pool, "SELECT 1", 0, NULL, on_rec, &dummy), DB_ECLOSED);
  assert_int_equal(db_listen(t.pool, "late", on_notify, &t), DB_ECLOSED);
  assert_true(run_until(&t.loop, is_closed, &t, 5000));
  assert_true(uv_now(&t.loop) - t0 < 3000); /* did not wait for pg_sleep(5) */
  assert_int_equal(t.eclosed, 5);
  for (int i = 0; i < 5; i++)
    assert_int_equal(r[i].called, 1);
  assert_int_equal(uv_run(&t.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&t.loop), 0);
}

static void test_close_while_connecting(void **state) {
  tctx_t t;
  rec_t r;
  db_config_t cfg = {0};

  (void)state;
  cfg.conninfo = conninfo;
  cfg.size = 4;
  ctx_open_cfg(&t, &cfg, 0);
  query(&t, &r, "SELECT 1", 0, NULL);
  db_pool_close(t.pool, on_pool_closed, &t);
  assert_true(run_until(&t.loop, is_closed, &t, 5000));
  assert_int_equal(r.called, 1);
  assert_int_equal(r.err, DB_ECLOSED);
  assert_int_equal(uv_run(&t.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&t.loop), 0);
}

static void on_close_from_cb(const db_result_t *r, void *arg) {
  rec_t *x = arg;
  on_rec(r, arg);
  db_pool_close(x->t->pool, on_pool_closed, x->t);
}

static void test_close_from_callback(void **state) {
  tctx_t t;
  rec_t first, second;

  (void)state;
  ctx_open(&t, 1, 16);
  memset(&first, 0, sizeof(first));
  first.t = &t;
  assert_int_equal(db_query(t.pool, "SELECT 1", 0, NULL, on_close_from_cb, &first), 0);
  query(&t, &second, "SELECT 2", 0, NULL);
  assert_true(run_until(&t.loop, is_closed, &t, 5000));
  assert_int_equal(first.err, DB_OK);
  assert_int_equal(second.called, 1);
  /* The waiting request got the connection before the callback closed the pool, so it was in
   * flight at close. */
  assert_int_equal(second.err, DB_ECLOSED);
  assert_int_equal(uv_run(&t.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&t.loop), 0);
}

/* ---- faults ------------------------------------------------------------------------------------
 */

static void terminate_backends(void) {
  PGconn *c = pgfx_connect(&pg, dbname);
  char n[16];

  assert_non_null(c);
  assert_int_equal(pgfx_value(c,
                              "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                              "AND application_name LIKE 'clued%'",
                              n, sizeof(n)),
                   0);
  /* Two pool connections and the listener, and any backend an earlier test left behind. */
  assert_true(atoi(n) >= 3);
  PQfinish(c);
}

static void on_kill_timer(uv_timer_t *tm) {
  terminate_backends();
  uv_close((uv_handle_t *)tm, NULL);
}

static int fault_recovered(void *arg) {
  tctx_t *t = arg;
  return strcmp(t->health, "101") == 0 && t->ready >= 2 && all_idle(t);
}

static void on_ready_count(void *arg) {
  ((tctx_t *)arg)->ready++;
}

static int ready_once(void *arg) {
  return ((tctx_t *)arg)->ready >= 1;
}

static void test_lost_connections_reconnect(void **state) {
  tctx_t t;
  rec_t slow, after;
  uv_timer_t kill;

  (void)state;
  /* Backoff long enough that every terminated connection is noticed before the first one
   * reconnects, so health drops to 0 before it comes back, even on a slow machine. */
  ctx_open_backoff(&t, 2, 16, 400);
  assert_string_equal(t.health, "1");
  assert_int_equal(db_listen_ex(t.pool, TEST_CHANNEL, on_notify, on_ready_count, &t), 0);
  assert_true(run_until(&t.loop, ready_once, &t, 5000));
  query(&t, &slow, "SELECT pg_sleep(10)", 0, NULL);
  uv_timer_init(&t.loop, &kill);
  uv_timer_start(&kill, on_kill_timer, 200, 0);
  wait_completed(&t, 1, 5000);
  /* Lost mid-query: reported, not retried. */
  assert_int_equal(slow.err, DB_EUNAVAILABLE);
  assert_true(run_until(&t.loop, fault_recovered, &t, 10000));
  assert_true(db_pool_healthy(t.pool));
  query(&t, &after, "SELECT 'back'", 0, NULL);
  notify(&t, "after reconnect");
  assert_true(run_until(&t.loop, got_notify, &t, 5000));
  wait_completed(&t, 2, 5000);
  assert_int_equal(after.err, DB_OK);
  assert_string_equal(after.value, "back");
  assert_string_equal(t.payload, "after reconnect");
  ctx_close(&t);
}

static int unhealthy_reported(void *arg) {
  return strchr(((tctx_t *)arg)->health, '0') != NULL;
}

static int never(void *arg) {
  (void)arg;
  return 0;
}

static int went_down(void *arg) {
  return strcmp(((tctx_t *)arg)->health, "10") == 0;
}

static void test_server_restart(void **state) {
  pg_fixture_t *own = &restart_pg;
  tctx_t t;
  rec_t slow, during, after;
  db_config_t cfg = {0};
  char ci[1024];
  uint64_t t0;

  (void)state;
  assert_int_equal(pgfx_start_private(own), 0);
  pgfx_conninfo(own, "postgres", ci, sizeof(ci));
  cfg.conninfo = ci;
  cfg.size = 2;
  cfg.reconnect_min_ms = 50;
  cfg.reconnect_max_ms = 200;
  ctx_open_cfg(&t, &cfg, 1);
  assert_int_equal(db_listen_ex(t.pool, TEST_CHANNEL, on_notify, on_ready_count, &t), 0);
  assert_true(run_until(&t.loop, ready_once, &t, 5000));
  query(&t, &slow, "SELECT pg_sleep(10)", 0, NULL);

  assert_int_equal(pgfx_ctl(own, "stop"), 0);
  wait_completed(&t, 1, 5000);
  assert_int_equal(slow.err, DB_EUNAVAILABLE);
  assert_true(run_until(&t.loop, went_down, &t, 5000));
  /* While the server is gone, requests fail at once rather than wait. */
  uv_update_time(&t.loop);
  t0 = uv_now(&t.loop);
  query(&t, &during, "SELECT 1", 0, NULL);
  wait_completed(&t, 2, 2000);
  assert_int_equal(during.err, DB_EUNAVAILABLE);
  assert_true(uv_now(&t.loop) - t0 < 500);
  /* Some reconnect attempts fail meanwhile; requests still fail at once. */
  (void)run_until(&t.loop, never, NULL, 400);
  query(&t, &during, "SELECT 2", 0, NULL);
  wait_completed(&t, 3, 500);
  assert_int_equal(during.err, DB_EUNAVAILABLE);
  assert_string_equal(t.health, "10");

  assert_int_equal(pgfx_ctl(own, "start"), 0);
  assert_true(run_until(&t.loop, fault_recovered, &t, 10000));
  query(&t, &after, "SELECT 'back'", 0, NULL);
  notify(&t, "after restart");
  assert_true(run_until(&t.loop, got_notify, &t, 5000));
  wait_completed(&t, 4, 5000);
  assert_int_equal(after.err, DB_OK);
  assert_string_equal(t.payload, "after restart");
  ctx_close(&t);
  pgfx_stop(own);
}

static void test_unreachable_fails_fast(void **state) {
  tctx_t t;
  rec_t first, second;
  db_config_t cfg = {0};
  uint64_t t0;

  (void)state;
  cfg.conninfo = "host=/nonexistent/clued-test port=1 user=postgres dbname=none";
  cfg.size = 2;
  cfg.reconnect_min_ms = 100;
  cfg.reconnect_max_ms = 200;
  ctx_open_cfg(&t, &cfg, 0);
  uv_update_time(&t.loop);
  t0 = uv_now(&t.loop);
  query(&t, &first, "SELECT 1", 0, NULL);
  wait_completed(&t, 1, 3000);
  assert_int_equal(first.err, DB_EUNAVAILABLE);
  assert_false(db_pool_healthy(t.pool));
  /* Still down after a few retries: new requests keep failing at once. */
  (void)run_until(&t.loop, unhealthy_reported, &t, 500);
  query(&t, &second, "SELECT 2", 0, NULL);
  wait_completed(&t, 2, 1000);
  assert_int_equal(second.err, DB_EUNAVAILABLE);
  assert_true(uv_now(&t.loop) - t0 < 2500);
  assert_null(strchr(t.health, '1'));
  ctx_close(&t);
}

/* A TCP listener on 127.0.0.1 that completes handshakes (the kernel does) but never answers:
 * a connection attempt to it can only end by the pool's connect timeout. Returns the socket;
 * *port is its port. */
static int silent_listener(int *port) {
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  assert_true(fd >= 0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(fd, 16), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  *port = ntohs(sa.sin_port);
  return fd;
}

static void test_connect_timeout(void **state) {
  tctx_t t;
  rec_t r;
  db_config_t cfg = {0};
  char ci[128];
  int port, fd = silent_listener(&port);
  uint64_t t0;

  (void)state;
  snprintf(ci, sizeof(ci), "hostaddr=127.0.0.1 port=%d user=postgres dbname=x", port);
  cfg.conninfo = ci;
  cfg.size = 1;
  cfg.connect_timeout_ms = 300;
  cfg.reconnect_min_ms = 1000;
  ctx_open_cfg(&t, &cfg, 0);
  uv_update_time(&t.loop);
  t0 = uv_now(&t.loop);
  query(&t, &r, "SELECT 1", 0, NULL); /* waits: the first attempt has not failed yet */
  wait_completed(&t, 1, 3000);
  assert_int_equal(r.err, DB_EUNAVAILABLE);
  assert_true(uv_now(&t.loop) - t0 >= 250);
  ctx_close(&t);
  close(fd);
}

/* A pool of size connections to two hosts, the first silent_listener()'s port (ci holds the
 * connection string), with short timeouts; started, its connections not yet up. */
static void open_behind_a_silent_host(tctx_t *t, char ci[1024], int port, int size) {
  db_config_t cfg = {0};

  snprintf(ci, 1024, "host=127.0.0.1,%s port=%d,%s user=postgres dbname=%s", pg.host, port, pg.port,
           dbname);
  cfg.conninfo = ci;
  cfg.size = size;
  cfg.connect_timeout_ms = 300;
  cfg.reconnect_min_ms = 20;
  cfg.reconnect_max_ms = 100;
  ctx_open_cfg(t, &cfg, 0);
}

/* A list of two hosts whose first accepts TCP connections and never answers (a machine that
 * is gone rather than a server that refuses): each failed attempt starts one host further
 * along, so the pool reaches the server that answers instead of timing out on the silent one
 * for ever. */
static void test_silent_first_host_is_passed_over(void **state) {
  tctx_t t;
  rec_t r;
  char ci[1024];
  int port, fd = silent_listener(&port);

  (void)state;
  open_behind_a_silent_host(&t, ci, port, 2);
  assert_true(run_until(&t.loop, all_idle, &t, 5000));
  query(&t, &r, "SELECT 1", 0, NULL);
  wait_completed(&t, 1, 3000);
  assert_int_equal(r.err, DB_OK);
  ctx_close(&t);
  close(fd);
}

/* Connections the silent listener fd has taken (completed handshakes in its backlog). */
static int accepted(int fd) {
  int n = 0, c;

  (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  while ((c = accept(fd, NULL, NULL)) >= 0) {
    close(c);
    n++;
  }
  return n;
}

/* Once a connection reached the second host (the first silent), a connection lost later
 * starts again at the second: it used to start at the first, and wait out the connect timeout
 * on it at every loss (after a failover away from a host that hangs, seconds of no
 * connection each time). */
static void test_a_lost_connection_starts_at_the_host_that_worked(void **state) {
  tctx_t t;
  rec_t r, k;
  char ci[1024];
  int port, fd = silent_listener(&port);

  (void)state;
  open_behind_a_silent_host(&t, ci, port, 1);
  assert_true(run_until(&t.loop, all_idle, &t, 5000));
  assert_true(accepted(fd) >= 1); /* the first attempt went to the silent host */
  for (int i = 0; i < 3; i++) {
    query(&t, &k, "SELECT pg_terminate_backend(pg_backend_pid())", 0, NULL);
    wait_completed(&t, 2 * i + 1, 3000);
    assert_int_not_equal(k.err, DB_OK);
    assert_true(run_until(&t.loop, all_idle, &t, 5000)); /* connected again */
    query(&t, &r, "SELECT 1", 0, NULL);
    wait_completed(&t, 2 * i + 2, 3000);
    assert_int_equal(r.err, DB_OK);
    assert_int_equal(accepted(fd), 0);
  }
  ctx_close(&t);
  close(fd);
}

static void test_bad_conninfo(void **state) {
  uv_loop_t loop;
  db_pool_t *pool = NULL;
  db_config_t cfg = {0};

  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  cfg.conninfo = "this is not = a 'conninfo";
  assert_int_equal(db_pool_new(&loop, &cfg, &pool), DB_EINVAL);
  assert_null(pool);
  cfg.conninfo = "postgresql://[::1";
  assert_int_equal(db_pool_new(&loop, &cfg, &pool), DB_EINVAL);
  assert_null(pool);
  assert_string_equal(db_strerror(DB_EQUEUE), "database busy: wait queue full");
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- time bounds and cancellation ---------------------------------------------------------- */

/* A pool of size connections and a queue of 64 that reconnects within half a second. */
static db_config_t cfg_small(int size) {
  db_config_t cfg = {0};

  cfg.conninfo = conninfo;
  cfg.size = size;
  cfg.queue_max = 64;
  cfg.reconnect_min_ms = 50;
  cfg.reconnect_max_ms = 500;
  return cfg;
}

static void ctx_open_bounds(tctx_t *t, int size, unsigned stmt_ms, unsigned lock_ms,
                            size_t per_owner) {
  db_config_t cfg = cfg_small(size);

  cfg.statement_timeout_ms = stmt_ms;
  cfg.lock_timeout_ms = lock_ms;
  cfg.per_owner_max = per_owner;
  ctx_open_cfg(t, &cfg, 1);
}

static int is_called(void *arg) {
  return ((rec_t *)arg)->called > 0;
}

static void test_statement_and_lock_timeouts(void **state) {
  tctx_t t;
  rec_t setup, sleep, lock, blocked, after, shown;
  db_stmt_t hold[] = {{"SELECT x FROM bounds_lock FOR UPDATE", 0, NULL},
                      {"SELECT pg_sleep(0.6)", 0, NULL}};

  (void)state;
  ctx_open_bounds(&t, 2, 1000, 200, 0);
  query(&t, &shown,
        "SELECT current_setting('statement_timeout') || ' ' || "
        "current_setting('lock_timeout')",
        0, NULL);
  query(&t, &setup, "CREATE TABLE bounds_lock AS SELECT 1 AS x", 0, NULL);
  wait_completed(&t, 2, 5000);
  assert_string_equal(shown.value, "1s 200ms");
  assert_int_equal(setup.err, DB_OK);
  query(&t, &sleep, "SELECT pg_sleep(10)", 0, NULL);
  wait_completed(&t, 3, 5000);
  assert_int_equal(sleep.err, DB_EQUERY);
  assert_string_equal(sleep.sqlstate, "57014");
  /* A row locked by one connection's statement for 0.6 s and wanted by the other's: the
   * lock timeout fires first. */
  txn(&t, &lock, hold, 2);
  assert_false(run_until(&t.loop, is_called, &lock, 100));
  query(&t, &blocked, "UPDATE bounds_lock SET x = 2", 0, NULL);
  wait_completed(&t, 5, 5000);
  assert_int_equal(blocked.err, DB_EQUERY);
  assert_string_equal(blocked.sqlstate, "55P03");
  assert_int_equal(lock.err, DB_OK);
  query(&t, &after, "SELECT x FROM bounds_lock", 0, NULL);
  wait_completed(&t, 6, 5000);
  assert_string_equal(after.value, "1");
  ctx_close(&t);
}

static int stalled_done(void *arg) {
  return ((rec_t *)arg)->called > 0;
}

static int health_back(void *arg) {
  return strcmp(((tctx_t *)arg)->health, "101") == 0;
}

/* A backend that stops answering (SIGSTOP) cannot enforce its statement timeout: the pool's
 * watchdog sends a cancel request past the timeout and a grace, the connection stops counting
 * as working, and a grace later it is replaced; the request fails as on a lost connection. */
static void test_stalled_backend_is_replaced(void **state) {
  tctx_t t;
  rec_t pid, stalled, after;
  db_config_t cfg = {0};
  db_stats_t st;
  uint64_t t0, took;
  int stopped, unhealthy, stalled_seen;

  (void)state;
  cfg.conninfo = conninfo;
  cfg.size = 1;
  cfg.queue_max = 8;
  cfg.reconnect_min_ms = 50;
  cfg.reconnect_max_ms = 500;
  cfg.statement_timeout_ms = 300;
  cfg.stall_grace_ms = 200;
  ctx_open_cfg(&t, &cfg, 1);
  query(&t, &pid, "SELECT pg_backend_pid()", 0, NULL);
  wait_completed(&t, 1, 5000);
  stopped = atoi(pid.value);
  assert_true(stopped > 0);
  assert_int_equal(kill(stopped, SIGSTOP), 0);
  uv_update_time(&t.loop);
  t0 = uv_now(&t.loop);
  query(&t, &stalled, "SELECT 1", 0, NULL);
  /* Everything checked before SIGCONT is only recorded: a failed assert must not leave the
   * backend stopped. */
  unhealthy = run_until(&t.loop, unhealthy_reported, &t, 5000);
  db_pool_stats(t.pool, &st);
  stalled_seen = st.stalled;
  run_until(&t.loop, stalled_done, &stalled, 5000);
  uv_update_time(&t.loop);
  took = uv_now(&t.loop) - t0;
  run_until(&t.loop, health_back, &t, 5000);
  query(&t, &after, "SELECT pg_backend_pid()", 0, NULL);
  run_until(&t.loop, stalled_done, &after, 5000);
  kill(stopped, SIGCONT);
  assert_true(unhealthy);
  assert_int_equal(stalled_seen, 1);
  assert_int_equal(stalled.called, 1);
  assert_int_equal(stalled.err, DB_EUNAVAILABLE);
  assert_true(took >= 500 && took < 3000); /* 300 ms timeout + 200 ms grace, then 200 ms more */
  /* A new connection serves while the old backend was still stopped. */
  assert_int_equal(after.err, DB_OK);
  assert_int_not_equal(atoi(after.value), stopped);
  assert_string_equal(t.health, "101");
  ctx_close(&t);
}

static void test_cancel_queued(void **state) {
  tctx_t t;
  rec_t busy, q[4], late;
  db_req_t *h[4];
  db_stats_t st;

  (void)state;
  ctx_open_bounds(&t, 1, 0, 0, 0);
  assert_int_equal(query_as(&t, &busy, 0, NULL, "SELECT pg_sleep(0.3)", 0, NULL), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(query_as(&t, &q[i], 0, &h[i], "SELECT 1", 0, NULL), 0);
  db_pool_stats(t.pool, &st);
  assert_int_equal(st.queued, 4);
  /* From the middle, the head and the tail of the queue; twice is harmless. */
  db_cancel(t.pool, h[1]);
  db_cancel(t.pool, h[0]);
  db_cancel(t.pool, h[3]);
  db_cancel(t.pool, h[3]);
  db_pool_stats(t.pool, &st);
  assert_int_equal(st.queued, 1);
  assert_int_equal(t.completed, 0); /* completions come from the loop, never from db_cancel */
  /* The cancelled ones complete before the statement ahead of them ends. */
  wait_completed(&t, 3, 250);
  assert_int_equal(busy.called, 0);
  assert_int_equal(q[0].err, DB_ECANCELED);
  assert_int_equal(q[1].err, DB_ECANCELED);
  assert_int_equal(q[3].err, DB_ECANCELED);
  assert_int_equal(q[2].called, 0);
  assert_int_equal(query_as(&t, &late, 0, NULL, "SELECT 2", 0, NULL), 0);
  wait_completed(&t, 6, 5000);
  assert_int_equal(busy.err, DB_OK);
  assert_int_equal(q[2].err, DB_OK);
  assert_string_equal(late.value, "2");
  assert_int_equal(t.ecanceled, 3);
  ctx_close(&t);
}

static void test_cancel_running(void **state) {
  tctx_t t;
  rec_t pid1, slow, pid2, quick;
  db_req_t *h, *hq;

  (void)state;
  ctx_open_bounds(&t, 1, 0, 0, 0);
  query(&t, &pid1, "SELECT pg_backend_pid()", 0, NULL);
  wait_completed(&t, 1, 5000);
  assert_int_equal(query_as(&t, &slow, 0, &h, "SELECT pg_sleep(30)", 0, NULL), 0);
  assert_int_equal(query_as(&t, &pid2, 0, NULL, "SELECT pg_backend_pid()", 0, NULL), 0);
  assert_false(run_until(&t.loop, is_called, &slow, 200));
  db_cancel(t.pool, h);
  /* Stopped by the server, on the same connection: no reconnect, no 30 s wait. */
  wait_completed(&t, 3, 5000);
  assert_int_equal(slow.err, DB_EQUERY);
  assert_string_equal(slow.sqlstate, "57014");
  assert_int_equal(pid2.err, DB_OK);
  assert_string_equal(pid2.value, pid1.value);
  /* A statement that ends within the cancel grace is not cancelled at all. */
  assert_int_equal(query_as(&t, &quick, 0, &hq, "SELECT 7", 0, NULL), 0);
  db_cancel(t.pool, hq);
  wait_completed(&t, 4, 5000);
  assert_int_equal(quick.err, DB_OK);
  assert_string_equal(quick.value, "7");
  ctx_close(&t);
}

static void on_txn_rec(const db_result_t *r, void *arg) {
  on_rec(r, arg);
}

static void test_cancel_txn_is_all_or_nothing(void **state) {
  tctx_t t;
  rec_t create, tx, count;
  db_req_t *h;
  db_opts_t o = {.owner = 0, .handle = &h};
  db_stmt_t st[] = {
      {"INSERT INTO cancel_txn VALUES (1)", 0, NULL},
      {"SELECT pg_sleep(30)", 0, NULL},
      {"INSERT INTO cancel_txn VALUES (2)", 0, NULL},
  };

  (void)state;
  ctx_open_bounds(&t, 1, 0, 0, 0);
  query(&t, &create, "CREATE TABLE cancel_txn (x int)", 0, NULL);
  wait_completed(&t, 1, 5000);
  memset(&tx, 0, sizeof(tx));
  tx.t = &t;
  assert_int_equal(db_txn_opts(t.pool, &o, st, 3, on_txn_rec, &tx), 0);
  assert_false(run_until(&t.loop, is_called, &tx, 200));
  db_cancel(t.pool, h);
  query(&t, &count, "SELECT count(*) FROM cancel_txn", 0, NULL);
  wait_completed(&t, 3, 5000);
  assert_int_equal(tx.err, DB_EQUERY);
  assert_string_equal(tx.sqlstate, "57014");
  assert_int_equal(count.err, DB_OK);
  assert_string_equal(count.value, "0");
  ctx_close(&t);
}

/* A statement that ends well though a cancel request was sent for it (here it catches the
 * cancel; a commit whose wait for a synchronous standby the cancel cut short does the same,
 * with only a WARNING) is not told as a success: its outcome is unknown. */
static void test_success_after_a_cancel_is_unknown(void **state) {
  tctx_t t;
  rec_t swallow, after;
  db_req_t *h;

  (void)state;
  ctx_open_bounds(&t, 1, 0, 0, 0);
  assert_int_equal(query_as(&t, &swallow, 0, &h,
                            "DO $$BEGIN PERFORM pg_sleep(30);"
                            " EXCEPTION WHEN query_canceled THEN NULL; END$$",
                            0, NULL),
                   0);
  assert_false(run_until(&t.loop, is_called, &swallow, 200));
  db_cancel(t.pool, h);
  query(&t, &after, "SELECT 1", 0, NULL);
  wait_completed(&t, 2, 5000);
  assert_int_equal(swallow.err, DB_EUNAVAILABLE);
  assert_string_equal(swallow.message, "cancelled; the outcome is unknown");
  assert_int_equal(after.err, DB_OK); /* the connection serves on */
  ctx_close(&t);
}

/* A request its callers share (db_opts_t.sharers) runs on while any of them has not cancelled
 * it; the last one's cancel stops it. Waiting for a connection, the first one's takes it off
 * the queue. */
static void test_shared_request_stops_at_the_last_cancel(void **state) {
  tctx_t t;
  rec_t slow, stuck, queued;
  db_req_t *h, *hq;
  db_opts_t o = {.handle = &h, .sharers = 3};
  db_opts_t oq = {.handle = &hq, .sharers = 3};

  (void)state;
  ctx_open_bounds(&t, 1, 0, 0, 0);
  memset(&slow, 0, sizeof(slow));
  slow.t = &t;
  assert_int_equal(db_query_opts(t.pool, &o, "SELECT pg_sleep(0.5)", 0, NULL, on_rec, &slow), 0);
  assert_false(run_until(&t.loop, is_called, &slow, 100));
  db_cancel(t.pool, h);
  db_cancel(t.pool, h);
  wait_completed(&t, 1, 5000);
  assert_int_equal(slow.err, DB_OK); /* two of three cancelled: it ran to its end */

  memset(&stuck, 0, sizeof(stuck));
  stuck.t = &t;
  assert_int_equal(db_query_opts(t.pool, &o, "SELECT pg_sleep(30)", 0, NULL, on_rec, &stuck), 0);
  memset(&queued, 0, sizeof(queued));
  queued.t = &t;
  assert_int_equal(db_query_opts(t.pool, &oq, "SELECT 1", 0, NULL, on_rec, &queued), 0);
  assert_false(run_until(&t.loop, is_called, &stuck, 100));
  db_cancel(t.pool, hq);
  wait_completed(&t, 2, 250);
  assert_int_equal(queued.err, DB_ECANCELED);
  for (int i = 0; i < 3; i++)
    db_cancel(t.pool, h);
  wait_completed(&t, 3, 5000);
  assert_int_equal(stuck.err, DB_EQUERY);
  assert_string_equal(stuck.sqlstate, "57014");
  ctx_close(&t);
}

static void test_close_while_cancelling(void **state) {
  tctx_t t;
  rec_t slow;
  db_req_t *h;

  (void)state;
  ctx_open_bounds(&t, 1, 0, 0, 0);
  assert_int_equal(query_as(&t, &slow, 0, &h, "SELECT pg_sleep(30)", 0, NULL), 0);
  assert_false(run_until(&t.loop, is_called, &slow, 100));
  db_cancel(t.pool, h);
  /* The cancel is on its way (or about to be) when the pool closes: the request completes
   * once, and the pool waits for the worker before it frees itself (ctx_close checks the
   * loop closes cleanly). */
  ctx_close(&t);
  assert_int_equal(slow.called, 1);
  assert_true(slow.err == DB_ECLOSED || slow.err == DB_EQUERY);
}

static int healthy_again(void *arg) {
  return db_pool_healthy(((tctx_t *)arg)->pool);
}

/* Each statement text is prepared once per connection, on its first use, under a name of its
 * own; constant texts past the registry's constant part share the built texts' slots; a Parse
 * that fails leaves the name free; a new session prepares again. One connection, so every
 * query shares a session. */
static void test_prepared_statements(void **state) {
  db_config_t cfg = {0};
  tctx_t t;
  rec_t a, b, name0, other, count, gone, again, after, bad1, bad2, good;
  db_stmt_t twice[2], broken[2];
  const char *one[] = {"1"}, *five[] = {"5"};
  const char *add = "SELECT $1::int + 1";
  const char *stmt0 = "SELECT statement FROM pg_prepared_statements WHERE name = 'clued_0'";

  (void)state;
  cfg.conninfo = conninfo;
  cfg.size = 1;
  cfg.reconnect_min_ms = 50;
  cfg.prepared_max = 3;
  ctx_open_cfg(&t, &cfg, 1);
  query(&t, &a, add, 1, one);
  query(&t, &b, add, 1, five);
  query(&t, &name0, stmt0, 0, NULL);
  /* Registered third: the constant part is full after it. */
  query(&t, &other, "SELECT 'x' || $1", 1, one);
  query(&t, &count, "SELECT count(*) FROM pg_prepared_statements", 0, NULL);
  wait_completed(&t, 5, 5000);
  assert_int_equal(a.err, DB_OK);
  assert_string_equal(a.value, "2");
  assert_int_equal(b.err, DB_OK);
  assert_string_equal(b.value, "6");
  assert_int_equal(name0.err, DB_OK);
  assert_string_equal(name0.value, add);
  assert_string_equal(other.value, "x1");
  assert_string_equal(count.value, "4"); /* the last query itself, in the built part */

  /* The same new text twice in one transaction: one Parse, both run. */
  twice[0] = (db_stmt_t){"SELECT $1::int * 10", 1, one};
  twice[1] = (db_stmt_t){"SELECT $1::int * 10", 1, five};
  txn(&t, &again, twice, 2);
  wait_completed(&t, 6, 5000);
  assert_int_equal(again.err, DB_OK);
  assert_string_equal(again.value, "50");

  /* A new session knows none of them: each is prepared again on its next use. */
  query(&t, &gone, "SELECT pg_terminate_backend(pg_backend_pid())", 0, NULL);
  wait_completed(&t, 7, 5000);
  assert_int_equal(gone.err, DB_EUNAVAILABLE);
  assert_true(run_until(&t.loop, healthy_again, &t, 10000));
  query(&t, &name0, stmt0, 0, NULL);
  query(&t, &after, add, 1, five);
  query(&t, &count, stmt0, 0, NULL);
  wait_completed(&t, 10, 5000);
  assert_int_equal(name0.err, DB_OK);
  assert_int_equal(name0.rows, 0);
  assert_int_equal(after.err, DB_OK);
  assert_string_equal(after.value, "6");
  assert_string_equal(count.value, add);
  ctx_close(&t);

  /* A text that does not parse fails the same way each time, and the session goes on. */
  cfg.prepared_max = 0;
  ctx_open_cfg(&t, &cfg, 1);
  query(&t, &bad1, "SELEKT 1", 0, NULL);
  query(&t, &bad2, "SELEKT 1", 0, NULL);
  broken[0] = (db_stmt_t){"SELECT 1", 0, NULL};
  broken[1] = (db_stmt_t){"SELEKT 2", 0, NULL};
  txn(&t, &again, broken, 2);
  query(&t, &good, "SELECT 1", 0, NULL);
  wait_completed(&t, 4, 5000);
  assert_int_equal(bad1.err, DB_EQUERY);
  assert_string_equal(bad1.sqlstate, "42601");
  assert_int_equal(bad2.err, DB_EQUERY);
  assert_string_equal(bad2.sqlstate, "42601");
  assert_int_equal(again.err, DB_EQUERY);
  assert_string_equal(again.sqlstate, "42601");
  assert_int_equal(good.err, DB_OK);
  assert_string_equal(good.value, "1");
  ctx_close(&t);
}

/* Texts built at run time share a bounded number of slots, least recently used first out: a
 * session deallocates the evicted ones at its next use, so that it never holds more than the
 * registry's slots, while a constant text first used after a flood of built ones is prepared.
 * A request whose text was evicted while it waited still runs its own text. */
static void test_prepared_built(void **state) {
  db_config_t cfg = {0};
  tctx_t t;
  rec_t count, late, mine, flood[32], a[4];
  char built[32][32], want[4][2];
  const char *count_sql = "SELECT count(*) FROM pg_prepared_statements";
  const char *late_sql = "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE"
                         " 'SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE%'";

  (void)state;
  cfg.conninfo = conninfo;
  cfg.size = 1;
  cfg.prepared_max = 8;
  cfg.prepared_built_max = 2;
  ctx_open_cfg(&t, &cfg, 1);
  /* 32 texts, one after the other: the built part keeps the last two. */
  for (int i = 0; i < 32; i++) {
    snprintf(built[i], sizeof(built[i]), "SELECT %d AS n", i);
    query(&t, &flood[i], built[i], 0, NULL);
    wait_completed(&t, i + 1, 5000);
    assert_int_equal(flood[i].err, DB_OK);
    assert_int_equal(atoi(flood[i].value), i);
  }
  query(&t, &count, count_sql, 0, NULL);
  query(&t, &late, late_sql, 0, NULL);
  query(&t, &mine, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'clued_%'", 0,
        NULL);
  wait_completed(&t, 35, 5000);
  /* Itself and the two built texts most recently used. */
  assert_int_equal(count.err, DB_OK);
  assert_string_equal(count.value, "3");
  assert_int_equal(late.err, DB_OK);
  assert_string_equal(late.value, "1"); /* itself: prepared */
  assert_string_equal(mine.value, "5");

  /* One slot; four requests queued behind each other on the one connection, each evicting the
   * text of one still waiting: every one runs its own text. */
  ctx_close(&t);
  cfg.prepared_built_max = 1;
  ctx_open_cfg(&t, &cfg, 1);
  for (int i = 0; i < 4; i++) {
    want[i][0] = i % 2 ? 'b' : 'a';
    want[i][1] = '\0';
    snprintf(built[i], sizeof(built[i]), "SELECT '%s'::text", want[i]);
    query(&t, &a[i], built[i], 0, NULL);
  }
  query(&t, &count, count_sql, 0, NULL);
  wait_completed(&t, 5, 5000);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(a[i].err, DB_OK);
    assert_string_equal(a[i].value, want[i]);
  }
  assert_int_equal(count.err, DB_OK);
  assert_true(atoi(count.value) <= 2); /* the constant one and at most one built */
  ctx_close(&t);
}

static void test_owner_share(void **state) {
  tctx_t t;
  rec_t a[3], b, none[3], again;
  db_req_t *h;

  (void)state;
  ctx_open_bounds(&t, 1, 0, 0, 2);
  assert_int_equal(query_as(&t, &a[0], 7, NULL, "SELECT pg_sleep(0.2)", 0, NULL), 0);
  assert_int_equal(query_as(&t, &a[1], 7, &h, "SELECT 1", 0, NULL), 0);
  /* Owner 7 has one running and one waiting: a third is refused at once, no callback. */
  assert_int_equal(query_as(&t, &a[2], 7, NULL, "SELECT 1", 0, NULL), DB_EOWNER);
  /* Others are not affected, nor are requests without an owner. */
  assert_int_equal(query_as(&t, &b, 8, NULL, "SELECT 8", 0, NULL), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(query_as(&t, &none[i], 0, NULL, "SELECT 0", 0, NULL), 0);
  /* A cancelled request gives its place back at once, before its callback has run. */
  db_cancel(t.pool, h);
  assert_int_equal(query_as(&t, &again, 7, NULL, "SELECT 7", 0, NULL), 0);
  assert_int_equal(a[1].called, 0);
  wait_completed(&t, 7, 5000);
  assert_int_equal(a[1].err, DB_ECANCELED);
  assert_int_equal(a[0].err, DB_OK);
  assert_string_equal(b.value, "8");
  assert_string_equal(again.value, "7");
  assert_int_equal(a[2].called, 0);
  assert_string_equal(db_strerror(DB_EOWNER), "too many database requests from one client");
  ctx_close(&t);
}

/* db_opts_t.still: asked as a request is about to be sent, at once or after it waited; a
 * request it refuses completes with DB_EREFUSED and never runs (its side effect absent). */
static int still_answer;
static int still_asked;

static int still(void *arg) {
  (void)arg;
  still_asked++;
  return still_answer;
}

static void test_still_refuses_a_request_unsent(void **state) {
  tctx_t t;
  rec_t slow, waited, fresh, kept, seen;
  db_opts_t o = {.owner = 3, .still = still};

  (void)state;
  ctx_open_bounds(&t, 1, 0, 0, 10);
  still_answer = 1;
  still_asked = 0;
  assert_int_equal(query_as(&t, &slow, 0, NULL, "SELECT pg_sleep(0.2)", 0, NULL), 0);
  /* Waits behind the sleep; refused when the connection frees. */
  assert_int_equal(
      query_opts(&t, &waited, &o, "SELECT set_config('clued.t', 'ran', false)", 0, NULL), 0);
  still_answer = 0;
  wait_completed(&t, 2, 5000);
  assert_int_equal(slow.err, DB_OK);
  assert_int_equal(waited.err, DB_EREFUSED);
  assert_int_equal(still_asked, 1);
  /* Sent at once (an idle connection): asked as well. */
  assert_int_equal(
      query_opts(&t, &fresh, &o, "SELECT set_config('clued.t', 'ran', false)", 0, NULL), 0);
  wait_completed(&t, 3, 5000);
  assert_int_equal(fresh.err, DB_EREFUSED);
  assert_int_equal(still_asked, 2);
  /* Neither ran; one it lets through does, and the owner's count was given back. */
  still_answer = 1;
  assert_int_equal(query_opts(&t, &kept, &o, "SELECT 'kept'", 0, NULL), 0);
  query(&t, &seen, "SELECT coalesce(current_setting('clued.t', true), 'unset')", 0, NULL);
  wait_completed(&t, 5, 5000);
  assert_string_equal(kept.value, "kept");
  assert_string_equal(seen.value, "unset");
  assert_string_equal(db_strerror(DB_EREFUSED), "refused as it was about to be sent");
  ctx_close(&t);
}

/* ---- a user's share of the pool -------------------------------------------------------------- */

static void ctx_open_users(tctx_t *t, int size, int conns_per_user, size_t per_user_max) {
  db_config_t cfg = cfg_small(size);

  cfg.per_owner_max = 1000; /* out of the way: only the user's bounds act */
  cfg.per_user_max = per_user_max;
  cfg.conns_per_user = conns_per_user;
  ctx_open_cfg(t, &cfg, 1);
}

/* A query on behalf of owner and user, with a handle for db_cancel() if h is set. Returns
 * db_query_opts()'s code. */
static int query_user(tctx_t *t, rec_t *x, uint64_t owner, uint64_t user, db_req_t **h,
                      const char *sql) {
  db_opts_t o = {.owner = owner, .user = user, .handle = h};

  return query_opts(t, x, &o, sql, 0, NULL);
}

/* One statement's run as the server saw it: when it started and when it ended (the server's
 * clock, in microseconds), and where its callback came among the test's completions. */
typedef struct span {
  tctx_t *t;
  int called, err, order;
  long long start, end;
} span_t;

static void on_span(const db_result_t *r, void *arg) {
  span_t *s = arg;

  assert_false(s->t->in_submit);
  s->called++;
  s->err = r->err;
  count_err(s->t, r->err);
  s->order = ++s->t->completed;
  if (r->err == DB_OK) {
    s->start = atoll(db_value(r, 0, 0));
    s->end = atoll(db_value(r, 0, 2));
  }
}

/* A pg_sleep(secs) of user's (owner 0), heavy (db_opts_t) or not, stamped with when it started
 * and ended. */
static void span_opts(tctx_t *t, span_t *s, uint64_t user, int heavy, const char *secs) {
  db_opts_t o = {.user = user, .heavy = heavy};
  const char *v[] = {secs};

  memset(s, 0, sizeof(*s));
  s->t = t;
  t->in_submit = 1;
  assert_int_equal(
      db_query_opts(
          t->pool, &o,
          "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,"
          " pg_sleep($1::float8), (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
          1, v, on_span, s),
      0);
  t->in_submit = 0;
}

static void span_as(tctx_t *t, span_t *s, uint64_t user, const char *secs) {
  span_opts(t, s, user, 0, secs);
}

/* The most of spans s[0..n) that ran at once: every overlap includes the start of one. */
static int most_at_once(const span_t *s, int n) {
  int most = 0;

  for (int i = 0; i < n; i++) {
    int k = 0;
    for (int j = 0; j < n; j++)
      k += s[j].start <= s[i].start && s[i].start < s[j].end;
    if (k > most)
      most = k;
  }
  return most;
}

/* Four connections, two per user: user 1's five sleeps run two at a time, and a request of
 * user 2 sent after them runs at once on a connection they leave free, ending before user 1's
 * third starts. Sent in arrival order, user 1 would take all four connections and user 2 would
 * wait for one of them to end. */
static void test_user_holds_its_share_of_connections(void **state) {
  tctx_t t;
  span_t heavy[5], other;
  db_stats_t st;

  (void)state;
  ctx_open_users(&t, 4, 2, 0);
  for (int i = 0; i < 5; i++)
    span_as(&t, &heavy[i], 1, "0.3");
  span_as(&t, &other, 2, "0");
  db_pool_stats(t.pool, &st);
  assert_int_equal(st.busy, 3);
  assert_int_equal(st.queued, 3);
  assert_int_equal(st.idle, 1); /* idle, though user 1's requests wait */
  wait_completed(&t, 6, 10000);
  for (int i = 0; i < 5; i++)
    assert_int_equal(heavy[i].err, DB_OK);
  assert_int_equal(other.err, DB_OK);
  assert_int_equal(most_at_once(heavy, 5), 2);
  assert_true(other.end <= heavy[2].start);
  ctx_close(&t);
}

/* Four connections, two per user: users 1 and 2 hold all four, and each has a third sleep
 * waiting; user 3's quick request, sent after those, takes the first connection freed (its
 * user then holds one, user 3 none), so it completes before either waiting sleep. In arrival
 * order it would run after both. */
static void test_freed_connection_goes_to_user_holding_fewest(void **state) {
  tctx_t t;
  span_t a[3], b[3], late;
  db_stats_t st;

  (void)state;
  ctx_open_users(&t, 4, 2, 0);
  for (int i = 0; i < 3; i++)
    span_as(&t, &a[i], 1, "0.3");
  for (int i = 0; i < 3; i++)
    span_as(&t, &b[i], 2, "0.3");
  span_as(&t, &late, 3, "0");
  db_pool_stats(t.pool, &st);
  assert_int_equal(st.busy, 4);
  assert_int_equal(st.queued, 3);
  wait_completed(&t, 7, 10000);
  assert_int_equal(t.ok, 7);
  assert_true(late.order < a[2].order);
  assert_true(late.order < b[2].order);
  /* Each user's third sleep waited for one of its first two to end. */
  assert_true(a[2].start >= a[0].end || a[2].start >= a[1].end);
  assert_true(b[2].start >= b[0].end || b[2].start >= b[1].end);
  ctx_close(&t);
}

/* The same with one connection per user (half of a pool of two): the user whose request just
 * ended holds none, as the late user does, yet the connection it freed goes to the late one. */
static void test_freed_connection_skips_the_user_that_freed_it(void **state) {
  tctx_t t;
  span_t a[3], b[3], late;

  (void)state;
  ctx_open_users(&t, 2, 1, 0);
  for (int i = 0; i < 3; i++)
    span_as(&t, &a[i], 1, "0.3");
  for (int i = 0; i < 3; i++)
    span_as(&t, &b[i], 2, "0.3");
  span_as(&t, &late, 3, "0");
  wait_completed(&t, 7, 10000);
  assert_int_equal(t.ok, 7);
  assert_true(late.order < a[1].order && late.order < b[1].order);
  ctx_close(&t);
}

/* Four connections, two per user, two for heavy requests (the default, half the pool): users 1
 * and 2 send three heavy sleeps each and together run two at once, not four, and user 3's light
 * requests sent after them run at once on the connections left. When one of user 1's ends,
 * user 2's first goes next (it holds none), ahead of user 1's third. Without the heavy share,
 * users 1 and 2 would hold all four connections and user 3 would wait for one to end. */
static void test_heavy_requests_hold_their_share(void **state) {
  tctx_t t;
  span_t a[3], b[3], heavy[6], light[2];
  db_stats_t st;

  (void)state;
  ctx_open_users(&t, 4, 2, 0);
  /* a[1] runs longer, so that a[0] ends alone: the next heavy request is given out then, with
   * user 1 still holding one connection, and b[0] goes ahead of a[2] (were both to end at
   * once, b[0] and a[2] would be sent together and start in either order). */
  for (int i = 0; i < 3; i++)
    span_opts(&t, &a[i], 1, 1, i == 1 ? "0.9" : "0.3");
  for (int i = 0; i < 3; i++)
    span_opts(&t, &b[i], 2, 1, "0.3");
  for (int i = 0; i < 2; i++)
    span_as(&t, &light[i], 3, "0");
  db_pool_stats(t.pool, &st);
  assert_int_equal(st.heavy_max, 2);
  assert_int_equal(st.heavy, 2);
  assert_int_equal(st.heavy_queued, 4);
  assert_int_equal(st.queued, 4);
  assert_int_equal(st.busy, 4); /* two heavy, two light */
  wait_completed(&t, 8, 20000);
  assert_int_equal(t.ok, 8);
  for (int i = 0; i < 3; i++) {
    heavy[i] = a[i];
    heavy[3 + i] = b[i];
  }
  assert_int_equal(most_at_once(heavy, 6), 2);
  for (int i = 0; i < 2; i++)
    assert_true(light[i].order < a[0].order && light[i].order < a[1].order);
  assert_true(b[0].start < a[2].start);
  db_pool_stats(t.pool, &st);
  assert_int_equal(st.heavy, 0);
  assert_int_equal(st.heavy_queued, 0);
  ctx_close(&t);
}

/* The heavy share is at least one connection and at most all but one. */
static void test_heavy_share_bounds(void **state) {
  static const struct {
    int size, asked, got;
  } cases[] = {{1, 0, 1}, {2, 0, 1}, {3, 0, 1}, {5, 0, 2}, {4, 9, 3}, {4, 3, 3}, {4, 1, 1}};
  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    tctx_t t;
    db_config_t cfg = cfg_small(cases[i].size);
    db_stats_t st;

    cfg.heavy_conns = cases[i].asked;
    ctx_open_cfg(&t, &cfg, 1);
    db_pool_stats(t.pool, &st);
    assert_int_equal(st.heavy_max, cases[i].got);
    ctx_close(&t);
  }
}

/* In user 7's callback of its first request: its place is free, its next request is not yet
 * sent, so exactly one more fits. */
static rec_t user_again, user_over;
static int user_over_rc;

static void on_user_first(const db_result_t *r, void *arg) {
  rec_t *x = arg;

  on_rec(r, arg);
  assert_int_equal(query_user(x->t, &user_again, 1, 7, NULL, "SELECT 7"), 0);
  user_over_rc = query_user(x->t, &user_over, 2, 7, NULL, "SELECT 7");
}

/* One user may have per_user_max requests waiting or running, over all its owners: more are
 * refused at once, with no callback; requests of no user are not counted. The default is a
 * quarter of the wait queue. */
static void test_user_share_of_requests(void **state) {
  tctx_t t;
  rec_t first, wait[2], over[2], none[5], other;
  db_opts_t o = {.owner = 1, .user = 7};

  (void)state;
  ctx_open_users(&t, 1, 0, 3);
  assert_int_equal(db_per_user_max(t.pool), 3);
  memset(&first, 0, sizeof(first));
  first.t = &t;
  assert_int_equal(
      db_query_opts(t.pool, &o, "SELECT pg_sleep(0.2)", 0, NULL, on_user_first, &first), 0);
  assert_int_equal(query_user(&t, &wait[0], 2, 7, NULL, "SELECT 2"), 0);
  assert_int_equal(query_user(&t, &wait[1], 3, 7, NULL, "SELECT 3"), 0);
  /* A fourth is refused, on an owner of its own or on none. */
  assert_int_equal(query_user(&t, &over[0], 4, 7, NULL, "SELECT 4"), DB_EUSER);
  assert_int_equal(query_user(&t, &over[1], 0, 7, NULL, "SELECT 4"), DB_EUSER);
  /* Requests of no user, on user 7's owners or none, and another user's go on. */
  for (int i = 0; i < 5; i++)
    assert_int_equal(query_user(&t, &none[i], (uint64_t)i % 4, 0, NULL, "SELECT 0"), 0);
  assert_int_equal(query_user(&t, &other, 1, 8, NULL, "SELECT 8"), 0);
  wait_completed(&t, 10, 5000);
  assert_int_equal(t.ok, 10);
  assert_int_equal(first.err, DB_OK);
  assert_string_equal(wait[1].value, "3");
  assert_string_equal(other.value, "8");
  assert_string_equal(user_again.value, "7");
  assert_int_equal(user_over_rc, DB_EUSER);
  assert_int_equal(over[0].called + over[1].called + user_over.called, 0);
  assert_string_equal(db_strerror(DB_EUSER), "too many database requests from one user");
  ctx_close(&t);

  ctx_open_bounds(&t, 1, 0, 0, 0); /* a queue of 64 */
  assert_int_equal(db_per_user_max(t.pool), 16);
  ctx_close(&t);
}

/* A cancelled request keeps its connection counted for its user until the connection is idle
 * again: the user's waiting request does not take the other connection, left idle, meanwhile
 * (another user's does), and runs once the cancelled one's connection is free, on it. Every
 * count is back to zero when the pool closes (pool_free asserts it). */
static void test_cancelled_request_holds_until_idle(void **state) {
  tctx_t t;
  rec_t slow, next, other;
  db_req_t *h;
  db_stats_t st;
  PGconn *watcher;
  char pid[16];

  (void)state;
  ctx_open_users(&t, 2, 1, 0);
  assert_int_equal(query_user(&t, &slow, 1, 1, &h, "SELECT pg_sleep(30) /* held when cancelled */"),
                   0);
  assert_int_equal(query_user(&t, &next, 2, 1, NULL, "SELECT pg_backend_pid()"), 0);
  assert_false(run_until(&t.loop, is_called, &slow, 200));
  watcher = pgfx_connect(&pg, dbname);
  assert_non_null(watcher);
  assert_int_equal(pgfx_value(watcher,
                              "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND "
                              "query LIKE '%held when cancelled%' AND pid <> pg_backend_pid()",
                              pid, sizeof(pid)),
                   0);
  PQfinish(watcher);
  db_cancel(t.pool, h);
  assert_int_equal(query_user(&t, &other, 3, 2, NULL, "SELECT 2"), 0);
  db_pool_stats(t.pool, &st);
  assert_int_equal(st.cancelling, 1);
  assert_int_equal(st.busy, 1);
  assert_int_equal(st.queued, 1);
  wait_completed(&t, 3, 5000);
  assert_int_equal(slow.err, DB_EQUERY);
  assert_string_equal(slow.sqlstate, "57014");
  assert_int_equal(other.err, DB_OK);
  assert_int_equal(next.err, DB_OK);
  assert_true(next.order > slow.order);
  assert_string_equal(next.value, pid);
  ctx_close(&t);
}

/* ---- fixture ------------------------------------------------------------------------------------
 */

static int group_setup(void **state) {
  (void)state;
  if (pgfx_start(&pg) != 0) {
    fprintf(stderr, "test_db: cannot start PostgreSQL\n");
    return -1;
  }
  if (pgfx_create_db(&pg, "test_db", dbname, sizeof(dbname)) != 0)
    return -1;
  pgfx_conninfo(&pg, dbname, conninfo, sizeof(conninfo));
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  pgfx_drop_db(&pg, dbname);
  pgfx_stop(&pg);
  pgfx_stop(&restart_pg);
  return 0;
}

/* A result's view of some of its rows (db_result_t.first, count), as a batch gives each call. */
static void on_rows_view(const db_result_t *r, void *arg) {
  tctx_t *t = arg;
  db_result_t v = *r;

  assert_int_equal(r->err, DB_OK);
  assert_int_equal(db_rows(r), 5);
  v.first = 2;
  v.count = 2;
  assert_int_equal(db_rows(&v), 2);
  assert_string_equal(db_value(&v, 0, 0), "3");
  assert_string_equal(db_value(&v, 1, 0), "4");
  assert_null(db_value(&v, 1, 1)); /* SQL NULL */
  assert_null(db_value(&v, 2, 0)); /* past the view, though the result has the row */
  assert_null(db_value(&v, -1, 0));
  v.first = 4;
  v.count = 3; /* past the result: the whole result */
  assert_int_equal(db_rows(&v), 5);
  t->completed++;
}

static void test_rows_view(void **state) {
  tctx_t t;

  (void)state;
  ctx_open(&t, 1, 16);
  assert_int_equal(db_query(t.pool, "SELECT g, NULL::int FROM generate_series(1, 5) g", 0, NULL,
                            on_rows_view, &t),
                   0);
  wait_completed(&t, 1, 5000);
  ctx_close(&t);
}

/* ---- session settings ------------------------------------------------------------------- */

static const char *const tune_sql[] = {"SET work_mem = '7MB'", "SET temp_buffers = '2MB'", NULL};
static const char *const untune_sql[] = {"RESET work_mem", "RESET temp_buffers", NULL};
static const char show_sql[] = "SELECT current_setting('work_mem')";

static void ctx_open_tuned(tctx_t *t, int size) {
  db_config_t cfg = {0};

  cfg.conninfo = conninfo;
  cfg.size = size;
  cfg.tune_sql = tune_sql;
  cfg.untune_sql = untune_sql;
  ctx_open_cfg(t, &cfg, 1);
}

/* work_mem as a request sees it, tuned or not; the caller frees nothing. */
static const char *work_mem(tctx_t *t, rec_t *x, int tuned) {
  db_opts_t o = {.tuned = tuned};

  memset(x, 0, sizeof(*x));
  x->t = t;
  t->in_submit = 1;
  assert_int_equal(db_query_opts(t->pool, &o, show_sql, 0, NULL, on_rec, x), 0);
  t->in_submit = 0;
  wait_completed(t, t->completed + 1, 5000);
  assert_int_equal(x->err, DB_OK);
  return x->value;
}

static uint64_t retunes(tctx_t *t) {
  db_stats_t st;

  db_pool_stats(t->pool, &st);
  return st.retunes;
}

/* One connection: a tuned request sees the settings, an untuned one the session's defaults,
 * whatever ran before on the connection; each change costs one retune, none when the session
 * already has what the request needs. The statement is prepared after its first use, so the
 * later ones test the path where a prepared statement goes in a pipeline for the settings. */
static void test_tuned_sessions(void **state) {
  tctx_t t;
  rec_t x;
  char def[64];

  (void)state;
  ctx_open_tuned(&t, 1);
  snprintf(def, sizeof(def), "%s", work_mem(&t, &x, 0));
  assert_string_not_equal(def, "7MB");
  assert_int_equal(retunes(&t), 0);
  assert_string_equal(work_mem(&t, &x, 1), "7MB");
  assert_string_equal(work_mem(&t, &x, 1), "7MB");
  assert_int_equal(retunes(&t), 1);
  assert_string_equal(work_mem(&t, &x, 0), def);
  assert_string_equal(work_mem(&t, &x, 0), def);
  assert_int_equal(retunes(&t), 2);

  /* A tuned transaction that fails: its rollback undoes the settings sent with it, and the
   * pool no longer trusts what the session has: both kinds set theirs again. */
  {
    db_opts_t o = {.tuned = 1};
    db_stmt_t st[] = {{show_sql, 0, NULL}, {"SELECT 1 / 0", 0, NULL}};

    memset(&x, 0, sizeof(x));
    x.t = &t;
    assert_int_equal(db_txn_opts(t.pool, &o, st, 2, on_rec, &x), 0);
    wait_completed(&t, t.completed + 1, 5000);
    assert_int_equal(x.err, DB_EQUERY);
    assert_string_equal(x.sqlstate, "22012");
    assert_int_equal(retunes(&t), 3);
  }
  assert_string_equal(work_mem(&t, &x, 1), "7MB");
  assert_int_equal(retunes(&t), 4);
  assert_string_equal(work_mem(&t, &x, 0), def);
  assert_int_equal(retunes(&t), 5);
  ctx_close(&t);
}

/* Two connections: the pool gives each request an idle connection that already has what it
 * needs, so alternating kinds cost one retune in all. */
static void test_tuned_sessions_keep_their_connections(void **state) {
  tctx_t t;
  rec_t x;
  char def[64];

  (void)state;
  ctx_open_tuned(&t, 2);
  snprintf(def, sizeof(def), "%s", work_mem(&t, &x, 0));
  for (int i = 0; i < 5; i++) {
    assert_string_equal(work_mem(&t, &x, 1), "7MB");
    assert_string_equal(work_mem(&t, &x, 0), def);
  }
  assert_int_equal(retunes(&t), 1);
  ctx_close(&t);
}

/* A transaction that begins with SET TRANSACTION (as a read on the primary that reports its
 * WAL position does) gets its isolation level and the settings it asked for, whatever ran
 * last on the connection: the settings joined the transaction ahead of it, and a statement
 * that took a snapshot there made the SET TRANSACTION fail (25001). */
static void isolated_txn(tctx_t *t, rec_t *x, int tuned, const char *want) {
  db_opts_t o = {.tuned = tuned};
  db_stmt_t st[] = {
      {"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", 0, NULL},
      {"SELECT current_setting('transaction_isolation') || ' ' || current_setting('work_mem')", 0,
       NULL},
  };

  memset(x, 0, sizeof(*x));
  x->t = t;
  assert_int_equal(db_txn_opts(t->pool, &o, st, 2, on_rec, x), 0);
  wait_completed(t, t->completed + 1, 5000);
  assert_string_equal(x->message, "");
  assert_int_equal(x->err, DB_OK);
  assert_string_equal(x->value, want);
}

static void test_tuned_sessions_then_isolation(void **state) {
  tctx_t t;
  rec_t x;
  char def[64], want[96];
  db_opts_t o = {.tuned = 1};
  db_stmt_t fail[] = {{"SELECT 1 / 0", 0, NULL}};

  (void)state;
  ctx_open_tuned(&t, 1);
  snprintf(def, sizeof(def), "%s", work_mem(&t, &x, 0));
  snprintf(want, sizeof(want), "repeatable read %s", def);
  assert_string_equal(work_mem(&t, &x, 1), "7MB");
  isolated_txn(&t, &x, 0, want);                  /* after a tuned request: untuned first */
  isolated_txn(&t, &x, 1, "repeatable read 7MB"); /* after an untuned one: tuned first */
  memset(&x, 0, sizeof(x));
  x.t = &t;
  assert_int_equal(db_txn_opts(t.pool, &o, fail, 1, on_rec, &x), 0);
  wait_completed(&t, t.completed + 1, 5000);
  assert_int_equal(x.err, DB_EQUERY);
  isolated_txn(&t, &x, 0, want); /* after a failure: the session's settings are unknown */
  assert_int_equal(retunes(&t), 4);
  ctx_close(&t);
}

/* More statements of session settings than the pool sends are refused up front. */
static void test_too_many_tune_statements(void **state) {
  const char *const many[] = {"SET a.a = 1", "SET a.a = 1", "SET a.a = 1", "SET a.a = 1",
                              "SET a.a = 1", "SET a.a = 1", "SET a.a = 1", "SET a.a = 1",
                              "SET a.a = 1", NULL};
  db_config_t cfg = {0};
  db_pool_t *pool = NULL;
  uv_loop_t loop;

  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  cfg.conninfo = conninfo;
  cfg.tune_sql = many;
  cfg.untune_sql = untune_sql;
  assert_int_equal(db_pool_new(&loop, &cfg, &pool), DB_EINVAL);
  assert_null(pool);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Without tune_sql a tuned request runs like any other. */
static void test_untuned_pool_ignores_tuned(void **state) {
  tctx_t t;
  rec_t x;
  char def[64];

  (void)state;
  ctx_open(&t, 1, 16);
  snprintf(def, sizeof(def), "%s", work_mem(&t, &x, 0));
  assert_string_equal(work_mem(&t, &x, 1), def);
  assert_int_equal(retunes(&t), 0);
  ctx_close(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_query_result_and_params),
      cmocka_unit_test(test_sql_error),
      cmocka_unit_test(test_error_classes),
      cmocka_unit_test(test_txn_commits_all),
      cmocka_unit_test(test_txn_rolls_back_all),
      cmocka_unit_test(test_open_transaction_is_rolled_back),
      cmocka_unit_test(test_txn_empty_and_big),
      cmocka_unit_test(test_queue_overflow),
      cmocka_unit_test(test_many_concurrent),
      cmocka_unit_test(test_slow_query_does_not_block_loop),
      cmocka_unit_test(test_listen_receives_notify),
      cmocka_unit_test(test_close_with_work_in_flight),
      cmocka_unit_test(test_close_while_connecting),
      cmocka_unit_test(test_close_from_callback),
      cmocka_unit_test(test_lost_connections_reconnect),
      cmocka_unit_test(test_server_restart),
      cmocka_unit_test(test_unreachable_fails_fast),
      cmocka_unit_test(test_connect_timeout),
      cmocka_unit_test(test_bad_conninfo),
      cmocka_unit_test(test_statement_and_lock_timeouts),
      cmocka_unit_test(test_stalled_backend_is_replaced),
      cmocka_unit_test(test_cancel_queued),
      cmocka_unit_test(test_cancel_running),
      cmocka_unit_test(test_cancel_txn_is_all_or_nothing),
      cmocka_unit_test(test_success_after_a_cancel_is_unknown),
      cmocka_unit_test(test_shared_request_stops_at_the_last_cancel),
      cmocka_unit_test(test_close_while_cancelling),
      cmocka_unit_test(test_owner_share),
      cmocka_unit_test(test_still_refuses_a_request_unsent),
      cmocka_unit_test(test_user_holds_its_share_of_connections),
      cmocka_unit_test(test_freed_connection_goes_to_user_holding_fewest),
      cmocka_unit_test(test_freed_connection_skips_the_user_that_freed_it),
      cmocka_unit_test(test_heavy_requests_hold_their_share),
      cmocka_unit_test(test_heavy_share_bounds),
      cmocka_unit_test(test_user_share_of_requests),
      cmocka_unit_test(test_cancelled_request_holds_until_idle),
      cmocka_unit_test(test_prepared_statements),
      cmocka_unit_test(test_prepared_built),
      cmocka_unit_test(test_rows_view),
      cmocka_unit_test(test_tuned_sessions),
      cmocka_unit_test(test_tuned_sessions_keep_their_connections),
      cmocka_unit_test(test_untuned_pool_ignores_tuned),
      cmocka_unit_test(test_tuned_sessions_then_isolation),
      cmocka_unit_test(test_too_many_tune_statements),
      cmocka_unit_test(test_silent_first_host_is_passed_over),
      cmocka_unit_test(test_a_lost_connection_starts_at_the_host_that_worked),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
