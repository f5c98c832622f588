/* Request field validators (server/domain/validate.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "domain/validate.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define CJK "\xE4\xB8\xAD"        /* 中, 3 bytes */
#define IDEO_SPACE "\xE3\x80\x80" /* U+3000 */
#define NBSP "\xC2\xA0"           /* U+00A0 */
#define BOM "\xEF\xBB\xBF"        /* U+FEFF */
#define EMOJI "\xF0\x9F\x98\x80"  /* U+1F600, 4 bytes */
#define ZWSP "\xE2\x80\x8B"       /* U+200B ZERO WIDTH SPACE */
#define ZWJ "\xE2\x80\x8D"        /* U+200D ZERO WIDTH JOINER */
#define RLO "\xE2\x80\xAE"        /* U+202E RIGHT-TO-LEFT OVERRIDE */
#define PDF "\xE2\x80\xAC"        /* U+202C POP DIRECTIONAL FORMATTING */
#define VS16 "\xEF\xB8\x8F"       /* U+FE0F VARIATION SELECTOR-16 (emoji presentation) */

/* Code points that show nothing, each alone a blank value. */
static const char *const invisibles[] = {
    ZWSP,
    "\xE2\x80\x8C", /* U+200C ZWNJ */
    ZWJ,
    "\xE2\x81\xA0", /* U+2060 WORD JOINER */
    "\xE1\xA0\x8E", /* U+180E MONGOLIAN VOWEL SEPARATOR */
    BOM,
    "\xE2\x80\xA8", /* U+2028 LINE SEPARATOR */
    "\xE2\x80\xA9", /* U+2029 PARAGRAPH SEPARATOR */
    "\xC2\xAD",     /* U+00AD SOFT HYPHEN */
    "\xCD\x8F",     /* U+034F COMBINING GRAPHEME JOINER */
    "\xE1\x85\x9F", /* U+115F HANGUL CHOSEONG FILLER */
    "\xE1\x85\xA0", /* U+1160 HANGUL JUNGSEONG FILLER */
    "\xE3\x85\xA4", /* U+3164 HANGUL FILLER */
    "\xEF\xBE\xA0", /* U+FFA0 HALFWIDTH HANGUL FILLER */
    "\xE2\xA0\x80", /* U+2800 BRAILLE PATTERN BLANK: draws nothing, though no property says so */
    "\xE2\x81\xA1", /* U+2061 FUNCTION APPLICATION */
    "\xE2\x81\xA4", /* U+2064 INVISIBLE PLUS */
    "\xE2\x81\xAA", /* U+206A INHIBIT SYMMETRIC SWAPPING */
    "\xE2\x81\xAF", /* U+206F NOMINAL DIGIT SHAPES */
    "\xEF\xB8\x80", /* U+FE00 VARIATION SELECTOR-1 */
    VS16,
    RLO,
    PDF,
    "\xE2\x81\xA6",     /* U+2066 LEFT-TO-RIGHT ISOLATE */
    "\xE2\x81\xA9",     /* U+2069 POP DIRECTIONAL ISOLATE */
    "\xE2\x80\x8E",     /* U+200E LEFT-TO-RIGHT MARK */
    "\xD8\x9C",         /* U+061C ARABIC LETTER MARK */
    "\xF3\xA0\x80\x81", /* U+E0001 LANGUAGE TAG */
    "\xF3\xA0\x84\x80", /* U+E0100 VARIATION SELECTOR-17 */
};

/* n copies of unit, surrounded by pre and post; the caller frees. */
static char *repeat(const char *pre, const char *unit, size_t n, const char *post) {
  size_t ul = strlen(unit), pl = strlen(pre), ql = strlen(post);
  char *s = malloc(pl + ul * n + ql + 1);
  assert_non_null(s);
  memcpy(s, pre, pl);
  for (size_t i = 0; i < n; i++)
    memcpy(s + pl + i * ul, unit, ul);
  memcpy(s + pl + ul * n, post, ql + 1);
  return s;
}

static void expect_ok(int rc) {
  assert_int_equal(rc, VALIDATE_OK);
}

/* rc must be a refusal whose error names field and says message. */
static void expect_err(int rc, const validate_error_t *err, const char *field,
                       const char *message) {
  assert_int_equal(rc, VALIDATE_EINVAL);
  assert_string_equal(err->field, field);
  assert_string_equal(err->message, message);
}

static void test_utf8(void **state) {
  (void)state;
  static const char *const good[] = {
      "",
      "plain ASCII",
      CJK "文线索",
      EMOJI,
      "\xF4\x8F\xBF\xBF", /* U+10FFFF */
      "\xED\x9F\xBF",     /* U+D7FF, just below the surrogates */
      "\xEE\x80\x80",     /* U+E000, just above them */
      "\xC2\x80",         /* U+0080, smallest 2-byte */
      "\xE0\xA0\x80",     /* U+0800, smallest 3-byte */
      "\xF0\x90\x80\x80", /* U+10000, smallest 4-byte */
      "\xDF\xBF",         /* U+07FF */
  };
  for (size_t i = 0; i < NELEM(good); i++)
    if (!validate_utf8(good[i], strlen(good[i])))
      fail_msg("good[%zu] refused", i);

  static const char *const bad[] = {
      "\x80",                 /* lone continuation */
      "a\xBF",                /* continuation after ASCII */
      "\xC0\xAF",             /* overlong '/' */
      "\xC1\xBF",             /* overlong */
      "\xE0\x80\xAF",         /* overlong 3-byte */
      "\xE0\x9F\xBF",         /* overlong U+07FF */
      "\xF0\x80\x80\xAF",     /* overlong 4-byte */
      "\xF0\x8F\xBF\xBF",     /* overlong U+FFFF */
      "\xED\xA0\x80",         /* U+D800 surrogate */
      "\xED\xBF\xBF",         /* U+DFFF surrogate */
      "\xF4\x90\x80\x80",     /* U+110000 */
      "\xF5\x80\x80\x80",     /* lead byte F5 */
      "\xFF",                 /* never valid */
      "\xFE",                 /* never valid */
      "\xE4\xB8",             /* truncated */
      "abc\xF0\x9F\x98",      /* truncated at the end */
      "\xE4\x41\xAD",         /* bad continuation */
      "\xC3",                 /* lead alone */
      "\xF0\x9F\x98\x80\x80", /* extra continuation */
  };
  for (size_t i = 0; i < NELEM(bad); i++)
    if (validate_utf8(bad[i], strlen(bad[i])))
      fail_msg("bad[%zu] accepted", i);

  /* The length bounds the check: a sequence cut by len is refused. */
  assert_false(validate_utf8(CJK, 2));
  assert_true(validate_utf8(CJK, 3));
  assert_true(validate_utf8("ab\xFF", 2));
}

static void test_utf8_chars(void **state) {
  (void)state;
  assert_int_equal(validate_utf8_chars("", 0), 0);
  assert_int_equal(validate_utf8_chars("abc", 3), 3);
  assert_int_equal(validate_utf8_chars(CJK CJK "a" EMOJI, 11), 4);
  assert_int_equal(validate_utf8_chars(NBSP, 2), 1);
}

static void expect_trim(const char *in, const char *want) {
  size_t len = 999;
  const char *t = validate_trim(in, &len);
  assert_int_equal(len, strlen(want));
  assert_memory_equal(t, want, len);
  if (in != NULL)
    assert_true(t >= in && t + len <= in + strlen(in));
}

static void test_trim(void **state) {
  (void)state;
  expect_trim(NULL, "");
  expect_trim("", "");
  expect_trim("abc", "abc");
  expect_trim("  abc  ", "abc");
  expect_trim("\t\n\r\v\f abc \f\v\r\n\t", "abc");
  expect_trim("a b  c", "a b  c"); /* inner white space stays */
  expect_trim(IDEO_SPACE CJK IDEO_SPACE, CJK);
  expect_trim(NBSP "x" NBSP, "x");
  expect_trim(BOM "title", "title");
  expect_trim("\xE2\x80\x83x\xE2\x80\xAF", "x"); /* EM SPACE, NARROW NBSP */
  expect_trim("\xE2\x80\xA8x\xE2\x80\xA9", "x"); /* LINE/PARAGRAPH SEPARATOR */
  expect_trim("\xC2\x85x\xE1\x9A\x80", "x");     /* NEL, OGHAM SPACE MARK */
  expect_trim(ZWSP "x" ZWSP, "x"); /* shows nothing, so it is trimmed as white space is */
  expect_trim(" " EMOJI " ", EMOJI);
  expect_trim("   ", "");
  expect_trim(IDEO_SPACE NBSP " \t", "");
  /* Malformed bytes at either end are not white space and stop the trim. */
  expect_trim(" abc \xE3\x80", "abc \xE3\x80");
  expect_trim("\x80 abc ", "\x80 abc");
  expect_trim(" \xFF", "\xFF");

  /* What shows nothing goes at both ends; inside, it stays. */
  expect_trim(ZWSP " " BOM "张三" ZWJ RLO, "张三");
  expect_trim("张" ZWSP "三", "张" ZWSP "三");
  expect_trim(VS16 "x", "x"); /* a variation selector without its character */
  /* A variation selector, a tag sequence or a bidirectional terminator stays after the visible
   * character it belongs to, not after white space. */
  expect_trim("\xE2\x9D\xA4" VS16 " ", "\xE2\x9D\xA4" VS16); /* U+2764 U+FE0F: a red heart */
  expect_trim("\xF0\x9F\x8F\xB4\xF3\xA0\x81\xA7\xF3\xA0\x81\xA2\xF3\xA0\x81\xBF",
              "\xF0\x9F\x8F\xB4\xF3\xA0\x81\xA7\xF3\xA0\x81\xA2\xF3\xA0\x81\xBF"); /* flag, tags */
  expect_trim("a " VS16, "a");
  expect_trim("x" RLO "abc" PDF ZWSP, "x" RLO "abc" PDF); /* the override is not left open */
  expect_trim("x" ZWJ, "x");
  for (size_t i = 0; i < NELEM(invisibles); i++) {
    char *s = repeat(" ", invisibles[i], 3, IDEO_SPACE);
    size_t len = 99;
    (void)validate_trim(invisibles[i], &len);
    if (len != 0 || !validate_is_blank(invisibles[i]) || !validate_is_blank(s))
      fail_msg("invisibles[%zu] is not blank", i);
    free(s);
  }

  assert_true(validate_is_blank(NULL));
  assert_true(validate_is_blank(""));
  assert_true(validate_is_blank(" \t\n" IDEO_SPACE));
  assert_false(validate_is_blank(" x "));
  assert_false(validate_is_blank("\xFF"));
}

static void test_text_flags(void **state) {
  (void)state;
  validate_error_t err;
  expect_ok(validate_text("f", NULL, 10, 0, &err));
  expect_ok(validate_text("f", "   ", 10, 0, &err));
  expect_err(validate_text("f", NULL, 10, VALIDATE_REQUIRED, &err), &err, "f", "f is required");
  expect_err(validate_text("f", " \n ", 10, VALIDATE_REQUIRED, &err), &err, "f", "f is required");
  expect_ok(validate_text("f", "x", 0, VALIDATE_REQUIRED, &err)); /* 0: no limit */

  /* Control characters. */
  expect_err(validate_text("f", "a\tb", 0, 0, &err), &err, "f",
             "f must not contain control characters");
  expect_ok(validate_text("f", "a\tb\r\nc", 0, VALIDATE_MULTILINE, &err));
  static const char *const controls[] = {"a\x01",
                                         "a\x1B[0m",
                                         "a\x7F"
                                         "b",
                                         "a\xC2\x85"
                                         "b",
                                         "a\xC2\x9F"
                                         "b",
                                         "a\x0B"
                                         "b",
                                         "a\x0C"
                                         "b"};
  for (size_t i = 0; i < NELEM(controls); i++) {
    expect_err(validate_text("f", controls[i], 0, VALIDATE_MULTILINE, &err), &err, "f",
               "f must not contain control characters");
    expect_err(validate_text("f", controls[i], 0, 0, &err), &err, "f",
               "f must not contain control characters");
  }
  /* White space controls at the ends are trimmed, not refused. */
  expect_ok(validate_text("f", "\tx\n", 0, 0, &err));

  /* UTF-8 is checked on the whole string, trimmed part included. */
  expect_err(validate_text("f", "ok\xC0\xAF", 0, 0, &err), &err, "f", "f is not valid UTF-8");
  expect_err(validate_text("f", "  \xFF", 0, 0, &err), &err, "f", "f is not valid UTF-8");

  /* Bytes or characters. */
  expect_ok(validate_text("f", CJK CJK, 6, 0, &err));
  expect_err(validate_text("f", CJK CJK, 5, 0, &err), &err, "f",
             "f is too long: 6 bytes, at most 5");
  expect_ok(validate_text("f", CJK CJK, 2, VALIDATE_COUNT_CHARS, &err));
  expect_err(validate_text("f", CJK CJK CJK, 2, VALIDATE_COUNT_CHARS, &err), &err, "f",
             "f is too long: 3 characters, at most 2");
  /* The limit applies to the trimmed text. */
  expect_ok(validate_text("f", "   ab   ", 2, 0, &err));

  /* NULL err is allowed. */
  assert_int_equal(validate_text("f", NULL, 1, VALIDATE_REQUIRED, NULL), VALIDATE_EINVAL);
  assert_int_equal(validate_text("f", "\xFF", 1, 0, NULL), VALIDATE_EINVAL);
}

static void test_title(void **state) {
  (void)state;
  validate_error_t err;
  expect_ok(validate_title("title", "关于某局长违规收受礼金的问题线索", &err));
  expect_err(validate_title("title", "", &err), &err, "title", "title is required");
  expect_err(validate_title("title", IDEO_SPACE " ", &err), &err, "title", "title is required");
  expect_err(validate_title("title", "two\nlines", &err), &err, "title",
             "title must not contain control characters");
  /* A title of characters that show nothing is blank. */
  for (size_t i = 0; i < NELEM(invisibles); i++) {
    expect_err(validate_title("title", invisibles[i], &err), &err, "title", "title is required");
    expect_err(validate_name("host_unit", invisibles[i], true, &err), &err, "host_unit",
               "host_unit is required");
  }
  /* Inside a single line: no bidirectional override or isolate, no line separator. */
  expect_err(validate_title("title", "a" RLO "gnp.exe", &err), &err, "title",
             "title must not contain invisible or bidirectional formatting (U+202E)");
  expect_err(validate_title("title",
                            "a\xE2\x81\xA6"
                            "b\xE2\x81\xA9",
                            &err),
             &err, "title",
             "title must not contain invisible or bidirectional formatting (U+2066)");
  expect_err(validate_title("title",
                            "a\xE2\x80\xA8"
                            "b",
                            &err),
             &err, "title", "title must be one line: U+2028 is a line or paragraph separator");
  expect_ok(validate_title("title", ZWSP "标题" RLO, &err)); /* at the ends they are trimmed */

  char *s = repeat("", CJK, 200, ""); /* 200 characters, 600 bytes */
  expect_ok(validate_title("title", s, &err));
  free(s);
  s = repeat("  ", "a", 200, IDEO_SPACE);
  expect_ok(validate_title("title", s, &err));
  free(s);
  s = repeat("", CJK, 201, "");
  expect_err(validate_title("title", s, &err), &err, "title",
             "title is too long: 201 characters, at most 200");
  free(s);
  s = repeat("", EMOJI, 201, "");
  expect_err(validate_title("case.title", s, &err), &err, "case.title",
             "case.title is too long: 201 characters, at most 200");
  free(s);
}

static void test_summary(void **state) {
  (void)state;
  validate_error_t err;
  expect_ok(validate_summary("第一段。\n\n第二段，\t含制表符。", &err));
  expect_err(validate_summary(NULL, &err), &err, "summary", "summary is required");
  char *s = repeat("", "x", VALIDATE_SUMMARY_MAX_BYTES, "");
  expect_ok(validate_summary(s, &err));
  free(s);
  s = repeat("\n", "x", VALIDATE_SUMMARY_MAX_BYTES, "\n");
  expect_ok(validate_summary(s, &err));
  free(s);
  s = repeat("", "x", VALIDATE_SUMMARY_MAX_BYTES + 1, "");
  expect_err(validate_summary(s, &err), &err, "summary",
             "summary is too long: 20001 bytes, at most 20000");
  free(s);
  s = repeat("", CJK, 6667, ""); /* 6,667 characters but 20,001 bytes */
  expect_err(validate_summary(s, &err), &err, "summary",
             "summary is too long: 20001 bytes, at most 20000");
  free(s);
}

static void test_name(void **state) {
  (void)state;
  validate_error_t err;
  expect_ok(validate_name("subject.name", "张三", true, &err));
  expect_ok(validate_name("subject.position", "", false, &err));
  expect_ok(validate_name("subject.position", NULL, false, &err));
  expect_err(validate_name("subject.name", "  ", true, &err), &err, "subject.name",
             "subject.name is required");
  char *s = repeat("", CJK, VALIDATE_NAME_MAX_CHARS, "");
  expect_ok(validate_name("name", s, true, &err));
  free(s);
  s = repeat("", "a", VALIDATE_NAME_MAX_CHARS + 1, "");
  expect_err(validate_name("name", s, false, &err), &err, "name",
             "name is too long: 101 characters, at most 100");
  free(s);
  expect_err(validate_name("host_unit", "a\tb", false, &err), &err, "host_unit",
             "host_unit must not contain control characters");
  /* A format character inside a name hides it from a search for the name it shows. */
  expect_err(validate_name("subject.name", "张" ZWSP "某", true, &err), &err, "subject.name",
             "subject.name must not contain invisible or bidirectional formatting (U+200B)");
  static const char *const hidden[] = {
      ZWJ, "\xE2\x80\x8C", "\xE2\x81\xA0", "\xE1\xA0\x8E", BOM, "\xC2\xAD", "\xE2\x80\x8F",
      "\xD8\x9C", RLO, PDF, "\xF3\xA0\x80\x81",
      /* default ignorables of no use in a name: U+034F
       * combining grapheme joiner, the Hangul fillers
       * U+115F, U+1160, U+3164 and U+FFA0, U+17B4 */
      "\xCD\x8F", "\xE1\x85\x9F", "\xE1\x85\xA0", "\xE3\x85\xA4", "\xEF\xBE\xA0", "\xE1\x9E\xB4"};
  for (size_t i = 0; i < NELEM(hidden); i++) {
    char *s2 = repeat("张", hidden[i], 1, "某");
    if (validate_name("name", s2, true, &err) != VALIDATE_EINVAL)
      fail_msg("hidden[%zu] accepted inside a name", i);
    free(s2);
  }
  expect_err(validate_name("subject.name", "张\xE3\x85\xA4某", true, &err), &err, "subject.name",
             "subject.name must not contain invisible characters (U+3164)");
  /* An ideographic variation sequence (a rare form of a name's character) is no format, nor
   * a Mongolian free variation selector after its letter. */
  expect_ok(validate_name("subject.name", "\xE1\xA0\xA0\xE1\xA0\x8B", true, &err));
  expect_ok(validate_name("subject.name",
                          "葛\xF3\xA0\x84\x80"
                          "某",
                          true, &err));
  expect_ok(validate_name("name", "\xE2\x9D\xA4" VS16 "小组", true, &err)); /* a red heart */
  /* A keycap ("1", VS16, U+20E3), the circled ideographs U+3297 and U+3299, a slashed zero. */
  expect_ok(validate_title("title", "1" VS16 "\xE2\x83\xA3号线索", &err));
  expect_ok(validate_title("title", "#" VS16 "\xE2\x83\xA3 \xE3\x8A\x99" VS16 "线索", &err));
  expect_ok(validate_name("name", "G10\xEF\xB8\x80", true, &err));
  /* After a character it does not vary (a Latin letter), or after another selector, a
   * selector changes nothing on the screen: "G1-leader" with one prints as "G1-leader". */
  static const char *const unvaried[] = {"G1-leader" VS16,
                                         "G1-le\xEF\xB8\x80"
                                         "ader",
                                         "G1-lead\xF3\xA0\x84\x80"
                                         "er",
                                         "G1-le\xE1\xA0\x8B"
                                         "ader",
                                         "葛\xF3\xA0\x84\x80\xF3\xA0\x84\x80",
                                         "\xE2\x9D\xA4" VS16 VS16,
                                         "张 " VS16 "某",
                                         "1" VS16 "号",
                                         "G1\xEF\xB8\x80"};
  for (size_t i = 0; i < NELEM(unvaried); i++)
    if (validate_name("name", unvaried[i], true, &err) != VALIDATE_EINVAL)
      fail_msg("unvaried[%zu] accepted", i);
  expect_err(validate_name("name", "G1-leader" VS16 "x", true, &err), &err, "name",
             "name must not contain a variation selector (U+FE0F) but right after a character "
             "it varies (a CJK ideograph, a Mongolian letter, a symbol, a keycap), one at a "
             "time");
  /* Free text keeps them wherever they are. */
  expect_ok(validate_note_text("G1-leader" VS16, &err));
}

static void test_note_and_reason(void **state) {
  (void)state;
  validate_error_t err;
  expect_ok(validate_note_text("会商记录：\n1. 同意立案。", &err));
  expect_err(validate_note_text("", &err), &err, "text", "text is required");
  expect_err(validate_note_text(ZWSP "\n" BOM, &err), &err, "text", "text is required");
  /* Free text keeps format characters: a zero-width joiner builds an emoji sequence (U+1F468
   * ZWJ U+1F469), and Arabic or Hebrew text uses the bidirectional controls. */
  expect_ok(validate_note_text("\xF0\x9F\x91\xA8" ZWJ "\xF0\x9F\x91\xA9", &err));
  expect_ok(validate_note_text("x" RLO "y\xE2\x80\xA8z", &err));
  expect_ok(validate_summary("a" ZWSP "b", &err));
  expect_err(validate_reason("reason", "\xE2\x81\xA0\xE1\xA0\x8E", true, &err), &err, "reason",
             "reason is required");
  char *s = repeat("", "n", 65536, "");
  expect_ok(validate_note_text(s, &err));
  free(s);
  s = repeat("", "n", 65537, "");
  expect_err(validate_note_text(s, &err), &err, "text",
             "text is too long: 65537 bytes, at most 65536");
  free(s);

  expect_ok(validate_reason("reason", "符合初核条件", true, &err));
  expect_ok(validate_reason("comment", "", false, &err));
  expect_err(validate_reason("reason", " ", true, &err), &err, "reason", "reason is required");
  s = repeat("", "r", VALIDATE_REASON_MAX_BYTES, "");
  expect_ok(validate_reason("reason", s, true, &err));
  free(s);
  s = repeat("", "r", VALIDATE_REASON_MAX_BYTES + 1, "");
  expect_err(validate_reason("comment", s, false, &err), &err, "comment",
             "comment is too long: 4097 bytes, at most 4096");
  free(s);
}

static void test_uuid(void **state) {
  (void)state;
  static const char *const good[] = {
      "123e4567-e89b-12d3-a456-426614174000",
      "123E4567-E89B-12D3-A456-426614174000",
      "00000000-0000-0000-0000-000000000000",
      "ffffffff-FFFF-ffff-FFFF-ffffffffffff",
  };
  for (size_t i = 0; i < NELEM(good); i++)
    assert_true(validate_is_uuid(good[i]));
  static const char *const bad[] = {
      "",
      "123e4567e89b12d3a456426614174000",
      "123e4567-e89b-12d3-a456-42661417400",
      "123e4567-e89b-12d3-a456-4266141740000",
      "123e4567-e89b-12d3-a456_426614174000",
      "123e456-7e89b-12d3-a456-426614174000",
      "123e4567-e89b-12d3-a4564-26614174000",
      "g23e4567-e89b-12d3-a456-426614174000",
      "{123e4567-e89b-12d3-a456-426614174000}",
      " 123e4567-e89b-12d3-a456-426614174000",
      "123e4567-e89b-12d3-a456-426614174000 ",
      "123e4567-e89b-12d3-a456-42661417400\xE4",
      "--------------------------------------",
  };
  for (size_t i = 0; i < NELEM(bad); i++)
    if (validate_is_uuid(bad[i]))
      fail_msg("\"%s\" accepted", bad[i]);
  assert_false(validate_is_uuid(NULL));

  validate_error_t err;
  expect_ok(validate_request_id(good[0], &err));
  expect_err(validate_request_id("", &err), &err, "request_id", "request_id is required");
  expect_err(validate_request_id(NULL, &err), &err, "request_id", "request_id is required");
  expect_err(validate_request_id("abc", &err), &err, "request_id",
             "request_id must be a UUID (8-4-4-4-12 hexadecimal digits)");
  expect_ok(validate_uuid("request_id", "", false, &err));
  expect_ok(validate_uuid("request_id", NULL, false, &err));
  expect_err(validate_uuid("token_id", "x", false, &err), &err, "token_id",
             "token_id must be a UUID (8-4-4-4-12 hexadecimal digits)");

  char out[VALIDATE_UUID_LEN + 1];
  assert_int_equal(validate_uuid_normalize(good[3], out), 0);
  assert_string_equal(out, "ffffffff-ffff-ffff-ffff-ffffffffffff");
  assert_int_equal(validate_uuid_normalize(good[1], out), 0);
  assert_string_equal(out, good[0]);
  strcpy(out, "untouched");
  assert_int_equal(validate_uuid_normalize("nope", out), VALIDATE_EINVAL);
  assert_string_equal(out, "untouched");
}

static void test_unit_code(void **state) {
  (void)state;
  validate_error_t err;
  static const char *const good[] = {"G03", "AB", "R1", "REGION01", "A23456789012345B", "ZZ"};
  for (size_t i = 0; i < NELEM(good); i++)
    expect_ok(validate_unit_code(good[i], &err));
  const char *msg = "code must be 2 to 16 characters: an upper-case letter, then upper-case "
                    "letters or digits";
  static const char *const bad[] = {
      "A", "A23456789012345B7", "g03", "3G", "G-3", "G03 ", " G03", "Gé", "G_3", "G3a"};
  for (size_t i = 0; i < NELEM(bad); i++)
    expect_err(validate_unit_code(bad[i], &err), &err, "code", msg);
  expect_err(validate_unit_code("", &err), &err, "code", "code is required");
  expect_err(validate_unit_code(NULL, &err), &err, "code", "code is required");
}

static void test_page_size(void **state) {
  (void)state;
  static const struct {
    int32_t in, out;
  } cases[] = {{0, 50},    {1, 1},     {49, 49},   {50, 50},
               {499, 499}, {500, 500}, {501, 500}, {INT32_MAX, 500}};
  for (size_t i = 0; i < NELEM(cases); i++) {
    int32_t out = -7;
    validate_error_t err;
    expect_ok(validate_page_size(cases[i].in, &out, &err));
    assert_int_equal(out, cases[i].out);
  }
  int32_t out = -7;
  validate_error_t err;
  expect_err(validate_page_size(-1, &out, &err), &err, "page_size",
             "page_size must not be negative");
  expect_err(validate_page_size(INT32_MIN, &out, &err), &err, "page_size",
             "page_size must not be negative");
  assert_int_equal(out, -7);
}

/* A list of its own bounds (GetLedgerStats: 1,000 both): the same rules. */
static void test_page_size_of(void **state) {
  (void)state;
  static const struct {
    int32_t in, out;
  } cases[] = {{0, 1000}, {1, 1}, {999, 999}, {1000, 1000}, {1001, 1000}, {INT32_MAX, 1000}};
  for (size_t i = 0; i < NELEM(cases); i++) {
    int32_t out = -7;
    validate_error_t err;
    expect_ok(validate_page_size_of(cases[i].in, 1000, 1000, &out, &err));
    assert_int_equal(out, cases[i].out);
  }
  int32_t out = -7;
  validate_error_t err;
  expect_err(validate_page_size_of(-1, 1000, 1000, &out, &err), &err, "page_size",
             "page_size must not be negative");
  assert_int_equal(out, -7);
}

static void test_id_list(void **state) {
  validate_error_t err;
  const int64_t ok[] = {3, 1, 2}, dup[] = {3, 1, 3}, neg[] = {1, -4};
  (void)state;
  expect_ok(validate_id_list("clue_ids", ok, 3, 3, &err));
  expect_ok(validate_id_list("clue_ids", NULL, 0, 3, &err));
  expect_err(validate_id_list("clue_ids", ok, 3, 2, &err), &err, "clue_ids",
             "clue_ids has more than 2 entries");
  expect_err(validate_id_list("clue_ids", dup, 3, 3, &err), &err, "clue_ids", "clue_ids names 3 twice");
  expect_err(validate_id_list("clue_ids", neg, 2, 3, &err), &err, "clue_ids",
             "clue_ids must be positive");
}

static void test_id_enum_days(void **state) {
  (void)state;
  validate_error_t err;
  expect_ok(validate_id("clue_id", 1, &err));
  expect_ok(validate_id("clue_id", INT64_MAX, &err));
  expect_err(validate_id("clue_id", 0, &err), &err, "clue_id", "clue_id is required");
  expect_err(validate_id("case_id", -3, &err), &err, "case_id", "case_id must be positive");
  expect_err(validate_id("case_id", INT64_MIN, &err), &err, "case_id", "case_id must be positive");

  for (int v = 1; v <= 6; v++)
    expect_ok(validate_enum("source", v, 1, 6, &err));
  expect_err(validate_enum("source", 0, 1, 6, &err), &err, "source", "source is required");
  expect_err(validate_enum("source", 7, 1, 6, &err), &err, "source",
             "source has an unknown value 7");
  expect_err(validate_enum("source", -1, 1, 6, &err), &err, "source",
             "source has an unknown value -1");
  expect_ok(validate_enum("kind", 0, 0, 4, &err)); /* an optional filter */
  expect_err(validate_enum("kind", 5, 0, 4, &err), &err, "kind", "kind has an unknown value 5");

  expect_ok(validate_extend_days(1, &err));
  expect_ok(validate_extend_days(VALIDATE_EXTEND_DAYS_MAX, &err));
  expect_err(validate_extend_days(0, &err), &err, "days", "days is required");
  expect_err(validate_extend_days(-1, &err), &err, "days", "days must be between 1 and 365");
  expect_err(validate_extend_days(366, &err), &err, "days", "days must be between 1 and 365");
}

static void test_long_field_name(void **state) {
  (void)state;
  /* A message longer than the buffer is cut, never overflows. */
  char *field = repeat("", "f", 400, "");
  validate_error_t err;
  assert_int_equal(validate_text(field, "", 0, VALIDATE_REQUIRED, &err), VALIDATE_EINVAL);
  assert_int_equal(strlen(err.message), VALIDATE_MESSAGE_MAX - 1);
  assert_ptr_equal(err.field, field);
  free(field);
}

static void test_time_ms(void **state) {
  validate_error_t err;
  (void)state;

  assert_int_equal(validate_time_ms("created_from_ms", 0, &err), VALIDATE_OK);
  assert_int_equal(validate_time_ms("created_from_ms", 1, &err), VALIDATE_OK);
  assert_int_equal(validate_time_ms("created_from_ms", 1795294567820LL, &err), VALIDATE_OK);
  assert_int_equal(validate_time_ms("created_from_ms", VALIDATE_TIME_MS_MAX, &err), VALIDATE_OK);
  assert_int_equal(validate_time_ms("created_from_ms", VALIDATE_TIME_MS_MAX + 1, &err),
                   VALIDATE_EINVAL);
  assert_string_equal(err.field, "created_from_ms");
  assert_string_equal(err.message, "created_from_ms must be milliseconds since 1970-01-01 UTC, "
                                   "no later than the year 10000");
  assert_int_equal(validate_time_ms("to_ms", -1, &err), VALIDATE_EINVAL);
  assert_int_equal(validate_time_ms("to_ms", INT64_MAX, &err), VALIDATE_EINVAL);
  assert_int_equal(validate_time_ms("to_ms", INT64_MIN, NULL), VALIDATE_EINVAL);
}

/* Every violation of a request: kept in order, one per field, at most VALIDATE_VIOLATIONS_MAX
 * (the rest counted), and what passes leaves no trace. */
static void test_errors_collected(void **state) {
  validate_errors_t e;
  static const char *const fields[] = {"f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9"};
  (void)state;

  validate_errors_init(&e);
  assert_int_equal(validate_errors_result(&e), 0);
  assert_int_equal(validate_each(&e, validate_id("ok", 5, validate_slot(&e))), 0);
  assert_int_equal(e.n, 0);
  assert_int_equal(validate_each(&e, validate_title("title", "", validate_slot(&e))),
                   VALIDATE_EINVAL);
  assert_int_equal(validate_each(&e, validate_title("title", "\xe2\x80\xae", validate_slot(&e))),
                   VALIDATE_EINVAL); /* the same field again: not kept */
  validate_add(&e, "source", "source is required");
  assert_int_equal(e.n, 2);
  assert_string_equal(e.v[0].field, "title");
  assert_string_equal(e.v[0].message, "title is required");
  assert_string_equal(e.v[1].field, "source");
  assert_int_equal(validate_errors_result(&e), VALIDATE_EINVAL);
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
    (void)validate_each(&e, validate_id(fields[i], 0, validate_slot(&e)));
  assert_int_equal(e.n, VALIDATE_VIOLATIONS_MAX);
  assert_int_equal(e.dropped, 2 + sizeof(fields) / sizeof(fields[0]) - VALIDATE_VIOLATIONS_MAX);
  assert_string_equal(e.v[VALIDATE_VIOLATIONS_MAX - 1].field, "f5");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_utf8),
      cmocka_unit_test(test_utf8_chars),
      cmocka_unit_test(test_trim),
      cmocka_unit_test(test_text_flags),
      cmocka_unit_test(test_title),
      cmocka_unit_test(test_summary),
      cmocka_unit_test(test_name),
      cmocka_unit_test(test_note_and_reason),
      cmocka_unit_test(test_uuid),
      cmocka_unit_test(test_unit_code),
      cmocka_unit_test(test_page_size),
      cmocka_unit_test(test_page_size_of),
      cmocka_unit_test(test_id_enum_days),
      cmocka_unit_test(test_long_field_name),
      cmocka_unit_test(test_time_ms),
      cmocka_unit_test(test_id_list),
      cmocka_unit_test(test_errors_collected),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
