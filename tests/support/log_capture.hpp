// logged(f): everything spdlog's default logger wrote while `f` ran, through a
// default logger of its own (the test main silences the usual one, which is
// put back after).
#pragma once

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace tailbox::testing {

template <typename F>
std::string logged(F&& f) {
  auto ring = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  struct Restore {
    std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
    ~Restore() { spdlog::set_default_logger(previous); }
  } restore;
  auto capture = std::make_shared<spdlog::logger>("capture", ring);
  capture->set_level(spdlog::level::debug);
  spdlog::set_default_logger(capture);
  f();
  std::string out;
  for (const auto& line : ring->last_formatted()) out += line;
  return out;
}

}  // namespace tailbox::testing
