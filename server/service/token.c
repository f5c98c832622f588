/* clue.v1.TokenService: every authenticated user's own tokens. Nobody reaches another user's
 * token here: each statement is bound to the caller's user id, and another user's token id
 * answers as a missing one (token_revoke_own in 0010_tokens.sql). A request_id, when a call
 * sends one, goes with its fingerprint to the write's *_once form, as in admin.c. */

#include "service/token.h"

#include "clue/v1/token.pb-c.h"
#include "domain/validate.h"
#include "rpc/auth.h"
#include "server.h"
#include "service/clue_row.h"
#include "service/common.h"
#include "service/svc_util.h"

static const char *caller_user(rpc_call_t *call) {
  return svc_i64(call, rpc_call_principal(call)->user_id, 0);
}

static const char *caller_unit(rpc_call_t *call) {
  return svc_i64(call, rpc_call_principal(call)->unit_id, 0);
}

/* ---- ListMyTokens ------------------------------------------------------------------------ */

#define TOKEN_COLS                                                                               \
  "id, user_id, issued_by, note, " SVC_MS("created_at") ", " SVC_MS("revoked_at")

static void reply_tokens(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__ListMyTokensResponse resp = CLUE__V1__LIST_MY_TOKENS_RESPONSE__INIT;
  int64_t current = rpc_call_principal(call)->token_id;
  int rows = db_rows(r), n = rows > TOKEN_LIST_MAX ? TOKEN_LIST_MAX : rows;
  Clue__V1__Token *toks = rpc_call_alloc(call, (size_t)(n ? n : 1) * sizeof(*toks));
  (void)arg;

  resp.tokens = rpc_call_alloc(call, (size_t)(n ? n : 1) * sizeof(*resp.tokens));
  if (toks == NULL || resp.tokens == NULL) {
    clue_oom(call);
    return;
  }
  for (int i = 0; i < n; i++) {
    Clue__V1__Token *t = &toks[i];
    clue__v1__token__init(t);
    t->id = svc_col_i64(r, i, 0);
    t->user_id = svc_col_i64(r, i, 1);
    t->issued_by_user_id = svc_col_i64(r, i, 2);
    t->enrollment = t->issued_by_user_id != t->user_id;
    t->note = svc_col_str(call, r, i, 3);
    t->created_at_ms = svc_col_i64(r, i, 4);
    t->revoked_at_ms = svc_col_i64(r, i, 5);
    t->current = t->id == current;
    if (t->note == NULL) {
      clue_oom(call);
      return;
    }
    resp.tokens[resp.n_tokens++] = t;
  }
  resp.truncated = rows > TOKEN_LIST_MAX;
  (void)rpc_reply(call, &resp.base);
}

static void list_my_tokens(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ListMyTokensRequest *req = (const void *)m;
  const char *params[3];

  params[0] = caller_user(call);
  params[1] = req->include_revoked ? "true" : "false";
  params[2] = svc_i64(call, TOKEN_LIST_MAX + 1, 0); /* one more: was the list cut short? */
  if (!svc_all_set(params, 3)) {
    clue_oom(call);
    return;
  }
  svc_query(call,
            "SELECT " TOKEN_COLS " FROM tokens WHERE user_id = $1"
            " AND ($2::boolean OR revoked_at IS NULL)"
            " ORDER BY revoked_at IS NOT NULL, id DESC LIMIT $3",
            3, params, reply_tokens, NULL);
}

/* ---- IssueMyToken ------------------------------------------------------------------------ */

static void reply_issued(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__IssueTokenResponse resp = CLUE__V1__ISSUE_TOKEN_RESPONSE__INIT;
  resp.token_id = svc_col_i64(r, 0, 0);
  resp.token = arg;
  (void)rpc_reply(call, &resp.base);
}

/* A retry revoked the token its first call issued (column 1 names it): its cached principal
 * goes before the reply, as reply_revoked()'s. A first call revoked nothing. */
static void reply_issued_keyed(rpc_call_t *call, const db_result_t *r, void *arg) {
  if (svc_col_i64(r, 0, 1) > 0)
    rpc_auth_forget_token(rpc_call_server(call), svc_col_i64(r, 0, 1));
  reply_issued(call, r, arg);
}

static void issue_my_token(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__IssueMyTokenRequest *req = (const void *)m;
  validate_errors_t e;
  const char *params[8], *note;
  char *token, hash[65];
  int np;

  validate_errors_init(&e);
  validate_each(&e, validate_name("note", req->note, false, validate_slot(&e)));
  validate_each(&e, validate_uuid("request_id", req->request_id, false, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  /* The note the limit was checked on, without the white space around it. */
  if ((note = clue_trimmed(call, req->note)) == NULL && !validate_is_blank(req->note)) {
    clue_oom(call);
    return;
  }
  token = rpc_call_alloc(call, AUTH_TOKEN_LEN + 1);
  if (token == NULL || auth_token_new(token, hash) != 0) {
    rpc_fail(call, GRPC_INTERNAL, "cannot generate a token");
    return;
  }
  params[0] = caller_user(call);
  params[1] = caller_unit(call);
  params[2] = hash;
  params[3] = note ? note : "";
  params[4] = svc_i64(call, TOKEN_LIVE_MAX, 0);
  params[5] = svc_i64(call, rpc_call_server(call)->cfg.token_issues_per_hour, 0);
  if (!svc_all_set(params, 6)) {
    clue_oom(call);
    return;
  }
  if ((np = clue_request_params(call, m, req->request_id, params, 6)) < 0)
    return;
  if (np == 6)
    svc_query(call, "SELECT id FROM token_issue_own($1, $2, $3, nullif($4, ''), $5, $6)", 6, params,
              reply_issued, token);
  else
    svc_query(call,
              "SELECT id, revoked_token FROM token_issue_own_once($1, $2, $3, nullif($4, ''),"
              " $5, $6, $7, $8)",
              8, params, reply_issued_keyed, token);
}

/* ---- RevokeMyToken ----------------------------------------------------------------------- */

static void reply_revoked(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__RevokeTokenResponse resp = CLUE__V1__REVOKE_TOKEN_RESPONSE__INIT;
  (void)arg;
  /* This instance's cached principal of the token goes before the reply (see rpc/auth.c). */
  resp.token_id = svc_col_i64(r, 0, 0);
  rpc_auth_forget_token(rpc_call_server(call), resp.token_id);
  resp.revoked_at_ms = svc_col_i64(r, 0, 1);
  (void)rpc_reply(call, &resp.base);
}

static void revoke_my_token(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__RevokeMyTokenRequest *req = (const void *)m;
  validate_errors_t e;
  const char *params[5];
  int np;

  validate_errors_init(&e);
  validate_each(&e, validate_id("token_id", req->token_id, validate_slot(&e)));
  validate_each(&e, validate_uuid("request_id", req->request_id, false, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  params[0] = caller_user(call);
  params[1] = caller_unit(call);
  params[2] = svc_i64(call, req->token_id, 0);
  if (!svc_all_set(params, 3)) {
    clue_oom(call);
    return;
  }
  if ((np = clue_request_params(call, m, req->request_id, params, 3)) < 0)
    return;
  svc_query(call,
            np == 3 ? "SELECT id, " SVC_MS("revoked_at") " FROM token_revoke_own($1, $2, $3)"
                    : "SELECT id, " SVC_MS("revoked_at") " FROM token_revoke_own_once($1, $2, $3,"
                                                         " $4, $5)",
            np, params, reply_revoked, NULL);
}

/* ---- GetCaller --------------------------------------------------------------------------- */

/* Answered from the principal the call was authenticated as: no database round trip. */
static void get_caller(rpc_call_t *call, const ProtobufCMessage *m) {
  Clue__V1__GetCallerResponse resp = CLUE__V1__GET_CALLER_RESPONSE__INIT;
  const rpc_principal_t *p = rpc_call_principal(call);
  (void)m;

  resp.user_id = p->user_id;
  resp.user_name = (char *)p->user_name;
  resp.role = (Clue__V1__Role)p->role;
  resp.unit_id = p->unit_id;
  resp.unit_code = (char *)p->unit_code;
  resp.unit_kind = (Clue__V1__UnitKind)p->unit_kind;
  resp.token_id = p->token_id;
  resp.enrollment = p->enrollment;
  (void)rpc_reply(call, &resp.base);
}

#define TOKEN_METHOD(name, fn, in, out) SVC_CLUE_METHOD("TokenService", name, fn, in, out)

const rpc_method_t token_methods[] = {
    TOKEN_METHOD("ListMyTokens", list_my_tokens, list_my_tokens_request, list_my_tokens_response),
    TOKEN_METHOD("IssueMyToken", issue_my_token, issue_my_token_request, issue_token_response),
    TOKEN_METHOD("RevokeMyToken", revoke_my_token, revoke_my_token_request, revoke_token_response),
    TOKEN_METHOD("GetCaller", get_caller, get_caller_request, get_caller_response),
};
const size_t token_nmethods = sizeof(token_methods) / sizeof(token_methods[0]);
