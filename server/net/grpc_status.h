#ifndef CLUED_NET_GRPC_STATUS_H
#define CLUED_NET_GRPC_STATUS_H

#include <stddef.h>

/** gRPC status codes, as numbered by the gRPC specification. */
typedef enum grpc_status {
  GRPC_OK = 0,
  GRPC_CANCELLED = 1,
  GRPC_UNKNOWN = 2,
  GRPC_INVALID_ARGUMENT = 3,
  GRPC_DEADLINE_EXCEEDED = 4,
  GRPC_NOT_FOUND = 5,
  GRPC_ALREADY_EXISTS = 6,
  GRPC_PERMISSION_DENIED = 7,
  GRPC_RESOURCE_EXHAUSTED = 8,
  GRPC_FAILED_PRECONDITION = 9,
  GRPC_ABORTED = 10,
  GRPC_OUT_OF_RANGE = 11,
  GRPC_UNIMPLEMENTED = 12,
  GRPC_INTERNAL = 13,
  GRPC_UNAVAILABLE = 14,
  GRPC_DATA_LOSS = 15,
  GRPC_UNAUTHENTICATED = 16,
} grpc_status_t;

/** The canonical upper-case name of a status ("NOT_FOUND"); "UNKNOWN" for values out of range. */
const char *grpc_status_name(int code);

/** Parse a canonical status name; returns the code or -1. */
int grpc_status_from_name(const char *name);

#endif
