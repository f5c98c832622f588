/* clued: the clue workflow server. */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "build_info.h"
#include "audit/note.h"
#include "db/db.h"
#include "db/migrate.h"
#include "log.h"
#include "rpc/table.h"
#include "server.h"
#include "service/bootstrap.h"
#include "service/services.h"

static const char usage_text[] =
    "usage: clued <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve       serve gRPC over HTTP/2 (TLS with --tls-cert/--tls-key, else cleartext)\n"
    "              until SIGINT/SIGTERM; refuses to start while migrations are pending;\n"
    "              SIGHUP reloads the TLS certificate, key and client CAs\n"
    "  migrate     apply pending database migrations (safe to run concurrently: a run\n"
    "              that finds the migration lock held says whom it waits for, and\n"
    "              waits; a lock_timeout in the URL's options bounds the wait) as the\n"
    "              role owning the schema; a superuser that is not it is refused unless\n"
    "              --allow-superuser; --repair also restores clued's functions and\n"
    "              triggers that differ from what the migrations define (replaced,\n"
    "              dropped, disabled, or an overload added), in one transaction\n"
    "  bootstrap   create the first ADMIN user and print its token once; when no\n"
    "              enabled ADMIN user holds a live token, create another (restores\n"
    "              administration); run as the role owning the schema;\n"
    "              --new-admin creates another even while one works (for an\n"
    "              administrator's lost token: the new one revokes it);\n"
    "              --demo-tokens FILE also creates demo units and users, tokens in FILE,\n"
    "              a new file (mode 0600; never an existing file or a symlink)\n"
    "  version     print the version, the git commit built and the schema version expected\n"
    "  keygen      write a new checkpoint signing key (Ed25519) to --out FILE (mode 0600)\n"
    "              and its verifier key to FILE.pub; --name NAME names it (default\n"
    "              clued.audit): the origin line of every checkpoint it signs\n"
    "  help        show this help\n"
    "\n"
    "migrate takes --database-url, --migrations, --allow-superuser and --repair; bootstrap\n"
    "--database-url, --new-admin and --demo-tokens; keygen --out and --name; serve the\n"
    "options below; each of them also --log-format and --log-rate (version --log-format\n"
    "alone). An option its command does not take is a usage error (exit 2).\n"
    "\n"
    "options (serve):\n"
    "  --listen ADDR              IPv4:port or [IPv6]:port to listen on (an address: names\n"
    "                             such as localhost are not resolved); port 0 picks a free\n"
    "                             port (env CLUED_LISTEN, default 127.0.0.1:50051)\n"
    "  --migrations DIR           read migrations from DIR instead of those built into clued\n"
    "  --database-url URL         PostgreSQL connection string or URI (env CLUED_DATABASE_URL);\n"
    "                             serve connects as the runtime role (a member of clued_runtime\n"
    "                             that owns nothing), migrate as the role owning the schema\n"
    "  --allow-superuser          serve even as a role that could disable the audit triggers\n"
    "                             or write past them (refused otherwise): a superuser, the\n"
    "                             schema's owner, a role with CREATEROLE, or a member of one of\n"
    "                             them or of pg_execute_server_program, pg_write_server_files,\n"
    "                             pg_read_server_files or pg_write_all_data; migrate as a\n"
    "                             superuser that does not own the schema\n"
    "  --require-sync-replica     refuse to start, and report NOT_SERVING, while the primary\n"
    "                             has no synchronous standby connected (needs\n"
    "                             synchronous_standby_names, synchronous_commit on or\n"
    "                             remote_apply, and the role in pg_read_all_stats); refuse\n"
    "                             writes (UNAVAILABLE) while a commit would not wait for a\n"
    "                             synchronous standby; the URL may name several hosts,\n"
    "                             target_session_attrs=read-write\n"
    "  --schema-check-interval D  compare clued's functions and triggers in the database with\n"
    "                             what its migrations define at start and then every D\n"
    "                             (default 60s; 0: only at start); while they differ, serve\n"
    "                             refuses to start, and a running server refuses calls\n"
    "                             (UNAVAILABLE) and reports NOT_SERVING, until `clued migrate\n"
    "                             --repair` restores them\n"
    "  --allow-schema-drift       serve although they differ (logged as errors and counted in\n"
    "                             clued_schema_drift): for development databases and tests\n"
    "                             that change clued's functions on purpose\n"
    "  --replica-url URL          a standby (several hosts allowed, target_session_attrs=\n"
    "                             standby or prefer-standby; env CLUED_REPLICA_URL) for the\n"
    "                             reads that tolerate staleness: ListClues, ListAuditEvents,\n"
    "                             GetStatistics, GetBulletin; each answer says how stale it\n"
    "                             may be, and a caller may ask for the primary (read.consistent)\n"
    "  --replica-max-lag MS       a replica further behind the primary, or that has not\n"
    "                             answered for longer, is bypassed (default 5000)\n"
    "  --db-pool N                database connections (default 8)\n"
    "  --db-queue N               calls that may wait for a connection, 1 or more (default 1024)\n"
    "  --db-batch-inflight N      statements of one batched read kind (a move's facts read,\n"
    "                             GetClue) running at once; the calls of a kind that arrive in\n"
    "                             one turn of the event loop, or while N run, go together in one\n"
    "                             statement, a single one alone; 0: every call alone, at\n"
    "                             once, writes too (default 1)\n"
    "  --db-write-batch-inflight N  the same for a batched write kind (a plain move's write,\n"
    "                             SubmitClue), each statement one commit; 0: every write\n"
    "                             alone (default 2)\n"
    "  --db-direct-moves 0|1      1: a LEADER's plain move of a clue of their own unit is\n"
    "                             written at once, its clue checked by the write itself, and\n"
    "                             read and decided first only if that check fails; 0: every\n"
    "                             move reads its clue first (default 1)\n"
    "  --db-statement-timeout MS  a database statement running longer is cancelled and its\n"
    "                             call fails with UNAVAILABLE, nothing changed (default 30000)\n"
    "  --db-lock-timeout MS       a wait for a row locked by a concurrent change longer than\n"
    "                             this fails the call with ABORTED, nothing changed (default "
    "3000)\n"
    "  --db-queue-per-conn N      database requests one connection may have waiting or running;\n"
    "                             over it a call fails at once with RESOURCE_EXHAUSTED; keep it\n"
    "                             above --max-concurrent-streams (default 128)\n"
    "  --db-queue-per-user N      database requests one user may have waiting or running over\n"
    "                             all its connections; over it RESOURCE_EXHAUSTED at once\n"
    "                             (default a quarter of --db-queue, at least --db-queue-per-conn)\n"
    "  --db-conns-per-user N      database connections one user's calls may hold at once; the\n"
    "                             rest stay for others, and a freed connection goes first to the\n"
    "                             waiting call of the user holding the fewest (default half of\n"
    "                             --db-pool, rounded up)\n"
    "  --db-heavy-conns N         database connections the statements of heavy calls (whose\n"
    "                             cost grows with the data: searches, lists of joint cases, the\n"
    "                             audit log, statistics) may hold at once over all users; more\n"
    "                             wait, and the rest of the pool serves other calls (default\n"
    "                             half of --db-pool, rounded down; at least 1, at most\n"
    "                             --db-pool - 1)\n"
    "  --auth-cache-ttl MS        how long an authenticated token's principal is reused without\n"
    "                             a database lookup; revocations reach every instance at once\n"
    "                             through LISTEN, this bounds anything else; 0: off (default "
    "1000)\n"
    "  --auth-cache-size N        tokens whose principal is cached at most (default 4096)\n"
    "  --token-issues-per-hour N  tokens one user may issue themself (IssueMyToken) in any\n"
    "                             hour; past it RESOURCE_EXHAUSTED, with the time the next may\n"
    "                             be issued (default 600; 0: no such limit)\n"
    "  --max-message-bytes N      largest request message accepted (default 4194304)\n"
    "  --max-concurrent-streams N streams per connection (default 100); one past it is\n"
    "                             refused alone (RST_STREAM REFUSED_STREAM)\n"
    "  --max-header-bytes N       decoded request header list, counted as RFC 7541 sizes\n"
    "                             (name + value + 32 per field, HPACK references included);\n"
    "                             advertised as SETTINGS_MAX_HEADER_LIST_SIZE; a request over\n"
    "                             it gets RESOURCE_EXHAUSTED (default 65536); one name or\n"
    "                             value over 65536 bytes ends the connection (HPACK), and a\n"
    "                             header block may have one CONTINUATION frame per KiB of it\n"
    "  --max-headers N            request header fields per request (default 128)\n"
    "  --max-conn-buffer N        response bytes queued per connection; past it the\n"
    "                             connection's new calls wait, its streams pause and its\n"
    "                             waiting queries are held until the peer reads\n"
    "                             (default 1048576)\n"
    "  --max-conn-inbound N       bytes of requests kept per connection: unfinished bodies,\n"
    "                             and decoded requests until their calls finish; a call that\n"
    "                             would pass it gets RESOURCE_EXHAUSTED (default 134217728)\n"
    "  --max-inbound N            the same, for the authenticated calls of all connections\n"
    "                             together (default 1073741824)\n"
    "  --max-user-inbound N       the same, for one user's authenticated calls over all its\n"
    "                             connections (default a quarter of --max-inbound)\n"
    "  --max-outbound N           reply bytes queued, not yet read by their peers, for the\n"
    "                             authenticated calls of all connections; past it new calls\n"
    "                             wait until replies drain (default 1073741824)\n"
    "  --max-user-outbound N      the same, for one user's calls over all its connections;\n"
    "                             past it that user's new calls and waiting queries wait\n"
    "                             (default a quarter of --max-outbound)\n"
    "  --max-public-outbound N    reply bytes queued for methods that need no token\n"
    "                             (reflection, Health) over all connections, 64 KiB of them\n"
    "                             per connection; past it their streams read no further\n"
    "                             request until the answers drain (default 16777216)\n"
    "  --max-connections N        open connections; past it a new one closes a connection that\n"
    "                             carried no authenticated call, of the address with the most\n"
    "                             such connections, or is closed itself when its own address\n"
    "                             has the most (default 10240; 0: no limit)\n"
    "  --max-conns-per-user N     connections one user's calls may claim, and so keep from\n"
    "                             being closed for new ones (default a sixteenth of\n"
    "                             --max-connections, at least 1)\n"
    "  --handshake-timeout D      close a connection whose HTTP/2 preface and SETTINGS (or an\n"
    "                             HTTP/2 header block, or an HTTP/1.1 request head, once\n"
    "                             begun) do not arrive within D (default 10s; 0: never)\n"
    "  --idle-timeout D           GOAWAY to a connection with no call and no request for D\n"
    "                             (a notice and a PING, the final GOAWAY once it is\n"
    "                             answered; default 5m; 0: never)\n"
    "  --write-timeout D          close a connection whose peer took less than 16 KiB of its\n"
    "                             output over D with output pending (default 60s; 0: never)\n"
    "  --max-unauth-stream-age D  end a stream that needs no caller (Health/Watch) after D with\n"
    "                             UNAVAILABLE (default 1h; 0: never)\n"
    "  --max-public-streams N     streams of methods that need no token (Health/Watch,\n"
    "                             reflection) open at once over all connections, and their\n"
    "                             unary calls (Health/Check) whose answers wait to be read;\n"
    "                             past it RESOURCE_EXHAUSTED (default 4096)\n"
    "  --max-public-streams-per-address N\n"
    "                             the same, from one peer address (an IPv6 one's /64), so one\n"
    "                             client cannot hold them all (default a quarter of\n"
    "                             --max-public-streams, at least 1)\n"
    "  --keepalive-min-ping D     PINGs closer than D with no data sent between are strikes;\n"
    "                             the third ends the connection with GOAWAY ENHANCE_YOUR_CALM\n"
    "                             \"too_many_pings\", as gRPC servers do (default 5m; 0: any)\n"
    "                             durations: a number with ms, s, m or h\n"
    "  --grace-ms N               shutdown grace period for calls in flight (default 5000)\n"
    "  --max-stream-age D         end a WatchEvents stream after D with UNAVAILABLE and the seq\n"
    "                             to resume from; D is a number with ms, s, m or h (default\n"
    "                             1h; 0: never)\n"
    "  --accepted-deadline-days N stage deadline for ACCEPTED (default 30)\n"
    "  --prelim-deadline-days N   stage deadline for PRELIMINARY_CHECK (default 90)\n"
    "  --filed-deadline-days N    stage deadline for FILED (default 90)\n"
    "  --tls-cert FILE            serve TLS (1.2 or later, ALPN h2, http/1.1) with this PEM cert\n"
    "                             chain, leaf first (env CLUED_TLS_CERT); needs --tls-key\n"
    "  --tls-key FILE             PEM private key of --tls-cert, unencrypted (env CLUED_TLS_KEY)\n"
    "  --tls-client-ca FILE       mutual TLS: require a client certificate issued by a CA in\n"
    "                             this PEM file (env CLUED_TLS_CLIENT_CA)\n"
    "  --insecure-cleartext       allow cleartext HTTP/2 on a non-loopback address (without it\n"
    "                             serve refuses: tokens would cross the network in clear)\n"
    "  --audit-signing-key FILE   sign checkpoints of the audit log's Merkle tree with this key\n"
    "                             (from clued keygen; env CLUED_AUDIT_SIGNING_KEY). Without it\n"
    "                             the instance follows the tree and serves proofs, never signs\n"
    "  --audit-previous-key FILE  the verifier key (.pub) of the signing key just replaced: its\n"
    "                             latest checkpoint is checked and extended (docs/AUDIT.md;\n"
    "                             env CLUED_AUDIT_PREVIOUS_KEY)\n"
    "  --checkpoint-every N       publish a checkpoint once N events are unsigned (default 1000)\n"
    "  --checkpoint-interval D    ... or once D passed since the last one (default 10s; ms, s,\n"
    "                             m, h)\n"
    "  --metrics-listen ADDR      serve Prometheus metrics (text format) at http://ADDR/metrics;\n"
    "                             ADDR as --listen takes it; cleartext, so a non-loopback ADDR\n"
    "                             needs --insecure-cleartext (env CLUED_METRICS_LISTEN; default\n"
    "                             and \"off\": none)\n"
    "  --web-origin ORIGIN        an origin (scheme://host[:port]) whose pages may call clued\n"
    "                             with gRPC-Web: CORS preflights and replies name it; other\n"
    "                             origins get no CORS headers (repeatable, up to 16; default:\n"
    "                             none, same-origin pages only)\n"
    "  --console-dir DIR          serve the console's static files from DIR at / on the gRPC\n"
    "                             port, over HTTP/1.1 and HTTP/2 (GET and HEAD; index.html\n"
    "                             for / and for paths without an extension; hashed asset names\n"
    "                             cached as immutable) (env CLUED_CONSOLE_DIR; default: off)\n"
    "  --log-format F             text (default) or json: one object per line with time, level,\n"
    "                             msg and, for calls, call, peer, method, code, duration_ms,\n"
    "                             request_id; json also logs every successful call, within\n"
    "                             --log-rate (env CLUED_LOG_FORMAT; every command takes it)\n"
    "  --log-rate N               log lines a second each level (info, warn, error) may write;\n"
    "                             past it lines are counted, not written, and a warning once a\n"
    "                             second says how many, by level (default 1000; 0: no limit).\n"
    "                             A log reader slower than the server loses lines alike (1 MiB\n"
    "                             waits for it), never stalls calls (env CLUED_LOG_RATE)\n";

static void usage(FILE *f) {
  fputs(usage_text, f);
}

/* A refusal before any work: "clued: message" (cmd: "clued cmd: message") on stderr as ever in
 * text; with --log-format json or CLUED_LOG_FORMAT=json a JSON log line of level error, so a
 * pipeline that reads JSON lines is not handed plain text just when a configuration is wrong. */
static void refuse(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(const char *cmd, const char *fmt, ...) {
  char msg[1536];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (log_get_format() == LOG_JSON && cmd != NULL)
    log_error("%s: %s", cmd, msg);
  else if (log_get_format() == LOG_JSON)
    log_error("%s", msg);
  else
    fprintf(stderr, "clued%s%s: %s\n", cmd ? " " : "", cmd ? cmd : "", msg);
}

static int parse_num(const char *opt, const char *s, long long min, long long max, long long *out) {
  char *end;
  long long v;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (errno || *end != '\0' || end == s || v < min || v > max) {
    refuse(NULL, "%s must be a number between %lld and %lld (got \"%s\")", opt, min, max, s);
    return -1;
  }
  *out = v;
  return 0;
}

/* A duration: a whole number with the unit ms, s, m or h ("0" alone: none), at most 30 days. */
static int parse_duration(const char *opt, const char *s, uint64_t *ms_out) {
  static const struct {
    const char *unit;
    uint64_t ms;
  } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
  const uint64_t max = 30ull * 24 * 3600000;
  char *end;
  unsigned long long v;

  errno = 0;
  if (s[0] >= '0' && s[0] <= '9') {
    v = strtoull(s, &end, 10);
    if (errno == 0 && end != s && v == 0 && *end == '\0') {
      *ms_out = 0;
      return 0;
    }
    for (size_t i = 0; errno == 0 && end != s && i < sizeof(units) / sizeof(units[0]); i++)
      if (strcmp(end, units[i].unit) == 0 && v <= max / units[i].ms) {
        *ms_out = v * units[i].ms;
        return 0;
      }
  }
  refuse(NULL,
         "%s must be a whole number with the unit ms, s, m or h, at most 30 days, or 0 (got "
         "\"%s\")",
         opt, s);
  return -1;
}

enum {
  OPT_LISTEN = 256,
  OPT_DATABASE_URL,
  OPT_DB_POOL,
  OPT_DB_BATCH_INFLIGHT,
  OPT_DB_WRITE_BATCH_INFLIGHT,
  OPT_DB_DIRECT_MOVES,
  OPT_DB_QUEUE,
  OPT_DB_STATEMENT_TIMEOUT,
  OPT_DB_LOCK_TIMEOUT,
  OPT_DB_QUEUE_PER_CONN,
  OPT_DB_QUEUE_PER_USER,
  OPT_DB_CONNS_PER_USER,
  OPT_DB_HEAVY_CONNS,
  OPT_AUTH_CACHE_TTL,
  OPT_AUTH_CACHE_SIZE,
  OPT_TOKEN_ISSUES_PER_HOUR,
  OPT_MAX_MESSAGE,
  OPT_MAX_STREAMS,
  OPT_MAX_HEADER_BYTES,
  OPT_MAX_HEADERS,
  OPT_MAX_CONN_BUFFER,
  OPT_MAX_CONN_INBOUND,
  OPT_MAX_INBOUND,
  OPT_MAX_USER_INBOUND,
  OPT_MAX_OUTBOUND,
  OPT_MAX_USER_OUTBOUND,
  OPT_MAX_PUBLIC_OUTBOUND,
  OPT_MAX_CONNS_PER_USER,
  OPT_MAX_PUBLIC_STREAMS,
  OPT_MAX_PUBLIC_STREAMS_PER_ADDR,
  OPT_MAX_CONNECTIONS,
  OPT_HANDSHAKE_TIMEOUT,
  OPT_IDLE_TIMEOUT,
  OPT_WRITE_TIMEOUT,
  OPT_UNAUTH_STREAM_AGE,
  OPT_KEEPALIVE_MIN_PING,
  OPT_GRACE,
  OPT_MAX_STREAM_AGE,
  OPT_ACCEPTED_DAYS,
  OPT_PRELIM_DAYS,
  OPT_FILED_DAYS,
  OPT_CLOCK_OFFSET,
  OPT_MIGRATIONS,
  OPT_DEMO_TOKENS,
  OPT_NEW_ADMIN,
  OPT_TLS_CERT,
  OPT_TLS_KEY,
  OPT_TLS_CLIENT_CA,
  OPT_INSECURE_CLEARTEXT,
  OPT_ALLOW_SUPERUSER,
  OPT_REQUIRE_SYNC_REPLICA,
  OPT_SCHEMA_CHECK_INTERVAL,
  OPT_ALLOW_SCHEMA_DRIFT,
  OPT_REPAIR,
  OPT_REPLICA_URL,
  OPT_REPLICA_MAX_LAG,
  OPT_AUDIT_SIGNING_KEY,
  OPT_AUDIT_PREVIOUS_KEY,
  OPT_CHECKPOINT_EVERY,
  OPT_CHECKPOINT_INTERVAL,
  OPT_NAME,
  OPT_OUT,
  OPT_LOG_FORMAT,
  OPT_LOG_RATE,
  OPT_METRICS_LISTEN,
  OPT_WEB_ORIGIN,
  OPT_CONSOLE_DIR,
  OPT_END,
};

/* Options of the one-shot commands, beside the server's own configuration. */
typedef struct cli_opts {
  const char *migrations_dir;
  const char *demo_tokens;
  int new_admin;        /* bootstrap */
  int allow_superuser;  /* serve, or migrate, as a role each refuses otherwise */
  int repair;           /* migrate --repair */
  const char *key_name; /* keygen */
  const char *out;      /* keygen */
  const char *checkpoint_flag; /* the last of --checkpoint-every/-interval given, if any */
  unsigned char given[OPT_END - OPT_LISTEN]; /* the options given, by OPT_* - OPT_LISTEN */
} cli_opts_t;

static const struct option long_opts[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"database-url", required_argument, NULL, OPT_DATABASE_URL},
    {"db-pool", required_argument, NULL, OPT_DB_POOL},
    {"db-batch-inflight", required_argument, NULL, OPT_DB_BATCH_INFLIGHT},
    {"db-write-batch-inflight", required_argument, NULL, OPT_DB_WRITE_BATCH_INFLIGHT},
    {"db-direct-moves", required_argument, NULL, OPT_DB_DIRECT_MOVES},
    {"db-queue", required_argument, NULL, OPT_DB_QUEUE},
    {"db-statement-timeout", required_argument, NULL, OPT_DB_STATEMENT_TIMEOUT},
    {"db-lock-timeout", required_argument, NULL, OPT_DB_LOCK_TIMEOUT},
    {"db-queue-per-conn", required_argument, NULL, OPT_DB_QUEUE_PER_CONN},
    {"db-queue-per-user", required_argument, NULL, OPT_DB_QUEUE_PER_USER},
    {"db-conns-per-user", required_argument, NULL, OPT_DB_CONNS_PER_USER},
    {"db-heavy-conns", required_argument, NULL, OPT_DB_HEAVY_CONNS},
    {"auth-cache-ttl", required_argument, NULL, OPT_AUTH_CACHE_TTL},
    {"auth-cache-size", required_argument, NULL, OPT_AUTH_CACHE_SIZE},
    {"token-issues-per-hour", required_argument, NULL, OPT_TOKEN_ISSUES_PER_HOUR},
    {"max-message-bytes", required_argument, NULL, OPT_MAX_MESSAGE},
    {"max-concurrent-streams", required_argument, NULL, OPT_MAX_STREAMS},
    {"max-header-bytes", required_argument, NULL, OPT_MAX_HEADER_BYTES},
    {"max-headers", required_argument, NULL, OPT_MAX_HEADERS},
    {"max-conn-buffer", required_argument, NULL, OPT_MAX_CONN_BUFFER},
    {"max-conn-inbound", required_argument, NULL, OPT_MAX_CONN_INBOUND},
    {"max-inbound", required_argument, NULL, OPT_MAX_INBOUND},
    {"max-user-inbound", required_argument, NULL, OPT_MAX_USER_INBOUND},
    {"max-outbound", required_argument, NULL, OPT_MAX_OUTBOUND},
    {"max-user-outbound", required_argument, NULL, OPT_MAX_USER_OUTBOUND},
    {"max-public-outbound", required_argument, NULL, OPT_MAX_PUBLIC_OUTBOUND},
    {"max-conns-per-user", required_argument, NULL, OPT_MAX_CONNS_PER_USER},
    {"max-public-streams", required_argument, NULL, OPT_MAX_PUBLIC_STREAMS},
    {"max-public-streams-per-address", required_argument, NULL, OPT_MAX_PUBLIC_STREAMS_PER_ADDR},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT},
    {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
    {"write-timeout", required_argument, NULL, OPT_WRITE_TIMEOUT},
    {"max-unauth-stream-age", required_argument, NULL, OPT_UNAUTH_STREAM_AGE},
    {"keepalive-min-ping", required_argument, NULL, OPT_KEEPALIVE_MIN_PING},
    {"grace-ms", required_argument, NULL, OPT_GRACE},
    {"max-stream-age", required_argument, NULL, OPT_MAX_STREAM_AGE},
    {"accepted-deadline-days", required_argument, NULL, OPT_ACCEPTED_DAYS},
    {"prelim-deadline-days", required_argument, NULL, OPT_PRELIM_DAYS},
    {"filed-deadline-days", required_argument, NULL, OPT_FILED_DAYS},
#ifdef CLUED_TEST_HOOKS
    {"test-clock-offset-ms", required_argument, NULL, OPT_CLOCK_OFFSET},
#endif
    {"migrations", required_argument, NULL, OPT_MIGRATIONS},
    {"demo-tokens", required_argument, NULL, OPT_DEMO_TOKENS},
    {"new-admin", no_argument, NULL, OPT_NEW_ADMIN},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-client-ca", required_argument, NULL, OPT_TLS_CLIENT_CA},
    {"insecure-cleartext", no_argument, NULL, OPT_INSECURE_CLEARTEXT},
    {"allow-superuser", no_argument, NULL, OPT_ALLOW_SUPERUSER},
    {"require-sync-replica", no_argument, NULL, OPT_REQUIRE_SYNC_REPLICA},
    {"schema-check-interval", required_argument, NULL, OPT_SCHEMA_CHECK_INTERVAL},
    {"allow-schema-drift", no_argument, NULL, OPT_ALLOW_SCHEMA_DRIFT},
    {"repair", no_argument, NULL, OPT_REPAIR},
    {"replica-url", required_argument, NULL, OPT_REPLICA_URL},
    {"replica-max-lag", required_argument, NULL, OPT_REPLICA_MAX_LAG},
    {"audit-signing-key", required_argument, NULL, OPT_AUDIT_SIGNING_KEY},
    {"audit-previous-key", required_argument, NULL, OPT_AUDIT_PREVIOUS_KEY},
    {"checkpoint-every", required_argument, NULL, OPT_CHECKPOINT_EVERY},
    {"checkpoint-interval", required_argument, NULL, OPT_CHECKPOINT_INTERVAL},
    {"name", required_argument, NULL, OPT_NAME},
    {"out", required_argument, NULL, OPT_OUT},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"log-rate", required_argument, NULL, OPT_LOG_RATE},
    {"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
    {"web-origin", required_argument, NULL, OPT_WEB_ORIGIN},
    {"console-dir", required_argument, NULL, OPT_CONSOLE_DIR},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int format_of(const char *v, log_format_t *f) {
  if (strcmp(v, "text") == 0)
    *f = LOG_TEXT;
  else if (strcmp(v, "json") == 0)
    *f = LOG_JSON;
  else
    return -1;
  return 0;
}

static int set_log_format(const char *opt, const char *v) {
  log_format_t f;

  if (format_of(v, &f) != 0) {
    refuse(NULL, "%s must be text or json (got \"%s\")", opt, v);
    return -1;
  }
  log_set_format(f);
  return 0;
}

/* The log format, chosen before any other option is read so that their refusals go out in it:
 * the last good --log-format, else CLUED_LOG_FORMAT. A bad value of either is then refused, in
 * the format the other chose. This pass reads the options as the parse proper does
 * (abbreviations, --log-format=F), and with opterr 0 says nothing of the others. Returns 0 or
 * 1 (reported). */
static int choose_log_format(int argc, char **argv) {
  const char *env = getenv("CLUED_LOG_FORMAT"), *bad = NULL;
  log_format_t f;
  int c;

  if (env != NULL && env[0] == '\0')
    env = NULL;
  if (env != NULL && format_of(env, &f) == 0)
    log_set_format(f);
  opterr = 0;
  optind = 0; /* 0: getopt starts afresh (glibc and musl) */
  while ((c = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
    if (c != OPT_LOG_FORMAT)
      continue;
    if (format_of(optarg, &f) == 0)
      log_set_format(f);
    else if (bad == NULL)
      bad = optarg;
  }
  if (env != NULL && format_of(env, &f) != 0) {
    refuse(NULL, "CLUED_LOG_FORMAT must be text or json (got \"%s\")", env);
    return 1;
  }
  if (bad != NULL) {
    refuse(NULL, "--log-format must be text or json (got \"%s\")", bad);
    return 1;
  }
  return 0;
}

/* An option getopt_long refused: opterr is 0, so clued says why, in the log format. arg is the
 * word getopt_long last stepped over, opt its optopt: 0 for a long option it does not know
 * (or an abbreviation of several), an option's own value for one given a value it does not
 * take, else the unknown letter. A value given with "--name=" is left out of the message: a
 * mistyped --database-url's would carry a password. */
static void refuse_option(const char *arg, int opt) {
  size_t n, matches = 0;

  for (const struct option *o = long_opts; opt != 0 && o->name != NULL; o++)
    if (o->val == opt) {
      refuse(NULL, "option '--%s' takes no value; try 'clued help'", o->name);
      return;
    }
  if (opt != 0) {
    refuse(NULL, "unrecognized option '-%c'; try 'clued help'", opt);
    return;
  }
  arg += strncmp(arg, "--", 2) == 0 ? 2 : 0;
  n = strcspn(arg, "=");
  for (const struct option *o = long_opts; o->name != NULL; o++)
    if (strncmp(o->name, arg, n) == 0)
      matches++;
  refuse(NULL, "%s option '--%.*s'; try 'clued help'", matches > 1 ? "ambiguous" : "unrecognized",
         (int)n, arg);
}

/* An origin as browsers send it: http or https, "://", a host of letters, digits, '-', '.',
 * or a bracketed IPv6 address, an optional port, nothing after. It goes into response
 * headers verbatim, so nothing else may pass. */
static int origin_ok(const char *o) {
  const char *p;
  size_t n = strlen(o);

  if (n > 255)
    return 0;
  if (strncmp(o, "https://", 8) == 0)
    p = o + 8;
  else if (strncmp(o, "http://", 7) == 0)
    p = o + 7;
  else
    return 0;
  if (*p == '\0')
    return 0;
  for (; *p; p++) {
    char c = *p;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '-' || c == '.' || c == ':' || c == '[' || c == ']'))
      return 0;
  }
  return 1;
}

/* Returns 0, 1 (bad usage, message printed) or 2 (--help shown). */
static int parse_options(int argc, char **argv, server_config_t *cfg, cli_opts_t *cli) {
  const char *env;
  long long v;
  int c;

  if ((env = getenv("CLUED_LISTEN")) && *env)
    snprintf(cfg->listen, sizeof(cfg->listen), "%s", env);
  if ((env = getenv("CLUED_DATABASE_URL")) && *env)
    cfg->database_url = env;
  if ((env = getenv("CLUED_REPLICA_URL")) && *env)
    cfg->replica_url = env;
  if ((env = getenv("CLUED_TLS_CERT")) && *env)
    cfg->tls_cert = env;
  if ((env = getenv("CLUED_TLS_KEY")) && *env)
    cfg->tls_key = env;
  if ((env = getenv("CLUED_TLS_CLIENT_CA")) && *env)
    cfg->tls_client_ca = env;
  if ((env = getenv("CLUED_AUDIT_SIGNING_KEY")) && *env)
    cfg->audit_signing_key = env;
  if ((env = getenv("CLUED_AUDIT_PREVIOUS_KEY")) && *env)
    cfg->audit_previous_key = env;
  if ((env = getenv("CLUED_METRICS_LISTEN")) && *env)
    cfg->metrics_listen = strcmp(env, "off") == 0 ? NULL : env;
  if ((env = getenv("CLUED_CONSOLE_DIR")) && *env)
    cfg->console_dir = env;
  if (choose_log_format(argc, argv) != 0)
    return 1;
  if ((env = getenv("CLUED_LOG_RATE")) && *env) {
    if (parse_num("CLUED_LOG_RATE", env, 0, 100000000, &v))
      return 1;
    log_set_rate((unsigned)v);
  }
  optind = 0;
  while ((c = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
    if (c >= OPT_LISTEN && c < OPT_END)
      cli->given[c - OPT_LISTEN] = 1;
    switch (c) {
    case OPT_LISTEN:
      if (strlen(optarg) >= sizeof(cfg->listen)) {
        refuse(NULL, "--listen address too long");
        return 1;
      }
      snprintf(cfg->listen, sizeof(cfg->listen), "%s", optarg);
      break;
    case OPT_DATABASE_URL:
      cfg->database_url = optarg;
      break;
    case OPT_DB_POOL:
      if (parse_num("--db-pool", optarg, 1, 256, &v))
        return 1;
      cfg->db_pool_size = (int)v;
      break;
    case OPT_DB_BATCH_INFLIGHT:
      if (parse_num("--db-batch-inflight", optarg, 0, 256, &v))
        return 1;
      cfg->db_batch_inflight = (int)v;
      break;
    case OPT_DB_WRITE_BATCH_INFLIGHT:
      if (parse_num("--db-write-batch-inflight", optarg, 0, 256, &v))
        return 1;
      cfg->db_write_batch_inflight = (int)v;
      break;
    case OPT_DB_DIRECT_MOVES:
      if (parse_num("--db-direct-moves", optarg, 0, 1, &v))
        return 1;
      cfg->db_direct_moves = (int)v;
      break;
    case OPT_DB_QUEUE:
      /* 0 is refused: it cannot mean "no waiting", since a batched call waits in clued for
       * its statement within this bound too (every one would be refused). */
      if (parse_num("--db-queue", optarg, 1, 1000000, &v))
        return 1;
      cfg->db_queue_max = (size_t)v;
      break;
    case OPT_DB_STATEMENT_TIMEOUT:
      if (parse_num("--db-statement-timeout", optarg, 1, 86400000, &v))
        return 1;
      cfg->db_statement_timeout_ms = (unsigned)v;
      break;
    case OPT_DB_LOCK_TIMEOUT:
      if (parse_num("--db-lock-timeout", optarg, 1, 86400000, &v))
        return 1;
      cfg->db_lock_timeout_ms = (unsigned)v;
      break;
    case OPT_DB_QUEUE_PER_CONN:
      if (parse_num("--db-queue-per-conn", optarg, 1, 1000000, &v))
        return 1;
      cfg->db_queue_per_conn = (size_t)v;
      break;
    case OPT_DB_QUEUE_PER_USER:
      if (parse_num("--db-queue-per-user", optarg, 1, 1000000, &v))
        return 1;
      cfg->db_queue_per_user = (size_t)v;
      break;
    case OPT_DB_CONNS_PER_USER:
      if (parse_num("--db-conns-per-user", optarg, 1, 256, &v))
        return 1;
      cfg->db_conns_per_user = (int)v;
      break;
    case OPT_DB_HEAVY_CONNS:
      if (parse_num("--db-heavy-conns", optarg, 1, 256, &v))
        return 1;
      cfg->db_heavy_conns = (int)v;
      break;
    case OPT_AUTH_CACHE_TTL:
      if (parse_num("--auth-cache-ttl", optarg, 0, 3600000, &v))
        return 1;
      cfg->auth_cache_ttl_ms = (unsigned)v;
      break;
    case OPT_AUTH_CACHE_SIZE:
      if (parse_num("--auth-cache-size", optarg, 0, 10000000, &v))
        return 1;
      cfg->auth_cache_size = (size_t)v;
      break;
    case OPT_TOKEN_ISSUES_PER_HOUR:
      if (parse_num("--token-issues-per-hour", optarg, 0, 1000000, &v))
        return 1;
      cfg->token_issues_per_hour = (unsigned)v;
      break;
    case OPT_MAX_MESSAGE:
      if (parse_num("--max-message-bytes", optarg, 1024, 1LL << 30, &v))
        return 1;
      cfg->max_message_bytes = (size_t)v;
      break;
    case OPT_MAX_STREAMS:
      if (parse_num("--max-concurrent-streams", optarg, 1, 100000, &v))
        return 1;
      cfg->max_concurrent_streams = (unsigned)v;
      break;
    case OPT_MAX_HEADER_BYTES:
      if (parse_num("--max-header-bytes", optarg, 1024, 1 << 24, &v))
        return 1;
      cfg->max_header_list_bytes = (size_t)v;
      break;
    case OPT_MAX_HEADERS:
      if (parse_num("--max-headers", optarg, 8, 100000, &v))
        return 1;
      cfg->max_header_count = (unsigned)v;
      break;
    case OPT_MAX_CONN_BUFFER:
      if (parse_num("--max-conn-buffer", optarg, 16384, 1LL << 32, &v))
        return 1;
      cfg->max_conn_buffer = (size_t)v;
      break;
    case OPT_MAX_CONN_INBOUND:
      if (parse_num("--max-conn-inbound", optarg, 65536, 1LL << 34, &v))
        return 1;
      cfg->max_conn_inbound = (size_t)v;
      break;
    case OPT_MAX_INBOUND:
      if (parse_num("--max-inbound", optarg, 65536, 1LL << 36, &v))
        return 1;
      cfg->max_inbound = (size_t)v;
      break;
    case OPT_MAX_USER_INBOUND:
      if (parse_num("--max-user-inbound", optarg, 65536, 1LL << 36, &v))
        return 1;
      cfg->max_user_inbound = (size_t)v;
      break;
    case OPT_MAX_OUTBOUND:
      if (parse_num("--max-outbound", optarg, 1LL << 20, 1LL << 40, &v))
        return 1;
      cfg->max_outbound = (size_t)v;
      break;
    case OPT_MAX_USER_OUTBOUND:
      if (parse_num("--max-user-outbound", optarg, 1LL << 20, 1LL << 40, &v))
        return 1;
      cfg->max_user_outbound = (size_t)v;
      break;
    case OPT_MAX_PUBLIC_OUTBOUND:
      if (parse_num("--max-public-outbound", optarg, 1LL << 20, 1LL << 36, &v))
        return 1;
      cfg->max_public_outbound = (size_t)v;
      break;
    case OPT_MAX_CONNECTIONS:
      if (parse_num("--max-connections", optarg, 0, 10000000, &v))
        return 1;
      cfg->max_connections = (unsigned)v;
      break;
    case OPT_MAX_PUBLIC_STREAMS:
      if (parse_num("--max-public-streams", optarg, 1, 10000000, &v))
        return 1;
      cfg->max_public_streams = (unsigned)v;
      break;
    case OPT_MAX_PUBLIC_STREAMS_PER_ADDR:
      if (parse_num("--max-public-streams-per-address", optarg, 1, 10000000, &v))
        return 1;
      cfg->max_public_streams_per_addr = (unsigned)v;
      break;
    case OPT_MAX_CONNS_PER_USER:
      if (parse_num("--max-conns-per-user", optarg, 1, 10000000, &v))
        return 1;
      cfg->max_conns_per_user = (unsigned)v;
      break;
    case OPT_HANDSHAKE_TIMEOUT:
      if (parse_duration("--handshake-timeout", optarg, &cfg->handshake_timeout_ms))
        return 1;
      break;
    case OPT_IDLE_TIMEOUT:
      if (parse_duration("--idle-timeout", optarg, &cfg->idle_timeout_ms))
        return 1;
      break;
    case OPT_WRITE_TIMEOUT:
      if (parse_duration("--write-timeout", optarg, &cfg->write_timeout_ms))
        return 1;
      break;
    case OPT_UNAUTH_STREAM_AGE:
      if (parse_duration("--max-unauth-stream-age", optarg, &cfg->unauth_stream_age_ms))
        return 1;
      break;
    case OPT_KEEPALIVE_MIN_PING:
      if (parse_duration("--keepalive-min-ping", optarg, &cfg->keepalive_min_ping_ms))
        return 1;
      break;
    case OPT_GRACE:
      if (parse_num("--grace-ms", optarg, 0, 3600000, &v))
        return 1;
      cfg->grace_ms = (unsigned)v;
      break;
    case OPT_MAX_STREAM_AGE:
      if (parse_duration("--max-stream-age", optarg, &cfg->max_stream_age_ms))
        return 1;
      break;
    case OPT_ACCEPTED_DAYS:
      if (parse_num("--accepted-deadline-days", optarg, 1, 3650, &v))
        return 1;
      cfg->accepted_deadline_days = (int)v;
      break;
    case OPT_PRELIM_DAYS:
      if (parse_num("--prelim-deadline-days", optarg, 1, 3650, &v))
        return 1;
      cfg->prelim_deadline_days = (int)v;
      break;
    case OPT_FILED_DAYS:
      if (parse_num("--filed-deadline-days", optarg, 1, 3650, &v))
        return 1;
      cfg->filed_deadline_days = (int)v;
      break;
    case OPT_CLOCK_OFFSET:
      if (parse_num("--test-clock-offset-ms", optarg, -(1LL << 50), 1LL << 50, &v))
        return 1;
      cfg->clock_offset_ms = v;
      break;
    case OPT_MIGRATIONS:
      cli->migrations_dir = optarg;
      cfg->migrations_dir = optarg;
      break;
    case OPT_DEMO_TOKENS:
      cli->demo_tokens = optarg;
      break;
    case OPT_NEW_ADMIN:
      cli->new_admin = 1;
      break;
    case OPT_TLS_CERT:
      cfg->tls_cert = optarg;
      break;
    case OPT_TLS_KEY:
      cfg->tls_key = optarg;
      break;
    case OPT_TLS_CLIENT_CA:
      cfg->tls_client_ca = optarg;
      break;
    case OPT_INSECURE_CLEARTEXT:
      cfg->insecure_cleartext = 1;
      break;
    case OPT_ALLOW_SUPERUSER:
      cli->allow_superuser = 1;
      break;
    case OPT_REQUIRE_SYNC_REPLICA:
      cfg->require_sync_replica = 1;
      break;
    case OPT_SCHEMA_CHECK_INTERVAL:
      if (parse_duration("--schema-check-interval", optarg, &cfg->schema_check_ms))
        return 1;
      break;
    case OPT_ALLOW_SCHEMA_DRIFT:
      cfg->allow_schema_drift = 1;
      break;
    case OPT_REPAIR:
      cli->repair = 1;
      break;
    case OPT_REPLICA_URL:
      cfg->replica_url = optarg;
      break;
    case OPT_REPLICA_MAX_LAG:
      if (parse_num("--replica-max-lag", optarg, 1, 86400000, &v))
        return 1;
      cfg->replica_max_lag_ms = (uint64_t)v;
      break;
    case OPT_AUDIT_SIGNING_KEY:
      cfg->audit_signing_key = optarg;
      break;
    case OPT_AUDIT_PREVIOUS_KEY:
      cfg->audit_previous_key = optarg;
      break;
    case OPT_CHECKPOINT_EVERY:
      if (parse_num("--checkpoint-every", optarg, 1, 100000000, &v))
        return 1;
      cfg->checkpoint_every = (uint64_t)v;
      cli->checkpoint_flag = "--checkpoint-every";
      break;
    case OPT_CHECKPOINT_INTERVAL:
      if (parse_duration("--checkpoint-interval", optarg, &cfg->checkpoint_ms))
        return 1;
      if (cfg->checkpoint_ms == 0) {
        refuse(NULL, "--checkpoint-interval must be more than 0");
        return 1;
      }
      cli->checkpoint_flag = "--checkpoint-interval";
      break;
    case OPT_NAME:
      cli->key_name = optarg;
      break;
    case OPT_OUT:
      cli->out = optarg;
      break;
    case OPT_METRICS_LISTEN:
      cfg->metrics_listen = strcmp(optarg, "off") == 0 ? NULL : optarg;
      break;
    case OPT_WEB_ORIGIN:
      if (!origin_ok(optarg)) {
        refuse(NULL,
               "--web-origin must be an origin such as https://console.example:8443 "
               "(scheme://host[:port], no path; got \"%s\")",
               optarg);
        return 1;
      }
      if (cfg->nweb_origins == SERVER_MAX_WEB_ORIGINS) {
        refuse(NULL, "--web-origin given more than %d times", SERVER_MAX_WEB_ORIGINS);
        return 1;
      }
      cfg->web_origins[cfg->nweb_origins++] = optarg;
      break;
    case OPT_CONSOLE_DIR:
      cfg->console_dir = optarg;
      break;
    case OPT_LOG_FORMAT: /* chosen before the others */
      break;
    case OPT_LOG_RATE:
      if (parse_num("--log-rate", optarg, 0, 100000000, &v))
        return 1;
      log_set_rate((unsigned)v);
      break;
    case 'h':
      usage(stdout);
      return 2;
    case ':':
      refuse(NULL, "option '%s' needs a value; try 'clued help'", argv[optind - 1]);
      return 1;
    case '?':
      refuse_option(optind > 0 && optind <= argc ? argv[optind - 1] : "", optopt);
      return 1;
    default:
      refuse(NULL, "try 'clued help'");
      return 1;
    }
  }
  if (optind < argc) {
    refuse(NULL, "unexpected argument \"%s\"", argv[optind]);
    return 1;
  }
  return 0;
}

/* Descriptors kept for what is not a client connection: the listeners, the database pools
 * and listeners, files served, the metrics endpoint. */
#define FD_RESERVE 64

/* Raise the descriptor limit to its hard limit (a thousand connections need more than the
 * usual soft limit of 1024), and keep --max-connections within it: past the descriptors,
 * accept() fails and the connections are dropped before the server ever sees them, so the
 * limit's choice of which connection goes (a stranger's, not a user's) would never be made. */
static void raise_fd_limit(server_config_t *cfg) {
  struct rlimit rl;
  rlim_t room;

  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      (void)getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur == RLIM_INFINITY)
    return;
  room = rl.rlim_cur > FD_RESERVE + 2 * (rlim_t)cfg->db_pool_size
             ? rl.rlim_cur - FD_RESERVE - 2 * (rlim_t)cfg->db_pool_size
             : 1;
  if (cfg->max_connections == 0 || cfg->max_connections > room) {
    log_warn("--max-connections %u%s is above what the descriptor limit (%llu) leaves for "
             "connections: using %llu (raise the limit, e.g. LimitNOFILE, to serve more)",
             cfg->max_connections, cfg->max_connections ? "" : " (no limit)",
             (unsigned long long)rl.rlim_cur, (unsigned long long)room);
    cfg->max_connections = (unsigned)room;
  }
}

/* 0, or 2 (a usage error, logged) when libpq cannot parse a connection string. Its error
 * would quote the string, password included: the message names the option or variable it
 * came from instead. */
static int check_conninfo(const char *url, const cli_opts_t *cli, int opt, const char *option,
                          const char *env) {
  if (url == NULL || db_conninfo_parses(url))
    return 0;
  log_error("%s " DB_CONNINFO_UNPARSABLE, cli->given[opt - OPT_LISTEN] ? option : env);
  return 2;
}

/* 0 when no migration is pending; otherwise -1, having logged why (which command to run). */
static int check_migrated(const char *database_url, const char *migrations_dir) {
  char first[256] = "";
  int pending = db_migrations_pending(database_url, migrations_dir, first, sizeof(first));

  if (pending < 0)
    return -1; /* the reason is logged */
  if (pending > 0) {
    log_error("%d migration(s) pending (first: %s); run `clued migrate` first", pending, first);
    return -1;
  }
  return 0;
}

/* Settings that parse but would do nothing, or less than asked: serve starts, saying so. */
static void warn_ignored_settings(const server_config_t *cfg, const cli_opts_t *cli) {
  if (cli->checkpoint_flag && cfg->audit_signing_key == NULL)
    log_warn("%s has no effect without --audit-signing-key: this instance signs no checkpoints",
             cli->checkpoint_flag);
  if (cfg->db_queue_per_conn < cfg->max_concurrent_streams)
    log_warn("--db-queue-per-conn %zu is below --max-concurrent-streams %u: a connection's calls "
             "past %zu waiting for the database fail with RESOURCE_EXHAUSTED although it may "
             "open %u streams; keep it above",
             cfg->db_queue_per_conn, cfg->max_concurrent_streams, cfg->db_queue_per_conn,
             cfg->max_concurrent_streams);
  if (cfg->db_queue_per_user > 0 && cfg->db_queue_per_user < cfg->db_queue_per_conn)
    log_warn("--db-queue-per-user %zu is below --db-queue-per-conn %zu: one user's connection "
             "is bounded by --db-queue-per-user alone",
             cfg->db_queue_per_user, cfg->db_queue_per_conn);
  if (server_db_queue_per_user(cfg) >= cfg->db_queue_max)
    log_warn("one user's share of the database queue (%zu, --db-queue-per-user) is not below "
             "--db-queue %zu: one user, or the token lookups of strangers together, may fill it; "
             "lower --db-queue-per-conn or --db-queue-per-user",
             server_db_queue_per_user(cfg), cfg->db_queue_max);
  if (cfg->db_conns_per_user > cfg->db_pool_size)
    log_warn("--db-conns-per-user %d is above --db-pool %d: one user may hold every connection",
             cfg->db_conns_per_user, cfg->db_pool_size);
  if (cfg->db_heavy_conns >= cfg->db_pool_size && cfg->db_pool_size > 1)
    log_warn("--db-heavy-conns %d is not below --db-pool %d: heavy calls hold at most %d "
             "connections, leaving one for the others",
             cfg->db_heavy_conns, cfg->db_pool_size, cfg->db_pool_size - 1);
  if (cfg->max_public_streams_per_addr > cfg->max_public_streams)
    log_warn("--max-public-streams-per-address %u is above --max-public-streams %u: one "
             "address is bounded by --max-public-streams alone",
             cfg->max_public_streams_per_addr, cfg->max_public_streams);
  if (cfg->max_user_inbound > cfg->max_inbound)
    log_warn("--max-user-inbound %zu is above --max-inbound %zu: one user is bounded by "
             "--max-inbound alone",
             cfg->max_user_inbound, cfg->max_inbound);
  if (cfg->max_user_outbound > cfg->max_outbound)
    log_warn("--max-user-outbound %zu is above --max-outbound %zu: one user is bounded by "
             "--max-outbound alone",
             cfg->max_user_outbound, cfg->max_outbound);
  if (cfg->max_conn_inbound > cfg->max_inbound)
    log_warn("--max-conn-inbound %zu is above --max-inbound %zu: one connection is bounded by "
             "--max-inbound alone",
             cfg->max_conn_inbound, cfg->max_inbound);
}

/* SIGTERM or SIGINT before the server's own handlers are in place (server_init()): the start-up
 * checks' blocking sessions can wait up to their connect timeout per host. Without a handler
 * the process would die at once, except as PID 1 (a container with no init), which ignores
 * every signal it has no handler for and stopped only with SIGKILL. */
static void on_stop_before_serving(int sig) {
  log_signal_line("info", "stopped by a signal before serving");
  _exit(128 + sig);
}

static void startup_signals(void) {
  struct sigaction sa;

  memset(&sa, 0, sizeof(sa));
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_stop_before_serving;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  /* A reload asked for before anything was loaded has nothing to do (by default it kills). */
  sa.sa_handler = SIG_IGN;
  sigaction(SIGHUP, &sa, NULL);
}

static int cmd_serve(server_config_t *cfg, const cli_opts_t *cli) {
  uv_loop_t loop;
  server_t srv;
  int rc;

  {
    /* Bad addresses are usage errors, found before any database check. */
    struct sockaddr_storage ss;
    if (server_parse_listen(cfg->listen, &ss) != 0) {
      log_error("invalid listen address \"%s\" (want " SERVER_LISTEN_FORMS ")", cfg->listen);
      return 2;
    }
    if (cfg->metrics_listen != NULL && server_parse_listen(cfg->metrics_listen, &ss) != 0) {
      log_error("invalid --metrics-listen address \"%s\" (want " SERVER_LISTEN_FORMS ")",
                cfg->metrics_listen);
      return 2;
    }
  }
  if (cfg->database_url == NULL) {
    log_error("no database: set --database-url or CLUED_DATABASE_URL");
    return 2;
  }
  if (check_conninfo(cfg->database_url, cli, OPT_DATABASE_URL, "--database-url",
                     "CLUED_DATABASE_URL") != 0 ||
      check_conninfo(cfg->replica_url, cli, OPT_REPLICA_URL, "--replica-url",
                     "CLUED_REPLICA_URL") != 0)
    return 2;
  startup_signals();
  if (check_migrated(cfg->database_url, cli->migrations_dir) != 0)
    return 1;
  warn_ignored_settings(cfg, cli);
  {
    char why[2048];
    int privileged = db_role_privileged(cfg->database_url, why, sizeof(why));
    if (privileged < 0)
      return 1; /* the reason is printed */
    if (privileged && !cli->allow_superuser) {
      log_error("refusing to serve: the database %s; so this server could disable the audit "
                "log's append-only triggers, or write past them; connect as the runtime role (a "
                "member of clued_runtime with none of these, README \"Database roles\") or pass "
                "--allow-superuser",
                why);
      return 1;
    }
    if (privileged)
      log_warn("serving although the database %s (--allow-superuser): the audit log's "
               "append-only triggers are only as safe as this server",
               why);
  }
  {
    int drift = db_schema_check(cfg->database_url, cli->migrations_dir);
    if (drift < 0)
      return 1; /* the reason is logged */
    if (drift > 0 && !cfg->allow_schema_drift) {
      log_error("refusing to serve: %d of clued's functions or triggers (above) are not what its "
                "migrations define, and they decide who sees what and which reads are logged; "
                "run `clued migrate --repair` as the schema's owner to restore them (or pass "
                "--allow-schema-drift to serve anyway)",
                drift);
      return 1;
    }
    if (drift > 0)
      log_warn("serving although %d of clued's functions or triggers are not what its "
               "migrations define (--allow-schema-drift)",
               drift);
  }
  if (cfg->require_sync_replica) {
    char why[200];
    int ok = db_sync_replica(cfg->database_url, why, sizeof(why));
    if (ok < 0)
      return 1; /* the reason is printed */
    if (!ok) {
      log_error("refusing to serve (--require-sync-replica): %s, so a commit acknowledged to "
                "a client could be lost with the primary",
                why);
      return 1;
    }
  }
  raise_fd_limit(cfg);
  /* A write to a peer that has already closed must fail with EPIPE (a disconnect, handled
   * per connection), not kill the process: libuv writes with write(2), which raises SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  uv_loop_init(&loop);
  if (server_init(&srv, &loop, cfg) != 0) {
    /* The handles it made (the listener of a busy port) are closing: the loop runs their
     * close callbacks, else it cannot close and its memory leaks. */
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 1;
  }
  /* From here a slow reader of stderr never stalls the loop (a file is written as before). */
  (void)log_start(&loop, STDERR_FILENO);
  if (services_start(&srv) != 0) {
    log_error("start-up failed");
    server_shutdown(&srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    server_free(&srv);
    log_stop();
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 1;
  }
  log_info("listening on %s", srv.bound);
  uv_run(&loop, UV_RUN_DEFAULT);
  server_free(&srv);
  log_stop(); /* what is queued is written, within a second; then its handles close */
  uv_run(&loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(&loop);
  if (rc != 0)
    log_warn("event loop closed with handles still open: %s", uv_strerror(rc));
  log_info("stopped");
  return 0;
}

/* Write text and a newline to a new file at path with mode: never an existing file, and never
 * through a symlink (O_EXCL refuses both; O_NOFOLLOW says so). Returns 0, or -1 having said
 * why; a file it created but could not fill is removed. */
static int write_new_file(const char *path, mode_t mode, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
  FILE *f;

  if (fd < 0) {
    refuse("keygen", "cannot create %s: %s", path, strerror(errno));
    return -1;
  }
  f = fdopen(fd, "w");
  if (f == NULL)
    close(fd);
  if (f == NULL || fprintf(f, "%s\n", text) < 0 || fclose(f) != 0) {
    refuse("keygen", "cannot write %s", path);
    unlink(path);
    return -1;
  }
  return 0;
}

/* clued keygen: the signing key to --out (0600, never overwritten), its verifier key to
 * --out.pub (0644, never overwritten either) and standard output. If the verifier key cannot
 * be written, the signing key is removed again, so that a retry starts clean. */
static int cmd_keygen(const cli_opts_t *cli) {
  note_key_t k;
  char priv[320], pub[256], path[4096];
  int rc = 1;

  if (cli->out == NULL) {
    refuse("keygen", "--out FILE is required");
    return 2;
  }
  if (note_key_generate(cli->key_name ? cli->key_name : "clued.audit", &k) != 0) {
    refuse("keygen",
           "the name must be 1 to %d bytes of UTF-8 without spaces, control characters or '+' "
           "(as signed notes require)",
           NOTE_NAME_MAX);
    return 2;
  }
  if (note_key_private_text(&k, priv, sizeof(priv)) != 0 ||
      note_key_public_text(&k, pub, sizeof(pub)) != 0 ||
      (size_t)snprintf(path, sizeof(path), "%s.pub", cli->out) >= sizeof(path))
    goto out;
  if (write_new_file(cli->out, 0600, priv) != 0)
    goto out;
  if (write_new_file(path, 0644, pub) != 0) {
    unlink(cli->out);
    goto out;
  }
  printf("%s\n", pub);
  rc = 0;
out:
  OPENSSL_cleanse(&k, sizeof(k));
  OPENSSL_cleanse(priv, sizeof(priv));
  return rc;
}

/* The options each one-shot command reads (--log-format and --log-rate: every command), and
 * those only they read; serve reads every other. An option given to a command that does not
 * read it is a usage error, not something silently done nothing with (`bootstrap --repair`
 * repairs nothing). */
static const int migrate_opts[] = {OPT_DATABASE_URL, OPT_MIGRATIONS, OPT_ALLOW_SUPERUSER,
                                   OPT_REPAIR, 0};
static const int bootstrap_opts[] = {OPT_DATABASE_URL, OPT_DEMO_TOKENS, OPT_NEW_ADMIN, 0};
static const int keygen_opts[] = {OPT_NAME, OPT_OUT, 0};
static const int one_shot_only[] = {OPT_REPAIR, OPT_DEMO_TOKENS, OPT_NEW_ADMIN,
                                    OPT_NAME,   OPT_OUT,         0};

static int listed(const int *opts, int opt) {
  for (; *opts; opts++)
    if (*opts == opt)
      return 1;
  return 0;
}

static const char *opt_name(int opt) {
  for (const struct option *o = long_opts; o->name; o++)
    if (o->val == opt)
      return o->name;
  return "?";
}

/* 0, or 1 with a message when an option given is not cmd's. */
static int check_command_options(const char *cmd, const cli_opts_t *cli) {
  const int *own = strcmp(cmd, "migrate") == 0     ? migrate_opts
                   : strcmp(cmd, "bootstrap") == 0 ? bootstrap_opts
                   : strcmp(cmd, "keygen") == 0    ? keygen_opts
                                                   : NULL;

  for (int opt = OPT_LISTEN; opt < OPT_END; opt++) {
    int ok;
    if (!cli->given[opt - OPT_LISTEN] || opt == OPT_LOG_FORMAT || opt == OPT_LOG_RATE)
      continue;
    ok = own ? listed(own, opt) : !listed(one_shot_only, opt);
    if (!ok) {
      refuse(NULL, "--%s is not an option of %s; try 'clued help'", opt_name(opt), cmd);
      return 1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  server_config_t cfg;
  cli_opts_t cli = {.migrations_dir = NULL}; /* NULL: the migrations built in */
  const char *cmd;
  int rc;

  setvbuf(stderr, NULL, _IOLBF, 0);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  cmd = argv[1];
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    const char *schema_name;
    long long schema = db_schema_version(&schema_name);

    /* Nothing to set but the log format every command takes: the last good one first, so
     * that a refusal goes out in it (CLUED_LOG_FORMAT too, when good: version reads no
     * other setting, so a bad one does not keep it from answering). */
    const char *env = getenv("CLUED_LOG_FORMAT");
    log_format_t f;

    if (env != NULL && format_of(env, &f) == 0)
      log_set_format(f);
    for (int i = 2; i < argc; i++) {
      if (strcmp(argv[i], "--log-format") == 0 && i + 1 < argc && format_of(argv[i + 1], &f) == 0)
        log_set_format(f);
      else if (strncmp(argv[i], "--log-format=", 13) == 0 && format_of(argv[i] + 13, &f) == 0)
        log_set_format(f);
    }
    for (int i = 2; i < argc; i++) {
      if (strcmp(argv[i], "--log-format") == 0 && i + 1 < argc) {
        if (set_log_format("--log-format", argv[++i]) != 0)
          return 2;
      } else if (strncmp(argv[i], "--log-format=", 13) == 0) {
        if (set_log_format("--log-format", argv[i] + 13) != 0)
          return 2;
      } else {
        refuse(NULL, "version takes no arguments (got \"%s\"); try 'clued help'", argv[i]);
        return 2;
      }
    }
    printf("clued %s\ncommit %s\nschema %lld (%s)\n", clued_version, clued_git_commit, schema, schema_name);
    return 0;
  }
  server_config_defaults(&cfg);
  rc = parse_options(argc - 1, argv + 1, &cfg, &cli);
  if (rc == 2)
    return 0;
  if (rc != 0)
    return 2;
  if ((strcmp(cmd, "serve") == 0 || strcmp(cmd, "keygen") == 0 || strcmp(cmd, "migrate") == 0 ||
       strcmp(cmd, "bootstrap") == 0) &&
      check_command_options(cmd, &cli) != 0)
    return 2;
  if (strcmp(cmd, "serve") == 0)
    return cmd_serve(&cfg, &cli);
  if (strcmp(cmd, "keygen") == 0)
    return cmd_keygen(&cli);
  if (strcmp(cmd, "migrate") == 0 || strcmp(cmd, "bootstrap") == 0) {
    if (cfg.database_url == NULL) {
      log_error("no database: set --database-url or CLUED_DATABASE_URL");
      return 2;
    }
    if (check_conninfo(cfg.database_url, &cli, OPT_DATABASE_URL, "--database-url",
                       "CLUED_DATABASE_URL") != 0)
      return 2;
    if (cmd[0] == 'm' && cli.repair)
      return db_migrate_repair(cfg.database_url, cli.migrations_dir, cli.allow_superuser) == 0 ? 0
                                                                                               : 1;
    if (cmd[0] == 'm')
      return db_migrate(cfg.database_url, cli.migrations_dir, cli.allow_superuser) == 0 ? 0 : 1;
    if (cli.demo_tokens && bootstrap_demo_path_free(cli.demo_tokens) != 0)
      return 1;
    if (bootstrap_admin(cfg.database_url, cli.new_admin, stdout) != 0)
      return 1;
    if (cli.demo_tokens && bootstrap_demo(cfg.database_url, cli.demo_tokens, stdout) != 0)
      return 1;
    return 0;
  }
  refuse(NULL, "unknown command \"%s\"; try 'clued help'", cmd);
  return 2;
}
