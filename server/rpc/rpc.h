#ifndef CLUED_RPC_RPC_H
#define CLUED_RPC_RPC_H

/* The handler interface: what a service sees of one gRPC call.
 *
 * A call is created by the transport when a request's headers arrive. Once its single
 * request message has arrived and decoded, and (for methods that need it) the caller is
 * authenticated, the method's handler runs with the decoded request. The handler then
 * finishes the call at once or later (after asynchronous database work) with rpc_reply()
 * (unary) or rpc_send()... rpc_finish() (server streaming), or fails it with rpc_fail().
 *
 * Lifetime: the transport holds one reference while the HTTP/2 stream lives. Work that
 * outlives the handler's return (a database query) takes its own reference with
 * rpc_call_ref() and drops it with rpc_call_unref() when done. If the client cancels
 * (RST_STREAM), the deadline passes or the connection drops, the call becomes "done":
 * further replies are ignored, and the cancel callback (if any) runs once. */

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/grpc_status.h"

typedef struct server server_t;
typedef struct rpc_call rpc_call_t;
typedef struct db_req db_req_t;
typedef struct db_pool db_pool_t;

/** The bytes a principal's user name may take: VALIDATE_NAME_MAX_CHARS characters of at most
 * 4 bytes each, so that every name the API accepts is carried whole. */
#define RPC_USER_NAME_MAX 400
/** ... and its unit code: the schema's bound (units.code, 32 ASCII characters). */
#define RPC_UNIT_CODE_MAX 32

/** The authenticated caller of a call (DESIGN.md §4). */
typedef struct rpc_principal {
  int64_t user_id;
  int64_t unit_id;
  int unit_kind; /* Clue__V1__UnitKind */
  int role;      /* Clue__V1__Role */
  int64_t token_id;   /* the token the call came with (tokens.id) */
  bool enrollment;    /* that token was issued by someone else: no reporter contacts */
  /* A longer name (written around the API) is cut between characters: a proto3 string must
   * be valid UTF-8. */
  char user_name[RPC_USER_NAME_MAX + 1];
  char unit_code[RPC_UNIT_CODE_MAX + 1];
} rpc_principal_t;

/** A handler. req is owned by the call and lives as long as the call. */
typedef void (*rpc_handler_fn)(rpc_call_t *call, const ProtobufCMessage *req);

/** Called once when a call ends before the handler finished it (cancel, deadline, drop). */
typedef void (*rpc_cancel_fn)(rpc_call_t *call, void *arg);

/** Called when a streaming call's send buffer drained below the low-water mark. */
typedef void (*rpc_writable_fn)(rpc_call_t *call, void *arg);

/** One entry of the method table. */
typedef struct rpc_method {
  const char *path; /* "/package.Service/Method" */
  const ProtobufCMessageDescriptor *input;
  const ProtobufCMessageDescriptor *output;
  rpc_handler_fn handler;
  unsigned server_streaming : 1;
  unsigned public_method : 1; /* no authentication (Health) */
  /* Bidirectional streaming, public methods only: the handler runs once per request message
   * as it arrives (req valid only during that run) and once more with req NULL when the
   * client half-closes; it may send at any time and finishes the call with rpc_finish(). */
  unsigned client_streaming : 1;
  /* Its database cost grows with the data (the log, every clue a scope covers) rather than
   * with the request: each of its statements counts against the pool's heavy share
   * (--db-heavy-conns, db_opts_t.heavy), so that the rest of the pool serves the others. */
  unsigned heavy : 1;
} rpc_method_t;

/** The server a call belongs to. */
server_t *rpc_call_server(rpc_call_t *call);

/** The authenticated caller; NULL for public methods. */
const rpc_principal_t *rpc_call_principal(const rpc_call_t *call);

/** The method being called. */
const rpc_method_t *rpc_call_method(const rpc_call_t *call);

/** A request metadata value by lower-case name, or NULL. Binary (-bin) values are raw. */
const char *rpc_call_metadata(const rpc_call_t *call, const char *name);

/** A short identifier of the call for logs: "conn#stream". */
const char *rpc_call_id(const rpc_call_t *call);

/** True once the call has finished, was cancelled, timed out or its connection dropped. */
int rpc_call_done(const rpc_call_t *call);

/**
 * The number of the HTTP/2 connection the call came on (0 once the stream closed): the owner
 * of the call's database requests, so that one connection holds a bounded share of the pool.
 */
uint64_t rpc_call_conn_id(const rpc_call_t *call);

/**
 * Name q (a db_cancel() handle) as the call's database request in flight: if the call ends
 * before q's callback starts (the peer cancels, the deadline passes, the connection drops),
 * q is cancelled. One request at a time; rpc_call_db_ended() forgets it.
 */
void rpc_call_db_started(rpc_call_t *call, db_req_t *q);

/** rpc_call_db_started() for a request sent to pool (NULL: the server's own, srv->db). */
void rpc_call_db_started_on(rpc_call_t *call, db_pool_t *pool, db_req_t *q);

/** Send the call's reads that tolerate staleness to pool (a replica's; NULL: srv->db), and keep
 * note (the service's own record of that choice, in the call's memory) for
 * rpc_call_read_note(). */
void rpc_call_set_read_pool(rpc_call_t *call, db_pool_t *pool, void *note);

/** Where the call's reads go: the pool rpc_call_set_read_pool() named, else srv->db. */
db_pool_t *rpc_call_read_pool(const rpc_call_t *call);

/** The note rpc_call_set_read_pool() kept; NULL if it was never called. */
void *rpc_call_read_note(const rpc_call_t *call);

/** Keep the service's note (in the call's memory; NULL: none) on how a refusal of the call's
 * write is told, for rpc_call_refusal_note(). */
void rpc_call_set_refusal_note(rpc_call_t *call, void *note);

/** The note rpc_call_set_refusal_note() kept; NULL if none. */
void *rpc_call_refusal_note(const rpc_call_t *call);

/** q's callback has started: the call no longer cancels it (no-op if q is not the call's). */
void rpc_call_db_ended(rpc_call_t *call, db_req_t *q);

/** Take a reference that keeps the call's memory alive across asynchronous work. */
void rpc_call_ref(rpc_call_t *call);

/** Drop a reference; the call is freed with the last one. */
void rpc_call_unref(rpc_call_t *call);

/** Register the cancel callback (replaces any earlier one). */
void rpc_call_on_cancel(rpc_call_t *call, rpc_cancel_fn cb, void *arg);

/** Register the writable callback for streaming calls (replaces any earlier one). */
void rpc_call_on_writable(rpc_call_t *call, rpc_writable_fn cb, void *arg);

/**
 * Memory that lives as long as the call (freed with it): for response messages and their
 * strings. Returns NULL on out of memory.
 */
void *rpc_call_alloc(rpc_call_t *call, size_t size);

/** strdup into the call's memory; NULL on out of memory. */
char *rpc_call_strdup(rpc_call_t *call, const char *s);

/** printf into the call's memory; NULL on out of memory. */
char *rpc_call_printf(rpc_call_t *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** v in decimal ("%lld") in the call's memory, without printf's cost; NULL on out of memory. */
char *rpc_call_i64(rpc_call_t *call, int64_t v);

/**
 * Unary reply: send msg and finish with OK. The message is packed at once; the caller
 * keeps ownership of msg. Ignored (returns 0) if the call is already done.
 * Returns 0, or -ENOMEM (the call is then failed with INTERNAL).
 */
int rpc_reply(rpc_call_t *call, const ProtobufCMessage *msg);

/**
 * Finish the call with an error status and a message for the client (printf format).
 * The message must not carry SQL text or internals. Ignored if the call is already done.
 */
void rpc_fail(rpc_call_t *call, grpc_status_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Rich error details (google.rpc error_details.proto, in the grpc-status-details-bin
 * trailer's google.rpc.Status). Name them just before rpc_fail(); strings are copied into
 * the call's memory. A status with none named still carries the one its code implies
 * (rpc/details.h). Never name what the caller may not see: a NOT_FOUND's details must be
 * the same for a hidden object as for a missing one.
 */

/** INVALID_ARGUMENT: a BadRequest field violation (field path as in the request). */
void rpc_detail_field(rpc_call_t *call, const char *field, const char *description);

/** FAILED_PRECONDITION: a PreconditionFailure violation ("STATE", the current state, why). */
void rpc_detail_precondition(rpc_call_t *call, const char *type, const char *subject,
                             const char *description);

/** ErrorInfo with this reason (domain "clue.v1"); key/value add a metadata entry (key may be NULL). */
void rpc_detail_reason(rpc_call_t *call, const char *reason, const char *key, const char *value);

/** NOT_FOUND: ResourceInfo with the resource type and the name the request gave. */
void rpc_detail_resource(rpc_call_t *call, const char *type, const char *name);

/**
 * Streaming: queue one message. Returns 0, -ECANCELED if the call is done, -ENOMEM.
 * Check rpc_call_buffered() to respect flow control.
 */
int rpc_send(rpc_call_t *call, const ProtobufCMessage *msg) __attribute__((warn_unused_result));

/** Bytes queued on a call and not yet accepted by HTTP/2 flow control; more (so that a
 * streaming producer pauses until its writable callback) while its connection is congested or
 * its user's replies are at --max-user-outbound, or all calls' at --max-outbound. */
size_t rpc_call_buffered(rpc_call_t *call);

/** Streaming: finish the call with the given status (message may be NULL for OK). */
void rpc_finish(rpc_call_t *call, grpc_status_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * At shutdown: end with UNAVAILABLE "server shutting down" every client-streaming call
 * (reflection) waiting for its client's next message. Nothing else would end it before the
 * grace period cut its connection off, holding up the exit; a message it sent later would be
 * answered so anyway.
 */
void rpc_end_streaming_calls(server_t *srv);

#endif
