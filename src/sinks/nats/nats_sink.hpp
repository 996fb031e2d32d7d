// NatsSink (type = "nats"): publishes each record as one message to a NATS
// JetStream stream, on a subject built from a template ("logs.{host}.{source}"),
// with the idempotency key as the Nats-Msg-Id header, and waits for every
// PubAck of the batch before it reports the batch delivered.
//
// Exactly-once: Nats-Msg-Id dedup inside the stream's duplicate window; beyond
// it, the stream is read back from the sequence committed with the last ack, and
// records found there whose rows are still in the outbox (OpenContext::keys_in_outbox)
// are acknowledged without being published again. Needs serial deliveries and a
// stream that keeps its messages as long as tailbox may be down. The argument:
// docs/sinks/nats.md.
//
// libnats blocks (connect, publish when its buffer is full, the wait for
// PubAcks): deliver() runs that part on a thread the sink owns, never on the
// caller's I/O threads, and every wait is bounded by `timeout`. libnats
// reconnects by itself; while it is disconnected deliveries are retried. A
// connection libnats closed for good (e.g. an authorization error on
// reconnect) is opened anew by the next delivery, with the secrets read again.
//
// Thread-safety: open() completes before the first deliver(); deliveries run
// one at a time (serial). libnats' callbacks run on its own threads and meet
// the delivering thread under a mutex (nats::Connection).
//
// The parts: options.hpp (settings, subject templates), classify.hpp (failure
// -> retry | reject), ledger.hpp (the exactly-once bookkeeping, pure),
// connection.hpp (libnats handles, callbacks, stream admin, read-back); this
// file wires them together.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/settings.hpp"
#include "sinks/nats/options.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks {

class NatsSink : public Sink {
 public:
  // Reads and checks the settings (nats::parse_options); no I/O.
  NatsSink(config::Settings& settings, std::string host_id, boost::asio::any_io_executor executor);
  ~NatsSink() override;

  const std::string& name() const override;
  std::string guarantee() const override;
  bool serial() const override { return true; }
  // open() asks it which of the keys read back still have a row in the
  // outbox: only those hold the state (the others were confirmed).
  // Reads the secrets, connects, finds (or creates) the stream and reads it
  // back after the committed sequence. Returns "<stream>:<last sequence>" on
  // first use (or when the stream was recreated). Throws std::runtime_error
  // when it cannot connect or the stream is missing.
  std::optional<std::string> open(const OpenContext& context) override;
  boost::asio::awaitable<Delivery> deliver(std::span<const Record> batch) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tailbox::sinks
