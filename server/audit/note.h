#ifndef CLUED_AUDIT_NOTE_H
#define CLUED_AUDIT_NOTE_H

/* Signed checkpoints of the audit log: C2SP tlog-checkpoint bodies in C2SP signed notes,
 * signed with Ed25519 (docs/AUDIT.md). Shared by clued (signs) and cluectl (verifies).
 *
 *   <origin>\n<tree size>\n<base64 root hash>\n
 *   \n
 *   — <key name> <base64(key id (4 bytes, big-endian) || Ed25519 signature (64 bytes))>\n
 *
 * The signature covers the body (the three lines with their newlines). The origin is the
 * key's name. Keys are written as the signed-note text encodings:
 *   signer:   PRIVATE+KEY+<name>+<key id, 8 hex digits>+<base64(0x01 || 32-byte seed)>
 *   verifier: <name>+<key id, 8 hex digits>+<base64(0x01 || 32-byte public key)>
 * with key id = the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key). */

#include <stddef.h>
#include <stdint.h>

#include "audit/merkle.h"

/** Error codes. */
enum {
  NOTE_OK = 0,
  NOTE_ENOMEM = -1,
  NOTE_EFORMAT = -2,    /* the text is not a well-formed key or note */
  NOTE_ESIGNATURE = -3, /* no signature line by the key, or it does not verify */
  NOTE_ECRYPTO = -4,    /* the crypto library failed */
};

#define NOTE_NAME_MAX 128
/* The greatest tree size a checkpoint may name: tree sizes are int64 on the wire
 * (Checkpoint.tree_size, GetConsistencyProofRequest). */
#define NOTE_SIZE_MAX ((uint64_t)INT64_MAX)

typedef struct note_key {
  char name[NOTE_NAME_MAX + 1];
  uint32_t id;
  uint8_t pub[32];
  int has_private;
  uint8_t seed[32]; /* the private key, when has_private */
} note_key_t;

/** A checkpoint's content. */
typedef struct checkpoint {
  char origin[NOTE_NAME_MAX + 1];
  uint64_t size;
  merkle_hash_t root;
} checkpoint_t;

/** A new random key named name. Returns 0, NOTE_EFORMAT (bad name) or NOTE_ECRYPTO. */
int note_key_generate(const char *name, note_key_t *out) __attribute__((warn_unused_result));

/**
 * Parse a signer key (PRIVATE+KEY+...) or a verifier key, trailing white space ignored; a
 * signer key's id and public key are checked against its seed. Returns 0, NOTE_EFORMAT or
 * NOTE_ECRYPTO.
 */
int note_key_parse(const char *text, note_key_t *out) __attribute__((warn_unused_result));

/**
 * Read a key file (note_key_parse()). Returns 0, or a negative code after writing why into
 * err (cap bytes): the file cannot be read, or does not hold a key.
 */
int note_key_read_file(const char *path, note_key_t *out, char *err, size_t cap)
    __attribute__((warn_unused_result));

/** The signer key's text, no newline, into buf (at least 300 bytes). Returns 0 or NOTE_EFORMAT. */
int note_key_private_text(const note_key_t *k, char *buf, size_t cap)
    __attribute__((warn_unused_result));

/** The verifier key's text, no newline, into buf (at least 250 bytes). */
int note_key_public_text(const note_key_t *k, char *buf, size_t cap)
    __attribute__((warn_unused_result));

/**
 * Sign the checkpoint (size, root) with k (which must hold its private key); the note goes to
 * *out (malloc'd, NUL-terminated; the caller frees it). Returns 0, NOTE_ENOMEM, NOTE_ECRYPTO.
 */
int note_checkpoint_sign(const note_key_t *k, uint64_t size, const merkle_hash_t root, char **out)
    __attribute__((warn_unused_result));

/**
 * Parse a signed checkpoint note and verify its signature by k. Returns 0 and fills *cp, or
 * NOTE_EFORMAT (not a checkpoint note, its origin is not k's name, or its size is more than
 * NOTE_SIZE_MAX), NOTE_ESIGNATURE (no line signed by k, or it does not verify), NOTE_ENOMEM.
 */
int note_checkpoint_open(const note_key_t *k, const char *note, checkpoint_t *cp)
    __attribute__((warn_unused_result));

/**
 * The key the i-th signature line (from 0) of a signed note names: its name into name (at
 * least NOTE_NAME_MAX + 1 bytes) and its key id, the first 4 bytes of the signature. Nothing
 * is verified: this says which key a note claims, to tell a replaced key from a forged note.
 * Returns 0, or NOTE_EFORMAT when the note has no such well-formed line.
 */
int note_signer(const char *note, size_t i, char *name, uint32_t *id)
    __attribute__((warn_unused_result));

/** "<name>+<key id, 8 hex digits>", how messages name a key, into buf (140 bytes or more). */
void note_key_label(const note_key_t *k, char *buf, size_t cap);

#endif
