#ifndef CLUED_NET_H2_PAGES_H
#define CLUED_NET_H2_PAGES_H

/* Page-granular memory for nghttp2's large per-session buffers (its 16 KiB frame buffer, its
 * stream map), so that an idle connection costs only the pages it touched.
 *
 * From malloc, a 16 KiB buffer shares pages with its neighbours, and calloc clears what it
 * hands out: 10,000 idle connections kept every such page resident. Here each block is a run
 * of whole pages in a large anonymous mapping: a fresh block is zero without being touched,
 * a freed block goes back to the kernel (MADV_DONTNEED) and is reused whole, and a block
 * whose contents no longer matter can be given back while it stays allocated
 * (h2_pages_discard), as a connection does with its frame buffer when it falls idle. */

#include <stddef.h>

#define H2_PAGE_SIZE 4096
#define H2_PAGES_MIN 4096            /* smaller requests stay with malloc */
#define H2_PAGES_MAX (32 * H2_PAGE_SIZE) /* larger ones too (malloc maps them itself) */

typedef struct h2_pages h2_pages_t;

/** Create an empty allocator (no address space is reserved yet). Returns 0 or -ENOMEM. */
int h2_pages_new(h2_pages_t **out) __attribute__((warn_unused_result));

/** Unmap everything. Every block must have been freed, or is lost with it. */
void h2_pages_free(h2_pages_t *p);

/**
 * A zeroed block of at least size bytes (H2_PAGES_MIN..H2_PAGES_MAX), page aligned. Returns
 * NULL if size is out of that range or the address space cannot be had; the caller then
 * falls back to malloc.
 */
void *h2_pages_alloc(h2_pages_t *p, size_t size);

/** The usable size of a block of this allocator, or 0 if ptr is not one (say, malloc's). */
size_t h2_pages_size(const h2_pages_t *p, const void *ptr);

/** Free a block: its pages go back to the kernel and the block is reused zeroed. */
void h2_pages_release(h2_pages_t *p, void *ptr);

/** Drop a block's contents (it reads back as zeros) and return its pages; it stays allocated. */
void h2_pages_discard(h2_pages_t *p, void *ptr);

/**
 * Give back the pages of a block whose contents are all zero bytes (they read back as zeros,
 * so nothing its owner can see changes). Pages not resident are not read in. Returns 1 if
 * the block was discarded, 0 if it holds a non-zero byte or is not one of this allocator's.
 */
int h2_pages_discard_zero(h2_pages_t *p, void *ptr);

#endif
