#ifndef CLUED_NET_H2_STREAM_H
#define CLUED_NET_H2_STREAM_H

/* One HTTP/2 stream carrying one gRPC call: the only code that does nghttp2 stream I/O.
 * It takes the request headers in, frames the request body into messages, holds or returns
 * its flow-control credit, buffers the reply behind nghttp2's data provider and ends it with
 * the trailers.
 *
 * The layer above (rpc/) embeds an h2_stream_t in its call object, sees it only through the
 * functions below, and hears of it through the events of h2_stream_ops_t. It creates the
 * call when a connection asks it to (the server's stream_accept hook). The stream never
 * frees its owner: after the closed event it is detached (no connection), and the owner
 * releases it with h2_stream_free() when it frees itself. */

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "net/grpc_wire.h"
#include "net/web.h"

/* What one connection keeps of unfinished requests to public methods (no caller answers
 * for them); past it such a call gets RESOURCE_EXHAUSTED. */
#define H2_PUBLIC_INBOUND (1u << 20)

/* What one connection may have queued of replies to public methods before their streams wait
 * (a reflection stream reads no further request); the server's total is
 * --max-public-outbound. */
#define H2_PUBLIC_OUTBOUND (64u * 1024)

typedef struct h2_conn h2_conn_t;
typedef struct h2_stream h2_stream_t;
typedef struct server server_t;

/** What the stream does with request body bytes as they arrive. */
typedef enum h2_input {
  H2_IN_DISCARD, /* drop them, return their credit (refused, answered, or not yet asked) */
  H2_IN_HOLD,    /* frame them into messages, hold their credit (caller not yet known) */
  H2_IN_READ,    /* frame them into messages; the connection's credit goes back at once,
                    the stream's as each message is handed over */
} h2_input_t;

/* IDLE -> SENDING <-> DEFERRED -> TRAILING -> DONE; IDLE -> TRAILING; IDLE -> DONE
 * (trailers-only); any -> CLOSED when nghttp2 closes the stream or its connection closes. */
typedef enum h2_output {
  H2_OUT_IDLE,     /* nothing submitted yet */
  H2_OUT_SENDING,  /* reply HEADERS submitted with the data provider */
  H2_OUT_DEFERRED, /* the data provider ran dry; nghttp2 waits for resume */
  H2_OUT_TRAILING, /* status decided: the trailers go once the buffer drains */
  H2_OUT_DONE,     /* trailers (or a trailers-only reply) submitted */
  H2_OUT_CLOSED,   /* the stream is gone */
} h2_output_t;

/** The request's method, as far as the transport cares. */
typedef enum h2_method {
  H2_M_NONE,
  H2_M_POST,
  H2_M_GET,
  H2_M_HEAD,
  H2_M_OPTIONS,
  H2_M_OTHER,
} h2_method_t;

/** How the reply ends. */
typedef enum h2_reply {
  H2_REPLY_GRPC,  /* gRPC: trailers in an HTTP/2 HEADERS frame */
  H2_REPLY_WEB,   /* gRPC-Web: trailers as the body's last frame (flag 0x80), then the end */
  H2_REPLY_PLAIN, /* an HTTP response of the transport's own (file, preflight, refusal) */
} h2_reply_t;

/** The events of a stream, run by the transport. None may free the owner synchronously. */
typedef struct h2_stream_ops {
  /** One request header as decoded. Returns 0, or -1 to reset the stream. */
  int (*header)(h2_stream_t *s, const uint8_t *name, size_t namelen, const uint8_t *value,
                size_t valuelen);
  /** The request headers are complete. */
  void (*headers_done)(h2_stream_t *s);
  /** One whole request message; the callee owns msg->data. */
  void (*message)(h2_stream_t *s, grpc_message_t *msg);
  /** The request body cannot be read on (framing, size, the connection's inbound cap). */
  void (*input_error)(h2_stream_t *s, int grpc_code, const char *why);
  /** The client half-closed the stream. */
  void (*end)(h2_stream_t *s);
  /**
   * The stream is gone: reset by the peer or closed (error_code), or its connection closed
   * (conn_reason, for the log; NULL otherwise). The stream is detached when this runs.
   */
  void (*closed)(h2_stream_t *s, uint32_t error_code, const char *conn_reason);
  /**
   * The connection can take more output: this stream's buffer fell below the low-water mark
   * or the connection's congestion eased. Only for streams that asked (h2_stream_want_writable).
   */
  void (*writable)(h2_stream_t *s);
} h2_stream_ops_t;

struct h2_stream { /* fields are the transport's; the owner uses the functions below */
  const h2_stream_ops_t *ops;
  h2_conn_t *conn; /* NULL once the stream closed */
  int32_t id;
  h2_stream_t *prev, *next;   /* conn->streams */
  h2_stream_t *next_writable; /* conn->writable */
  unsigned queued_writable : 1;
  unsigned want_writable : 1;
  h2_input_t in;
  h2_output_t out;
  size_t unacked; /* body bytes whose credit is held (H2_IN_HOLD) */
  size_t held;    /* body bytes of messages not yet taken whose stream
                     credit is held (H2_IN_READ; the connection's is back) */
  size_t inbound;      /* request body bytes kept, counted in the connection's total */
  size_t srv_inbound;  /* ... of them counted in the server's (authenticated calls only) */
  size_t user_inbound; /* ... of them counted in the user's (--max-user-inbound) */
  uint64_t user;       /* the authenticated caller's user id (0: none yet, or public) */
  size_t decoded;      /* the decoded request's bytes, counted in the connection's total */
  grpc_decoder_t dec;
  int status;
  char *status_msg;     /* percent-encoded grpc-message */
  char *status_details; /* grpc-status-details-bin (base64), owned; NULL: none */
  uint8_t *buf;         /* reply bytes not yet taken by nghttp2 */
  size_t off, len, cap;
  struct web_file *file; /* a console file's body, served by reference (shared) */
  size_t file_off;       /* bytes of it already taken */
  /* What the request is, read from its headers as they pass (net/web.h). */
  uint8_t method;           /* h2_method_t */
  uint8_t proto;            /* web_proto_t of its content-type */
  uint8_t reply;            /* h2_reply_t */
  unsigned has_origin : 1;  /* an Origin header came */
  unsigned acrm : 1;        /* Access-Control-Request-Method came (a preflight) */
  unsigned accept_text : 1; /* Accept: application/grpc-web-text (a text reply) */
  int origin;               /* index of its Origin in --web-origin; -1: none allowed */
  char *path;               /* :path of a request that is not a POST, owned */
  char *acrh;               /* Access-Control-Request-Headers, owned */
  char *inm;                /* If-None-Match of a GET or HEAD, owned */
  web_b64_t b64;            /* grpc-web-text: the request body's base64 */
  /* How long an unfinished request may take (h2_stream_expect, h2_stream_tick). */
  unsigned streaming : 1; /* the method takes a stream of messages */
  unsigned in_public : 1; /* no caller answers for it: small bounds */
  unsigned in_ended : 1;  /* the client half-closed */
  uint64_t whole_ms;      /* in_public: a message must arrive whole within */
  uint64_t in_due;        /* loop time by which the unfinished request (or message) must be
                             whole; 0: none */
  uint64_t in_last;       /* loop time request bytes last came (or its headers) */
  /* Request bytes held while the owner reads no further (h2_stream_input_pause): counted as
   * kept, their stream credit held. */
  unsigned in_paused : 1;
  unsigned end_held : 1; /* the client half-closed while paused: told on resume */
  uint8_t *pend;
  size_t pend_len, pend_cap;
  /* Whose output total the queued reply counts in (fixed by its first byte): the public
   * total, or the server's and a user's (--max-outbound, --max-user-outbound). */
  unsigned out_public : 1;
  unsigned out_waiting : 1; /* on the server's out_waiters list */
  uint64_t out_user;
  size_t out_charged;         /* queued reply bytes counted in the public or the server's total */
  size_t out_user_charged;    /* ... of them in out_user's */
  h2_stream_t *wprev, *wnext; /* srv->out_waiters */
};

/**
 * Set up s, detached, with the owner's events: the owner calls this from the server's
 * stream_accept hook, which the connection then attaches. max_message is the largest
 * request message accepted.
 */
void h2_stream_init(h2_stream_t *s, const h2_stream_ops_t *ops, size_t max_message);

/** Release what the stream holds (its reply buffer, decoder). s must be detached. */
void h2_stream_free(h2_stream_t *s);

/** True while the stream is attached to its connection. */
int h2_stream_live(const h2_stream_t *s);

/** The number of the connection the stream came on (0 once detached). */
uint64_t h2_stream_conn_id(const h2_stream_t *s);

/**
 * What the method takes, once it is known: messages of at most max_message bytes (refused
 * above it as over --max-message-bytes is), one or (streaming) a stream of them. public: no
 * caller answers for the request, so each message, and a single-message request up to its
 * end, must arrive whole within whole_ms of its first byte, and what the connection keeps
 * of such requests is bounded by H2_PUBLIC_INBOUND.
 */
void h2_stream_expect(h2_stream_t *s, size_t max_message, int streaming, int public,
                      uint64_t whole_ms);

/**
 * At each sweep (the connection's tick): end a request that stopped arriving, with
 * DEADLINE_EXCEEDED: a public one not whole in time (h2_stream_expect), any other that is
 * in the middle of a message, or waits for the end of its single one, and got no byte for
 * idle_ms (--idle-timeout; 0: never).
 */
void h2_stream_tick(h2_stream_t *s, uint64_t now, uint64_t idle_ms);

/** Change what is done with request body bytes from now on (see h2_input_t). */
void h2_stream_set_input(h2_stream_t *s, h2_input_t in);

/** n bytes of a delivered request message were consumed: they no longer count as kept. */
void h2_stream_input_taken(h2_stream_t *s, size_t n);

/**
 * True (with the reason in why) when the body bytes that arrived while the caller was being
 * authenticated (H2_IN_HOLD), which the server's and user's totals do not count yet, would
 * take the server past --max-inbound or user past --max-user-inbound once counted.
 */
int h2_stream_held_over(const h2_stream_t *s, uint64_t user, char *why, size_t len);

/** Bytes of request memory the stream's connection may still keep within --max-conn-inbound
 * and (for a method that needs a token) the server within --max-inbound and its user within
 * --max-user-inbound once the stream's own kept bytes go (0 once the stream has left its
 * connection): what its decoded request may take. */
size_t h2_stream_input_room(const h2_stream_t *s);

/** n bytes of memory a request took (its decoded message) count as kept in the connection's
 * total until h2_stream_input_free() or the stream leaves its connection. (The server's total
 * counts them until they are freed: rpc/call.c.) */
void h2_stream_input_keep(h2_stream_t *s, size_t n);

/** Forget every request byte kept (framing state included): the request is done with. */
void h2_stream_input_free(h2_stream_t *s);

/** True if a request message is only partly received; why says how much (for a status). */
int h2_stream_input_partial(const h2_stream_t *s, char *why, size_t whylen);

/** True if the stream came over HTTP/1.1. */
int h2_stream_conn_is_h1(const h2_stream_t *s);

/** What the request's content-type asks for (WEB_PROTO_GRPC only where HTTP/2 carries it). */
web_proto_t h2_stream_protocol(const h2_stream_t *s);

/**
 * Answer a request that is not a gRPC call, if the transport serves it: a CORS preflight
 * (--web-origin), a console file (--console-dir), or, over HTTP/1.1, any other method.
 * Returns 1 if the stream answered (the owner only waits for its closed event), 0 if the
 * request is the owner's to answer.
 */
int h2_stream_answer_http(h2_stream_t *s);

/** Start the reply (HEADERS :status 200 with the data provider). Returns 0 or -ENOMEM. */
int h2_stream_start_reply(h2_stream_t *s) __attribute__((warn_unused_result));

/**
 * Queue one reply message (framed). With send, start the reply if needed and send what flow
 * control allows; without, leave it for h2_stream_finish() (a unary reply and its trailers
 * then leave together). Returns 0, -ECANCELED if detached or already finished, -E2BIG,
 * -ENOMEM.
 */
int h2_stream_write(h2_stream_t *s, const ProtobufCMessage *msg, int send)
    __attribute__((warn_unused_result));

/**
 * Finish with a gRPC status: trailers after the queued messages, or a trailers-only reply
 * with http_status if nothing was queued. A no-op once finished or detached.
 */
void h2_stream_finish(h2_stream_t *s, int http_status, int grpc_code, const char *msg);

/**
 * Send details (base64 text of a google.rpc.Status; the stream owns it afterwards, NULL for
 * none) as grpc-status-details-bin with the next h2_stream_finish(). Freed if never sent.
 */
void h2_stream_set_details(h2_stream_t *s, char *details);

/** The peer's address ("127.0.0.1:5555"), or NULL once detached. */
const char *h2_stream_peer(const h2_stream_t *s);

/** The peer's address as a key (h2_conn_t peer_key: an IPv6 one's /64), or 0 when unknown or
 * once detached. */
uint64_t h2_stream_peer_key(const h2_stream_t *s);

/** True once h2_stream_finish() ran (or the stream is gone). */
int h2_stream_finished(const h2_stream_t *s);

/**
 * Reply bytes queued on the stream and not yet taken by HTTP/2 flow control; while the
 * connection is congested, its whole queue, and while an authenticated call's output is over
 * --max-outbound or its user's --max-user-outbound (h2_stream_out_wait), that total, so that
 * a streaming producer pauses.
 */
size_t h2_stream_buffered(h2_stream_t *s);

/** True while the stream's connection has more output queued than --max-conn-buffer. */
int h2_stream_congested(const h2_stream_t *s);

/** Reply bytes queued on the stream that HTTP/2 has not taken yet (0 once detached). */
size_t h2_stream_unsent(const h2_stream_t *s);

/** True while the stream's connection holds answers to public methods that HTTP/2 has not
 * taken yet: its peer's flow-control windows, or a write it does not read, hold them. */
int h2_stream_conn_owes_public(const h2_stream_t *s);

/**
 * True when the stream should add no output now: its connection is congested, or the queued
 * output of its kind has reached a bound over all connections: for a public method, its
 * connection's H2_PUBLIC_OUTBOUND or the server's --max-public-outbound; for an
 * authenticated call, the server's --max-outbound or its user's --max-user-outbound. In the
 * latter case the stream joins the server's waiting streams, and (if it asked) hears its
 * writable event once that total has drained below half of its bound.
 */
int h2_stream_out_wait(h2_stream_t *s);

/**
 * Read no further request messages (on), or go on (off): while paused, body bytes are kept
 * undecoded with their stream credit held (so within the stream's window and the inbound
 * bounds), and a half-close waits until the bytes before it have been delivered.
 */
void h2_stream_input_pause(h2_stream_t *s, int on);

/** Ask for (or stop asking for) the writable event. */
void h2_stream_want_writable(h2_stream_t *s, int on);

/** Something on the connection ended that a waiting stream may wait for: wake the writers. */
void h2_stream_wake(h2_stream_t *s);

/** Send what is queued now (safe at any time; deferred inside nghttp2 callbacks). */
void h2_stream_flush(h2_stream_t *s);

/* ---- for h2_conn.c only ------------------------------------------------------------- */

/** The server's hook created and initialised s: attach it to c as stream id. */
void h2_stream_attach(h2_stream_t *s, h2_conn_t *c, int32_t id);

/** One request header. Returns 0 or NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE (reset it). */
int h2_stream_recv_header(h2_stream_t *s, const uint8_t *name, size_t namelen, const uint8_t *value,
                          size_t valuelen);

/** The request HEADERS frame ended. */
void h2_stream_recv_headers_done(h2_stream_t *s);

/** The client half-closed the stream (END_STREAM). */
void h2_stream_recv_end(h2_stream_t *s);

/**
 * The reply's last frame (END_STREAM) was handed to the writer: a stream the client has not
 * half-closed is reset with NO_ERROR (RFC 9113 8.1), so it does not stay open.
 */
void h2_stream_sent_end(h2_stream_t *s);

/** Request body bytes for the stream. */
void h2_stream_recv_data(h2_stream_t *s, const uint8_t *data, size_t len);

/**
 * The stream closed (error_code) or its connection closes (conn_reason): detach and tell
 * the owner.
 */
void h2_stream_detach(h2_stream_t *s, uint32_t error_code, const char *conn_reason);

/**
 * Between these, a user whose queued replies fall below half of --max-user-outbound (a
 * detached stream's released) is resumed in the database pool only at the last release:
 * after the detached streams' calls were cancelled. Resumed at once, the pool would send the
 * statements those calls left waiting, for a client that is gone. Nests.
 */
void h2_resume_hold(server_t *srv);
void h2_resume_release(server_t *srv);

/** Fire the writable event if the connection can take output. */
void h2_stream_run_writable(h2_stream_t *s);

/**
 * For the HTTP/1.1 writer: take up to len reply bytes into buf. *end is set when the reply
 * is complete with them (the stream is then DONE). Returns the bytes taken; 0 without *end
 * means nothing to send yet (resumed by the next write).
 */
size_t h2_stream_pull(h2_stream_t *s, uint8_t *buf, size_t len, int *end);

/** Congestion eased: queue the writable event of every stream that asked for it. */
void h2_stream_wake_all(h2_conn_t *c);

#endif
