/* cluectl audit checkpoint / verify --checkpoint / witness: the audit log's Merkle tree,
 * checked offline against signed checkpoints (docs/AUDIT.md). Everything the server sends
 * is checked here with this program's own hashing: the checkpoints' signatures, the
 * consistency proofs between them, every event's leaf, the roots, and the content hashes
 * the events record. */

#include "cmd_audit_tree.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit/merkle.h"
#include "audit/note.h"
#include "clue/v1/audit.pb-c.h"
#include "clue_rows.h"
#include "subject_rows.h"

#define AUDIT_SVC (&clue__v1__audit_service__descriptor)
#define EXPORT_PAGE 1000
#define EXPORT_PAGE_MAX 5000 /* the server's most */
/* The most events a tree may hold for cluectl to check it (2^32, docs/AUDIT.md): a
 * checkpoint, an export or a leaves file that claims more is refused, since its leaves
 * (40 bytes each) could not be held; a hostile server's size must not size an allocation. */
#define AUDIT_TREE_MAX (1ull << 32)

static int get_checkpoint(cli_t *cli, Clue__V1__Checkpoint **out) {
  Clue__V1__GetCheckpointRequest req = CLUE__V1__GET_CHECKPOINT_REQUEST__INIT;
  return cli_call(cli, AUDIT_SVC, "GetCheckpoint", &req.base, (ProtobufCMessage **)out);
}

/* The verifier keys trusted: each --key given. Across a key rotation (docs/AUDIT.md) they are
 * the replaced key and its successor, and a checkpoint of either is accepted: what ties the
 * two is the consistency proof between a checkpoint of the one and a later one of the other,
 * checked as between any two. */
#define KEYS_MAX 8

typedef struct keyset {
  size_t n;
  note_key_t k[KEYS_MAX];
} keyset_t;

/* The key of ks that signed note, filling *cp; NULL if none did. */
static const note_key_t *keys_open(const keyset_t *ks, const char *note, checkpoint_t *cp) {
  for (size_t i = 0; i < ks->n; i++)
    if (note_checkpoint_open(&ks->k[i], note, cp) == 0)
      return &ks->k[i];
  return NULL;
}

static int same_key(const note_key_t *a, const note_key_t *b) {
  return a->id == b->id && strcmp(a->name, b->name) == 0 && memcmp(a->pub, b->pub, 32) == 0;
}

/* "name+id or name+id ...": the keys checked with, for a message. */
static void keys_label(const keyset_t *ks, char *buf, size_t cap) {
  size_t at = 0;

  buf[0] = '\0';
  for (size_t i = 0; i < ks->n && at < cap; i++) {
    char one[NOTE_NAME_MAX + 16];
    note_key_label(&ks->k[i], one, sizeof(one));
    at += (size_t)snprintf(buf + at, cap - at, "%s%s", i ? " or " : "", one);
  }
}

/* Why none of ks opened note, for a message: which key it names instead, and what to do if
 * the server's key was replaced ("" when it names one of them: a signature that fails). */
static void keys_miss(const keyset_t *ks, const char *note, const char *hint, char *buf,
                      size_t cap) {
  char name[NOTE_NAME_MAX + 1];
  uint32_t id;

  buf[0] = '\0';
  if (note_signer(note, 0, name, &id) != 0)
    return;
  for (size_t i = 0; i < ks->n; i++)
    if (ks->k[i].id == id && strcmp(ks->k[i].name, name) == 0)
      return;
  snprintf(buf, cap, " (it is signed by key %s+%08x%s%s)", name, id, hint ? ": " : "",
           hint ? hint : "");
}

/* Read each --key FILE into ks (none: ks->n is 0). */
static int read_keys(cli_t *cli, const cli_args_t *args, keyset_t *ks) {
  char err[512];
  const char *path;

  ks->n = 0;
  for (size_t i = 0; (path = cli_arg_nth(args, "key", i)) != NULL; i++) {
    if (ks->n == KEYS_MAX)
      return cli_usage_error(cli, "at most %d --key", KEYS_MAX);
    if (note_key_read_file(path, &ks->k[ks->n], err, sizeof(err)) != 0)
      return cli_usage_error(cli, "%s", err);
    ks->n++;
  }
  return 0;
}

/* The verifier key the server names (reported as such). */
static int load_key(cli_t *cli, const Clue__V1__Checkpoint *latest, note_key_t *key) {
  if (latest == NULL || latest->verifier_key[0] == '\0' ||
      note_key_parse(latest->verifier_key, key) != 0) {
    fprintf(stderr, "cluectl %s: the server names no verifier key; pass --key FILE\n", cli->cmd);
    return CLI_FAILED;
  }
  fputs("note: checking signatures with the key the server names (", stderr);
  cli_put_text(stderr, latest->verifier_key, 0);
  fputs("); pass --key with the\n"
        "      key you were given to check against that instead\n",
        stderr);
  return 0;
}

/* ---- the leaves a checkpoint covers ---------------------------------------------------- *
 *
 * `audit checkpoint --out FILE` also keeps, in FILE.leaves, the seq and leaf hash of every
 * event the checkpoint covers, as the server gave them; they are trusted only once they hash
 * to the signed root. With them, `audit verify --checkpoint FILE` names the exact first event
 * where the log today differs from the one the checkpoint signed (a truncation or a fork),
 * where the root alone can only say "somewhere in the first N events". */

#define LEAVES_MAGIC "clued-audit-leaves-v1"

typedef struct leaves {
  uint64_t n;
  int64_t *seq;
  merkle_hash_t *leaf;
} leaves_t;

static void leaves_free(leaves_t *l) {
  free(l->seq);
  free(l->leaf);
  memset(l, 0, sizeof(*l));
}

static int leaves_alloc(leaves_t *l, uint64_t n) {
  l->n = n;
  if (n > AUDIT_TREE_MAX || n > SIZE_MAX / sizeof(*l->leaf))
    return -1;
  l->seq = calloc(n ? n : 1, sizeof(*l->seq));
  l->leaf = calloc(n ? n : 1, sizeof(*l->leaf));
  return l->seq && l->leaf ? 0 : -1;
}

/* Room in l for want leaves in all (want <= AUDIT_TREE_MAX), grown by doubling: what a
 * server's pages bring is held, never what its checkpoint claims. -1: out of memory. */
static int leaves_reserve(leaves_t *l, uint64_t *cap, uint64_t want) {
  uint64_t c = *cap ? *cap : 1024;
  int64_t *seq;
  merkle_hash_t *leaf;

  if (want <= *cap)
    return 0;
  while (c < want)
    c *= 2;
  if (c > SIZE_MAX / sizeof(*leaf))
    return -1;
  if ((seq = realloc(l->seq, (size_t)c * sizeof(*seq))) == NULL)
    return -1;
  l->seq = seq;
  if ((leaf = realloc(l->leaf, (size_t)c * sizeof(*leaf))) == NULL)
    return -1;
  l->leaf = leaf;
  *cap = c;
  return 0;
}

/* Do the leaves hash to root? */
static int leaves_match(const leaves_t *l, const merkle_hash_t root) {
  merkle_tree_t mt;
  merkle_hash_t r;
  int ok = 1;

  merkle_tree_init(&mt);
  for (uint64_t i = 0; ok && i < l->n; i++)
    ok = merkle_tree_append(&mt, l->leaf[i]) == 0;
  ok = ok && merkle_tree_root(&mt, l->n, r) == 0 && memcmp(r, root, MERKLE_HASH_LEN) == 0;
  merkle_tree_free(&mt);
  return ok;
}

/* Append to l the server's leaves from index l->n on, up to n of them in all (fewer if its
 * tree is shorter, or stops matching l's last seq): l->n is then how many l holds. A page
 * that brings no leaf ends it too, so that a server whose pages never end cannot keep it
 * asking. Returns 0, the RPC's error, or CLI_FAILED (reported) when n is more than
 * AUDIT_TREE_MAX or the leaves do not fit in memory. */
static int leaves_fetch(cli_t *cli, leaves_t *l, uint64_t n) {
  Clue__V1__ExportAuditEventsRequest req = CLUE__V1__EXPORT_AUDIT_EVENTS_REQUEST__INIT;
  uint64_t cap = l->n;
  int rc, stop = 0;

  if (n <= l->n)
    return 0;
  if (n > AUDIT_TREE_MAX) {
    fprintf(stderr,
            "cluectl %s: a checkpoint of %llu events is more than cluectl reads the leaves "
            "of (%llu)\n",
            cli->cmd, (unsigned long long)n, (unsigned long long)AUDIT_TREE_MAX);
    return CLI_FAILED;
  }
  req.page_size = EXPORT_PAGE;
  req.after_seq = l->n ? l->seq[l->n - 1] : 0;
  while (!stop && l->n < n) {
    Clue__V1__ExportAuditEventsResponse *r = NULL;
    uint64_t had = l->n;
    if ((rc = cli_call(cli, AUDIT_SVC, "ExportAuditEvents", &req.base, (ProtobufCMessage **)&r)) != 0)
      return rc;
    for (size_t i = 0; i < r->n_events && l->n < n; i++) {
      const Clue__V1__LeafEvent *e = r->events[i];
      if (e->leaf_index < 0 && e->seq > r->tree_last_seq) {
        /* Past the page's tree, which holds fewer than n leaves: its later leaves will be
         * these events, so stepping over them would misnumber the next page's. */
        stop = 1;
        break;
      }
      req.after_seq = e->seq;
      if (e->leaf_index < 0)
        continue; /* an event inserted where the tree has none */
      if ((uint64_t)e->leaf_index != l->n || e->leaf_hash.len != MERKLE_HASH_LEN) {
        stop = 1;
        break;
      }
      if (leaves_reserve(l, &cap, l->n + 1) != 0) {
        protobuf_c_message_free_unpacked(&r->base, NULL);
        return cli_oom(cli);
      }
      l->seq[l->n] = e->seq;
      memcpy(l->leaf[l->n], e->leaf_hash.data, MERKLE_HASH_LEN);
      l->n++;
    }
    stop |= r->done || r->n_events == 0 || l->n == had;
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  return 0;
}

/* The server's first n leaves, with their seqs. */
static int leaves_export(cli_t *cli, uint64_t n, leaves_t *out) {
  int rc;

  memset(out, 0, sizeof(*out));
  if ((rc = leaves_fetch(cli, out, n)) != 0)
    return rc;
  return out->n == n ? 0 : CLI_FAILED;
}

static int leaves_write(const char *path, const leaves_t *l) {
  FILE *f = fopen(path, "w");
  int bad;

  if (f == NULL)
    return -1;
  fprintf(f, "%s %llu\n", LEAVES_MAGIC, (unsigned long long)l->n);
  for (uint64_t i = 0; i < l->n; i++) {
    char hex[2 * MERKLE_HASH_LEN + 1];
    merkle_hex(l->leaf[i], MERKLE_HASH_LEN, hex);
    fprintf(f, "%lld %s\n", (long long)l->seq[i], hex);
  }
  bad = ferror(f);
  bad |= fclose(f) != 0;
  return bad ? -1 : 0;
}

static int hexbyte(const char *p, uint8_t *out) {
  unsigned v = 0;
  for (int k = 0; k < 2; k++) {
    char c = p[k];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (unsigned)(c - 'a' + 10);
    else
      return -1;
  }
  *out = (uint8_t)v;
  return 0;
}

/* The shortest line of a leaves file: "S HHHH...\n", a one-digit seq and a leaf's hex. */
#define LEAVES_LINE_MIN (1 + 1 + 2 * MERKLE_HASH_LEN + 1)

/* Read path into out; -1 when it is missing or not a leaves file. The count its first line
 * claims is held to what the file's size has room for before anything is allocated for it. */
static int leaves_read(const char *path, leaves_t *out) {
  FILE *f = fopen(path, "r");
  struct stat st;
  char line[256];
  unsigned long long n;
  int rc = -1;

  if (f == NULL)
    return -1;
  if (fstat(fileno(f), &st) != 0 || fgets(line, sizeof(line), f) == NULL ||
      sscanf(line, LEAVES_MAGIC " %llu", &n) != 1 || n > AUDIT_TREE_MAX ||
      n > (unsigned long long)st.st_size / LEAVES_LINE_MIN || leaves_alloc(out, n) != 0)
    goto out;
  for (uint64_t i = 0; i < n; i++) {
    long long seq;
    char hex[2 * MERKLE_HASH_LEN + 2];
    if (fgets(line, sizeof(line), f) == NULL || sscanf(line, "%lld %65s", &seq, hex) != 2 ||
        strlen(hex) != 2 * MERKLE_HASH_LEN)
      goto out;
    out->seq[i] = seq;
    for (int k = 0; k < MERKLE_HASH_LEN; k++)
      if (hexbyte(hex + 2 * k, &out->leaf[i][k]) != 0)
        goto out;
  }
  rc = 0;
out:
  fclose(f);
  if (rc != 0)
    leaves_free(out);
  return rc;
}

/* cp opened with the key the server names, into *c; -1 if that key does not open it. */
static int open_by_server_key(const Clue__V1__Checkpoint *cp, checkpoint_t *c) {
  note_key_t key;

  if (cp->verifier_key[0] == '\0' || note_key_parse(cp->verifier_key, &key) != 0 ||
      note_checkpoint_open(&key, cp->note, c) != 0)
    return -1;
  return 0;
}

/* The leaves of the server's checkpoint cp, read and checked against its signed root, into
 * *l. Returns CLI_OK, or CLI_FAILED (reported: why lpath will not hold them). */
static int checkpoint_leaves(cli_t *cli, const char *lpath, const Clue__V1__Checkpoint *cp,
                             leaves_t *l) {
  checkpoint_t c;

  if (open_by_server_key(cp, &c) != 0) {
    fprintf(stderr,
            "cluectl %s: the server names no key that signed this checkpoint; %s not made\n",
            cli->cmd, lpath);
    return CLI_FAILED;
  }
  if (leaves_export(cli, c.size, l) != 0) {
    fprintf(stderr,
            "cluectl %s: cannot read the checkpoint's %llu leaves from the server; %s not made\n",
            cli->cmd, (unsigned long long)c.size, lpath);
    return CLI_FAILED;
  }
  if (!leaves_match(l, c.root)) {
    fprintf(stderr,
            "cluectl %s: FAIL: the server's leaves do not hash to the root of its own signed "
            "checkpoint of %llu events (the log contradicts it: run audit verify); %s not made\n",
            cli->cmd, (unsigned long long)c.size, lpath);
    return CLI_FAILED;
  }
  return CLI_OK;
}

static int replace_file(cli_t *cli, const char *path, const char *text, const leaves_t *l);

/* Save the server's checkpoint cp in path, and its leaves in path.leaves. The leaves are read
 * and checked first; path.leaves is removed before path is replaced and written anew only
 * after it, so that whatever fails, no path.leaves ever sits beside a checkpoint it does not
 * belong to. Returns CLI_OK, or CLI_FAILED (reported) when either could not be kept. */
static int save_checkpoint(cli_t *cli, const char *path, const Clue__V1__Checkpoint *cp) {
  leaves_t l = {0};
  char lpath[4096];
  int rc, leaves_rc;

  if (snprintf(lpath, sizeof(lpath), "%s.leaves", path) >= (int)sizeof(lpath)) {
    fprintf(stderr, "cluectl %s: --out %s: path too long\n", cli->cmd, path);
    return CLI_FAILED;
  }
  leaves_rc = checkpoint_leaves(cli, lpath, cp, &l);
  if (unlink(lpath) != 0 && errno != ENOENT) {
    fprintf(stderr, "cluectl %s: cannot remove %s: %s; %s not replaced\n", cli->cmd, lpath,
            strerror(errno), path);
    leaves_free(&l);
    return CLI_FAILED;
  }
  if (replace_file(cli, path, cp->note, NULL) != 0) {
    fprintf(stderr, "cluectl %s: cannot write %s: %s\n", cli->cmd, path, strerror(errno));
    leaves_free(&l);
    return CLI_FAILED;
  }
  rc = leaves_rc;
  if (rc == CLI_OK && replace_file(cli, lpath, NULL, &l) != 0) {
    fprintf(stderr, "cluectl %s: cannot write %s: %s\n", cli->cmd, lpath, strerror(errno));
    rc = CLI_FAILED;
  }
  if (rc != CLI_OK)
    fprintf(stderr, "cluectl %s: %s holds the checkpoint of %lld events, without its leaves\n",
            cli->cmd, path, (long long)cp->tree_size);
  leaves_free(&l);
  return rc;
}

/* ---- checkpoint --out ------------------------------------------------------------------ */

/* Whether the server's note is text a signed note may be: UTF-8 without control characters
 * other than the line break (C2SP signed-note: "MUST be valid UTF-8 and MUST NOT contain any
 * ASCII control characters (those below U+0020) other than newline"). DEL and the C1
 * controls (U+0080..U+009F), which some terminals act on, are refused too: clued's notes
 * never hold them. Anything else is not shown, nor saved. */
static int note_text_ok(const char *note) {
  static const uint32_t least[4] = {0, 0xA0, 0x800, 0x10000}; /* below: overlong (or C1) */
  const unsigned char *s = (const unsigned char *)note;

  while (*s) {
    uint32_t cp;
    int extra;
    if (*s < 0x80) {
      if ((*s < 0x20 && *s != '\n') || *s == 0x7F)
        return 0;
      s++;
      continue;
    }
    if ((*s & 0xE0) == 0xC0)
      cp = *s & 0x1F, extra = 1;
    else if ((*s & 0xF0) == 0xE0)
      cp = *s & 0x0F, extra = 2;
    else if ((*s & 0xF8) == 0xF0)
      cp = *s & 0x07, extra = 3;
    else
      return 0;
    s++;
    for (int k = 0; k < extra; k++, s++) {
      if ((*s & 0xC0) != 0x80) /* the NUL at the end too */
        return 0;
      cp = cp << 6 | (*s & 0x3F);
    }
    if (cp < least[extra] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
      return 0;
  }
  return 1;
}

/* The server's checkpoint, if its note may be shown and saved; else reported, CLI_FAILED. */
static int checked_note(cli_t *cli, const Clue__V1__Checkpoint *cp) {
  if (note_text_ok(cp->note))
    return CLI_OK;
  fprintf(stderr,
          "cluectl %s: the server's checkpoint is not a signed note (it holds control "
          "characters or is not UTF-8); not shown, not saved\n",
          cli->cmd);
  return CLI_FAILED;
}

static int write_file(cli_t *cli, const char *path, const char *text) {
  FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
  int bad;

  if (f == NULL) {
    fprintf(stderr, "cluectl %s: cannot write %s: %s\n", cli->cmd, path, strerror(errno));
    return CLI_FAILED;
  }
  bad = fputs(text, f) < 0;
  if (f != stdout)
    bad |= fclose(f) != 0;
  else
    bad |= fflush(f) != 0;
  if (bad) {
    fprintf(stderr, "cluectl %s: cannot write %s\n", cli->cmd, path);
    return CLI_FAILED;
  }
  return CLI_OK;
}

int audit_tree_checkpoint(cli_t *cli, const cli_args_t *args) {
  Clue__V1__Checkpoint *cp = NULL;
  const char *out = cli_arg(args, "out");
  checkpoint_t c;
  int opened, rc;

  if ((rc = get_checkpoint(cli, &cp)) != 0)
    return rc;
  rc = checked_note(cli, cp);
  opened = rc == CLI_OK && open_by_server_key(cp, &c) == 0;
  if (opened && c.size > AUDIT_TREE_MAX) {
    fprintf(stderr,
            "cluectl %s: the server's checkpoint claims %llu events, more than cluectl checks "
            "(at most %llu); not shown, not saved\n",
            cli->cmd, (unsigned long long)c.size, (unsigned long long)AUDIT_TREE_MAX);
    rc = CLI_FAILED;
  } else if (opened && ((uint64_t)cp->tree_size != c.size || cp->root_hash.len != MERKLE_HASH_LEN ||
                        memcmp(cp->root_hash.data, c.root, MERKLE_HASH_LEN) != 0)) {
    /* The note is what was signed; the size and root beside it are the server's record of
     * it, which a changed row would tell apart from the note. */
    fprintf(stderr,
            "cluectl %s: the server's checkpoint says %lld events, its signed note %llu (or "
            "another root): its record was changed; not shown, not saved\n",
            cli->cmd, (long long)cp->tree_size, (unsigned long long)c.size);
    rc = CLI_FAILED;
  }
  if (rc == CLI_OK && out && strcmp(out, "-") == 0) {
    rc = write_file(cli, out, cp->note);
  } else if (rc == CLI_OK && out) {
    if ((rc = save_checkpoint(cli, out, cp)) != CLI_OK) {
      protobuf_c_message_free_unpacked(&cp->base, NULL);
      return rc;
    }
  }
  if (rc == CLI_OK && (out == NULL || strcmp(out, "-") != 0)) {
    if (cli->json)
      rc = cli_print_json(cli, &cp->base, 0);
    else /* without --out, stdout is the note alone: a redirect of it saves a checkpoint */
      fprintf(out ? stdout : stderr, "checkpoint of %lld event%s%s%s\n", (long long)cp->tree_size,
              cp->tree_size == 1 ? "" : "s", out ? " saved to " : "", out ? out : "");
    if (!cli->json && out == NULL)
      cli_put_text(stdout, cp->note, 1); /* ASCII lines as signed; nothing else shows raw */
  }
  protobuf_c_message_free_unpacked(&cp->base, NULL);
  return rc;
}

/* ---- verify --checkpoint ---------------------------------------------------------------- */

/* Write text to path through a file beside it renamed over path: a reader of path finds the
 * old text or the new, never a part. */
static int replace_file(cli_t *cli, const char *path, const char *text, const leaves_t *l) {
  char tmp[4096];
  int bad;

  if (snprintf(tmp, sizeof(tmp), "%s.new", path) >= (int)sizeof(tmp))
    return -1;
  bad = l != NULL ? leaves_write(tmp, l) != 0 : write_file(cli, tmp, text) != CLI_OK;
  if (bad || rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    errno = e;
    return -1;
  }
  return 0;
}

/* Keep the checkpoint just verified (note, covering mt's first n leaves, whose seqs are seqs)
 * in path and path.leaves, as `audit checkpoint --out` keeps one: the next verify holds the
 * log to it. path may be the saved checkpoint this verify read. */
static int keep_verified(cli_t *cli, const char *path, const char *note, const merkle_tree_t *mt,
                         const int64_t *seqs, uint64_t n) {
  leaves_t l = {0};
  char lpath[4096];
  int rc = CLI_OK;

  if (snprintf(lpath, sizeof(lpath), "%s.leaves", path) >= (int)sizeof(lpath)) {
    fprintf(stderr, "cluectl %s: --out %s: path too long\n", cli->cmd, path);
    return CLI_FAILED;
  }
  if (leaves_alloc(&l, n) != 0) {
    leaves_free(&l);
    return cli_oom(cli);
  }
  for (uint64_t i = 0; i < n; i++) {
    l.seq[i] = seqs[i];
    memcpy(l.leaf[i], merkle_tree_leaf(mt, i), MERKLE_HASH_LEN);
  }
  /* The leaves first: a verify that finds the old note beside the new leaves says so, and
   * one run again keeps both. */
  if (replace_file(cli, lpath, NULL, &l) != 0 || replace_file(cli, path, note, NULL) != 0) {
    fprintf(stderr, "cluectl %s: cannot keep the verified checkpoint in %s: %s\n", cli->cmd, path,
            strerror(errno));
    rc = CLI_FAILED;
  }
  leaves_free(&l);
  return rc;
}

/* The first problem found; later ones are not reported. */
typedef struct verdict {
  int failed;
  char what[1024];
} verdict_t;

__attribute__((format(printf, 2, 3))) static void fail(verdict_t *v, const char *fmt, ...) {
  va_list ap;
  if (v->failed)
    return;
  v->failed = 1;
  va_start(ap, fmt);
  vsnprintf(v->what, sizeof(v->what), fmt, ap);
  va_end(ap);
}

const char *audit_json_raw(const char *json, const char *key, size_t *len) {
  char pat[80];
  const char *p;
  size_t n = 0;

  snprintf(pat, sizeof(pat), "\"%s\": ", key);
  p = strstr(json, pat);
  if (p == NULL)
    return NULL;
  p += strlen(pat);
  if (*p == '"') {
    for (n = 1; p[n] && p[n] != '"'; n++)
      if (p[n] == '\\' && p[n + 1] != '\0')
        n++;
    if (p[n] == '"')
      n++;
  } else if (*p == '[' || *p == '{') {
    /* To the bracket that closes it, past those in its strings. */
    int depth = 0, in_string = 0;
    for (; p[n]; n++) {
      if (in_string) {
        if (p[n] == '\\' && p[n + 1] != '\0')
          n++;
        else if (p[n] == '"')
          in_string = 0;
      } else if (p[n] == '"') {
        in_string = 1;
      } else if (p[n] == '[' || p[n] == '{') {
        depth++;
      } else if ((p[n] == ']' || p[n] == '}') && --depth == 0) {
        n++;
        break;
      }
    }
  } else {
    while (p[n] && p[n] != ',' && p[n] != '}')
      n++;
  }
  *len = n;
  return p;
}

int audit_json_member(const char *json, const char *key, char *out, size_t cap) {
  size_t n;
  const char *p = audit_json_raw(json, key, &n);

  if (p == NULL)
    return -1;
  if (n >= 2 && *p == '"') {
    p++;
    n -= 2;
  }
  if (n > cap - 1)
    n = cap - 1;
  memcpy(out, p, n);
  out[n] = '\0';
  return 0;
}

static void leaf_of(const Clue__V1__LeafEvent *e, merkle_hash_t out, int *oom) {
  char seq[24], at[24];
  const char *f[AUDIT_LEAF_NFIELDS];

  snprintf(seq, sizeof(seq), "%lld", (long long)e->seq);
  snprintf(at, sizeof(at), "%lld", (long long)e->at_us);
  f[AUDIT_LEAF_SEQ] = seq;
  f[AUDIT_LEAF_AT_US] = at;
  f[AUDIT_LEAF_ACTOR_USER] = e->actor_user_id;
  f[AUDIT_LEAF_ACTOR_UNIT] = e->actor_unit_id;
  f[AUDIT_LEAF_ACTION] = e->action;
  f[AUDIT_LEAF_SUBJECT_TYPE] = e->subject_type;
  f[AUDIT_LEAF_SUBJECT_ID] = e->subject_id;
  f[AUDIT_LEAF_OWNER_UNIT] = e->owner_unit;
  f[AUDIT_LEAF_FROM_STATE] = e->from_state;
  f[AUDIT_LEAF_TO_STATE] = e->to_state;
  f[AUDIT_LEAF_REASON] = e->reason;
  f[AUDIT_LEAF_DETAILS] = e->details;
  f[AUDIT_LEAF_PREV_HASH] = e->prev_hash;
  f[AUDIT_LEAF_HASH] = e->hash;
  f[AUDIT_LEAF_TOKEN] = e->actor_token_id;
  for (int i = AUDIT_LEAF_ACTOR_USER; i < AUDIT_LEAF_NFIELDS; i++)
    if (e->nulls & (1u << i))
      f[i] = NULL;
  if (audit_leaf_hash(f, out) != 0)
    *oom = 1;
}

/* The content an event records a hash of, against the current rows. */
/* Whether the current row's fact key (in e->current_facts) is what the event logged: the
 * member logged_key of its details, or, when logged_key is NULL, the text logged. A fact or
 * a logged value that is absent (a server or an event from before) is not judged. */
static int fact_matches(const Clue__V1__LeafEvent *e, const char *key, const char *logged_key,
                        const char *logged) {
  char now[80], then[80];

  if (audit_json_member(e->current_facts, key, now, sizeof(now)) != 0)
    return 1;
  if (logged_key) {
    if (audit_json_member(e->details, logged_key, then, sizeof(then)) != 0)
      return 1;
    logged = then;
  }
  return strcmp(now, logged) == 0;
}

/* The current rows against the facts the event logged in its own fields. */
static void check_facts(const Clue__V1__LeafEvent *e, verdict_t *v) {
  char id[32], logged[8];

  if (e->current_facts[0] == '\0')
    return;
  if (strcmp(e->action, "note.add") == 0) {
    if (audit_json_member(e->details, "note_id", id, sizeof(id)) != 0)
      id[0] = '\0';
    if (!fact_matches(e, "clue_id", NULL, e->subject_id))
      fail(v, "seq %lld (%s #%s): note %s was moved to another clue", (long long)e->seq,
           e->subject_type, e->subject_id, id);
    else if (!fact_matches(e, "kind", "kind", NULL))
      fail(v, "seq %lld (%s #%s): the kind of note %s was changed", (long long)e->seq,
           e->subject_type, e->subject_id, id);
    else if (!fact_matches(e, "author_user", NULL, e->actor_user_id) ||
             !fact_matches(e, "author_unit", NULL, e->actor_unit_id))
      fail(v, "seq %lld (%s #%s): note %s names another author than the one logged",
           (long long)e->seq, e->subject_type, e->subject_id, id);
    else if (!fact_matches(e, "created_ms", "created_ms", NULL))
      fail(v, "seq %lld (%s #%s): the time of note %s was changed: it is not the one logged",
           (long long)e->seq, e->subject_type, e->subject_id, id);
  }
  if (strcmp(e->action, "clue.submit") == 0) {
    if (audit_json_member(e->details, "has_reporter", logged, sizeof(logged)) != 0)
      logged[0] = '\0';
    if (!fact_matches(e, "registration_number", "registration_number", NULL))
      fail(v, "seq %lld (%s #%s): the clue's registration number was changed", (long long)e->seq,
           e->subject_type, e->subject_id);
    else if (!fact_matches(e, "created_by", NULL, e->actor_user_id))
      fail(v, "seq %lld (%s #%s): the clue names another submitter than the one logged",
           (long long)e->seq, e->subject_type, e->subject_id);
    else if (logged[0] && (!fact_matches(e, "has_reporter", NULL, logged) ||
                           !fact_matches(e, "reporter_row", NULL, logged)))
      fail(v, "seq %lld (%s #%s): %s", (long long)e->seq, e->subject_type, e->subject_id,
           strcmp(logged, "true") == 0 ? "the clue's reporter was removed or hidden"
                                       : "the clue was logged without a reporter, and has one now");
  }
}

static void check_content(const Clue__V1__LeafEvent *e, verdict_t *v) {
  char want[80], id[32];

  if (e->redacted || e->details[0] == '\0')
    return;
  check_facts(e, v);
  if (strcmp(e->action, "note.add") == 0 &&
      audit_json_member(e->details, "text_sha256", want, sizeof(want)) == 0) {
    if (audit_json_member(e->details, "note_id", id, sizeof(id)) != 0)
      id[0] = '\0';
    if (e->current_sha256[0] == '\0')
      fail(v, "seq %lld (%s #%s): note %s is gone", (long long)e->seq, e->subject_type,
           e->subject_id, id);
    else if (strcmp(want, e->current_sha256) != 0)
      fail(v, "seq %lld (%s #%s): the text of note %s was changed: its SHA-256 is not the one "
              "logged",
           (long long)e->seq, e->subject_type, e->subject_id, id);
  }
  if (strcmp(e->action, "clue.submit") == 0) {
    if (audit_json_member(e->details, "content_sha256", want, sizeof(want)) == 0 &&
        strcmp(want, e->current_sha256) != 0)
      fail(v, "seq %lld (%s #%s): %s", (long long)e->seq, e->subject_type, e->subject_id,
           e->current_sha256[0] ? "the clue's submitted fields (title, summary, subject, ...) "
                                  "were changed: their SHA-256 is not the one logged"
                                : "the clue's row is gone");
    if (audit_json_member(e->details, "reporter_sha256", want, sizeof(want)) == 0 &&
        strcmp(want, e->current_reporter_sha256) != 0)
      fail(v, "seq %lld (%s #%s): %s", (long long)e->seq, e->subject_type, e->subject_id,
           e->current_reporter_sha256[0] ? "the reporter's contact details were changed: their "
                                           "SHA-256 is not the one logged"
                                         : "the reporter's contact details are gone");
  }
}

static void hash_text(const uint8_t *h, char *out) {
  merkle_hex(h, 8, out); /* the first 8 bytes are enough to tell roots apart */
}

/* What one walk replays of the rows the events describe. */
typedef struct replays {
  clue_rows_t clues;
  subject_rows_t subjects; /* rectification items, users, units, joint cases */
} replays_t;

/* One event against its chain: applied to the replay, then its subject's row (when the export
 * gives it with this event) against what the chain says, and a proposal event's proposal, a
 * clue.recuse's recusal, a token event's token or the handler, case_clues row or participants
 * an event wrote against what the event says. A row told apart from its events is told only
 * when nothing in the log is wrong: an event removed leaves its subject's row ahead of the
 * events that remain. */
static void check_row(replays_t *rp, const Clue__V1__LeafEvent *e, verdict_t *rows, int *oom) {
  char why[512];

  if (clue_rows_apply(&rp->clues, e) != 0 || subject_rows_apply(&rp->subjects, e) != 0)
    *oom = 1;
  else if (clue_rows_check(&rp->clues, e, why, sizeof(why)) ||
           clue_rows_check_proposal(e, why, sizeof(why)) ||
           subject_rows_check(&rp->subjects, e, why, sizeof(why)) ||
           subject_rows_check_recusal(e, why, sizeof(why)) ||
           subject_rows_check_token(e, why, sizeof(why)) ||
           subject_rows_check_access(e, why, sizeof(why)))
    fail(rows, "seq %lld (%s #%s, %s): %s", (long long)e->seq, e->subject_type, e->subject_id,
         e->action, why);
}

/* A row no event explains (ExportAuditEventsResponse.unexplained_rows). */
static void fail_unexplained(verdict_t *rows, const Clue__V1__UnexplainedRow *u) {
  long long s = (long long)u->subject_id, m = (long long)u->member_id;

  if (strcmp(u->kind, "handler") == 0)
    fail(rows,
         "clue %lld: user %lld is its handler, but no clue.assign event since the "
         "assignment last ended says so: the row was inserted",
         s, m);
  else if (strcmp(u->kind, "handler_removed") == 0)
    fail(rows,
         "clue %lld: user %lld is not its handler, though a clue.assign event made it one and "
         "no event ended that: the row was deleted",
         s, m);
  else if (strcmp(u->kind, "recusal") == 0)
    fail(rows,
         "clue %lld: user %lld is recused from it, but no clue.recuse event logged it: the "
         "row was inserted",
         s, m);
  else if (strcmp(u->kind, "recusal_removed") == 0)
    fail(rows,
         "clue %lld: the recusal of user %lld, which a clue.recuse event logged, is gone: "
         "the row was deleted",
         s, m);
  else if (strcmp(u->kind, "participant") == 0)
    fail(rows,
         "joint case %lld: unit %lld takes part in it, but no event since its last removal "
         "added it: the row was inserted",
         s, m);
  else if (strcmp(u->kind, "participant_removed") == 0)
    fail(rows,
         "joint case %lld: unit %lld does not take part in it, though an event added it and "
         "no event removed it: the row was deleted",
         s, m);
  else if (strcmp(u->kind, "proposal") == 0)
    fail(rows,
         "clue %lld: proposal %lld exists, but no proposal.create event of the clue logged it: "
         "the row was inserted",
         s, m);
  else if (strcmp(u->kind, "case_clue") == 0)
    fail(rows,
         "joint case %lld: clue %lld is listed in it, but the clue's row, which its events are "
         "checked against, does not name the case: the row was inserted",
         s, m);
  else if (strcmp(u->kind, "case_clue_removed") == 0)
    fail(rows,
         "joint case %lld: clue %lld is not listed in it, though the clue's row names the case: "
         "the row was deleted",
         s, m);
  else if (strcmp(u->kind, "rect_item") == 0)
    fail(rows,
         "rectification item %lld exists, but no rect.create event logged it: the row was "
         "inserted",
         s);
  else if (strcmp(u->kind, "user") == 0)
    fail(rows, "user %lld exists, but no user.create event logged it: the row was inserted", s);
  else if (strcmp(u->kind, "unit") == 0)
    fail(rows, "unit %lld exists, but no unit.create event logged it: the row was inserted", s);
  else if (strcmp(u->kind, "token") == 0)
    fail(rows,
         "user %lld: token %lld exists, but no token.issue event of the user logged it: the row "
         "was inserted",
         s, m);
  else if (strcmp(u->kind, "case_lead") == 0)
    fail(rows,
         "joint case %lld: its lead unit is %lld, which its case.create event does not "
         "say: the row was changed",
         s, m);
  else if (strcmp(u->kind, "counter") == 0)
    fail(rows,
         "unit %lld: its registration counter of %lld does not stand at the highest number its "
         "clues of that year hold: the row was changed",
         s, m);
  else
    fail(rows, "%s %lld: a row of %lld that no event explains", u->kind, s, m);
}

/* Walk the export, rebuilding the tree from the events.
 *
 * The walk verifies the tree as the first page found it: the events up to its last leaf
 * (that page's tree_last_seq). The tree only grows, so every later page's tree holds those
 * leaves too and numbers them alike. An event after that seq was not logged yet when the walk
 * began: it is left to the next verify, with every event after it, even those that later
 * pages give leaves (a log written faster than the walk reads would never let it end). The
 * walk then asks straight for the last page (after the greatest seq there can be), for its
 * rows that no event explains. */
static int walk_pages(cli_t *cli, int32_t page, merkle_tree_t *mt, verdict_t *v, verdict_t *rows,
                      replays_t *rp, int64_t *last_seq, int64_t *events, int64_t *beyond,
                      int64_t **seqs, uint64_t *seqs_cap) {
  Clue__V1__ExportAuditEventsRequest req = CLUE__V1__EXPORT_AUDIT_EVENTS_REQUEST__INIT;
  int rc = 0, oom = 0, past_end = 0, first = 1, last_asked = 0;
  int64_t end = -1;      /* the seq of the tree's last leaf when the walk began */
  uint64_t end_size = 0; /* and its leaves */

  req.page_size = page;
  for (;;) {
    Clue__V1__ExportAuditEventsResponse *r = NULL;
    int done;
    if ((rc = cli_call(cli, AUDIT_SVC, "ExportAuditEvents", &req.base, (ProtobufCMessage **)&r)) != 0)
      return rc;
    if (first) {
      first = 0;
      end = r->tree_last_seq;
      end_size = r->tree_size < 0 ? 0 : (uint64_t)r->tree_size;
      if (end_size > AUDIT_TREE_MAX)
        fail(v,
             "the server's export claims a tree of %llu events, more than cluectl checks (at "
             "most %llu)",
             (unsigned long long)end_size, (unsigned long long)AUDIT_TREE_MAX);
    }
    for (size_t i = 0; i < r->n_events && !past_end && !v->failed; i++) {
      const Clue__V1__LeafEvent *e = r->events[i];
      merkle_hash_t h;
      if (e->seq > end) {
        past_end = 1;
        *beyond = e->seq;
        break;
      }
      req.after_seq = e->seq;
      if ((e->missing || e->redacted || e->leaf_index < 0) &&
          (clue_rows_forget(&rp->clues, e) != 0 || subject_rows_forget(&rp->subjects, e) != 0))
        oom = 1;
      if (e->missing) {
        /* The verdict is FAIL whatever its leaf: the walk stops here, and the leaf the server
         * gives is not read. */
        fail(v, "seq %lld: the event is gone from the log, but the tree holds it as leaf %lld: "
                "it was deleted",
             (long long)e->seq, (long long)e->leaf_index);
        break;
      } else if (e->leaf_index < 0) {
        fail(v, "seq %lld (%s #%s): the event is not in the tree, which holds the events before "
                "and after it: it was inserted",
             (long long)e->seq, e->subject_type, e->subject_id);
        break;
      } else if ((uint64_t)e->leaf_index != mt->size || e->leaf_hash.len != MERKLE_HASH_LEN) {
        fail(v, "seq %lld: the server gave leaf %lld where leaf %llu was due", (long long)e->seq,
             (long long)e->leaf_index, (unsigned long long)mt->size);
        break;
      } else if (mt->size >= end_size) {
        /* Its seq is within the tree of end_size leaves that the first page named, whose last
         * leaf is seq end: no later leaf can be. */
        fail(v, "seq %lld: the server gave leaf %lld of a tree it said holds %llu",
             (long long)e->seq, (long long)e->leaf_index, (unsigned long long)end_size);
        break;
      } else if (!e->redacted) {
        (*events)++;
        leaf_of(e, h, &oom);
        if (!oom && memcmp(h, e->leaf_hash.data, MERKLE_HASH_LEN) != 0)
          fail(v, "seq %lld (%s #%s, %s): the event does not match its leaf in the tree: it was "
                  "changed after it was logged",
               (long long)e->seq, e->subject_type, e->subject_id, e->action);
        check_content(e, v);
        check_row(rp, e, rows, &oom);
      }
      if (e->leaf_index >= 0) {
        /* The tree is rebuilt from the recomputed leaves where they could be recomputed, so
         * a changed event also shows in the roots; the server's leaf stands for the rest. */
        const uint8_t *leaf = e->redacted ? e->leaf_hash.data : h;
        if (mt->size >= *seqs_cap) {
          uint64_t cap = *seqs_cap ? *seqs_cap * 2 : 1024;
          int64_t *p = realloc(*seqs, cap * sizeof(*p));
          if (p == NULL) {
            oom = 1;
            break;
          }
          *seqs = p;
          *seqs_cap = cap;
        }
        (*seqs)[mt->size] = e->seq;
        if (merkle_tree_append(mt, leaf) != 0)
          oom = 1;
        *last_seq = e->seq;
      }
    }
    done = r->done || r->n_events == 0;
    for (size_t i = 0; i < r->n_unlogged_note_ids; i++)
      fail(rows, "note %lld exists, but no note.add event logged it: it was inserted",
           (long long)r->unlogged_note_ids[i]);
    for (size_t i = 0; i < r->n_unlogged_clue_ids; i++)
      fail(rows, "clue %lld exists, but no clue.submit event logged it: it was inserted",
           (long long)r->unlogged_clue_ids[i]);
    for (size_t i = 0; i < r->n_unexplained_rows; i++)
      fail_unexplained(rows, r->unexplained_rows[i]);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (oom)
      return cli_oom(cli);
    /* Once the verdict is FAIL the rest would not change it: the walk ends there. */
    if (done || v->failed)
      return 0;
    if (last_asked) {
      /* Nothing follows the greatest seq: a server that still says there is would keep the
       * walk asking for ever. */
      fail(v, "the server's export pages never end: its page after the greatest seq is not its "
              "last");
      return 0;
    }
    if (past_end) {
      req.after_seq = INT64_MAX;
      last_asked = 1;
    }
  }
}

static int walk(cli_t *cli, int32_t page, merkle_tree_t *mt, verdict_t *v, verdict_t *rows,
                int64_t *last_seq, int64_t *events, int64_t *beyond, int64_t **seqs,
                uint64_t *seqs_cap) {
  replays_t rp;
  int rc;

  clue_rows_init(&rp.clues);
  subject_rows_init(&rp.subjects);
  rc = walk_pages(cli, page, mt, v, rows, &rp, last_seq, events, beyond, seqs, seqs_cap);
  clue_rows_free(&rp.clues);
  subject_rows_free(&rp.subjects);
  return rc;
}

/* The size a checkpoint note states (its second line), its signature not checked: what is
 * said of a saved checkpoint when no key is there to check it. -1: no size there. */
static int note_size_unchecked(const char *note, uint64_t *size) {
  const char *p = strchr(note, '\n');
  char *end;
  unsigned long long n;

  if (p == NULL || p[1] < '0' || p[1] > '9')
    return -1;
  errno = 0;
  n = strtoull(p + 1, &end, 10);
  if (errno != 0 || *end != '\n')
    return -1;
  *size = n;
  return 0;
}

/* s as a JSON string. */
static void json_string(FILE *o, const char *s) {
  fputc('"', o);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(o, "\\%c", c);
    else if (c == '\n')
      fputs("\\n", o);
    else if (c < 0x20)
      fprintf(o, "\\u%04x", c);
    else
      fputc(c, o);
  }
  fputc('"', o);
}

int audit_tree_verify(cli_t *cli, const cli_args_t *args) {
  const char *path = cli_arg(args, "checkpoint");
  const char *keep = cli_arg(args, "out");
  Clue__V1__Checkpoint *latest = NULL;
  Clue__V1__GetConsistencyProofRequest creq = CLUE__V1__GET_CONSISTENCY_PROOF_REQUEST__INIT;
  Clue__V1__ConsistencyProof *cons = NULL;
  Clue__V1__VerifyAuditChainRequest vreq = CLUE__V1__VERIFY_AUDIT_CHAIN_REQUEST__INIT;
  Clue__V1__VerifyAuditChainResponse *vresp = NULL;
  checkpoint_t cp1, cp2;
  keyset_t keys;
  const note_key_t *k1 = NULL, *k2 = NULL;
  char labels[512], miss[512];
  merkle_tree_t mt;
  merkle_hash_t root;
  verdict_t v = {0, ""};
  verdict_t rows = {0, ""}; /* rows no event explains: told when nothing in the log is wrong */
  char *text = NULL, *verdict = NULL, a[20], b[20];
  size_t len, verdict_len = 0;
  FILE *o;
  int64_t last_seq = 0, events = 0, *seqs = NULL;
  int64_t beyond = 0; /* the first event past the tree the walk found: not checked */
  uint64_t seqs_cap = 0;
  leaves_t saved = {0};
  char lpath[4096];
  int32_t page = EXPORT_PAGE;
  int rc;

  if ((rc = cli_arg_i32(cli, args, "page-size", 1, EXPORT_PAGE_MAX, &page)) != 0)
    return rc;
  if ((rc = read_keys(cli, args, &keys)) != 0)
    return rc;
  merkle_tree_init(&mt);
  if ((rc = cli_read_file(cli, path, &text, &len)) != 0)
    return rc;
  if ((rc = get_checkpoint(cli, &latest)) != 0) {
    if (cli->last_code != CLUE_STATUS_NOT_FOUND)
      goto out;
    /* No checkpoint at all, where the saved one was published: every one is gone. */
    rc = CLI_FAILED;
    if (keys.n == 0 && note_size_unchecked(text, &cp1.size) == 0) {
      fail(&v,
           "the log was truncated: the checkpoint covers %llu events, the server has no "
           "checkpoint (the saved one's signature not checked: the server names no key; "
           "pass --key FILE)",
           (unsigned long long)cp1.size);
    } else if (keys.n == 0 || (k1 = keys_open(&keys, text, &cp1)) == NULL) {
      keys_label(&keys, labels, sizeof(labels));
      keys_miss(&keys, text, NULL, miss, sizeof(miss));
      fail(&v, "checkpoint %s: not a checkpoint signed by %s%s; the server has no checkpoint", path,
           keys.n ? labels : "any key", miss);
    } else {
      fail(&v,
           "the log was truncated: the checkpoint covers %llu events, the server has no "
           "checkpoint",
           (unsigned long long)cp1.size);
    }
    goto report;
  }
  if (keys.n == 0 && (rc = load_key(cli, latest, &keys.k[keys.n++])) != 0)
    goto out;
  rc = CLI_FAILED;
  keys_label(&keys, labels, sizeof(labels));
  if ((k1 = keys_open(&keys, text, &cp1)) == NULL) {
    keys_miss(&keys, text, NULL, miss, sizeof(miss));
    fail(&v, "checkpoint %s: not a checkpoint signed by %s%s", path, labels, miss);
    goto report;
  }
  if ((k2 = keys_open(&keys, latest->note, &cp2)) == NULL) {
    keys_miss(&keys, latest->note,
              "if the server's key was replaced, pass --key with the key that signed the saved "
              "checkpoint and --key with the new one, as its operator gave it",
              miss, sizeof(miss));
    fail(&v, "the server's latest checkpoint (%lld events) is not signed by %s%s",
         (long long)latest->tree_size, labels, miss);
    goto report;
  }
  if (cp1.size > AUDIT_TREE_MAX || cp2.size > AUDIT_TREE_MAX) {
    fail(&v, "%s claims %llu events, more than cluectl checks (at most %llu)",
         cp1.size > AUDIT_TREE_MAX ? "the saved checkpoint" : "the server's latest checkpoint",
         (unsigned long long)(cp1.size > AUDIT_TREE_MAX ? cp1.size : cp2.size),
         (unsigned long long)AUDIT_TREE_MAX);
    goto report;
  }
  /* Every event, against its leaf; the tree rebuilt from them. A server without the key
   * may be a moment behind its own latest checkpoint: walk again, a few times. */
  for (int attempt = 0;; attempt++) {
    if ((rc = walk(cli, page, &mt, &v, &rows, &last_seq, &events, &beyond, &seqs, &seqs_cap)) != 0)
      goto out;
    if (v.failed || mt.size >= cp2.size || attempt == 5)
      break;
    merkle_tree_free(&mt);
    merkle_tree_init(&mt);
    last_seq = events = beyond = 0;
    nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
  }
  rc = CLI_FAILED;
  if (v.failed)
    goto report;
  /* The leaves kept with the checkpoint, if any: the exact first event that differs. */
  snprintf(lpath, sizeof(lpath), "%s.leaves", path);
  if (leaves_read(lpath, &saved) == 0) {
    if (saved.n != cp1.size || !leaves_match(&saved, cp1.root)) {
      fail(&v, "%s does not hold the leaves of the checkpoint in %s", lpath, path);
      goto report;
    }
    for (uint64_t i = 0; i < saved.n; i++) {
      if (i >= mt.size) {
        fail(&v, "the log was truncated: the checkpoint covers %llu events, the log has %llu; "
                 "seq %lld (leaf %llu) is the first event the checkpoint covers that was removed",
             (unsigned long long)cp1.size, (unsigned long long)mt.size, (long long)saved.seq[i],
             (unsigned long long)i);
        goto report;
      }
      if (memcmp(saved.leaf[i], merkle_tree_leaf(&mt, i), MERKLE_HASH_LEN) == 0)
        continue;
      if (saved.seq[i] < seqs[i])
        fail(&v, "fork: seq %lld (leaf %llu), signed by the checkpoint, is gone from the tree, "
                 "whose leaf %llu is now seq %lld: the log was rewritten from seq %lld on",
             (long long)saved.seq[i], (unsigned long long)i, (unsigned long long)i,
             (long long)seqs[i], (long long)saved.seq[i]);
      else if (saved.seq[i] > seqs[i])
        fail(&v, "fork: seq %lld is leaf %llu of the tree now, where the checkpoint signed seq "
                 "%lld: seq %lld was inserted into the signed log",
             (long long)seqs[i], (unsigned long long)i, (long long)saved.seq[i], (long long)seqs[i]);
      else
        fail(&v, "fork: seq %lld (leaf %llu) is not the event the checkpoint signed: it was "
                 "rewritten together with its leaf",
             (long long)saved.seq[i], (unsigned long long)i);
      goto report;
    }
  }
  if (cp2.size < cp1.size) {
    fail(&v, "the log was truncated: the checkpoint covers %llu events, the server's latest "
             "only %llu; the tree ends at seq %lld, its event %llu: the events after it were "
             "removed",
         (unsigned long long)cp1.size, (unsigned long long)cp2.size, (long long)last_seq,
         (unsigned long long)mt.size);
    goto report;
  }
  if (mt.size < cp1.size) {
    fail(&v, "the log was truncated: the checkpoint covers %llu events, the log has %llu; the "
             "events after seq %lld were removed",
         (unsigned long long)cp1.size, (unsigned long long)mt.size, (long long)last_seq);
    goto report;
  }
  if (cp2.size == cp1.size && memcmp(cp1.root, cp2.root, MERKLE_HASH_LEN) != 0) {
    hash_text(cp1.root, a);
    hash_text(cp2.root, b);
    fail(&v, "fork: two checkpoints of %llu events with different roots (%s..., saved; %s..., "
             "the server's): the log was rewritten within its first %llu events",
         (unsigned long long)cp1.size, a, b, (unsigned long long)cp1.size);
    goto report;
  }
  /* The server's proof that its latest tree extends the saved one. */
  if (cp2.size > cp1.size) {
    creq.old_size = (int64_t)cp1.size;
    creq.new_size = (int64_t)cp2.size;
    if ((rc = cli_call(cli, AUDIT_SVC, "GetConsistencyProof", &creq.base,
                       (ProtobufCMessage **)&cons)) != 0)
      goto out;
    rc = CLI_FAILED;
    {
      merkle_hash_t proof[MERKLE_MAX_PROOF];
      size_t n = cons->n_hashes > MERKLE_MAX_PROOF ? MERKLE_MAX_PROOF : cons->n_hashes;
      int bad = cons->n_hashes > MERKLE_MAX_PROOF;
      for (size_t i = 0; i < n; i++) {
        if (cons->hashes[i].len != MERKLE_HASH_LEN)
          bad = 1;
        else
          memcpy(proof[i], cons->hashes[i].data, MERKLE_HASH_LEN);
      }
      if (bad || merkle_verify_consistency(cp1.size, cp2.size, cp1.root, cp2.root, proof, n) != 0) {
        /* The proof comes from the tree the server holds now: the saved root, the server's
         * signed one, or both, are not that tree's. */
        fail(&v,
             "fork: the server's checkpoint of %llu events does not extend the saved one of "
             "%llu by the tree it holds now: the log was rewritten within its first %llu "
             "events",
             (unsigned long long)cp2.size, (unsigned long long)cp1.size,
             (unsigned long long)cp2.size);
        goto report;
      }
    }
  }
  /* The events themselves must hash to both signed roots. */
  if (merkle_tree_root(&mt, cp1.size, root) != 0 || memcmp(root, cp1.root, MERKLE_HASH_LEN) != 0) {
    fail(&v, "the log's first %llu events do not hash to the saved checkpoint's root: the log "
             "was rewritten within them",
         (unsigned long long)cp1.size);
    goto report;
  }
  if (mt.size < cp2.size || merkle_tree_root(&mt, cp2.size, root) != 0 ||
      memcmp(root, cp2.root, MERKLE_HASH_LEN) != 0) {
    fail(&v, "the log's first %llu events do not hash to the server's latest checkpoint",
         (unsigned long long)cp2.size);
    goto report;
  }
  /* The per-subject chains, recomputed by the server. */
  if ((rc = cli_call(cli, AUDIT_SVC, "VerifyAuditChain", &vreq.base, (ProtobufCMessage **)&vresp)) != 0)
    goto out;
  rc = CLI_FAILED;
  if (!vresp->ok && vresp->broken) {
    fail(&v, "seq %lld (%s #%lld): broken chain: %s", (long long)vresp->broken->seq,
         vresp->broken->subject_type, (long long)vresp->broken->subject_id, vresp->broken->detail);
    goto report;
  }
  if (!vresp->ok || vresp->tree_problem[0]) {
    fail(&v, "the server reports: %s", vresp->tree_problem[0] ? vresp->tree_problem : "broken chain");
    goto report;
  }
report:
  if (!v.failed && rows.failed)
    v = rows; /* (a log truncated or rewritten leaves rows without their events too) */
  /* Verified: keep the server's checkpoint before saying so, so that the OK line is true. */
  if (!v.failed && keep != NULL &&
      (rc = keep_verified(cli, keep, latest->note, &mt, seqs, cp2.size)) != 0)
    goto out;
  /* The verdict's one line, on stdout, or with --json as {"ok": ..., "message": ...}. */
  if ((o = cli->json ? open_memstream(&verdict, &verdict_len) : stdout) == NULL) {
    fprintf(stderr, "cluectl: out of memory\n");
    rc = CLI_FAILED;
    goto out;
  }
  if (v.failed) {
    fputs("FAIL: ", o);
    cli_put_text(o, v.what, 0);
    rc = CLI_FAILED;
  } else {
    fprintf(o, "OK: checkpoint of %llu events verified (signed by ", (unsigned long long)cp1.size);
    if (same_key(k1, k2)) {
      cli_put_text(o, k1->name, 0); /* the server's, without --key */
    } else {
      /* A key rotation crossed: the server's latest checkpoint, signed by the new key,
       * extends the saved one, signed by the old. */
      char l1[NOTE_NAME_MAX + 16], l2[NOTE_NAME_MAX + 16];
      note_key_label(k1, l1, sizeof(l1));
      note_key_label(k2, l2, sizeof(l2));
      cli_put_text(o, l1, 0);
      fputs("; the server's latest checkpoint by ", o);
      cli_put_text(o, l2, 0);
    }
    fprintf(o,
            "); the tree has %llu, an extension of it; %lld events rehashed, chains and content "
            "hashes hold",
            (unsigned long long)mt.size, (long long)events);
    if (beyond != 0)
      fprintf(o,
              "; seq %lld and the events after it are not in the tree yet (its builder is behind "
              "or stopped): they, and the rows whose latest event is among them, were not "
              "checked",
              (long long)beyond);
    if (keep != NULL) {
      fprintf(o, "; the server's checkpoint of %llu events kept in ", (unsigned long long)cp2.size);
      cli_put_text(o, keep, 0);
    } else if (cp2.size > cp1.size) {
      fprintf(o,
              "; the server's checkpoint of %llu events was not kept (--out FILE keeps it): "
              "the events after the first %llu are held to it only once it is kept",
              (unsigned long long)cp2.size, (unsigned long long)cp1.size);
    }
    rc = CLI_OK;
  }
  if (o == stdout) {
    putchar('\n');
  } else {
    fclose(o);
    printf("{\"ok\":%s,\"message\":", rc == CLI_OK ? "true" : "false");
    json_string(stdout, verdict);
    puts("}");
  }
out:
  if (latest)
    protobuf_c_message_free_unpacked(&latest->base, NULL);
  if (cons)
    protobuf_c_message_free_unpacked(&cons->base, NULL);
  if (vresp)
    protobuf_c_message_free_unpacked(&vresp->base, NULL);
  merkle_tree_free(&mt);
  leaves_free(&saved);
  free(seqs);
  free(text);
  free(verdict);
  return rc;
}

/* ---- witness ---------------------------------------------------------------------------- */

static char *read_text(const char *path) {
  FILE *f = fopen(path, "r");
  char *buf = NULL;
  size_t n = 0;
  if (f == NULL)
    return NULL;
  if (getdelim(&buf, &n, '\0', f) < 0) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  return buf;
}

/* Where the server's tree today first differs from the leaves kept ("" if it does not within
 * them): what a witness adds to a fork or a shrink. */
static void first_difference(cli_t *cli, const leaves_t *kept, char *buf, size_t cap) {
  leaves_t cur = {0};

  buf[0] = '\0';
  if (leaves_fetch(cli, &cur, kept->n) != 0) {
    leaves_free(&cur);
    return;
  }
  for (uint64_t i = 0; i < kept->n; i++) {
    if (i >= cur.n) {
      snprintf(buf, cap, "; seq %lld (leaf %llu), kept, is the first event gone from the tree",
               (long long)kept->seq[i], (unsigned long long)i);
      break;
    }
    if (memcmp(kept->leaf[i], cur.leaf[i], MERKLE_HASH_LEN) == 0)
      continue;
    if (kept->seq[i] != cur.seq[i])
      snprintf(buf, cap, "; seq %lld (leaf %llu), kept, is gone from the tree, whose leaf %llu is "
                         "now seq %lld",
               (long long)kept->seq[i], (unsigned long long)i, (unsigned long long)i,
               (long long)cur.seq[i]);
    else
      snprintf(buf, cap, "; seq %lld (leaf %llu) is not the event kept: it was rewritten",
               (long long)kept->seq[i], (unsigned long long)i);
    break;
  }
  leaves_free(&cur);
}

/* Keep the leaves of the checkpoint just kept in DIR/leaves, extending those of the last one
 * (the consistency proof passed, so they are its first leaves). Best effort: without them a
 * later fork is reported without its first event. */
static void witness_keep_leaves(cli_t *cli, const char *dir, leaves_t *kept, const checkpoint_t *now) {
  char path[4096];

  snprintf(path, sizeof(path), "%s/leaves", dir);
  if (leaves_fetch(cli, kept, now->size) == 0 && kept->n == now->size && leaves_match(kept, now->root)) {
    if (leaves_write(path, kept) == 0)
      return;
  }
  fprintf(stderr, "note: the leaves of the checkpoint of %llu events are not kept\n",
          (unsigned long long)now->size);
  unlink(path);
}

/* What one poll of the witness saw. */
typedef struct witness_seen {
  FILE *o;            /* its lines for people */
  const char *result; /* "kept", "unchanged", "fail" (a bad checkpoint); NULL: a failure
                       * reported on stderr (a call, a file) */
  uint64_t size;      /* events of the server's checkpoint; 0: not read */
  uint64_t last_size; /* events of the last one kept; 0: none */
  int none;           /* GetCheckpoint answered NOT_FOUND and none is kept: none is published
                       * yet */
} witness_seen_t;

/* The witness followed a key rotation: DIR/key.pub, if it is kept, becomes the key that
 * signed the checkpoint just kept, so that later runs without --key check with it. */
static void witness_follow_key(cli_t *cli, FILE *o, const char *dir, const note_key_t *knew,
                               const note_key_t *klast) {
  char path[4096], vkey[256], l1[NOTE_NAME_MAX + 16], l2[NOTE_NAME_MAX + 16], err[512];
  note_key_t kept;

  note_key_label(klast, l1, sizeof(l1));
  note_key_label(knew, l2, sizeof(l2));
  fprintf(o,
          "the server's key was replaced: the checkpoint kept is signed by %s, the one before it "
          "by %s\n",
          l2, l1);
  snprintf(path, sizeof(path), "%s/key.pub", dir);
  if (access(path, F_OK) != 0 ||
      (note_key_read_file(path, &kept, err, sizeof(err)) == 0 && same_key(&kept, knew)))
    return;
  if (note_key_public_text(knew, vkey, sizeof(vkey)) == 0 && strlen(vkey) + 2 <= sizeof(vkey)) {
    strcat(vkey, "\n");
    if (write_file(cli, path, vkey) == CLI_OK)
      fprintf(o, "%s now holds %s\n", path, l2);
  }
}

/* The checkpoint the witness kept at path (its text last_text) opens with none of keys
 * (labels: keys_label()): a FAIL naming the keys, with how to follow a replaced one. */
static void kept_unsigned(FILE *o, const char *path, const keyset_t *keys, const char *last_text,
                          const char *labels) {
  char miss[512];

  keys_miss(keys, last_text,
            "to follow a replaced key, pass --key for it as well as for the new one", miss,
            sizeof(miss));
  fprintf(o, "FAIL: %s is not a checkpoint signed by ", path);
  cli_put_text(o, labels, 0);
  cli_put_text(o, miss, 0);
  fputc('\n', o);
}

/* GetCheckpoint answered NOT_FOUND (its error rc): the server has no checkpoint at all. With
 * none kept in DIR/latest, none is published yet (ws->none: the witness polls on). With one
 * kept, the server has lost every checkpoint, the one kept among them (all of them deleted,
 * or its database restored from before its first): the log shrank to nothing, a FAIL. */
static int witness_none(cli_t *cli, const char *dir, const keyset_t *keys, witness_seen_t *ws,
                        int rc) {
  FILE *o = ws->o;
  char path[4096], *last_text, where[512] = "", labels[512];
  checkpoint_t last;
  leaves_t kept = {0};

  snprintf(path, sizeof(path), "%s/latest", dir);
  if ((last_text = read_text(path)) == NULL) {
    ws->none = 1;
    return rc;
  }
  ws->result = "fail";
  keys_label(keys, labels, sizeof(labels));
  if (keys->n == 0 && note_size_unchecked(last_text, &last.size) == 0) {
    /* Run without --key, and no DIR/key.pub: the server names none, it has no checkpoint. */
    ws->last_size = last.size;
    fprintf(o,
            "FAIL: the log shrank: the server has no checkpoint, the last one kept %llu events "
            "(its signature not checked: no key; pass --key FILE)\n",
            (unsigned long long)last.size);
    free(last_text);
    return CLI_FAILED;
  }
  if (keys_open(keys, last_text, &last) == NULL) {
    kept_unsigned(o, path, keys, last_text, labels);
    free(last_text);
    return CLI_FAILED;
  }
  ws->last_size = last.size;
  snprintf(path, sizeof(path), "%s/leaves", dir);
  if (leaves_read(path, &kept) == 0 && kept.n == last.size && leaves_match(&kept, last.root))
    first_difference(cli, &kept, where, sizeof(where));
  fprintf(o,
          "FAIL: the log shrank: the server has no checkpoint, the last one kept %llu events%s\n",
          (unsigned long long)last.size, where);
  leaves_free(&kept);
  free(last_text);
  return CLI_FAILED;
}

/* One poll: returns CLI_OK (kept or unchanged), CLI_FAILED (a bad checkpoint, in ws, or a
 * failure reported on stderr). What it saw goes to ws, its lines for people to ws->o. */
static int witness_poll(cli_t *cli, const char *dir, const keyset_t *keys, witness_seen_t *ws) {
  FILE *o = ws->o;
  Clue__V1__Checkpoint *cp = NULL;
  Clue__V1__GetConsistencyProofRequest creq = CLUE__V1__GET_CONSISTENCY_PROOF_REQUEST__INIT;
  Clue__V1__ConsistencyProof *cons = NULL;
  char path[4096], *last_text = NULL, where[512] = "", labels[512], miss[512];
  checkpoint_t now, last;
  const note_key_t *knew, *klast = NULL;
  leaves_t kept = {0};
  int rc;

  if ((rc = get_checkpoint(cli, &cp)) != 0) {
    if (cli->last_code == CLUE_STATUS_NOT_FOUND)
      return witness_none(cli, dir, keys, ws, rc);
    return rc;
  }
  rc = CLI_FAILED;
  ws->size = cp->tree_size > 0 ? (uint64_t)cp->tree_size : 0; /* as it claims, until checked */
  ws->result = "fail"; /* each FAIL below; a call or a write that fails says otherwise */
  keys_label(keys, labels, sizeof(labels));
  if ((knew = keys_open(keys, cp->note, &now)) == NULL) {
    keys_miss(keys, cp->note,
              "if the server's key was replaced, run the witness with --key for the key it "
              "checked with and --key for the new one, as the server's operator gave it",
              miss, sizeof(miss));
    fprintf(o, "FAIL: the server's checkpoint of %lld events is not signed by ",
            (long long)cp->tree_size);
    cli_put_text(o, labels, 0);
    cli_put_text(o, miss, 0);
    fputc('\n', o);
    goto out;
  }
  ws->size = now.size;
  if (now.size > AUDIT_TREE_MAX) {
    fprintf(o,
            "FAIL: the server's checkpoint claims %llu events, more than cluectl checks (at most "
            "%llu)\n",
            (unsigned long long)now.size, (unsigned long long)AUDIT_TREE_MAX);
    goto out;
  }
  snprintf(path, sizeof(path), "%s/latest", dir);
  last_text = read_text(path);
  if (last_text && (klast = keys_open(keys, last_text, &last)) == NULL) {
    kept_unsigned(o, path, keys, last_text, labels);
    goto out;
  }
  if (last_text)
    ws->last_size = last.size;
  /* The leaves kept with the last checkpoint, if they are its own. */
  snprintf(path, sizeof(path), "%s/leaves", dir);
  if (last_text && leaves_read(path, &kept) == 0 &&
      (kept.n != last.size || !leaves_match(&kept, last.root)))
    leaves_free(&kept);
  if (last_text && now.size < last.size) {
    first_difference(cli, &kept, where, sizeof(where));
    fprintf(o,
            "FAIL: the log shrank: the server's checkpoint has %llu events, the last one kept "
            "%llu%s\n",
            (unsigned long long)now.size, (unsigned long long)last.size, where);
    goto out;
  }
  if (last_text && now.size == last.size) {
    if (memcmp(now.root, last.root, MERKLE_HASH_LEN) != 0) {
      first_difference(cli, &kept, where, sizeof(where));
      fprintf(o, "FAIL: fork: two checkpoints of %llu events with different roots%s\n",
              (unsigned long long)now.size, where);
      goto out;
    }
    ws->result = "unchanged";
    rc = CLI_OK;
    goto out;
  }
  if (last_text) {
    merkle_hash_t proof[MERKLE_MAX_PROOF];
    size_t n;
    int bad = 0;
    creq.old_size = (int64_t)last.size;
    creq.new_size = (int64_t)now.size;
    if ((rc = cli_call(cli, AUDIT_SVC, "GetConsistencyProof", &creq.base,
                       (ProtobufCMessage **)&cons)) != 0) {
      ws->result = NULL;
      goto out;
    }
    rc = CLI_FAILED;
    n = cons->n_hashes;
    if (n > MERKLE_MAX_PROOF)
      bad = 1;
    for (size_t i = 0; !bad && i < n; i++) {
      if (cons->hashes[i].len != MERKLE_HASH_LEN)
        bad = 1;
      else
        memcpy(proof[i], cons->hashes[i].data, MERKLE_HASH_LEN);
    }
    if (bad || merkle_verify_consistency(last.size, now.size, last.root, now.root, proof, n) != 0) {
      first_difference(cli, &kept, where, sizeof(where));
      fprintf(o,
              "FAIL: fork: the checkpoint of %llu events does not extend the one of %llu kept%s\n",
              (unsigned long long)now.size, (unsigned long long)last.size, where);
      goto out;
    }
  }
  ws->result = NULL; /* from here on, a failure is reported on stderr */
  if (checked_note(cli, cp) != CLI_OK)
    goto out;
  snprintf(path, sizeof(path), "%s/checkpoint.%llu", dir, (unsigned long long)now.size);
  if (write_file(cli, path, cp->note) != CLI_OK)
    goto out;
  snprintf(path, sizeof(path), "%s/latest", dir);
  if (write_file(cli, path, cp->note) != CLI_OK)
    goto out;
  if (kept.n == 0 || last_text == NULL)
    leaves_free(&kept); /* none kept, or not the last checkpoint's: read them all */
  witness_keep_leaves(cli, dir, &kept, &now);
  fprintf(o, "kept checkpoint of %llu events%s\n", (unsigned long long)now.size,
          last_text ? ", consistent with the last one kept" : "");
  if (klast && !same_key(klast, knew))
    witness_follow_key(cli, o, dir, knew, klast);
  ws->result = "kept";
  rc = CLI_OK;
out:
  leaves_free(&kept);
  free(last_text);
  if (cons)
    protobuf_c_message_free_unpacked(&cons->base, NULL);
  protobuf_c_message_free_unpacked(&cp->base, NULL);
  return rc;
}

/* A poll that failed for a reason that passes (the server restarting or unreachable, its
 * database down, its tree not yet read that far, no checkpoint published yet: the caller
 * checks that GetCheckpoint's NOT_FOUND): the witness reports it and polls on. Only what the
 * checkpoints say (a bad signature, a fork, a shrink) and what cannot pass (no permission, a
 * bad key) end it. */
static int witness_transient(int code) {
  return code == CLUE_STATUS_UNAVAILABLE || code == CLUE_STATUS_DEADLINE_EXCEEDED ||
         code == CLUE_STATUS_OUT_OF_RANGE || code == CLUE_STATUS_RESOURCE_EXHAUSTED ||
         code == CLUE_STATUS_ABORTED || code == CLUE_STATUS_CANCELLED;
}

/* One poll, and what it saw on stdout: its lines, or with --json one JSON object on one line
 * ("result": kept, unchanged, fail or error; "tree_size", "last_size"; "status" of a failed
 * call; "message": the lines people read). */
static int witness_poll_shown(cli_t *cli, const char *dir, const keyset_t *keys, int *none,
                              int *failed) {
  witness_seen_t ws = {NULL, NULL, 0, 0, 0};
  char *text = NULL;
  size_t len = 0;
  int rc;

  if ((ws.o = open_memstream(&text, &len)) == NULL)
    return cli_oom(cli);
  rc = witness_poll(cli, dir, keys, &ws);
  *none = ws.none;
  *failed = rc != CLI_OK && ws.result != NULL && strcmp(ws.result, "fail") == 0;
  if (cli_memstream_text(ws.o, &text) == NULL)
    return cli_oom(cli);
  if (!cli->json) {
    fputs(text, stdout);
  } else {
    len = strlen(text);
    if (len > 0 && text[len - 1] == '\n')
      text[len - 1] = '\0';
    printf("{\"result\":\"%s\"", ws.result != NULL ? ws.result : "error");
    if (ws.size > 0)
      printf(",\"tree_size\":%llu", (unsigned long long)ws.size);
    if (ws.last_size > 0)
      printf(",\"last_size\":%llu", (unsigned long long)ws.last_size);
    if (ws.result == NULL && cli->last_code != 0)
      printf(",\"status\":\"%s\"", clue_status_name(cli->last_code));
    if (text[0] != '\0') {
      fputs(",\"message\":", stdout);
      json_string(stdout, text);
    }
    puts("}");
  }
  fflush(stdout);
  free(text);
  return rc;
}

/* Learn the server's key from its checkpoint and keep it in path (DIR/key.pub). *none: there
 * is no checkpoint yet (GetCheckpoint answered NOT_FOUND). */
static int witness_first_key(cli_t *cli, const char *path, keyset_t *keys, int *none) {
  Clue__V1__Checkpoint *cp = NULL;
  char vkey[256];
  int rc;

  if ((rc = get_checkpoint(cli, &cp)) != 0) {
    *none = cli->last_code == CLUE_STATUS_NOT_FOUND;
    return rc;
  }
  rc = load_key(cli, cp, &keys->k[0]);
  protobuf_c_message_free_unpacked(&cp->base, NULL);
  if (rc != 0)
    return rc;
  keys->n = 1;
  if (note_key_public_text(&keys->k[0], vkey, sizeof(vkey)) != 0)
    return cli_oom(cli);
  strcat(vkey, "\n");
  return write_file(cli, path, vkey);
}

/* Is a checkpoint kept in DIR/latest? */
static int witness_kept(const char *dir) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/latest", dir);
  return access(path, F_OK) == 0;
}

int audit_tree_witness(cli_t *cli, const cli_args_t *args) {
  const char *dir = cli_arg(args, "dir");
  int64_t interval = 10;
  keyset_t keys;
  char err[512], path[4096];
  int rc;

  if ((rc = cli_arg_int(cli, args, "interval", 1, 86400, &interval)) != 0)
    return rc;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST)
    return cli_usage_error(cli, "cannot create %s: %s", dir, strerror(errno));
  /* The keys: each --key, else the one kept in DIR/key.pub, else the server's on first use. */
  snprintf(path, sizeof(path), "%s/key.pub", dir);
  if ((rc = read_keys(cli, args, &keys)) != 0)
    return rc;
  if (keys.n == 0 && access(path, F_OK) == 0) {
    if (note_key_read_file(path, &keys.k[0], err, sizeof(err)) != 0)
      return cli_usage_error(cli, "%s", err);
    keys.n = 1;
  }
  for (;;) {
    int none = 0, failed = 0;
    cli->last_code = 0;
    /* Without a key, the server's on first use, from its first checkpoint. */
    rc = keys.n == 0 ? witness_first_key(cli, path, &keys, &none) : CLI_OK;
    /* No checkpoint to learn the key from, but one kept: that poll tells the shrink. */
    if (rc == CLI_OK || (none && witness_kept(dir)))
      rc = witness_poll_shown(cli, dir, &keys, &none, &failed);
    /* A FAIL (a fork, a shrink, a bad signature) ends it, whatever a call made to name the
     * first differing event answered: a server cannot make it look passing by failing that. */
    if (rc != CLI_OK && !failed && !cli_flag(args, "once") &&
        (none || witness_transient(cli->last_code)))
      fprintf(stderr, "cluectl %s: polling again in %lld s\n", cli->cmd, (long long)interval);
    else if (rc != CLI_OK || cli_flag(args, "once"))
      return rc;
    for (int64_t s = 0; s < interval * 10; s++) {
      struct timespec ts = {0, 100 * 1000 * 1000};
      if (*cli->interrupted)
        return CLI_OK;
      nanosleep(&ts, NULL);
    }
  }
}
