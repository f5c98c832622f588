#include "conn.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mem.h"
#include "net.h"
#include "status.h"

#define DEFAULT_PORT "50051"
#define CONNECT_TIMEOUT_MS 20000 /* when the call itself has no deadline */
#define TIMEOUT_MAX_MS (UINT64_C(99999999) * 3600000) /* grpc-timeout's largest: 99999999H */
#define STREAM_WINDOW (1 << 20)  /* per-stream receive window */
#define CONN_WINDOW (16 << 20)   /* connection receive window */
#define RECV_CHUNK 32768
#define USER_AGENT "libclue/0.1"

/* ---- state ----------------------------------------------------------------------- */

/*
 * The one place the connection changes state. Going IDLE tears the transport down and
 * fails every call still running on it with (code, why); it must not run inside an
 * nghttp2 callback, because it deletes the session.
 */
static void conn_set_state(clue_conn_t *c, conn_state_t to, int code, const char *why) {
  switch (to) {
  case CONN_IDLE:
    for (call_t *k = c->calls; k != NULL; k = k->next) {
      if (k->state != CALL_OPEN && k->state != CALL_RECEIVING)
        continue;       /* CLOSED, or IDLE: about to be started on a new transport */
      k->stream_id = 0; /* the session goes away with its streams: nothing to reset */
      clue__call_finish(k, code, why != NULL ? clue__strdup(why) : NULL);
    }
    if (c->h2 != NULL)
      nghttp2_session_del(c->h2);
    c->h2 = NULL;
    clue__tls_close(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0)
      close(c->fd);
    c->fd = -1;
    c->out_len = 0;
    free(c->h2_error);
    c->h2_error = NULL;
    c->bad_frame[0] = '\0';
    break;
  case CONN_READY:
    assert(c->state == CONN_IDLE && c->h2 != NULL && c->fd >= 0);
    break;
  case CONN_DRAINING:
    assert(c->state == CONN_READY);
    break;
  }
  c->state = to;
}

/* Transport failure: everything running on the connection ends with this status. */
static void conn_fail(clue_conn_t *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conn_fail(clue_conn_t *c, int code, const char *fmt, ...) {
  char msg[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  conn_set_state(c, CONN_IDLE, code, msg);
}

static int conn_running_calls(const clue_conn_t *c) {
  int n = 0;

  for (const call_t *k = c->calls; k != NULL; k = k->next)
    if (k->state == CALL_OPEN || k->state == CALL_RECEIVING)
      n++;
  return n;
}

void clue__conn_link(clue_conn_t *c, call_t *call) {
  call->conn = c;
  call->prev = NULL;
  call->next = c->calls;
  if (c->calls != NULL)
    c->calls->prev = call;
  c->calls = call;
}

void clue__conn_unlink(clue_conn_t *c, call_t *call) {
  if (call->prev != NULL)
    call->prev->next = call->next;
  else
    c->calls = call->next;
  if (call->next != NULL)
    call->next->prev = call->prev;
  call->next = call->prev = NULL;
  call->conn = NULL;
}

/* ---- nghttp2 callbacks ------------------------------------------------------------- */

/* Why a send() on the socket failed, as the connection's error; errno as send() left it. */
static void send_failed(clue_conn_t *c) {
  int err = errno;

  free(c->h2_error);
  if (err == EPIPE || err == ECONNRESET)
    c->h2_error = clue__str_printf("connection reset by %s", c->target);
  else
    c->h2_error = clue__str_printf("cannot send to %s: %s", c->target, strerror(err));
}

/* Write the gathered frames: 0 when all are out, 1 when the socket takes no more now (the
 * rest stays gathered), -1 on failure (c->h2_error says why). */
static int out_flush(clue_conn_t *c) {
  size_t off = 0;

  while (off < c->out_len) {
    ssize_t n = send(c->fd, c->out + off, c->out_len - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (n < 0) {
      send_failed(c);
      return -1;
    }
    off += (size_t)n;
  }
  memmove(c->out, c->out + off, c->out_len - off);
  c->out_len -= off;
  return c->out_len > 0;
}

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t length, int flags,
                       void *user_data) {
  clue_conn_t *c = user_data;
  ssize_t n;

  (void)session;
  (void)flags;
  if (c->ssl != NULL) {
    char why[256];
    n = clue__tls_send(c->ssl, data, length, why, sizeof(why));
    if (n >= 0)
      return n;
    if (n == CLUE_TLS_AGAIN)
      return NGHTTP2_ERR_WOULDBLOCK;
    free(c->h2_error);
    c->h2_error = clue__str_printf("TLS error talking to %s: %s", c->target, why);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  /* Gather; conn_send() writes what nghttp2 had once it has handed over everything. */
  if (c->out_len + length > sizeof(c->out)) {
    int rc = out_flush(c);
    if (rc < 0)
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (rc > 0)
      return NGHTTP2_ERR_WOULDBLOCK;
  }
  if (length <= sizeof(c->out)) {
    memcpy(c->out + c->out_len, data, length);
    c->out_len += length;
    return (ssize_t)length;
  }
  /* A frame larger than the gathering buffer (which is empty now) goes on its own. */
  n = send(c->fd, data, length, MSG_NOSIGNAL);
  if (n >= 0)
    return n;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
    return NGHTTP2_ERR_WOULDBLOCK;
  send_failed(c);
  return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data) {
  call_t *call;

  (void)flags;
  (void)user_data;
  if (frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (call != NULL)
    clue__call_on_header(call, name, namelen, value, valuelen);
  return 0;
}

/* A GOAWAY's debug data as text for a message, into buf: at most GOAWAY_TEXT_MAX bytes of
 * it, control bytes and DEL as \xNN. The bytes are the server's, and the message may well
 * be printed on a terminal: an escape sequence in them must not reach it as one. */
#define GOAWAY_TEXT_MAX 200

static void goaway_text(const uint8_t *data, size_t len, char buf[4 * GOAWAY_TEXT_MAX + 4]) {
  char *o = buf;

  for (size_t i = 0; i < len && i < GOAWAY_TEXT_MAX; i++) {
    if (data[i] < 0x20 || data[i] == 0x7F)
      o += sprintf(o, "\\x%02x", data[i]);
    else
      *o++ = (char)data[i];
  }
  strcpy(o, len > GOAWAY_TEXT_MAX ? "..." : "");
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  clue_conn_t *c = user_data;
  char debug[4 * GOAWAY_TEXT_MAX + 4];
  call_t *call;

  switch (frame->hd.type) {
  case NGHTTP2_HEADERS:
    call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (call != NULL)
      clue__call_on_headers_done(call);
    break;
  case NGHTTP2_PING:
    if ((frame->hd.flags & NGHTTP2_FLAG_ACK) &&
        memcmp(frame->ping.opaque_data, &c->ping_sent, sizeof(c->ping_sent)) == 0)
      c->ping_acked = 1;
    break;
  case NGHTTP2_GOAWAY:
    if (c->state == CONN_READY)
      conn_set_state(c, CONN_DRAINING, 0, NULL);
    if (frame->goaway.error_code != NGHTTP2_NO_ERROR) {
      goaway_text(frame->goaway.opaque_data, frame->goaway.opaque_data_len, debug);
      free(c->h2_error);
      c->h2_error = clue__str_printf("%s closed the connection: %s%s%s", c->target,
                                     nghttp2_http2_strerror(frame->goaway.error_code),
                                     debug[0] != '\0' ? ": " : "", debug);
    }
    break;
  default:
    break;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data) {
  call_t *call;

  (void)flags;
  (void)user_data;
  /* The connection window is given back at once, so one slow stream cannot starve the
   * others; stream windows are the call's business (see call_on_data). */
  (void)nghttp2_session_consume_connection(session, len);
  call = nghttp2_session_get_stream_user_data(session, stream_id);
  if (call == NULL) {
    (void)nghttp2_session_consume_stream(session, stream_id, len);
    return 0;
  }
  clue__call_on_data(call, data, len);
  return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data) {
  call_t *call = nghttp2_session_get_stream_user_data(session, stream_id);

  (void)user_data;
  if (call != NULL) {
    call->stream_id = 0; /* closed already: no RST_STREAM for it */
    clue__call_on_close(call, error_code);
  }
  return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len,
                    void *user_data) {
  clue_conn_t *c = user_data;

  (void)session;
  (void)lib_error_code;
  if (c->h2_error == NULL)
    c->h2_error = clue__str_printf("HTTP/2 error talking to %s: %.*s", c->target, (int)len, msg);
  return 0;
}

static const char *frame_type_name(uint8_t type) {
  static const char *const names[] = {"DATA",          "HEADERS",      "PRIORITY", "RST_STREAM",
                                      "SETTINGS",      "PUSH_PROMISE", "PING",     "GOAWAY",
                                      "WINDOW_UPDATE", "CONTINUATION"};

  return type < sizeof(names) / sizeof(names[0]) ? names[type] : "extension";
}

/* Kept for on_frame_send: nghttp2 does not always say in its GOAWAY what was wrong. */
static int on_invalid_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                                 int lib_error_code, void *user_data) {
  clue_conn_t *c = user_data;

  (void)session;
  snprintf(c->bad_frame, sizeof(c->bad_frame), "%s: %s", frame_type_name(frame->hd.type),
           nghttp2_strerror(lib_error_code));
  return 0;
}

/* nghttp2 ends the session with a GOAWAY carrying an error code only when the server broke
 * HTTP/2 (a PUSH_PROMISE though push is off, a window past 2^31-1, DATA on stream 0, ...):
 * the session is over because of the server, and nghttp2 says what it did in the debug data. */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  clue_conn_t *c = user_data;
  char debug[4 * GOAWAY_TEXT_MAX + 4];

  (void)session;
  if (frame->hd.type != NGHTTP2_GOAWAY || frame->goaway.error_code == NGHTTP2_NO_ERROR)
    return 0;
  goaway_text(frame->goaway.opaque_data, frame->goaway.opaque_data_len, debug);
  free(c->h2_error);
  c->h2_error = clue__str_printf("HTTP/2 protocol error from %s: %s (%s)", c->target,
                                 debug[0] != '\0'          ? debug
                                 : c->bad_frame[0] != '\0' ? c->bad_frame
                                                           : "invalid frame",
                                 nghttp2_http2_strerror(frame->goaway.error_code));
  return 0;
}

/*
 * A request nghttp2 would not send. After a GOAWAY the request may go again on a new connection
 * (on_stream_close sees the REFUSED_STREAM nghttp2 gives the stream); any other reason, such
 * as headers over the header block limit, is final, and the server heard nothing of it.
 */
static int on_frame_not_send(nghttp2_session *session, const nghttp2_frame *frame,
                             int lib_error_code, void *user_data) {
  clue_conn_t *c = user_data;
  call_t *call;

  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST ||
      lib_error_code == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED)
    return 0;
  call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (call != NULL)
    clue__call_finish(call, CLUE_STATUS_INTERNAL,
                      clue__str_printf("request not sent to %s: %s; nothing was changed", c->target,
                                       lib_error_code == NGHTTP2_ERR_FRAME_SIZE_ERROR ||
                                               lib_error_code == NGHTTP2_ERR_HEADER_COMP
                                           ? "its headers are too large"
                                           : nghttp2_strerror(lib_error_code)));
  /* nghttp2's header compressor is of no use after a failure: new calls take a new
   * connection once the running ones are done. */
  if (lib_error_code == NGHTTP2_ERR_HEADER_COMP && c->state == CONN_READY)
    conn_set_state(c, CONN_DRAINING, 0, NULL);
  return 0;
}

static ssize_t read_request(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data) {
  call_t *call = nghttp2_session_get_stream_user_data(session, stream_id);
  size_t n;

  (void)source;
  (void)user_data;
  if (call == NULL || call->req == NULL)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  n = call->req_len - call->req_off;
  if (n > length)
    n = length;
  memcpy(buf, call->req + call->req_off, n);
  call->req_off += n;
  if (call->req_off == call->req_len)
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

/* ---- connecting ---------------------------------------------------------------------- */

static int session_new(clue_conn_t *c) {
  nghttp2_session_callbacks *cb = NULL;
  nghttp2_option *opt = NULL;
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
  };
  int rv;

  if ((rv = nghttp2_session_callbacks_new(&cb)) != 0)
    goto out;
  nghttp2_session_callbacks_set_send_callback(cb, on_send);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_session_callbacks_set_error_callback2(cb, on_error);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame_recv);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
  if ((rv = nghttp2_option_new(&opt)) != 0)
    goto out;
  /* Window credit follows what the caller actually reads (call_on_data). */
  nghttp2_option_set_no_auto_window_update(opt, 1);
  if ((rv = nghttp2_session_client_new3(&c->h2, cb, c, opt, clue__nghttp2_mem())) != 0)
    goto out;
  c->received = 0;
  if ((rv = nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, settings,
                                    sizeof(settings) / sizeof(settings[0]))) != 0)
    goto fail_session;
  if ((rv = nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW)) != 0)
    goto fail_session;
  goto out;

fail_session:
  nghttp2_session_del(c->h2);
  c->h2 = NULL;
out:
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  return rv;
}

/* Connect the transport; deadline 0 means the call has none. */
static int conn_connect(clue_conn_t *c, int64_t deadline, clue_status_t *st) {
  int64_t limit = deadline != 0 ? deadline : clue__net_now_ms() + CONNECT_TIMEOUT_MS;
  const char *detail = "";
  net_fail_t why;
  int fd, rv;

  assert(c->state == CONN_IDLE);
  if (clue__net_connect(c->host, c->port, limit, c->cancel, &fd, &why, &detail) != 0) {
    switch (why) {
    case NET_FAIL_RESOLVE:
      clue__status_setf(st, CLUE_STATUS_UNAVAILABLE, "cannot resolve %s: %s", c->host, detail);
      break;
    case NET_FAIL_REFUSED:
      clue__status_setf(st, CLUE_STATUS_UNAVAILABLE, "connection refused to %s", c->target);
      break;
    case NET_FAIL_TIMEOUT:
      if (deadline != 0)
        clue__status_setf(st, CLUE_STATUS_DEADLINE_EXCEEDED,
                          "deadline exceeded while connecting to %s", c->target);
      else
        clue__status_setf(st, CLUE_STATUS_UNAVAILABLE, "timed out connecting to %s", c->target);
      break;
    case NET_FAIL_CANCELLED:
      clue__status_setf(st, CLUE_STATUS_CANCELLED, "cancelled while connecting to %s", c->target);
      break;
    case NET_FAIL_NOMEM:
      return clue__status_local(st, CLUE_ENOMEM);
    case NET_FAIL_OTHER:
      clue__status_setf(st, CLUE_STATUS_UNAVAILABLE, "cannot connect to %s: %s", c->target, detail);
      break;
    }
    return st->code;
  }
  if (c->tls.ctx != NULL) {
    rv = clue__tls_handshake(&c->tls, fd, c->host, c->target, limit, c->cancel, &c->ssl, st);
    if (rv != 0) {
      close(fd);
      if (rv == CLUE_STATUS_DEADLINE_EXCEEDED && deadline == 0)
        clue__status_setf(st, CLUE_STATUS_UNAVAILABLE, "timed out in the TLS handshake with %s",
                          c->target);
      return rv < 0 ? rv : st->code;
    }
  }
  c->fd = fd;
  rv = session_new(c);
  if (rv != 0) {
    clue__tls_close(c->ssl);
    c->ssl = NULL;
    close(fd);
    c->fd = -1;
    if (rv == NGHTTP2_ERR_NOMEM)
      return clue__status_local(st, CLUE_ENOMEM);
    clue__status_setf(st, CLUE_STATUS_INTERNAL, "cannot start an HTTP/2 session: %s",
                      nghttp2_strerror(rv));
    return st->code;
  }
  conn_set_state(c, CONN_READY, 0, NULL);
  return 0;
}

/* ---- the pump -------------------------------------------------------------------------- */

static void conn_feed(clue_conn_t *c, const uint8_t *buf, size_t n);

/* Read what TLS has for us (a bounded number of records) and feed nghttp2. */
static void conn_read_tls(clue_conn_t *c) {
  uint8_t buf[RECV_CHUNK];
  char why[256];

  for (int i = 0; i < 8 && c->ssl != NULL; i++) {
    ssize_t n = clue__tls_recv(c->ssl, buf, sizeof(buf), why, sizeof(why));
    if (n == CLUE_TLS_AGAIN)
      return;
    if (n == CLUE_TLS_ERROR) {
      conn_fail(c, CLUE_STATUS_UNAVAILABLE, "TLS error talking to %s: %s", c->target, why);
      return;
    }
    if (n == 0) {
      if (c->h2_error != NULL)
        conn_fail(c, CLUE_STATUS_UNAVAILABLE, "%s", c->h2_error);
      else
        conn_fail(c, CLUE_STATUS_UNAVAILABLE, "connection closed by %s", c->target);
      return;
    }
    conn_feed(c, buf, (size_t)n);
  }
}

/* Data waits inside TLS, where poll() cannot see it. */
static int conn_tls_pending(const clue_conn_t *c) {
  return c->ssl != NULL && SSL_has_pending(c->ssl);
}

/* Read once from the socket and feed nghttp2. */
static void conn_read(clue_conn_t *c) {
  uint8_t buf[RECV_CHUNK];
  ssize_t n;

  if (c->ssl != NULL) {
    conn_read_tls(c);
    return;
  }
  n = recv(c->fd, buf, sizeof(buf), 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      return;
    if (errno == ECONNRESET)
      conn_fail(c, CLUE_STATUS_UNAVAILABLE, "connection reset by %s", c->target);
    else
      conn_fail(c, CLUE_STATUS_UNAVAILABLE, "connection to %s failed: %s", c->target,
                strerror(errno));
    return;
  }
  if (n == 0) {
    if (c->h2_error != NULL)
      conn_fail(c, CLUE_STATUS_UNAVAILABLE, "%s", c->h2_error);
    else
      conn_fail(c, CLUE_STATUS_UNAVAILABLE, "connection closed by %s", c->target);
    return;
  }
  conn_feed(c, buf, (size_t)n);
}

static void conn_feed(clue_conn_t *c, const uint8_t *buf, size_t n) {
  ssize_t rv;

  /* A server that speaks TLS answers a cleartext preface with a TLS record (an alert, 0x15,
   * or a handshake, 0x16, of version 3.x) where HTTP/2 has its SETTINGS frame. */
  if (c->ssl == NULL && !c->received && n >= 2 && (buf[0] == 0x15 || buf[0] == 0x16) &&
      buf[1] == 0x03) {
    conn_fail(c, CLUE_STATUS_UNAVAILABLE,
              "%s answered in TLS: connect over TLS (cluectl --tls, or --ca FILE)", c->target);
    return;
  }
  /* A GOAWAY where the SETTINGS frame belongs (clued's TLS port, to a cleartext preface):
   * nghttp2 would only say that SETTINGS was expected; the server's own words say why. */
  if (!c->received && n >= 17 && buf[3] == NGHTTP2_GOAWAY) {
    size_t len = ((size_t)buf[0] << 16 | (size_t)buf[1] << 8 | buf[2]), k = 0;
    char why[128];

    for (size_t i = 17; i < 9 + len && i < n && k + 1 < sizeof(why); i++)
      why[k++] = buf[i] >= 0x20 && buf[i] < 0x7f ? (char)buf[i] : '?';
    why[k] = '\0';
    conn_fail(c, CLUE_STATUS_UNAVAILABLE, "%s ended the connection at once%s%s%s%s", c->target,
              k ? ": \"" : "", why, k ? "\"" : "",
              c->ssl == NULL && strstr(why, "TLS") != NULL
                  ? "; connect over TLS (cluectl --tls, or --ca FILE)"
                  : "");
    return;
  }
  c->received = 1;
  rv = nghttp2_session_mem_recv(c->h2, buf, n);

  if (rv == NGHTTP2_ERR_NOMEM) {
    conn_set_state(c, CONN_IDLE, CLUE_ENOMEM, NULL);
  } else if (rv < 0) {
    conn_fail(c, CLUE_STATUS_UNAVAILABLE, "HTTP/2 error talking to %s: %s", c->target,
              nghttp2_strerror((int)rv));
  }
}

/* Send what can be sent now; on failure the connection is torn down. */
static void conn_send(clue_conn_t *c) {
  int rv = nghttp2_session_send(c->h2);

  if (rv == 0 && (c->out_len == 0 || out_flush(c) >= 0))
    return;
  if (rv == NGHTTP2_ERR_NOMEM)
    conn_set_state(c, CONN_IDLE, CLUE_ENOMEM, NULL);
  else if (c->h2_error != NULL)
    conn_fail(c, CLUE_STATUS_UNAVAILABLE, "%s", c->h2_error);
  else
    conn_fail(c, CLUE_STATUS_UNAVAILABLE, "HTTP/2 error talking to %s: %s", c->target,
              nghttp2_strerror(rv));
}

/* Bytes wait to be written, in nghttp2 or gathered here. */
static int conn_want_write(const clue_conn_t *c) {
  return c->out_len > 0 || nghttp2_session_want_write(c->h2);
}

/* The session wants nothing more: the peer or nghttp2 ended it. */
static int conn_session_over(clue_conn_t *c) {
  if (nghttp2_session_want_read(c->h2) || conn_want_write(c))
    return 0;
  if (c->h2_error != NULL)
    conn_fail(c, CLUE_STATUS_UNAVAILABLE, "%s", c->h2_error);
  else
    conn_fail(c, CLUE_STATUS_UNAVAILABLE, "connection closed by %s", c->target);
  return 1;
}

void clue__conn_flush(clue_conn_t *c) {
  if (c->h2 == NULL)
    return;
  conn_send(c);
  if (c->h2 != NULL)
    (void)conn_session_over(c);
}

/*
 * Between calls the server may have sent GOAWAY or closed an idle connection: take in
 * whatever is waiting, without blocking, so the next call starts on a live session.
 */
static void conn_catch_up(clue_conn_t *c) {
  for (int i = 0; i < 64 && c->h2 != NULL; i++) {
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    if (!conn_tls_pending(c) &&
        (poll(&pfd, 1, 0) <= 0 || (pfd.revents & (POLLIN | POLLHUP | POLLERR)) == 0))
      break;
    conn_read(c);
  }
  if (c->h2 != NULL)
    clue__conn_flush(c);
}

static int call_done(const clue_conn_t *c, const call_t *call, int want) {
  return call->state == CALL_CLOSED || ((want & CONN_WAIT_MSG) && call->head != NULL) ||
         ((want & CONN_WAIT_PING) && c->ping_acked);
}

/* Start again a call whose stream the server refused unprocessed (call.c); on failure the
 * call ends with the reason. */
static void conn_restart(clue_conn_t *c, call_t *call) {
  clue_status_t st = CLUE_STATUS_INIT;
  int rv = clue__conn_start(c, call, &st);
  char *msg = st.message;

  if (rv != 0) {
    st.message = NULL; /* the call takes it */
    clue__call_finish(call, rv, msg);
  }
  clue_status_clear(&st);
}

void clue__conn_wait(clue_conn_t *c, call_t *call, int want, int64_t until) {
  while (!call_done(c, call, want)) {
    struct pollfd pfd;
    int64_t wake;
    int n;

    if (call->state == CALL_IDLE) {
      conn_restart(c, call);
      continue;
    }
    if (c->h2 == NULL) { /* cannot happen: going IDLE closes every running call */
      clue__call_finish(call, CLUE_STATUS_UNAVAILABLE,
                        clue__str_printf("not connected to %s", c->target));
      break;
    }
    if (clue__net_cancelled(c->cancel)) {
      clue__call_abort(call, CLUE_STATUS_CANCELLED, clue__strdup("cancelled"));
      clue__conn_flush(c);
      break;
    }
    if (call->timeout_ms != 0) {
      int64_t left = call->deadline - clue__net_now_ms();
      if (left <= 0) {
        clue__call_abort(call, CLUE_STATUS_DEADLINE_EXCEEDED,
                         clue__str_printf("deadline of %llu.%03llus exceeded",
                                          (unsigned long long)(call->timeout_ms / 1000),
                                          (unsigned long long)(call->timeout_ms % 1000)));
        clue__conn_flush(c);
        break;
      }
    }
    if (until != 0 && clue__net_now_ms() >= until)
      break;
    conn_send(c);
    if (c->h2 == NULL || call_done(c, call, want) || conn_session_over(c))
      continue;
    if (conn_tls_pending(c)) {
      conn_read(c);
      continue;
    }
    pfd.fd = c->fd;
    pfd.events = POLLIN;
    if (conn_want_write(c))
      pfd.events |= POLLOUT;
    pfd.revents = 0;
    /* Bounded while a cancel flag is watched: whoever raises it need not interrupt us. */
    wake = call->timeout_ms != 0 ? call->deadline : 0;
    if (until != 0 && (wake == 0 || until < wake))
      wake = until;
    n = poll(&pfd, 1, clue__net_poll_timeout(wake, c->cancel));
    if (n < 0) {
      if (errno != EINTR)
        conn_fail(c, CLUE_STATUS_UNAVAILABLE, "poll: %s", strerror(errno));
      continue;
    }
    if (n > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR)))
      conn_read(c);
  }
}

int clue__conn_ping(clue_conn_t *c, call_t *call, int64_t until) {
  if (call->state == CALL_CLOSED || c->h2 == NULL)
    return 1;
  c->ping_sent++; /* each PING its own data: a late ACK of an earlier one proves nothing */
  c->ping_acked = 0;
  if (nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, (const uint8_t *)&c->ping_sent) != 0)
    return CLUE_ENOMEM;
  clue__conn_wait(c, call, CONN_WAIT_PING, until);
  return c->ping_acked || call->state == CALL_CLOSED;
}

/* ---- starting a call ----------------------------------------------------------------- */

#define NV(n, v, fl)                                                                               \
  { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), (fl) }

static int32_t conn_submit(clue_conn_t *c, call_t *call) {
  char timeout[32];
  nghttp2_nv nva[9] = {
      NV(":method", "POST", NGHTTP2_NV_FLAG_NONE),
      NV(":scheme", c->tls.ctx != NULL ? "https" : "http", NGHTTP2_NV_FLAG_NONE),
      NV(":path", call->path, NGHTTP2_NV_FLAG_NONE),
      NV(":authority", c->authority, NGHTTP2_NV_FLAG_NONE),
      NV("content-type", "application/grpc", NGHTTP2_NV_FLAG_NONE),
      NV("te", "trailers", NGHTTP2_NV_FLAG_NONE),
      NV("user-agent", USER_AGENT, NGHTTP2_NV_FLAG_NONE),
  };
  size_t n = 7;
  nghttp2_data_provider prd;

  if (call->timeout_ms != 0) {
    int64_t left = call->deadline - clue__net_now_ms();
    grpc_timeout_format(left > 0 ? (uint64_t)left : 1, timeout, sizeof(timeout));
    nva[n++] = (nghttp2_nv)NV("grpc-timeout", timeout, NGHTTP2_NV_FLAG_NONE);
  }
  if (c->auth != NULL) /* keep the credential out of the HPACK tables */
    nva[n++] = (nghttp2_nv)NV("authorization", c->auth, NGHTTP2_NV_FLAG_NO_INDEX);
  prd.source.ptr = call;
  prd.read_callback = read_request;
  return nghttp2_submit_request(c->h2, NULL, nva, n, &prd, call);
}

int clue__conn_start(clue_conn_t *c, call_t *call, clue_status_t *st) {
  int32_t id = NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE;

  assert(call->state == CALL_IDLE && call->conn == c);
  if (clue__net_cancelled(c->cancel)) { /* raised already: the server need not hear of it */
    clue__status_setf(st, CLUE_STATUS_CANCELLED, "cancelled before the call was sent");
    return st->code;
  }
  if (c->state != CONN_IDLE)
    conn_catch_up(c);
  for (int attempt = 0; attempt < 2; attempt++) {
    if (c->state == CONN_DRAINING && conn_running_calls(c) == 0)
      conn_set_state(c, CONN_IDLE, CLUE_STATUS_UNAVAILABLE, NULL);
    if (c->state == CONN_DRAINING) {
      clue__status_setf(st, CLUE_STATUS_UNAVAILABLE,
                        "%s is closing the connection (GOAWAY) while other calls still use it",
                        c->target);
      return st->code;
    }
    if (c->state == CONN_IDLE) {
      int rv = conn_connect(c, call->timeout_ms != 0 ? call->deadline : 0, st);
      if (rv != 0)
        return rv;
    }
    id = conn_submit(c, call);
    if (id != NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE && id != NGHTTP2_ERR_START_STREAM_NOT_ALLOWED)
      break;
    conn_set_state(c, CONN_DRAINING, 0, NULL); /* out of stream ids: use a new connection */
  }
  if (id == NGHTTP2_ERR_NOMEM)
    return clue__status_local(st, CLUE_ENOMEM);
  if (id < 0) {
    clue__status_setf(st, CLUE_STATUS_UNAVAILABLE, "cannot start a call on %s: %s", c->target,
                      nghttp2_strerror(id));
    return st->code;
  }
  call->stream_id = id;
  clue__call_set_state(call, CALL_OPEN);
  conn_send(c);
  return 0;
}

/* ---- public ------------------------------------------------------------------------------ */

int clue_conn_new(const char *target, clue_conn_t **out) {
  clue_conn_t *c;
  int rv;

  if (target == NULL || out == NULL)
    return CLUE_EINVAL;
  c = clue__calloc(1, sizeof(*c));
  if (c == NULL)
    return CLUE_ENOMEM;
  c->fd = -1;
  c->state = CONN_IDLE;
  c->max_recv = CLUE_DEFAULT_MAX_RECV;
  rv = clue__net_parse_target(target, DEFAULT_PORT, &c->host, &c->port);
  if (rv != 0)
    goto fail;
  rv = CLUE_ENOMEM;
  if ((c->target = clue__strdup(target)) == NULL)
    goto fail;
  c->authority =
      clue__str_printf(strchr(c->host, ':') != NULL ? "[%s]:%s" : "%s:%s", c->host, c->port);
  if (c->authority == NULL)
    goto fail;
  *out = c;
  return 0;

fail:
  free(c->authority);
  free(c->target);
  free(c->host);
  free(c->port);
  free(c);
  return rv;
}

void clue_conn_free(clue_conn_t *c) {
  if (c == NULL)
    return;
  for (call_t *k = c->calls; k != NULL; k = k->next)
    if (k->state != CALL_CLOSED) { /* cancelled: what it had not read yet goes too */
      clue__call_abort(k, CLUE_STATUS_CANCELLED, clue__strdup("connection closed by the client"));
      clue__call_drop_messages(k);
    }
  if (c->h2 != NULL) {
    /* A polite goodbye, if the socket takes it right away. */
    (void)nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
    clue__conn_flush(c);
  }
  conn_set_state(c, CONN_IDLE, CLUE_STATUS_CANCELLED, NULL);
  while (c->calls != NULL)
    clue__conn_unlink(c, c->calls);
  clue__tls_clear(&c->tls);
  free(c->auth);
  free(c->authority);
  free(c->target);
  free(c->host);
  free(c->port);
  free(c);
}

int clue_conn_set_token(clue_conn_t *c, const char *token) {
  char *auth = NULL;

  if (c == NULL)
    return CLUE_EINVAL;
  if (token != NULL && token[0] != '\0') {
    size_t len = 0;
    for (const char *p = token; *p; p++, len++)
      if ((unsigned char)*p < 0x20 || *p == 0x7f || len == CLUE_MAX_TOKEN_LEN)
        return CLUE_EINVAL; /* would break the header, or is no token */
    /* Set before every call by callers that switch identities: no printf. */
    auth = clue__malloc(sizeof("Bearer ") + len);
    if (auth == NULL)
      return CLUE_ENOMEM;
    memcpy(auth, "Bearer ", sizeof("Bearer ") - 1);
    memcpy(auth + sizeof("Bearer ") - 1, token, len + 1);
  }
  free(c->auth);
  c->auth = auth;
  return 0;
}

int clue_conn_set_tls(clue_conn_t *c, const char *ca_file, const char *cert_file,
                      const char *key_file, clue_status_t *st) {
  clue_tls_t tls;
  int rv;

  if (c == NULL || st == NULL)
    return CLUE_EINVAL;
  if (c->state != CONN_IDLE) {
    clue__status_set(st, CLUE_STATUS_INVALID_ARGUMENT,
                     "TLS settings must be made before the connection is used");
    return CLUE_EINVAL;
  }
  rv = clue__tls_init(&tls, ca_file, cert_file, key_file, st);
  if (rv != 0)
    return rv;
  clue__tls_clear(&c->tls);
  c->tls = tls;
  clue_status_clear(st);
  return 0;
}

void clue_conn_set_timeout(clue_conn_t *c, uint64_t timeout_ms) {
  /* Longer than grpc-timeout can say (UINT64_MAX, the natural "no limit", among them) is no
   * deadline; what is left keeps now + timeout_ms far from overflowing an int64_t. */
  c->timeout_ms = timeout_ms > TIMEOUT_MAX_MS ? 0 : timeout_ms;
}

void clue_conn_set_max_recv(clue_conn_t *c, size_t max_bytes) {
  c->max_recv = max_bytes;
}

void clue_conn_set_cancel_flag(clue_conn_t *c, const volatile sig_atomic_t *flag) {
  c->cancel = flag;
}

const char *clue_conn_target(const clue_conn_t *c) {
  return c->target;
}

int clue_conn_connect(clue_conn_t *c, clue_status_t *st) {
  if (c == NULL || st == NULL)
    return CLUE_EINVAL;
  clue_status_clear(st);
  if (c->state != CONN_IDLE)
    conn_catch_up(c);
  if (c->state == CONN_DRAINING && conn_running_calls(c) == 0)
    conn_set_state(c, CONN_IDLE, CLUE_STATUS_UNAVAILABLE, NULL);
  if (c->state != CONN_IDLE)
    return 0;
  return conn_connect(c, c->timeout_ms != 0 ? clue__net_now_ms() + (int64_t)c->timeout_ms : 0, st);
}
