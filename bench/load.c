/* clue-load: a closed-loop load generator for one phase of bench/load.
 *
 * The calls in flight (--concurrency N) are spread over K HTTP/2 connections (--connections
 * K, default min(2, N)) as concurrent streams, as a grpc++ channel carries its calls: N/K
 * streams on each (the first N%K connections take one more). Each connection is one thread
 * with a small event loop (poll on its socket) driving nghttp2's client session directly:
 * received bytes go to nghttp2_session_mem_recv, and every frame pending afterwards is
 * gathered into one buffer and written with one send(). When a stream closes, its latency
 * and status are recorded and the next call starts on that connection at once, for a fixed
 * time (or until the clues given to the phase run out). With K = N each connection carries
 * one call at a time, as one blocking client per thread would.
 *
 * Every reply's status is checked: an HTTP status other than 200, a reset stream, a reply
 * without grpc-status, a status other than OK, or a reply that does not decode counts as an
 * error, never as a success. One JSON object goes to stdout:
 *
 *   {"phase":"move","concurrency":16,"connections":2,"calls":9000,"ok":8990,"errors":10,
 *    "seconds":15.0,"per_second":599.3,"p50_ms":2.1,"p99_ms":9.8,"first_error":"ABORTED: ..."}
 *
 * Phases: submit (MEMBERs of the units in --users submit clues, spread over the units by
 * stream), move (ACCEPTED -> PRELIMINARY_CHECK by the owner's LEADER), close
 * (PRELIMINARY_CHECK -> CLOSED), get (GetClue of random clues by the owner's LEADER), health
 * (Health/Check, SERVING wanted). --users names a file of "UNIT_ID ROLE TOKEN" lines;
 * --ids-in a file of "CLUE_ID UNIT_ID" lines (the clues a phase works on; move and close deal
 * them out over the streams, so each is moved once); --ids-out receives the clues a phase
 * left in its target state, for the next phase.
 *
 * Bounds: a reply of more than 4 MiB fails its call (the stream is reset); a call without an
 * answer after 30 s fails (reset; the connection is dropped 5 s later if even that does not
 * close the stream); a lost connection fails the calls it carried and is made again if the
 * last one answered at least one call.
 */

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <protobuf-c/protobuf-c.h>

#include "clue/v1/clue.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "net/grpc_status.h"
#include "net/grpc_wire.h"

#define MAX_UNITS 64
#define CALL_TIMEOUT_S 30.0
#define CALL_TIMEOUT_HEADER "30000m" /* grpc-timeout: what libclue sends for 30 s */
#define RESET_GRACE_S 5.0            /* after a timed-out call's reset, before giving up */
#define CONNECT_TIMEOUT_MS 10000
#define MAX_REPLY (4u << 20)    /* a reply's bytes (gRPC frames) beyond this fail the call */
#define STREAM_WINDOW (1 << 20) /* per-stream receive window, as libclue */
#define CONN_WINDOW (16 << 20)  /* connection receive window, as libclue */
#define OUT_GATHER (256u << 10) /* frames gathered for one send() before writing */
#define IN_CHUNK (64u << 10)
#define USER_AGENT "clue-load/0.2"

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
  const char *server;       /* HOST:PORT as given; also the :authority */
  char host[256], port[16]; /* server, split */
  phase_t phase;
  const ProtobufCMethodDescriptor *method; /* the phase's RPC: its reply type */
  char path[128];                          /* its :path */
  int concurrency, connections;
  double duration, start, end; /* no call starts at or after end (monotonic seconds) */
  unit_tokens_t units[MAX_UNITS];
  int nunits;
  clue_ref_t *ids; /* --ids-in */
  size_t nids;
} load_t;

/* A stream slot: one call in flight at a time, the next one started when it closes.
 * IDLE: no call (one starts on the next turn of the loop); RUNNING: its call's stream is
 * open; FINISHED: no more calls (time is up, its clues are dealt out, or it cannot go on). */
typedef enum { SLOT_IDLE, SLOT_RUNNING, SLOT_FINISHED } slot_state_t;

struct conn;

typedef struct slot {
  struct conn *conn;
  slot_state_t state;
  size_t index;      /* over all connections: 0 .. concurrency-1 */
  size_t k;          /* move/close: the next --ids-in clue it takes (index, index+N, ...) */
  int32_t stream_id; /* RUNNING: its stream */
  double t0, deadline;
  clue_ref_t target; /* the clue the call works on (submit: its unit) */
  uint8_t *req;      /* the request, gRPC-framed */
  size_t req_len, req_off, req_cap;
  uint8_t *resp; /* the reply's DATA, at most MAX_REPLY bytes */
  size_t resp_len, resp_cap;
  int http_status, grpc_status; /* -1: not seen */
  char grpc_message[256];
  char local_error[256]; /* a failure seen here (deadline, oversized reply), if any */
  const char *token;     /* the credential req was prepared with */
  int resend;            /* refused unprocessed (REFUSED_STREAM): req goes again, as it is */
  unsigned resends;      /* times the current call was sent again, at most LOAD_RESENDS_MAX */
} slot_t;

/* A connection and its thread. IDLE: no socket (the loop connects); OPEN: socket and
 * HTTP/2 session; DONE: the thread is over. */
typedef enum { CONN_IDLE, CONN_OPEN, CONN_DONE } conn_state_t;

typedef struct conn {
  load_t *load;
  int index;
  pthread_t thread;
  conn_state_t state;
  int fd;
  nghttp2_session *h2;
  slot_t *slots;
  size_t nslots, running;
  uint8_t *out; /* gathered frames, out[out_off .. out_len) not yet written */
  size_t out_len, out_off, out_cap;
  size_t ok_at_connect; /* ok when the connection was made: reconnect only after progress */
  int failed;           /* out of memory here: start no more calls */
  unsigned seed;      /* which clue a get reads */
  uint8_t rnd[4096]; /* random bytes for request ids, rnd[rnd_off ..) not used yet */
  size_t rnd_off;
  /* results */
  double *lat_ms; /* one entry per call */
  size_t ncalls, lat_cap;
  size_t ok;
  char first_error[256];
  clue_ref_t *done; /* clues left in the phase's target state */
  size_t ndone, done_cap;
} conn_t;

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

/* Make buf hold at least need bytes (doubling); -1 when memory runs out. */
static int reserve(uint8_t **buf, size_t *cap, size_t need) {
  size_t c = *cap ? *cap : 1024;
  void *p;
  if (need <= *cap)
    return 0;
  while (c < need)
    c *= 2;
  if (!(p = realloc(*buf, c)))
    return -1;
  *buf = p;
  *cap = c;
  return 0;
}

/* A random version-4 UUID (the request id of a mutation), from the kernel's generator as a
 * client's would be: 122 random bits. (A rand_r() state has 32, and the sequences of two
 * phases' connections could meet: a leader's later move then reused an earlier request id.)
 * Returns 0, or -EIO if getrandom() fails. */
static int make_uuid(conn_t *c, char out[37]) {
  uint8_t *b;

  if (c->rnd_off + 16 > sizeof(c->rnd)) {
    for (size_t got = 0; got < sizeof(c->rnd);) {
      ssize_t n = getrandom(c->rnd + got, sizeof(c->rnd) - got, 0);
      if (n < 0 && errno != EINTR)
        return -EIO;
      got += n > 0 ? (size_t)n : 0;
    }
    c->rnd_off = 0;
  }
  b = c->rnd + c->rnd_off;
  c->rnd_off += 16;
  b[6] = (uint8_t)(0x40 | (b[6] & 0x0f)); /* version 4 */
  b[8] = (uint8_t)(0x80 | (b[8] & 0x3f)); /* RFC 4122 variant */
  snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
           b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return 0;
}

static const unit_tokens_t *unit_of(const load_t *l, long long unit_id) {
  for (int i = 0; i < l->nunits; i++)
    if (l->units[i].unit_id == unit_id)
      return &l->units[i];
  return NULL;
}

/* ---- results ------------------------------------------------------------------------- */

static void conn_note_error(conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void conn_note_error(conn_t *c, const char *fmt, ...) {
  va_list ap;
  if (c->first_error[0])
    return;
  va_start(ap, fmt);
  vsnprintf(c->first_error, sizeof(c->first_error), fmt, ap);
  va_end(ap);
}

/* One finished call: its latency, and either its error or the clue it left (id 0: none). */
static void conn_record(conn_t *c, double t0, const char *error, const clue_ref_t *made) {
  double ms = (now_s() - t0) * 1000.0;
  if (push((void **)&c->lat_ms, &c->ncalls, &c->lat_cap, sizeof(ms), &ms) != 0) {
    c->failed = 1;
    conn_note_error(c, "local: out of memory");
    return;
  }
  if (error) {
    conn_note_error(c, "%s", error);
    return;
  }
  c->ok++;
  if (made->id && push((void **)&c->done, &c->ndone, &c->done_cap, sizeof(*made), made) != 0) {
    c->failed = 1;
    conn_note_error(c, "local: out of memory");
  }
}

/* ---- stream slots -------------------------------------------------------------------- */

/* How often one call is sent again after REFUSED_STREAM before the refusal counts as its
 * error: a server that refuses every stream must not make the generator spin. */
#define LOAD_RESENDS_MAX 8

/* The one place a slot changes state; it keeps the connection's count of running calls. */
static void slot_set_state(slot_t *s, slot_state_t to) {
  conn_t *c = s->conn;
  assert(s->state != SLOT_FINISHED);
  assert(to != SLOT_RUNNING || s->state == SLOT_IDLE);
  if (s->state == SLOT_RUNNING)
    c->running--;
  if (to == SLOT_RUNNING)
    c->running++;
  else
    s->stream_id = 0;
  s->state = to;
}

/* The call of a RUNNING slot is over: record it and let the slot start the next. */
static void slot_end(slot_t *s, const char *error, const clue_ref_t *made) {
  assert(s->state == SLOT_RUNNING);
  conn_record(s->conn, s->t0, error, made);
  slot_set_state(s, SLOT_IDLE);
}

/* What the closed stream of s answered; the error's text goes to err (empty: success). */
static void slot_outcome(slot_t *s, uint32_t error_code, char *err, size_t errlen,
                         clue_ref_t *made) {
  const load_t *l = s->conn->load;
  ProtobufCMessage *msg;
  uint32_t len;

  err[0] = '\0';
  made->id = made->unit_id = 0;
  if (s->local_error[0]) {
    snprintf(err, errlen, "%s", s->local_error);
    return;
  }
  if (error_code != NGHTTP2_NO_ERROR) {
    snprintf(err, errlen, "UNAVAILABLE: stream reset by the server (%s)",
             nghttp2_http2_strerror(error_code));
    return;
  }
  if (s->http_status != 200) {
    snprintf(err, errlen, "UNAVAILABLE: HTTP status %d", s->http_status);
    return;
  }
  if (s->grpc_status < 0) {
    snprintf(err, errlen, "INTERNAL: reply without grpc-status");
    return;
  }
  if (s->grpc_status != 0) {
    snprintf(err, errlen, "%s: %s", grpc_status_name(s->grpc_status), s->grpc_message);
    return;
  }
  if (s->resp_len < GRPC_FRAME_PREFIX) {
    snprintf(err, errlen, "INTERNAL: OK without a reply message");
    return;
  }
  len = (uint32_t)s->resp[1] << 24 | (uint32_t)s->resp[2] << 16 | (uint32_t)s->resp[3] << 8 |
        s->resp[4];
  if (s->resp[0] != 0 || (size_t)len != s->resp_len - GRPC_FRAME_PREFIX) {
    snprintf(err, errlen, "INTERNAL: reply of %zu bytes is not one uncompressed message",
             s->resp_len);
    return;
  }
  msg = protobuf_c_message_unpack(l->method->output, NULL, len, s->resp + GRPC_FRAME_PREFIX);
  if (!msg) {
    snprintf(err, errlen, "INTERNAL: undecodable %s", l->method->output->name);
    return;
  }
  switch (l->phase) {
  case PHASE_SUBMIT:
    made->id = ((Clue__V1__Clue *)msg)->id;
    made->unit_id = s->target.unit_id;
    if (made->id == 0)
      snprintf(err, errlen, "INTERNAL: SubmitClue answered a clue without an id");
    break;
  case PHASE_MOVE:
  case PHASE_CLOSE:
    *made = s->target;
    break;
  case PHASE_HEALTH: {
    Grpc__Health__V1__HealthCheckResponse *h = (Grpc__Health__V1__HealthCheckResponse *)msg;
    if (h->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
      snprintf(err, errlen, "UNAVAILABLE: Health/Check answered status %d, not SERVING",
               (int)h->status);
    break;
  }
  case PHASE_GET:
    break;
  }
  protobuf_c_message_free_unpacked(msg, NULL);
}

/* gRPC-frame msg into s->req. */
static int slot_pack(slot_t *s, const ProtobufCMessage *msg) {
  size_t n = protobuf_c_message_get_packed_size(msg);
  if (n > UINT32_MAX || reserve(&s->req, &s->req_cap, GRPC_FRAME_PREFIX + n) != 0)
    return -ENOMEM;
  grpc_frame_prefix(s->req, (uint32_t)n);
  protobuf_c_message_pack(msg, s->req + GRPC_FRAME_PREFIX);
  s->req_len = GRPC_FRAME_PREFIX + n;
  s->req_off = 0;
  return 0;
}

/* The phase's next request for s: framed into s->req, with the token to send (NULL: none).
 * -EINVAL: a clue whose unit has no tokens in --users; -EIO: no random bytes; -ENOMEM. */
static int slot_prepare(slot_t *s, const char **token) {
  conn_t *c = s->conn;
  load_t *l = c->load;

  *token = NULL;
  switch (l->phase) {
  case PHASE_SUBMIT: {
    const unit_tokens_t *u = &l->units[s->index % (size_t)l->nunits];
    Clue__V1__SubmitClueRequest req = CLUE__V1__SUBMIT_CLUE_REQUEST__INIT;
    Clue__V1__SubjectPerson subject = CLUE__V1__SUBJECT_PERSON__INIT;
    char rid[37];
    if (make_uuid(c, rid) != 0)
      return -EIO;
    subject.name = "王某";
    subject.position = "处长";
    req.title = "反映某某违规收受礼金";
    req.summary = "群众来信反映某某在项目审批中收受礼金，涉及金额较大，请予核查。";
    req.source = CLUE__V1__SOURCE_CHANNEL__SOURCE_CHANNEL_LETTER_VISIT_REPORT;
    req.subject = &subject;
    req.host_unit = "市发展改革委";
    req.request_id = rid;
    s->target.id = 0;
    s->target.unit_id = u->unit_id;
    *token = u->member;
    return slot_pack(s, &req.base);
  }
  case PHASE_MOVE:
  case PHASE_CLOSE: {
    const clue_ref_t *ref = &l->ids[s->k];
    const unit_tokens_t *u = unit_of(l, ref->unit_id);
    Clue__V1__RequestTransitionRequest req = CLUE__V1__REQUEST_TRANSITION_REQUEST__INIT;
    Clue__V1__TransitionDetails details = CLUE__V1__TRANSITION_DETAILS__INIT;
    char rid[37];
    s->k += (size_t)l->concurrency; /* dealt: this clue is this call's, answered or not */
    if (!u)
      return -EINVAL;
    if (make_uuid(c, rid) != 0)
      return -EIO;
    req.clue_id = ref->id;
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
    s->target = *ref;
    *token = u->leader;
    return slot_pack(s, &req.base);
  }
  case PHASE_GET: {
    const clue_ref_t *ref = &l->ids[(size_t)rand_r(&c->seed) % l->nids];
    const unit_tokens_t *u = unit_of(l, ref->unit_id);
    Clue__V1__GetClueRequest req = CLUE__V1__GET_CLUE_REQUEST__INIT;
    if (!u)
      return -EINVAL;
    req.clue_id = ref->id;
    s->target = *ref;
    *token = u->leader;
    return slot_pack(s, &req.base);
  }
  case PHASE_HEALTH: {
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    return slot_pack(s, &req.base);
  }
  }
  return -EINVAL;
}

static ssize_t read_request(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
  slot_t *s = source->ptr;
  size_t n = s->req_len - s->req_off;
  (void)h2;
  (void)stream_id;
  (void)user_data;
  if (n > length)
    n = length;
  memcpy(buf, s->req + s->req_off, n);
  s->req_off += n;
  if (s->req_off == s->req_len)
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

#define NV(n, v, fl)                                                                               \
  { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), (fl) }

/* Start the next call of an IDLE slot on its open connection, or finish the slot. */
static void slot_start(slot_t *s, double now) {
  conn_t *c = s->conn;
  load_t *l = c->load;
  int dealt = l->phase == PHASE_MOVE || l->phase == PHASE_CLOSE;
  const char *token, *why;
  char auth[160];
  nghttp2_data_provider prd;
  int32_t id;
  int rv;

  assert(s->state == SLOT_IDLE && c->state == CONN_OPEN);
  if (now >= l->end || (dealt && s->k >= l->nids) || c->failed) {
    slot_set_state(s, SLOT_FINISHED);
    return;
  }
  s->deadline = now + CALL_TIMEOUT_S;
  s->resp_len = 0;
  s->http_status = s->grpc_status = -1;
  s->grpc_message[0] = s->local_error[0] = '\0';
  if (s->resend) { /* the same request, keeping its start: its latency is the caller's */
    s->resend = 0;
    s->resends++;
    s->req_off = 0;
    token = s->token;
    rv = 0;
  } else {
    s->t0 = now;
    s->resends = 0;
    rv = slot_prepare(s, &token);
    s->token = token;
  }
  if (rv == 0) {
    nghttp2_nv nva[9] = {
        NV(":method", "POST", NGHTTP2_NV_FLAG_NONE),
        NV(":scheme", "http", NGHTTP2_NV_FLAG_NONE),
        NV(":path", l->path, NGHTTP2_NV_FLAG_NONE),
        NV(":authority", l->server, NGHTTP2_NV_FLAG_NONE),
        NV("content-type", "application/grpc", NGHTTP2_NV_FLAG_NONE),
        NV("te", "trailers", NGHTTP2_NV_FLAG_NONE),
        NV("user-agent", USER_AGENT, NGHTTP2_NV_FLAG_NONE),
        NV("grpc-timeout", CALL_TIMEOUT_HEADER, NGHTTP2_NV_FLAG_NONE),
    };
    size_t n = 8;
    if (token) { /* keep the credential out of the HPACK tables, as libclue does */
      snprintf(auth, sizeof(auth), "Bearer %s", token);
      nva[n++] = (nghttp2_nv)NV("authorization", auth, NGHTTP2_NV_FLAG_NO_INDEX);
    }
    prd.source.ptr = s;
    prd.read_callback = read_request;
    id = nghttp2_submit_request(c->h2, NULL, nva, n, &prd, s);
    if (id > 0) {
      s->stream_id = id;
      slot_set_state(s, SLOT_RUNNING);
      return;
    }
    why = nghttp2_strerror(id);
  } else {
    why = rv == -EINVAL ? "the clue's unit has no tokens in --users" : strerror(-rv);
  }
  /* A call that could not start is an error; the slot goes on only if the cause was the
   * call's own (a clue with no tokens), so a failure here cannot spin. */
  {
    char err[256];
    snprintf(err, sizeof(err), "local: %s", why);
    conn_record(c, s->t0, err, &(clue_ref_t){0, 0});
    if (rv != -EINVAL)
      slot_set_state(s, SLOT_FINISHED);
  }
}

/* ---- nghttp2 callbacks ------------------------------------------------------------------ */

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data) {
  slot_t *s;
  (void)flags;
  (void)user_data;
  if (frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
  if (!s)
    return 0;
  if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
    int v = valuelen == 3 ? grpc_parse_uint(value, valuelen, 999) : -1;
    s->http_status = v < 0 ? 0 : v;
  } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    /* unreadable counts as missing */
    s->grpc_status = valuelen <= 3 ? grpc_parse_uint(value, valuelen, 999) : -1;
  } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
    char *msg = grpc_message_decode((const char *)value, valuelen); /* cut to the buffer */
    snprintf(s->grpc_message, sizeof(s->grpc_message), "%s", msg ? msg : "(out of memory)");
    free(msg);
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user_data) {
  slot_t *s = nghttp2_session_get_stream_user_data(h2, stream_id);
  (void)flags;
  (void)user_data;
  if (!s || s->local_error[0])
    return 0;
  if (len > MAX_REPLY - s->resp_len) {
    snprintf(s->local_error, sizeof(s->local_error),
             "RESOURCE_EXHAUSTED: reply of more than %u MiB", MAX_REPLY >> 20);
  } else if (reserve(&s->resp, &s->resp_cap, s->resp_len + len) != 0) {
    snprintf(s->local_error, sizeof(s->local_error), "local: out of memory for the reply");
  } else {
    memcpy(s->resp + s->resp_len, data, len);
    s->resp_len += len;
    return 0;
  }
  /* Failed: reset the stream; the call ends with local_error when it closes. */
  return nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL) == 0
             ? 0
             : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code,
                           void *user_data) {
  slot_t *s = nghttp2_session_get_stream_user_data(h2, stream_id);
  char err[512];
  clue_ref_t made;
  (void)user_data;
  if (!s || s->state != SLOT_RUNNING || s->stream_id != stream_id)
    return 0;
  /* A stream the server refused before processing it (past its SETTINGS_MAX_CONCURRENT_STREAMS,
   * which a client may open before it has the server's SETTINGS): the same request goes
   * again, as gRPC clients retry such a stream; not an error. */
  if (error_code == NGHTTP2_REFUSED_STREAM && s->http_status < 0 && !s->local_error[0] &&
      s->resends < LOAD_RESENDS_MAX) {
    s->resend = 1;
    slot_set_state(s, SLOT_IDLE);
    return 0;
  }
  slot_outcome(s, error_code, err, sizeof(err), &made);
  slot_end(s, err[0] ? err : NULL, &made);
  /* The next call starts when nghttp2 has taken in all that was read (conn_start_calls),
   * so the calls started by one read go out in one send(). */
  return 0;
}

/* ---- connections ----------------------------------------------------------------------- */

/* The one place a connection changes state. Leaving OPEN fails the calls it carried with
 * why and frees the session and socket. */
static void conn_set_state(conn_t *c, conn_state_t to, const char *why) {
  if (c->state == CONN_OPEN && to != CONN_OPEN) {
    char err[512];
    snprintf(err, sizeof(err), "UNAVAILABLE: %s", why ? why : "connection closed");
    for (size_t i = 0; i < c->nslots; i++)
      if (c->slots[i].state == SLOT_RUNNING)
        slot_end(&c->slots[i], err, &(clue_ref_t){0, 0});
    nghttp2_session_del(c->h2);
    c->h2 = NULL;
    close(c->fd);
    c->fd = -1;
    c->out_len = c->out_off = 0;
  }
  if (to == CONN_DONE)
    for (size_t i = 0; i < c->nslots; i++)
      if (c->slots[i].state == SLOT_IDLE)
        slot_set_state(&c->slots[i], SLOT_FINISHED);
  c->state = to;
}

/* TCP connect with a bound on the wait, TCP_NODELAY; the socket stays non-blocking.
 * 0 and *fd, or -1 with the reason in err. */
static int tcp_connect(const load_t *l, int *fd, char *err, size_t errlen) {
  struct addrinfo hints, *res = NULL;
  int rv, s = -1, e = 0, one = 1;

  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  if ((rv = getaddrinfo(l->host, l->port, &hints, &res)) != 0) {
    snprintf(err, errlen, "%s: %s", l->server, gai_strerror(rv));
    return -1;
  }
  for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    struct pollfd pfd;
    socklen_t elen = sizeof(e);
    s = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (s < 0) {
      e = errno;
      continue;
    }
    if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0)
      break;
    e = errno;
    if (e == EINPROGRESS) {
      pfd.fd = s;
      pfd.events = POLLOUT;
      do
        rv = poll(&pfd, 1, CONNECT_TIMEOUT_MS);
      while (rv < 0 && errno == EINTR);
      if (rv == 0)
        e = ETIMEDOUT;
      else if (rv < 0)
        e = errno;
      else if (getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &elen) != 0)
        e = errno;
      if (e == 0)
        break;
    }
    close(s);
    s = -1;
  }
  freeaddrinfo(res);
  if (s < 0) {
    snprintf(err, errlen, "%s: %s", l->server, strerror(e ? e : EHOSTUNREACH));
    return -1;
  }
  /* Small request and reply frames must not wait for Nagle. */
  (void)setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  *fd = s;
  return 0;
}

/* Connect and make the HTTP/2 session (prior knowledge: the preface and SETTINGS go out
 * with the first send). 0, or -1 with the reason in err. */
static int conn_open(conn_t *c, char *err, size_t errlen) {
  nghttp2_session_callbacks *cb = NULL;
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
  };
  int rv, fd;

  assert(c->state == CONN_IDLE);
  if (tcp_connect(c->load, &fd, err, errlen) != 0)
    return -1;
  if ((rv = nghttp2_session_callbacks_new(&cb)) != 0)
    goto fail_fd;
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  if ((rv = nghttp2_session_client_new(&c->h2, cb, c)) != 0)
    goto fail_cb;
  if ((rv = nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, settings,
                                    sizeof(settings) / sizeof(settings[0]))) != 0 ||
      (rv = nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW)) != 0)
    goto fail_session;
  nghttp2_session_callbacks_del(cb);
  c->fd = fd;
  c->ok_at_connect = c->ok;
  c->state = CONN_OPEN;
  return 0;

fail_session:
  nghttp2_session_del(c->h2);
  c->h2 = NULL;
fail_cb:
  nghttp2_session_callbacks_del(cb);
fail_fd:
  close(fd);
  snprintf(err, errlen, "HTTP/2 session: %s", nghttp2_strerror(rv));
  return -1;
}

/* Gather every pending frame into c->out and write it with one send() (more only if the
 * gathering hit its bound). 0, or -1 with the reason in err. */
static int conn_flush(conn_t *c, char *err, size_t errlen) {
  for (;;) {
    int full = 0;
    if (c->out_off == c->out_len)
      c->out_off = c->out_len = 0;
    while (!(full = c->out_len >= OUT_GATHER)) {
      const uint8_t *data;
      ssize_t n = nghttp2_session_mem_send(c->h2, &data);
      if (n < 0) {
        snprintf(err, errlen, "HTTP/2: %s", nghttp2_strerror((int)n));
        return -1;
      }
      if (n == 0)
        break;
      if (reserve(&c->out, &c->out_cap, c->out_len + (size_t)n) != 0) {
        snprintf(err, errlen, "local: out of memory for frames to send");
        return -1;
      }
      memcpy(c->out + c->out_len, data, (size_t)n);
      c->out_len += (size_t)n;
    }
    while (c->out_off < c->out_len) {
      ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
      if (n > 0) {
        c->out_off += (size_t)n;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return 0; /* the rest when poll says the socket takes more */
      } else {
        snprintf(err, errlen, "send: %s", n < 0 ? strerror(errno) : "nothing written");
        return -1;
      }
    }
    if (!full)
      return 0;
  }
}

/* Take in what the socket holds. 0, or -1 with the reason in err. */
static int conn_read(conn_t *c, char *err, size_t errlen) {
  uint8_t buf[IN_CHUNK];
  for (;;) {
    ssize_t n = recv(c->fd, buf, sizeof(buf), 0), rv;
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return 0;
    if (n < 0) {
      snprintf(err, errlen, "recv: %s", strerror(errno));
      return -1;
    }
    if (n == 0) {
      snprintf(err, errlen, "the server closed the connection");
      return -1;
    }
    rv = nghttp2_session_mem_recv(c->h2, buf, (size_t)n);
    if (rv < 0) {
      snprintf(err, errlen, "HTTP/2: %s", nghttp2_strerror((int)rv));
      return -1;
    }
    if ((size_t)n < sizeof(buf))
      return 0;
  }
}

/* Start a call on every IDLE slot, unless the server no longer takes new streams (GOAWAY). */
static void conn_start_calls(conn_t *c) {
  int allowed = nghttp2_session_check_request_allowed(c->h2);
  for (size_t i = 0; i < c->nslots; i++) {
    slot_t *s = &c->slots[i];
    /* A call that could not start (a clue with no tokens) leaves its slot IDLE: try the
     * next at once, so that afterwards an IDLE slot means only "not on this connection". */
    while (s->state == SLOT_IDLE) {
      double now = now_s();
      if (!allowed && now < c->load->end && !c->failed)
        break; /* for the next connection */
      slot_start(s, now);
    }
  }
}

/* Reset calls past their deadline; the milliseconds poll may wait, or -1 with the reason in
 * err when a reset call has not closed in RESET_GRACE_S. */
static int conn_expire(conn_t *c, char *err, size_t errlen) {
  double now = now_s(), next = now + 1.0;
  for (size_t i = 0; i < c->nslots; i++) {
    slot_t *s = &c->slots[i];
    if (s->state != SLOT_RUNNING)
      continue;
    if (now >= s->deadline + RESET_GRACE_S) {
      snprintf(err, errlen, "no reply in %.0f s, and the reset call did not close",
               CALL_TIMEOUT_S + RESET_GRACE_S);
      return -1;
    }
    if (now >= s->deadline && !s->local_error[0]) {
      snprintf(s->local_error, sizeof(s->local_error), "DEADLINE_EXCEEDED: no reply in %.0f s",
               CALL_TIMEOUT_S);
      if (nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, s->stream_id, NGHTTP2_CANCEL) != 0) {
        snprintf(err, errlen, "cannot reset a call past its deadline");
        return -1;
      }
    }
    if (s->local_error[0] && s->deadline + RESET_GRACE_S < next)
      next = s->deadline + RESET_GRACE_S;
    else if (!s->local_error[0] && s->deadline < next)
      next = s->deadline;
  }
  return next <= now ? 0 : (int)((next - now) * 1000.0) + 1;
}

static int conn_unfinished(const conn_t *c) {
  for (size_t i = 0; i < c->nslots; i++)
    if (c->slots[i].state != SLOT_FINISHED)
      return 1;
  return 0;
}

static void *conn_run(void *arg) {
  conn_t *c = arg;
  char err[256];

  while (c->state != CONN_DONE) {
    struct pollfd pfd;
    int timeout, n;

    if (c->state == CONN_IDLE) {
      if (conn_open(c, err, sizeof(err)) != 0) {
        conn_note_error(c, "connect: %s", err);
        conn_set_state(c, CONN_DONE, NULL);
        break;
      }
    }
    conn_start_calls(c);
    /* Resets of calls past their deadline go out with this turn's send(). */
    if ((timeout = conn_expire(c, err, sizeof(err))) < 0)
      goto broken;
    if (conn_flush(c, err, sizeof(err)) != 0)
      goto broken;
    if (c->running == 0 && c->out_off == c->out_len) {
      if (!conn_unfinished(c)) { /* all done: say goodbye, as far as the socket takes it */
        if (nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR) == 0)
          (void)conn_flush(c, err, sizeof(err));
        conn_set_state(c, CONN_DONE, NULL);
        break;
      }
      snprintf(err, sizeof(err), "the server takes no new calls on this connection (GOAWAY)");
      goto broken;
    }
    pfd.fd = c->fd;
    pfd.events = POLLIN | (c->out_off < c->out_len ? POLLOUT : 0);
    pfd.revents = 0;
    n = poll(&pfd, 1, timeout);
    if (n < 0 && errno != EINTR) {
      snprintf(err, sizeof(err), "poll: %s", strerror(errno));
      goto broken;
    }
    if (n > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR)) &&
        conn_read(c, err, sizeof(err)) != 0)
      goto broken;
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) &&
        c->out_off == c->out_len) {
      snprintf(err, sizeof(err), "the server ended the HTTP/2 session");
      goto broken;
    }
    continue;

  broken:
    /* Make the connection again only if the last one answered a call, so a server that
     * drops every connection cannot make this spin. */
    if (c->ok > c->ok_at_connect) {
      conn_set_state(c, CONN_IDLE, err);
    } else {
      conn_note_error(c, "UNAVAILABLE: %s", err);
      conn_set_state(c, CONN_DONE, err);
    }
  }
  return NULL;
}

/* ---- main ------------------------------------------------------------------------------ */

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

/* HOST:PORT or [V6]:PORT into l->host, l->port. */
static int split_server(load_t *l) {
  const char *s = l->server, *colon;
  size_t hl;
  if (s[0] == '[') {
    const char *rb = strchr(s, ']');
    if (!rb || rb[1] != ':')
      return -1;
    s++;
    hl = (size_t)(rb - s);
    colon = rb + 1;
  } else {
    if (!(colon = strrchr(s, ':')))
      return -1;
    hl = (size_t)(colon - s);
  }
  if (hl == 0 || hl >= sizeof(l->host) || strlen(colon + 1) == 0 ||
      strlen(colon + 1) >= sizeof(l->port))
    return -1;
  memcpy(l->host, s, hl);
  l->host[hl] = '\0';
  snprintf(l->port, sizeof(l->port), "%s", colon + 1);
  return 0;
}

static int find_method(load_t *l) {
  const ProtobufCServiceDescriptor *svc = l->phase == PHASE_HEALTH
                                              ? &grpc__health__v1__health__descriptor
                                              : &clue__v1__clue_service__descriptor;
  static const char *const names[] = {"SubmitClue", "RequestTransition", "RequestTransition",
                                      "GetClue", "Check"};
  l->method = protobuf_c_service_descriptor_get_method_by_name(svc, names[l->phase]);
  if (!l->method)
    return -1;
  snprintf(l->path, sizeof(l->path), "/%s/%s", svc->name, l->method->name);
  return 0;
}

static void usage(FILE *f) {
  fprintf(f, "usage: clue-load --server HOST:PORT --phase submit|move|close|get|health\n"
             "                 [--concurrency N] [--connections K] [--duration SECONDS]\n"
             "                 [--users FILE] [--ids-in FILE] [--ids-out FILE]\n"
             "One phase of bench/load; prints one JSON object (see bench/load.c).\n"
             "N calls in flight (16) as HTTP/2 streams spread over K connections, one thread\n"
             "each (default min(2, N); K = N is one call per connection).\n");
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"server", required_argument, NULL, 's'},
                                       {"phase", required_argument, NULL, 'p'},
                                       {"concurrency", required_argument, NULL, 'c'},
                                       {"connections", required_argument, NULL, 'k'},
                                       {"duration", required_argument, NULL, 'd'},
                                       {"users", required_argument, NULL, 'u'},
                                       {"ids-in", required_argument, NULL, 'i'},
                                       {"ids-out", required_argument, NULL, 'o'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  load_t l = {.concurrency = 16, .duration = 10, .phase = PHASE_HEALTH};
  const char *users = NULL, *ids_in = NULL, *ids_out = NULL;
  conn_t *conns;
  slot_t *slots;
  double *all, elapsed;
  size_t total = 0, ok = 0, at = 0, next_slot = 0;
  const char *first_error = "";
  int c, have_phase = 0, status = 0;

  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 's':
      l.server = optarg;
      break;
    case 'p':
      for (size_t i = 0; i < sizeof(phase_names) / sizeof(phase_names[0]); i++)
        if (strcmp(optarg, phase_names[i]) == 0) {
          l.phase = (phase_t)i;
          have_phase = 1;
        }
      break;
    case 'c':
      l.concurrency = atoi(optarg);
      break;
    case 'k':
      l.connections = atoi(optarg);
      break;
    case 'd':
      l.duration = atof(optarg);
      break;
    case 'u':
      users = optarg;
      break;
    case 'i':
      ids_in = optarg;
      break;
    case 'o':
      ids_out = optarg;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (l.connections == 0)
    l.connections = l.concurrency < 2 ? l.concurrency : 2;
  if (!l.server || !have_phase || l.concurrency < 1 || l.concurrency > 4096 || l.connections < 1 ||
      l.connections > l.concurrency || l.duration <= 0) {
    usage(stderr);
    return 2;
  }
  if (split_server(&l) != 0) {
    fprintf(stderr, "clue-load: --server %s is not HOST:PORT\n", l.server);
    return 2;
  }
  if (find_method(&l) != 0) {
    fprintf(stderr, "clue-load: no method for phase %s\n", phase_names[l.phase]);
    return 2;
  }
  if (l.phase != PHASE_HEALTH && (!users || read_users(&l, users) != 0)) {
    fprintf(stderr, "clue-load: phase %s needs --users with at least one unit\n",
            phase_names[l.phase]);
    return 2;
  }
  if (l.phase >= PHASE_MOVE && l.phase <= PHASE_GET) {
    if (!ids_in || read_ids(&l, ids_in) != 0 || l.nids == 0) {
      fprintf(stderr, "clue-load: phase %s needs --ids-in with at least one clue\n",
              phase_names[l.phase]);
      return 2;
    }
  }
  conns = calloc((size_t)l.connections, sizeof(*conns));
  slots = calloc((size_t)l.concurrency, sizeof(*slots));
  if (!conns || !slots) {
    fprintf(stderr, "clue-load: out of memory\n");
    return 1;
  }
  /* Stream slot i (over all connections) plays the part of today's worker i: submit to unit
   * i % units, take the clues i, i+N, i+2N, ... of --ids-in. */
  for (int i = 0; i < l.connections; i++) {
    conn_t *k = &conns[i];
    k->load = &l;
    k->index = i;
    k->fd = -1;
    k->state = CONN_IDLE;
    k->seed = (unsigned)time(NULL) ^ (unsigned)((unsigned)i * 2654435761u);
    k->rnd_off = sizeof(k->rnd); /* drawn at the first request id */
    k->nslots = (size_t)(l.concurrency / l.connections + (i < l.concurrency % l.connections));
    k->slots = slots + next_slot;
    for (size_t j = 0; j < k->nslots; j++) {
      slot_t *s = &k->slots[j];
      s->conn = k;
      s->state = SLOT_IDLE;
      s->index = next_slot + j;
      s->k = s->index;
    }
    next_slot += k->nslots;
  }
  assert(next_slot == (size_t)l.concurrency);
  l.start = now_s();
  l.end = l.start + l.duration;
  for (int i = 0; i < l.connections; i++)
    if (pthread_create(&conns[i].thread, NULL, conn_run, &conns[i]) != 0) {
      fprintf(stderr, "clue-load: cannot start thread %d\n", i);
      return 1;
    }
  for (int i = 0; i < l.connections; i++) {
    pthread_join(conns[i].thread, NULL);
    total += conns[i].ncalls;
    ok += conns[i].ok;
    if (!first_error[0] && conns[i].first_error[0])
      first_error = conns[i].first_error;
  }
  elapsed = now_s() - l.start;
  all = malloc((total ? total : 1) * sizeof(double));
  if (!all)
    return 1;
  for (int i = 0; i < l.connections; i++) {
    if (conns[i].ncalls)
      memcpy(all + at, conns[i].lat_ms, conns[i].ncalls * sizeof(double));
    at += conns[i].ncalls;
  }
  qsort(all, total, sizeof(double), cmp_double);
  if (ids_out) {
    FILE *f = fopen(ids_out, "w");
    if (!f) {
      fprintf(stderr, "clue-load: %s: %s\n", ids_out, strerror(errno));
      status = 1;
    } else {
      for (int i = 0; i < l.connections; i++)
        for (size_t j = 0; j < conns[i].ndone; j++)
          fprintf(f, "%lld %lld\n", conns[i].done[j].id, conns[i].done[j].unit_id);
      fclose(f);
    }
  }
  if (status == 0) {
    printf("{\"phase\":\"%s\",\"concurrency\":%d,\"connections\":%d,\"calls\":%zu,\"ok\":%zu,"
           "\"errors\":%zu,\"seconds\":%.3f,\"per_second\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"first_error\":\"",
           phase_names[l.phase], l.concurrency, l.connections, total, ok, total - ok, elapsed,
           elapsed > 0 ? (double)ok / elapsed : 0.0, pct(all, total, 0.50), pct(all, total, 0.99));
    for (const char *p = first_error; *p; p++) /* JSON string: escape what must be */
      if (*p == '"' || *p == '\\')
        printf("\\%c", *p);
      else if ((unsigned char)*p < 0x20)
        printf("\\u%04x", *p);
      else
        putchar(*p);
    printf("\"}\n");
  }
  for (int i = 0; i < l.connections; i++) {
    free(conns[i].lat_ms);
    free(conns[i].done);
    free(conns[i].out);
  }
  for (int i = 0; i < l.concurrency; i++) {
    free(slots[i].req);
    free(slots[i].resp);
  }
  free(slots);
  free(conns);
  free(all);
  free(l.ids);
  return status;
}
