/* Wire-level string checks of requests (server/rpc/msg_check.c): a NUL byte or invalid UTF-8
 * in any string field, at any depth, is refused and named; everything else passes. */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clue/v1/clue.pb-c.h"
#include "rpc/msg_check.h"

#define MARK "\x01\x01\x01" /* three bytes the tests overwrite in the packed message */

typedef struct packed {
  uint8_t *data;
  size_t len;
} packed_t;

/* A SubmitClueRequest with MARK in the field chosen by where (0: none). */
static packed_t pack_submit(int where) {
  Clue__V1__SubmitClueRequest req = CLUE__V1__SUBMIT_CLUE_REQUEST__INIT;
  Clue__V1__SubjectPerson subject = CLUE__V1__SUBJECT_PERSON__INIT;
  Clue__V1__ReporterContact reporter = CLUE__V1__REPORTER_CONTACT__INIT;
  char *cats[2] = {"违反廉洁纪律", where == 3 ? "违反" MARK : "违反组织纪律"};
  packed_t p;

  req.title = where == 1 ? "某局长" MARK "违规" : "某局长违规插手工程招投标";
  req.summary = "反映某某违规收受礼金";
  subject.name = where == 2 ? "王" MARK : "王某某";
  subject.position = "局长";
  req.subject = &subject;
  req.n_violation_categories = 2;
  req.violation_categories = cats;
  reporter.name = "李某";
  reporter.phone = where == 4 ? "138" MARK : "13800000000";
  req.reporter = &reporter;
  req.request_id = "5f0c6a1e-0000-4000-8000-000000000001";
  p.len = protobuf_c_message_get_packed_size(&req.base);
  p.data = malloc(p.len);
  assert_non_null(p.data);
  assert_int_equal(protobuf_c_message_pack(&req.base, p.data), p.len);
  return p;
}

/* Overwrite the MARK in p with the three bytes repl. */
static void replace_mark(packed_t *p, const char *repl) {
  uint8_t *m = memmem(p->data, p->len, MARK, 3);
  assert_non_null(m);
  memcpy(m, repl, 3);
}

static int check(const packed_t *p, char *why, size_t size) {
  return rpc_msg_check(&clue__v1__submit_clue_request__descriptor, p->data, p->len, why, size);
}

static void clean_request_passes(void **state) {
  char why[160] = "";
  packed_t p = pack_submit(0);
  (void)state;
  assert_int_equal(check(&p, why, sizeof(why)), 0);
  assert_string_equal(why, "");
  free(p.data);
}

static void a_nul_byte_is_named_at_any_depth(void **state) {
  static const struct {
    int where;
    const char *message;
  } cases[] = {
      {1, "field title contains a NUL byte"},
      {2, "field subject.name contains a NUL byte"},
      {3, "field violation_categories contains a NUL byte"},
      {4, "field reporter.phone contains a NUL byte"},
  };
  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char why[160] = "";
    packed_t p = pack_submit(cases[i].where);
    replace_mark(&p, "a\0b");
    assert_int_equal(check(&p, why, sizeof(why)), -1);
    assert_string_equal(why, cases[i].message);
    free(p.data);
  }
}

static void invalid_utf8_is_refused(void **state) {
  static const char *bad[] = {
      "\xC0\x80x", /* overlong NUL */
      "\x80xx",    /* a lone continuation byte */
      "\xED\xA0\x80", /* a surrogate, U+D800 */
      "x\xE4\xB8",    /* cut short at the end of the string */
      "\xF4\x90\x80", /* above U+10FFFF (and cut short) */
      "\xFF\xFEx",
  };
  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char why[160] = "";
    packed_t p = pack_submit(2);
    replace_mark(&p, bad[i]);
    assert_int_equal(check(&p, why, sizeof(why)), -1);
    assert_string_equal(why, "field subject.name is not valid UTF-8");
    free(p.data);
  }
}

static int check_wire(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                      char *why, size_t why_size) {
  why[0] = '\0';
  return rpc_msg_check(d, data, len, why, why_size);
}

static void unknown_fields_pass_and_unreadable_wire_is_refused(void **state) {
  /* Field 99 (unknown) holding a NUL, then a varint field 3: an unknown field is not looked
   * into. */
  static const uint8_t unknown[] = {0x9a, 0x06, 0x03, 'a', 0x00, 'b', 0x18, 0x01};
  /* A length past the end; a group; a tag cut short. */
  static const uint8_t cut[] = {0x0a, 0x10, 'a', 'b'};
  static const uint8_t group[] = {0x0b, 0x0c};
  static const uint8_t tag_cut[] = {0x0a, 0x01, 'a', 0x80};
  /* Field 0 as a two-byte tag (which protobuf-c decodes as an unknown field), then a title
   * holding a NUL: the walk must not stop before the title. */
  static const uint8_t field0[] = {0x82, 0x00, 0x00, 0x0a, 0x03, 'a', 0x00, 'b'};
  /* Field 536870912, past the largest. */
  static const uint8_t too_big[] = {0x80, 0x80, 0x80, 0x80, 0x20, 0x00};
  const ProtobufCMessageDescriptor *d = &clue__v1__submit_clue_request__descriptor;
  char why[200];
  (void)state;

  assert_int_equal(check_wire(d, unknown, sizeof(unknown), why, sizeof(why)), 0);
  assert_int_equal(check_wire(d, cut, sizeof(cut), why, sizeof(why)), -1);
  assert_string_equal(
      why, "request is not a valid clue.v1.SubmitClueRequest message: field title is cut short");
  assert_int_equal(check_wire(d, group, sizeof(group), why, sizeof(why)), -1);
  assert_string_equal(
      why, "request is not a valid clue.v1.SubmitClueRequest message: a group (proto3 has none)");
  assert_int_equal(check_wire(d, tag_cut, sizeof(tag_cut), why, sizeof(why)), -1);
  assert_non_null(strstr(why, "a field's tag is cut short"));
  assert_int_equal(check_wire(d, field0, sizeof(field0), why, sizeof(why)), -1);
  assert_string_equal(
      why, "request is not a valid clue.v1.SubmitClueRequest message: a field numbered 0");
  assert_int_equal(check_wire(d, too_big, sizeof(too_big), why, sizeof(why)), -1);
  assert_non_null(strstr(why, "a field number past 536870911"));
  assert_int_equal(check_wire(d, NULL, 0, why, sizeof(why)), 0);
  assert_string_equal(why, "");
}

static void known_fields_come_in_their_wire_type(void **state) {
  /* ListCluesRequest: repeated ClueState states = 1, SubjectPerson-free; bool overdue_only = 5;
   * int64 created_from_ms = 6; string subject_name = 4. */
  static const uint8_t bool_as_len[] = {0x2a, 0x01, 0x00};             /* overdue_only: LEN */
  static const uint8_t bool_as_i32[] = {0x2d, 0x00, 0x00, 0x00, 0x00}; /* overdue_only: I32 */
  static const uint8_t bool_as_i64[] = {0x29, 0, 0, 0, 0, 0, 0, 0, 0}; /* overdue_only: I64 */
  static const uint8_t int_as_len[] = {0x32, 0x01, 0x05};              /* created_from_ms: LEN */
  static const uint8_t string_as_varint[] = {0x20, 0x01};              /* subject_name: varint */
  static const uint8_t fine[] = {0x28, 0x01, 0x30, 0x05, 0x22, 0x01, 'x'};
  /* A repeated enum, packed (LEN) or not (varints): both are proto3's. */
  static const uint8_t packed[] = {0x0a, 0x02, 0x01, 0x02};
  static const uint8_t unpacked[] = {0x08, 0x01, 0x08, 0x02};
  const ProtobufCMessageDescriptor *d = &clue__v1__list_clues_request__descriptor;
  char why[200];
  (void)state;

  assert_int_equal(check_wire(d, bool_as_len, sizeof(bool_as_len), why, sizeof(why)), -1);
  assert_string_equal(
      why, "request is not a valid clue.v1.ListCluesRequest message: field overdue_only is not "
           "a varint");
  assert_int_equal(check_wire(d, bool_as_i32, sizeof(bool_as_i32), why, sizeof(why)), -1);
  assert_non_null(strstr(why, "field overdue_only is not a varint"));
  assert_int_equal(check_wire(d, bool_as_i64, sizeof(bool_as_i64), why, sizeof(why)), -1);
  assert_non_null(strstr(why, "field overdue_only is not a varint"));
  assert_int_equal(check_wire(d, int_as_len, sizeof(int_as_len), why, sizeof(why)), -1);
  assert_non_null(strstr(why, "field created_from_ms is not a varint"));
  assert_int_equal(check_wire(d, string_as_varint, sizeof(string_as_varint), why, sizeof(why)), -1);
  assert_non_null(strstr(why, "field subject_name is not length-delimited"));
  assert_int_equal(check_wire(d, fine, sizeof(fine), why, sizeof(why)), 0);
  assert_int_equal(check_wire(d, packed, sizeof(packed), why, sizeof(why)), 0);
  assert_int_equal(check_wire(d, unpacked, sizeof(unpacked), why, sizeof(why)), 0);
}

static void the_last_field_wins_as_a_whole(void **state) {
  /* A string field sent twice: either copy with a NUL is refused, even the one the decoder
   * would drop. */
  static const uint8_t twice[] = {0x0a, 0x03, 'a', 0x00, 'b', 0x0a, 0x01, 'c'};
  char why[160] = "";
  (void)state;
  assert_int_equal(rpc_msg_check(&clue__v1__submit_clue_request__descriptor, twice, sizeof(twice),
                                 why, sizeof(why)),
                   -1);
  assert_string_equal(why, "field title contains a NUL byte");
}

static void nesting_is_bounded(void **state) {
  /* A descriptor whose one field holds its own message, nested deeper than the bound. */
  ProtobufCFieldDescriptor self_field;
  ProtobufCMessageDescriptor self = clue__v1__subject_person__descriptor;
  unsigned index = 0;
  ProtobufCIntRange ranges[2] = {{1, 0}, {0, 1}};
  uint8_t *buf;
  size_t depth = RPC_MSG_MAX_DEPTH + 2, len = 0;
  char why[160] = "";
  (void)state;

  memset(&self_field, 0, sizeof(self_field));
  self_field.name = "inner";
  self_field.id = 1;
  self_field.label = PROTOBUF_C_LABEL_NONE;
  self_field.type = PROTOBUF_C_TYPE_MESSAGE;
  self_field.descriptor = &self;
  self.n_fields = 1;
  self.fields = &self_field;
  self.fields_sorted_by_name = &index;
  self.n_field_ranges = 1;
  self.field_ranges = ranges;
  /* depth nested messages, each "0x0a len": built from the inside out (lengths < 128). */
  buf = calloc(depth * 2, 1);
  assert_non_null(buf);
  for (size_t i = 0; i < depth; i++) {
    memmove(buf + 2, buf, len);
    buf[0] = 0x0a;
    buf[1] = (uint8_t)len;
    len += 2;
  }
  assert_int_equal(rpc_msg_check(&self, buf, len, why, sizeof(why)), -1);
  assert_non_null(strstr(why, "nest more than"));
  /* RPC_MSG_MAX_DEPTH wrappers (messages at depths 0 to the bound) pass; one more does not. */
  assert_int_equal(rpc_msg_check(&self, buf + 2 * (depth - RPC_MSG_MAX_DEPTH),
                                 2 * RPC_MSG_MAX_DEPTH, why, sizeof(why)),
                   0);
  assert_int_equal(rpc_msg_check(&self, buf + 2 * (depth - RPC_MSG_MAX_DEPTH - 1),
                                 2 * (RPC_MSG_MAX_DEPTH + 1), why, sizeof(why)),
                   -1);
  free(buf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(clean_request_passes),
      cmocka_unit_test(a_nul_byte_is_named_at_any_depth),
      cmocka_unit_test(invalid_utf8_is_refused),
      cmocka_unit_test(unknown_fields_pass_and_unreadable_wire_is_refused),
      cmocka_unit_test(known_fields_come_in_their_wire_type),
      cmocka_unit_test(the_last_field_wins_as_a_whole),
      cmocka_unit_test(nesting_is_bounded),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
