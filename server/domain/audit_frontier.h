#ifndef CLUED_DOMAIN_AUDIT_FRONTIER_H
#define CLUED_DOMAIN_AUDIT_FRONTIER_H

/* The delivery frontier of WatchEvents (DESIGN.md §5): up to which audit seq every event
 * is decided, so that a watcher can deliver in seq order without ever skipping an event
 * that commits late.
 *
 * seq comes from a sequence and transactions commit out of seq order: a reader may see seq
 * 11 committed while 10 is still in flight. A seq is *decided* once it is either visible or
 * certain never to commit. The rule (the argument is in audit/tail.c): when a
 * snapshot shows a seq h and not a smaller g, take a transaction id bound B that exceeds
 * every id assigned before that snapshot (txid_current() called in the same statement,
 * after the snapshot was taken). Every g below h still absent in any snapshot whose xmin is
 * at least B was rolled back.
 *
 * Pure bookkeeping over numbers: the caller runs the queries and feeds the results in. */

#include <stddef.h>
#include <stdint.h>

/** Checkpoints kept while gaps are open; more are merged (later, never earlier, decisions). */
#define AUDIT_FRONTIER_CHECKPOINTS 32

/** "Every seq below max_seq still absent once xmin >= xbound never commits." */
typedef struct audit_checkpoint {
  int64_t max_seq; /* the largest seq a snapshot showed */
  int64_t xbound;  /* above every transaction id assigned before that snapshot */
} audit_checkpoint_t;

typedef struct audit_frontier {
  int ready;            /* safe is established */
  int64_t safe;         /* every seq <= safe is decided */
  int64_t start_xbound; /* before ready: the starting snapshot's bound */
  int64_t resolved;     /* every seq < resolved that is absent never commits */
  audit_checkpoint_t cp[AUDIT_FRONTIER_CHECKPOINTS]; /* ascending in both fields */
  int ncp;
} audit_frontier_t;

/**
 * Start from a snapshot: its largest visible seq (0 if none), its xmin, and a bound above
 * every transaction id assigned before it. Every seq up to max_seq is decided once some
 * snapshot's xmin reaches xbound (this one's, if nothing was running).
 */
void audit_frontier_start(audit_frontier_t *f, int64_t max_seq, int64_t xmin, int64_t xbound);

/**
 * Feed the rows of one snapshot: seqs are the visible seqs above f->safe in ascending order
 * (all of them, or the first n of them: a LIMIT is fine), xmin the snapshot's xmin, and
 * xbound a bound above every transaction id assigned before the snapshot. xbound may be 0
 * (not measured) when seqs has no gap, i.e. seqs[i] == f->safe + 1 + i. An entry not above
 * f->safe stops the walk (it cannot come from such a query).
 * Returns how many leading entries of seqs are now decided and deliverable, in order;
 * f->safe is then the last of them (unchanged when none). While not ready, returns 0 until
 * xmin reaches the starting snapshot's bound.
 */
size_t audit_frontier_advance(audit_frontier_t *f, const int64_t *seqs, size_t n, int64_t xmin,
                              int64_t xbound);

#endif
