// The sink registry: builds the sink that [sink] type names. Adding a sink is
// one class plus one line in registry.cpp.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <memory>

#include "config/config.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks {

// Reads and validates the sink's settings (throws config::ConfigError naming the
// key) and builds the sink without touching the destination; open() does that.
std::unique_ptr<Sink> make_sink(config::SinkConfig& config, boost::asio::any_io_executor executor);

}  // namespace tailbox::sinks
