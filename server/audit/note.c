#include "audit/note.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/sha256.h"
#include "net/utf8.h"

#define ALG_ED25519 0x01
#define SIG_PREFIX "\xe2\x80\x94 " /* U+2014 EM DASH, then a space */

/* A space by Unicode (White_Space): what a key name must not hold. */
static int is_space(uint32_t cp) {
  return cp == 0x20 || (cp >= 0x09 && cp <= 0x0d) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
         cp == 0x205f || cp == 0x3000;
}

/* A key name as C2SP's signed notes allow it: well-formed UTF-8 without spaces or '+' (and,
 * here, without control characters), 1 to NOTE_NAME_MAX bytes. */
static int name_ok(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;

  if (n == 0 || n > NOTE_NAME_MAX)
    return 0;
  for (size_t i = 0, len; i < n; i += len) {
    uint32_t cp;
    if ((len = clue__utf8_len(u + i, n - i)) == 0)
      return 0; /* not well-formed UTF-8 */
    cp = clue__utf8_value(u + i, len);
    if (cp == '+' || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || is_space(cp))
      return 0;
  }
  return 1;
}

static uint32_t key_id(const char *name, const uint8_t pub[32]) {
  size_t n = strlen(name);
  uint8_t buf[NOTE_NAME_MAX + 2 + 32], md[SHA256_LEN];

  memcpy(buf, name, n);
  buf[n] = '\n';
  buf[n + 1] = ALG_ED25519;
  memcpy(buf + n + 2, pub, 32);
  (void)sha256_digest(buf, n + 34, md); /* all zero on a failure */
  return (uint32_t)md[0] << 24 | (uint32_t)md[1] << 16 | (uint32_t)md[2] << 8 | md[3];
}

/* The public key of a seed. */
static int seed_public(const uint8_t seed[32], uint8_t pub[32]) {
  EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
  size_t len = 32;
  int rc = NOTE_ECRYPTO;

  if (pk != NULL && EVP_PKEY_get_raw_public_key(pk, pub, &len) == 1 && len == 32)
    rc = 0;
  EVP_PKEY_free(pk);
  return rc;
}

int note_key_generate(const char *name, note_key_t *out) {
  note_key_t k;

  memset(&k, 0, sizeof(k));
  if (!name_ok(name, strlen(name)))
    return NOTE_EFORMAT;
  if (RAND_bytes(k.seed, 32) != 1 || seed_public(k.seed, k.pub) != 0)
    return NOTE_ECRYPTO;
  snprintf(k.name, sizeof(k.name), "%s", name);
  k.has_private = 1;
  k.id = key_id(k.name, k.pub);
  *out = k;
  return 0;
}

/* Base64 of n bytes into out (4 * ceil(n / 3) + 1 bytes). */
static void b64(const uint8_t *b, size_t n, char *out) {
  EVP_EncodeBlock((unsigned char *)out, b, (int)n);
}

/* Decode exactly want bytes of standard, padded base64 s (len characters). */
static int unb64(const char *s, size_t len, uint8_t *out, size_t want) {
  uint8_t buf[256];
  int n, pad = 0;

  if (len == 0 || len % 4 != 0 || len / 4 * 3 > sizeof(buf))
    return NOTE_EFORMAT;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             c == '+' || c == '/' || (c == '=' && i >= len - 2);
    if (!ok)
      return NOTE_EFORMAT;
  }
  if (s[len - 1] == '=')
    pad++;
  if (s[len - 2] == '=')
    pad++;
  if (pad == 1 && s[len - 2] == '=')
    return NOTE_EFORMAT;
  n = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)len);
  if (n < 0 || (size_t)(n - pad) != want)
    return NOTE_EFORMAT;
  /* Only the canonical encoding: the unused low bits of the last character must be zero,
   * or one signature would have several spellings. */
  {
    char again[344];
    b64(buf, want, again);
    if (strlen(again) != len || memcmp(again, s, len) != 0)
      return NOTE_EFORMAT;
  }
  memcpy(out, buf, want);
  return 0;
}

int note_key_parse(const char *text, note_key_t *out) {
  note_key_t k;
  const char *p = text, *f[4];
  size_t flen[4], len = strlen(text);
  uint8_t raw[33];
  char *end;
  unsigned long id;
  int priv = 0, nf = 0;

  memset(&k, 0, sizeof(k));
  while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ' ||
                     text[len - 1] == '\t'))
    len--;
  if (len >= 12 && strncmp(p, "PRIVATE+KEY+", 12) == 0) {
    priv = 1;
    p += 12;
    len -= 12;
  }
  /* name+id+key: three fields split at '+', the last of which is base64 (may hold '+'). */
  for (nf = 0; nf < 2; nf++) {
    const char *plus = memchr(p, '+', len);
    if (plus == NULL)
      return NOTE_EFORMAT;
    f[nf] = p;
    flen[nf] = (size_t)(plus - p);
    len -= flen[nf] + 1;
    p = plus + 1;
  }
  f[2] = p;
  flen[2] = len;
  if (!name_ok(f[0], flen[0]) || flen[1] != 8 || strspn(f[1], "0123456789abcdef") < 8)
    return NOTE_EFORMAT;
  memcpy(k.name, f[0], flen[0]);
  k.name[flen[0]] = '\0';
  id = strtoul(f[1], &end, 16);
  if (end != f[1] + 8)
    return NOTE_EFORMAT;
  if (unb64(f[2], flen[2], raw, 33) != 0 || raw[0] != ALG_ED25519)
    return NOTE_EFORMAT;
  if (priv) {
    memcpy(k.seed, raw + 1, 32);
    k.has_private = 1;
    if (seed_public(k.seed, k.pub) != 0)
      return NOTE_ECRYPTO;
  } else {
    memcpy(k.pub, raw + 1, 32);
  }
  k.id = key_id(k.name, k.pub);
  if (k.id != (uint32_t)id)
    return NOTE_EFORMAT;
  *out = k;
  return 0;
}

int note_key_read_file(const char *path, note_key_t *out, char *err, size_t cap) {
  char buf[1024];
  size_t n;
  FILE *f = fopen(path, "r");
  int rc;

  if (f == NULL) {
    snprintf(err, cap, "cannot open %s: %s", path, strerror(errno));
    return NOTE_EFORMAT;
  }
  n = fread(buf, 1, sizeof(buf) - 1, f);
  rc = ferror(f) || !feof(f);
  fclose(f);
  if (rc) {
    snprintf(err, cap, "%s: cannot be read, or is too long for a key", path);
    return NOTE_EFORMAT;
  }
  buf[n] = '\0';
  rc = note_key_parse(buf, out);
  OPENSSL_cleanse(buf, sizeof(buf));
  if (rc != 0)
    snprintf(err, cap, "%s does not hold a signed-note Ed25519 key (name+id+key)", path);
  return rc;
}

int note_key_private_text(const note_key_t *k, char *buf, size_t cap) {
  uint8_t raw[33];
  char enc[64];

  if (!k->has_private)
    return NOTE_EFORMAT;
  raw[0] = ALG_ED25519;
  memcpy(raw + 1, k->seed, 32);
  b64(raw, 33, enc);
  if ((size_t)snprintf(buf, cap, "PRIVATE+KEY+%s+%08x+%s", k->name, k->id, enc) >= cap)
    return NOTE_EFORMAT;
  return 0;
}

int note_key_public_text(const note_key_t *k, char *buf, size_t cap) {
  uint8_t raw[33];
  char enc[64];

  raw[0] = ALG_ED25519;
  memcpy(raw + 1, k->pub, 32);
  b64(raw, 33, enc);
  if ((size_t)snprintf(buf, cap, "%s+%08x+%s", k->name, k->id, enc) >= cap)
    return NOTE_EFORMAT;
  return 0;
}

int note_checkpoint_sign(const note_key_t *k, uint64_t size, const merkle_hash_t root, char **out) {
  char body[NOTE_NAME_MAX + 96], root64[48], sig64[96];
  uint8_t sig[4 + 64];
  size_t siglen = 64, blen, cap;
  EVP_PKEY *pk = NULL;
  EVP_MD_CTX *ctx = NULL;
  char *note;
  int rc = NOTE_ECRYPTO;

  if (!k->has_private)
    return NOTE_ECRYPTO;
  b64(root, MERKLE_HASH_LEN, root64);
  blen = (size_t)snprintf(body, sizeof(body), "%s\n%llu\n%s\n", k->name, (unsigned long long)size,
                          root64);
  pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, k->seed, 32);
  ctx = EVP_MD_CTX_new();
  if (pk == NULL || ctx == NULL || EVP_DigestSignInit(ctx, NULL, NULL, NULL, pk) != 1 ||
      EVP_DigestSign(ctx, sig + 4, &siglen, (const unsigned char *)body, blen) != 1 ||
      siglen != 64)
    goto out;
  sig[0] = (uint8_t)(k->id >> 24);
  sig[1] = (uint8_t)(k->id >> 16);
  sig[2] = (uint8_t)(k->id >> 8);
  sig[3] = (uint8_t)k->id;
  b64(sig, sizeof(sig), sig64);
  cap = blen + strlen(k->name) + strlen(sig64) + 16;
  note = malloc(cap);
  if (note == NULL) {
    rc = NOTE_ENOMEM;
    goto out;
  }
  snprintf(note, cap, "%s\n" SIG_PREFIX "%s %s\n", body, k->name, sig64);
  *out = note;
  rc = 0;
out:
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pk);
  return rc;
}

static int verify_sig(const note_key_t *k, const char *body, size_t blen, const uint8_t sig[64]) {
  EVP_PKEY *pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, k->pub, 32);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int rc = NOTE_ESIGNATURE;

  if (pk == NULL || ctx == NULL)
    rc = NOTE_ENOMEM;
  else if (EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) == 1 &&
           EVP_DigestVerify(ctx, sig, 64, (const unsigned char *)body, blen) == 1)
    rc = 0;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pk);
  return rc;
}

int note_checkpoint_open(const note_key_t *k, const char *note, checkpoint_t *cp) {
  const char *sep = NULL, *p, *line, *nl;
  size_t blen, nlen = strlen(k->name);
  checkpoint_t c;
  char *end;
  int found = 0;

  memset(&c, 0, sizeof(c));
  /* The body ends at the last blank line. */
  for (p = strstr(note, "\n\n"); p; p = strstr(p + 1, "\n\n"))
    sep = p;
  if (sep == NULL)
    return NOTE_EFORMAT;
  blen = (size_t)(sep - note) + 1;
  /* Body: origin, size, root (extension lines, if any, are covered by the signature). */
  nl = memchr(note, '\n', blen);
  if (nl == NULL || (size_t)(nl - note) != nlen || memcmp(note, k->name, nlen) != 0)
    return NOTE_EFORMAT;
  memcpy(c.origin, note, nlen);
  line = nl + 1;
  if (*line < '0' || *line > '9' || (line[0] == '0' && line[1] != '\n'))
    return NOTE_EFORMAT;
  errno = 0;
  c.size = strtoull(line, &end, 10);
  if (*end != '\n' || errno == ERANGE || c.size > NOTE_SIZE_MAX)
    return NOTE_EFORMAT;
  line = end + 1;
  nl = strchr(line, '\n');
  if (nl == NULL || nl > note + blen || unb64(line, (size_t)(nl - line), c.root, 32) != 0)
    return NOTE_EFORMAT;
  /* Signature lines: the first by k's name and id decides. */
  for (line = sep + 2; *line; line = nl + 1) {
    uint8_t sig[68];
    nl = strchr(line, '\n');
    if (nl == NULL || strncmp(line, SIG_PREFIX, sizeof(SIG_PREFIX) - 1) != 0)
      return NOTE_EFORMAT;
    p = line + sizeof(SIG_PREFIX) - 1;
    if ((size_t)(nl - p) <= nlen + 1 || memcmp(p, k->name, nlen) != 0 || p[nlen] != ' ')
      continue;
    p += nlen + 1;
    if (unb64(p, (size_t)(nl - p), sig, 68) != 0)
      continue;
    if (((uint32_t)sig[0] << 24 | (uint32_t)sig[1] << 16 | (uint32_t)sig[2] << 8 | sig[3]) != k->id)
      continue;
    found = 1;
    int rc = verify_sig(k, note, blen, sig + 4);
    if (rc != 0)
      return rc;
    break;
  }
  if (!found)
    return NOTE_ESIGNATURE;
  *cp = c;
  return 0;
}

int note_signer(const char *note, size_t i, char *name, uint32_t *id) {
  const char *sep = NULL, *p, *line, *nl, *sp;
  uint8_t sig[68];

  for (p = strstr(note, "\n\n"); p; p = strstr(p + 1, "\n\n"))
    sep = p;
  if (sep == NULL)
    return NOTE_EFORMAT;
  for (line = sep + 2; *line; line = nl + 1) {
    nl = strchr(line, '\n');
    if (nl == NULL || strncmp(line, SIG_PREFIX, sizeof(SIG_PREFIX) - 1) != 0)
      return NOTE_EFORMAT;
    if (i-- > 0)
      continue;
    p = line + sizeof(SIG_PREFIX) - 1;
    sp = memchr(p, ' ', (size_t)(nl - p));
    if (sp == NULL || !name_ok(p, (size_t)(sp - p)) ||
        unb64(sp + 1, (size_t)(nl - sp - 1), sig, sizeof(sig)) != 0)
      return NOTE_EFORMAT;
    memcpy(name, p, (size_t)(sp - p));
    name[sp - p] = '\0';
    *id = (uint32_t)sig[0] << 24 | (uint32_t)sig[1] << 16 | (uint32_t)sig[2] << 8 | sig[3];
    return 0;
  }
  return NOTE_EFORMAT;
}

void note_key_label(const note_key_t *k, char *buf, size_t cap) {
  snprintf(buf, cap, "%s+%08x", k->name, k->id);
}
