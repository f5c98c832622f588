/* The statement registry: see stmts.h. Texts are compared in full, never by hash alone, so two
 * texts can never share a name. */

#include "db/stmts.h"
#include "db/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct db_stmt_entry {
  uint64_t hash;
  size_t len;
  char *sql; /* NULL: free slot */
  int id;
};

/* Every call looks its statement up, and texts run to a few kilobytes: hash eight bytes at a
 * time (a multiply and shift mix), not one. */
static uint64_t text_hash(const char *s, size_t len) {
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ len, w;
  size_t i = 0;

  for (; i + 8 <= len; i += 8) {
    memcpy(&w, s + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
  }
  w = 0;
  memcpy(&w, s + i, len - i);
  h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
  return h ^ (h >> 29);
}

int db_stmts_init(db_stmts_t *r, unsigned max, size_t text_max) {
  unsigned cap = 4;

  memset(r, 0, sizeof(*r));
  while (cap < 2 * max)
    cap *= 2;
  r->slots = calloc(cap, sizeof(*r->slots));
  if (!r->slots)
    return DB_ENOMEM;
  r->max = max;
  r->cap = cap;
  r->text_max = text_max;
  return 0;
}

void db_stmts_free(db_stmts_t *r) {
  for (unsigned i = 0; r->slots && i < r->cap; i++)
    free(r->slots[i].sql);
  free(r->slots);
  memset(r, 0, sizeof(*r));
}

int db_stmts_id(db_stmts_t *r, const char *sql) {
  size_t len = strlen(sql);
  uint64_t h = text_hash(sql, len);
  unsigned i = (unsigned)h & (r->cap - 1);

  /* At most max of cap >= 2 * max slots are used: a free slot is always found. */
  for (;; i = (i + 1) & (r->cap - 1)) {
    db_stmt_entry_t *e = &r->slots[i];

    if (!e->sql)
      break;
    if (e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0)
      return e->id;
  }
  if (r->n >= r->max || len > r->text_max)
    return -1;
  r->slots[i].sql = malloc(len + 1);
  if (!r->slots[i].sql)
    return -1;
  memcpy(r->slots[i].sql, sql, len + 1);
  r->slots[i].hash = h;
  r->slots[i].len = len;
  r->slots[i].id = (int)r->n++;
  return r->slots[i].id;
}

void db_stmts_name(int id, char name[DB_STMTS_NAME_MAX]) {
  snprintf(name, DB_STMTS_NAME_MAX, "clued_%d", id);
}
