#ifndef CLUED_SERVICE_REQUEST_SHA256_H
#define CLUED_SERVICE_REQUEST_SHA256_H

#include <protobuf-c/protobuf-c.h>

#include "rpc/rpc.h"

/** Length of a fingerprint as request_sha256() gives it ("\x" and 64 hex digits). */
#define REQUEST_SHA256_TEXT_LEN 66

/**
 * The fingerprint of a mutating request, which a retry with the same request_id must match
 * (docs/WRITES.md, "Retries"): the SHA-256 of a canonical encoding of the decoded message (its
 * type's full name, then every field but request_id in field-number order, each as its number
 * and its decoded value: a proto3 field left out and one sent with its default value are the
 * same, and so are a message left out and one sent empty; a text without the white space
 * around it, as it is stored; nested messages and repeated fields recursively; unknown fields
 * left out), in the call's memory as PostgreSQL's text form of a
 * bytea ("\x" and 64 lower-case hex digits), a statement's parameter as it is. Not the wire
 * bytes: two clients may serialise the same fields differently. NULL when out of memory.
 */
const char *request_sha256(rpc_call_t *call, const ProtobufCMessage *msg);

/**
 * The first 64 bits of request_sha256()'s fingerprint of msg, big-endian, into *bits: what a
 * list binds its page tokens to (msg: the list's request without its page token and page
 * size), so that a token of other filters reads as a damaged one. Returns 0, or -ENOMEM
 * (*bits untouched).
 */
int request_sha256_bits(const ProtobufCMessage *msg, int64_t *bits)
    __attribute__((warn_unused_result));

#endif
