#include "net/h2_stream.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "net/grpc_status.h"
#include "net/h1.h"
#include "net/h2_conn.h"
#include "server.h"

/* Below this many queued reply bytes a stream that asked hears it is writable. */
#define H2_LOW_WATER (32 * 1024)

/* The largest console file served (read whole, once, and shared by its replies). */
#define H2_MAX_FILE (16u << 20)

/* True if the stream's connection speaks HTTP/1.1. */
static int is_h1(const h2_stream_t *s) {
  return s->conn != NULL && s->conn->h1 != NULL;
}

static void pend_drop(h2_stream_t *s);

void h2_stream_init(h2_stream_t *s, const h2_stream_ops_t *ops, size_t max_message) {
  memset(s, 0, sizeof(*s));
  s->ops = ops;
  s->in = H2_IN_DISCARD;
  s->out = H2_OUT_IDLE;
  s->origin = -1;
  grpc_decoder_init(&s->dec, max_message);
}

/* Give back the stream's reference to a console file, and what it still owed of it. */
static void file_drop(h2_stream_t *s) {
  if (s->file == NULL)
    return;
  if (s->conn)
    h2_conn_owed(s->conn, -(ptrdiff_t)(s->file->len - s->file_off));
  web_file_release(s->file);
  s->file = NULL;
  s->file_off = 0;
}

void h2_stream_free(h2_stream_t *s) {
  assert(s->conn == NULL);
  file_drop(s);
  grpc_decoder_free(&s->dec);
  pend_drop(s);
  free(s->status_msg);
  free(s->status_details);
  free(s->buf);
  free(s->path);
  free(s->acrh);
  free(s->inm);
  s->path = s->acrh = s->inm = NULL;
  s->status_msg = NULL;
  s->status_details = NULL;
  s->buf = NULL;
  s->off = s->len = s->cap = 0;
}

int h2_stream_live(const h2_stream_t *s) {
  return s->conn != NULL;
}

uint64_t h2_stream_conn_id(const h2_stream_t *s) {
  return s->conn ? s->conn->id : 0;
}

static void out_less(h2_stream_t *s, size_t n);
static void waiter_remove(h2_stream_t *s);

/* ---- output: the one place the reply changes state ------------------------------------- */

static void stream_set_out(h2_stream_t *s, h2_output_t to) {
  h2_output_t from = s->out;

  switch (to) {
  case H2_OUT_SENDING:
    assert(from == H2_OUT_IDLE || from == H2_OUT_DEFERRED);
    break;
  case H2_OUT_DEFERRED:
    assert(from == H2_OUT_SENDING);
    break;
  case H2_OUT_TRAILING:
    assert(from == H2_OUT_IDLE || from == H2_OUT_SENDING || from == H2_OUT_DEFERRED);
    break;
  case H2_OUT_DONE:
    assert(from == H2_OUT_IDLE || from == H2_OUT_TRAILING);
    break;
  case H2_OUT_CLOSED:
    assert(from != H2_OUT_CLOSED);
    break;
  case H2_OUT_IDLE:
  default:
    assert(!"a reply never returns to IDLE");
  }
  s->out = to;
  if (s->conn == NULL)
    return;
  /* nghttp2 holds a deferred data provider until resumed: do it on the way out of DEFERRED
   * (unless the stream is gone, when nghttp2 has forgotten it). */
  if (from == H2_OUT_DEFERRED && to != H2_OUT_CLOSED && s->conn->session != NULL)
    (void)nghttp2_session_resume_data(s->conn->session, s->id);
  if (to == H2_OUT_CLOSED)
    waiter_remove(s);
  if (to == H2_OUT_CLOSED && s->len > s->off)
    out_less(s, s->len - s->off);
  if (to == H2_OUT_CLOSED)
    file_drop(s);
}

static void nv_set(nghttp2_nv *nv, const char *name, const char *value) {
  nv->name = (uint8_t *)name;
  nv->namelen = strlen(name);
  nv->value = (uint8_t *)value;
  nv->valuelen = strlen(value);
  nv->flags = NGHTTP2_NV_FLAG_NONE;
}

static size_t status_nv(h2_stream_t *s, nghttp2_nv *nv, char *code) {
  size_t n = 0;
  snprintf(code, 12, "%d", s->status);
  nv_set(&nv[n++], "grpc-status", code);
  if (s->status_msg && s->status_msg[0])
    nv_set(&nv[n++], "grpc-message", s->status_msg);
  if (s->status_details)
    nv_set(&nv[n++], "grpc-status-details-bin", s->status_details);
  if (s->status == GRPC_UNIMPLEMENTED)
    nv_set(&nv[n++], "grpc-accept-encoding", "identity");
  return n;
}

static void queue_writable(h2_stream_t *s) {
  h2_conn_t *c = s->conn;

  if (s->queued_writable || c == NULL)
    return;
  s->queued_writable = 1;
  s->next_writable = c->writable;
  c->writable = s;
  c->flush_pending = 1;
}

static void unqueue_writable(h2_stream_t *s) {
  h2_stream_t **p;

  if (!s->queued_writable)
    return;
  for (p = &s->conn->writable; *p; p = &(*p)->next_writable) {
    if (*p == s) {
      *p = s->next_writable;
      break;
    }
  }
  s->next_writable = NULL;
  s->queued_writable = 0;
}

/* ---- output totals over all connections ------------------------------------------------ */

/* Queued reply bytes count in their connection's total (--max-conn-buffer) and in one of two
 * server totals: a public method's in the public total (and its connection's public share,
 * H2_PUBLIC_OUTBOUND), an authenticated call's in the server's (--max-outbound) and its
 * user's (--max-user-outbound). A stream whose kind is over its bound waits
 * (h2_stream_out_wait) on the server's out_waiters list, and is woken when the total it
 * waits for drains below half of its bound: a wake walks the list once per half a bound
 * drained, not once per byte. */

static void waiter_add(h2_stream_t *s) {
  server_t *srv = s->conn->srv;

  if (s->out_waiting)
    return;
  s->out_waiting = 1;
  s->wprev = NULL;
  s->wnext = srv->out_waiters;
  if (srv->out_waiters)
    srv->out_waiters->wprev = s;
  srv->out_waiters = s;
}

static void waiter_remove(h2_stream_t *s) {
  if (!s->out_waiting)
    return;
  if (s->wprev)
    s->wprev->wnext = s->wnext;
  else
    s->conn->srv->out_waiters = s->wnext;
  if (s->wnext)
    s->wnext->wprev = s->wprev;
  s->wprev = s->wnext = NULL;
  s->out_waiting = 0;
}

/* A waiting stream looks again: off the list, and its writable event if it asked. */
static void waiter_wake(h2_stream_t *s) {
  waiter_remove(s);
  if (s->want_writable) {
    queue_writable(s);
    h2_conn_flush_soon(s->conn);
  }
}

/* A total drained: the waiting streams of that kind (public, or authenticated; of one user
 * when user is not 0) look again, with their writable event. */
static void waiters_wake(server_t *srv, int public, uint64_t user) {
  h2_stream_t *s = srv->out_waiters, *next;

  for (; s; s = next) {
    next = s->wnext;
    if (s->in_public == public && (user == 0 || s->user == user))
      waiter_wake(s);
  }
}

/* The public streams of c waiting for c's public share look again. */
static void waiters_wake_conn(h2_conn_t *c) {
  for (h2_stream_t *s = c->streams; s; s = s->next)
    if (s->out_waiting && s->in_public)
      waiter_wake(s);
}

static void out_more(h2_stream_t *s, size_t n) {
  h2_conn_t *c = s->conn;
  server_t *srv = c->srv;

  if (s->out_charged == 0) {
    s->out_public = s->in_public;
    s->out_user = s->in_public ? 0 : s->user;
  }
  if (s->out_public) {
    c->queued_public += n;
    srv->outbound_public += n;
    s->out_charged += n;
  } else if (s->out_user) {
    size_t max = server_max_user_outbound(srv),
           was = key_counts_get(&srv->user_outbound, s->out_user);
    srv->outbound += n;
    s->out_charged += n;
    /* Out of memory: the user's count misses these bytes, as if they were not there. */
    if (key_counts_add(&srv->user_outbound, s->out_user, n) == 0) {
      s->out_user_charged += n;
      if (was < max && was + n >= max && srv->user_congested)
        srv->user_congested(srv, s->out_user, 1);
    }
  }
  h2_conn_queued(c, (ptrdiff_t)n);
}

static void out_less(h2_stream_t *s, size_t n) {
  h2_conn_t *c = s->conn;
  server_t *srv = c->srv;
  size_t m = n < s->out_charged ? n : s->out_charged;

  if (m > 0 && s->out_public) {
    size_t half = srv->cfg.max_public_outbound / 2, was = srv->outbound_public;
    size_t cwas = c->queued_public;
    c->queued_public -= m;
    srv->outbound_public -= m;
    s->out_charged -= m;
    if (cwas >= H2_PUBLIC_OUTBOUND / 2 && c->queued_public < H2_PUBLIC_OUTBOUND / 2)
      waiters_wake_conn(c);
    if (was >= half && srv->outbound_public < half)
      waiters_wake(srv, 1, 0);
  } else if (m > 0 && s->out_user) {
    size_t half = srv->cfg.max_outbound / 2, was = srv->outbound;
    size_t mu = m < s->out_user_charged ? m : s->out_user_charged;
    srv->outbound -= m;
    s->out_charged -= m;
    if (mu > 0) {
      size_t uhalf = server_max_user_outbound(srv) / 2;
      size_t uwas = key_counts_get(&srv->user_outbound, s->out_user);
      key_counts_release(&srv->user_outbound, s->out_user, mu);
      s->out_user_charged -= mu;
      if (uwas >= uhalf && uwas - mu < uhalf) {
        if (srv->user_congested && srv->resume_hold > 0 &&
            srv->resume_n < sizeof(srv->resume_users) / sizeof(srv->resume_users[0]))
          srv->resume_users[srv->resume_n++] = s->out_user;
        else if (srv->user_congested)
          srv->user_congested(srv, s->out_user, 0);
        waiters_wake(srv, 0, s->out_user);
      }
    }
    if (was >= half && srv->outbound < half)
      waiters_wake(srv, 0, 0);
  }
  h2_conn_queued(c, -(ptrdiff_t)n);
}

/* True when the output of s's kind is at or over a bound of all connections' (or, for a
 * public method, its connection's public share). */
static int out_over(const h2_stream_t *s) {
  const h2_conn_t *c = s->conn;
  const server_t *srv = c->srv;

  if (s->in_public)
    return c->queued_public >= H2_PUBLIC_OUTBOUND ||
           srv->outbound_public >= srv->cfg.max_public_outbound;
  if (s->user == 0)
    return 0;
  return srv->outbound >= srv->cfg.max_outbound ||
         key_counts_get(&srv->user_outbound, s->user) >= server_max_user_outbound(srv);
}

int h2_stream_out_wait(h2_stream_t *s) {
  if (s->conn == NULL)
    return 0;
  if (s->conn->congested)
    return 1; /* woken with its connection */
  if (out_over(s)) {
    waiter_add(s);
    return 1;
  }
  waiter_remove(s);
  return 0;
}

/* Take up to length reply bytes. *end: the reply's body ends with them (trailers next for
 * gRPC). Nothing to take and no end: DEFERRED until more is written. */
static size_t take(h2_stream_t *s, uint8_t *buf, size_t length, int *end) {
  size_t avail = s->len - s->off;
  size_t n = avail < length ? avail : length;

  *end = 0;
  if (s->file != NULL) {
    /* A console file: straight from its shared copy, the reply's only body. */
    avail = s->file->len - s->file_off;
    n = avail < length ? avail : length;
    memcpy(buf, s->file->data + s->file_off, n);
    s->file_off += n;
    if (s->conn)
      h2_conn_owed(s->conn, -(ptrdiff_t)n);
    if (s->file_off < s->file->len)
      return n;
    file_drop(s);
    *end = s->len == s->off && s->out == H2_OUT_TRAILING;
    return n;
  }
  memcpy(buf, s->buf + s->off, n);
  s->off += n;
  if (n > 0 && s->conn)
    out_less(s, n);
  if (s->off == s->len)
    s->off = s->len = 0;
  if (s->len == 0 && s->out == H2_OUT_TRAILING) {
    *end = 1;
    return n;
  }
  if (n == 0) {
    stream_set_out(s, H2_OUT_DEFERRED);
    return 0;
  }
  if (s->len - s->off < H2_LOW_WATER && s->want_writable)
    queue_writable(s);
  return n;
}

static ssize_t read_data(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud) {
  h2_stream_t *s = src->ptr;
  int end;
  size_t n = take(s, buf, length, &end);
  (void)ud;

  if (end) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->reply == H2_REPLY_GRPC) {
      nghttp2_nv nv[4];
      char code[12];
      size_t nnv = status_nv(s, nv, code);
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      if (nghttp2_submit_trailer(session, stream_id, nv, nnv) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    stream_set_out(s, H2_OUT_DONE);
    return (ssize_t)n;
  }
  return n == 0 ? NGHTTP2_ERR_DEFERRED : (ssize_t)n;
}

size_t h2_stream_pull(h2_stream_t *s, uint8_t *buf, size_t len, int *end) {
  size_t n;

  *end = 0;
  if (s->out == H2_OUT_DONE) {
    *end = 1;
    return 0;
  }
  if (s->out != H2_OUT_SENDING && s->out != H2_OUT_TRAILING)
    return 0;
  n = take(s, buf, len, end);
  if (*end)
    stream_set_out(s, H2_OUT_DONE);
  return n;
}

/* ---- the reply's headers ------------------------------------------------------------------ */

/* A gRPC-Web reply in base64: the request was, or its Accept asked for it. */
static int reply_text(const h2_stream_t *s) {
  return s->reply == H2_REPLY_WEB && (s->proto == WEB_PROTO_TEXT || s->accept_text);
}

static const char *reply_content_type(const h2_stream_t *s) {
  if (reply_text(s))
    return "application/grpc-web-text+proto";
  if (s->proto == WEB_PROTO_WEB)
    return "application/grpc-web+proto";
  return "application/grpc";
}

/* CORS response headers for an allowed origin; the number added to nv. */
static size_t cors_nv(h2_stream_t *s, nghttp2_nv *nv) {
  size_t n = 0;

  if (s->origin < 0 || s->conn == NULL)
    return 0;
  nv_set(&nv[n++], "access-control-allow-origin", s->conn->srv->cfg.web_origins[s->origin]);
  nv_set(&nv[n++], "access-control-expose-headers",
         "grpc-status, grpc-message, grpc-status-details-bin");
  nv_set(&nv[n++], "access-control-allow-credentials", "true");
  nv_set(&nv[n++], "vary", "Origin");
  return n;
}

/* Submit the reply's headers (nv[0] is :status) on either transport; with body, a body
 * follows (HTTP/1.1: chunked when its length is not among the headers). */
static int submit_reply(h2_stream_t *s, int status, nghttp2_nv *nv, size_t n, int body,
                        int chunked) {
  if (is_h1(s))
    return h1_reply_start(s->conn, s, status, nv + 1, n - 1, body && chunked);
  if (body) {
    nghttp2_data_provider dp;
    dp.source.ptr = s;
    dp.read_callback = read_data;
    return nghttp2_submit_response(s->conn->session, s->id, nv, n, &dp) == 0 ? 0 : -ENOMEM;
  }
  return nghttp2_submit_response(s->conn->session, s->id, nv, n, NULL) == 0 ? 0 : -ENOMEM;
}

/* Start a gRPC or gRPC-Web reply. clen >= 0: the whole body is queued and is that long. */
static int start(h2_stream_t *s, long long clen) {
  nghttp2_nv hdrs[8];
  char lenbuf[24];
  size_t n = 0;

  if (s->conn == NULL || s->out != H2_OUT_IDLE)
    return 0;
  if (s->reply != H2_REPLY_WEB)
    s->reply = H2_REPLY_GRPC;
  nv_set(&hdrs[n++], ":status", "200");
  nv_set(&hdrs[n++], "content-type", reply_content_type(s));
  n += cors_nv(s, hdrs + n);
  if (clen >= 0 && is_h1(s)) {
    snprintf(lenbuf, sizeof(lenbuf), "%lld", clen);
    nv_set(&hdrs[n++], "content-length", lenbuf);
  }
  if (submit_reply(s, 200, hdrs, n, 1, clen < 0) != 0)
    return -ENOMEM;
  stream_set_out(s, H2_OUT_SENDING);
  return 0;
}

int h2_stream_start_reply(h2_stream_t *s) {
  return start(s, -1);
}

void h2_stream_flush(h2_stream_t *s) {
  if (s->conn)
    h2_conn_flush_soon(s->conn);
}

static void kick(h2_stream_t *s) {
  if (s->out == H2_OUT_DEFERRED)
    stream_set_out(s, H2_OUT_SENDING); /* resumes the data provider */
  h2_conn_flush_soon(s->conn);
}

/* Room for len more reply bytes at s->buf + s->len. */
static int reserve(h2_stream_t *s, size_t len) {
  size_t need;

  if (s->off > 0 && s->off == s->len)
    s->off = s->len = 0;
  need = s->len + len;
  if (need > s->cap) {
    size_t cap = s->cap ? s->cap : 256;
    uint8_t *nb;
    /* Compact before growing: the drained head is dead space. */
    if (s->off > 0) {
      memmove(s->buf, s->buf + s->off, s->len - s->off);
      s->len -= s->off;
      s->off = 0;
      need = s->len + len;
    }
    while (cap < need)
      cap *= 2;
    if (cap > s->cap) {
      nb = realloc(s->buf, cap);
      if (nb == NULL)
        return -ENOMEM;
      s->buf = nb;
      s->cap = cap;
    }
  }
  return 0;
}

/* Queue bytes of the reply as they are (base64 for grpc-web-text, each piece padded: the
 * protocol's clients decode a stream of such chunks). */
static int append_bytes(h2_stream_t *s, const uint8_t *p, size_t n) {
  size_t out = reply_text(s) ? 4 * ((n + 2) / 3) : n;

  if (reserve(s, out) != 0)
    return -ENOMEM;
  if (out != n)
    web_b64_encode(p, n, (char *)s->buf + s->len);
  else if (n > 0)
    memcpy(s->buf + s->len, p, n);
  s->len += out;
  out_more(s, out);
  return 0;
}

static int append(h2_stream_t *s, const ProtobufCMessage *msg) {
  size_t len = protobuf_c_message_get_packed_size(msg);

  if (len > UINT32_MAX - GRPC_FRAME_PREFIX)
    return -E2BIG;
  if (reply_text(s)) {
    uint8_t *tmp = malloc(GRPC_FRAME_PREFIX + len);
    int rc;
    if (tmp == NULL)
      return -ENOMEM;
    grpc_frame_prefix(tmp, (uint32_t)len);
    protobuf_c_message_pack(msg, tmp + GRPC_FRAME_PREFIX);
    rc = append_bytes(s, tmp, GRPC_FRAME_PREFIX + len);
    free(tmp);
    return rc;
  }
  if (reserve(s, GRPC_FRAME_PREFIX + len) != 0)
    return -ENOMEM;
  grpc_frame_prefix(s->buf + s->len, (uint32_t)len);
  protobuf_c_message_pack(msg, s->buf + s->len + GRPC_FRAME_PREFIX);
  s->len += GRPC_FRAME_PREFIX + len;
  out_more(s, GRPC_FRAME_PREFIX + len);
  return 0;
}

int h2_stream_write(h2_stream_t *s, const ProtobufCMessage *msg, int send) {
  int rc;

  if (s->conn == NULL || s->out >= H2_OUT_TRAILING)
    return -ECANCELED;
  rc = append(s, msg);
  if (rc != 0 || !send)
    return rc;
  if (s->out == H2_OUT_IDLE && start(s, -1) != 0)
    return -ENOMEM;
  kick(s);
  return 0;
}

void h2_stream_set_details(h2_stream_t *s, char *details) {
  free(s->status_details);
  s->status_details = details;
}

const char *h2_stream_peer(const h2_stream_t *s) {
  return s->conn ? s->conn->peer : NULL;
}

uint64_t h2_stream_peer_key(const h2_stream_t *s) {
  return s->conn ? s->conn->peer_key : 0;
}

void h2_stream_finish(h2_stream_t *s, int http_status, int grpc_code, const char *msg) {
  if (s->conn == NULL || s->out >= H2_OUT_TRAILING)
    return;
  s->status = grpc_code;
  s->status_msg = grpc_message_encode(msg ? msg : "", msg ? strlen(msg) : 0);
  s->want_writable = 0;
  unqueue_writable(s);
  if (s->reply == H2_REPLY_WEB) {
    /* gRPC-Web: the trailers are the body's last frame; the reply then simply ends. */
    uint8_t *tr;
    size_t trlen;
    if (web_trailer_frame(grpc_code, s->status_msg, s->status_details, &tr, &trlen) != 0 ||
        append_bytes(s, tr, trlen) != 0) {
      if (tr)
        free(tr);
      h2_conn_close(s->conn, "out of memory");
      return;
    }
    free(tr);
    if (s->out == H2_OUT_IDLE && start(s, (long long)(s->len - s->off)) != 0) {
      h2_conn_close(s->conn, "out of memory");
      return;
    }
    stream_set_out(s, H2_OUT_TRAILING);
    h2_conn_flush_soon(s->conn);
    return;
  }
  if (s->out == H2_OUT_IDLE && s->len == 0) {
    /* Trailers-only: one HEADERS frame with END_STREAM. A client still uploading a request
     * we refused is asked to stop once that frame is out (h2_stream_sent_end); not here,
     * where an RST_STREAM could overtake the reply. */
    nghttp2_nv nv[8];
    char status[8], codebuf[12];
    size_t n = 0;
    snprintf(status, sizeof(status), "%d", http_status);
    nv_set(&nv[n++], ":status", status);
    nv_set(&nv[n++], "content-type", "application/grpc");
    n += status_nv(s, nv + n, codebuf);
    if (is_h1(s))
      nv_set(&nv[n++], "content-length", "0");
    (void)submit_reply(s, http_status, nv, n, 0, 0);
    stream_set_out(s, H2_OUT_DONE);
    h2_conn_flush_soon(s->conn);
    return;
  }
  if (s->out == H2_OUT_IDLE && start(s, -1) != 0) {
    h2_conn_close(s->conn, "out of memory");
    return;
  }
  stream_set_out(s, H2_OUT_TRAILING); /* resumes a deferred data provider */
  h2_conn_flush_soon(s->conn);
}

void h2_stream_sent_end(h2_stream_t *s) {
  /* The reply is complete. A stream the client has not half-closed would otherwise stay
   * open, with its call and request headers, for as long as the client keeps the connection
   * (and keep that connection from ever being idle): RFC 9113 8.1 lets a server that has
   * sent a complete response ask the client to stop sending with RST_STREAM(NO_ERROR),
   * which gRPC's own servers do. It leaves after the END_STREAM frame, so the client has the
   * whole reply; what it still sends is discarded by nghttp2, its credit returned. */
  if (s->conn == NULL || s->in_ended || s->conn->session == NULL)
    return;
  (void)nghttp2_submit_rst_stream(s->conn->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
}

int h2_stream_finished(const h2_stream_t *s) {
  return s->out >= H2_OUT_TRAILING;
}

size_t h2_stream_buffered(h2_stream_t *s) {
  size_t own = s->len - s->off;
  /* A congested connection makes each of its streams look full, so streaming producers
   * pause; they hear writable when it drains. */
  if (s->conn && s->conn->congested && s->conn->queued > own)
    return s->conn->queued;
  /* So does an authenticated call's output over the server's or its user's total: it is
   * woken when that total drains (h2_stream_out_wait). Public streams keep their own
   * checks (a Health/Watch status is a few bytes; reflection waits in rpc/call.c). */
  if (s->conn && !s->in_public && s->user && h2_stream_out_wait(s)) {
    size_t user = key_counts_get(&s->conn->srv->user_outbound, s->user);
    size_t total = user > s->conn->srv->outbound ? user : s->conn->srv->outbound;
    return total > own ? total : own;
  }
  return own;
}

int h2_stream_congested(const h2_stream_t *s) {
  return s->conn != NULL && s->conn->congested;
}

size_t h2_stream_unsent(const h2_stream_t *s) {
  return s->conn != NULL ? s->len - s->off : 0;
}

int h2_stream_conn_owes_public(const h2_stream_t *s) {
  return s->conn != NULL && s->conn->queued_public > 0;
}

void h2_stream_want_writable(h2_stream_t *s, int on) {
  s->want_writable = on ? 1 : 0;
  if (!on && s->conn)
    unqueue_writable(s);
}

void h2_stream_wake(h2_stream_t *s) {
  if (s->conn)
    h2_conn_wake(s->conn);
}

/* ---- input --------------------------------------------------------------------------- */

static void consume(h2_stream_t *s, size_t n) {
  if (s->conn)
    h2_conn_consume(s->conn, s->id, n);
}

/* Refuse the n bytes just received past a bound (RESOURCE_EXHAUSTED, the message formatted
 * from fmt): their credit goes back, and the call ends. */
__attribute__((format(printf, 3, 4))) static void refuse_input(h2_stream_t *s, size_t n,
                                                               const char *fmt, ...) {
  char msg[200];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  consume(s, n);
  s->ops->input_error(s, GRPC_RESOURCE_EXHAUSTED, msg);
}

/* Stream credit held for bytes of messages not yet handed over: n of them are taken. */
static void release_held(h2_stream_t *s, size_t n) {
  if (n > s->held)
    n = s->held;
  s->held -= n;
  if (s->conn)
    h2_conn_consume_apart(s->conn, s->id, 0, n);
}

/* Bytes of requests to public methods: counted per connection (H2_PUBLIC_INBOUND) and over
 * all connections (server_max_public_inbound(); twice that for a stream that keeps at most
 * H2_PUBLIC_SMALL). */
#define H2_PUBLIC_SMALL 4096

static void public_more(h2_conn_t *c, size_t n) {
  c->inbound_public += n;
  c->srv->inbound_public += n;
}

static void public_less(h2_conn_t *c, size_t n) {
  c->inbound_public -= n;
  c->srv->inbound_public -= n;
}

/* What public calls of all connections may keep while s keeps kept bytes: twice the limit
 * for a small request (a Health check), still answered while strangers hold the total with
 * large ones; small ones left unfinished are bounded all the same. */
static size_t public_max(const h2_conn_t *c, size_t kept) {
  size_t max = server_max_public_inbound(c->srv);
  return kept <= H2_PUBLIC_SMALL ? 2 * max : max;
}

/* True (with the reason in why) when n more bytes of an authenticated call of user would
 * take the server past --max-inbound, or user past --max-user-inbound. */
static int authenticated_over(const h2_conn_t *c, uint64_t user, size_t n, char *why, size_t len) {
  size_t kept, max = server_max_user_inbound(c->srv);

  if (c->srv->inbound + n > c->srv->cfg.max_inbound) {
    snprintf(why, len,
             "server holds %zu bytes of requests, over its limit of %zu (--max-inbound); try "
             "again later",
             c->srv->inbound + n, c->srv->cfg.max_inbound);
    return 1;
  }
  if (user == 0)
    return 0;
  kept = key_counts_get(&c->srv->user_inbound, user);
  if (kept + n > max) {
    snprintf(why, len,
             "your calls hold %zu bytes of requests over all your connections, over the limit "
             "of %zu (--max-user-inbound); send large requests one after another",
             kept + n, max);
    return 1;
  }
  return 0;
}

/* The server's total (--max-inbound) counts the bytes of authenticated calls to methods that
 * need a token, and so does their user's (--max-user-inbound): those of a caller not yet
 * known join them once it is. Public methods and
 * callers being authenticated have bounds of their own (H2_PUBLIC_INBOUND, the held window
 * credit), and must not use up what authenticated calls may keep. */
static void srv_count(h2_stream_t *s) {
  size_t n;

  if (s->conn == NULL || s->in != H2_IN_READ || s->in_public || s->srv_inbound == s->inbound)
    return;
  n = s->inbound - s->srv_inbound;
  s->conn->srv->inbound += n;
  s->srv_inbound = s->inbound;
  /* Out of memory: the user's count misses these bytes, as if they were not there. */
  if (s->user && key_counts_add(&s->conn->srv->user_inbound, s->user, n) == 0)
    s->user_inbound += n;
}

void h2_stream_set_input(h2_stream_t *s, h2_input_t in) {
  if (s->in == H2_IN_HOLD && in == H2_IN_READ && s->conn) {
    /* The caller is known: the connection's credit goes back, the stream's waits for the
     * message those bytes belong to. */
    if (s->proto == WEB_PROTO_TEXT) {
      h2_conn_consume_apart(s->conn, s->id, s->unacked, s->unacked);
    } else {
      h2_conn_consume_apart(s->conn, s->id, s->unacked, 0);
      s->held += s->unacked;
    }
    s->unacked = 0;
  } else if (s->in == H2_IN_HOLD && in != H2_IN_HOLD) {
    /* Refused: the credit held for its body goes back. */
    consume(s, s->unacked);
    s->unacked = 0;
  }
  if (in == H2_IN_DISCARD)
    release_held(s, s->held);
  if (s->in == H2_IN_HOLD && in != H2_IN_HOLD && is_h1(s))
    h1_input_resume(s->conn); /* HTTP/1.1 stopped feeding the body while the caller was unknown */
  s->in = in;
  srv_count(s);
}

void h2_stream_input_taken(h2_stream_t *s, size_t n) {
  size_t m, mu;

  if (n > s->inbound)
    n = s->inbound;
  m = n < s->srv_inbound ? n : s->srv_inbound;
  mu = n < s->user_inbound ? n : s->user_inbound;
  s->inbound -= n;
  s->srv_inbound -= m;
  s->user_inbound -= mu;
  if (s->conn) {
    s->conn->inbound -= n;
    server_inbound_release(s->conn->srv, m);
    key_counts_release(&s->conn->srv->user_inbound, s->user, mu);
    if (s->in_public)
      public_less(s->conn, n);
  }
}

int h2_stream_held_over(const h2_stream_t *s, uint64_t user, char *why, size_t len) {
  if (s->conn == NULL || s->in != H2_IN_HOLD || s->in_public || s->inbound <= s->srv_inbound)
    return 0;
  return authenticated_over(s->conn, user, s->inbound - s->srv_inbound, why, len);
}

size_t h2_stream_input_room(const h2_stream_t *s) {
  const h2_conn_t *c = s->conn;
  size_t conn_kept, srv_kept, conn_room, srv_room, user_kept, user_max, user_room;

  if (c == NULL)
    return 0;
  conn_kept = c->inbound - s->inbound - s->decoded;
  conn_room =
      conn_kept < c->srv->cfg.max_conn_inbound ? c->srv->cfg.max_conn_inbound - conn_kept : 0;
  if (s->in_public) {
    /* The server's total counts only authenticated calls; public ones have their own, for
     * requests larger than a small one (see h2_stream_recv_data). */
    size_t pub_kept = c->srv->inbound_public - s->inbound - s->decoded;
    size_t pub_max = public_max(c, s->inbound);
    size_t pub_room = pub_kept < pub_max ? pub_max - pub_kept : 0;
    return conn_room < pub_room ? conn_room : pub_room;
  }
  srv_kept = c->srv->inbound - s->srv_inbound;
  srv_room = srv_kept < c->srv->cfg.max_inbound ? c->srv->cfg.max_inbound - srv_kept : 0;
  if (srv_room < conn_room)
    conn_room = srv_room;
  if (s->user == 0)
    return conn_room;
  user_kept = key_counts_get(&c->srv->user_inbound, s->user) - s->user_inbound;
  user_max = server_max_user_inbound(c->srv);
  user_room = user_kept < user_max ? user_max - user_kept : 0;
  return conn_room < user_room ? conn_room : user_room;
}

void h2_stream_input_keep(h2_stream_t *s, size_t n) {
  if (s->conn == NULL)
    return;
  s->decoded += n;
  s->conn->inbound += n;
  if (s->in_public)
    public_more(s->conn, n);
}

void h2_stream_expect(h2_stream_t *s, size_t max_message, int streaming, int public,
                      uint64_t whole_ms) {
  if (max_message < s->dec.max_len)
    s->dec.max_len = max_message;
  s->streaming = streaming ? 1 : 0;
  s->in_public = public ? 1 : 0;
  s->whole_ms = public ? whole_ms : 0;
  if (s->conn != NULL && s->whole_ms && !s->in_ended && (!streaming || s->inbound > 0))
    s->in_due = uv_now(s->conn->srv->loop) + s->whole_ms;
}

void h2_stream_tick(h2_stream_t *s, uint64_t now, uint64_t idle_ms) {
  char why[200];

  if (s->conn == NULL || s->in == H2_IN_DISCARD || s->in_ended)
    return;
  if (s->in_due && now >= s->in_due) {
    snprintf(why, sizeof(why),
             "request not whole within %llu ms of its start (--handshake-timeout): a public "
             "method's request is small and sent at once",
             (unsigned long long)s->whole_ms);
  } else if (idle_ms && now - s->in_last >= idle_ms &&
             (!s->streaming || grpc_decoder_partial(&s->dec) || web_b64_partial(&s->b64))) {
    snprintf(why, sizeof(why), "request unfinished and no byte of it for %llu ms (--idle-timeout)",
             (unsigned long long)(now - s->in_last));
  } else {
    return;
  }
  s->in_due = 0;
  log_info("conn %llu (%s): stream %d: %s", (unsigned long long)s->conn->id, s->conn->peer, s->id,
           why);
  s->ops->input_error(s, GRPC_DEADLINE_EXCEEDED, why);
}

void h2_stream_input_free(h2_stream_t *s) {
  release_held(s, s->held);
  pend_drop(s);
  s->in_paused = s->end_held = 0;
  grpc_decoder_free(&s->dec);
  h2_stream_input_taken(s, s->inbound);
  if (s->conn) {
    s->conn->inbound -= s->decoded;
    if (s->in_public)
      public_less(s->conn, s->decoded);
  }
  s->decoded = 0;
}

int h2_stream_input_partial(const h2_stream_t *s, char *why, size_t whylen) {
  if (web_b64_partial(&s->b64)) {
    snprintf(why, whylen, "grpc-web-text request body ends inside a base64 quantum");
    return 1;
  }
  if (!grpc_decoder_partial(&s->dec))
    return 0;
  if (s->dec.state == GRPC_DEC_BODY)
    snprintf(why, whylen, "truncated request message: %zu of %zu bytes", s->dec.have, s->dec.len);
  else
    snprintf(why, whylen, "truncated request message prefix: %zu of 5 bytes", s->dec.prefix_have);
  return 1;
}

static char *dupn(const uint8_t *p, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, p, n);
    d[n] = '\0';
  }
  return d;
}

static h2_method_t method_of(const uint8_t *v, size_t n) {
  static const struct {
    const char *name;
    h2_method_t m;
  } ms[] = {{"POST", H2_M_POST}, {"GET", H2_M_GET}, {"HEAD", H2_M_HEAD}, {"OPTIONS", H2_M_OPTIONS}};
  for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
    if (strlen(ms[i].name) == n && memcmp(ms[i].name, v, n) == 0)
      return ms[i].m;
  return H2_M_OTHER;
}

/* Note what the transport itself needs of a request header: the method, the path of a
 * request it may answer itself, the content-type, and CORS. Bounded: what is kept is short. */
static int note_header(h2_stream_t *s, const uint8_t *name, size_t namelen, const uint8_t *value,
                       size_t valuelen) {
  const server_config_t *cfg = &s->conn->srv->cfg;

#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, sizeof(lit) - 1) == 0)
  if (IS(":method")) {
    s->method = (uint8_t)method_of(value, valuelen);
  } else if (IS(":path")) {
    if (s->method != H2_M_POST && s->path == NULL && valuelen <= WEB_MAX_PATH &&
        memchr(value, '\0', valuelen) == NULL && (s->path = dupn(value, valuelen)) == NULL)
      return -1;
  } else if (IS("content-type")) {
    s->proto = (uint8_t)web_content_type(value, valuelen);
    s->reply =
        s->proto == WEB_PROTO_WEB || s->proto == WEB_PROTO_TEXT ? H2_REPLY_WEB : H2_REPLY_GRPC;
  } else if (IS("if-none-match")) {
    if (s->method != H2_M_POST && s->inm == NULL && valuelen <= 512 &&
        memchr(value, '\0', valuelen) == NULL && (s->inm = dupn(value, valuelen)) == NULL)
      return -1;
  } else if (IS("accept")) {
    static const char want[] = "application/grpc-web-text";
    for (size_t i = 0; i + sizeof(want) - 1 <= valuelen; i++)
      if (strncasecmp((const char *)value + i, want, sizeof(want) - 1) == 0)
        s->accept_text = 1;
  } else if (IS("origin")) {
    s->has_origin = 1;
    s->origin = web_origin_find(cfg->web_origins, cfg->nweb_origins, value, valuelen);
  } else if (IS("access-control-request-method")) {
    s->acrm = 1;
  } else if (IS("access-control-request-headers")) {
    if (s->acrh == NULL && valuelen <= 1024 && web_token_list_ok(value, valuelen) &&
        (s->acrh = dupn(value, valuelen)) == NULL)
      return -1;
  }
#undef IS
  return 0;
}

int h2_stream_conn_is_h1(const h2_stream_t *s) {
  return is_h1(s);
}

web_proto_t h2_stream_protocol(const h2_stream_t *s) {
  if (s->proto == WEB_PROTO_GRPC && is_h1(s))
    return WEB_PROTO_NONE; /* gRPC needs HTTP/2's trailers */
  return (web_proto_t)s->proto;
}

int h2_stream_recv_header(h2_stream_t *s, const uint8_t *name, size_t namelen, const uint8_t *value,
                          size_t valuelen) {
  if (note_header(s, name, namelen, value, valuelen) != 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return s->ops->header(s, name, namelen, value, valuelen) == 0
             ? 0
             : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

void h2_stream_recv_headers_done(h2_stream_t *s) {
  s->ops->headers_done(s);
}

void h2_stream_recv_end(h2_stream_t *s) {
  s->in_ended = 1;
  s->in_due = 0;
  if (s->in_paused && s->in != H2_IN_DISCARD) {
    s->end_held = 1; /* after the messages still held */
    return;
  }
  s->ops->end(s);
}

static void feed(h2_stream_t *s, const uint8_t *data, size_t len);

void h2_stream_recv_data(h2_stream_t *s, const uint8_t *data, size_t len) {
  h2_conn_t *c = s->conn;
  size_t max = c->srv->cfg.max_conn_inbound;
  int text = s->proto == WEB_PROTO_TEXT;
  char why[200];

  if (s->in == H2_IN_DISCARD) {
    consume(s, len); /* refused or answered: dropped unread */
    return;
  }
  s->in_last = uv_now(c->srv->loop);
  /* Over all connections too (public_max()). */
  if (s->in == H2_IN_READ && s->in_public &&
      c->srv->inbound_public + len > public_max(c, s->inbound + len)) {
    refuse_input(s, len,
                 "server holds %zu bytes of requests to methods that need no token, over its "
                 "limit of %zu (an eighth of --max-inbound); try again later",
                 c->srv->inbound_public + len, public_max(c, s->inbound + len));
    return;
  }
  if (s->in == H2_IN_READ && s->in_public && c->inbound_public + len > H2_PUBLIC_INBOUND) {
    refuse_input(s, len,
                 "connection holds %zu bytes of unfinished requests to methods that need no "
                 "token, over their limit of %zu",
                 c->inbound_public + len, (size_t)H2_PUBLIC_INBOUND);
    return;
  }
  if (s->in == H2_IN_READ && c->inbound + len > max) {
    refuse_input(s, len,
                 "connection holds %zu bytes of requests, over its limit of %zu "
                 "(--max-conn-inbound); send large requests one after another",
                 c->inbound + len, max);
    return;
  }
  if (s->in == H2_IN_READ && !s->in_public &&
      authenticated_over(c, s->user, len, why, sizeof(why))) {
    refuse_input(s, len, "%s", why);
    return;
  }
  /* Credit for the body of a caller not yet authenticated is held back: until the token
   * lookup answers, such a client can send no more than its windows. Afterwards the
   * connection's credit comes back at once (one stream's unfinished message must not starve
   * the others) and the stream's as each message is handed over: a stream never has more
   * than its window of body unconsumed. */
  if (s->in == H2_IN_HOLD) {
    s->unacked += len;
  } else if (text) {
    /* base64 is longer than the messages it carries: credit by message would never balance,
     * so both credits go back as the text arrives; the decoded bytes count as kept. */
    h2_conn_consume_apart(c, s->id, len, len);
  } else {
    h2_conn_consume_apart(c, s->id, len, 0);
    s->held += len;
  }
  if (!text) {
    feed(s, data, len);
    return;
  }
  while (len > 0 && s->in != H2_IN_DISCARD) {
    uint8_t out[3 * 1024 + 3];
    size_t k = len < 4 * 1024 ? len : 4 * 1024;
    long n = web_b64_decode(&s->b64, data, k, out);
    if (n < 0) {
      s->ops->input_error(s, GRPC_INVALID_ARGUMENT, "grpc-web-text request body is not base64");
      return;
    }
    feed(s, out, (size_t)n);
    data += k;
    len -= k;
  }
}

static void frame(h2_stream_t *s, const uint8_t *data, size_t len);

/* Request body bytes (decoded): count them as kept, frame them into messages. */
static void feed(h2_stream_t *s, const uint8_t *data, size_t len) {
  h2_conn_t *c = s->conn;

  if (c == NULL)
    return;
  s->inbound += len;
  c->inbound += len;
  if (s->in_public)
    public_more(c, len);
  srv_count(s);
  frame(s, data, len);
}

/* Keep bytes the owner reads no further yet (h2_stream_input_pause): already counted, their
 * stream credit held. Returns 0 or -ENOMEM. */
static int pend_keep(h2_stream_t *s, const uint8_t *data, size_t len) {
  if (s->pend_len + len > s->pend_cap) {
    size_t cap = s->pend_cap ? s->pend_cap : 256;
    uint8_t *nb;
    while (cap < s->pend_len + len)
      cap *= 2;
    if ((nb = realloc(s->pend, cap)) == NULL)
      return -ENOMEM;
    s->pend = nb;
    s->pend_cap = cap;
  }
  memcpy(s->pend + s->pend_len, data, len);
  s->pend_len += len;
  return 0;
}

static void pend_drop(h2_stream_t *s) {
  free(s->pend);
  s->pend = NULL;
  s->pend_len = s->pend_cap = 0;
}

/* Frame counted bytes into messages and hand each over, until the owner pauses. */
static void frame(h2_stream_t *s, const uint8_t *data, size_t len) {
  while (len > 0 && s->in != H2_IN_DISCARD && s->conn != NULL) {
    grpc_message_t msg;
    int got;
    long n;

    if (s->in_paused) {
      if (pend_keep(s, data, len) != 0)
        s->ops->input_error(s, GRPC_RESOURCE_EXHAUSTED, "out of memory reading the request");
      return;
    }
    n = grpc_decoder_feed(&s->dec, data, len, &msg, &got);

    if (n < 0) {
      char buf[160];
      if (n == GRPC_WIRE_ETOOBIG) {
        snprintf(buf, sizeof(buf), "request message of %zu bytes exceeds the limit of %zu bytes",
                 s->dec.len, s->dec.max_len);
        s->ops->input_error(s, GRPC_RESOURCE_EXHAUSTED, buf);
      } else if (n == GRPC_WIRE_EBADFLAG) {
        s->ops->input_error(s, GRPC_INTERNAL, "invalid message frame: bad compressed-flag byte");
      } else {
        s->ops->input_error(s, GRPC_RESOURCE_EXHAUSTED, "out of memory reading the request");
      }
      return;
    }
    data += n;
    len -= (size_t)n;
    if (!got)
      continue;
    if (s->in == H2_IN_READ && s->proto != WEB_PROTO_TEXT)
      release_held(s, msg.len + GRPC_FRAME_PREFIX);
    if (s->streaming)
      s->in_due = 0; /* a public stream's next message gets its own time */
    s->ops->message(s, &msg);
  }
  if (s->whole_ms && s->streaming && s->in_due == 0 && s->conn != NULL && s->in != H2_IN_DISCARD &&
      grpc_decoder_partial(&s->dec))
    s->in_due = uv_now(s->conn->srv->loop) + s->whole_ms;
}

void h2_stream_input_pause(h2_stream_t *s, int on) {
  if (on) {
    s->in_paused = 1;
    return;
  }
  if (!s->in_paused)
    return;
  s->in_paused = 0;
  /* What came meanwhile, in order; the owner may pause again on any message. */
  while (!s->in_paused && s->pend_len > 0 && s->conn != NULL && s->in != H2_IN_DISCARD) {
    uint8_t *buf = s->pend;
    size_t len = s->pend_len;
    s->pend = NULL;
    s->pend_len = s->pend_cap = 0;
    frame(s, buf, len);
    free(buf);
  }
  if (!s->in_paused && s->end_held && s->conn != NULL) {
    s->end_held = 0;
    s->ops->end(s);
  }
  if (s->conn != NULL)
    h2_conn_flush_soon(s->conn); /* the stream credit given back for what was read */
}

/* ---- attach, detach, writable ----------------------------------------------------------- */

void h2_stream_attach(h2_stream_t *s, h2_conn_t *c, int32_t id) {
  s->conn = c;
  s->id = id;
  s->in_last = uv_now(c->srv->loop);
  s->prev = NULL;
  s->next = c->streams;
  if (c->streams)
    c->streams->prev = s;
  c->streams = s;
}

void h2_resume_hold(server_t *srv) {
  srv->resume_hold++;
}

void h2_resume_release(server_t *srv) {
  assert(srv->resume_hold > 0);
  if (--srv->resume_hold > 0)
    return;
  for (size_t i = 0; i < srv->resume_n; i++)
    if (srv->user_congested)
      srv->user_congested(srv, srv->resume_users[i], 0);
  srv->resume_n = 0;
}

void h2_stream_detach(h2_stream_t *s, uint32_t error_code, const char *conn_reason) {
  h2_conn_t *c = s->conn;
  server_t *srv;

  assert(c != NULL);
  srv = c->srv;
  h2_resume_hold(srv);
  if (s->prev)
    s->prev->next = s->next;
  else
    c->streams = s->next;
  if (s->next)
    s->next->prev = s->prev;
  s->prev = s->next = NULL;
  unqueue_writable(s);
  s->want_writable = 0;
  stream_set_out(s, H2_OUT_CLOSED);
  /* The stream is gone, and its own credit with it; but what its body took of the
   * connection's window while the caller was being authenticated goes back, or a client
   * that cancels calls during their token lookup shrinks that window for good (nghttp2
   * returns nothing of bytes it handed over). */
  if (s->unacked > 0)
    h2_conn_consume_apart(c, s->id, s->unacked, 0);
  s->held = 0; /* stream credit only: the connection's went back as they arrived */
  h2_stream_input_free(s);
  s->in = H2_IN_DISCARD;
  s->unacked = s->held = 0;
  s->conn = NULL;
  s->ops->closed(s, error_code, conn_reason);
  h2_resume_release(srv);
}

void h2_stream_run_writable(h2_stream_t *s) {
  if (s->conn == NULL || s->conn->congested || !s->want_writable)
    return; /* paused with its connection; woken when it drains */
  s->ops->writable(s);
}

void h2_stream_wake_all(h2_conn_t *c) {
  for (h2_stream_t *s = c->streams; s; s = s->next)
    if (s->want_writable)
      queue_writable(s);
}

/* ---- replies of the transport's own: CORS preflights, console files ------------------ */

/* A whole HTTP response: status, the headers in extra, then body or the shared file (not
 * sent for HEAD, whose content-length still says how long it would be). The reply takes the
 * reference to file, and gives it back at once if it sends no body. */
static int plain_reply(h2_stream_t *s, int status, const nghttp2_nv *extra, size_t nextra,
                       const uint8_t *body, size_t len, web_file_t *file) {
  nghttp2_nv nv[16];
  char code[8], lenbuf[24];
  size_t n = 0;
  int send_body;

  if (file != NULL)
    len = file->len;
  send_body = len > 0 && s->method != H2_M_HEAD && status != 204 && status != 304;

  assert(nextra + 6 <= sizeof(nv) / sizeof(nv[0]));
  s->reply = H2_REPLY_PLAIN;
  snprintf(code, sizeof(code), "%d", status);
  nv_set(&nv[n++], ":status", code);
  for (size_t i = 0; i < nextra; i++)
    nv[n++] = extra[i];
  snprintf(lenbuf, sizeof(lenbuf), "%zu", len);
  if (status != 204 && status != 304) /* RFC 9110 8.6: never on a 204; a 304 has no body */
    nv_set(&nv[n++], "content-length", lenbuf);
  if (send_body && file == NULL && append_bytes(s, body, len) != 0)
    return -ENOMEM;
  /* The headers may point into file (its etag): both transports copy them here. */
  if (submit_reply(s, status, nv, n, send_body, 0) != 0) {
    web_file_release(file);
    return -ENOMEM;
  }
  if (send_body && file != NULL) {
    /* Served by reference: however many streams get the file, it is in memory once. */
    s->file = file;
    s->file_off = 0;
    h2_conn_owed(s->conn, (ptrdiff_t)len);
  } else {
    web_file_release(file);
  }
  if (send_body) {
    stream_set_out(s, H2_OUT_SENDING);
    stream_set_out(s, H2_OUT_TRAILING);
  } else {
    stream_set_out(s, H2_OUT_DONE);
  }
  h2_conn_flush_soon(s->conn);
  return 0;
}

static int text_reply(h2_stream_t *s, int status, const char *text) {
  nghttp2_nv nv[2];
  nv_set(&nv[0], "content-type", "text/plain; charset=utf-8");
  nv_set(&nv[1], "x-content-type-options", "nosniff");
  return plain_reply(s, status, nv, 2, (const uint8_t *)text, strlen(text), NULL);
}

/* OPTIONS: a CORS preflight from an origin named by --web-origin gets the CORS headers; one
 * from any other origin gets none (403), so the browser refuses the call. */
static int preflight(h2_stream_t *s) {
  nghttp2_nv nv[8];
  size_t n = 0;

  if (!s->has_origin) {
    nv_set(&nv[n++], "allow", "GET, HEAD, POST, OPTIONS");
    return plain_reply(s, 204, nv, n, NULL, 0, NULL);
  }
  if (s->origin < 0) {
    log_info("conn %llu (%s): CORS preflight from an origin not in --web-origin: refused",
             (unsigned long long)s->conn->id, s->conn->peer);
    return text_reply(s, 403, "origin not allowed\n");
  }
  nv_set(&nv[n++], "access-control-allow-origin", s->conn->srv->cfg.web_origins[s->origin]);
  nv_set(&nv[n++], "access-control-allow-methods", "POST, OPTIONS");
  nv_set(&nv[n++], "access-control-allow-credentials", "true");
  nv_set(&nv[n++], "access-control-allow-headers",
         s->acrh && s->acrh[0] ? s->acrh
                               : "authorization, content-type, grpc-timeout, x-grpc-web, "
                                 "x-user-agent");
  nv_set(&nv[n++], "access-control-expose-headers",
         "grpc-status, grpc-message, grpc-status-details-bin");
  nv_set(&nv[n++], "access-control-max-age", "600");
  nv_set(&nv[n++], "vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
  return plain_reply(s, 204, nv, n, NULL, 0, NULL);
}

/* The file rel under --console-dir, else index.html for a path without an extension (the
 * console's own routes; rel then says so); web_file_get()'s return. */
static int console_file(server_t *srv, char *rel, int with_data, web_file_t **f) {
  int rc = web_file_get(&srv->files, srv->console_root, rel, H2_MAX_FILE, with_data, f);

  if (rc == -ENOENT && !web_has_extension(rel)) {
    strcpy(rel, "index.html");
    rc = web_file_get(&srv->files, srv->console_root, rel, H2_MAX_FILE, with_data, f);
  }
  return rc;
}

/* GET or HEAD under --console-dir: the file, index.html for "/" and for any path without an
 * extension (the console's own routes). */
static int serve_file(h2_stream_t *s) {
  server_t *srv = s->conn->srv;
  char rel[WEB_MAX_PATH + 16];
  nghttp2_nv nv[7];
  web_file_t *f = NULL;
  int rc;

  if (s->path == NULL || web_path_clean(s->path, rel, WEB_MAX_PATH) != 0) {
    /* The path without its query: a link's parameters (a token pasted into one, say) are
     * nobody's business in the log. */
    int n = s->path ? (int)strcspn(s->path, "?#") : 0;
    log_info("conn %llu (%s): refused request path %.*s", (unsigned long long)s->conn->id,
             s->conn->peer, s->path ? (n < 200 ? n : 200) : 10, s->path ? s->path : "(too long)");
    return text_reply(s, 400, "bad request path\n");
  }
  if (rel[0] == '\0')
    strcpy(rel, "index.html");
  if (web_hidden(rel))
    return text_reply(s, 404, "not found\n");
  /* A HEAD, and a revalidation that may end in a 304, need the file's size and etag alone:
   * reading a large file for them made each such request cost its whole read. */
  rc = console_file(srv, rel, s->method != H2_M_HEAD && s->inm == NULL, &f);
  if (rc == 0 && !f->has_data && s->method != H2_M_HEAD &&
      !(s->inm != NULL && web_etag_match(s->inm, f->etag))) {
    web_file_release(f);
    f = NULL;
    rc = console_file(srv, rel, 1, &f);
  }
  if (rc == -ENOENT)
    return text_reply(s, 404, "not found\n");
  if (rc == -EFBIG) {
    log_warn("console file %s is over %u bytes: not served", rel, H2_MAX_FILE);
    return text_reply(s, 500, "file too large\n");
  }
  if (rc != 0)
    return text_reply(s, 500, "cannot read the file\n");
  nv_set(&nv[0], "content-type", web_mime(rel));
  nv_set(&nv[1], "cache-control",
         web_hashed_asset(rel) ? "public, max-age=31536000, immutable" : "no-cache");
  nv_set(&nv[2], "x-content-type-options", "nosniff");
  nv_set(&nv[3], "etag", f->etag);
  /* Framed by another page, the console could be overlaid and clicked through
   * (clickjacking); frame-ancestors works only in a header, not in index.html's <meta>.
   * X-Frame-Options says the same to browsers without CSP level 2. On a 304 too, since a
   * browser updates the headers of its stored copy from it. */
  nv_set(&nv[4], "content-security-policy", WEB_CONSOLE_CSP);
  nv_set(&nv[5], "x-frame-options", "DENY");
  /* Opened by another origin's page (window.open), the console would share a browsing
   * context group with it: that page could send the window elsewhere (a fake sign-in) or
   * to another of the console's pages. A window of its own instead. */
  nv_set(&nv[6], "cross-origin-opener-policy", "same-origin");
  /* The browser's copy is current (index.html is revalidated on every load): no body. */
  if (s->inm != NULL && web_etag_match(s->inm, f->etag))
    return plain_reply(s, 304, nv + 1, 6, NULL, 0, f);
  return plain_reply(s, 200, nv, 7, NULL, 0, f);
}

int h2_stream_answer_http(h2_stream_t *s) {
  const server_t *srv;
  int rc;

  if (s->conn == NULL || s->out != H2_OUT_IDLE)
    return 0;
  srv = s->conn->srv;
  switch ((h2_method_t)s->method) {
  case H2_M_POST:
    return 0;
  case H2_M_OPTIONS:
    if (srv->cfg.nweb_origins == 0 && !is_h1(s))
      return 0;
    rc = preflight(s);
    break;
  case H2_M_GET:
  case H2_M_HEAD:
    if (srv->console_root != NULL)
      rc = serve_file(s);
    else if (is_h1(s))
      rc = text_reply(s, 404, "not found\n");
    else
      return 0;
    break;
  default:
    if (!is_h1(s))
      return 0;
    rc = text_reply(s, 405, "method not allowed\n");
    break;
  }
  if (rc != 0)
    h2_conn_close(s->conn, "out of memory");
  return 1;
}
