#include "service/health.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "service/reflection.h"

typedef struct health_watcher {
  struct health_watcher *prev, *next;
  rpc_call_t *call;
  char *service;
} health_watcher_t;

struct health {
  server_t *srv;
  int serving;
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
    rpc_fail(call, GRPC_NOT_FOUND, "unknown service \"%.200s\"", req->service);
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
  free(w->service);
  free(w);
}

static void watch_cancelled(rpc_call_t *call, void *arg) {
  health_watcher_t *w = arg;
  (void)call;
  watcher_remove(rpc_call_server(w->call)->health, w);
}

static int watcher_send(health_watcher_t *w, int status) {
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = service_known(rpc_call_server(w->call), w->service)
                    ? (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status
                    : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
  return rpc_send(w->call, &resp.base);
}

static void health_watch(rpc_call_t *call, const ProtobufCMessage *m) {
  const Grpc__Health__V1__HealthCheckRequest *req = (const void *)m;
  server_t *srv = rpc_call_server(call);
  health_t *h = srv->health;
  health_watcher_t *w = calloc(1, sizeof(*w));

  if (w == NULL || (w->service = strdup(req->service)) == NULL) {
    free(w);
    rpc_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
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
     &grpc__health__v1__health_check_response__descriptor, health_check, 0, 1, 0},
    {"/grpc.health.v1.Health/Watch", &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, health_watch, 1, 1, 0},
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

void health_set_serving(server_t *srv, int serving) {
  health_t *h = srv->health;
  if (h == NULL || h->serving == !!serving)
    return;
  h->serving = !!serving;
  log_info("health: %s", serving ? "SERVING" : "NOT_SERVING");
  notify_all(h);
}

static void on_db_health(int healthy, void *arg) {
  health_set_serving(arg, healthy);
}

int health_init(server_t *srv) {
  health_t *h = calloc(1, sizeof(*h));
  if (h == NULL)
    return -ENOMEM;
  h->srv = srv;
  h->serving = srv->db ? db_pool_healthy(srv->db) : 1;
  srv->health = h;
  if (srv->db)
    db_pool_on_health(srv->db, on_db_health, srv);
  return 0;
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
  free(h);
  srv->health = NULL;
}
