#include "service/debug.h"

#ifdef CLUED_TEST_HOOKS

#include <stdlib.h>

#include "grpc/health/v1/health.pb-c.h"
#include "service/common.h"

static void slept(rpc_call_t *call, const db_result_t *r, void *arg) {
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  (void)r, (void)arg;
  resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  (void)rpc_reply(call, &resp.base);
}

/* The request's "service" field carries the seconds to sleep, e.g. "1.5". */
static void debug_sleep(rpc_call_t *call, const ProtobufCMessage *m) {
  const Grpc__Health__V1__HealthCheckRequest *req = (const void *)m;
  const char *params[1] = {req->service};
  char *end;
  double secs = strtod(req->service, &end);

  if (end == req->service || *end != '\0' || secs < 0 || secs > 60) {
    rpc_fail(call, GRPC_INVALID_ARGUMENT, "service must hold 0 to 60 seconds");
    return;
  }
  svc_query(call, "SELECT pg_sleep($1::float8)", 1, params, slept, NULL);
}

const rpc_method_t debug_methods[] = {
    {"/clued.test.Debug/Sleep", &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, debug_sleep, 0, 1, 0, 0},
    /* The same for an authenticated caller: its statement counts against the caller's
     * share of the pool as any call's does. */
    {"/clued.test.Debug/SleepAsCaller", &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor, debug_sleep, 0, 0, 0, 0},
};
const size_t debug_nmethods = sizeof(debug_methods) / sizeof(debug_methods[0]);

#endif
