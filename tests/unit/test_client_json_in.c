/* clue_from_json() and clue_from_json_array(): strict JSON read into protobuf-c messages,
 * with the line and column of every mistake. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../client/lib/mem.h" /* test hooks: allocation failure injection */
#include "clue/client.h"
#include "clue/v1/admin.pb-c.h"
#include "clue/v1/audit.pb-c.h"
#include "clue/v1/clue.pb-c.h"
#include "clue/v1/stats.pb-c.h"

#define SUBMIT (&clue__v1__submit_clue_request__descriptor)

static Clue__V1__SubmitClueRequest *read_submit(const char *text) {
  ProtobufCMessage *m = NULL;
  clue_json_error_t err;
  int rv = clue_from_json(text, strlen(text), SUBMIT, &m, &err);

  if (rv != 0)
    fail_msg("%d:%d: %s", err.line, err.column, err.message);
  return (Clue__V1__SubmitClueRequest *)m;
}

/* Reading text fails with CLUE_EJSON at line:col, with a message containing want. */
static void expect_error(const ProtobufCMessageDescriptor *d, const char *text, int line, int col,
                         const char *want) {
  ProtobufCMessage *m = (ProtobufCMessage *)(uintptr_t)1;
  clue_json_error_t err;
  int rv = clue_from_json(text, strlen(text), d, &m, &err);

  if (rv != CLUE_EJSON || err.line != line || err.column != col ||
      strstr(err.message, want) == NULL)
    fail_msg("%s\n  got %d at %d:%d: %s\n  want %d:%d: ...%s...", text, rv, err.line, err.column,
             err.message, line, col, want);
  assert_ptr_equal(m, (ProtobufCMessage *)(uintptr_t)1); /* untouched on failure */
}

static void test_submit_request(void **state) {
  Clue__V1__SubmitClueRequest *r;

  (void)state;
  r = read_submit("{\n"
                  "  \"title\": \"某局长违规收受礼金\",\n"
                  "  \"summary\": \"line one\\nline \\\"two\\\" \\u00e9\\ud83d\\ude00\",\n"
                  "  \"source\": \"LETTER_VISIT_REPORT\",\n"
                  "  \"subject\": {\"name\": \"张三\", \"rank_level\": \"正处\", "
                  "\"is_top_leader\": true},\n"
                  "  \"host_unit\": \"市发展改革委\",\n"
                  "  \"violation_categories\": [\"违反廉洁纪律\", \"违反工作纪律\"],\n"
                  "  \"reporter\": null,\n"
                  "  \"request_id\": \"7a1f0f4e-7f6b-4d5e-9c1a-2b3c4d5e6f70\"\n"
                  "}\n");
  assert_string_equal(r->title, "某局长违规收受礼金");
  assert_string_equal(r->summary, "line one\nline \"two\" é😀");
  assert_int_equal(r->source, CLUE__V1__SOURCE_CHANNEL__SOURCE_CHANNEL_LETTER_VISIT_REPORT);
  assert_non_null(r->subject);
  assert_string_equal(r->subject->name, "张三");
  assert_string_equal(r->subject->position, "");
  assert_string_equal(r->subject->rank_level, "正处");
  assert_true(r->subject->is_top_leader);
  assert_int_equal(r->n_violation_categories, 2);
  assert_string_equal(r->violation_categories[1], "违反工作纪律");
  assert_null(r->reporter);
  assert_string_equal(r->request_id, "7a1f0f4e-7f6b-4d5e-9c1a-2b3c4d5e6f70");
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* lowerCamelCase names, short and numeric enum names, a byte order mark, empty arrays */
  r = read_submit("\xEF\xBB\xBF{\"hostUnit\": \"h\", \"violationCategories\": [], \"source\": "
                  "\"audit\", \"subject\": {\"isTopLeader\": false}}");
  assert_string_equal(r->host_unit, "h");
  assert_int_equal(r->n_violation_categories, 0);
  assert_int_equal(r->source, CLUE__V1__SOURCE_CHANNEL__SOURCE_CHANNEL_AUDIT);
  assert_false(r->subject->is_top_leader);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  r = read_submit("{\"source\": 4}");
  assert_int_equal(r->source, CLUE__V1__SOURCE_CHANNEL__SOURCE_CHANNEL_SUPERIOR_ASSIGNED);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  r = read_submit(" {} ");
  assert_string_equal(r->title, "");
  assert_null(r->subject);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_integers(void **state) {
  ProtobufCMessage *m = NULL;
  Clue__V1__GetStatisticsRequest *s;
  Clue__V1__ListCluesRequest *l;
  clue_json_error_t err;
  const char *t1 = "{\"from_ms\": -9223372036854775808, \"to_ms\": \"9223372036854775807\", "
                   "\"unit_ids\": [1, 2, \"3\"]}";
  const char *t2 = "{\"page_size\": 2147483647, \"states\": [\"FILED\", 1], "
                   "\"overdue_only\": true}";

  (void)state;
  assert_int_equal(
      clue_from_json(t1, strlen(t1), &clue__v1__get_statistics_request__descriptor, &m, &err), 0);
  s = (Clue__V1__GetStatisticsRequest *)m;
  assert_true(s->from_ms == INT64_MIN && s->to_ms == INT64_MAX);
  assert_int_equal(s->n_unit_ids, 3);
  assert_int_equal(s->unit_ids[2], 3);
  protobuf_c_message_free_unpacked(m, NULL);
  assert_int_equal(
      clue_from_json(t2, strlen(t2), &clue__v1__list_clues_request__descriptor, &m, &err), 0);
  l = (Clue__V1__ListCluesRequest *)m;
  assert_int_equal(l->page_size, INT32_MAX);
  assert_int_equal(l->n_states, 2);
  assert_int_equal(l->states[0], CLUE__V1__CLUE_STATE__CLUE_STATE_FILED);
  assert_int_equal(l->states[1], CLUE__V1__CLUE_STATE__CLUE_STATE_ACCEPTED);
  assert_true(l->overdue_only);
  protobuf_c_message_free_unpacked(m, NULL);

  expect_error(&clue__v1__list_clues_request__descriptor, "{\"page_size\": 2147483648}", 1, 15,
               "out of range");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"page_size\": 1.5}", 1, 15,
               "must be an integer, not '1.5'");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"page_size\": 1e2}", 1, 15,
               "must be an integer");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"page_size\": \"\"}", 1, 15,
               "must be an integer");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"page_size\": true}", 1, 15,
               "must be an integer, not a boolean");
  expect_error(&clue__v1__get_statistics_request__descriptor, "{\"from_ms\": 9223372036854775808}",
               1, 13, "out of range");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"overdue_only\": 1}", 1, 18,
               "must be true or false");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"states\": [\"FILED\", 9]}", 1, 22,
               "'9' is not a ClueState");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"states\": \"FILED\"}", 1, 12,
               "must be an array");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"states\": [null]}", 1, 13,
               "null in an array");
}

static void test_mapping_errors(void **state) {
  (void)state;
  expect_error(SUBMIT, "{\n  \"title\": \"t\",\n  \"titel\": \"t\"\n}", 3, 3,
               "unknown field 'titel' in SubmitClueRequest (fields: title, summary");
  expect_error(SUBMIT, "{\"title\": \"a\",\n \"title\": \"b\"}", 2, 2,
               "field 'title' given twice (first at line 1, column 2)");
  expect_error(SUBMIT, "{\"host_unit\": \"a\", \"hostUnit\": \"b\"}", 1, 20, "given twice");
  expect_error(SUBMIT, "{\"title\": 5}", 1, 11, "field 'title' must be a string, not a number");
  expect_error(SUBMIT, "{\"title\": \"a\\u0000b\"}", 1, 11, "U+0000");
  expect_error(SUBMIT, "{\"subject\": \"张三\"}", 1, 13, "must be an object, not a string");
  expect_error(SUBMIT, "{\"subject\": {\"name\": \"张三\", \"age\": 3}}", 1, 28,
               "unknown field 'age' in SubjectPerson");
  expect_error(SUBMIT, "{\"source\": \"LETTER\"}", 1, 12,
               "'LETTER' is not a SourceChannel (one of LETTER_VISIT_REPORT, INSPECTION_TOUR");
  expect_error(SUBMIT, "{\"source\": [1]}", 1, 12, "must be a string naming a SourceChannel");
  expect_error(SUBMIT, "[{}]", 1, 1, "expected an object (a SubmitClueRequest), not an array");
  expect_error(SUBMIT, "\"x\"", 1, 1, "not a string");
  expect_error(&clue__v1__audit_event__descriptor, "{\"hash\": \"AAAA\"}", 1, 10,
               "bytes fields cannot be read");
}

static void test_syntax_errors(void **state) {
  (void)state;
  expect_error(SUBMIT, "", 1, 1, "unexpected end of input");
  expect_error(SUBMIT, "{\"title\": \"x\",}", 1, 15, "trailing comma before '}'");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"states\": [1,]}", 1, 15,
               "trailing comma before ']'");
  expect_error(SUBMIT, "{\"title\" \"x\"}", 1, 10, "expected ':' after the member name");
  expect_error(SUBMIT, "{title: 1}", 1, 2, "expected a member name in double quotes, found 't'");
  expect_error(SUBMIT, "{\"title\": 'x'}", 1, 11, "strings must be in double quotes");
  expect_error(SUBMIT, "{\"title\": \"x\"} // c", 1, 16, "unexpected '/' after the end");
  expect_error(SUBMIT, "// c\n{}", 1, 1, "comments are not allowed");
  expect_error(SUBMIT, "{\"title\": \"x\"}}", 1, 15, "unexpected '}' after the end");
  expect_error(SUBMIT, "{\"title\": \"x\" \"summary\": 1}", 1, 15, "expected ',' or '}'");
  expect_error(SUBMIT, "{\n  \"title\": \"abc", 2, 16,
               "unterminated string (it begins at line 2, column 12)");
  expect_error(SUBMIT, "{\"title\": \"a\tb\"}", 1, 13, "control character 0x09");
  expect_error(SUBMIT, "{\"title\": \"\\x\"}", 1, 13, "invalid escape '\\x'");
  expect_error(SUBMIT, "{\"title\": \"\\u12G4\"}", 1, 16, "four hexadecimal digits");
  expect_error(SUBMIT, "{\"title\": \"\\udc00\"}", 1, 18, "low surrogate without a high one");
  expect_error(SUBMIT, "{\"title\": \"\\ud800x\"}", 1, 18, "must be followed by \\u");
  expect_error(SUBMIT, "{\"title\": \"\\ud800\\u0041\"}", 1, 24, "not a low surrogate");
  /* columns count characters: the error after two CJK characters is at column 15 */
  expect_error(SUBMIT, "{\"title\": \"张三\" x}", 1, 16, "expected ',' or '}'");
  expect_error(SUBMIT, "{\"title\": \"\xC3\x28\"}", 1, 12, "invalid UTF-8 (byte 0xc3)");
  expect_error(SUBMIT, "{\"title\": \"\xE0\x80\x80\"}", 1, 12, "invalid UTF-8");
  expect_error(SUBMIT, "{\"title\": \"\xED\xA0\x80\"}", 1, 12, "invalid UTF-8");
  expect_error(SUBMIT, "\xC3\xA9", 1, 1, "unexpected byte 0xc3");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"page_size\": 01}", 1, 16,
               "leading zeros");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"page_size\": -}", 1, 16,
               "needs a digit");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"page_size\": 1.}", 1, 17,
               "digit must follow the decimal point");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"page_size\": 1e}", 1, 17,
               "digit must follow the exponent");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"overdue_only\": tru}", 1, 18,
               "invalid literal (expected true)");
  expect_error(&clue__v1__list_clues_request__descriptor, "{\"overdue_only\": NaN}", 1, 18,
               "unexpected 'N'");
  expect_error(SUBMIT, "{\r\n\r\n  \"x\": 1}", 3, 3, "unknown field 'x'");
}

static void test_depth_limit(void **state) {
  char deep[400];
  int n = 0;

  (void)state;
  for (int i = 0; i < 70; i++)
    n += snprintf(deep + n, sizeof(deep) - (size_t)n, "{\"s\":");
  /* level d opens at column 5d + 1; level 65 is one too many */
  expect_error(&clue__v1__list_units_request__descriptor, deep, 1, 5 * 65 + 1,
               "nested more than 64 levels deep");
}

static void test_array(void **state) {
  const char *text = "[\n  {\"title\": \"a\"},\n  {\"title\": \"b\", \"request_id\": \"x\"}\n]";
  ProtobufCMessage **msgs = NULL;
  clue_json_error_t err;
  size_t n = 0;

  (void)state;
  assert_int_equal(clue_from_json_array(text, strlen(text), SUBMIT, &msgs, &n, &err), 0);
  assert_int_equal(n, 2);
  assert_string_equal(((Clue__V1__SubmitClueRequest *)msgs[0])->title, "a");
  assert_string_equal(((Clue__V1__SubmitClueRequest *)msgs[1])->request_id, "x");
  clue_messages_free(msgs, n);

  assert_int_equal(clue_from_json_array("[]", 2, SUBMIT, &msgs, &n, &err), 0);
  assert_int_equal(n, 0);
  clue_messages_free(msgs, n);

  text = "[{\"title\": \"a\"},\n {\"title\": \"b\", \"bogus\": 1}]";
  msgs = NULL;
  n = 99;
  assert_int_equal(clue_from_json_array(text, strlen(text), SUBMIT, &msgs, &n, &err), CLUE_EJSON);
  assert_int_equal(err.line, 2);
  assert_int_equal(err.column, 17);
  assert_string_equal(err.message, "element 2: unknown field 'bogus' in SubmitClueRequest "
                                   "(fields: title, summary, source, subject, host_unit, "
                                   "violation_categories, reporter, request_id)");
  assert_null(msgs);
  assert_int_equal(n, 99);
  assert_int_equal(clue_from_json_array("{}", 2, SUBMIT, &msgs, &n, &err), CLUE_EJSON);
  assert_string_equal(err.message, "expected an array of objects, not an object");
  assert_int_equal(clue_from_json_array("[1]", 3, SUBMIT, &msgs, &n, &err), CLUE_EJSON);
  assert_int_equal(err.column, 2);
  assert_string_equal(err.message,
                      "element 1: expected an object (a SubmitClueRequest), not a number");
}

static void test_bad_arguments(void **state) {
  ProtobufCMessage *m = NULL, **v = NULL;
  clue_json_error_t err;
  size_t n;

  (void)state;
  assert_int_equal(clue_from_json(NULL, 0, SUBMIT, &m, &err), CLUE_EINVAL);
  assert_int_equal(clue_from_json("{}", 2, NULL, &m, &err), CLUE_EINVAL);
  assert_int_equal(clue_from_json("{}", 2, SUBMIT, NULL, &err), CLUE_EINVAL);
  assert_int_equal(clue_from_json_array("[]", 2, SUBMIT, &v, NULL, &err), CLUE_EINVAL);
  assert_int_equal(clue_from_json_array("[]", 2, SUBMIT, NULL, &n, &err), CLUE_EINVAL);
  assert_int_equal(clue_from_json("{}", 2, SUBMIT, &m, NULL), 0); /* err is optional */
  protobuf_c_message_free_unpacked(m, NULL);
  /* len bounds the text: what follows is not read */
  assert_int_equal(clue_from_json("{}garbage", 2, SUBMIT, &m, &err), 0);
  protobuf_c_message_free_unpacked(m, NULL);
  clue_messages_free(NULL, 0);
}

/* Every allocation, made to fail in turn: CLUE_ENOMEM, nothing leaked (ASan checks), and
 * success once no allocation fails. */
static void test_out_of_memory(void **state) {
  const char *one = "{\"title\": \"t\", \"subject\": {\"name\": \"n\"}, \"violation_categories\": "
                    "[\"a\", \"b\", \"c\", \"d\", \"e\"], \"request_id\": \"r\"}";
  char arr[512];
  long nth;

  (void)state;
  snprintf(arr, sizeof(arr), "[%s, %s, %s]", one, one, one);
  for (nth = 0;; nth++) {
    ProtobufCMessage *m = NULL;
    clue_json_error_t err;
    long before = clue__test_alloc_failures();
    int rv;
    clue__test_fail_alloc(nth);
    rv = clue_from_json(one, strlen(one), SUBMIT, &m, &err);
    clue__test_fail_alloc(-1);
    if (clue__test_alloc_failures() == before) {
      assert_int_equal(rv, 0);
      protobuf_c_message_free_unpacked(m, NULL);
      break;
    }
    assert_int_equal(rv, CLUE_ENOMEM);
    assert_null(m);
    assert_string_equal(err.message, "out of memory");
  }
  assert_true(nth > 10);
  for (nth = 0;; nth++) {
    ProtobufCMessage **v = NULL;
    size_t n = 0;
    long before = clue__test_alloc_failures();
    int rv;
    clue__test_fail_alloc(nth);
    rv = clue_from_json_array(arr, strlen(arr), SUBMIT, &v, &n, NULL);
    clue__test_fail_alloc(-1);
    if (clue__test_alloc_failures() == before) {
      assert_int_equal(rv, 0);
      assert_int_equal(n, 3);
      clue_messages_free(v, n);
      break;
    }
    assert_int_equal(rv, CLUE_ENOMEM);
    assert_null(v);
  }
}

static void test_enum_prefix(void **state) {
  (void)state;
  assert_int_equal(clue_enum_prefix_len(&clue__v1__unit_kind__descriptor), strlen("UNIT_KIND_"));
  assert_int_equal(clue_enum_prefix_len(&clue__v1__clue_state__descriptor), strlen("CLUE_STATE_"));
  /* SCOPE_ALL, SCOPE_TO_REVIEW, SCOPE_RAISED */
  assert_int_equal(clue_enum_prefix_len(&clue__v1__list_proposals_request__scope__descriptor), 6);
  assert_int_equal(clue_enum_prefix_len(NULL), 0);
}

static void test_enum_names(void **state) {
  const ProtobufCEnumDescriptor *kind = &clue__v1__unit_kind__descriptor;
  char buf[64];
  int v = -1;

  (void)state;
  assert_int_equal(clue_enum_from_name(kind, "group", &v), 0);
  assert_int_equal(v, CLUE__V1__UNIT_KIND__UNIT_KIND_GROUP);
  assert_int_equal(clue_enum_from_name(kind, "Unit_Kind_Room", &v), 0);
  assert_int_equal(v, CLUE__V1__UNIT_KIND__UNIT_KIND_ROOM);
  assert_int_equal(clue_enum_from_name(kind, "KIND_ROOM", &v), CLUE_EINVAL);
  assert_int_equal(v, CLUE__V1__UNIT_KIND__UNIT_KIND_ROOM);
  /* UNSPECIFIED is no choice to offer. */
  assert_string_equal(clue_enum_choices(kind, "|", buf, sizeof(buf)), "ROOM|GROUP|REGION|ADMIN");
  assert_string_equal(clue_enum_choices(kind, ", ", buf, 12), "ROOM, GROUP");
}

/* A message with a proto2-style optional field and a oneof, laid out as protobuf-c does. */
typedef struct fake_msg {
  ProtobufCMessage base;
  protobuf_c_boolean has_n;
  int32_t n;
  char *s;
  uint32_t which; /* the oneof's case */
  int64_t a;
} fake_msg_t;

static void test_field_present(void **state) {
  const ProtobufCFieldDescriptor n = {.name = "n",
                                      .id = 1,
                                      .label = PROTOBUF_C_LABEL_OPTIONAL,
                                      .type = PROTOBUF_C_TYPE_INT32,
                                      .quantifier_offset = offsetof(fake_msg_t, has_n),
                                      .offset = offsetof(fake_msg_t, n)};
  const ProtobufCFieldDescriptor s = {.name = "s",
                                      .id = 2,
                                      .label = PROTOBUF_C_LABEL_OPTIONAL,
                                      .type = PROTOBUF_C_TYPE_STRING,
                                      .offset = offsetof(fake_msg_t, s)};
  const ProtobufCFieldDescriptor a = {.name = "a",
                                      .id = 3,
                                      .label = PROTOBUF_C_LABEL_NONE,
                                      .type = PROTOBUF_C_TYPE_INT64,
                                      .quantifier_offset = offsetof(fake_msg_t, which),
                                      .offset = offsetof(fake_msg_t, a),
                                      .flags = PROTOBUF_C_FIELD_FLAG_ONEOF};
  const ProtobufCFieldDescriptor plain = {.name = "plain",
                                          .id = 4,
                                          .label = PROTOBUF_C_LABEL_NONE,
                                          .type = PROTOBUF_C_TYPE_INT64,
                                          .offset = offsetof(fake_msg_t, a)};
  fake_msg_t m = {0};

  (void)state;
  assert_false(clue_field_present(&m.base, &n));
  assert_false(clue_field_present(&m.base, &s));
  assert_false(clue_field_present(&m.base, &a));
  assert_true(clue_field_present(&m.base, &plain));
  m.has_n = 1;
  m.s = "x";
  m.which = 3;
  assert_true(clue_field_present(&m.base, &n));
  assert_true(clue_field_present(&m.base, &s));
  assert_true(clue_field_present(&m.base, &a));
}

static void test_type_size(void **state) {
  (void)state;
  assert_int_equal(clue_type_size(PROTOBUF_C_TYPE_INT32), sizeof(int32_t));
  assert_int_equal(clue_type_size(PROTOBUF_C_TYPE_FIXED32), sizeof(uint32_t));
  assert_int_equal(clue_type_size(PROTOBUF_C_TYPE_SINT64), sizeof(int64_t));
  assert_int_equal(clue_type_size(PROTOBUF_C_TYPE_UINT64), sizeof(uint64_t));
  assert_int_equal(clue_type_size(PROTOBUF_C_TYPE_FLOAT), sizeof(float));
  assert_int_equal(clue_type_size(PROTOBUF_C_TYPE_DOUBLE), sizeof(double));
  assert_int_equal(clue_type_size(PROTOBUF_C_TYPE_BOOL), sizeof(protobuf_c_boolean));
  assert_int_equal(clue_type_size(PROTOBUF_C_TYPE_ENUM), sizeof(int));
  assert_int_equal(clue_type_size(PROTOBUF_C_TYPE_STRING), sizeof(char *));
  assert_int_equal(clue_type_size(PROTOBUF_C_TYPE_BYTES), sizeof(ProtobufCBinaryData));
  assert_int_equal(clue_type_size(PROTOBUF_C_TYPE_MESSAGE), sizeof(ProtobufCMessage *));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_submit_request), cmocka_unit_test(test_integers),
      cmocka_unit_test(test_mapping_errors), cmocka_unit_test(test_syntax_errors),
      cmocka_unit_test(test_depth_limit),    cmocka_unit_test(test_array),
      cmocka_unit_test(test_bad_arguments),  cmocka_unit_test(test_out_of_memory),
      cmocka_unit_test(test_enum_prefix),    cmocka_unit_test(test_enum_names),
      cmocka_unit_test(test_field_present),  cmocka_unit_test(test_type_size),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
