#ifndef CLUE_NET_UTF8_H
#define CLUE_NET_UTF8_H

/* UTF-8 checks shared by libclue's JSON writer (json.c) and reader (json_in.c), by cluectl's
 * text for terminals (client/cli/table.c) and its reading of the export's JSON strings
 * (client/cli/clue_rows.c), and by clued's log (server/log.c) and its fixed buffers of text
 * (a principal's names, a database error, a status message): one decoder, and one set of
 * what a terminal or a viewer acts on rather than shows. */

#include <stddef.h>
#include <stdint.h>

/**
 * Length of the well-formed UTF-8 sequence at s (n >= 1 bytes available): 1 to 4, or 0 if it
 * is not one (a stray or overlong form, a surrogate, a value above U+10FFFF, a cut sequence).
 */
size_t clue__utf8_len(const unsigned char *s, size_t n);

/** The code point of the well-formed sequence of len bytes at s (len from clue__utf8_len()). */
uint32_t clue__utf8_value(const unsigned char *s, size_t len);

/**
 * The length of s[0..n) without the sequence its end cuts short, if any: where to cut a text
 * that was cut to fit a buffer so that it ends with a whole character (a string a proto3
 * `string` or a grpc-message carries must be valid UTF-8). Bytes before that are kept as
 * they are, malformed or not.
 */
size_t clue__utf8_whole(const char *s, size_t n);

/**
 * Copy the NUL-terminated src into dst of size bytes (size >= 1) as snprintf("%s") would, but
 * cut, if it must be, between characters (clue__utf8_whole()). Returns the length copied.
 */
size_t clue__utf8_copy(char *dst, size_t size, const char *src);

/** Writes code point cp (at most U+10FFFF) at d as UTF-8, 1 to 4 bytes; returns how many. */
size_t clue__utf8_put(unsigned char *d, uint32_t cp);

/**
 * Whether cp must not be written raw where people read it, though it is well-formed text: the
 * C1 controls (U+009B is a CSI to some terminals), the line and paragraph separators, and the
 * bidirectional marks, embeddings, overrides and isolates, which reorder what follows them
 * ("Trojan Source"). The JSON writer escapes them, cluectl shows them by name.
 */
int clue__utf8_unsafe_to_show(uint32_t cp);

#endif
