// Sink: the one interface every destination implements.
//
// deliver() is called with a batch and reports, never throws, what happened:
// delivered (the destination has every record durably), retry (a transient
// failure: the dispatcher backs off and tries again), or reject (the records
// themselves are bad: the dispatcher splits the batch to find the bad ones and
// dead-letters them). Backoff, splitting and dead-lettering live once, in
// dispatch, not in each sink.
//
// Exactly-once is the destination's part: a sink either makes a redelivered
// record a no-op (dedup on Record::key) or says in guarantee() that it is
// at-least-once.
//
// Thread-safety: deliver() may be called by several workers at once unless
// serial() is true; each sink protects its own state.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/record.hpp"

namespace tailbox::sinks {

struct Delivery {
  enum class Outcome { delivered, retry, reject };
  Outcome outcome = Outcome::delivered;
  std::string detail;                          // the destination's message on failure
  std::chrono::milliseconds retry_after{0};    // a hint from the destination (Retry-After)
  // Committed in the outbox together with the deletion of the delivered rows,
  // and handed back to open() after a restart. Only serial sinks use it.
  std::optional<std::string> state;

  static Delivery delivered(std::optional<std::string> state = std::nullopt) {
    return {Outcome::delivered, {}, std::chrono::milliseconds(0), std::move(state)};
  }
  static Delivery retry(std::string detail) {
    return {Outcome::retry, std::move(detail), std::chrono::milliseconds(0), std::nullopt};
  }
  static Delivery reject(std::string detail) {
    return {Outcome::reject, std::move(detail), std::chrono::milliseconds(0), std::nullopt};
  }
};

// For each key ("<host_id>/<file uid>/<offset>"): whether its row is still in
// the outbox (pending or dead). Throws std::runtime_error when the outbox
// cannot be read.
using KeysInOutbox = std::function<std::vector<bool>(const std::vector<std::string>& keys)>;

// What a sink is opened with.
struct OpenContext {
  OpenContext(std::optional<std::string> state = std::nullopt, KeysInOutbox keys = {})
      : committed_state(std::move(state)), keys_in_outbox(std::move(keys)) {}
  // The state committed by the last ack (nullopt on first use).
  std::optional<std::string> committed_state;
  // Which keys still have a row in the outbox, for sinks that read their
  // destination back (it opens a read-only connection of its own per call:
  // any thread; a sink may keep a copy for later read-backs). Empty when
  // there is no outbox to ask (tests): such a sink then holds every key it
  // reads back as still to be delivered.
  KeysInOutbox keys_in_outbox;
};

class Sink {
 public:
  virtual ~Sink() = default;
  // Stable name, e.g. "sqlite:/var/lib/tailbox/inbox.db"; keys the sink's state.
  virtual const std::string& name() const = 0;
  // "exactly-once" or "at-least-once", with the reason, for logs and status.
  virtual std::string guarantee() const = 0;
  // Deliveries must run one at a time, and their acks commit in order.
  virtual bool serial() const { return false; }
  // Called before any deliver() (again after a failed open()), with the state
  // committed by the last ack and the outbox lookup. Returns a state to commit
  // before the first delivery (e.g. the starting size of a fresh output
  // file), or nullopt. Throws std::runtime_error when it cannot start.
  virtual std::optional<std::string> open(const OpenContext& context) {
    (void)context;
    return std::nullopt;
  }
  virtual boost::asio::awaitable<Delivery> deliver(std::span<const Record> batch) = 0;
  // Called after the outbox committed the ack that carried `state` (rows
  // deleted, state stored): from then on a restart hands that state to open().
  // Acks committed together (one transaction) call it for each of their
  // states, in delivery order, one call at a time (the dispatcher's ack
  // strand); must not block.
  virtual void committed(const std::string& state) { (void)state; }
};

}  // namespace tailbox::sinks
