/* A clue's row against its chain (clue_rows.h). Every write that changes one of these facts
 * of a clue records it in the event it appends in the same transaction (docs/AUDIT.md):
 *   state       to_state of clue.submit, clue.move and proposal.approve (a proposal.create or
 *               .reject names a target that was not entered);
 *   owner_unit  the event's owner_unit at clue.submit and clue.handover;
 *   version     details.version, in every event that changes the row (1 at submission);
 *   deadline    details.stage_deadline_ms of clue.submit, clue.move and proposal.approve,
 *               details.new_deadline_ms of clue.deadline_extend (0 or null: none);
 *   case        details.case_id of case.add_clue; none at submission and case.remove_clue.
 * A fact an event of an older server did not record is not judged from there on. */

#include "clue_rows.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd_audit_tree.h"

enum { FACT_STATE, FACT_OWNER, FACT_VERSION, FACT_DEADLINE, FACT_CASE, FACTS };

/* The member of current_row each fact is, and how a message names it. */
static const char *const fact_key[FACTS] = {"state", "owner_unit", "version", "stage_deadline_ms",
                                            "case_id"};
static const char *const fact_name[FACTS] = {"state", "owner unit", "version", "stage deadline",
                                             "joint case"};

#define FACT_CAP 32 /* a state's name, or a decimal int64, or null */

struct clue_replay {
  int64_t id;
  unsigned known; /* bit per fact: what the events told so far */
  int lost;       /* an event of the chain was not read: nothing more is judged */
  char fact[FACTS][FACT_CAP];
};

void clue_rows_init(clue_rows_t *rows) {
  memset(rows, 0, sizeof(*rows));
}

void clue_rows_free(clue_rows_t *rows) {
  free(rows->slot);
  clue_rows_init(rows);
}

static size_t slot_of(const clue_rows_t *rows, int64_t id) {
  size_t i = (size_t)((uint64_t)id * 0x9e3779b97f4a7c15u) & (rows->cap - 1);
  while (rows->slot[i].id != 0 && rows->slot[i].id != id)
    i = (i + 1) & (rows->cap - 1);
  return i;
}

static int grow(clue_rows_t *rows) {
  clue_rows_t bigger = {NULL, rows->cap ? rows->cap * 2 : 1024, rows->n};

  bigger.slot = calloc(bigger.cap, sizeof(*bigger.slot));
  if (bigger.slot == NULL)
    return -1;
  for (size_t i = 0; i < rows->cap; i++)
    if (rows->slot[i].id != 0)
      bigger.slot[slot_of(&bigger, rows->slot[i].id)] = rows->slot[i];
  free(rows->slot);
  *rows = bigger;
  return 0;
}

/* The replay of e's clue, made if new; NULL for an event of another subject. */
static clue_replay_t *replay_of(clue_rows_t *rows, const Clue__V1__LeafEvent *e, int *oom) {
  char *end;
  long long id;
  size_t i;

  if (strcmp(e->subject_type, "clue") != 0)
    return NULL;
  id = strtoll(e->subject_id, &end, 10);
  if (end == e->subject_id || *end != '\0' || id == 0)
    return NULL;
  if ((rows->n + 1) * 2 > rows->cap && grow(rows) != 0) {
    *oom = 1;
    return NULL;
  }
  i = slot_of(rows, id);
  if (rows->slot[i].id == 0) {
    rows->slot[i].id = id;
    rows->n++;
  }
  return &rows->slot[i];
}

/* Sets fact f from text, or makes it unknown when the event did not record it (NULL). */
static void set_fact(clue_replay_t *c, int f, const char *text) {
  if (text == NULL) {
    c->known &= ~(1u << f);
    return;
  }
  snprintf(c->fact[f], FACT_CAP, "%s", strcmp(text, "0") == 0 ? "null" : text);
  c->known |= 1u << f;
}

/* Sets fact f from member key of e's details. */
static void set_detail(clue_replay_t *c, int f, const Clue__V1__LeafEvent *e, const char *key) {
  char v[FACT_CAP];
  set_fact(c, f, audit_json_member(e->details, key, v, sizeof(v)) == 0 ? v : NULL);
}

static int is(const Clue__V1__LeafEvent *e, const char *action) {
  return strcmp(e->action, action) == 0;
}

int clue_rows_apply(clue_rows_t *rows, const Clue__V1__LeafEvent *e) {
  int oom = 0;
  clue_replay_t *c = replay_of(rows, e, &oom);

  if (c == NULL || c->lost)
    return oom ? -1 : 0;
  if (is(e, "clue.submit")) {
    c->known = 0;
    set_fact(c, FACT_STATE, e->to_state);
    set_fact(c, FACT_OWNER, e->owner_unit);
    set_fact(c, FACT_VERSION, "1");
    set_detail(c, FACT_DEADLINE, e, "stage_deadline_ms");
    set_fact(c, FACT_CASE, "null");
  } else if (is(e, "clue.move") || is(e, "proposal.approve")) {
    set_fact(c, FACT_STATE, e->to_state);
    set_detail(c, FACT_DEADLINE, e, "stage_deadline_ms");
  } else if (is(e, "clue.deadline_extend")) {
    set_detail(c, FACT_DEADLINE, e, "new_deadline_ms");
  } else if (is(e, "clue.handover")) {
    set_fact(c, FACT_OWNER, e->owner_unit);
  } else if (is(e, "case.add_clue")) {
    set_detail(c, FACT_CASE, e, "case_id");
  } else if (is(e, "case.remove_clue")) {
    set_fact(c, FACT_CASE, "null");
  }
  {
    char v[FACT_CAP];
    if (audit_json_member(e->details, "version", v, sizeof(v)) == 0)
      set_fact(c, FACT_VERSION, v);
  }
  return 0;
}

int clue_rows_forget(clue_rows_t *rows, const Clue__V1__LeafEvent *e) {
  int oom = 0;
  clue_replay_t *c = replay_of(rows, e, &oom);

  if (c != NULL)
    c->lost = 1;
  return oom ? -1 : 0;
}

/* How a message shows a fact: none for null, a deadline as a UTC time. */
static const char *shown(int f, const char *text, char *buf, size_t cap) {
  char *end;
  long long ms;
  time_t t;
  struct tm tm;

  if (strcmp(text, "null") == 0)
    return "none";
  if (f != FACT_DEADLINE)
    return text;
  ms = strtoll(text, &end, 10);
  t = (time_t)(ms / 1000);
  if (*end != '\0' || ms < 0 || gmtime_r(&t, &tm) == NULL)
    return text;
  snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
  return buf;
}

int clue_rows_check(const clue_rows_t *rows, const Clue__V1__LeafEvent *e, char *why, size_t cap) {
  const clue_replay_t *c;
  char now[FACT_CAP];
  long long id;

  if (e->current_row[0] == '\0' || rows->cap == 0 || strcmp(e->subject_type, "clue") != 0)
    return 0;
  id = strtoll(e->subject_id, NULL, 10);
  c = &rows->slot[slot_of(rows, id)];
  if (c->id != id || c->lost)
    return 0;
  for (int f = 0; f < FACTS; f++) {
    if (!(c->known & (1u << f)) ||
        audit_json_member(e->current_row, fact_key[f], now, sizeof(now)) != 0)
      continue;
    if (strcmp(now, "0") == 0)
      snprintf(now, sizeof(now), "null");
    if (strcmp(now, c->fact[f]) != 0) {
      char a[40], b[40];
      snprintf(why, cap,
               "the clue's %s is %s, but its events say %s: the row was changed without an event",
               fact_name[f], shown(f, now, a, sizeof(a)), shown(f, c->fact[f], b, sizeof(b)));
      return 1;
    }
  }
  return 0;
}
