/* cluectl audit: the audit trail, its hash chains and live events (clue.v1.AuditService). */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cmd_audit_tree.h"
#include "clue/v1/audit.pb-c.h"
#include "table.h"

#define AUDIT_SVC (&clue__v1__audit_service__descriptor)
#define WATCH_PATH "/clue.v1.AuditService/WatchEvents"

/* ---- list ----------------------------------------------------------------------------------- */

static const cli_opt_t list_opts[] = {
    {"subject-type", "TYPE", 0, "clue, case, rectification, unit or user"},
    {"subject-id", "ID", 0, "events of this subject (with --subject-type)"},
    {"actor", "USER", 0, "events caused by this user"},
    {"unit", "ID", 0, "events caused by users of this unit"},
    {"action", "ACTION", 0, "e.g. clue.submit, clue.move, user.create"},
    {"from", "TIME", 0, "at or after (YYYY-MM-DD or RFC 3339)"},
    {"to", "TIME", 0, "before; a date takes in that whole day"},
    {"after-seq", "N", 0, "events with a sequence number above N"},
    {"until-seq", "N", 0, "events with a sequence number up to N"},
    {"page-size", "N", 0, "events per page (1-500, default 50)"},
    CLI_OPT_PAGE_TOKEN,
    CLI_OPT_ALL_PAGES,
    CLI_OPT_CONSISTENT,
    CLI_OPT_MIN_READ_LSN,
    {NULL, NULL, 0, NULL},
};

static int show_events(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__ListAuditEventsResponse *r = (const Clue__V1__ListAuditEventsResponse *)m;
  static const char *const headers[] = {"SEQ", "TIME", "ACTION", "SUBJECT", "FROM",
                                        "TO",  "USER", "UNIT",   "REASON"};
  table_t *t = table_new(9, headers);
  int rc;

  if (t == NULL)
    return cli_oom(cli);
  for (size_t i = 0; i < r->n_events; i++) {
    const Clue__V1__AuditEvent *e = r->events[i];
    char when[32];
    table_add(t, table_fmt("%lld", (long long)e->seq));
    table_add(t, table_fmt("%s", cli_time_text(e->at_ms, when, sizeof(when))));
    table_add(t, table_fmt("%s", e->action));
    table_add(t, table_fmt("%s #%lld", e->subject_type, (long long)e->subject_id));
    table_add(t, table_fmt("%s", cli_state_text(e->from_state)));
    table_add(t, table_fmt("%s", cli_state_text(e->to_state)));
    /* No actor (0): an event of clued bootstrap, which no user caused. */
    table_add(t, e->actor_user_name[0] ? table_fmt("%s", e->actor_user_name)
                 : e->actor_user_id    ? table_fmt("%lld", (long long)e->actor_user_id)
                                       : table_fmt("-"));
    table_add(t, e->actor_unit_code[0] ? table_fmt("%s", e->actor_unit_code)
                 : e->actor_unit_id    ? table_fmt("%lld", (long long)e->actor_unit_id)
                                       : table_fmt("-"));
    table_add(t, table_fmt("%s", e->reason[0] ? e->reason : "-"));
  }
  rc = table_print(t, stdout) == 0 ? CLI_OK : cli_oom(cli);
  table_free(t);
  if (rc == CLI_OK && r->n_events == 0)
    puts("(no events)");
  return rc;
}

static int run_list(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ListAuditEventsRequest req = CLUE__V1__LIST_AUDIT_EVENTS_REQUEST__INIT;
  Clue__V1__ListAuditEventsResponse *resp = NULL;
  Clue__V1__ReadConsistency read;
  int all, rc;

  if ((rc = cli_arg_id(cli, args, "subject-id", &req.subject_id)) != 0 ||
      (rc = cli_arg_id(cli, args, "actor", &req.actor_user_id)) != 0 ||
      (rc = cli_arg_id(cli, args, "unit", &req.unit_id)) != 0 ||
      (rc = cli_arg_time(cli, args, "from", 0, &req.from_ms)) != 0 ||
      (rc = cli_arg_time(cli, args, "to", 1, &req.to_ms)) != 0 ||
      (rc = cli_arg_int(cli, args, "after-seq", 0, INT64_MAX, &req.after_seq)) != 0 ||
      (rc = cli_arg_int(cli, args, "until-seq", 1, INT64_MAX, &req.until_seq)) != 0 ||
      (rc = cli_arg_i32(cli, args, "page-size", 1, 500, &req.page_size)) != 0 ||
      (rc = cli_page_args(cli, args, &all, &req.page_token)) != 0 ||
      (rc = cli_read_args(cli, args, &read, &req.read)) != 0 ||
      (rc = cli_check_period(cli, "from", req.from_ms, "to", req.to_ms)) != 0)
    return rc;
  if (req.subject_id != 0 && cli_arg(args, "subject-type") == NULL)
    return cli_usage_error(cli, "--subject-id needs --subject-type");
  if (req.until_seq != 0 && req.until_seq <= req.after_seq)
    return cli_usage_error(cli,
                           "--until-seq %lld is not above --after-seq %lld: no event lies "
                           "between them",
                           (long long)req.until_seq, (long long)req.after_seq);
  cli_arg_str(args, "subject-type", &req.subject_type);
  cli_arg_str(args, "action", &req.action);
  if (all && req.page_size == 0)
    req.page_size = 500; /* fewer round trips */
  rc = cli_call_pages(cli, AUDIT_SVC, "ListAuditEvents", &req.base, "events", all,
                      (ProtobufCMessage **)&resp);
  if (rc != 0)
    return rc;
  return cli_show(cli, &resp->base, show_events);
}

/* ---- verify --------------------------------------------------------------------------------- */

static const cli_opt_t verify_opts[] = {
    {"subject-type", "TYPE", 0, "verify only the chains of this kind of subject"},
    {"subject-id", "ID", 0, "verify only this subject's chain (with --subject-type)"},
    {"checkpoint", "FILE", 0, "verify the whole log offline against this saved checkpoint"},
    {"key", "FILE", CLI_OPT_REPEAT,
     "with --checkpoint: a verifier key (two across a key rotation)"},
    {"page-size", "N", 0, "with --checkpoint: events per export page (1-5000, default 1000)"},
    {"out", "FILE", 0,
     "with --checkpoint: once verified, keep the server's checkpoint in FILE and FILE.leaves "
     "(FILE may be the --checkpoint file itself)"},
    {NULL, NULL, 0, NULL},
};

static const cli_opt_t checkpoint_opts[] = {
    {"out", "FILE", 0, "save the signed checkpoint to FILE (\"-\": standard output)"},
    {NULL, NULL, 0, NULL},
};

static const cli_opt_t witness_opts[] = {
    {"dir", "DIR", CLI_OPT_REQUIRED, "where the checkpoints are kept (created if missing)"},
    {"key", "FILE", CLI_OPT_REPEAT,
     "a verifier key (default: DIR/key.pub; two across a key rotation)"},
    {"interval", "SECONDS", 0, "time between polls (default 10)"},
    {"once", NULL, 0, "poll once and exit"},
    {NULL, NULL, 0, NULL},
};

static int run_verify(cli_t *cli, const cli_args_t *args) {
  Clue__V1__VerifyAuditChainRequest req = CLUE__V1__VERIFY_AUDIT_CHAIN_REQUEST__INIT;
  Clue__V1__VerifyAuditChainResponse *resp = NULL;
  int rc;

  if (cli_arg(args, "checkpoint")) {
    if (cli_arg(args, "subject-type") || cli_arg(args, "subject-id"))
      return cli_usage_error(cli, "--checkpoint verifies the whole log: no --subject-*");
    if (cli_arg(args, "out") &&
        (strcmp(cli_arg(args, "out"), "-") == 0 || *cli_arg(args, "out") == '\0'))
      return cli_usage_error(cli, "--out names a file (standard output holds the verdict)");
    return audit_tree_verify(cli, args);
  }
  if (cli_arg(args, "out"))
    return cli_usage_error(cli, "--out goes with --checkpoint");
  if (cli_arg(args, "key"))
    return cli_usage_error(cli, "--key goes with --checkpoint");
  if (cli_arg(args, "page-size"))
    return cli_usage_error(cli, "--page-size goes with --checkpoint");
  if ((rc = cli_arg_id(cli, args, "subject-id", &req.subject_id)) != 0)
    return rc;
  if (req.subject_id != 0 && cli_arg(args, "subject-type") == NULL)
    return cli_usage_error(cli, "--subject-id needs --subject-type");
  cli_arg_str(args, "subject-type", &req.subject_type);
  if ((rc = cli_call(cli, AUDIT_SVC, "VerifyAuditChain", &req.base, (ProtobufCMessage **)&resp)) !=
      0)
    return rc;
  if (cli->json) {
    rc = cli_print_json(cli, &resp->base, 0);
  } else if (resp->ok) {
    printf("OK: %lld event%s in %lld chain%s verified\n", (long long)resp->events_checked,
           resp->events_checked == 1 ? "" : "s", (long long)resp->subjects_checked,
           resp->subjects_checked == 1 ? "" : "s");
  } else {
    const Clue__V1__BrokenLink *b = resp->broken;
    const char *problem =
        b ? cli_enum_short(&clue__v1__broken_link__problem__descriptor, b->problem) : NULL;
    if (b != NULL) {
      fputs("BROKEN: ", stdout);
      cli_put_text(stdout, b->subject_type, 0);
      printf(" #%lld at event %lld: %s%s", (long long)b->subject_id, (long long)b->seq,
             problem ? problem : "?", b->detail[0] ? ": " : "");
      cli_put_text(stdout, b->detail, 0);
      putchar('\n');
    } else if (resp->tree_problem[0]) {
      fputs("BROKEN: the Merkle tree: ", stdout);
      cli_put_text(stdout, resp->tree_problem, 0);
      putchar('\n');
    } else {
      puts("BROKEN");
    }
    printf("(checked %lld event%s in %lld chain%s)\n", (long long)resp->events_checked,
           resp->events_checked == 1 ? "" : "s", (long long)resp->subjects_checked,
           resp->subjects_checked == 1 ? "" : "s");
  }
  if (rc == CLI_OK && !resp->ok)
    rc = CLI_FAILED;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

/* ---- watch ---------------------------------------------------------------------------------- */

static const cli_opt_t watch_opts[] = {
    {"after-seq", "N", 0, "replay events after sequence number N first (default: 0, all)"},
    {"subject-type", "TYPE", 0, "only events of this kind of subject"},
    {"subject-id", "ID", 0, "only events of this subject (with --subject-type)"},
    {"action", "ACTION", 0, "only events of this action"},
    {"heartbeat", "SECONDS", 0,
     "ask the server for a heartbeat after SECONDS of quiet (default 15; 0: none)"},
    {NULL, NULL, 0, NULL},
};

/* The heartbeat a watch asks for unless --heartbeat says otherwise, and how many of its
 * intervals may pass with nothing at all before the connection is taken for dead. */
#define WATCH_HEARTBEAT_S 15
#define WATCH_SILENT_BEATS 3

static void event_line(const Clue__V1__AuditEvent *e) {
  char when[32];

  printf("%lld  %s  ", (long long)e->seq, cli_time_text(e->at_ms, when, sizeof(when)));
  cli_put_text(stdout, e->action, 0);
  fputs("  ", stdout);
  cli_put_text(stdout, e->subject_type, 0);
  printf(" #%lld", (long long)e->subject_id);
  if (e->from_state != 0 || e->to_state != 0)
    printf("  %s -> %s", cli_state_text(e->from_state), cli_state_text(e->to_state));
  if (e->actor_user_name[0]) {
    fputs("  by ", stdout);
    cli_put_text(stdout, e->actor_user_name, 0);
  } else if (e->actor_user_id != 0) { /* no actor: an event of clued bootstrap */
    printf("  by user %lld", (long long)e->actor_user_id);
  }
  if (e->actor_unit_code[0]) {
    fputs(" (", stdout);
    cli_put_text(stdout, e->actor_unit_code, 0);
    putchar(' ');
    cli_put_text(stdout, e->actor_unit_name, 0);
    putchar(')');
  } else if (e->actor_unit_id != 0) {
    printf(" (unit %lld)", (long long)e->actor_unit_id);
  }
  if (e->reason[0] != '\0') {
    fputs("  ", stdout);
    cli_put_text(stdout, e->reason, 0);
  }
  putchar('\n');
}

/* A stream the server ended because it reached its maximum age (clued --max-stream-age):
 * the seq to resume from, or -1. */
static int64_t aged_out(int rv, const clue_status_t *st) {
  static const char mark[] = "maximum age; resume from seq ";
  const char *p;

  if (rv != 0 || st->code != CLUE_STATUS_UNAVAILABLE || st->message == NULL ||
      (p = strstr(st->message, mark)) == NULL)
    return -1;
  return strtoll(p + sizeof(mark) - 1, NULL, 10);
}

/* One option of the resume hint: a value a shell takes as one word, quoted if it must be. */
static void hint_option(const char *name, const char *value) {
  if (value == NULL || value[0] == '\0')
    return;
  fprintf(stderr, " --%s ", name);
  if (strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:/") ==
      strlen(value)) {
    cli_put_text(stderr, value, 0);
    return;
  }
  fputc('\'', stderr);
  for (const char *p = value; *p; p++) {
    if (*p == '\'') {
      fputs("'\\''", stderr);
    } else {
      char one[2] = {*p, '\0'};
      cli_put_text(stderr, one, 0);
    }
  }
  fputc('\'', stderr);
}

/* Whether a watch's status is the server refusing the request itself (a bad filter, a caller
 * who may not watch): a watch sent again would be refused again. */
static int watch_refused(int code) {
  return code == CLUE_STATUS_INVALID_ARGUMENT || code == CLUE_STATUS_NOT_FOUND ||
         code == CLUE_STATUS_PERMISSION_DENIED || code == CLUE_STATUS_FAILED_PRECONDITION ||
         code == CLUE_STATUS_OUT_OF_RANGE || code == CLUE_STATUS_UNIMPLEMENTED ||
         code == CLUE_STATUS_UNAUTHENTICATED;
}

static int run_watch(cli_t *cli, const cli_args_t *args) {
  Clue__V1__WatchEventsRequest req = CLUE__V1__WATCH_EVENTS_REQUEST__INIT;
  clue_status_t st = CLUE_STATUS_INIT;
  clue_stream_t *s = NULL;
  ProtobufCMessage *m;
  int64_t last, resume;
  uint64_t started = cli_now_ms(), budget = cli->stream_timeout_ms, stream_ms;
  uint64_t silence_ms;
  int rv, rc = CLI_OK, answered, silent, received = 0, refused;

  req.heartbeat_seconds = WATCH_HEARTBEAT_S;
  if ((rc = cli_arg_int(cli, args, "after-seq", 0, INT64_MAX, &req.after_seq)) != 0 ||
      (rc = cli_arg_id(cli, args, "subject-id", &req.subject_id)) != 0 ||
      (rc = cli_arg_i32(cli, args, "heartbeat", 0, 3600, &req.heartbeat_seconds)) != 0)
    return rc;
  if (req.subject_id != 0 && cli_arg(args, "subject-type") == NULL)
    return cli_usage_error(cli, "--subject-id needs --subject-type");
  /* A connection a proxy or NAT dropped silently never ends by itself: with a heartbeat
   * asked for, nothing for a few of its intervals means it is gone. */
  silence_ms = (uint64_t)req.heartbeat_seconds * 1000 * WATCH_SILENT_BEATS;
  cli_arg_str(args, "subject-type", &req.subject_type);
  cli_arg_str(args, "action", &req.action);
  last = req.after_seq;
again:
  stream_ms = cli_now_ms();
  rc = cli_stream_start(cli, WATCH_PATH, &req.base, &clue__v1__audit_event__descriptor, &s);
  if (rc != 0)
    return rc;
  while ((rv = clue_stream_next_within(s, &m, &st, silence_ms)) == 1) {
    const Clue__V1__AuditEvent *e = (const Clue__V1__AuditEvent *)m;
    received = 1;
    if (e->action[0] == '\0') { /* a heartbeat: where the stream stands, nothing to print */
      if (e->seq > last)
        last = e->seq;
      protobuf_c_message_free_unpacked(m, NULL);
      continue;
    }
    if (cli->json)
      rc = cli_print_json(cli, m, 1);
    else
      event_line(e);
    if (e->seq > last)
      last = e->seq;
    protobuf_c_message_free_unpacked(m, NULL);
    fflush(stdout); /* a watcher reads each event as it comes, through a pipe too */
    if (rc != CLI_OK)
      break;
  }
  silent = rv == 2;
  answered = clue_stream_answered(s);
  refused = rc == CLI_OK && !silent && !received && rv == 0 && watch_refused(st.code);
  if (rc == CLI_OK && !silent && (resume = aged_out(rv, &st)) >= last) {
    /* The server ends long streams; carry on from where it says, within --timeout. */
    clue_status_clear(&st);
    clue_stream_free(s);
    s = NULL;
    last = req.after_seq = resume;
    if (cli_watch_again(cli, started, budget, stream_ms)) {
      fprintf(stderr, "the server ended the stream at its maximum age; resuming after seq %lld\n",
              (long long)resume);
      goto again;
    }
    /* --timeout is up, or the user interrupted the wait */
    st.code = *cli->interrupted ? CLUE_STATUS_CANCELLED : CLUE_STATUS_DEADLINE_EXCEEDED;
  }
  if (rc != CLI_OK) { /* output failed: already reported */
    rc = CLI_FAILED;
  } else if (silent) {
    fprintf(stderr,
            "cluectl: nothing from %s for %d s, no event and no heartbeat (asked for every %d "
            "s): the connection seems lost\n",
            cli->server, req.heartbeat_seconds * WATCH_SILENT_BEATS, req.heartbeat_seconds);
    rc = CLI_FAILED;
  } else {
    rc = cli_watch_end(cli, rv, &st, answered, started, budget);
  }
  clue_status_clear(&st);
  clue_stream_free(s);
  if (refused) /* nothing to resume */
    return rc;
  fprintf(stderr, "last seq %lld; resume with: cluectl audit watch --after-seq %lld",
          (long long)last, (long long)last);
  hint_option("subject-type", req.subject_type);
  if (req.subject_id != 0)
    fprintf(stderr, " --subject-id %lld", (long long)req.subject_id);
  hint_option("action", req.action);
  fputc('\n', stderr);
  return rc;
}

static const cli_command_t audit_commands[] = {
    {"list", NULL, "List audit events", list_opts,
     "AUDITOR and ADMIN callers see the whole trail. One page is listed unless --all is\n"
     "given; the token of the next page is printed on stderr.\n",
     run_list},
    {"verify", NULL, "Verify the audit hash chains, or the whole log against a checkpoint",
     verify_opts,
     "Walks each subject's chain of events, recomputing every hash. Prints\n"
     "\"OK: N events in M chains verified\" and exits 0, or prints the first broken link\n"
     "(subject, event sequence number, problem) and exits 1. With --json the answer is\n"
     "printed as JSON; the exit status is the same.\n"
     "\n"
     "With --checkpoint FILE (saved by `audit checkpoint --out`), checks offline, here:\n"
     "the checkpoint's signature and the server's latest one's (with --key, or else the key\n"
     "the server names; after the server's key was replaced, give --key twice: the key that\n"
     "signed the saved checkpoint and the new one); that the server's tree only grew since (a\n"
     "consistency proof);\n"
     "that every event hashes to its leaf and the leaves to both roots; the content hashes\n"
     "the events record (note text, a clue's submitted fields, its reporter) and the facts\n"
     "they state (a note's clue, kind and author; a clue's number, submitter and whether it\n"
     "has a reporter) against the current rows; that no note or clue exists without the\n"
     "event that logged it; and the chains. Prints \"OK: ...\" and exits 0, or \"FAIL: ...\"\n"
     "naming the first problem (seq, subject, what) and exits 1 (a server with no\n"
     "checkpoint at all: \"FAIL: the log was truncated\"); with --json, that line as\n"
     "{\"ok\": true|false, \"message\": \"OK: ...\"}. On a log being written\n"
     "to, it verifies the events the server's tree held when the walk began; later ones\n"
     "are left to the next verify. --page-size N sets the events per export page.\n"
     "The events past the saved checkpoint are held to the server's latest one only once\n"
     "that one is kept somewhere the server cannot reach: --out FILE keeps it, once\n"
     "verified, with FILE.leaves (--out cp.txt with --checkpoint cp.txt moves the saved one\n"
     "forward); nothing is written on FAIL.\n",
     run_verify},
    {"checkpoint", NULL, "Print or save the latest signed checkpoint", checkpoint_opts,
     "The checkpoint is a signed note (C2SP tlog-checkpoint): the log's name, its number of\n"
     "events and the root hash of its Merkle tree, signed with the server's Ed25519 key.\n"
     "Keep it somewhere the server cannot reach; `audit verify --checkpoint` proves later\n"
     "that the log only grew since. With --out FILE, FILE.leaves keeps the seq and leaf\n"
     "hash of every event the checkpoint covers, so that a later verify names the exact\n"
     "first event of a truncation or fork. When they cannot be kept (the server does not\n"
     "give them, or they do not hash to its own signed root: FAIL), FILE is saved all the\n"
     "same, an older FILE.leaves is removed, and the exit status is 1.\n",
     audit_tree_checkpoint},
    {"witness", NULL, "Keep the signed sequence of checkpoints, checking each", witness_opts,
     "Polls the latest checkpoint, checks its signature and that it extends the last one\n"
     "kept (a consistency proof), and keeps it as DIR/checkpoint.<size> and DIR/latest,\n"
     "with the seq and leaf hash of every event it covers in DIR/leaves.\n"
     "Runs until interrupted, or once with --once; exits 1 on the first checkpoint that\n"
     "does not extend the last one kept (a fork or a truncation), naming it and the first\n"
     "event where the log differs from the leaves kept; a server with no checkpoint at all\n"
     "where one was kept is a truncation too (\"the server has no checkpoint\"). A poll that\n"
     "fails for a reason that passes (the server restarting or unreachable, its database\n"
     "down, no checkpoint published yet while none is kept) is reported and the next one\n"
     "made as usual; with --once it ends the run with exit status 1.\n"
     "When the server's key is replaced, give --key twice (the key it checked with and the\n"
     "new one): a checkpoint of either is kept once it extends the last one kept, and\n"
     "DIR/key.pub then holds the new key (docs/AUDIT.md, \"Replacing the signing key\").\n"
     "\n"
     "With --json each poll prints one JSON object on one line: \"result\" (kept,\n"
     "unchanged, fail or error), \"tree_size\" of the server's checkpoint, \"last_size\" of\n"
     "the last one kept, \"status\" of a call that failed and \"message\", the text the\n"
     "poll prints without --json. Errors are reported on stderr as without it.\n",
     audit_tree_witness},
    {"watch", NULL, "Stream audit events as they happen", watch_opts,
     "Prints the events after --after-seq, then each new event as it is recorded, one\n"
     "line each (with --json: one JSON object per line). Runs until interrupted (Ctrl-C)\n"
     "or until the --timeout deadline; both end it with exit status 0 (--timeout only if\n"
     "the server answered: a hung one, or a DEADLINE_EXCEEDED of the server's, exits 1).\n"
     "On exit the last sequence number seen is printed on stderr, with the command that\n"
     "resumes the watch from it (its filters included) without missing or repeating an\n"
     "event; not when the server refused the watch itself (a bad filter, a caller who may\n"
     "not watch). A broken connection exits 1, after the same line; so does one that went\n"
     "silent: the watch asks the server for a heartbeat when it has sent nothing for\n"
     "--heartbeat seconds, and ends when neither an event nor a heartbeat came for three\n"
     "of them (--heartbeat 0: no heartbeat, no such end; for a server without\n"
     "heartbeats). When the server ends the stream at its maximum age (clued\n"
     "--max-stream-age), the watch resumes by itself from the sequence number the server\n"
     "names.\n",
     run_watch},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};

const cli_group_t cli_group_audit = {
    "audit",
    "Read, verify and watch the audit trail",
    audit_commands,
};
