/* ClueService's co-review (会商): ReviewProposal and ListProposals.
 *
 * A co-review move becomes a PENDING proposal (clue.c, RequestTransition). A LEADER of the
 * reviewing unit other than the proposer approves it, which applies the move in the same
 * transaction, or rejects it, which leaves the clue as it was. */

#include "service/proposal.h"

#include "log.h"
#include "service/clue_row.h"
#include "service/request_sha256.h"
#include "service/svc_util.h"

/* ---- ReviewProposal --------------------------------------------------------------------- */

typedef struct review_req {
  const Clue__V1__ReviewProposalRequest *req;
  const char *request_id;
  const char *request_sha256; /* request_sha256() */
  const char *comment;
  const char *facts[4]; /* review_facts_sql's parameters */
} review_req_t;

/* Columns of the facts query: the proposal, its clue, the idempotency record. */
enum {
  RF_CLUE = PROPOSAL_NCOLS,
  RF_REQ_METHOD = PROPOSAL_NCOLS + CLUE_NCOLS,
  RF_REQ_PROPOSAL,
};

/* clang-format off */
static const char review_facts_sql[] =
    SVC_DURABLE_IF(SVC_KEY_RECORDED("clue_requests", "$2", "$4"))
    "SELECT " PROPOSAL_COLS("p") ", " CLUE_COLS("c", "ou", "$3", "$2") ", "
    CLUE_REQ_METHOD("q") ", q.proposal_id"
    " FROM (SELECT 1) one"
    " LEFT JOIN proposals p ON p.id = $1"
    " LEFT JOIN clues c ON c.id = p.clue_id"
    " LEFT JOIN units ou ON ou.id = c.owner_unit"
    " LEFT JOIN clue_requests q ON q.user_id = $2 AND q.request_id = $4";

static const char decide_sql[] =
    "SELECT " OUTCOME_COLS " FROM proposal_decide($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)" OUTCOME_JOIN;
/* clang-format on */

/* Whether the caller sees the proposal, as a fresh review decides it (authz_can_review()): it
 * sees the clue, or its unit reviews the proposal, and it is not recused from the clue. A retry
 * and a refused write answer by it too, so that a caller recused since its first call gets what
 * a fresh call gets ("proposal not found"), as for a missing proposal. */
static bool sees_proposal(rpc_call_t *call, const clue_row_t *row, const authz_proposal_t *pf) {
  authz_principal_t p = clue_principal(call);
  authz_result_t res = authz_can_review(&p, &row->facts, pf);

  return res.decision != AUTHZ_NOT_FOUND;
}

/* Reply with the proposal and, if the caller still sees it, the clue. */
static void reply_review(rpc_call_t *call, const clue_row_t *row, Clue__V1__Proposal *prop) {
  Clue__V1__ReviewProposalResponse resp = CLUE__V1__REVIEW_PROPOSAL_RESPONSE__INIT;
  authz_principal_t p = clue_principal(call);
  authz_result_t res = authz_can_see_clue(&p, &row->facts);

  resp.proposal = prop;
  /* A ROOM reviewing another ROOM's or a REGION's clue sees it only while it is pending. */
  resp.clue = authz_ok(&res) ? row->clue : NULL;
  (void)rpc_reply(call, &resp.base);
}

static void decided(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__Proposal *prop;
  clue_row_t row;
  (void)arg;

  if (db_rows(r) != 1 || clue_row_read(call, r, 0, 0, clue_now_ms(call), &row) != 0 ||
      clue_proposal_read(call, r, 0, CLUE_NCOLS, &prop, NULL) != 0 || prop == NULL) {
    clue_oom(call);
    return;
  }
  reply_review(call, &row, prop);
}

static void not_found(rpc_call_t *call) {
  log_info("call %s: review refused (5): proposal not found or hidden", rpc_call_id(call));
  clue_not_found(call, "proposal not found");
}

/* A refused review (svc_sight_on_refusal()): the facts read again, and NOT_FOUND, as a fresh
 * call is answered, when the caller no longer sees the proposal. */
static bool review_hidden(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__Proposal *prop;
  authz_proposal_t pf = {0};
  clue_row_t row;
  (void)arg;

  if (db_rows(r) != 1 || clue_proposal_read(call, r, 0, 0, &prop, &pf) != 0 ||
      clue_row_read(call, r, 0, RF_CLUE, clue_now_ms(call), &row) != 0)
    return false;
  if (prop != NULL && row.id != 0 && sees_proposal(call, &row, &pf))
    return false;
  not_found(call);
  return true;
}

static void got_review_facts(rpc_call_t *call, const db_result_t *r, void *arg) {
  const review_req_t *rr = arg;
  authz_principal_t p = clue_principal(call);
  clue_deadline_config_t cfg = clue_deadline_config(call);
  int64_t now = clue_now_ms(call), deadline = 0;
  const clue_move_t *move;
  Clue__V1__Proposal *prop;
  authz_proposal_t pf = {0};
  authz_result_t res;
  clue_row_t row;
  const char *params[10];

  if (db_rows(r) != 1 || clue_proposal_read(call, r, 0, 0, &prop, &pf) != 0 ||
      clue_row_read(call, r, 0, RF_CLUE, now, &row) != 0) {
    clue_oom(call);
    return;
  }
  if (db_value(r, 0, RF_REQ_METHOD) != NULL) {
    /* A retry: answer with what the first call decided, as it is now. */
    if (!clue_request_is(r, RF_REQ_METHOD, "ReviewProposal", rr->req->proposal_id)) {
      clue_refuse_reused(call, rr->request_id);
      return;
    }
    if (prop == NULL || row.id == 0 || !sees_proposal(call, &row, &pf)) {
      not_found(call);
      return;
    }
    /* The key's first call decided the other way: this one is another call, not its retry. */
    if ((prop->status == CLUE__V1__PROPOSAL_STATUS__PROPOSAL_STATUS_APPROVED) !=
        (rr->req->approve != 0)) {
      clue_refuse_reused(call, rr->request_id);
      return;
    }
    if (!clue_request_same(r, RF_REQ_METHOD, rr->request_sha256)) {
      clue_refuse_changed(call, rr->request_id);
      return;
    }
    reply_review(call, &row, prop);
    return;
  }
  if (prop == NULL || row.id == 0) {
    not_found(call);
    return;
  }
  res = authz_can_review(&p, &row.facts, &pf);
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  move = clue_fsm_find((clue_state_t)prop->from_state, (clue_state_t)prop->target);
  if (move == NULL || !move->co_review) {
    log_error("call %s: proposal %lld names no co-review move", rpc_call_id(call),
              (long long)prop->id);
    rpc_detail_precondition(call, "STATE", clue_state_name(row.facts.state),
                            "the proposal's move is not a co-review move");
    rpc_fail(call, GRPC_FAILED_PRECONDITION, "the proposal's move is not a co-review move");
    return;
  }
  if (rr->req->approve)
    deadline = clue_stage_deadline_ms(&cfg, move->to, now);

  params[0] = svc_i64(call, p.user_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = rr->request_id;
  params[3] = svc_i64(call, now, 0);
  params[4] = svc_i64(call, prop->id, 0);
  params[5] = rr->req->approve ? "t" : "f";
  params[6] = rr->comment;
  params[7] = move->action;
  params[8] = svc_i64(call, deadline, 1);
  params[9] = rr->request_sha256;
  if (params[0] == NULL || params[1] == NULL || params[3] == NULL || params[4] == NULL ||
      (deadline != 0 && params[8] == NULL) ||
      !svc_sight_on_refusal(call, &(svc_sight_t){.sql = review_facts_sql,
                                                 .nparams = 4,
                                                 .values = rr->facts,
                                                 .hidden = review_hidden})) {
    clue_oom(call);
    return;
  }
  svc_query(call, decide_sql, 10, params, decided, NULL);
}

void clue_review_proposal(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ReviewProposalRequest *req = (const void *)m;
  validate_errors_t e;
  review_req_t *rr;
  const char *key, **params;

  validate_errors_init(&e);
  validate_each(&e, validate_id("proposal_id", req->proposal_id, validate_slot(&e)));
  validate_each(&e, validate_reason("comment", req->comment, false, validate_slot(&e)));
  validate_each(&e, validate_request_id(req->request_id, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  rr = rpc_call_alloc(call, sizeof(*rr));
  key = clue_request_key(call, req->request_id);
  if (rr == NULL || key == NULL) {
    clue_oom(call);
    return;
  }
  rr->req = req;
  rr->request_id = key;
  rr->comment = clue_trimmed(call, req->comment);
  rr->request_sha256 = request_sha256(call, m);
  params = rr->facts;
  params[0] = svc_i64(call, req->proposal_id, 0);
  params[1] = svc_i64(call, clue_principal(call).user_id, 0);
  params[2] = svc_i64(call, clue_principal(call).unit_id, 0);
  params[3] = key;
  if (rr->request_sha256 == NULL || params[0] == NULL || params[1] == NULL || params[2] == NULL) {
    clue_oom(call);
    return;
  }
  svc_query(call, review_facts_sql, 4, params, got_review_facts, rr);
}

/* ---- ListProposals ---------------------------------------------------------------------- */

/* A ListProposals page holds at most this many proposals (and SVC_PAGE_BYTES): a proposal
 * carries up to 4 KB of reason and 4 KB of review comment, so a page ends by its size first. */
#define PROPOSALS_PAGE_MAX 1000

/* What a page token is bound to: the caller, and the request's scope, include_decided and
 * clue_id. A token of another caller or filter is refused; none could show more than the
 * caller sees anyway, since the scope decides every page. */
#define PROPOSALS_TOKEN_SCOPE 4

/* clang-format off */
static const char list_proposals_sql[] =
    "SELECT " PROPOSAL_COLS("p") " FROM proposals p, (SELECT $1::bigint AS unit) me WHERE %s"
    " AND ($2::boolean OR p.status = 'PENDING') AND ($3::bigint IS NULL OR p.clue_id = $3)"
    " AND p.clue_id NOT IN (SELECT rr.clue_id FROM recusals rr WHERE rr.user_id = $4)"
    " AND ($5::bigint IS NULL OR p.id < $5)"
    " ORDER BY p.id DESC LIMIT " SVC_STR(PROPOSALS_PAGE_MAX) " + 1";
/* clang-format on */

typedef struct list_proposals {
  int64_t scope[PROPOSALS_TOKEN_SCOPE];
} list_proposals_t;

static void reply_proposals(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__ListProposalsResponse resp = CLUE__V1__LIST_PROPOSALS_RESPONSE__INIT;
  const list_proposals_t *lp = arg;
  int n = db_rows(r), shown = n > PROPOSALS_PAGE_MAX ? PROPOSALS_PAGE_MAX : n;
  bool more = n > PROPOSALS_PAGE_MAX;
  size_t bytes = 0;

  if ((resp.proposals =
           rpc_call_alloc(call, (size_t)(shown ? shown : 1) * sizeof(*resp.proposals))) == NULL) {
    clue_oom(call);
    return;
  }
  for (int i = 0; i < shown; i++) {
    Clue__V1__Proposal *prop;

    if (clue_proposal_read(call, r, i, 0, &prop, NULL) != 0 || prop == NULL) {
      clue_oom(call);
      return;
    }
    if (!svc_page_fits(&bytes, &prop->base)) {
      more = true; /* the next page starts with this proposal */
      break;
    }
    resp.proposals[resp.n_proposals++] = prop;
  }
  if (more && (resp.next_page_token =
                   (char *)svc_page_token_in(call, lp->scope, PROPOSALS_TOKEN_SCOPE,
                                             resp.proposals[resp.n_proposals - 1]->id)) == NULL) {
    clue_oom(call);
    return;
  }
  (void)rpc_reply(call, &resp.base);
}

void clue_list_proposals(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ListProposalsRequest *req = (const void *)m;
  Clue__V1__ListProposalsResponse empty = CLUE__V1__LIST_PROPOSALS_RESPONSE__INIT;
  authz_principal_t p = clue_principal(call);
  unsigned scope = authz_clue_scope(&p);
  const char *where, *params[5];
  list_proposals_t *lp;
  validate_errors_t e;
  int64_t before = 0;
  char sql[3072];

  if ((lp = rpc_call_alloc(call, sizeof(*lp))) == NULL) {
    clue_oom(call);
    return;
  }
  lp->scope[0] = p.user_id;
  lp->scope[1] = (int64_t)req->scope;
  lp->scope[2] = req->include_decided != 0;
  lp->scope[3] = req->clue_id;
  validate_errors_init(&e);
  validate_each(&e, validate_enum("scope", (int)req->scope, 0, 2, validate_slot(&e)));
  if (req->clue_id < 0)
    validate_add(&e, "clue_id", "clue_id must be positive");
  if (req->page_token[0] &&
      (before = svc_page_after_in(req->page_token, lp->scope, PROPOSALS_TOKEN_SCOPE)) == 0)
    validate_add(&e, "page_token",
                 "page_token is malformed or was issued for another caller or other filters");
  if (clue_invalid_each(call, &e))
    return;
  /* Staff list the proposals their unit reviews or raised; an AUDITOR's unit does neither,
   * so it gets every proposal under SCOPE_ALL; callers who see no clue get none. */
  if (scope & AUTHZ_SCOPE_ALL)
    where = req->scope == CLUE__V1__LIST_PROPOSALS_REQUEST__SCOPE__SCOPE_ALL ? "true" : NULL;
  else if (scope == AUTHZ_SCOPE_NONE)
    where = NULL;
  else if (req->scope == CLUE__V1__LIST_PROPOSALS_REQUEST__SCOPE__SCOPE_TO_REVIEW)
    where = "p.reviewer_unit = me.unit";
  else if (req->scope == CLUE__V1__LIST_PROPOSALS_REQUEST__SCOPE__SCOPE_RAISED)
    where = "p.proposer_unit = me.unit";
  else
    where = "(p.reviewer_unit = me.unit OR p.proposer_unit = me.unit)";
  if (where == NULL) {
    (void)rpc_reply(call, &empty.base);
    return;
  }
  snprintf(sql, sizeof(sql), list_proposals_sql, where);
  params[0] = svc_i64(call, p.unit_id, 0);
  params[1] = req->include_decided ? "t" : "f";
  params[2] = svc_i64(call, req->clue_id, 1);
  /* A recused user lists no proposal of that clue: it may not review them. */
  params[3] = svc_i64(call, p.user_id, 0);
  params[4] = before ? svc_i64(call, before, 0) : NULL;
  if (params[0] == NULL || params[3] == NULL || (req->clue_id != 0 && params[2] == NULL) ||
      (before && params[4] == NULL)) {
    clue_oom(call);
    return;
  }
  svc_query(call, sql, 5, params, reply_proposals, lp);
}
