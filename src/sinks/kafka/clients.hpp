// Clients: the kafka sink's librdkafka clients. The producer (idempotent,
// transactional in that mode: start_producer() fences the previous one) and
// the short-lived consumers that read the progress topic back. All handles
// are owned (handles.hpp); settings and secrets are applied here.
//
// Thread-safety: one thread (the sink's) calls it. librdkafka's error
// callback runs inside poll/flush on that thread and may ask for a new
// producer (needs_reset()).
#pragma once

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "core/log_limit.hpp"
#include "sinks/kafka/handles.hpp"
#include "sinks/kafka/options.hpp"

namespace tailbox::sinks::kafka {

class Clients {
 public:
  using DeliveryCallback = void (*)(rd_kafka_t*, const rd_kafka_message_t*, void*);
  // `o` must outlive the Clients. `on_delivery` gets the producer's delivery
  // reports. No I/O.
  Clients(const Options& o, std::string name, DeliveryCallback on_delivery)
      : o_(o), name_(std::move(name)), on_delivery_(on_delivery) {}

  rd_kafka_t* producer() const { return producer_.get(); }
  // Builds the producer (checking the topics; in transactional mode also
  // init_transactions, which fences the previous producer). Throws.
  void start_producer();
  // Flushes (at most `flush`) and destroys the producer; its outstanding
  // delivery reports arrive now.
  void destroy_producer(std::chrono::milliseconds flush = std::chrono::milliseconds(1000));
  // A fatal error or an unknown commit outcome: a new producer before the next batch.
  void request_reset() { reset_ = true; }
  bool needs_reset() const { return reset_ || !producer_; }
  int32_t progress_partitions() const { return progress_partitions_; }

  // The latest committed progress record of this relay, or "" (see
  // clients.cpp). Throws when it cannot finish.
  std::string read_progress();

  // Reads every partition of the data topic from its start to its end as a
  // read_committed consumer sees it (up to the last stable offset), and hands
  // each record to `on_record`. Read-only: partitions assigned, no group
  // joined, no offset committed. Throws when a partition gives nothing for
  // `timeout` before its end. Needs no producer (`tailbox audit`).
  using OnRecord = std::function<void(const rd_kafka_message_t&)>;
  void read_topic(const OnRecord& on_record);

 private:
  Conf base_conf(bool for_producer);
  Client make(rd_kafka_type_t type, Conf conf);
  int32_t partitions_of(rd_kafka_t* rk, const std::string& t);

  const Options& o_;
  const std::string name_;
  const DeliveryCallback on_delivery_;
  Client producer_;
  bool reset_ = false;  // a fatal error: build a new producer before the next batch
  int32_t progress_partitions_ = 0;
  LogLimiter log_limit_{std::chrono::seconds(10)};
};

}  // namespace tailbox::sinks::kafka
