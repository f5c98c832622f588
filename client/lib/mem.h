#ifndef CLUE_LIB_MEM_H
#define CLUE_LIB_MEM_H

/*
 * Every allocation libclue makes goes through these (nghttp2's too, through
 * clue__nghttp2_mem), so that test builds can make any one of them fail and check that
 * out of memory comes back as CLUE_ENOMEM, never as a crash. Release with free().
 *
 * Internal names of libclue start with clue__ (libuv's uv__ convention), so that they
 * cannot collide with an application's own symbols.
 */

#include <nghttp2/nghttp2.h>
#include <stddef.h>

void *clue__malloc(size_t n);
void *clue__calloc(size_t n, size_t size);
void *clue__realloc(void *p, size_t n);
char *clue__strdup(const char *s);
char *clue__strndup(const char *s, size_t n);

/** An allocator for nghttp2 sessions built on the functions above. */
nghttp2_mem *clue__nghttp2_mem(void);

#ifdef CLUED_TEST_HOOKS
/** Test hook: the nth allocation from now on (0: the next) in this thread fails; -1: none. */
void clue__test_fail_alloc(long nth);

/** Test hook: how many allocations have been made to fail in this thread so far. */
long clue__test_alloc_failures(void);
#endif

#endif
