#ifndef CLUED_DB_REPLICATION_H
#define CLUED_DB_REPLICATION_H
/* Whether the primary a session reaches keeps every commit on a synchronous standby before it
 * answers (serve --require-sync-replica). One statement reads what decides it; one pure
 * function judges its row, for the start-up check and for Health alike. */
#include <stddef.h>

/* One row: synchronous_standby_names, synchronous_commit (the session's), whether the
 * session's role may read pg_stat_replication's details (pg_read_all_stats), and how many
 * standbys the primary counts as synchronous now. */
extern const char db_sync_check_sql[];

/**
 * Judge a row of db_sync_check_sql (the four text values, NULL for SQL NULL). Returns 1 when
 * every commit waits for a synchronous standby that is there; else 0 and why (a sentence
 * fragment for the log and for an operator: "no synchronous standby is connected").
 */
int db_sync_verdict(const char *standby_names, const char *sync_commit, const char *can_see,
                    const char *nsync, char *why, size_t len);
#endif
