#ifndef CLUED_SERVICE_SERVICES_H
#define CLUED_SERVICE_SERVICES_H

#include "db/db.h"
#include "server.h"

/** The pool settings of srv's configuration (size, queues, time bounds) for conninfo. */
void services_db_config(const server_t *srv, const char *conninfo, db_config_t *dc);

/**
 * Register and start the server's modules: the method table, reflection, the database pool
 * (when configured), authentication, health, audit watch, the audit tree. The server shuts
 * them down, closes and frees them through their hooks. Returns 0 or a negative error
 * (logged).
 */
int services_start(server_t *srv) __attribute__((warn_unused_result));

#endif
