#include "dispatch/dispatcher.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "core/failure.hpp"
#include "outbox/async_outbox.hpp"
#include "tail/line_splitter.hpp"
#include "support/scripted_sink.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"

using namespace tailbox;
using namespace std::chrono_literals;
using sinks::Delivery;

namespace {

// An outbox with `files` files of `lines` lines each ("f<i> line <n>").
struct Harness {
  testing::TempDir dir;
  config::Config cfg;
  boost::asio::io_context ioc;
  std::unique_ptr<outbox::AsyncOutbox> ob;
  int64_t total = 0;

  Harness(int files, int lines) {
    cfg.host_id = "h";
    cfg.sources.push_back({});
    cfg.sources[0].name = "app";
    cfg.delivery.linger = 0ms;
    cfg.delivery.backoff_min = 1ms;
    cfg.delivery.backoff_max = 4ms;
    auto o = outbox::Outbox::open({dir / "outbox.db", config::Synchronous::off, false});
    for (int f = 0; f < files; ++f) {
      FileIdentity id;
      id.inode = static_cast<uint64_t>(100 + f);
      id.fingerprint = static_cast<uint64_t>(f);
      Status st;
      auto tf = o->add_file("app", "/logs/f" + std::to_string(f), id, 0);
      REQUIRE(tf);
      std::string text;
      for (int n = 0; n < lines; ++n) text += "f" + std::to_string(f) + " line " + std::to_string(n) + "\n";
      outbox::Chunk c;
      c.file_id = tf->id;
      c.next_offset = static_cast<int64_t>(tail::split_lines(text, 0, 1 << 20, false, c.lines));
      const outbox::Chunk* one[] = {&c};
      REQUIRE(o->append(one).is_ok());
      total += lines;
    }
    ob = std::make_unique<outbox::AsyncOutbox>(ioc.get_executor(), std::move(o));
  }

  // Runs the dispatcher until `done` or 60 s; returns whether done.
  template <typename Done>
  bool run(sinks::Sink& sink, Done done, dispatch::Dispatcher** out = nullptr) {
    dispatch::Dispatcher d(ioc.get_executor(), cfg, *ob, sink);
    if (out) *out = &d;
    std::atomic<bool> finished{false};
    boost::asio::co_spawn(ioc, d.run(), [&](std::exception_ptr) { finished = true; });
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) threads.emplace_back([this] { ioc.run(); });
    auto deadline = std::chrono::steady_clock::now() + 60s;
    bool ok = false;
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) {
        ok = true;
        break;
      }
      std::this_thread::sleep_for(5ms);
    }
    d.stop();
    for (auto& t : threads) t.join();
    CHECK(finished.load());
    stats_delivered = d.stats().delivered;
    stats_retried = d.stats().retried;
    stats_dead = d.stats().dead;
    return ok;
  }

  // Through a read-only connection of its own: the relay's writer connection is
  // busy on other threads while the dispatcher runs.
  outbox::Outbox::Summary summary() {
    return testing::ok(outbox::Outbox::open({dir / "outbox.db", config::Synchronous::off, true})->summary());
  }

  int64_t stats_delivered = 0, stats_retried = 0, stats_dead = 0;
};

}  // namespace

TEST_SUITE("dispatch.dispatcher") {
  TEST_CASE("a worker that throws (bad_alloc) reports a failure that stops the relay; its rows stay") {
    Harness h(1, 300);
    h.cfg.delivery.batch_rows = 100;
    h.cfg.delivery.workers = 2;
    std::atomic<int> calls{0};
    testing::ScriptedSink sink([&](std::span<const Record>) -> Delivery {
      if (++calls == 2) throw std::bad_alloc();
      return Delivery::delivered();
    });
    std::atomic<int> reports{0};
    std::string reported;
    std::mutex mu;
    set_failure_handler([&](const std::string& what) {
      std::lock_guard lock(mu);
      ++reports;
      reported = what;
    });
    dispatch::Dispatcher* d = nullptr;
    // Done when the failure was reported: the relay's handler would stop everything.
    bool done = h.run(sink, [&] { return reports.load() > 0; }, &d);
    set_failure_handler(nullptr);
    REQUIRE(done);
    CHECK(reported.find("delivery worker stopped") != std::string::npos);
    CHECK(reported.find("bad_alloc") != std::string::npos);
    // Nothing lost: what the sink did not confirm is still in the outbox.
    CHECK(h.summary().pending + static_cast<int64_t>(sink.delivered().size()) == h.total);
  }

  TEST_CASE("lease never hands one row to two workers (8 workers)") {
    Harness h(4, 2500);
    h.cfg.delivery.workers = 8;
    h.cfg.delivery.batch_rows = 37;
    testing::ScriptedSink sink;
    bool done = h.run(sink, [&] { return h.ob->backlog().rows == 0; });
    REQUIRE(done);
    CHECK_FALSE(sink.overlap());
    CHECK(sink.max_concurrent() > 1);
    auto delivered = sink.delivered();
    CHECK(static_cast<int64_t>(delivered.size()) == h.total);
    for (const auto& [key, n] : delivered) {
      if (n != 1) FAIL_CHECK(key << " delivered " << n << " times");
    }
    CHECK(h.stats_delivered == h.total);
    CHECK(h.summary().pending == 0);
  }

  TEST_CASE("failed batches are retried after backoff and then delivered once") {
    Harness h(2, 300);
    h.cfg.delivery.batch_rows = 100;
    std::atomic<int> calls{0};
    testing::ScriptedSink sink([&](std::span<const Record>) {
      return ++calls % 3 == 0 ? Delivery::delivered() : Delivery::retry("503 service unavailable");
    });
    REQUIRE(h.run(sink, [&] { return h.ob->backlog().rows == 0; }));
    CHECK(h.stats_retried > 0);
    for (const auto& [key, n] : sink.delivered()) CHECK(n == 1);
    CHECK(static_cast<int64_t>(sink.delivered().size()) == h.total);
  }

  TEST_CASE("rows past max_attempts become dead, never dropped") {
    Harness h(1, 50);
    h.cfg.delivery.max_attempts = 3;
    h.cfg.delivery.batch_rows = 20;
    testing::ScriptedSink sink([](std::span<const Record>) { return Delivery::retry("connection refused"); });
    REQUIRE(h.run(sink, [&] { return h.summary().dead == 50; }));
    auto s = h.summary();
    CHECK(s.pending == 0);
    CHECK(s.dead == 50);
    REQUIRE(s.dead_by_error.size() == 1);
    CHECK(s.dead_by_error[0].first == "connection refused");
    CHECK(sink.delivered().empty());
    CHECK(h.ob->backlog().rows == 50);
  }

  TEST_CASE("a rejected batch is split until the bad row is found; the rest arrive") {
    Harness h(1, 100);
    h.cfg.delivery.batch_rows = 100;
    testing::ScriptedSink sink([](std::span<const Record> batch) {
      for (const auto& r : batch)
        if (r.line == "f0 line 42" || r.line == "f0 line 77") return Delivery::reject("invalid byte sequence");
      return Delivery::delivered();
    });
    REQUIRE(h.run(sink, [&] { return h.ob->backlog().rows == 2 && h.summary().dead == 2; }));
    CHECK(sink.delivered().size() == 98);
    auto s = h.summary();
    CHECK(s.dead == 2);
    CHECK(s.dead_by_error.at(0).first == "invalid byte sequence");
  }

  TEST_CASE("ordering = per_file keeps each file's lines in order through failures") {
    Harness h(6, 400);
    h.cfg.delivery.workers = 4;
    h.cfg.delivery.batch_rows = 25;
    h.cfg.delivery.ordering = config::Ordering::per_file;
    std::mt19937 rng(7);
    std::mutex mu;
    testing::ScriptedSink sink([&](std::span<const Record>) {
      std::lock_guard lock(mu);
      return rng() % 5 == 0 ? Delivery::retry("flaky") : Delivery::delivered();
    });
    REQUIRE(h.run(sink, [&] { return h.ob->backlog().rows == 0; }));
    auto order = sink.order();
    CHECK(order.size() == 6);
    for (const auto& [path, offsets] : order) {
      CAPTURE(path);
      CHECK(offsets.size() == 400);
      CHECK(std::is_sorted(offsets.begin(), offsets.end()));
    }
  }

  TEST_CASE("a serial sink gets one batch at a time") {
    Harness h(3, 500);
    h.cfg.delivery.workers = 8;
    h.cfg.delivery.batch_rows = 50;
    testing::ScriptedSink sink({}, true);
    REQUIRE(h.run(sink, [&] { return h.ob->backlog().rows == 0; }));
    CHECK(sink.max_concurrent() == 1);
    CHECK(static_cast<int64_t>(sink.delivered().size()) == h.total);
  }

  TEST_CASE("rows that die mid-batch leave the live ones to be delivered, and none is lost") {
    Harness h(1, 100);
    h.cfg.delivery.max_attempts = 3;
    h.cfg.delivery.batch_rows = 100;
    {
      // The first 50 rows already failed twice (e.g. replayed earlier).
      Status st;
      outbox::LeaseCursor cursor;
      auto rows = testing::ok(h.ob->unsafe_sync().lease(cursor, 0, 1, 50, 1 << 20));
      REQUIRE(rows.size() == 50);
      std::vector<outbox::RowKey> ids;
      for (const auto& r : rows) ids.push_back(r.key());
      for (int i = 0; i < 2; ++i) (void)testing::ok(h.ob->unsafe_sync().fail(ids, "earlier", 0));
    }
    std::atomic<int> calls{0};
    testing::ScriptedSink sink([&](std::span<const Record>) {
      return ++calls == 1 ? Delivery::retry("503") : Delivery::delivered();
    });
    REQUIRE(h.run(sink, [&] { return h.ob->backlog().rows == 50 && h.summary().dead == 50; }));
    CHECK(sink.delivered().size() == 50);
    for (const auto& [key, n] : sink.delivered()) CHECK(n == 1);
    CHECK(h.summary().pending == 0);
  }

  TEST_CASE("a serial sink goes on while its acks wait; they commit in order, every state told") {
    Harness h(1, 1000);
    h.cfg.delivery.batch_rows = 100;
    std::atomic<int> batches{0};
    testing::ScriptedSink sink(
        [&](std::span<const Record>) { return Delivery::delivered("state " + std::to_string(++batches)); },
        true);
    // Hold the outbox's writer strand: no ack commits until it is released.
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    boost::asio::post(h.ob->strand(), [released] { released.wait(); });
    bool held = true;
    int while_held = 0;
    auto held_since = std::chrono::steady_clock::now();
    REQUIRE(h.run(sink, [&] {
      if (held) {
        // The worker delivers 4 batches whose acks then wait, and a 5th; then
        // it waits for an ack. Give it time to (wrongly) go further.
        if (std::chrono::steady_clock::now() - held_since < 1500ms) return false;
        while_held = batches.load();
        held = false;
        release.set_value();
        return false;
      }
      return h.ob->backlog().rows == 0;
    }));
    CHECK(while_held == 5);
    CHECK(batches.load() == 10);
    CHECK(sink.delivered().size() == 1000);
    for (const auto& [key, n] : sink.delivered()) CHECK(n == 1);
    CHECK(h.summary().pending == 0);
    auto reader = outbox::Outbox::open({h.dir / "outbox.db", config::Synchronous::off, true});
    auto state = testing::ok(reader->sink_state("scripted"));
    REQUIRE(state);
    CHECK(*state == "state 10");
    // Acks committed together still tell the sink of every state, in order.
    std::vector<std::string> expected;
    for (int i = 1; i <= 10; ++i) expected.push_back("state " + std::to_string(i));
    CHECK(sink.committed_states() == expected);
  }
}
