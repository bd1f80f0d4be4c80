// An origin reading files under one root directory.
#ifndef FANOUT_CACHE_ORIGINS_FILE_ORIGIN_H_
#define FANOUT_CACHE_ORIGINS_FILE_ORIGIN_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cache/origin.h"
#include "common/executor.h"

namespace fanout::cache {

struct FileOriginOptions {
  // Directory whose regular files are the values; key = path relative to it.
  std::string root;
  // Namespaces map to subdirectories of root ("" = root itself).
  bool namespace_subdirs = true;
  uint64_t max_value_bytes = 1 << 20;
};

// Reads files on `executor` (small local reads; never on a gRPC thread).
// Keys with "..", a leading "/", or empty path segments are InvalidArgument.
// A file larger than max_value_bytes is FailedPrecondition.
// `executor`: not owned; must outlive the origin.
absl::StatusOr<std::unique_ptr<Origin>> NewFileOrigin(const FileOriginOptions& options,
                                                      Executor* executor);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_ORIGINS_FILE_ORIGIN_H_
