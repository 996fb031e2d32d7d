#include "sinks/nats/nats_sink.hpp"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <limits>
#include <stdexcept>
#include <unordered_map>

#include "core/blocking.hpp"
#include "sinks/nats/classify.hpp"
#include "sinks/nats/connection.hpp"
#include "sinks/nats/ledger.hpp"
#include "sinks/ndjson.hpp"

namespace tailbox::sinks {

namespace asio = boost::asio;
using nats::kMsgId;
using nats::status_text;
using std::chrono::milliseconds;

namespace {

// A header value must not hold CR or LF (it would end the header).
std::string header_value(std::string_view v) {
  std::string out(v);
  for (char& c : out)
    if (c == '\r' || c == '\n') c = ' ';
  return out;
}

}  // namespace

struct NatsSink::Impl {
  // A message of this process (the libnats message is built before publishing).
  struct Out {
    std::string key;
    natsMsg* msg = nullptr;
  };

  nats::Options o;
  std::string host_id, name, display;
  std::string host_prefix;    // "<host_id>/": the keys this relay wrote
  KeysInOutbox in_outbox;     // from open(); unset: every key read back holds
  asio::thread_pool pool{1};  // runs the blocking part of deliver()

  std::unique_ptr<nats::Connection> conn;

  // Owned by the delivering thread (one delivery at a time): what was sent,
  // acknowledged and read back, and so the sequence to commit.
  nats::Ledger ledger;
  milliseconds window{0};  // the stream's duplicate window (stream info)
  std::chrono::steady_clock::time_point attempt_start;  // of the attempt in flight
  std::string buffer;

  ~Impl() {
    pool.join();
    if (conn) conn->close();
  }

  struct ReadBack {
    uint64_t seen = 0;   // messages looked at
    uint64_t stale = 0;  // this host's, whose rows are no longer in the outbox
  };

  // Of the keys read back, those whose rows are still in the outbox (pending
  // or dead) are held in the ledger; the others were confirmed (or purged) after they
  // were published, and are forgotten.
  void keep_in_outbox(std::vector<std::pair<std::string, uint64_t>>& found, ReadBack& rb,
                      const KeysInOutbox& lookup) {
    if (found.empty()) return;
    std::vector<std::string> keys;
    keys.reserve(found.size());
    for (const auto& [key, seq] : found) keys.push_back(key);
    std::vector<bool> in = lookup ? lookup(keys) : std::vector<bool>(keys.size(), true);
    if (in.size() != keys.size())
      throw std::runtime_error("the outbox lookup answered " + std::to_string(in.size()) +
                               " of " + std::to_string(keys.size()) + " keys");
    for (size_t i = 0; i < found.size(); ++i) {
      if (!in[i]) {
        ++rb.stale;
        continue;
      }
      ledger.hold(found[i].first, found[i].second);
    }
    found.clear();
  }

  // Reads this host's messages after sequence `after`, up to `last`, into
  // the ledger (those whose rows are still in the outbox, asked through `lookup`).
  ReadBack read_back(uint64_t after, uint64_t last, const KeysInOutbox& lookup) {
    ReadBack rb;
    rb.seen = conn->read_back(after, last, nats::host_filter(o.subject, host_id), host_prefix,
                              [&](auto& found) { keep_in_outbox(found, rb, lookup); });
    return rb;
  }

  // The stream's first and last sequences; also refreshes `window`.
  nats::Connection::StreamState stream_state(bool create) {
    auto st = conn->stream_state(create);
    window = st.window;
    return st;
  }

  std::optional<std::string> open(const std::optional<std::string>& committed) {
    ledger.restart(ledger.high());  // forgets what was held or unsure
    conn->connect();
    const auto [first, last, stream_window] = stream_state(true);
    (void)stream_window;
    const int64_t window_ms = window.count();

    std::optional<uint64_t> from;
    if (committed) {
      size_t colon = committed->rfind(':');
      if (colon != std::string::npos && committed->compare(0, colon, o.stream) == 0 &&
          colon == o.stream.size()) {
        try {
          from = std::stoull(committed->substr(colon + 1));
        } catch (const std::exception&) {
        }
      }
      if (!from)
        spdlog::info("{}: the committed state \"{}\" is not a sequence of stream {}; starting at "
                     "its end", name, *committed, o.stream);
    }
    if (from && *from > last) {
      spdlog::warn("{}: stream {} ends at sequence {}, before the last acknowledged one ({}): it "
                   "was purged or recreated; nothing is read back, and lines not yet confirmed "
                   "are published again", name, o.stream, last, *from);
      from.reset();
    }
    if (!from) {
      ledger.restart(last);
      spdlog::info("{}: connected to {}; stream {} (duplicate window {} ms); starting after "
                   "sequence {}", name, display, o.stream, window_ms, last);
      return o.stream + ":" + std::to_string(last);
    }
    ledger.restart(*from);
    if (*from + 1 < first)
      spdlog::warn("{}: stream {} no longer holds sequences {}..{} (retention removed them before "
                   "tailbox confirmed them): lines published then may be published again",
                   name, o.stream, *from + 1, first - 1);
    ReadBack rb = *from < last ? read_back(*from, last, in_outbox) : ReadBack{};
    spdlog::info("{}: connected to {}; stream {} (duplicate window {} ms); read back {} messages "
                 "after sequence {}: {} of this host's were published but not confirmed and will "
                 "not be published again ({} more were confirmed already){}", name, display,
                 o.stream, window_ms, rb.seen, *from, ledger.held_count(), rb.stale,
                 in_outbox ? "" : " (no outbox lookup: every one holds the state)");
    return std::nullopt;
  }

  // The state to commit: every message of ours still pending in the outbox
  // lies above it.
  std::string state() const { return o.stream + ":" + std::to_string(ledger.committed()); }

  // Forgets the batch in flight: late PubAcks are then ignored. What was
  // acked is stored (not published again); what was sent without an answer
  // may be (the state stays below it).
  void end_attempt(const std::vector<Out>& outs, size_t sent) {
    auto answers = conn->end_batch(true);
    for (size_t i = 0; i < sent && i < outs.size(); ++i) {
      auto it = answers.find(outs[i].key);
      uint64_t seq = it == answers.end() ? 0 : it->second;
      ledger.attempt_failed(outs[i].key, seq, attempt_start);
    }
  }

  // Before records sent in an earlier attempt without an answer are published
  // again: when half of the duplicate window or more has passed since then,
  // the window may no longer drop a second copy, so the stream is read back
  // first (as open() does, from below the oldest of them up to its current
  // end). Those found there are held in the ledger and are acknowledged without being
  // published; the others were not stored by the time the read-back began, and
  // count from then on. Returns a retry when the stream cannot be read back
  // (they are never published blindly), nullopt to go on.
  std::optional<Delivery> recheck_unsure(std::span<const Record> batch) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::string> batch_keys;
    batch_keys.reserve(batch.size());
    for (const Record& r : batch) batch_keys.push_back(header_value(r.key));
    auto recheck = ledger.recheck_needed(batch_keys, start, window);
    if (!recheck) return std::nullopt;
    const auto& keys = recheck->keys;
    const auto age = std::chrono::duration_cast<milliseconds>(start - recheck->oldest).count();
    try {
      const auto st = stream_state(false);
      // Only our own records without an answer (or already held) are still
      // pending in the outbox: every other key of ours was confirmed.
      KeysInOutbox pending = [this](const std::vector<std::string>& ks) {
        std::vector<bool> in;
        in.reserve(ks.size());
        for (const auto& k : ks) in.push_back(ledger.maybe_stored(k));
        return in;
      };
      ReadBack rb = recheck->after < st.last ? read_back(recheck->after, st.last, pending)
                                             : ReadBack{};
      size_t found = ledger.recheck_done(keys, st.last, start);
      spdlog::info("{}: {} lines of this batch were sent {} ms ago without an answer (duplicate "
                   "window {} ms): read back {} messages of stream {} after sequence {}: {} were "
                   "stored and will not be published again", name, keys.size(), age,
                   window.count(), rb.seen, o.stream, recheck->after, found);
    } catch (const std::exception& e) {
      return fail({nats::Failure::Kind::read_back, NATS_OK, {}, 0, 0,
                   "reading stream " + o.stream + " back before publishing again lines sent " +
                       std::to_string(age) + " ms ago without an answer: " + e.what()});
    }
    return std::nullopt;
  }

  static Delivery fail(const nats::Failure& f) {
    nats::Verdict v = nats::classify(f);
    return v.reject ? Delivery::reject(std::move(v.reason)) : Delivery::retry(std::move(v.reason));
  }

  // One batch, on the sink's thread. Never throws.
  Delivery publish(std::span<const Record> batch) noexcept {
    std::vector<Out> outs;
    size_t sent = 0;
    try {
      Delivery d = publish(batch, outs, sent);
      for (auto& out : outs) natsMsg_Destroy(out.msg);
      return d;
    } catch (const std::exception& e) {
      try {
        end_attempt(outs, sent);
      } catch (...) {
      }
      for (auto& out : outs) natsMsg_Destroy(out.msg);
      return fail({nats::Failure::Kind::other, NATS_OK, {}, 0, 0, e.what()});
    } catch (...) {
      return fail({nats::Failure::Kind::other, NATS_OK, {}, 0, 0, "unexpected exception"});
    }
  }

  Delivery publish(std::span<const Record> batch, std::vector<Out>& outs, size_t& sent) {
    if (!conn->usable()) {
      // libnats gave the connection up (e.g. an authorization error on
      // reconnect) and will not reconnect by itself: open a new one, with the
      // secrets read again. The ledger is kept.
      try {
        conn->connect();
      } catch (const std::exception& e) {
        return fail({nats::Failure::Kind::connect, NATS_OK, {}, 0, 0, e.what()});
      }
      spdlog::info("{}: connected to {} again", name, display);
    }
    if (!conn->connected())
      return fail({nats::Failure::Kind::not_connected, NATS_OK, {}, 0, 0, display});
    if (auto d = recheck_unsure(batch)) return std::move(*d);
    attempt_start = std::chrono::steady_clock::now();
    const int64_t max_payload = conn->max_payload();

    // Build every message first: one too large for the server rejects the
    // batch before anything is sent (the dispatcher splits it to find it).
    std::vector<std::string> hits;
    outs.reserve(batch.size());
    for (const Record& r : batch) {
      std::string key = header_value(r.key);
      if (ledger.held(key)) {
        hits.push_back(std::move(key));
        continue;
      }
      buffer.clear();
      if (o.ndjson) {
        append_ndjson(buffer, r);
        buffer.pop_back();  // the newline: a message is one object
      } else {
        buffer.append(r.line);
      }
      std::string offset = std::to_string(r.offset);
      std::string host = header_value(r.host), source = header_value(r.source),
                  path = header_value(r.path);
      // HPUB counts the header block ("NATS/1.0\r\n", "Name: value\r\n"
      // each, "\r\n") and the body against max_payload.
      int64_t size = static_cast<int64_t>(buffer.size() + 12 + 6 * 24 + key.size() + host.size() +
                                          source.size() + path.size() + offset.size() +
                                          o.stream.size());
      if (size > max_payload)
        return fail({nats::Failure::Kind::oversize, NATS_OK, {}, size, max_payload, ""});
      std::string subject = nats::subject_for(o.subject, r.host, r.source);
      natsMsg* msg = nullptr;
      natsStatus s = natsMsg_Create(&msg, subject.c_str(), nullptr, buffer.data(),
                                    static_cast<int>(buffer.size()));
      if (s != NATS_OK) return fail({nats::Failure::Kind::build, s, {}, 0, 0, status_text(s)});
      outs.push_back({std::move(key), msg});
      for (auto [k, v] : {std::pair{kMsgId, outs.back().key.c_str()},
                          std::pair{"Tailbox-Host", host.c_str()},
                          std::pair{"Tailbox-Source", source.c_str()},
                          std::pair{"Tailbox-Path", path.c_str()},
                          std::pair{"Tailbox-Offset", offset.c_str()}})
        if (s == NATS_OK) s = natsMsgHeader_Set(msg, k, v);
      if (s != NATS_OK) return fail({nats::Failure::Kind::build, s, {}, 0, 0, status_text(s)});
    }
    if (buffer.capacity() > (4u << 20)) std::string().swap(buffer);

    if (!outs.empty()) {
      std::optional<nats::Failure> error;
      std::vector<std::string> keys;
      keys.reserve(outs.size());
      for (const auto& out : outs) keys.push_back(out.key);
      conn->begin_batch(keys);
      jsPubOptions po;
      jsPubOptions_Init(&po);
      po.ExpectStream = o.stream.c_str();  // a subject caught by another stream is an error
      const auto deadline = std::chrono::steady_clock::now() + o.timeout;
      for (auto& out : outs) {
        natsStatus s = js_PublishMsgAsync(conn->js(), &out.msg, &po);
        if (s != NATS_OK) {
          error = nats::Failure{nats::Failure::Kind::publish, s, {}, 0, 0, status_text(s)};
          break;
        }
        ++sent;
      }
      if (!error) error = conn->wait_batch(deadline, sent);
      if (error) {
        end_attempt(outs, sent);
        return fail(*error);
      }
      auto answers = conn->end_batch(false);
      for (const auto& out : outs) ledger.published(out.key, answers[out.key]);
    }
    std::string before = state();
    for (const auto& key : hits) ledger.delivered_held(key);
    std::string now = state();
    if (outs.empty() && now == before) return Delivery::delivered();
    return Delivery::delivered(now);
  }
};

NatsSink::NatsSink(config::Settings& settings, std::string host_id, asio::any_io_executor)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.o = nats::parse_options(settings);
  m.host_id = std::move(host_id);
  m.host_prefix = m.host_id + "/";
  m.name = "nats:" + m.o.stream;
  m.display = nats::display_url(m.o.url);
  m.conn = std::make_unique<nats::Connection>(m.o, m.host_id, m.name, m.display);
}

NatsSink::~NatsSink() = default;

const std::string& NatsSink::name() const { return impl_->name; }

std::string NatsSink::guarantee() const {
  return "exactly-once: Nats-Msg-Id dedup inside the stream's duplicate window; beyond it the "
         "stream is read back from the last acknowledged sequence at start";
}


std::optional<std::string> NatsSink::open(const OpenContext& context) {
  impl_->in_outbox = context.keys_in_outbox;
  return impl_->open(context.committed_state);
}

asio::awaitable<Delivery> NatsSink::deliver(std::span<const Record> batch) {
  Impl* m = impl_.get();
  auto work = [m, batch] { return m->publish(batch); };
  co_return co_await run_blocking(m->pool, work);
}

}  // namespace tailbox::sinks
