#ifndef CLUE_LIB_CONN_H
#define CLUE_LIB_CONN_H

/* A client HTTP/2 connection: socket, nghttp2 session and the blocking I/O pump. */

#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdint.h>

#include "call.h"
#include "clue/client.h"
#include "tls.h"

/** Bytes of frames gathered for one send() (cleartext connections). */
#define CLUE_CONN_OUT_MAX 4096

typedef enum conn_state {
  CONN_IDLE,     /* no transport; the next call connects */
  CONN_READY,    /* session up; new calls may start */
  CONN_DRAINING, /* GOAWAY received: running calls finish, new calls reconnect */
} conn_state_t;

struct clue_conn {
  conn_state_t state;
  char *target; /* as given by the user, for messages */
  char *host;
  char *port;
  char *authority; /* :authority, host:port with IPv6 in brackets */
  char *auth;      /* "Bearer <token>", or NULL */
  uint64_t timeout_ms;
  size_t max_recv;
  const volatile sig_atomic_t *cancel;
  int fd; /* -1 when IDLE */
  nghttp2_session *h2;
  call_t *calls;  /* every call created here and not yet freed */
  char *h2_error; /* why nghttp2 or the server's GOAWAY ended the session, if it said */
  char bad_frame[64]; /* the server's last frame nghttp2 found invalid, as "TYPE: reason" */
  clue_tls_t tls; /* ctx NULL: cleartext (h2c) */
  SSL *ssl;       /* the TLS session on fd, or NULL */
  int received;   /* the session has had bytes from the server */
  /* The PING last sent (clue__conn_ping()): its opaque data, and whether its ACK came. */
  uint64_t ping_sent;
  int ping_acked;
  /* Cleartext frames nghttp2 handed over and not yet written: a call's HEADERS and DATA go
   * out in one send(), one segment, instead of one each (TCP_NODELAY is on). */
  size_t out_len;
  uint8_t out[CLUE_CONN_OUT_MAX];
};

/**
 * Connect if needed and submit the call's request. Returns 0 (call OPEN), a gRPC status
 * code > 0 with *st filled (e.g. UNAVAILABLE when the server cannot be reached), or a
 * CLUE_E* error.
 */
int clue__conn_start(clue_conn_t *c, call_t *call, clue_status_t *st)
    __attribute__((warn_unused_result));

/** What clue__conn_wait() waits for besides the call's end. */
enum {
  CONN_WAIT_MSG = 1,  /* a message queued on the call */
  CONN_WAIT_PING = 2, /* the ACK of the PING last sent (clue__conn_ping()) */
};

/**
 * Run I/O until the call is CLOSED or has what want (CONN_WAIT_*) names, or until the
 * clue__net_now_ms() time until has come (0: no such bound; the call then goes on). Deadlines,
 * cancellation and transport failures all end in the call being CLOSED with a status.
 */
void clue__conn_wait(clue_conn_t *c, call_t *call, int want, int64_t until);

/**
 * Send a PING on the call's connection and run I/O until its ACK comes, the call is CLOSED,
 * or until (as clue__conn_wait()). Returns 1 when the ACK came or the call ended, 0 when
 * until came first, or CLUE_ENOMEM.
 */
int clue__conn_ping(clue_conn_t *c, call_t *call, int64_t until);

/** Send what nghttp2 has queued without blocking (RST_STREAM, WINDOW_UPDATE). */
void clue__conn_flush(clue_conn_t *c);

/** Add a new call to the connection's list / take a call off it. */
void clue__conn_link(clue_conn_t *c, call_t *call);
void clue__conn_unlink(clue_conn_t *c, call_t *call);

#endif
