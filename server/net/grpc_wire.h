#ifndef CLUED_NET_GRPC_WIRE_H
#define CLUED_NET_GRPC_WIRE_H

/* gRPC over HTTP/2 wire details that need no socket: the length-prefixed message
 * framing, grpc-timeout values and grpc-message percent-encoding. Shared by clued and
 * libclue, and unit-tested on their own. */

#include <stddef.h>
#include <stdint.h>

#define GRPC_FRAME_PREFIX 5 /* 1 byte compressed flag + 4 bytes big-endian length */
#define GRPC_DEC_INITIAL 4096 /* first allocation for a message body */

/** Error codes of this module. */
enum {
  GRPC_WIRE_EAGAIN = -1,     /* need more input */
  GRPC_WIRE_ETOOBIG = -2,    /* declared length over the limit */
  GRPC_WIRE_EBADFLAG = -3,   /* compressed-flag byte neither 0 nor 1 */
  GRPC_WIRE_ENOMEM = -4,
  GRPC_WIRE_EINVAL = -5,
};

typedef enum grpc_dec_state {
  GRPC_DEC_PREFIX, /* reading the 5-byte prefix */
  GRPC_DEC_BODY,   /* reading the message body */
  GRPC_DEC_FAILED, /* a framing error happened; no further input is accepted */
} grpc_dec_state_t;

/** Incremental decoder of length-prefixed gRPC messages. */
typedef struct grpc_decoder {
  grpc_dec_state_t state;
  size_t max_len;      /* largest message accepted */
  uint8_t prefix[GRPC_FRAME_PREFIX];
  size_t prefix_have;
  int compressed;      /* flag of the message being read */
  uint8_t *buf;        /* body being read, owned */
  size_t cap;          /* bytes allocated at buf */
  size_t len;          /* declared body length */
  size_t have;         /* body bytes read so far */
} grpc_decoder_t;

/** A complete message handed out by grpc_decoder_feed(). */
typedef struct grpc_message {
  uint8_t *data; /* owned by the receiver: free() it */
  size_t len;
  int compressed;
} grpc_message_t;

/** Initialise a decoder that accepts messages of at most max_len bytes. */
void grpc_decoder_init(grpc_decoder_t *d, size_t max_len);

/** Free what the decoder holds. */
void grpc_decoder_free(grpc_decoder_t *d);

/**
 * Consume up to len bytes of input. Returns the number of bytes consumed (>= 0) and, when a
 * whole message completed, fills *out and sets *got to 1 (the caller owns out->data).
 * Consumption stops right after a completed message, so call again with the rest.
 * Errors: GRPC_WIRE_ETOOBIG, GRPC_WIRE_EBADFLAG, GRPC_WIRE_ENOMEM; the decoder is FAILED after.
 */
long grpc_decoder_feed(grpc_decoder_t *d, const uint8_t *in, size_t len, grpc_message_t *out,
                       int *got) __attribute__((warn_unused_result));

/** True if the decoder holds part of a message (prefix or body). */
int grpc_decoder_partial(const grpc_decoder_t *d);

/** Write the 5-byte prefix for an uncompressed message of len bytes. */
void grpc_frame_prefix(uint8_t out[GRPC_FRAME_PREFIX], uint32_t len);

/**
 * Parse a grpc-timeout header value ("1-8 ASCII digits" + unit H M S m u n) into
 * milliseconds, rounding sub-millisecond values up. Returns 0 or GRPC_WIRE_EINVAL.
 */
int grpc_timeout_parse(const char *value, size_t len, uint64_t *ms) __attribute__((warn_unused_result));

/** Format a timeout in milliseconds as a grpc-timeout value into out (at least 16 bytes). */
void grpc_timeout_format(uint64_t ms, char *out, size_t outlen);

/**
 * Percent-encode a grpc-message value: bytes outside 0x20-0x7E and '%' become %XX.
 * Returns a malloc'd NUL-terminated string or NULL on out of memory.
 */
char *grpc_message_encode(const char *msg, size_t len);

/**
 * A header value of 1 to 9 decimal digits (":status", "grpc-status") as a number of at most
 * max; -1 if it is anything else.
 */
int grpc_parse_uint(const uint8_t *v, size_t len, int max);

/** The value of hexadecimal digit c (either case), or -1. */
int grpc_hex_digit(char c);

/**
 * Decode a percent-encoded grpc-message. Malformed escapes are kept verbatim, as the
 * specification asks. Returns a malloc'd NUL-terminated string or NULL on out of memory.
 */
char *grpc_message_decode(const char *val, size_t len);

#endif
