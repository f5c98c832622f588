#ifndef CLUED_SERVICE_AUDIT_EVENT_H
#define CLUED_SERVICE_AUDIT_EVENT_H

/* Audit events as AuditService reads them: which events a request selects (one filter,
 * turned into SQL for the database and into a predicate for events held in memory, the two
 * agreeing), and one event copied out of a query result. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clue/v1/common.pb-c.h"
#include "db/db.h"
#include "domain/authz.h"

/** Which events a caller asked for and may see; zero / NULL fields do not filter. */
typedef struct audit_filter {
  const char *subject_type; /* with subject_id: one chain */
  int64_t subject_id;
  int64_t actor_user_id;
  int64_t actor_unit_id;
  int64_t actor_token_id;
  const char *action;
  int64_t from_ms;   /* at >= from_ms */
  int64_t to_ms;     /* at < to_ms */
  int64_t until_seq; /* seq <= until_seq */
  /* Visibility: every event (all), or only the events of the clues that user scope_user of
   * unit scope_unit sees under clue_scope (authz_clue_scope() bits). */
  bool all;
  unsigned clue_scope;
  int64_t scope_unit;
  int64_t scope_user;
  /* Who reads: which fields of an event they see (authz_audit_event_whole()). */
  authz_principal_t viewer;
} audit_filter_t;

/** The columns audit_ev_from_row() reads, in order; the table is aliased "e". A time no bigint
 * holds ('infinity', a superuser's) reads as NULL rather than failing the statement. */
#define AUDIT_EVENT_COLS                                                                           \
  "e.seq, CASE WHEN abs(extract(epoch FROM e.at)) < 9e12"                                          \
  " THEN floor(extract(epoch FROM e.at) * 1000)::bigint END, e.actor_user_id, e.actor_unit_id, "   \
  "e.action, e.subject_type, e.subject_id, e.from_state, e.to_state, e.reason, e.details, "        \
  "encode(e.prev_hash, 'hex'), encode(e.hash, 'hex'), e.actor_token_id, "                          \
  "(SELECT au.name FROM users au WHERE au.id = e.actor_user_id), "                                 \
  "(SELECT an.code FROM units an WHERE an.id = e.actor_unit_id), "                                 \
  "(SELECT an.name FROM units an WHERE an.id = e.actor_unit_id)"
#define AUDIT_EVENT_NCOLS 17

/** Most parameters audit_sql_build() uses. */
#define AUDIT_SQL_MAX_PARAMS 14

/** One parameterized SELECT of events; values point into the struct (do not copy it). */
typedef struct audit_sql {
  char text[8192];
  const char *values[AUDIT_SQL_MAX_PARAMS];
  char num[AUDIT_SQL_MAX_PARAMS][24];
  int n;
} audit_sql_t;

/**
 * Build into q the SELECT of AUDIT_EVENT_COLS (table aliased "e") of the first limit events
 * after seq after [and up to seq bound] that f selects, in seq order (bound 0: none). For a
 * filter that is not "all" and names no subject, the statement starts from the clues the
 * viewer sees (clue_scope_ids_sql()), so that its cost follows what they see, not the log.
 */
void audit_sql_build(audit_sql_t *q, const audit_filter_t *f, int64_t after, int64_t bound,
                     int limit);

/** One event, in one allocation (free with free()). */
typedef struct audit_ev {
  int64_t seq, at_ms, actor_user_id, actor_unit_id, actor_token_id, subject_id;
  int from_state, to_state; /* Clue__V1__ClueState */
  const char *action, *subject_type, *reason, *details;
  const char *actor_user_name, *actor_unit_code, *actor_unit_name;
  const char *from_state_name, *to_state_name; /* as logged, any subject's; "" for none */
  const uint8_t *prev_hash, *hash;
  size_t prev_hash_len, hash_len;
  size_t wire_size; /* bytes on the call: the packed message and the 5-byte frame prefix */
  char data[];      /* the strings and hashes above */
} audit_ev_t;

/**
 * Copy row of r (AUDIT_EVENT_COLS starting at column col0) into a new event. Returns 0 and
 * sets *out (the caller owns it), or -ENOMEM.
 */
int audit_ev_from_row(const db_result_t *r, int row, int col0, audit_ev_t **out)
    __attribute__((warn_unused_result));

/**
 * Fill msg (initialised here) to describe ev as f's viewer may see it: the one place that
 * withholds reason, details and hashes from an ADMIN reading clue-side events (ListAuditEvents
 * and WatchEvents both build their messages here). f NULL: every field (for sizing). msg
 * points into ev and lives no longer.
 */
void audit_ev_to_msg(const audit_filter_t *f, const audit_ev_t *ev, Clue__V1__AuditEvent *msg);

/**
 * True if the filter selects ev: the same test the SQL of audit_sql_build() makes, except
 * the clue scope of a filter that is not "all" (that needs the clues table: only the
 * subject type is checked here, and the caller learns the rest from the database).
 */
bool audit_filter_match(const audit_filter_t *f, const audit_ev_t *ev);

#endif
