#include "sinks/registry.hpp"

#include "sinks/file/file_sink.hpp"
#include "sinks/module_loader.hpp"
#include "sinks/sqlite/sqlite_sink.hpp"

namespace tailbox::sinks {

std::unique_ptr<Sink> make_sink(config::SinkConfig& config, boost::asio::any_io_executor executor) {
  std::unique_ptr<Sink> sink;
  if (config.type == "sqlite") sink = std::make_unique<SqliteSink>(config.settings, executor);
  else if (config.type == "file") sink = std::make_unique<FileSink>(config.settings);
  else if (is_module_type(config.type)) sink = load_module(config.type).make_sink(config, executor);
  else config.settings.fail("type", "unknown sink \"" + config.type + "\"; known: \"sqlite\", \"file\", \"postgres\", \"http\", \"kafka\", \"nats\", \"rabbitmq\"");
  config.settings.finish();
  return sink;
}

}  // namespace tailbox::sinks
