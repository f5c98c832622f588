#include "db/owners.h"

#include <assert.h>
#include <stdlib.h>

#include "db/db.h"

struct db_owner_count {
  db_owner_count_t *next;
  uint64_t owner;
  size_t n;           /* requests; the counter exists while n > 0 or paused */
  unsigned paused : 1;
};

void db_owners_init(db_owners_t *o, size_t max) {
  assert(max > 0);
  *o = (db_owners_t){.max = max};
}

static db_owner_count_t **slot(db_owners_t *o, uint64_t owner) {
  /* Fibonacci hashing spreads consecutive connection numbers over the buckets. */
  db_owner_count_t **s = &o->buckets[(owner * 0x9E3779B97F4A7C15ull) >> 56];

  while (*s && (*s)->owner != owner)
    s = &(*s)->next;
  return s;
}

int db_owners_take(db_owners_t *o, uint64_t owner) {
  db_owner_count_t **s;

  if (owner == 0)
    return 0;
  s = slot(o, owner);
  if (*s) {
    if ((*s)->n >= o->max)
      return DB_EOWNER;
    (*s)->n++;
    return 0;
  }
  *s = calloc(1, sizeof(**s));
  if (!*s)
    return DB_ENOMEM;
  (*s)->owner = owner;
  (*s)->n = 1;
  return 0;
}

void db_owners_give(db_owners_t *o, uint64_t owner) {
  db_owner_count_t **s, *dead;

  if (owner == 0)
    return;
  s = slot(o, owner);
  assert(*s && (*s)->n > 0);
  if (--(*s)->n == 0 && !(*s)->paused) {
    dead = *s;
    *s = dead->next;
    free(dead);
  }
}

size_t db_owners_count(const db_owners_t *o, uint64_t owner) {
  db_owner_count_t *const *s = slot((db_owners_t *)o, owner);
  return owner && *s ? (*s)->n : 0;
}

int db_owners_pause(db_owners_t *o, uint64_t owner, int on) {
  db_owner_count_t **s, *dead;

  if (owner == 0)
    return 0;
  s = slot(o, owner);
  if (*s == NULL) {
    if (!on)
      return 0;
    *s = calloc(1, sizeof(**s));
    if (!*s)
      return DB_ENOMEM;
    (*s)->owner = owner;
  }
  (*s)->paused = on ? 1 : 0;
  if (!on && (*s)->n == 0) {
    dead = *s;
    *s = dead->next;
    free(dead);
  }
  return 0;
}

int db_owners_paused(const db_owners_t *o, uint64_t owner) {
  db_owner_count_t *const *s = slot((db_owners_t *)o, owner);
  return owner && *s ? (*s)->paused : 0;
}

int db_owners_empty(const db_owners_t *o) {
  for (int i = 0; i < DB_OWNERS_BUCKETS; i++)
    if (o->buckets[i])
      return 0;
  return 1;
}
