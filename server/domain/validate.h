#ifndef CLUED_DOMAIN_VALIDATE_H
#define CLUED_DOMAIN_VALIDATE_H

/* Field validators for requests (DESIGN.md §7: INVALID_ARGUMENT names the bad field).
 *
 * Pure functions over C strings and integers: no I/O, no protobuf types. Each checker
 * returns 0 when the value is acceptable, or VALIDATE_EINVAL after filling *err (when err
 * is not NULL) with the field name and a message fit for the client, for example
 * "title is required" or "request_id must be a UUID (8-4-4-4-12 hexadecimal digits)".
 *
 * Text rules: strings are NUL-terminated (protobuf-c hands them out so); NULL counts as
 * empty. Trimming removes, at both ends, what shows nothing: Unicode's White_Space (ASCII
 * space, tab, line breaks, NBSP, the ideographic space U+3000, U+2028...) and its
 * Default_Ignorable_Code_Point set (zero-width space, joiners, word joiner, bidirectional
 * controls, byte-order mark, soft hyphen, Hangul fillers, variation selectors, tags...),
 * except that variation selectors, tags and the bidirectional terminators U+202C and U+2069
 * stay after the visible character they belong to. Blank means empty after trimming: a
 * text without a visible character. Length limits apply to the trimmed text, so a service
 * that stores validate_trim()'s span never stores more than the limit.
 *
 * Single-line text (without VALIDATE_MULTILINE: titles, names, host units, categories)
 * refuses, inside the trimmed span, Unicode's format characters (General_Category Cf: the
 * zero-width space and joiners, U+2060, bidirectional embeddings, overrides, isolates and
 * marks, ...), the other default ignorables but those attached to the character before them
 * (variation selectors) and U+2028/U+2029, so a name cannot hide a character from a search or
 * reorder its display. Multi-line free text (summaries, notes, reasons) keeps them: a zero-width
 * joiner builds emoji sequences, and Arabic or Hebrew text uses the bidirectional marks;
 * clients escape bidirectional controls when they print (cluectl shows <U+202E>). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Error codes of this module. */
enum {
  VALIDATE_OK = 0,
  VALIDATE_EINVAL = -1, /* the value is not acceptable; *err says why */
};

/** Limits of request fields (DESIGN.md §7 and the proto comments). */
#define VALIDATE_TITLE_MAX_CHARS 200     /* clue and joint-case titles, in characters */
#define VALIDATE_SUMMARY_MAX_BYTES 20000 /* clue summary, in UTF-8 bytes */
#define VALIDATE_NAME_MAX_CHARS 100      /* person, unit and host-unit names, in characters */
#define VALIDATE_NOTE_MAX_BYTES 65536    /* note text (64 KiB), in UTF-8 bytes */
#define VALIDATE_REASON_MAX_BYTES 4096   /* reasons, comments, findings, in UTF-8 bytes */
#define VALIDATE_UUID_LEN 36             /* 8-4-4-4-12 hexadecimal digits with hyphens */
#define VALIDATE_UNIT_CODE_MIN 2         /* [A-Z][A-Z0-9]{1,15} */
#define VALIDATE_UNIT_CODE_MAX 16
#define VALIDATE_PAGE_SIZE_DEFAULT 50 /* page_size 0 means this */
#define VALIDATE_PAGE_SIZE_MAX 500    /* larger page sizes are clamped to this */
#define VALIDATE_EXTEND_DAYS_MAX 365  /* a deadline extension adds 1 to this many days */

/** Size of validate_error_t.message; longer messages are cut. */
#define VALIDATE_MESSAGE_MAX 192

/** Why a value was refused: the request field and a message for the client. */
typedef struct validate_error {
  const char *field;                  /* request field path as given, e.g. "subject.name" */
  char message[VALIDATE_MESSAGE_MAX]; /* "subject.name is required" */
  const char *description;            /* for the field's BadRequest entry, when not message
                                         (static; NULL: message) */
} validate_error_t;

/** Violations of one request, collected rather than stopping at the first: one per field
 * (a field's later violations are dropped), at most VALIDATE_VIOLATIONS_MAX kept. */
#define VALIDATE_VIOLATIONS_MAX 8 /* as many as one gRPC status carries (RPC_DETAILS_MAX) */
typedef struct validate_errors {
  validate_error_t v[VALIDATE_VIOLATIONS_MAX + 1]; /* the last: where a checker writes once full */
  unsigned n;                                      /* kept in v */
  unsigned dropped;                                /* found once v was full */
} validate_errors_t;

/** Flags of validate_text(). */
typedef enum validate_text_flag {
  VALIDATE_REQUIRED = 1u << 0,    /* blank text is refused ("<field> is required") */
  VALIDATE_MULTILINE = 1u << 1,   /* tab, line feed and carriage return are allowed */
  VALIDATE_COUNT_CHARS = 1u << 2, /* the limit counts characters (code points), not bytes */
} validate_text_flag_t;

/** True if s[0..len) is well-formed UTF-8 (no overlong forms, surrogates or values above U+10FFFF).
 */
bool validate_utf8(const char *s, size_t len);

/** The number of code points in s[0..len), which must be well-formed UTF-8. */
size_t validate_utf8_chars(const char *s, size_t len);

/**
 * The span of s without what shows nothing at either end (white space and default
 * ignorables, see the text rules above): returns its start (inside s) and stores its length
 * in *len. s must be NUL-terminated UTF-8; NULL gives "" and length 0. A malformed sequence
 * counts as visible and stops the trim.
 */
const char *validate_trim(const char *s, size_t *len);

/** True if s is NULL, empty, or without a visible character (only white space and ignorables). */
bool validate_is_blank(const char *s);

/**
 * The general text checker: valid UTF-8; no control characters (except tab, LF and CR with
 * VALIDATE_MULTILINE; C1 controls and DEL are refused too); without VALIDATE_MULTILINE, no
 * format character (Cf), no unattached default ignorable and no U+2028/U+2029 inside the trimmed
 * text; trimmed length at most max (bytes, or characters with VALIDATE_COUNT_CHARS; max 0 means no
 * limit); not blank with VALIDATE_REQUIRED. Returns 0 or VALIDATE_EINVAL.
 */
int validate_text(const char *field, const char *s, size_t max, unsigned flags,
                  validate_error_t *err) __attribute__((warn_unused_result));

/** A clue or joint-case title: required, one line, at most 200 characters. */
int validate_title(const char *field, const char *s, validate_error_t *err)
    __attribute__((warn_unused_result));

/** A clue summary ("summary"): required, several lines, at most 20,000 bytes. */
int validate_summary(const char *s, validate_error_t *err) __attribute__((warn_unused_result));

/** A name (person, unit, host unit, position): one line, at most 100 characters. */
int validate_name(const char *field, const char *s, bool required, validate_error_t *err)
    __attribute__((warn_unused_result));

/** A note's text ("text"): required, several lines, at most 64 KiB. */
int validate_note_text(const char *s, validate_error_t *err) __attribute__((warn_unused_result));

/** A reason, comment or finding: several lines, at most 4,096 bytes. */
int validate_reason(const char *field, const char *s, bool required, validate_error_t *err)
    __attribute__((warn_unused_result));

/** True if s is a UUID in 8-4-4-4-12 hexadecimal form (either case, no braces). */
bool validate_is_uuid(const char *s);

/**
 * A UUID field. Empty is refused only when required. Returns 0 or VALIDATE_EINVAL.
 */
int validate_uuid(const char *field, const char *s, bool required, validate_error_t *err)
    __attribute__((warn_unused_result));

/** A mutating call's "request_id": a required UUID. */
int validate_request_id(const char *s, validate_error_t *err) __attribute__((warn_unused_result));

/**
 * Lower-case copy of a valid UUID into out (VALIDATE_UUID_LEN + 1 bytes), so that retries
 * spelled in another case find the same idempotency key. Returns 0, or VALIDATE_EINVAL
 * (out untouched) if in is not a UUID.
 */
int validate_uuid_normalize(const char *in, char out[VALIDATE_UUID_LEN + 1])
    __attribute__((warn_unused_result));

/** A unit code ("code"), as used in registration numbers: [A-Z][A-Z0-9]{1,15}, e.g. "G03". */
int validate_unit_code(const char *s, validate_error_t *err) __attribute__((warn_unused_result));

/**
 * The page size to use for a requested page_size: 0 gives 50, more than 500 gives 500.
 * A negative request is refused. Returns 0 (and sets *out) or VALIDATE_EINVAL.
 */
int validate_page_size(int32_t requested, int32_t *out, validate_error_t *err)
    __attribute__((warn_unused_result));

/** validate_page_size() for a list of its own bounds: 0 gives def, more than max gives max. */
int validate_page_size_of(int32_t requested, int32_t def, int32_t max, int32_t *out,
                          validate_error_t *err) __attribute__((warn_unused_result));

/** An identifier field: 0 is "<field> is required", a negative value is refused. */
int validate_id(const char *field, int64_t id, validate_error_t *err)
    __attribute__((warn_unused_result));

/** A list of ids: each positive, none twice, at most max of them. */
int validate_id_list(const char *field, const int64_t *ids, size_t n, size_t max,
                     validate_error_t *err) __attribute__((warn_unused_result));

/**
 * An enum field whose valid values are min..max: 0 (UNSPECIFIED) is "<field> is required"
 * when min > 0, other values outside the range are refused.
 */
int validate_enum(const char *field, int value, int min, int max, validate_error_t *err)
    __attribute__((warn_unused_result));

#define VALIDATE_TIME_MS_MAX 253402300800000LL /* 10000-01-01T00:00:00Z */

/**
 * A time in milliseconds since the Unix epoch: 0 means "not set"; otherwise 1 to
 * VALIDATE_TIME_MS_MAX (the start of the year 10000; an exclusive upper bound may be that).
 */
int validate_time_ms(const char *field, int64_t ms, validate_error_t *err)
    __attribute__((warn_unused_result));

/** The "days" of a deadline extension: 1 to 365. */
int validate_extend_days(int32_t days, validate_error_t *err) __attribute__((warn_unused_result));

/** Empty e, to collect the violations of one request. */
void validate_errors_init(validate_errors_t *e);

/** Where the next checker writes its error: pass it as that checker's err. */
validate_error_t *validate_slot(validate_errors_t *e);

/**
 * Record rc, the result of a checker that wrote to validate_slot(e): a violation is kept
 * unless its field has one already or e is full (then counted in dropped). Returns rc, so
 * that a check another depends on can stop there.
 */
int validate_each(validate_errors_t *e, int rc);

/** Record a violation found without a checker: field and message as validate_error_t's. */
void validate_add(validate_errors_t *e, const char *field, const char *message);

/** As validate_add(), the field described in BadRequest by description (static) rather
 * than by message. */
void validate_add_as(validate_errors_t *e, const char *field, const char *message,
                     const char *description);

/**
 * A time range [from, to) of two optional bounds (0: unbounded), each validate_time_ms()'s:
 * one violation per bound refused; with both good and both set, one under from_field when
 * from is not before to (a range that holds nothing is a mistake, never an empty answer).
 */
void validate_time_range(validate_errors_t *e, const char *from_field, int64_t from,
                         const char *to_field, int64_t to);

/** VALIDATE_EINVAL if e holds a violation (the first, e->v[0], is the request's), else 0. */
int validate_errors_result(const validate_errors_t *e);

#endif
