// Watcher: tells the tailer that something changed in the directories its globs
// read, so that discovery and readers run when there is something to do
// instead of polling every file all the time.
//
// Two implementations: inotify (one watch per directory, not per file: events
// name the file, so 10,000 files in one directory cost one watch) and poll,
// which reports nothing and covers nothing: the tailer then polls, as it does
// for any directory inotify cannot watch. Events are hints, never trusted
// alone: a reader still looks at its file, and everything is re-checked every
// [tail] recheck_interval in case an event was missed (queue overflow, network
// file systems, changes made through another mount).
//
// Thread-safety: start(), watch() and stop() are called on the executor given
// to the factory (the tailer's strand), and the handler runs there too.
// covers() may be called from any thread.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <functional>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>

namespace tailbox::tail {

class Watcher {
 public:
  enum class Change {
    modified,    // a file's content changed (written, truncated)
    created,     // a name appeared (created, moved in)
    removed,     // a name went away (deleted, moved out)
    directory,   // a subdirectory appeared or went, or a watched directory itself did
    overflow,    // events were lost: look at everything
  };
  struct Event {
    Change change;
    std::string path;   // "<watched dir>/<name>"; the directory for `directory`; "" for overflow
  };
  using Handler = std::function<void(std::span<const Event>)>;

  virtual ~Watcher() = default;
  virtual std::string_view kind() const = 0;   // "inotify" or "poll"

  // Starts reporting events to `handler`.
  virtual void start(Handler handler) = 0;
  // Watches exactly `dirs` from now on: adds the new ones, drops the others.
  // A directory that cannot be watched is logged once and left uncovered.
  virtual void watch(const std::set<std::string>& dirs) = 0;
  // Whether changes of the files directly in `dir` are reported.
  virtual bool covers(const std::string& dir) const = 0;
  // Stops reporting and drops the handler; pending reads are cancelled. Idempotent.
  virtual void stop() = 0;
};

// A watcher that reports nothing: the tailer polls.
std::shared_ptr<Watcher> make_poll_watcher();
// An inotify watcher whose handler runs on `executor`, or nullptr (the reason
// logged) when inotify is not available.
std::shared_ptr<Watcher> make_inotify_watcher(boost::asio::any_io_executor executor);

}  // namespace tailbox::tail
