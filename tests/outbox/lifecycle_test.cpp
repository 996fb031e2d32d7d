// An outbox over its life: one relay at a time, damaged or emptied files
// refused, uids minted, older schemas migrated with every row kept.
#include "outbox/outbox.hpp"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <stdexcept>
#include <tuple>

#include "outbox_fixture.hpp"
#include "schema_sql.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"
#include "tail/line_splitter.hpp"

using namespace tailbox;
using outbox::Chunk;
using outbox::Outbox;
using outbox::RowKey;
using testing::Fixture;

TEST_SUITE("outbox") {
  TEST_CASE("a second relay on the same outbox is refused") {
    Fixture f;
    try {
      Outbox::open({f.path, config::Synchronous::normal, false});
      FAIL("expected OutboxError");
    } catch (const outbox::OutboxError& e) {
      CHECK(std::string(e.what()).find("in use by another tailbox") != std::string::npos);
    }
    // A read-only look (tailbox status) is fine while it runs.
    auto ro = Outbox::open({f.path, config::Synchronous::normal, true});
    CHECK(testing::ok(ro->summary()).pending == 0);
  }

  TEST_CASE("a damaged outbox is refused and left untouched") {
    testing::TempDir dir;
    std::string path = dir / "bad.db";
    std::string garbage(8192, 'z');
    std::ofstream(path) << garbage;
    try {
      Outbox::open({path, config::Synchronous::normal, false});
      FAIL("expected OutboxError");
    } catch (const outbox::OutboxError& e) {
      CHECK(std::string(e.what()).find("damaged") != std::string::npos);
    }
    std::ifstream in(path);
    std::string after((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(after == garbage);
  }

  TEST_CASE("an existing empty outbox is refused, not started afresh") {
    testing::TempDir dir;
    std::string path = dir / "empty.db";
    std::ofstream(path).close();
    try {
      Outbox::open({path, config::Synchronous::normal, false});
      FAIL("expected OutboxError");
    } catch (const outbox::OutboxError& e) {
      CHECK(std::string(e.what()).find("empty") != std::string::npos);
    }
  }

  TEST_CASE("uids are stable and a reused identity gets a new generation") {
    Fixture f;
    FileIdentity id;
    id.dev = 3;
    id.inode = 4;
    id.fingerprint = 5;
    Status st;
    auto a = f.ob->add_file("app", "/a", id, 0);
    auto b = f.ob->add_file("app", "/a", id, 0);
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->uid.size() == 16);
    CHECK(b->uid == a->uid + "-1");
  }

  TEST_CASE("add_files adds many files in one transaction, in order, with the uids add_file gives") {
    Fixture f;
    FileIdentity id;
    id.dev = 3;
    id.inode = 4;
    id.fingerprint = 5;
    auto first = f.ob->add_file("app", "/a", id, 0);
    REQUIRE(first);
    std::vector<Outbox::NewFile> rows;
    rows.push_back({"app", "/a", id, 7});   // the same identity again: next generation
    rows.push_back({"app", "/a", id, 0});   // and once more, within the batch
    FileIdentity other = id;
    other.inode = 9;
    rows.push_back({"web", "/b", other, 3});
    auto added = f.ob->add_files(rows);
    REQUIRE(added);
    REQUIRE(added->size() == 3);
    CHECK((*added)[0].uid == first->uid + "-1");
    CHECK((*added)[1].uid == first->uid + "-2");
    CHECK((*added)[0].read_offset == 7);
    CHECK((*added)[2].source == "web");
    CHECK((*added)[2].path == "/b");
    auto tracked = testing::ok(f.ob->tracked_files());
    CHECK(tracked.size() == 4);
    CHECK(tracked.back().id == (*added)[2].id);
  }

  TEST_CASE("a new outbox never mints a uid an earlier outbox of the host may have used") {
    // The old outbox is lost (damaged and moved away, or deleted) and a file
    // with the same dev, inode and first bytes appears: with the same uid the
    // destination would drop its lines at matching offsets as copies.
    testing::TempDir dir;
    const std::string path = dir / "outbox.db";
    FileIdentity id;
    id.dev = 3;
    id.inode = 4;
    id.fingerprint = 5;
    id.fingerprint_len = 16;
    std::string first, second;
    Status st;
    {
      auto ob = Outbox::open({path, config::Synchronous::normal, false});
      auto f = ob->add_file("app", "/a", id, 0);
      REQUIRE(f);
      first = f->uid;
    }
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path + suffix).c_str());
    {
      auto ob = Outbox::open({path, config::Synchronous::normal, false});
      auto f = ob->add_file("app", "/a", id, 0);
      REQUIRE(f);
      second = f->uid;
      // Reopening the same outbox keeps its salt: uids stay stable.
    }
    CHECK(first != second);
    {
      auto ob = Outbox::open({path, config::Synchronous::normal, false});
      auto f = ob->add_file("app", "/a", id, 0);
      REQUIRE(f);
      CHECK(f->uid == second + "-1");
    }
  }

  TEST_CASE("a v1 outbox is migrated in place: rows and uids kept, a salt minted") {
    testing::TempDir dir;
    const std::string path = dir / "outbox.db";
    {
      sqlite3* db = nullptr;
      REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
      std::string v1(outbox::kSchemaMigrations[0]);
      REQUIRE(sqlite3_exec(db, v1.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
      REQUIRE(sqlite3_exec(db,
                           "INSERT INTO files (id, source, path, dev, inode, fingerprint, "
                           "fingerprint_len, uid, read_offset, first_seen, last_seen) VALUES "
                           "(1, 'app', '/a', 3, 4, '0000000000000005', 16, 'olduid', 10, 0, 0);"
                           "INSERT INTO outbox (id, file, inode, offset, length, ingest_time, "
                           "payload) VALUES (1, 1, 4, 0, 10, 0, 'abcdefghi');"
                           "PRAGMA user_version = 1;",
                           nullptr, nullptr, nullptr) == SQLITE_OK);
      sqlite3_close(db);
    }
    auto ob = Outbox::open({path, config::Synchronous::normal, false});
    auto files = testing::ok(ob->tracked_files());
    REQUIRE(files.size() == 1);
    CHECK(files[0].uid == "olduid");
    CHECK(files[0].read_offset == 10);
    Status st;
    outbox::LeaseCursor cursor;
    auto rows = testing::ok(ob->lease(cursor, 0, 1, 100, 1 << 20));
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].payload == "abcdefghi");
  }

  TEST_CASE("a v2 outbox becomes one B-tree per line: every row kept, as it was") {
    testing::TempDir dir;
    const std::string path = dir / "outbox.db";
    {
      sqlite3* db = nullptr;
      REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
      for (int v = 0; v < 2; ++v) {
        std::string m(outbox::kSchemaMigrations[static_cast<size_t>(v)]);
        REQUIRE(sqlite3_exec(db, m.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
      }
      // Ids out of key order, a dead row, counted attempts: the v2 shape.
      REQUIRE(sqlite3_exec(db,
                           "INSERT INTO files (id, source, path, dev, inode, fingerprint, "
                           "fingerprint_len, uid, read_offset, first_seen, last_seen) VALUES "
                           "(1, 'app', '/a', 3, 4, '0000000000000005', 16, 'uid-a', 30, 0, 0),"
                           "(2, 'app', '/b', 3, 9, '0000000000000006', 16, 'uid-b', 5, 0, 0);"
                           "INSERT INTO outbox (id, file, inode, offset, length, ingest_time, "
                           "payload, attempts, last_error, state) VALUES "
                           "(7, 1, 4, 20, 10, 3, 'third', 0, NULL, 'pending'),"
                           "(5, 1, 4, 0, 10, 1, 'first', 2, 'HTTP 503', 'pending'),"
                           "(6, 1, 4, 10, 10, 2, 'second', 5, 'rejected', 'dead'),"
                           "(9, 2, 9, 0, 5, 4, 'other', 0, NULL, 'pending');"
                           "PRAGMA user_version = 2;",
                           nullptr, nullptr, nullptr) == SQLITE_OK);
      sqlite3_close(db);
    }
    {
      auto ob = Outbox::open({path, config::Synchronous::normal, false});
      CHECK(ob->backlog().rows == 4);
      auto sum = testing::ok(ob->summary());
      CHECK(sum.pending == 3);
      CHECK(sum.dead == 1);
      CHECK(sum.oldest_pending_ms == 1);
      outbox::LeaseCursor cursor;
      auto rows = testing::ok(ob->lease(cursor, 0, 1, 100, 1 << 20));
      REQUIRE(rows.size() == 3);
      CHECK(rows[0].payload == "first");
      CHECK(rows[0].attempts == 2);
      CHECK(rows[1].payload == "third");
      CHECK_FALSE(rows[1].joins_previous);   // the dead row lies between them
      CHECK(rows[2].payload == "other");
      // A second copy of a migrated line is still refused.
      std::string text = "first\n";
      Chunk c;
      c.file_id = 1;
      c.inode = 4;
      tail::split_lines(text, 0, 100, false, c.lines);
      c.next_offset = 30;
      const Chunk* one[] = {&c};
      REQUIRE(ob->append(one).is_ok());
      CHECK(ob->backlog().rows == 4);
    }
    // What the sqlite3 CLI sees: the new table, no id column, the views work.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    auto one_int = [db](const char* q) {
      sqlite3_stmt* st = nullptr;
      REQUIRE(sqlite3_prepare_v2(db, q, -1, &st, nullptr) == SQLITE_OK);
      REQUIRE(sqlite3_step(st) == SQLITE_ROW);
      int64_t v = sqlite3_column_int64(st, 0);
      sqlite3_finalize(st);
      return v;
    };
    CHECK(one_int("PRAGMA user_version") == 3);
    CHECK(one_int("SELECT count(*) FROM pragma_table_info('outbox') WHERE name = 'id'") == 0);
    CHECK(one_int("SELECT count(*) FROM sqlite_master WHERE name = 'outbox' "
                  "AND sql LIKE '%WITHOUT ROWID%'") == 1);
    CHECK(one_int("SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                  "AND tbl_name = 'outbox' AND name NOT LIKE 'sqlite_autoindex%'") == 0);
    CHECK(one_int("SELECT sum(rows) FROM backlog") == 4);
    CHECK(one_int("SELECT rows FROM dead_by_error WHERE last_error = 'rejected'") == 1);
    sqlite3_close(db);
  }
}
