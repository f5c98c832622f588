#ifndef CLUED_SERVICE_HANDOVER_H
#define CLUED_SERVICE_HANDOVER_H

/* ClueService.HandOver (线索移交): the owner unit's leader gives a clue to another unit. */

#include "rpc/rpc.h"

/** The HandOver handler (req is a Clue__V1__HandOverRequest). */
void clue_hand_over(rpc_call_t *call, const ProtobufCMessage *req);

#endif
