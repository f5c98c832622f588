#include "rpc/user_inbound.h"

#include <assert.h>
#include <stdlib.h>

struct user_inbound_count {
  user_inbound_count_t *next;
  uint64_t user;
  size_t bytes; /* > 0 while the counter exists */
};

static user_inbound_count_t **slot(const user_inbound_t *u, uint64_t user) {
  /* Fibonacci hashing spreads consecutive user ids over the buckets. */
  user_inbound_count_t *const *s = &u->buckets[(user * 0x9E3779B97F4A7C15ull) >> 56];

  while (*s && (*s)->user != user)
    s = &(*s)->next;
  return (user_inbound_count_t **)s;
}

int user_inbound_add(user_inbound_t *u, uint64_t user, size_t n) {
  user_inbound_count_t **s;

  if (user == 0 || n == 0)
    return 0;
  s = slot(u, user);
  if (*s == NULL) {
    if ((*s = calloc(1, sizeof(**s))) == NULL)
      return -1;
    (*s)->user = user;
  }
  (*s)->bytes += n;
  return 0;
}

void user_inbound_release(user_inbound_t *u, uint64_t user, size_t n) {
  user_inbound_count_t **s, *dead;

  if (user == 0 || n == 0)
    return;
  s = slot(u, user);
  assert(*s && (*s)->bytes >= n);
  if (*s == NULL)
    return;
  (*s)->bytes -= n < (*s)->bytes ? n : (*s)->bytes;
  if ((*s)->bytes == 0) {
    dead = *s;
    *s = dead->next;
    free(dead);
  }
}

size_t user_inbound_kept(const user_inbound_t *u, uint64_t user) {
  user_inbound_count_t **s = slot(u, user);
  return user && *s ? (*s)->bytes : 0;
}

int user_inbound_empty(const user_inbound_t *u) {
  for (int i = 0; i < USER_INBOUND_BUCKETS; i++)
    if (u->buckets[i])
      return 0;
  return 1;
}
