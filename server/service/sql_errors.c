#include "service/sql_errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

const sql_error_t sql_errors[] = {
    {"CLNOF", GRPC_NOT_FOUND, "the row is gone"},
    {"CLARG", GRPC_INVALID_ARGUMENT, "a request field does not fit the stored facts"},
    {"CLDUP", GRPC_ALREADY_EXISTS, "it exists already (a concurrent addition)"},
    {"CLPRE", GRPC_FAILED_PRECONDITION, "a concurrent proposal, decision or removal"},
    {"CLVER", GRPC_ABORTED, "the clue changed meanwhile"},
    {"CLLIM", GRPC_RESOURCE_EXHAUSTED,
     "a per-user limit is reached (unrevoked tokens, tokens issued in an hour)"},
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

/* The messages of migrations/ raising CLPRE or CL009, each with what it names. '*' stands
 * for any run of characters (an id, a state). unit.test_sql_errors finds every such message
 * of the migrations here. */
static const struct {
  const char *pattern, *type, *subject;
} preconditions[] = {
    {"proposal was already decided", "STATE", "proposal decided"},
    {"clue has a pending proposal; *", "STATE", "proposal pending"},
    {"clue * has a pending proposal; *", "STATE", "proposal pending"},
    {"clue * changed meanwhile *", "STATE", "clue changed"},
    {"clue * is *, a terminal state; *", "STATE", "terminal state"},
    {"clue * is already in a joint case", "STATE", "already in a case"},
    {"clue * is not in joint case *", "STATE", "not in this case"},
    {"joint case * holds * clues, the most one case may hold; *", "STATE", "case full"},
    {"joint case * has * participant units, the most one case may have", "PARTICIPATION",
     "too many participants"},
    {"unit * does not take part in joint case *", "PARTICIPATION", "not a participant"},
    {"the deadline of the current stage was already extended once", "STATE", "already extended"},
    {"clue is *; its stage has no deadline to extend", "STATE", "no stage deadline"},
    {"every LEADER of the reviewing unit is recused from this clue*", "RECUSAL",
     "every reviewer leader recused"},
    {"user * is recused from this clue and cannot be assigned to it", "RECUSAL", "user recused"},
    {"user * is already recused from this clue", "RECUSAL", "already recused"},
    {"user * is already a handler of this clue", "STATE", "already a handler"},
    {"user * is not a handler of this clue", "STATE", "not a handler"},
    {"rectification item * is *, no longer *", "STATE", "item moved"},
    {"source_clue_id: clue * changed owner meanwhile", "STATE", "source clue handed over"},
    {"administrators cannot disable themselves", "ADMINISTRATION", "self disable"},
    {"user * is the last enabled ADMIN holding a live token: *", "ADMINISTRATION",
     "last administrator"},
    {"token * is the last live token of the last enabled ADMIN *", "ADMINISTRATION",
     "last administrator"},
    {"disabling user * would also revoke the tokens it issued, and leave no enabled ADMIN *",
     "ADMINISTRATION", "last administrator"},
    {"user *, the caller, was disabled meanwhile", "ADMINISTRATION", "caller disabled"},
    {"token *, the caller's, was revoked meanwhile", "ADMINISTRATION", "caller's token revoked"},
    {"user * is already disabled", "STATE", "user disabled"},
    {"user * is disabled", "STATE", "user disabled"},
    {"token * is already revoked", "STATE", "token revoked"},
    {"token *, which request_id * issued, was revoked since: *", "STATE", "token revoked"},
    {"token *, which request_id * issued, is the one this call is signed with: *", "STATE",
     "token of this call"},
};

static bool matches(const char *p, const char *s) {
  for (; *p != '\0'; p++, s++) {
    if (*p == '*') {
      for (const char *t = s;; t++) {
        if (matches(p + 1, t))
          return true;
        if (*t == '\0')
          return false;
      }
    }
    if (*s != *p)
      return false;
  }
  return *s == '\0';
}

void sql_precondition(const char *message, const char **type, const char **subject) {
  *type = "STATE";
  *subject = "precondition";
  if (message == NULL)
    return;
  for (size_t i = 0; i < sizeof(preconditions) / sizeof(preconditions[0]); i++)
    if (matches(preconditions[i].pattern, message)) {
      *type = preconditions[i].type;
      *subject = preconditions[i].subject;
      return;
    }
}
