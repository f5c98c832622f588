/* ClueService.HandOver (线索移交, DESIGN.md §2).
 *
 * A LEADER of the owner unit hands an ACCEPTED or PRELIMINARY_CHECK clue to another GROUP,
 * ROOM or REGION, which becomes its owner; the registration number stays. The write is
 * clue_handover() of 0005_cases.sql: a compare-and-swap on the version that moves every
 * clue-scoped row to the new owner and withdraws a pending proposal (whose reviewer was
 * chosen for the old owner) in the same transaction.
 *
 * The reply is the clue as the handover left it, even when the caller's unit no longer sees
 * it: the caller made that change and learns nothing newer. A retry with the same request_id
 * answers the same way while the clue is still at the version the handover produced, and
 * with the clue as it is now if the caller still sees it; otherwise NOT_FOUND, and always to a
 * caller recused from the clue since. */

#include "service/handover.h"

#include "log.h"
#include "service/clue_row.h"
#include "service/request_sha256.h"
#include "service/svc_util.h"

typedef struct handover_req {
  const Clue__V1__HandOverRequest *req;
  const char *request_id;
  const char *request_sha256; /* request_sha256() */
  const char *reason;
} handover_req_t;

/* Columns of the facts query after the clue: the target's kind, the idempotency record. */
enum {
  HF_TO_KIND = CLUE_NCOLS,
  HF_REQ_METHOD,
  HF_REQ_CLUE,
  HF_REQ_VERSION,
};

/* clang-format off */
static const char handover_facts_sql[] =
    SVC_DURABLE_IF(SVC_KEY_RECORDED("clue_requests", "$2", "$3"))
    "SELECT " CLUE_COLS("c", "ou", "$4", "$2") ", tu.kind, " CLUE_REQ_METHOD("q")
    ", q.clue_id, q.clue_version"
    " FROM (SELECT 1) one"
    " LEFT JOIN clues c ON c.id = $1"
    " LEFT JOIN units ou ON ou.id = c.owner_unit"
    " LEFT JOIN units tu ON tu.id = $5"
    " LEFT JOIN clue_requests q ON q.user_id = $2 AND q.request_id = $3";

static const char handover_sql[] =
    "SELECT " OUTCOME_COLS " FROM clue_handover($1, $2, $3, $4, $5, $6, $7, $8, $9)" OUTCOME_JOIN;
/* clang-format on */

static void handed_over(rpc_call_t *call, const db_result_t *r, void *arg) {
  clue_row_t row;
  (void)arg;

  if (db_rows(r) != 1 || clue_row_read(call, r, 0, 0, clue_now_ms(call), &row) != 0 ||
      row.id == 0) {
    clue_oom(call);
    return;
  }
  log_info("call %s: clue %lld handed over to unit %lld (version %lld)", rpc_call_id(call),
           (long long)row.id, (long long)row.facts.owner_unit_id, (long long)row.version);
  (void)rpc_reply(call, &row.clue->base);
}

/* The first call with this request_id already ran. */
static void replay_handover(rpc_call_t *call, const db_result_t *r, const handover_req_t *hr,
                            const clue_row_t *row) {
  authz_principal_t p = clue_principal(call);
  authz_result_t res;

  if (!clue_request_is(r, HF_REQ_METHOD, "HandOver", hr->req->clue_id)) {
    clue_refuse_reused(call, hr->request_id);
    return;
  }
  if (!clue_request_same(r, HF_REQ_METHOD, hr->request_sha256)) {
    clue_refuse_changed(call, hr->request_id);
    return;
  }
  res = authz_can_see_clue(&p, &row->facts);
  if (row->id != 0 && authz_ok(&res)) {
    (void)rpc_reply(call, &row->clue->base);
    return;
  }
  /* The old owner no longer sees the clue: while it is still at the version the handover made,
   * the first answer again, and nothing the new owner did since. Of the reply's fields only a
   * pending proposal comes and goes without a new version, and the handover's own answer had
   * none (it withdraws any). Not to a caller recused since: for it the clue is a missing
   * clue, and the retry answers as a fresh call (docs/COOPERATION.md, "Recusal"). */
  if (row->id != 0 && !row->facts.principal_recused &&
      row->version == svc_col_i64(r, 0, HF_REQ_VERSION)) {
    row->clue->pending_proposal = false;
    (void)rpc_reply(call, &row->clue->base);
    return;
  }
  (void)clue_see_or_refuse(call, row);
}

static void got_handover_facts(rpc_call_t *call, const db_result_t *r, void *arg) {
  const handover_req_t *hr = arg;
  const Clue__V1__HandOverRequest *req = hr->req;
  authz_principal_t p = clue_principal(call);
  clue_unit_kind_t to_kind;
  authz_result_t res, see;
  clue_row_t row;
  const char *params[9];

  if (db_rows(r) != 1 || clue_row_read(call, r, 0, 0, clue_now_ms(call), &row) != 0) {
    clue_oom(call);
    return;
  }
  if (db_value(r, 0, HF_REQ_METHOD) != NULL) {
    replay_handover(call, r, hr, &row);
    return;
  }
  if (row.id == 0) {
    (void)clue_see_or_refuse(call, &row);
    return;
  }
  to_kind = (clue_unit_kind_t)clue_unit_kind_of(db_value(r, 0, HF_TO_KIND));
  res = authz_can_handover(&p, &row.facts, req->to_unit_id, to_kind);
  see = authz_can_see_clue(&p, &row.facts);
  /* As for RequestTransition: once the caller may see and change the clue, a stale version
   * is the first thing to say; the rest is judged against a clue the caller has not seen. */
  if (authz_ok(&see) && !authz_refused_permission(&res) && row.version != req->expected_version) {
    clue_refuse_stale(call, "handover", &row, req->expected_version);
    return;
  }
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  params[0] = svc_i64(call, p.user_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = hr->request_id;
  params[3] = svc_i64(call, clue_now_ms(call), 0);
  params[4] = svc_i64(call, row.id, 0);
  params[5] = svc_i64(call, row.version, 0);
  params[6] = svc_i64(call, req->to_unit_id, 0);
  params[7] = hr->reason;
  params[8] = hr->request_sha256;
  if (!svc_all_set(params, 9) || !clue_sight_on_refusal(call, row.id, "clue not found")) {
    clue_oom(call);
    return;
  }
  svc_query(call, handover_sql, 9, params, handed_over, NULL);
}

/* Every violation of the request, one per field (validate_errors_t). */
static int validate_handover(const Clue__V1__HandOverRequest *req, validate_errors_t *e) {
  validate_errors_init(e);
  validate_each(e, validate_id("clue_id", req->clue_id, validate_slot(e)));
  validate_each(e, validate_id("expected_version", req->expected_version, validate_slot(e)));
  validate_each(e, validate_id("to_unit_id", req->to_unit_id, validate_slot(e)));
  validate_each(e, validate_reason("reason", req->reason, true, validate_slot(e)));
  validate_each(e, validate_request_id(req->request_id, validate_slot(e)));
  return validate_errors_result(e);
}

void clue_hand_over(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__HandOverRequest *req = (const void *)m;
  authz_principal_t p = clue_principal(call);
  validate_errors_t errs;
  handover_req_t *hr;
  const char *params[5];

  if (validate_handover(req, &errs) != 0 && clue_invalid_each(call, &errs))
    return;
  if ((hr = rpc_call_alloc(call, sizeof(*hr))) == NULL) {
    clue_oom(call);
    return;
  }
  hr->req = req;
  hr->request_id = clue_request_key(call, req->request_id);
  hr->reason = clue_trimmed(call, req->reason);
  hr->request_sha256 = request_sha256(call, m);
  params[0] = svc_i64(call, req->clue_id, 0);
  params[1] = svc_i64(call, p.user_id, 0);
  params[2] = hr->request_id;
  params[3] = svc_i64(call, p.unit_id, 0);
  params[4] = svc_i64(call, req->to_unit_id, 0);
  if (hr->reason == NULL || hr->request_sha256 == NULL || !svc_all_set(params, 5)) {
    clue_oom(call);
    return;
  }
  svc_query(call, handover_facts_sql, 5, params, got_handover_facts, hr);
}
