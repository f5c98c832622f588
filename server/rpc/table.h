#ifndef CLUED_RPC_TABLE_H
#define CLUED_RPC_TABLE_H

/* The method table: ":path" -> method. Filled once at start-up, read-only afterwards. */

#include "rpc/rpc.h"

typedef struct rpc_table rpc_table_t;

/** Create an empty table. Returns 0 or -ENOMEM. */
int rpc_table_new(rpc_table_t **out) __attribute__((warn_unused_result));

/** Free the table (not the methods, which are static data of the services). */
void rpc_table_free(rpc_table_t *t);

/** Register methods (borrowed, must outlive the table). Returns 0, -ENOMEM, -EEXIST. */
int rpc_table_add(rpc_table_t *t, const rpc_method_t *methods, size_t n)
    __attribute__((warn_unused_result));

/** Find a method by :path, or NULL. */
const rpc_method_t *rpc_table_find(const rpc_table_t *t, const char *path, size_t len);

#endif
