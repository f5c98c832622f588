/* The text array literal a batch sends for each parameter (service/batch.c): every element
 * quoted, quotes and backslashes escaped, SQL NULL as NULL, nothing else altered. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "service/batch.h"

static void expect(const char *const *v, size_t n, const char *want) {
  char *got = svc_batch_array(v, n);
  assert_non_null(got);
  assert_string_equal(got, want);
  free(got);
}

static void test_plain_and_null(void **state) {
  (void)state;
  const char *v[] = {"1", NULL, "42"};
  expect(v, 3, "{\"1\",NULL,\"42\"}");
  expect(v, 0, "{}");
  expect(v + 1, 1, "{NULL}");
}

static void test_what_array_syntax_means(void **state) {
  (void)state;
  /* Empty, the word NULL, separators, braces, spaces, quotes, backslashes, UTF-8: each an
   * element of its own, as sent. */
  const char *v[] = {"", "NULL", "a,b", "{x}", "  sp  ", "say \"hi\"", "c:\\dir\\", "初核"};
  expect(v, 8,
         "{\"\",\"NULL\",\"a,b\",\"{x}\",\"  sp  \",\"say \\\"hi\\\"\",\"c:\\\\dir\\\\\",\"初核\"}");
}

static void test_jsonb_text(void **state) {
  (void)state;
  const char *v[] = {"{\"finding\": \"a \\\"b\\\"\"}"};
  expect(v, 1, "{\"{\\\"finding\\\": \\\"a \\\\\\\"b\\\\\\\"\\\"}\"}");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plain_and_null),
      cmocka_unit_test(test_what_array_syntax_means),
      cmocka_unit_test(test_jsonb_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
