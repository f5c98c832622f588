#ifndef CLUECTL_CMD_CLUE_H
#define CLUECTL_CMD_CLUE_H

/*
 * The `clue` command group is written in two files: cmd_clue.c (intake and reading:
 * submit, get, list, history, note, notes; it holds the group's table), cmd_clue_move.c
 * (changes of state and owner: move, proposals, review, handover, extend) and
 * cmd_clue_people.c (assign, unassign, assignments, recuse, recusals). This header is what the others
 * give the first.
 */

#include "cli.h"
#include "clue/v1/clue.pb-c.h"

#define CLUE_SVC (&clue__v1__clue_service__descriptor)

/* The commands of cmd_clue_move.c: options, help and what runs them. */
extern const cli_opt_t clue_move_opts[];
extern const cli_opt_t clue_proposals_opts[];
extern const cli_opt_t clue_review_opts[];
extern const cli_opt_t clue_handover_opts[];
extern const cli_opt_t clue_extend_opts[];
extern const char clue_move_help[];
extern const char clue_proposals_help[];
extern const char clue_review_help[];
extern const char clue_handover_help[];
extern const char clue_extend_help[];

/** clue move ID: RequestTransition. */
int clue_run_move(cli_t *cli, const cli_args_t *args);
/** clue proposals: ListProposals. */
int clue_run_proposals(cli_t *cli, const cli_args_t *args);
/** clue review PROPOSAL_ID: ReviewProposal. */
int clue_run_review(cli_t *cli, const cli_args_t *args);
/** clue handover ID: HandOver. */
int clue_run_handover(cli_t *cli, const cli_args_t *args);
/** clue extend ID: ExtendDeadline. */
int clue_run_extend(cli_t *cli, const cli_args_t *args);

/* The commands of cmd_clue_people.c: handlers and recusals. */
extern const cli_opt_t clue_assign_opts[];
extern const cli_opt_t clue_recuse_opts[];
extern const cli_opt_t clue_recusals_opts[];
extern const char clue_assign_help[];
extern const char clue_unassign_help[];
extern const char clue_recuse_help[];
extern const char clue_recusals_help[];
extern const cli_opt_t clue_assignments_opts[];
extern const char clue_assignments_help[];

/** clue assign ID --user U: AssignHandler. */
int clue_run_assign(cli_t *cli, const cli_args_t *args);
/** clue unassign ID --user U: UnassignHandler. */
int clue_run_unassign(cli_t *cli, const cli_args_t *args);
/** clue recuse ID [--user U]: RecordRecusal. */
int clue_run_recuse(cli_t *cli, const cli_args_t *args);
/** clue assignments: ListAssignments. */
int clue_run_assignments(cli_t *cli, const cli_args_t *args);
/** clue recusals: ListRecusals. */
int clue_run_recusals(cli_t *cli, const cli_args_t *args);
/** Print a clue's handlers, one an indented line. */
void clue_print_handlers(const Clue__V1__Clue *c);

#endif
