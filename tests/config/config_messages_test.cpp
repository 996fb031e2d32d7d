// Configuration mistakes get messages that say where (line, [[source]]) and
// what: hostile or careless configurations are refused at load time.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "config/config.hpp"
#include "support/temp_dir.hpp"

using tailbox::config::ConfigError;
using tailbox::config::load_file;
using tailbox::config::load_string;

namespace {

std::string error_of(const std::string& text) {
  try {
    load_string(text, "t.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_SUITE("config.messages") {
  TEST_CASE("an unknown top-level key is named with its line") {
    std::string e = error_of("host_id = \"h\"\n\nlog_levle = \"debug\"\n[[source]]\nname = \"a\"\n"
                             "paths = \"/x/*.log\"\n[sink]\ntype = \"sqlite\"\n");
    CHECK(contains(e, "log_levle"));
    CHECK(contains(e, "(line 3)"));
  }

  TEST_CASE("an unknown table is called one, with its line") {
    std::string e = error_of("[[source]]\nname = \"a\"\npaths = \"/x/*.log\"\n[sink]\ntype = \"sqlite\"\n"
                             "\n[bogus]\nx = 1\n");
    CHECK(contains(e, "bogus: unknown table"));
    CHECK(contains(e, "(line 7)"));
  }

  TEST_CASE("an unknown [[source]] key is named with its line and its source") {
    std::string e = error_of("[[source]]\nname = \"a\"\npaths = \"/x/*.log\"\n\nread_form = \"tail\"\n"
                             "[sink]\ntype = \"sqlite\"\n");
    CHECK(contains(e, "read_form"));
    CHECK(contains(e, "(line 5)"));
    CHECK(contains(e, "[[source]] \"a\""));
  }

  TEST_CASE("an unknown multiline key is named with its line") {
    std::string e = error_of("[[source]]\nname = \"a\"\npaths = \"/x/*.log\"\n"
                             "multiline.start_pattern = '^\\d'\nmultiline.max_line = 3\n"
                             "[sink]\ntype = \"sqlite\"\n");
    CHECK(contains(e, "max_line"));
    CHECK(contains(e, "(line 5)"));
  }

  TEST_CASE("a bad read_from names the source it is in") {
    std::string e = error_of("[[source]]\nname = \"first\"\npaths = \"/x/*.log\"\n"
                             "[[source]]\nname = \"second\"\npaths = \"/y/*.log\"\nread_from = \"end\"\n"
                             "[sink]\ntype = \"sqlite\"\n");
    CHECK(contains(e, "read_from"));
    CHECK(contains(e, "(line 7)"));
    CHECK(contains(e, "[[source]] \"second\""));
  }

  TEST_CASE("a configuration path that is a directory says so") {
    tailbox::testing::TempDir dir;
    std::string e;
    try {
      load_file(dir.path());
    } catch (const ConfigError& err) {
      e = err.what();
    }
    CHECK(contains(e, "is a directory"));
    CHECK_FALSE(contains(e, "at least one [[source]]"));
  }

  TEST_CASE("an outbox path that is a directory is refused") {
    tailbox::testing::TempDir dir;
    std::string e = error_of("[[source]]\nname = \"a\"\npaths = \"/x/*.log\"\n[outbox]\npath = \"" +
                             dir.path() + "\"\n[sink]\ntype = \"sqlite\"\n");
    CHECK(contains(e, "outbox.path"));
    CHECK(contains(e, "is a directory"));
  }

  TEST_CASE("a source whose glob matches the file sink's output is refused") {
    tailbox::testing::TempDir dir;
    std::string e = error_of("[[source]]\nname = \"everything\"\npaths = \"" + dir.path() +
                             "/*\"\n[outbox]\npath = \"/elsewhere/o.db\"\n"
                             "[sink]\ntype = \"file\"\npath = \"" + dir.path() + "/out.ndjson\"\n");
    CHECK(contains(e, "\"everything\""));
    CHECK(contains(e, dir.path() + "/*"));
    CHECK(contains(e, dir.path() + "/out.ndjson"));
  }

  TEST_CASE("a source whose glob matches the sqlite inbox or its -wal is refused") {
    std::string e = error_of("[[source]]\nname = \"dbs\"\npaths = \"/data/*-wal\"\n"
                             "[outbox]\npath = \"/var/lib/tailbox/o.db\"\n"
                             "[sink]\ntype = \"sqlite\"\npath = \"/data/inbox.db\"\n");
    CHECK(contains(e, "/data/inbox.db-wal"));
    CHECK(contains(e, "\"dbs\""));
  }

  TEST_CASE("a source whose glob matches the outbox, its -shm or its .lock is refused") {
    for (const char* glob : {"/var/lib/tailbox/*.db", "/var/lib/tailbox/*-shm", "/var/lib/**/*.lock"}) {
      std::string e = error_of(std::string("[[source]]\nname = \"s\"\npaths = \"") + glob +
                               "\"\n[outbox]\npath = \"/var/lib/tailbox/o.db\"\n"
                               "[sink]\ntype = \"sqlite\"\npath = \"/data/inbox.db\"\n");
      CHECK_MESSAGE(contains(e, "/var/lib/tailbox/o.db"), glob);
      CHECK_MESSAGE(contains(e, "outbox"), glob);
    }
  }

  TEST_CASE("a relative outbox path is compared as the absolute path it names") {
    std::string cwd = std::filesystem::current_path().string();
    std::string e = error_of("[[source]]\nname = \"s\"\npaths = \"" + cwd + "/*.db\"\n"
                             "[sink]\ntype = \"sqlite\"\npath = \"/data/inbox.db\"\n");
    CHECK(contains(e, cwd + "/tailbox-outbox.db"));
  }

  TEST_CASE("an excluded output file is no feedback loop") {
    CHECK(error_of("[[source]]\nname = \"s\"\npaths = \"/data/*\"\nexclude = [\"*.db*\"]\n"
                   "[outbox]\npath = \"/var/lib/o.db\"\n"
                   "[sink]\ntype = \"sqlite\"\npath = \"/data/inbox.db\"\n") == "");
  }
}
