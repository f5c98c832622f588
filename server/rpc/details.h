#ifndef CLUED_RPC_DETAILS_H
#define CLUED_RPC_DETAILS_H

/* Rich error details (the gRPC richer error model): a failed call's google.rpc.Status, with
 * google.rpc error detail messages packed in Any, for the grpc-status-details-bin trailer.
 *
 * Handlers name details before they fail a call (rpc_detail_*() in rpc.h); what they do not
 * name is derived from the status alone, so every INVALID_ARGUMENT carries a BadRequest,
 * every FAILED_PRECONDITION a PreconditionFailure, every ABORTED an ErrorInfo and every
 * NOT_FOUND a ResourceInfo. Nothing is read from stored rows here: a NOT_FOUND's details come
 * from its message and what the handler names from the request, so an object the caller may
 * not see answers, details included, exactly as a missing one. */

#include <stddef.h>

/** Kinds of detail a handler can name. */
typedef enum rpc_detail_kind {
  RPC_DETAIL_FIELD,        /* BadRequest.FieldViolation: a = field, b = description */
  RPC_DETAIL_PRECONDITION, /* PreconditionFailure.Violation: a = type, b = subject, c = description */
  RPC_DETAIL_REASON,       /* ErrorInfo: a = reason, b = metadata key (may be NULL), c = value */
  RPC_DETAIL_RESOURCE,     /* ResourceInfo: a = resource type, b = resource name */
} rpc_detail_kind_t;

#define RPC_DETAILS_MAX 8 /* details one call keeps; more are dropped */

/** One named detail; the strings live in the call's memory. */
typedef struct rpc_detail {
  rpc_detail_kind_t kind;
  const char *a, *b, *c;
} rpc_detail_t;

/** The domain of clued's ErrorInfo reasons. */
#define RPC_DETAIL_DOMAIN "clue.v1"

/**
 * The base64 text (RFC 4648, padded) of the google.rpc.Status for code and msg with the given
 * details (n of them, possibly 0), in malloc'd memory owned by the caller. NULL for OK,
 * for codes that take no details, or on out of memory (the status then goes out without).
 */
char *rpc_details_encode(int code, const char *msg, const rpc_detail_t *d, size_t n);

#endif
