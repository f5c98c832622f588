/* Assigned handlers (承办人, 派员参与) and recusal (回避) in server/domain/authz.c, against
 * issue 14 Build 2 and 3 (docs/COOPERATION.md):
 *
 * - a handler from another unit sees the clue, never its reporter, may add notes, never moves
 *   it, hands it over or extends its deadline; the list scope of every staff member includes
 *   the clues it handles;
 * - who may assign and unassign: a LEADER of the owner unit or of the case's lead room; every
 *   other principal that sees the clue is DENIED, one that does not gets NOT_FOUND; the
 *   target's checks come after, in the documented order;
 * - a recused user sees nothing of the clue (NOT_FOUND, whatever else would show it), cannot
 *   review its proposals, move it, or be assigned; recusal outweighs an assignment;
 * - when every leader of the owner unit is recused, staff of the unit get FAILED_PRECONDITION
 *   naming the recusals instead of PERMISSION_DENIED, and a reviewer unit in that state
 *   refuses the proposal up front. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "domain/authz.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

enum { OWNER = 11, LIAISON = 1, LEAD = 2, OTHER_ROOM = 4, OTHER_GROUP = 13 };

static authz_principal_t who(int64_t user, int64_t unit, clue_unit_kind_t kind, clue_role_t role) {
  authz_principal_t p = {user, unit, kind, role};
  return p;
}

/* A GROUP's clue in PRELIMINARY_CHECK, liaison room LIAISON, in no case. */
static authz_clue_t clue(void) {
  authz_clue_t c;
  memset(&c, 0, sizeof(c));
  c.owner_unit_id = OWNER;
  c.owner_unit_kind = CLUE_UNIT_GROUP;
  c.owner_liaison_room_id = LIAISON;
  c.state = CLUE_STATE_PRELIMINARY_CHECK;
  return c;
}

/* A user who works on clues: an active MEMBER of OTHER_ROOM. */
static authz_user_t staff_user(int64_t id) {
  authz_user_t u;
  memset(&u, 0, sizeof(u));
  u.user_id = id;
  u.exists = u.active = true;
  u.unit_id = OTHER_ROOM;
  u.unit_kind = CLUE_UNIT_ROOM;
  u.role = CLUE_ROLE_MEMBER;
  return u;
}

static void expect(const authz_result_t *r, authz_decision_t want, const char *ctx) {
  if (r->decision != want)
    fail_msg("%s: got %d (%s: %s), want %d", ctx, (int)r->decision, r->reason ? r->reason : "",
             r->message, (int)want);
  assert_int_equal(r->grpc_code, (int)want);
}

static void expect_msg(const authz_result_t *r, authz_decision_t want, const char *part,
                       const char *ctx) {
  expect(r, want, ctx);
  if (strstr(r->message, part) == NULL)
    fail_msg("%s: message \"%s\" lacks \"%s\"", ctx, r->message, part);
}

/* A room member seconded to a group's preliminary check sees the clue while assigned, adds
 * notes, and does nothing a leader of the owner does; unassigned, the clue is hidden again. */
static void test_seconded_handler(void **state) {
  (void)state;
  authz_principal_t m = who(50, OTHER_ROOM, CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER);
  authz_principal_t l = who(51, OTHER_ROOM, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER);
  authz_clue_t c = clue();
  authz_result_t r;

  r = authz_can_see_clue(&m, &c);
  expect(&r, AUTHZ_NOT_FOUND, "before assignment");
  c.principal_is_handler = true;
  r = authz_can_see_clue(&m, &c);
  expect(&r, AUTHZ_ALLOW, "handler sees");
  r = authz_can_add_note(&m, &c);
  expect(&r, AUTHZ_ALLOW, "handler adds notes");
  r = authz_can_see_reporter(&m, &c);
  expect(&r, AUTHZ_DENIED, "handler never sees the reporter");
  r = authz_can_move(&m, &c, CLUE_STATE_CLOSED, NULL);
  expect(&r, AUTHZ_DENIED, "handler never moves");
  r = authz_can_handover(&m, &c, OTHER_GROUP, CLUE_UNIT_GROUP);
  expect(&r, AUTHZ_DENIED, "handler never hands over");
  r = authz_can_extend_deadline(&m, &c);
  expect(&r, AUTHZ_DENIED, "handler never extends");
  /* A LEADER of its own unit handling the clue still may not move it, nor see the reporter. */
  r = authz_can_move(&l, &c, CLUE_STATE_CLOSED, NULL);
  expect(&r, AUTHZ_DENIED, "leader-handler never moves");
  r = authz_can_see_reporter(&l, &c);
  expect(&r, AUTHZ_DENIED, "leader-handler never sees the reporter");
  /* Nor may a handler assign others. */
  authz_user_t u = staff_user(60);
  r = authz_can_assign(&m, &c, &u);
  expect(&r, AUTHZ_DENIED, "handler assigns nobody");
  c.principal_is_handler = false;
  r = authz_can_add_note(&m, &c);
  expect(&r, AUTHZ_NOT_FOUND, "after unassignment");
  /* The list scope of every staff member takes in the clues it handles, less recusals. */
  unsigned scope = authz_clue_scope(&m);
  assert_true(scope & AUTHZ_SCOPE_HANDLED);
  assert_true(scope & AUTHZ_SCOPE_UNRECUSED);
  authz_principal_t aud = who(70, 31, CLUE_UNIT_ADMIN, CLUE_ROLE_AUDITOR);
  assert_int_equal(authz_clue_scope(&aud), AUTHZ_SCOPE_ALL);
  authz_principal_t adm = who(71, 31, CLUE_UNIT_ADMIN, CLUE_ROLE_ADMIN);
  c.principal_is_handler = true; /* an ADMIN is never a handler: the fact is ignored */
  r = authz_can_see_clue(&adm, &c);
  expect(&r, AUTHZ_NOT_FOUND, "admin with a stray handler fact");
}

/* Who may assign and unassign, and in what order the refusals come. */
static void test_who_assigns(void **state) {
  (void)state;
  authz_clue_t c = clue();
  authz_user_t u = staff_user(60);
  authz_result_t r;
  static const struct {
    int64_t unit;
    clue_unit_kind_t kind;
    clue_role_t role;
    bool in_case; /* the clue is in a case LEAD leads */
    authz_decision_t want;
    const char *what;
  } rows[] = {
      {OWNER, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER, false, AUTHZ_ALLOW, "owner leader"},
      {OWNER, CLUE_UNIT_GROUP, CLUE_ROLE_MEMBER, false, AUTHZ_DENIED, "owner member"},
      {LIAISON, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER, false, AUTHZ_DENIED, "liaison leader"},
      {LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER, true, AUTHZ_ALLOW, "case lead leader"},
      {LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER, true, AUTHZ_DENIED, "case lead member"},
      {LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER, false, AUTHZ_NOT_FOUND, "lead room, no case"},
      {OTHER_GROUP, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER, false, AUTHZ_NOT_FOUND, "unrelated"},
      {31, CLUE_UNIT_ADMIN, CLUE_ROLE_AUDITOR, false, AUTHZ_DENIED, "auditor"},
      {31, CLUE_UNIT_ADMIN, CLUE_ROLE_ADMIN, false, AUTHZ_NOT_FOUND, "admin"},
  };
  for (size_t i = 0; i < NELEM(rows); i++) {
    authz_principal_t p = who(100 + (int64_t)i, rows[i].unit, rows[i].kind, rows[i].role);
    authz_clue_t x = c;
    if (rows[i].in_case)
      x.case_lead_unit_id = LEAD;
    if (rows[i].in_case && rows[i].unit == LEAD)
      x.principal_in_case = true;
    r = authz_can_assign(&p, &x, &u);
    expect(&r, rows[i].want, rows[i].what);
    authz_user_t h = u;
    h.handler = true;
    r = authz_can_unassign(&p, &x, &h);
    expect(&r, rows[i].want, rows[i].what);
  }

  authz_principal_t l = who(1, OWNER, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER);
  authz_user_t v;
  /* The user id first: no facts needed. */
  v = staff_user(0);
  r = authz_can_assign(&l, &c, &v);
  expect_msg(&r, AUTHZ_INVALID_ARGUMENT, "user_id is required", "no user");
  v = staff_user(-3);
  r = authz_can_assign(&l, &c, &v);
  expect(&r, AUTHZ_INVALID_ARGUMENT, "negative user");
  /* The clue's state before the target's facts. */
  authz_clue_t closed = c;
  closed.state = CLUE_STATE_CLOSED;
  v = staff_user(60);
  v.exists = false;
  r = authz_can_assign(&l, &closed, &v);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "terminal", "closed clue");
  /* Unassigning works in any state. */
  v = staff_user(60);
  v.handler = true;
  r = authz_can_unassign(&l, &closed, &v);
  expect(&r, AUTHZ_ALLOW, "unassign on a closed clue");
  /* Then the target. */
  v = staff_user(60);
  v.exists = false;
  r = authz_can_assign(&l, &c, &v);
  expect_msg(&r, AUTHZ_NOT_FOUND, "user_id: user 60 not found", "missing user");
  r = authz_can_unassign(&l, &c, &v);
  expect_msg(&r, AUTHZ_NOT_FOUND, "user_id: user 60 not found", "missing user (unassign)");
  static const struct {
    clue_role_t role;
    clue_unit_kind_t kind;
    bool active;
    authz_decision_t want;
  } targets[] = {
      {CLUE_ROLE_MEMBER, CLUE_UNIT_ROOM, true, AUTHZ_ALLOW},
      {CLUE_ROLE_LEADER, CLUE_UNIT_REGION, true, AUTHZ_ALLOW},
      {CLUE_ROLE_MEMBER, CLUE_UNIT_GROUP, true, AUTHZ_ALLOW},
      {CLUE_ROLE_MEMBER, CLUE_UNIT_ROOM, false, AUTHZ_INVALID_ARGUMENT},
      {CLUE_ROLE_AUDITOR, CLUE_UNIT_ADMIN, true, AUTHZ_INVALID_ARGUMENT},
      {CLUE_ROLE_AUDITOR, CLUE_UNIT_ROOM, true, AUTHZ_INVALID_ARGUMENT},
      {CLUE_ROLE_ADMIN, CLUE_UNIT_ADMIN, true, AUTHZ_INVALID_ARGUMENT},
      {CLUE_ROLE_UNSPECIFIED, CLUE_UNIT_ROOM, true, AUTHZ_INVALID_ARGUMENT},
      {CLUE_ROLE_MEMBER, CLUE_UNIT_UNSPECIFIED, true, AUTHZ_INVALID_ARGUMENT},
  };
  for (size_t i = 0; i < NELEM(targets); i++) {
    v = staff_user(60);
    v.role = targets[i].role;
    v.unit_kind = targets[i].kind;
    v.active = targets[i].active;
    r = authz_can_assign(&l, &c, &v);
    expect(&r, targets[i].want, "target kind");
  }
  v = staff_user(60);
  v.handler = true;
  r = authz_can_assign(&l, &c, &v);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "already a handler", "twice");
  v.handler = false;
  r = authz_can_unassign(&l, &c, &v);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "not a handler", "unassign a non-handler");
  v.recused = true;
  r = authz_can_assign(&l, &c, &v);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "recused", "recused target");
  /* NULL facts fail closed. */
  r = authz_can_assign(&l, &c, NULL);
  expect(&r, AUTHZ_INVALID_ARGUMENT, "NULL user");
  v = staff_user(60);
  r = authz_can_assign(NULL, &c, &v);
  expect(&r, AUTHZ_NOT_FOUND, "NULL principal");
  r = authz_can_assign(&l, NULL, &v);
  expect(&r, AUTHZ_NOT_FOUND, "NULL clue");
}

/* A recused user: NOT_FOUND wherever it would have seen the clue, whatever the reason. */
static void test_recused_sees_nothing(void **state) {
  (void)state;
  authz_clue_t c = clue();
  authz_user_t u = staff_user(60);
  authz_result_t r;
  const authz_principal_t ps[] = {
      who(1, OWNER, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER),
      who(2, OWNER, CLUE_UNIT_GROUP, CLUE_ROLE_MEMBER),
      who(3, LIAISON, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER),
      who(4, LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER),
      who(5, OTHER_ROOM, CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER),
  };
  c.case_lead_unit_id = LEAD;
  c.pending_reviewer_unit_id = LEAD;
  for (size_t i = 0; i < NELEM(ps); i++) {
    authz_clue_t x = c;
    x.principal_in_case = ps[i].unit_id == LEAD;
    x.principal_is_handler = ps[i].unit_id == OTHER_ROOM;
    r = authz_can_see_clue(&ps[i], &x);
    expect(&r, AUTHZ_ALLOW, "before the recusal");
    x.principal_recused = true;
    r = authz_can_see_clue(&ps[i], &x);
    expect_msg(&r, AUTHZ_NOT_FOUND, "clue not found", "recused: read");
    r = authz_can_add_note(&ps[i], &x);
    expect_msg(&r, AUTHZ_NOT_FOUND, "clue not found", "recused: note");
    r = authz_can_move(&ps[i], &x, CLUE_STATE_CLOSED, NULL);
    expect_msg(&r, AUTHZ_NOT_FOUND, "clue not found", "recused: move");
    r = authz_can_handover(&ps[i], &x, OTHER_GROUP, CLUE_UNIT_GROUP);
    expect(&r, AUTHZ_NOT_FOUND, "recused: handover");
    r = authz_can_extend_deadline(&ps[i], &x);
    expect(&r, AUTHZ_NOT_FOUND, "recused: extend");
    r = authz_can_assign(&ps[i], &x, &u);
    expect(&r, AUTHZ_NOT_FOUND, "recused: assign");
    r = authz_can_recuse(&ps[i], &x, &u);
    expect(&r, AUTHZ_NOT_FOUND, "recused: recuse another");
    authz_proposal_t prop = {99, OWNER, LEAD, true};
    r = authz_can_review(&ps[i], &x, &prop);
    expect_msg(&r, AUTHZ_NOT_FOUND, "proposal not found", "recused: review");
  }
  /* The reviewing room's leader, otherwise allowed, is refused as if the proposal were
   * missing once recused. */
  authz_principal_t rl = who(4, LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER);
  authz_proposal_t prop = {99, OWNER, LEAD, true};
  authz_clue_t x = c;
  x.principal_in_case = true;
  r = authz_can_review(&rl, &x, &prop);
  expect(&r, AUTHZ_ALLOW, "reviewer before the recusal");
  x.principal_recused = true;
  x.principal_in_case = false;
  r = authz_can_review(&rl, &x, &prop);
  expect(&r, AUTHZ_NOT_FOUND, "reviewer after the recusal");
}

/* Who may record a recusal, for whom. */
static void test_who_recuses(void **state) {
  (void)state;
  authz_clue_t c = clue();
  authz_result_t r;
  authz_principal_t om = who(2, OWNER, CLUE_UNIT_GROUP, CLUE_ROLE_MEMBER);
  authz_principal_t ol = who(1, OWNER, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER);
  authz_principal_t ll = who(3, LIAISON, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER);
  authz_principal_t aud = who(7, 31, CLUE_UNIT_ADMIN, CLUE_ROLE_AUDITOR);
  authz_user_t self = staff_user(2), other = staff_user(60), colleague = staff_user(8);

  self.unit_id = colleague.unit_id = OWNER;
  self.unit_kind = colleague.unit_kind = CLUE_UNIT_GROUP;
  r = authz_can_recuse(&om, &c, &self);
  expect(&r, AUTHZ_ALLOW, "a member declares its own conflict");
  r = authz_can_recuse(&om, &c, &colleague);
  expect(&r, AUTHZ_DENIED, "a member records none for a colleague");
  r = authz_can_recuse(&ol, &c, &colleague);
  expect(&r, AUTHZ_ALLOW, "the owner's leader records one for its member");
  r = authz_can_recuse(&ol, &c, &other);
  expect(&r, AUTHZ_ALLOW, "the owner's leader records one for another unit's member");
  authz_user_t liaison_member = staff_user(9);
  liaison_member.unit_id = LIAISON;
  r = authz_can_recuse(&ll, &c, &liaison_member);
  expect(&r, AUTHZ_ALLOW, "a leader records one for its own unit's member");
  r = authz_can_recuse(&ol, &c, &liaison_member);
  expect_msg(&r, AUTHZ_DENIED, "oversees this clue", "the owner's leader, for its liaison room");
  authz_user_t liaison_self = liaison_member;
  authz_principal_t lm9 = who(9, LIAISON, CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER);
  r = authz_can_recuse(&lm9, &c, &liaison_self);
  expect(&r, AUTHZ_ALLOW, "the liaison room's member declares its own");
  r = authz_can_recuse(&ll, &c, &colleague);
  expect(&r, AUTHZ_DENIED, "the liaison leader records none for the owner's member");
  r = authz_can_recuse(&aud, &c, &other);
  expect(&r, AUTHZ_DENIED, "an auditor records none");
  authz_principal_t stranger = who(4, OTHER_GROUP, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER);
  r = authz_can_recuse(&stranger, &c, &other);
  expect(&r, AUTHZ_NOT_FOUND, "a leader who does not see the clue");
  other.recused = true;
  r = authz_can_recuse(&ol, &c, &other);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "already recused", "twice");
  other = staff_user(60);
  other.role = CLUE_ROLE_AUDITOR;
  r = authz_can_recuse(&ol, &c, &other);
  expect(&r, AUTHZ_INVALID_ARGUMENT, "an auditor is not recused");
  other = staff_user(60);
  other.exists = false;
  r = authz_can_recuse(&ol, &c, &other);
  expect_msg(&r, AUTHZ_NOT_FOUND, "user 60 not found", "missing user");
  other = staff_user(0);
  r = authz_can_recuse(&ol, &c, &other);
  expect(&r, AUTHZ_INVALID_ARGUMENT, "no user");
  authz_clue_t closed = c;
  closed.state = CLUE_STATE_CLOSED;
  r = authz_can_recuse(&om, &closed, &self);
  expect(&r, AUTHZ_ALLOW, "any state");

  authz_principal_t lm = who(10, LIAISON, CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER);
  r = authz_can_list_recusals(&ol);
  expect(&r, AUTHZ_ALLOW, "leader lists");
  r = authz_can_list_recusals(&aud);
  expect(&r, AUTHZ_ALLOW, "auditor lists");
  r = authz_can_list_recusals(&lm);
  expect(&r, AUTHZ_DENIED, "member does not list");
  authz_principal_t adm = who(11, 31, CLUE_UNIT_ADMIN, CLUE_ROLE_ADMIN);
  r = authz_can_list_recusals(&adm);
  expect(&r, AUTHZ_DENIED, "admin does not list");
  r = authz_can_list_recusals(NULL);
  expect(&r, AUTHZ_DENIED, "nobody");
  /* A leader sees where its unit's users are seconded; nobody else gets that sight. */
  assert_true(authz_sees_unit_assignments(&ol));
  assert_true(authz_sees_unit_assignments(&ll));
  assert_false(authz_sees_unit_assignments(&lm));
  assert_false(authz_sees_unit_assignments(&aud));
  assert_false(authz_sees_unit_assignments(&adm));
  assert_false(authz_sees_unit_assignments(NULL));
}

/* The staff of a unit overseeing the clue (the owner's liaison room, the case's lead room, the
 * pending proposal's reviewer) are recused by themselves or their own leaders, never by the
 * unit overseen nor by another overseer: a recusal would hide the clue from them. */
static void test_overseers_recused_by_their_own(void **state) {
  (void)state;
  authz_clue_t c = clue();
  authz_result_t r;
  authz_principal_t ol = who(1, OWNER, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER);
  authz_principal_t kl = who(5, LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER);
  authz_user_t liaison = staff_user(9), lead = staff_user(20), owner = staff_user(8),
               reviewer = staff_user(30), participant = staff_user(40);

  liaison.unit_id = LIAISON;
  lead.unit_id = LEAD;
  owner.unit_id = OWNER;
  owner.unit_kind = CLUE_UNIT_GROUP;
  participant.unit_id = OTHER_GROUP;
  participant.unit_kind = CLUE_UNIT_GROUP;
  c.case_lead_unit_id = LEAD;
  r = authz_can_recuse(&ol, &c, &lead);
  expect_msg(&r, AUTHZ_DENIED, "only the user themselves or a LEADER of their unit",
             "owner: lead's");
  r = authz_can_recuse(&kl, &c, &liaison);
  expect(&r, AUTHZ_DENIED, "the lead room, for the liaison room's member");
  r = authz_can_recuse(&kl, &c, &owner);
  expect(&r, AUTHZ_ALLOW, "the lead room, for the owner's member");
  r = authz_can_recuse(&kl, &c, &lead);
  expect(&r, AUTHZ_ALLOW, "the lead room, for its own member");
  r = authz_can_recuse(&ol, &c, &participant);
  expect(&r, AUTHZ_ALLOW, "the owner, for a participant's member");
  lead.exists = false;
  r = authz_can_recuse(&ol, &c, &lead);
  expect_msg(&r, AUTHZ_NOT_FOUND, "user 20 not found", "a missing user is missing first");

  /* A room's own clue under review by another room: the reviewer is the overseer. */
  authz_clue_t rc = clue();
  authz_principal_t rl = who(6, LEAD, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER);
  rc.owner_unit_id = LEAD;
  rc.owner_unit_kind = CLUE_UNIT_ROOM;
  rc.owner_liaison_room_id = 0;
  rc.pending_reviewer_unit_id = OTHER_ROOM;
  r = authz_can_recuse(&rl, &rc, &reviewer);
  expect(&r, AUTHZ_DENIED, "the owner room, for its reviewer's member");
  rc.pending_reviewer_unit_id = 0;
  r = authz_can_recuse(&rl, &rc, &reviewer);
  expect(&r, AUTHZ_ALLOW, "no review pending: an unrelated room's member");
  /* A room leading the case of its own clue oversees nothing of it but owns it. */
  rc.case_lead_unit_id = LEAD;
  lead.exists = true;
  r = authz_can_recuse(&rl, &rc, &lead);
  expect(&r, AUTHZ_ALLOW, "owner and lead: its own member");
}

/* Every leader of the owner unit recused: the unit's staff learn why nobody can act. */
static void test_every_leader_recused(void **state) {
  (void)state;
  authz_clue_t c = clue();
  authz_principal_t om = who(2, OWNER, CLUE_UNIT_GROUP, CLUE_ROLE_MEMBER);
  authz_principal_t lm = who(3, LIAISON, CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER);
  authz_user_t u = staff_user(60);
  authz_result_t r;

  r = authz_can_move(&om, &c, CLUE_STATE_CLOSED, NULL);
  expect(&r, AUTHZ_DENIED, "member, leaders free");
  assert_true(authz_refused_permission(&r));
  c.owner_leaders_recused = true;
  r = authz_can_move(&om, &c, CLUE_STATE_CLOSED, NULL);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "every LEADER of the owner unit is recused", "move");
  /* It stands for the permission: told before a stale version is. */
  assert_true(authz_refused_permission(&r));
  r = authz_can_handover(&om, &c, OTHER_GROUP, CLUE_UNIT_GROUP);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "recused", "handover");
  r = authz_can_extend_deadline(&om, &c);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "recused", "extend");
  r = authz_can_assign(&om, &c, &u);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "recused", "assign");
  /* Outside the owner unit it stays a question of permission. */
  r = authz_can_move(&lm, &c, CLUE_STATE_CLOSED, NULL);
  expect(&r, AUTHZ_DENIED, "liaison member");
  r = authz_can_assign(&lm, &c, &u);
  expect(&r, AUTHZ_DENIED, "liaison member assigns");

  /* A proposal pending before a unit none of whose leaders may review: the owner's leader and
   * the reviewing unit's staff learn why it is stuck instead of waiting. */
  authz_clue_t pc = clue();
  authz_principal_t ol = who(1, OWNER, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER);
  authz_principal_t other = who(9, OTHER_ROOM, CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER);
  authz_proposal_t prop = {77, OWNER, LIAISON, true};
  pc.pending_reviewer_unit_id = LIAISON;
  r = authz_can_move(&ol, &pc, CLUE_STATE_CLOSED, NULL);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "must be reviewed first", "pending, reviewers free");
  r = authz_can_review(&lm, &pc, &prop);
  expect(&r, AUTHZ_DENIED, "reviewing unit's member, leaders free");
  pc.reviewer_leaders_recused = true;
  r = authz_can_move(&ol, &pc, CLUE_STATE_CLOSED, NULL);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "nobody can review it", "pending, reviewers recused");
  assert_false(authz_refused_permission(&r)); /* a state: a stale version is told first */
  r = authz_can_review(&lm, &pc, &prop);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "every LEADER of the reviewing unit is recused",
             "reviewing unit's member, leaders recused");
  r = authz_can_review(&other, &pc, &prop);
  expect(&r, AUTHZ_NOT_FOUND, "an outsider still learns nothing");
  /* The handover is named as a way out only where the clue's state allows it: a FILED clue's
   * proposal (a transfer to judicial organs) has the ADMIN's way alone. */
  r = authz_can_move(&ol, &pc, CLUE_STATE_CLOSED, NULL);
  assert_non_null(strstr(r.message, "hand the clue over"));
  r = authz_can_review(&lm, &pc, &prop);
  assert_non_null(strstr(r.message, "hand the clue over"));
  pc.state = CLUE_STATE_FILED;
  r = authz_can_move(&ol, &pc, CLUE_STATE_CLOSED, NULL);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "an ADMIN must add a LEADER",
             "filed, reviewers recused");
  assert_null(strstr(r.message, "hand"));
  r = authz_can_review(&lm, &pc, &prop);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "an ADMIN must add a LEADER",
             "filed, reviewer's member");
  assert_null(strstr(r.message, "hand"));
  r = authz_can_handover(&ol, &pc, OTHER_GROUP, CLUE_UNIT_GROUP);
  expect(&r, AUTHZ_FAILED_PRECONDITION, "a filed clue is not handed over");
  pc.state = CLUE_STATE_PRELIMINARY_CHECK;
  authz_proposal_t decided = prop;
  decided.pending = false;
  r = authz_can_review(&lm, &pc, &decided);
  expect(&r, AUTHZ_DENIED, "a decided proposal is a matter of permission");

  r = authz_reviewer_can_act(false);
  expect(&r, AUTHZ_ALLOW, "reviewer free");
  r = authz_reviewer_can_act(true);
  expect_msg(&r, AUTHZ_FAILED_PRECONDITION, "every LEADER of the reviewing unit is recused",
             "reviewer recused");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_seconded_handler),
      cmocka_unit_test(test_who_assigns),
      cmocka_unit_test(test_recused_sees_nothing),
      cmocka_unit_test(test_who_recuses),
      cmocka_unit_test(test_overseers_recused_by_their_own),
      cmocka_unit_test(test_every_leader_recused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
