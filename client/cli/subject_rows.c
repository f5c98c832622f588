/* The rows of rectification items, users, units and joint cases against their chains
 * (subject_rows.h). Each row is written only by functions that append an event on the
 * subject's own chain in the same transaction, and the event records what they set
 * (docs/AUDIT.md):
 *   rectification item (rect_create() of 0014 and 0035, rect_move() of 0014):
 *     rect.create   the host unit, description, category, source, source clue and case,
 *                   deadline and version in its details, the state (OPEN) in its to_state,
 *                   the supervising unit in its owner_unit and the recording user as its
 *                   actor; no plan, evidence, comment nor reason for reopening yet;
 *     rect.record_plan, .submit, .verify, .reopen: the state (to_state) and version, and
 *                   what the move sets: the plan and its notes (details.plan, .note_ids), the
 *                   evidence and its notes (details.evidence, .note_ids), the verification
 *                   comment (the reason; none is an empty comment), the reason for reopening;
 *   user (admin_create_user(), admin_disable_user(), admin_bootstrap() of 0002, 0010, 0011):
 *     user.create   the unit, name and role in its details, not disabled;
 *     user.disable  disabled (token.issue and token.revoke change none of these);
 *   unit (admin_create_unit(), admin_bootstrap()):
 *     unit.create   the kind, code, name, liaison room and host units in its details (the
 *                   bootstrap's ADMIN unit records neither of the last two: it has none);
 *   joint case (case_create() of 0005 and its successors):
 *     case.create   the title and basis in its details and the creating user as its actor
 *                   (case.add_participant and .remove_participant change none of these; the
 *                   participants are told apart in the export's unexplained rows).
 * An action this cluectl does not know on such a chain explains nothing: it is taken to change
 * none of the row (as clue_rows.c takes one on a clue's chain), so the row is still judged
 * against what the known events say, and a difference names the unknown action too. Ending the
 * judging there would let anyone who can append one event (a superuser: "user.touch" with empty
 * details) change the row unseen from then on. A newer server's action that sets a judged member
 * is then told as a difference, which a newer cluectl explains: verify fails, never passes,
 * on what it cannot account for.
 *
 * A recusal is not a chain of its own: its clue.recuse event records its reason (the event's)
 * and who recorded it (the actor), which the export gives the row of (current_facts).
 *
 * Nor is a token: its events are on its user's chain and name it in details.token_id
 * (admin_issue_token(), admin_revoke_token(), admin_bootstrap() of 0002, 0010, 0011, 0040):
 *   token.issue   its user (the subject), who issued it (the actor; none for the bootstrap's
 *                 token, which is its user's own), whether it is an enrollment token
 *                 (details.enrollment, since 0010), its note (details.note) and, since 0040,
 *                 the SHA-256 of its stored hash (details.hash_sha256); not revoked;
 *   token.revoke  its user, revoked.
 * The export gives the token's row with each (current_facts), its revoked state only with the
 * latest event naming it, as a later one revoked it.
 *
 * Nor are the rows that give access to a clue or a joint case: each is written with an event
 * whose actor is who gave it (clue_set_handler(), case_join(), case_add_participant(),
 * case_create() of 0005 and their successors), and the export gives the row with the event
 * that wrote it last (current_facts):
 *   clue.assign           the handler row of its details.user_id: the assigning user and the
 *                         unit it acted for (assigned_by, assigned_by_unit; 0034 filled the
 *                         latter of older rows with the assigner's unit, which users never
 *                         change);
 *   case.add_clue         the clue's case_clues row: who listed it (added_by);
 *   case.add_participant  the participant row of its details.unit_id: who added it (added_by);
 *   case.create           the participant rows of the units it lists that no later event
 *                         added again or removed (participants_added_by, by unit id). */

#include "subject_rows.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/merkle.h"
#include "cmd_audit_tree.h"
#include "row_judge.h"

/* A member of the row (of current_row), and how a message names and shows it. */
typedef struct member {
  const char *key, *name;
  int quoted; /* a free text */
  int time;   /* milliseconds since the epoch */
} member_t;

enum {
  R_STATE,
  R_VERSION,
  R_SUPERVISING,
  R_CREATED_BY,
  R_HOST,
  R_DESCRIPTION,
  R_CATEGORY,
  R_SOURCE,
  R_SOURCE_CLUE,
  R_SOURCE_CASE,
  R_DEADLINE,
  R_PLAN,
  R_PLAN_NOTES,
  R_EVIDENCE,
  R_EVIDENCE_NOTES,
  R_COMMENT,
  R_REOPEN,
  R_MEMBERS
};
static const member_t rect_members[R_MEMBERS] = {
    {"state", "state", 0, 0},
    {"version", "version", 0, 0},
    {"supervising_unit", "supervising unit", 0, 0},
    {"created_by", "recording user", 0, 0},
    {"host_unit", "host unit", 1, 0},
    {"description", "description", 1, 0},
    {"category", "category", 1, 0},
    {"source", "source", 0, 0},
    {"source_clue_id", "source clue", 0, 0},
    {"source_case_id", "source joint case", 0, 0},
    {"deadline_ms", "deadline", 0, 1},
    {"plan", "plan", 1, 0},
    {"plan_note_ids", "list of plan notes", 0, 0},
    {"evidence", "evidence", 1, 0},
    {"evidence_note_ids", "list of evidence notes", 0, 0},
    {"verify_comment", "verification comment", 1, 0},
    {"reopen_reason", "reason for reopening", 1, 0},
};

enum { U_UNIT, U_NAME, U_ROLE, U_DISABLED, U_MEMBERS };
static const member_t user_members[U_MEMBERS] = {
    {"unit_id", "unit", 0, 0},
    {"name", "name", 1, 0},
    {"role", "role", 0, 0},
    {"disabled", "disabled flag", 0, 0},
};

enum { N_KIND, N_CODE, N_NAME, N_LIAISON, N_HOSTS, N_MEMBERS };
static const member_t unit_members[N_MEMBERS] = {
    {"kind", "kind", 0, 0},
    {"code", "code", 0, 0},
    {"name", "name", 1, 0},
    {"liaison_room_id", "liaison room", 0, 0},
    {"host_units", "list of host units", 0, 0},
};

enum { C_TITLE, C_BASIS, C_CREATED_BY, C_MEMBERS };
static const member_t case_members[C_MEMBERS] = {
    {"title", "title", 1, 0},
    {"basis", "basis", 1, 0},
    {"created_by", "creating user", 0, 0},
};

#define MEMBERS_MAX R_MEMBERS

enum { K_RECT, K_USER, K_UNIT, K_CASE, KINDS };

/* A kind of subject: its chain, the action that inserts its row and every action of the chain
 * this cluectl knows, its row's members, and how a message names it. */
typedef struct kind_def {
  const char *subject_type;
  const char *create;
  const char *const *actions; /* NULL-terminated */
  const member_t *members;
  int n;
  const char *whose; /* "the item's" */
  const char *what;  /* "rectification item" */
} kind_def_t;

static const char *const rect_actions[] = {"rect.create", "rect.record_plan", "rect.submit",
                                           "rect.verify", "rect.reopen",      NULL};
static const char *const user_actions[] = {"user.create", "user.disable", "token.issue",
                                           "token.revoke", NULL};
static const char *const unit_actions[] = {"unit.create", NULL};
static const char *const case_actions[] = {"case.create", "case.add_participant",
                                           "case.remove_participant", NULL};

static const kind_def_t kinds[KINDS] = {
    {"rectification", "rect.create", rect_actions, rect_members, R_MEMBERS, "the item's",
     "rectification item"},
    {"user", "user.create", user_actions, user_members, U_MEMBERS, "the user's", "user"},
    {"unit", "unit.create", unit_actions, unit_members, N_MEMBERS, "the unit's", "unit"},
    {"case", "case.create", case_actions, case_members, C_MEMBERS, "the joint case's",
     "joint case"},
};

struct subject_replay {
  int64_t id;
  int kind;
  int created;    /* its creating event was read: the row must exist */
  int lost;       /* an event of the chain was not read whole: nothing is judged */
  int64_t unknown_seq; /* the latest event whose action this cluectl does not know, 0: none */
  char unknown[40];    /* its action (cut short) */
  unsigned known; /* bit per member: what the events told so far */
  unsigned json;  /* bit per member: want is a JSON value as the details render it, else a text */
  char *want[MEMBERS_MAX]; /* NULL: none (SQL NULL) */
  size_t len[MEMBERS_MAX];
};

void subject_rows_init(subject_rows_t *rows) {
  memset(rows, 0, sizeof(*rows));
}

static void forget_members(subject_replay_t *s) {
  for (int m = 0; m < MEMBERS_MAX; m++) {
    free(s->want[m]);
    s->want[m] = NULL;
  }
  s->known = s->json = 0;
}

void subject_rows_free(subject_rows_t *rows) {
  for (size_t i = 0; i < rows->cap; i++)
    forget_members(&rows->slot[i]);
  free(rows->slot);
  subject_rows_init(rows);
}

static int kind_of(const char *subject_type) {
  for (int k = 0; k < KINDS; k++)
    if (strcmp(subject_type, kinds[k].subject_type) == 0)
      return k;
  return -1;
}

static size_t slot_of(const subject_rows_t *rows, int kind, int64_t id) {
  size_t i =
      (size_t)(((uint64_t)id * KINDS + (uint64_t)kind) * 0x9e3779b97f4a7c15u) & (rows->cap - 1);
  while (rows->slot[i].id != 0 && (rows->slot[i].id != id || rows->slot[i].kind != kind))
    i = (i + 1) & (rows->cap - 1);
  return i;
}

static int grow(subject_rows_t *rows) {
  subject_rows_t bigger = {NULL, rows->cap ? rows->cap * 2 : 256, rows->n};

  bigger.slot = calloc(bigger.cap, sizeof(*bigger.slot));
  if (bigger.slot == NULL)
    return -1;
  for (size_t i = 0; i < rows->cap; i++)
    if (rows->slot[i].id != 0)
      bigger.slot[slot_of(&bigger, rows->slot[i].kind, rows->slot[i].id)] = rows->slot[i];
  free(rows->slot);
  *rows = bigger;
  return 0;
}

static int64_t id_of(const Clue__V1__LeafEvent *e) {
  char *end;
  long long id = strtoll(e->subject_id, &end, 10);
  return end == e->subject_id || *end != '\0' ? 0 : (int64_t)id;
}

/* The replay of e's subject, made if new; NULL for a subject of another kind. */
static subject_replay_t *replay_of(subject_rows_t *rows, const Clue__V1__LeafEvent *e, int *oom) {
  int kind = kind_of(e->subject_type);
  int64_t id = id_of(e);
  size_t i;

  if (kind < 0 || id == 0)
    return NULL;
  if ((rows->n + 1) * 2 > rows->cap && grow(rows) != 0) {
    *oom = 1;
    return NULL;
  }
  i = slot_of(rows, kind, id);
  if (rows->slot[i].id == 0) {
    rows->slot[i].id = id;
    rows->slot[i].kind = kind;
    rows->n++;
  }
  return &rows->slot[i];
}

/* Sets member m to v (n bytes), a JSON value (json) or a text; NULL: none. -1: out of memory. */
static int set(subject_replay_t *s, int m, const char *v, size_t n, int json) {
  char *copy = NULL;

  if (v != NULL) {
    if ((copy = malloc(n + 1)) == NULL)
      return -1;
    memcpy(copy, v, n);
    copy[n] = '\0';
  }
  free(s->want[m]);
  s->want[m] = copy;
  s->len[m] = n;
  s->known |= 1u << m;
  s->json = json ? s->json | 1u << m : s->json & ~(1u << m);
  return 0;
}

static int set_text(subject_replay_t *s, int m, const char *text) {
  return set(s, m, text, text ? strlen(text) : 0, 0);
}

static int set_json(subject_replay_t *s, int m, const char *json) {
  return set(s, m, json, strlen(json), 1);
}

/* Sets member m to member key of e's details; to dflt (JSON) when the details have none, or
 * makes m unknown when dflt is NULL (an event that did not record it). */
static int set_detail(subject_replay_t *s, int m, const Clue__V1__LeafEvent *e, const char *key,
                      const char *dflt) {
  size_t n;
  const char *v = audit_json_raw(e->details, key, &n);

  if (v != NULL)
    return set(s, m, v, n, 1);
  if (dflt != NULL)
    return set_json(s, m, dflt);
  s->known &= ~(1u << m);
  return 0;
}

/* The text of canonical field bit of e, NULL when SQL NULL. */
static const char *field(const Clue__V1__LeafEvent *e, int bit, const char *text) {
  return (e->nulls & (1u << bit)) ? NULL : text;
}

static int is(const Clue__V1__LeafEvent *e, const char *action) {
  return strcmp(e->action, action) == 0;
}

static int known_action(const kind_def_t *k, const char *action) {
  for (const char *const *a = k->actions; *a != NULL; a++)
    if (strcmp(*a, action) == 0)
      return 1;
  return 0;
}

static int apply_rect(subject_replay_t *s, const Clue__V1__LeafEvent *e) {
  const char *reason = field(e, AUDIT_LEAF_REASON, e->reason);
  int rc = 0;

  if (is(e, "rect.create")) {
    static const struct {
      int m;
      const char *key;
    } created[] = {{R_HOST, "host_unit"},
                   {R_DESCRIPTION, "description"},
                   {R_CATEGORY, "category"},
                   {R_SOURCE, "source"},
                   {R_SOURCE_CLUE, "source_clue_id"},
                   {R_SOURCE_CASE, "source_case_id"},
                   {R_DEADLINE, "deadline_ms"}};
    for (size_t i = 0; i < sizeof(created) / sizeof(created[0]); i++)
      rc |= set_detail(s, created[i].m, e, created[i].key, NULL);
    rc |= set_text(s, R_SUPERVISING, field(e, AUDIT_LEAF_OWNER_UNIT, e->owner_unit));
    rc |= set_text(s, R_CREATED_BY, field(e, AUDIT_LEAF_ACTOR_USER, e->actor_user_id));
    rc |= set_json(s, R_PLAN, "\"\"");
    rc |= set_json(s, R_PLAN_NOTES, "[]");
    rc |= set_json(s, R_EVIDENCE, "\"\"");
    rc |= set_json(s, R_EVIDENCE_NOTES, "[]");
    rc |= set_json(s, R_COMMENT, "\"\"");
    rc |= set_json(s, R_REOPEN, "\"\"");
  } else if (is(e, "rect.record_plan")) {
    rc |= set_detail(s, R_PLAN, e, "plan", NULL);
    rc |= set_detail(s, R_PLAN_NOTES, e, "note_ids", NULL);
  } else if (is(e, "rect.submit")) {
    rc |= set_detail(s, R_EVIDENCE, e, "evidence", NULL);
    rc |= set_detail(s, R_EVIDENCE_NOTES, e, "note_ids", NULL);
  } else if (is(e, "rect.verify")) {
    rc |= set_text(s, R_COMMENT, reason ? reason : "");
  } else if (is(e, "rect.reopen")) {
    rc |= set_text(s, R_REOPEN, reason);
  }
  rc |= set_text(s, R_STATE, field(e, AUDIT_LEAF_TO_STATE, e->to_state));
  rc |= set_detail(s, R_VERSION, e, "version", NULL);
  return rc ? -1 : 0;
}

static int apply(subject_replay_t *s, const Clue__V1__LeafEvent *e) {
  int rc = 0;

  switch (s->kind) {
  case K_RECT:
    return apply_rect(s, e);
  case K_USER:
    if (is(e, "user.create")) {
      rc |= set_detail(s, U_UNIT, e, "unit_id", NULL);
      rc |= set_detail(s, U_NAME, e, "name", NULL);
      rc |= set_detail(s, U_ROLE, e, "role", NULL);
      rc |= set_json(s, U_DISABLED, "false");
    } else if (is(e, "user.disable")) {
      rc |= set_json(s, U_DISABLED, "true");
    }
    break;
  case K_UNIT:
    rc |= set_detail(s, N_KIND, e, "kind", NULL);
    rc |= set_detail(s, N_CODE, e, "code", NULL);
    rc |= set_detail(s, N_NAME, e, "name", NULL);
    rc |= set_detail(s, N_LIAISON, e, "liaison_room_id", "null");
    rc |= set_detail(s, N_HOSTS, e, "host_units", "[]");
    break;
  case K_CASE:
    if (is(e, "case.create")) {
      rc |= set_detail(s, C_TITLE, e, "title", NULL);
      rc |= set_detail(s, C_BASIS, e, "basis", NULL);
      rc |= set_text(s, C_CREATED_BY, field(e, AUDIT_LEAF_ACTOR_USER, e->actor_user_id));
    }
    break;
  default:
    break;
  }
  return rc ? -1 : 0;
}

int subject_rows_apply(subject_rows_t *rows, const Clue__V1__LeafEvent *e) {
  int oom = 0;
  subject_replay_t *s = replay_of(rows, e, &oom);
  const kind_def_t *k;

  if (s == NULL || s->lost)
    return oom ? -1 : 0;
  k = &kinds[s->kind];
  if (!known_action(k, e->action)) {
    s->unknown_seq = e->seq;
    snprintf(s->unknown, sizeof(s->unknown), "%s", e->action);
    return 0;
  }
  if (is(e, k->create)) {
    forget_members(s);
    s->created = 1;
  }
  return s->created ? apply(s, e) : 0;
}

int subject_rows_forget(subject_rows_t *rows, const Clue__V1__LeafEvent *e) {
  int oom = 0;
  subject_replay_t *s = replay_of(rows, e, &oom);

  if (s != NULL) {
    s->lost = 1;
    forget_members(s);
  }
  return oom ? -1 : 0;
}

int subject_rows_check(const subject_rows_t *rows, const Clue__V1__LeafEvent *e, char *why,
                       size_t cap) {
  int kind = kind_of(e->subject_type);
  int64_t id = id_of(e);
  const subject_replay_t *s;
  const kind_def_t *k;
  char exists[8];

  if (kind < 0 || id == 0 || e->current_row[0] == '\0' || rows->cap == 0)
    return 0;
  s = &rows->slot[slot_of(rows, kind, id)];
  if (s->id != id || s->lost || !s->created)
    return 0;
  k = &kinds[kind];
  if (audit_json_member(e->current_row, "exists", exists, sizeof(exists)) == 0 &&
      strcmp(exists, "false") == 0) {
    snprintf(why, cap, "%s %lld is gone: the row was deleted", k->what, (long long)id);
    return 1;
  }
  for (int m = 0; m < k->n; m++) {
    const member_t *mb = &k->members[m];
    row_expect_t x = {mb->key,   mb->name,           mb->quoted, s->want[m],
                      s->len[m], (s->json >> m) & 1, mb->time};
    if ((s->known & (1u << m)) && row_judge(e->current_row, k->whose, &x, why, cap)) {
      size_t n = strlen(why);
      if (s->unknown_seq != 0 && n < cap)
        snprintf(why + n, cap - n,
                 " (seq %lld's action, %s, is not one this cluectl knows: it explains none of "
                 "the row)",
                 (long long)s->unknown_seq, s->unknown);
      return 1;
    }
  }
  return 0;
}

int subject_rows_check_recusal(const Clue__V1__LeafEvent *e, char *why, size_t cap) {
  char user[32], whose[64];
  row_expect_t x[3] = {
      {"reason", "reason", 1, field(e, AUDIT_LEAF_REASON, e->reason), 0, 0, 0},
      {"recorded_by", "recording user", 0, field(e, AUDIT_LEAF_ACTOR_USER, e->actor_user_id), 0, 0,
       0},
      {"recorded_by_unit", "recording unit", 0, field(e, AUDIT_LEAF_ACTOR_UNIT, e->actor_unit_id),
       0, 0, 0},
  };

  if (!is(e, "clue.recuse") || e->current_facts[0] == '\0' ||
      audit_json_member(e->details, "user_id", user, sizeof(user)) != 0)
    return 0;
  snprintf(whose, sizeof(whose), "user %s's recusal", user);
  for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
    if (row_judge(e->current_facts, whose, &x[i], why, cap))
      return 1;
  return 0;
}

int subject_rows_check_token(const Clue__V1__LeafEvent *e, char *why, size_t cap) {
  const char *actor = field(e, AUDIT_LEAF_ACTOR_USER, e->actor_user_id);
  int issue = is(e, "token.issue");
  row_expect_t x[6];
  char id[32], whose[48], row[8];
  size_t n = 0, len;
  const char *v;

  if ((!issue && !is(e, "token.revoke")) || strcmp(e->subject_type, "user") != 0 ||
      e->current_facts[0] == '\0' ||
      audit_json_member(e->current_facts, "token_row", row, sizeof(row)) != 0 ||
      audit_json_member(e->details, "token_id", id, sizeof(id)) != 0)
    return 0;
  if (strcmp(row, "false") == 0) {
    snprintf(why, cap, "token %s is gone: the row was deleted", id);
    return 1;
  }
  snprintf(whose, sizeof(whose), "token %s's", id);
  x[n++] = (row_expect_t){"user_id", "user", 0, e->subject_id, 0, 0, 0};
  if (issue) {
    /* What makes it an enrollment token is its issuer (auth.c reads issued_by <> user_id). */
    if ((v = audit_json_raw(e->details, "enrollment", &len)) != NULL)
      x[n++] = (row_expect_t){"enrollment", "enrollment flag", 0, v, len, 1, 0};
    x[n++] = (row_expect_t){"issued_by", "issuing user", 0, actor ? actor : e->subject_id, 0, 0, 0};
    if ((v = audit_json_raw(e->details, "note", &len)) != NULL)
      x[n++] = (row_expect_t){"note", "note", 1, v, len, 1, 0};
    if ((v = audit_json_raw(e->details, "hash_sha256", &len)) != NULL)
      x[n++] = (row_expect_t){"hash_sha256", "stored hash's SHA-256", 0, v, len, 1, 0};
  }
  /* Only with the latest event naming the token (the export leaves it out before). */
  x[n++] = (row_expect_t){"revoked", "revoked flag", 0, issue ? "false" : "true", 0, 0, 0};
  for (size_t i = 0; i < n; i++)
    if (row_judge(e->current_facts, whose, &x[i], why, cap))
      return 1;
  return 0;
}

int subject_rows_check_access(const Clue__V1__LeafEvent *e, char *why, size_t cap) {
  const char *actor = field(e, AUDIT_LEAF_ACTOR_USER, e->actor_user_id);
  int clue = strcmp(e->subject_type, "clue") == 0, jc = strcmp(e->subject_type, "case") == 0;
  row_expect_t by = {"added_by", "adding user", 0, actor, 0, 0, 0};
  char id[32], whose[80];
  const char *objs, *p, *end;
  size_t n;

  if (e->current_facts[0] == '\0')
    return 0;
  if (clue && is(e, "clue.assign") &&
      audit_json_member(e->details, "user_id", id, sizeof(id)) == 0) {
    row_expect_t x[2] = {
        {"assigned_by", "assigning user", 0, actor, 0, 0, 0},
        {"assigned_by_unit", "assigning unit", 0, field(e, AUDIT_LEAF_ACTOR_UNIT, e->actor_unit_id),
         0, 0, 0},
    };
    snprintf(whose, sizeof(whose), "user %s's assignment", id);
    return row_judge(e->current_facts, whose, &x[0], why, cap) ||
           row_judge(e->current_facts, whose, &x[1], why, cap);
  }
  if (clue && is(e, "case.add_clue") &&
      audit_json_member(e->details, "case_id", id, sizeof(id)) == 0) {
    snprintf(whose, sizeof(whose), "the clue's listing in joint case %s", id);
    return row_judge(e->current_facts, whose, &by, why, cap);
  }
  if (jc && is(e, "case.add_participant") &&
      audit_json_member(e->details, "unit_id", id, sizeof(id)) == 0) {
    snprintf(whose, sizeof(whose), "unit %s's participation", id);
    return row_judge(e->current_facts, whose, &by, why, cap);
  }
  if (!jc || !is(e, "case.create") ||
      (objs = audit_json_raw(e->current_facts, "participants_added_by", &n)) == NULL)
    return 0;
  /* {"<unit id>": <user id>, ...}: every key a unit, every value a number, as jsonb renders
   * the export's jsonb_object_agg(); the object is the facts' only member, so a key's pattern
   * is found in it alone. */
  for (p = objs; (p = memchr(p, '"', (size_t)(objs + n - p))) != NULL; p = end + 1) {
    end = memchr(p + 1, '"', (size_t)(objs + n - p - 1));
    if (end == NULL || (size_t)(end - p - 1) >= sizeof(id))
      return 0;
    memcpy(id, p + 1, (size_t)(end - p - 1));
    id[end - p - 1] = '\0';
    snprintf(whose, sizeof(whose), "unit %s's participation", id);
    by.key = id;
    if (row_judge(objs, whose, &by, why, cap))
      return 1;
  }
  return 0;
}
