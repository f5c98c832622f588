#ifndef CLUED_NET_WEB_H
#define CLUED_NET_WEB_H

/* What gRPC-Web and the console's static files need that touches no socket: content types,
 * base64 (the -text encoding, decoded as a stream of padded chunks), the trailer frame,
 * CORS origins and header lists, and request paths made safe for the file system. */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define WEB_TRAILER_FLAG 0x80 /* first byte of a gRPC-Web frame holding the trailers */
#define WEB_MAX_PATH 2048     /* longest request path served as a file */
#define WEB_ETAG_LEN 48       /* room for an entity tag */

/* The Content-Security-Policy header of every console file: the policy of the <meta> in
 * console/src/index.html (tests/e2e/test_console.py checks they agree) and frame-ancestors,
 * which only a header can carry. */
#define WEB_CONSOLE_CSP                                                                            \
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "                  \
  "img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'none'; "                   \
  "frame-ancestors 'none'"

/** What a request's content-type asks for. */
typedef enum web_proto {
  WEB_PROTO_NONE, /* nothing served here (absent, +json, another type) */
  WEB_PROTO_GRPC, /* application/grpc[+proto] */
  WEB_PROTO_WEB,  /* application/grpc-web[+proto]: binary frames, trailers in the body */
  WEB_PROTO_TEXT, /* application/grpc-web-text[+proto]: the same, base64 */
} web_proto_t;

/** Classify a content-type value (parameters after ';' ignored, case-insensitive). */
web_proto_t web_content_type(const uint8_t *v, size_t n);

/** Base64 (standard alphabet, padded) of n bytes into out (4 * ((n + 2) / 3) bytes). */
size_t web_b64_encode(const uint8_t *in, size_t n, char *out);

/** Incremental decoder of concatenated padded base64 chunks. */
typedef struct web_b64 {
  uint8_t q[4];
  uint8_t nq;
} web_b64_t;

/**
 * Decode n bytes of base64 into out, which has room for 3 * (n / 4 + 1) bytes. A quantum
 * may end with padding; another chunk may follow it. Returns the bytes written, or -1 for
 * a byte outside the alphabet or misplaced padding.
 */
long web_b64_decode(web_b64_t *d, const uint8_t *in, size_t n, uint8_t *out);

/** True if the decoder holds part of a quantum. */
int web_b64_partial(const web_b64_t *d);

/**
 * The trailer block of a gRPC-Web response ("grpc-status: 0\r\ngrpc-message: ...\r\n"),
 * framed (flag 0x80, length): a malloc'd buffer in *out of *outlen bytes. message is
 * percent-encoded already; it and details (base64) may be NULL. Returns 0 or -ENOMEM.
 */
int web_trailer_frame(int status, const char *message, const char *details, uint8_t **out,
                      size_t *outlen) __attribute__((warn_unused_result));

/** The index of v among the n allowed origins (exact match), or -1. */
int web_origin_find(const char *const *origins, unsigned n, const uint8_t *v, size_t len);

/** True if v is a comma-separated list of header-name tokens (Access-Control-Request-Headers). */
int web_token_list_ok(const uint8_t *v, size_t len);

/**
 * Make a request target a relative file path: the query is dropped, %XX decoded; refused
 * (-1, the request is bad: 400) for a target not starting with '/', a bad escape, an
 * encoded '/' or '\', a NUL, a backslash, a "." or ".." segment, an empty segment, or more
 * than outlen - 1 bytes. "" for "/". Returns 0.
 */
int web_path_clean(const char *target, char *out, size_t outlen);

/** The content type served for a file name (by its extension). */
const char *web_mime(const char *path);

/** True if the file name carries a content hash ("index-3fA9c1b2.js", "app.5e1f0a9c.css"). */
int web_hashed_asset(const char *path);

/** True if the last segment of path has an extension (an asset, not an SPA route). */
int web_has_extension(const char *path);

/** True if a segment of the clean relative path is hidden (starts with '.'), other than
 * ".well-known": an editor's or a tool's file left in --console-dir is not served. */
int web_hidden(const char *path);

/**
 * A console file read once and shared, read-only, by every reply that serves it: a reply
 * holds a reference, not a copy, so what many streams of one file cost is one copy. It
 * stays while referenced; a file changed on disk (another inode, size or modification time)
 * is read anew and the old copy lives on until its last reply is done.
 */
typedef struct web_file {
  struct web_file *next, **pprev; /* the server's list of files in use */
  unsigned refs;
  dev_t dev;
  ino_t ino;
  off_t size; /* as fstat saw it (with the times, the key; len is what was read) */
  struct timespec mtime, ctime;
  char etag[WEB_ETAG_LEN]; /* web_file_etag(), quoted */
  int has_data;            /* data holds the file (else only its size and etag are known) */
  size_t len;
  uint8_t data[];
} web_file_t;

/**
 * The regular file rel under the directory root (both without trailing '/'; root is a
 * realpath), from the list of files in use when it has not changed, else read now and added
 * to it. Symlinks are followed only if the file they reach is still under root. Files over
 * max bytes are refused. Without with_data (a HEAD, a revalidation) a file not in use is not
 * read: *out then has its size, etag and no data (len bytes it would have), and is nobody
 * else's. On success *out holds a reference the caller gives back with web_file_release().
 * Returns 0, -ENOENT (missing, not a regular file, outside root), -EFBIG or -ENOMEM.
 */
int web_file_get(web_file_t **list, const char *root, const char *rel, size_t max, int with_data,
                 web_file_t **out) __attribute__((warn_unused_result));

/** Give back a reference from web_file_get(); the last one frees the copy. NULL: no-op. */
void web_file_release(web_file_t *f);

/** True if an If-None-Match value (a list of entity tags, or "*") names etag. */
int web_etag_match(const char *if_none_match, const char *etag);

#endif
