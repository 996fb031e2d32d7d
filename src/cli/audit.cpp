#include "cli/audit.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <set>

#include "core/clock.hpp"
#include "core/record_key.hpp"
#include "outbox/outbox.hpp"
#include "sinks/key_reader.hpp"
#include "tail/file_identity.hpp"
#include "tail/multiline.hpp"
#include "tail/record_assembler.hpp"

namespace tailbox::cli {
namespace {

constexpr size_t kExamples = 5;
constexpr size_t kKeysPerAsk = 10'000;
constexpr int64_t kReadBytes = 1 << 20;

struct FileReport {
  std::string source, path, uid, note;
  int64_t read_offset = 0;
  int64_t records = 0;      // records that start before the checkpoint
  int64_t unread = 0;       // records at or after it: not read by tailbox yet
  int64_t once = 0, pending = 0, dead = 0, missing = 0, duplicated = 0;
  std::vector<int64_t> missing_at, duplicated_at, dead_at, pending_at;
  bool audited = false;

  bool clean() const { return missing == 0 && duplicated == 0; }
};

void example(std::vector<int64_t>& v, int64_t offset) {
  if (v.size() < kExamples) v.push_back(offset);
}

class Progress {
 public:
  Progress(const std::string& path, int64_t size)
      : path_(path), size_(size), on_(isatty(STDERR_FILENO) && size > 8 * kReadBytes),
        start_(std::chrono::steady_clock::now()) {}
  ~Progress() {
    if (on_) std::fprintf(stderr, "\r\033[K");
  }
  void at(int64_t offset, int64_t records) {
    if (!on_ || ++calls_ % 8 != 0) return;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    int pct = static_cast<int>(100 * offset / std::max<int64_t>(size_, 1));
    std::string bar(static_cast<size_t>(pct / 4), '#');
    bar.resize(25, '.');
    std::fprintf(stderr, "\r%s [%s] %3d%% %.0f lines/s", path_.c_str(), bar.c_str(), pct,
                 s > 0 ? static_cast<double>(records) / s : 0.0);
  }

 private:
  std::string path_;
  int64_t size_;
  bool on_;
  int64_t calls_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// Asks the destination about `offsets` (records of `r`) and classifies them.
void settle(const std::string& host, FileReport& r, std::vector<int64_t>& offsets,
            const std::map<int64_t, bool>& rows, sinks::KeyReader& dest) {
  if (offsets.empty()) return;
  std::vector<std::string> keys;
  keys.reserve(offsets.size());
  for (int64_t o : offsets) keys.push_back(make_record_key(host, r.uid, o));
  const std::vector<int64_t> copies = dest.count(keys);
  for (size_t i = 0; i < offsets.size(); ++i) {
    const int64_t o = offsets[i];
    if (copies[i] == 1) {
      ++r.once;
    } else if (copies[i] > 1) {
      ++r.duplicated;
      example(r.duplicated_at, o);
    } else if (auto it = rows.find(o); it != rows.end()) {
      if (it->second) {
        ++r.dead;
        example(r.dead_at, o);
      } else {
        ++r.pending;
        example(r.pending_at, o);
      }
    } else {
      ++r.missing;
      example(r.missing_at, o);
    }
  }
  offsets.clear();
}

// Reads the file as its reader would and audits every record before the
// checkpoint. Sets r.note and returns without auditing when the file on disk
// is not the tracked one.
void audit_file(const config::Config& cfg, const outbox::TrackedFile& f,
                const std::map<int64_t, bool>& rows, sinks::KeyReader& dest, FileReport& r) {
  if (f.path.ends_with(".gz")) {
    r.note = "not audited: a .gz file (read once, decompressed)";
    return;
  }
  int fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    r.note = std::string("not on disk under its last path (") + std::strerror(errno) + ")";
    return;
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  auto now = tail::identify(fd, f.identity.fingerprint_len);
  if (!now || now->dev != f.identity.dev || now->inode != f.identity.inode ||
      now->fingerprint_len < f.identity.fingerprint_len ||
      now->fingerprint != f.identity.fingerprint) {
    r.note = "its last path names another file now (rotated away or replaced)";
    return;
  }
  config::SourceConfig fallback;
  const config::SourceConfig* src = &fallback;
  for (const auto& s : cfg.sources)
    if (s.name == f.source) src = &s;
  std::shared_ptr<const tail::StartPattern> start;
  if (src->multiline.enabled()) start = tail::StartPattern::compile(src->multiline.start_pattern);
  tail::RecordAssembler assembler(*src, start);

  Progress progress(f.path, now->size);
  std::string pending;   // bytes from `base` on, not consumed yet
  int64_t base = 0, pos = 0;
  std::vector<Line> out;
  std::vector<int64_t> offsets;
  bool eof = false;
  while (!eof) {
    const size_t had = pending.size();
    pending.resize(had + kReadBytes);
    ssize_t n = pread(fd, pending.data() + had, kReadBytes, pos);
    if (n < 0) throw std::runtime_error("cannot read " + f.path + ": " + std::strerror(errno));
    pending.resize(had + static_cast<size_t>(n));
    pos += n;
    eof = n == 0;
    size_t used = assembler.consume(pending, base, false, out);
    for (const Line& line : out) {
      if (line.offset >= f.read_offset) {
        ++r.unread;
        continue;
      }
      ++r.records;
      offsets.push_back(line.offset);
    }
    out.clear();
    assembler.release();
    pending.erase(0, used);
    base += static_cast<int64_t>(used);
    if (offsets.size() >= kKeysPerAsk) settle(cfg.host_id, r, offsets, rows, dest);
    progress.at(pos, r.records);
  }
  settle(cfg.host_id, r, offsets, rows, dest);
  r.audited = true;
}

std::string offsets_text(const std::vector<int64_t>& v, int64_t total) {
  std::string s;
  for (int64_t o : v) s += (s.empty() ? "" : ", ") + std::to_string(o);
  if (total > static_cast<int64_t>(v.size())) s += ", ...";
  return s;
}

boost::json::array to_json(const std::vector<int64_t>& v) {
  boost::json::array a;
  for (int64_t o : v) a.push_back(o);
  return a;
}

}  // namespace

int run_audit(const config::Config& cfg, const AuditOptions& options) {
  std::string why_not;
  std::unique_ptr<sinks::KeyReader> dest;
  try {
    dest = sinks::make_key_reader(cfg.sink, cfg.host_id, why_not);
  } catch (const std::exception& e) {
    std::cerr << "tailbox audit: " << e.what() << "\n";
    return 1;
  }
  if (!dest) {
    std::cerr << "tailbox audit: cannot audit sink \"" << cfg.sink.type << "\": " << why_not
              << "\n";
    return 2;
  }
  std::unique_ptr<outbox::Outbox> ob;
  std::vector<outbox::TrackedFile> files;
  try {
    ob = outbox::Outbox::open({cfg.outbox.path, cfg.outbox.synchronous, true});
  } catch (const std::exception& e) {
    std::cerr << "tailbox audit: " << e.what() << "\n";
    return 1;
  }
  if (auto tracked = ob->tracked_files()) {
    files = std::move(*tracked);
  } else {
    std::cerr << "tailbox audit: cannot read " << cfg.outbox.path << ": "
              << tracked.error().message() << "\n";
    return 1;
  }
  // Every file's rows in the outbox are read before the destination is: a
  // line delivered meanwhile is then pending, or found there (never missing).
  std::vector<const outbox::TrackedFile*> selected;
  std::vector<std::map<int64_t, bool>> rows;
  for (const auto& f : files) {
    if (!options.source.empty() && f.source != options.source) continue;
    struct stat st {};
    if (options.since_ms > 0 && ::stat(f.path.c_str(), &st) == 0 &&
        static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 < options.since_ms)
      continue;
    if (f.released && ::stat(f.path.c_str(), &st) != 0) continue;   // gone: nothing to read
    auto in_outbox = ob->file_rows(f.id);
    if (!in_outbox) {
      std::cerr << "tailbox audit: " << f.path << ": cannot read the outbox's rows: "
                << in_outbox.error().message() << "\n";
      return 1;
    }
    selected.push_back(&f);
    auto& m = rows.emplace_back();
    for (const auto& [offset, dead] : *in_outbox) m[offset] = dead;
  }
  try {
    dest->load();
  } catch (const std::exception& e) {
    std::cerr << "tailbox audit: reading the destination: " << e.what() << "\n";
    return 1;
  }
  std::vector<FileReport> reports;
  for (size_t i = 0; i < selected.size(); ++i) {
    const outbox::TrackedFile& f = *selected[i];
    FileReport r;
    r.source = f.source;
    r.path = f.path;
    r.uid = f.uid;
    r.read_offset = f.read_offset;
    try {
      audit_file(cfg, f, rows[i], *dest, r);
    } catch (const std::exception& e) {
      std::cerr << "tailbox audit: " << f.path << ": " << e.what() << "\n";
      return 1;
    }
    reports.push_back(std::move(r));
  }
  const std::string remark = dest->remark();

  bool clean = true;
  for (const auto& r : reports) clean = clean && r.clean();
  if (options.json) {
    boost::json::array jfiles;
    for (const auto& r : reports) {
      boost::json::object o{{"source", r.source}, {"path", r.path}, {"uid", r.uid},
                            {"read_offset", r.read_offset}, {"audited", r.audited}};
      if (!r.note.empty()) o["note"] = r.note;
      if (r.audited) {
        o["lines"] = r.records;
        o["delivered_once"] = r.once;
        o["pending"] = r.pending;
        o["dead"] = r.dead;
        o["missing"] = r.missing;
        o["duplicated"] = r.duplicated;
        o["not_read_yet"] = r.unread;
        o["missing_offsets"] = to_json(r.missing_at);
        o["duplicated_offsets"] = to_json(r.duplicated_at);
        o["dead_offsets"] = to_json(r.dead_at);
        o["pending_offsets"] = to_json(r.pending_at);
      }
      jfiles.push_back(std::move(o));
    }
    boost::json::object top{{"host_id", cfg.host_id}, {"sink", cfg.sink.type},
                            {"clean", clean}, {"files", jfiles}};
    if (!remark.empty()) top["destination"] = remark;
    std::cout << boost::json::serialize(top) << "\n";
    return clean ? 0 : 1;
  }
  for (const auto& r : reports) {
    std::printf("%s (source %s, uid %s)\n", r.path.c_str(), r.source.c_str(), r.uid.c_str());
    if (!r.audited) {
      std::printf("  %s\n", r.note.c_str());
      continue;
    }
    std::printf("  %lld lines read (up to byte %lld): %lld delivered once, %lld pending, %lld dead, "
                "%lld missing, %lld duplicated; %lld not read yet\n",
                static_cast<long long>(r.records), static_cast<long long>(r.read_offset),
                static_cast<long long>(r.once), static_cast<long long>(r.pending),
                static_cast<long long>(r.dead), static_cast<long long>(r.missing),
                static_cast<long long>(r.duplicated), static_cast<long long>(r.unread));
    if (r.missing)
      std::printf("  MISSING at offsets %s\n", offsets_text(r.missing_at, r.missing).c_str());
    if (r.duplicated)
      std::printf("  DUPLICATED at offsets %s\n",
                  offsets_text(r.duplicated_at, r.duplicated).c_str());
    if (r.dead)
      std::printf("  dead in the outbox at offsets %s (tools/replay)\n",
                  offsets_text(r.dead_at, r.dead).c_str());
    if (r.pending)
      std::printf("  pending in the outbox at offsets %s\n",
                  offsets_text(r.pending_at, r.pending).c_str());
  }
  if (!remark.empty()) std::printf("destination: %s\n", remark.c_str());
  std::printf("%s: %zu files; %s\n", clean ? "clean" : "NOT CLEAN", reports.size(),
              clean ? "every line read is at the destination once, or still in the outbox"
                    : "lines missing or duplicated at the destination (see above)");
  return clean ? 0 : 1;
}

}  // namespace tailbox::cli
