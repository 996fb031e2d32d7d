#include "tail/glob.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "support/temp_dir.hpp"

using tailbox::tail::expand_glob;
using tailbox::tail::glob_match;

TEST_SUITE("tail.glob") {
  TEST_CASE("** matches any depth, including none") {
    CHECK(glob_match("/var/log/**/*.log", "/var/log/a.log"));
    CHECK(glob_match("/var/log/**/*.log", "/var/log/x/y/a.log"));
    CHECK_FALSE(glob_match("/var/log/**/*.log", "/var/log/x/a.txt"));
    CHECK_FALSE(glob_match("/var/log/*.log", "/var/log/x/a.log"));
  }

  TEST_CASE("expansion finds regular files only, sorted") {
    tailbox::testing::TempDir dir;
    std::filesystem::create_directories(dir / "a/b");
    std::ofstream(dir / "one.log") << "x";
    std::ofstream(dir / "a/two.log") << "x";
    std::ofstream(dir / "a/b/three.log") << "x";
    std::ofstream(dir / "a/b/skip.txt") << "x";
    std::filesystem::create_directories(dir / "dir.log");
    auto flat = expand_glob(dir / "*.log");
    REQUIRE(flat.size() == 1);
    CHECK(flat[0] == dir / "one.log");
    auto deep = expand_glob(dir / "**/*.log");
    REQUIRE(deep.size() == 3);
    CHECK(deep[0] == dir / "a/b/three.log");
    CHECK(deep[1] == dir / "a/two.log");
    CHECK(deep[2] == dir / "one.log");
  }

  TEST_CASE("expansion names the directories whose entries decide it (to watch them)") {
    tailbox::testing::TempDir dir;
    std::filesystem::create_directories(dir / "a/b");
    std::ofstream(dir / "a/b/x.log") << "x";
    std::vector<std::string> dirs;
    expand_glob(dir / "a/*.log", &dirs);
    CHECK(dirs == std::vector<std::string>{dir / "a"});
    dirs.clear();
    expand_glob(dir / "**/*.log", &dirs);
    std::set<std::string> unique(dirs.begin(), dirs.end());
    CHECK(unique == std::set<std::string>{dir.path(), dir / "a", dir / "a/b"});
    dirs.clear();
    expand_glob(dir / "a/b/missing.log", &dirs);   // a literal name: its directory
    CHECK(dirs == std::vector<std::string>{dir / "a/b"});
    dirs.clear();
    expand_glob(dir / "nowhere/*.log", &dirs);     // nothing to watch: the tailer polls
    CHECK(dirs.empty());
  }

  TEST_CASE("a literal path expands to itself when it exists") {
    tailbox::testing::TempDir dir;
    std::ofstream(dir / "app.log") << "x";
    CHECK(expand_glob(dir / "app.log").size() == 1);
    CHECK(expand_glob(dir / "missing.log").empty());
  }
}
