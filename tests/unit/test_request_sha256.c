/* A request's fingerprint (server/service/request_sha256.c): the same for two encodings of
 * the same decoded fields, different when any field but request_id differs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clue/v1/clue.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "rpc/call.h"
#include "service/request_sha256.h"

static void arena_free(rpc_call_t *call) {
  while (call->arena.chunks) {
    rpc_arena_chunk_t *next = call->arena.chunks->next;
    free(call->arena.chunks);
    call->arena.chunks = next;
  }
}

/* The fingerprint of the message the bytes decode to, in a copy of at most 66 characters. */
static void sha_of_bytes(const uint8_t *buf, size_t len, char out[REQUEST_SHA256_TEXT_LEN + 1]) {
  rpc_call_t call;
  ProtobufCMessage *m =
      protobuf_c_message_unpack(&clue__v1__request_transition_request__descriptor, NULL, len, buf);
  const char *s;

  assert_non_null(m);
  memset(&call, 0, sizeof(call));
  s = request_sha256(&call, m);
  assert_non_null(s);
  assert_int_equal(strlen(s), REQUEST_SHA256_TEXT_LEN);
  assert_memory_equal(s, "\\x", 2);
  strcpy(out, s);
  arena_free(&call);
  protobuf_c_message_free_unpacked(m, NULL);
}

static void sha_of(const Clue__V1__RequestTransitionRequest *req,
                   char out[REQUEST_SHA256_TEXT_LEN + 1]) {
  uint8_t buf[512];
  size_t len = protobuf_c_message_get_packed_size(&req->base);

  assert_true(len <= sizeof(buf));
  protobuf_c_message_pack(&req->base, buf);
  sha_of_bytes(buf, len, out);
}

static Clue__V1__RequestTransitionRequest sample(Clue__V1__TransitionDetails *d) {
  Clue__V1__RequestTransitionRequest r = CLUE__V1__REQUEST_TRANSITION_REQUEST__INIT;

  r.clue_id = 7;
  r.expected_version = 3;
  r.target = CLUE__V1__CLUE_STATE__CLUE_STATE_PRELIMINARY_CHECK;
  r.reason = "初核";
  r.request_id = "5a3a4a8e-0d0c-4d51-9a55-cc0b5fd1e3d1";
  r.details = d;
  return r;
}

static void test_request_id_is_left_out(void **state) {
  Clue__V1__RequestTransitionRequest a = sample(NULL), b = sample(NULL);
  char x[REQUEST_SHA256_TEXT_LEN + 1], y[REQUEST_SHA256_TEXT_LEN + 1];
  (void)state;

  b.request_id = "11111111-2222-3333-4444-555555555555";
  sha_of(&a, x);
  sha_of(&b, y);
  assert_string_equal(x, y);
}

static void test_every_other_field_counts(void **state) {
  Clue__V1__TransitionDetails d = CLUE__V1__TRANSITION_DETAILS__INIT;
  Clue__V1__RequestTransitionRequest a = sample(NULL), b;
  char x[REQUEST_SHA256_TEXT_LEN + 1], y[REQUEST_SHA256_TEXT_LEN + 1];
  (void)state;

  sha_of(&a, x);
  for (int k = 0; k < 6; k++) {
    b = sample(&d);
    d = (Clue__V1__TransitionDetails)CLUE__V1__TRANSITION_DETAILS__INIT;
    switch (k) {
    case 0:
      b.clue_id = 8;
      break;
    case 1:
      b.expected_version = 4;
      break;
    case 2:
      b.target = CLUE__V1__CLUE_STATE__CLUE_STATE_CLOSED;
      break;
    case 3:
      b.reason = "初 核"; /* white space inside a text counts */
      break;
    case 4:
      d.persons_disciplined = 1;
      break;
    case 5:
      d.finding = "x";
      break;
    }
    sha_of(&b, y);
    assert_string_not_equal(x, y);
  }
}

/* The same fields sent otherwise: in reverse order, a field twice (the last counts), a default
 * sent explicitly, an empty details message, an unknown field. */
static void test_encodings_of_the_same_fields_agree(void **state) {
  Clue__V1__RequestTransitionRequest a = sample(NULL);
  char x[REQUEST_SHA256_TEXT_LEN + 1], y[REQUEST_SHA256_TEXT_LEN + 1];
  static const uint8_t other[] = {
      0x32, 0x24, '5',  'a',  '3',  'a',  '4',  'a',  '8', 'e', '-', '0', 'd',
      '0',  'c',  '-',  '4',  'd',  '5',  '1',  '-',  '9', 'a', '5', '5', '-',
      'c',  'c',  '0',  'b',  '5',  'f',  'd',  '1',  'e', '3', 'd', '1', /* 6: request_id */
      0x2a, 0x00,                                                         /* 5: details, empty */
      0x22, 0x06, 0xe5, 0x88, 0x9d, 0xe6, 0xa0, 0xb8,                     /* 4: reason "初核" */
      0x18, 0x02,                                                         /* 3: target */
      0x10, 0x00,       /* 2: expected_version 0 ... */
      0x10, 0x03,       /* ... then 3 */
      0x08, 0x07,       /* 1: clue_id */
      0xb8, 0x3e, 0x01, /* 999: unknown */
  };
  (void)state;

  sha_of(&a, x);
  sha_of_bytes(other, sizeof(other), y);
  assert_string_equal(x, y);
}

/* A text with white space around it is stored without it (validate_trim()): the same request. */
static void test_white_space_around_a_text_does_not_count(void **state) {
  Clue__V1__RequestTransitionRequest a = sample(NULL), b = sample(NULL);
  char x[REQUEST_SHA256_TEXT_LEN + 1], y[REQUEST_SHA256_TEXT_LEN + 1];
  (void)state;

  b.reason = " 初核\u3000\n";
  sha_of(&a, x);
  sha_of(&b, y);
  assert_string_equal(x, y);
}

static void sha_of_msg(const ProtobufCMessage *m, char out[REQUEST_SHA256_TEXT_LEN + 1]) {
  rpc_call_t call;
  const char *s;

  memset(&call, 0, sizeof(call));
  s = request_sha256(&call, m);
  assert_non_null(s);
  strcpy(out, s);
  arena_free(&call);
}

/* A oneof (none in the clue API today, but the encoder is generic): only the member its case
 * names counts, so the same text in two members is two requests, and a message member beside
 * a string one is never read from the string's slot. */
static void test_a_oneof_counts_its_member_alone(void **state) {
  Grpc__Reflection__V1__ServerReflectionRequest
      a = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT,
      b = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT,
      c = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  Grpc__Reflection__V1__ExtensionRequest e = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
  char x[REQUEST_SHA256_TEXT_LEN + 1], y[REQUEST_SHA256_TEXT_LEN + 1],
      z[REQUEST_SHA256_TEXT_LEN + 1];
  (void)state;

  a.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
  a.file_by_filename = "clue/v1/clue.proto";
  b.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
  b.file_containing_symbol = "clue/v1/clue.proto";
  e.containing_type = "clue/v1/clue.proto";
  c.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
  c.file_containing_extension = &e;
  sha_of_msg(&a.base, x);
  sha_of_msg(&b.base, y);
  sha_of_msg(&c.base, z);
  assert_string_not_equal(x, y);
  assert_string_not_equal(x, z);
  assert_string_not_equal(y, z);
}

/* The 64 bits a page token is bound to are the fingerprint's first 16 hex digits, and follow
 * any field. */
static void test_bits_are_the_first_64_of_the_fingerprint(void **state) {
  Clue__V1__RequestTransitionRequest a = sample(NULL), b = sample(NULL);
  char x[REQUEST_SHA256_TEXT_LEN + 1];
  int64_t bits = 0, other = 0;
  uint64_t want = 0;
  (void)state;

  sha_of(&a, x);
  for (int i = 2; i < 18; i++)
    want = want << 4 | (uint64_t)(x[i] <= '9' ? x[i] - '0' : x[i] - 'a' + 10);
  assert_int_equal(request_sha256_bits(&a.base, &bits), 0);
  assert_true((uint64_t)bits == want);
  b.clue_id = 8;
  assert_int_equal(request_sha256_bits(&b.base, &other), 0);
  assert_true(other != bits);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_request_id_is_left_out),
      cmocka_unit_test(test_every_other_field_counts),
      cmocka_unit_test(test_encodings_of_the_same_fields_agree),
      cmocka_unit_test(test_white_space_around_a_text_does_not_count),
      cmocka_unit_test(test_a_oneof_counts_its_member_alone),
      cmocka_unit_test(test_bits_are_the_first_64_of_the_fingerprint),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
