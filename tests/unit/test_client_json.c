/* clue_to_json(): protobuf-c messages rendered as JSON from their descriptors. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clue/client.h"
#include "clue/v1/admin.pb-c.h"
#include "clue/v1/audit.pb-c.h"
#include "clue/v1/common.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

static void expect_json(const ProtobufCMessage *m, int flags, const char *want) {
  char *got = NULL;

  assert_int_equal(clue_to_json(m, flags, &got), 0);
  assert_non_null(got);
  assert_string_equal(got, want);
  free(got);
}

static void test_empty_and_defaults(void **state) {
  Clue__V1__ListUnitsResponse empty = CLUE__V1__LIST_UNITS_RESPONSE__INIT;
  Clue__V1__User user = CLUE__V1__USER__INIT;

  (void)state;
  expect_json(&empty.base, 0, "{\n  \"units\": [],\n  \"next_page_token\": \"\"\n}");
  expect_json(&empty.base, CLUE_JSON_COMPACT, "{\"units\":[],\"next_page_token\":\"\"}");
  /* proto3 scalars are always written, with their defaults */
  expect_json(&user.base, CLUE_JSON_COMPACT,
              "{\"id\":0,\"unit_id\":0,\"name\":\"\",\"role\":\"ROLE_UNSPECIFIED\","
              "\"disabled\":false,\"created_at_ms\":0,\"unit_code\":\"\",\"unit_name\":\"\"}");
}

static void test_nested_repeated_pretty(void **state) {
  Clue__V1__ListUnitsResponse resp = CLUE__V1__LIST_UNITS_RESPONSE__INIT;
  Clue__V1__Unit u = CLUE__V1__UNIT__INIT;
  Clue__V1__Unit *units[] = {&u};
  char *hosts[] = {"住建局", "交通局"};

  (void)state;
  u.id = INT64_MAX;
  u.kind = CLUE__V1__UNIT_KIND__UNIT_KIND_GROUP;
  u.code = "G03";
  u.name = "第三派驻纪检监察组";
  u.n_host_units = 2;
  u.host_units = hosts;
  u.created_at_ms = -1;
  resp.n_units = 1;
  resp.units = units;
  expect_json(&resp.base, 0,
              "{\n"
              "  \"units\": [\n"
              "    {\n"
              "      \"id\": 9223372036854775807,\n"
              "      \"kind\": \"UNIT_KIND_GROUP\",\n"
              "      \"code\": \"G03\",\n"
              "      \"name\": \"第三派驻纪检监察组\",\n"
              "      \"liaison_room_id\": 0,\n"
              "      \"host_units\": [\n"
              "        \"住建局\",\n"
              "        \"交通局\"\n"
              "      ],\n"
              "      \"created_at_ms\": -1,\n"
              "      \"liaison_room_code\": \"\"\n"
              "    }\n"
              "  ],\n"
              "  \"next_page_token\": \"\"\n"
              "}");
}

static void test_string_escapes(void **state) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;

  (void)state;
  req.service = "q\"b\\s/\n\r\t\b\f\x01\x1f\x7f é";
  expect_json(&req.base, CLUE_JSON_COMPACT,
              "{\"service\":\"q\\\"b\\\\s/\\n\\r\\t\\b\\f\\u0001\\u001f\\u007f é\"}");
  /* What would reorder or control a terminal is escaped too: U+202E, U+2066..U+2069, U+200F,
   * U+061C, U+2028, U+009B (a CSI); other characters, a zero-width joiner included, are not. */
  req.service = "a\xE2\x80\xAE"
                "b\xE2\x81\xA6"
                "c\xE2\x81\xA9\xE2\x80\x8F\xD8\x9C\xE2\x80\xA8\xC2\x9B"
                "d\xE2\x80\x8D\xE2\x80\xAF中";
  expect_json(&req.base, CLUE_JSON_COMPACT,
              "{\"service\":\"a\\u202eb\\u2066c\\u2069\\u200f\\u061c\\u2028\\u009bd"
              "\xE2\x80\x8D\xE2\x80\xAF中\"}");
}

static void test_invalid_utf8_replaced(void **state) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;

  (void)state;
  /* stray continuation, truncated sequence, overlong '/', surrogate, beyond U+10FFFF */
  req.service = "a\x80"
                "b\xe4\xb8"
                "c\xc0\xaf"
                "d\xed\xa0\x80"
                "e\xf4\x90\x80\x80"
                "f";
  expect_json(&req.base, CLUE_JSON_COMPACT,
              "{\"service\":\"a\\ufffdb\\ufffd\\ufffdc\\ufffd\\ufffdd\\ufffd\\ufffd\\ufffde"
              "\\ufffd\\ufffd\\ufffd\\ufffdf\"}");
  /* four-byte sequences that are valid pass through */
  req.service = "\xf0\x9f\x98\x80";
  expect_json(&req.base, CLUE_JSON_COMPACT, "{\"service\":\"\xf0\x9f\x98\x80\"}");
}

static void test_enums(void **state) {
  Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

  (void)state;
  r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
  expect_json(&r.base, CLUE_JSON_COMPACT, "{\"status\":\"NOT_SERVING\"}");
  r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)99; /* unknown: the number */
  expect_json(&r.base, CLUE_JSON_COMPACT, "{\"status\":99}");
}

static void test_bytes_base64(void **state) {
  Clue__V1__AuditEvent ev = CLUE__V1__AUDIT_EVENT__INIT;
  uint8_t h[] = {0xfb, 0xff, 0x00, 'a'};
  char *got = NULL;

  (void)state;
  ev.prev_hash.data = h;
  ev.prev_hash.len = 1;
  ev.hash.data = h;
  ev.hash.len = 4;
  assert_int_equal(clue_to_json(&ev.base, CLUE_JSON_COMPACT, &got), 0);
  assert_non_null(strstr(got, "\"prev_hash\":\"+w==\",\"hash\":\"+/8AYQ==\""));
  assert_non_null(strstr(got, "\"from_state\":\"CLUE_STATE_UNSPECIFIED\""));
  free(got);
  ev.prev_hash.len = 0;
  ev.hash.len = 2;
  assert_int_equal(clue_to_json(&ev.base, CLUE_JSON_COMPACT, &got), 0);
  assert_non_null(strstr(got, "\"prev_hash\":\"\",\"hash\":\"+/8=\""));
  free(got);
}

static void test_submessage_null_and_set(void **state) {
  Clue__V1__VerifyAuditChainResponse r = CLUE__V1__VERIFY_AUDIT_CHAIN_RESPONSE__INIT;
  Clue__V1__BrokenLink b = CLUE__V1__BROKEN_LINK__INIT;

  (void)state;
  r.ok = 1;
  r.events_checked = 12;
  expect_json(&r.base, CLUE_JSON_COMPACT,
              "{\"ok\":true,\"subjects_checked\":0,\"events_checked\":12,\"broken\":null,"
              "\"checkpoint_size\":0,\"tree_problem\":\"\"}");
  r.ok = 0;
  b.subject_type = "clue";
  b.subject_id = 3;
  b.problem = CLUE__V1__BROKEN_LINK__PROBLEM__PROBLEM_REORDERED;
  r.broken = &b;
  expect_json(&r.base, 0,
              "{\n"
              "  \"ok\": false,\n"
              "  \"subjects_checked\": 0,\n"
              "  \"events_checked\": 12,\n"
              "  \"broken\": {\n"
              "    \"subject_type\": \"clue\",\n"
              "    \"subject_id\": 3,\n"
              "    \"seq\": 0,\n"
              "    \"problem\": \"PROBLEM_REORDERED\",\n"
              "    \"detail\": \"\"\n"
              "  },\n"
              "  \"checkpoint_size\": 0,\n"
              "  \"tree_problem\": \"\"\n"
              "}");
}

static void test_bad_arguments(void **state) {
  Clue__V1__User user = CLUE__V1__USER__INIT;
  char *out = (char *)"untouched";

  (void)state;
  assert_int_equal(clue_to_json(NULL, 0, &out), CLUE_EINVAL);
  assert_int_equal(clue_to_json(&user.base, 0, NULL), CLUE_EINVAL);
  assert_string_equal(out, "untouched");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_and_defaults),
      cmocka_unit_test(test_nested_repeated_pretty),
      cmocka_unit_test(test_string_escapes),
      cmocka_unit_test(test_invalid_utf8_replaced),
      cmocka_unit_test(test_enums),
      cmocka_unit_test(test_bytes_base64),
      cmocka_unit_test(test_submessage_null_and_set),
      cmocka_unit_test(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
