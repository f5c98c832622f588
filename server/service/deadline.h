#ifndef CLUED_SERVICE_DEADLINE_H
#define CLUED_SERVICE_DEADLINE_H

/* ClueService.ExtendDeadline: stage deadlines (DESIGN.md §2 "Stage deadlines"). */

#include "rpc/rpc.h"

/** Handler of /clue.v1.ClueService/ExtendDeadline (an ExtendDeadlineRequest, replies a Clue). */
void clue_extend_deadline(rpc_call_t *call, const ProtobufCMessage *req);

#endif
