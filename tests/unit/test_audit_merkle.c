/* The audit log's Merkle tree and signed checkpoints (server/audit/merkle.c, note.c): every
 * proof of every tree up to 70 leaves verifies, and a proof with any hash, index or size
 * changed does not; roots agree with a naive recursive MTH; checkpoints round-trip, and any
 * changed byte of a note or a wrong key is refused; keys parse and reject garbage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "audit/merkle.h"
#include "audit/note.h"

#define MAXN 70

static merkle_hash_t leaves[MAXN];

static void make_leaves(void) {
  for (int i = 0; i < MAXN; i++) {
    char buf[16];
    int n = snprintf(buf, sizeof(buf), "leaf %d", i);
    assert_int_equal(merkle_leaf_hash(buf, (size_t)n, leaves[i]), 0);
  }
}

/* RFC 9162 §2.1.1, directly. */
static void naive_mth(uint64_t lo, uint64_t hi, merkle_hash_t out) {
  merkle_hash_t l, r;
  uint64_t k = 1;
  if (hi - lo == 1) {
    memcpy(out, leaves[lo], MERKLE_HASH_LEN);
    return;
  }
  while (k * 2 < hi - lo)
    k *= 2;
  naive_mth(lo, lo + k, l);
  naive_mth(lo + k, hi, r);
  merkle_node_hash(l, r, out);
}

static void build(merkle_tree_t *t, int n) {
  merkle_tree_init(t);
  for (int i = 0; i < n; i++)
    assert_int_equal(merkle_tree_append(t, leaves[i]), 0);
}

static void roots_agree_with_the_definition(void **state) {
  merkle_tree_t t;
  merkle_hash_t a, b;
  (void)state;
  make_leaves();
  build(&t, MAXN);
  for (uint64_t n = 1; n <= MAXN; n++) {
    assert_int_equal(merkle_tree_root(&t, n, a), 0);
    naive_mth(0, n, b);
    assert_memory_equal(a, b, MERKLE_HASH_LEN);
  }
  assert_int_equal(merkle_tree_root(&t, MAXN + 1, a), MERKLE_EINVAL);
  /* The empty tree's root is SHA-256 of nothing. */
  assert_int_equal(merkle_tree_root(&t, 0, a), 0);
  assert_int_equal(a[0], 0xe3);
  assert_int_equal(a[1], 0xb0);
  merkle_tree_free(&t);
}

static void every_inclusion_proof_verifies_and_no_altered_one(void **state) {
  merkle_tree_t t;
  merkle_hash_t proof[MERKLE_MAX_PROOF], root;
  size_t len;
  (void)state;
  make_leaves();
  build(&t, MAXN);
  for (uint64_t n = 1; n <= MAXN; n++) {
    assert_int_equal(merkle_tree_root(&t, n, root), 0);
    for (uint64_t m = 0; m < n; m++) {
      assert_int_equal(merkle_tree_inclusion(&t, m, n, proof, &len), 0);
      assert_int_equal(merkle_verify_inclusion(m, n, leaves[m], proof, len, root), 0);
      /* Another leaf or index, any hash flipped, or a hash left out: refused. (The size is
       * bound by the signed checkpoint that names the root, not by the proof.) */
      assert_int_not_equal(merkle_verify_inclusion(m, n, leaves[(m + 1) % MAXN], proof, len, root), 0);
      if (n > 1)
        assert_int_not_equal(merkle_verify_inclusion((m + 1) % n, n, leaves[m], proof, len, root), 0);
      for (size_t i = 0; i < len; i++) {
        proof[i][i % MERKLE_HASH_LEN] ^= 1;
        assert_int_not_equal(merkle_verify_inclusion(m, n, leaves[m], proof, len, root), 0);
        proof[i][i % MERKLE_HASH_LEN] ^= 1;
      }
      if (len > 0)
        assert_int_not_equal(merkle_verify_inclusion(m, n, leaves[m], proof, len - 1, root), 0);
    }
    assert_int_equal(merkle_tree_inclusion(&t, n, n, proof, &len), MERKLE_EINVAL);
  }
  merkle_tree_free(&t);
}

static void every_consistency_proof_verifies_and_no_altered_one(void **state) {
  merkle_tree_t t;
  merkle_hash_t proof[MERKLE_MAX_PROOF], r1, r2;
  size_t len;
  (void)state;
  make_leaves();
  build(&t, MAXN);
  for (uint64_t n = 1; n <= MAXN; n++) {
    assert_int_equal(merkle_tree_root(&t, n, r2), 0);
    for (uint64_t m = 1; m <= n; m++) {
      assert_int_equal(merkle_tree_root(&t, m, r1), 0);
      assert_int_equal(merkle_tree_consistency(&t, m, n, proof, &len), 0);
      assert_int_equal(merkle_verify_consistency(m, n, r1, r2, proof, len), 0);
      /* The wrong old or new root (a fork), or any hash flipped: refused. */
      if (m < n) {
        assert_int_not_equal(merkle_verify_consistency(m, n, r2, r2, proof, len), 0);
        assert_int_not_equal(merkle_verify_consistency(m, n, r1, r1, proof, len), 0);
      }
      for (size_t i = 0; i < len; i++) {
        proof[i][0] ^= 0x80;
        assert_int_not_equal(merkle_verify_consistency(m, n, r1, r2, proof, len), 0);
        proof[i][0] ^= 0x80;
      }
    }
    assert_int_equal(merkle_tree_consistency(&t, 0, n, proof, &len), MERKLE_EINVAL);
    assert_int_equal(merkle_tree_consistency(&t, n + 1, n, proof, &len), MERKLE_EINVAL);
  }
  assert_int_not_equal(merkle_verify_consistency(5, 4, r1, r2, proof, 0), 0);
  merkle_tree_free(&t);
}

static void the_tree_can_be_cut_back_and_regrown(void **state) {
  merkle_tree_t t;
  merkle_hash_t a, b;
  (void)state;
  make_leaves();
  build(&t, 45);
  t.size = 30; /* what the server does when an append is refused */
  for (int i = 30; i < 45; i++)
    assert_int_equal(merkle_tree_append(&t, leaves[i]), 0);
  assert_int_equal(merkle_tree_root(&t, 45, a), 0);
  naive_mth(0, 45, b);
  assert_memory_equal(a, b, MERKLE_HASH_LEN);
  merkle_tree_free(&t);
}

static void leaf_encoding_distinguishes_null_from_empty(void **state) {
  const char *f[AUDIT_LEAF_NFIELDS] = {"1", "2", NULL, NULL, "a", "clue", "3", NULL,
                                        NULL, NULL, NULL, "{}", NULL, "ab"};
  merkle_hash_t a, b;
  (void)state;
  assert_int_equal(audit_leaf_hash(f, a), 0);
  f[AUDIT_LEAF_REASON] = "";
  assert_int_equal(audit_leaf_hash(f, b), 0);
  assert_memory_not_equal(a, b, MERKLE_HASH_LEN);
  /* Moving a byte between fields changes the hash (lengths are encoded). */
  f[AUDIT_LEAF_REASON] = NULL;
  f[AUDIT_LEAF_ACTION] = "ac";
  f[AUDIT_LEAF_SUBJECT_TYPE] = "lue";
  assert_int_equal(audit_leaf_hash(f, b), 0);
  assert_memory_not_equal(a, b, MERKLE_HASH_LEN);
}

static void checkpoints_round_trip_and_refuse_any_change(void **state) {
  note_key_t k, pub, other;
  char text[320], vtext[256], *note = NULL;
  merkle_hash_t root;
  checkpoint_t cp;
  (void)state;
  make_leaves();
  memcpy(root, leaves[3], MERKLE_HASH_LEN);
  assert_int_equal(note_key_generate("example.org/log", &k), 0);
  assert_int_equal(note_key_generate("example.org/log", &other), 0);
  assert_int_equal(note_key_public_text(&k, vtext, sizeof(vtext)), 0);
  assert_int_equal(note_key_parse(vtext, &pub), 0);
  assert_false(pub.has_private);
  assert_int_equal(pub.id, k.id);
  assert_int_equal(note_key_private_text(&k, text, sizeof(text)), 0);
  assert_int_equal(strncmp(text, "PRIVATE+KEY+example.org/log+", 28), 0);
  {
    note_key_t back;
    assert_int_equal(note_key_parse(text, &back), 0);
    assert_true(back.has_private);
    assert_memory_equal(back.pub, k.pub, 32);
  }
  assert_int_equal(note_checkpoint_sign(&k, 12345, root, &note), 0);
  assert_int_equal(strncmp(note, "example.org/log\n12345\n", 22), 0);
  assert_non_null(strstr(note, "\n\n\xe2\x80\x94 example.org/log "));
  assert_int_equal(note_checkpoint_open(&pub, note, &cp), 0);
  assert_int_equal(cp.size, 12345);
  assert_memory_equal(cp.root, root, MERKLE_HASH_LEN);
  assert_int_equal(note_checkpoint_open(&other, note, &cp), NOTE_ESIGNATURE);
  /* Every single-byte change of the note is refused. */
  for (size_t i = 0; note[i]; i++) {
    char saved = note[i];
    note[i] = (char)(note[i] == 'A' ? 'B' : 'A');
    assert_int_not_equal(note_checkpoint_open(&pub, note, &cp), 0);
    note[i] = saved;
  }
  free(note);
  /* A size past NOTE_SIZE_MAX is no tree's, though signed. */
  assert_int_equal(note_checkpoint_sign(&k, NOTE_SIZE_MAX, root, &note), 0);
  assert_int_equal(note_checkpoint_open(&pub, note, &cp), 0);
  assert_true(cp.size == NOTE_SIZE_MAX);
  free(note);
  assert_int_equal(note_checkpoint_sign(&k, NOTE_SIZE_MAX + 1, root, &note), 0);
  assert_int_equal(note_checkpoint_open(&pub, note, &cp), NOTE_EFORMAT);
  free(note);
  assert_int_equal(note_checkpoint_sign(&k, UINT64_MAX, root, &note), 0);
  assert_int_equal(note_checkpoint_open(&pub, note, &cp), NOTE_EFORMAT);
  free(note);
}

/* note_signer() names the key of each signature line without verifying it, so that a
 * builder tells a replaced key from a forged note; a line it cannot read is no signer. */
static void signers_are_named_by_name_and_key_id(void **state) {
  note_key_t a, b;
  merkle_hash_t root;
  char *note = NULL, *two, name[NOTE_NAME_MAX + 1], label[NOTE_NAME_MAX + 16],
       want[NOTE_NAME_MAX + 16];
  const char *line;
  uint32_t id;

  (void)state;
  memset(root, 7, sizeof(root));
  assert_int_equal(note_key_generate("example.org/log", &a), 0);
  assert_int_equal(note_key_generate("example.org/log", &b), 0);
  assert_int_equal(note_checkpoint_sign(&a, 9, root, &note), 0);
  assert_int_equal(note_signer(note, 0, name, &id), 0);
  assert_string_equal(name, "example.org/log");
  assert_int_equal(id, a.id);
  assert_int_equal(note_signer(note, 1, name, &id), NOTE_EFORMAT);
  note_key_label(&a, label, sizeof(label));
  snprintf(want, sizeof(want), "example.org/log+%08x", a.id);
  assert_string_equal(label, want);
  {
    /* A second signature line, b's over the same body: both are named, in order. */
    char *nb = NULL;
    assert_int_equal(note_checkpoint_sign(&b, 9, root, &nb), 0);
    line = strstr(nb, "\n\n") + 2;
    two = malloc(strlen(note) + strlen(line) + 1);
    assert_non_null(two);
    strcpy(two, note);
    strcat(two, line);
    free(nb);
  }
  assert_int_equal(note_signer(two, 1, name, &id), 0);
  assert_int_equal(id, b.id);
  {
    checkpoint_t cp;
    assert_int_equal(note_checkpoint_open(&b, two, &cp), 0);
    assert_int_equal(note_checkpoint_open(&a, two, &cp), 0);
  }
  assert_int_equal(note_signer("no note", 0, name, &id), NOTE_EFORMAT);
  assert_int_equal(note_signer("a\n1\nAA==\n\nnot a signature line\n", 0, name, &id), NOTE_EFORMAT);
  free(two);
  free(note);
}

static void keys_refuse_garbage(void **state) {
  note_key_t k;
  const char *bad[] = {"", "name", "name+0000+AAAA", "na me+01234567+AQ==", "+01234567+AQ==",
                       "n+0123456g+AQ==", "PRIVATE+KEY+n+01234567+!!!!", "n+01234567+AQ="};
  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_not_equal(note_key_parse(bad[i], &k), 0);
  assert_int_equal(note_key_generate("has space", &k), NOTE_EFORMAT);
  assert_int_equal(note_key_generate("a+b", &k), NOTE_EFORMAT);
  assert_int_equal(note_key_generate("", &k), NOTE_EFORMAT);
  /* C2SP signed notes: well-formed UTF-8 without Unicode spaces; and no control characters. */
  {
    const char *names[] = {"bad\xff",     "over\xc0\xaflong", "cut\xe3\x80",
                           "nel\xc2\x85", "nbsp\xc2\xa0",     "ideographic\xe3\x80\x80space",
                           "c1\xc2\x9b",  "tab\tx",           "del\x7f"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
      if (note_key_generate(names[i], &k) != NOTE_EFORMAT)
        fail_msg("key name %zu accepted", i);
  }
  assert_int_equal(note_key_generate("审计.example/日志", &k), 0); /* other characters are fine */
  /* A verifier key whose id does not match its name and key. */
  assert_int_equal(note_key_generate("x", &k), 0);
  {
    char v[256];
    assert_int_equal(note_key_public_text(&k, v, sizeof(v)), 0);
    v[2] = v[2] == '0' ? '1' : '0';
    assert_int_equal(note_key_parse(v, &k), NOTE_EFORMAT);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(roots_agree_with_the_definition),
      cmocka_unit_test(every_inclusion_proof_verifies_and_no_altered_one),
      cmocka_unit_test(every_consistency_proof_verifies_and_no_altered_one),
      cmocka_unit_test(the_tree_can_be_cut_back_and_regrown),
      cmocka_unit_test(leaf_encoding_distinguishes_null_from_empty),
      cmocka_unit_test(checkpoints_round_trip_and_refuse_any_change),
      cmocka_unit_test(keys_refuse_garbage),
      cmocka_unit_test(signers_are_named_by_name_and_key_id),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
