#include "service/sql_errors.h"

#include <string.h>

const sql_error_t sql_errors[] = {
    {"CLNOF", GRPC_NOT_FOUND, "the row is gone"},
    {"CLARG", GRPC_INVALID_ARGUMENT, "a request field does not fit the stored facts"},
    {"CLDUP", GRPC_ALREADY_EXISTS, "it exists already (a concurrent addition)"},
    {"CLPRE", GRPC_FAILED_PRECONDITION, "a concurrent proposal, decision or removal"},
    {"CLVER", GRPC_ABORTED, "the clue changed meanwhile"},
    {"CLLIM", GRPC_RESOURCE_EXHAUSTED, "a per-user limit is reached (unrevoked tokens)"},
    {"CLSYN", GRPC_UNAVAILABLE,
     "--require-sync-replica: the commit would not wait for a synchronous standby"},
};
const int sql_errors_len = (int)(sizeof(sql_errors) / sizeof(sql_errors[0]));

int sql_error_code(const char *st, grpc_status_t *code) {
  if (st == NULL || strlen(st) != 5 || st[0] != 'C' || st[1] != 'L')
    return -1;
  for (int i = 0; i < sql_errors_len; i++)
    if (strcmp(st, sql_errors[i].sqlstate) == 0) {
      *code = sql_errors[i].code;
      return 0;
    }
  /* Legacy: CLnnn with nnn the status number itself. */
  if (st[2] >= '0' && st[2] <= '9' && st[3] >= '0' && st[3] <= '9' && st[4] >= '0' && st[4] <= '9') {
    int n = (st[2] - '0') * 100 + (st[3] - '0') * 10 + (st[4] - '0');
    if (n >= 1 && n <= 16) {
      *code = (grpc_status_t)n;
      return 0;
    }
  }
  return -1;
}
