#include "domain/clue_fsm.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* DESIGN.md §2, one row per legal move. Every move is made by a LEADER of the owner unit.
 * The submit row (nothing -> ACCEPTED) is authz_can_submit()'s, not a move. The short names
 * below exist only to keep the table readable as a table. */
#define ACCEPTED CLUE_STATE_ACCEPTED
#define PRELIMINARY_CHECK CLUE_STATE_PRELIMINARY_CHECK
#define FILED CLUE_STATE_FILED
#define CLOSED CLUE_STATE_CLOSED
#define TRANSFERRED CLUE_STATE_TRANSFERRED_TO_JUDICIAL
#define LEADER CLUE_ROLE_LEADER
#define REASON CLUE_FIELD_REASON
#define DISPOSAL CLUE_FIELD_DISPOSAL
#define FINDING CLUE_FIELD_FINDING
#define OUTCOME CLUE_FIELD_OUTCOME
#define ORGAN CLUE_FIELD_RECEIVING_ORGAN
/* clang-format off */
const clue_move_t clue_fsm_table[] = {
  /* from             to                 action                  actor   review must carry */
  {ACCEPTED,          PRELIMINARY_CHECK, "start_check",          LEADER, false, REASON},
  {ACCEPTED,          CLOSED,            "close_by_disposal",    LEADER, false, REASON | DISPOSAL},
  {PRELIMINARY_CHECK, FILED,             "file_case",            LEADER, true,  REASON},
  {PRELIMINARY_CHECK, CLOSED,            "close_after_check",    LEADER, false, REASON | FINDING},
  {FILED,             CLOSED,            "conclude_case",        LEADER, false, REASON | OUTCOME},
  {FILED,             TRANSFERRED,       "transfer_to_judicial", LEADER, true,  REASON | ORGAN},
};
/* clang-format on */
#undef ACCEPTED
#undef PRELIMINARY_CHECK
#undef FILED
#undef CLOSED
#undef TRANSFERRED
#undef LEADER
#undef REASON
#undef DISPOSAL
#undef FINDING
#undef OUTCOME
#undef ORGAN

const size_t clue_fsm_table_len = sizeof(clue_fsm_table) / sizeof(clue_fsm_table[0]);

static const char *const state_names[CLUE_STATE_COUNT] = {
    "UNSPECIFIED", "ACCEPTED", "PRELIMINARY_CHECK", "FILED", "CLOSED", "TRANSFERRED_TO_JUDICIAL",
};

static const char *const disposal_names[] = {
    "UNSPECIFIED",
    "TALK_OR_LETTER_INQUIRY",
    "NO_FURTHER_ACTION",
    "SHELVED",
};

static const char *const unit_kind_names[] = {"UNSPECIFIED", "ROOM", "GROUP", "REGION", "ADMIN"};

static const char *const role_names[] = {"UNSPECIFIED", "MEMBER", "LEADER", "AUDITOR", "ADMIN"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Enum values arrive from the wire cast from int, so anything may be in them. */
static const char *name_of(const char *const *names, size_t n, int v) {
  if (v < 0 || (size_t)v >= n)
    return "UNKNOWN";
  return names[v];
}

const clue_move_t *clue_fsm_find(clue_state_t from, clue_state_t to) {
  for (size_t i = 0; i < clue_fsm_table_len; i++)
    if (clue_fsm_table[i].from == from && clue_fsm_table[i].to == to)
      return &clue_fsm_table[i];
  return NULL;
}

size_t clue_fsm_targets(clue_state_t from, clue_state_t *out, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < clue_fsm_table_len; i++) {
    if (clue_fsm_table[i].from != from)
      continue;
    if (n < cap)
      out[n] = clue_fsm_table[i].to;
    n++;
  }
  return n;
}

bool clue_state_is_terminal(clue_state_t s) {
  return s == CLUE_STATE_CLOSED || s == CLUE_STATE_TRANSFERRED_TO_JUDICIAL;
}

bool clue_state_is_valid(clue_state_t s) {
  return s >= CLUE_STATE_ACCEPTED && s <= CLUE_STATE_TRANSFERRED_TO_JUDICIAL;
}

const char *clue_state_name(clue_state_t s) {
  return name_of(state_names, NELEM(state_names), (int)s);
}

int clue_state_from_name(const char *name, clue_state_t *out) {
  static const char prefix[] = "CLUE_STATE_";
  if (name == NULL)
    return CLUE_FSM_EINVAL;
  if (strncasecmp(name, prefix, sizeof(prefix) - 1) == 0)
    name += sizeof(prefix) - 1;
  for (int s = CLUE_STATE_ACCEPTED; s <= CLUE_STATE_TRANSFERRED_TO_JUDICIAL; s++) {
    if (strcasecmp(name, state_names[s]) == 0) {
      *out = (clue_state_t)s;
      return CLUE_FSM_OK;
    }
  }
  return CLUE_FSM_EINVAL;
}

const char *clue_disposal_name(clue_disposal_t d) {
  return name_of(disposal_names, NELEM(disposal_names), (int)d);
}

bool clue_disposal_is_valid(int d) {
  return d >= CLUE_DISPOSAL_TALK_OR_LETTER_INQUIRY && d <= CLUE_DISPOSAL_SHELVED;
}

const char *clue_unit_kind_name(clue_unit_kind_t k) {
  return name_of(unit_kind_names, NELEM(unit_kind_names), (int)k);
}

const char *clue_role_name(clue_role_t r) {
  return name_of(role_names, NELEM(role_names), (int)r);
}

/* Append to buf at *pos; remembers truncation in *trunc but keeps buf terminated. */
__attribute__((format(printf, 5, 6))) static void append(char *buf, size_t len, size_t *pos,
                                                         bool *trunc, const char *fmt, ...) {
  if (*pos >= len) {
    *trunc = true;
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= len - *pos) {
    *trunc = true;
    *pos = len;
  } else {
    *pos += (size_t)n;
  }
}

int clue_fsm_refusal(clue_state_t from, clue_state_t to, char *buf, size_t len) {
  if (buf == NULL || len == 0)
    return CLUE_FSM_ENOSPC;
  buf[0] = '\0';
  size_t pos = 0;
  bool trunc = false;
  const char *fname = clue_state_name(from);

  if (clue_state_is_terminal(from)) {
    append(buf, len, &pos, &trunc, "clue is %s, a terminal state; no moves are allowed", fname);
    return trunc ? CLUE_FSM_ENOSPC : CLUE_FSM_OK;
  }

  append(buf, len, &pos, &trunc, "cannot move from %s to %s; ", fname, clue_state_name(to));
  clue_state_t targets[CLUE_STATE_COUNT];
  size_t n = clue_fsm_targets(from, targets, NELEM(targets));
  if (n == 0) {
    append(buf, len, &pos, &trunc, "no moves are allowed from %s", fname);
  } else {
    append(buf, len, &pos, &trunc, "allowed from %s: ", fname);
    for (size_t i = 0; i < n; i++)
      append(buf, len, &pos, &trunc, "%s%s", i ? ", " : "", clue_state_name(targets[i]));
  }
  return trunc ? CLUE_FSM_ENOSPC : CLUE_FSM_OK;
}

/* The first missing field, and for OUTCOME which of its two request fields is at fault. */
static unsigned first_missing(const clue_move_t *m, const clue_move_facts_t *f,
                              const char **field) {
  if ((m->required & CLUE_FIELD_REASON) && validate_is_blank(f->reason)) {
    *field = "reason";
    return CLUE_FIELD_REASON;
  }
  if ((m->required & CLUE_FIELD_DISPOSAL) && !clue_disposal_is_valid(f->disposal)) {
    *field = "details.disposal";
    return CLUE_FIELD_DISPOSAL;
  }
  if ((m->required & CLUE_FIELD_FINDING) && validate_is_blank(f->finding)) {
    *field = "details.finding";
    return CLUE_FIELD_FINDING;
  }
  if (m->required & CLUE_FIELD_OUTCOME) {
    if (validate_is_blank(f->sanction_kind)) {
      *field = "details.sanction_kind";
      return CLUE_FIELD_OUTCOME;
    }
    if (f->persons_disciplined < 0) {
      *field = "details.persons_disciplined";
      return CLUE_FIELD_OUTCOME;
    }
  }
  if ((m->required & CLUE_FIELD_RECEIVING_ORGAN) && validate_is_blank(f->receiving_organ)) {
    *field = "details.receiving_organ";
    return CLUE_FIELD_RECEIVING_ORGAN;
  }
  *field = NULL;
  return 0;
}

unsigned clue_fsm_missing_field(const clue_move_t *move, const clue_move_facts_t *facts) {
  const char *field;
  return first_missing(move, facts, &field);
}

int clue_fsm_check_fields(const clue_move_t *move, const clue_move_facts_t *facts,
                          validate_error_t *err) {
  const char *field;
  unsigned bit = first_missing(move, facts, &field);
  if (bit == 0)
    return CLUE_FSM_OK;
  if (err == NULL)
    return CLUE_FSM_EINVAL;

  err->field = field;
  char when[96];
  if (move->to == CLUE_STATE_CLOSED)
    snprintf(when, sizeof(when), "when closing from %s", clue_state_name(move->from));
  else
    snprintf(when, sizeof(when), "when moving from %s to %s", clue_state_name(move->from),
             clue_state_name(move->to));

  if (bit == CLUE_FIELD_REASON)
    snprintf(err->message, sizeof(err->message), "reason is required");
  else if (bit == CLUE_FIELD_DISPOSAL && facts->disposal != CLUE_DISPOSAL_UNSPECIFIED)
    snprintf(err->message, sizeof(err->message),
             "details.disposal has an unknown value %d; use TALK_OR_LETTER_INQUIRY, "
             "NO_FURTHER_ACTION or SHELVED",
             facts->disposal);
  else if (bit == CLUE_FIELD_OUTCOME && facts->persons_disciplined < 0 &&
           !validate_is_blank(facts->sanction_kind))
    snprintf(err->message, sizeof(err->message),
             "details.persons_disciplined must not be negative");
  else
    snprintf(err->message, sizeof(err->message), "%s is required %s", field, when);
  return CLUE_FSM_EINVAL;
}

void clue_deadline_config_default(clue_deadline_config_t *cfg) {
  cfg->accepted_days = CLUE_DEADLINE_ACCEPTED_DAYS;
  cfg->preliminary_check_days = CLUE_DEADLINE_PRELIMINARY_CHECK_DAYS;
  cfg->filed_days = CLUE_DEADLINE_FILED_DAYS;
}

int clue_stage_deadline_days(const clue_deadline_config_t *cfg, clue_state_t state) {
  clue_deadline_config_t def;
  if (cfg == NULL) {
    clue_deadline_config_default(&def);
    cfg = &def;
  }
  int days;
  switch (state) {
  case CLUE_STATE_ACCEPTED:
    days = cfg->accepted_days;
    break;
  case CLUE_STATE_PRELIMINARY_CHECK:
    days = cfg->preliminary_check_days;
    break;
  case CLUE_STATE_FILED:
    days = cfg->filed_days;
    break;
  default:
    days = 0;
    break;
  }
  return days > 0 ? days : 0;
}

int64_t clue_stage_deadline_ms(const clue_deadline_config_t *cfg, clue_state_t state,
                               int64_t entered_at_ms) {
  int days = clue_stage_deadline_days(cfg, state);
  if (days == 0)
    return 0;
  int64_t deadline;
  if (__builtin_add_overflow(entered_at_ms, (int64_t)days * CLUE_DAY_MS, &deadline))
    return INT64_MAX;
  return deadline;
}

void clue_deadline_status(int64_t deadline_ms, int64_t now_ms, int32_t *days_left, bool *overdue) {
  if (deadline_ms == 0) {
    *days_left = 0;
    *overdue = false;
    return;
  }
  /* Floor division keeps days_left < 0 exactly when overdue. Times come from the wire, so
   * an absurd pair saturates instead of overflowing. */
  int64_t diff;
  if (__builtin_sub_overflow(deadline_ms, now_ms, &diff))
    diff = deadline_ms > now_ms ? INT64_MAX : INT64_MIN;
  int64_t days = diff / CLUE_DAY_MS;
  if (diff % CLUE_DAY_MS != 0 && diff < 0)
    days--;
  if (days > INT32_MAX)
    days = INT32_MAX;
  if (days < INT32_MIN)
    days = INT32_MIN;
  *days_left = (int32_t)days;
  *overdue = diff < 0;
}
