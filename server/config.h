// fanoutd's configuration: one YAML file in sections, each key with a
// default. Unknown keys and bad values are errors naming the key.
#ifndef FANOUT_SERVER_CONFIG_H_
#define FANOUT_SERVER_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cache/origins/file_origin.h"
#include "cache/origins/grpc_origin.h"
#include "common/log.h"
#include "router/route_config.h"

namespace fanout::server {

struct ServerSection {
  std::string listen = "127.0.0.1:7070";  // host:port or unix:///path
  bool reflection = true;
  absl::Duration drain_timeout = absl::Seconds(10);
  // After SIGTERM: how long to keep serving while health says NOT_SERVING,
  // so that load balancers stop sending before the drain starts.
  absl::Duration shutdown_delay = absl::Seconds(5);
  int threads = 0;  // executor threads; 0 = from the CPUs available (cgroup quota)
};

struct LimitsSection {
  uint64_t max_key_bytes = 1024;
  uint64_t max_namespace_bytes = 256;
  uint64_t max_value_bytes = 1 << 20;
  int max_batch_keys = 1000;
  // Most value bytes in one BatchGet response (the default gRPC client
  // accepts 4 MiB messages).
  uint64_t max_batch_bytes = 4ull << 20;
  int max_in_flight = 10000;
  // Deadline of a call that brings none, and the ceiling of those that do.
  absl::Duration request_timeout = absl::Seconds(30);
};

// cache.l2: the Redis tier every pod shares. No `redis` address = no L2.
struct L2Section {
  std::string redis;  // host:port or unix:///path
  // AUTH password: at most one of the three (the file's trailing newline is
  // dropped; the env var is read at start-up).
  std::string password;
  std::string password_file;
  std::string password_env;
  int db = 0;
  absl::Duration timeout = absl::Milliseconds(50);  // per command
  int connections = 2;
  std::string key_prefix = "fanout:";
  // Cross-pod single fill: a pod takes a lease in Redis before it asks the
  // origin; the others wait for its value.
  bool lease = true;
  // Redis answers carrying up to this many value bytes continue on the
  // Redis I/O thread; larger ones (and batches) on the executor.
  uint64_t inline_answer_bytes = 16 << 10;
};

struct CacheSection {
  uint64_t l1_capacity = 256ull << 20;
  double l1_max_entry_fraction = 0.01;
  absl::Duration ttl = absl::Seconds(60);
  double refresh_ahead = 0.8;
  double xfetch_beta = 1.0;  // 0 = off: refresh_ahead applies
  absl::Duration max_stale = absl::Hours(1);
  absl::Duration stale_ttl = absl::Hours(24);
  absl::Duration negative_ttl = absl::Seconds(5);
  absl::Duration retry_backoff = absl::Seconds(1);
  absl::Duration max_retry_backoff = absl::Seconds(30);
  int max_background_refreshes = 64;
  // A read waiting for the origin is answered this long before its deadline.
  absl::Duration deadline_margin = absl::Milliseconds(20);
  // The survival tier (L3); an empty path means no L3.
  std::string l3_path;
  uint64_t l3_max_bytes = 1ull << 30;
  bool l3_sync = false;
  bool l3_warm_l1 = false;
  L2Section l2;
};

struct OriginSection {
  enum class Type { kFile, kGrpc };
  Type type = Type::kFile;
  absl::Duration timeout = absl::Seconds(2);
  // Apply the changes the origin reports by itself (the file origin's
  // inotify watch; a gRPC origin's Origin.Watch stream) as invalidations.
  bool push = true;
  std::string file_root = "deploy/examples/config.d";
  cache::FileSymlinks file_symlinks = cache::FileSymlinks::kWithinRoot;
  int file_io_threads = 4;           // threads of the file origin's blocking-read pool
  int file_max_queued_reads = 1024;  // reads waiting for those threads; past it, refused
  std::string grpc_target;
  // origin.grpc.target given as a list of two or more replicas (then
  // grpc_target is empty), asked under grpc_policy.
  std::vector<std::string> grpc_targets;
  cache::ReplicaPolicy grpc_policy = cache::ReplicaPolicy::kFallback;
  absl::Duration grpc_hedge_after = absl::Milliseconds(50);
};

// invalidation: cross-pod invalidation over the shared tier (on whenever
// cache.l2 is set).
struct InvalidationSection {
  // While the link to the bus is down, how long a cached value is still
  // answered from this pod's own tiers.
  absl::Duration max_local_ttl = absl::Seconds(5);
  absl::Duration heartbeat = absl::Seconds(1);   // the bus read returns at least this often
  absl::Duration dead_after = absl::Seconds(3);  // no answer for this long: link down
  int stream_max_len = 100000;                   // entries the stream keeps (about)
  std::string pod;                               // names this pod; empty = the host name
};

// watch: the Watch RPC.
struct WatchSection {
  int max_streams = 4096;                       // open streams per pod
  absl::Duration heartbeat = absl::Seconds(5);  // HEARTBEAT events this often
  uint64_t buffer_bytes = 1 << 20;              // unsent events per stream; past it, cut off
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
  InvalidationSection invalidation;
  WatchSection watch;
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

// The L2 password from cache.l2.password, password_file or password_env
// (empty when none is set). InvalidArgument naming the key when the file
// cannot be read or the variable is not set.
absl::StatusOr<std::string> ResolveL2Password(const L2Section& l2);

// Every key of `config` with its effective value as text ("cache.ttl" →
// "1m"), defaults included; each route is one key, "routes.NAME", whose
// value holds all of its settings. For telling which keys a reload changes:
// secrets are included, so compare these, never print them.
std::map<std::string, std::string> ConfigSettings(const Config& config);

// Whether a change of `key` (a key of ConfigSettings) takes effect on a
// reload: routes, limits (but max_value_bytes), the ttl and freshness
// settings of cache.*, log.*, server.drain_timeout and server.shutdown_delay.
// The others (listen addresses, threads, L1, the L2 and L3 tiers, the
// origin) take effect at the next start.
bool IsReloadableKey(absl::string_view key);

// The embedded default (deploy/config/local.yaml, compiled in).
Config DefaultConfig();
absl::string_view EmbeddedDefaultYaml();

}  // namespace fanout::server

#endif  // FANOUT_SERVER_CONFIG_H_
