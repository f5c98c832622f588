#include "mem.h"

#include <stdlib.h>
#include <string.h>

#ifdef CLUED_TEST_HOOKS
static __thread long fail_countdown = -1;
static __thread long failures;

void clue__test_fail_alloc(long nth) {
  fail_countdown = nth;
}

long clue__test_alloc_failures(void) {
  return failures;
}

static int fail_now(void) {
  if (fail_countdown < 0)
    return 0;
  if (fail_countdown-- > 0)
    return 0;
  failures++;
  return 1;
}
#else
static int fail_now(void) {
  return 0;
}
#endif

void *clue__malloc(size_t n) {
  return fail_now() ? NULL : malloc(n);
}

void *clue__calloc(size_t n, size_t size) {
  return fail_now() ? NULL : calloc(n, size);
}

void *clue__realloc(void *p, size_t n) {
  return fail_now() ? NULL : realloc(p, n);
}

char *clue__strndup(const char *s, size_t n) {
  size_t len = strnlen(s, n);
  char *d = clue__malloc(len + 1);

  if (d == NULL)
    return NULL;
  memcpy(d, s, len);
  d[len] = '\0';
  return d;
}

char *clue__strdup(const char *s) {
  return clue__strndup(s, strlen(s));
}

static void *h2_malloc(size_t size, void *ud) {
  (void)ud;
  return clue__malloc(size);
}

static void h2_free(void *p, void *ud) {
  (void)ud;
  free(p);
}

static void *h2_calloc(size_t n, size_t size, void *ud) {
  (void)ud;
  return clue__calloc(n, size);
}

static void *h2_realloc(void *p, size_t size, void *ud) {
  (void)ud;
  return clue__realloc(p, size);
}

nghttp2_mem *clue__nghttp2_mem(void) {
  /* nghttp2 copies the struct; it is never written. */
  static nghttp2_mem mem = {NULL, h2_malloc, h2_free, h2_calloc, h2_realloc};
  return &mem;
}
