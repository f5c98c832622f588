#ifndef CLUED_NET_H2_CONN_H
#define CLUED_NET_H2_CONN_H

/* One accepted TCP connection speaking HTTP/2 with prior knowledge. The nghttp2 session
 * owns the streams: each is created (through the server's stream_accept hook) in
 * on_begin_headers and detached in on_stream_close; h2_stream.c does their I/O. */

#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <uv.h>

#include "server.h"

typedef struct h2_stream h2_stream_t;
typedef struct tls_conn tls_conn_t;
typedef struct h1 h1_t;

/** What the connection speaks, known from its first bytes. */
typedef enum h2_proto {
  H2_PROTO_UNKNOWN, /* nothing read yet: nothing is written either (not even SETTINGS) */
  H2_PROTO_H2,      /* the HTTP/2 preface came */
  H2_PROTO_H1,      /* anything else: HTTP/1.1 (net/h1.c) */
} h2_proto_t;

#define H2_STREAM_GAPS 16  /* ranges of skipped stream ids remembered per connection */
#define H2_STREAM_ENDED 16 /* streams the client ended, remembered after they close */
#define H2_CONN_BLOCKS 4   /* nghttp2's other page blocks (its stream map) tracked per connection */

/* OPEN -> NOTICE -> DRAINING -> CLOSING (HTTP/1.1: OPEN -> DRAINING); OPEN, NOTICE or DRAINING
 * -> HANGUP -> CLOSING; any -> CLOSING. */
typedef enum h2_conn_state {
  H2_CONN_OPEN,     /* serving streams */
  H2_CONN_NOTICE,   /* GOAWAY(2^31-1) and a PING sent: streams still served (those the
                       client sent before it read the notice); the final GOAWAY goes once the
                       PING is answered, or after H2_LINGER_MS */
  H2_CONN_DRAINING, /* GOAWAY sent; finishing the streams already open */
  H2_CONN_HANGUP,   /* a protocol error or abuse: GOAWAY queued, what the peer sends is
                       ignored, closed once the GOAWAY is written */
  H2_CONN_CLOSING,  /* uv_close called; freed in its callback */
} h2_conn_state_t;

struct h2_conn {
  uv_tcp_t tcp;
  server_t *srv;
  uint64_t id;
  h2_conn_state_t state;
  nghttp2_session *session;
  h2_conn_t *prev, *next;  /* server's list */
  h2_conn_t *sprev, *snext; /* server's strangers list, while no user claims it */
  uint64_t user;            /* the user whose authenticated call claimed it; 0: none */
  uint64_t peer_key;        /* the peer's address (an IPv6 one's /64) as a key with the top
                               bit set, never a user id; 0: unknown */
  h2_conn_t *soon_next;    /* server's flush_soon list (h2_conn_flush_soon) */
  h2_stream_t *streams;    /* open streams (intrusive list) */
  h2_stream_t *writable;   /* streams whose writable event runs after the next send */
  unsigned in_session : 1; /* inside nghttp2 (recv or send): no re-entrant flush */
  unsigned flush_pending : 1;
  unsigned writing : 1;         /* a uv_write is in flight */
  unsigned congested : 1;       /* queued output over --max-conn-buffer: new calls wait */
  unsigned wake_pending : 1;    /* congestion eased: wake waiting calls after this send */
  unsigned in_new : 1;          /* inside nghttp2_session_server_new3 */
  unsigned out_idle : 1;        /* frame buffer and wbuf given back; nothing sent since */
  unsigned in_soon : 1;         /* on the server's flush_soon list */
  unsigned addr_counted : 1;    /* counted in the server's strangers per address */
  void *framebuf;               /* nghttp2's 16 KiB frame buffer (h2_pages), discarded while idle */
  void *blocks[H2_CONN_BLOCKS]; /* its other h2_pages blocks (the stream map's table): while
                                   idle, one that holds only zeros gives its pages back */
  size_t queued;                /* response bytes in this connection's calls, not yet sent */
  size_t queued_public;         /* of them, those of public methods' calls (H2_PUBLIC_OUTBOUND) */
  size_t owed;                  /* bytes of shared console files its replies have yet to send:
                                   no copy of their own, so not congestion, but pending output */
  size_t moved;                 /* response bytes taken since last_progress was set */
  uint64_t congested_logged;    /* when its congestion was last logged (ms, loop time) */
  unsigned congestions;         /* times it went over --max-conn-buffer since that line */
  size_t inbound;               /* request body bytes its calls keep (--max-conn-inbound) */
  size_t inbound_public;        /* of them, those of public calls (H2_PUBLIC_INBOUND) */
  /* Timeouts (loop time, ms), checked by h2_conn_tick(). */
  unsigned handshaken : 1; /* the client's preface and SETTINGS arrived */
  uint64_t born;
  uint64_t last_active;   /* last request frame (HEADERS, DATA) or call end */
  uint64_t last_progress; /* --write-timeout's clock: when the peer last took H2_PROGRESS_MIN
                             bytes, moved on by the times it owed nothing (h2_conn.c) */
  uint64_t quiet_since;   /* loop time (odd) since which nothing is pending; 0: output is */
  uint64_t last_ping;     /* last PING received */
  unsigned ping_strikes;  /* PINGs too close together since we last sent HEADERS/DATA */
  /* SETTINGS_MAX_CONCURRENT_STREAMS, enforced here (on_begin_headers in h2_conn.c): a stream
   * past it is refused alone, within a budget of refusals. */
  unsigned nopen;            /* streams the client opened that nghttp2 still holds */
  unsigned refuse_tokens;    /* refusals the budget still allows (H2_REFUSED_BURST) */
  uint64_t refuse_stamp;     /* loop time (s) the budget was last refilled */
  unsigned nrefused;         /* streams refused past the limit so far */
  unsigned settings_out : 1; /* nghttp2 just wrote our SETTINGS: the limit is set in it */
  uv_write_t wreq;
  uint8_t *wbuf; /* bytes being written, owned; freed while idle */
  size_t wlen, wcap;
  /* Stream ids the peer skipped are closed without ever having been used (RFC 9113 5.1.1);
   * a HEADERS on one is a connection error. The most recent gaps are remembered. */
  int32_t max_stream_id;
  struct {
    int32_t lo, hi;
  } gaps[H2_STREAM_GAPS];
  unsigned ngaps;
  /* Closed streams that the client had ended (END_STREAM): DATA or HEADERS on one is a
   * connection error STREAM_CLOSED (RFC 9113 5.1). nghttp2 keeps no closed streams (no
   * priority tree), so the most recent are remembered here, as it used to. */
  int32_t ended[H2_STREAM_ENDED];
  unsigned nended;     /* next slot (a ring) */
  uint32_t error_code; /* the GOAWAY code for a failure found here; 0: PROTOCOL_ERROR */
  uint64_t notice_until;  /* NOTICE: loop time by which the final GOAWAY goes */
  const char *goaway_why; /* NOTICE: the final GOAWAY's debug data (a static string) */
  /* Where the bytes read stand in HTTP/2's framing (conn_recv in h2_conn.c). */
  uint32_t scan_skip;   /* payload bytes of the current frame still to come */
  uint8_t scan_preface; /* bytes of the client preface seen */
  uint8_t scan_hlen;    /* bytes of a frame header gathered so far */
  uint8_t scan_hdr[9];
  uint64_t block_since; /* loop time (ms, odd) a header block began; 0: none open */
  char error[128]; /* why a callback failed the session, for the log */
  char peer[64];
  /* NULL on a cleartext listener. With TLS the socket is read and written only through
   * conn_read_start() and conn_write() in h2_conn.c (never uv_read_start/uv_write on tcp);
   * pausing with uv_read_stop(&tcp) is fine, resuming must be conn_read_start(). */
  tls_conn_t *tls;
  h2_proto_t proto;
  uint8_t sniff[4]; /* the first bytes, while they could still be the preface */
  uint8_t nsniff;
  h1_t *h1; /* HTTP/1.1 state; NULL for HTTP/2 (session is NULL for HTTP/1.1) */
};

/**
 * The connection carried an authenticated call of user: it becomes that user's, and no
 * longer goes first when --max-connections is reached, unless the user already claims
 * --max-conns-per-user connections (then it stays a stranger's). Once claimed, it stays so.
 */
void h2_conn_claim(h2_conn_t *c, uint64_t user);

/**
 * Past --max-connections with fresh just accepted: close one connection that no user claims
 * (of the oldest few, one whose address has the most such connections), or fresh itself when
 * its own address has as many as any of them (other than fresh's own). Logged once a second.
 */
void h2_conn_make_room(server_t *srv, h2_conn_t *fresh);

/** Log the connections closed and refused at --max-connections since the last line, once a
 * second at most (from h2_conn_make_room() and the sweep, which ends a burst's count). */
void h2_conn_log_room(server_t *srv, uint64_t now);

/**
 * Accept a pending connection on the server's listener, in *out (NULL if it closed at once).
 * Returns 0 or a negative uv error.
 */
int h2_conn_accept(server_t *srv, h2_conn_t **out) __attribute__((warn_unused_result));

/**
 * Send whatever nghttp2 has queued. Safe to call at any time: from inside nghttp2 callbacks
 * the flush is deferred until the session call returns.
 */
void h2_conn_flush(h2_conn_t *c);

/**
 * Flush later in this turn of the loop: at its next idle phase, before it waits for I/O
 * again. A batch of calls ending together (one database result) then leaves each connection
 * in one write instead of one per reply. Never waits: the idle handle keeps the loop from
 * blocking while any connection is due.
 */
void h2_conn_flush_soon(h2_conn_t *c);

/** Flush every connection h2_conn_flush_soon() named (the server's idle callback). */
void h2_conn_flush_due(server_t *srv);

/**
 * At each sweep (server.c): enforce --handshake-timeout, --write-timeout (close) and
 * --idle-timeout (GOAWAY), logging which fired. now is the loop time. May close the connection.
 */
void h2_conn_tick(h2_conn_t *c, uint64_t now);

/** Start a graceful shutdown of the connection: a GOAWAY notice and a PING, the final GOAWAY
 * once the PING is answered (or after H2_LINGER_MS), then close once streams end. */
void h2_conn_drain(h2_conn_t *c);

/** Close the connection now, logging reason. Calls still open are cancelled. */
void h2_conn_close(h2_conn_t *c, const char *reason);

/**
 * Response bytes added to (delta > 0) or taken from a stream's buffer on this connection.
 * Past --max-conn-buffer the connection is congested: new calls wait and streaming calls
 * see themselves as full; below half of it they are woken (their writable event).
 */
void h2_conn_queued(h2_conn_t *c, ptrdiff_t delta);

/**
 * Bytes of shared console files a reply on this connection starts to owe the peer
 * (delta > 0) or has sent (delta < 0). They hold no memory of the connection's own, so
 * they do not congest it, but they are pending output for --write-timeout.
 */
void h2_conn_owed(h2_conn_t *c, ptrdiff_t delta);

/** Run the writable events of the streams that asked, after the current send. */
void h2_conn_wake(h2_conn_t *c);

/** True while the connection's queued output is over --max-conn-buffer. */
int h2_conn_congested(const h2_conn_t *c);

/**
 * Give the peer back flow-control credit for n request bytes of a stream. The WINDOW_UPDATE
 * goes out with the next h2_conn_flush() (never from here: callers may be mid-change).
 */
void h2_conn_consume(h2_conn_t *c, int32_t stream_id, size_t n);

/** Stop (pause) or resume reading from the peer. */
void h2_conn_read_pause(h2_conn_t *c, int pause);

/** Like h2_conn_consume(), the connection's credit and the stream's given back apart. */
void h2_conn_consume_apart(h2_conn_t *c, int32_t stream_id, size_t conn_n, size_t stream_n);

#endif
