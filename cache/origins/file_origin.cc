#include "cache/origins/file_origin.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fanout::cache {
namespace {

absl::Status ValidatePath(absl::string_view what, absl::string_view path, bool allow_empty) {
  if (path.empty()) {
    return allow_empty ? absl::OkStatus()
                       : absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  }
  if (path.front() == '/') {
    return absl::InvalidArgumentError(absl::StrCat(what, " must not start with '/'"));
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " \"", path, "\" has an empty, '.' or '..' path segment"));
    }
  }
  return absl::OkStatus();
}

class FileOrigin final : public Origin {
 public:
  FileOrigin(FileOriginOptions options, Executor* executor)
      : options_(std::move(options)), executor_(executor) {}

  void Fetch(absl::string_view ns, absl::string_view key, const FetchContext& context,
             FetchDone done) override {
    absl::Status valid = ValidatePath("key", key, /*allow_empty=*/false);
    if (valid.ok() && options_.namespace_subdirs) {
      valid = ValidatePath("namespace", ns, /*allow_empty=*/true);
    }
    if (!valid.ok()) {
      std::move(done)(valid);
      return;
    }
    std::string path = options_.namespace_subdirs && !ns.empty()
                           ? absl::StrCat(options_.root, "/", ns, "/", key)
                           : absl::StrCat(options_.root, "/", key);
    executor_->Schedule(
        [this, path = std::move(path), cancel = context.cancel, done = std::move(done)]() mutable {
          if (cancel.cancelled()) {
            std::move(done)(absl::CancelledError("file origin: fetch cancelled"));
            return;
          }
          std::move(done)(Read(path));
        });
  }

 private:
  absl::StatusOr<OriginValue> Read(const std::string& path) const {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) return absl::NotFoundError("no such key");
      return absl::UnavailableError(absl::StrCat("file origin: ", std::strerror(errno)));
    }
    if (!S_ISREG(st.st_mode)) return absl::NotFoundError("no such key");
    if (static_cast<uint64_t>(st.st_size) > options_.max_value_bytes) {
      return absl::FailedPreconditionError(
          absl::StrCat("value is ", st.st_size, " bytes, over the limit of ",
                       options_.max_value_bytes, " (limits.max_value_bytes)"));
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::UnavailableError("file origin: cannot open the file");
    std::ostringstream buf;
    buf << in.rdbuf();
    OriginValue v;
    v.value = std::move(buf).str();
    // The modification time is the version: it changes whenever the file does.
    v.version = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    return v;
  }

  const FileOriginOptions options_;
  Executor* const executor_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Origin>> NewFileOrigin(const FileOriginOptions& options,
                                                      Executor* executor) {
  struct stat st;
  if (options.root.empty() || ::stat(options.root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("origin.file.root: \"", options.root, "\" is not a directory"));
  }
  return std::make_unique<FileOrigin>(options, executor);
}

}  // namespace fanout::cache
