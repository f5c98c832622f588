#ifndef CLUED_METRICS_HTTP_H
#define CLUED_METRICS_HTTP_H

/* The metrics endpoint: a small HTTP/1.1 server on --metrics-listen answering GET /metrics
 * with the text exposition format, one request per connection (Connection: close).
 *
 * Bounds: at most METRICS_HTTP_MAX_CONNS connections and METRICS_HTTP_MAX_PER_PEER from one
 * peer address, a request head of at most METRICS_HTTP_MAX_HEAD bytes (more: 431) within
 * METRICS_HTTP_HEAD_TIMEOUT_MS of the connection, and METRICS_HTTP_TIMEOUT_MS for the whole
 * exchange, after which the connection is closed. A connection past either cap closes another
 * of the address that holds the most places (the new one counted), whatever their state: one
 * that holds its place without use (its request head incomplete, or its answer unread past the
 * head timeout) if that address has one, else any; oldest first. A new connection is never
 * closed itself. So no one address, with idle connections or with requests it never reads the
 * answers of, can keep a scraper on another address out. What is closed so is logged at most
 * once a second.
 * Cleartext, like the gRPC port: refused on a non-loopback address without
 * --insecure-cleartext. */

#include "server.h"

#define METRICS_HTTP_MAX_CONNS 16
#define METRICS_HTTP_MAX_PER_PEER 4
#define METRICS_HTTP_MAX_HEAD 8192
#define METRICS_HTTP_HEAD_TIMEOUT_MS 2000
#define METRICS_HTTP_TIMEOUT_MS 10000

/**
 * The metrics module (server_module_t): with --metrics-listen, start creates the counters
 * and listens; shutdown stops listening and closes every metrics connection; free releases
 * the counters. Without it, every hook does nothing and the counters stay off (NULL).
 */
extern const server_module_t metrics_module;

#endif
