// Checks gRPC addresses before they are used: the targets fanoutd dials
// (the gRPC origin, route backends) and the addresses it listens on.
//
// gRPC itself accepts much that does not work: a target without a port
// silently dials port 443, a malformed one fails every call later with a DNS
// error, and a listen port above 65535 is taken modulo 65536. These parsers
// reject such addresses up front with a message that says what is wrong;
// callers prefix the config key or flag that held the address.
#ifndef FANOUT_COMMON_ADDRESS_H_
#define FANOUT_COMMON_ADDRESS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fanout {

struct HostPort {
  std::string host;  // a DNS name, an IPv4 address, or an IPv6 address without brackets
  int port = 0;
};

struct Address {
  enum class Kind {
    kHostPort,      // "host:port", "dns:[//authority/]host:port"
    kUnix,          // "unix:path", "unix:///absolute/path"
    kUnixAbstract,  // "unix-abstract:name"
    kIpList,        // "ipv4:a:p[,a:p...]", "ipv6:[a]:p[,[a]:p...]"
  };
  Kind kind = Kind::kHostPort;
  std::vector<HostPort> hosts;  // one for kHostPort, one or more for kIpList
  std::string path;             // kUnix: the socket path; kUnixAbstract: the name
};

// A target for grpc::CreateChannel. Accepts "host:port" (host a DNS name,
// IPv4, or [IPv6]), "dns:host:port", "dns:///host:port",
// "dns://authority/host:port", "unix:path", "unix:///path",
// "unix-abstract:name", "ipv4:addr:port[,addr:port...]" and
// "ipv6:[addr]:port[,...]". The port is required and must be 1 to 65535.
// InvalidArgument otherwise, with a message quoting the target.
absl::StatusOr<Address> ParseGrpcTarget(absl::string_view target);

// An address for grpc::ServerBuilder::AddListeningPort. Accepts "host:port"
// (host a DNS name, IPv4 or [IPv6]; 0.0.0.0 or [::] for every interface;
// gRPC refuses an empty host), "unix:path",
// "unix:///path" and "unix-abstract:name". The port is required and must be
// 0 (any free port) to 65535. InvalidArgument otherwise.
absl::StatusOr<Address> ParseListenAddress(absl::string_view address);

}  // namespace fanout

#endif  // FANOUT_COMMON_ADDRESS_H_
