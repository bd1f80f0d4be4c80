// End to end: the real fanoutd binary, called by the client library,
// fanoutctl and buf curl (reflection only, as grpcurl would).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "client/client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/eventually.h"
#include "tests/testing/fake_grpc_origin.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace fanout {
namespace {

using ::fanout::testing::Eventually;
using ::fanout::testing::RunProcess;
using ::fanout::testing::Subprocess;
using ::testing::HasSubstr;
using ::testing::Not;

// A working directory of its own for each daemon: the embedded default's
// relative paths resolve there (deploy/ links to the sources; its L3 under
// .fanout/ is this daemon's alone, empty at start).
class WorkDir {
 public:
  WorkDir() : path_(testing::TempPath("workdir")) {
    std::filesystem::create_directories(path_);
    std::filesystem::create_directory_symlink(std::string(FANOUT_SOURCE_DIR) + "/deploy",
                                              path_ + "/deploy");
  }
  ~WorkDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A fanoutd process on a free loopback port.
class Daemon {
 public:
  explicit Daemon(std::vector<std::string> args, std::string cwd = "") {
    if (cwd.empty()) cwd = work_.path();
    std::vector<std::string> argv = {FANOUTD_PATH};
    bool has_listen = false;
    for (const auto& a : args) has_listen = has_listen || a.rfind("--listen", 0) == 0;
    if (!has_listen) argv.push_back("--listen=127.0.0.1:0");
    argv.insert(argv.end(), args.begin(), args.end());
    process_ = std::make_unique<Subprocess>(argv, cwd);
    address_ = testing::ListeningAddress(*process_);
  }
  const std::string& address() const { return address_; }
  Subprocess& process() { return *process_; }

 private:
  WorkDir work_;
  std::unique_ptr<Subprocess> process_;
  std::string address_;
};

testing::RunResult Ctl(const std::string& addr, std::vector<std::string> args) {
  std::vector<std::string> argv = {FANOUTCTL_PATH, "--addr=" + addr};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv);
}

testing::RunResult BufCurl(std::vector<std::string> args) {
  std::vector<std::string> argv = {"/usr/bin/env", "buf", "curl", "--protocol", "grpc",
                                   "--http2-prior-knowledge"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, absl::Seconds(60));
}

int CountLines(const std::string& text, absl::string_view needle) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) n += absl::StrContains(line, needle);
  return n;
}

TEST(FanoutdE2eTest, EmbeddedDefaultServesSampleKeysThroughFanoutctl) {
  Daemon d({});
  ASSERT_FALSE(d.address().empty()) << d.process().err();

  auto first = Ctl(d.address(), {"get", "flags/new-checkout"});
  EXPECT_EQ(first.code, 0) << first.err;
  EXPECT_THAT(first.out, HasSubstr("\"rollout_percent\": 25"));
  EXPECT_THAT(first.err, HasSubstr("served_by=TIER_ORIGIN"));

  auto second = Ctl(d.address(), {"get", "flags/new-checkout"});
  EXPECT_EQ(second.code, 0);
  EXPECT_THAT(second.err, HasSubstr("served_by=TIER_L1"));

  auto tenant = Ctl(d.address(), {"--namespace=tenant-acme", "--json", "get", "flags/new-checkout"});
  EXPECT_EQ(tenant.code, 0) << tenant.err;
  EXPECT_THAT(tenant.out, HasSubstr("\"served_by\": \"TIER_ORIGIN\""));

  auto batch = Ctl(d.address(), {"batch-get", "endpoints/payments", "ratelimits/login"});
  EXPECT_EQ(batch.code, 0) << batch.err;
  EXPECT_THAT(batch.out, HasSubstr("ratelimits/login\tTIER_ORIGIN\t{\"requests_per_second\": 20"));

  auto health = Ctl(d.address(), {"health"});
  EXPECT_EQ(health.code, 0);
  EXPECT_THAT(health.out, HasSubstr("SERVING"));
}

TEST(FanoutdE2eTest, FanoutctlExitCodesTellScriptsWhatHappened) {
  Daemon d({});
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  auto missing = Ctl(d.address(), {"get", "flags/absent"});
  EXPECT_EQ(missing.code, 3);
  EXPECT_THAT(missing.err, HasSubstr("NOT_FOUND"));
  auto empty = Ctl(d.address(), {"get", ""});
  EXPECT_EQ(empty.code, 1);
  EXPECT_THAT(empty.err, HasSubstr("INVALID_ARGUMENT: key is empty"));
  auto oversized = Ctl(d.address(), {"get", std::string(2000, 'k')});
  EXPECT_EQ(oversized.code, 1);
  EXPECT_THAT(oversized.err, HasSubstr("limits.max_key_bytes"));
  auto usage = Ctl(d.address(), {"frobnicate"});
  EXPECT_EQ(usage.code, 2);
  auto invalidate = Ctl(d.address(), {"invalidate", "--prefix=flags/"});
  EXPECT_EQ(invalidate.code, 0);
  EXPECT_THAT(invalidate.out, HasSubstr("evicted="));
  auto down = Ctl("127.0.0.1:1", {"--timeout=2s", "health"});
  EXPECT_EQ(down.code, 4);
}

TEST(FanoutdE2eTest, ReflectionClientListsDescribesAndCalls) {
  Daemon d({});
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  const std::string url = "http://" + d.address();

  auto services = BufCurl({"--list-services", url});
  ASSERT_EQ(services.code, 0) << services.err;
  EXPECT_THAT(services.out, HasSubstr("fanout.v1.Sidecar"));
  EXPECT_THAT(services.out, HasSubstr("grpc.health.v1.Health"));

  // grpcurl's "describe": the methods, and the descriptor of the service.
  auto methods = BufCurl({"--reflect-protocol", "grpc-v1alpha", "--list-methods", url});
  ASSERT_EQ(methods.code, 0) << methods.err;
  for (const char* m : {"Get", "BatchGet", "Invalidate", "Route", "Watch"}) {
    EXPECT_THAT(methods.out, HasSubstr(std::string("fanout.v1.Sidecar/") + m));
  }
  auto descriptor = BufCurl({"--reflect-protocol", "grpc-v1alpha", "-d",
                             R"({"file_containing_symbol":"fanout.v1.Sidecar"})",
                             url + "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"});
  ASSERT_EQ(descriptor.code, 0) << descriptor.err;
  EXPECT_THAT(descriptor.out, HasSubstr("fileDescriptorProto"));

  auto get = BufCurl({"-d", R"({"key":"endpoints/inventory"})", url + "/fanout.v1.Sidecar/Get"});
  ASSERT_EQ(get.code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("\"servedBy\": \"TIER_ORIGIN\""));
  EXPECT_THAT(get.out, HasSubstr("\"value\":"));

  auto bad = BufCurl({"-d", R"({"key":""})", url + "/fanout.v1.Sidecar/Get"});
  EXPECT_NE(bad.code, 0);
  EXPECT_THAT(bad.out + bad.err, HasSubstr("invalid_argument"));

  auto health = BufCurl({"-d", "{}", url + "/grpc.health.v1.Health/Check"});
  ASSERT_EQ(health.code, 0) << health.err;
  EXPECT_THAT(health.out, HasSubstr("SERVING"));
}

TEST(FanoutdE2eTest, ReflectionCanBeTurnedOff) {
  Daemon d({"--reflection=false"});
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  auto services = BufCurl({"--list-services", "http://" + d.address()});
  EXPECT_NE(services.code, 0);
  EXPECT_EQ(Ctl(d.address(), {"health"}).code, 0);  // the services themselves still answer
}

TEST(FanoutdE2eTest, ListensOnUnixSocket) {
  const std::string socket = testing::TempPath("fanout.sock");
  Daemon d({"--listen=unix://" + socket});
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  auto get = Ctl("unix://" + socket, {"get", "ratelimits/api-default"});
  EXPECT_EQ(get.code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("\"burst\": 50"));
  std::filesystem::remove(socket);
}

TEST(FanoutdE2eTest, BadConfigFailsStartNamingTheKey) {
  const std::string path = testing::TempPath("bad.yaml");
  std::ofstream(path) << "cache:\n  ttl: 5s\n  tll: 3s\n";
  auto r = RunProcess({FANOUTD_PATH, "--config=" + path, "--listen=127.0.0.1:0"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown key cache.tll"));
  std::ofstream(path) << "origin:\n  file:\n    root: /nonexistent/dir\n";
  r = RunProcess({FANOUTD_PATH, "--config=" + path, "--listen=127.0.0.1:0"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("origin.file.root"));
  r = RunProcess({FANOUTD_PATH, "--log_level=loud"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--log_level"));
  std::filesystem::remove(path);
}

TEST(FanoutdE2eTest, SigtermUnderLoadFinishesInFlightCallsAndExitsZero) {
  auto origin = testing::FakeGrpcOrigin::Start();
  origin->SetDelay(absl::Milliseconds(500));
  constexpr int kCalls = 40;
  for (int i = 0; i < kCalls; ++i) origin->Set(absl::StrCat("k", i), absl::StrCat("v", i));
  const std::string config = testing::TempPath("drain.yaml");
  std::ofstream(config) << "server:\n  drain_timeout: 20s\n  shutdown_delay: 0s\n"
                           "origin:\n  type: grpc\n  timeout: 10s\n"
                           "  grpc:\n    target: "
                        << origin->address() << "\n";
  Daemon d({"--config=" + config});
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  auto client = *client::Client::Connect(d.address(), {.timeout = absl::Seconds(30)});
  ASSERT_OK(client->Health(""));  // connected before the load starts

  std::atomic<int> ok{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < kCalls; ++i) {
    callers.emplace_back([&, i] {
      auto r = client->Get(absl::StrCat("k", i));
      if (r.ok() && r->value() == absl::StrCat("v", i)) {
        ok.fetch_add(1);
      } else {
        ADD_FAILURE() << "call " << i << ": " << r.status();
      }
    });
  }
  // Every call has reached the origin: they are all in flight in fanoutd.
  // (EXPECT, not ASSERT: returning now would leave the callers joinable.)
  EXPECT_TRUE(Eventually([&] { return origin->in_flight() == kCalls; }))
      << origin->in_flight() << " of " << kCalls << " calls reached the origin";
  const absl::Time signalled = absl::Now();
  d.process().Signal(SIGTERM);
  for (auto& t : callers) t.join();
  std::optional<int> code = d.process().Wait(absl::Seconds(25));
  ASSERT_TRUE(code.has_value()) << "fanoutd did not exit within the drain deadline";
  EXPECT_EQ(*code, 0) << d.process().err();
  EXPECT_LT(absl::Now() - signalled, absl::Seconds(20));
  EXPECT_EQ(ok.load(), kCalls);
  EXPECT_THAT(d.process().err(), HasSubstr("draining"));
  std::filesystem::remove(config);
}

TEST(FanoutdE2eTest, SecondFanoutdOnABusyPortExitsNamingTheAddress) {
  Daemon first({});
  ASSERT_FALSE(first.address().empty()) << first.process().err();
  // With gRPC's default SO_REUSEPORT this one would start (exit 0 on SIGTERM)
  // and take a share of the calls.
  auto second = RunProcess({FANOUTD_PATH, "--listen=" + first.address()}, absl::Seconds(30),
                           FANOUT_SOURCE_DIR);
  EXPECT_EQ(second.code, 2);
  EXPECT_THAT(second.err, HasSubstr("cannot listen on \"" + first.address() + "\""));
  EXPECT_THAT(second.err, HasSubstr("Address already in use"));
  EXPECT_EQ(Ctl(first.address(), {"health"}).code, 0);
}

TEST(FanoutdE2eTest, ListenPortsOutOfRangeOrMissingAreRejected) {
  // gRPC would bind 34463, 4464 and 443.
  for (const char* listen : {"127.0.0.1:99999", "0.0.0.0:70000", "127.0.0.1"}) {
    auto r = RunProcess({FANOUTD_PATH, std::string("--listen=") + listen});
    EXPECT_EQ(r.code, 2) << listen;
    EXPECT_THAT(r.err, HasSubstr("--listen: \"" + std::string(listen) + "\""));
  }
  const std::string path = testing::TempPath("listen.yaml");
  std::ofstream(path) << "server:\n  listen: 127.0.0.1:99999\n";
  auto r = RunProcess({FANOUTD_PATH, "--config=" + path});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("server.listen: \"127.0.0.1:99999\" has port 99999"));
  std::filesystem::remove(path);
}

TEST(FanoutdE2eTest, DuplicateKeysAndMalformedAddressesFailStartNamingTheKey) {
  const std::string path = testing::TempPath("dup.yaml");
  struct Case {
    std::string yaml;
    std::string expected;
  };
  for (const Case& c :
       std::vector<Case>{{"server:\n  drain_timeout: 1s\nserver:\n  listen: 127.0.0.1:0\n",
                          "duplicate key server (lines 1 and 3)"},
                         {"origin:\n  type: grpc\n  grpc:\n    target: \"origin.internal\"\n",
                          "origin.grpc.target: \"origin.internal\" has no port"},
                         {"routes:\n  r:\n    method: /a.B/C\n    backends: [\"127.0.0.1:9000\", "
                          "\"http://cache:80\"]\n",
                          "routes.r.backends[1]: \"http://cache:80\" has scheme \"http\""}}) {
    std::ofstream(path) << c.yaml;
    auto r = RunProcess({FANOUTD_PATH, "--config=" + path, "--listen=127.0.0.1:0"});
    EXPECT_EQ(r.code, 2) << c.yaml;
    EXPECT_THAT(r.err, HasSubstr(c.expected));
  }
  std::filesystem::remove(path);
}

// Replaces `path` whole, as editors and config tools do (write, then
// rename): fanoutd, which watches the file, never reads it half-written.
void ReplaceFile(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << text;
  std::filesystem::rename(tmp, path);
}

// The key a Get names after `limits.max_key_bytes` is lowered to 16.
constexpr char kLongKey[] = "flags/new-checkout-but-longer";

// fanoutctl's answer to a Get of kLongKey: whether the key limit refused it.
bool KeyRefused(const std::string& addr) {
  return absl::StrContains(Ctl(addr, {"get", kLongKey}).err, "limits.max_key_bytes");
}

// SIGHUP re-reads --config: a lowered key limit refuses keys it let through.
TEST(FanoutdE2eTest, SighupReloadsLimitsFromTheConfigFile) {
  const std::string config = testing::TempPath("hup.yaml");
  std::ofstream(config) << "server:\n  shutdown_delay: 0s\n";
  Daemon d({"--config=" + config});
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  EXPECT_FALSE(KeyRefused(d.address()));

  ReplaceFile(config, "server:\n  shutdown_delay: 0s\nlimits:\n  max_key_bytes: 16\n");
  d.process().Signal(SIGHUP);  // the default action would end the process (rc 129)
  EXPECT_TRUE(d.process().WaitForStderr("configuration reloaded (", absl::Seconds(20)))
      << d.process().err();
  EXPECT_THAT(d.process().err(), HasSubstr("limits.max_key_bytes"));
  EXPECT_TRUE(KeyRefused(d.address()));
  EXPECT_TRUE(d.process().running());
  d.process().Signal(SIGTERM);
  EXPECT_EQ(d.process().Wait(absl::Seconds(20)), 0);
  std::filesystem::remove(config);
}

// A file that changes a key only a restart can apply is refused whole, the
// log naming the key: the reloadable change beside it is not applied either.
TEST(FanoutdE2eTest, ReloadChangingRestartKeyIsRefusedNamingTheKey) {
  const std::string config = testing::TempPath("restart.yaml");
  ReplaceFile(config, "server:\n  shutdown_delay: 0s\n  threads: 2\n");
  Daemon d({"--config=" + config});
  ASSERT_FALSE(d.address().empty()) << d.process().err();

  ReplaceFile(config,
              "server:\n  shutdown_delay: 0s\n  threads: 3\n"
              "limits:\n  max_key_bytes: 16\n");
  d.process().Signal(SIGHUP);
  EXPECT_TRUE(
      d.process().WaitForStderr("server.threads changed and needs a restart", absl::Seconds(20)))
      << d.process().err();
  EXPECT_FALSE(KeyRefused(d.address()));
  EXPECT_EQ(Ctl(d.address(), {"health"}).code, 0);
  d.process().Signal(SIGTERM);
  EXPECT_EQ(d.process().Wait(absl::Seconds(20)), 0);
  std::filesystem::remove(config);
}

// An invalid file is rejected, saying why; the running configuration stays
// and the next valid file is applied.
TEST(FanoutdE2eTest, ReloadOfInvalidFileKeepsRunningConfigAndSaysWhy) {
  const std::string config = testing::TempPath("bad.yaml");
  ReplaceFile(config, "server:\n  shutdown_delay: 0s\n");
  Daemon d({"--config=" + config});
  ASSERT_FALSE(d.address().empty()) << d.process().err();

  ReplaceFile(config, "server:\n  shutdown_delay: 0s\nlimits:\n  max_key_bytes: banana\n");
  d.process().Signal(SIGHUP);
  ASSERT_TRUE(d.process().WaitForStderr("rejected", absl::Seconds(20))) << d.process().err();
  EXPECT_THAT(d.process().err(), HasSubstr("max_key_bytes"));
  EXPECT_FALSE(KeyRefused(d.address()));

  ReplaceFile(config, "server:\n  shutdown_delay: 0s\nlimits:\n  max_key_bytes: 16\n");
  d.process().Signal(SIGHUP);
  EXPECT_TRUE(d.process().WaitForStderr("configuration reloaded (", absl::Seconds(20)))
      << d.process().err();
  EXPECT_TRUE(KeyRefused(d.address()));
  d.process().Signal(SIGTERM);
  EXPECT_EQ(d.process().Wait(absl::Seconds(20)), 0);
  std::filesystem::remove(config);
}

// Kubernetes updates a mounted ConfigMap by swapping the `..data` symlink in
// one rename; config.yaml is a symlink through it and never changes itself.
// The swap alone, without a signal, reloads.
TEST(FanoutdE2eTest, ConfigMapSymlinkSwapReloadsWithoutSignal) {
  const std::string dir = testing::TempPath("configmap");
  std::filesystem::create_directories(dir + "/..2026_01");
  std::ofstream(dir + "/..2026_01/config.yaml") << "server:\n  shutdown_delay: 0s\n";
  std::filesystem::create_directory_symlink("..2026_01", dir + "/..data");
  std::filesystem::create_symlink("..data/config.yaml", dir + "/config.yaml");
  Daemon d({"--config=" + dir + "/config.yaml"});
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  EXPECT_FALSE(KeyRefused(d.address()));

  std::filesystem::create_directories(dir + "/..2026_02");
  std::ofstream(dir + "/..2026_02/config.yaml")
      << "server:\n  shutdown_delay: 0s\nlimits:\n  max_key_bytes: 16\n";
  std::filesystem::create_directory_symlink("..2026_02", dir + "/..data_tmp");
  std::filesystem::rename(dir + "/..data_tmp", dir + "/..data");
  EXPECT_TRUE(d.process().WaitForStderr("configuration reloaded (file changed)", absl::Seconds(20)))
      << d.process().err();
  EXPECT_TRUE(KeyRefused(d.address()));
  d.process().Signal(SIGTERM);
  EXPECT_EQ(d.process().Wait(absl::Seconds(20)), 0);
  std::filesystem::remove_all(dir);
}

// SIGTERM: health streams NOT_SERVING while calls are still served for
// server.shutdown_delay; a second SIGTERM ends the process at once, exit 1.
TEST(FanoutdE2eTest, SigtermStreamsNotServingThenSecondSigtermEndsAtOnce) {
  const std::string config = testing::TempPath("delay.yaml");
  std::ofstream(config) << "server:\n  shutdown_delay: 1h\n  drain_timeout: 1h\n";
  Daemon d({"--config=" + config});
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  auto channel = grpc::CreateChannel(d.address(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext watch_context;
  watch_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto watch = health->Watch(&watch_context, grpc::health::v1::HealthCheckRequest());
  grpc::health::v1::HealthCheckResponse status;
  ASSERT_TRUE(watch->Read(&status));
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  d.process().Signal(SIGTERM);
  ASSERT_TRUE(watch->Read(&status));
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Ctl(d.address(), {"health"}).code, 5);  // not serving...
  auto get = Ctl(d.address(), {"get", "flags/new-checkout"});
  EXPECT_EQ(get.code, 0) << get.err;  // ...but still answering

  d.process().Signal(SIGTERM);
  std::optional<int> code = d.process().Wait(absl::Seconds(20));
  EXPECT_EQ(code, 1) << d.process().err();
  EXPECT_THAT(d.process().err(), HasSubstr("SIGTERM again"));
  EXPECT_FALSE(watch->Read(&status));
  watch->Finish();
  std::filesystem::remove(config);
}

TEST(FanoutdE2eTest, SigintSkipsTheShutdownDelay) {
  const std::string config = testing::TempPath("int.yaml");
  std::ofstream(config) << "server:\n  shutdown_delay: 1h\n";
  Daemon d({"--config=" + config});
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  d.process().Signal(SIGINT);
  EXPECT_EQ(d.process().Wait(absl::Seconds(20)), 0) << d.process().err();
  std::filesystem::remove(config);
}

// Sends `count` requests of raw bytes on `method`; returns the last status.
grpc::Status SendRaw(const std::string& address, const std::string& method,
                     const std::string& bytes, int count) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::Status last;
  for (int i = 0; i < count; ++i) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    absl::Notification done;
    stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
      last = std::move(s);
      done.Notify();
    });
    done.WaitForNotification();
  }
  return last;
}

TEST(FanoutdE2eTest, GarbageRequestsAreRefusedAndTheirLogLinesRateLimited) {
  Daemon d({});
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  // A GetRequest whose key (a proto3 string) is not UTF-8, and bytes that
  // are not a protobuf at all.
  const std::string bad_utf8("\x0a\x02\xff\xfe", 4);
  const std::string not_protobuf("\xff\xff\xff\xff\x0f garbage", 14);
  grpc::Status s = SendRaw(d.address(), "/fanout.v1.Sidecar/Get", bad_utf8, 300);
  // gRPC 1.51's callback handlers answer an unparsable request UNIMPLEMENTED
  // (server_callback_handlers.h); only an interceptor could change that.
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  s = SendRaw(d.address(), "/fanout.v1.Sidecar/Get", not_protobuf, 50);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  // Still serving the good ones.
  EXPECT_EQ(Ctl(d.address(), {"get", "flags/new-checkout"}).code, 0);
  // libprotobuf wrote one line per bad request (300); now at most 5 per 10 s.
  const std::string err = d.process().err();
  EXPECT_GE(CountLines(err, "invalid UTF-8"), 1) << err;
  EXPECT_LE(CountLines(err, "invalid UTF-8"), 10) << err;
}

TEST(FanoutdE2eTest, HugeServiceAndRouteNamesGetReadableErrors) {
  Daemon d({});
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  // Echoed whole, 8 KiB would pass the client's metadata limit and the
  // caller would see "metadata size exceeds limit" instead.
  auto r = Ctl(d.address(), {"health", std::string(8192, 's')});
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.err, HasSubstr("unknown service"));
  EXPECT_THAT(r.err, HasSubstr("8192 bytes, cut"));
  auto route = Ctl(d.address(), {"route", std::string(8192, 'r'), "--payload=x"});
  EXPECT_EQ(route.code, 3) << route.err;
  EXPECT_THAT(route.err, HasSubstr("NOT_FOUND: route 'rrrr"));
  EXPECT_LT(route.err.size(), 1024u) << route.err;  // the router cuts the name it echoes
}

}  // namespace
}  // namespace fanout
