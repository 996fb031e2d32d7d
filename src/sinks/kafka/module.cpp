// The kafka sink as a module (module.hpp): the sink and the audit's reader of its topic.
#include <boost/asio/any_io_executor.hpp>
#include <librdkafka/rdkafka.h>

#include <string>
#include <string_view>
#include <utility>

#include "sinks/kafka/clients.hpp"
#include "sinks/kafka/kafka_sink.hpp"
#include "sinks/module.hpp"

namespace tailbox::sinks {
namespace {

// Kafka: the data topic read whole by a read_committed consumer (assigned,
// no group, nothing committed), keyed by each record's tailbox-key header.
class KafkaKeys : public CountedKeys {
 public:
  KafkaKeys(kafka::Options o, const std::string& host_id)
      : CountedKeys(host_id), o_(std::move(o)),
        clients_(o_, "tailbox audit", nullptr) {}
  void load() override {
    clients_.read_topic([&](const rd_kafka_message_t& m) {
      rd_kafka_headers_t* headers = nullptr;
      const void* value = nullptr;
      size_t size = 0;
      if (rd_kafka_message_headers(&m, &headers) == RD_KAFKA_RESP_ERR_NO_ERROR &&
          rd_kafka_header_get_last(headers, "tailbox-key", &value, &size) ==
              RD_KAFKA_RESP_ERR_NO_ERROR && value)
        add(std::string_view(static_cast<const char*>(value), size));
      else
        add({});
    });
  }
  std::string remark() const override {
    return summary("records", "topic " + o_.topic + " (read_committed)");
  }

 private:
  const kafka::Options o_;
  kafka::Clients clients_;
};

std::unique_ptr<KeyReader> key_reader(const config::SinkConfig& sink, const std::string& host_id,
                                      std::string&) {
  config::Settings s = sink.settings;   // a copy: reading marks keys used
  return std::make_unique<KafkaKeys>(kafka::parse_options(s, host_id), host_id);
}

std::unique_ptr<Sink> make(config::SinkConfig& config, boost::asio::any_io_executor executor) {
  return std::make_unique<KafkaSink>(config.settings, config.host_id, executor);
}

}  // namespace
}  // namespace tailbox::sinks

TAILBOX_SINK_MODULE("kafka", make, key_reader)
