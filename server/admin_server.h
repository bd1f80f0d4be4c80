// fanoutd's admin endpoint: plain HTTP for operators and kubelet.
//
//   GET /metrics        Prometheus text format (version 0.0.4)
//   GET /healthz        200 while the process runs (liveness)
//   GET /readyz         200 while serving, else 503 (readiness)
//   GET /debug/config   the configuration document, secrets redacted
//
// HEAD is answered like GET without a body; other methods get 405, other
// paths 404. The HTTP server is civetweb (Debian's libcivetweb, the server
// prometheus-cpp's pull exposer is built on); the exposer itself cannot
// serve paths other than metrics, so this class drives civetweb directly
// and renders metrics with prometheus-cpp's TextSerializer.
#ifndef FANOUT_SERVER_ADMIN_SERVER_H_
#define FANOUT_SERVER_ADMIN_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

class CivetServer;

namespace prometheus {
class Collectable;
}  // namespace prometheus

namespace fanout::server {

struct AdminServerOptions {
  // IPV4:PORT or localhost:PORT; port 0 takes any free port. Debian's
  // civetweb is built without IPv6.
  std::string listen = "127.0.0.1:7071";
  // HTTP worker threads; each serves one connection at a time.
  int threads = 16;
  // A connection that has not sent a whole request by then is closed.
  // Workers serve one connection at a time, so N idle connections delay a
  // probe by up to N / threads * request_timeout (32 idle connections: 1 s
  // with these defaults): kubelet and Prometheus send their request at
  // once.
  absl::Duration request_timeout = absl::Milliseconds(500);
};

// What the endpoint reports. Called on HTTP worker threads, concurrently:
// each callable must be thread-safe and quick.
struct AdminSources {
  std::function<bool()> ready;  // /readyz; unset = always ready
  std::string config_yaml;      // /debug/config body, already redacted (see SetConfigYaml)
  // /metrics: every family of every collectable, in order. Not owned; each
  // must outlive the AdminServer.
  std::vector<const prometheus::Collectable*> collectables;
};

class AdminServer {
 public:
  // Starts listening and serving on threads of its own. InvalidArgument
  // naming admin.listen when the address is malformed or cannot be bound
  // (in use, not an address of this host).
  static absl::StatusOr<std::unique_ptr<AdminServer>> Start(const AdminServerOptions& options,
                                                            AdminSources sources);
  // Stops listening and waits for requests being served.
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // The bound port (the real one when the options said 0).
  int port() const { return port_; }
  // host:port of the bound port.
  const std::string& address() const { return address_; }

  // Replaces the /debug/config body (after a reload). Thread-safe.
  void SetConfigYaml(std::string yaml);

 private:
  class Handler;
  explicit AdminServer(AdminSources sources);

  const AdminSources sources_;
  absl::Mutex config_mu_;
  std::string config_yaml_ ABSL_GUARDED_BY(config_mu_);
  int port_ = 0;
  std::string address_;
  std::string wake_host_;  // an IPv4 address the listener accepts on
  std::vector<std::unique_ptr<Handler>> handlers_;
  std::unique_ptr<CivetServer> server_;
};

// OK for IPV4:PORT and localhost:PORT with PORT 0..65535; InvalidArgument
// saying what is wrong (the caller names the key).
absl::Status ValidateAdminListen(absl::string_view listen);

// Re-emits a YAML document with the value of every key whose name contains
// "password", "secret" or "token" (any case, at any depth) replaced by
// "<redacted>", and passwords in URLs (scheme://user:PASSWORD@host) masked.
// Comments are dropped. InvalidArgument when `yaml` does not parse.
absl::StatusOr<std::string> RedactConfigYaml(absl::string_view yaml);

}  // namespace fanout::server

#endif  // FANOUT_SERVER_ADMIN_SERVER_H_
