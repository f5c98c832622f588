/* How `cluectl audit verify --checkpoint` tells a row from what its events say (clue_rows.c,
 * subject_rows.c): one member of the row as the export gives it (a JSON object as jsonb renders
 * it, LeafEvent.current_row or current_facts) against a JSON value of an event's details or a
 * text of the event's own fields, and the message that names both (docs/AUDIT.md). */

#ifndef CLUECTL_ROW_JUDGE_H
#define CLUECTL_ROW_JUDGE_H

#include <stddef.h>

/** What the events say a member of a row's JSON must be. */
typedef struct row_expect {
  const char *key, *name; /* the member, and how a message names it */
  int quoted;             /* a free text: shown in quotes, cut short */
  const char *want;       /* NULL: none */
  size_t len;             /* of want, when json */
  int json;               /* want is a JSON value as an event's details render it; else a text */
  int time;               /* milliseconds since the epoch: shown as a UTC time */
} row_expect_t;

/** Whether the JSON value v of n bytes is null. */
int row_json_is_null(const char *v, size_t n);

/** Milliseconds since the epoch (decimal text) as a UTC time in buf; text as it is when it is
 * not such a number. */
const char *row_shown_ms(const char *text, char *buf, size_t cap);

/** 1 and why ("<whose> <name> is X, but its events say Y: the row was changed without an
 * event") when member x->key of row is not what x says; 0 when it is, or when row does not
 * report the member (a server from before). whose: "the clue's", "proposal 7's". */
int row_judge(const char *row, const char *whose, const row_expect_t *x, char *why, size_t cap);

#endif
