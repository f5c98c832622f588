/* clue.v1.ClueService: submitting, reading and moving clues (DESIGN.md §2, §4).
 *
 * Each call: decode (the transport) -> validate (validate.h) -> read the facts in one query
 * -> decide (authz.h, clue_fsm.h) -> one write statement (a function of 0003_clues.sql) ->
 * encode. A submit and a plain move pass the acting token to their function and run as one
 * statement of their own (svc_write(), 0018_one_statement_writes.sql). Listing is in
 * clue_list.c, proposals in proposal.c, handover in handover.c, notes in note.c. */

#include "service/clue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "domain/bulletin.h"
#include "server.h"
#include "service/audit_event.h"
#include "service/batch.h"
#include "service/clue_list.h"
#include "service/clue_row.h"
#include "service/clue_scope.h"
#include "service/deadline.h"
#include "service/handler.h"
#include "service/handover.h"
#include "service/note.h"
#include "service/proposal.h"
#include "service/request_sha256.h"
#include "service/svc_util.h"

/* ---- SubmitClue ------------------------------------------------------------------------ */

#define CATEGORIES_MAX 32

/* Every violation of the request, one per field (validate_errors_t). */
static int validate_submit(const Clue__V1__SubmitClueRequest *req, validate_errors_t *e) {
  const Clue__V1__SubjectPerson *s = req->subject;
  const Clue__V1__ReporterContact *rep = req->reporter;
  const unsigned chars = VALIDATE_COUNT_CHARS;

  validate_errors_init(e);
  validate_each(e, validate_title("title", req->title, validate_slot(e)));
  validate_each(e, validate_summary(req->summary, validate_slot(e)));
  validate_each(e, validate_enum("source", (int)req->source, 1, 6, validate_slot(e)));
  validate_each(e, validate_name("subject.name", s ? s->name : NULL, true, validate_slot(e)));
  validate_each(e,
                validate_name("subject.position", s ? s->position : NULL, false, validate_slot(e)));
  validate_each(
      e, validate_name("subject.rank_level", s ? s->rank_level : NULL, false, validate_slot(e)));
  validate_each(e, validate_name("host_unit", req->host_unit, true, validate_slot(e)));
  if (req->n_violation_categories > CATEGORIES_MAX) {
    char msg[VALIDATE_MESSAGE_MAX];

    snprintf(msg, sizeof(msg), "violation_categories has more than %d entries", CATEGORIES_MAX);
    validate_add(e, "violation_categories", msg);
  }
  for (size_t i = 0; i < req->n_violation_categories; i++)
    if (validate_each(e, validate_name("violation_categories", req->violation_categories[i], true,
                                       validate_slot(e))) != 0)
      break;
  if (rep != NULL) {
    validate_each(e, validate_name("reporter.name", rep->name, false, validate_slot(e)));
    validate_each(e, validate_text("reporter.phone", rep->phone, 64, chars, validate_slot(e)));
    validate_each(e, validate_text("reporter.address", rep->address, 500, chars, validate_slot(e)));
    validate_each(e, validate_text("reporter.email", rep->email, 254, chars, validate_slot(e)));
  }
  validate_each(e, validate_request_id(req->request_id, validate_slot(e)));
  return validate_errors_result(e);
}

/* Registration numbers count per calendar year in China Standard Time (UTC+08:00), the
 * bulletin's calendar, whatever the time zone clued runs in: every instance numbers a clue
 * of 1 January 00:15 in Beijing in the new year, as every report counts it. */
static int year_of(int64_t ms) {
  return bulletin_month_of_ms(ms).year;
}

/* clang-format off */
static const char submit_sql[] =
    SVC_DURABLE_IF(SVC_KEY_RECORDED("clue_requests", "$1", "$3"))
    "SELECT " CLUE_COLS("s", "ou", "$2", "$1")
    " FROM clue_submit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
    " $15::text[], $16, $17, $18, $19, $20, $21) s JOIN units ou ON ou.id = (s).owner_unit";

/* The same for many SubmitClues at once (service/batch.h, 0022_batched_submits.sql): parameter
 * i is every call's parameter i ($15: each call's categories in their text form); the caller's
 * user and unit per row from the function. */
static const char submit_many_sql[] =
    SVC_DURABLE_IF(SVC_KEYS_RECORDED("clue_requests", "$1", "$3"))
    "SELECT " CLUE_COLS("s.clue", "ou", "s.actor_unit", "s.actor_user") ", s.ord"
    " FROM clue_submit_many($1::bigint[], $2::bigint[], $3::uuid[], $4::bigint[], $5::bigint[],"
    " $6::int[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],"
    " $13::boolean[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[],"
    " $20::bigint[], $21::bytea[]) s JOIN units ou ON ou.id = (s.clue).owner_unit";

static const char get_clue_sql[] =
    "SELECT " CLUE_COLS("c", "ou", "$2", "$3") ", " CLUE_HANDLERS_COL("c")
    " FROM clues c JOIN units ou ON ou.id = c.owner_unit WHERE c.id = $1";

/* The same for many GetClues at once (service/batch.h). A missing clue gives a row of NULLs,
 * which reads as no clue (clue_row_read(): id 0), as the one-call statement's no row does. */
static const char get_clues_sql[] =
    "SELECT " CLUE_COLS("c", "ou", "i.unit", "i.usr") ", " CLUE_HANDLERS_COL("c") ", i.k::int"
    " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS i(id, unit, usr, k)"
    " LEFT JOIN clues c ON c.id = i.id LEFT JOIN units ou ON ou.id = c.owner_unit ORDER BY i.k";
/* clang-format on */

static const svc_batch_kind_t get_clues = {.id = SVC_BATCH_GET_CLUE,
                                           .name = "get clue",
                                           .one_sql = get_clue_sql,
                                           .many_sql = get_clues_sql,
                                           .nparams = 3};
/* A batch of submissions holds the counter of each unit ($2) it numbers for until it commits. */
static const svc_batch_kind_t submits = {.id = SVC_BATCH_SUBMIT,
                                         .name = "submit",
                                         .one_sql = submit_sql,
                                         .many_sql = submit_many_sql,
                                         .nparams = 21,
                                         .writes = 1,
                                         .lock_param = 2,
                                         .key_param = 3};

static void submit_clue(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__SubmitClueRequest *req = (const void *)m;
  const Clue__V1__SubjectPerson *s = req->subject;
  const Clue__V1__ReporterContact *rep = req->reporter;
  authz_principal_t p = clue_principal(call);
  clue_deadline_config_t cfg = clue_deadline_config(call);
  int64_t now = clue_now_ms(call), deadline;
  authz_result_t res;
  validate_errors_t errs;
  const char *params[21];
  int oom;

  if (validate_submit(req, &errs) != 0 && clue_invalid_each(call, &errs))
    return;
  res = authz_can_submit(&p);
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  params[0] = svc_i64(call, p.user_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = clue_request_key(call, req->request_id);
  params[3] = svc_i64(call, now, 0);
  deadline = clue_stage_deadline_ms(&cfg, CLUE_STATE_INITIAL, now);
  params[4] = svc_i64(call, deadline, 1);
  params[5] = rpc_call_i64(call, year_of(now));
  params[6] = clue_trimmed(call, req->title);
  params[7] = clue_trimmed(call, req->summary);
  params[8] = clue_source_db(req->source);
  params[9] = clue_trimmed(call, s->name);
  params[10] = clue_trimmed(call, s->position);
  params[11] = clue_trimmed(call, s->rank_level);
  params[12] = s->is_top_leader ? "t" : "f";
  params[13] = clue_trimmed(call, req->host_unit);
  params[14] = svc_text_array_trimmed(call, req->violation_categories, req->n_violation_categories);
  params[15] = rep ? clue_trimmed(call, rep->name) : NULL;
  params[16] = rep ? clue_trimmed(call, rep->phone) : NULL;
  params[17] = rep ? clue_trimmed(call, rep->address) : NULL;
  params[18] = rep ? clue_trimmed(call, rep->email) : NULL;
  params[19] = svc_token(call, &oom);
  params[20] = request_sha256(call, m);
  if (oom || params[20] == NULL || params[0] == NULL || params[1] == NULL || params[2] == NULL ||
      params[3] == NULL || (deadline != 0 && params[4] == NULL) || params[5] == NULL ||
      params[6] == NULL || params[7] == NULL || params[9] == NULL || params[13] == NULL ||
      params[14] == NULL) {
    clue_oom(call);
    return;
  }
  /* A retried submit returns the first clue, which a handover may since have hidden. */
  svc_batched(call, &submits, params, clue_reply_seen, NULL);
}

/* ---- GetClue ---------------------------------------------------------------------------- */

static void reply_with_reporter(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__Clue *c = arg;
  Clue__V1__ReporterContact *rep;

  /* No row: the caller's unit stopped owning the clue after the first read. */
  if (db_rows(r) == 1) {
    if ((rep = rpc_call_alloc(call, sizeof(*rep))) == NULL) {
      clue_oom(call);
      return;
    }
    clue__v1__reporter_contact__init(rep);
    rep->name = svc_col_str(call, r, 0, 0);
    rep->phone = svc_col_str(call, r, 0, 1);
    rep->address = svc_col_str(call, r, 0, 2);
    rep->email = svc_col_str(call, r, 0, 3);
    if (rep->name == NULL || rep->phone == NULL || rep->address == NULL || rep->email == NULL) {
      clue_oom(call);
      return;
    }
    c->reporter = rep;
  }
  (void)rpc_reply(call, &c->base);
}

static void got_clue(rpc_call_t *call, const db_result_t *r, void *arg) {
  authz_principal_t p = clue_principal(call);
  authz_result_t res;
  clue_row_t row = {0};
  const char *params[3];
  (void)arg;

  if (db_rows(r) == 1 && db_value(r, 0, 0) != NULL &&
      clue_row_read(call, r, 0, 0, clue_now_ms(call), &row) != 0) {
    clue_oom(call);
    return;
  }
  if (!clue_see_or_refuse(call, &row))
    return;
  if (clue_handlers_read(call, r, 0, CLUE_NCOLS, row.clue) != 0) {
    clue_oom(call);
    return;
  }
  res = authz_can_see_reporter(&p, &row.facts);
  if (authz_ok(&res))
    res = authz_token_can_see_reporter(rpc_call_principal(call)->enrollment);
  if (!row.has_reporter || !authz_ok(&res)) {
    (void)rpc_reply(call, &row.clue->base);
    return;
  }
  /* The read of the reporter and its audit event are one statement. */
  params[0] = svc_i64(call, p.user_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = svc_i64(call, row.id, 0);
  if (params[0] == NULL || params[1] == NULL || params[2] == NULL) {
    clue_oom(call);
    return;
  }
  svc_query(call, "SELECT name, phone, address, email FROM clue_read_reporter($1, $2, $3)", 3,
            params, reply_with_reporter, row.clue);
}

/* GetClue and GetHistory: validate the id, then run sql with it ($1) and the caller's unit,
 * a read (reading the reporter, which is audited, is a statement of its own). */
static void read_clue(rpc_call_t *call, int64_t clue_id, const char *sql, svc_cb cb,
                      const svc_batch_kind_t *batched) {
  validate_error_t err;
  const char *params[3];

  if (clue_invalid(call, validate_id("clue_id", clue_id, &err), &err))
    return;
  params[0] = svc_i64(call, clue_id, 0);
  params[1] = svc_i64(call, clue_principal(call).unit_id, 0);
  params[2] = svc_i64(call, clue_principal(call).user_id, 0);
  if (params[0] == NULL || params[1] == NULL || params[2] == NULL) {
    clue_oom(call);
    return;
  }
  if (batched)
    svc_batched(call, batched, params, cb, NULL);
  else
    svc_read(call, sql, 3, params, cb, NULL);
}

static void get_clue(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__GetClueRequest *req = (const void *)m;
  read_clue(call, req->clue_id, get_clue_sql, got_clue, &get_clues);
}

/* ---- RequestTransition ------------------------------------------------------------------ */

/* A move request after validation: trimmed texts, NULL when blank. */
typedef struct move_req {
  const Clue__V1__RequestTransitionRequest *req;
  const char *request_id;
  const char *request_sha256; /* request_sha256() */
  const char *reason;
  int disposal;
  const char *finding;
  const char *sanction_kind;
  int32_t persons_disciplined;
  const char *receiving_organ;
  int64_t named_reviewer; /* details.reviewer_unit_id */
  const char *facts[5];   /* the parameters of move_facts_sql */
  clue_row_t row;         /* the clue as the facts read found it */
} move_req_t;

/* Columns of the facts query: the clue, the named reviewer's kind, and the idempotency record
 * with the proposal it names (read only for a retry, replayed_proposal()). */
enum {
  MF_NAMED_KIND = CLUE_NCOLS,
  MF_REQ_METHOD,
  MF_REQ_CLUE,
  MF_REQ_PROPOSAL,
  /* Whether every leader of a possible reviewer is recused: the case lead, the liaison room,
   * the room named on the request. */
  MF_LEAD_RECUSED,
  MF_LIAISON_RECUSED,
  MF_NAMED_RECUSED,
};

/* clang-format off */
#define REVIEWER_RECUSED(unit)                                                                  \
  "(EXISTS (SELECT 1 FROM recusals rx WHERE rx.clue_id = c.id)"                                 \
  " AND clue_unit_leaders_recused(c.id, " unit "))"

/* A move's facts read, for one move ($1 clue, $2 user, $3 request id, $4 unit, $5 named
 * reviewer) or many (the same as arrays, unnested): the select list and the joins, given the
 * expressions of the caller's unit and user and of the named reviewer. */
#define MOVE_FACTS_COLS(unit, user, named)                                                      \
  CLUE_COLS("c", "ou", unit, user) ", nu.kind, " CLUE_REQ_METHOD("q") ", q.clue_id, q.proposal_id"              \
  ", " REVIEWER_RECUSED("(SELECT jcl.lead_unit FROM joint_cases jcl WHERE jcl.id = c.joint_case_id)") \
  ", " REVIEWER_RECUSED("ou.liaison_room_id") ", " REVIEWER_RECUSED(named)
#define MOVE_FACTS_JOINS(clue, user, request_id, named)                                         \
  " LEFT JOIN clues c ON c.id = " clue                                                          \
  " LEFT JOIN units ou ON ou.id = c.owner_unit"                                                 \
  " LEFT JOIN units nu ON nu.id = " named                                                       \
  " LEFT JOIN clue_requests q ON q.user_id = " user " AND q.request_id = " request_id

static const char move_facts_sql[] =
    SVC_DURABLE_IF(SVC_KEY_RECORDED("clue_requests", "$2", "$3"))
    "SELECT " MOVE_FACTS_COLS("$4", "$2", "$5::bigint") " FROM (SELECT 1) one"
    MOVE_FACTS_JOINS("$1", "$2", "$3", "$5");

/* The same for many moves at once (service/batch.h): one row each, in order. */
static const char move_facts_many_sql[] =
    SVC_DURABLE_IF(SVC_KEYS_RECORDED("clue_requests", "$2", "$3"))
    "SELECT " MOVE_FACTS_COLS("i.unit", "i.usr", "i.named") ", i.k::int"
    " FROM unnest($1::bigint[], $2::bigint[], $3::uuid[], $4::bigint[], $5::bigint[])"
    " WITH ORDINALITY AS i(clue, usr, rid, unit, named, k)"
    MOVE_FACTS_JOINS("i.clue", "i.usr", "i.rid", "i.named") " ORDER BY i.k";

static const svc_batch_kind_t move_facts = {.id = SVC_BATCH_MOVE_FACTS,
                                             .name = "move facts",
                                             .one_sql = move_facts_sql,
                                             .many_sql = move_facts_many_sql,
                                             .nparams = 5};

static const char replay_proposal_sql[] =
    "SELECT " PROPOSAL_COLS("p") " FROM proposals p WHERE p.id = $1";

/* The details a move carries, as jsonb without the fields it does not need (NULLs). */
#define MOVE_DETAILS_OF(disposal, finding, sanction_kind, persons, organ)                      \
  "jsonb_build_object('disposal', " disposal ", 'finding', " finding ", 'sanction_kind', "        \
  sanction_kind ", 'persons_disciplined', " persons ", 'receiving_organ', " organ
#define MOVE_DETAILS MOVE_DETAILS_OF("$11::text", "$12::text", "$13::text", "$14::int", "$15::text")

/* A plain move answers what it changed only: the rest of the clue is as the facts read found it
 * (clue_row_moved()). */
static const char apply_move_sql[] =
    SVC_DURABLE_IF(SVC_KEY_RECORDED("clue_requests", "$1", "$3"))
    "SELECT " MOVED_COLS " FROM clue_apply_move($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
    " jsonb_strip_nulls(" MOVE_DETAILS ")), $16, $17, $18) o";

/* The same for many plain moves at once (service/batch.h, 0024_batched_moves.sql): parameter i
 * is every move's parameter i; the details are built per move as above. */
#define APPLY_MOVES(direct)                                                                     \
  "clue_apply_moves($1::bigint[], $2::bigint[], $3::uuid[],"                                     \
  " $4::bigint[], $5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[],"  \
  " ARRAY(SELECT jsonb_strip_nulls(" MOVE_DETAILS_OF("d", "f", "s", "p::int", "r") "))"          \
  " FROM unnest($11::text[], $12::text[], $13::text[], $14::text[], $15::text[])"                \
  " WITH ORDINALITY AS u(d, f, s, p, r, k) ORDER BY k), $16::bigint[], $17::bigint[], "          \
  direct ", $18::bytea[])"

static const char apply_moves_sql[] =
    SVC_DURABLE_IF(SVC_KEYS_RECORDED("clue_requests", "$1", "$3")) "SELECT " MOVED_COLS ", o.ord FROM " APPLY_MOVES("false") " o";

/* A move's write: its parameters (move_params()), as one call's or as arrays of many. */
enum { MOVE_NPARAMS = 18 };

static const svc_batch_kind_t plain_moves = {.id = SVC_BATCH_MOVE,
                                              .name = "move",
                                              .one_sql = apply_move_sql,
                                              .many_sql = apply_moves_sql,
                                              .nparams = MOVE_NPARAMS,
                                              .writes = 1};

/* A plain move sent without a facts read (0029_direct_moves.sql): the same parameters, the
 * write's guard checks what the decision left to the clue, and the answer is the whole clue as
 * the caller sees it (the facts read's row), or no row if the guard did not hold. */
static const char direct_move_sql[] =
    SVC_DURABLE_IF(SVC_KEY_RECORDED("clue_requests", "$1", "$3"))
    "SELECT " CLUE_COLS("o.clue", "ou", "$2::bigint", "$1::bigint") " FROM clue_apply_moves("
    "ARRAY[$1::bigint], ARRAY[$2::bigint], ARRAY[$3::uuid], ARRAY[$4::bigint], ARRAY[$5::bigint],"
    " ARRAY[$6::bigint], ARRAY[$7::text], ARRAY[$8::text], ARRAY[$9::text], ARRAY[$10::text],"
    " ARRAY[jsonb_strip_nulls(" MOVE_DETAILS "))], ARRAY[$16::bigint], ARRAY[$17::bigint], true,"
    " ARRAY[$18::bytea])"
    OUTCOME_JOIN;

static const char direct_moves_sql[] =
    SVC_DURABLE_IF(SVC_KEYS_RECORDED("clue_requests", "$1", "$3"))
    "SELECT " CLUE_COLS("o.clue", "ou", "($2::bigint[])[o.ord]", "($1::bigint[])[o.ord]")
    ", o.ord FROM " APPLY_MOVES("true") OUTCOME_JOIN;

/* A call the guard left out, alone or in a batch, or whose batch failed, gets no rows: it is
 * then read and decided (got_move_facts()), which gives its own answer. */
static const svc_batch_kind_t direct_moves = {.id = SVC_BATCH_MOVE_DIRECT,
                                               .name = "direct move",
                                               .one_sql = direct_move_sql,
                                               .many_sql = direct_moves_sql,
                                               .nparams = MOVE_NPARAMS,
                                               .writes = 1,
                                               .settle = 1};

static const char propose_sql[] =
    "SELECT " OUTCOME_COLS " FROM proposal_create($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
    " jsonb_strip_nulls(" MOVE_DETAILS ", 'reviewer_unit_id', $17::bigint)), $16, $18)" OUTCOME_JOIN;
/* clang-format on */

/* Reply with the clue and, when the call made or names one, the proposal. */
static void reply_transition(rpc_call_t *call, const clue_row_t *row, Clue__V1__Proposal *prop) {
  Clue__V1__RequestTransitionResponse resp = CLUE__V1__REQUEST_TRANSITION_RESPONSE__INIT;

  resp.clue = row->clue;
  resp.proposal = prop;
  resp.pending = prop && prop->status == CLUE__V1__PROPOSAL_STATUS__PROPOSAL_STATUS_PENDING;
  (void)rpc_reply(call, &resp.base);
}

static void moved(rpc_call_t *call, const db_result_t *r, void *arg) {
  clue_row_t row;
  Clue__V1__Proposal *prop;
  (void)arg;

  if (db_rows(r) != 1 || clue_row_read(call, r, 0, 0, clue_now_ms(call), &row) != 0 ||
      clue_proposal_read(call, r, 0, CLUE_NCOLS, &prop, NULL) != 0) {
    clue_oom(call);
    return;
  }
  if (!clue_see_or_refuse(call, &row))
    return;
  reply_transition(call, &row, prop);
}

/* A retry's answer with the proposal its first call made or named, as it is now. */
static void replayed_proposal(rpc_call_t *call, const db_result_t *r, void *arg) {
  move_req_t *mr = arg;
  Clue__V1__Proposal *prop = NULL;

  if (db_rows(r) == 1 && clue_proposal_read(call, r, 0, 0, &prop, NULL) != 0) {
    clue_oom(call);
    return;
  }
  reply_transition(call, &mr->row, prop);
}

/* The first call with this request_id already ran: answer with what it produced, as it is now
 * (its proposal, if any, read on its own: a retry is rare, the facts read of every move is
 * not). */
static void replay_transition(rpc_call_t *call, const db_result_t *r, move_req_t *mr,
                              clue_row_t *row) {
  const char *params[1];

  if (!clue_request_is(r, MF_REQ_METHOD, "RequestTransition", mr->req->clue_id)) {
    clue_refuse_reused(call, mr->request_id);
    return;
  }
  if (!clue_request_same(r, MF_REQ_METHOD, mr->request_sha256)) {
    clue_refuse_changed(call, mr->request_id);
    return;
  }
  if (!clue_see_or_refuse(call, row))
    return;
  if (db_value(r, 0, MF_REQ_PROPOSAL) == NULL) {
    reply_transition(call, row, NULL);
    return;
  }
  mr->row = *row;
  params[0] = db_value(r, 0, MF_REQ_PROPOSAL);
  svc_read(call, replay_proposal_sql, 1, params, replayed_proposal, mr);
}

/* The facts read again after a plain move whose answer was not its own change of the row as
 * first read (clue_row_moved()): its request record is there now, so answer as a retry. */
static void reread_moved(rpc_call_t *call, const db_result_t *r, void *arg) {
  move_req_t *mr = arg;
  clue_row_t row;

  if (db_rows(r) != 1 || clue_row_read(call, r, 0, 0, clue_now_ms(call), &row) != 0) {
    clue_oom(call);
    return;
  }
  if (db_value(r, 0, MF_REQ_METHOD) == NULL) {
    rpc_fail(call, GRPC_INTERNAL, "internal error");
    return;
  }
  replay_transition(call, r, mr, &row);
}

static void moved_plain(rpc_call_t *call, const db_result_t *r, void *arg) {
  move_req_t *mr = arg;

  if (!clue_row_moved(&mr->row, r, clue_now_ms(call))) {
    /* The move raced its first call (the same request_id) and answered with that call's
     * result, the clue as it is now: read it. */
    svc_read(call, move_facts_sql, 5, mr->facts, reread_moved, mr);
    return;
  }
  if (!clue_see_or_refuse(call, &mr->row))
    return;
  reply_transition(call, &mr->row, NULL);
}

/* What mr's request supplies of a move's fields. */
static clue_move_facts_t move_fields(const move_req_t *mr) {
  clue_move_facts_t mf = {.reason = mr->reason,
                          .disposal = mr->disposal,
                          .finding = mr->finding,
                          .sanction_kind = mr->sanction_kind,
                          .persons_disciplined = mr->persons_disciplined,
                          .receiving_organ = mr->receiving_organ};
  return mf;
}

/* The write's parameters (apply_move_sql's, propose_sql's) for mr's move by p of the clue id at
 * version; reviewer: a co-review's reviewing unit. False when out of memory. */
static bool move_params(rpc_call_t *call, const move_req_t *mr, const authz_principal_t *p,
                        int64_t id, int64_t version, const clue_move_t *move, int64_t reviewer,
                        const char **params) {
  clue_deadline_config_t cfg = clue_deadline_config(call);
  int64_t now = clue_now_ms(call), deadline = 0;
  int oom = 0;

  memset(params, 0, MOVE_NPARAMS * sizeof(*params));
  params[0] = svc_i64(call, p->user_id, 0);
  params[1] = svc_i64(call, p->unit_id, 0);
  params[2] = mr->request_id;
  params[17] = mr->request_sha256;
  params[3] = svc_i64(call, now, 0);
  params[4] = svc_i64(call, id, 0);
  params[5] = svc_i64(call, version, 0);
  params[6] = clue_state_name(move->from);
  params[7] = clue_state_name(move->to);
  params[8] = move->action;
  params[9] = mr->reason;
  /* Only the fields this move carries are stored. */
  if (move->required & CLUE_FIELD_DISPOSAL)
    params[10] = clue_disposal_db(mr->disposal);
  if (move->required & CLUE_FIELD_FINDING)
    params[11] = mr->finding;
  if (move->required & CLUE_FIELD_OUTCOME) {
    params[12] = mr->sanction_kind;
    params[13] = rpc_call_i64(call, mr->persons_disciplined);
  }
  if (move->required & CLUE_FIELD_RECEIVING_ORGAN)
    params[14] = mr->receiving_organ;
  if (move->co_review) {
    params[15] = svc_i64(call, reviewer, 0);
    params[16] = svc_i64(call, mr->named_reviewer == reviewer ? reviewer : 0, 1);
  } else {
    deadline = clue_stage_deadline_ms(&cfg, move->to, now);
    params[15] = svc_i64(call, deadline, 1);
    params[16] = svc_token(call, &oom);
  }
  return !oom && params[0] != NULL && params[1] != NULL && params[3] != NULL && params[4] != NULL &&
         params[5] != NULL && (!(move->required & CLUE_FIELD_OUTCOME) || params[13] != NULL) &&
         (!(move->co_review || deadline != 0) || params[15] != NULL);
}

static void got_move_facts(rpc_call_t *call, const db_result_t *r, void *arg) {
  move_req_t *mr = arg;
  const Clue__V1__RequestTransitionRequest *req = mr->req;
  authz_principal_t p = clue_principal(call);
  int64_t now = clue_now_ms(call), reviewer = 0;
  const clue_move_t *move = NULL;
  clue_move_facts_t mf = {0};
  authz_result_t res;
  validate_error_t err;
  clue_row_t row;
  const char *params[MOVE_NPARAMS];

  if (db_rows(r) != 1 || clue_row_read(call, r, 0, 0, now, &row) != 0) {
    clue_oom(call);
    return;
  }
  if (db_value(r, 0, MF_REQ_METHOD) != NULL) {
    replay_transition(call, r, mr, &row);
    return;
  }
  if (row.id == 0) {
    (void)clue_see_or_refuse(call, &row);
    return;
  }
  res = authz_can_move(&p, &row.facts, (clue_state_t)req->target, &move);
  if (!clue_change_allowed(call, "move", &row, req->expected_version, &res))
    return;
  mf = move_fields(mr);
  if (clue_invalid(call, clue_fsm_check_fields(move, &mf, &err), &err))
    return;
  if (!move->co_review && mr->named_reviewer != 0) {
    err.field = "details.reviewer_unit_id";
    snprintf(err.message, sizeof(err.message),
             "details.reviewer_unit_id does not apply: this move takes effect at once, with no "
             "review");
    (void)clue_invalid(call, VALIDATE_EINVAL, &err);
    return;
  }
  if (move->co_review) {
    res = authz_reviewer_unit(&row.facts, mr->named_reviewer,
                              (clue_unit_kind_t)clue_unit_kind_of(db_value(r, 0, MF_NAMED_KIND)),
                              &reviewer);
    if (!authz_ok(&res)) {
      clue_refuse(call, &res);
      return;
    }
    /* A reviewer unit none of whose leaders may see the clue would leave it stuck. */
    res = authz_reviewer_can_act(
        reviewer == row.facts.case_lead_unit_id       ? svc_col_bool(r, 0, MF_LEAD_RECUSED)
        : reviewer == row.facts.owner_liaison_room_id ? svc_col_bool(r, 0, MF_LIAISON_RECUSED)
                                                      : svc_col_bool(r, 0, MF_NAMED_RECUSED));
    if (!authz_ok(&res)) {
      clue_refuse(call, &res);
      return;
    }
  }

  if (!move_params(call, mr, &p, row.id, row.version, move, reviewer, params)) {
    clue_oom(call);
    return;
  }
  if (move->co_review) {
    svc_query(call, propose_sql, MOVE_NPARAMS, params, moved, NULL);
    return;
  }
  mr->row = row;
  svc_batched(call, &plain_moves, params, moved_plain, mr);
}

/* A move sent without a facts read: its row is the clue as moved (the caller's view), or there
 * is none, and then nothing was written: read and decide as any move. */
static void moved_direct(rpc_call_t *call, const db_result_t *r, void *arg) {
  move_req_t *mr = arg;
  server_t *srv = rpc_call_server(call);
  clue_row_t row;

  if (db_rows(r) == 0) {
    srv->direct_moves[1]++;
    svc_batched(call, &move_facts, mr->facts, got_move_facts, mr);
    return;
  }
  srv->direct_moves[0]++;
  if (db_rows(r) != 1 || clue_row_read(call, r, 0, 0, clue_now_ms(call), &row) != 0) {
    clue_oom(call);
    return;
  }
  if (!clue_see_or_refuse(call, &row))
    return;
  reply_transition(call, &row, NULL);
}

/* Send mr's move without reading the clue first, if the request and the caller decide it
 * (authz_move_unread()): the write's guard checks the rest (0029_direct_moves.sql). False if
 * they do not, or with --db-direct-moves 0. */
static bool move_direct(rpc_call_t *call, move_req_t *mr) {
  authz_principal_t p = clue_principal(call);
  clue_move_facts_t mf = move_fields(mr);
  const clue_move_t *move;
  const char **params;

  if (!rpc_call_server(call)->cfg.db_direct_moves ||
      (move = authz_move_unread(&p, (clue_state_t)mr->req->target, &mf)) == NULL)
    return false;
  /* A reviewer named for a move nobody reviews is refused, once the clue is read. */
  if (mr->named_reviewer != 0)
    return false;
  if ((params = rpc_call_alloc(call, MOVE_NPARAMS * sizeof(*params))) == NULL ||
      !move_params(call, mr, &p, mr->req->clue_id, mr->req->expected_version, move, 0, params)) {
    clue_oom(call);
    return true;
  }
  svc_batched(call, &direct_moves, params, moved_direct, mr);
  return true;
}

/* Every violation of the request, one per field (validate_errors_t). */
static int validate_move(const Clue__V1__RequestTransitionRequest *req, validate_errors_t *e) {
  const Clue__V1__TransitionDetails *d = req->details;

  validate_errors_init(e);
  validate_each(e, validate_id("clue_id", req->clue_id, validate_slot(e)));
  validate_each(e, validate_id("expected_version", req->expected_version, validate_slot(e)));
  validate_each(e, validate_enum("target", (int)req->target, 1, 5, validate_slot(e)));
  validate_each(e, validate_reason("reason", req->reason, false, validate_slot(e)));
  if (d != NULL) {
    validate_each(e, validate_enum("details.disposal", (int)d->disposal, 0, 3, validate_slot(e)));
    validate_each(e, validate_reason("details.finding", d->finding, false, validate_slot(e)));
    validate_each(
        e, validate_name("details.sanction_kind", d->sanction_kind, false, validate_slot(e)));
    validate_each(
        e, validate_name("details.receiving_organ", d->receiving_organ, false, validate_slot(e)));
    if (d->persons_disciplined < 0)
      validate_add(e, "details.persons_disciplined",
                   "details.persons_disciplined must not be negative");
    if (d->reviewer_unit_id < 0)
      validate_add(e, "details.reviewer_unit_id", "details.reviewer_unit_id must be positive");
  }
  validate_each(e, validate_request_id(req->request_id, validate_slot(e)));
  return validate_errors_result(e);
}

static void request_transition(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__RequestTransitionRequest *req = (const void *)m;
  const Clue__V1__TransitionDetails *d = req->details;
  validate_errors_t errs;
  move_req_t *mr;
  const char **params;

  if (validate_move(req, &errs) != 0 && clue_invalid_each(call, &errs))
    return;
  if ((mr = rpc_call_alloc(call, sizeof(*mr))) == NULL) {
    clue_oom(call);
    return;
  }
  mr->req = req;
  mr->request_id = clue_request_key(call, req->request_id);
  mr->request_sha256 = request_sha256(call, m);
  mr->reason = clue_trimmed(call, req->reason);
  if (d != NULL) {
    mr->disposal = (int)d->disposal;
    mr->finding = clue_trimmed(call, d->finding);
    mr->sanction_kind = clue_trimmed(call, d->sanction_kind);
    mr->persons_disciplined = d->persons_disciplined;
    mr->receiving_organ = clue_trimmed(call, d->receiving_organ);
    mr->named_reviewer = d->reviewer_unit_id;
  }
  params = mr->facts;
  params[0] = svc_i64(call, req->clue_id, 0);
  params[1] = svc_i64(call, clue_principal(call).user_id, 0);
  params[2] = mr->request_id;
  params[3] = svc_i64(call, clue_principal(call).unit_id, 0);
  params[4] = svc_i64(call, mr->named_reviewer, 1);
  /* A move refused as a change made meanwhile (a stale version, the clue handed over) is
   * told so only while the caller still sees the clue. */
  if (mr->request_id == NULL || mr->request_sha256 == NULL || params[0] == NULL ||
      params[1] == NULL || params[3] == NULL ||
      !clue_sight_on_refusal(call, req->clue_id, "clue not found")) {
    clue_oom(call);
    return;
  }
  if (move_direct(call, mr))
    return;
  /* The facts are a read: the move's one transaction is the write that follows. */
  svc_batched(call, &move_facts, params, got_move_facts, mr);
}

/* ---- GetHistory ------------------------------------------------------------------------- */

/* A GetHistory page holds at most this many events (and SVC_PAGE_BYTES). */
#define HISTORY_PAGE_MAX 1000

/* The facts and a page of the events in one query (one row with NULL event columns when
 * none), one event more than a page: whether more follow. The events of a clue the caller
 * does not see are not read (%s: the clue scope's condition on c, the caller's unit in $2 and
 * user in $3), so that it costs what a missing clue does (docs/COOPERATION.md); sight is
 * still decided on the facts. Each event is decoded and shown as ListAuditEvents shows it
 * (service/audit_event.h). */
/* clang-format off */
static const char history_sql[] =
    "SELECT " CLUE_FACT_COLS("c", "ou", "$2", "$3") ", " AUDIT_EVENT_COLS
    " FROM clues c JOIN units ou ON ou.id = c.owner_unit"
    " LEFT JOIN LATERAL (SELECT * FROM audit_events x WHERE x.subject_type = 'clue'"
    " AND x.subject_id = c.id AND x.seq > $4 AND %s ORDER BY x.seq"
    " LIMIT " SVC_STR(HISTORY_PAGE_MAX) " + 1) e ON true"
    " WHERE c.id = $1 ORDER BY e.seq";
/* clang-format on */

static void got_history(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__GetHistoryResponse resp = CLUE__V1__GET_HISTORY_RESPONSE__INIT;
  audit_filter_t viewer = {.viewer = clue_principal_of(rpc_call_principal(call))};
  int n = db_rows(r), k = 0;
  clue_row_t row = {0};
  audit_ev_t **evs;
  Clue__V1__AuditEvent *msgs;
  size_t bytes = 0;
  bool more = false;
  (void)arg;

  if (n > 0)
    (void)clue_row_facts(r, 0, 0, &row);
  if (!clue_see_or_refuse(call, &row))
    return;
  evs = calloc((size_t)(n ? n : 1), sizeof(*evs));
  msgs = rpc_call_alloc(call, (size_t)(n ? n : 1) * sizeof(*msgs));
  resp.events = rpc_call_alloc(call, (size_t)(n ? n : 1) * sizeof(*resp.events));
  if (evs == NULL || msgs == NULL || resp.events == NULL)
    goto oom;
  for (int i = 0; i < n; i++) {
    if (db_value(r, i, CLUE_FACT_NCOLS) == NULL)
      continue; /* the LEFT JOIN's row of a clue with no events */
    if (k == HISTORY_PAGE_MAX) {
      more = true; /* the one event past a page */
      break;
    }
    if (audit_ev_from_row(r, i, CLUE_FACT_NCOLS, &evs[k]) != 0)
      goto oom;
    audit_ev_to_msg(&viewer, evs[k], &msgs[k]);
    k++;
    if (!svc_page_fits(&bytes, &msgs[k - 1].base)) {
      more = true; /* the next page starts with this event */
      break;
    }
    resp.events[resp.n_events++] = &msgs[k - 1];
  }
  if (more && (resp.next_page_token =
                   (char *)svc_page_token_of(call, row.id, resp.events[resp.n_events - 1]->seq)) == NULL)
    goto oom;
  (void)rpc_reply(call, &resp.base);
  goto out;
oom:
  clue_oom(call);
out:
  for (int i = 0; evs != NULL && i < k; i++)
    free(evs[i]);
  free(evs);
}

static void get_history(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__GetHistoryRequest *req = (const void *)m;
  authz_principal_t p = clue_principal(call);
  validate_error_t err;
  const char *params[4], *sql;
  char cond[CLUE_SCOPE_SQL_MAX];
  int64_t after = 0;

  if (clue_invalid(call, validate_id("clue_id", req->clue_id, &err), &err))
    return;
  if (req->page_token[0] && (after = svc_page_after_of(req->page_token, req->clue_id)) == 0) {
    rpc_fail(call, GRPC_INVALID_ARGUMENT, "page_token is malformed or was given for another clue");
    return;
  }
  params[0] = svc_i64(call, req->clue_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = svc_i64(call, p.user_id, 0);
  params[3] = svc_i64(call, after, 0);
  if (clue_scope_sql(authz_clue_scope(&p), "c", 2, 3, cond, sizeof(cond)) != 0)
    snprintf(cond, sizeof(cond), "false");
  sql = rpc_call_printf(call, history_sql, cond);
  if (sql == NULL || !svc_all_set(params, 4)) {
    clue_oom(call);
    return;
  }
  svc_read(call, sql, 4, params, got_history, NULL);
}

/* ---- method table ----------------------------------------------------------------------- */

#define CLUE_METHOD(name, fn, in, out) SVC_CLUE_METHOD("ClueService", name, fn, in, out)

const rpc_method_t clue_methods[] = {
    CLUE_METHOD("SubmitClue", submit_clue, submit_clue_request, clue),
    CLUE_METHOD("GetClue", get_clue, get_clue_request, clue),
    /* A search reads every clue of the caller's scope, whatever the page size. */
    SVC_HEAVY_METHOD("ClueService", "ListClues", clue_list_clues, list_clues_request,
                     list_clues_response),
    CLUE_METHOD("RequestTransition", request_transition, request_transition_request,
                request_transition_response),
    CLUE_METHOD("ReviewProposal", clue_review_proposal, review_proposal_request,
                review_proposal_response),
    CLUE_METHOD("ListProposals", clue_list_proposals, list_proposals_request,
                list_proposals_response),
    CLUE_METHOD("HandOver", clue_hand_over, hand_over_request, clue),
    CLUE_METHOD("AddNote", clue_add_note, add_note_request, note),
    CLUE_METHOD("ListNotes", clue_list_notes, list_notes_request, list_notes_response),
    CLUE_METHOD("GetHistory", get_history, get_history_request, get_history_response),
    CLUE_METHOD("ExtendDeadline", clue_extend_deadline, extend_deadline_request, clue),
    CLUE_METHOD("AssignHandler", clue_assign_handler, assign_handler_request, clue),
    CLUE_METHOD("UnassignHandler", clue_unassign_handler, unassign_handler_request, clue),
    CLUE_METHOD("RecordRecusal", clue_record_recusal, record_recusal_request, recusal),
    CLUE_METHOD("ListRecusals", clue_list_recusals, list_recusals_request, list_recusals_response),
    CLUE_METHOD("ListAssignments", clue_list_assignments, list_assignments_request,
                list_assignments_response),
};
const size_t clue_nmethods = sizeof(clue_methods) / sizeof(clue_methods[0]);
