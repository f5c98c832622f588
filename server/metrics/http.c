#include "metrics/http.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "metrics/metrics.h"

/* READING (the request head) -> WRITING (the response, then our half of the connection
 * shut down; what the peer still sends is read and dropped until it closes, so that closing
 * with unread input does not reset the connection before it read the answer) -> CLOSING;
 * CLOSING can follow either (timeout, error, the peer's end, server shutdown). */
typedef enum mconn_state {
  MCONN_READING,
  MCONN_WRITING,
  MCONN_CLOSING,
} mconn_state_t;

typedef struct metrics_http metrics_http_t;

typedef struct mconn {
  mconn_state_t state;
  metrics_http_t *h;
  struct mconn *prev, *next;
  uv_tcp_t tcp;
  uv_timer_t timer; /* the request head, then the whole exchange, must end before it fires */
  uint64_t born;    /* uv_now() when accepted */
  uint64_t peer;    /* the peer's address as a key (server_peer_key()); 0: unknown */
  uv_write_t wr;
  uv_shutdown_t sd;
  int open_handles; /* freed when both handles are closed */
  char head[METRICS_HTTP_MAX_HEAD];
  size_t len;
  char *resp;
} mconn_t;

struct metrics_http {
  server_t *srv;
  uv_tcp_t listener;
  mconn_t *conns;
  size_t nconns;
  int refs; /* the listener, the log timer and each connection */
  char bound[160];
  /* Connections closed for newer ones and closed at their time limit since the last line
   * that said so: at most one line a second, so that a peer that opens connections as fast
   * as it can does not spend the log's budget (--log-rate). */
  uint64_t evicted, timed_out;
  uint64_t logged_ms;   /* uv_now() of that line; 0: none yet */
  uv_timer_t log_timer; /* writes the line a second after the last one */
};

static void http_unref(metrics_http_t *h) {
  if (--h->refs == 0)
    free(h);
}

static void mconn_handle_closed(uv_handle_t *hd) {
  mconn_t *c = hd->data;

  if (--c->open_handles > 0)
    return;
  free(c->resp);
  http_unref(c->h);
  free(c);
}

/* The one place a metrics connection changes state. */
static void mconn_set_state(mconn_t *c, mconn_state_t to) {
  if (c->state == MCONN_CLOSING)
    return;
  c->state = to;
  if (to != MCONN_CLOSING)
    return;
  if (c->prev)
    c->prev->next = c->next;
  else
    c->h->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->h->nconns--;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->tcp, mconn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, mconn_handle_closed);
}

static void on_timeout(uv_timer_t *t);

static void on_shutdown(uv_shutdown_t *sd, int status) {
  mconn_t *c = sd->data;
  if (status != 0)
    mconn_set_state(c, MCONN_CLOSING);
}

static void on_written(uv_write_t *w, int status) {
  mconn_t *c = w->data;

  if (status != 0 || c->state == MCONN_CLOSING) {
    mconn_set_state(c, MCONN_CLOSING);
    return;
  }
  c->sd.data = c;
  if (uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
    mconn_set_state(c, MCONN_CLOSING);
}

/* Send status line, headers and body (owned by c from here), then close. */
static void respond(mconn_t *c, const char *status, const char *ctype, char *body, size_t blen,
                    const char *extra) {
  char head[512];
  int n;
  uv_buf_t bufs[1];

  n = snprintf(head, sizeof(head),
               "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
               status, ctype, blen, extra ? extra : "");
  c->resp = malloc((size_t)n + blen);
  if (c->resp == NULL) {
    free(body);
    mconn_set_state(c, MCONN_CLOSING);
    return;
  }
  memcpy(c->resp, head, (size_t)n);
  if (blen)
    memcpy(c->resp + n, body, blen);
  free(body);
  bufs[0] = uv_buf_init(c->resp, (unsigned)((size_t)n + blen));
  c->wr.data = c;
  mconn_set_state(c, MCONN_WRITING);
  {
    /* The head came: the rest of the exchange's time is the answer's. */
    uint64_t age = uv_now(c->h->srv->loop) - c->born;
    uv_timer_start(&c->timer, on_timeout,
                   age < METRICS_HTTP_TIMEOUT_MS ? METRICS_HTTP_TIMEOUT_MS - age : 1, 0);
  }
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, bufs, 1, on_written) != 0)
    mconn_set_state(c, MCONN_CLOSING);
}

static void respond_text(mconn_t *c, const char *status, const char *text, const char *extra) {
  size_t len = strlen(text);
  char *b = malloc(len + 1);

  if (b == NULL) {
    mconn_set_state(c, MCONN_CLOSING);
    return;
  }
  memcpy(b, text, len + 1);
  respond(c, status, "text/plain; charset=utf-8", b, len, extra);
}

/* How many Host header fields the head's lines after the request line at eol hold, up to
 * the empty line that ends it (RFC 9112 3.2: an HTTP/1.1 request has exactly one, any request
 * at most one). */
static int host_fields(const char *eol) {
  int n = 0;

  for (const char *line = eol; (line = strchr(line, '\n')) != NULL;) {
    line++;
    if (*line == '\n' || (line[0] == '\r' && line[1] == '\n'))
      break;
    if (strncasecmp(line, "host:", 5) == 0)
      n++;
  }
  return n;
}

/* The head is complete: answer it. The request line matters, and the Host field only as
 * RFC 9112 asks; other header fields are read past (no authentication: the metrics carry
 * nothing about callers). */
static void handle_request(mconn_t *c) {
  char *sp1, *sp2, *eol;
  int hosts;
  size_t plen;
  char *body;
  size_t blen;

  c->head[c->len] = '\0';
  eol = strpbrk(c->head, "\r\n");
  sp1 = strchr(c->head, ' ');
  sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
  if (eol == NULL || sp1 == NULL || sp2 == NULL || sp2 > eol || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
    respond_text(c, "400 Bad Request", "bad request\n", NULL);
    return;
  }
  hosts = host_fields(eol);
  if (hosts > 1 || (hosts == 0 && strncmp(sp2 + 1, "HTTP/1.1", 8) == 0)) {
    respond_text(c, "400 Bad Request", "an HTTP/1.1 request needs exactly one Host field\n", NULL);
    return;
  }
  if ((size_t)(sp1 - c->head) != 3 || memcmp(c->head, "GET", 3) != 0) {
    respond_text(c, "405 Method Not Allowed", "only GET\n", "Allow: GET\r\n");
    return;
  }
  plen = strcspn(sp1 + 1, " ?");
  if (plen != strlen("/metrics") || memcmp(sp1 + 1, "/metrics", plen) != 0) {
    respond_text(c, "404 Not Found", "not found: try /metrics\n", NULL);
    return;
  }
  if (metrics_render(c->h->srv, &body, &blen) != 0) {
    respond_text(c, "503 Service Unavailable", "out of memory\n", NULL);
    return;
  }
  respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, blen, NULL);
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
  mconn_t *c = hd->data;
  (void)suggested;
  /* One byte stays free for the terminating NUL. Once answered, input is dropped. */
  if (c->state != MCONN_READING)
    *buf = uv_buf_init(c->head, (unsigned)sizeof(c->head));
  else
    *buf = uv_buf_init(c->head + c->len, (unsigned)(sizeof(c->head) - 1 - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  mconn_t *c = s->data;
  (void)buf;

  if (n < 0) {
    mconn_set_state(c, MCONN_CLOSING); /* the peer's end (or an error), in any state */
    return;
  }
  if (c->state != MCONN_READING)
    return;
  if (memchr(c->head + c->len, '\0', (size_t)n) != NULL) {
    /* Not HTTP, and the text searches below would stop at it: answered now. */
    respond_text(c, "400 Bad Request", "bad request: a NUL byte in the request head\n", NULL);
    return;
  }
  c->len += (size_t)n;
  c->head[c->len] = '\0';
  if (strstr(c->head, "\r\n\r\n") || strstr(c->head, "\n\n")) {
    handle_request(c);
    return;
  }
  if (c->len >= sizeof(c->head) - 1)
    respond_text(c, "431 Request Header Fields Too Large", "request head too large\n", NULL);
}

static void log_closed(metrics_http_t *h) {
  if (h->evicted + h->timed_out == 0)
    return;
  log_info("metrics: connections closed since the last such line: %llu for newer ones (of the "
           "address holding the most places, %d at most from one address and %d in all), %llu "
           "at their time limit (%d ms for the request head, %d ms in all)",
           (unsigned long long)h->evicted, METRICS_HTTP_MAX_PER_PEER, METRICS_HTTP_MAX_CONNS,
           (unsigned long long)h->timed_out, METRICS_HTTP_HEAD_TIMEOUT_MS, METRICS_HTTP_TIMEOUT_MS);
  h->evicted = h->timed_out = 0;
  h->logged_ms = uv_now(h->srv->loop);
}

static void on_log_timer(uv_timer_t *t) {
  log_closed(t->data);
}

/* A connection was closed for one of the counted reasons: said now, or a second after the
 * last line. */
static void closed_note(metrics_http_t *h) {
  uint64_t now = uv_now(h->srv->loop);

  if (uv_is_active((uv_handle_t *)&h->log_timer))
    return;
  if (h->logged_ms == 0 || now - h->logged_ms >= 1000)
    log_closed(h);
  else
    uv_timer_start(&h->log_timer, on_log_timer, h->logged_ms + 1000 - now, 0);
}

static void on_timeout(uv_timer_t *t) {
  mconn_t *c = t->data;

  c->h->timed_out++;
  closed_note(c->h);
  mconn_set_state(c, MCONN_CLOSING);
}

/* Whether c holds a place without use: its request head still incomplete, or its answer
 * not taken for as long as a head may take. */
static int mconn_idle(const mconn_t *c, uint64_t now) {
  return c->state == MCONN_READING ||
         (c->state == MCONN_WRITING && now - c->born >= METRICS_HTTP_HEAD_TIMEOUT_MS);
}

/* How many places the address keyed peer holds (a fresh connection counted). */
static size_t peer_places(const metrics_http_t *h, uint64_t peer) {
  size_t n = 0;

  for (const mconn_t *c = h->conns; c; c = c->next)
    n += c->peer == peer;
  return n;
}

/* The connection to close for fresh, the listener past its cap or fresh's address past its
 * share: one of the address holding the most places (fresh counted), whatever their state, so
 * that no address can take every place; within it one without use (mconn_idle) if there is
 * one, so that a scrape being answered outlives connections that sent nothing; then the
 * oldest, which has had the longest to be answered and read, so that a peer that stops reading
 * loses its places in the order it took them. Never fresh itself: NULL only when fresh is the
 * only connection. Fresh's address past its share holds the most (every other one holds at
 * most its share), so there it loses one of its own. */
static mconn_t *mconn_victim(metrics_http_t *h, const mconn_t *fresh) {
  uint64_t now = uv_now(h->srv->loop);
  mconn_t *best = NULL;
  size_t best_n = 0;
  int best_idle = 0;

  /* Newest first: on a tie the later (older) one wins. At most METRICS_HTTP_MAX_CONNS + 1. */
  for (mconn_t *c = h->conns; c; c = c->next) {
    size_t n;
    int idle;
    if (c == fresh)
      continue;
    n = peer_places(h, c->peer);
    idle = mconn_idle(c, now);
    if (best == NULL || n > best_n || (n == best_n && idle >= best_idle)) {
      best = c;
      best_n = n;
      best_idle = idle;
    }
  }
  return best;
}

/* The peer's address as server_peer_key() keys it; 0 unknown. */
static uint64_t peer_key(uv_tcp_t *tcp) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);

  return uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) == 0 ? server_peer_key(&ss) : 0;
}

static void on_connection(uv_stream_t *l, int status) {
  metrics_http_t *h = l->data;
  mconn_t *c, *victim;

  if (status < 0)
    return;
  if ((c = calloc(1, sizeof(*c))) == NULL)
    return;
  c->h = h;
  c->state = MCONN_READING;
  c->born = uv_now(l->loop);
  uv_tcp_init(l->loop, &c->tcp);
  uv_timer_init(l->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  h->refs++;
  c->next = h->conns;
  if (h->conns)
    h->conns->prev = c;
  h->conns = c;
  h->nconns++;
  /* Accepted even past the cap, so that the backlog does not hold it. */
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
    mconn_set_state(c, MCONN_CLOSING);
    return;
  }
  c->peer = peer_key(&c->tcp);
  if (h->nconns > METRICS_HTTP_MAX_CONNS || peer_places(h, c->peer) > METRICS_HTTP_MAX_PER_PEER) {
    /* Either way another connection is open: the cap and the share are at least 1. */
    victim = mconn_victim(h, c);
    assert(victim != NULL);
    h->evicted++;
    closed_note(h);
    mconn_set_state(victim, MCONN_CLOSING);
  }
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    mconn_set_state(c, MCONN_CLOSING);
    return;
  }
  uv_timer_start(&c->timer, on_timeout, METRICS_HTTP_HEAD_TIMEOUT_MS, 0);
}

/* The listener's or the log timer's close. */
static void on_listener_closed(uv_handle_t *hd) {
  http_unref(hd->data);
}

static int metrics_http_start(server_t *srv) {
  struct sockaddr_storage ss;
  metrics_http_t *h;
  int len = sizeof(ss), rc;
  char host[INET6_ADDRSTRLEN] = "?";

  if (srv->cfg.metrics_listen == NULL)
    return 0;
  if (metrics_new(&srv->metrics) != 0) {
    log_error("metrics: out of memory");
    return UV_ENOMEM;
  }
  memset(&ss, 0, sizeof(ss));
  if (server_parse_listen(srv->cfg.metrics_listen, &ss) != 0) {
    log_error("invalid --metrics-listen address \"%s\" (want " SERVER_LISTEN_FORMS ")",
              srv->cfg.metrics_listen);
    return UV_EINVAL;
  }
  if (!server_is_loopback(&ss) && !srv->cfg.insecure_cleartext) {
    log_error("refusing to serve metrics in cleartext on %s, a non-loopback address; give "
              "--insecure-cleartext if a private network or a proxy protects it",
              srv->cfg.metrics_listen);
    return UV_EINVAL;
  }
  if ((h = calloc(1, sizeof(*h))) == NULL)
    return UV_ENOMEM;
  h->srv = srv;
  h->refs = 1;
  uv_tcp_init(srv->loop, &h->listener);
  h->listener.data = h;
  rc = uv_tcp_bind(&h->listener, (struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&h->listener, 64, on_connection);
  if (rc < 0) {
    log_error("cannot listen for metrics on %s: %s", srv->cfg.metrics_listen, uv_strerror(rc));
    uv_close((uv_handle_t *)&h->listener, on_listener_closed);
    return rc;
  }
  if (uv_tcp_getsockname(&h->listener, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
      snprintf(h->bound, sizeof(h->bound), "[%s]:%d", host, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    } else {
      uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
      snprintf(h->bound, sizeof(h->bound), "%s:%d", host, ntohs(((struct sockaddr_in *)&ss)->sin_port));
    }
  }
  uv_timer_init(srv->loop, &h->log_timer);
  h->log_timer.data = h;
  h->refs++;
  log_info("metrics on http://%s/metrics", h->bound);
  srv->metrics_http = h;
  return 0;
}

static void metrics_http_stop(server_t *srv) {
  metrics_http_t *h = srv->metrics_http;

  if (h == NULL)
    return;
  srv->metrics_http = NULL;
  while (h->conns)
    mconn_set_state(h->conns, MCONN_CLOSING);
  log_closed(h);
  uv_close((uv_handle_t *)&h->log_timer, on_listener_closed);
  uv_close((uv_handle_t *)&h->listener, on_listener_closed);
}

static void metrics_release(server_t *srv) {
  metrics_free(srv->metrics);
  srv->metrics = NULL;
}

const server_module_t metrics_module = {"metrics", metrics_http_start, metrics_http_stop, NULL,
                                        metrics_release};
