#ifndef CLUED_RPC_AUTH_H
#define CLUED_RPC_AUTH_H

/* Authentication of calls: "authorization: Bearer <token>" looked up (by SHA-256) in the
 * database. */

#include <stdbool.h>
#include <stdint.h>

#include "rpc/rpc.h"

/**
 * Authenticate a call from its headers alone (before its body is read), then continue it
 * with rpc_call_authenticated(), or fail it with UNAUTHENTICATED/UNAVAILABLE.
 */
void rpc_auth_start(rpc_call_t *call);

/**
 * Start the principal cache (srv->auth_cache) and the LISTEN on "audit_events" that keeps it
 * honest: a revocation or a disabled user notified there drops that token's or user's
 * principals; losing that connection drops them all and stops the cache's use until LISTEN
 * is back. Returns 0 or -ENOMEM.
 */
int rpc_auth_init(server_t *srv) __attribute__((warn_unused_result));

/** Close the handle rpc_auth_init() started (the last connection is gone). */
void rpc_auth_close(server_t *srv);

/** Drop the cached principal of a token this instance revoked, or those of a user it
 * disabled; calls read before on them are looked up again before they run. */
void rpc_auth_forget_token(server_t *srv, int64_t token_id);
void rpc_auth_forget_user(server_t *srv, int64_t user_id);
/** Drop every cached principal of this instance: a change revoked tokens it cannot name one
 * by one (an ADMIN disabled, and the tokens it issued to others with it). */
void rpc_auth_forget_all(server_t *srv);

/** Continue a call whose principal is set (used by rpc_auth_start): read its body, dispatch. */
void rpc_call_authenticated(rpc_call_t *call);

/**
 * Is the call's principal still current, as its request is about to run? Not when an
 * invalidation of it (its token revoked, its user disabled, the listener lost) came since it
 * was read, nor once it is older than --auth-cache-ttl (counted from the database's answer,
 * not from a cache hit), nor, while nothing tells of revocations (no cache, its listener
 * lost), unless it was read this very moment: a body sent after its token was revoked must
 * not run on the authentication of its headers.
 */
bool rpc_auth_current(const rpc_call_t *call);

/**
 * Has the call's authority ended since its principal was read? When an invalidation named its
 * token or user (a revocation, a disabling), or, when the cache cannot tell (not listening,
 * everything dropped, too many invalidations since), once the principal is older than
 * --auth-cache-ttl and at least 10 s. A statement of the call that waited is then not sent
 * (db_opts_t.still): a client that holds its requests back (replies left unread) cannot have
 * them run after the revocation.
 */
bool rpc_auth_ended(rpc_call_t *call);

/** Fail a call whose authority ended (rpc_auth_ended): UNAUTHENTICATED if its token or user
 * was named, then or since, else UNAVAILABLE (retry). What rpc_auth_ended() found stands: the
 * cache may no longer say so (its listener became ready or was lost meanwhile). */
void rpc_auth_fail_ended(rpc_call_t *call);

/**
 * Look the call's token up again (the cache first), then continue it with
 * rpc_call_rechecked(), or fail it as rpc_auth_start() would.
 */
void rpc_auth_recheck(rpc_call_t *call);

/** Continue a call whose principal was read again (used by rpc_auth_recheck). */
void rpc_call_rechecked(rpc_call_t *call);

#define AUTH_TOKEN_LEN 67 /* "ct_" + 64 hex digits */

/** SHA-256 of a token as 64 lower-case hex digits plus NUL. */
void auth_token_hash(const char *token, char hex[65]);

/** A fresh 256-bit random token ("ct_" + hex) and its hash. Returns 0 or -EIO. */
int auth_token_new(char token[AUTH_TOKEN_LEN + 1], char hash_hex[65]) __attribute__((warn_unused_result));

/** Map database names to the proto enum numbers ("GROUP" -> 2, "LEADER" -> 2); 0 if unknown. */
int auth_unit_kind_from_name(const char *s);
int auth_role_from_name(const char *s);
#endif
