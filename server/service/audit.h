#ifndef CLUED_SERVICE_AUDIT_H
#define CLUED_SERVICE_AUDIT_H

/* clue.v1.AuditService: ListAuditEvents, VerifyAuditChain, WatchEvents (DESIGN.md §5). */

#include <stdbool.h>
#include <stdint.h>

#include "domain/validate.h"
#include "rpc/rpc.h"
#include "service/audit_event.h"

/** The AuditService methods, for the method table. */
extern const rpc_method_t audit_methods[];
extern const size_t audit_nmethods;

/**
 * Set the visibility fields of f for the caller: every event for AUDITOR and ADMIN, else
 * the events of the clues the caller sees (authz_clue_scope()).
 */
void audit_visibility(const rpc_principal_t *p, audit_filter_t *f);

/** Add to e the violations of a request's subject_type / subject_id pair (a known type or
 * none; an id needs a type), subject_type's first. */
void audit_subject_violations(validate_errors_t *e, const char *subject_type, int64_t subject_id);

#endif
