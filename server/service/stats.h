#ifndef CLUED_SERVICE_STATS_H
#define CLUED_SERVICE_STATS_H

/* clue.v1.StatsService: figures per unit and joint case over a period (DESIGN.md §6). */

#include "rpc/rpc.h"

/** The StatsService methods, for the method table. */
extern const rpc_method_t stats_methods[];
/** Number of entries of stats_methods. */
extern const size_t stats_nmethods;

#endif
