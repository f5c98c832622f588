/* PostgreSQL array literals and joined lists for the service files. */

#include "service/svc_util.h"

#include <stdio.h>

const char *svc_id_array(rpc_call_t *call, const int64_t *ids, size_t n) {
  char *out = rpc_call_alloc(call, n * 21 + 3), *p = out;

  if (out == NULL)
    return NULL;
  *p++ = '{';
  for (size_t i = 0; i < n; i++)
    p += sprintf(p, "%s%lld", i ? "," : "", (long long)ids[i]);
  *p++ = '}';
  *p = '\0';
  return out;
}
