// Builds a sink from [sink] settings the way the registry does (constructor,
// then Settings::finish()), for the sinks' settings tests.
#pragma once

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <map>
#include <string>
#include <utility>

#include "config/settings.hpp"

namespace tailbox::testing {

using SettingValues = std::map<std::string, config::SettingValue>;

// "ok:<sink name>", followed by `separator` and the sink's guarantee() when
// `separator` is not empty; or the ConfigError's message. `args` go to the
// sink's constructor between the settings and the executor (e.g. host_id).
template <typename Sink, typename... Args>
std::string build_sink(const SettingValues& values, const std::string& separator, Args&&... args) {
  boost::asio::io_context ioc;
  config::Settings s("sink", values, 1);
  try {
    Sink sink(s, std::forward<Args>(args)..., ioc.get_executor());
    s.finish();
    return "ok:" + sink.name() + (separator.empty() ? "" : separator + sink.guarantee());
  } catch (const config::ConfigError& e) {
    return e.what();
  }
}

inline bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// has(), and on a miss the text is printed beside the failed check.
inline bool says(const std::string& got, const std::string& want) {
  if (got.find(want) != std::string::npos) return true;
  MESSAGE("got: " << got);
  return false;
}

// A sink's options as its parse_options(Settings&) makes them; throws
// config::ConfigError as it does, unknown keys included.
template <typename Parse>
auto parsed_options(const SettingValues& values, Parse parse) {
  config::Settings s("sink", values, 1);
  auto o = parse(s);
  s.finish();
  return o;
}

}  // namespace tailbox::testing
