#include "tail/watcher.hpp"

#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <array>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

namespace tailbox::tail {

namespace asio = boost::asio;

namespace {

class PollWatcher final : public Watcher {
 public:
  std::string_view kind() const override { return "poll"; }
  void start(Handler) override {}
  void watch(const std::set<std::string>&) override {}
  bool covers(const std::string&) const override { return false; }
  void stop() override {}
};

constexpr uint32_t kDirMask = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_MODIFY |
                              IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

class InotifyWatcher final : public Watcher,
                             public std::enable_shared_from_this<InotifyWatcher> {
 public:
  InotifyWatcher(asio::any_io_executor executor, int fd) : stream_(executor, fd) {}

  std::string_view kind() const override { return "inotify"; }

  void start(Handler handler) override {
    handler_ = std::move(handler);
    read_more();
  }

  void watch(const std::set<std::string>& dirs) override {
    for (auto it = by_dir_.begin(); it != by_dir_.end();) {
      if (dirs.count(it->first)) {
        ++it;
        continue;
      }
      inotify_rm_watch(stream_.native_handle(), it->second);
      by_wd_.erase(it->second);
      it = by_dir_.erase(it);
    }
    for (const auto& dir : dirs) {
      if (by_dir_.count(dir)) continue;
      int wd = inotify_add_watch(stream_.native_handle(), dir.c_str(), kDirMask);
      if (wd < 0) {
        int err = errno;
        if (err != ENOENT && failed_.insert(dir).second)
          spdlog::warn("cannot watch {} with inotify ({}){}: its files are polled", dir,
                       std::strerror(err),
                       err == ENOSPC ? " - raise fs.inotify.max_user_watches" : "");
        continue;
      }
      if (by_wd_.count(wd)) {
        // The same directory under another name: events come under the first
        // name only, so files named through this one are polled.
        continue;
      }
      by_wd_[wd] = dir;
      by_dir_[dir] = wd;
    }
    std::lock_guard lock(mu_);
    covered_.clear();
    for (const auto& [dir, wd] : by_dir_) covered_.insert(dir);
  }

  bool covers(const std::string& dir) const override {
    std::lock_guard lock(mu_);
    return covered_.count(dir) > 0;
  }

  void stop() override {
    stopped_ = true;
    handler_ = nullptr;   // it may hold its owner: no cycle past stop()
    boost::system::error_code ec;
    stream_.cancel(ec);
  }

 private:
  void read_more() {
    if (stopped_) return;
    stream_.async_read_some(
        asio::buffer(buf_), [self = shared_from_this()](boost::system::error_code ec, size_t n) {
          if (ec) {
            if (ec != asio::error::operation_aborted && !self->stopped_)
              spdlog::error("inotify: {}; files are polled from now on", ec.message());
            if (ec != asio::error::operation_aborted) self->lost();
            return;
          }
          self->parse(n);
          self->read_more();
        });
  }

  // inotify stopped working: nothing is covered any more; readers fall back to polling.
  void lost() {
    {
      std::lock_guard lock(mu_);
      covered_.clear();
    }
    by_dir_.clear();
    by_wd_.clear();
    if (handler_) {
      Event e{Change::overflow, ""};
      handler_(std::span<const Event>(&e, 1));
    }
  }

  void parse(size_t n) {
    events_.clear();
    size_t pos = 0;
    while (pos + sizeof(inotify_event) <= n) {
      inotify_event ev;
      std::memcpy(&ev, buf_.data() + pos, sizeof ev);
      const char* name = buf_.data() + pos + sizeof(inotify_event);
      pos += sizeof(inotify_event) + ev.len;
      if (ev.mask & IN_Q_OVERFLOW) {
        events_.push_back({Change::overflow, ""});
        continue;
      }
      auto it = by_wd_.find(ev.wd);
      if (it == by_wd_.end()) continue;
      const std::string& dir = it->second;
      if (ev.mask & IN_IGNORED) {
        // The directory is gone (or unmounted): forget the watch; a scan decides.
        events_.push_back({Change::directory, dir});
        by_dir_.erase(dir);
        by_wd_.erase(it);
        std::lock_guard lock(mu_);
        covered_.erase(dir);
        continue;
      }
      if (ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
        events_.push_back({Change::directory, dir});
        continue;
      }
      std::string path = dir == "/" ? "/" : dir + "/";
      path.append(name, strnlen(name, ev.len));
      Change change = Change::modified;
      if (ev.mask & IN_ISDIR) change = Change::directory;
      else if (ev.mask & (IN_CREATE | IN_MOVED_TO)) change = Change::created;
      else if (ev.mask & (IN_DELETE | IN_MOVED_FROM)) change = Change::removed;
      if (!events_.empty() && events_.back().change == change && events_.back().path == path)
        continue;   // a burst of writes to one file
      events_.push_back({change, std::move(path)});
    }
    if (!events_.empty() && handler_) handler_(events_);
  }

  asio::posix::stream_descriptor stream_;
  std::array<char, 64 * 1024> buf_{};
  Handler handler_;
  bool stopped_ = false;
  std::map<int, std::string> by_wd_;
  std::map<std::string, int> by_dir_;
  std::set<std::string> failed_;   // directories whose failure was logged (retried anyway)
  std::vector<Event> events_;
  mutable std::mutex mu_;
  std::set<std::string> covered_;  // by_dir_'s keys, for covers() from other threads
};

}  // namespace

std::shared_ptr<Watcher> make_poll_watcher() { return std::make_shared<PollWatcher>(); }

std::shared_ptr<Watcher> make_inotify_watcher(asio::any_io_executor executor) {
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) {
    spdlog::warn("inotify is not available ({}): files are polled", std::strerror(errno));
    return nullptr;
  }
  return std::make_shared<InotifyWatcher>(executor, fd);
}

}  // namespace tailbox::tail
