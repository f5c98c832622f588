/* cluectl clue move, proposals, review, handover and extend: the calls that change a clue's
 * state, owner or deadline (clue.v1.ClueService). The group's table is in cmd_clue.c. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_clue.h"
#include "table.h"

#define VERSION_OPT                                                                                \
  { "version", "N", CLI_OPT_REQUIRED, "the clue version you last saw (see clue get)" }

/* ---- move ----------------------------------------------------------------------------------- */

const cli_opt_t clue_move_opts[] = {
    {"to", "STATE", CLI_OPT_REQUIRED,
     "PRELIMINARY_CHECK, FILED, CLOSED or TRANSFERRED_TO_JUDICIAL"},
    VERSION_OPT,
    {"reason", "TEXT", CLI_OPT_REQUIRED, "why the clue moves"},
    {"disposal", "DISPOSAL", 0,
     "ACCEPTED to CLOSED: TALK_OR_LETTER_INQUIRY, NO_FURTHER_ACTION or SHELVED"},
    {"finding", "TEXT", 0, "PRELIMINARY_CHECK to CLOSED: what the check found"},
    {"sanction-kind", "TEXT", 0, "FILED to CLOSED: the sanction imposed"},
    {"persons-disciplined", "N", 0, "FILED to CLOSED: number of persons disciplined"},
    {"receiving-organ", "TEXT", 0, "FILED to TRANSFERRED_TO_JUDICIAL: the organ receiving it"},
    {"reviewer-unit", "ID", 0,
     "co-reviewed move of a ROOM's or REGION's own clue: the ROOM to review it"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

const char clue_move_help[] =
    "Allowed moves, made by a LEADER of the owner unit:\n"
    "  ACCEPTED          -> PRELIMINARY_CHECK\n"
    "  ACCEPTED          -> CLOSED                   with --disposal\n"
    "  PRELIMINARY_CHECK -> FILED                    co-reviewed\n"
    "  PRELIMINARY_CHECK -> CLOSED                   with --finding\n"
    "  FILED             -> CLOSED                   with --sanction-kind, --persons-disciplined\n"
    "  FILED             -> TRANSFERRED_TO_JUDICIAL  with --receiving-organ; co-reviewed\n"
    "\n"
    "A co-reviewed move is not made at once: it becomes a proposal that a LEADER of the\n"
    "reviewing unit approves or rejects (clue review). Prints \"moved to STATE (version N)\"\n"
    "or \"proposal #P pending review by unit U\".\n"
    "\n"
    "--version must be the clue's current version; if the clue changed meanwhile the call\n"
    "fails with ABORTED and nothing happens: look again (clue get) and decide anew.\n";

static int show_moved(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__RequestTransitionResponse *resp = (const Clue__V1__RequestTransitionResponse *)m;

  (void)cli;
  if (resp->pending && resp->proposal != NULL && resp->proposal->reviewer_unit_code[0]) {
    printf("proposal #%lld pending review by unit ", (long long)resp->proposal->id);
    cli_put_text(stdout, resp->proposal->reviewer_unit_code, 0);
    putchar('\n');
  } else if (resp->pending && resp->proposal != NULL) {
    printf("proposal #%lld pending review by unit %lld\n", (long long)resp->proposal->id,
           (long long)resp->proposal->reviewer_unit_id);
  } else if (resp->clue != NULL) {
    printf("moved to %s (version %lld)\n", cli_state_text(resp->clue->state),
           (long long)resp->clue->version);
  }
  return CLI_OK;
}

/* --to: a state a move can reach, in any case and with or without the prefix ("filed",
 * "CLUE_STATE_FILED"). ACCEPTED is where a clue starts, never a target. */
static int move_target(cli_t *cli, const cli_args_t *args, int *out) {
  static const int targets[] = {CLUE__V1__CLUE_STATE__CLUE_STATE_PRELIMINARY_CHECK,
                                CLUE__V1__CLUE_STATE__CLUE_STATE_FILED,
                                CLUE__V1__CLUE_STATE__CLUE_STATE_CLOSED,
                                CLUE__V1__CLUE_STATE__CLUE_STATE_TRANSFERRED_TO_JUDICIAL};
  const char *s = cli_arg(args, "to");
  int v;

  if (s != NULL && clue_enum_from_name(&clue__v1__clue_state__descriptor, s, &v) == 0)
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
      if (v == targets[i]) {
        *out = v;
        return 0;
      }
  return cli_usage_error(cli,
                         "--to: '%s' is not one of PRELIMINARY_CHECK|FILED|CLOSED|"
                         "TRANSFERRED_TO_JUDICIAL",
                         s != NULL ? s : "");
}

int clue_run_move(cli_t *cli, const cli_args_t *args) {
  Clue__V1__RequestTransitionRequest req = CLUE__V1__REQUEST_TRANSITION_REQUEST__INIT;
  Clue__V1__TransitionDetails details = CLUE__V1__TRANSITION_DETAILS__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int target = 0, disposal = 0, rc;

  if ((rc = cli_operand_id(cli, args, &req.clue_id)) != 0 ||
      (rc = move_target(cli, args, &target)) != 0 ||
      (rc = cli_arg_version(cli, args, &req.expected_version)) != 0 ||
      (rc = cli_arg_enum(cli, args, "disposal", &clue__v1__disposal__descriptor, &disposal)) != 0 ||
      (rc = cli_arg_i32(cli, args, "persons-disciplined", 0, INT32_MAX,
                        &details.persons_disciplined)) != 0 ||
      (rc = cli_arg_id(cli, args, "reviewer-unit", &details.reviewer_unit_id)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  req.target = (Clue__V1__ClueState)target;
  req.reason = (char *)cli_arg(args, "reason");
  details.disposal = (Clue__V1__Disposal)disposal;
  cli_arg_str(args, "finding", &details.finding);
  cli_arg_str(args, "sanction-kind", &details.sanction_kind);
  cli_arg_str(args, "receiving-organ", &details.receiving_organ);
  req.details = &details;
  req.request_id = rid;
  return cli_call_rid_show(cli, CLUE_SVC, "RequestTransition", &req.base, rid, show_moved);
}

/* ---- proposals ------------------------------------------------------------------------------ */

const cli_opt_t clue_proposals_opts[] = {
    {"to-review", NULL, 0, "only proposals addressed to your unit for review"},
    {"raised", NULL, 0, "only proposals your unit raised"},
    {"all", NULL, 0, "decided ones too (approved, rejected, withdrawn), not only pending"},
    {"clue", "ID", 0, "only proposals about this clue"},
    {NULL, NULL, 0, NULL},
};

const char clue_proposals_help[] =
    "Without --to-review or --raised, lists both: proposals addressed to your unit and\n"
    "those it raised. Newest first, every one: the server answers in pages (at most 1000\n"
    "proposals or about 2 MiB each) and cluectl follows them, up to 100000 proposals or\n"
    "64 MiB; past that it stops with an error, so narrow the list with --clue, or leave\n"
    "out --all.\n";

/* The outcome a proposal carries (its move's details), for the reviewer to see what it would
 * approve: "receiving organ: ...", "disposal: ...", ...; "-" when none. NULL: out of memory. */
static char *outcome_text(const Clue__V1__TransitionDetails *d) {
  char *buf = NULL;
  size_t len = 0;
  FILE *o = open_memstream(&buf, &len);
  const char *sep = "";

  if (o == NULL)
    return NULL;
  if (d != NULL && d->disposal != 0) {
    fprintf(o, "%sdisposal: %s", sep, cli_enum_text(&clue__v1__disposal__descriptor, d->disposal));
    sep = "; ";
  }
  if (d != NULL && d->finding[0]) {
    fprintf(o, "%sfinding: %s", sep, d->finding);
    sep = "; ";
  }
  if (d != NULL && d->sanction_kind[0]) {
    fprintf(o, "%ssanction: %s", sep, d->sanction_kind);
    sep = "; ";
  }
  if (d != NULL && d->persons_disciplined != 0) {
    fprintf(o, "%spersons disciplined: %d", sep, (int)d->persons_disciplined);
    sep = "; ";
  }
  if (d != NULL && d->receiving_organ[0]) {
    fprintf(o, "%sreceiving organ: %s", sep, d->receiving_organ);
    sep = "; ";
  }
  if (sep[0] == '\0')
    fputs("-", o);
  return cli_memstream_text(o, &buf);
}

static int show_proposals(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__ListProposalsResponse *r = (const Clue__V1__ListProposalsResponse *)m;
  static const char *const headers[] = {"ID",        "CLUE",     "FROM",    "TO",      "STATUS",
                                        "RAISED BY", "REVIEWER", "CREATED", "OUTCOME", "REASON"};
  table_t *t = table_new(10, headers);
  int rc;

  if (t == NULL)
    return cli_oom(cli);
  for (size_t i = 0; i < r->n_proposals; i++) {
    const Clue__V1__Proposal *p = r->proposals[i];
    const char *status = cli_enum_short(&clue__v1__proposal_status__descriptor, p->status);
    char when[32];
    table_add(t, table_fmt("#%lld", (long long)p->id));
    table_add(t, table_fmt("%lld", (long long)p->clue_id));
    table_add(t, table_fmt("%s", cli_state_text(p->from_state)));
    table_add(t, table_fmt("%s", cli_state_text(p->target)));
    table_add(t, table_fmt("%s", status ? status : "-"));
    if (p->proposer_user_name[0] && p->proposer_unit_code[0])
      table_add(t, table_fmt("%s (%s)", p->proposer_user_name, p->proposer_unit_code));
    else
      table_add(t, table_fmt("unit %lld", (long long)p->proposer_unit_id));
    table_add(t, p->reviewer_unit_code[0] ? table_fmt("%s", p->reviewer_unit_code)
                                          : table_fmt("unit %lld", (long long)p->reviewer_unit_id));
    table_add(t, table_fmt("%s", cli_time_text(p->created_at_ms, when, sizeof(when))));
    table_add(t, outcome_text(p->details));
    table_add(t, table_fmt("%s", p->reason[0] ? p->reason : "-"));
  }
  rc = table_print(t, stdout) == 0 ? CLI_OK : cli_oom(cli);
  table_free(t);
  if (rc == CLI_OK && r->n_proposals == 0)
    puts("(no proposals)");
  return rc;
}

int clue_run_proposals(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ListProposalsRequest req = CLUE__V1__LIST_PROPOSALS_REQUEST__INIT;
  Clue__V1__ListProposalsResponse *resp = NULL;
  int rc;

  if (cli_flag(args, "to-review") && cli_flag(args, "raised"))
    return cli_usage_error(cli, "--to-review and --raised exclude each other (neither: both)");
  if ((rc = cli_arg_id(cli, args, "clue", &req.clue_id)) != 0)
    return rc;
  if (cli_flag(args, "to-review"))
    req.scope = CLUE__V1__LIST_PROPOSALS_REQUEST__SCOPE__SCOPE_TO_REVIEW;
  else if (cli_flag(args, "raised"))
    req.scope = CLUE__V1__LIST_PROPOSALS_REQUEST__SCOPE__SCOPE_RAISED;
  req.include_decided = cli_flag(args, "all");
  /* --all already names the decided proposals: every page is listed, as the whole list was
   * before it came in pages. */
  if ((rc = cli_call_every_page(cli, CLUE_SVC, "ListProposals", &req.base, "proposals",
                                (ProtobufCMessage **)&resp)) != 0)
    return rc;
  return cli_show(cli, &resp->base, show_proposals);
}

/* ---- review --------------------------------------------------------------------------------- */

const cli_opt_t clue_review_opts[] = {
    {"approve", NULL, 0, "approve: the proposed move is made"},
    {"reject", NULL, 0, "reject: the clue stays as it is"},
    {"comment", "TEXT", 0, "the reviewer's comment"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

const char clue_review_help[] =
    "Exactly one of --approve and --reject. Only a LEADER of the reviewing unit may decide,\n"
    "and never on a proposal they raised. An approval fails with ABORTED if the clue\n"
    "changed after the proposal was made; reject it then, and propose again.\n";

int clue_run_review(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ReviewProposalRequest req = CLUE__V1__REVIEW_PROPOSAL_REQUEST__INIT;
  Clue__V1__ReviewProposalResponse *resp = NULL;
  char rid[CLI_REQUEST_ID_LEN];
  int rc;

  if (cli_flag(args, "approve") == cli_flag(args, "reject"))
    return cli_usage_error(cli, "give exactly one of --approve and --reject");
  if ((rc = cli_operand_id(cli, args, &req.proposal_id)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  req.approve = cli_flag(args, "approve");
  cli_arg_str(args, "comment", &req.comment);
  req.request_id = rid;
  rc = cli_call_rid(cli, CLUE_SVC, "ReviewProposal", &req.base, rid, (ProtobufCMessage **)&resp);
  if (rc != 0)
    return rc;
  if (cli->json) {
    rc = cli_print_json_with(cli, &resp->base, "request_id", rid, 0);
  } else {
    const Clue__V1__Proposal *p = resp->proposal;
    const Clue__V1__Clue *c = resp->clue;
    printf("proposal #%lld %s", p ? (long long)p->id : (long long)req.proposal_id,
           req.approve ? "approved" : "rejected");
    if (c != NULL)
      printf("; clue %lld %s %s (version %lld)", (long long)c->id,
             req.approve ? "moved to" : "stays", cli_state_text(c->state), (long long)c->version);
    putchar('\n');
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

/* ---- handover ------------------------------------------------------------------------------- */

const cli_opt_t clue_handover_opts[] = {
    {"to-unit", "ID", CLI_OPT_REQUIRED, "the unit that becomes the owner"},
    VERSION_OPT,
    {"reason", "TEXT", CLI_OPT_REQUIRED, "why the clue is handed over"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

const char clue_handover_help[] =
    "A LEADER of the owner unit hands over a clue that is ACCEPTED or in PRELIMINARY_CHECK;\n"
    "the receiving unit becomes its owner.\n";

static int show_handed_over(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__Clue *c = (const Clue__V1__Clue *)m;

  (void)cli;
  printf("clue %lld handed over to ", (long long)c->id);
  if (c->owner_unit_code[0]) { /* the new owner, for people; a server without names: its id */
    cli_put_text(stdout, c->owner_unit_code, 0);
    if (c->owner_unit_name[0]) {
      fputs(" ", stdout);
      cli_put_text(stdout, c->owner_unit_name, 0);
    }
  } else {
    printf("unit %lld", (long long)c->owner_unit_id);
  }
  printf(" (version %lld)\n", (long long)c->version);
  return CLI_OK;
}

int clue_run_handover(cli_t *cli, const cli_args_t *args) {
  Clue__V1__HandOverRequest req = CLUE__V1__HAND_OVER_REQUEST__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int rc;

  if ((rc = cli_operand_id(cli, args, &req.clue_id)) != 0 ||
      (rc = cli_arg_id(cli, args, "to-unit", &req.to_unit_id)) != 0 ||
      (rc = cli_arg_version(cli, args, &req.expected_version)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  req.reason = (char *)cli_arg(args, "reason");
  req.request_id = rid;
  return cli_call_rid_show(cli, CLUE_SVC, "HandOver", &req.base, rid, show_handed_over);
}

/* ---- extend --------------------------------------------------------------------------------- */

const cli_opt_t clue_extend_opts[] = {
    {"days", "N", CLI_OPT_REQUIRED, "days added to the current stage's deadline (1 to 365)"},
    VERSION_OPT,
    {"reason", "TEXT", CLI_OPT_REQUIRED, "why more time is needed"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

const char clue_extend_help[] =
    "A LEADER of the owner unit may extend each stage's deadline once.\n";

static int show_extended(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__Clue *c = (const Clue__V1__Clue *)m;
  char date[32];

  (void)cli;
  printf("deadline of clue %lld extended to %s (version %lld)\n", (long long)c->id,
         cli_date_text(c->stage_deadline_ms, date, sizeof(date)), (long long)c->version);
  return CLI_OK;
}

int clue_run_extend(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ExtendDeadlineRequest req = CLUE__V1__EXTEND_DEADLINE_REQUEST__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int rc;

  if ((rc = cli_operand_id(cli, args, &req.clue_id)) != 0 ||
      (rc = cli_arg_i32(cli, args, "days", 1, 365, &req.days)) != 0 ||
      (rc = cli_arg_version(cli, args, &req.expected_version)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  req.reason = (char *)cli_arg(args, "reason");
  req.request_id = rid;
  return cli_call_rid_show(cli, CLUE_SVC, "ExtendDeadline", &req.base, rid, show_extended);
}
