#ifndef CLUED_SERVICE_BOOTSTRAP_H
#define CLUED_SERVICE_BOOTSTRAP_H

/* `clued bootstrap`: the first administrator, and optionally demo units and users. These run
 * as one-shot commands before any event loop, so they use blocking libpq. */

#include <stdio.h>

/**
 * Create the first ADMIN unit and user when no ADMIN user exists, printing the token to out
 * once. When one exists, say so and change nothing. Returns 0, or -1 (message on stderr).
 */
int bootstrap_admin(const char *conninfo, FILE *out);

/**
 * Create the demo units (two rooms, three groups, one region) with a LEADER and a MEMBER each,
 * unless units other than ADMIN ones exist already. Tokens go to tokens_path (mode 0600), one
 * "UNIT_CODE ROLE user_name token" line each. Returns 0 (created or already there) or -1.
 */
int bootstrap_demo(const char *conninfo, const char *tokens_path, FILE *out);

#endif
