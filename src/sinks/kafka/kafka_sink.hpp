// KafkaSink (type = "kafka"): produces each record to a Kafka topic with
// librdkafka (acks=all, enable.idempotence=true).
//
// mode = "transactional" (default): exactly-once for read_committed consumers;
// each batch and a progress record commit in one Kafka transaction, and after a
// crash open() reads the progress back so that deliver() acknowledges those rows
// without sending them again. Deliveries are serial. mode = "idempotent":
// at-least-once across relay crashes. The argument: docs/sinks/kafka.md.
//
// Thread-safety: deliver() is never called concurrently (serial()); the
// blocking librdkafka calls run on a thread the sink owns; committed() may be
// called from another strand and takes the sink's mutex.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <memory>
#include <string>
#include <string_view>

#include "config/settings.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks {

// The partition a key goes to among `partitions` (CRC-32 of the key, as
// librdkafka's "consistent" partitioner): the progress record's partition.
int32_t kafka_progress_partition(std::string_view key, int32_t partitions);

class KafkaSink : public Sink {
 public:
  // Settings: see docs/sinks/kafka.md. Throws config::ConfigError naming the key.
  KafkaSink(config::Settings& settings, const std::string& host_id,
            boost::asio::any_io_executor executor);
  ~KafkaSink() override;

  const std::string& name() const override;
  std::string guarantee() const override;
  bool serial() const override { return true; }
  std::optional<std::string> open(const OpenContext& context) override;
  boost::asio::awaitable<Delivery> deliver(std::span<const Record> batch) override;
  void committed(const std::string& state) noexcept override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tailbox::sinks
