/* The counts by key behind --max-user-inbound, --max-conns-per-user and the strangers'
 * connections per address: keys never affect each other (colliding buckets included), key 0
 * is never counted, a release takes back at most what was counted, and every counter is freed
 * when its count is back to 0. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rpc/key_counts.h"

static void test_counts_are_per_key(void **state) {
  key_counts_t u = {0};

  (void)state;
  assert_int_equal(key_counts_add(&u, 7, 1000), 0);
  assert_int_equal(key_counts_add(&u, 7, 24), 0);
  assert_int_equal(key_counts_add(&u, 8, 5), 0);
  assert_int_equal(key_counts_get(&u, 7), 1024);
  assert_int_equal(key_counts_get(&u, 8), 5);
  assert_int_equal(key_counts_get(&u, 9), 0);
  key_counts_release(&u, 7, 1000);
  assert_int_equal(key_counts_get(&u, 7), 24);
  assert_int_equal(key_counts_get(&u, 8), 5); /* another user is not affected */
  key_counts_release(&u, 7, 24);
  key_counts_release(&u, 8, 5);
  assert_true(key_counts_empty(&u));
}

static void test_key_zero_and_empty_counts_are_not_kept(void **state) {
  key_counts_t u = {0};

  (void)state;
  assert_int_equal(key_counts_add(&u, 0, 4096), 0);
  assert_int_equal(key_counts_get(&u, 0), 0);
  assert_int_equal(key_counts_add(&u, 3, 0), 0);
  assert_true(key_counts_empty(&u)); /* nothing allocated for either */
  key_counts_release(&u, 0, 4096);
  key_counts_release(&u, 3, 0);
  assert_true(key_counts_empty(&u));
}

static void test_colliding_keys_stay_apart(void **state) {
  key_counts_t u = {0};
  uint64_t users[3];
  int n = 0;

  (void)state;
  /* Users whose hashes land in the same bucket share its chain. */
  for (uint64_t k = 1; n < 3 && k < 1000000; k++)
    if (((k * 0x9E3779B97F4A7C15ull) >> 56) == ((1 * 0x9E3779B97F4A7C15ull) >> 56))
      users[n++] = k;
  assert_int_equal(n, 3);
  for (int i = 0; i < 3; i++)
    assert_int_equal(key_counts_add(&u, users[i], (size_t)(i + 1) * 100), 0);
  key_counts_release(&u, users[1], 200); /* the middle of the chain goes */
  assert_int_equal(key_counts_get(&u, users[0]), 100);
  assert_int_equal(key_counts_get(&u, users[1]), 0);
  assert_int_equal(key_counts_get(&u, users[2]), 300);
  key_counts_release(&u, users[0], 100);
  key_counts_release(&u, users[2], 300);
  assert_true(key_counts_empty(&u));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counts_are_per_key),
      cmocka_unit_test(test_key_zero_and_empty_counts_are_not_kept),
      cmocka_unit_test(test_colliding_keys_stay_apart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
