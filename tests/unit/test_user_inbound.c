/* The per-user request byte counts behind --max-user-inbound: users never affect each other
 * (colliding buckets included), user 0 is never counted, a release takes back at most what was
 * counted, and every counter is freed when its user keeps nothing. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rpc/user_inbound.h"

static void test_counts_are_per_user(void **state) {
  user_inbound_t u = {0};

  (void)state;
  assert_int_equal(user_inbound_add(&u, 7, 1000), 0);
  assert_int_equal(user_inbound_add(&u, 7, 24), 0);
  assert_int_equal(user_inbound_add(&u, 8, 5), 0);
  assert_int_equal(user_inbound_kept(&u, 7), 1024);
  assert_int_equal(user_inbound_kept(&u, 8), 5);
  assert_int_equal(user_inbound_kept(&u, 9), 0);
  user_inbound_release(&u, 7, 1000);
  assert_int_equal(user_inbound_kept(&u, 7), 24);
  assert_int_equal(user_inbound_kept(&u, 8), 5); /* another user is not affected */
  user_inbound_release(&u, 7, 24);
  user_inbound_release(&u, 8, 5);
  assert_true(user_inbound_empty(&u));
}

static void test_user_zero_and_empty_counts_are_not_kept(void **state) {
  user_inbound_t u = {0};

  (void)state;
  assert_int_equal(user_inbound_add(&u, 0, 4096), 0);
  assert_int_equal(user_inbound_kept(&u, 0), 0);
  assert_int_equal(user_inbound_add(&u, 3, 0), 0);
  assert_true(user_inbound_empty(&u)); /* nothing allocated for either */
  user_inbound_release(&u, 0, 4096);
  user_inbound_release(&u, 3, 0);
  assert_true(user_inbound_empty(&u));
}

static void test_colliding_users_stay_apart(void **state) {
  user_inbound_t u = {0};
  uint64_t users[3];
  int n = 0;

  (void)state;
  /* Users whose hashes land in the same bucket share its chain. */
  for (uint64_t k = 1; n < 3 && k < 1000000; k++)
    if (((k * 0x9E3779B97F4A7C15ull) >> 56) == ((1 * 0x9E3779B97F4A7C15ull) >> 56))
      users[n++] = k;
  assert_int_equal(n, 3);
  for (int i = 0; i < 3; i++)
    assert_int_equal(user_inbound_add(&u, users[i], (size_t)(i + 1) * 100), 0);
  user_inbound_release(&u, users[1], 200); /* the middle of the chain goes */
  assert_int_equal(user_inbound_kept(&u, users[0]), 100);
  assert_int_equal(user_inbound_kept(&u, users[1]), 0);
  assert_int_equal(user_inbound_kept(&u, users[2]), 300);
  user_inbound_release(&u, users[0], 100);
  user_inbound_release(&u, users[2], 300);
  assert_true(user_inbound_empty(&u));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counts_are_per_user),
      cmocka_unit_test(test_user_zero_and_empty_counts_are_not_kept),
      cmocka_unit_test(test_colliding_users_stay_apart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
