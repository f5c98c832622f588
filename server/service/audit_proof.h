#ifndef CLUED_SERVICE_AUDIT_PROOF_H
#define CLUED_SERVICE_AUDIT_PROOF_H

/* clue.v1.AuditService: GetCheckpoint, GetInclusionProof, GetConsistencyProof and
 * ExportAuditEvents, over the audit log's Merkle tree (docs/AUDIT.md). */

#include <stddef.h>

#include "clue/v1/audit.pb-c.h"
#include "rpc/rpc.h"

/** The methods, for the method table. */
extern const rpc_method_t audit_proof_methods[];
extern const size_t audit_proof_nmethods;

/**
 * Finish VerifyAuditChain for the whole log: check every event against its leaf in the
 * server's tree (changed, deleted, or inserted behind the tree), then the tree against the
 * latest checkpoint (cp_size, cp_root_hex, cp_note: its columns, all NULL when none; its
 * signature when this server has the key), and reply with resp (in the call's memory),
 * ok cleared and tree_problem set at the first problem.
 */
void audit_tree_verify(rpc_call_t *call, Clue__V1__VerifyAuditChainResponse *resp,
                       const char *cp_size, const char *cp_root_hex, const char *cp_note);

#endif
