#include "sinks/ndjson.hpp"

#include "core/utf8.hpp"


#include <algorithm>
#include <charconv>
#include <cstring>
#include <ctime>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string_view.hpp>

namespace tailbox::sinks {

namespace {

// Whether any of the 8 bytes at p is a C0 control, " or a backslash (exact: the
// zero-byte tests below have no false positives for "is there one").
bool needs_escape8(const char* p) {
  constexpr uint64_t kOnes = 0x0101010101010101ull, kHigh = 0x8080808080808080ull;
  uint64_t w;
  std::memcpy(&w, p, 8);
  auto has_zero = [](uint64_t x) { return (x - kOnes) & ~x & kHigh; };
  uint64_t below_space = (w - kOnes * 0x20) & ~w & kHigh;
  return (below_space | has_zero(w ^ (kOnes * '"')) | has_zero(w ^ (kOnes * '\\'))) != 0;
}

// Appends valid UTF-8 `s` as a JSON string, escaped exactly as
// boost::json::serialize does (the earlier encoding: a record written again
// is byte-for-byte the same): " and \ and the C0 controls, \b \t \n \f \r
// by name, the others as \u00xx; everything else as is. One pass, no
// temporary string (this ran for every field of every record).
void append_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  const char* p = s.data();
  const char* end = p + s.size();
  while (p < end) {
    const char* run = p;
    while (p < end) {
      if (end - p >= 8 && !needs_escape8(p)) {   // 8 plain bytes at once
        p += 8;
        continue;
      }
      unsigned char c = static_cast<unsigned char>(*p);
      if (c < 0x20 || c == '"' || c == '\\') break;
      ++p;
    }
    out.append(run, static_cast<size_t>(p - run));
    if (p == end) break;
    unsigned char c = static_cast<unsigned char>(*p++);
    char e[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
    switch (c) {
      case '"': out.append("\\\"", 2); continue;
      case '\\': out.append("\\\\", 2); continue;
      case '\b': out.append("\\b", 2); continue;
      case '\t': out.append("\\t", 2); continue;
      case '\n': out.append("\\n", 2); continue;
      case '\f': out.append("\\f", 2); continue;
      case '\r': out.append("\\r", 2); continue;
      default: out.append(e, 6);
    }
  }
  out += '"';
}

// Appends s as a JSON string; bytes that are not UTF-8 become U+FFFD.
void append_string(std::string& out, std::string_view s) {
  if (valid_utf8(s)) append_escaped(out, s);
  else append_escaped(out, repair_utf8(s));
}

void append_int(std::string& out, int64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<size_t>(end - buf));
}

// rfc3339_ms into out; the date and time of the last second seen are kept
// per thread (records of a batch share a few seconds; gmtime_r and snprintf
// per record were a tenth of the encoding).
void append_rfc3339_ms(std::string& out, int64_t unix_ms) {
  thread_local int64_t cached_secs = INT64_MIN;
  thread_local char cached[24];   // "YYYY-MM-DDTHH:MM:SS."
  if (unix_ms < 0 || unix_ms >= 253402300800000) {   // outside years 1970..9999: as before
    out += rfc3339_ms(unix_ms);
    return;
  }
  int64_t secs = unix_ms / 1000;
  int64_t ms = unix_ms % 1000;
  if (secs != cached_secs) {
    std::string full = rfc3339_ms(secs * 1000);
    std::memcpy(cached, full.data(), 20);
    cached_secs = secs;
  }
  out.append(cached, 20);
  char tail[4] = {static_cast<char>('0' + ms / 100), static_cast<char>('0' + ms / 10 % 10),
                  static_cast<char>('0' + ms % 10), 'Z'};
  out.append(tail, 4);
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

// Standard base64 (RFC 4648, padded). Not OpenSSL's EVP_EncodeBlock: the
// relay would then map libcrypto for one function (1.4 MiB of RSS).
std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = uint32_t(p[i]) << 16 | uint32_t(p[i + 1]) << 8 | p[i + 2];
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (const size_t rest = bytes.size() - i; rest > 0) {
    const uint32_t v = uint32_t(p[i]) << 16 | (rest == 2 ? uint32_t(p[i + 1]) << 8 : 0);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string rfc3339_ms(int64_t unix_ms) {
  std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
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
  append_int(out, r.offset);
  out += ",\"ingest_time\":\"";
  append_rfc3339_ms(out, r.ingest_ms);
  out += "\",\"message\":";
  if (valid_utf8(r.line)) {
    append_escaped(out, r.line);
  } else {
    append_escaped(out, repair_utf8(r.line));
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
