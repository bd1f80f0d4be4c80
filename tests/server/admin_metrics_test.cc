// Metrics end to end, in process: a real Fanoutd with its admin endpoint,
// called through the client library, scraped over HTTP.
#include "server/admin_metrics.h"

#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "cache/invalidator.h"
#include "cache/l1/wtinylfu_cache.h"
#include "cache/link_guard.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config.h"
#include "server/fanoutd.h"
#include "server/watch_service.h"
#include "tests/testing/fake_backend.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/fake_invalidation_bus.h"
#include "tests/testing/fake_origin.h"
#include "tests/testing/fake_tier.h"
#include "tests/testing/http_client.h"
#include "tests/testing/loopback_listener.h"
#include "tests/testing/manual_executor.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace fanout::server {
namespace {

namespace fs = std::filesystem;
using ::fanout::testing::HttpRequest;
using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// "name{labels}" -> value, for every sample line; labels sorted by name.
using Samples = std::map<std::string, double>;

// The name="value" pairs inside a sample's braces, each as written.
std::vector<std::string> SplitLabels(absl::string_view inside) {
  std::vector<std::string> labels;
  size_t start = 0;
  bool quoted = false;
  for (size_t i = 0; i < inside.size(); ++i) {
    if (inside[i] == '\\') {
      ++i;
    } else if (inside[i] == '"') {
      quoted = !quoted;
    } else if (inside[i] == ',' && !quoted) {
      labels.emplace_back(inside.substr(start, i - start));
      start = i + 1;
    }
  }
  if (start < inside.size()) labels.emplace_back(inside.substr(start));
  return labels;
}

Samples ParseSamples(const std::string& text) {
  Samples out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "#")) continue;
    const size_t space = line.rfind(' ');
    double value = 0;
    EXPECT_TRUE(absl::SimpleAtod(line.substr(space + 1), &value)) << line;
    const absl::string_view series = line.substr(0, space);
    const size_t brace = series.find('{');
    if (brace == absl::string_view::npos) {
      out[std::string(series)] = value;
      continue;
    }
    std::vector<std::string> labels =
        SplitLabels(series.substr(brace + 1, series.size() - brace - 2));
    std::sort(labels.begin(), labels.end());
    out[absl::StrCat(series.substr(0, brace), "{", absl::StrJoin(labels, ","), "}")] = value;
  }
  return out;
}

class AdminMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::HoldGrpcCallbackQueue();
    root_ = fs::temp_directory_path() / ("fanout_metrics_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "flags");
    std::ofstream(root_ / "flags" / "checkout") << "on";
    std::ofstream(root_ / "flags" / "dark") << "off";
  }
  void TearDown() override {
    client_.reset();
    daemon_.reset();
    fs::remove_all(root_);
  }

  std::string Yaml(absl::string_view extra = "") const {
    return absl::StrCat("server: {listen: \"127.0.0.1:0\"}\n", "admin: {listen: \"127.0.0.1:0\"}\n",
                        "origin: {file: {root: \"", root_.string(), "\"}}\n", extra);
  }
  void StartDaemon(const std::string& yaml) {
    auto config = ParseConfig(yaml, "test.yaml");
    ASSERT_OK(config);
    auto d = Fanoutd::Start(*config);
    ASSERT_OK(d);
    daemon_ = *std::move(d);
    ASSERT_THAT(daemon_->admin_address(), Not(IsEmpty()));
    client_ = *client::Client::Connect(daemon_->address());
  }
  std::string Scrape() {
    auto r = HttpRequest(absl::StrCat("http://", daemon_->admin_address(), "/metrics"));
    EXPECT_OK(r);
    if (!r.ok()) return "";
    EXPECT_EQ(r->status, 200);
    return r->body;
  }
  Samples Metrics() { return ParseSamples(Scrape()); }

  // Calls `method` through a generic stub with an empty request.
  grpc::Status CallRaw(const std::string& method) {
    grpc::GenericStub stub(
        grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials()));
    grpc::CompletionQueue cq;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    grpc::Slice slice("");
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::Status status;
    auto call = stub.PrepareUnaryCall(&context, method, request, &cq);
    call->StartCall();
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag;
    bool ok;
    cq.Next(&tag, &ok);
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
    return status;
  }

  fs::path root_;
  std::unique_ptr<Fanoutd> daemon_;
  std::unique_ptr<client::Client> client_;
};

constexpr char kGetOk[] = R"(fanout_requests_total{code="OK",rpc="fanout.v1.Sidecar/Get"})";
constexpr char kGetNotFound[] =
    R"(fanout_requests_total{code="NOT_FOUND",rpc="fanout.v1.Sidecar/Get"})";
constexpr char kGetInvalid[] =
    R"(fanout_requests_total{code="INVALID_ARGUMENT",rpc="fanout.v1.Sidecar/Get"})";

TEST_F(AdminMetricsTest, RequestsAnswersAndComponentsMoveWithRealCalls) {
  StartDaemon(Yaml());
  Samples before = Metrics();
  EXPECT_EQ(before.count(kGetOk), 0);  // no series before the first call
  EXPECT_EQ(before["fanout_origin_fetches_total"], 0);

  ASSERT_OK(client_->Get("flags/checkout"));
  ASSERT_OK(client_->Get("flags/checkout"));
  ASSERT_OK(client_->Get("flags/checkout"));
  EXPECT_THAT(client_->Get("flags/absent"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(client_->Get(""), StatusIs(absl::StatusCode::kInvalidArgument));
  fanout::v1::BatchGetRequest batch;
  batch.add_keys("flags/checkout");
  batch.add_keys("flags/dark");
  batch.add_keys("flags/absent");
  ASSERT_OK(client_->BatchGet(batch));

  Samples m = Metrics();
  EXPECT_EQ(m[kGetOk], 3);
  EXPECT_EQ(m[kGetNotFound], 1);
  EXPECT_EQ(m[kGetInvalid], 1);
  EXPECT_EQ(m[R"(fanout_requests_total{code="OK",rpc="fanout.v1.Sidecar/BatchGet"})"], 1);
  EXPECT_EQ(m[R"(fanout_request_duration_seconds_count{rpc="fanout.v1.Sidecar/Get"})"], 5);
  EXPECT_GT(m[R"(fanout_request_duration_seconds_sum{rpc="fanout.v1.Sidecar/Get"})"], 0);
  EXPECT_EQ(m[R"(fanout_request_duration_seconds_bucket{le="+Inf",rpc="fanout.v1.Sidecar/Get"})"],
            5);
  EXPECT_EQ(m[R"(fanout_requests_in_flight{rpc="fanout.v1.Sidecar/Get"})"], 0);
  // Get: origin, L1, L1; BatchGet: checkout from L1, dark from the origin.
  EXPECT_EQ(m[R"(fanout_get_answers_total{stale="false",tier="origin"})"], 2);
  EXPECT_EQ(m[R"(fanout_get_answers_total{stale="false",tier="l1"})"], 3);
  EXPECT_EQ(m[R"(fanout_get_answers_total{stale="true",tier="l1"})"], 0);
  // Origin fills: checkout, absent, dark; absent again is remembered
  // (cache.negative_ttl), not fetched.
  EXPECT_EQ(m["fanout_origin_fetches_total"], 3);
  EXPECT_EQ(m[R"(fanout_l1_lookups_total{result="hit"})"], 3);
  EXPECT_EQ(m[R"(fanout_l1_lookups_total{result="miss"})"], 4);
  EXPECT_EQ(m["fanout_l1_entries"], 2);
  EXPECT_GT(m["fanout_l1_bytes"], 0);
  EXPECT_EQ(m["fanout_l1_capacity_bytes"], 256 << 20);

  fanout::v1::InvalidateRequest invalidate;
  invalidate.set_prefix("flags/");
  ASSERT_OK(client_->Invalidate(invalidate));
  m = Metrics();
  EXPECT_EQ(m[R"(fanout_l1_removals_total{cause="invalidated"})"], 2);
  EXPECT_EQ(m["fanout_l1_entries"], 0);
  EXPECT_EQ(m[R"(fanout_requests_total{code="OK",rpc="fanout.v1.Sidecar/Invalidate"})"], 1);
}

TEST_F(AdminMetricsTest, SeriesCountStaysConstantAcrossDistinctKeysAndNamespaces) {
  StartDaemon(Yaml());
  // One call of every kind and outcome, so that every series exists.
  ASSERT_OK(client_->Get("flags/checkout"));
  ASSERT_OK(client_->Get("flags/checkout"));
  EXPECT_FALSE(client_->Get("flags/absent").ok());
  EXPECT_FALSE(client_->Get("").ok());
  fanout::v1::BatchGetRequest batch;
  batch.add_keys("flags/checkout");
  ASSERT_OK(client_->BatchGet(batch));
  fanout::v1::InvalidateRequest invalidate;
  invalidate.add_keys("flags/checkout");
  ASSERT_OK(client_->Invalidate(invalidate));
  ASSERT_OK(client_->Get("flags/checkout"));
  const size_t series = Metrics().size();

  for (int i = 0; i < 300; ++i) {
    const std::string key = absl::StrCat("flags/distinct-key-", i);
    const std::string ns = absl::StrCat("distinct-ns-", i % 7);
    EXPECT_FALSE(client_->Get(key, ns).ok());
    std::ofstream(root_ / "flags" / absl::StrCat("distinct-file-", i)) << "v" << i;
    EXPECT_OK(client_->Get(absl::StrCat("flags/distinct-file-", i)));
    if (i % 50 == 0) {
      fanout::v1::BatchGetRequest b;
      for (int k = 0; k < 5; ++k) b.add_keys(absl::StrCat("flags/distinct-batch-", i, "-", k));
      b.set_namespace_(ns);
      EXPECT_OK(client_->BatchGet(b));
      fanout::v1::InvalidateRequest inv;
      inv.set_prefix(absl::StrCat("flags/distinct-prefix-", i));
      EXPECT_OK(client_->Invalidate(inv));
    }
  }
  const std::string text = Scrape();
  EXPECT_EQ(ParseSamples(text).size(), series);
  EXPECT_THAT(text, Not(HasSubstr("distinct-")));
  EXPECT_THAT(text, Not(HasSubstr("checkout")));
  EXPECT_EQ(ParseSamples(text)[kGetOk], 2 + 1 + 300);
}

TEST_F(AdminMetricsTest, MethodNamesNoServiceDeclaresShareOneSeries) {
  StartDaemon(Yaml());
  EXPECT_EQ(CallRaw("/fanout.v1.Sidecar/Nope").error_code(), grpc::StatusCode::UNIMPLEMENTED);
  const size_t series = Metrics().size();
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(CallRaw(absl::StrCat("/attacker.Service", i, "/Method", i)).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }
  EXPECT_EQ(CallRaw("/no-slash-at-all").error_code(), grpc::StatusCode::UNIMPLEMENTED);
  const std::string text = Scrape();
  EXPECT_THAT(text, Not(HasSubstr("attacker")));
  EXPECT_THAT(text, Not(HasSubstr("Nope")));
  Samples m = ParseSamples(text);
  EXPECT_EQ(m.size(), series);
  EXPECT_EQ(m[R"(fanout_requests_total{code="UNIMPLEMENTED",rpc="unknown"})"], 42);
}

TEST_F(AdminMetricsTest, ExpositionParsesWithThePrometheusParserAndNamingRules) {
  testing::FakeBackendOptions options;
  options.name = "b1";
  auto backend = testing::FakeBackend::Start(options);
  ASSERT_OK(backend);
  StartDaemon(
      Yaml(absl::StrCat("routes:\n  r:\n    policy: adaptive\n    method: /any.S/M\n",
                        "    backends: [{address: \"", (*backend)->address(), "\", name: b1}]\n")));
  ASSERT_OK(client_->Get("flags/checkout"));
  EXPECT_FALSE(client_->Get("flags/absent").ok());
  fanout::v1::RouteRequest route;
  route.set_route("r");
  route.set_payload("x");
  ASSERT_OK(client_->Route(route));
  const std::string path = testing::TempPath("exposition.txt");
  std::ofstream(path) << Scrape();
  auto r = testing::RunProcess(
      {FANOUT_PYTHON, FANOUT_SOURCE_DIR "/tests/server/check_exposition.py", path});
  EXPECT_EQ(r.code, 0) << r.err;
  // The checker can fail: a counter without _total is refused.
  std::ofstream(path) << "# HELP fanout_x x\n# TYPE fanout_x counter\nfanout_x 1\n";
  r = testing::RunProcess(
      {FANOUT_PYTHON, FANOUT_SOURCE_DIR "/tests/server/check_exposition.py", path});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("does not end in _total"));
  fs::remove(path);
}

TEST_F(AdminMetricsTest, RouteMetricsReportEachBackendByConfiguredName) {
  testing::FakeBackendOptions options;
  options.name = "b1";
  auto backend = testing::FakeBackend::Start(options);
  ASSERT_OK(backend);
  StartDaemon(Yaml(absl::StrCat("routes:\n  r:\n    policy: round_robin\n    method: /any.S/M\n",
                                "    backends: [{address: \"", (*backend)->address(),
                                "\", name: gpu-a}]\n")));
  fanout::v1::RouteRequest route;
  route.set_route("r");
  route.set_payload("hello");
  ASSERT_OK(client_->Route(route));
  ASSERT_OK(client_->Route(route));
  Samples m = Metrics();
  EXPECT_EQ(m[R"(fanout_route_info{policy="round_robin",route="r"})"], 1);
  EXPECT_EQ(m[R"(fanout_route_backend_calls_total{backend="gpu-a",route="r"})"], 2);
  EXPECT_EQ(m[R"(fanout_route_backend_failures_total{backend="gpu-a",route="r"})"], 0);
  EXPECT_EQ(m[R"(fanout_route_backend_in_flight{backend="gpu-a",route="r"})"], 0);
  EXPECT_GT(m[R"(fanout_route_backend_latency_ewma_seconds{backend="gpu-a",route="r"})"], 0);
  EXPECT_EQ(m[R"(fanout_requests_total{code="OK",rpc="fanout.v1.Sidecar/Route"})"], 2);
  EXPECT_EQ(m[R"(fanout_route_calls_total{outcome="ok",policy="round_robin",route="r"})"], 2);
  EXPECT_EQ(m[R"(fanout_route_branches_total{backend="gpu-a",outcome="ok",route="r"})"], 2);
  EXPECT_THAT(Scrape(), Not(HasSubstr("hello")));
}

// A reload replaces the routes and counts itself; a route that keeps its
// name keeps its series; a rejected reload changes nothing and says so.
TEST_F(AdminMetricsTest, ReloadSwapsRoutesKeepsTheirSeriesAndCountsEachResult) {
  testing::FakeBackendOptions options;
  options.name = "b1";
  auto backend = testing::FakeBackend::Start(options);
  ASSERT_OK(backend);
  auto routes = [&](absl::string_view names) {
    std::string yaml = "routes:\n";
    for (absl::string_view name : absl::StrSplit(names, ',')) {
      absl::StrAppend(&yaml, "  ", name, ":\n    policy: round_robin\n    method: /any.S/M\n",
                      "    backends: [{address: \"", (*backend)->address(), "\", name: gpu-a}]\n");
    }
    return yaml;
  };
  StartDaemon(Yaml(routes("r")));
  fanout::v1::RouteRequest route;
  route.set_route("r");
  ASSERT_OK(client_->Route(route));
  route.set_route("s");
  EXPECT_FALSE(client_->Route(route).ok());

  Fanoutd::ReloadResult result =
      daemon_->Reload(ParseConfig(Yaml(routes("r,s")), "t.yaml"), "test");
  EXPECT_EQ(result.outcome, Fanoutd::ReloadResult::Outcome::kApplied) << result.error;
  ASSERT_OK(client_->Route(route));
  route.set_route("r");
  ASSERT_OK(client_->Route(route));

  result = daemon_->Reload(absl::InvalidArgumentError("t.yaml: unknown key x"), "test");
  EXPECT_EQ(result.outcome, Fanoutd::ReloadResult::Outcome::kRejected);
  const std::string threads = absl::StrReplaceAll(
      Yaml(routes("r,s")),
      {{"server: {listen: \"127.0.0.1:0\"}", "server: {listen: \"127.0.0.1:0\", threads: 3}"}});
  result = daemon_->Reload(ParseConfig(threads, "t.yaml"), "test");
  EXPECT_EQ(result.outcome, Fanoutd::ReloadResult::Outcome::kRejected);
  EXPECT_THAT(result.restart, ::testing::ElementsAre("server.threads"));
  ASSERT_OK(client_->Route(route));  // routes as they were

  Samples m = Metrics();
  EXPECT_EQ(m[R"(fanout_route_calls_total{outcome="ok",policy="round_robin",route="r"})"], 3);
  EXPECT_EQ(m[R"(fanout_route_calls_total{outcome="ok",policy="round_robin",route="s"})"], 1);
  EXPECT_EQ(m[R"(fanout_config_reloads_total{result="applied"})"], 1);
  EXPECT_EQ(m[R"(fanout_config_reloads_total{result="rejected"})"], 2);
  EXPECT_EQ(m["fanout_config_last_reload_successful"], 0);
  EXPECT_EQ(m["fanout_config_restart_required"], 1);
}

TEST_F(AdminMetricsTest, ReadyzIsUnavailableOnceDrainingWhileHealthzStaysOk) {
  StartDaemon(Yaml());
  const std::string base = absl::StrCat("http://", daemon_->admin_address());
  EXPECT_EQ(HttpRequest(base + "/readyz")->status, 200);
  daemon_->Shutdown();
  EXPECT_EQ(HttpRequest(base + "/readyz")->status, 503);
  EXPECT_EQ(HttpRequest(base + "/healthz")->status, 200);
}

TEST_F(AdminMetricsTest, DebugConfigShowsTheDocumentItRuns) {
  StartDaemon(Yaml("cache: {ttl: 42s}\n"));
  auto r = HttpRequest(absl::StrCat("http://", daemon_->admin_address(), "/debug/config"));
  ASSERT_OK(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, HasSubstr("# test.yaml, secrets redacted"));
  EXPECT_THAT(r->body, HasSubstr("ttl: 42s"));
}

using BusyPort = testing::LoopbackListener;  // a port taken by someone else

TEST_F(AdminMetricsTest, StartFailsNamingAdminListenWhenTheConfiguredPortIsBusy) {
  BusyPort busy;
  auto config = ParseConfig(Yaml(), "test.yaml");
  ASSERT_OK(config);
  config->admin.listen = absl::StrCat("127.0.0.1:", busy.port());
  EXPECT_THAT(Fanoutd::Start(*config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("admin.listen")));
}

TEST_F(AdminMetricsTest, StartWithoutAdminWhenTheDefaultPortIsBusy) {
  BusyPort busy;
  Config config;
  config.server.listen = "127.0.0.1:0";
  config.origin.file_root = root_.string();
  config.admin.listen = absl::StrCat("127.0.0.1:", busy.port());
  config.admin.listen_set = false;  // as if it were the default
  auto d = Fanoutd::Start(config);
  ASSERT_OK(d);
  EXPECT_EQ((*d)->admin_address(), "");
}

TEST_F(AdminMetricsTest, EmptyAdminListenTurnsTheEndpointOff) {
  auto config =
      ParseConfig(absl::StrCat("server: {listen: \"127.0.0.1:0\"}\n", "admin: {listen: \"\"}\n",
                               "origin: {file: {root: \"", root_.string(), "\"}}\n"),
                  "test.yaml");
  ASSERT_OK(config);
  EXPECT_EQ(config->admin.listen, "");
  auto d = Fanoutd::Start(*config);
  ASSERT_OK(d);
  EXPECT_EQ((*d)->admin_address(), "");
}

// Every sample `collector` gives, as "name{label=value,...,}" → value.
std::map<std::string, double> Values(const ComponentCollector& collector) {
  std::map<std::string, double> values;
  for (const prometheus::MetricFamily& f : collector.Collect()) {
    for (const prometheus::ClientMetric& m : f.metric) {
      std::string labels;
      for (const auto& l : m.label) absl::StrAppend(&labels, l.name, "=", l.value, ",");
      values[absl::StrCat(f.name, "{", labels, "}")] =
          f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
    }
  }
  return values;
}

TEST(ComponentCollectorTest, CollectReadsEveryTiersStats) {
  testing::FakeClock clock;
  testing::FakeTier l2(cache::TierId::kL2, &clock);
  l2.Lookup("missing", absl::InfiniteFuture(), [](absl::StatusOr<cache::Entry>) {});
  l2.set_failure(absl::UnavailableError("down"));
  l2.Lookup("k", absl::InfiniteFuture(), [](absl::StatusOr<cache::Entry>) {});
  ComponentCollector collector({.tiers = {{"l2", &l2}}});
  std::map<std::string, double> values = Values(collector);
  EXPECT_EQ(values["fanout_tier_lookups_total{tier=l2,result=miss,}"], 1);
  EXPECT_EQ(values["fanout_tier_lookups_total{tier=l2,result=hit,}"], 0);
  EXPECT_EQ(values["fanout_tier_errors_total{tier=l2,}"], 1);
  EXPECT_EQ(values["fanout_tier_available{tier=l2,}"], 1);
  // Nothing else was given: no read path, L1 or route families.
  EXPECT_EQ(values.count("fanout_origin_fetches_total{}"), 0);
}

TEST(ComponentCollectorTest, CollectReadsInvalidationAndWatchStats) {
  testing::ManualExecutor executor;
  testing::FakeOrigin origin;
  testing::FakeBusLog log;
  testing::FakeInvalidationBus bus(&log, "a");
  cache::LinkGuard guard(absl::Seconds(5));
  cache::ReadPathOptions o;
  o.link_guard = &guard;
  cache::ReadPath path(o, cache::NewWTinyLfuCache({}), {}, &origin, &executor);
  cache::Invalidator invalidator(&path, &bus, &guard, executor.clock());
  WatchService watch(Config{}, &path, &invalidator, &executor);
  cache::Invalidation inv;
  inv.ns = "ns";
  inv.keys = {"k"};
  invalidator.Invalidate(inv, [](absl::StatusOr<cache::Invalidator::Result>) {});
  bus.SetLink(cache::LinkState::kDegraded);
  ComponentCollector::Sources sources;
  sources.invalidator = &invalidator;
  sources.watch = &watch;
  ComponentCollector collector(std::move(sources));
  std::map<std::string, double> values = Values(collector);
  EXPECT_EQ(values["fanout_invalidations_total{from=local,}"], 1);
  EXPECT_EQ(values["fanout_invalidations_total{from=remote,}"], 0);
  EXPECT_EQ(values.count("fanout_invalidation_link_up{}"), 1u);
  EXPECT_EQ(values["fanout_invalidation_link_up{}"], 0);
  EXPECT_EQ(values.count("fanout_watch_streams{}"), 1u);
  EXPECT_EQ(values.count("fanout_watch_events_total{}"), 1u);
  watch.Shutdown();
}

TEST(ComponentCollectorTest, CollectReadsTheOriginsPushedChanges) {
  testing::ManualExecutor executor;
  testing::FakeOrigin origin;
  origin.EnablePush();
  cache::LinkGuard guard(absl::Seconds(5));
  cache::ReadPath path(cache::ReadPathOptions{}, cache::NewWTinyLfuCache({}), {}, &origin,
                       &executor);
  cache::Invalidator invalidator(&path, nullptr, &guard, executor.clock());
  absl::StatusOr<std::unique_ptr<cache::OriginPush>> push =
      cache::OriginPush::Start(&origin, &invalidator, 2);
  ASSERT_OK(push);
  origin.Push({.ns = "ns", .keys = {"a", "b", "c"}, .prefix = "p/"});
  origin.Push({.ns = "", .keys = {}, .prefix = "", .all = true});
  ComponentCollector::Sources sources;
  sources.push = push->get();
  ComponentCollector collector(std::move(sources));
  std::map<std::string, double> values = Values(collector);
  EXPECT_EQ(values["fanout_origin_changes_total{}"], 2);
  EXPECT_EQ(values["fanout_origin_changed_keys_total{}"], 4);
  EXPECT_EQ(values["fanout_origin_resets_total{}"], 1);
  EXPECT_EQ(values["fanout_origin_changes_not_broadcast_total{}"], 0);
}

}  // namespace
}  // namespace fanout::server
