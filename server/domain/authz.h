#ifndef CLUED_DOMAIN_AUTHZ_H
#define CLUED_DOMAIN_AUTHZ_H

/* Who may see and do what (DESIGN.md §2, §3, §4), as pure functions over facts.
 *
 * The service layer loads the facts (the caller's unit and role, the clue's owner, its
 * joint case, ...) and asks one question per call. Each answer is an authz_result_t whose
 * decision is numerically the gRPC status code to answer with, so the service can pass
 * result.grpc_code and result.message straight to rpc_fail().
 *
 * Order of checks, the same in every function: arguments that need no stored facts
 * (INVALID_ARGUMENT), then visibility (NOT_FOUND: a hidden clue answers exactly as a
 * missing one), then permission (PERMISSION_DENIED), then the clue's state
 * (FAILED_PRECONDITION), then arguments checked against stored facts (INVALID_ARGUMENT).
 * A caller who may not see a clue thus learns nothing about its state.
 *
 * Every function fails closed: NULL facts, role or unit kind UNSPECIFIED or out of range,
 * and unit id 0 never match anything. */

#include <stdbool.h>
#include <stdint.h>

#include "domain/clue_fsm.h"

/** A decision; each value is the gRPC status code the service answers with. */
typedef enum authz_decision {
  AUTHZ_ALLOW = 0,               /* OK */
  AUTHZ_INVALID_ARGUMENT = 3,    /* INVALID_ARGUMENT: a request field is wrong */
  AUTHZ_NOT_FOUND = 5,           /* NOT_FOUND: hidden, answered as if missing */
  AUTHZ_DENIED = 7,              /* PERMISSION_DENIED: visible but not the caller's to do */
  AUTHZ_FAILED_PRECONDITION = 9, /* FAILED_PRECONDITION: not in the clue's current state */
} authz_decision_t;

/** Size of authz_result_t.message. */
#define AUTHZ_MESSAGE_MAX 256

/** The answer to one question. */
typedef struct authz_result {
  authz_decision_t decision;
  int grpc_code;                   /* == (int)decision, the gRPC status number */
  const char *reason;              /* static text for the server log; may say more than message */
  char message[AUTHZ_MESSAGE_MAX]; /* for the client; "" when allowed. NOT_FOUND gives
                                      "clue not found", as for a missing clue */
} authz_result_t;

/** The authenticated caller. */
typedef struct authz_principal {
  int64_t user_id;
  int64_t unit_id;
  clue_unit_kind_t unit_kind;
  clue_role_t role;
} authz_principal_t;

/** What authorization needs to know of a clue, some of it relative to the caller. */
typedef struct authz_clue {
  int64_t owner_unit_id;
  clue_unit_kind_t owner_unit_kind;
  int64_t owner_liaison_room_id;    /* GROUP owner: its liaison ROOM; 0 otherwise */
  int64_t case_lead_unit_id;        /* lead ROOM of the clue's joint case; 0 if in none */
  bool principal_in_case;           /* the caller's unit participates in that joint case */
  int64_t pending_reviewer_unit_id; /* reviewer unit of the clue's pending proposal; 0 if none */
  bool deadline_extended;           /* the current stage's deadline was already extended */
  clue_state_t state;
  bool principal_is_handler;  /* the caller is an assigned handler (承办人) of the clue */
  bool principal_recused;     /* the caller is recused (回避) from the clue */
  bool owner_leaders_recused; /* every active LEADER of the owner unit is recused (and one is) */
  bool reviewer_leaders_recused; /* the same of the unit reviewing its pending proposal */
} authz_clue_t;

/** What authorization needs to know of a user named in a request (a handler, a recusal). */
typedef struct authz_user {
  int64_t user_id;
  bool exists;      /* false: no such user (the other fields are then 0) */
  bool active;      /* not disabled */
  int64_t unit_id;
  clue_unit_kind_t unit_kind;
  clue_role_t role;
  bool handler;     /* currently a handler of the clue in question */
  bool recused;     /* recused from the clue in question */
} authz_user_t;

/** What authorization needs to know of a co-review proposal. */
typedef struct authz_proposal {
  int64_t proposer_user_id;
  int64_t proposer_unit_id;
  int64_t reviewer_unit_id;
  bool pending; /* not yet approved, rejected or withdrawn */
} authz_proposal_t;

/** What authorization needs to know of a joint case, relative to the caller. */
typedef struct authz_case {
  int64_t lead_unit_id;   /* the ROOM that leads it */
  bool principal_in_case; /* the caller's unit is a participant */
} authz_case_t;

/** Bits of authz_clue_scope(): which clues a caller sees, for building list queries. */
typedef enum authz_scope {
  AUTHZ_SCOPE_NONE = 0,
  AUTHZ_SCOPE_ALL = 1u << 0,             /* every clue (AUDITOR) */
  AUTHZ_SCOPE_OWN_UNIT = 1u << 1,        /* owner_unit = caller's unit */
  AUTHZ_SCOPE_LIAISON_GROUPS = 1u << 2,  /* owned by a GROUP whose liaison room is the caller's */
  AUTHZ_SCOPE_JOINT_CASES = 1u << 3,     /* in a joint case the caller's unit leads or joins */
  AUTHZ_SCOPE_PENDING_REVIEWS = 1u << 4, /* with a pending proposal the caller's unit reviews */
  AUTHZ_SCOPE_HANDLED = 1u << 5,         /* the caller (a user) is an assigned handler of */
  AUTHZ_SCOPE_UNRECUSED = 1u << 6,       /* a restriction, not a source: none the caller is
                                            recused from, whatever the bits above say */
} authz_scope_t;

/** True if r allows. */
static inline bool authz_ok(const authz_result_t *r) {
  return r->decision == AUTHZ_ALLOW;
}

/**
 * True if r refuses at the permission step, before the version and the state are looked at:
 * PERMISSION_DENIED, or the FAILED_PRECONDITION that stands in for it when every LEADER of the
 * owner unit is recused (the unit's staff may not act, nor may anyone there). A stale
 * expected_version is told only after these, as after visibility.
 */
bool authz_refused_permission(const authz_result_t *r);

/**
 * Which clues p sees, as authz_scope_t bits; a clue is visible when it matches any of them.
 * Agrees with authz_can_see_clue() (the tests check so); meant for the WHERE clause of lists.
 */
unsigned authz_clue_scope(const authz_principal_t *p);

/**
 * May p see the clue? MEMBER/LEADER: clues of its unit, of joint cases its unit leads or
 * joins, with a pending proposal its unit reviews, for a ROOM those of GROUPs it is the
 * liaison room of, and those p is an assigned handler of; never one p is recused from.
 * AUDITOR: all. ADMIN: none. Otherwise NOT_FOUND.
 */
authz_result_t authz_can_see_clue(const authz_principal_t *p, const authz_clue_t *c);

/**
 * May p see the reporter's contact details? Only a LEADER of the owner unit (else DENIED).
 * The token p called with must allow it too (authz_token_can_see_reporter()).
 */
authz_result_t authz_can_see_reporter(const authz_principal_t *p, const authz_clue_t *c);

/**
 * May a call made with this token read reporter contacts? Not with an enrollment token, one
 * issued by someone other than its user (DENIED, naming the way out: a personal token).
 */
authz_result_t authz_token_can_see_reporter(bool enrollment_token);

/** May p submit a clue? A MEMBER or LEADER of a GROUP, ROOM or REGION (else DENIED). */
authz_result_t authz_can_submit(const authz_principal_t *p);

/**
 * The one plain move (no co-review) p could make toward target with these fields, decided
 * without the clue: NULL unless exactly one row of the table fits p's role, target and the
 * fields it requires. When it returns m, authz_can_move() allows exactly m, and
 * clue_fsm_check_fields(m, fields) passes, for every clue in state m->from, owned by p's unit,
 * with no pending proposal and no recusal (principal_recused, owner_leaders_recused and
 * reviewer_leaders_recused false), whatever its other facts: the write of a move sent without
 * a facts read checks those four in SQL (0029_direct_moves.sql), and a move they do not hold
 * for is read and decided as before. tests/unit/test_authz.c checks so over every
 * principal, target, set of fields and clue.
 */
const clue_move_t *authz_move_unread(const authz_principal_t *p, clue_state_t target,
                                     const clue_move_facts_t *fields);

/**
 * May p move the clue to target? INVALID_ARGUMENT if target is not a state; NOT_FOUND if
 * hidden; DENIED unless p is a LEADER of the owner unit; FAILED_PRECONDITION if the move is
 * not in the table (message from clue_fsm_refusal()) or a proposal is pending. On ALLOW,
 * *move (when move is not NULL) is the table row; it is left untouched otherwise. A row with
 * co_review set must become a proposal (see authz_reviewer_unit()).
 */
authz_result_t authz_can_move(const authz_principal_t *p, const authz_clue_t *c,
                              clue_state_t target, const clue_move_t **move);

/**
 * The unit that reviews a co-review proposal on the clue: the lead unit of its joint case
 * unless that room owns the clue; else the owner GROUP's liaison room (FAILED_PRECONDITION if it has none); else, for a
 * ROOM's or REGION's own clue, the unit named on the proposal, which must be a ROOM other
 * than the owner (INVALID_ARGUMENT otherwise; named_kind is UNSPECIFIED when the named id
 * does not exist). A named unit is ignored when the first two rules apply. On ALLOW sets
 * *reviewer_unit_id; leaves it untouched otherwise.
 */
authz_result_t authz_reviewer_unit(const authz_clue_t *c, int64_t named_unit_id,
                                   clue_unit_kind_t named_kind, int64_t *reviewer_unit_id);

/**
 * May p approve or reject the proposal? NOT_FOUND when p is recused from the clue, and unless
 * p sees the clue or p's unit is the proposal's reviewer; DENIED unless p is a LEADER of the reviewer unit, for a unit that owns
 * the clue or made the proposal (co-review is independent), and for the proposer (nobody
 * reviews their own proposal); FAILED_PRECONDITION if already decided. Staff of the reviewing
 * unit whose every leader is recused from the clue get FAILED_PRECONDITION naming that instead
 * of DENIED.
 */
authz_result_t authz_can_review(const authz_principal_t *p, const authz_clue_t *c,
                                const authz_proposal_t *prop);

/** May p add a note? Anyone who sees the clue (NOT_FOUND otherwise), except an AUDITOR (DENIED). */
authz_result_t authz_can_add_note(const authz_principal_t *p, const authz_clue_t *c);

/**
 * May p hand the clue over to unit to_unit_id of kind to_kind? INVALID_ARGUMENT if to_unit_id
 * is 0 or negative; NOT_FOUND if hidden; DENIED unless a LEADER of the owner unit;
 * FAILED_PRECONDITION unless ACCEPTED or PRELIMINARY_CHECK; NOT_FOUND ("to_unit_id: unit N not
 * found") when to_kind is UNSPECIFIED (no such unit); INVALID_ARGUMENT unless the target is a
 * GROUP, ROOM or REGION other than the owner. A pending proposal does not block the handover:
 * the handover withdraws it (its reviewer was chosen for the old owner).
 */
authz_result_t authz_can_handover(const authz_principal_t *p, const authz_clue_t *c,
                                  int64_t to_unit_id, clue_unit_kind_t to_kind);

/**
 * May p extend the current stage's deadline? NOT_FOUND if hidden; DENIED unless a LEADER of
 * the owner unit; FAILED_PRECONDITION in a terminal state or when already extended once.
 */
authz_result_t authz_can_extend_deadline(const authz_principal_t *p, const authz_clue_t *c);

/** May p open a joint case (led by p's unit)? A LEADER of a ROOM only (else DENIED). */
authz_result_t authz_can_create_case(const authz_principal_t *p);

/** May p see the joint case? Its lead unit and participants, and AUDITORs; else NOT_FOUND. */
authz_result_t authz_can_see_case(const authz_principal_t *p, const authz_case_t *jc);

/**
 * May p change the joint case (participants, clues)? NOT_FOUND if p does not see it; DENIED
 * unless a LEADER of the lead room.
 */
authz_result_t authz_can_manage_case(const authz_principal_t *p, const authz_case_t *jc);

/**
 * May p put the clue into the joint case (CreateJointCase, AddClueToCase)? Only by consent
 * (DESIGN.md §3): NOT_FOUND if p does not see the case, then if p does not see the clue;
 * DENIED unless p is a LEADER of the clue's owner unit, or of the case's lead room when that
 * room owns the clue or is the owner group's liaison room (sight through a joint case or a
 * pending review never suffices); FAILED_PRECONDITION if the clue is already in a joint case,
 * in a terminal state, or has a pending proposal (whose reviewer would change under it).
 * Making the owner a participant never lets a clue in.
 */
authz_result_t authz_can_add_clue_to_case(const authz_principal_t *p, const authz_case_t *jc,
                                          const authz_clue_t *c);

/**
 * May p take the clue out of the joint case (RemoveClueFromCase)? A LEADER of the clue's
 * owner unit, who needs not see the case when the clue is in it (in_this_case), or a LEADER
 * of the lead room. NOT_FOUND if p sees neither the case (case message) nor, then, the clue
 * (clue message); DENIED for anyone else; FAILED_PRECONDITION when the clue is not in this
 * case, is in a terminal state (a concluded clue stays on the case's record) or has a
 * pending proposal.
 */
authz_result_t authz_can_remove_clue_from_case(const authz_principal_t *p, const authz_case_t *jc,
                                               const authz_clue_t *c, bool in_this_case);

/**
 * May the unit be a participant of the joint case? NOT_FOUND, naming field (e.g. "unit_id",
 * "participant_unit_ids"), when no unit has the id (kind UNSPECIFIED); INVALID_ARGUMENT when
 * none is named, or unless it is a GROUP, ROOM or REGION other than the lead room.
 */
authz_result_t authz_case_participant_ok(const authz_case_t *jc, const char *field, int64_t unit_id,
                                         clue_unit_kind_t kind);

/**
 * May p assign user u as a handler (承办人) of the clue? INVALID_ARGUMENT if u->user_id is 0 or
 * negative; NOT_FOUND if p does not see the clue; DENIED unless p is a LEADER of the owner
 * unit or of the lead room of the clue's joint case (FAILED_PRECONDITION instead, naming the
 * recusals, for staff of the owner unit when every leader of it is recused);
 * FAILED_PRECONDITION in a terminal state; NOT_FOUND ("user_id: user N not found") when u
 * does not exist; INVALID_ARGUMENT unless u is an active MEMBER or LEADER of a GROUP, ROOM or
 * REGION (of any unit: no consent of u's own leader is needed); FAILED_PRECONDITION when u is
 * recused from the clue or already a handler.
 */
authz_result_t authz_can_assign(const authz_principal_t *p, const authz_clue_t *c,
                                const authz_user_t *u);

/**
 * May p end user u's assignment to the clue? As authz_can_assign() up to the permission
 * (whoever may assign may unassign, in any state); then NOT_FOUND for a missing user and
 * FAILED_PRECONDITION unless u is a handler of the clue.
 */
authz_result_t authz_can_unassign(const authz_principal_t *p, const authz_clue_t *c,
                                  const authz_user_t *u);

/**
 * May p record that user u is recused (回避) from the clue? INVALID_ARGUMENT if u->user_id is 0
 * or negative (the service puts p's own id for "myself"); NOT_FOUND if p does not see the clue;
 * DENIED for an AUDITOR, and unless u is p (a declaration) or p is a LEADER of u's unit, of the
 * owner unit or of the lead room of the clue's joint case; NOT_FOUND when u does not exist;
 * DENIED when u belongs to a unit that oversees the clue (the owner's liaison room, the case's
 * lead room, the pending proposal's reviewer: not the owner itself) and p is neither u nor a
 * LEADER of u's unit; INVALID_ARGUMENT unless u is an active (not disabled) MEMBER or LEADER
 * of a GROUP, ROOM or REGION (only they work on clues); FAILED_PRECONDITION when u is already
 * recused. Any state.
 */
authz_result_t authz_can_recuse(const authz_principal_t *p, const authz_clue_t *c,
                                const authz_user_t *u);

/**
 * Does p see the assignments of its own unit's users to any clue (ListAssignments), even to a
 * clue p does not see? A LEADER of a working unit: no consent is asked of it when its users
 * are seconded, so it sees where they are. (Everyone sees their own assignments and those on
 * the clues they see; an AUDITOR every one.)
 */
bool authz_sees_unit_assignments(const authz_principal_t *p);

/** May p list recusals (ListRecusals)? LEADERs of working units and AUDITORs (else DENIED). */
authz_result_t authz_can_list_recusals(const authz_principal_t *p);

/**
 * Can the unit chosen to review a proposal on the clue act on it? FAILED_PRECONDITION, naming
 * the recusals, when every LEADER of it is recused from the clue (nobody could review).
 */
authz_result_t authz_reviewer_can_act(bool reviewer_leaders_recused);

/** May p read the whole audit trail (ListAuditEvents, VerifyAuditChain)? AUDITOR and ADMIN. */
authz_result_t authz_can_read_all_audit(const authz_principal_t *p);

/** May p call AdminService? ADMIN only (else DENIED). */
authz_result_t authz_is_admin(const authz_principal_t *p);

/**
 * May a user of this role belong to a unit of this kind (CreateUser)? MEMBER and LEADER:
 * GROUP, ROOM or REGION; ADMIN: an ADMIN unit; AUDITOR: any unit. INVALID_ARGUMENT otherwise.
 */
authz_result_t authz_role_fits_unit(clue_role_t role, clue_unit_kind_t kind);

/**
 * May a unit of this kind be a GROUP's liaison room (CreateUnit)? Only a ROOM; kind
 * UNSPECIFIED stands for a unit that does not exist. INVALID_ARGUMENT otherwise.
 */
authz_result_t authz_liaison_fits(clue_unit_kind_t kind);

/**
 * Does p see every field of an audit event about subject_type ("clue", "case", "unit",
 * "user") with this action ("clue.submit", ...)? AUDITORs, and MEMBERs and LEADERs (who see
 * only their clues' events), see all, except that a `clue.recuse` event is whole only for
 * those who may list recusals (authz_can_list_recusals(): LEADERs and AUDITORs). An ADMIN
 * sees unit, user and token events (token events are the user's) whole. Of any other event a
 * viewer sees only seq, time, actor, action, subject and states, never reason, details or
 * hashes (separation of duties, DESIGN.md §4). Fails closed: an unknown role or a NULL
 * argument sees no more.
 */
bool authz_audit_event_whole(const authz_principal_t *p, const char *subject_type,
                             const char *action);

#endif
