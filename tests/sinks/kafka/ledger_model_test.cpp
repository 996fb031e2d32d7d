// The kafka sink's ledger, model-based: random sequences of new rows,
// deliveries (each a transaction that commits, aborts, or commits with an
// unknown outcome that is settled later from the progress record), outbox
// acks that commit later and in order, crashes and restarts that read the
// last committed progress record back, applied to the Ledger the way
// KafkaSink drives it, against a simple model of Kafka (read_committed: the
// rows of committed transactions, the latest progress record) and of the
// outbox. After every step: no row is in Kafka twice, and every row whose
// ack committed is in Kafka. In-process; no broker.
#include "sinks/kafka/ledger.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/record_key.hpp"

using namespace tailbox;
using namespace tailbox::sinks::kafka;

namespace {

struct Model {
  struct Acking {
    uint64_t seq;
    std::vector<std::string> keys;
  };
  std::mt19937 rng;
  Ledger ledger{"h"};
  std::map<std::string, int> kafka;     // row key -> copies committed
  std::string latest;                   // the latest committed progress record
  std::deque<std::string> outbox;       // pending rows, in order
  std::deque<Acking> acking;            // delivered, ack not committed yet (rows leased)
  std::optional<uint64_t> state;        // committed with the last ack
  std::vector<std::string> acked;       // rows whose ack committed
  int next_row = 0;
  std::string failure;

  explicit Model(unsigned seed) : rng(seed) {}
  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); }
  bool chance(int percent) { return pick(100) < percent; }
  void fail(std::string what) {
    if (failure.empty()) failure = std::move(what);
  }

  bool in_outbox(const std::string& key) const {
    if (std::find(outbox.begin(), outbox.end(), key) != outbox.end()) return true;
    for (const auto& a : acking)
      if (std::find(a.keys.begin(), a.keys.end(), key) != a.keys.end()) return true;
    return false;
  }

  // KafkaSink::open(): the in-memory ledger is lost; leased rows are pending again.
  void restart() {
    for (auto a = acking.rbegin(); a != acking.rend(); ++a)
      outbox.insert(outbox.begin(), a->keys.begin(), a->keys.end());
    acking.clear();
    ledger = Ledger("h");
    std::vector<Txn> carried;
    uint64_t record_seq = 0;
    if (!latest.empty()) {
      Progress pr = decode_progress(latest);
      record_seq = pr.seq;
      for (auto& t : pr.listed) {  // still_in_outbox()
        for (auto& [uid, offs] : t.offsets)
          std::erase_if(offs, [&](int64_t off) { return !in_outbox(make_record_key("h", uid, off)); });
        std::erase_if(t.offsets, [](const auto& f) { return f.second.empty(); });
      }
      std::erase_if(pr.listed, [](const Txn& t) { return t.offsets.empty(); });
      carried = std::move(pr.listed);
    }
    ledger.inherit(std::move(carried), state.value_or(0), record_seq);
  }

  void commit_ack() {
    if (acking.empty()) return;
    Acking a = std::move(acking.front());
    acking.pop_front();
    state = a.seq;
    acked.insert(acked.end(), a.keys.begin(), a.keys.end());
    ledger.committed(a.seq);
  }

  // KafkaSink::deliver_transactional() for the first `n` pending rows.
  void deliver(size_t n) {
    if (uint64_t unknown = ledger.unknown()) {  // settle_unknown()
      if (chance(20)) return;                   // the progress topic cannot be read: retry
      bool did_commit = false;
      if (!latest.empty()) {
        Progress pr = decode_progress(latest);
        did_commit = pr.txn == "S." + std::to_string(unknown);
        ledger.saw_seq(pr.seq);
      }
      ledger.settle(did_commit);
    }
    n = std::min(n, outbox.size());
    std::vector<std::string> keys(outbox.begin(), outbox.begin() + n);
    std::vector<Record> batch(n);
    for (size_t i = 0; i < n; ++i) batch[i].key = keys[i];
    uint64_t seq = ledger.next_seq();
    size_t skipped = 0;
    std::vector<const Record*> send = ledger.take_skipped(batch, seq, skipped);
    if (!send.empty()) {
      if (chance(15)) {  // aborted before the progress record
        ledger.forget(seq);
        return;
      }
      std::string txn = "S." + std::to_string(seq);
      std::string record = encode_progress("h", txn, seq, send, ledger.sending(seq, send));
      switch (pick(6)) {
        case 0:  // the commit failed, aborted
          ledger.forget(seq);
          return;
        case 1:  // unknown outcome: it did commit
        case 2:  // unknown outcome: it did not
          if (chance(50)) {
            for (const Record* r : send) ++kafka[std::string(r->key)];
            latest = record;
          }
          ledger.commit_unknown(seq);
          return;
        default:
          for (const Record* r : send) ++kafka[std::string(r->key)];
          latest = record;
      }
    }
    outbox.erase(outbox.begin(), outbox.begin() + n);
    acking.push_back({seq, keys});
  }

  void check() {
    for (const auto& [key, copies] : kafka)
      if (copies > 1) fail(key + " is in Kafka " + std::to_string(copies) + " times");
    for (const auto& key : acked)
      if (!kafka.count(key)) fail(key + " was acknowledged but is not in Kafka");
  }

  void step() {
    switch (pick(10)) {
      case 0: case 1:
        for (int i = pick(4); i >= 0; --i) outbox.push_back(make_record_key("h", "u", next_row++));
        break;
      case 2: restart(); break;
      case 3: case 4: commit_ack(); break;
      default: if (!outbox.empty()) deliver(1 + pick(5)); break;
    }
    check();
  }
};

}  // namespace

TEST_SUITE("sinks.kafka.ledger") {
  TEST_CASE("random deliver/commit/abort/unknown outcome/ack/restart: every row in Kafka once") {
    for (unsigned seed = 1; seed <= 300; ++seed) {
      Model m(seed);
      m.restart();
      for (int i = 0; i < 400 && m.failure.empty(); ++i) m.step();
      // Drain: no more failures.
      for (int i = 0; i < 100 && (!m.outbox.empty() || !m.acking.empty()) && m.failure.empty(); ++i) {
        if (uint64_t unknown = m.ledger.unknown()) {
          bool did_commit = false;
          if (!m.latest.empty()) {
            Progress pr = decode_progress(m.latest);
            m.ledger.saw_seq(pr.seq);
            did_commit = pr.txn == "S." + std::to_string(unknown);
          }
          m.ledger.settle(did_commit);
        }
        if (!m.outbox.empty()) {
          std::vector<std::string> keys(m.outbox.begin(), m.outbox.end());
          std::vector<Record> batch(keys.size());
          for (size_t k = 0; k < keys.size(); ++k) batch[k].key = keys[k];
          uint64_t seq = m.ledger.next_seq();
          size_t skipped = 0;
          auto send = m.ledger.take_skipped(batch, seq, skipped);
          if (!send.empty()) {
            m.latest = encode_progress("h", "S." + std::to_string(seq), seq, send, m.ledger.sending(seq, send));
            for (const Record* r : send) ++m.kafka[std::string(r->key)];
          }
          m.outbox.clear();
          m.acking.push_back({seq, keys});
        }
        m.commit_ack();
        m.check();
      }
      INFO("seed " << seed);
      CHECK(m.failure == "");
      for (int row = 0; row < m.next_row; ++row) CHECK(m.kafka[make_record_key("h", "u", row)] == 1);
    }
  }

  TEST_CASE("a carried row stays listed until the ack of the delivery that skipped it") {
    Ledger l("h");
    Txn t;
    t.seq = 4;
    t.offsets["u"] = {10, 20};
    CHECK(l.inherit({t}, 3, 4) == 2);
    std::string k10 = make_record_key("h", "u", 10), k30 = make_record_key("h", "u", 30);
    std::vector<Record> batch(2);
    batch[0].key = k10;
    batch[1].key = k30;
    uint64_t seq = l.next_seq();
    CHECK(seq == 5);
    size_t skipped = 0;
    auto send = l.take_skipped(batch, seq, skipped);
    CHECK(skipped == 1);
    REQUIRE(send.size() == 1);
    CHECK(send[0]->key == k30);
    CHECK(l.sending(seq, send).size() == 2);
    l.committed(seq);
    REQUIRE(l.unacked().size() == 1);  // the carried one, offset 20 still in the outbox
    CHECK(l.unacked().front().offsets.at("u") == std::set<int64_t>{20});
    CHECK_FALSE(l.skips(k10));
  }
}
