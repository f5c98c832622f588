#ifndef CLUED_SERVICE_CASE_H
#define CLUED_SERVICE_CASE_H

/* clue.v1.CaseService: room–group–region joint cases (室组地联合办案, DESIGN.md §3). */

#include "rpc/rpc.h"

/** The CaseService methods, for the method table. */
extern const rpc_method_t case_methods[];
/** Number of entries of case_methods. */
extern const size_t case_nmethods;

#endif
