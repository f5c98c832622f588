#include "service/health.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "db/replication.h"
#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "service/reflection.h"

typedef struct health_watcher {
  struct health_watcher *prev, *next;
  rpc_call_t *call;
  int known; /* the service watched is this server's (the set is fixed): its name is not kept */
} health_watcher_t;

#define SYNC_CHECK_MS 1000 /* --require-sync-replica: how often the standby is looked for */

struct health {
  server_t *srv;
  int serving;  /* db_ok && sync_ok && schema_ok */
  int db_ok;    /* the pool has a working connection */
  int sync_ok;  /* the primary has a synchronous standby, or that is not required */
  int schema_ok; /* clued's functions and triggers are its migrations' (or that is waived) */
  int checking; /* a replication check is in flight */
  int closed;
  uv_timer_t timer; /* --require-sync-replica: the next replication check */
  health_watcher_t *watchers;
};

/* The services this server answers for: "" (the server as a whole) and every service its
 * method table serves, as reflection lists them. */
static int service_known(const server_t *srv, const char *name) {
  return name[0] == '\0' || reflection_serves(srv, name);
}

static Grpc__Health__V1__HealthCheckResponse__ServingStatus current(server_t *srv) {
  if (srv->health == NULL || srv->state != SERVER_RUNNING || !srv->health->serving)
    return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
  return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
}

static void health_check(rpc_call_t *call, const ProtobufCMessage *m) {
  const Grpc__Health__V1__HealthCheckRequest *req = (const void *)m;
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

  if (!service_known(rpc_call_server(call), req->service)) {
    size_t n = strlen(req->service);

    /* The name asked for, in the message and as the resource's name (with the type
     * reflection describes a gRPC service with): its first 200 bytes, cut between characters
     * (the request's strings are valid UTF-8, and a status whose message is not cannot be
     * read), so that the trailers stay small. */
    if (n > 200)
      for (n = 200; n > 0 && ((unsigned char)req->service[n] & 0xC0) == 0x80; n--)
        ;
    rpc_detail_resource(call, "google.protobuf.ServiceDescriptorProto",
                        rpc_call_printf(call, "%.*s", (int)n, req->service));
    rpc_fail(call, GRPC_NOT_FOUND, "unknown service \"%.*s\"", (int)n, req->service);
    return;
  }
  resp.status = current(rpc_call_server(call));
  (void)rpc_reply(call, &resp.base);
}

static void watcher_remove(health_t *h, health_watcher_t *w) {
  if (w->prev)
    w->prev->next = w->next;
  else
    h->watchers = w->next;
  if (w->next)
    w->next->prev = w->prev;
  rpc_call_unref(w->call);
  free(w);
}

static void watch_cancelled(rpc_call_t *call, void *arg) {
  health_watcher_t *w = arg;
  (void)call;
  watcher_remove(rpc_call_server(w->call)->health, w);
}

static int watcher_send(health_watcher_t *w, int status) {
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = w->known ? (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status
                         : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
  return rpc_send(w->call, &resp.base);
}

static void health_watch(rpc_call_t *call, const ProtobufCMessage *m) {
  const Grpc__Health__V1__HealthCheckRequest *req = (const void *)m;
  server_t *srv = rpc_call_server(call);
  health_t *h = srv->health;
  health_watcher_t *w = calloc(1, sizeof(*w));

  if (w == NULL) {
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  w->known = service_known(srv, req->service);
  w->call = call;
  rpc_call_ref(call);
  w->next = h->watchers;
  if (h->watchers)
    h->watchers->prev = w;
  h->watchers = w;
  rpc_call_on_cancel(call, watch_cancelled, w);
  if (watcher_send(w, current(srv)) != 0) {
    rpc_call_on_cancel(call, NULL, NULL);
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    watcher_remove(h, w);
  }
}

const rpc_method_t health_methods[] = {
    {"/grpc.health.v1.Health/Check", &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, health_check, 0, 1, 0, 0},
    {"/grpc.health.v1.Health/Watch", &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, health_watch, 1, 1, 0, 0},
};
const size_t health_nmethods = sizeof(health_methods) / sizeof(health_methods[0]);

static void notify_all(health_t *h) {
  int status = current(h->srv);
  health_watcher_t *w, *next;

  for (w = h->watchers; w; w = next) {
    next = w->next;
    /* Status changes are rare and tiny; a watcher too slow to take one is dropped. */
    if (rpc_call_buffered(w->call) > 64 * 1024 || watcher_send(w, status) != 0) {
      rpc_call_on_cancel(w->call, NULL, NULL);
      rpc_fail(w->call, GRPC_RESOURCE_EXHAUSTED, "watcher too slow");
      watcher_remove(h, w);
    }
  }
}

static void health_update(health_t *h) {
  int serving = h->db_ok && h->sync_ok && h->schema_ok;
  if (h->serving == serving)
    return;
  h->serving = serving;
  log_info("health: %s", serving ? "SERVING" : "NOT_SERVING");
  notify_all(h);
}

static void sync_checked(const db_result_t *r, void *arg) {
  health_t *h = arg;
  char why[200];
  int ok;

  h->checking = 0;
  if (h->closed)
    return;
  if (r->err != DB_OK) {
    /* The pool's own health covers a lost database; a failed check proves nothing else. */
    if (r->err != DB_EUNAVAILABLE)
      log_warn("replication check failed: %s", r->message ? r->message : db_strerror(r->err));
    return;
  }
  ok = db_sync_verdict(db_value(r, 0, 0), db_value(r, 0, 1), db_value(r, 0, 2), db_value(r, 0, 3),
                       why, sizeof(why));
  if (ok != h->sync_ok) {
    if (ok)
      log_info("health: a synchronous standby is connected");
    else
      log_warn("health: %s (--require-sync-replica)", why);
  }
  h->sync_ok = ok;
  health_update(h);
}

static void on_sync_timer(uv_timer_t *t) {
  health_t *h = t->data;
  if (h->checking || h->closed || !h->srv->db)
    return;
  if (db_query(h->srv->db, db_sync_check_sql, 0, NULL, sync_checked, h) == 0)
    h->checking = 1;
}

static void on_db_health(int healthy, void *arg) {
  health_t *h = ((server_t *)arg)->health;
  h->db_ok = healthy;
  if (h->timer.data && !healthy)
    h->sync_ok = 0; /* the primary found next may be another: unknown until checked */
  health_update(h);
  if (h->timer.data && healthy)
    on_sync_timer(&h->timer);
}

int health_init(server_t *srv) {
  health_t *h = calloc(1, sizeof(*h));
  if (h == NULL)
    return -ENOMEM;
  h->srv = srv;
  h->db_ok = srv->db ? db_pool_healthy(srv->db) : 1;
  /* serve checked the standby before it started; from then on the timer keeps checking. */
  h->sync_ok = 1;
  h->schema_ok = 1; /* serve checked them before it started; service/schema_watch.c follows */
  h->serving = h->db_ok;
  srv->health = h;
  if (srv->db)
    db_pool_on_health(srv->db, on_db_health, srv);
  if (srv->db && srv->cfg.require_sync_replica) {
    uv_timer_init(srv->loop, &h->timer);
    h->timer.data = h;
    uv_timer_start(&h->timer, on_sync_timer, SYNC_CHECK_MS, SYNC_CHECK_MS);
  }
  return 0;
}

void health_set_schema(server_t *srv, int ok) {
  health_t *h = srv->health;
  if (h == NULL || h->schema_ok == ok)
    return;
  h->schema_ok = ok;
  health_update(h);
}

void health_shutdown(server_t *srv) {
  health_t *h = srv->health;
  if (h == NULL)
    return;
  notify_all(h);
  while (h->watchers) {
    health_watcher_t *w = h->watchers;
    rpc_call_on_cancel(w->call, NULL, NULL);
    rpc_finish(w->call, GRPC_UNAVAILABLE, "server shutting down");
    watcher_remove(h, w);
  }
}

void health_close(server_t *srv) {
  health_t *h = srv->health;
  if (h == NULL)
    return;
  while (h->watchers)
    watcher_remove(h, h->watchers);
  h->closed = 1;     /* a check in flight ends with the pool, before health_free() */
  if (h->timer.data) /* initialized */
    uv_close((uv_handle_t *)&h->timer, NULL);
}

void health_free(server_t *srv) {
  free(srv->health);
  srv->health = NULL;
}
