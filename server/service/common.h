#ifndef CLUED_SERVICE_COMMON_H
#define CLUED_SERVICE_COMMON_H

/* What every service file shares: running a query on behalf of a call, mapping database
 * errors to gRPC statuses, and small conversions. */

#include <stdbool.h>
#include <stdint.h>

#include "db/db.h"
#include "rpc/rpc.h"

/** Continuation of svc_query(): runs only if the call is still live and the query succeeded. */
typedef void (*svc_cb)(rpc_call_t *call, const db_result_t *r, void *arg);

/**
 * Run one statement for call. The call is referenced until the result arrives; if it is done
 * by then (cancelled, deadline) the result is dropped; on error the call fails with the mapped
 * status (see svc_fail_db); otherwise cb runs. Parameters are copied.
 *
 * For an authenticated call the statement runs in one transaction after one that sets the
 * acting token (the transaction-local setting clued.token_id), which audit_append() records
 * in every event the statement appends; still one round trip (a pipeline). r holds the
 * caller's statement's result only. Once the transaction has committed, the server's
 * audit tail looks for the events it may have appended (audit_tail_committed()).
 */
void svc_query(rpc_call_t *call, const char *sql, int nparams, const char *const *values, svc_cb cb,
               void *arg);

/**
 * Like svc_query() for a statement that appends no audit event (a read): it runs on its own,
 * without the acting token, which only audit_append() records, and so without the token
 * statement and the BEGIN and COMMIT around it.
 */
void svc_read(rpc_call_t *call, const char *sql, int nparams, const char *const *values, svc_cb cb,
              void *arg);

/**
 * Like svc_query() for one statement that records the acting token itself: it takes the
 * token id as one of its parameters (svc_token()) and passes it to audit_append(), so it runs
 * as one statement in a transaction of its own, with no token statement, BEGIN or COMMIT
 * around it (migrations/0018_one_statement_writes.sql). Once it has committed, the audit tail
 * looks for its events, as after svc_query().
 */
void svc_write(rpc_call_t *call, const char *sql, int nparams, const char *const *values,
               svc_cb cb, void *arg);

/**
 * The acting token's id as a query parameter in the call's memory: NULL when the call has no
 * token (public methods), or out of memory (*oom set, the call not failed).
 */
const char *svc_token(rpc_call_t *call, int *oom);

/**
 * The pool options of a request made for call: counted against its HTTP/2 connection and
 * its user (db_opts_t), and against the pool's heavy share when the call's method is heavy
 * (rpc_method_t.heavy), with its handle in *handle (NULL: none). Every other field is left
 * as it was.
 */
void svc_db_opts(rpc_call_t *call, db_req_t **handle, db_opts_t *o);

/**
 * Like svc_query() for several statements in one transaction (the token statement first, as
 * there); r->res[i] is the caller's statement i's result.
 */
void svc_txn(rpc_call_t *call, const db_stmt_t *stmts, int n, svc_cb cb, void *arg);

/**
 * Fail call from a database error: unavailable/queue full -> UNAVAILABLE; a SQLSTATE our own
 * SQL raises with a client-safe message -> the code of service/sql_errors.h's table, with that
 * message; 23505 -> ALREADY_EXISTS (DATA_LOSS, logged, for a registration number taken already:
 * clue_counters set back); 40001/40P01 and 55P03 (lock timeout) -> ABORTED; 57014
 * (statement timeout) -> UNAVAILABLE; anything else -> INTERNAL without details (logged).
 */
void svc_fail_db(rpc_call_t *call, const db_result_t *r);

/**
 * The request field an INVALID_ARGUMENT message names: its first word ("note_ids: note 5 is
 * not ...", "user_id must name ..."), in the call's memory; NULL when the message starts with
 * no field name, or out of memory. Every CLARG message of the migrations starts with the field
 * it is about (test_sql_rules checks), as does every INVALID_ARGUMENT of domain/authz.h:
 * svc_fail_db() and clue_refuse() name it in a BadRequest alike.
 */
const char *svc_message_field(rpc_call_t *call, const char *msg);

/**
 * The details of an ABORTED version conflict: ErrorInfo reason VERSION_CONFLICT (domain
 * clue.v1) with metadata current_version and expected_version, each left out when negative
 * (not known). The caller then fails the call with GRPC_ABORTED.
 */
void svc_version_conflict(rpc_call_t *call, int64_t current, int64_t expected);

/** Tells whether the caller of a refused write still sees what the write changes, from the
 * result r of svc_sight_t.sql: answers the call (NOT_FOUND, as a fresh call is answered) and
 * returns true when it does not; returns false when it does, or r does not say. */
typedef bool (*svc_hidden_fn)(rpc_call_t *call, const db_result_t *r, void *arg);

/** Tells a write's refusal (r: the write's error) to a caller who still sees what it changes. */
typedef void (*svc_told_fn)(rpc_call_t *call, const db_result_t *r, void *arg);

/** How a write's refusal is told when its caller may have lost sight of what it changes. */
typedef struct svc_sight {
  const char *sql; /* a read of what the fresh call's decision of sight needs */
  int nparams;
  const char *const *values; /* in the call's memory */
  svc_hidden_fn hidden;
  void *arg;
  /* NULL: the refusal is told as it is (svc_fail_db()); otherwise told() tells it, with
   * told_arg, for a write whose fresh call would say more than its SQL can */
  svc_told_fn told;
  void *told_arg;
} svc_sight_t;

/**
 * Before sending call's write: a refusal the database raises for it that would tell of the
 * object (a named SQLSTATE of a change made meanwhile, CLVER, CLPRE or CLDUP) is told only
 * after sight->sql, run on the primary once the write's transaction has ended, and
 * sight->hidden() have found that the caller still sees the object; otherwise the call is
 * answered as a fresh call whose caller does not see it: NOT_FOUND, as for a missing one.
 * The write changed nothing either way. sight is copied (its values must live in the call's
 * memory). Returns false when out of memory (nothing kept, the call not failed).
 */
bool svc_sight_on_refusal(rpc_call_t *call, const svc_sight_t *sight)
    __attribute__((warn_unused_result));

/** The caller's role and unit kind, or 0 for public calls. */
int svc_role(const rpc_call_t *call);

/** Fail with PERMISSION_DENIED unless the caller is an ADMIN; returns 1 if allowed. */
int svc_require_admin(rpc_call_t *call);

/** Decimal text of v in the call's memory (for query parameters); NULL when v == 0 and null0. */
const char *svc_i64(rpc_call_t *call, int64_t v, int null0);

/** Parse a decimal column value (NULL -> 0). */
int64_t svc_col_i64(const db_result_t *r, int row, int col);

/** A column value copied into the call's memory ("" for NULL). */
char *svc_col_str(rpc_call_t *call, const db_result_t *r, int row, int col);

/** "t" -> 1. */
int svc_col_bool(const db_result_t *r, int row, int col);

/** The message of row i of a list's result, in the call's memory; NULL when out of memory. */
typedef ProtobufCMessage *(*svc_row_fn)(rpc_call_t *call, const db_result_t *r, int i);

/**
 * A page of a list from r, whose query asked for one row more than the page holds: the
 * messages row() makes of r's first rows, in order, into *items (in the call's memory) and
 * *n: at most max of them, and no more than svc_page_fits() lets into a reply. *more says
 * whether rows follow the page (the one row more, or a row the bytes left out, which the
 * next page starts with). Returns 0, or -1 when out of memory (the call not failed).
 */
int svc_page_rows(rpc_call_t *call, const db_result_t *r, int max, svc_row_fn row,
                  ProtobufCMessage ***items, size_t *n, bool *more)
    __attribute__((warn_unused_result));

/** SQL fragment giving milliseconds since the epoch of a timestamptz expression. */
#define SVC_MS(expr) "(extract(epoch from " expr ") * 1000)::bigint"

/**
 * A WITH clause to put before the SELECT of a write call's statement: when the primary has
 * synchronous standbys and cond holds (the call's request key is recorded already: a retry),
 * the statement also writes (DB_SYNC_WAIT_CTE(), as the audit tail does), so
 * that its commit, and so the answer, waits until the standbys have every WAL record before
 * it. A retry of a call whose own commit wait was cancelled (a deadline) finds the record
 * committed on the primary alone; it is answered only once the record is on the standbys
 * too, so that what it acknowledges survives a failover (docs/SCALEOUT.md, "Cancelled
 * waits"). A first call's statement writes nothing more; without synchronous standbys no
 * statement does.
 */
#define SVC_DURABLE_IF(cond) "WITH " DB_SYNC_WAIT_CTE("durable", cond) " "
/** cond for SVC_DURABLE_IF(): the key rid of user is recorded in table. */
#define SVC_KEY_RECORDED(table, user, rid)                                                         \
  "EXISTS (SELECT 1 FROM " table " k WHERE k.user_id = " user " AND k.request_id = " rid ")"
/** The same for a batch: any key of the arrays users and rids. */
#define SVC_KEYS_RECORDED(table, users, rids)                                                      \
  "EXISTS (SELECT 1 FROM unnest(" users "::bigint[], " rids "::uuid[]) x(u, r) JOIN " table        \
  " k ON k.user_id = x.u AND k.request_id = x.r)"

#endif
