#ifndef CLUED_RPC_CALL_H
#define CLUED_RPC_CALL_H

/* The call object: one gRPC call = one HTTP/2 stream. Private to the transport (net/) and
 * the rpc layer; services see only rpc/rpc.h. */

#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <uv.h>

#include "net/grpc_wire.h"
#include "rpc/rpc.h"

typedef struct h2_conn h2_conn_t;

/* HEADERS -> AUTHENTICATING (methods that need a caller) -> READING [-> STREAMING for
 * client-streaming methods] [-> WAITING] -> RUNNING -> FINISHING -> CLOSED; FINISHING and
 * CLOSED can follow any earlier state. A call's request body is kept only in AUTHENTICATING,
 * READING and STREAMING: once the call is refused or finished, what the client still sends
 * is dropped as it arrives. */
typedef enum rpc_call_state {
  RPC_CALL_HEADERS,        /* request headers arriving */
  RPC_CALL_AUTHENTICATING, /* headers done, token lookup running; the body waits, undecoded */
  RPC_CALL_READING,        /* caller allowed (or method public); request message arriving */
  RPC_CALL_STREAMING,      /* client-streaming: each message goes to the handler as it arrives */
  RPC_CALL_WAITING,        /* request complete; its connection's output is congested */
  RPC_CALL_RUNNING,        /* request decoded, handler running */
  RPC_CALL_FINISHING,      /* status decided; response draining to the peer */
  RPC_CALL_CLOSED,         /* stream gone; only references keep the memory */
} rpc_call_state_t;

/* The request message is decoded into one chunked arena per call, freed with the call, with
 * a budget proportional to the message's size: protobuf's expansion (a 2-byte empty string
 * becomes a pointer and an allocation) cannot cost more than this. */
#define RPC_DECODE_FACTOR 4
#define RPC_DECODE_SLACK (64 * 1024)

typedef struct rpc_decode_chunk {
  struct rpc_decode_chunk *next;
  size_t size;
  max_align_t data[];
} rpc_decode_chunk_t;

typedef struct rpc_decode_arena {
  rpc_decode_chunk_t *chunks;
  size_t off;     /* next free byte in chunks (the newest) */
  size_t used;    /* bytes handed out, against budget */
  size_t budget;
  unsigned over : 1;
} rpc_decode_arena_t;

typedef struct rpc_meta {
  struct rpc_meta *next;
  char *name, *value;
} rpc_meta_t;

typedef struct rpc_arena_block {
  struct rpc_arena_block *next;
  max_align_t data[];
} rpc_arena_block_t;

struct rpc_call {
  rpc_call_state_t state;
  int refs;
  server_t *srv;
  h2_conn_t *conn;      /* NULL once the stream closed */
  int32_t stream_id;
  rpc_call_t *prev, *next;   /* conn->calls */
  rpc_call_t *next_writable; /* conn->writable */
  unsigned queued_writable : 1;
  char id[48];

  /* request */
  char *path, *content_type, *method, *encoding, *timeout;
  rpc_meta_t *meta;
  unsigned bad_header : 1; /* a header we refuse (e.g. duplicate pseudo-header) */
  unsigned remote_ended : 1; /* the client half-closed the stream */
  size_t unacked;          /* body bytes whose flow-control credit waits for authentication */
  size_t inbound;          /* body bytes kept (counted in the connection's inbound total) */
  unsigned headers_over : 1; /* over a header limit: the rest is counted, not kept */
  size_t header_bytes;       /* decoded header list size so far (RFC 7541 entry sizes) */
  unsigned header_count;
  grpc_decoder_t dec;
  grpc_message_t msg;   /* the request message, once complete */
  int nmsgs;
  const rpc_method_t *m;
  ProtobufCMessage *req;   /* in decode_arena */
  rpc_decode_arena_t decode_arena;
  rpc_principal_t principal;
  uint64_t deadline_ms; /* 0: none */
  uv_timer_t timer;     /* deadline; the call is freed in this handle's close callback */

  /* response */
  unsigned response_started : 1; /* headers submitted with a data provider */
  unsigned status_ready : 1;     /* trailers to send once the buffer drains */
  unsigned data_deferred : 1;    /* the data provider returned DEFERRED */
  int status;
  char *status_msg;
  uint8_t *out;
  size_t out_off, out_len, out_cap;

  rpc_cancel_fn on_cancel;
  void *cancel_arg;
  rpc_writable_fn on_writable;
  void *writable_arg;
  rpc_arena_block_t *arena;
  db_req_t *db_req; /* database request in flight, cancelled if the call ends first */
};

/** Create a call for a new stream. Returns 0 or -ENOMEM. The stream holds the first reference. */
int rpc_call_new(server_t *srv, h2_conn_t *conn, int32_t stream_id, rpc_call_t **out)
    __attribute__((warn_unused_result));

/**
 * One request header, as decoded (HPACK references included). Counts it against the
 * server's header-list size and count limits; past either, nothing more is kept and the call
 * is refused with RESOURCE_EXHAUSTED when the headers end. Returns 0, or an nghttp2 error
 * to reset the stream (out of memory).
 */
int rpc_call_on_header(rpc_call_t *call, const uint8_t *name, size_t namelen, const uint8_t *value,
                       size_t valuelen);

/** The request headers are complete: validate them, look up the method, start the deadline. */
void rpc_call_on_headers_end(rpc_call_t *call);

/** Request body bytes (any split). */
void rpc_call_on_data(rpc_call_t *call, const uint8_t *data, size_t len);

/** The client half-closed the stream: decode the request and dispatch once authenticated. */
void rpc_call_on_end_stream(rpc_call_t *call);

/**
 * The stream is gone: closed or reset (error_code), or its connection closed (conn_reason,
 * for the log; NULL otherwise). Drops the stream's reference.
 */
void rpc_call_stream_closed(rpc_call_t *call, uint32_t error_code, const char *conn_reason);

/** The connection's output congestion eased: run a waiting call, wake a paused stream. */
void rpc_call_conn_ready(rpc_call_t *call);

/** Run the writable callback queued by the data provider. */
void rpc_call_run_writable(rpc_call_t *call);

#endif
