#include "cli/status.hpp"

#include <sys/stat.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <iostream>
#include <stdexcept>

#include "core/clock.hpp"
#include "outbox/outbox.hpp"

namespace tailbox::cli {

boost::json::object outbox_status(const std::string& outbox_path, outbox::Outbox& reader,
                                  int64_t now_ms) {
  auto summary = reader.summary();
  if (!summary) throw std::runtime_error(summary.error().message());
  auto tracked = reader.tracked_files();
  if (!tracked) throw std::runtime_error(tracked.error().message());
  const outbox::Outbox::Summary& s = *summary;
  const std::vector<outbox::TrackedFile>& files = *tracked;
  double oldest_age =
      s.oldest_pending_ms ? static_cast<double>(now_ms - s.oldest_pending_ms) / 1000.0 : 0.0;

  boost::json::array jfiles;
  for (const auto& f : files) {
    if (f.released) continue;
    struct stat st {};
    int64_t size = -1;
    if (stat(f.path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_ino) == f.identity.inode)
      size = st.st_size;
    jfiles.push_back({{"source", f.source}, {"path", f.path}, {"uid", f.uid},
                      {"read_offset", f.read_offset}, {"size", size},
                      {"lag_bytes", size < 0 ? 0 : size - f.read_offset}});
  }
  boost::json::array jdead;
  for (const auto& [err, n] : s.dead_by_error) jdead.push_back({{"error", err}, {"rows", n}});
  return {{"outbox", outbox_path},
          {"pending_rows", s.pending},
          {"pending_bytes", s.pending_bytes},
          {"oldest_pending_age_seconds", oldest_age},
          {"dead_rows", s.dead},
          {"dead_by_error", std::move(jdead)},
          {"files", std::move(jfiles)}};
}

int show_status(const config::Config& cfg, bool json) {
  std::unique_ptr<outbox::Outbox> ob;
  try {
    ob = outbox::Outbox::open({cfg.outbox.path, cfg.outbox.synchronous, true});
  } catch (const std::exception& e) {
    std::cerr << "tailbox status: " << e.what() << "\n";
    return 1;
  }
  boost::json::object o;
  try {
    o = outbox_status(cfg.outbox.path, *ob, unix_ms());
  } catch (const std::exception& e) {
    std::cerr << "tailbox status: cannot read " << cfg.outbox.path << ": " << e.what() << "\n";
    return 1;
  }
  if (json) {
    std::cout << boost::json::serialize(o) << "\n";
    return 0;
  }
  auto count = [&o](const char* key) { return static_cast<long long>(o.at(key).as_int64()); };
  const auto& files = o.at("files").as_array();
  std::printf("outbox   %s\n", cfg.outbox.path.c_str());
  std::printf("pending  %lld rows, %lld bytes; oldest pending %.1f s ago\n", count("pending_rows"),
              count("pending_bytes"), o.at("oldest_pending_age_seconds").as_double());
  std::printf("dead     %lld rows\n", count("dead_rows"));
  for (const auto& jd : o.at("dead_by_error").as_array()) {
    const auto& d = jd.as_object();
    std::printf("         %8lld  %s\n", static_cast<long long>(d.at("rows").as_int64()),
                d.at("error").as_string().c_str());
  }
  std::printf("files    %zu followed\n", files.size());
  for (const auto& jf : files) {
    const auto& f = jf.as_object();
    int64_t size = f.at("size").as_int64();
    std::string sz = size < 0 ? std::string("(gone)") : std::to_string(size);
    std::printf("  %-12s %s  read %lld of %s bytes\n", f.at("source").as_string().c_str(),
                f.at("path").as_string().c_str(),
                static_cast<long long>(f.at("read_offset").as_int64()), sz.c_str());
  }
  return 0;
}

int check_outbox(const config::Config& cfg) {
  struct stat st {};
  if (stat(cfg.outbox.path.c_str(), &st) != 0 && errno == ENOENT) {
    // Nothing to repair: advice on .recover would mislead.
    std::printf("outbox %s does not exist: nothing to check (`tailbox run` creates it; if it "
                "should be there, check [outbox] path)\n", cfg.outbox.path.c_str());
    return 1;
  }
  std::unique_ptr<outbox::Outbox> ob;
  try {
    ob = outbox::Outbox::open({cfg.outbox.path, cfg.outbox.synchronous, true});
    auto result = ob->integrity_check();
    if (!result) {
      std::printf("outbox %s cannot be read: %s\n", cfg.outbox.path.c_str(),
                  result.error().message().c_str());
      if (result.error().code() != Status::Code::corrupt) return 1;
    } else if (*result == "ok") {
      std::printf("outbox %s: integrity ok\n", cfg.outbox.path.c_str());
      return 0;
    } else {
      std::printf("outbox %s is damaged:\n%s\n", cfg.outbox.path.c_str(), result->c_str());
    }
  } catch (const std::exception& e) {
    std::printf("outbox %s cannot be read: %s\n", cfg.outbox.path.c_str(), e.what());
    // A directory, a permission, a foreign database: nothing .recover can fix.
    if (std::string(e.what()).find("damaged") == std::string::npos) return 1;
  }
  std::printf(
      "What to do: stop tailbox, keep a copy of the file (and its -wal, -shm), then either\n"
      "  sqlite3 %s '.recover' | sqlite3 recovered.db   and point [outbox] path at recovered.db,\n"
      "or move the outbox away to start empty: files are then read again from the start\n"
      "(read_from = \"head\"). .recover keeps the files' keys, so the destination drops what\n"
      "it already has; a new outbox may give the same lines new keys (always, once uids are\n"
      "salted per outbox), and those lines then arrive twice. To avoid that, move the old\n"
      "output aside first (file sink), or see README: a damaged outbox.\n",
      cfg.outbox.path.c_str());
  return 1;
}

}  // namespace tailbox::cli
