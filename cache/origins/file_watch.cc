#include "cache/origins/file_watch.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cache/origins/beneath.h"
#include "common/inotify_loop.h"
#include "common/log.h"

namespace fanout::cache {
namespace {

// What can change what a name in a watched directory reads, and the
// directory itself going away.
constexpr uint32_t kDirEvents = IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE |
                                IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |
                                IN_ONLYDIR;
// In the root's parent: the root's own name replaced (a re-pointed symlink,
// a directory deleted or recreated).
constexpr uint32_t kParentEvents =
    IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_ONLYDIR;

// Symlinks followed from a key to the directory of its file.
constexpr int kMaxLinkHops = 8;

// What makes a file "the same" between two scans.
struct FileSig {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  bool operator==(const FileSig&) const = default;
};

FileSig SigOf(const struct stat& st) {
  return {.dev = st.st_dev,
          .ino = st.st_ino,
          .size = st.st_size,
          .mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
          .ctime_ns = static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec};
}

// Files by their path relative to the root.
using Snapshot = absl::flat_hash_map<std::string, FileSig>;

struct Scan {
  bool root_ok = false;
  int root_errno = 0;  // when not root_ok
  bool too_many = false;
  Snapshot files;
  // Paths (relative) that could not be looked at: what the last scan had at
  // or below them is kept.
  std::vector<std::string> unknown;
  absl::flat_hash_set<int> watches;  // inotify watches of the directories walked
};

// "dir/name" into its directory ("." when none) and name.
std::pair<std::string, std::string> SplitPath(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  if (slash == std::string::npos) return {".", p};
  return {std::string(p, 0, std::max<size_t>(slash, 1)), std::string(p, slash + 1)};
}

// The (namespace, key) a file below the root holds, when it is one.
bool KeyOf(const std::string& rel, std::string* ns, std::string* key) {
  const std::string folder = absl::StrCat(kNamespaceFolder, "/");
  if (absl::StartsWith(rel, folder)) {
    const size_t slash = rel.find('/', folder.size());
    if (slash == std::string::npos) return false;  // a file directly in the folder
    *ns = rel.substr(folder.size(), slash - folder.size());
    *key = rel.substr(slash + 1);
  } else {
    ns->clear();
    *key = rel;
  }
  absl::StatusOr<std::string> path = FileOriginPath(*ns, *key);
  return path.ok() && *path == rel;
}

class FileWatch final : public OriginWatch {
 public:
  FileWatch(FileWatchOptions options, Origin::ChangeSink sink, std::unique_ptr<InotifyLoop> loop)
      : options_(std::move(options)),
        sink_(std::move(sink)),
        resolver_(options_.symlinks, options_.use_openat2 && Openat2Works(options_.root)),
        loop_(std::move(loop)) {
    std::tie(parent_, name_) = SplitPath(options_.root);
  }

  ~FileWatch() override { loop_.reset(); }

  absl::Status Begin() {
    parent_wd_ = ::inotify_add_watch(loop_->fd(), parent_.c_str(), kParentEvents);
    if (parent_wd_ < 0) {
      FANOUT_LOG(WARNING) << "file origin watch: cannot watch " << parent_ << " ("
                          << std::strerror(errno) << "): a root replaced as a whole is noticed "
                          << "only by the next change inside it";
    }
    Scan first = ScanTree();
    if (!first.root_ok) {
      return absl::FailedPreconditionError(
          absl::StrCat("file origin watch: origin.file.root \"", options_.root,
                       "\" cannot be opened: ", std::strerror(first.root_errno)));
    }
    if (first.too_many) return TooMany();
    files_ = std::move(first.files);
    ReplaceWatches(first.watches);
    loop_->Start({.debounce = options_.debounce, .max_delay = options_.max_delay},
                 {.on_event = [this](const struct inotify_event& e) { return Relevant(e); },
                  .on_burst = [this](bool) { return Burst(); }});
    return absl::OkStatus();
  }

 private:
  absl::Status TooMany() const {
    return absl::FailedPreconditionError(absl::StrCat(
        "file origin watch: origin.file.root \"", options_.root, "\" holds more than ",
        options_.max_files, " files; not watching it (changes are served after their ttl)"));
  }

  // Watches the directory open as `dir_fd`, `rel` below the root, through
  // its /proc link so that the directory watched is the one the walk
  // resolved; by its path where /proc is not mounted. -1 when it cannot.
  int AddWatch(int dir_fd, const std::string& rel) {
    const std::string link = absl::StrCat("/proc/self/fd/", dir_fd);
    int wd = ::inotify_add_watch(loop_->fd(), link.c_str(), kDirEvents);
    if (wd < 0 && errno == ENOENT) {
      const std::string path = rel.empty() ? options_.root : absl::StrCat(options_.root, "/", rel);
      wd = ::inotify_add_watch(loop_->fd(), path.c_str(), kDirEvents);
    }
    if (wd < 0 && !watch_error_logged_) {
      watch_error_logged_ = true;
      FANOUT_LOG(WARNING) << "file origin watch: cannot watch a directory below " << options_.root
                          << " (" << std::strerror(errno)
                          << "; fs.inotify.max_user_watches?): changes there wait for the ttl";
    }
    return wd;
  }

  // Walks the tree below the root. A directory is watched before it is
  // read, so that a change made while it is read is seen by the next scan.
  Scan ScanTree() {
    Scan scan;
    UniqueFd root(::open(options_.root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root.ok()) {
      scan.root_errno = errno;
      return scan;
    }
    scan.root_ok = true;
    struct Dir {
      std::string rel;                            // "" = the root
      std::vector<std::pair<dev_t, ino_t>> path;  // the directories above, for loops
    };
    std::vector<Dir> todo;
    todo.push_back({});
    size_t count = 0;
    while (!todo.empty() && !scan.too_many) {
      Dir dir = std::move(todo.back());
      todo.pop_back();
      int err = 0;
      UniqueFd at = dir.rel.empty()
                        ? UniqueFd(::openat(root.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC))
                        : OpenDir(root.get(), dir.rel, &err);
      if (!at.ok()) {
        if (dir.rel.empty() || (err != ENOENT && err != ENOTDIR)) scan.unknown.push_back(dir.rel);
        continue;
      }
      struct stat dst;
      if (::fstat(at.get(), &dst) != 0) {
        scan.unknown.push_back(dir.rel);
        continue;
      }
      dir.path.emplace_back(dst.st_dev, dst.st_ino);
      const int wd = AddWatch(at.get(), dir.rel);
      if (wd >= 0) scan.watches.insert(wd);
      DIR* d = ::fdopendir(at.get());
      if (d == nullptr) {
        scan.unknown.push_back(dir.rel);
        continue;
      }
      at.release();  // closedir closes it
      std::vector<std::string> names;
      absl::flat_hash_set<std::string> links;  // the names that are symlinks
      errno = 0;
      while (const struct dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;  // ".", "..", hidden files, ConfigMap internals
        names.emplace_back(e->d_name);
        if (e->d_type == DT_LNK || e->d_type == DT_UNKNOWN) links.insert(e->d_name);
      }
      const bool read_ok = errno == 0;
      ::closedir(d);
      if (!read_ok) scan.unknown.push_back(dir.rel);
      for (const std::string& name : names) {
        const std::string rel = dir.rel.empty() ? name : absl::StrCat(dir.rel, "/", name);
        UniqueFd f = resolver_.Open(root.get(), rel, O_PATH, &err);
        struct stat st;
        if (!f.ok()) {
          // Gone since the listing, or not readable as a key (a symlink out
          // of the root, a loop): no key. Anything else: unknown.
          if (err != ENOENT && err != ENOTDIR && err != EXDEV && err != ELOOP) {
            scan.unknown.push_back(rel);
          }
          continue;
        }
        if (::fstat(f.get(), &st) != 0) {
          scan.unknown.push_back(rel);
          continue;
        }
        if (S_ISDIR(st.st_mode)) {
          const std::pair<dev_t, ino_t> id(st.st_dev, st.st_ino);
          if (std::find(dir.path.begin(), dir.path.end(), id) == dir.path.end()) {
            todo.push_back({rel, dir.path});
          }
          continue;
        }
        if (!S_ISREG(st.st_mode)) continue;
        if (++count > options_.max_files) {
          scan.too_many = true;
          break;
        }
        scan.files[rel] = SigOf(st);
        if (links.contains(name)) WatchLinkTargets(root.get(), rel, &scan);
      }
    }
    return scan;
  }

  // A key that is a symlink reads a file in another directory, which the
  // walk may skip (a ConfigMap's files live in `..data`): that directory is
  // watched too, so that an edit there is seen. Follows the links one by
  // one, within the root.
  void WatchLinkTargets(int root, std::string rel, Scan* scan) {
    for (int hop = 0; hop < kMaxLinkHops; ++hop) {
      const size_t slash = rel.rfind('/');
      const std::string dir = slash == std::string::npos ? "" : rel.substr(0, slash);
      const std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
      int err = 0;
      UniqueFd at = dir.empty() ? UniqueFd(::openat(root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC))
                                : resolver_.Open(root, dir, O_PATH | O_DIRECTORY, &err);
      if (!at.ok()) return;
      char target[PATH_MAX];
      const ssize_t n = ::readlinkat(at.get(), name.c_str(), target, sizeof(target));
      if (n < 0) {  // not a link: this directory holds the file
        if (!dir.empty()) {
          const int wd = AddWatch(at.get(), dir);
          if (wd >= 0) scan->watches.insert(wd);
        }
        return;
      }
      const absl::string_view link(target, static_cast<size_t>(n));
      if (static_cast<size_t>(n) >= sizeof(target) || link.empty() || link.front() == '/') return;
      std::vector<std::string> parts;
      if (!dir.empty()) parts = absl::StrSplit(dir, '/', absl::SkipEmpty());
      for (absl::string_view part : absl::StrSplit(link, '/', absl::SkipEmpty())) {
        if (part == ".") continue;
        if (part == "..") {
          if (parts.empty()) return;  // out of the root: reads refuse it too
          parts.pop_back();
          continue;
        }
        parts.emplace_back(part);
      }
      if (parts.empty()) return;
      rel = absl::StrJoin(parts, "/");
    }
  }

  UniqueFd OpenDir(int root, const std::string& rel, int* err) {
    UniqueFd p = resolver_.Open(root, rel, O_PATH | O_DIRECTORY, err);
    if (!p.ok()) return p;
    UniqueFd d(::openat(p.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!d.ok()) *err = errno;
    return d;
  }

  // Keeps the watches of the last scan (and the parent's); drops the rest.
  void ReplaceWatches(const absl::flat_hash_set<int>& now) {
    for (int wd : watches_) {
      if (!now.contains(wd) && wd != parent_wd_) ::inotify_rm_watch(loop_->fd(), wd);
    }
    watches_ = now;
  }

  // Rescans and reports what changed. False when the root cannot be opened
  // (nothing reported; try again later).
  bool Rescan() {
    Scan scan = ScanTree();
    if (!scan.root_ok) return false;
    if (scan.too_many) {
      FANOUT_LOG(ERROR) << TooMany().message();
      disabled_ = true;
      ReplaceWatches({});
      if (parent_wd_ >= 0) ::inotify_rm_watch(loop_->fd(), parent_wd_);
      parent_wd_ = -1;
      return true;
    }
    // What could not be looked at keeps what it had.
    for (const std::string& rel : scan.unknown) {
      for (const auto& [path, sig] : files_) {
        if (rel.empty() || path == rel || absl::StartsWith(path, absl::StrCat(rel, "/"))) {
          scan.files.try_emplace(path, sig);
        }
      }
    }
    std::map<std::string, std::vector<std::string>> changed;  // by namespace
    auto note = [&changed](const std::string& rel) {
      std::string ns, key;
      if (KeyOf(rel, &ns, &key)) changed[ns].push_back(std::move(key));
    };
    for (const auto& [path, sig] : scan.files) {
      auto it = files_.find(path);
      if (it == files_.end() || !(it->second == sig)) note(path);
    }
    for (const auto& [path, sig] : files_) {
      if (!scan.files.contains(path)) note(path);
    }
    files_ = std::move(scan.files);
    ReplaceWatches(scan.watches);
    for (auto& [ns, keys] : changed) {
      std::sort(keys.begin(), keys.end());
      sink_(OriginChange{.ns = ns, .keys = std::move(keys), .prefix = ""});
    }
    return true;
  }

  // Whether `event` may change what the keys read: any event in a watched
  // directory (an IN_IGNORED of one that went, an overflow of the queue
  // too); in the root's parent, only those on the root's own name.
  bool Relevant(const struct inotify_event& ev) {
    if (disabled_) return false;
    if (ev.wd == parent_wd_ && parent_wd_ >= 0) {
      if (ev.mask & IN_IGNORED) {
        parent_wd_ = -1;
        return false;
      }
      return ev.len > 0 && name_ == ev.name;
    }
    return true;
  }

  // A burst is over (or the root's retry is due): rescans. Returns when to
  // try again while the root is missing.
  absl::Time Burst() {
    if (disabled_) return absl::InfiniteFuture();
    const bool found = Rescan();
    if (options_.on_rescan) options_.on_rescan(found);
    if (found) {
      if (root_missing_) {
        FANOUT_LOG(INFO) << "file origin watch: origin.file.root \"" << options_.root
                         << "\" is back";
      }
      root_missing_ = false;
      return absl::InfiniteFuture();
    }
    if (!root_missing_) {
      FANOUT_LOG(WARNING) << "file origin watch: origin.file.root \"" << options_.root
                          << "\" cannot be opened; its keys stay as they were until it is back";
    }
    root_missing_ = true;
    return absl::Now() + options_.root_retry;
  }

  const FileWatchOptions options_;
  Origin::ChangeSink sink_;
  const BeneathResolver resolver_;
  std::string parent_;
  std::string name_;
  int parent_wd_ = -1;
  // Touched by Begin, then only by the loop's thread.
  Snapshot files_;
  absl::flat_hash_set<int> watches_;
  bool watch_error_logged_ = false;
  bool root_missing_ = false;
  bool disabled_ = false;  // the tree grew past max_files
  // Last: its thread, which uses the fields above, stops first.
  std::unique_ptr<InotifyLoop> loop_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<OriginWatch>> StartFileWatch(FileWatchOptions options,
                                                            Origin::ChangeSink sink) {
  absl::StatusOr<std::unique_ptr<InotifyLoop>> loop =
      InotifyLoop::Create(absl::StrCat("origin.file.root \"", options.root, "\""));
  if (!loop.ok()) return loop.status();
  auto watch = std::make_unique<FileWatch>(std::move(options), std::move(sink), *std::move(loop));
  absl::Status begun = watch->Begin();
  if (!begun.ok()) return begun;
  return watch;
}

}  // namespace fanout::cache
