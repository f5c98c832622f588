#ifndef CLUED_DOMAIN_RECT_H
#define CLUED_DOMAIN_RECT_H

/* The rectification ledger (督促整改台账, docs/LEDGER.md): its state machine as one table of
 * data, and who may see, record and move an item, as pure functions over facts.
 *
 * rect_fsm_table holds every legal move of an existing item; anything not in it is refused
 * with FAILED_PRECONDITION, naming the current state and the moves allowed from it. Creation
 * (nothing -> OPEN) is rect_can_create()'s, not a move.
 *
 * The enums are numerically equal to clue.v1.RectificationState and RectificationSource, so
 * the service casts between them; the unit tests check the equality against generated code.
 *
 * Order of checks, as in authz.h: visibility (NOT_FOUND, with the message of a missing item),
 * then permission (PERMISSION_DENIED), then the state (FAILED_PRECONDITION). Every function
 * fails closed on NULL facts, unknown roles and unit kinds, and unit id 0. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/authz.h"

/** States of an item (= clue.v1.RectificationState). */
typedef enum rect_state {
  RECT_STATE_UNSPECIFIED = 0,
  RECT_STATE_OPEN = 1,
  RECT_STATE_PLAN_RECORDED = 2,
  RECT_STATE_SUBMITTED = 3,
  RECT_STATE_VERIFIED = 4, /* terminal */
  RECT_STATE_REOPENED = 5,
} rect_state_t;

/** Number of rect_state_t values, UNSPECIFIED included. */
#define RECT_STATE_COUNT 6

/** Where an item was found (= clue.v1.RectificationSource). */
typedef enum rect_source {
  RECT_SOURCE_UNSPECIFIED = 0,
  RECT_SOURCE_CLUE = 1,
  RECT_SOURCE_CASE = 2,
  RECT_SOURCE_SUPERVISION = 3,
} rect_source_t;

/** What a move must carry, as bits of rect_move_t.required. */
enum {
  RECT_FIELD_PLAN = 1u << 0,     /* "plan" */
  RECT_FIELD_EVIDENCE = 1u << 1, /* "evidence" */
  RECT_FIELD_REASON = 1u << 2,   /* "reason" */
};

/** One legal move: a row of the table. */
typedef struct rect_move {
  rect_state_t from;
  rect_state_t to;
  const char *action;     /* the RPC and audit action suffix: "record_plan" -> rect.record_plan */
  clue_role_t actor_role; /* the least role of the supervising unit: MEMBER (or LEADER) */
  unsigned required;      /* RECT_FIELD_* bits */
} rect_move_t;

/** The table of legal moves. */
extern const rect_move_t rect_fsm_table[];
/** Rows of rect_fsm_table. */
extern const size_t rect_fsm_table_len;

/** The row for from -> to, or NULL if not allowed. */
const rect_move_t *rect_fsm_find(rect_state_t from, rect_state_t to);

/** The states reachable in one move from `from` into out[0..cap); returns how many exist. */
size_t rect_fsm_targets(rect_state_t from, rect_state_t *out, size_t cap);

/** What every move to target must carry (RECT_FIELD_* bits of the rows reaching it). */
unsigned rect_fsm_required(rect_state_t target);

/** True for VERIFIED. */
bool rect_state_is_terminal(rect_state_t s);

/** True for the five real states. */
bool rect_state_is_valid(int s);

/** True for the three real sources. */
bool rect_source_is_valid(int s);

/** "PLAN_RECORDED"; "UNKNOWN" if out of range. */
const char *rect_state_name(rect_state_t s);

/** "SUPERVISION"; "UNKNOWN" if out of range. */
const char *rect_source_name(rect_source_t s);

/** The state of a database name ("OPEN"), or UNSPECIFIED. */
rect_state_t rect_state_of(const char *name);

/** The source of a database name ("CLUE"), or UNSPECIFIED. */
rect_source_t rect_source_of(const char *name);

/**
 * The FAILED_PRECONDITION message for a refused move:
 *   "rectification item is VERIFIED, a terminal state; no moves are allowed"
 *   "cannot move from OPEN to SUBMITTED; allowed from OPEN: PLAN_RECORDED"
 * into buf[0..len), always terminated.
 */
void rect_fsm_refusal(rect_state_t from, rect_state_t to, char *buf, size_t len);

/** What authorization needs to know of an item, some of it relative to the caller. */
typedef struct rect_item_facts {
  int64_t supervising_unit_id;
  int64_t supervising_liaison_room_id; /* the supervising GROUP's liaison ROOM; 0 otherwise */
  bool principal_in_source_case;       /* the caller's unit leads or joins the source case */
  bool principal_recused;              /* the caller is recused (回避) from the source clue */
  rect_state_t state;
} rect_item_facts_t;

/** What authorization needs to know of an item's source when it is created. */
typedef struct rect_source_facts {
  rect_source_t source;
  bool exists;         /* the source clue or case exists (SUPERVISION: true) */
  bool visible;        /* the caller sees it (authz_can_see_clue / _case) */
  bool owned_or_in;    /* CLUE: the caller's unit owns it; CASE: leads or joins it */
  bool host_unit_ok;   /* SUPERVISION by a GROUP: host_unit is one of the group's host units */
} rect_source_facts_t;

/** NOT_FOUND message of an item. */
#define RECT_MSG_NOT_FOUND "rectification item not found"

/**
 * May p see the item? A MEMBER or LEADER of the supervising unit, of its liaison room, or of a
 * unit that leads or joins the source case; any AUDITOR. Otherwise NOT_FOUND. An item found in
 * a clue p is recused from is, for p, a missing item: that outweighs every reason to see it, as
 * for the clue itself (authz.h).
 */
authz_result_t rect_can_see(const authz_principal_t *p, const rect_item_facts_t *it);

/**
 * May p record an item from this source? DENIED unless p is a LEADER of a GROUP, ROOM or
 * REGION; NOT_FOUND ("source_clue_id: clue not found", "source_case_id: joint case not
 * found") when the source is missing or hidden; DENIED when a visible clue is not p's unit's
 * own; INVALID_ARGUMENT when a GROUP's supervision item names a host unit not its own.
 */
authz_result_t rect_can_create(const authz_principal_t *p, const rect_source_facts_t *src);

/**
 * May p move the item to target? INVALID_ARGUMENT if target is not a state; NOT_FOUND if
 * hidden; DENIED unless p has the move's role in the supervising unit (a target no move
 * reaches needs a LEADER); FAILED_PRECONDITION when the move is not in the table. On ALLOW
 * sets *move (when not NULL).
 */
authz_result_t rect_can_move(const authz_principal_t *p, const rect_item_facts_t *it,
                             rect_state_t target, const rect_move_t **move);

/** Bits of rect_scope(): which items p sees, for list queries. */
enum {
  RECT_SCOPE_ALL = 1u << 0,         /* every item (AUDITOR) */
  RECT_SCOPE_OWN_UNIT = 1u << 1,    /* supervising unit = p's unit */
  RECT_SCOPE_LIAISED = 1u << 2,     /* supervised by a GROUP whose liaison room is p's */
  RECT_SCOPE_SOURCE_CASE = 1u << 3, /* found in a joint case p's unit leads or joins */
  RECT_SCOPE_UNRECUSED = 1u << 4,   /* a restriction, not a source: none found in a clue p is
                                       recused from, whatever the bits above say */
};

/** Which items p sees, as RECT_SCOPE_* bits; agrees with rect_can_see() (tested). */
unsigned rect_scope(const authz_principal_t *p);

#endif
