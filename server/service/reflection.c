#include "service/reflection.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "log.h"
#include "net/utf8.h"
#include "rpc/table.h"

/* A reflection client that asks without reading the answers waits once its connection has
 * 64 KiB of public answers queued, or all connections --max-public-outbound (rpc/call.c
 * reads no further request). Its stream is cut off only if this much is queued on its
 * connection all the same (other calls' replies congest it): every answer is bounded by the
 * descriptor set, the queue by this. */
#define REFLECTION_MAX_BUFFERED (1u << 20)
/* Names echoed in error messages are cut to this many bytes. */
#define REFLECTION_NAME_ECHO 200

typedef enum symbol_kind {
  SYM_MESSAGE,
  SYM_FIELD,
  SYM_ENUM,
  SYM_ENUM_VALUE,
  SYM_SERVICE,
  SYM_METHOD
} symbol_kind_t;

typedef struct symbol {
  char *name; /* fully qualified, without a leading dot */
  size_t file;
  symbol_kind_t kind;
} symbol_t;

typedef Grpc__Reflection__V1__ServerReflectionRequest refl_request_t;
typedef Grpc__Reflection__V1__ServerReflectionResponse refl_response_t;

struct reflection {
  Google__Protobuf__FileDescriptorSet *set;
  ProtobufCBinaryData *packed; /* each file's FileDescriptorProto, serialized */
  size_t nfiles;
  symbol_t *syms; /* sorted by name */
  size_t nsyms, cap;
  /* The list_services answer, built once: the services of the set that the method table serves. */
  Grpc__Reflection__V1__ServiceResponse *services;
  Grpc__Reflection__V1__ServiceResponse **service_ptrs;
  Grpc__Reflection__V1__ListServiceResponse list;
};

static int sym_add(reflection_t *r, const char *prefix, const char *name, size_t file, symbol_kind_t kind) {
  size_t len = strlen(prefix) + strlen(name) + 2;
  char *full;

  if (r->nsyms == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 128;
    symbol_t *ns = realloc(r->syms, cap * sizeof(*ns));
    if (ns == NULL)
      return -ENOMEM;
    r->syms = ns;
    r->cap = cap;
  }
  if ((full = malloc(len)) == NULL)
    return -ENOMEM;
  snprintf(full, len, "%s%s%s", prefix, prefix[0] ? "." : "", name);
  r->syms[r->nsyms++] = (symbol_t){full, file, kind};
  return 0;
}

/* An enum and its values, which protobuf scopes beside the enum, not inside it
 * (clue.v1.SOURCE_CHANNEL_AUDIT). */
static int index_enum(reflection_t *r, const char *prefix,
                      const Google__Protobuf__EnumDescriptorProto *e, size_t file) {
  int rc = sym_add(r, prefix, e->name, file, SYM_ENUM);
  for (size_t i = 0; rc == 0 && i < e->n_value; i++)
    rc = sym_add(r, prefix, e->value[i]->name, file, SYM_ENUM_VALUE);
  return rc;
}

/* A message, its fields, its enums and its nested messages. Names are separate allocations,
 * so `self` stays valid while syms grows. */
static int index_message(reflection_t *r, const char *prefix, const Google__Protobuf__DescriptorProto *m,
                         size_t file) {
  int rc = sym_add(r, prefix, m->name, file, SYM_MESSAGE);
  const char *self;

  if (rc != 0)
    return rc;
  self = r->syms[r->nsyms - 1].name;
  for (size_t i = 0; rc == 0 && i < m->n_field; i++)
    rc = sym_add(r, self, m->field[i]->name, file, SYM_FIELD);
  for (size_t i = 0; rc == 0 && i < m->n_enum_type; i++)
    rc = index_enum(r, self, m->enum_type[i], file);
  for (size_t i = 0; rc == 0 && i < m->n_nested_type; i++)
    rc = index_message(r, self, m->nested_type[i], file);
  return rc;
}

static int sym_cmp(const void *a, const void *b) {
  return strcmp(((const symbol_t *)a)->name, ((const symbol_t *)b)->name);
}

static const symbol_t *sym_find(const reflection_t *r, const char *name) {
  symbol_t key = {(char *)name, 0, SYM_MESSAGE};
  return bsearch(&key, r->syms, r->nsyms, sizeof(*r->syms), sym_cmp);
}

static int index_file(reflection_t *r, size_t f) {
  const Google__Protobuf__FileDescriptorProto *fd = r->set->file[f];
  const char *pkg = fd->package ? fd->package : "";
  int rc = 0;

  for (size_t i = 0; rc == 0 && i < fd->n_message_type; i++)
    rc = index_message(r, pkg, fd->message_type[i], f);
  for (size_t i = 0; rc == 0 && i < fd->n_enum_type; i++)
    rc = index_enum(r, pkg, fd->enum_type[i], f);
  for (size_t i = 0; rc == 0 && i < fd->n_service; i++) {
    const Google__Protobuf__ServiceDescriptorProto *sd = fd->service[i];
    const char *svc;
    if ((rc = sym_add(r, pkg, sd->name, f, SYM_SERVICE)) != 0)
      break;
    svc = r->syms[r->nsyms - 1].name;
    for (size_t k = 0; rc == 0 && k < sd->n_method; k++)
      rc = sym_add(r, svc, sd->method[k]->name, f, SYM_METHOD);
  }
  return rc;
}

/* A service is listed when the method table serves its first method. */
static int service_served(const server_t *srv, const char *service, const Google__Protobuf__ServiceDescriptorProto *sd) {
  char path[512];
  int n;

  if (sd->n_method == 0)
    return 0;
  n = snprintf(path, sizeof(path), "/%s/%s", service, sd->method[0]->name);
  return n > 0 && (size_t)n < sizeof(path) && rpc_table_find(srv->methods, path, (size_t)n) != NULL;
}

static int build_service_list(server_t *srv, reflection_t *r) {
  size_t n = 0;

  for (size_t i = 0; i < r->nsyms; i++)
    n += r->syms[i].kind == SYM_SERVICE;
  r->services = calloc(n ? n : 1, sizeof(*r->services));
  r->service_ptrs = calloc(n ? n : 1, sizeof(*r->service_ptrs));
  if (r->services == NULL || r->service_ptrs == NULL)
    return -ENOMEM;
  grpc__reflection__v1__list_service_response__init(&r->list);
  for (size_t i = 0; i < r->nsyms; i++) {
    const symbol_t *s = &r->syms[i];
    const Google__Protobuf__FileDescriptorProto *fd = r->set->file[s->file];
    if (s->kind != SYM_SERVICE)
      continue;
    for (size_t k = 0; k < fd->n_service; k++) {
      const char *pkg = fd->package ? fd->package : "";
      size_t plen = strlen(pkg);
      const char *short_name = s->name + (plen ? plen + 1 : 0);
      if (strcmp(fd->service[k]->name, short_name) == 0 && service_served(srv, s->name, fd->service[k])) {
        Grpc__Reflection__V1__ServiceResponse *sr = &r->services[r->list.n_service];
        grpc__reflection__v1__service_response__init(sr);
        sr->name = s->name;
        r->service_ptrs[r->list.n_service++] = sr;
      }
    }
  }
  r->list.service = r->service_ptrs;
  return 0;
}

int reflection_init(server_t *srv) {
  reflection_t *r = calloc(1, sizeof(*r));
  int rc = -ENOMEM;

  if (r == NULL)
    return -ENOMEM;
  r->set = google__protobuf__file_descriptor_set__unpack(NULL, reflection_descriptor_set_len,
                                                          reflection_descriptor_set);
  if (r->set == NULL) {
    log_error("reflection: the embedded descriptor set does not decode");
    rc = -EINVAL;
    goto fail;
  }
  r->nfiles = r->set->n_file;
  if ((r->packed = calloc(r->nfiles ? r->nfiles : 1, sizeof(*r->packed))) == NULL)
    goto fail;
  for (size_t f = 0; f < r->nfiles; f++) {
    const Google__Protobuf__FileDescriptorProto *fd = r->set->file[f];
    size_t len = google__protobuf__file_descriptor_proto__get_packed_size(fd);
    if ((r->packed[f].data = malloc(len ? len : 1)) == NULL)
      goto fail;
    r->packed[f].len = google__protobuf__file_descriptor_proto__pack(fd, r->packed[f].data);
    if ((rc = index_file(r, f)) != 0)
      goto fail;
  }
  qsort(r->syms, r->nsyms, sizeof(*r->syms), sym_cmp);
  if ((rc = build_service_list(srv, r)) != 0)
    goto fail;
  srv->reflection = r;
  log_info("reflection: %zu files, %zu symbols, %zu services", r->nfiles, r->nsyms, r->list.n_service);
  return 0;
fail:
  srv->reflection = r;
  reflection_close(srv);
  return rc;
}

void reflection_shutdown(server_t *srv) {
  rpc_end_streaming_calls(srv);
}

void reflection_close(server_t *srv) {
  reflection_t *r = srv->reflection;

  if (r == NULL)
    return;
  for (size_t i = 0; i < r->nsyms; i++)
    free(r->syms[i].name);
  free(r->syms);
  for (size_t f = 0; r->packed && f < r->nfiles; f++)
    free(r->packed[f].data);
  free(r->packed);
  free(r->services);
  free(r->service_ptrs);
  if (r->set)
    google__protobuf__file_descriptor_set__free_unpacked(r->set, NULL);
  free(r);
  srv->reflection = NULL;
}

int reflection_serves(const server_t *srv, const char *service) {
  const reflection_t *r = srv->reflection;

  for (size_t i = 0; r && i < r->list.n_service; i++)
    if (strcmp(r->list.service[i]->name, service) == 0)
      return 1;
  return 0;
}

/* ---- the stream ------------------------------------------------------------------- */

static size_t file_by_name(const reflection_t *r, const char *name) {
  for (size_t f = 0; f < r->nfiles; f++)
    if (strcmp(r->set->file[f]->name, name) == 0)
      return f;
  return SIZE_MAX;
}

/* The file first, then the files it imports, depth first, each once. */
static void add_with_deps(const reflection_t *r, size_t f, unsigned char *seen, ProtobufCBinaryData *out,
                          size_t *n) {
  const Google__Protobuf__FileDescriptorProto *fd = r->set->file[f];

  if (seen[f])
    return;
  seen[f] = 1;
  out[(*n)++] = r->packed[f];
  for (size_t i = 0; i < fd->n_dependency; i++) {
    size_t d = file_by_name(r, fd->dependency[i]);
    if (d != SIZE_MAX)
      add_with_deps(r, d, seen, out, n);
  }
}

static void send_response(rpc_call_t *call, refl_response_t *resp) {
  int rc = rpc_send(call, &resp->base);
  if (rc == -ENOMEM)
    rpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
}

/* An error answer; the stream goes on. `name`, when given, is echoed cut to a bound. */
static void send_error(rpc_call_t *call, refl_response_t *resp, grpc_status_t code, const char *what,
                       const char *name) {
  Grpc__Reflection__V1__ErrorResponse err = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
  char msg[300];

  if (name) {
    /* Cut between characters: the request's strings are valid UTF-8, and an answer whose
     * error_message is not cannot be decoded at all (proto3 strings must be UTF-8). */
    size_t n = strnlen(name, REFLECTION_NAME_ECHO + 1);

    if (n > REFLECTION_NAME_ECHO)
      n = clue__utf8_whole(name, REFLECTION_NAME_ECHO);
    snprintf(msg, sizeof(msg), "%s: %.*s", what, (int)n, name);
  } else
    snprintf(msg, sizeof(msg), "%s", what);
  err.error_code = (int32_t)code;
  err.error_message = msg;
  resp->message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
  resp->error_response = &err;
  send_response(call, resp);
}

static void send_file(rpc_call_t *call, const reflection_t *r, refl_response_t *resp, size_t f) {
  Grpc__Reflection__V1__FileDescriptorResponse fdr = GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
  unsigned char *seen = calloc(r->nfiles, 1);
  ProtobufCBinaryData *files = calloc(r->nfiles, sizeof(*files));

  if (seen == NULL || files == NULL) {
    free(seen);
    free(files);
    rpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  add_with_deps(r, f, seen, files, &fdr.n_file_descriptor_proto);
  fdr.file_descriptor_proto = files;
  resp->message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
  resp->file_descriptor_response = &fdr;
  send_response(call, resp);
  free(seen);
  free(files);
}

/* ServerReflectionInfo, v1 and v1alpha alike (their messages are the same on the wire). */
static void reflection_info(rpc_call_t *call, const ProtobufCMessage *m) {
  const refl_request_t *req = (const void *)m;
  const reflection_t *r = rpc_call_server(call)->reflection;
  refl_response_t resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
  Grpc__Reflection__V1__ExtensionNumberResponse ext = GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
  const symbol_t *sym;
  size_t f;

  if (req == NULL) { /* the client is done asking */
    rpc_finish(call, GRPC_OK, NULL);
    return;
  }
  if (r == NULL) {
    rpc_finish(call, GRPC_UNAVAILABLE, "reflection is not ready");
    return;
  }
  if (rpc_call_buffered(call) > REFLECTION_MAX_BUFFERED) {
    rpc_finish(call, GRPC_RESOURCE_EXHAUSTED, "reflection client reads too slowly: %zu bytes of answers unread",
               rpc_call_buffered(call));
    return;
  }
  resp.valid_host = req->host;
  resp.original_request = (refl_request_t *)req;
  switch (req->message_request_case) {
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
    resp.message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    resp.list_services_response = (Grpc__Reflection__V1__ListServiceResponse *)&r->list;
    send_response(call, &resp);
    return;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
    f = file_by_name(r, req->file_by_filename);
    if (f == SIZE_MAX)
      send_error(call, &resp, GRPC_NOT_FOUND, "file not found", req->file_by_filename);
    else
      send_file(call, r, &resp, f);
    return;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
    sym = sym_find(r, req->file_containing_symbol);
    if (sym == NULL)
      send_error(call, &resp, GRPC_NOT_FOUND, "symbol not found", req->file_containing_symbol);
    else
      send_file(call, r, &resp, sym->file);
    return;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
    send_error(call, &resp, GRPC_NOT_FOUND, "no extension extends",
               req->file_containing_extension && req->file_containing_extension->containing_type
                   ? req->file_containing_extension->containing_type
                   : "");
    return;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
    sym = sym_find(r, req->all_extension_numbers_of_type);
    if (sym == NULL || sym->kind != SYM_MESSAGE) {
      send_error(call, &resp, GRPC_NOT_FOUND, "message type not found", req->all_extension_numbers_of_type);
      return;
    }
    ext.base_type_name = sym->name; /* the API defines no extensions: an empty list */
    resp.message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
    resp.all_extension_numbers_response = &ext;
    send_response(call, &resp);
    return;
  default:
    send_error(call, &resp, GRPC_INVALID_ARGUMENT, "the request asks nothing (no message_request set)", NULL);
    return;
  }
}

const rpc_method_t reflection_methods[] = {
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
     &grpc__reflection__v1__server_reflection_request__descriptor,
     &grpc__reflection__v1__server_reflection_response__descriptor, reflection_info, 1, 1, 1, 0},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
     &grpc__reflection__v1__server_reflection_request__descriptor,
     &grpc__reflection__v1__server_reflection_response__descriptor, reflection_info, 1, 1, 1, 0},
};
const size_t reflection_nmethods = sizeof(reflection_methods) / sizeof(reflection_methods[0]);
