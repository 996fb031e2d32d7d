#include "dispatch/record_builder.hpp"

#include "core/record_key.hpp"

#include <boost/json.hpp>
#include <boost/regex.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/utf8.hpp"

namespace tailbox::dispatch {

namespace {

bool has_infinity(const boost::json::value& v) {
  if (v.is_double()) return std::isinf(v.get_double());
  if (v.is_array()) {
    for (const auto& x : v.get_array())
      if (has_infinity(x)) return true;
  } else if (v.is_object()) {
    for (const auto& kv : v.get_object())
      if (has_infinity(kv.value())) return true;
  }
  return false;
}

}  // namespace

// `json` (valid JSON) with every number too large for a double written as a
// string of its exact text: {"big":1e999} -> {"big":"1e999"}.
std::string quote_huge_numbers(std::string_view json) {
  std::string out;
  out.reserve(json.size() + 16);
  size_t i = 0;
  while (i < json.size()) {
    char c = json[i];
    if (c == '"') {   // a string, escapes included, copied as it is
      size_t j = i + 1;
      while (j < json.size() && json[j] != '"') j += json[j] == '\\' ? 2 : 1;
      out.append(json.substr(i, j + 1 - i));
      i = j + 1;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      size_t j = i;
      while (j < json.size() && std::strchr("0123456789+-.eE", json[j]) && json[j] != '\0') ++j;
      std::string number(json.substr(i, j - i));
      if (std::isinf(std::strtod(number.c_str(), nullptr))) out += '"' + number + '"';
      else out += number;
      i = j;
    } else {
      out += c;
      ++i;
    }
  }
  return out;
}

int64_t Batch::payload_bytes() const {
  int64_t n = 0;
  for (const auto& r : rows) n += static_cast<int64_t>(r.payload.size());
  return n;
}

struct RecordBuilder::Parser {
  config::ParserKind kind = config::ParserKind::raw;
  boost::regex regex;
  std::vector<std::string> names;   // the pattern's named groups, in order

  // Returns true and sets `fields` to a JSON object, or false and sets `error`.
  bool parse(std::string_view line, std::string& fields, std::string& error) const {
    try {
      return parse_or_throw(line, fields, error);
    } catch (const std::exception& e) {
      // e.g. boost::regex "complexity exceeded" on a pathological line.
      error = std::string("parser failed: ") + e.what();
      return false;
    }
  }

  bool parse_or_throw(std::string_view line, std::string& fields, std::string& error) const {
    if (kind == config::ParserKind::json) {
      boost::system::error_code ec;
      boost::json::value v = boost::json::parse(boost::json::string_view(line.data(), line.size()), ec);
      if (ec) {
        error = "not JSON: " + ec.message();
        return false;
      }
      if (!v.is_object()) {
        error = "not a JSON object";
        return false;
      }
      if (has_infinity(v)) {
        // 1e999 parses as infinity, which JSON cannot write: such a number
        // becomes a string holding its exact text.
        v = boost::json::parse(quote_huge_numbers(line), ec);
        if (ec) {
          error = "not JSON: " + ec.message();
          return false;
        }
      }
      fields = boost::json::serialize(v);
      return true;
    }
    boost::match_results<std::string_view::const_iterator> m;
    if (!boost::regex_search(line.begin(), line.end(), m, regex)) {
      error = "does not match the source's pattern";
      return false;
    }
    boost::json::object obj;
    for (const auto& name : names) {
      const auto& sub = m[name];
      if (!sub.matched) continue;
      std::string_view v(&*sub.first, static_cast<size_t>(sub.length()));
      // JSON strings must be UTF-8: invalid bytes become U+FFFD here (the raw
      // line, with its exact bytes, is delivered beside the fields).
      if (valid_utf8(v)) obj[name] = boost::json::string_view(v.data(), v.size());
      else obj[name] = repair_utf8(v);
    }
    fields = boost::json::serialize(obj);
    return true;
  }
};

namespace {
// Names of (?<name>...) and (?P<name>...) groups.
std::vector<std::string> group_names(const std::string& pattern) {
  std::vector<std::string> names;
  for (size_t i = 0; i + 3 < pattern.size(); ++i) {
    if (pattern[i] == '\\') { ++i; continue; }
    if (pattern[i] != '(' || pattern[i + 1] != '?') continue;
    size_t start = i + 2;
    if (pattern[start] == 'P') ++start;
    if (start >= pattern.size() || pattern[start] != '<') continue;
    if (start + 1 < pattern.size() && (pattern[start + 1] == '=' || pattern[start + 1] == '!')) continue;
    size_t end = pattern.find('>', start);
    if (end == std::string::npos) break;
    names.push_back(pattern.substr(start + 1, end - start - 1));
  }
  return names;
}
}  // namespace

RecordBuilder::RecordBuilder(const config::Config& config) : host_(config.host_id) {
  for (const auto& source : config.sources) {
    auto p = std::make_unique<Parser>();
    p->kind = source.parser;
    if (source.parser == config::ParserKind::regex) {
      try {
        // Boost wants (?<name>...); accept Python's (?P<name>...) too.
        std::string pattern = source.pattern;
        for (size_t at; (at = pattern.find("(?P<")) != std::string::npos;) pattern.erase(at + 2, 1);
        p->regex.assign(pattern, boost::regex::perl);
      } catch (const boost::regex_error& e) {
        throw config::ConfigError("source.pattern: does not compile (" + std::string(e.what()) +
                                  ") in source \"" + source.name + "\"");
      }
      p->names = group_names(source.pattern);
      if (p->names.empty())
        throw config::ConfigError("source.pattern: has no named group such as (?<level>\\w+) "
                                  "in source \"" + source.name + "\"");
    }
    parsers_.emplace_back(source.name, std::move(p));
  }
}

RecordBuilder::~RecordBuilder() = default;

void RecordBuilder::build(Batch& batch) const {
  const size_t n = batch.rows.size();
  batch.keys.resize(n);
  batch.fields.resize(n);
  batch.errors.resize(n);
  batch.records.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const outbox::LeasedRow& row = batch.rows[i];
    const outbox::FileInfo& info = *row.info;
    std::string& key = batch.keys[i];
    key.clear();
    append_record_key(key, host_, info.uid, row.offset);

    Record& rec = batch.records[i];
    rec.key = key;
    rec.host = host_;
    rec.source = info.source;
    rec.path = info.path;
    rec.offset = row.offset;
    rec.ingest_ms = row.ingest_ms;
    rec.line = row.payload;
    rec.fields = {};
    rec.parse_error = {};
    batch.fields[i].clear();
    batch.errors[i].clear();
    for (const auto& [name, parser] : parsers_) {
      if (name != info.source || parser->kind == config::ParserKind::raw) continue;
      if (parser->parse(row.payload, batch.fields[i], batch.errors[i])) rec.fields = batch.fields[i];
      else rec.parse_error = batch.errors[i];
      break;
    }
  }
}

}  // namespace tailbox::dispatch
