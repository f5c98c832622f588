/* A clue's row against its chain (clue_rows.h). Every write that changes one of these facts
 * of a clue records it in the event it appends in the same transaction (docs/AUDIT.md):
 *   state       to_state of clue.submit, clue.move and proposal.approve (a proposal.create or
 *               .reject names a target that was not entered);
 *   owner_unit  the event's owner_unit at clue.submit and clue.handover;
 *   version     details.version, in every event that changes the row (1 at submission);
 *   deadline    details.stage_deadline_ms of clue.submit, clue.move and proposal.approve,
 *               details.new_deadline_ms of clue.deadline_extend (0 or null: none);
 *   case        details.case_id of case.add_clue; none at submission and case.remove_clue;
 *   extended    the deadline_extended flag: false at submission and at each change of stage
 *               (clue.move, proposal.approve), true after clue.deadline_extend;
 *   recusals    the has_recusals flag, which lets a read skip the recusal check (0020): false
 *               at submission, true from the first clue.recuse on (a recusal's row is only
 *               ever inserted by clue_recuse(), never deleted, and the flag never cleared);
 *   pending     details.proposal_id and .reviewer_unit_id of proposal.create; none at
 *               submission, and after the proposal's approval, rejection or withdrawal, a
 *               move and a handover (each clears it);
 *   outcome     disposal, finding, sanction_kind, persons_disciplined and receiving_organ:
 *               none at submission, then the members of clue.move's and proposal.approve's
 *               details that carry them (the move's or the approved proposal's details are
 *               merged into the event's); a move that carries none of one leaves it as it was.
 * A fact an event of an older server did not record is not judged from there on.
 *
 * A proposal's row against the events that name it (its details.proposal_id), which record
 * what they set: proposal.create its clue, from and target states, reason, carried details,
 * proposer, reviewer unit and the clue's version; proposal.approve and .reject the decision
 * (status), the review comment (the event's reason) and the reviewer (the actor), with the
 * carried details again; proposal.withdraw the status, no comment and no reviewer. */

#include "clue_rows.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/merkle.h"
#include "cmd_audit_tree.h"
#include "row_judge.h"

enum {
  FACT_STATE,
  FACT_OWNER,
  FACT_VERSION,
  FACT_DEADLINE,
  FACT_CASE,
  FACT_PENDING,
  FACT_REVIEWER,
  FACT_EXTENDED,
  FACT_RECUSALS,
  FACTS
};

/* The member of current_row each fact is, and how a message names it. */
static const char *const fact_key[FACTS] = {"state",
                                            "owner_unit",
                                            "version",
                                            "stage_deadline_ms",
                                            "case_id",
                                            "pending_proposal_id",
                                            "pending_reviewer_unit",
                                            "deadline_extended",
                                            "has_recusals"};
static const char *const fact_name[FACTS] = {"state",
                                             "owner unit",
                                             "version",
                                             "stage deadline",
                                             "joint case",
                                             "pending proposal",
                                             "pending proposal's reviewer unit",
                                             "deadline-extended flag",
                                             "has-recusals flag"};

#define FACT_CAP 32 /* a state's name, or a decimal int64, or null */

/* The fields a move carries (clue_enter_state() of 0003 and its successors), the members of
 * the move's details, of current_row and of a proposal's facts alike. */
enum { OUTCOMES = 5 };
static const char *const outcome_key[OUTCOMES] = {"disposal", "finding", "sanction_kind",
                                                  "persons_disciplined", "receiving_organ"};
static const char *const outcome_name[OUTCOMES] = {
    "disposal", "finding", "sanction kind", "number of persons disciplined", "receiving organ"};
static const int outcome_quoted[OUTCOMES] = {0, 1, 1, 0, 1}; /* free texts */

#define OUTCOME_BIT(o) (1u << (FACTS + (o)))

struct clue_replay {
  int64_t id;
  unsigned known; /* bit per fact, then per outcome: what the events told so far */
  int lost;       /* an event of the chain was not read: nothing more is judged */
  char fact[FACTS][FACT_CAP];
  char *outcome[OUTCOMES]; /* as the details render it (a JSON string or number); NULL: none */
};

void clue_rows_init(clue_rows_t *rows) {
  memset(rows, 0, sizeof(*rows));
}

void clue_rows_free(clue_rows_t *rows) {
  for (size_t i = 0; i < rows->cap; i++)
    for (int o = 0; o < OUTCOMES; o++)
      free(rows->slot[i].outcome[o]);
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

/* Sets outcome o to the JSON value v (n bytes), or to none when v is NULL. -1: out of memory. */
static int set_outcome(clue_replay_t *c, int o, const char *v, size_t n) {
  char *copy = NULL;

  if (v != NULL && (copy = malloc(n + 1)) == NULL)
    return -1;
  if (copy != NULL) {
    memcpy(copy, v, n);
    copy[n] = '\0';
  }
  free(c->outcome[o]);
  c->outcome[o] = copy;
  c->known |= OUTCOME_BIT(o);
  return 0;
}

/* The outcome fields e's details carry; the others stay as they were (the write's coalesce). */
static int carry_outcome(clue_replay_t *c, const Clue__V1__LeafEvent *e) {
  for (int o = 0; o < OUTCOMES; o++) {
    size_t n;
    const char *v = audit_json_raw(e->details, outcome_key[o], &n);
    if (v != NULL && !row_json_is_null(v, n) && set_outcome(c, o, v, n) != 0)
      return -1;
  }
  return 0;
}

static void no_pending(clue_replay_t *c) {
  set_fact(c, FACT_PENDING, "null");
  set_fact(c, FACT_REVIEWER, "null");
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
    set_fact(c, FACT_EXTENDED, "false");
    set_fact(c, FACT_RECUSALS, "false");
    no_pending(c);
    for (int o = 0; o < OUTCOMES; o++)
      (void)set_outcome(c, o, NULL, 0);
  } else if (is(e, "clue.move") || is(e, "proposal.approve")) {
    set_fact(c, FACT_STATE, e->to_state);
    set_detail(c, FACT_DEADLINE, e, "stage_deadline_ms");
    set_fact(c, FACT_EXTENDED, "false"); /* a new stage: its deadline not extended yet */
    no_pending(c);
    if (carry_outcome(c, e) != 0)
      return -1;
  } else if (is(e, "proposal.create")) {
    set_detail(c, FACT_PENDING, e, "proposal_id");
    set_detail(c, FACT_REVIEWER, e, "reviewer_unit_id");
  } else if (is(e, "proposal.reject") || is(e, "proposal.withdraw")) {
    no_pending(c);
  } else if (is(e, "clue.deadline_extend")) {
    set_detail(c, FACT_DEADLINE, e, "new_deadline_ms");
    set_fact(c, FACT_EXTENDED, "true");
  } else if (is(e, "clue.handover")) {
    set_fact(c, FACT_OWNER, e->owner_unit);
    no_pending(c);
  } else if (is(e, "clue.recuse")) {
    set_fact(c, FACT_RECUSALS, "true");
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
  if (strcmp(text, "null") == 0)
    return "none";
  return f == FACT_DEADLINE ? row_shown_ms(text, buf, cap) : text;
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
  for (int o = 0; o < OUTCOMES; o++) {
    const char *want = c->outcome[o] ? c->outcome[o] : "null";
    row_expect_t x = {outcome_key[o], outcome_name[o], outcome_quoted[o], want, strlen(want), 1, 0};
    if ((c->known & OUTCOME_BIT(o)) && row_judge(e->current_row, "the clue's", &x, why, cap))
      return 1;
  }
  return 0;
}

/* ---- a proposal's row against the events that name it ----------------------------------- */

enum { P_CREATE, P_APPROVE, P_REJECT, P_WITHDRAW, P_ACTIONS };
static const char *const proposal_action[P_ACTIONS] = {"proposal.create", "proposal.approve",
                                                       "proposal.reject", "proposal.withdraw"};
static const char *const proposal_status[P_ACTIONS] = {"PENDING", "APPROVED", "REJECTED",
                                                       "WITHDRAWN"};

#define PROPOSAL_EXPECTS 20

/* The text of canonical field bit of e, NULL when SQL NULL. */
static const char *field(const Clue__V1__LeafEvent *e, int bit, const char *text) {
  return (e->nulls & (1u << bit)) ? NULL : text;
}

int clue_rows_check_proposal(const Clue__V1__LeafEvent *e, char *why, size_t cap) {
  const char *reason = field(e, AUDIT_LEAF_REASON, e->reason);
  const char *actor = field(e, AUDIT_LEAF_ACTOR_USER, e->actor_user_id);
  row_expect_t x[PROPOSAL_EXPECTS];
  char id[FACT_CAP], whose[FACT_CAP + 16], row[8];
  size_t n = 0, len;
  const char *v;
  int a = 0;

  while (a < P_ACTIONS && !is(e, proposal_action[a]))
    a++;
  if (a == P_ACTIONS || e->current_facts[0] == '\0' ||
      audit_json_member(e->current_facts, "proposal_row", row, sizeof(row)) != 0 ||
      audit_json_member(e->details, "proposal_id", id, sizeof(id)) != 0)
    return 0;
  if (strcmp(row, "false") == 0) {
    snprintf(why, cap, "proposal %s is gone: the row was deleted", id);
    return 1;
  }
  snprintf(whose, sizeof(whose), "proposal %s's", id);
#define EXPECT(key, name, quoted, want) (x[n++] = (row_expect_t){key, name, quoted, want, 0, 0, 0})
#define EXPECT_DETAIL(key, name, quoted, detail)                                                   \
  do {                                                                                             \
    if ((v = audit_json_raw(e->details, detail, &len)) != NULL)                                    \
      x[n++] = (row_expect_t){key, name, quoted, v, len, 1, 0};                                    \
  } while (0)
  EXPECT("clue_id", "clue", 0, e->subject_id);
  /* The status only with the latest event naming the proposal (the export leaves it out
   * before): a later one decided it. */
  EXPECT("status", "status", 0, proposal_status[a]);
  EXPECT("from_state", "source state", 0, field(e, AUDIT_LEAF_FROM_STATE, e->from_state));
  EXPECT("target", "target state", 0, field(e, AUDIT_LEAF_TO_STATE, e->to_state));
  if (a == P_CREATE) {
    EXPECT("reason", "reason", 1, reason);
    EXPECT("proposer_user", "proposing user", 0, actor);
    EXPECT("proposer_unit", "proposing unit", 0, field(e, AUDIT_LEAF_ACTOR_UNIT, e->actor_unit_id));
    EXPECT_DETAIL("clue_version", "clue version", 0, "version");
  }
  if (a == P_CREATE || a == P_WITHDRAW)
    EXPECT_DETAIL("reviewer_unit", "reviewer unit", 0, "reviewer_unit_id");
  if (a != P_WITHDRAW) /* the details carried: the proposal's, merged into the event's */
    for (int o = 0; o < OUTCOMES; o++) {
      if ((v = audit_json_raw(e->details, outcome_key[o], &len)) == NULL) {
        v = "null";
        len = 4;
      }
      x[n++] = (row_expect_t){outcome_key[o], outcome_name[o], outcome_quoted[o], v, len, 1, 0};
    }
  if (a == P_APPROVE || a == P_REJECT) {
    EXPECT("review_comment", "review comment", 1, reason);
    EXPECT("reviewed_by", "reviewing user", 0, actor);
  } else if (a == P_WITHDRAW || audit_json_raw(e->current_facts, "status", &len) != NULL) {
    /* Withdrawn, or pending still: nobody reviewed it. */
    EXPECT("review_comment", "review comment", 1, NULL);
    EXPECT("reviewed_by", "reviewing user", 0, NULL);
  }
#undef EXPECT
#undef EXPECT_DETAIL
  for (size_t i = 0; i < n; i++)
    if (row_judge(e->current_facts, whose, &x[i], why, cap))
      return 1;
  return 0;
}
