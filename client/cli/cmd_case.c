/* cluectl case: room–group–region joint cases (室组地联合办案, clue.v1.CaseService). */

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "clue/v1/case.pb-c.h"
#include "table.h"

#define CASE_SVC (&clue__v1__case_service__descriptor)

/* "3, 5, 9" or "none". */
static char *id_list(const int64_t *ids, size_t n) {
  char *buf = NULL;
  size_t len = 0;
  FILE *o = open_memstream(&buf, &len);

  if (o == NULL)
    return NULL;
  if (n == 0)
    fputs("none", o);
  for (size_t i = 0; i < n; i++)
    fprintf(o, "%s%lld", i ? ", " : "", (long long)ids[i]);
  return cli_memstream_text(o, &buf);
}

/* The participants for people: their codes ("G1, R2"), or their ids when the server sent no
 * codes; "none" when there are none. */
static char *participant_list(const Clue__V1__JointCase *jc) {
  char *buf = NULL;
  size_t len = 0;
  FILE *o;

  if (jc->n_participant_unit_codes != jc->n_participant_unit_ids)
    return id_list(jc->participant_unit_ids, jc->n_participant_unit_ids);
  if ((o = open_memstream(&buf, &len)) == NULL)
    return NULL;
  if (jc->n_participant_unit_codes == 0)
    fputs("none", o);
  for (size_t i = 0; i < jc->n_participant_unit_codes; i++) {
    fputs(i ? ", " : "", o);
    cli_put_text(o, jc->participant_unit_codes[i], 0);
  }
  return cli_memstream_text(o, &buf);
}

static char *clue_ids(const Clue__V1__JointCase *jc) {
  int64_t *ids = calloc(jc->n_clues ? jc->n_clues : 1, sizeof(*ids));
  char *s;

  if (ids == NULL)
    return NULL;
  for (size_t i = 0; i < jc->n_clues; i++)
    ids[i] = jc->clues[i]->clue_id;
  s = id_list(ids, jc->n_clues);
  free(ids);
  return s;
}

/* One line after a change: what the case holds now. */
static int show_case_line(cli_t *cli, const Clue__V1__JointCase *jc, const char *what) {
  char *parts;
  char *clues;

  /* The owner's leader took its clue out of a case its unit has no part in: the answer names
   * the case only. */
  if (jc->lead_unit_id == 0) {
    printf("joint case #%lld %s\n", (long long)jc->id, what);
    return CLI_OK;
  }
  parts = participant_list(jc);
  clues = clue_ids(jc);

  if (parts != NULL && clues != NULL) {
    printf("joint case #%lld %s; lead unit ", (long long)jc->id, what);
    if (jc->lead_unit_code[0])
      cli_put_text(stdout, jc->lead_unit_code, 0);
    else
      printf("%lld", (long long)jc->lead_unit_id);
    printf(", participant units: %s; clues: %s\n", parts, clues);
  }
  free(parts);
  free(clues);
  return parts != NULL && clues != NULL ? CLI_OK : cli_oom(cli);
}

static int show_case(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__JointCase *jc = (const Clue__V1__JointCase *)m;
  static const char *const headers[] = {"CLUE",     "NUMBER", "STATE", "OWNER",
                                        "DEADLINE", "ADDED",  "TITLE"};
  char *parts = participant_list(jc);
  char when[32];
  table_t *t;
  int rc;

  if (parts == NULL)
    return cli_oom(cli);
  printf("Joint case #%lld: ", (long long)jc->id);
  cli_put_text(stdout, jc->title, 0);
  printf("\n%-13s ", "Basis:");
  cli_put_text(stdout, jc->basis[0] ? jc->basis : "-", 0);
  putchar('\n');
  if (jc->lead_unit_code[0]) {
    printf("%-13s ", "Lead unit:");
    cli_put_text(stdout, jc->lead_unit_code, 0);
    putchar(' ');
    cli_put_text(stdout, jc->lead_unit_name, 0);
    putchar('\n');
  } else {
    printf("%-13s %lld\n", "Lead unit:", (long long)jc->lead_unit_id);
  }
  printf("%-13s %s\n", "Participants:", parts);
  printf("%-13s %s by ", "Created:", cli_time_text(jc->created_at_ms, when, sizeof(when)));
  if (jc->created_by_name[0])
    cli_put_text(stdout, jc->created_by_name, 0);
  else
    printf("user %lld", (long long)jc->created_by);
  putchar('\n');
  free(parts);
  if (jc->n_clues == 0) {
    printf("%-13s none\n", "Clues:");
    return CLI_OK;
  }
  printf("Clues:\n");
  t = table_new(7, headers);
  if (t == NULL)
    return cli_oom(cli);
  for (size_t i = 0; i < jc->n_clues; i++) {
    const Clue__V1__CaseClue *c = jc->clues[i];
    char d1[32], d2[32];
    table_add(t, table_fmt("%lld", (long long)c->clue_id));
    table_add(t, table_fmt("%s", c->registration_number[0] ? c->registration_number : "-"));
    table_add(t, table_fmt("%s", cli_state_text(c->state)));
    table_add(t, c->owner_unit_code[0] ? table_fmt("%s", c->owner_unit_code)
                                       : table_fmt("%lld", (long long)c->owner_unit_id));
    table_add(t, table_fmt("%s", cli_date_text(c->stage_deadline_ms, d1, sizeof(d1))));
    table_add(t, table_fmt("%s", cli_date_text(c->added_at_ms, d2, sizeof(d2))));
    table_add(t, table_fmt("%s", c->title));
  }
  rc = table_print(t, stdout) == 0 ? CLI_OK : cli_oom(cli);
  table_free(t);
  return rc;
}

/* ---- create --------------------------------------------------------------------------------- */

static const cli_opt_t create_opts[] = {
    {"title", "TEXT", CLI_OPT_REQUIRED, "the case's title"},
    {"basis", "TEXT", 0, "the grounds for handling the clues jointly (optional)"},
    {"participant", "UNIT", CLI_OPT_REPEAT, "a participating unit (group, region or room)"},
    {"clue", "ID", CLI_OPT_REPEAT, "a member clue"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static int show_created(cli_t *cli, const ProtobufCMessage *m) {
  return show_case_line(cli, (const Clue__V1__JointCase *)m, "created");
}

static int run_create(cli_t *cli, const cli_args_t *args) {
  Clue__V1__CreateJointCaseRequest req = CLUE__V1__CREATE_JOINT_CASE_REQUEST__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int rc;

  if ((rc = cli_arg_idv(cli, args, "participant", &req.participant_unit_ids,
                        &req.n_participant_unit_ids)) != 0)
    return rc;
  if ((rc = cli_arg_idv(cli, args, "clue", &req.clue_ids, &req.n_clue_ids)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    goto out;
  req.title = (char *)cli_arg(args, "title");
  cli_arg_str(args, "basis", &req.basis);
  req.request_id = rid;
  rc = cli_call_rid_show(cli, CASE_SVC, "CreateJointCase", &req.base, rid, show_created);
out:
  free(req.participant_unit_ids);
  free(req.clue_ids);
  return rc;
}

/* ---- show and list -------------------------------------------------------------------------- */

static int run_show(cli_t *cli, const cli_args_t *args) {
  Clue__V1__GetJointCaseRequest req = CLUE__V1__GET_JOINT_CASE_REQUEST__INIT;
  int rc;

  if ((rc = cli_operand_id(cli, args, &req.case_id)) != 0)
    return rc;
  return cli_call_show(cli, CASE_SVC, "GetJointCase", &req.base, show_case);
}

/* The units by code; by id when the server sent no codes (a server older than the codes). */
static const cli_col_t case_cols[] = {
    {"ID", "id"},
    {"TITLE", "title"},
    {"LEAD UNIT", "lead_unit_code"},
    {"PARTICIPANTS", "participant_unit_codes"},
    {"CLUES", "#clues"},
    {"CREATED", "created_at_ms"},
    {NULL, NULL},
};
static const cli_col_t case_id_cols[] = {
    {"ID", "id"},
    {"TITLE", "title"},
    {"LEAD UNIT", "lead_unit_id"},
    {"PARTICIPANTS", "participant_unit_ids"},
    {"CLUES", "#clues"},
    {"CREATED", "created_at_ms"},
    {NULL, NULL},
};

static int show_cases(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__ListJointCasesResponse *r = (const Clue__V1__ListJointCasesResponse *)m;
  bool codes = true;
  int rc;

  for (size_t i = 0; i < r->n_cases; i++)
    if (r->cases[i]->lead_unit_code[0] == '\0')
      codes = false;
  rc = cli_print_table(cli, m, "cases", codes ? case_cols : case_id_cols);

  if (rc == CLI_OK && r->n_cases == 0)
    puts("(no joint cases)");
  return rc;
}

static const cli_opt_t list_opts[] = {
    CLI_OPT_PAGE_TOKEN,
    CLI_OPT_ALL_PAGES,
    {NULL, NULL, 0, NULL},
};

/* A page of the cases the caller sees (500 cases or about 2 MiB), or with --all every page. */
static int run_list(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ListJointCasesRequest req = CLUE__V1__LIST_JOINT_CASES_REQUEST__INIT;
  Clue__V1__ListJointCasesResponse *resp = NULL;
  int all, rc;

  if ((rc = cli_page_args(cli, args, &all, &req.page_token)) != 0 ||
      (rc = cli_call_pages(cli, CASE_SVC, "ListJointCases", &req.base, "cases", all,
                           (ProtobufCMessage **)&resp)) != 0)
    return rc;
  return cli_show(cli, &resp->base, show_cases);
}

/* ---- membership changes --------------------------------------------------------------------- */

static const cli_opt_t unit_opts[] = {
    {"unit", "ID", CLI_OPT_REQUIRED, "the participating unit"},
    CLI_OPT_REASON,
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static const cli_opt_t clue_opts[] = {
    {"clue", "ID", CLI_OPT_REQUIRED, "the member clue"},
    CLI_OPT_REASON,
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static int show_updated(cli_t *cli, const ProtobufCMessage *m) {
  return show_case_line(cli, (const Clue__V1__JointCase *)m, "updated");
}

typedef enum change {
  ADD_PARTICIPANT,
  REMOVE_PARTICIPANT,
  ADD_CLUE,
  REMOVE_CLUE,
} change_t;

static const char *const change_method[] = {"AddParticipant", "RemoveParticipant", "AddClueToCase",
                                            "RemoveClueFromCase"};

/* The four membership requests are alike (case, unit or clue, reason) but distinct types;
 * each is filled through its own type so that the compiler checks the fields. */
static int change(cli_t *cli, const cli_args_t *args, change_t kind) {
  Clue__V1__AddParticipantRequest ap = CLUE__V1__ADD_PARTICIPANT_REQUEST__INIT;
  Clue__V1__RemoveParticipantRequest rp = CLUE__V1__REMOVE_PARTICIPANT_REQUEST__INIT;
  Clue__V1__AddClueToCaseRequest ac = CLUE__V1__ADD_CLUE_TO_CASE_REQUEST__INIT;
  Clue__V1__RemoveClueFromCaseRequest rc_ = CLUE__V1__REMOVE_CLUE_FROM_CASE_REQUEST__INIT;
  const ProtobufCMessage *req = NULL;
  char *reason = (char *)cli_arg(args, "reason");
  int64_t case_id = 0, member = 0;
  char rid[CLI_REQUEST_ID_LEN];
  int rc;

  if ((rc = cli_operand_id(cli, args, &case_id)) != 0 ||
      (rc = cli_arg_id(cli, args, kind <= REMOVE_PARTICIPANT ? "unit" : "clue", &member)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  if (reason == NULL)
    reason = "";
  switch (kind) {
  case ADD_PARTICIPANT:
    ap.case_id = case_id, ap.unit_id = member, ap.reason = reason, ap.request_id = rid;
    req = &ap.base;
    break;
  case REMOVE_PARTICIPANT:
    rp.case_id = case_id, rp.unit_id = member, rp.reason = reason, rp.request_id = rid;
    req = &rp.base;
    break;
  case ADD_CLUE:
    ac.case_id = case_id, ac.clue_id = member, ac.reason = reason, ac.request_id = rid;
    req = &ac.base;
    break;
  case REMOVE_CLUE:
    rc_.case_id = case_id, rc_.clue_id = member, rc_.reason = reason, rc_.request_id = rid;
    req = &rc_.base;
    break;
  }
  return cli_call_rid_show(cli, CASE_SVC, change_method[kind], req, rid, show_updated);
}

static int run_add_participant(cli_t *cli, const cli_args_t *args) {
  return change(cli, args, ADD_PARTICIPANT);
}

static int run_remove_participant(cli_t *cli, const cli_args_t *args) {
  return change(cli, args, REMOVE_PARTICIPANT);
}

static int run_add_clue(cli_t *cli, const cli_args_t *args) {
  return change(cli, args, ADD_CLUE);
}

static int run_remove_clue(cli_t *cli, const cli_args_t *args) {
  return change(cli, args, REMOVE_CLUE);
}

static const cli_command_t case_commands[] = {
    {"create", NULL, "Open a joint case led by your room", create_opts,
     "Only a LEADER of a ROOM opens a joint case; the room leads it and reviews proposals\n"
     "for its member clues. Participants see member clues, their history and notes.\n",
     run_create},
    {"show", "ID", "Show a joint case and its clues", NULL, NULL, run_show},
    {"list", NULL, "List the joint cases you can see", list_opts,
     "One page (500 cases or about 2 MiB) is listed unless --all is given; the token of the\n"
     "next page is printed on stderr.\n",
     run_list},
    {"add-participant", "ID", "Add a participating unit to a joint case", unit_opts,
     "A LEADER of the case's lead room adds a GROUP, ROOM or REGION other than itself\n"
     "(ALREADY_EXISTS if it takes part already). The unit then sees the case's clues, their\n"
     "history and notes. None of its own clues enters the case: a clue enters only with\n"
     "its owner's consent (case add-clue --help).\n",
     run_add_participant},
    {"remove-participant", "ID", "Remove a participating unit from a joint case", unit_opts,
     "A LEADER of the case's lead room removes a participating unit (FAILED_PRECONDITION\n"
     "if it takes no part); the unit no longer sees the case's clues through the case.\n",
     run_remove_participant},
    {"add-clue", "ID", "Add a clue to a joint case", clue_opts,
     "By consent only: a LEADER of the clue's owner unit, or of the case's lead room when\n"
     "that room owns the clue or is the owner group's liaison room. Seeing the clue\n"
     "through a joint case or a pending review is not enough, and making the owner a\n"
     "participant never brings its clues in. FAILED_PRECONDITION when the clue is in a\n"
     "joint case already, is concluded (CLOSED or TRANSFERRED_TO_JUDICIAL) or has a\n"
     "proposal pending, and when the case holds 1,000 clues.\n",
     run_add_clue},
    {"remove-clue", "ID", "Remove a clue from a joint case", clue_opts,
     "A LEADER of the clue's owner unit (who need not see the case), or of the case's lead\n"
     "room. FAILED_PRECONDITION when the clue is not in this case, is concluded (it stays\n"
     "on the case's record) or has a proposal pending.\n",
     run_remove_clue},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};

const cli_group_t cli_group_case = {
    "case",
    "Room-group-region joint cases",
    case_commands,
};
