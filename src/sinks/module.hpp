// A sink module: a network sink built as a shared object of its own
// (tailbox-sink-<type>.so), so that the relay maps its client library
// (libpq, librdkafka, libnats, librabbitmq, OpenSSL) only when the
// configuration names that sink. The built-in sinks (sqlite, file) need none.
//
// A module exports one C function, tailbox_sink_module_v1(), that returns a static
// SinkModule table. The table passes C++ types: a module only works with the
// tailbox binary it was built with, which abi_version and version check
// (module_loader.cpp refuses any other). The module's references to tailbox's
// own code (config::Settings, spdlog, Boost.Asio's statics) resolve to the
// binary's copies: the binary exports its symbols (meson export_dynamic).
//
// Thread-safety: the table is immutable; its functions are as thread-safe as
// the constructors they call.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "config/config.hpp"
#include "sinks/key_reader.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks {

// Changes whenever SinkModule, Sink, KeyReader or config::SinkConfig change shape.
inline constexpr uint32_t kSinkModuleAbi = 1;

struct SinkModule {
  uint32_t abi_version;   // kSinkModuleAbi of the module's build
  const char* version;    // TAILBOX_VERSION of the module's build
  const char* type;       // the [sink] type it builds, e.g. "postgres"
  // As make_sink() in registry.hpp: reads and validates config.settings
  // (throws config::ConfigError naming the key), touches nothing.
  std::unique_ptr<Sink> (*make_sink)(config::SinkConfig& config,
                                     boost::asio::any_io_executor executor);
  // As make_key_reader() in key_reader.hpp; nullptr with `why_not` when the
  // destination cannot be audited.
  std::unique_ptr<KeyReader> (*make_key_reader)(const config::SinkConfig& config,
                                                const std::string& host_id, std::string& why_not);
};

}  // namespace tailbox::sinks

// The one symbol a module exports (its name is TAILBOX_SINK_MODULE_ENTRY).
extern "C" const tailbox::sinks::SinkModule* tailbox_sink_module_v1();
#define TAILBOX_SINK_MODULE_ENTRY "tailbox_sink_module_v1"

// Defines a module's table and its entry point; at file scope, after the
// module's make and key_reader (in tailbox::sinks, e.g. in its unnamed namespace):
//   TAILBOX_SINK_MODULE("postgres", make, key_reader)
#define TAILBOX_SINK_MODULE(type, make, key_reader)                                         \
  extern "C" const tailbox::sinks::SinkModule* tailbox_sink_module_v1() {                  \
    static const tailbox::sinks::SinkModule table = {tailbox::sinks::kSinkModuleAbi,        \
                                                     TAILBOX_VERSION, type,                  \
                                                     tailbox::sinks::make,                   \
                                                     tailbox::sinks::key_reader};            \
    return &table;                                                                          \
  }
