/* What the row of a rectification item, a user, a unit and a joint case must say, replayed
 * from the events of its own chain, for `cluectl audit verify --checkpoint`, against the row
 * the export gives with the chain's latest event (LeafEvent.current_row); and a recusal's row
 * against its clue.recuse event, a token's against its token.issue and token.revoke events and
 * a handler's, a case_clues row's and a participant's against the event that wrote it
 * (LeafEvent.current_facts; docs/AUDIT.md). */

#ifndef CLUECTL_SUBJECT_ROWS_H
#define CLUECTL_SUBJECT_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "clue/v1/audit.pb-c.h"

typedef struct subject_replay subject_replay_t;

/** The subjects seen so far in one walk of the export, by subject type and id. */
typedef struct subject_rows {
  subject_replay_t *slot; /* open addressing; id 0 marks a free slot */
  size_t cap, n;
} subject_rows_t;

void subject_rows_init(subject_rows_t *rows);
void subject_rows_free(subject_rows_t *rows);

/** Applies event e, in seq order, to its subject's replay (events of other subjects are
 * passed over). -1: out of memory. */
int subject_rows_apply(subject_rows_t *rows, const Clue__V1__LeafEvent *e);

/** An event this walk does not read whole (redacted, or not in the tree yet): its subject's
 * row is judged no more in this walk. -1: out of memory. */
int subject_rows_forget(subject_rows_t *rows, const Clue__V1__LeafEvent *e);

/** After subject_rows_apply(e): 1 and what differs in why when e->current_row contradicts what
 * the subject's events say, 0 when it agrees or cannot be judged. */
int subject_rows_check(const subject_rows_t *rows, const Clue__V1__LeafEvent *e, char *why,
                       size_t cap);

/** 1 and what differs in why when e, a clue.recuse event, comes with its recusal's row
 * (e->current_facts) and the row is not what e records of it; 0 when it agrees or cannot be
 * judged. */
int subject_rows_check_recusal(const Clue__V1__LeafEvent *e, char *why, size_t cap);

/** 1 and what differs in why when e, a token.issue or token.revoke event, comes with its
 * token's row (e->current_facts) and the row is not what e records of it (its user, issuer,
 * enrollment flag, note, stored hash, revoked flag); 0 when it agrees or cannot be judged. */
int subject_rows_check_token(const Clue__V1__LeafEvent *e, char *why, size_t cap);

/** 1 and what differs in why when e, a clue.assign, case.add_clue, case.add_participant or
 * case.create event, comes with the row of access it wrote (e->current_facts: a handler, a
 * case_clues row, participants) and the row names another user (or, for a handler, unit) as
 * having given it than e's actor; 0 when it agrees or cannot be judged. */
int subject_rows_check_access(const Clue__V1__LeafEvent *e, char *why, size_t cap);

#endif
