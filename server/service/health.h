#ifndef CLUED_SERVICE_HEALTH_H
#define CLUED_SERVICE_HEALTH_H

/* grpc.health.v1.Health: SERVING only while the database answers. */

#include "rpc/rpc.h"
#include "server.h"

/** The Health methods, for the method table. */
extern const rpc_method_t health_methods[];
extern const size_t health_nmethods;

/** Create the health state of srv and follow the database pool's health. Returns 0 or -ENOMEM. */
int health_init(server_t *srv) __attribute__((warn_unused_result));

/** Shutdown begins: report NOT_SERVING to watchers and end their calls. */
void health_shutdown(server_t *srv);

/** Free the health state (after shutdown). */
void health_close(server_t *srv);

/** Set the serving status and tell every watcher (used by the pool's health callback). */
void health_set_serving(server_t *srv, int serving);

#endif
