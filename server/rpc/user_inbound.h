#ifndef CLUED_RPC_USER_INBOUND_H
#define CLUED_RPC_USER_INBOUND_H

/* Request bytes each user's authenticated calls keep, over all its connections
 * (--max-user-inbound), so that one user cannot take the whole of --max-inbound. A counter
 * exists only while its user keeps bytes: memory follows the calls, never the users seen. */

#include <stddef.h>
#include <stdint.h>

#define USER_INBOUND_BUCKETS 256

typedef struct user_inbound_count user_inbound_count_t;

typedef struct user_inbound {
  user_inbound_count_t *buckets[USER_INBOUND_BUCKETS];
} user_inbound_t;

/**
 * Count n more bytes of user (0: none, never counted). Returns 0, or -1 when out of memory
 * (nothing counted: the caller counts nothing either).
 */
int user_inbound_add(user_inbound_t *u, uint64_t user, size_t n)
    __attribute__((warn_unused_result));

/** n of user's counted bytes are freed (at most what it has counted). */
void user_inbound_release(user_inbound_t *u, uint64_t user, size_t n);

/** The bytes user keeps now. */
size_t user_inbound_kept(const user_inbound_t *u, uint64_t user);

/** True when no user keeps anything (every counter is freed). */
int user_inbound_empty(const user_inbound_t *u);

#endif
