/* The committed tail of audit_events, followed once per server (audit/tail.h).
 *
 * Shape. One LISTEN connection on channel "audit_events" and at most one query at a time.
 * Appending an event notifies nobody (a NOTIFY in every audited transaction would serialise
 * their commits, migration 0016): when a call's transaction commits, the server kicks its
 * own tail (audit_tail_committed()), and while the tail listens (a watcher follows) it also
 * fetches every FOLLOW_MS, for what other instances, or anyone else, committed. The LISTEN
 * carries the revocations of migration 0007. Kicks and notifications that arrive while the
 * query runs are coalesced into one more query (TAIL_REFETCH). Each fetch reads the rows after the
 * frontier; the frontier decides which seqs are final, and the decided events go into the
 * ring with their Merkle leaf hashes, and every follower is told (advanced). A follower may
 * ask for a pace: while only paced followers follow (the tree builder), the tail does not
 * LISTEN (a listening backend runs a transaction for every notification, that is for every
 * commit) but polls, once per pace while events come and once per UNLISTENED_IDLE_MS when
 * none came, so that following the log costs the writers nothing per commit. The first
 * follower without a pace (a watcher) starts the LISTEN, which then stays.
 *
 * Ordering without gaps. seq comes from a sequence and transactions commit in any order, so
 * a reader can see seq 11 while 10 is still uncommitted; one that then moved past 11 would
 * never deliver 10. A follower therefore takes only the contiguous run of decided seqs.
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
 * seq stays decided for every later query on any connection, so a follower's catch-up query
 * bounded by the frontier (seq <= safe) reads exactly the committed events up to it. When
 * the tail starts, the largest seq M of its first snapshot becomes the frontier once a
 * snapshot's xmin reaches that first statement's bound.
 * A transaction that appended an event and stays open holds the frontier (and every
 * follower) at its seq until it ends: a warning is logged when that lasts. xmin covers the
 * whole PostgreSQL cluster, so skipping a rolled-back seq also waits for write transactions
 * of other databases that were running when the gap was seen (a delay, never a loss). The
 * argument needs every row to come from audit_append(): a plain INSERT draws its seq from
 * the column default before it has a transaction id.
 *
 * Tokens. A follower may name tokens, each with the scope it must still have, that each fetch
 * checks in its own snapshot (WatchEvents ends a watcher whose token was revoked, or whose
 * user's role or unit changed, before any event committed after the change can reach it; see
 * service/audit_watch.c). The answer is handed over before the events. */

#include "audit/tail.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/tree.h"
#include "db/db.h"
#include "domain/audit_frontier.h"
#include "log.h"

#define TAIL_BATCH 500            /* rows per fetch */
#define RING_MAX_EVENTS 4096      /* decided events kept for followers near the edge */
#define RING_MAX_BYTES (8u << 20) /* ... and at most this much of them (as WatchEvents sends them) */
#define POLL_MIN_MS 5             /* re-reading while a gap is open: first delay */
#define POLL_MAX_MS 500           /* ... doubling up to this */
#define RETRY_MIN_MS 100          /* after a failed query */
#define RETRY_MAX_MS 5000
#define STUCK_WARN_MS 10000 /* warn when the frontier waits this long on one seq */
#define UNLISTENED_IDLE_MS 1000 /* not listening, and the last fetch found nothing: poll again */
#define FOLLOW_MS 50 /* listening (a watcher follows): fetch at least this often */

typedef enum tail_state {
  TAIL_OFF,        /* nobody follows; no query in flight */
  TAIL_STOPPING,   /* nobody follows; the answer of the query in flight will be dropped */
  TAIL_START_WAIT, /* the starting query failed: sent again when the timer fires */
  TAIL_STARTING,   /* the starting snapshot is being read */
  TAIL_IDLE,       /* following; no query in flight (the timer may be armed: poll, pace, retry) */
  TAIL_FETCHING,   /* following; a fetch is in flight */
  TAIL_REFETCH,    /* ... and something may have arrived since it was sent: fetch again */
  TAIL_CLOSED,     /* closed: freed once no query is in flight and the timer is closed */
} tail_state_t;

typedef struct ring_entry {
  audit_ev_t *ev;
  merkle_hash_t leaf;
} ring_entry_t;

struct audit_tail {
  server_t *srv;
  tail_state_t state;
  int refs;             /* the server, the timer handle, a query in flight */
  unsigned epoch;       /* bumped at every start */
  int listening;        /* the LISTEN connection is registered (it outlives stops) */
  unsigned poll_ms;     /* next delay while a gap is open */
  unsigned retry_ms;    /* next delay after a failed query */
  uint64_t sent_at;     /* loop time the last fetch was sent */
  int64_t waiting_on;   /* the undecided seq the frontier stopped at, or 0 */
  uint64_t stuck_since; /* loop time the frontier first stopped at its current seq, or 0 */
  int stuck_warned;
  audit_frontier_t frontier;
  uv_timer_t timer;
  audit_tail_follower_t *followers[AUDIT_TAIL_MAX_FOLLOWERS];
  size_t nfollowers;
  /* The ring: decided events with seq in (ring_base, frontier.safe], oldest first. */
  ring_entry_t *ring;
  size_t ring_head, ring_len, ring_bytes;
  int64_t ring_base;
  int64_t fetch_after; /* the lower bound of the fetch in flight (the frontier then) */
};

static void tail_kick_now(audit_tail_t *t);
static void tail_start(audit_tail_t *t);
static void tail_listen(audit_tail_t *t);
static void on_notify(const char *channel, const char *payload, void *arg);
static void on_listen_ready(void *arg);

/* ---- state ------------------------------------------------------------------------------ */

static int in_flight(tail_state_t s) {
  return s == TAIL_STOPPING || s == TAIL_STARTING || s == TAIL_FETCHING || s == TAIL_REFETCH;
}

/* The one place the tail changes state. Every transition that can happen is listed. */
static void tail_set_state(audit_tail_t *t, tail_state_t to) {
  tail_state_t from = t->state;
  int ok = 0;

  switch (from) {
  case TAIL_OFF:
    ok = to == TAIL_STARTING || to == TAIL_CLOSED;
    break;
  case TAIL_STOPPING:
    ok = to == TAIL_OFF || to == TAIL_CLOSED;
    break;
  case TAIL_START_WAIT:
    ok = to == TAIL_STARTING || to == TAIL_OFF || to == TAIL_CLOSED;
    break;
  case TAIL_STARTING:
    ok = to == TAIL_IDLE || to == TAIL_START_WAIT || to == TAIL_STOPPING || to == TAIL_CLOSED;
    break;
  case TAIL_IDLE:
    ok = to == TAIL_FETCHING || to == TAIL_OFF || to == TAIL_CLOSED;
    break;
  case TAIL_FETCHING:
    ok = to == TAIL_REFETCH || to == TAIL_IDLE || to == TAIL_STOPPING || to == TAIL_CLOSED;
    break;
  case TAIL_REFETCH:
    ok = to == TAIL_IDLE || to == TAIL_STOPPING || to == TAIL_CLOSED;
    break;
  case TAIL_CLOSED:
    break;
  }
  assert(ok && "audit tail: impossible state change");
  (void)ok;
  t->state = to;
  if (to == TAIL_OFF || to == TAIL_STOPPING || to == TAIL_CLOSED)
    uv_timer_stop(&t->timer);
}

static int following(const audit_tail_t *t) {
  return t->state == TAIL_IDLE || t->state == TAIL_FETCHING || t->state == TAIL_REFETCH;
}

/* ---- the ring --------------------------------------------------------------------------- */

static void ring_clear(audit_tail_t *t) {
  while (t->ring_len > 0) {
    free(t->ring[t->ring_head].ev);
    t->ring_head = (t->ring_head + 1) % RING_MAX_EVENTS;
    t->ring_len--;
  }
  free(t->ring);
  t->ring = NULL;
  t->ring_head = t->ring_bytes = 0;
}

static const ring_entry_t *ring_at(const audit_tail_t *t, size_t i) {
  return &t->ring[(t->ring_head + i) % RING_MAX_EVENTS];
}

static void ring_evict_one(audit_tail_t *t) {
  audit_ev_t *ev = t->ring[t->ring_head].ev;
  t->ring_base = ev->seq;
  t->ring_bytes -= ev->wire_size;
  free(ev);
  t->ring_head = (t->ring_head + 1) % RING_MAX_EVENTS;
  t->ring_len--;
}

/* Takes ownership of ev. */
static void ring_push(audit_tail_t *t, audit_ev_t *ev, const merkle_hash_t leaf) {
  ring_entry_t *e;

  if (t->ring_len == RING_MAX_EVENTS)
    ring_evict_one(t);
  e = &t->ring[(t->ring_head + t->ring_len) % RING_MAX_EVENTS];
  e->ev = ev;
  memcpy(e->leaf, leaf, MERKLE_HASH_LEN);
  t->ring_len++;
  t->ring_bytes += ev->wire_size;
  while (t->ring_bytes > RING_MAX_BYTES && t->ring_len > 1)
    ring_evict_one(t);
}

size_t audit_tail_ring_find(const audit_tail_t *t, int64_t after) {
  size_t lo = 0, hi = t->ring_len;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (ring_at(t, mid)->ev->seq <= after)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

const audit_ev_t *audit_tail_event(const audit_tail_t *t, size_t i) {
  return ring_at(t, i)->ev;
}

const uint8_t *audit_tail_leaf(const audit_tail_t *t, size_t i) {
  return ring_at(t, i)->leaf;
}

int64_t audit_tail_ring_base(const audit_tail_t *t) {
  return t->ring_base;
}

size_t audit_tail_ring_len(const audit_tail_t *t) {
  return t->ring_len;
}

int audit_tail_ready(const audit_tail_t *t) {
  return following(t) && t->frontier.ready;
}

int64_t audit_tail_safe(const audit_tail_t *t) {
  return t->frontier.safe;
}

unsigned audit_tail_epoch(const audit_tail_t *t) {
  return t->epoch;
}

/* ---- followers -------------------------------------------------------------------------- */

/* Tell every follower (a copy of the list: a follower may leave while being told). */
static void tell_advanced(audit_tail_t *t) {
  audit_tail_follower_t *v[AUDIT_TAIL_MAX_FOLLOWERS];
  size_t n = t->nfollowers;

  memcpy(v, t->followers, n * sizeof(*v));
  for (size_t i = 0; i < n; i++)
    if (v[i]->tail == t)
      v[i]->advanced(v[i]);
}

/* The smallest pace any follower asks for. */
static unsigned tail_pace(const audit_tail_t *t) {
  unsigned pace = ~0u;
  for (size_t i = 0; i < t->nfollowers; i++)
    if (t->followers[i]->pace_ms < pace)
      pace = t->followers[i]->pace_ms;
  return t->nfollowers ? pace : 0;
}

int audit_tail_follow(audit_tail_t *t, audit_tail_follower_t *f) {
  if (f->tail == t)
    return 0;
  if (t->nfollowers == AUDIT_TAIL_MAX_FOLLOWERS)
    return -ENOSPC;
  t->followers[t->nfollowers++] = f;
  f->tail = t;
  if (t->state == TAIL_OFF) {
    tail_start(t);
  } else {
    tail_listen(t);
    audit_tail_kick(t);
  }
  return 0;
}

void audit_tail_unfollow(audit_tail_follower_t *f) {
  audit_tail_t *t = f->tail;

  if (t == NULL)
    return;
  f->tail = NULL;
  for (size_t i = 0; i < t->nfollowers; i++)
    if (t->followers[i] == f) {
      t->followers[i] = t->followers[--t->nfollowers];
      break;
    }
  if (t->nfollowers > 0 || t->state == TAIL_CLOSED)
    return;
  /* Nobody follows: stop reading. The ring stays allocated until the next start or close:
   * a fan-out may be walking it. A tail already stopping (a follower came and went while its
   * statement ran) stays so: tail_done() ends it. */
  if (t->state == TAIL_STOPPING)
    return;
  if (in_flight(t->state))
    tail_set_state(t, TAIL_STOPPING);
  else if (t->state != TAIL_OFF)
    tail_set_state(t, TAIL_OFF);
}

/* ---- queries ---------------------------------------------------------------------------- */

/* With synchronous standbys, a statement that shows events also writes (DB_SYNC_WAIT_CTE),
 * so that its commit, and so its answer, waits until the standbys have the commits of every
 * event its snapshot showed: the events it hands out survive a failover (migration 0027). A
 * commit becomes visible before that wait, so without it a fetch could hand out an event
 * that the promoted standby never had, and whose seq it then gives to another. */
#define TAIL_SYNC_IF(cond) DB_SYNC_WAIT_CTE("s", cond)

/* The largest seq, the xmin of the snapshot it was read in, and a transaction id assigned
 * after that snapshot was taken (see "Ordering without gaps"). */
static const char sql_start[] =
    "WITH " TAIL_SYNC_IF("true")
    " SELECT (SELECT coalesce(max(seq), 0) FROM audit_events),"
    "       txid_snapshot_xmin(txid_current_snapshot()), txid_current()";

/* Rows after the frontier with their snapshot's xmin (one statement, one snapshot), and,
 * when the rows leave a gap above the frontier, a transaction id assigned after the
 * snapshot; then which of the followers' tokens ($3, "hash:scope") no longer authenticate
 * in that snapshot, or do with another scope (each marked so, comma-separated; NULL when all
 * hold); then the event, and the two columns a leaf
 * needs besides it. At least one row, with NULL event columns when there is nothing new. */
#define FETCH_EVENT_COL 3
#define FETCH_AT_US_COL (FETCH_EVENT_COL + AUDIT_EVENT_NCOLS)
#define FETCH_OWNER_COL (FETCH_AT_US_COL + 1)
/* clang-format off */
static const char sql_fetch[] =
    "WITH e AS MATERIALIZED (SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2),"
    " " TAIL_SYNC_IF("EXISTS (SELECT 1 FROM e)")
    " SELECT txid_snapshot_xmin(txid_current_snapshot()),"
    "        (SELECT CASE WHEN max(seq) - $1 > count(*) THEN txid_current() END FROM e),"
    "        (SELECT string_agg(c || CASE WHEN s IS NULL THEN '/revoked' ELSE '/moved' END, ',')"
    "           FROM (SELECT c, " AUDIT_TOKEN_SCOPE_SQL("split_part(c, ':', 1)") " s"
    "                   FROM (SELECT DISTINCT unnest($3::text[]) c) x) y"
    "          WHERE s IS DISTINCT FROM substr(c, strpos(c, ':') + 1)), " AUDIT_EVENT_COLS ","
    "        " AUDIT_LEAF_TIME_SQL ", e.owner_unit"
    "   FROM (SELECT 1) one LEFT JOIN e ON true"
    "  ORDER BY e.seq";
/* clang-format on */

/* The leaf of a fetched row: the event's columns as AUDIT_LEAF_COLS gives them. */
static int row_leaf(const db_result_t *r, int row, merkle_hash_t out) {
  const char *f[AUDIT_LEAF_NFIELDS];
  int c = FETCH_EVENT_COL;

  f[AUDIT_LEAF_SEQ] = db_value(r, row, c + 0);
  f[AUDIT_LEAF_AT_US] = db_value(r, row, FETCH_AT_US_COL);
  f[AUDIT_LEAF_ACTOR_USER] = db_value(r, row, c + 2);
  f[AUDIT_LEAF_ACTOR_UNIT] = db_value(r, row, c + 3);
  f[AUDIT_LEAF_ACTION] = db_value(r, row, c + 4);
  f[AUDIT_LEAF_SUBJECT_TYPE] = db_value(r, row, c + 5);
  f[AUDIT_LEAF_SUBJECT_ID] = db_value(r, row, c + 6);
  f[AUDIT_LEAF_OWNER_UNIT] = db_value(r, row, FETCH_OWNER_COL);
  f[AUDIT_LEAF_FROM_STATE] = db_value(r, row, c + 7);
  f[AUDIT_LEAF_TO_STATE] = db_value(r, row, c + 8);
  f[AUDIT_LEAF_REASON] = db_value(r, row, c + 9);
  f[AUDIT_LEAF_DETAILS] = db_value(r, row, c + 10);
  f[AUDIT_LEAF_PREV_HASH] = db_value(r, row, c + 11);
  f[AUDIT_LEAF_HASH] = db_value(r, row, c + 12);
  f[AUDIT_LEAF_TOKEN] = db_value(r, row, c + 13);
  return audit_leaf_hash(f, out);
}

static void tail_unref(audit_tail_t *t) {
  if (--t->refs > 0)
    return;
  ring_clear(t);
  free(t);
}

static void on_timer(uv_timer_t *h) {
  audit_tail_t *t = h->data;

  if (t->state == TAIL_START_WAIT) {
    tail_set_state(t, TAIL_OFF); /* and straight back: the start query is sent again */
    tail_start(t);
  } else if (t->state == TAIL_IDLE) {
    tail_kick_now(t);
  }
}

static void tail_schedule(audit_tail_t *t, uint64_t ms) {
  uv_timer_start(&t->timer, on_timer, ms, 0);
}

static unsigned next_retry(audit_tail_t *t) {
  unsigned ms = t->retry_ms ? t->retry_ms : RETRY_MIN_MS;
  t->retry_ms = ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : ms * 2;
  return ms;
}

static void tail_done(const db_result_t *r, void *arg);

/* The tokens every follower names, as one SQL array literal; NULL when out of memory. */
static char *fetch_tokens(audit_tail_t *t) {
  char *parts[AUDIT_TAIL_MAX_FOLLOWERS] = {NULL};
  size_t len = 3, k = 0;
  char *s = NULL;

  for (size_t i = 0; i < t->nfollowers; i++) {
    audit_tail_follower_t *f = t->followers[i];
    if (f->tokens == NULL)
      continue;
    if ((parts[i] = f->tokens(f)) == NULL)
      goto out;
    len += strlen(parts[i]);
  }
  if ((s = malloc(len)) == NULL)
    goto out;
  s[k++] = '{';
  for (size_t i = 0; i < t->nfollowers; i++) {
    size_t n;
    if (parts[i] == NULL || (n = strlen(parts[i])) <= 2)
      continue; /* "{}" */
    if (k > 1)
      s[k++] = ',';
    memcpy(s + k, parts[i] + 1, n - 2);
    k += n - 2;
  }
  s[k++] = '}';
  s[k] = '\0';
out:
  for (size_t i = 0; i < AUDIT_TAIL_MAX_FOLLOWERS; i++)
    free(parts[i]);
  return s;
}

/* Send the next fetch: the rows after the frontier. From IDLE only. */
static void tail_kick_now(audit_tail_t *t) {
  char after[24], limit[24], *tokens;
  const char *params[3] = {after, limit, NULL};

  assert(t->state == TAIL_IDLE);
  uv_timer_stop(&t->timer);
  if ((tokens = fetch_tokens(t)) == NULL) {
    log_error("audit tail: out of memory naming tokens");
    tail_schedule(t, next_retry(t));
    return;
  }
  snprintf(after, sizeof(after), "%lld", (long long)t->frontier.safe);
  snprintf(limit, sizeof(limit), "%d", TAIL_BATCH);
  params[2] = tokens;
  t->fetch_after = t->frontier.safe;
  if (db_query(t->srv->db, sql_fetch, 3, params, tail_done, t) != 0) {
    free(tokens);
    tail_schedule(t, next_retry(t));
    return;
  }
  free(tokens);
  t->refs++;
  t->sent_at = uv_now(t->srv->loop);
  tail_set_state(t, TAIL_FETCHING);
  for (size_t i = 0; i < t->nfollowers; i++)
    if (t->followers[i]->sent)
      t->followers[i]->sent(t->followers[i]);
}

void audit_tail_kick(audit_tail_t *t) {
  uint64_t now, due;
  unsigned pace;

  switch (t->state) {
  case TAIL_FETCHING:
    tail_set_state(t, TAIL_REFETCH);
    return;
  case TAIL_IDLE:
    break;
  default:
    return; /* starting (a fetch follows at once), refetching already, or not following */
  }
  pace = tail_pace(t);
  now = uv_now(t->srv->loop);
  due = t->sent_at + pace;
  if (pace == 0 || due <= now) {
    tail_kick_now(t);
    return;
  }
  /* Paced: fetch when the pace allows, unless the timer fires sooner already. */
  if (!uv_is_active((uv_handle_t *)&t->timer) || uv_timer_get_due_in(&t->timer) > due - now)
    tail_schedule(t, due - now);
}

void audit_tail_restart(audit_tail_t *t) {
  switch (t->state) {
  case TAIL_IDLE:
    tail_set_state(t, TAIL_OFF);
    tail_start(t);
    return;
  case TAIL_FETCHING:
  case TAIL_REFETCH:
    /* Its answer is dropped (tail_done()), which then starts again: followers remain. */
    tail_set_state(t, TAIL_STOPPING);
    return;
  default:
    return; /* a start reads a new snapshot anyway; off, stopping or closed: nothing to drop */
  }
}

void audit_tail_committed(server_t *srv) {
  if (srv->tail)
    audit_tail_kick(srv->tail);
}

/* ---- answers ---------------------------------------------------------------------------- */

/* The frontier stopped short of rows it saw: some seq is still undecided. */
static void note_stuck(audit_tail_t *t, int stuck) {
  uint64_t now = uv_now(t->srv->loop);

  if (!stuck) {
    t->stuck_since = 0;
    t->stuck_warned = 0;
    return;
  }
  if (t->stuck_since == 0)
    t->stuck_since = now;
  else if (!t->stuck_warned && now - t->stuck_since >= STUCK_WARN_MS) {
    t->stuck_warned = 1;
    log_warn("audit tail: seq %lld has been undecided for %u s: the transaction that drew "
             "it is still open; watchers and the tree wait for it to end",
             (long long)t->frontier.safe + 1, STUCK_WARN_MS / 1000);
  }
}

static void tail_started(audit_tail_t *t, const db_result_t *r) {
  int64_t max_seq = strtoll(db_value(r, 0, 0), NULL, 10);
  int64_t xmin = strtoll(db_value(r, 0, 1), NULL, 10);
  int64_t xbound = strtoll(db_value(r, 0, 2), NULL, 10);

  audit_frontier_start(&t->frontier, max_seq, xmin, xbound);
  t->ring_base = max_seq;
  tail_set_state(t, TAIL_IDLE);
  if (t->frontier.ready)
    tell_advanced(t);
  /* Rows after max_seq may exist already; the next query also polls the frontier. */
  if (t->state == TAIL_IDLE)
    tail_kick_now(t);
}

/* The frontier moved over a fetched batch. Returns 2 if the tail should fetch again at
 * once (a full batch), 1 if it decided events, 0 if none; -1 when out of memory (nothing
 * changed). */
static int tail_fetched(audit_tail_t *t, const db_result_t *r) {
  int rows = db_rows(r), n = 0, more;
  int64_t xmin = strtoll(db_value(r, 0, 0), NULL, 10);
  const char *bound = db_value(r, 0, 1); /* NULL when the rows leave no gap */
  int64_t xbound = bound ? strtoll(bound, NULL, 10) : 0;
  int was_ready = t->frontier.ready;
  audit_ev_t **evs = calloc((size_t)(rows ? rows : 1), sizeof(*evs));
  merkle_hash_t *leaves = calloc((size_t)(rows ? rows : 1), sizeof(*leaves));
  int64_t *seqs = calloc((size_t)(rows ? rows : 1), sizeof(*seqs));
  size_t acc;

  if (evs == NULL || seqs == NULL || leaves == NULL)
    goto oom;
  /* Copy the rows before moving the frontier, so running out of memory loses nothing. */
  for (int i = 0; i < rows; i++) {
    if (db_value(r, i, FETCH_EVENT_COL) == NULL)
      continue; /* the one row of an empty fetch */
    if (audit_ev_from_row(r, i, FETCH_EVENT_COL, &evs[n]) != 0) {
      evs[n] = NULL;
      goto oom;
    }
    if (row_leaf(r, i, leaves[n]) != 0) {
      free(evs[n]);
      evs[n] = NULL;
      goto oom;
    }
    seqs[n] = evs[n]->seq;
    n++;
  }
  if (!t->ring && n > 0 && (t->ring = calloc(RING_MAX_EVENTS, sizeof(*t->ring))) == NULL)
    goto oom;
  acc = audit_frontier_advance(&t->frontier, seqs, (size_t)n, xmin, xbound);
  if (acc > 0 || t->frontier.ready != was_ready)
    t->poll_ms = POLL_MIN_MS;
  for (int i = 0; i < n; i++) {
    if ((size_t)i < acc)
      ring_push(t, evs[i], leaves[i]);
    else
      free(evs[i]);
  }
  free(evs);
  free(seqs);
  free(leaves);
  t->waiting_on = t->frontier.ready && acc < (size_t)n ? t->frontier.safe + 1 : 0;
  note_stuck(t, acc < (size_t)n || !t->frontier.ready);
  more = acc == (size_t)n && n == TAIL_BATCH ? 2 : acc > 0;
  if (!more && (acc < (size_t)n || !t->frontier.ready)) {
    unsigned ms = t->poll_ms;
    t->poll_ms = ms * 2 > POLL_MAX_MS ? POLL_MAX_MS : ms * 2;
    tail_schedule(t, ms); /* armed now; a kick before it fires fetches sooner */
  }
  if (acc > 0 || t->frontier.ready != was_ready)
    tell_advanced(t);
  return more;
oom:
  for (int i = 0; i < n; i++)
    free(evs[i]);
  free(evs);
  free(seqs);
  free(leaves);
  log_error("audit tail: out of memory reading new events");
  return -1;
}

/* The fetch's token answer, to every follower that named tokens. */
static int tell_checked(audit_tail_t *t, const db_result_t *r) {
  audit_tail_follower_t *v[AUDIT_TAIL_MAX_FOLLOWERS];
  size_t n = t->nfollowers;
  int rows = db_rows(r);
  int64_t seen;

  /* Every seq above the fetch's lower bound that its snapshot shows came, unless the batch
   * was full; with none, the largest is the bound itself (a decided seq is at or below one
   * the snapshot shows, and the snapshot shows none above the bound). */
  if (rows >= TAIL_BATCH)
    seen = -1;
  else if (rows < 1 || db_value(r, rows - 1, FETCH_EVENT_COL) == NULL)
    seen = t->fetch_after;
  else
    seen = strtoll(db_value(r, rows - 1, FETCH_EVENT_COL), NULL, 10);
  memcpy(v, t->followers, n * sizeof(*v));
  for (size_t i = 0; i < n; i++)
    if (v[i]->tail == t && v[i]->checked && v[i]->checked(v[i], db_value(r, 0, 2), seen) != 0)
      return -ENOMEM;
  return 0;
}

static void tail_done(const db_result_t *r, void *arg) {
  audit_tail_t *t = arg;
  tail_state_t was = t->state;
  int again = was == TAIL_REFETCH, more = 0;

  if (was == TAIL_CLOSED) {
    tail_unref(t);
    return;
  }
  if (was == TAIL_STOPPING) {
    tail_set_state(t, TAIL_OFF);
    if (t->nfollowers > 0) /* someone followed again meanwhile */
      tail_start(t);
    tail_unref(t);
    return;
  }
  if (r->err != DB_OK) {
    if (t->retry_ms == 0)
      log_warn("audit tail: reading new events failed (%s%s%s); retrying", db_strerror(r->err),
               r->message ? ": " : "", r->message ? r->message : "");
    if (was == TAIL_STARTING) {
      tail_set_state(t, TAIL_START_WAIT);
      tail_schedule(t, next_retry(t));
    } else {
      tail_set_state(t, TAIL_IDLE);
      tail_schedule(t, next_retry(t));
      if (again)
        audit_tail_kick(t);
    }
    tail_unref(t);
    return;
  }
  t->retry_ms = 0;
  if (was == TAIL_STARTING) {
    tail_started(t, r);
    tail_unref(t);
    return;
  }
  tail_set_state(t, TAIL_IDLE);
  /* Nothing of this snapshot may go out unchecked: on failure read it again. */
  if (tell_checked(t, r) != 0 || (more = tail_fetched(t, r)) < 0) {
    if (t->state == TAIL_IDLE)
      tail_schedule(t, next_retry(t));
    tail_unref(t);
    return;
  }
  if (t->state == TAIL_IDLE && (more == 2 || again)) {
    if (more == 2)
      tail_kick_now(t);
    else
      audit_tail_kick(t);
  } else if (t->state == TAIL_IDLE) {
    /* Nothing tells the tail that another instance committed: a listening one (a watcher
     * follows) looks every FOLLOW_MS; an unlistening one again, sooner while rows come. */
    uint64_t ms = t->listening ? FOLLOW_MS : more ? tail_pace(t) : UNLISTENED_IDLE_MS;
    if (!uv_is_active((uv_handle_t *)&t->timer) || uv_timer_get_due_in(&t->timer) > ms)
      tail_schedule(t, ms);
  }
  tail_unref(t);
}

/* ---- notifications ---------------------------------------------------------------------- */

static void on_notify(const char *channel, const char *payload, void *arg) {
  server_t *srv = arg;
  audit_tail_t *t = srv->tail;
  char *end = NULL;
  long long seq;
  (void)channel;

  if (t == NULL || !(following(t) || t->state == TAIL_STARTING))
    return;
  if (payload && (strncmp(payload, "revoked token ", 14) == 0 ||
                  strncmp(payload, "disabled user ", 14) == 0)) {
    /* Migration 0007's triggers: the next fetch re-checks every token followers name. The
     * payload is not logged: any role let in to the database may send one. */
    audit_tail_kick(t);
    return;
  }
  seq = payload ? strtoll(payload, &end, 10) : 0;
  if (end && *end == '\0' && seq > 0) {
    /* An event the tail has already passed needs no query. */
    if (t->frontier.ready && seq <= t->frontier.safe)
      return;
    /* While the frontier waits on an undecided seq, only that seq's commit helps; a
     * rollback sends nothing, and the poll timer (armed) finds it. */
    if (t->waiting_on && seq != t->waiting_on)
      return;
  }
  audit_tail_kick(t);
}

/* LISTEN took effect (first, or after a reconnect): notifications may have been missed. */
static void on_listen_ready(void *arg) {
  server_t *srv = arg;
  if (srv->tail)
    audit_tail_kick(srv->tail);
}

/* ---- lifetime --------------------------------------------------------------------------- */

/* LISTEN, once some follower wants each event as soon as it commits; it then stays. */
static void tail_listen(audit_tail_t *t) {
  int rc;

  if (t->listening || tail_pace(t) != 0)
    return;
  rc = db_listen_ex(t->srv->db, "audit_events", on_notify, on_listen_ready, t->srv);
  if (rc == 0)
    t->listening = 1;
  else
    log_error("audit tail: cannot listen for new events: %s", db_strerror(rc));
}

/* From OFF: read the starting snapshot. */
static void tail_start(audit_tail_t *t) {
  assert(t->state == TAIL_OFF);
  ring_clear(t);
  memset(&t->frontier, 0, sizeof(t->frontier));
  t->epoch++;
  t->poll_ms = POLL_MIN_MS;
  t->waiting_on = 0;
  t->stuck_since = 0;
  t->stuck_warned = 0;
  tail_listen(t);
  if (db_query(t->srv->db, sql_start, 0, NULL, tail_done, t) != 0) {
    tail_set_state(t, TAIL_STARTING);
    tail_set_state(t, TAIL_START_WAIT);
    tail_schedule(t, next_retry(t));
    return;
  }
  t->refs++;
  tail_set_state(t, TAIL_STARTING);
}

int audit_tail_init(server_t *srv) {
  audit_tail_t *t = calloc(1, sizeof(*t));

  if (t == NULL)
    return -ENOMEM;
  t->srv = srv;
  t->refs = 2; /* the server and the timer handle */
  t->state = TAIL_OFF;
  uv_timer_init(srv->loop, &t->timer);
  t->timer.data = t;
  srv->tail = t;
  return 0;
}

static void on_timer_closed(uv_handle_t *h) {
  tail_unref(h->data);
}

void audit_tail_close(server_t *srv) {
  audit_tail_t *t = srv->tail;

  if (t == NULL)
    return;
  for (size_t i = 0; i < t->nfollowers; i++)
    t->followers[i]->tail = NULL;
  t->nfollowers = 0;
  srv->tail = NULL;
  tail_set_state(t, TAIL_CLOSED);
  ring_clear(t);
  uv_close((uv_handle_t *)&t->timer, on_timer_closed);
  tail_unref(t);
}
