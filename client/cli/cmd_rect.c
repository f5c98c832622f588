/* cluectl rect: the rectification ledger (督促整改台账, clue.v1.RectificationService). */

#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "clue/v1/rectification.pb-c.h"

#define RECT_SVC (&clue__v1__rectification_service__descriptor)

static int show_item(cli_t *cli, const ProtobufCMessage *m) {
  return cli_print_record(cli, m);
}

/* One line after a change. */
static int show_moved(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__RectificationItem *it = (const Clue__V1__RectificationItem *)m;
  char when[64];

  (void)cli;
  printf("rectification item #%lld is %s (version %lld), host unit ", (long long)it->id,
         cli_enum_text(&clue__v1__rectification_state__descriptor, it->state),
         (long long)it->version);
  cli_put_text(stdout, it->host_unit, 0);
  printf(", deadline %s%s\n", cli_deadline_text(it->deadline_ms, when, sizeof(when)),
         it->overdue ? " (overdue)" : "");
  return CLI_OK;
}

/* ---- create --------------------------------------------------------------------------------- */

static const cli_opt_t create_opts[] = {
    {"host-unit", "NAME", CLI_OPT_REQUIRED, "the host unit (驻在单位) that must rectify"},
    {"description", "TEXT", CLI_OPT_REQUIRED, "the problem found"},
    {"category", "TEXT", CLI_OPT_REQUIRED, "the problem's category"},
    {"source", "SOURCE", CLI_OPT_REQUIRED, "clue, case or supervision"},
    {"clue", "ID", 0, "the source clue (with --source clue)"},
    {"case", "ID", 0, "the source joint case (with --source case)"},
    {"deadline", "DATE", CLI_OPT_REQUIRED, "the end of that day (YYYY-MM-DD), or an RFC 3339 time"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static int run_create(cli_t *cli, const cli_args_t *args) {
  Clue__V1__CreateItemRequest req = CLUE__V1__CREATE_ITEM_REQUEST__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int source = 0, rc;

  if ((rc = cli_arg_enum(cli, args, "source", &clue__v1__rectification_source__descriptor,
                         &source)) != 0 ||
      (rc = cli_arg_id(cli, args, "clue", &req.source_clue_id)) != 0 ||
      (rc = cli_arg_id(cli, args, "case", &req.source_case_id)) != 0 ||
      (rc = cli_arg_time(cli, args, "deadline", 1, &req.deadline_ms)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  req.source = (Clue__V1__RectificationSource)source;
  if (source == CLUE__V1__RECTIFICATION_SOURCE__RECTIFICATION_SOURCE_CLUE) {
    if (req.source_clue_id == 0)
      return cli_usage_error(cli, "--source clue needs --clue");
  } else if (req.source_clue_id != 0) {
    return cli_usage_error(cli, "--clue goes with --source clue");
  }
  if (source == CLUE__V1__RECTIFICATION_SOURCE__RECTIFICATION_SOURCE_CASE) {
    if (req.source_case_id == 0)
      return cli_usage_error(cli, "--source case needs --case");
  } else if (req.source_case_id != 0) {
    return cli_usage_error(cli, "--case goes with --source case");
  }
  cli_arg_str(args, "host-unit", &req.host_unit);
  cli_arg_str(args, "description", &req.description);
  cli_arg_str(args, "category", &req.category);
  req.request_id = rid;
  return cli_call_rid_show(cli, RECT_SVC, "CreateItem", &req.base, rid, show_moved);
}

/* ---- get and list --------------------------------------------------------------------------- */

static int run_get(cli_t *cli, const cli_args_t *args) {
  Clue__V1__GetItemRequest req = CLUE__V1__GET_ITEM_REQUEST__INIT;
  int rc;

  if ((rc = cli_operand_id(cli, args, &req.item_id)) != 0)
    return rc;
  return cli_call_show(cli, RECT_SVC, "GetItem", &req.base, show_item);
}

static const cli_col_t item_cols[] = {
    {"ID", "id"},
    {"STATE", "state"},
    {"HOST UNIT", "host_unit"},
    {"CATEGORY", "category"},
    {"SOURCE", "source"},
    {"UNIT", "supervising_unit_id"},
    {"DEADLINE", "deadline_ms"},
    {"OVERDUE", "overdue"},
    {"VERSION", "version"},
    {NULL, NULL},
};

static int show_items(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__ListItemsResponse *r = (const Clue__V1__ListItemsResponse *)m;
  int rc = cli_print_table(cli, m, "items", item_cols);

  if (rc == CLI_OK && r->n_items == 0)
    puts("(no rectification items)");
  return rc;
}

static const cli_opt_t list_opts[] = {
    {"host-unit", "NAME", 0, "only items of this host unit"},
    {"state", "STATE", 0, "OPEN, PLAN_RECORDED, SUBMITTED, VERIFIED or REOPENED"},
    {"source", "SOURCE", 0, "CLUE, CASE or SUPERVISION"},
    {"overdue", NULL, 0, "only overdue items"},
    {"page-size", "N", 0, "items per page (1-500, default 50)"},
    CLI_OPT_PAGE_TOKEN,
    CLI_OPT_ALL_PAGES,
    {NULL, NULL, 0, NULL},
};

static int run_list(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ListItemsRequest req = CLUE__V1__LIST_ITEMS_REQUEST__INIT;
  Clue__V1__ListItemsResponse *resp = NULL;
  int state = 0, source = 0, all, rc;

  if ((rc = cli_arg_enum(cli, args, "state", &clue__v1__rectification_state__descriptor,
                         &state)) != 0 ||
      (rc = cli_arg_enum(cli, args, "source", &clue__v1__rectification_source__descriptor,
                         &source)) != 0 ||
      (rc = cli_arg_i32(cli, args, "page-size", 1, 500, &req.page_size)) != 0 ||
      (rc = cli_page_args(cli, args, &all, &req.page_token)) != 0)
    return rc;
  req.state = (Clue__V1__RectificationState)state;
  req.source = (Clue__V1__RectificationSource)source;
  req.overdue_only = cli_flag(args, "overdue");
  cli_arg_str(args, "host-unit", &req.host_unit);
  if (all && req.page_size == 0)
    req.page_size = 500;
  if ((rc = cli_call_pages(cli, RECT_SVC, "ListItems", &req.base, "items", all,
                           (ProtobufCMessage **)&resp)) != 0)
    return rc;
  return cli_show(cli, &resp->base, show_items);
}

/* ---- moves ---------------------------------------------------------------------------------- */

static const cli_opt_t plan_opts[] = {
    {"version", "N", CLI_OPT_REQUIRED, "the item's version as last read"},
    {"plan", "TEXT", CLI_OPT_REQUIRED, "the host unit's rectification plan"},
    {"note", "ID", CLI_OPT_REPEAT, "a note of the source clue or case holding the plan"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static const cli_opt_t submit_opts[] = {
    {"version", "N", CLI_OPT_REQUIRED, "the item's version as last read"},
    {"evidence", "TEXT", CLI_OPT_REQUIRED, "evidence that the rectification is complete"},
    {"note", "ID", CLI_OPT_REPEAT, "a note of the source clue or case holding the evidence"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static const cli_opt_t verify_opts[] = {
    {"version", "N", CLI_OPT_REQUIRED, "the item's version as last read"},
    {"comment", "TEXT", 0, "the verification's comment"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static const cli_opt_t reopen_opts[] = {
    {"version", "N", CLI_OPT_REQUIRED, "the item's version as last read"},
    {"reason", "TEXT", CLI_OPT_REQUIRED, "why the evidence is not enough"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

typedef enum move { PLAN, SUBMIT, VERIFY, REOPEN } move_t;

static const char *const move_method[] = {"RecordPlan", "Submit", "Verify", "Reopen"};

static int move(cli_t *cli, const cli_args_t *args, move_t kind) {
  Clue__V1__RecordPlanRequest pl = CLUE__V1__RECORD_PLAN_REQUEST__INIT;
  Clue__V1__SubmitRequest su = CLUE__V1__SUBMIT_REQUEST__INIT;
  Clue__V1__VerifyRequest ve = CLUE__V1__VERIFY_REQUEST__INIT;
  Clue__V1__ReopenRequest re = CLUE__V1__REOPEN_REQUEST__INIT;
  const ProtobufCMessage *req = NULL;
  char rid[CLI_REQUEST_ID_LEN];
  int64_t id = 0, version = 0, *notes = NULL;
  size_t nnotes = 0;
  int rc;

  if ((rc = cli_operand_id(cli, args, &id)) != 0 ||
      (rc = cli_arg_version(cli, args, &version)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  if ((kind == PLAN || kind == SUBMIT) &&
      (rc = cli_arg_idv(cli, args, "note", &notes, &nnotes)) != 0)
    return rc;
  switch (kind) {
  case PLAN:
    pl.item_id = id, pl.expected_version = version, pl.request_id = rid;
    pl.note_ids = notes, pl.n_note_ids = nnotes;
    cli_arg_str(args, "plan", &pl.plan);
    req = &pl.base;
    break;
  case SUBMIT:
    su.item_id = id, su.expected_version = version, su.request_id = rid;
    su.note_ids = notes, su.n_note_ids = nnotes;
    cli_arg_str(args, "evidence", &su.evidence);
    req = &su.base;
    break;
  case VERIFY:
    ve.item_id = id, ve.expected_version = version, ve.request_id = rid;
    cli_arg_str(args, "comment", &ve.comment);
    req = &ve.base;
    break;
  case REOPEN:
    re.item_id = id, re.expected_version = version, re.request_id = rid;
    cli_arg_str(args, "reason", &re.reason);
    req = &re.base;
    break;
  }
  rc = cli_call_rid_show(cli, RECT_SVC, move_method[kind], req, rid, show_moved);
  free(notes);
  return rc;
}

static int run_plan(cli_t *cli, const cli_args_t *args) {
  return move(cli, args, PLAN);
}

static int run_submit(cli_t *cli, const cli_args_t *args) {
  return move(cli, args, SUBMIT);
}

static int run_verify(cli_t *cli, const cli_args_t *args) {
  return move(cli, args, VERIFY);
}

static int run_reopen(cli_t *cli, const cli_args_t *args) {
  return move(cli, args, REOPEN);
}

/* ---- stats ---------------------------------------------------------------------------------- */

static const cli_col_t ledger_cols[] = {
    {"HOST UNIT", "host_unit"}, {"FOUND", "found"},     {"RECTIFIED", "rectified"},
    {"OVERDUE", "overdue"},     {"CLEARED", "cleared"}, {NULL, NULL},
};

/* Every page's lines (run_stats() follows them all), then the total over every host unit. */
static int show_ledger(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__GetLedgerStatsResponse *r = (const Clue__V1__GetLedgerStatsResponse *)m;
  const Clue__V1__HostUnitLedger *t = r->total;
  int rc = cli_print_table(cli, m, "host_units", ledger_cols);

  if (rc != CLI_OK)
    return rc;
  if (r->n_host_units == 0)
    puts("(no rectification items)");
  if (t != NULL)
    printf("total of %zu host unit%s: found %lld, rectified %lld, overdue %lld, cleared %s\n",
           r->n_host_units, r->n_host_units == 1 ? "" : "s", (long long)t->found,
           (long long)t->rectified, (long long)t->overdue, t->cleared ? "yes" : "no");
  return rc;
}

static const cli_opt_t stats_opts[] = {
    {"unit", "ID", 0, "only items this unit supervises"},
    {"page-size", "N", 0, "host units per call (1-1000, default 1000); every page is shown"},
    {NULL, NULL, 0, NULL},
};

static int run_stats(cli_t *cli, const cli_args_t *args) {
  Clue__V1__GetLedgerStatsRequest req = CLUE__V1__GET_LEDGER_STATS_REQUEST__INIT;
  Clue__V1__GetLedgerStatsResponse *resp = NULL;
  int rc;

  if ((rc = cli_arg_id(cli, args, "unit", &req.supervising_unit_id)) != 0 ||
      (rc = cli_arg_i32(cli, args, "page-size", 1, 1000, &req.page_size)) != 0)
    return rc;
  /* The whole ledger, page after page: the last page's total with every page's lines. */
  if ((rc = cli_call_every_page(cli, RECT_SVC, "GetLedgerStats", &req.base, "host_units",
                                (ProtobufCMessage **)&resp)) != 0)
    return rc;
  return cli_show(cli, &resp->base, show_ledger);
}

/* Who sees an item (rect_can_see() in server/domain/rect.h). */
#define RECT_SEE_HELP                                                                              \
  "MEMBERs and LEADERs of the supervising unit, of its liaison room and of the units that\n"       \
  "lead or join the source case see an item, and AUDITORs; one found in a clue you are\n"          \
  "recused from is, for you, not found.\n"

static const cli_command_t rect_commands[] = {
    {"create", NULL, "Record a problem found in a host unit", create_opts,
     "A LEADER of a group, room or region records an item from a clue its unit owns, a joint\n"
     "case its unit leads or joins, or its own supervision; the unit then follows it to\n"
     "VERIFIED: plan -> submit -> verify (or reopen -> plan again).\n"
     "\n"
     "A date is in this computer's time zone (TZ): --deadline 2026-12-31 is the midnight\n"
     "that ends December 31, and cluectl shows it as 2026-12-31 (end of day).\n",
     run_create},
    {"get", "ID", "Show a rectification item", NULL, RECT_SEE_HELP, run_get},
    {"list", NULL, "List the rectification items you can see", list_opts,
     RECT_SEE_HELP "\n"
                   "One page is listed unless --all is given; the token of the next page is\n"
                   "printed on stderr.\n",
     run_list},
    {"plan", "ID", "Record the host unit's rectification plan", plan_opts,
     "A MEMBER or LEADER of the supervising unit records it, on an item OPEN or REOPENED,\n"
     "which becomes PLAN_RECORDED.\n",
     run_plan},
    {"submit", "ID", "Submit evidence that the rectification is complete", submit_opts,
     "A MEMBER or LEADER of the supervising unit submits it, on an item PLAN_RECORDED,\n"
     "which becomes SUBMITTED for a LEADER to verify or reopen.\n",
     run_submit},
    {"verify", "ID", "Verify a submitted rectification (a LEADER)", verify_opts,
     "A LEADER of the supervising unit, on a SUBMITTED item, which becomes VERIFIED (final).\n",
     run_verify},
    {"reopen", "ID", "Send a submitted rectification back, with a reason (a LEADER)", reopen_opts,
     "A LEADER of the supervising unit, on a SUBMITTED item, which becomes REOPENED: the\n"
     "host unit's next plan is recorded again (rect plan).\n",
     run_reopen},
    {"stats", NULL, "The ledger per host unit: found, rectified, overdue, cleared", stats_opts,
     "Every host unit of the items you see, page after page, then the total over all of them.\n",
     run_stats},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};

const cli_group_t cli_group_rect = {
    "rect",
    "The rectification ledger (督促整改台账)",
    rect_commands,
};
