/* clue.v1.StatsService.GetStatistics (DESIGN.md §6).
 *
 * decode -> validate -> read the candidate units -> decide the units covered
 * (domain/stats_scope.h) -> one statement computes every figure (clue_stats(), latest in
 * 0048_aggregates_follow_recusals.sql, where each figure is defined) -> encode. The figures
 * come from the audit trail, the authoritative record of every transition, so they agree with
 * GetHistory. A clue the caller is recused from counts in none of them (in SQL, one filter
 * over the caller's few recusals).
 *
 * The case rows come in pages, a keyset on the case id (the rows' order): cases never end, and
 * a scope's every case in one answer grew past what a client accepts. The unit figures are
 * whole in every answer: a page is a whole answer with fewer cases, not a part of one. */

#include "service/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clue/v1/stats.pb-c.h"
#include "domain/stats_scope.h"
#include "service/clue_row.h"
#include "service/replica.h"
#include "service/svc_util.h"

/* At most this many unit ids in one request's filter. */
#define STATS_UNIT_IDS_MAX 1000
/* Times up to the end of the year 9999 (PostgreSQL's timestamps reach far beyond). */
/* Case rows in one answer: the default and the most. 1,000 titles of 200 characters take
 * under 1 MiB. */
#define STATS_CASE_PAGE_MAX 1000

/* ---- the units covered ------------------------------------------------------------------ */

/* Every working unit without a filter (the scope is decided here), else the units named. */

/* The scope of a case page token: the caller, as a negative number, so that the token is
 * neither another caller's nor another list's (ListJointCases and ListClues use no scope,
 * GetHistory a clue's id). */
static int64_t stats_token_scope(rpc_call_t *call) {
  return -rpc_call_principal(call)->user_id;
}
static const char units_sql[] =
    "SELECT id, kind, coalesce(liaison_room_id, 0) FROM units"
    " WHERE CASE WHEN $1::bigint[] IS NULL THEN kind <> 'ADMIN' ELSE id = ANY ($1::bigint[]) END"
    " ORDER BY id";

/* Columns of clue_stats(), in its order. */
enum {
  SC_KIND,
  SC_ID,
  SC_CODE,
  SC_NAME,
  SC_RECEIVED,
  SC_CHECKS,
  SC_FILED,
  SC_CLOSED,
  SC_CLOSED_TALK,
  SC_CLOSED_NO_ACTION,
  SC_CLOSED_SHELVED,
  SC_CLOSED_FINDING,
  SC_CLOSED_SANCTION,
  SC_TRANSFERRED,
  SC_OVERDUE,
  SC_MEDIAN_ACCEPTED,
  SC_MEDIAN_CHECK,
  SC_MEDIAN_FILED,
  SC_ZERO,
  SC_CLUES,
};

static const char stats_sql[] =
    "SELECT kind, id, code, name, received, checks_started, filed, closed, closed_talk,"
    " closed_no_action, closed_shelved, closed_finding, closed_sanction, transferred, overdue_now,"
    " median_accepted, median_check, median_filed, zero_disposal, clues"
    " FROM clue_stats($1, $2, $3, $4::bigint[], $5, $6, $7, $8)";

/* The breakdown of closed clues, in the order it is listed: the three disposals of a clue
 * closed from ACCEPTED, then FINDING (closed after a preliminary check) and SANCTION (closed
 * after filing). */
static const struct {
  int col;
  const char *name;
} disposal_cols[] = {
    {SC_CLOSED_TALK, "TALK_OR_LETTER_INQUIRY"},
    {SC_CLOSED_NO_ACTION, "NO_FURTHER_ACTION"},
    {SC_CLOSED_SHELVED, "SHELVED"},
    {SC_CLOSED_FINDING, "FINDING"},
    {SC_CLOSED_SANCTION, "SANCTION"},
};
#define NDISPOSALS (sizeof(disposal_cols) / sizeof(disposal_cols[0]))

static double col_double(const db_result_t *r, int row, int col) {
  const char *v = db_value(r, row, col);
  return v ? strtod(v, NULL) : 0;
}

/* ---- reply ------------------------------------------------------------------------------ */

static int unit_stats(rpc_call_t *call, const db_result_t *r, int row, Clue__V1__UnitStats **out) {
  Clue__V1__UnitStats *u = rpc_call_alloc(call, sizeof(*u));
  Clue__V1__DisposalCount *d;

  if (u == NULL)
    return -1;
  clue__v1__unit_stats__init(u);
  u->unit_id = svc_col_i64(r, row, SC_ID);
  u->unit_code = svc_col_str(call, r, row, SC_CODE);
  u->unit_name = svc_col_str(call, r, row, SC_NAME);
  u->received = svc_col_i64(r, row, SC_RECEIVED);
  u->preliminary_checks_started = svc_col_i64(r, row, SC_CHECKS);
  u->filed = svc_col_i64(r, row, SC_FILED);
  u->closed = svc_col_i64(r, row, SC_CLOSED);
  u->transferred_to_judicial = svc_col_i64(r, row, SC_TRANSFERRED);
  u->overdue_now = svc_col_i64(r, row, SC_OVERDUE);
  u->median_days_accepted = col_double(r, row, SC_MEDIAN_ACCEPTED);
  u->median_days_preliminary_check = col_double(r, row, SC_MEDIAN_CHECK);
  u->median_days_filed = col_double(r, row, SC_MEDIAN_FILED);
  if (u->unit_code == NULL || u->unit_name == NULL)
    return -1;
  u->closed_by_disposal = rpc_call_alloc(call, NDISPOSALS * sizeof(*u->closed_by_disposal));
  d = rpc_call_alloc(call, NDISPOSALS * sizeof(*d));
  if (u->closed_by_disposal == NULL || d == NULL)
    return -1;
  /* Only the kinds that occurred, in a fixed order; a missing kind counts 0. */
  for (size_t i = 0; i < NDISPOSALS; i++) {
    int64_t n = svc_col_i64(r, row, disposal_cols[i].col);
    if (n == 0)
      continue;
    clue__v1__disposal_count__init(&d[i]);
    d[i].disposal = (char *)disposal_cols[i].name;
    d[i].count = n;
    u->closed_by_disposal[u->n_closed_by_disposal++] = &d[i];
  }
  *out = u;
  return 0;
}

static int case_stats(rpc_call_t *call, const db_result_t *r, int row, Clue__V1__CaseStats **out) {
  Clue__V1__CaseStats *c = rpc_call_alloc(call, sizeof(*c));

  if (c == NULL)
    return -1;
  clue__v1__case_stats__init(c);
  c->case_id = svc_col_i64(r, row, SC_ID);
  /* An ADMIN counts cases but reads none (DESIGN.md §4: no clue; GetJointCase answers it
   * NOT_FOUND and the case.create event's details are withheld): no title either. */
  c->title = clue_principal(call).role == CLUE_ROLE_ADMIN ? (char *)protobuf_c_empty_string
                                                          : svc_col_str(call, r, row, SC_NAME);
  c->clues = svc_col_i64(r, row, SC_CLUES);
  c->closed = svc_col_i64(r, row, SC_CLOSED);
  c->transferred_to_judicial = svc_col_i64(r, row, SC_TRANSFERRED);
  c->overdue_now = svc_col_i64(r, row, SC_OVERDUE);
  if (c->title == NULL)
    return -1;
  *out = c;
  return 0;
}

static int zero_unit(rpc_call_t *call, const Clue__V1__UnitStats *u,
                     Clue__V1__ZeroDisposalUnit **out) {
  Clue__V1__ZeroDisposalUnit *z = rpc_call_alloc(call, sizeof(*z));

  if (z == NULL)
    return -1;
  clue__v1__zero_disposal_unit__init(z);
  z->unit_id = u->unit_id;
  z->unit_code = u->unit_code;
  z->unit_name = u->unit_name;
  *out = z;
  return 0;
}

typedef struct stats_ctx {
  const Clue__V1__GetStatisticsRequest *req;
  Clue__V1__ReadFreshness *fresh; /* where the rows come from (service/replica.h) */
  int32_t case_limit;             /* case rows to send: 0 with omit_cases */
  int64_t case_after;             /* the page follows this case id; 0: the first page */
} stats_ctx_t;

static void reply_stats(rpc_call_t *call, const db_result_t *r, void *arg) {
  const stats_ctx_t *sc = arg;
  Clue__V1__GetStatisticsResponse resp = CLUE__V1__GET_STATISTICS_RESPONSE__INIT;
  size_t n = (size_t)db_rows(r), cap = n ? n : 1;
  bool more = false;

  resp.freshness = sc->fresh;

  resp.units = rpc_call_alloc(call, cap * sizeof(*resp.units));
  resp.cases = rpc_call_alloc(call, cap * sizeof(*resp.cases));
  resp.zero_disposal_units = rpc_call_alloc(call, cap * sizeof(*resp.zero_disposal_units));
  if (resp.units == NULL || resp.cases == NULL || resp.zero_disposal_units == NULL) {
    clue_oom(call);
    return;
  }
  for (int i = 0; i < (int)n; i++) {
    const char *kind = db_value(r, i, SC_KIND);
    int rc;

    if (kind != NULL && strcmp(kind, "unit") == 0) {
      Clue__V1__UnitStats *u;
      rc = unit_stats(call, r, i, &u);
      if (rc == 0) {
        resp.units[resp.n_units++] = u;
        if (svc_col_bool(r, i, SC_ZERO))
          rc = zero_unit(call, u, &resp.zero_disposal_units[resp.n_zero_disposal_units++]);
      }
    } else if (resp.n_cases == (size_t)sc->case_limit) {
      /* The one case past the page, asked for to know that more follow (none is asked for
       * with omit_cases). */
      more = resp.n_cases > 0;
      rc = 0;
    } else {
      rc = case_stats(call, r, i, &resp.cases[resp.n_cases]);
      resp.n_cases += rc == 0;
    }
    if (rc != 0) {
      clue_oom(call);
      return;
    }
  }
  if (more && (resp.next_case_page_token = (char *)svc_page_token_of(
                   call, stats_token_scope(call), resp.cases[resp.n_cases - 1]->case_id)) == NULL) {
    clue_oom(call);
    return;
  }
  (void)rpc_reply(call, &resp.base);
}

/* ---- the units covered ------------------------------------------------------------------ */

static void unit_at(const db_result_t *r, int row, stats_unit_t *u) {
  u->id = svc_col_i64(r, row, 0);
  u->kind = (clue_unit_kind_t)clue_unit_kind_of(db_value(r, row, 1));
  u->liaison_room_id = svc_col_i64(r, row, 2);
}

/* The facts of unit id among the rows (sorted by id), kind UNSPECIFIED if it is not there. */
static stats_unit_t find_unit(const db_result_t *r, int64_t id) {
  stats_unit_t u = {.id = id};
  int lo = 0, hi = db_rows(r);

  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    int64_t v = svc_col_i64(r, mid, 0);
    if (v == id) {
      unit_at(r, mid, &u);
      break;
    }
    if (v < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return u;
}

static void got_units(rpc_call_t *call, const db_result_t *r, void *arg) {
  stats_ctx_t *sc = arg;
  const Clue__V1__GetStatisticsRequest *req = sc->req;
  Clue__V1__GetStatisticsResponse empty = CLUE__V1__GET_STATISTICS_RESPONSE__INIT;
  authz_principal_t p = clue_principal(call);
  size_t cap = req->n_unit_ids > 0 ? req->n_unit_ids : (size_t)db_rows(r), n = 0;
  int64_t *ids = rpc_call_alloc(call, (cap ? cap : 1) * sizeof(*ids));
  const char *params[8];

  if (ids == NULL) {
    clue_oom(call);
    return;
  }
  if (req->n_unit_ids > 0) {
    for (size_t i = 0; i < req->n_unit_ids; i++) {
      stats_unit_t u = find_unit(r, req->unit_ids[i]);
      authz_result_t res = stats_can_ask(&p, req->unit_ids[i], &u);
      bool dup = false;

      if (!authz_ok(&res)) {
        clue_refuse(call, &res);
        return;
      }
      for (size_t j = 0; j < n && !dup; j++)
        dup = ids[j] == u.id;
      if (!dup)
        ids[n++] = u.id;
    }
  } else {
    for (int i = 0; i < db_rows(r); i++) {
      stats_unit_t u;
      unit_at(r, i, &u);
      if (stats_in_scope(&p, &u))
        ids[n++] = u.id;
    }
  }
  if (n == 0) {
    empty.freshness = sc->fresh;
    (void)rpc_reply(call, &empty.base);
    return;
  }
  params[0] = svc_i64(call, req->from_ms, 0);
  params[1] = svc_i64(call, req->to_ms, 0);
  params[2] = svc_i64(call, clue_now_ms(call), 0);
  params[3] = svc_id_array(call, ids, n);
  params[4] = stats_cases_narrowed(&p) ? svc_i64(call, p.unit_id, 0) : NULL;
  /* Every figure, a unit's and a case's, leaves out the clues the caller is recused from: for
   * the caller they do not exist (docs/COOPERATION.md). NULL: count every clue. */
  params[5] = stats_leave_out_recusals(&p) ? svc_i64(call, p.user_id, 0) : NULL;
  params[6] = svc_i64(call, sc->case_after, 0);
  /* One case row more than the page holds tells that more follow. */
  params[7] = svc_i64(call, sc->case_limit ? sc->case_limit + 1 : 0, 0);
  if (params[0] == NULL || params[1] == NULL || params[2] == NULL || params[3] == NULL ||
      (stats_cases_narrowed(&p) && params[4] == NULL) ||
      (stats_leave_out_recusals(&p) && params[5] == NULL) || params[6] == NULL ||
      params[7] == NULL) {
    clue_oom(call);
    return;
  }
  svc_read(call, stats_sql, 8, params, reply_stats, sc);
}

/* ---- GetStatistics ---------------------------------------------------------------------- */

/* Every violation of the request, one per field (validate_errors_t); the case rows to send
 * into sc->case_limit, the case id a page token names into sc->case_after. */
static int validate_stats(rpc_call_t *call, const Clue__V1__GetStatisticsRequest *req,
                          stats_ctx_t *sc, validate_errors_t *e) {
  int from_bad, to_bad;

  validate_errors_init(e);
  from_bad = validate_each(e, validate_id("from_ms", req->from_ms, validate_slot(e)));
  to_bad = validate_each(e, validate_id("to_ms", req->to_ms, validate_slot(e)));
  if (to_bad == 0)
    to_bad = validate_each(e, validate_time_ms("to_ms", req->to_ms, validate_slot(e)));
  /* The range of two bounds that are themselves refused says nothing more. */
  if (from_bad == 0 && to_bad == 0 && req->from_ms >= req->to_ms)
    validate_add(e, "from_ms", "from_ms must be before to_ms");
  if (req->n_unit_ids > STATS_UNIT_IDS_MAX) {
    char msg[VALIDATE_MESSAGE_MAX];

    snprintf(msg, sizeof(msg), "unit_ids has more than %d entries", STATS_UNIT_IDS_MAX);
    validate_add(e, "unit_ids", msg);
  }
  for (size_t i = 0; i < req->n_unit_ids; i++)
    if (validate_each(e, validate_id("unit_ids", req->unit_ids[i], validate_slot(e))) != 0)
      break;
  if (req->case_page_size < 0)
    validate_add(e, "case_page_size", "case_page_size must not be negative");
  sc->case_limit = req->case_page_size == 0 || req->case_page_size > STATS_CASE_PAGE_MAX
                       ? STATS_CASE_PAGE_MAX
                       : req->case_page_size;
  if (req->omit_cases)
    sc->case_limit = 0;
  if (req->case_page_token[0] &&
      (sc->case_after = svc_page_after_of(req->case_page_token, stats_token_scope(call))) <= 0)
    validate_add(e, "case_page_token", "case_page_token is malformed");
  return validate_errors_result(e);
}

static void get_statistics(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__GetStatisticsRequest *req = (const void *)m;
  authz_principal_t p = clue_principal(call);
  authz_result_t res;
  validate_errors_t errs;
  const char *params[1] = {NULL};
  stats_ctx_t *sc;

  if ((sc = rpc_call_alloc(call, sizeof(*sc))) == NULL) {
    clue_oom(call);
    return;
  }
  *sc = (stats_ctx_t){.req = req};
  if (validate_stats(call, req, sc, &errs) != 0 && clue_invalid_each(call, &errs))
    return;
  res = stats_can_read(&p);
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  if ((sc->fresh = replica_route(call, req->read)) == NULL)
    return;
  if (req->n_unit_ids > 0 &&
      (params[0] = svc_id_array(call, (const int64_t *)req->unit_ids, req->n_unit_ids)) == NULL) {
    clue_oom(call);
    return;
  }
  svc_read(call, units_sql, 1, params, got_units, sc);
}

const rpc_method_t stats_methods[] = {
    SVC_HEAVY_METHOD("StatsService", "GetStatistics", get_statistics, get_statistics_request,
                     get_statistics_response),
};
const size_t stats_nmethods = sizeof(stats_methods) / sizeof(stats_methods[0]);
