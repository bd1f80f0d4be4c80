// The survival tier (L3): a local RocksDB directory that keeps every value
// fetched from the origin, in the shared envelope (cache/tiers/envelope.h) so
// that ages stay truthful across restarts. It is what lets fanoutd answer
// (stale, flagged) through a long origin outage, after a crash and a restart.
//
// What it does with the disk:
//   - Writes are write-behind: Store() queues the entry and returns; one
//     writer thread (the tier's own, its documented job) coalesces the queue
//     into WriteBatches, letting stores gather for up to batch_linger so
//     that one WAL write carries many. The queue is bounded: on overflow the
//     oldest pending stores are dropped (done gets Unavailable, counted in
//     stores_dropped); a fill is never blocked. Erases go through the same queue, so they are
//     applied after the stores queued before them, and are never dropped.
//   - The WAL is always on. With `sync` false a batch is in the OS once
//     Write() returns: an acknowledged store survives a crash of the process
//     (kill -9), not the loss of the machine's power. `sync` true fsyncs the
//     WAL per batch and survives power loss too, at a disk flush per batch.
//   - Reads: a lookup first asks RocksDB for what is in memory (memtables and
//     the block cache, ReadOptions::read_tier = kBlockCacheTier: no I/O) on
//     the caller's thread; only if that needs the disk does it go to a
//     bounded pool of reader threads. A read still queued at its deadline is
//     answered DeadlineExceeded at the deadline by the tier's deadline
//     thread, even if every reader is stuck on the disk.
//   - Housekeeping: a compaction filter drops entries past their stale_until.
//     The on-disk size is capped twice. RocksDB's SstFileManager enforces
//     max_bytes over the SST files: when a flush or a compaction leaves them
//     at or over it, RocksDB sets a hard background error,
//     `IO error: Max allowed space was reached` (Status::SpaceLimit: code
//     kIOError, subcode kSpaceLimit), every later write fails with it, and
//     compactions that would need room are refused too, so the filter cannot
//     free anything any more. To stay out of that corner the tier stops
//     writing on its own at `full_fraction` of max_bytes (SST files plus
//     memtables) and rewrites the SST files that hold expired entries (it
//     knows from a table property which ones do), resuming writes below
//     `resume_fraction`.
//
// Faults:
//   - An L3 directory RocksDB cannot open (corruption, another format,
//     garbage files, missing files) is moved aside to
//     `<path>.corrupt-<UTC time>` (or, if the directory cannot be renamed,
//     e.g. a mount point, its contents into `<path>/corrupt-<UTC time>/`),
//     logged at ERROR, and a fresh empty DB is opened: a restart never loops
//     on a bad directory. "L3 directory" means one holding the FANOUT_L3
//     marker the tier writes into an empty directory before its first open;
//     anything else at the path (a file, a non-empty directory without the
//     marker: most likely a mistyped path) is never touched, and Open fails.
//   - A write that fails (disk full, the cap, an I/O error) turns the tier
//     read-only: available=false, stores dropped and counted, logged once per
//     episode, lookups keep working. Every `retry_interval` the writer
//     probes with a tiny write and goes writable again once RocksDB takes
//     it (and the size is below resume_fraction). RocksDB recovers from a
//     full disk or the cap by itself (its SstFileManager polls the free
//     space every 5 s), and from I/O errors the file system calls
//     retryable; it cannot from a failed WAL or flush write otherwise (a
//     fatal error: the tier stays read-only until a restart reopens the DB,
//     and says so). Only for other errors does the writer call
//     DB::Resume(), and only while RocksDB refuses writes: Resume() first
//     waits for every background job, and on a nearly full disk a compaction
//     without room is retried every second for as long as the disk stays
//     full (RocksDB 7.8 also keeps a recovered DB marked stopped, so Resume()
//     does not see that there is nothing to do) - the writer would wait on
//     it for good, and so would the destructor.
//   - A directory the process cannot write to (or whose DB another process
//     holds) is opened read-only: the entries it holds still answer during an
//     outage, which is what the tier is for; nothing is written until a
//     restart. If even that fails, Open() fails and fanoutd runs without L3.
//   - Erases that cannot be written while read-only are remembered in memory
//     (bounded) and applied to lookups, so an invalidated value is never
//     served as fresh by this process; they are written when the tier is
//     writable again.
#ifndef FANOUT_CACHE_TIERS_ROCKSDB_ROCKSDB_TIER_H_
#define FANOUT_CACHE_TIERS_ROCKSDB_ROCKSDB_TIER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cache/tier.h"
#include "common/clock.h"

namespace rocksdb {
class DB;
class Env;
class Cache;
class CompactionFilter;
class SstFileManager;
class Status;
}  // namespace rocksdb

namespace fanout::cache {

struct RocksDbTierOptions {
  // The DB directory; created (with its parents) if missing.
  std::string path;
  // Cap on the SST files, enforced by RocksDB's SstFileManager. The WAL and
  // the memtables add up to about 4 × the write buffer (max_bytes / 64,
  // 256 KiB to 64 MiB) on top; RocksDB's LOG is kept under 2 MiB (LOG and
  // LOG.old; a line that cannot be written is dropped and counted).
  uint64_t max_bytes = 1ull << 30;
  // fsync the WAL on every batch (survives power loss, not only crashes).
  bool sync = false;

  // Write-behind queue: stores waiting for the writer, by count and bytes.
  size_t max_pending_writes = 16384;
  uint64_t max_pending_bytes = 64ull << 20;
  // Most stores in one WriteBatch, and how long the writer lets stores
  // gather before writing fewer (group commit: one WAL write, no wake-up of
  // the writer per store). Only stores wait; erases and Flush() do not.
  size_t max_batch = 512;
  absl::Duration batch_linger = absl::Milliseconds(1);

  // Reads that need the disk: reader threads and how many may wait for one.
  int read_threads = 2;
  size_t max_pending_reads = 4096;
  // Answer lookups from memory (memtables, block cache) on the caller's
  // thread. Off: every lookup goes through the reader pool.
  bool inline_cached_reads = true;
  uint64_t block_cache_bytes = 32ull << 20;

  // Stop writing at this fraction of max_bytes, resume below the second.
  double full_fraction = 0.9;
  double resume_fraction = 0.8;
  // While read-only after a write failure or full: how often to retry.
  absl::Duration retry_interval = absl::Seconds(30);

  // The clock entry times are judged by (stale_until, supersede, the
  // compaction filter). Not owned; must outlive the tier. Null = the real
  // clock. Deadlines are always real time.
  Clock* clock = nullptr;
  // The RocksDB environment (file system and threads), for fault injection
  // in tests. Not owned; must outlive the tier. Null = rocksdb::Env::Default().
  rocksdb::Env* env = nullptr;
};

// What a tier instance is doing, beyond TierStats.
struct RocksDbTierState {
  bool opened_read_only = false;   // the directory could not be written at Open
  bool read_only = false;          // not writing now (opened so, write failure, full)
  std::string read_only_reason;    // why, when read_only
  std::string moved_aside;         // where Open moved an unopenable directory, if it did
  uint64_t sst_bytes = 0;          // SST bytes as the SstFileManager counts them
  uint64_t remembered_erases = 0;  // erases held in memory while read-only
  uint64_t log_lines_dropped = 0;  // lines of RocksDB's LOG that could not be written
};

// Thread-safe. See the file comment for the threads it owns: one writer, the
// readers, and one deadline thread; callbacks run on those threads or
// inline on the caller's thread. Destruction applies the writes still queued
// (bounded by the queue), answers queued reads Unavailable, joins its threads
// and closes the DB; no callback runs after it returns.
class RocksDbTier final : public Tier {
 public:
  // Opens (or creates) the DB at options.path, handling a bad directory as
  // described above. InvalidArgument for bad options; Unavailable when no DB
  // can be opened there at all.
  static absl::StatusOr<std::unique_ptr<RocksDbTier>> Open(const RocksDbTierOptions& options);
  ~RocksDbTier() override;

  TierId id() const override { return TierId::kL3; }
  void Lookup(absl::string_view key, absl::Time deadline, LookupDone done) override;
  void LookupMany(std::vector<std::string> keys, absl::Time deadline, LookupManyDone done) override;
  // Entries already past stale_until are not written (done gets OK).
  void Store(absl::string_view key, const Entry& entry, StoreDone done) override;
  // Applied in queue order and never dropped. If the deadline passes first,
  // done gets DeadlineExceeded then and the erase is still applied later.
  void Erase(std::vector<std::string> keys, std::string prefix, EraseMode mode, absl::Time deadline,
             EraseDone done) override;
  TierStats Stats() const override;

  RocksDbTierState State() const;

  // Calls `visit` with every entry not past stale_until, in key order, on the
  // caller's thread, until it returns false or `deadline` passes
  // (DeadlineExceeded). Reads the disk: for start-up (warming L1), never on
  // a gRPC thread.
  absl::Status ForEach(absl::FunctionRef<bool(absl::string_view key, const Entry& entry)> visit,
                       absl::Time deadline) const;

  // Blocks until the writes queued before the call are applied and the
  // memtables are flushed to SST files. For tests and benchmarks.
  absl::Status Flush();
  // Blocks while RocksDB compacts everything (running the compaction filter).
  absl::Status CompactAll();

  // The DB itself, for benchmarks that hold the tier against RocksDB alone
  // (same options, block cache and data). Reads only: it bypasses the tier.
  rocksdb::DB* db_for_benchmarks() const { return db_.get(); }

 private:
  struct Counters;
  struct ReadRequest;
  struct WriteOp;
  struct EraseCall;
  class DeadlineThread;
  class ExpiryFilter;
  // An erase remembered in memory while it cannot be written.
  struct RememberedErase {
    EraseMode mode;
    absl::Time at;
  };
  // An erase queued and not yet applied by the writer (see pending_keys_).
  struct PendingErase {
    EraseMode mode;
    absl::Time at;
    int queued = 0;
  };
  enum class ReadOnlyCause { kNone, kOpenedReadOnly, kWriteFailed, kFull };

  explicit RocksDbTier(const RocksDbTierOptions& options);
  absl::Status OpenDb();

  // Reads.
  // The answer to a read of `key` that RocksDB answered with `status`.
  // `before`: the erases pending for the key when the read started (one
  // applied while it read is not pending any more, but the read may have
  // seen the value from before it).
  absl::StatusOr<Entry> Finish(absl::string_view key, const rocksdb::Status& status,
                               absl::string_view value, const std::optional<PendingErase>& before);
  void Enqueue(std::shared_ptr<ReadRequest> request);
  void ReaderLoop();
  void Serve(ReadRequest& request);

  // Writes.
  void WriterLoop();
  void ApplyPuts(std::vector<WriteOp>& ops);
  void ApplyErase(WriteOp& op);
  // Erases (or, with dry_run, only counts) what keys and prefix match.
  absl::Status WriteErase(const std::vector<std::string>& keys, const std::string& prefix,
                          EraseMode mode, bool dry_run, uint64_t* count);
  void EnterReadOnly(ReadOnlyCause cause, const std::string& reason);
  // A write of nothing the tier keeps, that never waits on a write stall.
  rocksdb::Status ProbeWrite();
  // Whether a write that failed with `s` needs DB::Resume() to be retried.
  static bool NeedsResume(const rocksdb::Status& s);
  void LeaveReadOnly();
  void Maintain();
  bool OverFull(double fraction);
  void SweepExpiredFiles();
  // Writes the remembered erases; true when none is left unwritten.
  bool ReplayRememberedErases();

  // Remembered erases.
  void Remember(const std::vector<std::string>& keys, const std::string& prefix, EraseMode mode);
  // False when `key` was erased (kRemove) while read-only; supersedes *entry
  // when it was superseded.
  bool ApplyRemembered(absl::string_view key, Entry* entry) const;

  const RocksDbTierOptions options_;
  Clock* const clock_;
  const std::shared_ptr<Counters> counters_;
  std::unique_ptr<ExpiryFilter> filter_;
  std::shared_ptr<rocksdb::Cache> block_cache_;
  std::shared_ptr<rocksdb::SstFileManager> sst_files_;
  std::unique_ptr<rocksdb::DB> db_;
  bool opened_read_only_ = false;
  std::string moved_aside_;
  std::unique_ptr<DeadlineThread> deadlines_;

  // Writes. The writer thread waits on mu_ for work.
  mutable absl::Mutex mu_;
  std::deque<WriteOp> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_puts_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  ReadOnlyCause cause_ ABSL_GUARDED_BY(mu_) = ReadOnlyCause::kNone;
  std::string reason_ ABSL_GUARDED_BY(mu_);
  absl::Time last_read_only_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // When the writer next retries (while read-only for a reason it may clear).
  absl::Time next_retry_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  std::atomic<bool> writable_{true};
  std::thread writer_;

  // Reads that need the disk.
  absl::Mutex read_mu_;
  std::deque<std::shared_ptr<ReadRequest>> reads_ ABSL_GUARDED_BY(read_mu_);
  bool readers_stopping_ ABSL_GUARDED_BY(read_mu_) = false;
  std::vector<std::thread> readers_;

  // Erases remembered while read-only.
  mutable absl::Mutex remembered_mu_;
  absl::flat_hash_map<std::string, RememberedErase> remembered_keys_
      ABSL_GUARDED_BY(remembered_mu_);
  absl::btree_map<std::string, RememberedErase> remembered_prefixes_
      ABSL_GUARDED_BY(remembered_mu_);
  // Set when more erases were remembered than fit: every entry fetched
  // before it is served as superseded (stale-only) by this process.
  absl::Time superseded_before_ ABSL_GUARDED_BY(remembered_mu_) = absl::InfinitePast();
  std::atomic<bool> any_remembered_{false};

  // Erases queued and not yet applied by the writer, by key and by prefix,
  // with how many of each are queued. Lookups apply them meanwhile, so that
  // a read after an invalidation erased L1, but before the writer reached
  // its L3 erase, does not find the old value fresh and put it back in L1.
  void AddPending(const std::vector<std::string>& keys, const std::string& prefix, EraseMode mode);
  void RemovePending(const std::vector<std::string>& keys, const std::string& prefix);
  // The erases pending for `key`, merged; nullopt when none.
  std::optional<PendingErase> PendingFor(absl::string_view key) const;
  // False when `before` or an erase pending now removes `entry`; supersedes
  // it when one supersedes it.
  bool ApplyPending(absl::string_view key, const std::optional<PendingErase>& before,
                    Entry* entry) const;
  mutable absl::Mutex pending_mu_;
  absl::flat_hash_map<std::string, PendingErase> pending_keys_ ABSL_GUARDED_BY(pending_mu_);
  absl::btree_map<std::string, PendingErase> pending_prefixes_ ABSL_GUARDED_BY(pending_mu_);
  std::atomic<int64_t> pending_erases_{0};
};

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_TIERS_ROCKSDB_ROCKSDB_TIER_H_
