#ifndef CLUED_RPC_CALL_H
#define CLUED_RPC_CALL_H

/* The call object: one gRPC call = one HTTP/2 stream. Private to the rpc layer; services
 * see only rpc/rpc.h. The call owns an h2_stream_t and sees the transport only through
 * net/h2_stream.h: start a reply, write a message, finish with a status; and the stream's
 * events (headers, message, end, cancel, writable). */

#include <stdint.h>
#include <uv.h>

#include "net/grpc_wire.h"
#include "net/h2_stream.h"
#include "rpc/auth_cache.h"
#include "rpc/details.h"
#include "rpc/rpc.h"

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

/* Memory of a call that all goes when the call does, cut in order from the newest of its
 * chunks (call.c, arena_alloc()): the request's decoded message, and what the handler
 * allocates (rpc_call_alloc()). */
typedef struct rpc_arena_chunk {
  struct rpc_arena_chunk *next;
  size_t size;
  max_align_t data[];
} rpc_arena_chunk_t;

typedef struct rpc_arena {
  rpc_arena_chunk_t *chunks;
  size_t off;   /* next free byte in chunks (the newest) */
  size_t bytes; /* allocated for the chunks, their headers included */
} rpc_arena_t;

/* The decoded request counts as kept by its connection while its call runs
 * (h2_stream_input_keep), so what it may take is also bounded by room: what the connection
 * (--max-conn-inbound) and the server (--max-inbound) may still keep once the message's own
 * bytes, freed right after the decode, go. */
typedef struct rpc_decode_arena {
  rpc_arena_t arena;
  size_t used;    /* bytes handed out, against budget */
  size_t budget;
  size_t room;            /* the arena's bytes at most */
  unsigned over : 1;      /* past budget */
  unsigned over_room : 1; /* past room */
} rpc_decode_arena_t;

typedef struct rpc_meta {
  struct rpc_meta *next;
  char *name, *value; /* in the entry's own allocation, after it */
} rpc_meta_t;

struct rpc_call {
  rpc_call_state_t state;
  int refs;
  server_t *srv;
  h2_stream_t stream;   /* the transport's; detached once the stream closed */
  char id[48];
  uint64_t started_ns; /* uv_hrtime() when the stream was accepted: the call's duration */
  rpc_detail_t details[RPC_DETAILS_MAX]; /* named by the handler for its failure */
  size_t ndetails;

  /* request */
  char *path, *content_type, *method, *encoding, *timeout;
  rpc_meta_t *meta;
  const char *repeated;      /* a header that came twice (static name): refused; NULL: none */
  unsigned remote_ended : 1; /* the client half-closed the stream */
  unsigned headers_over : 1; /* over a header limit: the rest is counted, not kept */
  unsigned started : 1;      /* counted in grpc_server_started_total: only such a call is
                                counted as handled */
  unsigned public_stream : 1; /* counted in srv->public_streams: a public stream, or a public
                                 unary call whose answer waits (call_public_admit) */
  unsigned msg_held : 1;      /* a client-streaming request message waits in msg for the
                                 public output to drain (h2_stream_out_wait) */
  uint64_t public_key;        /* its peer address's key in srv->addr_public_streams while
                                 public_stream; 0: none counted */
  size_t header_bytes;       /* decoded header list size so far (RFC 7541 entry sizes) */
  unsigned header_count;
  grpc_message_t msg;   /* the request message, once complete */
  int nmsgs;
  /* The first fault of the body found while the token was looked up (a compressed or second
   * message, a bad frame): told once the caller is known, so that a stranger is refused
   * UNAUTHENTICATED whenever its body comes (call_body_fault()). 0: none. */
  int body_code;
  char body_why[96];
  const rpc_method_t *m;
  ProtobufCMessage *req;   /* in decode_arena */
  rpc_decode_arena_t decode_arena;
  size_t srv_kept; /* the decoded request's bytes in the server's --max-inbound total */
  size_t user_kept; /* ... and in its user's --max-user-inbound total */
  rpc_principal_t principal;
  auth_stamp_t auth_stamp;   /* srv->auth_cache's when the principal was read */
  uint64_t auth_ms;          /* uv_now() when the principal was read, or served from the cache */
  unsigned auth_rechecks;    /* lookups again before dispatch (rpc_auth_current()) */
  int auth_named;            /* rpc_auth_ended() found its token or user named */
  uint64_t deadline_ms; /* 0: none */
  uv_timer_t timer;     /* deadline; the call is freed in this handle's close callback */

  rpc_cancel_fn on_cancel;
  void *cancel_arg;
  rpc_writable_fn on_writable;
  void *writable_arg;
  rpc_arena_t arena; /* rpc_call_alloc() */
  db_req_t *db_req; /* database request in flight, cancelled if the call ends first */
  db_pool_t *db_req_pool; /* the pool db_req went to; NULL: the server's (srv->db) */
  db_pool_t *read_pool;   /* where the call's reads go (rpc_call_set_read_pool); NULL: srv->db */
  void *read_note;        /* the service's note on that choice (rpc_call_read_note) */
  void *refusal_note;     /* how a refusal of the call's write is told (rpc_call_refusal_note) */
};

/**
 * The server's stream_accept hook: create a call for stream stream_id of connection conn_id
 * and hand back its stream for the connection to attach. The stream holds the first
 * reference. Returns 0 or -ENOMEM.
 */
int rpc_call_accept(server_t *srv, uint64_t conn_id, int32_t stream_id, h2_stream_t **out)
    __attribute__((warn_unused_result));

#endif
