/* The asynchronous PostgreSQL pool: N libpq connections driven by uv_poll, a bounded FIFO of
 * requests waiting for a connection, transactions in pipeline mode, and LISTEN connections.
 *
 * Every connection is a db_conn_t with a state; conn_set_state() is the only place that
 * changes it, and it keeps the idle list, the per-state counts and the pool's health in step.
 * Completions that are not the direct outcome of a result read from the socket (refusals,
 * lost connections, shutdown) go through the pool's deferred list and run from a uv_idle
 * callback, so no user callback ever runs inside db_query(), db_txn() or db_pool_close(). */

#include "db/db.h"
#include "db/owners.h"
#include "db/stmts.h"
#include "log.h"
#include "net/utf8.h"

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define DB_DEFAULT_SIZE 8
#define DB_DEFAULT_QUEUE_MAX 1024
#define DB_DEFAULT_RECONNECT_MIN_MS 100
#define DB_DEFAULT_RECONNECT_MAX_MS 5000
#define DB_DEFAULT_STATEMENT_TIMEOUT_MS 30000
#define DB_DEFAULT_LOCK_TIMEOUT_MS 3000
#define DB_DEFAULT_PER_OWNER_MAX 128
#define DB_DEFAULT_CANCEL_GRACE_MS 10
#define DB_DEFAULT_STALL_GRACE_MS 1000
#define DB_DEFAULT_PREPARED_MAX 256
#define DB_DEFAULT_PREPARED_BUILT_MAX 64
#define DB_PREPARED_TEXT_MAX 16384 /* longer texts run unprepared */
#define DB_MAX_PARAMS 65535 /* the protocol's limit on parameters per statement */

typedef enum conn_state {
  CONN_CONNECTING,   /* PQconnectPoll in progress; the timer is the connect timeout */
  CONN_IDLE,         /* pool: on the idle list, reading only to notice a disconnect */
  CONN_BUSY,         /* pool: one request in flight; the timer is the stall watchdog
                        (conn_watchdog()), or, while a cancel waits to be sent, the cancel
                        grace (a statement that ends by itself costs no cancel) */
  CONN_CANCELLING,   /* pool: the request is being cancelled: a worker thread delivers the
                        cancel request; results are read as in BUSY; the timer bounds it */
  CONN_CANCEL_WAIT,  /* pool: the cancelled request has all its results, but the cancel may
                        not have reached the server yet: nothing is sent until it has, or it
                        could stop the next statement */
  CONN_STALLED,      /* pool: the backend sent nothing for the statement timeout and a grace:
                        a cancel request went out (c->cancel while on its way); results are
                        read as in BUSY; the timer bounds the wait for an answer, after which
                        the connection counts as lost. Not a working connection for health */
  CONN_ROLLBACK,     /* pool: the request left a transaction open; ROLLBACK in flight, under
                        the stall watchdog */
  CONN_LISTEN_SETUP, /* listener: LISTEN sent */
  CONN_LISTENING,    /* listener: delivering notifications */
  CONN_BROKEN,       /* no PGconn; the timer is the reconnect backoff */
  CONN_CLOSING,      /* the pool is closing; the timer's close callback is pending */
  CONN_NSTATES
} conn_state_t;

typedef enum conn_role { ROLE_POOL, ROLE_LISTEN } conn_role_t;

/* A registered statement on one server session. Sessions forget their prepared statements,
 * so a new PGconn starts with every one PREP_NONE. */
enum { PREP_NONE = 0, PREP_SENT = 1 /* Parse in flight */, PREP_READY = 2 };

/* What one session has in one slot of the registry: a name that is no longer the slot's (its
 * text was evicted) is deallocated the next time the connection is used. */
typedef struct db_prep {
  uint64_t name; /* the name prepared (SENT, READY) */
  uint8_t state; /* PREP_* */
} db_prep_t;

typedef struct db_conn db_conn_t;

/* Where a request is; db_cancel() acts on it accordingly. */
typedef enum req_state {
  REQ_NEW,    /* built, not yet submitted */
  REQ_QUEUED, /* on the wait queue */
  REQ_SENT,   /* a connection's request (c->req) */
  REQ_DONE,   /* completed: on the deferred list, or its callback is running */
} req_state_t;

/* A cancel request on its way to the server. libpq 15's PQcancel() blocks (it opens a new
 * connection to the server and waits until the server hangs up, without a timeout), so it
 * runs on a thread of its own, never on the loop, and not on libuv's thread pool either: a
 * server that stopped answering (a hung host) would hold those threads, which the loop's
 * other work needs and which the process waits for on exit. A cancel thread is detached:
 * the pool closes without waiting for it, and the process may exit while it still waits. */
typedef struct cancel_work {
  struct cancel_box *box;
  db_conn_t *conn; /* NULL once the connection moved on (lost, closed): nothing to resume */
  PGcancel *cancel;
  int ok;
  char err[256];
  struct cancel_work *next; /* on the box's delivered list */
} cancel_work_t;

/* Where cancel threads hand their work back to the loop. It outlives the pool while a
 * thread still runs: each thread holds a reference, as does the pool until the async
 * handle has closed. */
typedef struct cancel_box {
  pthread_mutex_t mu;
  uv_async_t async;    /* the pool's: wakes on_cancels_delivered() */
  cancel_work_t *done; /* delivered (or failed), for the loop to take */
  int closed;          /* the pool closed: a thread frees its own work and wakes nobody */
  unsigned refs;
  unsigned running; /* threads not yet finished, at most CANCEL_THREADS_MAX */
} cancel_box_t;

/* Cancel threads at once; a connection that needs one more is dropped instead (the server
 * rolls its statement's transaction back). Only a server that answers no cancel request
 * keeps them running, and each connection waits for its own, so this bounds what a hung
 * server costs while connections keep being lost and made again. */
#define CANCEL_THREADS_MAX 64

/* The poll handle of one socket. It lives apart from the connection because libpq replaces
 * the socket on every reconnect (and may within PQconnectPoll), while a uv_poll_t is bound to
 * one fd and must stay allocated until its close callback. */
typedef struct db_watch {
  uv_poll_t poll;
  db_pool_t *pool;
  db_conn_t *conn; /* NULL once the watch is closing */
  int fd;
  int events; /* UV_READABLE / UV_WRITABLE currently requested */
} db_watch_t;

struct db_req {
  db_req_t *prev, *next; /* wait queue or deferred list */
  req_state_t state;
  db_conn_t *conn;  /* REQ_SENT: the connection running it */
  uint64_t owner;   /* 0: not counted */
  uint64_t user;    /* 0: not counted */
  int heavy;        /* counts against the pool's heavy share (db_opts_t.heavy) */
  int (*still)(void *arg); /* db_opts_t.still, and its argument */
  void *still_arg;
  uint64_t sent_ms; /* uv_now() when sent */
  uint64_t sent_ns; /* uv_hrtime() when sent; 0: never sent (not in the latency histogram) */
  unsigned sharers; /* callers that have not db_cancel()led it yet (db_opts_t.sharers) */
  int cancelled;    /* db_cancel() was called while it ran, by the last of its sharers */
  int cancel_sent;  /* a cancel request for it went out (db_cancel()'s or the watchdog's): a
                       success is not trusted */
  int stalled;      /* the stall watchdog cancelled it */
  int rerun;        /* sent again after its session's saved plans went stale (plans_stale()) */
  db_cb cb;
  void *arg;
  int txn;   /* sent as BEGIN, stmts, COMMIT in one pipeline */
  int tuned; /* wants the pool's session settings (db_opts_t) */
  int nstmts;
  db_stmt_t *stmts; /* copies, in the same allocation */
  PGresult **res;   /* nstmts slots, owned */
  int *ids;         /* nstmts: each statement's slot in the pool's registry, or -1 */
  uint64_t *names;  /* nstmts: the name each statement's slot had when it was looked up */
  int *plan;        /* pipeline: what each command sent is (PLAN_* or a statement's slot) */
  int nplan;
  int piped;        /* sent in pipeline mode (a transaction, or a statement prepared first) */
  int seen;         /* pipeline: command results seen so far */
  int nulls;        /* pipeline: NULL results in a row; one ends each command's results */
  int err;
  char sqlstate[6];
  char constraint[64]; /* NAMEDATALEN */
  /* Room for clued's own refusals whole, a name of 400 bytes included ("unit 12 already has a
   * user named ..."); a longer message is cut between characters (clue__utf8_copy). */
  char message[512];
};

/* The commands of a pipeline, in the order sent: plan[k] says what result k answers. */
enum { PLAN_BEGIN = -1, PLAN_COMMIT = -2, PLAN_TUNE = -3 };

/* A pool connection's session settings (db_config_t.tune_sql). */
typedef enum { TUNING_OFF, TUNING_ON, TUNING_UNKNOWN } tuning_t;
#define PLAN_PARSE(i) (2 * (i))    /* statement i's Parse (PQsendPrepare) */
#define PLAN_EXEC(i) (2 * (i) + 1) /* statement i itself */
/* n statements, each maybe with its Parse; the settings, BEGIN, COMMIT */
#define PLAN_MAX(n) (2 * (n) + DB_TUNE_MAX + 2)

typedef struct req_queue {
  db_req_t *head, *tail;
  size_t len;
} req_queue_t;

struct db_conn {
  db_pool_t *pool;
  conn_role_t role;
  conn_state_t state;
  PGconn *pg;
  db_watch_t *watch;
  uv_timer_t timer; /* connect timeout (CONNECTING), backoff (BROKEN), heartbeat (LISTENING) */
  db_req_t *req;          /* the request in flight (BUSY, CANCELLING, CANCEL_WAIT, ROLLBACK) */
  uint64_t user;          /* the user whose request holds it, until it is idle again (or
                             lost): a cancelled request's connection stays taken */
  int heavy;              /* held by a heavy request, as long as user would be */
  cancel_work_t *cancel;  /* CANCELLING, CANCEL_WAIT: the cancel request on its way */
  int flushing;           /* PQflush returned 1: waiting for the socket to be writable */
  tuning_t tuning;        /* pool: the session's settings; UNKNOWN after a failed request */
  db_prep_t *prep;        /* pool: per slot of the registry, what this PGconn has */
  uint64_t evictions;     /* pool: the registry's evictions when it last deallocated */
  int deallocs;           /* pool: DEALLOCATEs sent whose sync point has not come back */
  int stale_plans;        /* pool: its saved plans no longer fit the tables (plans_stale()):
                             DEALLOCATE ALL and DISCARD PLANS go ahead of its next request */
  unsigned failures;      /* failed attempts since it last became usable: connected (pool),
                             listening (listener) */
  int was_connected;      /* a later connect is a reconnect, for the log */
  db_conn_t *prev, *next; /* idle list (pool role) or listener list */
  char name[48];          /* for the log: "connection 3", "listener \"audit_events\"" */
  char last_fatal[256];   /* the last FATAL notice, usually why the server hung up */
  /* listener role only */
  char *listen_sql;
  db_notify_fn notify;
  void (*ready)(void *arg);
  void (*lost)(void *arg); /* listener: LISTEN no longer in effect */
  void *notify_arg;
  unsigned heartbeat; /* listener: ticks its heartbeat query has gone unanswered (0: none out) */
};

/* A listener asks its backend "SELECT 1" every LISTEN_HEARTBEAT_MS, and counts it lost once
 * a question has gone unanswered for LISTEN_HEARTBEAT_TICKS ticks (500 to 750 ms). A backend
 * that stops answering (stopped, or stuck) while its connection stays open would otherwise
 * never be noticed: its notifications (token revocations, new audit events) stop, and only a
 * lost connection tells the listener's owner to stop trusting what it was told. */
#define LISTEN_HEARTBEAT_MS 250
#define LISTEN_HEARTBEAT_TICKS 2

/* A connection string naming several hosts (a primary and its standbys). libpq tries them in
 * order within one attempt, waiting on each as long as its socket does: a host that does not
 * answer at all (a machine gone, not just its server) holds the attempt until
 * connect_timeout_ms, and an attempt that always starts there never reaches the others. So
 * each failed attempt of a connection starts one host further along: rotation k is the lists
 * of host, hostaddr and port begun at their k-th entry (NULL: that keyword is not rotated,
 * having fewer entries than there are hosts). */
typedef struct host_rotation {
  int n; /* hosts; below 2 nothing rotates */
  char **host, **hostaddr, **port; /* n entries each, or NULL */
} host_rotation_t;

struct db_pool {
  uv_loop_t *loop;
  char *conninfo;
  host_rotation_t rot;
  int rot_last;  /* the rotation begun at the host the last connection made reached: an attempt
                    starts there, and each failed one a host further along (after a failover
                    away from a silent host, a lost connection goes back to the host that
                    works, not through the silent one) */
  char *options; /* the startup "options": the connection string's own, then the timeouts */
  const char *const *tune_sql, *const *untune_sql; /* db_config_t's, or both NULL */
  uint64_t retunes;
  int size;
  size_t queue_max;
  unsigned reconnect_min_ms, reconnect_max_ms, connect_timeout_ms;
  unsigned cancel_grace_ms;
  unsigned stall_grace_ms; /* conn_watchdog() */
  unsigned stall_ms;       /* the statement timeout plus stall_grace_ms */
  db_owners_t owners; /* requests per owner, waiting or in flight; paused owners */
  db_owners_t users;  /* requests per user, waiting or in flight */
  db_owners_t held;   /* connections held per user, at most conns_per_user */
  int heavy_max;      /* connections heavy requests may hold at once (heavy_conns) */
  int nheavy;         /* connections heavy requests hold now */
  uint64_t freed_by;  /* while a freed connection is given out: the user that held it */
  size_t npaused;     /* owners paused: the queue is then searched, not just popped */
  db_conn_t *conns;   /* size pool connections */
  db_stmts_t stmts;   /* statement texts prepared on every connection, lazily */
  db_prep_t *prep;    /* size rows of db_stmts_size() slots, one row per pool connection */
  db_conn_t *idle;    /* idle connections, most recently used first */
  db_conn_t *listeners;
  int nstate[CONN_NSTATES]; /* pool connections per state */
  req_queue_t queue;        /* waiting for a connection, doubly linked for db_cancel() */
  req_queue_t defer;        /* completed; callbacks run from idle_handle */
  uv_idle_t idle_handle;
  int healthy; /* some pool connection is IDLE, BUSY or ROLLBACK */
  int down;    /* unhealthy after a failure: refuse requests at once */
  int standby_ok; /* db_config_t's: a server in recovery is not refused */
  int on_standby; /* the last connection made reached a server in recovery (logged once) */
  int health_reported;
  db_health_fn health_cb;
  void *health_arg;
  int closing;
  unsigned nhandles; /* uv handles not yet closed; the pool is freed at zero */
  cancel_box_t *cancels;
  void (*done)(void *arg);
  void *done_arg;
  uint64_t rng; /* backoff jitter */
  uint64_t queue_full_logged_ms;
  size_t queue_refused;
  uint64_t lat_buckets[DB_LAT_BUCKETS]; /* sent requests by latency (db_stats_t) */
  uint64_t lat_count, lat_sum_ns;
};

const double db_latency_bounds[DB_LAT_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                  0.05,   0.1,   0.25,   0.5,   1};

static void conn_connect(db_conn_t *c);
static void rotation_free(host_rotation_t *r);
static void conn_lost(db_conn_t *c, const char *why);
static void conn_send(db_conn_t *c, db_req_t *q);
static void conn_cancel_start(db_conn_t *c, conn_state_t to);
static void conn_req_done(db_conn_t *c);
static void pool_dispatch(db_pool_t *p);
static void pool_kick(db_pool_t *p);

/* ---- logging ------------------------------------------------------------------------ */

static void db_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line on stderr: libpq messages carry newlines and tabs, which are folded to spaces. */
static void db_log(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  size_t n;

  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  for (char *s = buf; *s; s++)
    if (*s == '\n' || *s == '\r' || *s == '\t')
      *s = ' ';
  n = strlen(buf);
  while (n > 0 && buf[n - 1] == ' ')
    buf[--n] = '\0';
  log_warn("db: %s", buf);
}

/* The reason a connection failed: the server's FATAL message if it sent one before hanging
 * up ("terminating connection due to administrator command"), else libpq's. */
static const char *conn_reason(const db_conn_t *c) {
  if (c->last_fatal[0])
    return c->last_fatal;
  if (c->pg) {
    const char *m = PQerrorMessage(c->pg);
    if (m && *m)
      return m;
  }
  return "connection failed";
}

/* ---- requests ----------------------------------------------------------------------- */

static void queue_push(req_queue_t *qu, db_req_t *q) {
  q->next = NULL;
  q->prev = qu->tail;
  if (qu->tail)
    qu->tail->next = q;
  else
    qu->head = q;
  qu->tail = q;
  qu->len++;
}

static void queue_remove(req_queue_t *qu, db_req_t *q) {
  if (q->prev)
    q->prev->next = q->next;
  else
    qu->head = q->next;
  if (q->next)
    q->next->prev = q->prev;
  else
    qu->tail = q->prev;
  q->prev = q->next = NULL;
  qu->len--;
}

static db_req_t *queue_pop(req_queue_t *qu) {
  db_req_t *q = qu->head;
  if (q)
    queue_remove(qu, q);
  return q;
}

/* One allocation holds the request, its statements, their parameter arrays, result slots and
 * every string, so a request has a single owner and a single free. */
static int req_new(const db_stmt_t *stmts, int n, int txn, db_cb cb, void *arg, db_req_t **out) {
  size_t nvals = 0, bytes = 0, size;
  db_req_t *q;
  db_stmt_t *st;
  const char **vals;
  char *s;

  for (int i = 0; i < n; i++) {
    bytes += strlen(stmts[i].sql) + 1;
    nvals += (size_t)stmts[i].nparams;
    for (int j = 0; j < stmts[i].nparams; j++)
      if (stmts[i].values[j])
        bytes += strlen(stmts[i].values[j]) + 1;
  }
  size = sizeof(*q) + (size_t)n * (sizeof(uint64_t) + sizeof(db_stmt_t) + sizeof(PGresult *)) +
         nvals * sizeof(char *) + ((size_t)n + PLAN_MAX(n)) * sizeof(int) + bytes;
  q = calloc(1, size);
  if (!q)
    return DB_ENOMEM;
  q->names = (uint64_t *)(q + 1);
  st = (db_stmt_t *)(q->names + n);
  q->res = (PGresult **)(st + n);
  vals = (const char **)(q->res + n);
  q->ids = (int *)(vals + nvals);
  q->plan = q->ids + n;
  s = (char *)(q->plan + PLAN_MAX(n));
  for (int i = 0; i < n; i++) {
    size_t len = strlen(stmts[i].sql) + 1;
    memcpy(s, stmts[i].sql, len);
    st[i].sql = s;
    s += len;
    st[i].nparams = stmts[i].nparams;
    st[i].values = vals;
    for (int j = 0; j < stmts[i].nparams; j++) {
      const char *v = stmts[i].values[j];
      if (v) {
        len = strlen(v) + 1;
        memcpy(s, v, len);
        *vals++ = s;
        s += len;
      } else {
        *vals++ = NULL;
      }
    }
  }
  q->stmts = st;
  q->nstmts = n;
  q->txn = txn;
  q->cb = cb;
  q->arg = arg;
  *out = q;
  return 0;
}

static void req_free(db_req_t *q) {
  for (int i = 0; i < q->nstmts; i++)
    PQclear(q->res[i]);
  free(q);
}

static void req_set_error(db_req_t *q, int err, const char *msg) {
  q->err = err;
  q->sqlstate[0] = '\0';
  q->constraint[0] = '\0';
  (void)clue__utf8_copy(q->message, sizeof(q->message), msg ? msg : "");
}

static void req_set_query_error(db_req_t *q, const PGresult *res) {
  const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);

  q->err = DB_EQUERY;
  snprintf(q->sqlstate, sizeof(q->sqlstate), "%s", state ? state : "XX000");
  snprintf(q->constraint, sizeof(q->constraint), "%s", constraint ? constraint : "");
  (void)clue__utf8_copy(q->message, sizeof(q->message), msg ? msg : PQresultErrorMessage(res));
}

/* q holds no queue slot and no connection any more: its owner's count drops (once). */
static void req_done(db_pool_t *p, db_req_t *q) {
  q->state = REQ_DONE;
  q->conn = NULL;
  db_owners_give(&p->owners, q->owner);
  db_owners_give(&p->users, q->user);
  q->owner = 0;
  q->user = 0;
}

/* Run the callback and free the request. The callback may call anything in this file,
 * including db_pool_close(); callers re-check their state afterwards. The owner's count drops
 * first, so that the callback may send the owner's next request. */
static void req_finish(db_pool_t *p, db_req_t *q) {
  db_result_t r = {0};

  if (q->sent_ns != 0) {
    uint64_t ns = uv_hrtime() - q->sent_ns;
    int i = 0;
    while (i < DB_LAT_BUCKETS && (double)ns / 1e9 > db_latency_bounds[i])
      i++;
    if (i < DB_LAT_BUCKETS)
      p->lat_buckets[i]++;
    p->lat_count++;
    p->lat_sum_ns += ns;
  }
  req_done(p, q);
  r.err = q->err;
  r.res = q->res;
  r.nres = q->nstmts;
  r.sqlstate = q->err == DB_EQUERY ? q->sqlstate : "";
  r.constraint = q->err == DB_EQUERY ? q->constraint : "";
  r.message = q->message;
  q->cb(&r, q->arg);
  req_free(q);
}

/* Complete q later, from the loop. Its owner's count drops now: a client that resets streams
 * as fast as it opens them (all within one read) gets its places back at once. */
static void req_defer(db_pool_t *p, db_req_t *q, int err, const char *msg) {
  if (q->err == 0)
    req_set_error(q, err, msg);
  req_done(p, q);
  queue_push(&p->defer, q);
  pool_kick(p);
}

/* ---- watches: one uv_poll_t per socket ----------------------------------------------- */

static void pool_handle_closed(db_pool_t *p);

static void on_watch_closed(uv_handle_t *h) {
  db_watch_t *w = container_of((uv_poll_t *)h, db_watch_t, poll);
  db_pool_t *p = w->pool;

  free(w);
  pool_handle_closed(p);
}

/* Close before PQfinish: uv_close removes the fd from epoll, which must happen while the fd
 * is still ours and not yet reused by another socket. */
static void conn_unwatch(db_conn_t *c) {
  db_watch_t *w = c->watch;

  if (!w)
    return;
  c->watch = NULL;
  w->conn = NULL;
  uv_close((uv_handle_t *)&w->poll, on_watch_closed);
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Watch the connection's current socket for events. While connecting the poll is restarted
 * at every step even when nothing seems to change: libpq may have closed the socket and
 * opened a new one that got the same number, and uv_poll_start re-registers the fd. */
static int conn_watch(db_conn_t *c, int events) {
  db_pool_t *p = c->pool;
  db_watch_t *w = c->watch;
  int fd = PQsocket(c->pg);
  int rc;

  if (fd < 0)
    return UV_EBADF;
  if (w && w->fd != fd) {
    conn_unwatch(c);
    w = NULL;
  }
  if (!w) {
    w = malloc(sizeof(*w));
    if (!w)
      return UV_ENOMEM;
    rc = uv_poll_init(p->loop, &w->poll, fd);
    if (rc != 0) {
      free(w);
      return rc;
    }
    p->nhandles++;
    w->pool = p;
    w->conn = c;
    w->fd = fd;
    w->events = 0;
    c->watch = w;
  }
  if (w->events == events && c->state != CONN_CONNECTING)
    return 0;
  rc = uv_poll_start(&w->poll, events, on_poll);
  w->events = rc == 0 ? events : 0;
  return rc;
}

/* Drop the libpq connection and its watch. A cancel request still on its way is left to
 * finish on its own: it carries its own copy of what it needs, and aims at a backend that
 * this connection no longer uses. */
static void conn_drop_pg(db_conn_t *c) {
  if (c->cancel) {
    c->cancel->conn = NULL;
    c->cancel = NULL;
  }
  conn_unwatch(c);
  if (c->pg) {
    PQfinish(c->pg);
    c->pg = NULL;
  }
  c->flushing = 0;
  c->deallocs = 0;
  if (c->prep) {
    memset(c->prep, 0, db_stmts_size(&c->pool->stmts) * sizeof(*c->prep)); /* PREP_NONE */
    c->evictions = c->pool->stmts.evictions;
  }
}

/* ---- state -------------------------------------------------------------------------- */

static void idle_remove(db_pool_t *p, db_conn_t *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    p->idle = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

static void idle_push(db_pool_t *p, db_conn_t *c) {
  c->prev = NULL;
  c->next = p->idle;
  if (p->idle)
    p->idle->prev = c;
  p->idle = c;
}

/* Pool connections whose backends answer: connected, idle or running a request. STALLED ones
 * (their backends stopped answering) are not among them. */
static int conns_answering(const db_pool_t *p) {
  return p->nstate[CONN_IDLE] + p->nstate[CONN_BUSY] + p->nstate[CONN_CANCELLING] +
         p->nstate[CONN_CANCEL_WAIT] + p->nstate[CONN_ROLLBACK];
}

/* Recompute health after a pool connection changed state. failed: it just failed (lost, or
 * an attempt did not connect); with no working connection left the pool is then "down", and
 * requests fail at once instead of waiting for a connection that may never come. */
static void pool_update_health(db_pool_t *p, int failed) {
  int healthy = conns_answering(p) > 0;

  if (healthy) {
    p->down = 0;
  } else if (failed && !p->down) {
    db_req_t *q;
    size_t n = p->queue.len;

    p->down = 1;
    if (n > 0)
      db_log("no working connection: failing %zu waiting request(s)", n);
    while ((q = queue_pop(&p->queue)))
      req_defer(p, q, DB_EUNAVAILABLE, "database unavailable");
  }
  if (healthy != p->healthy) {
    p->healthy = healthy;
    pool_kick(p); /* the health callback runs from the loop */
  }
}

/* A connection in state s is still taken by the request last sent on it. */
static int conn_holds(conn_state_t s) {
  return s == CONN_BUSY || s == CONN_CANCELLING || s == CONN_CANCEL_WAIT || s == CONN_STALLED ||
         s == CONN_ROLLBACK;
}

/* The one place a connection changes state. Fixes idle-list membership, the per-state counts
 * and the pool's health. */
static void conn_set_state(db_conn_t *c, conn_state_t to) {
  db_pool_t *p = c->pool;
  conn_state_t from = c->state;

  if (from == to)
    return;
  c->state = to;
  if (c->role != ROLE_POOL)
    return;
  if (c->user != 0 && !conn_holds(to)) {
    db_owners_give(&p->held, c->user);
    c->user = 0;
  }
  if (c->heavy && !conn_holds(to)) {
    p->nheavy--;
    c->heavy = 0;
  }
  if (from == CONN_IDLE)
    idle_remove(p, c);
  if (to == CONN_IDLE)
    idle_push(p, c);
  p->nstate[from]--;
  p->nstate[to]++;
  if (!p->closing)
    pool_update_health(p, to == CONN_BROKEN);
}

/* ---- connecting ----------------------------------------------------------------------- */

static unsigned backoff_ms(db_pool_t *p, unsigned failures) {
  uint64_t d = p->reconnect_min_ms;
  uint64_t jitter;

  for (unsigned i = 0; i < failures && d < p->reconnect_max_ms; i++)
    d *= 2;
  if (d > p->reconnect_max_ms)
    d = p->reconnect_max_ms;
  /* Up to a quarter less, so that instances that lost the database together do not all
   * come back in the same millisecond. xorshift64: a private generator, no global state. */
  p->rng ^= p->rng << 13;
  p->rng ^= p->rng >> 7;
  p->rng ^= p->rng << 17;
  jitter = d / 4 ? p->rng % (d / 4 + 1) : 0;
  d -= jitter;
  if (d < p->reconnect_min_ms)
    d = p->reconnect_min_ms;
  return (unsigned)d;
}

static void on_conn_timer(uv_timer_t *t);
static int conn_flush(db_conn_t *c);

/* An attempt failed: try again in ms (backoff_ms() of the failures so far), one host further
 * along (host_rotation_t). */
static void conn_retry(db_conn_t *c, unsigned ms) {
  c->failures++;
  conn_drop_pg(c);
  conn_set_state(c, CONN_BROKEN);
  uv_timer_start(&c->timer, on_conn_timer, ms, 0);
}

/* An attempt to connect, or to set the connection up (a listener's LISTEN), failed: back off
 * and try again. */
static void conn_connect_failed(db_conn_t *c, const char *why) {
  unsigned ms = backoff_ms(c->pool, c->failures);

  db_log("%s: cannot connect: %s; retrying in %u ms", c->name, why, ms);
  conn_retry(c, ms);
}

/* A working connection broke: its request (if any) fails, never retried, since it may or
 * may not have run. Reconnect after the shortest backoff. A connection whose setup had not
 * finished (a listener before LISTEN took effect) was never working: that is a failed
 * attempt, with the growing backoff, or a server that always refuses the setup (LISTEN on a
 * standby) would be connected to again and again every 100 ms. */
static void conn_lost(db_conn_t *c, const char *why) {
  db_pool_t *p = c->pool;
  db_req_t *q = c->req;
  unsigned ms = backoff_ms(p, 0);
  conn_state_t was;

  if (c->state == CONN_CONNECTING || c->state == CONN_LISTEN_SETUP) {
    assert(!q);
    conn_connect_failed(c, why);
    return;
  }
  db_log("%s: disconnected: %s; reconnecting in %u ms", c->name, why, ms);
  c->req = NULL;
  if (q)
    req_defer(p, q, DB_EUNAVAILABLE, why);
  c->failures = 0;
  was = c->state;
  conn_drop_pg(c);
  conn_set_state(c, CONN_BROKEN);
  uv_timer_start(&c->timer, on_conn_timer, ms, 0);
  /* Last: the callback may do anything but close the pool from here. */
  if (c->lost && was == CONN_LISTENING)
    c->lost(c->notify_arg);
}

static void on_notice(void *arg, const PGresult *res) {
  db_conn_t *c = arg;
  const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

  if (!sev || !msg)
    return;
  if (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0)
    snprintf(c->last_fatal, sizeof(c->last_fatal), "%s", msg);
  else if (strcmp(sev, "WARNING") == 0)
    db_log("%s: server warning: %s", c->name, msg);
}

static void listener_start(db_conn_t *c);

/* Whether list (comma-separated) begins with the entry v. */
static int list_begins(const char *list, const char *v) {
  size_t n = strcspn(list, ",");
  return v != NULL && strlen(v) == n && strncmp(list, v, n) == 0;
}

/* The rotation that begins at the host pg reached, or -1. */
static int rotation_reached(const db_pool_t *p, PGconn *pg) {
  for (int i = 0; i < p->rot.n; i++) {
    if (p->rot.host && !list_begins(p->rot.host[i], PQhost(pg)))
      continue;
    if (!p->rot.host && p->rot.hostaddr && !list_begins(p->rot.hostaddr[i], PQhostaddr(pg)))
      continue;
    if (p->rot.port && !list_begins(p->rot.port[i], PQport(pg)))
      continue;
    return i;
  }
  return -1;
}

/* The connection is usable: a pool connection connected, a listener's LISTEN took effect.
 * Only now do its failures start again from none. */
static void conn_usable(db_conn_t *c) {
  if (c->failures > 0)
    db_log("%s: connected (backend pid %d) after %u failed attempt(s)", c->name,
           PQbackendPID(c->pg), c->failures);
  else if (c->was_connected)
    db_log("%s: reconnected (backend pid %d)", c->name, PQbackendPID(c->pg));
  c->failures = 0;
  c->was_connected = 1;
}

/* Whether the server pg reached is in recovery (a hot standby). PostgreSQL 14 and later
 * report in_hot_standby at connect, and again when promoted; an older server says nothing,
 * and a write there fails with 25006 (read-only) instead. */
static int server_in_recovery(PGconn *pg) {
  const char *v = PQparameterStatus(pg, "in_hot_standby");
  return v != NULL && strcmp(v, "on") == 0;
}

/* A connection of a writing pool reached a server in recovery: a standby named by a URL
 * without target_session_attrs=read-write, or the only host of one whose server was rebuilt
 * as a standby. Every write there fails, and so does LISTEN. It is a failed attempt, as
 * target_session_attrs=read-write would make it: the next waits longer and begins at the
 * next host, and until some connection reaches a primary the pool has none that works (Health
 * NOT_SERVING). Logged once, not at every attempt of every connection. */
static void conn_reached_standby(db_conn_t *c) {
  db_pool_t *p = c->pool;

  if (!p->on_standby)
    db_log("%s: the server (host %s, port %s) is in recovery (a standby), where writes fail: "
           "not using it; the pool retries with backoff until it reaches a primary",
           c->name, PQhost(c->pg), PQport(c->pg));
  p->on_standby = 1;
  conn_retry(c, backoff_ms(p, c->failures));
}

static void conn_connected(db_conn_t *c) {
  db_pool_t *p = c->pool;
  int k;

  uv_timer_stop(&c->timer);
  if (PQsetnonblocking(c->pg, 1) != 0) {
    conn_connect_failed(c, "cannot make the connection non-blocking");
    return;
  }
  PQsetNoticeReceiver(c->pg, on_notice, c);
  /* The next attempt begins one host past the one reached, a standby's too: the hosts before
   * it in the list did not answer. */
  if (p->rot.n > 1 && (k = rotation_reached(p, c->pg)) >= 0)
    p->rot_last = k;
  if (!p->standby_ok && server_in_recovery(c->pg)) {
    conn_reached_standby(c);
    return;
  }
  if (p->on_standby) {
    db_log("%s: the server (host %s, port %s) is a primary", c->name, PQhost(c->pg), PQport(c->pg));
    p->on_standby = 0;
  }
  c->tuning = TUNING_OFF;
  c->last_fatal[0] = '\0';
  if (conn_watch(c, UV_READABLE) != 0) {
    conn_lost(c, "cannot watch the socket");
    return;
  }
  if (c->role == ROLE_LISTEN) {
    listener_start(c);
    return;
  }
  conn_usable(c);
  conn_set_state(c, CONN_IDLE);
  pool_dispatch(p);
}

/* Act on what PQconnectPoll asked for. */
static void conn_connect_step(db_conn_t *c, PostgresPollingStatusType st) {
  int rc;

  switch (st) {
  case PGRES_POLLING_READING:
    rc = conn_watch(c, UV_READABLE);
    break;
  case PGRES_POLLING_WRITING:
    rc = conn_watch(c, UV_WRITABLE);
    break;
  case PGRES_POLLING_OK:
    conn_connected(c);
    return;
  case PGRES_POLLING_FAILED:
  default:
    conn_connect_failed(c, conn_reason(c));
    return;
  }
  if (rc != 0)
    conn_connect_failed(c, uv_strerror(rc));
}

static void conn_connect(db_conn_t *c) {
  db_pool_t *p = c->pool;
  /* expand_dbname: the "dbname" value is the whole connection string or URI, and what it
   * sets overrides the keywords before it. Those are defaults: TCP keepalives, so that a
   * query on a silently dead network path fails within about a minute instead of the
   * system's two hours (unix sockets ignore them). Keywords after it override it: the host
   * lists of this attempt's rotation (host_rotation_t). */
  const char *keys[10] = {"keepalives_idle", "keepalives_interval", "keepalives_count", "dbname",
                          "fallback_application_name", "options"};
  const char *vals[10] = {"30", "10", "3", p->conninfo, c->role == ROLE_POOL ? "clued" : "clued-listen",
                          p->options};
  int nk = 6;

  if (p->rot.n > 1) {
    int k = (int)(((unsigned)p->rot_last + c->failures) % (unsigned)p->rot.n);
    if (p->rot.host) {
      keys[nk] = "host";
      vals[nk++] = p->rot.host[k];
    }
    if (p->rot.hostaddr) {
      keys[nk] = "hostaddr";
      vals[nk++] = p->rot.hostaddr[k];
    }
    if (p->rot.port) {
      keys[nk] = "port";
      vals[nk++] = p->rot.port[k];
    }
  }
  keys[nk] = NULL;
  vals[nk] = NULL;

  assert(c->state == CONN_BROKEN && !c->pg && !c->watch);
  c->last_fatal[0] = '\0';
  c->pg = PQconnectStartParams(keys, vals, 1);
  conn_set_state(c, CONN_CONNECTING);
  uv_timer_start(&c->timer, on_conn_timer, p->connect_timeout_ms, 0);
  if (!c->pg) {
    conn_connect_failed(c, "out of memory");
    return;
  }
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    conn_connect_failed(c, conn_reason(c));
    return;
  }
  /* libpq: start as if PQconnectPoll had returned PGRES_POLLING_WRITING. */
  conn_connect_step(c, PGRES_POLLING_WRITING);
}

static void on_conn_timer(uv_timer_t *t) {
  db_conn_t *c = container_of(t, db_conn_t, timer);

  switch (c->state) {
  case CONN_CONNECTING:
    conn_connect_failed(c, "timeout expired");
    break;
  case CONN_BROKEN:
    conn_connect(c);
    break;
  case CONN_BUSY:
    assert(c->req);
    if (c->req->cancelled && !c->req->cancel_sent) {
      conn_cancel_start(c, CONN_CANCELLING); /* the cancel grace is over */
      break;
    }
    db_log("%s: no answer from the backend (pid %d) in %u ms, past the statement timeout: "
           "cancelling its statement",
           c->name, PQbackendPID(c->pg), c->pool->stall_ms);
    c->req->stalled = 1;
    conn_cancel_start(c, CONN_STALLED);
    break;
  case CONN_STALLED: {
    char why[128];
    snprintf(why, sizeof(why), "the backend has not answered a cancel request within %u ms",
             c->pool->stall_grace_ms);
    conn_lost(c, why);
    break;
  }
  case CONN_ROLLBACK: {
    char why[96];
    snprintf(why, sizeof(why), "the backend has not answered ROLLBACK within %u ms",
             c->pool->stall_ms);
    conn_lost(c, why);
    break;
  }
  case CONN_CANCELLING:
  case CONN_CANCEL_WAIT:
    conn_lost(c, "cancel request not delivered in time");
    break;
  case CONN_LISTENING:
    if (c->heartbeat && ++c->heartbeat > LISTEN_HEARTBEAT_TICKS) {
      char why[96];
      snprintf(why, sizeof(why), "the backend has not answered the listener's heartbeat in %u ms",
               LISTEN_HEARTBEAT_MS * LISTEN_HEARTBEAT_TICKS);
      conn_lost(c, why);
      break;
    }
    if (c->heartbeat == 0) {
      if (!PQsendQuery(c->pg, "SELECT 1")) {
        conn_lost(c, conn_reason(c));
        break;
      }
      c->heartbeat = 1;
      (void)conn_flush(c);
    }
    break;
  default:
    assert(!"connection timer fired in an unexpected state");
  }
}

/* ---- requests on a connection ----------------------------------------------------------- */

/* Start (again) the stall watchdog of a busy connection. The server ends any statement at the
 * statement timeout; a backend that has sent no result for that long plus stall_grace_ms is
 * not answering at all: stopped, stuck, or behind a network path that went silent without a
 * reset. No server-side timer can end that, so clued's own does: it sends a cancel request
 * (CONN_STALLED), and a backend that does not answer that either within the grace costs the
 * connection. Every result starts it again, since each statement of a pipeline has the whole
 * timeout (a row lock wait included: the lock timeout is shorter). */
static void conn_watchdog(db_conn_t *c) {
  uv_timer_start(&c->timer, on_conn_timer, c->pool->stall_ms, 0);
}

/* Push buffered output. Returns 0, or -1 when the connection was lost (c is BROKEN now). */
static int conn_flush(db_conn_t *c) {
  int r = PQflush(c->pg);

  if (r < 0) {
    conn_lost(c, conn_reason(c));
    return -1;
  }
  c->flushing = r == 1;
  if (conn_watch(c, UV_READABLE | (c->flushing ? UV_WRITABLE : 0)) != 0) {
    conn_lost(c, "cannot watch the socket");
    return -1;
  }
  return 0;
}

/* Each statement's slot as it is now. A built text may have been evicted since the request
 * was made (by other requests while it waited): it is registered again, from the request's
 * copy of it. That in turn may evict the slot of one of the request's own statements, which
 * then runs unprepared. */
static void req_slots_renew(db_req_t *q, db_stmts_t *r) {
  for (int i = 0; i < q->nstmts; i++)
    if (q->ids[i] >= 0 && db_stmts_name_of(r, q->ids[i]) != q->names[i])
      q->ids[i] = db_stmts_id(r, q->stmts[i].sql, &q->names[i]);
  for (int i = 0; i < q->nstmts; i++)
    if (q->ids[i] >= 0 && db_stmts_name_of(r, q->ids[i]) != q->names[i])
      q->ids[i] = -1;
}

/* Deallocate what this session has prepared under names its slots no longer have (their texts
 * were evicted), so that it holds no more statements than the registry has slots. Pipeline
 * mode, ahead of the request: each DEALLOCATE has a sync point of its own, so that neither the
 * request nor another DEALLOCATE depends on how it ends. Returns libpq's 1 or 0. */
static int conn_send_deallocs(db_conn_t *c) {
  db_stmts_t *r = &c->pool->stmts;
  char sql[16 + DB_STMTS_NAME_MAX];

  if (c->stale_plans) {
    /* Every statement of the session goes (each slot is PREP_NONE already, conn_reset_plans()),
     * and the plans PL/pgSQL functions saved in it are made again on their next use. */
    if (!PQsendQueryParams(c->pg, "DEALLOCATE ALL", 0, NULL, NULL, NULL, NULL, 0) ||
        !PQpipelineSync(c->pg) ||
        !PQsendQueryParams(c->pg, "DISCARD PLANS", 0, NULL, NULL, NULL, NULL, 0) ||
        !PQpipelineSync(c->pg))
      return 0;
    c->deallocs += 2;
    c->stale_plans = 0;
  }
  for (unsigned id = r->constant_max; id < db_stmts_size(r); id++) {
    db_prep_t *pr = &c->prep[id];

    if (pr->state == PREP_NONE || pr->name == db_stmts_name_of(r, (int)id))
      continue;
    memcpy(sql, "DEALLOCATE ", 11);
    db_stmts_name(pr->name, sql + 11);
    if (!PQsendQueryParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0) || !PQpipelineSync(c->pg))
      return 0;
    pr->state = PREP_NONE;
    c->deallocs++;
  }
  c->evictions = r->evictions;
  return 1;
}

/* Send statement i of q, prepared if it is registered: its Parse first when this session has
 * not prepared it yet (pipeline mode only). Returns libpq's 1 or 0. */
static int conn_send_stmt(db_conn_t *c, db_req_t *q, int i) {
  const db_stmt_t *s = &q->stmts[i];
  int id = q->ids[i];
  char name[DB_STMTS_NAME_MAX];

  if (id < 0) {
    q->plan[q->nplan++] = PLAN_EXEC(i);
    return PQsendQueryParams(c->pg, s->sql, s->nparams, NULL, s->values, NULL, NULL, 0);
  }
  /* conn_send_deallocs() ran since the slot last changed its name. */
  assert(c->prep[id].state == PREP_NONE || c->prep[id].name == q->names[i]);
  db_stmts_name(q->names[i], name);
  if (c->prep[id].state == PREP_NONE) {
    assert(q->piped);
    if (!PQsendPrepare(c->pg, name, s->sql, s->nparams, NULL))
      return 0;
    /* A second use in this pipeline needs no Parse of its own. */
    c->prep[id] = (db_prep_t){.name = q->names[i], .state = PREP_SENT};
    q->plan[q->nplan++] = PLAN_PARSE(i);
  }
  q->plan[q->nplan++] = PLAN_EXEC(i);
  return PQsendQueryPrepared(c->pg, name, s->nparams, s->values, NULL, NULL, 0);
}

/* The session settings q runs with. */
static tuning_t req_tuning(const db_req_t *q) {
  return q->tuned ? TUNING_ON : TUNING_OFF;
}

static void conn_send(db_conn_t *c, db_req_t *q) {
  PGconn *pg = c->pg;
  tuning_t want = req_tuning(q);
  int retune = c->pool->tune_sql != NULL && c->tuning != want;
  int evicted, ok = 1;

  assert(c->role == ROLE_POOL && c->state == CONN_IDLE && !c->req && !c->user && !c->heavy);
  c->req = q;
  if (q->user != 0 && db_owners_take(&c->pool->held, q->user) == 0)
    c->user = q->user; /* out of memory: not counted, as for user 0 */
  if (q->heavy) {
    c->heavy = 1;
    c->pool->nheavy++;
  }
  q->state = REQ_SENT;
  q->conn = c;
  q->sent_ms = uv_now(c->pool->loop);
  q->sent_ns = uv_hrtime();
  q->nplan = 0;
  q->seen = 0;
  conn_set_state(c, CONN_BUSY);
  conn_watchdog(c);
  req_slots_renew(q, &c->pool->stmts);
  evicted = c->evictions != c->pool->stmts.evictions || c->stale_plans;
  /* A lone statement this session has prepared (or that is not registered) goes as it is;
   * one still to prepare, or that needs the session's settings changed first or evicted
   * statements deallocated, goes in a pipeline after what it needs: one round trip either
   * way. */
  q->piped =
      q->txn || retune || evicted || (q->ids[0] >= 0 && c->prep[q->ids[0]].state != PREP_READY);
  if (q->piped) {
    /* A transaction is one round trip: BEGIN, the statements and COMMIT, then a sync point.
     * A failing command makes the server skip the rest up to the sync, COMMIT included, and
     * leaves the transaction aborted; conn_req_done() rolls it back. */
    ok = PQenterPipelineMode(pg);
    if (ok && evicted)
      ok = conn_send_deallocs(c);
    if (ok && retune) {
      /* Before BEGIN they join the transaction: a failure that rolls the transaction back
       * takes the settings with it, and conn_req_done() then forgets what the session has.
       * They take no snapshot (db_config_t), so a SET TRANSACTION can still come first. */
      const char *const *set = want == TUNING_ON ? c->pool->tune_sql : c->pool->untune_sql;

      for (; ok && *set; set++) {
        q->plan[q->nplan++] = PLAN_TUNE;
        ok = PQsendQueryParams(pg, *set, 0, NULL, NULL, NULL, NULL, 0);
      }
      c->tuning = want;
      c->pool->retunes++;
    }
    if (ok && q->txn) {
      q->plan[q->nplan++] = PLAN_BEGIN;
      ok = PQsendQueryParams(pg, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
    }
    for (int i = 0; ok && i < q->nstmts; i++)
      ok = conn_send_stmt(c, q, i);
    if (ok && q->txn) {
      q->plan[q->nplan++] = PLAN_COMMIT;
      ok = PQsendQueryParams(pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
    }
    ok = ok && PQpipelineSync(pg);
  } else {
    ok = conn_send_stmt(c, q, 0);
  }
  if (!ok) {
    conn_lost(c, conn_reason(c));
    return;
  }
  (void)conn_flush(c);
}

/* Whether q failed only because its session's saved plans no longer fit the tables: a
 * column's type changed (ALTER TABLE) under a statement this session prepared, or under a
 * plan a PL/pgSQL function saved in it. Each such plan fails the same way until the session
 * drops it (conn_reset_plans()). */
static int plans_stale(const db_req_t *q) {
  return (strcmp(q->sqlstate, "0A000") == 0 &&
          strcmp(q->message, "cached plan must not change result type") == 0) ||
         (strcmp(q->sqlstate, "42804") == 0 &&
          strstr(q->message, "does not match that when preparing the plan") != NULL);
}

/* q failed on stale plans (plans_stale()), so nothing of it took effect: the session drops
 * every statement it prepared and the plans its functions saved, ahead of q sent again on it,
 * once (conn_send_deallocs()). On the same connection: another may hold the same stale plans,
 * and dropping this one would leave a pool of one without a connection. */
static void conn_reset_plans(db_conn_t *c, db_req_t *q) {
  db_pool_t *p = c->pool;

  db_log("%s: %s (the tables changed under the session's saved plans); running the request "
         "again after DEALLOCATE ALL and DISCARD PLANS",
         c->name, q->message);
  for (int i = 0; i < q->nstmts; i++) {
    PQclear(q->res[i]);
    q->res[i] = NULL;
  }
  req_set_error(q, 0, NULL);
  q->rerun = 1;
  memset(c->prep, 0, db_stmts_size(&p->stmts) * sizeof(*c->prep)); /* PREP_NONE */
  c->stale_plans = 1;
  c->req = NULL;
  q->conn = NULL;
  conn_set_state(c, CONN_IDLE);
  conn_send(c, q);
}

/* The connection's request has all its results. Roll back if it left a transaction open;
 * otherwise hand the connection to the next waiting request and run the callback. */
static void conn_req_done(db_conn_t *c) {
  db_pool_t *p = c->pool;
  db_req_t *q = c->req;
  PGTransactionStatusType ts;

  if (c->state == CONN_CANCELLING || (c->state == CONN_STALLED && c->cancel)) {
    /* The backend answered; only the cancel's delivery is awaited now, with its own bound. */
    if (c->state == CONN_STALLED)
      uv_timer_start(&c->timer, on_conn_timer, p->connect_timeout_ms, 0);
    conn_set_state(c, CONN_CANCEL_WAIT); /* conn_cancel_done() comes back here */
    return;
  }
  uv_timer_stop(&c->timer); /* a cancel grace that is no longer needed */
  ts = PQtransactionStatus(c->pg);
  if (q->err != 0 || ts != PQTRANS_IDLE)
    c->tuning = TUNING_UNKNOWN; /* a rollback may have undone the settings sent with it */
  if (ts != PQTRANS_IDLE) {
    if (c->state == CONN_ROLLBACK || ts == PQTRANS_UNKNOWN) {
      conn_lost(c, "cannot end the transaction");
      return;
    }
    if (!q->txn && q->err == 0)
      db_log("%s: a statement left a transaction open; rolling it back", c->name);
    if (!PQsendQuery(c->pg, "ROLLBACK")) {
      conn_lost(c, conn_reason(c));
      return;
    }
    conn_set_state(c, CONN_ROLLBACK);
    conn_watchdog(c);
    (void)conn_flush(c);
    return;
  }
  if (q->err == DB_EQUERY && !q->rerun && !q->cancel_sent && !q->cancelled && !p->closing &&
      plans_stale(q)) {
    conn_reset_plans(c, q);
    return;
  }
  /* A request that a cancel request was sent for (its callers' or the watchdog's) may have
   * ended well only because the cancel cut short a commit's wait for a synchronous standby:
   * PostgreSQL then keeps the transaction committed on the primary alone and answers success,
   * with only a WARNING (SQLSTATE 01000, which any warning has) to say so. Its outcome is
   * told as unknown, like a lost connection's, whether or not the cancel arrived in time to
   * matter: nothing else tells the two apart. A failure stands: its transaction rolled
   * back. */
  if (q->cancel_sent && q->err == 0)
    req_set_error(q, DB_EUNAVAILABLE,
                  q->stalled ? "the database stalled; the outcome is unknown"
                             : "cancelled; the outcome is unknown");
  c->req = NULL;
  q->conn = NULL;
  p->freed_by = c->user;
  conn_set_state(c, CONN_IDLE);
  /* The callback may submit the next step of its call, which then competes for this
   * connection with the requests that waited (queue_next()): a user holding fewer
   * connections goes first, whether its request waited or is this next step. */
  req_finish(p, q);
  if (!p->closing)
    pool_dispatch(p);
  p->freed_by = 0;
}

/* An error the session does not survive: the server is about to hang up. */
static int result_ends_session(const db_conn_t *c, const PGresult *res) {
  const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

  if (PQstatus(c->pg) == CONNECTION_BAD)
    return 1;
  if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
    return 1;
  /* 08: connection exception; 57P01..57P03: the server is shutting down or terminated us. */
  return state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0);
}

/* Handle an error result; returns -1 when it ended the connection. */
static int conn_on_error(db_conn_t *c, PGresult *res) {
  char why[256];

  if (result_ends_session(c, res)) {
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    snprintf(why, sizeof(why), "%s", msg ? msg : conn_reason(c));
    PQclear(res);
    conn_lost(c, why);
    return -1;
  }
  if (c->req->err == 0)
    req_set_query_error(c->req, res);
  return 0;
}

/*
 * Sort one command's result: true when the caller keeps it (a success, or an error recorded
 * on the request); false when it was consumed here (the connection ended). COPY and friends
 * would leave the connection in a state this pool cannot drive, so they end it.
 */
static bool conn_result_usable(db_conn_t *c, PGresult *res, const char *unsupported) {
  switch (PQresultStatus(res)) {
  case PGRES_COMMAND_OK:
  case PGRES_TUPLES_OK:
  case PGRES_EMPTY_QUERY:
    return true;
  case PGRES_FATAL_ERROR:
    return conn_on_error(c, res) == 0;
  default:
    PQclear(res);
    req_set_error(c->req, DB_EQUERY, "unsupported result (COPY is not supported)");
    conn_lost(c, unsupported);
    return false;
  }
}

static void conn_on_query_result(db_conn_t *c, PGresult *res) {
  db_req_t *q = c->req;

  if (!res) {
    conn_req_done(c);
    return;
  }
  if (!conn_result_usable(c, res, "unsupported result (COPY)"))
    return;
  PQclear(q->res[0]);
  q->res[0] = res;
}

/* A result of conn_send_deallocs(): the DEALLOCATE's, or its sync point. A DEALLOCATE that
 * failed is only logged: the name is never given again, so at worst the session keeps one
 * statement more than its share until it ends. */
static void conn_on_dealloc_result(db_conn_t *c, PGresult *res) {
  char why[256];

  switch (PQresultStatus(res)) {
  case PGRES_PIPELINE_SYNC:
    c->deallocs--;
    break;
  case PGRES_COMMAND_OK:
    break;
  default:
    if (result_ends_session(c, res)) {
      const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
      snprintf(why, sizeof(why), "%s", msg ? msg : conn_reason(c));
      PQclear(res);
      conn_lost(c, why);
      return;
    }
    db_log("%s: DEALLOCATE of an evicted statement failed: %s", c->name, PQresultErrorMessage(res));
    break;
  }
  PQclear(res);
}

static void conn_on_pipeline_result(db_conn_t *c, PGresult *res) {
  db_req_t *q = c->req;
  int k, slot, parse;

  if (!res) {
    /* The end of one command's results. Never two in a row: that would mean libpq lost
     * step with the server (and would loop here for ever). */
    if (PQstatus(c->pg) == CONNECTION_BAD || ++q->nulls > 1)
      conn_lost(c, PQstatus(c->pg) == CONNECTION_BAD ? conn_reason(c) : "pipeline out of step");
    return;
  }
  q->nulls = 0;
  if (c->deallocs > 0) {
    conn_on_dealloc_result(c, res);
    return;
  }
  if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
    PQclear(res);
    if (PQexitPipelineMode(c->pg) != 1) {
      conn_lost(c, "cannot leave pipeline mode");
      return;
    }
    conn_req_done(c);
    return;
  }
  k = q->seen++;
  if (k >= q->nplan) {
    PQclear(res);
    conn_lost(c, "unexpected result in pipeline");
    return;
  }
  slot = q->plan[k] >= 0 ? q->plan[k] / 2 : -1; /* the statement this command belongs to */
  parse = q->plan[k] >= 0 && q->plan[k] % 2 == 0;
  /* A Parse that did not succeed leaves the name free: the next use sends it again. */
  if (parse)
    c->prep[q->ids[slot]].state = PQresultStatus(res) == PGRES_COMMAND_OK ? PREP_READY : PREP_NONE;
  if (PQresultStatus(res) == PGRES_PIPELINE_ABORTED) {
    PQclear(res);
    return;
  }
  if (!conn_result_usable(c, res, "unsupported result in pipeline"))
    return;
  /* A statement's slot holds its result, or the error of its Parse. */
  if (slot >= 0 && (!parse || PQresultStatus(res) == PGRES_FATAL_ERROR)) {
    PQclear(q->res[slot]);
    q->res[slot] = res;
  } else {
    PQclear(res);
  }
}

static void conn_on_rollback_result(db_conn_t *c, PGresult *res) {
  if (!res) {
    conn_req_done(c);
    return;
  }
  if (PQresultStatus(res) != PGRES_COMMAND_OK) {
    char why[256];
    snprintf(why, sizeof(why), "ROLLBACK failed: %s", PQresultErrorMessage(res));
    PQclear(res);
    conn_lost(c, why);
    return;
  }
  PQclear(res);
}

/* Read every result that is complete. Each step re-checks the state: a callback run on the
 * way may have sent a new request on this connection, or closed the pool. */
static void conn_read_results(db_conn_t *c) {
  while ((c->state == CONN_BUSY || c->state == CONN_CANCELLING || c->state == CONN_STALLED ||
          c->state == CONN_ROLLBACK) &&
         !PQisBusy(c->pg)) {
    PGresult *res = PQgetResult(c->pg);

    /* Progress: the watchdog starts again, unless a cancel grace is running. */
    if (res && c->state == CONN_BUSY && (!c->req->cancelled || c->req->cancel_sent))
      conn_watchdog(c);
    if (c->state == CONN_ROLLBACK)
      conn_on_rollback_result(c, res);
    else if (c->req->piped)
      conn_on_pipeline_result(c, res);
    else
      conn_on_query_result(c, res);
  }
}

/* ---- cancelling ----------------------------------------------------------------------- */

static void cancel_box_release(cancel_box_t *b) {
  unsigned left;

  pthread_mutex_lock(&b->mu);
  left = --b->refs;
  pthread_mutex_unlock(&b->mu);
  if (left == 0) {
    pthread_mutex_destroy(&b->mu);
    free(b);
  }
}

/* On a cancel thread: PQcancel opens a connection to the server, sends the cancel key and
 * waits until the server has acted on it (signalled the backend) and hung up. Then the work
 * goes back to the loop, unless the pool closed meanwhile. */
static void *cancel_thread(void *arg) {
  cancel_work_t *cw = arg;
  cancel_box_t *b = cw->box;

  cw->ok = PQcancel(cw->cancel, cw->err, sizeof(cw->err));
  pthread_mutex_lock(&b->mu);
  b->running--;
  if (!b->closed) {
    cw->next = b->done;
    b->done = cw;
    uv_async_send(&b->async);
    cw = NULL;
  }
  pthread_mutex_unlock(&b->mu);
  if (cw) {
    PQfreeCancel(cw->cancel);
    free(cw);
  }
  cancel_box_release(b);
  return NULL;
}

/* Start cw on a detached thread that blocks every signal (they are the loop's). 0, or -1
 * when none may or can start. */
static int cancel_thread_start(cancel_box_t *b, cancel_work_t *cw) {
  pthread_attr_t attr;
  pthread_t t;
  sigset_t all, old;
  int rc;

  pthread_mutex_lock(&b->mu);
  if (b->running >= CANCEL_THREADS_MAX) {
    pthread_mutex_unlock(&b->mu);
    return -1;
  }
  b->running++;
  b->refs++;
  pthread_mutex_unlock(&b->mu);
  cw->box = b;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = pthread_attr_init(&attr);
  if (rc == 0) {
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&t, &attr, cancel_thread, cw);
    pthread_attr_destroy(&attr);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    pthread_mutex_lock(&b->mu);
    b->running--;
    b->refs--; /* the pool still holds one: never the last */
    pthread_mutex_unlock(&b->mu);
    return -1;
  }
  return 0;
}

/* The cancel request reached the server (or failed to). The backend has the signal: a
 * statement still running ends with 57014, and one that already ended is not touched (an
 * idle backend ignores it). The connection may now be used again. */
static void conn_cancel_done(db_conn_t *c) {
  conn_state_t was = c->state;

  if (was == CONN_STALLED) {
    /* A backend that is alive answers a cancel at once: the grace starts again. */
    uv_timer_start(&c->timer, on_conn_timer, c->pool->stall_grace_ms, 0);
    return;
  }
  uv_timer_stop(&c->timer);
  conn_set_state(c, CONN_BUSY);
  if (was == CONN_CANCEL_WAIT)
    conn_req_done(c);
  else
    conn_watchdog(c);
}

/* The loop takes the cancel requests delivered since it last looked. */
static void on_cancels_delivered(uv_async_t *h) {
  cancel_box_t *b = container_of(h, cancel_box_t, async);
  cancel_work_t *cw, *next;

  pthread_mutex_lock(&b->mu);
  cw = b->done;
  b->done = NULL;
  pthread_mutex_unlock(&b->mu);
  for (; cw; cw = next) {
    db_conn_t *c = cw->conn;

    next = cw->next;
    if (!cw->ok)
      db_log("%s: cancel request failed: %s", c ? c->name : "a closed connection", cw->err);
    PQfreeCancel(cw->cancel);
    free(cw);
    if (c) {
      assert(c->cancel == cw && (c->state == CONN_CANCELLING || c->state == CONN_CANCEL_WAIT ||
                                 c->state == CONN_STALLED));
      c->cancel = NULL;
      conn_cancel_done(c);
    }
  }
}

static void on_cancels_closed(uv_handle_t *h) {
  cancel_box_t *b = container_of((uv_async_t *)h, cancel_box_t, async);
  db_pool_t *p = h->data;

  cancel_box_release(b);
  pool_handle_closed(p); /* may free the pool: last */
}

/* The pool closes: threads still running free their own work; what was delivered and not
 * taken yet is dropped here (no connection waits for it any more). */
static void cancels_close(db_pool_t *p) {
  cancel_box_t *b = p->cancels;
  cancel_work_t *cw, *next;

  pthread_mutex_lock(&b->mu);
  b->closed = 1;
  cw = b->done;
  b->done = NULL;
  pthread_mutex_unlock(&b->mu);
  for (; cw; cw = next) {
    next = cw->next;
    PQfreeCancel(cw->cancel);
    free(cw);
  }
  p->cancels = NULL;
  uv_close((uv_handle_t *)&b->async, on_cancels_closed);
}

/* Ask the server to stop the connection's request. The connection keeps reading results as
 * before; it is not reused until the cancel request has been delivered. to: CANCELLING (the
 * request's caller gave up; the timer bounds the delivery) or STALLED (the watchdog; the
 * timer is the stall grace). */
static void conn_cancel_start(db_conn_t *c, conn_state_t to) {
  db_pool_t *p = c->pool;
  cancel_work_t *cw;

  assert(c->state == CONN_BUSY && c->req && !c->cancel &&
         (to == CONN_CANCELLING || to == CONN_STALLED));
  cw = calloc(1, sizeof(*cw));
  if (cw) {
    cw->cancel = PQgetCancel(c->pg);
    cw->conn = c;
  }
  if (!cw || !cw->cancel || cancel_thread_start(p->cancels, cw) != 0) {
    if (cw && cw->cancel)
      PQfreeCancel(cw->cancel);
    free(cw);
    /* Hanging up frees the pool connection all the same; the server rolls back the
     * statement's transaction when it ends. */
    conn_lost(c, "cannot send a cancel request");
    return;
  }
  c->cancel = cw;
  c->req->cancel_sent = 1;
  conn_set_state(c, to);
  uv_timer_start(&c->timer, on_conn_timer,
                 to == CONN_STALLED ? p->stall_grace_ms : p->connect_timeout_ms, 0);
}

/* ---- listeners ------------------------------------------------------------------------ */

static void listener_start(db_conn_t *c) {
  c->heartbeat = 0;
  if (!PQsendQuery(c->pg, c->listen_sql)) {
    conn_lost(c, conn_reason(c));
    return;
  }
  conn_set_state(c, CONN_LISTEN_SETUP);
  (void)conn_flush(c);
}

static void listener_read(db_conn_t *c) {
  while (c->state == CONN_LISTEN_SETUP && !PQisBusy(c->pg)) {
    PGresult *res = PQgetResult(c->pg);

    if (res) {
      if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        char why[256];
        snprintf(why, sizeof(why), "LISTEN failed: %s", PQresultErrorMessage(res));
        PQclear(res);
        conn_lost(c, why); /* a failed attempt (conn_lost()) */
        return;
      }
      PQclear(res);
      continue;
    }
    conn_usable(c);
    conn_set_state(c, CONN_LISTENING);
    uv_timer_start(&c->timer, on_conn_timer, LISTEN_HEARTBEAT_MS, LISTEN_HEARTBEAT_MS);
    if (c->ready)
      c->ready(c->notify_arg);
  }
  /* The heartbeat's answer. */
  while (c->state == CONN_LISTENING && c->heartbeat && !PQisBusy(c->pg)) {
    PGresult *res = PQgetResult(c->pg);

    if (res) {
      ExecStatusType st = PQresultStatus(res);
      PQclear(res);
      if (st != PGRES_TUPLES_OK) {
        conn_lost(c, "the listener's heartbeat failed");
        return;
      }
      continue;
    }
    c->heartbeat = 0;
  }
  /* Deliver what arrived; the callback may close the pool, which drops c->pg. */
  while (c->state == CONN_LISTENING) {
    PGnotify *n = PQnotifies(c->pg);
    if (!n)
      break;
    c->notify(n->relname, n->extra, c->notify_arg);
    PQfreemem(n);
  }
}

/* ---- socket events ----------------------------------------------------------------------- */

static void conn_io(db_conn_t *c, int events) {
  if (c->flushing && (events & UV_WRITABLE) && conn_flush(c) != 0)
    return;
  if (events & UV_READABLE) {
    if (!PQconsumeInput(c->pg)) {
      conn_lost(c, conn_reason(c));
      return;
    }
    /* libpq: after reading, try the flush again, the server may have been waiting on us. */
    if (c->flushing && conn_flush(c) != 0)
      return;
  }
  switch (c->state) {
  case CONN_IDLE:
  case CONN_CANCEL_WAIT: {
    /* Nothing is expected; this is how an idle connection notices the server left. */
    PGnotify *n;
    while ((n = PQnotifies(c->pg)))
      PQfreemem(n);
    if (PQstatus(c->pg) == CONNECTION_BAD)
      conn_lost(c, conn_reason(c));
    break;
  }
  case CONN_BUSY:
  case CONN_CANCELLING:
  case CONN_STALLED:
  case CONN_ROLLBACK:
    conn_read_results(c);
    break;
  case CONN_LISTEN_SETUP:
  case CONN_LISTENING:
    listener_read(c);
    break;
  default:
    assert(!"socket event in an unexpected state");
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  db_watch_t *w = container_of(h, db_watch_t, poll);
  db_conn_t *c = w->conn;

  assert(c != NULL && c->watch == w);
  if (status < 0) {
    /* libuv reports an error on the socket (POLLERR: the server reset the connection, a
     * backend killed) as UV_EBADF, whose text would blame the descriptor. */
    const char *why =
        status == UV_EBADF ? "error on the socket (connection reset)" : uv_strerror(status);
    if (c->state == CONN_CONNECTING)
      conn_connect_failed(c, why);
    else
      conn_lost(c, why);
    return;
  }
  switch (c->state) {
  case CONN_CONNECTING:
    conn_connect_step(c, PQconnectPoll(c->pg));
    break;
  case CONN_IDLE:
  case CONN_BUSY:
  case CONN_CANCELLING:
  case CONN_CANCEL_WAIT:
  case CONN_STALLED:
  case CONN_ROLLBACK:
  case CONN_LISTEN_SETUP:
  case CONN_LISTENING:
    conn_io(c, events);
    break;
  default:
    assert(!"poll event in an unexpected state");
  }
}

/* ---- the pool ---------------------------------------------------------------------------- */

/* The connections q's user holds now (0 for no user). */
static size_t user_held(const db_pool_t *p, const db_req_t *q) {
  return q->user ? db_owners_count(&p->held, q->user) : 0;
}

/* q may not run yet however many connections are idle: it is heavy and heavy requests hold
 * their share of the pool. It waits, and light requests behind it go ahead, so that however
 * many users keep statements running whose cost grows with the data, at least size -
 * heavy_max connections serve the light ones. The share is of the connections that work:
 * with some lost (and not yet made again), heavy requests still leave one to the light ones,
 * and always get one themselves. */
static int heavy_waits(const db_pool_t *p, const db_req_t *q) {
  int working, share;

  if (!q->heavy)
    return 0;
  working = conns_answering(p) + p->nstate[CONN_STALLED]; /* a stalled one holds its request */
  share = working - 1 < p->heavy_max ? working - 1 : p->heavy_max;
  return p->nheavy >= (share > 1 ? share : 1);
}

/* The request to send next, or NULL: of the waiting requests whose owner is not paused,
 * whose user holds fewer than its share of the connections and that are not heavy requests
 * over the heavy share (heavy_waits()), the first of those whose user holds the fewest. A
 * user that keeps heavy statements running then neither holds every connection nor gets a
 * freed one ahead of a user that holds none, and heavy requests of several users together
 * hold no more than their share. The user that just freed the connection being given out
 * ranks as if it still held it: it was served, and a user waiting with as few goes first. */
static db_req_t *queue_next(db_pool_t *p) {
  db_req_t *best = NULL;
  size_t best_rank = 0;

  for (db_req_t *q = p->queue.head; q; q = q->next) {
    size_t held, rank;
    if (p->npaused > 0 &&
        (db_owners_paused(&p->owners, q->owner) || db_owners_paused(&p->users, q->user)))
      continue;
    if (heavy_waits(p, q))
      continue;
    held = user_held(p, q);
    rank = held + (q->user != 0 && q->user == p->freed_by);
    if (held >= p->held.max || (best && rank >= best_rank))
      continue;
    best = q;
    best_rank = rank;
    if (rank == 0)
      break; /* nobody goes before a request whose user holds nothing */
  }
  return best;
}

/* The idle connection for q: the most recently used one whose session has the settings q
 * needs, else the most recently used one (there is one). */
static db_conn_t *idle_pick(const db_pool_t *p, const db_req_t *q) {
  tuning_t want = req_tuning(q);

  if (p->tune_sql != NULL)
    for (db_conn_t *c = p->idle; c; c = c->next)
      if (c->tuning == want)
        return c;
  return p->idle;
}

/* Send q on an idle connection, unless its caller no longer wants it sent (db_opts_t.still):
 * then it completes, unsent, with DB_EREFUSED. */
static void send_idle(db_pool_t *p, db_req_t *q) {
  if (q->still != NULL && !q->still(q->still_arg)) {
    req_defer(p, q, DB_EREFUSED, "refused as it was about to be sent");
    return;
  }
  conn_send(idle_pick(p, q), q);
}

static void pool_dispatch(db_pool_t *p) {
  db_req_t *q;

  while (p->idle && (q = queue_next(p)) != NULL) {
    queue_remove(&p->queue, q);
    send_idle(p, q);
  }
}

static void pool_submit(db_pool_t *p, db_req_t *q) {
  if (p->down) {
    req_defer(p, q, DB_EUNAVAILABLE, "database unavailable");
    return;
  }
  if (p->idle && !p->queue.head && !db_owners_paused(&p->owners, q->owner) &&
      !db_owners_paused(&p->users, q->user) && user_held(p, q) < p->held.max &&
      !heavy_waits(p, q)) {
    send_idle(p, q);
    return;
  }
  if (p->queue.len >= p->queue_max) {
    uint64_t now = uv_now(p->loop);
    p->queue_refused++;
    /* Log a burst of refusals once a second, with how many there were. */
    if (p->queue_full_logged_ms == 0 || now - p->queue_full_logged_ms >= 1000) {
      db_log("wait queue full (%zu waiting): refused %zu request(s)", p->queue.len,
             p->queue_refused);
      p->queue_full_logged_ms = now ? now : 1;
      p->queue_refused = 0;
    }
    req_defer(p, q, DB_EQUEUE, "database busy: wait queue full");
    return;
  }
  q->state = REQ_QUEUED;
  queue_push(&p->queue, q);
  if (p->idle)
    pool_dispatch(p); /* idle connections, and only requests that must wait before this one */
}

static void pool_free(db_pool_t *p) {
  /* Every request has completed, so every owner's count is back to zero and freed. */
  assert(db_owners_empty(&p->owners) && db_owners_empty(&p->users) && db_owners_empty(&p->held));
  assert(p->nheavy == 0);
  db_stmts_free(&p->stmts);
  free(p->prep);
  free(p->conns);
  free(p->conninfo);
  free(p->options);
  rotation_free(&p->rot);
  free(p);
}

static void pool_handle_closed(db_pool_t *p) {
  assert(p->nhandles > 0);
  if (--p->nhandles == 0) {
    void (*done)(void *) = p->done;
    void *arg = p->done_arg;

    assert(p->closing);
    pool_free(p);
    if (done)
      done(arg);
  }
}

static void on_idle_closed(uv_handle_t *h) {
  pool_handle_closed(container_of((uv_idle_t *)h, db_pool_t, idle_handle));
}

static void on_conn_timer_closed(uv_handle_t *h) {
  db_conn_t *c = container_of((uv_timer_t *)h, db_conn_t, timer);
  db_pool_t *p = c->pool;

  if (c->role == ROLE_LISTEN) {
    free(c->listen_sql);
    free(c);
  }
  pool_handle_closed(p);
}

/* Deferred completions and health changes. */
static void on_idle(uv_idle_t *h) {
  db_pool_t *p = container_of(h, db_pool_t, idle_handle);
  req_queue_t batch = p->defer;
  db_req_t *q;

  /* Callbacks may defer more; those run on the next turn of the loop. */
  memset(&p->defer, 0, sizeof(p->defer));
  /* A connection lost while a user held it gave that user's share back: its waiting
   * requests may go now, on connections that stayed idle. */
  if (!p->closing)
    pool_dispatch(p);
  while ((q = queue_pop(&batch)))
    req_finish(p, q);
  if (!p->closing && p->health_cb && p->healthy != p->health_reported) {
    p->health_reported = p->healthy;
    p->health_cb(p->healthy, p->health_arg);
  }
  if (p->defer.head)
    return;
  if (p->closing) {
    if (!uv_is_closing((uv_handle_t *)h))
      uv_close((uv_handle_t *)h, on_idle_closed);
  } else if (!p->health_cb || p->healthy == p->health_reported) {
    uv_idle_stop(h);
  }
}

static void pool_kick(db_pool_t *p) {
  if (!uv_is_closing((uv_handle_t *)&p->idle_handle))
    uv_idle_start(&p->idle_handle, on_idle);
}

static void conn_init(db_pool_t *p, db_conn_t *c, conn_role_t role) {
  c->pool = p;
  c->role = role;
  c->state = CONN_BROKEN;
  uv_timer_init(p->loop, &c->timer);
  p->nhandles++;
}

/* The startup "options" of every pool connection: the connection string's own (options=...,
 * or else PGOPTIONS), then the server-side time bounds, so that no statement or lock wait can
 * hold a pool connection for ever, and the session pins of db.h. Set at connect, they cost no
 * round trip; a later "-c" wins, so ours take effect. Returns NULL on out of memory. */
#define POOL_OPTIONS "%s -c statement_timeout=%u -c lock_timeout=%u " DB_SESSION_PINS " %s"
const char *db_own_options(const PQconninfoOption *opts) {
  for (const PQconninfoOption *o = opts; o->keyword; o++)
    if (strcmp(o->keyword, "options") == 0 && o->val && *o->val)
      return o->val;
  /* Passing "options" hides PGOPTIONS, which libpq reads only for a missing keyword. */
  return getenv("PGOPTIONS") ? getenv("PGOPTIONS") : "";
}

static char *pool_options(const PQconninfoOption *opts, const db_config_t *cfg) {
  const char *own;
  unsigned st =
      cfg->statement_timeout_ms ? cfg->statement_timeout_ms : DB_DEFAULT_STATEMENT_TIMEOUT_MS;
  unsigned lk = cfg->lock_timeout_ms ? cfg->lock_timeout_ms : DB_DEFAULT_LOCK_TIMEOUT_MS;
  const char *more = cfg->options ? cfg->options : "";
  char *s;
  int n;

  own = db_own_options(opts);
  n = snprintf(NULL, 0, POOL_OPTIONS, own, st, lk, more);
  s = malloc((size_t)n + 1);
  if (s)
    snprintf(s, (size_t)n + 1, POOL_OPTIONS, own, st, lk, more);
  return s;
}

static int count_entries(const char *list) {
  int n = 1;
  for (; *list; list++)
    n += *list == ',';
  return n;
}

static void rotation_free_list(char **l, int n) {
  if (l)
    for (int i = 0; i < n; i++)
      free(l[i]);
  free(l);
}

static void rotation_free(host_rotation_t *r) {
  rotation_free_list(r->host, r->n);
  rotation_free_list(r->hostaddr, r->n);
  rotation_free_list(r->port, r->n);
  memset(r, 0, sizeof(*r));
}

/* The n rotations of list (n comma-separated entries): rotation k starts at entry k. */
static char **rotations(const char *list, int n) {
  size_t len = strlen(list);
  const char **start = calloc((size_t)n, sizeof(*start));
  size_t *elen = calloc((size_t)n, sizeof(*elen));
  char **out = calloc((size_t)n, sizeof(*out));
  int i = 0, ok = start && elen && out;

  for (const char *q = list; ok && i < n; i++) {
    const char *comma = strchr(q, ',');
    start[i] = q;
    elen[i] = comma ? (size_t)(comma - q) : strlen(q);
    q = comma ? comma + 1 : q + elen[i];
  }
  for (int k = 0; ok && k < n; k++) {
    char *w = out[k] = malloc(len + 1);
    if (!w) {
      ok = 0;
      break;
    }
    for (int j = 0; j < n; j++) {
      const int e = (k + j) % n;
      if (j > 0)
        *w++ = ',';
      memcpy(w, start[e], elen[e]);
      w += elen[e];
    }
    *w = '\0';
  }
  free(start);
  free(elen);
  if (!ok) {
    rotation_free_list(out, n);
    return NULL;
  }
  return out;
}

/* Fill r from the parsed connection string; -1 out of memory. A pool that writes is warned
 * when several hosts may include a standby. */
static int rotation_init(host_rotation_t *r, const PQconninfoOption *opts, int want_writes) {
  const char *host = NULL, *hostaddr = NULL, *port = NULL, *attrs = "any";
  int nh, na, np;

  memset(r, 0, sizeof(*r));
  for (const PQconninfoOption *o = opts; o->keyword; o++) {
    if (!o->val || !*o->val)
      continue;
    if (strcmp(o->keyword, "host") == 0)
      host = o->val;
    else if (strcmp(o->keyword, "hostaddr") == 0)
      hostaddr = o->val;
    else if (strcmp(o->keyword, "port") == 0)
      port = o->val;
    else if (strcmp(o->keyword, "target_session_attrs") == 0)
      attrs = o->val;
  }
  nh = host ? count_entries(host) : 0;
  na = hostaddr ? count_entries(hostaddr) : 0;
  np = port ? count_entries(port) : 0;
  r->n = nh > na ? nh : na;
  if (r->n < 2)
    return 0;
  if (want_writes && strcmp(attrs, "read-write") != 0 && strcmp(attrs, "primary") != 0)
    db_log("the connection string names %d hosts with target_session_attrs=%s: a connection "
           "may reach a standby, which is then left for the next host after a backoff; add "
           "target_session_attrs=read-write",
           r->n, attrs);
  if ((nh == r->n && !(r->host = rotations(host, r->n))) ||
      (na == r->n && !(r->hostaddr = rotations(hostaddr, r->n))) ||
      (np == r->n && !(r->port = rotations(port, r->n)))) {
    rotation_free(r);
    return -1;
  }
  return 0;
}

static int tune_count(const char *const *set) {
  int n = 0;

  while (set[n])
    n++;
  return n;
}

bool db_conninfo_parses(const char *conninfo) {
  PQconninfoOption *opts;
  char *err = NULL;
  bool ok;

  /* libpq's own test (recognize_connection_string): anything else is a database name. */
  if (conninfo == NULL ||
      (strncmp(conninfo, "postgresql://", 13) != 0 && strncmp(conninfo, "postgres://", 11) != 0 &&
       strchr(conninfo, '=') == NULL))
    return true;
  opts = PQconninfoParse(conninfo, &err);
  /* Without an error text libpq ran out of memory: not the string's fault. */
  ok = opts != NULL || err == NULL;
  PQconninfoFree(opts);
  PQfreemem(err);
  return ok;
}

int db_pool_new(uv_loop_t *loop, const db_config_t *cfg, db_pool_t **out) {
  db_pool_t *p;
  PQconninfoOption *opts;
  char *err = NULL;
  const char *conninfo = cfg->conninfo ? cfg->conninfo : "";
  int rc = DB_ENOMEM, rot_rc;

  if (cfg->tune_sql && cfg->untune_sql &&
      (tune_count(cfg->tune_sql) > DB_TUNE_MAX || tune_count(cfg->untune_sql) > DB_TUNE_MAX)) {
    db_log("more than %d statements of session settings", DB_TUNE_MAX);
    return DB_EINVAL;
  }
  /* Refuse a string libpq cannot parse now, rather than retrying it forever. libpq's error
   * quotes the string, password included: it is not logged. */
  opts = PQconninfoParse(conninfo, &err);
  if (!opts) {
    rc = err ? DB_EINVAL : DB_ENOMEM;
    if (err)
      db_log("the connection string " DB_CONNINFO_UNPARSABLE);
    PQfreemem(err);
    return rc;
  }

  p = calloc(1, sizeof(*p));
  if (!p)
    goto fail_opts;
  p->options = pool_options(opts, cfg);
  rot_rc = rotation_init(&p->rot, opts, !cfg->standby_ok);
  PQconninfoFree(opts);
  opts = NULL;
  if (!p->options || rot_rc != 0)
    goto fail_pool;
  p->loop = loop;
  p->standby_ok = cfg->standby_ok;
  p->size = cfg->size > 0 ? cfg->size : DB_DEFAULT_SIZE;
  p->queue_max = cfg->queue_max > 0 ? cfg->queue_max : DB_DEFAULT_QUEUE_MAX;
  p->reconnect_min_ms = cfg->reconnect_min_ms ? cfg->reconnect_min_ms : DB_DEFAULT_RECONNECT_MIN_MS;
  p->reconnect_max_ms = cfg->reconnect_max_ms ? cfg->reconnect_max_ms : DB_DEFAULT_RECONNECT_MAX_MS;
  if (p->reconnect_max_ms < p->reconnect_min_ms)
    p->reconnect_max_ms = p->reconnect_min_ms;
  p->connect_timeout_ms =
      cfg->connect_timeout_ms ? cfg->connect_timeout_ms : DB_DEFAULT_CONNECT_TIMEOUT_MS;
  db_owners_init(&p->owners,
                 cfg->per_owner_max > 0 ? cfg->per_owner_max : DB_DEFAULT_PER_OWNER_MAX);
  db_owners_init(&p->users, cfg->per_user_max > 0 ? cfg->per_user_max : (p->queue_max + 3) / 4);
  db_owners_init(&p->held,
                 (size_t)(cfg->conns_per_user > 0 ? cfg->conns_per_user : (p->size + 1) / 2));
  p->heavy_max = cfg->heavy_conns > 0 ? cfg->heavy_conns : p->size / 2;
  if (p->heavy_max > p->size - 1)
    p->heavy_max = p->size - 1;
  if (p->heavy_max < 1)
    p->heavy_max = 1;
  p->cancel_grace_ms = cfg->cancel_grace_ms ? cfg->cancel_grace_ms : DB_DEFAULT_CANCEL_GRACE_MS;
  p->stall_grace_ms = cfg->stall_grace_ms ? cfg->stall_grace_ms : DB_DEFAULT_STALL_GRACE_MS;
  p->stall_ms =
      (cfg->statement_timeout_ms ? cfg->statement_timeout_ms : DB_DEFAULT_STATEMENT_TIMEOUT_MS) +
      p->stall_grace_ms;
  p->rng = uv_hrtime() | 1;
  if (cfg->tune_sql && cfg->untune_sql) {
    p->tune_sql = cfg->tune_sql;
    p->untune_sql = cfg->untune_sql;
  }
  p->conninfo = strdup(conninfo);
  if (!p->conninfo)
    goto fail_pool;
  p->conns = calloc((size_t)p->size, sizeof(*p->conns));
  if (!p->conns)
    goto fail_conninfo;
  if (db_stmts_init(&p->stmts, cfg->prepared_max ? cfg->prepared_max : DB_DEFAULT_PREPARED_MAX,
                    cfg->prepared_built_max ? cfg->prepared_built_max
                                            : DB_DEFAULT_PREPARED_BUILT_MAX,
                    DB_PREPARED_TEXT_MAX) != 0)
    goto fail_conns;
  p->prep = calloc((size_t)p->size * db_stmts_size(&p->stmts), sizeof(*p->prep));
  if (!p->prep)
    goto fail_stmts;
  p->cancels = calloc(1, sizeof(*p->cancels));
  if (!p->cancels || pthread_mutex_init(&p->cancels->mu, NULL) != 0)
    goto fail_prepared;

  /* Nothing below can fail. */
  uv_idle_init(loop, &p->idle_handle);
  p->nhandles++;
  uv_async_init(loop, &p->cancels->async, on_cancels_delivered);
  /* It keeps no loop running: a connection waiting for its cancel runs a timer meanwhile. */
  uv_unref((uv_handle_t *)&p->cancels->async);
  p->cancels->async.data = p;
  p->cancels->refs = 1;
  p->nhandles++;
  p->nstate[CONN_BROKEN] = p->size;
  for (int i = 0; i < p->size; i++) {
    db_conn_t *c = &p->conns[i];
    conn_init(p, c, ROLE_POOL);
    c->prep = p->prep + (size_t)i * db_stmts_size(&p->stmts);
    snprintf(c->name, sizeof(c->name), "connection %d", i + 1);
  }
  for (int i = 0; i < p->size; i++)
    conn_connect(&p->conns[i]);
  *out = p;
  return 0;

fail_prepared:
  free(p->cancels);
  free(p->prep);
fail_stmts:
  db_stmts_free(&p->stmts);
fail_conns:
  free(p->conns);
fail_conninfo:
  free(p->conninfo);
fail_pool:
  free(p->options);
  rotation_free(&p->rot);
  free(p);
fail_opts:
  PQconninfoFree(opts);
  return rc;
}

/* Take a connection out of service for good; its request completes with DB_ECLOSED. */
static void conn_close(db_conn_t *c) {
  db_req_t *q = c->req;

  c->req = NULL;
  if (q)
    req_defer(c->pool, q, DB_ECLOSED, "database pool closed");
  conn_drop_pg(c);
  conn_set_state(c, CONN_CLOSING);
  uv_close((uv_handle_t *)&c->timer, on_conn_timer_closed);
}

void db_pool_close(db_pool_t *p, void (*done)(void *arg), void *arg) {
  db_req_t *q;
  db_conn_t *c, *next;

  if (p->closing)
    return;
  p->closing = 1;
  p->done = done;
  p->done_arg = arg;
  /* In flight first, then the waiting ones: callbacks keep their submission order. */
  for (int i = 0; i < p->size; i++)
    conn_close(&p->conns[i]);
  while ((q = queue_pop(&p->queue)))
    req_defer(p, q, DB_ECLOSED, "database pool closed");
  for (c = p->listeners; c; c = next) {
    next = c->next;
    conn_close(c);
  }
  p->listeners = NULL;
  cancels_close(p);
  /* The idle callback runs the deferred callbacks, then closes itself. */
  uv_idle_start(&p->idle_handle, on_idle);
}

int db_pool_healthy(const db_pool_t *p) {
  return p->healthy;
}

void db_pool_stats(const db_pool_t *p, db_stats_t *st) {
  st->idle = p->nstate[CONN_IDLE];
  st->busy = p->nstate[CONN_BUSY] + p->nstate[CONN_ROLLBACK];
  st->cancelling = p->nstate[CONN_CANCELLING] + p->nstate[CONN_CANCEL_WAIT];
  st->stalled = p->nstate[CONN_STALLED];
  st->connecting = p->nstate[CONN_CONNECTING];
  st->broken = p->nstate[CONN_BROKEN];
  st->queued = p->queue.len;
  memcpy(st->lat_buckets, p->lat_buckets, sizeof(st->lat_buckets));
  st->lat_count = p->lat_count;
  st->lat_sum_ns = p->lat_sum_ns;
  st->retunes = p->retunes;
  st->heavy = p->nheavy;
  st->heavy_max = p->heavy_max;
  st->heavy_queued = 0;
  for (const db_req_t *q = p->queue.head; q; q = q->next)
    st->heavy_queued += q->heavy != 0;
}

void db_pool_on_health(db_pool_t *p, db_health_fn cb, void *arg) {
  p->health_cb = cb;
  p->health_arg = arg;
  p->health_reported = p->healthy;
}

static int pool_request(db_pool_t *p, const db_opts_t *o, const db_stmt_t *stmts, int n, int txn,
                        db_cb cb, void *arg) {
  uint64_t owner = o ? o->owner : 0, user = o ? o->user : 0;
  db_req_t *q;
  int rc;

  assert(cb != NULL && n >= 0 && (n > 0 || txn));
  if (p->closing)
    return DB_ECLOSED;
  for (int i = 0; i < n; i++)
    assert(stmts[i].sql != NULL && stmts[i].nparams >= 0 &&
           (stmts[i].nparams == 0 || stmts[i].values != NULL));
  /* Refused before anything is built: a client over its share costs next to nothing. */
  if ((rc = db_hold(p, owner, user)) != 0)
    return rc;
  rc = req_new(stmts, n, txn, cb, arg, &q);
  if (rc != 0) {
    db_unhold(p, owner, user);
    return rc;
  }
  q->owner = owner;
  q->user = user;
  q->tuned = o && o->tuned && p->tune_sql != NULL;
  q->sharers = o && o->sharers > 1 ? o->sharers : 1;
  q->heavy = o && o->heavy;
  q->still = o ? o->still : NULL;
  q->still_arg = o ? o->still_arg : NULL;
  for (int i = 0; i < n; i++)
    q->ids[i] = db_stmts_id(&p->stmts, stmts[i].sql, &q->names[i]);
  if (o && o->handle)
    *o->handle = q;
  for (int i = 0; i < n; i++)
    if (stmts[i].nparams > DB_MAX_PARAMS) {
      q->err = DB_EQUERY;
      snprintf(q->sqlstate, sizeof(q->sqlstate), "54023"); /* too_many_arguments */
      snprintf(q->message, sizeof(q->message), "more than %d parameters", DB_MAX_PARAMS);
      q->state = REQ_DONE;
      queue_push(&p->defer, q);
      pool_kick(p);
      return 0;
    }
  pool_submit(p, q);
  return 0;
}

int db_query_opts(db_pool_t *p, const db_opts_t *o, const char *sql, int nparams,
                  const char *const *values, db_cb cb, void *arg) {
  db_stmt_t s;

  s.sql = sql;
  s.nparams = nparams;
  s.values = values;
  return pool_request(p, o, &s, 1, 0, cb, arg);
}

int db_query(db_pool_t *p, const char *sql, int nparams, const char *const *values, db_cb cb,
             void *arg) {
  return db_query_opts(p, NULL, sql, nparams, values, cb, arg);
}

int db_txn_opts(db_pool_t *p, const db_opts_t *o, const db_stmt_t *stmts, int n, db_cb cb,
                void *arg) {
  return pool_request(p, o, stmts, n, 1, cb, arg);
}

int db_txn(db_pool_t *p, const db_stmt_t *stmts, int n, db_cb cb, void *arg) {
  return pool_request(p, NULL, stmts, n, 1, cb, arg);
}

size_t db_per_user_max(const db_pool_t *p) {
  return p->users.max;
}

int db_hold(db_pool_t *p, uint64_t owner, uint64_t user) {
  int rc = db_owners_take(&p->owners, owner);

  if (rc != 0)
    return rc;
  if ((rc = db_owners_take(&p->users, user)) != 0) {
    db_owners_give(&p->owners, owner);
    return rc == DB_EOWNER ? DB_EUSER : rc;
  }
  return 0;
}

void db_unhold(db_pool_t *p, uint64_t owner, uint64_t user) {
  db_owners_give(&p->owners, owner);
  db_owners_give(&p->users, user);
}

/* Pause or resume key (an owner, a user) in one of the pool's count sets; its waiting
 * requests are passed over while it is paused (queue_next). Out of memory: not paused. */
static void pause_key(db_pool_t *p, db_owners_t *set, uint64_t key, int paused) {
  if (key == 0 || !!paused == db_owners_paused(set, key) || db_owners_pause(set, key, paused) != 0)
    return;
  if (paused) {
    p->npaused++;
    return;
  }
  p->npaused--;
  pool_dispatch(p);
}

void db_owner_pause(db_pool_t *p, uint64_t owner, int paused) {
  if (p != NULL)
    pause_key(p, &p->owners, owner, paused);
}

void db_user_pause(db_pool_t *p, uint64_t user, int paused) {
  if (p != NULL)
    pause_key(p, &p->users, user, paused);
}

void db_cancel(db_pool_t *p, db_req_t *q) {
  db_conn_t *c;
  uint64_t ran;

  switch (q->state) {
  case REQ_QUEUED:
    queue_remove(&p->queue, q);
    req_defer(p, q, DB_ECANCELED, "cancelled while waiting for a connection");
    return;
  case REQ_SENT:
    c = q->conn;
    assert(c && c->req == q);
    if (q->cancelled)
      return;
    /* Stopping a commit's wait for a synchronous standby leaves it committed on the primary
     * alone with a success; the sharers still waiting would have to be told the outcome is
     * unknown (conn_req_done()). So they keep their wait: the statement ends on its own, or
     * at the last one's cancel. */
    if (q->sharers > 1) {
      q->sharers--;
      return;
    }
    q->cancelled = 1;
    /* Only a running statement is stopped: a ROLLBACK, or a cancel on its way or already
     * delivered (the watchdog's), finish. */
    if (c->state != CONN_BUSY || q->cancel_sent)
      return;
    ran = uv_now(p->loop) - q->sent_ms;
    if (ran >= p->cancel_grace_ms)
      conn_cancel_start(c, CONN_CANCELLING);
    else
      uv_timer_start(&c->timer, on_conn_timer, p->cancel_grace_ms - ran, 0);
    return;
  case REQ_NEW:
  case REQ_DONE:
    return;
  }
}

/* LISTEN takes an identifier: quote it, so the channel is matched exactly as pg_notify()
 * names it (no case folding). */
static char *listen_sql(const char *channel) {
  size_t n = strlen(channel);
  char *sql = malloc(sizeof("LISTEN \"\"") + 2 * n);
  char *s = sql;

  if (!sql)
    return NULL;
  s += sprintf(s, "LISTEN \"");
  for (const char *ch = channel; *ch; ch++) {
    if (*ch == '"')
      *s++ = '"';
    *s++ = *ch;
  }
  *s++ = '"';
  *s = '\0';
  return sql;
}

int db_listen_ex(db_pool_t *p, const char *channel, db_notify_fn cb, void (*ready)(void *arg),
                 void *arg) {
  return db_listen_full(p, channel, cb, ready, NULL, arg);
}

int db_listen_full(db_pool_t *p, const char *channel, db_notify_fn cb, void (*ready)(void *arg),
                   void (*lost)(void *arg), void *arg) {
  db_conn_t *c;

  assert(channel != NULL && cb != NULL);
  if (p->closing)
    return DB_ECLOSED;
  c = calloc(1, sizeof(*c));
  if (!c)
    return DB_ENOMEM;
  c->listen_sql = listen_sql(channel);
  if (!c->listen_sql) {
    free(c);
    return DB_ENOMEM;
  }
  conn_init(p, c, ROLE_LISTEN);
  snprintf(c->name, sizeof(c->name), "listener \"%.30s\"", channel);
  c->notify = cb;
  c->ready = ready;
  c->lost = lost;
  c->notify_arg = arg;
  c->next = p->listeners;
  if (p->listeners)
    p->listeners->prev = c;
  p->listeners = c;
  conn_connect(c);
  return 0;
}

int db_listen(db_pool_t *p, const char *channel, db_notify_fn cb, void *arg) {
  return db_listen_ex(p, channel, cb, NULL, arg);
}

/* ---- results ------------------------------------------------------------------------------ */

static const PGresult *last_result(const db_result_t *r) {
  if (!r || !r->res || r->nres <= 0)
    return NULL;
  return r->res[r->nres - 1];
}

const char *db_value(const db_result_t *r, int row, int col) {
  const PGresult *res = last_result(r);

  if (res && r->count > 0) {
    if (row < 0 || row >= r->count)
      return NULL;
    row += r->first;
  }
  if (!res || row < 0 || col < 0 || row >= PQntuples(res) || col >= PQnfields(res) ||
      PQgetisnull(res, row, col))
    return NULL;
  return PQgetvalue(res, row, col);
}

int db_rows(const db_result_t *r) {
  const PGresult *res = last_result(r);

  if (!res)
    return 0;
  return r->count > 0 && r->first + r->count <= PQntuples(res) ? r->count : PQntuples(res);
}

int db_error_is_user(const db_result_t *r) {
  const char *s = r->sqlstate;

  if (r->err != DB_EQUERY || !s || strlen(s) != 5)
    return 0;
  return strncmp(s, "22", 2) == 0 || strncmp(s, "23", 2) == 0 || strncmp(s, "40", 2) == 0 ||
         strcmp(s, "P0001") == 0;
}

const char *db_strerror(int err) {
  switch (err) {
  case DB_OK:
    return "ok";
  case DB_EUNAVAILABLE:
    return "database unavailable";
  case DB_EQUEUE:
    return "database busy: wait queue full";
  case DB_EQUERY:
    return "query failed";
  case DB_ENOMEM:
    return "out of memory";
  case DB_ECLOSED:
    return "database pool closed";
  case DB_EINVAL:
    return "bad database configuration";
  case DB_EOWNER:
    return "too many database requests from one client";
  case DB_EUSER:
    return "too many database requests from one user";
  case DB_ECANCELED:
    return "cancelled before it ran";
  case DB_EREFUSED:
    return "refused as it was about to be sent";
  default:
    return "unknown database error";
  }
}
