#include "metrics/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "audit/tree.h"
#include "db/db.h"
#include "net/tls.h"
#include "server.h"
#include "service/audit_watch.h"
#include "service/batch.h"
#include "service/replica.h"
#include "service/schema_watch.h"

/* go-grpc-prometheus's default buckets (Prometheus's DefBuckets), in seconds. */
static const double HANDLING_BUCKETS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKETS (sizeof(HANDLING_BUCKETS) / sizeof(HANDLING_BUCKETS[0]))
#define NCODES 17
#define SLOTS 256 /* methods counted; the table has fewer, the rest would count as unknown */

/* go-grpc-prometheus writes grpc_code as Go's codes.Code.String() does. */
static const char *const CODE_LABELS[NCODES] = {
    "OK",         "Canceled",          "Unknown",          "InvalidArgument",    "DeadlineExceeded",
    "NotFound",   "AlreadyExists",     "PermissionDenied", "ResourceExhausted",  "FailedPrecondition",
    "Aborted",    "OutOfRange",        "Unimplemented",    "Internal",           "Unavailable",
    "DataLoss",   "Unauthenticated"};

typedef struct histogram {
  uint64_t buckets[NBUCKETS]; /* not cumulative: each observation lands in one */
  uint64_t count;
  uint64_t sum_ns;
} histogram_t;

typedef struct method_stats {
  const rpc_method_t *method; /* NULL: the slot is free (or, in m->unknown, no such method) */
  uint64_t started, received, sent;
  uint64_t handled[NCODES];
  histogram_t handling;
} method_stats_t;

struct metrics {
  method_stats_t slots[SLOTS];
  method_stats_t unknown;
  int64_t streams;
};

int metrics_new(metrics_t **out) {
  metrics_t *m = calloc(1, sizeof(*m));

  if (m == NULL)
    return -ENOMEM;
  *out = m;
  return 0;
}

void metrics_free(metrics_t *m) {
  free(m);
}

/* The stats of method: open addressing on its (static, never freed) address. */
static method_stats_t *stats_of(metrics_t *m, const rpc_method_t *method) {
  size_t h;

  if (method == NULL)
    return &m->unknown;
  h = ((uintptr_t)method >> 4) * 2654435761u;
  for (size_t i = 0; i < SLOTS; i++) {
    method_stats_t *s = &m->slots[(h + i) % SLOTS];
    if (s->method == method)
      return s;
    if (s->method == NULL) {
      s->method = method;
      return s;
    }
  }
  return &m->unknown;
}

static void observe(histogram_t *h, const double *bounds, size_t n, uint64_t ns) {
  size_t i = 0;

  while (i < n && (double)ns / 1e9 > bounds[i])
    i++;
  if (i < n)
    h->buckets[i]++;
  h->count++;
  h->sum_ns += ns;
}

void metrics_call_started(metrics_t *m, const rpc_method_t *method) {
  if (m)
    stats_of(m, method)->started++;
}

void metrics_call_handled(metrics_t *m, const rpc_method_t *method, int code, uint64_t dur_ns) {
  method_stats_t *s;

  if (m == NULL)
    return;
  s = stats_of(m, method);
  s->handled[code >= 0 && code < NCODES ? code : 2 /* UNKNOWN */]++;
  observe(&s->handling, HANDLING_BUCKETS, NBUCKETS, dur_ns);
}

void metrics_msg_received(metrics_t *m, const rpc_method_t *method) {
  if (m)
    stats_of(m, method)->received++;
}

void metrics_msg_sent(metrics_t *m, const rpc_method_t *method) {
  if (m)
    stats_of(m, method)->sent++;
}

void metrics_stream(metrics_t *m, int delta) {
  if (m)
    m->streams += delta;
}

/* ---- rendering ------------------------------------------------------------------------ */

typedef struct out {
  char *buf;
  size_t len, cap;
  int oom;
} out_t;

static void outf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(out_t *o, const char *fmt, ...) {
  va_list ap;
  int n;

  if (o->oom)
    return;
  for (;;) {
    va_start(ap, fmt);
    n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      o->oom = 1;
      return;
    }
    if ((size_t)n < o->cap - o->len) {
      o->len += (size_t)n;
      return;
    }
    size_t cap = o->cap * 2 + (size_t)n;
    char *nb = realloc(o->buf, cap);
    if (nb == NULL) {
      o->oom = 1;
      return;
    }
    o->buf = nb;
    o->cap = cap;
  }
}

static void family(out_t *o, const char *name, const char *type, const char *help) {
  outf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *grpc_type(const rpc_method_t *method) {
  if (method == NULL)
    return "unary";
  if (method->client_streaming)
    return method->server_streaming ? "bidi_stream" : "client_stream";
  return method->server_streaming ? "server_stream" : "unary";
}

/* The labels grpc_type, grpc_service, grpc_method of s, as text for inside the braces. */
static void method_labels(const method_stats_t *s, char *buf, size_t size) {
  const char *path = s->method ? s->method->path : NULL;
  const char *slash = path ? strrchr(path, '/') : NULL;

  if (path == NULL || path[0] != '/' || slash == NULL || slash == path) {
    snprintf(buf, size, "grpc_type=\"unary\",grpc_service=\"unknown\",grpc_method=\"unknown\"");
    return;
  }
  /* Paths are the method table's static "/package.Service/Method": no quote or backslash. */
  snprintf(buf, size, "grpc_type=\"%s\",grpc_service=\"%.*s\",grpc_method=\"%s\"", grpc_type(s->method),
           (int)(slash - path - 1), path + 1, slash + 1);
}

/* A counter family of two samples, one per value of its one label. */
static void counter_pair(out_t *o, const char *name, const char *help, const char *label,
                         const char *a, uint64_t va, const char *b, uint64_t vb) {
  family(o, name, "counter", help);
  outf(o, "%s{%s=\"%s\"} %llu\n", name, label, a, (unsigned long long)va);
  outf(o, "%s{%s=\"%s\"} %llu\n", name, label, b, (unsigned long long)vb);
}

static void histogram_out(out_t *o, const char *name, const char *labels, const histogram_t *h,
                          const double *bounds, size_t n) {
  uint64_t cum = 0;
  const char *sep = labels[0] ? "," : "";

  for (size_t i = 0; i < n; i++) {
    cum += h->buckets[i];
    outf(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[i], (unsigned long long)cum);
  }
  outf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)h->count);
  outf(o, "%s_sum%s%s%s %.9f\n", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
       (double)h->sum_ns / 1e9);
  outf(o, "%s_count%s%s%s %llu\n", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
       (unsigned long long)h->count);
}

typedef enum { F_STARTED, F_HANDLED, F_HANDLING, F_RECEIVED, F_SENT } call_family_t;

static void call_family(out_t *o, const metrics_t *m, call_family_t f) {
  for (size_t i = 0; i <= SLOTS; i++) {
    const method_stats_t *s = i < SLOTS ? &m->slots[i] : &m->unknown;
    char labels[300];

    if (i < SLOTS && s->method == NULL)
      continue;
    if (i == SLOTS && s->started == 0 && s->handling.count == 0)
      continue;
    method_labels(s, labels, sizeof(labels));
    switch (f) {
    case F_STARTED:
      outf(o, "grpc_server_started_total{%s} %llu\n", labels, (unsigned long long)s->started);
      break;
    case F_HANDLED:
      for (int c = 0; c < NCODES; c++)
        if (s->handled[c])
          outf(o, "grpc_server_handled_total{%s,grpc_code=\"%s\"} %llu\n", labels,
               CODE_LABELS[c], (unsigned long long)s->handled[c]);
      break;
    case F_HANDLING:
      histogram_out(o, "grpc_server_handling_seconds", labels, &s->handling, HANDLING_BUCKETS,
                    NBUCKETS);
      break;
    case F_RECEIVED:
      outf(o, "grpc_server_msg_received_total{%s} %llu\n", labels, (unsigned long long)s->received);
      break;
    case F_SENT:
      outf(o, "grpc_server_msg_sent_total{%s} %llu\n", labels, (unsigned long long)s->sent);
      break;
    }
  }
}

/* Process figures from /proc, as Prometheus client libraries export them. These reads are
 * of the kernel's own tables (no disk), made once per scrape. */
static void process_out(out_t *o) {
  char buf[1024], path[64];
  FILE *f;
  long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  unsigned long long utime = 0, stime = 0, start = 0, rss = 0;
  struct rlimit rl;
  long nfds = 0;
  DIR *d;

  if ((f = fopen("/proc/self/stat", "r")) != NULL) {
    if (fgets(buf, sizeof(buf), f)) {
      /* Fields after the command name (which may hold spaces) start at its closing ')'. */
      const char *p = strrchr(buf, ')');
      if (p && sscanf(p + 2,
                      "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                      "%*d %llu %*u %llu",
                      &utime, &stime, &start, &rss) != 4)
        utime = stime = start = rss = 0;
    }
    fclose(f);
  }
  family(o, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
  outf(o, "process_cpu_seconds_total %.2f\n", ticks > 0 ? (double)(utime + stime) / (double)ticks : 0.0);
  family(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  outf(o, "process_resident_memory_bytes %llu\n", rss * (unsigned long long)(page > 0 ? page : 4096));
  if ((d = opendir("/proc/self/fd")) != NULL) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
      nfds += e->d_name[0] != '.';
    closedir(d);
    nfds--; /* the directory's own descriptor */
  }
  family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
  outf(o, "process_open_fds %ld\n", nfds > 0 ? nfds : 0);
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    family(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    outf(o, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
  }
  snprintf(path, sizeof(path), "/proc/stat");
  if (ticks > 0 && (f = fopen(path, "r")) != NULL) {
    unsigned long long btime = 0;
    while (fgets(buf, sizeof(buf), f))
      if (sscanf(buf, "btime %llu", &btime) == 1)
        break;
    fclose(f);
    if (btime > 0) {
      family(o, "process_start_time_seconds", "gauge",
             "Start time of the process since unix epoch in seconds.");
      outf(o, "process_start_time_seconds %.2f\n", (double)btime + (double)start / (double)ticks);
    }
  }
}

int metrics_render(server_t *srv, char **out, size_t *len) {
  const metrics_t *m = srv->metrics;
  out_t o = {NULL, 0, 0, 0};

  if ((o.buf = malloc(16384)) == NULL)
    return -ENOMEM;
  o.cap = 16384;
  o.buf[0] = '\0';
  if (m) {
    family(&o, "grpc_server_started_total", "counter", "Total number of RPCs started on the server.");
    call_family(&o, m, F_STARTED);
    family(&o, "grpc_server_handled_total", "counter",
           "Total number of RPCs completed on the server, regardless of success or failure.");
    call_family(&o, m, F_HANDLED);
    family(&o, "grpc_server_handling_seconds", "histogram",
           "Histogram of response latency (seconds) of gRPC that had been application-level "
           "handled by the server.");
    call_family(&o, m, F_HANDLING);
    family(&o, "grpc_server_msg_received_total", "counter",
           "Total number of RPC stream messages received on the server.");
    call_family(&o, m, F_RECEIVED);
    family(&o, "grpc_server_msg_sent_total", "counter",
           "Total number of gRPC stream messages sent by the server.");
    call_family(&o, m, F_SENT);
    family(&o, "clued_streams_open", "gauge", "HTTP/2 streams (gRPC calls) open now.");
    outf(&o, "clued_streams_open %lld\n", (long long)m->streams);
  }
  family(&o, "clued_connections_open", "gauge", "HTTP/2 connections open now.");
  outf(&o, "clued_connections_open %zu\n", srv->nconns);
  family(&o, "clued_request_bytes_kept", "gauge",
         "Request bytes the connections keep now: unfinished bodies and decoded requests "
         "(--max-inbound).");
  outf(&o, "clued_request_bytes_kept %zu\n", srv->inbound);
  if (srv->db) {
    db_stats_t st;
    db_pool_stats(srv->db, &st);
    family(&o, "clued_db_pool_connections", "gauge", "Database pool connections by state.");
    outf(&o, "clued_db_pool_connections{state=\"idle\"} %d\n", st.idle);
    outf(&o, "clued_db_pool_connections{state=\"busy\"} %d\n", st.busy);
    outf(&o, "clued_db_pool_connections{state=\"connecting\"} %d\n", st.connecting);
    outf(&o, "clued_db_pool_connections{state=\"broken\"} %d\n", st.broken);
    outf(&o, "clued_db_pool_connections{state=\"cancelling\"} %d\n", st.cancelling);
    outf(&o, "clued_db_pool_connections{state=\"stalled\"} %d\n", st.stalled);
    family(&o, "clued_db_queue_depth", "gauge", "Database requests waiting for a pool connection.");
    outf(&o, "clued_db_queue_depth %zu\n", st.queued);
    family(&o, "clued_db_heavy_requests", "gauge",
           "Database requests of heavy calls (whose cost grows with the data): running on a pool "
           "connection, and waiting for one (counted in clued_db_queue_depth too), at most "
           "--db-heavy-conns running.");
    outf(&o, "clued_db_heavy_requests{state=\"running\"} %d\n", st.heavy);
    outf(&o, "clued_db_heavy_requests{state=\"waiting\"} %zu\n", st.heavy_queued);
    family(&o, "clued_db_heavy_connections_max", "gauge",
           "Pool connections heavy calls' requests may hold at once (--db-heavy-conns).");
    outf(&o, "clued_db_heavy_connections_max %d\n", st.heavy_max);
    family(&o, "clued_db_query_seconds", "histogram",
           "Database request latency from sending to the last result, in seconds.");
    {
      histogram_t h;
      memset(&h, 0, sizeof(h));
      for (size_t i = 0; i < NBUCKETS && i < DB_LAT_BUCKETS; i++)
        h.buckets[i] = st.lat_buckets[i];
      h.count = st.lat_count;
      h.sum_ns = st.lat_sum_ns;
      histogram_out(&o, "clued_db_query_seconds", "", &h, db_latency_bounds, DB_LAT_BUCKETS);
    }
  }
  if (srv->batches) {
    static const struct {
      const char *name, *help;
      size_t off;
    } fams[] = {
        {"clued_db_batches_total", "Statements that carried several calls' statements, by kind.",
         offsetof(svc_batch_stats_t, batches)},
        {"clued_db_batched_calls_total", "Calls answered by a statement carrying several, by kind.",
         offsetof(svc_batch_stats_t, calls)},
        {"clued_db_batch_reruns_total",
         "Calls of a batch run again alone (left out of it, or it failed), by kind.",
         offsetof(svc_batch_stats_t, reruns)},
        {"clued_db_batch_held_calls_total",
         "Calls that waited in clued while a running statement of their kind held their lock "
         "(a unit's counter, for submit), by kind.",
         offsetof(svc_batch_stats_t, held)},
    };
    for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
      family(&o, fams[f].name, "counter", fams[f].help);
      for (int k = 0; k < SVC_BATCH_KINDS; k++) {
        svc_batch_stats_t st;
        uint64_t v;
        svc_batch_stats(srv, (svc_batch_id_t)k, &st);
        memcpy(&v, (const char *)&st + fams[f].off, sizeof(v));
        outf(&o, "%s{kind=\"%s\"} %llu\n", fams[f].name, svc_batch_name((svc_batch_id_t)k),
             (unsigned long long)v);
      }
    }
  }
  if (srv->db) {
    counter_pair(&o, "clued_auth_lookups_total",
                 "Calls with a token, by where their principal came from: the principal cache, "
                 "or a lookup in the database.",
                 "from", "cache", srv->auth_lookups[0], "database", srv->auth_lookups[1]);
    counter_pair(&o, "clued_auth_invalidations_total",
                 "Invalidations of the principal cache: of the principals a revocation or a "
                 "disabling named, or of every principal (the invalidation listener lost or "
                 "back, a notification that could not be read).",
                 "of", "named", srv->auth_cache.seq, "all", srv->auth_cache.gen);
    counter_pair(&o, "clued_direct_moves_total",
                 "Plain moves sent without a facts read (--db-direct-moves): done so, or read and "
                 "decided after all (the clue did not meet the write's guard).",
                 "outcome", "done", srv->direct_moves[0], "read", srv->direct_moves[1]);
  }
  {
    replica_stats_t rs;
    replica_stats(srv, &rs);
    if (rs.configured) {
      family(&o, "clued_replica_in_use", "gauge",
             "1 while reads that tolerate staleness go to the replica (--replica-url), 0 while "
             "it is bypassed.");
      outf(&o, "clued_replica_in_use %d\n", rs.in_use);
      family(&o, "clued_replica_staleness_seconds", "gauge",
             "How far behind the primary an answer from the replica may be now (NaN: not known).");
      if (rs.staleness_ms < 0)
        outf(&o, "clued_replica_staleness_seconds NaN\n");
      else
        outf(&o, "clued_replica_staleness_seconds %.3f\n", (double)rs.staleness_ms / 1000.0);
      counter_pair(&o, "clued_replica_reads_total",
                   "Reads that tolerate staleness, by the server that answered them.", "to",
                   "replica", rs.reads_replica, "primary", rs.reads_primary);
      counter_pair(&o, "clued_replica_fallbacks_total",
                   "Reads the replica did not finish, run again on the primary: it was lost "
                   "during them, or cancelled them to replay WAL.",
                   "why", "lost", rs.lost, "conflict", rs.conflicts);
    }
  }
  {
    size_t drift;
    uint64_t checks;
    if (schema_watch_stats(srv, &drift, &checks)) {
      family(&o, "clued_schema_drift", "gauge",
             "clued's functions and triggers that the last schema check found different from "
             "what its migrations define (0: none); while not 0, calls are refused unless "
             "--allow-schema-drift.");
      outf(&o, "clued_schema_drift %zu\n", drift);
      family(&o, "clued_schema_checks_total", "counter",
             "Checks of clued's functions and triggers against its migrations.");
      outf(&o, "clued_schema_checks_total %llu\n", (unsigned long long)checks);
    }
  }
  if (srv->tls && tls_server_not_after(srv->tls)) {
    family(&o, "clued_tls_cert_not_after_seconds", "gauge",
           "notAfter of the TLS certificate new connections get, in seconds since the epoch: "
           "from then clients refuse every handshake.");
    outf(&o, "clued_tls_cert_not_after_seconds %lld\n", (long long)tls_server_not_after(srv->tls));
  }
  family(&o, "clued_audit_watchers", "gauge", "WatchEvents streams open now.");
  outf(&o, "clued_audit_watchers %zu\n", audit_watchers(srv));
  if (srv->tree) {
    family(&o, "clued_audit_tree_size", "gauge", "Leaves of the audit log's Merkle tree this instance follows.");
    outf(&o, "clued_audit_tree_size %llu\n", (unsigned long long)audit_tree_size(srv->tree));
    family(&o, "clued_audit_tree_halted", "gauge",
           "1 while the audit tree stopped following the log (see the ERROR logged): nothing "
           "is appended or signed until a restart.");
    outf(&o, "clued_audit_tree_halted %d\n", audit_tree_halted(srv->tree));
  }
  process_out(&o);
  if (o.oom) {
    free(o.buf);
    return -ENOMEM;
  }
  *out = o.buf;
  *len = o.len;
  return 0;
}
