/* The rectification ledger's state machine and authorization (server/domain/rect.c) against
 * docs/LEDGER.md and issue 14.
 *
 * The expectations are written out here from the design, not read back from rect_fsm_table,
 * so a wrong row in the table fails. Every pair of states, every principal against every
 * item (recused from its source clue or not), and the list scope against the single-item
 * rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "clue/v1/rectification.pb-c.h"
#include "domain/rect.h"

#define NSTATES 6
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *const NAME[NSTATES] = {"UNSPECIFIED", "OPEN",     "PLAN_RECORDED",
                                          "SUBMITTED",   "VERIFIED", "REOPENED"};
enum { U = 0, OPN = 1, PLN = 2, SUB = 3, VER = 4, REO = 5 };

typedef struct expect {
  bool legal;
  const char *action;
  clue_role_t role;
  unsigned required;
} expect_t;

/* Issue 14: OPEN -> PLAN_RECORDED -> SUBMITTED -> VERIFIED (a LEADER), or -> REOPENED with a
 * reason and back to PLAN_RECORDED. Plans and evidence are the supervising unit's staff's. */
static expect_t expect_move(int from, int to) {
  expect_t e = {false, NULL, CLUE_ROLE_UNSPECIFIED, 0};
  if ((from == OPN || from == REO) && to == PLN)
    e = (expect_t){true, "record_plan", CLUE_ROLE_MEMBER, RECT_FIELD_PLAN};
  else if (from == PLN && to == SUB)
    e = (expect_t){true, "submit", CLUE_ROLE_MEMBER, RECT_FIELD_EVIDENCE};
  else if (from == SUB && to == VER)
    e = (expect_t){true, "verify", CLUE_ROLE_LEADER, 0};
  else if (from == SUB && to == REO)
    e = (expect_t){true, "reopen", CLUE_ROLE_LEADER, RECT_FIELD_REASON};
  return e;
}

static void test_enums_match_proto(void **state) {
  (void)state;
  assert_int_equal(RECT_STATE_OPEN, CLUE__V1__RECTIFICATION_STATE__RECTIFICATION_STATE_OPEN);
  assert_int_equal(RECT_STATE_PLAN_RECORDED,
                   CLUE__V1__RECTIFICATION_STATE__RECTIFICATION_STATE_PLAN_RECORDED);
  assert_int_equal(RECT_STATE_SUBMITTED,
                   CLUE__V1__RECTIFICATION_STATE__RECTIFICATION_STATE_SUBMITTED);
  assert_int_equal(RECT_STATE_VERIFIED, CLUE__V1__RECTIFICATION_STATE__RECTIFICATION_STATE_VERIFIED);
  assert_int_equal(RECT_STATE_REOPENED, CLUE__V1__RECTIFICATION_STATE__RECTIFICATION_STATE_REOPENED);
  assert_int_equal(RECT_SOURCE_CLUE, CLUE__V1__RECTIFICATION_SOURCE__RECTIFICATION_SOURCE_CLUE);
  assert_int_equal(RECT_SOURCE_CASE, CLUE__V1__RECTIFICATION_SOURCE__RECTIFICATION_SOURCE_CASE);
  assert_int_equal(RECT_SOURCE_SUPERVISION,
                   CLUE__V1__RECTIFICATION_SOURCE__RECTIFICATION_SOURCE_SUPERVISION);
  assert_int_equal(clue__v1__rectification_state__descriptor.n_values, NSTATES);
}

static void test_every_pair(void **state) {
  int legal = 0;
  (void)state;

  for (int from = 0; from < NSTATES; from++)
    for (int to = 0; to < NSTATES; to++) {
      expect_t e = expect_move(from, to);
      const rect_move_t *m = rect_fsm_find((rect_state_t)from, (rect_state_t)to);
      if (!e.legal) {
        if (m != NULL)
          fail_msg("%s -> %s must be refused", NAME[from], NAME[to]);
        continue;
      }
      legal++;
      if (m == NULL)
        fail_msg("%s -> %s must be allowed", NAME[from], NAME[to]);
      assert_string_equal(m->action, e.action);
      assert_int_equal(m->actor_role, e.role);
      assert_int_equal(m->required, e.required);
      assert_true(m >= rect_fsm_table && m < rect_fsm_table + rect_fsm_table_len);
    }
  assert_int_equal(legal, 5);
  assert_int_equal(rect_fsm_table_len, 5);
}

static void test_names_and_terminal(void **state) {
  (void)state;
  for (int s = 0; s < NSTATES; s++) {
    assert_string_equal(rect_state_name((rect_state_t)s), NAME[s]);
    assert_int_equal(rect_state_is_terminal((rect_state_t)s), s == VER);
    assert_int_equal(rect_state_is_valid(s), s != U);
    if (s != U)
      assert_int_equal(rect_state_of(NAME[s]), s);
  }
  assert_int_equal(rect_state_of("UNSPECIFIED"), U);
  assert_int_equal(rect_state_of(NULL), U);
  assert_int_equal(rect_state_of("open"), U);
  assert_string_equal(rect_state_name((rect_state_t)-1), "UNKNOWN");
  assert_string_equal(rect_state_name((rect_state_t)6), "UNKNOWN");
  assert_false(rect_state_is_valid(6));
  assert_false(rect_source_is_valid(0));
  assert_false(rect_source_is_valid(4));
  assert_int_equal(rect_source_of("SUPERVISION"), RECT_SOURCE_SUPERVISION);
  assert_int_equal(rect_source_of("CASE"), RECT_SOURCE_CASE);
  assert_int_equal(rect_source_of("nope"), RECT_SOURCE_UNSPECIFIED);
  assert_string_equal(rect_source_name(RECT_SOURCE_CLUE), "CLUE");
  assert_int_equal(rect_fsm_required(RECT_STATE_PLAN_RECORDED), RECT_FIELD_PLAN);
  assert_int_equal(rect_fsm_required(RECT_STATE_REOPENED), RECT_FIELD_REASON);
  assert_int_equal(rect_fsm_required(RECT_STATE_VERIFIED), 0);
}

/* Every refused pair's message names the current state and the moves allowed from it. */
static void test_refusal_every_pair(void **state) {
  char buf[AUTHZ_MESSAGE_MAX], want[AUTHZ_MESSAGE_MAX];
  (void)state;

  for (int from = 1; from < NSTATES; from++)
    for (int to = 1; to < NSTATES; to++) {
      if (expect_move(from, to).legal)
        continue;
      rect_fsm_refusal((rect_state_t)from, (rect_state_t)to, buf, sizeof(buf));
      if (from == VER) {
        assert_string_equal(buf,
                            "rectification item is VERIFIED, a terminal state; no moves are allowed");
        continue;
      }
      const char *allowed = from == OPN || from == REO ? "PLAN_RECORDED"
                            : from == PLN             ? "SUBMITTED"
                                                      : "VERIFIED, REOPENED";
      snprintf(want, sizeof(want), "cannot move from %s to %s; allowed from %s: %s", NAME[from],
               NAME[to], NAME[from], allowed);
      assert_string_equal(buf, want);
    }
  rect_fsm_refusal(RECT_STATE_OPEN, RECT_STATE_VERIFIED, buf, 8); /* truncated, terminated */
  assert_int_equal(strlen(buf), 7);
}

/* ---- authorization ---------------------------------------------------------------------- */

enum { G1 = 10, G2 = 11, R1 = 20, R2 = 21, X1 = 30, ADM = 40 };

static authz_principal_t who(int64_t unit, clue_unit_kind_t kind, clue_role_t role) {
  return (authz_principal_t){.user_id = 100 + unit * 3 + role, .unit_id = unit, .unit_kind = kind,
                             .role = role};
}

/* The principals of the tests, and what the issue says each may do with an item supervised by
 * G1 (liaison room R1) found in a joint case that X1 joins. */
typedef struct cast {
  authz_principal_t p;
  bool sees, staff_of_unit, leader_of_unit;
} cast_t;

static cast_t cast[16];
static size_t ncast;

static void build_cast(void) {
  ncast = 0;
#define ADD(u, k, r, s, st, l) cast[ncast++] = (cast_t){who(u, k, r), s, st, l}
  ADD(G1, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER, true, true, true);
  ADD(G1, CLUE_UNIT_GROUP, CLUE_ROLE_MEMBER, true, true, false);
  ADD(R1, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER, true, false, false);
  ADD(R1, CLUE_UNIT_ROOM, CLUE_ROLE_MEMBER, true, false, false);
  ADD(R2, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER, false, false, false);
  ADD(G2, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER, false, false, false);
  ADD(X1, CLUE_UNIT_REGION, CLUE_ROLE_LEADER, true, false, false); /* in the source case */
  ADD(ADM, CLUE_UNIT_ADMIN, CLUE_ROLE_AUDITOR, true, false, false);
  ADD(ADM, CLUE_UNIT_ADMIN, CLUE_ROLE_ADMIN, false, false, false);
  ADD(G1, CLUE_UNIT_GROUP, CLUE_ROLE_UNSPECIFIED, false, false, false);
  ADD(G1, CLUE_UNIT_UNSPECIFIED, CLUE_ROLE_LEADER, false, false, false);
#undef ADD
}

static rect_item_facts_t item_for(const authz_principal_t *p, rect_state_t s, bool recused) {
  return (rect_item_facts_t){.supervising_unit_id = G1,
                             .supervising_liaison_room_id = R1,
                             .principal_in_source_case = p->unit_id == X1,
                             .principal_recused = recused,
                             .state = s};
}

/* Whether cast member c sees the item, the caller recused from its source clue or not: a
 * recused user (only staff are ever recused) sees it no more than a missing one; an AUDITOR's
 * oversight is not a conflict (docs/COOPERATION.md). */
static bool sees(const cast_t *c, bool recused) {
  return c->sees && (!recused || c->p.role == CLUE_ROLE_AUDITOR);
}

static void test_see_matrix(void **state) {
  (void)state;
  build_cast();
  for (size_t i = 0; i < ncast; i++)
    for (int recused = 0; recused < 2; recused++) {
      rect_item_facts_t it = item_for(&cast[i].p, RECT_STATE_OPEN, recused);
      authz_result_t r = rect_can_see(&cast[i].p, &it);
      bool want = sees(&cast[i], recused);
      if (authz_ok(&r) != want)
        fail_msg("principal %zu, recused %d: sees %d, want %d", i, recused, authz_ok(&r), want);
      if (!want) {
        assert_int_equal(r.grpc_code, 5);
        assert_string_equal(r.message, RECT_MSG_NOT_FOUND);
      }
      /* The list scope agrees. */
      unsigned sc = rect_scope(&cast[i].p);
      bool by_scope = ((sc & RECT_SCOPE_ALL) ||
                       ((sc & RECT_SCOPE_OWN_UNIT) && cast[i].p.unit_id == G1) ||
                       ((sc & RECT_SCOPE_LIAISED) && cast[i].p.unit_id == R1) ||
                       ((sc & RECT_SCOPE_SOURCE_CASE) && it.principal_in_source_case)) &&
                      !((sc & RECT_SCOPE_UNRECUSED) && it.principal_recused);
      if (by_scope != want)
        fail_msg("principal %zu, recused %d: scope %u disagrees with rect_can_see", i, recused,
                 sc);
    }
  /* Recused outweighs every reason to see: the supervising unit's own leader, an item of its
   * source case. */
  authz_principal_t gl = who(G1, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER);
  rect_item_facts_t mine = {.supervising_unit_id = G1,
                            .supervising_liaison_room_id = R1,
                            .principal_in_source_case = true,
                            .principal_recused = true,
                            .state = RECT_STATE_SUBMITTED};
  authz_result_t seen = rect_can_see(&gl, &mine);
  assert_int_equal(seen.grpc_code, 5);
  assert_string_equal(seen.reason, "recused from the source clue");
  authz_result_t r = rect_can_see(NULL, NULL);
  assert_int_equal(r.grpc_code, 5);
  /* A REGION whose liaison id happened to match sees nothing through it: only a ROOM liaises. */
  authz_principal_t x = who(R1, CLUE_UNIT_REGION, CLUE_ROLE_LEADER);
  rect_item_facts_t it = {.supervising_unit_id = G1, .supervising_liaison_room_id = R1};
  r = rect_can_see(&x, &it);
  assert_int_equal(r.grpc_code, 5);
}

/* Every principal, every state, every target: NOT_FOUND, then DENIED, then the table. */
static void test_move_matrix(void **state) {
  (void)state;
  build_cast();
  for (size_t i = 0; i < ncast * 2; i++)
    for (int from = 1; from < NSTATES; from++)
      for (int to = 0; to < NSTATES + 1; to++) {
        const cast_t *c = &cast[i % ncast];
        bool recused = i >= ncast; /* the second round: recused from the source clue */
        rect_item_facts_t it = item_for(&c->p, (rect_state_t)from, recused);
        const rect_move_t *m = NULL;
        authz_result_t r = rect_can_move(&c->p, &it, (rect_state_t)to, &m);
        expect_t e = expect_move(from, to);
        int want;
        clue_role_t need = e.legal ? e.role
                           : to == PLN || to == SUB ? CLUE_ROLE_MEMBER
                                                    : CLUE_ROLE_LEADER;
        if (to == U || to >= NSTATES)
          want = 3;
        else if (!sees(c, recused))
          want = 5;
        else if (!c->staff_of_unit || (need == CLUE_ROLE_LEADER && !c->leader_of_unit))
          want = 7;
        else if (!e.legal)
          want = 9;
        else
          want = 0;
        if (r.grpc_code != want)
          fail_msg("principal %zu: %s -> %d: got %d (%s), want %d", i, NAME[from], to, r.grpc_code,
                   r.message, want);
        if (want == 0)
          assert_ptr_equal(m, rect_fsm_find((rect_state_t)from, (rect_state_t)to));
        else
          assert_null(m);
      }
}

static void test_create(void **state) {
  (void)state;
  authz_principal_t gl = who(G1, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER);
  authz_principal_t gm = who(G1, CLUE_UNIT_GROUP, CLUE_ROLE_MEMBER);
  authz_principal_t rl = who(R1, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER);
  authz_principal_t xl = who(X1, CLUE_UNIT_REGION, CLUE_ROLE_LEADER);
  authz_principal_t au = who(ADM, CLUE_UNIT_ADMIN, CLUE_ROLE_AUDITOR);
  authz_principal_t ad = who(ADM, CLUE_UNIT_ADMIN, CLUE_ROLE_ADMIN);
  rect_source_facts_t own_clue = {RECT_SOURCE_CLUE, true, true, true, false};
  rect_source_facts_t seen_clue = {RECT_SOURCE_CLUE, true, true, false, false};
  rect_source_facts_t hidden_clue = {RECT_SOURCE_CLUE, true, false, false, false};
  rect_source_facts_t missing_clue = {RECT_SOURCE_CLUE, false, false, false, false};
  rect_source_facts_t in_case = {RECT_SOURCE_CASE, true, true, true, false};
  rect_source_facts_t seen_case_not_in = {RECT_SOURCE_CASE, true, true, false, false};
  rect_source_facts_t missing_case = {RECT_SOURCE_CASE, false, false, false, false};
  rect_source_facts_t sup_ok = {RECT_SOURCE_SUPERVISION, true, true, false, true};
  rect_source_facts_t sup_bad = {RECT_SOURCE_SUPERVISION, true, true, false, false};
  rect_source_facts_t nosrc = {RECT_SOURCE_UNSPECIFIED, true, true, true, true};
  authz_result_t r;

  r = rect_can_create(&gl, &own_clue);
  assert_int_equal(r.grpc_code, 0);
  r = rect_can_create(&gm, &own_clue);
  assert_int_equal(r.grpc_code, 7);
  r = rect_can_create(&au, &own_clue);
  assert_int_equal(r.grpc_code, 7);
  r = rect_can_create(&ad, &sup_ok);
  assert_int_equal(r.grpc_code, 7);
  r = rect_can_create(&rl, &seen_clue);
  assert_int_equal(r.grpc_code, 7);
  r = rect_can_create(&rl, &hidden_clue);
  assert_int_equal(r.grpc_code, 5);
  assert_string_equal(r.message, "source_clue_id: clue not found");
  r = rect_can_create(&rl, &missing_clue);
  assert_int_equal(r.grpc_code, 5);
  assert_string_equal(r.message, "source_clue_id: clue not found");
  r = rect_can_create(&xl, &in_case);
  assert_int_equal(r.grpc_code, 0);
  r = rect_can_create(&xl, &seen_case_not_in);
  assert_int_equal(r.grpc_code, 5);
  r = rect_can_create(&xl, &missing_case);
  assert_int_equal(r.grpc_code, 5);
  assert_string_equal(r.message, "source_case_id: joint case not found");
  r = rect_can_create(&gl, &sup_ok);
  assert_int_equal(r.grpc_code, 0);
  r = rect_can_create(&gl, &sup_bad);
  assert_int_equal(r.grpc_code, 3);
  r = rect_can_create(&rl, &sup_bad); /* a room or region names any host unit */
  assert_int_equal(r.grpc_code, 0);
  r = rect_can_create(&xl, &sup_bad);
  assert_int_equal(r.grpc_code, 0);
  r = rect_can_create(&gl, &nosrc);
  assert_int_equal(r.grpc_code, 3);
  r = rect_can_create(NULL, &sup_ok);
  assert_int_equal(r.grpc_code, 7);
  r = rect_can_create(&gl, NULL);
  assert_int_equal(r.grpc_code, 7);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_enums_match_proto),  cmocka_unit_test(test_every_pair),
      cmocka_unit_test(test_names_and_terminal), cmocka_unit_test(test_refusal_every_pair),
      cmocka_unit_test(test_see_matrix),         cmocka_unit_test(test_move_matrix),
      cmocka_unit_test(test_create),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
