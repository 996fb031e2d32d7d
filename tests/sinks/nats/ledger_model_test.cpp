// The nats sink's ledger, model-based: random sequences of new rows,
// deliveries (each message stored or not, acknowledged, unanswered or
// refused; the attempt cut short), commits lost in a crash, restarts with a
// read-back, and time passing, applied to the Ledger the way NatsSink drives
// it, against a simple model of a JetStream stream (sequences, Nats-Msg-Id
// dedup inside the duplicate window) and of the outbox. After every step:
// no message is stored twice, and the committed sequence is below every
// stored message whose row is still to be delivered (else a restart would
// not read it back and would publish it again). In-process; no server.
#include "sinks/nats/ledger.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <string>
#include <vector>

using tailbox::sinks::nats::Ledger;
using Seq = Ledger::Seq;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kWindow{100};

struct Model {
  struct Msg {
    std::string key;
    Ledger::Clock::time_point stored;
  };
  std::mt19937 rng;
  Ledger ledger;
  Ledger::Clock::time_point now{};
  std::vector<Msg> stream;           // stream[i] has sequence i + 1
  std::deque<std::string> outbox;    // rows still to be delivered, in order
  Seq committed = 0;                 // the state the outbox holds
  int next_row = 0;
  std::string failure;               // the first broken invariant

  explicit Model(unsigned seed) : rng(seed) {}

  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); }
  bool chance(int percent) { return pick(100) < percent; }
  static bool ours(const std::string& key) { return key.starts_with("h/"); }

  Seq last() const { return stream.size(); }
  bool in_outbox(const std::string& key) const {
    return std::find(outbox.begin(), outbox.end(), key) != outbox.end();
  }

  // The server: a copy inside the window is dropped and answered with the
  // first one's sequence.
  Seq store(const std::string& key) {
    for (size_t i = 0; i < stream.size(); ++i)
      if (stream[i].key == key && now - stream[i].stored < kWindow) return i + 1;
    stream.push_back({key, now});
    return stream.size();
  }

  // Reads our messages after `after` up to `last` back into the ledger, for
  // keys `keep` says still have a row.
  template <typename Keep>
  void read_back(Seq after, Seq upto, Keep keep) {
    for (Seq seq = after + 1; seq <= upto; ++seq)
      if (ours(stream[seq - 1].key) && keep(stream[seq - 1].key))
        ledger.hold(stream[seq - 1].key, seq);
  }

  // NatsSink::open() after a restart: the in-memory ledger is lost.
  void restart() {
    ledger = Ledger();
    Seq from = committed;
    ledger.restart(from);
    if (from < last()) read_back(from, last(), [&](const std::string& k) { return in_outbox(k); });
  }

  // NatsSink::publish() for the first `n` rows.
  void deliver(size_t n) {
    std::vector<std::string> batch(outbox.begin(), outbox.begin() + std::min(n, outbox.size()));
    if (auto rc = ledger.recheck_needed(batch, now, kWindow)) {
      if (chance(20)) return;  // the read-back failed: a retry
      Seq upto = last();
      if (rc->after < upto)
        read_back(rc->after, upto, [&](const std::string& k) { return ledger.maybe_stored(k); });
      ledger.recheck_done(rc->keys, upto, now);
    }
    const auto attempt_start = now;
    std::vector<std::string> outs, hits;
    for (const auto& key : batch) (ledger.held(key) ? hits : outs).push_back(key);
    const bool fails = !outs.empty() && chance(40);
    if (fails) {
      const size_t sent = pick(static_cast<int>(outs.size()) + 1);
      for (size_t i = 0; i < sent; ++i) {
        Seq answer = 0;
        switch (pick(4)) {
          case 0: break;                                   // lost before the server
          case 1: store(outs[i]); break;                   // stored, the PubAck lost
          case 2: answer = store(outs[i]); break;          // stored and acknowledged
          case 3: answer = chance(20) ? Ledger::kRefused : store(outs[i]); break;
        }
        ledger.attempt_failed(outs[i], answer, attempt_start);
      }
      return;
    }
    for (const auto& key : outs) ledger.published(key, store(key));
    for (const auto& key : hits) ledger.delivered_held(key);
    for (const auto& key : batch)
      if (std::none_of(stream.begin(), stream.end(), [&](const Msg& m) { return m.key == key; }))
        fail("delivered " + key + " is not in the stream");
    Seq state = ledger.committed();
    if (chance(10)) {  // a crash before the outbox commits: rows and state stay
      restart();
      return;
    }
    outbox.erase(outbox.begin(), outbox.begin() + batch.size());
    committed = state;
  }

  void fail(std::string what) {
    if (failure.empty()) failure = std::move(what);
  }

  void check() {
    std::map<std::string, int> copies;
    for (const auto& m : stream)
      if (ours(m.key) && ++copies[m.key] == 2) fail(m.key + " is stored twice");
    for (Seq seq = 1; seq <= last(); ++seq) {
      const auto& key = stream[seq - 1].key;
      if (ours(key) && in_outbox(key) && seq <= committed)
        fail("committed " + std::to_string(committed) + " is not below " + key + " at " +
             std::to_string(seq) + ", whose row is still to be delivered");
    }
  }

  void step() {
    switch (pick(10)) {
      case 0: case 1:
        for (int i = pick(4); i >= 0; --i) outbox.push_back("h/1/" + std::to_string(next_row++));
        break;
      case 2: stream.push_back({"other/1/" + std::to_string(pick(1000)), now}); break;
      case 3: restart(); break;
      case 4: now += milliseconds(pick(3) == 0 ? pick(200) : pick(30)); break;
      default: if (!outbox.empty()) deliver(1 + pick(5)); break;
    }
    check();
  }
};

}  // namespace

TEST_SUITE("sinks.nats.ledger") {
  TEST_CASE("random publish/ack/fail/restart/read-back: no message twice, the commit never above "
            "an undelivered row") {
    for (unsigned seed = 1; seed <= 300; ++seed) {
      Model m(seed);
      m.restart();
      for (int i = 0; i < 400 && m.failure.empty(); ++i) m.step();
      // Drain: time passes, no more failures.
      for (int i = 0; i < 200 && !m.outbox.empty() && m.failure.empty(); ++i) {
        m.now += milliseconds(10);
        std::vector<std::string> batch(m.outbox.begin(), m.outbox.end());
        if (auto rc = m.ledger.recheck_needed(batch, m.now, kWindow)) {
          if (rc->after < m.last())
            m.read_back(rc->after, m.last(), [&](const std::string& k) { return m.ledger.maybe_stored(k); });
          m.ledger.recheck_done(rc->keys, m.last(), m.now);
        }
        for (const auto& key : batch)
          if (m.ledger.held(key)) m.ledger.delivered_held(key);
          else m.ledger.published(key, m.store(key));
        m.outbox.clear();
        m.committed = m.ledger.committed();
        m.check();
      }
      INFO("seed " << seed);
      CHECK(m.failure == "");
      CHECK(m.outbox.empty());
      // Exactly once: every row ever written is in the stream once.
      std::map<std::string, int> copies;
      for (const auto& msg : m.stream) ++copies[msg.key];
      for (int row = 0; row < m.next_row; ++row) CHECK(copies["h/1/" + std::to_string(row)] == 1);
    }
  }

  TEST_CASE("a message sent without an answer holds the commit until it is delivered") {
    Ledger l;
    auto t = Ledger::Clock::time_point{};
    l.restart(10);
    l.attempt_failed("h/1/1", 0, t);
    CHECK(l.committed() == 10);
    l.published("h/1/2", 12);
    CHECK(l.committed() == 10);
    l.published("h/1/1", 11);
    CHECK(l.committed() == 12);
  }

  TEST_CASE("a read-back holds the last copy and the commit stays below it") {
    Ledger l;
    l.restart(5);
    l.hold("h/1/1", 7);
    l.hold("h/1/1", 6);
    CHECK(l.held("h/1/1"));
    CHECK(l.committed() == 5);
    l.published("h/1/2", 9);
    CHECK(l.committed() == 6);
    l.delivered_held("h/1/1");
    CHECK_FALSE(l.held("h/1/1"));
    CHECK(l.committed() == 9);
  }

  TEST_CASE("unsure keys are rechecked once half of the duplicate window has passed") {
    Ledger l;
    auto t = Ledger::Clock::time_point{};
    l.restart(3);
    l.attempt_failed("h/1/1", 0, t);
    CHECK_FALSE(l.recheck_needed({"h/1/1"}, t + milliseconds(49), kWindow));
    auto rc = l.recheck_needed({"h/1/1", "h/1/2"}, t + milliseconds(50), kWindow);
    REQUIRE(rc);
    CHECK(rc->keys == std::vector<std::string>{"h/1/1"});
    CHECK(rc->after == 3);
    CHECK(l.recheck_done(rc->keys, 8, t + milliseconds(50)) == 0);
    CHECK(l.committed() == 3);
    CHECK_FALSE(l.recheck_needed({"h/1/1"}, t + milliseconds(60), kWindow));
    auto again = l.recheck_needed({"h/1/1"}, t + milliseconds(100), kWindow);
    REQUIRE(again);
    CHECK(again->after == 8);
  }
}
