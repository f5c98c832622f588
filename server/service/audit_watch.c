/* AuditService/WatchEvents.
 *
 * Shape. Each server has one audit_t: one LISTEN connection on channel "audit_events" and
 * one *tail* that reads new rows of audit_events, at most one query at a time. A
 * notification only says "something new": notifications that arrive while the tail's query
 * runs are coalesced into one more query. The tail decides which seqs are final (the
 * frontier, below), keeps the newest decided events in a ring, and hands them to every
 * watcher that is at the frontier; each watcher filters them in memory (audit_filter_match,
 * the same test as its SQL). Only a watcher that is behind the ring runs queries of its own
 * (replaying history in batches), so a burst of events costs one query however many
 * watchers there are.
 *
 * Visibility. AUDITOR and ADMIN watchers see every event. Anyone else sees the events of
 * the clues they may see, which depends on the clues table (owner, liaison room, joint
 * case, pending review), so memory alone cannot decide it. Watchers with the same unit and
 * clue scope form a visibility group; for each batch the tail decides, the group asks once
 * which of the batch's clues it sees (clue_scope_sql(), as ListClues does), remembers the
 * seqs it may deliver, and its members deliver from the ring up to where the group has
 * checked. So a burst costs one more query per group with watchers, not per watcher. As
 * with ListAuditEvents, visibility is the clue's at the time of delivery.
 *
 * Ordering without gaps. seq comes from a sequence and transactions commit in any order, so
 * a reader can see seq 11 while 10 is still uncommitted; one that then moved past 11 would
 * never deliver 10. A watcher therefore delivers only the contiguous run of decided seqs.
 * A seq g is decided when it is visible, or when it can never become visible:
 *   - nextval() hands out seqs in time order (the sequence has CACHE 1, migration 0004), so
 *     if a snapshot S shows some h > g, g was drawn before h was, hence before S was taken;
 *   - audit_append() takes its transaction id (txid_current()) before it draws the seq, so
 *     the transaction T that drew g had its id before S was taken;
 *   - the statement that read S also calls txid_current() (when it sees a gap), which
 *     assigns an id B after S was taken: ids are assigned in increasing order, so id(T) < B;
 *   - in any snapshot S' with xmin(S') >= B, T is not running: a running id below
 *     xmax(S') would be listed and hold xmin(S') at or below it, and a running id at or
 *     above xmax(S') means xmin(S') <= xmax(S') <= id(T) < B. So T committed (then g is
 *     visible in S') or rolled back: if g is absent from S', it never appears. Gaps are
 *     allowed; reordering and loss are not.
 * The snapshot's own xmax is not such a bound: PostgreSQL sets it to latestCompletedXid + 1
 * and leaves running ids at or above it out of the snapshot, so a transaction that took its
 * id after the last completion is invisible to both xmin and xip (the unit test
 * snapshot_xmax_is_not_a_bound shows the case). Taking B costs the reader a transaction id,
 * and only when its rows have a gap. The tail records (largest seq seen, B) as a checkpoint,
 * and each query returns its snapshot's xmin with the rows (one statement, one snapshot);
 * domain/audit_frontier.c does the bookkeeping and is model-checked on its own. A decided
 * seq stays decided for every later query on any connection, so a watcher's catch-up query
 * bounded by the frontier (seq <= safe) reads exactly the committed events up to it. When
 * the tail starts, the largest seq M of its first snapshot becomes the frontier once a
 * snapshot's xmin reaches that first statement's bound.
 * A transaction that appended an event and stays open holds the frontier (and every watcher)
 * at its seq until it ends: a warning is logged when that lasts. xmin covers the whole
 * PostgreSQL cluster, so skipping a rolled-back seq also waits for write transactions of
 * other databases that were running when the gap was seen (a delay, never a loss). The
 * argument needs every row to come from audit_append(): a plain INSERT draws its seq from
 * the column default before it has a transaction id.
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
 * Age. A stream open for --max-stream-age ends with UNAVAILABLE and the seq to resume from
 * (exact, as above), so long-lived streams spread over instances and pick up new rules. */

#include "service/audit_watch.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clue/v1/audit.pb-c.h"
#include "db/db.h"
#include "domain/audit_frontier.h"
#include "domain/validate.h"
#include "log.h"
#include "rpc/auth.h"
#include "service/audit.h"
#include "service/audit_event.h"
#include "service/clue_scope.h"

#define TAIL_BATCH 500               /* rows per tail query */
#define REPLAY_BATCH 256             /* rows per catch-up query of one watcher */
#define RING_MAX_EVENTS 4096         /* decided events kept for watchers near the edge */
#define RING_MAX_BYTES (8u << 20)    /* ... and at most this much of them */
#define WATCH_HIGH_WATER (64 * 1024) /* a watcher queues no more once its call holds this */
#define POLL_MIN_MS 5                /* re-reading while a gap is open: first delay */
#define POLL_MAX_MS 500              /* ... doubling up to this */
#define RETRY_MIN_MS 100             /* after a failed tail query */
#define RETRY_MAX_MS 5000
#define STUCK_WARN_MS 10000 /* warn when the frontier waits this long on one seq */
#define RECHECK_MS 5000     /* re-read the watchers' tokens at least this often */

/* True when the token whose SHA-256 (hex) is the SQL expression h still authenticates: the
 * condition of auth_sql in rpc/auth.c. */
#define TOKEN_VALID_SQL(h)                                                                         \
  "EXISTS (SELECT 1 FROM tokens t JOIN users u ON u.id = t.user_id"                                \
  " WHERE t.token_sha256 = decode(" h ", 'hex') AND t.revoked_at IS NULL AND NOT u.disabled)"

typedef enum tail_state {
  TAIL_OFF,      /* no watchers: nothing is read */
  TAIL_STARTING, /* the starting snapshot is being read */
  TAIL_RUNNING,  /* following new rows (the frontier may still be waiting to be ready) */
} tail_state_t;

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
  int refs; /* the server, the timer handle, tail queries, watchers, groups */
  int closed;
  tail_state_t tail;
  unsigned gen;         /* bumped when the tail stops: older queries' results are dropped */
  int busy;             /* a tail query is in flight */
  int again;            /* something may have arrived since it was sent */
  int listening;        /* the LISTEN connection exists */
  unsigned poll_ms;     /* next delay while a gap is open */
  unsigned retry_ms;    /* next delay after a failed tail query */
  int64_t waiting_on;   /* the undecided seq the frontier stopped at, or 0 */
  uint64_t stuck_since; /* loop time the frontier first stopped at its current seq, or 0 */
  int stuck_warned;
  audit_frontier_t frontier;
  uv_timer_t timer; /* polls while a gap is open, retries after errors */
  uv_timer_t sweep; /* while anyone watches: --max-stream-age, and the periodic re-check */
  /* The ring: decided events with seq in (ring_base, frontier.safe], oldest first. */
  audit_ev_t **ring;
  size_t ring_head, ring_len, ring_bytes;
  int64_t ring_base;
  watcher_t *watchers; /* every watcher not GONE */
  size_t nwatchers;
  vis_group_t *groups; /* every visibility group with members */
};

/* Watchers that see the trail through the same clue scope (see "Visibility"). */
struct vis_group {
  vis_group_t *prev, *next;
  audit_t *a;
  int64_t unit;
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
  int checked;           /* a tail fetch sent after it joined found its token valid */
  int in_check;          /* its token is named in the tail fetch in flight */
  uint64_t expires;      /* loop time at which it reaches --max-stream-age; 0: never */
  char token[65];        /* SHA-256 of its bearer token, hex */
};

static void tail_kick(audit_t *a);
static void watcher_advance(watcher_t *w);
static void group_leave(vis_group_t *g);
static void group_check(vis_group_t *g);

/* ---- lifetimes ------------------------------------------------------------------------- */

static void ring_clear(audit_t *a) {
  while (a->ring_len > 0) {
    free(a->ring[a->ring_head]);
    a->ring_head = (a->ring_head + 1) % RING_MAX_EVENTS;
    a->ring_len--;
  }
  free(a->ring);
  a->ring = NULL;
  a->ring_head = a->ring_bytes = 0;
}

static void audit_unref(audit_t *a) {
  if (--a->refs > 0)
    return;
  ring_clear(a);
  free(a);
}

static void watcher_unref(watcher_t *w) {
  if (--w->refs > 0)
    return;
  rpc_call_unref(w->call);
  audit_unref(w->a);
  free(w);
}

static void tail_stop(audit_t *a) {
  uv_timer_stop(&a->sweep);
  if (a->tail == TAIL_OFF)
    return;
  /* The ring stays allocated until the next start or close: a fan-out may be walking it. */
  a->tail = TAIL_OFF;
  a->gen++;
  a->again = 0;
  uv_timer_stop(&a->timer);
}

/* The one place a watcher changes state; GONE also takes it off the list. */
static void watcher_set_state(watcher_t *w, watch_state_t to) {
  audit_t *a = w->a;

  if (w->state == WATCH_GONE)
    return;
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

/* ---- the ring ------------------------------------------------------------------------- */

static audit_ev_t *ring_at(const audit_t *a, size_t i) {
  return a->ring[(a->ring_head + i) % RING_MAX_EVENTS];
}

static void ring_evict_one(audit_t *a) {
  audit_ev_t *ev = a->ring[a->ring_head];
  a->ring_base = ev->seq;
  a->ring_bytes -= ev->wire_size;
  free(ev);
  a->ring_head = (a->ring_head + 1) % RING_MAX_EVENTS;
  a->ring_len--;
}

/* Takes ownership of ev. */
static void ring_push(audit_t *a, audit_ev_t *ev) {
  if (a->ring_len == RING_MAX_EVENTS)
    ring_evict_one(a);
  a->ring[(a->ring_head + a->ring_len) % RING_MAX_EVENTS] = ev;
  a->ring_len++;
  a->ring_bytes += ev->wire_size;
  while (a->ring_bytes > RING_MAX_BYTES && a->ring_len > 1)
    ring_evict_one(a);
}

/* Index of the first event with seq > after (ring_len if none). */
static size_t ring_find(const audit_t *a, int64_t after) {
  size_t lo = 0, hi = a->ring_len;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (ring_at(a, mid)->seq <= after)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* ---- watchers ------------------------------------------------------------------------- */

/* Queue ev on w's call. Returns 0, or -1 when w is gone (ended here or during the send). */
static int watcher_send(watcher_t *w, const audit_ev_t *ev) {
  Clue__V1__AuditEvent msg;
  int rc;

  audit_ev_to_msg(&w->filter, ev, &msg);
  rc = rpc_send(w->call, &msg.base);
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

/* Can w's next events come from memory: the ring, and for a group member the group's
 * checked range? */
static int watcher_in_memory(const watcher_t *w) {
  const vis_group_t *g = w->group;
  if (w->last < w->a->ring_base)
    return 0;
  return g == NULL || (g->pos >= 0 && w->last >= g->base);
}

/* Queue w's events from the ring; stops when the call is full. A group member goes as far
 * as its group has checked, and waits there (LIVE) for the group's next check. */
static void watcher_pump(watcher_t *w) {
  audit_t *a = w->a;
  vis_group_t *g = w->group;
  int64_t limit = g && g->pos < a->frontier.safe ? g->pos : a->frontier.safe;
  size_t i = ring_find(a, w->last);

  watcher_set_state(w, WATCH_SENDING);
  for (; i < a->ring_len; i++) {
    audit_ev_t *ev = ring_at(a, i);
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
  if (g && g->pos < a->frontier.safe)
    group_check(g);
}

static void watcher_fetched(const db_result_t *r, void *arg);

/* Replay from the database: the next batch after w->last, up to the frontier. The first
 * column says whether w's token still authenticates in the statement's snapshot (see
 * "Revocation"); with no events, or a token that no longer works, there is one row with
 * NULL events. */
static void watcher_query(watcher_t *w) {
  audit_t *a = w->a;
  audit_sql_t q;
  char sql[sizeof(q.text) + 512];
  const char *params[AUDIT_SQL_MAX_PARAMS + 1];
  int rc;

  w->query_bound = a->frontier.safe;
  audit_sql_build(&q, &w->filter, w->last, w->query_bound, REPLAY_BATCH);
  memcpy(params, q.values, (size_t)q.n * sizeof(*params));
  params[q.n] = w->token;
  snprintf(sql, sizeof(sql),
           "WITH ok AS MATERIALIZED (SELECT " TOKEN_VALID_SQL("$%d") " AS v)"
           " SELECT ok.v, q.* FROM ok LEFT JOIN (%s) q ON ok.v ORDER BY 2",
           q.n + 1, q.text);
  watcher_set_state(w, WATCH_QUERY);
  w->refs++;
  rc = db_query(a->srv->db, sql, q.n + 1, params, watcher_fetched, w);
  if (rc != 0) {
    watcher_end(w, GRPC_UNAVAILABLE, "database unavailable; resume from seq %lld",
                (long long)w->last);
    watcher_unref(w);
  }
}

static void watcher_fetched(const db_result_t *r, void *arg) {
  watcher_t *w = arg;
  int n, i;

  if (w->state == WATCH_GONE) {
    watcher_unref(w);
    return;
  }
  if (r->err != DB_OK) {
    int unavailable = r->err == DB_EUNAVAILABLE || r->err == DB_EQUEUE || r->err == DB_ECLOSED;
    if (!unavailable)
      log_error("call %s: audit catch-up query failed: %s %s", rpc_call_id(w->call),
                r->sqlstate ? r->sqlstate : "", r->message ? r->message : "");
    watcher_end(w, unavailable ? GRPC_UNAVAILABLE : GRPC_INTERNAL, "%s; resume from seq %lld",
                unavailable ? "database unavailable" : "internal error", (long long)w->last);
    watcher_unref(w);
    return;
  }
  n = db_rows(r);
  if (n < 1 || db_value(r, 0, 0) == NULL || strcmp(db_value(r, 0, 0), "t") != 0) {
    watcher_revoked(w);
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
  if (a->tail != TAIL_RUNNING || !a->frontier.ready)
    watcher_set_state(w, WATCH_WAITING);
  else if (w->last >= a->frontier.safe)
    watcher_set_state(w, WATCH_LIVE);
  else if (watcher_in_memory(w) && !w->checked)
    watcher_set_state(w, WATCH_WAITING); /* the tail's next fetch checks its token */
  else if (watcher_in_memory(w))
    watcher_pump(w);
  else if (w->caught_up)
    watcher_end(w, GRPC_RESOURCE_EXHAUSTED, "watcher too slow; resume from seq %lld",
                (long long)w->last);
  else if (rpc_call_buffered(w->call) >= WATCH_HIGH_WATER)
    watcher_set_state(w, WATCH_PAUSED);
  else
    watcher_query(w);
  if (w->state == WATCH_LIVE && w->group && w->group->pos < a->frontier.safe)
    group_check(w->group);
  watcher_unref(w);
}

static void on_writable(rpc_call_t *call, void *arg) {
  watcher_t *w = arg;
  (void)call;
  if (w->state == WATCH_PAUSED)
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

/* The group of watchers with this unit and scope, created if need be; NULL when out of
 * memory. The caller is a new member. */
static vis_group_t *group_join(audit_t *a, int64_t unit, unsigned scope) {
  vis_group_t *g;

  for (g = a->groups; g; g = g->next)
    if (g->unit == unit && g->scope == scope)
      break;
  if (g == NULL) {
    if ((g = calloc(1, sizeof(*g))) == NULL)
      return NULL;
    g->a = a;
    a->refs++;
    g->unit = unit;
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
  g->base = g->pos = g->a->ring_base;
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
  unsigned gen;
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
  int n = 0, stale = job->gen != a->gen;

  free(job);
  g->busy = 0;
  if (g->members == 0 || a->closed || stale || a->tail != TAIL_RUNNING) {
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
  if (g->pos < a->ring_base)
    group_reset(g); /* the ring moved on during the query */
  for (size_t i = ring_find(a, g->pos); i < a->ring_len; i++) {
    audit_ev_t *ev = ring_at(a, i);
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
  if (g->members > 0 && g->pos < a->frontier.safe)
    group_check(g);
  group_unref(g);
}

/* Ask which clues of the decided events after pos the group sees (one query), unless one
 * is in flight. */
static void group_check(vis_group_t *g) {
  audit_t *a = g->a;
  int64_t upto = a->frontier.safe;
  int64_t *ids = NULL;
  size_t n = 0, cap = 0, len, i;
  char *list = NULL, cond[CLUE_SCOPE_SQL_MAX], sql[CLUE_SCOPE_SQL_MAX + 128], unit[24];
  const char *params[2];
  group_job_t *job = NULL;

  if (g->busy || g->members == 0 || a->closed || a->tail != TAIL_RUNNING || !a->frontier.ready)
    return;
  if (g->pos < 0 || g->pos < a->ring_base)
    group_reset(g);
  if (g->pos >= upto)
    return;
  for (i = ring_find(a, g->pos); i < a->ring_len && ring_at(a, i)->seq <= upto; i++) {
    audit_ev_t *ev = ring_at(a, i);
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
  if (clue_scope_sql(g->scope, "c", 1, cond, sizeof(cond)) != 0)
    snprintf(cond, sizeof(cond), "false");
  snprintf(sql, sizeof(sql), "SELECT c.id FROM clues c WHERE c.id = ANY ($2::bigint[]) AND %s",
           cond);
  snprintf(unit, sizeof(unit), "%lld", (long long)g->unit);
  params[0] = unit;
  params[1] = list;
  if ((job = malloc(sizeof(*job))) == NULL)
    goto oom;
  job->g = g;
  job->gen = a->gen;
  g->busy = 1;
  g->upto = upto;
  g->refs++;
  if (db_query(a->srv->db, sql, 2, params, group_checked, job) != 0) {
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

/* ---- the tail ------------------------------------------------------------------------- */

/* The largest seq, the xmin of the snapshot it was read in, and a transaction id assigned
 * after that snapshot was taken (see "Ordering without gaps"). */
static const char sql_start[] =
    "SELECT (SELECT coalesce(max(seq), 0) FROM audit_events),"
    "       txid_snapshot_xmin(txid_current_snapshot()), txid_current()";

/* Rows after the frontier with their snapshot's xmin (one statement, one snapshot), and,
 * when the rows leave a gap above the frontier, a transaction id assigned after the
 * snapshot; then which of the watchers' tokens ($3) no longer authenticate in that snapshot,
 * comma-separated (NULL when all do). At least one row, with NULL event columns when there
 * is nothing new. */
#define FETCH_EVENT_COL 3
static const char sql_fetch[] =
    "WITH e AS MATERIALIZED (SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2)"
    " SELECT txid_snapshot_xmin(txid_current_snapshot()),"
    "        (SELECT CASE WHEN max(seq) - $1 > count(*) THEN txid_current() END FROM e),"
    "        (SELECT string_agg(h, ',') FROM (SELECT DISTINCT unnest($3::text[]) h) x"
    "          WHERE NOT " TOKEN_VALID_SQL("h") "), " AUDIT_EVENT_COLS
    "   FROM (SELECT 1) one LEFT JOIN e ON true"
    "  ORDER BY e.seq";

typedef struct tail_job {
  audit_t *a;
  unsigned gen;
} tail_job_t;

static void on_tail_timer(uv_timer_t *t) {
  tail_kick(t->data);
}

static void tail_schedule(audit_t *a, unsigned ms) {
  if (a->tail != TAIL_OFF && !a->closed)
    uv_timer_start(&a->timer, on_tail_timer, ms, 0);
}

static void tail_retry(audit_t *a) {
  unsigned ms = a->retry_ms ? a->retry_ms : RETRY_MIN_MS;
  a->retry_ms = ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : ms * 2;
  tail_schedule(a, ms);
}

static void tail_done(const db_result_t *r, void *arg);

/* The watchers' tokens as an SQL array literal ({hex,hex,...}); NULL when out of memory. */
static char *tail_tokens(const audit_t *a) {
  char *s = malloc(3 + a->nwatchers * 65), *p = s;

  if (s == NULL)
    return NULL;
  *p++ = '{';
  for (const watcher_t *w = a->watchers; w; w = w->next) {
    if (w != a->watchers)
      *p++ = ',';
    memcpy(p, w->token, 64);
    p += 64;
  }
  *p++ = '}';
  *p = '\0';
  return s;
}

/* Send the tail's next query: the starting snapshot, or the rows after the frontier. */
static void tail_query(audit_t *a) {
  tail_job_t *job = malloc(sizeof(*job));
  char after[24], limit[24], *tokens = NULL;
  const char *params[3] = {after, limit, NULL};
  int rc;

  if (job == NULL) {
    tail_retry(a);
    return;
  }
  job->a = a;
  job->gen = a->gen;
  if (a->tail == TAIL_STARTING) {
    rc = db_query(a->srv->db, sql_start, 0, NULL, tail_done, job);
  } else if ((tokens = tail_tokens(a)) == NULL) {
    rc = DB_ENOMEM;
  } else {
    snprintf(after, sizeof(after), "%lld", (long long)a->frontier.safe);
    snprintf(limit, sizeof(limit), "%d", TAIL_BATCH);
    params[2] = tokens;
    rc = db_query(a->srv->db, sql_fetch, 3, params, tail_done, job);
    free(tokens);
    if (rc == 0)
      for (watcher_t *w = a->watchers; w; w = w->next)
        w->in_check = 1;
  }
  if (rc != 0) {
    free(job);
    tail_retry(a);
    return;
  }
  a->busy = 1;
  a->refs++;
}

/* Something may be new: query now, or once the query in flight is back. */
static void tail_kick(audit_t *a) {
  if (a->tail == TAIL_OFF || a->closed)
    return;
  if (a->busy) {
    a->again = 1;
    return;
  }
  uv_timer_stop(&a->timer);
  a->again = 0;
  tail_query(a);
}

static void on_notify(const char *channel, const char *payload, void *arg) {
  server_t *srv = arg;
  audit_t *a = srv->audit;
  char *end = NULL;
  long long seq;
  (void)channel;

  if (a == NULL || a->tail == TAIL_OFF)
    return;
  if (payload && (strncmp(payload, "revoked token ", 14) == 0 ||
                  strncmp(payload, "disabled user ", 14) == 0)) {
    /* Migration 0007's triggers: the next fetch re-checks every watcher's token. */
    log_info("audit watch: %.40s; checking the tokens of %zu watchers", payload, a->nwatchers);
    tail_kick(a);
    return;
  }
  seq = payload ? strtoll(payload, &end, 10) : 0;
  if (end && *end == '\0' && seq > 0) {
    /* An event the tail has already passed needs no query. */
    if (a->frontier.ready && seq <= a->frontier.safe)
      return;
    /* While the frontier waits on an undecided seq, only that seq's commit helps; a
     * rollback sends nothing, and the poll timer (armed) finds it. */
    if (a->waiting_on && seq != a->waiting_on)
      return;
  }
  tail_kick(a);
}

/* LISTEN took effect (first, or after a reconnect): notifications may have been missed. */
static void on_listen_ready(void *arg) {
  server_t *srv = arg;
  if (srv->audit)
    tail_kick(srv->audit);
}

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

/* Give every watcher its share of what the tail just decided. */
static void tail_fan_out(audit_t *a) {
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
    if (w->caught_up && w->last < a->ring_base) {
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

/* The frontier stopped short of rows it saw: some seq is still undecided. */
static void tail_note_stuck(audit_t *a, int stuck) {
  uint64_t now = uv_now(a->srv->loop);

  if (!stuck) {
    a->stuck_since = 0;
    a->stuck_warned = 0;
    return;
  }
  if (a->stuck_since == 0)
    a->stuck_since = now;
  else if (!a->stuck_warned && now - a->stuck_since >= STUCK_WARN_MS) {
    a->stuck_warned = 1;
    log_warn("audit watch: seq %lld has been undecided for %u s: the transaction that drew "
             "it is still open; watchers wait for it to end",
             (long long)a->frontier.safe + 1, STUCK_WARN_MS / 1000);
  }
}

static void tail_started(audit_t *a, const db_result_t *r) {
  int64_t max_seq = strtoll(db_value(r, 0, 0), NULL, 10);
  int64_t xmin = strtoll(db_value(r, 0, 1), NULL, 10);
  int64_t xbound = strtoll(db_value(r, 0, 2), NULL, 10);

  audit_frontier_start(&a->frontier, max_seq, xmin, xbound);
  a->ring_base = max_seq;
  a->tail = TAIL_RUNNING;
  if (a->frontier.ready)
    tail_fan_out(a);
  /* Rows after max_seq may exist already; the next query also polls the frontier. */
  a->again = 1;
}

static void tail_fetched(audit_t *a, const db_result_t *r) {
  int rows = db_rows(r), n = 0;
  int64_t xmin = strtoll(db_value(r, 0, 0), NULL, 10);
  const char *bound = db_value(r, 0, 1); /* NULL when the rows leave no gap */
  int64_t xbound = bound ? strtoll(bound, NULL, 10) : 0;
  int was_ready = a->frontier.ready;
  audit_ev_t **evs = calloc((size_t)(rows ? rows : 1), sizeof(*evs));
  int64_t *seqs = calloc((size_t)(rows ? rows : 1), sizeof(*seqs));
  size_t acc;

  if (evs == NULL || seqs == NULL)
    goto oom;
  /* Copy the rows before moving the frontier, so running out of memory loses nothing. */
  for (int i = 0; i < rows; i++) {
    if (db_value(r, i, FETCH_EVENT_COL) == NULL)
      continue; /* the one row of an empty fetch */
    if (audit_ev_from_row(r, i, FETCH_EVENT_COL, &evs[n]) != 0)
      goto oom;
    seqs[n] = evs[n]->seq;
    n++;
  }
  acc = audit_frontier_advance(&a->frontier, seqs, (size_t)n, xmin, xbound);
  if (acc > 0 || a->frontier.ready != was_ready)
    a->poll_ms = POLL_MIN_MS;
  if (acc > 0 && !a->ring) {
    a->ring = calloc(RING_MAX_EVENTS, sizeof(*a->ring));
    if (a->ring == NULL) {
      /* The frontier moved: nothing can be kept, so watchers at the edge fall behind the
       * ring and replay from the database (or end, if they had caught up). */
      log_error("audit watch: out of memory for the event ring");
      a->ring_base = a->frontier.safe;
    }
  }
  for (int i = 0; i < n; i++) {
    if ((size_t)i < acc && a->ring)
      ring_push(a, evs[i]);
    else
      free(evs[i]);
  }
  free(evs);
  free(seqs);
  a->waiting_on = a->frontier.ready && acc < (size_t)n ? a->frontier.safe + 1 : 0;
  tail_note_stuck(a, acc < (size_t)n || !a->frontier.ready);
  if (acc > 0 || a->frontier.ready != was_ready)
    tail_fan_out(a);
  if (a->tail == TAIL_OFF)
    return;
  if ((acc == (size_t)n && n == TAIL_BATCH) || a->again) {
    a->again = 1; /* tail_done queries again */
  } else if (acc < (size_t)n || !a->frontier.ready) {
    unsigned ms = a->poll_ms;
    a->poll_ms = ms * 2 > POLL_MAX_MS ? POLL_MAX_MS : ms * 2;
    tail_schedule(a, ms);
  }
  return;
oom:
  for (int i = 0; i < n; i++)
    free(evs[i]);
  free(evs);
  free(seqs);
  log_error("audit watch: out of memory reading new events");
  tail_retry(a);
}

/* The fetch's token check (see "Revocation"), applied before any of its events go out:
 * end the watchers whose token the fetch found invalid (a comma-separated list of hashes,
 * NULL for none), and let the others it named take events from the ring. Returns 0, or
 * -ENOMEM with nothing changed. */
static int tail_check_tokens(audit_t *a, const char *invalid) {
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
    /* Hashes are 64 hex digits apart from commas, so a match is a whole entry. */
    if (invalid && strstr(invalid, w->token)) {
      watcher_revoked(w);
    } else if (!w->checked) {
      w->checked = 1;
      if (w->state == WATCH_WAITING)
        watcher_advance(w);
    }
  }
  watchers_release(v, n);
  return 0;
}

static void tail_done(const db_result_t *r, void *arg) {
  tail_job_t *job = arg;
  audit_t *a = job->a;
  unsigned gen = job->gen;

  free(job);
  a->busy = 0;
  if (a->closed || gen != a->gen || a->tail == TAIL_OFF) {
    /* A stale answer; a tail started since then may be waiting for this query to end. */
    if (!a->closed && a->again)
      tail_kick(a);
    audit_unref(a);
    return;
  }
  if (r->err != DB_OK) {
    if (a->retry_ms == 0)
      log_warn("audit watch: reading new events failed (%s%s%s); retrying", db_strerror(r->err),
               r->message ? ": " : "", r->message ? r->message : "");
    tail_retry(a);
    audit_unref(a);
    return;
  }
  a->retry_ms = 0;
  if (a->tail == TAIL_STARTING)
    tail_started(a, r);
  else if (tail_check_tokens(a, db_value(r, 0, 2)) != 0)
    tail_retry(a); /* nothing of this snapshot may go out unchecked: read it again */
  else if (a->tail == TAIL_RUNNING)
    tail_fetched(a, r);
  if (a->again)
    tail_kick(a);
  audit_unref(a);
}

static void tail_start(audit_t *a) {
  if (a->tail != TAIL_OFF)
    return;
  ring_clear(a);
  memset(&a->frontier, 0, sizeof(a->frontier));
  a->tail = TAIL_STARTING;
  a->poll_ms = POLL_MIN_MS;
  a->retry_ms = 0;
  a->waiting_on = 0;
  a->stuck_since = 0;
  a->stuck_warned = 0;
  if (!a->listening) {
    int rc = db_listen_ex(a->srv->db, "audit_events", on_notify, on_listen_ready, a->srv);
    if (rc == 0)
      a->listening = 1;
    else
      log_error("audit watch: cannot listen for new events: %s", db_strerror(rc));
  }
  tail_kick(a);
}

/* ---- age and the periodic re-check ---------------------------------------------------- */

static void on_sweep(uv_timer_t *t);

/* Run the sweep at the next expiry, or after RECHECK_MS if that comes first. */
static void sweep_schedule(audit_t *a) {
  uint64_t now = uv_now(a->srv->loop), due = now + RECHECK_MS;

  if (a->closed || a->nwatchers == 0)
    return;
  for (const watcher_t *w = a->watchers; w; w = w->next)
    if (w->expires && w->expires < due)
      due = w->expires;
  uv_timer_start(&a->sweep, on_sweep, due > now ? due - now : 0, 0);
}

/* A watcher joined: its expiry is the latest of all, so the sweep moves only when it is not
 * running or is due after that expiry (a limit shorter than RECHECK_MS). */
static void sweep_joined(audit_t *a, const watcher_t *w) {
  uint64_t now = uv_now(a->srv->loop);

  if (!uv_is_active((uv_handle_t *)&a->sweep) ||
      (w->expires && now + uv_timer_get_due_in(&a->sweep) > w->expires))
    sweep_schedule(a);
}

static void on_sweep(uv_timer_t *t) {
  audit_t *a = t->data;
  uint64_t now = uv_now(a->srv->loop);
  size_t n;
  watcher_t **v = watchers_snapshot(a, &n);

  if (v) {
    for (size_t i = 0; i < n; i++) {
      watcher_t *w = v[i];
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
  /* The backstop: a fetch re-reads every watcher's token. */
  tail_kick(a);
  sweep_schedule(a);
}

/* ---- the handler and the server's hooks ---------------------------------------------- */

void audit_watch_events(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__WatchEventsRequest *req = (const void *)m;
  server_t *srv = rpc_call_server(call);
  audit_t *a = srv->audit;
  const char *bearer = rpc_call_metadata(call, "authorization");
  validate_error_t err;
  watcher_t *w;

  if (req->after_seq < 0) {
    rpc_fail(call, GRPC_INVALID_ARGUMENT, "after_seq must not be negative");
    return;
  }
  if (audit_check_subject(call, req->subject_type, req->subject_id) != 0)
    return;
  if (validate_text("action", req->action, 64, 0, &err) != 0) {
    rpc_fail(call, GRPC_INVALID_ARGUMENT, "%s", err.message);
    return;
  }
  if (srv->db == NULL || a == NULL || a->closed) {
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
  if ((w = calloc(1, sizeof(*w))) == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  w->a = a;
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
  if (srv->cfg.max_stream_age_ms)
    w->expires = uv_now(srv->loop) + srv->cfg.max_stream_age_ms;
  audit_visibility(rpc_call_principal(call), &w->filter);
  if (!w->filter.all &&
      (w->group = group_join(a, w->filter.scope_unit, w->filter.clue_scope)) == NULL) {
    rpc_call_unref(call);
    audit_unref(a);
    free(w);
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  w->next = a->watchers;
  if (a->watchers)
    a->watchers->prev = w;
  a->watchers = w;
  a->nwatchers++;
  rpc_call_on_cancel(call, on_cancel, w);
  rpc_call_on_writable(call, on_writable, w);
  sweep_joined(a, w);
  if (a->tail == TAIL_OFF)
    tail_start(a);
  else
    tail_kick(a); /* the next fetch checks its token (see "Revocation") */
  watcher_advance(w);
}

int audit_init(server_t *srv) {
  audit_t *a = calloc(1, sizeof(*a));
  if (a == NULL)
    return -ENOMEM;
  a->srv = srv;
  a->refs = 3; /* the server and the two timer handles */
  uv_timer_init(srv->loop, &a->timer);
  a->timer.data = a;
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

void audit_close(server_t *srv) {
  audit_t *a = srv->audit;

  if (a == NULL)
    return;
  a->closed = 1;
  while (a->watchers)
    watcher_set_state(a->watchers, WATCH_GONE);
  tail_stop(a);
  ring_clear(a);
  uv_close((uv_handle_t *)&a->timer, on_timer_closed);
  uv_close((uv_handle_t *)&a->sweep, on_timer_closed);
  srv->audit = NULL;
  audit_unref(a);
}
