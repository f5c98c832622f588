/* Permission and visibility rules (server/domain/authz.c) against DESIGN.md §2, §3, §4.
 *
 * The core is a matrix: every role (MEMBER, LEADER, AUDITOR, ADMIN) in a unit standing in
 * every relation to a clue (its own unit, the owner group's liaison room, the joint case's
 * lead room, a participant group/room/region, the room named to review, an unrelated room,
 * group, region, an ADMIN unit), for clues owned by a GROUP, ROOM or REGION, in or out of a
 * joint case, in every state, with and without a pending proposal and an extended deadline;
 * each combination asked every question. The expected answers come from the tables below,
 * written out from the design, not from the code under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "domain/authz.h"
#include "net/grpc_status.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Roles, as column indexes of the tables. */
enum { M, L, AU, AD, NROLES };
static const clue_role_t ROLE[NROLES] = {CLUE_ROLE_MEMBER, CLUE_ROLE_LEADER, CLUE_ROLE_AUDITOR,
                                         CLUE_ROLE_ADMIN};

/* The units of the test world. */
enum {
  U_LIAISON = 1, /* ROOM, liaison room of the owner GROUP */
  U_LEAD = 2,    /* ROOM, leads the joint case */
  U_NAMED = 3,   /* ROOM, named to review a ROOM's or REGION's own clue */
  U_OTHER_ROOM = 4,
  U_OWN_ROOM = 5,
  U_PART_ROOM = 6,
  U_OWN_GROUP = 11,
  U_PART_GROUP = 12,
  U_OTHER_GROUP = 13,
  U_OWN_REGION = 21,
  U_PART_REGION = 22,
  U_OTHER_REGION = 23,
  U_ADMIN = 31,
  PROPOSER = 9999, /* a leader of the owner unit who raised the proposal */
};

/* How the caller's unit relates to the clue. */
typedef enum rel {
  OWN,
  LIAISON,
  CASE_LEAD,
  PART_GROUP,
  PART_ROOM,
  PART_REGION,
  NAMED,
  OTHER_ROOM,
  OTHER_GROUP,
  OTHER_REGION,
  ADMIN_UNIT,
  NREL
} rel_t;

static const char *const REL_NAME[NREL] = {
    "own unit",         "liaison room",       "joint-case lead", "participant group",
    "participant room", "participant region", "named room",      "other room",
    "other group",      "other region",       "admin unit",
};

/* DESIGN.md §4 "sees clues", per relation and role (MEMBER, LEADER, AUDITOR, ADMIN).
 * V: yes. N: no. g: if the owner is a GROUP. c: if the clue is in a joint case.
 * r: while a proposal on it that this unit reviews is pending. */
static const char *const SEES[NREL] = {
    /*              M L AU AD */
    [OWN] = "VVVN",         [LIAISON] = "ggVN",      [CASE_LEAD] = "ccVN",  [PART_GROUP] = "ccVN",
    [PART_ROOM] = "ccVN",   [PART_REGION] = "ccVN",  [NAMED] = "rrVN",      [OTHER_ROOM] = "NNVN",
    [OTHER_GROUP] = "NNVN", [OTHER_REGION] = "NNVN", [ADMIN_UNIT] = "NNVN",
};

/* DESIGN.md §2/§4 "may change": moves, handover, deadline extension. A: yes (state rules
 * then apply). D: no (PERMISSION_DENIED if the clue is visible, NOT_FOUND otherwise). */
static const char *const CHANGES[NREL] = {
    [OWN] = "DADD",         [LIAISON] = "DDDD",      [CASE_LEAD] = "DDDD",  [PART_GROUP] = "DDDD",
    [PART_ROOM] = "DDDD",   [PART_REGION] = "DDDD",  [NAMED] = "DDDD",      [OTHER_ROOM] = "DDDD",
    [OTHER_GROUP] = "DDDD", [OTHER_REGION] = "DDDD", [ADMIN_UNIT] = "DDDD",
};

/* DESIGN.md §4: reporter contact details only to leaders of the owner unit. */
static const char *const REPORTER[NREL] = {
    [OWN] = "DADD",         [LIAISON] = "DDDD",      [CASE_LEAD] = "DDDD",  [PART_GROUP] = "DDDD",
    [PART_ROOM] = "DDDD",   [PART_REGION] = "DDDD",  [NAMED] = "DDDD",      [OTHER_ROOM] = "DDDD",
    [OTHER_GROUP] = "DDDD", [OTHER_REGION] = "DDDD", [ADMIN_UNIT] = "DDDD",
};

/* DESIGN.md §2 "Notes": anyone who sees the clue, but auditors are read-only. */
static const char *const NOTES = "AADD";

/* The legal moves of DESIGN.md §2, written out. */
static bool legal(clue_state_t from, int to) {
  static const int moves[][2] = {{1, 2}, {1, 4}, {2, 3}, {2, 4}, {3, 4}, {3, 5}};
  for (size_t i = 0; i < NELEM(moves); i++)
    if (moves[i][0] == (int)from && moves[i][1] == to)
      return true;
  return false;
}

typedef struct scenario {
  clue_unit_kind_t owner_kind;
  bool in_case;
  clue_state_t state;
  bool pending;
  bool extended;
} scenario_t;

static int64_t owner_unit(clue_unit_kind_t k) {
  return k == CLUE_UNIT_GROUP ? U_OWN_GROUP : k == CLUE_UNIT_ROOM ? U_OWN_ROOM : U_OWN_REGION;
}

/* DESIGN.md §2 "Co-review": the joint case's lead, else the owner group's liaison room,
 * else the room named on the proposal. */
static rel_t reviewer_rel(const scenario_t *sc) {
  if (sc->in_case)
    return CASE_LEAD;
  if (sc->owner_kind == CLUE_UNIT_GROUP)
    return LIAISON;
  return NAMED;
}

static int64_t reviewer_unit(const scenario_t *sc) {
  rel_t r = reviewer_rel(sc);
  return r == CASE_LEAD ? U_LEAD : r == LIAISON ? U_LIAISON : U_NAMED;
}

static bool is_participant(rel_t rel) {
  return rel == PART_GROUP || rel == PART_ROOM || rel == PART_REGION;
}

static authz_principal_t principal_for(const scenario_t *sc, rel_t rel, int role) {
  static const struct {
    int64_t id;
    clue_unit_kind_t kind;
  } unit[NREL] = {
      [LIAISON] = {U_LIAISON, CLUE_UNIT_ROOM},
      [CASE_LEAD] = {U_LEAD, CLUE_UNIT_ROOM},
      [PART_GROUP] = {U_PART_GROUP, CLUE_UNIT_GROUP},
      [PART_ROOM] = {U_PART_ROOM, CLUE_UNIT_ROOM},
      [PART_REGION] = {U_PART_REGION, CLUE_UNIT_REGION},
      [NAMED] = {U_NAMED, CLUE_UNIT_ROOM},
      [OTHER_ROOM] = {U_OTHER_ROOM, CLUE_UNIT_ROOM},
      [OTHER_GROUP] = {U_OTHER_GROUP, CLUE_UNIT_GROUP},
      [OTHER_REGION] = {U_OTHER_REGION, CLUE_UNIT_REGION},
      [ADMIN_UNIT] = {U_ADMIN, CLUE_UNIT_ADMIN},
  };
  authz_principal_t p = {
      .user_id = 1000 + rel * 10 + role,
      .unit_id = unit[rel].id,
      .unit_kind = unit[rel].kind,
      .role = ROLE[role],
  };
  if (rel == OWN) {
    p.unit_id = owner_unit(sc->owner_kind);
    p.unit_kind = sc->owner_kind;
  }
  return p;
}

static authz_clue_t clue_for(const scenario_t *sc, rel_t rel) {
  authz_clue_t c = {
      .owner_unit_id = owner_unit(sc->owner_kind),
      .owner_unit_kind = sc->owner_kind,
      .owner_liaison_room_id = sc->owner_kind == CLUE_UNIT_GROUP ? U_LIAISON : 0,
      .case_lead_unit_id = sc->in_case ? U_LEAD : 0,
      .principal_in_case = sc->in_case && is_participant(rel),
      .pending_reviewer_unit_id = sc->pending ? reviewer_unit(sc) : 0,
      .deadline_extended = sc->extended,
      .state = sc->state,
  };
  return c;
}

static bool sees(const scenario_t *sc, rel_t rel, int role) {
  switch (SEES[rel][role]) {
  case 'V':
    return true;
  case 'g':
    return sc->owner_kind == CLUE_UNIT_GROUP;
  case 'c':
    return sc->in_case;
  case 'r':
    return sc->pending && reviewer_rel(sc) == rel;
  default:
    return false;
  }
}

static const char *decision_name(authz_decision_t d) {
  return grpc_status_name((int)d);
}

static char where_buf[256];

static const char *where(const scenario_t *sc, rel_t rel, int role, const char *question) {
  snprintf(where_buf, sizeof(where_buf), "%s: %s of %s; clue of a %s%s, %s%s%s", question,
           clue_role_name(ROLE[role]), REL_NAME[rel], clue_unit_kind_name(sc->owner_kind),
           sc->in_case ? " in a joint case" : "", clue_state_name(sc->state),
           sc->pending ? ", proposal pending" : "", sc->extended ? ", extended" : "");
  return where_buf;
}

static unsigned long checks;

static void expect(const authz_result_t *got, authz_decision_t want, const char *ctx) {
  checks++;
  if (got->decision != want)
    fail_msg("%s: got %s (%s: \"%s\"), want %s", ctx, decision_name(got->decision), got->reason,
             got->message, decision_name(want));
  assert_int_equal(got->grpc_code, (int)want);
  assert_non_null(got->reason);
  if (want == AUTHZ_ALLOW)
    assert_string_equal(got->message, "");
  else if (got->message[0] == '\0')
    fail_msg("%s: refusal without a message", ctx);
}

/* A hidden clue must answer exactly as a missing one, whatever its state or facts. */
static void expect_hidden(const authz_result_t *got, const char *ctx) {
  expect(got, AUTHZ_NOT_FOUND, ctx);
  assert_string_equal(got->message, "clue not found");
}

static const clue_unit_kind_t OWNER_KINDS[] = {CLUE_UNIT_GROUP, CLUE_UNIT_ROOM, CLUE_UNIT_REGION};

/* Run fn over every scenario, relation and role. */
static void for_each(void (*fn)(const scenario_t *, rel_t, int)) {
  for (size_t k = 0; k < NELEM(OWNER_KINDS); k++)
    for (int in_case = 0; in_case < 2; in_case++)
      for (int s = CLUE_STATE_ACCEPTED; s <= CLUE_STATE_TRANSFERRED_TO_JUDICIAL; s++)
        for (int pending = 0; pending < 2; pending++)
          for (int ext = 0; ext < 2; ext++) {
            scenario_t sc = {OWNER_KINDS[k], in_case, (clue_state_t)s, pending, ext};
            for (int rel = 0; rel < NREL; rel++)
              for (int role = 0; role < NROLES; role++)
                fn(&sc, (rel_t)rel, role);
          }
}

static void check_see(const scenario_t *sc, rel_t rel, int role) {
  authz_principal_t p = principal_for(sc, rel, role);
  authz_clue_t c = clue_for(sc, rel);
  authz_result_t r = authz_can_see_clue(&p, &c);
  const char *ctx = where(sc, rel, role, "see");
  if (sees(sc, rel, role))
    expect(&r, AUTHZ_ALLOW, ctx);
  else
    expect_hidden(&r, ctx);

  /* The list scope describes the same set of clues. */
  unsigned scope = authz_clue_scope(&p);
  bool in_scope =
      (scope & AUTHZ_SCOPE_ALL) ||
      ((scope & AUTHZ_SCOPE_OWN_UNIT) && c.owner_unit_id == p.unit_id) ||
      ((scope & AUTHZ_SCOPE_LIAISON_GROUPS) && c.owner_unit_kind == CLUE_UNIT_GROUP &&
       c.owner_liaison_room_id == p.unit_id) ||
      ((scope & AUTHZ_SCOPE_JOINT_CASES) && c.case_lead_unit_id != 0 &&
       (c.case_lead_unit_id == p.unit_id || c.principal_in_case)) ||
      ((scope & AUTHZ_SCOPE_PENDING_REVIEWS) && c.pending_reviewer_unit_id == p.unit_id);
  if (in_scope != sees(sc, rel, role))
    fail_msg("%s: scope 0x%x disagrees", ctx, scope);
}

static void check_reporter(const scenario_t *sc, rel_t rel, int role) {
  authz_principal_t p = principal_for(sc, rel, role);
  authz_clue_t c = clue_for(sc, rel);
  authz_result_t r = authz_can_see_reporter(&p, &c);
  expect(&r, REPORTER[rel][role] == 'A' ? AUTHZ_ALLOW : AUTHZ_DENIED,
         where(sc, rel, role, "reporter"));
}

static void check_note(const scenario_t *sc, rel_t rel, int role) {
  authz_principal_t p = principal_for(sc, rel, role);
  authz_clue_t c = clue_for(sc, rel);
  authz_result_t r = authz_can_add_note(&p, &c);
  const char *ctx = where(sc, rel, role, "note");
  if (!sees(sc, rel, role))
    expect_hidden(&r, ctx);
  else
    expect(&r, NOTES[role] == 'A' ? AUTHZ_ALLOW : AUTHZ_DENIED, ctx);
}

static void check_move(const scenario_t *sc, rel_t rel, int role) {
  authz_principal_t p = principal_for(sc, rel, role);
  authz_clue_t c = clue_for(sc, rel);
  for (int to = -1; to <= CLUE_STATE_COUNT; to++) {
    char ctx[320];
    snprintf(ctx, sizeof(ctx), "%s -> %d", where(sc, rel, role, "move"), to);
    const clue_move_t *row = NULL;
    authz_result_t r = authz_can_move(&p, &c, (clue_state_t)to, &row);
    if (to < CLUE_STATE_ACCEPTED || to > CLUE_STATE_TRANSFERRED_TO_JUDICIAL) {
      expect(&r, AUTHZ_INVALID_ARGUMENT, ctx);
    } else if (!sees(sc, rel, role)) {
      expect_hidden(&r, ctx);
    } else if (CHANGES[rel][role] != 'A') {
      expect(&r, AUTHZ_DENIED, ctx);
    } else if (!legal(sc->state, to)) {
      expect(&r, AUTHZ_FAILED_PRECONDITION, ctx);
      char want[CLUE_FSM_MSG_MAX];
      assert_int_equal(clue_fsm_refusal(sc->state, (clue_state_t)to, want, sizeof(want)), 0);
      assert_string_equal(r.message, want);
    } else if (sc->pending) {
      expect(&r, AUTHZ_FAILED_PRECONDITION, ctx);
      assert_string_equal(r.message, "clue has a pending proposal; it must be reviewed first");
    } else {
      expect(&r, AUTHZ_ALLOW, ctx);
      assert_ptr_equal(row, clue_fsm_find(sc->state, (clue_state_t)to));
      continue;
    }
    assert_null(row); /* untouched when refused */
  }
}

static void check_handover(const scenario_t *sc, rel_t rel, int role) {
  authz_principal_t p = principal_for(sc, rel, role);
  authz_clue_t c = clue_for(sc, rel);
  authz_result_t r = authz_can_handover(&p, &c, U_OTHER_GROUP, CLUE_UNIT_GROUP);
  const char *ctx = where(sc, rel, role, "handover");
  if (!sees(sc, rel, role))
    expect_hidden(&r, ctx);
  else if (CHANGES[rel][role] != 'A')
    expect(&r, AUTHZ_DENIED, ctx);
  else if (sc->state != CLUE_STATE_ACCEPTED && sc->state != CLUE_STATE_PRELIMINARY_CHECK)
    expect(&r, AUTHZ_FAILED_PRECONDITION, ctx);
  else
    expect(&r, AUTHZ_ALLOW, ctx); /* a pending proposal is withdrawn by the handover */
}

static void check_extend(const scenario_t *sc, rel_t rel, int role) {
  authz_principal_t p = principal_for(sc, rel, role);
  authz_clue_t c = clue_for(sc, rel);
  authz_result_t r = authz_can_extend_deadline(&p, &c);
  const char *ctx = where(sc, rel, role, "extend");
  bool terminal = sc->state == CLUE_STATE_CLOSED || sc->state == CLUE_STATE_TRANSFERRED_TO_JUDICIAL;
  if (!sees(sc, rel, role))
    expect_hidden(&r, ctx);
  else if (CHANGES[rel][role] != 'A')
    expect(&r, AUTHZ_DENIED, ctx);
  else if (terminal || sc->extended)
    expect(&r, AUTHZ_FAILED_PRECONDITION, ctx);
  else
    expect(&r, AUTHZ_ALLOW, ctx);
}

static void check_review(const scenario_t *sc, rel_t rel, int role) {
  authz_principal_t p = principal_for(sc, rel, role);
  authz_clue_t c = clue_for(sc, rel);
  authz_proposal_t prop = {
      .proposer_user_id = PROPOSER,
      .reviewer_unit_id = reviewer_unit(sc),
      .pending = sc->pending,
  };
  authz_result_t r = authz_can_review(&p, &c, &prop);
  const char *ctx = where(sc, rel, role, "review");
  bool reviewer = rel == reviewer_rel(sc);
  /* The reviewing unit keeps sight of its proposal after the decision. */
  bool visible = sees(sc, rel, role) || (reviewer && (role == M || role == L));
  if (!visible) {
    expect(&r, AUTHZ_NOT_FOUND, ctx);
    assert_string_equal(r.message, "proposal not found");
  } else if (!(reviewer && role == L)) {
    expect(&r, AUTHZ_DENIED, ctx);
  } else if (!sc->pending) {
    expect(&r, AUTHZ_FAILED_PRECONDITION, ctx);
  } else {
    expect(&r, AUTHZ_ALLOW, ctx);
  }
}

/* Issue 9 Build 1: does the caller's unit see the case led by lead_rel's unit? */
static bool sees_case(rel_t rel, int role, rel_t lead_rel) {
  if (role == AU)
    return true;
  if ((role != M && role != L) || rel == ADMIN_UNIT)
    return false;
  return rel == lead_rel || is_participant(rel);
}

/* Joint cases by consent, for a case led by the lead room (CASE_LEAD) or by the owner
 * group's liaison room (LIAISON): only a LEADER of the owner unit, or of a lead room that
 * is the owner group's liaison room, brings a clue in; a participant never gives its clues
 * away by taking part, and sight lent by a case or a review is no consent. */
static void check_add_clue_for(const scenario_t *sc, rel_t rel, int role, rel_t lead_rel) {
  authz_principal_t p = principal_for(sc, rel, role);
  authz_clue_t c = clue_for(sc, rel);
  authz_case_t jc = {.lead_unit_id = lead_rel == CASE_LEAD ? U_LEAD : U_LIAISON,
                     .principal_in_case = is_participant(rel)};
  authz_result_t r = authz_can_add_clue_to_case(&p, &jc, &c);
  const char *ctx = where(sc, rel, role, lead_rel == CASE_LEAD ? "add to case" : "add to liaison's case");
  bool terminal = sc->state == CLUE_STATE_CLOSED || sc->state == CLUE_STATE_TRANSFERRED_TO_JUDICIAL;
  bool consent = role == L && (rel == OWN || (rel == LIAISON && lead_rel == LIAISON &&
                                             sc->owner_kind == CLUE_UNIT_GROUP));
  if (!sees_case(rel, role, lead_rel)) {
    expect(&r, AUTHZ_NOT_FOUND, ctx);
    assert_string_equal(r.message, "joint case not found");
  } else if (!sees(sc, rel, role)) {
    expect_hidden(&r, ctx);
  } else if (!consent) {
    expect(&r, AUTHZ_DENIED, ctx);
  } else if (sc->in_case || terminal || sc->pending) {
    expect(&r, AUTHZ_FAILED_PRECONDITION, ctx);
  } else {
    expect(&r, AUTHZ_ALLOW, ctx);
  }
}

static void check_add_clue(const scenario_t *sc, rel_t rel, int role) {
  check_add_clue_for(sc, rel, role, CASE_LEAD);
  check_add_clue_for(sc, rel, role, LIAISON);
}

/* Taking a clue out of the case it is in (when sc->in_case), or of a case it is not in:
 * a LEADER of the owner unit (who needs not see the case when the clue is in it) or of the
 * lead room. */
static void check_remove_clue(const scenario_t *sc, rel_t rel, int role) {
  authz_principal_t p = principal_for(sc, rel, role);
  authz_clue_t c = clue_for(sc, rel);
  authz_case_t jc = {.lead_unit_id = U_LEAD, .principal_in_case = is_participant(rel)};
  authz_result_t r = authz_can_remove_clue_from_case(&p, &jc, &c, sc->in_case);
  const char *ctx = where(sc, rel, role, "remove from case");
  bool terminal = sc->state == CLUE_STATE_CLOSED || sc->state == CLUE_STATE_TRANSFERRED_TO_JUDICIAL;
  bool owner_leader = sees(sc, rel, role) && rel == OWN && role == L;
  if (!(owner_leader && sc->in_case) && !sees_case(rel, role, CASE_LEAD)) {
    expect(&r, AUTHZ_NOT_FOUND, ctx);
    assert_string_equal(r.message, "joint case not found");
  } else if (!sees(sc, rel, role)) {
    expect_hidden(&r, ctx);
  } else if (!owner_leader && !(rel == CASE_LEAD && role == L)) {
    expect(&r, AUTHZ_DENIED, ctx);
  } else if (!sc->in_case || terminal || sc->pending) {
    expect(&r, AUTHZ_FAILED_PRECONDITION, ctx);
  } else {
    expect(&r, AUTHZ_ALLOW, ctx);
  }
}

static void test_matrix_add_clue(void **state) {
  (void)state;
  for_each(check_add_clue);
}

static void test_matrix_remove_clue(void **state) {
  (void)state;
  for_each(check_remove_clue);
}

static void test_matrix_see(void **state) {
  (void)state;
  for_each(check_see);
}

static void test_matrix_reporter(void **state) {
  (void)state;
  for_each(check_reporter);
}

static void test_matrix_note(void **state) {
  (void)state;
  for_each(check_note);
}

static void test_matrix_move(void **state) {
  (void)state;
  for_each(check_move);
}

static void test_matrix_handover(void **state) {
  (void)state;
  for_each(check_handover);
}

static void test_matrix_extend(void **state) {
  (void)state;
  for_each(check_extend);
}

static void test_matrix_review(void **state) {
  (void)state;
  for_each(check_review);
}

static void test_codes_are_grpc(void **state) {
  (void)state;
  assert_int_equal(AUTHZ_ALLOW, GRPC_OK);
  assert_int_equal(AUTHZ_INVALID_ARGUMENT, GRPC_INVALID_ARGUMENT);
  assert_int_equal(AUTHZ_NOT_FOUND, GRPC_NOT_FOUND);
  assert_int_equal(AUTHZ_DENIED, GRPC_PERMISSION_DENIED);
  assert_int_equal(AUTHZ_FAILED_PRECONDITION, GRPC_FAILED_PRECONDITION);
}

/* A few answers spelled out in full, as a reader would check them against the design. */
static void test_examples(void **state) {
  (void)state;
  authz_clue_t group_clue = {.owner_unit_id = U_OWN_GROUP,
                             .owner_unit_kind = CLUE_UNIT_GROUP,
                             .owner_liaison_room_id = U_LIAISON,
                             .state = CLUE_STATE_ACCEPTED};
  authz_principal_t group_leader = {1, U_OWN_GROUP, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER};
  authz_principal_t group_member = {2, U_OWN_GROUP, CLUE_UNIT_GROUP, CLUE_ROLE_MEMBER};
  authz_principal_t liaison_leader = {3, U_LIAISON, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  authz_principal_t auditor = {4, U_ADMIN, CLUE_UNIT_ADMIN, CLUE_ROLE_AUDITOR};
  authz_principal_t admin = {5, U_ADMIN, CLUE_UNIT_ADMIN, CLUE_ROLE_ADMIN};

  const clue_move_t *row = NULL;
  authz_result_t r = authz_can_move(&group_leader, &group_clue, CLUE_STATE_PRELIMINARY_CHECK, &row);
  expect(&r, AUTHZ_ALLOW, "leader starts a check");
  assert_int_equal(row->to, CLUE_STATE_PRELIMINARY_CHECK);
  assert_false(row->co_review);

  r = authz_can_move(&group_member, &group_clue, CLUE_STATE_PRELIMINARY_CHECK, NULL);
  expect(&r, AUTHZ_DENIED, "member moves");
  assert_string_equal(r.message, "only a LEADER of the owner unit may move this clue");

  r = authz_can_move(&liaison_leader, &group_clue, CLUE_STATE_CLOSED, NULL);
  expect(&r, AUTHZ_DENIED, "liaison leader moves");

  r = authz_can_move(&auditor, &group_clue, CLUE_STATE_CLOSED, NULL);
  expect(&r, AUTHZ_DENIED, "auditor moves");
  assert_string_equal(r.message, "auditors have read-only access");

  r = authz_can_move(&admin, &group_clue, CLUE_STATE_CLOSED, NULL);
  expect_hidden(&r, "admin moves");
  r = authz_can_see_clue(&admin, &group_clue);
  expect_hidden(&r, "admin sees");

  r = authz_can_move(&group_leader, &group_clue, CLUE_STATE_FILED, NULL);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "accepted to filed");
  assert_string_equal(r.message, "cannot move from ACCEPTED to FILED; allowed from ACCEPTED: "
                                 "PRELIMINARY_CHECK, CLOSED");

  group_clue.state = CLUE_STATE_CLOSED;
  r = authz_can_move(&group_leader, &group_clue, CLUE_STATE_ACCEPTED, NULL);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "closed");
  assert_string_equal(r.message, "clue is CLOSED, a terminal state; no moves are allowed");

  r = authz_can_move(&group_leader, &group_clue, CLUE_STATE_UNSPECIFIED, NULL);
  expect(&r, AUTHZ_INVALID_ARGUMENT, "no target");
  assert_string_equal(r.message, "target is required");
  r = authz_can_move(&group_leader, &group_clue, (clue_state_t)9, NULL);
  expect(&r, AUTHZ_INVALID_ARGUMENT, "bad target");
  assert_string_equal(r.message, "target has an unknown value 9");

  group_clue.state = CLUE_STATE_PRELIMINARY_CHECK;
  r = authz_can_move(&group_leader, &group_clue, CLUE_STATE_FILED, &row);
  expect(&r, AUTHZ_ALLOW, "filing is proposed");
  assert_true(row->co_review);
  assert_string_equal(r.reason, "move needs co-review");

  /* The same hidden answer for a missing clue's neighbours in every state. */
  authz_principal_t stranger = {6, U_OTHER_GROUP, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER};
  for (int s = 0; s < CLUE_STATE_COUNT; s++) {
    group_clue.state = (clue_state_t)s;
    r = authz_can_move(&stranger, &group_clue, CLUE_STATE_CLOSED, NULL);
    expect_hidden(&r, "stranger moves");
    r = authz_can_handover(&stranger, &group_clue, U_OTHER_ROOM, CLUE_UNIT_ROOM);
    expect_hidden(&r, "stranger hands over");
    r = authz_can_extend_deadline(&stranger, &group_clue);
    expect_hidden(&r, "stranger extends");
  }
}

/* Fail closed: odd or missing facts never widen access. */
static void test_fail_closed(void **state) {
  (void)state;
  authz_clue_t c = {
      .owner_unit_id = U_OWN_ROOM, .owner_unit_kind = CLUE_UNIT_ROOM, .state = CLUE_STATE_ACCEPTED};
  authz_principal_t p = {1, U_OWN_ROOM, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  authz_result_t r = authz_can_see_clue(&p, &c);
  expect(&r, AUTHZ_ALLOW, "baseline");

  r = authz_can_see_clue(NULL, &c);
  expect_hidden(&r, "no principal");
  r = authz_can_see_clue(&p, NULL);
  expect_hidden(&r, "no clue");
  r = authz_can_add_note(NULL, NULL);
  expect_hidden(&r, "note without facts");
  r = authz_can_move(NULL, &c, CLUE_STATE_CLOSED, NULL);
  expect_hidden(&r, "move without principal");
  r = authz_can_handover(&p, NULL, U_OTHER_ROOM, CLUE_UNIT_ROOM);
  expect_hidden(&r, "handover without clue");
  r = authz_can_extend_deadline(NULL, &c);
  expect_hidden(&r, "extend without principal");
  r = authz_can_see_reporter(NULL, &c);
  expect(&r, AUTHZ_DENIED, "reporter without principal");
  r = authz_can_see_reporter(&p, NULL);
  expect(&r, AUTHZ_DENIED, "reporter without clue");
  r = authz_can_review(&p, &c, NULL);
  expect(&r, AUTHZ_NOT_FOUND, "review without proposal");
  assert_int_equal(authz_clue_scope(NULL), AUTHZ_SCOPE_NONE);

  const int roles[] = {CLUE_ROLE_UNSPECIFIED, 5, -1, 100};
  for (size_t i = 0; i < NELEM(roles); i++) {
    authz_principal_t q = p;
    q.role = (clue_role_t)roles[i];
    r = authz_can_see_clue(&q, &c);
    expect_hidden(&r, "odd role sees");
    r = authz_can_submit(&q);
    expect(&r, AUTHZ_DENIED, "odd role submits");
    assert_int_equal(authz_clue_scope(&q), AUTHZ_SCOPE_NONE);
  }
  const int kinds[] = {CLUE_UNIT_UNSPECIFIED, CLUE_UNIT_ADMIN, 5, -2};
  for (size_t i = 0; i < NELEM(kinds); i++) {
    authz_principal_t q = p;
    q.unit_kind = (clue_unit_kind_t)kinds[i];
    r = authz_can_see_clue(&q, &c);
    expect_hidden(&r, "odd unit kind sees its 'own' clue");
    r = authz_can_submit(&q);
    expect(&r, AUTHZ_DENIED, "odd unit kind submits");
    assert_int_equal(authz_clue_scope(&q), AUTHZ_SCOPE_NONE);
  }

  /* Unit id 0 is "none" and matches nothing, not even another 0. */
  authz_clue_t zero = {0};
  zero.owner_unit_kind = CLUE_UNIT_GROUP;
  zero.state = CLUE_STATE_ACCEPTED;
  authz_principal_t nobody = {1, 0, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  r = authz_can_see_clue(&nobody, &zero);
  expect_hidden(&r, "unit 0 sees clue with no owner, liaison, case or reviewer");
  r = authz_can_see_reporter(&nobody, &zero);
  expect(&r, AUTHZ_DENIED, "unit 0 sees reporter");
  r = authz_can_submit(&nobody);
  expect(&r, AUTHZ_DENIED, "unit 0 submits");
  assert_int_equal(authz_clue_scope(&nobody), AUTHZ_SCOPE_NONE);

  /* "In the joint case" means nothing for a clue in no case. */
  authz_clue_t stray = c;
  stray.principal_in_case = true;
  authz_principal_t other = {2, U_PART_GROUP, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER};
  r = authz_can_see_clue(&other, &stray);
  expect_hidden(&r, "participant of no case");

  /* A liaison room id on a clue not owned by a GROUP grants nothing. */
  authz_clue_t room_clue = c;
  room_clue.owner_liaison_room_id = U_LIAISON;
  authz_principal_t liaison = {3, U_LIAISON, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  r = authz_can_see_clue(&liaison, &room_clue);
  expect_hidden(&r, "liaison of a room");
  /* Nor does matching the liaison id from a unit that is not a ROOM. */
  authz_clue_t group_clue = {.owner_unit_id = U_OWN_GROUP,
                             .owner_unit_kind = CLUE_UNIT_GROUP,
                             .owner_liaison_room_id = U_OTHER_GROUP,
                             .state = CLUE_STATE_ACCEPTED};
  authz_principal_t group_as_liaison = {4, U_OTHER_GROUP, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER};
  r = authz_can_see_clue(&group_as_liaison, &group_clue);
  expect_hidden(&r, "group as liaison");

  /* A move from a state outside the table is refused, naming the state. */
  authz_clue_t odd = c;
  odd.state = CLUE_STATE_UNSPECIFIED;
  r = authz_can_move(&p, &odd, CLUE_STATE_ACCEPTED, NULL);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "move from UNSPECIFIED");
  assert_string_equal(r.message, "cannot move from UNSPECIFIED to ACCEPTED; no moves are allowed "
                                 "from UNSPECIFIED");
  r = authz_can_extend_deadline(&p, &odd);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "extend in UNSPECIFIED");
  r = authz_can_handover(&p, &odd, U_OTHER_ROOM, CLUE_UNIT_ROOM);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "handover in UNSPECIFIED");
}

static void test_scope(void **state) {
  (void)state;
  const unsigned unit = AUTHZ_SCOPE_OWN_UNIT | AUTHZ_SCOPE_JOINT_CASES |
                        AUTHZ_SCOPE_PENDING_REVIEWS | AUTHZ_SCOPE_HANDLED |
                        AUTHZ_SCOPE_UNRECUSED;
  static const struct {
    clue_unit_kind_t kind;
    clue_role_t role;
    unsigned want_extra; /* bits beyond those of every working unit */
  } cases[] = {
      {CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER, AUTHZ_SCOPE_LIAISON_GROUPS},
      {CLUE_UNIT_ROOM, CLUE_ROLE_LEADER, AUTHZ_SCOPE_LIAISON_GROUPS},
      {CLUE_UNIT_GROUP, CLUE_ROLE_MEMBER, 0},
      {CLUE_UNIT_GROUP, CLUE_ROLE_LEADER, 0},
      {CLUE_UNIT_REGION, CLUE_ROLE_MEMBER, 0},
      {CLUE_UNIT_REGION, CLUE_ROLE_LEADER, 0},
  };
  for (size_t i = 0; i < NELEM(cases); i++) {
    authz_principal_t p = {1, 7, cases[i].kind, cases[i].role};
    assert_int_equal(authz_clue_scope(&p), unit | cases[i].want_extra);
  }
  const clue_unit_kind_t kinds[] = {CLUE_UNIT_ROOM, CLUE_UNIT_GROUP, CLUE_UNIT_REGION,
                                    CLUE_UNIT_ADMIN};
  for (size_t k = 0; k < NELEM(kinds); k++) {
    authz_principal_t aud = {1, 7, kinds[k], CLUE_ROLE_AUDITOR};
    assert_int_equal(authz_clue_scope(&aud), AUTHZ_SCOPE_ALL);
    authz_principal_t adm = {1, 7, kinds[k], CLUE_ROLE_ADMIN};
    assert_int_equal(authz_clue_scope(&adm), AUTHZ_SCOPE_NONE);
  }
}

/* Who may submit, by unit kind (rows) and role (MEMBER, LEADER, AUDITOR, ADMIN). */
static void test_submit(void **state) {
  (void)state;
  static const struct {
    clue_unit_kind_t kind;
    const char *may; /* per role */
  } table[] = {
      {CLUE_UNIT_ROOM, "AADD"},  {CLUE_UNIT_GROUP, "AADD"},       {CLUE_UNIT_REGION, "AADD"},
      {CLUE_UNIT_ADMIN, "DDDD"}, {CLUE_UNIT_UNSPECIFIED, "DDDD"},
  };
  for (size_t k = 0; k < NELEM(table); k++)
    for (int role = 0; role < NROLES; role++) {
      authz_principal_t p = {1, 7, table[k].kind, ROLE[role]};
      authz_result_t r = authz_can_submit(&p);
      char ctx[96];
      snprintf(ctx, sizeof(ctx), "submit: %s of a %s", clue_role_name(ROLE[role]),
               clue_unit_kind_name(table[k].kind));
      expect(&r, table[k].may[role] == 'A' ? AUTHZ_ALLOW : AUTHZ_DENIED, ctx);
    }
  authz_principal_t aud = {1, 7, CLUE_UNIT_GROUP, CLUE_ROLE_AUDITOR};
  authz_result_t r = authz_can_submit(&aud);
  assert_string_equal(r.message, "auditors have read-only access");
  authz_principal_t adm = {1, 7, CLUE_UNIT_ADMIN, CLUE_ROLE_ADMIN};
  r = authz_can_submit(&adm);
  assert_string_equal(r.message, "administrators may not submit clues");
  r = authz_can_submit(NULL);
  expect(&r, AUTHZ_DENIED, "submit without principal");
}

static void test_reviewer_selection(void **state) {
  (void)state;
  int64_t out;
  authz_result_t r;

  /* A group's clue: its liaison room. */
  authz_clue_t g = {.owner_unit_id = U_OWN_GROUP,
                    .owner_unit_kind = CLUE_UNIT_GROUP,
                    .owner_liaison_room_id = U_LIAISON,
                    .state = CLUE_STATE_PRELIMINARY_CHECK};
  out = -1;
  r = authz_reviewer_unit(&g, 0, CLUE_UNIT_UNSPECIFIED, &out);
  expect(&r, AUTHZ_ALLOW, "group clue");
  assert_int_equal(out, U_LIAISON);
  /* Another room named on the proposal is refused (it would not review it); the liaison
   * room itself may be named. */
  out = -1;
  r = authz_reviewer_unit(&g, U_NAMED, CLUE_UNIT_ROOM, &out);
  expect(&r, AUTHZ_INVALID_ARGUMENT, "group clue, another room named");
  assert_non_null(strstr(r.message, "liaison room"));
  assert_int_equal(out, -1);
  r = authz_reviewer_unit(&g, U_LIAISON, CLUE_UNIT_ROOM, &out);
  expect(&r, AUTHZ_ALLOW, "group clue, its liaison room named");
  assert_int_equal(out, U_LIAISON);
  /* A group without a liaison room cannot have proposals reviewed. */
  authz_clue_t orphan = g;
  orphan.owner_liaison_room_id = 0;
  out = -1;
  r = authz_reviewer_unit(&orphan, U_NAMED, CLUE_UNIT_ROOM, &out);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "group without liaison");
  assert_string_equal(r.message, "the owner group has no liaison room to review the proposal");
  assert_int_equal(out, -1);

  /* In a joint case: its lead unit, whoever owns the clue. */
  const clue_unit_kind_t kinds[] = {CLUE_UNIT_GROUP, CLUE_UNIT_ROOM, CLUE_UNIT_REGION};
  for (size_t k = 0; k < NELEM(kinds); k++) {
    authz_clue_t c = {.owner_unit_id = owner_unit(kinds[k]),
                      .owner_unit_kind = kinds[k],
                      .owner_liaison_room_id = kinds[k] == CLUE_UNIT_GROUP ? U_LIAISON : 0,
                      .case_lead_unit_id = U_LEAD,
                      .state = CLUE_STATE_FILED};
    out = -1;
    r = authz_reviewer_unit(&c, 0, CLUE_UNIT_UNSPECIFIED, &out);
    expect(&r, AUTHZ_ALLOW, "case clue");
    assert_int_equal(out, U_LEAD);
    r = authz_reviewer_unit(&c, U_NAMED, CLUE_UNIT_ROOM, &out);
    expect(&r, AUTHZ_INVALID_ARGUMENT, "case clue, another room named");
    assert_non_null(strstr(r.message, "lead unit"));
    r = authz_reviewer_unit(&c, U_LEAD, CLUE_UNIT_ROOM, &out);
    expect(&r, AUTHZ_ALLOW, "case clue, its lead named");
    assert_int_equal(out, U_LEAD);
  }

  /* A room's or region's own clue: the other room named on the proposal. */
  static const struct {
    clue_unit_kind_t owner;
    int64_t named;
    clue_unit_kind_t named_kind;
    authz_decision_t want;
    const char *message;
  } own[] = {
      {CLUE_UNIT_ROOM, U_NAMED, CLUE_UNIT_ROOM, AUTHZ_ALLOW, ""},
      {CLUE_UNIT_REGION, U_NAMED, CLUE_UNIT_ROOM, AUTHZ_ALLOW, ""},
      {CLUE_UNIT_ROOM, 0, CLUE_UNIT_UNSPECIFIED, AUTHZ_INVALID_ARGUMENT,
       "details.reviewer_unit_id is required: a ROOM's own clue is reviewed by another ROOM "
       "named on the proposal"},
      {CLUE_UNIT_REGION, 0, CLUE_UNIT_UNSPECIFIED, AUTHZ_INVALID_ARGUMENT,
       "details.reviewer_unit_id is required: a REGION's own clue is reviewed by another ROOM "
       "named on the proposal"},
      {CLUE_UNIT_ROOM, U_OWN_ROOM, CLUE_UNIT_ROOM, AUTHZ_INVALID_ARGUMENT,
       "details.reviewer_unit_id must name a ROOM other than the owner"},
      {CLUE_UNIT_ROOM, U_OTHER_GROUP, CLUE_UNIT_GROUP, AUTHZ_INVALID_ARGUMENT,
       "details.reviewer_unit_id must name a ROOM"},
      {CLUE_UNIT_REGION, U_OTHER_REGION, CLUE_UNIT_REGION, AUTHZ_INVALID_ARGUMENT,
       "details.reviewer_unit_id must name a ROOM"},
      {CLUE_UNIT_REGION, U_OWN_REGION, CLUE_UNIT_REGION, AUTHZ_INVALID_ARGUMENT,
       "details.reviewer_unit_id must name a ROOM"},
      {CLUE_UNIT_ROOM, U_ADMIN, CLUE_UNIT_ADMIN, AUTHZ_INVALID_ARGUMENT,
       "details.reviewer_unit_id must name a ROOM"},
      {CLUE_UNIT_ROOM, 777, CLUE_UNIT_UNSPECIFIED, AUTHZ_INVALID_ARGUMENT,
       "details.reviewer_unit_id must name a ROOM"},
      {CLUE_UNIT_ROOM, -3, CLUE_UNIT_ROOM, AUTHZ_INVALID_ARGUMENT,
       "details.reviewer_unit_id must name a ROOM"},
  };
  for (size_t i = 0; i < NELEM(own); i++) {
    authz_clue_t c = {.owner_unit_id = owner_unit(own[i].owner),
                      .owner_unit_kind = own[i].owner,
                      .state = CLUE_STATE_PRELIMINARY_CHECK};
    out = -1;
    r = authz_reviewer_unit(&c, own[i].named, own[i].named_kind, &out);
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "own clue case %zu", i);
    expect(&r, own[i].want, ctx);
    assert_string_equal(r.message, own[i].message);
    assert_int_equal(out, own[i].want == AUTHZ_ALLOW ? own[i].named : -1);
  }

  /* Owners that cannot have proposals at all. */
  authz_clue_t weird = {.owner_unit_id = U_ADMIN, .owner_unit_kind = CLUE_UNIT_ADMIN};
  out = -1;
  r = authz_reviewer_unit(&weird, U_NAMED, CLUE_UNIT_ROOM, &out);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "admin-owned clue");
  weird.owner_unit_kind = CLUE_UNIT_UNSPECIFIED;
  r = authz_reviewer_unit(&weird, U_NAMED, CLUE_UNIT_ROOM, &out);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "clue of unknown owner kind");
  r = authz_reviewer_unit(NULL, U_NAMED, CLUE_UNIT_ROOM, &out);
  expect(&r, AUTHZ_NOT_FOUND, "no clue");
  assert_int_equal(out, -1);
}

static void test_self_review(void **state) {
  (void)state;
  /* The liaison room's leader raised nothing; the proposer is a group leader. */
  authz_clue_t c = {.owner_unit_id = U_OWN_GROUP,
                    .owner_unit_kind = CLUE_UNIT_GROUP,
                    .owner_liaison_room_id = U_LIAISON,
                    .pending_reviewer_unit_id = U_LIAISON,
                    .state = CLUE_STATE_PRELIMINARY_CHECK};
  authz_proposal_t prop = {.proposer_user_id = 41, .reviewer_unit_id = U_LIAISON, .pending = true};
  authz_principal_t reviewer = {42, U_LIAISON, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  authz_result_t r = authz_can_review(&reviewer, &c, &prop);
  expect(&r, AUTHZ_ALLOW, "liaison leader reviews");

  /* A room's own clue in a joint case the same room leads is reviewed where it would be
   * outside the case: by the other ROOM named on the proposal. */
  authz_clue_t own = {.owner_unit_id = U_LEAD,
                      .owner_unit_kind = CLUE_UNIT_ROOM,
                      .case_lead_unit_id = U_LEAD,
                      .pending_reviewer_unit_id = U_LEAD,
                      .state = CLUE_STATE_FILED};
  int64_t unit = 0;
  r = authz_reviewer_unit(&own, 0, CLUE_UNIT_UNSPECIFIED, &unit);
  expect(&r, AUTHZ_INVALID_ARGUMENT, "lead room's own clue names no reviewer");
  r = authz_reviewer_unit(&own, U_LEAD, CLUE_UNIT_ROOM, &unit);
  expect(&r, AUTHZ_INVALID_ARGUMENT, "lead room names itself");
  r = authz_reviewer_unit(&own, U_NAMED, CLUE_UNIT_ROOM, &unit);
  expect(&r, AUTHZ_ALLOW, "reviewer of a lead room's own clue");
  assert_int_equal(unit, U_NAMED);
  /* A proposal that names the owner room as reviewer (made before the rule) is reviewed by
   * nobody of that room: not the proposer, not another leader. */
  authz_proposal_t mine = {.proposer_user_id = 50,
                           .proposer_unit_id = U_LEAD,
                           .reviewer_unit_id = U_LEAD,
                           .pending = true};
  authz_principal_t proposer = {50, U_LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  r = authz_can_review(&proposer, &own, &mine);
  expect(&r, AUTHZ_DENIED, "self-review");
  assert_string_equal(r.message, "nobody may review their own proposal");
  authz_principal_t colleague = {51, U_LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  r = authz_can_review(&colleague, &own, &mine);
  expect(&r, AUTHZ_DENIED, "another leader of the owner room");
  assert_string_equal(r.message, "the owner unit and the proposer's unit may not review the proposal");
  authz_principal_t member = {52, U_LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER};
  r = authz_can_review(&member, &own, &mine);
  expect(&r, AUTHZ_DENIED, "a member of the reviewing room");
  assert_string_equal(r.message, "only a LEADER of the reviewing unit may review this proposal");
  /* An unknown user id could be the proposer. */
  authz_principal_t anonymous = {0, U_LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  r = authz_can_review(&anonymous, &own, &mine);
  expect(&r, AUTHZ_DENIED, "user 0");
  /* The proposer's unit, when it is not the owner (a proposal from before a handover). */
  authz_clue_t handed = own;
  handed.owner_unit_id = U_OWN_ROOM;
  handed.case_lead_unit_id = 0;
  r = authz_can_review(&colleague, &handed, &mine);
  expect(&r, AUTHZ_DENIED, "a leader of the proposer's unit");
  /* Refusals come before "already decided". */
  mine.pending = false;
  r = authz_can_review(&proposer, &own, &mine);
  expect(&r, AUTHZ_DENIED, "self-review of a decided proposal");
  r = authz_can_review(&colleague, &own, &mine);
  expect(&r, AUTHZ_DENIED, "owner room on a decided proposal");
  authz_proposal_t named = {.proposer_user_id = 50,
                            .proposer_unit_id = U_LEAD,
                            .reviewer_unit_id = U_NAMED,
                            .pending = false};
  authz_principal_t named_leader = {60, U_NAMED, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  r = authz_can_review(&named_leader, &own, &named);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "decided");
  assert_string_equal(r.message, "proposal was already decided");
}

/* A room named to review a region's clue sees it only while the proposal is pending, and
 * gets the same rights as any unit that sees it: notes yes, moves and reporter no. */
static void test_named_reviewer(void **state) {
  (void)state;
  authz_clue_t c = {.owner_unit_id = U_OWN_REGION,
                    .owner_unit_kind = CLUE_UNIT_REGION,
                    .pending_reviewer_unit_id = U_NAMED,
                    .state = CLUE_STATE_FILED};
  authz_principal_t leader = {60, U_NAMED, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  authz_principal_t member = {61, U_NAMED, CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER};
  authz_result_t r = authz_can_see_clue(&member, &c);
  expect(&r, AUTHZ_ALLOW, "named room member sees");
  r = authz_can_add_note(&member, &c);
  expect(&r, AUTHZ_ALLOW, "named room member adds the co-review record");
  r = authz_can_see_reporter(&leader, &c);
  expect(&r, AUTHZ_DENIED, "named room leader and the reporter");
  r = authz_can_move(&leader, &c, CLUE_STATE_CLOSED, NULL);
  expect(&r, AUTHZ_DENIED, "named room leader moves");
  authz_proposal_t prop = {.proposer_user_id = 70, .reviewer_unit_id = U_NAMED, .pending = true};
  r = authz_can_review(&leader, &c, &prop);
  expect(&r, AUTHZ_ALLOW, "named room leader reviews");

  /* Once decided the clue is out of sight again, but the proposal still answers. */
  c.pending_reviewer_unit_id = 0;
  prop.pending = false;
  r = authz_can_see_clue(&member, &c);
  expect_hidden(&r, "after the decision");
  r = authz_can_review(&leader, &c, &prop);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "review after the decision");

  /* Another room that is not the reviewer sees nothing. */
  authz_principal_t other = {62, U_OTHER_ROOM, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  c.pending_reviewer_unit_id = U_NAMED;
  prop.pending = true;
  r = authz_can_review(&other, &c, &prop);
  expect(&r, AUTHZ_NOT_FOUND, "unrelated room reviews");
}

static void test_handover_targets(void **state) {
  (void)state;
  authz_clue_t c = {.owner_unit_id = U_OWN_GROUP,
                    .owner_unit_kind = CLUE_UNIT_GROUP,
                    .owner_liaison_room_id = U_LIAISON,
                    .state = CLUE_STATE_ACCEPTED};
  authz_principal_t leader = {1, U_OWN_GROUP, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER};
  static const struct {
    int64_t to;
    clue_unit_kind_t kind;
    authz_decision_t want;
    const char *message;
  } cases[] = {
      {U_OTHER_GROUP, CLUE_UNIT_GROUP, AUTHZ_ALLOW, ""},
      {U_LIAISON, CLUE_UNIT_ROOM, AUTHZ_ALLOW, ""},
      {U_OTHER_REGION, CLUE_UNIT_REGION, AUTHZ_ALLOW, ""},
      {0, CLUE_UNIT_GROUP, AUTHZ_INVALID_ARGUMENT, "to_unit_id is required"},
      {-4, CLUE_UNIT_GROUP, AUTHZ_INVALID_ARGUMENT, "to_unit_id must be positive"},
      {U_ADMIN, CLUE_UNIT_ADMIN, AUTHZ_INVALID_ARGUMENT,
       "to_unit_id must name a GROUP, ROOM or REGION"},
      {888, CLUE_UNIT_UNSPECIFIED, AUTHZ_NOT_FOUND, "to_unit_id: unit 888 not found"},
      {U_OWN_GROUP, CLUE_UNIT_GROUP, AUTHZ_INVALID_ARGUMENT,
       "to_unit_id is already the owner of the clue"},
  };
  for (size_t i = 0; i < NELEM(cases); i++) {
    authz_result_t r = authz_can_handover(&leader, &c, cases[i].to, cases[i].kind);
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "handover case %zu", i);
    expect(&r, cases[i].want, ctx);
    assert_string_equal(r.message, cases[i].message);
  }

  /* State messages. */
  const char *want[CLUE_STATE_COUNT] = {
      "clue is UNSPECIFIED; only ACCEPTED or PRELIMINARY_CHECK clues can be handed over",
      "",
      "",
      "clue is FILED; only ACCEPTED or PRELIMINARY_CHECK clues can be handed over",
      "clue is CLOSED; only ACCEPTED or PRELIMINARY_CHECK clues can be handed over",
      "clue is TRANSFERRED_TO_JUDICIAL; only ACCEPTED or PRELIMINARY_CHECK clues can be handed "
      "over",
  };
  for (int s = 0; s < CLUE_STATE_COUNT; s++) {
    c.state = (clue_state_t)s;
    authz_result_t r = authz_can_handover(&leader, &c, U_OTHER_GROUP, CLUE_UNIT_GROUP);
    assert_string_equal(r.message, want[s]);
  }

  /* A bad target kind is not revealed to somebody who cannot see the clue ... */
  c.state = CLUE_STATE_ACCEPTED;
  authz_principal_t stranger = {2, U_OTHER_GROUP, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER};
  authz_result_t r = authz_can_handover(&stranger, &c, U_ADMIN, CLUE_UNIT_ADMIN);
  expect_hidden(&r, "stranger, bad target");
  /* ... nor checked before the state. */
  c.state = CLUE_STATE_FILED;
  r = authz_can_handover(&leader, &c, U_ADMIN, CLUE_UNIT_ADMIN);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "filed, bad target");
  /* A missing target is not revealed before the state either. */
  r = authz_can_handover(&leader, &c, 888, CLUE_UNIT_UNSPECIFIED);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "filed, missing target");
  r = authz_can_handover(&stranger, &c, 888, CLUE_UNIT_UNSPECIFIED);
  expect_hidden(&r, "stranger, missing target");
  /* A pending proposal does not block a handover: the handover withdraws it. */
  c.state = CLUE_STATE_PRELIMINARY_CHECK;
  c.pending_reviewer_unit_id = U_LIAISON;
  r = authz_can_handover(&leader, &c, U_OTHER_GROUP, CLUE_UNIT_GROUP);
  expect(&r, AUTHZ_ALLOW, "pending");
}

static void test_extend_messages(void **state) {
  (void)state;
  authz_clue_t c = {.owner_unit_id = U_OWN_REGION,
                    .owner_unit_kind = CLUE_UNIT_REGION,
                    .state = CLUE_STATE_PRELIMINARY_CHECK};
  authz_principal_t leader = {1, U_OWN_REGION, CLUE_UNIT_REGION, CLUE_ROLE_LEADER};
  authz_result_t r = authz_can_extend_deadline(&leader, &c);
  expect(&r, AUTHZ_ALLOW, "first extension");
  c.deadline_extended = true;
  r = authz_can_extend_deadline(&leader, &c);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "second extension");
  assert_string_equal(r.message, "the deadline of the current stage was already extended once");
  c.state = CLUE_STATE_TRANSFERRED_TO_JUDICIAL;
  r = authz_can_extend_deadline(&leader, &c);
  assert_string_equal(r.message,
                      "clue is TRANSFERRED_TO_JUDICIAL, a terminal state; it has no deadline to "
                      "extend");
  authz_principal_t member = {2, U_OWN_REGION, CLUE_UNIT_REGION, CLUE_ROLE_MEMBER};
  r = authz_can_extend_deadline(&member, &c);
  expect(&r, AUTHZ_DENIED, "member extends");
  assert_string_equal(r.message, "only a LEADER of the owner unit may extend this clue's deadline");
}

/* DESIGN.md §3: joint cases, per relation and role (MEMBER, LEADER, AUDITOR, ADMIN). */
static void test_case_matrix(void **state) {
  (void)state;
  static const char *const CASE_SEES[NREL] = {
      [OWN] = "NNVN",         [LIAISON] = "NNVN",      [CASE_LEAD] = "VVVN",  [PART_GROUP] = "VVVN",
      [PART_ROOM] = "VVVN",   [PART_REGION] = "VVVN",  [NAMED] = "NNVN",      [OTHER_ROOM] = "NNVN",
      [OTHER_GROUP] = "NNVN", [OTHER_REGION] = "NNVN", [ADMIN_UNIT] = "NNVN",
  };
  static const char *const CASE_MANAGES[NREL] = {
      [OWN] = "DDDD",         [LIAISON] = "DDDD",      [CASE_LEAD] = "DADD",  [PART_GROUP] = "DDDD",
      [PART_ROOM] = "DDDD",   [PART_REGION] = "DDDD",  [NAMED] = "DDDD",      [OTHER_ROOM] = "DDDD",
      [OTHER_GROUP] = "DDDD", [OTHER_REGION] = "DDDD", [ADMIN_UNIT] = "DDDD",
  };
  scenario_t sc = {CLUE_UNIT_GROUP, true, CLUE_STATE_ACCEPTED, false, false};
  for (int rel = 0; rel < NREL; rel++)
    for (int role = 0; role < NROLES; role++) {
      authz_principal_t p = principal_for(&sc, (rel_t)rel, role);
      authz_case_t jc = {.lead_unit_id = U_LEAD, .principal_in_case = is_participant(rel)};
      bool sees_case = CASE_SEES[rel][role] == 'V';
      authz_result_t r = authz_can_see_case(&p, &jc);
      expect(&r, sees_case ? AUTHZ_ALLOW : AUTHZ_NOT_FOUND, where(&sc, rel, role, "see case"));
      if (!sees_case)
        assert_string_equal(r.message, "joint case not found");
      r = authz_can_manage_case(&p, &jc);
      const char *ctx = where(&sc, rel, role, "manage case");
      if (!sees_case)
        expect(&r, AUTHZ_NOT_FOUND, ctx);
      else
        expect(&r, CASE_MANAGES[rel][role] == 'A' ? AUTHZ_ALLOW : AUTHZ_DENIED, ctx);
    }
  authz_case_t jc = {.lead_unit_id = U_LEAD};
  authz_result_t r = authz_can_see_case(NULL, &jc);
  expect(&r, AUTHZ_NOT_FOUND, "case without principal");
  authz_principal_t lead = {1, U_LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  r = authz_can_manage_case(&lead, NULL);
  expect(&r, AUTHZ_NOT_FOUND, "no case");
}

static void test_create_case(void **state) {
  (void)state;
  static const struct {
    clue_unit_kind_t kind;
    const char *may; /* MEMBER, LEADER, AUDITOR, ADMIN */
  } table[] = {
      {CLUE_UNIT_ROOM, "DADD"},  {CLUE_UNIT_GROUP, "DDDD"},       {CLUE_UNIT_REGION, "DDDD"},
      {CLUE_UNIT_ADMIN, "DDDD"}, {CLUE_UNIT_UNSPECIFIED, "DDDD"},
  };
  for (size_t k = 0; k < NELEM(table); k++)
    for (int role = 0; role < NROLES; role++) {
      authz_principal_t p = {1, 7, table[k].kind, ROLE[role]};
      authz_result_t r = authz_can_create_case(&p);
      expect(&r, table[k].may[role] == 'A' ? AUTHZ_ALLOW : AUTHZ_DENIED, "create case");
    }
  authz_result_t r = authz_can_create_case(NULL);
  expect(&r, AUTHZ_DENIED, "create case without principal");
  authz_principal_t p = {1, 7, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER};
  r = authz_can_create_case(&p);
  assert_string_equal(r.message, "only a LEADER of a ROOM may open a joint case");
}

static void test_add_clue_to_case(void **state) {
  (void)state;
  authz_principal_t lead = {1, U_LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  authz_principal_t lead_member = {2, U_LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER};
  authz_principal_t region_leader = {3, U_PART_REGION, CLUE_UNIT_REGION, CLUE_ROLE_LEADER};
  authz_principal_t region_member = {4, U_PART_REGION, CLUE_UNIT_REGION, CLUE_ROLE_MEMBER};
  authz_principal_t auditor = {5, U_ADMIN, CLUE_UNIT_ADMIN, CLUE_ROLE_AUDITOR};
  authz_case_t jc = {.lead_unit_id = U_LEAD};
  authz_case_t jc_part = {.lead_unit_id = U_LEAD, .principal_in_case = true};
  /* The lead room's own clue, and a clue of a group it liaises with: visible. */
  authz_clue_t own = {
      .owner_unit_id = U_LEAD, .owner_unit_kind = CLUE_UNIT_ROOM, .state = CLUE_STATE_ACCEPTED};
  authz_clue_t liaised = {.owner_unit_id = U_OWN_GROUP,
                          .owner_unit_kind = CLUE_UNIT_GROUP,
                          .owner_liaison_room_id = U_LEAD,
                          .state = CLUE_STATE_PRELIMINARY_CHECK};
  /* A region's clue: hidden from the lead room, even with the region taking part. */
  authz_clue_t region = {.owner_unit_id = U_PART_REGION,
                         .owner_unit_kind = CLUE_UNIT_REGION,
                         .state = CLUE_STATE_ACCEPTED};
  authz_result_t r = authz_can_add_clue_to_case(&lead, &jc, &own);
  expect(&r, AUTHZ_ALLOW, "own clue");
  r = authz_can_add_clue_to_case(&lead, &jc, &liaised);
  expect(&r, AUTHZ_ALLOW, "liaised group's clue");
  r = authz_can_add_clue_to_case(&lead, &jc, &region);
  expect_hidden(&r, "participant region's clue, by the lead");
  r = authz_can_add_clue_to_case(&region_leader, &jc_part, &region);
  expect(&r, AUTHZ_ALLOW, "participant region's leader consents");
  r = authz_can_add_clue_to_case(&region_leader, &jc, &region);
  expect(&r, AUTHZ_NOT_FOUND, "owner's leader outside the case");
  assert_string_equal(r.message, "joint case not found");
  r = authz_can_add_clue_to_case(&region_member, &jc_part, &region);
  expect(&r, AUTHZ_DENIED, "participant region's member");
  r = authz_can_add_clue_to_case(&auditor, &jc, &region);
  expect(&r, AUTHZ_DENIED, "auditor");
  r = authz_can_add_clue_to_case(&lead_member, &jc, &own);
  expect(&r, AUTHZ_DENIED, "member of the lead room");
  r = authz_can_add_clue_to_case(&lead, &jc, NULL);
  expect_hidden(&r, "no clue");
  authz_principal_t stranger = {3, U_OTHER_ROOM, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  r = authz_can_add_clue_to_case(&stranger, &jc, &own);
  expect(&r, AUTHZ_NOT_FOUND, "stranger");
  assert_string_equal(r.message, "joint case not found");
  /* Sight lent by a joint case or a pending review is no consent. */
  authz_clue_t lent = region;
  lent.case_lead_unit_id = U_OTHER_ROOM;
  lent.principal_in_case = true;
  r = authz_can_add_clue_to_case(&lead, &jc, &lent);
  expect(&r, AUTHZ_DENIED, "clue seen through another case");
  lent = region;
  lent.pending_reviewer_unit_id = U_LEAD;
  r = authz_can_add_clue_to_case(&lead, &jc, &lent);
  expect(&r, AUTHZ_DENIED, "clue seen as its reviewer");
  /* Already in a case, this or another. */
  authz_clue_t taken = liaised;
  taken.case_lead_unit_id = U_OTHER_ROOM;
  r = authz_can_add_clue_to_case(&lead, &jc, &taken);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "in another case");
  assert_string_equal(r.message, "clue is already in a joint case");
  taken.case_lead_unit_id = U_LEAD;
  r = authz_can_add_clue_to_case(&lead, &jc, &taken);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "in this case");
  /* Terminal clues and clues with a pending proposal stay out (the reviewer would change). */
  for (int s = CLUE_STATE_ACCEPTED; s <= CLUE_STATE_TRANSFERRED_TO_JUDICIAL; s++) {
    authz_clue_t cl = liaised;
    cl.state = (clue_state_t)s;
    r = authz_can_add_clue_to_case(&lead, &jc, &cl);
    if (clue_state_is_terminal(cl.state)) {
      expect(&r, AUTHZ_FAILED_PRECONDITION, "terminal clue joins");
      char want[128];
      snprintf(want, sizeof(want), "clue is %s, a terminal state; it cannot join a joint case",
               clue_state_name(cl.state));
      assert_string_equal(r.message, want);
    } else {
      expect(&r, AUTHZ_ALLOW, "live clue joins");
    }
    cl.pending_reviewer_unit_id = U_LIAISON;
    r = authz_can_add_clue_to_case(&lead, &jc, &cl);
    expect(&r, AUTHZ_FAILED_PRECONDITION, "clue with a pending proposal joins");
  }
  /* A hidden clue is hidden before its state is told, whoever takes part. */
  authz_clue_t closed_region = region;
  closed_region.state = CLUE_STATE_CLOSED;
  r = authz_can_add_clue_to_case(&lead, &jc, &closed_region);
  expect_hidden(&r, "closed clue of a participant");
  closed_region.pending_reviewer_unit_id = U_NAMED;
  r = authz_can_add_clue_to_case(&lead, &jc, &closed_region);
  expect_hidden(&r, "clue with a pending proposal of a participant");
}

static void test_remove_clue_from_case(void **state) {
  (void)state;
  authz_principal_t lead = {1, U_LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  authz_principal_t lead_member = {2, U_LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER};
  authz_principal_t part = {3, U_PART_REGION, CLUE_UNIT_REGION, CLUE_ROLE_LEADER};
  authz_principal_t part_member = {6, U_PART_REGION, CLUE_UNIT_REGION, CLUE_ROLE_MEMBER};
  authz_principal_t group_leader = {7, U_PART_GROUP, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER};
  authz_principal_t stranger = {4, U_OTHER_ROOM, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  authz_principal_t auditor = {5, U_ADMIN, CLUE_UNIT_ADMIN, CLUE_ROLE_AUDITOR};
  authz_case_t jc = {.lead_unit_id = U_LEAD};
  authz_case_t jc_part = {.lead_unit_id = U_LEAD, .principal_in_case = true};
  /* A region's clue in the case: the lead room sees it through the case. */
  authz_clue_t member = {.owner_unit_id = U_PART_REGION,
                         .owner_unit_kind = CLUE_UNIT_REGION,
                         .case_lead_unit_id = U_LEAD,
                         .state = CLUE_STATE_PRELIMINARY_CHECK};
  authz_result_t r = authz_can_remove_clue_from_case(&lead, &jc, &member, true);
  expect(&r, AUTHZ_ALLOW, "lead leader removes a member clue");
  r = authz_can_remove_clue_from_case(&lead_member, &jc, &member, true);
  expect(&r, AUTHZ_DENIED, "lead member removes");
  r = authz_can_remove_clue_from_case(&part, &jc_part, &member, true);
  expect(&r, AUTHZ_ALLOW, "owner's leader takes its clue back");
  r = authz_can_remove_clue_from_case(&part, &jc, &member, true);
  expect(&r, AUTHZ_ALLOW, "owner's leader, no longer taking part, takes its clue back");
  r = authz_can_remove_clue_from_case(&part_member, &jc_part, &member, true);
  expect(&r, AUTHZ_DENIED, "owner's member");
  authz_clue_t member_seen = member; /* as a participant sees it */
  member_seen.principal_in_case = true;
  r = authz_can_remove_clue_from_case(&group_leader, &jc_part, &member_seen, true);
  expect(&r, AUTHZ_DENIED, "another participant's leader");
  assert_string_equal(r.message, "only a LEADER of the clue's owner unit or of the lead room may "
                                 "take the clue out of the joint case");
  r = authz_can_remove_clue_from_case(&auditor, &jc, &member, true);
  expect(&r, AUTHZ_DENIED, "auditor removes");
  r = authz_can_remove_clue_from_case(&stranger, &jc, &member, true);
  expect(&r, AUTHZ_NOT_FOUND, "stranger removes");
  assert_string_equal(r.message, "joint case not found");
  r = authz_can_remove_clue_from_case(&lead, &jc, NULL, true);
  expect_hidden(&r, "no clue");

  for (int s = CLUE_STATE_ACCEPTED; s <= CLUE_STATE_TRANSFERRED_TO_JUDICIAL; s++) {
    authz_clue_t cl = member;
    cl.state = (clue_state_t)s;
    r = authz_can_remove_clue_from_case(&lead, &jc, &cl, true);
    expect(&r, clue_state_is_terminal(cl.state) ? AUTHZ_FAILED_PRECONDITION : AUTHZ_ALLOW,
           "remove by state");
    cl.pending_reviewer_unit_id = U_LEAD;
    r = authz_can_remove_clue_from_case(&lead, &jc, &cl, true);
    expect(&r, AUTHZ_FAILED_PRECONDITION, "remove with a pending proposal");
    r = authz_can_remove_clue_from_case(&part, &jc, &cl, true);
    expect(&r, AUTHZ_FAILED_PRECONDITION, "owner removes with a pending proposal");
  }

  /* Not in this case: hidden clues stay hidden, visible ones are refused by state. */
  authz_clue_t elsewhere = member;
  elsewhere.case_lead_unit_id = U_OTHER_ROOM;
  r = authz_can_remove_clue_from_case(&lead, &jc, &elsewhere, false);
  expect_hidden(&r, "hidden clue of another case");
  r = authz_can_remove_clue_from_case(&part, &jc, &elsewhere, false);
  expect(&r, AUTHZ_NOT_FOUND, "owner names a case it does not see");
  assert_string_equal(r.message, "joint case not found");
  authz_clue_t own = {
      .owner_unit_id = U_LEAD, .owner_unit_kind = CLUE_UNIT_ROOM, .state = CLUE_STATE_ACCEPTED};
  r = authz_can_remove_clue_from_case(&lead, &jc, &own, false);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "own clue in no case");
  assert_string_equal(r.message, "clue is not in this joint case");
}

static void test_case_participants(void **state) {
  (void)state;
  authz_case_t jc = {.lead_unit_id = U_LEAD};
  static const struct {
    int64_t unit;
    clue_unit_kind_t kind;
    authz_decision_t want;
    const char *message;
  } cases[] = {
      {U_PART_GROUP, CLUE_UNIT_GROUP, AUTHZ_ALLOW, ""},
      {U_PART_ROOM, CLUE_UNIT_ROOM, AUTHZ_ALLOW, ""},
      {U_PART_REGION, CLUE_UNIT_REGION, AUTHZ_ALLOW, ""},
      {0, CLUE_UNIT_GROUP, AUTHZ_INVALID_ARGUMENT, "unit_id is required"},
      {-1, CLUE_UNIT_GROUP, AUTHZ_INVALID_ARGUMENT, "unit_id must name a GROUP, ROOM or REGION"},
      {U_ADMIN, CLUE_UNIT_ADMIN, AUTHZ_INVALID_ARGUMENT,
       "unit_id must name a GROUP, ROOM or REGION"},
      {999, CLUE_UNIT_UNSPECIFIED, AUTHZ_NOT_FOUND, "unit_id: unit 999 not found"},
      {U_LEAD, CLUE_UNIT_ROOM, AUTHZ_INVALID_ARGUMENT,
       "unit_id names the lead room of the joint case"},
  };
  for (size_t i = 0; i < NELEM(cases); i++) {
    authz_result_t r = authz_case_participant_ok(&jc, "unit_id", cases[i].unit, cases[i].kind);
    expect(&r, cases[i].want, "participant");
    assert_string_equal(r.message, cases[i].message);
  }
  authz_result_t r =
      authz_case_participant_ok(&jc, "participant_unit_ids", U_ADMIN, CLUE_UNIT_ADMIN);
  assert_string_equal(r.message, "participant_unit_ids must name a GROUP, ROOM or REGION");
}

static void test_audit_and_admin(void **state) {
  (void)state;
  const char *reads_all = "DDAA"; /* MEMBER, LEADER, AUDITOR, ADMIN */
  const char *admin = "DDDA";
  const clue_unit_kind_t kinds[] = {CLUE_UNIT_ROOM, CLUE_UNIT_GROUP, CLUE_UNIT_REGION,
                                    CLUE_UNIT_ADMIN};
  for (size_t k = 0; k < NELEM(kinds); k++)
    for (int role = 0; role < NROLES; role++) {
      authz_principal_t p = {1, 7, kinds[k], ROLE[role]};
      authz_result_t r = authz_can_read_all_audit(&p);
      expect(&r, reads_all[role] == 'A' ? AUTHZ_ALLOW : AUTHZ_DENIED, "read all audit");
      r = authz_is_admin(&p);
      expect(&r, admin[role] == 'A' ? AUTHZ_ALLOW : AUTHZ_DENIED, "admin");
    }
  authz_result_t r = authz_can_read_all_audit(NULL);
  expect(&r, AUTHZ_DENIED, "audit without principal");
  r = authz_is_admin(NULL);
  expect(&r, AUTHZ_DENIED, "admin without principal");
  authz_principal_t odd = {1, 7, CLUE_UNIT_ADMIN, CLUE_ROLE_UNSPECIFIED};
  r = authz_is_admin(&odd);
  expect(&r, AUTHZ_DENIED, "no role");
}

static void test_role_fits_unit(void **state) {
  (void)state;
  /* Rows: role; columns: ROOM, GROUP, REGION, ADMIN, UNSPECIFIED unit kind. */
  static const struct {
    clue_role_t role;
    const char *fits;
  } table[] = {
      {CLUE_ROLE_MEMBER, "YYYNN"},
      {CLUE_ROLE_LEADER, "YYYNN"},
      {CLUE_ROLE_AUDITOR, "YYYYN"},
      {CLUE_ROLE_ADMIN, "NNNYN"},
  };
  const clue_unit_kind_t kinds[] = {CLUE_UNIT_ROOM, CLUE_UNIT_GROUP, CLUE_UNIT_REGION,
                                    CLUE_UNIT_ADMIN, CLUE_UNIT_UNSPECIFIED};
  for (size_t i = 0; i < NELEM(table); i++)
    for (size_t k = 0; k < NELEM(kinds); k++) {
      authz_result_t r = authz_role_fits_unit(table[i].role, kinds[k]);
      expect(&r, table[i].fits[k] == 'Y' ? AUTHZ_ALLOW : AUTHZ_INVALID_ARGUMENT, "role fits");
    }
  authz_result_t r = authz_role_fits_unit(CLUE_ROLE_ADMIN, CLUE_UNIT_GROUP);
  assert_string_equal(r.message, "role ADMIN does not fit a unit of kind GROUP");
  r = authz_role_fits_unit(CLUE_ROLE_UNSPECIFIED, CLUE_UNIT_GROUP);
  expect(&r, AUTHZ_INVALID_ARGUMENT, "no role");
  assert_string_equal(r.message, "role is required");
  r = authz_role_fits_unit((clue_role_t)9, CLUE_UNIT_GROUP);
  assert_string_equal(r.message, "role has an unknown value 9");
}

/* Only a ROOM may be a GROUP's liaison; UNSPECIFIED stands for a unit that does not exist. */
static void test_liaison_fits(void **state) {
  const clue_unit_kind_t kinds[] = {CLUE_UNIT_ROOM, CLUE_UNIT_GROUP, CLUE_UNIT_REGION,
                                    CLUE_UNIT_ADMIN, CLUE_UNIT_UNSPECIFIED, (clue_unit_kind_t)9};
  (void)state;
  for (size_t k = 0; k < NELEM(kinds); k++) {
    authz_result_t r = authz_liaison_fits(kinds[k]);
    expect(&r, kinds[k] == CLUE_UNIT_ROOM ? AUTHZ_ALLOW : AUTHZ_INVALID_ARGUMENT,
           kinds[k] == CLUE_UNIT_ROOM ? "liaison is a room" : "liaison is no room");
  }
}

/* Separation of duties: every role against every subject type, and the token rule. */
static void test_audit_fields_and_tokens(void **state) {
  (void)state;
  /* Rows: subject type; columns: MEMBER, LEADER, AUDITOR, ADMIN. W: whole, R: redacted. */
  static const struct {
    const char *subject;
    const char *whole;
  } table[] = {
      {"unit", "WWWW"}, {"user", "WWWW"}, {"token", "WWWW"}, {"clue", "WWWR"},
      {"case", "WWWR"}, {"proposal", "WWWR"}, {"note", "WWWR"}, {"", "WWWR"},
      {"Unit", "WWWR"}, {"user ", "WWWR"},
  };
  for (size_t i = 0; i < NELEM(table); i++)
    for (int role = 0; role < NROLES; role++) {
      authz_principal_t p = {1, 7, CLUE_UNIT_ADMIN, ROLE[role]};
      bool whole = authz_audit_event_whole(&p, table[i].subject, "clue.move");
      checks++;
      if (whole != (table[i].whole[role] == 'W'))
        fail_msg("subject \"%s\", role %d: whole=%d", table[i].subject, (int)ROLE[role], whole);
    }
  authz_principal_t odd = {1, 7, CLUE_UNIT_ADMIN, CLUE_ROLE_UNSPECIFIED};
  assert_false(authz_audit_event_whole(&odd, "unit", "unit.create"));
  odd.role = (clue_role_t)9;
  assert_false(authz_audit_event_whole(&odd, "clue", "clue.move"));
  assert_false(authz_audit_event_whole(NULL, "unit", "unit.create"));
  authz_principal_t aud = {1, 7, CLUE_UNIT_ADMIN, CLUE_ROLE_AUDITOR};
  assert_false(authz_audit_event_whole(&aud, NULL, "clue.move"));
  assert_false(authz_audit_event_whole(&aud, "clue", NULL));

  authz_result_t r = authz_token_can_see_reporter(false);
  expect(&r, AUTHZ_ALLOW, "personal token");
  r = authz_token_can_see_reporter(true);
  expect(&r, AUTHZ_DENIED, "enrollment token");
  assert_non_null(strstr(r.message, "enrollment token"));
}

/* A clue.recuse event (whom it recuses and why) is whole only for those who may list
 * recusals: LEADERs of working units and AUDITORs. Every role in every unit kind, against
 * recusals and against the actions beside them, which keep the rule of their subject. */
static void test_audit_recusal_fields(void **state) {
  const clue_unit_kind_t kinds[] = {CLUE_UNIT_GROUP, CLUE_UNIT_ROOM,        CLUE_UNIT_REGION,
                                    CLUE_UNIT_ADMIN, CLUE_UNIT_UNSPECIFIED, (clue_unit_kind_t)9};
  const char *others[] = {"clue.move",         "clue.submit", "clue.assign",  "clue.unassign",
                          "clue.recused",      "Clue.recuse", "clue.recuse ", "",
                          "clue.reporter_read"};
  (void)state;
  for (size_t k = 0; k < NELEM(kinds); k++)
    for (int role = 0; role < NROLES; role++) {
      authz_principal_t p = {1, 7, kinds[k], ROLE[role]};
      bool work =
          kinds[k] == CLUE_UNIT_GROUP || kinds[k] == CLUE_UNIT_ROOM || kinds[k] == CLUE_UNIT_REGION;
      bool want = role == AU || (role == L && work);
      bool whole = authz_audit_event_whole(&p, "clue", "clue.recuse");
      authz_result_t lists = authz_can_list_recusals(&p);
      checks += 2;
      if (whole != want || whole != authz_ok(&lists))
        fail_msg("clue.recuse, kind %d, role %d: whole=%d", (int)kinds[k], (int)ROLE[role], whole);
      for (size_t a = 0; a < NELEM(others); a++) {
        checks++;
        if (authz_audit_event_whole(&p, "clue", others[a]) != (role != AD))
          fail_msg("\"%s\", kind %d, role %d", others[a], (int)kinds[k], (int)ROLE[role]);
      }
    }
  authz_principal_t odd = {1, 7, CLUE_UNIT_GROUP, CLUE_ROLE_UNSPECIFIED};
  assert_false(authz_audit_event_whole(&odd, "clue", "clue.recuse"));
  odd.role = (clue_role_t)9;
  assert_false(authz_audit_event_whole(&odd, "clue", "clue.recuse"));
  assert_false(authz_audit_event_whole(NULL, "clue", "clue.recuse"));
}

static int report(void **state) {
  (void)state;
  print_message("authz: %lu decisions checked\n", checks);
  return 0;
}

/* authz_move_unread(): a move decided without the clue must be the move authz_can_move()
 * allows for every clue the write's guard lets through (0029_direct_moves.sql: owned by the
 * caller's unit, in the move's from state, no pending proposal, no recusal), whatever else
 * the clue is. Every principal, target and set of request fields is tried; for each move it
 * returns, every such clue is. It must also return a move for the common case (a LEADER's
 * plain moves), or the write without a facts read would never be used. */
static void test_move_unread(void **state) {
  (void)state;
  static const char *const texts[] = {NULL, "", "  ", "理由"};
  static const int disposals[] = {0, 1, 3, 7}; /* none, two valid, one unknown */
  const clue_role_t roles[] = {CLUE_ROLE_UNSPECIFIED, CLUE_ROLE_MEMBER, CLUE_ROLE_LEADER,
                               CLUE_ROLE_AUDITOR, CLUE_ROLE_ADMIN, (clue_role_t)9};
  const clue_unit_kind_t kinds[] = {CLUE_UNIT_UNSPECIFIED, CLUE_UNIT_ROOM, CLUE_UNIT_GROUP,
                                    CLUE_UNIT_REGION, CLUE_UNIT_ADMIN};
  const int64_t units[] = {0, 5};
  int returned = 0, leader_moves = 0;

  for (size_t ri = 0; ri < NELEM(roles); ri++)
    for (size_t ki = 0; ki < NELEM(kinds); ki++)
      for (size_t ui = 0; ui < NELEM(units); ui++)
        for (int t = -1; t <= CLUE_STATE_COUNT; t++)
          for (unsigned bits = 0; bits < (1u << 8); bits++) {
            authz_principal_t p = {
                .user_id = 77, .unit_id = units[ui], .unit_kind = kinds[ki], .role = roles[ri]};
            clue_move_facts_t f = {
                .reason = texts[bits & 3],
                .disposal = disposals[(bits >> 2) & 3],
                .finding = texts[(bits >> 4) & 1 ? 3 : 1],
                .sanction_kind = texts[(bits >> 5) & 1 ? 3 : 0],
                .persons_disciplined = (bits >> 6) & 1 ? 2 : -1,
                .receiving_organ = texts[(bits >> 7) & 1 ? 3 : 2],
            };
            const clue_move_t *m = authz_move_unread(&p, (clue_state_t)t, &f);
            if (m == NULL)
              continue;
            returned++;
            if (p.role == CLUE_ROLE_LEADER)
              leader_moves++;
            assert_int_equal(m->to, t);
            assert_false(m->co_review);
            assert_int_equal(clue_fsm_check_fields(m, &f, NULL), CLUE_FSM_OK);
            /* Every clue the guard lets through: the caller's unit, the from state, no
             * pending proposal, no recusal; the rest varied. */
            for (int ok = 0; ok < 4; ok++)
              for (int lead = 0; lead < 3; lead++)
                for (int flags = 0; flags < 8; flags++) {
                  const int64_t leads[] = {0, p.unit_id, 2};
                  authz_clue_t c = {.owner_unit_id = p.unit_id,
                                    .owner_unit_kind = (clue_unit_kind_t)ok,
                                    .owner_liaison_room_id = ok == CLUE_UNIT_GROUP ? 1 : 0,
                                    .case_lead_unit_id = leads[lead],
                                    .principal_in_case = flags & 1,
                                    .pending_reviewer_unit_id = 0,
                                    .deadline_extended = flags & 2,
                                    .state = m->from,
                                    .principal_is_handler = flags & 4};
                  const clue_move_t *got = NULL;
                  authz_result_t r = authz_can_move(&p, &c, (clue_state_t)t, &got);
                  assert_int_equal(r.decision, AUTHZ_ALLOW);
                  assert_ptr_equal(got, m);
                }
          }
  assert_true(returned > 0);
  assert_int_equal(leader_moves, returned); /* every move is a LEADER's (DESIGN.md §2) */
  /* The common moves are decided without the clue. */
  authz_principal_t lp = {
      .user_id = 1, .unit_id = 5, .unit_kind = CLUE_UNIT_GROUP, .role = CLUE_ROLE_LEADER};
  clue_move_facts_t start = {.reason = "初核"};
  const clue_move_t *m = authz_move_unread(&lp, CLUE_STATE_PRELIMINARY_CHECK, &start);
  assert_non_null(m);
  assert_int_equal(m->from, CLUE_STATE_ACCEPTED);
  clue_move_facts_t close = {.reason = "了结", .finding = "查无实据"};
  m = authz_move_unread(&lp, CLUE_STATE_CLOSED, &close);
  assert_non_null(m);
  assert_int_equal(m->from, CLUE_STATE_PRELIMINARY_CHECK);
  /* Not decided without the clue: two closes fit (only its state tells which), a move that
   * needs co-review, a MEMBER, a unit of no kind that works on clues, no unit. */
  clue_move_facts_t both = {.reason = "了结", .finding = "查无实据", .disposal = 1};
  assert_null(authz_move_unread(&lp, CLUE_STATE_CLOSED, &both));
  assert_null(authz_move_unread(&lp, CLUE_STATE_FILED, &start));
  authz_principal_t member = lp, admin = lp, unitless = lp;
  member.role = CLUE_ROLE_MEMBER;
  admin.unit_kind = CLUE_UNIT_ADMIN;
  unitless.unit_id = 0;
  assert_null(authz_move_unread(&member, CLUE_STATE_PRELIMINARY_CHECK, &start));
  assert_null(authz_move_unread(&admin, CLUE_STATE_PRELIMINARY_CHECK, &start));
  assert_null(authz_move_unread(&unitless, CLUE_STATE_PRELIMINARY_CHECK, &start));
  assert_null(authz_move_unread(NULL, CLUE_STATE_PRELIMINARY_CHECK, &start));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_codes_are_grpc),
      cmocka_unit_test(test_matrix_see),
      cmocka_unit_test(test_matrix_reporter),
      cmocka_unit_test(test_matrix_note),
      cmocka_unit_test(test_matrix_move),
      cmocka_unit_test(test_move_unread),
      cmocka_unit_test(test_matrix_handover),
      cmocka_unit_test(test_matrix_extend),
      cmocka_unit_test(test_matrix_review),
      cmocka_unit_test(test_examples),
      cmocka_unit_test(test_fail_closed),
      cmocka_unit_test(test_scope),
      cmocka_unit_test(test_submit),
      cmocka_unit_test(test_reviewer_selection),
      cmocka_unit_test(test_self_review),
      cmocka_unit_test(test_named_reviewer),
      cmocka_unit_test(test_handover_targets),
      cmocka_unit_test(test_extend_messages),
      cmocka_unit_test(test_case_matrix),
      cmocka_unit_test(test_create_case),
      cmocka_unit_test(test_matrix_add_clue),
      cmocka_unit_test(test_matrix_remove_clue),
      cmocka_unit_test(test_add_clue_to_case),
      cmocka_unit_test(test_remove_clue_from_case),
      cmocka_unit_test(test_case_participants),
      cmocka_unit_test(test_audit_and_admin),
      cmocka_unit_test(test_role_fits_unit),
      cmocka_unit_test(test_liaison_fits),
      cmocka_unit_test(test_audit_fields_and_tokens),
      cmocka_unit_test(test_audit_recusal_fields),
  };
  return cmocka_run_group_tests(tests, NULL, report);
}
