#include "call.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conn.h"
#include "mem.h"
#include "net.h"
#include "status.h"

/* ---- state ----------------------------------------------------------------------- */

void clue__call_set_state(call_t *call, call_state_t to) {
  switch (to) {
  case CALL_IDLE:
    /* A refused stream, started again: the request goes out anew, and whatever headers
     * came with the refusal (an informational response) are forgotten. */
    assert(call->state == CALL_OPEN && call->stream_id == 0 && call->head == NULL);
    call->req_off = 0;
    call->http_status = 0;
    call->grpc_ct = 0;
    call->grpc_status = -1;
    free(call->grpc_message);
    call->grpc_message = NULL;
    free(call->grpc_details);
    call->grpc_details = NULL;
    call->retries++;
    break;
  case CALL_OPEN:
    assert(call->state == CALL_IDLE && call->stream_id > 0);
    break;
  case CALL_RECEIVING:
    assert(call->state == CALL_OPEN);
    break;
  case CALL_CLOSED:
    assert(call->state != CALL_CLOSED);
    /* Later frames of this stream (it may still be open on the wire) find no call. */
    if (call->stream_id != 0 && call->conn != NULL && call->conn->h2 != NULL)
      (void)nghttp2_session_set_stream_user_data(call->conn->h2, call->stream_id, NULL);
    call->stream_id = 0;
    grpc_decoder_free(&call->dec);
    free(call->req);
    call->req = NULL;
    break;
  }
  call->state = to;
}

/* Store a final status (taking msg); code < 0 is a local CLUE_E* error. */
static void call_record_status(call_t *call, int code, char *msg) {
  if (code < 0) { /* a local error: report it in gRPC terms too */
    call->local_err = code;
    free(msg);
    msg = clue__strdup(clue_strerror(code));
    code = code == CLUE_ENOMEM ? CLUE_STATUS_RESOURCE_EXHAUSTED : CLUE_STATUS_INTERNAL;
  } else {
    call->local_err = 0;
  }
  free(call->status_msg);
  call->status_code = code;
  call->status_msg = msg;
}

void clue__call_finish(call_t *call, int code, char *msg) {
  if (call->state == CALL_CLOSED) {
    free(msg);
    return;
  }
  call_record_status(call, code, msg);
  clue__call_set_state(call, CALL_CLOSED);
}

void clue__call_abort(call_t *call, int code, char *msg) {
  if (call->state != CALL_CLOSED && call->stream_id != 0 && call->conn != NULL &&
      call->conn->h2 != NULL)
    (void)nghttp2_submit_rst_stream(call->conn->h2, NGHTTP2_FLAG_NONE, call->stream_id,
                                    NGHTTP2_CANCEL);
  clue__call_finish(call, code, msg);
}

/* ---- response headers ------------------------------------------------------------ */

static int name_is(const uint8_t *name, size_t len, const char *want) {
  return len == strlen(want) && memcmp(name, want, len) == 0;
}

/* "application/grpc", optionally followed by "+proto" or ";params". */
static int grpc_content_type(const uint8_t *v, size_t len) {
  static const char base[] = "application/grpc";
  size_t n = sizeof(base) - 1;

  if (len < n || strncasecmp((const char *)v, base, n) != 0)
    return 0;
  return len == n || v[n] == '+' || v[n] == ';';
}

void clue__call_on_header(call_t *call, const uint8_t *name, size_t namelen, const uint8_t *value,
                          size_t valuelen) {
  if (call->state == CALL_CLOSED)
    return;
  if (name_is(name, namelen, ":status")) {
    call->http_status = grpc_parse_uint(value, valuelen, 999);
    if (call->http_status < 0)
      call->http_status = 0;
  } else if (name_is(name, namelen, "content-type")) {
    call->grpc_ct = grpc_content_type(value, valuelen);
  } else if (name_is(name, namelen, "grpc-status")) {
    /* An unparsable status is still a status: UNKNOWN, as other clients do. */
    /* Any number of up to nine digits is kept (call_grpc_code() maps the unknown ones), so
     * that a message can name it; anything else is no gRPC code at all. */
    int code = grpc_parse_uint(value, valuelen, 999999999);
    call->grpc_status = code < 0 ? CLUE_STATUS_UNKNOWN : code;
  } else if (name_is(name, namelen, "grpc-message")) {
    free(call->grpc_message);
    call->grpc_message = clue__strndup((const char *)value, valuelen); /* NULL: message lost */
  } else if (name_is(name, namelen, "grpc-status-details-bin")) {
    free(call->grpc_details);
    call->grpc_details = clue__strndup((const char *)value, valuelen); /* NULL: details lost */
  }
}

void clue__call_on_headers_done(call_t *call) {
  if (call->state != CALL_OPEN)
    return; /* trailers: call_on_close reads them */
  if (call->http_status >= 100 && call->http_status < 200) {
    call->http_status = 0; /* informational; the final response follows */
    return;
  }
  call->is_grpc = call->http_status == 200 && call->grpc_ct;
  clue__call_set_state(call, CALL_RECEIVING);
}

/* ---- response messages ------------------------------------------------------------- */

/* Queue a decoded message, or end the call if the message is not acceptable. */
static void call_take_message(call_t *call, grpc_message_t *m) {
  call_msg_t *node;

  if (m->compressed) {
    free(m->data);
    clue__call_abort(
        call, CLUE_STATUS_INTERNAL,
        clue__strdup("server sent a compressed message, but no compression was negotiated"));
    return;
  }
  if (call->unary && call->nmsgs > 0) {
    free(m->data);
    clue__call_abort(call, CLUE_STATUS_INTERNAL,
                     clue__strdup("server sent more than one message for a unary call"));
    return;
  }
  node = clue__malloc(sizeof(*node));
  if (node == NULL) {
    free(m->data);
    clue__call_abort(call, CLUE_ENOMEM, NULL);
    return;
  }
  node->next = NULL;
  node->data = m->data;
  node->len = m->len;
  if (call->tail != NULL)
    call->tail->next = node;
  else
    call->head = node;
  call->tail = node;
  call->nmsgs++;
}

void clue__call_on_data(call_t *call, const uint8_t *data, size_t len) {
  nghttp2_session *h2 = call->conn->h2;
  int32_t sid = call->stream_id;
  size_t off = 0;

  while (off < len && call->state == CALL_RECEIVING && call->is_grpc) {
    grpc_message_t m;
    int got = 0;
    long n = grpc_decoder_feed(&call->dec, data + off, len - off, &m, &got);
    if (n < 0) {
      if (n == GRPC_WIRE_ETOOBIG)
        clue__call_abort(
            call, CLUE_STATUS_RESOURCE_EXHAUSTED,
            clue__str_printf("response message of %zu bytes is over the limit of %zu bytes",
                             call->dec.len, call->dec.max_len));
      else if (n == GRPC_WIRE_ENOMEM)
        clue__call_abort(call, CLUE_ENOMEM, NULL);
      else
        clue__call_abort(call, CLUE_STATUS_INTERNAL,
                         clue__strdup("malformed gRPC message framing"));
      break;
    }
    off += (size_t)n;
    if (got)
      call_take_message(call, &m);
  }
  /*
   * Stream window credit: given back at once while the reader keeps up (and always for
   * unary calls, which hold at most one message), held back while decoded messages wait
   * to be read, so a slow reader of a long stream makes the server wait instead of this
   * process buffering without bound.
   */
  if (call->state == CALL_CLOSED || call->unary || call->head == NULL)
    (void)nghttp2_session_consume_stream(h2, sid, len);
  else
    call->unconsumed += len;
}

static int h2_error_to_status(uint32_t err) {
  switch (err) {
  case NGHTTP2_REFUSED_STREAM:
    return CLUE_STATUS_UNAVAILABLE;
  case NGHTTP2_CANCEL:
    return CLUE_STATUS_CANCELLED;
  case NGHTTP2_ENHANCE_YOUR_CALM:
    return CLUE_STATUS_RESOURCE_EXHAUSTED;
  case NGHTTP2_INADEQUATE_SECURITY:
    return CLUE_STATUS_PERMISSION_DENIED;
  default:
    return CLUE_STATUS_INTERNAL;
  }
}

/* The gRPC specification's table for responses that carry no grpc-status. */
static int http_to_status(int http) {
  switch (http) {
  case 400:
    return CLUE_STATUS_INTERNAL;
  case 401:
    return CLUE_STATUS_UNAUTHENTICATED;
  case 403:
    return CLUE_STATUS_PERMISSION_DENIED;
  case 404:
    return CLUE_STATUS_UNIMPLEMENTED;
  case 429:
  case 502:
  case 503:
  case 504:
    return CLUE_STATUS_UNAVAILABLE;
  default:
    return CLUE_STATUS_UNKNOWN;
  }
}

/* The code grpc-status gives: one this client does not know (above UNAUTHENTICATED: a proxy's,
 * or a newer server's) is UNKNOWN, as the gRPC spec asks of clients. */
static int call_grpc_code(const call_t *call) {
  return call->grpc_status > CLUE_STATUS_UNAUTHENTICATED ? CLUE_STATUS_UNKNOWN : call->grpc_status;
}

/*
 * The server provably did not process the call, so that sending it again cannot do anything
 * twice (gRPC's transparent retry): its stream was refused before any response, by the
 * server's RST_STREAM(REFUSED_STREAM) or by nghttp2 for a stream above the last stream id of
 * the server's GOAWAY or not sent before the GOAWAY came (HTTP/2, RFC 9113 8.7: such a
 * request "can be safely retried"). A stream the server answered in part, or a connection
 * that broke under it, proves nothing and is not retried.
 */
static int call_unprocessed(const call_t *call, uint32_t h2_error) {
  return h2_error == NGHTTP2_REFUSED_STREAM && call->state == CALL_OPEN && call->http_status == 0 &&
         call->grpc_status < 0;
}

void clue__call_on_close(call_t *call, uint32_t h2_error) {
  const char *target = call->conn->target;
  char *msg = NULL;
  int code;

  if (call->state == CALL_CLOSED)
    return;
  if (call_unprocessed(call, h2_error) && call->retries < CALL_MAX_TRANSPARENT_RETRIES) {
    clue__call_set_state(call, CALL_IDLE);
    return;
  }
  if (call->grpc_status >= 0) {
    /* grpc-status, when present, is the answer (gRPC spec), whatever else happened. */
    code = call_grpc_code(call);
    if (call->grpc_message != NULL)
      msg = grpc_message_decode(call->grpc_message, strlen(call->grpc_message));
    if (code != call->grpc_status) {
      /* The server's number stays visible. */
      char *m = msg != NULL ? clue__str_printf("%s (grpc-status %d)", msg, call->grpc_status)
                            : clue__str_printf("grpc-status %d from %s", call->grpc_status, target);
      free(msg);
      msg = m; /* NULL: message lost */
    }
    if (code == CLUE_STATUS_OK && grpc_decoder_partial(&call->dec)) {
      code = CLUE_STATUS_INTERNAL;
      free(msg);
      msg = clue__strdup("response ended in the middle of a message");
    } else if (code == CLUE_STATUS_OK && call->unary && call->nmsgs == 0) {
      code = CLUE_STATUS_INTERNAL;
      free(msg);
      msg = clue__strdup("server sent no response message for a unary call");
    }
  } else if (h2_error != NGHTTP2_NO_ERROR) {
    code = h2_error_to_status(h2_error);
    if (h2_error == NGHTTP2_REFUSED_STREAM && call->conn->state == CONN_DRAINING)
      msg = clue__str_printf("%s closed the connection (GOAWAY) before handling the call", target);
    else
      msg = clue__str_printf("stream reset by %s: %s", target, nghttp2_http2_strerror(h2_error));
  } else if (call->http_status != 0 && call->http_status != 200) {
    code = http_to_status(call->http_status);
    msg = clue__str_printf("HTTP status %d from %s", call->http_status, target);
  } else if (call->http_status == 0) {
    code = CLUE_STATUS_INTERNAL;
    msg = clue__str_printf("%s closed the stream without a response", target);
  } else if (!call->grpc_ct) {
    code = CLUE_STATUS_UNKNOWN;
    msg = clue__str_printf("response from %s is not gRPC (content-type)", target);
  } else {
    code = CLUE_STATUS_INTERNAL;
    msg = clue__str_printf("%s closed the stream without sending trailers", target);
  }
  clue__call_finish(call, code, msg);
}

/* ---- building and freeing calls -------------------------------------------------------- */

static int call_new(clue_conn_t *c, const char *path, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, int unary, call_t **out) {
  call_t *call;
  size_t len;

  if (c == NULL || path == NULL || path[0] != '/' || req == NULL || req->descriptor == NULL ||
      req->descriptor->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC || resp_desc == NULL ||
      resp_desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
    return CLUE_EINVAL;
  len = protobuf_c_message_get_packed_size(req);
  if (len > UINT32_MAX - GRPC_FRAME_PREFIX)
    return CLUE_EINVAL;
  call = clue__calloc(1, sizeof(*call));
  if (call == NULL)
    return CLUE_ENOMEM;
  call->path = clue__strdup(path);
  call->req = clue__malloc(GRPC_FRAME_PREFIX + len);
  if (call->path == NULL || call->req == NULL) {
    free(call->path);
    free(call->req);
    free(call);
    return CLUE_ENOMEM;
  }
  grpc_frame_prefix(call->req, (uint32_t)len);
  protobuf_c_message_pack(req, call->req + GRPC_FRAME_PREFIX);
  call->req_len = GRPC_FRAME_PREFIX + len;
  call->state = CALL_IDLE;
  call->unary = unary;
  call->resp_desc = resp_desc;
  call->grpc_status = -1;
  call->timeout_ms = c->timeout_ms;
  if (c->timeout_ms != 0)
    call->deadline = clue__net_now_ms() + (int64_t)c->timeout_ms;
  grpc_decoder_init(&call->dec, c->max_recv);
  clue__conn_link(c, call);
  *out = call;
  return 0;
}

static void call_free(call_t *call) {
  clue_conn_t *c = call->conn;

  if (c != NULL) {
    if (call->state != CALL_CLOSED) {
      clue__call_abort(call, CLUE_STATUS_CANCELLED, NULL);
      clue__conn_flush(c);
    }
    clue__conn_unlink(c, call);
  }
  if (call->state != CALL_CLOSED)
    grpc_decoder_free(&call->dec);
  clue__call_drop_messages(call);
  free(call->req);
  free(call->path);
  free(call->grpc_message);
  free(call->grpc_details);
  free(call->status_msg);
  free(call);
}

/* Take the first queued message; return stream window credit held back for it. */
static call_msg_t *call_pop(call_t *call) {
  call_msg_t *m = call->head;

  call->head = m->next;
  if (call->head == NULL) {
    call->tail = NULL;
    if (call->unconsumed > 0 && call->stream_id != 0 && call->conn != NULL &&
        call->conn->h2 != NULL)
      (void)nghttp2_session_consume_stream(call->conn->h2, call->stream_id, call->unconsumed);
    call->unconsumed = 0;
  }
  return m;
}

void clue__call_drop_messages(call_t *call) {
  while (call->head != NULL) {
    call_msg_t *m = call_pop(call);
    free(m->data);
    free(m);
  }
}

/* What decoding a message may allocate: DECODE_FLOOR, and DECODE_RATIO times its size on
 * the wire. Every sub-message decodes into a whole struct and every string into a block of
 * its own, so 4 MiB of empty sub-messages from a hostile server would take gigabytes; an
 * honest message takes a few times its size (a small sub-message, its struct and its
 * pointer, about ten). */
#define DECODE_FLOOR ((size_t)16 << 20)
#define DECODE_RATIO 32
#define DECODE_OVER 1 /* decode(): past the budget */

typedef struct decode_budget {
  int nomem; /* an allocation failed */
  int over;  /* the budget ran out */
  size_t left;
} decode_budget_t;

/* protobuf-c reports both bad input and no memory as NULL; this allocator tells them apart,
 * and keeps to the budget (each block counted with the allocator's own few bytes). */
static void *probe_alloc(void *data, size_t size) {
  decode_budget_t *b = data;
  size_t cost = (size != 0 ? size : 1) + 16;
  void *p;

  if (cost > b->left) {
    b->over = 1;
    return NULL;
  }
  b->left -= cost;
  if ((p = clue__malloc(size != 0 ? size : 1)) == NULL)
    b->nomem = 1;
  return p;
}

static void probe_free(void *data, void *p) {
  (void)data;
  free(p);
}

/* Decode a message: 0 and *out, CLUE_ENOMEM, DECODE_OVER (it would take more memory than
 * its size warrants), or CLUE_EINVAL for bytes that do not parse. */
static int decode(const ProtobufCMessageDescriptor *desc, const call_msg_t *m,
                  ProtobufCMessage **out) {
  decode_budget_t b = {0, 0, DECODE_FLOOR};
  ProtobufCAllocator a = {probe_alloc, probe_free, &b};
  ProtobufCMessage *msg;

  b.left += m->len > (SIZE_MAX - DECODE_FLOOR) / DECODE_RATIO ? SIZE_MAX - DECODE_FLOOR
                                                              : m->len * DECODE_RATIO;
  msg = protobuf_c_message_unpack(desc, &a, m->len, m->data);
  if (msg == NULL)
    return b.nomem ? CLUE_ENOMEM : b.over ? DECODE_OVER : CLUE_EINVAL;
  *out = msg;
  return 0;
}

/* The value of a base64 digit (standard or URL alphabet), or -1. */
static int b64_digit(char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+' || c == '-')
    return 62;
  if (c == '/' || c == '_')
    return 63;
  return -1;
}

/* Decode base64 text, padded or not (gRPC sends either), into st->details; nothing on bad
 * input or out of memory: the details are an extra the status does without. */
static void status_details(clue_status_t *st, const char *b64) {
  size_t len = strlen(b64), n = 0;
  unsigned acc = 0;
  int bits = 0;
  uint8_t *out;

  while (len > 0 && b64[len - 1] == '=')
    len--;
  if ((out = clue__malloc(len * 3 / 4 + 1)) == NULL)
    return;
  for (size_t i = 0; i < len; i++) {
    int d = b64_digit(b64[i]);
    if (d < 0) {
      free(out);
      return;
    }
    acc = (acc << 6 | (unsigned)d) & 0xFFFFFF;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (uint8_t)(acc >> bits);
    }
  }
  st->details = out;
  st->details_len = n;
}

/* Copy the final status out; returns what the public functions return. */
static int call_result(const call_t *call, clue_status_t *st) {
  clue__status_set(st, call->status_code, call->status_msg);
  if (call->grpc_details != NULL && call_grpc_code(call) == call->status_code &&
      call->status_code != CLUE_STATUS_OK)
    status_details(st, call->grpc_details);
  return call->local_err != 0 ? call->local_err : call->status_code;
}

/* Make a call and send its request, as both kinds of call start. Returns 0 with *out, or
 * what the public functions return (*st filled in). */
static int call_begin(clue_conn_t *c, const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, int unary, clue_status_t *st,
                      call_t **out) {
  call_t *call;
  int rv = call_new(c, path, req, resp_desc, unary, &call);

  if (rv != 0)
    return clue__status_local(st, rv);
  rv = clue__conn_start(c, call, st);
  if (rv != 0) {
    call_free(call);
    return rv;
  }
  *out = call;
  return 0;
}

/* ---- public ------------------------------------------------------------------------------ */

int clue_call(clue_conn_t *c, const char *path, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
              clue_status_t *st) {
  call_t *call;
  int rv;

  if (st == NULL)
    return CLUE_EINVAL;
  clue_status_clear(st);
  if (resp == NULL)
    return clue__status_local(st, CLUE_EINVAL);
  if ((rv = call_begin(c, path, req, resp_desc, 1, st, &call)) != 0)
    return rv;
  clue__conn_wait(c, call, 0, 0);
  rv = call_result(call, st);
  if (rv == CLUE_STATUS_OK) {
    int drv = decode(resp_desc, call->head, resp);
    if (drv == CLUE_ENOMEM) {
      rv = clue__status_local(st, CLUE_ENOMEM);
    } else if (drv == DECODE_OVER) {
      clue__status_setf(st, CLUE_STATUS_RESOURCE_EXHAUSTED,
                        "the response (%zu bytes) would take more than %zu MiB to decode as %s",
                        call->head->len, (DECODE_FLOOR + call->head->len * DECODE_RATIO) >> 20,
                        resp_desc->name);
      rv = st->code;
    } else if (drv != 0) {
      clue__status_setf(st, CLUE_STATUS_INTERNAL, "cannot decode the response as %s",
                        resp_desc->name);
      rv = st->code;
    }
  }
  call_free(call);
  return rv;
}

int clue_call_method(clue_conn_t *c, const ProtobufCServiceDescriptor *service, const char *method,
                     const ProtobufCMessage *req, ProtobufCMessage **resp, clue_status_t *st) {
  const ProtobufCMethodDescriptor *m;
  char *path;
  int rv;

  if (st == NULL)
    return CLUE_EINVAL;
  clue_status_clear(st);
  if (service == NULL || method == NULL || req == NULL)
    return clue__status_local(st, CLUE_EINVAL);
  m = protobuf_c_service_descriptor_get_method_by_name(service, method);
  if (m == NULL || m->input != req->descriptor)
    return clue__status_local(st, CLUE_EINVAL);
  path = clue__str_printf("/%s/%s", service->name, m->name);
  if (path == NULL)
    return clue__status_local(st, CLUE_ENOMEM);
  rv = clue_call(c, path, req, m->output, resp, st);
  free(path);
  return rv;
}

int clue_stream_start(clue_conn_t *c, const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, clue_stream_t **out,
                      clue_status_t *st) {
  call_t *call;
  int rv;

  if (st == NULL)
    return CLUE_EINVAL;
  clue_status_clear(st);
  if (out == NULL)
    return clue__status_local(st, CLUE_EINVAL);
  if ((rv = call_begin(c, path, req, resp_desc, 0, st, &call)) != 0)
    return rv;
  *out = call;
  return 0;
}

/*
 * A message could not be handed out: as the caller sees it, the stream has failed, even
 * when the server had already finished it with OK. Nothing after the gap is delivered.
 */
static void stream_lost_message(call_t *s, int code) {
  char *msg = code == CLUE_ENOMEM ? NULL
              : code == CLUE_STATUS_RESOURCE_EXHAUSTED
                  ? clue__str_printf("a stream message would take more memory to decode as %s "
                                     "than its size warrants",
                                     s->resp_desc->name)
                  : clue__str_printf("cannot decode a stream message as %s", s->resp_desc->name);

  if (s->state != CALL_CLOSED) {
    clue__call_abort(s, code, msg);
    if (s->conn != NULL)
      clue__conn_flush(s->conn);
  } else {
    call_record_status(s, code, msg);
  }
  clue__call_drop_messages(s);
}

/* clue_stream_next(), returning 2 once the clue__net_now_ms() time until (0: none) has come
 * with no message. */
static int stream_next(clue_stream_t *s, ProtobufCMessage **msg, clue_status_t *st, int64_t until) {
  if (st == NULL)
    return CLUE_EINVAL;
  clue_status_clear(st);
  if (s == NULL || msg == NULL)
    return clue__status_local(st, CLUE_EINVAL);
  for (;;) {
    if (s->head != NULL) {
      call_msg_t *m = call_pop(s);
      int rv = decode(s->resp_desc, m, msg);
      free(m->data);
      free(m);
      if (rv == 0)
        return 1;
      stream_lost_message(s, rv == CLUE_ENOMEM   ? CLUE_ENOMEM
                             : rv == DECODE_OVER ? CLUE_STATUS_RESOURCE_EXHAUSTED
                                                 : CLUE_STATUS_INTERNAL);
      continue;
    }
    if (s->state == CALL_CLOSED) {
      int rv = call_result(s, st);
      return rv < 0 ? rv : 0;
    }
    if (s->conn == NULL) { /* the connection was freed under the stream */
      clue__call_finish(s, CLUE_STATUS_CANCELLED, clue__strdup("connection closed by the client"));
      continue;
    }
    if (until != 0 && clue__net_now_ms() >= until)
      return 2;
    clue__conn_wait(s->conn, s, CONN_WAIT_MSG, until);
  }
}

int clue_stream_next(clue_stream_t *s, ProtobufCMessage **msg, clue_status_t *st) {
  return stream_next(s, msg, st, 0);
}

int clue_stream_next_within(clue_stream_t *s, ProtobufCMessage **msg, clue_status_t *st,
                            uint64_t wait_ms) {
  /* A wait too long to count is no bound, as a deadline too long is none. */
  int64_t until =
      wait_ms != 0 && wait_ms < (uint64_t)INT64_MAX / 2 ? clue__net_now_ms() + (int64_t)wait_ms : 0;

  return stream_next(s, msg, st, until);
}

int clue_stream_ping(clue_stream_t *s, uint64_t wait_ms) {
  if (s == NULL || wait_ms == 0 || wait_ms >= (uint64_t)INT64_MAX / 2)
    return CLUE_EINVAL;
  if (s->conn == NULL)
    return 1; /* the stream ends: clue_stream_next() tells how */
  return clue__conn_ping(s->conn, s, clue__net_now_ms() + (int64_t)wait_ms);
}

int clue_stream_answered(const clue_stream_t *s) {
  return s != NULL && (s->http_status != 0 || s->nmsgs > 0);
}

void clue_stream_free(clue_stream_t *s) {
  if (s != NULL)
    call_free(s);
}
