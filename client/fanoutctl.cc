// fanoutctl: fanout's command line client.
//
//   fanoutctl [flags] get KEY
//   fanoutctl [flags] batch-get KEY...
//   fanoutctl [flags] invalidate [KEY...] [--prefix P]
//   fanoutctl [flags] route ROUTE [--payload TEXT | --payload_file FILE] [--branch_payloads]
//   fanoutctl [flags] health [SERVICE]
//   fanoutctl [flags] watch [PREFIX...] [--key K1,K2] [--values] [--watch_for 0]
//
// Exit codes: 0 OK; 1 other error; 2 usage; 3 not found; 4 unavailable,
// deadline exceeded or overloaded (worth retrying); 5 not serving (health).
#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/client.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:7070", "fanoutd address (host:port or unix:///path)");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(5), "deadline of the call");
ABSL_FLAG(bool, json, false, "print the whole response as JSON (proto3 JSON; bytes in base64)");
ABSL_FLAG(std::string, namespace, "", "namespace of the keys");
ABSL_FLAG(absl::Duration, max_stale, absl::ZeroDuration(),
          "get: how stale a value to accept if the origin is down (0 = server default)");
ABSL_FLAG(bool, bypass, false, "get: read from the origin and refresh the tiers");
ABSL_FLAG(std::string, prefix, "", "invalidate: evict every key with this prefix");
ABSL_FLAG(bool, purge_survival, false, "invalidate: also drop the keys from the survival tier");
ABSL_FLAG(std::vector<std::string>, key, {}, "watch: keys to watch (with the PREFIX arguments)");
ABSL_FLAG(bool, values, false, "watch: also print UPDATED events with the new values");
ABSL_FLAG(absl::Duration, watch_for, absl::ZeroDuration(),
          "watch: stop after this long (0 = never)");
ABSL_FLAG(std::string, payload, "", "route: request payload");
ABSL_FLAG(std::string, payload_file, "", "route: read the payload from this file");
ABSL_FLAG(int64_t, cost, 0, "route: work estimate for cost-aware balancing");
ABSL_FLAG(bool, branch_payloads, false,
          "route: also return the winner's payload in its branch (shown with --json)");
ABSL_FLAG(std::string, policy, "",
          "route: policy override (all, all_settled, first_success, fallback, hedged, "
          "least_loaded, round_robin, adaptive)");

namespace {

using fanout::client::Client;

constexpr int kOk = 0, kError = 1, kUsage = 2, kNotFound = 3, kRetry = 4, kNotServing = 5;

int ExitCodeFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return kOk;
    case absl::StatusCode::kNotFound:
      return kNotFound;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
      return kRetry;
    default:
      return kError;
  }
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "fanoutctl: %s: %s\n", absl::StatusCodeToString(s.code()).c_str(),
               std::string(s.message()).c_str());
  return ExitCodeFor(s.code());
}

int Usage(const std::string& message) {
  std::fprintf(stderr, "fanoutctl: %s\n%s\n", message.c_str(),
               std::string(absl::ProgramUsageMessage()).c_str());
  return kUsage;
}

void PrintJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  std::fputs(out.c_str(), stdout);
}

int Get(Client& client, const std::vector<char*>& args) {
  if (args.size() != 1) return Usage("get takes one KEY");
  fanout::v1::GetRequest request;
  request.set_key(args[0]);
  request.set_namespace_(absl::GetFlag(FLAGS_namespace));
  request.set_max_stale_ms(absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_max_stale)));
  request.set_bypass_cache(absl::GetFlag(FLAGS_bypass));
  auto response = client.Get(request);
  if (!response.ok()) return Fail(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*response);
  } else {
    std::fwrite(response->value().data(), 1, response->value().size(), stdout);
    std::fprintf(stderr, "served_by=%s stale=%s age_ms=%lld version=%lld\n",
                 fanout::v1::Tier_Name(response->served_by()).c_str(),
                 response->stale() ? "true" : "false", static_cast<long long>(response->age_ms()),
                 static_cast<long long>(response->version()));
  }
  return kOk;
}

int BatchGet(Client& client, const std::vector<char*>& args) {
  if (args.empty()) return Usage("batch-get takes one or more KEYs");
  fanout::v1::BatchGetRequest request;
  for (char* k : args) request.add_keys(k);
  request.set_namespace_(absl::GetFlag(FLAGS_namespace));
  request.set_max_stale_ms(absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_max_stale)));
  auto response = client.BatchGet(request);
  if (!response.ok()) return Fail(response.status());
  int exit_code = kOk;
  if (absl::GetFlag(FLAGS_json)) PrintJson(*response);
  for (const auto& item : response->items()) {
    const auto code = static_cast<absl::StatusCode>(item.code());
    if (exit_code == kOk) exit_code = ExitCodeFor(code);
    if (absl::GetFlag(FLAGS_json)) continue;
    if (code == absl::StatusCode::kOk) {
      std::printf("%s\t%s\t%s\n", item.key().c_str(),
                  fanout::v1::Tier_Name(item.served_by()).c_str(),
                  std::string(absl::StripTrailingAsciiWhitespace(item.value())).c_str());
    } else {
      std::printf("%s\t%s\t%s\n", item.key().c_str(), absl::StatusCodeToString(code).c_str(),
                  item.error().c_str());
    }
  }
  return exit_code;
}

int Invalidate(Client& client, const std::vector<char*>& args) {
  fanout::v1::InvalidateRequest request;
  for (char* k : args) request.add_keys(k);
  request.set_prefix(absl::GetFlag(FLAGS_prefix));
  request.set_namespace_(absl::GetFlag(FLAGS_namespace));
  request.set_purge_survival(absl::GetFlag(FLAGS_purge_survival));
  auto response = client.Invalidate(request);
  if (!response.ok()) return Fail(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*response);
  } else {
    std::printf("evicted=%lld broadcast=%s\n", static_cast<long long>(response->evicted()),
                response->broadcast() ? "true" : "false");
  }
  return kOk;
}

int Route(Client& client, const std::vector<char*>& args) {
  if (args.size() != 1) return Usage("route takes one ROUTE name");
  fanout::v1::RouteRequest request;
  request.set_route(args[0]);
  if (!absl::GetFlag(FLAGS_payload_file).empty()) {
    std::ifstream in(absl::GetFlag(FLAGS_payload_file), std::ios::binary);
    if (!in) return Usage("cannot read --payload_file");
    std::stringstream buf;
    buf << in.rdbuf();
    request.set_payload(buf.str());
  } else {
    request.set_payload(absl::GetFlag(FLAGS_payload));
  }
  request.set_cost(absl::GetFlag(FLAGS_cost));
  request.set_branch_payloads(absl::GetFlag(FLAGS_branch_payloads));
  const std::string policy = absl::AsciiStrToUpper(absl::GetFlag(FLAGS_policy));
  if (!policy.empty()) {
    fanout::v1::Policy p;
    if (!fanout::v1::Policy_Parse(policy, &p)) {
      return Usage(absl::StrCat("--policy: unknown policy \"", absl::GetFlag(FLAGS_policy), "\""));
    }
    request.set_policy(p);
  }
  request.set_timeout_ms(absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_timeout)));
  auto response = client.Route(request);
  if (!response.ok()) {
    // The branches of a failed route, when the server sent them.
    auto branches = response.status().GetPayload(fanout::client::kRouteResponseTypeUrl);
    fanout::v1::RouteResponse failed;
    if (branches.has_value() && failed.ParseFromString(std::string(*branches))) {
      if (absl::GetFlag(FLAGS_json)) {
        PrintJson(failed);
      } else {
        // Branches of a failed route carry no payloads; errors are cut short.
        for (const auto& b : failed.branches()) {
          const std::string code =
              b.code() == 0
                  ? ""
                  : absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(b.code())),
                                 " ");
          std::fprintf(stderr, "branch %s: %s %s%lldus %s\n", b.backend().c_str(),
                       fanout::v1::Outcome_Name(b.outcome()).c_str(), code.c_str(),
                       static_cast<long long>(b.latency_us()), b.error().c_str());
        }
      }
    }
    return Fail(response.status());
  }
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*response);
  } else {
    std::fwrite(response->payload().data(), 1, response->payload().size(), stdout);
    std::fprintf(stderr, "backend=%s policy=%s latency_us=%lld branches=%d\n",
                 response->backend().c_str(), fanout::v1::Policy_Name(response->policy()).c_str(),
                 static_cast<long long>(response->latency_us()), response->branches_size());
  }
  return kOk;
}

int Health(Client& client, const std::vector<char*>& args) {
  if (args.size() > 1) return Usage("health takes at most one SERVICE");
  auto status = client.Health(args.empty() ? "" : args[0]);
  if (!status.ok()) return Fail(status.status());
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("{\n \"status\": \"%s\"\n}\n", name.c_str());
  } else {
    std::printf("%s\n", name.c_str());
  }
  return *status == grpc::health::v1::HealthCheckResponse::SERVING ? kOk : kNotServing;
}

// One line an event: KIND key=K [prefix=P] [version=N value=V] [all_keys] [detail=...].
int Watch(Client& client, const std::vector<char*>& args) {
  fanout::v1::WatchRequest request;
  for (char* p : args) request.add_prefixes(p);
  for (const std::string& k : absl::GetFlag(FLAGS_key)) request.add_keys(k);
  request.set_namespace_(absl::GetFlag(FLAGS_namespace));
  request.set_values(absl::GetFlag(FLAGS_values));
  const bool json = absl::GetFlag(FLAGS_json);
  absl::Status s = client.Watch(
      request, absl::GetFlag(FLAGS_watch_for), [json](const fanout::v1::WatchEvent& e) {
        if (json) {
          std::string line;
          google::protobuf::util::JsonPrintOptions o;
          (void)google::protobuf::util::MessageToJsonString(e, &line, o);
          std::printf("%s\n", line.c_str());
        } else {
          std::string line = fanout::v1::EventKind_Name(e.kind());
          if (!e.key().empty()) absl::StrAppend(&line, " key=", e.key());
          if (!e.prefix().empty()) absl::StrAppend(&line, " prefix=", e.prefix());
          if (e.kind() == fanout::v1::UPDATED) {
            absl::StrAppend(&line, " version=", e.version(), " value=", e.value());
          }
          if (e.all_keys()) absl::StrAppend(&line, " all_keys");
          if (!e.detail().empty()) absl::StrAppend(&line, " detail=", e.detail());
          std::printf("%s\n", line.c_str());
        }
        std::fflush(stdout);
        return true;
      });
  if (s.code() == absl::StatusCode::kDeadlineExceeded &&
      absl::GetFlag(FLAGS_watch_for) > absl::ZeroDuration()) {
    return kOk;
  }
  return s.ok() ? kOk : Fail(s);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "usage: fanoutctl [--addr ADDR] [--timeout 5s] [--json] [--namespace NS] COMMAND ...\n"
      "  get KEY [--max_stale 10s] [--bypass]\n"
      "  batch-get KEY...\n"
      "  invalidate [KEY...] [--prefix P] [--purge_survival]\n"
      "  route ROUTE [--payload TEXT | --payload_file FILE] [--cost N] [--policy P]\n"
      "        [--branch_payloads]\n"
      "  health [SERVICE]\n"
      "  watch [PREFIX...] [--key K1,K2] [--values] [--watch_for 0]\n"
      "exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 unavailable/timeout/overloaded "
      "(retry), 5 not serving");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() < 2) return Usage("no command given");
  const std::string command = positional[1];
  std::vector<char*> args(positional.begin() + 2, positional.end());

  fanout::client::ClientOptions options;
  options.timeout = absl::GetFlag(FLAGS_timeout);
  auto client = Client::Connect(absl::GetFlag(FLAGS_addr), options);
  if (!client.ok()) return Usage(std::string(client.status().message()));

  if (command == "get") return Get(**client, args);
  if (command == "batch-get") return BatchGet(**client, args);
  if (command == "invalidate") return Invalidate(**client, args);
  if (command == "route") return Route(**client, args);
  if (command == "health") return Health(**client, args);
  if (command == "watch") return Watch(**client, args);
  return Usage(absl::StrCat("unknown command \"", command, "\""));
}
