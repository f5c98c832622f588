/* The statement registry: see stmts.h. Texts are compared in full, never by hash alone, so two
 * texts can never share a name; and a name, once a slot is reused, is never given again, so a
 * connection that still has the old text prepared under it can never run it for the new one. */

#define _GNU_SOURCE /* dl_iterate_phdr */

#include "db/stmts.h"
#include "db/db.h"

#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct db_stmt_entry {
  uint64_t hash;
  uint64_t name; /* DB_STMTS_NO_NAME: unused */
  size_t len;
  char *sql;        /* NULL: unused */
  int chain;        /* the next slot in the same hash bucket, or -1 */
  int older, newer; /* built part: neighbours by last use in its segment, or -1 */
  int seg;          /* built part: DB_STMTS_PROBATION or DB_STMTS_PROTECTED */
};

struct db_stmts_range {
  uintptr_t lo, hi;
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

/* ---- the program's read-only memory ---------------------------------------------------- */

/* A string literal or a static const array is in a loaded segment the program cannot write;
 * a text built at run time (on the stack, on the heap, in a static buffer) is not. The
 * segments are those of the program and of every library loaded when the pool starts. */
typedef struct ro_scan {
  db_stmts_range_t *ro;
  unsigned n, cap;
} ro_scan_t;

static int ro_segment(struct dl_phdr_info *info, size_t size, void *arg) {
  ro_scan_t *s = arg;

  (void)size;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];

    if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W) || ph->p_memsz == 0)
      continue;
    if (s->ro && s->n < s->cap) {
      s->ro[s->n].lo = (uintptr_t)info->dlpi_addr + ph->p_vaddr;
      s->ro[s->n].hi = s->ro[s->n].lo + ph->p_memsz;
    }
    s->n++;
  }
  return 0;
}

static int ro_find(db_stmts_t *r) {
  ro_scan_t s = {0};

  (void)dl_iterate_phdr(ro_segment, &s); /* count, then fill */
  s.cap = s.n + 8;                       /* room for a library loaded in between */
  s.n = 0;
  if ((s.ro = calloc(s.cap, sizeof(*s.ro))) == NULL)
    return DB_ENOMEM;
  (void)dl_iterate_phdr(ro_segment, &s);
  r->ro = s.ro;
  r->nro = s.n < s.cap ? s.n : s.cap;
  return 0;
}

int db_stmts_constant(const db_stmts_t *r, const char *sql) {
  uintptr_t a = (uintptr_t)sql;

  for (unsigned i = 0; i < r->nro; i++)
    if (a >= r->ro[i].lo && a < r->ro[i].hi)
      return 1;
  return 0;
}

/* ---- the registry ---------------------------------------------------------------------- */

int db_stmts_init(db_stmts_t *r, unsigned constant_max, unsigned built_max, size_t text_max) {
  unsigned size = constant_max + built_max, nbuckets = 4;

  memset(r, 0, sizeof(*r));
  for (int s = 0; s < 2; s++)
    r->lru[s].newest = r->lru[s].oldest = -1;
  while (nbuckets < size)
    nbuckets *= 2;
  r->buckets = malloc(nbuckets * sizeof(*r->buckets));
  r->entries = calloc(size ? size : 1, sizeof(*r->entries));
  if (!r->buckets || !r->entries || ro_find(r) != 0) {
    db_stmts_free(r);
    return DB_ENOMEM;
  }
  for (unsigned i = 0; i < nbuckets; i++)
    r->buckets[i] = -1;
  for (unsigned i = 0; i < size; i++)
    r->entries[i].name = DB_STMTS_NO_NAME;
  r->constant_max = constant_max;
  r->built_max = built_max;
  r->protected_max = built_max - (built_max / 4 > 1 ? built_max / 4 : 1);
  if (built_max == 0)
    r->protected_max = 0;
  r->nbuckets = nbuckets;
  r->text_max = text_max;
  return 0;
}

void db_stmts_free(db_stmts_t *r) {
  for (unsigned i = 0; r->entries && i < r->constant_max + r->built_max; i++)
    free(r->entries[i].sql);
  free(r->entries);
  free(r->buckets);
  free(r->ro);
  memset(r, 0, sizeof(*r));
  for (int s = 0; s < 2; s++)
    r->lru[s].newest = r->lru[s].oldest = -1;
}

unsigned db_stmts_size(const db_stmts_t *r) {
  return r->constant_max + r->built_max;
}

static void lru_unlink(db_stmts_t *r, int id) {
  db_stmt_entry_t *e = &r->entries[id];
  db_stmts_lru_t *l = &r->lru[e->seg];

  if (e->newer >= 0)
    r->entries[e->newer].older = e->older;
  else
    l->newest = e->older;
  if (e->older >= 0)
    r->entries[e->older].newer = e->newer;
  else
    l->oldest = e->newer;
  l->n--;
}

static void lru_push(db_stmts_t *r, int id, int seg) {
  db_stmt_entry_t *e = &r->entries[id];
  db_stmts_lru_t *l = &r->lru[seg];

  e->seg = seg;
  e->newer = -1;
  e->older = l->newest;
  if (l->newest >= 0)
    r->entries[l->newest].newer = id;
  else
    l->oldest = id;
  l->newest = id;
  l->n++;
}

/* A built text used again: the most recently used of the protected segment, whose least
 * recently used goes back to probation if it is now over its share. */
static void lru_touch(db_stmts_t *r, int id) {
  lru_unlink(r, id);
  lru_push(r, id, DB_STMTS_PROTECTED);
  if (r->lru[DB_STMTS_PROTECTED].n > r->protected_max) {
    int old = r->lru[DB_STMTS_PROTECTED].oldest;
    lru_unlink(r, old);
    lru_push(r, old, DB_STMTS_PROBATION);
  }
}

/* Take slot id's text out of its hash chain. */
static void chain_remove(db_stmts_t *r, int id) {
  int *p = &r->buckets[r->entries[id].hash & (r->nbuckets - 1)];

  while (*p != id)
    p = &r->entries[*p].chain;
  *p = r->entries[id].chain;
}

/* A slot for a new text: a free one of its part, else the least recently used built one. */
static int slot_take(db_stmts_t *r, int constant) {
  int id;

  if (constant && r->nconstant < r->constant_max)
    return (int)r->nconstant++;
  if (r->built_max == 0)
    return -1;
  if (r->nbuilt < r->built_max) {
    id = (int)(r->constant_max + r->nbuilt++);
  } else {
    /* Probation is never empty here: the protected segment holds fewer than built_max. */
    id = r->lru[DB_STMTS_PROBATION].oldest;
    lru_unlink(r, id);
    chain_remove(r, id);
    free(r->entries[id].sql);
    r->entries[id].sql = NULL;
    r->entries[id].name = DB_STMTS_NO_NAME;
    r->evictions++;
  }
  lru_push(r, id, DB_STMTS_PROBATION);
  return id;
}

int db_stmts_id(db_stmts_t *r, const char *sql, uint64_t *name) {
  size_t len = strlen(sql);
  uint64_t h = text_hash(sql, len);
  unsigned b = (unsigned)h & (r->nbuckets - 1);
  db_stmt_entry_t *e;
  char *copy;
  int id;

  for (id = r->buckets[b]; id >= 0; id = e->chain) {
    e = &r->entries[id];
    if (e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0) {
      if ((unsigned)id >= r->constant_max)
        lru_touch(r, id);
      *name = e->name;
      return id;
    }
  }
  if (len > r->text_max || (copy = malloc(len + 1)) == NULL)
    return -1;
  if ((id = slot_take(r, db_stmts_constant(r, sql))) < 0) {
    free(copy);
    return -1;
  }
  memcpy(copy, sql, len + 1);
  e = &r->entries[id];
  e->sql = copy;
  e->len = len;
  e->hash = h;
  e->name = r->next_name++;
  e->chain = r->buckets[b];
  r->buckets[b] = id;
  *name = e->name;
  return id;
}

uint64_t db_stmts_name_of(const db_stmts_t *r, int id) {
  return id >= 0 && (unsigned)id < db_stmts_size(r) ? r->entries[id].name : DB_STMTS_NO_NAME;
}

void db_stmts_name(uint64_t name, char buf[DB_STMTS_NAME_MAX]) {
  snprintf(buf, DB_STMTS_NAME_MAX, "clued_%llu", (unsigned long long)name);
}
