#include "rpc/auth.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "db/db.h"
#include "domain/clue_fsm.h"
#include "log.h"
#include "rpc/call.h"
#include "server.h"

/* The names are the domain's (UNIT_KIND / ROLE enums numbered as in the protos). */
int auth_unit_kind_from_name(const char *s) {
  for (int i = CLUE_UNIT_ROOM; i <= CLUE_UNIT_ADMIN; i++)
    if (strcmp(s, clue_unit_kind_name((clue_unit_kind_t)i)) == 0)
      return i;
  return 0;
}

int auth_role_from_name(const char *s) {
  for (int i = CLUE_ROLE_MEMBER; i <= CLUE_ROLE_ADMIN; i++)
    if (strcmp(s, clue_role_name((clue_role_t)i)) == 0)
      return i;
  return 0;
}

static void to_hex(const unsigned char *in, size_t n, char *out) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[in[i] >> 4];
    out[2 * i + 1] = hex[in[i] & 15];
  }
  out[2 * n] = '\0';
}

void auth_token_hash(const char *token, char hex[65]) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(token, strlen(token), md, &len, EVP_sha256(), NULL);
  to_hex(md, 32, hex);
}

int auth_token_new(char token[AUTH_TOKEN_LEN + 1], char hash_hex[65]) {
  unsigned char raw[32];
  size_t got = 0;

  while (got < sizeof(raw)) {
    ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -EIO;
    }
    got += (size_t)n;
  }
  memcpy(token, "ct_", 3);
  to_hex(raw, sizeof(raw), token + 3);
  auth_token_hash(token, hash_hex);
  return 0;
}

static const char auth_sql[] =
    "SELECT u.id, u.unit_id, un.kind, u.role, u.name, un.code, t.id, t.issued_by <> t.user_id"
    "  FROM tokens t JOIN users u ON u.id = t.user_id JOIN units un ON un.id = u.unit_id"
    " WHERE t.token_sha256 = decode($1, 'hex') AND t.revoked_at IS NULL AND NOT u.disabled";

static void auth_done(const db_result_t *r, void *arg) {
  rpc_call_t *call = arg;

  call->db_req = NULL;
  if (rpc_call_done(call)) {
    rpc_call_unref(call);
    return;
  }
  if (r->err == DB_EQUEUE) {
    /* The database is up, only saturated: say so, as a handler's query would (svc_fail_db),
     * so a client backs off instead of treating the server as down. The pool logs the
     * refusals itself, once a second. */
    rpc_fail(call, GRPC_UNAVAILABLE, "server busy: database queue full, retry later");
  } else if (r->err != DB_OK) {
    log_warn("call %s: token lookup failed: %s", call->id, r->message ? r->message : "?");
    rpc_fail(call, GRPC_UNAVAILABLE, "database unavailable");
  } else if (db_rows(r) != 1) {
    rpc_fail(call, GRPC_UNAUTHENTICATED, "unknown or revoked token, or disabled user");
  } else {
    rpc_principal_t *p = &call->principal;
    p->user_id = strtoll(db_value(r, 0, 0), NULL, 10);
    p->unit_id = strtoll(db_value(r, 0, 1), NULL, 10);
    p->unit_kind = auth_unit_kind_from_name(db_value(r, 0, 2));
    p->role = auth_role_from_name(db_value(r, 0, 3));
    snprintf(p->user_name, sizeof(p->user_name), "%s", db_value(r, 0, 4));
    snprintf(p->unit_code, sizeof(p->unit_code), "%s", db_value(r, 0, 5));
    p->token_id = strtoll(db_value(r, 0, 6), NULL, 10);
    p->enrollment = strcmp(db_value(r, 0, 7), "f") != 0; /* anything but "false" fails closed */
    rpc_call_authenticated(call);
  }
  rpc_call_unref(call);
}

void rpc_auth_start(rpc_call_t *call) {
  const char *h = rpc_call_metadata(call, "authorization");
  char hex[65];
  const char *params[1];
  db_opts_t o;
  int rc;

  if (h == NULL) {
    rpc_fail(call, GRPC_UNAUTHENTICATED, "missing authorization metadata (Bearer token)");
    return;
  }
  if (strncasecmp(h, "Bearer ", 7) != 0 || h[7] == '\0') {
    rpc_fail(call, GRPC_UNAUTHENTICATED, "authorization must be \"Bearer <token>\"");
    return;
  }
  if (call->srv->db == NULL) {
    rpc_fail(call, GRPC_UNAVAILABLE, "no database configured");
    return;
  }
  auth_token_hash(h + 7, hex);
  params[0] = hex;
  o.owner = rpc_call_conn_id(call);
  o.handle = &call->db_req;
  rpc_call_ref(call);
  rc = db_query_opts(call->srv->db, &o, auth_sql, 1, params, auth_done, call);
  if (rc != 0) {
    call->db_req = NULL;
    rpc_call_unref(call);
    if (rc == DB_EOWNER)
      rpc_fail(call, GRPC_RESOURCE_EXHAUSTED,
               "too many calls waiting for the database on this connection (limit %zu); "
               "retry later",
               call->srv->cfg.db_queue_per_conn);
    else
      rpc_fail(call, GRPC_UNAVAILABLE, "database unavailable");
  }
}
