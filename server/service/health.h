#ifndef CLUED_SERVICE_HEALTH_H
#define CLUED_SERVICE_HEALTH_H

/* grpc.health.v1.Health: SERVING only while the database answers, and, with
 * --require-sync-replica, while the primary has a synchronous standby (checked every second). */

#include "rpc/rpc.h"
#include "server.h"

/** The Health methods, for the method table. */
extern const rpc_method_t health_methods[];
extern const size_t health_nmethods;

/** Create the health state of srv and follow the database pool's health. Returns 0 or -ENOMEM. */
int health_init(server_t *srv) __attribute__((warn_unused_result));

/** Shutdown begins: report NOT_SERVING to watchers and end their calls. */
void health_shutdown(server_t *srv);

/** Close the health state's handles (after shutdown). */
void health_close(server_t *srv);

/** Free the health state (after the loop stopped). */
void health_free(server_t *srv);

#endif
