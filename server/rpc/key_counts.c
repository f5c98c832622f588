#include "rpc/key_counts.h"

#include <assert.h>
#include <stdlib.h>

struct key_count {
  key_count_t *next;
  uint64_t key;
  size_t n; /* > 0 while the counter exists */
};

static key_count_t **slot(const key_counts_t *k, uint64_t key) {
  /* Fibonacci hashing spreads consecutive keys (user ids) over the buckets. */
  key_count_t *const *s = &k->buckets[(key * 0x9E3779B97F4A7C15ull) >> 56];

  while (*s && (*s)->key != key)
    s = &(*s)->next;
  return (key_count_t **)s;
}

int key_counts_add(key_counts_t *k, uint64_t key, size_t n) {
  key_count_t **s;

  if (key == 0 || n == 0)
    return 0;
  s = slot(k, key);
  if (*s == NULL) {
    if ((*s = calloc(1, sizeof(**s))) == NULL)
      return -1;
    (*s)->key = key;
  }
  (*s)->n += n;
  return 0;
}

void key_counts_release(key_counts_t *k, uint64_t key, size_t n) {
  key_count_t **s, *dead;

  if (key == 0 || n == 0)
    return;
  s = slot(k, key);
  assert(*s && (*s)->n >= n);
  if (*s == NULL)
    return;
  (*s)->n -= n < (*s)->n ? n : (*s)->n;
  if ((*s)->n == 0) {
    dead = *s;
    *s = dead->next;
    free(dead);
  }
}

size_t key_counts_get(const key_counts_t *k, uint64_t key) {
  key_count_t **s = slot(k, key);
  return key && *s ? (*s)->n : 0;
}

int key_counts_empty(const key_counts_t *k) {
  for (int i = 0; i < KEY_COUNTS_BUCKETS; i++)
    if (k->buckets[i])
      return 0;
  return 1;
}
