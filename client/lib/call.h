#ifndef CLUE_LIB_CALL_H
#define CLUE_LIB_CALL_H

/* One gRPC call = one HTTP/2 stream, seen from the client: the framed request, the response
 * headers and trailers, the decoded message queue and the final status. The public type
 * clue_stream_t is this object; unary calls use it internally. */

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>

#include "clue/client.h"
#include "net/grpc_wire.h"

typedef struct clue_stream call_t;

/**
 * How often a call the server provably did not process is started again by itself: a stream
 * refused (RST_STREAM REFUSED_STREAM) or above a GOAWAY's last stream id before any
 * response. gRPC calls this a transparent retry; like gRPC, once.
 */
#define CALL_MAX_TRANSPARENT_RETRIES 1

typedef enum call_state {
  CALL_IDLE,      /* built, request not yet submitted (again, after a refused stream) */
  CALL_OPEN,      /* request submitted, waiting for the response headers */
  CALL_RECEIVING, /* response headers in; messages and trailers may follow */
  CALL_CLOSED,    /* final status known; queued messages may still be read */
} call_state_t;

typedef struct call_msg {
  struct call_msg *next;
  uint8_t *data; /* owned */
  size_t len;
} call_msg_t;

struct clue_stream {
  call_state_t state;
  clue_conn_t *conn;               /* NULL once the connection was freed */
  struct clue_stream *next, *prev; /* conn->calls: every call not yet freed */
  int32_t stream_id;               /* 0 unless attached to a live HTTP/2 stream */
  int unary;
  char *path;
  const ProtobufCMessageDescriptor *resp_desc;
  uint64_t timeout_ms; /* 0: no deadline */
  int64_t deadline;    /* clue__net_now_ms() time, meaningful if timeout_ms */
  uint8_t *req;        /* framed request, owned until CLOSED */
  size_t req_len, req_off;

  int http_status;    /* 0 until a final :status arrives */
  int grpc_ct;        /* content-type is application/grpc[+...|;...] */
  int is_grpc;        /* 200 with a gRPC content-type: DATA carries gRPC messages */
  int grpc_status;    /* -1 until grpc-status arrives; as sent, even a code past 16 */
  char *grpc_message; /* as received (percent-encoded), owned */
  char *grpc_details; /* grpc-status-details-bin as received (base64), owned */
  grpc_decoder_t dec;
  call_msg_t *head, *tail;
  unsigned nmsgs;    /* messages received so far */
  size_t unconsumed; /* DATA bytes whose stream window credit waits for the reader */

  int retries; /* transparent retries made (CALL_MAX_TRANSPARENT_RETRIES) */

  int status_code;  /* final status, once CLOSED */
  char *status_msg; /* owned, may be NULL */
  int local_err;    /* CLUE_ENOMEM when the call failed for lack of memory */
};

/**
 * The one place a call changes state; CLOSED detaches it from its HTTP/2 stream. OPEN goes
 * back to IDLE only for a transparent retry (its stream gone, nothing of a response taken):
 * the connection starts it again (clue__conn_wait()).
 */
void clue__call_set_state(call_t *call, call_state_t to);

/** Event handlers, called from the connection's nghttp2 callbacks. */
void clue__call_on_header(call_t *call, const uint8_t *name, size_t namelen, const uint8_t *value,
                          size_t valuelen);
void clue__call_on_headers_done(call_t *call);
void clue__call_on_data(call_t *call, const uint8_t *data, size_t len);
void clue__call_on_close(call_t *call, uint32_t h2_error);

/**
 * Record the final status (message owned by the call afterwards; code < 0 is a local
 * CLUE_E* error) and move to CLOSED. A call already CLOSED keeps its first status.
 */
void clue__call_finish(call_t *call, int code, char *msg);

/** End the call from this side: RST_STREAM(CANCEL) if the stream is live, then finish. */
void clue__call_abort(call_t *call, int code, char *msg);

/** Free the messages received and not yet read. */
void clue__call_drop_messages(call_t *call);

#endif
