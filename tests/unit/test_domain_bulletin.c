/* The bulletin's calendar (server/domain/bulletin.c): months in UTC+08:00. Expected instants
 * are written out here (from date -u), not computed by the code under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "domain/bulletin.h"

static void test_parse(void **state) {
  bulletin_month_t m = {0, 0};
  (void)state;
  assert_int_equal(bulletin_month_parse("2026-11", &m), 0);
  assert_int_equal(m.year, 2026);
  assert_int_equal(m.month, 11);
  const char *bad[] = {NULL, "", "2026-1", "2026-13", "2026-00", "1999-12", "2026/11", "20261-1",
                       "2026-1a", "+026-11", "2026-11 ", " 2026-11", "2026-011"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    m = (bulletin_month_t){7, 7};
    assert_int_equal(bulletin_month_parse(bad[i], &m), -1);
    assert_int_equal(m.year, 7); /* untouched */
  }
  assert_int_equal(bulletin_month_parse("2000-01", &m), 0);
  assert_int_equal(bulletin_month_parse("9999-12", &m), 0);
}

static void test_instants(void **state) {
  (void)state;
  /* 2026-11-01T00:00+08:00 = 2026-10-31T16:00Z = 1793462400000 */
  assert_int_equal(bulletin_month_start_ms((bulletin_month_t){2026, 11}), INT64_C(1793462400000));
  /* 2000-01-01T00:00+08:00 = 1999-12-31T16:00Z = 946656000000 */
  assert_int_equal(bulletin_month_start_ms((bulletin_month_t){2000, 1}), INT64_C(946656000000));
  /* 2024-03-01T00:00+08:00 (after a leap February) = 1709222400000 */
  assert_int_equal(bulletin_month_start_ms((bulletin_month_t){2024, 3}), INT64_C(1709222400000));
  /* The last millisecond of October (UTC+8) is October; the next is November. */
  bulletin_month_t m = bulletin_month_of_ms(INT64_C(1793462400000) - 1);
  assert_int_equal(m.year, 2026);
  assert_int_equal(m.month, 10);
  m = bulletin_month_of_ms(INT64_C(1793462400000));
  assert_int_equal(m.month, 11);
  m = bulletin_month_of_ms(0); /* 1970-01-01T08:00+08:00 */
  assert_int_equal(m.year, 1970);
  assert_int_equal(m.month, 1);
}

static void test_add_and_bounds(void **state) {
  (void)state;
  bulletin_month_t m = bulletin_month_add((bulletin_month_t){2026, 1}, 1);
  assert_int_equal(m.year, 2025);
  assert_int_equal(m.month, 12);
  m = bulletin_month_add((bulletin_month_t){2026, 12}, -1);
  assert_int_equal(m.year, 2027);
  assert_int_equal(m.month, 1);
  m = bulletin_month_add((bulletin_month_t){2026, 5}, 24);
  assert_int_equal(m.year, 2024);
  assert_int_equal(m.month, 5);
  assert_int_equal(bulletin_month_cmp((bulletin_month_t){2026, 5}, (bulletin_month_t){2026, 6}), -1);
  assert_int_equal(bulletin_month_cmp((bulletin_month_t){2027, 1}, (bulletin_month_t){2026, 12}), 1);
  assert_int_equal(bulletin_month_cmp((bulletin_month_t){2026, 6}, (bulletin_month_t){2026, 6}), 0);

  int64_t b[BULLETIN_STREAK_MAX + 1];
  bulletin_bounds((bulletin_month_t){2026, 11}, b, BULLETIN_STREAK_MAX + 1);
  assert_int_equal(b[0], bulletin_month_start_ms((bulletin_month_t){2026, 12}));
  assert_int_equal(b[1], INT64_C(1793462400000));
  for (size_t i = 1; i < BULLETIN_STREAK_MAX + 1; i++)
    assert_true(b[i] < b[i - 1]);
  /* 120 months before December 2026 is December 2016. */
  assert_int_equal(b[BULLETIN_STREAK_MAX], bulletin_month_start_ms((bulletin_month_t){2016, 12}));
  /* Every month boundary round-trips through bulletin_month_of_ms. */
  for (int k = 0; k < 400; k++) {
    bulletin_month_t x = bulletin_month_add((bulletin_month_t){2030, 1}, k);
    bulletin_month_t y = bulletin_month_of_ms(bulletin_month_start_ms(x));
    assert_int_equal(bulletin_month_cmp(x, y), 0);
    y = bulletin_month_of_ms(bulletin_month_start_ms(x) - 1);
    assert_int_equal(bulletin_month_cmp(bulletin_month_add(x, 1), y), 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse),
      cmocka_unit_test(test_instants),
      cmocka_unit_test(test_add_and_bounds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
