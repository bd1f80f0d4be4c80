#include "cache/tiers/envelope.h"

#include <cstdint>
#include <cstring>
#include <limits>

#include "absl/base/internal/endian.h"
#include "absl/strings/str_cat.h"

namespace fanout::cache {
namespace {

constexpr int64_t kPast = std::numeric_limits<int64_t>::min();
constexpr int64_t kFuture = std::numeric_limits<int64_t>::max();

int64_t ToMicros(absl::Time t) {
  if (t == absl::InfinitePast()) return kPast;
  if (t == absl::InfiniteFuture()) return kFuture;
  return absl::ToUnixMicros(t);
}

absl::Time FromMicros(int64_t us) {
  if (us == kPast) return absl::InfinitePast();
  if (us == kFuture) return absl::InfiniteFuture();
  return absl::FromUnixMicros(us);
}

void PutI64(std::string* out, int64_t v) {
  char buf[8];
  absl::little_endian::Store64(buf, static_cast<uint64_t>(v));
  out->append(buf, 8);
}

int64_t GetI64(const char* p) { return static_cast<int64_t>(absl::little_endian::Load64(p)); }

}  // namespace

std::string EncodeEnvelope(const Entry& e, bool superseded) {
  std::string out;
  out.reserve(kEnvelopeOverhead + e.value.size());
  out.push_back(static_cast<char>(kEnvelopeFormat));
  out.push_back(static_cast<char>(superseded ? 1 : 0));
  PutI64(&out, e.version);
  PutI64(&out, ToMicros(e.fetched_at));
  PutI64(&out, ToMicros(e.fresh_until));
  PutI64(&out, ToMicros(e.expires_at));
  PutI64(&out, ToMicros(e.stale_until));
  PutI64(&out, absl::ToInt64Microseconds(e.fill_time));
  char len[4];
  absl::little_endian::Store32(len, static_cast<uint32_t>(e.value.size()));
  out.append(len, 4);
  out.append(e.value.view().data(), e.value.size());
  return out;
}

absl::StatusOr<Envelope> DecodeEnvelope(absl::string_view bytes) {
  if (bytes.size() < kEnvelopeOverhead) {
    return absl::DataLossError(
        absl::StrCat("envelope of ", bytes.size(), " bytes is shorter than its header"));
  }
  const char* p = bytes.data();
  if (static_cast<uint8_t>(p[0]) != kEnvelopeFormat) {
    return absl::DataLossError(absl::StrCat("envelope format ",
                                            static_cast<int>(static_cast<uint8_t>(p[0])),
                                            " is not ", static_cast<int>(kEnvelopeFormat)));
  }
  const uint8_t flags = static_cast<uint8_t>(p[1]);
  if ((flags & ~1u) != 0) {
    return absl::DataLossError(absl::StrCat("envelope flags ", flags, " are unknown"));
  }
  p += 2;
  Envelope env;
  env.superseded = (flags & 1u) != 0;
  Entry& e = env.entry;
  e.version = GetI64(p);
  e.fetched_at = FromMicros(GetI64(p + 8));
  e.fresh_until = FromMicros(GetI64(p + 16));
  e.expires_at = FromMicros(GetI64(p + 24));
  e.stale_until = FromMicros(GetI64(p + 32));
  const int64_t fill_us = GetI64(p + 40);
  const uint32_t len = absl::little_endian::Load32(p + 48);
  if (len != bytes.size() - kEnvelopeOverhead) {
    return absl::DataLossError(absl::StrCat("envelope says ", len, " value bytes but holds ",
                                            bytes.size() - kEnvelopeOverhead));
  }
  if (!(e.fetched_at <= e.fresh_until && e.fresh_until <= e.expires_at &&
        e.expires_at <= e.stale_until) ||
      fill_us < 0) {
    return absl::DataLossError("envelope times are out of order");
  }
  e.fill_time = absl::Microseconds(fill_us);
  e.value = std::string(bytes.substr(kEnvelopeOverhead));
  return env;
}

Entry Supersede(Entry entry, absl::Time now) {
  const absl::Time end = std::max(entry.fetched_at, std::min(entry.expires_at, now));
  entry.expires_at = end;
  entry.fresh_until = std::min(entry.fresh_until, end);
  return entry;
}

}  // namespace fanout::cache
