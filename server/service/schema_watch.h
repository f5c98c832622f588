#ifndef CLUED_SERVICE_SCHEMA_WATCH_H
#define CLUED_SERVICE_SCHEMA_WATCH_H

/* The periodic check that clued's functions and triggers in the database are what its
 * migrations define (db/schema_check.h): one catalog query on the pool, at start and every
 * --schema-check-interval. While they differ, each difference is logged as an error, the
 * metric clued_schema_drift counts them, and, unless --allow-schema-drift, Health reports
 * NOT_SERVING and every call that needs a token is refused with UNAVAILABLE: those functions
 * decide who sees what and which reads are logged. The first check that finds them restored
 * (`clued migrate --repair`) serves again. */

#include <stddef.h>
#include <stdint.h>

#include "server.h"

/** Start checking (nothing without a database). Returns 0 or a negative error (logged). */
int schema_watch_start(server_t *srv) __attribute__((warn_unused_result));

/** Stop the timer (after shutdown). */
void schema_watch_close(server_t *srv);

/** Free the watch (after the loop stopped). */
void schema_watch_free(server_t *srv);

/** Whether the watch runs, the differences the last check found, and the checks finished. */
int schema_watch_stats(const server_t *srv, size_t *drift, uint64_t *checks);

#endif
