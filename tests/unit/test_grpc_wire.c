/* The gRPC message-framing decoder, grpc-timeout parsing and grpc-message encoding. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/grpc_status.h"
#include "net/grpc_wire.h"
#include "net/utf8.h"

/* Build prefix + body for a message of n bytes filled with a pattern. */
static uint8_t *frame(size_t n, uint8_t flag, size_t *total) {
  uint8_t *b = malloc(GRPC_FRAME_PREFIX + n);
  grpc_frame_prefix(b, (uint32_t)n);
  b[0] = flag;
  for (size_t i = 0; i < n; i++)
    b[GRPC_FRAME_PREFIX + i] = (uint8_t)(i * 7 + 3);
  *total = GRPC_FRAME_PREFIX + n;
  return b;
}

static void test_one_byte_chunks(void **state) {
  grpc_decoder_t d;
  size_t total;
  uint8_t *b = frame(1000, 0, &total);
  int messages = 0;
  (void)state;

  grpc_decoder_init(&d, 4096);
  for (size_t i = 0; i < total; i++) {
    grpc_message_t m;
    int got;
    long n = grpc_decoder_feed(&d, b + i, 1, &m, &got);
    assert_int_equal(n, 1);
    if (got) {
      messages++;
      assert_int_equal(i, total - 1);
      assert_int_equal(m.len, 1000);
      assert_int_equal(m.compressed, 0);
      assert_memory_equal(m.data, b + GRPC_FRAME_PREFIX, 1000);
      free(m.data);
    } else {
      assert_true(grpc_decoder_partial(&d));
    }
  }
  assert_int_equal(messages, 1);
  assert_false(grpc_decoder_partial(&d));
  grpc_decoder_free(&d);
  free(b);
}

static void test_several_in_one_chunk(void **state) {
  grpc_decoder_t d;
  size_t l1, l2, l3;
  uint8_t *a = frame(10, 0, &l1), *b = frame(0, 0, &l2), *c = frame(300, 0, &l3);
  uint8_t buf[1024];
  size_t len = 0, off = 0;
  size_t want[] = {10, 0, 300};
  int k = 0;
  (void)state;

  memcpy(buf, a, l1), len += l1;
  memcpy(buf + len, b, l2), len += l2;
  memcpy(buf + len, c, l3), len += l3;
  grpc_decoder_init(&d, 4096);
  while (off < len) {
    grpc_message_t m;
    int got;
    long n = grpc_decoder_feed(&d, buf + off, len - off, &m, &got);
    assert_true(n > 0 || (n == 0 && got));
    off += (size_t)n;
    if (got) {
      assert_true(k < 3);
      assert_int_equal(m.len, want[k]);
      k++;
      free(m.data);
    }
  }
  assert_int_equal(k, 3);
  assert_false(grpc_decoder_partial(&d));
  grpc_decoder_free(&d);
  free(a), free(b), free(c);
}

static void test_truncated_prefix(void **state) {
  grpc_decoder_t d;
  size_t total;
  uint8_t *b = frame(20, 0, &total);
  grpc_message_t m;
  int got;
  (void)state;

  grpc_decoder_init(&d, 4096);
  assert_int_equal(grpc_decoder_feed(&d, b, 3, &m, &got), 3);
  assert_false(got);
  assert_true(grpc_decoder_partial(&d));
  assert_int_equal(d.state, GRPC_DEC_PREFIX);
  assert_int_equal(d.prefix_have, 3);
  /* Body cut short too. */
  assert_int_equal(grpc_decoder_feed(&d, b + 3, 10, &m, &got), 10);
  assert_false(got);
  assert_int_equal(d.state, GRPC_DEC_BODY);
  assert_int_equal(d.have, 8);
  grpc_decoder_free(&d);
  free(b);
}

static void test_length_over_limit(void **state) {
  grpc_decoder_t d;
  uint8_t p[GRPC_FRAME_PREFIX];
  grpc_message_t m;
  int got;
  (void)state;

  grpc_decoder_init(&d, 4096);
  grpc_frame_prefix(p, 4097);
  assert_int_equal(grpc_decoder_feed(&d, p, sizeof(p), &m, &got), GRPC_WIRE_ETOOBIG);
  assert_int_equal(d.state, GRPC_DEC_FAILED);
  assert_int_equal(d.len, 4097);
  /* A failed decoder accepts nothing more. */
  assert_true(grpc_decoder_feed(&d, p, 1, &m, &got) < 0);
  grpc_decoder_free(&d);

  grpc_decoder_init(&d, 4096);
  grpc_frame_prefix(p, 4096); /* exactly at the limit is fine */
  assert_int_equal(grpc_decoder_feed(&d, p, sizeof(p), &m, &got), 5);
  grpc_decoder_free(&d);

  memset(p, 0xff, sizeof(p));
  p[0] = 0;
  /* 4 GiB declared: refused by the limit, never allocated. */
  grpc_decoder_init(&d, 4u << 20);
  assert_int_equal(grpc_decoder_feed(&d, p, sizeof(p), &m, &got), GRPC_WIRE_ETOOBIG);
  grpc_decoder_free(&d);
}

/* Memory follows the bytes that arrive, not the length a peer announces. */
static void test_buffer_grows_with_data(void **state) {
  grpc_decoder_t d;
  uint8_t p[GRPC_FRAME_PREFIX], chunk[10000];
  grpc_message_t m;
  int got;
  size_t fed = 0;
  (void)state;

  grpc_decoder_init(&d, 4u << 20);
  grpc_frame_prefix(p, 3u << 20);
  assert_int_equal(grpc_decoder_feed(&d, p, sizeof(p), &m, &got), 5);
  assert_true(d.cap <= GRPC_DEC_INITIAL);
  for (size_t i = 0; i < sizeof(chunk); i++)
    chunk[i] = (uint8_t)i;
  while (fed < (3u << 20)) {
    size_t n = (3u << 20) - fed < sizeof(chunk) ? (3u << 20) - fed : sizeof(chunk);
    assert_int_equal(grpc_decoder_feed(&d, chunk, n, &m, &got), (long)n);
    fed += n;
    assert_true(d.cap <= 2 * fed + GRPC_DEC_INITIAL || got);
  }
  assert_true(got);
  assert_int_equal(m.len, 3u << 20);
  assert_memory_equal(m.data + 10000, chunk, 100);
  free(m.data);
  grpc_decoder_free(&d);
}

static void test_bad_and_compressed_flag(void **state) {
  grpc_decoder_t d;
  size_t total;
  uint8_t *b = frame(4, 2, &total);
  grpc_message_t m;
  int got;
  (void)state;

  grpc_decoder_init(&d, 4096);
  assert_int_equal(grpc_decoder_feed(&d, b, total, &m, &got), GRPC_WIRE_EBADFLAG);
  grpc_decoder_free(&d);
  b[0] = 1;
  grpc_decoder_init(&d, 4096);
  assert_int_equal(grpc_decoder_feed(&d, b, total, &m, &got), (long)total);
  assert_true(got);
  assert_int_equal(m.compressed, 1);
  free(m.data);
  grpc_decoder_free(&d);
  free(b);
}

static void test_timeout_units(void **state) {
  static const struct {
    const char *v;
    uint64_t ms;
  } ok[] = {
      {"1H", 3600000},     {"2M", 120000}, {"3S", 3000}, {"250m", 250},      {"1500u", 2},
      {"1000u", 1},        {"1u", 1},      {"1n", 1},    {"2000000n", 2},    {"0m", 0},
      {"99999999S", 99999999000ULL},       {"00000001m", 1},
  };
  static const char *const bad[] = {"",   "m",  "1",   "1x",  "-1S", "1.5S", "123456789S",
                                    " 1S", "1S ", "1 S", "S1",  "1mm", "0x1S"};
  uint64_t ms;
  (void)state;

  for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
    assert_int_equal(grpc_timeout_parse(ok[i].v, strlen(ok[i].v), &ms), 0);
    assert_int_equal(ms, ok[i].ms);
  }
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(grpc_timeout_parse(bad[i], strlen(bad[i]), &ms), GRPC_WIRE_EINVAL);
}

static void test_timeout_format_roundtrip(void **state) {
  uint64_t values[] = {1, 999, 1000, 99999999, 100000000, 3600000ULL * 1000};
  char buf[32];
  uint64_t ms;
  (void)state;

  for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
    grpc_timeout_format(values[i], buf, sizeof(buf));
    assert_int_equal(grpc_timeout_parse(buf, strlen(buf), &ms), 0);
    assert_true(ms >= values[i]); /* never shorter than asked */
  }
  grpc_timeout_format(250, buf, sizeof(buf));
  assert_string_equal(buf, "250m");
}

static void test_message_encoding(void **state) {
  const char *zh = "线索不存在: clue 5";
  char *e, *d;
  (void)state;

  e = grpc_message_encode("plain text ok", 13);
  assert_string_equal(e, "plain text ok");
  free(e);
  e = grpc_message_encode("100% sure", 9);
  assert_string_equal(e, "100%25 sure");
  free(e);
  e = grpc_message_encode("a\nb\x7f", 4);
  assert_string_equal(e, "a%0Ab%7F");
  free(e);
  e = grpc_message_encode(zh, strlen(zh));
  assert_non_null(strstr(e, "%E7%BA%BF")); /* 线 */
  for (const char *p = e; *p; p++)
    assert_true(*p >= 0x20 && *p <= 0x7e);
  d = grpc_message_decode(e, strlen(e));
  assert_string_equal(d, zh);
  free(d);
  free(e);
  /* Malformed escapes are kept as they are. */
  d = grpc_message_decode("50%", 3);
  assert_string_equal(d, "50%");
  free(d);
  d = grpc_message_decode("%zz%4", 5);
  assert_string_equal(d, "%zz%4");
  free(d);
  d = grpc_message_decode("%41%42", 6);
  assert_string_equal(d, "AB");
  free(d);
}

/* A text cut to fit a buffer (a principal's name, a database error, a status message) ends
 * with a whole character, so that a proto3 string or a grpc-message carrying it is UTF-8. */
static void test_utf8_cut_between_characters(void **state) {
  const char *s = "a\xE7\xBA\xBF\xF0\x9F\x98\x80"; /* a, U+7EBF (3 bytes), U+1F600 (4 bytes) */
  const size_t whole[] = {0, 1, 1, 1, 4, 4, 4, 4, 8};
  char buf[8];
  (void)state;

  for (size_t n = 0; n <= 8; n++)
    assert_int_equal(clue__utf8_whole(s, n), whole[n]);
  /* Bytes that are not a cut sequence are left alone. */
  assert_int_equal(clue__utf8_whole("ab\x80\x80\x80\x80", 6), 6);
  assert_int_equal(clue__utf8_whole("\x80", 1), 1);
  assert_int_equal(clue__utf8_copy(buf, sizeof(buf), s), 4);
  assert_string_equal(buf, "a\xE7\xBA\xBF");
  assert_int_equal(clue__utf8_copy(buf, 5, s), 4);
  assert_int_equal(clue__utf8_copy(buf, 4, s), 1);
  assert_string_equal(buf, "a");
  assert_int_equal(clue__utf8_copy(buf, 1, s), 0);
  assert_string_equal(buf, "");
  assert_int_equal(clue__utf8_copy(buf, sizeof(buf), "short"), 5);
  assert_string_equal(buf, "short");
}

/* Header values as numbers: digits only, 1 to 9 of them, at most max. */
/* One digit parser for percent escapes, web paths, hashes and WAL positions. */
static void test_hex_digit(void **state) {
  static const char digits[] = "0123456789abcdef", upper[] = "ABCDEF";
  /* The neighbours of each range, and bytes above ASCII. */
  static const char bad[] = {'/', ':', '@', 'G', '`', 'g', ' ', '\0', '-', 'x', (char)0xC0, (char)0xFF};
  (void)state;
  for (int i = 0; i < 16; i++)
    assert_int_equal(grpc_hex_digit(digits[i]), i);
  for (int i = 0; i < 6; i++)
    assert_int_equal(grpc_hex_digit(upper[i]), 10 + i);
  for (size_t i = 0; i < sizeof(bad); i++)
    assert_int_equal(grpc_hex_digit(bad[i]), -1);
}

static void test_parse_uint(void **state) {
  (void)state;
  assert_int_equal(grpc_parse_uint((const uint8_t *)"200", 3, 999), 200);
  assert_int_equal(grpc_parse_uint((const uint8_t *)"0", 1, 999), 0);
  assert_int_equal(grpc_parse_uint((const uint8_t *)"999", 3, 999), 999);
  assert_int_equal(grpc_parse_uint((const uint8_t *)"1000", 4, 999), -1);
  assert_int_equal(grpc_parse_uint((const uint8_t *)"", 0, 999), -1);
  assert_int_equal(grpc_parse_uint((const uint8_t *)"2x0", 3, 999), -1);
  assert_int_equal(grpc_parse_uint((const uint8_t *)"-1", 2, 999), -1);
  assert_int_equal(grpc_parse_uint((const uint8_t *)"123456789", 9, 1000000000), 123456789);
  assert_int_equal(grpc_parse_uint((const uint8_t *)"1234567890", 10, 2000000000), -1);
  assert_int_equal(grpc_parse_uint((const uint8_t *)"14 ", 2, 999), 14); /* only len bytes */
}

static void test_status_names(void **state) {
  (void)state;
  assert_string_equal(grpc_status_name(GRPC_OK), "OK");
  assert_string_equal(grpc_status_name(GRPC_UNAUTHENTICATED), "UNAUTHENTICATED");
  assert_string_equal(grpc_status_name(GRPC_RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
  assert_string_equal(grpc_status_name(99), "UNKNOWN");
  for (int c = 0; c <= 16; c++)
    assert_int_equal(grpc_status_from_name(grpc_status_name(c)), c);
  assert_int_equal(grpc_status_from_name("NOPE"), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_byte_chunks),
      cmocka_unit_test(test_several_in_one_chunk),
      cmocka_unit_test(test_truncated_prefix),
      cmocka_unit_test(test_length_over_limit),
      cmocka_unit_test(test_bad_and_compressed_flag),
      cmocka_unit_test(test_buffer_grows_with_data),
      cmocka_unit_test(test_timeout_units),
      cmocka_unit_test(test_timeout_format_roundtrip),
      cmocka_unit_test(test_message_encoding),
      cmocka_unit_test(test_status_names),
      cmocka_unit_test(test_parse_uint),
      cmocka_unit_test(test_hex_digit),
      cmocka_unit_test(test_utf8_cut_between_characters),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
