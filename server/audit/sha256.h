#ifndef CLUED_AUDIT_SHA256_H
#define CLUED_AUDIT_SHA256_H

/* SHA-256 through OpenSSL, for the server and cluectl alike (audit chains' tree and notes,
 * token hashes, migration checksums). */

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32

/**
 * out = SHA-256(data[0..len)). The implementation is fetched once per process:
 * EVP_Digest() with EVP_sha256() looks it up again on every call, about half the cost of
 * hashing a token. Returns 0, or -1 (out all zero) if OpenSSL fails.
 */
int sha256_digest(const void *data, size_t len, uint8_t out[SHA256_LEN]);

#endif
