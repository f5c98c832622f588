/* cluectl token: the caller's own tokens (clue.v1.TokenService; any signed-in user). */

#include <stdio.h>

#include "cli.h"
#include "clue/v1/token.pb-c.h"

#define TOKENS (&clue__v1__token_service__descriptor)

static const cli_opt_t list_opts[] = {
    {"all", NULL, 0, "revoked tokens too"},
    {NULL, NULL, 0, NULL},
};

static const cli_col_t token_cols[] = {
    {"ID", "id"},
    {"ENROLLMENT", "enrollment"},
    {"ISSUED BY", "issued_by_user_id"},
    {"NOTE", "note"},
    {"CREATED", "created_at_ms"},
    {"REVOKED", "revoked_at_ms"},
    {"CURRENT", "current"},
    {NULL, NULL},
};

static int show_tokens(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__ListMyTokensResponse *r = (const Clue__V1__ListMyTokensResponse *)m;
  int rc = cli_print_table(cli, m, "tokens", token_cols);

  if (rc == CLI_OK && r->truncated)
    fprintf(stderr, "only the newest %zu tokens are shown\n", r->n_tokens);
  return rc;
}

static int run_list(cli_t *cli, const cli_args_t *args) {
  Clue__V1__ListMyTokensRequest req = CLUE__V1__LIST_MY_TOKENS_REQUEST__INIT;

  req.include_revoked = cli_flag(args, "all");
  return cli_call_show(cli, TOKENS, "ListMyTokens", &req.base, show_tokens);
}

static const cli_opt_t issue_opts[] = {
    {"note", "TEXT", 0, "what the token is for, e.g. \"laptop\""},
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

/* The token alone on stdout, so that TOKEN=$(cluectl token issue) works. */
static int show_issued(cli_t *cli, const ProtobufCMessage *m) {
  const Clue__V1__IssueTokenResponse *r = (const Clue__V1__IssueTokenResponse *)m;

  (void)cli;
  cli_put_text(stdout, r->token, 0);
  putchar('\n');
  fprintf(stderr, "personal token %lld issued; it is shown only this once\n",
          (long long)r->token_id);
  return CLI_OK;
}

static int run_issue(cli_t *cli, const cli_args_t *args) {
  Clue__V1__IssueMyTokenRequest req = CLUE__V1__ISSUE_MY_TOKEN_REQUEST__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int rc;

  if ((rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  cli_arg_str(args, "note", &req.note);
  req.request_id = rid;
  return cli_call_rid_show(cli, TOKENS, "IssueMyToken", &req.base, rid, show_issued);
}

static const cli_opt_t revoke_opts[] = {
    CLI_OPT_REQUEST_ID,
    {NULL, NULL, 0, NULL},
};

static int run_revoke(cli_t *cli, const cli_args_t *args) {
  Clue__V1__RevokeMyTokenRequest req = CLUE__V1__REVOKE_MY_TOKEN_REQUEST__INIT;
  char rid[CLI_REQUEST_ID_LEN];
  int rc;

  if ((rc = cli_operand_id(cli, args, &req.token_id)) != 0 ||
      (rc = cli_request_id(cli, args, rid)) != 0)
    return rc;
  req.request_id = rid;
  return cli_call_rid_show(cli, TOKENS, "RevokeMyToken", &req.base, rid, cli_print_record);
}

static const cli_command_t token_commands[] = {
    {"list", NULL, "List your tokens", list_opts,
     "An enrollment token was issued to you by someone else (an administrator): it\n"
     "cannot read reporter contacts. Issue yourself a personal token with\n"
     "`cluectl token issue`, then revoke the enrollment token.\n",
     run_list},
    {"issue", NULL, "Issue yourself a personal token and print it", issue_opts,
     "The token is printed once on stdout and cannot be shown again; only its\n"
     "SHA-256 is stored. Its id (for `token revoke`) is printed on stderr. At most\n"
     "16 unrevoked tokens per user. A retry with the same --request-id revokes the\n"
     "token it issued and prints a fresh one.\n",
     run_issue},
    {"revoke", "ID", "Revoke one of your tokens", revoke_opts,
     "Revoking the token you call with signs you out: it stops working at once.\n", run_revoke},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};

const cli_group_t cli_group_token = {
    "token",
    "Your own tokens: list, issue a personal token, revoke",
    token_commands,
};
