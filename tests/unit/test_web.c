/* net/web.c: gRPC-Web content types, base64 in padded chunks, the trailer frame, CORS
 * lists, request paths made safe, content types and hashed asset names. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/web.h"

static web_proto_t ct(const char *s) {
  return web_content_type((const uint8_t *)s, strlen(s));
}

static void test_content_types(void **state) {
  (void)state;
  assert_int_equal(ct("application/grpc"), WEB_PROTO_GRPC);
  assert_int_equal(ct("application/grpc+proto"), WEB_PROTO_GRPC);
  assert_int_equal(ct("application/grpc-web"), WEB_PROTO_WEB);
  assert_int_equal(ct("application/grpc-web+proto"), WEB_PROTO_WEB);
  assert_int_equal(ct("Application/GRPC-Web+Proto; charset=x"), WEB_PROTO_WEB);
  assert_int_equal(ct("application/grpc-web-text"), WEB_PROTO_TEXT);
  assert_int_equal(ct("application/grpc-web-text+proto"), WEB_PROTO_TEXT);
  assert_int_equal(ct("application/grpc-web+json"), WEB_PROTO_NONE);
  assert_int_equal(ct("application/grpc+json"), WEB_PROTO_NONE);
  assert_int_equal(ct("application/grpc-webx"), WEB_PROTO_NONE);
  assert_int_equal(ct("text/plain"), WEB_PROTO_NONE);
  assert_int_equal(ct(""), WEB_PROTO_NONE);
  assert_int_equal(web_content_type(NULL, 0), WEB_PROTO_NONE);
}

/* Every length from 0 to 300, encoded whole, then decoded fed in every split. */
static void test_base64_round_trip(void **state) {
  uint8_t in[300], out[400];
  char enc[404];
  (void)state;

  for (size_t i = 0; i < sizeof(in); i++)
    in[i] = (uint8_t)(i * 37 + 11);
  for (size_t n = 0; n <= sizeof(in); n += (n < 10 ? 1 : 17)) {
    size_t elen = web_b64_encode(in, n, enc);
    assert_int_equal(elen, 4 * ((n + 2) / 3));
    for (size_t split = 0; split <= elen; split += (elen > 40 ? 7 : 1)) {
      web_b64_t d = {0};
      long a = web_b64_decode(&d, (const uint8_t *)enc, split, out);
      long b;
      assert_true(a >= 0);
      b = web_b64_decode(&d, (const uint8_t *)enc + split, elen - split, out + a);
      assert_true(b >= 0);
      assert_int_equal((size_t)(a + b), n);
      assert_memory_equal(out, in, n);
      assert_false(web_b64_partial(&d));
    }
  }
}

static void test_base64_chunks_and_errors(void **state) {
  /* "a" "bc" "def" as three padded chunks, concatenated. */
  const char *s = "YQ==YmM=ZGVm";
  uint8_t out[32];
  web_b64_t d = {0};
  (void)state;

  assert_int_equal(web_b64_decode(&d, (const uint8_t *)s, strlen(s), out), 6);
  assert_memory_equal(out, "abcdef", 6);
  memset(&d, 0, sizeof(d));
  assert_int_equal(web_b64_decode(&d, (const uint8_t *)"YQ=a", 4, out), -1); /* pad then data */
  memset(&d, 0, sizeof(d));
  assert_int_equal(web_b64_decode(&d, (const uint8_t *)"Y===", 4, out), -1);
  memset(&d, 0, sizeof(d));
  assert_int_equal(web_b64_decode(&d, (const uint8_t *)"!!!!", 4, out), -1);
  memset(&d, 0, sizeof(d));
  assert_int_equal(web_b64_decode(&d, (const uint8_t *)"YWJ", 3, out), 0);
  assert_true(web_b64_partial(&d));
}

static void test_trailer_frame(void **state) {
  uint8_t *b;
  size_t n;
  (void)state;

  assert_int_equal(web_trailer_frame(5, "no%20such", "CAU", &b, &n), 0);
  assert_int_equal(b[0], 0x80);
  assert_int_equal(((size_t)b[1] << 24 | (size_t)b[2] << 16 | (size_t)b[3] << 8 | b[4]), n - 5);
  assert_int_equal(
      n - 5,
      strlen("grpc-status: 5\r\ngrpc-message: no%20such\r\ngrpc-status-details-bin: CAU\r\n"));
  assert_memory_equal(
      b + 5, "grpc-status: 5\r\ngrpc-message: no%20such\r\ngrpc-status-details-bin: CAU\r\n",
      n - 5);
  free(b);
  assert_int_equal(web_trailer_frame(0, "", NULL, &b, &n), 0);
  assert_int_equal(n, 5 + strlen("grpc-status: 0\r\n"));
  free(b);
}

static void test_origins_and_tokens(void **state) {
  const char *o[] = {"https://a.example", "http://localhost:5173"};
  (void)state;
  assert_int_equal(web_origin_find(o, 2, (const uint8_t *)"http://localhost:5173", 21), 1);
  assert_int_equal(web_origin_find(o, 2, (const uint8_t *)"https://a.example/", 18), -1);
  assert_int_equal(web_origin_find(o, 2, (const uint8_t *)"https://a.exampl", 16), -1);
  assert_int_equal(web_origin_find(o, 0, (const uint8_t *)"https://a.example", 17), -1);
  assert_true(web_token_list_ok((const uint8_t *)"authorization, content-type,x-grpc-web", 38));
  assert_false(web_token_list_ok((const uint8_t *)"a\r\nb", 4));
  assert_false(web_token_list_ok((const uint8_t *)"a:b", 3));
}

static void test_paths(void **state) {
  char out[64];
  static const char *bad[] = {
      "",        "index.html",
      "/..",     "/../etc/passwd",
      "/a/../b", "/./a",
      "/a/.",    "/%2e%2e/x",
      "/a%2fb",  "/a%2Fb",
      "/a%5cb",  "/a\\b",
      "/a%00b",  "/%zz",
      "/%4",     "//a",
      "/a//b",   "/a/",
      "/a\x01",  "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(web_path_clean(bad[i], out, sizeof(out)), -1);
  assert_int_equal(web_path_clean("/", out, sizeof(out)), 0);
  assert_string_equal(out, "");
  assert_int_equal(web_path_clean("/assets/app-1.js?v=2#x", out, sizeof(out)), 0);
  assert_string_equal(out, "assets/app-1.js");
  assert_int_equal(web_path_clean("/a%20b/%E4%B8%AD.txt", out, sizeof(out)), 0);
  assert_string_equal(out, "a b/\xe4\xb8\xad.txt");
  assert_int_equal(web_path_clean("/.well-known/x", out, sizeof(out)), 0);
  assert_string_equal(out, ".well-known/x");
  /* Clean, but hidden: not served. */
  assert_true(web_hidden(".env"));
  assert_true(web_hidden("a/.git/config"));
  assert_true(web_hidden("assets/.x.js.swp"));
  assert_true(web_hidden(".well-knownx/y"));
  assert_true(web_hidden(".well-known/.secret"));
  assert_false(web_hidden(".well-known"));
  assert_false(web_hidden(".well-known/security.txt"));
  assert_false(web_hidden("assets/app-1.js"));
  assert_false(web_hidden("a.b/c.d"));
  assert_false(web_hidden(""));
}

static void test_mime_and_hashes(void **state) {
  (void)state;
  assert_string_equal(web_mime("index.html"), "text/html; charset=utf-8");
  assert_string_equal(web_mime("assets/a-B3xk9aQ2.js"), "text/javascript; charset=utf-8");
  assert_string_equal(web_mime("x.CSS"), "text/css; charset=utf-8");
  assert_string_equal(web_mime("a/b.svg"), "image/svg+xml");
  assert_string_equal(web_mime("font.woff2"), "font/woff2");
  assert_string_equal(web_mime("noext"), "application/octet-stream");
  assert_string_equal(web_mime("a.unknown"), "application/octet-stream");
  assert_true(web_hashed_asset("assets/index-B3xk9aQ2.js"));
  assert_true(web_hashed_asset("app.5e1f0a9c.css"));
  assert_true(web_hashed_asset("assets/chunk-Zx_91aB7c.js"));
  assert_false(web_hashed_asset("index.html"));
  assert_false(web_hashed_asset("assets/index-settings.js")); /* a word, not a hash */
  assert_false(web_hashed_asset("assets/logo.svg"));
  assert_false(web_hashed_asset("B3xk9aQ2.js")); /* nothing before the hash */
  assert_false(web_hashed_asset("a-B3xk9a.js")); /* too short */
  assert_true(web_has_extension("a/b.js"));
  assert_false(web_has_extension("a.b/c"));
  assert_false(web_has_extension(".hidden"));
}

static void test_etag_match(void **state) {
  (void)state;
  assert_true(web_etag_match("\"a-1.2\"", "\"a-1.2\""));
  assert_true(web_etag_match("W/\"a-1.2\"", "\"a-1.2\""));
  assert_true(web_etag_match("\"x\", \"a-1.2\"", "\"a-1.2\""));
  assert_true(web_etag_match("*", "\"a-1.2\""));
  assert_false(web_etag_match("\"a-1.20\"", "\"a-1.2\""));
  assert_false(web_etag_match("\"a-1\"", "\"a-1.2\""));
  assert_false(web_etag_match("", "\"a-1.2\""));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_content_types),
      cmocka_unit_test(test_base64_round_trip),
      cmocka_unit_test(test_base64_chunks_and_errors),
      cmocka_unit_test(test_trailer_frame),
      cmocka_unit_test(test_origins_and_tokens),
      cmocka_unit_test(test_paths),
      cmocka_unit_test(test_mime_and_hashes),
      cmocka_unit_test(test_etag_match),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
