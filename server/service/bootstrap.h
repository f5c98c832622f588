#ifndef CLUED_SERVICE_BOOTSTRAP_H
#define CLUED_SERVICE_BOOTSTRAP_H

/* `clued bootstrap`: the first administrator, and optionally demo units and users. These run
 * as one-shot commands before any event loop, so they use blocking libpq. */

#include <stdio.h>

/**
 * Create an ADMIN user (and the ADMIN unit, if there is none) with a token, printed to out
 * once, when no enabled ADMIN user holds a live token: the first administrator, or one that
 * restores administration after it was locked out. When one does, say so and change nothing,
 * unless new_admin: then make another all the same (`--new-admin`, for an administrator's lost
 * token, which the new one revokes). Returns 0, or -1 (the reason logged).
 */
int bootstrap_admin(const char *conninfo, int new_admin, FILE *out);

/**
 * Create the demo units (two rooms, three groups, one region) with a LEADER and a MEMBER each,
 * unless units other than ADMIN ones exist already, in one transaction with the check. Tokens
 * go to tokens_path, one "UNIT_CODE ROLE user_name token" line each: a new file, mode 0600,
 * written whole before the commit (removed if the commit fails); an existing file or a
 * symlink there is refused before anything is made. Returns 0 (created or already there) or
 * -1 (the reason logged).
 */
int bootstrap_demo(const char *conninfo, const char *tokens_path, FILE *out);

/**
 * 0 if nothing is at tokens_path; otherwise -1, having logged that the demo tokens go only to
 * a new file. Checked before bootstrap makes anything, so that a refused bootstrap makes no
 * administrator either (whose token would be printed by a command that then fails).
 */
int bootstrap_demo_path_free(const char *tokens_path);

#endif
