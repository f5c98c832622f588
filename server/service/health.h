#ifndef CLUED_SERVICE_HEALTH_H
#define CLUED_SERVICE_HEALTH_H

/* grpc.health.v1.Health: SERVING only while the database answers, while clued's functions and
 * triggers are what its migrations define (service/schema_watch.h; unless
 * --allow-schema-drift), and, with --require-sync-replica, while the primary has a
 * synchronous standby (checked every second). */

#include "rpc/rpc.h"
#include "server.h"

/** The Health methods, for the method table. */
extern const rpc_method_t health_methods[];
extern const size_t health_nmethods;

/** Create the health state of srv and follow the database pool's health. Returns 0 or -ENOMEM. */
int health_init(server_t *srv) __attribute__((warn_unused_result));

/** Whether clued's functions and triggers are what its migrations define
 * (service/schema_watch.h): while not, NOT_SERVING. */
void health_set_schema(server_t *srv, int ok);

/** Shutdown begins: report NOT_SERVING to watchers and end their calls. */
void health_shutdown(server_t *srv);

/** Close the health state's handles (after shutdown). */
void health_close(server_t *srv);

/** Free the health state (after the loop stopped). */
void health_free(server_t *srv);

#endif
