#ifndef CLUED_SERVICE_AUDIT_WATCH_H
#define CLUED_SERVICE_AUDIT_WATCH_H

/* AuditService/WatchEvents: replay the caller's visible events after a seq, then stream new
 * ones as they commit on any clued instance sharing the database, in seq order, without
 * gaps or repeats. One LISTEN connection and one shared reader per server feed every
 * watcher; see audit_watch.c. */

#include "rpc/rpc.h"
#include "server.h"

/** The per-server watch state (server_t.audit). */
typedef struct audit audit_t;

/** Create srv->audit. Nothing connects until the first watcher. Returns 0 or -ENOMEM. */
int audit_init(server_t *srv) __attribute__((warn_unused_result));

/** Shutdown begins: end every watch with UNAVAILABLE (and the seq to resume from). */
void audit_shutdown(server_t *srv);

/** Free srv->audit (after shutdown, before the database pool closes). */
void audit_close(server_t *srv);

/** WatchEvents streams open now (for metrics). */
size_t audit_watchers(const server_t *srv);

/** The WatchEvents handler. */
void audit_watch_events(rpc_call_t *call, const ProtobufCMessage *req);

#endif
