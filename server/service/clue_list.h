#ifndef CLUED_SERVICE_CLUE_LIST_H
#define CLUED_SERVICE_CLUE_LIST_H

/* ClueService.ListClues: the clues the caller sees, filtered, one page at a time. */

#include "rpc/rpc.h"

/** The ListClues handler (req is a Clue__V1__ListCluesRequest). */
void clue_list_clues(rpc_call_t *call, const ProtobufCMessage *req);

#endif
