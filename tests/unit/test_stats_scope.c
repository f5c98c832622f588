/* Whose statistics a caller reads (server/domain/stats_scope.c): every role in every kind of
 * unit, asked about every kind of unit standing in every relation to it. The expected answers
 * are written out below from the rules in stats_scope.h, not derived from the code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "domain/stats_scope.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

enum { ME = 10, OTHER_ROOM = 20, MY_GROUP = 30, OTHERS_GROUP = 31, REGION = 40, ADMIN = 50 };

/* The units asked about, relative to a caller in unit ME. */
typedef enum target {
  T_OWN,          /* the caller's own unit (kind: the caller's) */
  T_MY_GROUP,     /* a GROUP whose liaison room is ME */
  T_OTHERS_GROUP, /* a GROUP of another room */
  T_OTHER_ROOM,
  T_REGION,
  T_ADMIN_UNIT,
  T_MISSING, /* no such unit */
  NTARGETS
} target_t;

static stats_unit_t unit_for(target_t t, clue_unit_kind_t own_kind) {
  switch (t) {
  case T_OWN:
    return (stats_unit_t){ME, own_kind, own_kind == CLUE_UNIT_GROUP ? OTHER_ROOM : 0};
  case T_MY_GROUP:
    return (stats_unit_t){MY_GROUP, CLUE_UNIT_GROUP, ME};
  case T_OTHERS_GROUP:
    return (stats_unit_t){OTHERS_GROUP, CLUE_UNIT_GROUP, OTHER_ROOM};
  case T_OTHER_ROOM:
    return (stats_unit_t){OTHER_ROOM, CLUE_UNIT_ROOM, 0};
  case T_REGION:
    return (stats_unit_t){REGION, CLUE_UNIT_REGION, 0};
  case T_ADMIN_UNIT:
    return (stats_unit_t){ADMIN, CLUE_UNIT_ADMIN, 0};
  default:
    return (stats_unit_t){999, CLUE_UNIT_UNSPECIFIED, 0};
  }
}

/* Expected answer of stats_can_ask for staff (MEMBER or LEADER) by the caller's unit kind;
 * A = allow, D = denied. An ADMIN-kind own unit cannot hold staff: everything is denied. */
static const char staff_expect[5][NTARGETS + 1] = {
    /*                      own  myG  othG  room  reg  adm  missing */
    [CLUE_UNIT_ROOM] = "AADDDDD",
    [CLUE_UNIT_GROUP] = "ADDDDDD",
    [CLUE_UNIT_REGION] = "ADDDDDD",
};

/* AUDITOR and ADMIN: every working unit; N = NOT_FOUND, I = INVALID_ARGUMENT. */
static const char all_expect[NTARGETS + 1] = "AAAAAIN";

static int code_of(char c) {
  switch (c) {
  case 'A':
    return AUTHZ_ALLOW;
  case 'D':
    return AUTHZ_DENIED;
  case 'N':
    return AUTHZ_NOT_FOUND;
  default:
    return AUTHZ_INVALID_ARGUMENT;
  }
}

static void test_matrix(void **state) {
  static const clue_role_t roles[] = {CLUE_ROLE_UNSPECIFIED, CLUE_ROLE_MEMBER, CLUE_ROLE_LEADER,
                                      CLUE_ROLE_AUDITOR, CLUE_ROLE_ADMIN};
  static const clue_unit_kind_t kinds[] = {CLUE_UNIT_UNSPECIFIED, CLUE_UNIT_ROOM, CLUE_UNIT_GROUP,
                                           CLUE_UNIT_REGION, CLUE_UNIT_ADMIN};
  (void)state;

  for (size_t r = 0; r < NELEM(roles); r++)
    for (size_t k = 0; k < NELEM(kinds); k++) {
      authz_principal_t p = {.user_id = 1, .unit_id = ME, .unit_kind = kinds[k], .role = roles[r]};
      bool all = roles[r] == CLUE_ROLE_AUDITOR || roles[r] == CLUE_ROLE_ADMIN;
      bool staff = (roles[r] == CLUE_ROLE_MEMBER || roles[r] == CLUE_ROLE_LEADER) &&
                   kinds[k] != CLUE_UNIT_UNSPECIFIED && kinds[k] != CLUE_UNIT_ADMIN;
      authz_result_t read = stats_can_read(&p);

      assert_int_equal(read.decision, (all || staff) ? AUTHZ_ALLOW : AUTHZ_DENIED);
      assert_int_equal(read.grpc_code, (int)read.decision);
      assert_int_equal(stats_cases_narrowed(&p), !all);
      /* Only AUDITOR and ADMIN count the clues they would be recused from (they never are). */
      assert_int_equal(stats_leave_out_recusals(&p), !all);
      for (int t = 0; t < NTARGETS; t++) {
        stats_unit_t u = unit_for((target_t)t, kinds[k]);
        authz_result_t res = stats_can_ask(&p, u.id, &u);
        int want;

        if (all)
          want = code_of(all_expect[t]);
        else if (staff)
          want = code_of(staff_expect[kinds[k]][t]);
        else
          want = AUTHZ_DENIED;
        /* An auditor's or admin's own unit is an ADMIN unit (or of a kind tests make up). */
        if (all && t == T_OWN)
          want = (kinds[k] == CLUE_UNIT_ROOM || kinds[k] == CLUE_UNIT_GROUP ||
                  kinds[k] == CLUE_UNIT_REGION)
                     ? AUTHZ_ALLOW
                     : (kinds[k] == CLUE_UNIT_ADMIN ? AUTHZ_INVALID_ARGUMENT : AUTHZ_NOT_FOUND);
        if ((int)res.decision != want)
          fail_msg("role %d kind %d target %d: got %d (%s), want %d", roles[r], kinds[k], t,
                   res.decision, res.message, want);
        assert_int_equal(stats_in_scope(&p, &u), want == AUTHZ_ALLOW);
        if (want != AUTHZ_ALLOW) {
          char id[32];
          snprintf(id, sizeof(id), "%lld", (long long)u.id);
          if (want != AUTHZ_DENIED || staff)
            assert_non_null(strstr(res.message, id));
        } else {
          assert_string_equal(res.message, "");
        }
      }
    }
}

static void test_messages(void **state) {
  authz_principal_t room = {1, ME, CLUE_UNIT_ROOM, CLUE_ROLE_LEADER};
  authz_principal_t group = {1, ME, CLUE_UNIT_GROUP, CLUE_ROLE_MEMBER};
  authz_principal_t nobody = {1, ME, CLUE_UNIT_ADMIN, CLUE_ROLE_MEMBER};
  stats_unit_t other = {OTHER_ROOM, CLUE_UNIT_ROOM, 0};
  authz_result_t r;
  (void)state;

  r = stats_can_ask(&room, other.id, &other);
  assert_string_equal(r.message, "statistics of unit 20 are outside your scope (your own unit and "
                                 "the groups it liaises with)");
  r = stats_can_ask(&group, other.id, &other);
  assert_string_equal(r.message, "statistics of unit 20 are outside your scope (your own unit)");
  r = stats_can_read(&nobody);
  assert_int_equal(r.grpc_code, 7);
  assert_non_null(strstr(r.message, "may read statistics"));
}

static void test_fails_closed(void **state) {
  authz_principal_t p = {1, 0, CLUE_UNIT_GROUP, CLUE_ROLE_LEADER};
  stats_unit_t zero = {0, CLUE_UNIT_GROUP, 0};
  stats_unit_t g = {MY_GROUP, CLUE_UNIT_GROUP, 0};
  (void)state;

  /* Unit id 0 matches nothing, NULL facts are nobody's. */
  assert_false(stats_in_scope(&p, &zero));
  assert_int_equal(stats_can_read(&p).decision, AUTHZ_DENIED);
  assert_false(stats_in_scope(NULL, &g));
  assert_false(stats_in_scope(&p, NULL));
  assert_int_equal(stats_can_read(NULL).decision, AUTHZ_DENIED);
  /* A room is not the liaison of a group that names no room. */
  p.unit_id = ME;
  p.unit_kind = CLUE_UNIT_ROOM;
  assert_false(stats_in_scope(&p, &g));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matrix),
      cmocka_unit_test(test_messages),
      cmocka_unit_test(test_fails_closed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
