#include "cache/origins/beneath.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <deque>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace fanout::cache {
namespace {

// Symlinks one resolution may follow, as the kernel allows.
constexpr int kMaxSymlinks = 40;

}  // namespace

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

UniqueFd BeneathResolver::Open(int root, const std::string& rel, int flags, int* err) const {
  return openat2_.load(std::memory_order_relaxed) ? OpenWithOpenat2(root, rel, flags, err)
                                                  : OpenPortably(root, rel, flags, err);
}

// The kernel resolves the path beneath the root: "..", absolute links and
// links leaving the root fail with EXDEV, /proc magic links with ELOOP,
// and with kDeny every symlink with ELOOP. Atomic with respect to
// concurrent renames and symlink swaps.
UniqueFd BeneathResolver::OpenWithOpenat2(int root, const std::string& rel, int flags,
                                          int* err) const {
  struct open_how how;
  std::memset(&how, 0, sizeof(how));
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  if (symlinks_ == FileSymlinks::kDeny) how.resolve |= RESOLVE_NO_SYMLINKS;
  // EAGAIN: a rename or mount raced the walk; the kernel asks for a retry.
  for (int attempt = 0; attempt < 4; ++attempt) {
    const long fd = ::syscall(SYS_openat2, root, rel.c_str(), &how, sizeof(how));
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    *err = errno;
    if (*err == ENOSYS) {
      // Seccomp filters may hide a syscall the kernel has: from now on
      // this resolver walks portably.
      openat2_.store(false, std::memory_order_relaxed);
      return OpenPortably(root, rel, flags, err);
    }
    if (*err != EAGAIN && *err != EINTR) break;
  }
  return UniqueFd();
}

// Without openat2: the same rules, resolved in user space from the root's
// fd one component at a time. Each component is looked at without
// following it (fstatat AT_SYMLINK_NOFOLLOW); a symlink is refused (kDeny)
// or read and its relative target spliced into the rest of the path; an
// absolute target is EXDEV, ".." pops back to the directory fd held for
// the parent (EXDEV above the root), more than 40 links is ELOOP; every
// open uses O_NOFOLLOW, so a component swapped for a symlink after it was
// looked at fails instead of being followed. The race that remains: a
// directory already walked into that is renamed to a place outside the
// root while the walk goes on below it is followed there. Exploiting it
// needs write access both inside and outside the root; openat2 has no
// such race.
UniqueFd BeneathResolver::OpenPortably(int root, const std::string& rel, int flags,
                                       int* err) const {
  std::deque<std::string> todo = absl::StrSplit(rel, '/', absl::SkipEmpty());
  std::vector<UniqueFd> dirs;  // below the root, innermost last
  int links = 0;
  while (!todo.empty()) {
    const std::string part = std::move(todo.front());
    todo.pop_front();
    if (part == ".") continue;
    if (part == "..") {
      if (dirs.empty()) {
        *err = EXDEV;
        return UniqueFd();
      }
      dirs.pop_back();
      continue;
    }
    const int at = dirs.empty() ? root : dirs.back().get();
    struct stat st;
    if (::fstatat(at, part.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      *err = errno;
      return UniqueFd();
    }
    if (S_ISLNK(st.st_mode)) {
      if (symlinks_ == FileSymlinks::kDeny || ++links > kMaxSymlinks) {
        *err = ELOOP;
        return UniqueFd();
      }
      char target[PATH_MAX];
      const ssize_t n = ::readlinkat(at, part.c_str(), target, sizeof(target));
      if (n < 0 || static_cast<size_t>(n) >= sizeof(target)) {
        *err = n < 0 ? errno : ENAMETOOLONG;
        return UniqueFd();
      }
      const absl::string_view link(target, static_cast<size_t>(n));
      if (link.empty() || link.front() == '/') {
        *err = link.empty() ? ENOENT : EXDEV;
        return UniqueFd();
      }
      std::vector<std::string> spliced = absl::StrSplit(link, '/', absl::SkipEmpty());
      todo.insert(todo.begin(), spliced.begin(), spliced.end());
      continue;
    }
    const bool last = todo.empty();
    const int open_flags =
        last ? flags | O_CLOEXEC | O_NOFOLLOW : O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW;
    UniqueFd next(::openat(at, part.c_str(), open_flags));
    if (!next.ok()) {
      *err = errno;
      // A symlink where fstatat saw none: the tree changed under the walk.
      if ((*err == ELOOP || *err == ENOTDIR) &&
          ::fstatat(at, part.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
        *err = EAGAIN;
      }
      return UniqueFd();
    }
    if (last) return next;
    dirs.push_back(std::move(next));
  }
  // The path ended on a directory (a link to "." or ".."): not a key.
  *err = ENOENT;
  return UniqueFd();
}

// Whether openat2 works here: the kernel may predate it (Linux < 5.6) or a
// seccomp profile may refuse it (ENOSYS or, in older container runtimes,
// EPERM).
bool Openat2Works(const std::string& root) {
  UniqueFd dir(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir.ok()) return false;
  struct open_how how;
  std::memset(&how, 0, sizeof(how));
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS;
  const long fd = ::syscall(SYS_openat2, dir.get(), ".", &how, sizeof(how));
  if (fd < 0) return false;
  ::close(static_cast<int>(fd));
  return true;
}

}  // namespace fanout::cache
