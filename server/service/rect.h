#ifndef CLUED_SERVICE_RECT_H
#define CLUED_SERVICE_RECT_H

/* clue.v1.RectificationService: the rectification ledger (督促整改台账, docs/LEDGER.md). */

#include "rpc/rpc.h"

/** The RectificationService methods, for the method table. */
extern const rpc_method_t rect_methods[];
/** Number of entries of rect_methods. */
extern const size_t rect_nmethods;

#endif
