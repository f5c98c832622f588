#ifndef CLUECTL_CMD_AUDIT_TREE_H
#define CLUECTL_CMD_AUDIT_TREE_H

/* cluectl audit checkpoint, verify --checkpoint and witness (cmd_audit_tree.c). */

#include <stddef.h>

#include "cli.h"

/** audit checkpoint [--out FILE]: print or save the latest signed checkpoint. */
int audit_tree_checkpoint(cli_t *cli, const cli_args_t *args);

/** audit verify --checkpoint FILE [--key FILE]: the offline check; exit 0, or 1 naming why. */
int audit_tree_verify(cli_t *cli, const cli_args_t *args);

/** audit witness --dir DIR: keep the signed sequence of checkpoints, each checked. */
int audit_tree_witness(cli_t *cli, const cli_args_t *args);

/** Member key of a JSON object as jsonb renders it ("key": value), as it stands there: a
 * string with its quotes and escapes, a number, true, false, null, or an array or object to
 * its closing bracket; its length in *len. NULL when key is absent. The first member of that
 * name is found, at any depth: keys in nested objects must not repeat the object's own. The
 * pointer is into json. */
const char *audit_json_raw(const char *json, const char *key, size_t *len);

/** A string or number member of a flat JSON object as jsonb renders it ("key": value): its
 * text in out (cut to cap - 1 bytes; `null` for a JSON null), or -1 when key is absent. */
int audit_json_member(const char *json, const char *key, char *out, size_t cap);

#endif
