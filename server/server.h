#ifndef CLUED_SERVER_H
#define CLUED_SERVER_H

/* The one server context, passed down as libuv passes uv_loop_t. No global mutable state:
 * two servers can run in one process. */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "log_limit.h"
#include "rpc/auth_cache.h"
#include "rpc/key_counts.h"
#include "rpc/rpc.h"

typedef struct db_pool db_pool_t;
typedef struct h2_conn h2_conn_t;
typedef struct h2_stream h2_stream_t;
typedef struct rpc_table rpc_table_t;
typedef struct health health_t;
typedef struct replica replica_t;
typedef struct audit audit_t;
typedef struct reflection reflection_t;
typedef struct tls_server tls_server_t;
typedef struct audit_tree audit_tree_t;
typedef struct h2_pages h2_pages_t;
typedef struct audit_tail audit_tail_t;
typedef struct schema_watch schema_watch_t;

#define SERVER_MAX_WEB_ORIGINS 16

typedef struct server_config {
  char listen[128];                 /* IPv4:port, [IPv6]:port (SERVER_LISTEN_FORMS) */
  size_t max_message_bytes;         /* default 4 MiB */
  unsigned max_concurrent_streams;  /* advertised per connection, default 100 */
  size_t max_header_list_bytes;     /* decoded request header list (RFC 7541 sizes), 64 KiB */
  unsigned max_header_count;        /* request header fields, default 128 */
  size_t max_conn_buffer;           /* queued response bytes per connection, default 1 MiB */
  size_t max_conn_inbound;          /* request bytes kept per connection (unfinished bodies,
                                       decoded requests), 128 MiB */
  size_t max_inbound;               /* the same, authenticated calls of all connections, 1 GiB */
  size_t max_user_inbound;          /* the same, one user's authenticated calls over all its
                                       connections; 0 (default): a quarter of max_inbound */
  size_t max_outbound;              /* reply bytes queued for authenticated calls of all
                                       connections, 1 GiB: past it their new calls wait */
  size_t max_user_outbound;         /* the same, one user's calls over all its connections; 0
                                       (default): a quarter of max_outbound */
  size_t max_public_outbound;       /* reply bytes queued for public methods' calls of all
                                       connections, 16 MiB: past it their streams wait */
  unsigned max_connections;         /* open connections, 10240; past it a new one closes the
                                       oldest connection no user claims, or is closed itself */
  unsigned max_conns_per_user;      /* connections one user's calls claim at most; 0 (default):
                                       a sixteenth of max_connections, at least 1 */
  uint64_t handshake_timeout_ms;    /* preface and SETTINGS within, default 10 s; 0: none */
  uint64_t idle_timeout_ms;         /* no call and no request for, then GOAWAY; default 5 min */
  uint64_t write_timeout_ms;        /* output owed this long without progress, then close;
                                       60 s */
  uint64_t unauth_stream_age_ms;    /* public streams (Health/Watch) end after, default 1 h */
  unsigned max_public_streams;      /* streams of public streaming methods (Health/Watch,
                                       reflection) open at once over all connections, with
                                       public unary calls whose answers wait, 4096 */
  unsigned max_public_streams_per_addr; /* the same, from one peer address (an IPv6 /64); 0
                                           (default): a quarter of max_public_streams */
  uint64_t keepalive_min_ping_ms;   /* PINGs closer than this are strikes, default 5 min */
  unsigned grace_ms;                /* shutdown grace period, default 5000 */
  uint64_t max_stream_age_ms;       /* WatchEvents streams end after this, default 1 h; 0: never */
  const char *database_url;         /* libpq conninfo */
  const char *replica_url;          /* libpq conninfo of a standby for stale-tolerant reads; NULL:
                                       none (service/replica.h) */
  uint64_t replica_max_lag_ms;      /* a replica further behind is bypassed, default 5000 */
  int require_sync_replica;         /* refuse to start, and report NOT_SERVING, while the primary
                                       has no synchronous standby (db/replication.h) */
  const char *migrations_dir;       /* --migrations: where clued's functions and triggers are
                                       defined; NULL: the built-in migrations */
  uint64_t schema_check_ms;         /* how often they are compared with the database, 60 s;
                                       0: only at start (service/schema_watch.h) */
  int allow_schema_drift;           /* serve even while they differ (logged, counted) */
  int db_pool_size;                 /* default 8 */
  int db_batch_inflight;            /* statements of one batched read kind running at once;
                                       0: no batching at all (default 1, service/batch.h) */
  int db_write_batch_inflight;      /* the same for a batched write kind; 0: writes alone
                                       (default 2) */
  int db_direct_moves;              /* 1: a plain move authz_move_unread() decides is written
                                       without a facts read first (default 1) */
  size_t db_queue_max;              /* default 1024 */
  unsigned db_statement_timeout_ms; /* server-side statement_timeout, default 30000 */
  unsigned db_lock_timeout_ms;      /* server-side lock_timeout, default 3000 */
  unsigned auth_cache_ttl_ms;       /* life of a cached principal, default 1000; 0: no cache */
  size_t auth_cache_size;           /* cached principals at most, default 4096 */
  unsigned token_issues_per_hour;   /* tokens one user may issue themself in any hour, default
                                       600; 0: no such limit */
  size_t db_queue_per_conn;         /* database requests one HTTP/2 connection may have waiting
                                       or running, default 128 */
  size_t db_queue_per_user;         /* database requests one user may have waiting or running
                                       over all its connections; 0 (default): a quarter of
                                       db_queue_max, and at least db_queue_per_conn */
  int db_conns_per_user;            /* pool connections one user's requests may hold at once;
                                       0 (default): half the pool, rounded up */
  int db_heavy_conns;               /* pool connections heavy calls' requests may hold at once
                                       over all users; 0 (default): half the pool, rounded
                                       down (at least 1, at most the pool less one) */
  int accepted_deadline_days;       /* default 30 */
  int prelim_deadline_days;         /* default 90 */
  int filed_deadline_days;          /* default 90 */
  int64_t clock_offset_ms;          /* test builds only: shifts the server's notion of "now" */
  const char *tls_cert;             /* PEM certificate chain; with tls_key turns TLS on */
  const char *tls_key;              /* PEM private key */
  const char *tls_client_ca;        /* PEM CAs whose client certificates are required */
  int insecure_cleartext;           /* allow cleartext on a non-loopback address */
  const char *metrics_listen;       /* address:port of the Prometheus endpoint; NULL: none */
  const char *audit_signing_key;    /* file of the checkpoint signing key; NULL: never sign */
  const char *audit_previous_key;   /* verifier key of the signing key it replaced, or NULL */
  uint64_t checkpoint_every;        /* publish a checkpoint after this many new events (1000) */
  uint64_t checkpoint_ms;           /* ... or after this long with unsigned events (10000) */
  const char *web_origins[SERVER_MAX_WEB_ORIGINS]; /* --web-origin: CORS allowed origins */
  unsigned nweb_origins;
  const char *console_dir; /* --console-dir: static files served at /; NULL: none */
} server_config_t;

/**
 * A part of the server with a life of its own (the method table, the database pool, health,
 * audit, ...). Modules start in the order registered; they hear of a shutdown, are closed
 * (once the last connection is gone) and freed (after the loop stopped) in reverse order.
 * Every hook may be NULL. A module whose start failed is still shut down, closed and freed.
 */
typedef struct server_module {
  const char *name;
  int (*start)(server_t *srv);     /* 0 or a negative error, logged by the module */
  void (*shutdown)(server_t *srv); /* the server drains: end streams, stop taking work */
  void (*close)(server_t *srv);    /* the last connection is gone: close handles */
  void (*free)(server_t *srv);     /* the loop has stopped: release memory */
} server_module_t;

#define SERVER_MAX_MODULES 16

typedef enum server_state {
  SERVER_RUNNING,
  SERVER_DRAINING, /* stopped accepting, GOAWAY sent, waiting for calls in flight */
  SERVER_STOPPED,
} server_state_t;

/* Why a running server refuses calls after a look at the schema (service/schema_watch.c). */
enum {
  SCHEMA_REFUSING_NONE,
  SCHEMA_REFUSING_DRIFT,     /* clued's functions or triggers differ from its migrations */
  SCHEMA_REFUSING_NEWER,     /* a newer clued migrated the database past this binary */
  SCHEMA_REFUSING_UNCHECKED, /* the check itself failed SCHEMA_CHECK_FAILS_MAX times in a row */
};

struct server {
  uv_loop_t *loop;
  server_config_t cfg;
  server_state_t state;
  uv_tcp_t listener;
  uv_signal_t sigint, sigterm;
  uv_signal_t sighup; /* reloads the TLS certificate (started only with TLS) */
  tls_server_t *tls;  /* NULL: cleartext HTTP/2 */
  uv_timer_t grace_timer;
  uv_timer_t sweep_timer; /* connection timeouts, a few times a second (server.c) */
  uint64_t refused_conns; /* new ones closed at --max-connections, since the last log line */
  uint64_t evicted_conns; /* old ones closed for new ones at --max-connections, since then */
  uint64_t evicted_logged_ms;
  const server_module_t *modules[SERVER_MAX_MODULES]; /* started (or tried), in order */
  unsigned nmodules;
  rpc_table_t *methods;
  db_pool_t *db;      /* NULL when running without a database */
  replica_t *replica; /* --replica-url: the replica's pool and lag; NULL: none */
  health_t *health;
  audit_t *audit;              /* WatchEvents: the shared tail and its watchers */
  reflection_t *reflection;    /* server reflection: the embedded descriptor set, indexed */
  auth_cache_t auth_cache;     /* principals by token hash (rpc/auth.c); outlives the pool */
  uv_timer_t auth_unread;      /* a drop of every principal put off (rpc/auth.c); data: set */
  log_limit_t auth_unread_budget; /* unread invalidations' drops, in one-second windows */
  audit_tree_t *tree;          /* the audit log's Merkle tree and checkpoints */
  struct svc_batches *batches; /* the batched writes' queues (service/batch.c) */
  uint64_t direct_moves[2];    /* moves sent without a facts read: [0] done so, [1] read
                                  and decided after all (service/clue.c) */
  size_t inbound;              /* request bytes authenticated calls keep (--max-inbound) */
  key_counts_t user_inbound;   /* ... of them per user (--max-user-inbound) */
  unsigned public_streams;     /* open calls of public streaming methods, and public unary
                                  calls whose answers wait (--max-public-streams) */
  key_counts_t addr_public_streams; /* ... of them per peer address
                                       (--max-public-streams-per-address) */
  size_t inbound_public;       /* request bytes of public methods' calls, all connections */
  size_t outbound;             /* reply bytes queued for authenticated calls (--max-outbound) */
  key_counts_t user_outbound;  /* ... of them per user (--max-user-outbound) */
  size_t outbound_public;      /* reply bytes queued for public calls (--max-public-outbound) */
  h2_stream_t *out_waiters;    /* streams waiting for one of those totals to drain (h2_stream.c) */
  size_t inbound_freed;        /* large requests' bytes freed since the sweep last trimmed
                                  the heap */
  uint64_t auth_lookups[2];    /* calls authenticated: [0] from the principal cache, [1] by a
                                  token lookup in the database (rpc/auth.c) */
  /* Creates the owner of a new stream and hands back its stream (rpc_call_accept): how a
   * connection starts a call without knowing what a call is. 0 or a negative error. */
  int (*stream_accept)(server_t *srv, uint64_t conn_id, int32_t stream_id, h2_stream_t **out);
  /* Told when a connection's queued output passes --max-conn-buffer (1) and when it drains
   * below half of it or the connection closes (0); NULL: nobody listens. The database pool
   * holds that connection's waiting queries meanwhile (db_owner_pause). */
  void (*conn_congested)(server_t *srv, uint64_t conn_id, int congested);
  /* Told when a user's queued output reaches --max-user-outbound (1) and when it drains below
   * half of it (0); NULL: nobody listens. The pool holds that user's waiting queries meanwhile
   * (db_user_pause). */
  void (*user_congested)(server_t *srv, uint64_t user, int congested);
  /* While streams detach (h2_stream_detach(), a connection closing all of its own): the
   * users to resume (user_congested 0) once the detached streams' calls were cancelled,
   * h2_resume_hold() / h2_resume_release(). */
  unsigned resume_hold;
  size_t resume_n;
  uint64_t resume_users[4];
  h2_pages_t *pages;       /* whole-page blocks for nghttp2's large buffers */
  audit_tail_t *tail;      /* the committed tail of audit_events: watchers and the tree follow it */
  schema_watch_t *schema_watch; /* the check of clued's functions and triggers; NULL: none */
  int schema_refusing;          /* SCHEMA_REFUSING_*: calls that need a token are refused
                                   (UNAVAILABLE) and Health is NOT_SERVING */
  struct metrics *metrics; /* call counters for --metrics-listen; NULL: off */
  struct metrics_http *metrics_http; /* the /metrics listener; NULL: none */
  h2_conn_t *conns;                  /* intrusive list of live connections */
  h2_conn_t *strangers, *strangers_tail; /* live connections no user claims, oldest first */
  key_counts_t user_conns;               /* connections each user claims (h2_conn_claim) */
  key_counts_t addr_strangers;           /* strangers' connections per peer address */
  h2_conn_t *flush_soon;             /* connections to flush at the next idle phase (soon_next) */
  uv_idle_t flush_idle;              /* runs while flush_soon is not empty */
  size_t nconns;
  uint64_t next_conn_id;
  char bound[160];        /* the address actually bound, for logs */
  char *console_root;     /* realpath of --console-dir, owned; NULL: no files served */
  struct web_file *files; /* console files replies are serving, one shared copy each */
  /* One read buffer for every connection: each read is consumed whole by nghttp2 inside its
   * callback, so no connection needs its own. */
  uint8_t rbuf[65536];
};

/** Set defaults in cfg. */
void server_config_defaults(server_config_t *cfg);

/** Create the server: bind and listen on cfg->listen, install signal handlers. */
int server_init(server_t *srv, uv_loop_t *loop, const server_config_t *cfg)
    __attribute__((warn_unused_result));

/**
 * Start the modules in order (each is registered as it starts, so that a failure still
 * closes what came before). Returns 0 or the first module's error; stop with
 * server_shutdown() and server_free() either way.
 */
int server_start_modules(server_t *srv, const server_module_t *const *mods, size_t n)
    __attribute__((warn_unused_result));

/** Begin graceful shutdown: stop accepting, GOAWAY everywhere, start the grace timer. */
void server_shutdown(server_t *srv);

/** Release what server_init built (after the loop has stopped). */
void server_free(server_t *srv);

/** Called by a connection as it closes: a draining server stops with its last one. */
void server_conn_closed(server_t *srv);

/** A peer's address as a key: FNV-1a of an IPv4 address (one mapped into IPv6 too) or of an
 * IPv6 address's /64 (one host may hold a whole /64), with the top bit set (no user id has
 * it); 0 for any other family. */
uint64_t server_peer_key(const struct sockaddr_storage *ss);

/* What server_parse_listen() takes, for messages. */
#define SERVER_LISTEN_FORMS                                                                        \
  "IPv4:port, [IPv6]:port or :port; an address, not a name such as localhost"

/** Parse "IPv4:port", "[IPv6]:port" or ":port" (0.0.0.0) into *ss: IP literals only, no
 * name is resolved. Returns 0 or UV_EINVAL. */
int server_parse_listen(const char *s, struct sockaddr_storage *ss);

/** True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: cleartext needs no flag there. */
int server_is_loopback(const struct sockaddr_storage *ss);

/** The server's clock in milliseconds since the epoch (test builds may offset it). */
int64_t server_now_ms(const server_t *srv);

/** The database requests one user may have waiting or running (--db-queue-per-user; by
 * default a quarter of --db-queue, at least --db-queue-per-conn). */
size_t server_db_queue_per_user(const server_config_t *cfg);

/** The most request bytes calls of public methods (no token) keep over all connections: an
 * eighth of --max-inbound. */
size_t server_max_public_inbound(const server_t *srv);

/** The most streams of public streaming methods one peer address may have open
 * (--max-public-streams-per-address; by default a quarter of --max-public-streams, at
 * least 1). */
unsigned server_max_public_streams_per_addr(const server_config_t *cfg);

/** The most connections one user's calls may claim (--max-conns-per-user). */
size_t server_max_conns_per_user(const server_t *srv);

/** The most request bytes one user's authenticated calls may keep (--max-user-inbound). */
size_t server_max_user_inbound(const server_t *srv);

/** The reply bytes one user's calls may have queued before its new calls wait
 * (--max-user-outbound). */
size_t server_max_user_outbound(const server_t *srv);

/** n bytes of requests counted in srv->inbound are freed: they no longer count, and large
 * ones count towards the sweep's trim of the heap. */
void server_inbound_release(server_t *srv, size_t n);

#endif
