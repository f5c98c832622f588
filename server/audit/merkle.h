#ifndef CLUED_AUDIT_MERKLE_H
#define CLUED_AUDIT_MERKLE_H

/* The audit log's Merkle tree (RFC 9162 §2.1) and the canonical encoding of an event as a
 * leaf (docs/AUDIT.md). Pure: no I/O, no protobuf; shared by clued (which builds the tree
 * and answers proofs) and cluectl (which verifies them offline).
 *
 *   leaf hash  = SHA-256(0x00 || canonical event)
 *   node hash  = SHA-256(0x01 || left || right)
 *   MTH({})    = SHA-256()
 *
 * merkle_tree_t keeps every complete subtree's hash (level k holds the hashes of leaves
 * [i*2^k, (i+1)*2^k)), so a root, an inclusion proof or a consistency proof for any size up
 * to the tree's costs O(log^2 n) hashes at most, and appending is amortised O(1). */

#include <stddef.h>
#include <stdint.h>

#define MERKLE_HASH_LEN 32
#define MERKLE_MAX_PROOF 64 /* hashes in any proof of a tree of fewer than 2^63 leaves */

/** Error codes. */
enum {
  MERKLE_OK = 0,
  MERKLE_ENOMEM = -1,
  MERKLE_EINVAL = -2,  /* an index or size out of range */
  MERKLE_EVERIFY = -3, /* a proof does not verify */
};

typedef uint8_t merkle_hash_t[MERKLE_HASH_LEN];

typedef struct merkle_tree {
  uint64_t size;            /* leaves */
  merkle_hash_t *level[64]; /* level[k][i]: hash of the complete subtree [i<<k, (i+1)<<k) */
  uint64_t cap[64];         /* allocated entries of level[k] */
} merkle_tree_t;

/** Hash a leaf: SHA-256(0x00 || data). Returns 0 or MERKLE_ENOMEM. */
int merkle_leaf_hash(const void *data, size_t len, merkle_hash_t out)
    __attribute__((warn_unused_result));

/** Hash an interior node: SHA-256(0x01 || left || right). */
void merkle_node_hash(const merkle_hash_t left, const merkle_hash_t right, merkle_hash_t out);

/** An empty tree. */
void merkle_tree_init(merkle_tree_t *t);

/** Release what the tree holds; it is empty afterwards. */
void merkle_tree_free(merkle_tree_t *t);

/** Append one leaf hash. Returns 0 or MERKLE_ENOMEM (the tree is unchanged). */
int merkle_tree_append(merkle_tree_t *t, const merkle_hash_t leaf)
    __attribute__((warn_unused_result));

/** The leaf hash at index i (< size), or NULL. */
const uint8_t *merkle_tree_leaf(const merkle_tree_t *t, uint64_t i);

/** MTH of the first n leaves (n <= size). Returns 0 or MERKLE_EINVAL. */
int merkle_tree_root(const merkle_tree_t *t, uint64_t n, merkle_hash_t out)
    __attribute__((warn_unused_result));

/**
 * The inclusion proof (RFC 9162 §2.1.3.1, PATH) of leaf m in the tree of the first n leaves,
 * 0 <= m < n <= size, into proof (at most MERKLE_MAX_PROOF hashes), its length in *len.
 * Returns 0 or MERKLE_EINVAL.
 */
int merkle_tree_inclusion(const merkle_tree_t *t, uint64_t m, uint64_t n,
                          merkle_hash_t proof[MERKLE_MAX_PROOF], size_t *len)
    __attribute__((warn_unused_result));

/**
 * The consistency proof (RFC 9162 §2.1.4.1, PROOF) between the trees of the first m and the
 * first n leaves, 0 < m <= n <= size (m == n: empty). Returns 0 or MERKLE_EINVAL.
 */
int merkle_tree_consistency(const merkle_tree_t *t, uint64_t m, uint64_t n,
                            merkle_hash_t proof[MERKLE_MAX_PROOF], size_t *len)
    __attribute__((warn_unused_result));

/** Verify an inclusion proof (RFC 9162 §2.1.3.2). Returns 0 or MERKLE_EVERIFY. */
int merkle_verify_inclusion(uint64_t index, uint64_t size, const merkle_hash_t leaf,
                            const merkle_hash_t *proof, size_t len, const merkle_hash_t root)
    __attribute__((warn_unused_result));

/** Verify a consistency proof (RFC 9162 §2.1.4.2). Returns 0 or MERKLE_EVERIFY. */
int merkle_verify_consistency(uint64_t size1, uint64_t size2, const merkle_hash_t root1,
                              const merkle_hash_t root2, const merkle_hash_t *proof, size_t len)
    __attribute__((warn_unused_result));

/* ---- the canonical event ---------------------------------------------------------------- */

/** The fields of an event as a leaf covers them, in this order (docs/AUDIT.md). */
enum {
  AUDIT_LEAF_SEQ,
  AUDIT_LEAF_AT_US, /* microseconds since the epoch */
  AUDIT_LEAF_ACTOR_USER,
  AUDIT_LEAF_ACTOR_UNIT,
  AUDIT_LEAF_ACTION,
  AUDIT_LEAF_SUBJECT_TYPE,
  AUDIT_LEAF_SUBJECT_ID,
  AUDIT_LEAF_OWNER_UNIT,
  AUDIT_LEAF_FROM_STATE,
  AUDIT_LEAF_TO_STATE,
  AUDIT_LEAF_REASON,
  AUDIT_LEAF_DETAILS,
  AUDIT_LEAF_PREV_HASH, /* lower-case hex */
  AUDIT_LEAF_HASH,      /* lower-case hex */
  AUDIT_LEAF_TOKEN,     /* actor_token_id (0010): left out while NULL */
  AUDIT_LEAF_NFIELDS,
};

/** Fields from here on were added after the first leaves: a NULL one is left out. */
#define AUDIT_LEAF_OPTIONAL AUDIT_LEAF_TOKEN

/**
 * The leaf hash of an event given as text fields (decimal integers, hex hashes; NULL for SQL
 * NULL): SHA-256(0x00 || "clued-audit-leaf-v1\n" || per field: "-\n" for NULL, else
 * "<byte length>:<bytes>\n"; fields from AUDIT_LEAF_OPTIONAL on are left out while NULL, so
 * that a column added later changes no earlier leaf). Returns 0 or MERKLE_ENOMEM.
 */
int audit_leaf_hash(const char *const fields[AUDIT_LEAF_NFIELDS], merkle_hash_t out)
    __attribute__((warn_unused_result));

/** Lower-case hex of n bytes into out (2n + 1 bytes). */
void merkle_hex(const uint8_t *b, size_t n, char *out);

#endif
