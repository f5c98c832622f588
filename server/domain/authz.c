#include "domain/authz.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char MSG_CLUE_NOT_FOUND[] = "clue not found";
static const char MSG_CASE_NOT_FOUND[] = "joint case not found";
static const char MSG_PROPOSAL_NOT_FOUND[] = "proposal not found";
static const char MSG_READ_ONLY[] = "auditors have read-only access";

__attribute__((format(printf, 3, 4))) static authz_result_t
decide(authz_decision_t d, const char *reason, const char *fmt, ...) {
  authz_result_t r;
  r.decision = d;
  r.grpc_code = (int)d;
  r.reason = reason;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r.message, sizeof(r.message), fmt, ap);
  va_end(ap);
  return r;
}

static authz_result_t allow(const char *reason) {
  return decide(AUTHZ_ALLOW, reason, "%s", "");
}

/* Unit id 0 means "none" in every fact, so it never matches. */
static bool same_unit(int64_t a, int64_t b) {
  return a > 0 && a == b;
}

static bool is_work_unit(clue_unit_kind_t k) {
  return k == CLUE_UNIT_GROUP || k == CLUE_UNIT_ROOM || k == CLUE_UNIT_REGION;
}

/* A MEMBER or LEADER of a unit that works on clues: the only principals who see clues
 * through their unit. Anything else (ADMIN unit, unknown kind or role) gets nothing. */
static bool is_staff(const authz_principal_t *p) {
  return (p->role == CLUE_ROLE_MEMBER || p->role == CLUE_ROLE_LEADER) && is_work_unit(p->unit_kind);
}

static bool is_leader_of(const authz_principal_t *p, int64_t unit_id) {
  return is_staff(p) && p->role == CLUE_ROLE_LEADER && same_unit(p->unit_id, unit_id);
}

/* Why p may not see c, or NULL if p may. */
static const char *hidden(const authz_principal_t *p, const authz_clue_t *c) {
  if (p == NULL || c == NULL)
    return "no facts";
  if (p->role == CLUE_ROLE_AUDITOR)
    return NULL;
  if (p->role == CLUE_ROLE_ADMIN)
    return "administrators never see clues";
  if (!is_staff(p))
    return "role or unit kind sees no clues";
  /* A conflict of interest outweighs every other reason to see the clue. */
  if (c->principal_recused)
    return "recused from the clue";
  if (c->principal_is_handler)
    return NULL;
  if (same_unit(p->unit_id, c->owner_unit_id))
    return NULL;
  if (same_unit(p->unit_id, c->case_lead_unit_id))
    return NULL;
  if (c->case_lead_unit_id > 0 && c->principal_in_case)
    return NULL;
  if (p->unit_kind == CLUE_UNIT_ROOM && c->owner_unit_kind == CLUE_UNIT_GROUP &&
      same_unit(p->unit_id, c->owner_liaison_room_id))
    return NULL;
  if (same_unit(p->unit_id, c->pending_reviewer_unit_id))
    return NULL;
  return "clue of an unrelated unit";
}

static const char REASON_LEADERS_RECUSED[] = "every leader recused";

/* The refusal when every leader of the owner unit is recused: not a permission the caller
 * lacks but a state nobody in the unit can get past. It is told where the permission would
 * be (authz_refused_permission). */
static authz_result_t leaders_recused(const char *what) {
  return decide(AUTHZ_FAILED_PRECONDITION, REASON_LEADERS_RECUSED,
                "every LEADER of the owner unit is recused from this clue, so nobody there may "
                "%s; an ADMIN must add a LEADER without a conflict to the unit",
                what);
}

/* Whether the clue's state lets its owner hand it over (authz_can_handover()). */
static bool handover_state(const authz_clue_t *c) {
  return c->state == CLUE_STATE_ACCEPTED || c->state == CLUE_STATE_PRELIMINARY_CHECK;
}

/* The refusal for a change a pending proposal blocks; when every leader of the reviewing unit
 * is recused, nobody can review it, and the refusal says so and names the ways out there are
 * in the clue's state: the handover (which withdraws the proposal) only where it is allowed. */
static authz_result_t pending_refusal(const authz_clue_t *c) {
  if (c->reviewer_leaders_recused && handover_state(c))
    return decide(AUTHZ_FAILED_PRECONDITION, "every reviewer leader recused",
                  "clue has a pending proposal, but every LEADER of the reviewing unit is "
                  "recused from this clue, so nobody can review it; hand the clue over (which "
                  "withdraws the proposal) or have an ADMIN add a LEADER without a conflict to "
                  "that unit");
  if (c->reviewer_leaders_recused)
    return decide(AUTHZ_FAILED_PRECONDITION, "every reviewer leader recused",
                  "clue has a pending proposal, but every LEADER of the reviewing unit is "
                  "recused from this clue, so nobody can review it; an ADMIN must add a LEADER "
                  "without a conflict to that unit");
  return decide(AUTHZ_FAILED_PRECONDITION, "proposal pending",
                "clue has a pending proposal; it must be reviewed first");
}

/* The refusal for a visible clue that p may not change. */
static authz_result_t not_owner_leader(const authz_principal_t *p, const authz_clue_t *c,
                                       const char *what) {
  if (p->role == CLUE_ROLE_AUDITOR)
    return decide(AUTHZ_DENIED, "auditor is read-only", "%s", MSG_READ_ONLY);
  if (is_staff(p) && same_unit(p->unit_id, c->owner_unit_id) && c->owner_leaders_recused)
    return leaders_recused(what);
  return decide(AUTHZ_DENIED, "not a leader of the owner unit",
                "only a LEADER of the owner unit may %s", what);
}

bool authz_refused_permission(const authz_result_t *r) {
  return r->decision == AUTHZ_DENIED || r->reason == REASON_LEADERS_RECUSED;
}

unsigned authz_clue_scope(const authz_principal_t *p) {
  if (p == NULL)
    return AUTHZ_SCOPE_NONE;
  if (p->role == CLUE_ROLE_AUDITOR)
    return AUTHZ_SCOPE_ALL;
  if (!is_staff(p) || p->unit_id <= 0)
    return AUTHZ_SCOPE_NONE;
  unsigned scope = AUTHZ_SCOPE_OWN_UNIT | AUTHZ_SCOPE_JOINT_CASES | AUTHZ_SCOPE_PENDING_REVIEWS |
                   AUTHZ_SCOPE_HANDLED | AUTHZ_SCOPE_UNRECUSED;
  if (p->unit_kind == CLUE_UNIT_ROOM)
    scope |= AUTHZ_SCOPE_LIAISON_GROUPS;
  return scope;
}

authz_result_t authz_can_see_clue(const authz_principal_t *p, const authz_clue_t *c) {
  const char *why = hidden(p, c);
  if (why != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CLUE_NOT_FOUND);
  return allow("visible");
}

authz_result_t authz_can_see_reporter(const authz_principal_t *p, const authz_clue_t *c) {
  if (p == NULL || c == NULL || !is_leader_of(p, c->owner_unit_id))
    return decide(AUTHZ_DENIED, "reporter shown only to leaders of the owner unit",
                  "only a LEADER of the owner unit may see the reporter");
  return allow("leader of the owner unit");
}

authz_result_t authz_token_can_see_reporter(bool enrollment_token) {
  if (enrollment_token)
    return decide(AUTHZ_DENIED, "enrollment token",
                  "an enrollment token cannot read the reporter: issue yourself a personal token "
                  "(TokenService.IssueMyToken)");
  return allow("personal token");
}

authz_result_t authz_can_submit(const authz_principal_t *p) {
  if (p == NULL)
    return decide(AUTHZ_DENIED, "no facts",
                  "only members of a GROUP, ROOM or REGION may submit clues");
  if (p->role == CLUE_ROLE_AUDITOR)
    return decide(AUTHZ_DENIED, "auditor is read-only", "%s", MSG_READ_ONLY);
  if (p->role == CLUE_ROLE_ADMIN)
    return decide(AUTHZ_DENIED, "administrators never edit clues",
                  "administrators may not submit clues");
  if (!is_staff(p) || p->unit_id <= 0)
    return decide(AUTHZ_DENIED, "role or unit kind may not submit",
                  "only members of a GROUP, ROOM or REGION may submit clues");
  return allow("member of a working unit");
}

/* Whether some row of the table lets this role act; keeps the actor role in the table
 * rather than in code, while still refusing outsiders before revealing the clue's state. */
static bool role_acts(clue_role_t role) {
  for (size_t i = 0; i < clue_fsm_table_len; i++)
    if (clue_fsm_table[i].actor_role == role)
      return true;
  return false;
}

authz_result_t authz_can_move(const authz_principal_t *p, const authz_clue_t *c,
                              clue_state_t target, const clue_move_t **move) {
  if (!clue_state_is_valid(target)) {
    if (target == CLUE_STATE_UNSPECIFIED)
      return decide(AUTHZ_INVALID_ARGUMENT, "no target", "target is required");
    return decide(AUTHZ_INVALID_ARGUMENT, "unknown target", "target has an unknown value %d",
                  (int)target);
  }
  const char *why = hidden(p, c);
  if (why != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CLUE_NOT_FOUND);
  if (!is_staff(p) || !same_unit(p->unit_id, c->owner_unit_id) || !role_acts(p->role))
    return not_owner_leader(p, c, "move this clue");

  const clue_move_t *row = clue_fsm_find(c->state, target);
  if (row == NULL) {
    authz_result_t r = decide(AUTHZ_FAILED_PRECONDITION, "move not in the state machine", "%s", "");
    (void)clue_fsm_refusal(c->state, target, r.message, sizeof(r.message));
    return r;
  }
  if (row->actor_role != p->role)
    return not_owner_leader(p, c, "make this move");
  if (c->pending_reviewer_unit_id > 0)
    return pending_refusal(c);
  if (move != NULL)
    *move = row;
  return allow(row->co_review ? "move needs co-review" : "move allowed");
}

const clue_move_t *authz_move_unread(const authz_principal_t *p, clue_state_t target,
                                     const clue_move_facts_t *fields) {
  const clue_move_t *found = NULL;

  if (p == NULL || !clue_state_is_valid(target) || !is_staff(p) || p->unit_id <= 0 ||
      !role_acts(p->role))
    return NULL;
  for (size_t i = 0; i < clue_fsm_table_len; i++) {
    const clue_move_t *m = &clue_fsm_table[i];
    if (m->to != target || m->actor_role != p->role || m->co_review ||
        clue_fsm_check_fields(m, fields, NULL) != CLUE_FSM_OK)
      continue;
    if (found != NULL)
      return NULL; /* two moves fit: only the clue's state tells which */
    found = m;
  }
  return found;
}

authz_result_t authz_reviewer_unit(const authz_clue_t *c, int64_t named_unit_id,
                                   clue_unit_kind_t named_kind, int64_t *reviewer_unit_id) {
  if (c == NULL)
    return decide(AUTHZ_NOT_FOUND, "no facts", "%s", MSG_CLUE_NOT_FOUND);
  /* A case led by the owner room does not make it its own reviewer: the review then goes
   * where it would outside the case. */
  if (c->case_lead_unit_id > 0 && c->case_lead_unit_id != c->owner_unit_id) {
    if (named_unit_id != 0 && named_unit_id != c->case_lead_unit_id)
      return decide(AUTHZ_INVALID_ARGUMENT, "named reviewer not the case's lead",
                    "details.reviewer_unit_id names unit %lld, but the clue's joint case's lead "
                    "unit %lld reviews its proposals: name that unit or none",
                    (long long)named_unit_id, (long long)c->case_lead_unit_id);
    *reviewer_unit_id = c->case_lead_unit_id;
    return allow("lead unit of the joint case");
  }
  if (c->owner_unit_kind == CLUE_UNIT_GROUP) {
    if (c->owner_liaison_room_id <= 0)
      return decide(AUTHZ_FAILED_PRECONDITION, "group without liaison room",
                    "the owner group has no liaison room to review the proposal");
    if (named_unit_id != 0 && named_unit_id != c->owner_liaison_room_id)
      return decide(AUTHZ_INVALID_ARGUMENT, "named reviewer not the liaison room",
                    "details.reviewer_unit_id names unit %lld, but the owner group's liaison "
                    "room %lld reviews its proposals: name that unit or none",
                    (long long)named_unit_id, (long long)c->owner_liaison_room_id);
    *reviewer_unit_id = c->owner_liaison_room_id;
    return allow("liaison room of the owner group");
  }
  if (c->owner_unit_kind != CLUE_UNIT_ROOM && c->owner_unit_kind != CLUE_UNIT_REGION)
    return decide(AUTHZ_FAILED_PRECONDITION, "owner kind has no reviewer",
                  "the clue has no unit to review the proposal");
  if (named_unit_id == 0)
    return decide(AUTHZ_INVALID_ARGUMENT, "no reviewer named",
                  "details.reviewer_unit_id is required: a %s's own clue is reviewed by another "
                  "ROOM named on the proposal",
                  clue_unit_kind_name(c->owner_unit_kind));
  if (named_unit_id < 0 || named_kind != CLUE_UNIT_ROOM)
    return decide(AUTHZ_INVALID_ARGUMENT, "named reviewer not a room",
                  "details.reviewer_unit_id must name a ROOM");
  if (named_unit_id == c->owner_unit_id)
    return decide(AUTHZ_INVALID_ARGUMENT, "named reviewer is the owner",
                  "details.reviewer_unit_id must name a ROOM other than the owner");
  *reviewer_unit_id = named_unit_id;
  return allow("room named on the proposal");
}

authz_result_t authz_can_review(const authz_principal_t *p, const authz_clue_t *c,
                                const authz_proposal_t *prop) {
  if (p == NULL || c == NULL || prop == NULL)
    return decide(AUTHZ_NOT_FOUND, "no facts", "%s", MSG_PROPOSAL_NOT_FOUND);
  /* The reviewing unit sees the proposal even once decided, so it gets the true answer
   * ("already decided") rather than NOT_FOUND. */
  bool reviewer_unit = is_staff(p) && same_unit(p->unit_id, prop->reviewer_unit_id);
  const char *why = hidden(p, c);
  if (is_staff(p) && c->principal_recused)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_PROPOSAL_NOT_FOUND);
  if (why != NULL && !reviewer_unit)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_PROPOSAL_NOT_FOUND);
  if (p->role == CLUE_ROLE_AUDITOR)
    return decide(AUTHZ_DENIED, "auditor is read-only", "%s", MSG_READ_ONLY);
  if (!is_leader_of(p, prop->reviewer_unit_id)) {
    if (reviewer_unit && prop->pending && c->reviewer_leaders_recused &&
        same_unit(c->pending_reviewer_unit_id, prop->reviewer_unit_id))
      return decide(AUTHZ_FAILED_PRECONDITION, "every reviewer leader recused",
                    "every LEADER of the reviewing unit is recused from this clue, so nobody "
                    "there may review this proposal; an ADMIN must add a LEADER without a "
                    "conflict to the unit%s",
                    handover_state(c) ? ", or the owner hand the clue over" : "");
    return decide(AUTHZ_DENIED, "not a leader of the reviewing unit",
                  "only a LEADER of the reviewing unit may review this proposal");
  }
  /* An unknown user (id 0) could be anyone, the proposer included. */
  if (p->user_id <= 0 || p->user_id == prop->proposer_user_id)
    return decide(AUTHZ_DENIED, "self-review", "nobody may review their own proposal");
  /* Co-review is independent: the owner unit and the proposer's unit never review, even if a
   * proposal names one of them as reviewer (one made before this rule, say). */
  if (same_unit(p->unit_id, c->owner_unit_id) || same_unit(p->unit_id, prop->proposer_unit_id))
    return decide(AUTHZ_DENIED, "owner or proposer unit",
                  "the owner unit and the proposer's unit may not review the proposal");
  if (!prop->pending)
    return decide(AUTHZ_FAILED_PRECONDITION, "proposal decided", "proposal was already decided");
  return allow("leader of the reviewing unit");
}

authz_result_t authz_can_add_note(const authz_principal_t *p, const authz_clue_t *c) {
  const char *why = hidden(p, c);
  if (why != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CLUE_NOT_FOUND);
  if (!is_staff(p))
    return decide(AUTHZ_DENIED, "auditor is read-only", "%s", MSG_READ_ONLY);
  return allow("sees the clue");
}

authz_result_t authz_can_handover(const authz_principal_t *p, const authz_clue_t *c,
                                  int64_t to_unit_id, clue_unit_kind_t to_kind) {
  if (to_unit_id == 0)
    return decide(AUTHZ_INVALID_ARGUMENT, "no target unit", "to_unit_id is required");
  if (to_unit_id < 0)
    return decide(AUTHZ_INVALID_ARGUMENT, "bad target unit", "to_unit_id must be positive");
  const char *why = hidden(p, c);
  if (why != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CLUE_NOT_FOUND);
  if (!is_leader_of(p, c->owner_unit_id))
    return not_owner_leader(p, c, "hand this clue over");
  if (!handover_state(c))
    return decide(AUTHZ_FAILED_PRECONDITION, "state does not allow handover",
                  "clue is %s; only ACCEPTED or PRELIMINARY_CHECK clues can be handed over",
                  clue_state_name(c->state));
  if (to_kind == CLUE_UNIT_UNSPECIFIED)
    return decide(AUTHZ_NOT_FOUND, "target unit missing", "to_unit_id: unit %lld not found",
                  (long long)to_unit_id);
  if (!is_work_unit(to_kind))
    return decide(AUTHZ_INVALID_ARGUMENT, "target unit kind",
                  "to_unit_id must name a GROUP, ROOM or REGION");
  if (to_unit_id == c->owner_unit_id)
    return decide(AUTHZ_INVALID_ARGUMENT, "target is the owner",
                  "to_unit_id is already the owner of the clue");
  return allow("leader of the owner unit");
}

authz_result_t authz_can_extend_deadline(const authz_principal_t *p, const authz_clue_t *c) {
  const char *why = hidden(p, c);
  if (why != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CLUE_NOT_FOUND);
  if (!is_leader_of(p, c->owner_unit_id))
    return not_owner_leader(p, c, "extend this clue's deadline");
  if (clue_state_is_terminal(c->state))
    return decide(AUTHZ_FAILED_PRECONDITION, "terminal state",
                  "clue is %s, a terminal state; it has no deadline to extend",
                  clue_state_name(c->state));
  if (!clue_state_is_valid(c->state))
    return decide(AUTHZ_FAILED_PRECONDITION, "no state", "clue has no stage deadline to extend");
  if (c->deadline_extended)
    return decide(AUTHZ_FAILED_PRECONDITION, "already extended",
                  "the deadline of the current stage was already extended once");
  return allow("leader of the owner unit");
}

authz_result_t authz_can_create_case(const authz_principal_t *p) {
  if (p != NULL && p->role == CLUE_ROLE_AUDITOR)
    return decide(AUTHZ_DENIED, "auditor is read-only", "%s", MSG_READ_ONLY);
  if (p == NULL || p->role != CLUE_ROLE_LEADER || p->unit_kind != CLUE_UNIT_ROOM || p->unit_id <= 0)
    return decide(AUTHZ_DENIED, "not a room leader",
                  "only a LEADER of a ROOM may open a joint case");
  return allow("room leader");
}

static const char *case_hidden(const authz_principal_t *p, const authz_case_t *jc) {
  if (p == NULL || jc == NULL)
    return "no facts";
  if (p->role == CLUE_ROLE_AUDITOR)
    return NULL;
  if (p->role == CLUE_ROLE_ADMIN)
    return "administrators never see clues";
  if (!is_staff(p))
    return "role or unit kind sees no cases";
  if (same_unit(p->unit_id, jc->lead_unit_id) || jc->principal_in_case)
    return NULL;
  return "case of unrelated units";
}

authz_result_t authz_can_see_case(const authz_principal_t *p, const authz_case_t *jc) {
  const char *why = case_hidden(p, jc);
  if (why != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CASE_NOT_FOUND);
  return allow("lead, participant or auditor");
}

authz_result_t authz_can_manage_case(const authz_principal_t *p, const authz_case_t *jc) {
  const char *why = case_hidden(p, jc);
  if (why != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CASE_NOT_FOUND);
  if (p->role == CLUE_ROLE_AUDITOR)
    return decide(AUTHZ_DENIED, "auditor is read-only", "%s", MSG_READ_ONLY);
  if (!is_leader_of(p, jc->lead_unit_id))
    return decide(AUTHZ_DENIED, "not a leader of the lead room",
                  "only a LEADER of the lead room may change this joint case");
  return allow("leader of the lead room");
}

/* May p vouch for the clue joining a case led by lead_unit_id? A LEADER of its owner unit, or
 * of the lead room when that room sees the clue as its owner or as the owner group's liaison
 * room; never through sight lent by a joint case or a pending review (consent, DESIGN.md §3). */
static bool may_bring_clue(const authz_principal_t *p, const authz_clue_t *c, int64_t lead_unit_id) {
  if (is_leader_of(p, c->owner_unit_id))
    return true;
  return is_leader_of(p, lead_unit_id) && p->unit_kind == CLUE_UNIT_ROOM &&
         c->owner_unit_kind == CLUE_UNIT_GROUP && same_unit(lead_unit_id, c->owner_liaison_room_id);
}

authz_result_t authz_can_add_clue_to_case(const authz_principal_t *p, const authz_case_t *jc,
                                          const authz_clue_t *c) {
  const char *why = case_hidden(p, jc);
  if (why != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CASE_NOT_FOUND);
  if ((why = hidden(p, c)) != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CLUE_NOT_FOUND);
  if (p->role == CLUE_ROLE_AUDITOR)
    return decide(AUTHZ_DENIED, "auditor is read-only", "%s", MSG_READ_ONLY);
  if (!may_bring_clue(p, c, jc->lead_unit_id))
    return decide(AUTHZ_DENIED, "no consent of the owner",
                  "only a LEADER of the clue's owner unit, or of the lead room when it owns the "
                  "clue or is the owner group's liaison room, may put the clue into a joint case");
  if (c->case_lead_unit_id > 0)
    return decide(AUTHZ_FAILED_PRECONDITION, "already in a case",
                  "clue is already in a joint case");
  if (clue_state_is_terminal(c->state))
    return decide(AUTHZ_FAILED_PRECONDITION, "terminal state",
                  "clue is %s, a terminal state; it cannot join a joint case",
                  clue_state_name(c->state));
  if (c->pending_reviewer_unit_id > 0)
    return pending_refusal(c);
  return allow(is_leader_of(p, c->owner_unit_id) ? "leader of the owner unit"
                                                 : "lead room liaises with the owner group");
}

authz_result_t authz_can_remove_clue_from_case(const authz_principal_t *p, const authz_case_t *jc,
                                               const authz_clue_t *c, bool in_this_case) {
  /* The owner's leader knows the case from its own clue, whether or not its unit takes part:
   * it may take the clue back. Everyone else must see the case first. */
  bool owner_leader = hidden(p, c) == NULL && is_leader_of(p, c->owner_unit_id);
  const char *why;

  if (!(owner_leader && in_this_case) && (why = case_hidden(p, jc)) != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CASE_NOT_FOUND);
  if ((why = hidden(p, c)) != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CLUE_NOT_FOUND);
  if (p->role == CLUE_ROLE_AUDITOR)
    return decide(AUTHZ_DENIED, "auditor is read-only", "%s", MSG_READ_ONLY);
  if (!owner_leader && !is_leader_of(p, jc->lead_unit_id))
    return decide(AUTHZ_DENIED, "neither owner nor lead",
                  "only a LEADER of the clue's owner unit or of the lead room may take the clue "
                  "out of the joint case");
  if (!in_this_case)
    return decide(AUTHZ_FAILED_PRECONDITION, "not in this case", "clue is not in this joint case");
  if (clue_state_is_terminal(c->state))
    return decide(AUTHZ_FAILED_PRECONDITION, "terminal state",
                  "clue is %s, a terminal state; it stays in its joint case",
                  clue_state_name(c->state));
  if (c->pending_reviewer_unit_id > 0)
    return pending_refusal(c);
  return allow(owner_leader ? "leader of the owner unit" : "leader of the lead room");
}

authz_result_t authz_case_participant_ok(const authz_case_t *jc, const char *field, int64_t unit_id,
                                         clue_unit_kind_t kind) {
  if (unit_id == 0)
    return decide(AUTHZ_INVALID_ARGUMENT, "no unit", "%s is required", field);
  if (unit_id > 0 && kind == CLUE_UNIT_UNSPECIFIED)
    return decide(AUTHZ_NOT_FOUND, "participant unit missing", "%s: unit %lld not found", field,
                  (long long)unit_id);
  if (unit_id < 0 || !is_work_unit(kind))
    return decide(AUTHZ_INVALID_ARGUMENT, "participant kind",
                  "%s must name a GROUP, ROOM or REGION", field);
  if (jc != NULL && unit_id == jc->lead_unit_id)
    return decide(AUTHZ_INVALID_ARGUMENT, "participant is the lead",
                  "%s names the lead room of the joint case", field);
  return allow("participant");
}

/* May p manage the clue's handlers? A LEADER of the owner unit, or of the lead room of its
 * joint case. */
static bool may_assign(const authz_principal_t *p, const authz_clue_t *c) {
  return is_leader_of(p, c->owner_unit_id) ||
         (c->case_lead_unit_id > 0 && is_leader_of(p, c->case_lead_unit_id));
}

/* The checks AssignHandler and UnassignHandler share: the user id, visibility, permission. */
static bool handler_call_refused(const authz_principal_t *p, const authz_clue_t *c,
                                 const authz_user_t *u, authz_result_t *out) {
  const char *why;

  if (u == NULL || u->user_id == 0) {
    *out = decide(AUTHZ_INVALID_ARGUMENT, "no user", "user_id is required");
    return true;
  }
  if (u->user_id < 0) {
    *out = decide(AUTHZ_INVALID_ARGUMENT, "bad user", "user_id must be positive");
    return true;
  }
  if ((why = hidden(p, c)) != NULL) {
    *out = decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CLUE_NOT_FOUND);
    return true;
  }
  if (p->role == CLUE_ROLE_AUDITOR) {
    *out = decide(AUTHZ_DENIED, "auditor is read-only", "%s", MSG_READ_ONLY);
    return true;
  }
  if (!may_assign(p, c)) {
    if (is_staff(p) && same_unit(p->unit_id, c->owner_unit_id) && c->owner_leaders_recused)
      *out = leaders_recused("assign or unassign handlers");
    else
      *out = decide(AUTHZ_DENIED, "not a leader of the owner or lead unit",
                    "only a LEADER of the owner unit, or of the lead room of the clue's joint "
                    "case, may assign or unassign handlers");
    return true;
  }
  return false;
}

static authz_result_t user_not_found(const authz_user_t *u) {
  return decide(AUTHZ_NOT_FOUND, "user missing", "user_id: user %lld not found",
                (long long)u->user_id);
}

/* Is u someone who works on clues: an active MEMBER or LEADER of a working unit? */
static bool user_is_staff(const authz_user_t *u) {
  return u->active && (u->role == CLUE_ROLE_MEMBER || u->role == CLUE_ROLE_LEADER) &&
         is_work_unit(u->unit_kind) && u->unit_id > 0;
}

authz_result_t authz_can_assign(const authz_principal_t *p, const authz_clue_t *c,
                                const authz_user_t *u) {
  authz_result_t r;

  if (handler_call_refused(p, c, u, &r))
    return r;
  if (clue_state_is_terminal(c->state))
    return decide(AUTHZ_FAILED_PRECONDITION, "terminal state",
                  "clue is %s, a terminal state; it takes no new handlers",
                  clue_state_name(c->state));
  if (!u->exists)
    return user_not_found(u);
  if (!user_is_staff(u))
    return decide(AUTHZ_INVALID_ARGUMENT, "user does not work on clues",
                  "user_id must name an active MEMBER or LEADER of a GROUP, ROOM or REGION");
  if (u->recused)
    return decide(AUTHZ_FAILED_PRECONDITION, "user recused",
                  "user %lld is recused from this clue and cannot be assigned to it",
                  (long long)u->user_id);
  if (u->handler)
    return decide(AUTHZ_FAILED_PRECONDITION, "already a handler",
                  "user %lld is already a handler of this clue", (long long)u->user_id);
  return allow(is_leader_of(p, c->owner_unit_id) ? "leader of the owner unit"
                                                 : "leader of the lead room");
}

authz_result_t authz_can_unassign(const authz_principal_t *p, const authz_clue_t *c,
                                  const authz_user_t *u) {
  authz_result_t r;

  if (handler_call_refused(p, c, u, &r))
    return r;
  if (!u->exists)
    return user_not_found(u);
  if (!u->handler)
    return decide(AUTHZ_FAILED_PRECONDITION, "not a handler",
                  "user %lld is not a handler of this clue", (long long)u->user_id);
  return allow(is_leader_of(p, c->owner_unit_id) ? "leader of the owner unit"
                                                 : "leader of the lead room");
}

/* Does the unit oversee the clue on someone else's behalf: the owner group's liaison room,
 * the lead room of its joint case, the reviewer of its pending proposal? A recusal hides the
 * clue from the recused user, so the unit overseen may not record one for its overseers' staff:
 * it would shut them out of the clue, and out of reviewing it. Their own leader may. */
static bool oversees(const authz_clue_t *c, int64_t unit_id) {
  return !same_unit(unit_id, c->owner_unit_id) && (same_unit(unit_id, c->owner_liaison_room_id) ||
                                                   same_unit(unit_id, c->case_lead_unit_id) ||
                                                   same_unit(unit_id, c->pending_reviewer_unit_id));
}

authz_result_t authz_can_recuse(const authz_principal_t *p, const authz_clue_t *c,
                                const authz_user_t *u) {
  const char *why;

  if (u == NULL || u->user_id == 0)
    return decide(AUTHZ_INVALID_ARGUMENT, "no user", "user_id is required");
  if (u->user_id < 0)
    return decide(AUTHZ_INVALID_ARGUMENT, "bad user", "user_id must be positive");
  if ((why = hidden(p, c)) != NULL)
    return decide(AUTHZ_NOT_FOUND, why, "%s", MSG_CLUE_NOT_FOUND);
  if (p->role == CLUE_ROLE_AUDITOR)
    return decide(AUTHZ_DENIED, "auditor is read-only", "%s", MSG_READ_ONLY);
  bool self = p->user_id > 0 && p->user_id == u->user_id;
  bool leader = p->role == CLUE_ROLE_LEADER &&
                ((u->exists && is_leader_of(p, u->unit_id)) || may_assign(p, c));
  if (!self && !leader)
    return decide(AUTHZ_DENIED, "neither the user nor a leader over it",
                  "only the user themselves, or a LEADER of their unit, of the owner unit or of "
                  "the lead room of the clue's joint case, may record a recusal");
  if (!u->exists)
    return user_not_found(u);
  if (!self && !is_leader_of(p, u->unit_id) && oversees(c, u->unit_id))
    return decide(AUTHZ_DENIED, "the user's unit oversees the clue",
                  "user %lld belongs to a unit that oversees this clue (the owner's liaison room, "
                  "the lead room of its joint case or the reviewer of its pending proposal): only "
                  "the user themselves or a LEADER of their unit may record their recusal",
                  (long long)u->user_id);
  if (!user_is_staff(u))
    return decide(AUTHZ_INVALID_ARGUMENT, "user does not work on clues",
                  "user_id must name an active MEMBER or LEADER of a GROUP, ROOM or REGION");
  if (u->recused)
    return decide(AUTHZ_FAILED_PRECONDITION, "already recused",
                  "user %lld is already recused from this clue", (long long)u->user_id);
  return allow(self ? "declared by the user" : "recorded by a leader");
}

bool authz_sees_unit_assignments(const authz_principal_t *p) {
  return p != NULL && is_staff(p) && p->role == CLUE_ROLE_LEADER && p->unit_id > 0;
}

authz_result_t authz_can_list_recusals(const authz_principal_t *p) {
  if (p != NULL && (p->role == CLUE_ROLE_AUDITOR || (is_staff(p) && p->role == CLUE_ROLE_LEADER)))
    return allow("leader or auditor");
  return decide(AUTHZ_DENIED, "not a leader or auditor",
                "only LEADERs and AUDITORs may list recusals");
}

authz_result_t authz_reviewer_can_act(bool reviewer_leaders_recused) {
  if (reviewer_leaders_recused)
    return decide(AUTHZ_FAILED_PRECONDITION, "every reviewer leader recused",
                  "every LEADER of the reviewing unit is recused from this clue, so nobody could "
                  "review the proposal; an ADMIN must add a LEADER without a conflict to that "
                  "unit first");
  return allow("reviewer can act");
}

authz_result_t authz_can_read_all_audit(const authz_principal_t *p) {
  if (p == NULL || (p->role != CLUE_ROLE_AUDITOR && p->role != CLUE_ROLE_ADMIN))
    return decide(AUTHZ_DENIED, "not auditor or admin",
                  "only AUDITORs and ADMINs may read the whole audit trail");
  return allow("auditor or admin");
}

authz_result_t authz_is_admin(const authz_principal_t *p) {
  if (p == NULL || p->role != CLUE_ROLE_ADMIN)
    return decide(AUTHZ_DENIED, "not admin", "only an ADMIN may do this");
  return allow("admin");
}

authz_result_t authz_role_fits_unit(clue_role_t role, clue_unit_kind_t kind) {
  bool fits;
  switch (role) {
  case CLUE_ROLE_MEMBER:
  case CLUE_ROLE_LEADER:
    fits = is_work_unit(kind);
    break;
  case CLUE_ROLE_ADMIN:
    fits = kind == CLUE_UNIT_ADMIN;
    break;
  case CLUE_ROLE_AUDITOR:
    fits = is_work_unit(kind) || kind == CLUE_UNIT_ADMIN;
    break;
  default:
    if (role == CLUE_ROLE_UNSPECIFIED)
      return decide(AUTHZ_INVALID_ARGUMENT, "no role", "role is required");
    return decide(AUTHZ_INVALID_ARGUMENT, "bad role", "role has an unknown value %d", (int)role);
  }
  if (!fits)
    return decide(AUTHZ_INVALID_ARGUMENT, "role does not fit unit",
                  "role %s does not fit a unit of kind %s", clue_role_name(role),
                  clue_unit_kind_name(kind));
  return allow("role fits unit");
}

authz_result_t authz_liaison_fits(clue_unit_kind_t kind) {
  if (kind != CLUE_UNIT_ROOM)
    return decide(AUTHZ_INVALID_ARGUMENT, "liaison is no room",
                  "liaison_room_id is not an existing ROOM unit");
  return allow("liaison is a room");
}

bool authz_audit_event_whole(const authz_principal_t *p, const char *subject_type,
                             const char *action) {
  if (p == NULL || subject_type == NULL || action == NULL)
    return false;
  /* A recusal's reason and whom it names are for those who may list recusals: the event must
   * not tell a member what ListRecusals refuses it. */
  if (strcmp(action, "clue.recuse") == 0)
    return authz_can_list_recusals(p).decision == AUTHZ_ALLOW;
  switch (p->role) {
  case CLUE_ROLE_AUDITOR:
  case CLUE_ROLE_MEMBER:
  case CLUE_ROLE_LEADER:
    return true;
  case CLUE_ROLE_ADMIN:
    return strcmp(subject_type, "unit") == 0 || strcmp(subject_type, "user") == 0 ||
           strcmp(subject_type, "token") == 0;
  default:
    return false;
  }
}
