// AsyncOutbox: the Outbox behind two Asio strands: one for every write
// (`co_await run(...)`), one for leasing (`co_await run_lease(...)`), which has
// its own read connection. Each SQLite connection is used from one strand at a
// time while the callers stay on their own strands.
//
// Thread-safety: run() and backlog() may be called from any coroutine/thread.
// Listeners added with on_append() are called on the outbox strand.
#pragma once

#include <boost/asio/co_spawn.hpp>
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

  // Appends on the strand and tells the append listeners when rows were added.
  asio::awaitable<Status> append(const Chunk& chunk) {
    co_return co_await run([this, &chunk](Outbox& o) {
      const Chunk* one[] = {&chunk};
      Status st = o.append(one);
      if (st && !chunk.lines.empty())
        for (auto& listener : listeners_) listener();
      return st;
    });
  }

  // REQUIRES: called before the relay starts.
  void on_append(std::function<void()> listener) { listeners_.push_back(std::move(listener)); }

  Backlog backlog() const { return outbox_->backlog(); }
  // Direct access for start-up and shutdown, when nothing else runs.
  Outbox& unsafe_sync() { return *outbox_; }
  const asio::strand<asio::any_io_executor>& strand() const { return strand_; }

 private:
  asio::strand<asio::any_io_executor> strand_;
  asio::strand<asio::any_io_executor> lease_strand_;
  std::unique_ptr<Outbox> outbox_;
  std::vector<std::function<void()>> listeners_;
};

}  // namespace tailbox::outbox
