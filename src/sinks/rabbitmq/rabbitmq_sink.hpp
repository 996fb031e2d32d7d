// RabbitmqSink (type = "rabbitmq"): publishes each record as one persistent
// message (delivery_mode 2) through an exchange with a routing key built from
// a template, message_id = the idempotency key, headers tailbox-host,
// -source, -path, -offset; channel in publisher-confirm mode: a batch is
// delivered only when the broker acked every message. With `mandatory`, a
// message no queue takes comes back (basic.return) and its row is
// dead-lettered; no confirm within `timeout` is a retry.
//
// Into a stream queue (queue_type = "stream"): exactly-once, the NATS sink's
// read-back argument without a duplicate window. AMQP 0-9-1 publishing has no
// broker-side dedup, so the sink never publishes a message that may be stored
// without first reading the stream back: the state committed with each ack is
// a stream offset S such that every message of this host whose row is still
// to be delivered lies at or after S. At open() and before a batch whose
// messages were sent without an answer is sent again, the sink publishes a
// marker message, reads the stream from S up to the marker (basic.consume
// with x-stream-offset), and acknowledges, without publishing them again, the
// records of this host found there whose rows are still in the outbox.
// A connection holds an exclusive queue ("tailbox.lock.<host>.<queue>") for
// its life, so a new connection of this relay can only start after the broker
// has closed the old one, and with it every message the old one sent: a
// message can not land after the marker that was meant to find it.
//
// Into a classic or quorum queue: at-least-once (message_id for consumers).
//
// rabbitmq-c blocks: deliver() runs on a thread the sink owns; every wait is
// bounded by `timeout`. Thread-safety: open() completes before the first
// deliver(); deliveries run one at a time (serial).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <memory>
#include <optional>
#include <string>

#include "config/settings.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks {

class RabbitmqSink : public Sink {
 public:
  // Reads and checks the settings (rabbitmq::parse_options); no I/O.
  RabbitmqSink(config::Settings& settings, std::string host_id, boost::asio::any_io_executor executor);
  ~RabbitmqSink() override;

  const std::string& name() const override;
  std::string guarantee() const override;
  bool serial() const override { return true; }
  void set_outbox_lookup(KeysInOutbox lookup) override;
  // Reads the password, connects, declares or checks the queue; for a stream
  // reads it back from the committed offset. Throws std::runtime_error.
  std::optional<std::string> open(const std::optional<std::string>& committed_state) override;
  boost::asio::awaitable<Delivery> deliver(std::span<const Record> batch) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tailbox::sinks
