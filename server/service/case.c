/* clue.v1.CaseService: joint cases (室组地联合办案, DESIGN.md §3).
 *
 * A ROOM's LEADER opens a case led by that room, with participant units (groups, regions,
 * other rooms) and member clues. Only a LEADER of the lead room changes it afterwards. The
 * lead room and the participants see the case and its member clues (with their notes and
 * history; never the reporter unless they own the clue), and the lead room reviews the
 * co-review proposals of member clues. AUDITORs see every case; nobody else learns that a
 * case exists (NOT_FOUND).
 *
 * Which clues may join or leave (authz_can_add_clue_to_case, _remove_clue_from_case): a clue
 * joins only by consent, from a LEADER of its owner unit (a participant adds its own clue)
 * or of the lead room when that room owns the clue or liaises with its owner group; taking
 * part in a case shares the case's clues and never gives the participant's away. The owner's
 * leader, or the lead room's, takes a clue out again. A clue in a terminal state or with a
 * pending proposal neither joins nor leaves, so that the reviewer of a pending proposal
 * never changes under it and a concluded clue stays on the case's record.
 *
 * Each call: validate -> one facts query -> decide (authz.h) -> one function of
 * 0005_cases.sql, which appends the audit events and answers with the case's rows
 * (joint_case_row) -> encode. */

#include "service/case.h"

#include <stdlib.h>
#include <string.h>

#include "clue/v1/case.pb-c.h"
#include "log.h"
#include "service/clue_row.h"
#include "service/request_sha256.h"
#include "service/svc_util.h"

/* Limits of CreateJointCase's lists. */
#define CASE_MAX_PARTICIPANTS 64
#define CASE_MAX_CLUES 200
/* A ListJointCases page holds at most this many cases (and SVC_PAGE_BYTES). */
#define CASE_LIST_MAX 500
/* What the database sends of a clue's row of a case besides its texts (list_cases_sql). */
#define CASE_ROW_BYTES 128
/* Its page token is ListJointCases' and the caller's (case_token_scope()). */
#define CASE_TOKEN_SCOPE 2
#define CASE_TOKEN_TAG 0x4a6f696e74436173 /* "JointCas": no other list's token reads here */

static void case_token_scope(rpc_call_t *call, int64_t *scope) {
  scope[0] = (int64_t)CASE_TOKEN_TAG;
  scope[1] = rpc_call_principal(call)->user_id;
}

static const char MSG_CASE_NOT_FOUND[] = "joint case not found";

/* ---- reading cases ---------------------------------------------------------------------- */

/* Columns of joint_case_row (0005_cases.sql). */
enum {
  JC_ID,
  JC_TITLE,
  JC_BASIS,
  JC_LEAD,
  JC_CREATED_BY,
  JC_CREATED_MS,
  JC_IN_CASE,
  JC_PARTICIPANTS,
  JC_CLUE_ID,
  JC_CLUE_NUMBER,
  JC_CLUE_TITLE,
  JC_CLUE_STATE,
  JC_CLUE_OWNER,
  JC_CLUE_DEADLINE_MS,
  JC_CLUE_ADDED_MS,
  /* Names for people, beside the row's ids (JC_SELECT). */
  JC_LEAD_CODE,
  JC_LEAD_NAME,
  JC_CREATED_BY_NAME,
  JC_PARTICIPANT_CODES,
  JC_CLUE_OWNER_CODE,
  JC_CLUE_RECUSED, /* the caller is recused from the row's clue */
  JC_NCOLS
};

/* The columns of a joint_case_row r in order, then the unit codes and names and the user name
 * its ids stand for (unit codes are [A-Za-z0-9_], so a comma list of them is unambiguous), and
 * whether the caller (the parameter user, "$1" say) is recused from the row's clue: for a
 * recused user a case lists the clue no more than it exists (docs/COOPERATION.md).
 *
 * A case's rows come together, its first row first: that row alone carries the case's own
 * columns (joint_case_rows() of 0069_case_rows_carry_the_case_once.sql, NULL on the others,
 * whose title is then NULL), and the names they stand for are read for it alone, so that the
 * database sends the case's basis and names once, not once per member clue. */
/* clang-format off */
#define JC_SELECT(user)                                                                            \
  "r.case_id, r.title, r.basis, r.lead_unit, r.created_by, r.created_ms, r.in_case,"               \
  " r.participants, r.clue_id, r.clue_number, r.clue_title, r.clue_state, r.clue_owner,"           \
  " r.clue_deadline_ms, r.clue_added_ms,"                                                          \
  " CASE WHEN r.title IS NOT NULL THEN (SELECT lu.code FROM units lu WHERE lu.id = r.lead_unit)"  \
  " END,"                                                                                          \
  " CASE WHEN r.title IS NOT NULL THEN (SELECT lu.name FROM units lu WHERE lu.id = r.lead_unit)"  \
  " END,"                                                                                          \
  " CASE WHEN r.title IS NOT NULL THEN (SELECT cu.name FROM users cu WHERE cu.id = r.created_by)" \
  " END,"                                                                                          \
  " CASE WHEN r.title IS NOT NULL THEN (SELECT string_agg(pu.code, ',' ORDER BY pu.id)"           \
  "   FROM units pu WHERE pu.id = ANY (string_to_array(r.participants, ',')::bigint[])) END,"     \
  " (SELECT ou.code FROM units ou WHERE ou.id = r.clue_owner),"                                  \
  " r.clue_id IS NOT NULL AND EXISTS (SELECT 1 FROM recusals x"                                   \
  "   WHERE x.clue_id = r.clue_id AND x.user_id = " user ")"
/* clang-format on */

/* Comma-separated unit codes into an array in the call's memory. */
static int parse_codes(rpc_call_t *call, const char *csv, char ***out, size_t *n) {
  size_t count = 1, len;
  char *copy;

  *n = 0;
  *out = NULL;
  if (csv == NULL || csv[0] == '\0')
    return 0;
  for (const char *p = csv; *p; p++)
    count += *p == ',';
  len = strlen(csv) + 1;
  if ((*out = rpc_call_alloc(call, count * sizeof(**out))) == NULL ||
      (copy = rpc_call_alloc(call, len)) == NULL)
    return -1;
  memcpy(copy, csv, len);
  for (char *p = copy; p != NULL && *n < count;) {
    char *comma = strchr(p, ',');
    if (comma != NULL)
      *comma = '\0';
    (*out)[(*n)++] = p;
    p = comma != NULL ? comma + 1 : NULL;
  }
  return 0;
}

/* The authorization facts of the case whose first row is row. */
static authz_case_t case_facts(const db_result_t *r, int row) {
  authz_case_t jc = {0};
  jc.lead_unit_id = svc_col_i64(r, row, JC_LEAD);
  jc.principal_in_case = svc_col_bool(r, row, JC_IN_CASE) != 0;
  return jc;
}

/* Comma-separated ids into an array in the call's memory. */
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
  for (const char *p = csv; *p;) {
    char *end;
    (*out)[(*n)++] = strtoll(p, &end, 10);
    p = *end == ',' ? end + 1 : end;
    if (end == p && *p != '\0')
      return -1;
  }
  return 0;
}

/*
 * The case whose rows start at *row (the first, which carries the case's own columns): its
 * message in the call's memory in *out, and *row advanced past them. Returns 0 or -1 (out of
 * memory).
 */
static int case_read(rpc_call_t *call, const db_result_t *r, int *row, Clue__V1__JointCase **out) {
  int first = *row, n = db_rows(r), last = first;
  int64_t id = svc_col_i64(r, first, JC_ID);
  Clue__V1__JointCase *jc = rpc_call_alloc(call, sizeof(*jc));

  while (last < n && svc_col_i64(r, last, JC_ID) == id)
    last++;
  *row = last;
  if (jc == NULL)
    return -1;
  clue__v1__joint_case__init(jc);
  jc->id = id;
  jc->title = svc_col_str(call, r, first, JC_TITLE);
  jc->basis = svc_col_str(call, r, first, JC_BASIS);
  jc->lead_unit_id = svc_col_i64(r, first, JC_LEAD);
  jc->created_by = svc_col_i64(r, first, JC_CREATED_BY);
  jc->created_at_ms = svc_col_i64(r, first, JC_CREATED_MS);
  jc->lead_unit_code = svc_col_str(call, r, first, JC_LEAD_CODE);
  jc->lead_unit_name = svc_col_str(call, r, first, JC_LEAD_NAME);
  jc->created_by_name = svc_col_str(call, r, first, JC_CREATED_BY_NAME);
  if (jc->title == NULL || jc->basis == NULL || jc->lead_unit_code == NULL ||
      jc->lead_unit_name == NULL || jc->created_by_name == NULL ||
      parse_ids(call, db_value(r, first, JC_PARTICIPANTS), &jc->participant_unit_ids,
                &jc->n_participant_unit_ids) != 0 ||
      parse_codes(call, db_value(r, first, JC_PARTICIPANT_CODES), &jc->participant_unit_codes,
                  &jc->n_participant_unit_codes) != 0 ||
      (jc->clues = rpc_call_alloc(call, (size_t)(last - first) * sizeof(*jc->clues))) == NULL)
    return -1;
  for (int i = first; i < last; i++) {
    Clue__V1__CaseClue *cc;

    if (db_value(r, i, JC_CLUE_ID) == NULL || svc_col_bool(r, i, JC_CLUE_RECUSED) == 1)
      continue;
    if ((cc = rpc_call_alloc(call, sizeof(*cc))) == NULL)
      return -1;
    clue__v1__case_clue__init(cc);
    cc->clue_id = svc_col_i64(r, i, JC_CLUE_ID);
    cc->registration_number = svc_col_str(call, r, i, JC_CLUE_NUMBER);
    cc->title = svc_col_str(call, r, i, JC_CLUE_TITLE);
    cc->state = (Clue__V1__ClueState)clue_state_of(db_value(r, i, JC_CLUE_STATE));
    cc->owner_unit_id = svc_col_i64(r, i, JC_CLUE_OWNER);
    cc->stage_deadline_ms = svc_col_i64(r, i, JC_CLUE_DEADLINE_MS);
    cc->added_at_ms = svc_col_i64(r, i, JC_CLUE_ADDED_MS);
    cc->owner_unit_code = svc_col_str(call, r, i, JC_CLUE_OWNER_CODE);
    if (cc->registration_number == NULL || cc->title == NULL || cc->owner_unit_code == NULL)
      return -1;
    jc->clues[jc->n_clues++] = cc;
  }
  *out = jc;
  return 0;
}

static void case_not_found(rpc_call_t *call) {
  log_info("call %s: %s refused (5): no such joint case", rpc_call_id(call),
           rpc_call_method(call)->path);
  clue_not_found(call, MSG_CASE_NOT_FOUND);
}

/* Reply with the one case of r if the caller sees it (NOT_FOUND otherwise). */
static void reply_case(rpc_call_t *call, const db_result_t *r, void *arg) {
  authz_principal_t p = clue_principal(call);
  Clue__V1__JointCase *jc;
  authz_case_t facts;
  authz_result_t res;
  int row = 0;
  (void)arg;

  if (db_rows(r) == 0) {
    case_not_found(call);
    return;
  }
  facts = case_facts(r, 0);
  res = authz_can_see_case(&p, &facts);
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  if (case_read(call, r, &row, &jc) != 0) {
    clue_oom(call);
    return;
  }
  (void)rpc_reply(call, &jc->base);
}

/* ---- GetJointCase, ListJointCases ------------------------------------------------------- */

/* clang-format off */
/* The case's rows when the caller sees it (%s, twice: authz_can_see_case() in SQL, on the case
 * j and the caller's unit in $2), in their order; otherwise the case's own row alone, without
 * its texts, participants or clues, which the server refuses on its facts. A hidden case costs
 * what a missing one does, whatever it holds (docs/COOPERATION.md). */
static const char get_case_sql[] =
    "SELECT " JC_SELECT("$3") " FROM joint_cases j CROSS JOIN LATERAL"
    " (SELECT * FROM joint_case_rows(j.id, $2) WITH ORDINALITY WHERE %s"
    " UNION ALL SELECT j.id, '', '', j.lead_unit, j.created_by, "
    SVC_MS("j.created_at") ", joint_case_has_unit(j.id, $2), NULL, NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL, 1 WHERE (%s) IS NOT TRUE) r WHERE j.id = $1 ORDER BY r.ordinality";
/* clang-format on */

static void get_joint_case(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__GetJointCaseRequest *req = (const void *)m;
  validate_error_t err;
  authz_principal_t p = clue_principal(call);
  unsigned scope = authz_clue_scope(&p);
  const char *params[3], *seen, *sql;

  if (clue_invalid(call, validate_id("case_id", req->case_id, &err), &err))
    return;
  /* As ListJointCases: all cases for AUDITORs, those the unit leads or joins for staff. */
  if (scope & AUTHZ_SCOPE_ALL)
    seen = "true";
  else if (scope & AUTHZ_SCOPE_JOINT_CASES)
    seen = "(j.lead_unit = $2 OR joint_case_has_unit(j.id, $2))";
  else
    seen = "false";
  params[0] = svc_i64(call, req->case_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = svc_i64(call, p.user_id, 0);
  sql = rpc_call_printf(call, get_case_sql, seen, seen);
  if (sql == NULL || !svc_all_set(params, 3)) {
    clue_oom(call);
    return;
  }
  svc_query(call, sql, 3, params, reply_case, NULL);
}

/* clang-format off */
/* The bytes the database sends of the case j, about: its title and basis, and each member
 * clue's number and title, with CASE_ROW_BYTES for each row's other columns. Counted on the
 * texts' stored lengths (octet_length() reads no text). */
#define CASE_BYTES                                                                                 \
  "(octet_length(j.title) + octet_length(j.basis) + " SVC_STR(CASE_ROW_BYTES)                      \
  " + coalesce((SELECT sum(octet_length(c.registration_number) + octet_length(c.title) + "         \
  SVC_STR(CASE_ROW_BYTES) ") FROM case_clues cc JOIN clues c ON c.id = cc.clue_id"                 \
  " AND c.joint_case_id = cc.case_id WHERE cc.case_id = j.id), 0))"

/* A page of cases, newest first (%s: the caller's scope on joint_cases; %d: one case more than a
 * page, which tells that more follow), each case's rows together and first row first, then
 * how many cases the page chose from. Cases are counted in the query as ListItems counts its
 * items' texts: those after the cases that take SVC_PAGE_BYTES are not read (the first case
 * past it is, and reply_cases() cuts the page at or after it). So the database sends about a
 * page and one case, not CASE_LIST_MAX + 1 whole cases (each up to 20,000 bytes of basis and
 * 1,000 clues). */
static const char list_cases_sql[] =
    "WITH page AS (SELECT b.id, sum(b.own) OVER (ORDER BY b.id DESC) AS bytes_through, b.own,"
    " count(*) OVER () AS chosen_from FROM (SELECT j.id, " CASE_BYTES " AS own"
    " FROM (SELECT id, title, basis FROM joint_cases WHERE %s"
    " AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT %d) j) b)"
    " SELECT " JC_SELECT("$2") ", p.chosen_from FROM page p"
    " CROSS JOIN LATERAL joint_case_rows(p.id, $1) WITH ORDINALITY r"
    " WHERE p.bytes_through - p.own <= " SVC_STR(SVC_PAGE_BYTES)
    " ORDER BY r.case_id DESC, r.ordinality";
/* clang-format on */

/* Rows of a page: JC_SELECT's, then how many cases the page chose from (list_cases_sql). */
#define CASE_CHOSEN_FROM JC_NCOLS

/* The cases whose rows r holds. */
static int64_t cases_in(const db_result_t *r) {
  int64_t cases = 0;

  for (int row = 0; row < db_rows(r); row++)
    cases += row == 0 || svc_col_i64(r, row, JC_ID) != svc_col_i64(r, row - 1, JC_ID);
  return cases;
}

static void reply_cases(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__ListJointCasesResponse resp = CLUE__V1__LIST_JOINT_CASES_RESPONSE__INIT;
  authz_principal_t p = clue_principal(call);
  int n = db_rows(r), read = 0;
  int64_t last_id = 0, scope[CASE_TOKEN_SCOPE];
  size_t bytes = 0;
  /* Cases past the database's count of bytes that the query left out. */
  bool more = n > 0 && cases_in(r) < svc_col_i64(r, 0, CASE_CHOSEN_FROM);
  (void)arg;

  if ((resp.cases = rpc_call_alloc(call, (size_t)(n ? n : 1) * sizeof(*resp.cases))) == NULL) {
    clue_oom(call);
    return;
  }
  for (int row = 0; row < n;) {
    authz_case_t facts = case_facts(r, row);
    authz_result_t res = authz_can_see_case(&p, &facts);
    Clue__V1__JointCase *jc;

    if (read++ == CASE_LIST_MAX) {
      more = true; /* the one case past a page */
      break;
    }
    if (case_read(call, r, &row, &jc) != 0) {
      clue_oom(call);
      return;
    }
    if (!authz_ok(&res)) {
      log_error("call %s: case list returned case %lld that authz hides (%s); dropped",
                rpc_call_id(call), (long long)jc->id, res.reason);
      last_id = jc->id;
      continue;
    }
    if (!svc_page_fits(&bytes, &jc->base)) {
      more = true; /* the next page starts with this case */
      break;
    }
    last_id = jc->id;
    resp.cases[resp.n_cases++] = jc;
  }
  case_token_scope(call, scope);
  if (more && (resp.next_page_token =
                   (char *)svc_page_token_in(call, scope, CASE_TOKEN_SCOPE, last_id)) == NULL) {
    clue_oom(call);
    return;
  }
  (void)rpc_reply(call, &resp.base);
}

static void list_joint_cases(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ListJointCasesRequest *req = (const void *)m;
  Clue__V1__ListJointCasesResponse empty = CLUE__V1__LIST_JOINT_CASES_RESPONSE__INIT;
  authz_principal_t p = clue_principal(call);
  unsigned scope = authz_clue_scope(&p);
  const char *where, *params[3];
  int64_t before = 0, token_scope[CASE_TOKEN_SCOPE];
  validate_errors_t e;
  const char *sql;

  case_token_scope(call, token_scope);
  validate_errors_init(&e);
  if (req->page_token[0] &&
      (before = svc_page_after_in(req->page_token, token_scope, CASE_TOKEN_SCOPE)) == 0)
    validate_add(&e, "page_token", "page_token is malformed or was issued for another caller");
  if (clue_invalid_each(call, &e))
    return;

  /* Cases are seen as their clues are: all by AUDITORs, else those the unit leads or joins. */
  if (scope & AUTHZ_SCOPE_ALL)
    where = "true";
  else if (scope & AUTHZ_SCOPE_JOINT_CASES)
    where = "id IN (SELECT joint_cases_of_unit($1))";
  else
    where = NULL;
  if (where == NULL) {
    (void)rpc_reply(call, &empty.base);
    return;
  }
  sql = rpc_call_printf(call, list_cases_sql, where, CASE_LIST_MAX + 1);
  params[0] = svc_i64(call, p.unit_id, 0);
  params[1] = svc_i64(call, p.user_id, 0);
  params[2] = before ? svc_i64(call, before, 0) : NULL;
  if (sql == NULL || params[0] == NULL || params[1] == NULL || (before && params[2] == NULL)) {
    clue_oom(call);
    return;
  }
  svc_query(call, sql, 3, params, reply_cases, NULL);
}

/* ---- CreateJointCase -------------------------------------------------------------------- */

/* Every violation of the request, one per field (validate_errors_t). */
static int validate_create(const Clue__V1__CreateJointCaseRequest *req, validate_errors_t *e) {
  validate_errors_init(e);
  validate_each(e, validate_title("title", req->title, validate_slot(e)));
  validate_each(e, validate_text("basis", req->basis, VALIDATE_SUMMARY_MAX_BYTES,
                                 VALIDATE_MULTILINE, validate_slot(e)));
  validate_each(e, validate_id_list("participant_unit_ids", req->participant_unit_ids,
                                    req->n_participant_unit_ids, CASE_MAX_PARTICIPANTS,
                                    validate_slot(e)));
  validate_each(e, validate_id_list("clue_ids", req->clue_ids, req->n_clue_ids, CASE_MAX_CLUES,
                                    validate_slot(e)));
  validate_each(e, validate_request_id(req->request_id, validate_slot(e)));
  return validate_errors_result(e);
}

typedef struct create_req {
  const Clue__V1__CreateJointCaseRequest *req;
  const char *request_id;
  const char *request_sha256; /* request_sha256() */
  const char *title;
  const char *basis;
  const char *participants; /* bigint[] literal */
  const char *clues;        /* bigint[] literal */
  const char *facts[5];     /* create_facts_sql's parameters */
} create_req_t;

/* Columns of the facts query: a tag ('c' clue, 'u' unit, 'r' request), the position in the
 * request's list (1-based), the id, the unit's kind, the idempotency record, a clue's facts. */
enum {
  CF_TAG,
  CF_POS,
  CF_ID,
  CF_KIND,
  CF_REQ_METHOD,
  CF_REQ_CASE,
  CF_CLUE,
};

/* clang-format off */
#define NULL_FACTS                                                                              \
  "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"

/* The clue branch comes first: UNION resolves the types of the others' NULLs from it. The
 * rows come in the request's order (ORDER BY tag, position), which got_create_facts() and
 * create_hidden() decide in: in the order a join happened to read them (the clues' order in
 * the table, with missing ids last), the first refusal told a hidden clue from a missing one,
 * and when a hidden clue's row was last written. */
static const char create_facts_sql[] =
    SVC_DURABLE_IF(SVC_KEY_RECORDED("clue_requests", "$1", "$2"))
    "SELECT 'c'::text, x.n, x.id, NULL::text, NULL::text, NULL::bigint, "
    CLUE_FACT_COLS("c", "ou", "$4", "$1")
    " FROM unnest($5::bigint[]) WITH ORDINALITY x(id, n)"
    " LEFT JOIN clues c ON c.id = x.id LEFT JOIN units ou ON ou.id = c.owner_unit"
    " UNION ALL"
    " SELECT 'u', x.n, x.id, u.kind, NULL, NULL, " NULL_FACTS
    " FROM unnest($3::bigint[]) WITH ORDINALITY x(id, n) LEFT JOIN units u ON u.id = x.id"
    " UNION ALL"
    " SELECT 'r', 0, NULL, NULL, q.method, q.case_id, " NULL_FACTS
    " FROM (SELECT 1) one LEFT JOIN clue_requests q ON q.user_id = $1 AND q.request_id = $2"
    " ORDER BY 1, 2";

static const char create_sql[] =
    "SELECT " JC_SELECT("$1")
    " FROM case_create($1, $2, $3, $4, $5, $6, $7::bigint[], $8::bigint[], $9::bigint[], $10) r";
/* clang-format on */

/* May the unit at facts row i take part? Fails the call and returns false if not. */
static bool participant_ok(rpc_call_t *call, const db_result_t *r, int i, const authz_case_t *jc) {
  int64_t id = svc_col_i64(r, i, CF_ID);
  clue_unit_kind_t kind = (clue_unit_kind_t)clue_unit_kind_of(db_value(r, i, CF_KIND));
  authz_result_t res = authz_case_participant_ok(jc, "participant_unit_ids", id, kind);

  if (res.decision == AUTHZ_NOT_FOUND) {
    log_info("call %s: %s refused (5): %s", rpc_call_id(call), rpc_call_method(call)->path,
             res.message);
    clue_not_found(call, res.message);
  } else if (!authz_ok(&res)) {
    clue_refuse_entry(call, "unit", id, &res);
  }
  return authz_ok(&res);
}

/* May the clue at facts row i join? Records its version in versions[] (by its position in
 * the request); fails the call and returns false if not. */
static bool clue_may_join(rpc_call_t *call, const db_result_t *r, int i,
                          const Clue__V1__CreateJointCaseRequest *req, const authz_case_t *jc,
                          int64_t *versions) {
  authz_principal_t p = clue_principal(call);
  int64_t pos = svc_col_i64(r, i, CF_POS);
  authz_result_t res;
  clue_row_t row;

  (void)clue_row_facts(r, i, CF_CLUE, &row);
  res = authz_can_add_clue_to_case(&p, jc, row.id ? &row.facts : NULL);
  if (!authz_ok(&res)) {
    clue_refuse_entry(call, "clue_ids: clue", svc_col_i64(r, i, CF_ID), &res);
    return false;
  }
  if (pos >= 1 && (size_t)pos <= req->n_clue_ids)
    versions[pos - 1] = row.version;
  return true;
}

/* A refused creation (svc_sight_on_refusal()): the facts read again, and a listed clue the
 * caller no longer sees answered as a fresh call answers it, the first the decision meets. */
static bool create_hidden(rpc_call_t *call, const db_result_t *r, void *arg) {
  authz_principal_t p = clue_principal(call);
  authz_case_t jc = {.lead_unit_id = p.unit_id, .principal_in_case = true};
  authz_result_t res;
  clue_row_t row;
  (void)arg;

  for (int i = 0; i < db_rows(r); i++) {
    if (db_value(r, i, CF_TAG)[0] != 'c')
      continue;
    (void)clue_row_facts(r, i, CF_CLUE, &row);
    res = authz_can_add_clue_to_case(&p, &jc, row.id ? &row.facts : NULL);
    if (authz_ok(&res))
      continue;
    if (res.decision != AUTHZ_NOT_FOUND)
      return false;
    clue_refuse_entry(call, "clue_ids: clue", svc_col_i64(r, i, CF_ID), &res);
    return true;
  }
  return false;
}

static void got_create_facts(rpc_call_t *call, const db_result_t *r, void *arg) {
  const create_req_t *cr = arg;
  const Clue__V1__CreateJointCaseRequest *req = cr->req;
  authz_principal_t p = clue_principal(call);
  authz_case_t jc = {.lead_unit_id = p.unit_id, .principal_in_case = true};
  size_t nversions = req->n_clue_ids ? req->n_clue_ids : 1;
  int n = db_rows(r);
  int64_t *versions;
  const char *params[10];

  if ((versions = rpc_call_alloc(call, nversions * sizeof(*versions))) == NULL) {
    clue_oom(call);
    return;
  }
  memset(versions, 0, nversions * sizeof(*versions));
  for (int i = 0; i < n; i++) {
    const char *tag = db_value(r, i, CF_TAG), *method = db_value(r, i, CF_REQ_METHOD);
    if (tag[0] != 'r' || method == NULL)
      continue;
    /* A retry: case_create answers with the first call's case (or refuses a request with
     * other fields than the first's). */
    if (strcmp(method, "CreateJointCase") != 0) {
      clue_refuse_reused(call, cr->request_id);
      return;
    }
    goto write;
  }
  /* Units first, as listed in the request; then the clues, each by the caller's consent. */
  for (int i = 0; i < n; i++)
    if (db_value(r, i, CF_TAG)[0] == 'u' && !participant_ok(call, r, i, &jc))
      return;
  for (int i = 0; i < n; i++)
    if (db_value(r, i, CF_TAG)[0] == 'c' && !clue_may_join(call, r, i, req, &jc, versions))
      return;

write:
  params[0] = svc_i64(call, p.user_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = cr->request_id;
  params[3] = svc_i64(call, clue_now_ms(call), 0);
  params[4] = cr->title;
  params[5] = cr->basis ? cr->basis : "";
  params[6] = cr->participants;
  params[7] = cr->clues;
  params[8] = svc_id_array(call, versions, req->n_clue_ids);
  params[9] = cr->request_sha256;
  if (!svc_all_set(params, 10) ||
      !svc_sight_on_refusal(call, &(svc_sight_t){.sql = create_facts_sql,
                                                 .nparams = 5,
                                                 .values = cr->facts,
                                                 .hidden = create_hidden})) {
    clue_oom(call);
    return;
  }
  svc_query(call, create_sql, 10, params, reply_case, NULL);
}

static void create_joint_case(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__CreateJointCaseRequest *req = (const void *)m;
  authz_principal_t p = clue_principal(call);
  authz_result_t res;
  validate_errors_t errs;
  create_req_t *cr;
  const char **params;

  if (validate_create(req, &errs) != 0 && clue_invalid_each(call, &errs))
    return;
  res = authz_can_create_case(&p);
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
  cr->title = clue_trimmed(call, req->title);
  cr->basis = clue_trimmed(call, req->basis);
  cr->participants = svc_id_array(call, req->participant_unit_ids, req->n_participant_unit_ids);
  cr->clues = svc_id_array(call, req->clue_ids, req->n_clue_ids);
  params = cr->facts;
  params[0] = svc_i64(call, p.user_id, 0);
  params[1] = cr->request_id;
  params[2] = cr->participants;
  params[3] = svc_i64(call, p.unit_id, 0);
  params[4] = cr->clues;
  if (cr->title == NULL || cr->request_sha256 == NULL || !svc_all_set(params, 5)) {
    clue_oom(call);
    return;
  }
  svc_query(call, create_facts_sql, 5, params, got_create_facts, cr);
}

/* ---- AddParticipant, RemoveParticipant -------------------------------------------------- */

typedef struct member_req {
  const char *method; /* AddParticipant, ..., as the key's record names it */
  bool remove;
  bool clue; /* AddClueToCase, RemoveClueFromCase */
  int64_t case_id;
  int64_t id; /* the unit or clue */
  const char *reason;
  /* The facts query's parameters, then with a request_id its key ([4], else NULL) and the
   * request's fingerprint ([5], request_sha256()), which only the write takes. */
  const char *facts[6];
} member_req_t;

/* Columns of the facts queries: the case, then the unit's or the clue's facts; with a
 * request_id, last the method of the key's record (NULL: a first call). */
enum {
  MF_CASE,
  MF_LEAD,
  MF_IN_CASE,
  MF_UNIT_KIND, /* participants */
  MF_TAKES_PART,
  MF_PARTICIPANT_REQ,
  MF_CLUE = MF_UNIT_KIND, /* clues: CLUE_FACT_COLS, then the two below */
  MF_CLUE_CASE = MF_CLUE + CLUE_FACT_NCOLS,
  MF_CLUE_REQ,
};

/* clang-format off */
#define PARTICIPANT_FACTS                                                                          \
    "jc.id, jc.lead_unit, joint_case_has_unit(jc.id, $2), u.kind, cp.unit_id IS NOT NULL"      \
    " FROM (SELECT 1) one"                                                                     \
    " LEFT JOIN joint_cases jc ON jc.id = $1"                                                  \
    " LEFT JOIN units u ON u.id = $3"                                                          \
    " LEFT JOIN case_participants cp ON cp.case_id = jc.id AND cp.unit_id = $3"
#define CLUE_FACTS                                                                                 \
    "jc.id, jc.lead_unit, joint_case_has_unit(jc.id, $2), " CLUE_FACT_COLS("c", "ou", "$2", "$4") \
    ", c.joint_case_id"                                                                        \
    " FROM (SELECT 1) one"                                                                     \
    " LEFT JOIN joint_cases jc ON jc.id = $1"                                                  \
    " LEFT JOIN clues c ON c.id = $3"                                                          \
    " LEFT JOIN units ou ON ou.id = c.owner_unit"
/* A call with a request_id ($5): the facts, then the method of the key's record with its
 * fingerprint (CLUE_REQ_METHOD()), and an answer from a record waits for the synchronous
 * standbys as a write's would. */
#define KEYED_FACTS(facts)                                                                         \
    SVC_DURABLE_IF(SVC_KEY_RECORDED("clue_requests", "$4", "$5"))                                 \
    "SELECT f.*, " CLUE_REQ_METHOD("q") " FROM (SELECT 1) two LEFT JOIN clue_requests q"       \
    " ON q.user_id = $4 AND q.request_id = $5 CROSS JOIN (SELECT " facts ") f"

static const char participant_facts_sql[] = "SELECT " PARTICIPANT_FACTS;
static const char clue_facts_sql[] = "SELECT " CLUE_FACTS;
static const char participant_facts_keyed_sql[] = KEYED_FACTS(PARTICIPANT_FACTS);
static const char clue_facts_keyed_sql[] = KEYED_FACTS(CLUE_FACTS);
/* clang-format on */

/* The case of a facts row, or false after answering NOT_FOUND / the refusal to manage it. */
static bool manage_or_refuse(rpc_call_t *call, const db_result_t *r, authz_case_t *jc) {
  authz_principal_t p = clue_principal(call);
  authz_result_t res;

  if (db_rows(r) != 1 || db_value(r, 0, MF_CASE) == NULL) {
    case_not_found(call);
    return false;
  }
  jc->lead_unit_id = svc_col_i64(r, 0, MF_LEAD);
  jc->principal_in_case = svc_col_bool(r, 0, MF_IN_CASE) != 0;
  res = authz_can_manage_case(&p, jc);
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return false;
  }
  return true;
}

/* Reply with the case after a change of its members (arg: the member_req_t). A caller who
 * takes a clue out of a case without seeing it (the owner's leader, whose unit has no part in
 * the case, or no longer has: a retry) gets the case's id only. Any other who does not see it,
 * a retry by a unit removed from the case since its first call, gets NOT_FOUND, as a fresh call
 * and as a missing case: an id alone would answer a case it no longer sees. */
static void reply_changed_case(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__JointCase only_id = CLUE__V1__JOINT_CASE__INIT;
  authz_principal_t p = clue_principal(call);
  const member_req_t *mr = arg;
  authz_case_t facts;
  authz_result_t res;

  if (db_rows(r) > 0) {
    facts = case_facts(r, 0);
    res = authz_can_see_case(&p, &facts);
    if (!authz_ok(&res) && mr->clue && mr->remove) {
      only_id.id = svc_col_i64(r, 0, JC_ID);
      (void)rpc_reply(call, &only_id.base);
      return;
    }
  }
  reply_case(call, r, NULL);
}

/* Run the write function fn(actor user, actor unit, now, case, unit or clue, [clue version,]
 * reason): participants have no version (0), clues the one the decision saw. With a request_id,
 * case_change_once() runs it (0052_admin_and_case_request_ids.sql), or answers a retry. */
static void write_member(rpc_call_t *call, const member_req_t *mr, const char *fn,
                         int64_t version) {
  authz_principal_t p = clue_principal(call);
  const char *params[9];
  const char *sql;
  int np = 0;

  params[np++] = svc_i64(call, p.user_id, 0);
  params[np++] = svc_i64(call, p.unit_id, 0);
  params[np++] = svc_i64(call, clue_now_ms(call), 0);
  params[np++] = svc_i64(call, mr->case_id, 0);
  params[np++] = svc_i64(call, mr->id, 0);
  if (version != 0 || mr->facts[4] != NULL)
    params[np++] = version != 0 ? svc_i64(call, version, 0) : "";
  if (mr->facts[4] != NULL)
    sql =
        rpc_call_printf(call,
                        "SELECT " JC_SELECT("$1") " FROM case_change_once('%s', $1, $2, $3, $4, $5,"
                                                  " nullif($6, '')::bigint, $7, $8, $9) r",
                        mr->method);
  else
    sql = rpc_call_printf(call, "SELECT " JC_SELECT("$1") " FROM %s($1, $2, $3, $4, $5, $6%s) r",
                          fn, version != 0 ? ", $7" : "");
  if (sql == NULL || !svc_all_set(params, np)) {
    clue_oom(call);
    return;
  }
  params[np++] = mr->reason; /* NULL when none was given */
  if (mr->facts[4] != NULL) {
    params[np++] = mr->facts[4];
    params[np++] = mr->facts[5];
  }
  svc_query(call, sql, np, params, reply_changed_case, (void *)mr);
}

/* A call whose request_id has a record (a retry, or a key of another request): the write
 * answers it under the key's lock, before any decision on the facts, which the first call
 * changed (docs/WRITES.md, "Retries"). */
static bool member_retry(rpc_call_t *call, const db_result_t *r, const member_req_t *mr, int col) {
  if (mr->facts[4] == NULL || db_rows(r) != 1 || db_value(r, 0, col) == NULL)
    return false;
  write_member(call, mr, NULL, 0);
  return true;
}

static void got_participant_facts(rpc_call_t *call, const db_result_t *r, void *arg) {
  const member_req_t *mr = arg;
  authz_case_t jc;
  authz_result_t res;
  bool takes_part;

  if (member_retry(call, r, mr, MF_PARTICIPANT_REQ))
    return;
  if (!manage_or_refuse(call, r, &jc))
    return;
  res = authz_case_participant_ok(
      &jc, "unit_id", mr->id, (clue_unit_kind_t)clue_unit_kind_of(db_value(r, 0, MF_UNIT_KIND)));
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  takes_part = svc_col_bool(r, 0, MF_TAKES_PART) != 0;
  if (!mr->remove && takes_part) {
    rpc_fail(call, GRPC_ALREADY_EXISTS, "unit %lld already takes part in joint case %lld",
             (long long)mr->id, (long long)mr->case_id);
    return;
  }
  if (mr->remove && !takes_part) {
    rpc_detail_precondition(call, "PARTICIPATION", "not a participant",
                            "the unit does not take part in the joint case");
    rpc_fail(call, GRPC_FAILED_PRECONDITION, "unit %lld does not take part in joint case %lld",
             (long long)mr->id, (long long)mr->case_id);
    return;
  }
  write_member(call, mr, mr->remove ? "case_remove_participant" : "case_add_participant", 0);
}

/* The decision of mr's clue change on the facts r (clue_facts_sql's); false when the case is
 * missing. */
static bool clue_member_decision(rpc_call_t *call, const db_result_t *r, const member_req_t *mr,
                                 authz_result_t *res, clue_row_t *row) {
  authz_principal_t p = clue_principal(call);
  authz_case_t jc;

  if (db_rows(r) != 1 || db_value(r, 0, MF_CASE) == NULL)
    return false;
  jc.lead_unit_id = svc_col_i64(r, 0, MF_LEAD);
  jc.principal_in_case = svc_col_bool(r, 0, MF_IN_CASE) != 0;
  (void)clue_row_facts(r, 0, MF_CLUE, row);
  if (mr->remove)
    *res = authz_can_remove_clue_from_case(&p, &jc, row->id ? &row->facts : NULL,
                                           svc_col_i64(r, 0, MF_CLUE_CASE) == mr->case_id);
  else
    *res = authz_can_add_clue_to_case(&p, &jc, row->id ? &row->facts : NULL);
  return true;
}

/* A refused change (svc_sight_on_refusal()): the facts read again, and NOT_FOUND, as a fresh
 * call is answered, when the caller no longer sees the case or the clue. */
static bool clue_member_hidden(rpc_call_t *call, const db_result_t *r, void *arg) {
  authz_result_t res;
  clue_row_t row;

  if (db_rows(r) != 1)
    return false;
  if (!clue_member_decision(call, r, arg, &res, &row)) {
    case_not_found(call);
    return true;
  }
  if (res.decision != AUTHZ_NOT_FOUND)
    return false;
  clue_refuse(call, &res);
  return true;
}

/* A retry of this very request (the key's record is this method's, with this request's
 * fingerprint, which covers the clue) by a caller recused from the clue since: answered as a
 * fresh call is, NOT_FOUND as for a missing clue (docs/COOPERATION.md, "Recusal"), where the
 * write would answer the case. True after answering. A key of another request goes on to the
 * write, which refuses it as before. */
static bool clue_retry_recused(rpc_call_t *call, const db_result_t *r, const member_req_t *mr) {
  authz_result_t res;
  clue_row_t row;

  if (mr->facts[4] == NULL || db_rows(r) != 1 ||
      !clue_request_method_is(r, MF_CLUE_REQ, mr->method) ||
      !clue_request_same(r, MF_CLUE_REQ, mr->facts[5]) ||
      !clue_member_decision(call, r, mr, &res, &row) || row.id == 0 ||
      !row.facts.principal_recused || res.decision != AUTHZ_NOT_FOUND)
    return false;
  clue_refuse(call, &res);
  return true;
}

static void got_clue_facts(rpc_call_t *call, const db_result_t *r, void *arg) {
  member_req_t *mr = arg;
  authz_result_t res;
  clue_row_t row;

  if (clue_retry_recused(call, r, mr) || member_retry(call, r, mr, MF_CLUE_REQ))
    return;
  if (!clue_member_decision(call, r, mr, &res, &row)) {
    case_not_found(call);
    return;
  }
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  if (!svc_sight_on_refusal(call, &(svc_sight_t){.sql = clue_facts_sql,
                                                 .nparams = 4,
                                                 .values = mr->facts,
                                                 .hidden = clue_member_hidden,
                                                 .arg = mr})) {
    clue_oom(call);
    return;
  }
  write_member(call, mr, mr->remove ? "case_remove_clue" : "case_add_clue", row.version);
}

/* The shared start of the four calls: validate, then read the facts. */
static void change_member(rpc_call_t *call, const ProtobufCMessage *m, const char *request_id,
                          int64_t case_id, const char *id_field, int64_t id, const char *reason,
                          bool remove, bool clue) {
  validate_errors_t e;
  member_req_t *mr;
  const char **params;
  int np;

  /* Every violation, one per field; removals say why, additions may. */
  validate_errors_init(&e);
  validate_each(&e, validate_id("case_id", case_id, validate_slot(&e)));
  validate_each(&e, validate_id(id_field, id, validate_slot(&e)));
  validate_each(&e, validate_reason("reason", reason, remove, validate_slot(&e)));
  validate_each(&e, validate_uuid("request_id", request_id, false, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  if ((mr = rpc_call_alloc(call, sizeof(*mr))) == NULL) {
    clue_oom(call);
    return;
  }
  mr->method = strrchr(rpc_call_method(call)->path, '/') + 1;
  mr->remove = remove;
  mr->clue = clue;
  mr->case_id = case_id;
  mr->id = id;
  mr->reason = clue_trimmed(call, reason);
  params = mr->facts;
  params[0] = svc_i64(call, case_id, 0);
  params[1] = svc_i64(call, clue_principal(call).unit_id, 0);
  params[2] = svc_i64(call, id, 0);
  params[3] = svc_i64(call, clue_principal(call).user_id, 0);
  if (params[0] == NULL || params[1] == NULL || params[2] == NULL || params[3] == NULL) {
    clue_oom(call);
    return;
  }
  params[4] = NULL;
  if ((np = clue_request_params(call, m, request_id, params, 4)) < 0)
    return;
  if (np > 4) {
    svc_query(call, clue ? clue_facts_keyed_sql : participant_facts_keyed_sql, 5, params,
              clue ? got_clue_facts : got_participant_facts, mr);
  } else if (clue) {
    svc_query(call, clue_facts_sql, 4, params, got_clue_facts, mr);
  } else {
    svc_query(call, participant_facts_sql, 3, params, got_participant_facts, mr);
  }
}

static void add_participant(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__AddParticipantRequest *req = (const void *)m;
  change_member(call, m, req->request_id, req->case_id, "unit_id", req->unit_id, req->reason, false,
                false);
}

static void remove_participant(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__RemoveParticipantRequest *req = (const void *)m;
  change_member(call, m, req->request_id, req->case_id, "unit_id", req->unit_id, req->reason, true,
                false);
}

static void add_clue_to_case(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__AddClueToCaseRequest *req = (const void *)m;
  change_member(call, m, req->request_id, req->case_id, "clue_id", req->clue_id, req->reason, false,
                true);
}

static void remove_clue_from_case(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__RemoveClueFromCaseRequest *req = (const void *)m;
  change_member(call, m, req->request_id, req->case_id, "clue_id", req->clue_id, req->reason, true,
                true);
}

/* ---- method table ----------------------------------------------------------------------- */

#define CASE_METHOD(name, fn, in, out) SVC_CLUE_METHOD("CaseService", name, fn, in, out)

const rpc_method_t case_methods[] = {
    CASE_METHOD("CreateJointCase", create_joint_case, create_joint_case_request, joint_case),
    CASE_METHOD("AddParticipant", add_participant, add_participant_request, joint_case),
    CASE_METHOD("RemoveParticipant", remove_participant, remove_participant_request, joint_case),
    CASE_METHOD("AddClueToCase", add_clue_to_case, add_clue_to_case_request, joint_case),
    CASE_METHOD("RemoveClueFromCase", remove_clue_from_case, remove_clue_from_case_request,
                joint_case),
    CASE_METHOD("GetJointCase", get_joint_case, get_joint_case_request, joint_case),
    /* Its cost grows with the caller's cases, not with the request (rpc_method_t.heavy). */
    SVC_HEAVY_METHOD("CaseService", "ListJointCases", list_joint_cases, list_joint_cases_request,
                     list_joint_cases_response),
};
const size_t case_nmethods = sizeof(case_methods) / sizeof(case_methods[0]);
