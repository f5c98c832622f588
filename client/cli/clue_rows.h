/* What each clue's row must say, replayed from the events of its chain, for `cluectl audit
 * verify --checkpoint`: the state, owner unit, version, stage deadline, joint case, pending
 * proposal, outcome fields and the deadline_extended and has_recusals flags that the events
 * record, against the row the export gives with a clue's latest event
 * (LeafEvent.current_row); and a proposal's row against the events that name it
 * (LeafEvent.current_facts of proposal events; docs/AUDIT.md). */

#ifndef CLUECTL_CLUE_ROWS_H
#define CLUECTL_CLUE_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "clue/v1/audit.pb-c.h"

typedef struct clue_replay clue_replay_t;

/** The clues seen so far in one walk of the export, by id. */
typedef struct clue_rows {
  clue_replay_t *slot; /* open addressing; id 0 marks a free slot */
  size_t cap, n;
} clue_rows_t;

void clue_rows_init(clue_rows_t *rows);
void clue_rows_free(clue_rows_t *rows);

/** Applies event e, in seq order, to its clue's replay. -1: out of memory. */
int clue_rows_apply(clue_rows_t *rows, const Clue__V1__LeafEvent *e);

/** A clue event this walk does not read whole (redacted, or not in the tree yet): its clue's
 * row is judged no more in this walk. -1: out of memory. */
int clue_rows_forget(clue_rows_t *rows, const Clue__V1__LeafEvent *e);

/** After clue_rows_apply(e): 1 and what differs in why when e->current_row contradicts what
 * the clue's events say, 0 when it agrees or cannot be judged. */
int clue_rows_check(const clue_rows_t *rows, const Clue__V1__LeafEvent *e, char *why, size_t cap);

/** 1 and what differs in why when e, a proposal event, comes with its proposal's row
 * (e->current_facts) and the row is not what e records of it; 0 when it agrees or cannot be
 * judged. */
int clue_rows_check_proposal(const Clue__V1__LeafEvent *e, char *why, size_t cap);

#endif
