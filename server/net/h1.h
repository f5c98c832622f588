#ifndef CLUED_NET_H1_H
#define CLUED_NET_H1_H

/* HTTP/1.1 on a connection whose first bytes were not the HTTP/2 preface: the browser's
 * gRPC-Web calls, CORS preflights and the console's files. Each request becomes a stream of
 * the connection, made through the server's stream_accept hook and fed the same events an
 * HTTP/2 stream gets (:method, :path and :authority first, then the headers, the body, the
 * end), so calls are checked, authenticated and bounded exactly as over HTTP/2.
 *
 * One request at a time: the next (pipelined) request is read once the reply to the one
 * before it has been produced; until then its bytes wait in the connection's input buffer,
 * and reading stops while that buffer is full. h2_conn.c calls the functions below in place
 * of nghttp2 once it has chosen HTTP/1.1; h2_stream.c calls h1_reply_start() and
 * h1_input_resume(). */

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct h2_conn h2_conn_t;
typedef struct h2_stream h2_stream_t;
typedef struct h1 h1_t;

#define H1_MAX_REQUEST_LINE 8192    /* longer: 414 */
#define H1_INPUT_BUFFER (64 * 1024) /* input kept per connection before reading stops */

/** Switch c to HTTP/1.1 (its nghttp2 session is dropped). Returns 0 or -ENOMEM. */
int h1_start(h2_conn_t *c) __attribute__((warn_unused_result));

/** Free the connection's HTTP/1.1 state (its close callback). NULL is a no-op. */
void h1_free(h1_t *h);

/** Bytes read from the peer. Returns 0, or -1 when the connection must close (logged). */
int h1_recv(h2_conn_t *c, const uint8_t *p, size_t n);

/**
 * The next bytes to write, like nghttp2_session_mem_send: *data stays valid until the next
 * call. 0: nothing now.
 */
ssize_t h1_send(h2_conn_t *c, const uint8_t **data);

/** Work left by events (input to parse again, a reply finished). Called by h2_conn_flush. */
void h1_run(h2_conn_t *c);

/** True while the connection reads on (false once it closes after the current reply). */
int h1_want_read(const h2_conn_t *c);

/** True while output is pending (a reply's head or body). */
int h1_want_write(const h2_conn_t *c);

/**
 * The peer half-closed. Returns 1 if requests that came whole are still to be answered
 * (reading stops; they are, in order, and the connection closes after the last reply), 0 if
 * the connection should close now (nothing to answer, or a streaming reply is cancelled).
 */
int h1_peer_eof(h2_conn_t *c);

/** The server drains or the connection idled out: close after the reply in progress. */
void h1_drain(h2_conn_t *c);

/**
 * At each sweep (server.c): a request whose head has begun but not ended within
 * --handshake-timeout closes the connection. Returns 1 if it closed.
 */
int h1_tick(h2_conn_t *c, uint64_t now);

/** Idle: give back the input buffer and scratch space. */
void h1_release_idle(h2_conn_t *c);

/** True if no request is in progress (nothing read of the next one either). */
int h1_idle(const h2_conn_t *c);

/**
 * For h2_stream.c: start the reply of the connection's current stream s: the status and
 * the headers in nv (":status" skipped), then the body, chunked if chunked. Returns 0 or
 * -ENOMEM.
 */
int h1_reply_start(h2_conn_t *c, h2_stream_t *s, int status, const nghttp2_nv *nv, size_t n,
                   int chunked) __attribute__((warn_unused_result));

/** For h2_stream.c: the current stream takes body bytes again (authenticated or refused). */
void h1_input_resume(h2_conn_t *c);

#endif
