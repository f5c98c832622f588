/* ClueService.ListClues: the clues the caller sees, newest first, one page at a time.
 *
 * Visibility is the WHERE clause built from authz_clue_scope(), which agrees with
 * authz_can_see_clue(); each row is checked against the latter as well, so that a
 * disagreement shows in the log instead of leaking a clue. Short of an AUDITOR, the page is
 * read from the ids of the clues the caller sees (add_scope()), so that it costs what the caller
 * sees, not the whole table. Lists never carry the reporter
 * (reporter_on_file only): reading it is GetClue's, which audits the read.
 *
 * Pages are a keyset on the id: the page token holds the last id returned (svc_page_token()).
 * A page ends early once its clues take SVC_PAGE_BYTES. */

#include "service/clue_list.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "service/clue_row.h"
#include "service/clue_scope.h"
#include "service/replica.h"
#include "service/request_sha256.h"
#include "service/svc_util.h"

/* ---- the query -------------------------------------------------------------------------- */

/* clang-format off */
static const char list_head_sql[] =
    "SELECT " CLUE_COLS("c", "ou", "$1", "$2") " FROM clues c JOIN units ou ON ou.id = c.owner_unit WHERE ";
/* clang-format on */

#define LIST_MAX_PARAMS 14
/* A page token is ListClues', the caller's and the filters' (list_scope()). */
#define LIST_TOKEN_SCOPE 3
#define LIST_TOKEN_TAG 0x4c697374436c7565 /* "ListClue": no other list's token reads here */
#define LIST_SQL_MAX 4096

/* The SQL and its parameters, built clause by clause. */
typedef struct list_query {
  char sql[LIST_SQL_MAX];
  size_t len;
  const char *params[LIST_MAX_PARAMS];
  int nparams;
  int overflow;
} list_query_t;

__attribute__((format(printf, 2, 3))) static void sql_add(list_query_t *q, const char *fmt, ...) {
  va_list ap;
  int n;

  if (q->overflow)
    return;
  va_start(ap, fmt);
  n = vsnprintf(q->sql + q->len, sizeof(q->sql) - q->len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(q->sql) - q->len)
    q->overflow = 1;
  else
    q->len += (size_t)n;
}

/* Add a parameter; returns its number ($n). */
static int param_add(list_query_t *q, const char *value) {
  if (q->nparams >= LIST_MAX_PARAMS) {
    q->overflow = 1;
    return 1;
  }
  q->params[q->nparams++] = value;
  return q->nparams;
}

/* The clause that picks the page among the clues the caller sees; $1 is the caller's unit, $2
 * the caller, filters the request's conditions on c (each " AND ..."), after_param the page
 * token's parameter (0: none) and limit the rows to read. An AUDITOR's is a condition on each row
 * of the walk by id. Anyone else's starts from the ids of the clues they see
 * (clue_scope_ids_sql(), by the indexes of the sources of sight), newest first, and reads each
 * by primary key until the page is full: a walk of every clue by id would read the whole table
 * to fill a page that the caller's few clues cannot fill, and a subject_name search every
 * clue's name. The LIMIT 1 keeps the probe a nested loop in the order of the ids. */
static void add_scope(list_query_t *q, unsigned scope, const char *filters, int after_param,
                      int limit) {
  char ids[CLUE_SCOPE_SQL_MAX], after[32] = "";

  if (after_param)
    snprintf(after, sizeof(after), " AND c.id < $%d", after_param);
  if (scope & AUTHZ_SCOPE_ALL) {
    sql_add(q, "true%s%s", filters, after);
    return;
  }
  if (clue_scope_ids_sql(scope, 1, 2, ids, sizeof(ids)) != 0) {
    q->overflow = 1;
    return;
  }
  if (after_param)
    snprintf(after, sizeof(after), " WHERE id < $%d", after_param);
  sql_add(q,
          "c.id = ANY (ARRAY(SELECT v.id FROM (SELECT id FROM (%s) vi%s ORDER BY id DESC) v"
          " CROSS JOIN LATERAL (SELECT 1 FROM clues c WHERE c.id = v.id%s LIMIT 1) f LIMIT %d))",
          ids, after, filters, limit);
}

typedef struct list_ctx {
  int32_t page_size;
  int64_t now_ms;
  Clue__V1__ReadFreshness *fresh; /* where the rows come from (service/replica.h) */
  int64_t scope[LIST_TOKEN_SCOPE]; /* what a page token is bound to (list_scope()) */
} list_ctx_t;

static void reply_list(rpc_call_t *call, const db_result_t *r, void *arg) {
  const list_ctx_t *lc = arg;
  Clue__V1__ListCluesResponse resp = CLUE__V1__LIST_CLUES_RESPONSE__INIT;
  authz_principal_t p = clue_principal(call);
  int n = db_rows(r), shown = n > lc->page_size ? lc->page_size : n;
  int64_t last_id = 0;
  size_t bytes = 0;
  bool more = n > lc->page_size;

  resp.freshness = lc->fresh;
  if ((resp.clues = rpc_call_alloc(call, (size_t)(shown ? shown : 1) * sizeof(*resp.clues))) ==
      NULL) {
    clue_oom(call);
    return;
  }
  for (int i = 0; i < shown; i++) {
    clue_row_t row;
    authz_result_t res;

    if (clue_row_read(call, r, i, 0, lc->now_ms, &row) != 0) {
      clue_oom(call);
      return;
    }
    res = authz_can_see_clue(&p, &row.facts);
    if (!authz_ok(&res)) {
      log_error("call %s: list scope returned clue %lld that authz hides (%s); dropped",
                rpc_call_id(call), (long long)row.id, res.reason);
      last_id = row.id;
      continue;
    }
    if (!svc_page_fits(&bytes, &row.clue->base)) {
      more = true; /* the next page starts with this clue */
      break;
    }
    last_id = row.id;
    resp.clues[resp.n_clues++] = row.clue;
  }
  if (more && (resp.next_page_token =
                   (char *)svc_page_token_in(call, lc->scope, LIST_TOKEN_SCOPE, last_id)) == NULL) {
    clue_oom(call);
    return;
  }
  (void)rpc_reply(call, &resp.base);
}

/* What a page token is bound to: this list, the caller, and the filters (the request's
 * fingerprint without its page token, page size and read consistency, which may change from
 * page to page). Another caller's token, or one for other filters, then reads as a damaged one:
 * it would name a place in another list. Returns -1 out of memory. */
static int list_scope(rpc_call_t *call, const Clue__V1__ListCluesRequest *req, int64_t *scope) {
  Clue__V1__ListCluesRequest f = *req;

  f.page_token = (char *)protobuf_c_empty_string;
  f.page_size = 0;
  f.read = NULL;
  if (request_sha256_bits(&f.base, &scope[2]) != 0)
    return -1;
  scope[0] = (int64_t)LIST_TOKEN_TAG;
  scope[1] = rpc_call_principal(call)->user_id;
  return 0;
}

static int not_negative(const char *field, int64_t v, validate_error_t *err) {
  if (v >= 0)
    return 0;
  err->field = field;
  snprintf(err->message, sizeof(err->message), "%s must not be negative", field);
  return VALIDATE_EINVAL;
}

/* Every violation of the request, one per field (validate_errors_t); the page size into
 * *page_size, the id a page token of this scope (list_scope()) names into *after. */
static int validate_list(const Clue__V1__ListCluesRequest *req, const int64_t *scope,
                         int32_t *page_size, int64_t *after, validate_errors_t *e) {
  validate_errors_init(e);
  for (size_t i = 0; i < req->n_states; i++)
    if (validate_each(e, validate_enum("states", (int)req->states[i], 1, 5, validate_slot(e))) != 0)
      break;
  validate_each(e, not_negative("owner_unit_id", req->owner_unit_id, validate_slot(e)));
  validate_each(e, validate_enum("source", (int)req->source, 0, 6, validate_slot(e)));
  validate_each(e, validate_name("subject_name", req->subject_name, false, validate_slot(e)));
  validate_time_range(e, "created_from_ms", req->created_from_ms, "created_to_ms",
                      req->created_to_ms);
  validate_time_range(e, "updated_from_ms", req->updated_from_ms, "updated_to_ms",
                      req->updated_to_ms);
  validate_each(e, validate_page_size(req->page_size, page_size, validate_slot(e)));
  if (req->page_token[0] &&
      (*after = svc_page_after_in(req->page_token, scope, LIST_TOKEN_SCOPE)) == 0)
    validate_add(e, "page_token",
                 "page_token is malformed or was issued for another caller or other filters");
  return validate_errors_result(e);
}

/* A time-range bound: "c.<column> >= or < clue_ms_ts($n)". */
static void add_time(rpc_call_t *call, list_query_t *q, const char *column, const char *op,
                     int64_t ms) {
  const char *v;

  if (ms == 0)
    return;
  if ((v = svc_i64(call, ms, 0)) == NULL) {
    q->overflow = 1;
    return;
  }
  sql_add(q, " AND c.%s %s clue_ms_ts($%d)", column, op, param_add(q, v));
}

void clue_list_clues(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ListCluesRequest *req = (const void *)m;
  Clue__V1__ListCluesResponse empty = CLUE__V1__LIST_CLUES_RESPONSE__INIT;
  authz_principal_t p = clue_principal(call);
  unsigned scope = authz_clue_scope(&p);
  validate_errors_t errs;
  list_query_t *q;
  list_ctx_t *lc;
  int64_t after = 0;
  int after_param;
  const char *subject;
  char *filters;

  if ((lc = rpc_call_alloc(call, sizeof(*lc))) == NULL) {
    clue_oom(call);
    return;
  }
  if (list_scope(call, req, lc->scope) != 0) {
    clue_oom(call);
    return;
  }
  if (validate_list(req, lc->scope, &lc->page_size, &after, &errs) != 0 &&
      clue_invalid_each(call, &errs))
    return;
  if ((lc->fresh = replica_route(call, req->read)) == NULL)
    return;
  if (scope == AUTHZ_SCOPE_NONE) {
    empty.freshness = lc->fresh;
    (void)rpc_reply(call, &empty.base);
    return;
  }
  lc->now_ms = clue_now_ms(call);
  if ((q = rpc_call_alloc(call, sizeof(*q))) == NULL) {
    clue_oom(call);
    return;
  }
  (void)param_add(q, svc_i64(call, p.unit_id, 0));
  (void)param_add(q, svc_i64(call, p.user_id, 0));
  /* The filters first, on their own: add_scope() puts them where they apply. */
  /* "My queue": the clues the caller is a handler of, while the assigning owner owns them. */
  if (req->assigned_to_me)
    sql_add(q, " AND c.id = ANY (ARRAY(SELECT mh.clue_id FROM clue_handlers mh JOIN clues mc"
               " ON mc.id = mh.clue_id AND mc.owner_unit = mh.owner_unit WHERE mh.user_id = $2))");
  if (req->n_states > 0) {
    /* Each state once, however often it was asked for (validate_list() checked them all). */
    const char *names[CLUE_STATE_COUNT];
    unsigned seen = 0;
    size_t n = 0;
    for (size_t i = 0; i < req->n_states; i++)
      if (!(seen & 1u << req->states[i])) {
        seen |= 1u << req->states[i];
        names[n++] = clue_state_name((clue_state_t)req->states[i]);
      }
    sql_add(q, " AND c.state = ANY ($%d::text[])",
            param_add(q, svc_text_array_trimmed(call, (char *const *)names, n)));
  }
  if (req->owner_unit_id > 0)
    sql_add(q, " AND c.owner_unit = $%d", param_add(q, svc_i64(call, req->owner_unit_id, 0)));
  if (req->source != 0)
    sql_add(q, " AND c.source = $%d", param_add(q, clue_source_db(req->source)));
  if ((subject = clue_trimmed(call, req->subject_name)) != NULL)
    sql_add(q, " AND strpos(lower(c.subject_name), lower($%d)) > 0", param_add(q, subject));
  if (req->overdue_only)
    sql_add(q, " AND c.stage_deadline < clue_ms_ts($%d)",
            param_add(q, svc_i64(call, lc->now_ms, 0)));
  add_time(call, q, "created_at", ">=", req->created_from_ms);
  add_time(call, q, "created_at", "<", req->created_to_ms);
  add_time(call, q, "updated_at", ">=", req->updated_from_ms);
  add_time(call, q, "updated_at", "<", req->updated_to_ms);
  after_param = after > 0 ? param_add(q, svc_i64(call, after, 0)) : 0;
  if (q->overflow || (filters = rpc_call_alloc(call, q->len + 1)) == NULL) {
    clue_oom(call);
    return;
  }
  memcpy(filters, q->sql, q->len + 1);
  q->len = 0;
  q->sql[0] = '\0';
  sql_add(q, "%s", list_head_sql);
  add_scope(q, scope, filters, after_param, (int)lc->page_size + 1);
  sql_add(q, " ORDER BY c.id DESC LIMIT %d", (int)lc->page_size + 1);
  for (int i = 0; i < q->nparams; i++)
    if (q->params[i] == NULL)
      q->overflow = 1;
  if (q->overflow) {
    clue_oom(call);
    return;
  }
  svc_read(call, q->sql, q->nparams, q->params, reply_list, lc);
}
