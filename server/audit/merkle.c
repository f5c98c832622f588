#include "audit/merkle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/sha256.h"

/* SHA-256 fails only when out of memory, which its one-shot form does not allocate for; out is
 * then all zero. */
static void sha256(const void *data, size_t len, merkle_hash_t out) {
  (void)sha256_digest(data, len, out);
}

int merkle_leaf_hash(const void *data, size_t len, merkle_hash_t out) {
  uint8_t *buf = malloc(len + 1);
  if (buf == NULL)
    return MERKLE_ENOMEM;
  buf[0] = 0x00;
  memcpy(buf + 1, data, len);
  sha256(buf, len + 1, out);
  free(buf);
  return 0;
}

void merkle_node_hash(const merkle_hash_t left, const merkle_hash_t right, merkle_hash_t out) {
  uint8_t buf[1 + 2 * MERKLE_HASH_LEN];
  buf[0] = 0x01;
  memcpy(buf + 1, left, MERKLE_HASH_LEN);
  memcpy(buf + 1 + MERKLE_HASH_LEN, right, MERKLE_HASH_LEN);
  sha256(buf, sizeof(buf), out);
}

void merkle_tree_init(merkle_tree_t *t) {
  memset(t, 0, sizeof(*t));
}

void merkle_tree_free(merkle_tree_t *t) {
  for (int k = 0; k < 64; k++)
    free(t->level[k]);
  merkle_tree_init(t);
}

/* Make room for entry idx of level k. */
static int level_reserve(merkle_tree_t *t, int k, uint64_t idx) {
  uint64_t cap = t->cap[k];
  merkle_hash_t *p;

  if (idx < cap)
    return 0;
  cap = cap ? cap * 2 : 64;
  while (cap <= idx)
    cap *= 2;
  p = realloc(t->level[k], (size_t)cap * sizeof(merkle_hash_t));
  if (p == NULL)
    return MERKLE_ENOMEM;
  t->level[k] = p;
  t->cap[k] = cap;
  return 0;
}

int merkle_tree_append(merkle_tree_t *t, const merkle_hash_t leaf) {
  uint64_t n = t->size + 1; /* the size after */
  int k;

  /* Reserve first, so that a failure leaves the tree as it was. */
  for (k = 0; k < 63 && (n & ((1ull << k) - 1)) == 0; k++)
    if (level_reserve(t, k, (n >> k) - 1) != 0)
      return MERKLE_ENOMEM;
  memcpy(t->level[0][t->size], leaf, MERKLE_HASH_LEN);
  for (k = 1; k < 63 && (n & ((1ull << k) - 1)) == 0; k++) {
    uint64_t i = (n >> k) - 1;
    merkle_node_hash(t->level[k - 1][2 * i], t->level[k - 1][2 * i + 1], t->level[k][i]);
  }
  t->size = n;
  return 0;
}

const uint8_t *merkle_tree_leaf(const merkle_tree_t *t, uint64_t i) {
  return i < t->size ? t->level[0][i] : NULL;
}

/* The largest power of two below n (n > 1). */
static uint64_t split_point(uint64_t n) {
  return 1ull << (63 - __builtin_clzll(n - 1));
}

/* MTH(D[lo:hi]), lo < hi <= size. */
static void mth(const merkle_tree_t *t, uint64_t lo, uint64_t hi, merkle_hash_t out) {
  uint64_t n = hi - lo, k;
  merkle_hash_t l, r;

  if ((n & (n - 1)) == 0) {
    int j = __builtin_ctzll(n);
    if ((lo & (n - 1)) == 0) {
      memcpy(out, t->level[j][lo >> j], MERKLE_HASH_LEN);
      return;
    }
  }
  k = split_point(n);
  mth(t, lo, lo + k, l);
  mth(t, lo + k, hi, r);
  merkle_node_hash(l, r, out);
}

int merkle_tree_root(const merkle_tree_t *t, uint64_t n, merkle_hash_t out) {
  if (n > t->size)
    return MERKLE_EINVAL;
  if (n == 0) {
    sha256("", 0, out);
    return 0;
  }
  mth(t, 0, n, out);
  return 0;
}

typedef struct proof_buf {
  merkle_hash_t *h;
  size_t len;
} proof_buf_t;

static void path(const merkle_tree_t *t, uint64_t m, uint64_t lo, uint64_t hi, proof_buf_t *p) {
  uint64_t k;

  if (hi - lo == 1)
    return;
  k = split_point(hi - lo);
  if (m < lo + k) {
    path(t, m, lo, lo + k, p);
    mth(t, lo + k, hi, p->h[p->len++]);
  } else {
    path(t, m, lo + k, hi, p);
    mth(t, lo, lo + k, p->h[p->len++]);
  }
}

int merkle_tree_inclusion(const merkle_tree_t *t, uint64_t m, uint64_t n,
                          merkle_hash_t proof[MERKLE_MAX_PROOF], size_t *len) {
  proof_buf_t p = {proof, 0};

  if (n > t->size || m >= n)
    return MERKLE_EINVAL;
  path(t, m, 0, n, &p);
  *len = p.len;
  return 0;
}

/* SUBPROOF(m, D[lo:hi], b) of RFC 9162 §2.1.4.1; m counts from lo. */
static void subproof(const merkle_tree_t *t, uint64_t m, uint64_t lo, uint64_t hi, int b,
                     proof_buf_t *p) {
  uint64_t n = hi - lo, k;

  if (m == n) {
    if (!b)
      mth(t, lo, hi, p->h[p->len++]);
    return;
  }
  k = split_point(n);
  if (m <= k) {
    subproof(t, m, lo, lo + k, b, p);
    mth(t, lo + k, hi, p->h[p->len++]);
  } else {
    subproof(t, m - k, lo + k, hi, 0, p);
    mth(t, lo, lo + k, p->h[p->len++]);
  }
}

int merkle_tree_consistency(const merkle_tree_t *t, uint64_t m, uint64_t n,
                            merkle_hash_t proof[MERKLE_MAX_PROOF], size_t *len) {
  proof_buf_t p = {proof, 0};

  if (n > t->size || m == 0 || m > n)
    return MERKLE_EINVAL;
  if (m < n)
    subproof(t, m, 0, n, 1, &p);
  *len = p.len;
  return 0;
}

int merkle_verify_inclusion(uint64_t index, uint64_t size, const merkle_hash_t leaf,
                            const merkle_hash_t *proof, size_t len, const merkle_hash_t root) {
  uint64_t fn = index, sn = size - 1;
  merkle_hash_t r;

  if (index >= size)
    return MERKLE_EVERIFY;
  memcpy(r, leaf, MERKLE_HASH_LEN);
  for (size_t i = 0; i < len; i++) {
    if (sn == 0)
      return MERKLE_EVERIFY;
    if ((fn & 1) || fn == sn) {
      merkle_node_hash(proof[i], r, r);
      if (!(fn & 1))
        while (fn != 0 && !(fn & 1)) {
          fn >>= 1;
          sn >>= 1;
        }
    } else {
      merkle_node_hash(r, proof[i], r);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && memcmp(r, root, MERKLE_HASH_LEN) == 0 ? 0 : MERKLE_EVERIFY;
}

int merkle_verify_consistency(uint64_t size1, uint64_t size2, const merkle_hash_t root1,
                              const merkle_hash_t root2, const merkle_hash_t *proof, size_t len) {
  uint64_t fn, sn;
  merkle_hash_t fr, sr;
  size_t i = 0;

  if (size1 > size2)
    return MERKLE_EVERIFY;
  if (size1 == size2)
    return len == 0 && memcmp(root1, root2, MERKLE_HASH_LEN) == 0 ? 0 : MERKLE_EVERIFY;
  if (size1 == 0) /* the empty tree is a prefix of every tree */
    return len == 0 ? 0 : MERKLE_EVERIFY;
  if (len == 0)
    return MERKLE_EVERIFY;
  /* A power-of-two first tree is itself a node of the second: the proof starts with it. */
  if ((size1 & (size1 - 1)) == 0) {
    memcpy(fr, root1, MERKLE_HASH_LEN);
  } else {
    memcpy(fr, proof[0], MERKLE_HASH_LEN);
    i = 1;
  }
  memcpy(sr, fr, MERKLE_HASH_LEN);
  fn = size1 - 1;
  sn = size2 - 1;
  while (fn & 1) {
    fn >>= 1;
    sn >>= 1;
  }
  for (; i < len; i++) {
    if (sn == 0)
      return MERKLE_EVERIFY;
    if ((fn & 1) || fn == sn) {
      merkle_node_hash(proof[i], fr, fr);
      merkle_node_hash(proof[i], sr, sr);
      if (!(fn & 1))
        while (fn != 0 && !(fn & 1)) {
          fn >>= 1;
          sn >>= 1;
        }
    } else {
      merkle_node_hash(sr, proof[i], sr);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && memcmp(fr, root1, MERKLE_HASH_LEN) == 0 &&
                 memcmp(sr, root2, MERKLE_HASH_LEN) == 0
             ? 0
             : MERKLE_EVERIFY;
}

/* ---- the canonical event ---------------------------------------------------------------- */

#define LEAF_MAGIC "clued-audit-leaf-v1\n"

int audit_leaf_hash(const char *const fields[AUDIT_LEAF_NFIELDS], merkle_hash_t out) {
  size_t cap = sizeof(LEAF_MAGIC), len = 0;
  char *buf;
  int rc;

  for (int i = 0; i < AUDIT_LEAF_NFIELDS; i++)
    cap += fields[i] ? strlen(fields[i]) + 24 : 2;
  buf = malloc(cap);
  if (buf == NULL)
    return MERKLE_ENOMEM;
  memcpy(buf, LEAF_MAGIC, sizeof(LEAF_MAGIC) - 1);
  len = sizeof(LEAF_MAGIC) - 1;
  for (int i = 0; i < AUDIT_LEAF_NFIELDS; i++) {
    if (fields[i] == NULL && i >= AUDIT_LEAF_OPTIONAL)
      continue;
    if (fields[i] == NULL) {
      memcpy(buf + len, "-\n", 2);
      len += 2;
      continue;
    }
    size_t n = strlen(fields[i]);
    len += (size_t)snprintf(buf + len, cap - len, "%zu:", n);
    memcpy(buf + len, fields[i], n);
    len += n;
    buf[len++] = '\n';
  }
  rc = merkle_leaf_hash(buf, len, out);
  free(buf);
  return rc;
}

void merkle_hex(const uint8_t *b, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[b[i] >> 4];
    out[2 * i + 1] = digits[b[i] & 15];
  }
  out[2 * n] = '\0';
}
