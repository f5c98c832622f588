/* cluectl admin: units, users and tokens (clue.v1.AdminService; ADMIN callers only). */

#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "clue/v1/admin.pb-c.h"

#define ADMIN (&clue__v1__admin_service__descriptor)

/* ---- units ------------------------------------------------------------------------ */

/* --page-size of units and users: clued's bounds (AdminService's ListUnits, ListUsers). */
#define ADMIN_PAGE_OPT                                                                             \
  { "page-size", "N", 0, "rows per page (1-1000, default 500)" }
#define ADMIN_PAGE_MAX 1000

static const cli_opt_t units_opts[] = {
    {"kind", "KIND", 0, "only units of this kind: ROOM, GROUP, REGION or ADMIN"},
    ADMIN_PAGE_OPT,
    CLI_OPT_PAGE_TOKEN,
    CLI_OPT_ALL_PAGES,
    {NULL, NULL, 0, NULL},
};

/* The help of a list of units or users (rows: "units", "users"). */
#define ADMIN_PAGES_HELP(rows)                                                                     \
  "Oldest first, a page at a time (500 " rows " unless --page-size says otherwise, and at\n"     \
  "most about 2 MiB): the next page's --page-token follows on stderr, and --all lists\n"          \
  "every page.\n"

static const char units_help[] = ADMIN_PAGES_HELP("units");

static const cli_col_t unit_cols[] = {
    {"ID", "id"},
    {"KIND", "kind"},
    {"CODE", "code"},
    {"NAME", "name"},
    {"LIAISON ROOM", "liaison_room_code|liaison_room_id"},
    {"HOST UNITS", "host_units"},
    {"CREATED", "created_at_ms"},
    {NULL, NULL},
};

static int show_units(cli_t *cli, const ProtobufCMessage *m) {
  return cli_print_table(cli, m, "units", unit_cols);
}

static int run_units(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ListUnitsRequest req = CLUE__V1__LIST_UNITS_REQUEST__INIT;
  Clue__V1__ListUnitsResponse *resp = NULL;
  int kind = 0, all, rc;

  if ((rc = cli_arg_enum(cli, args, "kind", &clue__v1__unit_kind__descriptor, &kind)) != 0 ||
      (rc = cli_arg_i32(cli, args, "page-size", 1, ADMIN_PAGE_MAX, &req.page_size)) != 0 ||
      (rc = cli_page_args(cli, args, &all, &req.page_token)) != 0)
    return rc;
  req.kind = (Clue__V1__UnitKind)kind;
  if (all && req.page_size == 0)
    req.page_size = ADMIN_PAGE_MAX; /* fewer round trips */
  if ((rc = cli_call_pages(cli, ADMIN, "ListUnits", &req.base, "units", all,
                           (ProtobufCMessage **)&resp)) != 0)
    return rc;
  return cli_show(cli, &resp->base, show_units);
}

static const cli_opt_t create_unit_opts[] = {
    {"kind", "KIND", CLI_OPT_REQUIRED, "ROOM, GROUP, REGION or ADMIN"},
    {"code", "CODE", CLI_OPT_REQUIRED, "short code used in registration numbers, e.g. G03"},
    {"name", "NAME", CLI_OPT_REQUIRED, "full name"},
    {"liaison-room", "ID", 0, "GROUP only: id of its liaison ROOM"},
    {"host-unit", "NAME", CLI_OPT_REPEAT, "GROUP only: a host unit it sits in"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static int run_create_unit(cli_t *cli, const cli_args_t *args) {
  Clue__V1__CreateUnitRequest req = CLUE__V1__CREATE_UNIT_REQUEST__INIT;
  size_t nhost = cli_arg_count(args, "host-unit");
  char **hosts = NULL, rid[CLI_REQUEST_ID_LEN];
  int kind = 0, rc;

  if ((rc = cli_arg_enum(cli, args, "kind", &clue__v1__unit_kind__descriptor, &kind)) != 0 ||
      (rc = cli_arg_id(cli, args, "liaison-room", &req.liaison_room_id)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  req.request_id = rid;
  req.kind = (Clue__V1__UnitKind)kind;
  req.code = (char *)cli_arg(args, "code");
  req.name = (char *)cli_arg(args, "name");
  if (nhost > 0) {
    hosts = calloc(nhost, sizeof(*hosts));
    if (hosts == NULL)
      return cli_oom(cli);
    for (size_t i = 0; i < nhost; i++)
      hosts[i] = (char *)cli_arg_nth(args, "host-unit", i);
    req.n_host_units = nhost;
    req.host_units = hosts;
  }
  rc = cli_call_rid_show(cli, ADMIN, "CreateUnit", &req.base, rid, cli_print_record);
  free(hosts);
  return rc;
}

/* ---- users ------------------------------------------------------------------------- */

static const cli_opt_t users_opts[] = {
    {"unit", "ID", 0, "only users of this unit"},
    ADMIN_PAGE_OPT,
    CLI_OPT_PAGE_TOKEN,
    CLI_OPT_ALL_PAGES,
    {NULL, NULL, 0, NULL},
};

static const char users_help[] = ADMIN_PAGES_HELP("users");

static const cli_col_t user_cols[] = {
    {"ID", "id"},     {"UNIT", "unit_code|unit_id"},        {"UNIT NAME", "unit_name"},
    {"NAME", "name"}, {"ROLE", "role"},             {"DISABLED", "disabled"},
    {"CREATED", "created_at_ms"},
    {NULL, NULL},
};

static int show_users(cli_t *cli, const ProtobufCMessage *m) {
  return cli_print_table(cli, m, "users", user_cols);
}

static int run_users(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ListUsersRequest req = CLUE__V1__LIST_USERS_REQUEST__INIT;
  Clue__V1__ListUsersResponse *resp = NULL;
  int all, rc;

  if ((rc = cli_arg_id(cli, args, "unit", &req.unit_id)) != 0 ||
      (rc = cli_arg_i32(cli, args, "page-size", 1, ADMIN_PAGE_MAX, &req.page_size)) != 0 ||
      (rc = cli_page_args(cli, args, &all, &req.page_token)) != 0)
    return rc;
  if (all && req.page_size == 0)
    req.page_size = ADMIN_PAGE_MAX; /* fewer round trips */
  if ((rc = cli_call_pages(cli, ADMIN, "ListUsers", &req.base, "users", all,
                           (ProtobufCMessage **)&resp)) != 0)
    return rc;
  return cli_show(cli, &resp->base, show_users);
}

static const cli_opt_t create_user_opts[] = {
    {"unit", "ID", CLI_OPT_REQUIRED, "unit the user belongs to"},
    {"name", "NAME", CLI_OPT_REQUIRED, "the user's name"},
    {"role", "ROLE", CLI_OPT_REQUIRED, "MEMBER, LEADER, AUDITOR or ADMIN"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static int run_create_user(cli_t *cli, const cli_args_t *args) {
  Clue__V1__CreateUserRequest req = CLUE__V1__CREATE_USER_REQUEST__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int role = 0, rc;

  if ((rc = cli_arg_id(cli, args, "unit", &req.unit_id)) != 0 ||
      (rc = cli_arg_enum(cli, args, "role", &clue__v1__role__descriptor, &role)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  req.role = (Clue__V1__Role)role;
  req.name = (char *)cli_arg(args, "name");
  req.request_id = rid;
  return cli_call_rid_show(cli, ADMIN, "CreateUser", &req.base, rid, cli_print_record);
}

static const cli_opt_t disable_user_opts[] = {
    {"user", "ID", CLI_OPT_REQUIRED, "user to disable"},
    CLI_OPT_REASON,
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static int run_disable_user(cli_t *cli, const cli_args_t *args) {
  Clue__V1__DisableUserRequest req = CLUE__V1__DISABLE_USER_REQUEST__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int rc;

  if ((rc = cli_arg_id(cli, args, "user", &req.user_id)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  cli_arg_str(args, "reason", &req.reason);
  req.request_id = rid;
  return cli_call_rid_show(cli, ADMIN, "DisableUser", &req.base, rid, cli_print_record);
}

/* ---- tokens ------------------------------------------------------------------------ */

static const cli_opt_t issue_token_opts[] = {
    {"user", "ID", CLI_OPT_REQUIRED, "user the token authenticates"},
    {"note", "TEXT", 0, "what the token is for"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

/* The token alone on stdout, so that TOKEN=$(cluectl admin issue-token ...) works. */
static int show_token(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__IssueTokenResponse *r = (const Clue__V1__IssueTokenResponse *)m;

  (void)cli;
  cli_put_text(stdout, r->token, 0);
  putchar('\n');
  fprintf(stderr, "token %lld issued; it is shown only this once\n", (long long)r->token_id);
  return CLI_OK;
}

static int run_issue_token(cli_t *cli, const cli_args_t *args) {
  Clue__V1__IssueTokenRequest req = CLUE__V1__ISSUE_TOKEN_REQUEST__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int rc;

  if ((rc = cli_arg_id(cli, args, "user", &req.user_id)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  cli_arg_str(args, "note", &req.note);
  req.request_id = rid;
  return cli_call_rid_show(cli, ADMIN, "IssueToken", &req.base, rid, show_token);
}

static const cli_opt_t revoke_token_opts[] = {
    {"token-id", "ID", CLI_OPT_REQUIRED, "id of the token (as printed by issue-token)"},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static int run_revoke_token(cli_t *cli, const cli_args_t *args) {
  Clue__V1__RevokeTokenRequest req = CLUE__V1__REVOKE_TOKEN_REQUEST__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int rc;

  if ((rc = cli_arg_id(cli, args, "token-id", &req.token_id)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  req.request_id = rid;
  return cli_call_rid_show(cli, ADMIN, "RevokeToken", &req.base, rid, cli_print_record);
}

static const cli_command_t admin_commands[] = {
    {"units", NULL, "List units", units_opts, units_help, run_units},
    {"create-unit", NULL, "Create a unit", create_unit_opts,
     "A GROUP names its liaison ROOM and the host units it sits in.\n", run_create_unit},
    {"users", NULL, "List users", users_opts, users_help, run_users},
    {"create-user", NULL, "Create a user in a unit", create_user_opts, NULL, run_create_user},
    {"disable-user", NULL, "Disable a user; their tokens stop working", disable_user_opts,
     "Their tokens stop working at their next call. Disabling an ADMIN also revokes every\n"
     "live token it issued to other users (enrollment tokens, whose secrets it saw); that is\n"
     "refused when it would leave no enabled ADMIN holding a live token.\n",
     run_disable_user},
    {"issue-token", NULL, "Issue a bearer token for a user and print it", issue_token_opts,
     "The token is printed once on stdout and cannot be shown again; only its\n"
     "SHA-256 is stored. Its id (for revoke-token) is printed on stderr. A retry with\n"
     "the same --request-id revokes the token it issued and prints a fresh one.\n",
     run_issue_token},
    {"revoke-token", NULL, "Revoke a token", revoke_token_opts, NULL, run_revoke_token},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};

const cli_group_t cli_group_admin = {
    "admin",
    "Manage units, users and tokens (ADMIN only)",
    admin_commands,
};
