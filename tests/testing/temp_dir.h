// A fresh directory under the system's temporary directory, removed with
// everything in it on destruction.
#ifndef FANOUT_TESTS_TESTING_TEMP_DIR_H_
#define FANOUT_TESTS_TESTING_TEMP_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

namespace fanout::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& name = "fanout_test") {
    std::string pattern = (std::filesystem::temp_directory_path() / (name + "_XXXXXX")).string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Writes `content` to `path`, creating its directories.
inline void WriteFile(const std::filesystem::path& path, const std::string& content) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
}

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_TEMP_DIR_H_
