// AsyncOutbox: the Outbox behind two Asio strands: one for every write
// (`co_await run(...)`), one for leasing (`co_await run_lease(...)`), which has
// its own read connection. Each SQLite connection is used from one strand at a
// time while the callers stay on their own strands.
//
// Thread-safety: run() and backlog() may be called from any coroutine/thread.
// Listeners added with on_append() are called on the outbox strand.
#pragma once

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <memory>
#include <type_traits>
#include <vector>

#include "outbox/outbox.hpp"

namespace tailbox::outbox {

namespace asio = boost::asio;

class AsyncOutbox {
 public:
  AsyncOutbox(asio::any_io_executor executor, std::unique_ptr<Outbox> outbox)
      : strand_(asio::make_strand(executor)),
        lease_strand_(asio::make_strand(executor)),
        outbox_(std::move(outbox)) {}

  // Runs f(Outbox&) on the outbox strand and returns its result.
  template <typename F>
  asio::awaitable<std::invoke_result_t<F&, Outbox&>> run(F f) {
    using R = std::invoke_result_t<F&, Outbox&>;
    co_return co_await asio::co_spawn(
        strand_, [this, &f]() -> asio::awaitable<R> { co_return f(*outbox_); },
        asio::use_awaitable);
  }

  // Runs f(Outbox&) on the lease strand: for Outbox::lease() only.
  template <typename F>
  asio::awaitable<std::invoke_result_t<F&, Outbox&>> run_lease(F f) {
    using R = std::invoke_result_t<F&, Outbox&>;
    co_return co_await asio::co_spawn(
        lease_strand_, [this, &f]() -> asio::awaitable<R> { co_return f(*outbox_); },
        asio::use_awaitable);
  }

  // Appends a chunk. Group commit: chunks that reach the strand while one is
  // being prepared are committed together in one transaction, so many files
  // with a few lines each cost one transaction, not one per file. Tells the
  // append listeners when rows were added.
  asio::awaitable<Status> append(const Chunk& chunk) {
    Pending mine{&chunk, Status::ok(), false};
    co_await asio::co_spawn(strand_, [this, &mine]() -> asio::awaitable<void> {
      pending_.push_back(&mine);
      if (pending_.size() == 1) {
        // Leader: let the appends already queued on the strand join, then commit all.
        co_await asio::post(strand_, asio::use_awaitable);
        std::vector<Pending*> group;
        group.swap(pending_);
        std::vector<const Chunk*> chunks;
        bool rows = false;
        for (Pending* p : group) {
          chunks.push_back(p->chunk);
          rows = rows || !p->chunk->lines.empty();
        }
        Status st = outbox_->append(chunks);
        outbox_->after_append();
        for (Pending* p : group) {
          p->status = st;
          p->done = true;
        }
        committed_.cancel();   // wake the followers
        if (st && rows)
          for (auto& listener : listeners_) listener();
      }
      while (!mine.done) {
        boost::system::error_code ec;
        co_await committed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
    }, asio::use_awaitable);
    co_return mine.status;
  }

  // REQUIRES: called before the relay starts.
  void on_append(std::function<void()> listener) { listeners_.push_back(std::move(listener)); }

  Backlog backlog() const { return outbox_->backlog(); }
  // Safe from any thread (see Outbox): for metrics and health.
  Outbox::Health health() const { return outbox_->health(); }
  int64_t oldest_pending_ms() { return outbox_->oldest_pending_ms(); }
  const std::string& path() const { return outbox_->path(); }
  // Direct access for start-up and shutdown, when nothing else runs.
  Outbox& unsafe_sync() { return *outbox_; }
  const asio::strand<asio::any_io_executor>& strand() const { return strand_; }

 private:
  asio::strand<asio::any_io_executor> strand_;
  asio::strand<asio::any_io_executor> lease_strand_;
  struct Pending {
    const Chunk* chunk;
    Status status;
    bool done;
  };
  std::vector<Pending*> pending_;     // strand_ only
  asio::steady_timer committed_{strand_, asio::steady_timer::time_point::max()};
  std::unique_ptr<Outbox> outbox_;
  std::vector<std::function<void()>> listeners_;
};

}  // namespace tailbox::outbox
