#include "rpc/table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A sorted array searched by binary search: a few dozen methods, looked up on every call,
 * never changed after start-up. */
struct rpc_table {
  const rpc_method_t **m;
  size_t n, cap;
};

int rpc_table_new(rpc_table_t **out) {
  rpc_table_t *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return -ENOMEM;
  *out = t;
  return 0;
}

void rpc_table_free(rpc_table_t *t) {
  if (t == NULL)
    return;
  free(t->m);
  free(t);
}

static int cmp_path(const char *a, size_t alen, const char *b) {
  size_t blen = strlen(b);
  int c = memcmp(a, b, alen < blen ? alen : blen);
  if (c != 0)
    return c;
  return alen < blen ? -1 : alen > blen ? 1 : 0;
}

int rpc_table_add(rpc_table_t *t, const rpc_method_t *methods, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const rpc_method_t *m = &methods[i];
    size_t lo = 0, hi = t->n, len = strlen(m->path);
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      int c = cmp_path(m->path, len, t->m[mid]->path);
      if (c == 0)
        return -EEXIST;
      if (c < 0)
        hi = mid;
      else
        lo = mid + 1;
    }
    if (t->n == t->cap) {
      size_t cap = t->cap ? t->cap * 2 : 32;
      const rpc_method_t **nm = realloc(t->m, cap * sizeof(*nm));
      if (nm == NULL)
        return -ENOMEM;
      t->m = nm;
      t->cap = cap;
    }
    memmove(&t->m[lo + 1], &t->m[lo], (t->n - lo) * sizeof(*t->m));
    t->m[lo] = m;
    t->n++;
  }
  return 0;
}

const rpc_method_t *rpc_table_find(const rpc_table_t *t, const char *path, size_t len) {
  size_t lo = 0, hi = t->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = cmp_path(path, len, t->m[mid]->path);
    if (c == 0)
      return t->m[mid];
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return NULL;
}
