#ifndef CLUED_METRICS_METRICS_H
#define CLUED_METRICS_METRICS_H

/* Prometheus metrics (--metrics-listen): counters the rpc layer bumps at a few points of a
 * call's life, gauges read from the server at scrape time, and the text exposition format
 * (version 0.0.4) served over HTTP/1.1 by metrics/http.c.
 *
 * Call metrics use go-grpc-prometheus's names and labels (grpc_type, grpc_service,
 * grpc_method, grpc_code), so its dashboards and alerts work unchanged. Labels come from the
 * method table only: a path that names no method counts as grpc_service="unknown",
 * grpc_method="unknown", so clients cannot grow the label set. Nothing about callers
 * (tokens, users, units, peers) is a label. Every function accepts m == NULL (metrics off). */

#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"

typedef struct metrics metrics_t;
typedef struct server server_t;

/** Create the counters. Returns 0 or -ENOMEM. */
int metrics_new(metrics_t **out) __attribute__((warn_unused_result));

/** Free them. */
void metrics_free(metrics_t *m);

/** A call for method (NULL: no such method) has its headers: grpc_server_started_total. */
void metrics_call_started(metrics_t *m, const rpc_method_t *method);

/** A call ended with code after dur_ns: grpc_server_handled_total, _handling_seconds. */
void metrics_call_handled(metrics_t *m, const rpc_method_t *method, int code, uint64_t dur_ns);

/** A request message arrived (grpc_server_msg_received_total). */
void metrics_msg_received(metrics_t *m, const rpc_method_t *method);

/** A response message was queued (grpc_server_msg_sent_total). */
void metrics_msg_sent(metrics_t *m, const rpc_method_t *method);

/** A call object was created (+1) or freed (-1): clued_streams_open. */
void metrics_stream(metrics_t *m, int delta);

/**
 * Render every metric of srv in the text exposition format into a malloc'd buffer (*out,
 * *len; the caller frees it). Returns 0 or -ENOMEM.
 */
int metrics_render(server_t *srv, char **out, size_t *len) __attribute__((warn_unused_result));

#endif
