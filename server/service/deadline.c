/* ClueService.ExtendDeadline: a LEADER of the owner unit extends the current stage's
 * deadline once, with a reason (DESIGN.md §2 "Stage deadlines").
 *
 * Each stage gets its deadline on entry (clue_enter_state() of 0003_clues.sql, which also
 * clears deadline_extended, so the next stage may be extended again). An extension adds
 * `days` to the current deadline, bumps the clue's version and appends clue.deadline_extend
 * with the old and new deadlines; clue_extend_deadline() of 0006_stats.sql applies it. */

#include "service/deadline.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "service/clue_row.h"
#include "service/request_sha256.h"
#include "service/svc_util.h"

typedef struct extend_req {
  const Clue__V1__ExtendDeadlineRequest *req;
  const char *request_id;
  const char *request_sha256; /* request_sha256() */
  const char *reason;
  int decided_again; /* extend_refused() */
} extend_req_t;

static void extend_decide(rpc_call_t *call, extend_req_t *er);

/* Columns of the facts query after the clue: the idempotency record. */
enum {
  EF_REQ_METHOD = CLUE_NCOLS,
  EF_REQ_CLUE,
};

/* clang-format off */
static const char extend_facts_sql[] =
    SVC_DURABLE_IF(SVC_KEY_RECORDED("clue_requests", "$2", "$4"))
    "SELECT " CLUE_COLS("c", "ou", "$3", "$2") ", " CLUE_REQ_METHOD("q") ", q.clue_id"
    " FROM (SELECT 1) one"
    " LEFT JOIN clues c ON c.id = $1"
    " LEFT JOIN units ou ON ou.id = c.owner_unit"
    " LEFT JOIN clue_requests q ON q.user_id = $2 AND q.request_id = $4";

static const char extend_sql[] =
    "SELECT " CLUE_COLS("s", "ou", "$2", "$1")
    " FROM clue_extend_deadline($1, $2, $3, $4, $5, $6, $7, $8, $9) s JOIN units ou ON ou.id = (s).owner_unit";
/* clang-format on */

/* FAILED_PRECONDITION, logged, with a PreconditionFailure whose subject is the clue's state. */
__attribute__((format(printf, 3, 4))) static void refuse_state(rpc_call_t *call,
                                                               const clue_row_t *row,
                                                               const char *fmt, ...) {
  char msg[AUTHZ_MESSAGE_MAX];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  log_info("call %s: extend refused (9): %s", rpc_call_id(call), msg);
  rpc_detail_precondition(call, "STATE", clue_state_name(row->facts.state), msg);
  rpc_fail(call, GRPC_FAILED_PRECONDITION, "%s", msg);
}

/* The write refused, its caller still seeing the clue. A proposal made since the facts were
 * read (which moves no version) meets the write's generic "it must be reviewed first": the
 * extension is decided again, once, on fresh facts, and so answered as a fresh call is (its
 * own message, the clue's state as the PreconditionFailure's subject). Any other refusal is
 * told as it is. */
static void extend_refused(rpc_call_t *call, const db_result_t *r, void *arg) {
  extend_req_t *er = arg;

  if (!er->decided_again && r->sqlstate != NULL && strcmp(r->sqlstate, "CLPRE") == 0 &&
      r->message != NULL && strncmp(r->message, "clue has a pending proposal", 27) == 0) {
    er->decided_again = 1;
    extend_decide(call, er);
    return;
  }
  svc_fail_db(call, r);
}

static void got_extend_facts(rpc_call_t *call, const db_result_t *r, void *arg) {
  extend_req_t *er = arg;
  const Clue__V1__ExtendDeadlineRequest *req = er->req;
  authz_principal_t p = clue_principal(call);
  int64_t now = clue_now_ms(call);
  authz_result_t res;
  clue_row_t row;
  const char *params[9];

  if (db_rows(r) != 1 || clue_row_read(call, r, 0, 0, now, &row) != 0) {
    clue_oom(call);
    return;
  }
  if (db_value(r, 0, EF_REQ_METHOD) != NULL) {
    /* A retry: answer with the clue the first call extended, as it is now. */
    if (!clue_request_is(r, EF_REQ_METHOD, "ExtendDeadline", req->clue_id)) {
      clue_refuse_reused(call, er->request_id);
      return;
    }
    if (!clue_request_same(r, EF_REQ_METHOD, er->request_sha256)) {
      clue_refuse_changed(call, er->request_id);
      return;
    }
    if (clue_see_or_refuse_as(call, "extend", &row))
      (void)rpc_reply(call, &row.clue->base);
    return;
  }
  if (!clue_see_or_refuse_as(call, "extend", &row))
    return;
  res = authz_can_extend_deadline(&p, &row.facts);
  if (!clue_change_allowed(call, "extend", &row, req->expected_version, &res))
    return;
  /* A pending proposal was made against this version; an extension would void it. */
  if (row.facts.pending_reviewer_unit_id != 0) {
    refuse_state(call, &row, "clue has a pending proposal; it must be reviewed before the deadline "
                       "is extended");
    return;
  }
  if (row.stage_deadline_ms == 0) {
    refuse_state(call, &row, "clue is %s; its stage has no deadline to extend",
                 clue_state_name(row.facts.state));
    return;
  }

  params[0] = svc_i64(call, p.user_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = er->request_id;
  params[3] = svc_i64(call, now, 0);
  params[4] = svc_i64(call, row.id, 0);
  params[5] = svc_i64(call, row.version, 0);
  params[6] = rpc_call_printf(call, "%d", (int)req->days);
  params[7] = er->reason;
  params[8] = er->request_sha256;
  if (!svc_all_set(params, 9) ||
      !clue_sight_on_refusal_told(call, row.id, "clue not found", extend_refused, (void *)er)) {
    clue_oom(call);
    return;
  }
  svc_query(call, extend_sql, 9, params, clue_reply_seen, NULL);
}

/* Every violation of the request, one per field (validate_errors_t). */
static int validate_extend(const Clue__V1__ExtendDeadlineRequest *req, validate_errors_t *e) {
  validate_errors_init(e);
  validate_each(e, validate_id("clue_id", req->clue_id, validate_slot(e)));
  validate_each(e, validate_id("expected_version", req->expected_version, validate_slot(e)));
  validate_each(e, validate_extend_days(req->days, validate_slot(e)));
  validate_each(e, validate_reason("reason", req->reason, true, validate_slot(e)));
  validate_each(e, validate_request_id(req->request_id, validate_slot(e)));
  return validate_errors_result(e);
}

void clue_extend_deadline(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ExtendDeadlineRequest *req = (const void *)m;
  validate_errors_t errs;
  extend_req_t *er;

  if (validate_extend(req, &errs) != 0 && clue_invalid_each(call, &errs))
    return;
  if ((er = rpc_call_alloc(call, sizeof(*er))) == NULL) {
    clue_oom(call);
    return;
  }
  er->req = req;
  er->request_id = clue_request_key(call, req->request_id);
  er->reason = clue_trimmed(call, req->reason);
  er->request_sha256 = request_sha256(call, m);
  er->decided_again = 0;
  if (er->request_id == NULL || er->reason == NULL || er->request_sha256 == NULL) {
    clue_oom(call);
    return;
  }
  extend_decide(call, er);
}

/* The facts the extension is decided on (got_extend_facts()). */
static void extend_decide(rpc_call_t *call, extend_req_t *er) {
  authz_principal_t p = clue_principal(call);
  const char *params[4];

  params[0] = svc_i64(call, er->req->clue_id, 0);
  params[1] = svc_i64(call, p.user_id, 0);
  params[2] = svc_i64(call, p.unit_id, 0);
  params[3] = er->request_id;
  if (params[0] == NULL || params[1] == NULL || params[2] == NULL) {
    clue_oom(call);
    return;
  }
  svc_query(call, extend_facts_sql, 4, params, got_extend_facts, er);
}
