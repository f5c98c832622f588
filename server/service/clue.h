#ifndef CLUED_SERVICE_CLUE_H
#define CLUED_SERVICE_CLUE_H

/* clue.v1.ClueService: the clue lifecycle (DESIGN.md §2, §4). */

#include "rpc/rpc.h"

/** The ClueService methods, for the method table. */
extern const rpc_method_t clue_methods[];
/** Number of entries of clue_methods. */
extern const size_t clue_nmethods;

#endif
