/* clue.v1.AuditService: the Merkle tree's checkpoints, proofs and export (docs/AUDIT.md).
 * Proofs come from the server's in-memory tree (audit/tree.c), limited to the leaves known
 * to be in the database; checkpoints come from the database, as signed. */

#include "service/audit_proof.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/tree.h"
#include "clue/v1/audit.pb-c.h"
#include "domain/authz.h"
#include "domain/validate.h"
#include "service/clue_row.h"
#include "service/common.h"
#include "service/svc_util.h"

#define EXPORT_PAGE_DEFAULT 500
#define EXPORT_PAGE_MAX 5000
#define EXPORT_PAGE_BYTES (1u << 20) /* a page ends early past this much text (reasons are long) */

/* AUDITOR and ADMIN only; returns 0 if allowed, else fails the call. */
static int require_auditor(rpc_call_t *call) {
  authz_principal_t p = clue_principal_of(rpc_call_principal(call));
  authz_result_t ok = authz_can_read_all_audit(&p);

  if (authz_ok(&ok))
    return 0;
  rpc_fail(call, (grpc_status_t)ok.grpc_code, "%s", ok.message);
  return -1;
}

static audit_tree_t *tree_of(rpc_call_t *call) {
  audit_tree_t *t = rpc_call_server(call)->tree;
  if (t == NULL) {
    rpc_fail(call, GRPC_UNAVAILABLE, "the audit tree is not available");
    return NULL;
  }
  if (!audit_tree_ready(t)) {
    rpc_fail(call, GRPC_UNAVAILABLE, "this server is still reading the audit tree; retry in a moment");
    return NULL;
  }
  return t;
}

static ProtobufCBinaryData bytes_copy(rpc_call_t *call, const uint8_t *b, size_t n, int *oom) {
  ProtobufCBinaryData d = {0, NULL};
  d.data = rpc_call_alloc(call, n ? n : 1);
  if (d.data == NULL) {
    *oom = 1;
    return d;
  }
  memcpy(d.data, b, n);
  d.len = n;
  return d;
}

static void fail_field(rpc_call_t *call, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* INVALID_ARGUMENT with field's BadRequest violation, its description the message. */
static void fail_field(rpc_call_t *call, const char *field, const char *fmt, ...) {
  char msg[256];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  rpc_detail_field(call, field, msg);
  rpc_fail(call, GRPC_INVALID_ARGUMENT, "%s", msg);
}

/* A requested size: 0 means the tree's current size; more than it is not yet known here
 * (OUT_OF_RANGE: past the end of what exists, which a later call may find). */
static int size_arg(rpc_call_t *call, const char *field, int64_t v, uint64_t have,
                    uint64_t *out) {
  if (v < 0) {
    fail_field(call, field, "%s must not be negative", field);
    return -1;
  }
  if ((uint64_t)v > have) {
    rpc_fail(call, GRPC_OUT_OF_RANGE, "%s %lld is beyond the tree (%llu leaves so far)", field,
             (long long)v, (unsigned long long)have);
    return -1;
  }
  *out = v ? (uint64_t)v : have;
  return 0;
}

/* ---- GetCheckpoint ------------------------------------------------------------------------ */

static void checkpoint_done(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__Checkpoint cp = CLUE__V1__CHECKPOINT__INIT;
  audit_tree_t *t = rpc_call_server(call)->tree;
  const note_key_t *key = t ? audit_tree_key(t) : NULL;
  checkpoint_t opened;
  char vkey[256], why[512];
  uint8_t root[MERKLE_HASH_LEN];
  const char *hex;
  int oom = 0;

  /* arg: a size was asked for. The tree is read now: it may have closed since the query was
   * sent. */
  if (db_rows(r) != 1) {
    rpc_detail_resource(call, "clue.v1.Checkpoint", "");
    if (arg)
      rpc_fail(call, GRPC_NOT_FOUND, "no checkpoint has been published at that size");
    else
      rpc_fail(call, GRPC_NOT_FOUND,
               "no checkpoint has been published yet: an instance signs them when started with "
               "--audit-signing-key");
    return;
  }
  cp.tree_size = svc_col_i64(r, 0, 0);
  hex = db_value(r, 0, 1);
  for (size_t i = 0; hex && i < MERKLE_HASH_LEN; i++) {
    unsigned v = 0;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1)
      break;
    root[i] = (uint8_t)v;
  }
  cp.root_hash = bytes_copy(call, root, MERKLE_HASH_LEN, &oom);
  cp.note = svc_col_str(call, r, 0, 2);
  cp.published_ms = svc_col_i64(r, 0, 3);
  /* The key that signed it: a checkpoint from before the key was replaced names the
   * previous one, while the server is given it. */
  if (key && cp.note &&
      audit_tree_open_checkpoint(t, cp.note, &opened, why, sizeof(why)) == AUDIT_CP_PREVIOUS)
    key = audit_tree_previous_key(t);
  if (key && note_key_public_text(key, vkey, sizeof(vkey)) == 0)
    cp.verifier_key = rpc_call_printf(call, "%s", vkey);
  if (oom || cp.note == NULL || cp.verifier_key == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  (void)rpc_reply(call, &cp.base);
}

static void get_checkpoint(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__GetCheckpointRequest *req = (const void *)m;
  audit_tree_t *t = rpc_call_server(call)->tree;
  const char *params[1];

  if (require_auditor(call) != 0)
    return;
  if (t)
    (void)audit_tree_ready(t); /* a follower catches up for the proofs that follow */
  if (req->tree_size < 0) {
    fail_field(call, "tree_size", "tree_size must not be negative");
    return;
  }
  params[0] = svc_i64(call, req->tree_size, 1);
  svc_query(call,
            "SELECT tree_size, encode(root, 'hex'), note, " SVC_MS(
                "at") " FROM audit_checkpoints"
                      " WHERE $1::bigint IS NULL OR tree_size = $1 ORDER BY tree_size DESC LIMIT 1",
            1, params, checkpoint_done, req->tree_size ? (void *)call : NULL);
}

/* ---- proofs ------------------------------------------------------------------------------ */

/* A proof of a size beyond this instance's tree, which another instance signed: the call waits
 * for the tree to read the leaves appended so far (audit_tree_catch_up()), then runs again,
 * and a size still beyond it is OUT_OF_RANGE. */
typedef void (*proof_run_fn)(rpc_call_t *call, const ProtobufCMessage *m, int waited);

typedef struct proof_wait {
  rpc_call_t *call;
  const ProtobufCMessage *m;
  proof_run_fn run;
} proof_wait_t;

static void proof_caught_up(void *arg) {
  proof_wait_t *w = arg;

  if (!rpc_call_done(w->call))
    w->run(w->call, w->m, 1);
  rpc_call_unref(w->call);
}

/* 1 when the call now waits for the tree to catch up with size, or was refused a wait (more
 * than AUDIT_TREE_MAX_WAITERS wait already); 0 to answer at once. */
static int proof_wait(rpc_call_t *call, const ProtobufCMessage *m, proof_run_fn run,
                      audit_tree_t *t, int64_t size, int waited) {
  proof_wait_t *w;

  if (waited || size <= 0 || (uint64_t)size <= audit_tree_size(t))
    return 0;
  if ((w = rpc_call_alloc(call, sizeof(*w))) == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return 1;
  }
  w->call = call;
  w->m = m;
  w->run = run;
  rpc_call_ref(call);
  if (audit_tree_catch_up(t, proof_caught_up, w) != 0) {
    rpc_call_unref(call);
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED,
             "%d proofs already wait for this instance to read the audit log; retry shortly",
             AUDIT_TREE_MAX_WAITERS);
    return 1;
  }
  return 1;
}

static ProtobufCBinaryData *proof_copy(rpc_call_t *call, merkle_hash_t *h, size_t n, int *oom) {
  ProtobufCBinaryData *v = rpc_call_alloc(call, (n ? n : 1) * sizeof(*v));
  if (v == NULL) {
    *oom = 1;
    return NULL;
  }
  for (size_t i = 0; i < n; i++)
    v[i] = bytes_copy(call, h[i], MERKLE_HASH_LEN, oom);
  return v;
}

static void inclusion_run(rpc_call_t *call, const ProtobufCMessage *m, int waited) {
  const Clue__V1__GetInclusionProofRequest *req = (const void *)m;
  Clue__V1__InclusionProof resp = CLUE__V1__INCLUSION_PROOF__INIT;
  merkle_hash_t proof[MERKLE_MAX_PROOF], root;
  audit_tree_t *t;
  const merkle_tree_t *mt;
  uint64_t size;
  int64_t idx;
  size_t n;
  int oom = 0;
  validate_errors_t e;

  if (require_auditor(call) != 0 || (t = tree_of(call)) == NULL)
    return;
  /* Both fields' violations at once; a size past the tree is another code, checked after. */
  validate_errors_init(&e);
  if (req->seq <= 0)
    validate_add(&e, "seq", "seq must be positive");
  if (req->tree_size < 0)
    validate_add(&e, "tree_size", "tree_size must not be negative");
  if (clue_invalid_each(call, &e))
    return;
  if (proof_wait(call, m, inclusion_run, t, req->tree_size, waited))
    return;
  if (size_arg(call, "tree_size", req->tree_size, audit_tree_size(t), &size) != 0)
    return;
  idx = audit_tree_index(t, req->seq);
  if (idx < 0) {
    rpc_detail_resource(call, "clue.v1.AuditEvent", svc_i64(call, req->seq, 0));
    rpc_fail(call, GRPC_NOT_FOUND, "seq %lld is not a leaf of the tree (yet)", (long long)req->seq);
    return;
  }
  if ((uint64_t)idx >= size) {
    fail_field(call, "tree_size",
               "seq %lld is leaf %lld, not among the first %llu leaves (tree_size)",
               (long long)req->seq, (long long)idx, (unsigned long long)size);
    return;
  }
  mt = audit_tree_merkle(t);
  if (merkle_tree_inclusion(mt, (uint64_t)idx, size, proof, &n) != 0 ||
      merkle_tree_root(mt, size, root) != 0) {
    rpc_fail(call, GRPC_INTERNAL, "internal error");
    return;
  }
  resp.leaf_index = idx;
  resp.tree_size = (int64_t)size;
  resp.leaf_hash = bytes_copy(call, merkle_tree_leaf(mt, (uint64_t)idx), MERKLE_HASH_LEN, &oom);
  resp.hashes = proof_copy(call, proof, n, &oom);
  resp.n_hashes = n;
  resp.root_hash = bytes_copy(call, root, MERKLE_HASH_LEN, &oom);
  if (oom) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  (void)rpc_reply(call, &resp.base);
}

static void get_inclusion(rpc_call_t *call, const ProtobufCMessage *m) {
  inclusion_run(call, m, 0);
}

static void consistency_run(rpc_call_t *call, const ProtobufCMessage *m, int waited) {
  const Clue__V1__GetConsistencyProofRequest *req = (const void *)m;
  Clue__V1__ConsistencyProof resp = CLUE__V1__CONSISTENCY_PROOF__INIT;
  merkle_hash_t proof[MERKLE_MAX_PROOF], r1, r2;
  audit_tree_t *t;
  const merkle_tree_t *mt;
  uint64_t size;
  size_t n;
  int oom = 0;
  validate_errors_t e;

  if (require_auditor(call) != 0 || (t = tree_of(call)) == NULL)
    return;
  validate_errors_init(&e); /* as get_inclusion()'s */
  if (req->old_size <= 0)
    validate_add(&e, "old_size", "old_size must be positive");
  if (req->new_size < 0)
    validate_add(&e, "new_size", "new_size must not be negative");
  if (clue_invalid_each(call, &e))
    return;
  if (proof_wait(call, m, consistency_run, t, req->new_size, waited))
    return;
  if (size_arg(call, "new_size", req->new_size, audit_tree_size(t), &size) != 0)
    return;
  if ((uint64_t)req->old_size > size) {
    fail_field(call, "old_size", "old_size must be between 1 and new_size (%llu); got %lld",
               (unsigned long long)size, (long long)req->old_size);
    return;
  }
  mt = audit_tree_merkle(t);
  if (merkle_tree_consistency(mt, (uint64_t)req->old_size, size, proof, &n) != 0 ||
      merkle_tree_root(mt, (uint64_t)req->old_size, r1) != 0 ||
      merkle_tree_root(mt, size, r2) != 0) {
    rpc_fail(call, GRPC_INTERNAL, "internal error");
    return;
  }
  resp.old_size = req->old_size;
  resp.new_size = (int64_t)size;
  resp.hashes = proof_copy(call, proof, n, &oom);
  resp.n_hashes = n;
  resp.old_root = bytes_copy(call, r1, MERKLE_HASH_LEN, &oom);
  resp.new_root = bytes_copy(call, r2, MERKLE_HASH_LEN, &oom);
  if (oom) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  (void)rpc_reply(call, &resp.base);
}

static void get_consistency(rpc_call_t *call, const ProtobufCMessage *m) {
  consistency_run(call, m, 0);
}

/* ---- ExportAuditEvents ------------------------------------------------------------------- */

/* The leaf columns, then the current SHA-256 of the content the event records a hash of:
 * a note's text (note.add), a clue's submitted fields and its reporter (clue.submit). The
 * expressions are those of note_add() (0005), clue_content_sha256() (0013) and
 * clue_reporter_sha256() (0031: the reporter row's salt, none before 0031, then the text of
 * 0013), written out here rather than called, so that a function redefined in the database
 * cannot answer for the rows (built-in ones come first: db.c's search path); then what the
 * rows say of facts the event records in its own fields (LeafEvent.current_facts: of a note, a
 * clue's submission, the proposal a proposal event names, with its status only at the
 * latest event naming it, as a later one decided it, the recusal a clue.recuse logged, or
 * the token a token.issue or .revoke names, with its revoked state only at the latest event
 * naming it, as a later one revoked it, or who gave the access an event logged: the handler a
 * clue's latest clue.assign of its user wrote, the case_clues row of the clue's latest
 * case.add_clue, the participant a case's latest case.add_participant of its unit added, or
 * those its case.create added that no later event of the case's chain added again or removed);
 * then, for the latest event of a chain in the statement's snapshot, its subject's row
 * (LeafEvent.current_row): a clue's, a rectification item's, a user's, a unit's or a joint
 * case's, the last four with `exists` false when the row is gone. */
#define EXPORT_COL_CONTENT AUDIT_LEAF_NFIELDS
#define LP(x) "octet_length(" x "), ':', " x ", E'\\n'" /* "<length>:<text>\n" */
#define PROPOSAL_ACTIONS                                                                           \
  "'proposal.create', 'proposal.approve', 'proposal.reject', 'proposal.withdraw'"
#define TOKEN_ACTIONS "'token.issue', 'token.revoke'"
/* The fields a move carries, as details d (jsonb) holds them (clue_enter_state() of 0003). */
#define CARRIED(d)                                                                                 \
  "'disposal', " d "->'disposal', 'finding', " d "->'finding', 'sanction_kind', " d                \
  "->'sanction_kind', 'persons_disciplined', " d "->'persons_disciplined', 'receiving_organ', " d  \
  "->'receiving_organ'"
/* A member of details d that names a row's id, as a bigint, or NULL when it is none (one
 * event's details a superuser made "abc" then find no row, instead of failing the page). */
#define DETAIL_ID(d, key)                                                                          \
  "CASE WHEN " d "->>'" key "' ~ '^-?[0-9]{1,18}$' THEN (" d "->>'" key "')::bigint END"
/* A row's time t in milliseconds since the epoch, as JSON: a number, or t's text for one no
 * bigint holds ('infinity'), which then differs from what its event says. */
#define JSON_MS(t)                                                                                 \
  "CASE WHEN abs(extract(epoch FROM " t ")) < 9e12 THEN to_jsonb((extract(epoch FROM " t           \
  ") * 1000)::bigint) ELSE to_jsonb(" t "::text) END"
/* clang-format off */
static const char sql_export[] =
    "SELECT " AUDIT_LEAF_COLS ","
    "  CASE e.action"
    "    WHEN 'note.add' THEN (SELECT encode(sha256(convert_to(n.text, 'UTF8')), 'hex')"
    "                            FROM notes n WHERE n.id = " DETAIL_ID("e.details::jsonb", "note_id") ")"
    "    WHEN 'clue.submit' THEN (SELECT encode(sha256(convert_to(concat("
    LP("c.title") ", " LP("c.summary") ", " LP("c.source") ", " LP("c.subject_name") ", "
    LP("c.subject_position") ", " LP("c.subject_rank_level") ", "
    LP("c.subject_is_top_leader::text") ", " LP("c.host_unit") ", "
    LP("c.violation_categories::text") "), 'UTF8')), 'hex')"
    "                              FROM clues c WHERE c.id = e.subject_id)"
    "  END,"
    "  CASE WHEN e.action = 'clue.submit' THEN (SELECT encode(sha256(coalesce(r.salt, ''::bytea)"
    " || convert_to(concat("
    LP("r.name") ", " LP("r.phone") ", " LP("r.address") ", " LP("r.email") "), 'UTF8')), 'hex')"
    "                              FROM clue_reporters r WHERE r.clue_id = e.subject_id) END,"
    "  CASE"
    "    WHEN e.action = 'note.add' THEN (SELECT jsonb_build_object('clue_id', n.clue_id, 'kind', n.kind,"
    "                            'author_user', n.author_user, 'author_unit', n.author_unit,"
    "                            'created_ms', " JSON_MS("n.created_at") ")::text"
    "                            FROM notes n WHERE n.id = " DETAIL_ID("e.details::jsonb", "note_id") ")"
    "    WHEN e.action = 'clue.submit' THEN (SELECT jsonb_build_object('registration_number',"
    "                            c.registration_number, 'created_by', c.created_by, 'has_reporter',"
    "                            c.has_reporter, 'reporter_row', EXISTS (SELECT 1 FROM clue_reporters r"
    "                            WHERE r.clue_id = c.id))::text FROM clues c WHERE c.id = e.subject_id)"
    "    WHEN e.subject_type = 'clue' AND e.action IN (" PROPOSAL_ACTIONS ") THEN"
    "      (SELECT (jsonb_build_object('proposal_row', p.id IS NOT NULL, 'clue_id', p.clue_id,"
    "         'from_state', p.from_state, 'target', p.target, 'reason', p.reason,"
    "         " CARRIED("p.details") ", 'proposer_user', p.proposer_user, 'proposer_unit',"
    "         p.proposer_unit, 'reviewer_unit', p.reviewer_unit, 'clue_version', p.clue_version,"
    "         'review_comment', p.review_comment, 'reviewed_by', p.reviewed_by)"
    "       || CASE WHEN NOT EXISTS (SELECT 1 FROM audit_events l WHERE l.subject_type = 'clue'"
    "            AND l.subject_id = e.subject_id AND l.seq > e.seq AND l.action IN (" PROPOSAL_ACTIONS ")"
    "            AND l.details::jsonb->'proposal_id' = e.details::jsonb->'proposal_id')"
    "          THEN jsonb_build_object('status', p.status) ELSE '{}' END)::text"
    "       FROM (SELECT 1) one LEFT JOIN proposals p ON p.id = " DETAIL_ID("e.details::jsonb", "proposal_id") ")"
    "    WHEN e.action = 'clue.recuse' THEN (SELECT jsonb_build_object('reason', r.reason,"
    "                            'recorded_by', r.recorded_by, 'recorded_by_unit', r.recorded_by_unit)::text"
    "                            FROM recusals r WHERE r.clue_id = e.subject_id"
    "                            AND r.user_id = " DETAIL_ID("e.details::jsonb", "user_id") ")"
    "    WHEN e.subject_type = 'user' AND e.action IN (" TOKEN_ACTIONS ") THEN"
    "      (SELECT (jsonb_build_object('token_row', t.id IS NOT NULL, 'user_id', t.user_id,"
    "         'issued_by', t.issued_by, 'enrollment', t.issued_by <> t.user_id, 'note', t.note,"
    "         'hash_sha256', encode(sha256(t.token_sha256), 'hex'))"
    "       || CASE WHEN NOT EXISTS (SELECT 1 FROM audit_events l WHERE l.subject_type = 'user'"
    "            AND l.subject_id = e.subject_id AND l.seq > e.seq AND l.action IN (" TOKEN_ACTIONS ")"
    "            AND l.details::jsonb->'token_id' = e.details::jsonb->'token_id')"
    "          THEN jsonb_build_object('revoked', t.revoked_at IS NOT NULL) ELSE '{}' END)::text"
    "       FROM (SELECT 1) one LEFT JOIN tokens t ON t.id = " DETAIL_ID("e.details::jsonb", "token_id") ")"
    "    WHEN e.subject_type = 'clue' AND e.action = 'clue.assign' AND NOT EXISTS (SELECT 1 FROM audit_events l"
    "      WHERE l.subject_type = 'clue' AND l.subject_id = e.subject_id AND l.seq > e.seq"
    "      AND l.action = 'clue.assign' AND l.details::jsonb->'user_id' = e.details::jsonb->'user_id') THEN"
    "      (SELECT jsonb_build_object('assigned_by', h.assigned_by, 'assigned_by_unit', h.assigned_by_unit)::text"
    "       FROM clue_handlers h WHERE h.clue_id = e.subject_id"
    "       AND h.user_id = " DETAIL_ID("e.details::jsonb", "user_id") ")"
    "    WHEN e.subject_type = 'clue' AND e.action = 'case.add_clue' AND NOT EXISTS (SELECT 1 FROM audit_events l"
    "      WHERE l.subject_type = 'clue' AND l.subject_id = e.subject_id AND l.seq > e.seq"
    "      AND l.action = 'case.add_clue') THEN"
    "      (SELECT jsonb_build_object('added_by', cc.added_by)::text FROM case_clues cc"
    "       WHERE cc.clue_id = e.subject_id AND cc.case_id = " DETAIL_ID("e.details::jsonb", "case_id") ")"
    "    WHEN e.subject_type = 'case' AND e.action = 'case.add_participant' AND NOT EXISTS (SELECT 1"
    "      FROM audit_events l WHERE l.subject_type = 'case' AND l.subject_id = e.subject_id"
    "      AND l.seq > e.seq AND l.action IN ('case.add_participant', 'case.remove_participant')"
    "      AND l.details::jsonb->'unit_id' = e.details::jsonb->'unit_id') THEN"
    "      (SELECT jsonb_build_object('added_by', p.added_by)::text FROM case_participants p"
    "       WHERE p.case_id = e.subject_id AND p.unit_id = " DETAIL_ID("e.details::jsonb", "unit_id") ")"
    "    WHEN e.subject_type = 'case' AND e.action = 'case.create' THEN"
    "      (SELECT jsonb_build_object('participants_added_by', coalesce(jsonb_object_agg(p.unit_id::text,"
    "         p.added_by), '{}'))::text FROM case_participants p WHERE p.case_id = e.subject_id"
    "       AND e.details::jsonb->'participant_unit_ids' @> to_jsonb(p.unit_id)"
    "       AND NOT EXISTS (SELECT 1 FROM audit_events l WHERE l.subject_type = 'case'"
    "         AND l.subject_id = e.subject_id AND l.seq > e.seq"
    "         AND l.action IN ('case.add_participant', 'case.remove_participant')"
    "         AND l.details::jsonb->'unit_id' = to_jsonb(p.unit_id)))"
    "  END,"
    "  CASE WHEN e.subject_type IN ('clue', 'rectification', 'user', 'unit', 'case') AND NOT EXISTS"
    "    (SELECT 1 FROM audit_events l WHERE l.subject_type = e.subject_type"
    "     AND l.subject_id = e.subject_id AND l.seq > e.seq) THEN CASE e.subject_type"
    "  WHEN 'clue' THEN (SELECT jsonb_build_object('state', c.state, 'owner_unit', c.owner_unit, 'version',"
    "          c.version, 'stage_deadline_ms', " JSON_MS("c.stage_deadline") ","
    "          'case_id', c.joint_case_id, 'disposal', c.disposal, 'finding', c.finding,"
    "          'sanction_kind', c.sanction_kind, 'persons_disciplined', c.persons_disciplined,"
    "          'receiving_organ', c.receiving_organ, 'pending_proposal_id', c.pending_proposal_id,"
    "          'pending_reviewer_unit', c.pending_reviewer_unit,"
    "          'deadline_extended', c.deadline_extended, 'has_recusals', c.has_recusals)::text"
    "        FROM clues c WHERE c.id = e.subject_id)"
    "  WHEN 'rectification' THEN (SELECT jsonb_build_object('exists', i.id IS NOT NULL, 'state', i.state,"
    "          'version', i.version, 'supervising_unit', i.supervising_unit, 'created_by', i.created_by,"
    "          'host_unit', i.host_unit, 'description', i.description, 'category', i.category,"
    "          'source', i.source, 'source_clue_id', i.source_clue, 'source_case_id', i.source_case,"
    "          'deadline_ms', " JSON_MS("i.deadline") ", 'plan', i.plan,"
    "          'plan_note_ids', to_jsonb(i.plan_note_ids), 'evidence', i.evidence,"
    "          'evidence_note_ids', to_jsonb(i.evidence_note_ids), 'verify_comment', i.verify_comment,"
    "          'reopen_reason', i.reopen_reason)::text"
    "        FROM (SELECT 1) one LEFT JOIN rect_items i ON i.id = e.subject_id)"
    "  WHEN 'user' THEN (SELECT jsonb_build_object('exists', u.id IS NOT NULL, 'unit_id', u.unit_id,"
    "          'name', u.name, 'role', u.role, 'disabled', u.disabled)::text"
    "        FROM (SELECT 1) one LEFT JOIN users u ON u.id = e.subject_id)"
    "  WHEN 'unit' THEN (SELECT jsonb_build_object('exists', u.id IS NOT NULL, 'kind', u.kind, 'code',"
    "          u.code, 'name', u.name, 'liaison_room_id', u.liaison_room_id,"
    "          'host_units', to_jsonb(u.host_units))::text"
    "        FROM (SELECT 1) one LEFT JOIN units u ON u.id = e.subject_id)"
    "  WHEN 'case' THEN (SELECT jsonb_build_object('exists', j.id IS NOT NULL, 'title', j.title,"
    "          'basis', j.basis, 'created_by', j.created_by)::text"
    "        FROM (SELECT 1) one LEFT JOIN joint_cases j ON j.id = e.subject_id)"
    "  END END"
    " FROM audit_events e WHERE e.seq > $1 ORDER BY e.seq LIMIT $2";

/* On the last page: notes and clues that no event logged (a superuser's inserts), at most
 * EXPORT_UNLOGGED_MAX of each. Every writer inserts a note with its note.add event and a
 * clue with its clue.submit event, in one transaction. Then the rows of access no event
 * explains (ExportAuditEventsResponse.unexplained_rows), as many of each kind: each writer
 * of clue_handlers, recusals, case_participants and joint_cases logs the change in the same
 * transaction (clue_set_handler, clue_recuse, clue_handover, case_remove_clue, case_create,
 * case_add_participant, case_remove_participant), proposal_create() inserts a proposal
 * with its proposal.create event, and rect_create(), admin_create_user(),
 * admin_create_unit() and admin_bootstrap() insert an item, a user or a unit with the
 * rect.create, user.create or unit.create event of its own chain, and admin_issue_token()
 * (IssueToken, IssueMyToken, --demo-tokens) and admin_bootstrap() a token with a token.issue
 * event of its user's chain naming it. A case_clues row is written with its clue's
 * joint_case_id, in one transaction (case_add_clue, case_remove_clue), and the clue's row is
 * judged against its events: the two must agree. Last, the registration counters: a clue takes
 * the next number of its unit and year from clue_counters in its clue.submit's transaction, and
 * nothing else writes either, so each counter stands at the highest number its clues hold. */
#define EXPORT_UNLOGGED_MAX 100
#define CLUE_EVENTS(a, id) a ".subject_type = 'clue' AND " a ".subject_id = " id
#define CASE_EVENTS(a, id) a ".subject_type = 'case' AND " a ".subject_id = " id
#define DETAIL(a, key) a ".details::jsonb->>'" key "'"
/* The notes and proposals an event logged are read once, each event's details parsed once,
 * and matched by hash: a probe per note into its clue's events would parse every note.add of
 * the clue again for each of its notes, a cost that grows with the square of the notes one
 * clue holds (6,000 notes, which one MEMBER adds in seconds, took past the statement timeout,
 * and no verify could finish). */
static const char sql_unlogged[] =
    "WITH logged_notes AS MATERIALIZED (SELECT e.subject_id AS clue_id, " DETAIL("e", "note_id")
    " AS id FROM audit_events e WHERE e.subject_type = 'clue' AND e.action = 'note.add'),"
    " logged_proposals AS MATERIALIZED (SELECT a.subject_id AS clue_id, " DETAIL("a", "proposal_id")
    " AS id FROM audit_events a WHERE a.subject_type = 'clue' AND a.action = 'proposal.create')"
    "(SELECT 'note', n.id, NULL::bigint FROM notes n WHERE NOT EXISTS (SELECT 1 FROM logged_notes l"
    "  WHERE l.clue_id = n.clue_id AND l.id = n.id::text) ORDER BY n.id LIMIT $1)"
    " UNION ALL "
    "(SELECT 'clue', c.id, NULL FROM clues c WHERE NOT EXISTS (SELECT 1 FROM audit_events e"
    "  WHERE " CLUE_EVENTS("e", "c.id") " AND e.action = 'clue.submit')"
    "  ORDER BY c.id LIMIT $1)"
    " UNION ALL "
    "(SELECT 'handler', h.clue_id, h.user_id FROM clue_handlers h"
    "  JOIN clues c ON c.id = h.clue_id AND c.owner_unit = h.owner_unit"
    "  WHERE NOT EXISTS (SELECT 1 FROM audit_events a WHERE " CLUE_EVENTS("a", "h.clue_id")
    "    AND a.action = 'clue.assign' AND " DETAIL("a", "user_id") " = h.user_id::text"
    "    AND NOT EXISTS (SELECT 1 FROM audit_events x WHERE " CLUE_EVENTS("x", "h.clue_id")
    "      AND x.seq > a.seq AND (x.action = 'clue.handover'"
    "        OR (x.action IN ('clue.unassign', 'clue.recuse') AND " DETAIL("x", "user_id") " = h.user_id::text)"
    "        OR (x.action = 'case.remove_clue'"
    "            AND x.details::jsonb->'unassigned_user_ids' @> to_jsonb(h.user_id)))))"
    "  ORDER BY 2, 3 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'recusal', r.clue_id, r.user_id FROM recusals r WHERE NOT EXISTS (SELECT 1 FROM audit_events a"
    "  WHERE " CLUE_EVENTS("a", "r.clue_id") " AND a.action = 'clue.recuse'"
    "  AND " DETAIL("a", "user_id") " = r.user_id::text) ORDER BY 2, 3 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'handler_removed', a.subject_id, " DETAIL_ID("a.details::jsonb", "user_id") " FROM audit_events a"
    "  WHERE a.subject_type = 'clue' AND a.action = 'clue.assign'"
    "  AND NOT EXISTS (SELECT 1 FROM audit_events x WHERE " CLUE_EVENTS("x", "a.subject_id")
    "    AND x.seq > a.seq AND (x.action = 'clue.handover'"
    "      OR (x.action IN ('clue.assign', 'clue.unassign', 'clue.recuse')"
    "          AND " DETAIL("x", "user_id") " = " DETAIL("a", "user_id") ")"
    "      OR (x.action = 'case.remove_clue' AND x.details::jsonb->'unassigned_user_ids'"
    "          @> (a.details::jsonb->'user_id'))))"
    "  AND NOT EXISTS (SELECT 1 FROM clue_handlers h WHERE h.clue_id = a.subject_id"
    "    AND h.user_id::text = " DETAIL("a", "user_id") ")"
    "  ORDER BY 2, 3 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'recusal_removed', a.subject_id, " DETAIL_ID("a.details::jsonb", "user_id") " FROM audit_events a"
    "  WHERE a.subject_type = 'clue' AND a.action = 'clue.recuse' AND NOT EXISTS (SELECT 1 FROM recusals r"
    "  WHERE r.clue_id = a.subject_id AND r.user_id::text = " DETAIL("a", "user_id") ")"
    "  ORDER BY 2, 3 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'proposal', p.clue_id, p.id FROM proposals p WHERE NOT EXISTS (SELECT 1 FROM"
    "  logged_proposals l WHERE l.clue_id = p.clue_id AND l.id = p.id::text) ORDER BY 2, 3 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'participant', p.case_id, p.unit_id FROM case_participants p"
    "  WHERE NOT EXISTS (SELECT 1 FROM audit_events a WHERE " CASE_EVENTS("a", "p.case_id")
    "    AND ((a.action = 'case.create' AND a.details::jsonb->'participant_unit_ids' @> to_jsonb(p.unit_id))"
    "      OR (a.action = 'case.add_participant' AND " DETAIL("a", "unit_id") " = p.unit_id::text))"
    "    AND NOT EXISTS (SELECT 1 FROM audit_events x WHERE " CASE_EVENTS("x", "p.case_id")
    "      AND x.seq > a.seq AND x.action = 'case.remove_participant'"
    "      AND " DETAIL("x", "unit_id") " = p.unit_id::text))"
    "  ORDER BY 2, 3 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'participant_removed', a.subject_id, u.unit FROM audit_events a"
    "  CROSS JOIN LATERAL (SELECT CASE WHEN x ~ '^-?[0-9]{1,18}$' THEN x::bigint END"
    "    FROM jsonb_array_elements_text(CASE jsonb_typeof(a.details::jsonb->'participant_unit_ids')"
    "      WHEN 'array' THEN a.details::jsonb->'participant_unit_ids' ELSE '[]' END) x"
    "    WHERE a.action = 'case.create'"
    "    UNION ALL SELECT " DETAIL_ID("a.details::jsonb", "unit_id") " WHERE a.action = 'case.add_participant') u(unit)"
    "  WHERE a.subject_type = 'case' AND a.action IN ('case.create', 'case.add_participant')"
    "  AND NOT EXISTS (SELECT 1 FROM audit_events x WHERE " CASE_EVENTS("x", "a.subject_id")
    "    AND x.seq > a.seq AND x.action IN ('case.add_participant', 'case.remove_participant')"
    "    AND " DETAIL("x", "unit_id") " = u.unit::text)"
    "  AND NOT EXISTS (SELECT 1 FROM case_participants p WHERE p.case_id = a.subject_id AND p.unit_id = u.unit)"
    "  ORDER BY 2, 3 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'case_lead', j.id, j.lead_unit FROM joint_cases j WHERE NOT EXISTS (SELECT 1 FROM audit_events a"
    "  WHERE " CASE_EVENTS("a", "j.id") " AND a.action = 'case.create'"
    "  AND " DETAIL("a", "lead_unit_id") " = j.lead_unit::text) ORDER BY 2 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'case_clue', cc.case_id, cc.clue_id FROM case_clues cc WHERE NOT EXISTS (SELECT 1 FROM clues c"
    "  WHERE c.id = cc.clue_id AND c.joint_case_id = cc.case_id) ORDER BY 2, 3 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'case_clue_removed', c.joint_case_id, c.id FROM clues c WHERE c.joint_case_id IS NOT NULL"
    "  AND NOT EXISTS (SELECT 1 FROM case_clues cc WHERE cc.clue_id = c.id AND cc.case_id = c.joint_case_id)"
    "  ORDER BY 2, 3 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'rect_item', i.id, NULL FROM rect_items i WHERE NOT EXISTS (SELECT 1 FROM audit_events a"
    "  WHERE a.subject_type = 'rectification' AND a.subject_id = i.id AND a.action = 'rect.create')"
    "  ORDER BY 2 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'user', u.id, NULL FROM users u WHERE NOT EXISTS (SELECT 1 FROM audit_events a"
    "  WHERE a.subject_type = 'user' AND a.subject_id = u.id AND a.action = 'user.create')"
    "  ORDER BY 2 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'unit', u.id, NULL FROM units u WHERE NOT EXISTS (SELECT 1 FROM audit_events a"
    "  WHERE a.subject_type = 'unit' AND a.subject_id = u.id AND a.action = 'unit.create')"
    "  ORDER BY 2 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'token', t.user_id, t.id FROM tokens t WHERE NOT EXISTS (SELECT 1 FROM audit_events a"
    "  WHERE a.subject_type = 'user' AND a.subject_id = t.user_id AND a.action = 'token.issue'"
    "  AND " DETAIL("a", "token_id") " = t.id::text) ORDER BY 3 LIMIT $1)"
    " UNION ALL "
    "(SELECT 'counter', coalesce(k.unit_id, g.reg_unit), coalesce(k.year, g.reg_year)"
    "  FROM clue_counters k FULL JOIN (SELECT reg_unit, reg_year, max(reg_seq) AS last_seq FROM clues"
    "    GROUP BY 1, 2) g ON g.reg_unit = k.unit_id AND g.reg_year = k.year"
    "  WHERE k.last_seq IS DISTINCT FROM g.last_seq ORDER BY 2, 3 LIMIT $1)";
/* clang-format on */

typedef struct export_ctx {
  int64_t after;
  int32_t page;
  uint64_t size; /* the tree's leaves before the statement ran: the page merges no more */
  authz_principal_t viewer;
} export_ctx_t;

static char *col(rpc_call_t *call, const db_result_t *r, int row, int c, uint32_t *nulls, int bit,
                 int *oom) {
  char *s;
  if (db_value(r, row, c) == NULL) {
    if (bit >= 0)
      *nulls |= 1u << bit;
    return (char *)protobuf_c_empty_string;
  }
  s = svc_col_str(call, r, row, c);
  if (s == NULL) {
    *oom = 1;
    return (char *)protobuf_c_empty_string;
  }
  return s;
}

static void fill_event(rpc_call_t *call, const db_result_t *r, int row,
                       const authz_principal_t *viewer, Clue__V1__LeafEvent *ev, int *oom) {
  uint32_t nulls = 0;

  ev->seq = svc_col_i64(r, row, AUDIT_LEAF_SEQ);
  ev->at_us = svc_col_i64(r, row, AUDIT_LEAF_AT_US);
  ev->actor_user_id = col(call, r, row, AUDIT_LEAF_ACTOR_USER, &nulls, AUDIT_LEAF_ACTOR_USER, oom);
  ev->actor_unit_id = col(call, r, row, AUDIT_LEAF_ACTOR_UNIT, &nulls, AUDIT_LEAF_ACTOR_UNIT, oom);
  ev->action = col(call, r, row, AUDIT_LEAF_ACTION, &nulls, AUDIT_LEAF_ACTION, oom);
  ev->subject_type = col(call, r, row, AUDIT_LEAF_SUBJECT_TYPE, &nulls, AUDIT_LEAF_SUBJECT_TYPE, oom);
  ev->subject_id = col(call, r, row, AUDIT_LEAF_SUBJECT_ID, &nulls, AUDIT_LEAF_SUBJECT_ID, oom);
  ev->owner_unit = col(call, r, row, AUDIT_LEAF_OWNER_UNIT, &nulls, AUDIT_LEAF_OWNER_UNIT, oom);
  ev->from_state = col(call, r, row, AUDIT_LEAF_FROM_STATE, &nulls, AUDIT_LEAF_FROM_STATE, oom);
  ev->to_state = col(call, r, row, AUDIT_LEAF_TO_STATE, &nulls, AUDIT_LEAF_TO_STATE, oom);
  ev->actor_token_id = col(call, r, row, AUDIT_LEAF_TOKEN, &nulls, AUDIT_LEAF_TOKEN, oom);
  /* What an ADMIN may not see of clue and case events, nor anyone but a LEADER or an
   * AUDITOR of a recusal (authz_audit_event_whole(), as ListAuditEvents): reason, details and
   * the chain hashes. The leaf hash stands for them, so that an ADMIN can still check the
   * tree (issue 12). */
  if (!authz_audit_event_whole(viewer, ev->subject_type, ev->action)) {
    ev->redacted = 1;
  } else {
    ev->prev_hash = col(call, r, row, AUDIT_LEAF_PREV_HASH, &nulls, AUDIT_LEAF_PREV_HASH, oom);
    ev->hash = col(call, r, row, AUDIT_LEAF_HASH, &nulls, AUDIT_LEAF_HASH, oom);
    ev->reason = col(call, r, row, AUDIT_LEAF_REASON, &nulls, AUDIT_LEAF_REASON, oom);
    ev->details = col(call, r, row, AUDIT_LEAF_DETAILS, &nulls, AUDIT_LEAF_DETAILS, oom);
    ev->current_sha256 = col(call, r, row, EXPORT_COL_CONTENT, &nulls, -1, oom);
    ev->current_reporter_sha256 = col(call, r, row, EXPORT_COL_CONTENT + 1, &nulls, -1, oom);
    ev->current_facts = col(call, r, row, EXPORT_COL_CONTENT + 2, &nulls, -1, oom);
    ev->current_row = col(call, r, row, EXPORT_COL_CONTENT + 3, &nulls, -1, oom);
  }
  ev->nulls = nulls;
}

static void unlogged_done(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__ExportAuditEventsResponse *resp = arg;
  size_t rows = (size_t)db_rows(r), n = rows ? rows : 1;
  int64_t *notes = rpc_call_alloc(call, n * sizeof(int64_t));
  int64_t *clues = rpc_call_alloc(call, n * sizeof(int64_t));
  Clue__V1__UnexplainedRow **other = rpc_call_alloc(call, n * sizeof(*other));
  Clue__V1__UnexplainedRow *slots = rpc_call_alloc(call, n * sizeof(*slots));

  if (notes == NULL || clues == NULL || other == NULL || slots == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  resp->unlogged_note_ids = notes;
  resp->unlogged_clue_ids = clues;
  resp->unexplained_rows = other;
  for (size_t i = 0; i < rows; i++) {
    const char *kind = db_value(r, (int)i, 0);
    int64_t id = svc_col_i64(r, (int)i, 1);
    Clue__V1__UnexplainedRow *u;
    if (strcmp(kind, "note") == 0) {
      notes[resp->n_unlogged_note_ids++] = id;
    } else if (strcmp(kind, "clue") == 0) {
      clues[resp->n_unlogged_clue_ids++] = id;
    } else {
      u = &slots[resp->n_unexplained_rows];
      clue__v1__unexplained_row__init(u);
      u->kind = svc_col_str(call, r, (int)i, 0);
      u->subject_id = id;
      u->member_id = svc_col_i64(r, (int)i, 2);
      if (u->kind == NULL) {
        rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
      }
      other[resp->n_unexplained_rows++] = u;
    }
  }
  (void)rpc_reply(call, &resp->base);
}

static void export_done(rpc_call_t *call, const db_result_t *r, void *arg) {
  export_ctx_t *ctx = arg;
  Clue__V1__ExportAuditEventsResponse *resp = rpc_call_alloc(call, sizeof(*resp));
  audit_tree_t *t = tree_of(call);
  const merkle_tree_t *mt;
  int rows = db_rows(r), full = rows == ctx->page, oom = 0;
  uint64_t size, j;
  Clue__V1__LeafEvent *evs, **ptrs;
  size_t out = 0, cap = (size_t)ctx->page;
  int i = 0;

  if (t == NULL)
    return;
  mt = audit_tree_merkle(t);
  /* Not audit_tree_size(t) now: the builder may have appended leaves since the statement
   * took its snapshot, and their events, unseen by it, would go out as missing (deleted). */
  size = ctx->size;
  evs = rpc_call_alloc(call, cap * sizeof(*evs));
  ptrs = rpc_call_alloc(call, cap * sizeof(*ptrs));
  if (evs == NULL || ptrs == NULL || resp == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  /* The first leaf after ctx->after. */
  {
    uint64_t lo = 0, hi = size;
    while (lo < hi) {
      uint64_t mid = lo + (hi - lo) / 2;
      if (audit_tree_seq(t, mid) <= ctx->after)
        lo = mid + 1;
      else
        hi = mid;
    }
    j = lo;
  }
  /* Merge the events and the tree's leaves in seq order. */
  size_t bytes = 0;
  while (out < cap && bytes < EXPORT_PAGE_BYTES) {
    int64_t es = i < rows ? svc_col_i64(r, i, AUDIT_LEAF_SEQ) : INT64_MAX;
    int64_t ls = j < size ? audit_tree_seq(t, j) : INT64_MAX;
    Clue__V1__LeafEvent *ev = &evs[out];

    if (es == INT64_MAX && (full || ls == INT64_MAX))
      break; /* past the last event read: later leaves go with the next page */
    clue__v1__leaf_event__init(ev);
    if (ls < es) {
      ev->seq = ls;
      ev->missing = 1;
      ev->leaf_index = (int64_t)j;
      ev->leaf_hash = bytes_copy(call, merkle_tree_leaf(mt, j), MERKLE_HASH_LEN, &oom);
      j++;
    } else {
      fill_event(call, r, i, &ctx->viewer, ev, &oom);
      bytes += strlen(ev->reason) + strlen(ev->details) + strlen(ev->current_facts) +
               strlen(ev->current_row) + 256;
      if (ls == es) {
        ev->leaf_index = (int64_t)j;
        ev->leaf_hash = bytes_copy(call, merkle_tree_leaf(mt, j), MERKLE_HASH_LEN, &oom);
        j++;
      } else {
        ev->leaf_index = -1;
      }
      i++;
    }
    ptrs[out++] = ev;
  }
  clue__v1__export_audit_events_response__init(resp);
  resp->events = ptrs;
  resp->n_events = out;
  resp->tree_size = (int64_t)size;
  resp->tree_last_seq = size ? audit_tree_seq(t, size - 1) : 0;
  resp->done = !full && i >= rows && j >= size;
  if (oom) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (resp->done) {
    const char *params[1] = {svc_i64(call, EXPORT_UNLOGGED_MAX, 0)};
    if (params[0] == NULL)
      rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    else
      svc_query(call, sql_unlogged, 1, params, unlogged_done, resp);
    return;
  }
  (void)rpc_reply(call, &resp->base);
}

static void export_events(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ExportAuditEventsRequest *req = (const void *)m;
  export_ctx_t *ctx = rpc_call_alloc(call, sizeof(*ctx));
  const char *params[2];
  audit_tree_t *t;
  validate_errors_t e;

  if (require_auditor(call) != 0 || (t = tree_of(call)) == NULL)
    return;
  if (ctx == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  /* As every list's: both fields' violations at once, a page size past the most clamped. */
  validate_errors_init(&e);
  if (req->after_seq < 0)
    validate_add(&e, "after_seq", "after_seq must not be negative");
  validate_each(&e, validate_page_size_of(req->page_size, EXPORT_PAGE_DEFAULT, EXPORT_PAGE_MAX,
                                          &ctx->page, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  ctx->after = req->after_seq;
  ctx->viewer = clue_principal_of(rpc_call_principal(call));
  /* The tree's size before the statement runs, so that its snapshot holds the event of every
   * leaf merged (each leaf is appended after its event committed): a leaf without its event
   * is then one deleted, never one the snapshot predates. The tree only grows, so these
   * leaves are still there when the rows arrive. */
  ctx->size = audit_tree_size(t);
  params[0] = svc_i64(call, ctx->after, 0);
  params[1] = svc_i64(call, ctx->page, 0);
  svc_query(call, sql_export, 2, params, export_done, ctx);
}

/* ---- VerifyAuditChain: the tree ------------------------------------------------------------ */

#define VERIFY_PAGE 5000

typedef struct tree_verify {
  Clue__V1__VerifyAuditChainResponse *resp;
  uint64_t size;    /* the tree's leaves when the walk began: later ones are not judged */
  int64_t last_seq; /* the seq of its last leaf */
  uint64_t next;    /* the leaf the next event in the tree must be */
  int64_t after;    /* events up to this seq are judged */
  uint64_t cp_size;
  int has_cp;
  char cp_root[2 * MERKLE_HASH_LEN + 1];
  char *cp_note;
} tree_verify_t;

static void verify_finish(rpc_call_t *call, tree_verify_t *v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void verify_finish(rpc_call_t *call, tree_verify_t *v, const char *fmt, ...) {
  if (fmt) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    v->resp->ok = 0;
    v->resp->tree_problem = rpc_call_printf(call, "%s", buf);
    if (v->resp->tree_problem == NULL) {
      rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
      return;
    }
  }
  (void)rpc_reply(call, &v->resp->base);
}

/* After the events: the tree against the latest checkpoint. */
static void verify_checkpoint(rpc_call_t *call, tree_verify_t *v) {
  audit_tree_t *t = rpc_call_server(call)->tree;
  const note_key_t *key = audit_tree_key(t);
  merkle_hash_t root;
  char hex[2 * MERKLE_HASH_LEN + 1], why[512];
  checkpoint_t cp;
  audit_cp_signer_t signer;

  if (!v->has_cp) {
    verify_finish(call, v, NULL);
    return;
  }
  /* Signed by this server's key, or by the one it replaced (--audit-previous-key). */
  if (key &&
      (signer = audit_tree_open_checkpoint(t, v->cp_note, &cp, why, sizeof(why))) != AUDIT_CP_OWN &&
      signer != AUDIT_CP_PREVIOUS) {
    if (signer == AUDIT_CP_OTHER_KEY)
      verify_finish(call, v,
                    "%s (%llu events): this server cannot check it; if its key was "
                    "replaced, it is started with --audit-previous-key",
                    why, (unsigned long long)v->cp_size);
    else
      verify_finish(call, v,
                    "the latest checkpoint (%llu events) is not signed by this server's key",
                    (unsigned long long)v->cp_size);
    return;
  }
  if (key && (merkle_hex(cp.root, MERKLE_HASH_LEN, hex), cp.size != v->cp_size ||
                                                         strcmp(hex, v->cp_root) != 0)) {
    verify_finish(call, v, "the latest checkpoint's row (%llu events) does not match its signed note",
                  (unsigned long long)v->cp_size);
    return;
  }
  /* (An instance that has not read that far has nothing to compare.) */
  if (audit_tree_size(t) >= v->cp_size) {
    if (merkle_tree_root(audit_tree_merkle(t), v->cp_size, root) != 0) {
      rpc_fail(call, GRPC_INTERNAL, "internal error");
      return;
    }
    merkle_hex(root, MERKLE_HASH_LEN, hex);
    if (strcmp(hex, v->cp_root) != 0) {
      verify_finish(call, v, "the tree's first %llu leaves do not hash to the latest checkpoint's root",
                    (unsigned long long)v->cp_size);
      return;
    }
  }
  verify_finish(call, v, NULL);
}

static void verify_page(rpc_call_t *call, tree_verify_t *v);

static void verify_rows(rpc_call_t *call, const db_result_t *r, void *arg) {
  tree_verify_t *v = arg;
  audit_tree_t *t = tree_of(call);
  int rows = db_rows(r);

  if (t == NULL)
    return;
  for (int i = 0; i < rows; i++) {
    const char *f[AUDIT_LEAF_NFIELDS];
    int64_t seq = svc_col_i64(r, i, AUDIT_LEAF_SEQ), idx;
    merkle_hash_t h;

    if (seq > v->last_seq) {
      rows = 0; /* past the tree: not logged yet */
      break;
    }
    idx = audit_tree_index(t, seq);
    if (idx < 0) {
      verify_finish(call, v, "seq %lld (%s #%s): the event is not in the tree, which holds the "
                             "events before and after it: it was inserted",
                    (long long)seq, db_value(r, i, AUDIT_LEAF_SUBJECT_TYPE),
                    db_value(r, i, AUDIT_LEAF_SUBJECT_ID));
      return;
    }
    if ((uint64_t)idx != v->next) {
      verify_finish(call, v, "seq %lld: the event is gone from the log, but the tree holds it as "
                             "leaf %llu: it was deleted",
                    (long long)audit_tree_seq(t, v->next), (unsigned long long)v->next);
      return;
    }
    for (int k = 0; k < AUDIT_LEAF_NFIELDS; k++)
      f[k] = db_value(r, i, k);
    if (audit_leaf_hash(f, h) != 0) {
      rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
      return;
    }
    if (memcmp(h, merkle_tree_leaf(audit_tree_merkle(t), (uint64_t)idx), MERKLE_HASH_LEN) != 0) {
      verify_finish(call, v, "seq %lld (%s #%s, %s): the event does not match its leaf in the "
                             "tree: it was changed after it was logged",
                    (long long)seq, f[AUDIT_LEAF_SUBJECT_TYPE], f[AUDIT_LEAF_SUBJECT_ID],
                    f[AUDIT_LEAF_ACTION]);
      return;
    }
    v->next++;
    v->after = seq;
  }
  if (rows == VERIFY_PAGE && v->next < v->size) {
    verify_page(call, v);
    return;
  }
  if (v->next < v->size) {
    verify_finish(call, v, "seq %lld: the event is gone from the log, but the tree holds it as "
                           "leaf %llu: it was deleted",
                  (long long)audit_tree_seq(t, v->next), (unsigned long long)v->next);
    return;
  }
  verify_checkpoint(call, v);
}

static void verify_page(rpc_call_t *call, tree_verify_t *v) {
  const char *params[2] = {svc_i64(call, v->after, 0), svc_i64(call, VERIFY_PAGE, 0)};
  svc_query(call,
            "SELECT " AUDIT_LEAF_COLS " FROM audit_events e WHERE e.seq > $1 ORDER BY e.seq LIMIT $2",
            2, params, verify_rows, v);
}

void audit_tree_verify(rpc_call_t *call, Clue__V1__VerifyAuditChainResponse *resp,
                       const char *cp_size, const char *cp_root_hex, const char *cp_note) {
  audit_tree_t *t = tree_of(call);
  tree_verify_t *v = rpc_call_alloc(call, sizeof(*v));

  if (t == NULL)
    return;
  if (v == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  memset(v, 0, sizeof(*v));
  v->resp = resp;
  v->size = audit_tree_size(t);
  v->last_seq = v->size ? audit_tree_seq(t, v->size - 1) : 0;
  if (cp_size && cp_root_hex && cp_note) {
    v->has_cp = 1;
    v->cp_size = (uint64_t)strtoll(cp_size, NULL, 10);
    resp->checkpoint_size = (int64_t)v->cp_size;
    snprintf(v->cp_root, sizeof(v->cp_root), "%s", cp_root_hex);
    v->cp_note = rpc_call_printf(call, "%s", cp_note);
    if (v->cp_note == NULL) {
      rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
      return;
    }
  }
  if (v->size == 0) {
    verify_checkpoint(call, v);
    return;
  }
  verify_page(call, v);
}

/* ---- the method table ------------------------------------------------------------------- */

#define PROOF_METHOD(name, fn, in, out) SVC_CLUE_METHOD("AuditService", name, fn, in, out)

const rpc_method_t audit_proof_methods[] = {
    PROOF_METHOD("GetCheckpoint", get_checkpoint, get_checkpoint_request, checkpoint),
    PROOF_METHOD("GetInclusionProof", get_inclusion, get_inclusion_proof_request, inclusion_proof),
    PROOF_METHOD("GetConsistencyProof", get_consistency, get_consistency_proof_request,
                 consistency_proof),
    /* Its last page looks over the whole log for what is missing from it. */
    SVC_HEAVY_METHOD("AuditService", "ExportAuditEvents", export_events,
                     export_audit_events_request, export_audit_events_response),
};
const size_t audit_proof_nmethods = sizeof(audit_proof_methods) / sizeof(audit_proof_methods[0]);
