#include "common/address.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fanout {
namespace {

// The longest Unix socket path the kernel takes (sun_path holds the NUL).
constexpr size_t kMaxUnixPath = sizeof(sockaddr_un::sun_path) - 1;

absl::Status Bad(absl::string_view address, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("\"", address, "\" ", why));
}

bool IsIpv4(absl::string_view host) {
  in_addr a;
  return inet_pton(AF_INET, std::string(host).c_str(), &a) == 1;
}

// An IPv6 address, with an optional zone ("fe80::1%eth0").
bool IsIpv6(absl::string_view host) {
  const size_t percent = host.find('%');
  if (percent != absl::string_view::npos) {
    const absl::string_view zone = host.substr(percent + 1);
    if (zone.empty()) return false;
    for (char c : zone) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
        return false;
      }
    }
    host = host.substr(0, percent);
  }
  in6_addr a;
  return inet_pton(AF_INET6, std::string(host).c_str(), &a) == 1;
}

// A DNS name: dot-separated labels of letters, digits, '-' and '_', each 1
// to 63 bytes, 253 in all; a trailing dot (fully qualified) is allowed.
bool IsDnsName(absl::string_view name) {
  absl::ConsumeSuffix(&name, ".");
  if (name.empty() || name.size() > 253) return false;
  for (absl::string_view label : absl::StrSplit(name, '.')) {
    if (label.empty() || label.size() > 63) return false;
    if (label.front() == '-' || label.back() == '-') return false;
    for (char c : label) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
        return false;
      }
    }
  }
  return true;
}

bool AllDigitsAndDots(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '.') return false;
  }
  return true;
}

enum class HostRule { kAny, kIpv4Only, kIpv6Only };

// Splits and checks "host:port" / "[v6]:port". `whole` is the address as
// written, for messages.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view whole, absl::string_view text,
                                       HostRule rule, bool for_listen, int min_port) {
  absl::string_view host;
  absl::string_view port;
  bool bracketed = false;
  if (absl::StartsWith(text, "[")) {
    const size_t close = text.find(']');
    if (close == absl::string_view::npos) return Bad(whole, "has an unclosed '['");
    host = text.substr(1, close - 1);
    absl::string_view rest = text.substr(close + 1);
    if (!absl::ConsumePrefix(&rest, ":")) {
      return Bad(whole, "has no port (want [address]:port)");
    }
    port = rest;
    bracketed = true;
  } else {
    const size_t colon = text.rfind(':');
    if (colon == absl::string_view::npos) return Bad(whole, "has no port (want host:port)");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != absl::string_view::npos) {
      return Bad(whole, "looks like an IPv6 address without brackets (want [address]:port)");
    }
  }

  if (port.empty()) return Bad(whole, "has no port (want host:port)");
  if (!std::all_of(port.begin(), port.end(),
                   [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); })) {
    return Bad(whole, absl::StrCat("has port \"", port, "\", which is not a number"));
  }
  int number = 0;
  for (char c : port) number = std::min(number * 10 + (c - '0'), 1000000);
  if (number < min_port || number > 65535) {
    return Bad(whole, absl::StrCat("has port ", port, " (want ", min_port, " to 65535)"));
  }

  if (host.empty()) {
    return Bad(whole, for_listen ? "has no host (want 0.0.0.0:port or [::]:port for every "
                                   "interface)"
                                 : "has no host");
  } else if (bracketed) {
    if (rule == HostRule::kIpv4Only || !IsIpv6(host)) {
      return Bad(whole, absl::StrCat("has \"", host, "\", which is not an IPv6 address"));
    }
  } else if (rule == HostRule::kIpv6Only) {
    return Bad(whole, "needs an IPv6 address in brackets ([address]:port)");
  } else if (rule == HostRule::kIpv4Only || AllDigitsAndDots(host)) {
    if (!IsIpv4(host)) {
      return Bad(whole, absl::StrCat("has \"", host, "\", which is not an IPv4 address"));
    }
  } else if (!IsDnsName(host)) {
    return Bad(whole, absl::StrCat("has \"", host, "\", which is not a host name"));
  }
  return HostPort{std::string(host), number};
}

// "unix:path" or "unix:///absolute/path" (rest = what follows "unix:").
absl::StatusOr<Address> ParseUnix(absl::string_view whole, absl::string_view rest) {
  if (absl::ConsumePrefix(&rest, "//")) {
    // A URI: only an empty authority is allowed ("unix:///path").
    if (!absl::StartsWith(rest, "/")) {
      return Bad(whole, "names a host; want unix:///absolute/path or unix:relative/path");
    }
  }
  if (rest.empty()) return Bad(whole, "has no socket path");
  if (rest.size() > kMaxUnixPath) {
    return Bad(whole, absl::StrCat("has a socket path of ", rest.size(), " bytes (at most ",
                                   kMaxUnixPath, ")"));
  }
  if (rest.find('\0') != absl::string_view::npos) return Bad(whole, "has a NUL in its path");
  Address a;
  a.kind = Address::Kind::kUnix;
  a.path = std::string(rest);
  return a;
}

absl::StatusOr<Address> ParseUnixAbstract(absl::string_view whole, absl::string_view rest) {
  if (rest.empty()) return Bad(whole, "has no socket name");
  if (rest.size() > kMaxUnixPath - 1) return Bad(whole, "has a socket name that is too long");
  Address a;
  a.kind = Address::Kind::kUnixAbstract;
  a.path = std::string(rest);
  return a;
}

}  // namespace

absl::StatusOr<Address> ParseGrpcTarget(absl::string_view target) {
  const absl::string_view whole = target;
  if (target.empty()) return absl::InvalidArgumentError("is empty");
  for (char c : target) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) ||
        absl::ascii_iscntrl(static_cast<unsigned char>(c))) {
      return Bad(whole, "contains whitespace or control characters");
    }
  }
  if (absl::ConsumePrefix(&target, "unix:")) return ParseUnix(whole, target);
  if (absl::ConsumePrefix(&target, "unix-abstract:")) return ParseUnixAbstract(whole, target);

  const bool ipv4 = absl::ConsumePrefix(&target, "ipv4:");
  const bool ipv6 = !ipv4 && absl::ConsumePrefix(&target, "ipv6:");
  if (ipv4 || ipv6) {
    // An empty authority ("ipv4:///a:p") is the URI form of the same list.
    if (absl::ConsumePrefix(&target, "//") && !absl::ConsumePrefix(&target, "/")) {
      return Bad(whole, "names an authority, which this scheme does not take");
    }
    if (target.empty()) return Bad(whole, "lists no addresses");
    Address a;
    a.kind = Address::Kind::kIpList;
    for (absl::string_view item : absl::StrSplit(target, ',')) {
      absl::StatusOr<HostPort> hp =
          ParseHostPort(whole, item, ipv4 ? HostRule::kIpv4Only : HostRule::kIpv6Only,
                        /*for_listen=*/false, /*min_port=*/1);
      if (!hp.ok()) return hp.status();
      a.hosts.push_back(*std::move(hp));
    }
    return a;
  }

  if (absl::ConsumePrefix(&target, "dns:")) {
    if (absl::ConsumePrefix(&target, "//")) {
      // "dns:///host:port", or "dns://dns-server[:port]/host:port".
      const size_t slash = target.find('/');
      if (slash == absl::string_view::npos) {
        return Bad(whole, "has no '/' after the authority (want dns:///host:port)");
      }
      const absl::string_view authority = target.substr(0, slash);
      if (!authority.empty()) {
        absl::string_view server = authority;
        if (!absl::StartsWith(server, "[") && server.find(':') == absl::string_view::npos) {
          if (!IsIpv4(server) && !IsDnsName(server)) {
            return Bad(whole, absl::StrCat("names DNS server \"", authority,
                                           "\", which is not an address"));
          }
        } else {
          absl::StatusOr<HostPort> hp = ParseHostPort(whole, server, HostRule::kAny,
                                                      /*for_listen=*/false, 1);
          if (!hp.ok()) return hp.status();
        }
      }
      target = target.substr(slash + 1);
    }
  } else {
    // Any other "scheme://": host names cannot contain '/'.
    const size_t colon = target.find(':');
    const size_t slash = target.find('/');
    if (slash != absl::string_view::npos) {
      if (colon != absl::string_view::npos && target.substr(colon + 1, 2) == "//") {
        return Bad(whole, absl::StrCat("has scheme \"", target.substr(0, colon),
                                       "\" (want host:port, dns:, unix:, unix-abstract:, "
                                       "ipv4: or ipv6:)"));
      }
      return Bad(whole, "contains '/' (want host:port)");
    }
  }
  absl::StatusOr<HostPort> hp =
      ParseHostPort(whole, target, HostRule::kAny, /*for_listen=*/false, /*min_port=*/1);
  if (!hp.ok()) return hp.status();
  Address a;
  a.kind = Address::Kind::kHostPort;
  a.hosts.push_back(*std::move(hp));
  return a;
}

absl::StatusOr<Address> ParseListenAddress(absl::string_view address) {
  const absl::string_view whole = address;
  if (address.empty()) return absl::InvalidArgumentError("is empty");
  for (char c : address) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) ||
        absl::ascii_iscntrl(static_cast<unsigned char>(c))) {
      return Bad(whole, "contains whitespace or control characters");
    }
  }
  if (absl::ConsumePrefix(&address, "unix:")) return ParseUnix(whole, address);
  if (absl::ConsumePrefix(&address, "unix-abstract:")) return ParseUnixAbstract(whole, address);
  if (address.find('/') != absl::string_view::npos) {
    return Bad(whole, "contains '/' (want host:port, unix:path or unix-abstract:name)");
  }
  absl::StatusOr<HostPort> hp =
      ParseHostPort(whole, address, HostRule::kAny, /*for_listen=*/true, /*min_port=*/0);
  if (!hp.ok()) return hp.status();
  Address a;
  a.kind = Address::Kind::kHostPort;
  a.hosts.push_back(*std::move(hp));
  return a;
}

}  // namespace fanout
