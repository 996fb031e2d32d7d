// The http sink as a module (module.hpp): the sink; an HTTP receiver cannot be audited.
#include <boost/asio/any_io_executor.hpp>
#include <string>

#include "sinks/http/http_sink.hpp"
#include "sinks/module.hpp"

namespace tailbox::sinks {
namespace {

std::unique_ptr<KeyReader> key_reader(const config::SinkConfig&, const std::string&,
                                      std::string& why_not) {
  why_not = "not possible for an HTTP receiver: it cannot be asked which keys it holds";
  return nullptr;
}

std::unique_ptr<Sink> make(config::SinkConfig& config, boost::asio::any_io_executor executor) {
  return std::make_unique<HttpSink>(config.settings, executor);
}

}  // namespace
}  // namespace tailbox::sinks

TAILBOX_SINK_MODULE("http", make, key_reader)
