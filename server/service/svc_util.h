#ifndef CLUED_SERVICE_SVC_UTIL_H
#define CLUED_SERVICE_SVC_UTIL_H

/* Small conversions several service files share, beside common.h's: PostgreSQL array
 * literals for query parameters and lists that travel as one joined column. Every function
 * returning text allocates it in the call's memory. */

#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"

/** A PostgreSQL bigint[] literal of ids ("{1,2,3}"); NULL when out of memory. */
const char *svc_id_array(rpc_call_t *call, const int64_t *ids, size_t n);

#endif
