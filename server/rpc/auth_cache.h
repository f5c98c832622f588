#ifndef CLUED_RPC_AUTH_CACHE_H
#define CLUED_RPC_AUTH_CACHE_H

/* Principals of recently seen tokens, by token hash, so that most calls authenticate without a
 * round trip to the database. Bounded in entries; each entry lives at most ttl_ms. Entries are
 * only served while the cache is "live" (its invalidation listener is listening).
 *
 * A revoked token or a disabled user is forgotten alone (auth_cache_forget): its entries go,
 * and the last AUTH_FORGOTTEN such invalidations are remembered, so that a lookup, or a call,
 * that read a principal before one of them can tell whether it concerned that principal
 * (auth_cache_stale). What cannot be told so (the listener lost, more invalidations than are
 * remembered) drops everything and bumps a generation that every stamp carries. One user
 * revoking their own tokens in a loop thus costs the others' principals nothing. Pure data:
 * the caller supplies the time. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"

#define AUTH_CACHE_BUCKETS 1024
#define AUTH_KNOWN_SLOTS 1024       /* tokens remembered as whose they were (a hint) */
#define AUTH_KNOWN_MS (10 * 60000u) /* ... for this long after they last authenticated */
#define AUTH_FORGOTTEN 4096         /* targeted invalidations remembered for reads in flight */

typedef struct auth_cache_entry auth_cache_entry_t;

/* A token that authenticated lately: whose it was, not what it may do. */
typedef struct auth_known {
  uint64_t key; /* the first 64 bits of the token's hash; 0: empty */
  int64_t user_id;
  int64_t token_id; /* so that its revocation forgets it */
  uint64_t at;      /* ms, in the caller's clock */
} auth_known_t;

/* A token revoked (token_id) or a user disabled (user_id), the seq-th invalidation. */
typedef struct auth_forgot {
  uint64_t seq;
  int64_t token_id, user_id; /* one of them, the other 0 */
} auth_forgot_t;

/* When a principal was read: the cache's generation and invalidations so far. */
typedef struct auth_stamp {
  uint64_t gen, seq, lives;
} auth_stamp_t;

typedef struct auth_cache {
  size_t max;      /* entries at most; 0: nothing is ever cached */
  size_t n;        /* entries now */
  uint64_t ttl_ms; /* an entry's life */
  int live;        /* the invalidation listener is listening: entries may be served */
  uint64_t gen;    /* bumped by every invalidation that drops everything (auth_cache_reset) */
  uint64_t seq;    /* targeted invalidations so far (auth_cache_forget) */
  uint64_t lives;  /* of gen's bumps, those of going live (nothing was revoked by them) */
  auth_cache_entry_t *buckets[AUTH_CACHE_BUCKETS];  /* by token hash */
  auth_cache_entry_t *by_token[AUTH_CACHE_BUCKETS]; /* the same entries by token id */
  auth_cache_entry_t *by_user[AUTH_CACHE_BUCKETS];  /* ... and by user id */
  auth_forgot_t forgot[AUTH_FORGOTTEN];             /* the last ones, at [seq % AUTH_FORGOTTEN] */
  auth_known_t known[AUTH_KNOWN_SLOTS]; /* direct-mapped: a newer token takes the slot */
} auth_cache_t;

/** An empty cache, not live, of at most max entries living ttl_ms each. */
void auth_cache_init(auth_cache_t *c, size_t max, uint64_t ttl_ms);

/** The principal of the token with SHA-256 hex hash, if cached, live and not expired at now;
 * else NULL. The pointer is valid until the next call on the cache. If read_ms is not NULL,
 * a hit sets it to when the principal was read from the database (the time given to
 * auth_cache_put()). */
const rpc_principal_t *auth_cache_get(auth_cache_t *c, const char *hash, uint64_t now,
                                      uint64_t *read_ms);

/** The cache's state now: stamp a principal read from now on with it. */
auth_stamp_t auth_cache_stamp(const auth_cache_t *c);

/**
 * Whether p, read at stamp s, may predate an invalidation of it: its token revoked or its user
 * disabled since (as far as remembered), or everything dropped since, or more invalidations
 * since than are remembered.
 */
bool auth_cache_stale(const auth_cache_t *c, auth_stamp_t s, const rpc_principal_t *p);

/**
 * Whether an invalidation since stamp s named p's token or user: 1 if one did, 0 if none did,
 * -1 if the cache cannot tell (everything dropped since, or more invalidations since than are
 * remembered).
 */
int auth_cache_named(const auth_cache_t *c, auth_stamp_t s, const rpc_principal_t *p);

/** Remember p, read at stamp s, for hash from now, unless it is stale (auth_cache_stale), the
 * cache is not live, or it is full of unexpired entries. */
void auth_cache_put(auth_cache_t *c, const char *hash, const rpc_principal_t *p, auth_stamp_t s,
                    uint64_t now);

/**
 * A token was revoked (token_id > 0) or a user disabled (user_id > 0): drop its principals and
 * what is known of whose it was (auth_cache_known()), and remember it for the reads in
 * flight. Anything else (neither id positive) drops everything, as auth_cache_reset(c,
 * c->live).
 */
void auth_cache_forget(auth_cache_t *c, int64_t token_id, int64_t user_id);

/**
 * Remember that the token with hash authenticated as p (its user and token ids) at now,
 * unless p, read at stamp s, may predate an invalidation of it (auth_cache_stale): a lookup
 * that read the token before its revocation leaves no hint behind it. Not a principal: it is
 * never served for authentication, only for auth_cache_known().
 */
void auth_cache_know(auth_cache_t *c, const char *hash, const rpc_principal_t *p, auth_stamp_t s,
                     uint64_t now);

/**
 * The user the token with hash authenticated as within AUTH_KNOWN_MS before now, or 0: a
 * lookup of a known user's token renews its principal, and counts against that user's
 * share of the database pool rather than strangers' (rpc/auth.c). An invalidation of the
 * token or its user forgets it (auth_cache_forget), as does one that drops everything
 * (auth_cache_reset): from then on its lookups are a stranger's, as a made-up token's are.
 */
int64_t auth_cache_known(const auth_cache_t *c, const char *hash, uint64_t now);

/** Forget that the token with hash authenticated lately (it no longer does). */
void auth_cache_unknow(auth_cache_t *c, const char *hash);

/** Drop every entry and every token known (auth_cache_known()), and bump the generation
 * (every stamp before is stale); live: whether entries may be served from now. Going live
 * (the listener ready) drops the entries but keeps the tokens known, and a lookup that read
 * its token before may still make it known: going live revokes nothing. */
void auth_cache_reset(auth_cache_t *c, int live);

/** Free every entry (the cache is then empty, not live). */
void auth_cache_free(auth_cache_t *c);

#endif
