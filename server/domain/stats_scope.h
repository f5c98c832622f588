#ifndef CLUED_DOMAIN_STATS_SCOPE_H
#define CLUED_DOMAIN_STATS_SCOPE_H

/* Whose statistics a caller may read (GetStatistics, DESIGN.md §4, §6), as pure functions
 * over facts, answering like authz.h (decision = gRPC status code, message for the client).
 *
 * Statistics are counts over the audit trail, not clue contents, and they follow the units a
 * caller answers for:
 *   AUDITOR, ADMIN    every GROUP, ROOM and REGION (both may read the whole audit trail,
 *                     from which every figure derives; neither sees a clue through this)
 *   ROOM staff        its own unit and the GROUPs whose liaison room it is
 *   GROUP, REGION     its own unit
 * A unit named in the request's filter outside that scope is refused (PERMISSION_DENIED),
 * never silently dropped, so that a figure shown is never mistaken for a complete answer.
 * To staff an unknown unit id looks exactly like one outside their scope; AUDITOR and ADMIN
 * get NOT_FOUND for it, and INVALID_ARGUMENT for an ADMIN unit (it handles no clues).
 *
 * Per joint case: AUDITOR and ADMIN see every case; staff only cases their own unit leads or
 * joins (whose clues they see, DESIGN.md §3).
 *
 * A clue a caller is recused from does not exist for them (docs/COOPERATION.md): their figures,
 * of units and of cases, count nothing of it. */

#include <stdbool.h>
#include <stdint.h>

#include "domain/authz.h"

/** A unit as the scope rules see it. */
typedef struct stats_unit {
  int64_t id;
  clue_unit_kind_t kind;   /* UNSPECIFIED: no such unit */
  int64_t liaison_room_id; /* a GROUP's liaison ROOM; 0 otherwise */
} stats_unit_t;

/**
 * May p read statistics at all? AUDITOR, ADMIN, and MEMBER or LEADER of a GROUP, ROOM or
 * REGION; DENIED otherwise.
 */
authz_result_t stats_can_read(const authz_principal_t *p);

/** Is unit u in p's scope? What a request without a unit filter covers. */
bool stats_in_scope(const authz_principal_t *p, const stats_unit_t *u);

/**
 * May p ask for unit `id` by name (GetStatisticsRequest.unit_ids)? u holds its facts (kind
 * UNSPECIFIED when no such unit exists). ALLOW when stats_in_scope(); otherwise see the
 * header comment. The message names the unit id.
 */
authz_result_t stats_can_ask(const authz_principal_t *p, int64_t id, const stats_unit_t *u);

/** True when p's per-case figures are limited to the joint cases p's unit leads or joins. */
bool stats_cases_narrowed(const authz_principal_t *p);

/**
 * True when p's figures (GetStatistics' units and cases, GetBulletin) leave out the clues p
 * is recused from, and the ledger items recorded from them: staff. AUDITOR and ADMIN count
 * everything (neither is ever recused).
 */
bool stats_leave_out_recusals(const authz_principal_t *p);

#endif
