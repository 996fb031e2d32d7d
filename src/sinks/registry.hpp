// The sink registry: builds the sink that [sink] type names. The sqlite and
// file sinks are built in; the network sinks (postgres, http, kafka, nats,
// rabbitmq) are modules, loaded only when named (module_loader.hpp). Adding a
// built-in sink is one class plus one line in registry.cpp; a network sink is
// a folder with a module.cpp, one entry in module_loader.cpp and one in
// meson.build.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <memory>

#include "config/config.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks {

// Reads and validates the sink's settings (throws config::ConfigError naming the
// key) and builds the sink without touching the destination; open() does that.
// A network sink's module is loaded here: a missing or broken module is a
// ConfigError too, naming the sink type and the file.
std::unique_ptr<Sink> make_sink(config::SinkConfig& config, boost::asio::any_io_executor executor);

}  // namespace tailbox::sinks
