#include "net/h2_pages.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define REGION_PAGES 16384 /* 64 MiB of address space per region, reserved, not committed */
#define MAX_CLASS (H2_PAGES_MAX / H2_PAGE_SIZE)

typedef struct region {
  struct region *next;
  uint8_t *base;
  size_t used;                   /* pages handed out from the start (bump) */
  uint8_t npages[REGION_PAGES];  /* at a block's first page: its length in pages */
} region_t;

typedef struct free_list {
  void **v; /* kept outside the blocks, so a free block's pages stay untouched */
  size_t n, cap;
} free_list_t;

struct h2_pages {
  region_t *regions;
  free_list_t free[MAX_CLASS + 1]; /* by length in pages */
};

int h2_pages_new(h2_pages_t **out) {
  h2_pages_t *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return -ENOMEM;
  *out = p;
  return 0;
}

void h2_pages_free(h2_pages_t *p) {
  if (p == NULL)
    return;
  while (p->regions) {
    region_t *r = p->regions;
    p->regions = r->next;
    munmap(r->base, (size_t)REGION_PAGES * H2_PAGE_SIZE);
    free(r);
  }
  for (int i = 0; i <= MAX_CLASS; i++)
    free(p->free[i].v);
  free(p);
}

static region_t *region_of(const h2_pages_t *p, const void *ptr) {
  const uint8_t *b = ptr;
  for (region_t *r = p->regions; r; r = r->next)
    if (b >= r->base && b < r->base + (size_t)REGION_PAGES * H2_PAGE_SIZE)
      return r;
  return NULL;
}

static region_t *region_new(h2_pages_t *p) {
  region_t *r = calloc(1, sizeof(*r));
  void *base;

  if (r == NULL)
    return NULL;
  base = mmap(NULL, (size_t)REGION_PAGES * H2_PAGE_SIZE, PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    free(r);
    return NULL;
  }
  r->base = base;
  r->next = p->regions;
  p->regions = r;
  return r;
}

void *h2_pages_alloc(h2_pages_t *p, size_t size) {
  size_t pages = (size + H2_PAGE_SIZE - 1) / H2_PAGE_SIZE;
  free_list_t *fl;
  region_t *r;

  if (size < H2_PAGES_MIN || size > H2_PAGES_MAX)
    return NULL;
  fl = &p->free[pages];
  if (fl->n > 0)
    return fl->v[--fl->n]; /* released: zero already */
  r = p->regions;
  if (r == NULL || r->used + pages > REGION_PAGES)
    r = region_new(p);
  if (r == NULL)
    return NULL;
  r->npages[r->used] = (uint8_t)pages;
  r->used += pages;
  return r->base + (r->used - pages) * H2_PAGE_SIZE;
}

size_t h2_pages_size(const h2_pages_t *p, const void *ptr) {
  region_t *r = region_of(p, ptr);
  if (r == NULL)
    return 0;
  return (size_t)r->npages[((const uint8_t *)ptr - r->base) / H2_PAGE_SIZE] * H2_PAGE_SIZE;
}

void h2_pages_discard(h2_pages_t *p, void *ptr) {
  size_t size = h2_pages_size(p, ptr);
  if (size > 0)
    (void)madvise(ptr, size, MADV_DONTNEED);
}

int h2_pages_discard_zero(h2_pages_t *p, void *ptr) {
  size_t size = h2_pages_size(p, ptr);
  const uint64_t *w = ptr;
  unsigned char vec[H2_PAGES_MAX / H2_PAGE_SIZE];
  int any = 0;

  if (size == 0)
    return 0;
  /* Only resident pages can hold anything but zeros; reading the others would map them. */
  if (mincore(ptr, size, vec) == 0) {
    for (size_t pg = 0; pg < size / H2_PAGE_SIZE; pg++) {
      if (!(vec[pg] & 1))
        continue;
      any = 1;
      for (size_t i = pg * H2_PAGE_SIZE / 8; i < (pg + 1) * H2_PAGE_SIZE / 8; i++)
        if (w[i] != 0)
          return 0;
    }
  } else {
    any = 1;
    for (size_t i = 0; i < size / 8; i++)
      if (w[i] != 0)
        return 0;
  }
  if (any)
    (void)madvise(ptr, size, MADV_DONTNEED);
  return 1;
}

void h2_pages_release(h2_pages_t *p, void *ptr) {
  size_t size = h2_pages_size(p, ptr);
  free_list_t *fl;

  if (size == 0)
    return;
  (void)madvise(ptr, size, MADV_DONTNEED);
  fl = &p->free[size / H2_PAGE_SIZE];
  if (fl->n == fl->cap) {
    size_t cap = fl->cap ? fl->cap * 2 : 64;
    void **nv = realloc(fl->v, cap * sizeof(*nv));
    if (nv == NULL)
      return; /* the block is lost to reuse, not to correctness */
    fl->v = nv;
    fl->cap = cap;
  }
  fl->v[fl->n++] = ptr;
}
