// Fanoutd in-process: start-up failures, the shutdown stages, and the
// process-wide gRPC callback queue it holds.
#include "server/fanoutd.h"

#include <grpcpp/generic/generic_stub.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/synchronization/notification.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "tests/testing/eventually.h"
#include "tests/testing/fake_grpc_origin.h"
#include "tests/testing/status_matchers.h"

namespace fanout::server {
namespace {

using ::fanout::testing::Eventually;
using ::fanout::testing::StatusIs;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

class FanoutdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("fanout_fanoutd_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    std::ofstream(root_ / "k") << "v";
    config_.server.listen = "127.0.0.1:0";
    config_.server.shutdown_delay = absl::ZeroDuration();
    config_.origin.file_root = root_.string();
  }
  void TearDown() override { fs::remove_all(root_); }

  std::unique_ptr<Fanoutd> Start() {
    absl::StatusOr<std::unique_ptr<Fanoutd>> d = Fanoutd::Start(config_);
    EXPECT_OK(d);
    return d.ok() ? *std::move(d) : nullptr;
  }

  fs::path root_;
  Config config_;
};

TEST_F(FanoutdTest, StartFailsNamingTheAddressWhenThePortIsTaken) {
  std::unique_ptr<Fanoutd> first = Start();
  ASSERT_NE(first, nullptr);
  // gRPC's default SO_REUSEPORT would let this one start and share the port.
  config_.server.listen = first->address();
  EXPECT_THAT(Fanoutd::Start(config_), StatusIs(absl::StatusCode::kUnavailable,
                                                HasSubstr("cannot listen on \"" + first->address() +
                                                          "\": Address already in use")));
}

TEST_F(FanoutdTest, StartRefusesAUnixSocketAnotherServerIsListeningOn) {
  const std::string path = (root_ / "fanout.sock").string();
  config_.server.listen = "unix://" + path;
  std::unique_ptr<Fanoutd> first = Start();
  ASSERT_NE(first, nullptr);
  // gRPC would unlink the socket file and take the path over.
  EXPECT_THAT(Fanoutd::Start(config_),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("already listening there")));
  auto client = *client::Client::Connect(config_.server.listen);
  EXPECT_OK(client->Health(""));  // the first one still has it
}

TEST_F(FanoutdTest, StartRejectsBadListenPortsNamingTheKey) {
  for (const char* listen : {"127.0.0.1:99999", "127.0.0.1", "0.0.0.0:70000"}) {
    config_.server.listen = listen;
    EXPECT_THAT(Fanoutd::Start(config_),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("server.listen")))
        << listen;
  }
}

TEST_F(FanoutdTest, ShutdownDelayKeepsServingWhileHealthSaysNotServing) {
  config_.server.shutdown_delay = absl::Hours(1);
  std::unique_ptr<Fanoutd> d = Start();
  ASSERT_NE(d, nullptr);
  auto client = *client::Client::Connect(d->address());
  ASSERT_OK(client->Get("k"));

  std::thread stopping([&] { d->Shutdown(); });
  EXPECT_TRUE(Eventually([&] {
    absl::StatusOr<HealthCheckResponse::ServingStatus> s = client->Health("");
    return s.ok() && *s == HealthCheckResponse::NOT_SERVING;
  }));
  // Not serving as far as health checks go, but calls are still answered.
  absl::StatusOr<fanout::v1::GetResponse> during = client->Get("k");
  ASSERT_OK(during);
  EXPECT_EQ(during->value(), "v");

  d->ShutdownNow();  // ends the hour-long delay
  stopping.join();
  EXPECT_THAT(client->Get("k"), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(FanoutdTest, HealthWatchSeesNotServingThenEndsOnShutdown) {
  config_.server.shutdown_delay = absl::Hours(1);
  std::unique_ptr<Fanoutd> d = Start();
  ASSERT_NE(d, nullptr);
  auto channel = grpc::CreateChannel(d->address(), grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  grpc::health::v1::HealthCheckRequest request;
  auto reader = stub->Watch(&context, request);
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);

  std::thread stopping([&] { d->Shutdown(); });
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);  // the delay has begun
  d->ShutdownNow();
  EXPECT_FALSE(reader->Read(&response));  // the stream ends
  const grpc::Status end = reader->Finish();
  // The health service ends the stream; ShutdownNow may cancel it first
  // (CANCELLED, or gRPC's own UNAVAILABLE "Cancelling all calls").
  EXPECT_TRUE(end.ok() || end.error_code() == grpc::StatusCode::CANCELLED ||
              end.error_code() == grpc::StatusCode::UNAVAILABLE)
      << end.error_code() << " " << end.error_message();
  stopping.join();
}

// Opens a TCP connection that speaks HTTP/2 (preface and SETTINGS) and then
// ignores everything, GOAWAY included. Returns the socket.
int IdleHttp2Client(const std::string& address) {
  int port = 0;
  EXPECT_TRUE(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port));
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<uint16_t>(port));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)), 0);
  static const char kHello[] =
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
      "\x00\x00\x00\x04\x00\x00\x00\x00\x00";  // an empty SETTINGS frame
  EXPECT_EQ(::write(fd, kHello, sizeof(kHello) - 1), static_cast<ssize_t>(sizeof(kHello) - 1));
  return fd;
}

TEST_F(FanoutdTest, IdleShutdownDoesNotWaitForClientsToHangUp) {
  config_.server.drain_timeout = absl::Seconds(60);
  std::unique_ptr<Fanoutd> d = Start();
  ASSERT_NE(d, nullptr);
  const int fd = IdleHttp2Client(d->address());
  auto client = *client::Client::Connect(d->address());
  ASSERT_OK(client->Get("k"));  // and a real client, idle from now on
  ASSERT_TRUE(Eventually([&] { return d->calls_in_flight() == 0; }));

  // Without closing idle connections, the drain waits for the raw client to
  // answer the GOAWAY's ping: 20 s, gRPC's limit for that (or
  // server.drain_timeout when shorter). Done right it takes milliseconds.
  const absl::Time start = absl::Now();
  d->Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  char buf[256];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) {
  }
  EXPECT_LE(n, 0);  // the server closed the connection
  ::close(fd);
}

TEST_F(FanoutdTest, ShutdownNowCancelsCallsInFlight) {
  auto origin = testing::FakeGrpcOrigin::Start();
  origin->Set("slow", "value");
  origin->SetDelay(absl::Seconds(3));
  config_.origin.type = OriginSection::Type::kGrpc;
  config_.origin.grpc_target = origin->address();
  config_.origin.timeout = absl::Seconds(30);
  config_.server.drain_timeout = absl::Seconds(60);
  std::unique_ptr<Fanoutd> d = Start();
  ASSERT_NE(d, nullptr);
  auto client = *client::Client::Connect(d->address(), {.timeout = absl::Seconds(30)});
  ASSERT_OK(client->Health(""));

  absl::StatusOr<fanout::v1::GetResponse> result;
  std::thread caller([&] { result = client->Get("slow"); });
  ASSERT_TRUE(Eventually([&] { return origin->in_flight() == 1; }));
  std::thread stopping([&] { d->Shutdown(); });
  // The drain has begun (new calls are refused) with the Get still in flight.
  ASSERT_TRUE(Eventually([&] { return !client->Health("").ok(); }));
  EXPECT_EQ(d->calls_in_flight(), 1);
  EXPECT_EQ(origin->in_flight(), 1);
  d->ShutdownNow();
  caller.join();
  stopping.join();
  // Drained, the call would have been answered "value" after 3 s.
  EXPECT_FALSE(result.ok());
  EXPECT_TRUE(result.status().code() == absl::StatusCode::kCancelled ||
              result.status().code() == absl::StatusCode::kUnavailable)
      << result.status();
  // The read path's fill is still waiting for the origin: let it land
  // before the daemon goes.
  EXPECT_TRUE(Eventually([&] { return origin->in_flight() == 0; }));
}

TEST_F(FanoutdTest, ChannelReleasedOnACallbackThreadDoesNotTearDownGrpcCallbackQueue) {
  // Fanoutd::Start holds gRPC 1.51's process-wide callback queue for good.
  // Without that hold, the channel below - the last user of the queue once
  // the daemon is gone - is released by its own completion callback, on a
  // thread of the queue, which then joins itself and polls the deleted
  // queue ("assertion failed: prior > 0", an abort in most runs of this
  // loop).
  Start().reset();
  for (int i = 0; i < 200; ++i) {
    auto channel = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());
    struct Call {
      grpc::ClientContext context;
      grpc::ByteBuffer request;
      grpc::ByteBuffer response;
    };
    auto call = std::make_shared<Call>();
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    grpc::Slice slice("x");
    call->request = grpc::ByteBuffer(&slice, 1);
    auto stub = std::make_shared<grpc::GenericStub>(channel);
    std::atomic<bool> done{false};
    stub->UnaryCall(&call->context, "/no.Such/Method", grpc::StubOptions(), &call->request,
                    &call->response, [call, stub, channel, &done](grpc::Status) mutable {
                      // The context, the stub and the channel all hold the
                      // channel: the last of them goes here, on a callback
                      // thread.
                      call.reset();
                      stub.reset();
                      channel.reset();
                      done.store(true);
                    });
    call.reset();
    stub.reset();
    channel.reset();
    ASSERT_TRUE(Eventually([&] { return done.load(); }));
  }
}

}  // namespace
}  // namespace fanout::server
