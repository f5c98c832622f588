/* The per-owner request counts behind --db-queue-per-conn: the limit is exact per owner,
 * owners never affect each other (colliding buckets included), owner 0 is never counted, and
 * every counter is freed when its owner has nothing left. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "db/db.h"
#include "db/owners.h"

static void test_limit_is_per_owner(void **state) {
  db_owners_t o;

  (void)state;
  db_owners_init(&o, 3);
  for (int i = 0; i < 3; i++)
    assert_int_equal(db_owners_take(&o, 7), 0);
  assert_int_equal(db_owners_take(&o, 7), DB_EOWNER);
  assert_int_equal(db_owners_count(&o, 7), 3);
  assert_int_equal(db_owners_take(&o, 8), 0); /* another owner is not affected */
  db_owners_give(&o, 7);
  assert_int_equal(db_owners_take(&o, 7), 0); /* a place given back is free again */
  assert_int_equal(db_owners_take(&o, 7), DB_EOWNER);
  for (int i = 0; i < 3; i++)
    db_owners_give(&o, 7);
  db_owners_give(&o, 8);
  assert_int_equal(db_owners_count(&o, 7), 0);
  assert_true(db_owners_empty(&o));
}

static void test_owner_zero_is_not_counted(void **state) {
  db_owners_t o;

  (void)state;
  db_owners_init(&o, 1);
  for (int i = 0; i < 1000; i++)
    assert_int_equal(db_owners_take(&o, 0), 0);
  db_owners_give(&o, 0);
  assert_int_equal(db_owners_count(&o, 0), 0);
  assert_true(db_owners_empty(&o));
}

static void test_many_owners_share_buckets(void **state) {
  enum { N = 5000, MAX = 2 };
  db_owners_t o;

  (void)state;
  db_owners_init(&o, MAX);
  /* Far more owners than buckets, consecutive and sparse, each at its limit. */
  for (uint64_t k = 1; k <= N; k++)
    for (int i = 0; i < MAX; i++) {
      assert_int_equal(db_owners_take(&o, k), 0);
      assert_int_equal(db_owners_take(&o, k << 40), 0);
    }
  for (uint64_t k = 1; k <= N; k++) {
    assert_int_equal(db_owners_take(&o, k), DB_EOWNER);
    assert_int_equal(db_owners_count(&o, k), MAX);
    assert_int_equal(db_owners_count(&o, k << 40), MAX);
  }
  assert_int_equal(db_owners_count(&o, N + 1), 0);
  /* Give back in another order than taken. */
  for (uint64_t k = N; k >= 1; k--)
    for (int i = 0; i < MAX; i++) {
      db_owners_give(&o, k << 40);
      db_owners_give(&o, k);
    }
  assert_true(db_owners_empty(&o));
}

/* A paused owner keeps its counter while it has no request, and loses it only when it has
 * neither a request nor the pause; every order of take, give, pause and resume. */
static void test_pause_outlives_requests(void **state) {
  db_owners_t o;

  (void)state;
  db_owners_init(&o, 2);
  assert_false(db_owners_paused(&o, 9));
  assert_int_equal(db_owners_pause(&o, 9, 1), 0); /* paused with no request */
  assert_true(db_owners_paused(&o, 9));
  assert_false(db_owners_empty(&o));
  assert_int_equal(db_owners_take(&o, 9), 0);
  db_owners_give(&o, 9); /* its last request: the pause stays */
  assert_true(db_owners_paused(&o, 9));
  assert_int_equal(db_owners_pause(&o, 9, 0), 0);
  assert_false(db_owners_paused(&o, 9));
  assert_true(db_owners_empty(&o));
  /* Request first, then pause, resume while the request runs, then give. */
  assert_int_equal(db_owners_take(&o, 9), 0);
  assert_int_equal(db_owners_pause(&o, 9, 1), 0);
  assert_int_equal(db_owners_pause(&o, 9, 0), 0);
  assert_int_equal(db_owners_count(&o, 9), 1);
  db_owners_give(&o, 9);
  assert_true(db_owners_empty(&o));
  /* Resuming an owner never seen, and pausing owner 0, change nothing. */
  assert_int_equal(db_owners_pause(&o, 11, 0), 0);
  assert_int_equal(db_owners_pause(&o, 0, 1), 0);
  assert_false(db_owners_paused(&o, 0));
  assert_true(db_owners_empty(&o));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_limit_is_per_owner),
      cmocka_unit_test(test_owner_zero_is_not_counted),
      cmocka_unit_test(test_many_owners_share_buckets),
      cmocka_unit_test(test_pause_outlives_requests),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
