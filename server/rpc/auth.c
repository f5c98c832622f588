#include "rpc/auth.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "audit/sha256.h"
#include "db/db.h"
#include "domain/clue_fsm.h"
#include "domain/validate.h"
#include "log.h"
#include "net/utf8.h"
#include "rpc/call.h"
#include "server.h"

_Static_assert(RPC_USER_NAME_MAX >= VALIDATE_NAME_MAX_CHARS * 4,
               "a principal carries every user name the API accepts whole");
_Static_assert(RPC_UNIT_CODE_MAX >= VALIDATE_UNIT_CODE_MAX, "and every unit code");

/* The names are the domain's (UNIT_KIND / ROLE enums numbered as in the protos). */
int auth_unit_kind_from_name(const char *s) {
  for (int i = CLUE_UNIT_ROOM; i <= CLUE_UNIT_ADMIN; i++)
    if (strcmp(s, clue_unit_kind_name((clue_unit_kind_t)i)) == 0)
      return i;
  return 0;
}

int auth_role_from_name(const char *s) {
  for (int i = CLUE_ROLE_MEMBER; i <= CLUE_ROLE_ADMIN; i++)
    if (strcmp(s, clue_role_name((clue_role_t)i)) == 0)
      return i;
  return 0;
}

static void to_hex(const unsigned char *in, size_t n, char *out) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[in[i] >> 4];
    out[2 * i + 1] = hex[in[i] & 15];
  }
  out[2 * n] = '\0';
}

void auth_token_hash(const char *token, char hex[65]) {
  uint8_t md[SHA256_LEN];

  (void)sha256_digest(token, strlen(token), md);
  to_hex(md, SHA256_LEN, hex);
}

int auth_token_new(char token[AUTH_TOKEN_LEN + 1], char hash_hex[65]) {
  unsigned char raw[32];
  size_t got = 0;

  while (got < sizeof(raw)) {
    ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -EIO;
    }
    got += (size_t)n;
  }
  memcpy(token, "ct_", 3);
  to_hex(raw, sizeof(raw), token + 3);
  auth_token_hash(token, hash_hex);
  return 0;
}

/* ---- the principal cache ----------------------------------------------------------------
 *
 * Why a cached principal is never served after its token was revoked or its user disabled,
 * beyond the bounds in auth.h:
 * - On the instance that revoked, the call drops that token's (or user's) principals before
 *   it replies, so the next call there looks the token up.
 * - Every revocation and disabling NOTIFYs "audit_events" from its own transaction (the
 *   triggers of migrations/0007), naming the token or user: each instance drops its
 *   principals when the notification arrives; a payload it cannot read drops them all.
 * - A lookup that read the token before the revocation committed may answer after the drop:
 *   it carries the stamp it started with, and the cache remembers the invalidations since
 *   (auth_cache_stale), so it cannot re-insert, and its call is looked up again.
 * - A payload that names no id comes from no trigger of clued's: a role let in to the
 *   database may NOTIFY the channel (it needs no privilege). Such payloads still drop every
 *   principal, but at most UNREAD_DROPS_PER_S times a second (those past them are put off to
 *   the second's end, one drop for all): a stream of them emptied the cache continuously,
 *   every call was looked up again, and lookups raced by a drop were refused as busy.
 * - Notifications are lost while the LISTEN connection is down: the cache is dropped when it
 *   goes and serves nothing until LISTEN is in effect again.
 * - Anything not notified (a role change, a revocation with the triggers off) lasts at most
 *   the entry's life, --auth-cache-ttl.
 * Only what an invalidation names goes: one user revoking their own tokens in a loop costs
 * the other users' principals nothing, and their calls are not looked up again for it. */

/* The id after prefix in payload ("revoked token 42"): > 0, or 0 if it is not one. */
static int64_t notified_id(const char *payload, const char *prefix) {
  size_t n = strlen(prefix);
  char *end = NULL;
  long long id;

  if (strncmp(payload, prefix, n) != 0 || payload[n] < '1' || payload[n] > '9')
    return 0;
  errno = 0;
  id = strtoll(payload + n, &end, 10);
  return errno == 0 && *end == '\0' && id > 0 ? (int64_t)id : 0;
}

/* Drops of every principal that unread invalidations may make in a second (a budget of
 * log_limit.h's, in its fixed one-second windows); those past them are put off to the
 * window's end (one drop for them all). */
#define UNREAD_DROPS_PER_S 5

static void on_unread_due(uv_timer_t *t) {
  server_t *srv = t->data;

  /* Due at the window's end: the drop opens the next window, counted in it. */
  (void)log_limit_take(&srv->auth_unread_budget, LOG_INFO, uv_now(srv->loop));
  auth_cache_forget(&srv->auth_cache, 0, 0);
}

static void auth_on_notify(const char *channel, const char *payload, void *arg) {
  server_t *srv = arg;
  int token = payload && strncmp(payload, "revoked token ", 14) == 0;
  int64_t id;
  uint64_t now;

  (void)channel;
  if (!token && !(payload && strncmp(payload, "disabled user ", 14) == 0))
    return;
  id = notified_id(payload, token ? "revoked token " : "disabled user ");
  if (id > 0) {
    auth_cache_forget(&srv->auth_cache, token ? id : 0, token ? 0 : id);
    return;
  }
  /* An id that cannot be read forgets everything, at most UNREAD_DROPS_PER_S times a second. */
  now = uv_now(srv->loop);
  if (log_limit_take(&srv->auth_unread_budget, LOG_INFO, now))
    auth_cache_forget(&srv->auth_cache, 0, 0);
  else if (!uv_is_active((uv_handle_t *)&srv->auth_unread))
    uv_timer_start(&srv->auth_unread, on_unread_due, srv->auth_unread_budget.window_ms + 1000 - now,
                   0);
}

static void auth_on_listen_ready(void *arg) {
  server_t *srv = arg;
  log_info("auth: the invalidation listener is ready: principals are cached");
  auth_cache_reset(&srv->auth_cache, 1);
}

static void auth_on_listen_lost(void *arg) {
  server_t *srv = arg;
  log_warn("auth: lost the invalidation listener: principal cache dropped until it is back");
  auth_cache_reset(&srv->auth_cache, 0);
}

int rpc_auth_init(server_t *srv) {
  int rc;

  auth_cache_init(&srv->auth_cache, srv->cfg.auth_cache_size, srv->cfg.auth_cache_ttl_ms);
  if (srv->db == NULL || srv->auth_cache.max == 0)
    return 0;
  uv_timer_init(srv->loop, &srv->auth_unread);
  srv->auth_unread.data = srv;
  log_limit_init(&srv->auth_unread_budget, UNREAD_DROPS_PER_S, uv_now(srv->loop));
  rc = db_listen_full(srv->db, "audit_events", auth_on_notify, auth_on_listen_ready,
                      auth_on_listen_lost, srv);
  return rc == 0 ? 0 : -ENOMEM;
}

void rpc_auth_close(server_t *srv) {
  if (srv->auth_unread.data != NULL)
    uv_close((uv_handle_t *)&srv->auth_unread, NULL);
}

void rpc_auth_forget_token(server_t *srv, int64_t token_id) {
  auth_cache_forget(&srv->auth_cache, token_id, 0);
}

void rpc_auth_forget_user(server_t *srv, int64_t user_id) {
  auth_cache_forget(&srv->auth_cache, 0, user_id);
}

void rpc_auth_forget_all(server_t *srv) {
  auth_cache_forget(&srv->auth_cache, 0, 0);
}

/* A lookup in flight: the stamp it started with decides whether its answer may be kept. */
typedef struct auth_job {
  rpc_call_t *call;
  auth_stamp_t stamp;   /* the cache's when the lookup started */
  int64_t known;        /* the user the token was lately known as, or 0 */
  unsigned recheck : 1; /* the call was authenticated already: rpc_call_rechecked() */
  char hash[65];
} auth_job_t;

/* The pool's key for every token lookup (db_opts_t.user): together they hold at most one
 * user's share of the pool and its queue, so strangers sending made-up tokens, from any
 * number of addresses, leave the rest to callers already known. No user id has the top
 * bit. */
#define AUTH_LOOKUPS_KEY (1ull << 63)

/* Lookups again of one call before its request runs, at most: each follows an invalidation
 * that came during the one before. */
#define AUTH_RECHECKS_MAX 4

static const char auth_sql[] =
    "SELECT u.id, u.unit_id, un.kind, u.role, u.name, un.code, t.id, t.issued_by <> t.user_id"
    "  FROM tokens t JOIN users u ON u.id = t.user_id JOIN units un ON un.id = u.unit_id"
    " WHERE t.token_sha256 = decode($1, 'hex') AND t.revoked_at IS NULL AND NOT u.disabled";

/* The principal is read: remember the cache's stamp then, and when the database said it
 * (read_ms: now, or when a cached principal was looked up). */
static void auth_read(rpc_call_t *call, auth_stamp_t stamp, uint64_t read_ms, int recheck) {
  call->auth_stamp = stamp;
  call->auth_ms = read_ms;
  call->auth_named = 0;
  if (recheck)
    rpc_call_rechecked(call);
  else
    rpc_call_authenticated(call);
}

static void auth_done(const db_result_t *r, void *arg) {
  auth_job_t *job = arg;
  rpc_call_t *call = job->call;

  call->db_req = NULL;
  if (rpc_call_done(call)) {
    rpc_call_unref(call);
    return;
  }
  if (r->err == DB_EQUEUE) {
    /* The database is up, only saturated: say so, as a handler's query would (svc_fail_db),
     * so a client backs off instead of treating the server as down. The pool logs the
     * refusals itself, once a second. */
    rpc_fail(call, GRPC_UNAVAILABLE, "server busy: database queue full, retry later");
  } else if (r->err != DB_OK) {
    log_warn("call %s: token lookup failed: %s", call->id, r->message ? r->message : "?");
    rpc_fail(call, GRPC_UNAVAILABLE, "database unavailable");
  } else if (db_rows(r) != 1) {
    /* A token revoked, or its user disabled, is a stranger's from now on: its lookups no
     * longer count against (nor tell of) the user it was lately known as. */
    if (job->known > 0)
      auth_cache_unknow(&call->srv->auth_cache, job->hash);
    rpc_fail(call, GRPC_UNAUTHENTICATED, "unknown or revoked token, or disabled user");
  } else {
    rpc_principal_t p = {0};
    p.user_id = strtoll(db_value(r, 0, 0), NULL, 10);
    p.unit_id = strtoll(db_value(r, 0, 1), NULL, 10);
    p.unit_kind = auth_unit_kind_from_name(db_value(r, 0, 2));
    p.role = auth_role_from_name(db_value(r, 0, 3));
    (void)clue__utf8_copy(p.user_name, sizeof(p.user_name), db_value(r, 0, 4));
    (void)clue__utf8_copy(p.unit_code, sizeof(p.unit_code), db_value(r, 0, 5));
    p.token_id = strtoll(db_value(r, 0, 6), NULL, 10);
    p.enrollment = strcmp(db_value(r, 0, 7), "f") != 0; /* anything but "false" fails closed */
    auth_cache_put(&call->srv->auth_cache, job->hash, &p, job->stamp, uv_now(call->srv->loop));
    auth_cache_know(&call->srv->auth_cache, job->hash, &p, job->stamp, uv_now(call->srv->loop));
    if (job->recheck && p.user_id != call->principal.user_id) {
      rpc_fail(call, GRPC_UNAUTHENTICATED, "unknown or revoked token, or disabled user");
    } else {
      call->principal = p;
      auth_read(call, job->stamp, uv_now(call->srv->loop), job->recheck);
    }
  }
  rpc_call_unref(call);
}

/* Authenticate call with its token h (after "Bearer "): from the cache, or a lookup. */
static void auth_lookup(rpc_call_t *call, const char *h, int recheck) {
  const char *params[1];
  const rpc_principal_t *cached;
  uint64_t read_ms = 0;
  auth_job_t *job;
  db_opts_t o = {0};
  int rc;

  job = rpc_call_alloc(call, sizeof(*job));
  if (job == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  job->call = call;
  job->recheck = recheck != 0;
  auth_token_hash(h, job->hash);
  cached = auth_cache_get(&call->srv->auth_cache, job->hash, uv_now(call->srv->loop), &read_ms);
  if (cached && (!recheck || cached->user_id == call->principal.user_id)) {
    call->srv->auth_lookups[0]++;
    call->principal = *cached;
    auth_read(call, auth_cache_stamp(&call->srv->auth_cache), read_ms, recheck);
    return;
  }
  call->srv->auth_lookups[1]++;
  job->stamp = auth_cache_stamp(&call->srv->auth_cache);
  params[0] = job->hash;
  /* Token lookups together count as one user's requests (AUTH_LOOKUPS_KEY): strangers
   * flooding lookups of made-up tokens, from one address or many, hold at most that share
   * of the pool and its queue, and the callers already authenticated keep the rest. A
   * token that authenticated lately (its principal expired from the cache) is its user's:
   * its renewal counts against that user's share, out of the strangers' way, until its
   * revocation (or its user's disabling) is told here (auth_cache_forget). */
  job->known = auth_cache_known(&call->srv->auth_cache, job->hash, uv_now(call->srv->loop));
  o.owner = rpc_call_conn_id(call);
  o.user = job->known > 0 ? (uint64_t)job->known : AUTH_LOOKUPS_KEY;
  o.handle = &call->db_req;
  rpc_call_ref(call);
  rc = db_query_opts(call->srv->db, &o, auth_sql, 1, params, auth_done, job);
  if (rc != 0) {
    call->db_req = NULL;
    rpc_call_unref(call);
    if (rc == DB_EOWNER)
      rpc_fail(call, GRPC_RESOURCE_EXHAUSTED,
               "too many calls waiting for the database on this connection (limit %zu); "
               "retry later",
               call->srv->cfg.db_queue_per_conn);
    else if (rc == DB_EUSER && job->known > 0)
      rpc_fail(call, GRPC_RESOURCE_EXHAUSTED,
               "too many of your calls are waiting for the database (limit %zu over all your "
               "connections); retry later",
               db_per_user_max(call->srv->db));
    else if (rc == DB_EUSER)
      rpc_fail(call, GRPC_UNAVAILABLE,
               "server busy: too many callers being authenticated (limit %zu); retry later",
               db_per_user_max(call->srv->db));
    else
      rpc_fail(call, GRPC_UNAVAILABLE, "database unavailable");
  }
}

void rpc_auth_start(rpc_call_t *call) {
  const char *h = rpc_call_metadata(call, "authorization");

  if (h == NULL) {
    rpc_fail(call, GRPC_UNAUTHENTICATED, "missing authorization metadata (Bearer token)");
    return;
  }
  if (strncasecmp(h, "Bearer ", 7) != 0 || h[7] == '\0') {
    rpc_fail(call, GRPC_UNAUTHENTICATED, "authorization must be \"Bearer <token>\"");
    return;
  }
  if (call->srv->db == NULL) {
    rpc_fail(call, GRPC_UNAVAILABLE, "no database configured");
    return;
  }
  auth_lookup(call, h + 7, 0);
}

bool rpc_auth_current(const rpc_call_t *call) {
  const auth_cache_t *c = &call->srv->auth_cache;
  uint64_t age = uv_now(call->srv->loop) - call->auth_ms;

  /* Not listening (no cache, or its listener lost), nothing tells of another instance's
   * revocations: only a principal read this very moment is current. */
  return !auth_cache_stale(c, call->auth_stamp, &call->principal) &&
         (c->live ? age <= c->ttl_ms : age == 0);
}

/* How long a principal the cache cannot vouch for (auth_cache_named() < 0, or not listening)
 * may still act in a statement that waited: its life, and at least this. */
#define AUTH_UNTOLD_MS 10000

bool rpc_auth_ended(rpc_call_t *call) {
  const auth_cache_t *c = &call->srv->auth_cache;
  int named = auth_cache_named(c, call->auth_stamp, &call->principal);
  uint64_t life = c->ttl_ms > AUTH_UNTOLD_MS ? c->ttl_ms : AUTH_UNTOLD_MS;

  if (named > 0) {
    call->auth_named = 1;
    return true;
  }
  return (named < 0 || !c->live) && uv_now(call->srv->loop) - call->auth_ms > life;
}

void rpc_auth_fail_ended(rpc_call_t *call) {
  if (call->auth_named ||
      auth_cache_named(&call->srv->auth_cache, call->auth_stamp, &call->principal) > 0)
    rpc_fail(call, GRPC_UNAUTHENTICATED, "unknown or revoked token, or disabled user");
  else
    rpc_fail(call, GRPC_UNAVAILABLE,
             "server busy: this call waited longer than its token's revocations could be "
             "followed; retry");
}

void rpc_auth_recheck(rpc_call_t *call) {
  const char *h = rpc_call_metadata(call, "authorization");

  /* Before its request runs a call has no other statement: a lookup of it is in flight. */
  if (call->db_req != NULL)
    return;
  if (++call->auth_rechecks > AUTH_RECHECKS_MAX) {
    rpc_fail(call, GRPC_UNAVAILABLE,
             "server busy: tokens were revoked while this call was authenticated, %d times; "
             "retry",
             AUTH_RECHECKS_MAX);
    return;
  }
  /* The headers authenticated once: they are still there, and still well formed. */
  assert(h != NULL && strlen(h) > 7);
  auth_lookup(call, h + 7, 1);
}
