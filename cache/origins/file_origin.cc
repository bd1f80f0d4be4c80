#include "cache/origins/file_origin.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "cache/origins/beneath.h"
#include "cache/origins/file_watch.h"
#include "common/status_macros.h"

namespace fanout::cache {
namespace {

constexpr size_t kMaxSegmentBytes = NAME_MAX;   // 255 on Linux file systems
constexpr size_t kMaxPathBytes = PATH_MAX - 1;  // the kernel's limit, NUL excluded

// The first read asks for at least this much (more when st_size says so);
// the buffer doubles from there up to the limit + 1.
constexpr size_t kFirstRead = 16 << 10;
// A reading thread keeps a buffer up to this size between reads.
constexpr size_t kKeptBuffer = 1 << 20;

// `key "k"` or `key "k" of namespace "n"`, for messages.
std::string Describe(absl::string_view ns, absl::string_view key) {
  return ns.empty() ? absl::StrCat("key \"", key, "\"")
                    : absl::StrCat("key \"", key, "\" of namespace \"", ns, "\"");
}

absl::Status CheckSegments(absl::string_view what, absl::string_view path) {
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(what, " has an empty path segment"));
    }
    if (part.front() == '.') {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": path segment \"", part,
                       "\" starts with '.' (\".\", \"..\", hidden files and names such as "
                       "\"..data\" are not keys)"));
    }
    if (part.size() > kMaxSegmentBytes) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": a path segment of ", part.size(),
                                                     " bytes is over the file system's limit of ",
                                                     kMaxSegmentBytes));
    }
  }
  return absl::OkStatus();
}

// A file origin's view of one errno from opening a key's file.
absl::Status OpenError(int err, const std::string& what, FileSymlinks symlinks) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:  // a path through a file: no such key either
      return absl::NotFoundError(absl::StrCat("no such key: ", what));
    case ENAMETOOLONG:
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": the file system refuses the name as too long"));
    case ELOOP:
      return absl::FailedPreconditionError(
          symlinks == FileSymlinks::kDeny
              ? absl::StrCat(what, ": its path goes through a symlink (origin.file.symlinks: deny)")
              : absl::StrCat(what, ": its path has a symlink loop or a /proc link"));
    case EXDEV:
      return absl::FailedPreconditionError(absl::StrCat(
          what, ": a symlink on its path leads out of origin.file.root or is absolute"));
    case EACCES:
    case EPERM:
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": fanoutd may not read it (", std::strerror(err), ")"));
    default:  // EIO, ESTALE, EMFILE, ENOMEM, ...: worth trying again
      return absl::UnavailableError(
          absl::StrCat("file origin: opening ", what, ": ", std::strerror(err)));
  }
}

// Opens and reads files below the root. Shared by the origin and the reads
// it has queued, so that a read still running when the origin is destroyed
// finishes safely. Thread-safe.
class FileReader {
 public:
  FileReader(FileOriginOptions options, bool openat2)
      : options_(std::move(options)), resolver_(options_.symlinks, openat2) {}

  absl::StatusOr<OriginValue> Read(const std::string& rel, const std::string& what) const {
    // The root is opened again by every read: a root that is a symlink may
    // be re-pointed, and a root that went away is an origin failure, not
    // "no such key" (that would evict good values).
    UniqueFd root(::open(options_.root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root.ok()) return RootError(errno);
    int err = 0;
    UniqueFd file = resolver_.Open(root.get(), rel, O_RDONLY | O_NOCTTY | O_NONBLOCK, &err);
    if (!file.ok()) {
      // A root that lost its search permission fails every key alike.
      if ((err == EACCES || err == EPERM) && ::faccessat(root.get(), ".", X_OK, AT_EACCESS) != 0) {
        return RootError(errno);
      }
      return OpenError(err, what, options_.symlinks);
    }
    struct stat st;
    if (::fstat(file.get(), &st) != 0) {
      return absl::UnavailableError(
          absl::StrCat("file origin: fstat of ", what, ": ", std::strerror(errno)));
    }
    if (S_ISDIR(st.st_mode)) return absl::NotFoundError(absl::StrCat("no such key: ", what));
    if (!S_ISREG(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(what, " is not a regular file"));
    }
    OriginValue v;
    RETURN_IF_ERROR(ReadAtMostLimit(file.get(), st, what, &v.value));
    // The modification time is the version: it changes whenever the file does.
    v.version = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    return v;
  }

 private:
  absl::Status RootError(int err) const {
    return absl::UnavailableError(absl::StrCat("file origin: origin.file.root \"", options_.root,
                                               "\" cannot be opened (", std::strerror(err),
                                               "); no key can be read"));
  }

  // Reads at most max_value_bytes + 1 bytes and decides from what was read:
  // st_size is only a hint (procfs and sysfs report 0, a file may grow).
  // Reads go to a buffer kept by the reading thread, and the value is copied
  // out at its exact size, so a cached value never drags spare capacity.
  absl::Status ReadAtMostLimit(int fd, const struct stat& st, const std::string& what,
                               std::string* out) const {
    thread_local std::string buffer;
    const uint64_t cap = options_.max_value_bytes + 1;
    const uint64_t hint = st.st_size > 0 ? static_cast<uint64_t>(st.st_size) + 1 : 0;
    const size_t first = std::min<uint64_t>(cap, std::max<uint64_t>(kFirstRead, hint));
    if (buffer.size() < first) buffer.resize(first);
    size_t have = 0;
    absl::Status status;
    while (have < cap) {
      if (have == buffer.size()) buffer.resize(std::min<uint64_t>(cap, 2 * buffer.size()));
      ssize_t n;
      do {
        n = ::read(fd, buffer.data() + have, std::min<uint64_t>(buffer.size(), cap) - have);
      } while (n < 0 && errno == EINTR);
      if (n < 0) {
        const int err = errno;
        status = err == EISDIR ? absl::NotFoundError(absl::StrCat("no such key: ", what))
                               : absl::UnavailableError(absl::StrCat("file origin: reading ", what,
                                                                     ": ", std::strerror(err)));
        break;
      }
      if (n == 0) break;
      have += static_cast<size_t>(n);
    }
    if (status.ok() && have > options_.max_value_bytes) {
      status = absl::FailedPreconditionError(absl::StrCat(what, ": the value is over the limit of ",
                                                          options_.max_value_bytes,
                                                          " bytes (limits.max_value_bytes)"));
    }
    if (status.ok()) out->assign(buffer.data(), have);
    // Large reads do not pin their buffer for the life of the thread.
    if (buffer.size() > kKeptBuffer) std::string().swap(buffer);
    return status;
  }

  const FileOriginOptions options_;
  const BeneathResolver resolver_;
};

// One fetch between Fetch and its answer. The read, the deadline timer and
// the cancellation race to answer; the first wins, the others find
// `answered` and do nothing.
struct PendingRead {
  PendingRead(BlockingPool* io, Executor* executor, Origin::FetchDone done)
      : io(io), executor(executor), done(std::move(done)) {}

  enum class By { kRead, kTimer, kCancel };

  // Answers on the executor unless already answered.
  static void Answer(const std::shared_ptr<PendingRead>& p, absl::StatusOr<OriginValue> result,
                     By by) {
    Origin::FetchDone done;
    BlockingJobId job;
    TimerId timer;
    std::unique_ptr<CancellationCallback> on_cancel;
    {
      absl::MutexLock l(&p->mu);
      if (p->answered) return;
      p->answered = true;
      done = std::move(p->done);
      job = p->job;
      timer = p->timer;
      on_cancel = std::move(p->on_cancel);
    }
    if (by != By::kTimer && timer != kNoTimer) p->executor->CancelTimer(timer);
    if (by != By::kRead && job != 0) p->io->Cancel(job);
    // Not from inside the cancellation callback itself: kCancel answers
    // from an executor task.
    on_cancel.reset();
    p->executor->Schedule([done = std::move(done), result = std::move(result)]() mutable {
      std::move(done)(std::move(result));
    });
  }

  bool answered_now() {
    absl::MutexLock l(&mu);
    return answered;
  }

  BlockingPool* const io;
  Executor* const executor;
  absl::Mutex mu;
  Origin::FetchDone done ABSL_GUARDED_BY(mu);
  bool answered ABSL_GUARDED_BY(mu) = false;
  BlockingJobId job ABSL_GUARDED_BY(mu) = 0;
  TimerId timer ABSL_GUARDED_BY(mu) = kNoTimer;
  std::unique_ptr<CancellationCallback> on_cancel ABSL_GUARDED_BY(mu);
};

class FileOrigin final : public Origin {
 public:
  FileOrigin(const FileOriginOptions& options, std::shared_ptr<const FileReader> reader,
             BlockingPool* io, Executor* executor)
      : options_(options), reader_(std::move(reader)), io_(io), executor_(executor) {}

  absl::StatusOr<std::unique_ptr<OriginWatch>> WatchChanges(ChangeSink sink) override {
    FileWatchOptions o;
    o.root = options_.root;
    o.symlinks = options_.symlinks;
    o.use_openat2 = options_.use_openat2;
    return StartFileWatch(std::move(o), std::move(sink));
  }

  void Fetch(absl::string_view ns, absl::string_view key, const FetchContext& context,
             FetchDone done) override {
    absl::StatusOr<std::string> rel = FileOriginPath(ns, key);
    if (!rel.ok()) {
      std::move(done)(rel.status());
      return;
    }
    std::string what = Describe(ns, key);
    if (context.cancel.cancelled()) {
      std::move(done)(
          absl::CancelledError(absl::StrCat("file origin: fetch of ", what, " cancelled")));
      return;
    }
    if (executor_->clock()->Now() >= context.deadline) {
      std::move(done)(absl::DeadlineExceededError(
          absl::StrCat("file origin: deadline passed before reading ", what)));
      return;
    }
    auto pending = std::make_shared<PendingRead>(io_, executor_, std::move(done));
    absl::StatusOr<BlockingJobId> job =
        io_->TrySchedule([pending, reader = reader_, rel = *std::move(rel), what]() mutable {
          if (pending->answered_now()) return;  // deadline or cancellation came first
          PendingRead::Answer(pending, reader->Read(rel, what), PendingRead::By::kRead);
        });
    if (!job.ok()) {
      FetchDone back;
      {
        absl::MutexLock l(&pending->mu);
        back = std::move(pending->done);
      }
      std::move(back)(absl::ResourceExhaustedError(absl::StrCat(
          "file origin: ", io_->max_queued(),
          " reads already wait for the disk (origin.file.max_queued_reads); not reading ", what)));
      return;
    }
    {
      absl::MutexLock l(&pending->mu);
      pending->job = *job;
    }
    if (context.deadline != absl::InfiniteFuture()) {
      const TimerId timer = executor_->ScheduleAt(context.deadline, [pending, what] {
        PendingRead::Answer(pending,
                            absl::DeadlineExceededError(absl::StrCat(
                                "file origin: no answer from the disk in time for ", what)),
                            PendingRead::By::kTimer);
      });
      bool answered;
      {
        absl::MutexLock l(&pending->mu);
        answered = pending->answered;
        if (!answered) pending->timer = timer;
      }
      if (answered) executor_->CancelTimer(timer);
    }
    if (context.cancel.can_be_cancelled()) {
      // Runs on the cancelling thread, which must not be held up: the answer
      // goes through the executor.
      auto on_cancel = std::make_unique<CancellationCallback>(
          context.cancel, [pending, what, executor = executor_] {
            executor->Schedule([pending, what] {
              PendingRead::Answer(
                  pending,
                  absl::CancelledError(absl::StrCat("file origin: fetch of ", what, " cancelled")),
                  PendingRead::By::kCancel);
            });
          });
      absl::MutexLock l(&pending->mu);
      if (!pending->answered) pending->on_cancel = std::move(on_cancel);
      // else: destroyed here, after the answer; its callback only schedules.
    }
  }

 private:
  const FileOriginOptions options_;
  const std::shared_ptr<const FileReader> reader_;
  BlockingPool* const io_;
  Executor* const executor_;
};

}  // namespace

absl::StatusOr<FileSymlinks> ParseFileSymlinks(absl::string_view text) {
  if (text == "within_root") return FileSymlinks::kWithinRoot;
  if (text == "deny") return FileSymlinks::kDeny;
  return absl::InvalidArgumentError(
      absl::StrCat("origin.file.symlinks: \"", text, "\" is not one of within_root, deny"));
}

absl::StatusOr<std::string> FileOriginPath(absl::string_view ns, absl::string_view key) {
  const std::string what = Describe(ns, key);
  if (key.empty()) return absl::InvalidArgumentError("key is empty");
  if (key.find('\0') != absl::string_view::npos || ns.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, " must not contain a NUL byte"));
  }
  if (key.front() == '/') {
    return absl::InvalidArgumentError(absl::StrCat(what, " must not start with '/'"));
  }
  RETURN_IF_ERROR(CheckSegments(what, key));
  std::string rel;
  if (ns.empty()) {
    const absl::string_view first = key.substr(0, key.find('/'));
    if (first == kNamespaceFolder) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": the folder \"", kNamespaceFolder,
          "\" holds the namespaces; name the namespace in the namespace field instead"));
    }
    rel = std::string(key);
  } else {
    if (ns.find('/') != absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("namespace \"", ns, "\" must be a single path segment (no '/')"));
    }
    RETURN_IF_ERROR(CheckSegments(absl::StrCat("namespace \"", ns, "\""), ns));
    rel = absl::StrCat(kNamespaceFolder, "/", ns, "/", key);
  }
  if (rel.size() > kMaxPathBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": its path of ", rel.size(),
                                                   " bytes is over the file system's limit of ",
                                                   kMaxPathBytes));
  }
  return rel;
}

absl::StatusOr<std::unique_ptr<Origin>> NewFileOrigin(const FileOriginOptions& options,
                                                      BlockingPool* io, Executor* executor) {
  struct stat st;
  if (options.root.empty() || ::stat(options.root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("origin.file.root: \"", options.root, "\" is not a directory"));
  }
  const bool openat2 = options.use_openat2 && Openat2Works(options.root);
  return std::make_unique<FileOrigin>(options, std::make_shared<const FileReader>(options, openat2),
                                      io, executor);
}

}  // namespace fanout::cache
