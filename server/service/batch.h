#ifndef CLUED_SERVICE_BATCH_H
#define CLUED_SERVICE_BATCH_H

/* Several calls' writes of one kind in one statement and one transaction (group commit).
 *
 * A write of a batched kind goes to the database at once, alone, while fewer than
 * --db-batch-inflight statements of its kind are running; otherwise it waits, and when one of
 * them ends every write then waiting (up to SVC_BATCH_MAX) goes in one statement: parameter i
 * is a text array of every write's parameter i. So a lone call pays nothing, and under load the
 * statement's fixed costs (the executor's set-up of each statement the function runs, the
 * commit and its WAL flush) are shared.
 *
 * The batch statement returns one row per write it did, with the one-write statement's
 * columns and, last, an int4: the write's 1-based position in the arrays. A write it left out
 * (no row) runs again alone, through the one-write statement, which gives its own answer or
 * error; if the batch statement fails, every write of it runs again alone (nothing of the
 * batch was committed). If the connection is lost, every write fails with UNAVAILABLE, as a
 * lone write would: its outcome is unknown and it is never run again blindly. */

#include "service/common.h"

/** The most writes in one batch statement, and the most parameters of a batched kind. */
#define SVC_BATCH_MAX 64
#define SVC_BATCH_PARAMS 32

typedef struct svc_batches svc_batches_t;

/** The batched kinds, each with a queue of its own. */
typedef enum svc_batch_id {
  SVC_BATCH_MOVE,
  SVC_BATCH_KINDS,
} svc_batch_id_t;

typedef struct svc_batch_kind {
  svc_batch_id_t id;
  const char *name;     /* for logs */
  const char *one_sql;  /* one write: nparams text parameters */
  const char *many_sql; /* many writes: nparams text arrays; rows as above */
  int nparams;
} svc_batch_kind_t;

/**
 * Write values (kind->nparams text parameters, NULL = SQL NULL, in the call's memory) for
 * call, alone or in a batch: cb gets what kind->one_sql gives for them, exactly as from
 * svc_write() (one result, one row per row of the one-write statement).
 */
void svc_write_batched(rpc_call_t *call, const svc_batch_kind_t *kind, const char *const *values,
                       svc_cb cb, void *arg);

/** The module: the queues (server_t.batches), made before any call and freed after all. */
int svc_batch_start(server_t *srv);
void svc_batch_free(server_t *srv);

/** Text array literal of v[0..n) ({"a","b",NULL}); malloc'd, NULL on out of memory. */
char *svc_batch_array(const char *const *v, size_t n);

#endif
