/* AuditService/WatchEvents.
 *
 * Shape. The server follows the committed tail of audit_events once (audit/tail.c: one
 * LISTEN connection, one reader, the frontier that decides which seqs are final, and a ring
 * of the newest decided events); WatchEvents is one of its followers, the Merkle tree
 * builder another. The tail tells this module when it has decided new events; every watcher
 * at the frontier then takes them from the ring and filters them in memory
 * (audit_filter_match, the same test as its SQL). Only a watcher that is behind the ring
 * runs queries of its own (replaying history in batches, bounded by the frontier), so a
 * burst of events costs one query however many watchers there are.
 *
 *
 * Visibility. AUDITOR and ADMIN watchers see every event. Anyone else sees the events of
 * the clues they may see, which depends on the clues table (owner, liaison room, joint
 * case, pending review, assignment, recusal), so memory alone cannot decide it. Watchers
 * with the same unit, user and clue scope form a visibility group (assignments and recusals
 * are a user's, so a group is one user's watchers); for each batch the tail decides, the group asks
 * once which of the batch's clues it sees (clue_scope_sql(), as ListClues does), remembers the seqs
 * it may deliver, and its members deliver from the ring up to where the group has checked. So a
 * burst costs one more query per group with watchers, not per watcher. As with ListAuditEvents,
 * visibility is the clue's at the time of delivery: a group's answers serve the members that
 * were waiting for them, at once. A member that joins later, or that takes them up after its
 * call held it back for over VIS_FRESH_MS (PAUSED), may no longer see what they say it saw
 * (it was recused since, its unit left the joint case): it reads what was checked before
 * from the database, as a watcher catching up does, and only later checks from memory
 * (vis_pos).
 *
 * Ordering without gaps. A watcher delivers only the contiguous run of seqs the tail's
 * frontier has decided (the argument is at the top of audit/tail.c), so it never skips an
 * event that commits late; its catch-up queries read seq <= the frontier, exactly the
 * committed events up to it.
 *
 * Flow control. A watcher queues events on its call only while the call holds less than
 * WATCH_HIGH_WATER bytes; then it waits for the writable callback and continues from where
 * it stopped: from the ring if its position is still there, else from the database. A
 * watcher that had reached the live edge and then falls out of the ring (more than
 * RING_MAX_EVENTS events or RING_MAX_BYTES behind) is too slow: it is ended with
 * RESOURCE_EXHAUSTED and the seq to resume from, which is exact because every event up to
 * that seq was queued before the status. Memory is bounded per watcher and per server.
 *
 * Revocation. A watcher ends with UNAUTHENTICATED once its token is revoked or its user
 * disabled, and delivers nothing committed after that. Every statement that reads events
 * for delivery also reads, in the same snapshot, whether the watchers' tokens still
 * authenticate: the tail's fetch names the token (SHA-256) of every watcher, a catch-up query
 * its own. If an event E was committed after a revocation, any snapshot that shows E shows
 * the revocation too, so the token check of E's own statement ends the watcher before E can
 * go out; events read earlier came from snapshots in which the token still worked (nothing
 * un-revokes a token or re-enables a user). Events of the ring were read before a new
 * watcher joined, so a watcher takes nothing from the ring until a tail fetch sent after it
 * joined has found its token valid (it replays from the database meanwhile, checking as it
 * goes). Speed comes from migration 0007: a trigger on tokens and users NOTIFYs
 * "audit_events" from the revoking transaction, so every instance sharing the database
 * fetches (and checks) within a round trip of the commit, even when the frontier is waiting
 * on an open transaction. A notification lost while the LISTEN connection reconnects is
 * covered twice: the reconnect itself starts a fetch, and the tail fetches at least every
 * RECHECK_MS while anyone watches.
 *
 * Scope. A watcher sees through the role, unit and unit kind its user had when it opened
 * (its visibility group, its filter). The API changes none of them, but an operator may in
 * the database; calls see it within --auth-cache-ttl. The same checks that find a revocation
 * compare the token's user, unit, unit kind and role with the watcher's (its scope, as
 * AUDIT_TOKEN_SCOPE_SQL says it): a watcher whose scope changed ends, by the argument above
 * before any event committed after the change goes out, with UNAVAILABLE and the seq to
 * resume from (every event up to it the old scope saw was queued). The client calls again and
 * gets the new scope: the user's principals are dropped from this server's auth cache, so
 * that call looks the token up.
 *
 * Age. A stream open for --max-stream-age ends with UNAVAILABLE and the seq to resume from
 * (exact, as above), so long-lived streams spread over instances and pick up new rules.
 *
 * Heartbeat. A watcher that asked for one (heartbeat_seconds) and has had nothing queued on
 * its call for that long gets an AuditEvent with only seq set: its `last`, the seq to resume
 * from (exact, as above). The sweep timer sends them; a PAUSED watcher gets none (its call
 * already holds bytes the client has not read). */

#include "service/audit_watch.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/tail.h"
#include "clue/v1/audit.pb-c.h"
#include "db/db.h"
#include "domain/validate.h"
#include "log.h"
#include "rpc/auth.h"
#include "service/audit.h"
#include "service/audit_event.h"
#include "service/clue_row.h"
#include "service/clue_scope.h"
#include "service/common.h"

#define REPLAY_BATCH 256             /* rows per catch-up query of one watcher */
#define WATCH_HIGH_WATER (64 * 1024) /* a watcher queues no more once its call holds this */
#define RECHECK_MS 5000              /* re-read the watchers' tokens at least this often */
#define HEARTBEAT_MAX_S 3600         /* the longest heartbeat_seconds (its message says 3600) */
#define VIS_FRESH_MS 1000            /* a group's check serves a member held back this long */
#define WATCH_MAX_PER_USER 32        /* one user's streams on one server */

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef enum watch_state {
  WATCH_WAITING, /* the frontier is not established yet, or its token is not yet checked */
  WATCH_QUERY,   /* a catch-up query of its own is in flight */
  WATCH_SENDING, /* transient: queuing events on the call */
  WATCH_PAUSED,  /* the call holds WATCH_HIGH_WATER or more: wait for writable */
  WATCH_LIVE,    /* at the frontier: new events go out as the tail decides them */
  WATCH_GONE,    /* ended, in no list; freed with its last reference */
} watch_state_t;

typedef struct watcher watcher_t;
typedef struct vis_group vis_group_t;

struct audit {
  server_t *srv;
  int refs; /* the server, the sweep timer handle, watchers, groups */
  int closed;
  audit_tail_t *tail;              /* the server's tail (srv->tail) */
  audit_tail_follower_t follower;  /* following it while anyone watches */
  uv_timer_t sweep;    /* while anyone watches: --max-stream-age, heartbeats, the re-check */
  uint64_t kicked;     /* loop time of the sweep's last re-check of the tokens */
  watcher_t *watchers; /* every watcher not GONE */
  size_t nwatchers;
  vis_group_t *groups; /* every visibility group with members */
};

/* Watchers that see the trail through the same clue scope (see "Visibility"). */
struct vis_group {
  vis_group_t *prev, *next;
  audit_t *a;
  int64_t unit;
  int64_t user; /* assignments and recusals are a user's: a group is one user's watchers */
  unsigned scope;
  int members;       /* its watchers not GONE */
  int refs;          /* the members, a visibility query in flight, a walk of the group list */
  int busy;          /* a visibility query is in flight, for (pos, upto] */
  int64_t base, pos; /* visibility is known for seqs in (base, pos]; -1 before the first check */
  int64_t upto;
  int64_t *visible; /* ascending: the seqs in (base, pos] of the clue events it sees */
  size_t nvisible, cap;
};

struct watcher {
  watcher_t *prev, *next;
  audit_t *a;
  rpc_call_t *call;
  watch_state_t state;
  int refs;              /* the watcher list, a query in flight, a fan-out in progress */
  int caught_up;         /* reached the live edge once: from then on it must keep up */
  int64_t last;          /* every seq <= last was queued or is not for this watcher */
  int64_t query_bound;   /* the frontier when its catch-up query was sent */
  audit_filter_t filter; /* strings point into the request, which the call owns */
  vis_group_t *group;    /* NULL for watchers that see every event */
  int64_t user;          /* the caller's */
  int64_t vis_pos;       /* the group's checks up to here came before w could use them */
  uint64_t paused_at;    /* loop time it last became PAUSED */
  int checked;           /* a tail fetch sent after it joined found its token valid */
  int seq_checked;       /* such a fetch found after_seq within the log (on_checked()) */
  int in_check;          /* its token is named in the tail fetch in flight */
  uint64_t expires;      /* loop time at which it reaches --max-stream-age; 0: never */
  uint64_t heartbeat_ms; /* the heartbeat it asked for; 0: none */
  uint64_t sent_at;      /* loop time of the last message queued on its call */
  char token[65];        /* SHA-256 of its bearer token, hex */
  char scope[96];        /* user:unit:KIND:ROLE it opened with (AUDIT_TOKEN_SCOPE_SQL) */
};

static void watcher_advance(watcher_t *w);
static void group_leave(vis_group_t *g);
static void group_check(vis_group_t *g);

/* ---- lifetimes ------------------------------------------------------------------------- */

static void audit_unref(audit_t *a) {
  if (--a->refs > 0)
    return;
  free(a);
}

static void watcher_unref(watcher_t *w) {
  if (--w->refs > 0)
    return;
  rpc_call_unref(w->call);
  audit_unref(w->a);
  free(w);
}

/* Nobody watches: stop following the tail (which stops reading if nobody else follows). */
static void tail_stop(audit_t *a) {
  uv_timer_stop(&a->sweep);
  audit_tail_unfollow(&a->follower);
}

/* The one place a watcher changes state; GONE also takes it off the list. */
static void watcher_set_state(watcher_t *w, watch_state_t to) {
  audit_t *a = w->a;

  if (w->state == WATCH_GONE)
    return;
  if (to == WATCH_PAUSED && w->state != WATCH_PAUSED)
    w->paused_at = uv_now(a->srv->loop);
  w->state = to;
  if (to == WATCH_LIVE)
    w->caught_up = 1;
  if (to != WATCH_GONE)
    return;
  if (w->prev)
    w->prev->next = w->next;
  else
    a->watchers = w->next;
  if (w->next)
    w->next->prev = w->prev;
  w->prev = w->next = NULL;
  a->nwatchers--;
  rpc_call_on_cancel(w->call, NULL, NULL);
  rpc_call_on_writable(w->call, NULL, NULL);
  if (w->group) {
    group_leave(w->group);
    w->group = NULL;
  }
  if (a->nwatchers == 0)
    tail_stop(a);
  watcher_unref(w); /* the list's reference */
}

/* End the call with a status; the watcher is gone. */
static void watcher_end(watcher_t *w, grpc_status_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void watcher_end(watcher_t *w, grpc_status_t code, const char *fmt, ...) {
  char msg[256];
  va_list ap;

  if (w->state == WATCH_GONE)
    return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  w->refs++;
  watcher_set_state(w, WATCH_GONE);
  rpc_finish(w->call, code, "%s", msg);
  watcher_unref(w);
}

/* Its token no longer authenticates (revoked, or its user disabled). */
static void watcher_revoked(watcher_t *w) {
  log_info("call %s: watch ended: its token was revoked or its user disabled",
           rpc_call_id(w->call));
  watcher_end(w, GRPC_UNAUTHENTICATED, "token revoked or user disabled");
}

/* Its user's role, unit or unit kind is no longer what it opened with (see "Scope"). */
static void watcher_moved(watcher_t *w) {
  log_info("call %s: watch ended: its user's role or unit changed; resume from seq %lld",
           rpc_call_id(w->call), (long long)w->last);
  rpc_auth_forget_user(w->a->srv, w->user);
  watcher_end(w, GRPC_UNAVAILABLE, "your role or unit changed; resume from seq %lld",
              (long long)w->last);
}

/* A snapshot of the watcher list, each referenced: sending may end any watcher (a write
 * error closes a whole connection), so the list itself cannot be walked while sending. */
static watcher_t **watchers_snapshot(audit_t *a, size_t *n) {
  watcher_t **v = malloc((a->nwatchers ? a->nwatchers : 1) * sizeof(*v));
  size_t k = 0;

  if (v == NULL)
    return NULL;
  for (watcher_t *w = a->watchers; w; w = w->next) {
    w->refs++;
    v[k++] = w;
  }
  *n = k;
  return v;
}

static void watchers_release(watcher_t **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    watcher_unref(v[i]);
  free(v);
}

/* ---- the ring (the tail's) ---------------------------------------------------------- */

static const audit_ev_t *ring_at(const audit_t *a, size_t i) {
  return audit_tail_event(a->tail, i);
}

static size_t ring_len(const audit_t *a) {
  return audit_tail_ring_len(a->tail);
}

static int64_t ring_base(const audit_t *a) {
  return audit_tail_ring_base(a->tail);
}

/* Index of the first event with seq > after (ring_len if none). */
static size_t ring_find(const audit_t *a, int64_t after) {
  return audit_tail_ring_find(a->tail, after);
}

/* Every seq <= this is decided. */
static int64_t safe(const audit_t *a) {
  return audit_tail_safe(a->tail);
}

/* ---- watchers ------------------------------------------------------------------------- */

/* Queue msg on w's call. Returns 0, or -1 when w is gone (ended here or during the send). */
static int watcher_queue(watcher_t *w, const Clue__V1__AuditEvent *msg) {
  int rc = rpc_send(w->call, &msg->base);

  w->sent_at = uv_now(w->a->srv->loop);
  if (w->state == WATCH_GONE)
    return -1;
  if (rc == -ENOMEM) {
    watcher_end(w, GRPC_RESOURCE_EXHAUSTED, "out of memory; resume from seq %lld",
                (long long)w->last);
    return -1;
  }
  if (rc != 0) { /* the call is done; its cancel callback may not have run yet */
    watcher_set_state(w, WATCH_GONE);
    return -1;
  }
  return 0;
}

/* Queue ev on w's call, as watcher_queue(). */
static int watcher_send(watcher_t *w, const audit_ev_t *ev) {
  Clue__V1__AuditEvent msg;

  audit_ev_to_msg(&w->filter, ev, &msg);
  return watcher_queue(w, &msg);
}

/* Is there a visible seq in the group's checked range? */
static int group_sees(const vis_group_t *g, int64_t seq) {
  size_t lo = 0, hi = g->nvisible;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (g->visible[mid] < seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < g->nvisible && g->visible[lo] == seq;
}

/* Are w's next events in the ring and, for a group member, in the group's checked range? */
static int watcher_in_ring(const watcher_t *w) {
  const vis_group_t *g = w->group;
  if (w->last < ring_base(w->a))
    return 0;
  return g == NULL || (g->pos >= 0 && w->last >= g->base);
}

/* Are they there, but checked too early for w (see "Visibility"), so that it reads them from
 * the database? */
static int watcher_vis_stale(const watcher_t *w) {
  return w->group != NULL && w->last < w->vis_pos && watcher_in_ring(w);
}

/* Can w's next events come from memory? */
static int watcher_in_memory(const watcher_t *w) {
  return watcher_in_ring(w) && !watcher_vis_stale(w);
}

/* Queue w's events from the ring; stops when the call is full. A group member goes as far
 * as its group has checked, and waits there (LIVE) for the group's next check. */
static void watcher_pump(watcher_t *w) {
  audit_t *a = w->a;
  vis_group_t *g = w->group;
  int64_t limit = g && g->pos < safe(a) ? g->pos : safe(a);
  size_t i = ring_find(a, w->last);

  watcher_set_state(w, WATCH_SENDING);
  for (; i < ring_len(a); i++) {
    const audit_ev_t *ev = ring_at(a, i);
    if (ev->seq > limit)
      break;
    if (rpc_call_buffered(w->call) >= WATCH_HIGH_WATER) {
      watcher_set_state(w, WATCH_PAUSED);
      return;
    }
    if (audit_filter_match(&w->filter, ev) && (g == NULL || group_sees(g, ev->seq)) &&
        watcher_send(w, ev) != 0)
      return;
    w->last = ev->seq;
  }
  if (w->last < limit)
    w->last = limit;
  watcher_set_state(w, WATCH_LIVE);
  if (g && g->pos < safe(a))
    group_check(g);
}

static void watcher_fetched(const db_result_t *r, void *arg);

/* Replay from the database: the next batch after w->last, up to the frontier. The first
 * column is w's token's scope in the statement's snapshot, NULL once it no longer
 * authenticates (see "Revocation" and "Scope"); with no events, or a token that no longer
 * works as it did, there is one row with NULL events. */
static void watcher_query(watcher_t *w) {
  audit_t *a = w->a;
  audit_sql_t q;
  char sql[sizeof(q.text) + 512];
  const char *params[AUDIT_SQL_MAX_PARAMS + 2];
  db_opts_t o = {0};
  int rc;

  w->query_bound = safe(a);
  audit_sql_build(&q, &w->filter, w->last, w->query_bound, REPLAY_BATCH);
  memcpy(params, q.values, (size_t)q.n * sizeof(*params));
  params[q.n] = w->token;
  params[q.n + 1] = w->scope;
  /* clang-format off */
  snprintf(sql, sizeof(sql),
           "WITH ok AS MATERIALIZED (SELECT " AUDIT_TOKEN_SCOPE_SQL("$%d") " AS v)"
           " SELECT ok.v, q.* FROM ok LEFT JOIN (%s) q ON ok.v = $%d ORDER BY 2",
           q.n + 1, q.text, q.n + 2);
  /* clang-format on */
  watcher_set_state(w, WATCH_QUERY);
  w->refs++;
  /* Counted as the call's other requests are: a client's replays share its connection's and
   * its user's bounds. */
  svc_db_opts(w->call, NULL, &o);
  rc = db_query_opts(a->srv->db, &o, sql, q.n + 2, params, watcher_fetched, w);
  if (rc == DB_EOWNER || rc == DB_EUSER)
    watcher_end(w, GRPC_RESOURCE_EXHAUSTED,
                "too many %s waiting for the database (limit %zu); resume from seq %lld",
                rc == DB_EOWNER ? "calls on this connection"
                                : "of your calls over all your connections",
                rc == DB_EOWNER ? a->srv->cfg.db_queue_per_conn : db_per_user_max(a->srv->db),
                (long long)w->last);
  else if (rc != 0)
    watcher_end(w, GRPC_UNAVAILABLE, "database unavailable; resume from seq %lld",
                (long long)w->last);
  if (rc != 0)
    watcher_unref(w);
}

static void watcher_fetched(const db_result_t *r, void *arg) {
  watcher_t *w = arg;
  int n, i;

  if (w->state == WATCH_GONE) {
    watcher_unref(w);
    return;
  }
  if (r->err != DB_OK) {
    /* As svc_fail_db() tells the bounds of a statement: a lock wait past --db-lock-timeout
     * is a conflict (ABORTED), one past --db-statement-timeout an overloaded database
     * (UNAVAILABLE); both retryable from the seq named, as a lost connection is. */
    const char *st = r->err == DB_EQUERY && r->sqlstate ? r->sqlstate : "";
    int unavailable = r->err == DB_EUNAVAILABLE || r->err == DB_EQUEUE || r->err == DB_ECLOSED;
    grpc_status_t code = GRPC_INTERNAL;
    const char *what = "internal error";

    if (unavailable) {
      code = GRPC_UNAVAILABLE, what = "database unavailable";
    } else if (strcmp(st, "55P03") == 0) {
      code = GRPC_ABORTED, what = "the events are locked by a concurrent change";
    } else if (strcmp(st, "57014") == 0) {
      code = GRPC_UNAVAILABLE, what = "database statement timed out";
    } else {
      log_error("call %s: audit catch-up query failed: %s %s", rpc_call_id(w->call), st,
                r->message ? r->message : "");
    }
    watcher_end(w, code, "%s; resume from seq %lld", what, (long long)w->last);
    watcher_unref(w);
    return;
  }
  n = db_rows(r);
  if (n < 1 || db_value(r, 0, 0) == NULL) {
    watcher_revoked(w);
    watcher_unref(w);
    return;
  }
  if (strcmp(db_value(r, 0, 0), w->scope) != 0) {
    watcher_moved(w);
    watcher_unref(w);
    return;
  }
  watcher_set_state(w, WATCH_SENDING);
  for (i = 0; i < n; i++) {
    audit_ev_t *ev;
    int sent;
    if (db_value(r, i, 1) == NULL)
      continue; /* the one row of an empty batch */
    if (rpc_call_buffered(w->call) >= WATCH_HIGH_WATER)
      break; /* the rest is read again when the call drains */
    if (audit_ev_from_row(r, i, 1, &ev) != 0) {
      watcher_end(w, GRPC_RESOURCE_EXHAUSTED, "out of memory; resume from seq %lld",
                  (long long)w->last);
      break;
    }
    sent = watcher_send(w, ev);
    if (sent == 0)
      w->last = ev->seq;
    free(ev);
    if (sent != 0)
      break;
  }
  /* A short batch read everything up to the bound. */
  if (w->state != WATCH_GONE && i == n && n < REPLAY_BATCH && w->last < w->query_bound)
    w->last = w->query_bound;
  watcher_advance(w);
  watcher_unref(w);
}

/* Move w on as far as it can go now: to LIVE, or to where it must wait. */
static void watcher_advance(watcher_t *w) {
  audit_t *a = w->a;

  if (w->state == WATCH_GONE)
    return;
  w->refs++;
  if (!audit_tail_ready(a->tail))
    watcher_set_state(w, WATCH_WAITING);
  else if (w->last >= safe(a))
    watcher_set_state(w, WATCH_LIVE);
  else if (watcher_in_memory(w) && !w->checked)
    watcher_set_state(w, WATCH_WAITING); /* the tail's next fetch checks its token */
  else if (watcher_in_memory(w))
    watcher_pump(w);
  else if (w->caught_up && !watcher_vis_stale(w))
    watcher_end(w, GRPC_RESOURCE_EXHAUSTED, "watcher too slow; resume from seq %lld",
                (long long)w->last);
  else if (rpc_call_buffered(w->call) >= WATCH_HIGH_WATER)
    watcher_set_state(w, WATCH_PAUSED);
  else
    watcher_query(w);
  if (w->state == WATCH_LIVE && w->group && w->group->pos < safe(a))
    group_check(w->group);
  watcher_unref(w);
}

/* Where g's checks reach, counting the one in flight: its snapshot was taken already. */
static int64_t group_checked_to(const vis_group_t *g) {
  return g->busy ? g->upto : g->pos;
}

static void on_writable(rpc_call_t *call, void *arg) {
  watcher_t *w = arg;
  (void)call;
  if (w->state != WATCH_PAUSED)
    return;
  /* Held back long enough that what its group checked meanwhile may no longer hold for it. */
  if (w->group && uv_now(w->a->srv->loop) - w->paused_at > VIS_FRESH_MS &&
      w->vis_pos < group_checked_to(w->group))
    w->vis_pos = group_checked_to(w->group);
  watcher_advance(w);
}

static void on_cancel(rpc_call_t *call, void *arg) {
  watcher_t *w = arg;
  (void)call;
  watcher_set_state(w, WATCH_GONE);
}

/* ---- visibility groups ---------------------------------------------------------------- */

static void group_unref(vis_group_t *g) {
  audit_t *a = g->a;
  if (--g->refs > 0)
    return;
  free(g->visible);
  free(g);
  audit_unref(a);
}

/* The group of watchers with this unit, user and scope, created if need be; NULL when out of
 * memory. The caller is a new member. */
static vis_group_t *group_join(audit_t *a, int64_t unit, int64_t user, unsigned scope) {
  vis_group_t *g;

  for (g = a->groups; g; g = g->next)
    if (g->unit == unit && g->user == user && g->scope == scope)
      break;
  if (g == NULL) {
    if ((g = calloc(1, sizeof(*g))) == NULL)
      return NULL;
    g->a = a;
    a->refs++;
    g->unit = unit;
    g->user = user;
    g->scope = scope;
    g->base = g->pos = -1;
    g->next = a->groups;
    if (a->groups)
      a->groups->prev = g;
    a->groups = g;
  }
  g->members++;
  g->refs++;
  return g;
}

static void group_leave(vis_group_t *g) {
  if (--g->members == 0) {
    audit_t *a = g->a;
    if (g->prev)
      g->prev->next = g->next;
    else
      a->groups = g->next;
    if (g->next)
      g->next->prev = g->prev;
    g->prev = g->next = NULL;
  }
  group_unref(g);
}

/* Start over at the ring's start: what was checked before it is gone from memory. Members
 * behind that point replay from the database (or, having caught up once, are too slow). */
static void group_reset(vis_group_t *g) {
  g->base = g->pos = ring_base(g->a);
  g->nvisible = 0;
}

/* Wake the group's members waiting at the end of its checked range. */
static void group_wake(vis_group_t *g) {
  audit_t *a = g->a;
  size_t n;
  watcher_t **v = watchers_snapshot(a, &n);

  if (v == NULL) {
    log_error("audit watch: out of memory waking watchers");
    return;
  }
  for (size_t i = 0; i < n; i++)
    if (v[i]->group == g && v[i]->state == WATCH_LIVE)
      watcher_advance(v[i]);
  watchers_release(v, n);
}

/* Forget what no member needs any more: seqs at or below every member's position. */
static void group_trim(vis_group_t *g) {
  int64_t low = g->pos;
  size_t k = 0;

  for (watcher_t *w = g->a->watchers; w; w = w->next)
    if (w->group == g && w->last < low)
      low = w->last;
  if (low <= g->base)
    return;
  while (k < g->nvisible && g->visible[k] <= low)
    k++;
  if (k > 0) {
    memmove(g->visible, g->visible + k, (g->nvisible - k) * sizeof(*g->visible));
    g->nvisible -= k;
  }
  g->base = low;
}

static int cmp_i64(const void *x, const void *y) {
  int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
  return (a > b) - (a < b);
}

static int group_push(vis_group_t *g, int64_t seq) {
  if (g->nvisible == g->cap) {
    size_t cap = g->cap ? g->cap * 2 : 64;
    int64_t *nv = realloc(g->visible, cap * sizeof(*nv));
    if (nv == NULL)
      return -ENOMEM;
    g->visible = nv;
    g->cap = cap;
  }
  g->visible[g->nvisible++] = seq;
  return 0;
}

typedef struct group_job {
  vis_group_t *g;
  unsigned epoch; /* the tail's, when the query was sent */
} group_job_t;

/* End the members that depend on the group's checks (those catching up from the database
 * do not): the group cannot say what they may see. */
static void group_fail(vis_group_t *g, grpc_status_t code, const char *why) {
  audit_t *a = g->a;
  size_t n;
  watcher_t **v = watchers_snapshot(a, &n);

  if (v == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    if (v[i]->group == g && v[i]->state != WATCH_QUERY)
      watcher_end(v[i], code, "%s; resume from seq %lld", why, (long long)v[i]->last);
  watchers_release(v, n);
}

/* The answer to "which of these clues does the group see": mark the visible events of
 * (pos, upto] that are still in the ring, and move pos to upto. */
static void group_checked(const db_result_t *r, void *arg) {
  group_job_t *job = arg;
  vis_group_t *g = job->g;
  audit_t *a = g->a;
  int64_t *ids = NULL;
  unsigned epoch = job->epoch;
  int n = 0;

  free(job);
  g->busy = 0;
  /* In this order: the tail may be gone once the watch is closed. */
  if (g->members == 0 || a->closed || epoch != audit_tail_epoch(a->tail) ||
      !audit_tail_ready(a->tail)) {
    group_unref(g);
    return;
  }
  if (r->err != DB_OK) {
    log_warn("audit watch: visibility check failed (%s%s%s)", db_strerror(r->err),
             r->message ? ": " : "", r->message ? r->message : "");
    group_fail(g, GRPC_UNAVAILABLE, "database unavailable");
    group_unref(g);
    return;
  }
  n = db_rows(r);
  if (n > 0 && (ids = malloc((size_t)n * sizeof(*ids))) == NULL) {
    group_fail(g, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    group_unref(g);
    return;
  }
  for (int i = 0; i < n; i++)
    ids[i] = strtoll(db_value(r, i, 0), NULL, 10);
  if (n > 0)
    qsort(ids, (size_t)n, sizeof(*ids), cmp_i64);
  if (g->pos < ring_base(a))
    group_reset(g); /* the ring moved on during the query */
  for (size_t i = ring_find(a, g->pos); i < ring_len(a); i++) {
    const audit_ev_t *ev = ring_at(a, i);
    if (ev->seq > g->upto)
      break;
    if (strcmp(ev->subject_type, "clue") == 0 && n > 0 &&
        bsearch(&ev->subject_id, ids, (size_t)n, sizeof(*ids), cmp_i64) &&
        group_push(g, ev->seq) != 0) {
      free(ids);
      group_fail(g, GRPC_RESOURCE_EXHAUSTED, "out of memory");
      group_unref(g);
      return;
    }
  }
  free(ids);
  if (g->upto > g->pos)
    g->pos = g->upto;
  group_trim(g);
  group_wake(g);
  if (g->members > 0 && g->pos < safe(a))
    group_check(g);
  group_unref(g);
}

/* Ask which clues of the decided events after pos the group sees (one query), unless one
 * is in flight. */
static void group_check(vis_group_t *g) {
  audit_t *a = g->a;
  int64_t upto = safe(a);
  int64_t *ids = NULL;
  size_t n = 0, cap = 0, len, i;
  char *list = NULL, cond[CLUE_SCOPE_SQL_MAX], sql[CLUE_SCOPE_SQL_MAX + 128], unit[24], user[24];
  const char *params[3];
  group_job_t *job = NULL;

  if (g->busy || g->members == 0 || a->closed || !audit_tail_ready(a->tail))
    return;
  if (g->pos < 0 || g->pos < ring_base(a))
    group_reset(g);
  if (g->pos >= upto)
    return;
  for (i = ring_find(a, g->pos); i < ring_len(a) && ring_at(a, i)->seq <= upto; i++) {
    const audit_ev_t *ev = ring_at(a, i);
    if (strcmp(ev->subject_type, "clue") != 0)
      continue;
    if (n == cap) {
      int64_t *ni = realloc(ids, (cap = cap ? cap * 2 : 64) * sizeof(*ids));
      if (ni == NULL)
        goto oom;
      ids = ni;
    }
    ids[n++] = ev->subject_id;
  }
  if (n == 0) {
    /* Nothing in the range can be visible to a group. */
    g->pos = upto;
    group_trim(g);
    g->refs++;
    group_wake(g);
    group_unref(g);
    return;
  }
  if ((list = malloc(n * 21 + 3)) == NULL)
    goto oom;
  len = 0;
  list[len++] = '{';
  for (i = 0; i < n; i++)
    len += (size_t)snprintf(list + len, 22, "%s%lld", i ? "," : "", (long long)ids[i]);
  list[len++] = '}';
  list[len] = '\0';
  if (clue_scope_sql(g->scope, "c", 1, 3, cond, sizeof(cond)) != 0)
    snprintf(cond, sizeof(cond), "false");
  snprintf(sql, sizeof(sql), "SELECT c.id FROM clues c WHERE c.id = ANY ($2::bigint[]) AND %s",
           cond);
  snprintf(unit, sizeof(unit), "%lld", (long long)g->unit);
  snprintf(user, sizeof(user), "%lld", (long long)g->user);
  params[0] = unit;
  params[1] = list;
  params[2] = user;
  if ((job = malloc(sizeof(*job))) == NULL)
    goto oom;
  job->g = g;
  job->epoch = audit_tail_epoch(a->tail);
  g->busy = 1;
  g->upto = upto;
  g->refs++;
  if (db_query(a->srv->db, sql, 3, params, group_checked, job) != 0) {
    g->busy = 0;
    g->refs--;
    free(job);
    free(list);
    free(ids);
    group_fail(g, GRPC_UNAVAILABLE, "database unavailable");
    return;
  }
  free(list);
  free(ids);
  return;
oom:
  free(list);
  free(ids);
  log_error("audit watch: out of memory checking visibility");
  group_fail(g, GRPC_RESOURCE_EXHAUSTED, "out of memory");
}

/* ---- following the tail ---------------------------------------------------------------- */

/* Let every visibility group look at what the tail just decided. */
static void tail_check_groups(audit_t *a) {
  size_t n = 0, k = 0;
  vis_group_t *g, **v;

  for (g = a->groups; g; g = g->next)
    n++;
  if (n == 0 || (v = malloc(n * sizeof(*v))) == NULL)
    return; /* out of memory: members start their group's check as they reach its end */
  for (g = a->groups; g; g = g->next) {
    g->refs++;
    v[k++] = g;
  }
  for (size_t i = 0; i < k; i++) {
    group_check(v[i]);
    group_unref(v[i]);
  }
  free(v);
}

/* The tail decided new events: give every watcher its share. */
static void on_advanced(audit_tail_follower_t *f) {
  audit_t *a = container_of(f, audit_t, follower);
  size_t n;
  watcher_t **v = watchers_snapshot(a, &n);

  if (v == NULL) {
    /* The events stay in the ring: watchers get them with the next batch. */
    log_error("audit watch: out of memory fanning out events");
    return;
  }
  for (size_t i = 0; i < n; i++) {
    watcher_t *w = v[i];
    if (w->state == WATCH_GONE)
      continue;
    if (w->caught_up && w->last < ring_base(a)) {
      watcher_end(w, GRPC_RESOURCE_EXHAUSTED, "watcher too slow; resume from seq %lld",
                  (long long)w->last);
      continue;
    }
    if (w->state == WATCH_LIVE || w->state == WATCH_WAITING)
      watcher_advance(w);
  }
  watchers_release(v, n);
  tail_check_groups(a);
}

/* The watchers' tokens with their scopes as an SQL array literal ({hex:scope,...}; neither
 * needs quoting); NULL when out of memory. */
static char *on_tokens(audit_tail_follower_t *f) {
  audit_t *a = container_of(f, audit_t, follower);
  size_t len = 3;
  char *s, *p;

  for (const watcher_t *w = a->watchers; w; w = w->next)
    len += 64 + 2 + strlen(w->scope);
  if ((s = p = malloc(len)) == NULL)
    return NULL;
  *p++ = '{';
  for (const watcher_t *w = a->watchers; w; w = w->next) {
    size_t n = strlen(w->scope);
    if (w != a->watchers)
      *p++ = ',';
    memcpy(p, w->token, 64);
    p += 64;
    *p++ = ':';
    memcpy(p, w->scope, n);
    p += n;
  }
  *p++ = '}';
  *p = '\0';
  return s;
}

typedef enum check_verdict {
  CHECK_HELD,    /* not listed: its token authenticates, with its scope */
  CHECK_REVOKED, /* its token no longer authenticates */
  CHECK_MOVED,   /* it does, with another scope */
} check_verdict_t;

/* What the fetch's answer (on_checked()) says of w's entry. */
static check_verdict_t check_of(const char *invalid, const watcher_t *w) {
  size_t n = strlen(w->scope);

  /* Entries are "hash:scope/verdict": a match of the whole hash:scope is w's own. */
  for (const char *p = invalid; p != NULL; p = strchr(p, ',')) {
    if (*p == ',')
      p++;
    if (strncmp(p, w->token, 64) == 0 && p[64] == ':' && strncmp(p + 65, w->scope, n) == 0 &&
        p[65 + n] == '/')
      return strncmp(p + 66 + n, "revoked", 7) == 0 ? CHECK_REVOKED : CHECK_MOVED;
  }
  return CHECK_HELD;
}

/* The fetch naming every watcher's token was sent. */
static void on_sent(audit_tail_follower_t *f) {
  audit_t *a = container_of(f, audit_t, follower);
  for (watcher_t *w = a->watchers; w; w = w->next)
    w->in_check = 1;
}

/* The fetch's token check (see "Revocation" and "Scope"), applied before any of its events
 * go out: end the watchers whose token the fetch found invalid or whose scope changed (a
 * comma-separated list of entries as on_tokens() named them, each with its verdict; NULL for
 * none), and let the others it named take events from the ring; and those whose
 * after_seq is past seen, the largest seq of its snapshot (-1: not known). Returns 0, or
 * -ENOMEM with nothing changed. */
static int on_checked(audit_tail_follower_t *f, const char *invalid, int64_t seen) {
  audit_t *a = container_of(f, audit_t, follower);
  size_t n;
  watcher_t **v = watchers_snapshot(a, &n);

  if (v == NULL) {
    log_error("audit watch: out of memory checking tokens");
    return -ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    watcher_t *w = v[i];
    if (w->state == WATCH_GONE || !w->in_check)
      continue;
    w->in_check = 0;
    switch (check_of(invalid, w)) {
    case CHECK_REVOKED:
      watcher_revoked(w);
      continue;
    case CHECK_MOVED:
      watcher_moved(w);
      continue;
    case CHECK_HELD:
      break;
    }
    /* A seq past every one the fetch's snapshot shows, although the snapshot was taken after
     * the stream began: from another database, or made up. It would wait for ever, and its
     * heartbeats say it has everything up to that seq. */
    if (!w->seq_checked && seen >= 0) {
      w->seq_checked = 1;
      if (w->last > seen) {
        watcher_end(w, GRPC_OUT_OF_RANGE,
                    "after_seq %lld is past the end of the audit log: resume from a seq this "
                    "server sent (an event's, a heartbeat's, or one a status named)",
                    (long long)w->last);
        continue;
      }
    }
    if (!w->checked) {
      w->checked = 1;
      if (w->state == WATCH_WAITING)
        watcher_advance(w);
    }
  }
  watchers_release(v, n);
  return 0;
}

/* ---- age and the periodic re-check ---------------------------------------------------- */

static void on_sweep(uv_timer_t *t);

/* When w next needs the sweep: its expiry or its next heartbeat, whichever comes first;
 * 0 for never. A PAUSED watcher gets no heartbeat (its call holds bytes its client has not
 * read): one due is looked at again an interval from now, not at once. Due at once, the
 * sweep would start itself again from its own callback for as long as the client does not
 * read, and libuv runs a timer due again within the same pass: the loop would never get
 * back to its sockets (every call, Health and SIGTERM unanswered). */
static uint64_t watcher_due(const watcher_t *w, uint64_t now) {
  uint64_t due = w->expires, beat = w->sent_at + w->heartbeat_ms;

  if (w->heartbeat_ms == 0)
    return due;
  if (beat <= now && (w->state == WATCH_PAUSED || w->state == WATCH_SENDING))
    beat = now + w->heartbeat_ms;
  return due == 0 || beat < due ? beat : due;
}

/* Run the sweep when a watcher next needs it, or at the next re-check if that comes first. */
static void sweep_schedule(audit_t *a) {
  uint64_t now = uv_now(a->srv->loop), due = a->kicked + RECHECK_MS;

  if (a->closed || a->nwatchers == 0)
    return;
  for (const watcher_t *w = a->watchers; w; w = w->next) {
    uint64_t d = watcher_due(w, now);
    if (d && d < due)
      due = d;
  }
  uv_timer_start(&a->sweep, on_sweep, due > now ? due - now : 0, 0);
}

/* A watcher joined: the sweep moves only when it is not running or is due after the new
 * watcher's first need (a limit or heartbeat shorter than RECHECK_MS). */
static void sweep_joined(audit_t *a, const watcher_t *w) {
  uint64_t now = uv_now(a->srv->loop), due = watcher_due(w, now);

  if (!uv_is_active((uv_handle_t *)&a->sweep)) {
    a->kicked = now;
    sweep_schedule(a);
  } else if (due && now + uv_timer_get_due_in(&a->sweep) > due) {
    sweep_schedule(a);
  }
}

/* Nothing went out on w's call for its heartbeat interval: say where it stands. */
static void watcher_heartbeat(watcher_t *w) {
  Clue__V1__AuditEvent msg = CLUE__V1__AUDIT_EVENT__INIT;

  msg.seq = w->last;
  (void)watcher_queue(w, &msg);
}

static void on_sweep(uv_timer_t *t) {
  audit_t *a = t->data;
  uint64_t now = uv_now(a->srv->loop);
  size_t n;
  watcher_t **v = watchers_snapshot(a, &n);

  if (v) {
    for (size_t i = 0; i < n; i++) {
      watcher_t *w = v[i];
      if (w->state == WATCH_GONE)
        continue;
      if (w->heartbeat_ms && w->sent_at + w->heartbeat_ms <= now && w->state != WATCH_PAUSED &&
          w->state != WATCH_SENDING)
        watcher_heartbeat(w);
      if (w->state == WATCH_GONE || w->expires == 0 || w->expires > now)
        continue;
      log_info("call %s: watch ended: open for --max-stream-age; resume from seq %lld",
               rpc_call_id(w->call), (long long)w->last);
      watcher_end(w, GRPC_UNAVAILABLE,
                  "stream reached the server's maximum age; resume from seq %lld",
                  (long long)w->last);
    }
    watchers_release(v, n);
  }
  /* The backstop: a fetch re-reads every watcher's token, every RECHECK_MS (heartbeats may
   * run the sweep more often). */
  if (now >= a->kicked + RECHECK_MS) {
    a->kicked = now;
    audit_tail_kick(a->tail);
  }
  sweep_schedule(a);
}

/* ---- the handler and the server's hooks ---------------------------------------------- */

/* The principal's scope as AUDIT_TOKEN_SCOPE_SQL gives it from the database (see "Scope"). */
static void watcher_scope(const rpc_principal_t *p, char *out, size_t size) {
  const char *kind = clue_unit_kind_name((clue_unit_kind_t)p->unit_kind);
  const char *role = clue_role_name((clue_role_t)p->role);

  snprintf(out, size, "%lld:%lld:%s:%s", (long long)p->user_id, (long long)p->unit_id,
           kind ? kind : "", role ? role : "");
}

/* The user's watchers not GONE. */
static int user_watchers(const audit_t *a, int64_t user) {
  int n = 0;

  for (const watcher_t *w = a->watchers; w; w = w->next)
    n += w->user == user;
  return n;
}

void audit_watch_events(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__WatchEventsRequest *req = (const void *)m;
  server_t *srv = rpc_call_server(call);
  audit_t *a = srv->audit;
  const char *bearer = rpc_call_metadata(call, "authorization");
  validate_errors_t e;
  watcher_t *w;

  /* Every violation of the request, one per field, in the order of its fields. */
  validate_errors_init(&e);
  if (req->after_seq < 0)
    validate_add(&e, "after_seq", "after_seq must not be negative");
  audit_subject_violations(&e, req->subject_type, req->subject_id);
  validate_each(&e, validate_text("action", req->action, 64, 0, validate_slot(&e)));
  if (req->heartbeat_seconds < 0 || req->heartbeat_seconds > HEARTBEAT_MAX_S)
    validate_add(&e, "heartbeat_seconds", "heartbeat_seconds must be between 0 and 3600");
  if (clue_invalid_each(call, &e))
    return;
  if (srv->db == NULL || a == NULL || a->closed || a->tail == NULL) {
    rpc_fail(call, GRPC_UNAVAILABLE, "no database configured");
    return;
  }
  if (srv->state != SERVER_RUNNING) {
    rpc_fail(call, GRPC_UNAVAILABLE, "server shutting down");
    return;
  }
  if (bearer == NULL || strlen(bearer) <= 7) { /* authentication let it through: cannot be */
    rpc_fail(call, GRPC_UNAUTHENTICATED, "missing authorization metadata (Bearer token)");
    return;
  }
  /* Each stream costs every event's fan-out and the tail's token check: a user's are few. */
  if (user_watchers(a, rpc_call_principal(call)->user_id) >= WATCH_MAX_PER_USER) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED,
             "too many WatchEvents streams of yours on this server (at most %d); end one first",
             WATCH_MAX_PER_USER);
    return;
  }
  if ((w = calloc(1, sizeof(*w))) == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  w->a = a;
  w->user = rpc_call_principal(call)->user_id;
  a->refs++;
  w->call = call;
  rpc_call_ref(call);
  w->refs = 1;
  w->state = WATCH_WAITING;
  w->last = req->after_seq;
  w->filter.subject_type = req->subject_type;
  w->filter.subject_id = req->subject_id;
  w->filter.action = req->action;
  auth_token_hash(bearer + 7, w->token);
  watcher_scope(rpc_call_principal(call), w->scope, sizeof(w->scope));
  if (srv->cfg.max_stream_age_ms)
    w->expires = uv_now(srv->loop) + srv->cfg.max_stream_age_ms;
  w->heartbeat_ms = (uint64_t)req->heartbeat_seconds * 1000;
  w->sent_at = uv_now(srv->loop);
  audit_visibility(rpc_call_principal(call), &w->filter);
  if (!w->filter.all &&
      (w->group = group_join(a, w->filter.scope_unit, w->filter.scope_user, w->filter.clue_scope)) ==
          NULL) {
    rpc_call_unref(call);
    audit_unref(a);
    free(w);
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  w->vis_pos = w->group ? group_checked_to(w->group) : -1; /* checked before it joined */
  w->next = a->watchers;
  if (a->watchers)
    a->watchers->prev = w;
  a->watchers = w;
  a->nwatchers++;
  rpc_call_on_cancel(call, on_cancel, w);
  rpc_call_on_writable(call, on_writable, w);
  sweep_joined(a, w);
  if (audit_tail_follow(a->tail, &a->follower) != 0) { /* cannot be: a fixed set follows */
    watcher_end(w, GRPC_INTERNAL, "cannot follow the audit log");
    return;
  }
  audit_tail_kick(a->tail); /* the next fetch checks its token (see "Revocation") */
  watcher_advance(w);
}

int audit_init(server_t *srv) {
  audit_t *a = calloc(1, sizeof(*a));
  if (a == NULL)
    return -ENOMEM;
  a->srv = srv;
  a->refs = 2; /* the server and the sweep timer handle */
  a->tail = srv->tail;
  a->follower.advanced = on_advanced;
  a->follower.tokens = on_tokens;
  a->follower.sent = on_sent;
  a->follower.checked = on_checked;
  a->follower.pace_ms = 0; /* watchers want each event as soon as it is decided */
  uv_timer_init(srv->loop, &a->sweep);
  a->sweep.data = a;
  srv->audit = a;
  return 0;
}

void audit_shutdown(server_t *srv) {
  audit_t *a = srv->audit;
  watcher_t **v;
  size_t n;

  if (a == NULL)
    return;
  v = watchers_snapshot(a, &n);
  if (v) {
    for (size_t i = 0; i < n; i++)
      watcher_end(v[i], GRPC_UNAVAILABLE, "server shutting down; resume from seq %lld",
                  (long long)v[i]->last);
    watchers_release(v, n);
  }
  tail_stop(a);
}

static void on_timer_closed(uv_handle_t *h) {
  audit_unref(h->data);
}

size_t audit_watchers(const server_t *srv) {
  return srv->audit ? srv->audit->nwatchers : 0;
}

void audit_close(server_t *srv) {
  audit_t *a = srv->audit;

  if (a == NULL)
    return;
  a->closed = 1;
  while (a->watchers)
    watcher_set_state(a->watchers, WATCH_GONE);
  tail_stop(a);
  uv_close((uv_handle_t *)&a->sweep, on_timer_closed);
  srv->audit = NULL;
  audit_unref(a);
}
