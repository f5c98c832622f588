#ifndef CLUE_CLIENT_H
#define CLUE_CLIENT_H

/*
 * libclue: a small blocking gRPC client for clued (and any gRPC server) over HTTP/2, in
 * cleartext with prior knowledge or over TLS (clue_conn_set_tls).
 *
 * A connection (clue_conn_t) is created without I/O and connects on its first call; after
 * a GOAWAY or a broken transport the next call connects again. Each call is one HTTP/2
 * stream. Requests and responses are protobuf-c messages. A call the server provably did
 * not process (its stream refused with RST_STREAM REFUSED_STREAM, or above the last stream
 * id of the server's GOAWAY, before any response) is sent again, once, on the connection
 * or a new one and within the call's deadline: gRPC's transparent retry. A call the server
 * may have seen is never sent twice. A request nghttp2 will not send at all (its headers
 * over the 64 KiB header block limit) ends with INTERNAL "request not sent to HOST: ...;
 * nothing was changed", unretried. A server that breaks HTTP/2 (a PUSH_PROMISE, a flow
 * control window overflow, ...) has its connection ended by this side, and the calls on it
 * get UNAVAILABLE "HTTP/2 protocol error from HOST: what it did (ERROR_CODE)".
 *
 * Return values follow one rule everywhere:
 *   0         the call finished with status OK
 *   > 0       the call finished with that gRPC status code (CLUE_STATUS_*); this includes
 *             transport failures, reported as UNAVAILABLE ("connection refused to HOST:PORT"),
 *             and a grpc-status this library does not know (above 16), reported as UNKNOWN
 *             with the server's number in the message ("MESSAGE (grpc-status 99)"; a value
 *             that is not a number of at most nine digits is UNKNOWN as it is)
 *   < 0       a local error (CLUE_E*): bad arguments, out of memory
 * Whatever the return value, a clue_status_t passed in is filled in (for local errors
 * with RESOURCE_EXHAUSTED or INVALID_ARGUMENT and a message) and must be released with
 * clue_status_clear().
 *
 * The status passed in must be initialised (CLUE_STATUS_INIT); a message it still holds is
 * freed before it is overwritten, so one status can serve many calls.
 *
 * Nothing here aborts on out of memory and there is no global state. Sockets are written
 * with MSG_NOSIGNAL, so a vanished server never raises SIGPIPE. A connection and its
 * streams must be used from one thread at a time.
 *
 * A connection carries at most as many calls at once as the server allows streams
 * (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS; clued's --max-concurrent-streams, 100 by
 * default), streams still open counting as calls. A call started beyond that is not sent:
 * it waits inside the library until another call on the connection ends, and fails with
 * DEADLINE_EXCEEDED when its deadline passes first (without a deadline it waits for ever,
 * or until cancelled), as gRPC's own clients queue it. Use more connections to hold more
 * streams open at once.
 */

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLUE_WUR __attribute__((warn_unused_result))

/** gRPC status codes, numbered as in the gRPC specification. */
enum {
  CLUE_STATUS_OK = 0,
  CLUE_STATUS_CANCELLED = 1,
  CLUE_STATUS_UNKNOWN = 2,
  CLUE_STATUS_INVALID_ARGUMENT = 3,
  CLUE_STATUS_DEADLINE_EXCEEDED = 4,
  CLUE_STATUS_NOT_FOUND = 5,
  CLUE_STATUS_ALREADY_EXISTS = 6,
  CLUE_STATUS_PERMISSION_DENIED = 7,
  CLUE_STATUS_RESOURCE_EXHAUSTED = 8,
  CLUE_STATUS_FAILED_PRECONDITION = 9,
  CLUE_STATUS_ABORTED = 10,
  CLUE_STATUS_OUT_OF_RANGE = 11,
  CLUE_STATUS_UNIMPLEMENTED = 12,
  CLUE_STATUS_INTERNAL = 13,
  CLUE_STATUS_UNAVAILABLE = 14,
  CLUE_STATUS_DATA_LOSS = 15,
  CLUE_STATUS_UNAUTHENTICATED = 16,
};

/** Local error codes (always negative). */
enum {
  CLUE_ENOMEM = -1, /* out of memory */
  CLUE_EINVAL = -2, /* bad argument: malformed target, NULL pointer, wrong message type */
  CLUE_EJSON = -3,  /* JSON input that is malformed or does not fit the message type */
};

/** Default largest response message accepted, as in other gRPC implementations. */
#define CLUE_DEFAULT_MAX_RECV (4u * 1024 * 1024)

/** Longest bearer token clue_conn_set_token() takes, in bytes: a token is short, and more
 * than this is some other file's content. */
#define CLUE_MAX_TOKEN_LEN 8192

/** An HTTP/2 connection to one server. Opaque. */
typedef struct clue_conn clue_conn_t;

/** A server-streaming call in progress. Opaque. */
typedef struct clue_stream clue_stream_t;

/** The outcome of a call. */
typedef struct clue_status {
  int code;      /* CLUE_STATUS_* */
  char *message; /* percent-decoded grpc-message, or a local explanation; owned; may be NULL */
  /* The serialized google.rpc.Status of the grpc-status-details-bin trailer; owned; NULL when
   * the server sent none. Decode it with google__rpc__status__unpack() of
   * "google/rpc/status.pb-c.h", and its details (google.protobuf.Any) by their type_url with
   * "google/rpc/error_details.pb-c.h": BadRequest, PreconditionFailure, ErrorInfo or
   * ResourceInfo. Both headers are installed with this one (pkg-config --cflags clue) and
   * libclue holds their code. */
  uint8_t *details;
  size_t details_len;
} clue_status_t;

/** An all-zero status, ready to be filled in by a call. */
#define CLUE_STATUS_INIT                                                                           \
  { 0, NULL, NULL, 0 }

/** Free the message a status holds and reset it to OK. Safe on an already-clear status. */
void clue_status_clear(clue_status_t *st);

/** The canonical upper-case name of a status code ("NOT_FOUND"); "UNKNOWN" if out of range. */
const char *clue_status_name(int code);

/** A short English description of a local error code (CLUE_E*). */
const char *clue_strerror(int err);

/**
 * Create a connection to target: "host:port", "host", "[v6addr]:port", "[v6addr]" or a bare
 * IPv6 address; the default port is 50051. No I/O happens here. On success *out owns the
 * new connection (free it with clue_conn_free). Errors: CLUE_EINVAL (malformed target),
 * CLUE_ENOMEM.
 */
int clue_conn_new(const char *target, clue_conn_t **out) CLUE_WUR;

/**
 * Close the connection and free it. Streams still open are cancelled, with the messages
 * they had received and not yet read; their handles stay valid (they report CANCELLED)
 * until clue_stream_free(). A stream the server had already ended keeps its messages.
 */
void clue_conn_free(clue_conn_t *c);

/**
 * Send "authorization: Bearer <token>" on every following call; NULL or "" sends none.
 * The string is copied. Errors: CLUE_ENOMEM; CLUE_EINVAL for a token with a control byte or
 * longer than CLUE_MAX_TOKEN_LEN bytes (the previous token stays).
 */
int clue_conn_set_token(clue_conn_t *c, const char *token) CLUE_WUR;

/**
 * Speak TLS (1.2 or later, ALPN h2) instead of cleartext HTTP/2 from the next connection on.
 * The server's certificate must chain to a CA in ca_file (PEM; NULL: the system's CAs) and
 * name the target's host (a DNS name or an IP address). With cert_file (PEM chain) the
 * connection presents that client certificate (mutual TLS), its key read from key_file
 * (NULL: from cert_file). Files are read now; must be called before the first call.
 * Returns 0; CLUE_EINVAL with the reason in *st (a file that does not load, or a connection
 * already in use); CLUE_ENOMEM.
 */
int clue_conn_set_tls(clue_conn_t *c, const char *ca_file, const char *cert_file,
                      const char *key_file, clue_status_t *st) CLUE_WUR;

/**
 * Give every following call a deadline of timeout_ms from its start (sent to the server as
 * grpc-timeout, enforced locally as DEADLINE_EXCEEDED); 0 means no deadline (default).
 * The deadline covers connecting, and for a stream all of its messages. A timeout longer
 * than grpc-timeout can carry (99999999 hours, some 11,000 years), UINT64_MAX among them,
 * means no deadline too: never an instant DEADLINE_EXCEEDED.
 */
void clue_conn_set_timeout(clue_conn_t *c, uint64_t timeout_ms);

/** Largest response message accepted (default CLUE_DEFAULT_MAX_RECV); larger: RESOURCE_EXHAUSTED.
 * So is a message whose decoding would allocate more than 16 MiB plus 32 times its size
 * (many tiny sub-messages: each decodes into a whole structure). */
void clue_conn_set_max_recv(clue_conn_t *c, size_t max_bytes);

/**
 * Watch *flag: when it becomes non-zero, the blocking call in progress is cancelled
 * (RST_STREAM CANCEL) and returns CANCELLED, deadline or not; a call started while it is
 * up returns CANCELLED without being sent. The flag may be raised by a
 * signal handler, whichever thread of the process it runs on, or by another thread (from a
 * thread, __atomic_store_n(flag, 1, __ATOMIC_RELAXED) keeps thread sanitizers content; the
 * library reads it atomically). A signal that interrupts the blocked thread is seen at once,
 * any other raise within a tenth of a second: while it has a flag to watch, a blocked call
 * looks at it that often. NULL stops watching. The flag is read, never written.
 */
void clue_conn_set_cancel_flag(clue_conn_t *c, const volatile sig_atomic_t *flag);

/** The target the connection was created with, as given. */
const char *clue_conn_target(const clue_conn_t *c);

/**
 * Connect now instead of on the first call (useful to report an unreachable server early).
 * Returns 0, CLUE_STATUS_UNAVAILABLE / CLUE_STATUS_DEADLINE_EXCEEDED / CLUE_STATUS_CANCELLED
 * with the reason in *st, or CLUE_ENOMEM.
 */
int clue_conn_connect(clue_conn_t *c, clue_status_t *st) CLUE_WUR;

/**
 * Make a unary call to path ("/package.Service/Method"): send req, wait for the reply.
 * On OK, *resp owns the decoded response of type resp_desc (free it with
 * protobuf_c_message_free_unpacked(*resp, NULL)); otherwise *resp is left untouched.
 * *st receives the status (clear it with clue_status_clear). Returns as described at the
 * top of this file.
 */
int clue_call(clue_conn_t *c, const char *path, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
              clue_status_t *st) CLUE_WUR;

/**
 * Like clue_call(), naming the method by its protobuf-c service descriptor and method name
 * ("ListUnits"); the request type is checked against the method's input type (a mismatch is
 * CLUE_EINVAL) and the response is decoded as the method's output type.
 */
int clue_call_method(clue_conn_t *c, const ProtobufCServiceDescriptor *service, const char *method,
                     const ProtobufCMessage *req, ProtobufCMessage **resp,
                     clue_status_t *st) CLUE_WUR;

/**
 * Start a server-streaming call: send req and return once the request is on its way (or,
 * with the server's concurrent-stream limit reached, queued in the library to go once
 * another call ends: see the top of this file).
 * On success (0) *out owns the stream (free with clue_stream_free). On failure *out is left
 * untouched and the status is returned as for clue_call().
 */
int clue_stream_start(clue_conn_t *c, const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, clue_stream_t **out,
                      clue_status_t *st) CLUE_WUR;

/**
 * Wait for the next message of a stream. Returns 1 with *msg owning the message (free it
 * with protobuf_c_message_free_unpacked(*msg, NULL)); 0 when the call has ended, with its
 * final status in *st (st->code may be an error); CLUE_ENOMEM on out of memory.
 * After 0 every further call returns 0 with the same status.
 */
int clue_stream_next(clue_stream_t *s, ProtobufCMessage **msg, clue_status_t *st) CLUE_WUR;

/**
 * Like clue_stream_next(), waiting at most wait_ms (0: without a bound): returns 2 when that
 * time passed with no message and the call goes on (nothing is cancelled; *st is cleared,
 * *msg untouched). A stream whose messages should come at least that often (a heartbeat) can
 * so tell a connection dropped silently from a quiet one.
 */
int clue_stream_next_within(clue_stream_t *s, ProtobufCMessage **msg, clue_status_t *st,
                            uint64_t wait_ms) CLUE_WUR;

/**
 * Ask whether the stream's connection is still alive: send an HTTP/2 PING and wait at most
 * wait_ms (1 or more) for the server's ACK, while the stream goes on (messages that arrive
 * meanwhile wait for clue_stream_next()). Returns 1 when the ACK came, or the stream ended
 * (clue_stream_next() then tells how); 0 when wait_ms passed without an answer: the
 * connection seems lost (a proxy or NAT dropped it silently); nothing is cancelled. Or a
 * negative CLUE_E* error. A server counts PINGs sent more often than its keepalive policy
 * allows (clued: --keepalive-min-ping, 5 minutes) with no data between, and ends the
 * connection after a few.
 */
int clue_stream_ping(clue_stream_t *s, uint64_t wait_ms) CLUE_WUR;

/**
 * Whether the server has answered the stream: its response headers (or a message) arrived.
 * A stream that ends with no answer never reached a live server (one that is hung, or a
 * listener that never speaks).
 */
int clue_stream_answered(const clue_stream_t *s);

/** Free a stream. If the call is still running it is cancelled (RST_STREAM CANCEL). */
void clue_stream_free(clue_stream_t *s);

/** Flags of clue_to_json(). */
enum {
  CLUE_JSON_COMPACT = 1, /* one line, no spaces; default is indented with two spaces */
};

/**
 * Render a message as JSON, driven by its descriptor: field names as in the .proto file,
 * every field present (scalars with their default value, unset messages as null, unset
 * proto3 optional and oneof members left out), enums by name (the number if unknown),
 * 64-bit integers as JSON numbers, bytes as base64, invalid UTF-8 replaced by U+FFFD. Strings
 * escape, beside what JSON requires, DEL, the C1 controls, U+2028/U+2029 and the
 * bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) as \uXXXX,
 * so the text is safe to print to a terminal.
 * On success *out owns a NUL-terminated string (free it). Errors: CLUE_ENOMEM, CLUE_EINVAL.
 */
int clue_to_json(const ProtobufCMessage *m, int flags, char **out) CLUE_WUR;

/** Where and why reading JSON failed. */
typedef struct clue_json_error {
  int line;          /* 1-based; 0 when the failure has no place in the text (out of memory) */
  int column;        /* 1-based, in characters (UTF-8 sequences), not bytes */
  /* English, names the field or the syntax problem; it may quote the text (a field name, a
   * value) with any characters the text spells, control characters too: show it as untrusted. */
  char message[256];
} clue_json_error_t;

/**
 * Read text (len bytes, UTF-8, RFC 8259 JSON with nothing after the value) as one JSON object
 * into a new message of type d: members named by the .proto field name or its lowerCamelCase
 * JSON name; enums by full or prefix-less name in any case, or by number; 64-bit integers
 * as numbers or strings of digits; nested objects; arrays for repeated fields; null leaves
 * a field at its default. Strict: unknown fields, members given twice, fractions where an
 * integer belongs, comments and trailing commas are errors. Bytes fields are not supported.
 * On success *out owns the message (free with protobuf_c_message_free_unpacked(*out, NULL)).
 * Errors: CLUE_EJSON (*err says where and why), CLUE_ENOMEM, CLUE_EINVAL (NULL argument).
 */
int clue_from_json(const char *text, size_t len, const ProtobufCMessageDescriptor *d,
                   ProtobufCMessage **out, clue_json_error_t *err) CLUE_WUR;

/**
 * Like clue_from_json() for a JSON array of objects: on success *out owns an array of *n
 * messages (free with clue_messages_free). Messages of elements after the first bad one are
 * not made: the whole text is read, or none of it. Error messages name the element
 * ("element 3: ...").
 */
int clue_from_json_array(const char *text, size_t len, const ProtobufCMessageDescriptor *d,
                         ProtobufCMessage ***out, size_t *n, clue_json_error_t *err) CLUE_WUR;

/** Free n messages and the array holding them (as made by clue_from_json_array). */
void clue_messages_free(ProtobufCMessage **msgs, size_t n);

/**
 * Bytes one value of a field of this type takes in a protobuf-c message: the member of a
 * singular field, or one element of a repeated field's array.
 */
size_t clue_type_size(ProtobufCType type);

/**
 * Whether the singular field f of m holds a value: a oneof member that is the one set, an
 * optional field that was given; other singular fields always do (1). 0 otherwise.
 */
int clue_field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);

/**
 * Length of the prefix all value names of an enum share, in whole words ("UNIT_KIND_" for
 * UNIT_KIND_ROOM, UNIT_KIND_GROUP, ...); 0 when there is none or it would leave a name empty.
 */
size_t clue_enum_prefix_len(const ProtobufCEnumDescriptor *ed);

/**
 * The value of enum ed called name: its full name or the name without the common prefix
 * (clue_enum_prefix_len), in any case ("group", "UNIT_KIND_GROUP"). Returns 0 and sets
 * *value, or CLUE_EINVAL (*value untouched) when no value is called so.
 */
int clue_enum_from_name(const ProtobufCEnumDescriptor *ed, const char *name, int *value) CLUE_WUR;

/**
 * The names of enum ed's values without the common prefix, joined by sep ("ROOM|GROUP|..."),
 * into buf (len bytes; cut short when they do not fit). A value 0 called *UNSPECIFIED* is
 * left out. Returns buf.
 */
const char *clue_enum_choices(const ProtobufCEnumDescriptor *ed, const char *sep, char *buf,
                              size_t len);

#ifdef __cplusplus
}
#endif

#endif
