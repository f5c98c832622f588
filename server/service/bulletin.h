#ifndef CLUED_SERVICE_BULLETIN_H
#define CLUED_SERVICE_BULLETIN_H

/* clue.v1.StatsService.GetBulletin: the monthly bulletin (通报, issue 14). */

#include "rpc/rpc.h"

/** The GetBulletin method, for the method table. */
extern const rpc_method_t bulletin_methods[];
/** Number of entries of bulletin_methods. */
extern const size_t bulletin_nmethods;

#endif
