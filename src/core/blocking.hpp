// Running a blocking call (a client library that has no asynchronous API)
// from a coroutine without blocking the I/O threads.
//
// Note: `co_await asio::post(pool, use_awaitable)` does NOT move a coroutine
// onto `pool` (Boost 1.81: it resumes on the coroutine's own executor);
// co_spawn onto the pool does.
#pragma once

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <type_traits>

namespace tailbox {

// Runs fn() on a thread of `pool`; the caller resumes on its own executor with
// the result (or fn's exception). `fn` must outlive the call (it is awaited).
template <class F>
boost::asio::awaitable<std::invoke_result_t<F&>> run_blocking(boost::asio::thread_pool& pool, F& fn) {
  using R = std::invoke_result_t<F&>;
  co_return co_await boost::asio::co_spawn(
      pool.get_executor(), [&fn]() -> boost::asio::awaitable<R> { co_return fn(); },
      boost::asio::use_awaitable);
}

}  // namespace tailbox
