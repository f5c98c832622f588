#ifndef CLUED_RPC_AUTH_CACHE_H
#define CLUED_RPC_AUTH_CACHE_H

/* Principals of recently seen tokens, by token hash, so that most calls authenticate without a
 * round trip to the database. Bounded in entries; each entry lives at most ttl_ms. Entries are
 * only served while the cache is "live" (its invalidation listener is listening). Every
 * invalidation bumps a generation: a lookup that started before it may not insert what it
 * read, since that may predate the revocation. Pure data: the caller supplies the time. */

#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"

#define AUTH_CACHE_BUCKETS 1024
#define AUTH_KNOWN_SLOTS 1024       /* tokens remembered as whose they were (a hint) */
#define AUTH_KNOWN_MS (10 * 60000u) /* ... for this long after they last authenticated */

typedef struct auth_cache_entry auth_cache_entry_t;

/* A token that authenticated lately: whose it was, not what it may do. */
typedef struct auth_known {
  uint64_t key; /* the first 64 bits of the token's hash; 0: empty */
  int64_t user_id;
  uint64_t at; /* ms, in the caller's clock */
} auth_known_t;

typedef struct auth_cache {
  size_t max;      /* entries at most; 0: nothing is ever cached */
  size_t n;        /* entries now */
  uint64_t ttl_ms; /* an entry's life */
  int live;        /* the invalidation listener is listening: entries may be served */
  uint64_t gen;    /* bumped by every invalidation */
  auth_cache_entry_t *buckets[AUTH_CACHE_BUCKETS];
  auth_known_t known[AUTH_KNOWN_SLOTS]; /* direct-mapped: a newer token takes the slot */
} auth_cache_t;

/** An empty cache, not live, of at most max entries living ttl_ms each. */
void auth_cache_init(auth_cache_t *c, size_t max, uint64_t ttl_ms);

/** The principal of the token with SHA-256 hex hash, if cached, live and not expired at now;
 * else NULL. The pointer is valid until the next call on the cache. */
const rpc_principal_t *auth_cache_get(auth_cache_t *c, const char *hash, uint64_t now);

/** Remember p for hash from now, unless an invalidation happened since gen was read (gen !=
 * c->gen), the cache is not live, or it is full of unexpired entries. */
void auth_cache_put(auth_cache_t *c, const char *hash, const rpc_principal_t *p, uint64_t gen,
                    uint64_t now);

/**
 * Remember that the token with hash authenticated as user_id at now. Not a principal: it is
 * never served for authentication, only for auth_cache_known().
 */
void auth_cache_know(auth_cache_t *c, const char *hash, int64_t user_id, uint64_t now);

/**
 * The user the token with hash authenticated as within AUTH_KNOWN_MS before now, or 0: a
 * lookup of a known user's token renews its principal, and counts against that user's
 * share of the database pool rather than strangers' (rpc/auth.c). Kept across invalidations:
 * a revoked token's lookup still finds nothing.
 */
int64_t auth_cache_known(const auth_cache_t *c, const char *hash, uint64_t now);

/** Forget that the token with hash authenticated lately (it no longer does). */
void auth_cache_unknow(auth_cache_t *c, const char *hash);

/** Drop every entry and bump the generation; live: whether entries may be served from now. */
void auth_cache_reset(auth_cache_t *c, int live);

/** Free every entry (the cache is then empty, not live). */
void auth_cache_free(auth_cache_t *c);

#endif
