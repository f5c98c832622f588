#include "service/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/tail.h"
#include "clue/v1/common.pb-c.h"
#include "log.h"
#include "rpc/auth.h"
#include "server.h"
#include "service/clue_row.h"
#include "service/replica.h"
#include "service/sql_errors.h"
#include "service/svc_util.h"

typedef struct svc_job {
  rpc_call_t *call;
  svc_cb cb;
  void *arg;
  db_req_t *req;   /* cancelled by the call if it ends first */
  int skip;        /* leading results not the caller's (the token statement) */
  int writes;      /* may append audit events (svc_txn, not svc_read) */
  db_pool_t *pool; /* where it was sent; NULL: the server's (srv->db) */
  /* A read sent to a replica, kept to run it again on the primary if the replica cannot
   * answer it (replica_fall_back()); the values are copies in the call's memory. */
  const char *sql;
  int nparams;
  const char **values;
  int lsn; /* a read on the primary that also reads the WAL position (result 1) */
} svc_job_t;

const char *svc_message_field(rpc_call_t *call, const char *msg) {
  size_t n = strspn(msg, "abcdefghijklmnopqrstuvwxyz0123456789_.");

  if (n == 0 || (msg[n] != ':' && msg[n] != ' '))
    return NULL;
  return rpc_call_printf(call, "%.*s", (int)n, msg);
}

/* A write's refusal kept while the caller's sight is read again (svc_sight_on_refusal()). */
typedef struct sight_wait {
  svc_sight_t sight;
  db_result_t refusal; /* its sqlstate and message in the call's memory */
} sight_wait_t;

bool svc_sight_on_refusal(rpc_call_t *call, const svc_sight_t *sight) {
  sight_wait_t *w = rpc_call_alloc(call, sizeof(*w));

  if (w == NULL)
    return false;
  memset(w, 0, sizeof(*w));
  w->sight = *sight;
  rpc_call_set_refusal_note(call, w);
  return true;
}

static void sight_read(rpc_call_t *call, const db_result_t *r, void *arg) {
  sight_wait_t *w = arg;

  if (w->sight.hidden(call, r, w->sight.arg))
    return;
  if (w->sight.told)
    w->sight.told(call, &w->refusal, w->sight.told_arg);
  else
    svc_fail_db(call, &w->refusal);
}

/* Returns true when r, a refusal of call's write that tells of the object it changes (a
 * change made meanwhile: CLVER, CLPRE, CLDUP), will be told after the caller's sight is read
 * again: the decision a fresh call makes of sight comes before every other (domain/authz.h),
 * and the write's compare cannot make it. The read runs after the write's transaction ended,
 * so it sees every change that committed before the write was refused; a caller who lost
 * sight of the object in the same race as the change the write met (a recusal and a move, a
 * handover, the clue leaving the joint case it saw it through) is told what a fresh call is
 * told. */
static bool refusal_after_sight(rpc_call_t *call, const db_result_t *r) {
  sight_wait_t *w = rpc_call_refusal_note(call);
  const char *st = r->sqlstate;

  if (w == NULL || r->err != DB_EQUERY || st == NULL ||
      (strcmp(st, "CLVER") != 0 && strcmp(st, "CLPRE") != 0 && strcmp(st, "CLDUP") != 0))
    return false;
  rpc_call_set_refusal_note(call, NULL); /* once: after the read, r is told as it is */
  w->refusal.err = r->err;
  w->refusal.sqlstate = rpc_call_strdup(call, st);
  w->refusal.message = r->message ? rpc_call_strdup(call, r->message) : NULL;
  if (w->refusal.sqlstate == NULL || (r->message != NULL && w->refusal.message == NULL)) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return true;
  }
  svc_query(call, w->sight.sql, w->sight.nparams, w->sight.values, sight_read, w);
  return true;
}

void svc_version_conflict(rpc_call_t *call, int64_t current, int64_t expected) {
  char cur[24], exp[24];

  snprintf(cur, sizeof(cur), "%lld", (long long)current);
  snprintf(exp, sizeof(exp), "%lld", (long long)expected);
  rpc_detail_reason(call, "VERSION_CONFLICT", current >= 0 ? "current_version" : NULL,
                    current >= 0 ? cur : NULL);
  if (expected >= 0)
    rpc_detail_reason(call, "VERSION_CONFLICT", "expected_version", exp);
}

/* The versions a CLVER message of our SQL names: "... is at version N, not [the expected] M"
 * (a stale expected version), "(now version N, ..." (a proposal's clue moved on) or
 * "(now STATE at version N)": -1 for one it does not name (a clue handed over, or that left
 * its joint case, meanwhile). */
static void clver_versions(const char *msg, int64_t *current, int64_t *expected) {
  const char *p;
  char *end;

  *current = *expected = -1;
  if (msg == NULL)
    return;
  if ((p = strstr(msg, "is at version ")) != NULL) {
    *current = strtoll(p + strlen("is at version "), &end, 10);
    if (strncmp(end, ", not the expected ", 19) == 0)
      *expected = strtoll(end + 19, NULL, 10);
    else if (strncmp(end, ", not ", 6) == 0)
      *expected = strtoll(end + 6, NULL, 10);
  } else if ((p = strstr(msg, "(now version ")) != NULL) {
    *current = strtoll(p + strlen("(now version "), NULL, 10);
  } else if ((p = strstr(msg, "(now ")) != NULL && (p = strstr(p, " at version ")) != NULL) {
    *current = strtoll(p + strlen(" at version "), NULL, 10);
  }
}

/* The unique constraints a concurrent addition of the same thing runs into: the writers look
 * for a duplicate first and name it (CLDUP), but two at once both find none, and the second
 * insert's conflict is all that is left to say what exists. */
static const struct {
  const char *constraint, *message;
} duplicates[] = {
    {"units_code_key", "a unit with this code already exists (a concurrent addition)"},
    {"units_name_key", "a unit with this name already exists (a concurrent addition)"},
    {"users_unit_name_key", "the unit already has a user of this name (a concurrent addition)"},
    /* ... or of a name that is the same text (0061_names_unique_as_text.sql) */
    {"units_name_text_key", "a unit with this name already exists (a concurrent addition)"},
    {"users_unit_name_text_key",
     "the unit already has a user of this name (a concurrent addition)"},
};

void svc_fail_db(rpc_call_t *call, const db_result_t *r) {
  const char *st = r->sqlstate ? r->sqlstate : "";
  const char *field;
  grpc_status_t code;

  switch (r->err) {
  case DB_EUNAVAILABLE:
  case DB_ECLOSED:
    rpc_fail(call, GRPC_UNAVAILABLE, "database unavailable");
    return;
  case DB_EQUEUE:
    rpc_fail(call, GRPC_UNAVAILABLE, "server busy: database queue full, retry later");
    return;
  case DB_ENOMEM:
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  case DB_EOWNER:
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED,
             "too many calls waiting for the database on this connection (limit %zu); retry "
             "later",
             rpc_call_server(call)->cfg.db_queue_per_conn);
    return;
  case DB_EUSER:
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED,
             "too many of your calls are waiting for the database (limit %zu over all your "
             "connections); retry later",
             db_per_user_max(rpc_call_server(call)->db));
    return;
  case DB_ECANCELED:
    rpc_fail(call, GRPC_CANCELLED, "cancelled");
    return;
  case DB_EREFUSED:
    rpc_auth_fail_ended(call);
    return;
  default:
    break;
  }
  if (sql_error_code(st, &code) == 0) {
    if (refusal_after_sight(call, r))
      return;
    if (strcmp(st, "CLVER") == 0) {
      int64_t current, expected;

      clver_versions(r->message, &current, &expected);
      svc_version_conflict(call, current, expected);
    } else if (strcmp(st, "CLPRE") == 0 || strcmp(st, "CL009") == 0) {
      const char *type, *subject;

      sql_precondition(r->message, &type, &subject);
      rpc_detail_precondition(call, type, subject, r->message);
    } else if (strcmp(st, "CLARG") == 0 && r->message != NULL &&
               (field = svc_message_field(call, r->message)) != NULL)
      rpc_detail_field(call, field, r->message);
    if (code == GRPC_NOT_FOUND) {
      /* As the server's own refusal of a missing or hidden object (clue_refuse()). */
      clue_not_found(call, r->message ? r->message : "");
      return;
    }
    rpc_fail(call, code, "%s", r->message ? r->message : "");
    return;
  }
  if (strcmp(st, "23505") == 0) {
    /* Every writer of a clue takes its number from clue_counters in the same transaction,
     * so a number taken already means the counter was set back outside clued. */
    if (r->constraint != NULL && (strcmp(r->constraint, "clues_reg_key") == 0 ||
                                  strcmp(r->constraint, "clues_registration_number_key") == 0)) {
      log_error("call %s: the registration counter (clue_counters) is behind the numbers its "
                "clues hold, so it was changed outside clued: %s",
                rpc_call_id(call), r->message ? r->message : "");
      rpc_fail(call, GRPC_DATA_LOSS,
               "the unit's registration counter is behind the numbers already given; nothing "
               "was changed (an administrator must repair clue_counters: `cluectl audit verify "
               "--checkpoint` names it)");
      return;
    }
    for (size_t i = 0; i < sizeof(duplicates) / sizeof(duplicates[0]); i++)
      if (r->constraint != NULL && strcmp(r->constraint, duplicates[i].constraint) == 0) {
        rpc_fail(call, GRPC_ALREADY_EXISTS, "%s", duplicates[i].message);
        return;
      }
    rpc_fail(call, GRPC_ALREADY_EXISTS, "already exists");
    return;
  }
  if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0) {
    rpc_fail(call, GRPC_ABORTED, "concurrent change; retry");
    return;
  }
  /* The time bounds of every pool connection (--db-lock-timeout, --db-statement-timeout).
   * The statement failed, so its transaction rolled back: a retry is safe. A lock wait is
   * a conflict with a concurrent change, like a version mismatch (ABORTED); a statement
   * that ran out of time (or was cancelled by an operator) means an overloaded database,
   * so UNAVAILABLE, which clients retry with backoff. */
  if (strcmp(st, "55P03") == 0) {
    rpc_detail_reason(call, "LOCK_TIMEOUT", NULL, NULL);
    rpc_fail(call, GRPC_ABORTED,
             "the record is locked by a concurrent change (waited %u ms); nothing was changed, "
             "retry",
             rpc_call_server(call)->cfg.db_lock_timeout_ms);
    return;
  }
  /* A server that no longer takes writes (a primary being demoted, or a standby reached
   * through a URL without target_session_attrs=read-write): the statement changed nothing, and
   * a retry may find the primary. */
  if (strcmp(st, "25006") == 0) {
    rpc_fail(call, GRPC_UNAVAILABLE,
             "the database is read-only (a standby?); nothing was changed, retry later");
    return;
  }
  if (strcmp(st, "57014") == 0) {
    rpc_fail(call, GRPC_UNAVAILABLE,
             "database statement timed out (limit %u ms); nothing was changed, retry later",
             rpc_call_server(call)->cfg.db_statement_timeout_ms);
    return;
  }
  log_error("call %s: database error %s: %s", rpc_call_id(call), st, r->message ? r->message : "");
  rpc_fail(call, GRPC_INTERNAL, "internal error");
}

static void job_check_sent(svc_job_t *job, int rc);
static void job_done(const db_result_t *r, void *arg);

/* A read of the call on the primary. When the answer must say where the primary's WAL stood
 * (replica_primary_lsn_wanted()), the read runs in a REPEATABLE READ transaction after a
 * statement that reads the WAL position: the snapshot is the first statement's, so every
 * commit the read sees is at or before that position. One round trip either way. */
static int send_primary_read(svc_job_t *job, const db_opts_t *o, const char *sql, int nparams,
                             const char *const *values) {
  db_stmt_t st[3] = {
      {.sql = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"},
      {.sql = "SELECT pg_current_wal_insert_lsn()::text"},
      {.sql = sql, .nparams = nparams, .values = values},
  };

  if (!replica_primary_lsn_wanted(job->call))
    return db_query_opts(job->pool, o, sql, nparams, values, job_done, job);
  job->lsn = 1;
  job->skip = 2;
  return db_txn_opts(job->pool, o, st, 3, job_done, job);
}

/* db_opts_t.still of a call's statements: not once its principal's authority ended. */
static int call_still(void *arg) {
  return !rpc_auth_ended(arg);
}

void svc_db_opts(rpc_call_t *call, db_req_t **handle, db_opts_t *o) {
  const rpc_principal_t *who = rpc_call_principal(call);

  o->owner = rpc_call_conn_id(call);
  o->user = who && who->user_id > 0 ? (uint64_t)who->user_id : 0;
  o->handle = handle;
  /* Every statement of a heavy method counts, its first and its later ones alike. */
  o->heavy = rpc_call_method(call)->heavy;
  /* A statement that waited (its connection's replies unread, the pool busy) is not sent
   * once the token that authorized it was revoked or its user disabled: a client cannot hold
   * a write back until after its revocation. A stream (WatchEvents) lives on for long, and
   * each of its reads checks its token itself (audit_watch.c, "Revocation"). */
  if (o->user != 0 && !rpc_call_method(call)->server_streaming) {
    o->still = call_still;
    o->still_arg = call;
  }
}

/* A read that went to a replica: note an answer, or send it to the primary if the replica
 * was lost or cancelled it. Returns 1 when it was sent again (job lives on). */
static int replica_read_ended(svc_job_t *job, const db_result_t *r) {
  rpc_call_t *call = job->call;
  const char *sql = job->sql;
  db_opts_t o = {0};

  job->sql = NULL; /* once: the primary's answer is the last */
  if (r->err == DB_OK) {
    replica_read_answered(call);
    return 0;
  }
  if (rpc_call_done(call) || !replica_fall_back(call, replica_miss(r)))
    return 0;
  job->pool = rpc_call_server(call)->db;
  job->req = NULL;
  svc_db_opts(call, &job->req, &o);
  job_check_sent(job, send_primary_read(job, &o, sql, job->nparams, job->values));
  return 1;
}

static svc_job_t *job_new(rpc_call_t *call, svc_cb cb, void *arg);

/* A write's refusal that the database raised (a named SQLSTATE: "already revoked", a
 * version that moved) may rest on a commit the synchronous standbys do not have yet: one
 * whose wait a deadline cancelled, committed on the primary alone. It is told once a
 * statement of its own, begun after, has committed: with synchronous standbys that statement
 * writes a row of audit_tail_sync (as SVC_DURABLE_IF() does), so its commit waits for them,
 * and for everything before it in the WAL. Without them it writes nothing. */
static const char sql_refusal_barrier[] = SVC_DURABLE_IF("true") "SELECT 1";

static void refusal_told(rpc_call_t *call, const db_result_t *r, void *arg) {
  (void)r;
  svc_fail_db(call, arg);
}

/* Returns 1 when the refusal r of a write will be told after the barrier. */
static int refusal_after_barrier(rpc_call_t *call, const db_result_t *r) {
  grpc_status_t code;
  db_result_t *copy;
  svc_job_t *job;
  db_opts_t o = {0};

  /* CLSYN (no synchronous standby, migration 0046) rests on no earlier commit. */
  if (r->err != DB_EQUERY || r->sqlstate == NULL || sql_error_code(r->sqlstate, &code) != 0 ||
      strcmp(r->sqlstate, "CLSYN") == 0 || (copy = rpc_call_alloc(call, sizeof(*copy))) == NULL)
    return 0;
  memset(copy, 0, sizeof(*copy));
  copy->err = r->err;
  copy->sqlstate = rpc_call_strdup(call, r->sqlstate);
  copy->message = r->message ? rpc_call_strdup(call, r->message) : NULL;
  if (copy->sqlstate == NULL || (r->message && copy->message == NULL) ||
      (job = job_new(call, refusal_told, copy)) == NULL)
    return 0;
  job->pool = rpc_call_server(call)->db;
  svc_db_opts(call, &job->req, &o);
  job_check_sent(job, db_query_opts(job->pool, &o, sql_refusal_barrier, 0, NULL, job_done, job));
  return 1;
}

static void job_done(const db_result_t *r, void *arg) {
  svc_job_t *job = arg;
  rpc_call_t *call = job->call;

  rpc_call_db_ended(call, job->req);
  if (job->sql && replica_read_ended(job, r))
    return;
  /* Its events are committed: this server's watchers need not wait to be told. */
  if (r->err == DB_OK && job->writes)
    audit_tail_committed(rpc_call_server(call));
  if (!rpc_call_done(call)) {
    if (r->err != DB_OK) {
      if (!job->writes || !refusal_after_barrier(call, r))
        svc_fail_db(call, r);
    } else {
      if (job->lsn && r->nres >= 2 && r->res[1] && PQntuples(r->res[1]) == 1)
        replica_primary_read_lsn(call, PQgetvalue(r->res[1], 0, 0));
      /* The caller sees its own statements' results only. */
      db_result_t mine = *r;
      mine.res = r->res + job->skip;
      mine.nres = r->nres - job->skip;
      job->cb(call, &mine, job->arg);
    }
  }
  free(job);
  rpc_call_unref(call);
}

/* A job for call, or NULL after failing the call (no database, out of memory). */
static svc_job_t *job_new(rpc_call_t *call, svc_cb cb, void *arg) {
  svc_job_t *job;

  if (rpc_call_server(call)->db == NULL) {
    rpc_fail(call, GRPC_UNAVAILABLE, "no database configured");
    return NULL;
  }
  if ((job = malloc(sizeof(*job))) == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  job->call = call;
  job->cb = cb;
  job->arg = arg;
  job->req = NULL;
  job->skip = 0;
  job->writes = 0;
  job->pool = NULL;
  job->sql = NULL;
  job->nparams = 0;
  job->values = NULL;
  rpc_call_ref(call);
  return job;
}

/* The pool took the job (rc == 0): the call cancels it if it ends first. Or it refused it
 * outright: fail the call as its callback would have. */
static void job_check_sent(svc_job_t *job, int rc) {
  db_result_t r = {0};

  if (rc == 0) {
    rpc_call_db_started_on(job->call, job->pool, job->req);
    return;
  }
  r.err = rc;
  svc_fail_db(job->call, &r);
  rpc_call_unref(job->call);
  free(job);
}

/* The first statement of every transaction run for an authenticated call: the acting token,
 * transaction-local, which audit_append() records in each event it appends (0010_tokens.sql).
 * Setting it in the same transaction is what ties an event to the token that caused it. */
static const char sql_token[] = "SELECT set_config('clued.token_id', $1, true)";

const char *svc_token(rpc_call_t *call, int *oom) {
  const rpc_principal_t *p = rpc_call_principal(call);
  const char *v;

  *oom = 0;
  if (p == NULL || p->token_id <= 0)
    return NULL;
  if ((v = svc_i64(call, p->token_id, 0)) == NULL)
    *oom = 1;
  return v;
}

void svc_query(rpc_call_t *call, const char *sql, int nparams, const char *const *values, svc_cb cb,
               void *arg) {
  db_stmt_t s = {sql, nparams, values};
  svc_txn(call, &s, 1, cb, arg);
}

/* Keep a replica's read (sql and its values, copied into the call's memory) to run it again. */
static int keep_read(svc_job_t *job, const char *sql, int nparams, const char *const *values) {
  const char **v = NULL;
  int i;

  if (nparams > 0 && (v = rpc_call_alloc(job->call, (size_t)nparams * sizeof(*v))) == NULL)
    return -1;
  for (i = 0; i < nparams; i++) {
    v[i] = values[i] ? rpc_call_strdup(job->call, values[i]) : NULL;
    if (values[i] && v[i] == NULL)
      return -1;
  }
  if ((job->sql = rpc_call_strdup(job->call, sql)) == NULL)
    return -1;
  job->nparams = nparams;
  job->values = v;
  return 0;
}

/* One statement on its own: its own transaction, no token statement. A read goes where the
 * call's reads go (a replica's pool, when the call was routed there: service/replica.h). */
static void run_one(rpc_call_t *call, const char *sql, int nparams, const char *const *values,
                    svc_cb cb, void *arg, int writes) {
  svc_job_t *job;
  db_opts_t o = {0};

  if ((job = job_new(call, cb, arg)) == NULL)
    return;
  job->writes = writes;
  job->pool = writes ? rpc_call_server(call)->db : rpc_call_read_pool(call);
  if (job->pool != rpc_call_server(call)->db && keep_read(job, sql, nparams, values) != 0) {
    job_check_sent(job, DB_ENOMEM);
    return;
  }
  svc_db_opts(call, &job->req, &o);
  job_check_sent(job, writes || job->pool != rpc_call_server(call)->db
                          ? db_query_opts(job->pool, &o, sql, nparams, values, job_done, job)
                          : send_primary_read(job, &o, sql, nparams, values));
}

void svc_read(rpc_call_t *call, const char *sql, int nparams, const char *const *values, svc_cb cb,
              void *arg) {
  run_one(call, sql, nparams, values, cb, arg, 0);
}

void svc_write(rpc_call_t *call, const char *sql, int nparams, const char *const *values, svc_cb cb,
               void *arg) {
  run_one(call, sql, nparams, values, cb, arg, 1);
}

void svc_txn(rpc_call_t *call, const db_stmt_t *stmts, int n, svc_cb cb, void *arg) {
  db_pool_t *db = rpc_call_server(call)->db;
  svc_job_t *job;
  db_stmt_t *all;
  db_opts_t o = {0};
  const char *tok[1];
  int oom, rc;

  tok[0] = svc_token(call, &oom);
  if (oom) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if ((job = job_new(call, cb, arg)) == NULL)
    return;
  job->writes = 1;
  svc_db_opts(call, &job->req, &o);
  if (tok[0] == NULL) {
    /* No token: a single statement stays a plain query (its own transaction). */
    rc = n == 1
             ? db_query_opts(db, &o, stmts[0].sql, stmts[0].nparams, stmts[0].values, job_done, job)
             : db_txn_opts(db, &o, stmts, n, job_done, job);
    job_check_sent(job, rc);
    return;
  }
  /* The token statement first; the pool copies the statements, so all can go at once. */
  if ((all = malloc((size_t)(n + 1) * sizeof(*all))) == NULL) {
    job_check_sent(job, DB_ENOMEM);
    return;
  }
  all[0].sql = sql_token;
  all[0].nparams = 1;
  all[0].values = tok;
  memcpy(all + 1, stmts, (size_t)n * sizeof(*all));
  job->skip = 1;
  rc = db_txn_opts(db, &o, all, n + 1, job_done, job);
  free(all);
  job_check_sent(job, rc);
}

int svc_role(const rpc_call_t *call) {
  const rpc_principal_t *p = rpc_call_principal(call);
  return p ? p->role : 0;
}

int svc_require_admin(rpc_call_t *call) {
  if (svc_role(call) == CLUE__V1__ROLE__ROLE_ADMIN)
    return 1;
  rpc_fail(call, GRPC_PERMISSION_DENIED, "only administrators may call %s",
           rpc_call_method(call)->path);
  return 0;
}

const char *svc_i64(rpc_call_t *call, int64_t v, int null0) {
  if (v == 0 && null0)
    return NULL;
  return rpc_call_i64(call, v);
}

int64_t svc_col_i64(const db_result_t *r, int row, int col) {
  const char *v = db_value(r, row, col);
  return v ? strtoll(v, NULL, 10) : 0;
}

char *svc_col_str(rpc_call_t *call, const db_result_t *r, int row, int col) {
  const char *v = db_value(r, row, col);
  return rpc_call_strdup(call, v ? v : "");
}

int svc_col_bool(const db_result_t *r, int row, int col) {
  const char *v = db_value(r, row, col);
  return v && v[0] == 't';
}

int svc_page_rows(rpc_call_t *call, const db_result_t *r, int max, svc_row_fn row,
                  ProtobufCMessage ***items, size_t *n, bool *more) {
  int rows = db_rows(r), shown = rows > max ? max : rows;
  size_t bytes = 0;

  *n = 0;
  *more = rows > max;
  if ((*items = rpc_call_alloc(call, (size_t)(shown ? shown : 1) * sizeof(**items))) == NULL)
    return -1;
  for (int i = 0; i < shown; i++) {
    ProtobufCMessage *m = row(call, r, i);

    if (m == NULL)
      return -1;
    if (!svc_page_fits(&bytes, m)) {
      *more = true; /* the next page starts with this row */
      break;
    }
    (*items)[(*n)++] = m;
  }
  return 0;
}
