// Loads the module of a network sink (module.hpp) when the configuration
// names that sink type: `tailbox-sink-<type>.so`, opened with dlopen once per
// process and never closed.
//
// Where modules are looked for: the directory $TAILBOX_SINK_DIR when it is set
// (only there); otherwise the running binary's directory (the build tree puts
// them next to build/tailbox) and then <binary's directory>/../lib/tailbox/sinks
// (the Debian package: /usr/bin/tailbox, /usr/lib/tailbox/sinks).
//
// Thread-safety: any thread (loading is serialized).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "sinks/module.hpp"

namespace tailbox::sinks {

// Whether `type` is a sink built as a module.
bool is_module_type(std::string_view type);

// The module of sink `type` (REQUIRES: is_module_type(type)). Throws
// config::ConfigError naming the sink type and the file when the module is
// not found, cannot be loaded (naming the Debian package of a missing
// library), or was built for another tailbox.
const SinkModule& load_module(const std::string& type);

// The directories load_module() searches, in order.
std::vector<std::string> module_dirs();

// "tailbox-sink-<type>.so".
std::string module_file_name(std::string_view type);

}  // namespace tailbox::sinks
