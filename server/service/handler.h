#ifndef CLUED_SERVICE_HANDLER_H
#define CLUED_SERVICE_HANDLER_H

/* ClueService: assigned handlers (承办人, 派员参与) and recusals (回避) of a clue. */

#include "rpc/rpc.h"

/** AssignHandler (req is a Clue__V1__AssignHandlerRequest). */
void clue_assign_handler(rpc_call_t *call, const ProtobufCMessage *req);

/** UnassignHandler (req is a Clue__V1__UnassignHandlerRequest). */
void clue_unassign_handler(rpc_call_t *call, const ProtobufCMessage *req);

/** RecordRecusal (req is a Clue__V1__RecordRecusalRequest). */
void clue_record_recusal(rpc_call_t *call, const ProtobufCMessage *req);

/** ListRecusals (req is a Clue__V1__ListRecusalsRequest). */
void clue_list_recusals(rpc_call_t *call, const ProtobufCMessage *req);

/** ListAssignments (req is a Clue__V1__ListAssignmentsRequest). */
void clue_list_assignments(rpc_call_t *call, const ProtobufCMessage *req);

#endif
