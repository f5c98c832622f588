#include "service/audit_event.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/clue_fsm.h"
#include "net/grpc_wire.h"
#include "service/clue_scope.h"

/* ---- SQL ------------------------------------------------------------------------------ */

static const char *param_i64(audit_sql_t *q, int64_t v) {
  snprintf(q->num[q->n], sizeof(q->num[0]), "%lld", (long long)v);
  q->values[q->n] = q->num[q->n];
  return q->values[q->n++];
}

static void param_str(audit_sql_t *q, const char *s) {
  q->values[q->n++] = s;
}

__attribute__((format(printf, 2, 3))) static void cat(audit_sql_t *q, const char *fmt, ...) {
  size_t len = strlen(q->text);
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(q->text + len, sizeof(q->text) - len, fmt, ap);
  va_end(ap);
}

/* The events a page of a caller who does not see every clue starts with are looked for first
 * in a window of the log after the page's start: AUDIT_WINDOW_PER_ROW seqs per row asked for,
 * and AUDIT_WINDOW_PER_CLUE per clue the caller sees. Each event there costs a read by seq and
 * a lookup among the caller's clues; when the window cannot fill the page, the rest comes from
 * the caller's clues one by one, each a probe of the subject index, so the window is about as
 * long as those probes would cost (see audit_sql_build()). */
#define AUDIT_WINDOW_PER_ROW 8
#define AUDIT_WINDOW_PER_CLUE 4

void audit_sql_build(audit_sql_t *q, const audit_filter_t *f, int64_t after, int64_t bound,
                     int limit) {
  char filters[1024];
  int subject_param = 0, after_param, bound_param = 0, until_param = 0, limit_param;

  q->n = 0;
  q->text[0] = '\0';
  filters[0] = '\0';
#define FILTER(...)                                                                                \
  snprintf(filters + strlen(filters), sizeof(filters) - strlen(filters), __VA_ARGS__)
  param_i64(q, after);
  after_param = q->n;
  if (bound > 0) {
    param_i64(q, bound);
    bound_param = q->n;
    FILTER(" AND e.seq <= $%d", q->n);
  }
  if (f->until_seq > 0) {
    param_i64(q, f->until_seq);
    until_param = q->n;
    FILTER(" AND e.seq <= $%d", q->n);
  }
  if (f->subject_type && f->subject_type[0]) {
    param_str(q, f->subject_type);
    FILTER(" AND e.subject_type = $%d", q->n);
  }
  if (f->subject_id) {
    param_i64(q, f->subject_id);
    subject_param = q->n;
    FILTER(" AND e.subject_id = $%d", q->n);
  }
  if (f->actor_user_id) {
    param_i64(q, f->actor_user_id);
    FILTER(" AND e.actor_user_id = $%d", q->n);
  }
  if (f->actor_unit_id) {
    param_i64(q, f->actor_unit_id);
    FILTER(" AND e.actor_unit_id = $%d", q->n);
  }
  if (f->actor_token_id) {
    param_i64(q, f->actor_token_id);
    FILTER(" AND e.actor_token_id = $%d", q->n);
  }
  if (f->action && f->action[0]) {
    param_str(q, f->action);
    FILTER(" AND e.action = $%d", q->n);
  }
  /* Whole milliseconds compare exactly with the stored microseconds: at >= T ms holds iff
   * floor(at in ms) >= T, which is what audit_filter_match() tests on at_ms. */
  if (f->from_ms) {
    param_i64(q, f->from_ms);
    FILTER(" AND e.at >= timestamptz 'epoch' + $%d::bigint * interval '1 millisecond'", q->n);
  }
  if (f->to_ms) {
    param_i64(q, f->to_ms);
    FILTER(" AND e.at < timestamptz 'epoch' + $%d::bigint * interval '1 millisecond'", q->n);
  }
#undef FILTER
  if (f->all) {
    param_i64(q, limit);
    cat(q,
        "SELECT " AUDIT_EVENT_COLS " FROM audit_events e WHERE e.seq > $%d%s ORDER BY e.seq"
        " LIMIT $%d",
        after_param, filters, q->n);
    return;
  }
  param_i64(q, f->scope_unit);
  param_i64(q, f->scope_user);
  param_i64(q, limit);
  limit_param = q->n;
  if (f->subject_id) {
    /* One subject: its sight decided once, before any of its events is read (the condition
     * names no event), so that a hidden clue costs what a missing one does. */
    char cond[CLUE_SCOPE_SQL_MAX];
    /* The buffer fits every scope; were it not to, the caller would see nothing. */
    if (clue_scope_sql(f->clue_scope, "c", q->n - 2, q->n - 1, cond, sizeof(cond)) != 0)
      snprintf(cond, sizeof(cond), "false");
    cat(q,
        "SELECT " AUDIT_EVENT_COLS " FROM audit_events e WHERE e.seq > $%d%s"
        " AND e.subject_type = 'clue' AND EXISTS (SELECT 1 FROM clues c WHERE c.id = $%d AND %s)"
        " ORDER BY e.seq LIMIT $%d",
        after_param, filters, subject_param, cond, limit_param);
    return;
  }
  /* The events of the clues the caller sees (v), in seq order, without reading other units'
   * events beyond a window: the first events after the page's start, up to seq hi (b), are
   * read in order and kept when their clue is in v (w); should they not fill the page, each of
   * the caller's clues gives its first events after hi by the subject index, and the page is
   * the first of both. So a page costs what the caller sees and the window, however long the
   * log of everyone else is. The membership test is written so that PostgreSQL keeps it a
   * hashed test on the ordered scan: an IN at the top of WHERE would become a join it may
   * order otherwise (reading the whole range, or every clue), and a set it guessed too large
   * to hash would be searched row by row for every event; the set from unnest() of an array
   * is guessed small, and the table is built for the size it has. */
  {
    char ids[CLUE_SCOPE_SQL_MAX], gate[96] = "";
    if (clue_scope_ids_sql(f->clue_scope, q->n - 2, q->n - 1, ids, sizeof(ids)) != 0)
      snprintf(ids, sizeof(ids), "SELECT NULL::bigint AS id WHERE false");
    /* Past an upper bound on seq, the clues need not be asked. */
    if (bound_param)
      snprintf(gate + strlen(gate), sizeof(gate) - strlen(gate), " AND (SELECT hi FROM b) < $%d",
               bound_param);
    if (until_param)
      snprintf(gate + strlen(gate), sizeof(gate) - strlen(gate), " AND (SELECT hi FROM b) < $%d",
               until_param);
    cat(q,
        "WITH v AS MATERIALIZED (%s),"
        " b AS (SELECT least($%d::bigint::numeric + %d * count(*) + %d * $%d::bigint,"
        " 9223372036854775807)::bigint AS hi FROM v),"
        " w AS MATERIALIZED (SELECT e.seq FROM audit_events e WHERE e.seq > $%d"
        " AND e.seq <= (SELECT hi FROM b)%s AND e.subject_type = 'clue'"
        " AND (e.subject_id IN (SELECT unnest(ARRAY(SELECT id FROM v)))) IS TRUE"
        " ORDER BY e.seq LIMIT $%d),"
        " p AS (SELECT seq FROM w UNION ALL SELECT x.seq FROM v CROSS JOIN LATERAL"
        " (SELECT e.seq FROM audit_events e WHERE e.subject_type = 'clue' AND e.subject_id = v.id"
        " AND e.seq > (SELECT hi FROM b)%s ORDER BY e.seq LIMIT $%d) x"
        " WHERE (SELECT count(*) FROM w) < $%d%s ORDER BY 1 LIMIT $%d)"
        " SELECT " AUDIT_EVENT_COLS " FROM audit_events e"
        " WHERE e.seq = ANY (ARRAY(SELECT seq FROM p)) ORDER BY e.seq",
        ids, after_param, AUDIT_WINDOW_PER_CLUE, AUDIT_WINDOW_PER_ROW, limit_param, after_param,
        filters, limit_param, filters, limit_param, limit_param, gate, limit_param);
  }
}

bool audit_filter_match(const audit_filter_t *f, const audit_ev_t *ev) {
  if (f->until_seq > 0 && ev->seq > f->until_seq)
    return false;
  if (f->subject_type && f->subject_type[0] && strcmp(f->subject_type, ev->subject_type) != 0)
    return false;
  if (f->subject_id && f->subject_id != ev->subject_id)
    return false;
  if (f->actor_user_id && f->actor_user_id != ev->actor_user_id)
    return false;
  if (f->actor_unit_id && f->actor_unit_id != ev->actor_unit_id)
    return false;
  if (f->actor_token_id && f->actor_token_id != ev->actor_token_id)
    return false;
  if (f->action && f->action[0] && strcmp(f->action, ev->action) != 0)
    return false;
  if (f->from_ms && ev->at_ms < f->from_ms)
    return false;
  if (f->to_ms && ev->at_ms >= f->to_ms)
    return false;
  /* Only clue events can be in a clue scope; which clues, the database says. */
  if (!f->all && strcmp(ev->subject_type, "clue") != 0)
    return false;
  return true;
}

/* ---- events --------------------------------------------------------------------------- */

/* Decode hex (encode(..., 'hex') output) into out; returns the byte count. */
static size_t unhex(const char *hex, uint8_t *out) {
  size_t n = 0;
  for (; hex[0] && hex[1]; hex += 2) {
    int hi = grpc_hex_digit(hex[0]), lo = grpc_hex_digit(hex[1]);
    if (hi < 0 || lo < 0)
      break;
    out[n++] = (uint8_t)(hi << 4 | lo);
  }
  return n;
}

static int64_t col_i64(const db_result_t *r, int row, int col) {
  const char *v = db_value(r, row, col);
  return v ? strtoll(v, NULL, 10) : 0;
}

static int col_state(const db_result_t *r, int row, int col) {
  const char *v = db_value(r, row, col);
  clue_state_t s = CLUE_STATE_UNSPECIFIED;
  if (v && clue_state_from_name(v, &s) != 0)
    s = CLUE_STATE_UNSPECIFIED;
  return (int)s;
}

int audit_ev_from_row(const db_result_t *r, int row, int col0, audit_ev_t **out) {
  /* Text columns, copied with their NUL; then the two hashes. */
  static const int text_cols[] = {4, 5, 9, 10, 14, 15, 16, 7, 8};
  enum { NTEXTS = sizeof(text_cols) / sizeof(text_cols[0]) };
  const char *texts[NTEXTS];
  size_t lens[NTEXTS], total = 0;
  const char *prev_hex = db_value(r, row, col0 + 11), *hash_hex = db_value(r, row, col0 + 12);
  size_t prev_max = prev_hex ? strlen(prev_hex) / 2 : 0,
         hash_max = hash_hex ? strlen(hash_hex) / 2 : 0;
  audit_ev_t *ev;
  char *p;
  Clue__V1__AuditEvent msg;

  for (int i = 0; i < NTEXTS; i++) {
    texts[i] = db_value(r, row, col0 + text_cols[i]);
    if (texts[i] == NULL)
      texts[i] = "";
    lens[i] = strlen(texts[i]) + 1;
    total += lens[i];
  }
  ev = malloc(sizeof(*ev) + total + prev_max + hash_max);
  if (ev == NULL)
    return -ENOMEM;
  ev->seq = col_i64(r, row, col0 + 0);
  ev->at_ms = col_i64(r, row, col0 + 1);
  ev->actor_user_id = col_i64(r, row, col0 + 2);
  ev->actor_unit_id = col_i64(r, row, col0 + 3);
  ev->actor_token_id = col_i64(r, row, col0 + 13);
  ev->subject_id = col_i64(r, row, col0 + 6);
  ev->from_state = col_state(r, row, col0 + 7);
  ev->to_state = col_state(r, row, col0 + 8);
  p = ev->data;
  for (int i = 0; i < NTEXTS; i++) {
    memcpy(p, texts[i], lens[i]);
    texts[i] = p;
    p += lens[i];
  }
  ev->action = texts[0];
  ev->subject_type = texts[1];
  ev->reason = texts[2];
  ev->details = texts[3];
  ev->actor_user_name = texts[4];
  ev->actor_unit_code = texts[5];
  ev->actor_unit_name = texts[6];
  ev->from_state_name = texts[7];
  ev->to_state_name = texts[8];
  ev->prev_hash = (const uint8_t *)p;
  ev->prev_hash_len = prev_hex ? unhex(prev_hex, (uint8_t *)p) : 0;
  p += prev_max;
  ev->hash = (const uint8_t *)p;
  ev->hash_len = hash_hex ? unhex(hash_hex, (uint8_t *)p) : 0;
  audit_ev_to_msg(NULL, ev, &msg); /* every field: an upper bound for any viewer */
  ev->wire_size = protobuf_c_message_get_packed_size(&msg.base) + GRPC_FRAME_PREFIX;
  *out = ev;
  return 0;
}

void audit_ev_to_msg(const audit_filter_t *f, const audit_ev_t *ev, Clue__V1__AuditEvent *msg) {
  clue__v1__audit_event__init(msg);
  msg->seq = ev->seq;
  msg->at_ms = ev->at_ms;
  msg->actor_user_id = ev->actor_user_id;
  msg->actor_unit_id = ev->actor_unit_id;
  msg->actor_token_id = ev->actor_token_id;
  msg->actor_user_name = (char *)ev->actor_user_name;
  msg->actor_unit_code = (char *)ev->actor_unit_code;
  msg->actor_unit_name = (char *)ev->actor_unit_name;
  /* protobuf-c's string fields are not const; packing only reads them. */
  msg->action = (char *)ev->action;
  msg->subject_type = (char *)ev->subject_type;
  msg->subject_id = ev->subject_id;
  msg->from_state = (Clue__V1__ClueState)ev->from_state;
  msg->to_state = (Clue__V1__ClueState)ev->to_state;
  msg->from_state_name = (char *)ev->from_state_name;
  msg->to_state_name = (char *)ev->to_state_name;
  msg->reason = (char *)ev->reason;
  msg->details_json = (char *)ev->details;
  msg->prev_hash.data = (uint8_t *)ev->prev_hash;
  msg->prev_hash.len = ev->prev_hash_len;
  msg->hash.data = (uint8_t *)ev->hash;
  msg->hash.len = ev->hash_len;
  if (f != NULL && !authz_audit_event_whole(&f->viewer, ev->subject_type, ev->action)) {
    /* The hashes go too: with every other field known, a hash would confirm a guess of the
     * withheld text (a subject's name, say). */
    msg->reason = (char *)"";
    msg->details_json = (char *)"";
    msg->prev_hash.data = NULL;
    msg->prev_hash.len = 0;
    msg->hash.data = NULL;
    msg->hash.len = 0;
  }
}
