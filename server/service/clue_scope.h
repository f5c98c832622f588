#ifndef CLUED_SERVICE_CLUE_SCOPE_H
#define CLUED_SERVICE_CLUE_SCOPE_H

/* The SQL form of authz_clue_scope(): the condition "this clue row is visible to the
 * caller", shared by the reads of single clues and by the audit trail (a non-auditor sees the
 * events of the clues it sees), and the same set as a query of ids, from which ListClues and
 * the lists of events start. Both agree with authz_can_see_clue(); ListClues checks each row
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

/**
 * Write into out a SELECT of one column, id, giving each clue visible under scope once: the
 * same set as "clues c WHERE <clue_scope_sql()>", but read from each source of sight by its
 * own index (the owner units', the joint cases', the pending reviews', the caller's
 * assignments), so that it costs what the caller sees rather than the whole clues table.
 * Parameters as clue_scope_sql(); AUTHZ_SCOPE_ALL gives every clue, AUTHZ_SCOPE_NONE none.
 * Returns 0, or -1 when len is too small (out is then undefined).
 */
int clue_scope_ids_sql(unsigned scope, int unit_param, int user_param, char *out, size_t len)
    __attribute__((warn_unused_result));

#endif
