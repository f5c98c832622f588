/* net/h2_pages: page blocks for nghttp2, and giving back the pages of an all-zero block. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "net/h2_pages.h"

static int resident_pages(void *p, size_t size) {
  unsigned char vec[H2_PAGES_MAX / H2_PAGE_SIZE];
  int n = 0;

  assert_int_equal(mincore(p, size, vec), 0);
  for (size_t i = 0; i < size / H2_PAGE_SIZE; i++)
    n += vec[i] & 1;
  return n;
}

static void test_discard_zero_keeps_data(void **state) {
  h2_pages_t *pg;
  uint8_t *b;
  (void)state;

  assert_int_equal(h2_pages_new(&pg), 0);
  b = h2_pages_alloc(pg, 4 * H2_PAGE_SIZE);
  assert_non_null(b);
  assert_int_equal(h2_pages_size(pg, b), 4 * H2_PAGE_SIZE);
  /* A block nobody touched is zero: nothing to read, nothing resident. */
  assert_int_equal(resident_pages(b, 4 * H2_PAGE_SIZE), 0);
  assert_int_equal(h2_pages_discard_zero(pg, b), 1);
  assert_int_equal(resident_pages(b, 4 * H2_PAGE_SIZE), 0);

  /* One non-zero byte anywhere (here in the last word of the third page) keeps it all. */
  b[0] = 1;
  b[3 * H2_PAGE_SIZE - 1] = 0x5a;
  b[0] = 0;
  assert_int_equal(h2_pages_discard_zero(pg, b), 0);
  assert_int_equal(b[3 * H2_PAGE_SIZE - 1], 0x5a);
  assert_int_equal(resident_pages(b, 4 * H2_PAGE_SIZE), 2);

  /* Cleared again (as nghttp2 clears a removed bucket): the pages go back, zeros remain. */
  b[3 * H2_PAGE_SIZE - 1] = 0;
  assert_int_equal(h2_pages_discard_zero(pg, b), 1);
  assert_int_equal(resident_pages(b, 4 * H2_PAGE_SIZE), 0);
  for (size_t i = 0; i < 4 * H2_PAGE_SIZE; i++)
    assert_int_equal(b[i], 0);

  /* Still allocated and usable. */
  b[5] = 7;
  assert_int_equal(h2_pages_discard_zero(pg, b), 0);
  assert_int_equal(b[5], 7);
  h2_pages_release(pg, b);
  h2_pages_free(pg);
}

static void test_discard_zero_foreign(void **state) {
  h2_pages_t *pg;
  static uint64_t other[H2_PAGE_SIZE / 8];
  (void)state;

  assert_int_equal(h2_pages_new(&pg), 0);
  assert_int_equal(h2_pages_discard_zero(pg, other), 0); /* not one of its blocks */
  h2_pages_free(pg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_discard_zero_keeps_data),
      cmocka_unit_test(test_discard_zero_foreign),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
