// Tailer::Impl: the tailer's state and its three parts, internal to tail/.
//   tailer.cpp      the readers' life (start, park, close_inactive), events, run/stop
//   scan.cpp        discovery: globs expanded, files matched by identity, new files added
//   checkpoints.cpp the outbox's checkpoints: loaded at start, released only on evidence
// Everything here runs on Impl::strand unless a member says otherwise.
#pragma once

#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <atomic>
#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "outbox/outbox.hpp"
#include "tail/file_reader.hpp"
#include "tail/glob.hpp"
#include "tail/tailer.hpp"

namespace tailbox::tail {

namespace asio = boost::asio;
using outbox::TrackedFile;
using std::chrono::milliseconds;
using Key = std::pair<uint64_t, uint64_t>;   // (dev, inode)

bool is_gz(const std::string& path);
// Whether `source` reads `path` when a glob names it.
bool wanted(const config::SourceConfig& source, const std::string& path);

struct Tailer::Impl : std::enable_shared_from_this<Tailer::Impl> {
  // A file found by a glob but not followed: ignore_older, or a .gz read and
  // released. Looked at again only when its size or mtime change.
  struct Skipped {
    enum class Why { older, released } why;
    FileIdentity identity;
    int64_t size = -1, mtime_ms = -1;   // as last looked at; -1: not yet
    int64_t resume = 0;                 // older: follow from here once written to
  };
  asio::any_io_executor executor;
  asio::strand<asio::any_io_executor> strand;
  const config::Config& cfg;
  std::shared_ptr<ReaderEnv> env;
  std::shared_ptr<Watcher> watcher;
  std::map<std::string, std::shared_ptr<const StartPattern>> patterns;   // by source name
  std::atomic<int> running_readers{0};
  std::vector<std::shared_ptr<Reader>> readers;   // changed on the strand only,
  mutable std::mutex readers_mu;                  // under this lock (files() reads it)
  // The rest is used on the strand only.
  std::map<std::string, std::shared_ptr<Reader>> by_path;   // readers by current path
  // Checkpointed files not followed yet: from the outbox at start, until a
  // scan finds them (resumed) or there is evidence that they are gone
  // (released). A file that merely could not be opened, or whose file system
  // is not mounted yet, stays here and is looked for again.
  std::multimap<Key, TrackedFile> known;
  std::set<int64_t> known_warned;          // ids told about as not found
  bool fresh_outbox = true;                 // the outbox had never tracked a file at start
  bool retry_soon = false;                  // a file could not be opened: scan again soon
  milliseconds retry_every{1000};           // how soon, backing off
  std::set<std::string> open_warned;        // paths whose open failure was logged
  int64_t out_of_fds = 0, out_of_fds_told = 0;   // EMFILE/ENFILE opens this scan, last told
  std::string out_of_fds_example;
  bool listing_incomplete = false;          // a directory could not be listed this scan
  std::map<Key, std::shared_ptr<Reader>> by_inode;   // followed files, during a scan
  bool first_scan = true;
  std::map<Key, Skipped> skipped;
  asio::steady_timer scan_timer{strand};
  asio::steady_timer close_timer{strand};
  // Told (on the strand) when the last reader ended after a stop: run() waits
  // on it before it returns.
  asio::experimental::channel<void(boost::system::error_code)> readers_ended{strand, 1};
  static constexpr size_t kStrands = 64;
  static constexpr int64_t kFdReserve = 24;
  int64_t fd_budget = INT64_MAX;   // followed files open at most (the open files limit less kFdReserve)
  std::vector<asio::strand<asio::any_io_executor>> strands;
  size_t next_strand = 0;
  // Starting thousands of readers at once would hold all their first reads and
  // outbox appends in memory together (the RSS peak at start-up): a reader
  // starts once fewer than kStartingMax run, waiting at most kStartBudget per
  // scan in all (busy files never park).
  static constexpr int64_t kStartingMax = 64;
  static constexpr milliseconds kStartBudget{2000};
  milliseconds start_budget = kStartBudget;
  asio::steady_timer start_timer{strand};
  bool scan_requested = false;
  int64_t new_this_scan = 0;
  // New files found by this scan, opened, waiting to be added to the outbox
  // in one transaction (one sync for many files, not one each).
  struct NewFile {
    std::shared_ptr<Reader> reader;   // owns the descriptor
    outbox::Outbox::NewFile row;
  };
  std::vector<NewFile> new_files;
  std::set<Key> new_keys;
  static constexpr size_t kNewBatch = 1000;
  static constexpr int64_t kAnnounced = 20;
  std::set<std::string> globs_seen;          // "source\nglob" expanded once: an empty one was warned
  Impl(asio::any_io_executor ex, const config::Config& c, outbox::AsyncOutbox& o);

  const config::SourceConfig* source_named(const std::string& name) const {
    for (const auto& s : cfg.sources)
      if (s.name == name) return &s;
    return nullptr;
  }

  static asio::awaitable<void> wait(asio::steady_timer& timer, milliseconds d) {
    timer.expires_after(d);
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  // ---- readers ----
  std::shared_ptr<Reader> make_reader(const config::SourceConfig& source, int fd);

  void add_reader(std::shared_ptr<Reader> r);

  // Starts r's coroutine: when it is added, and again each time it is woken
  // after it parked. Counted once, from add_reader until it is done.
  void spawn(const std::shared_ptr<Reader>& r);
  // A reader is followed no more: its coroutine ended for good, or none will
  // run for it (stopping). From any thread.
  void reader_ended();
  asio::awaitable<void> throttle_start();

  // Closes the files of parked readers quiet for close_inactive. Readers that
  // do not park (polling) close their files themselves.
  asio::awaitable<void> close_inactive();

  void wake_all() {
    std::lock_guard lock(readers_mu);
    for (auto& r : readers) r->wake();
  }

  // ---- events ----
  bool matches_a_glob(const std::string& path) const;

  void request_scan() {
    if (scan_requested) return;
    scan_requested = true;
    scan_timer.cancel();
  }

  // On the strand. A write wakes its file's reader; a name that appears or
  // goes, or a directory change, wakes discovery.
  void on_events(std::span<const Watcher::Event> events);

  // ---- discovery ----

  // Expands every glob once and matches what it finds against followed files.
  asio::awaitable<void> scan();

  // Why a checkpointed file that no scan found may still be there: "" when
  // there is evidence that it is gone (deleted, or moved out of the globs).
  static std::string still_there(const TrackedFile& f);

  // After each scan: releases the checkpointed files that are gone for sure;
  // the others wait for a later scan (their positions are kept).
  asio::awaitable<void> settle_known(const std::set<Key>& seen, const std::set<int64_t>& replaced,
                                     bool may_release);

  // Records a followed file's new name in the outbox (a failure is logged: the
  // next start finds the file by its identity).
  asio::awaitable<void> record_path(int64_t fid, const std::string& path);

  // A followed file found under `path`: renamed (rotation) or just there.
  // (Coroutine arguments and co_await operands are references or trivially
  // destructible values: GCC 12 may destroy other temporaries there twice.)
  asio::awaitable<void> follow(const std::shared_ptr<Reader>& r, const FoundFile& found);

  // A file no reader follows: resume its checkpoint, skip it, or follow it as new.
  // What is matched is the identity of the descriptor opened, never the
  // listing's (logrotate may rename between the two).
  asio::awaitable<void> discover(const config::SourceConfig& source, const std::string& path,
                                 int64_t now, std::set<int64_t>& replaced);

  // Adds the new files found so far to the outbox, then starts their readers:
  // a file's row is durable before any of its lines can be stored.
  asio::awaitable<void> add_new_files();

  // The checkpoints of files tracked before this start. Throws when the
  // outbox cannot be read (the relay then stops: reading without them would
  // read every file again under new uids).
  asio::awaitable<void> load_checkpoints();
  asio::awaitable<void> run();

  void stop();
};

}  // namespace tailbox::tail
