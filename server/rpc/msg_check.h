#ifndef CLUED_RPC_MSG_CHECK_H
#define CLUED_RPC_MSG_CHECK_H

/* A request's string fields, checked on the wire before decoding. protobuf-c hands strings
 * to C as NUL-terminated text, so "a\0b" would decode as "a": a request silently rewritten.
 * proto3 also requires every string to be valid UTF-8. Both are refused here, for every
 * field of every method, before any handler sees the request. */

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/** How deep messages may nest in a request (protobuf's own default limit is 100). */
#define RPC_MSG_MAX_DEPTH 32

/**
 * Check the string fields of the message d encoded in data[0..len), and of the messages
 * nested in it. Returns 0 if none holds a NUL byte or invalid UTF-8, or the wire cannot be
 * read (decoding then refuses it with its own message); otherwise -1, with a message naming
 * the field (as "subject.name") in why.
 */
int rpc_msg_check_strings(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                          char *why, size_t why_size);

#endif
