/* clue.v1.StatsService.GetBulletin: the monthly bulletin (通报, issue 14).
 *
 * decode -> validate (the month: domain/bulletin.h) -> read the candidate units -> decide the
 * units covered (domain/stats_scope.h, as GetStatistics; then GROUPs and REGIONs only) -> one
 * statement, clue_bulletin() of 0070_bulletin_counts_ledger_events.sql, computes every figure,
 * leaving out for staff the clues they are recused from and the items recorded from them; it
 * reads the month's transitions and ledger events, and each unit's transitions back to its
 * last decision (docs/LEDGER.md) -> encode. */

#include "service/bulletin.h"

#include <stdio.h>
#include <string.h>

#include "clue/v1/stats.pb-c.h"
#include "domain/bulletin.h"
#include "domain/stats_scope.h"
#include "service/clue_row.h"
#include "service/replica.h"
#include "service/svc_util.h"

/* At most this many unit ids in one request's filter. */
#define BULLETIN_UNIT_IDS_MAX 1000

static const char units_sql[] =
    "SELECT id, kind, coalesce(liaison_room_id, 0) FROM units"
    " WHERE CASE WHEN $1::bigint[] IS NULL THEN kind <> 'ADMIN' ELSE id = ANY ($1::bigint[]) END"
    " ORDER BY id";

static const char bulletin_sql[] =
    "SELECT id, code, name, kind, received, disposed, d_check, d_talk, d_no_action, d_shelved,"
    " d_finding, d_sanction, filed, transferred, overdue_now, rect_found, rect_verified,"
    " rect_overdue, zero_months FROM clue_bulletin($1::bigint[], $2, $3::bigint[], $4)";

/* Columns of bulletin_sql. */
enum {
  BC_ID,
  BC_CODE,
  BC_NAME,
  BC_KIND,
  BC_RECEIVED,
  BC_DISPOSED,
  BC_KINDS, /* the six disposal kinds, in kind_names order */
  BC_FILED = BC_KINDS + 6,
  BC_TRANSFERRED,
  BC_OVERDUE,
  BC_RECT_FOUND,
  BC_RECT_VERIFIED,
  BC_RECT_OVERDUE,
  BC_ZERO_MONTHS,
};

static const char *const kind_names[6] = {
    "PRELIMINARY_CHECK", "TALK_OR_LETTER_INQUIRY", "NO_FURTHER_ACTION",
    "SHELVED",           "FINDING",                "SANCTION",
};

typedef struct bulletin_req {
  const Clue__V1__GetBulletinRequest *req;
  bulletin_month_t month;
  int64_t bounds[BULLETIN_STREAK_MAX + 1];
  Clue__V1__ReadFreshness *fresh; /* where the rows come from (service/replica.h) */
} bulletin_req_t;

static Clue__V1__BulletinUnit *unit_row(rpc_call_t *call, const db_result_t *r, int row) {
  Clue__V1__BulletinUnit *u = rpc_call_alloc(call, sizeof(*u));
  Clue__V1__DisposalCount *counts = rpc_call_alloc(call, 6 * sizeof(*counts));
  Clue__V1__DisposalCount **ptrs = rpc_call_alloc(call, 6 * sizeof(*ptrs));

  if (u == NULL || counts == NULL || ptrs == NULL)
    return NULL;
  clue__v1__bulletin_unit__init(u);
  u->unit_id = svc_col_i64(r, row, BC_ID);
  u->unit_code = svc_col_str(call, r, row, BC_CODE);
  u->unit_name = svc_col_str(call, r, row, BC_NAME);
  u->unit_kind = (Clue__V1__UnitKind)clue_unit_kind_of(db_value(r, row, BC_KIND));
  u->received = svc_col_i64(r, row, BC_RECEIVED);
  u->disposed = svc_col_i64(r, row, BC_DISPOSED);
  for (int i = 0; i < 6; i++) {
    clue__v1__disposal_count__init(&counts[i]);
    counts[i].disposal = (char *)kind_names[i];
    counts[i].count = svc_col_i64(r, row, BC_KINDS + i);
    ptrs[i] = &counts[i];
  }
  u->disposed_by_kind = ptrs;
  u->n_disposed_by_kind = 6;
  u->filed = svc_col_i64(r, row, BC_FILED);
  u->transferred_to_judicial = svc_col_i64(r, row, BC_TRANSFERRED);
  u->overdue_now = svc_col_i64(r, row, BC_OVERDUE);
  u->rectification_found = svc_col_i64(r, row, BC_RECT_FOUND);
  u->rectification_verified = svc_col_i64(r, row, BC_RECT_VERIFIED);
  u->rectification_overdue = svc_col_i64(r, row, BC_RECT_OVERDUE);
  u->zero_disposal = u->disposed == 0 && svc_col_i64(r, row, BC_ZERO_MONTHS) > 0;
  u->zero_disposal_months = u->zero_disposal ? (int32_t)svc_col_i64(r, row, BC_ZERO_MONTHS) : 0;
  if (u->unit_code == NULL || u->unit_name == NULL)
    return NULL;
  return u;
}

/* The answer's frame: the month and its instants. */
static void frame(rpc_call_t *call, const bulletin_req_t *br, Clue__V1__GetBulletinResponse *resp) {
  resp->month = rpc_call_printf(call, "%04d-%02d", br->month.year, br->month.month);
  resp->from_ms = br->bounds[1];
  resp->to_ms = br->bounds[0];
  resp->as_of_ms = clue_now_ms(call);
  resp->freshness = br->fresh;
}

static void reply_bulletin(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__GetBulletinResponse resp = CLUE__V1__GET_BULLETIN_RESPONSE__INIT;
  int n = db_rows(r);

  frame(call, arg, &resp);
  if (resp.month == NULL ||
      (resp.units = rpc_call_alloc(call, (size_t)(n ? n : 1) * sizeof(*resp.units))) == NULL) {
    clue_oom(call);
    return;
  }
  for (int row = 0; row < n; row++)
    if ((resp.units[resp.n_units++] = unit_row(call, r, row)) == NULL) {
      clue_oom(call);
      return;
    }
  (void)rpc_reply(call, &resp.base);
}

static void unit_at(const db_result_t *r, int row, stats_unit_t *u) {
  u->id = svc_col_i64(r, row, 0);
  u->kind = (clue_unit_kind_t)clue_unit_kind_of(db_value(r, row, 1));
  u->liaison_room_id = svc_col_i64(r, row, 2);
}

static stats_unit_t find_unit(const db_result_t *r, int64_t id) {
  stats_unit_t u = {.id = id};

  for (int i = 0; i < db_rows(r); i++)
    if (svc_col_i64(r, i, 0) == id) {
      unit_at(r, i, &u);
      break;
    }
  return u;
}

static bool on_bulletin(clue_unit_kind_t k) {
  return k == CLUE_UNIT_GROUP || k == CLUE_UNIT_REGION;
}

static void got_units(rpc_call_t *call, const db_result_t *r, void *arg) {
  const bulletin_req_t *br = arg;
  const Clue__V1__GetBulletinRequest *req = br->req;
  authz_principal_t p = clue_principal(call);
  size_t cap = req->n_unit_ids > 0 ? req->n_unit_ids : (size_t)db_rows(r), n = 0;
  int64_t *ids = rpc_call_alloc(call, (cap ? cap : 1) * sizeof(*ids));
  const char *params[4];

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
      if (!on_bulletin(u.kind)) {
        rpc_fail(call, GRPC_INVALID_ARGUMENT,
                 "unit_ids: unit %lld is a %s; the bulletin covers GROUPs and REGIONs",
                 (long long)u.id, clue_unit_kind_name(u.kind));
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
      if (on_bulletin(u.kind) && stats_in_scope(&p, &u))
        ids[n++] = u.id;
    }
  }
  params[0] = svc_id_array(call, br->bounds, BULLETIN_STREAK_MAX + 1);
  params[1] = svc_i64(call, clue_now_ms(call), 0);
  params[2] = svc_id_array(call, ids, n);
  /* For the caller a clue they are recused from does not exist (docs/COOPERATION.md): none of
   * its figures, nor the ledger items recorded from it, count. NULL: count everything. */
  params[3] = stats_leave_out_recusals(&p) ? svc_i64(call, p.user_id, 0) : NULL;
  if (!svc_all_set(params, 3) || (stats_leave_out_recusals(&p) && params[3] == NULL)) {
    clue_oom(call);
    return;
  }
  svc_read(call, bulletin_sql, 4, params, reply_bulletin, arg);
}

static void get_bulletin(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__GetBulletinRequest *req = (const void *)m;
  authz_principal_t p = clue_principal(call);
  bulletin_month_t now = bulletin_month_of_ms(clue_now_ms(call));
  authz_result_t res;
  validate_errors_t e;
  char msg[VALIDATE_MESSAGE_MAX];
  bulletin_req_t *br;
  const char *params[1] = {NULL};

  if ((br = rpc_call_alloc(call, sizeof(*br))) == NULL) {
    clue_oom(call);
    return;
  }
  br->req = req;
  /* Every violation of the request, one per field. */
  validate_errors_init(&e);
  if (req->month[0] == '\0') {
    validate_add(&e, "month", "month is required (YYYY-MM)");
  } else if (bulletin_month_parse(req->month, &br->month) != 0) {
    snprintf(msg, sizeof(msg), "month must be YYYY-MM, from %d-01", BULLETIN_YEAR_MIN);
    validate_add(&e, "month", msg);
  } else if (bulletin_month_cmp(br->month, now) > 0) {
    snprintf(msg, sizeof(msg), "month %s has not begun (UTC+08:00)", req->month);
    validate_add(&e, "month", msg);
  }
  if (req->n_unit_ids > BULLETIN_UNIT_IDS_MAX) {
    snprintf(msg, sizeof(msg), "unit_ids has more than %d entries", BULLETIN_UNIT_IDS_MAX);
    validate_add(&e, "unit_ids", msg);
  }
  for (size_t i = 0; i < req->n_unit_ids; i++)
    if (validate_each(&e, validate_id("unit_ids", req->unit_ids[i], validate_slot(&e))) != 0)
      break;
  if (clue_invalid_each(call, &e))
    return;
  res = stats_can_read(&p);
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  if ((br->fresh = replica_route(call, req->read)) == NULL)
    return;
  bulletin_bounds(br->month, br->bounds, BULLETIN_STREAK_MAX + 1);
  if (req->n_unit_ids > 0 &&
      (params[0] = svc_id_array(call, (const int64_t *)req->unit_ids, req->n_unit_ids)) == NULL) {
    clue_oom(call);
    return;
  }
  svc_read(call, units_sql, 1, params, got_units, br);
}

const rpc_method_t bulletin_methods[] = {
    SVC_HEAVY_METHOD("StatsService", "GetBulletin", get_bulletin, get_bulletin_request,
                     get_bulletin_response),
};
const size_t bulletin_nmethods = sizeof(bulletin_methods) / sizeof(bulletin_methods[0]);
