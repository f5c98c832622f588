// A third client of clued that nobody on the project wrote the stack of: gRPC C++ (grpc++)
// with stubs protoc's grpc_cpp_plugin generates from proto/ at build time.
//
//   grpcpp_client ADDR MEMBER_TOKEN LEADER_TOKEN
//
// Checks Health (SERVING), SubmitClue as a group member (with reporter details), an
// idempotent retry of the submit, GetClue as the member (the reporter is on file but not
// shown) and as the owner unit's leader (shown), NOT_FOUND for a missing clue and
// UNAUTHENTICATED without a token. Prints "clue ID REGISTRATION_NUMBER" and exits 0 when
// every check held; otherwise names the first failed check on stderr and exits 1.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>

#include "clue/v1/clue.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "uuid4.h"

namespace {

int failed(const std::string &what, const grpc::Status &st) {
  std::fprintf(stderr, "FAIL: %s: status %d: %s\n", what.c_str(), static_cast<int>(st.error_code()),
               st.error_message().c_str());
  return 1;
}

int failed(const std::string &what) {
  std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  return 1;
}

// A fresh version 4 UUID, the request id of one submit (and of its retry).
std::string new_request_id() {
  std::random_device rd;
  unsigned char b[16];
  for (auto &x : b) x = static_cast<unsigned char>(rd());
  return uuid4_text(b);
}

void with_token(grpc::ClientContext *ctx, const std::string &token) {
  ctx->AddMetadata("authorization", "Bearer " + token);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s ADDR MEMBER_TOKEN LEADER_TOKEN\n", argv[0]);
    return 2;
  }
  const std::string addr = argv[1], member = argv[2], leader = argv[3];
  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());

  auto health = grpc::health::v1::Health::NewStub(channel);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status st = health->Check(&ctx, req, &resp);
    if (!st.ok()) return failed("Health/Check", st);
    if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) return failed("Health/Check: not SERVING");
  }

  auto clues = clue::v1::ClueService::NewStub(channel);
  clue::v1::SubmitClueRequest sub;
  sub.set_title("C++ 客户端提交的线索");
  sub.set_summary("反映某某违规收受礼金");
  sub.set_source(clue::v1::SOURCE_CHANNEL_LETTER_VISIT_REPORT);
  sub.mutable_subject()->set_name("李四");
  sub.mutable_subject()->set_position("副局长");
  sub.set_host_unit("市发展改革委");
  sub.add_violation_categories("违反廉洁纪律");
  sub.mutable_reporter()->set_name("王五");
  sub.mutable_reporter()->set_phone("13800000000");
  sub.set_request_id(new_request_id());

  clue::v1::Clue made;
  {
    grpc::ClientContext ctx;
    with_token(&ctx, member);
    grpc::Status st = clues->SubmitClue(&ctx, sub, &made);
    if (!st.ok()) return failed("SubmitClue", st);
    if (made.id() <= 0 || made.registration_number().empty() || made.version() != 1 ||
        made.state() != clue::v1::CLUE_STATE_ACCEPTED)
      return failed("SubmitClue: reply lacks id, registration number, version 1 or ACCEPTED");
    if (!made.reporter_on_file() || made.has_reporter())
      return failed("SubmitClue: reply should say a reporter is on file without carrying it");
  }
  {
    grpc::ClientContext ctx;
    with_token(&ctx, member);
    clue::v1::Clue again;
    grpc::Status st = clues->SubmitClue(&ctx, sub, &again);
    if (!st.ok()) return failed("SubmitClue retry", st);
    if (again.id() != made.id()) return failed("SubmitClue retry with the same request id made a second clue");
  }

  clue::v1::GetClueRequest get;
  get.set_clue_id(made.id());
  {
    grpc::ClientContext ctx;
    with_token(&ctx, member);
    clue::v1::Clue got;
    grpc::Status st = clues->GetClue(&ctx, get, &got);
    if (!st.ok()) return failed("GetClue as member", st);
    if (got.id() != made.id() || got.title() != sub.title() || got.subject().name() != "李四" ||
        got.violation_categories_size() != 1 || got.violation_categories(0) != "违反廉洁纪律")
      return failed("GetClue as member: fields differ from what was submitted");
    if (!got.reporter_on_file() || got.has_reporter())
      return failed("GetClue as member: the reporter must be on file and not shown");
  }
  {
    grpc::ClientContext ctx;
    with_token(&ctx, leader);
    clue::v1::Clue got;
    grpc::Status st = clues->GetClue(&ctx, get, &got);
    if (!st.ok()) return failed("GetClue as leader", st);
    if (!got.has_reporter() || got.reporter().name() != "王五" || got.reporter().phone() != "13800000000")
      return failed("GetClue as leader of the owner unit: the reporter should be shown");
  }
  {
    grpc::ClientContext ctx;
    with_token(&ctx, member);
    clue::v1::GetClueRequest missing;
    missing.set_clue_id(made.id() + 1000000);
    clue::v1::Clue got;
    grpc::Status st = clues->GetClue(&ctx, missing, &got);
    if (st.error_code() != grpc::StatusCode::NOT_FOUND) return failed("GetClue of a missing clue: wanted NOT_FOUND", st);
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    clue::v1::Clue got;
    grpc::Status st = clues->GetClue(&ctx, get, &got);
    if (st.error_code() != grpc::StatusCode::UNAUTHENTICATED)
      return failed("GetClue without a token: wanted UNAUTHENTICATED", st);
  }
  std::printf("clue %lld %s\n", static_cast<long long>(made.id()), made.registration_number().c_str());
  return 0;
}
