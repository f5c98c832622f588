#include "db/replication.h"

#include <stdio.h>
#include <string.h>

/* sync_state is NULL in pg_stat_replication for a role without pg_read_all_stats: the row
 * then says so, instead of reading as "no synchronous standby". */
const char db_sync_check_sql[] =
    "SELECT current_setting('synchronous_standby_names'), current_setting('synchronous_commit'),"
    "       pg_has_role('pg_read_all_stats', 'USAGE'),"
    "       (SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum'))";

int db_sync_verdict(const char *standby_names, const char *sync_commit, const char *can_see,
                    const char *nsync, char *why, size_t len) {
  const char *reason = NULL;
  char buf[200];

  if (!standby_names || !sync_commit || !can_see || !nsync) {
    reason = "the replication check returned no answer";
  } else if (standby_names[0] == '\0') {
    reason = "the primary has no synchronous standby configured (synchronous_standby_names "
             "is empty)";
  } else if (strcmp(sync_commit, "on") != 0 && strcmp(sync_commit, "remote_apply") != 0) {
    /* remote_write and local answer before the standby has the commit on disk; off before
     * the primary has. */
    snprintf(buf, sizeof(buf),
             "synchronous_commit is %.40s: a commit is acknowledged before a synchronous "
             "standby has it on disk (on or remote_apply needed)",
             sync_commit);
    reason = buf;
  } else if (strcmp(can_see, "t") != 0) {
    reason = "this role cannot see which standbys are synchronous: GRANT pg_read_all_stats "
             "to it";
  } else if (strcmp(nsync, "0") == 0) {
    reason = "no synchronous standby is connected";
  }
  if (why && len > 0)
    snprintf(why, len, "%s", reason ? reason : "");
  return reason == NULL;
}
