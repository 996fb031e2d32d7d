// The outbox tests' fixture: a fresh outbox in a temporary directory, files
// added by name, chunks of text appended, every pending row leased.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "outbox/outbox.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"
#include "tail/line_splitter.hpp"

namespace tailbox::testing {

struct Fixture {
  TempDir dir;
  std::string path = dir / "outbox.db";
  std::unique_ptr<outbox::Outbox> ob = outbox::Outbox::open({path, config::Synchronous::normal, false});

  int64_t add(const std::string& name) {
    FileIdentity id;
    id.dev = 1;
    id.inode = 1000 + std::hash<std::string>{}(name) % 1000;
    id.fingerprint = std::hash<std::string>{}(name);
    id.fingerprint_len = 16;
    Status st;
    auto f = ob->add_file("app", "/logs/" + name, id, 0);
    REQUIRE(st.is_ok());
    return f->id;
  }

  // A chunk of `text` read at `base` from file `id`; keeps text alive in `keep`.
  outbox::Chunk chunk(int64_t id, const std::string& text, int64_t base) {
    keep.push_back(std::make_unique<std::string>(text));
    outbox::Chunk c;
    c.file_id = id;
    c.inode = 7;
    c.ingest_ms = 1;
    size_t used = tail::split_lines(*keep.back(), base, 1 << 20, false, c.lines);
    c.next_offset = base + static_cast<int64_t>(used);
    return c;
  }

  Status append(const outbox::Chunk& c) {
    const outbox::Chunk* one[] = {&c};
    return ob->append(one);
  }

  // Every pending row, from a fresh cursor.
  std::vector<outbox::LeasedRow> lease_all() {
    outbox::LeaseCursor cursor;
    return ok(ob->lease(cursor, 0, 1, 1'000'000, 1LL << 40));
  }

  int64_t offset_of(int64_t file) {
    for (const auto& f : ok(ob->tracked_files()))
      if (f.id == file) return f.read_offset;
    return -1;
  }

  std::vector<std::unique_ptr<std::string>> keep;
};

}  // namespace tailbox::testing
