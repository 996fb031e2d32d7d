// RabbitmqSink (type = "rabbitmq"): publishes each record as one persistent
// message (delivery_mode 2) through an exchange with a routing key built from
// a template, message_id = the idempotency key, headers tailbox-host,
// -source, -path, -offset; channel in publisher-confirm mode: a batch is
// delivered only when the broker acked every message. With `mandatory`, a
// message no queue takes comes back (basic.return) and its row is
// dead-lettered; no confirm within `timeout` is a retry.
//
// Into a stream queue (queue_type = "stream"): exactly-once by reading the
// stream back (from the offset committed with the last ack up to a marker)
// before anything that may be stored is published again, under a per-relay
// lock queue ("tailbox.lock.<host>.<queue>"). Into a classic or quorum queue:
// at-least-once (message_id for consumers). The argument: docs/sinks/rabbitmq.md.
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
  // Reads the password, connects, declares or checks the queue; for a stream
  // reads it back from the committed offset. Throws std::runtime_error.
  std::optional<std::string> open(const OpenContext& context) override;
  boost::asio::awaitable<Delivery> deliver(std::span<const Record> batch) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tailbox::sinks
