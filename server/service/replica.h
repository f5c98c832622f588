#ifndef CLUED_SERVICE_REPLICA_H
#define CLUED_SERVICE_REPLICA_H
/* Reads from a replica (serve --replica-url): a second pool, on a standby, for the reads that
 * tolerate staleness (ListClues, ListAuditEvents, GetStatistics, GetBulletin). The server
 * watches how far behind the primary the replica is; a read goes there unless the caller asks
 * for fresh data (ReadConsistency) or the replica is more than --replica-max-lag behind, and
 * every answer says where it came from and how stale it may be (ReadFreshness). */

#include "clue/v1/common.pb-c.h"
#include "db/db.h"
#include "rpc/rpc.h"
#include "server.h"

/** Module hooks: the replica's pool and its lag monitor, when --replica-url is set. */
int replica_start(server_t *srv) __attribute__((warn_unused_result));
void replica_close(server_t *srv);
void replica_free(server_t *srv);

/** The replica's pool while it serves reads; NULL without --replica-url, or once closing. */
db_pool_t *replica_pool(const server_t *srv);

/**
 * Decide where call's stale-tolerant reads go, as want asks (NULL: no preference), and return
 * what the answer says of it, in the call's arena. NULL after failing the call
 * (INVALID_ARGUMENT: a malformed min_read_lsn; RESOURCE_EXHAUSTED: out of memory). Call it
 * after the request is known valid and before the reads are sent.
 */
Clue__V1__ReadFreshness *replica_route(rpc_call_t *call, const Clue__V1__ReadConsistency *want)
    __attribute__((warn_unused_result));

/** A read of call routed to the replica got its answer there. */
void replica_read_answered(rpc_call_t *call);

/**
 * Whether call's reads on the primary must say where the primary's WAL stood when they read
 * (a replica is configured, and the call was routed): such a read runs in a REPEATABLE READ
 * transaction whose first statement reads pg_current_wal_insert_lsn(), so that the position
 * covers every commit the read can see, and hands it to replica_primary_read_lsn().
 */
int replica_primary_lsn_wanted(const rpc_call_t *call);

/** The WAL position (text) a read of call on the primary saw; a later one replaces it. */
void replica_primary_read_lsn(rpc_call_t *call, const char *lsn);

/** Why the replica did not answer a read that the primary can answer instead. */
typedef enum replica_miss {
  REPLICA_ANSWERED = 0, /* it answered, or the error is one the primary would give too */
  REPLICA_LOST,         /* the connection broke mid-read, or none could be had */
  REPLICA_CONFLICT,     /* the standby cancelled the read to replay WAL (SQLSTATE 40001 or
                           40P01: a read-only statement meets them only so) */
} replica_miss_t;

/** What r, the outcome of a read on the replica, says of it. */
replica_miss_t replica_miss(const db_result_t *r);

/**
 * A read of call routed to the replica was missed there (why: not REPLICA_ANSWERED): send
 * this read and the call's later ones to the primary, let the answer say so (unless the
 * replica already answered a read of the call), and return 1: the read should run again on
 * the primary. A read has no effect, so running it again is safe. Returns 0 when the call's
 * reads did not go to the replica.
 */
int replica_fall_back(rpc_call_t *call, replica_miss_t why) __attribute__((warn_unused_result));

/** What /metrics shows of the replica. */
typedef struct replica_stats {
  int configured;         /* --replica-url given */
  int in_use;             /* a read routed now with no preference would go to it */
  int64_t staleness_ms;   /* the bound an answer from it would carry now; -1: not known */
  uint64_t reads_replica; /* stale-tolerant reads answered by the replica, since start */
  uint64_t reads_primary; /* ... and by the primary (asked for, or the replica bypassed) */
  uint64_t lost;          /* reads run again on the primary: the replica was lost */
  uint64_t conflicts;     /* ... the standby cancelled them (a recovery conflict) */
} replica_stats_t;

void replica_stats(server_t *srv, replica_stats_t *st);

/** Parse a WAL position "X/Y" (hexadecimal, as PostgreSQL prints them). Returns 0 or -1. */
int replica_lsn_parse(const char *s, uint64_t *out);
#endif
