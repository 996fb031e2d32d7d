#include "tail/tailer.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <algorithm>

#include "core/clock.hpp"
#include "core/failure.hpp"
#include "outbox/async_outbox.hpp"
#include "tail/tailer_impl.hpp"

namespace tailbox::tail {

namespace {

// Events come in bursts (a rotation is a rename plus a create plus writes):
// one scan after the burst.
constexpr milliseconds kScanDebounce{20};

// Each reader keeps its file open: thousands of files need more descriptors
// than the usual soft limit of 1024. The hard limit is ours to use.
void raise_open_files_limit() {
  struct rlimit rl {};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
  rlim_t was = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
    spdlog::debug("open files limit raised from {} to {}", was, rl.rlim_cur);
}

}  // namespace

Tailer::Impl::Impl(asio::any_io_executor ex, const config::Config& c, outbox::AsyncOutbox& o)
    : executor(ex),
      strand(asio::make_strand(ex)),
      cfg(c),
      env(std::make_shared<ReaderEnv>(c, o)) {
  for (const auto& src : cfg.sources) {
    auto& st = env->stats.sources[src.name] = std::make_unique<SourceStats>();
    if (src.multiline.enabled())
      patterns[src.name] = StartPattern::compile(src.multiline.start_pattern, src.name,
                                                 &st->multiline_pattern_errors);
  }
  if (cfg.tail.inotify) watcher = make_inotify_watcher(strand);
  if (!watcher) watcher = make_poll_watcher();
  env->watcher = watcher;
}

std::shared_ptr<Reader> Tailer::Impl::make_reader(const config::SourceConfig& source, int fd) {
  // Readers share a pool of strands: one strand each would cost ~100 bytes
  // per followed file, and a strand only has to keep one reader's coroutine
  // and wake-ups apart, which a shared one does too.
  if (strands.empty())
    for (size_t i = 0; i < kStrands; ++i) strands.push_back(asio::make_strand(executor));
  std::shared_ptr<const StartPattern> start;
  if (auto it = patterns.find(source.name); it != patterns.end()) start = it->second;
  return std::make_shared<Reader>(strands[next_strand++ % kStrands], source, std::move(start),
                                  *env->stats.sources.at(source.name), fd);
}

void Tailer::Impl::add_reader(std::shared_ptr<Reader> r) {
  r->attach(env);
  {
    std::lock_guard lock(readers_mu);
    readers.push_back(r);
  }
  by_path[r->path()] = r;
  // Followed from now on, also for the rest of this scan: a rename between
  // the listing and open() can show the same file under a second name.
  by_inode[r->key()] = r;
  ++running_readers;
  ++env->stats.files_active;
  spawn(r);
}

void Tailer::Impl::spawn(const std::shared_ptr<Reader>& r) {
  if (env->stopping.load()) {
    // No coroutine runs for r (a parked reader woken, or one just added):
    // nothing to finish but its descriptor. Thousands of parked readers
    // stop without a coroutine each.
    r->close_unread(env->stats);
    reader_ended();
    return;
  }
  ++env->stats.readers_running;
  asio::co_spawn(r->strand(), Reader::run(env, r),
                 [self = shared_from_this(), r](std::exception_ptr e, bool parked) {
                   --self->env->stats.readers_running;
                   if (!e && parked) return;   // followed still: wake() starts it again
                   if (e) {
                     // The file is no longer read: /readyz must say so.
                     ++self->env->stats.readers_failed;
                     spdlog::error("reader for {} stopped: {}", r->path(), what_of(e));
                     // Not the relay's end: the other files are read on,
                     // and /readyz names the failure (README: a relay that
                     // fails stops; one file's reader is the exception).
                   }
                   self->reader_ended();
                 });
}

void Tailer::Impl::reader_ended() {
  --env->stats.files_active;
  if (--running_readers == 0 && env->stopping.load())
    asio::post(strand, [self = shared_from_this()] {
      (void)self->readers_ended.try_send(boost::system::error_code{});
    });
}

asio::awaitable<void> Tailer::Impl::throttle_start() {
  while (env->stats.readers_running.load() >= kStartingMax && start_budget.count() > 0 &&
         !env->stopping.load()) {
    co_await wait(start_timer, milliseconds(2));
    start_budget -= milliseconds(2);
  }
}

asio::awaitable<void> Tailer::Impl::close_inactive() {
  const milliseconds after = cfg.tail.close_inactive;
  if (after.count() <= 0) co_return;
  const milliseconds every = std::clamp(after / 4, milliseconds(10), milliseconds(30'000));
  while (!env->stopping.load()) {
    co_await wait(close_timer, every);
    const int64_t now = unix_ms();
    std::lock_guard lock(readers_mu);
    for (const auto& r : readers)
      if (r->parked() && !r->closed() && now - r->last_change_ms() >= after.count())
        r->close_if_parked();
  }
}

bool Tailer::Impl::matches_a_glob(const std::string& path) const {
  for (const auto& source : cfg.sources)
    for (const auto& pattern : source.paths)
      if (glob_match(pattern, path) && wanted(source, path)) return true;
  return false;
}

void Tailer::Impl::on_events(std::span<const Watcher::Event> events) {
  for (const auto& e : events) {
    switch (e.change) {
      case Watcher::Change::modified:
        if (auto it = by_path.find(e.path); it != by_path.end()) it->second->wake();
        else if (matches_a_glob(e.path)) request_scan();   // new, renamed, or skipped so far
        break;
      case Watcher::Change::created:
      case Watcher::Change::removed:
        if (auto it = by_path.find(e.path); it != by_path.end()) {
          it->second->wake();
          request_scan();
        } else if (matches_a_glob(e.path)) {
          request_scan();
        }
        break;
      case Watcher::Change::directory:
        request_scan();
        break;
      case Watcher::Change::overflow:
        spdlog::warn("inotify queue overflow: looking at every file");
        request_scan();
        wake_all();
        break;
    }
  }
}

asio::awaitable<void> Tailer::Impl::run() {
  auto self = shared_from_this();
  co_await load_checkpoints();
  env->spawn = [weak = weak_from_this()](std::shared_ptr<Reader> r) {
    if (auto impl = weak.lock()) impl->spawn(r);
  };
  asio::co_spawn(strand, close_inactive(), [self](std::exception_ptr) {});
  watcher->start([self](std::span<const Watcher::Event> events) { self->on_events(events); });
  while (!env->stopping.load()) {
    scan_requested = false;
    co_await scan();
    if (env->stopping.load()) break;
    milliseconds every = env->stats.evented.load() ? env->recheck() : cfg.tail.poll_interval;
    // A file that could not be opened, or a checkpointed file not found yet
    // (a file system mounted late): look again soon, not only at the next recheck.
    // Backs off (1 s, 2 s, ... up to the usual interval) while it lasts.
    if (retry_soon) {
      every = std::min(every, retry_every);
      retry_every = std::min(retry_every * 2, std::max(every, env->recheck()));
    } else {
      retry_every = std::max(cfg.tail.poll_interval, milliseconds(1000));
    }
    if (!scan_requested) co_await wait(scan_timer, every);
    if (scan_requested && !env->stopping.load()) co_await wait(scan_timer, kScanDebounce);
  }
  watcher->stop();
  wake_all();
  while (running_readers.load() > 0)
    co_await readers_ended.async_receive(asio::as_tuple(asio::use_awaitable));
}

void Tailer::Impl::stop() {
  env->stopping = true;
  asio::post(strand, [self = shared_from_this()] {
    self->scan_timer.cancel();
    self->close_timer.cancel();
    self->watcher->stop();
    self->wake_all();
  });
}

Tailer::Tailer(asio::any_io_executor executor, const config::Config& config,
               outbox::AsyncOutbox& outbox)
    : impl_(std::make_shared<Impl>(executor, config, outbox)) {
  raise_open_files_limit();
  struct rlimit rl {};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    impl_->fd_budget = std::max<int64_t>(static_cast<int64_t>(rl.rlim_cur) - Impl::kFdReserve, 8);
}

Tailer::~Tailer() = default;

asio::awaitable<void> Tailer::run() {
  auto impl = impl_;
  co_await asio::co_spawn(impl->strand, impl->run(), asio::use_awaitable);
}

void Tailer::stop() { impl_->stop(); }

const TailStats& Tailer::stats() const { return impl_->env->stats; }

std::vector<Tailer::FileProgress> Tailer::files() const {
  std::vector<FileProgress> out;
  std::lock_guard lock(impl_->readers_mu);
  for (const auto& r : impl_->readers) {
    if (r->done()) continue;
    FileProgress p;
    {
      TrackedFile file = r->file();
      p.source = std::move(file.source);
      p.path = std::move(file.path);
    }
    p.size = r->size_seen();
    p.offset = r->offset();
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace tailbox::tail
