#include "net/h2_stream.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/grpc_status.h"
#include "net/h2_conn.h"
#include "server.h"

/* Below this many queued reply bytes a stream that asked hears it is writable. */
#define H2_LOW_WATER (32 * 1024)

void h2_stream_init(h2_stream_t *s, const h2_stream_ops_t *ops, size_t max_message) {
  memset(s, 0, sizeof(*s));
  s->ops = ops;
  s->in = H2_IN_DISCARD;
  s->out = H2_OUT_IDLE;
  grpc_decoder_init(&s->dec, max_message);
}

void h2_stream_free(h2_stream_t *s) {
  assert(s->conn == NULL);
  grpc_decoder_free(&s->dec);
  free(s->status_msg);
  free(s->status_details);
  free(s->buf);
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
  if (from == H2_OUT_DEFERRED && to != H2_OUT_CLOSED)
    (void)nghttp2_session_resume_data(s->conn->session, s->id);
  if (to == H2_OUT_CLOSED && s->len > s->off)
    h2_conn_queued(s->conn, -(ptrdiff_t)(s->len - s->off));
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

static ssize_t read_data(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud) {
  h2_stream_t *s = src->ptr;
  size_t avail = s->len - s->off;
  size_t n = avail < length ? avail : length;
  (void)ud;

  memcpy(buf, s->buf + s->off, n);
  s->off += n;
  if (n > 0 && s->conn)
    h2_conn_queued(s->conn, -(ptrdiff_t)n);
  if (s->off == s->len)
    s->off = s->len = 0;
  if (s->len == 0 && s->out == H2_OUT_TRAILING) {
    nghttp2_nv nv[4];
    char code[12];
    size_t nnv = status_nv(s, nv, code);
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    if (nghttp2_submit_trailer(session, stream_id, nv, nnv) != 0)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    stream_set_out(s, H2_OUT_DONE);
    return (ssize_t)n;
  }
  if (n == 0) {
    stream_set_out(s, H2_OUT_DEFERRED);
    return NGHTTP2_ERR_DEFERRED;
  }
  if (s->len - s->off < H2_LOW_WATER && s->want_writable)
    queue_writable(s);
  return (ssize_t)n;
}

int h2_stream_start_reply(h2_stream_t *s) {
  nghttp2_nv hdrs[2];
  nghttp2_data_provider dp;

  if (s->conn == NULL || s->out != H2_OUT_IDLE)
    return 0;
  nv_set(&hdrs[0], ":status", "200");
  nv_set(&hdrs[1], "content-type", "application/grpc");
  dp.source.ptr = s;
  dp.read_callback = read_data;
  if (nghttp2_submit_response(s->conn->session, s->id, hdrs, 2, &dp) != 0)
    return -ENOMEM;
  stream_set_out(s, H2_OUT_SENDING);
  return 0;
}

void h2_stream_flush(h2_stream_t *s) {
  if (s->conn)
    h2_conn_flush(s->conn);
}

static void kick(h2_stream_t *s) {
  if (s->out == H2_OUT_DEFERRED)
    stream_set_out(s, H2_OUT_SENDING); /* resumes the data provider */
  h2_conn_flush(s->conn);
}

static int append(h2_stream_t *s, const ProtobufCMessage *msg) {
  size_t len = protobuf_c_message_get_packed_size(msg);
  size_t need;

  if (len > UINT32_MAX)
    return -E2BIG;
  if (s->off > 0 && s->off == s->len)
    s->off = s->len = 0;
  need = s->len + GRPC_FRAME_PREFIX + len;
  if (need > s->cap) {
    size_t cap = s->cap ? s->cap : 256;
    uint8_t *nb;
    /* Compact before growing: the drained head is dead space. */
    if (s->off > 0) {
      memmove(s->buf, s->buf + s->off, s->len - s->off);
      s->len -= s->off;
      s->off = 0;
      need = s->len + GRPC_FRAME_PREFIX + len;
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
  grpc_frame_prefix(s->buf + s->len, (uint32_t)len);
  protobuf_c_message_pack(msg, s->buf + s->len + GRPC_FRAME_PREFIX);
  s->len += GRPC_FRAME_PREFIX + len;
  h2_conn_queued(s->conn, (ptrdiff_t)(GRPC_FRAME_PREFIX + len));
  return 0;
}

int h2_stream_write(h2_stream_t *s, const ProtobufCMessage *msg, int send) {
  int rc;

  if (s->conn == NULL || s->out >= H2_OUT_TRAILING)
    return -ECANCELED;
  rc = append(s, msg);
  if (rc != 0 || !send)
    return rc;
  if (s->out == H2_OUT_IDLE && h2_stream_start_reply(s) != 0)
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

void h2_stream_finish(h2_stream_t *s, int http_status, int grpc_code, const char *msg) {
  if (s->conn == NULL || s->out >= H2_OUT_TRAILING)
    return;
  s->status = grpc_code;
  s->status_msg = grpc_message_encode(msg ? msg : "", msg ? strlen(msg) : 0);
  s->want_writable = 0;
  unqueue_writable(s);
  if (s->out == H2_OUT_IDLE && s->len == 0) {
    /* Trailers-only: one HEADERS frame with END_STREAM. A client still uploading a request
     * we refused keeps sending; its DATA is discarded (and credit returned) until it
     * half-closes. An RST_STREAM here would race the trailers in some clients. */
    nghttp2_nv nv[6];
    char status[8], codebuf[12];
    size_t n = 0;
    snprintf(status, sizeof(status), "%d", http_status);
    nv_set(&nv[n++], ":status", status);
    nv_set(&nv[n++], "content-type", "application/grpc");
    n += status_nv(s, nv + n, codebuf);
    (void)nghttp2_submit_response(s->conn->session, s->id, nv, n, NULL);
    stream_set_out(s, H2_OUT_DONE);
    h2_conn_flush(s->conn);
    return;
  }
  if (s->out == H2_OUT_IDLE && h2_stream_start_reply(s) != 0) {
    h2_conn_close(s->conn, "out of memory");
    return;
  }
  stream_set_out(s, H2_OUT_TRAILING); /* resumes a deferred data provider */
  h2_conn_flush(s->conn);
}

int h2_stream_finished(const h2_stream_t *s) {
  return s->out >= H2_OUT_TRAILING;
}

size_t h2_stream_buffered(const h2_stream_t *s) {
  size_t own = s->len - s->off;
  /* A congested connection makes each of its streams look full, so streaming producers
   * pause; they hear writable when it drains. */
  if (s->conn && s->conn->congested && s->conn->queued > own)
    return s->conn->queued;
  return own;
}

int h2_stream_congested(const h2_stream_t *s) {
  return s->conn != NULL && s->conn->congested;
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

/* Stream credit held for bytes of messages not yet handed over: n of them are taken. */
static void release_held(h2_stream_t *s, size_t n) {
  if (n > s->held)
    n = s->held;
  s->held -= n;
  if (s->conn)
    h2_conn_consume_apart(s->conn, s->id, 0, n);
}

void h2_stream_set_input(h2_stream_t *s, h2_input_t in) {
  if (s->in == H2_IN_HOLD && in == H2_IN_READ && s->conn) {
    /* The caller is known: the connection's credit goes back, the stream's waits for the
     * message those bytes belong to. */
    h2_conn_consume_apart(s->conn, s->id, s->unacked, 0);
    s->held += s->unacked;
    s->unacked = 0;
  } else if (s->in == H2_IN_HOLD && in != H2_IN_HOLD) {
    /* Refused: the credit held for its body goes back. */
    consume(s, s->unacked);
    s->unacked = 0;
  }
  if (in == H2_IN_DISCARD)
    release_held(s, s->held);
  s->in = in;
}

void h2_stream_input_taken(h2_stream_t *s, size_t n) {
  if (n > s->inbound)
    n = s->inbound;
  s->inbound -= n;
  if (s->conn)
    s->conn->inbound -= n;
}

void h2_stream_input_free(h2_stream_t *s) {
  release_held(s, s->held);
  grpc_decoder_free(&s->dec);
  h2_stream_input_taken(s, s->inbound);
}

int h2_stream_input_partial(const h2_stream_t *s, char *why, size_t whylen) {
  if (!grpc_decoder_partial(&s->dec))
    return 0;
  if (s->dec.state == GRPC_DEC_BODY)
    snprintf(why, whylen, "truncated request message: %zu of %zu bytes", s->dec.have, s->dec.len);
  else
    snprintf(why, whylen, "truncated request message prefix: %zu of 5 bytes", s->dec.prefix_have);
  return 1;
}

int h2_stream_recv_header(h2_stream_t *s, const uint8_t *name, size_t namelen,
                          const uint8_t *value, size_t valuelen) {
  return s->ops->header(s, name, namelen, value, valuelen) == 0
             ? 0
             : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

void h2_stream_recv_headers_done(h2_stream_t *s) {
  s->ops->headers_done(s);
}

void h2_stream_recv_end(h2_stream_t *s) {
  s->ops->end(s);
}

void h2_stream_recv_data(h2_stream_t *s, const uint8_t *data, size_t len) {
  h2_conn_t *c = s->conn;
  size_t max = c->srv->cfg.max_conn_inbound;

  if (s->in == H2_IN_DISCARD) {
    consume(s, len); /* refused or answered: dropped unread */
    return;
  }
  if (s->in == H2_IN_READ && c->inbound + len > max) {
    char msg[200];
    snprintf(msg, sizeof(msg),
             "connection holds %zu bytes of unfinished requests, over its limit of %zu; send "
             "large requests one after another",
             c->inbound + len, max);
    consume(s, len);
    s->ops->input_error(s, GRPC_RESOURCE_EXHAUSTED, msg);
    return;
  }
  /* Credit for the body of a caller not yet authenticated is held back: until the token
   * lookup answers, such a client can send no more than its windows. Afterwards the
   * connection's credit comes back at once (one stream's unfinished message must not starve
   * the others) and the stream's as each message is handed over: a stream never has more
   * than its window of body unconsumed. */
  if (s->in == H2_IN_HOLD) {
    s->unacked += len;
  } else {
    h2_conn_consume_apart(c, s->id, len, 0);
    s->held += len;
  }
  s->inbound += len;
  c->inbound += len;
  while (len > 0 && s->in != H2_IN_DISCARD) {
    grpc_message_t msg;
    int got;
    long n = grpc_decoder_feed(&s->dec, data, len, &msg, &got);

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
    if (s->in == H2_IN_READ)
      release_held(s, msg.len + GRPC_FRAME_PREFIX);
    s->ops->message(s, &msg);
  }
}

/* ---- attach, detach, writable ----------------------------------------------------------- */

void h2_stream_attach(h2_stream_t *s, h2_conn_t *c, int32_t id) {
  s->conn = c;
  s->id = id;
  s->prev = NULL;
  s->next = c->streams;
  if (c->streams)
    c->streams->prev = s;
  c->streams = s;
}

void h2_stream_detach(h2_stream_t *s, uint32_t error_code, const char *conn_reason) {
  h2_conn_t *c = s->conn;

  assert(c != NULL);
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
  s->held = 0; /* the stream is gone: no credit to give back for it */
  h2_stream_input_free(s);
  s->in = H2_IN_DISCARD;
  s->unacked = s->held = 0;
  s->conn = NULL;
  s->ops->closed(s, error_code, conn_reason);
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
