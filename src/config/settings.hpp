// Settings: one TOML table's keys, read once at start-up by the component that
// owns them (a sink, for example), with every mistake reported by key and line.
//
// A component asks for each key it knows; finish() then rejects the keys nobody
// asked for, so a typo never silently falls back to a default.
// Not thread-safe; used only while loading the configuration.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace tailbox::config {

// Thrown for any configuration mistake; what() names the key and the line.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SettingValue {
  std::variant<std::string, int64_t, double, bool, std::vector<std::string>> value;
  int line = 0;
};

class Settings {
 public:
  Settings() = default;
  // `prefix` names the table in messages, e.g. "sink".
  Settings(std::string prefix, std::map<std::string, SettingValue> values, int line);

  std::string string(const std::string& key, const std::string& fallback);
  std::optional<std::string> optional_string(const std::string& key);
  std::string required_string(const std::string& key);
  int64_t integer(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  double number(const std::string& key, double fallback, double min, double max);
  bool boolean(const std::string& key, bool fallback);
  // One string or an array of strings, none empty.
  std::vector<std::string> string_list(const std::string& key, bool required);
  // Durations are written as strings with a unit: "250ms", "5s", "2m", "1h".
  std::chrono::milliseconds duration(const std::string& key, std::chrono::milliseconds fallback);
  // One of `allowed`.
  std::string choice(const std::string& key, const std::string& fallback,
                     const std::vector<std::string>& allowed);

  // Where a secret is read from (core/secret.hpp read_secret), never the
  // secret itself: the keys `<name>_file` and `<name>_env`, at most one of
  // them, neither empty. Both fields are empty when neither key is set.
  struct SecretSource {
    std::string file, env;
    bool given() const { return !file.empty() || !env.empty(); }
  };
  SecretSource secret(const std::string& name);

  // Throws ConfigError naming the first key that no call above asked for.
  void finish() const;

  const std::string& prefix() const { return prefix_; }
  int line() const { return line_; }

  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  const SettingValue* find(const std::string& key);

  std::string prefix_;
  std::map<std::string, SettingValue> values_;
  std::map<std::string, bool> used_;
  int line_ = 0;
};

// Parses "250ms", "5s", "2m", "1h" (and "0"). Returns nullopt when malformed.
std::optional<std::chrono::milliseconds> parse_duration(const std::string& text);
// Parses "64MiB", "1GiB", "512KiB", "1000" (bytes). Returns nullopt when malformed.
std::optional<int64_t> parse_size(const std::string& text);

}  // namespace tailbox::config
