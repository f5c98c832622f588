/* clue.v1.AuditService: listing and verifying the audit trail; WatchEvents lives in
 * audit_watch.c. */

#include "service/audit.h"

#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <string.h>

#include "clue/v1/audit.pb-c.h"
#include "domain/authz.h"
#include "domain/validate.h"
#include "service/audit_proof.h"
#include "service/audit_watch.h"
#include "service/clue_row.h"
#include "service/common.h"
#include "service/replica.h"
#include "service/svc_util.h"

/* Subject types and actions are short identifiers ("clue", "clue.transition"). */
#define AUDIT_NAME_MAX 64

void audit_visibility(const rpc_principal_t *p, audit_filter_t *f) {
  authz_principal_t a = clue_principal_of(p);
  authz_result_t all = authz_can_read_all_audit(&a);

  f->all = authz_ok(&all);
  f->clue_scope = f->all ? AUTHZ_SCOPE_ALL : authz_clue_scope(&a);
  f->scope_unit = a.unit_id;
  f->scope_user = a.user_id;
  f->viewer = a;
}

static void not_negative(validate_errors_t *e, const char *field, int64_t v) {
  char msg[VALIDATE_MESSAGE_MAX];

  if (v < 0) {
    snprintf(msg, sizeof(msg), "%s must not be negative", field);
    validate_add(e, field, msg);
  }
}

/* The subject types audit_append() is called with (migrations); "" is none. */
static const char *const subject_types[] = {"", "clue", "case", "rectification", "unit", "user"};
#define SUBJECT_TYPES_KNOWN "one of clue, case, rectification, unit, user"

void audit_subject_violations(validate_errors_t *e, const char *subject_type, int64_t subject_id) {
  char msg[VALIDATE_MESSAGE_MAX];
  size_t i, n = sizeof(subject_types) / sizeof(subject_types[0]);

  if (validate_each(e, validate_text("subject_type", subject_type, AUDIT_NAME_MAX, 0,
                                     validate_slot(e))) == 0) {
    for (i = 0; i < n; i++)
      if (strcmp(subject_type, subject_types[i]) == 0)
        break;
    if (i == n) {
      /* Described by the types there are; its message says which was given. */
      snprintf(msg, sizeof(msg), "subject_type %s is unknown: " SUBJECT_TYPES_KNOWN, subject_type);
      validate_add_as(e, "subject_type", msg, SUBJECT_TYPES_KNOWN);
    }
  }
  not_negative(e, "subject_id", subject_id);
  if (subject_id != 0 && subject_type[0] == '\0')
    validate_add(e, "subject_id", "subject_id needs subject_type");
}

/* ---- ListAuditEvents -------------------------------------------------------------------- */

/* A page token carries the last seq of the page and a fingerprint of the filters it was
 * issued for, so a token is not silently applied to another query. */
static uint32_t fingerprint(const Clue__V1__ListAuditEventsRequest *req) {
  char buf[512];
  uint32_t h = 2166136261u;
  int n =
      snprintf(buf, sizeof(buf),
               "%s\x1f%lld\x1f%lld\x1f%lld\x1f%s\x1f%lld\x1f%lld\x1f%lld\x1f%lld\x1f%lld",
               req->subject_type, (long long)req->subject_id, (long long)req->actor_user_id,
               (long long)req->unit_id, req->action, (long long)req->from_ms, (long long)req->to_ms,
               (long long)req->after_seq, (long long)req->until_seq,
               (long long)req->actor_token_id);
  for (int i = 0; i < n && i < (int)sizeof(buf) - 1; i++) {
    h ^= (unsigned char)buf[i];
    h *= 16777619u;
  }
  return h;
}

/* "<seq in hex>.<fingerprint, 8 hex digits>"; returns 0 and sets *seq, or -1. */
static int token_parse(const char *tok, uint32_t want, int64_t *seq) {
  char *end;
  unsigned long long v;
  unsigned long fp;

  size_t digits = strspn(tok, "0123456789abcdef");

  /* Only the digits issued: strtoull() alone would also take a sign, blanks or "0x". */
  if (digits == 0 || digits > 16 || tok[digits] != '.')
    return -1;
  v = strtoull(tok, &end, 16);
  if (end == tok || *end != '.' || v == 0 || v > INT64_MAX)
    return -1;
  tok = end + 1;
  if (strlen(tok) != 8 || strspn(tok, "0123456789abcdef") != 8)
    return -1;
  fp = strtoul(tok, &end, 16);
  if (*end != '\0' || (uint32_t)fp != want)
    return -1;
  *seq = (int64_t)v;
  return 0;
}

typedef struct list_ctx {
  int32_t page_size;
  uint32_t fp;
  audit_filter_t filter; /* strings point into the request, which the call owns */
  Clue__V1__ReadFreshness *fresh; /* where the rows come from (service/replica.h) */
} list_ctx_t;

static void list_done(rpc_call_t *call, const db_result_t *r, void *arg) {
  list_ctx_t *ctx = arg;
  Clue__V1__ListAuditEventsResponse resp = CLUE__V1__LIST_AUDIT_EVENTS_RESPONSE__INIT;
  int rows = db_rows(r), n = rows > ctx->page_size ? ctx->page_size : rows;
  audit_ev_t **evs = calloc((size_t)(n ? n : 1), sizeof(*evs));
  Clue__V1__AuditEvent *msgs = rpc_call_alloc(call, (size_t)(n ? n : 1) * sizeof(*msgs));
  Clue__V1__AuditEvent **ptrs = rpc_call_alloc(call, (size_t)(n ? n : 1) * sizeof(*ptrs));
  bool more = rows > ctx->page_size;
  size_t bytes = 0;
  int i;

  resp.freshness = ctx->fresh;
  if (evs == NULL || msgs == NULL || ptrs == NULL)
    goto oom;
  for (i = 0; i < n; i++) {
    if (audit_ev_from_row(r, i, 0, &evs[i]) != 0)
      goto oom;
    audit_ev_to_msg(&ctx->filter, evs[i], &msgs[i]);
    if (!svc_page_fits(&bytes, &msgs[i].base)) {
      more = true; /* the next page starts with this event */
      i++;
      break;
    }
    ptrs[resp.n_events++] = &msgs[i];
  }
  n = i; /* the events read, to free */
  resp.events = ptrs;
  /* One row more than a page was asked for, or the page is full: there is a next page. */
  if (more) {
    resp.next_page_token = rpc_call_printf(
        call, "%llx.%08x", (unsigned long long)ptrs[resp.n_events - 1]->seq, ctx->fp);
    if (resp.next_page_token == NULL)
      goto oom;
  }
  (void)rpc_reply(call, &resp.base);
  for (i = 0; i < n; i++)
    free(evs[i]);
  free(evs);
  return;
oom:
  if (evs)
    for (i = 0; i < n; i++)
      free(evs[i]);
  free(evs);
  rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
}

/* Every violation of the request, one per field (validate_errors_t), in the order of its
 * fields; the page size into ctx->page_size, the filters' fingerprint into ctx->fp and the seq
 * a page token names into *tok_seq. */
static int validate_list(const Clue__V1__ListAuditEventsRequest *req, list_ctx_t *ctx,
                         int64_t *tok_seq, validate_errors_t *e) {
  validate_errors_init(e);
  audit_subject_violations(e, req->subject_type, req->subject_id);
  not_negative(e, "actor_user_id", req->actor_user_id);
  not_negative(e, "unit_id", req->unit_id);
  validate_each(e, validate_text("action", req->action, AUDIT_NAME_MAX, 0, validate_slot(e)));
  validate_time_range(e, "from_ms", req->from_ms, "to_ms", req->to_ms);
  not_negative(e, "after_seq", req->after_seq);
  not_negative(e, "until_seq", req->until_seq);
  validate_each(e, validate_page_size(req->page_size, &ctx->page_size, validate_slot(e)));
  ctx->fp = fingerprint(req);
  if (req->page_token[0] && token_parse(req->page_token, ctx->fp, tok_seq) != 0)
    validate_add(e, "page_token", "page_token is malformed or was issued for other filters");
  not_negative(e, "actor_token_id", req->actor_token_id);
  return validate_errors_result(e);
}

static void list_events(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ListAuditEventsRequest *req = (const void *)m;
  validate_errors_t errs;
  audit_filter_t f = {0};
  list_ctx_t *ctx = rpc_call_alloc(call, sizeof(*ctx));
  audit_sql_t *q = rpc_call_alloc(call, sizeof(*q));
  int64_t after = req->after_seq, tok_seq = 0;

  if (ctx == NULL || q == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (validate_list(req, ctx, &tok_seq, &errs) != 0 && clue_invalid_each(call, &errs))
    return;
  if (tok_seq > after)
    after = tok_seq;
  f.subject_type = req->subject_type;
  f.subject_id = req->subject_id;
  f.actor_user_id = req->actor_user_id;
  f.actor_token_id = req->actor_token_id;
  f.actor_unit_id = req->unit_id;
  f.action = req->action;
  f.from_ms = req->from_ms;
  f.to_ms = req->to_ms;
  f.until_seq = req->until_seq;
  audit_visibility(rpc_call_principal(call), &f);
  ctx->filter = f;
  if ((ctx->fresh = replica_route(call, req->read)) == NULL)
    return;
  audit_sql_build(q, &f, after, 0, ctx->page_size + 1);
  svc_read(call, q->text, q->n, q->values, list_done, ctx);
}

/* ---- VerifyAuditChain ------------------------------------------------------------------- */

static Clue__V1__BrokenLink__Problem problem_of(const char *s) {
  static const struct {
    const char *name;
    Clue__V1__BrokenLink__Problem p;
  } map[] = {
      {"CHANGED_CONTENT", CLUE__V1__BROKEN_LINK__PROBLEM__PROBLEM_CHANGED_CONTENT},
      {"MISSING_PREDECESSOR", CLUE__V1__BROKEN_LINK__PROBLEM__PROBLEM_MISSING_PREDECESSOR},
      {"REORDERED", CLUE__V1__BROKEN_LINK__PROBLEM__PROBLEM_REORDERED},
      {"FORGED", CLUE__V1__BROKEN_LINK__PROBLEM__PROBLEM_FORGED},
  };
  for (size_t i = 0; s && i < sizeof(map) / sizeof(map[0]); i++)
    if (strcmp(s, map[i].name) == 0)
      return map[i].p;
  return CLUE__V1__BROKEN_LINK__PROBLEM__PROBLEM_UNSPECIFIED;
}

/* The broken link a row of audit_verify() names (columns 2 to 6), in the call's memory; NULL
 * when out of memory. */
static Clue__V1__BrokenLink *link_read(rpc_call_t *call, const db_result_t *r) {
  Clue__V1__BrokenLink *link = rpc_call_alloc(call, sizeof(*link));

  if (link == NULL)
    return NULL;
  clue__v1__broken_link__init(link);
  link->subject_type = svc_col_str(call, r, 0, 2);
  link->subject_id = svc_col_i64(r, 0, 3);
  link->seq = svc_col_i64(r, 0, 4);
  link->problem = problem_of(db_value(r, 0, 5));
  link->detail = svc_col_str(call, r, 0, 6);
  return link->subject_type && link->detail ? link : NULL;
}

/* One subject's chain. */
static void verify_done(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__VerifyAuditChainResponse *resp = rpc_call_alloc(call, sizeof(*resp));

  (void)arg;
  if (resp == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  clue__v1__verify_audit_chain_response__init(resp);
  if (db_rows(r) != 1) {
    rpc_fail(call, GRPC_INTERNAL, "internal error");
    return;
  }
  resp->subjects_checked = svc_col_i64(r, 0, 0);
  resp->events_checked = svc_col_i64(r, 0, 1);
  resp->ok = db_value(r, 0, 5) == NULL;
  if (!resp->ok && (resp->broken = link_read(call, r)) == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  (void)rpc_reply(call, &resp->base);
}

/* The whole log is judged in batches of chains, one statement each (audit_verify_range() of
 * 0051): a statement over every event would grow with the log past --db-statement-timeout.
 * A batch is the chains after the last one judged, up to the VERIFY_BATCH-th head after it;
 * the last batch runs to the end, taking chains without a head too. */
#define VERIFY_BATCH 2000

typedef struct verify_walk {
  char *after_type; /* the last chain judged: "" and 0 before the first */
  int64_t after_id;
  int64_t subjects, events;
  Clue__V1__BrokenLink *first; /* the problem of the lowest (seq, subject), NULL if none */
} verify_walk_t;

static const char verify_batch_sql[] =
    "WITH b AS (SELECT subject_type, subject_id FROM audit_heads"
    "  WHERE (subject_type, subject_id) > ($1::text, $2::bigint) ORDER BY 1, 2"
    "  OFFSET " SVC_STR(
        VERIFY_BATCH) " - 1 LIMIT 1)"
                      " SELECT v.*, (SELECT subject_type FROM b), (SELECT subject_id FROM b)"
                      " FROM audit_verify_range($1, $2, (SELECT subject_type FROM b), (SELECT "
                      "subject_id FROM b)) v";

static const char verify_checkpoint_sql[] =
    "SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, c.tree_size, encode(c.root, 'hex'), c.note"
    "  FROM (SELECT 1) one"
    "  LEFT JOIN (SELECT * FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1) c ON true";

static void verify_batch(rpc_call_t *call, verify_walk_t *vw);

/* Whether a problem at (seq, type, id) comes before the one kept. */
static bool verify_before(const Clue__V1__BrokenLink *kept, int64_t seq, const char *type,
                          int64_t id) {
  int c;

  if (kept == NULL)
    return true;
  if (seq != kept->seq)
    return seq < kept->seq;
  c = strcmp(type, kept->subject_type);
  return c < 0 || (c == 0 && id < kept->subject_id);
}

static void verify_checkpoint_read(rpc_call_t *call, const db_result_t *r, void *arg) {
  verify_walk_t *vw = arg;
  Clue__V1__VerifyAuditChainResponse *resp = rpc_call_alloc(call, sizeof(*resp));

  if (resp == NULL || db_rows(r) != 1) {
    rpc_fail(call, resp ? GRPC_INTERNAL : GRPC_RESOURCE_EXHAUSTED,
             resp ? "internal error" : "out of memory");
    return;
  }
  clue__v1__verify_audit_chain_response__init(resp);
  resp->subjects_checked = vw->subjects;
  resp->events_checked = vw->events;
  resp->ok = vw->first == NULL;
  resp->broken = vw->first;
  audit_tree_verify(call, resp, db_value(r, 0, 7), db_value(r, 0, 8), db_value(r, 0, 9));
}

static void verify_batch_done(rpc_call_t *call, const db_result_t *r, void *arg) {
  verify_walk_t *vw = arg;

  if (db_rows(r) != 1) {
    rpc_fail(call, GRPC_INTERNAL, "internal error");
    return;
  }
  vw->subjects += svc_col_i64(r, 0, 0);
  vw->events += svc_col_i64(r, 0, 1);
  if (db_value(r, 0, 5) != NULL &&
      verify_before(vw->first, svc_col_i64(r, 0, 4), db_value(r, 0, 2), svc_col_i64(r, 0, 3)) &&
      (vw->first = link_read(call, r)) == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (db_value(r, 0, 7) == NULL) { /* that was the last batch */
    svc_read(call, verify_checkpoint_sql, 0, NULL, verify_checkpoint_read, vw);
    return;
  }
  vw->after_type = svc_col_str(call, r, 0, 7);
  vw->after_id = svc_col_i64(r, 0, 8);
  if (vw->after_type == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  verify_batch(call, vw);
}

static void verify_batch(rpc_call_t *call, verify_walk_t *vw) {
  const char *params[2] = {vw->after_type, svc_i64(call, vw->after_id, 0)};

  if (params[1] == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  svc_read(call, verify_batch_sql, 2, params, verify_batch_done, vw);
}

static void verify_chain(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__VerifyAuditChainRequest *req = (const void *)m;
  authz_principal_t p = clue_principal_of(rpc_call_principal(call));
  authz_result_t ok = authz_can_read_all_audit(&p);
  validate_errors_t e;
  const char *params[2];

  if (!authz_ok(&ok)) {
    rpc_fail(call, (grpc_status_t)ok.grpc_code, "%s", ok.message);
    return;
  }
  validate_errors_init(&e);
  audit_subject_violations(&e, req->subject_type, req->subject_id);
  if (req->subject_type[0] && req->subject_id == 0)
    validate_add(&e, "subject_type", "subject_type needs subject_id (or leave both empty)");
  if (clue_invalid_each(call, &e))
    return;
  if (!req->subject_type[0]) {
    verify_walk_t *vw = rpc_call_alloc(call, sizeof(*vw));

    if (vw == NULL) {
      rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
      return;
    }
    memset(vw, 0, sizeof(*vw));
    vw->after_type = "";
    verify_batch(call, vw);
    return;
  }
  params[0] = req->subject_type;
  params[1] = svc_i64(call, req->subject_id, 1);
  svc_read(call, "SELECT v.* FROM audit_verify($1, $2::bigint) v", 2, params, verify_done, NULL);
}

/* ---- the method table ------------------------------------------------------------------- */

/* Every one is heavy (rpc_method_t.heavy): a verification reads the log, and a page of events
 * or a watch's replay as far as the caller's filter takes it, or for a caller who does not see
 * every clue a window of it and each of their clues (audit_sql_build()), whatever the page
 * size. */
#define AUDIT_METHOD(name, fn, in, out, streaming)                                                 \
  {                                                                                                \
    "/clue.v1.AuditService/" name, &clue__v1__##in##__descriptor, &clue__v1__##out##__descriptor,  \
        fn, streaming, 0, 0, 1                                                                     \
  }

const rpc_method_t audit_methods[] = {
    AUDIT_METHOD("ListAuditEvents", list_events, list_audit_events_request,
                 list_audit_events_response, 0),
    AUDIT_METHOD("VerifyAuditChain", verify_chain, verify_audit_chain_request,
                 verify_audit_chain_response, 0),
    AUDIT_METHOD("WatchEvents", audit_watch_events, watch_events_request, audit_event, 1),
};
const size_t audit_nmethods = sizeof(audit_methods) / sizeof(audit_methods[0]);
