/* The principal cache: see auth_cache.h. The key is the token's SHA-256, uniformly spread, so
 * its first bits pick the bucket; only tokens that authenticated are ever inserted, so nobody
 * can fill the cache without valid tokens, and even then it stays within max. */

#include "rpc/auth_cache.h"

#include <stdlib.h>
#include <string.h>

#define HASH_HEX 64

struct auth_cache_entry {
  auth_cache_entry_t *next;
  uint64_t expires; /* ms, in the caller's clock */
  char hash[HASH_HEX];
  rpc_principal_t principal;
};

static unsigned bucket_of(const char *hash) {
  unsigned b = 0;

  for (int i = 0; i < 4; i++) {
    char ch = hash[i];
    b = b * 16 + (unsigned)(ch >= 'a' ? ch - 'a' + 10 : ch >= 'A' ? ch - 'A' + 10 : ch - '0');
  }
  return b % AUTH_CACHE_BUCKETS;
}

void auth_cache_init(auth_cache_t *c, size_t max, uint64_t ttl_ms) {
  memset(c, 0, sizeof(*c));
  c->max = ttl_ms ? max : 0;
  c->ttl_ms = ttl_ms;
}

static void drop_bucket(auth_cache_t *c, unsigned b, uint64_t now, int all) {
  auth_cache_entry_t **pp = &c->buckets[b];

  while (*pp) {
    auth_cache_entry_t *e = *pp;
    if (all || e->expires <= now) {
      *pp = e->next;
      free(e);
      c->n--;
    } else {
      pp = &e->next;
    }
  }
}

const rpc_principal_t *auth_cache_get(auth_cache_t *c, const char *hash, uint64_t now) {
  unsigned b;

  if (!c->live || c->n == 0 || strlen(hash) != HASH_HEX)
    return NULL;
  b = bucket_of(hash);
  drop_bucket(c, b, now, 0);
  for (auth_cache_entry_t *e = c->buckets[b]; e; e = e->next)
    if (memcmp(e->hash, hash, HASH_HEX) == 0)
      return &e->principal;
  return NULL;
}

void auth_cache_put(auth_cache_t *c, const char *hash, const rpc_principal_t *p, uint64_t gen,
                    uint64_t now) {
  unsigned b;
  auth_cache_entry_t *e;

  if (!c->live || gen != c->gen || c->max == 0 || strlen(hash) != HASH_HEX)
    return;
  b = bucket_of(hash);
  drop_bucket(c, b, now, 0);
  for (e = c->buckets[b]; e; e = e->next)
    if (memcmp(e->hash, hash, HASH_HEX) == 0)
      break;
  if (!e) {
    if (c->n >= c->max)
      for (unsigned i = 0; i < AUTH_CACHE_BUCKETS; i++)
        drop_bucket(c, i, now, 0);
    if (c->n >= c->max)
      return; /* full of live entries: this token is simply looked up each time */
    e = malloc(sizeof(*e));
    if (!e)
      return;
    memcpy(e->hash, hash, HASH_HEX);
    e->next = c->buckets[b];
    c->buckets[b] = e;
    c->n++;
  }
  e->principal = *p;
  e->expires = now + c->ttl_ms;
}

/* The first 64 bits of a hex hash (never 0: 0 marks an empty slot), or 0 if it is not one. */
static uint64_t known_key(const char *hash) {
  uint64_t k = 0;

  if (strlen(hash) != HASH_HEX)
    return 0;
  for (int i = 0; i < 16; i++) {
    char ch = hash[i];
    unsigned v = ch >= '0' && ch <= '9'   ? (unsigned)(ch - '0')
                 : ch >= 'a' && ch <= 'f' ? (unsigned)(ch - 'a' + 10)
                 : ch >= 'A' && ch <= 'F' ? (unsigned)(ch - 'A' + 10)
                                          : 16;
    if (v > 15)
      return 0;
    k = k << 4 | v;
  }
  return k ? k : 1;
}

void auth_cache_know(auth_cache_t *c, const char *hash, int64_t user_id, uint64_t now) {
  uint64_t k = known_key(hash);
  auth_known_t *slot;

  if (k == 0 || user_id <= 0)
    return;
  slot = &c->known[k % AUTH_KNOWN_SLOTS];
  slot->key = k;
  slot->user_id = user_id;
  slot->at = now;
}

int64_t auth_cache_known(const auth_cache_t *c, const char *hash, uint64_t now) {
  uint64_t k = known_key(hash);
  const auth_known_t *slot;

  if (k == 0)
    return 0;
  slot = &c->known[k % AUTH_KNOWN_SLOTS];
  return slot->key == k && now - slot->at < AUTH_KNOWN_MS ? slot->user_id : 0;
}

void auth_cache_unknow(auth_cache_t *c, const char *hash) {
  uint64_t k = known_key(hash);
  auth_known_t *slot;

  if (k == 0)
    return;
  slot = &c->known[k % AUTH_KNOWN_SLOTS];
  if (slot->key == k)
    memset(slot, 0, sizeof(*slot));
}

void auth_cache_reset(auth_cache_t *c, int live) {
  for (unsigned i = 0; i < AUTH_CACHE_BUCKETS && c->n > 0; i++)
    drop_bucket(c, i, 0, 1);
  c->gen++;
  c->live = live;
}

void auth_cache_free(auth_cache_t *c) {
  auth_cache_reset(c, 0);
}
