#include "dispatch/dispatcher.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <mutex>
#include <random>
#include <unordered_set>

#include "core/clock.hpp"
#include "core/failure.hpp"
#include "core/log_limit.hpp"
#include "dispatch/record_builder.hpp"
#include "dispatch/retry_policy.hpp"
#include "outbox/async_outbox.hpp"
#include "sinks/sink.hpp"

namespace tailbox::dispatch {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using sinks::Delivery;

namespace {

struct Worker {
  int index = 0;
  asio::strand<asio::any_io_executor> strand;
  asio::steady_timer timer;
  std::atomic<bool> idle{false};
  bool woken = false;            // worker strand only
  int acks_pending = 0;          // worker strand only: 0..kAcksAhead
  bool ack_dropped = false;      // worker strand only
  // Signalled (on the strand) when its acks commit; a stale signal only makes
  // wait_acks() look at acks_pending again.
  asio::experimental::channel<void(boost::system::error_code)> ack_done;
  std::mt19937_64 rng;

  Worker(int i, asio::any_io_executor ex)
      : index(i),
        strand(asio::make_strand(ex)),
        timer(strand),
        ack_done(strand, 1),
        rng(std::random_device{}()) {}
};

using outbox::RowKey;
using KeySet = std::unordered_set<RowKey, outbox::RowKeyHash>;

// Delivered batches a worker may have waiting for their ack while it goes on
// with the next ones. Their rows stay leased (and pending in the outbox) until
// the ack commits: a crash meanwhile only means they are delivered again.
constexpr int kAcksAhead = 4;

// A delivered batch waiting for its rows to be deleted (ack_strand only).
struct PendingAck {
  Worker* worker;
  std::vector<RowKey> ids;
  int64_t bytes;
  std::optional<std::string> state;
};

// The rows' keys in lease order: runs that joined their predecessor stay
// runs, so the outbox deletes them as ranges.
std::vector<RowKey> ids_of(std::span<const outbox::LeasedRow> rows) {
  std::vector<RowKey> ids;
  ids.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    ids.push_back(rows[i].key());
    if (i == 0) ids.back().joins_previous = false;   // its predecessor is not acked with it
  }
  return ids;
}

int64_t bytes_of(std::span<const outbox::LeasedRow> rows) {
  int64_t n = 0;
  for (const auto& r : rows) n += static_cast<int64_t>(r.payload.size());
  return n;
}

}  // namespace

struct Dispatcher::Impl : std::enable_shared_from_this<Impl> {
  asio::any_io_executor executor;
  const config::Config& cfg;
  outbox::AsyncOutbox& outbox;
  sinks::Sink& sink;
  RecordBuilder builder;
  RetryPolicy policy;
  DispatchStats stats;
  LogLimiter log_limit{std::chrono::seconds(10)};
  std::atomic<bool> stopping{false};
  std::atomic<bool> failed{false};
  std::atomic<int> running{0};
  // run() waits on join_strand for the last worker to end (see join()).
  asio::strand<asio::any_io_executor> join_strand;
  asio::experimental::channel<void(boost::system::error_code)> workers_ended{join_strand, 1};
  std::vector<std::unique_ptr<Worker>> workers;
  int lanes = 1;

  // Acks of every worker, queued in delivery order and committed by one
  // coroutine on ack_strand: all the acks that wait while one commits are
  // committed together next, in one transaction (group commit).
  asio::strand<asio::any_io_executor> ack_strand;
  std::vector<PendingAck> ack_queue;   // ack_strand only
  std::vector<PendingAck> in_commit;   // ack_strand only: the group being committed
  bool committing = false;             // ack_strand only
  bool acks_dropped = false;           // ack_strand only: one ack given up, so all later ones

  // Lease bookkeeping, under lease_mu (leases happen on the lease strand, acks
  // on the outbox strand).
  std::mutex lease_mu;
  std::vector<outbox::LeaseCursor> cursor;     // per lane
  std::vector<int64_t> last_rescan_ms;         // per lane
  KeySet leased;

  Impl(asio::any_io_executor ex, const config::Config& c, outbox::AsyncOutbox& o, sinks::Sink& s)
      : executor(ex), cfg(c), outbox(o), sink(s), builder(c),
        policy(c.delivery.backoff_min, c.delivery.backoff_max, c.delivery.jitter),
        join_strand(asio::make_strand(ex)),
        ack_strand(asio::make_strand(ex)) {
    int n = sink.serial() ? 1 : cfg.delivery.workers;
    lanes = cfg.delivery.ordering == config::Ordering::per_file ? n : 1;
    for (int i = 0; i < n; ++i) workers.push_back(std::make_unique<Worker>(i, ex));
    cursor.resize(static_cast<size_t>(lanes));
    last_rescan_ms.assign(static_cast<size_t>(lanes), unix_ms());
  }

  // Waits on the worker's timer; returns early on wake() or stop().
  static asio::awaitable<void> sleep(Worker& w, milliseconds d) {
    w.timer.expires_after(d);
    boost::system::error_code ec;
    co_await w.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  // Leases up to `max_rows` rows for lane; runs on the outbox strand.
  asio::awaitable<std::vector<outbox::LeasedRow>> lease(int lane, int64_t max_rows,
                                                        int64_t max_bytes) {
    co_return co_await outbox.run_lease([&](outbox::Outbox& o) {
      std::lock_guard lock(lease_mu);
      std::vector<outbox::LeasedRow> out;
      auto& cur = cursor[static_cast<size_t>(lane)];
      auto in_flight = [this](const RowKey& k) { return leased.count(k) > 0; };
      for (int pass = 0; pass < 2 && out.empty(); ++pass) {
        auto leased_now = o.lease(cur, lane, lanes, max_rows, max_bytes, in_flight);
        if (!leased_now) {
          spdlog::warn("cannot lease rows from the outbox: {}", leased_now.error().message());
          break;
        }
        for (auto& r : *leased_now) {
          leased.insert(r.key());
          out.push_back(std::move(r));
        }
        // Every 5 s look again from the start: rows replayed by hand (dead ->
        // pending) sit behind the cursor; everything else behind it is in flight.
        int64_t now = unix_ms();
        auto& last = last_rescan_ms[static_cast<size_t>(lane)];
        if (pass == 1 || now - last < 5000) break;
        last = now;
        cur.reset();
        if (lane == 0) o.recount();   // rows purged or added by hand (tools/replay)
        if (!out.empty()) break;      // the next lease starts from the front
      }
      stats.in_flight += static_cast<int64_t>(out.size());
      return out;
    });
  }

  // Forgets leases (rows stay in the outbox, pending or dead).
  void release(const std::vector<RowKey>& ids) {
    std::lock_guard lock(lease_mu);
    int64_t n = 0;
    for (const RowKey& id : ids) n += static_cast<int64_t>(leased.erase(id));
    stats.in_flight -= n;
  }

  // Deletes delivered rows (and stores the sink's state). An ack that fails is
  // retried: the rows are at the destination, and sending them again would only
  // add work (or, for a serial sink, a duplicate). Gives up only when stopping;
  // the rows then stay pending and are delivered again (and dropped by key).
  // `states`: the sink states of the acked batches, in delivery order; the
  // last is stored, and the sink is told of each in turn once committed.
  asio::awaitable<bool> ack(std::vector<RowKey> ids, int64_t bytes, std::vector<std::string> states) {
    const std::string* state = states.empty() ? nullptr : &states.back();
    asio::steady_timer retry(co_await asio::this_coro::executor);
    std::mt19937_64 rng(static_cast<uint64_t>(ids.empty() ? 0 : ids[0].offset));
    for (int attempt = 1;; ++attempt) {
      Status st = co_await outbox.run([&](outbox::Outbox& o) {
        std::pair<std::string, std::string> s;
        if (state) s = {sink.name(), *state};
        return o.ack(ids, bytes, state ? &s : nullptr);
      });
      if (st) {
        release(ids);
        for (const std::string& each : states) sink.committed(each);
        co_return true;
      }
      spdlog::error("cannot delete {} delivered rows from the outbox: {}; retrying", ids.size(),
                    st.message());
      if (stopping.load()) co_return false;
      retry.expires_after(policy.delay(attempt, rng));
      boost::system::error_code ec;
      co_await retry.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  // Acks run beside the worker's next batches, at most kAcksAhead of them
  // waiting (limit: how many may still wait when this returns).
  static asio::awaitable<void> wait_acks(Worker& w, int limit = 0) {
    while (w.acks_pending > limit)
      co_await w.ack_done.async_receive(asio::as_tuple(asio::use_awaitable));
  }

  // Queues the ack of a delivered batch; the worker goes on meanwhile. Acks
  // commit in the order they were queued, so a serial sink's states (each one
  // covering every batch before it) are stored in delivery order.
  void start_ack(Worker& w, std::span<const outbox::LeasedRow> rows, std::optional<std::string> state) {
    ++w.acks_pending;
    auto self = shared_from_this();
    asio::post(ack_strand, [self, ack = PendingAck{&w, ids_of(rows), bytes_of(rows),
                                                  std::move(state)}]() mutable {
      self->ack_queue.push_back(std::move(ack));
      if (self->committing) return;   // the running committer takes it next
      self->committing = true;
      asio::co_spawn(self->ack_strand, self->commit_acks(), [self](std::exception_ptr e) {
        if (e) self->commit_failed(e);
      });
    });
  }

  // commit_acks() ended with an exception (a bug): stop the relay, and tell
  // every worker whose ack was in hand or queued that it was dropped, so none
  // waits for it. Runs on ack_strand (co_spawn's completion).
  void commit_failed(std::exception_ptr e) {
    const std::string what = what_of(e);
    spdlog::error("acknowledging delivered rows failed: {}; stopping the relay", what);
    failed = true;
    stop_all();
    report_failure("acknowledging delivered rows failed: " + what);
    acks_dropped = true;
    for (auto* list : {&in_commit, &ack_queue}) {
      for (PendingAck& a : *list) tell_worker(a.worker, false);
      list->clear();
    }
    committing = false;
  }

  static void tell_worker(Worker* wp, bool ok) {
    asio::post(wp->strand, [wp, ok] {
      if (!ok) wp->ack_dropped = true;
      --wp->acks_pending;
      (void)wp->ack_done.try_send(boost::system::error_code{});
    });
  }

  // Runs on ack_strand while acks are queued: takes every queued ack, commits
  // them as one (their rows, and the last state), then tells their workers.
  // A member coroutine, not a capturing lambda (see join()).
  asio::awaitable<void> commit_acks() {
    // An exception (a bug, not an I/O failure: those are retried) ends this
    // coroutine; commit_failed() then stops the relay and frees the workers.
    while (!ack_queue.empty()) {
      in_commit.swap(ack_queue);
      bool ok = false;
      if (!acks_dropped) {
        std::vector<RowKey> ids;
        int64_t bytes = 0;
        std::vector<std::string> states;
        for (PendingAck& a : in_commit) {
          ids.insert(ids.end(), a.ids.begin(), a.ids.end());
          bytes += a.bytes;
          if (a.state) states.push_back(std::move(*a.state));
        }
        ok = co_await ack(std::move(ids), bytes, std::move(states));
        // A dropped ack (only when stopping) must not be followed by another:
        // a serial sink's later state would cover rows that are still pending.
        if (!ok) acks_dropped = true;
      }
      for (PendingAck& a : in_commit) tell_worker(a.worker, ok);
      in_commit.clear();
    }
    committing = false;
  }

  // Delivers rows[i..] until each is acked or dead; splits rejected batches.
  // Returns false when it gave up because of stop(): the rest stay pending.
  asio::awaitable<bool> deliver(Worker& w, Batch& batch, size_t begin, size_t end) {
    std::span<const outbox::LeasedRow> rows(batch.rows.data() + begin, end - begin);
    std::span<const Record> records(batch.records.data() + begin, end - begin);
    int attempt = 0;
    for (;;) {
      auto started = std::chrono::steady_clock::now();
      Delivery d = co_await sink.deliver(records);
      stats.batch_seconds.observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      if (d.outcome != Delivery::Outcome::delivered) {
        stats.last_failure_ms = unix_ms();
        stats.set_last_error(d.detail);
      }
      if (d.outcome == Delivery::Outcome::delivered) {
        co_await wait_acks(w, kAcksAhead - 1);
        if (w.ack_dropped) co_return false;   // stopping: these rows stay pending
        start_ack(w, rows, std::move(d.state));
        stats.delivered += static_cast<int64_t>(rows.size());
        ++stats.batches;
        stats.last_success_ms = unix_ms();
        co_return true;
      }
      if (d.outcome == Delivery::Outcome::reject) {
        if (rows.size() > 1) {
          size_t mid = begin + (end - begin) / 2;
          if (!co_await deliver(w, batch, begin, mid)) co_return false;
          co_return co_await deliver(w, batch, mid, end);
        }
        if (auto held = log_limit.allow("reject"))
          spdlog::warn("{} rejected the line at offset {} of {}: {}; the row is dead-lettered{}",
                       sink.name(), rows[0].offset, rows[0].info->path, d.detail,
                       *held ? " (" + std::to_string(*held) + " more rejections not logged)" : "");
        std::vector<RowKey> ids = ids_of(rows);
        Status st = co_await outbox.run([&](outbox::Outbox& o) { return o.bury(ids, d.detail); });
        if (!st)
          spdlog::error("cannot dead-letter the line at offset {} of {}: {}", rows[0].offset,
                        rows[0].info->path, st.message());
        ++stats.dead;
        release(ids);
        co_return true;
      }

      // Retry: count the attempt, dead-letter rows past max_attempts, back off.
      ++attempt;
      ++stats.retried;
      std::vector<RowKey> ids = ids_of(rows), dead;
      auto failed_rows = co_await outbox.run([&](outbox::Outbox& o) {
        return o.fail(ids, d.detail, cfg.delivery.max_attempts);
      });
      if (failed_rows) {
        dead = std::move(*failed_rows);
      } else if (auto held = log_limit.allow("fail")) {
        // The attempt is not counted (the rows stay pending, unchanged): the
        // retry goes on; max_attempts is reached later than configured.
        spdlog::warn("cannot count a failed attempt on {} rows in the outbox: {}{}", ids.size(),
                     failed_rows.error().message(),
                     *held ? " (" + std::to_string(*held) + " similar failures not logged)" : "");
      }
      milliseconds delay = std::max(policy.delay(attempt, w.rng), d.retry_after);
      if (auto held = log_limit.allow("retry"))
        spdlog::warn("{} failed ({}), attempt {}; retrying {} rows in {} ms{}", sink.name(),
                     d.detail, attempt, rows.size(), delay.count(),
                     *held ? " (" + std::to_string(*held) + " similar failures not logged)" : "");
      if (!dead.empty()) {
        stats.dead += static_cast<int64_t>(dead.size());
        spdlog::error("{} rows reached max_attempts = {} and are dead-lettered: {}", dead.size(),
                      cfg.delivery.max_attempts, d.detail);
        release(dead);
        if (dead.size() == rows.size()) co_return true;
        // Some rows are dead, some not (they had different attempt counts): go on
        // with each run of live rows. Indices are not moved, so a caller that is
        // splitting this batch keeps valid ranges.
        KeySet gone(dead.begin(), dead.end());
        if (stopping.load()) co_return false;
        co_await sleep(w, delay);
        for (size_t i = begin; i < end;) {
          if (gone.count(batch.rows[i].key())) {
            ++i;
            continue;
          }
          size_t j = i;
          while (j < end && !gone.count(batch.rows[j].key())) ++j;
          if (!co_await deliver(w, batch, i, j)) co_return false;
          i = j;
        }
        co_return true;
      }
      if (stopping.load()) co_return false;
      co_await sleep(w, delay);
      if (stopping.load()) co_return false;
    }
  }

  asio::awaitable<void> work(Worker& w) {
    const auto& dc = cfg.delivery;
    const int lane = lanes > 1 ? w.index : 0;
    milliseconds idle_wait{10};
    Batch batch;
    while (!stopping.load()) {
      batch.rows = co_await lease(lane, dc.batch_rows, dc.batch_bytes);
      if (batch.rows.empty()) {
        // Nothing to do: sleep until wake() (new rows) or a growing timeout.
        w.idle = true;
        if (!w.woken) co_await sleep(w, idle_wait);
        w.woken = false;
        w.idle = false;
        idle_wait = std::min(idle_wait * 2, milliseconds(1000));
        continue;
      }
      idle_wait = milliseconds(10);
      if (static_cast<int64_t>(batch.rows.size()) < dc.batch_rows && dc.linger.count() > 0 &&
          !stopping.load()) {
        // Not full: give the batch a moment to fill.
        co_await sleep(w, dc.linger);
        int64_t room_rows = dc.batch_rows - static_cast<int64_t>(batch.rows.size());
        int64_t room_bytes = dc.batch_bytes - batch.payload_bytes();
        if (room_bytes > 0 && !stopping.load()) {
          auto more = co_await lease(lane, room_rows, room_bytes);
          for (auto& r : more) batch.rows.push_back(std::move(r));
        }
      }
      try {
        builder.build(batch);
      } catch (const std::exception& e) {
        // A bug, not bad input (parsers turn bad lines into parse_error): keep
        // the rows pending, say so, and stop this worker rather than spin.
        spdlog::error("cannot build records for {} rows: {}; they stay in the outbox", batch.rows.size(), e.what());
        release(ids_of(batch.rows));
        throw;
      }
      bool done = co_await deliver(w, batch, 0, batch.rows.size());
      if (!done) {
        // Stopping with rows in hand: they stay pending for the next run.
        co_await wait_acks(w);
        release(ids_of(batch.rows));
      }
    }
    co_await wait_acks(w);
  }

  // Runs on join_strand (the channel's only user) until every worker ended;
  // the last one sends on the channel. A member coroutine, not a capturing
  // lambda: its state must not live in a copied closure.
  asio::awaitable<void> join() {
    while (running.load() > 0)
      co_await workers_ended.async_receive(asio::as_tuple(asio::use_awaitable));
  }

  void wake_all() {
    for (auto& w : workers) {
      if (!w->idle.load()) continue;
      Worker* wp = w.get();
      asio::post(wp->strand, [wp] {
        wp->woken = true;
        wp->timer.cancel();
      });
    }
  }

  void stop_all() {
    stopping = true;
    for (auto& w : workers) {
      Worker* wp = w.get();
      asio::post(wp->strand, [wp] { wp->timer.cancel(); });
    }
  }
};

Dispatcher::Dispatcher(asio::any_io_executor executor, const config::Config& config,
                       outbox::AsyncOutbox& outbox, sinks::Sink& sink)
    : impl_(std::make_shared<Impl>(executor, config, outbox, sink)) {}

Dispatcher::~Dispatcher() = default;

asio::awaitable<void> Dispatcher::run() {
  auto impl = impl_;
  for (auto& w : impl->workers) {
    ++impl->running;
    Worker* wp = w.get();
    asio::co_spawn(wp->strand, impl->work(*wp), [impl](std::exception_ptr e) {
      if (e) {
        const std::string what = what_of(e);
        spdlog::error("delivery worker stopped: {}; stopping the relay", what);
        impl->failed = true;
        impl->stop_all();
        // The whole relay, not only delivery: reading on would fill the outbox
        // behind a relay that can no longer deliver.
        report_failure("delivery worker stopped: " + what);
      }
      if (--impl->running == 0)
        asio::post(impl->join_strand,
                   [impl] { (void)impl->workers_ended.try_send(boost::system::error_code{}); });
    });
  }
  co_await asio::co_spawn(impl->join_strand, impl->join(), asio::use_awaitable);
}

void Dispatcher::stop() { impl_->stop_all(); }
bool Dispatcher::failed() const { return impl_->failed.load(); }
void Dispatcher::wake() { impl_->wake_all(); }
const DispatchStats& Dispatcher::stats() const { return impl_->stats; }

}  // namespace tailbox::dispatch
