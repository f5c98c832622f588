/* The tokens the principal cache remembers as whose they were (auth_cache_know/known): a hint
 * for which share of the database pool a token's renewal counts against, never a principal.
 * Kept for AUTH_KNOWN_MS, across invalidations, in a bounded table where a newer token takes
 * a slot; a hash that is not one, or an unknown token, is nobody's; a token refused is
 * forgotten (auth_cache_unknow). */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rpc/auth_cache.h"

static auth_cache_t cache; /* large: not on the stack */

static const char *hash_of(unsigned n) {
  static char h[65];

  memset(h, '0', 16); /* the key is n */
  memset(h + 16, 'a', 48);
  h[64] = '\0';
  for (int i = 15; i >= 0 && n; i--, n >>= 4)
    h[i] = "0123456789abcdef"[n & 15];
  return h;
}

static void test_known_for_a_while(void **state) {
  (void)state;
  auth_cache_init(&cache, 16, 1000);
  assert_int_equal(auth_cache_known(&cache, hash_of(5), 0), 0);
  auth_cache_know(&cache, hash_of(5), 42, 1000);
  assert_int_equal(auth_cache_known(&cache, hash_of(5), 1000), 42);
  assert_int_equal(auth_cache_known(&cache, hash_of(5), 1000 + AUTH_KNOWN_MS - 1), 42);
  assert_int_equal(auth_cache_known(&cache, hash_of(5), 1000 + AUTH_KNOWN_MS), 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(6), 1000), 0);
  /* Never a principal: the cache serves nothing for it. */
  auth_cache_reset(&cache, 1);
  assert_null(auth_cache_get(&cache, hash_of(5), 1000, NULL));
  /* ... and an invalidation keeps the hint (a revoked token's lookup finds nothing anyway). */
  assert_int_equal(auth_cache_known(&cache, hash_of(5), 2000), 42);
  auth_cache_free(&cache);
}

static void test_a_newer_token_takes_the_slot(void **state) {
  (void)state;
  auth_cache_init(&cache, 16, 1000);
  auth_cache_know(&cache, hash_of(7), 1, 0);
  auth_cache_know(&cache, hash_of(7 + AUTH_KNOWN_SLOTS), 2, 0); /* the same slot */
  assert_int_equal(auth_cache_known(&cache, hash_of(7), 0), 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(7 + AUTH_KNOWN_SLOTS), 0), 2);
  auth_cache_free(&cache);
}

static void test_what_is_not_a_hash_is_nobodys(void **state) {
  (void)state;
  auth_cache_init(&cache, 16, 1000);
  auth_cache_know(&cache, "short", 9, 0);
  auth_cache_know(&cache,
                  "zzzzzzzzzzzzzzzz"
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                  9, 0);
  auth_cache_know(&cache, hash_of(3), 0, 0); /* no user */
  assert_int_equal(auth_cache_known(&cache, "short", 0), 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(3), 0), 0);
  for (unsigned i = 0; i < AUTH_KNOWN_SLOTS; i++)
    assert_int_equal(cache.known[i].key, 0);
  auth_cache_free(&cache);
}

/* A token refused (revoked, its user disabled) is forgotten; another in its slot is not. */
static void test_a_refused_token_is_forgotten(void **state) {
  (void)state;
  auth_cache_init(&cache, 16, 1000);
  auth_cache_know(&cache, hash_of(9), 4, 0);
  auth_cache_unknow(&cache, hash_of(9 + AUTH_KNOWN_SLOTS)); /* the same slot, not the token */
  assert_int_equal(auth_cache_known(&cache, hash_of(9), 0), 4);
  auth_cache_unknow(&cache, hash_of(9));
  assert_int_equal(auth_cache_known(&cache, hash_of(9), 0), 0);
  auth_cache_unknow(&cache, "short");
  auth_cache_free(&cache);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_known_for_a_while),
      cmocka_unit_test(test_a_newer_token_takes_the_slot),
      cmocka_unit_test(test_what_is_not_a_hash_is_nobodys),
      cmocka_unit_test(test_a_refused_token_is_forgotten),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
