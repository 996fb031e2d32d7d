#include "cli/relay.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <thread>

#include "dispatch/dispatcher.hpp"
#include "outbox/async_outbox.hpp"
#include "sinks/registry.hpp"
#include "tail/tailer.hpp"

namespace tailbox::cli {

namespace asio = boost::asio;

int run_relay(config::Config cfg) {
  asio::io_context ioc;
  std::unique_ptr<sinks::Sink> sink;
  std::unique_ptr<outbox::AsyncOutbox> outbox;
  try {
    sink = sinks::make_sink(cfg.sink, ioc.get_executor());
    auto opened = outbox::Outbox::open({cfg.outbox.path, cfg.outbox.synchronous, false});
    auto state = opened->sink_state(sink->name());
    sink->open(state);
    outbox = std::make_unique<outbox::AsyncOutbox>(ioc.get_executor(), std::move(opened));
  } catch (const config::ConfigError& e) {
    spdlog::error("configuration: {}", e.what());
    return 2;
  } catch (const std::exception& e) {
    spdlog::error("cannot start: {}", e.what());
    return 1;
  }

  auto backlog = outbox->backlog();
  spdlog::info("tailbox {} starting: host_id {}, outbox {} ({} rows waiting), sink {} ({})",
               TAILBOX_VERSION, cfg.host_id, cfg.outbox.path, backlog.rows, sink->name(),
               sink->guarantee());

  tail::Tailer tailer(ioc.get_executor(), cfg, *outbox);
  dispatch::Dispatcher dispatcher(ioc.get_executor(), cfg, *outbox, *sink);
  outbox->on_append([&dispatcher] { dispatcher.wake(); });

  std::atomic<int> running{2};
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  auto finished = [&](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::error("stopping after an unexpected error: {}", ex.what());
      }
      tailer.stop();
      dispatcher.stop();
    }
    if (--running == 0) signals.cancel();
  };
  asio::co_spawn(ioc, tailer.run(), finished);
  asio::co_spawn(ioc, dispatcher.run(), finished);

  signals.async_wait([&](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("signal {}: stopping; in-flight batches may finish within {} ms", signo,
                 cfg.delivery.shutdown_timeout.count());
    tailer.stop();
    dispatcher.stop();
    // Past the timeout, exit as a crash would: every row not confirmed is still
    // in the outbox and will be delivered (and deduplicated) after a restart.
    std::thread([timeout = cfg.delivery.shutdown_timeout] {
      std::this_thread::sleep_for(timeout);
      spdlog::warn("shutdown timeout reached; unconfirmed batches stay in the outbox");
      spdlog::default_logger()->flush();
      _exit(0);
    }).detach();
  });

  unsigned n = std::max(2u, std::thread::hardware_concurrency());
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < n; ++i) threads.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& t : threads) t.join();

  const auto& ds = dispatcher.stats();
  spdlog::info("stopped: {} lines read, {} rows delivered, {} dead-lettered, {} rows left in the outbox",
               tailer.stats().lines_read.load(), ds.delivered.load(), ds.dead.load(),
               outbox->backlog().rows);
  return 0;
}

}  // namespace tailbox::cli
