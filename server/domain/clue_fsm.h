#ifndef CLUED_DOMAIN_CLUE_FSM_H
#define CLUED_DOMAIN_CLUE_FSM_H

/* The clue state machine of DESIGN.md §2, as one table of data.
 *
 * clue_fsm_table holds every legal move of an existing clue; anything not in it is refused
 * with FAILED_PRECONDITION. The server and the tests read the same table. Submission
 * (nothing -> ACCEPTED) is not a move of an existing clue: see authz_can_submit() and
 * CLUE_STATE_INITIAL.
 *
 * The enums below are numerically equal to the proto enums of clue/v1/common.proto and
 * clue/v1/clue.proto (ClueState, Disposal, UnitKind, Role), so the service layer may cast
 * between them; unit tests check the equality against the generated code. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/validate.h"

/** Error codes of this module. */
enum {
  CLUE_FSM_OK = 0,
  CLUE_FSM_EINVAL = -1, /* unknown name, or a required field is missing */
  CLUE_FSM_ENOSPC = -2, /* the message did not fit the buffer (it was truncated) */
};

/** States of a clue (= clue.v1.ClueState). */
typedef enum clue_state {
  CLUE_STATE_UNSPECIFIED = 0,
  CLUE_STATE_ACCEPTED = 1,                /* 受理 */
  CLUE_STATE_PRELIMINARY_CHECK = 2,       /* 初核 */
  CLUE_STATE_FILED = 3,                   /* 立案 */
  CLUE_STATE_CLOSED = 4,                  /* 了结 / 结案, terminal */
  CLUE_STATE_TRANSFERRED_TO_JUDICIAL = 5, /* 移送司法机关, terminal */
} clue_state_t;

/** Number of clue_state_t values, 0..5, UNSPECIFIED included. */
#define CLUE_STATE_COUNT 6
/** The state a submitted clue starts in. */
#define CLUE_STATE_INITIAL CLUE_STATE_ACCEPTED

/** Disposal of a clue closed from ACCEPTED (= clue.v1.Disposal). */
typedef enum clue_disposal {
  CLUE_DISPOSAL_UNSPECIFIED = 0,
  CLUE_DISPOSAL_TALK_OR_LETTER_INQUIRY = 1, /* 谈话函询 */
  CLUE_DISPOSAL_NO_FURTHER_ACTION = 2,      /* 予以了结 */
  CLUE_DISPOSAL_SHELVED = 3,                /* 暂存待查 */
} clue_disposal_t;

/** Kinds of unit (= clue.v1.UnitKind). */
typedef enum clue_unit_kind {
  CLUE_UNIT_UNSPECIFIED = 0,
  CLUE_UNIT_ROOM = 1,   /* 监督检查室 */
  CLUE_UNIT_GROUP = 2,  /* 派驻纪检监察组 */
  CLUE_UNIT_REGION = 3, /* 地方纪委监委 */
  CLUE_UNIT_ADMIN = 4,  /* 管理 */
} clue_unit_kind_t;

/** Roles of a user (= clue.v1.Role). */
typedef enum clue_role {
  CLUE_ROLE_UNSPECIFIED = 0,
  CLUE_ROLE_MEMBER = 1,
  CLUE_ROLE_LEADER = 2,
  CLUE_ROLE_AUDITOR = 3,
  CLUE_ROLE_ADMIN = 4,
} clue_role_t;

/** Facts a move must carry (DESIGN.md §2 "must carry"), as bits of clue_move_t.required. */
typedef enum clue_field {
  CLUE_FIELD_REASON = 1u << 0,   /* "reason" */
  CLUE_FIELD_DISPOSAL = 1u << 1, /* "details.disposal" */
  CLUE_FIELD_FINDING = 1u << 2,  /* "details.finding" */
  CLUE_FIELD_OUTCOME = 1u << 3,  /* "details.sanction_kind" + "details.persons_disciplined" */
  CLUE_FIELD_RECEIVING_ORGAN = 1u << 4, /* "details.receiving_organ" */
} clue_field_t;

/** One legal move: a row of the state-machine table. */
typedef struct clue_move {
  clue_state_t from;
  clue_state_t to;
  const char *action;     /* stable name for logs and audit details, e.g. "file_case" */
  clue_role_t actor_role; /* who acts, always of the owner unit */
  bool co_review;         /* the move becomes a proposal that another unit's leader reviews */
  unsigned required;      /* clue_field_t bits */
} clue_move_t;

/** The table of legal moves, in DESIGN.md §2 order. */
extern const clue_move_t clue_fsm_table[];

/** Number of rows in clue_fsm_table. */
extern const size_t clue_fsm_table_len;

/** The row for from -> to (a pointer into clue_fsm_table, never freed), or NULL if not allowed. */
const clue_move_t *clue_fsm_find(clue_state_t from, clue_state_t to);

/**
 * The states reachable in one move from `from`, in table order, stored into out[0..cap).
 * Returns how many there are (which may exceed cap; only cap are stored). out may be NULL
 * when cap is 0.
 */
size_t clue_fsm_targets(clue_state_t from, clue_state_t *out, size_t cap);

/** True for CLOSED and TRANSFERRED_TO_JUDICIAL. */
bool clue_state_is_terminal(clue_state_t s);

/** True for the five real states (ACCEPTED .. TRANSFERRED_TO_JUDICIAL), false for UNSPECIFIED. */
bool clue_state_is_valid(clue_state_t s);

/** The state's upper-case name without prefix ("PRELIMINARY_CHECK"); "UNKNOWN" if out of range. */
const char *clue_state_name(clue_state_t s);

/**
 * Parse a state name: case-insensitive, with or without the proto prefix "CLUE_STATE_"
 * ("filed", "CLUE_STATE_FILED"). UNSPECIFIED is not accepted. Returns 0 and sets *out, or
 * CLUE_FSM_EINVAL (out untouched).
 */
int clue_state_from_name(const char *name, clue_state_t *out) __attribute__((warn_unused_result));

/** The disposal's name ("TALK_OR_LETTER_INQUIRY"); "UNKNOWN" if out of range. */
const char *clue_disposal_name(clue_disposal_t d);

/** True for the three real disposals. */
bool clue_disposal_is_valid(int d);

/** The unit kind's name ("GROUP"); "UNKNOWN" if out of range. */
const char *clue_unit_kind_name(clue_unit_kind_t k);

/** The role's name ("LEADER"); "UNKNOWN" if out of range. */
const char *clue_role_name(clue_role_t r);

/** A buffer size that fits every message clue_fsm_refusal() builds. */
#define CLUE_FSM_MSG_MAX 192

/**
 * The FAILED_PRECONDITION message for a refused move from -> to, naming the current state
 * and the moves allowed from it:
 *   "clue is CLOSED, a terminal state; no moves are allowed"
 *   "cannot move from ACCEPTED to FILED; allowed from ACCEPTED: PRELIMINARY_CHECK, CLOSED"
 * Writes a NUL-terminated message into buf[0..len). Returns 0, or CLUE_FSM_ENOSPC if it was
 * truncated (CLUE_FSM_MSG_MAX bytes always suffice).
 */
int clue_fsm_refusal(clue_state_t from, clue_state_t to, char *buf, size_t len);

/** What a move request supplied (RequestTransitionRequest.reason and .details). */
typedef struct clue_move_facts {
  const char *reason; /* NULL counts as empty */
  int disposal;       /* clue_disposal_t; 0 when not given */
  const char *finding;
  const char *sanction_kind;
  int32_t persons_disciplined; /* may be 0: nobody disciplined */
  const char *receiving_organ;
} clue_move_facts_t;

/**
 * The first required field of move that facts lack or get wrong, as a clue_field_t bit, or 0
 * when all are there. Text must be non-blank; disposal one of the three; persons_disciplined
 * not negative. Fields the move does not need are ignored.
 */
unsigned clue_fsm_missing_field(const clue_move_t *move, const clue_move_facts_t *facts);

/**
 * As clue_fsm_missing_field(), with an INVALID_ARGUMENT message naming the request field:
 *   "reason is required"
 *   "details.disposal is required when closing from ACCEPTED"
 *   "details.receiving_organ is required when moving from FILED to TRANSFERRED_TO_JUDICIAL"
 * Returns 0, or CLUE_FSM_EINVAL with *err filled (when err is not NULL).
 */
int clue_fsm_check_fields(const clue_move_t *move, const clue_move_facts_t *facts,
                          validate_error_t *err) __attribute__((warn_unused_result));

/** Stage deadlines in days (server settings); 0 or less means the stage has no deadline. */
typedef struct clue_deadline_config {
  int accepted_days; /* to a disposal decision */
  int preliminary_check_days;
  int filed_days;
} clue_deadline_config_t;

/** Default stage deadlines in days (DESIGN.md §2 "Stage deadlines"). */
#define CLUE_DEADLINE_ACCEPTED_DAYS 30
#define CLUE_DEADLINE_PRELIMINARY_CHECK_DAYS 90
#define CLUE_DEADLINE_FILED_DAYS 90
/** One day in milliseconds. */
#define CLUE_DAY_MS INT64_C(86400000)

/** Fill cfg with the defaults (30, 90, 90 days). */
void clue_deadline_config_default(clue_deadline_config_t *cfg);

/**
 * Days allowed in `state`, counted from entering it: from cfg, or the defaults when cfg is
 * NULL. 0 for terminal, UNSPECIFIED and out-of-range states (no deadline).
 */
int clue_stage_deadline_days(const clue_deadline_config_t *cfg, clue_state_t state);

/**
 * The deadline (ms since the epoch) of a stage entered at entered_at_ms, or 0 when the stage
 * has none.
 */
int64_t clue_stage_deadline_ms(const clue_deadline_config_t *cfg, clue_state_t state,
                               int64_t entered_at_ms);

/**
 * Days left until deadline_ms at now_ms, rounded down (negative once past it), and whether
 * the clue is overdue (now is after the deadline). A deadline of 0 (none) gives 0 and false.
 */
void clue_deadline_status(int64_t deadline_ms, int64_t now_ms, int32_t *days_left, bool *overdue);

#endif
