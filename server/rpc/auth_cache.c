/* The principal cache: see auth_cache.h. The key is the token's SHA-256, uniformly spread, so
 * its first bits pick the bucket; only tokens that authenticated are ever inserted, so nobody
 * can fill the cache without valid tokens, and even then it stays within max. */

#include "rpc/auth_cache.h"

#include <stdlib.h>
#include <string.h>

#define HASH_HEX 64

struct auth_cache_entry {
  auth_cache_entry_t *next;      /* in buckets[bucket_of(hash)] */
  auth_cache_entry_t *tok_next;  /* in by_token[id_bucket(principal.token_id)] */
  auth_cache_entry_t *user_next; /* in by_user[id_bucket(principal.user_id)] */
  uint64_t expires;              /* ms, in the caller's clock */
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

static unsigned id_bucket(int64_t id) {
  return (unsigned)((uint64_t)id % AUTH_CACHE_BUCKETS);
}

void auth_cache_init(auth_cache_t *c, size_t max, uint64_t ttl_ms) {
  memset(c, 0, sizeof(*c));
  c->max = ttl_ms ? max : 0;
  c->ttl_ms = ttl_ms;
}

/* Take e out of its three chains and free it. */
static void drop_entry(auth_cache_t *c, auth_cache_entry_t *e) {
  auth_cache_entry_t **pp;

  for (pp = &c->buckets[bucket_of(e->hash)]; *pp != e; pp = &(*pp)->next)
    ;
  *pp = e->next;
  for (pp = &c->by_token[id_bucket(e->principal.token_id)]; *pp != e; pp = &(*pp)->tok_next)
    ;
  *pp = e->tok_next;
  for (pp = &c->by_user[id_bucket(e->principal.user_id)]; *pp != e; pp = &(*pp)->user_next)
    ;
  *pp = e->user_next;
  free(e);
  c->n--;
}

/* Drop the entries of bucket b that expired by now. */
static void drop_expired(auth_cache_t *c, unsigned b, uint64_t now) {
  for (auth_cache_entry_t *e = c->buckets[b], *next; e; e = next) {
    next = e->next;
    if (e->expires <= now)
      drop_entry(c, e);
  }
}

const rpc_principal_t *auth_cache_get(auth_cache_t *c, const char *hash, uint64_t now,
                                      uint64_t *read_ms) {
  unsigned b;

  if (!c->live || c->n == 0 || strlen(hash) != HASH_HEX)
    return NULL;
  b = bucket_of(hash);
  drop_expired(c, b, now);
  for (auth_cache_entry_t *e = c->buckets[b]; e; e = e->next)
    if (memcmp(e->hash, hash, HASH_HEX) == 0) {
      if (read_ms != NULL)
        *read_ms = e->expires - c->ttl_ms;
      return &e->principal;
    }
  return NULL;
}

auth_stamp_t auth_cache_stamp(const auth_cache_t *c) {
  return (auth_stamp_t){.gen = c->gen, .seq = c->seq, .lives = c->lives};
}

/* auth_cache_named(), where a bump of the generation counts only if going live was not all
 * it was (with lives_too, every bump counts). */
static int named_since(const auth_cache_t *c, auth_stamp_t s, const rpc_principal_t *p,
                       int lives_too) {
  if ((lives_too ? s.gen != c->gen : s.gen - s.lives != c->gen - c->lives) ||
      c->seq - s.seq > AUTH_FORGOTTEN)
    return -1;
  for (uint64_t q = s.seq + 1; q <= c->seq; q++) {
    const auth_forgot_t *f = &c->forgot[q % AUTH_FORGOTTEN];
    if ((f->token_id > 0 && f->token_id == p->token_id) ||
        (f->user_id > 0 && f->user_id == p->user_id))
      return 1;
  }
  return 0;
}

int auth_cache_named(const auth_cache_t *c, auth_stamp_t s, const rpc_principal_t *p) {
  return named_since(c, s, p, 1);
}

bool auth_cache_stale(const auth_cache_t *c, auth_stamp_t s, const rpc_principal_t *p) {
  return auth_cache_named(c, s, p) != 0;
}

void auth_cache_put(auth_cache_t *c, const char *hash, const rpc_principal_t *p, auth_stamp_t s,
                    uint64_t now) {
  unsigned b;
  auth_cache_entry_t *e;

  if (!c->live || c->max == 0 || strlen(hash) != HASH_HEX || auth_cache_stale(c, s, p))
    return;
  b = bucket_of(hash);
  drop_expired(c, b, now);
  for (e = c->buckets[b]; e; e = e->next)
    if (memcmp(e->hash, hash, HASH_HEX) == 0)
      break;
  if (e)
    drop_entry(c, e); /* put again under the ids just read */
  if (c->n >= c->max)
    for (unsigned i = 0; i < AUTH_CACHE_BUCKETS; i++)
      drop_expired(c, i, now);
  if (c->n >= c->max)
    return; /* full of live entries: this token is simply looked up each time */
  e = malloc(sizeof(*e));
  if (!e)
    return;
  memcpy(e->hash, hash, HASH_HEX);
  e->principal = *p;
  e->expires = now + c->ttl_ms;
  e->next = c->buckets[b];
  c->buckets[b] = e;
  e->tok_next = c->by_token[id_bucket(p->token_id)];
  c->by_token[id_bucket(p->token_id)] = e;
  e->user_next = c->by_user[id_bucket(p->user_id)];
  c->by_user[id_bucket(p->user_id)] = e;
  c->n++;
}

void auth_cache_forget(auth_cache_t *c, int64_t token_id, int64_t user_id) {
  auth_forgot_t *f;

  if (token_id <= 0 && user_id <= 0) {
    auth_cache_reset(c, c->live);
    return;
  }
  c->seq++;
  f = &c->forgot[c->seq % AUTH_FORGOTTEN];
  f->seq = c->seq;
  f->token_id = token_id > 0 ? token_id : 0;
  f->user_id = user_id > 0 ? user_id : 0;
  if (f->token_id)
    for (auth_cache_entry_t *e = c->by_token[id_bucket(token_id)], *next; e; e = next) {
      next = e->tok_next;
      if (e->principal.token_id == token_id)
        drop_entry(c, e);
    }
  if (f->user_id)
    for (auth_cache_entry_t *e = c->by_user[id_bucket(user_id)], *next; e; e = next) {
      next = e->user_next;
      if (e->principal.user_id == user_id)
        drop_entry(c, e);
    }
  /* Whose the token was goes too, at once: a lookup of it is a stranger's from now on, not
   * counted against (nor refused as) its user's, though none completed since. The slots are
   * few, and the loop is a revocation's, never a call's. */
  for (unsigned i = 0; i < AUTH_KNOWN_SLOTS; i++)
    if (c->known[i].key != 0 && ((f->token_id && c->known[i].token_id == f->token_id) ||
                                 (f->user_id && c->known[i].user_id == f->user_id)))
      memset(&c->known[i], 0, sizeof(c->known[i]));
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

void auth_cache_know(auth_cache_t *c, const char *hash, const rpc_principal_t *p, auth_stamp_t s,
                     uint64_t now) {
  uint64_t k = known_key(hash);
  auth_known_t *slot;

  if (k == 0 || p->user_id <= 0 || named_since(c, s, p, 0) != 0)
    return;
  slot = &c->known[k % AUTH_KNOWN_SLOTS];
  slot->key = k;
  slot->user_id = p->user_id;
  slot->token_id = p->token_id;
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
    while (c->buckets[i]) {
      auth_cache_entry_t *e = c->buckets[i];
      c->buckets[i] = e->next;
      free(e);
      c->n--;
    }
  memset(c->by_token, 0, sizeof(c->by_token));
  memset(c->by_user, 0, sizeof(c->by_user));
  if (live && !c->live) {
    c->lives++; /* the listener ready: it tells of revocations from now on */
  } else {
    /* What cannot be told (the listener lost, an invalidation unread) may have revoked any
     * token: none is known as its user's any more. */
    memset(c->known, 0, sizeof(c->known));
  }
  c->gen++;
  c->live = live;
}

void auth_cache_free(auth_cache_t *c) {
  auth_cache_reset(c, 0);
}
