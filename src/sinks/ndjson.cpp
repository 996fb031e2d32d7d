#include "sinks/ndjson.hpp"

#include "core/utf8.hpp"

#include <ctime>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string_view.hpp>

namespace tailbox::sinks {

namespace {
// Appends s as a JSON string; bytes that are not UTF-8 become U+FFFD.
void append_string(std::string& out, std::string_view s) {
  if (valid_utf8(s)) out += boost::json::serialize(boost::json::string_view(s.data(), s.size()));
  else out += boost::json::serialize(boost::json::string_view(repair_utf8(s)));
}
}  // namespace

std::string ndjson_record_key(std::string_view line) {
  static constexpr std::string_view kStart = "{\"_id\":\"";
  if (line.starts_with(kStart)) {
    const size_t end = line.find_first_of("\"\\", kStart.size());
    if (end != std::string_view::npos && line[end] == '"')
      return std::string(line.substr(kStart.size(), end - kStart.size()));
  }
  // Escapes in the key (a host_id with quotes or non-ASCII), or another writer's order.
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(line, ec);
  const boost::json::object* o = ec ? nullptr : v.if_object();
  const boost::json::value* id = o ? o->if_contains("_id") : nullptr;
  if (!id || !id->is_string()) return {};
  return std::string(id->as_string().data(), id->as_string().size());
}

std::string base64(std::string_view bytes) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8) |
                 uint8_t(bytes[i + 2]);
    out += table[v >> 18]; out += table[(v >> 12) & 63]; out += table[(v >> 6) & 63]; out += table[v & 63];
  }
  if (i + 1 == bytes.size()) {
    uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    out += table[v >> 18]; out += table[(v >> 12) & 63]; out += "==";
  } else if (i + 2 == bytes.size()) {
    uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8);
    out += table[v >> 18]; out += table[(v >> 12) & 63]; out += table[(v >> 6) & 63]; out += '=';
  }
  return out;
}

std::string rfc3339_ms(int64_t unix_ms) {
  std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return buf;
}

void append_ndjson(std::string& out, const Record& r, std::string_view id_field) {
  out += '{';
  append_string(out, id_field);
  out += ':';
  append_string(out, r.key);
  out += ",\"host\":";
  append_string(out, r.host);
  out += ",\"source\":";
  append_string(out, r.source);
  out += ",\"path\":";
  append_string(out, r.path);
  out += ",\"offset\":";
  out += std::to_string(r.offset);
  out += ",\"ingest_time\":\"";
  out += rfc3339_ms(r.ingest_ms);
  out += "\",\"message\":";
  if (valid_utf8(r.line)) {
    append_string(out, r.line);
  } else {
    append_string(out, r.line);
    out += ",\"message_base64\":\"";
    out += base64(r.line);
    out += '"';
  }
  if (!r.fields.empty()) {
    out += ",\"fields\":";
    out += r.fields;
  }
  if (!r.parse_error.empty()) {
    out += ",\"parse_error\":";
    append_string(out, r.parse_error);
  }
  out += "}\n";
}

}  // namespace tailbox::sinks
