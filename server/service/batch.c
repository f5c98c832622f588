#include "service/batch.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audit/tail.h"
#include "log.h"
#include "server.h"

/* One call's statement, waiting or running. */
typedef struct item {
  struct item *next;
  rpc_call_t *call; /* referenced while the item lives */
  svc_cb cb;
  void *arg;
  int done;      /* answered from a batch's row */
  int held;      /* counted in stats.held */
  unsigned lane; /* a kind that locks: pump() */
  /* Counted against its connection's and its user's shares of the pool (db_hold()) from its
   * arrival to its end, as its statement alone would be: batched calls are no way around
   * --db-queue-per-conn and --db-queue-per-user. pool: the pool counted in, NULL once given
   * back (the server's may be closing, srv->db NULL, by the time the item ends, and the pool
   * lives until its counts are back). */
  db_pool_t *pool;
  uint64_t owner, user;
  const char *values[];
} item_t;

typedef struct run run_t;

/* The calls of one kind: those waiting, and the statements running. */
typedef struct queue {
  svc_batches_t *b;
  const svc_batch_kind_t *kind;
  item_t *head, **tail;
  size_t waiting;
  run_t *runs; /* running, newest first */
  svc_batch_stats_t stats;
  uv_timer_t wake; /* when the oldest of the running turns SVC_BATCH_STALL_MS old */
  /* A kind that locks: the last 64 pump()s, a bit each: a waiting call had a running
   * statement's lock value (lanes while any did); the calls each lane waits for, and since
   * when (uv_hrtime() in us; 0: not waiting) (pump_lanes()). */
  uint64_t contended;
  size_t want[SVC_BATCH_LANES];
  uint64_t since[SVC_BATCH_LANES];
} queue_t;

struct svc_batches {
  server_t *srv;
  queue_t q[SVC_BATCH_KINDS];
  uv_idle_t soon; /* runs while a kind has calls that arrived this turn of the loop */
  unsigned due;   /* those kinds (1 << id) */
  int closed;     /* svc_batch_close() ran: calls start at once */
};

/* One statement in flight: one call alone, or a batch. */
struct run {
  queue_t *q;
  run_t *prev, *next;
  uint64_t started; /* loop time, ms */
  db_req_t *req;    /* the pool's handle, for the calls to cancel it (db_cancel) */
  unsigned lane;    /* pump() */
  size_t n;
  item_t *items[];
};

static void pump(queue_t *q);
static void pump_later(uv_timer_t *t);
static void pump_lanes(queue_t *q, int limit, uint64_t now);

static void run_unlink(run_t *run) {
  if (run->prev)
    run->prev->next = run->next;
  else
    run->q->runs = run->next;
  if (run->next)
    run->next->prev = run->prev;
}

/* Give back its count (item_t.pool): before it runs alone, which counts for itself. */
static void item_uncount(item_t *it) {
  if (it->pool != NULL)
    db_unhold(it->pool, it->owner, it->user);
  it->pool = NULL;
}

static void item_free(item_t *it) {
  item_uncount(it);
  rpc_call_unref(it->call);
  free(it);
}

/* Answer it from r, as svc_write()'s or svc_read()'s own callback would. */
static void deliver(item_t *it, const db_result_t *r) {
  if (rpc_call_done(it->call))
    return;
  if (r->err != DB_OK)
    svc_fail_db(it->call, r);
  else
    it->cb(it->call, r, it->arg);
}

/* kind's one-call statement for call, through the pool like any statement. */
static void run_alone(rpc_call_t *call, const svc_batch_kind_t *k, const char *const *values,
                      svc_cb cb, void *arg) {
  if (k->writes)
    svc_write(call, k->one_sql, k->nparams, values, cb, arg);
  else
    svc_read(call, k->one_sql, k->nparams, values, cb, arg);
}

/* Run it alone, or for a kind that settles answer it with no rows: the batch left it out or
 * failed. */
static void rerun(queue_t *q, item_t *it) {
  if (rpc_call_done(it->call))
    return;
  item_uncount(it);
  q->stats.reruns++;
  if (q->kind->settle) {
    db_result_t none = {.err = DB_OK, .sqlstate = ""};
    deliver(it, &none);
    return;
  }
  run_alone(it->call, q->kind, it->values, it->cb, it->arg);
}

char *svc_batch_array(const char *const *v, size_t n) {
  size_t len = 3, i;
  char *s, *o;
  const char *p;

  for (i = 0; i < n; i++) {
    len += 5; /* NULL or two quotes, and a comma */
    for (p = v[i]; p && *p; p++)
      len += (*p == '"' || *p == '\\') ? 2 : 1;
  }
  if ((s = malloc(len)) == NULL)
    return NULL;
  o = s;
  *o++ = '{';
  for (i = 0; i < n; i++) {
    if (i > 0)
      *o++ = ',';
    if (v[i] == NULL) {
      memcpy(o, "NULL", 4);
      o += 4;
      continue;
    }
    *o++ = '"';
    for (p = v[i]; *p; p++) {
      if (*p == '"' || *p == '\\')
        *o++ = '\\';
      *o++ = *p;
    }
    *o++ = '"';
  }
  *o++ = '}';
  *o = '\0';
  return s;
}

/* The call position a batch row names in its last column, 0 if none. */
static long row_ord(const PGresult *res, int row) {
  int last = PQnfields(res) - 1;

  if (last < 0 || PQgetisnull(res, row, last))
    return 0;
  return strtol(PQgetvalue(res, row, last), NULL, 10);
}

/* The rows naming a call's position (the last column; a run of rows for a read) answer it;
 * the calls without rows run alone. */
static void batch_rows(run_t *run, const db_result_t *r) {
  const PGresult *res = r->res[r->nres - 1];
  int rows = PQntuples(res), i, n;
  size_t k;

  for (i = 0; i < rows; i += n) {
    long ord = row_ord(res, i);
    item_t *it;

    for (n = 1; i + n < rows && row_ord(res, i + n) == ord; n++)
      ;
    if (ord < 1 || (size_t)ord > run->n || run->items[ord - 1]->done)
      continue;
    it = run->items[ord - 1];
    it->done = 1;
    run->q->stats.calls++;
    {
      db_result_t mine = *r;

      mine.first = i;
      mine.count = n;
      deliver(it, &mine);
    }
  }
  if (rows > 0 && run->q->kind->writes)
    audit_tail_committed(run->q->b->srv);
  for (k = 0; k < run->n; k++)
    if (!run->items[k]->done)
      rerun(run->q, run->items[k]);
}

static void run_done(const db_result_t *r, void *arg) {
  run_t *run = arg;
  queue_t *q = run->q;
  size_t k;

  run_unlink(run);
  for (k = 0; k < run->n; k++)
    rpc_call_db_ended(run->items[k]->call, run->req);
  /* The calls that waited go first: the database works on them while this one's answers
   * are built. */
  pump(q);
  if (run->n == 1) {
    if (r->err == DB_OK && q->kind->writes)
      audit_tail_committed(q->b->srv);
    deliver(run->items[0], r);
  } else if (r->err == DB_OK && r->nres == 1 && r->res[0] != NULL) {
    batch_rows(run, r);
  } else if (r->err == DB_EQUERY || r->err == DB_ECANCELED) {
    /* Nothing of it was committed: each alone gives its own answer or error. That includes a
     * batch that one of its calls cancelled as it ended while it still waited for a connection
     * (DB_ECANCELED): the others run again. A running one is stopped only once every call of
     * it has ended (run_send()), or by the stall watchdog (57014). */
    log_msg("info", "batched %s: %zu calls %s after %s: %s", q->kind->name, run->n,
            q->kind->settle ? "go on without it" : "run alone", r->sqlstate ? r->sqlstate : "",
            r->message ? r->message : "");
    for (k = 0; k < run->n; k++)
      rerun(q, run->items[k]);
  } else {
    /* The connection was lost, or the statement ended well after a cancel request went out
     * (db_cancel()): what was committed is unknown, and nothing runs again blindly. */
    for (k = 0; k < run->n; k++)
      deliver(run->items[k], r);
  }
  for (k = 0; k < run->n; k++)
    item_free(run->items[k]);
  free(run);
}

/* A batch statement's arrays make every custom plan look cheaper than the generic one (the
 * planner counts an array's elements only when it sees its value), so PostgreSQL would plan
 * it again on every execution; planned once, it costs a fraction. And the one plan must probe
 * by index: made while a table is small (a new database, not yet analyzed), it would hash a
 * sequential scan of the whole table, and keep doing so as the table grows (the batch
 * functions carry the same settings, 0026). Batches run on pool connections whose sessions
 * have these settings (db_opts_t.tuned); the pool gives a connection its defaults back before
 * anything else runs on it. */
const char *const svc_batch_tune_sql[] = {"SET plan_cache_mode = force_generic_plan",
                                          "SET enable_seqscan = off", "SET enable_hashjoin = off",
                                          "SET enable_mergejoin = off", NULL};
const char *const svc_batch_untune_sql[] = {"RESET plan_cache_mode", "RESET enable_seqscan",
                                            "RESET enable_hashjoin", "RESET enable_mergejoin",
                                            NULL};

/* Send run's statement; on a refusal, answer its calls from the error at once. A call that
 * ends first (cancelled, expired) is answered so at once, and its row, if any, is dropped.
 * While the statement waits for a connection, that call takes it off the queue, and the
 * others run again alone. Once it runs, only the last of its calls to end stops it (its
 * calls share it: db_opts_t.sharers): a cancel that cut short the commit's wait for a
 * synchronous standby would leave the batch committed on the primary alone, with a success
 * the others could not be answered OK from (docs/SCALEOUT.md, "Cancelled waits"). */
static void run_send(run_t *run) {
  queue_t *q = run->q;
  const svc_batch_kind_t *kind = q->kind;
  db_pool_t *db = q->b->srv->db;
  db_opts_t o = {.owner = 0, .handle = &run->req, .tuned = run->n > 1, .sharers = (unsigned)run->n};
  char *arrays[SVC_BATCH_PARAMS];
  const char *params[SVC_BATCH_PARAMS] = {0};
  const char *col[SVC_BATCH_MAX];
  int rc = DB_ENOMEM, i, made = 0;
  size_t k;

  if (run->n == 1) {
    rc = db_query_opts(db, &o, kind->one_sql, kind->nparams, run->items[0]->values, run_done, run);
  } else {
    for (i = 0; i < kind->nparams; i++, made++) {
      for (k = 0; k < run->n; k++)
        col[k] = run->items[k]->values[i];
      if ((arrays[i] = svc_batch_array(col, run->n)) == NULL)
        break;
      params[i] = arrays[i];
    }
    if (made == kind->nparams)
      rc = db_query_opts(db, &o, kind->many_sql, kind->nparams, params, run_done, run);
    for (i = 0; i < made; i++)
      free(arrays[i]);
  }
  if (rc == 0) {
    if (run->n > 1)
      q->stats.batches++;
    run->started = uv_now(q->b->srv->loop);
    run->prev = NULL;
    run->next = q->runs;
    if (q->runs)
      q->runs->prev = run;
    q->runs = run;
    for (k = 0; k < run->n; k++)
      rpc_call_db_started(run->items[k]->call, run->req);
  } else {
    db_result_t r = {.err = rc};
    for (k = 0; k < run->n; k++) {
      deliver(run->items[k], &r);
      item_free(run->items[k]);
    }
    free(run);
  }
}

/* Running statements that count against the kind's limit: those younger than
 * SVC_BATCH_STALL_MS (*oldest: the start of the oldest of them; *fewest: the fewest calls one
 * of them carries). An older one (waiting on a lock, say) no longer holds the calls behind it. */
static int young_runs(const queue_t *q, uint64_t now, uint64_t *oldest, size_t *fewest) {
  const run_t *r;
  int n = 0;

  *oldest = now;
  *fewest = SIZE_MAX;
  for (r = q->runs; r; r = r->next)
    if (now - r->started < SVC_BATCH_STALL_MS) {
      n++;
      if (r->started < *oldest)
        *oldest = r->started;
      if (r->n < *fewest)
        *fewest = r->n;
    }
  return n;
}

/* Calls whose lock values (svc_batch_kind_t.lock_param) are equal; NULLs are equal too. */
static int same_lock(const char *a, const char *b) {
  return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The value it locks by: the kind's lock parameter. */
static const char *lock_of(const queue_t *q, const item_t *it) {
  return it->values[q->kind->lock_param - 1];
}

/* The lanes of a kind that locks (pump()): as many as its statements that may run at once, at
 * most SVC_BATCH_LANES; one for a kind that does not. */
static unsigned lanes_of(const queue_t *q, int limit) {
  if (q->kind->lock_param <= 0 || limit <= 1)
    return 1;
  return limit < SVC_BATCH_LANES ? (unsigned)limit : SVC_BATCH_LANES;
}

/* The lane of a call: an integer lock value's remainder (consecutive ids fall evenly), another
 * value's hash's; NULL lane 0. */
static unsigned lane_of(const queue_t *q, const item_t *it, int limit) {
  unsigned lanes = lanes_of(q, limit);
  const char *v, *p;
  char *end;
  unsigned long long h;

  if (lanes <= 1 || (v = lock_of(q, it)) == NULL)
    return 0;
  errno = 0;
  h = strtoull(v, &end, 10);
  if (*v == '\0' || *end != '\0' || errno != 0)
    for (h = 1469598103934665603ull, p = v; *p; p++)
      h = (h ^ (unsigned char)*p) * 1099511628211ull;
  return (unsigned)(h % (unsigned)lanes);
}

/* Whether a running statement carries its lock value (a kind that locks). */
static int held(const queue_t *q, const item_t *it) {
  const run_t *r;
  size_t k;

  for (r = q->runs; r; r = r->next)
    for (k = 0; k < r->n; k++)
      if (same_lock(lock_of(q, r->items[k]), lock_of(q, it)))
        return 1;
  return 0;
}

/* Whether it may go now: any call (ANY_LANE), else one of lane whose lock value no running
 * statement carries. */
#define ANY_LANE UINT_MAX
/* A statement's calls all come from the calls looked at (ready(), take()). */
_Static_assert(SVC_BATCH_MAX <= SVC_BATCH_SCAN, "a batch fits in the look-ahead");
static int may_go(const queue_t *q, const item_t *it, unsigned lane) {
  return lane == ANY_LANE || (it->lane == lane && !held(q, it));
}

/* Whether a waiting call (among the first SVC_BATCH_SCAN) has the lock value of a running
 * statement: it would wait for that statement's locks. Each such call counts once in
 * stats.held. */
static int contended(queue_t *q) {
  item_t *it;
  size_t seen = 0;
  int any = 0;

  for (it = q->head; it && seen++ < SVC_BATCH_SCAN; it = it->next) {
    if (!held(q, it))
      continue;
    any = 1;
    if (!it->held) {
      it->held = 1;
      q->stats.held++;
    }
  }
  return any;
}

/* The waiting calls of lane that may go now (at most SVC_BATCH_MAX, among the first
 * SVC_BATCH_SCAN waiting). Any lane: every waiting call may go, so no need to look. */
static size_t ready(const queue_t *q, unsigned lane) {
  const item_t *it;
  size_t n = 0, seen = 0;

  if (lane == ANY_LANE)
    return q->waiting < SVC_BATCH_MAX ? q->waiting : SVC_BATCH_MAX;
  for (it = q->head; it && n < SVC_BATCH_MAX && seen++ < SVC_BATCH_SCAN; it = it->next)
    n += (size_t)may_go(q, it, lane);
  return n;
}

/* Whether a call taken already has its request key (svc_batch_kind_t.key_param). */
static int key_taken(const queue_t *q, const item_t *it, item_t *const *out, size_t took) {
  int k = q->kind->key_param - 1;

  if (k < 0 || it->values[k] == NULL)
    return 0;
  for (size_t i = 0; i < took; i++)
    if (out[i]->values[k] != NULL && strcmp(out[i]->values[k], it->values[k]) == 0 &&
        same_lock(out[i]->values[0], it->values[0]))
      return 1;
  return 0;
}

/* Take the calls of lane that may go off the queue, in order, into out (room for
 * SVC_BATCH_MAX), at most n of them, among the first SVC_BATCH_SCAN waiting, none with the
 * request key of one taken before it. The count. */
static size_t take(queue_t *q, unsigned lane, size_t n, item_t **out) {
  size_t took = 0, seen = 0;
  item_t **pp = &q->head, *it;

  while ((it = *pp) != NULL && took < n && took < SVC_BATCH_MAX && seen++ < SVC_BATCH_SCAN) {
    if (!may_go(q, it, lane) || key_taken(q, it, out, took)) {
      pp = &it->next;
      continue;
    }
    *pp = it->next;
    it->next = NULL;
    q->waiting--;
    out[took++] = it;
  }
  if (*pp == NULL) /* the last waiting call was looked at: pp is the end of the queue now */
    q->tail = pp;
  return took;
}

/* Start one statement with the calls taken (those whose call has ended are dropped). */
static void start_run(queue_t *q, unsigned lane, item_t **took, size_t n) {
  run_t *run = malloc(sizeof(*run) + n * sizeof(run->items[0]));
  size_t k;

  if (run == NULL) {
    /* Out of memory: the calls fail. */
    db_result_t oom = {.err = DB_ENOMEM};
    for (k = 0; k < n; k++) {
      deliver(took[k], &oom);
      item_free(took[k]);
    }
    return;
  }
  run->q = q;
  run->lane = lane;
  run->req = NULL;
  run->n = 0;
  for (k = 0; k < n; k++) {
    if (rpc_call_done(took[k]->call))
      item_free(took[k]);
    else
      run->items[run->n++] = took[k];
  }
  if (run->n == 0) {
    free(run);
    return;
  }
  run_send(run);
}

/* Take up to n of lane's calls that may go, and start them: fewer than SVC_BATCH_MIN each
 * alone. */
static void start(queue_t *q, unsigned lane, size_t n) {
  item_t *took[SVC_BATCH_MAX];
  size_t got = take(q, lane, n, took), k;

  if (got >= SVC_BATCH_MIN) {
    start_run(q, lane, took, got);
    return;
  }
  for (k = 0; k < got; k++)
    start_run(q, lane, &took[k], 1);
}

/* Whether lane has a running statement younger than SVC_BATCH_STALL_MS. */
static int lane_busy(const queue_t *q, unsigned lane, uint64_t now) {
  const run_t *r;

  for (r = q->runs; r; r = r->next)
    if (r->lane == lane && now - r->started < SVC_BATCH_STALL_MS)
      return 1;
  return 0;
}

/* Wake pump() at the loop time at (ms), the earlier of it and an earlier wake already set. */
static void wake_at(queue_t *q, uint64_t now, uint64_t at) {
  uint64_t in = at > now ? at - now : 0;

  if (uv_is_active((uv_handle_t *)&q->wake) && uv_timer_get_due_in(&q->wake) <= in)
    return;
  (void)uv_timer_start(&q->wake, pump_later, in, 0);
}

/* pump() for a kind that locks nothing: start statements while the kind has room, each with
 * every waiting call (up to the most), but fewer than SVC_BATCH_MIN each alone. While one
 * runs, another starts only with at least as many calls as the smallest running one carries:
 * calls that trickle in (a client that starts each call as another ends) then wait for a batch
 * of that size, or for a running one to end, instead of going in ever smaller batches, each
 * paying the statement's fixed costs; a group that arrives together (one read) goes at once. */
static void pump_plain(queue_t *q, int limit, uint64_t now) {
  while (q->waiting > 0) {
    uint64_t oldest;
    size_t fewest, n = ready(q, ANY_LANE);
    int young = young_runs(q, now, &oldest, &fewest);

    if (young >= limit || (young > 0 && n < fewest)) {
      wake_at(q, now, oldest + SVC_BATCH_STALL_MS + 1);
      return;
    }
    start(q, ANY_LANE, n < SVC_BATCH_MIN ? n : SVC_BATCH_MAX);
    if (q->kind->lock_param > 0 && q->waiting > 0 && contended(q)) {
      q->contended |= 1; /* what is left shares a value with what just started */
      pump_lanes(q, limit, now);
      return;
    }
  }
}

/* pump() for a kind that locks by a parameter's value: its calls run in lanes, as many as its
 * statements may run at once, a value always in the same lane. A lane runs one statement at a
 * time, so statements side by side never wait for each other's locks (a batch holding most
 * values would make the next wait for it in the database); a call whose value a running
 * statement carries (one that stopped counting, say) waits for it to end. While another lane
 * runs, a lane waits for as many calls as its last statement carried (the lane's calls in
 * flight: those answered come back), at most SVC_BATCH_LINGER_US; then it goes with what it
 * has, and waits for fewer next time. With nothing else running it goes at once. */
static void pump_lanes(queue_t *q, int limit, uint64_t now) {
  unsigned lanes = lanes_of(q, limit), lane;
  int started = 1;

  while (q->waiting > 0 && started) {
    started = 0;
    for (lane = 0; lane < lanes && q->waiting > 0; lane++) {
      uint64_t oldest;
      size_t fewest, n;
      int young = young_runs(q, now, &oldest, &fewest);

      if (young >= limit) {
        wake_at(q, now, oldest + SVC_BATCH_STALL_MS + 1);
        return;
      }
      if (lane_busy(q, lane, now) || (n = ready(q, lane)) == 0) {
        q->since[lane] = 0;
        continue;
      }
      if (n < q->want[lane] && young > 0) {
        uint64_t t = uv_hrtime() / 1000;

        if (q->since[lane] == 0)
          q->since[lane] = t;
        if (t - q->since[lane] < SVC_BATCH_LINGER_US) {
          wake_at(q, now, now + (SVC_BATCH_LINGER_US - (t - q->since[lane]) + 999) / 1000);
          continue;
        }
        q->want[lane] = (q->want[lane] + n) / 2; /* fewer calls came than last time */
      } else if (n >= q->want[lane]) {
        q->want[lane] = n;
      }
      q->since[lane] = 0;
      start(q, lane, n < SVC_BATCH_MIN ? n : SVC_BATCH_MAX);
      started = 1;
    }
  }
  if (q->waiting > 0) { /* a busy lane's calls go when its statement stops counting */
    uint64_t oldest;
    size_t fewest;

    if (young_runs(q, now, &oldest, &fewest) > 0)
      wake_at(q, now, oldest + SVC_BATCH_STALL_MS + 1);
  }
}

/* How many statements of kind may run at once (--db-batch-inflight, --db-write-batch-inflight). */
static int limit_of(const server_t *srv, const svc_batch_kind_t *kind) {
  return kind->writes ? srv->cfg.db_write_batch_inflight : srv->cfg.db_batch_inflight;
}

/* Start what the kind has room for; without room, wake when the oldest running statement stops
 * counting (or, for lanes, when one stops waiting for calls). A kind that locks runs in lanes
 * while any of its last 64 pumps found a waiting call whose lock value a running statement
 * carries (a client with more calls in flight than values, or one value flooded); otherwise,
 * as a kind that locks nothing, the calls that arrive together go together, and never with a
 * value that runs. */
static void pump(queue_t *q) {
  server_t *srv = q->b->srv;
  int limit = limit_of(srv, q->kind);
  uint64_t now = uv_now(srv->loop);

  (void)uv_timer_stop(&q->wake);
  if (q->kind->lock_param > 0 && q->waiting > 0)
    q->contended = q->contended << 1 | (uint64_t)contended(q);
  if (q->kind->lock_param > 0 && q->contended)
    pump_lanes(q, limit, now);
  else
    pump_plain(q, limit, now);
}

static void pump_later(uv_timer_t *t) {
  pump(t->data);
}

/* The loop's next idle phase after calls arrived: start what the kinds they joined have room
 * for. */
static void pump_due(uv_idle_t *h) {
  svc_batches_t *b = h->data;
  unsigned due = b->due;
  int i;

  b->due = 0;
  (void)uv_idle_stop(&b->soon);
  for (i = 0; i < SVC_BATCH_KINDS; i++)
    if (due & (1u << i))
      pump(&b->q[i]);
}

void svc_batched(rpc_call_t *call, const svc_batch_kind_t *kind, const char *const *values,
                 svc_cb cb, void *arg) {
  server_t *srv = rpc_call_server(call);
  svc_batches_t *b = srv->batches;
  db_opts_t o = {0}; /* whose request it is (its connection, its user), as a statement's */
  queue_t *q;
  item_t *it;
  int rc;

  if (b == NULL || srv->db == NULL || srv->cfg.db_batch_inflight <= 0 ||
      (kind->writes && srv->cfg.db_write_batch_inflight <= 0) || kind->nparams > SVC_BATCH_PARAMS) {
    run_alone(call, kind, values, cb, arg);
    return;
  }
  q = &b->q[kind->id];
  q->kind = kind;
  if (q->waiting >= srv->cfg.db_queue_max) {
    rpc_fail(call, GRPC_UNAVAILABLE, "server busy: database queue full, retry later");
    return;
  }
  svc_db_opts(call, NULL, &o);
  if ((rc = db_hold(srv->db, o.owner, o.user)) != 0) {
    db_result_t r = {.err = rc};
    svc_fail_db(call, &r);
    return;
  }
  if ((it = calloc(1, sizeof(*it) + (size_t)kind->nparams * sizeof(it->values[0]))) == NULL) {
    db_unhold(srv->db, o.owner, o.user);
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  rpc_call_ref(call);
  it->pool = srv->db;
  it->owner = o.owner;
  it->user = o.user;
  it->call = call;
  it->cb = cb;
  it->arg = arg;
  memcpy((void *)it->values, values, (size_t)kind->nparams * sizeof(it->values[0]));
  it->lane = lane_of(q, it, limit_of(srv, kind));
  *q->tail = it;
  q->tail = &it->next;
  q->waiting++;
  if (b->closed) {
    pump(q);
    return;
  }
  /* Not at once: the calls that one read from a connection brings in, or that one result
   * ends, arrive in the same turn of the loop, and go together rather than the first alone. */
  if (b->due == 0)
    (void)uv_idle_start(&b->soon, pump_due);
  b->due |= 1u << kind->id;
}

const char *svc_batch_name(svc_batch_id_t id) {
  static const char *const names[SVC_BATCH_KINDS] = {"move", "move_facts", "get_clue", "submit",
                                                     "move_direct"};
  return (unsigned)id < SVC_BATCH_KINDS ? names[id] : "unknown";
}

void svc_batch_stats(const server_t *srv, svc_batch_id_t id, svc_batch_stats_t *st) {
  static const svc_batch_stats_t none;

  *st = srv->batches && (unsigned)id < SVC_BATCH_KINDS ? srv->batches->q[id].stats : none;
}

int svc_batch_start(server_t *srv) {
  svc_batches_t *b = calloc(1, sizeof(*b));
  int i;

  if (b == NULL)
    return -ENOMEM;
  b->srv = srv;
  for (i = 0; i < SVC_BATCH_KINDS; i++) {
    b->q[i].b = b;
    b->q[i].tail = &b->q[i].head;
    (void)uv_timer_init(srv->loop, &b->q[i].wake);
    b->q[i].wake.data = &b->q[i];
  }
  (void)uv_idle_init(srv->loop, &b->soon);
  b->soon.data = b;
  srv->batches = b;
  return 0;
}

void svc_batch_close(server_t *srv) {
  int i;

  if (srv->batches == NULL)
    return;
  for (i = 0; i < SVC_BATCH_KINDS; i++)
    uv_close((uv_handle_t *)&srv->batches->q[i].wake, NULL);
  uv_close((uv_handle_t *)&srv->batches->soon, NULL);
  srv->batches->closed = 1;
  for (i = 0; i < SVC_BATCH_KINDS; i++) /* what waited for the idle phase goes now */
    if (srv->batches->due & (1u << i))
      pump(&srv->batches->q[i]);
  srv->batches->due = 0;
}

void svc_batch_free(server_t *srv) {
  free(srv->batches);
  srv->batches = NULL;
}
