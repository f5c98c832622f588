/* The one table from our SQLSTATEs to gRPC codes (service/sql_errors.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "db/migrate.h"
#include "service/sql_errors.h"

static void test_named(void **state) {
  (void)state;
  static const struct {
    const char *st;
    grpc_status_t code;
  } want[] = {
      {"CLNOF", GRPC_NOT_FOUND},      {"CLARG", GRPC_INVALID_ARGUMENT},
      {"CLDUP", GRPC_ALREADY_EXISTS}, {"CLPRE", GRPC_FAILED_PRECONDITION},
      {"CLVER", GRPC_ABORTED},        {"CLLIM", GRPC_RESOURCE_EXHAUSTED},
      {"CLSYN", GRPC_UNAVAILABLE},
  };
  assert_int_equal(sql_errors_len, (int)(sizeof(want) / sizeof(want[0])));
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    grpc_status_t code = GRPC_OK;
    assert_int_equal(sql_error_code(want[i].st, &code), 0);
    assert_int_equal(code, want[i].code);
  }
  /* One row per name and per code. */
  for (int i = 0; i < sql_errors_len; i++)
    for (int j = 0; j < i; j++) {
      assert_string_not_equal(sql_errors[i].sqlstate, sql_errors[j].sqlstate);
      assert_int_not_equal(sql_errors[i].code, sql_errors[j].code);
    }
}

static void test_legacy_and_others(void **state) {
  (void)state;
  grpc_status_t code = GRPC_OK;
  assert_int_equal(sql_error_code("CL003", &code), 0);
  assert_int_equal(code, GRPC_INVALID_ARGUMENT);
  assert_int_equal(sql_error_code("CL016", &code), 0);
  assert_int_equal(code, GRPC_UNAUTHENTICATED);
  code = GRPC_OK;
  static const char *const refused[] = {"CL000", "CL017", "CL999", "CLXYZ", "CL01",  "CL0100",
                                        "23505", "40001", "",      "cl003", "CLver", "XX000"};
  for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
    assert_int_equal(sql_error_code(refused[i], &code), -1);
  assert_int_equal(sql_error_code(NULL, &code), -1);
  assert_int_equal(code, GRPC_OK);
}

/* The SQL literals of a MESSAGE, adjacent ones joined, each %s an id: "user 7 is disabled". */
static const char *message_at(const char *p, char *out, size_t cap) {
  size_t n = 0;

  while (*p == ' ' || *p == '\n')
    p++;
  if (strncmp(p, "format(", 7) == 0)
    p += 7;
  for (;;) {
    while (*p == ' ' || *p == '\n')
      p++;
    if (*p != '\'')
      break;
    for (p++; *p != '\0'; p++) {
      if (*p == '\'' && p[1] == '\'')
        p++;
      else if (*p == '\'')
        break;
      if (*p == '%' && p[1] == 's') {
        p++;
        if (n + 1 < cap)
          out[n++] = '7';
        continue;
      }
      if (n + 1 < cap)
        out[n++] = *p;
    }
    if (*p == '\'')
      p++;
  }
  out[n] = '\0';
  return n > 0 ? out : NULL;
}

static void test_precondition_subjects(void **state) {
  (void)state;
  const char *type, *subject;
  size_t found = 0;

  sql_precondition("proposal was already decided", &type, &subject);
  assert_string_equal(type, "STATE");
  assert_string_equal(subject, "proposal decided");
  sql_precondition("user 12 is recused from this clue and cannot be assigned to it", &type,
                   &subject);
  assert_string_equal(type, "RECUSAL");
  assert_string_equal(subject, "user recused");
  /* A recusal recorded twice at once (0060): the subject authz_can_recuse() gives the second. */
  sql_precondition("user 12 is already recused from this clue", &type, &subject);
  assert_string_equal(type, "RECUSAL");
  assert_string_equal(subject, "already recused");
  sql_precondition("user 3 is already disabled", &type, &subject);
  assert_string_equal(subject, "user disabled");
  sql_precondition("token 1 is the last live token of the last enabled ADMIN holding one: x", &type,
                   &subject);
  assert_string_equal(type, "ADMINISTRATION");
  assert_string_equal(subject, "last administrator");
  /* A form no row knows, and none at all: a generic subject, never a wrong one. */
  sql_precondition("something new went wrong", &type, &subject);
  assert_string_equal(type, "STATE");
  assert_string_equal(subject, "precondition");
  sql_precondition(NULL, &type, &subject);
  assert_string_equal(subject, "precondition");
  sql_precondition("proposal was already decided, twice", &type, &subject);
  assert_string_equal(subject, "precondition");

  /* Every message a migration raises as CLPRE or CL009 has its own subject. */
  for (size_t i = 0; i < db_embedded_nmigrations; i++) {
    const char *sql = db_embedded_migrations[i].sql, *at = sql;

    while ((at = strstr(at, "ERRCODE = 'CL")) != NULL) {
      const char *m;
      char msg[512];

      at += strlen("ERRCODE = '");
      if (strncmp(at, "CLPRE'", 6) != 0 && strncmp(at, "CL009'", 6) != 0)
        continue;
      m = strstr(at, "MESSAGE =");
      assert_non_null(m);
      if (message_at(m + strlen("MESSAGE ="), msg, sizeof(msg)) == NULL)
        fail_msg("%s: a CLPRE message that is no literal", db_embedded_migrations[i].name);
      sql_precondition(msg, &type, &subject);
      if (strcmp(subject, "precondition") == 0)
        fail_msg("%s: \"%s\" has no subject in sql_errors.c", db_embedded_migrations[i].name, msg);
      found++;
    }
  }
  assert_true(found >= 40);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_named),
      cmocka_unit_test(test_legacy_and_others),
      cmocka_unit_test(test_precondition_subjects),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
