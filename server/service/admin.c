/* clue.v1.AdminService: units, users and tokens (ADMIN callers only).
 *
 * A request_id, when a call sends one, names one request (docs/WRITES.md, "Retries"): the
 * call's key and fingerprint go to the write's *_once form (0052_admin_and_case_request_ids.sql)
 * as its last two parameters, which answers a retry with the first call's result. A call
 * without one runs the statement it always ran. */

#include "service/admin.h"

#include <string.h>

#include "clue/v1/admin.pb-c.h"
#include "domain/authz.h"
#include "domain/clue_fsm.h"
#include "domain/validate.h"
#include "rpc/auth.h"
#include "service/clue_row.h"
#include "service/common.h"
#include "service/svc_util.h"
#include "service/token.h"

/* Both read a row aliased x: FROM units x, FROM admin_create_unit(...) x, and so on. Host
 * units travel as one text column joined by U+001F, which names may not contain
 * (validate_name refuses control characters). The codes and names of the units a row names
 * are for people to read: a user row's unit comes from USER_FROM's join. */
/* clang-format off */
#define UNIT_COLS                                                                             \
  "x.id, x.kind, x.code, x.name, x.liaison_room_id, array_to_string(x.host_units, chr(31)), " \
  SVC_MS("x.created_at") ", (SELECT r.code FROM units r WHERE r.id = x.liaison_room_id)"
#define USER_COLS \
  "x.id, x.unit_id, x.name, x.role, x.disabled, " SVC_MS("x.created_at") ", xu.code, xu.name"
#define USER_FROM(src) " FROM " src " x LEFT JOIN units xu ON xu.id = x.unit_id"
/* clang-format on */

/* The most host units a GROUP sits in (CreateUnitRequest.host_units). */
#define HOST_UNITS_MAX 100

/* A ListUnits or ListUsers page holds page_size rows (0: the default, more than the most: the
 * most), and no more than SVC_PAGE_BYTES: a GROUP unit may name 100 host units of 100
 * characters (some 40 KB), and a page of a hundred such would not reach a client with gRPC's
 * default limit. */
#define ADMIN_PAGE_DEFAULT 500
#define ADMIN_PAGE_MAX 1000
/* Its page token is the list's, the caller's and the filter's (admin_page_start()). */
#define ADMIN_TOKEN_SCOPE 3
#define UNITS_TOKEN_TAG 0x4c697374556e6974 /* "ListUnit": no other list's token reads here */
#define USERS_TOKEN_TAG 0x4c69737455736572 /* "ListUser" */

static const char *actor_user(rpc_call_t *call) {
  return svc_i64(call, rpc_call_principal(call)->user_id, 0);
}

static const char *actor_unit(rpc_call_t *call) {
  return svc_i64(call, rpc_call_principal(call)->unit_id, 0);
}

/* ---- pages of units and users --------------------------------------------------------- */

/* What a page of a list needs from its request to its reply. */
typedef struct admin_page {
  int64_t scope[ADMIN_TOKEN_SCOPE]; /* what its token is bound to: the list, caller, filter */
  int32_t size;                     /* the most rows it holds */
  int64_t after;                    /* the id its token names: the page starts past it (0: none) */
} admin_page_t;

/* The page a list request asks for, in the call's memory: the list's tag, the caller and the
 * request's filter (a unit kind, a unit id) bind its token, so that another list's, another
 * caller's or another filter's reads as a damaged one would, since it names a place in
 * another list. Every violation goes to e, one per field; NULL when out of memory (the call
 * failed). */
static admin_page_t *admin_page_start(rpc_call_t *call, int64_t tag, int64_t filter,
                                      int32_t page_size, const char *page_token,
                                      validate_errors_t *e) {
  admin_page_t *pg = rpc_call_alloc(call, sizeof(*pg));

  if (pg == NULL) {
    clue_oom(call);
    return NULL;
  }
  pg->scope[0] = tag;
  pg->scope[1] = rpc_call_principal(call)->user_id;
  pg->scope[2] = filter;
  pg->size = ADMIN_PAGE_DEFAULT;
  pg->after = 0;
  validate_each(e, validate_page_size_of(page_size, ADMIN_PAGE_DEFAULT, ADMIN_PAGE_MAX, &pg->size,
                                         validate_slot(e)));
  if (page_token[0] &&
      (pg->after = svc_page_after_in(page_token, pg->scope, ADMIN_TOKEN_SCOPE)) == 0)
    validate_add(e, "page_token",
                 "page_token is malformed or was issued for another list, caller or filter");
  return pg;
}

/* The parameters of a page's query after its filter's ($1): the id it starts past ($2, NULL
 * for the first page) and its LIMIT ($3: one row more than the page holds, which says
 * whether more follow). False when out of memory (the call failed). */
static bool admin_page_params(rpc_call_t *call, const admin_page_t *pg, const char **params) {
  params[1] = pg->after ? svc_i64(call, pg->after, 0) : NULL;
  params[2] = svc_i64(call, (int64_t)pg->size + 1, 0);
  if ((pg->after && params[1] == NULL) || params[2] == NULL) {
    clue_oom(call);
    return false;
  }
  return true;
}

/* The next page's token into *next when more rows follow the one of id last_id (else *next
 * stays empty). False when out of memory (the call failed). */
static bool admin_page_end(rpc_call_t *call, const admin_page_t *pg, bool more, int64_t last_id,
                           char **next) {
  if (more &&
      (*next = (char *)svc_page_token_in(call, pg->scope, ADMIN_TOKEN_SCOPE, last_id)) == NULL) {
    clue_oom(call);
    return false;
  }
  return true;
}

/* ---- units ---------------------------------------------------------------------------- */

static Clue__V1__Unit *unit_from_row(rpc_call_t *call, const db_result_t *r, int row) {
  Clue__V1__Unit *u = rpc_call_alloc(call, sizeof(*u));
  char *hosts;

  if (u == NULL)
    return NULL;
  clue__v1__unit__init(u);
  u->id = svc_col_i64(r, row, 0);
  u->kind = (Clue__V1__UnitKind)auth_unit_kind_from_name(db_value(r, row, 1));
  u->code = svc_col_str(call, r, row, 2);
  u->name = svc_col_str(call, r, row, 3);
  u->liaison_room_id = svc_col_i64(r, row, 4);
  u->created_at_ms = svc_col_i64(r, row, 6);
  u->liaison_room_code = svc_col_str(call, r, row, 7);
  hosts = svc_col_str(call, r, row, 5);
  if (u->code == NULL || u->name == NULL || hosts == NULL || u->liaison_room_code == NULL)
    return NULL;
  if (svc_split_list(call, hosts, &u->host_units, &u->n_host_units) != 0)
    return NULL;
  return u;
}

static void reply_unit(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__Unit *u = unit_from_row(call, r, 0);
  (void)arg;
  if (u == NULL) {
    clue_oom(call);
    return;
  }
  (void)rpc_reply(call, &u->base);
}

/* The write of CreateUnit, once the liaison (if any) was read into r: its kind decides. */
static void create_unit_write(rpc_call_t *call, const db_result_t *r, void *arg) {
  const Clue__V1__CreateUnitRequest *req = arg;
  const char *params[9];
  int np;

  if (r != NULL) {
    clue_unit_kind_t kind = db_rows(r) == 1 ? (clue_unit_kind_t)clue_unit_kind_of(db_value(r, 0, 0))
                                            : CLUE_UNIT_UNSPECIFIED;
    authz_result_t res = authz_liaison_fits(kind);
    if (!authz_ok(&res)) {
      rpc_fail(call, GRPC_INVALID_ARGUMENT, "liaison_room_id %lld is not an existing ROOM unit",
               (long long)req->liaison_room_id);
      return;
    }
  }
  params[0] = actor_user(call);
  params[1] = actor_unit(call);
  params[2] = clue_unit_kind_name((clue_unit_kind_t)req->kind);
  params[3] = req->code;
  /* Names are unique: one that only its spaces (an ideographic space, a pasted byte-order
   * mark) tell from another would pass for it. Stored without them, as clue texts are; one
   * that is the same text in Unicode as another (NFKC) is refused as that one
   * (0061_names_unique_as_text.sql). */
  params[4] = clue_trimmed(call, req->name);
  params[5] = svc_i64(call, req->liaison_room_id, 1);
  params[6] = svc_text_array_trimmed(call, req->host_units, req->n_host_units);
  if (params[0] == NULL || params[1] == NULL || params[4] == NULL || params[6] == NULL) {
    clue_oom(call);
    return;
  }
  if ((np = clue_request_params(call, &req->base, req->request_id, params, 7)) < 0)
    return;
  svc_query(call,
            np == 7 ? "SELECT " UNIT_COLS
                      " FROM admin_create_unit($1, $2, $3, $4, $5, $6, $7::text[]) x"
                    : "SELECT " UNIT_COLS " FROM admin_create_unit_once($1, $2, $3, $4, $5, $6,"
                      " $7::text[], $8, $9) x",
            np, params, reply_unit, NULL);
}

/* Whether host_units[i], trimmed, is one of host_units[0..i-1] trimmed. */
static bool host_unit_repeats(char *const *host_units, size_t i) {
  size_t len, other_len;
  const char *name = validate_trim(host_units[i], &len);

  for (size_t j = 0; j < i; j++) {
    const char *other = validate_trim(host_units[j], &other_len);

    if (other_len == len && memcmp(other, name, len) == 0)
      return true;
  }
  return false;
}

/* Every violation of the request, one per field (validate_errors_t). */
static int validate_create_unit(const Clue__V1__CreateUnitRequest *req, validate_errors_t *e) {
  bool group = req->kind == CLUE__V1__UNIT_KIND__UNIT_KIND_GROUP, known;

  validate_errors_init(e);
  known = validate_each(e, validate_enum("kind", req->kind, 1, 4, validate_slot(e))) == 0;
  validate_each(e, validate_unit_code(req->code, validate_slot(e)));
  validate_each(e, validate_name("name", req->name, true, validate_slot(e)));
  if (group && req->liaison_room_id <= 0)
    validate_add(e, "liaison_room_id", "liaison_room_id is required for a GROUP unit");
  /* Of a kind that is itself refused, what applies to it says nothing more. One violation for
   * both fields, under liaison_room_id as its message was always named. */
  if (known && !group && (req->liaison_room_id != 0 || req->n_host_units > 0))
    validate_add(e, "liaison_room_id", "liaison_room_id and host_units apply only to GROUP units");
  /* The unit.create event lists them: a bounded list keeps that event (and every reader of
   * the audit trail) within a sane size, as each name is. */
  if (req->n_host_units > HOST_UNITS_MAX) {
    char msg[VALIDATE_MESSAGE_MAX];

    snprintf(msg, sizeof(msg), "host_units has more than %d entries", HOST_UNITS_MAX);
    validate_add(e, "host_units", msg);
  }
  for (size_t i = 0; i < req->n_host_units; i++) {
    const char *host = req->host_units[i];

    if (validate_each(e, validate_name("host_units", host, true, validate_slot(e))) != 0)
      break;
    /* As stored (trimmed), each host unit once: a second would be the same place twice in
     * the unit's row, its event and every list that shows them. */
    if (host_unit_repeats(req->host_units, i)) {
      validate_add(e, "host_units", "host_units names the same unit more than once");
      break;
    }
  }
  validate_each(e, validate_uuid("request_id", req->request_id, false, validate_slot(e)));
  return validate_errors_result(e);
}

static void create_unit(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__CreateUnitRequest *req = (const void *)m;
  validate_errors_t errs;
  const char *params[1];

  if (!svc_require_admin(call))
    return;
  if (validate_create_unit(req, &errs) != 0 && clue_invalid_each(call, &errs))
    return;
  if (req->liaison_room_id > 0) {
    /* The domain decides whether the liaison may be one (a ROOM): read its kind first. */
    params[0] = svc_i64(call, req->liaison_room_id, 0);
    if (params[0] == NULL) {
      clue_oom(call);
      return;
    }
    svc_query(call, "SELECT kind FROM units WHERE id = $1", 1, params, create_unit_write,
              (void *)req);
    return;
  }
  create_unit_write(call, NULL, (void *)req);
}

static ProtobufCMessage *unit_msg(rpc_call_t *call, const db_result_t *r, int i) {
  Clue__V1__Unit *u = unit_from_row(call, r, i);
  return u ? &u->base : NULL;
}

static void reply_units(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__ListUnitsResponse resp = CLUE__V1__LIST_UNITS_RESPONSE__INIT;
  const admin_page_t *pg = arg;
  ProtobufCMessage **rows;
  bool more;

  if (svc_page_rows(call, r, pg->size, unit_msg, &rows, &resp.n_units, &more) != 0) {
    clue_oom(call);
    return;
  }
  resp.units = (Clue__V1__Unit **)rows;
  /* more: the page holds a row, since the first always fits */
  if (!admin_page_end(call, pg, more, more ? resp.units[resp.n_units - 1]->id : 0,
                      &resp.next_page_token))
    return;
  (void)rpc_reply(call, &resp.base);
}

static void list_units(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ListUnitsRequest *req = (const void *)m;
  validate_errors_t e;
  const char *params[3];
  admin_page_t *pg;

  if (!svc_require_admin(call))
    return;
  validate_errors_init(&e);
  if (req->kind != 0)
    validate_each(&e, validate_enum("kind", req->kind, 1, 4, validate_slot(&e)));
  if ((pg = admin_page_start(call, UNITS_TOKEN_TAG, req->kind, req->page_size, req->page_token,
                             &e)) == NULL ||
      clue_invalid_each(call, &e))
    return;
  params[0] = req->kind ? clue_unit_kind_name((clue_unit_kind_t)req->kind) : NULL;
  if (!admin_page_params(call, pg, params))
    return;
  svc_query(call,
            "SELECT " UNIT_COLS " FROM units x WHERE ($1::text IS NULL OR x.kind = $1)"
            " AND ($2::bigint IS NULL OR x.id > $2) ORDER BY x.id LIMIT $3",
            3, params, reply_units, pg);
}

/* ---- users ---------------------------------------------------------------------------- */

static Clue__V1__User *user_from_row(rpc_call_t *call, const db_result_t *r, int row) {
  Clue__V1__User *u = rpc_call_alloc(call, sizeof(*u));
  if (u == NULL)
    return NULL;
  clue__v1__user__init(u);
  u->id = svc_col_i64(r, row, 0);
  u->unit_id = svc_col_i64(r, row, 1);
  u->name = svc_col_str(call, r, row, 2);
  u->role = (Clue__V1__Role)auth_role_from_name(db_value(r, row, 3));
  u->disabled = svc_col_bool(r, row, 4);
  u->created_at_ms = svc_col_i64(r, row, 5);
  u->unit_code = svc_col_str(call, r, row, 6);
  u->unit_name = svc_col_str(call, r, row, 7);
  return u->name && u->unit_code && u->unit_name ? u : NULL;
}

static void reply_user(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__User *u = user_from_row(call, r, 0);
  (void)arg;
  if (u == NULL) {
    clue_oom(call);
    return;
  }
  (void)rpc_reply(call, &u->base);
}

/* The write of CreateUser, once the unit was read into r: its kind decides the role's fit. */
static void create_user_write(rpc_call_t *call, const db_result_t *r, void *arg) {
  const Clue__V1__CreateUserRequest *req = arg;
  const char *params[7];
  authz_result_t res;
  int np;

  if (db_rows(r) != 1) {
    char msg[48];
    snprintf(msg, sizeof(msg), "unit %lld not found", (long long)req->unit_id);
    clue_not_found(call, msg);
    return;
  }
  res = authz_role_fits_unit((clue_role_t)req->role,
                             (clue_unit_kind_t)clue_unit_kind_of(db_value(r, 0, 0)));
  if (!authz_ok(&res)) {
    clue_refuse(call, &res);
    return;
  }
  params[0] = actor_user(call);
  params[1] = actor_unit(call);
  params[2] = svc_i64(call, req->unit_id, 0);
  params[3] = clue_trimmed(call, req->name);
  params[4] = clue_role_name((clue_role_t)req->role);
  if (params[0] == NULL || params[1] == NULL || params[2] == NULL || params[3] == NULL) {
    clue_oom(call);
    return;
  }
  if ((np = clue_request_params(call, &req->base, req->request_id, params, 5)) < 0)
    return;
  svc_query(
      call,
      np == 5 ? "SELECT " USER_COLS USER_FROM("admin_create_user($1, $2, $3, $4, $5)")
              : "SELECT " USER_COLS USER_FROM("admin_create_user_once($1, $2, $3, $4, $5, $6, $7)"),
      np, params, reply_user, NULL);
}

static void create_user(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__CreateUserRequest *req = (const void *)m;
  validate_errors_t e;
  const char *params[1];

  if (!svc_require_admin(call))
    return;
  validate_errors_init(&e);
  validate_each(&e, validate_id("unit_id", req->unit_id, validate_slot(&e)));
  validate_each(&e, validate_name("name", req->name, true, validate_slot(&e)));
  validate_each(&e, validate_enum("role", req->role, 1, 4, validate_slot(&e)));
  validate_each(&e, validate_uuid("request_id", req->request_id, false, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  /* The domain decides whether the role fits the unit: read the unit's kind first. */
  params[0] = svc_i64(call, req->unit_id, 0);
  if (params[0] == NULL) {
    clue_oom(call);
    return;
  }
  svc_query(call, "SELECT kind FROM units WHERE id = $1", 1, params, create_user_write,
            (void *)req);
}

static ProtobufCMessage *user_msg(rpc_call_t *call, const db_result_t *r, int i) {
  Clue__V1__User *u = user_from_row(call, r, i);
  return u ? &u->base : NULL;
}

static void reply_users(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__ListUsersResponse resp = CLUE__V1__LIST_USERS_RESPONSE__INIT;
  const admin_page_t *pg = arg;
  ProtobufCMessage **rows;
  bool more;

  if (svc_page_rows(call, r, pg->size, user_msg, &rows, &resp.n_users, &more) != 0) {
    clue_oom(call);
    return;
  }
  resp.users = (Clue__V1__User **)rows;
  /* more: the page holds a row, since the first always fits */
  if (!admin_page_end(call, pg, more, more ? resp.users[resp.n_users - 1]->id : 0,
                      &resp.next_page_token))
    return;
  (void)rpc_reply(call, &resp.base);
}

static void list_users(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__ListUsersRequest *req = (const void *)m;
  validate_errors_t e;
  const char *params[3];
  admin_page_t *pg;

  if (!svc_require_admin(call))
    return;
  validate_errors_init(&e);
  if (req->unit_id < 0)
    validate_add(&e, "unit_id", "unit_id must be positive");
  if ((pg = admin_page_start(call, USERS_TOKEN_TAG, req->unit_id, req->page_size, req->page_token,
                             &e)) == NULL ||
      clue_invalid_each(call, &e))
    return;
  params[0] = svc_i64(call, req->unit_id, 1); /* NULL: every unit's */
  if (req->unit_id != 0 && params[0] == NULL) {
    clue_oom(call);
    return;
  }
  if (!admin_page_params(call, pg, params))
    return;
  svc_query(call,
            "SELECT " USER_COLS USER_FROM("users") " WHERE ($1::bigint IS NULL OR x.unit_id = $1)"
                                                   " AND ($2::bigint IS NULL OR x.id > $2)"
                                                   " ORDER BY x.id LIMIT $3",
            3, params, reply_users, pg);
}

/* The user no longer authenticates: this instance's cached principals of the user go before
 * the reply, so the user's next call here is refused (other instances drop theirs on the
 * NOTIFY). An ADMIN's disable revoked the tokens it issued to others too (migration 0066):
 * every cached principal goes, as those tokens are not named here. */
static void reply_disabled(rpc_call_t *call, const db_result_t *r, void *arg) {
  if (db_rows(r) > 0 && auth_role_from_name(db_value(r, 0, 3)) == CLUE_ROLE_ADMIN)
    rpc_auth_forget_all(rpc_call_server(call));
  else
    rpc_auth_forget_user(rpc_call_server(call), svc_col_i64(r, 0, 0));
  reply_user(call, r, arg);
}

static void disable_user(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__DisableUserRequest *req = (const void *)m;
  validate_errors_t e;
  const char *params[6];
  int np;

  if (!svc_require_admin(call))
    return;
  validate_errors_init(&e);
  validate_each(&e, validate_id("user_id", req->user_id, validate_slot(&e)));
  validate_each(&e, validate_reason("reason", req->reason, false, validate_slot(&e)));
  validate_each(&e, validate_uuid("request_id", req->request_id, false, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  params[0] = actor_user(call);
  params[1] = actor_unit(call);
  params[2] = svc_i64(call, req->user_id, 0);
  params[3] = clue_trimmed(call, req->reason); /* NULL when blank */
  if (params[0] == NULL || params[1] == NULL || params[2] == NULL ||
      (params[3] == NULL && !validate_is_blank(req->reason))) {
    clue_oom(call);
    return;
  }
  if ((np = clue_request_params(call, m, req->request_id, params, 4)) < 0)
    return;
  svc_query(call,
            np == 4
                ? "SELECT " USER_COLS USER_FROM("admin_disable_user($1, $2, $3, $4)")
                : "SELECT " USER_COLS USER_FROM("admin_disable_user_once($1, $2, $3, $4, $5, $6)"),
            np, params, reply_disabled, NULL);
}

/* ---- tokens --------------------------------------------------------------------------- */

static void reply_token(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__IssueTokenResponse resp = CLUE__V1__ISSUE_TOKEN_RESPONSE__INIT;
  resp.token_id = svc_col_i64(r, 0, 0);
  resp.token = arg;
  (void)rpc_reply(call, &resp.base);
}

/* A retry revoked the token its first call issued (column 1 names it): its cached principal
 * goes before the reply, as reply_revoked()'s. A first call revoked nothing. */
static void reply_token_keyed(rpc_call_t *call, const db_result_t *r, void *arg) {
  if (svc_col_i64(r, 0, 1) > 0)
    rpc_auth_forget_token(rpc_call_server(call), svc_col_i64(r, 0, 1));
  reply_token(call, r, arg);
}

static void issue_token(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__IssueTokenRequest *req = (const void *)m;
  validate_errors_t e;
  const char *params[8];
  char *token, hash[65];
  int np;

  if (!svc_require_admin(call))
    return;
  validate_errors_init(&e);
  validate_each(&e, validate_id("user_id", req->user_id, validate_slot(&e)));
  validate_each(&e, validate_name("note", req->note, false, validate_slot(&e)));
  validate_each(&e, validate_uuid("request_id", req->request_id, false, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  token = rpc_call_alloc(call, AUTH_TOKEN_LEN + 1);
  if (token == NULL || auth_token_new(token, hash) != 0) {
    rpc_fail(call, GRPC_INTERNAL, "cannot generate a token");
    return;
  }
  params[0] = actor_user(call);
  params[1] = actor_unit(call);
  params[2] = svc_i64(call, req->user_id, 0);
  params[3] = hash;
  params[4] = clue_trimmed(call, req->note); /* NULL when blank */
  params[5] = svc_i64(call, TOKEN_LIVE_MAX, 0); /* as for the user's own (0064) */
  if (params[0] == NULL || params[1] == NULL || params[2] == NULL || params[5] == NULL ||
      (params[4] == NULL && !validate_is_blank(req->note))) {
    clue_oom(call);
    return;
  }
  if ((np = clue_request_params(call, m, req->request_id, params, 6)) < 0)
    return;
  if (np == 6)
    svc_query(call, "SELECT id FROM admin_issue_token($1, $2, $3, $4, $5, $6)", 6, params,
              reply_token, token);
  else
    svc_query(
        call,
        "SELECT id, revoked_token FROM admin_issue_token_once($1, $2, $3, $4, $5, $6, $7, $8)", 8,
        params, reply_token_keyed, token);
}

static void reply_revoked(rpc_call_t *call, const db_result_t *r, void *arg) {
  Clue__V1__RevokeTokenResponse resp = CLUE__V1__REVOKE_TOKEN_RESPONSE__INIT;
  (void)arg;
  resp.token_id = svc_col_i64(r, 0, 0);
  rpc_auth_forget_token(rpc_call_server(call), resp.token_id); /* as reply_disabled() */
  resp.revoked_at_ms = svc_col_i64(r, 0, 1);
  (void)rpc_reply(call, &resp.base);
}

static void revoke_token(rpc_call_t *call, const ProtobufCMessage *m) {
  const Clue__V1__RevokeTokenRequest *req = (const void *)m;
  validate_errors_t e;
  const char *params[5];
  int np;

  if (!svc_require_admin(call))
    return;
  validate_errors_init(&e);
  validate_each(&e, validate_id("token_id", req->token_id, validate_slot(&e)));
  validate_each(&e, validate_uuid("request_id", req->request_id, false, validate_slot(&e)));
  if (clue_invalid_each(call, &e))
    return;
  params[0] = actor_user(call);
  params[1] = actor_unit(call);
  params[2] = svc_i64(call, req->token_id, 0);
  if (!svc_all_set(params, 3)) {
    clue_oom(call);
    return;
  }
  if ((np = clue_request_params(call, m, req->request_id, params, 3)) < 0)
    return;
  svc_query(call,
            np == 3 ? "SELECT id, " SVC_MS("revoked_at") " FROM admin_revoke_token($1, $2, $3)"
                    : "SELECT id, " SVC_MS("revoked_at") " FROM admin_revoke_token_once($1, $2, $3,"
                                                         " $4, $5)",
            np, params, reply_revoked, NULL);
}

#define ADMIN_METHOD(name, fn, in, out) SVC_CLUE_METHOD("AdminService", name, fn, in, out)

const rpc_method_t admin_methods[] = {
    ADMIN_METHOD("CreateUnit", create_unit, create_unit_request, unit),
    ADMIN_METHOD("ListUnits", list_units, list_units_request, list_units_response),
    ADMIN_METHOD("CreateUser", create_user, create_user_request, user),
    ADMIN_METHOD("ListUsers", list_users, list_users_request, list_users_response),
    ADMIN_METHOD("DisableUser", disable_user, disable_user_request, user),
    ADMIN_METHOD("IssueToken", issue_token, issue_token_request, issue_token_response),
    ADMIN_METHOD("RevokeToken", revoke_token, revoke_token_request, revoke_token_response),
};
const size_t admin_nmethods = sizeof(admin_methods) / sizeof(admin_methods[0]);
