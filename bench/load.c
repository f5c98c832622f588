/* clue-load: a closed-loop load generator for one phase of bench/load.
 *
 * N threads, each with its own libclue connection, call clued back to back for a fixed time
 * (or until the clues given to the phase run out) and record every call's latency and gRPC
 * status. Errors are counted, never taken for successes. One JSON object goes to stdout:
 *
 *   {"phase":"move","concurrency":16,"calls":9000,"ok":8990,"errors":10,"seconds":15.0,
 *    "per_second":599.3,"p50_ms":2.1,"p99_ms":9.8,"first_error":"ABORTED: ..."}
 *
 * Phases: submit (MEMBERs of the units in --users submit clues, spread over the units),
 * move (ACCEPTED -> PRELIMINARY_CHECK by the owner's LEADER), close (PRELIMINARY_CHECK ->
 * CLOSED), get (GetClue of random clues by the owner's LEADER), health (Health/Check).
 * --users names a file of "UNIT_ID ROLE TOKEN" lines; --ids-in a file of "CLUE_ID UNIT_ID"
 * lines (the clues a phase works on); --ids-out receives the clues a phase left in its
 * target state, for the next phase.
 */

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clue/client.h"
#include "clue/v1/clue.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

#define MAX_UNITS 64

typedef enum { PHASE_SUBMIT, PHASE_MOVE, PHASE_CLOSE, PHASE_GET, PHASE_HEALTH } phase_t;

static const char *const phase_names[] = {"submit", "move", "close", "get", "health"};

typedef struct unit_tokens {
  long long unit_id;
  char member[128], leader[128];
} unit_tokens_t;

typedef struct clue_ref {
  long long id, unit_id;
} clue_ref_t;

typedef struct load {
  const char *server;
  phase_t phase;
  int concurrency;
  double duration;
  unit_tokens_t units[MAX_UNITS];
  int nunits;
  clue_ref_t *ids; /* --ids-in */
  size_t nids;
  struct timespec start;
} load_t;

typedef struct worker {
  load_t *load;
  int index;
  pthread_t thread;
  double *lat_ms; /* one entry per call */
  size_t ncalls, cap;
  size_t ok;
  char first_error[256];
  clue_ref_t *done; /* clues left in the phase's target state */
  size_t ndone, done_cap;
  unsigned seed;
} worker_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int push(void **v, size_t *n, size_t *cap, size_t size, const void *item) {
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 1024;
    void *p = realloc(*v, c * size);
    if (!p)
      return -1;
    *v = p;
    *cap = c;
  }
  memcpy((char *)*v + *n * size, item, size);
  (*n)++;
  return 0;
}

/* A random version-4 UUID (the request id of a mutation). */
static void make_uuid(unsigned *seed, char out[37]) {
  unsigned r[4];
  for (int i = 0; i < 4; i++)
    r[i] = ((unsigned)rand_r(seed) << 16) ^ (unsigned)rand_r(seed);
  snprintf(out, 37, "%08x-%04x-4%03x-%04x-%04x%08x", r[0], r[1] >> 16, r[1] & 0xfff,
           0x8000 | (r[2] >> 16 & 0x3fff), r[2] & 0xffff, r[3]);
}

static const unit_tokens_t *unit_of(const load_t *l, long long unit_id) {
  for (int i = 0; i < l->nunits; i++)
    if (l->units[i].unit_id == unit_id)
      return &l->units[i];
  return NULL;
}

/* One call of the phase on conn; fills *made with the clue the call left in the target state. */
static int one_call(worker_t *w, clue_conn_t *conn, size_t k, clue_status_t *st, clue_ref_t *made) {
  load_t *l = w->load;
  ProtobufCMessage *resp = NULL;
  int rc;

  made->id = 0;
  switch (l->phase) {
  case PHASE_SUBMIT: {
    const unit_tokens_t *u = &l->units[(size_t)w->index % (size_t)l->nunits];
    Clue__V1__SubmitClueRequest req = CLUE__V1__SUBMIT_CLUE_REQUEST__INIT;
    Clue__V1__SubjectPerson subject = CLUE__V1__SUBJECT_PERSON__INIT;
    char rid[37];
    make_uuid(&w->seed, rid);
    subject.name = "王某";
    subject.position = "处长";
    req.title = "反映某某违规收受礼金";
    req.summary = "群众来信反映某某在项目审批中收受礼金，涉及金额较大，请予核查。";
    req.source = CLUE__V1__SOURCE_CHANNEL__SOURCE_CHANNEL_LETTER_VISIT_REPORT;
    req.subject = &subject;
    req.host_unit = "市发展改革委";
    req.request_id = rid;
    if (clue_conn_set_token(conn, u->member) != 0)
      return CLUE_ENOMEM;
    rc = clue_call_method(conn, &clue__v1__clue_service__descriptor, "SubmitClue",
                          &req.base, &resp, st);
    if (rc == 0 && st->code == CLUE_STATUS_OK) {
      made->id = ((Clue__V1__Clue *)resp)->id;
      made->unit_id = u->unit_id;
    }
    break;
  }
  case PHASE_MOVE:
  case PHASE_CLOSE: {
    const clue_ref_t *c = &l->ids[k];
    const unit_tokens_t *u = unit_of(l, c->unit_id);
    Clue__V1__RequestTransitionRequest req = CLUE__V1__REQUEST_TRANSITION_REQUEST__INIT;
    Clue__V1__TransitionDetails details = CLUE__V1__TRANSITION_DETAILS__INIT;
    char rid[37];
    if (!u)
      return CLUE_EINVAL;
    make_uuid(&w->seed, rid);
    req.clue_id = c->id;
    req.reason = "依据核查情况";
    req.request_id = rid;
    if (l->phase == PHASE_MOVE) {
      req.target = CLUE__V1__CLUE_STATE__CLUE_STATE_PRELIMINARY_CHECK;
      req.expected_version = 1;
    } else {
      req.target = CLUE__V1__CLUE_STATE__CLUE_STATE_CLOSED;
      req.expected_version = 2;
      details.finding = "经初核，反映问题不属实";
      req.details = &details;
    }
    if (clue_conn_set_token(conn, u->leader) != 0)
      return CLUE_ENOMEM;
    rc = clue_call_method(conn, &clue__v1__clue_service__descriptor, "RequestTransition",
                          &req.base, &resp, st);
    if (rc == 0 && st->code == CLUE_STATUS_OK)
      *made = *c;
    break;
  }
  case PHASE_GET: {
    const clue_ref_t *c = &l->ids[(size_t)rand_r(&w->seed) % l->nids];
    const unit_tokens_t *u = unit_of(l, c->unit_id);
    Clue__V1__GetClueRequest req = CLUE__V1__GET_CLUE_REQUEST__INIT;
    if (!u)
      return CLUE_EINVAL;
    req.clue_id = c->id;
    if (clue_conn_set_token(conn, u->leader) != 0)
      return CLUE_ENOMEM;
    rc = clue_call_method(conn, &clue__v1__clue_service__descriptor, "GetClue", &req.base,
                          &resp, st);
    break;
  }
  case PHASE_HEALTH: {
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    rc = clue_call_method(conn, &grpc__health__v1__health__descriptor, "Check", &req.base, &resp,
                          st);
    if (rc == 0 && st->code == CLUE_STATUS_OK &&
        ((Grpc__Health__V1__HealthCheckResponse *)resp)->status !=
            GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING) {
      st->code = CLUE_STATUS_UNAVAILABLE; /* an answer, but not the one wanted */
    }
    break;
  }
  default:
    return CLUE_EINVAL;
  }
  if (resp)
    protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

static void *run_worker(void *arg) {
  worker_t *w = arg;
  load_t *l = w->load;
  clue_conn_t *conn = NULL;
  clue_status_t st = CLUE_STATUS_INIT;
  double end = (double)l->start.tv_sec + (double)l->start.tv_nsec / 1e9 + l->duration;
  /* The clues of a move or close phase are dealt out: worker i takes i, i+N, i+2N, ... */
  int dealt = l->phase == PHASE_MOVE || l->phase == PHASE_CLOSE;
  size_t k = dealt ? (size_t)w->index : 0;

  if (clue_conn_new(l->server, &conn) != 0 || clue_conn_connect(conn, &st) != 0) {
    snprintf(w->first_error, sizeof(w->first_error), "connect: %s",
             st.message ? st.message : "failed");
    clue_status_clear(&st);
    clue_conn_free(conn);
    return NULL;
  }
  clue_status_clear(&st);
  clue_conn_set_timeout(conn, 30000);
  for (;;) {
    double t0 = now_s(), ms;
    clue_ref_t made;
    int rc;
    if (t0 >= end || (dealt && k >= l->nids))
      break;
    rc = one_call(w, conn, k, &st, &made);
    ms = (now_s() - t0) * 1000.0;
    if (push((void **)&w->lat_ms, &w->ncalls, &w->cap, sizeof(double), &ms) != 0)
      break;
    if (rc == 0 && st.code == CLUE_STATUS_OK) {
      w->ok++;
      if (made.id && push((void **)&w->done, &w->ndone, &w->done_cap, sizeof(made), &made) != 0)
        break;
    } else if (!w->first_error[0]) {
      snprintf(w->first_error, sizeof(w->first_error), "%s: %s",
               rc < 0 ? "local" : clue_status_name(st.code),
               rc < 0 ? clue_strerror(rc) : (st.message ? st.message : ""));
    }
    clue_status_clear(&st);
    k += dealt ? (size_t)l->concurrency : 1;
  }
  clue_conn_free(conn);
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p) {
  size_t i;
  if (n == 0)
    return 0;
  i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

static int read_users(load_t *l, const char *path) {
  FILE *f = fopen(path, "r");
  char role[32], token[128];
  long long unit;
  if (!f) {
    fprintf(stderr, "clue-load: %s: %s\n", path, strerror(errno));
    return -1;
  }
  while (fscanf(f, "%lld %31s %127s", &unit, role, token) == 3) {
    unit_tokens_t *u = (unit_tokens_t *)unit_of(l, unit);
    if (!u) {
      if (l->nunits == MAX_UNITS)
        break;
      u = &l->units[l->nunits++];
      u->unit_id = unit;
    }
    snprintf(strcmp(role, "LEADER") == 0 ? u->leader : u->member, sizeof(u->member), "%s", token);
  }
  fclose(f);
  return l->nunits > 0 ? 0 : -1;
}

static int read_ids(load_t *l, const char *path) {
  FILE *f = fopen(path, "r");
  size_t cap = 0;
  clue_ref_t c;
  if (!f) {
    fprintf(stderr, "clue-load: %s: %s\n", path, strerror(errno));
    return -1;
  }
  while (fscanf(f, "%lld %lld", &c.id, &c.unit_id) == 2)
    if (push((void **)&l->ids, &l->nids, &cap, sizeof(c), &c) != 0)
      break;
  fclose(f);
  return 0;
}

static void usage(FILE *f) {
  fprintf(f, "usage: clue-load --server HOST:PORT --phase submit|move|close|get|health\n"
             "                 [--concurrency N] [--duration SECONDS] [--users FILE]\n"
             "                 [--ids-in FILE] [--ids-out FILE]\n"
             "One phase of bench/load; prints one JSON object (see bench/load.c).\n");
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"server", required_argument, NULL, 's'},   {"phase", required_argument, NULL, 'p'},
      {"concurrency", required_argument, NULL, 'c'}, {"duration", required_argument, NULL, 'd'},
      {"users", required_argument, NULL, 'u'},    {"ids-in", required_argument, NULL, 'i'},
      {"ids-out", required_argument, NULL, 'o'},  {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  load_t l = {.concurrency = 16, .duration = 10, .phase = PHASE_HEALTH};
  const char *users = NULL, *ids_in = NULL, *ids_out = NULL;
  worker_t *w;
  double *all, elapsed;
  size_t total = 0, ok = 0, at = 0;
  const char *first_error = "";
  int c, have_phase = 0;

  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 's': l.server = optarg; break;
    case 'p':
      for (size_t i = 0; i < sizeof(phase_names) / sizeof(phase_names[0]); i++)
        if (strcmp(optarg, phase_names[i]) == 0) {
          l.phase = (phase_t)i;
          have_phase = 1;
        }
      break;
    case 'c': l.concurrency = atoi(optarg); break;
    case 'd': l.duration = atof(optarg); break;
    case 'u': users = optarg; break;
    case 'i': ids_in = optarg; break;
    case 'o': ids_out = optarg; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (!l.server || !have_phase || l.concurrency < 1 || l.concurrency > 4096 || l.duration <= 0) {
    usage(stderr);
    return 2;
  }
  if (l.phase != PHASE_HEALTH && (!users || read_users(&l, users) != 0)) {
    fprintf(stderr, "clue-load: phase %s needs --users with at least one unit\n", phase_names[l.phase]);
    return 2;
  }
  if (l.phase >= PHASE_MOVE && l.phase <= PHASE_GET) {
    if (!ids_in || read_ids(&l, ids_in) != 0 || l.nids == 0) {
      fprintf(stderr, "clue-load: phase %s needs --ids-in with at least one clue\n", phase_names[l.phase]);
      return 2;
    }
  }
  w = calloc((size_t)l.concurrency, sizeof(*w));
  if (!w)
    return 1;
  clock_gettime(CLOCK_MONOTONIC, &l.start);
  for (int i = 0; i < l.concurrency; i++) {
    w[i].load = &l;
    w[i].index = i;
    w[i].seed = (unsigned)time(NULL) ^ (unsigned)(i * 2654435761u);
    if (pthread_create(&w[i].thread, NULL, run_worker, &w[i]) != 0) {
      fprintf(stderr, "clue-load: cannot start thread %d\n", i);
      return 1;
    }
  }
  for (int i = 0; i < l.concurrency; i++) {
    pthread_join(w[i].thread, NULL);
    total += w[i].ncalls;
    ok += w[i].ok;
    if (!first_error[0] && w[i].first_error[0])
      first_error = w[i].first_error;
  }
  elapsed = now_s() - ((double)l.start.tv_sec + (double)l.start.tv_nsec / 1e9);
  all = malloc((total ? total : 1) * sizeof(double));
  if (!all)
    return 1;
  for (int i = 0; i < l.concurrency; i++) {
    memcpy(all + at, w[i].lat_ms, w[i].ncalls * sizeof(double));
    at += w[i].ncalls;
  }
  qsort(all, total, sizeof(double), cmp_double);
  if (ids_out) {
    FILE *f = fopen(ids_out, "w");
    if (!f) {
      fprintf(stderr, "clue-load: %s: %s\n", ids_out, strerror(errno));
      return 1;
    }
    for (int i = 0; i < l.concurrency; i++)
      for (size_t j = 0; j < w[i].ndone; j++)
        fprintf(f, "%lld %lld\n", w[i].done[j].id, w[i].done[j].unit_id);
    fclose(f);
  }
  printf("{\"phase\":\"%s\",\"concurrency\":%d,\"calls\":%zu,\"ok\":%zu,\"errors\":%zu,"
         "\"seconds\":%.3f,\"per_second\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"first_error\":\"",
         phase_names[l.phase], l.concurrency, total, ok, total - ok, elapsed,
         elapsed > 0 ? (double)ok / elapsed : 0.0, pct(all, total, 0.50), pct(all, total, 0.99));
  for (const char *p = first_error; *p; p++) /* JSON string: escape what must be */
    if (*p == '"' || *p == '\\')
      printf("\\%c", *p);
    else if ((unsigned char)*p < 0x20)
      printf("\\u%04x", *p);
    else
      putchar(*p);
  printf("\"}\n");
  for (int i = 0; i < l.concurrency; i++) {
    free(w[i].lat_ms);
    free(w[i].done);
  }
  free(w);
  free(all);
  free(l.ids);
  return 0;
}
