#ifndef CLUED_SERVICE_ADMIN_H
#define CLUED_SERVICE_ADMIN_H

#include "rpc/rpc.h"

/** The clue.v1.AdminService methods, for the method table. */
extern const rpc_method_t admin_methods[];
extern const size_t admin_nmethods;

#endif
