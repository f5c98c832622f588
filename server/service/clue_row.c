/* Rows of clues and proposals as protobuf-c messages, and what the ClueService files share. */

#include "service/clue_row.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rpc/auth.h"
#include "server.h"
#include "service/request_sha256.h"
#include "service/svc_util.h"

static const char *const source_names[] = {
    NULL,
    "LETTER_VISIT_REPORT",
    "INSPECTION_TOUR",
    "AUDIT",
    "SUPERIOR_ASSIGNED",
    "SELF_DISCOVERED",
    "OTHER_BODY_TRANSFER",
};

static const char *const disposal_names[] = {
    NULL,
    "TALK_OR_LETTER_INQUIRY",
    "NO_FURTHER_ACTION",
    "SHELVED",
};

static const char *const status_names[] = {
    NULL, "PENDING", "APPROVED", "REJECTED", "WITHDRAWN",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

const char *clue_source_db(int source) {
  return source > 0 && (size_t)source < NELEM(source_names) ? source_names[source] : NULL;
}

const char *clue_disposal_db(int disposal) {
  return disposal > 0 && (size_t)disposal < NELEM(disposal_names) ? disposal_names[disposal] : NULL;
}

int clue_unit_kind_of(const char *s) {
  return s ? auth_unit_kind_from_name(s) : 0;
}

int clue_state_of(const char *s) {
  clue_state_t st;
  return s && clue_state_from_name(s, &st) == 0 ? (int)st : 0;
}

int clue_row_facts(const db_result_t *r, int row, int col, clue_row_t *out) {
  memset(out, 0, sizeof(*out));
  out->id = svc_col_i64(r, row, col + 0);
  if (out->id == 0)
    return 0;
  out->facts.state = (clue_state_t)clue_state_of(db_value(r, row, col + 1));
  out->version = svc_col_i64(r, row, col + 2);
  out->facts.owner_unit_id = svc_col_i64(r, row, col + 3);
  out->facts.owner_unit_kind = (clue_unit_kind_t)clue_unit_kind_of(db_value(r, row, col + 4));
  out->facts.owner_liaison_room_id = svc_col_i64(r, row, col + 5);
  out->facts.case_lead_unit_id = svc_col_i64(r, row, col + 6);
  out->facts.principal_in_case = svc_col_bool(r, row, col + 7);
  out->facts.pending_reviewer_unit_id = svc_col_i64(r, row, col + 8);
  out->facts.deadline_extended = svc_col_bool(r, row, col + 9);
  out->has_reporter = svc_col_bool(r, row, col + 10);
  out->stage_deadline_ms = svc_col_i64(r, row, col + 11);
  out->facts.principal_is_handler = svc_col_bool(r, row, col + 12);
  out->facts.principal_recused = svc_col_bool(r, row, col + 13);
  out->facts.owner_leaders_recused = svc_col_bool(r, row, col + 14);
  out->facts.reviewer_leaders_recused = svc_col_bool(r, row, col + 15);
  return 0;
}

int clue_row_read(rpc_call_t *call, const db_result_t *r, int row, int col, int64_t now_ms,
                  clue_row_t *out) {
  Clue__V1__Clue *c;
  Clue__V1__SubjectPerson *s;
  char *cats;
  int k = col + CLUE_FACT_NCOLS;
  bool overdue;

  (void)clue_row_facts(r, row, col, out);
  if (out->id == 0)
    return 0;
  c = rpc_call_alloc(call, sizeof(*c));
  s = rpc_call_alloc(call, sizeof(*s));
  if (c == NULL || s == NULL)
    return -ENOMEM;
  clue__v1__clue__init(c);
  clue__v1__subject_person__init(s);
  c->id = out->id;
  c->state = (Clue__V1__ClueState)out->facts.state;
  c->version = out->version;
  c->owner_unit_id = out->facts.owner_unit_id;
  c->pending_proposal = out->facts.pending_reviewer_unit_id != 0;
  c->deadline_extended = out->facts.deadline_extended;
  c->reporter_on_file = out->has_reporter;
  c->stage_deadline_ms = out->stage_deadline_ms;
  clue_deadline_status(c->stage_deadline_ms, now_ms, &c->days_left, &overdue);
  c->overdue = overdue;

  c->registration_number = svc_col_str(call, r, row, k + 0);
  c->title = svc_col_str(call, r, row, k + 1);
  c->summary = svc_col_str(call, r, row, k + 2);
  c->source = (Clue__V1__SourceChannel)svc_name_index(source_names, NELEM(source_names),
                                                      db_value(r, row, k + 3));
  s->name = svc_col_str(call, r, row, k + 4);
  s->position = svc_col_str(call, r, row, k + 5);
  s->rank_level = svc_col_str(call, r, row, k + 6);
  s->is_top_leader = svc_col_bool(r, row, k + 7);
  c->subject = s;
  c->host_unit = svc_col_str(call, r, row, k + 8);
  cats = svc_col_str(call, r, row, k + 9);
  c->created_by = svc_col_i64(r, row, k + 10);
  c->created_at_ms = svc_col_i64(r, row, k + 11);
  c->updated_at_ms = svc_col_i64(r, row, k + 12);
  c->joint_case_id = svc_col_i64(r, row, k + 13);
  c->disposal = (Clue__V1__Disposal)svc_name_index(disposal_names, NELEM(disposal_names),
                                                   db_value(r, row, k + 14));
  c->owner_unit_code = svc_col_str(call, r, row, k + 15);
  c->owner_unit_name = svc_col_str(call, r, row, k + 16);
  c->created_by_name = svc_col_str(call, r, row, k + 17);
  if (c->owner_unit_code == NULL || c->owner_unit_name == NULL || c->created_by_name == NULL)
    return -ENOMEM;
  if (c->registration_number == NULL || c->title == NULL || c->summary == NULL || s->name == NULL ||
      s->position == NULL || s->rank_level == NULL || c->host_unit == NULL || cats == NULL ||
      svc_split_list(call, cats, &c->violation_categories, &c->n_violation_categories))
    return -ENOMEM;
  out->clue = c;
  return 0;
}

bool clue_row_moved(clue_row_t *row, const db_result_t *r, int64_t now_ms) {
  Clue__V1__Clue *c = row->clue;
  bool overdue;

  if (c == NULL || db_rows(r) != 1 || svc_col_i64(r, 0, 0) != row->id ||
      svc_col_i64(r, 0, 1) != row->version + 1 || db_value(r, 0, 6) != NULL)
    return false;
  row->version = svc_col_i64(r, 0, 1);
  row->facts.state = (clue_state_t)clue_state_of(db_value(r, 0, 2));
  row->facts.pending_reviewer_unit_id = 0;
  row->facts.deadline_extended = false;
  row->stage_deadline_ms = svc_col_i64(r, 0, 4);
  c->state = (Clue__V1__ClueState)row->facts.state;
  c->version = row->version;
  c->pending_proposal = false;
  c->deadline_extended = false;
  c->updated_at_ms = svc_col_i64(r, 0, 3);
  c->stage_deadline_ms = row->stage_deadline_ms;
  clue_deadline_status(c->stage_deadline_ms, now_ms, &c->days_left, &overdue);
  c->overdue = overdue;
  c->disposal =
      (Clue__V1__Disposal)svc_name_index(disposal_names, NELEM(disposal_names), db_value(r, 0, 5));
  return true;
}

/* Split s in place at sep into at most max fields; returns the count. */
static size_t split(char *s, char sep, char **out, size_t max) {
  size_t n = 0;
  while (n < max) {
    out[n++] = s;
    char *e = strchr(s, sep);
    if (e == NULL)
      break;
    *e = '\0';
    s = e + 1;
  }
  return n;
}

int clue_handlers_read(rpc_call_t *call, const db_result_t *r, int row, int col,
                       Clue__V1__Clue *c) {
  char *all, *f[6];
  size_t n = 1, i;

  c->n_handlers = 0;
  c->handlers = NULL;
  if (db_value(r, row, col) == NULL)
    return 0;
  if ((all = svc_col_str(call, r, row, col)) == NULL)
    return -ENOMEM;
  for (const char *q = all; *q; q++)
    n += *q == '\x1e';
  c->handlers = rpc_call_alloc(call, n * sizeof(*c->handlers));
  if (c->handlers == NULL)
    return -ENOMEM;
  for (i = 0; i < n; i++) {
    char *next = strchr(all, '\x1e');
    Clue__V1__Handler *h = rpc_call_alloc(call, sizeof(*h));
    if (next != NULL)
      *next = '\0';
    if (h == NULL || split(all, '\x1f', f, 6) != 6)
      return -ENOMEM;
    clue__v1__handler__init(h);
    h->user_id = strtoll(f[0], NULL, 10);
    h->user_name = f[1];
    h->unit_id = strtoll(f[2], NULL, 10);
    h->unit_code = f[3];
    h->assigned_by = strtoll(f[4], NULL, 10);
    h->assigned_at_ms = strtoll(f[5], NULL, 10);
    c->handlers[c->n_handlers++] = h;
    if (next == NULL)
      break;
    all = next + 1;
  }
  return 0;
}

int clue_proposal_read(rpc_call_t *call, const db_result_t *r, int row, int col,
                       Clue__V1__Proposal **out, authz_proposal_t *facts) {
  Clue__V1__Proposal *p;
  Clue__V1__TransitionDetails *d;

  *out = NULL;
  if (db_value(r, row, col) == NULL)
    return 0;
  p = rpc_call_alloc(call, sizeof(*p));
  d = rpc_call_alloc(call, sizeof(*d));
  if (p == NULL || d == NULL)
    return -ENOMEM;
  clue__v1__proposal__init(p);
  clue__v1__transition_details__init(d);
  p->id = svc_col_i64(r, row, col + 0);
  p->clue_id = svc_col_i64(r, row, col + 1);
  p->from_state = (Clue__V1__ClueState)clue_state_of(db_value(r, row, col + 2));
  p->target = (Clue__V1__ClueState)clue_state_of(db_value(r, row, col + 3));
  p->reason = svc_col_str(call, r, row, col + 4);
  d->disposal = (Clue__V1__Disposal)svc_name_index(disposal_names, NELEM(disposal_names),
                                                   db_value(r, row, col + 5));
  d->finding = svc_col_str(call, r, row, col + 6);
  d->sanction_kind = svc_col_str(call, r, row, col + 7);
  d->persons_disciplined = (int32_t)svc_col_i64(r, row, col + 8);
  d->receiving_organ = svc_col_str(call, r, row, col + 9);
  d->reviewer_unit_id = svc_col_i64(r, row, col + 10);
  p->details = d;
  p->proposer_user_id = svc_col_i64(r, row, col + 11);
  p->proposer_unit_id = svc_col_i64(r, row, col + 12);
  p->reviewer_unit_id = svc_col_i64(r, row, col + 13);
  p->status = (Clue__V1__ProposalStatus)svc_name_index(status_names, NELEM(status_names),
                                                       db_value(r, row, col + 14));
  p->clue_version = svc_col_i64(r, row, col + 15);
  p->review_comment = svc_col_str(call, r, row, col + 16);
  p->reviewed_by = svc_col_i64(r, row, col + 17);
  p->created_at_ms = svc_col_i64(r, row, col + 18);
  p->decided_at_ms = svc_col_i64(r, row, col + 19);
  p->proposer_user_name = svc_col_str(call, r, row, col + 20);
  p->proposer_unit_code = svc_col_str(call, r, row, col + 21);
  p->reviewer_unit_code = svc_col_str(call, r, row, col + 22);
  p->reviewer_unit_name = svc_col_str(call, r, row, col + 23);
  if (p->reason == NULL || d->finding == NULL || d->sanction_kind == NULL ||
      d->receiving_organ == NULL || p->review_comment == NULL || p->proposer_user_name == NULL ||
      p->proposer_unit_code == NULL || p->reviewer_unit_code == NULL ||
      p->reviewer_unit_name == NULL)
    return -ENOMEM;
  if (facts != NULL) {
    facts->proposer_user_id = p->proposer_user_id;
    facts->proposer_unit_id = p->proposer_unit_id;
    facts->reviewer_unit_id = p->reviewer_unit_id;
    facts->pending = p->status == CLUE__V1__PROPOSAL_STATUS__PROPOSAL_STATUS_PENDING;
  }
  *out = p;
  return 0;
}

authz_principal_t clue_principal(rpc_call_t *call) {
  return clue_principal_of(rpc_call_principal(call));
}

authz_principal_t clue_principal_of(const rpc_principal_t *rp) {
  authz_principal_t p = {0};

  if (rp != NULL) {
    p.user_id = rp->user_id;
    p.unit_id = rp->unit_id;
    p.unit_kind = (clue_unit_kind_t)rp->unit_kind;
    p.role = (clue_role_t)rp->role;
  }
  return p;
}

clue_deadline_config_t clue_deadline_config(rpc_call_t *call) {
  const server_t *srv = rpc_call_server(call);
  clue_deadline_config_t cfg;

  cfg.accepted_days = srv->cfg.accepted_deadline_days;
  cfg.preliminary_check_days = srv->cfg.prelim_deadline_days;
  cfg.filed_days = srv->cfg.filed_deadline_days;
  return cfg;
}

int64_t clue_now_ms(rpc_call_t *call) {
  return server_now_ms(rpc_call_server(call));
}

bool clue_see_or_refuse(rpc_call_t *call, const clue_row_t *row) {
  return clue_see_or_refuse_as(call, rpc_call_method(call)->path, row);
}

bool clue_see_or_refuse_as(rpc_call_t *call, const char *what, const clue_row_t *row) {
  authz_principal_t p = clue_principal(call);
  authz_result_t res;

  if (row->id == 0) {
    log_info("call %s: %s refused (5): no such clue", rpc_call_id(call), what);
    rpc_detail_resource(call, "clue.v1.Clue", "");
    rpc_fail(call, GRPC_NOT_FOUND, "clue not found");
    return false;
  }
  res = authz_can_see_clue(&p, &row->facts);
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return false;
  }
  return true;
}

void clue_reply_seen(rpc_call_t *call, const db_result_t *r, void *arg) {
  clue_row_t row;
  (void)arg;

  if (db_rows(r) != 1 || clue_row_read(call, r, 0, 0, clue_now_ms(call), &row) != 0) {
    clue_oom(call);
    return;
  }
  if (!clue_see_or_refuse(call, &row))
    return;
  (void)rpc_reply(call, &row.clue->base);
}

/* clang-format off */
/* The facts of a clue that its sight is decided on, for a refused write. */
static const char sight_sql[] =
    "SELECT " CLUE_FACT_COLS("c", "ou", "$2", "$3")
    " FROM (SELECT 1) one LEFT JOIN clues c ON c.id = $1 LEFT JOIN units ou ON ou.id = c.owner_unit";
/* clang-format on */

static bool clue_hidden(rpc_call_t *call, const db_result_t *r, void *arg) {
  const char *hidden_as = arg;
  authz_principal_t p = clue_principal(call);
  authz_result_t res;
  clue_row_t row = {0};

  if (db_rows(r) != 1)
    return false;
  (void)clue_row_facts(r, 0, 0, &row);
  res = authz_can_see_clue(&p, &row.facts);
  if (row.id != 0 && authz_ok(&res))
    return false;
  log_info("call %s: %s refused (5): the caller no longer sees clue %lld", rpc_call_id(call),
           rpc_call_method(call)->path, (long long)row.id);
  clue_not_found(call, hidden_as);
  return true;
}

bool clue_sight_on_refusal(rpc_call_t *call, int64_t clue_id, const char *hidden_as) {
  return clue_sight_on_refusal_told(call, clue_id, hidden_as, NULL, NULL);
}

bool clue_sight_on_refusal_told(rpc_call_t *call, int64_t clue_id, const char *hidden_as,
                                svc_told_fn told, void *told_arg) {
  authz_principal_t p = clue_principal(call);
  const char **v = rpc_call_alloc(call, 3 * sizeof(*v));
  svc_sight_t sight = {
      .sql = sight_sql, .nparams = 3, .hidden = clue_hidden, .told = told, .told_arg = told_arg};

  if (v == NULL || (v[0] = svc_i64(call, clue_id, 0)) == NULL ||
      (v[1] = svc_i64(call, p.unit_id, 0)) == NULL || (v[2] = svc_i64(call, p.user_id, 0)) == NULL)
    return false;
  sight.values = v;
  sight.arg = (void *)hidden_as;
  return svc_sight_on_refusal(call, &sight);
}

/* The API type of what a NOT_FOUND message names. The message is the same for a hidden
 * object as for a missing one (authz.h), so the type is too. */
static const char *not_found_type(const char *msg) {
  if (strstr(msg, "rectification item") != NULL)
    return "clue.v1.RectificationItem";
  if (strstr(msg, "joint case") != NULL)
    return "clue.v1.JointCase";
  if (strstr(msg, "proposal") != NULL)
    return "clue.v1.Proposal";
  if (strncmp(msg, "token ", 6) == 0)
    return "clue.v1.Token";
  if (strstr(msg, "user") != NULL)
    return "clue.v1.User";
  if (strstr(msg, "unit") != NULL)
    return "clue.v1.Unit";
  return "clue.v1.Clue";
}

void clue_not_found(rpc_call_t *call, const char *msg) {
  rpc_detail_resource(call, not_found_type(msg), "");
  rpc_fail(call, GRPC_NOT_FOUND, "%s", msg);
}

/* Is the refusal about recusals (nobody without a conflict can act)? Its precondition
 * detail then has type RECUSAL rather than STATE. */
static bool recusal_reason(const authz_result_t *res) {
  return res->reason != NULL && strstr(res->reason, "recused") != NULL;
}

/* Refuse as res says. A FAILED_PRECONDITION the caller did not detail (named false) names
 * the condition that failed as its subject ("proposal pending", "terminal state", ...): a
 * fixed text of authz.h, given only after the caller was found to see the object. */
static void refuse_details(rpc_call_t *call, const authz_result_t *res, bool named) {
  const char *field;

  /* As svc_fail_db() names the field of a CLARG: a write that finds the fact changed
   * meanwhile (0050: a user disabled) answers as this fresh refusal does. */
  if (res->grpc_code == GRPC_INVALID_ARGUMENT &&
      (field = svc_message_field(call, res->message)) != NULL)
    rpc_detail_field(call, field, res->message);
  if (res->grpc_code == GRPC_NOT_FOUND)
    rpc_detail_resource(call, not_found_type(res->message), "");
  if (res->grpc_code == GRPC_FAILED_PRECONDITION && !named && res->reason != NULL)
    rpc_detail_precondition(call, recusal_reason(res) ? "RECUSAL" : "STATE", res->reason,
                            res->message);
}

static void refuse(rpc_call_t *call, const authz_result_t *res, bool named) {
  log_info("call %s: %s refused (%d): %s", rpc_call_id(call), rpc_call_method(call)->path,
           res->grpc_code, res->reason ? res->reason : "");
  refuse_details(call, res, named);
  rpc_fail(call, (grpc_status_t)res->grpc_code, "%s", res->message);
}

void clue_refuse(rpc_call_t *call, const authz_result_t *res) {
  refuse(call, res, false);
}

void clue_refuse_entry(rpc_call_t *call, const char *what, int64_t id, const authz_result_t *res) {
  log_info("call %s: %s refused (%d) for %s %lld: %s", rpc_call_id(call),
           rpc_call_method(call)->path, res->grpc_code, what, (long long)id,
           res->reason ? res->reason : "");
  /* The details of res's own message, as clue_refuse() gives them: the entry's name is in
   * the status message only, so a hidden entry's details are a missing one's. */
  refuse_details(call, res, false);
  rpc_fail(call, (grpc_status_t)res->grpc_code, "%s %lld: %s", what, (long long)id, res->message);
}

void clue_refuse_stale(rpc_call_t *call, const char *what, const clue_row_t *row,
                       int64_t expected_version) {
  log_info("call %s: %s refused (10): version %lld, expected %lld", rpc_call_id(call), what,
           (long long)row->version, (long long)expected_version);
  svc_version_conflict(call, row->version, expected_version);
  rpc_fail(call, GRPC_ABORTED,
           "clue %lld is at version %lld, not the expected %lld: it changed meanwhile; reload "
           "it and retry",
           (long long)row->id, (long long)row->version, (long long)expected_version);
}

bool clue_change_allowed(rpc_call_t *call, const char *what, const clue_row_t *row,
                         int64_t expected_version, const authz_result_t *res) {
  /* The caller's view of the clue is out of date, so what the change would need now is not
   * its question yet; whether the caller may make such a change at all comes first. */
  if ((authz_ok(res) || res->decision == AUTHZ_FAILED_PRECONDITION) &&
      !authz_refused_permission(res) && row->version != expected_version) {
    clue_refuse_stale(call, what, row, expected_version);
    return false;
  }
  if (!authz_ok(res)) {
    if (res->decision == AUTHZ_FAILED_PRECONDITION && recusal_reason(res))
      rpc_detail_precondition(call, "RECUSAL", res->reason, res->message);
    else if (res->decision == AUTHZ_FAILED_PRECONDITION)
      rpc_detail_precondition(call, "STATE", clue_state_name(row->facts.state), res->message);
    refuse(call, res, res->decision == AUTHZ_FAILED_PRECONDITION);
    return false;
  }
  return true;
}

bool clue_request_method_is(const db_result_t *r, int col, const char *method) {
  const char *v = db_value(r, 0, col);
  size_t n = strlen(method);

  return v != NULL && strncmp(v, method, n) == 0 && (v[n] == '\0' || v[n] == ' ');
}

bool clue_request_is(const db_result_t *r, int col, const char *method, int64_t id) {
  return clue_request_method_is(r, col, method) && svc_col_i64(r, 0, col + 1) == id;
}

bool clue_request_same(const db_result_t *r, int col, const char *sha256) {
  const char *v = strchr(db_value(r, 0, col), ' ');

  /* No fingerprint recorded (a record of before 0047), or none to compare: a retry. */
  return v == NULL || sha256 == NULL || strcmp(v + 1, sha256 + 2) == 0;
}

void clue_refuse_reused(rpc_call_t *call, const char *request_id) {
  rpc_detail_field(call, "request_id", "already used for another call");
  rpc_fail(call, GRPC_INVALID_ARGUMENT, "request_id %s was already used for another call",
           request_id);
}

void clue_refuse_changed(rpc_call_t *call, const char *request_id) {
  log_info("call %s: request_id %s refused: a retry with other fields", rpc_call_id(call),
           request_id);
  rpc_detail_field(call, "request_id", "already used for a different request");
  rpc_fail(call, GRPC_INVALID_ARGUMENT, "request_id %s was already used for a different request",
           request_id);
}

bool clue_invalid(rpc_call_t *call, int rc, const validate_error_t *err) {
  if (rc != 0) {
    rpc_detail_field(call, err->field, err->message);
    rpc_fail(call, GRPC_INVALID_ARGUMENT, "%s", err->message);
  }
  return rc != 0;
}

bool clue_invalid_each(rpc_call_t *call, const validate_errors_t *e) {
  if (validate_errors_result(e) == 0)
    return false;
  for (unsigned i = 0; i < e->n; i++)
    rpc_detail_field(call, e->v[i].field,
                     e->v[i].description ? e->v[i].description : e->v[i].message);
  rpc_fail(call, GRPC_INVALID_ARGUMENT, "%s", e->v[0].message);
  return true;
}

void clue_oom(rpc_call_t *call) {
  rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
}

const char *clue_trimmed(rpc_call_t *call, const char *s) {
  size_t len;
  const char *t = validate_trim(s, &len);
  char *out;

  if (len == 0 || (out = rpc_call_alloc(call, len + 1)) == NULL)
    return NULL;
  memcpy(out, t, len);
  out[len] = '\0';
  return out;
}

const char *clue_request_key(rpc_call_t *call, const char *request_id) {
  char *out = rpc_call_alloc(call, VALIDATE_UUID_LEN + 1);
  if (out == NULL || validate_uuid_normalize(request_id, out) != 0)
    return NULL;
  return out;
}

int clue_request_params(rpc_call_t *call, const ProtobufCMessage *m, const char *request_id,
                        const char **params, int n) {
  if (request_id == NULL || request_id[0] == '\0')
    return n;
  params[n] = clue_request_key(call, request_id);
  params[n + 1] = request_sha256(call, m);
  if (params[n] == NULL || params[n + 1] == NULL) {
    clue_oom(call);
    return -1;
  }
  return n + 2;
}
