/* PostgreSQL array literals and joined lists for the service files. */

#include "service/svc_util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "domain/validate.h"

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

/* Items are stored as validated: without the white space around them (validate.h). */
const char *svc_text_array_trimmed(rpc_call_t *call, char *const *items, size_t n) {
  size_t len = 3;
  char *out, *p;

  for (size_t i = 0; i < n; i++)
    len += strlen(items[i]) * 2 + 3;
  if ((out = p = rpc_call_alloc(call, len)) == NULL)
    return NULL;
  *p++ = '{';
  for (size_t i = 0; i < n; i++) {
    size_t tl;
    const char *t = validate_trim(items[i], &tl);
    if (i)
      *p++ = ',';
    *p++ = '"';
    for (size_t j = 0; j < tl; j++) {
      if (t[j] == '"' || t[j] == '\\')
        *p++ = '\\';
      *p++ = t[j];
    }
    *p++ = '"';
  }
  *p++ = '}';
  *p = '\0';
  return out;
}

int svc_split_list(rpc_call_t *call, char *joined, char ***items, size_t *n) {
  size_t count = 1;

  *n = 0;
  if (joined[0] == '\0')
    return 0;
  for (char *p = joined; *p; p++)
    count += *p == '\x1f';
  if ((*items = rpc_call_alloc(call, count * sizeof(char *))) == NULL)
    return -ENOMEM;
  for (char *p = joined, *sep; p; p = sep ? sep + 1 : NULL) {
    sep = strchr(p, '\x1f');
    if (sep)
      *sep = '\0';
    (*items)[(*n)++] = p;
  }
  return 0;
}

bool svc_all_set(const char *const *params, int n) {
  for (int i = 0; i < n; i++)
    if (params[i] == NULL)
      return false;
  return true;
}

int svc_name_index(const char *const *names, size_t n, const char *s) {
  if (s == NULL)
    return 0;
  for (size_t i = 1; i < n; i++)
    if (strcmp(names[i], s) == 0)
      return (int)i;
  return 0;
}
