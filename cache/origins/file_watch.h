// The file origin's push of changes: watches origin.file.root with inotify
// and reports the keys whose files changed, appeared or went away.
//
// Every burst of events (debounced) leads to a rescan of the tree, compared
// with the last one file by file (device, inode, size, modification and
// change times), so that every way a file gets replaced is seen the same
// way: an edit in place, an editor's write-and-rename, a new symlink, a
// ConfigMap update (the `..data` symlink swapped in one rename, which
// changes the file behind every key at once), a root that is a symlink
// re-pointed (git-sync). The scan follows the rules reads follow (names
// starting with '.' are not keys; symlinks only within the root, or none),
// and watches every directory it walks, also the ones reached through a
// symlink.
//
// What is not a change: a root that cannot be opened (deleted, unmounted,
// no permission) is an origin failure, as it is for reads: nothing is
// reported while it is missing, and when it is back the tree is compared
// with the last scan before it went. A directory that cannot be read keeps
// its keys as they were. A tree of more than `max_files` files is not
// watched at all (an ERROR is logged; changes wait for the ttl).
#ifndef FANOUT_CACHE_ORIGINS_FILE_WATCH_H_
#define FANOUT_CACHE_ORIGINS_FILE_WATCH_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cache/origin.h"
#include "cache/origins/file_origin.h"

namespace fanout::cache {

struct FileWatchOptions {
  std::string root;
  FileSymlinks symlinks = FileSymlinks::kWithinRoot;
  bool use_openat2 = true;
  // A rescan runs once events have been quiet for `debounce`, at most
  // `max_delay` after the first event of a burst.
  absl::Duration debounce = absl::Milliseconds(50);
  absl::Duration max_delay = absl::Milliseconds(500);
  // While the root cannot be opened, it is tried again this often.
  absl::Duration root_retry = absl::Seconds(1);
  size_t max_files = 100000;
  // Called on the watch's thread after each rescan, with whether the root
  // could be opened. Optional.
  std::function<void(bool root_found)> on_rescan;
};

// Scans the tree once (on the calling thread; changes from then on are
// seen), then watches it on a thread of its own and calls `sink` with each
// namespace's changed keys after each rescan that found some. The watch
// ends when the returned object is destroyed. FailedPrecondition when
// inotify cannot be used (no instances or watches left), the root cannot be
// opened, or the tree has more than max_files files.
absl::StatusOr<std::unique_ptr<OriginWatch>> StartFileWatch(FileWatchOptions options,
                                                            Origin::ChangeSink sink);

}  // namespace fanout::cache

#endif  // FANOUT_CACHE_ORIGINS_FILE_WATCH_H_
