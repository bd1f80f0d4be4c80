// End to end: the real fanoutd binary over origins that misbehave — a file
// root with symlinks out of it, a root that vanishes, keys no file can have,
// and a gRPC origin answering garbage — called through fanoutctl, whose exit
// codes tell scripts whether retrying can help (3 = NOT_FOUND, 4 = retry).
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "fanout/v1/sidecar.pb.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace fanout {
namespace {

using ::fanout::testing::RunProcess;
using ::fanout::testing::Subprocess;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

// A fanoutd process on a free loopback port with `yaml` as its config.
class Daemon : public testing::FanoutdProcess {
 public:
  explicit Daemon(const std::string& yaml) : FanoutdProcess(FANOUTD_PATH, yaml) {}
};

testing::RunResult Ctl(const std::string& addr, std::vector<std::string> args) {
  std::vector<std::string> argv = {FANOUTCTL_PATH, "--addr=" + addr, "--timeout=10s"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv);
}

// Runs `get` until `done` holds for its result or `timeout` passes (for
// waiting on a ttl to run out); returns the last result.
template <typename Done>
testing::RunResult PollGet(const std::string& addr, const std::string& key, Done done,
                           absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time deadline = absl::Now() + timeout;
  testing::RunResult r = Ctl(addr, {"get", key});
  while (!done(r) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
    r = Ctl(addr, {"get", key});
  }
  return r;
}

class TempRoot {
 public:
  TempRoot() {
    std::string pattern = (fs::temp_directory_path() / "fanout_e2e_root_XXXXXX").string();
    dir_ = ::mkdtemp(pattern.data());
    root_ = dir_ / "root";
    fs::create_directories(root_);
  }
  ~TempRoot() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  const fs::path& path() const { return root_; }
  void Write(const std::string& key, const std::string& value) const {
    fs::create_directories((root_ / key).parent_path());
    std::ofstream(root_ / key) << value;
  }

 private:
  fs::path dir_;
  fs::path root_;
};

std::string FileOriginYaml(const fs::path& root, const std::string& extra = "") {
  return absl::StrCat("origin:\n  type: file\n  file:\n    root: ", root.string(), "\n", extra);
}

TEST(FileOriginE2eTest, SymlinksOutOfTheRootServeNothing) {
  TempRoot root;
  root.Write("flags/x", "inside");
  fs::create_symlink("/", root.path() / "rootlink");
  fs::create_symlink("/etc/passwd", root.path() / "passwd");
  fs::create_symlink("/proc/self/environ", root.path() / "environ");
  fs::create_symlink("flags/x", root.path() / "alias");
  Daemon d(FileOriginYaml(root.path()));
  ASSERT_FALSE(d.address().empty()) << d.process().err();

  for (const char* key : {"rootlink/etc/passwd", "passwd", "environ"}) {
    auto r = Ctl(d.address(), {"get", key});
    EXPECT_EQ(r.code, 1) << key << ": " << r.err;  // permanent: not worth a retry
    EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION")) << key;
    EXPECT_EQ(r.out, "") << key;
    EXPECT_THAT(r.err, Not(HasSubstr("PATH="))) << key;
  }
  auto alias = Ctl(d.address(), {"get", "alias"});
  EXPECT_EQ(alias.code, 0) << alias.err;
  EXPECT_EQ(alias.out, "inside");
}

TEST(FileOriginE2eTest, KeysNoFileCanHaveAreNotWorthARetry) {
  TempRoot root;
  fs::create_symlink("loop-b", root.path() / "loop-a");
  fs::create_symlink("loop-a", root.path() / "loop-b");
  Daemon d(FileOriginYaml(root.path()));
  ASSERT_FALSE(d.address().empty()) << d.process().err();

  auto long_segment = Ctl(d.address(), {"get", "flags/" + std::string(256, 's')});
  EXPECT_EQ(long_segment.code, 1) << long_segment.err;
  EXPECT_THAT(long_segment.err, HasSubstr("INVALID_ARGUMENT"));
  auto long_key = Ctl(d.address(), {"get", std::string(1000, 'k')});
  EXPECT_EQ(long_key.code, 1) << long_key.err;
  auto loop = Ctl(d.address(), {"get", "loop-a"});
  EXPECT_EQ(loop.code, 1) << loop.err;
  EXPECT_THAT(loop.err, HasSubstr("loop-a"));
}

TEST(FileOriginE2eTest, AVanishedRootServesStaleValuesAndNeverEvictsThem) {
  TempRoot root;
  root.Write("flags/x", "v1");
  Daemon d(FileOriginYaml(root.path(), "cache:\n  ttl: 1s\n  max_stale: 1h\n"));
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  auto first = Ctl(d.address(), {"get", "flags/x"});
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_EQ(first.out, "v1");

  fs::remove_all(root.path());
  // The origin cannot answer: retry (4), not "no such key" (3) ...
  auto uncached = Ctl(d.address(), {"get", "flags/y"});
  EXPECT_EQ(uncached.code, 4) << uncached.err;
  EXPECT_THAT(uncached.err, HasSubstr("origin.file.root"));
  // ... a read that bypasses the cache falls back on the copy it holds, flagged ...
  auto bypass = Ctl(d.address(), {"get", "--bypass", "flags/x"});
  EXPECT_EQ(bypass.code, 0) << bypass.err;
  EXPECT_EQ(bypass.out, "v1");
  EXPECT_THAT(bypass.err, HasSubstr("stale=true"));
  // ... and the cached value is still there, served stale once its ttl ran out.
  auto stale = PollGet(d.address(), "flags/x", [](const testing::RunResult& r) {
    return r.code != 0 || r.err.find("stale=true") != std::string::npos;
  });
  EXPECT_EQ(stale.code, 0) << stale.err;
  EXPECT_EQ(stale.out, "v1");
  EXPECT_THAT(stale.err, HasSubstr("stale=true"));

  root.Write("flags/x", "v2");
  auto back =
      PollGet(d.address(), "flags/x", [](const testing::RunResult& r) { return r.out == "v2"; });
  EXPECT_EQ(back.code, 0) << back.err;
  EXPECT_EQ(back.out, "v2");
}

// The origin's push: a file changed under the root reaches Get long before
// the ttl, without an Invalidate call, whether it is rewritten in place,
// renamed over, deleted or created.
TEST(FileOriginE2eTest, AChangedFileIsServedWithoutAnInvalidate) {
  TempRoot root;
  root.Write("flags/x", "v1");
  root.Write("flags/y", "y1");
  Daemon d(FileOriginYaml(root.path(), "cache:\n  ttl: 1h\n"));
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  const std::string& addr = d.address();
  ASSERT_EQ(Ctl(addr, {"get", "flags/x"}).out, "v1");
  ASSERT_EQ(Ctl(addr, {"get", "flags/y"}).out, "y1");
  ASSERT_EQ(Ctl(addr, {"get", "flags/z"}).code, 3);

  root.Write("flags/x", "v2");
  auto edited = PollGet(addr, "flags/x", [](const testing::RunResult& r) { return r.out == "v2"; });
  EXPECT_EQ(edited.out, "v2") << edited.err;

  root.Write("flags/.x.tmp", "v3");
  fs::rename(root.path() / "flags/.x.tmp", root.path() / "flags/x");
  auto renamed =
      PollGet(addr, "flags/x", [](const testing::RunResult& r) { return r.out == "v3"; });
  EXPECT_EQ(renamed.out, "v3") << renamed.err;

  fs::remove(root.path() / "flags/y");
  auto deleted = PollGet(addr, "flags/y", [](const testing::RunResult& r) { return r.code == 3; });
  EXPECT_EQ(deleted.code, 3) << deleted.out << deleted.err;

  root.Write("flags/z", "z1");
  auto created =
      PollGet(addr, "flags/z", [](const testing::RunResult& r) { return r.out == "z1"; });
  EXPECT_EQ(created.out, "z1") << created.err;
}

// origin.push: false leaves changed values to their ttl.
TEST(FileOriginE2eTest, WithoutPushAChangedFileWaitsForTheTtl) {
  TempRoot root;
  root.Write("flags/x", "v1");
  Daemon d(FileOriginYaml(root.path(), "  push: false\ncache:\n  ttl: 1h\n"));
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  ASSERT_EQ(Ctl(d.address(), {"get", "flags/x"}).out, "v1");
  root.Write("flags/x", "v2");
  // A change a pushing pod would have seen by now: the watch's debounce is
  // 50 ms; a second is twenty times that.
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(Ctl(d.address(), {"get", "flags/x"}).out, "v1");
  EXPECT_EQ(Ctl(d.address(), {"get", "--bypass", "flags/x"}).out, "v2");
}

TEST(FileOriginE2eTest, SampleNamespaceLivesUnderItsFolderAndCannotBeAliased) {
  Daemon d(absl::StrCat("origin:\n  file:\n    root: ", FANOUT_SOURCE_DIR,
                        "/deploy/examples/config.d\n"));
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  const std::string& addr = d.address();

  auto tenant = Ctl(addr, {"--namespace=tenant-acme", "get", "flags/new-checkout"});
  EXPECT_EQ(tenant.code, 0) << tenant.err;
  auto plain = Ctl(addr, {"get", "flags/new-checkout"});
  EXPECT_EQ(plain.code, 0) << plain.err;
  EXPECT_NE(tenant.out, plain.out);
  auto alias = Ctl(addr, {"get", "tenant-acme/flags/new-checkout"});
  EXPECT_EQ(alias.code, 3) << alias.err;
  auto folder = Ctl(addr, {"get", "@ns/tenant-acme/flags/new-checkout"});
  EXPECT_EQ(folder.code, 1) << folder.err;
  EXPECT_THAT(folder.err, HasSubstr("namespace field"));
}

// A gRPC service answering /fanout.v1.Origin/Fetch (any method, in fact)
// with whatever bytes the test sets, valid or not.
class RawOrigin final : public grpc::CallbackGenericService {
 public:
  RawOrigin() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterCallbackGenericService(this);
    server_ = builder.BuildAndStart();
  }
  ~RawOrigin() override {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  void Answer(std::string bytes) {
    absl::MutexLock l(&mu_);
    answer_ = std::move(bytes);
  }
  static std::string Found(const std::string& value, int64_t version) {
    fanout::v1::FetchResponse r;
    r.set_found(true);
    r.set_value(value);
    r.set_version(version);
    return r.SerializeAsString();
  }
  static std::string NotFound() {
    fanout::v1::FetchResponse r;
    r.set_found(false);
    return r.SerializeAsString();
  }

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext*) override {
    std::string answer;
    {
      absl::MutexLock l(&mu_);
      answer = answer_;
    }
    return new Reactor(std::move(answer));
  }

 private:
  class Reactor final : public grpc::ServerGenericBidiReactor {
   public:
    explicit Reactor(std::string answer) : answer_(std::move(answer)) { StartRead(&request_); }
    void OnReadDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request"));
        return;
      }
      grpc::Slice slice(answer_.data(), answer_.size());
      response_ = grpc::ByteBuffer(&slice, 1);
      StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
    }
    void OnDone() override { delete this; }

   private:
    const std::string answer_;
    grpc::ByteBuffer request_;
    grpc::ByteBuffer response_;
  };

  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  std::string answer_ ABSL_GUARDED_BY(mu_);
};

TEST(GrpcOriginE2eTest, GarbageAnswersNeverEvictAGoodValue) {
  RawOrigin origin;
  origin.Answer(RawOrigin::Found("good", 1));
  Daemon d(absl::StrCat("origin:\n  type: grpc\n  grpc:\n    target: ", origin.address(), "\n"));
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  auto first = Ctl(d.address(), {"get", "k"});
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_EQ(first.out, "good");

  for (const std::string& garbage :
       {std::string("\xff\xff\xff\xff"), std::string(), std::string("\x78\x01", 2)}) {
    origin.Answer(garbage);
    // The origin failed: the held copy answers, flagged stale, and stays.
    auto bypass = Ctl(d.address(), {"get", "--bypass", "k"});
    EXPECT_EQ(bypass.code, 0) << bypass.err;
    EXPECT_EQ(bypass.out, "good");
    EXPECT_THAT(bypass.err, HasSubstr("stale=true"));
    auto uncached = Ctl(d.address(), {"get", "--bypass", "never-read"});
    EXPECT_EQ(uncached.code, 4) << uncached.err;  // UNAVAILABLE: not "no such key"
    auto cached = Ctl(d.address(), {"get", "k"});
    EXPECT_EQ(cached.code, 0) << cached.err;
    EXPECT_EQ(cached.out, "good");
  }

  // Only an explicit "no such key" removes it.
  origin.Answer(RawOrigin::NotFound());
  EXPECT_EQ(Ctl(d.address(), {"get", "--bypass", "k"}).code, 3);
  EXPECT_EQ(Ctl(d.address(), {"get", "k"}).code, 3);
}

TEST(GrpcOriginE2eTest, AnOversizedValueIsFailedPreconditionNamingTheLimit) {
  RawOrigin origin;
  origin.Answer(RawOrigin::Found(std::string(64 << 10, 'x'), 1));
  Daemon d(
      absl::StrCat("limits:\n  max_value_bytes: 1KiB\norigin:\n  type: grpc\n  grpc:\n"
                   "    target: ",
                   origin.address(), "\n"));
  ASSERT_FALSE(d.address().empty()) << d.process().err();
  auto big = Ctl(d.address(), {"get", "k"});
  EXPECT_EQ(big.code, 1) << big.err;
  EXPECT_THAT(big.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(big.err, HasSubstr("limits.max_value_bytes"));
}

}  // namespace
}  // namespace fanout
