/* The one table from our SQLSTATEs to gRPC codes (service/sql_errors.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_named),
      cmocka_unit_test(test_legacy_and_others),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
