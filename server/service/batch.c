#include "service/batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "audit/tail.h"
#include "log.h"
#include "server.h"

/* One call's write, waiting or running. */
typedef struct item {
  struct item *next;
  rpc_call_t *call; /* referenced while the item lives */
  svc_cb cb;
  void *arg;
  int done; /* answered from a batch's row */
  const char *values[];
} item_t;

/* The writes of one kind: those waiting, and how many statements are running. */
typedef struct queue {
  const svc_batch_kind_t *kind;
  item_t *head, **tail;
  size_t waiting;
  int running;
} queue_t;

struct svc_batches {
  server_t *srv;
  queue_t q[SVC_BATCH_KINDS];
};

/* One statement in flight: one write alone, or a batch. */
typedef struct run {
  queue_t *q;
  svc_batches_t *b;
  size_t n;
  item_t *items[];
} run_t;

static void pump(svc_batches_t *b, queue_t *q);

static void item_free(item_t *it) {
  rpc_call_unref(it->call);
  free(it);
}

/* Answer it from r, as svc_write()'s own callback would. */
static void deliver(item_t *it, const db_result_t *r) {
  if (rpc_call_done(it->call))
    return;
  if (r->err != DB_OK)
    svc_fail_db(it->call, r);
  else
    it->cb(it->call, r, it->arg);
}

/* Run it alone, through the pool like any write: the batch left it out or failed. */
static void rerun(const queue_t *q, item_t *it) {
  if (!rpc_call_done(it->call))
    svc_write(it->call, q->kind->one_sql, q->kind->nparams, it->values, it->cb, it->arg);
}

char *svc_batch_array(const char *const *v, size_t n) {
  size_t len = 3, i;
  char *s, *o;
  const char *p;

  for (i = 0; i < n; i++) {
    len += 5; /* NULL or two quotes, and a comma */
    for (p = v[i]; p && *p; p++)
      len += (*p == '"' || *p == '\\') ? 2 : 1;
  }
  if ((s = malloc(len)) == NULL)
    return NULL;
  o = s;
  *o++ = '{';
  for (i = 0; i < n; i++) {
    if (i > 0)
      *o++ = ',';
    if (v[i] == NULL) {
      memcpy(o, "NULL", 4);
      o += 4;
      continue;
    }
    *o++ = '"';
    for (p = v[i]; *p; p++) {
      if (*p == '"' || *p == '\\')
        *o++ = '\\';
      *o++ = *p;
    }
    *o++ = '"';
  }
  *o++ = '}';
  *o = '\0';
  return s;
}

/* Row `row` of res alone, as a result of its own with the same columns. */
static PGresult *row_result(const PGresult *res, int row) {
  PGresult *one = PQcopyResult(res, PG_COPYRES_ATTRS);
  int c;

  if (one == NULL)
    return NULL;
  for (c = 0; c < PQnfields(res); c++) {
    int ok = PQgetisnull(res, row, c)
                 ? PQsetvalue(one, 0, c, NULL, -1)
                 : PQsetvalue(one, 0, c, PQgetvalue(res, row, c), PQgetlength(res, row, c));
    if (!ok) {
      PQclear(one);
      return NULL;
    }
  }
  return one;
}

/* Each row answers the write at its position (the last column); the others run alone. */
static void batch_rows(run_t *run, const db_result_t *r) {
  const PGresult *res = r->res[0];
  int rows = PQntuples(res), last = PQnfields(res) - 1, i;
  size_t k;

  for (i = 0; i < rows && last >= 0; i++) {
    const char *v = PQgetisnull(res, i, last) ? NULL : PQgetvalue(res, i, last);
    long ord = v ? strtol(v, NULL, 10) : 0;
    item_t *it;
    PGresult *one;

    if (ord < 1 || (size_t)ord > run->n || run->items[ord - 1]->done)
      continue;
    it = run->items[ord - 1];
    it->done = 1;
    if ((one = row_result(res, i)) == NULL) {
      db_result_t oom = {.err = DB_ENOMEM};
      deliver(it, &oom);
      continue;
    }
    {
      db_result_t mine = {.err = DB_OK, .res = (PGresult *const *)&one, .nres = 1, .sqlstate = ""};
      deliver(it, &mine);
    }
    PQclear(one);
  }
  if (rows > 0)
    audit_tail_committed(run->b->srv);
  for (k = 0; k < run->n; k++)
    if (!run->items[k]->done)
      rerun(run->q, run->items[k]);
}

static void run_done(const db_result_t *r, void *arg) {
  run_t *run = arg;
  queue_t *q = run->q;
  size_t k;

  q->running--;
  if (run->n == 1) {
    if (r->err == DB_OK)
      audit_tail_committed(run->b->srv);
    deliver(run->items[0], r);
  } else if (r->err == DB_OK && r->nres == 1 && r->res[0] != NULL) {
    batch_rows(run, r);
  } else if (r->err == DB_EQUERY) {
    /* Nothing of it was committed: each write alone gives its own answer or error. */
    log_msg("info", "batched %s: %zu writes run alone after %s: %s", q->kind->name, run->n,
            r->sqlstate ? r->sqlstate : "", r->message ? r->message : "");
    for (k = 0; k < run->n; k++)
      rerun(q, run->items[k]);
  } else {
    for (k = 0; k < run->n; k++)
      deliver(run->items[k], r);
  }
  for (k = 0; k < run->n; k++)
    item_free(run->items[k]);
  pump(run->b, q);
  free(run);
}

/* Send run's statement; on a refusal, answer its writes from the error at once. */
static void run_send(svc_batches_t *b, run_t *run) {
  const svc_batch_kind_t *kind = run->q->kind;
  db_pool_t *db = b->srv->db;
  char *arrays[SVC_BATCH_PARAMS];
  const char *params[SVC_BATCH_PARAMS];
  const char *col[SVC_BATCH_MAX];
  int rc = DB_ENOMEM, i, made = 0;
  size_t k;

  run->q->running++;
  if (run->n == 1) {
    rc = db_query(db, kind->one_sql, kind->nparams, run->items[0]->values, run_done, run);
  } else {
    for (i = 0; i < kind->nparams; i++, made++) {
      for (k = 0; k < run->n; k++)
        col[k] = run->items[k]->values[i];
      if ((arrays[i] = svc_batch_array(col, run->n)) == NULL)
        break;
      params[i] = arrays[i];
    }
    if (made == kind->nparams)
      rc = db_query(db, kind->many_sql, kind->nparams, params, run_done, run);
    for (i = 0; i < made; i++)
      free(arrays[i]);
  }
  if (rc != 0) {
    db_result_t r = {.err = rc};
    run->q->running--;
    for (k = 0; k < run->n; k++) {
      deliver(run->items[k], &r);
      item_free(run->items[k]);
    }
    free(run);
  }
}

/* Start statements while the kind has room: each takes every waiting write (up to the most). */
static void pump(svc_batches_t *b, queue_t *q) {
  int limit = b->srv->cfg.db_batch_inflight;

  while (q->running < limit && q->waiting > 0) {
    size_t n = q->waiting < SVC_BATCH_MAX ? q->waiting : SVC_BATCH_MAX;
    run_t *run = malloc(sizeof(*run) + n * sizeof(run->items[0]));
    db_result_t oom = {.err = DB_ENOMEM};

    if (run == NULL) {
      /* Out of memory: the first waiting write fails, the rest wait for the next end. */
      item_t *it = q->head;
      q->head = it->next;
      if (q->head == NULL)
        q->tail = &q->head;
      q->waiting--;
      deliver(it, &oom);
      item_free(it);
      continue;
    }
    run->q = q;
    run->b = b;
    run->n = 0;
    while (run->n < n) {
      item_t *it = q->head;
      q->head = it->next;
      q->waiting--;
      if (rpc_call_done(it->call)) {
        item_free(it);
        n--;
        continue;
      }
      it->next = NULL;
      run->items[run->n++] = it;
    }
    if (q->head == NULL)
      q->tail = &q->head;
    if (run->n == 0) {
      free(run);
      continue;
    }
    run_send(b, run);
  }
}

void svc_write_batched(rpc_call_t *call, const svc_batch_kind_t *kind, const char *const *values,
                       svc_cb cb, void *arg) {
  server_t *srv = rpc_call_server(call);
  svc_batches_t *b = srv->batches;
  queue_t *q;
  item_t *it;

  if (b == NULL || srv->db == NULL || srv->cfg.db_batch_inflight <= 0 ||
      kind->nparams > SVC_BATCH_PARAMS) {
    svc_write(call, kind->one_sql, kind->nparams, values, cb, arg);
    return;
  }
  q = &b->q[kind->id];
  q->kind = kind;
  if (q->waiting >= srv->cfg.db_queue_max) {
    rpc_fail(call, GRPC_UNAVAILABLE, "server busy: database queue full, retry later");
    return;
  }
  if ((it = calloc(1, sizeof(*it) + (size_t)kind->nparams * sizeof(it->values[0]))) == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  rpc_call_ref(call);
  it->call = call;
  it->cb = cb;
  it->arg = arg;
  memcpy((void *)it->values, values, (size_t)kind->nparams * sizeof(it->values[0]));
  *q->tail = it;
  q->tail = &it->next;
  q->waiting++;
  pump(b, q);
}

int svc_batch_start(server_t *srv) {
  svc_batches_t *b = calloc(1, sizeof(*b));
  int i;

  if (b == NULL)
    return -ENOMEM;
  b->srv = srv;
  for (i = 0; i < SVC_BATCH_KINDS; i++)
    b->q[i].tail = &b->q[i].head;
  srv->batches = b;
  return 0;
}

void svc_batch_free(server_t *srv) {
  free(srv->batches);
  srv->batches = NULL;
}
