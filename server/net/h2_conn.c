#include "net/h2_conn.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "net/grpc_wire.h"
#include "net/h1.h"
#include "net/h2_pages.h"
#include "net/h2_stream.h"
#include "net/tls.h"

#define H2_WRITE_CHUNK (64 * 1024)

/* What counts as progress for --write-timeout: this many response bytes taken by the peer.
 * A peer that opens a byte of window now and then, reads a frame at a time, or lets a few
 * stalled answers go and stalls new ones, does not keep a connection that owes it more. */
#define H2_PROGRESS_MIN (16 * 1024)

/* The smallest frames a request header block may come in (CONTINUATION frames, but the
 * last): clients split blocks at SETTINGS_MAX_FRAME_SIZE, 16 KiB, so this leaves 16 times
 * that room. */
#define H2_MIN_HEADER_FRAME 1024

/* How long a graceful GOAWAY's notice (idle timeout, shutdown) waits at most for the PING
 * sent after it to be answered before the final GOAWAY goes (RFC 9113 6.8: a round trip for
 * streams in flight). Checked by the sweep, so up to one interval more. */
#define H2_LINGER_MS 1000

/* The PING sent after the notice; its ACK says the peer has read the notice. */
static const uint8_t notice_ping[8] = {'c', 'l', 'u', 'e', 'd', 'b', 'y', 'e'};

#ifdef CLUED_HAVE_NGHTTP2_MAX_CONTINUATIONS
/* CONTINUATION frames one header block may have: enough for a block of max_list bytes
 * in frames of H2_MIN_HEADER_FRAME (one more than needed, the HEADERS frame counting too). */
static size_t h2_max_continuations(size_t max_list) {
  return (max_list + H2_MIN_HEADER_FRAME - 1) / H2_MIN_HEADER_FRAME;
}
#endif

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static void conn_change_state(h2_conn_t *c, h2_conn_state_t to, const char *why);
static void conn_release_idle(h2_conn_t *c);
static void conn_goaway_final(h2_conn_t *c);

static h2_conn_t *conn_of(nghttp2_session *s, void *user_data) {
  (void)s;
  return user_data;
}

static void note_gap(h2_conn_t *c, int32_t lo, int32_t hi) {
  if (c->ngaps == H2_STREAM_GAPS) { /* forget the oldest: bounded memory, as nghttp2 does */
    memmove(&c->gaps[0], &c->gaps[1], sizeof(c->gaps[0]) * (H2_STREAM_GAPS - 1));
    c->ngaps--;
  }
  c->gaps[c->ngaps].lo = lo;
  c->gaps[c->ngaps].hi = hi;
  c->ngaps++;
}

/* nghttp2 ignores a HEADERS frame on a stream id below the highest one the client opened
 * unless it still knows that stream, because a late trailer for a stream it reset is no
 * fault of the client. A stream id the client skipped was never used, so no trailer can be
 * late for it: RFC 9113 5.1.1 makes that a connection error of type PROTOCOL_ERROR. */
static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud) {
  h2_conn_t *c = ud;
  int32_t id = hd->stream_id;

  /* With SETTINGS_NO_RFC7540_PRIORITIES nghttp2 skips PRIORITY frames unread, but RFC 9113
   * 6.3 still makes one on stream 0 a connection error of type PROTOCOL_ERROR. */
  if (hd->type == NGHTTP2_PRIORITY && id == 0) {
    snprintf(c->error, sizeof(c->error), "PRIORITY on stream 0");
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  if (hd->type != NGHTTP2_HEADERS || id <= 0 || (id & 1) == 0)
    return 0;
  if (id > c->max_stream_id) {
    int32_t next = c->max_stream_id ? c->max_stream_id + 2 : 1;
    if (id > next)
      note_gap(c, next, id - 2);
    c->max_stream_id = id;
    return 0;
  }
  if (nghttp2_session_find_stream(s, id) != NULL)
    return 0;
  for (unsigned i = 0; i < c->ngaps; i++) {
    if (id >= c->gaps[i].lo && id <= c->gaps[i].hi) {
      snprintf(c->error, sizeof(c->error),
               "HEADERS on stream %d, which the client skipped (it opened stream %d)", id,
               c->max_stream_id);
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
  }
  return 0;
}

/* RFC 9113 5.1.2 makes a HEADERS frame that opens a stream past the advertised
 * SETTINGS_MAX_CONCURRENT_STREAMS a stream error, but nghttp2 (1.52, and its current
 * sources) makes it a connection error once the SETTINGS is acknowledged, before any
 * callback, and has no option against it: every call of the connection was lost for one
 * stream too many. So nghttp2 is told a larger limit, the limit plus the refusals below and
 * one (session_new), and the peer the limit itself (advertise_stream_limit); clued enforces
 * it here, in on_begin_headers.
 *
 * A stream past it is reset with REFUSED_STREAM: nothing of it was processed, so a gRPC
 * client retries it. Its call is never made (stream_accept is not called) and the rest of
 * its header block is decoded for HPACK's sake only, unseen by any callback. Each refusal
 * takes a token of a budget shaped as nghttp2's against the client's own RST_STREAM (rapid
 * reset): H2_REFUSED_BURST at once, H2_REFUSED_RATE more a second. Past it, or with more than
 * H2_REFUSED_BURST refused streams still waiting for their RST_STREAM to go out (a client
 * that does not read), the connection ends with GOAWAY ENHANCE_YOUR_CALM: opening and being
 * refused endlessly costs a bounded amount of work and memory. nghttp2's own check, one
 * stream later, is never reached. */
#define H2_REFUSED_BURST 1000
#define H2_REFUSED_RATE 33

/* Take one refusal from c's budget, refilled once a second. Returns 0 when none is left. */
static int refusal_budget_take(h2_conn_t *c) {
  uint64_t now = uv_now(c->srv->loop) / 1000;

  if (now > c->refuse_stamp) {
    uint64_t add = (now - c->refuse_stamp) * H2_REFUSED_RATE;
    c->refuse_tokens = add >= H2_REFUSED_BURST - c->refuse_tokens
                           ? H2_REFUSED_BURST
                           : c->refuse_tokens + (unsigned)add;
    c->refuse_stamp = now;
  }
  if (c->refuse_tokens == 0)
    return 0;
  c->refuse_tokens--;
  return 1;
}

/* Stream id opened past the limit (c->nopen counts it): refuse it, or end the connection
 * when the budget is spent. Returns what on_begin_headers returns. */
static int conn_refuse_stream(h2_conn_t *c, int32_t id) {
  unsigned max = c->srv->cfg.max_concurrent_streams;
  int unsent = c->nopen - max > H2_REFUSED_BURST; /* refused, their resets not yet sent */

  if (unsent || !refusal_budget_take(c)) {
    snprintf(c->error, sizeof(c->error),
             "%u streams refused past SETTINGS_MAX_CONCURRENT_STREAMS %u: %s (ENHANCE_YOUR_CALM)",
             c->nrefused + 1, max, unsent ? "too many resets unsent" : "over the refusal budget");
    c->error_code = NGHTTP2_ENHANCE_YOUR_CALM;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  if (c->nrefused++ == 0)
    log_info("conn %llu (%s): stream %d opened past SETTINGS_MAX_CONCURRENT_STREAMS %u: "
             "refused (RST_STREAM REFUSED_STREAM); the connection serves on, and its further "
             "refusals are counted, not logged",
             (unsigned long long)c->id, c->peer, id, max);
  /* Returning TEMPORAL_CALLBACK_FAILURE makes nghttp2 skip the block's fields and reset the
   * stream; the reset submitted first is the one sent (a stream being reset takes no other). */
  nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
  return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

/* Our SETTINGS as nghttp2 just wrote it (p: the frame, n bytes) carries nghttp2's larger
 * SETTINGS_MAX_CONCURRENT_STREAMS (session_new); the peer is told the limit itself. */
static void advertise_stream_limit(h2_conn_t *c, uint8_t *p, size_t n) {
  uint32_t v = c->srv->cfg.max_concurrent_streams;
  int found = 0;

  c->settings_out = 0;
  assert(n >= 9 && p[3] == NGHTTP2_SETTINGS && !(p[4] & NGHTTP2_FLAG_ACK));
  for (size_t i = 9; i + 6 <= n; i += 6) {
    if (p[i] == 0 && p[i + 1] == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) {
      p[i + 2] = (uint8_t)(v >> 24);
      p[i + 3] = (uint8_t)(v >> 16);
      p[i + 4] = (uint8_t)(v >> 8);
      p[i + 5] = (uint8_t)v;
      found = 1;
    }
  }
  assert(found);
  (void)found;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  h2_conn_t *c = conn_of(s, ud);
  h2_stream_t *st;

  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  c->nopen++; /* nghttp2 opened it; on_stream_close counts it out */
  if (c->state != H2_CONN_OPEN && c->state != H2_CONN_NOTICE) {
    /* Past the final GOAWAY nghttp2 already ignores new streams; be explicit anyway. */
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
    return 0;
  }
  if (c->nopen > c->srv->cfg.max_concurrent_streams)
    return conn_refuse_stream(c, f->hd.stream_id);
  if (c->srv->stream_accept(c->srv, c->id, f->hd.stream_id, &st) != 0) {
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_INTERNAL_ERROR);
    return 0;
  }
  h2_stream_attach(st, c, f->hd.stream_id);
  nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
  h2_stream_t *st;
  (void)flags;
  (void)ud;

  if (f->hd.type != NGHTTP2_HEADERS)
    return 0;
  st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (st == NULL)
    return 0;
  if (f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0; /* request trailers carry nothing gRPC uses */
  return h2_stream_recv_header(st, name, namelen, value, valuelen);
}

/* True if p holds a NUL, CR or LF. */
static int has_nul_cr_lf(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] == '\0' || p[i] == '\r' || p[i] == '\n')
      return 1;
  return 0;
}

/* A request header nghttp2 finds malformed (e.g. a value with surrounding white space). We
 * take it as given rather than resetting the stream, so the call can answer with a gRPC
 * status that says what is wrong (an unusable token is UNAUTHENTICATED, not a reset).
 * Except a NUL, CR or LF in its name or value (RFC 9113 8.2.1): the call reads its headers
 * as C strings, so "Bearer <token>\0junk" would be the token and a field named
 * "authorization\0x" the authorization header. Such a request is malformed, a stream error
 * of type PROTOCOL_ERROR (8.1.1): nghttp2 resets the stream when this callback fails. */
static int on_invalid_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                             size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                             void *ud) {
  h2_conn_t *c = ud;

  if (has_nul_cr_lf(name, namelen) || has_nul_cr_lf(value, valuelen)) {
    log_info("conn %llu (%s): stream %d: header field \"%.*s\" holds a NUL, CR or LF in its %s: "
             "malformed request, stream reset (PROTOCOL_ERROR)",
             (unsigned long long)c->id, c->peer, f->hd.stream_id,
             (int)(namelen > 64 ? 64 : namelen), (const char *)name,
             has_nul_cr_lf(name, namelen) ? "name" : "value");
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  log_info("conn %llu (%s): malformed header field \"%.*s\" on stream %d",
           (unsigned long long)c->id, c->peer, (int)(namelen > 64 ? 64 : namelen),
           (const char *)name, f->hd.stream_id);
  return on_header(s, f, name, namelen, value, valuelen, flags, ud);
}

#define H2_MAX_PING_STRIKES 2 /* as gRPC's servers: the third PING too soon ends it */

/* gRPC's keepalive policy: a PING less than --keepalive-min-ping after the previous one,
 * with no HEADERS or DATA sent in between, is a strike; past the strikes allowed the
 * connection ends with GOAWAY ENHANCE_YOUR_CALM "too_many_pings". */
static void conn_on_ping(h2_conn_t *c) {
  uint64_t now = uv_now(c->srv->loop), min = c->srv->cfg.keepalive_min_ping_ms;

  if (min && c->last_ping && now - c->last_ping < min && ++c->ping_strikes > H2_MAX_PING_STRIKES &&
      (c->state == H2_CONN_OPEN || c->state == H2_CONN_NOTICE || c->state == H2_CONN_DRAINING)) {
    log_warn("conn %llu (%s): %u PINGs less than %llu ms apart (--keepalive-min-ping): GOAWAY "
             "ENHANCE_YOUR_CALM",
             (unsigned long long)c->id, c->peer, c->ping_strikes + 1, (unsigned long long)min);
    nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c->session),
                          NGHTTP2_ENHANCE_YOUR_CALM, (const uint8_t *)"too_many_pings", 14);
    conn_change_state(c, H2_CONN_HANGUP, NULL); /* nothing read matters now */
  }
  c->last_ping = now;
}

/* A GOAWAY with an error that nghttp2 decided on its own, without failing the call that fed
 * it bytes (which logs its reason in on_read): say why, for the log of the close. */
static void conn_goaway_sent(h2_conn_t *c, const nghttp2_goaway *g) {
  if (c->error[0])
    return; /* ours, already said */
  if (g->error_code == NGHTTP2_COMPRESSION_ERROR)
    /* nghttp2's HPACK decoder refuses a name or value longer than 65,536 bytes as sent
     * (NGHTTP2_HD_MAX_NV), whatever --max-header-bytes allows; the block cannot be decoded
     * any further, and HPACK's table is shared by the connection's streams. */
    snprintf(c->error, sizeof(c->error),
             "request header block not decodable (HPACK): malformed, or a field name or value "
             "over 65536 bytes; GOAWAY COMPRESSION_ERROR");
  else
    snprintf(c->error, sizeof(c->error), "GOAWAY error %u sent by nghttp2: %.*s",
             (unsigned)g->error_code, (int)(g->opaque_data_len > 64 ? 64 : g->opaque_data_len),
             g->opaque_data ? (const char *)g->opaque_data : "");
  log_warn("conn %llu (%s): %s", (unsigned long long)c->id, c->peer, c->error);
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  h2_conn_t *c = ud;
  h2_stream_t *st;

  if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR)
    conn_goaway_sent(c, &f->goaway);
  /* Called before nghttp2_session_mem_send() returns the frame's bytes (h2_conn_flush). */
  if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK))
    c->settings_out = 1;
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
    return 0;
  c->ping_strikes = 0;
  if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
      (st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id)) != NULL)
    h2_stream_sent_end(st);
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  h2_conn_t *c = ud;
  h2_stream_t *st;

  switch (f->hd.type) {
  case NGHTTP2_SETTINGS:
    c->handshaken = 1;
    return 0;
  case NGHTTP2_PING:
    if (!(f->hd.flags & NGHTTP2_FLAG_ACK))
      conn_on_ping(c);
    else if (c->state == H2_CONN_NOTICE &&
             memcmp(f->ping.opaque_data, notice_ping, sizeof(notice_ping)) == 0)
      conn_goaway_final(c); /* the peer has read the notice: it opens no stream any more */
    return 0;
  case NGHTTP2_HEADERS:
  case NGHTTP2_DATA:
    c->last_active = uv_now(c->srv->loop);
    st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (st == NULL)
      return 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
      h2_stream_recv_headers_done(st);
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
      h2_stream_recv_end(st);
    return 0;
  default:
    return 0;
  }
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *ud) {
  h2_stream_t *st = nghttp2_session_get_stream_user_data(s, stream_id);
  (void)flags;

  /* Window credit is ours to give (no automatic WINDOW_UPDATE): the stream returns it as
   * its bytes are dropped or taken, and holds it while the caller is not yet known. */
  if (st != NULL)
    h2_stream_recv_data(st, data, len);
  else
    h2_conn_consume(ud, stream_id, len);
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud) {
  h2_conn_t *c = ud;
  h2_stream_t *st = nghttp2_session_get_stream_user_data(s, stream_id);

  c->last_active = uv_now(c->srv->loop);
  assert(c->nopen > 0);
  c->nopen--;
  if (nghttp2_session_get_stream_remote_close(s, stream_id) == 1) {
    c->ended[c->nended] = stream_id;
    c->nended = (c->nended + 1) % H2_STREAM_ENDED;
  }
  if (st == NULL)
    return 0;
  nghttp2_session_set_stream_user_data(s, stream_id, NULL);
  h2_stream_detach(st, error_code, NULL);
  return 0;
}

static int on_invalid_frame(nghttp2_session *s, const nghttp2_frame *f, int err, void *ud) {
  h2_conn_t *c = ud;
  (void)s;
  log_warn("conn %llu (%s): invalid frame type %d on stream %d: %s", (unsigned long long)c->id,
           c->peer, f->hd.type, f->hd.stream_id, nghttp2_strerror(err));
  return 0;
}

static void conn_free_cb(uv_handle_t *h) {
  h2_conn_t *c = (h2_conn_t *)h; /* tcp is the first member */
  tls_conn_free(c->tls);
  h1_free(c->h1);
  free(c->wbuf);
  free(c);
}

static void conn_change_state(h2_conn_t *c, h2_conn_state_t to, const char *why);

/* The strangers list: connections no user claims, oldest first (h2_conn_make_room()). */
static void strangers_append(h2_conn_t *c) {
  server_t *srv = c->srv;

  /* Out of memory: the address's count misses it, which only ranks it lower for eviction. */
  c->addr_counted = key_counts_add(&srv->addr_strangers, c->peer_key, 1) == 0;

  c->snext = NULL;
  c->sprev = srv->strangers_tail;
  if (srv->strangers_tail)
    srv->strangers_tail->snext = c;
  else
    srv->strangers = c;
  srv->strangers_tail = c;
}

static void strangers_remove(h2_conn_t *c) {
  server_t *srv = c->srv;

  if (c->addr_counted)
    key_counts_release(&srv->addr_strangers, c->peer_key, 1);
  c->addr_counted = 0;

  if (c->sprev)
    c->sprev->snext = c->snext;
  else
    srv->strangers = c->snext;
  if (c->snext)
    c->snext->sprev = c->sprev;
  else
    srv->strangers_tail = c->sprev;
  c->sprev = c->snext = NULL;
}

void h2_conn_claim(h2_conn_t *c, uint64_t user) {
  server_t *srv;

  if (c == NULL || c->user != 0 || user == 0 || c->state == H2_CONN_CLOSING)
    return;
  srv = c->srv;
  if (key_counts_get(&srv->user_conns, user) >= server_max_conns_per_user(srv) ||
      key_counts_add(&srv->user_conns, user, 1) != 0)
    return; /* stays a stranger's */
  strangers_remove(c);
  c->user = user;
}

/* Strangers' connections looked at (the oldest) for one to close for a new one. */
#define EVICT_SCAN 64

/* Streams of a connection looked at for a caller being authenticated. */
#define EVICT_STREAMS 8

/* True when one of c's first streams is a call whose token is being looked up: most likely a
 * user's new connection, about to be claimed. */
static int authenticating(const h2_conn_t *c) {
  int i = 0;

  for (const h2_stream_t *s = c->streams; s && i < EVICT_STREAMS; s = s->next, i++)
    if (s->in == H2_IN_HOLD)
      return 1;
  return 0;
}

/* Where a candidate for eviction stands: the more strangers' connections its address has,
 * then the fewer streams it has under way, the sooner it goes (see h2_conn_make_room()). */
static size_t addr_strangers(const h2_conn_t *c) {
  return key_counts_get(&c->srv->addr_strangers, c->peer_key);
}

static int evict_class(const h2_conn_t *c) {
  return c->streams == NULL ? 0 : !authenticating(c) ? 1 : 2;
}

void h2_conn_make_room(server_t *srv, h2_conn_t *fresh) {
  h2_conn_t *c = srv->strangers, *victim = NULL;
  size_t best = 0, mine = addr_strangers(fresh) - (fresh->addr_counted ? 1 : 0);
  int best_class = 3;
  uint64_t now = uv_now(srv->loop);

  /* Of the oldest strangers' connections, the one whose address has the most, preferring
   * one with no open stream, then one with no call being authenticated. */
  for (int i = 0; c && i < EVICT_SCAN; i++, c = c->snext) {
    size_t n;
    int k;
    if (c == fresh)
      continue;
    n = addr_strangers(c);
    k = evict_class(c);
    if (victim == NULL || n > best || (n == best && k < best_class)) {
      victim = c;
      best = n;
      best_class = k;
    }
  }
  /* A connection of the same address goes (an address turns its own connections over);
   * one of an address with more strangers' connections than the new one's goes; otherwise
   * the new one does: a flood from one address cannot close other addresses' connections. */
  if (victim != NULL && (victim->peer_key == fresh->peer_key || best > mine)) {
    srv->evicted_conns++;
    conn_change_state(victim, H2_CONN_CLOSING,
                      "closed for a new connection (--max-connections): it carried no "
                      "authenticated call");
  } else {
    srv->refused_conns++;
    conn_change_state(fresh, H2_CONN_CLOSING, "refused: --max-connections reached");
  }
  h2_conn_log_room(srv, now);
}

void h2_conn_log_room(server_t *srv, uint64_t now) {
  if (now - srv->evicted_logged_ms < 1000 || (srv->evicted_conns == 0 && srv->refused_conns == 0))
    return;
  log_warn("--max-connections %u reached (%zu open): closed %llu connection(s) that carried "
           "no authenticated call for new ones, refused %llu new one(s)",
           srv->cfg.max_connections, srv->nconns, (unsigned long long)srv->evicted_conns,
           (unsigned long long)srv->refused_conns);
  srv->evicted_conns = srv->refused_conns = 0;
  srv->evicted_logged_ms = now;
}

/* The one place a connection changes state. why: the reason it closes (CLOSING), for the
 * calls' logs. */
static void conn_change_state(h2_conn_t *c, h2_conn_state_t to, const char *why) {
  server_t *srv = c->srv;

  switch (to) {
  case H2_CONN_NOTICE:
    assert(c->state == H2_CONN_OPEN && c->h1 == NULL);
    c->state = to;
    c->notice_until = uv_now(srv->loop) + H2_LINGER_MS;
    break;
  case H2_CONN_DRAINING:
    assert(c->state == H2_CONN_OPEN || c->state == H2_CONN_NOTICE);
    c->state = to;
    break;
  case H2_CONN_HANGUP:
    assert(c->state == H2_CONN_OPEN || c->state == H2_CONN_NOTICE || c->state == H2_CONN_DRAINING);
    c->state = to;
    break;
  case H2_CONN_CLOSING:
    assert(c->state != H2_CONN_CLOSING);
    c->state = to;
    /* Leave the server's list, cancel every call still open, then close the socket. */
    if (c->prev)
      c->prev->next = c->next;
    else
      srv->conns = c->next;
    if (c->next)
      c->next->prev = c->prev;
    if (c->user)
      key_counts_release(&srv->user_conns, c->user, 1);
    else
      strangers_remove(c);
    if (c->in_soon) { /* the list holds only this turn's replies: short */
      h2_conn_t **p = &srv->flush_soon;
      while (*p != c)
        p = &(*p)->soon_next;
      *p = c->soon_next;
      c->in_soon = 0;
    }
    srv->nconns--;
    /* Only once every call is cancelled is the connection (and its user) resumed: resumed
     * before, the pool would send the statements they left waiting, for a client that is
     * gone. */
    h2_resume_hold(srv);
    while (c->streams) /* each leaves the list (and the writable queue) as it detaches */
      h2_stream_detach(c->streams, NGHTTP2_CANCEL, why);
    h2_resume_release(srv);
    if (c->congested && srv->conn_congested)
      srv->conn_congested(srv, c->id, 0);
    c->congested = 0;
    nghttp2_session_del(c->session);
    c->session = NULL;
    tls_close_notify(c->tls); /* a TLS peer can tell our close from a cut connection */
    uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
    server_conn_closed(srv);
    break;
  case H2_CONN_OPEN:
  default:
    assert(!"connections are born OPEN and never return to it");
  }
}

void h2_conn_close(h2_conn_t *c, const char *reason) {
  if (c->state == H2_CONN_CLOSING)
    return;
  log_info("conn %llu (%s): closed: %s", (unsigned long long)c->id, c->peer, reason);
  conn_change_state(c, H2_CONN_CLOSING, reason);
}

/* Output the connection still owes its peer: queued reply bytes, shared file bytes, the
 * bytes being written, and TLS records not yet on the socket (its own answers to the
 * peer's KeyUpdates among them). */
static size_t conn_pending(const h2_conn_t *c) {
  return c->queued + c->owed + c->wlen + tls_pending(c->tls);
}

/* --write-timeout's clock (last_progress) runs while the connection owes its peer output and
 * stands still while it owes nothing: it measures how long the peer has owed, since it last
 * took H2_PROGRESS_MIN bytes or owed nothing for a whole --write-timeout. Owing nothing for a
 * moment is no progress: a client that let its stalled answers (a few hundred bytes) go now
 * and then, and stalled as many new ones at once, was never closed, and kept their calls. */
static void conn_out_quiet(h2_conn_t *c, uint64_t now) {
  if (c->quiet_since == 0)
    c->quiet_since = now | 1; /* odd: never 0 */
}

/* Output is pending again (or still): the clock goes on from where it stood, or afresh after a
 * whole --write-timeout without any. */
static void conn_out_busy(h2_conn_t *c, uint64_t now) {
  uint64_t quiet;

  if (c->quiet_since == 0)
    return;
  quiet = now > c->quiet_since ? now - c->quiet_since : 0;
  c->quiet_since = 0;
  if (quiet >= c->srv->cfg.write_timeout_ms) {
    c->last_progress = now;
    c->moved = 0;
    return;
  }
  c->last_progress += quiet;
  if (c->last_progress > now)
    c->last_progress = now;
}

/* n response bytes were taken by the peer: progress once there are enough of them. */
static void conn_progress(h2_conn_t *c, size_t n) {
  uint64_t now = uv_now(c->srv->loop);

  c->moved += n;
  if (c->moved >= H2_PROGRESS_MIN) {
    c->last_progress = now;
    c->moved = 0;
  }
  if (conn_pending(c) == 0 && !c->writing)
    conn_out_quiet(c, now);
}

static void conn_write_cb(uv_write_t *req, int status) {
  h2_conn_t *c = container_of(req, h2_conn_t, wreq);

  c->writing = 0;
  c->wlen = 0;
  if (c->state == H2_CONN_CLOSING)
    return;
  conn_progress(c, 0);
  h2_conn_queued(c, 0); /* the written bytes left the queue */
  if (status < 0) {
    char why[128];
    snprintf(why, sizeof(why), "write failed: %s", uv_strerror(status));
    h2_conn_close(c, why);
    return;
  }
  h2_conn_flush(c);
  if (c->state == H2_CONN_HANGUP && !c->writing)
    h2_conn_close(c, "protocol error; GOAWAY sent");
}

void h2_conn_consume(h2_conn_t *c, int32_t stream_id, size_t n) {
  if (n == 0 || c->session == NULL)
    return;
  /* Fails only for stream 0 or a closed session; the credit then no longer matters. */
  (void)nghttp2_session_consume(c->session, stream_id, n);
  c->flush_pending = 1; /* the WINDOW_UPDATE goes out with the next flush */
}

void h2_conn_consume_apart(h2_conn_t *c, int32_t stream_id, size_t conn_n, size_t stream_n) {
  if (c->session == NULL || (conn_n == 0 && stream_n == 0))
    return;
  if (conn_n > 0)
    (void)nghttp2_session_consume_connection(c->session, conn_n);
  if (stream_n > 0)
    (void)nghttp2_session_consume_stream(c->session, stream_id, stream_n);
  c->flush_pending = 1;
}

void h2_conn_wake(h2_conn_t *c) {
  c->wake_pending = 1;
  c->flush_pending = 1;
}

int h2_conn_congested(const h2_conn_t *c) {
  return c->congested;
}

void h2_conn_queued(h2_conn_t *c, ptrdiff_t delta) {
  size_t cap = c->srv->cfg.max_conn_buffer;

  if (delta > 0)
    conn_out_busy(c, uv_now(c->srv->loop));
  c->queued += (size_t)delta;
  if (c->state == H2_CONN_CLOSING)
    return; /* its streams are leaving: nothing to pause or wake */
  if (delta < 0)
    conn_progress(c, (size_t)-delta);
  if (!c->congested && c->queued + c->wlen > cap) {
    uint64_t now = uv_now(c->srv->loop);

    c->congested = 1;
    if (c->srv->conn_congested)
      c->srv->conn_congested(c->srv, c->id, 1);
    /* A peer that reads in spurts crosses the bound again and again: one line a second per
     * connection at most, with how often it went over since the last one. */
    c->congestions++;
    if (c->congested_logged == 0 || now - c->congested_logged >= 1000) {
      char since[64] = "";
      if (c->congested_logged != 0)
        snprintf(since, sizeof(since), " (over it %u times since the last such line)",
                 c->congestions);
      log_info("conn %llu (%s): %zu response bytes queued, over --max-conn-buffer %zu: new calls "
               "and queries wait, streams pause until the peer reads%s",
               (unsigned long long)c->id, c->peer, c->queued + c->wlen, cap, since);
      c->congested_logged = now;
      c->congestions = 0;
    }
  } else if (c->congested && c->queued + c->wlen <= cap / 2) {
    c->congested = 0;
    if (c->srv->conn_congested)
      c->srv->conn_congested(c->srv, c->id, 0);
    c->wake_pending = 1;
    c->flush_pending = 1;
  }
}

void h2_conn_owed(h2_conn_t *c, ptrdiff_t delta) {
  if (delta > 0)
    conn_out_busy(c, uv_now(c->srv->loop));
  c->owed += (size_t)delta;
  if (delta < 0 && c->state != H2_CONN_CLOSING)
    conn_progress(c, (size_t)-delta);
}

/* Congestion eased: calls that waited to run, and streams that paused, go on (their
 * writable events run with the next send). */
static void wake_calls(h2_conn_t *c) {
  c->wake_pending = 0;
  if (!c->congested)
    h2_stream_wake_all(c);
}

static void run_writable(h2_conn_t *c) {
  while (c->writable && c->state != H2_CONN_CLOSING) {
    h2_stream_t *st = c->writable;
    c->writable = st->next_writable;
    st->next_writable = NULL;
    st->queued_writable = 0;
    h2_stream_run_writable(st);
  }
}

/* ---- the socket, cleartext or TLS: the only place the two differ -------------------- */

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* TLS hands conn_read_cb plaintext, and conn_write_cb runs once the ciphertext is sent. */
static int conn_read_start(h2_conn_t *c) {
  if (c->tls != NULL)
    return tls_read_start(c->tls, conn_alloc_cb, conn_read_cb);
  return uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
}

static int conn_write(h2_conn_t *c, const uv_buf_t *b) {
  if (c->tls != NULL)
    return tls_write(c->tls, &c->wreq, b, conn_write_cb);
  return uv_write(&c->wreq, (uv_stream_t *)&c->tcp, b, 1, conn_write_cb);
}

void h2_conn_read_pause(h2_conn_t *c, int pause) {
  int rc;

  if (c->state == H2_CONN_CLOSING)
    return;
  if (pause) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    return;
  }
  rc = conn_read_start(c);
  if (rc < 0)
    h2_conn_close(c, uv_strerror(rc));
}

static int conn_tls_start(h2_conn_t *c) {
  char label[96];

  if (c->srv->tls == NULL)
    return 0;
  snprintf(label, sizeof(label), "conn %llu (%s)", (unsigned long long)c->id, c->peer);
  return tls_conn_new(c->srv->tls, (uv_stream_t *)&c->tcp, label, &c->tls) == 0 ? 0 : UV_ENOMEM;
}

/* Write the gathered bytes (c->wbuf). A cleartext socket that takes them all at once needs no
 * write request: libuv then neither queues a completion nor, once its queue drains, re-arms
 * the socket's epoll watch (one epoll_ctl per reply otherwise). What it does not take, and
 * everything over TLS or when now is 0, goes through conn_write() as before. Returns 1 if all
 * went out now, 0 if a write is under way (c->writing), -1 if the connection was closed. */
static int conn_write_gathered(h2_conn_t *c, int now) {
  uv_buf_t b;
  int rc;

  if (c->tls == NULL && now) {
    b = uv_buf_init((char *)c->wbuf, (unsigned)c->wlen);
    rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (rc < 0 && rc != UV_EAGAIN) {
      char why[128];
      snprintf(why, sizeof(why), "write failed: %s", uv_strerror(rc));
      h2_conn_close(c, why);
      return -1;
    }
    if (rc > 0) {
      size_t n = (size_t)rc;
      if (n == c->wlen) {
        c->wlen = 0;
        conn_progress(c, 0);
        h2_conn_queued(c, 0); /* the written bytes left the queue */
        return 1;
      }
      memmove(c->wbuf, c->wbuf + n, c->wlen - n);
      c->wlen -= n;
    }
  }
  b = uv_buf_init((char *)c->wbuf, (unsigned)c->wlen);
  rc = conn_write(c, &b);
  if (rc < 0) {
    h2_conn_close(c, uv_strerror(rc));
    return -1;
  }
  c->writing = 1;
  return 0;
}

static void on_flush_idle(uv_idle_t *h) {
  h2_conn_flush_due(h->data);
}

void h2_conn_flush_soon(h2_conn_t *c) {
  server_t *srv = c->srv;

  if (c->state == H2_CONN_CLOSING)
    return;
  c->flush_pending = 1;
  if (c->in_soon)
    return;
  if (srv->flush_soon == NULL)
    uv_idle_start(&srv->flush_idle, on_flush_idle);
  c->soon_next = srv->flush_soon;
  srv->flush_soon = c;
  c->in_soon = 1;
}

void h2_conn_flush_due(server_t *srv) {
  h2_conn_t *c;

  /* One at a time off the list: a flush may close another connection (which leaves the
   * list) or name one again (flushed again in this pass). */
  while ((c = srv->flush_soon) != NULL) {
    srv->flush_soon = c->soon_next;
    c->soon_next = NULL;
    c->in_soon = 0;
    h2_conn_flush(c);
  }
  uv_idle_stop(&srv->flush_idle);
}

void h2_conn_flush(h2_conn_t *c) {
  int now_writes = 0;

  if (c->state == H2_CONN_CLOSING || c->proto == H2_PROTO_UNKNOWN)
    return;
  if (c->in_session) {
    c->flush_pending = 1;
    return;
  }
  for (;;) {
    c->flush_pending = 0;
    if (c->h1 != NULL) {
      h1_run(c); /* input a stream can take again, the next pipelined request */
      if (c->state == H2_CONN_CLOSING)
        return;
    }
    if (!c->writing) {
      /* Gather frames into one buffer of up to H2_WRITE_CHUNK bytes per write. */
      c->in_session = 1;
      while (c->wlen < H2_WRITE_CHUNK) {
        const uint8_t *data;
        ssize_t n = c->h1 ? h1_send(c, &data) : nghttp2_session_mem_send(c->session, &data);
        if (n < 0) {
          c->in_session = 0;
          h2_conn_close(c, nghttp2_strerror((int)n));
          return;
        }
        if (n == 0)
          break;
        c->out_idle = 0;
        if (c->wlen + (size_t)n > c->wcap) {
          /* Start small: an idle connection only ever writes its SETTINGS, and a private
           * 64 KiB buffer (a page or more touched) was much of what 10,000 of them cost. */
          size_t cap = c->wcap ? c->wcap : 256;
          uint8_t *nb;
          while (cap < c->wlen + (size_t)n)
            cap *= 2;
          nb = realloc(c->wbuf, cap);
          if (nb == NULL) {
            c->in_session = 0;
            h2_conn_close(c, "out of memory");
            return;
          }
          c->wbuf = nb;
          c->wcap = cap;
        }
        memcpy(c->wbuf + c->wlen, data, (size_t)n);
        if (c->settings_out)
          advertise_stream_limit(c, c->wbuf + c->wlen, (size_t)n);
        c->wlen += (size_t)n;
      }
      c->in_session = 0;
      if (c->wlen > 0) {
        /* At most two buffers at once per flush: a stream with much to send still hands the
         * loop back between chunks. */
        int rc = conn_write_gathered(c, now_writes++ < 2);
        if (rc < 0)
          return; /* closed */
        if (rc > 0)
          c->flush_pending = 1; /* all out: gather what nghttp2 has since */
      }
    }
    run_writable(c);
    if (c->state == H2_CONN_CLOSING)
      return;
    if (c->wake_pending)
      wake_calls(c);
    if (c->state == H2_CONN_CLOSING)
      return;
    if (!c->flush_pending)
      break;
  }
  if (c->h1 != NULL) {
    if (!c->writing && !h1_want_read(c) && !h1_want_write(c))
      h2_conn_close(c, c->state == H2_CONN_DRAINING ? "drained" : "HTTP/1.1 connection done");
    return;
  }
  if (!c->writing && !nghttp2_session_want_read(c->session) &&
      !nghttp2_session_want_write(c->session))
    h2_conn_close(c, c->state == H2_CONN_DRAINING ? "drained"
                     : c->error[0]                ? c->error
                                                  : "session finished");
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  h2_conn_t *c = (h2_conn_t *)h;
  (void)suggested;
  *buf = uv_buf_init((char *)c->srv->rbuf, sizeof(c->srv->rbuf));
}

static int ended_by_client(const h2_conn_t *c, int32_t id) {
  for (unsigned i = 0; i < H2_STREAM_ENDED; i++)
    if (c->ended[i] == id)
      return 1;
  return 0;
}

/* Hand nghttp2 what was read, watching the frame headers go by. nghttp2 keeps no closed
 * streams (no priority tree), so it skips DATA or HEADERS on one unseen; on a stream the
 * client had ended that is a connection error STREAM_CLOSED (RFC 9113 5.1). Such a frame
 * is checked once nghttp2 has taken every byte before it. */
static ssize_t conn_recv(h2_conn_t *c, const uint8_t *p, size_t n) {
  size_t done = 0, i = 0;

  while (i < n) {
    size_t k;
    if (c->scan_preface < NGHTTP2_CLIENT_MAGIC_LEN) {
      k = NGHTTP2_CLIENT_MAGIC_LEN - c->scan_preface;
      k = k < n - i ? k : n - i;
      c->scan_preface += (uint8_t)k;
      i += k;
      continue;
    }
    if (c->scan_skip > 0) {
      k = c->scan_skip < n - i ? c->scan_skip : n - i;
      c->scan_skip -= (uint32_t)k;
      i += k;
      continue;
    }
    c->scan_hdr[c->scan_hlen++] = p[i++];
    if (c->scan_hlen < 9)
      continue;
    c->scan_hlen = 0;
    c->scan_skip = (uint32_t)c->scan_hdr[0] << 16 | (uint32_t)c->scan_hdr[1] << 8 | c->scan_hdr[2];
    {
      uint8_t type = c->scan_hdr[3], flags = c->scan_hdr[4];
      int32_t id = (int32_t)(((uint32_t)c->scan_hdr[5] << 24 | (uint32_t)c->scan_hdr[6] << 16 |
                              (uint32_t)c->scan_hdr[7] << 8 | c->scan_hdr[8]) &
                             0x7fffffffu);
      /* The header may have begun in an earlier read: nghttp2 has all before it then. */
      size_t start = i >= 9 ? i - 9 : 0;
      /* A header block open (HEADERS, then CONTINUATION, until END_HEADERS) holds the whole
       * connection: it must end within --handshake-timeout of its first frame (h2_conn_tick).
       * Any other frame ends it (or the session, as a protocol error). */
      if ((type == NGHTTP2_HEADERS || type == NGHTTP2_CONTINUATION) &&
          !(flags & NGHTTP2_FLAG_END_HEADERS)) {
        if (c->block_since == 0)
          c->block_since = uv_now(c->srv->loop) | 1;
      } else {
        c->block_since = 0;
      }
      if ((type == NGHTTP2_DATA || type == NGHTTP2_HEADERS) && id > 0 && ended_by_client(c, id)) {
        if (start > done) {
          ssize_t r = nghttp2_session_mem_recv(c->session, p + done, start - done);
          if (r < 0)
            return r;
          done = start;
          if (c->state != H2_CONN_OPEN && c->state != H2_CONN_NOTICE &&
              c->state != H2_CONN_DRAINING)
            return (ssize_t)n;
        }
        if (nghttp2_session_find_stream(c->session, id) == NULL) {
          snprintf(c->error, sizeof(c->error), "%s on stream %d, which the client had ended",
                   type == NGHTTP2_DATA ? "DATA" : "HEADERS", id);
          c->error_code = NGHTTP2_STREAM_CLOSED;
          return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
      }
    }
  }
  if (done < n) {
    ssize_t r = nghttp2_session_mem_recv(c->session, p + done, n - done);
    if (r < 0)
      return r;
  }
  return (ssize_t)n;
}

/* End the session with GOAWAY code, then the connection once it is written (why logged). */
static void conn_hangup(h2_conn_t *c, uint32_t code, const char *why) {
  nghttp2_session_terminate_session(c->session, code);
  log_warn("conn %llu (%s): %s; sending GOAWAY", (unsigned long long)c->id, c->peer, why);
  /* Keep reading (and discarding) while the GOAWAY drains: a peer that hangs up or resets
   * meanwhile must end the connection at once, not leave it waiting on a write that cannot
   * finish. */
  if (c->state != H2_CONN_HANGUP)
    conn_change_state(c, H2_CONN_HANGUP, NULL);
  h2_conn_flush(c);
  if (c->state != H2_CONN_CLOSING && !c->writing)
    h2_conn_close(c, why);
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  h2_conn_t *c = (h2_conn_t *)st;
  ssize_t used;

  if (c->state == H2_CONN_CLOSING)
    return;
  if (nread == 0)
    return;
  if (nread < 0) {
    if (nread == UV_EOF && c->h1 != NULL && h1_peer_eof(c)) {
      h2_conn_flush(c); /* a client that half-closed after its request still gets the reply */
      return;
    }
    h2_conn_close(c, nread == UV_EOF ? "peer closed the connection" : uv_strerror((int)nread));
    return;
  }
  if (c->state == H2_CONN_HANGUP)
    return; /* after a protocol error nothing the peer sends matters */
  if (c->h1 == NULL && c->proto != H2_PROTO_H2) {
    /* The first bytes say what the peer speaks: the HTTP/2 preface starts "PRI ", no
     * HTTP/1.1 request line does. Up to 4 bytes are kept until they can tell. */
    static const char pri[4] = {'P', 'R', 'I', ' '};
    size_t k = (size_t)(4 - c->nsniff) < (size_t)nread ? (size_t)(4 - c->nsniff) : (size_t)nread;
    memcpy(c->sniff + c->nsniff, buf->base, k);
    c->nsniff += (uint8_t)k;
    if (c->nsniff < 4 && memcmp(c->sniff, pri, c->nsniff) == 0)
      return;
    if (memcmp(c->sniff, pri, 4) == 0) {
      c->proto = H2_PROTO_H2;
      c->in_session = 1;
      used = conn_recv(c, c->sniff, c->nsniff);
      if (used >= 0 && (size_t)nread > k)
        used = conn_recv(c, (const uint8_t *)buf->base + k, (size_t)nread - k);
      c->in_session = 0;
      goto h2_read;
    }
    if (h1_start(c) != 0) {
      h2_conn_close(c, "out of memory");
      return;
    }
    c->in_session = 1;
    if (h1_recv(c, c->sniff, c->nsniff) == 0 && (size_t)nread > k)
      (void)h1_recv(c, (const uint8_t *)buf->base + k, (size_t)nread - k);
    c->in_session = 0;
    if (c->state != H2_CONN_CLOSING)
      h2_conn_flush(c);
    return;
  }
  if (c->h1 != NULL) {
    c->in_session = 1;
    (void)h1_recv(c, (const uint8_t *)buf->base, (size_t)nread);
    c->in_session = 0;
    if (c->state != H2_CONN_CLOSING)
      h2_conn_flush(c);
    return;
  }
  c->in_session = 1;
  used = conn_recv(c, (const uint8_t *)buf->base, (size_t)nread);
  c->in_session = 0;
h2_read:
  if (c->state == H2_CONN_CLOSING)
    return;
  if (used < 0) {
    char why[192];
    if (!c->error[0]) /* said here: the GOAWAY that follows needs no word of its own */
      snprintf(c->error, sizeof(c->error), "%s", nghttp2_strerror((int)used));
    snprintf(why, sizeof(why), "protocol error: %s", c->error);
    /* Tell the peer why before hanging up, when the session can still speak. */
    if (used != NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
      conn_hangup(c, c->error_code ? c->error_code : NGHTTP2_PROTOCOL_ERROR, why);
      return;
    }
    h2_conn_close(c, why);
    return;
  }
  h2_conn_flush(c);
  if (c->state == H2_CONN_HANGUP && !c->writing)
    h2_conn_close(c, "protocol error; GOAWAY sent");
}

/* A graceful GOAWAY (idle timeout, shutdown; debug: a static string) goes in two steps, as
 * gRPC's servers send it. First a notice, GOAWAY with the largest stream id, and a PING: the
 * client opens no stream after it has read it, and a request it sent before is still served.
 * Once the PING is answered (the client has read the notice, and any request it sent before
 * is in), or after H2_LINGER_MS, the final GOAWAY names the last stream processed, and the
 * connection closes once its streams are done (RFC 9113 6.8). A GOAWAY and the close in the
 * same turn used to leave a request that crossed them to a closed socket, whose reset can also
 * throw the unread GOAWAY away: the client saw the connection fail under its call. */
static void conn_goaway(h2_conn_t *c, const char *debug) {
  if (c->state != H2_CONN_OPEN)
    return;
  if (c->proto == H2_PROTO_UNKNOWN) {
    h2_conn_close(c, debug); /* it has not said a word: nothing to finish */
    return;
  }
  if (c->h1 != NULL) {
    conn_change_state(c, H2_CONN_DRAINING, NULL);
    h1_drain(c); /* closes after the reply in progress, at once if there is none */
    h2_conn_flush(c);
    return;
  }
  c->goaway_why = debug;
  if (nghttp2_submit_shutdown_notice(c->session) != 0 ||
      nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, notice_ping) != 0) {
    conn_change_state(c, H2_CONN_DRAINING, NULL);
    conn_goaway_final(c);
  } else {
    conn_change_state(c, H2_CONN_NOTICE, NULL);
  }
  h2_conn_flush(c);
}

/* The GOAWAY that ends the notice (conn_goaway): nghttp2 ignores new streams once it is sent.
 * Safe inside nghttp2's callbacks; it goes with the next flush. */
static void conn_goaway_final(h2_conn_t *c) {
  if (c->state == H2_CONN_NOTICE)
    conn_change_state(c, H2_CONN_DRAINING, NULL);
  nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(c->session), NGHTTP2_NO_ERROR,
                        (const uint8_t *)c->goaway_why, strlen(c->goaway_why));
  c->flush_pending = 1;
}

void h2_conn_drain(h2_conn_t *c) {
  conn_goaway(c, "server shutting down");
}

void h2_conn_tick(h2_conn_t *c, uint64_t now) {
  const server_config_t *cfg = &c->srv->cfg;
  char why[192];

  if (c->state == H2_CONN_CLOSING)
    return;
  if (c->state == H2_CONN_NOTICE && now >= c->notice_until) {
    conn_goaway_final(c); /* the PING after the notice was not answered in time */
    h2_conn_flush(c);
    if (c->state == H2_CONN_CLOSING)
      return;
  }
  if (!c->handshaken && cfg->handshake_timeout_ms && now - c->born >= cfg->handshake_timeout_ms) {
    snprintf(why, sizeof(why),
             c->h1 ? "handshake timeout: no complete HTTP/1.1 request head within %llu ms "
                     "(--handshake-timeout)"
                   : "handshake timeout: no HTTP/2 preface and SETTINGS within %llu ms "
                     "(--handshake-timeout)",
             (unsigned long long)cfg->handshake_timeout_ms);
    h2_conn_close(c, why);
    return;
  }
  if (c->block_since && c->state != H2_CONN_HANGUP && cfg->handshake_timeout_ms &&
      now - c->block_since >= cfg->handshake_timeout_ms) {
    snprintf(why, sizeof(why),
             "header block timeout: a request's HEADERS not ended (END_HEADERS) within %llu ms "
             "(--handshake-timeout)",
             (unsigned long long)cfg->handshake_timeout_ms);
    c->block_since = 0;
    conn_hangup(c, NGHTTP2_ENHANCE_YOUR_CALM, why);
    return;
  }
  if (!c->writing && conn_pending(c) == 0) {
    conn_out_quiet(c, now);
  } else {
    conn_out_busy(c, now); /* output no reply announced: frames of the session's own, TLS */
    if (cfg->write_timeout_ms && now - c->last_progress >= cfg->write_timeout_ms) {
      snprintf(why, sizeof(why),
               "write timeout: %zu bytes pending and %zu taken by the peer in the %llu ms it "
               "owed output, less than %u (--write-timeout)",
               conn_pending(c), c->moved, (unsigned long long)(now - c->last_progress),
               H2_PROGRESS_MIN);
      h2_conn_close(c, why);
      return;
    }
  }
  if (c->h1 != NULL && h1_tick(c, now))
    return;
  /* Requests that stopped arriving end (each stream's bounds, h2_stream_tick). */
  for (h2_stream_t *st = c->streams, *next; st != NULL; st = next) {
    next = st->next;
    h2_stream_tick(st, now, cfg->idle_timeout_ms);
    if (c->state == H2_CONN_CLOSING)
      return;
  }
  conn_release_idle(c);
  if (c->streams == NULL && c->state == H2_CONN_OPEN && cfg->idle_timeout_ms &&
      (c->h1 == NULL || h1_idle(c)) && now - c->last_active >= cfg->idle_timeout_ms) {
    log_info("conn %llu (%s): idle for %llu ms (--idle-timeout): %s", (unsigned long long)c->id,
             c->peer, (unsigned long long)(now - c->last_active),
             c->h1 ? "closing" : "sending GOAWAY");
    conn_goaway(c, "idle timeout");
  }
}

/* ---- nghttp2's memory ---------------------------------------------------------------------
 * Blocks of a page or more (its frame buffer, its stream map) come from the server's
 * h2_pages, the rest from malloc. The frame buffer only ever holds the frame being sent, so
 * an idle connection gives its pages back (h2_conn_tick), and 10,000 idle connections do not
 * keep 10,000 of them resident. */

static void track_block(h2_conn_t *c, void *p) {
  for (unsigned i = 0; i < H2_CONN_BLOCKS; i++) {
    if (c->blocks[i] == NULL) {
      c->blocks[i] = p;
      return;
    }
  }
  /* Untracked: it is never discarded, which costs memory, not correctness. */
}

static void untrack_block(h2_conn_t *c, const void *p) {
  for (unsigned i = 0; i < H2_CONN_BLOCKS; i++)
    if (c->blocks[i] == p)
      c->blocks[i] = NULL;
}

static void *conn_malloc(size_t size, void *ud) {
  h2_conn_t *c = ud;
  void *p = h2_pages_alloc(c->srv->pages, size);

  if (p == NULL)
    return malloc(size);
  if (c->in_new && size >= 16384 && c->framebuf == NULL)
    c->framebuf = p; /* the one large buffer a new session allocates */
  else
    track_block(c, p);
  return p;
}

static void conn_mfree(void *p, void *ud) {
  h2_conn_t *c = ud;

  if (p == NULL)
    return;
  if (h2_pages_size(c->srv->pages, p) == 0) {
    free(p);
    return;
  }
  if (p == c->framebuf)
    c->framebuf = NULL;
  untrack_block(c, p);
  h2_pages_release(c->srv->pages, p);
}

static void *conn_calloc(size_t n, size_t size, void *ud) {
  h2_conn_t *c = ud;
  void *p;

  if (size != 0 && n > SIZE_MAX / size)
    return NULL;
  p = h2_pages_alloc(c->srv->pages, n * size); /* zero, untouched */
  if (p == NULL)
    return calloc(n, size);
  track_block(c, p);
  return p;
}

static void *conn_realloc(void *p, size_t size, void *ud) {
  h2_conn_t *c = ud;
  size_t old;
  void *q;

  if (p == NULL)
    return conn_malloc(size, ud);
  old = h2_pages_size(c->srv->pages, p);
  if (old == 0)
    return realloc(p, size); /* malloc's block stays malloc's */
  if (size <= old)
    return p;
  q = conn_malloc(size, ud);
  if (q == NULL)
    return NULL;
  memcpy(q, p, old);
  if (p == c->framebuf) {
    untrack_block(c, q); /* conn_malloc tracked it as another block */
    c->framebuf = q;
  }
  conn_mfree(p, ud);
  return q;
}

/* Idle: no stream, nothing to send or being sent. The frame buffer's contents are dead once
 * nghttp2 has nothing more to send, and wbuf is empty between writes. */
static void conn_release_idle(h2_conn_t *c) {
  if (c->out_idle || c->streams != NULL || c->writing || c->in_session)
    return;
  if (c->h1 != NULL) {
    if (h1_want_write(c))
      return;
    h1_release_idle(c);
    free(c->wbuf);
    c->wbuf = NULL;
    c->wcap = 0;
    c->out_idle = 1;
    return;
  }
  if (c->session == NULL || nghttp2_session_want_write(c->session))
    return;
  if (c->framebuf)
    h2_pages_discard(c->srv->pages, c->framebuf);
  /* The stream map's bucket table is all zeros once its last stream has left (a removed
   * bucket is cleared), exactly as calloc gave it. Discarding a block that holds only zeros
   * changes nothing nghttp2 can read, so no assumption about what it holds is needed. */
  for (unsigned i = 0; i < H2_CONN_BLOCKS; i++)
    if (c->blocks[i])
      h2_pages_discard_zero(c->srv->pages, c->blocks[i]);
  free(c->wbuf);
  c->wbuf = NULL;
  c->wcap = 0;
  c->out_idle = 1;
}

static int session_new(h2_conn_t *c) {
  nghttp2_mem mem = {c, conn_malloc, conn_mfree, conn_calloc, conn_realloc};
  nghttp2_session_callbacks *cbs;
  nghttp2_option *opt;
  nghttp2_settings_entry iv[4];
  int rc;

  if (nghttp2_session_callbacks_new(&cbs) != 0)
    return -ENOMEM;
  nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, on_invalid_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
  if (nghttp2_option_new(&opt) != 0) {
    nghttp2_session_callbacks_del(cbs);
    return -ENOMEM;
  }
  nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024);
  nghttp2_option_set_no_auto_window_update(opt, 1);
#ifdef CLUED_HAVE_NGHTTP2_MAX_CONTINUATIONS
  /* nghttp2 ends the connection (PROTOCOL_ERROR) after this many CONTINUATION frames in one
   * header block; its default, 8, refused a block well under --max-header-bytes that a
   * client sent in 4 KiB frames. An encoded block is no longer than its decoded list (each
   * field counts 32 bytes more than its representation's overhead), so one within the limit
   * in frames of at least H2_MIN_HEADER_FRAME bytes always fits. The bound stays what it is
   * for: one block is at most this many frames of at most 16 KiB (SETTINGS_MAX_FRAME_SIZE),
   * so what a block of empty or tiny frames costs is bounded as before. */
  nghttp2_option_set_max_continuations(opt,
                                       h2_max_continuations(c->srv->cfg.max_header_list_bytes));
#endif
  c->in_new = 1;
  rc = nghttp2_session_server_new3(&c->session, cbs, c, opt, &mem);
  c->in_new = 0;
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rc != 0)
    return -ENOMEM;
  /* nghttp2's limit, not the peer's (advertise_stream_limit): clued refuses a stream past
   * the advertised one, and ends the connection before this one is reached. */
  iv[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
  iv[0].value = c->srv->cfg.max_concurrent_streams + H2_REFUSED_BURST + 1;
  /* A stream's credit comes back only as its messages are taken (h2_stream.c), so its
   * window must hold the largest request message, or that message could never arrive. */
  iv[1].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
  iv[1].value = c->srv->cfg.max_message_bytes + GRPC_FRAME_PREFIX > (1u << 20)
                    ? (c->srv->cfg.max_message_bytes + GRPC_FRAME_PREFIX > NGHTTP2_MAX_WINDOW_SIZE
                           ? NGHTTP2_MAX_WINDOW_SIZE
                           : (uint32_t)(c->srv->cfg.max_message_bytes + GRPC_FRAME_PREFIX))
                    : 1u << 20;
  iv[2].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE;
  iv[2].value = (uint32_t)c->srv->cfg.max_header_list_bytes;
  /* gRPC has no use for RFC 7540 priorities (RFC 9113 deprecates them). Without them nghttp2
   * keeps no priority tree: a closed stream leaves the stream map at once instead of being
   * retained for the tree, and PRIORITY frames do not create idle streams. So a connection
   * that has served its calls holds no stream, and its map's table can go back (idle). */
  iv[3].settings_id = NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES;
  iv[3].value = 1;
  rc = nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 4);
  if (rc == 0) /* a wider connection window too, so large requests are not throttled */
    rc = nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 8 << 20);
  if (rc != 0) {
    nghttp2_session_del(c->session);
    c->session = NULL;
    return -ENOMEM;
  }
  return 0;
}

static void peer_name(h2_conn_t *c) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;

  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET) {
      struct sockaddr_in *a = (struct sockaddr_in *)&ss;
      uv_ip4_name(a, host, sizeof(host));
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
      uv_ip6_name(a, host, sizeof(host));
      port = ntohs(a->sin6_port);
    }
    c->peer_key = server_peer_key(&ss);
  }
  snprintf(c->peer, sizeof(c->peer), ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
}

int h2_conn_accept(server_t *srv, h2_conn_t **out) {
  h2_conn_t *c = calloc(1, sizeof(*c));
  int rc;

  *out = NULL;
  if (c == NULL)
    return UV_ENOMEM;
  c->srv = srv;
  c->id = ++srv->next_conn_id;
  c->state = H2_CONN_OPEN;
  c->born = c->last_active = c->last_progress = uv_now(srv->loop);
  c->quiet_since = c->born | 1;
  c->refuse_tokens = H2_REFUSED_BURST;
  c->refuse_stamp = c->born / 1000;
  rc = uv_tcp_init(srv->loop, &c->tcp);
  if (rc < 0) {
    free(c);
    return rc;
  }
  rc = uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&c->tcp);
  if (rc == 0)
    rc = session_new(c) == 0 ? 0 : UV_ENOMEM;
  if (rc < 0) {
    uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
    return rc;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  peer_name(c);
  c->next = srv->conns;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;
  strangers_append(c);
  rc = conn_tls_start(c);
  if (rc == 0)
    rc = conn_read_start(c);
  if (rc < 0) {
    h2_conn_close(c, uv_strerror(rc));
    return 0;
  }
  *out = c;
  /* Our SETTINGS wait for the first bytes: an HTTP/1.1 client must not read them. */
  return 0;
}
