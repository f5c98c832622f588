#ifndef CLUED_RPC_MSG_CHECK_H
#define CLUED_RPC_MSG_CHECK_H

/* A request, checked on the wire before decoding. protobuf-c hands strings to C as
 * NUL-terminated text, so "a\0b" would decode as "a": a request silently rewritten. proto3
 * also requires every string to be valid UTF-8. Both are refused here, for every field of
 * every method, before any handler sees the request; so is wire protobuf-c would decode
 * although it is no valid message (a field numbered 0, a known field in another wire type
 * than its type's, which protobuf-c reads as a bool whatever it holds), and with it every
 * wire this walk cannot read, so that no check here is skipped for what it did not read. */

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/** How deep messages may nest in a request (protobuf's own default limit is 100). */
#define RPC_MSG_MAX_DEPTH 32

/**
 * Check the message d encoded in data[0..len), and the messages nested in it. Returns 0 if
 * its wire can be read, its known fields come in their types' wire types and no string holds
 * a NUL byte or invalid UTF-8; otherwise -1, with a message naming the field (as
 * "subject.name") where there is one in why.
 */
int rpc_msg_check(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, char *why,
                  size_t why_size);

#endif
