#ifndef CLUED_SERVICE_TOKEN_H
#define CLUED_SERVICE_TOKEN_H

#include "rpc/rpc.h"

/** The most unrevoked tokens a user may hold, issued by themself (IssueMyToken) or by an
 * administrator (IssueToken): RESOURCE_EXHAUSTED beyond. */
#define TOKEN_LIVE_MAX 16

/** The most tokens one ListMyTokens answer carries: the unrevoked ones (at most
 * TOKEN_LIVE_MAX) first, then the newest revoked. */
#define TOKEN_LIST_MAX 200

/** The clue.v1.TokenService methods, for the method table. */
extern const rpc_method_t token_methods[];
extern const size_t token_nmethods;

#endif
