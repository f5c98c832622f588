#include "domain/stats_scope.h"

#include <stdarg.h>
#include <stdio.h>

__attribute__((format(printf, 3, 4))) static authz_result_t
decide(authz_decision_t d, const char *reason, const char *fmt, ...) {
  authz_result_t r;
  va_list ap;

  r.decision = d;
  r.grpc_code = (int)d;
  r.reason = reason;
  va_start(ap, fmt);
  vsnprintf(r.message, sizeof(r.message), fmt, ap);
  va_end(ap);
  return r;
}

static bool is_work_unit(clue_unit_kind_t k) {
  return k == CLUE_UNIT_GROUP || k == CLUE_UNIT_ROOM || k == CLUE_UNIT_REGION;
}

/* AUDITOR and ADMIN: every working unit. */
static bool sees_all(const authz_principal_t *p) {
  return p != NULL && (p->role == CLUE_ROLE_AUDITOR || p->role == CLUE_ROLE_ADMIN);
}

static bool is_staff(const authz_principal_t *p) {
  return p != NULL && (p->role == CLUE_ROLE_MEMBER || p->role == CLUE_ROLE_LEADER) &&
         is_work_unit(p->unit_kind) && p->unit_id > 0;
}

authz_result_t stats_can_read(const authz_principal_t *p) {
  if (sees_all(p) || is_staff(p))
    return decide(AUTHZ_ALLOW, "reads statistics", "%s", "");
  return decide(AUTHZ_DENIED, "role or unit kind reads no statistics",
                "only members and leaders of a GROUP, ROOM or REGION, auditors and administrators "
                "may read statistics");
}

bool stats_in_scope(const authz_principal_t *p, const stats_unit_t *u) {
  if (u == NULL || u->id <= 0 || !is_work_unit(u->kind))
    return false;
  if (sees_all(p))
    return true;
  if (!is_staff(p))
    return false;
  if (u->id == p->unit_id)
    return true;
  return p->unit_kind == CLUE_UNIT_ROOM && u->kind == CLUE_UNIT_GROUP &&
         u->liaison_room_id == p->unit_id;
}

authz_result_t stats_can_ask(const authz_principal_t *p, int64_t id, const stats_unit_t *u) {
  authz_result_t r = stats_can_read(p);

  if (!authz_ok(&r))
    return r;
  if (stats_in_scope(p, u))
    return decide(AUTHZ_ALLOW, "unit in scope", "%s", "");
  if (is_staff(p))
    return decide(AUTHZ_DENIED, "unit outside the caller's scope",
                  "statistics of unit %lld are outside your scope (%s)", (long long)id,
                  p->unit_kind == CLUE_UNIT_ROOM ? "your own unit and the groups it liaises with"
                                                 : "your own unit");
  if (u == NULL || u->kind == CLUE_UNIT_UNSPECIFIED)
    return decide(AUTHZ_NOT_FOUND, "no such unit", "unit %lld not found", (long long)id);
  return decide(AUTHZ_INVALID_ARGUMENT, "not a working unit",
                "unit_ids: unit %lld is an ADMIN unit; statistics cover GROUP, ROOM and REGION "
                "units",
                (long long)id);
}

bool stats_cases_narrowed(const authz_principal_t *p) {
  return !sees_all(p);
}

bool stats_leave_out_recusals(const authz_principal_t *p) {
  return !sees_all(p);
}
