#include "common/address.h"

#include <ostream>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace fanout {
namespace {

using ::fanout::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ParseGrpcTargetTest, AcceptsHostPortForms) {
  for (const char* target :
       {"127.0.0.1:9000", "localhost:1", "origin.config.svc.cluster.local:443", "my_host:65535",
        "[::1]:9000", "[fe80::1%eth0]:80", "fqdn.example.com.:80", "dns:origin:9000",
        "dns:///origin:9000", "dns:///[::1]:9000", "dns://8.8.8.8/origin:9000",
        "dns://8.8.8.8:53/origin:9000"}) {
    absl::StatusOr<Address> a = ParseGrpcTarget(target);
    ASSERT_OK(a) << target;
    EXPECT_EQ(a->kind, Address::Kind::kHostPort) << target;
    ASSERT_EQ(a->hosts.size(), 1u) << target;
  }
  absl::StatusOr<Address> a = ParseGrpcTarget("dns:///origin:9000");
  ASSERT_OK(a);
  EXPECT_EQ(a->hosts[0].host, "origin");
  EXPECT_EQ(a->hosts[0].port, 9000);
  a = ParseGrpcTarget("[::1]:9000");
  ASSERT_OK(a);
  EXPECT_EQ(a->hosts[0].host, "::1");
}

TEST(ParseGrpcTargetTest, AcceptsUnixAndAddressLists) {
  absl::StatusOr<Address> a = ParseGrpcTarget("unix:///run/origin.sock");
  ASSERT_OK(a);
  EXPECT_EQ(a->kind, Address::Kind::kUnix);
  EXPECT_EQ(a->path, "/run/origin.sock");
  a = ParseGrpcTarget("unix:relative.sock");
  ASSERT_OK(a);
  EXPECT_EQ(a->path, "relative.sock");
  a = ParseGrpcTarget("unix-abstract:fanout");
  ASSERT_OK(a);
  EXPECT_EQ(a->kind, Address::Kind::kUnixAbstract);
  a = ParseGrpcTarget("ipv4:10.0.0.1:80,10.0.0.2:81");
  ASSERT_OK(a);
  EXPECT_EQ(a->kind, Address::Kind::kIpList);
  ASSERT_EQ(a->hosts.size(), 2u);
  EXPECT_EQ(a->hosts[1].port, 81);
  EXPECT_OK(ParseGrpcTarget("ipv4:///10.0.0.1:80"));
  EXPECT_OK(ParseGrpcTarget("ipv6:[::1]:80,[2001:db8::1]:81"));
}

struct BadTarget {
  const char* target;
  const char* expected;
  friend std::ostream& operator<<(std::ostream& os, const BadTarget& b) {
    return os << "\"" << b.target << "\"";
  }
};

class ParseGrpcTargetBadTest : public ::testing::TestWithParam<BadTarget> {};

TEST_P(ParseGrpcTargetBadTest, RejectsSayingWhy) {
  EXPECT_THAT(ParseGrpcTarget(GetParam().target),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(GetParam().expected)));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ParseGrpcTargetBadTest,
    ::testing::Values(
        BadTarget{"", "is empty"}, BadTarget{"127.0.0.1", "has no port"},
        BadTarget{"origin", "has no port"}, BadTarget{"origin:", "has no port"},
        BadTarget{"origin:0", "has port 0 (want 1 to 65535)"},
        BadTarget{"origin:99999", "has port 99999"},
        BadTarget{"origin:123456", "has port 123456 (want 1 to 65535)"},
        BadTarget{"origin:http", "\"http\", which is not a number"},
        BadTarget{"origin:-1", "is not a number"}, BadTarget{"999.1.1.1:80", "not an IPv4 address"},
        BadTarget{"::1:80", "IPv6 address without brackets"}, BadTarget{"[::1:80", "unclosed '['"},
        BadTarget{"[::1]", "has no port"}, BadTarget{"[nope]:80", "not an IPv6 address"},
        BadTarget{"bad host:80", "whitespace"}, BadTarget{"bad_host!:80", "not a host name"},
        BadTarget{"-leading.example:80", "not a host name"},
        BadTarget{"a..b:80", "not a host name"},
        BadTarget{"http://origin:80", "has scheme \"http\""},
        BadTarget{"xds:///origin", "has scheme \"xds\""},
        BadTarget{"origin:80/path", "contains '/'"},
        BadTarget{"dns://origin:80", "no '/' after the authority"},
        BadTarget{"dns:///origin", "has no port"}, BadTarget{"unix:", "has no socket path"},
        BadTarget{"unix://host/path", "names a host"},
        BadTarget{"unix-abstract:", "has no socket name"}, BadTarget{"ipv4:", "lists no addresses"},
        BadTarget{"ipv4:origin:80", "not an IPv4 address"},
        BadTarget{"ipv4:10.0.0.1:80,", "has no port"},
        BadTarget{"ipv6:10.0.0.1:80", "needs an IPv6 address in brackets"},
        BadTarget{"ipv4://auth/10.0.0.1:80", "names an authority"}));

TEST(ParseGrpcTargetTest, RejectsOverlongUnixPath) {
  const std::string path = "unix:/" + std::string(200, 'p');
  EXPECT_THAT(ParseGrpcTarget(path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bytes (at most 107)")));
}

TEST(ParseListenAddressTest, AcceptsPortZeroAnyInterfaceAndUnix) {
  absl::StatusOr<Address> a = ParseListenAddress("127.0.0.1:0");
  ASSERT_OK(a);
  EXPECT_EQ(a->hosts[0].port, 0);
  a = ParseListenAddress("0.0.0.0:7070");
  ASSERT_OK(a);
  EXPECT_EQ(a->hosts[0].host, "0.0.0.0");
  EXPECT_EQ(a->hosts[0].port, 7070);
  EXPECT_OK(ParseListenAddress("[::]:7070"));
  EXPECT_OK(ParseListenAddress("localhost:65535"));
  a = ParseListenAddress("unix:///tmp/fanout.sock");
  ASSERT_OK(a);
  EXPECT_EQ(a->kind, Address::Kind::kUnix);
  EXPECT_EQ(a->path, "/tmp/fanout.sock");
  EXPECT_OK(ParseListenAddress("unix-abstract:fanout"));
}

TEST(ParseListenAddressTest, RejectsPortsGrpcWouldWrapOrDefault) {
  // gRPC takes these modulo 65536 (34463, 4464) or defaults to 443.
  EXPECT_THAT(ParseListenAddress("127.0.0.1:99999"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has port 99999")));
  EXPECT_THAT(ParseListenAddress(":70000"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has port 70000")));
  EXPECT_THAT(ParseListenAddress("127.0.0.1"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has no port")));
  EXPECT_THAT(ParseListenAddress("dns:///127.0.0.1:80"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("contains '/'")));
  EXPECT_THAT(ParseListenAddress("[::1]:"), StatusIs(absl::StatusCode::kInvalidArgument));
  // gRPC answers "unparseable host:port".
  EXPECT_THAT(ParseListenAddress(":7070"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("want 0.0.0.0:port")));
  EXPECT_THAT(ParseListenAddress(""), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace fanout
