/* UTF-8 sequence checks for libclue's JSON and cluectl's terminal text. */

#include "net/utf8.h"

#include <stdint.h>
#include <string.h>

size_t clue__utf8_len(const unsigned char *s, size_t n) {
  uint32_t cp;
  size_t len;

  if (s[0] < 0x80)
    return 1;
  if (s[0] >= 0xC2 && s[0] <= 0xDF) {
    len = 2;
    cp = s[0] & 0x1F;
  } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
    len = 3;
    cp = s[0] & 0x0F;
  } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
    len = 4;
    cp = s[0] & 0x07;
  } else {
    return 0;
  }
  if (len > n)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return len;
}

uint32_t clue__utf8_value(const unsigned char *s, size_t len) {
  static const unsigned char lead_mask[] = {0, 0x7F, 0x1F, 0x0F, 0x07};
  uint32_t cp = s[0] & lead_mask[len];

  for (size_t k = 1; k < len; k++)
    cp = cp << 6 | (s[k] & 0x3F);
  return cp;
}

size_t clue__utf8_whole(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t lead = n, want;

  /* The last sequence's lead byte: at most 3 continuation bytes back. */
  while (lead > 0 && n - lead < 4 && (u[lead - 1] & 0xC0) == 0x80)
    lead--;
  if (lead == 0 || n - lead >= 4 || u[lead - 1] < 0xC0)
    return n; /* ASCII, stray continuation bytes, or a whole 4-byte sequence */
  lead--;
  want = u[lead] >= 0xF0 ? 4 : u[lead] >= 0xE0 ? 3 : 2;
  return n - lead < want ? lead : n;
}

size_t clue__utf8_copy(char *dst, size_t size, const char *src) {
  size_t n = strlen(src);

  if (n >= size)
    n = clue__utf8_whole(src, size - 1);
  memmove(dst, src, n);
  dst[n] = '\0';
  return n;
}

size_t clue__utf8_put(unsigned char *d, uint32_t cp) {
  if (cp < 0x80) {
    d[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    d[0] = (unsigned char)(0xC0 | cp >> 6);
    d[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    d[0] = (unsigned char)(0xE0 | cp >> 12);
    d[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    d[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  d[0] = (unsigned char)(0xF0 | cp >> 18);
  d[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
  d[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
  d[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

int clue__utf8_unsafe_to_show(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x061C || cp == 0x200E || cp == 0x200F ||
         (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}
