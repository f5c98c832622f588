/* The call's arena (rpc_call_alloc() in server/rpc/call.c): zeroed, aligned, non-overlapping
 * allocations cut from shared chunks, large ones in chunks of their own, and, in this
 * AddressSanitizer build, the bytes past each allocation poisoned as a malloc()'s would be. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include "rpc/call.h"

static size_t nblocks(const rpc_call_t *call) {
  size_t n = 0;
  for (const rpc_arena_chunk_t *c = call->arena.chunks; c; c = c->next)
    n++;
  return n;
}

static void arena_free(rpc_call_t *call) {
  while (call->arena.chunks) {
    rpc_arena_chunk_t *next = call->arena.chunks->next;
    free(call->arena.chunks);
    call->arena.chunks = next;
  }
}

static void test_small_allocations_share_blocks(void **state) {
  rpc_call_t call;
  unsigned char *p[200];
  (void)state;

  memset(&call, 0, sizeof(call));
  for (int i = 0; i < 200; i++) {
    size_t n = (size_t)(i % 37) + 1;
    p[i] = rpc_call_alloc(&call, n);
    assert_non_null(p[i]);
    assert_int_equal((uintptr_t)p[i] % _Alignof(max_align_t), 0);
    for (size_t k = 0; k < n; k++)
      assert_int_equal(p[i][k], 0); /* zeroed */
    memset(p[i], i + 1, n);
  }
  /* Nothing overlaps: every allocation still holds what was written into it. */
  for (int i = 0; i < 200; i++)
    for (size_t k = 0; k < (size_t)(i % 37) + 1; k++)
      assert_int_equal(p[i][k], (unsigned char)(i + 1));
  assert_true(nblocks(&call) < 20); /* not one chunk per allocation */
  arena_free(&call);
}

static void test_large_allocation_gets_its_own_block(void **state) {
  rpc_call_t call;
  char *small, *big, *after;
  rpc_arena_chunk_t *head;
  (void)state;

  memset(&call, 0, sizeof(call));
  small = rpc_call_alloc(&call, 8);
  head = call.arena.chunks;
  big = rpc_call_alloc(&call, 100000);
  assert_non_null(big);
  assert_ptr_equal(call.arena.chunks, head); /* the shared chunk stays the newest */
  assert_int_equal(nblocks(&call), 2);
  memset(big, 'x', 100000);
  after = rpc_call_alloc(&call, 8);
  assert_non_null(after);
  assert_ptr_equal(call.arena.chunks, head); /* and takes the next small one */
  assert_true(after > small);
  assert_null(rpc_call_alloc(&call, SIZE_MAX - 4)); /* overflowing size: refused */
  arena_free(&call);
}

static void test_zero_size_and_a_first_large_one(void **state) {
  rpc_call_t call;
  (void)state;

  memset(&call, 0, sizeof(call));
  assert_non_null(rpc_call_alloc(&call, 50000));
  assert_non_null(rpc_call_alloc(&call, 0));
  assert_non_null(rpc_call_alloc(&call, 3));
  arena_free(&call);
}

#if defined(__SANITIZE_ADDRESS__)
static void test_past_an_allocation_is_poisoned(void **state) {
  rpc_call_t call;
  char *a, *b;
  (void)state;

  memset(&call, 0, sizeof(call));
  a = rpc_call_alloc(&call, 10);
  b = rpc_call_alloc(&call, 24);
  assert_false(__asan_address_is_poisoned(a + 9));
  assert_true(__asan_address_is_poisoned(a + 10));
  assert_true(__asan_address_is_poisoned(a + 15));
  assert_false(__asan_address_is_poisoned(b + 23));
  assert_true(__asan_address_is_poisoned(b + 24));
  assert_true(b - a >= 16 + 10); /* a gap after each allocation */
  arena_free(&call);
}
#endif

/* rpc_call_i64() writes what "%lld" would, at the ends of the range and around zero. */
static void test_i64_text(void **state) {
  (void)state;
  rpc_call_t call;
  const int64_t vs[] = {0, 1, -1, 9, 10, -10, 99, 100, 1234567890123LL, -987654321, INT64_MAX,
                        INT64_MIN, INT64_MIN + 1};
  memset(&call, 0, sizeof(call));
  for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) {
    char want[32];
    snprintf(want, sizeof(want), "%lld", (long long)vs[i]);
    assert_string_equal(rpc_call_i64(&call, vs[i]), want);
  }
  arena_free(&call);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_i64_text),
      cmocka_unit_test(test_small_allocations_share_blocks),
      cmocka_unit_test(test_large_allocation_gets_its_own_block),
      cmocka_unit_test(test_zero_size_and_a_first_large_one),
#if defined(__SANITIZE_ADDRESS__)
      cmocka_unit_test(test_past_an_allocation_is_poisoned),
#endif
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
