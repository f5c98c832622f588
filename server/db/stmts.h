#ifndef CLUED_DB_STMTS_H
#define CLUED_DB_STMTS_H

/* The pool's registry of statement texts worth preparing. Each distinct SQL text gets a small
 * number, the same for every connection of the pool and for its whole life, so that its
 * server-side name ("clued_<n>") is stable; each connection then remembers which numbers it
 * has prepared. The registry is bounded in entries and in bytes: a text that arrives once it
 * is full (statements built at run time, such as a watcher's filter) simply runs unprepared,
 * so the registry can never grow with the traffic. */

#include <stddef.h>
#include <stdint.h>

#define DB_STMTS_NAME_MAX 24 /* "clued_" and a number, NUL included */

typedef struct db_stmt_entry db_stmt_entry_t;

typedef struct db_stmts {
  unsigned max;           /* texts registered at most */
  unsigned n;             /* texts registered */
  size_t text_max;        /* the longest text registered, in bytes */
  unsigned cap;           /* hash slots, a power of two, at least twice max */
  db_stmt_entry_t *slots; /* open addressing by hash of the text */
} db_stmts_t;

/** Prepare an empty registry of at most max texts of at most text_max bytes each. Returns 0
 * or DB_ENOMEM. max 0: a registry that never registers anything. */
int db_stmts_init(db_stmts_t *r, unsigned max, size_t text_max)
    __attribute__((warn_unused_result));

/** Free every text. */
void db_stmts_free(db_stmts_t *r);

/** The number of sql, registering it if there is room; -1 when it is not (and will not be)
 * registered: the registry is full, the text too long, or out of memory. */
int db_stmts_id(db_stmts_t *r, const char *sql);

/** Write the server-side name of statement id into name (DB_STMTS_NAME_MAX bytes). */
void db_stmts_name(int id, char name[DB_STMTS_NAME_MAX]);

#endif
