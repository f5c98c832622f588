/* Reads from a replica (service/replica.h).
 *
 * Staleness. Every CHECK_MS the monitor asks the primary for its WAL position
 * (pg_current_wal_lsn(), which every acknowledged commit lies below) and the replica for how
 * far it has replayed. It keeps the primary's positions of the last HISTORY checks, each with
 * the time its query was sent: when the replica has replayed past the primary's position P,
 * sampled at time t, it has every commit the primary had acknowledged at t, so an answer it
 * gives now is at most now - t behind. The newest such t is the bound each answer reports;
 * between checks it only grows. It is never newer than the time the monitor sent the last
 * query the replica answered: while the primary writes nothing, every new sample of the
 * primary's position is one the replica had replayed, but a replica that stops answering
 * (stopped, or a network path that drops packets) must not look fresh for it; so its bound
 * grows past --replica-max-lag within that lag of its last answer, and reads leave it. A
 * replica that is not in recovery (promoted, or a primary named by mistake) is not used: it
 * may have diverged from the primary this server writes to. Nor is one of another history: WAL
 * positions compare only within one cluster's timeline, so the replica must have the
 * primary's system identifier (a standby of another cluster, another deployment's, does not)
 * and be on the primary's timeline (after a failover, a standby left on the old one may have
 * replayed past the fork commits the new primary never had). A standby tells its timeline by
 * its last restartpoint and its minimum recovery point, both of which move onto a new
 * timeline only some time after it does: one that follows a promoted primary is bypassed
 * until then. Nor is one whose database is not the primary's: another database of the
 * standby's cluster (a copy made with CREATE DATABASE ... TEMPLATE, an empty one, another
 * deployment's on the same cluster) shares the system identifier and the timeline, so the
 * monitor also compares the database's oid (physical replication keeps it; a copy gets a new
 * one) and the last migration applied (a standby that has not replayed a migration yet, or
 * a database migrated apart, would fail the reads this server's functions make). The
 * monitor and the reads share the pool,
 * whose connections all go to the first standby of the URL that accepts them; only while
 * some of them fail over to another standby can a read reach one the monitor did not ask.
 *
 * What a stale read means. ListClues on a replica decides visibility from the replica's rows:
 * for at most the reported staleness, a clue handed over to another unit may still be listed
 * to its old owner, as the same call on the primary would have listed it a moment earlier.
 * GetClue, every write, and everything a caller must see of its own writes read the primary.
 *
 * A replica lost during a call (its connection broken mid-read, or none to be had) does not
 * fail the call, nor does a read the standby cancels to replay WAL (a recovery conflict): the
 * read runs again on the primary (replica_fall_back()), and so do the call's later reads. Its
 * answer then says it came from the primary, unless an earlier read of the same call was answered
 * by the replica: then it keeps the replica's bound, which still holds (the primary's part is
 * fresher). */

#include "service/replica.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "log.h"
#include "net/grpc_wire.h"
#include "service/services.h"

#define CHECK_MS 200
#define HISTORY 512 /* the primary's positions kept: 102 s at CHECK_MS */

typedef struct sample {
  uint64_t ms;  /* uv_now() when the primary's query was sent */
  uint64_t lsn; /* the position it answered */
} sample_t;

struct replica {
  server_t *srv;
  db_pool_t *pool;
  uv_timer_t timer;
  int closed;
  int asking_primary, asking_replica;
  uint64_t primary_sent_ms, replica_sent_ms; /* when the query in flight was sent */
  sample_t hist[HISTORY]; /* a ring, oldest at first */
  size_t first, n;
  char sysid[24];       /* the primary's system identifier ("" not known yet) */
  uint64_t primary_tli; /* its timeline */
  char datoid[24];      /* the oid of the primary's database (text) */
  char version[24];     /* the last migration applied there (text; "" none) */
  int usable;           /* the replica's last answer: in recovery, of the primary's history,
                           its database at the primary's version */
  const char *why;      /* why not, for the log */
  char why_buf[160];    /* a why that names values */
  uint64_t replayed;    /* how far it had replayed then */
  uint64_t fresh_ms;    /* it has every commit the primary had acknowledged at this time; 0:
                           not known */
  uint64_t answered_ms; /* when the monitor sent the last query the replica answered (its
                           bound is never newer); 0: none yet */
  int logged_state;  /* -1 not yet decided, 0 bypassed, 1 in use (for the log) */
  uint64_t reads_replica, reads_primary;
  uint64_t lost, conflicts; /* reads run again on the primary (replica_stats_t) */
};

/* A call's route to the replica (rpc_call_read_note()): what its answer says, and how many
 * of its reads the replica answered. */
typedef struct route {
  Clue__V1__ReadFreshness fresh;
  unsigned answered;
} route_t;

/* Up to 8 hex digits ending at stop; *s moves past them. */
static int hex32(const char **s, char stop, uint64_t *out) {
  int n = 0, d;

  *out = 0;
  for (; **s != stop; (*s)++, n++) {
    if ((d = grpc_hex_digit(**s)) < 0 || n == 8)
      return -1;
    *out = *out * 16 + (uint64_t)d;
  }
  return n > 0 ? 0 : -1;
}

int replica_lsn_parse(const char *s, uint64_t *out) {
  uint64_t hi, lo;

  if (hex32(&s, '/', &hi) != 0)
    return -1;
  s++;
  if (hex32(&s, '\0', &lo) != 0)
    return -1;
  *out = hi << 32 | lo;
  return 0;
}

static char *lsn_text(rpc_call_t *call, uint64_t lsn) {
  return rpc_call_printf(call, "%" PRIX64 "/%" PRIX64, lsn >> 32, lsn & 0xffffffffu);
}

/* What an answer from the primary says: fresh, with every commit up to the primary's newest
 * sampled position at least ("" before the first sample). Returns -1 out of memory (read_lsn
 * then ""). The sample can be older than what the read saw (it is taken every CHECK_MS), so
 * each read on the primary then replaces it with the position it read itself
 * (replica_primary_read_lsn()). */
static int from_primary(rpc_call_t *call, const replica_t *r, Clue__V1__ReadFreshness *f) {
  char *lsn = r->n > 0 ? lsn_text(call, r->hist[(r->first + r->n - 1) % HISTORY].lsn) : NULL;

  f->from_replica = 0;
  f->max_staleness_ms = 0;
  f->read_lsn = lsn ? lsn : (char *)protobuf_c_empty_string;
  return r->n > 0 && lsn == NULL ? -1 : 0;
}

/* The newest sample the replica has replayed past decides fresh_ms; none (the replica is
 * further behind than the history reaches): not known. Recomputed, not only raised: a URL of
 * several standbys may bring the monitor to one that is further behind than the last. */
static void update_fresh(replica_t *r) {
  r->fresh_ms = 0;
  for (size_t k = r->n; k-- > 0;) {
    const sample_t *s = &r->hist[(r->first + k) % HISTORY];
    if (s->lsn <= r->replayed) {
      r->fresh_ms = s->ms;
      return;
    }
  }
}

/* The timeline of a WAL file name: its first 8 of 24 hex digits. */
static int walfile_tli(const char *name, uint64_t *tli) {
  char head[9];
  const char *p = head;

  if (name == NULL || strlen(name) != 24)
    return -1;
  memcpy(head, name, 8);
  head[8] = '\0';
  return hex32(&p, '\0', tli);
}

static void primary_answered(const db_result_t *res, void *arg) {
  replica_t *r = arg;
  uint64_t lsn, tli;
  const char *v, *id, *oid, *version;

  r->asking_primary = 0;
  if (r->closed || res->err != DB_OK || (v = db_value(res, 0, 0)) == NULL ||
      replica_lsn_parse(v, &lsn) != 0 || (id = db_value(res, 0, 1)) == NULL ||
      strlen(id) >= sizeof(r->sysid) || walfile_tli(db_value(res, 0, 2), &tli) != 0 ||
      (oid = db_value(res, 0, 3)) == NULL || strlen(oid) >= sizeof(r->datoid))
    return;
  version = db_value(res, 0, 4); /* NULL: no migration applied */
  if (version && strlen(version) >= sizeof(r->version))
    return;
  snprintf(r->datoid, sizeof(r->datoid), "%s", oid);
  snprintf(r->version, sizeof(r->version), "%s", version ? version : "");
  if (strcmp(id, r->sysid) != 0 || tli != r->primary_tli) {
    /* Another primary (a failover): positions of the one before mean nothing here. */
    if (r->sysid[0])
      r->n = r->first = 0;
    snprintf(r->sysid, sizeof(r->sysid), "%s", id);
    r->primary_tli = tli;
  }
  if (r->n == HISTORY) {
    r->first = (r->first + 1) % HISTORY;
    r->n--;
  }
  r->hist[(r->first + r->n++) % HISTORY] = (sample_t){r->primary_sent_ms, lsn};
  update_fresh(r);
}

static void replica_answered(const db_result_t *res, void *arg) {
  replica_t *r = arg;
  const char *rec, *v, *id, *tli, *oid, *version;
  uint64_t lsn;

  r->asking_replica = 0;
  if (r->closed)
    return;
  r->usable = 0;
  r->why = "unreachable or not in recovery";
  if (res->err == DB_EQUERY && strcmp(res->sqlstate, "42P01") == 0) {
    r->why = "another database than the primary's: it has no schema_migrations";
    return;
  }
  if (res->err != DB_OK)
    return;
  r->answered_ms = r->replica_sent_ms;
  rec = db_value(res, 0, 0);
  v = db_value(res, 0, 1);
  id = db_value(res, 0, 2);
  tli = db_value(res, 0, 3);
  oid = db_value(res, 0, 4);
  version = db_value(res, 0, 5);
  if (!rec || strcmp(rec, "t") != 0 || !v || replica_lsn_parse(v, &lsn) != 0 || !id || !tli || !oid)
    return;
  if (!r->sysid[0]) {
    r->why = "the primary's history is not known yet";
    return;
  }
  if (strcmp(id, r->sysid) != 0) {
    r->why = "a standby of another cluster: its system identifier is not the primary's";
    return;
  }
  if (strtoull(tli, NULL, 10) != r->primary_tli) {
    r->why = "not on the primary's timeline";
    return;
  }
  if (strcmp(oid, r->datoid) != 0) {
    r->why = "another database than the primary's: its oid in pg_database is not the "
             "primary's database's (a copy, or another database of the standby's cluster)";
    return;
  }
  if (strcmp(version ? version : "", r->version) != 0) {
    snprintf(r->why_buf, sizeof(r->why_buf), "its last migration applied is %s, the primary's %s",
             version ? version : "none", r->version[0] ? r->version : "none");
    r->why = r->why_buf;
    return;
  }
  r->usable = 1;
  r->replayed = lsn;
  update_fresh(r);
}

/* Which database this is, and at which migration: the last two columns of both checks. */
#define DATABASE_IDENTITY_SQL                                                                      \
  ", (SELECT oid FROM pg_database WHERE datname = current_database())::text,"                      \
  " (SELECT max(version) FROM public.schema_migrations)::text"

static void on_check(uv_timer_t *t) {
  replica_t *r = t->data;
  static const char primary_sql[] =
      "SELECT pg_current_wal_lsn(), (SELECT system_identifier FROM pg_control_system())::text,"
      " pg_walfile_name(pg_current_wal_lsn())" DATABASE_IDENTITY_SQL;
  static const char replica_sql[] =
      "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(),"
      " (SELECT system_identifier FROM pg_control_system())::text,"
      " greatest((SELECT timeline_id FROM pg_control_checkpoint()),"
      " (SELECT min_recovery_end_timeline FROM pg_control_recovery()))::text" DATABASE_IDENTITY_SQL;

  if (r->closed)
    return;
  if (!r->asking_primary && r->srv->db &&
      db_query(r->srv->db, primary_sql, 0, NULL, primary_answered, r) == 0) {
    r->asking_primary = 1;
    r->primary_sent_ms = uv_now(r->srv->loop);
  }
  if (!r->asking_replica && db_query(r->pool, replica_sql, 0, NULL, replica_answered, r) == 0) {
    r->asking_replica = 1;
    r->replica_sent_ms = uv_now(r->srv->loop);
  }
}

int replica_start(server_t *srv) {
  db_config_t dc;
  replica_t *r;

  if (srv->cfg.replica_url == NULL || srv->db == NULL)
    return 0;
  if ((r = calloc(1, sizeof(*r))) == NULL)
    return -ENOMEM;
  r->srv = srv;
  r->logged_state = -1;
  r->why = "not asked yet";
  services_db_config(srv, srv->cfg.replica_url, &dc);
  dc.standby_ok = 1;
  if (db_pool_new(srv->loop, &dc, &r->pool) != 0) {
    log_error("cannot create the replica's pool (--replica-url)");
    free(r);
    return -EINVAL;
  }
  uv_timer_init(srv->loop, &r->timer);
  r->timer.data = r;
  uv_timer_start(&r->timer, on_check, 0, CHECK_MS);
  srv->replica = r;
  return 0;
}

static void pool_closed(void *arg) {
  (void)arg;
}

void replica_close(server_t *srv) {
  replica_t *r = srv->replica;
  if (r == NULL || r->closed)
    return;
  r->closed = 1; /* checks in flight end with the pools, before replica_free() */
  uv_close((uv_handle_t *)&r->timer, NULL);
  db_pool_close(r->pool, pool_closed, NULL);
}

db_pool_t *replica_pool(const server_t *srv) {
  const replica_t *r = srv->replica;
  return r != NULL && !r->closed ? r->pool : NULL;
}

void replica_free(server_t *srv) {
  free(srv->replica);
  srv->replica = NULL;
}

/* The time the replica's answers are known to be fresh to; 0: not known. */
static uint64_t fresh_to(const replica_t *r) {
  if (r->fresh_ms == 0 || r->answered_ms == 0)
    return 0;
  return r->fresh_ms < r->answered_ms ? r->fresh_ms : r->answered_ms;
}

/* The bound an answer from the replica would carry now; UINT64_MAX: not known. */
static uint64_t staleness(const replica_t *r) {
  uint64_t t = fresh_to(r);
  return t ? uv_now(r->srv->loop) - t : UINT64_MAX;
}

/* Could the replica answer a read that asks for nothing more than min_lsn? */
static int fit(const replica_t *r, uint64_t min_lsn) {
  return r->usable && db_pool_healthy(r->pool) && r->replayed >= min_lsn &&
         staleness(r) <= r->srv->cfg.replica_max_lag_ms;
}

void replica_stats(server_t *srv, replica_stats_t *st) {
  const replica_t *r = srv->replica;
  uint64_t stale;

  memset(st, 0, sizeof(*st));
  st->staleness_ms = -1;
  if (r == NULL || r->closed)
    return;
  stale = staleness(r);
  st->configured = 1;
  st->in_use = fit(r, 0);
  st->staleness_ms = stale == UINT64_MAX ? -1 : (int64_t)stale;
  st->reads_replica = r->reads_replica;
  st->reads_primary = r->reads_primary;
  st->lost = r->lost;
  st->conflicts = r->conflicts;
}

Clue__V1__ReadFreshness *replica_route(rpc_call_t *call, const Clue__V1__ReadConsistency *want) {
  server_t *srv = rpc_call_server(call);
  replica_t *r = srv->replica;
  Clue__V1__ReadFreshness *out;
  route_t *route;
  uint64_t min = 0, stale;
  int use, oom;

  if (want && want->min_read_lsn && want->min_read_lsn[0] &&
      replica_lsn_parse(want->min_read_lsn, &min) != 0) {
    rpc_fail(call, GRPC_INVALID_ARGUMENT,
             "read.min_read_lsn must be a WAL position such as 16/B374D848");
    return NULL;
  }
  if ((route = rpc_call_alloc(call, sizeof(*route))) == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  route->answered = 0;
  out = &route->fresh;
  clue__v1__read_freshness__init(out);
  if (r == NULL || r->closed)
    return out;
  stale = staleness(r);
  use = !(want && want->consistent) && fit(r, min);
  if (use)
    r->reads_replica++;
  else
    r->reads_primary++;
  /* The log follows the replica's own fitness, not what single callers ask for. */
  if (!(want && want->consistent) && r->replayed >= min && use != r->logged_state) {
    if (use)
      log_info("replica: in use for reads that tolerate staleness");
    else
      log_warn("replica: bypassed (%s); reads go to the primary",
               !db_pool_healthy(r->pool) ? "unreachable or not in recovery"
               : !r->usable              ? r->why
               : stale == UINT64_MAX     ? "its lag is not known yet"
               : r->answered_ms < r->fresh_ms
                   ? "it has not answered the monitor for more than --replica-max-lag"
                   : "more than --replica-max-lag behind");
    r->logged_state = use;
  }
  if (use) {
    rpc_call_set_read_pool(call, r->pool, route);
    out->from_replica = 1;
    out->max_staleness_ms = (int64_t)stale;
    out->read_lsn = lsn_text(call, r->replayed);
    oom = out->read_lsn == NULL;
  } else {
    /* The route, noted with no pool: reads go to the primary, and each tells its position. */
    rpc_call_set_read_pool(call, NULL, route);
    oom = from_primary(call, r, out) != 0;
  }
  if (oom) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  return out;
}

int replica_primary_lsn_wanted(const rpc_call_t *call) {
  replica_t *r = rpc_call_server((rpc_call_t *)call)->replica;
  return r != NULL && rpc_call_read_note(call) != NULL &&
         rpc_call_read_pool(call) == rpc_call_server((rpc_call_t *)call)->db;
}

void replica_primary_read_lsn(rpc_call_t *call, const char *lsn) {
  route_t *route = rpc_call_read_note(call);
  char *copy;

  if (route == NULL || route->fresh.from_replica || lsn == NULL)
    return;
  if ((copy = rpc_call_strdup(call, lsn)) != NULL)
    route->fresh.read_lsn = copy;
}

void replica_read_answered(rpc_call_t *call) {
  route_t *route = rpc_call_read_note(call);

  if (route)
    route->answered++;
}

replica_miss_t replica_miss(const db_result_t *r) {
  if (r->err == DB_EUNAVAILABLE)
    return REPLICA_LOST;
  if (r->err == DB_EQUERY && r->sqlstate &&
      (strcmp(r->sqlstate, "40001") == 0 || strcmp(r->sqlstate, "40P01") == 0))
    return REPLICA_CONFLICT;
  return REPLICA_ANSWERED;
}

int replica_fall_back(rpc_call_t *call, replica_miss_t why) {
  replica_t *r = rpc_call_server(call)->replica;
  route_t *route = rpc_call_read_note(call);

  if (why == REPLICA_ANSWERED || r == NULL || route == NULL || rpc_call_read_pool(call) != r->pool)
    return 0;
  rpc_call_set_read_pool(call, NULL, route);
  if (why == REPLICA_CONFLICT) {
    r->conflicts++;
  } else {
    r->lost++;
    /* Once per loss: the reads after it are routed to the primary until it is back. */
    if (r->logged_state != 0) {
      log_warn("replica: lost during a read; it and the reads after it go to the primary");
      r->logged_state = 0;
    }
  }
  if (route->answered == 0) {
    /* The call's answer is the primary's alone: count it so. */
    r->reads_replica--;
    r->reads_primary++;
    (void)from_primary(call, r, &route->fresh); /* out of memory: read_lsn "" */
  }
  return 1;
}
