#ifndef CLUED_AUDIT_TAIL_H
#define CLUED_AUDIT_TAIL_H

/* The committed tail of audit_events, followed once per server for everyone who needs it:
 * WatchEvents (service/audit_watch.c) and the Merkle tree builder (audit/tree.c).
 *
 * At most one query at a time reads the rows after the frontier, when this server's own
 * calls commit, every FOLLOW_MS while a watcher follows, or on a revocation's notification; the frontier (domain/audit_frontier.c, the argument in tail.c)
 * says up to which seq every event is decided; the newest decided events are kept in a
 * ring, each with its Merkle leaf hash, so that every follower takes them from memory. A
 * follower behind the ring reads from the database itself, bounded by the frontier
 * (seq <= audit_tail_safe()), which reads exactly the committed events up to it. */

#include <stddef.h>
#include <stdint.h>

#include "audit/merkle.h"
#include "server.h"
#include "service/audit_event.h"

typedef struct audit_tail audit_tail_t;

/** Someone who follows the tail; embedded in the follower's own object. */
typedef struct audit_tail_follower {
  /* The frontier moved or became ready: the ring holds new decided events. May unfollow. */
  void (*advanced)(struct audit_tail_follower *f);
  /* Optional: the tokens the next fetch must check in its own snapshot, each with the scope
   * it must still have, as an SQL array literal of "hash:scope" entries (the token's SHA-256
   * in hex, then AUDIT_TOKEN_SCOPE_SQL's answer when the follower took it up; malloc'd, the
   * tail frees it), or NULL when out of memory. */
  char *(*tokens)(struct audit_tail_follower *f);
  /* Optional: that fetch was sent (the tokens are in it). */
  void (*sent)(struct audit_tail_follower *f);
  /* Optional: its answer, before any of its events is decided: the entries it found wanting
   * (comma-separated, NULL for none), each as named followed by "/revoked" (the token no
   * longer authenticates) or "/moved" (it does, with another scope), and the largest seq its
   * snapshot holds (-1 when the fetch's batch was full and it is not known). Returns 0, or
   * -ENOMEM to have the snapshot read again. */
  int (*checked)(struct audit_tail_follower *f, const char *invalid, int64_t seen);
  unsigned pace_ms; /* fetch at most this often for this follower; 0: on every notification */
  audit_tail_t *tail; /* set while following */
} audit_tail_follower_t;

/** Create srv->tail. Nothing is read until someone follows. Returns 0 or -ENOMEM. */
int audit_tail_init(server_t *srv) __attribute__((warn_unused_result));

/** Free srv->tail once its query in flight (if any) has ended; followers must have left. */
void audit_tail_close(server_t *srv);

/**
 * Start following: the tail starts reading if it was not. The follower struct must stay
 * allocated until audit_tail_unfollow(). Returns 0, or -ENOSPC past AUDIT_TAIL_MAX_FOLLOWERS.
 */
int audit_tail_follow(audit_tail_t *t, audit_tail_follower_t *f)
    __attribute__((warn_unused_result));

/** Stop following; the tail stops reading when nobody follows. No-op if not following. */
void audit_tail_unfollow(audit_tail_follower_t *f);

/**
 * Start over from a new snapshot of audit_events, as at the first follow: the ring and the
 * frontier are dropped (the answer of a fetch in flight with them) and the epoch bumped.
 * For a follower that found that the ring is not the database's log (audit/tree.c: events
 * it holds were lost or replaced, as by a failover to a standby that lacked them). Not from
 * an advanced() callback (a fan-out may be walking the ring). No-op while not following.
 */
void audit_tail_restart(audit_tail_t *t);

/** Something may be new, or tokens need checking: fetch now (or within the pace). */
void audit_tail_kick(audit_tail_t *t);

/** A transaction run for a call of srv has committed and may have appended events: kick
 * srv's tail (a no-op while nobody follows). Appending an event notifies nobody. */
void audit_tail_committed(server_t *srv);

/** True while the frontier is established: audit_tail_safe() and the ring may be used. */
int audit_tail_ready(const audit_tail_t *t);

/** Every seq <= this is decided. */
int64_t audit_tail_safe(const audit_tail_t *t);

/** Bumped whenever the tail (re)starts: positions in an older ring mean nothing. */
unsigned audit_tail_epoch(const audit_tail_t *t);

/** The ring holds every decided event with ring_base < seq <= safe, oldest first. */
int64_t audit_tail_ring_base(const audit_tail_t *t);
size_t audit_tail_ring_len(const audit_tail_t *t);

/** Index of the first ring event with seq > after (audit_tail_ring_len() if none). */
size_t audit_tail_ring_find(const audit_tail_t *t, int64_t after);

/** Ring event i (i < audit_tail_ring_len()); owned by the ring. */
const audit_ev_t *audit_tail_event(const audit_tail_t *t, size_t i);

/** Ring event i's Merkle leaf hash (RFC 9162, over the canonical event). */
const uint8_t *audit_tail_leaf(const audit_tail_t *t, size_t i);

#define AUDIT_TAIL_MAX_FOLLOWERS 4

/** SQL: the scope of the token whose SHA-256 (hex) is the SQL expression h while it still
 * authenticates (the condition of auth_sql in rpc/auth.c), as text: "user:unit:KIND:ROLE" of
 * its user (what a watcher's visibility rests on); NULL once it does not. */
#define AUDIT_TOKEN_SCOPE_SQL(h)                                                                   \
  "(SELECT concat_ws(':', u.id, u.unit_id, un.kind, u.role)"                                       \
  "   FROM tokens t JOIN users u ON u.id = t.user_id JOIN units un ON un.id = u.unit_id"           \
  "  WHERE t.token_sha256 = decode(" h ", 'hex') AND t.revoked_at IS NULL AND NOT u.disabled)"

#endif
