#include "domain/rect.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* docs/LEDGER.md, one row per legal move. The short names keep the table readable as a table. */
#define OPEN RECT_STATE_OPEN
#define PLANNED RECT_STATE_PLAN_RECORDED
#define SUBMITTED RECT_STATE_SUBMITTED
#define VERIFIED RECT_STATE_VERIFIED
#define REOPENED RECT_STATE_REOPENED
#define MEMBER CLUE_ROLE_MEMBER
#define LEADER CLUE_ROLE_LEADER
/* clang-format off */
const rect_move_t rect_fsm_table[] = {
  /* from      to         action         actor   must carry */
  {OPEN,       PLANNED,   "record_plan", MEMBER, RECT_FIELD_PLAN},
  {REOPENED,   PLANNED,   "record_plan", MEMBER, RECT_FIELD_PLAN},
  {PLANNED,    SUBMITTED, "submit",      MEMBER, RECT_FIELD_EVIDENCE},
  {SUBMITTED,  VERIFIED,  "verify",      LEADER, 0},
  {SUBMITTED,  REOPENED,  "reopen",      LEADER, RECT_FIELD_REASON},
};
/* clang-format on */
#undef OPEN
#undef PLANNED
#undef SUBMITTED
#undef VERIFIED
#undef REOPENED
#undef MEMBER
#undef LEADER

const size_t rect_fsm_table_len = sizeof(rect_fsm_table) / sizeof(rect_fsm_table[0]);

static const char *const state_names[RECT_STATE_COUNT] = {
    "UNSPECIFIED", "OPEN", "PLAN_RECORDED", "SUBMITTED", "VERIFIED", "REOPENED",
};
static const char *const source_names[] = {"UNSPECIFIED", "CLUE", "CASE", "SUPERVISION"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

const rect_move_t *rect_fsm_find(rect_state_t from, rect_state_t to) {
  for (size_t i = 0; i < rect_fsm_table_len; i++)
    if (rect_fsm_table[i].from == from && rect_fsm_table[i].to == to)
      return &rect_fsm_table[i];
  return NULL;
}

size_t rect_fsm_targets(rect_state_t from, rect_state_t *out, size_t cap) {
  size_t n = 0;

  for (size_t i = 0; i < rect_fsm_table_len; i++) {
    if (rect_fsm_table[i].from != from)
      continue;
    if (n < cap)
      out[n] = rect_fsm_table[i].to;
    n++;
  }
  return n;
}

unsigned rect_fsm_required(rect_state_t target) {
  unsigned req = 0;

  for (size_t i = 0; i < rect_fsm_table_len; i++)
    if (rect_fsm_table[i].to == target)
      req |= rect_fsm_table[i].required;
  return req;
}

bool rect_state_is_terminal(rect_state_t s) {
  return s == RECT_STATE_VERIFIED;
}

bool rect_state_is_valid(int s) {
  return s >= RECT_STATE_OPEN && s <= RECT_STATE_REOPENED;
}

bool rect_source_is_valid(int s) {
  return s >= RECT_SOURCE_CLUE && s <= RECT_SOURCE_SUPERVISION;
}

const char *rect_state_name(rect_state_t s) {
  return (int)s >= 0 && (size_t)s < NELEM(state_names) ? state_names[s] : "UNKNOWN";
}

const char *rect_source_name(rect_source_t s) {
  return (int)s >= 0 && (size_t)s < NELEM(source_names) ? source_names[s] : "UNKNOWN";
}

rect_state_t rect_state_of(const char *name) {
  for (int s = RECT_STATE_OPEN; name != NULL && s < RECT_STATE_COUNT; s++)
    if (strcmp(name, state_names[s]) == 0)
      return (rect_state_t)s;
  return RECT_STATE_UNSPECIFIED;
}

rect_source_t rect_source_of(const char *name) {
  for (int s = RECT_SOURCE_CLUE; name != NULL && (size_t)s < NELEM(source_names); s++)
    if (strcmp(name, source_names[s]) == 0)
      return (rect_source_t)s;
  return RECT_SOURCE_UNSPECIFIED;
}

void rect_fsm_refusal(rect_state_t from, rect_state_t to, char *buf, size_t len) {
  rect_state_t targets[RECT_STATE_COUNT];
  size_t n, pos;
  int w;

  if (buf == NULL || len == 0)
    return;
  if (rect_state_is_terminal(from)) {
    snprintf(buf, len, "rectification item is %s, a terminal state; no moves are allowed",
             rect_state_name(from));
    return;
  }
  n = rect_fsm_targets(from, targets, NELEM(targets));
  w = snprintf(buf, len, "cannot move from %s to %s; allowed from %s: ", rect_state_name(from),
               rect_state_name(to), rect_state_name(from));
  pos = w < 0 ? 0 : (size_t)w;
  for (size_t i = 0; i < n && pos < len; i++) {
    w = snprintf(buf + pos, len - pos, "%s%s", i ? ", " : "", rect_state_name(targets[i]));
    pos += w < 0 ? 0 : (size_t)w;
  }
  if (n == 0 && pos < len)
    snprintf(buf + pos, len - pos, "none");
}

/* ---- authorization ---------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static authz_result_t
decide(authz_decision_t d, const char *reason, const char *fmt, ...) {
  authz_result_t r;
  va_list ap;

  r.decision = d;
  r.grpc_code = (int)d;
  r.reason = reason;
  va_start(ap, fmt);
  vsnprintf(r.message, sizeof(r.message), fmt, ap);
  va_end(ap);
  return r;
}

static authz_result_t allow(const char *reason) {
  return decide(AUTHZ_ALLOW, reason, "%s", "");
}

static bool same_unit(int64_t a, int64_t b) {
  return a > 0 && a == b;
}

static bool is_staff(const authz_principal_t *p) {
  return (p->role == CLUE_ROLE_MEMBER || p->role == CLUE_ROLE_LEADER) &&
         (p->unit_kind == CLUE_UNIT_GROUP || p->unit_kind == CLUE_UNIT_ROOM ||
          p->unit_kind == CLUE_UNIT_REGION);
}

/* Why p may not see the item, or NULL if p may. */
static const char *hidden(const authz_principal_t *p, const rect_item_facts_t *it) {
  if (p == NULL || it == NULL)
    return "no facts";
  if (p->role == CLUE_ROLE_AUDITOR)
    return NULL;
  if (!is_staff(p))
    return "role or unit kind sees no rectification items";
  /* A conflict of interest with the source clue outweighs every other reason to see the item:
   * it carries the clue's id, and the plan and evidence the host unit sent about it. */
  if (it->principal_recused)
    return "recused from the source clue";
  if (same_unit(p->unit_id, it->supervising_unit_id))
    return NULL;
  if (p->unit_kind == CLUE_UNIT_ROOM && same_unit(p->unit_id, it->supervising_liaison_room_id))
    return NULL;
  if (it->principal_in_source_case)
    return NULL;
  return "item of an unrelated unit";
}

authz_result_t rect_can_see(const authz_principal_t *p, const rect_item_facts_t *it) {
  const char *why = hidden(p, it);

  if (why != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", RECT_MSG_NOT_FOUND);
  return allow("sees the item");
}

authz_result_t rect_can_create(const authz_principal_t *p, const rect_source_facts_t *src) {
  if (p == NULL || src == NULL)
    return decide(AUTHZ_DENIED, "no facts", "permission denied");
  if (p->role == CLUE_ROLE_AUDITOR)
    return decide(AUTHZ_DENIED, "auditor is read-only", "auditors have read-only access");
  if (!is_staff(p) || p->role != CLUE_ROLE_LEADER)
    return decide(AUTHZ_DENIED, "not a leader of a working unit",
                  "only a LEADER of a GROUP, ROOM or REGION may record a rectification item");
  switch (src->source) {
  case RECT_SOURCE_CLUE:
    if (!src->exists || !src->visible)
      return decide(AUTHZ_NOT_FOUND, "source clue missing or hidden",
                    "source_clue_id: clue not found");
    if (!src->owned_or_in)
      return decide(AUTHZ_DENIED, "clue of another unit",
                    "source_clue_id: only the unit that owns the clue records items from it");
    return allow("leader of the clue's owner unit");
  case RECT_SOURCE_CASE:
    if (!src->exists || !src->visible || !src->owned_or_in)
      return decide(AUTHZ_NOT_FOUND, "source case missing or not the unit's",
                    "source_case_id: joint case not found");
    return allow("leader of a unit of the case");
  case RECT_SOURCE_SUPERVISION:
    if (p->unit_kind == CLUE_UNIT_GROUP && !src->host_unit_ok)
      return decide(AUTHZ_INVALID_ARGUMENT, "host unit not the group's",
                    "host_unit: a group's own supervision names one of its host units");
    return allow("leader recording its own supervision");
  default:
    return decide(AUTHZ_INVALID_ARGUMENT, "no source",
                  "source must be CLUE, CASE or SUPERVISION");
  }
}

authz_result_t rect_can_move(const authz_principal_t *p, const rect_item_facts_t *it,
                             rect_state_t target, const rect_move_t **move) {
  const rect_move_t *m;
  clue_role_t need = CLUE_ROLE_LEADER;
  authz_result_t r;
  char buf[AUTHZ_MESSAGE_MAX];

  if (!rect_state_is_valid((int)target))
    return decide(AUTHZ_INVALID_ARGUMENT, "bad target", "target is not a state");
  r = rect_can_see(p, it);
  if (!authz_ok(&r))
    return r;
  if (p->role == CLUE_ROLE_AUDITOR)
    return decide(AUTHZ_DENIED, "auditor is read-only", "auditors have read-only access");
  m = rect_fsm_find(it->state, target);
  /* The role a refused move would need: that of any row reaching the target. */
  for (size_t i = 0; i < rect_fsm_table_len; i++)
    if (rect_fsm_table[i].to == target) {
      need = rect_fsm_table[i].actor_role;
      break;
    }
  if (m != NULL)
    need = m->actor_role;
  if (!is_staff(p) || !same_unit(p->unit_id, it->supervising_unit_id) ||
      (need == CLUE_ROLE_LEADER && p->role != CLUE_ROLE_LEADER))
    return decide(AUTHZ_DENIED, "not of the supervising unit",
                  "only a %s of the supervising unit may move the item to %s",
                  need == CLUE_ROLE_LEADER ? "LEADER" : "MEMBER or LEADER", rect_state_name(target));
  if (m == NULL) {
    rect_fsm_refusal(it->state, target, buf, sizeof(buf));
    return decide(AUTHZ_FAILED_PRECONDITION, "move not in the table", "%s", buf);
  }
  if (move != NULL)
    *move = m;
  return allow("move allowed");
}

unsigned rect_scope(const authz_principal_t *p) {
  if (p == NULL)
    return 0;
  if (p->role == CLUE_ROLE_AUDITOR)
    return RECT_SCOPE_ALL;
  if (!is_staff(p) || p->unit_id <= 0)
    return 0;
  return RECT_SCOPE_OWN_UNIT | RECT_SCOPE_SOURCE_CASE | RECT_SCOPE_UNRECUSED |
         (p->unit_kind == CLUE_UNIT_ROOM ? RECT_SCOPE_LIAISED : 0u);
}
