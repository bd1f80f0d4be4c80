// The Sidecar service in-process, on a real port, through the client library.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "server/fanoutd.h"
#include "tests/testing/fake_backend.h"
#include "tests/testing/fake_grpc_origin.h"
#include "tests/testing/route_responses.h"
#include "tests/testing/status_matchers.h"

namespace fanout::server {
namespace {

using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// A TCP port on 127.0.0.1 that accepts connections into its backlog and
// never answers: a gRPC origin there hangs every fetch until its deadline.
class HangingListener {
 public:
  HangingListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot listen on 127.0.0.1";
    }
    address_ = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  }
  ~HangingListener() { ::close(fd_); }
  const std::string& address() const { return address_; }

 private:
  int fd_ = -1;
  std::string address_;
};

class SidecarServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // gRPC 1.51 aborts when a channel's last owner is a callback capture
    // (see HoldGrpcCallbackQueue).
    testing::HoldGrpcCallbackQueue();
    root_ = fs::temp_directory_path() / ("fanout_svc_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "flags");
    fs::create_directories(root_ / "@ns" / "acme" / "flags");
    std::ofstream(root_ / "flags" / "checkout") << "on";
    std::ofstream(root_ / "@ns" / "acme" / "flags" / "checkout") << "off";
    config_.server.listen = "127.0.0.1:0";
    config_.origin.file_root = root_.string();
    config_.limits.max_batch_keys = 5;
  }
  void TearDown() override {
    client_.reset();
    daemon_.reset();
    fs::remove_all(root_);
  }
  void StartDaemon() {
    auto d = Fanoutd::Start(config_);
    ASSERT_OK(d);
    daemon_ = *std::move(d);
    client_ = *client::Client::Connect(daemon_->address());
  }

  fs::path root_;
  Config config_;
  std::unique_ptr<Fanoutd> daemon_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(SidecarServiceTest, GetServesOriginThenL1) {
  StartDaemon();
  auto first = client_->Get("flags/checkout");
  ASSERT_OK(first);
  EXPECT_EQ(first->value(), "on");
  EXPECT_EQ(first->served_by(), fanout::v1::TIER_ORIGIN);
  EXPECT_GT(first->version(), 0);
  auto second = client_->Get("flags/checkout");
  ASSERT_OK(second);
  EXPECT_EQ(second->served_by(), fanout::v1::TIER_L1);
  EXPECT_EQ(second->version(), first->version());
  EXPECT_FALSE(second->stale());
}

TEST_F(SidecarServiceTest, GetNamespaceIsPartOfTheIdentity) {
  StartDaemon();
  EXPECT_EQ(client_->Get("flags/checkout", "acme")->value(), "off");
  EXPECT_EQ(client_->Get("flags/checkout")->value(), "on");
}

TEST_F(SidecarServiceTest, GetMissingKeyIsNotFound) {
  StartDaemon();
  EXPECT_THAT(client_->Get("flags/none"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("flags/none")));
}

TEST_F(SidecarServiceTest, GetBadKeysAreInvalidArgumentNamingTheLimit) {
  StartDaemon();
  EXPECT_THAT(client_->Get(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("key is empty")));
  EXPECT_THAT(client_->Get(std::string(1025, 'k')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limits.max_key_bytes")));
  EXPECT_THAT(client_->Get("../etc/passwd"), StatusIs(absl::StatusCode::kInvalidArgument));
  fanout::v1::GetRequest negative;
  negative.set_key("flags/checkout");
  negative.set_max_stale_ms(-1);
  EXPECT_THAT(client_->Get(negative),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_stale_ms")));
}

TEST_F(SidecarServiceTest, GetOversizedValueIsRefusedNamingTheLimit) {
  config_.limits.max_value_bytes = 16;
  std::ofstream(root_ / "big") << std::string(17, 'x');
  StartDaemon();
  EXPECT_THAT(client_->Get("big"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("limits.max_value_bytes")));
}

TEST_F(SidecarServiceTest, BatchGetReportsPerKeyErrors) {
  StartDaemon();
  fanout::v1::BatchGetRequest request;
  request.add_keys("flags/checkout");
  request.add_keys("flags/none");
  request.add_keys("");
  auto response = client_->BatchGet(request);
  ASSERT_OK(response);
  ASSERT_EQ(response->items_size(), 3);
  EXPECT_EQ(response->items(0).code(), 0);
  EXPECT_EQ(response->items(0).value(), "on");
  EXPECT_EQ(response->items(1).code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(response->items(2).code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(response->items(2).error(), HasSubstr("keys[2]"));
}

TEST_F(SidecarServiceTest, BatchGetOverTheLimitFailsWhole) {
  StartDaemon();
  fanout::v1::BatchGetRequest request;
  for (int i = 0; i < 6; ++i) request.add_keys(absl::StrCat("k", i));
  EXPECT_THAT(client_->BatchGet(request),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limits.max_batch_keys")));
}

TEST_F(SidecarServiceTest, InvalidateEvictsSoNextGetReadsOrigin) {
  StartDaemon();
  ASSERT_OK(client_->Get("flags/checkout"));
  std::ofstream(root_ / "flags" / "checkout") << "changed";
  EXPECT_EQ(client_->Get("flags/checkout")->value(), "on");  // cached
  fanout::v1::InvalidateRequest request;
  request.add_keys("flags/checkout");
  auto response = client_->Invalidate(request);
  ASSERT_OK(response);
  EXPECT_EQ(response->evicted(), 1);
  EXPECT_FALSE(response->broadcast());
  auto after = client_->Get("flags/checkout");
  EXPECT_EQ(after->value(), "changed");
  EXPECT_EQ(after->served_by(), fanout::v1::TIER_ORIGIN);
}

TEST_F(SidecarServiceTest, InvalidateByPrefix) {
  StartDaemon();
  ASSERT_OK(client_->Get("flags/checkout"));
  fanout::v1::InvalidateRequest request;
  request.set_prefix("flags/");
  EXPECT_EQ(client_->Invalidate(request)->evicted(), 1);
}

TEST_F(SidecarServiceTest, InvalidateNothingIsInvalidArgument) {
  StartDaemon();
  EXPECT_THAT(client_->Invalidate(fanout::v1::InvalidateRequest()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keys or a prefix")));
}

TEST_F(SidecarServiceTest, HealthServingForKnownServicesNotFoundForOthers) {
  StartDaemon();
  EXPECT_EQ(*client_->Health(""), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(*client_->Health("fanout.v1.Sidecar"), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_THAT(client_->Health("nope"), StatusIs(absl::StatusCode::kNotFound));
}

// A Watch call read on a thread of its own: the events as they come, and
// how the stream ended.
class WatchReader {
 public:
  WatchReader(client::Client* client, fanout::v1::WatchRequest request) {
    thread_ = std::thread([this, client, request] {
      absl::Status s = client->Watch(request, absl::Seconds(60), [this](const auto& e) {
        absl::MutexLock l(&mu_);
        events_.push_back(e);
        return true;
      });
      absl::MutexLock l(&mu_);
      end_ = s;
    });
  }
  ~WatchReader() { thread_.join(); }
  // Waits (bounded) until `n` events came or the stream ended.
  std::vector<fanout::v1::WatchEvent> WaitForEvents(size_t n) {
    absl::MutexLock l(&mu_);
    want_ = n;
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](WatchReader* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
                               return r->events_.size() >= r->want_ || r->end_.has_value();
                             },
                             this),
                         absl::Seconds(30));
    return events_;
  }
  // Waits (bounded) for the end of the stream.
  std::optional<absl::Status> WaitForEnd() {
    absl::MutexLock l(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](WatchReader* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
                               return r->end_.has_value();
                             },
                             this),
                         absl::Seconds(30));
    return end_;
  }

 private:
  absl::Mutex mu_;
  std::vector<fanout::v1::WatchEvent> events_ ABSL_GUARDED_BY(mu_);
  size_t want_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<absl::Status> end_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

std::vector<fanout::v1::WatchEvent> WithoutHeartbeats(std::vector<fanout::v1::WatchEvent> events) {
  std::vector<fanout::v1::WatchEvent> out;
  for (auto& e : events) {
    if (e.kind() != fanout::v1::HEARTBEAT) out.push_back(std::move(e));
  }
  return out;
}

TEST_F(SidecarServiceTest, WatchStreamsInvalidationsOfWatchedKeysWithNewValues) {
  config_.watch.heartbeat = absl::Milliseconds(50);
  StartDaemon();
  ASSERT_OK(client_->Get("flags/checkout"));
  fanout::v1::WatchRequest request;
  request.add_prefixes("flags/");
  request.set_values(true);
  WatchReader watch(client_.get(), request);
  // A heartbeat shows the stream is open before anything is invalidated.
  ASSERT_FALSE(watch.WaitForEvents(1).empty());
  std::ofstream(root_ / "flags" / "checkout") << "changed";
  fanout::v1::InvalidateRequest other;
  other.add_keys("other/key");
  ASSERT_OK(client_->Invalidate(other));
  fanout::v1::InvalidateRequest mine;
  mine.add_keys("flags/checkout");
  ASSERT_OK(client_->Invalidate(mine));
  std::vector<fanout::v1::WatchEvent> events;
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (WithoutHeartbeats(events).size() < 2 && absl::Now() < give_up) {
    events = watch.WaitForEvents(events.size() + 1);
  }
  events = WithoutHeartbeats(events);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind(), fanout::v1::INVALIDATED);
  EXPECT_EQ(events[0].key(), "flags/checkout");
  EXPECT_EQ(events[1].kind(), fanout::v1::UPDATED);
  EXPECT_EQ(events[1].key(), "flags/checkout");
  EXPECT_EQ(events[1].value(), "changed");
  // A drain ends the stream at once (it never ends by itself), UNAVAILABLE.
  daemon_->Shutdown(absl::ZeroDuration());
  EXPECT_THAT(watch.WaitForEnd(), ::testing::Optional(StatusIs(absl::StatusCode::kUnavailable)));
}

TEST_F(SidecarServiceTest, WatchBadRequestsAreInvalidArgumentNamingTheField) {
  StartDaemon();
  auto no_events = [](const fanout::v1::WatchEvent&) { return true; };
  fanout::v1::WatchRequest empty_key;
  empty_key.add_keys("");
  EXPECT_THAT(client_->Watch(empty_key, absl::Seconds(20), no_events),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keys[0]")));
  fanout::v1::WatchRequest long_prefix;
  long_prefix.add_prefixes("ok");
  long_prefix.add_prefixes(std::string(config_.limits.max_key_bytes + 1, 'p'));
  EXPECT_THAT(client_->Watch(long_prefix, absl::Seconds(20), no_events),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("prefixes[1]"), HasSubstr("limits.max_key_bytes"))));
  fanout::v1::WatchRequest long_ns;
  long_ns.set_namespace_(std::string(config_.limits.max_namespace_bytes + 1, 'n'));
  EXPECT_THAT(client_->Watch(long_ns, absl::Seconds(20), no_events),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("namespace")));
}

TEST_F(SidecarServiceTest, WatchPastMaxStreamsIsResourceExhausted) {
  config_.watch.max_streams = 1;
  config_.watch.heartbeat = absl::Milliseconds(50);
  StartDaemon();
  WatchReader first(client_.get(), fanout::v1::WatchRequest());
  ASSERT_FALSE(first.WaitForEvents(1).empty());
  EXPECT_THAT(client_->Watch(fanout::v1::WatchRequest(), absl::Seconds(20),
                             [](const fanout::v1::WatchEvent&) { return true; }),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("watch.max_streams")));
  daemon_->Shutdown(absl::ZeroDuration());
  EXPECT_TRUE(first.WaitForEnd().has_value());
}

TEST_F(SidecarServiceTest, WatchConsumerThatDoesNotReadIsCutOffNotBuffered) {
  config_.watch.buffer_bytes = 4096;
  config_.watch.heartbeat = absl::Milliseconds(100);
  config_.limits.max_key_bytes = 4096;
  StartDaemon();
  auto channel = grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials());
  auto stub = fanout::v1::Sidecar::NewStub(channel);
  grpc::ClientContext context;
  auto reader = stub->Watch(&context, fanout::v1::WatchRequest());  // never read
  // Large INVALIDATED events until the transport's window is full and the
  // stream's own buffer passes watch.buffer_bytes, or its write stalls.
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  int sent = 0;
  while (daemon_->invalidation()->Stats().watch.cut_off == 0 && absl::Now() < give_up &&
         sent < 20000) {
    fanout::v1::InvalidateRequest r;
    r.add_keys(absl::StrCat(sent++, std::string(4000, 'k')));
    ASSERT_OK(client_->Invalidate(r));
  }
  EXPECT_EQ(daemon_->invalidation()->Stats().watch.cut_off, 1u) << sent << " invalidations";
  // The stream ends (its held write cancelled) without the consumer reading.
  const absl::Time end_by = absl::Now() + absl::Seconds(30);
  while (daemon_->invalidation()->Stats().watch.open != 0 && absl::Now() < end_by) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(daemon_->invalidation()->Stats().watch.open, 0);
  context.TryCancel();
}

TEST_F(SidecarServiceTest, InFlightLimitGivesResourceExhausted) {
  auto origin = testing::FakeGrpcOrigin::Start();
  origin->Set("slow", "v");
  origin->SetDelay(absl::Seconds(2));
  config_.origin.type = OriginSection::Type::kGrpc;
  config_.origin.grpc_target = origin->address();
  config_.origin.timeout = absl::Seconds(20);
  config_.limits.max_in_flight = 2;
  StartDaemon();
  fanout::v1::GetRequest slow;
  slow.set_key("slow");
  slow.set_bypass_cache(true);
  std::thread a([&] { EXPECT_OK(client_->Get(slow)); });
  std::thread b([&] { EXPECT_OK(client_->Get(slow)); });
  // Wait (bounded) until both calls hold their slots.
  for (int i = 0; i < 500 && origin->in_flight() < 1; ++i) absl::SleepFor(absl::Milliseconds(10));
  for (int i = 0; i < 500 && daemon_->read_path()->Stats().coalesced < 1; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(client_->Get("other"),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limits.max_in_flight")));
  a.join();
  b.join();
  EXPECT_EQ(origin->fetches(), 1);  // the two slow reads shared one fill
}

TEST_F(SidecarServiceTest, GetServesStaleFromGrpcOriginOutage) {
  auto origin = testing::FakeGrpcOrigin::Start();
  origin->Set("k", "last-known", 5);
  config_.origin.type = OriginSection::Type::kGrpc;
  config_.origin.grpc_target = origin->address();
  config_.cache.ttl = absl::Milliseconds(1);
  StartDaemon();
  ASSERT_EQ(client_->Get("k")->value(), "last-known");
  origin->SetDown(true);
  absl::SleepFor(absl::Milliseconds(5));  // let the 1 ms ttl pass
  auto stale = client_->Get("k");
  ASSERT_OK(stale);
  EXPECT_TRUE(stale->stale());
  EXPECT_EQ(stale->value(), "last-known");
  EXPECT_EQ(stale->version(), 5);
  fanout::v1::GetRequest none;
  none.set_key("never-seen");
  EXPECT_THAT(client_->Get(none), StatusIs(absl::StatusCode::kUnavailable));
}

constexpr char kTraceparent[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// A Get through a raw stub carrying `traceparent` metadata (none if empty).
grpc::Status GetWithTraceparent(const std::string& address, const std::string& key,
                                const std::string& traceparent) {
  auto stub = fanout::v1::Sidecar::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  if (!traceparent.empty()) context.AddMetadata("traceparent", traceparent);
  fanout::v1::GetRequest request;
  request.set_key(key);
  fanout::v1::GetResponse response;
  return stub->Get(&context, request, &response);
}

TEST_F(SidecarServiceTest, GetPassesValidTraceparentToOriginAndDropsGarbage) {
  auto origin = testing::FakeGrpcOrigin::Start();
  origin->Set("a", "1");
  origin->Set("b", "2");
  origin->Set("c", "3");
  config_.origin.type = OriginSection::Type::kGrpc;
  config_.origin.grpc_target = origin->address();
  StartDaemon();
  ASSERT_TRUE(GetWithTraceparent(daemon_->address(), "a", kTraceparent).ok());
  EXPECT_EQ(origin->last_traceparent(), kTraceparent);
  // Upper-case hex is not a traceparent: dropped, not passed on.
  ASSERT_TRUE(GetWithTraceparent(daemon_->address(), "b",
                                 "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01")
                  .ok());
  EXPECT_EQ(origin->last_traceparent(), "");
  ASSERT_TRUE(GetWithTraceparent(daemon_->address(), "c", std::string(300, 'f')).ok());
  EXPECT_EQ(origin->last_traceparent(), "");
  EXPECT_EQ(origin->fetches(), 3);
}

TEST_F(SidecarServiceTest, GetHangingOriginServesStaleBeforeCallersDeadline) {
  auto origin = testing::FakeGrpcOrigin::Start();
  origin->Set("k", "last-known", 5);
  config_.origin.type = OriginSection::Type::kGrpc;
  config_.origin.grpc_target = origin->address();
  config_.origin.timeout = absl::Seconds(30);
  config_.cache.ttl = absl::Milliseconds(1);
  StartDaemon();
  ASSERT_EQ(client_->Get("k")->value(), "last-known");
  origin->SetDelay(absl::Seconds(2));
  absl::SleepFor(absl::Milliseconds(5));  // let the 1 ms ttl pass
  auto quick = *client::Client::Connect(daemon_->address(), {.timeout = absl::Milliseconds(300)});
  auto stale = quick->Get("k");
  ASSERT_OK(stale);  // answered before the caller's 300 ms, not after the origin's 2 s
  EXPECT_TRUE(stale->stale());
  EXPECT_EQ(stale->value(), "last-known");
  EXPECT_EQ(daemon_->read_path()->Stats().deadline_answers, 1u);
}

TEST_F(SidecarServiceTest, GetHangingOriginWithoutStaleCopyFailsBeforeCallersDeadline) {
  HangingListener hanging;
  config_.origin.type = OriginSection::Type::kGrpc;
  config_.origin.grpc_target = hanging.address();
  config_.origin.timeout = absl::Seconds(30);
  StartDaemon();
  auto quick = *client::Client::Connect(daemon_->address(), {.timeout = absl::Milliseconds(300)});
  // The server's own answer (naming the key), not the client giving up.
  EXPECT_THAT(quick->Get("never-seen"),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("\"never-seen\"")));
}

TEST_F(SidecarServiceTest, GetCancelledCallerReleasesItsSlotAtOnce) {
  HangingListener hanging;
  config_.origin.type = OriginSection::Type::kGrpc;
  config_.origin.grpc_target = hanging.address();
  config_.origin.timeout = absl::Seconds(30);
  config_.limits.max_in_flight = 1;
  StartDaemon();
  auto channel = grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials());
  auto stub = fanout::v1::Sidecar::NewStub(channel);
  grpc::ClientContext context;  // no deadline: only the cancel ends the call
  fanout::v1::GetRequest request;
  request.set_key("slow");
  fanout::v1::GetResponse response;
  absl::Notification done;
  grpc::Status status;
  stub->async()->Get(&context, &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  fanout::v1::InvalidateRequest other;
  other.add_keys("other");
  // Wait (bounded) until the slow call holds the only slot.
  absl::StatusOr<fanout::v1::InvalidateResponse> refused;
  for (int i = 0; i < 500; ++i) {
    refused = client_->Invalidate(other);
    if (!refused.ok()) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_THAT(refused, StatusIs(absl::StatusCode::kResourceExhausted));
  context.TryCancel();
  done.WaitForNotification();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  // The slot comes back as soon as the server sees the cancellation, long
  // before the origin's 30 s deadline.
  absl::StatusOr<fanout::v1::InvalidateResponse> admitted;
  for (int i = 0; i < 500; ++i) {
    admitted = client_->Invalidate(other);
    if (admitted.ok()) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_OK(admitted);
  EXPECT_EQ(daemon_->read_path()->Stats().cancelled, 1u);
}

TEST_F(SidecarServiceTest, BatchGetReadsEachDistinctKeyOnceAndAnswersEveryPosition) {
  StartDaemon();
  fanout::v1::BatchGetRequest request;
  for (const char* k : {"flags/checkout", "flags/none", "flags/checkout", "", "flags/checkout"}) {
    request.add_keys(k);
  }
  auto response = client_->BatchGet(request);
  ASSERT_OK(response);
  ASSERT_EQ(response->items_size(), 5);
  for (int i : {0, 2, 4}) {
    EXPECT_EQ(response->items(i).key(), "flags/checkout");
    EXPECT_EQ(response->items(i).code(), 0);
    EXPECT_EQ(response->items(i).value(), "on");
  }
  EXPECT_EQ(response->items(1).code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_EQ(response->items(3).code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(response->items(3).error(), HasSubstr("keys[3]"));
  // Two reads (no read joined another's fill), one origin fetch each.
  EXPECT_EQ(daemon_->read_path()->Stats().coalesced, 0u);
  EXPECT_EQ(daemon_->read_path()->Stats().origin_fetches, 2u);
}

TEST_F(SidecarServiceTest, BatchGetOverByteLimitIsResourceExhaustedNamingTheKey) {
  config_.limits.max_batch_bytes = 1024;
  std::ofstream(root_ / "big") << std::string(600, 'x');
  StartDaemon();
  fanout::v1::BatchGetRequest one;
  one.add_keys("big");
  ASSERT_OK(client_->BatchGet(one));
  fanout::v1::BatchGetRequest twice;
  twice.add_keys("flags/checkout");
  twice.add_keys("big");
  twice.add_keys("big");
  EXPECT_THAT(client_->BatchGet(twice),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       ::testing::AllOf(HasSubstr("limits.max_batch_bytes"),
                                        HasSubstr("keys[1] \"big\""))));
}

TEST_F(SidecarServiceTest, BatchGetCompletesOnOtherThreads) {
  auto origin = testing::FakeGrpcOrigin::Start();
  for (int i = 0; i < 5; ++i) origin->Set(absl::StrCat("k", i), absl::StrCat("v", i), i + 1);
  origin->SetDelay(absl::Milliseconds(5));
  config_.origin.type = OriginSection::Type::kGrpc;
  config_.origin.grpc_target = origin->address();
  config_.cache.ttl = absl::Milliseconds(1);  // every batch reads the origin again
  config_.cache.refresh_ahead = 0.01;
  config_.limits.max_batch_keys = 6;
  StartDaemon();
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      for (int round = 0; round < 10; ++round) {
        fanout::v1::BatchGetRequest request;
        for (int i = 4; i >= 0; --i) request.add_keys(absl::StrCat("k", i));
        request.add_keys("missing");
        auto response = client_->BatchGet(request);
        if (!response.ok()) {
          ADD_FAILURE() << response.status();
          return;
        }
        EXPECT_EQ(response->items_size(), 6);
        for (int i = 0; i < 5 && i < response->items_size(); ++i) {
          const fanout::v1::BatchGetItem& item = response->items(i);
          EXPECT_EQ(item.key(), absl::StrCat("k", 4 - i));
          if (item.code() == 0) {
            EXPECT_EQ(item.value(), absl::StrCat("v", 4 - i));
          }
        }
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_GT(origin->fetches(), 5);
}

TEST_F(SidecarServiceTest, BatchGetAdmissionCountsDistinctKeys) {
  HangingListener hanging;
  config_.origin.type = OriginSection::Type::kGrpc;
  config_.origin.grpc_target = hanging.address();
  config_.origin.timeout = absl::Seconds(30);
  config_.limits.max_in_flight = 4;
  StartDaemon();
  // One Get holds one slot until cancelled.
  auto channel = grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials());
  auto stub = fanout::v1::Sidecar::NewStub(channel);
  grpc::ClientContext context;
  fanout::v1::GetRequest request;
  request.set_key("held");
  fanout::v1::GetResponse response;
  absl::Notification done;
  stub->async()->Get(&context, &request, &response, [&](grpc::Status) { done.Notify(); });
  for (int i = 0; i < 500 && daemon_->read_path()->Stats().origin_fetches < 1; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(daemon_->read_path()->Stats().origin_fetches, 1u);

  auto quick = *client::Client::Connect(daemon_->address(), {.timeout = absl::Milliseconds(300)});
  fanout::v1::BatchGetRequest four;
  for (const char* k : {"a", "b", "c", "d"}) four.add_keys(k);
  EXPECT_THAT(quick->BatchGet(four),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limits.max_in_flight")));
  // The same four positions of one key are one read: admitted, and each
  // position answered (here: by the deadline, the origin hanging).
  fanout::v1::BatchGetRequest same;
  for (int i = 0; i < 4; ++i) same.add_keys("a");
  auto answered = quick->BatchGet(same);
  ASSERT_OK(answered);
  ASSERT_EQ(answered->items_size(), 4);
  for (const auto& item : answered->items()) {
    EXPECT_EQ(item.code(), static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  }
  context.TryCancel();
  done.WaitForNotification();
}

// Resident memory of this process, in bytes.
int64_t ResidentBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmRSS:")) {
      int64_t kb = 0;
      std::istringstream(line.substr(6)) >> kb;
      return kb * 1024;
    }
  }
  return -1;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitizedHeap = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitizedHeap = true;
#else
constexpr bool kSanitizedHeap = false;
#endif
#else
constexpr bool kSanitizedHeap = false;
#endif

TEST_F(SidecarServiceTest, BatchGetLargeResponseGivesMemoryBack) {
  if (kSanitizedHeap) GTEST_SKIP() << "the sanitizer's allocator keeps memory its own way";
  config_.limits.max_batch_keys = 200;
  config_.limits.max_batch_bytes = 1ull << 30;
  std::ofstream(root_ / "big") << std::string(1 << 20, 'x');
  StartDaemon();
  fanout::v1::BatchGetRequest request;
  for (int i = 0; i < 200; ++i) request.add_keys("big");
  auto batch = [&] {
    // The server builds and sends all of it; this client (4 MiB default
    // limit) refuses it without holding it.
    EXPECT_THAT(client_->BatchGet(request), StatusIs(absl::StatusCode::kResourceExhausted));
  };
  const int64_t before = ResidentBytes();
  batch();  // a response of 200 MiB of values
  // Given back shortly after (bounded wait); without it glibc keeps most of
  // the peak.
  int64_t after = ResidentBytes();
  for (int i = 0; i < 300 && after > before + (64 << 20); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    after = ResidentBytes();
  }
  EXPECT_LT(after, before + (64 << 20)) << "before " << (before >> 20) << " MiB";
}

TEST_F(SidecarServiceTest, DestroyWithBackgroundRefreshInFlightCancelsIt) {
  auto origin = testing::FakeGrpcOrigin::Start();
  origin->Set("k", "v");
  config_.origin.type = OriginSection::Type::kGrpc;
  config_.origin.grpc_target = origin->address();
  config_.origin.timeout = absl::Seconds(30);
  config_.cache.ttl = absl::Seconds(2);
  config_.cache.xfetch_beta = 0;       // the fixed refresh window:
  config_.cache.refresh_ahead = 0.01;  // every read after 20 ms refreshes
  StartDaemon();
  ASSERT_EQ(client_->Get("k")->value(), "v");
  origin->SetDelay(absl::Seconds(1));
  absl::SleepFor(absl::Milliseconds(30));
  ASSERT_EQ(client_->Get("k")->value(), "v");  // answered; the refresh goes on
  for (int i = 0; i < 500 && origin->in_flight() < 1; ++i) absl::SleepFor(absl::Milliseconds(2));
  ASSERT_EQ(origin->in_flight(), 1);
  ASSERT_EQ(daemon_->read_path()->Stats().refreshes_ahead, 1u);
  client_.reset();
  daemon_.reset();  // cancels the refresh's fetch and waits for it
}

class SidecarRouteTest : public SidecarServiceTest {
 protected:
  // A route "race" over a fast and a slow backend.
  void StartWithRace(router::Policy policy) {
    testing::FakeBackendOptions fast_options;
    fast_options.name = "fast";
    fast_options.delay = absl::Milliseconds(20);
    fast_ = *testing::FakeBackend::Start(fast_options);
    testing::FakeBackendOptions slow_options;
    slow_options.name = "slow";
    slow_options.delay = absl::Seconds(5);
    slow_ = *testing::FakeBackend::Start(slow_options);
    router::RouteConfig route;
    route.name = "race";
    route.policy = policy;
    route.method = "/any.Service/Call";
    route.timeout = absl::Seconds(20);
    route.backends = {{slow_->address(), "slow"}, {fast_->address(), "fast"}};
    config_.routes = {route};
    StartDaemon();
  }

  std::unique_ptr<testing::FakeBackend> fast_;
  std::unique_ptr<testing::FakeBackend> slow_;
};

TEST_F(SidecarRouteTest, RouteFirstSuccessAnswersFromFastBackendAndCancelsSlow) {
  StartWithRace(router::Policy::kFirstSuccess);
  fanout::v1::RouteRequest request;
  request.set_route("race");
  request.set_payload("hello");
  auto response = client_->Route(request);
  ASSERT_OK(response);
  EXPECT_EQ(response->backend(), "fast");
  EXPECT_EQ(response->policy(), fanout::v1::FIRST_SUCCESS);
  EXPECT_EQ(response->payload(), "fast");
  ASSERT_EQ(response->branches_size(), 2);
  EXPECT_TRUE(slow_->WaitFor([](const testing::FakeBackendCounters& c) {
    return c.cancelled == 1;
  })) << testing::FormatCounters(slow_->counters());
}

TEST_F(SidecarRouteTest, RouteCallerCancelReachesTheBackends) {
  StartWithRace(router::Policy::kAll);
  auto channel = grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials());
  auto stub = fanout::v1::Sidecar::NewStub(channel);
  grpc::ClientContext context;  // no deadline: only the cancel can end the call early
  fanout::v1::RouteRequest request;
  request.set_route("race");
  fanout::v1::RouteResponse response;
  absl::Notification done;
  grpc::Status status;
  stub->async()->Route(&context, &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  ASSERT_TRUE(
      slow_->WaitFor([](const testing::FakeBackendCounters& c) { return c.in_flight == 1; }));
  context.TryCancel();
  done.WaitForNotification();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(slow_->WaitFor([](const testing::FakeBackendCounters& c) {
    return c.cancelled == 1;
  })) << testing::FormatCounters(slow_->counters());
}

TEST_F(SidecarRouteTest, RoutePassesValidTraceparentToBackendsAndDropsGarbage) {
  StartWithRace(router::Policy::kFirstSuccess);
  auto stub = fanout::v1::Sidecar::NewStub(
      grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials()));
  auto route = [&](const std::string& traceparent) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    context.AddMetadata("traceparent", traceparent);
    fanout::v1::RouteRequest request;
    request.set_route("race");
    fanout::v1::RouteResponse response;
    return stub->Route(&context, request, &response);
  };
  ASSERT_TRUE(route(kTraceparent).ok());
  EXPECT_EQ(fast_->last_traceparent(), kTraceparent);
  // An all-zero trace id is invalid.
  ASSERT_TRUE(route("00-00000000000000000000000000000000-00f067aa0ba902b7-01").ok());
  EXPECT_EQ(fast_->last_traceparent(), "");
}

TEST_F(SidecarRouteTest, RouteFailureCarriesEveryBranchInErrorDetails) {
  StartWithRace(router::Policy::kAll);
  fast_->SetFailProb(1.0);
  fanout::v1::RouteRequest request;
  request.set_route("race");
  auto response = client_->Route(request);
  ASSERT_THAT(response, StatusIs(absl::StatusCode::kUnavailable));
  const fanout::v1::RouteResponse branches = testing::CarriedRouteResponse(response.status());
  ASSERT_EQ(branches.branches_size(), 2);
  EXPECT_EQ(branches.branches(0).backend(), "slow");
  EXPECT_EQ(branches.branches(0).outcome(), fanout::v1::CANCELLED);
  EXPECT_EQ(branches.branches(1).backend(), "fast");
  EXPECT_EQ(branches.branches(1).outcome(), fanout::v1::ERROR);
}

TEST_F(SidecarRouteTest, RouteBadRequestsAreRefusedNamingTheField) {
  StartWithRace(router::Policy::kFirstSuccess);
  fanout::v1::RouteRequest unknown;
  unknown.set_route("nope");
  EXPECT_THAT(client_->Route(unknown), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  fanout::v1::RouteRequest empty;
  EXPECT_THAT(client_->Route(empty),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("route is empty")));
  fanout::v1::RouteRequest negative;
  negative.set_route("race");
  negative.set_cost(-5);
  EXPECT_THAT(client_->Route(negative),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cost")));
  fanout::v1::RouteRequest bad_policy;
  bad_policy.set_route("race");
  bad_policy.set_policy(static_cast<fanout::v1::Policy>(99));
  EXPECT_THAT(client_->Route(bad_policy),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("policy")));
}

}  // namespace
}  // namespace fanout::server
