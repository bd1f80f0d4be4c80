// An origin reading files under one root directory.
#ifndef FANOUT_CACHE_ORIGINS_FILE_ORIGIN_H_
#define FANOUT_CACHE_ORIGINS_FILE_ORIGIN_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cache/origin.h"
#include "common/blocking_pool.h"
#include "common/executor.h"

namespace fanout::cache {

// Symlinks met while resolving a key below the root.
enum class FileSymlinks {
  // Followed while they stay inside the root (Kubernetes ConfigMap volumes
  // are made of `key -> ..data/key`, `..data -> ..2026_01_01_...` links).
  // Links that lead out of the root, absolute links, and /proc "magic"
  // links are refused.
  kWithinRoot,
  // Refused anywhere on the path.
  kDeny,
};

// Parses "within_root" / "deny" (the config spelling). InvalidArgument naming
// origin.file.symlinks otherwise.
absl::StatusOr<FileSymlinks> ParseFileSymlinks(absl::string_view text);

// The folder below the root that holds the namespaces: namespace N's key K is
// the file ROOT/@ns/N/K; a key of the default namespace ("") is ROOT/K. The
// mapping from (namespace, key) to a file is one-to-one: keys of the default
// namespace may not start with this folder, and a namespace is one path
// segment.
inline constexpr absl::string_view kNamespaceFolder = "@ns";

struct FileOriginOptions {
  // Directory whose regular files are the values. Opened again by every read,
  // so a root that is a symlink may be re-pointed (git-sync).
  std::string root;
  FileSymlinks symlinks = FileSymlinks::kWithinRoot;
  uint64_t max_value_bytes = 1 << 20;
  // False forces the portable resolver even where the kernel has openat2
  // (tests run both; kernels without openat2 are detected at run time).
  bool use_openat2 = true;
};

// Maps (namespace, key) to the path of its file relative to the root.
// InvalidArgument naming the key or namespace when no file can hold it: an
// empty key; a leading '/'; an empty path segment; a segment starting with
// '.' (".", "..", hidden files, ConfigMap internals such as "..data"); a
// segment over 255 bytes; a NUL byte; a path over 4095 bytes; a namespace
// with a '/'; a default-namespace key under kNamespaceFolder.
absl::StatusOr<std::string> FileOriginPath(absl::string_view ns, absl::string_view key);

// Reads files on `io` (blocking reads never run on a gRPC thread or on the
// executor) and answers on `executor`, whose timers also end fetches still
// queued or reading when their deadline passes (DeadlineExceeded) and whose
// threads deliver cancellation (Cancelled).
//
// Errors, each naming the key:
//   InvalidArgument     FileOriginPath refuses it, or the file system refuses
//                       the name (ENAMETOOLONG)
//   NotFound            no such file, a directory, or a path through a file
//   FailedPrecondition  not a regular file; a symlink that leaves the root,
//                       is absolute, loops, or is refused by kDeny; a file
//                       fanoutd may not read; a value over max_value_bytes
//                       (decided from the bytes read, never from st_size,
//                       which procfs reports as 0)
//   Unavailable         the root is missing or unreadable (an origin
//                       failure, never "no such key"); a transient I/O error
//   ResourceExhausted   `io` has io->max_queued() reads waiting
// WatchChanges reports the keys whose files change (cache/origins/file_watch.h).
// `io`, `executor`: not owned; must outlive every fetch (the origin itself
// may go first: reads still running finish without touching it).
// InvalidArgument naming origin.file.root when the root is not a directory
// at construction.
absl::StatusOr<std::unique_ptr<Origin>> NewFileOrigin(const FileOriginOptions& options,
                                                      BlockingPool* io, Executor* executor);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_ORIGINS_FILE_ORIGIN_H_
