#ifndef CLUED_SERVICE_CLUE_SCOPE_H
#define CLUED_SERVICE_CLUE_SCOPE_H

/* The SQL form of authz_clue_scope(): the condition "this clue row is visible to the
 * caller", shared by ListClues and by the audit trail (a non-auditor sees the events of
 * the clues it sees). It agrees with authz_can_see_clue(); ListClues checks each row
 * against the latter as well. */

#include <stddef.h>

/** Room clue_scope_sql() needs at most, with its NUL. */
#define CLUE_SCOPE_SQL_MAX 1024

/**
 * Write into out the condition that the clues row aliased alias is visible under scope
 * (authz_scope_t bits, see authz_clue_scope()), where $<unit_param> (bigint) holds the
 * caller's unit and $<user_param> (bigint) the caller's user id; AUTHZ_SCOPE_NONE gives a condition that is always false. Returns 0, or -1
 * when len is too small (out is then undefined).
 */
int clue_scope_sql(unsigned scope, const char *alias, int unit_param, int user_param, char *out,
                   size_t len)
    __attribute__((warn_unused_result));

#endif
