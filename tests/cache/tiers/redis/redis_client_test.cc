// The asynchronous Redis client against real redis-servers: commands and
// pipelines, the handshake (AUTH, SELECT), addresses, deadlines, reconnects.
#include "cache/tiers/redis/redis_client.h"

#include <atomic>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "tests/cache/tiers/redis/redis_test_env.h"
#include "tests/testing/fault_proxy.h"
#include "tests/testing/status_matchers.h"

namespace fanout::testing {
namespace {

using cache::RedisClient;
using cache::RedisReply;
using ::testing::HasSubstr;

RedisServerOptions PasswordOptions(std::string password) {
  RedisServerOptions o;
  o.password = std::move(password);
  return o;
}

RedisServerOptions SocketOptions(std::string path) {
  RedisServerOptions o;
  o.unix_socket = std::move(path);
  return o;
}

std::shared_ptr<RedisClient> Connect(cache::RedisClientOptions o) {
  auto c = RedisClient::Create(std::move(o));
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : nullptr;
}

absl::StatusOr<std::vector<RedisReply>> PipelineNow(RedisClient& c,
                                                    std::vector<RedisClient::Command> cmds) {
  absl::Notification done;
  absl::StatusOr<std::vector<RedisReply>> out = absl::InternalError("no answer");
  c.RunPipeline(std::move(cmds), absl::Now() + absl::Seconds(5),
                [&](absl::StatusOr<std::vector<RedisReply>> r) {
                  out = std::move(r);
                  done.Notify();
                });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  return out;
}

TEST(RedisClientTest, RunAnswersAndPipelinesKeepOrder) {
  RedisServer* server = SharedRedis();
  ASSERT_NE(server, nullptr);
  auto client = Connect(ClientOptions(server->address()));
  ASSERT_NE(client, nullptr);
  const std::string k = UniquePrefix() + "k";
  absl::StatusOr<RedisReply> set = RunNow(*client, {"SET", k, "v"});
  ASSERT_OK(set);
  EXPECT_EQ(set->type, RedisReply::Type::kStatus);
  EXPECT_EQ(set->str, "OK");

  absl::StatusOr<std::vector<RedisReply>> r = PipelineNow(*client, {{"GET", k},
                                                                    {"INCR", k + "n"},
                                                                    {"INCR", k + "n"},
                                                                    {"GET", k + "absent"},
                                                                    {"MGET", k, k + "absent"},
                                                                    {"INCR", k}});
  ASSERT_OK(r);
  ASSERT_EQ(r->size(), 6u);
  EXPECT_EQ((*r)[0].str, "v");
  EXPECT_EQ((*r)[1].integer, 1);
  EXPECT_EQ((*r)[2].integer, 2);
  EXPECT_TRUE((*r)[3].is_nil());
  ASSERT_EQ((*r)[4].elements.size(), 2u);
  EXPECT_EQ((*r)[4].elements[0].str, "v");
  EXPECT_TRUE((*r)[4].elements[1].is_nil());
  // An error reply is an answer: OK status, error type.
  EXPECT_TRUE((*r)[5].is_error());
  EXPECT_THAT((*r)[5].str, HasSubstr("not an integer"));
}

TEST(RedisClientTest, ArgumentsAreBinarySafe) {
  RedisServer* server = SharedRedis();
  ASSERT_NE(server, nullptr);
  auto client = Connect(ClientOptions(server->address()));
  ASSERT_NE(client, nullptr);
  const std::string k = UniquePrefix() + std::string("\0\r\n$3\r\n", 8);
  const std::string v("\0\1\r\n*1\r\n\xff", 10);
  ASSERT_OK(RunNow(*client, {"SET", k, v}));
  absl::StatusOr<RedisReply> got = RunNow(*client, {"GET", k});
  ASSERT_OK(got);
  EXPECT_EQ(got->str, v);
}

TEST(RedisClientTest, EmptyCommandIsInvalidArgument) {
  RedisServer* server = SharedRedis();
  ASSERT_NE(server, nullptr);
  auto client = Connect(ClientOptions(server->address()));
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(RunNow(*client, {}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(PipelineNow(*client, {}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RedisClientTest, PasswordIsSentAndDbSelected) {
  std::string error;
  auto server = RedisServer::Start(&error, PasswordOptions("s3cret"));
  ASSERT_NE(server, nullptr) << error;
  cache::RedisClientOptions o = ClientOptions(server->address());
  o.password = "s3cret";
  o.db = 3;
  auto client = Connect(o);
  ASSERT_NE(client, nullptr);
  ASSERT_OK(RunNow(*client, {"SET", "where", "db3"}));
  EXPECT_EQ(server->Cli({"-n", "3", "GET", "where"}).out, "db3\n");
  EXPECT_EQ(server->Cli({"GET", "where"}).out, "\n");
}

TEST(RedisClientTest, PasswordForARedisWithoutOneIsAccepted) {
  RedisServer* server = SharedRedis();
  ASSERT_NE(server, nullptr);
  cache::RedisClientOptions o = ClientOptions(server->address());
  o.password = "not-needed";
  auto client = Connect(o);
  ASSERT_NE(client, nullptr);
  EXPECT_OK(RunNow(*client, {"PING"}));
}

TEST(RedisClientTest, WrongPasswordFailsAtStartWithTheReason) {
  std::string error;
  auto server = RedisServer::Start(&error, PasswordOptions("s3cret"));
  ASSERT_NE(server, nullptr) << error;
  cache::RedisClientOptions o = ClientOptions(server->address());
  o.password = "wrong";
  EXPECT_THAT(RedisClient::Create(o),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("refused AUTH")));
  o.password = "";
  EXPECT_THAT(RedisClient::Create(o),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("requires a password")));
}

TEST(RedisClientTest, WrongPasswordLaterIsUnavailableWithTheReason) {
  // Redis changes its password while the client runs: reconnects are refused,
  // calls fail at once, and the reason is what they say.
  std::string error;
  auto server = RedisServer::Start(&error, PasswordOptions("old"));
  ASSERT_NE(server, nullptr) << error;
  cache::RedisClientOptions o = ClientOptions(server->address());
  o.password = "old";
  o.connections = 1;
  auto client = Connect(o);
  ASSERT_NE(client, nullptr);
  ASSERT_EQ(server->Cli({"CONFIG", "SET", "requirepass", "new"}).code, 0);
  server->Cli({"-a", "new", "--no-auth-warning", "CLIENT", "KILL", "TYPE", "normal"});
  absl::StatusOr<RedisReply> last;
  EXPECT_TRUE(PollUntil([&] {
    last = RunNow(*client, {"PING"});
    return !last.ok() && absl::StrContains(last.status().message(), "AUTH");
  })) << last.status();
  EXPECT_THAT(last, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("refused AUTH: WRONGPASS")));
  EXPECT_FALSE(client->Available());
}

// A TCP server on `port` that answers every read with `reply` (Python
// literal), or echoes it back when `reply` is empty.
std::unique_ptr<Subprocess> TinyServer(int port, const std::string& reply) {
  auto p = std::make_unique<Subprocess>(std::vector<std::string>{
      "/usr/bin/python3", "-c",
      absl::StrCat("import socket,threading\n"
                   "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                   "s.bind(('127.0.0.1', ",
                   port,
                   ")); s.listen()\n"
                   "def serve(c):\n"
                   "  while True:\n"
                   "    d=c.recv(4096)\n"
                   "    if not d: break\n"
                   "    c.sendall(",
                   reply.empty() ? "d" : reply,
                   ")\n"
                   "while True:\n"
                   "  c,_=s.accept(); threading.Thread(target=serve, args=(c,)).start()\n")});
  EXPECT_TRUE(PollUntil([&] {
    return RunProcess(
               {"/usr/bin/python3", "-c",
                absl::StrCat("import socket; socket.create_connection(('127.0.0.1', ", port, "))")})
               .code == 0;
  }));
  return p;
}

TEST(RedisClientTest, SomethingElseAtTheAddressFailsAtStart) {
  // An echo server answers PING with PING (an array): not Redis.
  const int echo_port = PickFreePort();
  auto echo = TinyServer(echo_port, "");
  EXPECT_THAT(RedisClient::Create(ClientOptions(absl::StrCat("127.0.0.1:", echo_port))),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("is it a Redis server?")));
  // An HTTP server's answer is not even the Redis protocol.
  const int http_port = PickFreePort();
  auto http = TinyServer(http_port, "b'HTTP/1.1 400 Bad Request\\r\\n\\r\\n'");
  EXPECT_THAT(RedisClient::Create(ClientOptions(absl::StrCat("127.0.0.1:", http_port))),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("does not speak the Redis protocol")));
}

TEST(RedisClientTest, RedisStillLoadingIsNotAStartError) {
  const int port = PickFreePort();
  auto loading = TinyServer(port, "b'-LOADING Redis is loading the dataset in memory\\r\\n'");
  cache::RedisClientOptions o = ClientOptions(absl::StrCat("127.0.0.1:", port));
  o.connections = 1;
  auto client = Connect(o);
  ASSERT_NE(client, nullptr);
  EXPECT_FALSE(client->Available());
  EXPECT_THAT(RunNow(*client, {"PING"}),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("LOADING")));
}

TEST(RedisClientTest, DbOutOfRangeFailsAtStart) {
  RedisServer* server = SharedRedis();
  ASSERT_NE(server, nullptr);
  cache::RedisClientOptions o = ClientOptions(server->address());
  o.db = 99;
  EXPECT_THAT(RedisClient::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("SELECT 99")));
}

TEST(RedisClientTest, UnixSocketAndHostNamesWork) {
  std::string error;
  const std::string sock = TempPath("redis.sock");
  auto server = RedisServer::Start(&error, SocketOptions(sock));
  ASSERT_NE(server, nullptr) << error;
  auto unix_client = Connect(ClientOptions("unix://" + sock));
  ASSERT_NE(unix_client, nullptr);
  ASSERT_OK(RunNow(*unix_client, {"SET", "via", "unix"}));
  auto named = Connect(ClientOptions(absl::StrCat("localhost:", server->port())));
  ASSERT_NE(named, nullptr);
  absl::StatusOr<RedisReply> got = RunNow(*named, {"GET", "via"});
  ASSERT_OK(got);
  EXPECT_EQ(got->str, "unix");
}

TEST(RedisClientTest, UnreachableRedisStartsAndConnectsWhenItComesUp) {
  const int port = PickFreePort();
  cache::RedisClientOptions o = ClientOptions(absl::StrCat("127.0.0.1:", port));
  o.reconnect_max = absl::Milliseconds(200);
  auto client = Connect(o);
  ASSERT_NE(client, nullptr);
  EXPECT_FALSE(client->Available());
  const absl::Time start = absl::Now();
  EXPECT_THAT(RunNow(*client, {"PING"}),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("Connection refused")));
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));  // refused at once, not after a timeout
  EXPECT_GE(client->Stats().refused, 1u);

  // Redis comes up on that port: the client finds it by itself.
  Subprocess redis({"/usr/bin/redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no"});
  ASSERT_TRUE(PollUntil([&] { return client->Available(); }, absl::Seconds(20)));
  EXPECT_OK(RunNow(*client, {"PING"}));
}

TEST(RedisClientTest, CallerDeadlineShorterThanTheTimeoutKeepsTheConnection) {
  RedisServer* server = SharedRedis();
  ASSERT_NE(server, nullptr);
  std::string error;
  auto proxy = FaultProxy::Start("127.0.0.1", server->port(), &error);
  ASSERT_NE(proxy, nullptr) << error;
  cache::RedisClientOptions o = ClientOptions(proxy->address(), absl::Seconds(5));
  o.connections = 1;
  auto client = Connect(o);
  ASSERT_NE(client, nullptr);
  proxy->Delay(absl::Milliseconds(300));
  absl::Notification done;
  absl::Status status;
  client->Run({"PING"}, absl::Now() + absl::Milliseconds(20), [&](absl::StatusOr<RedisReply> r) {
    status = r.status();
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kDeadlineExceeded));
  // The slow answer was not the connection's fault: it stays.
  proxy->Pass();
  EXPECT_OK(RunNow(*client, {"PING"}));
  EXPECT_EQ(client->Stats().connection_losses, 0u);
  EXPECT_EQ(client->Stats().deadline_exceeded, 1u);
  EXPECT_EQ(proxy->accepted(), 1);
}

TEST(RedisClientTest, TimedOutCommandClosesItsConnectionAndItReconnects) {
  RedisServer* server = SharedRedis();
  ASSERT_NE(server, nullptr);
  std::string error;
  auto proxy = FaultProxy::Start("127.0.0.1", server->port(), &error);
  ASSERT_NE(proxy, nullptr) << error;
  cache::RedisClientOptions o = ClientOptions(proxy->address(), absl::Milliseconds(100));
  o.connections = 1;
  o.breaker.failure_threshold = 100;  // this test is about the connection
  auto client = Connect(o);
  ASSERT_NE(client, nullptr);
  proxy->Blackhole();
  absl::StatusOr<RedisReply> r = RunNow(*client, {"PING"}, absl::Seconds(5));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("no answer within 100ms")));
  EXPECT_TRUE(cache::IsRedisTimeout(r.status()));
  EXPECT_EQ(client->Stats().timeouts, 1u);
  EXPECT_EQ(client->Stats().connection_losses, 1u);
  proxy->Pass();
  ASSERT_TRUE(PollUntil([&] { return RunNow(*client, {"PING"}).ok(); }));
  EXPECT_GE(proxy->accepted(), 2);
}

TEST(RedisClientTest, DestructionFailsWhatIsInFlight) {
  RedisServer* server = SharedRedis();
  ASSERT_NE(server, nullptr);
  std::string error;
  auto proxy = FaultProxy::Start("127.0.0.1", server->port(), &error);
  ASSERT_NE(proxy, nullptr) << error;
  auto client = Connect(ClientOptions(proxy->address(), absl::Seconds(30)));
  ASSERT_NE(client, nullptr);
  proxy->Blackhole();
  std::atomic<int> unavailable{0};
  std::atomic<int> calls{0};
  for (int i = 0; i < 10; ++i) {
    client->Run({"PING"}, absl::InfiniteFuture(), [&](absl::StatusOr<RedisReply> r) {
      calls.fetch_add(1);
      if (r.status().code() == absl::StatusCode::kUnavailable) unavailable.fetch_add(1);
    });
  }
  bool ran_late = false;
  client->RunAfter(absl::Hours(1), [&] { ran_late = true; });
  client.reset();
  EXPECT_EQ(calls.load(), 10);
  EXPECT_EQ(unavailable.load(), 10);
  EXPECT_TRUE(ran_late);
}

TEST(RedisClientTest, ManyThreadsManyCommandsEachAnsweredOnce) {
  RedisServer* server = SharedRedis();
  ASSERT_NE(server, nullptr);
  auto client = Connect(ClientOptions(server->address()));
  ASSERT_NE(client, nullptr);
  const std::string k = UniquePrefix() + "counter";
  constexpr int kThreads = 4;
  constexpr int kCalls = 2000;
  std::atomic<int> answered{0};
  std::atomic<int> bad{0};
  absl::Notification all;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCalls; ++i) {
        client->Run({"INCR", k}, absl::Now() + absl::Seconds(10),
                    [&](absl::StatusOr<RedisReply> r) {
                      if (!r.ok() || r->type != RedisReply::Type::kInteger) bad.fetch_add(1);
                      if (answered.fetch_add(1) + 1 == kThreads * kCalls) all.Notify();
                    });
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(all.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(bad.load(), 0);
  absl::StatusOr<RedisReply> total = RunNow(*client, {"GET", k});
  ASSERT_OK(total);
  EXPECT_EQ(total->str, std::to_string(kThreads * kCalls));
}

}  // namespace
}  // namespace fanout::testing
