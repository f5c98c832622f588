#ifndef CLUED_SERVICE_REFLECTION_H
#define CLUED_SERVICE_REFLECTION_H

/* grpc.reflection.v1 and grpc.reflection.v1alpha ServerReflection: lists the services this
 * server answers and hands out their file descriptors, from the descriptor set protoc wrote
 * at build time (--descriptor_set_out --include_imports) and the build embedded in the
 * binary. Public like Health: it tells only what proto/ publishes (no source comments, no
 * test-only services) and is bounded like every other call. */

#include <stddef.h>

#include "rpc/rpc.h"
#include "server.h"

/** The embedded descriptor set (a serialized google.protobuf.FileDescriptorSet). */
extern const unsigned char reflection_descriptor_set[];
extern const size_t reflection_descriptor_set_len;

/** The ServerReflectionInfo methods of v1 and v1alpha, for the method table. */
extern const rpc_method_t reflection_methods[];
extern const size_t reflection_nmethods;

/** Index the embedded descriptor set for srv (after its method table is built).
 * Returns 0, -ENOMEM, or -EINVAL when the embedded set does not decode. */
int reflection_init(server_t *srv) __attribute__((warn_unused_result));

/** 1 if srv serves the service of that full name ("clue.v1.ClueService"), else 0: the
 * services reflection lists, which Health also answers for. */
int reflection_serves(const server_t *srv, const char *service);

/** At shutdown: end the reflection streams waiting for their clients' next request. */
void reflection_shutdown(server_t *srv);

/** Free what reflection_init built. */
void reflection_close(server_t *srv);

#endif
