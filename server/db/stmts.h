#ifndef CLUED_DB_STMTS_H
#define CLUED_DB_STMTS_H

/* The pool's registry of statement texts worth preparing. Each registered text has a slot (its
 * id) and a server-side name ("clued_<n>"), the same for every connection of the pool; each
 * connection then remembers, per slot, which name it has prepared there.
 *
 * Two parts, so that texts built at run time can never crowd out the others:
 *  - the constant part: texts that are constants of the program (string literals, static const
 *    arrays: the service layer's statements), told apart by where they live, in the program's
 *    read-only memory. There are finitely many, fixed when the program was built; each keeps
 *    its slot and name for the life of the pool.
 *  - the built part: texts built at run time (a ListClues filter, a watcher's, a statement
 *    with the caller's visibility clause), which may come in any number. They share a bounded
 *    number of slots as a segmented LRU: a new text enters probation (a quarter of the slots);
 *    a text used again moves to the protected segment (the rest), whose least recently used
 *    goes back to probation when it is full; a new text evicts the least recently used of
 *    probation. So a stream of texts each used once (one user trying every filter) churns
 *    probation only, while the texts used again and again stay. A text that takes a slot gets
 *    a new name, and each connection that had prepared the old one deallocates it the next time
 *    it is used (db.c).
 * A constant text that finds the constant part full goes to the built part. Texts longer than
 * the limit, or any text once out of memory, run unprepared. */

#include <stddef.h>
#include <stdint.h>

#define DB_STMTS_NAME_MAX 32        /* "clued_" and a 64-bit number, NUL included */
#define DB_STMTS_NO_NAME UINT64_MAX /* an unused slot's name */

typedef struct db_stmt_entry db_stmt_entry_t;
typedef struct db_stmts_range db_stmts_range_t;

enum { DB_STMTS_PROBATION = 0, DB_STMTS_PROTECTED = 1 };

/* One segment of the built part: its slots by last use. */
typedef struct db_stmts_lru {
  int newest, oldest; /* -1: empty */
  unsigned n;
} db_stmts_lru_t;

typedef struct db_stmts {
  unsigned constant_max;    /* slots of the constant part, ids [0, constant_max) */
  unsigned built_max;       /* slots of the built part, ids [constant_max, size) */
  unsigned protected_max;   /* of which the protected segment holds at most */
  unsigned nconstant;       /* constant slots in use */
  unsigned nbuilt;          /* built slots in use */
  size_t text_max;          /* the longest text registered, in bytes */
  uint64_t next_name;       /* names are never reused */
  uint64_t evictions;       /* built texts evicted so far */
  unsigned nbuckets;        /* a power of two, at least the number of slots */
  int *buckets;             /* hash chains of slots, -1: empty */
  db_stmt_entry_t *entries; /* one per slot */
  db_stmts_lru_t lru[2];    /* the built part's segments, DB_STMTS_PROBATION or _PROTECTED */
  db_stmts_range_t *ro;     /* the program's read-only memory */
  unsigned nro;
} db_stmts_t;

/** Prepare an empty registry of constant_max constant and built_max built texts of at most
 * text_max bytes each. Returns 0 or DB_ENOMEM. */
int db_stmts_init(db_stmts_t *r, unsigned constant_max, unsigned built_max, size_t text_max)
    __attribute__((warn_unused_result));

/** Free every text. */
void db_stmts_free(db_stmts_t *r);

/** Slots in all: the ids are [0, db_stmts_size()). */
unsigned db_stmts_size(const db_stmts_t *r);

/** Whether sql lives in the program's read-only memory (a constant of the program). */
int db_stmts_constant(const db_stmts_t *r, const char *sql);

/** The slot of sql and, in *name, its name, registering it if it is not (a new built text
 * enters probation, and may evict the least recently used there; one found moves to the
 * protected segment). -1 when it is not registered: too long, the part it belongs to has no
 * slots, or out of memory. */
int db_stmts_id(db_stmts_t *r, const char *sql, uint64_t *name);

/** The name slot id has now, DB_STMTS_NO_NAME if it is unused. A request whose text's slot got
 * another name since db_stmts_id() lost it: the text was evicted. */
uint64_t db_stmts_name_of(const db_stmts_t *r, int id);

/** Write the server-side name of a statement into buf (DB_STMTS_NAME_MAX bytes). */
void db_stmts_name(uint64_t name, char buf[DB_STMTS_NAME_MAX]);

#endif
