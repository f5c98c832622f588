#ifndef CLUED_SERVICE_BATCH_H
#define CLUED_SERVICE_BATCH_H

/* Several calls' statements of one kind as one statement: for writes, one transaction (group
 * commit); for reads, one execution.
 *
 * A statement of a batched kind goes to the database at once, alone, while fewer than
 * --db-batch-inflight (a read kind) or --db-write-batch-inflight (a write kind) statements of
 * its kind are running; otherwise it waits, and when one of
 * them ends every one then waiting (up to SVC_BATCH_MAX) goes as one statement: parameter i
 * is a text array of every call's parameter i. So a lone call pays nothing, and under load the
 * statement's fixed costs (the executor's set-up of each statement, the commit and its WAL
 * flush) are shared.
 *
 * The batch statement returns one row per call it did (or, for a read, one or more rows per
 * call, in order), with the one-call statement's columns and, last, an int4: the call's
 * 1-based position in the arrays. A call it left out (no row) runs again alone, through the
 * one-call statement, which gives its own answer or error; if the batch statement fails, every
 * call of it runs again alone (nothing of the batch was committed). A kind that settles
 * (svc_batch_kind_t.settle) answers those calls with no rows instead. If the connection is lost,
 * every call fails with UNAVAILABLE, as a lone call would: the outcome of a write is unknown
 * and it is never run again blindly.
 *
 * A call that ends first (cancelled, expired) does not stop a running batch statement: the
 * calls share it (db_opts_t.sharers), and it is cancelled only once the last of them has ended.
 * A cancel that cut short the commit's wait for a synchronous standby would leave the batch
 * committed on the primary alone, answered with success (docs/SCALEOUT.md, "Cancelled
 * waits"). */

#include "service/common.h"

/** The most writes in one batch statement, and the most parameters of a batched kind. */
#define SVC_BATCH_MAX 64

/** Fewer calls waiting than this go each alone, through the one-call statement. Two already
 * gain as one statement: on its session with the batch settings a batch has no set-up of its
 * own (bench/load at 4 in flight: 13-20% more calls per second than with two alone). */
#define SVC_BATCH_MIN 2
#define SVC_BATCH_PARAMS 32

/** A statement's calls are taken from the first this many waiting: a call of a kind with a
 * lock parameter that may not go yet is skipped, and a long queue costs no more to look at. */
#define SVC_BATCH_SCAN 256

/** The most lanes of a kind with a lock parameter (svc_batch_kind_t.lock_param), and how long
 * (us) a lane may wait for as many calls as its last statement carried. */
#define SVC_BATCH_LANES 8
#define SVC_BATCH_LINGER_US 1000

/** A statement running longer than this (ms) no longer counts against the kind's limit:
 * one stuck on a lock does not hold the calls behind it. */
#define SVC_BATCH_STALL_MS 25

typedef struct svc_batches svc_batches_t;

/** The batched kinds, each with a queue of its own. */
typedef enum svc_batch_id {
  SVC_BATCH_MOVE,
  SVC_BATCH_MOVE_FACTS,
  SVC_BATCH_GET_CLUE,
  SVC_BATCH_SUBMIT,
  SVC_BATCH_MOVE_DIRECT,
  SVC_BATCH_KINDS,
} svc_batch_id_t;

typedef struct svc_batch_kind {
  svc_batch_id_t id;
  const char *name;     /* for logs */
  const char *one_sql;  /* one call: nparams text parameters */
  const char *many_sql; /* many calls: nparams text arrays; rows as above */
  int nparams;
  int writes;     /* a write (svc_write()), else a read (svc_read()) */
  int settle;     /* 1: a call a batch leaves out, and each call of a batch that fails, gets an
                     empty result (no rows) instead of running again alone: its callback has
                     another way to its answer */
  int lock_param; /* n > 0: the statement holds a lock named by parameter $n until it commits
                     (a submission's unit counter: $2), so two statements whose calls share a
                     value of $n cannot run side by side. While calls wait whose value a
                     running statement carries, the kind's calls run in lanes, one statement at
                     a time each, a value always in the same lane, and no call goes while its
                     value runs (service/batch.c, pump_lanes()). 0: none */
  int key_param;  /* n > 0: a call's request key is ($1, $n), and the batch statement records
                     each key it is given: two calls of one key (a client's retries sent at
                     once) never go in one statement, where the second record would fail the
                     whole batch and send every call of it to run again alone; the second waits
                     for the next statement, and is answered as a retry. 0: none */
} svc_batch_kind_t;

/**
 * Run kind's statement with values (kind->nparams text parameters, NULL = SQL NULL, in the
 * call's memory) for call, alone or in a batch: cb gets what kind->one_sql gives for them,
 * exactly as from svc_write() or svc_read() (one result with the one-call statement's rows).
 */
void svc_batched(rpc_call_t *call, const svc_batch_kind_t *kind, const char *const *values,
                 svc_cb cb, void *arg);

/** The module: the queues (server_t.batches), made before any call, their timers closed with
 * the last connection, their memory freed after the loop stopped. */
int svc_batch_start(server_t *srv);
void svc_batch_close(server_t *srv);
void svc_batch_free(server_t *srv);

/** What the batches of one kind did, for metrics. */
typedef struct svc_batch_stats {
  uint64_t batches; /* statements that carried more than one call */
  uint64_t calls;   /* calls answered by those */
  uint64_t reruns;  /* calls of a batch that ran again alone (left out, or the batch failed) */
  uint64_t held;    /* calls that waited in clued while a running statement of their kind carried
                       their lock value (svc_batch_kind_t.lock_param), each counted once */
} svc_batch_stats_t;

/** The metric label of kind id (e.g. "move_facts"). */
const char *svc_batch_name(svc_batch_id_t id);

/** Fill st for kind id (zeros before the first batch, or without the module). */
void svc_batch_stats(const server_t *srv, svc_batch_id_t id, svc_batch_stats_t *st);

/** The session settings batches run with, and the statements that undo them: the pool's
 * db_config_t.tune_sql and untune_sql. */
extern const char *const svc_batch_tune_sql[];
extern const char *const svc_batch_untune_sql[];

/** Text array literal of v[0..n) ({"a","b",NULL}); malloc'd, NULL on out of memory. */
char *svc_batch_array(const char *const *v, size_t n);

#endif
