/* cluectl clue: submitting and reading clues, their history and notes (clue.v1.ClueService).
 * The commands that change a clue's state or owner are in cmd_clue_move.c. */

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_clue.h"
#include "table.h"

/* "2026-04-01 (29 days left)", "2026-02-01 (overdue by 3 days)", or "-" when no deadline runs. */
static char *deadline_text(const Clue__V1__Clue *c) {
  char date[64];
  int left = c->days_left;

  if (c->stage_deadline_ms == 0)
    return table_fmt("-");
  /* The moment it falls due: the stage began at a time of day, and ends at that time. */
  cli_deadline_text(c->stage_deadline_ms, date, sizeof(date));
  if (c->overdue)
    return table_fmt("%s (overdue by %d day%s)", date, -left, left == -1 ? "" : "s");
  return table_fmt("%s (%d day%s left)", date, left, left == 1 ? "" : "s");
}

/* ---- submit --------------------------------------------------------------------------------- */

static const cli_opt_t submit_opts[] = {
    {"title", "TEXT", 0, "short title (at most 200 characters)"},
    {"summary", "TEXT", 0, "what is reported"},
    {"source", "SOURCE", 0,
     "channel: LETTER_VISIT_REPORT, INSPECTION_TOUR, AUDIT, SUPERIOR_ASSIGNED, SELF_DISCOVERED "
     "or OTHER_BODY_TRANSFER"},
    {"subject-name", "NAME", 0, "name of the person the clue is about"},
    {"subject-position", "TEXT", 0, "their position"},
    {"subject-rank", "TEXT", 0, "their rank level"},
    {"top-leader", NULL, 0, "the subject is the top leader (一把手) of their unit"},
    {"host-unit", "NAME", 0, "the host unit (驻在单位) concerned"},
    {"category", "TEXT", CLI_OPT_REPEAT, "a violation category"},
    {"reporter-name", "NAME", 0, "reporter's name (shown only to leaders of the owner unit)"},
    {"reporter-phone", "PHONE", 0, "reporter's phone"},
    {"reporter-address", "TEXT", 0, "reporter's address"},
    {"reporter-email", "EMAIL", 0, "reporter's e-mail"},
    {"file", "PATH", 0, "read the clue (or an array of clues) from a JSON file; - for stdin"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static const char submit_help[] =
    "Without --file, --title, --summary, --source, --subject-name and --host-unit are\n"
    "required. The clue belongs to the caller's unit and starts ACCEPTED.\n"
    "\n"
    "--file reads a JSON object with the fields of SubmitClueRequest, e.g.\n"
    "  {\"title\": \"...\", \"summary\": \"...\", \"source\": \"LETTER_VISIT_REPORT\",\n"
    "   \"subject\": {\"name\": \"...\", \"position\": \"...\", \"rank_level\": \"...\",\n"
    "               \"is_top_leader\": false},\n"
    "   \"host_unit\": \"...\", \"violation_categories\": [\"...\"],\n"
    "   \"reporter\": {\"name\": \"...\", \"phone\": \"...\"}, \"request_id\": \"<uuid>\"}\n"
    "or a JSON array of such objects, submitted in order, one output line per clue. The\n"
    "file is checked as a whole first: a mistake is reported as PATH:LINE:COLUMN and\n"
    "nothing is sent (exit 2). Submission stops at the first clue the server refuses.\n"
    "\n"
    "Every submission carries a request id; a clue without one gets a new random UUID.\n"
    "It is printed (and is in the --json output) so that a retry with the same id after\n"
    "an unknown outcome returns the first clue instead of creating a second.\n"
    "An array is submitted under one request id, --request-id or a new random UUID: an\n"
    "element without a request_id of its own is sent with the UUID derived from it and\n"
    "the element's position (version 5, the position in decimal named in that id's\n"
    "namespace). When a submission stops, cluectl says which elements were submitted and\n"
    "prints the array's id: the same file with --request-id ID submits each element at\n"
    "most once, as long as the elements keep their order.\n";

static void submit_line(const Clue__V1__Clue *c, const char *rid) {
  printf("clue %lld ", (long long)c->id);
  cli_put_text(stdout, c->registration_number, 0);
  printf(" submitted (request id %s)\n", rid);
}

/* An array submitted under request id base (the file at path) stopped at element idx of n:
 * what became of which element, and the retry that makes each at most once. */
static void array_stopped(cli_t *cli, size_t idx, size_t n, const char *base, const char *path) {
  fprintf(stderr, "cluectl clue submit: element %zu of %zu ", idx, n);
  if (cli->last_unknown)
    fputs("may or may not have been submitted (the outcome is unknown)", stderr);
  else
    fputs("was not submitted", stderr);
  if (idx == 2)
    fputs("; element 1 was", stderr);
  else if (idx > 2)
    fprintf(stderr, "; elements 1 to %zu were", idx - 1);
  if (idx < n)
    fputs("; nothing after it was sent", stderr);
  fputs(".\nRetrying with --file ", stderr);
  cli_put_text(stderr, path, 0);
  fprintf(stderr,
          " --request-id %s submits each element at most\n"
          "once (those submitted already return their clue), as long as the elements keep\n"
          "their order.\n",
          base);
}

/* Submit one request (its request_id set); print the clue. idx > 0 numbers the elements of
 * an array of n submitted under request id base, read from path. */
static int submit_one(cli_t *cli, Clue__V1__SubmitClueRequest *req, size_t idx, size_t n,
                      const char *base, const char *path) {
  Clue__V1__Clue *c = NULL;
  int lines = idx > 0;
  int rc;

  fflush(stdout); /* earlier clues' lines before this one's error, if any */
  if (idx == 0)
    rc = cli_call_rid(cli, CLUE_SVC, "SubmitClue", &req->base, req->request_id,
                      (ProtobufCMessage **)&c);
  else
    rc = cli_call(cli, CLUE_SVC, "SubmitClue", &req->base, (ProtobufCMessage **)&c);
  if (rc != 0) {
    if (idx > 0)
      array_stopped(cli, idx, n, base, path);
    return rc;
  }
  if (cli->json)
    rc = cli_print_json_with(cli, &c->base, "request_id", req->request_id, lines);
  else
    submit_line(c, req->request_id);
  protobuf_c_message_free_unpacked(&c->base, NULL);
  return rc;
}

/* Give a request read from a file the request id it lacks: --request-id or a new one, or for
 * the element at position pos (from 1) of an array the one derived from base. */
static int fill_request_id(cli_t *cli, const cli_args_t *args, Clue__V1__SubmitClueRequest *req,
                           const char *base, size_t pos) {
  char rid[CLI_REQUEST_ID_LEN];
  char *copy;
  int rc;

  if (req->request_id != NULL && req->request_id[0] != '\0')
    return 0;
  if (base != NULL) {
    if (cli_derived_request_id(base, pos, rid) != 0) {
      fputs("cluectl: cannot make a request id\n", stderr);
      return CLI_FAILED;
    }
  } else if ((rc = cli_request_id(cli, args, rid)) != 0) {
    return rc;
  }
  copy = strdup(rid);
  if (copy == NULL)
    return cli_oom(cli);
  req->request_id = copy; /* the message owns it now: free_unpacked frees non-default strings */
  return 0;
}

static const char *const field_opts[] = {
    "title",          "summary",          "source",         "subject-name", "subject-position",
    "subject-rank",   "top-leader",       "host-unit",      "category",     "reporter-name",
    "reporter-phone", "reporter-address", "reporter-email", NULL,
};

static int submit_file(cli_t *cli, const cli_args_t *args, const char *path) {
  clue_json_error_t err;
  ProtobufCMessage **msgs = NULL, *one = NULL;
  size_t n = 0, i = 0;
  char *text = NULL, base[CLI_REQUEST_ID_LEN];
  size_t len = 0;
  int rc, rv;

  for (const char *const *o = field_opts; *o != NULL; o++)
    if (cli_flag(args, *o))
      return cli_usage_error(cli, "--%s cannot be combined with --file (the file holds the clue)",
                             *o);
  if ((rc = cli_read_file(cli, path, &text, &len)) != 0)
    return rc;
  while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'))
    i++;
  if (i < len && text[i] == '[')
    rv = clue_from_json_array(text, len, &clue__v1__submit_clue_request__descriptor, &msgs, &n,
                              &err);
  else
    rv = clue_from_json(text, len, &clue__v1__submit_clue_request__descriptor, &one, &err);
  free(text);
  if (rv == CLUE_ENOMEM)
    return cli_oom(cli);
  if (rv != 0) {
    /* The message quotes the file's text (a field name, a value): shown as untrusted text. */
    fputs("cluectl clue submit: ", stderr);
    cli_put_text(stderr, strcmp(path, "-") ? path : "<stdin>", 0);
    fprintf(stderr, ":%d:%d: ", err.line, err.column);
    cli_put_text(stderr, err.message, 0);
    fputc('\n', stderr);
    return CLI_USAGE;
  }
  if (one != NULL) {
    Clue__V1__SubmitClueRequest *req = (Clue__V1__SubmitClueRequest *)one;
    if (cli_arg(args, "request-id") != NULL && req->request_id[0] != '\0')
      rc = cli_usage_error(cli, "the file sets request_id; --request-id cannot also be given");
    else
      rc = fill_request_id(cli, args, req, NULL, 0);
    if (rc == 0)
      rc = submit_one(cli, req, 0, 0, NULL, path);
    protobuf_c_message_free_unpacked(one, NULL);
    return rc;
  }
  /* Each element without a request_id of its own gets one derived from the array's (given,
   * or new): the same --request-id retries the whole array, each element at most once. */
  rc = cli_request_id(cli, args, base);
  for (i = 0; rc == 0 && i < n; i++)
    rc = fill_request_id(cli, args, (Clue__V1__SubmitClueRequest *)msgs[i], base, i + 1);
  for (i = 0; rc == 0 && i < n; i++)
    rc = submit_one(cli, (Clue__V1__SubmitClueRequest *)msgs[i], i + 1, n, base, path);
  clue_messages_free(msgs, n);
  return rc;
}

static int run_submit(cli_t *cli, const cli_args_t *args) {
  Clue__V1__SubmitClueRequest req = CLUE__V1__SUBMIT_CLUE_REQUEST__INIT;
  Clue__V1__SubjectPerson subject = CLUE__V1__SUBJECT_PERSON__INIT;
  Clue__V1__ReporterContact reporter = CLUE__V1__REPORTER_CONTACT__INIT;
  static const char *const required[] = {"title",        "summary",   "source",
                                         "subject-name", "host-unit", NULL};
  static const struct {
    const char *opt;
    size_t offset;
  } rep[] = {
      {"reporter-name", offsetof(Clue__V1__ReporterContact, name)},
      {"reporter-phone", offsetof(Clue__V1__ReporterContact, phone)},
      {"reporter-address", offsetof(Clue__V1__ReporterContact, address)},
      {"reporter-email", offsetof(Clue__V1__ReporterContact, email)},
  };
  char rid[CLI_REQUEST_ID_LEN];
  int source = 0, rc, has_reporter = 0;

  if (cli_arg(args, "file") != NULL)
    return submit_file(cli, args, cli_arg(args, "file"));
  for (const char *const *r = required; *r != NULL; r++)
    if (!cli_flag(args, *r))
      return cli_usage_error(cli, "--%s is required (or give the clue with --file)", *r);
  if ((rc = cli_arg_enum(cli, args, "source", &clue__v1__source_channel__descriptor, &source)) != 0)
    return rc;
  req.title = (char *)cli_arg(args, "title");
  req.summary = (char *)cli_arg(args, "summary");
  req.source = (Clue__V1__SourceChannel)source;
  req.host_unit = (char *)cli_arg(args, "host-unit");
  subject.name = (char *)cli_arg(args, "subject-name");
  cli_arg_str(args, "subject-position", &subject.position);
  cli_arg_str(args, "subject-rank", &subject.rank_level);
  subject.is_top_leader = cli_flag(args, "top-leader");
  req.subject = &subject;
  for (size_t i = 0; i < sizeof(rep) / sizeof(rep[0]); i++) {
    const char *v = cli_arg(args, rep[i].opt);
    if (v != NULL) {
      *(const char **)((char *)&reporter + rep[i].offset) = v;
      has_reporter = 1;
    }
  }
  if (has_reporter)
    req.reporter = &reporter;
  if ((rc = cli_arg_strv(cli, args, "category", &req.violation_categories,
                         &req.n_violation_categories)) != 0)
    return rc;
  if ((rc = cli_request_id(cli, args, rid)) == 0) {
    req.request_id = rid;
    rc = submit_one(cli, &req, 0, 0, NULL, NULL);
  }
  free(req.violation_categories);
  return rc;
}

/* ---- get ------------------------------------------------------------------------------------ */

static void kv(const char *label, const char *value) {
  printf("%-13s ", label);
  cli_put_text(stdout, value != NULL && value[0] != '\0' ? value : "-", 0);
  putchar('\n');
}

static void kvf(const char *label, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void kvf(const char *label, const char *fmt, ...) {
  va_list ap;
  char *value;

  va_start(ap, fmt);
  value = table_vfmt(fmt, ap);
  va_end(ap);
  kv(label, value != NULL ? value : "?");
  free(value);
}

/* The categories joined by ", "; one that holds ", " or starts with a quote is quoted, its
 * quotes doubled, so that two categories never read as one nor one as two. NULL: out of
 * memory. */
static char *categories_text(const Clue__V1__Clue *c) {
  size_t len = 1;
  char *out, *o;

  for (size_t i = 0; i < c->n_violation_categories; i++)
    len += 2 * strlen(c->violation_categories[i]) + 4;
  if ((o = out = malloc(len)) == NULL)
    return NULL;
  for (size_t i = 0; i < c->n_violation_categories; i++) {
    const char *cat = c->violation_categories[i];
    int quote = strstr(cat, ", ") != NULL || cat[0] == '"';
    if (i > 0)
      o += sprintf(o, ", ");
    if (quote)
      *o++ = '"';
    for (; *cat; cat++) {
      if (quote && *cat == '"')
        *o++ = '"';
      *o++ = *cat;
    }
    if (quote)
      *o++ = '"';
  }
  *o = '\0';
  return out;
}

static int show_clue(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__Clue *c = (const Clue__V1__Clue *)m;
  const Clue__V1__SubjectPerson *s = c->subject;
  char t1[32], t2[32];
  char *cats = categories_text(c);
  char *deadline = deadline_text(c);
  const char *source = cli_enum_short(&clue__v1__source_channel__descriptor, c->source);

  if (cats == NULL || deadline == NULL) {
    free(cats);
    free(deadline);
    return cli_oom(cli);
  }
  printf("Clue %lld (", (long long)c->id);
  cli_put_text(stdout, c->registration_number, 0);
  fputs(")\n", stdout);
  kv("Title:", c->title);
  kv("Summary:", c->summary);
  kv("Source:", source);
  if (s != NULL)
    kvf("Subject:", "%s%s%s%s%s%s", s->name, s->position[0] ? ", " : "", s->position,
        s->rank_level[0] ? ", " : "", s->rank_level, s->is_top_leader ? " (top leader)" : "");
  else
    kv("Subject:", "-");
  kv("Host unit:", c->host_unit);
  kv("Categories:", cats);
  kvf("State:", "%s (version %lld)%s", cli_state_text(c->state), (long long)c->version,
      c->pending_proposal ? ", a proposal awaits review" : "");
  if (c->owner_unit_code[0])
    kvf("Owner unit:", "%s %s", c->owner_unit_code, c->owner_unit_name);
  else
    kvf("Owner unit:", "%lld", (long long)c->owner_unit_id);
  kvf("Deadline:", "%s%s", deadline, c->deadline_extended ? ", extended" : "");
  if (c->disposal != 0)
    kv("Disposal:", cli_enum_short(&clue__v1__disposal__descriptor, c->disposal));
  if (c->joint_case_id != 0)
    kvf("Joint case:", "%lld", (long long)c->joint_case_id);
  if (c->n_handlers != 0) {
    kvf("Handlers:", "%zu", c->n_handlers);
    clue_print_handlers(c);
  }
  if (c->created_by_name[0])
    kvf("Created:", "%s by %s", cli_time_text(c->created_at_ms, t1, sizeof(t1)),
        c->created_by_name);
  else
    kvf("Created:", "%s by user %lld", cli_time_text(c->created_at_ms, t1, sizeof(t1)),
        (long long)c->created_by);
  kv("Updated:", cli_time_text(c->updated_at_ms, t2, sizeof(t2)));
  if (c->reporter != NULL) {
    const Clue__V1__ReporterContact *r = c->reporter;
    kv("Reporter:", r->name);
    kv("  phone:", r->phone);
    kv("  address:", r->address);
    kv("  e-mail:", r->email);
  } else {
    kv("Reporter:", c->reporter_on_file ? "on file (shown to leaders of the owner unit, not with "
                                          "an enrollment token)"
                                        : "none");
  }
  free(cats);
  free(deadline);
  return CLI_OK;
}

static int run_get(cli_t *cli, const cli_args_t *args) {
  Clue__V1__GetClueRequest req = CLUE__V1__GET_CLUE_REQUEST__INIT;
  int rc;

  if ((rc = cli_operand_id(cli, args, &req.clue_id)) != 0)
    return rc;
  return cli_call_show(cli, CLUE_SVC, "GetClue", &req.base, show_clue);
}

/* ---- list ----------------------------------------------------------------------------------- */

static const cli_opt_t list_opts[] = {
    {"state", "STATE", CLI_OPT_REPEAT,
     "ACCEPTED, PRELIMINARY_CHECK, FILED, CLOSED or TRANSFERRED_TO_JUDICIAL"},
    {"owner-unit", "ID", 0, "only clues owned by this unit"},
    {"source", "SOURCE", 0, "only clues from this channel (see clue submit --help)"},
    {"subject", "TEXT", 0, "subject's name contains TEXT (any case)"},
    {"overdue", NULL, 0, "only clues past their stage deadline"},
    {"mine", NULL, 0, "only clues you are an assigned handler of (your queue)"},
    {"created-from", "TIME", 0, "created at or after (YYYY-MM-DD or RFC 3339)"},
    {"created-to", "TIME", 0, "created before; a date takes in that whole day"},
    {"page-size", "N", 0, "clues per page (1-500; server default 50)"},
    CLI_OPT_PAGE_TOKEN,
    CLI_OPT_ALL_PAGES,
    CLI_OPT_CONSISTENT,
    CLI_OPT_MIN_READ_LSN,
    {NULL, NULL, 0, NULL},
};

static int show_clue_list(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__ListCluesResponse *r = (const Clue__V1__ListCluesResponse *)m;
  static const char *const headers[] = {"ID",    "NUMBER", "STATE",   "SUBJECT",
                                        "TITLE", "OWNER",  "DEADLINE"};
  table_t *t = table_new(7, headers);
  int rc;

  if (t == NULL)
    return cli_oom(cli);
  for (size_t i = 0; i < r->n_clues; i++) {
    const Clue__V1__Clue *c = r->clues[i];
    table_add(t, table_fmt("%lld", (long long)c->id));
    table_add(t, table_fmt("%s", c->registration_number));
    table_add(t, table_fmt("%s%s", cli_state_text(c->state), c->pending_proposal ? "*" : ""));
    table_add(t,
              table_fmt("%s", c->subject != NULL && c->subject->name[0] ? c->subject->name : "-"));
    table_add(t, table_fmt("%s", c->title));
    table_add(t, table_fmt("%lld", (long long)c->owner_unit_id));
    table_add(t, deadline_text(c));
  }
  rc = table_print(t, stdout) == 0 ? CLI_OK : cli_oom(cli);
  table_free(t);
  if (rc == CLI_OK && r->n_clues == 0)
    fputs("(no clues)\n", stdout);
  return rc;
}

static int run_list(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ListCluesRequest req = CLUE__V1__LIST_CLUES_REQUEST__INIT;
  Clue__V1__ListCluesResponse *resp = NULL;
  Clue__V1__ReadConsistency read;
  int *states = NULL, source = 0, all, rc;
  size_t nstates = 0;

  if ((rc = cli_arg_id(cli, args, "owner-unit", &req.owner_unit_id)) != 0 ||
      (rc = cli_arg_enum(cli, args, "source", &clue__v1__source_channel__descriptor, &source)) !=
          0 ||
      (rc = cli_arg_time(cli, args, "created-from", 0, &req.created_from_ms)) != 0 ||
      (rc = cli_arg_time(cli, args, "created-to", 1, &req.created_to_ms)) != 0 ||
      (rc = cli_arg_i32(cli, args, "page-size", 1, 500, &req.page_size)) != 0 ||
      (rc = cli_page_args(cli, args, &all, &req.page_token)) != 0 ||
      (rc = cli_read_args(cli, args, &read, &req.read)) != 0 ||
      (rc = cli_check_period(cli, "created-from", req.created_from_ms, "created-to",
                             req.created_to_ms)) != 0)
    return rc;
  if ((rc = cli_arg_enumv(cli, args, "state", &clue__v1__clue_state__descriptor, &states,
                          &nstates)) != 0)
    return rc;
  req.states = (Clue__V1__ClueState *)states;
  req.n_states = nstates;
  req.source = (Clue__V1__SourceChannel)source;
  cli_arg_str(args, "subject", &req.subject_name);
  req.overdue_only = cli_flag(args, "overdue");
  req.assigned_to_me = cli_flag(args, "mine");
  if (all && req.page_size == 0)
    req.page_size = 500; /* fewer round trips */
  rc = cli_call_pages(cli, CLUE_SVC, "ListClues", &req.base, "clues", all,
                      (ProtobufCMessage **)&resp);
  free(states);
  if (rc != 0)
    return rc;
  return cli_show(cli, &resp->base, show_clue_list);
}

/* ---- history -------------------------------------------------------------------------------- */

static int show_history(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__GetHistoryResponse *r = (const Clue__V1__GetHistoryResponse *)m;
  static const char *const headers[] = {"SEQ", "TIME", "ACTION", "FROM",
                                        "TO",  "USER", "UNIT",   "REASON"};
  table_t *t = table_new(8, headers);
  int rc;

  if (t == NULL)
    return cli_oom(cli);
  for (size_t i = 0; i < r->n_events; i++) {
    const Clue__V1__AuditEvent *e = r->events[i];
    char when[32];
    table_add(t, table_fmt("%lld", (long long)e->seq));
    table_add(t, table_fmt("%s", cli_time_text(e->at_ms, when, sizeof(when))));
    table_add(t, table_fmt("%s", e->action));
    table_add(t, table_fmt("%s", cli_state_text(e->from_state)));
    table_add(t, table_fmt("%s", cli_state_text(e->to_state)));
    table_add(t, e->actor_user_name[0] ? table_fmt("%s", e->actor_user_name)
                                       : table_fmt("%lld", (long long)e->actor_user_id));
    table_add(t, e->actor_unit_code[0] ? table_fmt("%s", e->actor_unit_code)
                                       : table_fmt("%lld", (long long)e->actor_unit_id));
    table_add(t, table_fmt("%s", e->reason[0] ? e->reason : "-"));
  }
  rc = table_print(t, stdout) == 0 ? CLI_OK : cli_oom(cli);
  table_free(t);
  return rc;
}

static const cli_opt_t history_opts[] = {
    CLI_OPT_PAGE_TOKEN,
    CLI_OPT_ALL_PAGES,
    {NULL, NULL, 0, NULL},
};

/* A page of the history (1,000 events or about 2 MiB), or with --all every page. */
static int run_history(cli_t *cli, const cli_args_t *args) {
  Clue__V1__GetHistoryRequest req = CLUE__V1__GET_HISTORY_REQUEST__INIT;
  Clue__V1__GetHistoryResponse *resp = NULL;
  int all, rc;

  if ((rc = cli_operand_id(cli, args, &req.clue_id)) != 0 ||
      (rc = cli_page_args(cli, args, &all, &req.page_token)) != 0 ||
      (rc = cli_call_pages(cli, CLUE_SVC, "GetHistory", &req.base, "events", all,
                           (ProtobufCMessage **)&resp)) != 0)
    return rc;
  return cli_show(cli, &resp->base, show_history);
}

/* ---- notes ---------------------------------------------------------------------------------- */

static const cli_opt_t note_opts[] = {
    {"kind", "KIND", CLI_OPT_REQUIRED,
     "EVIDENCE_SUMMARY, MEETING_MINUTES, INTERVIEW_RECORD or OTHER"},
    {"text", "TEXT", 0, "the note"},
    {"text-file", "PATH", 0, "read the note from a file; - for standard input"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static int show_note_added(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__Note *note = (const Clue__V1__Note *)m;

  (void)cli;
  printf("note %lld added to clue %lld\n", (long long)note->id, (long long)note->clue_id);
  return CLI_OK;
}

static int run_note(cli_t *cli, const cli_args_t *args) {
  Clue__V1__AddNoteRequest req = CLUE__V1__ADD_NOTE_REQUEST__INIT;
  const char *path = cli_arg(args, "text-file");
  char rid[CLI_REQUEST_ID_LEN], *text = NULL;
  size_t len = 0;
  int kind = 0, rc;

  if ((rc = cli_operand_id(cli, args, &req.clue_id)) != 0 ||
      (rc = cli_arg_enum(cli, args, "kind", &clue__v1__note_kind__descriptor, &kind)) != 0)
    return rc;
  if ((path != NULL) == (cli_arg(args, "text") != NULL))
    return cli_usage_error(cli, "give the note with exactly one of --text and --text-file");
  if (path != NULL) {
    if ((rc = cli_read_file(cli, path, &text, &len)) != 0)
      return rc;
    if (strlen(text) != len) {
      free(text);
      return cli_usage_error(cli, "%s holds a NUL byte; a note is text", path);
    }
    req.text = text;
  } else {
    req.text = (char *)cli_arg(args, "text");
  }
  req.kind = (Clue__V1__NoteKind)kind;
  if ((rc = cli_request_id(cli, args, rid)) == 0) {
    req.request_id = rid;
    rc = cli_call_rid_show(cli, CLUE_SVC, "AddNote", &req.base, rid, show_note_added);
  }
  free(text);
  return rc;
}

/* A note's text, each line indented and written as cli_put_text() writes the server's text.
 * Returns 0, or -1 on out of memory. */
static int print_indented(const char *text) {
  char *copy = strdup(text), *line, *nl;

  if (copy == NULL)
    return -1;
  for (line = copy;; line = nl + 1) {
    nl = strchr(line, '\n');
    if (nl != NULL)
      *nl = '\0';
    fputs("    ", stdout);
    cli_put_text(stdout, line, 0);
    putchar('\n');
    if (nl == NULL || nl[1] == '\0') /* a last line break ends the last line */
      break;
  }
  free(copy);
  return 0;
}

static int show_notes(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__ListNotesResponse *r = (const Clue__V1__ListNotesResponse *)m;

  for (size_t i = 0; i < r->n_notes; i++) {
    const Clue__V1__Note *n = r->notes[i];
    char when[32];
    const char *kind = cli_enum_short(&clue__v1__note_kind__descriptor, n->kind);
    if (i > 0)
      putchar('\n');
    printf("note %lld  %s  %s  ", (long long)n->id, kind ? kind : "-",
           cli_time_text(n->created_at_ms, when, sizeof(when)));
    if (n->author_user_name[0] && n->author_unit_code[0]) {
      cli_put_text(stdout, n->author_user_name, 0);
      fputs(" (", stdout);
      cli_put_text(stdout, n->author_unit_code, 0);
      fputs(")\n", stdout);
    } else {
      printf("user %lld (unit %lld)\n", (long long)n->author_user_id,
             (long long)n->author_unit_id);
    }
    if (print_indented(n->text) != 0)
      return cli_oom(cli);
  }
  if (r->n_notes == 0)
    puts("(no notes)");
  /* A page (50 notes, or about 2 MiB of text): say where the next one starts. */
  if (r->more && r->n_notes > 0)
    fprintf(stderr, "More notes: add --after %lld.\n", (long long)r->notes[r->n_notes - 1]->id);
  return CLI_OK;
}

static const cli_opt_t notes_opts[] = {
    {"after", "NOTE_ID", 0, "only the notes after this one (the next page)"},
    {NULL, NULL, 0, NULL},
};

static int run_notes(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ListNotesRequest req = CLUE__V1__LIST_NOTES_REQUEST__INIT;
  int rc;

  if ((rc = cli_operand_id(cli, args, &req.clue_id)) != 0 ||
      (rc = cli_arg_int(cli, args, "after", 0, INT64_MAX, &req.after_note_id)) != 0)
    return rc;
  return cli_call_show(cli, CLUE_SVC, "ListNotes", &req.base, show_notes);
}

/* ---- the group ------------------------------------------------------------------------------ */

static const cli_command_t clue_commands[] = {
    {"submit", NULL, "Submit a new clue (from options or a JSON file)", submit_opts, submit_help,
     run_submit},
    {"get", "ID", "Show a clue", NULL,
     "Leaders of the owner unit also see the reporter's contact details, unless they call\n"
     "with an enrollment token (one an administrator issued them: `cluectl token issue`\n"
     "gives a personal one); each such read is recorded in the audit trail.\n",
     run_get},
    {"list", NULL, "List the clues you can see, newest first", list_opts,
     "A '*' after the state marks a clue with a proposal awaiting review. One page is\n"
     "listed unless --all is given; the token of the next page is printed on stderr.\n",
     run_list},
    {"move", "ID", "Move a clue to another state (or propose the move for review)", clue_move_opts,
     clue_move_help, clue_run_move},
    {"proposals", NULL, "List proposals awaiting (or after) co-review", clue_proposals_opts,
     clue_proposals_help, clue_run_proposals},
    {"review", "PROPOSAL_ID", "Approve or reject a proposed move", clue_review_opts,
     clue_review_help, clue_run_review},
    {"history", "ID", "Show a clue's history (its audit events, oldest first)", history_opts,
     "One page (1,000 events or about 2 MiB) is shown unless --all is given; the token of the\n"
     "next page is printed on stderr.\n",
     run_history},
    {"handover", "ID", "Hand a clue over to another unit", clue_handover_opts, clue_handover_help,
     clue_run_handover},
    {"note", "ID", "Add a note to a clue", note_opts,
     "Notes are append-only. Anyone who can see the clue may add one.\n", run_note},
    {"notes", "ID", "List a clue's notes", notes_opts,
     "Oldest first, 50 a page (fewer past about 2 MiB of text). When more follow, stderr\n"
     "says so and names the --after of the next page; --json gives \"more\".\n",
     run_notes},
    {"extend", "ID", "Extend the deadline of a clue's current stage (once)", clue_extend_opts,
     clue_extend_help, clue_run_extend},
    {"assign", "ID", "Make a user a handler of a clue (承办人)", clue_assign_opts, clue_assign_help,
     clue_run_assign},
    {"unassign", "ID", "End a handler's assignment to a clue", clue_assign_opts, clue_unassign_help,
     clue_run_unassign},
    {"assignments", NULL, "List handlers' assignments (yours, your unit's, your clues')",
     clue_assignments_opts, clue_assignments_help, clue_run_assignments},
    {"recuse", "ID", "Record a conflict of interest with a clue (回避)", clue_recuse_opts,
     clue_recuse_help, clue_run_recuse},
    {"recusals", NULL, "List recusals (leaders and auditors)", clue_recusals_opts,
     clue_recusals_help, clue_run_recusals},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};

const cli_group_t cli_group_clue = {
    "clue",
    "Submit, list, move and review problem clues",
    clue_commands,
};
