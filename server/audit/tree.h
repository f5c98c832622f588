#ifndef CLUED_AUDIT_TREE_H
#define CLUED_AUDIT_TREE_H

/* The server's copy of the audit log's Merkle tree (docs/AUDIT.md).
 *
 * Every instance keeps the tree in memory (32 bytes and a seq per event) and follows the
 * leaves table, so any instance answers proofs. An instance started with a signing key is
 * also a builder: it follows the server's committed tail of audit_events (audit/tail.c,
 * shared with WatchEvents), takes each decided event's leaf in seq order, and appends the
 * leaves, at most every 250 ms (a full batch at once), with a signed checkpoint every N leaves or T
 * seconds, through audit_tree_append(), which one builder at a time may run (the row of
 * audit_tree_lock, which no role but the owner may lock) and only at the tree's current end. */

#include <stddef.h>
#include <stdint.h>

#include "audit/merkle.h"
#include "audit/note.h"
#include "server.h"

typedef struct audit_tree audit_tree_t;

/** An event's (aliased "e") time in microseconds since the epoch, NULL for one no bigint holds
 * ('infinity', which only a superuser can store): that one event then no longer hashes to its leaf
 * and is named, where the cast's error would fail the whole statement that reads it. */
#define AUDIT_LEAF_TIME_SQL                                                                        \
  "CASE WHEN abs(extract(epoch FROM e.at)) < 9e12"                                                 \
  " THEN (extract(epoch FROM e.at) * 1000000)::bigint END"

/** The columns of audit_events (aliased "e") that a leaf covers, in canonical order. */
#define AUDIT_LEAF_COLS                                                                            \
  "e.seq, " AUDIT_LEAF_TIME_SQL ", e.actor_user_id, e.actor_unit_id, "                             \
  "e.action, e.subject_type, e.subject_id, e.owner_unit, e.from_state, e.to_state, e.reason, "     \
  "e.details, encode(e.prev_hash, 'hex'), encode(e.hash, 'hex'), e.actor_token_id"

/** The builder's configuration. */
typedef struct audit_tree_config {
  const note_key_t *key;      /* NULL: follow and serve proofs, never sign */
  const note_key_t *previous_key; /* the key key replaced: its checkpoints are accepted too */
  uint64_t checkpoint_every;  /* publish once this many leaves are unsigned (default 1000) */
  uint64_t checkpoint_ms;     /* ... or once the oldest unsigned leaf waited this long (10 s) */
} audit_tree_config_t;

/** Create the tree of srv (srv->db must exist) and start following. Returns 0 or -ENOMEM. */
int audit_tree_init(server_t *srv, const audit_tree_config_t *cfg)
    __attribute__((warn_unused_result));

/** Stop following and free the tree once its query in flight (if any) has ended. */
void audit_tree_close(server_t *srv);

/**
 * True once the tree has been read to the end of the leaves table. On an instance without a
 * key, a call also starts reading the leaves appended since (if its last read is older than
 * 200 ms): the caller is answered from what is read so far, at most that much behind.
 */
int audit_tree_ready(audit_tree_t *t);

typedef void (*audit_tree_caught_up_fn)(void *arg);

/**
 * Call fn(arg) once the tree has read every leaf appended to the table before now (the end
 * of a read of the leaves that began after this call), or failed to, or the tree closes.
 * For a proof of a size another instance signed that this one has not read yet. 0, or -1
 * when AUDIT_TREE_MAX_WAITERS already wait (fn is then not called).
 */
#define AUDIT_TREE_MAX_WAITERS 1024
int audit_tree_catch_up(audit_tree_t *t, audit_tree_caught_up_fn fn, void *arg);

/** The in-memory tree (never NULL while the server runs); read-only for callers. */
const merkle_tree_t *audit_tree_merkle(const audit_tree_t *t);

/** Leaves known to be in the database: proofs and exports use no more. */
uint64_t audit_tree_size(const audit_tree_t *t);

/** Whether the tree stopped following the log (a changed or shrunk tree, a checkpoint of a key
 * it does not hold, a leaf the database keeps refusing; logged once as an ERROR): it appends
 * and signs nothing until clued is restarted. */
int audit_tree_halted(const audit_tree_t *t);

/** The seq of leaf i, or -1. */
int64_t audit_tree_seq(const audit_tree_t *t, uint64_t i);

/** The leaf index of seq, or -1 if seq is not a leaf (yet). */
int64_t audit_tree_index(const audit_tree_t *t, int64_t seq);

/** The signing key, or NULL. */
const note_key_t *audit_tree_key(const audit_tree_t *t);

/** The key the signing key replaced (--audit-previous-key), or NULL. */
const note_key_t *audit_tree_previous_key(const audit_tree_t *t);

/** Which key signed a checkpoint's note, as a builder sees it. */
typedef enum audit_cp_signer {
  AUDIT_CP_OWN,       /* this server's key: it verifies */
  AUDIT_CP_PREVIOUS,  /* the key this one replaced (--audit-previous-key): it verifies */
  AUDIT_CP_FORGED,    /* no signed note, or one naming a key the server holds that fails */
  AUDIT_CP_OTHER_KEY, /* signed (or so it claims) by a key the server does not hold only */
} audit_cp_signer_t;

/**
 * Open a checkpoint's note with the server's keys (t must hold a signing key): fills *cp
 * for AUDIT_CP_OWN and AUDIT_CP_PREVIOUS; otherwise writes why (cap bytes), naming the keys
 * for AUDIT_CP_OTHER_KEY ("the latest checkpoint is signed by key <name>+<id>, not this
 * server's <name>+<id>").
 */
audit_cp_signer_t audit_tree_open_checkpoint(const audit_tree_t *t, const char *note,
                                             checkpoint_t *cp, char *why, size_t cap);

#endif
