#ifndef CLUE_LIB_UTF8_H
#define CLUE_LIB_UTF8_H

/* UTF-8 checks shared by the JSON writer (json.c) and reader (json_in.c). */

#include <stddef.h>

/**
 * Length of the well-formed UTF-8 sequence at s (n >= 1 bytes available): 1 to 4, or 0 if it
 * is not one (a stray or overlong form, a surrogate, a value above U+10FFFF, a cut sequence).
 */
size_t clue__utf8_len(const unsigned char *s, size_t n);

#endif
