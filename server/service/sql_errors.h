#ifndef CLUED_SERVICE_SQL_ERRORS_H
#define CLUED_SERVICE_SQL_ERRORS_H

/* The one table from the SQLSTATEs our own SQL functions raise to gRPC status codes.
 *
 * The functions of migrations/ raise a named SQLSTATE of class "CL" with a message fit for
 * the client (see migrations/0008_named_errors.sql for what each means); svc_fail_db() passes
 * that message on with the code this table gives. The earlier form "CLnnn", nnn being the
 * gRPC status number, is still raised by functions no later migration replaced; it maps to
 * that number. */

#include "net/grpc_status.h"

/** One row of the table. */
typedef struct sql_error {
  const char *sqlstate; /* five characters, e.g. "CLVER" */
  grpc_status_t code;
  const char *meaning; /* for readers and the log */
} sql_error_t;

/** The named SQLSTATEs, in the order of 0008_named_errors.sql. */
extern const sql_error_t sql_errors[];
/** Number of rows of sql_errors. */
extern const int sql_errors_len;

/**
 * The gRPC status for a SQLSTATE raised by our own SQL: a named row of sql_errors, or the
 * legacy "CLnnn" (1 <= nnn <= 16). Returns 0 and sets *code, or -1 when st is neither (an
 * error of PostgreSQL itself, which the caller maps on its own).
 */
int sql_error_code(const char *st, grpc_status_t *code) __attribute__((warn_unused_result));

/**
 * The condition a FAILED_PRECONDITION raised by our SQL (CLPRE, or the legacy CL009) failed
 * on, for the PreconditionFailure a client reads: its type ("STATE", "RECUSAL",
 * "PARTICIPATION", "ADMINISTRATION") and subject ("proposal decided", "user recused", ...),
 * the same words the server's own check gives for the same condition (domain/authz.c), found
 * from the message's form. A message of no known form gives "STATE" and "precondition".
 */
void sql_precondition(const char *message, const char **type, const char **subject);

#endif
