#ifndef CLUED_SERVICE_CLUE_ROW_H
#define CLUED_SERVICE_CLUE_ROW_H

/* What the ClueService files (clue.c, clue_list.c, proposal.c, ...) share: the SQL column
 * lists of a clue and a proposal, the mapping of those columns into protobuf-c messages in the
 * call's memory, the authorization facts of a clue row, and small conversions. The refusals
 * (clue_refuse, clue_invalid, clue_oom) serve the other services too.
 *
 * Column lists take SQL expressions as string literals: c is a row of table clues (a table
 * alias, or "o.clue" for a function's clue_outcome), ou the alias of the owner's units row,
 * unit the parameter holding the caller's unit id ("$2"), user the one holding the caller's user
 * id ("$1"). Every function returning a message
 * allocates it in the call's memory and returns NULL when out of memory. */

#include <stdbool.h>
#include <stdint.h>

#include "clue/v1/clue.pb-c.h"
#include "clue/v1/common.pb-c.h"
#include "domain/authz.h"
#include "domain/validate.h"
#include "service/common.h"

/* clang-format off */
/* The authorization facts of a clue: what authz.h needs, first so that a query may select
 * only these (CLUE_FACT_NCOLS columns). The joint case's lead unit and whether the caller's
 * unit takes part are asked only of a clue in a joint case (joint_case_lead() and
 * joint_case_has_unit(), plpgsql since 0023): a sub-select would cost its executor nodes on
 * every read, a call behind a CASE costs nothing when not made. */
#define CLUE_FACT_COLS(c, ou, unit, user)                                                       \
  "(" c ").id, (" c ").state, (" c ").version, (" c ").owner_unit, " ou ".kind, " ou            \
  ".liaison_room_id, CASE WHEN (" c ").joint_case_id IS NOT NULL THEN joint_case_lead((" c     \
  ").joint_case_id) END, CASE WHEN (" c ").joint_case_id IS NOT NULL THEN joint_case_has_unit((" \
  c ").joint_case_id, " unit ") ELSE false END, (" c ").pending_reviewer_unit, (" c            \
  ").deadline_extended, (" c ").has_reporter, " SVC_MS("(" c ").stage_deadline") ", "          \
  CLUE_USER_FACT_COLS(c, user)

/* The facts about the caller as a user (0019): an assignment counting while the unit that
 * made it owns the clue, a recusal, and whether every leader of the owner unit, and of the
 * unit reviewing a pending proposal, is recused. A clue that never had a handler or a
 * recusal (0020's flags: almost all) is not asked at all; the others through the plpgsql
 * functions of 0023, for the reason given above. */
#define CLUE_USER_FACT_COLS(c, user)                                                            \
  "CASE WHEN (" c ").has_handlers THEN clue_user_handles((" c ").id, " user ", (" c            \
  ").owner_unit) ELSE false END, CASE WHEN (" c ").has_recusals THEN clue_user_recused((" c     \
  ").id, " user ") ELSE false END, CASE WHEN (" c ").has_recusals THEN"                         \
  " clue_unit_leaders_recused((" c ").id, (" c ").owner_unit) ELSE false END, CASE WHEN (" c   \
  ").has_recusals AND (" c ").pending_reviewer_unit IS NOT NULL THEN clue_unit_leaders_recused((" \
  c ").id, (" c ").pending_reviewer_unit) ELSE false END"

/** Number of columns of CLUE_FACT_COLS. */
#define CLUE_FACT_NCOLS 16

/* Everything a Clue message shows (never the reporter): the facts, then the rest. */
#define CLUE_COLS(c, ou, unit, user)                                                            \
  CLUE_FACT_COLS(c, ou, unit, user)                                                             \
  ", (" c ").registration_number, (" c ").title, (" c ").summary, (" c ").source, (" c          \
  ").subject_name, (" c ").subject_position, (" c ").subject_rank_level, (" c                   \
  ").subject_is_top_leader, (" c ").host_unit, array_to_string((" c                             \
  ").violation_categories, chr(31)), (" c ").created_by, " SVC_MS("(" c ").created_at") ", "    \
  SVC_MS("(" c ").updated_at") ", (" c ").joint_case_id, (" c ").disposal, " ou ".code, " ou   \
  ".name, (SELECT cu.name FROM users cu WHERE cu.id = (" c ").created_by)"

/** Number of columns of CLUE_COLS. */
#define CLUE_NCOLS 34

/* The clue's current handlers (0019), as one text (clue_handlers_text() of 0023): per handler,
 * fields separated by chr(31) (user id, user name, unit id, unit code, assigned by, assigned
 * at in ms), handlers by chr(30), in the order they were assigned; NULL when none. Read by
 * clue_handlers_read(). */
#define CLUE_HANDLERS_COL(c)                                                                    \
  "CASE WHEN (" c ").has_handlers THEN clue_handlers_text((" c ").id, (" c ").owner_unit) END"

/* A proposal row p (alias, or "o.proposal"); all NULL when there is none. */
#define PROPOSAL_COLS(p)                                                                        \
  "(" p ").id, (" p ").clue_id, (" p ").from_state, (" p ").target, (" p ").reason, (" p        \
  ").details ->> 'disposal', (" p ").details ->> 'finding', (" p ").details ->> 'sanction_kind', " \
  "(" p ").details ->> 'persons_disciplined', (" p ").details ->> 'receiving_organ', (" p       \
  ").details ->> 'reviewer_unit_id', (" p ").proposer_user, (" p ").proposer_unit, (" p         \
  ").reviewer_unit, (" p ").status, (" p ").clue_version, (" p ").review_comment, (" p          \
  ").reviewed_by, " SVC_MS("(" p ").created_at") ", " SVC_MS("(" p ").decided_at") ", "         \
  "(SELECT pu.name FROM users pu WHERE pu.id = (" p ").proposer_user), "                         \
  "(SELECT pn.code FROM units pn WHERE pn.id = (" p ").proposer_unit), "                         \
  "(SELECT rn.code FROM units rn WHERE rn.id = (" p ").reviewer_unit), "                         \
  "(SELECT rn.name FROM units rn WHERE rn.id = (" p ").reviewer_unit)"

/** Number of columns of PROPOSAL_COLS. */
#define PROPOSAL_NCOLS 24

/* The columns of a mutation's clue_outcome aliased "o" (the caller in $1, its unit in $2): the clue,
 * then the proposal; and the join that gives the owner unit. */
#define OUTCOME_COLS CLUE_COLS("o.clue", "ou", "$2", "$1") ", " PROPOSAL_COLS("o.proposal")
#define OUTCOME_JOIN " o LEFT JOIN units ou ON ou.id = (o.clue).owner_unit"
/* clang-format on */

/** A clue row as read: its message (NULL when only facts were selected) and its facts. */
typedef struct clue_row {
  Clue__V1__Clue *clue;
  authz_clue_t facts;
  int64_t id; /* 0 when the row holds no clue (a LEFT JOIN found none) */
  int64_t version;
  int64_t stage_deadline_ms;
  bool has_reporter;
} clue_row_t;

/**
 * Read the CLUE_FACT_COLS at (row, col) into *out (clue left NULL). Returns 0; out->id is 0
 * when the columns are NULL (no clue).
 */
int clue_row_facts(const db_result_t *r, int row, int col, clue_row_t *out);

/**
 * Read the CLUE_COLS at (row, col) into *out, building out->clue with days_left/overdue as of
 * now_ms. Returns 0 (out->id 0 when there is no clue) or -ENOMEM.
 */
int clue_row_read(rpc_call_t *call, const db_result_t *r, int row, int col, int64_t now_ms,
                  clue_row_t *out) __attribute__((warn_unused_result));

/**
 * Read the CLUE_HANDLERS_COL at (row, col) into c->handlers. Returns 0 or -ENOMEM (also for a
 * malformed column, which the query never gives).
 */
int clue_handlers_read(rpc_call_t *call, const db_result_t *r, int row, int col, Clue__V1__Clue *c)
    __attribute__((warn_unused_result));

/**
 * Read the PROPOSAL_COLS at (row, col). Returns 0 and sets *out (NULL when the columns are
 * NULL: no proposal), or -ENOMEM. proposer_user_id and pending go to *facts when not NULL.
 */
int clue_proposal_read(rpc_call_t *call, const db_result_t *r, int row, int col,
                       Clue__V1__Proposal **out, authz_proposal_t *facts)
    __attribute__((warn_unused_result));

/* What a plain move changes, and what tells its own change from another (clue_row_moved()):
 * the clue's id, version, state, updated_at, stage_deadline and disposal, and the proposal of
 * the outcome, from a mutation's clue_outcome aliased "o". */
/* clang-format off */
#define MOVED_COLS                                                                              \
  "(o.clue).id, (o.clue).version, (o.clue).state, " SVC_MS("(o.clue).updated_at") ", "         \
  SVC_MS("(o.clue).stage_deadline") ", (o.clue).disposal, (o.proposal).id"
/* clang-format on */

/**
 * Bring row (read with clue_row_read() before a move) to what the move made of it, from the
 * MOVED_COLS of r's first row, if they are this move's change of the row as read: the same
 * clue at the next version, no proposal. Every other change of a clue's columns a reply shows
 * moves its version (state, owner, deadline, joint case; see clues.version), so the rest of
 * the row is still as read. Returns true if so (row updated; no pending proposal, the deadline
 * not extended, days_left and overdue as of now_ms), false otherwise (row unchanged).
 */
bool clue_row_moved(clue_row_t *row, const db_result_t *r, int64_t now_ms);

/** The caller as authz.h sees it. */
authz_principal_t clue_principal(rpc_call_t *call);

/** The authorization facts of a principal (NULL gives an all-zero principal, allowed nothing). */
authz_principal_t clue_principal_of(const rpc_principal_t *rp);

/** The server's deadline settings. */
clue_deadline_config_t clue_deadline_config(rpc_call_t *call);

/** The server's clock (ms since the epoch). */
int64_t clue_now_ms(rpc_call_t *call);

/**
 * True if the caller sees the clue of row; otherwise fails call with NOT_FOUND ("clue not
 * found", as for a missing id: row->id 0) and returns false.
 */
bool clue_see_or_refuse(rpc_call_t *call, const clue_row_t *row);

/** Like clue_see_or_refuse(), naming the call as what ("extend") in the log of a missing clue. */
bool clue_see_or_refuse_as(rpc_call_t *call, const char *what, const clue_row_t *row);

/**
 * A svc_query() callback for a statement answering one clue (CLUE_COLS first): reply with
 * it if the caller sees it (else clue_see_or_refuse()'s NOT_FOUND).
 */
void clue_reply_seen(rpc_call_t *call, const db_result_t *r, void *arg);

/** Fail call with an authz.h refusal (its code and message), logging the reason. */
void clue_refuse(rpc_call_t *call, const authz_result_t *res);

/**
 * Fail call with an authz.h refusal of one entry of a request's list, the message naming it
 * ("clue_ids: clue 7: clue not found"), with the rich details clue_refuse() gives res.
 */
void clue_refuse_entry(rpc_call_t *call, const char *what, int64_t id, const authz_result_t *res);

/* NOT_FOUND with msg for an object that does not exist, with the same rich details as
 * clue_refuse() gives a hidden one of that message: a missing and a hidden object must
 * answer alike, byte for byte. */
void clue_not_found(rpc_call_t *call, const char *msg);

/**
 * Before sending call's write of the clue clue_id: a refusal of the write that tells of the
 * clue (a change made meanwhile) is told only if the caller still sees the clue then
 * (authz_can_see_clue() on its facts read again); otherwise NOT_FOUND hidden_as ("clue not
 * found"), as clue_not_found() answers a missing clue (svc_sight_on_refusal()). hidden_as
 * must outlive the call. Returns false when out of memory (the call not failed).
 */
bool clue_sight_on_refusal(rpc_call_t *call, int64_t clue_id, const char *hidden_as)
    __attribute__((warn_unused_result));

/** As clue_sight_on_refusal(), a refusal to a caller who still sees the clue told by
 * told(call, refusal, told_arg) (svc_sight_t.told). */
bool clue_sight_on_refusal_told(rpc_call_t *call, int64_t clue_id, const char *hidden_as,
                                svc_told_fn told, void *told_arg)
    __attribute__((warn_unused_result));

/**
 * Fail call with ABORTED because the clue of row is not at the version the caller expected,
 * logging it with what naming the call ("move").
 */
void clue_refuse_stale(rpc_call_t *call, const char *what, const clue_row_t *row,
                       int64_t expected_version);

/**
 * Whether a change of the clue of row, which authz.h answered with res, may go on. Past
 * visibility and permission a stale version is refused first (clue_refuse_stale, naming the
 * call as what); then a refusal in res (clue_refuse). Returns false after failing call.
 */
bool clue_change_allowed(rpc_call_t *call, const char *what, const clue_row_t *row,
                         int64_t expected_version, const authz_result_t *res);

/**
 * Whether the idempotency record a facts query read at (0, col) is this call's kind: its method
 * (column col, CLUE_REQ_METHOD(), not NULL) is method and the id it names (column col + 1) is
 * id.
 */
bool clue_request_is(const db_result_t *r, int col, const char *method, int64_t id);

/** clue_request_is() without the id: the record (column col, CLUE_REQ_METHOD(), NULL when
 * none) is one of method's. */
bool clue_request_method_is(const db_result_t *r, int col, const char *method);

/**
 * Whether that record (column col, CLUE_REQ_METHOD()) was made by a request with the fields of
 * this one: its fingerprint is sha256 (request_sha256()), or it has none (a record of before
 * 0047_request_fingerprints.sql).
 */
bool clue_request_same(const db_result_t *r, int col, const char *sha256);

/** Fail call with INVALID_ARGUMENT: its request_id was already used for another call. */
void clue_refuse_reused(rpc_call_t *call, const char *request_id);

/** Fail call with INVALID_ARGUMENT: its request_id was already used with other fields. */
void clue_refuse_changed(rpc_call_t *call, const char *request_id);

/**
 * The select-list expression of the request record q's method as clue_request_is() and
 * clue_request_same() read it: the method, then a space and the fingerprint in hex if the
 * record has one.
 */
#define CLUE_REQ_METHOD(q)                                                                         \
  "(" q ".method || coalesce(' ' || encode(" q ".request_sha256, 'hex'), ''))"

/**
 * A statement taking the lock of the request key of user $1 and request_id $2 (uuid), the one
 * clue_request_begin() and rect_request_begin() take first: a write that must take it before
 * its own statement (to read in a snapshot that follows its locks) takes it by this.
 */
#define CLUE_REQUEST_KEY_LOCK_SQL                                                                  \
  "SELECT pg_advisory_xact_lock(hashtextextended('clue_requests/' || $1::bigint || '/' ||"         \
  " $2::uuid, 0))"

/** Fail call with INVALID_ARGUMENT if rc != 0 (a validate.h result); returns rc != 0. */
bool clue_invalid(rpc_call_t *call, int rc, const validate_error_t *err);

/** As clue_invalid(), for every violation e collected: one BadRequest field violation each
 * (described by its description, or else its message), the status message the first one's. Returns
 * true if call was failed. */
bool clue_invalid_each(rpc_call_t *call, const validate_errors_t *e);

/** Fail call with RESOURCE_EXHAUSTED "out of memory". */
void clue_oom(rpc_call_t *call);

/** The trimmed text of s copied into the call's memory; NULL if blank (or out of memory). */
const char *clue_trimmed(rpc_call_t *call, const char *s);

/**
 * The idempotency key of a validated request_id: its lower-case form in the call's memory, so
 * that a retry spelled in another case finds the first call. NULL when out of memory.
 */
const char *clue_request_key(rpc_call_t *call, const char *request_id);

/**
 * For a call whose validated request_id is optional: when m sent one, its key
 * (clue_request_key()) and fingerprint (request_sha256()) into params[n] and params[n + 1], in
 * the call's memory. Returns the number of parameters then (n when m sent none: the call runs
 * as a call without a key always did), or -1 after failing the call (out of memory).
 */
int clue_request_params(rpc_call_t *call, const ProtobufCMessage *m, const char *request_id,
                        const char **params, int n) __attribute__((warn_unused_result));

/** Database names of the proto enums ("LETTER_VISIT_REPORT"); NULL when out of range. */
const char *clue_source_db(int source);
const char *clue_disposal_db(int disposal);

/** The proto enum of a database name; 0 (UNSPECIFIED) if unknown or NULL. */
int clue_state_of(const char *s);
/** As clue_state_of() for unit kinds ("GROUP" -> 2). */
int clue_unit_kind_of(const char *s);

#endif
