#include "sinks/rabbitmq/rabbitmq_sink.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/thread_pool.hpp>
#include <limits>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "core/blocking.hpp"
#include "core/secret.hpp"
#include "sinks/ndjson.hpp"
#include "sinks/rabbitmq/classify.hpp"
#include "sinks/rabbitmq/connection.hpp"
#include "sinks/rabbitmq/options.hpp"

namespace tailbox::sinks {

namespace asio = boost::asio;
using namespace rabbitmq;
using std::chrono::milliseconds;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr const char* kMarkerType = "tailbox.marker";
constexpr int kReadPrefetch = 1000;
constexpr int64_t kNoBound = std::numeric_limits<int64_t>::max();

std::string nonce() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd());
  char buf[17];
  snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(gen()));
  return buf;
}

}  // namespace

struct RabbitmqSink::Impl {
  Options o;
  std::string host_id, host_prefix, name, lock_name, where;
  bool stream = false;
  KeysInOutbox in_outbox;
  asio::thread_pool pool{1};
  std::unique_ptr<Connection> conn;

  // Owned by the delivering thread (one delivery at a time).
  // Records stored in the queue whose rows are still to be delivered: found
  // by a read-back (their exact offset), or acked in a failed attempt (a bound:
  // they lie at or after it). Acknowledged without being published again.
  std::unordered_map<std::string, int64_t> skip;
  // Stream only: sent in a failed attempt without an answer (or nacked):
  // maybe stored, at or after the bound. Read back before they are sent again.
  std::unordered_map<std::string, int64_t> unsure;
  // Stream only: every message of ours before it is confirmed or in `skip`.
  int64_t high = 0;
  std::optional<std::string> last_state;  // the last state handed out
  clock_type::time_point last_advance{};
  std::string buffer;

  ~Impl() {
    pool.join();
    try {
      conn.reset();
    } catch (...) {
    }
  }

  std::string state() const {
    int64_t s = high;
    for (const auto& [key, off] : skip) s = std::min(s, off);
    for (const auto& [key, off] : unsure) s = std::min(s, off);
    return o.queue + ":" + std::to_string(s);
  }

  // A new connection: password read again, the lock (stream), the queue.
  // Waits up to `timeout` for the broker to close this relay's previous
  // connection (its lock). Throws std::runtime_error.
  void connect() {
    conn.reset();
    const auto deadline = clock_type::now() + o.timeout;
    for (;;) {
      std::string password = read_secret("password", o.password_file, o.password_env);
      auto c = std::make_unique<Connection>(o, password, "tailbox " + host_id);
      std::fill(password.begin(), password.end(), '\0');
      try {
        if (stream) c->lock(lock_name);
        c->declare_queue(o.queue, o.queue_type, !o.declare);
        conn = std::move(c);
        return;
      } catch (const ConnectionError& e) {
        if (e.failure.code == 405 && clock_type::now() < deadline) {
          std::this_thread::sleep_for(milliseconds(200));
          continue;
        }
        if (e.failure.code == 405)
          throw std::runtime_error(
              "the exclusive queue " + lock_name + " is still held by another connection: the "
              "broker has not closed an earlier connection of this relay yet (it does within two "
              "heartbeats), or another relay uses host_id " + host_id);
        if (e.failure.code == 404)
          throw std::runtime_error("queue " + o.queue + " does not exist (declare it, or set "
                                   "declare = true): " + e.what());
        throw;
      }
    }
  }

  struct ReadBack {
    int64_t seen = 0, stale = 0, marker = -1;
  };

  void keep_in_outbox(std::vector<std::pair<std::string, int64_t>>& found, ReadBack& rb,
                      const KeysInOutbox& lookup) {
    if (found.empty()) return;
    std::vector<std::string> keys;
    keys.reserve(found.size());
    for (const auto& [key, off] : found) keys.push_back(key);
    std::vector<bool> in = lookup ? lookup(keys) : std::vector<bool>(keys.size(), true);
    if (in.size() != keys.size())
      throw std::runtime_error("the outbox lookup answered " + std::to_string(in.size()) + " of " +
                               std::to_string(keys.size()) + " keys");
    for (size_t i = 0; i < found.size(); ++i) {
      if (!in[i]) {
        ++rb.stale;
        continue;
      }
      auto [it, fresh] = skip.emplace(found[i].first, found[i].second);
      if (!fresh) it->second = std::min(it->second, found[i].second);
    }
    found.clear();
  }

  // Publishes a marker, then reads the stream from offset `from` up to it:
  // this host's message_ids whose keys `lookup` says are still to be
  // delivered go into `skip` (with their offsets). Throws on any failure.
  ReadBack read_back(int64_t from, const KeysInOutbox& lookup) {
    const std::string marker_id = "tailbox-marker/" + host_id + "/" + nonce();
    OutMessage m;
    m.routing_key = o.queue;  // the default exchange: straight into the stream
    m.message_id = marker_id;
    m.type = kMarkerType;
    const uint64_t tag = conn->publish(m, true);
    for (bool acked = false; !acked;) {
      Event e = conn->next(clock_type::now() + o.timeout);
      if (e.type == Event::Type::timeout)
        throw std::runtime_error("no confirm for the read-back's marker within " +
                                 std::to_string(o.timeout.count()) + " ms");
      if (e.type == Event::Type::returned && e.message_id == marker_id)
        throw std::runtime_error("the read-back's marker was returned: " + e.text);
      if (e.type == Event::Type::nack && (e.tag == tag || (e.multiple && e.tag > tag)))
        throw std::runtime_error("the broker nacked the read-back's marker");
      if (e.type == Event::Type::ack && (e.tag == tag || (e.multiple && e.tag > tag))) acked = true;
    }
    conn->start_read(o.queue, from, kReadPrefetch);
    ReadBack rb;
    std::vector<std::pair<std::string, int64_t>> found;
    uint64_t unacked = 0, delivered = 0;
    for (;;) {
      Event e = conn->next(clock_type::now() + o.timeout);
      if (e.type == Event::Type::timeout && delivered == 0 && from > 0) {
        // Not even the marker: the stream ends before `from` (it was deleted
        // and declared again since that offset was committed). Read it all.
        spdlog::warn("{}: stream {} holds nothing from offset {} on, not even the marker just "
                     "published: it was deleted and declared again; reading it from its start",
                     name, o.queue, from);
        conn->end_read();
        from = 0;
        conn->start_read(o.queue, from, kReadPrefetch);
        continue;
      }
      if (e.type == Event::Type::timeout)
        throw std::runtime_error("reading queue " + o.queue + " back from offset " +
                                 std::to_string(from) + ": nothing within " +
                                 std::to_string(o.timeout.count()) + " ms (read " +
                                 std::to_string(rb.seen) + " messages)");
      if (e.type != Event::Type::delivery) continue;
      ++delivered;
      if (++unacked >= kReadPrefetch / 4) {
        conn->ack_delivery(e.tag);
        unacked = 0;
      }
      if (e.message_id == marker_id) {
        rb.marker = e.stream_offset;
        break;
      }
      if (e.stream_offset >= 0 && e.stream_offset < from) continue;
      ++rb.seen;
      if (e.message_id.starts_with(host_prefix)) found.emplace_back(e.message_id, e.stream_offset);
      if (found.size() >= 4096) keep_in_outbox(found, rb, lookup);
    }
    conn->end_read();
    keep_in_outbox(found, rb, lookup);
    if (rb.marker < 0) throw std::runtime_error("the read-back's marker has no x-stream-offset");
    return rb;
  }

  std::optional<std::string> open(const std::optional<std::string>& committed) {
    skip.clear();
    unsure.clear();
    connect();
    if (!stream) {
      spdlog::info("{}: connected to {}; {} queue {} (at-least-once)", name, where,
                   queue_type_name(o.queue_type), o.queue);
      return std::nullopt;
    }
    std::optional<int64_t> from;
    if (committed) {
      size_t colon = committed->rfind(':');
      if (colon == o.queue.size() && committed->compare(0, colon, o.queue) == 0) {
        try {
          from = std::stoll(committed->substr(colon + 1));
        } catch (const std::exception&) {
        }
      }
      if (!from)
        spdlog::info("{}: the committed state \"{}\" is not an offset of queue {}; starting at "
                     "its end", name, *committed, o.queue);
    }
    if (!from) {
      // Nothing of ours waits in the stream: start at its end. The broker's
      // count lags behind and is never more than the next offset: a safe
      // (lower) start for the next read-back.
      high = static_cast<int64_t>(conn->declare_queue(o.queue, o.queue_type, true));
      spdlog::info("{}: connected to {}; stream {}; starting at offset {}", name, where, o.queue, high);
      last_state = state();
      return last_state;
    }
    ReadBack rb = read_back(*from, in_outbox);
    if (*from > rb.marker) {
      spdlog::warn("{}: stream {} ends at offset {}, before the committed one ({}): it was "
                   "deleted and declared again; lines not yet confirmed are published again",
                   name, o.queue, rb.marker, *from);
    }
    high = rb.marker;
    spdlog::info("{}: connected to {}; stream {}; read back {} messages from offset {}: {} of "
                 "this host's were published but not confirmed and will not be published again "
                 "({} more were confirmed already){}", name, where, o.queue, rb.seen, *from,
                 skip.size(), rb.stale, in_outbox ? "" : " (no outbox lookup: every one is held)");
    last_state = state();
    return last_state;
  }

  // Before records sent without an answer go out again: read the stream back
  // from the lowest bound (on a connection opened after the broker closed the
  // one that sent them). Found: into `skip`; not found: not stored, sent again.
  void recheck_unsure() {
    int64_t from = kNoBound;
    for (const auto& [key, bound] : unsure) from = std::min(from, bound);
    KeysInOutbox pending = [this](const std::vector<std::string>& ks) {
      std::vector<bool> in;
      in.reserve(ks.size());
      for (const auto& k : ks) in.push_back(unsure.count(k) > 0 || skip.count(k) > 0);
      return in;
    };
    const size_t held_before = skip.size();
    ReadBack rb = read_back(from, pending);
    const size_t n = unsure.size();
    unsure.clear();
    high = std::max(high, rb.marker);
    spdlog::info("{}: {} lines were sent without an answer: read back {} messages of stream {} "
                 "from offset {}: {} were stored and will not be published again", name, n,
                 rb.seen, o.queue, from, skip.size() - held_before);
  }

  // After a confirmed batch: the broker's message count, measured now, is
  // at most the stream's next offset, so every message published from now on
  // lands at or after it, and every earlier one of ours is confirmed (this
  // batch's rows are deleted in the transaction that commits the state) or
  // held in `skip`/`unsure`. It lags a few seconds behind (broker metrics):
  // the state trails the stream's end by that much. At most once a second;
  // a failure only leaves the state where it was.
  void advance() {
    const auto now = clock_type::now();
    if (now - last_advance < std::chrono::seconds(1)) return;
    last_advance = now;
    try {
      high = std::max(high, static_cast<int64_t>(conn->declare_queue(o.queue, o.queue_type, true)));
    } catch (const std::exception& e) {
      conn.reset();
      spdlog::debug("{}: reading the stream's message count: {}", name, e.what());
    }
  }

  Delivery finish(std::optional<std::string> now) {
    if (!stream || now == last_state) return Delivery::delivered();
    last_state = now;
    return Delivery::delivered(std::move(now));
  }

  // One batch, on the sink's thread. Never throws.
  Delivery publish(std::span<const Record> batch) noexcept {
    try {
      return publish_batch(batch);
    } catch (const ConnectionError& e) {
      conn.reset();
      return Delivery::retry(e.what());
    } catch (const std::exception& e) {
      conn.reset();
      return Delivery::retry(e.what());
    } catch (...) {
      conn.reset();
      return Delivery::retry("unexpected exception");
    }
  }

  Delivery publish_batch(std::span<const Record> batch) {
    // rabbitmq-c answers heartbeats only inside its calls: after a pause the
    // broker may have dropped the connection; a fresh one is cheaper than a
    // batch lost to a dead socket.
    if (conn && o.heartbeat.count() > 0 && conn->idle_for() > o.heartbeat) conn.reset();
    if (!conn) {
      try {
        connect();
      } catch (const std::exception& e) {
        return Delivery::retry(std::string("connecting to RabbitMQ: ") + e.what());
      }
    }
    if (stream && !unsure.empty()) {
      try {
        recheck_unsure();
      } catch (const std::exception& e) {
        conn.reset();
        return Delivery::retry(std::string("reading the stream back before publishing again "
                                           "lines sent without an answer: ") + e.what());
      }
    }
    const int64_t bound = high;  // every message of this batch lands at or after it

    struct Sent {
      std::string key;
      bool acked = false, nacked = false, returned = false;
    };
    std::vector<Sent> sent;
    std::vector<std::string> hits;
    std::unordered_map<std::string, size_t> by_key;
    std::vector<uint64_t> tags;
    sent.reserve(batch.size());
    std::optional<Failure> failure;
    size_t outstanding = 0;
    try {
      for (const Record& r : batch) {
        std::string key(r.key);
        if (skip.count(key)) {
          hits.push_back(std::move(key));
          continue;
        }
        buffer.clear();
        if (o.ndjson) {
          append_ndjson(buffer, r);
          buffer.pop_back();  // a message is one object, no newline
        } else {
          buffer.append(r.line);
        }
        const std::string rk = routing_key_for(o, r.host, r.source);
        OutMessage m;
        m.exchange = o.exchange;
        m.routing_key = rk;
        m.message_id = r.key;
        m.body = buffer;
        m.host = r.host;
        m.source = r.source;
        m.path = r.path;
        m.offset = r.offset;
        // Counted before the call: a publish that fails half-way may be stored.
        sent.push_back({std::move(key)});
        by_key.emplace(sent.back().key, sent.size() - 1);
        ++outstanding;
        tags.push_back(conn->publish(m, o.mandatory));
      }
      if (buffer.capacity() > (4u << 20)) std::string().swap(buffer);

      const auto deadline = clock_type::now() + o.timeout;
      while (outstanding > 0) {
        Event e = conn->next(deadline);
        if (e.type == Event::Type::timeout) {
          failure = Failure{Failure::Kind::timeout, 0,
                            "no publisher confirm for " + std::to_string(outstanding) + " of " +
                                std::to_string(sent.size()) + " messages within " +
                                std::to_string(o.timeout.count()) + " ms"};
          break;
        }
        if (e.type == Event::Type::returned) {
          auto it = by_key.find(e.message_id);
          if (it != by_key.end()) sent[it->second].returned = true;
          if (!failure) failure = Failure{Failure::Kind::returned, e.code, e.text};
          continue;
        }
        if (e.type != Event::Type::ack && e.type != Event::Type::nack) continue;
        // Tags are consecutive from tags[0]; `multiple` answers every one up to e.tag.
        for (size_t i = 0; i < tags.size(); ++i) {
          if (tags[i] > e.tag) break;
          if (tags[i] != e.tag && !e.multiple) continue;
          Sent& s = sent[i];
          if (s.acked || s.nacked) continue;
          (e.type == Event::Type::ack ? s.acked : s.nacked) = true;
          --outstanding;
          if (e.type == Event::Type::nack && (!failure || failure->kind != Failure::Kind::returned))
            failure = Failure{Failure::Kind::nacked, 0, ""};
        }
      }
    } catch (const ConnectionError& e) {
      failure = e.failure;
    }
    if (failure && failure->kind != Failure::Kind::returned && failure->kind != Failure::Kind::nacked)
      conn.reset();  // no answer: a new connection (and, for a stream, a read-back) first

    if (!failure) {
      for (const auto& key : hits) skip.erase(key);
      if (stream) advance();
      return finish(stream ? std::optional<std::string>(state()) : std::nullopt);
    }
    // What the broker acked is stored: never published again. What it did not
    // answer (or nacked) may be stored: read back first (stream). Returned
    // messages went nowhere.
    for (const Sent& s : sent) {
      if (s.returned) continue;
      if (s.acked) {
        skip.emplace(s.key, bound);
        unsure.erase(s.key);
      } else if (stream) {
        unsure.emplace(s.key, bound);
      }
    }
    Verdict v = classify(*failure);
    return v.reject ? Delivery::reject(v.reason) : Delivery::retry(v.reason);
  }
};

RabbitmqSink::RabbitmqSink(config::Settings& settings, std::string host_id, asio::any_io_executor)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.o = parse_options(settings);
  m.host_id = std::move(host_id);
  m.host_prefix = m.host_id + "/";
  m.stream = m.o.queue_type == QueueType::stream;
  m.name = "rabbitmq:" + m.o.queue;
  m.lock_name = ("tailbox.lock." + m.host_id + "." + m.o.queue).substr(0, 255);
  m.where = std::string(m.o.tls ? "amqps://" : "amqp://") + m.o.host + ":" +
            std::to_string(m.o.port) + (m.o.vhost == "/" ? "" : "/" + m.o.vhost);
}

RabbitmqSink::~RabbitmqSink() = default;

const std::string& RabbitmqSink::name() const { return impl_->name; }

std::string RabbitmqSink::guarantee() const {
  if (impl_->stream)
    return "exactly-once: publisher confirms into a stream queue; after a crash or an unanswered "
           "batch the stream is read back from the last acknowledged offset and what is already "
           "there is not published again";
  return "at-least-once: publisher confirms into a " + std::string(queue_type_name(impl_->o.queue_type)) +
         " queue; a redelivered message has the same message_id (deduplicate on it)";
}


std::optional<std::string> RabbitmqSink::open(const OpenContext& context) {
  impl_->in_outbox = context.keys_in_outbox;
  return impl_->open(context.committed_state);
}

asio::awaitable<Delivery> RabbitmqSink::deliver(std::span<const Record> batch) {
  Impl* m = impl_.get();
  auto work = [m, batch] { return m->publish(batch); };
  co_return co_await run_blocking(m->pool, work);
}

}  // namespace tailbox::sinks
