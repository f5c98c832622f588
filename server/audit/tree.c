/* The server's Merkle tree of the audit log: following the leaves table, and (with a
 * signing key) building leaves from the committed tail of audit_events.
 *
 * Shape. One query at a time, driven by one timer. Each round first reads the leaves other
 * instances appended (SYNC); a builder then takes the events after the last leaf that the
 * server's tail (audit/tail.c) has decided: from the tail's ring, where they already carry
 * their leaf hashes, or, when the last leaf is behind the ring (at start, or after another
 * builder held the lock), from the database with seq <= the tail's frontier (FETCH), which
 * reads exactly the committed events up to it. It appends them in seq order (APPEND) through
 * audit_tree_append(), which refuses unless this instance holds the builder lock, the tree is
 * still as long as it was read, and each leaf is the leaf of the event audit_events holds at
 * its seq (0056: after a failover to a standby that lacked the last events, the ring holds
 * events the database lost or gave other events' seqs; see leaves_unbacked()). The leaves
 * are added to the in-memory tree before the append is sent, so that the checkpoint's root
 * can be computed; if the append is refused they are dropped again (merkle trees are cut
 * back by size alone), and the next round reads what the other builder wrote. Proofs and
 * exports use only the leaves known to be in the table (durable).
 *
 * Why it never loses or reorders a leaf: a builder appends only seqs the frontier decided,
 * in increasing order, right after the last leaf, and the append is a compare-and-swap on
 * the tree's length under one lock; a decided seq stays decided for every reader, so two
 * builders that both pass the check would have to append the same seqs, and the lock and
 * the primary key on idx let only one of them. */

#include "audit/tree.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/tail.h"
#include "db/db.h"
#include "log.h"

#define SYNC_BATCH 10000 /* leaves per SYNC query */
#define BUILD_BATCH 1000 /* leaves per APPEND */
#define POLL_IDLE_MS 200 /* a follower: read the leaves again at most this often */
#define SYNC_MS 1000     /* a builder: read the leaves others appended at least this often */
#define RETRY_MS 1000    /* after a failed query */
/* A builder appends at most this often, and the tail reads for it at most this often, so
 * that building costs two statements per pace (the tail's read, the append) however many
 * events commit: the writers' commits never wait for it, and sequential writers do not share
 * the database's CPU with a round of builder statements per event. A full batch goes at
 * once. */
#define BUILD_PACE_MS 250

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* A caller waiting for the leaves appended before it asked (audit_tree_catch_up()). */
typedef struct tree_waiter {
  struct tree_waiter *next;
  uint64_t sync; /* the first SYNC that answers it: one that begins after it asked */
  audit_tree_caught_up_fn fn;
  void *arg;
} tree_waiter_t;

typedef enum tree_state {
  TREE_DORMANT, /* a follower between callers: nothing is read (the pool is not touched) */
  TREE_IDLE,   /* the timer runs; no query in flight */
  TREE_SYNC,   /* reading leaves appended by anyone */
  TREE_FETCH,  /* reading decided events after the last leaf from the database */
  TREE_APPEND, /* audit_tree_append() in flight */
  TREE_CLOSED, /* closing: freed once the timer is closed and no query is in flight */
} tree_state_t;

struct audit_tree {
  server_t *srv;
  tree_state_t state;
  int refs; /* the server, the timer handle, a query in flight */
  uv_timer_t timer;
  merkle_tree_t mt;
  int64_t *seqs; /* seqs[i]: the seq of leaf i */
  uint64_t seqs_cap;
  uint64_t durable; /* leaves known to be in audit_leaves */
  int loaded;       /* a SYNC has read to the end of audit_leaves once */
  int64_t synced_ms; /* a follower: when its last SYNC ended */
  int has_key;
  note_key_t key;
  int has_prev;
  note_key_t prev; /* the key this one replaced (--audit-previous-key): verifier only */
  int prev_told;   /* the log said the previous key is no longer needed */
  uint64_t every, interval_ms;
  uint64_t cp_size;      /* the latest checkpoint's size */
  int64_t cp_ms;         /* and when it was published (server clock), 0 if none */
  uint64_t cp_checked;   /* the tree matched the checkpoint of this size (0: none yet) */
  audit_cp_signer_t cp_signer; /* a builder: who signed the latest checkpoint checked */
  const char *forked;    /* why the tree does not match its latest checkpoint, or NULL */
  char why[512];         /* what forked points to when the reason names keys */
  audit_tail_follower_t follower; /* a builder follows the server's tail */
  uint64_t round_ms;     /* loop time the last round began */
  uint64_t next_sync;    /* a builder: loop time from which a round reads the leaves first */
  int appending_full;    /* the append in flight carries a full batch: go on at once */
  int appending_cp;      /* the append in flight carries a checkpoint */
  int64_t unbacked_seq;  /* the seq of the last leaf audit_tree_append() refused as unbacked */
  int64_t appending_ms;  /* ... published at this time */
  uint64_t syncs;        /* SYNCs begun; the one in flight (if any) is the last */
  tree_waiter_t *waiters;
  unsigned nwaiters;
};

const merkle_tree_t *audit_tree_merkle(const audit_tree_t *t) {
  return &t->mt;
}

uint64_t audit_tree_size(const audit_tree_t *t) {
  return t->durable;
}

int audit_tree_halted(const audit_tree_t *t) {
  return t->forked != NULL;
}

int64_t audit_tree_seq(const audit_tree_t *t, uint64_t i) {
  return i < t->durable ? t->seqs[i] : -1;
}

int64_t audit_tree_index(const audit_tree_t *t, int64_t seq) {
  uint64_t lo = 0, hi = t->durable;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    if (t->seqs[mid] < seq)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < t->durable && t->seqs[lo] == seq ? (int64_t)lo : -1;
}

const note_key_t *audit_tree_key(const audit_tree_t *t) {
  return t->has_key ? &t->key : NULL;
}

const note_key_t *audit_tree_previous_key(const audit_tree_t *t) {
  return t->has_prev ? &t->prev : NULL;
}

/* Does a signature line of note name k (its name and key id)? */
static int names_key(const char *note, const note_key_t *k) {
  char name[NOTE_NAME_MAX + 1];
  uint32_t id;

  for (size_t i = 0; note_signer(note, i, name, &id) == 0; i++)
    if (id == k->id && strcmp(name, k->name) == 0)
      return 1;
  return 0;
}

audit_cp_signer_t audit_tree_open_checkpoint(const audit_tree_t *t, const char *note,
                                             checkpoint_t *cp, char *why, size_t cap) {
  char name[NOTE_NAME_MAX + 1], own[NOTE_NAME_MAX + 16], prev[NOTE_NAME_MAX + 16];
  uint32_t id;

  if (note_checkpoint_open(&t->key, note, cp) == 0)
    return AUDIT_CP_OWN;
  if (t->has_prev && note_checkpoint_open(&t->prev, note, cp) == 0)
    return AUDIT_CP_PREVIOUS;
  note_key_label(&t->key, own, sizeof(own));
  if (names_key(note, &t->key)) {
    snprintf(why, cap,
             "the latest checkpoint's row does not match a note signed by this server's key");
    return AUDIT_CP_FORGED;
  }
  if (t->has_prev && names_key(note, &t->prev)) {
    note_key_label(&t->prev, prev, sizeof(prev));
    snprintf(why, cap,
             "the latest checkpoint's row does not match a note signed by the previous key %s",
             prev);
    return AUDIT_CP_FORGED;
  }
  if (note_signer(note, 0, name, &id) != 0) {
    snprintf(why, cap, "the latest checkpoint's row holds no signed note");
    return AUDIT_CP_FORGED;
  }
  /* Signed, or claiming to be, by a key this server does not hold: a replaced key (or an
   * instance started with another key). A forger gains nothing by it: the builder signs
   * nothing over a checkpoint it cannot check, as over a changed tree. */
  if (t->has_prev) {
    note_key_label(&t->prev, prev, sizeof(prev));
    snprintf(why, cap,
             "the latest checkpoint is signed by key %s+%08x, not this server's %s nor the "
             "previous key %s given with --audit-previous-key",
             name, id, own, prev);
  } else {
    snprintf(why, cap, "the latest checkpoint is signed by key %s+%08x, not this server's %s", name,
             id, own);
  }
  return AUDIT_CP_OTHER_KEY;
}

/* Wall-clock milliseconds: checkpoint times are compared with the database's. */
static int64_t wall_ms(void) {
  uv_timeval64_t tv;
  uv_gettimeofday(&tv);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int64_t last_seq(const audit_tree_t *t) {
  return t->durable ? t->seqs[t->durable - 1] : 0;
}

static void tree_unref(audit_tree_t *t) {
  if (--t->refs > 0)
    return;
  merkle_tree_free(&t->mt);
  free(t->seqs);
  memset(&t->key, 0, sizeof(t->key));
  free(t);
}

/* Add a leaf to the in-memory tree (not yet durable). */
static int leaf_push(audit_tree_t *t, int64_t seq, const merkle_hash_t h) {
  if (t->mt.size >= t->seqs_cap) {
    uint64_t cap = t->seqs_cap ? t->seqs_cap * 2 : 1024;
    int64_t *p = realloc(t->seqs, (size_t)cap * sizeof(*p));
    if (p == NULL)
      return -ENOMEM;
    t->seqs = p;
    t->seqs_cap = cap;
  }
  if (merkle_tree_append(&t->mt, h) != 0)
    return -ENOMEM;
  t->seqs[t->mt.size - 1] = seq;
  return 0;
}

/* Drop the leaves that are not durable; the next round reads what others appended. */
/* Answer the waiters a SYNC numbered done (or every one, when done is UINT64_MAX) answers. */
static void waiters_run(audit_tree_t *t, uint64_t done) {
  tree_waiter_t *ready = NULL, **w = &t->waiters;

  while (*w) {
    tree_waiter_t *x = *w;
    if (x->sync <= done) {
      *w = x->next;
      x->next = ready;
      ready = x;
      t->nwaiters--;
    } else {
      w = &x->next;
    }
  }
  while (ready) { /* after the list is settled: a caller may ask again */
    tree_waiter_t *x = ready;
    ready = x->next;
    x->fn(x->arg);
    free(x);
  }
}

static void leaves_cut(audit_tree_t *t) {
  t->mt.size = t->durable;
  t->next_sync = 0;
}

static int hex_decode(const char *s, uint8_t *out, size_t n) {
  if (s == NULL || strlen(s) != 2 * n)
    return -1;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    if (sscanf(s + 2 * i, "%2x", &v) != 1)
      return -1;
    out[i] = (uint8_t)v;
  }
  return 0;
}

static void tree_round(audit_tree_t *t);

static void on_timer(uv_timer_t *h) {
  audit_tree_t *t = h->data;
  if (t->state == TREE_IDLE)
    tree_round(t);
}

static void tree_wait(audit_tree_t *t, uint64_t ms) {
  t->state = TREE_IDLE;
  uv_timer_start(&t->timer, on_timer, ms, 0);
}

/* A builder between rounds: the next one begins when the tail has decided events after the
 * last leaf (within the pace; on_tail_advanced() also wakes it), when a checkpoint falls due
 * by time, or after SYNC_MS to read what other builders appended. */
static void tree_rest(audit_tree_t *t) {
  audit_tail_t *tail = t->follower.tail;
  uint64_t now = uv_now(t->srv->loop), ms = SYNC_MS;

  if (tail && audit_tail_ready(tail) && audit_tail_safe(tail) > last_seq(t)) {
    uint64_t due = t->round_ms + BUILD_PACE_MS;
    ms = due > now ? due - now : 0;
  } else if (t->mt.size > t->cp_size) {
    int64_t left = t->cp_ms + (int64_t)t->interval_ms - wall_ms();
    if (left < (int64_t)ms)
      ms = left > 0 ? (uint64_t)left : 0;
  }
  tree_wait(t, ms);
}

/* A query's result arrives after the tree was closed: drop it. Returns 1 if so. */
static int dropped(audit_tree_t *t) {
  if (t->state != TREE_CLOSED)
    return 0;
  tree_unref(t);
  return 1;
}

static int query_send(audit_tree_t *t, tree_state_t st, const char *sql, int n, const char *const *v,
                db_cb cb) {
  if (t->srv->db == NULL || db_query(t->srv->db, sql, n, v, cb, t) != 0)
    return -1;
  t->state = st;
  t->refs++;
  return 0;
}

/* Once a checkpoint this server's key signed is the latest, the previous key has served:
 * say so once, for the operator who waits to drop --audit-previous-key. */
static void prev_no_longer_needed(audit_tree_t *t) {
  if (!t->has_prev || t->prev_told)
    return;
  t->prev_told = 1;
  log_info("audit tree: the latest checkpoint (%llu events) is signed by this server's key: "
           "--audit-previous-key is no longer needed; drop it at the next restart",
           (unsigned long long)t->cp_size);
}

/* ---- APPEND ------------------------------------------------------------------------------ */

/* audit_tree_append() refused a leaf that audit_events does not back (ans: "gone <seq>" or
 * "differs <seq>", migration 0056): the log this builder took its leaves from, the tail's
 * ring, is not the database's. Nothing was appended nor signed. Drop those leaves and the
 * tail's ring and frontier, and read the leaves, then the log, again from the database: a
 * tree that lost leaves is then reported as such (leaves_lost_check()), and the builder goes
 * on with the events the database holds. The same seq refused again, leaves built from the
 * database this time, is no stale ring (an event that keeps changing, or a leaf computed two
 * ways): the builder halts rather than go round. */
static void leaves_unbacked(audit_tree_t *t, const char *ans) {
  int gone = strncmp(ans, "gone ", 5) == 0;
  int64_t seq = strtoll(ans + (gone ? 5 : 8), NULL, 10);
  int64_t idx = -1;

  for (uint64_t i = t->durable; i < t->mt.size; i++)
    if (t->seqs[i] == seq)
      idx = (int64_t)i;
  leaves_cut(t);
  if (seq == t->unbacked_seq) {
    snprintf(t->why, sizeof(t->why),
             "the leaf of seq %lld, read again from audit_events, is still refused by "
             "audit_tree_append() as not that event's",
             (long long)seq);
    t->forked = t->why;
    log_error("audit tree: %s (the event is changing, or clued and the database hash it "
              "differently); no leaf is appended and no checkpoint signed until clued is "
              "restarted",
              t->forked);
    tree_wait(t, SYNC_MS);
    return;
  }
  t->unbacked_seq = seq;
  log_error("audit tree: audit_tree_append() refused leaf %lld (seq %lld): %s. The log this "
            "server built the tree from is not the database's: events it held were lost or "
            "replaced (a failover to a standby that lacked them?) or changed by hand. Nothing "
            "was appended nor signed; the log is read again from the database",
            (long long)idx, (long long)seq,
            gone ? "audit_events has no event of that seq"
                 : "the event audit_events holds at that seq is not the one it hashes");
  if (t->follower.tail)
    audit_tail_restart(t->follower.tail);
  tree_wait(t, 0); /* leaves_cut(): the next round reads the leaves first */
}

/* audit_tree_append() found another note stored at the size of the checkpoint it was to
 * store (ans: "checkpoint <size>", migration 0065): put there ahead of the tree, by hand, since
 * a checkpoint is stored with its leaves and those were not. Nothing was appended. Going on
 * would leave that note as the checkpoint of its size, the one auditors keep: halt, as for a
 * checkpoint this builder did not sign over its tree (cp_check()). */
static void checkpoint_planted(audit_tree_t *t, const char *ans) {
  snprintf(t->why, sizeof(t->why),
           "audit_checkpoints already holds a checkpoint of %s events, which this server did not "
           "sign (stored ahead of the tree, by hand)",
           ans + 11);
  t->forked = t->why;
  leaves_cut(t);
  log_error("audit tree: %s; no leaf is appended and no checkpoint signed until the row is "
            "examined and removed and clued restarted",
            t->forked);
  tree_wait(t, SYNC_MS);
}

static void on_append(const db_result_t *r, void *arg) {
  audit_tree_t *t = arg;
  const char *ans;

  if (dropped(t))
    return;
  t->refs--;
  ans = r->err == DB_OK ? db_value(r, 0, 0) : NULL;
  if (ans && (strncmp(ans, "gone ", 5) == 0 || strncmp(ans, "differs ", 8) == 0)) {
    leaves_unbacked(t, ans);
    return;
  }
  if (ans && strncmp(ans, "checkpoint ", 11) == 0) {
    checkpoint_planted(t, ans);
    return;
  }
  if (ans && strcmp(ans, "ok") == 0) {
    t->unbacked_seq = 0;
    t->durable = t->mt.size;
    if (t->appending_cp) {
      t->cp_size = t->durable;
      t->cp_checked = t->cp_size; /* its root is the tree's */
      t->cp_signer = AUDIT_CP_OWN;
      t->cp_ms = t->appending_ms;
      prev_no_longer_needed(t);
    }
    if (t->appending_full)
      tree_wait(t, 0);
    else
      tree_rest(t);
    return;
  }
  leaves_cut(t);
  if (ans == NULL)
    log_warn("audit tree: appending leaves failed: %s", r->message ? r->message : db_strerror(r->err));
  /* busy or moved: another builder is at work; read what it wrote. */
  tree_wait(t, ans ? POLL_IDLE_MS : RETRY_MS);
}

/* Postgres array literals of the new leaves' seqs and hashes. */
static int append_send(audit_tree_t *t, int checkpoint) {
  uint64_t first = t->durable, n = t->mt.size - first;
  size_t cap = 16 + n * 24, cap2 = 16 + n * 72;
  char *seqs = malloc(cap), *leaves = malloc(cap2), *note = NULL;
  char num[24], root_hex[2 * MERKLE_HASH_LEN + 4], size[24];
  merkle_hash_t root;
  size_t a = 0, b = 0;
  const char *v[6];
  int rc = -ENOMEM;

  if (seqs == NULL || leaves == NULL)
    goto out;
  seqs[a++] = '{';
  leaves[b++] = '{';
  for (uint64_t i = first; i < t->mt.size; i++) {
    char hex[2 * MERKLE_HASH_LEN + 1];
    merkle_hex(merkle_tree_leaf(&t->mt, i), MERKLE_HASH_LEN, hex);
    a += (size_t)snprintf(seqs + a, cap - a, "%s%lld", i > first ? "," : "",
                          (long long)t->seqs[i]);
    b += (size_t)snprintf(leaves + b, cap2 - b, "%s\"\\\\x%s\"", i > first ? "," : "", hex);
  }
  snprintf(seqs + a, cap - a, "}");
  snprintf(leaves + b, cap2 - b, "}");
  snprintf(num, sizeof(num), "%llu", (unsigned long long)first);
  snprintf(size, sizeof(size), "%llu", (unsigned long long)t->mt.size);
  v[0] = num;
  v[1] = seqs;
  v[2] = leaves;
  v[3] = size;
  v[4] = NULL;
  v[5] = NULL;
  t->appending_cp = 0;
  if (checkpoint) {
    if (merkle_tree_root(&t->mt, t->mt.size, root) != 0 ||
        note_checkpoint_sign(&t->key, t->mt.size, root, &note) != 0) {
      log_error("audit tree: cannot sign a checkpoint");
      goto out;
    }
    root_hex[0] = '\\';
    root_hex[1] = 'x';
    merkle_hex(root, MERKLE_HASH_LEN, root_hex + 2);
    v[4] = root_hex;
    v[5] = note;
    t->appending_cp = 1;
    t->appending_ms = wall_ms();
  }
  rc = query_send(t, TREE_APPEND, "SELECT audit_tree_append($1, $2::bigint[], $3::bytea[], $4, $5, $6)",
            6, v, on_append);
out:
  free(seqs);
  free(leaves);
  free(note);
  return rc;
}

/* ---- FETCH ------------------------------------------------------------------------------- */

/* Decided events after the last leaf ($1), up to the tail's frontier ($2): exactly the
 * committed ones, in seq order. */
static const char sql_fetch[] =
    "SELECT " AUDIT_LEAF_COLS " FROM audit_events e WHERE e.seq > $1 AND e.seq <= $2"
    " ORDER BY e.seq LIMIT $3";

static int checkpoint_due(audit_tree_t *t) {
  uint64_t n = t->mt.size;
  if (n <= t->cp_size)
    return 0;
  return n - t->cp_size >= t->every ||
         wall_ms() - t->cp_ms >= (int64_t)t->interval_ms;
}

/* How many leaves the next append may carry: BUILD_BATCH, and no more than keeps the
 * unsigned leaves within --checkpoint-every, so that a backlog is signed every N leaves
 * rather than once at its end. */
static uint64_t batch_room(const audit_tree_t *t) {
  uint64_t unsigned_leaves = t->durable > t->cp_size ? t->durable - t->cp_size : 0;
  uint64_t room = t->every > unsigned_leaves ? t->every - unsigned_leaves : 1;
  return room < BUILD_BATCH ? room : BUILD_BATCH;
}

/* The leaves gathered (if any) go out, with a checkpoint if one is due; else wait. */
static void append_or_wait(audit_tree_t *t) {
  t->appending_full = t->mt.size - t->durable >= batch_room(t);
  if (t->mt.size > t->durable || checkpoint_due(t)) {
    if (append_send(t, checkpoint_due(t)) != 0) {
      leaves_cut(t);
      tree_wait(t, RETRY_MS);
    }
    return;
  }
  tree_rest(t);
}

static void on_fetch(const db_result_t *r, void *arg) {
  audit_tree_t *t = arg;
  int rows;

  if (dropped(t))
    return;
  t->refs--;
  if (r->err != DB_OK) {
    log_warn("audit tree: reading events failed: %s", r->message ? r->message : db_strerror(r->err));
    tree_wait(t, RETRY_MS);
    return;
  }
  rows = db_rows(r);
  for (int row = 0; row < rows; row++) {
    const char *f[AUDIT_LEAF_NFIELDS];
    merkle_hash_t h;
    for (int k = 0; k < AUDIT_LEAF_NFIELDS; k++)
      f[k] = db_value(r, row, k);
    if (audit_leaf_hash(f, h) != 0 || leaf_push(t, strtoll(f[0], NULL, 10), h) != 0) {
      log_error("audit tree: out of memory");
      leaves_cut(t);
      tree_wait(t, RETRY_MS);
      return;
    }
  }
  append_or_wait(t);
}

/* Gather the decided events after the last leaf: from the tail's ring when it holds them,
 * else from the database. */
static void gather(audit_tree_t *t) {
  audit_tail_t *tail = t->follower.tail;
  int64_t last = last_seq(t), safe;

  if (tail == NULL || !audit_tail_ready(tail) || (safe = audit_tail_safe(tail)) <= last) {
    append_or_wait(t); /* nothing decided after the last leaf (a checkpoint may be due) */
    return;
  }
  if (last >= audit_tail_ring_base(tail)) {
    size_t n = audit_tail_ring_len(tail);
    for (size_t i = audit_tail_ring_find(tail, last);
         i < n && t->mt.size - t->durable < batch_room(t); i++) {
      const audit_ev_t *ev = audit_tail_event(tail, i);
      if (ev->seq > safe)
        break;
      if (leaf_push(t, ev->seq, audit_tail_leaf(tail, i)) != 0) {
        log_error("audit tree: out of memory");
        leaves_cut(t);
        tree_wait(t, RETRY_MS);
        return;
      }
    }
    append_or_wait(t);
    return;
  }
  {
    char after[24], upto[24], lim[24];
    const char *v[3] = {after, upto, lim};
    snprintf(after, sizeof(after), "%lld", (long long)last);
    snprintf(upto, sizeof(upto), "%lld", (long long)safe);
    snprintf(lim, sizeof(lim), "%llu", (unsigned long long)batch_room(t));
    if (query_send(t, TREE_FETCH, sql_fetch, 3, v, on_fetch) != 0)
      tree_wait(t, RETRY_MS);
  }
}

/* The tail decided new events: begin a round as soon as the pace allows. */
static void on_tail_advanced(audit_tail_follower_t *f) {
  audit_tree_t *t = container_of(f, audit_tree_t, follower);
  uint64_t now, due;

  if (t->state != TREE_IDLE)
    return;
  now = uv_now(t->srv->loop);
  due = t->round_ms + BUILD_PACE_MS;
  due = due > now ? due - now : 0;
  if (!uv_is_active((uv_handle_t *)&t->timer) || uv_timer_get_due_in(&t->timer) > due)
    uv_timer_start(&t->timer, on_timer, due, 0);
}

/* ---- SYNC -------------------------------------------------------------------------------- */

static const char sql_sync[] =
    "SELECT l.idx, l.seq, encode(l.leaf, 'hex'), cp.tree_size,"
    "       floor(extract(epoch FROM cp.at) * 1000)::bigint, encode(cp.root, 'hex'),"
    "       CASE WHEN l.idx IS NULL OR l.idx = $1 THEN cp.note END," /* once: the first row */
    "       (SELECT coalesce(max(idx) + 1, 0) FROM audit_leaves),"
    /* A builder ($3): a leaf after the latest checkpoint that is not the leaf of the event
     * stored at its seq ('gone': no event there), as audit_tree_append() checks its own, or
     * that is not the next event's ('skips': an event lies between it and the leaf before
     * it; a leaf is appended only once every lower seq is decided, so a committed event
     * there had its leaf first). */
    "       CASE WHEN $3::boolean AND l.idx >= coalesce(cp.tree_size, 0) THEN"
    "         (SELECT CASE WHEN e.seq IS NULL THEN 'gone'"
    "                      WHEN audit_event_leaf(e) IS DISTINCT FROM l.leaf THEN 'differs'"
    "                      WHEN EXISTS (SELECT 1 FROM audit_events x WHERE x.seq < l.seq"
    "                             AND x.seq > coalesce((SELECT p.seq FROM audit_leaves p"
    "                                                    WHERE p.idx = l.idx - 1), 0))"
    "                        THEN 'skips' END"
    "            FROM (SELECT 1) o LEFT JOIN audit_events e ON e.seq = l.seq) END"
    "  FROM (SELECT 1) one"
    "  LEFT JOIN (SELECT * FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1) cp ON true"
    "  LEFT JOIN (SELECT * FROM audit_leaves WHERE idx >= $1 ORDER BY idx LIMIT $2) l ON true"
    " ORDER BY l.idx";

/* The tree read to its end against the latest checkpoint (size, root in hex, signed note):
 * why they disagree, or NULL. The leaves and the checkpoint come from one snapshot, and a
 * checkpoint is appended with its leaves, so a tree shorter than it lost leaves. */
static const char *cp_mismatch(audit_tree_t *t, uint64_t size, const char *root_hex,
                               const char *note) {
  merkle_hash_t root, want;
  checkpoint_t cp;

  memset(&cp, 0, sizeof(cp));
  if (t->has_key) {
    /* A key the server holds signed the row's size and root, or nothing can vouch for it. */
    t->cp_signer = audit_tree_open_checkpoint(t, note, &cp, t->why, sizeof(t->why));
    if (t->cp_signer == AUDIT_CP_OTHER_KEY || t->cp_signer == AUDIT_CP_FORGED)
      return t->why;
  }
  if (t->durable < size)
    return "the tree holds fewer leaves than its latest checkpoint";
  if (hex_decode(root_hex, want, MERKLE_HASH_LEN) != 0)
    return "the latest checkpoint's root is malformed";
  if (t->has_key && (cp.size != size || memcmp(cp.root, want, MERKLE_HASH_LEN) != 0)) {
    if (t->cp_signer == AUDIT_CP_OWN)
      return "the latest checkpoint's row does not match a note signed by this server's key";
    return "the latest checkpoint's row does not match the note signed by the previous key";
  }
  if (merkle_tree_root(&t->mt, size, root) != 0 || memcmp(root, want, MERKLE_HASH_LEN) != 0)
    return "the tree's leaves do not hash to the latest checkpoint's root";
  return NULL;
}

/* After a SYNC that read the tree to its end. A tree that contradicts a checkpoint this
 * server signed was changed in the database (audit_leaves and the events, together): a
 * builder signs nothing more over it, since a new checkpoint would vouch for the changed
 * history; followers keep serving what they hold, which fails every proof against the
 * signed roots. A checkpoint signed by a key the builder does not hold (a replaced key not
 * given with --audit-previous-key, another instance's key) is no evidence of a change, and
 * is not reported as one, but nothing here can check it: the builder halts all the same and
 * names the key. Once found, either holds until a restart reads the tree again. */
static void cp_check(audit_tree_t *t, const db_result_t *r) {
  uint64_t size;

  if (t->forked || db_value(r, 0, 3) == NULL || db_value(r, 0, 6) == NULL)
    return;
  size = (uint64_t)strtoll(db_value(r, 0, 3), NULL, 10);
  if (size == t->cp_checked)
    return;
  t->forked = cp_mismatch(t, size, db_value(r, 0, 5), db_value(r, 0, 6));
  if (t->forked == NULL) {
    t->cp_checked = size;
    if (t->has_key && t->cp_signer == AUDIT_CP_PREVIOUS) {
      char prev[NOTE_NAME_MAX + 16], own[NOTE_NAME_MAX + 16];
      note_key_label(&t->prev, prev, sizeof(prev));
      note_key_label(&t->key, own, sizeof(own));
      log_info("audit tree: the latest checkpoint (%llu events) is signed by the previous key %s "
               "and the tree extends it; the next checkpoint is signed by this server's %s",
               (unsigned long long)size, prev, own);
    } else if (t->has_key) {
      prev_no_longer_needed(t);
    }
    return;
  }
  if (t->has_key && t->cp_signer == AUDIT_CP_OTHER_KEY) {
    /* Not a changed tree: a key this server does not hold. It stays halted all the same
     * (until a restart with the right keys), as signing over a checkpoint it cannot check
     * would vouch for whatever the tree holds. */
    log_error("audit tree: %s: %s; no leaf is appended and no checkpoint signed until clued is "
              "restarted so",
              t->forked,
              t->has_prev
                  ? "--audit-previous-key must be the verifier key of the key that signed it"
                  : "if the key was replaced, start with --audit-previous-key OLD.pub (the "
                    "replaced key's verifier key)");
    return;
  }
  log_error("audit tree: %s (%llu leaves, checkpoint of %llu): the stored tree was changed; %s",
            t->forked, (unsigned long long)t->durable, (unsigned long long)size,
            t->has_key ? "no leaf is appended and no checkpoint signed until it is restored and "
                         "clued restarted"
                       : "proofs from this instance will not verify");
}

/* After a SYNC that read the tree to its end: audit_leaves shorter than the leaves this
 * server knew were stored lost some. No statement of clued deletes one (0012's trigger
 * refuses it): a failover to a standby that did not have them (events acknowledged on a
 * primary without a synchronous standby, docs/SCALEOUT.md) or a hand in the database. The
 * append that follows could only be refused as 'moved' for ever: say why once, and halt as
 * for a changed tree, until a restart reads the tree again from what the database holds. */
static void leaves_lost_check(audit_tree_t *t, const db_result_t *r) {
  uint64_t n;

  if (t->forked || db_value(r, 0, 7) == NULL)
    return;
  n = (uint64_t)strtoll(db_value(r, 0, 7), NULL, 10);
  if (n >= t->durable)
    return;
  snprintf(t->why, sizeof(t->why),
           "audit_leaves holds %llu leaves, fewer than the %llu this server stored",
           (unsigned long long)n, (unsigned long long)t->durable);
  t->forked = t->why;
  log_error("audit tree: %s: leaves and their events were lost (a failover to a standby that "
            "lacked them?) or deleted; %s; restart clued to rebuild the tree from what the "
            "database holds (a checkpoint saved before then no longer verifies)",
            t->forked,
            t->has_key ? "no leaf is appended and no checkpoint signed until then"
                       : "proofs from this instance will not verify until then");
}

/* A SYNC read a leaf after the latest checkpoint that the log does not back where it stands
 * (why: "gone", no event at its seq; "differs", the event there is not the one it hashes;
 * "skips", an event lies between it and the leaf before it). A builder appends only leaves
 * the log backs, each the next decided event's (audit_tree_append()), so the row was stored
 * by hand (audit_leaves refuses UPDATE and DELETE, not INSERT), or, for "differs", the event
 * changed after it was logged. Taking it would sign the next checkpoint over it, and every
 * verify would then blame an honest event: the tree stops before it and the builder halts,
 * naming the row, as for a checkpoint stored ahead of the tree (checkpoint_planted()). */
static void leaf_planted(audit_tree_t *t, const char *idx, const char *seq, const char *why) {
  const char *what = strcmp(why, "gone") == 0 ? "is the leaf of no event: audit_events has no "
                                                "event of that seq (stored by hand)"
                     : strcmp(why, "skips") == 0
                         ? "skips an event: audit_events holds one between it and the leaf "
                           "before it (stored by hand)"
                         : "is not the leaf of the event audit_events holds at that seq (stored "
                           "by hand, or the event changed after it was logged)";

  if (t->forked)
    return; /* said once; every SYNC stops at the row again */
  snprintf(t->why, sizeof(t->why), "audit_leaves row idx %s (seq %s) %s", idx, seq, what);
  t->forked = t->why;
  log_error("audit tree: %s; no leaf is appended and no checkpoint signed until it is examined "
            "(a row stored by hand removed; a changed event kept as evidence) and clued "
            "restarted",
            t->forked);
}

static void on_sync(const db_result_t *r, void *arg) {
  audit_tree_t *t = arg;
  int rows, got = 0;

  if (dropped(t))
    return;
  t->refs--;
  if (r->err != DB_OK) {
    log_warn("audit tree: reading leaves failed: %s", r->message ? r->message : db_strerror(r->err));
    tree_wait(t, RETRY_MS);
    waiters_run(t, t->syncs);
    return;
  }
  rows = db_rows(r);
  for (int i = 0; i < rows; i++) {
    merkle_hash_t h;
    if (db_value(r, i, 0) == NULL)
      continue;
    if ((uint64_t)strtoll(db_value(r, i, 0), NULL, 10) != t->durable ||
        hex_decode(db_value(r, i, 2), h, MERKLE_HASH_LEN) != 0) {
      log_error("audit tree: audit_leaves is not contiguous at leaf %llu; following stops there",
                (unsigned long long)t->durable);
      break;
    }
    if (db_value(r, i, 8) != NULL) {
      leaf_planted(t, db_value(r, i, 0), db_value(r, i, 1), db_value(r, i, 8));
      break;
    }
    if (leaf_push(t, strtoll(db_value(r, i, 1), NULL, 10), h) != 0) {
      log_error("audit tree: out of memory");
      break;
    }
    t->durable = t->mt.size;
    got++;
  }
  if (db_value(r, 0, 3) != NULL) {
    uint64_t cp = (uint64_t)strtoll(db_value(r, 0, 3), NULL, 10);
    if (cp > t->cp_size || t->cp_ms == 0) {
      /* Its time is the database's clock, which may run ahead of ours: taken as it is, a
       * checkpoint dated in our future would hold the next one back by the difference. */
      int64_t at = strtoll(db_value(r, 0, 4), NULL, 10), now = wall_ms();

      t->cp_size = cp;
      t->cp_ms = at < now ? at : now;
    }
  }
  if (got == SYNC_BATCH) {
    tree_wait(t, 0);
    return;
  }
  t->loaded = 1;
  leaves_lost_check(t, r);
  cp_check(t, r);
  if (t->has_key && t->forked) {
    tree_wait(t, SYNC_MS); /* reads on (the metrics and proofs follow), appends nothing */
  } else if (t->has_key) {
    t->next_sync = uv_now(t->srv->loop) + SYNC_MS;
    gather(t);
  } else {
    /* A follower reads again only when asked (audit_tree_ready(), audit_tree_catch_up()). */
    t->state = TREE_DORMANT;
    t->synced_ms = wall_ms();
  }
  waiters_run(t, t->syncs);
  if (t->waiters && t->state == TREE_DORMANT)
    tree_wait(t, 0); /* asked during this read: read again */
}

static void tree_round(audit_tree_t *t) {
  char after[24], lim[24];
  const char *v[3] = {after, lim, NULL};

  t->round_ms = uv_now(t->srv->loop);
  if (t->has_key && t->loaded && t->round_ms < t->next_sync) {
    /* This builder's own appends keep its tree current; others' are read every SYNC_MS,
     * and at once after any append of this one was refused. */
    gather(t);
    return;
  }
  snprintf(after, sizeof(after), "%llu", (unsigned long long)t->durable);
  snprintf(lim, sizeof(lim), "%d", SYNC_BATCH);
  v[2] = t->has_key ? "true" : "false";
  if (query_send(t, TREE_SYNC, sql_sync, 3, v, on_sync) != 0) {
    tree_wait(t, RETRY_MS);
    return;
  }
  t->syncs++;
}

/* ---- lifetime ---------------------------------------------------------------------------- */

int audit_tree_init(server_t *srv, const audit_tree_config_t *cfg) {
  audit_tree_t *t = calloc(1, sizeof(*t));

  if (t == NULL)
    return -ENOMEM;
  t->srv = srv;
  t->refs = 2; /* the server, the timer */
  merkle_tree_init(&t->mt);
  if (cfg->key) {
    t->has_key = 1;
    t->key = *cfg->key;
  }
  if (cfg->key && cfg->previous_key) {
    t->has_prev = 1;
    t->prev = *cfg->previous_key;
    t->prev.has_private = 0; /* only ever checked against */
    memset(t->prev.seed, 0, sizeof(t->prev.seed));
  }
  t->every = cfg->checkpoint_every ? cfg->checkpoint_every : 1000;
  t->interval_ms = cfg->checkpoint_ms ? cfg->checkpoint_ms : 10000;
  uv_timer_init(srv->loop, &t->timer);
  t->timer.data = t;
  srv->tree = t;
  if (t->has_key && srv->tail) {
    t->follower.advanced = on_tail_advanced;
    t->follower.pace_ms = BUILD_PACE_MS;
    if (audit_tail_follow(srv->tail, &t->follower) != 0)
      log_error("audit tree: cannot follow the audit log's tail");
  }
  /* Both read the tree at once. A builder then follows the tail; a follower reads again
   * only when a caller needs the tree (audit_tree_ready()), so that an instance nobody asks
   * for proofs sends the pool no queries of its own. */
  tree_wait(t, 0);
  return 0;
}

int audit_tree_catch_up(audit_tree_t *t, audit_tree_caught_up_fn fn, void *arg) {
  tree_waiter_t *w;

  if (t->nwaiters >= AUDIT_TREE_MAX_WAITERS || (w = malloc(sizeof(*w))) == NULL)
    return -1;
  w->sync = t->syncs + 1;
  w->fn = fn;
  w->arg = arg;
  w->next = t->waiters;
  t->waiters = w;
  t->nwaiters++;
  t->next_sync = 0; /* a builder's next round reads the leaves first */
  if (t->state == TREE_DORMANT || t->state == TREE_IDLE)
    tree_wait(t, 0);
  return 0;
}

int audit_tree_ready(audit_tree_t *t) {
  if (t->state == TREE_DORMANT && wall_ms() - t->synced_ms >= POLL_IDLE_MS)
    tree_wait(t, 0);
  return t->loaded;
}

static void on_timer_closed(uv_handle_t *h) {
  tree_unref(h->data);
}

void audit_tree_close(server_t *srv) {
  audit_tree_t *t = srv->tree;

  if (t == NULL)
    return;
  srv->tree = NULL;
  audit_tail_unfollow(&t->follower);
  waiters_run(t, UINT64_MAX); /* they find no tree */
  /* A query in flight keeps its reference and finds the tree closed. */
  t->state = TREE_CLOSED;
  uv_close((uv_handle_t *)&t->timer, on_timer_closed);
  tree_unref(t);
}
