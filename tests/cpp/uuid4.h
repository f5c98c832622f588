// The text of a version 4 UUID (a request id) made of 16 random bytes: the version and
// variant bits are set here. Shared by the C++ clients (tests/cpp, bench/grpcpp_load.cc).
#ifndef CLUED_TESTS_CPP_UUID4_H
#define CLUED_TESTS_CPP_UUID4_H

#include <cstdio>
#include <string>

inline std::string uuid4_text(unsigned char b[16]) {
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
  char out[37];
  std::snprintf(out, sizeof out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return out;
}

#endif
