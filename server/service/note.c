/* ClueService's notes (DESIGN.md §2 "Notes"): evidence summaries, meeting minutes, 问题会商
 * records. Anyone who sees a clue reads its notes; anyone who sees it adds notes except
 * AUDITORs and ADMINs (authz_can_add_note). Notes are append-only: the database refuses to
 * change or remove them (0005_cases.sql), and each is audited on the clue's chain. */

#include "service/note.h"

#include <stdio.h>
#include <string.h>

#include "log.h"
#include "service/clue_row.h"
#include "service/clue_scope.h"
#include "service/request_sha256.h"
#include "service/svc_util.h"

/* Database names of Clue__V1__NoteKind, by number. */
static const char *const kind_names[] = {
    NULL, "EVIDENCE_SUMMARY", "MEETING_MINUTES", "INTERVIEW_RECORD", "OTHER",
};
#define NKINDS ((int)(sizeof(kind_names) / sizeof(kind_names[0])))

/* A ListNotes page stops once it holds this much text (it always holds one note): counted in
 * the query, so that the notes past it are not fetched. */
#define NOTES_PAGE_TEXT_BYTES SVC_PAGE_BYTES

/* clang-format off */
/* A row of notes, aliased n. */
#define NOTE_COLS(n)                                                                            \
  n ".id, " n ".clue_id, " n ".kind, " n ".text, " n ".author_user, " n ".author_unit, "       \
  SVC_MS(n ".created_at") ", (SELECT nu.name FROM users nu WHERE nu.id = " n ".author_user), "  \
  "(SELECT nn.code FROM units nn WHERE nn.id = " n ".author_unit)"

/* Columns of the AddNote facts query after the clue's facts. */
enum {
  NF_REQ_METHOD = CLUE_FACT_NCOLS,
  NF_REQ_CLUE,
  NF_NOTE,
};

static const char add_facts_sql[] =
    SVC_DURABLE_IF(SVC_KEY_RECORDED("clue_requests", "$2", "$4"))
    "SELECT " CLUE_FACT_COLS("c", "ou", "$3", "$2") ", " CLUE_REQ_METHOD("q") ", q.clue_id, "
    NOTE_COLS("n")
    " FROM (SELECT 1) one"
    " LEFT JOIN clues c ON c.id = $1"
    " LEFT JOIN units ou ON ou.id = c.owner_unit"
    " LEFT JOIN clue_requests q ON q.user_id = $2 AND q.request_id = $4"
    " LEFT JOIN notes n ON n.id = q.note_id";

/* The write, in a transaction whose first statement takes the request key's lock (the one
 * clue_request_begin() takes) and whose second takes the clue's, as note_add() does (FOR
 * SHARE: it waits for every change that holds the clue, and two notes do not wait for each
 * other). The third adds the note only while the caller still sees the clue (%s: the clue
 * scope's condition on c, the caller's user in $1 and unit in $2) in its snapshot, taken once
 * both are held: an assignment ended, the clue handed over or taken out of its joint case, a
 * review decided (each holds the clue until it commits) or a unit removed from the case
 * since the facts read is seen there, and stops the note as the server's decision would
 * have. Looked at before the clue's lock, a change still holding the clue passed the look,
 * and the note, waiting for the clue, was written after it. No row then, and nothing
 * written. */
static const char add_lock_sql[] = CLUE_REQUEST_KEY_LOCK_SQL;
static const char add_clue_lock_sql[] = "SELECT 1 FROM clues WHERE id = $1 FOR SHARE";
static const char add_sql[] =
    "WITH s AS MATERIALIZED (SELECT c.id FROM clues c WHERE c.id = $5 AND %s)"
    " SELECT " NOTE_COLS("n") " FROM s CROSS JOIN LATERAL note_add($1, $2, $3, $4, s.id, $6, $7, $8, $9) n";

/* The clue's facts, then a page of its notes (one row with NULL note columns when none).
 * Notes past the text budget are not fetched, except the first one, which tells the reply
 * that more follow. Nor are the notes of a clue the caller does not see (%s: the clue scope's
 * condition on c, the caller's unit in $2 and user in $5): its answer must cost what a missing
 * clue's does (docs/COOPERATION.md). The server still decides sight on the facts; the
 * condition only spares the read. */
static const char list_sql[] =
    "SELECT " CLUE_FACT_COLS("c", "ou", "$2", "$5") ", " NOTE_COLS("n")
    " FROM clues c JOIN units ou ON ou.id = c.owner_unit"
    " LEFT JOIN LATERAL (SELECT * FROM (SELECT x.*, sum(octet_length(x.text)) OVER (ORDER BY x.id)"
    " - octet_length(x.text) AS text_before FROM notes x WHERE x.clue_id = c.id AND x.id > $3"
    " AND %s ORDER BY x.id LIMIT $4) p WHERE p.text_before <= " SVC_STR(NOTES_PAGE_TEXT_BYTES) ") n"
    " ON true WHERE c.id = $1 ORDER BY n.id";
/* clang-format on */

/* The note at (row, col) in the call's memory; NULL when out of memory. */
static Clue__V1__Note *note_read(rpc_call_t *call, const db_result_t *r, int row, int col) {
  Clue__V1__Note *n = rpc_call_alloc(call, sizeof(*n));

  if (n == NULL)
    return NULL;
  clue__v1__note__init(n);
  n->id = svc_col_i64(r, row, col + 0);
  n->clue_id = svc_col_i64(r, row, col + 1);
  n->kind = (Clue__V1__NoteKind)svc_name_index(kind_names, NKINDS, db_value(r, row, col + 2));
  n->text = svc_col_str(call, r, row, col + 3);
  n->author_user_id = svc_col_i64(r, row, col + 4);
  n->author_unit_id = svc_col_i64(r, row, col + 5);
  n->created_at_ms = svc_col_i64(r, row, col + 6);
  n->author_user_name = svc_col_str(call, r, row, col + 7);
  n->author_unit_code = svc_col_str(call, r, row, col + 8);
  return n->text && n->author_user_name && n->author_unit_code ? n : NULL;
}

/* ---- AddNote ---------------------------------------------------------------------------- */

typedef struct note_req {
  const Clue__V1__AddNoteRequest *req;
  const char *request_id;
  const char *request_sha256; /* request_sha256() */
  const char *text;
} note_req_t;

static void note_added(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__Note *n;
  (void)arg;

  if (db_rows(r) == 0) {
    log_info("call %s: note refused (5): the clue left the caller's sight meanwhile",
             rpc_call_id(call));
    clue_not_found(call, "clue not found");
    return;
  }
  if (db_rows(r) != 1 || db_value(r, 0, 0) == NULL || (n = note_read(call, r, 0, 0)) == NULL) {
    clue_oom(call);
    return;
  }
  (void)rpc_reply(call, &n->base);
}

static void got_add_facts(rpc_call_t *call, const db_result_t *r, void *arg) {
  const note_req_t *nr = arg;
  authz_principal_t p = clue_principal(call);
  authz_result_t res;
  Clue__V1__Note *n;
  clue_row_t row = {0};
  const char **params, **lock_params, *sql;
  char cond[CLUE_SCOPE_SQL_MAX];
  db_stmt_t *stmts;

  if (db_rows(r) != 1) {
    clue_oom(call);
    return;
  }
  (void)clue_row_facts(r, 0, 0, &row);
  if (db_value(r, 0, NF_REQ_METHOD) != NULL) {
    /* A retry: the first note, if the caller still sees its clue. */
    if (!clue_request_is(r, NF_REQ_METHOD, "AddNote", nr->req->clue_id) ||
        db_value(r, 0, NF_NOTE) == NULL) {
      clue_refuse_reused(call, nr->request_id);
      return;
    }
    if (!clue_see_or_refuse(call, &row))
      return;
    if ((n = note_read(call, r, 0, NF_NOTE)) == NULL) {
      clue_oom(call);
      return;
    }
    /* Another note under the key of the first: not its retry. (The fingerprint says so of a
     * record that has one; the note itself of one from before it.) */
    if ((int)n->kind != (int)nr->req->kind || nr->text == NULL || strcmp(n->text, nr->text) != 0 ||
        !clue_request_same(r, NF_REQ_METHOD, nr->request_sha256)) {
      clue_refuse_changed(call, nr->request_id);
      return;
    }
    (void)rpc_reply(call, &n->base);
    return;
  }
  if (row.id == 0) {
    (void)clue_see_or_refuse(call, &row);
    return;
  }
  res = authz_can_add_note(&p, &row.facts);
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  if ((params = rpc_call_alloc(call, 9 * sizeof(*params))) == NULL) {
    clue_oom(call);
    return;
  }
  params[0] = svc_i64(call, p.user_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = nr->request_id;
  params[3] = svc_i64(call, clue_now_ms(call), 0);
  params[4] = svc_i64(call, row.id, 0);
  params[5] = svc_i64(call, row.facts.owner_unit_id, 0);
  params[6] = kind_names[nr->req->kind];
  params[7] = nr->text;
  params[8] = nr->request_sha256;
  if (clue_scope_sql(authz_clue_scope(&p), "c", 2, 1, cond, sizeof(cond)) != 0)
    snprintf(cond, sizeof(cond), "false");
  sql = rpc_call_printf(call, add_sql, cond);
  /* As every write's: the owner compare's "handed over meanwhile" is told only while the
   * author still sees the clue. */
  if (sql == NULL || !svc_all_set(params, 9) ||
      !clue_sight_on_refusal(call, row.id, "clue not found") ||
      (stmts = rpc_call_alloc(call, 3 * sizeof(*stmts))) == NULL ||
      (lock_params = rpc_call_alloc(call, 2 * sizeof(*lock_params))) == NULL) {
    clue_oom(call);
    return;
  }
  lock_params[0] = params[0];
  lock_params[1] = params[2];
  stmts[0] = (db_stmt_t){.sql = add_lock_sql, .nparams = 2, .values = lock_params};
  stmts[1] = (db_stmt_t){.sql = add_clue_lock_sql, .nparams = 1, .values = &params[4]};
  stmts[2] = (db_stmt_t){.sql = sql, .nparams = 9, .values = params};
  svc_txn(call, stmts, 3, note_added, NULL);
}

void clue_add_note(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__AddNoteRequest *req = (const void *)m;
  authz_principal_t p = clue_principal(call);
  validate_errors_t e;
  note_req_t *nr;
  const char *params[4];

  validate_errors_init(&e);
  validate_each(&e, validate_id("clue_id", req->clue_id, validate_slot(&e)));
  validate_each(&e, validate_enum("kind", (int)req->kind, 1, NKINDS - 1, validate_slot(&e)));
  validate_each(&e, validate_note_text(req->text, validate_slot(&e)));
  validate_each(&e, validate_request_id(req->request_id, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  if ((nr = rpc_call_alloc(call, sizeof(*nr))) == NULL) {
    clue_oom(call);
    return;
  }
  nr->req = req;
  nr->request_id = clue_request_key(call, req->request_id);
  nr->text = clue_trimmed(call, req->text);
  nr->request_sha256 = request_sha256(call, m);
  params[0] = svc_i64(call, req->clue_id, 0);
  params[1] = svc_i64(call, p.user_id, 0);
  params[2] = svc_i64(call, p.unit_id, 0);
  params[3] = nr->request_id;
  if (nr->text == NULL || nr->request_sha256 == NULL || !svc_all_set(params, 4)) {
    clue_oom(call);
    return;
  }
  svc_query(call, add_facts_sql, 4, params, got_add_facts, nr);
}

/* ---- ListNotes -------------------------------------------------------------------------- */

static void got_notes(rpc_call_t *call, const db_result_t *r, void *arg) {
  const int32_t *page_size = arg;
  Clue__V1__ListNotesResponse resp = CLUE__V1__LIST_NOTES_RESPONSE__INIT;
  int n = db_rows(r);
  size_t text_bytes = 0;
  clue_row_t row = {0};

  if (n > 0)
    (void)clue_row_facts(r, 0, 0, &row);
  if (!clue_see_or_refuse(call, &row))
    return;
  if ((resp.notes = rpc_call_alloc(call, (size_t)n * sizeof(*resp.notes))) == NULL) {
    clue_oom(call);
    return;
  }
  for (int i = 0; i < n; i++) {
    const char *text = db_value(r, i, CLUE_FACT_NCOLS + 3);
    Clue__V1__Note *note;

    if (db_value(r, i, CLUE_FACT_NCOLS) == NULL)
      continue;
    if ((int32_t)resp.n_notes == *page_size ||
        (resp.n_notes > 0 && text_bytes + strlen(text) > NOTES_PAGE_TEXT_BYTES)) {
      resp.more = 1;
      break;
    }
    if ((note = note_read(call, r, i, CLUE_FACT_NCOLS)) == NULL) {
      clue_oom(call);
      return;
    }
    text_bytes += strlen(text);
    resp.notes[resp.n_notes++] = note;
  }
  (void)rpc_reply(call, &resp.base);
}

void clue_list_notes(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ListNotesRequest *req = (const void *)m;
  authz_principal_t p = clue_principal(call);
  validate_errors_t e;
  int32_t *page_size;
  const char *params[5], *sql;
  char cond[CLUE_SCOPE_SQL_MAX];

  if ((page_size = rpc_call_alloc(call, sizeof(*page_size))) == NULL) {
    clue_oom(call);
    return;
  }
  validate_errors_init(&e);
  validate_each(&e, validate_id("clue_id", req->clue_id, validate_slot(&e)));
  if (req->after_note_id < 0)
    validate_add(&e, "after_note_id", "after_note_id must not be negative");
  validate_each(&e, validate_page_size(req->page_size, page_size, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  params[0] = svc_i64(call, req->clue_id, 0);
  params[1] = svc_i64(call, p.unit_id, 0);
  params[2] = svc_i64(call, req->after_note_id, 0);
  /* One more than the page, to know whether more follow. */
  params[3] = rpc_call_i64(call, (int64_t)*page_size + 1);
  params[4] = svc_i64(call, p.user_id, 0);
  if (clue_scope_sql(authz_clue_scope(&p), "c", 2, 5, cond, sizeof(cond)) != 0)
    snprintf(cond, sizeof(cond), "false");
  sql = rpc_call_printf(call, list_sql, cond);
  if (sql == NULL || !svc_all_set(params, 5)) {
    clue_oom(call);
    return;
  }
  svc_query(call, sql, 5, params, got_notes, page_size);
}
