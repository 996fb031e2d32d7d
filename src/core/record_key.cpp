#include "core/record_key.hpp"

#include <charconv>

namespace tailbox {

void append_record_key(std::string& out, std::string_view host, std::string_view uid,
                       int64_t offset) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, offset);
  (void)ec;   // 24 characters hold any int64_t
  out.append(host).append("/").append(uid).append("/").append(digits, end);
}

std::string make_record_key(std::string_view host, std::string_view uid, int64_t offset) {
  std::string key;
  key.reserve(host.size() + uid.size() + 22);
  append_record_key(key, host, uid, offset);
  return key;
}

std::optional<RecordKey> parse_record_key(std::string_view key) {
  const size_t first = key.find('/'), last = key.rfind('/');
  if (first == 0 || first == std::string_view::npos || last <= first + 1 ||
      last + 1 >= key.size())
    return std::nullopt;
  const std::string_view digits = key.substr(last + 1);
  if (digits.size() > 18) return std::nullopt;
  RecordKey out;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    out.offset = out.offset * 10 + (c - '0');
  }
  out.host = key.substr(0, first);
  out.uid = key.substr(first + 1, last - first - 1);
  return out;
}

}  // namespace tailbox
