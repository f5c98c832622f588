/* The clue state machine (server/domain/clue_fsm.c) against DESIGN.md §2.
 *
 * The expectations below are written out from the design's table, not read back from
 * clue_fsm_table, so a wrong row in the table fails here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "clue/v1/clue.pb-c.h"
#include "clue/v1/common.pb-c.h"
#include "domain/clue_fsm.h"

#define NSTATES 6
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* The test's own spelling of the states, in proto order. */
static const char *const NAME[NSTATES] = {
    "UNSPECIFIED", "ACCEPTED", "PRELIMINARY_CHECK", "FILED", "CLOSED", "TRANSFERRED_TO_JUDICIAL",
};

enum { U = 0, ACC = 1, PC = 2, FIL = 3, CLO = 4, TRA = 5 };
enum {
  R = CLUE_FIELD_REASON,
  D = CLUE_FIELD_DISPOSAL,
  FI = CLUE_FIELD_FINDING,
  O = CLUE_FIELD_OUTCOME,
  RO = CLUE_FIELD_RECEIVING_ORGAN
};

/* DESIGN.md §2, pair by pair: legal, co-review, must carry, action. */
typedef struct expect {
  bool legal;
  bool co_review;
  unsigned required;
  const char *action;
} expect_t;

static expect_t expect_move(int from, int to) {
  expect_t e = {false, false, 0, NULL};
  if (from == ACC && to == PC)
    e = (expect_t){true, false, R, "start_check"};
  else if (from == ACC && to == CLO)
    e = (expect_t){true, false, R | D, "close_by_disposal"};
  else if (from == PC && to == FIL)
    e = (expect_t){true, true, R, "file_case"};
  else if (from == PC && to == CLO)
    e = (expect_t){true, false, R | FI, "close_after_check"};
  else if (from == FIL && to == CLO)
    e = (expect_t){true, false, R | O, "conclude_case"};
  else if (from == FIL && to == TRA)
    e = (expect_t){true, true, R | RO, "transfer_to_judicial"};
  return e;
}

/* "allowed from X: ..." lists, written out. NULL: no moves at all. */
static const char *const ALLOWED[NSTATES] = {
    NULL, "PRELIMINARY_CHECK, CLOSED", "FILED, CLOSED", "CLOSED, TRANSFERRED_TO_JUDICIAL", NULL,
    NULL,
};

static void test_enums_match_proto(void **state) {
  (void)state;
#define SAME(ours, proto) _Static_assert((int)(ours) == (int)(proto), #ours " == " #proto)
  SAME(CLUE_STATE_UNSPECIFIED, CLUE__V1__CLUE_STATE__CLUE_STATE_UNSPECIFIED);
  SAME(CLUE_STATE_ACCEPTED, CLUE__V1__CLUE_STATE__CLUE_STATE_ACCEPTED);
  SAME(CLUE_STATE_PRELIMINARY_CHECK, CLUE__V1__CLUE_STATE__CLUE_STATE_PRELIMINARY_CHECK);
  SAME(CLUE_STATE_FILED, CLUE__V1__CLUE_STATE__CLUE_STATE_FILED);
  SAME(CLUE_STATE_CLOSED, CLUE__V1__CLUE_STATE__CLUE_STATE_CLOSED);
  SAME(CLUE_STATE_TRANSFERRED_TO_JUDICIAL,
       CLUE__V1__CLUE_STATE__CLUE_STATE_TRANSFERRED_TO_JUDICIAL);
  SAME(CLUE_DISPOSAL_UNSPECIFIED, CLUE__V1__DISPOSAL__DISPOSAL_UNSPECIFIED);
  SAME(CLUE_DISPOSAL_TALK_OR_LETTER_INQUIRY, CLUE__V1__DISPOSAL__DISPOSAL_TALK_OR_LETTER_INQUIRY);
  SAME(CLUE_DISPOSAL_NO_FURTHER_ACTION, CLUE__V1__DISPOSAL__DISPOSAL_NO_FURTHER_ACTION);
  SAME(CLUE_DISPOSAL_SHELVED, CLUE__V1__DISPOSAL__DISPOSAL_SHELVED);
  SAME(CLUE_UNIT_UNSPECIFIED, CLUE__V1__UNIT_KIND__UNIT_KIND_UNSPECIFIED);
  SAME(CLUE_UNIT_ROOM, CLUE__V1__UNIT_KIND__UNIT_KIND_ROOM);
  SAME(CLUE_UNIT_GROUP, CLUE__V1__UNIT_KIND__UNIT_KIND_GROUP);
  SAME(CLUE_UNIT_REGION, CLUE__V1__UNIT_KIND__UNIT_KIND_REGION);
  SAME(CLUE_UNIT_ADMIN, CLUE__V1__UNIT_KIND__UNIT_KIND_ADMIN);
  SAME(CLUE_ROLE_UNSPECIFIED, CLUE__V1__ROLE__ROLE_UNSPECIFIED);
  SAME(CLUE_ROLE_MEMBER, CLUE__V1__ROLE__ROLE_MEMBER);
  SAME(CLUE_ROLE_LEADER, CLUE__V1__ROLE__ROLE_LEADER);
  SAME(CLUE_ROLE_AUDITOR, CLUE__V1__ROLE__ROLE_AUDITOR);
  SAME(CLUE_ROLE_ADMIN, CLUE__V1__ROLE__ROLE_ADMIN);
#undef SAME

  /* Names agree with the proto's, minus the prefix, for every value the proto defines. */
  const ProtobufCEnumDescriptor *d = &clue__v1__clue_state__descriptor;
  assert_int_equal(d->n_values, CLUE_STATE_COUNT);
  for (unsigned i = 0; i < d->n_values; i++)
    assert_string_equal(clue_state_name((clue_state_t)d->values[i].value),
                        d->values[i].name + strlen("CLUE_STATE_"));
  d = &clue__v1__disposal__descriptor;
  for (unsigned i = 0; i < d->n_values; i++)
    assert_string_equal(clue_disposal_name((clue_disposal_t)d->values[i].value),
                        d->values[i].name + strlen("DISPOSAL_"));
  d = &clue__v1__unit_kind__descriptor;
  for (unsigned i = 0; i < d->n_values; i++)
    assert_string_equal(clue_unit_kind_name((clue_unit_kind_t)d->values[i].value),
                        d->values[i].name + strlen("UNIT_KIND_"));
  d = &clue__v1__role__descriptor;
  for (unsigned i = 0; i < d->n_values; i++)
    assert_string_equal(clue_role_name((clue_role_t)d->values[i].value),
                        d->values[i].name + strlen("ROLE_"));
}

static void test_every_pair(void **state) {
  (void)state;
  int legal = 0;
  for (int from = 0; from < NSTATES; from++) {
    for (int to = 0; to < NSTATES; to++) {
      expect_t e = expect_move(from, to);
      const clue_move_t *m = clue_fsm_find((clue_state_t)from, (clue_state_t)to);
      if (!e.legal) {
        if (m != NULL)
          fail_msg("%s -> %s must be refused", NAME[from], NAME[to]);
        continue;
      }
      legal++;
      if (m == NULL)
        fail_msg("%s -> %s must be allowed", NAME[from], NAME[to]);
      assert_int_equal(m->from, from);
      assert_int_equal(m->to, to);
      assert_int_equal(m->co_review, e.co_review);
      assert_int_equal(m->required, e.required);
      assert_string_equal(m->action, e.action);
      assert_int_equal(m->actor_role, CLUE_ROLE_LEADER);
      /* The row handed out is the table's own, so the server and tests share data. */
      assert_true(m >= clue_fsm_table && m < clue_fsm_table + clue_fsm_table_len);
    }
  }
  assert_int_equal(legal, 6);
}

static void test_out_of_range_states(void **state) {
  (void)state;
  const int odd[] = {-1, 6, 7, 100, -100};
  for (size_t i = 0; i < NELEM(odd); i++) {
    for (int s = 0; s < NSTATES; s++) {
      assert_null(clue_fsm_find((clue_state_t)odd[i], (clue_state_t)s));
      assert_null(clue_fsm_find((clue_state_t)s, (clue_state_t)odd[i]));
    }
    assert_false(clue_state_is_terminal((clue_state_t)odd[i]));
    assert_false(clue_state_is_valid((clue_state_t)odd[i]));
    assert_string_equal(clue_state_name((clue_state_t)odd[i]), "UNKNOWN");
    assert_int_equal(clue_fsm_targets((clue_state_t)odd[i], NULL, 0), 0);
  }
  assert_string_equal(clue_disposal_name((clue_disposal_t)4), "UNKNOWN");
  assert_string_equal(clue_disposal_name((clue_disposal_t)-1), "UNKNOWN");
  assert_string_equal(clue_unit_kind_name((clue_unit_kind_t)5), "UNKNOWN");
  assert_string_equal(clue_role_name((clue_role_t)5), "UNKNOWN");
  assert_string_equal(clue_role_name((clue_role_t)-3), "UNKNOWN");
}

static void test_table_shape(void **state) {
  (void)state;
  assert_int_equal(clue_fsm_table_len, 6);
  for (size_t i = 0; i < clue_fsm_table_len; i++) {
    const clue_move_t *m = &clue_fsm_table[i];
    assert_true(clue_state_is_valid(m->from));
    assert_true(clue_state_is_valid(m->to));
    assert_false(clue_state_is_terminal(m->from));
    assert_int_not_equal(m->from, m->to);
    assert_true(m->required & CLUE_FIELD_REASON); /* every move carries a reason */
    assert_non_null(m->action);
    assert_ptr_equal(clue_fsm_find(m->from, m->to), m);
    for (size_t j = 0; j < i; j++) {
      assert_false(clue_fsm_table[j].from == m->from && clue_fsm_table[j].to == m->to);
      assert_string_not_equal(clue_fsm_table[j].action, m->action);
    }
  }
  /* Nothing leads back to ACCEPTED: it is entered only by submission. */
  for (int s = 0; s < NSTATES; s++)
    assert_null(clue_fsm_find((clue_state_t)s, CLUE_STATE_INITIAL));
  assert_int_equal(CLUE_STATE_INITIAL, CLUE_STATE_ACCEPTED);
}

static void test_targets(void **state) {
  (void)state;
  static const struct {
    int from;
    size_t n;
    int to[2];
  } want[] = {
      {U, 0, {0, 0}},       {ACC, 2, {PC, CLO}}, {PC, 2, {FIL, CLO}},
      {FIL, 2, {CLO, TRA}}, {CLO, 0, {0, 0}},    {TRA, 0, {0, 0}},
  };
  for (size_t i = 0; i < NELEM(want); i++) {
    clue_state_t out[NSTATES];
    memset(out, 0xff, sizeof(out));
    size_t n = clue_fsm_targets((clue_state_t)want[i].from, out, NELEM(out));
    assert_int_equal(n, want[i].n);
    for (size_t k = 0; k < n; k++)
      assert_int_equal(out[k], want[i].to[k]);
    assert_int_equal(out[n], (clue_state_t)-1); /* nothing written past the count */
  }
  /* A short buffer: the full count comes back, only cap entries are written. */
  clue_state_t one[2] = {(clue_state_t)-1, (clue_state_t)-1};
  assert_int_equal(clue_fsm_targets(CLUE_STATE_FILED, one, 1), 2);
  assert_int_equal(one[0], CLUE_STATE_CLOSED);
  assert_int_equal(one[1], (clue_state_t)-1);
  assert_int_equal(clue_fsm_targets(CLUE_STATE_ACCEPTED, NULL, 0), 2);
}

static void test_terminal_and_valid(void **state) {
  (void)state;
  const bool terminal[NSTATES] = {false, false, false, false, true, true};
  const bool valid[NSTATES] = {false, true, true, true, true, true};
  for (int s = 0; s < NSTATES; s++) {
    assert_int_equal(clue_state_is_terminal((clue_state_t)s), terminal[s]);
    assert_int_equal(clue_state_is_valid((clue_state_t)s), valid[s]);
    /* A terminal state has no way out; every other real state has one. */
    size_t n = clue_fsm_targets((clue_state_t)s, NULL, 0);
    if (valid[s])
      assert_int_equal(n == 0, terminal[s]);
  }
}

static void test_state_names(void **state) {
  (void)state;
  for (int s = 0; s < NSTATES; s++)
    assert_string_equal(clue_state_name((clue_state_t)s), NAME[s]);

  for (int s = 1; s < NSTATES; s++) {
    char buf[64];
    clue_state_t out = CLUE_STATE_UNSPECIFIED;
    assert_int_equal(clue_state_from_name(NAME[s], &out), 0);
    assert_int_equal(out, s);

    snprintf(buf, sizeof(buf), "CLUE_STATE_%s", NAME[s]);
    out = CLUE_STATE_UNSPECIFIED;
    assert_int_equal(clue_state_from_name(buf, &out), 0);
    assert_int_equal(out, s);

    for (char *c = buf; *c; c++) /* lower case, prefix included */
      if (*c >= 'A' && *c <= 'Z')
        *c = (char)(*c - 'A' + 'a');
    out = CLUE_STATE_UNSPECIFIED;
    assert_int_equal(clue_state_from_name(buf, &out), 0);
    assert_int_equal(out, s);
    out = CLUE_STATE_UNSPECIFIED;
    assert_int_equal(clue_state_from_name(buf + strlen("clue_state_"), &out), 0);
    assert_int_equal(out, s);
  }

  clue_state_t out = CLUE_STATE_FILED;
  assert_int_equal(clue_state_from_name("Preliminary_Check", &out), 0);
  assert_int_equal(out, CLUE_STATE_PRELIMINARY_CHECK);

  const char *bad[] = {"",
                       "UNSPECIFIED",
                       "CLUE_STATE_UNSPECIFIED",
                       "CLUE_STATE_",
                       "ACCEPTED ",
                       " ACCEPTED",
                       "ACCEPT",
                       "ACCEPTEDX",
                       "PRELIMINARY CHECK",
                       "PRELIMINARY-CHECK",
                       "TRANSFERRED",
                       "CLUE_STATE_CLUE_STATE_FILED",
                       "4"};
  for (size_t i = 0; i < NELEM(bad); i++) {
    out = CLUE_STATE_FILED;
    if (clue_state_from_name(bad[i], &out) != CLUE_FSM_EINVAL)
      fail_msg("\"%s\" must not parse", bad[i]);
    assert_int_equal(out, CLUE_STATE_FILED); /* untouched on failure */
  }
  assert_int_equal(clue_state_from_name(NULL, &out), CLUE_FSM_EINVAL);
}

static void test_other_names(void **state) {
  (void)state;
  assert_string_equal(clue_disposal_name(CLUE_DISPOSAL_UNSPECIFIED), "UNSPECIFIED");
  assert_string_equal(clue_disposal_name(CLUE_DISPOSAL_TALK_OR_LETTER_INQUIRY),
                      "TALK_OR_LETTER_INQUIRY");
  assert_string_equal(clue_disposal_name(CLUE_DISPOSAL_NO_FURTHER_ACTION), "NO_FURTHER_ACTION");
  assert_string_equal(clue_disposal_name(CLUE_DISPOSAL_SHELVED), "SHELVED");
  assert_string_equal(clue_unit_kind_name(CLUE_UNIT_ROOM), "ROOM");
  assert_string_equal(clue_unit_kind_name(CLUE_UNIT_GROUP), "GROUP");
  assert_string_equal(clue_unit_kind_name(CLUE_UNIT_REGION), "REGION");
  assert_string_equal(clue_unit_kind_name(CLUE_UNIT_ADMIN), "ADMIN");
  assert_string_equal(clue_role_name(CLUE_ROLE_MEMBER), "MEMBER");
  assert_string_equal(clue_role_name(CLUE_ROLE_LEADER), "LEADER");
  assert_string_equal(clue_role_name(CLUE_ROLE_AUDITOR), "AUDITOR");
  assert_string_equal(clue_role_name(CLUE_ROLE_ADMIN), "ADMIN");
  const bool valid[] = {false, true, true, true, false, false};
  for (int d = 0; d < (int)NELEM(valid); d++)
    assert_int_equal(clue_disposal_is_valid(d), valid[d]);
  assert_false(clue_disposal_is_valid(-1));
}

static void test_refusal_examples(void **state) {
  (void)state;
  char buf[CLUE_FSM_MSG_MAX];
  assert_int_equal(clue_fsm_refusal(CLUE_STATE_CLOSED, CLUE_STATE_FILED, buf, sizeof(buf)), 0);
  assert_string_equal(buf, "clue is CLOSED, a terminal state; no moves are allowed");
  assert_int_equal(clue_fsm_refusal(CLUE_STATE_ACCEPTED, CLUE_STATE_FILED, buf, sizeof(buf)), 0);
  assert_string_equal(buf, "cannot move from ACCEPTED to FILED; allowed from ACCEPTED: "
                           "PRELIMINARY_CHECK, CLOSED");
  assert_int_equal(
      clue_fsm_refusal(CLUE_STATE_TRANSFERRED_TO_JUDICIAL, CLUE_STATE_CLOSED, buf, sizeof(buf)), 0);
  assert_string_equal(buf,
                      "clue is TRANSFERRED_TO_JUDICIAL, a terminal state; no moves are allowed");
  assert_int_equal(
      clue_fsm_refusal(CLUE_STATE_FILED, CLUE_STATE_PRELIMINARY_CHECK, buf, sizeof(buf)), 0);
  assert_string_equal(buf, "cannot move from FILED to PRELIMINARY_CHECK; allowed from FILED: "
                           "CLOSED, TRANSFERRED_TO_JUDICIAL");
}

/* Every refused pair, and a few out-of-range targets, against the written-out format. */
static void test_refusal_every_pair(void **state) {
  (void)state;
  const int tos[] = {0, 1, 2, 3, 4, 5, 6, -1};
  for (int from = 0; from < NSTATES; from++) {
    for (size_t t = 0; t < NELEM(tos); t++) {
      int to = tos[t];
      if (to >= 0 && to < NSTATES && expect_move(from, to).legal)
        continue;
      const char *to_name = (to >= 0 && to < NSTATES) ? NAME[to] : "UNKNOWN";
      char want[256], got[CLUE_FSM_MSG_MAX];
      if (from == CLO || from == TRA)
        snprintf(want, sizeof(want), "clue is %s, a terminal state; no moves are allowed",
                 NAME[from]);
      else if (ALLOWED[from] == NULL)
        snprintf(want, sizeof(want), "cannot move from %s to %s; no moves are allowed from %s",
                 NAME[from], to_name, NAME[from]);
      else
        snprintf(want, sizeof(want), "cannot move from %s to %s; allowed from %s: %s", NAME[from],
                 to_name, NAME[from], ALLOWED[from]);
      assert_int_equal(clue_fsm_refusal((clue_state_t)from, (clue_state_t)to, got, sizeof(got)), 0);
      assert_string_equal(got, want);
    }
  }
}

static void test_refusal_truncation(void **state) {
  (void)state;
  char buf[20];
  memset(buf, 'x', sizeof(buf));
  assert_int_equal(clue_fsm_refusal(CLUE_STATE_FILED, CLUE_STATE_ACCEPTED, buf, sizeof(buf)),
                   CLUE_FSM_ENOSPC);
  assert_int_equal(strlen(buf), sizeof(buf) - 1);
  assert_memory_equal(buf, "cannot move from FI", 19);
  memset(buf, 'x', sizeof(buf));
  assert_int_equal(clue_fsm_refusal(CLUE_STATE_CLOSED, CLUE_STATE_ACCEPTED, buf, 5),
                   CLUE_FSM_ENOSPC);
  assert_string_equal(buf, "clue");
  assert_int_equal(clue_fsm_refusal(CLUE_STATE_CLOSED, CLUE_STATE_ACCEPTED, buf, 0),
                   CLUE_FSM_ENOSPC);
  assert_int_equal(clue_fsm_refusal(CLUE_STATE_CLOSED, CLUE_STATE_ACCEPTED, NULL, 10),
                   CLUE_FSM_ENOSPC);
  /* Exactly fitting is not truncation. */
  const char *full = "clue is CLOSED, a terminal state; no moves are allowed";
  char exact[64];
  assert_int_equal(
      clue_fsm_refusal(CLUE_STATE_CLOSED, CLUE_STATE_ACCEPTED, exact, strlen(full) + 1), 0);
  assert_string_equal(exact, full);
  assert_int_equal(clue_fsm_refusal(CLUE_STATE_CLOSED, CLUE_STATE_ACCEPTED, exact, strlen(full)),
                   CLUE_FSM_ENOSPC);
}

/* A request carrying every fact any move may need. */
static clue_move_facts_t complete_facts(void) {
  clue_move_facts_t f = {
      .reason = "初核情况属实",
      .disposal = CLUE_DISPOSAL_TALK_OR_LETTER_INQUIRY,
      .finding = "反映问题部分属实",
      .sanction_kind = "党内严重警告",
      .persons_disciplined = 1,
      .receiving_organ = "市人民检察院",
  };
  return f;
}

static const clue_move_t *row(int from, int to) {
  const clue_move_t *m = clue_fsm_find((clue_state_t)from, (clue_state_t)to);
  assert_non_null(m);
  return m;
}

static void expect_field_error(int from, int to, clue_move_facts_t f, unsigned bit,
                               const char *field, const char *message) {
  const clue_move_t *m = row(from, to);
  validate_error_t err;
  memset(&err, 0, sizeof(err));
  assert_int_equal(clue_fsm_missing_field(m, &f), bit);
  assert_int_equal(clue_fsm_check_fields(m, &f, &err), CLUE_FSM_EINVAL);
  assert_string_equal(err.field, field);
  assert_string_equal(err.message, message);
  assert_int_equal(clue_fsm_check_fields(m, &f, NULL), CLUE_FSM_EINVAL);
}

static void test_required_complete(void **state) {
  (void)state;
  for (size_t i = 0; i < clue_fsm_table_len; i++) {
    clue_move_facts_t f = complete_facts();
    validate_error_t err;
    assert_int_equal(clue_fsm_missing_field(&clue_fsm_table[i], &f), 0);
    assert_int_equal(clue_fsm_check_fields(&clue_fsm_table[i], &f, &err), 0);
  }
}

/* Only what the move needs is asked for: every other fact may be absent. */
static void test_required_minimal(void **state) {
  (void)state;
  for (int from = 0; from < NSTATES; from++) {
    for (int to = 0; to < NSTATES; to++) {
      expect_t e = expect_move(from, to);
      if (!e.legal)
        continue;
      clue_move_facts_t f = {.reason = "理由"};
      if (e.required & D)
        f.disposal = CLUE_DISPOSAL_SHELVED;
      if (e.required & FI)
        f.finding = "查无实据";
      if (e.required & O)
        f.sanction_kind = "诫勉", f.persons_disciplined = 0;
      if (e.required & RO)
        f.receiving_organ = "区人民检察院";
      assert_int_equal(clue_fsm_missing_field(row(from, to), &f), 0);
      validate_error_t err;
      assert_int_equal(clue_fsm_check_fields(row(from, to), &f, &err), 0);
    }
  }
}

static void test_required_reason(void **state) {
  (void)state;
  const char *blank[] = {NULL, "", " ", "\t\r\n", "\xE3\x80\x80" /* U+3000 */, " \xC2\xA0 "};
  for (int from = 0; from < NSTATES; from++) {
    for (int to = 0; to < NSTATES; to++) {
      if (!expect_move(from, to).legal)
        continue;
      for (size_t b = 0; b < NELEM(blank); b++) {
        clue_move_facts_t f = complete_facts();
        f.reason = blank[b];
        expect_field_error(from, to, f, CLUE_FIELD_REASON, "reason", "reason is required");
      }
    }
  }
}

static void test_required_disposal(void **state) {
  (void)state;
  clue_move_facts_t f = complete_facts();
  f.disposal = CLUE_DISPOSAL_UNSPECIFIED;
  expect_field_error(ACC, CLO, f, CLUE_FIELD_DISPOSAL, "details.disposal",
                     "details.disposal is required when closing from ACCEPTED");
  const int bad[] = {4, -1, 99};
  for (size_t i = 0; i < NELEM(bad); i++) {
    char want[VALIDATE_MESSAGE_MAX];
    snprintf(want, sizeof(want),
             "details.disposal has an unknown value %d; use TALK_OR_LETTER_INQUIRY, "
             "NO_FURTHER_ACTION or SHELVED",
             bad[i]);
    f.disposal = bad[i];
    expect_field_error(ACC, CLO, f, CLUE_FIELD_DISPOSAL, "details.disposal", want);
  }
  for (int d = 1; d <= 3; d++) {
    f.disposal = d;
    assert_int_equal(clue_fsm_missing_field(row(ACC, CLO), &f), 0);
  }
  /* Other moves do not look at the disposal. */
  f = complete_facts();
  f.disposal = 77;
  assert_int_equal(clue_fsm_missing_field(row(PC, CLO), &f), 0);
  assert_int_equal(clue_fsm_missing_field(row(FIL, CLO), &f), 0);
  /* Reason is checked before the disposal. */
  f.disposal = 0;
  f.reason = "";
  expect_field_error(ACC, CLO, f, CLUE_FIELD_REASON, "reason", "reason is required");
}

static void test_required_finding(void **state) {
  (void)state;
  clue_move_facts_t f = complete_facts();
  const char *blank[] = {NULL, "", "  \n"};
  for (size_t b = 0; b < NELEM(blank); b++) {
    f.finding = blank[b];
    expect_field_error(PC, CLO, f, CLUE_FIELD_FINDING, "details.finding",
                       "details.finding is required when closing from PRELIMINARY_CHECK");
    assert_int_equal(clue_fsm_missing_field(row(ACC, CLO), &f), 0);
    assert_int_equal(clue_fsm_missing_field(row(PC, FIL), &f), 0);
  }
}

static void test_required_outcome(void **state) {
  (void)state;
  clue_move_facts_t f = complete_facts();
  f.sanction_kind = " ";
  expect_field_error(FIL, CLO, f, CLUE_FIELD_OUTCOME, "details.sanction_kind",
                     "details.sanction_kind is required when closing from FILED");
  f.sanction_kind = NULL;
  f.persons_disciplined = -1; /* the missing kind is named first */
  expect_field_error(FIL, CLO, f, CLUE_FIELD_OUTCOME, "details.sanction_kind",
                     "details.sanction_kind is required when closing from FILED");
  f.sanction_kind = "政务记过";
  expect_field_error(FIL, CLO, f, CLUE_FIELD_OUTCOME, "details.persons_disciplined",
                     "details.persons_disciplined must not be negative");
  f.persons_disciplined = INT32_MIN;
  expect_field_error(FIL, CLO, f, CLUE_FIELD_OUTCOME, "details.persons_disciplined",
                     "details.persons_disciplined must not be negative");
  f.persons_disciplined = 0;
  assert_int_equal(clue_fsm_missing_field(row(FIL, CLO), &f), 0);
  f.persons_disciplined = INT32_MAX;
  assert_int_equal(clue_fsm_missing_field(row(FIL, CLO), &f), 0);
  /* The transfer does not need an outcome. */
  f.sanction_kind = NULL;
  f.persons_disciplined = -5;
  assert_int_equal(clue_fsm_missing_field(row(FIL, TRA), &f), 0);
}

static void test_required_receiving_organ(void **state) {
  (void)state;
  clue_move_facts_t f = complete_facts();
  f.receiving_organ = "\t";
  expect_field_error(FIL, TRA, f, CLUE_FIELD_RECEIVING_ORGAN, "details.receiving_organ",
                     "details.receiving_organ is required when moving from FILED to "
                     "TRANSFERRED_TO_JUDICIAL");
  assert_int_equal(clue_fsm_missing_field(row(FIL, CLO), &f), 0);
}

static void test_deadline_days(void **state) {
  (void)state;
  const int want_default[NSTATES] = {0, 30, 90, 90, 0, 0};
  clue_deadline_config_t cfg;
  clue_deadline_config_default(&cfg);
  assert_int_equal(cfg.accepted_days, 30);
  assert_int_equal(cfg.preliminary_check_days, 90);
  assert_int_equal(cfg.filed_days, 90);
  for (int s = 0; s < NSTATES; s++) {
    assert_int_equal(clue_stage_deadline_days(&cfg, (clue_state_t)s), want_default[s]);
    assert_int_equal(clue_stage_deadline_days(NULL, (clue_state_t)s), want_default[s]);
  }
  clue_deadline_config_t custom = {
      .accepted_days = 7, .preliminary_check_days = 60, .filed_days = 180};
  const int want_custom[NSTATES] = {0, 7, 60, 180, 0, 0};
  for (int s = 0; s < NSTATES; s++)
    assert_int_equal(clue_stage_deadline_days(&custom, (clue_state_t)s), want_custom[s]);
  assert_int_equal(clue_stage_deadline_days(&custom, (clue_state_t)6), 0);
  assert_int_equal(clue_stage_deadline_days(&custom, (clue_state_t)-1), 0);
  /* A stage configured with 0 or fewer days has no deadline. */
  clue_deadline_config_t off = {.accepted_days = 0, .preliminary_check_days = -5, .filed_days = 1};
  assert_int_equal(clue_stage_deadline_days(&off, CLUE_STATE_ACCEPTED), 0);
  assert_int_equal(clue_stage_deadline_days(&off, CLUE_STATE_PRELIMINARY_CHECK), 0);
  assert_int_equal(clue_stage_deadline_days(&off, CLUE_STATE_FILED), 1);
}

static void test_deadline_ms(void **state) {
  (void)state;
  const int64_t t0 = INT64_C(1767225600000); /* 2026-01-01T00:00:00Z */
  assert_int_equal(clue_stage_deadline_ms(NULL, CLUE_STATE_ACCEPTED, t0),
                   t0 + 30 * INT64_C(86400000));
  assert_int_equal(clue_stage_deadline_ms(NULL, CLUE_STATE_PRELIMINARY_CHECK, t0),
                   t0 + 90 * INT64_C(86400000));
  assert_int_equal(clue_stage_deadline_ms(NULL, CLUE_STATE_FILED, t0), t0 + 90 * INT64_C(86400000));
  assert_int_equal(clue_stage_deadline_ms(NULL, CLUE_STATE_CLOSED, t0), 0);
  assert_int_equal(clue_stage_deadline_ms(NULL, CLUE_STATE_TRANSFERRED_TO_JUDICIAL, t0), 0);
  assert_int_equal(clue_stage_deadline_ms(NULL, CLUE_STATE_UNSPECIFIED, t0), 0);
  assert_int_equal(clue_stage_deadline_ms(NULL, CLUE_STATE_ACCEPTED, INT64_MAX - 5), INT64_MAX);
}

static void test_deadline_status(void **state) {
  (void)state;
  const int64_t dl = INT64_C(1767225600000);
  static const struct {
    int64_t now_offset; /* now - deadline */
    int32_t days_left;
    bool overdue;
  } cases[] = {
      {-30 * 86400000LL, 30, false},
      {-(86400000LL + 1), 1, false},
      {-86400000LL, 1, false},
      {-86399999LL, 0, false},
      {-1, 0, false},
      {0, 0, false}, /* due now: not yet overdue */
      {1, -1, true},
      {86400000LL - 1, -1, true},
      {86400000LL, -1, true},
      {86400000LL + 1, -2, true},
      {10 * 86400000LL, -10, true},
  };
  for (size_t i = 0; i < NELEM(cases); i++) {
    int32_t left = 12345;
    bool overdue = !cases[i].overdue;
    clue_deadline_status(dl, dl + cases[i].now_offset, &left, &overdue);
    if (left != cases[i].days_left || overdue != cases[i].overdue)
      fail_msg("offset %lld: got %d/%d, want %d/%d", (long long)cases[i].now_offset, left, overdue,
               cases[i].days_left, cases[i].overdue);
  }
  int32_t left = 7;
  bool overdue = true;
  clue_deadline_status(0, dl, &left, &overdue);
  assert_int_equal(left, 0);
  assert_false(overdue);
  clue_deadline_status(INT64_MAX, INT64_MIN, &left, &overdue);
  assert_int_equal(left, INT32_MAX);
  assert_false(overdue);
  clue_deadline_status(INT64_MIN, INT64_MAX, &left, &overdue);
  assert_int_equal(left, INT32_MIN);
  assert_true(overdue);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_enums_match_proto),
      cmocka_unit_test(test_every_pair),
      cmocka_unit_test(test_out_of_range_states),
      cmocka_unit_test(test_table_shape),
      cmocka_unit_test(test_targets),
      cmocka_unit_test(test_terminal_and_valid),
      cmocka_unit_test(test_state_names),
      cmocka_unit_test(test_other_names),
      cmocka_unit_test(test_refusal_examples),
      cmocka_unit_test(test_refusal_every_pair),
      cmocka_unit_test(test_refusal_truncation),
      cmocka_unit_test(test_required_complete),
      cmocka_unit_test(test_required_minimal),
      cmocka_unit_test(test_required_reason),
      cmocka_unit_test(test_required_disposal),
      cmocka_unit_test(test_required_finding),
      cmocka_unit_test(test_required_outcome),
      cmocka_unit_test(test_required_receiving_organ),
      cmocka_unit_test(test_deadline_days),
      cmocka_unit_test(test_deadline_ms),
      cmocka_unit_test(test_deadline_status),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
