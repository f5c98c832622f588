/* The tokens the principal cache remembers as whose they were (auth_cache_know/known): a hint
 * for which share of the database pool a token's renewal counts against, never a principal.
 * Kept for AUTH_KNOWN_MS in a bounded table where a newer token takes a slot; a hash that is
 * not one, or an unknown token, is nobody's; a token refused is forgotten (auth_cache_unknow),
 * and so is one whose revocation, or its user's disabling, is told (auth_cache_forget), at
 * once, and every one when what was revoked cannot be told (auth_cache_reset); a lookup that
 * read the token before such an invalidation leaves no hint. */

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

/* Remember token n of user as known at now, read at the cache's stamp now. */
static void know(unsigned n, int64_t user, uint64_t now) {
  rpc_principal_t p = {.user_id = user, .token_id = 1000 + n};

  auth_cache_know(&cache, hash_of(n), &p, auth_cache_stamp(&cache), now);
}

static void test_known_for_a_while(void **state) {
  (void)state;
  auth_cache_init(&cache, 16, 1000);
  auth_cache_reset(&cache, 1); /* live */
  assert_int_equal(auth_cache_known(&cache, hash_of(5), 0), 0);
  know(5, 42, 1000);
  assert_int_equal(auth_cache_known(&cache, hash_of(5), 1000), 42);
  assert_int_equal(auth_cache_known(&cache, hash_of(5), 1000 + AUTH_KNOWN_MS - 1), 42);
  assert_int_equal(auth_cache_known(&cache, hash_of(5), 1000 + AUTH_KNOWN_MS), 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(6), 1000), 0);
  /* Never a principal: the cache serves nothing for it. */
  assert_null(auth_cache_get(&cache, hash_of(5), 1000, NULL));
  auth_cache_free(&cache);
}

static void test_a_newer_token_takes_the_slot(void **state) {
  (void)state;
  auth_cache_init(&cache, 16, 1000);
  know(7, 1, 0);
  know(7 + AUTH_KNOWN_SLOTS, 2, 0); /* the same slot */
  assert_int_equal(auth_cache_known(&cache, hash_of(7), 0), 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(7 + AUTH_KNOWN_SLOTS), 0), 2);
  auth_cache_free(&cache);
}

static void test_what_is_not_a_hash_is_nobodys(void **state) {
  rpc_principal_t p = {.user_id = 9, .token_id = 9};

  (void)state;
  auth_cache_init(&cache, 16, 1000);
  auth_cache_know(&cache, "short", &p, auth_cache_stamp(&cache), 0);
  auth_cache_know(&cache,
                  "zzzzzzzzzzzzzzzz"
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                  &p, auth_cache_stamp(&cache), 0);
  know(3, 0, 0); /* no user */
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
  know(9, 4, 0);
  auth_cache_unknow(&cache, hash_of(9 + AUTH_KNOWN_SLOTS)); /* the same slot, not the token */
  assert_int_equal(auth_cache_known(&cache, hash_of(9), 0), 4);
  auth_cache_unknow(&cache, hash_of(9));
  assert_int_equal(auth_cache_known(&cache, hash_of(9), 0), 0);
  auth_cache_unknow(&cache, "short");
  auth_cache_free(&cache);
}

/* A revocation told (auth_cache_forget) forgets its token at once, though no lookup of it
 * completed; a disabling, every token of its user; the others stay. */
static void test_a_revocation_forgets_its_token(void **state) {
  (void)state;
  auth_cache_init(&cache, 16, 1000);
  know(1, 7, 0); /* token 1001 of user 7 */
  know(2, 7, 0); /* token 1002 of user 7 */
  know(3, 8, 0); /* token 1003 of user 8 */
  know(4, 9, 0); /* token 1004 of user 9 */
  auth_cache_forget(&cache, 1001, 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(1), 0), 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(2), 0), 7);
  auth_cache_forget(&cache, 0, 8);
  assert_int_equal(auth_cache_known(&cache, hash_of(3), 0), 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(2), 0), 7);
  assert_int_equal(auth_cache_known(&cache, hash_of(4), 0), 9);
  auth_cache_forget(&cache, 0, 7);
  assert_int_equal(auth_cache_known(&cache, hash_of(2), 0), 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(4), 0), 9);
  /* What cannot be told (the listener lost, an id unread) forgets every token. */
  auth_cache_forget(&cache, 0, 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(4), 0), 0);
  know(5, 10, 0);
  auth_cache_reset(&cache, 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(5), 0), 0);
  for (unsigned i = 0; i < AUTH_KNOWN_SLOTS; i++)
    assert_int_equal(cache.known[i].key, 0);
  auth_cache_free(&cache);
}

/* A lookup that read the token before its revocation (or its user's disabling, or before
 * everything was dropped) leaves no hint when it answers after; one read before another's
 * does. */
static void test_a_lookup_read_before_a_revocation_leaves_no_hint(void **state) {
  rpc_principal_t p = {.user_id = 7, .token_id = 1001}, q = {.user_id = 8, .token_id = 1002};
  auth_stamp_t before;

  (void)state;
  auth_cache_init(&cache, 16, 1000);
  before = auth_cache_stamp(&cache);
  auth_cache_forget(&cache, 1001, 0);
  auth_cache_know(&cache, hash_of(1), &p, before, 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(1), 0), 0);
  auth_cache_know(&cache, hash_of(2), &q, before, 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(2), 0), 8);
  before = auth_cache_stamp(&cache);
  auth_cache_forget(&cache, 0, 8);
  auth_cache_know(&cache, hash_of(2), &q, before, 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(2), 0), 0);
  /* Going live revokes nothing: a lookup read before it makes its token known, and what was
   * known stays so. */
  before = auth_cache_stamp(&cache);
  auth_cache_reset(&cache, 1);
  auth_cache_know(&cache, hash_of(1), &p, before, 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(1), 0), 7);
  auth_cache_reset(&cache, 0);
  auth_cache_know(&cache, hash_of(1), &p, auth_cache_stamp(&cache), 0);
  auth_cache_reset(&cache, 1);
  assert_int_equal(auth_cache_known(&cache, hash_of(1), 0), 7);
  /* Everything dropped while live (an invalidation unread) does revoke. */
  before = auth_cache_stamp(&cache);
  auth_cache_forget(&cache, 0, 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(1), 0), 0);
  auth_cache_know(&cache, hash_of(1), &p, before, 0);
  assert_int_equal(auth_cache_known(&cache, hash_of(1), 0), 0);
  auth_cache_free(&cache);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_known_for_a_while),
      cmocka_unit_test(test_a_newer_token_takes_the_slot),
      cmocka_unit_test(test_what_is_not_a_hash_is_nobodys),
      cmocka_unit_test(test_a_refused_token_is_forgotten),
      cmocka_unit_test(test_a_revocation_forgets_its_token),
      cmocka_unit_test(test_a_lookup_read_before_a_revocation_leaves_no_hint),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
