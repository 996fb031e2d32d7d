#include "config/settings.hpp"

#include <cctype>
#include <limits>

namespace tailbox::config {

Settings::Settings(std::string prefix, std::map<std::string, SettingValue> values, int line)
    : prefix_(std::move(prefix)), values_(std::move(values)), line_(line) {}

void Settings::fail(const std::string& key, const std::string& message) const {
  auto it = values_.find(key);
  int line = it != values_.end() ? it->second.line : line_;
  std::string where = prefix_.empty() ? key : prefix_ + "." + key;
  throw ConfigError(where + ": " + message + (line > 0 ? " (line " + std::to_string(line) + ")" : ""));
}

const SettingValue* Settings::find(const std::string& key) {
  used_[key] = true;
  auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

std::optional<std::string> Settings::optional_string(const std::string& key) {
  const SettingValue* v = find(key);
  if (!v) return std::nullopt;
  if (auto* s = std::get_if<std::string>(&v->value)) return *s;
  fail(key, "expected a string");
}

std::string Settings::string(const std::string& key, const std::string& fallback) {
  return optional_string(key).value_or(fallback);
}

Settings::SecretSource Settings::secret(const std::string& name) {
  const std::string file_key = name + "_file", env_key = name + "_env";
  auto file = optional_string(file_key);
  auto env = optional_string(env_key);
  if (file && env) fail(env_key, "set " + file_key + " or " + env_key + ", not both");
  if (file && file->empty()) fail(file_key, "must not be empty");
  if (env && env->empty()) fail(env_key, "must not be empty");
  return {file.value_or(""), env.value_or("")};
}

std::string Settings::required_string(const std::string& key) {
  auto v = optional_string(key);
  if (!v) fail(key, "is required");
  if (v->empty()) fail(key, "must not be empty");
  return *v;
}

int64_t Settings::integer(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  const SettingValue* v = find(key);
  if (!v) return fallback;
  int64_t n = 0;
  if (auto* i = std::get_if<int64_t>(&v->value)) {
    n = *i;
  } else if (auto* s = std::get_if<std::string>(&v->value)) {
    auto size = parse_size(*s);
    if (!size) fail(key, "expected an integer or a size such as \"64MiB\", got \"" + *s + "\"");
    n = *size;
  } else {
    fail(key, "expected an integer");
  }
  if (n < min || n > max)
    fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                  ", got " + std::to_string(n));
  return n;
}

double Settings::number(const std::string& key, double fallback, double min, double max) {
  const SettingValue* v = find(key);
  if (!v) return fallback;
  double d = 0;
  if (auto* x = std::get_if<double>(&v->value)) d = *x;
  else if (auto* i = std::get_if<int64_t>(&v->value)) d = static_cast<double>(*i);
  else fail(key, "expected a number");
  if (d < min || d > max)
    fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
  return d;
}

std::vector<std::string> Settings::string_list(const std::string& key, bool required) {
  const SettingValue* v = find(key);
  std::vector<std::string> out;
  if (v) {
    if (auto* one = std::get_if<std::string>(&v->value)) out.push_back(*one);
    else if (auto* many = std::get_if<std::vector<std::string>>(&v->value)) out = *many;
    else fail(key, "expected a string or an array of strings");
  }
  for (const auto& s : out)
    if (s.empty()) fail(key, "must not contain an empty string");
  if (required && out.empty()) fail(key, v ? "must not be empty" : "is required");
  return out;
}

bool Settings::boolean(const std::string& key, bool fallback) {
  const SettingValue* v = find(key);
  if (!v) return fallback;
  if (auto* b = std::get_if<bool>(&v->value)) return *b;
  fail(key, "expected true or false");
}

std::chrono::milliseconds Settings::duration(const std::string& key,
                                             std::chrono::milliseconds fallback) {
  const SettingValue* v = find(key);
  if (!v) return fallback;
  if (auto* s = std::get_if<std::string>(&v->value)) {
    if (auto d = parse_duration(*s)) return *d;
    fail(key, "expected a duration such as \"250ms\", \"5s\" or \"2m\", got \"" + *s + "\"");
  }
  if (auto* i = std::get_if<int64_t>(&v->value); i && *i == 0) return std::chrono::milliseconds(0);
  fail(key, "expected a duration string such as \"5s\"");
}

std::string Settings::choice(const std::string& key, const std::string& fallback,
                             const std::vector<std::string>& allowed) {
  std::string v = string(key, fallback);
  for (const auto& a : allowed)
    if (a == v) return v;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "\"" : ", \"") + a + "\"";
  fail(key, "must be one of " + list + ", got \"" + v + "\"");
}

void Settings::finish() const {
  for (const auto& [key, value] : values_)
    if (!used_.count(key)) fail(key, "unknown key");
}

namespace {
// Splits "250ms" into 250 and "ms". Returns false for anything else.
bool split_number(const std::string& text, int64_t& number, std::string& unit) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0 || i > 15) return false;
  number = std::stoll(text.substr(0, i));
  size_t j = i;
  while (j < text.size() && text[j] == ' ') ++j;
  unit = text.substr(j);
  return true;
}
}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(const std::string& text) {
  int64_t n = 0;
  std::string unit;
  if (!split_number(text, n, unit)) return std::nullopt;
  using std::chrono::milliseconds;
  constexpr int64_t kMaxMs = int64_t{10} * 365 * 24 * 3'600'000;   // ten years
  int64_t mult = unit == "ms" ? 1 : unit == "s" ? 1000 : unit == "m" ? 60'000 : unit == "h" ? 3'600'000 : 0;
  if (mult && n > kMaxMs / mult) return std::nullopt;
  if (unit == "ms") return milliseconds(n);
  if (unit == "s") return milliseconds(n * 1000);
  if (unit == "m") return milliseconds(n * 60'000);
  if (unit == "h") return milliseconds(n * 3'600'000);
  if (unit.empty() && n == 0) return milliseconds(0);
  return std::nullopt;
}

std::optional<int64_t> parse_size(const std::string& text) {
  int64_t n = 0;
  std::string unit;
  if (!split_number(text, n, unit)) return std::nullopt;
  int64_t mult = 0;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KiB" || unit == "KB" || unit == "k") mult = 1024;
  else if (unit == "MiB" || unit == "MB" || unit == "M") mult = 1024 * 1024;
  else if (unit == "GiB" || unit == "GB" || unit == "G") mult = 1024LL * 1024 * 1024;
  else if (unit == "TiB" || unit == "TB" || unit == "T") mult = 1024LL * 1024 * 1024 * 1024;
  else return std::nullopt;
  if (n > std::numeric_limits<int64_t>::max() / mult) return std::nullopt;
  return n * mult;
}

}  // namespace tailbox::config
