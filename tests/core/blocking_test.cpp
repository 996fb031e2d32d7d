#include "core/blocking.hpp"

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/detached.hpp>
#include <stdexcept>
#include <thread>

using namespace tailbox;
namespace asio = boost::asio;

TEST_CASE("run_blocking runs on the pool and resumes on the caller's executor") {
  asio::io_context ioc;
  asio::thread_pool pool(1);
  std::thread::id io_thread, work_thread, resumed_thread;
  int result = 0;
  bool threw = false;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        io_thread = std::this_thread::get_id();
        auto work = [&] {
          work_thread = std::this_thread::get_id();
          return 42;
        };
        result = co_await run_blocking(pool, work);
        resumed_thread = std::this_thread::get_id();
        auto fails = []() -> int { throw std::runtime_error("no"); };
        try {
          co_await run_blocking(pool, fails);
        } catch (const std::runtime_error&) {
          threw = true;
        }
      },
      asio::detached);
  ioc.run();
  CHECK(result == 42);
  CHECK(work_thread != io_thread);
  CHECK(resumed_thread == io_thread);
  CHECK(threw);
  pool.join();
}
