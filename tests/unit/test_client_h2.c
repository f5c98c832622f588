/*
 * libclue against a scripted HTTP/2 peer: an nghttp2 server session on a thread whose
 * answer depends on the request path. It produces what a well-behaved gRPC server rarely
 * does on demand: trailers-only answers, plain HTTP errors, one-byte DATA frames, GOAWAY,
 * RST_STREAM, responses larger than the flow-control windows, and silence.
 *
 * Requests and responses are grpc.health.v1.HealthCheckRequest (one string field), so the
 * peer can echo or report what it saw in the `service` field.
 */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "../../client/lib/mem.h" /* test hooks: allocation failure injection */
#include "clue/client.h"
#include "grpc/health/v1/health.pb-c.h"

/* ---- the scripted peer ----------------------------------------------------------- */

typedef struct peer {
  int lfd;
  int port;
  pthread_t thread;
  pthread_mutex_t mu;
  int stop;
  int accepts;       /* connections accepted so far */
  int conn_fd;       /* connection being served, -1 if none */
  uint32_t last_rst; /* error code of the last stream the client reset */
  int rst_count;
  char last_timeout[32]; /* grpc-timeout of the last request, "" if none */
  int refused;           /* a "...Once" method refused its last call: it answers the next */
} peer_t;

typedef struct sstream {
  struct sstream *next, *prev; /* the connection's open streams */
  int32_t id;
  char path[128];
  char headers[512]; /* "name=value " pairs of interest */
  char timeout[32];
  uint8_t *in;
  size_t in_len;
  uint8_t *out; /* DATA to send */
  size_t out_len, out_off;
  size_t chunk; /* largest DATA frame payload, 0: no limit */
  int infinite; /* repeat out forever */
  int trailers; /* send grpc-status 0 trailers after out */
} sstream_t;

typedef struct sconn {
  peer_t *peer;
  int fd;
  sstream_t *streams;
  int close_after_send; /* hang up once the queued frames are out */
} sconn_t;

static peer_t peer;

static void append(sstream_t *s, const void *p, size_t n) {
  if (n == 0)
    return;
  s->out = realloc(s->out, s->out_len + n);
  assert_non_null(s->out);
  memcpy(s->out + s->out_len, p, n);
  s->out_len += n;
}

/* Append one length-prefixed message holding service = text (flag: compressed bit). */
static void append_msg(sstream_t *s, const char *text, size_t len, uint8_t flag) {
  Grpc__Health__V1__HealthCheckRequest m = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  char *copy = strndup(text, len);
  size_t n;
  uint8_t *buf, prefix[5];

  assert_non_null(copy);
  m.service = copy;
  n = protobuf_c_message_get_packed_size(&m.base);
  buf = malloc(n + 1);
  assert_non_null(buf);
  protobuf_c_message_pack(&m.base, buf);
  prefix[0] = flag;
  prefix[1] = (uint8_t)(n >> 24);
  prefix[2] = (uint8_t)(n >> 16);
  prefix[3] = (uint8_t)(n >> 8);
  prefix[4] = (uint8_t)n;
  append(s, prefix, 5);
  append(s, buf, n);
  free(buf);
  free(copy);
}

static ssize_t s_send(nghttp2_session *session, const uint8_t *data, size_t len, int flags,
                      void *user_data) {
  sconn_t *c = user_data;
  ssize_t n;

  (void)session;
  (void)flags;
  n = send(c->fd, data, len, MSG_NOSIGNAL);
  return n < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : n;
}

static void sstream_free(sconn_t *c, sstream_t *s) {
  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    c->streams = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  free(s->in);
  free(s->out);
  free(s);
}

static int s_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  sstream_t *s;

  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  sconn_t *c = user_data;

  s = calloc(1, sizeof(*s));
  assert_non_null(s);
  s->id = frame->hd.stream_id;
  s->next = c->streams;
  if (c->streams != NULL)
    c->streams->prev = s;
  c->streams = s;
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
  return 0;
}

static int s_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                    size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                    void *user_data) {
  sstream_t *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  size_t used;

  (void)flags;
  (void)user_data;
  if (s == NULL)
    return 0;
  if (namelen == 5 && memcmp(name, ":path", 5) == 0)
    snprintf(s->path, sizeof(s->path), "%.*s", (int)valuelen, value);
  if (namelen == 12 && memcmp(name, "grpc-timeout", 12) == 0)
    snprintf(s->timeout, sizeof(s->timeout), "%.*s", (int)valuelen, value);
  used = strlen(s->headers);
  snprintf(s->headers + used, sizeof(s->headers) - used, "%.*s=%.*s ", (int)namelen, name,
           (int)valuelen, value);
  return 0;
}

static int s_data(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                  size_t len, void *user_data) {
  sstream_t *s = nghttp2_session_get_stream_user_data(session, id);

  (void)flags;
  (void)user_data;
  if (s != NULL) {
    s->in = realloc(s->in, s->in_len + len);
    assert_non_null(s->in);
    memcpy(s->in + s->in_len, data, len);
    s->in_len += len;
  }
  return 0;
}

static ssize_t s_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                      uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
  sstream_t *s = source->ptr;
  size_t n;

  (void)user_data;
  if (s->infinite && s->out_off == s->out_len)
    s->out_off = 0;
  n = s->out_len - s->out_off;
  if (n > length)
    n = length;
  if (s->chunk != 0 && n > s->chunk)
    n = s->chunk;
  if (n > 0)
    memcpy(buf, s->out + s->out_off, n);
  s->out_off += n;
  if (s->out_off == s->out_len && !s->infinite) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->trailers) {
      nghttp2_nv t[] = {{(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, 0}};
      *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      assert_int_equal(nghttp2_submit_trailer(session, id, t, 1), 0);
    }
  }
  return (ssize_t)n;
}

#define HDR(n, v)                                                                                  \
  { (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE }

/* Response headers, then s->out as DATA (with OK trailers if s->trailers). */
static void reply(nghttp2_session *session, sstream_t *s, const char *status, const char *ct) {
  nghttp2_nv h[] = {HDR(":status", status), HDR("content-type", ct)};
  nghttp2_data_provider prd = {.source.ptr = s, .read_callback = s_read};

  assert_int_equal(nghttp2_submit_response(session, s->id, h, 2, &prd), 0);
}

/* A HEADERS frame with END_STREAM: trailers-only, or a bare HTTP error. */
static void reply_headers_only(nghttp2_session *session, sstream_t *s, const nghttp2_nv *h,
                               size_t n) {
  assert_int_equal(nghttp2_submit_response(session, s->id, h, n, NULL), 0);
}

static int path_is(const sstream_t *s, const char *method) {
  return strncmp(s->path, "/t.S/", 5) == 0 && strcmp(s->path + 5, method) == 0;
}

static void respond(nghttp2_session *session, sconn_t *c, sstream_t *s) {
  pthread_mutex_lock(&peer.mu);
  snprintf(peer.last_timeout, sizeof(peer.last_timeout), "%s", s->timeout);
  pthread_mutex_unlock(&peer.mu);

  if (path_is(s, "Echo")) {
    append(s, s->in, s->in_len);
    s->trailers = 1;
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "Headers")) {
    append_msg(s, s->headers, strlen(s->headers), 0);
    s->trailers = 1;
    reply(session, s, "200", "application/grpc+proto");
  } else if (path_is(s, "TrailersOnly")) {
    nghttp2_nv h[] = {HDR(":status", "200"), HDR("content-type", "application/grpc"),
                      HDR("grpc-status", "5"),
                      HDR("grpc-message", "no%20such%20clue%3A%20%E7%BA%BF%E7%B4%A2%zz")};
    reply_headers_only(session, s, h, 4);
  } else if (strncmp(s->path, "/t.S/Http", 9) == 0) {
    append(s, "go away\n", 8); /* "/t.S/Http404": a plain 404 page */
    reply(session, s, s->path + 9, "text/html");
  } else if (path_is(s, "ErrorWithGrpcStatus")) {
    nghttp2_nv h[] = {HDR(":status", "500"), HDR("content-type", "application/grpc"),
                      HDR("grpc-status", "7"), HDR("grpc-message", "not yours")};
    reply_headers_only(session, s, h, 4);
  } else if (path_is(s, "Split")) {
    append_msg(s, "one byte at a time", 18, 0);
    s->chunk = 1;
    s->trailers = 1;
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "Big")) {
    size_t n = 3u << 20;
    char *text = malloc(n);
    assert_non_null(text);
    for (size_t i = 0; i < n; i++)
      text[i] = (char)('a' + i % 26);
    append_msg(s, text, n, 0);
    free(text);
    s->trailers = 1;
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "Stream")) {
    char text[4096];
    for (int i = 0; i < 1000; i++) {
      memset(text, 'x', sizeof(text));
      int k = snprintf(text, sizeof(text), "message %d ", i);
      text[k] = 'x';
      append_msg(s, text, sizeof(text), 0);
    }
    s->trailers = 1;
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "Three")) {
    append_msg(s, "one", 3, 0);
    append_msg(s, "two", 3, 0);
    append_msg(s, "three", 5, 0);
    s->trailers = 1;
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "Infinite")) {
    append_msg(s, "again", 5, 0);
    s->infinite = 1;
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "NoTrailers")) {
    append_msg(s, "where are my trailers", 21, 0);
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "TwoMessages")) {
    append_msg(s, "one", 3, 0);
    append_msg(s, "two", 3, 0);
    s->trailers = 1;
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "NoMessage")) {
    s->trailers = 1;
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "Garbage")) {
    append(s, "\0\0\0\0\2\xff\xff", 7);
    s->trailers = 1;
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "Compressed")) {
    append_msg(s, "squeezed", 8, 1);
    s->trailers = 1;
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "Truncated")) {
    append_msg(s, "cut short", 9, 0);
    s->out_len -= 3;
    s->trailers = 1;
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "RstRefused")) {
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_REFUSED_STREAM);
  } else if (path_is(s, "RstCalm")) {
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_ENHANCE_YOUR_CALM);
  } else if ((path_is(s, "RstRefusedOnce") || path_is(s, "GoawayRefuseOnce")) && !peer.refused) {
    /* refused unprocessed: the client sends the call again, and it is answered */
    peer.refused = 1;
    if (path_is(s, "RstRefusedOnce")) {
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_REFUSED_STREAM);
    } else {
      nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, s->id > 2 ? s->id - 2 : 0, NGHTTP2_NO_ERROR,
                            NULL, 0);
      c->close_after_send = 1;
    }
  } else if (path_is(s, "RstRefusedOnce") || path_is(s, "GoawayRefuseOnce")) {
    peer.refused = 0;
    append(s, s->in, s->in_len);
    s->trailers = 1;
    reply(session, s, "200", "application/grpc");
  } else if (path_is(s, "GoawayRefuse")) {
    /* this request is past last_stream_id: the client must see it refused */
    nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, s->id > 2 ? s->id - 2 : 0, NGHTTP2_NO_ERROR,
                          NULL, 0);
    c->close_after_send = 1;
  } else if (path_is(s, "GoawayAfter")) {
    /* answered, but the connection is drained: the next call needs a new one */
    append(s, s->in, s->in_len);
    s->trailers = 1;
    reply(session, s, "200", "application/grpc");
    nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR, NULL, 0);
  } else if (path_is(s, "Hang")) {
    /* say nothing */
  } else {
    nghttp2_nv h[] = {HDR(":status", "200"), HDR("content-type", "application/grpc"),
                      HDR("grpc-status", "12"), HDR("grpc-message", "unknown method")};
    reply_headers_only(session, s, h, 4);
  }
}

static int s_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  sstream_t *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);

  if (s != NULL && (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
    respond(session, user_data, s);
  return 0;
}

static int s_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code,
                          void *user_data) {
  sstream_t *s = nghttp2_session_get_stream_user_data(session, id);

  if (error_code != NGHTTP2_NO_ERROR) {
    pthread_mutex_lock(&peer.mu);
    peer.last_rst = error_code;
    peer.rst_count++;
    pthread_mutex_unlock(&peer.mu);
  }
  if (s != NULL)
    sstream_free(user_data, s);
  return 0;
}

static void serve_conn(int fd) {
  sconn_t c = {&peer, fd, NULL, 0};
  int one = 1;
  nghttp2_session_callbacks *cb;
  nghttp2_session *session;
  uint8_t buf[16384];

  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
  nghttp2_session_callbacks_set_send_callback(cb, s_send);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, s_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, s_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, s_data);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, s_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, s_stream_close);
  assert_int_equal(nghttp2_session_server_new(&session, cb, &c), 0);
  nghttp2_session_callbacks_del(cb);
  nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, NULL, 0);
  for (;;) {
    ssize_t n;
    if (nghttp2_session_send(session) != 0 || c.close_after_send)
      break;
    if (!nghttp2_session_want_read(session) && !nghttp2_session_want_write(session))
      break;
    n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0 || nghttp2_session_mem_recv(session, buf, (size_t)n) < 0)
      break;
  }
  nghttp2_session_del(session); /* streams still open get no close callback */
  while (c.streams != NULL)
    sstream_free(&c, c.streams);
}

static void *peer_main(void *arg) {
  (void)arg;
  for (;;) {
    int fd = accept(peer.lfd, NULL, NULL);
    int stop;
    pthread_mutex_lock(&peer.mu);
    stop = peer.stop;
    if (fd >= 0 && !stop) {
      peer.accepts++;
      peer.conn_fd = fd;
    }
    pthread_mutex_unlock(&peer.mu);
    if (fd < 0 || stop) {
      if (fd >= 0)
        close(fd);
      break;
    }
    serve_conn(fd);
    pthread_mutex_lock(&peer.mu);
    peer.conn_fd = -1;
    pthread_mutex_unlock(&peer.mu);
    close(fd);
  }
  return NULL;
}

static int peer_start(void **state) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);

  (void)state;
  memset(&peer, 0, sizeof(peer));
  peer.conn_fd = -1;
  pthread_mutex_init(&peer.mu, NULL);
  peer.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(peer.lfd >= 0);
  assert_int_equal(bind(peer.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(peer.lfd, 8), 0);
  assert_int_equal(getsockname(peer.lfd, (struct sockaddr *)&a, &len), 0);
  peer.port = ntohs(a.sin_port);
  assert_int_equal(pthread_create(&peer.thread, NULL, peer_main, NULL), 0);
  return 0;
}

static int peer_stop(void **state) {
  (void)state;
  pthread_mutex_lock(&peer.mu);
  peer.stop = 1;
  if (peer.conn_fd >= 0) /* a failed test may have left its connection open */
    shutdown(peer.conn_fd, SHUT_RDWR);
  pthread_mutex_unlock(&peer.mu);
  shutdown(peer.lfd, SHUT_RDWR); /* wakes accept() */
  pthread_join(peer.thread, NULL);
  close(peer.lfd);
  pthread_mutex_destroy(&peer.mu);
  return 0;
}

static int peer_accepts(void) {
  int n;

  pthread_mutex_lock(&peer.mu);
  n = peer.accepts;
  pthread_mutex_unlock(&peer.mu);
  return n;
}

/* ---- client helpers ------------------------------------------------------------------ */

static clue_conn_t *connect_peer(void) {
  char target[64];
  clue_conn_t *c = NULL;

  snprintf(target, sizeof(target), "127.0.0.1:%d", peer.port);
  assert_int_equal(clue_conn_new(target, &c), 0);
  return c;
}

/* Unary call of /t.S/<method> with service = text; returns the code, fills *reply. */
static int call(clue_conn_t *c, const char *method, const char *text, clue_status_t *st,
                char **reply) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  char path[64];
  int rv;

  snprintf(path, sizeof(path), "/t.S/%s", method);
  req.service = (char *)text;
  rv =
      clue_call(c, path, &req.base, &grpc__health__v1__health_check_request__descriptor, &resp, st);
  if (rv == 0) {
    assert_non_null(resp);
    if (reply != NULL)
      *reply = strdup(((Grpc__Health__V1__HealthCheckRequest *)resp)->service);
    protobuf_c_message_free_unpacked(resp, NULL);
  } else {
    assert_null(resp);
  }
  return rv;
}

static void expect_status(clue_conn_t *c, const char *method, int code, const char *msg_part) {
  clue_status_t st = CLUE_STATUS_INIT;
  int rv = call(c, method, "x", &st, NULL);

  if (rv != code || st.code != code ||
      (msg_part != NULL && (st.message == NULL || strstr(st.message, msg_part) == NULL)))
    fail_msg("%s: got %d %s \"%s\", want %d with \"%s\"", method, rv, clue_status_name(st.code),
             st.message ? st.message : "(null)", code, msg_part ? msg_part : "");
  clue_status_clear(&st);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_targets(void **state) {
  static const char *good[] = {"127.0.0.1:50051", "localhost",     "[::1]:443", "[::1]", "::1",
                               "fe80::1%eth0",    "example.org:1", "a:65535"};
  static const char *bad[] = {"",     ":80",    "host:",    "host:0", "host:65536", "host:12a",
                              "[::1", "[::1]x", "[host]:1", "a b:1",  "a/b:1",      "[]:1"};
  clue_conn_t *c;

  (void)state;
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    c = NULL;
    if (clue_conn_new(good[i], &c) != 0)
      fail_msg("target %s refused", good[i]);
    assert_string_equal(clue_conn_target(c), good[i]);
    clue_conn_free(c);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    c = NULL;
    if (clue_conn_new(bad[i], &c) != CLUE_EINVAL)
      fail_msg("target '%s' accepted", bad[i]);
    assert_null(c);
  }
}

static void test_connection_refused(void **state) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  clue_status_t st = CLUE_STATUS_INIT;
  char target[64], want[96];
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  clue_conn_t *c = NULL;

  (void)state;
  /* a port that was just free: nobody listens there */
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  snprintf(target, sizeof(target), "127.0.0.1:%d", ntohs(a.sin_port));
  snprintf(want, sizeof(want), "connection refused to %s", target);
  assert_int_equal(clue_conn_new(target, &c), 0);
  assert_int_equal(call(c, "Echo", "x", &st, NULL), CLUE_STATUS_UNAVAILABLE);
  assert_int_equal(st.code, CLUE_STATUS_UNAVAILABLE);
  assert_string_equal(st.message, want);
  assert_int_equal(clue_conn_connect(c, &st), CLUE_STATUS_UNAVAILABLE);
  assert_string_equal(st.message, want);
  clue_status_clear(&st);
  clue_conn_free(c);
}

static void test_sequential_calls_one_connection(void **state) {
  clue_conn_t *c = connect_peer();
  clue_status_t st = CLUE_STATUS_INIT;
  int before = peer_accepts();
  char *reply = NULL, text[32];

  (void)state;
  for (int i = 0; i < 50; i++) {
    snprintf(text, sizeof(text), "call %d", i);
    assert_int_equal(call(c, "Echo", text, &st, &reply), 0);
    assert_int_equal(st.code, CLUE_STATUS_OK);
    assert_string_equal(reply, text);
    free(reply);
  }
  assert_int_equal(peer_accepts(), before + 1);
  clue_status_clear(&st);
  clue_conn_free(c);
}

static void test_request_headers(void **state) {
  clue_conn_t *c = connect_peer();
  clue_status_t st = CLUE_STATUS_INIT;
  char *h = NULL, want[64];

  (void)state;
  assert_int_equal(clue_conn_set_token(c, "s3cret"), 0);
  assert_int_equal(clue_conn_set_token(c, "bad\ntoken"), CLUE_EINVAL);
  assert_int_equal(call(c, "Headers", "", &st, &h), 0);
  assert_non_null(strstr(h, ":method=POST "));
  assert_non_null(strstr(h, ":scheme=http "));
  assert_non_null(strstr(h, ":path=/t.S/Headers "));
  snprintf(want, sizeof(want), ":authority=127.0.0.1:%d ", peer.port);
  assert_non_null(strstr(h, want));
  assert_non_null(strstr(h, "content-type=application/grpc "));
  assert_non_null(strstr(h, "te=trailers "));
  assert_non_null(strstr(h, "authorization=Bearer s3cret "));
  assert_null(strstr(h, "grpc-timeout"));
  free(h);
  clue_conn_set_timeout(c, 2500);
  assert_int_equal(clue_conn_set_token(c, NULL), 0);
  assert_int_equal(call(c, "Headers", "", &st, &h), 0);
  assert_null(strstr(h, "authorization"));
  assert_non_null(strstr(h, "grpc-timeout="));
  free(h);
  pthread_mutex_lock(&peer.mu);
  {
    unsigned long ms = strtoul(peer.last_timeout, NULL, 10);
    assert_true(peer.last_timeout[strlen(peer.last_timeout) - 1] == 'm');
    assert_true(ms > 2000 && ms <= 2500);
  }
  pthread_mutex_unlock(&peer.mu);
  clue_status_clear(&st);
  clue_conn_free(c);
}

static void test_status_mapping(void **state) {
  clue_conn_t *c = connect_peer();
  clue_status_t st = CLUE_STATUS_INIT;

  (void)state;
  /* trailers-only, with the message percent-decoded (a malformed escape kept as is) */
  assert_int_equal(call(c, "TrailersOnly", "x", &st, NULL), CLUE_STATUS_NOT_FOUND);
  assert_string_equal(st.message, "no such clue: 线索%zz");
  clue_status_clear(&st);
  expect_status(c, "Http400", CLUE_STATUS_INTERNAL, "HTTP status 400");
  expect_status(c, "Http401", CLUE_STATUS_UNAUTHENTICATED, "HTTP status 401");
  expect_status(c, "Http403", CLUE_STATUS_PERMISSION_DENIED, NULL);
  expect_status(c, "Http404", CLUE_STATUS_UNIMPLEMENTED, NULL);
  expect_status(c, "Http429", CLUE_STATUS_UNAVAILABLE, NULL);
  expect_status(c, "Http502", CLUE_STATUS_UNAVAILABLE, NULL);
  expect_status(c, "Http503", CLUE_STATUS_UNAVAILABLE, NULL);
  expect_status(c, "Http504", CLUE_STATUS_UNAVAILABLE, NULL);
  expect_status(c, "Http418", CLUE_STATUS_UNKNOWN, NULL);
  expect_status(c, "Http500", CLUE_STATUS_UNKNOWN, NULL);
  /* grpc-status, when present, wins over the HTTP status */
  expect_status(c, "ErrorWithGrpcStatus", CLUE_STATUS_PERMISSION_DENIED, "not yours");
  expect_status(c, "NoSuchMethod", CLUE_STATUS_UNIMPLEMENTED, "unknown method");
  expect_status(c, "NoTrailers", CLUE_STATUS_INTERNAL, "without sending trailers");
  expect_status(c, "TwoMessages", CLUE_STATUS_INTERNAL, "more than one message");
  expect_status(c, "NoMessage", CLUE_STATUS_INTERNAL, "no response message");
  expect_status(c, "Garbage", CLUE_STATUS_INTERNAL, "cannot decode");
  expect_status(c, "Compressed", CLUE_STATUS_INTERNAL, "compressed");
  expect_status(c, "Truncated", CLUE_STATUS_INTERNAL, "middle of a message");
  expect_status(c, "RstRefused", CLUE_STATUS_UNAVAILABLE, "stream reset by");
  expect_status(c, "RstCalm", CLUE_STATUS_RESOURCE_EXHAUSTED, NULL);
  /* all of that on one connection, which still works */
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL);
  clue_conn_free(c);
}

static void test_split_frames_and_big_messages(void **state) {
  clue_conn_t *c = connect_peer();
  clue_status_t st = CLUE_STATUS_INIT;
  char *reply = NULL;
  int before = peer_accepts();

  (void)state;
  assert_int_equal(call(c, "Split", "", &st, &reply), 0);
  assert_string_equal(reply, "one byte at a time");
  free(reply);
  /* 3 MiB: more than the stream window, so the window must be reopened on the way */
  assert_int_equal(call(c, "Big", "", &st, &reply), 0);
  assert_int_equal(strlen(reply), 3u << 20);
  assert_int_equal(reply[(3u << 20) - 1], 'a' + ((3u << 20) - 1) % 26);
  free(reply);
  /* over the receive limit: refused, and the connection survives */
  clue_conn_set_max_recv(c, 1u << 20);
  assert_int_equal(call(c, "Big", "", &st, NULL), CLUE_STATUS_RESOURCE_EXHAUSTED);
  assert_non_null(strstr(st.message, "over the limit of 1048576 bytes"));
  clue_conn_set_max_recv(c, CLUE_DEFAULT_MAX_RECV);
  assert_int_equal(call(c, "Echo", "still here", &st, &reply), 0);
  assert_string_equal(reply, "still here");
  free(reply);
  assert_int_equal(peer_accepts(), before + 1);
  clue_status_clear(&st);
  clue_conn_free(c);
}

static int start_stream(clue_conn_t *c, const char *method, clue_stream_t **s, clue_status_t *st) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  char path[64];

  snprintf(path, sizeof(path), "/t.S/%s", method);
  return clue_stream_start(c, path, &req.base, &grpc__health__v1__health_check_request__descriptor,
                           s, st);
}

static void test_stream_reads_everything(void **state) {
  clue_conn_t *c = connect_peer();
  clue_status_t st = CLUE_STATUS_INIT;
  clue_stream_t *s = NULL;
  ProtobufCMessage *m;
  int n = 0, rv;
  char want[32];

  (void)state;
  assert_int_equal(start_stream(c, "Stream", &s, &st), 0);
  /* ~4 MB in 1000 messages, read one by one: flow control must keep it moving */
  while ((rv = clue_stream_next(s, &m, &st)) == 1) {
    const char *text = ((Grpc__Health__V1__HealthCheckRequest *)m)->service;
    snprintf(want, sizeof(want), "message %d x", n);
    assert_memory_equal(text, want, strlen(want));
    assert_int_equal(strlen(text), 4096);
    protobuf_c_message_free_unpacked(m, NULL);
    n++;
  }
  assert_int_equal(rv, 0);
  assert_int_equal(st.code, CLUE_STATUS_OK);
  assert_int_equal(n, 1000);
  /* after the end, the same answer again */
  assert_int_equal(clue_stream_next(s, &m, &st), 0);
  assert_int_equal(st.code, CLUE_STATUS_OK);
  clue_stream_free(s);
  clue_status_clear(&st);
  clue_conn_free(c);
}

static void test_stream_stop_early_and_deadline(void **state) {
  clue_conn_t *c = connect_peer();
  clue_status_t st = CLUE_STATUS_INIT;
  clue_stream_t *s = NULL;
  ProtobufCMessage *m;
  int before_rst, n = 0, rv;

  (void)state;
  pthread_mutex_lock(&peer.mu);
  before_rst = peer.rst_count;
  pthread_mutex_unlock(&peer.mu);
  assert_int_equal(start_stream(c, "Infinite", &s, &st), 0);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(clue_stream_next(s, &m, &st), 1);
    assert_string_equal(((Grpc__Health__V1__HealthCheckRequest *)m)->service, "again");
    protobuf_c_message_free_unpacked(m, NULL);
  }
  clue_stream_free(s);                            /* RST_STREAM(CANCEL) */
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL); /* the peer has handled the reset by now */
  pthread_mutex_lock(&peer.mu);
  assert_int_equal(peer.rst_count, before_rst + 1);
  assert_int_equal(peer.last_rst, NGHTTP2_CANCEL);
  pthread_mutex_unlock(&peer.mu);

  /* an endless stream under a deadline: messages, then DEADLINE_EXCEEDED */
  clue_conn_set_timeout(c, 200);
  assert_int_equal(start_stream(c, "Infinite", &s, &st), 0);
  while ((rv = clue_stream_next(s, &m, &st)) == 1) {
    protobuf_c_message_free_unpacked(m, NULL);
    n++;
  }
  assert_int_equal(rv, 0);
  assert_true(n > 0);
  assert_int_equal(st.code, CLUE_STATUS_DEADLINE_EXCEEDED);
  clue_stream_free(s);
  clue_status_clear(&st);
  clue_conn_free(c);
}

static void test_deadline_and_cancel(void **state) {
  clue_conn_t *c = connect_peer();
  clue_status_t st = CLUE_STATUS_INIT;
  volatile sig_atomic_t flag = 0;
  int before = peer_accepts(), before_rst;

  (void)state;
  clue_conn_set_timeout(c, 150);
  expect_status(c, "Hang", CLUE_STATUS_DEADLINE_EXCEEDED, "deadline of 0.150s exceeded");
  clue_conn_set_timeout(c, 0);
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL);
  clue_conn_set_cancel_flag(c, &flag);
  pthread_mutex_lock(&peer.mu);
  before_rst = peer.rst_count;
  pthread_mutex_unlock(&peer.mu);
  flag = 1;
  /* up before the call starts: nothing reaches the peer, not even a reset stream */
  expect_status(c, "Hang", CLUE_STATUS_CANCELLED, "cancelled before the call was sent");
  flag = 0;
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL);
  pthread_mutex_lock(&peer.mu);
  assert_int_equal(peer.rst_count, before_rst);
  pthread_mutex_unlock(&peer.mu);
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL);
  assert_int_equal(peer_accepts(), before + 1);
  clue_status_clear(&st);
  clue_conn_free(c);
}

/* Raises a cancel flag from its own thread after a while, as a watchdog thread of a program
 * would; should the blocked call not notice within a few seconds, it hangs up the peer's
 * end of the connection, so that the call ends (UNAVAILABLE, not CANCELLED) and the test
 * fails instead of hanging. */
typedef struct raiser {
  pthread_t thread;
  volatile sig_atomic_t *flag;
  int done; /* the call has returned (atomic) */
} raiser_t;

static void *raiser_main(void *arg) {
  raiser_t *r = arg;

  usleep(200 * 1000);
  __atomic_store_n(r->flag, 1, __ATOMIC_RELAXED);
  for (int i = 0; i < 50 && !__atomic_load_n(&r->done, __ATOMIC_ACQUIRE); i++)
    usleep(100 * 1000);
  if (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE)) {
    pthread_mutex_lock(&peer.mu);
    if (peer.conn_fd >= 0)
      shutdown(peer.conn_fd, SHUT_RDWR);
    pthread_mutex_unlock(&peer.mu);
  }
  return NULL;
}

static void raiser_start(raiser_t *r, volatile sig_atomic_t *flag) {
  r->flag = flag;
  r->done = 0;
  assert_int_equal(pthread_create(&r->thread, NULL, raiser_main, r), 0);
}

static void raiser_stop(raiser_t *r) {
  __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
  pthread_join(r->thread, NULL);
}

static double now_s(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A call blocked with no deadline is cancelled by a flag another thread raises, though no
 * signal interrupts the waiting thread: a unary call, then a stream. */
static void test_cancel_from_another_thread(void **state) {
  clue_conn_t *c = connect_peer();
  clue_status_t st = CLUE_STATUS_INIT;
  volatile sig_atomic_t flag = 0;
  clue_stream_t *s = NULL;
  ProtobufCMessage *m = NULL;
  raiser_t r;
  double t0;
  int rv;

  (void)state;
  clue_conn_set_cancel_flag(c, &flag);
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL); /* connected */

  raiser_start(&r, &flag);
  t0 = now_s();
  rv = call(c, "Hang", "x", &st, NULL);
  raiser_stop(&r);
  if (rv != CLUE_STATUS_CANCELLED || now_s() - t0 > 2)
    fail_msg("unary call: %s \"%s\" after %.2fs, want CANCELLED at once", clue_status_name(rv),
             st.message ? st.message : "", now_s() - t0);
  flag = 0;
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL);

  assert_int_equal(start_stream(c, "Hang", &s, &st), 0);
  raiser_start(&r, &flag);
  t0 = now_s();
  rv = clue_stream_next(s, &m, &st);
  raiser_stop(&r);
  assert_int_equal(rv, 0);
  if (st.code != CLUE_STATUS_CANCELLED || now_s() - t0 > 2)
    fail_msg("stream: %s \"%s\" after %.2fs, want CANCELLED at once", clue_status_name(st.code),
             st.message ? st.message : "", now_s() - t0);
  clue_stream_free(s);
  flag = 0;
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL);
  clue_status_clear(&st);
  clue_conn_free(c);
}

/* Timeouts too long for grpc-timeout (UINT64_MAX, the natural "no limit", among them) are
 * no deadline: no instant DEADLINE_EXCEEDED, no overflow; the longest one that fits is sent. */
static void test_huge_timeouts(void **state) {
  static const uint64_t none[] = {UINT64_MAX, (uint64_t)INT64_MAX, (uint64_t)1 << 63,
                                  UINT64_C(99999999) * 3600000 + 1};
  static const struct {
    uint64_t ms;
    const char *sent;
  } kept[] = {{UINT64_C(99999999) * 3600000, "99999999H"},
              {UINT64_C(1000) * 3600 * 24 * 365 * 100, "52560000M"}}; /* 100 years */
  clue_conn_t *c = connect_peer();
  clue_status_t st = CLUE_STATUS_INIT;
  char *h = NULL;

  (void)state;
  for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
    clue_conn_t *fresh = connect_peer(); /* connecting under the timeout too */

    clue_conn_set_timeout(fresh, none[i]);
    if (call(fresh, "Headers", "", &st, &h) != 0)
      fail_msg("timeout %llu: %s \"%s\"", (unsigned long long)none[i], clue_status_name(st.code),
               st.message ? st.message : "");
    assert_null(strstr(h, "grpc-timeout"));
    free(h);
    assert_int_equal(clue_conn_connect(fresh, &st), 0);
    clue_conn_free(fresh);
  }
  for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
    char want[48];

    clue_conn_set_timeout(c, kept[i].ms);
    assert_int_equal(call(c, "Headers", "", &st, &h), 0);
    snprintf(want, sizeof(want), "grpc-timeout=%s ", kept[i].sent);
    if (strstr(h, want) == NULL)
      fail_msg("timeout %llu: want %s in %s", (unsigned long long)kept[i].ms, want, h);
    free(h);
  }
  clue_status_clear(&st);
  clue_conn_free(c);
}

static void test_goaway(void **state) {
  clue_conn_t *c = connect_peer();
  int before = peer_accepts();

  (void)state;
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL);
  /* refused on this connection, and again (once) on a new one */
  expect_status(c, "GoawayRefuse", CLUE_STATUS_UNAVAILABLE, "GOAWAY");
  assert_int_equal(peer_accepts(), before + 2);
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL); /* reconnected */
  assert_int_equal(peer_accepts(), before + 3);
  expect_status(c, "GoawayAfter", CLUE_STATUS_OK, NULL);
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL); /* drained connection replaced */
  assert_int_equal(peer_accepts(), before + 4);
  clue_conn_free(c);
}

/* A call the server provably did not process is sent again, once (gRPC's transparent
 * retry); the caller sees only the answer. */
static void test_refused_call_sent_again(void **state) {
  clue_conn_t *c = connect_peer();
  int before = peer_accepts();
  clue_status_t st = CLUE_STATUS_INIT;
  char *reply = NULL;

  (void)state;
  assert_int_equal(call(c, "RstRefusedOnce", "first", &st, &reply), 0);
  assert_string_equal(reply, "first");
  free(reply);
  assert_int_equal(peer_accepts(), before + 1); /* on the same connection */
  assert_int_equal(call(c, "GoawayRefuseOnce", "second", &st, &reply), 0);
  assert_string_equal(reply, "second");
  free(reply);
  assert_int_equal(peer_accepts(), before + 2); /* on a new one */
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL);
  clue_status_clear(&st);
  clue_conn_free(c);
}

/* A request nghttp2 will not send (headers over its 64 KiB header block limit) ends at once
 * as not sent: the server heard nothing, so there is no retry and no "stream reset". The
 * connection stays usable. */
static void test_request_not_sent(void **state) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  clue_conn_t *c = connect_peer();
  clue_status_t st = CLUE_STATUS_INIT;
  ProtobufCMessage *resp = NULL;
  size_t n = 70000;
  char *path = malloc(n + 1), *token = malloc(CLUE_MAX_TOKEN_LEN + 2);
  int before;

  (void)state;
  assert_non_null(path);
  assert_non_null(token);
  memset(token, 't', CLUE_MAX_TOKEN_LEN + 1);
  token[CLUE_MAX_TOKEN_LEN + 1] = '\0';
  assert_int_equal(clue_conn_set_token(c, token), CLUE_EINVAL);
  token[CLUE_MAX_TOKEN_LEN] = '\0';
  assert_int_equal(clue_conn_set_token(c, token), 0);
  assert_int_equal(clue_conn_set_token(c, NULL), 0);
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL);
  before = peer_accepts();
  memcpy(path, "/t.S/", 5);
  memset(path + 5, 'a', n - 5);
  path[n] = '\0';
  assert_int_equal(clue_call(c, path, &req.base,
                             &grpc__health__v1__health_check_request__descriptor, &resp, &st),
                   CLUE_STATUS_INTERNAL);
  assert_null(resp);
  assert_non_null(st.message);
  if (strstr(st.message, "request not sent to 127.0.0.1:") == NULL ||
      strstr(st.message, "its headers are too large; nothing was changed") == NULL)
    fail_msg("got \"%s\"", st.message);
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL);
  assert_int_equal(peer_accepts(), before);
  clue_status_clear(&st);
  clue_conn_free(c);
  free(path);
  free(token);
}

static void test_bad_arguments(void **state) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse wrong = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  clue_conn_t *c = connect_peer();
  clue_status_t st = CLUE_STATUS_INIT;
  ProtobufCMessage *resp = NULL;

  (void)state;
  assert_int_equal(clue_call(c, "no-slash", &req.base,
                             &grpc__health__v1__health_check_response__descriptor, &resp, &st),
                   CLUE_EINVAL);
  assert_int_equal(st.code, CLUE_STATUS_INVALID_ARGUMENT);
  assert_int_equal(
      clue_call(c, "/a/b", NULL, &grpc__health__v1__health_check_response__descriptor, &resp, &st),
      CLUE_EINVAL);
  /* wrong request type for the method */
  assert_int_equal(
      clue_call_method(c, &grpc__health__v1__health__descriptor, "Check", &wrong.base, &resp, &st),
      CLUE_EINVAL);
  assert_int_equal(
      clue_call_method(c, &grpc__health__v1__health__descriptor, "Nope", &req.base, &resp, &st),
      CLUE_EINVAL);
  assert_null(resp);
  clue_status_clear(&st);
  clue_conn_free(c);
}

/* Freeing the connection cancels a stream still open, messages not yet read and all. */
static void test_conn_free_with_open_stream(void **state) {
  clue_conn_t *c = connect_peer();
  clue_status_t st = CLUE_STATUS_INIT;
  clue_stream_t *s = NULL;
  ProtobufCMessage *m;

  (void)state;
  assert_int_equal(start_stream(c, "Infinite", &s, &st), 0);
  assert_int_equal(clue_stream_next(s, &m, &st), 1);
  protobuf_c_message_free_unpacked(m, NULL);
  expect_status(c, "Echo", CLUE_STATUS_OK, NULL); /* meanwhile more messages queue up */
  clue_conn_free(c);
  assert_int_equal(clue_stream_next(s, &m, &st), 0);
  assert_int_equal(st.code, CLUE_STATUS_CANCELLED);
  assert_non_null(strstr(st.message, "connection closed by the client"));
  clue_stream_free(s);
  clue_status_clear(&st);
}

/*
 * One pass of ordinary use in which allocation number `nth` fails. Every API must come
 * back with success or an error (CLUE_ENOMEM, or a status), never crash or leak; once
 * memory is back, the same connection must work again.
 */
static void use_with_failing_alloc(long nth, int *injected) {
  long before = clue__test_alloc_failures();
  clue_status_t st = CLUE_STATUS_INIT;
  clue_conn_t *c = NULL;
  clue_stream_t *s = NULL;
  ProtobufCMessage *m;
  char target[64], *reply = NULL, *json = NULL;
  int rv, n = 0;

  snprintf(target, sizeof(target), "127.0.0.1:%d", peer.port);
  clue__test_fail_alloc(nth);
  rv = clue_conn_new(target, &c);
  if (rv != 0) {
    assert_int_equal(rv, CLUE_ENOMEM);
    assert_null(c);
    goto out;
  }
  rv = clue_conn_set_token(c, "t");
  assert_true(rv == 0 || rv == CLUE_ENOMEM);
  rv = call(c, "Echo", "ping", &st, &reply);
  if (rv == 0) {
    assert_string_equal(reply, "ping");
    free(reply);
  } else {
    assert_true(rv == CLUE_ENOMEM || st.code != CLUE_STATUS_OK);
  }
  rv = call(c, "TrailersOnly", "x", &st, NULL);
  assert_true(rv == CLUE_STATUS_NOT_FOUND || rv == CLUE_ENOMEM);
  rv = start_stream(c, "Three", &s, &st);
  if (rv == 0) {
    while ((rv = clue_stream_next(s, &m, &st)) == 1) {
      protobuf_c_message_free_unpacked(m, NULL);
      n++;
    }
    assert_true((rv == 0 && st.code == CLUE_STATUS_OK && n == 3) || rv == CLUE_ENOMEM ||
                (rv == 0 && st.code == CLUE_STATUS_RESOURCE_EXHAUSTED));
    clue_stream_free(s);
  } else {
    assert_true(rv == CLUE_ENOMEM);
  }
  {
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "json";
    rv = clue_to_json(&req.base, 0, &json);
    assert_true(rv == 0 || rv == CLUE_ENOMEM);
    free(json);
  }
  /* memory is back: the connection recovers (reconnecting if the failure broke it) */
  clue__test_fail_alloc(-1);
  rv = call(c, "Echo", "again", &st, &reply);
  assert_int_equal(rv, 0);
  assert_string_equal(reply, "again");
  free(reply);
out:
  clue__test_fail_alloc(-1);
  *injected = clue__test_alloc_failures() > before;
  clue_status_clear(&st);
  clue_conn_free(c);
}

static void test_out_of_memory(void **state) {
  long nth;
  int injected = 1;

  (void)state;
  for (nth = 0; injected; nth++) {
    assert_true(nth < 20000);
    use_with_failing_alloc(nth, &injected);
  }
  assert_true(nth > 20); /* the pass does allocate: failures were really injected */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_targets),
      cmocka_unit_test(test_connection_refused),
      cmocka_unit_test(test_sequential_calls_one_connection),
      cmocka_unit_test(test_request_headers),
      cmocka_unit_test(test_status_mapping),
      cmocka_unit_test(test_split_frames_and_big_messages),
      cmocka_unit_test(test_stream_reads_everything),
      cmocka_unit_test(test_stream_stop_early_and_deadline),
      cmocka_unit_test(test_deadline_and_cancel),
      cmocka_unit_test(test_cancel_from_another_thread),
      cmocka_unit_test(test_huge_timeouts),
      cmocka_unit_test(test_goaway),
      cmocka_unit_test(test_refused_call_sent_again),
      cmocka_unit_test(test_request_not_sent),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_conn_free_with_open_stream),
      cmocka_unit_test(test_out_of_memory),
  };
  return cmocka_run_group_tests(tests, peer_start, peer_stop);
}
