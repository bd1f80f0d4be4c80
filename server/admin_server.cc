#include "server/admin_server.h"

#include <CivetServer.h>
#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <chrono>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"

namespace fanout::server {
namespace {

// civetweb reports start-up failures (bind errors) through its log callback
// on the thread that starts it; they are collected here for the error.
thread_local std::vector<std::string>* t_start_errors = nullptr;

int CivetLog(const mg_connection*, const char* message) {
  if (t_start_errors != nullptr) {
    t_start_errors->emplace_back(message);
  } else {
    FANOUT_LOG(WARNING) << "admin endpoint: " << message;
  }
  return 1;  // handled: civetweb writes nothing itself
}

void SendText(mg_connection* conn, int status, const char* content_type, absl::string_view body,
              bool head) {
  if (status == 200) {
    mg_send_http_ok(conn, content_type, static_cast<long long>(body.size()));
  } else {
    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
              "Cache-Control: no-cache, no-store\r\nConnection: close\r\n\r\n",
              status, mg_get_response_code_text(conn, status), content_type, body.size());
  }
  if (!head) mg_write(conn, body.data(), body.size());
}

bool KeyIsSecret(absl::string_view key) {
  const std::string lower = absl::AsciiStrToLower(key);
  return absl::StrContains(lower, "password") || absl::StrContains(lower, "secret") ||
         absl::StrContains(lower, "token");
}

// scheme://user:password@host... -> scheme://user:<redacted>@host...
std::string MaskUrlPassword(const std::string& value) {
  const size_t scheme = value.find("://");
  if (scheme == std::string::npos) return value;
  const size_t auth_start = scheme + 3;
  const size_t auth_end = value.find_first_of("/?#", auth_start);
  const size_t at = value.rfind('@', auth_end == std::string::npos ? value.size() : auth_end);
  if (at == std::string::npos || at < auth_start) return value;
  const size_t colon = value.find(':', auth_start);
  if (colon == std::string::npos || colon > at) return value;
  return absl::StrCat(value.substr(0, colon + 1), "<redacted>", value.substr(at));
}

YAML::Node Redact(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      YAML::Node out(YAML::NodeType::Map);
      for (const auto& kv : node) {
        const bool secret = kv.first.IsScalar() && KeyIsSecret(kv.first.Scalar());
        out[kv.first] = secret ? YAML::Node("<redacted>") : Redact(kv.second);
      }
      return out;
    }
    case YAML::NodeType::Sequence: {
      YAML::Node out(YAML::NodeType::Sequence);
      for (const auto& item : node) out.push_back(Redact(item));
      return out;
    }
    case YAML::NodeType::Scalar:
      return YAML::Node(MaskUrlPassword(node.Scalar()));
    default:
      return YAML::Node(node.Type());
  }
}

}  // namespace

class AdminServer::Handler final : public CivetHandler {
 public:
  using Serve = std::function<void(mg_connection*, bool head)>;
  explicit Handler(Serve serve) : serve_(std::move(serve)) {}

  bool handleGet(CivetServer*, mg_connection* conn) override {
    serve_(conn, /*head=*/false);
    return true;
  }
  bool handleHead(CivetServer*, mg_connection* conn) override {
    serve_(conn, /*head=*/true);
    return true;
  }
  bool handlePost(CivetServer*, mg_connection* conn) override { return NotAllowed(conn); }
  bool handlePut(CivetServer*, mg_connection* conn) override { return NotAllowed(conn); }
  bool handleDelete(CivetServer*, mg_connection* conn) override { return NotAllowed(conn); }
  bool handleOptions(CivetServer*, mg_connection* conn) override { return NotAllowed(conn); }
  bool handlePatch(CivetServer*, mg_connection* conn) override { return NotAllowed(conn); }

 private:
  static bool NotAllowed(mg_connection* conn) {
    SendText(conn, 405, "text/plain; charset=utf-8", "method not allowed: use GET\n", false);
    return true;
  }
  Serve serve_;
};

absl::Status ValidateAdminListen(absl::string_view listen) {
  const size_t colon = listen.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("\"", listen, "\" is not IPV4:PORT"));
  }
  const std::string host(listen.substr(0, colon));
  const absl::string_view port_text = listen.substr(colon + 1);
  in_addr addr;
  if (host != "localhost" && ::inet_pton(AF_INET, host.c_str(), &addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", listen, "\" is not IPV4:PORT (IPv4 addresses and localhost only)"));
  }
  int port;
  if (port_text.empty() || port_text.size() > 5 ||
      !std::all_of(port_text.begin(), port_text.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(port_text, &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", listen, "\": the port must be a number from 0 to 65535"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RedactConfigYaml(absl::string_view yaml) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("not valid YAML: ", e.what()));
  }
  YAML::Emitter out;
  out << Redact(root);
  if (!out.good()) return absl::InvalidArgumentError(out.GetLastError());
  return absl::StrCat(out.c_str(), "\n");
}

AdminServer::AdminServer(AdminSources sources)
    : sources_(std::move(sources)), config_yaml_(sources_.config_yaml) {}

void AdminServer::SetConfigYaml(std::string yaml) {
  absl::MutexLock l(&config_mu_);
  config_yaml_ = std::move(yaml);
}

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Start(const AdminServerOptions& options,
                                                                AdminSources sources) {
  if (absl::Status valid = ValidateAdminListen(options.listen); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("admin.listen: ", valid.message()));
  }
  std::unique_ptr<AdminServer> s(new AdminServer(std::move(sources)));
  const std::vector<std::string> civet_options = {
      "listening_ports",    options.listen,
      "num_threads",        absl::StrCat(std::max(1, options.threads)),
      "request_timeout_ms", absl::StrCat(absl::ToInt64Milliseconds(options.request_timeout)),
      "enable_keep_alive",  "no",
  };
  CivetCallbacks callbacks;
  callbacks.log_message = CivetLog;
  std::vector<std::string> errors;
  t_start_errors = &errors;
  try {
    s->server_ = std::make_unique<CivetServer>(civet_options, &callbacks);
  } catch (const CivetException&) {
    t_start_errors = nullptr;
    return absl::InvalidArgumentError(absl::StrCat("admin.listen: cannot listen on \"",
                                                   options.listen, "\"", errors.empty() ? "" : ": ",
                                                   absl::StrJoin(errors, "; ")));
  }
  t_start_errors = nullptr;
  const std::vector<int> ports = s->server_->getListeningPorts();
  s->port_ = ports.empty() ? 0 : ports[0];
  const std::string host = options.listen.substr(0, options.listen.rfind(':'));
  s->address_ = absl::StrCat(host, ":", s->port_);
  s->wake_host_ = (host == "localhost" || host == "0.0.0.0") ? "127.0.0.1" : host;

  AdminServer* self = s.get();
  auto add = [self](const char* uri, Handler::Serve serve) {
    self->handlers_.push_back(std::make_unique<Handler>(std::move(serve)));
    // "$": this path exactly, not the paths below it.
    self->server_->addHandler(absl::StrCat(uri, "$"), self->handlers_.back().get());
  };
  add("/metrics", [self](mg_connection* conn, bool head) {
    std::vector<prometheus::MetricFamily> families;
    for (const prometheus::Collectable* c : self->sources_.collectables) {
      std::vector<prometheus::MetricFamily> more = c->Collect();
      families.insert(families.end(), std::make_move_iterator(more.begin()),
                      std::make_move_iterator(more.end()));
    }
    const std::string body = prometheus::TextSerializer().Serialize(families);
    SendText(conn, 200, "text/plain; version=0.0.4; charset=utf-8", body, head);
  });
  add("/healthz", [](mg_connection* conn, bool head) {
    SendText(conn, 200, "text/plain; charset=utf-8", "ok\n", head);
  });
  add("/readyz", [self](mg_connection* conn, bool head) {
    const bool ready = !self->sources_.ready || self->sources_.ready();
    SendText(conn, ready ? 200 : 503, "text/plain; charset=utf-8",
             ready ? "ready\n" : "not ready\n", head);
  });
  add("/debug/config", [self](mg_connection* conn, bool head) {
    std::string body;
    {
      absl::MutexLock l(&self->config_mu_);
      body = self->config_yaml_;
    }
    SendText(conn, 200, "text/plain; charset=utf-8", body, head);
  });
  return s;
}

AdminServer::~AdminServer() {
  // civetweb's listener thread sees the stop flag only when its poll
  // returns, which takes up to 2 s without traffic: connections wake it.
  std::atomic<bool> stopped{false};
  std::thread waker([this, &stopped] {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    if (::inet_pton(AF_INET, wake_host_.c_str(), &addr.sin_addr) != 1) return;
    while (!stopped.load()) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return;
      ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      ::close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  // Stops the listener and joins the workers before the handlers go.
  server_.reset();
  stopped.store(true);
  waker.join();
}

}  // namespace fanout::server
