#ifndef CLUED_SERVICE_SERVICES_H
#define CLUED_SERVICE_SERVICES_H

#include "server.h"

/**
 * Build the method table, open the database pool (when configured) and the services'
 * shared state. Returns 0 or a negative error (logged).
 */
int services_start(server_t *srv) __attribute__((warn_unused_result));

#endif
