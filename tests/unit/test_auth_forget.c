/* What an invalidation of the principal cache drops (auth_cache_forget, auth_cache_reset), and
 * what a principal read before it may still do (auth_cache_stale, auth_cache_put): a revoked
 * token's principal, or a disabled user's, goes, and the others stay; a principal read before
 * the invalidation of it is neither cached nor current, one read before another's is both;
 * what the cache cannot tell (everything dropped, more invalidations since than it
 * remembers, an id it could not read) counts as an invalidation of everyone. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "rpc/auth_cache.h"

static auth_cache_t cache; /* large: not on the stack */

/* The hash of token n (any 64 hex digits), and its principal: token n of user n / 10. */
static const char *hash_of(unsigned n) {
  static char h[65];

  snprintf(h, sizeof(h), "%016x%048x", n * 2654435761u, n);
  return h;
}

static rpc_principal_t principal_of(unsigned n) {
  rpc_principal_t p = {0};

  p.token_id = n;
  p.user_id = n / 10;
  p.unit_id = 1;
  return p;
}

static void put(unsigned n, auth_stamp_t s) {
  rpc_principal_t p = principal_of(n);

  auth_cache_put(&cache, hash_of(n), &p, s, 0);
}

static int cached(unsigned n) {
  const rpc_principal_t *p = auth_cache_get(&cache, hash_of(n), 1, NULL);

  if (p != NULL)
    assert_int_equal(p->token_id, n);
  return p != NULL;
}

static void filled(size_t max, unsigned from, unsigned to) {
  auth_cache_init(&cache, max, 60000);
  auth_cache_reset(&cache, 1);
  for (unsigned n = from; n < to; n++)
    put(n, auth_cache_stamp(&cache));
}

static void test_a_revoked_token_goes_alone(void **state) {
  (void)state;
  filled(4096, 10, 3000);
  assert_int_equal(cache.n, 2990);
  auth_cache_forget(&cache, 1234, 0);
  assert_false(cached(1234));
  assert_true(cached(1235) && cached(1230) && cached(1234 + AUTH_CACHE_BUCKETS));
  assert_int_equal(cache.n, 2989);
  auth_cache_forget(&cache, 1234, 0); /* again: nothing more */
  auth_cache_forget(&cache, 999999, 0);
  assert_int_equal(cache.n, 2989);
  auth_cache_free(&cache);
}

static void test_a_disabled_user_loses_every_token(void **state) {
  (void)state;
  filled(16384, 10, 12000);
  auth_cache_forget(&cache, 0, 123); /* tokens 1230..1239 */
  for (unsigned n = 1230; n < 1240; n++)
    assert_false(cached(n));
  /* Another user in the same chain of the index by user keeps theirs. */
  assert_true(cached(1229) && cached(1240) && cached(123) &&
              cached((123 + AUTH_CACHE_BUCKETS) * 10));
  assert_int_equal(cache.n, 11980);
  auth_cache_free(&cache);
}

/* A lookup that read the principal before the invalidation of it answers after: it is not
 * cached, and it is stale; one that read another's principal is neither. */
static void test_a_read_before_its_invalidation_is_stale(void **state) {
  rpc_principal_t p = principal_of(77), q = principal_of(88);
  auth_stamp_t s;

  (void)state;
  filled(4096, 10, 20);
  s = auth_cache_stamp(&cache);
  auth_cache_forget(&cache, 77, 0);
  auth_cache_forget(&cache, 0, 5); /* user 5: tokens 50..59 */
  assert_true(auth_cache_stale(&cache, s, &p));
  assert_false(auth_cache_stale(&cache, s, &q));
  put(77, s);
  put(88, s);
  assert_false(cached(77));
  assert_true(cached(88));
  p = principal_of(55);
  assert_true(auth_cache_stale(&cache, s, &p));
  /* Read after the invalidations: current, and cached. */
  assert_false(auth_cache_stale(&cache, auth_cache_stamp(&cache), &p));
  put(55, auth_cache_stamp(&cache));
  assert_true(cached(55));
  auth_cache_free(&cache);
}

/* More invalidations since a read than the cache remembers: stale, whoever's they were. */
static void test_past_what_is_remembered_everything_is_stale(void **state) {
  rpc_principal_t p = principal_of(7);
  auth_stamp_t s;

  (void)state;
  filled(4096, 1, 10);
  s = auth_cache_stamp(&cache);
  for (unsigned i = 0; i < AUTH_FORGOTTEN; i++)
    auth_cache_forget(&cache, 100000 + i, 0);
  assert_false(auth_cache_stale(&cache, s, &p));
  auth_cache_forget(&cache, 200000, 0);
  assert_true(auth_cache_stale(&cache, s, &p));
  put(7, s);
  assert_true(cached(7)); /* the entry cached before stays: only reads in flight are unsure */
  auth_cache_forget(&cache, 7, 0);
  put(7, s);
  assert_false(cached(7));
  auth_cache_free(&cache);
}

/* Everything dropped (the listener lost, an id that could not be read): every entry goes,
 * and every read before is stale. */
static void test_a_reset_drops_everyone(void **state) {
  rpc_principal_t p = principal_of(12);
  auth_stamp_t s;

  (void)state;
  filled(4096, 10, 500);
  s = auth_cache_stamp(&cache);
  auth_cache_forget(&cache, 0, 0);
  assert_int_equal(cache.n, 0);
  assert_false(cached(12));
  assert_true(auth_cache_stale(&cache, s, &p));
  put(12, s);
  assert_false(cached(12));
  put(12, auth_cache_stamp(&cache));
  assert_true(cached(12));
  /* ... and targeted forgets still find what was put after. */
  auth_cache_forget(&cache, 0, 1);
  assert_false(cached(12));
  assert_int_equal(cache.n, 0);
  auth_cache_free(&cache);
}

/* Entries that expire, or are put again, leave the indexes by token and by user with them:
 * a later forget walks no freed entry (ASan would tell) and finds the live one. */
static void test_expired_and_replaced_entries_leave_every_index(void **state) {
  rpc_principal_t p = principal_of(31);

  (void)state;
  filled(4096, 30, 40);
  put(31, auth_cache_stamp(&cache)); /* the same token again */
  assert_int_equal(cache.n, 10);
  auth_cache_put(&cache, hash_of(32), &p, auth_cache_stamp(&cache), 0); /* another hash, token 31 */
  assert_null(
      auth_cache_get(&cache, hash_of(33), 60000, NULL)); /* expired: dropped from its bucket */
  auth_cache_forget(&cache, 31, 0);
  assert_false(cached(31));
  assert_false(cached(32));
  auth_cache_forget(&cache, 0, 3);
  assert_int_equal(cache.n, 0);
  auth_cache_free(&cache);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_a_revoked_token_goes_alone),
      cmocka_unit_test(test_a_disabled_user_loses_every_token),
      cmocka_unit_test(test_a_read_before_its_invalidation_is_stale),
      cmocka_unit_test(test_past_what_is_remembered_everything_is_stale),
      cmocka_unit_test(test_a_reset_drops_everyone),
      cmocka_unit_test(test_expired_and_replaced_entries_leave_every_index),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
