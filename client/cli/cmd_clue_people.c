/* cluectl clue assign|unassign|recuse|recusals: who works on a clue (承办人, 派员参与) and who
 * may not (回避). See docs/COOPERATION.md. */

#include <stdio.h>

#include "cmd_clue.h"

/* ---- assign, unassign ----------------------------------------------------------------------- */

const cli_opt_t clue_assign_opts[] = {
    {"user", "ID", CLI_OPT_REQUIRED, "the user who becomes (or stops being) a handler"},
    {"reason", "TEXT", 0, "why (optional; recorded in the audit trail)"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

const char clue_assign_help[] =
    "A LEADER of the owner unit, or of the lead room of the clue's joint case, makes a user\n"
    "of any GROUP, ROOM or REGION a handler (承办人) of the clue: a member seconded from a\n"
    "room to a group's preliminary check, say. No consent of the user's own leader is needed;\n"
    "the assignment is recorded in the clue's audit trail. A handler from another unit sees\n"
    "the clue (never the reporter) and may add notes while assigned; handlers never move\n"
    "clues. `clue list --mine` lists the clues you are a handler of.\n";

const char clue_unassign_help[] =
    "Ends a handler's assignment (whoever may assign may unassign, in any state); the user\n"
    "of another unit no longer sees the clue.\n";

/* The clue's handlers, one a line. */
static void print_handlers(const Clue__V1__Clue *c) {
  for (size_t i = 0; i < c->n_handlers; i++) {
    const Clue__V1__Handler *h = c->handlers[i];
    char t[32];
    fputs("  ", stdout);
    if (h->user_name[0])
      cli_put_text(stdout, h->user_name, 0);
    else
      printf("user %lld", (long long)h->user_id);
    printf(" (user %lld, %s", (long long)h->user_id, h->unit_code[0] ? "" : "unit ");
    if (h->unit_code[0])
      cli_put_text(stdout, h->unit_code, 0);
    else
      printf("%lld", (long long)h->unit_id);
    printf("), since %s\n", cli_time_text(h->assigned_at_ms, t, sizeof(t)));
  }
}

static int show_handlers(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__Clue *c = (const Clue__V1__Clue *)m;

  (void)cli;
  printf("clue %lld has %zu handler%s%s\n", (long long)c->id, c->n_handlers,
         c->n_handlers == 1 ? "" : "s", c->n_handlers ? ":" : "");
  print_handlers(c);
  return CLI_OK;
}

static int run_handler(cli_t *cli, const cli_args_t *args, int assign) {
  Clue__V1__AssignHandlerRequest a = CLUE__V1__ASSIGN_HANDLER_REQUEST__INIT;
  Clue__V1__UnassignHandlerRequest u = CLUE__V1__UNASSIGN_HANDLER_REQUEST__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int64_t clue_id = 0, user_id = 0;
  int rc;

  if ((rc = cli_operand_id(cli, args, &clue_id)) != 0 ||
      (rc = cli_arg_id(cli, args, "user", &user_id)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  if (assign) {
    a.clue_id = clue_id;
    a.user_id = user_id;
    cli_arg_str(args, "reason", &a.reason);
    a.request_id = rid;
    return cli_call_rid_show(cli, CLUE_SVC, "AssignHandler", &a.base, rid, show_handlers);
  }
  u.clue_id = clue_id;
  u.user_id = user_id;
  cli_arg_str(args, "reason", &u.reason);
  u.request_id = rid;
  return cli_call_rid_show(cli, CLUE_SVC, "UnassignHandler", &u.base, rid, show_handlers);
}

int clue_run_assign(cli_t *cli, const cli_args_t *args) {
  return run_handler(cli, args, 1);
}

int clue_run_unassign(cli_t *cli, const cli_args_t *args) {
  return run_handler(cli, args, 0);
}

void clue_print_handlers(const Clue__V1__Clue *c) {
  print_handlers(c);
}

/* ---- recuse, recusals ----------------------------------------------------------------------- */

const cli_opt_t clue_recuse_opts[] = {
    {"user", "ID", 0, "the user with the conflict (default: yourself)"},
    {"reason", "TEXT", CLI_OPT_REQUIRED, "the conflict of interest"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

const char clue_recuse_help[] =
    "Records a conflict of interest (回避): you declare your own, or a LEADER of the user's\n"
    "unit, of the owner unit or of the joint case's lead room records one for a user. From\n"
    "then on the user neither sees nor acts on the clue (it answers as a missing one), may\n"
    "not review its proposals and may not be assigned to it; an assignment ends. A recusal\n"
    "is recorded in the clue's audit trail and cannot be withdrawn.\n";

static void print_recusal(const Clue__V1__Recusal *r) {
  char t[32];
  printf("recusal #%lld: ", (long long)r->id);
  if (r->user_name[0])
    cli_put_text(stdout, r->user_name, 0);
  else
    printf("user %lld", (long long)r->user_id);
  printf(" (user %lld", (long long)r->user_id);
  if (r->unit_code[0]) {
    fputs(", ", stdout);
    cli_put_text(stdout, r->unit_code, 0);
  }
  printf(") recused from clue %lld, %s by ", (long long)r->clue_id,
         cli_time_text(r->recorded_at_ms, t, sizeof(t)));
  if (r->recorded_by == r->user_id)
    fputs("themselves", stdout);
  else if (r->recorded_by_name[0])
    cli_put_text(stdout, r->recorded_by_name, 0);
  else
    printf("user %lld", (long long)r->recorded_by);
  fputs(": ", stdout);
  cli_put_text(stdout, r->reason, 0);
  putchar('\n');
}

static int show_recusal(cli_t *cli, const ProtobufCMessage *m) {
  (void)cli;
  print_recusal((const Clue__V1__Recusal *)m);
  return CLI_OK;
}

int clue_run_recuse(cli_t *cli, const cli_args_t *args) {
  Clue__V1__RecordRecusalRequest req = CLUE__V1__RECORD_RECUSAL_REQUEST__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int rc;

  if ((rc = cli_operand_id(cli, args, &req.clue_id)) != 0 ||
      (rc = cli_arg_id(cli, args, "user", &req.user_id)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  req.reason = (char *)cli_arg(args, "reason");
  req.request_id = rid;
  return cli_call_rid_show(cli, CLUE_SVC, "RecordRecusal", &req.base, rid, show_recusal);
}

const cli_opt_t clue_recusals_opts[] = {
    {"clue", "ID", 0, "only recusals from this clue"},
    {"user", "ID", 0, "only recusals of this user"},
    CLI_OPT_PAGE_TOKEN,
    CLI_OPT_ALL_PAGES,
    {NULL, NULL, 0, NULL},
};

const char clue_recusals_help[] =
    "LEADERs see the recusals of their unit's users and those on the clues they see; AUDITORs\n"
    "see every one. Newest first, a page at a time (at most 1000 recusals or about 2 MiB):\n"
    "the next page's --page-token follows on stderr, and --all lists every page.\n";

static int show_recusals(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__ListRecusalsResponse *r = (const Clue__V1__ListRecusalsResponse *)m;

  (void)cli;
  for (size_t i = 0; i < r->n_recusals; i++)
    print_recusal(r->recusals[i]);
  if (r->n_recusals == 0)
    puts("(no recusals)");
  return CLI_OK;
}

int clue_run_recusals(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ListRecusalsRequest req = CLUE__V1__LIST_RECUSALS_REQUEST__INIT;
  Clue__V1__ListRecusalsResponse *resp = NULL;
  int all, rc;

  if ((rc = cli_arg_id(cli, args, "clue", &req.clue_id)) != 0 ||
      (rc = cli_arg_id(cli, args, "user", &req.user_id)) != 0 ||
      (rc = cli_page_args(cli, args, &all, &req.page_token)) != 0 ||
      (rc = cli_call_pages(cli, CLUE_SVC, "ListRecusals", &req.base, "recusals", all,
                           (ProtobufCMessage **)&resp)) != 0)
    return rc;
  return cli_show(cli, &resp->base, show_recusals);
}

/* ---- assignments ---------------------------------------------------------------------------- */

const cli_opt_t clue_assignments_opts[] = {
    {"clue", "ID", 0, "only the handlers of this clue"},
    {"user", "ID", 0, "only the assignments of this user"},
    CLI_OPT_PAGE_TOKEN,
    CLI_OPT_ALL_PAGES,
    {NULL, NULL, 0, NULL},
};

const char clue_assignments_help[] =
    "Current assignments: yours, those on the clues you see, and for a LEADER those of your\n"
    "unit's users to any clue (no consent is asked of you, but you see them here); AUDITORs\n"
    "see every one. An assignment names the clue and its owner, never its content.\n"
    "Newest first, a page at a time (at most 1000 assignments or about 2 MiB): the next\n"
    "page's --page-token follows on stderr, and --all lists every page.\n";

static int show_assignments(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__ListAssignmentsResponse *r = (const Clue__V1__ListAssignmentsResponse *)m;

  (void)cli;
  for (size_t i = 0; i < r->n_assignments; i++) {
    const Clue__V1__Assignment *a = r->assignments[i];
    const Clue__V1__Handler *h = a->handler;
    char t[32];
    if (h == NULL)
      continue;
    printf("clue %lld (owner ", (long long)a->clue_id);
    if (a->owner_unit_code[0])
      cli_put_text(stdout, a->owner_unit_code, 0);
    else
      printf("unit %lld", (long long)a->owner_unit_id);
    fputs("): ", stdout);
    if (h->user_name[0])
      cli_put_text(stdout, h->user_name, 0);
    else
      printf("user %lld", (long long)h->user_id);
    printf(" (user %lld", (long long)h->user_id);
    if (h->unit_code[0]) {
      fputs(", ", stdout);
      cli_put_text(stdout, h->unit_code, 0);
    }
    printf("), since %s\n", cli_time_text(h->assigned_at_ms, t, sizeof(t)));
  }
  if (r->n_assignments == 0)
    puts("(no assignments)");
  return CLI_OK;
}

int clue_run_assignments(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ListAssignmentsRequest req = CLUE__V1__LIST_ASSIGNMENTS_REQUEST__INIT;
  Clue__V1__ListAssignmentsResponse *resp = NULL;
  int all, rc;

  if ((rc = cli_arg_id(cli, args, "clue", &req.clue_id)) != 0 ||
      (rc = cli_arg_id(cli, args, "user", &req.user_id)) != 0 ||
      (rc = cli_page_args(cli, args, &all, &req.page_token)) != 0 ||
      (rc = cli_call_pages(cli, CLUE_SVC, "ListAssignments", &req.base, "assignments", all,
                           (ProtobufCMessage **)&resp)) != 0)
    return rc;
  return cli_show(cli, &resp->base, show_assignments);
}
