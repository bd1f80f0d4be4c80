// A RocksDB file system with fault knobs, for the survival tier's tests: a
// full disk (writes fail with NoSpace, or only the WAL's), a WAL that fails
// with an I/O error, a directory the process may not write (every
// write-side call fails), a disk that hangs (reads or writes held at a gate,
// or only the table files created after a point, which holds a flush or a
// compaction in RocksDB's background), and a record of the threads that
// read table files.
//
//   auto faults = std::make_shared<FaultFs>();
//   std::unique_ptr<rocksdb::Env> env = faults->NewEnv();
//   options.env = env.get();
//   faults->no_space = true;
//
// Thread-safe.
#ifndef FANOUT_TESTS_CACHE_TIERS_ROCKSDB_FAULT_ENV_H_
#define FANOUT_TESTS_CACHE_TIERS_ROCKSDB_FAULT_ENV_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"

namespace fanout::testing {

// Holds threads while closed. Thread-safe.
class Gate {
 public:
  void Close() {
    absl::MutexLock l(&mu_);
    open_ = false;
  }
  void Open() {
    absl::MutexLock l(&mu_);
    open_ = true;
  }
  void Pass() {
    absl::MutexLock l(&mu_);
    if (open_) return;
    ++waiting_;
    mu_.Await(absl::Condition(&open_));
    --waiting_;
  }
  // Waits (bounded) until at least `n` threads are held. True if they are.
  bool WaitForHeld(int n, absl::Duration timeout = absl::Seconds(20)) {
    absl::MutexLock l(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return waiting_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }

 private:
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = true;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
};

class FaultFs final : public rocksdb::FileSystemWrapper {
 public:
  FaultFs() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "FaultFs"; }

  // An Env whose files go through this file system (threads: the default's).
  std::unique_ptr<rocksdb::Env> NewEnv() { return rocksdb::NewCompositeEnv(Self()); }

  // Knobs.
  std::atomic<bool> no_space{false};      // appends fail with NoSpace
  std::atomic<bool> wal_no_space{false};  // appends to WAL files (*.log) fail with NoSpace
  std::atomic<bool> wal_io_error{false};  // appends to WAL files fail with an I/O error (EIO)
  std::atomic<bool> read_only{false};     // creating, renaming, locking files fail (EACCES)
  Gate write_gate;                        // appends wait here (but those to the info LOG)
  Gate read_gate;                         // table reads wait here
  // Table files (*.sst) created after the next `n` wait here on their first
  // append (a flush or a compaction held in RocksDB's background).
  Gate sst_gate;
  void HoldTableFilesAfter(int n) { sst_passes_.store(n); }

  // Records which threads read table files, while on.
  void RecordReaders(bool on) {
    absl::MutexLock l(&mu_);
    recording_ = on;
    if (on) readers_.clear();
  }
  bool ReadOnThread(std::thread::id id) const {
    absl::MutexLock l(&mu_);
    return readers_.contains(id);
  }
  int table_reads() const { return table_reads_.load(); }

  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* d) override {
    if (read_only) return Denied(f);
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = target()->NewWritableFile(f, o, &file, d);
    if (s.ok()) *r = std::make_unique<Writable>(std::move(file), this, KindOf(f));
    return s;
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* d) override {
    if (read_only) return Denied(f);
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = target()->ReopenWritableFile(f, o, &file, d);
    if (s.ok()) *r = std::make_unique<Writable>(std::move(file), this, KindOf(f));
    return s;
  }
  rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                                      const rocksdb::FileOptions& o,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      rocksdb::IODebugContext* d) override {
    if (read_only) return Denied(f);
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = target()->ReuseWritableFile(f, old, o, &file, d);
    if (s.ok()) *r = std::make_unique<Writable>(std::move(file), this, KindOf(f));
    return s;
  }
  rocksdb::IOStatus NewRandomRWFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* r,
                                    rocksdb::IODebugContext* d) override {
    if (read_only) return Denied(f);
    return target()->NewRandomRWFile(f, o, r, d);
  }
  rocksdb::IOStatus NewRandomAccessFile(const std::string& f, const rocksdb::FileOptions& o,
                                        std::unique_ptr<rocksdb::FSRandomAccessFile>* r,
                                        rocksdb::IODebugContext* d) override {
    std::unique_ptr<rocksdb::FSRandomAccessFile> file;
    rocksdb::IOStatus s = target()->NewRandomAccessFile(f, o, &file, d);
    if (s.ok()) *r = std::make_unique<RandomAccess>(std::move(file), this);
    return s;
  }
  rocksdb::IOStatus CreateDir(const std::string& d, const rocksdb::IOOptions& o,
                              rocksdb::IODebugContext* g) override {
    if (read_only) return Denied(d);
    return target()->CreateDir(d, o, g);
  }
  rocksdb::IOStatus CreateDirIfMissing(const std::string& d, const rocksdb::IOOptions& o,
                                       rocksdb::IODebugContext* g) override {
    // As on a read-only mount: an existing directory is fine, a new one is not.
    bool is_dir = false;
    if (read_only && !(target()->IsDirectory(d, o, &is_dir, g).ok() && is_dir)) return Denied(d);
    return target()->CreateDirIfMissing(d, o, g);
  }
  rocksdb::IOStatus RenameFile(const std::string& s, const std::string& t,
                               const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
    if (read_only) return Denied(t);
    return target()->RenameFile(s, t, o, d);
  }
  rocksdb::IOStatus DeleteFile(const std::string& f, const rocksdb::IOOptions& o,
                               rocksdb::IODebugContext* d) override {
    if (read_only) return Denied(f);
    return target()->DeleteFile(f, o, d);
  }
  rocksdb::IOStatus LockFile(const std::string& f, const rocksdb::IOOptions& o,
                             rocksdb::FileLock** l, rocksdb::IODebugContext* d) override {
    if (read_only) return Denied(f);
    return target()->LockFile(f, o, l, d);
  }

 private:
  // The info LOG is written by whichever thread logs (RocksDB's background
  // threads too): holding it would hold threads a test does not mean to.
  enum class Kind { kOther, kInfoLog, kWal, kTable, kHeldTable };
  Kind KindOf(const std::string& f) {
    auto ends_with = [&f](absl::string_view suffix) {
      return f.size() >= suffix.size() &&
             f.compare(f.size() - suffix.size(), suffix.size(), suffix.data(), suffix.size()) == 0;
    };
    if (ends_with("/LOG") || ends_with("/LOG.old")) return Kind::kInfoLog;
    if (ends_with(".log")) return Kind::kWal;
    if (!ends_with(".sst")) return Kind::kOther;
    const int left = sst_passes_.load();
    if (left < 0) return Kind::kTable;
    return sst_passes_.fetch_sub(1) > 0 ? Kind::kTable : Kind::kHeldTable;
  }
  static rocksdb::IOStatus Denied(const std::string& f) {
    return rocksdb::IOStatus::IOError("While opening " + f, "Permission denied");
  }
  std::shared_ptr<rocksdb::FileSystem> Self() {
    // The Env shares ownership with whoever made this FaultFs.
    return std::shared_ptr<rocksdb::FileSystem>(std::shared_ptr<rocksdb::FileSystem>{}, this);
  }
  void NoteRead() {
    table_reads_.fetch_add(1);
    absl::MutexLock l(&mu_);
    if (recording_) readers_.insert(std::this_thread::get_id());
  }

  class Writable final : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    Writable(std::unique_ptr<rocksdb::FSWritableFile> f, FaultFs* fs, Kind kind)
        : FSWritableFileOwnerWrapper(std::move(f)), fs_(fs), kind_(kind) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* d) override {
      rocksdb::IOStatus s = Check();
      return s.ok() ? FSWritableFileOwnerWrapper::Append(data, o, d) : s;
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                             const rocksdb::DataVerificationInfo& v,
                             rocksdb::IODebugContext* d) override {
      rocksdb::IOStatus s = Check();
      return s.ok() ? FSWritableFileOwnerWrapper::Append(data, o, v, d) : s;
    }

   private:
    rocksdb::IOStatus Check() {
      if (kind_ != Kind::kInfoLog) fs_->write_gate.Pass();
      if (kind_ == Kind::kHeldTable) fs_->sst_gate.Pass();
      if (fs_->no_space || (kind_ == Kind::kWal && fs_->wal_no_space)) {
        return rocksdb::IOStatus::NoSpace("FaultFs: no space left on device");
      }
      if (kind_ == Kind::kWal && fs_->wal_io_error) {
        return rocksdb::IOStatus::IOError("FaultFs: input/output error");
      }
      return rocksdb::IOStatus::OK();
    }

    FaultFs* const fs_;
    const Kind kind_;
  };

  class RandomAccess final : public rocksdb::FSRandomAccessFileOwnerWrapper {
   public:
    RandomAccess(std::unique_ptr<rocksdb::FSRandomAccessFile> f, FaultFs* fs)
        : FSRandomAccessFileOwnerWrapper(std::move(f)), fs_(fs) {}
    rocksdb::IOStatus Read(uint64_t offset, size_t n, const rocksdb::IOOptions& o,
                           rocksdb::Slice* result, char* scratch,
                           rocksdb::IODebugContext* d) const override {
      fs_->NoteRead();
      fs_->read_gate.Pass();
      return FSRandomAccessFileOwnerWrapper::Read(offset, n, o, result, scratch, d);
    }
    rocksdb::IOStatus MultiRead(rocksdb::FSReadRequest* reqs, size_t n, const rocksdb::IOOptions& o,
                                rocksdb::IODebugContext* d) override {
      fs_->NoteRead();
      fs_->read_gate.Pass();
      return FSRandomAccessFileOwnerWrapper::MultiRead(reqs, n, o, d);
    }

   private:
    FaultFs* const fs_;
  };

  mutable absl::Mutex mu_;
  bool recording_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<std::thread::id> readers_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> table_reads_{0};
  std::atomic<int> sst_passes_{-1};  // < 0: no table file is held
};

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_CACHE_TIERS_ROCKSDB_FAULT_ENV_H_
