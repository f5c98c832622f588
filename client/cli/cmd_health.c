/* cluectl health: the standard grpc.health.v1 check, once or as a watch. */

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "grpc/health/v1/health.pb-c.h"

#define HEALTH_CHECK "/grpc.health.v1.Health/Check"
#define HEALTH_WATCH "/grpc.health.v1.Health/Watch"

/* --watch: after --keepalive seconds with nothing from the server, a PING, answered within
 * this long (or --keepalive, if shorter) or the connection counts as lost. The default
 * interval is gRPC's servers' (and clued's) least allowed between PINGs with no data sent
 * between (--keepalive-min-ping). */
#define KEEPALIVE_DEFAULT_S 300
#define KEEPALIVE_ACK_WAIT_MS 20000

static const cli_opt_t health_opts[] = {
    {"service", "NAME", 0, "service to check (default: the server as a whole)"},
    {"watch", NULL, 0, "print each status change until interrupted or --timeout"},
    {"keepalive", "SECONDS", 0,
     "with --watch: after this long with nothing from the server, PING it; no answer in 20 s "
     "(or SECONDS, if fewer) ends the watch (default 300; 0: never)"},
    {NULL, NULL, 0, NULL},
};

static void print_status(cli_t *cli, const Grpc__Health__V1__HealthCheckResponse *r, int line) {
  const char *name;

  if (cli->json) {
    (void)cli_print_json(cli, &r->base, line);
  } else {
    name = cli_enum_short(&grpc__health__v1__health_check_response__serving_status__descriptor,
                          r->status);
    if (name != NULL)
      puts(name);
    else
      printf("%d\n", (int)r->status);
  }
  fflush(stdout);
}

/* The server ends a stream that needs no token at its maximum age (clued
 * --max-unauth-stream-age): the watch carries on with a new one. */
static int aged_out(int rv, const clue_status_t *st) {
  return rv == 0 && st->code == CLUE_STATUS_UNAVAILABLE && st->message != NULL &&
         strstr(st->message, "for its maximum age") != NULL;
}

/* How long a PING may go unanswered: KEEPALIVE_ACK_WAIT_MS, or keepalive_ms if shorter. */
static uint64_t ack_wait_ms(uint64_t keepalive_ms) {
  return keepalive_ms < KEEPALIVE_ACK_WAIT_MS ? keepalive_ms : KEEPALIVE_ACK_WAIT_MS;
}

/* The next status of s, as clue_stream_next(); with keepalive_ms, a PING after that long with
 * nothing: 3 when it went unanswered (the connection seems lost). */
static int next_status(clue_stream_t *s, ProtobufCMessage **m, clue_status_t *st,
                       uint64_t keepalive_ms) {
  int rv;

  while ((rv = clue_stream_next_within(s, m, st, keepalive_ms)) == 2)
    if ((rv = clue_stream_ping(s, ack_wait_ms(keepalive_ms))) != 1)
      return rv == 0 ? 3 : rv;
  return rv;
}

static int health_watch(cli_t *cli, const Grpc__Health__V1__HealthCheckRequest *req,
                        uint64_t keepalive_ms) {
  clue_status_t st = CLUE_STATUS_INIT;
  clue_stream_t *s = NULL;
  ProtobufCMessage *m;
  uint64_t started = cli_now_ms(), budget = cli->stream_timeout_ms, stream_ms;
  int rv, rc = CLI_OK, last = -1; /* last: no status yet */

again:
  stream_ms = cli_now_ms();
  if ((rc = cli_stream_start(cli, HEALTH_WATCH, &req->base,
                             &grpc__health__v1__health_check_response__descriptor, &s)) != 0)
    return rc;
  while ((rv = next_status(s, &m, &st, keepalive_ms)) == 1) {
    const Grpc__Health__V1__HealthCheckResponse *r = (const void *)m;
    /* A new stream starts with the status as it is: no change to print if it is the last. */
    if ((int)r->status != last)
      print_status(cli, r, 1);
    last = (int)r->status;
    protobuf_c_message_free_unpacked(m, NULL);
  }
  if (rv == 3) {
    fprintf(stderr,
            "cluectl: nothing from %s for %llu s, and no answer to a PING in %llu s: the "
            "connection seems lost\n",
            cli->server, (unsigned long long)(keepalive_ms / 1000),
            (unsigned long long)(ack_wait_ms(keepalive_ms) / 1000));
    clue_stream_free(s);
    return CLI_FAILED;
  }
  if (aged_out(rv, &st)) {
    clue_status_clear(&st);
    clue_stream_free(s);
    s = NULL;
    if (cli_watch_again(cli, started, budget, stream_ms))
      goto again;
    /* --timeout is up, or the user interrupted the wait */
    st.code = *cli->interrupted ? CLUE_STATUS_CANCELLED : CLUE_STATUS_DEADLINE_EXCEEDED;
  }
  /* Health/Watch sends the status as it is first: until one came, nothing was serving. */
  rc = cli_watch_end(cli, rv, &st, last != -1, started, budget);
  clue_status_clear(&st);
  clue_stream_free(s);
  return rc;
}

static int run_health(cli_t *cli, const cli_args_t *args) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp = NULL;
  int64_t keepalive_s = KEEPALIVE_DEFAULT_S;
  int rc;

  cli_arg_str(args, "service", &req.service);
  if ((rc = cli_arg_int(cli, args, "keepalive", 0, 86400, &keepalive_s)) != 0)
    return rc;
  if (cli_arg(args, "keepalive") != NULL && !cli_flag(args, "watch"))
    return cli_usage_error(cli, "--keepalive needs --watch");
  if (cli_flag(args, "watch"))
    return health_watch(cli, &req, (uint64_t)keepalive_s * 1000);
  rc = cli_call(cli, &grpc__health__v1__health__descriptor, "Check", &req.base,
                (ProtobufCMessage **)&resp);
  if (rc != 0)
    return rc;
  print_status(cli, resp, 0);
  rc = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
           ? CLI_OK
           : CLI_FAILED;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

static const cli_command_t health_commands[] = {
    {NULL, NULL, "Ask the server whether it is serving (grpc.health.v1)", health_opts,
     "Prints SERVING, NOT_SERVING or UNKNOWN (a --service the server does not know is\n"
     "NOT_FOUND, or SERVICE_UNKNOWN with --watch). Exits 0 when SERVING and 1\n"
     "otherwise. With --watch, prints one line per status change, carrying on with a\n"
     "new stream when the server ends one at its maximum age (--max-unauth-stream-age);\n"
     "reaching --timeout or an interrupt (Ctrl-C) ends the watch with exit status 0, if a\n"
     "status came: a server that sent none before --timeout (hung, or not speaking gRPC)\n"
     "exits 1, as does a stream the server ends with an error (DEADLINE_EXCEEDED too).\n"
     "A watch whose connection a proxy or NAT dropped silently would wait for ever: after\n"
     "--keepalive seconds with nothing from the server (default 300), cluectl sends it an\n"
     "HTTP/2 PING, and a PING unanswered for 20 s (or --keepalive seconds, if fewer) ends\n"
     "the watch with exit status 1. A\n"
     "server ends a connection PINGed more often than its keepalive policy allows (clued:\n"
     "--keepalive-min-ping, 5 minutes; gRPC servers the same).\n",
     run_health},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};

const cli_group_t cli_group_health = {
    "health",
    "Check whether the server is serving",
    health_commands,
};
