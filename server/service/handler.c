/* ClueService.AssignHandler, UnassignHandler and ListAssignments (承办人, 派员参与),
 * RecordRecusal and ListRecusals (回避): docs/COOPERATION.md.
 *
 * Each mutation reads the facts in one query (the clue's, with the caller's assignment and
 * recusal; the named user's; the idempotency record), lets authz.h decide, and applies the
 * decision with one function of 0019_handlers_recusal.sql (as 0037 has it), which re-checks
 * under the clue's lock what a concurrent call may have changed (the owner, the clue's joint
 * case, its state for an assignment, a recusal of the caller, a recusal or assignment of the
 * user made meanwhile; for a recusal, the recorder's sight of the clue, 0068) and appends the
 * event on the clue's chain. Assignments and recusals do not bump the clue's version: they
 * change who works on the clue, not the clue. */

#include "service/handler.h"

#include <stdio.h>
#include <string.h>

#include "log.h"
#include "rpc/auth.h"
#include "service/clue_row.h"
#include "service/clue_scope.h"
#include "service/request_sha256.h"
#include "service/svc_util.h"

/* At most this many recusals in one ListRecusals page, or assignments in one ListAssignments
 * page; each also ends at SVC_PAGE_BYTES (a recusal carries up to 4 KB of reason and three
 * names, an assignment three names). */
#define LIST_MAX 1000

/* What a ListRecusals page token is bound to: the caller, and the request's clue_id and
 * user_id. A token of another caller or filter is refused; none could show more than the
 * caller sees anyway, since the scope decides every page. */
#define RECUSALS_TOKEN_SCOPE 3

/* A ListAssignments page token is bound to ListAssignments (its tag: no other list's token
 * reads here), the caller and the request's clue_id and user_id, as ListRecusals' is. It holds
 * the last row's key in the list's order: assigned_at (in microseconds, as stored), clue_id,
 * user_id. */
#define ASSIGNMENTS_TOKEN_SCOPE 4
#define ASSIGNMENTS_TOKEN_TAG 0x41737369676e6d65 /* "Assignme" */
#define ASSIGNMENTS_KEY 3

/* clang-format off */
/* The facts of the user a request names ($5), relative to the clue c. */
#define TARGET_COLS                                                                             \
  "tu.id IS NOT NULL, coalesce(NOT tu.disabled, false), tu.unit_id, tun.kind, tu.role,"         \
  " EXISTS (SELECT 1 FROM clue_handlers th WHERE th.clue_id = c.id AND th.user_id = $5"         \
  " AND th.owner_unit = c.owner_unit),"                                                         \
  " EXISTS (SELECT 1 FROM recusals tr WHERE tr.clue_id = c.id AND tr.user_id = $5)"

#define FACTS_FROM                                                                              \
  " FROM (SELECT 1) one"                                                                        \
  " LEFT JOIN clues c ON c.id = $1"                                                             \
  " LEFT JOIN units ou ON ou.id = c.owner_unit"                                                 \
  " LEFT JOIN users tu ON tu.id = $5"                                                           \
  " LEFT JOIN units tun ON tun.id = tu.unit_id"                                                 \
  " LEFT JOIN clue_requests q ON q.user_id = $2 AND q.request_id = $4"

/* A recusals row x, with the names people read. */
#define RECUSAL_COLS(x)                                                                         \
  x ".id, " x ".clue_id, " x ".user_id, (SELECT ru.name FROM users ru WHERE ru.id = " x         \
  ".user_id), (SELECT ru.unit_id FROM users ru WHERE ru.id = " x ".user_id), (SELECT rn.code"   \
  " FROM users ru JOIN units rn ON rn.id = ru.unit_id WHERE ru.id = " x ".user_id), " x         \
  ".reason, " x ".recorded_by, (SELECT rb.name FROM users rb WHERE rb.id = " x                  \
  ".recorded_by), " SVC_MS(x ".recorded_at")
#define RECUSAL_NCOLS 10

/* Columns of the facts queries after the clue. */
enum {
  TF_HANDLERS = CLUE_NCOLS,
  TF_EXISTS,
  TF_ACTIVE,
  TF_UNIT,
  TF_UNIT_KIND,
  TF_ROLE,
  TF_HANDLER,
  TF_RECUSED,
  TF_REQ_METHOD,
  TF_REQ_CLUE,
  TF_RECUSAL, /* RecordRecusal: the recusal the request made */
};

static const char handler_facts_sql[] =
    SVC_DURABLE_IF(SVC_KEY_RECORDED("clue_requests", "$2", "$4"))
    "SELECT " CLUE_COLS("c", "ou", "$3", "$2") ", " CLUE_HANDLERS_COL("c") ", " TARGET_COLS
    ", " CLUE_REQ_METHOD("q") ", q.clue_id" FACTS_FROM;

/* The write; the clue with its handlers is read after it, by a statement of its own (the
 * write's own statement would not see the rows it changed). $10 is the state the decision saw,
 * which an assignment's write compares (0037): the parameters before it are a recusal's too. */
static const char set_handler_sql[] =
    "SELECT s.id FROM clue_set_handler($1, $2, $3, $4, $5, $6, $10, $7, $8, $9, $11) s";

static const char reread_sql[] =
    "SELECT " CLUE_COLS("c", "ou", "$2", "$3") ", " CLUE_HANDLERS_COL("c")
    " FROM clues c JOIN units ou ON ou.id = c.owner_unit WHERE c.id = $1";

static const char recuse_facts_sql[] =
    SVC_DURABLE_IF(SVC_KEY_RECORDED("clue_requests", "$2", "$4"))
    "SELECT " CLUE_COLS("c", "ou", "$3", "$2") ", " CLUE_HANDLERS_COL("c") ", " TARGET_COLS
    ", " CLUE_REQ_METHOD("q") ", q.clue_id, " RECUSAL_COLS("rq") FACTS_FROM
    " LEFT JOIN recusals rq ON rq.id = q.recusal_id";

/* The recording, in a transaction whose first statement takes the request key's lock (the one
 * clue_request_begin() takes) and whose second takes the clue's, as clue_lock_seen_owner()
 * does. The third passes clue_recuse() whether the recorder still sees the clue (%s: the clue
 * scope's condition on c, the recorder's user in $1 and unit in $2), read in its snapshot,
 * taken once both are held, as AddNote's (service/note.c): an assignment ended, the clue taken
 * out of its joint case, a review decided (each holds the clue until it commits) or a unit
 * removed from the case (which takes the case, not the clue) committed before then is seen
 * there, and the recording is refused as a fresh call is (0068). The recorder may be the user
 * or a leader of the user's unit, whose sight a case, an assignment or a review lends as much
 * as anyone's. */
static const char recuse_clue_lock_sql[] = "SELECT 1 FROM clues WHERE id = $1 FOR NO KEY UPDATE";
static const char recuse_sql[] =
    "SELECT " RECUSAL_COLS("x") " FROM clue_recuse($1, $2, $3, $4, $5, $6, $7, $8,"
    " EXISTS (SELECT 1 FROM clues c WHERE c.id = $5 AND %s), $9) x";

/* A clue the caller ($2) is recused from is a missing clue to it (docs/COOPERATION.md): its
 * recusals and assignments are listed for no reason at all, its unit's users' included. */
#define NOT_RECUSED(clue) "NOT EXISTS (SELECT 1 FROM recusals mr WHERE mr.clue_id = " clue " AND mr.user_id = $2)"

static const char list_recusals_sql[] =
    "SELECT " RECUSAL_COLS("x") " FROM (SELECT $1::bigint AS unit, $2::bigint AS usr) me,"
    " recusals x JOIN users xu ON xu.id = x.user_id"
    " WHERE ($3::bigint IS NULL OR x.clue_id = $3) AND ($4::bigint IS NULL OR x.user_id = $4)"
    " AND (%s OR xu.unit_id = $1 OR EXISTS (SELECT 1 FROM clues c WHERE c.id = x.clue_id AND %s))"
    " AND " NOT_RECUSED("x.clue_id") " AND ($5::bigint IS NULL OR x.id < $5)"
    " ORDER BY x.id DESC LIMIT " SVC_STR(LIST_MAX) " + 1";
/* An assignment's time exactly as stored (timestamptz holds microseconds), for the keyset: rows
 * assigned in one millisecond, or one microsecond, are told apart by clue_id DESC, user_id. */
#define ASSIGNED_US "(extract(epoch from h.assigned_at) * 1000000)::bigint"

/* The rows after ($5, $6, $7), the key of the previous page's last row, in the order
 * assigned_at DESC, clue_id DESC, user_id: none skipped, none twice, however many share one
 * assigned_at. */
static const char list_assignments_sql[] =
    "SELECT h.clue_id, c.owner_unit, ou.code, h.user_id, hu.name, hu.unit_id, hn.code,"
    " h.assigned_by, " SVC_MS("h.assigned_at") ", " ASSIGNED_US
    " FROM (SELECT $1::bigint AS unit, $2::bigint AS usr) me, clue_handlers h"
    " JOIN clues c ON c.id = h.clue_id AND c.owner_unit = h.owner_unit"
    " JOIN units ou ON ou.id = c.owner_unit"
    " JOIN users hu ON hu.id = h.user_id JOIN units hn ON hn.id = hu.unit_id"
    " WHERE ($3::bigint IS NULL OR h.clue_id = $3) AND ($4::bigint IS NULL OR h.user_id = $4)"
    " AND (%s OR h.user_id = $2 OR (%s AND hu.unit_id = $1) OR %s)"
    " AND " NOT_RECUSED("h.clue_id") " AND ($5::bigint IS NULL OR " ASSIGNED_US " < $5"
    " OR (" ASSIGNED_US " = $5 AND (h.clue_id < $6::bigint"
    " OR (h.clue_id = $6 AND h.user_id > $7::bigint))))"
    " ORDER BY h.assigned_at DESC, h.clue_id DESC, h.user_id LIMIT " SVC_STR(LIST_MAX) " + 1";
/* clang-format on */

/* A validated AssignHandler, UnassignHandler or RecordRecusal. */
typedef struct handler_req {
  const char *method; /* "AssignHandler", ... */
  int64_t clue_id;
  int64_t user_id; /* the user named; for a recusal, the caller when the request said 0 */
  const char *reason;
  const char *request_id;
  const char *request_sha256; /* request_sha256() */
  bool assign;
} handler_req_t;

/* The named user's facts at row 0. */
static authz_user_t target_of(const db_result_t *r, int64_t user_id) {
  authz_user_t u = {0};

  u.user_id = user_id;
  u.exists = svc_col_bool(r, 0, TF_EXISTS);
  if (!u.exists)
    return u;
  u.active = svc_col_bool(r, 0, TF_ACTIVE);
  u.unit_id = svc_col_i64(r, 0, TF_UNIT);
  u.unit_kind = (clue_unit_kind_t)clue_unit_kind_of(db_value(r, 0, TF_UNIT_KIND));
  u.role =
      (clue_role_t)(db_value(r, 0, TF_ROLE) ? auth_role_from_name(db_value(r, 0, TF_ROLE)) : 0);
  u.handler = svc_col_bool(r, 0, TF_HANDLER);
  u.recused = svc_col_bool(r, 0, TF_RECUSED);
  return u;
}

/* Reply with the clue of row 0 (CLUE_COLS, then CLUE_HANDLERS_COL) if the caller sees it. */
static void reply_clue(rpc_call_t *call, const db_result_t *r, void *arg) {
  clue_row_t row;
  (void)arg;

  if (db_rows(r) != 1 || clue_row_read(call, r, 0, 0, clue_now_ms(call), &row) != 0) {
    clue_oom(call);
    return;
  }
  if (!clue_see_or_refuse(call, &row))
    return;
  if (clue_handlers_read(call, r, 0, CLUE_NCOLS, row.clue) != 0) {
    clue_oom(call);
    return;
  }
  (void)rpc_reply(call, &row.clue->base);
}

/* After a write: read the clue again, with its handlers. */
static void handler_set(rpc_call_t *call, const db_result_t *r, void *arg) {
  authz_principal_t p = clue_principal(call);
  const char *params[3];
  (void)arg;

  if (db_rows(r) != 1) {
    clue_oom(call);
    return;
  }
  params[0] = svc_i64(call, svc_col_i64(r, 0, 0), 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = svc_i64(call, p.user_id, 0);
  if (!svc_all_set(params, 3)) {
    clue_oom(call);
    return;
  }
  svc_read(call, reread_sql, 3, params, reply_clue, NULL);
}

/* Read a RECUSAL_COLS row; NULL when out of memory. */
static Clue__V1__Recusal *recusal_read(rpc_call_t *call, const db_result_t *r, int row, int col) {
  Clue__V1__Recusal *x = rpc_call_alloc(call, sizeof(*x));

  if (x == NULL)
    return NULL;
  clue__v1__recusal__init(x);
  x->id = svc_col_i64(r, row, col + 0);
  x->clue_id = svc_col_i64(r, row, col + 1);
  x->user_id = svc_col_i64(r, row, col + 2);
  x->user_name = svc_col_str(call, r, row, col + 3);
  x->unit_id = svc_col_i64(r, row, col + 4);
  x->unit_code = svc_col_str(call, r, row, col + 5);
  x->reason = svc_col_str(call, r, row, col + 6);
  x->recorded_by = svc_col_i64(r, row, col + 7);
  x->recorded_by_name = svc_col_str(call, r, row, col + 8);
  x->recorded_at_ms = svc_col_i64(r, row, col + 9);
  if (x->user_name == NULL || x->unit_code == NULL || x->reason == NULL ||
      x->recorded_by_name == NULL)
    return NULL;
  return x;
}

static void reply_recusal(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__Recusal *x;
  (void)arg;

  if (db_rows(r) != 1 || (x = recusal_read(call, r, 0, 0)) == NULL) {
    clue_oom(call);
    return;
  }
  log_info("call %s: user %lld recused from clue %lld (recusal %lld)", rpc_call_id(call),
           (long long)x->user_id, (long long)x->clue_id, (long long)x->id);
  (void)rpc_reply(call, &x->base);
}

/* The first call with this request_id already ran: true after answering it. */
static bool replayed(rpc_call_t *call, const db_result_t *r, const handler_req_t *hr,
                     clue_row_t *row) {
  Clue__V1__Recusal *x;

  if (db_value(r, 0, TF_REQ_METHOD) == NULL)
    return false;
  if (!clue_request_is(r, TF_REQ_METHOD, hr->method, hr->clue_id)) {
    clue_refuse_reused(call, hr->request_id);
    return true;
  }
  if (strcmp(hr->method, "RecordRecusal") == 0) {
    /* The caller made it, and the recusal shows nothing of the clue. But for a caller recused
     * from the clue since, by another's recording, the clue and its recusals are missing
     * (docs/COOPERATION.md, "Recusal"): NOT_FOUND, as a fresh call. The caller's own recusal,
     * which this key recorded, is what recused it: its retry answers it. */
    if ((x = recusal_read(call, r, 0, TF_RECUSAL)) == NULL)
      clue_oom(call);
    else if (x->user_id != hr->user_id || x->clue_id != hr->clue_id)
      clue_refuse_reused(call, hr->request_id); /* another user's or clue's: another call */
    else if (!clue_request_same(r, TF_REQ_METHOD, hr->request_sha256))
      clue_refuse_changed(call, hr->request_id); /* another reason */
    else if (row->facts.principal_recused && x->user_id != clue_principal(call).user_id)
      (void)clue_see_or_refuse(call, row);
    else
      (void)rpc_reply(call, &x->base);
    return true;
  }
  if (!clue_request_same(r, TF_REQ_METHOD, hr->request_sha256)) {
    clue_refuse_changed(call, hr->request_id);
    return true;
  }
  if (!clue_see_or_refuse(call, row))
    return true;
  if (clue_handlers_read(call, r, 0, TF_HANDLERS, row->clue) != 0)
    clue_oom(call);
  else
    (void)rpc_reply(call, &row->clue->base);
  return true;
}

/* Send the recording decided with params (recuse_sql's, n of them, in the call's memory). */
static void send_recusal(rpc_call_t *call, const authz_principal_t *p, const char **params, int n) {
  const char **values = rpc_call_alloc(call, (size_t)n * sizeof(*values)), **lock_params, *sql;
  char cond[CLUE_SCOPE_SQL_MAX];
  db_stmt_t *stmts;

  if (clue_scope_sql(authz_clue_scope(p), "c", 2, 1, cond, sizeof(cond)) != 0)
    snprintf(cond, sizeof(cond), "false");
  sql = rpc_call_printf(call, recuse_sql, cond);
  if (values == NULL || sql == NULL || (stmts = rpc_call_alloc(call, 3 * sizeof(*stmts))) == NULL ||
      (lock_params = rpc_call_alloc(call, 2 * sizeof(*lock_params))) == NULL) {
    clue_oom(call);
    return;
  }
  memcpy(values, params, (size_t)n * sizeof(*values));
  lock_params[0] = values[0]; /* the recorder */
  lock_params[1] = values[2]; /* the request key */
  stmts[0] = (db_stmt_t){.sql = CLUE_REQUEST_KEY_LOCK_SQL, .nparams = 2, .values = lock_params};
  stmts[1] = (db_stmt_t){.sql = recuse_clue_lock_sql, .nparams = 1, .values = &values[4]};
  stmts[2] = (db_stmt_t){.sql = sql, .nparams = n, .values = values};
  svc_txn(call, stmts, 3, reply_recusal, NULL);
}

static void got_facts(rpc_call_t *call, const db_result_t *r, void *arg) {
  const handler_req_t *hr = arg;
  authz_principal_t p = clue_principal(call);
  authz_user_t u;
  authz_result_t res;
  clue_row_t row;
  const char *params[11];
  int n = 0;

  if (db_rows(r) != 1 || clue_row_read(call, r, 0, 0, clue_now_ms(call), &row) != 0) {
    clue_oom(call);
    return;
  }
  if (replayed(call, r, hr, &row))
    return;
  if (row.id == 0) {
    (void)clue_see_or_refuse(call, &row);
    return;
  }
  u = target_of(r, hr->user_id);
  if (strcmp(hr->method, "RecordRecusal") == 0)
    res = authz_can_recuse(&p, &row.facts, &u);
  else if (hr->assign)
    res = authz_can_assign(&p, &row.facts, &u);
  else
    res = authz_can_unassign(&p, &row.facts, &u);
  if (!authz_ok(&res)) {
    if (res.grpc_code == GRPC_NOT_FOUND && strncmp(res.message, "user_id:", 8) == 0) {
      log_info("call %s: %s refused (5): %s", rpc_call_id(call), hr->method, res.reason);
      clue_not_found(call, res.message);
      return;
    }
    clue_refuse(call, &res);
    return;
  }
  params[n++] = svc_i64(call, p.user_id, 0);
  params[n++] = svc_i64(call, p.unit_id, 0);
  params[n++] = hr->request_id;
  params[n++] = svc_i64(call, clue_now_ms(call), 0);
  params[n++] = svc_i64(call, row.id, 0);
  params[n++] = svc_i64(call, row.facts.owner_unit_id, 0);
  params[n++] = svc_i64(call, u.user_id, 0);
  if (!svc_all_set(params, n) || !clue_sight_on_refusal(call, row.id, "clue not found")) {
    clue_oom(call);
    return;
  }
  if (strcmp(hr->method, "RecordRecusal") == 0) {
    params[n++] = hr->reason;
    params[n++] = hr->request_sha256;
    send_recusal(call, &p, params, n);
    return;
  }
  params[n++] = hr->assign ? "t" : "f";
  params[n++] = hr->reason; /* NULL: none given */
  params[n++] = clue_state_name(row.facts.state);
  params[n++] = hr->request_sha256;
  log_info("call %s: %s user %lld on clue %lld", rpc_call_id(call), hr->method,
           (long long)u.user_id, (long long)row.id);
  svc_query(call, set_handler_sql, n, params, handler_set, NULL);
}

/* Validate, then read the facts. user_id 0 stands for the caller where self_default. */
static void start(rpc_call_t *call, const ProtobufCMessage *m, const char *method, int64_t clue_id,
                  int64_t user_id, const char *reason, bool reason_required, const char *request_id,
                  bool assign) {
  authz_principal_t p = clue_principal(call);
  validate_errors_t e;
  handler_req_t *hr;
  const char *params[5];
  bool recusal = strcmp(method, "RecordRecusal") == 0;

  if (recusal && user_id == 0)
    user_id = p.user_id;
  validate_errors_init(&e);
  validate_each(&e, validate_id("clue_id", clue_id, validate_slot(&e)));
  validate_each(&e, validate_id("user_id", user_id, validate_slot(&e)));
  validate_each(&e, validate_reason("reason", reason, reason_required, validate_slot(&e)));
  validate_each(&e, validate_request_id(request_id, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  if ((hr = rpc_call_alloc(call, sizeof(*hr))) == NULL) {
    clue_oom(call);
    return;
  }
  hr->method = method;
  hr->clue_id = clue_id;
  hr->user_id = user_id;
  hr->reason = clue_trimmed(call, reason);
  hr->request_id = clue_request_key(call, request_id);
  hr->request_sha256 = request_sha256(call, m);
  hr->assign = assign;
  params[0] = svc_i64(call, clue_id, 0);
  params[1] = svc_i64(call, p.user_id, 0);
  params[2] = svc_i64(call, p.unit_id, 0);
  params[3] = hr->request_id;
  params[4] = svc_i64(call, user_id, 0);
  if (!svc_all_set(params, 5) || hr->request_sha256 == NULL ||
      (reason_required && hr->reason == NULL)) {
    clue_oom(call);
    return;
  }
  svc_query(call, recusal ? recuse_facts_sql : handler_facts_sql, 5, params, got_facts, hr);
}

void clue_assign_handler(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__AssignHandlerRequest *req = (const void *)m;
  start(call, m, "AssignHandler", req->clue_id, req->user_id, req->reason, false, req->request_id,
        true);
}

void clue_unassign_handler(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__UnassignHandlerRequest *req = (const void *)m;
  start(call, m, "UnassignHandler", req->clue_id, req->user_id, req->reason, false, req->request_id,
        false);
}

void clue_record_recusal(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__RecordRecusalRequest *req = (const void *)m;
  Clue__V1__RecordRecusalRequest *same = rpc_call_alloc(call, sizeof(*same));

  if (same == NULL) {
    clue_oom(call);
    return;
  }
  /* user_id 0 names the caller: the request that names the caller's own id is the same one,
   * and so is its fingerprint. */
  *same = *req;
  if (same->user_id == 0)
    same->user_id = clue_principal(call).user_id;
  start(call, &same->base, "RecordRecusal", req->clue_id, req->user_id, req->reason, true,
        req->request_id, false);
}

/* ---- ListRecusals ------------------------------------------------------------------------ */

typedef struct list_recusals {
  int64_t scope[RECUSALS_TOKEN_SCOPE];
} list_recusals_t;

static ProtobufCMessage *recusal_msg(rpc_call_t *call, const db_result_t *r, int i) {
  Clue__V1__Recusal *x = recusal_read(call, r, i, 0);
  return x ? &x->base : NULL;
}

static void reply_recusals(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__ListRecusalsResponse resp = CLUE__V1__LIST_RECUSALS_RESPONSE__INIT;
  const list_recusals_t *lr = arg;
  ProtobufCMessage **rows;
  bool more;

  if (svc_page_rows(call, r, LIST_MAX, recusal_msg, &rows, &resp.n_recusals, &more) != 0) {
    clue_oom(call);
    return;
  }
  resp.recusals = (Clue__V1__Recusal **)rows;
  if (more && (resp.next_page_token =
                   (char *)svc_page_token_in(call, lr->scope, RECUSALS_TOKEN_SCOPE,
                                             resp.recusals[resp.n_recusals - 1]->id)) == NULL) {
    clue_oom(call);
    return;
  }
  (void)rpc_reply(call, &resp.base);
}

/* A list's negative filters, each named (the status message the first's): their
 * descriptions say only what is wrong, as they always did. */
static void refuse_negative(rpc_call_t *call, int64_t clue_id, int64_t user_id) {
  if (clue_id < 0)
    rpc_detail_field(call, "clue_id", "must not be negative");
  if (user_id < 0)
    rpc_detail_field(call, "user_id", "must not be negative");
  rpc_fail(call, GRPC_INVALID_ARGUMENT, "%s must not be negative",
           clue_id < 0 ? "clue_id" : "user_id");
}

void clue_list_recusals(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ListRecusalsRequest *req = (const void *)m;
  authz_principal_t p = clue_principal(call);
  authz_result_t res = authz_can_list_recusals(&p);
  unsigned scope = authz_clue_scope(&p);
  char cond[CLUE_SCOPE_SQL_MAX];
  const char *sql, *params[5];
  list_recusals_t *lr;
  int64_t before = 0;

  if (req->clue_id < 0 || req->user_id < 0) {
    refuse_negative(call, req->clue_id, req->user_id);
    return;
  }
  if ((lr = rpc_call_alloc(call, sizeof(*lr))) == NULL) {
    clue_oom(call);
    return;
  }
  lr->scope[0] = p.user_id;
  lr->scope[1] = req->clue_id;
  lr->scope[2] = req->user_id;
  if (req->page_token[0] &&
      (before = svc_page_after_in(req->page_token, lr->scope, RECUSALS_TOKEN_SCOPE)) == 0) {
    rpc_detail_field(call, "page_token",
                     "is malformed or was issued for another caller or other filters");
    rpc_fail(call, GRPC_INVALID_ARGUMENT,
             "page_token is malformed or was issued for another caller or other filters");
    return;
  }
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  if (clue_scope_sql(scope, "c", 1, 2, cond, sizeof(cond)) != 0) {
    clue_oom(call);
    return;
  }
  /* An AUDITOR's scope is every clue; a LEADER's, its unit's users and the clues it sees. */
  sql =
      rpc_call_printf(call, list_recusals_sql, (scope & AUTHZ_SCOPE_ALL) ? "true" : "false", cond);
  params[0] = svc_i64(call, p.unit_id, 0);
  params[1] = svc_i64(call, p.user_id, 0);
  params[2] = svc_i64(call, req->clue_id, 1);
  params[3] = svc_i64(call, req->user_id, 1);
  params[4] = before ? svc_i64(call, before, 0) : NULL;
  if (sql == NULL || params[0] == NULL || params[1] == NULL ||
      (req->clue_id != 0 && params[2] == NULL) || (req->user_id != 0 && params[3] == NULL) ||
      (before && params[4] == NULL)) {
    clue_oom(call);
    return;
  }
  svc_read(call, sql, 5, params, reply_recusals, lr);
}

/* ---- ListAssignments --------------------------------------------------------------------- */

/* Columns of list_assignments_sql. */
enum {
  LA_CLUE,
  LA_OWNER,
  LA_OWNER_CODE,
  LA_USER,
  LA_USER_NAME,
  LA_USER_UNIT,
  LA_USER_UNIT_CODE,
  LA_BY,
  LA_AT_MS,
  LA_AT_US, /* the keyset's time */
};

typedef struct list_assignments {
  int64_t scope[ASSIGNMENTS_TOKEN_SCOPE];
} list_assignments_t;

/* Read row i of list_assignments_sql; NULL when out of memory. */
static Clue__V1__Assignment *assignment_read(rpc_call_t *call, const db_result_t *r, int i) {
  Clue__V1__Assignment *a = rpc_call_alloc(call, sizeof(*a));
  Clue__V1__Handler *h = rpc_call_alloc(call, sizeof(*h));

  if (a == NULL || h == NULL)
    return NULL;
  clue__v1__assignment__init(a);
  clue__v1__handler__init(h);
  a->clue_id = svc_col_i64(r, i, LA_CLUE);
  a->owner_unit_id = svc_col_i64(r, i, LA_OWNER);
  a->owner_unit_code = svc_col_str(call, r, i, LA_OWNER_CODE);
  h->user_id = svc_col_i64(r, i, LA_USER);
  h->user_name = svc_col_str(call, r, i, LA_USER_NAME);
  h->unit_id = svc_col_i64(r, i, LA_USER_UNIT);
  h->unit_code = svc_col_str(call, r, i, LA_USER_UNIT_CODE);
  h->assigned_by = svc_col_i64(r, i, LA_BY);
  h->assigned_at_ms = svc_col_i64(r, i, LA_AT_MS);
  if (a->owner_unit_code == NULL || h->user_name == NULL || h->unit_code == NULL)
    return NULL;
  a->handler = h;
  return a;
}

static ProtobufCMessage *assignment_msg(rpc_call_t *call, const db_result_t *r, int i) {
  Clue__V1__Assignment *a = assignment_read(call, r, i);
  return a ? &a->base : NULL;
}

static void reply_assignments(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__ListAssignmentsResponse resp = CLUE__V1__LIST_ASSIGNMENTS_RESPONSE__INIT;
  const list_assignments_t *la = arg;
  ProtobufCMessage **rows;
  bool more;

  if (svc_page_rows(call, r, LIST_MAX, assignment_msg, &rows, &resp.n_assignments, &more) != 0) {
    clue_oom(call);
    return;
  }
  resp.assignments = (Clue__V1__Assignment **)rows;
  if (more) {
    int last = (int)resp.n_assignments - 1;
    int64_t key[ASSIGNMENTS_KEY] = {svc_col_i64(r, last, LA_AT_US), svc_col_i64(r, last, LA_CLUE),
                                    svc_col_i64(r, last, LA_USER)};

    if ((resp.next_page_token = (char *)svc_page_token_keys(
             call, la->scope, ASSIGNMENTS_TOKEN_SCOPE, key, ASSIGNMENTS_KEY)) == NULL) {
      clue_oom(call);
      return;
    }
  }
  (void)rpc_reply(call, &resp.base);
}

void clue_list_assignments(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ListAssignmentsRequest *req = (const void *)m;
  authz_principal_t p = clue_principal(call);
  unsigned scope = authz_clue_scope(&p);
  char cond[CLUE_SCOPE_SQL_MAX];
  const char *sql, *params[7];
  bool leader = authz_sees_unit_assignments(&p);
  list_assignments_t *la;
  int64_t after[ASSIGNMENTS_KEY] = {0};
  bool paged = req->page_token[0] != '\0';

  if (req->clue_id < 0 || req->user_id < 0) {
    refuse_negative(call, req->clue_id, req->user_id);
    return;
  }
  if ((la = rpc_call_alloc(call, sizeof(*la))) == NULL) {
    clue_oom(call);
    return;
  }
  la->scope[0] = (int64_t)ASSIGNMENTS_TOKEN_TAG;
  la->scope[1] = p.user_id;
  la->scope[2] = req->clue_id;
  la->scope[3] = req->user_id;
  /* The ids of a token this server gave are positive: others are made up. */
  if (paged && (svc_page_after_keys(req->page_token, la->scope, ASSIGNMENTS_TOKEN_SCOPE, after,
                                    ASSIGNMENTS_KEY) != 0 ||
                after[1] <= 0 || after[2] <= 0)) {
    rpc_detail_field(call, "page_token",
                     "is malformed or was issued for another caller or other filters");
    rpc_fail(call, GRPC_INVALID_ARGUMENT,
             "page_token is malformed or was issued for another caller or other filters");
    return;
  }
  if (clue_scope_sql(scope, "c", 1, 2, cond, sizeof(cond)) != 0) {
    clue_oom(call);
    return;
  }
  /* An AUDITOR sees every assignment; staff their own, those on the clues they see, and a
   * LEADER those of its unit's users (the consent nobody asks is replaced by this sight).
   * Anyone else (an ADMIN) sees those it is named in: none. */
  sql = rpc_call_printf(call, list_assignments_sql, (scope & AUTHZ_SCOPE_ALL) ? "true" : "false",
                        leader ? "true" : "false", scope == AUTHZ_SCOPE_NONE ? "false" : cond);
  params[0] = svc_i64(call, p.unit_id, 0);
  params[1] = svc_i64(call, p.user_id, 0);
  params[2] = svc_i64(call, req->clue_id, 1);
  params[3] = svc_i64(call, req->user_id, 1);
  for (int k = 0; k < ASSIGNMENTS_KEY; k++)
    params[4 + k] = paged ? svc_i64(call, after[k], 0) : NULL;
  if (sql == NULL || params[0] == NULL || params[1] == NULL ||
      (req->clue_id != 0 && params[2] == NULL) || (req->user_id != 0 && params[3] == NULL) ||
      (paged && !svc_all_set(params + 4, ASSIGNMENTS_KEY))) {
    clue_oom(call);
    return;
  }
  svc_read(call, sql, 7, params, reply_assignments, la);
}
