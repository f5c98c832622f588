#include "audit/sha256.h"

#include <openssl/evp.h>
#include <string.h>

/* Kept for the process's life (reachable, never freed). */
static const EVP_MD *sha256_md(void) {
  static EVP_MD *md;

  if (md == NULL)
    md = EVP_MD_fetch(NULL, "SHA2-256", NULL);
  return md != NULL ? md : EVP_sha256();
}

int sha256_digest(const void *data, size_t len, uint8_t out[SHA256_LEN]) {
  unsigned n = 0;

  if (EVP_Digest(data, len, out, &n, sha256_md(), NULL) != 1 || n != SHA256_LEN) {
    memset(out, 0, SHA256_LEN);
    return -1;
  }
  return 0;
}
