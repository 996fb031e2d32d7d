#include "sinks/kafka/ledger.hpp"

#include <algorithm>

#include "core/record_key.hpp"

namespace tailbox::sinks::kafka {

size_t Ledger::carry(Txn txn) {
  txn.carried = true;
  auto it = unacked_.insert(unacked_.end(), std::move(txn));
  size_t keys = 0;
  for (auto& [uid, offs] : it->offsets)
    for (int64_t off : offs) {
      skip_[make_record_key(host_id_, uid, off)] = Skip{it, 0};
      ++keys;
    }
  return keys;
}

size_t Ledger::inherit(std::vector<Txn> carried, uint64_t committed_seq, uint64_t record_seq) {
  unacked_.clear();
  skip_.clear();
  skipped_by_.clear();
  unknown_seq_ = 0;
  next_seq_ = std::max(committed_seq, record_seq) + 1;
  size_t keys = 0;
  for (auto& t : carried) keys += carry(std::move(t));
  return keys;
}

std::vector<const Record*> Ledger::take_skipped(std::span<const Record> batch, uint64_t seq,
                                                size_t& skipped) {
  std::vector<const Record*> send;
  send.reserve(batch.size());
  for (const Record& r : batch) {
    auto it = skip_.empty() ? skip_.end() : skip_.find(std::string(r.key));
    if (it == skip_.end()) {
      send.push_back(&r);
      continue;
    }
    it->second.skipped_in = seq;
    skipped_by_[seq].push_back(it->first);
    ++skipped;
  }
  return send;
}

const std::list<Txn>& Ledger::sending(uint64_t seq, const std::vector<const Record*>& sent) {
  Txn txn;
  txn.seq = seq;
  for (const Record* r : sent)
    if (auto key = parse_record_key(r->key)) txn.offsets[std::string(key->uid)].insert(key->offset);
  unacked_.push_back(std::move(txn));
  return unacked_;
}

void Ledger::forget(uint64_t seq) {
  unacked_.remove_if([&](const Txn& t) { return !t.carried && t.seq == seq; });
}

std::optional<size_t> Ledger::settle(bool did_commit) {
  std::optional<size_t> keys;
  auto it = std::find_if(unacked_.begin(), unacked_.end(),
                         [&](const Txn& t) { return !t.carried && t.seq == unknown_seq_; });
  if (it != unacked_.end()) {
    Txn t = std::move(*it);
    unacked_.erase(it);
    if (did_commit) keys = carry(std::move(t));
  }
  unknown_seq_ = 0;
  return keys;
}

void Ledger::committed(uint64_t seq) {
  // Rows skipped by this delivery are now gone from the outbox; skips
  // recorded by earlier deliveries that failed are stale.
  for (auto by = skipped_by_.begin(); by != skipped_by_.end() && by->first <= seq;) {
    for (const std::string& key : by->second) {
      auto it = skip_.find(key);
      if (it == skip_.end() || it->second.skipped_in != seq) continue;
      if (auto parts = parse_record_key(it->first)) {
        auto f = it->second.txn->offsets.find(std::string(parts->uid));
        if (f != it->second.txn->offsets.end()) {
          f->second.erase(parts->offset);
          if (f->second.empty()) it->second.txn->offsets.erase(f);
        }
      }
      skip_.erase(it);
    }
    by = skipped_by_.erase(by);
  }
  unacked_.remove_if([&](const Txn& t) {
    if (t.carried) return t.offsets.empty();
    return t.seq <= seq;
  });
}

}  // namespace tailbox::sinks::kafka
