// The gRPC Downstream: generic unary calls with the callback API.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/trace_context.h"
#include "router/downstream.h"

namespace fanout::router {
namespace {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  out.reserve(buffer.Length());
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

// One call in flight. Shared by the completion and the cancellation
// callback: TryCancel may complete the call inline, and the context must
// outlive TryCancel.
struct CallState {
  grpc::ClientContext context;
  std::string method;
  grpc::ByteBuffer request;
  grpc::ByteBuffer response;
  Downstream::Done done;
  std::unique_ptr<CancellationCallback> on_cancel;
};

class GrpcDownstream final : public Downstream {
 public:
  explicit GrpcDownstream(std::shared_ptr<grpc::Channel> channel)
      : channel_(channel), stub_(std::move(channel)) {}

  void Call(const DownstreamCall& call, Done done) override {
    if (call.token.cancelled()) {
      std::move(done)(absl::CancelledError("cancelled before the call started"));
      return;
    }
    auto state = std::make_shared<CallState>();
    state->method = call.method;
    state->done = std::move(done);
    if (call.deadline != absl::InfiniteFuture()) {
      state->context.set_deadline(absl::ToChronoTime(call.deadline));
    }
    if (call.cost > 0) state->context.AddMetadata(kCostMetadataKey, absl::StrCat(call.cost));
    if (!call.traceparent.empty()) state->context.AddMetadata(kTraceparentKey, call.traceparent);
    // Always a valid buffer: a default ByteBuffer is no message at all.
    grpc::Slice slice = call.payload != nullptr
                            ? grpc::Slice(call.payload->data(), call.payload->size())
                            : grpc::Slice();
    state->request = grpc::ByteBuffer(&slice, 1);
    // Registered before the call starts: a TryCancel that comes first makes
    // the call fail with CANCELLED as soon as it starts.
    state->on_cancel =
        std::make_unique<CancellationCallback>(call.token, [state] { state->context.TryCancel(); });
    stub_.UnaryCall(&state->context, state->method, grpc::StubOptions(), &state->request,
                    &state->response, [state](grpc::Status status) {
                      // Unsubscribe first: waits out a TryCancel running elsewhere.
                      state->on_cancel.reset();
                      Done done = std::move(state->done);
                      if (status.ok()) {
                        std::move(done)(Flatten(state->response));
                      } else {
                        std::move(done)(FromGrpc(status));
                      }
                    });
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  grpc::GenericStub stub_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<Downstream>> NewGrpcDownstream(const std::string& address) {
  if (address.empty()) return absl::InvalidArgumentError("backend address: empty");
  // gRPC's default reconnect backoff grows to 120 s: a backend restarted on
  // the same address would stay unreachable for minutes of failed calls.
  // Retry a lost connection within about a second instead.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kReconnectBackoffMs / 4);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, kReconnectBackoffMs / 4);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kReconnectBackoffMs);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("backend address '", address, "': no channel"));
  }
  return std::shared_ptr<Downstream>(std::make_shared<GrpcDownstream>(std::move(channel)));
}

}  // namespace fanout::router
