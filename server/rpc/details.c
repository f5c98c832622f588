#include "rpc/details.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "net/grpc_status.h"

#define TYPE_URL_PREFIX "type.googleapis.com/"

/* Words that follow a field name in the server's messages ("title is required",
 * "after_seq must not be negative", "subject_id needs subject_type"). */
static const char *const FIELD_VERBS[] = {"is ", "must ", "needs ", "has ", "was ", "does ",
                                          "should ", "cannot ", "may ", "are "};

/* The request field a message names first, copied into buf, or "" if it names none: a
 * lower-case identifier path (snake_case, dots) followed by a verb, or one with an
 * underscore or a dot followed by anything, or by a colon. */
static const char *field_of_message(const char *msg, char *buf, size_t size) {
  size_t n = 0;
  bool joined = false;

  buf[0] = '\0';
  if (msg == NULL || !(msg[0] >= 'a' && msg[0] <= 'z'))
    return buf;
  while ((msg[n] >= 'a' && msg[n] <= 'z') || (msg[n] >= '0' && msg[n] <= '9') || msg[n] == '_' ||
         msg[n] == '.') {
    joined |= msg[n] == '_' || msg[n] == '.';
    n++;
  }
  /* "unit_ids: unit 2 is a ROOM": a path with an underscore or a dot may end in a colon. */
  if (n >= size || msg[n - 1] == '.' ||
      (msg[n] != ' ' && !(joined && msg[n] == ':' && msg[n + 1] == ' ')))
    return buf;
  if (!joined) {
    bool verb = false;
    for (size_t i = 0; i < sizeof(FIELD_VERBS) / sizeof(FIELD_VERBS[0]); i++)
      verb |= strncmp(msg + n + 1, FIELD_VERBS[i], strlen(FIELD_VERBS[i])) == 0;
    if (!verb)
      return buf;
  }
  memcpy(buf, msg, n);
  buf[n] = '\0';
  return buf;
}

/* Pack m into *any (type URL and bytes in malloc'd memory). Returns 0 or -1. */
static int pack_any(const ProtobufCMessage *m, Google__Protobuf__Any *any) {
  size_t len = protobuf_c_message_get_packed_size(m);
  size_t ulen = strlen(TYPE_URL_PREFIX) + strlen(m->descriptor->name) + 1;

  google__protobuf__any__init(any);
  any->type_url = malloc(ulen);
  any->value.data = malloc(len ? len : 1);
  if (any->type_url == NULL || any->value.data == NULL)
    return -1;
  strcpy(any->type_url, TYPE_URL_PREFIX);
  strcat(any->type_url, m->descriptor->name);
  any->value.len = protobuf_c_message_pack(m, any->value.data);
  return 0;
}

static const char *or_empty(const char *s) {
  return s ? s : "";
}

/* The details of one status: those named, else the one the code implies. All arrays are
 * bounded by RPC_DETAILS_MAX, so they live on the stack. */
typedef struct details_build {
  Google__Rpc__BadRequest bad;
  Google__Rpc__BadRequest__FieldViolation fv[RPC_DETAILS_MAX], *fvp[RPC_DETAILS_MAX];
  Google__Rpc__PreconditionFailure pre;
  Google__Rpc__PreconditionFailure__Violation pv[RPC_DETAILS_MAX], *pvp[RPC_DETAILS_MAX];
  Google__Rpc__ErrorInfo info;
  Google__Rpc__ErrorInfo__MetadataEntry me[RPC_DETAILS_MAX], *mep[RPC_DETAILS_MAX];
  Google__Rpc__ResourceInfo res;
  bool has_info, has_res;
  char field[64];
} details_build_t;

static void collect(details_build_t *b, int code, const char *msg, const rpc_detail_t *d,
                    size_t n) {
  google__rpc__bad_request__init(&b->bad);
  google__rpc__precondition_failure__init(&b->pre);
  google__rpc__error_info__init(&b->info);
  google__rpc__resource_info__init(&b->res);
  b->bad.field_violations = b->fvp;
  b->pre.violations = b->pvp;
  b->info.metadata = b->mep;
  for (size_t i = 0; i < n && i < RPC_DETAILS_MAX; i++) {
    switch (d[i].kind) {
    case RPC_DETAIL_FIELD: {
      Google__Rpc__BadRequest__FieldViolation *v = &b->fv[b->bad.n_field_violations];
      google__rpc__bad_request__field_violation__init(v);
      v->field = (char *)or_empty(d[i].a);
      v->description = (char *)or_empty(d[i].b);
      b->fvp[b->bad.n_field_violations++] = v;
      break;
    }
    case RPC_DETAIL_PRECONDITION: {
      Google__Rpc__PreconditionFailure__Violation *v = &b->pv[b->pre.n_violations];
      google__rpc__precondition_failure__violation__init(v);
      v->type = (char *)or_empty(d[i].a);
      v->subject = (char *)or_empty(d[i].b);
      v->description = (char *)or_empty(d[i].c);
      b->pvp[b->pre.n_violations++] = v;
      break;
    }
    case RPC_DETAIL_REASON:
      /* One ErrorInfo: the first reason names it, each entry may add one metadata pair. */
      if (!b->has_info) {
        b->info.reason = (char *)or_empty(d[i].a);
        b->info.domain = RPC_DETAIL_DOMAIN;
        b->has_info = true;
      }
      if (d[i].b) {
        Google__Rpc__ErrorInfo__MetadataEntry *e = &b->me[b->info.n_metadata];
        google__rpc__error_info__metadata_entry__init(e);
        e->key = (char *)d[i].b;
        e->value = (char *)or_empty(d[i].c);
        b->mep[b->info.n_metadata++] = e;
      }
      break;
    case RPC_DETAIL_RESOURCE:
      if (!b->has_res) {
        b->res.resource_type = (char *)or_empty(d[i].a);
        b->res.resource_name = (char *)or_empty(d[i].b);
        b->has_res = true;
      }
      break;
    }
  }
  /* What the code implies when the handler named nothing of its kind. */
  switch (code) {
  case GRPC_INVALID_ARGUMENT:
    if (b->bad.n_field_violations == 0) {
      google__rpc__bad_request__field_violation__init(&b->fv[0]);
      b->fv[0].field = (char *)field_of_message(msg, b->field, sizeof(b->field));
      b->fv[0].description = (char *)or_empty(msg);
      b->fvp[b->bad.n_field_violations++] = &b->fv[0];
    }
    break;
  case GRPC_FAILED_PRECONDITION:
    if (b->pre.n_violations == 0) {
      google__rpc__precondition_failure__violation__init(&b->pv[0]);
      b->pv[0].type = "STATE";
      b->pv[0].description = (char *)or_empty(msg);
      b->pvp[b->pre.n_violations++] = &b->pv[0];
    }
    break;
  case GRPC_ABORTED:
    if (!b->has_info) {
      b->info.reason = "CONCURRENT_CHANGE";
      b->info.domain = RPC_DETAIL_DOMAIN;
      b->has_info = true;
    }
    break;
  case GRPC_NOT_FOUND:
    if (!b->has_res) {
      b->res.description = (char *)or_empty(msg);
      b->has_res = true;
    } else {
      b->res.description = (char *)or_empty(msg);
    }
    break;
  default:
    break;
  }
}

static bool code_takes_details(int code) {
  return code == GRPC_INVALID_ARGUMENT || code == GRPC_FAILED_PRECONDITION ||
         code == GRPC_ABORTED || code == GRPC_NOT_FOUND;
}

char *rpc_details_encode(int code, const char *msg, const rpc_detail_t *d, size_t n) {
  details_build_t b;
  Google__Protobuf__Any any[4], *anyp[4];
  Google__Rpc__Status st;
  uint8_t *raw = NULL;
  char *out = NULL;
  size_t len, nany = 0;
  int failed = 0;

  if (code == GRPC_OK || (!code_takes_details(code) && n == 0))
    return NULL;
  memset(&b, 0, sizeof(b));
  collect(&b, code, msg, d, n);
  google__rpc__status__init(&st);
  st.code = code;
  st.message = (char *)or_empty(msg);
  if (b.bad.n_field_violations > 0)
    failed |= pack_any(&b.bad.base, &any[nany++]);
  if (b.pre.n_violations > 0)
    failed |= pack_any(&b.pre.base, &any[nany++]);
  if (b.has_info)
    failed |= pack_any(&b.info.base, &any[nany++]);
  if (b.has_res)
    failed |= pack_any(&b.res.base, &any[nany++]);
  for (size_t i = 0; i < nany; i++)
    anyp[i] = &any[i];
  st.details = anyp;
  st.n_details = nany;
  if (failed)
    goto out;
  len = protobuf_c_message_get_packed_size(&st.base);
  if ((raw = malloc(len ? len : 1)) == NULL)
    goto out;
  protobuf_c_message_pack(&st.base, raw);
  if ((out = malloc(4 * ((len + 2) / 3) + 1)) == NULL)
    goto out;
  EVP_EncodeBlock((unsigned char *)out, raw, (int)len);
out:
  for (size_t i = 0; i < nany; i++) {
    free(any[i].type_url);
    free(any[i].value.data);
  }
  free(raw);
  return out;
}

/* ---- what handlers name ---------------------------------------------------------------- */

#include "rpc/call.h"

static void detail_add(rpc_call_t *call, rpc_detail_kind_t kind, const char *a, const char *b,
                       const char *c) {
  rpc_detail_t *d;

  if (call->state >= RPC_CALL_FINISHING || call->ndetails >= RPC_DETAILS_MAX)
    return;
  d = &call->details[call->ndetails];
  d->kind = kind;
  d->a = a ? rpc_call_strdup(call, a) : NULL;
  d->b = b ? rpc_call_strdup(call, b) : NULL;
  d->c = c ? rpc_call_strdup(call, c) : NULL;
  if ((a && !d->a) || (b && !d->b) || (c && !d->c))
    return; /* out of memory: the status goes out with what its code implies */
  call->ndetails++;
}

void rpc_detail_field(rpc_call_t *call, const char *field, const char *description) {
  detail_add(call, RPC_DETAIL_FIELD, field, description, NULL);
}

void rpc_detail_precondition(rpc_call_t *call, const char *type, const char *subject,
                             const char *description) {
  detail_add(call, RPC_DETAIL_PRECONDITION, type, subject, description);
}

void rpc_detail_reason(rpc_call_t *call, const char *reason, const char *key, const char *value) {
  detail_add(call, RPC_DETAIL_REASON, reason, key, value);
}

void rpc_detail_resource(rpc_call_t *call, const char *type, const char *name) {
  detail_add(call, RPC_DETAIL_RESOURCE, type, name, NULL);
}
