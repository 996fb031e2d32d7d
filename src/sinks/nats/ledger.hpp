// Ledger: the nats sink's exactly-once bookkeeping, without I/O. It knows
// which of our messages were stored in the stream but not yet confirmed to the
// outbox (held), which were sent without an answer (unsure), and the highest
// stream sequence below which every message of ours is confirmed or held; from
// those it computes the sequence to commit with a delivered batch, so that a
// restart reads the stream back from there and finds every message whose row
// is still to be delivered.
//
// Keys are Nats-Msg-Ids ("<host_id>/<file uid>/<offset>"). Sequences are the
// stream's (1-based; 0 means none).
//
// Thread-safety: none; the sink uses it on its delivering thread only (one
// delivery at a time). Pure: tested model-based in tests/sinks/nats/.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace tailbox::sinks::nats {

class Ledger {
 public:
  using Clock = std::chrono::steady_clock;
  using Seq = uint64_t;
  // The answer to a message the stream refused (a negative PubAck).
  static constexpr Seq kRefused = std::numeric_limits<Seq>::max();

  // Forgets everything: every message of ours at or below `high` is
  // confirmed (open(), after a restart or on first use).
  void restart(Seq high);

  // A message of ours found in the stream at `seq` whose row is still in the
  // outbox (a read-back): its record is acknowledged without publishing it
  // again, and the committed sequence stays below the last copy found.
  void hold(const std::string& key, Seq seq);
  bool held(const std::string& key) const { return skip_.count(key) > 0; }
  size_t held_count() const { return skip_.size(); }
  // Held, or sent without an answer: only such keys of ours can still have a
  // row in the outbox while the sink runs.
  bool maybe_stored(const std::string& key) const {
    return skip_.count(key) > 0 || unsure_.count(key) > 0;
  }

  // A message sent in an attempt that failed (started at `attempt_start`),
  // with its answer: a sequence (stored: held), 0 (no answer: unsure, stored
  // above the current high if at all), or kRefused (not stored).
  void attempt_failed(const std::string& key, Seq answer, Clock::time_point attempt_start);

  // A message acknowledged at `seq` in an attempt that succeeded.
  void published(const std::string& key, Seq seq);

  // A held record acknowledged without publishing it (its batch delivered).
  // REQUIRES: held(key).
  void delivered_held(const std::string& key);

  // Unsure keys of a batch that must not be published blindly again: half of
  // the duplicate window or more has passed since they were sent, so the
  // window may no longer drop a second copy. The stream is to be read back
  // after `after` (hold() the keys found that maybe_stored()), then
  // recheck_done() called.
  struct Recheck {
    std::vector<std::string> keys;
    Seq after = 0;
    Clock::time_point oldest;
  };
  std::optional<Recheck> recheck_needed(const std::vector<std::string>& batch_keys,
                                        Clock::time_point now,
                                        std::chrono::milliseconds window) const;
  // After the read-back of a Recheck that began at `start` and read up to
  // `stream_last`: keys now held stop being unsure; the others were not
  // stored up to `stream_last` and count as sent at `start`. Returns how many
  // were found.
  size_t recheck_done(const std::vector<std::string>& keys, Seq stream_last,
                      Clock::time_point start);

  // The sequence to commit: every message of ours still pending in the outbox
  // lies above it.
  Seq committed() const;
  Seq high() const { return high_; }

 private:
  struct Unsure {
    Seq bound = 0;  // if stored at all, then at or above it
    Clock::time_point since;
  };
  std::unordered_map<std::string, Seq> skip_;
  std::unordered_map<std::string, Unsure> unsure_;
  Seq high_ = 0;
};

}  // namespace tailbox::sinks::nats
