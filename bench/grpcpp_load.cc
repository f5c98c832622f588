// grpcpp-load: one phase of bench/load driven by gRPC C++ (grpc++), the client the
// performance issue was measured with, instead of clue-load.
//
//   grpcpp-load --server HOST:PORT --phase submit|move|close|get --concurrency N
//               [--connections K] [--duration S] --users FILE [--ids-in FILE] [--ids-out FILE]
//
// The calls in flight are async unary calls (generated stubs, PrepareAsync/Finish) on K
// channels (default 1), each its own HTTP/2 connection with its own completion queue and
// thread: N/K calls on each, the next started as soon as one finishes, for S seconds (or until
// the clues dealt to the phase run out). The phases and the files are clue-load's
// (bench/load.c): the same requests, tokens and clues, and the same JSON object on stdout.
// A call whose status is not OK, or whose reply lacks what it must carry, is an error.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "clue/v1/clue.grpc.pb.h"
#include "uuid4.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace v1 = clue::v1;

enum class Phase { kSubmit, kMove, kClose, kGet };

struct Tokens {
  std::string leader, member;
};

struct Ref {
  long long id = 0, unit = 0;
};

struct Options {
  std::string server;
  Phase phase = Phase::kGet;
  const char *phase_name = "get";
  int concurrency = 16, connections = 1;
  double duration = 10;
  std::vector<std::pair<long long, Tokens>> units;  // in file order
  std::map<long long, Tokens> by_unit;
  std::vector<Ref> ids;
};

// What one channel's thread recorded.
struct Tally {
  std::vector<double> lat_ms;
  long long ok = 0, errors = 0;
  std::string first_error;
  std::vector<Ref> done;
};

std::string uuid4(std::mt19937_64 &rng) {
  unsigned char b[16];
  for (int i = 0; i < 16; i += 8) {
    unsigned long long x = rng();
    std::memcpy(b + i, &x, 8);
  }
  return uuid4_text(b);
}

// One call in flight: its context, request and reply (of the phase's method).
struct Call {
  int slot = 0;
  size_t k = 0;  // next clue dealt to the slot (move, close)
  Ref target;
  Clock::time_point t0;
  std::unique_ptr<grpc::ClientContext> ctx;
  grpc::Status status;
  v1::Clue clue;
  v1::RequestTransitionResponse moved;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::Clue>> clue_rpc;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::RequestTransitionResponse>> move_rpc;
};

class Channel {
 public:
  Channel(const Options &o, int index, int calls, Clock::time_point end)
      : o_(o), index_(index), calls_(calls), end_(end), rng_(std::random_device{}() ^ (index * 7919ULL)) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.clued_bench_channel", index);  // its own connection
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    stub_ = v1::ClueService::NewStub(grpc::CreateCustomChannel(o.server, grpc::InsecureChannelCredentials(), args));
  }

  void Run() {
    std::vector<std::unique_ptr<Call>> calls;
    int live = 0;
    for (int i = 0; i < calls_; i++) {
      calls.push_back(std::make_unique<Call>());
      calls.back()->slot = index_ + i * o_.connections;
      calls.back()->k = static_cast<size_t>(calls.back()->slot);
      if (Start(calls.back().get())) live++;
    }
    void *tag;
    bool ok;
    while (live > 0 && cq_.Next(&tag, &ok)) {
      Call *c = static_cast<Call *>(tag);
      Finish(c);
      if (!Start(c)) live--;
    }
    cq_.Shutdown();
    while (cq_.Next(&tag, &ok)) {
    }
  }

  Tally tally;

 private:
  const Tokens *TokensOf(long long unit) const {
    auto it = o_.by_unit.find(unit);
    return it == o_.by_unit.end() ? nullptr : &it->second;
  }

  // Start c's next call; false when the phase is over for it.
  bool Start(Call *c) {
    bool dealt = o_.phase == Phase::kMove || o_.phase == Phase::kClose;
    if (Clock::now() >= end_ || (dealt && c->k >= o_.ids.size())) return false;
    c->ctx = std::make_unique<grpc::ClientContext>();
    c->ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    c->t0 = Clock::now();
    const Tokens *t = nullptr;
    switch (o_.phase) {
      case Phase::kSubmit: {
        const auto &u = o_.units[static_cast<size_t>(c->slot) % o_.units.size()];
        v1::SubmitClueRequest req;
        req.set_title("反映某某违规收受礼金");
        req.set_summary("群众来信反映某某在项目审批中收受礼金，涉及金额较大，请予核查。");
        req.set_source(v1::SOURCE_CHANNEL_LETTER_VISIT_REPORT);
        req.mutable_subject()->set_name("王某");
        req.mutable_subject()->set_position("处长");
        req.set_host_unit("市发展改革委");
        req.set_request_id(uuid4(rng_));
        c->target = Ref{0, u.first};
        c->ctx->AddMetadata("authorization", "Bearer " + u.second.member);
        c->clue_rpc = stub_->PrepareAsyncSubmitClue(c->ctx.get(), req, &cq_);
        c->clue_rpc->StartCall();
        c->clue_rpc->Finish(&c->clue, &c->status, c);
        return true;
      }
      case Phase::kMove:
      case Phase::kClose: {
        c->target = o_.ids[c->k];
        c->k += static_cast<size_t>(o_.concurrency);
        t = TokensOf(c->target.unit);
        v1::RequestTransitionRequest req;
        req.set_clue_id(c->target.id);
        req.set_reason("依据核查情况");
        req.set_request_id(uuid4(rng_));
        if (o_.phase == Phase::kMove) {
          req.set_target(v1::CLUE_STATE_PRELIMINARY_CHECK);
          req.set_expected_version(1);
        } else {
          req.set_target(v1::CLUE_STATE_CLOSED);
          req.set_expected_version(2);
          req.mutable_details()->set_finding("经初核，反映问题不属实");
        }
        c->ctx->AddMetadata("authorization", "Bearer " + (t ? t->leader : std::string("none")));
        c->move_rpc = stub_->PrepareAsyncRequestTransition(c->ctx.get(), req, &cq_);
        c->move_rpc->StartCall();
        c->move_rpc->Finish(&c->moved, &c->status, c);
        return true;
      }
      case Phase::kGet: {
        c->target = o_.ids[static_cast<size_t>(rng_() % o_.ids.size())];
        t = TokensOf(c->target.unit);
        v1::GetClueRequest req;
        req.set_clue_id(c->target.id);
        c->ctx->AddMetadata("authorization", "Bearer " + (t ? t->leader : std::string("none")));
        c->clue_rpc = stub_->PrepareAsyncGetClue(c->ctx.get(), req, &cq_);
        c->clue_rpc->StartCall();
        c->clue_rpc->Finish(&c->clue, &c->status, c);
        return true;
      }
    }
    return false;
  }

  void Finish(Call *c) {
    std::string err;
    if (!c->status.ok()) {
      err = std::to_string(static_cast<int>(c->status.error_code())) + ": " + c->status.error_message();
    } else if (o_.phase == Phase::kSubmit) {
      if (c->clue.id() == 0) err = "SubmitClue answered a clue without an id";
      c->target.id = c->clue.id();
    } else if (o_.phase == Phase::kGet) {
      if (c->clue.id() != c->target.id) err = "GetClue answered another clue";
    } else {
      v1::ClueState want = o_.phase == Phase::kMove ? v1::CLUE_STATE_PRELIMINARY_CHECK : v1::CLUE_STATE_CLOSED;
      if (c->moved.clue().id() != c->target.id || c->moved.clue().state() != want)
        err = "RequestTransition answered another clue or state";
    }
    if (err.empty()) {
      tally.ok++;
      tally.lat_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - c->t0).count());
      if (o_.phase != Phase::kGet) tally.done.push_back(c->target);
    } else {
      tally.errors++;
      if (tally.first_error.empty()) tally.first_error = err;
    }
  }

  const Options &o_;
  int index_, calls_;
  Clock::time_point end_;
  std::mt19937_64 rng_;
  std::unique_ptr<v1::ClueService::Stub> stub_;
  grpc::CompletionQueue cq_;
};

int usage() {
  std::fprintf(stderr,
               "usage: grpcpp-load --server HOST:PORT --phase submit|move|close|get --concurrency N\n"
               "                   [--connections K] [--duration S] --users FILE [--ids-in FILE]\n"
               "                   [--ids-out FILE]\n"
               "One phase of bench/load through grpc++ (async calls, one channel per connection);\n"
               "prints one JSON object, as clue-load does (bench/load.c).\n");
  return 2;
}

std::string json_escape(const std::string &s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) ch = ' ';
    out += ch;
  }
  return out;
}

}  // namespace

int main(int argc, char **argv) {
  Options o;
  std::string users, ids_in, ids_out;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") return usage() == 2 ? 0 : 0;
    if (i + 1 >= argc) return usage();
    std::string v = argv[++i];
    if (a == "--server") {
      o.server = v;
    } else if (a == "--phase") {
      static const std::pair<const char *, Phase> names[] = {
          {"submit", Phase::kSubmit}, {"move", Phase::kMove}, {"close", Phase::kClose}, {"get", Phase::kGet}};
      bool found = false;
      for (const auto &n : names)
        if (v == n.first) o.phase = n.second, o.phase_name = n.first, found = true;
      if (!found) return usage();
    } else if (a == "--concurrency") {
      o.concurrency = std::atoi(v.c_str());
    } else if (a == "--connections") {
      o.connections = std::atoi(v.c_str());
    } else if (a == "--duration") {
      o.duration = std::atof(v.c_str());
    } else if (a == "--users") {
      users = v;
    } else if (a == "--ids-in") {
      ids_in = v;
    } else if (a == "--ids-out") {
      ids_out = v;
    } else {
      return usage();
    }
  }
  if (o.server.empty() || users.empty() || o.concurrency < 1 || o.concurrency > 4096 || o.connections < 1 ||
      o.duration <= 0)
    return usage();
  o.connections = std::min(o.connections, o.concurrency);
  {
    std::ifstream f(users);
    std::string line;
    while (std::getline(f, line)) {
      std::istringstream in(line);
      long long unit;
      std::string role, token;
      if (!(in >> unit >> role >> token)) continue;
      if (!o.by_unit.count(unit)) o.units.emplace_back(unit, Tokens{});
      Tokens &t = o.by_unit[unit];
      (role == "LEADER" ? t.leader : t.member) = token;
    }
    for (auto &u : o.units) u.second = o.by_unit[u.first];
  }
  if (o.units.empty()) {
    std::fprintf(stderr, "grpcpp-load: %s names no unit\n", users.c_str());
    return 2;
  }
  if (o.phase != Phase::kSubmit) {
    std::ifstream f(ids_in);
    Ref r;
    while (f >> r.id >> r.unit) o.ids.push_back(r);
    if (o.ids.empty()) {
      std::fprintf(stderr, "grpcpp-load: phase %s needs --ids-in with clues\n", o.phase_name);
      return 2;
    }
  }

  auto t0 = Clock::now();
  auto end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration));
  std::vector<std::unique_ptr<Channel>> channels;
  for (int i = 0; i < o.connections; i++)
    channels.push_back(std::make_unique<Channel>(o, i, o.concurrency / o.connections +
                                                           (i < o.concurrency % o.connections ? 1 : 0), end));
  std::vector<std::thread> threads;
  for (auto &ch : channels) threads.emplace_back([&ch] { ch->Run(); });
  for (auto &t : threads) t.join();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();

  Tally all;
  for (auto &ch : channels) {
    all.ok += ch->tally.ok;
    all.errors += ch->tally.errors;
    if (all.first_error.empty()) all.first_error = ch->tally.first_error;
    all.lat_ms.insert(all.lat_ms.end(), ch->tally.lat_ms.begin(), ch->tally.lat_ms.end());
    all.done.insert(all.done.end(), ch->tally.done.begin(), ch->tally.done.end());
  }
  std::sort(all.lat_ms.begin(), all.lat_ms.end());
  auto pick = [&](double p) {
    if (all.lat_ms.empty()) return 0.0;
    return all.lat_ms[std::min(all.lat_ms.size() - 1, static_cast<size_t>(p * (all.lat_ms.size() - 1) + 0.5))];
  };
  if (!ids_out.empty()) {
    std::FILE *f = std::fopen(ids_out.c_str(), "w");
    if (!f) {
      std::perror(ids_out.c_str());
      return 1;
    }
    for (const auto &r : all.done) std::fprintf(f, "%lld %lld\n", r.id, r.unit);
    std::fclose(f);
  }
  long long calls = all.ok + all.errors;
  std::printf(
      "{\"phase\":\"%s\",\"concurrency\":%d,\"connections\":%d,\"calls\":%lld,\"ok\":%lld,\"errors\":%lld,"
      "\"seconds\":%.3f,\"per_second\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"first_error\":\"%s\"}\n",
      o.phase_name, o.concurrency, o.connections, calls, all.ok, all.errors, secs, secs > 0 ? all.ok / secs : 0.0,
      pick(0.5), pick(0.99), json_escape(all.first_error).c_str());
  return 0;
}
