#ifndef CLUED_DB_DB_H
#define CLUED_DB_DB_H

/* The asynchronous PostgreSQL pool. Every call here runs on the libuv loop thread and
 * never blocks it: connections are made with PQconnectStart/PQconnectPoll, queries are
 * sent with PQsendQueryPrepared (each statement text is prepared once per connection, on its
 * first use there, in the same round trip; again after a reconnect; texts built at run time
 * share a bounded number of slots, db/stmts.h), in pipeline mode for transactions, and results
 * are read when uv_poll reports the socket readable. */

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct db_pool db_pool_t;
typedef struct db_req db_req_t;

/** Error codes. */
enum {
  DB_OK = 0,
  DB_EUNAVAILABLE = -1, /* no working connection, or the connection was lost mid-query */
  DB_EQUEUE = -2,       /* every connection busy and the wait queue full */
  DB_EQUERY = -3,       /* the server reported an error (see sqlstate/message) */
  DB_ENOMEM = -4,
  DB_ECLOSED = -5,   /* the pool is shutting down */
  DB_EINVAL = -6,    /* bad configuration: libpq cannot parse the connection string, or too
                        many statements of session settings */
  DB_EOWNER = -7,    /* the owner (db_opts_t) already has per_owner_max requests waiting or
                        running */
  DB_ECANCELED = -8, /* db_cancel() took the request off the wait queue: it never ran */
  DB_EUSER = -9,     /* the user (db_opts_t) already has per_user_max requests waiting or
                        running */
  DB_EREFUSED = -10, /* its db_opts_t.still said no as it was about to be sent: it never ran */
};

/** At most this many statements in db_config_t.tune_sql and untune_sql each. */
#define DB_TUNE_MAX 8

/** One connection attempt's bound when db_config_t sets none: the pool's, and each host's of
 * the blocking sessions of migrate, bootstrap and serve's start-up (db_session_connect()). */
#define DB_DEFAULT_CONNECT_TIMEOUT_MS 10000

typedef struct db_config {
  const char *conninfo;          /* libpq connection string or URI */
  int size;                      /* connections, default 8 */
  size_t queue_max;              /* requests that may wait for a connection, default 1024 */
  unsigned reconnect_min_ms;     /* first reconnect delay, default 100 */
  unsigned reconnect_max_ms;     /* backoff ceiling, default 5000 */
  unsigned connect_timeout_ms;   /* one connection attempt, default 10000 (libpq's own
                                    connect_timeout is not applied to asynchronous connects) */
  unsigned statement_timeout_ms; /* the server's statement_timeout on every connection,
                                    default 30000: a statement running longer fails, 57014 */
  unsigned lock_timeout_ms;      /* the server's lock_timeout, default 3000: a wait for a row
                                    or other lock longer than this fails, 55P03 */
  size_t per_owner_max;          /* requests one owner may have waiting or running, default 128 */
  size_t per_user_max;           /* requests one user may have waiting or running (over all
                                    its owners), default a quarter of queue_max */
  int conns_per_user;            /* connections one user's requests may hold at once, default
                                    half of size (rounded up); a waiting request of a user that
                                    holds them waits on, behind later ones of other users */
  int heavy_conns;               /* connections heavy requests (db_opts_t.heavy) may hold at
                                    once, over all users: default half of size (rounded down);
                                    at least 1 and at most size - 1 (a pool of one: 1). A
                                    heavy request beyond them waits on, behind later light
                                    ones, so the rest of the pool serves light requests */
  unsigned cancel_grace_ms;      /* db_cancel() lets a statement that has run less than this
                                    finish first, default 10: a cancel costs the server a
                                    new connection, far more than a short statement */
  unsigned stall_grace_ms;       /* default 1000: a busy connection whose backend sends nothing
                                    for the statement timeout plus this gets a cancel request,
                                    and is counted lost if this passes again without an answer
                                    (a stopped or stuck backend no server-side timer ends) */
  unsigned prepared_max;         /* constant statement texts (the program's own: db/stmts.h)
                                    prepared at most, once per connection on first use, default
                                    256; later ones share the built texts' slots */
  unsigned prepared_built_max;   /* statement texts built at run time prepared at most, default
                                    64: the least recently used gives its slot to a new one and
                                    is deallocated on each connection at its next use */
  /* Session settings that some requests ask for (db_opts_t.tuned): tune_sql, up to
   * DB_TUNE_MAX statements and a NULL, sets them for the session; untune_sql gives the
   * session its defaults back. A connection keeps what it has between requests: either runs,
   * in the same round trip, only before a request that needs the other (the pool prefers an
   * idle connection that has what the request needs), and after a request that failed. They
   * join the request's transaction ahead of its first statement, which may be a SET
   * TRANSACTION: each must be a SET or RESET, which take no snapshot (after a SELECT, SET
   * TRANSACTION ISOLATION LEVEL fails). Static, not copied; both or neither. */
  const char *const *tune_sql;
  const char *const *untune_sql;
  const char *options; /* more startup options ("-c name=value ..."), sent after the
                          connection string's own and the timeouts; or NULL */
  int standby_ok;      /* the pool reads from a standby (a replica's): a server in recovery is
                          used, and no warning when the connection string names several hosts
                          without target_session_attrs=read-write. Otherwise a connection that
                          reaches one (PostgreSQL's in_hot_standby) is a failed attempt, as for a
                          refused connect, and the pool has no working connection until one
                          reaches a primary */
} db_config_t;

/** The outcome of a query or transaction, valid only during the callback. */
typedef struct db_result {
  int err;              /* DB_OK or an error code above */
  PGresult *const *res; /* one result per statement (NULL entries when not reached) */
  int nres;
  const char *sqlstate; /* on DB_EQUERY: five-character SQLSTATE, else "" */
  const char *message;  /* on error: primary message (for logs; see db_error_is_user) */
  const char *constraint; /* on DB_EQUERY: the constraint the error names, else "" */
  int first, count;     /* count > 0: the caller's rows are the last result's rows [first,
                           first + count) alone (a batch's rows for one call), and db_value()
                           and db_rows() see only those; 0: every row */
} db_result_t;

typedef void (*db_cb)(const db_result_t *r, void *arg);

/** Who asks, for db_query_opts() and db_txn_opts(). */
typedef struct db_opts {
  uint64_t owner;    /* e.g. an HTTP/2 connection's number: at most per_owner_max requests of
                        one owner wait or run at once; 0: not counted */
  uint64_t user;     /* on whose behalf (a user's id), over all its owners: at most
                        per_user_max requests wait or run, and at most conns_per_user
                        connections run them; among waiting requests, those of the users
                        holding the fewest connections go first; 0: not counted */
  db_req_t **handle; /* if set, receives the request's handle for db_cancel(); the handle is
                        valid until its callback starts */
  int tuned;         /* run with the pool's session settings (db_config_t.tune_sql) */
  unsigned sharers;  /* callers that share the request, each of which may db_cancel() it once
                        (a batch's calls): once sent, it is stopped only by the last of them
                        (db_cancel()); 0 or 1: one caller */
  int heavy;         /* its cost grows with the data rather than with the request: at most
                        heavy_conns such requests run at once, over all users; among waiting
                        heavy requests, those of the users holding the fewest connections go
                        first, as among all */
  int (*still)(void *still_arg); /* if set, asked as the request is about to be sent (at
                        once, or after it waited): 0 completes it with DB_EREFUSED instead,
                        unsent (its caller's authority ended while it waited); it must not
                        call into the pool */
  void *still_arg;
} db_opts_t;

/** One parameterized statement; values are text-format parameters (NULL = SQL NULL). */
typedef struct db_stmt {
  const char *sql;
  int nparams;
  const char *const *values;
} db_stmt_t;

/** Called when the pool's health (has at least one working connection) changes. */
typedef void (*db_health_fn)(int healthy, void *arg);

/**
 * True unless conninfo is a connection string libpq cannot parse: key=value pairs or a
 * postgresql:// (postgres://) URI with a syntax error, such as a bad percent escape or an
 * unclosed "[". Anything else is a database name, as libpq takes it. libpq's own parse error
 * quotes the string, password included, so callers log a fixed message instead.
 */
bool db_conninfo_parses(const char *conninfo);

/** What to log for a connection string db_conninfo_parses() refuses: never its text. */
#define DB_CONNINFO_UNPARSABLE                                                                     \
  "could not be parsed as a PostgreSQL connection string or URI (a bad percent escape, an "        \
  "unclosed [ or quote, an unknown option?); its text is not logged: it may hold a password"

/**
 * Create a pool on loop and start connecting. Zero fields of cfg take their defaults; cfg is
 * copied. Returns 0, DB_ENOMEM, or DB_EINVAL (conninfo unparsable, or
 * more than DB_TUNE_MAX statements of session settings). Host names in conninfo
 * are resolved synchronously by libpq when a connection starts; use hostaddr or a unix
 * socket where that matters.
 */
int db_pool_new(uv_loop_t *loop, const db_config_t *cfg, db_pool_t **out)
    __attribute__((warn_unused_result));

/**
 * Close every connection and handle; queued and in-flight requests complete with
 * DB_ECLOSED, from the loop after this returns. The pool is freed once all its handles
 * closed (then done runs, if set). May be called from any db callback; a second call is
 * ignored.
 */
void db_pool_close(db_pool_t *pool, void (*done)(void *arg), void *arg);

/** True while at least one connection is connected and usable. */
int db_pool_healthy(const db_pool_t *pool);

/** Upper bounds (seconds) of the request latency histogram of db_stats_t. */
#define DB_LAT_BUCKETS 11
extern const double db_latency_bounds[DB_LAT_BUCKETS];

/** A snapshot of the pool's connections and queue, for logs, metrics and tests. */
typedef struct db_stats {
  int idle, busy, connecting, broken; /* pool connections (listeners not counted) */
  int cancelling;                     /* pool connections stopping a cancelled request */
  int stalled;                        /* pool connections whose backend stopped answering */
  size_t queued;                      /* requests waiting for a connection */
  uint64_t lat_buckets[DB_LAT_BUCKETS]; /* requests by latency, sent to done (not cumulative) */
  uint64_t lat_count, lat_sum_ns;       /* all requests that were sent, and their total time */
  uint64_t retunes; /* requests that changed their connection's session settings first */
  int heavy;        /* pool connections held by heavy requests (db_opts_t.heavy) */
  int heavy_max;    /* at most this many (db_config_t.heavy_conns, resolved) */
  size_t heavy_queued; /* heavy requests waiting for a connection (counted in queued) */
} db_stats_t;

/** Fill st with the pool's current counts. */
void db_pool_stats(const db_pool_t *pool, db_stats_t *st);

/**
 * Register the health-change callback (one per pool). It runs from the loop, only on changes
 * after registration, and never after db_pool_close().
 */
void db_pool_on_health(db_pool_t *pool, db_health_fn cb, void *arg);

/**
 * Run one parameterized statement (a single statement is its own transaction). Parameters
 * are copied; the caller may free them on return. cb runs exactly once, always later on the
 * loop (never from inside this call), with r->nres == 1, or with err DB_EQUEUE (wait queue
 * full), DB_EUNAVAILABLE (no connection, or it was lost: the statement may or may not have
 * run), DB_EQUERY, DB_ECLOSED. Returns 0, or DB_ENOMEM / DB_ECLOSED (cb not called).
 */
int db_query(db_pool_t *pool, const char *sql, int nparams, const char *const *values, db_cb cb,
             void *arg) __attribute__((warn_unused_result));

/**
 * db_query() on behalf of an owner and a user (o may be NULL). Also returns DB_EOWNER (or
 * DB_EUSER), at once and without calling cb, when the owner already has per_owner_max (the
 * user per_user_max) requests waiting or running.
 */
int db_query_opts(db_pool_t *pool, const db_opts_t *o, const char *sql, int nparams,
                  const char *const *values, db_cb cb, void *arg)
    __attribute__((warn_unused_result));

/**
 * Run n statements as one transaction on one connection (BEGIN ... COMMIT, sent in one
 * pipeline: one round trip). r->res[i] is statement i's result (BEGIN and COMMIT are not
 * included). If any fails, the transaction is rolled back before the connection is reused,
 * and cb gets DB_EQUERY with the first error: the failing statement's slot holds its error
 * result, later slots are NULL; if COMMIT itself fails (a deferred constraint, a
 * serialization failure) every slot is filled and nothing was committed. DB_EUNAVAILABLE
 * means the connection was lost and the outcome is unknown (it may have committed). Same
 * ownership and callback rules as db_query().
 */
int db_txn(db_pool_t *pool, const db_stmt_t *stmts, int n, db_cb cb, void *arg)
    __attribute__((warn_unused_result));

/** The requests one user may have waiting or running (db_config_t.per_user_max, resolved). */
size_t db_per_user_max(const db_pool_t *pool);

/**
 * Count one request that waits elsewhere before it reaches the pool (a batched call:
 * service/batch.c) against its owner's and its user's shares, as db_query_opts() counts its
 * own: 0, or DB_EOWNER / DB_EUSER with nothing counted. db_unhold() gives it back.
 */
int db_hold(db_pool_t *pool, uint64_t owner, uint64_t user) __attribute__((warn_unused_result));
void db_unhold(db_pool_t *pool, uint64_t owner, uint64_t user);

/** db_txn() on behalf of an owner and a user; DB_EOWNER, DB_EUSER as db_query_opts(). */
int db_txn_opts(db_pool_t *pool, const db_opts_t *o, const db_stmt_t *stmts, int n, db_cb cb,
                void *arg) __attribute__((warn_unused_result));

/**
 * Pause (paused != 0) or resume an owner (db_opts_t): while paused, its waiting requests stay
 * on the queue and later ones join them, while other owners' requests go ahead; what it has
 * running finishes. Resuming sends them again in order. An HTTP/2 connection whose peer does
 * not read its replies is paused, so that it does not pull more rows than it can take. Out of
 * memory leaves the owner running. pool NULL or owner 0: nothing.
 */
void db_owner_pause(db_pool_t *pool, uint64_t owner, int paused);

/**
 * Pause or resume a user (db_opts_t.user) as db_owner_pause() does an owner: its waiting
 * requests, over all its owners, stay on the queue; what it has running finishes. A user whose
 * queued replies reach --max-user-outbound is paused. pool NULL or user 0: nothing.
 */
void db_user_pause(db_pool_t *pool, uint64_t user, int paused);

/**
 * Cancel request q (a handle from db_opts_t, before its callback started). Still waiting: it
 * leaves the queue and its callback runs later with DB_ECANCELED. Running: once it has run
 * cancel_grace_ms, the server is asked to stop it (the cancel request is sent from libuv's
 * thread pool, never blocking the loop); its callback then runs when it ends, with 57014 if
 * it was stopped, or, if it ended well after the cancel request went out, with
 * DB_EUNAVAILABLE: the outcome is unknown, since PostgreSQL answers a commit whose wait for
 * a synchronous standby a cancel cut short with success (the change kept on the primary
 * alone; only a WARNING says so). A transaction is all or nothing either way. The
 * connection is reused only after the cancel request was delivered, so it can never stop a
 * later statement. A running request shared by several callers (db_opts_t.sharers) is
 * stopped only at the last one's cancel: the others still wait for its answer. Otherwise
 * (rolling back, completed) nothing.
 */
void db_cancel(db_pool_t *pool, db_req_t *q);

/**
 * Subscribe to NOTIFY on channel through a dedicated connection that reconnects by itself.
 * cb runs for every notification with its payload. Returns 0, DB_ENOMEM or DB_ECLOSED.
 */
typedef void (*db_notify_fn)(const char *channel, const char *payload, void *arg);
int db_listen(db_pool_t *pool, const char *channel, db_notify_fn cb, void *arg)
    __attribute__((warn_unused_result));

/**
 * Like db_listen(), and ready(arg) runs each time LISTEN has taken effect: first, and again
 * after every reconnect. Notifications sent while the listener was disconnected are lost, so
 * ready is where a consumer catches up (for example by querying past its last sequence
 * number). ready may be NULL. Returns 0, DB_ENOMEM or DB_ECLOSED.
 */
int db_listen_ex(db_pool_t *pool, const char *channel, db_notify_fn cb, void (*ready)(void *arg),
                 void *arg) __attribute__((warn_unused_result));

/**
 * Like db_listen_ex(), and lost(arg) runs each time a listening connection is lost (after
 * ready ran; not when the pool closes): from then until ready runs again, notifications are
 * missed. lost may be NULL; it must not close the pool. Returns 0, DB_ENOMEM or DB_ECLOSED.
 */
int db_listen_full(db_pool_t *pool, const char *channel, db_notify_fn cb,
                   void (*ready)(void *arg), void (*lost)(void *arg), void *arg)
    __attribute__((warn_unused_result));

/** The text value at (row, col) of the last result (of its rows r->first... when r->count is
 * set); NULL if SQL NULL, out of range, or there is no result. */
const char *db_value(const db_result_t *r, int row, int col);

/** Rows in the last result (r->count when set). */
int db_rows(const db_result_t *r);

/**
 * True when r failed with an error the SQL raised on purpose or that the caller's input
 * caused (SQLSTATE classes 22 data exception, 23 integrity constraint violation, 40
 * transaction rollback, and P0001 RAISE EXCEPTION), so a service may map it to a client
 * status; anything else is an internal fault whose text must not reach a client.
 */
int db_error_is_user(const db_result_t *r);

/** A short, constant description of an error code above. */
const char *db_strerror(int err);

/*
 * How every session clued opens (the pool's, migrate's and serve's start-up checks) reads and
 * writes, pinned at its start whatever the database, the role or the connection string sets
 * (libpq's "options" form; a later "-c" wins):
 * - the schema search: clued's objects, with the system catalog's ahead of them (pg_catalog
 *   comes first when not named). A search_path set on the database or the role (ALTER ROLE ...
 *   SET search_path = public, pg_catalog) would otherwise let a function or operator in public
 *   stand in for a built-in one, such as the sha256() with which ExportAuditEvents recomputes
 *   the content hashes; a schema first in the path ("$user") would receive migrate's tables;
 * - text in UTF-8 (the migrations, the requests and the replies are), literals as the SQL
 *   standard reads them, and names printed unquoted where plain (format_type(), regprocedure:
 *   the schema check compares them as text);
 * - floats to the shortest exact digits (a statistic's median is the same to the last digit),
 *   bytea in hex, dates and intervals in the ISO forms;
 * - no compiling just in time: every statement of clued's runs in milliseconds, and one whose
 *   estimate passes jit_above_cost (a set-returning function is guessed at 1,000 rows) would
 *   spend hundreds of milliseconds of a core compiling it, on every call.
 */
#define DB_SESSION_PINS                                                                            \
  "-c search_path=public -c client_encoding=UTF8 -c standard_conforming_strings=on "               \
  "-c quote_all_identifiers=off -c extra_float_digits=1 -c bytea_output=hex "                      \
  "-c DateStyle=ISO,MDY -c IntervalStyle=postgres -c jit=off"

/** A parsed connection string's own startup options (options=..., or else PGOPTIONS), or "". */
const char *db_own_options(const PQconninfoOption *opts);

/**
 * A common table expression, `name`, that makes its statement wait for the synchronous
 * standbys: when the primary has some and cond holds, it updates a row of audit_tail_sync
 * (migration 0027), so the statement's commit, and so its answer, waits until the standbys
 * have every WAL record before it. A session updates the row of its backend's pid modulo 64,
 * so that sessions seldom wait for each other's row lock, which each holds through its
 * commit's wait. Without synchronous standbys it writes nothing.
 */
#define DB_SYNC_WAIT_CTE(name, cond)                                                               \
  name " AS (UPDATE audit_tail_sync SET n = n + 1 WHERE id = mod(pg_backend_pid(), 64)"            \
       " AND current_setting('synchronous_standby_names') <> '' AND " cond ")"

#endif
