/* clue.v1.RectificationService: the rectification ledger (督促整改台账, docs/LEDGER.md).
 *
 * A LEADER of a working unit records a problem found in a host unit (from a clue its unit
 * owns, a joint case its unit leads or joins, or its own supervision); the unit then follows
 * the rectification through the state machine of domain/rect.h to VERIFIED. The item is seen
 * by the supervising unit, its liaison room, the units of the source case and AUDITORs;
 * anybody else gets NOT_FOUND, as for a missing item. So does a user recused from the item's
 * source clue (RC_RECUSED): for that user the item is missing, in lists and counts too.
 *
 * Each call: validate -> one facts query (the item or the source, and this request_id's
 * record) -> decide (domain/rect.h) -> one function of 0014_rectification.sql (as 0035, 0047
 * and 0050 replaced them; a move after the locks of the clues it stands on, 0050), which
 * appends the audit event and answers with the item -> encode. A move whose request_id is
 * recorded already skips the decision and the locks: rect_request_begin() alone answers with
 * the item the first call produced, or refuses a key that named another call (a clue or case
 * call's too) or another request. */

#include "service/rect.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "clue/v1/rectification.pb-c.h"
#include "domain/rect.h"
#include "log.h"
#include "service/clue_row.h"
#include "service/clue_scope.h"
#include "service/request_sha256.h"
#include "service/svc_util.h"

/* Note ids a plan or evidence may cite. */
#define RECT_MAX_NOTES 50
/* Plans, evidence and descriptions, in UTF-8 bytes. */
#define RECT_TEXT_MAX VALIDATE_SUMMARY_MAX_BYTES
/* A deadline at most this many calendar years ahead (UTC). */
#define RECT_DEADLINE_MAX_YEARS 5
/* GetLedgerStats: the host units of a page, by default and at most. */
#define RECT_STATS_PAGE_MAX 1000

/* clang-format off */
/* An item row i with its supervising unit's row u, relative to the caller's unit and user
 * (params): whether the unit is in the source case, whether the user is recused from the
 * source clue. */
#define RECT_COLS(unit, user) RECT_COLS_SEEN(unit, user, "true")
/* The same, its texts and cited notes read only when seen (an SQL condition) holds, empty
 * otherwise: a read of an item the caller may not see reads none of them, so that it costs
 * what a missing item does (docs/COOPERATION.md). */
#define RECT_COLS_SEEN(unit, user, seen)                                                        \
  "i.id, i.host_unit, " RECT_SEEN(seen, "i.description") ", i.category, i.source, "            \
  "i.source_clue, i.source_case, " SVC_MS("i.deadline") ", i.supervising_unit, i.state, "       \
  "i.version, " RECT_SEEN(seen, "i.plan") ", "                                                  \
  RECT_SEEN(seen, "array_to_string(i.plan_note_ids, ',')") ", " RECT_SEEN(seen, "i.evidence") ", " \
  RECT_SEEN(seen, "array_to_string(i.evidence_note_ids, ',')") ", "                             \
  RECT_SEEN(seen, "i.reopen_reason") ", " RECT_SEEN(seen, "i.verify_comment") ", i.created_by, " \
  SVC_MS("i.created_at") ", " SVC_MS("i.updated_at") ", " SVC_MS("i.verified_at") ", "          \
  "u.liaison_room_id, coalesce(joint_case_has_unit(i.source_case, " unit "), false), "         \
  "(i.source_clue IS NOT NULL AND clue_user_recused(i.source_clue, " user "))"
#define RECT_SEEN(seen, text) "CASE WHEN " seen " THEN " text " ELSE '' END"
/* The bytes of an item i's texts, fewer than its message takes (a ListItems page's budget). */
#define RECT_TEXT_BYTES                                                                            \
  "(octet_length(i.host_unit) + octet_length(i.description) + octet_length(i.category)"          \
  " + octet_length(i.plan) + octet_length(i.evidence) + octet_length(i.reopen_reason)"            \
  " + octet_length(i.verify_comment))"
/* clang-format on */

/* Columns of RECT_COLS. */
enum {
  RC_ID,
  RC_HOST,
  RC_DESCRIPTION,
  RC_CATEGORY,
  RC_SOURCE,
  RC_CLUE,
  RC_CASE,
  RC_DEADLINE_MS,
  RC_UNIT,
  RC_STATE,
  RC_VERSION,
  RC_PLAN,
  RC_PLAN_NOTES,
  RC_EVIDENCE,
  RC_EVIDENCE_NOTES,
  RC_REOPEN_REASON,
  RC_VERIFY_COMMENT,
  RC_CREATED_BY,
  RC_CREATED_MS,
  RC_UPDATED_MS,
  RC_VERIFIED_MS,
  RC_LIAISON,
  RC_IN_CASE,
  RC_RECUSED,
  RC_NCOLS
};

/* ---- reading items ---------------------------------------------------------------------- */

static rect_item_facts_t item_facts(const db_result_t *r, int row) {
  rect_item_facts_t f = {0};

  f.supervising_unit_id = svc_col_i64(r, row, RC_UNIT);
  f.supervising_liaison_room_id = svc_col_i64(r, row, RC_LIAISON);
  f.principal_in_source_case = svc_col_bool(r, row, RC_IN_CASE) != 0;
  f.principal_recused = svc_col_bool(r, row, RC_RECUSED) != 0;
  f.state = rect_state_of(db_value(r, row, RC_STATE));
  return f;
}

/* Comma-separated ids into an array in the call's memory. Returns 0 or -1 (out of memory). */
static int parse_ids(rpc_call_t *call, const char *csv, int64_t **out, size_t *n) {
  size_t count = 1;

  *n = 0;
  *out = NULL;
  if (csv == NULL || csv[0] == '\0')
    return 0;
  for (const char *p = csv; *p; p++)
    count += *p == ',';
  if ((*out = rpc_call_alloc(call, count * sizeof(**out))) == NULL)
    return -1;
  for (const char *p = csv; *p && *n < count;) {
    char *end;
    (*out)[(*n)++] = strtoll(p, &end, 10);
    if (end == p)
      break;
    p = *end == ',' ? end + 1 : end;
  }
  return 0;
}

/* The item at row as a message in the call's memory; NULL when out of memory. */
static Clue__V1__RectificationItem *item_read(rpc_call_t *call, const db_result_t *r, int row) {
  Clue__V1__RectificationItem *it = rpc_call_alloc(call, sizeof(*it));
  int64_t now = clue_now_ms(call);

  if (it == NULL)
    return NULL;
  clue__v1__rectification_item__init(it);
  it->id = svc_col_i64(r, row, RC_ID);
  it->host_unit = svc_col_str(call, r, row, RC_HOST);
  it->description = svc_col_str(call, r, row, RC_DESCRIPTION);
  it->category = svc_col_str(call, r, row, RC_CATEGORY);
  it->source = (Clue__V1__RectificationSource)rect_source_of(db_value(r, row, RC_SOURCE));
  it->source_clue_id = svc_col_i64(r, row, RC_CLUE);
  it->source_case_id = svc_col_i64(r, row, RC_CASE);
  it->deadline_ms = svc_col_i64(r, row, RC_DEADLINE_MS);
  it->supervising_unit_id = svc_col_i64(r, row, RC_UNIT);
  it->state = (Clue__V1__RectificationState)rect_state_of(db_value(r, row, RC_STATE));
  it->version = svc_col_i64(r, row, RC_VERSION);
  it->plan = svc_col_str(call, r, row, RC_PLAN);
  it->evidence = svc_col_str(call, r, row, RC_EVIDENCE);
  it->reopen_reason = svc_col_str(call, r, row, RC_REOPEN_REASON);
  it->verify_comment = svc_col_str(call, r, row, RC_VERIFY_COMMENT);
  it->created_by = svc_col_i64(r, row, RC_CREATED_BY);
  it->created_at_ms = svc_col_i64(r, row, RC_CREATED_MS);
  it->updated_at_ms = svc_col_i64(r, row, RC_UPDATED_MS);
  it->verified_at_ms = svc_col_i64(r, row, RC_VERIFIED_MS);
  it->overdue = it->state != CLUE__V1__RECTIFICATION_STATE__RECTIFICATION_STATE_VERIFIED &&
                it->deadline_ms > 0 && now > it->deadline_ms;
  if (it->host_unit == NULL || it->description == NULL || it->category == NULL ||
      it->plan == NULL || it->evidence == NULL || it->reopen_reason == NULL ||
      it->verify_comment == NULL ||
      parse_ids(call, db_value(r, row, RC_PLAN_NOTES), &it->plan_note_ids, &it->n_plan_note_ids) !=
          0 ||
      parse_ids(call, db_value(r, row, RC_EVIDENCE_NOTES), &it->evidence_note_ids,
                &it->n_evidence_note_ids) != 0)
    return NULL;
  return it;
}

static void item_not_found(rpc_call_t *call, const char *why) {
  log_info("call %s: %s refused (5): %s", rpc_call_id(call), rpc_call_method(call)->path, why);
  clue_not_found(call, RECT_MSG_NOT_FOUND);
}

/* Reply with the one item of r if the caller sees it (NOT_FOUND otherwise). */
static void reply_item(rpc_call_t *call, const db_result_t *r, void *arg) {
  authz_principal_t p = clue_principal(call);
  Clue__V1__RectificationItem *it;
  rect_item_facts_t facts;
  authz_result_t res;
  (void)arg;

  if (db_rows(r) == 0 || db_value(r, 0, RC_ID) == NULL) {
    item_not_found(call, "no such item");
    return;
  }
  facts = item_facts(r, 0);
  res = rect_can_see(&p, &facts);
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  if ((it = item_read(call, r, 0)) == NULL) {
    clue_oom(call);
    return;
  }
  (void)rpc_reply(call, &it->base);
}

/* ---- GetItem, ListItems ----------------------------------------------------------------- */

static const char *seen_sql(rpc_call_t *call, const authz_principal_t *p, int unit, int user);

/* clang-format off */
/* The item, its texts only if the caller sees it (%s: seen_sql(), unit in $2 and user in $3);
 * the server decides on its facts. */
static const char get_item_sql[] =
    "SELECT " RECT_COLS_SEEN("$2", "$3", "s.seen") " FROM rect_items i"
    " JOIN units u ON u.id = i.supervising_unit CROSS JOIN LATERAL (SELECT %s AS seen) s"
    " WHERE i.id = $1";
/* clang-format on */

static void get_item(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__GetItemRequest *req = (const void *)m;
  authz_principal_t p = clue_principal(call);
  validate_error_t err;
  const char *params[3], *seen, *sql;

  if (clue_invalid(call, validate_id("item_id", req->item_id, &err), &err))
    return;
  params[0] = svc_i64(call, req->item_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = svc_i64(call, p.user_id, 0);
  if ((seen = seen_sql(call, &p, 2, 3)) == NULL ||
      (sql = rpc_call_printf(call, get_item_sql, seen)) == NULL || !svc_all_set(params, 3)) {
    clue_oom(call);
    return;
  }
  svc_query(call, sql, 3, params, reply_item, NULL);
}

/* The WHERE clause of the items p sees (i an item row, u its supervising unit's; unit in
 * $<unit>, user in $<user>), from rect_scope(), in the call's memory. NULL when p sees none
 * (*none set) or out of memory. */
static const char *scope_sql(rpc_call_t *call, const authz_principal_t *p, int unit, int user,
                             bool *none) {
  unsigned scope = rect_scope(p);
  const char *recusals, *liaised;

  *none = scope == 0;
  if (scope & RECT_SCOPE_ALL)
    return rpc_call_printf(call, "$%d::bigint IS NOT NULL AND $%d::bigint IS NOT NULL", unit, user);
  if (scope == 0)
    return NULL;
  /* As clue_scope_sql()'s AUTHZ_SCOPE_UNRECUSED: the user's few recusals, hashed once. */
  if (scope & RECT_SCOPE_UNRECUSED)
    recusals = rpc_call_printf(call,
                               " AND (i.source_clue IS NULL OR i.source_clue NOT IN"
                               " (SELECT rr.clue_id FROM recusals rr WHERE rr.user_id = $%d))",
                               user);
  else
    recusals = rpc_call_printf(call, " AND $%d::bigint IS NOT NULL", user);
  liaised =
      scope & RECT_SCOPE_LIAISED ? rpc_call_printf(call, " OR u.liaison_room_id = $%d", unit) : "";
  if (recusals == NULL || liaised == NULL)
    return NULL;
  return rpc_call_printf(
      call, "(i.supervising_unit = $%d%s OR i.source_case IN (SELECT joint_cases_of_unit($%d)))%s",
      unit, liaised, unit, recusals);
}

/* scope_sql() as a condition, "false" when p sees no item; NULL when out of memory. */
static const char *seen_sql(rpc_call_t *call, const authz_principal_t *p, int unit, int user) {
  bool none;
  const char *s = scope_sql(call, p, unit, user, &none);

  return s == NULL && none ? "false" : s;
}

/* A ListItems page token is ListItems', the caller's and the filters' (list_scope()). */
#define LIST_TOKEN_SCOPE 3
#define LIST_TOKEN_TAG 0x4c6973744974656d /* "ListItem": no other list's token reads here */

typedef struct list_req {
  int32_t page_size;
  int64_t scope[LIST_TOKEN_SCOPE]; /* what a page token is bound to (list_scope()) */
} list_req_t;

/* What a page token is bound to: this list, the caller, and the filters (the request's
 * fingerprint without its page token and page size, which may change from page to page).
 * Another caller's token, or one for other filters, then reads as a damaged one: it would
 * name a place in another list. None could show more than the caller sees anyway, since the
 * scope decides every page. Returns 0, or -ENOMEM. */
static int list_scope(rpc_call_t *call, const Clue__V1__ListItemsRequest *req, int64_t *scope) {
  Clue__V1__ListItemsRequest f = *req;

  f.page_token = (char *)protobuf_c_empty_string;
  f.page_size = 0;
  if (request_sha256_bits(&f.base, &scope[2]) != 0)
    return -ENOMEM;
  scope[0] = (int64_t)LIST_TOKEN_TAG;
  scope[1] = rpc_call_principal(call)->user_id;
  return 0;
}

/* Rows of the page: RECT_COLS, then the text bytes of the rows up to this one included. */
#define LIST_TEXT_THROUGH RC_NCOLS

static void reply_items(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__ListItemsResponse resp = CLUE__V1__LIST_ITEMS_RESPONSE__INIT;
  const list_req_t *lr = arg;
  authz_principal_t p = clue_principal(call);
  int n = db_rows(r), last = -1;
  /* One row more than the page, or rows past the text budget that the query left out. */
  bool more =
      n > lr->page_size || (n > 0 && svc_col_i64(r, n - 1, LIST_TEXT_THROUGH) > SVC_PAGE_BYTES);
  size_t bytes = 0;

  if ((resp.items = rpc_call_alloc(call, (size_t)(n ? n : 1) * sizeof(*resp.items))) == NULL) {
    clue_oom(call);
    return;
  }
  for (int row = 0; row < n && row < lr->page_size; row++) {
    rect_item_facts_t facts = item_facts(r, row);
    authz_result_t res = rect_can_see(&p, &facts);
    Clue__V1__RectificationItem *it;

    if (!authz_ok(&res)) {
      log_error("call %s: item list returned item %lld that rect_can_see hides (%s); dropped",
                rpc_call_id(call), (long long)svc_col_i64(r, row, RC_ID), res.reason);
      last = row;
      continue;
    }
    if ((it = item_read(call, r, row)) == NULL) {
      clue_oom(call);
      return;
    }
    if (!svc_page_fits(&bytes, &it->base)) {
      more = true; /* the next page starts with this item */
      break;
    }
    last = row;
    resp.items[resp.n_items++] = it;
  }
  if (more && last >= 0 &&
      (resp.next_page_token = (char *)svc_page_token_in(call, lr->scope, LIST_TOKEN_SCOPE,
                                                        svc_col_i64(r, last, RC_ID))) == NULL) {
    clue_oom(call);
    return;
  }
  (void)rpc_reply(call, &resp.base);
}

/* clang-format off */
/* A page of items, newest first (%s: the scope's condition and the overdue filter, on i and
 * u; %d: the page size and one more), its texts counted in the query as ListNotes counts its
 * notes': the items whose texts before them take more than SVC_PAGE_BYTES are not fetched,
 * except the first, which tells that more follow. The texts take fewer bytes than the
 * messages, so the page reply_items() cuts at SVC_PAGE_BYTES ends at or before that item, and
 * the database sends about one page and one item, not page_size + 1 items of up to 68 KB
 * each (three texts of 20,000 bytes, two of 4,096). The budget is counted on the texts'
 * stored lengths (octet_length() reads no text), and only the rows that fit are read whole,
 * by their ids. */
static const char list_sql[] =
    "WITH page AS (SELECT i.id, sum(" RECT_TEXT_BYTES ") OVER (ORDER BY i.id DESC) AS text_through,"
    " " RECT_TEXT_BYTES " AS own FROM rect_items i JOIN units u ON u.id = i.supervising_unit"
    " WHERE %s AND ($3::text IS NULL OR i.host_unit = $3)"
    " AND ($4::text IS NULL OR i.state = $4)"
    " AND ($5::text IS NULL OR i.source = $5)"
    " AND ($6::bigint IS NULL OR i.id < $6)%s"
    " ORDER BY i.id DESC LIMIT %d)"
    " SELECT " RECT_COLS("$1", "$7") ", p.text_through FROM page p JOIN rect_items i ON i.id = p.id"
    " JOIN units u ON u.id = i.supervising_unit"
    " WHERE p.text_through - p.own <= " SVC_STR(SVC_PAGE_BYTES) " ORDER BY i.id DESC";
/* clang-format on */

static void list_items(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ListItemsRequest *req = (const void *)m;
  Clue__V1__ListItemsResponse empty = CLUE__V1__LIST_ITEMS_RESPONSE__INIT;
  authz_principal_t p = clue_principal(call);
  const char *scope, *params[7], *sql;
  validate_errors_t e;
  char msg[VALIDATE_MESSAGE_MAX];
  list_req_t *lr;
  int64_t before = 0;
  int np = 0;
  bool none;

  if ((lr = rpc_call_alloc(call, sizeof(*lr))) == NULL || list_scope(call, req, lr->scope) != 0) {
    clue_oom(call);
    return;
  }
  /* Every violation of the request, one per field. */
  validate_errors_init(&e);
  validate_each(&e, validate_name("host_unit", req->host_unit, false, validate_slot(&e)));
  if (req->state != 0 && !rect_state_is_valid((int)req->state)) {
    snprintf(msg, sizeof(msg), "state has an unknown value %d", (int)req->state);
    validate_add(&e, "state", msg);
  }
  if (req->source != 0 && !rect_source_is_valid((int)req->source)) {
    snprintf(msg, sizeof(msg), "source has an unknown value %d", (int)req->source);
    validate_add(&e, "source", msg);
  }
  validate_each(&e, validate_page_size(req->page_size, &lr->page_size, validate_slot(&e)));
  if (req->page_token[0] &&
      (before = svc_page_after_in(req->page_token, lr->scope, LIST_TOKEN_SCOPE)) <= 0)
    validate_add(&e, "page_token",
                 "page_token is malformed or was issued for another caller or other filters");
  if (clue_invalid_each(call, &e))
    return;
  if ((scope = scope_sql(call, &p, 1, 7, &none)) == NULL) {
    if (none)
      (void)rpc_reply(call, &empty.base);
    else
      clue_oom(call);
    return;
  }
  params[np++] = svc_i64(call, p.unit_id, 0);
  params[np++] = svc_i64(call, clue_now_ms(call), 0);
  params[np++] = clue_trimmed(call, req->host_unit);
  params[np++] = req->state ? rect_state_name((rect_state_t)req->state) : NULL;
  params[np++] = req->source ? rect_source_name((rect_source_t)req->source) : NULL;
  params[np++] = before ? svc_i64(call, before, 0) : NULL;
  params[np++] = svc_i64(call, p.user_id, 0);
  sql = rpc_call_printf(call, list_sql, scope,
                        req->overdue_only
                            ? " AND i.state <> 'VERIFIED' AND i.deadline < clue_ms_ts($2)"
                            : " AND $2::bigint IS NOT NULL",
                        lr->page_size + 1);
  if (sql == NULL || params[0] == NULL || params[1] == NULL || params[6] == NULL) {
    clue_oom(call);
    return;
  }
  svc_query(call, sql, np, params, reply_items, lr);
}

/* ---- GetLedgerStats --------------------------------------------------------------------- */

/* Pages of the ledger are a keyset on the host unit's name: the page token holds the last
 * name of a page (svc_page_token_key()) and the next page starts after it, so a line is never
 * listed twice or skipped while items are recorded. The token is bound to the caller and the
 * supervising_unit_id it was issued for; a token of another caller or filter is refused, and
 * none could show more than the caller sees anyway, since the scope decides every page. The
 * total is over every line the caller sees, in the page's own snapshot: the sum of the lines
 * of all the pages, and nothing the lines would not show. */
typedef struct stats_req {
  int32_t page_size;
  int64_t supervising_unit_id; /* the filter a next page token is bound to */
} stats_req_t;

/* A line's figures from columns 1-3 of row; cleared as docs/LEDGER.md defines it: every item
 * VERIFIED, and at least one item (a ledger with nothing recorded has nothing cleared). */
static void ledger_line(const db_result_t *r, int row, Clue__V1__HostUnitLedger *h) {
  h->found = svc_col_i64(r, row, 1);
  h->rectified = svc_col_i64(r, row, 2);
  h->overdue = svc_col_i64(r, row, 3);
  h->cleared = h->found > 0 && h->rectified == h->found;
}

static void reply_stats(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__GetLedgerStatsResponse resp = CLUE__V1__GET_LEDGER_STATS_RESPONSE__INIT;
  Clue__V1__HostUnitLedger *total = rpc_call_alloc(call, sizeof(*total));
  const stats_req_t *sr = arg;
  authz_principal_t p = clue_principal(call);
  int n = db_rows(r);
  bool more = false;

  resp.as_of_ms = clue_now_ms(call);
  resp.host_units = rpc_call_alloc(call, (size_t)(n ? n : 1) * sizeof(*resp.host_units));
  if (total == NULL || resp.host_units == NULL) {
    clue_oom(call);
    return;
  }
  clue__v1__host_unit_ledger__init(total);
  resp.total = total;
  /* The lines by name, at most page_size + 1 (one more: a next page), then the total, the one
   * row without a name. */
  for (int row = 0; row < n; row++) {
    Clue__V1__HostUnitLedger *h;

    if (db_value(r, row, 0) == NULL) {
      ledger_line(r, row, total);
      continue;
    }
    if (resp.n_host_units == (size_t)sr->page_size) {
      more = true;
      continue;
    }
    if ((h = rpc_call_alloc(call, sizeof(*h))) == NULL) {
      clue_oom(call);
      return;
    }
    clue__v1__host_unit_ledger__init(h);
    if ((h->host_unit = svc_col_str(call, r, row, 0)) == NULL) {
      clue_oom(call);
      return;
    }
    ledger_line(r, row, h);
    resp.host_units[resp.n_host_units++] = h;
  }
  if (more) {
    int64_t scope[2] = {p.user_id, sr->supervising_unit_id};
    const char *last = resp.host_units[resp.n_host_units - 1]->host_unit;

    if ((resp.next_page_token = (char *)svc_page_token_key(call, scope, 2, last)) == NULL) {
      clue_oom(call);
      return;
    }
  }
  (void)rpc_reply(call, &resp.base);
}

static void get_ledger_stats(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__GetLedgerStatsRequest *req = (const void *)m;
  Clue__V1__GetLedgerStatsResponse empty = CLUE__V1__GET_LEDGER_STATS_RESPONSE__INIT;
  Clue__V1__HostUnitLedger none_total = CLUE__V1__HOST_UNIT_LEDGER__INIT;
  authz_principal_t p = clue_principal(call);
  int64_t scope_of_token[2] = {p.user_id, req->supervising_unit_id};
  const char *scope, *params[5], *sql, *after = NULL;
  validate_errors_t e;
  stats_req_t *sr;
  bool none;
  int rc;

  if ((sr = rpc_call_alloc(call, sizeof(*sr))) == NULL) {
    clue_oom(call);
    return;
  }
  sr->supervising_unit_id = req->supervising_unit_id;
  /* Every violation of the request, one per field. */
  validate_errors_init(&e);
  if (req->supervising_unit_id < 0)
    validate_add(&e, "supervising_unit_id", "supervising_unit_id must not be negative");
  validate_each(&e, validate_page_size_of(req->page_size, RECT_STATS_PAGE_MAX, RECT_STATS_PAGE_MAX,
                                          &sr->page_size, validate_slot(&e)));
  if (req->page_token[0] &&
      (rc = svc_page_after_key(call, req->page_token, scope_of_token, 2, &after)) != 0) {
    if (rc == -ENOMEM) {
      clue_oom(call);
      return;
    }
    validate_add(&e, "page_token",
                 "page_token is malformed or was issued for another caller or supervising_unit_id");
  }
  if (clue_invalid_each(call, &e))
    return;
  /* Over the items the caller sees: one it is recused from would show in its host unit's count. */
  if ((scope = scope_sql(call, &p, 1, 4, &none)) == NULL) {
    if (none) {
      empty.as_of_ms = clue_now_ms(call);
      empty.total = &none_total;
      (void)rpc_reply(call, &empty.base);
    } else {
      clue_oom(call);
    }
    return;
  }
  params[0] = svc_i64(call, p.unit_id, 0);
  params[1] = svc_i64(call, clue_now_ms(call), 0);
  params[2] = svc_i64(call, req->supervising_unit_id, 1);
  params[3] = svc_i64(call, p.user_id, 0);
  params[4] = after;
  /* One statement, one snapshot: the page and the total agree. */
  sql = rpc_call_printf(
      call,
      "WITH lines AS (SELECT i.host_unit, count(*) AS found,"
      " count(*) FILTER (WHERE i.state = 'VERIFIED') AS rectified,"
      " count(*) FILTER (WHERE i.state <> 'VERIFIED' AND i.deadline < clue_ms_ts($2)) AS overdue"
      " FROM rect_items i JOIN units u ON u.id = i.supervising_unit"
      " WHERE %s AND ($3::bigint IS NULL OR i.supervising_unit = $3)"
      " GROUP BY i.host_unit)"
      " SELECT * FROM (SELECT * FROM lines WHERE $5::text IS NULL OR host_unit > $5"
      " ORDER BY host_unit LIMIT %d) page"
      " UNION ALL SELECT NULL, coalesce(sum(found), 0)::bigint,"
      " coalesce(sum(rectified), 0)::bigint, coalesce(sum(overdue), 0)::bigint FROM lines"
      " ORDER BY 1",
      scope, sr->page_size + 1);
  if (sql == NULL || params[0] == NULL || params[1] == NULL || params[3] == NULL) {
    clue_oom(call);
    return;
  }
  svc_query(call, sql, 5, params, reply_stats, sr);
}

/* ---- CreateItem ------------------------------------------------------------------------- */

/* The same moment (UTC) years calendar years after now_ms: from 29 February, 1 March. */
static int64_t years_ahead_ms(int64_t now_ms, int years) {
  time_t t = (time_t)(now_ms / 1000);
  struct tm tm;

  if (gmtime_r(&t, &tm) == NULL)
    return now_ms;
  tm.tm_year += years;
  return (int64_t)timegm(&tm) * 1000 + now_ms % 1000;
}

/* Every violation of the request, one per field (validate_errors_t): a field's first. Only
 * what the request says of itself: the deadline's place in time is deadline_ahead()'s. */
static int validate_create(const Clue__V1__CreateItemRequest *req, validate_errors_t *e) {
  int source = (int)req->source;

  validate_errors_init(e);
  validate_each(e, validate_name("host_unit", req->host_unit, true, validate_slot(e)));
  validate_each(e, validate_text("description", req->description, RECT_TEXT_MAX,
                                 VALIDATE_REQUIRED | VALIDATE_MULTILINE, validate_slot(e)));
  validate_each(e, validate_name("category", req->category, true, validate_slot(e)));
  validate_each(e, validate_enum("source", source, RECT_SOURCE_CLUE, RECT_SOURCE_SUPERVISION,
                                 validate_slot(e)));
  if (req->source_clue_id < 0)
    validate_add(e, "source_clue_id", "source_clue_id must not be negative");
  if (req->source_case_id < 0)
    validate_add(e, "source_case_id", "source_case_id must not be negative");
  if (source == RECT_SOURCE_CLUE && req->source_clue_id == 0)
    validate_add(e, "source_clue_id", "source_clue_id is required with source CLUE");
  if (source == RECT_SOURCE_CASE && req->source_case_id == 0)
    validate_add(e, "source_case_id", "source_case_id is required with source CASE");
  /* Of a source that is itself refused, its id's presence says nothing more. */
  if (source >= RECT_SOURCE_CLUE && source <= RECT_SOURCE_SUPERVISION) {
    if (source != RECT_SOURCE_CLUE && req->source_clue_id != 0)
      validate_add(e, "source_clue_id", "source_clue_id is set only with source CLUE");
    if (source != RECT_SOURCE_CASE && req->source_case_id != 0)
      validate_add(e, "source_case_id", "source_case_id is set only with source CASE");
  }
  if (req->deadline_ms == 0)
    validate_add(e, "deadline_ms", "deadline_ms is required");
  else
    validate_each(e, validate_time_ms("deadline_ms", req->deadline_ms, validate_slot(e)));
  validate_each(e, validate_request_id(req->request_id, validate_slot(e)));
  return validate_errors_result(e);
}

/* A new item's deadline against the clock: in the future, at most 5 years ahead. Only a new
 * request is held to it: a retry answers with its item however late it comes. */
static int deadline_ahead(const Clue__V1__CreateItemRequest *req, int64_t now,
                          validate_errors_t *e) {
  validate_errors_init(e);
  if (req->deadline_ms <= now)
    validate_add(e, "deadline_ms", "deadline_ms must be in the future");
  else if (req->deadline_ms > years_ahead_ms(now, RECT_DEADLINE_MAX_YEARS))
    validate_add(e, "deadline_ms", "deadline_ms is more than 5 years ahead");
  return validate_errors_result(e);
}

typedef struct create_req {
  const Clue__V1__CreateItemRequest *req;
  const char *request_id;
  const char *request_sha256; /* request_sha256() */
  const char *host_unit;
  const char *description;
  const char *category;
} create_req_t;

/* Columns of the create facts query: the source clue's facts, the source case, whether the
 * host unit is the caller's unit's, and this request_id's record. */
enum {
  CF_CLUE = 0,
  CF_CASE = CLUE_FACT_NCOLS,
  CF_CASE_LEAD,
  CF_CASE_IN,
  CF_HOST_OK,
  CF_REQ_METHOD,
};

/* clang-format off */
static const char create_facts_sql[] =
    SVC_DURABLE_IF(SVC_KEY_RECORDED("rect_requests", "$4", "$5"))
    "SELECT " CLUE_FACT_COLS("c", "ou", "$3", "$4") ", jc.id, jc.lead_unit, joint_case_has_unit(jc.id, $3),"
    " coalesce(me.host_units @> ARRAY[$6::text], false), coalesce(q.method, cq.method)"
    " FROM (SELECT 1) one"
    " LEFT JOIN clues c ON c.id = $1"
    " LEFT JOIN units ou ON ou.id = c.owner_unit"
    " LEFT JOIN joint_cases jc ON jc.id = $2"
    " LEFT JOIN units me ON me.id = $3"
    " LEFT JOIN rect_requests q ON q.user_id = $4 AND q.request_id = $5"
    " LEFT JOIN clue_requests cq ON cq.user_id = $4 AND cq.request_id = $5";

static const char create_sql[] =
    "SELECT " RECT_COLS("$2", "$1") " FROM rect_create($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) i"
    " JOIN units u ON u.id = i.supervising_unit";
/* clang-format on */

static void got_create_facts(rpc_call_t *call, const db_result_t *r, void *arg) {
  const create_req_t *cr = arg;
  const Clue__V1__CreateItemRequest *req = cr->req;
  authz_principal_t p = clue_principal(call);
  rect_source_facts_t src = {0};
  authz_result_t res;
  const char *params[12];

  if (db_rows(r) != 1) {
    clue_oom(call);
    return;
  }
  if (db_value(r, 0, CF_REQ_METHOD) == NULL) {
    validate_errors_t errs;

    if (deadline_ahead(req, clue_now_ms(call), &errs) != 0 && clue_invalid_each(call, &errs))
      return;
    src.source = (rect_source_t)req->source;
    switch (src.source) {
    case RECT_SOURCE_CLUE: {
      clue_row_t row;
      authz_result_t see;

      (void)clue_row_facts(r, 0, CF_CLUE, &row);
      src.exists = row.id != 0;
      see = authz_can_see_clue(&p, &row.facts);
      src.visible = src.exists && authz_ok(&see);
      src.owned_or_in = src.exists && row.facts.owner_unit_id == p.unit_id;
      break;
    }
    case RECT_SOURCE_CASE: {
      authz_case_t jc = {0};
      authz_result_t see;

      src.exists = db_value(r, 0, CF_CASE) != NULL;
      jc.lead_unit_id = svc_col_i64(r, 0, CF_CASE_LEAD);
      jc.principal_in_case = svc_col_bool(r, 0, CF_CASE_IN) != 0;
      see = authz_can_see_case(&p, &jc);
      src.visible = src.exists && authz_ok(&see);
      src.owned_or_in = src.exists && jc.principal_in_case;
      break;
    }
    default:
      src.exists = src.visible = true;
      src.host_unit_ok = svc_col_bool(r, 0, CF_HOST_OK) != 0;
      break;
    }
    res = rect_can_create(&p, &src);
    if (!authz_ok(&res)) {
      clue_refuse(call, &res);
      return;
    }
  }
  params[0] = svc_i64(call, p.user_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = cr->request_id;
  params[3] = svc_i64(call, clue_now_ms(call), 0);
  params[4] = cr->host_unit;
  params[5] = cr->description;
  params[6] = cr->category;
  params[7] = rect_source_name((rect_source_t)req->source);
  params[8] = svc_i64(call, req->source_clue_id, 1);
  params[9] = svc_i64(call, req->source_case_id, 1);
  params[10] = svc_i64(call, req->deadline_ms, 0);
  params[11] = cr->request_sha256;
  /* An item from a clue that changed owner meanwhile is refused so only while the caller
   * still sees the clue. */
  if (!svc_all_set(params, 8) || params[10] == NULL ||
      ((int)req->source == RECT_SOURCE_CLUE &&
       !clue_sight_on_refusal(call, req->source_clue_id, "source_clue_id: clue not found"))) {
    clue_oom(call);
    return;
  }
  svc_query(call, create_sql, 12, params, reply_item, NULL);
}

static void create_item(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__CreateItemRequest *req = (const void *)m;
  authz_principal_t p = clue_principal(call);
  authz_result_t res;
  validate_errors_t errs;
  rect_source_facts_t none = {
      .source = RECT_SOURCE_SUPERVISION, .exists = true, .visible = true, .host_unit_ok = true};
  create_req_t *cr;
  const char *params[6];

  if (validate_create(req, &errs) != 0 && clue_invalid_each(call, &errs))
    return;
  /* Who may record at all, before reading anything: a LEADER of a working unit. */
  res = rect_can_create(&p, &none);
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  if ((cr = rpc_call_alloc(call, sizeof(*cr))) == NULL) {
    clue_oom(call);
    return;
  }
  cr->req = req;
  cr->request_id = clue_request_key(call, req->request_id);
  cr->request_sha256 = request_sha256(call, m);
  cr->host_unit = clue_trimmed(call, req->host_unit);
  cr->description = clue_trimmed(call, req->description);
  cr->category = clue_trimmed(call, req->category);
  params[0] = svc_i64(call, req->source_clue_id, 1);
  params[1] = svc_i64(call, req->source_case_id, 1);
  params[2] = svc_i64(call, p.unit_id, 0);
  params[3] = svc_i64(call, p.user_id, 0);
  params[4] = cr->request_id;
  params[5] = cr->host_unit;
  if (cr->description == NULL || cr->category == NULL || cr->request_sha256 == NULL ||
      !svc_all_set(params + 2, 4)) {
    clue_oom(call);
    return;
  }
  svc_query(call, create_facts_sql, 6, params, got_create_facts, cr);
}

/* ---- RecordPlan, Submit, Verify, Reopen ------------------------------------------------- */

typedef struct move_req {
  const char *method; /* the RPC's name, also the key of its idempotency records */
  rect_state_t target;
  int64_t item_id;
  int64_t expected_version;
  const char *request_id;
  const char *request_sha256; /* request_sha256() */
  const char *text;  /* plan, evidence, comment or reason; NULL when none */
  const char *notes; /* bigint[] literal */
  size_t n_notes;
} move_req_t;

/* clang-format off */
/* The facts of a move: no text of the item, which the decision does not need (nor may a read
 * of a hidden item read it). */
#define MOVE_FACTS_COLS                                                                            \
  SVC_DURABLE_IF(SVC_KEY_RECORDED("rect_requests", "$3", "$4")) "SELECT " RECT_COLS_SEEN("$2", "$3", "false") ", coalesce(q.method, cq.method)"
#define MOVE_FACTS_FROM                                                                            \
    " FROM (SELECT 1) one"                                                                         \
    " LEFT JOIN rect_items i ON i.id = $1"                                                         \
    " LEFT JOIN units u ON u.id = i.supervising_unit"                                              \
    " LEFT JOIN rect_requests q ON q.user_id = $3 AND q.request_id = $4"                           \
    " LEFT JOIN clue_requests cq ON cq.user_id = $3 AND cq.request_id = $4"
static const char move_facts_sql[] = MOVE_FACTS_COLS MOVE_FACTS_FROM;
/* With note_ids ($5), one more column: the first of them that is no note of a clue the caller
 * sees (%s: the clue scope's condition on c, the caller's unit in $2 and user in $3); for a
 * request_id recorded already, which is not decided on (retry_sql), none is looked at. */
static const char move_notes_facts_sql[] =
    MOVE_FACTS_COLS
    ", CASE WHEN q.method IS NULL AND cq.method IS NULL THEN"
    " (SELECT x.id FROM unnest($5::bigint[]) WITH ORDINALITY x(id, k)"
    "   WHERE NOT EXISTS (SELECT 1 FROM notes n JOIN clues c ON c.id = n.clue_id"
    "                      WHERE n.id = x.id AND %s)"
    "   ORDER BY x.k LIMIT 1) END"
    MOVE_FACTS_FROM;

/* The write of a first call (its request_id not recorded), in a transaction whose first
 * statement takes the request key's lock (the one rect_request_begin() takes, first as every
 * writer takes it) and whose second takes the clues of the cited notes and the item's source
 * clue FOR SHARE, as note_add() takes its clue:
 * a handover, a recusal, an assignment ended, the clue taken out of its joint case or a
 * review decided (each holds the clue until it commits) is then committed and seen, or waits
 * for the move. The third is the move; it reads, in its own snapshot taken once those locks
 * are held, the first cited note of a clue the caller does not see (%s: the clue scope's
 * condition on c, the caller's user in $1 and unit in $2), which rect_move() refuses as the
 * facts read would have (0050), and rect_request_begin() looks for a recusal of the caller
 * from the source clue there too. */
static const char move_lock_sql[] = CLUE_REQUEST_KEY_LOCK_SQL;
static const char move_clues_lock_sql[] =
    "SELECT 1 FROM clues c WHERE c.id IN (SELECT n.clue_id FROM notes n WHERE n.id = ANY ($2::bigint[])"
    " UNION ALL SELECT i.source_clue FROM rect_items i WHERE i.id = $1) ORDER BY c.id FOR SHARE";
static const char move_sql[] =
    "SELECT " RECT_COLS("$2", "$1") " FROM rect_move($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL) i"
    " JOIN units u ON u.id = i.supervising_unit";
static const char move_notes_sql[] =
    "WITH s AS MATERIALIZED (SELECT (SELECT x.id FROM unnest($11::bigint[]) WITH ORDINALITY x(id, k)"
    "   WHERE NOT EXISTS (SELECT 1 FROM notes n JOIN clues c ON c.id = n.clue_id"
    "                      WHERE n.id = x.id AND %s)"
    "   ORDER BY x.k LIMIT 1) AS unseen)"
    " SELECT " RECT_COLS("$2", "$1") " FROM s CROSS JOIN LATERAL"
    " rect_move($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, s.unseen) i"
    " JOIN units u ON u.id = i.supervising_unit";
/* A move whose request_id is recorded already: the first call was decided, this one is not,
 * and so it runs rect_request_begin() alone, the check rect_move() makes before anything
 * else. Under the key's lock it answers a retry with the item of the first call, and refuses
 * a key that named another call or another request (CLARG). No clue is locked, and no cited
 * note looked at (nor by the facts read): such a key, sent again with another item or with
 * note ids of other units' clues, can neither make the database wait for a clue the caller
 * does not see nor hold one, and its answer is the same whoever writes those clues. Request
 * records are never deleted, so the key is still recorded here; were it not, the function
 * would answer no item (NULL, no row: NOT_FOUND), and nothing is written either way. */
static const char retry_sql[] =
    "SELECT " RECT_COLS("$2", "$1") " FROM rect_request_begin($1, $3, $4, $5, $6) i"
    " JOIN units u ON u.id = i.supervising_unit";
/* clang-format on */

/* A move whose request_id is recorded already (retry_sql). */
static void send_retry(rpc_call_t *call, const move_req_t *mr) {
  authz_principal_t p = clue_principal(call);
  const char *params[6];

  params[0] = svc_i64(call, p.user_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = mr->request_id;
  params[3] = mr->method;
  params[4] = svc_i64(call, mr->item_id, 0);
  params[5] = mr->request_sha256;
  if (!svc_all_set(params, 6)) {
    clue_oom(call);
    return;
  }
  svc_query(call, retry_sql, 6, params, reply_item, NULL);
}

static void got_move_facts(rpc_call_t *call, const db_result_t *r, void *arg) {
  const move_req_t *mr = arg;
  authz_principal_t p = clue_principal(call);
  const rect_move_t *move = NULL;
  rect_item_facts_t facts;
  authz_result_t res;
  rect_state_t from;
  int64_t version;
  const char **params, **lock_params, **clues_params, *sql = move_sql;
  db_stmt_t *stmts;

  if (db_rows(r) != 1) {
    clue_oom(call);
    return;
  }
  if (db_value(r, 0, RC_NCOLS) != NULL) {
    send_retry(call, mr);
    return;
  }
  if ((params = rpc_call_alloc(call, 12 * sizeof(*params))) == NULL) {
    clue_oom(call);
    return;
  }
  facts = item_facts(r, 0);
  from = facts.state;
  version = svc_col_i64(r, 0, RC_VERSION);
  if (db_value(r, 0, RC_ID) == NULL) {
    item_not_found(call, "no such item");
    return;
  }
  res = rect_can_move(&p, &facts, mr->target, &move);
  /* Past visibility and permission a stale version comes first, as for clues: the caller
   * learns the item changed before being told why the move no longer fits. */
  if ((authz_ok(&res) || res.decision == AUTHZ_FAILED_PRECONDITION) &&
      version != mr->expected_version) {
    log_info("call %s: %s refused (10): item %lld at version %lld, not %lld", rpc_call_id(call),
             mr->method, (long long)svc_col_i64(r, 0, RC_ID), (long long)version,
             (long long)mr->expected_version);
    svc_version_conflict(call, version, mr->expected_version);
    rpc_fail(
        call, GRPC_ABORTED, "rectification item %lld is at version %lld, not %lld; read it again",
        (long long)svc_col_i64(r, 0, RC_ID), (long long)version, (long long)mr->expected_version);
    return;
  }
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  /* A note the caller does not see is refused as one that does not exist (the database's
   * message for a note of another clue): naming which ids are notes of a clue the caller no
   * longer sees (one handed over since, say) would tell who added what there. */
  if (mr->n_notes > 0 && db_value(r, 0, RC_NCOLS + 1) != NULL) {
    const char *msg =
        rpc_call_printf(call, "note_ids: note %lld is not a note of the item's source clue or case",
                        (long long)svc_col_i64(r, 0, RC_NCOLS + 1));

    if (msg == NULL) {
      clue_oom(call);
      return;
    }
    log_info("call %s: %s refused (3): %s", rpc_call_id(call), mr->method, msg);
    rpc_detail_field(call, "note_ids", msg);
    rpc_fail(call, GRPC_INVALID_ARGUMENT, "%s", msg);
    return;
  }
  params[0] = svc_i64(call, p.user_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = mr->request_id;
  params[3] = mr->method;
  params[4] = svc_i64(call, clue_now_ms(call), 0);
  params[5] = svc_i64(call, mr->item_id, 0);
  params[6] = svc_i64(call, mr->expected_version, 0);
  params[7] = rect_state_name(from);
  params[8] = rect_state_name(mr->target);
  params[9] = mr->notes;
  if (!svc_all_set(params, 10)) {
    clue_oom(call);
    return;
  }
  params[10] = params[9];
  params[9] = mr->text; /* NULL: an optional comment left out */
  params[11] = mr->request_sha256;
  if (mr->n_notes > 0) {
    char cond[CLUE_SCOPE_SQL_MAX];

    if (clue_scope_sql(authz_clue_scope(&p), "c", 2, 1, cond, sizeof(cond)) != 0)
      snprintf(cond, sizeof(cond), "false");
    sql = rpc_call_printf(call, move_notes_sql, cond);
  }
  if (sql == NULL || (stmts = rpc_call_alloc(call, 3 * sizeof(*stmts))) == NULL ||
      (lock_params = rpc_call_alloc(call, 2 * sizeof(*lock_params))) == NULL ||
      (clues_params = rpc_call_alloc(call, 2 * sizeof(*clues_params))) == NULL) {
    clue_oom(call);
    return;
  }
  lock_params[0] = params[0];
  lock_params[1] = params[2];
  clues_params[0] = params[5];
  clues_params[1] = params[10];
  stmts[0] = (db_stmt_t){.sql = move_lock_sql, .nparams = 2, .values = lock_params};
  stmts[1] = (db_stmt_t){.sql = move_clues_lock_sql, .nparams = 2, .values = clues_params};
  stmts[2] = (db_stmt_t){.sql = sql, .nparams = 12, .values = params};
  svc_txn(call, stmts, 3, reply_item, NULL);
}

/* The shared start of the four moves: validate, then read the item. */
static void start_move(rpc_call_t *call, const ProtobufCMessage *m, const char *method,
                       rect_state_t target, int64_t item_id, int64_t expected_version,
                       const char *request_id, const char *text_field, const char *text,
                       const int64_t *note_ids, size_t n_note_ids) {
  unsigned required = rect_fsm_required(target);
  bool text_required = required != 0;
  bool long_text = (required & (RECT_FIELD_PLAN | RECT_FIELD_EVIDENCE)) != 0;
  validate_errors_t e;
  move_req_t *mr;
  const char *params[5], *sql = move_facts_sql;

  /* Every violation, one per field, in the order of the requests' fields. */
  validate_errors_init(&e);
  validate_each(&e, validate_id("item_id", item_id, validate_slot(&e)));
  validate_each(&e, validate_id("expected_version", expected_version, validate_slot(&e)));
  if (long_text)
    validate_each(&e, validate_text(text_field, text, RECT_TEXT_MAX,
                                    VALIDATE_REQUIRED | VALIDATE_MULTILINE, validate_slot(&e)));
  else
    validate_each(&e, validate_reason(text_field, text, text_required, validate_slot(&e)));
  if (validate_each(&e, validate_id_list("note_ids", note_ids, n_note_ids, RECT_MAX_NOTES,
                                         validate_slot(&e))) == 0 &&
      !long_text && n_note_ids > 0)
    validate_add(&e, "note_ids", "note_ids go with a plan or evidence only");
  validate_each(&e, validate_request_id(request_id, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  if ((mr = rpc_call_alloc(call, sizeof(*mr))) == NULL) {
    clue_oom(call);
    return;
  }
  mr->method = method;
  mr->target = target;
  mr->item_id = item_id;
  mr->expected_version = expected_version;
  mr->request_id = clue_request_key(call, request_id);
  mr->request_sha256 = request_sha256(call, m);
  mr->text = clue_trimmed(call, text);
  mr->notes = svc_id_array(call, note_ids, n_note_ids);
  mr->n_notes = n_note_ids;
  params[0] = svc_i64(call, item_id, 0);
  params[1] = svc_i64(call, clue_principal(call).unit_id, 0);
  params[2] = svc_i64(call, clue_principal(call).user_id, 0);
  params[3] = mr->request_id;
  params[4] = mr->notes;
  if (n_note_ids > 0) {
    authz_principal_t p = clue_principal(call);
    char cond[CLUE_SCOPE_SQL_MAX];

    if (clue_scope_sql(authz_clue_scope(&p), "c", 2, 3, cond, sizeof(cond)) != 0)
      snprintf(cond, sizeof(cond), "false");
    sql = rpc_call_printf(call, move_notes_facts_sql, cond);
  }
  if (mr->notes == NULL || sql == NULL || mr->request_sha256 == NULL ||
      (text_required && mr->text == NULL) || !svc_all_set(params, 4)) {
    clue_oom(call);
    return;
  }
  svc_query(call, sql, n_note_ids > 0 ? 5 : 4, params, got_move_facts, mr);
}

static void record_plan(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__RecordPlanRequest *req = (const void *)m;
  start_move(call, m, "RecordPlan", RECT_STATE_PLAN_RECORDED, req->item_id, req->expected_version,
             req->request_id, "plan", req->plan, req->note_ids, req->n_note_ids);
}

static void submit(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__SubmitRequest *req = (const void *)m;
  start_move(call, m, "Submit", RECT_STATE_SUBMITTED, req->item_id, req->expected_version,
             req->request_id, "evidence", req->evidence, req->note_ids, req->n_note_ids);
}

static void verify(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__VerifyRequest *req = (const void *)m;
  start_move(call, m, "Verify", RECT_STATE_VERIFIED, req->item_id, req->expected_version,
             req->request_id, "comment", req->comment, NULL, 0);
}

static void reopen(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ReopenRequest *req = (const void *)m;
  start_move(call, m, "Reopen", RECT_STATE_REOPENED, req->item_id, req->expected_version,
             req->request_id, "reason", req->reason, NULL, 0);
}

/* ---- method table ----------------------------------------------------------------------- */

#define RECT_METHOD(name, fn, in, out) SVC_CLUE_METHOD("RectificationService", name, fn, in, out)

const rpc_method_t rect_methods[] = {
    RECT_METHOD("CreateItem", create_item, create_item_request, rectification_item),
    RECT_METHOD("GetItem", get_item, get_item_request, rectification_item),
    RECT_METHOD("ListItems", list_items, list_items_request, list_items_response),
    RECT_METHOD("RecordPlan", record_plan, record_plan_request, rectification_item),
    RECT_METHOD("Submit", submit, submit_request, rectification_item),
    RECT_METHOD("Verify", verify, verify_request, rectification_item),
    RECT_METHOD("Reopen", reopen, reopen_request, rectification_item),
    SVC_HEAVY_METHOD("RectificationService", "GetLedgerStats", get_ledger_stats,
                     get_ledger_stats_request, get_ledger_stats_response),
};
const size_t rect_nmethods = sizeof(rect_methods) / sizeof(rect_methods[0]);
