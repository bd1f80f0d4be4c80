#include "server/config.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/address.h"
#include "cache/tiers/redis/redis_address.h"
#include "common/status_macros.h"
#include "common/units.h"
#include "server/admin_server.h"
#include "server/embedded_default.h"

namespace fanout::server {
namespace {

// Reads one YAML mapping, remembering which keys were read so that the rest
// can be reported as unknown. The first error wins.
class Section {
 public:
  Section(YAML::Node node, std::string path, absl::Status* error)
      : node_(std::move(node)), path_(std::move(path)), error_(error) {
    if (node_ && !node_.IsNull() && !node_.IsMap()) {
      Fail(absl::StrCat(path_.empty() ? "the top level" : path_, " must be a mapping"));
    }
  }

  Section Child(const std::string& key) {
    return Section(Take(key), Path(key), error_);
  }

  void String(const std::string& key, std::string* out) {
    Scalar(key, [&](const std::string& text) -> absl::Status {
      *out = text;
      return absl::OkStatus();
    });
  }
  void Bool(const std::string& key, bool* out) {
    Scalar(key, [&](const std::string& text) -> absl::Status {
      if (text == "true") *out = true;
      else if (text == "false") *out = false;
      else return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not true or false"));
      return absl::OkStatus();
    });
  }
  void Int(const std::string& key, int* out, int min, int max) {
    Scalar(key, [&](const std::string& text) -> absl::Status {
      long long v;
      if (!absl::SimpleAtoi(text, &v) || v < min || v > max) {
        return absl::InvalidArgumentError(
            absl::StrCat("\"", text, "\" is not a whole number from ", min, " to ", max));
      }
      *out = static_cast<int>(v);
      return absl::OkStatus();
    });
  }
  void Double(const std::string& key, double* out, double min, double max) {
    Scalar(key, [&](const std::string& text) -> absl::Status {
      double v;
      if (!absl::SimpleAtod(text, &v) || !(v >= min && v <= max)) {
        return absl::InvalidArgumentError(
            absl::StrCat("\"", text, "\" is not a number from ", min, " to ", max));
      }
      *out = v;
      return absl::OkStatus();
    });
  }
  void Duration(const std::string& key, absl::Duration* out, bool allow_zero = false) {
    Scalar(key, [&](const std::string& text) -> absl::Status {
      ASSIGN_OR_RETURN(absl::Duration d, ParseDuration(text));
      if (d == absl::ZeroDuration() && !allow_zero) {
        return absl::InvalidArgumentError("must be more than zero");
      }
      *out = d;
      return absl::OkStatus();
    });
  }
  void Bytes(const std::string& key, uint64_t* out, uint64_t min = 1) {
    Scalar(key, [&](const std::string& text) -> absl::Status {
      ASSIGN_OR_RETURN(uint64_t v, ParseByteSize(text));
      if (v < min) return absl::InvalidArgumentError(absl::StrCat("must be at least ", min));
      *out = v;
      return absl::OkStatus();
    });
  }

  // Reports keys that were present but not read.
  void CheckUnknown() {
    if (!node_ || !node_.IsMap()) return;
    std::vector<std::string> unknown;
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
      if (!read_.count(key)) unknown.push_back(Path(key));
    }
    if (!unknown.empty()) {
      Fail(absl::StrCat("unknown key ", absl::StrJoin(unknown, ", "), " (known here: ",
                        absl::StrJoin(read_, ", "), ")"));
    }
  }

  void Fail(absl::string_view message) {
    if (error_->ok()) *error_ = absl::InvalidArgumentError(std::string(message));
  }
  std::string Path(const std::string& key) const {
    return path_.empty() ? key : absl::StrCat(path_, ".", key);
  }
  bool Has(const std::string& key) const { return node_ && node_.IsMap() && node_[key]; }

  // The keys of this mapping, in file order (for sections keyed by name).
  std::vector<std::string> Keys() const {
    std::vector<std::string> keys;
    if (!node_ || !node_.IsMap()) return keys;
    for (const auto& kv : node_) keys.push_back(kv.first.as<std::string>());
    return keys;
  }
  // Marks `key` read and returns its raw node (for lists).
  YAML::Node Raw(const std::string& key) { return Take(key); }
  absl::Status* error() const { return error_; }

 private:
  YAML::Node Take(const std::string& key) {
    read_.insert(key);
    if (!node_ || !node_.IsMap()) return YAML::Node();
    return node_[key];
  }

  template <typename F>
  void Scalar(const std::string& key, F parse) {
    YAML::Node v = Take(key);
    if (!v || v.IsNull()) return;  // absent or empty: keep the default
    if (!v.IsScalar()) {
      Fail(absl::StrCat(Path(key), ": must be a single value"));
      return;
    }
    absl::Status s = parse(v.Scalar());
    if (!s.ok()) Fail(absl::StrCat(Path(key), ": ", s.message()));
  }

  YAML::Node node_;
  std::string path_;
  absl::Status* error_;
  std::set<std::string> read_;
};

// yaml-cpp keeps every entry of a mapping but looks keys up by the first,
// so a repeated key (a second "server:" block) would be ignored silently.
// Walks every mapping and reports the first key that appears twice.
absl::Status CheckDuplicateKeys(const YAML::Node& node, const std::string& path) {
  if (node.IsMap()) {
    std::map<std::string, int> lines;  // key → first line (1-based)
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) continue;
      const std::string key = kv.first.Scalar();
      const std::string child = path.empty() ? key : absl::StrCat(path, ".", key);
      const int line = kv.first.Mark().line + 1;
      auto [it, inserted] = lines.emplace(key, line);
      if (!inserted) {
        return absl::InvalidArgumentError(
            absl::StrCat("duplicate key ", child, " (lines ", it->second, " and ", line, ")"));
      }
      RETURN_IF_ERROR(CheckDuplicateKeys(kv.second, child));
    }
  } else if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) {
      RETURN_IF_ERROR(CheckDuplicateKeys(node[i], absl::StrCat(path, "[", i, "]")));
    }
  }
  return absl::OkStatus();
}

// A gRPC target at `key`: fails naming the key when it does not parse.
void CheckTarget(Section& s, const std::string& key, const std::string& target) {
  absl::StatusOr<Address> parsed = ParseGrpcTarget(target);
  if (!parsed.ok()) s.Fail(absl::StrCat(key, ": ", parsed.status().message()));
}

void ParseDouble(Section& s, const std::string& key, double* out, double min, double max) {
  s.Double(key, out, min, max);
}

// routes.NAME: {policy, method, timeout, hedge_after, hedge_after_cold,
// hedge_after_floor, attempt_timeout, backends, ejection, adaptive}.
void ParseRoute(Section& routes, const std::string& name, std::vector<router::RouteConfig>* out) {
  Section s = routes.Child(name);
  router::RouteConfig r;
  r.name = name;
  std::string policy;
  s.String("policy", &policy);
  if (!policy.empty()) {
    absl::StatusOr<router::Policy> p = router::ParsePolicy(policy);
    if (p.ok()) r.policy = *p;
    else s.Fail(absl::StrCat(s.Path("policy"), ": ", p.status().message()));
  }
  s.String("method", &r.method);
  s.Duration("timeout", &r.timeout);
  s.Duration("hedge_after", &r.hedge_after, /*allow_zero=*/true);
  s.Duration("hedge_after_cold", &r.hedge_after_cold);
  s.Duration("hedge_after_floor", &r.hedge_after_floor, /*allow_zero=*/true);
  s.Duration("attempt_timeout", &r.attempt_timeout);

  YAML::Node backends = s.Raw("backends");
  if (backends && !backends.IsNull()) {
    if (!backends.IsSequence()) {
      s.Fail(absl::StrCat(s.Path("backends"), ": must be a list"));
    } else {
      for (size_t i = 0; i < backends.size(); ++i) {
        const std::string path = absl::StrCat(s.Path("backends"), "[", i, "]");
        router::BackendConfig b;
        if (backends[i].IsScalar()) {
          b.address = backends[i].Scalar();
          CheckTarget(s, path, b.address);
        } else {
          Section item(backends[i], path, s.error());
          item.String("address", &b.address);
          item.String("name", &b.name);
          item.CheckUnknown();
          if (!b.address.empty()) CheckTarget(item, item.Path("address"), b.address);
        }
        r.backends.push_back(std::move(b));
      }
    }
  }

  Section ejection = s.Child("ejection");
  ejection.Int("consecutive_failures", &r.ejection.consecutive_failures, 0, 1000000);
  ejection.Duration("base_ejection", &r.ejection.base_ejection);
  ejection.Duration("max_ejection", &r.ejection.max_ejection);
  ejection.Int("max_ejection_percent", &r.ejection.max_ejection_percent, 0, 100);
  ejection.CheckUnknown();

  Section adaptive = s.Child("adaptive");
  adaptive.Int("window", &r.adaptive.window, 1, 100000);
  adaptive.Int("min_races", &r.adaptive.min_races, 1, 100000);
  ParseDouble(adaptive, "commit_share", &r.adaptive.commit_share, 0.5, 1.0);
  ParseDouble(adaptive, "explore_share", &r.adaptive.explore_share, 0.0, 1.0);
  ParseDouble(adaptive, "regression_factor", &r.adaptive.regression_factor, 1.0, 1000.0);
  ParseDouble(adaptive, "max_error_rate", &r.adaptive.max_error_rate, 0.0, 1.0);
  adaptive.CheckUnknown();
  s.CheckUnknown();

  if (s.error()->ok()) {
    absl::Status valid = router::ValidateRouteConfig(r);
    if (!valid.ok()) s.Fail(valid.message());
  }
  out->push_back(std::move(r));
}

}  // namespace

absl::StatusOr<Config> ParseConfig(absl::string_view yaml, absl::string_view source) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid YAML: ", e.what()));
  }
  absl::Status duplicates = CheckDuplicateKeys(root, "");
  if (!duplicates.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", duplicates.message()));
  }
  Config c;
  absl::Status error;
  Section top(root, "", &error);

  Section server = top.Child("server");
  server.String("listen", &c.server.listen);
  server.Bool("reflection", &c.server.reflection);
  server.Duration("drain_timeout", &c.server.drain_timeout, /*allow_zero=*/true);
  server.Duration("shutdown_delay", &c.server.shutdown_delay, /*allow_zero=*/true);
  server.Int("threads", &c.server.threads, 0, 256);
  server.CheckUnknown();
  if (c.server.listen.empty()) {
    server.Fail("server.listen: must not be empty");
  } else if (absl::StatusOr<Address> listen = ParseListenAddress(c.server.listen); !listen.ok()) {
    server.Fail(absl::StrCat("server.listen: ", listen.status().message()));
  }

  Section log = top.Child("log");
  std::string level;
  log.String("level", &level);
  if (!level.empty()) {
    absl::StatusOr<LogLevel> parsed = ParseLogLevel(level);
    if (parsed.ok()) c.log_level = *parsed;
    else log.Fail(absl::StrCat("log.level: ", parsed.status().message()));
  }
  std::string format;
  log.String("format", &format);
  if (!format.empty()) {
    absl::StatusOr<LogFormat> parsed = ParseLogFormat(format);
    if (parsed.ok()) c.log_format = *parsed;
    else log.Fail(absl::StrCat("log.format: ", parsed.status().message()));
  }
  log.Int("rate_limit", &c.log_rate_limit, 0, 1000000);
  log.CheckUnknown();

  Section admin = top.Child("admin");
  c.admin.listen_set = admin.Has("listen");
  admin.String("listen", &c.admin.listen);
  admin.CheckUnknown();
  if (!c.admin.listen.empty()) {
    absl::Status valid = ValidateAdminListen(c.admin.listen);
    if (!valid.ok()) admin.Fail(absl::StrCat("admin.listen: ", valid.message()));
  }

  Section limits = top.Child("limits");
  limits.Bytes("max_key_bytes", &c.limits.max_key_bytes);
  limits.Bytes("max_namespace_bytes", &c.limits.max_namespace_bytes);
  limits.Bytes("max_value_bytes", &c.limits.max_value_bytes);
  limits.Int("max_batch_keys", &c.limits.max_batch_keys, 1, 100000);
  limits.Bytes("max_batch_bytes", &c.limits.max_batch_bytes);
  limits.Int("max_in_flight", &c.limits.max_in_flight, 1, 10000000);
  limits.Duration("request_timeout", &c.limits.request_timeout);
  limits.CheckUnknown();
  if (c.limits.max_value_bytes > (1ull << 30)) {
    limits.Fail("limits.max_value_bytes: must be at most 1GiB");
  }
  if (c.limits.max_batch_bytes > (1ull << 30)) {
    limits.Fail("limits.max_batch_bytes: must be at most 1GiB");
  }

  Section cache = top.Child("cache");
  Section l1 = cache.Child("l1");
  l1.Bytes("capacity", &c.cache.l1_capacity, 4096);
  l1.Double("max_entry_fraction", &c.cache.l1_max_entry_fraction, 0.0001, 1.0);
  l1.CheckUnknown();
  if (c.cache.l1_capacity > (1ull << 40)) {
    l1.Fail("cache.l1.capacity: must be at most 1024GiB");
  }
  const bool has_l3 = cache.Has("l3");
  Section l3 = cache.Child("l3");
  l3.String("path", &c.cache.l3_path);
  l3.Bytes("max_bytes", &c.cache.l3_max_bytes, 16ull << 20);
  l3.Bool("sync", &c.cache.l3_sync);
  l3.Bool("warm_l1", &c.cache.l3_warm_l1);
  l3.CheckUnknown();
  if (has_l3 && c.cache.l3_path.empty()) l3.Fail("cache.l3.path: required when cache.l3 is set");
  cache.Duration("ttl", &c.cache.ttl);
  cache.Double("refresh_ahead", &c.cache.refresh_ahead, 0.01, 1.0);
  cache.Double("xfetch_beta", &c.cache.xfetch_beta, 0.0, 100.0);
  cache.Duration("max_stale", &c.cache.max_stale, /*allow_zero=*/true);
  cache.Duration("stale_ttl", &c.cache.stale_ttl, /*allow_zero=*/true);
  cache.Duration("negative_ttl", &c.cache.negative_ttl, /*allow_zero=*/true);
  cache.Duration("retry_backoff", &c.cache.retry_backoff, /*allow_zero=*/true);
  cache.Duration("max_retry_backoff", &c.cache.max_retry_backoff);
  cache.Int("max_background_refreshes", &c.cache.max_background_refreshes, 1, 1000000);
  cache.Duration("deadline_margin", &c.cache.deadline_margin);
  Section l2 = cache.Child("l2");
  l2.String("redis", &c.cache.l2.redis);
  l2.String("password", &c.cache.l2.password);
  l2.String("password_file", &c.cache.l2.password_file);
  l2.String("password_env", &c.cache.l2.password_env);
  l2.Int("db", &c.cache.l2.db, 0, 65535);
  l2.Duration("timeout", &c.cache.l2.timeout);
  l2.Int("connections", &c.cache.l2.connections, 1, 64);
  l2.String("key_prefix", &c.cache.l2.key_prefix);
  l2.Bool("lease", &c.cache.l2.lease);
  l2.Bytes("inline_answer_bytes", &c.cache.l2.inline_answer_bytes, /*min=*/0);
  l2.CheckUnknown();
  if (!c.cache.l2.redis.empty()) {
    absl::StatusOr<cache::RedisAddress> a = cache::ParseRedisAddress(c.cache.l2.redis);
    if (!a.ok()) l2.Fail(absl::StrCat("cache.l2.redis: ", a.status().message()));
  }
  const int password_sources = (c.cache.l2.password.empty() ? 0 : 1) +
                               (c.cache.l2.password_file.empty() ? 0 : 1) +
                               (c.cache.l2.password_env.empty() ? 0 : 1);
  if (password_sources > 1) {
    l2.Fail("cache.l2: set at most one of password, password_file, password_env");
  }
  if (c.cache.l2.timeout > absl::Seconds(10)) l2.Fail("cache.l2.timeout: must be at most 10s");
  cache.CheckUnknown();

  Section origin = top.Child("origin");
  std::string type;
  origin.String("type", &type);
  if (type.empty() || type == "file") {
    c.origin.type = OriginSection::Type::kFile;
  } else if (type == "grpc") {
    c.origin.type = OriginSection::Type::kGrpc;
  } else {
    origin.Fail(absl::StrCat("origin.type: \"", type, "\" is not one of file, grpc"));
  }
  origin.Duration("timeout", &c.origin.timeout);
  origin.Bool("push", &c.origin.push);
  Section file = origin.Child("file");
  file.String("root", &c.origin.file_root);
  std::string symlinks;
  file.String("symlinks", &symlinks);
  if (!symlinks.empty()) {
    absl::StatusOr<cache::FileSymlinks> parsed = cache::ParseFileSymlinks(symlinks);
    if (parsed.ok()) {
      c.origin.file_symlinks = *parsed;
    } else {
      file.Fail(parsed.status().message());
    }
  }
  file.Int("io_threads", &c.origin.file_io_threads, 1, 256);
  file.Int("max_queued_reads", &c.origin.file_max_queued_reads, 1, 1000000);
  file.CheckUnknown();
  Section grpc = origin.Child("grpc");
  YAML::Node targets = grpc.Raw("target");
  if (targets && targets.IsSequence()) {
    if (targets.size() == 0) origin.Fail("origin.grpc.target: the list of targets is empty");
    for (size_t i = 0; i < targets.size(); ++i) {
      const std::string key = absl::StrCat("origin.grpc.target[", i, "]");
      if (!targets[i].IsScalar() || targets[i].Scalar().empty()) {
        origin.Fail(absl::StrCat(key, ": must be an address"));
        continue;
      }
      CheckTarget(origin, key, targets[i].Scalar());
      c.origin.grpc_targets.push_back(targets[i].Scalar());
    }
    if (c.origin.grpc_targets.size() == 1) {
      c.origin.grpc_target = c.origin.grpc_targets[0];
      c.origin.grpc_targets.clear();
    }
  } else if (targets && targets.IsScalar()) {
    c.origin.grpc_target = targets.Scalar();
  } else if (targets && !targets.IsNull()) {
    origin.Fail("origin.grpc.target: must be an address or a list of addresses");
  }
  std::string replica_policy;
  grpc.String("policy", &replica_policy);
  if (!replica_policy.empty()) {
    absl::StatusOr<cache::ReplicaPolicy> p = cache::ParseReplicaPolicy(replica_policy);
    if (p.ok()) c.origin.grpc_policy = *p;
    else grpc.Fail(absl::StrCat("origin.grpc.policy: ", p.status().message()));
  }
  grpc.Duration("hedge_after", &c.origin.grpc_hedge_after);
  grpc.CheckUnknown();
  origin.CheckUnknown();
  if (c.origin.type == OriginSection::Type::kGrpc && c.origin.grpc_target.empty() &&
      c.origin.grpc_targets.empty()) {
    origin.Fail("origin.grpc.target: required when origin.type is grpc");
  } else if (!c.origin.grpc_target.empty()) {
    CheckTarget(origin, "origin.grpc.target", c.origin.grpc_target);
  }
  if (c.origin.type == OriginSection::Type::kFile && c.origin.file_root.empty()) {
    origin.Fail("origin.file.root: required when origin.type is file");
  }

  Section inval = top.Child("invalidation");
  inval.Duration("max_local_ttl", &c.invalidation.max_local_ttl, /*allow_zero=*/true);
  inval.Duration("heartbeat", &c.invalidation.heartbeat);
  inval.Duration("dead_after", &c.invalidation.dead_after);
  inval.Int("stream_max_len", &c.invalidation.stream_max_len, 100, 100000000);
  inval.String("pod", &c.invalidation.pod);
  inval.CheckUnknown();
  if (c.invalidation.heartbeat > absl::Minutes(1)) {
    inval.Fail("invalidation.heartbeat: must be at most 1m");
  } else if (c.invalidation.dead_after <= c.invalidation.heartbeat) {
    inval.Fail(absl::StrCat("invalidation.dead_after: must be longer than invalidation.heartbeat (",
                            absl::FormatDuration(c.invalidation.heartbeat), ")"));
  }
  if (c.invalidation.pod.size() > 128) inval.Fail("invalidation.pod: at most 128 bytes");
  for (char ch : c.invalidation.pod) {
    if (ch <= ' ' || ch == 0x7f) {
      inval.Fail("invalidation.pod: no spaces or control characters");
      break;
    }
  }

  Section watch = top.Child("watch");
  watch.Int("max_streams", &c.watch.max_streams, 0, 1000000);
  watch.Duration("heartbeat", &c.watch.heartbeat);
  watch.Bytes("buffer_bytes", &c.watch.buffer_bytes, 4096);
  watch.CheckUnknown();
  if (c.watch.buffer_bytes > (1ull << 30)) watch.Fail("watch.buffer_bytes: must be at most 1GiB");

  Section routes = top.Child("routes");
  for (const std::string& name : routes.Keys()) ParseRoute(routes, name, &c.routes);

  top.CheckUnknown();
  if (!error.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", error.message()));
  }
  c.document = std::string(yaml);
  c.document_source = std::string(source);
  return c;
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  return ParseConfig(buf.str(), path);
}

absl::StatusOr<std::string> ResolveL2Password(const L2Section& l2) {
  if (!l2.password_file.empty()) {
    std::ifstream in(l2.password_file);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("cache.l2.password_file: cannot read ", l2.password_file));
    }
    std::stringstream buf;
    buf << in.rdbuf();
    std::string password = buf.str();
    while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) {
      password.pop_back();
    }
    return password;
  }
  if (!l2.password_env.empty()) {
    const char* v = std::getenv(l2.password_env.c_str());
    if (v == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("cache.l2.password_env: environment variable ",
                                                     l2.password_env, " is not set"));
    }
    return std::string(v);
  }
  return l2.password;
}

namespace {

std::string Text(absl::Duration d) { return absl::FormatDuration(d); }
std::string Text(bool b) { return b ? "true" : "false"; }
template <typename T>
std::string Text(const T& v) {
  return absl::StrCat(v);
}

std::string RouteText(const router::RouteConfig& r) {
  std::string out = absl::StrCat(
      "policy=", router::PolicyName(r.policy), " method=", r.method, " timeout=", Text(r.timeout),
      " hedge_after=", Text(r.hedge_after), " hedge_after_cold=", Text(r.hedge_after_cold),
      " hedge_after_floor=", Text(r.hedge_after_floor),
      " attempt_timeout=", Text(r.attempt_timeout), " ejection=", r.ejection.consecutive_failures,
      "/", Text(r.ejection.base_ejection), "/", Text(r.ejection.max_ejection), "/",
      r.ejection.max_ejection_percent, " adaptive=", r.adaptive.window, "/", r.adaptive.min_races,
      "/", r.adaptive.commit_share, "/", r.adaptive.explore_share, "/",
      r.adaptive.regression_factor, "/", r.adaptive.max_error_rate, " backends=");
  for (const router::BackendConfig& b : r.backends) {
    absl::StrAppend(&out, "[", b.name, "@", b.address, "]");
  }
  return out;
}

}  // namespace

std::map<std::string, std::string> ConfigSettings(const Config& c) {
  std::map<std::string, std::string> m;
  m["server.listen"] = c.server.listen;
  m["server.reflection"] = Text(c.server.reflection);
  m["server.shutdown_delay"] = Text(c.server.shutdown_delay);
  m["server.drain_timeout"] = Text(c.server.drain_timeout);
  m["server.threads"] = Text(c.server.threads);
  m["log.level"] = Text(static_cast<int>(c.log_level));
  m["log.format"] = Text(static_cast<int>(c.log_format));
  m["log.rate_limit"] = Text(c.log_rate_limit);
  m["admin.listen"] = c.admin.listen;
  m["limits.max_key_bytes"] = Text(c.limits.max_key_bytes);
  m["limits.max_namespace_bytes"] = Text(c.limits.max_namespace_bytes);
  m["limits.max_value_bytes"] = Text(c.limits.max_value_bytes);
  m["limits.max_batch_keys"] = Text(c.limits.max_batch_keys);
  m["limits.max_batch_bytes"] = Text(c.limits.max_batch_bytes);
  m["limits.max_in_flight"] = Text(c.limits.max_in_flight);
  m["limits.request_timeout"] = Text(c.limits.request_timeout);
  m["cache.l1.capacity"] = Text(c.cache.l1_capacity);
  m["cache.l1.max_entry_fraction"] = Text(c.cache.l1_max_entry_fraction);
  m["cache.ttl"] = Text(c.cache.ttl);
  m["cache.refresh_ahead"] = Text(c.cache.refresh_ahead);
  m["cache.max_stale"] = Text(c.cache.max_stale);
  m["cache.stale_ttl"] = Text(c.cache.stale_ttl);
  m["cache.negative_ttl"] = Text(c.cache.negative_ttl);
  m["cache.retry_backoff"] = Text(c.cache.retry_backoff);
  m["cache.max_retry_backoff"] = Text(c.cache.max_retry_backoff);
  m["cache.max_background_refreshes"] = Text(c.cache.max_background_refreshes);
  m["cache.deadline_margin"] = Text(c.cache.deadline_margin);
  m["cache.xfetch_beta"] = Text(c.cache.xfetch_beta);
  m["cache.l2.redis"] = c.cache.l2.redis;
  m["cache.l2.password"] = c.cache.l2.password;
  m["cache.l2.password_file"] = c.cache.l2.password_file;
  m["cache.l2.password_env"] = c.cache.l2.password_env;
  m["cache.l2.db"] = Text(c.cache.l2.db);
  m["cache.l2.timeout"] = Text(c.cache.l2.timeout);
  m["cache.l2.connections"] = Text(c.cache.l2.connections);
  m["cache.l2.key_prefix"] = c.cache.l2.key_prefix;
  m["cache.l2.lease"] = Text(c.cache.l2.lease);
  m["cache.l2.inline_answer_bytes"] = Text(c.cache.l2.inline_answer_bytes);
  m["cache.l3.path"] = c.cache.l3_path;
  m["cache.l3.max_bytes"] = Text(c.cache.l3_max_bytes);
  m["cache.l3.sync"] = Text(c.cache.l3_sync);
  m["cache.l3.warm_l1"] = Text(c.cache.l3_warm_l1);
  m["origin.type"] = Text(static_cast<int>(c.origin.type));
  m["origin.timeout"] = Text(c.origin.timeout);
  m["origin.push"] = Text(c.origin.push);
  m["origin.file.root"] = c.origin.file_root;
  m["origin.file.symlinks"] = Text(static_cast<int>(c.origin.file_symlinks));
  m["origin.file.io_threads"] = Text(c.origin.file_io_threads);
  m["origin.file.max_queued_reads"] = Text(c.origin.file_max_queued_reads);
  m["origin.grpc.target"] = c.origin.grpc_targets.empty()
                                ? c.origin.grpc_target
                                : absl::StrJoin(c.origin.grpc_targets, ",");
  m["origin.grpc.policy"] = std::string(cache::ReplicaPolicyName(c.origin.grpc_policy));
  m["origin.grpc.hedge_after"] = Text(c.origin.grpc_hedge_after);
  m["invalidation.max_local_ttl"] = Text(c.invalidation.max_local_ttl);
  m["invalidation.heartbeat"] = Text(c.invalidation.heartbeat);
  m["invalidation.dead_after"] = Text(c.invalidation.dead_after);
  m["invalidation.stream_max_len"] = Text(c.invalidation.stream_max_len);
  m["invalidation.pod"] = c.invalidation.pod;
  m["watch.max_streams"] = Text(c.watch.max_streams);
  m["watch.heartbeat"] = Text(c.watch.heartbeat);
  m["watch.buffer_bytes"] = Text(c.watch.buffer_bytes);
  for (const router::RouteConfig& r : c.routes) m["routes." + r.name] = RouteText(r);
  return m;
}

bool IsReloadableKey(absl::string_view key) {
  static const std::set<std::string, std::less<>>* const kReloadable =
      new std::set<std::string, std::less<>>{"server.shutdown_delay",
                                             "server.drain_timeout",
                                             "log.level",
                                             "log.format",
                                             "log.rate_limit",
                                             "limits.max_key_bytes",
                                             "limits.max_namespace_bytes",
                                             "limits.max_batch_keys",
                                             "limits.max_batch_bytes",
                                             "limits.max_in_flight",
                                             "limits.request_timeout",
                                             "cache.ttl",
                                             "cache.refresh_ahead",
                                             "cache.max_stale",
                                             "cache.stale_ttl",
                                             "cache.negative_ttl",
                                             "cache.retry_backoff",
                                             "cache.max_retry_backoff",
                                             "cache.max_background_refreshes"};
  return absl::StartsWith(key, "routes.") || kReloadable->contains(key);
}

absl::string_view EmbeddedDefaultYaml() { return kEmbeddedDefaultYaml; }

Config DefaultConfig() {
  absl::StatusOr<Config> c = ParseConfig(kEmbeddedDefaultYaml, "<embedded default>");
  // The embedded default is checked by a unit test; a broken one is a build bug.
  if (!c.ok()) return Config{};
  return *c;
}

}  // namespace fanout::server
