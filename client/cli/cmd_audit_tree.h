#ifndef CLUECTL_CMD_AUDIT_TREE_H
#define CLUECTL_CMD_AUDIT_TREE_H

/* cluectl audit checkpoint, verify --checkpoint and witness (cmd_audit_tree.c). */

#include "cli.h"

/** audit checkpoint [--out FILE]: print or save the latest signed checkpoint. */
int audit_tree_checkpoint(cli_t *cli, const cli_args_t *args);

/** audit verify --checkpoint FILE [--key FILE]: the offline check; exit 0, or 1 naming why. */
int audit_tree_verify(cli_t *cli, const cli_args_t *args);

/** audit witness --dir DIR: keep the signed sequence of checkpoints, each checked. */
int audit_tree_witness(cli_t *cli, const cli_args_t *args);

#endif
