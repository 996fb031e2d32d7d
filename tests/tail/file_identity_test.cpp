#include "tail/file_identity.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "support/temp_dir.hpp"

using namespace tailbox;

namespace {

struct OpenFile {
  explicit OpenFile(const std::string& path) : fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    REQUIRE(fd >= 0);
  }
  ~OpenFile() { ::close(fd); }
  int fd;
};

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace

TEST_SUITE("tail.file_identity") {
  TEST_CASE("a grown file gets a longer fingerprint over the same first bytes") {
    testing::TempDir dir;
    const std::string path = dir / "a.log";
    write_file(path, "abc\n");
    OpenFile f(path);
    auto was = tail::identify(f.fd, 1024);
    REQUIRE(was);
    CHECK(was->fingerprint_len == 4);
    std::ofstream(path, std::ios::binary | std::ios::app) << "defgh\n";
    auto grown = tail::grown_identity(f.fd, *was, 1024, 10);
    REQUIRE(grown);
    CHECK(grown->fingerprint_len == 10);
    CHECK(grown->inode == was->inode);
    auto fresh = tail::identify(f.fd, 1024);
    REQUIRE(fresh);
    CHECK(grown->fingerprint == fresh->fingerprint);
  }

  TEST_CASE("a file rewritten before its fingerprint grows keeps the old one (copytruncate)") {
    // The reader checked the first bytes, then the file was truncated and
    // rewritten, longer: the new content's hash must not be stored as the old
    // file's, or reading would go on at the old offset in the new content.
    testing::TempDir dir;
    const std::string path = dir / "a.log";
    write_file(path, "abc\n");
    OpenFile f(path);
    auto was = tail::identify(f.fd, 1024);
    REQUIRE(was);
    REQUIRE(::truncate(path.c_str(), 0) == 0);
    std::ofstream(path, std::ios::binary | std::ios::app) << "xyz\nanother line\n";
    CHECK_FALSE(tail::grown_identity(f.fd, *was, 1024, 18));
  }

  TEST_CASE("no longer fingerprint for a file that has not grown or is complete") {
    testing::TempDir dir;
    const std::string path = dir / "a.log";
    write_file(path, std::string(2000, 'x'));
    OpenFile f(path);
    auto full = tail::identify(f.fd, 1024);
    REQUIRE(full);
    CHECK(full->fingerprint_len == 1024);
    CHECK_FALSE(tail::grown_identity(f.fd, *full, 1024, 2000));
    auto short_id = tail::identify(f.fd, 10);
    REQUIRE(short_id);
    CHECK_FALSE(tail::grown_identity(f.fd, *short_id, 1024, 10));
  }
}
