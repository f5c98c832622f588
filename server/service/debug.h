#ifndef CLUED_SERVICE_DEBUG_H
#define CLUED_SERVICE_DEBUG_H

/* Test-build-only methods (CLUED_TEST_HOOKS): /clued.test.Debug/Sleep runs pg_sleep on a pool
 * connection, so tests can hold connections busy and prove the loop stays responsive. */

#include "rpc/rpc.h"

#ifdef CLUED_TEST_HOOKS
/** The debug methods, for the method table. */
extern const rpc_method_t debug_methods[];
extern const size_t debug_nmethods;
#endif

#endif
