// fanoutd's configuration: one YAML file in sections, each key with a
// default. Unknown keys and bad values are errors naming the key.
#ifndef FANOUT_SERVER_CONFIG_H_
#define FANOUT_SERVER_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "router/route_config.h"

namespace fanout::server {

struct ServerSection {
  std::string listen = "127.0.0.1:7070";  // host:port or unix:///path
  bool reflection = true;
  absl::Duration drain_timeout = absl::Seconds(10);
  int threads = 0;  // executor threads; 0 = one per core
};

struct LimitsSection {
  uint64_t max_key_bytes = 1024;
  uint64_t max_namespace_bytes = 256;
  uint64_t max_value_bytes = 1 << 20;
  int max_batch_keys = 1000;
  int max_in_flight = 10000;
  // Deadline of a call that brings none, and the ceiling of those that do.
  absl::Duration request_timeout = absl::Seconds(30);
};

struct CacheSection {
  uint64_t l1_capacity = 256ull << 20;
  double l1_max_entry_fraction = 0.01;
  absl::Duration ttl = absl::Seconds(60);
  double refresh_ahead = 0.8;
  absl::Duration max_stale = absl::Hours(1);
  absl::Duration stale_ttl = absl::Hours(24);
};

struct OriginSection {
  enum class Type { kFile, kGrpc };
  Type type = Type::kFile;
  absl::Duration timeout = absl::Seconds(2);
  std::string file_root = "deploy/examples/config.d";
  std::string grpc_target;
};

struct AdminSection {
  std::string listen = "127.0.0.1:7071";  // IPV4:PORT or localhost:PORT; empty = off
  // Whether the file set admin.listen: an address it names that cannot be
  // bound stops start-up; the default one only warns.
  bool listen_set = false;
};

struct Config {
  ServerSection server;
  LogLevel log_level = LogLevel::kInfo;
  LogFormat log_format = LogFormat::kText;
  int log_rate_limit = 10;  // warning and error lines a second per call site; 0 = no limit
  AdminSection admin;
  LimitsSection limits;
  CacheSection cache;
  OriginSection origin;
  std::vector<router::RouteConfig> routes;  // in file order
  // The YAML text this was parsed from, and its name (for /debug/config).
  std::string document;
  std::string document_source;
};

// Parses YAML text; `source` names it in errors ("config.yaml", "<embedded>").
// InvalidArgument naming the key on unknown keys, bad values, or YAML errors.
absl::StatusOr<Config> ParseConfig(absl::string_view yaml, absl::string_view source);

// Reads and parses a file. NotFound if it cannot be read.
absl::StatusOr<Config> LoadConfigFile(const std::string& path);

// The embedded default (deploy/config/local.yaml, compiled in).
Config DefaultConfig();
absl::string_view EmbeddedDefaultYaml();

}  // namespace fanout::server

#endif  // FANOUT_SERVER_CONFIG_H_
