#include "domain/validate.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

__attribute__((format(printf, 3, 4))) static int fail(validate_error_t *err, const char *field,
                                                      const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    err->field = field;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
  }
  return VALIDATE_EINVAL;
}

/* Decode one UTF-8 sequence at s (len bytes available). Returns its length and the code
 * point, or 0 if the bytes there are not a well-formed sequence (RFC 3629: no overlong
 * forms, no UTF-16 surrogates, nothing above U+10FFFF). */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp) {
  if (len == 0)
    return 0;
  unsigned char c = s[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t n;
  uint32_t v, min;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2, v = c & 0x1F, min = 0x80;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3, v = c & 0x0F, min = 0x800;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0; /* continuation byte, C0/C1 overlong lead, or F5..FF */
  }
  if (len < n)
    return 0;
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    v = (v << 6) | (s[i] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
    return 0;
  *cp = v;
  return n;
}

static bool is_space(uint32_t cp) {
  switch (cp) {
  case 0x09:
  case 0x0A:
  case 0x0B:
  case 0x0C:
  case 0x0D:
  case 0x20:
  case 0x85:
  case 0xA0:
  case 0x1680:
  case 0x2028:
  case 0x2029:
  case 0x202F:
  case 0x205F:
  case 0x3000: /* ideographic space, common in Chinese text */
    return true;
  default:
    return cp >= 0x2000 && cp <= 0x200A;
  }
}

typedef struct cp_range {
  uint32_t lo, hi;
} cp_range_t;

static bool in_ranges(uint32_t cp, const cp_range_t *r, size_t n) {
  size_t lo = 0, hi = n;
  while (lo < hi) { /* the tables are sorted and do not overlap */
    size_t mid = lo + (hi - lo) / 2;
    if (cp < r[mid].lo)
      hi = mid;
    else if (cp > r[mid].hi)
      lo = mid + 1;
    else
      return true;
  }
  return false;
}

#define NRANGES(a) (sizeof(a) / sizeof((a)[0]))

/* Unicode 15.1's Default_Ignorable_Code_Point: what a renderer shows as nothing when it
 * cannot use it (zero-width space and joiners, bidirectional controls, the word joiner, the
 * byte-order mark, soft hyphen, variation selectors, Hangul fillers, tags). */
static const cp_range_t ignorable[] = {
    {0x00AD, 0x00AD},   {0x034F, 0x034F},   {0x061C, 0x061C}, {0x115F, 0x1160}, {0x17B4, 0x17B5},
    {0x180B, 0x180F},   {0x200B, 0x200F},   {0x202A, 0x202E}, {0x2060, 0x206F}, {0x3164, 0x3164},
    {0xFE00, 0xFE0F},   {0xFEFF, 0xFEFF},   {0xFFA0, 0xFFA0}, {0xFFF0, 0xFFF8}, {0x1BCA0, 0x1BCA3},
    {0x1D173, 0x1D17A}, {0xE0000, 0xE0FFF},
};

/* Unicode 15.1's format characters (General_Category Cf): invisible or layout-changing
 * characters that a single-line name has no use for, and that make "张<U+200B>某" a name a
 * search for 张某 misses. */
static const cp_range_t format[] = {
    {0x00AD, 0x00AD},   {0x0600, 0x0605},   {0x061C, 0x061C},   {0x06DD, 0x06DD},
    {0x070F, 0x070F},   {0x0890, 0x0891},   {0x08E2, 0x08E2},   {0x180E, 0x180E},
    {0x200B, 0x200F},   {0x202A, 0x202E},   {0x2060, 0x2064},   {0x2066, 0x206F},
    {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},   {0x110BD, 0x110BD}, {0x110CD, 0x110CD},
    {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A}, {0xE0001, 0xE0001},
    {0xE0020, 0xE007F},
};

/* White space, the default ignorables and the blank braille pattern (U+2800, which no
 * property names as blank but which draws nothing): a text made only of these shows nothing. */
static bool is_invisible(uint32_t cp) {
  return is_space(cp) || cp == 0x2800 || in_ranges(cp, ignorable, NRANGES(ignorable));
}

/* Invisible code points that belong to the character before them: variation selectors (an
 * emoji's U+FE0F, an ideographic variation sequence), tags (subdivision flags), and the
 * terminators of a bidirectional embedding or isolate, whose removal would leave it open.
 * Trailing ones stay after a visible character. */
static bool is_attached(uint32_t cp) {
  return (cp >= 0xFE00 && cp <= 0xFE0F) || (cp >= 0x180B && cp <= 0x180D) || cp == 0x180F ||
         (cp >= 0xE0020 && cp <= 0xE007F) || (cp >= 0xE0100 && cp <= 0xE01EF) || cp == 0x202C ||
         cp == 0x2069;
}

/* A variation selector (VS1-VS256) or a Mongolian free variation selector. */
static bool is_selector(uint32_t cp) {
  return (cp >= 0xFE00 && cp <= 0xFE0F) || (cp >= 0xE0100 && cp <= 0xE01EF) ||
         (cp >= 0x180B && cp <= 0x180D) || cp == 0x180F;
}

/* The characters a selector in a single-line text may follow: those Unicode varies with one
 * (its standardized and ideographic variation sequences, the emoji presentation) that a name
 * may hold: CJK ideographs (a rare form of a name's character), Mongolian letters, symbols
 * and emoji. After any other (a Latin letter) a selector changes nothing on the screen, and a
 * name with one would print as the name without it. */
static const cp_range_t varied[] = {
    {0x00A9, 0x00A9}, {0x00AE, 0x00AE},   {0x1800, 0x18AF},   {0x2000, 0x2BFF},
    {0x3000, 0x303F}, {0x3200, 0x32FF},   {0x3400, 0x4DBF},   {0x4E00, 0x9FFF},
    {0xF900, 0xFAFF}, {0x1F000, 0x1FAFF}, {0x20000, 0x3FFFF},
};

/* A selector after an ASCII character that Unicode varies with it: a keycap ("1", U+FE0F,
 * U+20E3; "#" and "*" too) and the slashed zero ("0", U+FE00). */
static bool ascii_varied(uint32_t prev, uint32_t cp, uint32_t next) {
  if (cp == 0xFE0F && ((prev >= '0' && prev <= '9') || prev == '#' || prev == '*'))
    return next == 0x20E3;
  return cp == 0xFE00 && prev == '0';
}

static bool is_format(uint32_t cp) {
  return in_ranges(cp, format, NRANGES(format));
}

static bool is_control(uint32_t cp, bool multiline) {
  if (multiline && (cp == '\t' || cp == '\n' || cp == '\r'))
    return false;
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

bool validate_utf8(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  uint32_t cp;
  while (i < len) {
    if (p[i] < 0x80) { /* ASCII runs are the common case */
      i++;
      continue;
    }
    size_t n = utf8_decode(p + i, len - i, &cp);
    if (n == 0)
      return false;
    i += n;
  }
  return true;
}

size_t validate_utf8_chars(const char *s, size_t len) {
  size_t chars = 0;
  for (size_t i = 0; i < len; i++)
    if (((unsigned char)s[i] & 0xC0) != 0x80)
      chars++;
  return chars;
}

const char *validate_trim(const char *s, size_t *len) {
  if (s == NULL) {
    *len = 0;
    return "";
  }
  const unsigned char *p = (const unsigned char *)s;
  size_t start = 0, full = strlen(s), end;
  uint32_t cp;
  bool attached = false; /* after a visible character and what belongs to it */

  while (start < full) {
    size_t n = utf8_decode(p + start, full - start, &cp);
    if (n == 0 || !is_invisible(cp))
      break;
    start += n;
  }
  /* Forward, not from the end: whether a trailing variation selector stays depends on what
   * precedes it. A malformed byte counts as visible. */
  end = start;
  for (size_t i = start; i < full;) {
    size_t n = utf8_decode(p + i, full - i, &cp);
    if (n == 0) {
      i++;
      end = i, attached = true;
    } else if (!is_invisible(cp) || (attached && is_attached(cp))) {
      i += n;
      end = i, attached = true;
    } else {
      i += n;
      attached = false;
    }
  }
  *len = end - start;
  return s + start;
}

bool validate_is_blank(const char *s) {
  size_t len;
  (void)validate_trim(s, &len);
  return len == 0;
}

int validate_text(const char *field, const char *s, size_t max, unsigned flags,
                  validate_error_t *err) {
  if (s == NULL)
    s = "";
  size_t full = strlen(s);
  if (!validate_utf8(s, full))
    return fail(err, field, "%s is not valid UTF-8", field);

  size_t len;
  const char *t = validate_trim(s, &len);
  if (len == 0) {
    if (flags & VALIDATE_REQUIRED)
      return fail(err, field, "%s is required", field);
    return VALIDATE_OK;
  }

  const unsigned char *p = (const unsigned char *)t;
  bool multiline = (flags & VALIDATE_MULTILINE) != 0;
  uint32_t cp = 0, prev = 0;
  for (size_t i = 0; i < len; prev = cp) {
    size_t n = utf8_decode(p + i, len - i, &cp);
    if (n == 0) /* cannot happen after validate_utf8(); never loop on it */
      return fail(err, field, "%s is not valid UTF-8", field);
    if (is_control(cp, multiline))
      return fail(err, field, "%s must not contain control characters", field);
    if (!multiline && (cp == 0x2028 || cp == 0x2029))
      return fail(err, field, "%s must be one line: U+%04X is a line or paragraph separator", field,
                  (unsigned)cp);
    if (!multiline && is_format(cp))
      return fail(err, field, "%s must not contain invisible or bidirectional formatting (U+%04X)",
                  field, (unsigned)cp);
    /* The other default ignorables (a combining grapheme joiner, Hangul fillers, ...) hide a
     * name from a search as well; variation selectors stay with the character they vary. */
    if (!multiline && in_ranges(cp, ignorable, NRANGES(ignorable)) && !is_attached(cp))
      return fail(err, field, "%s must not contain invisible characters (U+%04X)", field,
                  (unsigned)cp);
    uint32_t next = 0;
    if (i + n < len)
      (void)utf8_decode(p + i + n, len - i - n, &next);
    if (!multiline && is_selector(cp) && !in_ranges(prev, varied, NRANGES(varied)) &&
        !ascii_varied(prev, cp, next))
      return fail(err, field,
                  "%s must not contain a variation selector (U+%04X) but right after a character "
                  "it varies (a CJK ideograph, a Mongolian letter, a symbol, a keycap), one at a "
                  "time",
                  field, (unsigned)cp);
    i += n;
  }

  if (max > 0) {
    if (flags & VALIDATE_COUNT_CHARS) {
      size_t chars = validate_utf8_chars(t, len);
      if (chars > max)
        return fail(err, field, "%s is too long: %zu characters, at most %zu", field, chars, max);
    } else if (len > max) {
      return fail(err, field, "%s is too long: %zu bytes, at most %zu", field, len, max);
    }
  }
  return VALIDATE_OK;
}

int validate_title(const char *field, const char *s, validate_error_t *err) {
  return validate_text(field, s, VALIDATE_TITLE_MAX_CHARS, VALIDATE_REQUIRED | VALIDATE_COUNT_CHARS,
                       err);
}

int validate_summary(const char *s, validate_error_t *err) {
  return validate_text("summary", s, VALIDATE_SUMMARY_MAX_BYTES,
                       VALIDATE_REQUIRED | VALIDATE_MULTILINE, err);
}

int validate_name(const char *field, const char *s, bool required, validate_error_t *err) {
  return validate_text(field, s, VALIDATE_NAME_MAX_CHARS,
                       VALIDATE_COUNT_CHARS | (required ? VALIDATE_REQUIRED : 0u), err);
}

int validate_note_text(const char *s, validate_error_t *err) {
  return validate_text("text", s, VALIDATE_NOTE_MAX_BYTES, VALIDATE_REQUIRED | VALIDATE_MULTILINE,
                       err);
}

int validate_reason(const char *field, const char *s, bool required, validate_error_t *err) {
  return validate_text(field, s, VALIDATE_REASON_MAX_BYTES,
                       VALIDATE_MULTILINE | (required ? VALIDATE_REQUIRED : 0u), err);
}

static bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool validate_is_uuid(const char *s) {
  if (s == NULL)
    return false;
  for (size_t i = 0; i < VALIDATE_UUID_LEN; i++) {
    bool hyphen = i == 8 || i == 13 || i == 18 || i == 23;
    if (hyphen ? s[i] != '-' : !is_hex(s[i]))
      return false; /* also stops at the terminating NUL of a short string */
  }
  return s[VALIDATE_UUID_LEN] == '\0';
}

int validate_uuid(const char *field, const char *s, bool required, validate_error_t *err) {
  if (s == NULL || s[0] == '\0') {
    if (required)
      return fail(err, field, "%s is required", field);
    return VALIDATE_OK;
  }
  if (!validate_is_uuid(s))
    return fail(err, field, "%s must be a UUID (8-4-4-4-12 hexadecimal digits)", field);
  return VALIDATE_OK;
}

int validate_request_id(const char *s, validate_error_t *err) {
  return validate_uuid("request_id", s, true, err);
}

int validate_uuid_normalize(const char *in, char out[VALIDATE_UUID_LEN + 1]) {
  if (!validate_is_uuid(in))
    return VALIDATE_EINVAL;
  for (size_t i = 0; i < VALIDATE_UUID_LEN; i++)
    out[i] = (in[i] >= 'A' && in[i] <= 'F') ? (char)(in[i] - 'A' + 'a') : in[i];
  out[VALIDATE_UUID_LEN] = '\0';
  return VALIDATE_OK;
}

int validate_unit_code(const char *s, validate_error_t *err) {
  if (s == NULL || s[0] == '\0')
    return fail(err, "code", "code is required");
  size_t n = 0;
  bool ok = s[0] >= 'A' && s[0] <= 'Z';
  for (n = 1; ok && s[n] != '\0'; n++)
    ok = (s[n] >= 'A' && s[n] <= 'Z') || (s[n] >= '0' && s[n] <= '9');
  if (!ok || n < VALIDATE_UNIT_CODE_MIN || n > VALIDATE_UNIT_CODE_MAX)
    return fail(err, "code",
                "code must be %d to %d characters: an upper-case letter, then upper-case letters "
                "or digits",
                VALIDATE_UNIT_CODE_MIN, VALIDATE_UNIT_CODE_MAX);
  return VALIDATE_OK;
}

int validate_page_size(int32_t requested, int32_t *out, validate_error_t *err) {
  return validate_page_size_of(requested, VALIDATE_PAGE_SIZE_DEFAULT, VALIDATE_PAGE_SIZE_MAX, out,
                               err);
}

int validate_page_size_of(int32_t requested, int32_t def, int32_t max, int32_t *out,
                          validate_error_t *err) {
  if (requested < 0)
    return fail(err, "page_size", "page_size must not be negative");
  if (requested == 0)
    *out = def;
  else if (requested > max)
    *out = max;
  else
    *out = requested;
  return VALIDATE_OK;
}

int validate_id(const char *field, int64_t id, validate_error_t *err) {
  if (id == 0)
    return fail(err, field, "%s is required", field);
  if (id < 0)
    return fail(err, field, "%s must be positive", field);
  return VALIDATE_OK;
}

int validate_id_list(const char *field, const int64_t *ids, size_t n, size_t max,
                     validate_error_t *err) {
  int rc;

  if (n > max)
    return fail(err, field, "%s has more than %zu entries", field, max);
  for (size_t i = 0; i < n; i++) {
    if ((rc = validate_id(field, ids[i], err)) != 0)
      return rc;
    for (size_t j = 0; j < i; j++)
      if (ids[j] == ids[i])
        return fail(err, field, "%s names %lld twice", field, (long long)ids[i]);
  }
  return VALIDATE_OK;
}

int validate_enum(const char *field, int value, int min, int max, validate_error_t *err) {
  if (value >= min && value <= max)
    return VALIDATE_OK;
  if (value == 0)
    return fail(err, field, "%s is required", field);
  return fail(err, field, "%s has an unknown value %d", field, value);
}

int validate_extend_days(int32_t days, validate_error_t *err) {
  if (days == 0)
    return fail(err, "days", "days is required");
  if (days < 0 || days > VALIDATE_EXTEND_DAYS_MAX)
    return fail(err, "days", "days must be between 1 and %d", VALIDATE_EXTEND_DAYS_MAX);
  return VALIDATE_OK;
}

int validate_time_ms(const char *field, int64_t ms, validate_error_t *err) {
  if (ms >= 0 && ms <= VALIDATE_TIME_MS_MAX)
    return VALIDATE_OK;
  if (err) {
    err->field = field;
    snprintf(err->message, sizeof(err->message),
             "%s must be milliseconds since 1970-01-01 UTC, no later than the year 10000", field);
  }
  return VALIDATE_EINVAL;
}

/* ---- every violation of a request ---------------------------------------------------------- */

void validate_errors_init(validate_errors_t *e) {
  e->n = e->dropped = 0;
}

static validate_error_t *next_slot(validate_errors_t *e) {
  return &e->v[e->n < VALIDATE_VIOLATIONS_MAX ? e->n : VALIDATE_VIOLATIONS_MAX];
}

validate_error_t *validate_slot(validate_errors_t *e) {
  validate_error_t *slot = next_slot(e);

  slot->description = NULL; /* a checker writes field and message only */
  return slot;
}

int validate_each(validate_errors_t *e, int rc) {
  const validate_error_t *got = next_slot(e);

  if (rc == 0)
    return 0;
  for (unsigned i = 0; i < e->n; i++)
    if (e->v[i].field != NULL && got->field != NULL && strcmp(e->v[i].field, got->field) == 0)
      return rc; /* one violation per field: the first says what to mend */
  if (e->n < VALIDATE_VIOLATIONS_MAX)
    e->n++;
  else
    e->dropped++;
  return rc;
}

void validate_add_as(validate_errors_t *e, const char *field, const char *message,
                     const char *description) {
  validate_error_t *slot = validate_slot(e);

  slot->field = field;
  snprintf(slot->message, sizeof(slot->message), "%s", message);
  slot->description = description;
  (void)validate_each(e, VALIDATE_EINVAL);
}

void validate_add(validate_errors_t *e, const char *field, const char *message) {
  validate_add_as(e, field, message, NULL);
}

void validate_time_range(validate_errors_t *e, const char *from_field, int64_t from,
                         const char *to_field, int64_t to) {
  int from_bad = validate_each(e, validate_time_ms(from_field, from, validate_slot(e)));
  int to_bad = validate_each(e, validate_time_ms(to_field, to, validate_slot(e)));
  char msg[VALIDATE_MESSAGE_MAX];

  /* The range of two bounds that are themselves refused says nothing more. */
  if (from_bad != 0 || to_bad != 0 || from == 0 || to == 0 || from < to)
    return;
  snprintf(msg, sizeof(msg), "%s must be before %s", from_field, to_field);
  validate_add(e, from_field, msg);
}

int validate_errors_result(const validate_errors_t *e) {
  return e->n > 0 ? VALIDATE_EINVAL : 0;
}
