#include "cli/logging.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <boost/json/serialize.hpp>
#include <boost/json/string_view.hpp>
#include <mutex>

namespace tailbox::cli {
namespace {

// %* : the message as a JSON string, escaped.
class JsonMessage : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    std::string s = boost::json::serialize(boost::json::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(s.data(), s.data() + s.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessage>();
  }
};

std::mutex mu;
std::string log_file, log_format;

void install(spdlog::sink_ptr sink) {
  auto logger = std::make_shared<spdlog::logger>("tailbox", sink);
  std::unique_ptr<spdlog::pattern_formatter> formatter;
  if (log_format == "json") {
    formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<JsonMessage>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","msg":%*})");
  } else {
    formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  }
  logger->set_formatter(std::move(formatter));
  logger->set_level(spdlog::get_level());
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

}  // namespace

void setup_logging(const std::string& level, const std::string& format, const std::string& file) {
  std::lock_guard lock(mu);
  log_file = file;
  log_format = format;
  spdlog::set_level(spdlog::level::from_str(level));
  if (file.empty()) install(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  else install(std::make_shared<spdlog::sinks::basic_file_sink_mt>(file, false));
}

void reopen_logs() {
  std::lock_guard lock(mu);
  if (log_file.empty()) return;
  try {
    install(std::make_shared<spdlog::sinks::basic_file_sink_mt>(log_file, false));
    spdlog::info("log file {} reopened", log_file);
  } catch (const std::exception& e) {
    spdlog::error("cannot reopen log file {}: {}", log_file, e.what());
  }
}

}  // namespace tailbox::cli
