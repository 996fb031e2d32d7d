#include "sinks/registry.hpp"

#include "sinks/file/file_sink.hpp"
#include "sinks/http/http_sink.hpp"
#include "sinks/kafka/kafka_sink.hpp"
#include "sinks/nats/nats_sink.hpp"
#include "sinks/postgres/postgres_sink.hpp"
#include "sinks/rabbitmq/rabbitmq_sink.hpp"
#include "sinks/sqlite/sqlite_sink.hpp"

namespace tailbox::sinks {

std::unique_ptr<Sink> make_sink(config::SinkConfig& config, boost::asio::any_io_executor executor) {
  std::unique_ptr<Sink> sink;
  if (config.type == "sqlite") sink = std::make_unique<SqliteSink>(config.settings, executor);
  else if (config.type == "file") sink = std::make_unique<FileSink>(config.settings);
  else if (config.type == "postgres") sink = std::make_unique<PostgresSink>(config.settings, executor);
  else if (config.type == "http") sink = std::make_unique<HttpSink>(config.settings, executor);
  else if (config.type == "kafka") sink = std::make_unique<KafkaSink>(config.settings, config.host_id, executor);
  else if (config.type == "nats") sink = std::make_unique<NatsSink>(config.settings, config.host_id, executor);
  else if (config.type == "rabbitmq") sink = std::make_unique<RabbitmqSink>(config.settings, config.host_id, executor);
  else config.settings.fail("type", "unknown sink \"" + config.type + "\"; known: \"sqlite\", \"file\", \"postgres\", \"http\", \"kafka\", \"nats\", \"rabbitmq\"");
  config.settings.finish();
  return sink;
}

}  // namespace tailbox::sinks
