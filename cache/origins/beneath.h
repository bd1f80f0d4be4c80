// Opening paths below a root directory without leaving it: the rules the
// file origin reads keys under, shared by its reads and its watch.
#ifndef FANOUT_CACHE_ORIGINS_BENEATH_H_
#define FANOUT_CACHE_ORIGINS_BENEATH_H_

#include <atomic>
#include <string>
#include <utility>

#include "cache/origins/file_origin.h"

namespace fanout::cache {

// Owns a file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  bool ok() const { return fd_ >= 0; }
  int get() const { return fd_; }
  // Gives the descriptor up without closing it.
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

// Resolves relative paths beneath a root directory: "..", absolute symlinks
// and symlinks that lead out of the root fail with EXDEV, /proc "magic"
// links and loops with ELOOP, and with FileSymlinks::kDeny every symlink
// with ELOOP. Thread-safe.
class BeneathResolver {
 public:
  // `openat2`: the kernel's openat2 may be used (see Openat2Works); when it
  // turns out to be hidden (ENOSYS), the resolver switches to its portable
  // walk for good.
  BeneathResolver(FileSymlinks symlinks, bool openat2) : symlinks_(symlinks), openat2_(openat2) {}

  // Opens `rel` (no leading '/') below the directory `root` (an fd, O_PATH
  // is enough), the last component with `flags` (O_CLOEXEC is added). On
  // failure: an invalid fd, and the errno in `*err` (EAGAIN: the tree
  // changed under the walk; worth another try).
  UniqueFd Open(int root, const std::string& rel, int flags, int* err) const;

  bool uses_openat2() const { return openat2_.load(std::memory_order_relaxed); }

 private:
  UniqueFd OpenWithOpenat2(int root, const std::string& rel, int flags, int* err) const;
  UniqueFd OpenPortably(int root, const std::string& rel, int flags, int* err) const;

  const FileSymlinks symlinks_;
  mutable std::atomic<bool> openat2_;
};

// Whether openat2 works here: the kernel may predate it (Linux < 5.6) or a
// seccomp profile may refuse it (ENOSYS or, in older container runtimes,
// EPERM).
bool Openat2Works(const std::string& root);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_ORIGINS_BENEATH_H_
