#include "config/config.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <boost/regex.hpp>
#include <set>
#include <toml++/toml.h>

#include "tail/glob.hpp"

namespace tailbox::config {
namespace {

int line_of(const toml::node& node) { return static_cast<int>(node.source().begin.line); }

// Flattens one TOML table into Settings; nested tables are not allowed here.
// Keys in `skip` are read elsewhere. (The table is read in place: a copy of a
// toml++ node loses its source region, and with it the line in messages.)
Settings to_settings(const std::string& prefix, const toml::table& table,
                     const std::set<std::string>& skip = {}) {
  std::map<std::string, SettingValue> values;
  for (auto&& [key, node] : table) {
    std::string name(key.str());
    if (skip.count(name)) continue;
    std::string where = prefix.empty() ? name : prefix + "." + name;
    SettingValue value;
    value.line = line_of(node);
    if (auto s = node.value_exact<std::string>()) {
      value.value = *s;
    } else if (auto i = node.value_exact<int64_t>()) {
      value.value = *i;
    } else if (auto d = node.value_exact<double>()) {
      value.value = *d;
    } else if (auto b = node.value_exact<bool>()) {
      value.value = *b;
    } else if (const toml::array* arr = node.as_array()) {
      std::vector<std::string> items;
      for (const toml::node& item : *arr) {
        auto s = item.value_exact<std::string>();
        if (!s)
          throw ConfigError(where + ": expected an array of strings (line " +
                            std::to_string(line_of(item)) + ")");
        items.push_back(*s);
      }
      value.value = std::move(items);
    } else if (node.is_table()) {
      throw ConfigError(where + ": unknown table (line " + std::to_string(value.line) + ")");
    } else {
      throw ConfigError(where + ": unsupported value (line " + std::to_string(value.line) + ")");
    }
    values.emplace(std::move(name), std::move(value));
  }
  return Settings(prefix, std::move(values), line_of(table));
}

const toml::table& table_at(const toml::table& root, const char* key) {
  static const toml::table empty;
  const toml::node* node = root.get(key);
  if (!node) return empty;
  const toml::table* t = node->as_table();
  if (!t) throw ConfigError(std::string(key) + ": expected a table (line " +
                            std::to_string(line_of(*node)) + ")");
  return *t;
}

// An absolute, lexically normal form of `path`, and the form with symbolic
// links resolved: a glob may name either.
std::vector<std::string> path_forms(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<std::string> forms;
  fs::path abs = fs::absolute(path, ec);
  if (ec) abs = path;
  forms.push_back(abs.lexically_normal().string());
  fs::path real = fs::weakly_canonical(abs, ec);
  if (!ec && real.string() != forms[0]) forms.push_back(real.string());
  return forms;
}

// A source that reads what tailbox itself writes (the sink's output, the
// outbox) feeds every line back to itself without end: refused at load time.
void check_feedback_loops(const Config& cfg) {
  std::vector<std::pair<std::string, std::string>> written;   // (file, what it is)
  for (const char* suffix : {"", "-wal", "-shm", "-journal", ".lock"})
    written.emplace_back(cfg.outbox.path + suffix, "the outbox ([outbox] path)");
  // Only the sinks that write local files have a path; reading it here
  // (without marking it used) keeps the sink's own checks intact.
  std::optional<std::string> sink_path;
  if (cfg.sink.type == "file" || cfg.sink.type == "sqlite") {
    Settings copy = cfg.sink.settings;
    try {
      sink_path = copy.optional_string("path");
    } catch (const ConfigError&) {
      // the sink reports a path of the wrong type itself
    }
    if (!sink_path && cfg.sink.type == "sqlite") sink_path = "tailbox-inbox.db";
  }
  if (sink_path && !sink_path->empty()) {
    std::vector<const char*> suffixes{""};
    if (cfg.sink.type == "sqlite") suffixes = {"", "-wal", "-shm", "-journal"};
    for (const char* suffix : suffixes)
      written.emplace_back(*sink_path + suffix, "the " + cfg.sink.type + " sink's output ([sink] path)");
  }
  for (const auto& source : cfg.sources) {
    for (const auto& [file, what] : written) {
      for (const std::string& form : path_forms(file)) {
        std::string base = form.substr(form.rfind('/') + 1);
        bool excluded = false;
        for (const auto& ex : source.exclude)
          excluded = excluded || tail::glob_match(ex, ex.find('/') != std::string::npos ? form : base);
        if (excluded) continue;
        for (const auto& glob : source.paths) {
          for (const std::string& g : path_forms(glob)) {
            if (!tail::glob_match(g, form)) continue;
            throw ConfigError("source.paths: the glob \"" + glob + "\" of [[source]] \"" +
                              source.name + "\" matches " + form + ", " + what +
                              ": tailbox would read its own output forever. Narrow the glob or "
                              "add the file to exclude");
          }
        }
      }
    }
  }
}

std::string default_host_id() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

}  // namespace

Config load_string(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    throw ConfigError(origin + ": " + std::string(e.description()) + " (line " +
                      std::to_string(e.source().begin.line) + ")");
  }

  Config cfg;
  // Top level: scalars plus the known tables.
  Settings s = to_settings("", root, {"source", "tail", "outbox", "delivery", "sink", "metrics"});
  cfg.host_id = s.string("host_id", default_host_id());
  if (cfg.host_id.empty() || cfg.host_id.find('/') != std::string::npos)
    s.fail("host_id", "must be non-empty and must not contain '/'");
  cfg.log_level = s.choice("log_level", "info", {"trace", "debug", "info", "warn", "error"});
  cfg.log_format = s.choice("log_format", "text", {"text", "json"});
  cfg.log_file = s.string("log_file", "");
  s.finish();

  // [[source]]
  const toml::node* sources = root.get("source");
  if (!sources) throw ConfigError("source: at least one [[source]] is required");
  const toml::array* arr = sources->as_array();
  if (!arr || !arr->is_array_of_tables())
    throw ConfigError("source: must be written as [[source]] tables (line " +
                      std::to_string(line_of(*sources)) + ")");
  std::set<std::string> names;
  for (const toml::node& node : *arr) {
    const toml::table& whole = *node.as_table();
    // "multiline.x = ..." (or [source.multiline]) is the one nested table of a source.
    static const toml::table kNoMultiline;
    const toml::table* multiline_table = &kNoMultiline;
    if (const toml::node* ml = whole.get("multiline")) {
      if (!ml->as_table())
        throw ConfigError("source.multiline: expected a table, e.g. multiline.start_pattern = "
                          "'^\\d' (line " + std::to_string(line_of(*ml)) + ")");
      multiline_table = ml->as_table();
    }
    const toml::table& multiline = *multiline_table;
    Settings src = to_settings("source", whole, {"multiline"});
    SourceConfig sc;
    sc.name = src.required_string("name");
    // Every later mistake in this [[source]] names it.
    try {
      if (!names.insert(sc.name).second) src.fail("name", "\"" + sc.name + "\" is used twice");
      sc.paths = src.string_list("paths", true);
      sc.exclude = src.string_list("exclude", false);
      sc.read_from = src.choice("read_from", "head", {"head", "tail"}) == "tail" ? ReadFrom::tail
                                                                                : ReadFrom::head;
      std::string parser = src.choice("parser", "raw", {"raw", "json", "regex"});
      sc.parser = parser == "json" ? ParserKind::json
                  : parser == "regex" ? ParserKind::regex : ParserKind::raw;
      sc.pattern = src.string("pattern", "");
      if (sc.parser == ParserKind::regex && sc.pattern.empty())
        src.fail("pattern", "is required when parser = \"regex\"");
      if (sc.parser != ParserKind::regex && !sc.pattern.empty())
        src.fail("pattern", "is only used with parser = \"regex\"");
      sc.max_line_bytes = src.integer("max_line_bytes", sc.max_line_bytes, 256, 64LL << 20);
      sc.max_line_mode = src.choice("max_line_mode", "split", {"split", "truncate"}) == "truncate"
                             ? LongLines::truncate : LongLines::split;
      sc.partial_line_timeout = src.duration("partial_line_timeout", sc.partial_line_timeout);
      sc.ignore_older = src.duration("ignore_older", sc.ignore_older);
      sc.read_gzip = src.boolean("read_gzip", sc.read_gzip);
      src.finish();
      {
        Settings ml = to_settings("source.multiline", multiline);
        auto& mc = sc.multiline;
        mc.start_pattern = ml.string("start_pattern", "");
        mc.max_lines = ml.integer("max_lines", mc.max_lines, 1, 1'000'000);
        mc.max_bytes = ml.integer("max_bytes", mc.max_bytes, 256, 64LL << 20);
        mc.timeout = ml.duration("timeout", mc.timeout);
        if (mc.start_pattern.empty() && !multiline.empty())
          ml.fail("start_pattern", "is required to use multiline");
        if (!mc.start_pattern.empty()) {
          try {
            boost::regex re(mc.start_pattern, boost::regex::perl);
          } catch (const boost::regex_error& e) {
            ml.fail("start_pattern", std::string("is not a valid regular expression: ") + e.what());
          }
        }
        ml.finish();
      }
    } catch (const ConfigError& e) {
      throw ConfigError(std::string(e.what()) + " in [[source]] \"" + sc.name + "\"");
    }
    cfg.sources.push_back(std::move(sc));
  }
  if (cfg.sources.empty()) throw ConfigError("source: at least one [[source]] is required");

  {
    Settings t = to_settings("tail", table_at(root, "tail"));
    cfg.tail.poll_interval = t.duration("poll_interval", cfg.tail.poll_interval);
    cfg.tail.read_interval = t.duration("read_interval", cfg.tail.read_interval);
    if (cfg.tail.poll_interval.count() < 10) t.fail("poll_interval", "must be at least 10ms");
    if (cfg.tail.read_interval.count() < 1) t.fail("read_interval", "must be at least 1ms");
    cfg.tail.fingerprint_bytes = t.integer("fingerprint_bytes", cfg.tail.fingerprint_bytes, 16, 1 << 20);
    cfg.tail.rotate_wait = t.duration("rotate_wait", cfg.tail.rotate_wait);
    cfg.tail.read_chunk_bytes = t.integer("read_chunk_bytes", cfg.tail.read_chunk_bytes, 4096, 64 << 20);
    cfg.tail.inotify = t.boolean("inotify", cfg.tail.inotify);
    cfg.tail.recheck_interval = t.duration("recheck_interval", cfg.tail.recheck_interval);
    if (cfg.tail.recheck_interval.count() < 10) t.fail("recheck_interval", "must be at least 10ms");
    cfg.tail.close_inactive = t.duration("close_inactive", cfg.tail.close_inactive);
    t.finish();
  }
  {
    Settings o = to_settings("outbox", table_at(root, "outbox"));
    cfg.outbox.path = o.string("path", cfg.outbox.path);
    if (cfg.outbox.path.empty()) o.fail("path", "must not be empty");
    struct stat st {};
    if (stat(cfg.outbox.path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
      o.fail("path", "\"" + cfg.outbox.path + "\" is a directory; name the outbox file in it, "
             "e.g. \"" + cfg.outbox.path + "/outbox.db\"");
    cfg.outbox.max_rows = o.integer("max_rows", cfg.outbox.max_rows, 100, int64_t{1} << 40);
    cfg.outbox.max_bytes = o.integer("max_bytes", cfg.outbox.max_bytes, 1 << 16, int64_t{1} << 50);
    // Default "normal", but "full" for the kafka sink: a Kafka transaction
    // cannot be rolled back, so the outbox must not forget (power loss) rows
    // or acks that Kafka already has. Set after [sink] is read, below.
    cfg.outbox.synchronous_set = o.optional_string("synchronous").has_value();
    std::string sync = o.choice("synchronous", "normal", {"off", "normal", "full"});
    cfg.outbox.synchronous = sync == "off" ? Synchronous::off
                             : sync == "full" ? Synchronous::full : Synchronous::normal;
    cfg.outbox.min_free_bytes = o.integer("min_free_bytes", cfg.outbox.min_free_bytes, 0, int64_t{1} << 50);
    cfg.outbox.reserve_bytes = o.integer("reserve_bytes", cfg.outbox.reserve_bytes, 0, int64_t{1} << 40);
    o.finish();
  }
  {
    Settings d = to_settings("delivery", table_at(root, "delivery"));
    auto& dc = cfg.delivery;
    dc.workers = static_cast<int>(d.integer("workers", dc.workers, 1, 256));
    dc.batch_rows = d.integer("batch_rows", dc.batch_rows, 1, 100'000);
    dc.batch_bytes = d.integer("batch_bytes", dc.batch_bytes, 1024, 256LL << 20);
    dc.linger = d.duration("linger", dc.linger);
    dc.backoff_min = d.duration("backoff_min", dc.backoff_min);
    dc.backoff_max = d.duration("backoff_max", dc.backoff_max);
    if (dc.backoff_min.count() < 1) d.fail("backoff_min", "must be at least 1ms");
    if (dc.backoff_max < dc.backoff_min) d.fail("backoff_max", "must not be below backoff_min");
    dc.jitter = d.number("jitter", dc.jitter, 0.0, 1.0);
    dc.max_attempts = d.integer("max_attempts", dc.max_attempts, 0, 1'000'000);
    dc.ordering = d.choice("ordering", "none", {"none", "per_file"}) == "per_file"
                      ? Ordering::per_file : Ordering::none;
    dc.shutdown_timeout = d.duration("shutdown_timeout", dc.shutdown_timeout);
    d.finish();
  }
  {
    Settings m = to_settings("metrics", table_at(root, "metrics"));
    cfg.metrics.listen = m.string("listen", cfg.metrics.listen);
    if (!cfg.metrics.listen.empty()) {
      size_t colon = cfg.metrics.listen.rfind(':');
      if (colon == std::string::npos || colon == 0 || colon + 1 == cfg.metrics.listen.size())
        m.fail("listen", "must be \"host:port\" (e.g. \"127.0.0.1:9464\") or \"\" to disable");
    }
    cfg.metrics.stall_after = m.duration("stall_after", cfg.metrics.stall_after);
    m.finish();
  }
  {
    const toml::node* node = root.get("sink");
    if (!node) throw ConfigError("sink: a [sink] table is required");
    Settings sk = to_settings("sink", table_at(root, "sink"));
    cfg.sink.type = sk.required_string("type");
    cfg.sink.host_id = cfg.host_id;
    if (cfg.sink.type == "kafka" && !cfg.outbox.synchronous_set) cfg.outbox.synchronous = Synchronous::full;
    cfg.sink.settings = std::move(sk);  // the sink reads and finishes the rest
  }
  check_feedback_loops(cfg);
  return cfg;
}

Config load_file(const std::string& path) {
  std::string text;
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw ConfigError(path + " is a directory, not a configuration file (give -c the .toml file)");
  {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw ConfigError(path + ": cannot open: " + std::strerror(errno));
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
  }
  return load_string(text, path);
}

}  // namespace tailbox::config
