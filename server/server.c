#include "server.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "net/h2_conn.h"
#include "net/h2_pages.h"
#include "net/tls.h"
#include "rpc/call.h"

void server_config_defaults(server_config_t *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  strcpy(cfg->listen, "127.0.0.1:50051");
  cfg->max_message_bytes = 4u << 20;
  cfg->max_concurrent_streams = 100;
  cfg->max_header_list_bytes = 64 * 1024;
  cfg->max_header_count = 128;
  cfg->max_conn_buffer = 1u << 20;
  cfg->max_conn_inbound = 128u << 20;
  cfg->max_inbound = (size_t)1 << 30;
  cfg->max_outbound = (size_t)1 << 30;
  cfg->max_public_outbound = 16u << 20;
  cfg->max_connections = 10240;
  cfg->handshake_timeout_ms = 10000;
  cfg->idle_timeout_ms = 300000;
  cfg->write_timeout_ms = 60000;
  cfg->unauth_stream_age_ms = 3600000;
  cfg->max_public_streams = 4096;
  cfg->keepalive_min_ping_ms = 300000;
  cfg->grace_ms = 5000;
  cfg->max_stream_age_ms = 3600000;
  cfg->db_pool_size = 8;
  cfg->db_batch_inflight = 1;
  cfg->db_write_batch_inflight = 2;
  cfg->db_direct_moves = 1;
  cfg->db_queue_max = 1024;
  cfg->db_statement_timeout_ms = 30000;
  cfg->db_lock_timeout_ms = 3000;
  cfg->replica_max_lag_ms = 5000;
  cfg->auth_cache_ttl_ms = 1000;
  cfg->auth_cache_size = 4096;
  cfg->token_issues_per_hour = 600;
  cfg->db_queue_per_conn = 128;
  cfg->accepted_deadline_days = 30;
  cfg->prelim_deadline_days = 90;
  cfg->filed_deadline_days = 90;
  cfg->checkpoint_every = 1000;
  cfg->checkpoint_ms = 10000;
  cfg->schema_check_ms = 60000;
}

int64_t server_now_ms(const server_t *srv) {
  uv_timeval64_t tv;
  uv_gettimeofday(&tv);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000 + srv->cfg.clock_offset_ms;
}

static uint64_t fnv1a_key(const uint8_t *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;

  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 0x100000001b3ull;
  return h | (1ull << 63);
}

uint64_t server_peer_key(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET)
    return fnv1a_key((const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr, 4);
  if (ss->ss_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    return IN6_IS_ADDR_V4MAPPED(a) ? fnv1a_key(a->s6_addr + 12, 4) : fnv1a_key(a->s6_addr, 8);
  }
  return 0;
}

/* "host:port", "[v6]:port" or ":port" into a socket address. */
int server_parse_listen(const char *s, struct sockaddr_storage *ss) {
  char host[128];
  const char *colon;
  long port;
  char *end;

  if (s[0] == '[') {
    const char *rb = strchr(s, ']');
    if (rb == NULL || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof(host))
      return UV_EINVAL;
    memcpy(host, s + 1, (size_t)(rb - s - 1));
    host[rb - s - 1] = '\0';
    colon = rb + 1;
  } else {
    colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
      return UV_EINVAL;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    if (host[0] == '\0')
      strcpy(host, "0.0.0.0");
  }
  errno = 0;
  port = strtol(colon + 1, &end, 10);
  if (errno || *end != '\0' || end == colon + 1 || port < 0 || port > 65535)
    return UV_EINVAL;
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
    return 0;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  return UV_EINVAL;
}

/* The sweep (h2_conn_tick) enforces the connection and stream timeouts that move with every
 * byte (handshake, idle, write, an unfinished request), so it reads clocks instead of keeping
 * a timer per connection that each byte would re-arm. A timeout fires up to one interval
 * late: a sixteenth of the shortest of them keeps that within about 6% (a 1 s
 * --handshake-timeout closed after up to 2 s with a sweep once a second). At most once a
 * second, and at least SWEEP_MIN_MS apart, so a pass over every connection runs at most 20
 * times a second whatever the flags. */
#define SWEEP_MIN_MS 50
#define SWEEP_MAX_MS 1000

static uint64_t sweep_interval(const server_config_t *cfg) {
  const uint64_t t[] = {cfg->handshake_timeout_ms, cfg->idle_timeout_ms, cfg->write_timeout_ms};
  uint64_t ms = SWEEP_MAX_MS;

  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
    if (t[i] != 0 && t[i] / 16 < ms)
      ms = t[i] / 16;
  return ms < SWEEP_MIN_MS ? SWEEP_MIN_MS : ms;
}

/* Large requests (up to --max-inbound of them at once) are freed into the C library's heap,
 * which keeps the pages: once this much has been let go, the sweep hands the free pages back
 * to the kernel, so a burst of them does not leave the server's memory at its peak. */
#define SWEEP_TRIM_BYTES ((size_t)16 << 20)

/* Requests this large count towards the heap's trim; the small ones of busy traffic reuse
 * their memory and would only have it trimmed and faulted back. */
#define TRIM_MIN_BYTES ((size_t)32 * 1024)

size_t server_db_queue_per_user(const server_config_t *cfg) {
  size_t share = (cfg->db_queue_max + 3) / 4;

  if (cfg->db_queue_per_user)
    return cfg->db_queue_per_user;
  return share < cfg->db_queue_per_conn ? cfg->db_queue_per_conn : share;
}

size_t server_max_public_inbound(const server_t *srv) {
  return srv->cfg.max_inbound / 8;
}

size_t server_max_conns_per_user(const server_t *srv) {
  if (srv->cfg.max_conns_per_user)
    return srv->cfg.max_conns_per_user;
  if (srv->cfg.max_connections == 0)
    return SIZE_MAX;
  return srv->cfg.max_connections / 16 ? srv->cfg.max_connections / 16 : 1;
}

size_t server_max_user_inbound(const server_t *srv) {
  return srv->cfg.max_user_inbound ? srv->cfg.max_user_inbound : srv->cfg.max_inbound / 4;
}

unsigned server_max_public_streams_per_addr(const server_config_t *cfg) {
  unsigned n = cfg->max_public_streams_per_addr ? cfg->max_public_streams_per_addr
                                                : cfg->max_public_streams / 4;

  return n ? n : 1;
}

size_t server_max_user_outbound(const server_t *srv) {
  return srv->cfg.max_user_outbound ? srv->cfg.max_user_outbound : srv->cfg.max_outbound / 4;
}

void server_inbound_release(server_t *srv, size_t n) {
  srv->inbound -= n;
  if (n >= TRIM_MIN_BYTES)
    srv->inbound_freed += n;
}

static void on_sweep(uv_timer_t *t) {
  server_t *srv = t->data;
  uint64_t now = uv_now(srv->loop);
  h2_conn_t *c, *next;

  for (c = srv->conns; c; c = next) {
    next = c->next;
    h2_conn_tick(c, now);
  }
  h2_conn_log_room(srv, now);
  tls_server_check_expiry(srv->tls, server_now_ms(srv));
  if (srv->inbound_freed >= SWEEP_TRIM_BYTES) {
    srv->inbound_freed = 0;
    (void)malloc_trim(0);
  }
}

static void on_connection(uv_stream_t *l, int status) {
  server_t *srv = (server_t *)((char *)l - offsetof(server_t, listener));
  h2_conn_t *c;
  int rc;

  if (status < 0) {
    log_warn("accept failed: %s", uv_strerror(status));
    return;
  }
  rc = h2_conn_accept(srv, &c);
  if (rc < 0)
    log_warn("accept failed: %s", uv_strerror(rc));
  else if (c && srv->cfg.max_connections && srv->nconns > srv->cfg.max_connections)
    h2_conn_make_room(srv, c);
}

static void on_signal(uv_signal_t *h, int signum) {
  server_t *srv = h->data;
  log_info("received %s: shutting down (grace period %u ms)", signum == SIGINT ? "SIGINT" : "SIGTERM",
           srv->cfg.grace_ms);
  server_shutdown(srv);
}

static void on_sighup(uv_signal_t *h, int signum) {
  server_t *srv = h->data;
  (void)signum;
  if (srv->tls == NULL) {
    /* Handled all the same: SIGHUP's default action would end the process. */
    log_info("received SIGHUP: cleartext, no TLS certificate to reload; nothing to do");
    return;
  }
  log_info("received SIGHUP: reloading the TLS certificate");
  (void)tls_server_reload(srv->tls); /* on failure the old one stays; the reason is logged */
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: the only addresses cleartext may listen on
 * without --insecure-cleartext, since nothing on them crosses a network. */
int server_is_loopback(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
  if (ss->ss_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
  }
  return 0;
}

/* TLS from the configuration, or the refusal of cleartext where it would not be safe. */
static int server_tls_init(server_t *srv, const server_config_t *cfg,
                           const struct sockaddr_storage *ss) {
  tls_files_t files = {cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca};

  if (cfg->tls_cert == NULL && cfg->tls_key == NULL) {
    if (cfg->tls_client_ca != NULL) {
      log_error("--tls-client-ca needs --tls-cert and --tls-key");
      return UV_EINVAL;
    }
    if (!server_is_loopback(ss) && !cfg->insecure_cleartext) {
      log_error("refusing to serve cleartext HTTP/2 on %s, a non-loopback address: tokens "
                "would cross the network unencrypted. Give --tls-cert and --tls-key, or "
                "--insecure-cleartext if a TLS proxy or a private network protects it",
                cfg->listen);
      return UV_EINVAL;
    }
    return 0;
  }
  if (cfg->tls_cert == NULL || cfg->tls_key == NULL) {
    log_error("TLS needs both --tls-cert and --tls-key");
    return UV_EINVAL;
  }
  return tls_server_new(&files, &srv->tls) == 0 ? 0 : UV_EINVAL;
}

static void bound_name(server_t *srv) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  char host[INET6_ADDRSTRLEN] = "?";

  if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len) != 0)
    return;
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
    snprintf(srv->bound, sizeof(srv->bound), "[%s]:%d", host,
             ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
  } else {
    uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
    snprintf(srv->bound, sizeof(srv->bound), "%s:%d", host,
             ntohs(((struct sockaddr_in *)&ss)->sin_port));
  }
}

int server_init(server_t *srv, uv_loop_t *loop, const server_config_t *cfg) {
  struct sockaddr_storage ss;
  int rc;

  memset(srv, 0, sizeof(*srv));
  srv->loop = loop;
  srv->cfg = *cfg;
  srv->state = SERVER_RUNNING;
  srv->stream_accept = rpc_call_accept;
  memset(&ss, 0, sizeof(ss));
  rc = server_parse_listen(cfg->listen, &ss);
  if (rc < 0) {
    log_error("invalid listen address \"%s\" (want " SERVER_LISTEN_FORMS ")", cfg->listen);
    return rc;
  }
  if (cfg->console_dir != NULL) {
    struct stat st;
    srv->console_root = realpath(cfg->console_dir, NULL);
    if (srv->console_root == NULL || stat(srv->console_root, &st) != 0 || !S_ISDIR(st.st_mode)) {
      log_error("--console-dir %s is not a directory", cfg->console_dir);
      free(srv->console_root);
      srv->console_root = NULL;
      return UV_EINVAL;
    }
  }
  if (h2_pages_new(&srv->pages) != 0) {
    free(srv->console_root);
    srv->console_root = NULL;
    return UV_ENOMEM;
  }
  rc = server_tls_init(srv, cfg, &ss);
  if (rc < 0) {
    h2_pages_free(srv->pages);
    srv->pages = NULL;
    free(srv->console_root);
    srv->console_root = NULL;
    return rc;
  }
  uv_tcp_init(loop, &srv->listener);
  rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&srv->listener, 4096, on_connection);
  if (rc < 0) {
    log_error("cannot listen on %s: %s", cfg->listen, uv_strerror(rc));
    uv_close((uv_handle_t *)&srv->listener, NULL);
    tls_server_free(srv->tls);
    srv->tls = NULL;
    h2_pages_free(srv->pages);
    srv->pages = NULL;
    free(srv->console_root);
    srv->console_root = NULL;
    return rc;
  }
  bound_name(srv);
  uv_signal_init(loop, &srv->sigint);
  uv_signal_init(loop, &srv->sigterm);
  srv->sigint.data = srv->sigterm.data = srv;
  uv_signal_start(&srv->sigint, on_signal, SIGINT);
  uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
  uv_signal_init(loop, &srv->sighup);
  srv->sighup.data = srv;
  uv_signal_start(&srv->sighup, on_sighup, SIGHUP);
  uv_timer_init(loop, &srv->grace_timer);
  srv->grace_timer.data = srv;
  uv_timer_init(loop, &srv->sweep_timer);
  srv->sweep_timer.data = srv;
  uv_timer_start(&srv->sweep_timer, on_sweep, sweep_interval(&srv->cfg), sweep_interval(&srv->cfg));
  uv_idle_init(loop, &srv->flush_idle);
  srv->flush_idle.data = srv;
  return 0;
}

int server_start_modules(server_t *srv, const server_module_t *const *mods, size_t n) {
  for (size_t i = 0; i < n; i++) {
    int rc;
    if (srv->nmodules == SERVER_MAX_MODULES) {
      log_error("too many server modules (%d at most)", SERVER_MAX_MODULES);
      return -ENOMEM;
    }
    srv->modules[srv->nmodules++] = mods[i];
    rc = mods[i]->start ? mods[i]->start(srv) : 0;
    if (rc != 0) {
      log_error("cannot start %s: %s", mods[i]->name, rc < 0 ? strerror(-rc) : "failed");
      return rc;
    }
  }
  return 0;
}

/* The last step of a shutdown: close the server's own handles so the loop runs dry. */
static void server_stop(server_t *srv) {
  if (srv->state == SERVER_STOPPED)
    return;
  srv->state = SERVER_STOPPED;
  uv_close((uv_handle_t *)&srv->grace_timer, NULL);
  uv_close((uv_handle_t *)&srv->sweep_timer, NULL);
  uv_close((uv_handle_t *)&srv->flush_idle, NULL); /* no connection is left to flush */
  uv_close((uv_handle_t *)&srv->sigint, NULL);
  uv_close((uv_handle_t *)&srv->sigterm, NULL);
  uv_close((uv_handle_t *)&srv->sighup, NULL);
  for (unsigned i = srv->nmodules; i-- > 0;)
    if (srv->modules[i]->close)
      srv->modules[i]->close(srv);
}

void server_conn_closed(server_t *srv) {
  if (srv->state == SERVER_DRAINING && srv->nconns == 0)
    server_stop(srv);
}

static void on_grace(uv_timer_t *t) {
  server_t *srv = t->data;
  log_warn("grace period over: closing %zu connection(s) with calls in flight", srv->nconns);
  while (srv->conns)
    h2_conn_close(srv->conns, "grace period over");
  server_stop(srv);
}

void server_shutdown(server_t *srv) {
  h2_conn_t *c, *next;

  if (srv->state != SERVER_RUNNING)
    return;
  srv->state = SERVER_DRAINING;
  uv_close((uv_handle_t *)&srv->listener, NULL);
  for (unsigned i = srv->nmodules; i-- > 0;)
    if (srv->modules[i]->shutdown)
      srv->modules[i]->shutdown(srv);
  for (c = srv->conns; c; c = next) {
    next = c->next;
    h2_conn_drain(c);
  }
  if (srv->nconns == 0) {
    server_stop(srv);
    return;
  }
  uv_timer_start(&srv->grace_timer, on_grace, srv->cfg.grace_ms, 0);
}

void server_free(server_t *srv) {
  for (unsigned i = srv->nmodules; i-- > 0;)
    if (srv->modules[i]->free)
      srv->modules[i]->free(srv);
  srv->nmodules = 0;
  tls_server_free(srv->tls);
  srv->tls = NULL;
  h2_pages_free(srv->pages);
  srv->pages = NULL;
  free(srv->console_root);
  srv->console_root = NULL;
}
