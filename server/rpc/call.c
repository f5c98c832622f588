#include "rpc/call.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include "db/db.h"
#include "domain/validate.h"
#include "log.h"
#include "metrics/metrics.h"
#include "net/h2_conn.h"
#include "net/utf8.h"
#include "rpc/auth.h"
#include "rpc/msg_check.h"
#include "rpc/table.h"
#include "server.h"

/* Why calls that need a token are refused while server->schema_refusing says so: clued's
 * functions or triggers differ from its migrations (they decide who sees what, so nothing is
 * answered through them), a newer clued migrated the database, or they cannot be checked
 * (service/schema_watch.h). */
static const char *schema_refusal(const server_t *srv) {
  if (srv->schema_refusing == SCHEMA_REFUSING_NEWER)
    return "the database was migrated by a newer clued than this server runs; calls are refused "
           "here until this server runs that clued";
  if (srv->schema_refusing == SCHEMA_REFUSING_UNCHECKED)
    return "the server cannot check the database's functions and triggers (see the server's "
           "log); calls are refused until a check succeeds";
  return "the database's functions or triggers are not those clued's migrations define (see the "
         "server's log); calls are refused until an administrator restores them with `clued "
         "migrate --repair`";
}

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* The largest request message of a method that needs no token (Health, reflection): their
 * requests are a few bytes, and nobody answers for a caller that sends more. */
#define RPC_PUBLIC_MAX_MESSAGE (64 * 1024)

static void call_finish(rpc_call_t *call, int http_status, int code, const char *msg);
static void call_headers_drop(rpc_call_t *call, int meta);
static void call_public_uncount(rpc_call_t *call);

static rpc_call_t *call_of(h2_stream_t *s) {
  return container_of(s, rpc_call_t, stream);
}

/* The one place a call changes state, and tells its stream what to do with the request
 * body from now on. Leaving the states that keep a request body drops the body: a refused
 * call's upload is never kept, let alone decoded. */
static void call_set_state(rpc_call_t *call, rpc_call_state_t to) {
  switch (to) {
  case RPC_CALL_AUTHENTICATING:
    assert(call->state == RPC_CALL_HEADERS);
    break;
  case RPC_CALL_READING:
    assert(call->state == RPC_CALL_HEADERS || call->state == RPC_CALL_AUTHENTICATING);
    break;
  case RPC_CALL_STREAMING:
    assert(call->state == RPC_CALL_READING);
    break;
  case RPC_CALL_WAITING:
    assert(call->state == RPC_CALL_READING);
    break;
  case RPC_CALL_RUNNING:
    assert(call->state == RPC_CALL_READING || call->state == RPC_CALL_STREAMING ||
           call->state == RPC_CALL_WAITING);
    break;
  case RPC_CALL_FINISHING:
    assert(call->state < RPC_CALL_FINISHING);
    break;
  case RPC_CALL_CLOSED:
    assert(call->state != RPC_CALL_CLOSED);
    break;
  case RPC_CALL_HEADERS:
  default:
    assert(!"calls are born in HEADERS and never return to it");
  }
  /* Authenticating, the body is framed but its credit held (the caller may be refused);
   * reading, framed and credited; otherwise dropped as it arrives (leaving AUTHENTICATING
   * returns the credit held either way). */
  if (to == RPC_CALL_AUTHENTICATING)
    h2_stream_set_input(&call->stream, H2_IN_HOLD);
  else if (to == RPC_CALL_READING || to == RPC_CALL_STREAMING)
    h2_stream_set_input(&call->stream, H2_IN_READ);
  else
    h2_stream_set_input(&call->stream, H2_IN_DISCARD);
  /* A waiting call runs when its connection can take output again. */
  if (to == RPC_CALL_WAITING || call->state == RPC_CALL_WAITING)
    h2_stream_want_writable(&call->stream,
                            to == RPC_CALL_WAITING || call->on_writable != NULL || call->msg_held);
  if (to >= RPC_CALL_RUNNING && call->state < RPC_CALL_RUNNING) {
    /* The request's bytes no longer count; its decoded message does, once the caller
     * (call_dispatch) says so, until the stream ends. */
    free(call->msg.data);
    call->msg.data = NULL;
    h2_stream_input_free(&call->stream);
  }
  call->state = to;
  if (to >= RPC_CALL_FINISHING)
    call_headers_drop(call, 1); /* answered: however long the stream stays open */
}

/* ---- arenas ------------------------------------------------------------------------------ */

/* A chunk's first size fits glibc's per-thread cache (requests up to 1032 bytes), so a call
 * that needs no more costs one fast malloc(); later chunks double up to a maximum, and an
 * allocation larger than a quarter of that gets a chunk of its own behind the newest, which
 * stays in use. */
#define ARENA_FIRST (1024 - sizeof(rpc_arena_chunk_t))
#if defined(__SANITIZE_ADDRESS__)
/* With AddressSanitizer (the test build) a chunk's free space, and the gap an arena asks for
 * after each allocation, stay poisoned, so that writing past an allocation is reported. */
#define ARENA_GAP _Alignof(max_align_t)
#else
#define ASAN_POISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#define ASAN_UNPOISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#define ARENA_GAP 0
#endif

static rpc_arena_chunk_t *arena_chunk(size_t size) {
  rpc_arena_chunk_t *c = malloc(sizeof(*c) + size);
  if (c != NULL) {
    c->size = size;
    ASAN_POISON_MEMORY_REGION(c->data, size);
  }
  return c;
}

/* size bytes aligned to align (a power of two, at most max_align_t's), followed by gap
 * unused bytes; chunks grow up to max. NULL when out of memory. */
static void *arena_alloc(rpc_arena_t *a, size_t size, size_t align, size_t gap, size_t max) {
  rpc_arena_chunk_t *c = a->chunks;
  size_t off = c ? (a->off + align - 1) & ~(align - 1) : 0, need = size + gap;

  if (need < size)
    return NULL; /* overflow */
  if (c == NULL || off > c->size || need > c->size - off) {
    size_t csize = c == NULL ? ARENA_FIRST : c->size < max / 2 ? c->size * 2 : max;
    rpc_arena_chunk_t *n;

    if (need > max / 4) {
      if ((n = arena_chunk(size)) == NULL)
        return NULL;
      a->bytes += sizeof(*n) + size;
      ASAN_UNPOISON_MEMORY_REGION(n->data, size);
      if (c != NULL) {
        n->next = c->next;
        c->next = n;
      } else {
        n->next = NULL;
        a->chunks = n;
        a->off = size; /* full */
      }
      return n->data;
    }
    while (csize < need)
      csize *= 2;
    if ((n = arena_chunk(csize)) == NULL)
      return NULL;
    a->bytes += sizeof(*n) + csize;
    n->next = c;
    a->chunks = n;
    c = n;
    off = 0;
  }
  a->off = off + need;
  ASAN_UNPOISON_MEMORY_REGION((char *)c->data + off, size);
  return (char *)c->data + off;
}

static void arena_release(rpc_arena_t *a) {
  while (a->chunks) {
    rpc_arena_chunk_t *next = a->chunks->next;
    free(a->chunks);
    a->chunks = next;
  }
  a->off = 0;
  a->bytes = 0;
}

/* The request's decode arena: protobuf-c's allocator, within a budget. */
#define RPC_DECODE_CHUNK (64 * 1024) /* the largest chunk */

static void *decode_alloc(void *ad, size_t size) {
  rpc_decode_arena_t *a = ad;
  /* Natural alignment from the size (an 8-byte multiple may hold pointers or int64; a 1-byte
   * string needs none), so a million empty strings cost a byte each, not eight. */
  size_t align = size & (~size + 1);
  void *p;

  if (align == 0 || align > 8)
    align = 8;
  if (size > a->budget - a->used) {
    a->over = 1;
    return NULL;
  }
  if ((p = arena_alloc(&a->arena, size, align, 0, RPC_DECODE_CHUNK)) == NULL)
    return NULL;
  if (a->arena.bytes > a->room) {
    a->over_room = 1; /* what was allocated goes with the arena */
    return NULL;
  }
  a->used += size;
  return p;
}

static void decode_free(void *ad, void *p) {
  (void)ad;
  (void)p; /* everything goes with the call */
}

static void decode_arena_release(rpc_decode_arena_t *a) {
  arena_release(&a->arena);
  a->used = 0;
  a->over = a->over_room = 0;
}

static void meta_free(rpc_call_t *call) {
  rpc_meta_t *m = call->meta;

  while (m) {
    rpc_meta_t *next = m->next;
    free(m); /* its strings with it */
    m = next;
  }
  call->meta = NULL;
}

/* What the call kept of its request headers is done with: up to --max-header-bytes of them
 * (64 KiB decoded from a few bytes of HPACK references), so it goes as soon as it can rather
 * than with the stream. The path stays: it names the call in the log. meta: the metadata
 * too, which a handler may otherwise read. */
static void call_headers_drop(rpc_call_t *call, int meta) {
  if (meta)
    meta_free(call);
  free(call->content_type);
  free(call->method);
  free(call->encoding);
  free(call->timeout);
  call->content_type = call->method = call->encoding = call->timeout = NULL;
}

static void call_free(uv_handle_t *h) {
  rpc_call_t *call = (rpc_call_t *)((char *)h - offsetof(rpc_call_t, timer));

  metrics_stream(call->srv->metrics, -1);
  meta_free(call);
  arena_release(&call->arena);
  decode_arena_release(&call->decode_arena);
  server_inbound_release(call->srv, call->srv_kept);
  key_counts_release(&call->srv->user_inbound, call->stream.user, call->user_kept);
  call_public_uncount(call);
  h2_stream_free(&call->stream);
  free(call->msg.data);
  free(call->path);
  free(call->content_type);
  free(call->method);
  free(call->encoding);
  free(call->timeout);
  free(call);
}

static const h2_stream_ops_t call_stream_ops;

int rpc_call_accept(server_t *srv, uint64_t conn_id, int32_t stream_id, h2_stream_t **out) {
  rpc_call_t *call = calloc(1, sizeof(*call));

  if (call == NULL)
    return -ENOMEM;
  call->state = RPC_CALL_HEADERS;
  call->refs = 1;
  call->srv = srv;
  h2_stream_init(&call->stream, &call_stream_ops, srv->cfg.max_message_bytes);
  snprintf(call->id, sizeof(call->id), "%llu#%d", (unsigned long long)conn_id, stream_id);
  call->started_ns = uv_hrtime();
  metrics_stream(srv->metrics, +1);
  uv_timer_init(srv->loop, &call->timer);
  *out = &call->stream;
  return 0;
}

uint64_t rpc_call_conn_id(const rpc_call_t *call) {
  return h2_stream_conn_id(&call->stream);
}

void rpc_call_db_started(rpc_call_t *call, db_req_t *q) {
  rpc_call_db_started_on(call, NULL, q);
}

void rpc_call_db_started_on(rpc_call_t *call, db_pool_t *pool, db_req_t *q) {
  call->db_req = q;
  call->db_req_pool = pool;
}

void rpc_call_db_ended(rpc_call_t *call, db_req_t *q) {
  if (call->db_req == q) {
    call->db_req = NULL;
    call->db_req_pool = NULL;
  }
}

void rpc_call_set_read_pool(rpc_call_t *call, db_pool_t *pool, void *note) {
  call->read_pool = pool;
  call->read_note = note;
}

void *rpc_call_read_note(const rpc_call_t *call) {
  return call->read_note;
}

void rpc_call_set_refusal_note(rpc_call_t *call, void *note) {
  call->refusal_note = note;
}

void *rpc_call_refusal_note(const rpc_call_t *call) {
  return call->refusal_note;
}

db_pool_t *rpc_call_read_pool(const rpc_call_t *call) {
  return call->read_pool ? call->read_pool : call->srv->db;
}

/* The call ended before its database request: stop that, so that a cancelled or expired call
 * frees its place in the queue or its pool connection (db_cancel). */
static void call_cancel_db(rpc_call_t *call) {
  db_req_t *q = call->db_req;
  db_pool_t *pool = call->db_req_pool ? call->db_req_pool : call->srv->db;

  call->db_req = NULL;
  call->db_req_pool = NULL;
  if (q && pool)
    db_cancel(pool, q);
}

void rpc_call_ref(rpc_call_t *call) {
  call->refs++;
}

void rpc_call_unref(rpc_call_t *call) {
  if (--call->refs > 0)
    return;
  /* The timer handle is the last thing the loop knows of the call: free in its close. */
  uv_close((uv_handle_t *)&call->timer, call_free);
}

server_t *rpc_call_server(rpc_call_t *call) {
  return call->srv;
}

const rpc_principal_t *rpc_call_principal(const rpc_call_t *call) {
  return call->m && !call->m->public_method ? &call->principal : NULL;
}

const rpc_method_t *rpc_call_method(const rpc_call_t *call) {
  return call->m;
}

const char *rpc_call_id(const rpc_call_t *call) {
  return call->id;
}

int rpc_call_done(const rpc_call_t *call) {
  return call->state >= RPC_CALL_FINISHING;
}

const char *rpc_call_metadata(const rpc_call_t *call, const char *name) {
  for (const rpc_meta_t *m = call->meta; m; m = m->next)
    if (strcmp(m->name, name) == 0)
      return m->value;
  return NULL;
}

void rpc_call_on_cancel(rpc_call_t *call, rpc_cancel_fn cb, void *arg) {
  call->on_cancel = cb;
  call->cancel_arg = arg;
}

void rpc_call_on_writable(rpc_call_t *call, rpc_writable_fn cb, void *arg) {
  call->on_writable = cb;
  call->writable_arg = arg;
  h2_stream_want_writable(&call->stream,
                          cb != NULL || call->state == RPC_CALL_WAITING || call->msg_held);
}

/* Each allocation used to be a malloc() of its own, some forty per GetClue with the row's
 * strings and the reply's messages, and malloc was a fifth of the server's CPU. */
#define RPC_ARENA_MAX (16 * 1024) /* the largest chunk */

void *rpc_call_alloc(rpc_call_t *call, size_t size) {
  void *p = arena_alloc(&call->arena, size, _Alignof(max_align_t), ARENA_GAP, RPC_ARENA_MAX);
  if (p != NULL)
    memset(p, 0, size);
  return p;
}

char *rpc_call_strdup(rpc_call_t *call, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = rpc_call_alloc(call, n);
  if (p)
    memcpy(p, s, n);
  return p;
}

char *rpc_call_printf(rpc_call_t *call, const char *fmt, ...) {
  va_list ap;
  int n;
  char *p;

  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || (p = rpc_call_alloc(call, (size_t)n + 1)) == NULL)
    return NULL;
  va_start(ap, fmt);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return p;
}

char *rpc_call_i64(rpc_call_t *call, int64_t v) {
  char buf[24], *p = buf + sizeof(buf), *out;
  uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
  size_t n;

  *--p = '\0';
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (v < 0)
    *--p = '-';
  n = (size_t)(buf + sizeof(buf) - p);
  if ((out = rpc_call_alloc(call, n)) != NULL)
    memcpy(out, p, n);
  return out;
}

static char *dupn(const uint8_t *s, size_t n) {
  char *p = malloc(n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

/* Request headers the call reads once, each into a field of its own (a char *). A repeat
 * would leave which one counts to the order of the fields: the call is refused. */
#define ONCE(name, field)                                                                          \
  { name, sizeof(name) - 1, offsetof(rpc_call_t, field) }
static const struct {
  const char *name;
  size_t len;
  size_t field; /* offsetof(rpc_call_t, ...) */
} call_once_headers[] = {
    ONCE(":path", path),
    ONCE(":method", method),
    ONCE("content-type", content_type),
    ONCE("grpc-encoding", encoding),
    ONCE("grpc-timeout", timeout),
};
#undef ONCE

/* The stream's header event: 0, or -1 to reset the stream. */
static int call_on_header(h2_stream_t *s, const uint8_t *name, size_t namelen, const uint8_t *value,
                          size_t valuelen) {
  rpc_call_t *call = call_of(s);
  const char *prev;

  /* Count what the decoder produced, not what crossed the wire: one HPACK reference can
   * stand for a 4 KB field, so the wire size says nothing about the memory a list costs. */
  call->header_bytes += namelen + valuelen + 32;
  call->header_count++;
  if (call->headers_over) {
    /* Refused already (RESOURCE_EXHAUSTED when the block ends); nothing more is kept. A
     * block far past the limit is an attack, not a client with big metadata: at 4 times it,
     * have nghttp2 skip the rest. It still decodes it (HPACK state is the connection's) but
     * no longer validates and hands over each field, so 40,000 references to a 4 KB field
     * cost table look-ups, not 160 MB of work. It resets the stream (INTERNAL_ERROR). */
    if (call->header_bytes > 4 * call->srv->cfg.max_header_list_bytes ||
        call->header_count > 4 * call->srv->cfg.max_header_count) {
      log_info("call %s: request headers past 4 times the limit (%zu bytes in %u fields "
               "decoded): stream reset, the rest of the block skipped",
               call->id, call->header_bytes, call->header_count);
      return -1;
    }
    return 0;
  }
  if (call->header_bytes > call->srv->cfg.max_header_list_bytes ||
      call->header_count > call->srv->cfg.max_header_count) {
    call->headers_over = 1;
    meta_free(call); /* the call is refused: drop what it kept */
    return 0;
  }
  for (size_t i = 0; i < sizeof(call_once_headers) / sizeof(call_once_headers[0]); i++) {
    char **slot = (char **)((char *)call + call_once_headers[i].field);
    if (call_once_headers[i].len != namelen ||
        memcmp(call_once_headers[i].name, name, namelen) != 0)
      continue;
    if (*slot) {
      call->repeated = call_once_headers[i].name;
      return 0;
    }
    *slot = dupn(value, valuelen);
    return *slot ? 0 : -1;
  }
  if (namelen > 0 && name[0] == ':')
    return 0; /* :scheme, :authority */
  if (namelen == 13 && memcmp(name, "authorization", 13) == 0 &&
      (prev = rpc_call_metadata(call, "authorization")) != NULL) {
    /* One caller per call: of two tokens, the one that counted would be the last sent. The
     * same one twice (call credentials and a header set by hand) names one caller. */
    if (strlen(prev) != valuelen || memcmp(prev, value, valuelen) != 0)
      call->repeated = "authorization";
    return 0;
  }
  {
    /* One allocation for the entry and both strings. */
    rpc_meta_t *m = malloc(sizeof(*m) + namelen + 1 + valuelen + 1);
    if (m == NULL)
      return -1;
    m->name = (char *)(m + 1);
    memcpy(m->name, name, namelen);
    m->name[namelen] = '\0';
    m->value = m->name + namelen + 1;
    memcpy(m->value, value, valuelen);
    m->value[valuelen] = '\0';
    m->next = call->meta;
    call->meta = m;
  }
  return 0;
}

static void call_deadline(uv_timer_t *t) {
  rpc_call_t *call = (rpc_call_t *)((char *)t - offsetof(rpc_call_t, timer));
  rpc_cancel_fn cb = call->on_cancel;

  if (call->state >= RPC_CALL_FINISHING)
    return;
  log_info("call %s %s: deadline of %llu ms exceeded", call->id, call->path ? call->path : "?",
           (unsigned long long)call->deadline_ms);
  call->on_cancel = NULL;
  call_finish(call, 200, GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
  call_cancel_db(call);
  if (cb)
    cb(call, call->cancel_arg);
}

/* A public stream (Health/Watch) needs no caller, so nothing else ends it: it ends at
 * --max-unauth-stream-age with UNAVAILABLE, which gRPC clients take as "call again". */
static void call_stream_age(uv_timer_t *t) {
  rpc_call_t *call = (rpc_call_t *)((char *)t - offsetof(rpc_call_t, timer));
  rpc_cancel_fn cb = call->on_cancel;
  char msg[160];

  if (call->state >= RPC_CALL_FINISHING)
    return;
  snprintf(msg, sizeof(msg),
           "stream open for its maximum age of %llu ms (--max-unauth-stream-age); call again",
           (unsigned long long)call->srv->cfg.unauth_stream_age_ms);
  call->on_cancel = NULL;
  call_finish(call, 200, GRPC_UNAVAILABLE, msg);
  if (cb)
    cb(call, call->cancel_arg);
}

/* Calls to methods that need no token hold memory with nobody to answer for it: a stream
 * (Health/Watch, reflection) for as long as it is open, and a unary call (Health/Check) while
 * its answer waits for its client to take it (a client that grants no window and reads
 * nothing kept 100 of them per connection, on every connection it could open). Both count
 * in srv->public_streams, bounded by --max-public-streams over all connections and by a share
 * of it per peer address (one stranger cannot refuse everyone else's Health/Watch). A stream
 * past either bound is refused. So is a unary call, but only on a connection that holds
 * answers its client has not taken: a client that reads its answers is answered whatever
 * strangers hold, and a connection passes the bounds by one call at most.
 * Returns 1 if the call may go on, 0 if it was refused. */
static int call_public_admit(rpc_call_t *call, int stream) {
  server_t *srv = call->srv;
  unsigned share = server_max_public_streams_per_addr(&srv->cfg);
  const char *then =
      stream ? "retry later" : "read the answers this connection holds, or retry later";
  char msg[300];

  if (!stream && !h2_stream_conn_owes_public(&call->stream))
    return 1;
  if (srv->public_streams >= srv->cfg.max_public_streams) {
    snprintf(msg, sizeof(msg),
             "%u streams of methods that need no token, and answers to them not yet read, are "
             "held on this server, its limit (--max-public-streams); %s",
             srv->cfg.max_public_streams, then);
    call_finish(call, 200, GRPC_RESOURCE_EXHAUSTED, msg);
    return 0;
  }
  if (key_counts_get(&srv->addr_public_streams, h2_stream_peer_key(&call->stream)) >= share) {
    snprintf(msg, sizeof(msg),
             "%u streams of methods that need no token, and answers to them not yet read, are "
             "held for your address, its share of this server's "
             "(--max-public-streams-per-address); %s",
             share, then);
    call_finish(call, 200, GRPC_RESOURCE_EXHAUSTED, msg);
    return 0;
  }
  return 1;
}

/* Count the call in srv->public_streams (call_public_admit) until call_public_uncount().
 * Returns 0 or -ENOMEM. */
static int call_public_count(rpc_call_t *call) {
  uint64_t key = h2_stream_peer_key(&call->stream);

  if (key_counts_add(&call->srv->addr_public_streams, key, 1) != 0)
    return -ENOMEM;
  call->public_key = key;
  call->srv->public_streams++;
  call->public_stream = 1;
  return 0;
}

static void call_public_uncount(rpc_call_t *call) {
  if (!call->public_stream)
    return;
  call->srv->public_streams--;
  key_counts_release(&call->srv->addr_public_streams, call->public_key, 1);
  call->public_stream = 0;
}

static void call_on_headers_done(h2_stream_t *s) {
  rpc_call_t *call = call_of(s);
  uint64_t ms;

  if (call->state != RPC_CALL_HEADERS)
    return;
  if (call->headers_over) {
    char msg[200];
    snprintf(
        msg, sizeof(msg),
        "request headers too large: %zu bytes in %u fields decoded (limits %zu bytes, %u fields)",
        call->header_bytes, call->header_count, call->srv->cfg.max_header_list_bytes,
        call->srv->cfg.max_header_count);
    call_finish(call, 200, GRPC_RESOURCE_EXHAUSTED, msg);
    return;
  }
  if (call->repeated) {
    char msg[96];
    /* A malformed request: HTTP 400, which gRPC maps to INTERNAL (as grpc-go answers it).
     * Two tokens are a caller that cannot be told, refused as an unusable token is. */
    if (strcmp(call->repeated, "authorization") == 0) {
      call_finish(call, 200, GRPC_UNAUTHENTICATED,
                  "repeated authorization header: a call carries one Bearer token");
      return;
    }
    snprintf(msg, sizeof(msg), "repeated request header %s", call->repeated);
    call_finish(call, 400, GRPC_INTERNAL, msg);
    return;
  }
  /* A preflight, a console file, or (HTTP/1.1) another method: the transport answers it. */
  if (h2_stream_answer_http(&call->stream)) {
    call_set_state(call, RPC_CALL_FINISHING);
    return;
  }
  if (call->method == NULL || strcmp(call->method, "POST") != 0) {
    call_finish(call, 405, GRPC_UNIMPLEMENTED, "gRPC requires the POST method");
    return;
  }
  /* application/grpc (HTTP/2 only), application/grpc-web or application/grpc-web-text, each
   * optionally "+proto" and ";parameters": +json is not served. */
  if (h2_stream_protocol(&call->stream) == WEB_PROTO_NONE) {
    call_finish(call, 415, GRPC_UNKNOWN,
                h2_stream_conn_is_h1(&call->stream)
                    ? "content-type must be application/grpc-web or application/grpc-web-text "
                      "over HTTP/1.1"
                    : "content-type must be application/grpc");
    return;
  }
  call->m = call->path ? rpc_table_find(call->srv->methods, call->path, strlen(call->path)) : NULL;
  /* A gRPC call starts here, as go-grpc-prometheus's interceptor sees it: what the transport
   * refused above (header limits, a repeated header, not POST, not a gRPC content-type, a
   * stream reset before its headers ended) reached no method, and is counted neither as
   * started nor as handled; its refusal is logged. Every handled call was started once. */
  call->started = 1;
  metrics_call_started(call->srv->metrics, call->m);
  if (call->m == NULL) {
    char msg[300];
    snprintf(msg, sizeof(msg), "unknown method %.200s", call->path ? call->path : "(no :path)");
    call_finish(call, 200, GRPC_UNIMPLEMENTED, msg);
    return;
  }
  if (call->encoding && strcmp(call->encoding, "identity") != 0) {
    char msg[200];
    snprintf(msg, sizeof(msg), "message encoding %.100s is not supported; use identity",
             call->encoding);
    call_finish(call, 200, GRPC_UNIMPLEMENTED, msg);
    return;
  }
  {
    /* A compressed body (gRPC-Web's whole-body Content-Encoding) would reach the decoder as
     * garbage: say what is wrong instead. */
    const char *ce = rpc_call_metadata(call, "content-encoding");
    if (ce && strcmp(ce, "identity") != 0) {
      char msg[200];
      snprintf(msg, sizeof(msg),
               "content-encoding %.100s is not supported; send the body uncompressed", ce);
      call_finish(call, 200, GRPC_UNIMPLEMENTED, msg);
      return;
    }
  }
  /* What the method takes: a public one small requests, whole in a bounded time. */
  h2_stream_expect(
      &call->stream,
      call->m->public_method ? RPC_PUBLIC_MAX_MESSAGE : call->srv->cfg.max_message_bytes,
      call->m->client_streaming, call->m->public_method, call->srv->cfg.handshake_timeout_ms);
  if (call->timeout) {
    if (grpc_timeout_parse(call->timeout, strlen(call->timeout), &ms) != 0) {
      call_finish(call, 200, GRPC_INVALID_ARGUMENT, "malformed grpc-timeout header");
      return;
    }
    call->deadline_ms = ms ? ms : 1;
    uv_timer_start(&call->timer, call_deadline, call->deadline_ms, 0);
  }
  /* Every header the call checks has been checked. A public method's handler reads no
   * metadata, and its request may take --handshake-timeout to arrive with no caller
   * answering for it: nothing of its headers is kept meanwhile. */
  call_headers_drop(call, call->m->public_method);
  /* Authenticate on the headers alone: a caller without a valid token is refused before any
   * of its body is decoded, and what it still uploads is dropped as it arrives. */
  if (call->m->public_method) {
    uint64_t age = call->srv->cfg.unauth_stream_age_ms;
    int stream = call->m->server_streaming || call->m->client_streaming;
    if (!call_public_admit(call, stream))
      return;
    if (stream && call_public_count(call) != 0) {
      call_finish(call, 200, GRPC_RESOURCE_EXHAUSTED, "out of memory");
      return;
    }
    if (call->m->server_streaming && age && (call->deadline_ms == 0 || call->deadline_ms > age))
      uv_timer_start(&call->timer, call_stream_age, age, 0);
    call_set_state(call, RPC_CALL_READING);
    return;
  }
  if (call->srv->schema_refusing) {
    call_finish(call, 200, GRPC_UNAVAILABLE, schema_refusal(call->srv));
    return;
  }
  call_set_state(call, RPC_CALL_AUTHENTICATING);
  rpc_auth_start(call);
}

/* A client-streaming call's request message: decoded and handed to the handler at once. */
static void call_stream_message(rpc_call_t *call, grpc_message_t *msg) {
  ProtobufCMessage *req;
  char why[200];

  assert(call->m->public_method);
  if (call->srv->state != SERVER_RUNNING) {
    free(msg->data);
    call_finish(call, 200, GRPC_UNAVAILABLE, "server shutting down");
    return;
  }
  if (h2_stream_out_wait(&call->stream)) {
    /* Its connection's public share or the server's public total of queued answers is
     * full (a client that asks and does not read): this message waits, undecoded and still
     * counted as kept, and no further one is read, until the answers drain. */
    call->msg = *msg;
    call->msg_held = 1;
    h2_stream_input_pause(&call->stream, 1);
    h2_stream_want_writable(&call->stream, 1);
    return;
  }
  if (rpc_msg_check(call->m->input, msg->data, msg->len, why, sizeof(why)) != 0) {
    free(msg->data);
    h2_stream_input_taken(&call->stream, msg->len + GRPC_FRAME_PREFIX);
    call_finish(call, 200, GRPC_INVALID_ARGUMENT, why);
    return;
  }
  req = protobuf_c_message_unpack(call->m->input, NULL, msg->len, msg->data);
  free(msg->data);
  /* The message is taken: its bytes no longer count as an unfinished request. */
  h2_stream_input_taken(&call->stream, msg->len + GRPC_FRAME_PREFIX);
  if (req == NULL) {
    char buf[200];
    snprintf(buf, sizeof(buf), "request is not a valid %s message", call->m->input->name);
    call_finish(call, 200, GRPC_INVALID_ARGUMENT, buf);
    return;
  }
  if (call->state != RPC_CALL_STREAMING)
    call_set_state(call, RPC_CALL_STREAMING);
  rpc_call_ref(call);
  call->m->handler(call, req);
  protobuf_c_message_free_unpacked(req, NULL);
  rpc_call_unref(call);
}

/* A fault of the request's body: the call ends with it, or, while its token is looked up,
 * the first is kept and told once the caller is known (rpc_call_authenticated()): what a body
 * holds is no stranger's business, and its answer must not depend on whether the body came
 * with the headers or after the lookup. Bounds (RESOURCE_EXHAUSTED) and deadlines are told at
 * once. */
static void call_body_fault(rpc_call_t *call, int code, const char *why) {
  if (call->state != RPC_CALL_AUTHENTICATING || code == GRPC_RESOURCE_EXHAUSTED ||
      code == GRPC_DEADLINE_EXCEEDED) {
    call_finish(call, 200, code, why);
    return;
  }
  if (call->body_code == 0) {
    call->body_code = code;
    snprintf(call->body_why, sizeof(call->body_why), "%s", why);
  }
}

/* The stream's message event: one whole request message, ours to free. */
static void call_on_message(h2_stream_t *s, grpc_message_t *msg) {
  rpc_call_t *call = call_of(s);

  metrics_msg_received(call->srv->metrics, call->m);
  if (msg->compressed) {
    free(msg->data);
    call_body_fault(call, GRPC_UNIMPLEMENTED,
                    "compressed messages are not supported; use identity encoding");
    return;
  }
  if (call->m != NULL && call->m->client_streaming) {
    call_stream_message(call, msg);
    return;
  }
  if (++call->nmsgs > 1) {
    free(msg->data);
    call_body_fault(call, GRPC_INVALID_ARGUMENT, "more than one request message for this method");
    return;
  }
  call->msg = *msg;
}

/* The stream's input_error event: the body cannot be read on. */
static void call_on_input_error(h2_stream_t *s, int code, const char *why) {
  call_body_fault(call_of(s), code, why);
}

/* What a request's decode may take with nothing else kept: the smallest limit. */
static size_t room_whole(const rpc_call_t *call) {
  const server_config_t *cfg = &call->srv->cfg;
  size_t room = cfg->max_conn_inbound, user = server_max_user_inbound(call->srv);

  if (call->m->public_method)
    return room;
  if (cfg->max_inbound < room)
    room = cfg->max_inbound;
  return user < room ? user : room;
}

/* Authenticated (or public) and the client half-closed: check the framing, decode the one
 * request message into the call's arena, run the handler. */
static void call_dispatch(rpc_call_t *call) {
  rpc_decode_arena_t *a = &call->decode_arena;
  ProtobufCAllocator alloc = {decode_alloc, decode_free, a};

  char why[160];

  if (h2_stream_input_partial(&call->stream, why, sizeof(why))) {
    call_finish(call, 200, GRPC_INVALID_ARGUMENT, why);
    return;
  }
  if (call->m->client_streaming) { /* the client half-closed: the handler ends the call */
    call_set_state(call, RPC_CALL_RUNNING);
    call->m->handler(call, NULL);
    return;
  }
  if (call->nmsgs == 0) {
    call_finish(call, 200, GRPC_INVALID_ARGUMENT, "request message missing");
    return;
  }
  if (call->m->public_method ? h2_stream_congested(&call->stream)
                             : h2_stream_out_wait(&call->stream)) {
    /* The peer is not reading what this connection already owes it, or the replies queued
     * for this user's calls (--max-user-outbound) or for all authenticated calls
     * (--max-outbound) are at their bound: the call waits (its request undecoded) until the
     * output drains, rather than adding to it. Calls already running finish; how many run
     * at once is bounded by --db-queue-per-conn and --db-queue-per-user. A public unary
     * answer (Health/Check) is a few bytes: only its connection's congestion holds it. */
    if (call->state == RPC_CALL_READING)
      call_set_state(call, RPC_CALL_WAITING);
    return;
  }
  if (!call->m->public_method && !rpc_auth_current(call)) {
    /* Its headers were authenticated before a revocation came, or long ago (a body that took
     * its time): the token is looked up again before the request runs, and the call goes on
     * from here (rpc_call_rechecked) or is refused as a fresh one would be. */
    rpc_auth_recheck(call);
    return;
  }
  if (!call->m->public_method && call->srv->schema_refusing) {
    /* Authenticated before the schema check found the difference. */
    free(call->msg.data);
    call->msg.data = NULL;
    call_finish(call, 200, GRPC_UNAVAILABLE, schema_refusal(call->srv));
    return;
  }
  if (rpc_msg_check(call->m->input, call->msg.data, call->msg.len, why, sizeof(why))) {
    free(call->msg.data);
    call->msg.data = NULL;
    call_finish(call, 200, GRPC_INVALID_ARGUMENT, why);
    return;
  }
  a->budget = RPC_DECODE_FACTOR * call->msg.len + RPC_DECODE_SLACK;
  a->room = h2_stream_input_room(&call->stream);
  call->req = protobuf_c_message_unpack(call->m->input, &alloc, call->msg.len, call->msg.data);
  free(call->msg.data);
  call->msg.data = NULL;
  if (call->req == NULL) {
    char buf[240];
    int exhausted = a->over || a->over_room;
    if (a->over)
      snprintf(buf, sizeof(buf),
               "request %s of %zu bytes decodes to more than %zu bytes; send fewer, larger fields",
               call->m->input->name, call->msg.len, a->budget);
    else if (a->over_room && a->room >= room_whole(call))
      snprintf(buf, sizeof(buf),
               "request %s of %zu bytes decodes to more than the %zu bytes a connection may "
               "keep (--max-conn-inbound, --max-inbound, --max-user-inbound); send fewer, "
               "larger fields",
               call->m->input->name, call->msg.len, a->room);
    else if (a->over_room)
      snprintf(buf, sizeof(buf),
               "request %s of %zu bytes decodes to more than the %zu bytes its connection "
               "(--max-conn-inbound), the server (--max-inbound) or your calls "
               "(--max-user-inbound) may still keep; try again once earlier calls end",
               call->m->input->name, call->msg.len, a->room);
    else
      snprintf(buf, sizeof(buf), "request is not a valid %s message", call->m->input->name);
    decode_arena_release(a);
    call_finish(call, 200, exhausted ? GRPC_RESOURCE_EXHAUSTED : GRPC_INVALID_ARGUMENT, buf);
    return;
  }
  if (call->m->server_streaming && call->srv->state != SERVER_RUNNING) {
    /* A stream opened before GOAWAY whose request completes during the drain: a streaming
     * handler would keep it open until the grace period cuts it off, holding up the exit.
     * End it with the status the shutdown gave the streams already running. */
    call_finish(call, 200, GRPC_UNAVAILABLE, "server shutting down");
    return;
  }
  call_set_state(call, RPC_CALL_RUNNING);
  /* The connection counts the decoded request while the stream lasts, the server until it is
   * freed (call_free): a call its client reset may still wait for a statement it shares. */
  h2_stream_input_keep(&call->stream, a->arena.bytes);
  if (!call->m->public_method) {
    call->srv_kept = a->arena.bytes;
    call->srv->inbound += call->srv_kept;
    if (key_counts_add(&call->srv->user_inbound, call->stream.user, call->srv_kept) == 0)
      call->user_kept = call->srv_kept;
  }
  call->m->handler(call, call->req);
}

void rpc_call_authenticated(rpc_call_t *call) {
  uint64_t user = call->principal.user_id > 0 ? (uint64_t)call->principal.user_id : 0;
  char why[256];

  if (call->state != RPC_CALL_AUTHENTICATING)
    return;
  /* What arrived while the token was looked up is counted now, and checked as DATA is: the
   * flow-control credit held bounds it per stream, not over all of a user's streams. */
  if (h2_stream_held_over(&call->stream, user, why, sizeof(why))) {
    call_finish(call, 200, GRPC_RESOURCE_EXHAUSTED, why);
    return;
  }
  if (call->body_code != 0) { /* call_body_fault() */
    call_finish(call, 200, call->body_code, call->body_why);
    return;
  }
  /* Its body counts against its user from now on (--max-user-inbound), and its connection
   * is the user's (--max-conns-per-user). */
  call->stream.user = user;
  h2_conn_claim(call->stream.conn, call->stream.user);
  call_set_state(call, RPC_CALL_READING);
  if (call->remote_ended)
    call_dispatch(call);
  h2_stream_flush(&call->stream); /* the credit held for the body, at least */
}

void rpc_call_rechecked(rpc_call_t *call) {
  if (call->state == RPC_CALL_READING || call->state == RPC_CALL_WAITING)
    call_dispatch(call);
}

static void call_on_end(h2_stream_t *s) {
  rpc_call_t *call = call_of(s);

  call->remote_ended = 1;
  if (call->state == RPC_CALL_HEADERS) { /* no HEADERS end seen: cannot happen with nghttp2 */
    call_finish(call, 400, GRPC_INTERNAL, "request ended before its headers");
    return;
  }
  if (call->state == RPC_CALL_READING || call->state == RPC_CALL_STREAMING)
    call_dispatch(call);
}

/* The stream's closed event: reset or closed by the peer, or its connection went. */
static void call_on_closed(h2_stream_t *s, uint32_t error_code, const char *conn_reason) {
  rpc_call_t *call = call_of(s);
  rpc_call_state_t was = call->state;
  rpc_cancel_fn cb = call->on_cancel;

  call_set_state(call, RPC_CALL_CLOSED);
  call->on_cancel = NULL;
  call->on_writable = NULL;
  uv_timer_stop(&call->timer);
  call_cancel_db(call);
  call_public_uncount(call); /* its stream, or its answer, is gone */
  if (was < RPC_CALL_FINISHING) {
    if (call->started)
      metrics_call_handled(call->srv->metrics, call->m, GRPC_CANCELLED,
                           uv_hrtime() - call->started_ns);
    if (conn_reason)
      log_info("call %s %s: ended with its connection: %s", call->id, call->path ? call->path : "?",
               conn_reason);
    else
      log_info("call %s %s: cancelled by the peer (HTTP/2 error %u)", call->id,
               call->path ? call->path : "?", error_code);
    if (cb)
      cb(call, call->cancel_arg);
  }
  rpc_call_unref(call);
}

/* The stream's writable event: the connection can take output again. A waiting call runs;
 * a streaming handler produces more. */
static void call_on_writable(h2_stream_t *s) {
  rpc_call_t *call = call_of(s);

  if (call->msg_held && (call->state == RPC_CALL_READING || call->state == RPC_CALL_STREAMING)) {
    grpc_message_t msg = call->msg;
    if (h2_stream_out_wait(&call->stream))
      return; /* still full: woken again once it drains */
    call->msg_held = 0;
    call->msg.data = NULL;
    h2_stream_want_writable(&call->stream, call->on_writable != NULL);
    call_stream_message(call, &msg);
    if (!call->msg_held && call->state < RPC_CALL_FINISHING)
      h2_stream_input_pause(&call->stream, 0); /* the messages that came meanwhile */
    return;
  }
  if (call->state == RPC_CALL_WAITING)
    call_dispatch(call);
  else if ((call->state == RPC_CALL_RUNNING || call->state == RPC_CALL_STREAMING) &&
           call->on_writable)
    call->on_writable(call, call->writable_arg);
}

static const h2_stream_ops_t call_stream_ops = {
    .header = call_on_header,
    .headers_done = call_on_headers_done,
    .message = call_on_message,
    .input_error = call_on_input_error,
    .end = call_on_end,
    .closed = call_on_closed,
    .writable = call_on_writable,
};

/* ---- response ---------------------------------------------------------------------- */

/* The request's request_id field (a client-chosen UUID), if its message type has one. */
static const char *call_request_id(const rpc_call_t *call) {
  const ProtobufCFieldDescriptor *f;

  if (call->req == NULL || call->m == NULL ||
      (f = protobuf_c_message_descriptor_get_field_by_name(call->m->input, "request_id")) == NULL ||
      f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
    return NULL;
  return *(const char *const *)((const char *)call->req + f->offset);
}

/* What a call's log line shows of its path, and of its message (a status message is
 * clued's own, but may quote what the client sent). */
#define CALL_LOG_PATH_MAX 200
#define CALL_LOG_MESSAGE_MAX 600

/* One line per finished call: failures always; with --log-format json every call, as an
 * access log with the fields a log pipeline indexes. */
static void call_log_finish(const rpc_call_t *call, int code, const char *msg) {
  const char *rid = call_request_id(call);
  /* The path as the client sent it, which an unknown method's may be up to
   * --max-header-bytes long: cut, so that --log-rate bounds the log's bytes as well as its
   * lines (a known method's path is short). */
  char path[CALL_LOG_PATH_MAX + 32];
  size_t len = call->path ? strlen(call->path) : 0;
  log_field_t f[] = {
      {"call", call->id, 0},
      {"peer", h2_stream_peer(&call->stream), -1},
      {"method", path, 0},
      {"code", grpc_status_name(code), 0},
      {"duration_ms", NULL, (long long)((uv_hrtime() - call->started_ns) / 1000000)},
      /* Only a well-formed one, as the services accept: anything else is the client's free
       * text, which may be a secret put in the wrong field. */
      {"request_id", validate_is_uuid(rid) ? rid : NULL, -1},
  };

  if (call->path == NULL)
    snprintf(path, sizeof(path), "?");
  else if (len <= CALL_LOG_PATH_MAX)
    snprintf(path, sizeof(path), "%s", call->path);
  else
    snprintf(path, sizeof(path), "%.*s... (%zu bytes)", CALL_LOG_PATH_MAX, call->path, len);
  if (code != GRPC_OK)
    log_event("info", f, sizeof(f) / sizeof(f[0]), "call %s %s: %s: %.*s", call->id, path,
              grpc_status_name(code), CALL_LOG_MESSAGE_MAX, msg ? msg : "");
  else if (log_get_format() == LOG_JSON)
    log_event("info", f, sizeof(f) / sizeof(f[0]), "call %s %s: OK", call->id, path);
}

static void call_finish(rpc_call_t *call, int http_status, int code, const char *msg) {
  if (call->state >= RPC_CALL_FINISHING)
    return;
  if (call->started)
    metrics_call_handled(call->srv->metrics, call->m, code, uv_hrtime() - call->started_ns);
  if (!h2_stream_live(&call->stream)) {
    call_set_state(call, RPC_CALL_FINISHING);
    return;
  }
  call_log_finish(call, code, msg);
  uv_timer_stop(&call->timer);
  call->on_writable = NULL;
  call_set_state(call, RPC_CALL_FINISHING);
  h2_stream_set_details(&call->stream,
                        rpc_details_encode(code, msg, call->details, call->ndetails));
  h2_stream_finish(&call->stream, http_status, code, msg);
  /* A public unary call's answer holds the call until its client takes it: it counts as a
   * public stream meanwhile (call_public_admit; out of memory: it goes uncounted). An answer
   * taken at once, as a reading client's is, leaves it in this turn of the loop. */
  if (call->m != NULL && call->m->public_method && !call->public_stream &&
      h2_stream_unsent(&call->stream) > 0)
    (void)call_public_count(call);
}

int rpc_send(rpc_call_t *call, const ProtobufCMessage *msg) {
  int rc;

  if ((call->state != RPC_CALL_RUNNING && call->state != RPC_CALL_STREAMING) ||
      !h2_stream_live(&call->stream))
    return -ECANCELED;
  if ((rc = h2_stream_write(&call->stream, msg, 1)) == 0)
    metrics_msg_sent(call->srv->metrics, call->m);
  return rc;
}

int rpc_reply(rpc_call_t *call, const ProtobufCMessage *msg) {
  if (call->state != RPC_CALL_RUNNING || !h2_stream_live(&call->stream))
    return 0;
  /* Queued, not sent: the message and its trailers leave together. */
  if (h2_stream_write(&call->stream, msg, 0) != 0) {
    call_finish(call, 200, GRPC_INTERNAL, "out of memory encoding the response");
    return -ENOMEM;
  }
  metrics_msg_sent(call->srv->metrics, call->m);
  call_finish(call, 200, GRPC_OK, NULL);
  return 0;
}

size_t rpc_call_buffered(rpc_call_t *call) {
  return h2_stream_buffered(&call->stream);
}

static void call_vfinish(rpc_call_t *call, grpc_status_t code, const char *fmt, va_list ap) {
  char msg[1024] = "";
  /* A message cut to fit ends with a whole character: grpc-message is UTF-8. */
  if (fmt && vsnprintf(msg, sizeof(msg), fmt, ap) >= (int)sizeof(msg))
    msg[clue__utf8_whole(msg, strlen(msg))] = '\0';
  call_finish(call, 200, code, msg);
}

void rpc_fail(rpc_call_t *call, grpc_status_t code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  call_vfinish(call, code, fmt, ap);
  va_end(ap);
}

void rpc_end_streaming_calls(server_t *srv) {
  for (h2_conn_t *c = srv->conns; c; c = c->next) {
    h2_stream_t *s, *next;
    for (s = c->streams; s; s = next) {
      next = s->next;
      if (s->ops == &call_stream_ops && call_of(s)->state == RPC_CALL_STREAMING)
        call_finish(call_of(s), 200, GRPC_UNAVAILABLE, "server shutting down");
    }
  }
}

void rpc_finish(rpc_call_t *call, grpc_status_t code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  call_vfinish(call, code, fmt, ap);
  va_end(ap);
}
