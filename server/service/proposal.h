#ifndef CLUED_SERVICE_PROPOSAL_H
#define CLUED_SERVICE_PROPOSAL_H

/* ClueService's co-review (会商) calls: deciding and listing proposals. */

#include "rpc/rpc.h"

/** The ReviewProposal handler (req is a Clue__V1__ReviewProposalRequest). */
void clue_review_proposal(rpc_call_t *call, const ProtobufCMessage *req);

/** The ListProposals handler (req is a Clue__V1__ListProposalsRequest). */
void clue_list_proposals(rpc_call_t *call, const ProtobufCMessage *req);

#endif
