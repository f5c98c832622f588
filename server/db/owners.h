#ifndef CLUED_DB_OWNERS_H
#define CLUED_DB_OWNERS_H

/* How many requests each owner has in the database pool (waiting or running), so that one
 * owner (an HTTP/2 connection) holds a bounded share of it, and which owners are paused (their
 * waiting requests are not sent). A counter exists only while its owner has requests or is
 * paused: memory follows the requests and the paused owners, never the owners ever seen. */

#include <stddef.h>
#include <stdint.h>

#define DB_OWNERS_BUCKETS 256

typedef struct db_owner_count db_owner_count_t;

typedef struct db_owners {
  size_t max;                                   /* requests one owner may have, > 0 */
  db_owner_count_t *buckets[DB_OWNERS_BUCKETS]; /* chained by hash of the owner */
} db_owners_t;

/** Start with no counts; max (> 0) is the most one owner may take. */
void db_owners_init(db_owners_t *o, size_t max);

/**
 * Count one more request of owner (0: not counted, always 0). Returns 0, DB_EOWNER when the
 * owner already has max, or DB_ENOMEM (nothing counted on failure).
 */
int db_owners_take(db_owners_t *o, uint64_t owner) __attribute__((warn_unused_result));

/** Give back one request of owner, which must have one (owner 0: nothing). */
void db_owners_give(db_owners_t *o, uint64_t owner);

/** The requests owner has now. */
size_t db_owners_count(const db_owners_t *o, uint64_t owner);

/**
 * Pause (on) or resume owner. Returns 0 or DB_ENOMEM (nothing changed). Owner 0 is never
 * paused.
 */
int db_owners_pause(db_owners_t *o, uint64_t owner, int on) __attribute__((warn_unused_result));

/** True while owner is paused. */
int db_owners_paused(const db_owners_t *o, uint64_t owner);

/** True when no owner has a request (every counter is freed). */
int db_owners_empty(const db_owners_t *o);

#endif
