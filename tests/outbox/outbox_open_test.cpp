// Outbox::open refuses, before changing anything, an outbox it could not
// write (mode bits, directory) and a database that is not a tailbox outbox.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "outbox/outbox.hpp"
#include "support/temp_dir.hpp"

using namespace tailbox;
using outbox::Outbox;

namespace {

std::string error_of_open(const std::string& path) {
  try {
    Outbox::open({path, config::Synchronous::normal, false});
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

void make_outbox(const std::string& path) {
  Outbox::open({path, config::Synchronous::normal, false});
}

void sql(const std::string& path, const char* statements) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, statements, nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
}

}  // namespace

TEST_SUITE("outbox.open") {
  TEST_CASE("a read-only (0444) outbox is refused, naming the file and its mode") {
    testing::TempDir dir;
    std::string path = dir / "outbox.db";
    make_outbox(path);
    REQUIRE(chmod(path.c_str(), 0444) == 0);
    std::string e = error_of_open(path);
    CHECK(contains(e, path));
    CHECK(contains(e, "read-only"));
    CHECK(contains(e, "0444"));
    // Nothing was created beside it with the wrong mode.
    CHECK_FALSE(std::filesystem::exists(path + "-wal"));
    CHECK_FALSE(std::filesystem::exists(path + "-shm"));
  }

  TEST_CASE("a read-only -wal or -shm is refused") {
    testing::TempDir dir;
    std::string path = dir / "outbox.db";
    make_outbox(path);
    std::ofstream(path + "-shm") << "";
    REQUIRE(chmod((path + "-shm").c_str(), 0444) == 0);
    std::string e = error_of_open(path);
    CHECK(contains(e, path + "-shm"));
    CHECK(contains(e, "read-only"));
  }

  TEST_CASE("an outbox in a directory without write permission is refused") {
    testing::TempDir dir;
    std::string sub = dir / "ro";
    std::filesystem::create_directory(sub);
    std::string path = sub + "/outbox.db";
    make_outbox(path);
    std::filesystem::remove(path + ".lock");
    REQUIRE(chmod(sub.c_str(), 0555) == 0);
    std::string e = error_of_open(path);
    CHECK(contains(e, sub));
    CHECK(contains(e, "permission denied"));
    CHECK(contains(e, "0555"));
    REQUIRE(chmod(sub.c_str(), 0755) == 0);
  }

  TEST_CASE("an outbox path that is a directory is refused") {
    testing::TempDir dir;
    std::string e = error_of_open(dir.path());
    CHECK(contains(e, "is a directory"));
  }

  TEST_CASE("a database of another program is refused and left byte for byte unchanged") {
    testing::TempDir dir;
    std::string path = dir / "app.db";
    sql(path, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);"
              "INSERT INTO customers (name) VALUES ('ada');");
    std::string before = bytes_of(path);
    std::string e = error_of_open(path);
    CHECK(contains(e, "not a tailbox outbox"));
    CHECK(contains(e, path));
    CHECK(bytes_of(path) == before);
    CHECK_FALSE(std::filesystem::exists(path + "-wal"));
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    sqlite3_stmt* q = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(q) == SQLITE_ROW);
    CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(q, 0))) == "delete");
    sqlite3_finalize(q);
    sqlite3_close(db);
  }

  TEST_CASE("a database with another program's application_id is refused") {
    testing::TempDir dir;
    std::string path = dir / "other.db";
    sql(path, "PRAGMA application_id = 1234; PRAGMA user_version = 1; CREATE TABLE t (x);");
    std::string before = bytes_of(path);
    std::string e = error_of_open(path);
    CHECK(contains(e, "application_id 1234"));
    CHECK(bytes_of(path) == before);
  }

  TEST_CASE("a tailbox outbox opens again") {
    testing::TempDir dir;
    std::string path = dir / "outbox.db";
    make_outbox(path);
    CHECK(error_of_open(path) == "");
  }

  TEST_CASE("check for a missing outbox (read-only open) says it does not exist") {
    testing::TempDir dir;
    std::string e;
    try {
      Outbox::open({dir / "nope.db", config::Synchronous::normal, true});
    } catch (const std::exception& err) {
      e = err.what();
    }
    CHECK(contains(e, "does not exist"));
    CHECK_FALSE(std::filesystem::exists(dir / "nope.db"));
  }
}
