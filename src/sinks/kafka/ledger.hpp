// Ledger: the kafka sink's exactly-once bookkeeping (transactional mode),
// without I/O. It holds the Kafka transactions whose outbox ack has not
// committed yet (unacked: listed in every progress record), the rows known to
// be in Kafka already (skip: acknowledged without sending), which delivery
// skipped which rows, and the transaction numbers.
//
// The rule it keeps: a row committed to Kafka stays listed in the progress
// record until the outbox ack that removes the row committed, so a restart
// reads it back and never sends it twice.
//
// Thread-safety: none; the sink calls it under its mutex (deliveries on the
// sink's thread, committed() from the outbox's strand). Pure: tested
// model-based in tests/sinks/kafka/.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/record.hpp"
#include "sinks/kafka/progress.hpp"

namespace tailbox::sinks::kafka {

class Ledger {
 public:
  explicit Ledger(std::string host_id) : host_id_(std::move(host_id)) {}

  // At open(): forgets everything, then carries the transactions a progress
  // record listed whose rows are still in the outbox. Transaction numbers go
  // on after max(committed_seq, record_seq). Returns how many rows are to be
  // acknowledged without sending.
  size_t inherit(std::vector<Txn> carried, uint64_t committed_seq, uint64_t record_seq);

  // The number of the next delivery (the state its ack commits).
  uint64_t next_seq() { return next_seq_++; }
  // A progress record numbered `seq` was read: later deliveries come after it.
  void saw_seq(uint64_t seq) { next_seq_ = std::max(next_seq_, seq + 1); }

  // Splits the batch of delivery `seq`: the rows already in Kafka are marked
  // as skipped by it (counted in `skipped`); returns the rows to send.
  std::vector<const Record*> take_skipped(std::span<const Record> batch, uint64_t seq,
                                          size_t& skipped);

  // Delivery `seq` is about to commit a transaction that sent `sent`: it is
  // listed from now on. Returns every unacked transaction (for the record).
  const std::list<Txn>& sending(uint64_t seq, const std::vector<const Record*>& sent);
  // Delivery `seq`'s transaction was aborted: no longer listed.
  void forget(uint64_t seq);

  // A commit whose outcome is unknown (timed out, fatal): `unknown()` until
  // settle() learns it from the progress record.
  void commit_unknown(uint64_t seq) { unknown_seq_ = seq; }
  uint64_t unknown() const { return unknown_seq_; }
  // `did_commit`: its rows are in Kafka (carried, skipped from now on);
  // otherwise it is forgotten.
  // Returns how many rows are carried, nullopt when it was not listed or
  // did not commit.
  std::optional<size_t> settle(bool did_commit);

  // The outbox committed the ack of delivery `seq` (and of every earlier
  // one): rows skipped by it are gone from the outbox; own transactions up to
  // it and carried ones with nothing left are no longer listed.
  void committed(uint64_t seq);

  const std::list<Txn>& unacked() const { return unacked_; }
  bool skips(const std::string& key) const { return skip_.count(key) > 0; }

 private:
  size_t carry(Txn txn);

  struct Skip {
    std::list<Txn>::iterator txn;
    uint64_t skipped_in = 0;  // the delivery that acknowledged it (0: not yet)
  };
  std::string host_id_;
  std::list<Txn> unacked_;
  std::unordered_map<std::string, Skip> skip_;
  std::map<uint64_t, std::vector<std::string>> skipped_by_;  // delivery -> keys it skipped
  uint64_t next_seq_ = 1;
  uint64_t unknown_seq_ = 0;
};

}  // namespace tailbox::sinks::kafka
