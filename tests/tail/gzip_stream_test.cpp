#include "tail/gzip_stream.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <fstream>
#include <string>

#include "support/gzip.hpp"
#include "support/temp_dir.hpp"

using tailbox::tail::GzipStream;
using tailbox::testing::gzip;

namespace {

struct File {
  tailbox::testing::TempDir dir;
  std::string path = dir / "app.log.1.gz";
  int fd = -1;
  void write(const std::string& bytes, bool append = false) {
    std::ofstream(path, append ? std::ios::binary | std::ios::app : std::ios::binary) << bytes;
    if (fd < 0) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  ~File() {
    if (fd >= 0) ::close(fd);
  }
};

std::string read_all(GzipStream& gz, GzipStream::State& state, size_t step = 1000) {
  std::string out;
  do state = gz.read(out, step);
  while (state == GzipStream::State::more);
  return out;
}

std::string lines(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "line " + std::to_string(i) + " of a rotated log\n";
  return s;
}

}  // namespace

TEST_SUITE("tail.gzip_stream") {
  TEST_CASE("a gzip file is decompressed completely") {
    File f;
    std::string text = lines(5000);
    f.write(gzip(text));
    GzipStream gz(f.fd);
    GzipStream::State state;
    CHECK(read_all(gz, state, 777) == text);
    CHECK(state == GzipStream::State::end);
    CHECK(gz.position() == static_cast<int64_t>(text.size()));
  }

  TEST_CASE("every member of a multi-member file is read") {
    File f;
    f.write(gzip("first\n") + gzip("second\n") + gzip(""));
    GzipStream gz(f.fd);
    GzipStream::State state;
    CHECK(read_all(gz, state) == "first\nsecond\n");
    CHECK(state == GzipStream::State::end);
  }

  TEST_CASE("skip resumes at a decompressed offset") {
    File f;
    std::string text = lines(3000);
    f.write(gzip(text));
    GzipStream gz(f.fd);
    CHECK(gz.skip(12345) == GzipStream::State::more);
    GzipStream::State state;
    CHECK(read_all(gz, state) == text.substr(12345));
  }

  TEST_CASE("a file cut inside a member is truncated, and continues when it grows") {
    File f;
    std::string text = lines(2000);
    std::string z = gzip(text);
    f.write(z.substr(0, z.size() / 2));
    GzipStream gz(f.fd);
    GzipStream::State state;
    std::string got = read_all(gz, state);
    CHECK(state == GzipStream::State::truncated);
    CHECK(text.starts_with(got));
    f.write(z.substr(z.size() / 2), /*append=*/true);
    got += read_all(gz, state);
    CHECK(state == GzipStream::State::end);
    CHECK(got == text);
  }

  TEST_CASE("an empty file waits (gzip has not written yet)") {
    File f;
    f.write("");
    GzipStream gz(f.fd);
    GzipStream::State state;
    CHECK(read_all(gz, state).empty());
    CHECK(state == GzipStream::State::truncated);
  }

  TEST_CASE("bytes that are not gzip are an error; padding after a member is ignored") {
    File plain;
    plain.write("this is not compressed at all\n");
    GzipStream gz(plain.fd);
    GzipStream::State state;
    read_all(gz, state);
    CHECK(state == GzipStream::State::error);
    CHECK_FALSE(gz.message().empty());

    File padded;
    padded.write(gzip("data\n") + std::string(512, '\0'));
    GzipStream gz2(padded.fd);
    CHECK(read_all(gz2, state) == "data\n");
    CHECK(state == GzipStream::State::end);
  }

  TEST_CASE("damaged compressed data is an error, not silence") {
    File f;
    std::string z = gzip(lines(1000));
    for (size_t i = 40; i < 80; ++i) z[i] = static_cast<char>(z[i] ^ 0x5a);
    f.write(z);
    GzipStream gz(f.fd);
    GzipStream::State state;
    read_all(gz, state);
    CHECK(state == GzipStream::State::error);
  }
}
