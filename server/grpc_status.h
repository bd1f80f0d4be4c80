// The one place where absl::Status becomes grpc::Status.
#ifndef FANOUT_SERVER_GRPC_STATUS_H_
#define FANOUT_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "google/rpc/status.pb.h"

namespace fanout::server {

// The longest status message sent. Messages travel in the grpc-message
// header (percent-encoded: up to 3 bytes per byte), and clients refuse
// responses whose headers pass their metadata limit (8 KiB by default), so a
// message echoing a large input would turn a clear error into an opaque one.
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// `text` cut to at most `max` bytes on a UTF-8 character boundary, with a
// marker saying how long it was.
inline std::string TruncateForStatus(absl::string_view text, size_t max) {
  if (text.size() <= max) return std::string(text);
  size_t cut = max;
  // Back off continuation bytes (10xxxxxx) so no character is split.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat(text.substr(0, cut), "... [", text.size(), " bytes, cut]");
}

// Caller input quoted for an error message, cut to `max` bytes: the error
// names the input without echoing all of it.
inline std::string QuoteInput(absl::string_view input, size_t max = 128) {
  return absl::StrCat("\"", TruncateForStatus(input, max), "\"");
}

// Payloads of the status (type URL → serialized message) travel as
// google.rpc.Status details, which grpcurl and the fanout client decode.
// The message is cut to kMaxStatusMessageBytes.
inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  const auto code = static_cast<grpc::StatusCode>(s.code());
  std::string message = TruncateForStatus(s.message(), kMaxStatusMessageBytes);
  google::rpc::Status details;
  s.ForEachPayload([&details](absl::string_view type_url, const absl::Cord& payload) {
    google::protobuf::Any* any = details.add_details();
    any->set_type_url(std::string(type_url));
    any->set_value(std::string(payload));
  });
  if (details.details_size() == 0) return grpc::Status(code, std::move(message));
  details.set_code(static_cast<int32_t>(code));
  details.set_message(message);
  return grpc::Status(code, std::move(message), details.SerializeAsString());
}

}  // namespace fanout::server

#endif  // FANOUT_SERVER_GRPC_STATUS_H_
