#include "service/clue_scope.h"

#include <stdarg.h>
#include <stdio.h>

#include "domain/authz.h"

typedef struct sql_buf {
  char *out;
  size_t len, used;
  int overflow;
} sql_buf_t;

__attribute__((format(printf, 2, 3))) static void add(sql_buf_t *b, const char *fmt, ...) {
  va_list ap;
  int n;

  if (b->overflow)
    return;
  va_start(ap, fmt);
  n = vsnprintf(b->out + b->used, b->len - b->used, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= b->len - b->used)
    b->overflow = 1;
  else
    b->used += (size_t)n;
}

int clue_scope_sql(unsigned scope, const char *c, int unit, int user, char *out, size_t len) {
  sql_buf_t b = {out, len, 0, 0};
  int first = 1;

  if (len == 0)
    return -1;
  out[0] = '\0';
  if (scope & AUTHZ_SCOPE_ALL) {
    add(&b, "true");
    return b.overflow ? -1 : 0;
  }
  add(&b, "(");
  /* Own unit and liaison groups as one = ANY, so the owner index serves both. */
  if (scope & (AUTHZ_SCOPE_OWN_UNIT | AUTHZ_SCOPE_LIAISON_GROUPS)) {
    add(&b, "%s.owner_unit = ANY (ARRAY(SELECT $%d::bigint WHERE %s", c, unit,
        scope & AUTHZ_SCOPE_OWN_UNIT ? "true" : "false");
    if (scope & AUTHZ_SCOPE_LIAISON_GROUPS)
      add(&b, " UNION ALL SELECT id FROM units WHERE kind = 'GROUP' AND liaison_room_id = $%d",
          unit);
    add(&b, "))");
    first = 0;
  }
  if (scope & AUTHZ_SCOPE_JOINT_CASES) {
    add(&b, "%s%s.joint_case_id IN (SELECT joint_cases_of_unit($%d))", first ? "" : " OR ", c,
        unit);
    first = 0;
  }
  if (scope & AUTHZ_SCOPE_PENDING_REVIEWS) {
    add(&b, "%s%s.pending_reviewer_unit = $%d", first ? "" : " OR ", c, unit);
    first = 0;
  }
  /* An assignment counts while the unit that made it owns the clue (0019). As = ANY of an
   * uncorrelated array, like the owner arm, so that the id index serves it. */
  if (scope & AUTHZ_SCOPE_HANDLED) {
    add(&b,
        "%s%s.id = ANY (ARRAY(SELECT ch.clue_id FROM clue_handlers ch JOIN clues chc"
        " ON chc.id = ch.clue_id AND chc.owner_unit = ch.owner_unit WHERE ch.user_id = $%d))",
        first ? "" : " OR ", c, user);
    first = 0;
  }
  add(&b, "%s)", first ? "false" : "");
  if (scope & AUTHZ_SCOPE_UNRECUSED)
    add(&b, " AND %s.id NOT IN (SELECT rr.clue_id FROM recusals rr WHERE rr.user_id = $%d)", c,
        user);
  return b.overflow ? -1 : 0;
}

/* Each arm is one disjunct of clue_scope_sql() as a query of its own over the index that
 * serves it, and the recusals are taken out of their union: the set is the same, term by term
 * (a clue whose owner is one of the units, or whose joint case is one of the cases, is a clue
 * of that unit or that case). */
int clue_scope_ids_sql(unsigned scope, int unit, int user, char *out, size_t len) {
  sql_buf_t b = {out, len, 0, 0};
  const char *sep = "";

  if (len == 0)
    return -1;
  out[0] = '\0';
  if (scope & AUTHZ_SCOPE_ALL) {
    add(&b, "SELECT id FROM clues");
    return b.overflow ? -1 : 0;
  }
  if (!(scope & (AUTHZ_SCOPE_OWN_UNIT | AUTHZ_SCOPE_LIAISON_GROUPS | AUTHZ_SCOPE_JOINT_CASES |
                 AUTHZ_SCOPE_PENDING_REVIEWS | AUTHZ_SCOPE_HANDLED))) {
    add(&b, "SELECT NULL::bigint AS id WHERE false");
    return b.overflow ? -1 : 0;
  }
  add(&b, "SELECT id FROM (");
  /* The owner units and the joint cases are few: each is asked for its clues on its own (the
   * OFFSET 0 keeps the subquery a scan per unit or case), so that the clues index serves it
   * whatever PostgreSQL guesses of how many an array of them would match. */
  if (scope & (AUTHZ_SCOPE_OWN_UNIT | AUTHZ_SCOPE_LIAISON_GROUPS)) {
    add(&b, "SELECT oc.id FROM (SELECT $%d::bigint AS unit WHERE %s", unit,
        scope & AUTHZ_SCOPE_OWN_UNIT ? "true" : "false");
    if (scope & AUTHZ_SCOPE_LIAISON_GROUPS)
      add(&b, " UNION ALL SELECT id FROM units WHERE kind = 'GROUP' AND liaison_room_id = $%d",
          unit);
    add(&b, ") o CROSS JOIN LATERAL (SELECT id FROM clues WHERE owner_unit = o.unit OFFSET 0) oc");
    sep = " UNION ";
  }
  if (scope & AUTHZ_SCOPE_JOINT_CASES) {
    add(&b,
        "%sSELECT kc.id FROM joint_cases_of_unit($%d::bigint) k (case_id) CROSS JOIN LATERAL"
        " (SELECT id FROM clues WHERE joint_case_id = k.case_id OFFSET 0) kc",
        sep, unit);
    sep = " UNION ";
  }
  if (scope & AUTHZ_SCOPE_PENDING_REVIEWS) {
    add(&b, "%sSELECT id FROM clues WHERE pending_reviewer_unit = $%d::bigint", sep, unit);
    sep = " UNION ";
  }
  if (scope & AUTHZ_SCOPE_HANDLED)
    add(&b,
        "%sSELECT ch.clue_id AS id FROM clue_handlers ch JOIN clues chc"
        " ON chc.id = ch.clue_id AND chc.owner_unit = ch.owner_unit WHERE ch.user_id = $%d::bigint",
        sep, user);
  add(&b, ") s");
  if (scope & AUTHZ_SCOPE_UNRECUSED)
    add(&b, " WHERE id NOT IN (SELECT rr.clue_id FROM recusals rr WHERE rr.user_id = $%d::bigint)",
        user);
  return b.overflow ? -1 : 0;
}
