#ifndef CLUED_RPC_KEY_COUNTS_H
#define CLUED_RPC_KEY_COUNTS_H

/* Counts by a 64-bit key, for bounds per user or per peer address: the request bytes a
 * user's calls keep (--max-user-inbound), the connections a user claims
 * (--max-conns-per-user), the strangers' connections of an address (--max-connections). A
 * counter exists only while its count is above 0: memory follows what is counted, never the
 * keys ever seen. */

#include <stddef.h>
#include <stdint.h>

#define KEY_COUNTS_BUCKETS 256

typedef struct key_count key_count_t;

typedef struct key_counts {
  key_count_t *buckets[KEY_COUNTS_BUCKETS];
} key_counts_t;

/**
 * Count n more for key (key 0 is never counted). Returns 0, or -1 when out of memory
 * (nothing counted: the caller counts nothing either).
 */
int key_counts_add(key_counts_t *k, uint64_t key, size_t n) __attribute__((warn_unused_result));

/** n of key's count is given back (at most what it has). */
void key_counts_release(key_counts_t *k, uint64_t key, size_t n);

/** key's count now. */
size_t key_counts_get(const key_counts_t *k, uint64_t key);

/** True when no key has a count (every counter is freed). */
int key_counts_empty(const key_counts_t *k);

#endif
