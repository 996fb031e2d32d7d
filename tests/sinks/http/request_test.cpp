// The http sink's auth header, read as a secret (core/secret), without a
// receiver: real files in a temporary directory, a real environment variable.
#include "sinks/http/request.hpp"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <memory>

#include "../../support/log_capture.hpp"
#include "../../support/temp_dir.hpp"

using namespace tailbox;
namespace http = sinks::http;
using testing::logged;
using testing::write_file;

namespace {

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_SUITE("sinks.http.auth_header") {
  TEST_CASE("the auth header file is read as a secret: a file others can read is warned about") {
    testing::TempDir dir;
    std::string open_file = write_file(dir / "open", "Authorization: Bearer s3cret\n", 0644);
    std::pair<std::string, std::string> header;
    std::string log = logged([&] { header = http::read_auth_header(open_file, ""); });
    CHECK(header.first == "Authorization");
    CHECK(header.second == "Bearer s3cret");
    CHECK(has(log, "auth_header_file " + open_file + " can be read by other users"));
    CHECK_FALSE(has(log, "s3cret"));

    std::string closed_file = write_file(dir / "closed", "Authorization: Bearer s3cret", 0600);
    log = logged([&] { header = http::read_auth_header(closed_file, ""); });
    CHECK(header.second == "Bearer s3cret");
    CHECK_FALSE(has(log, "other users"));
  }

  TEST_CASE("a missing, empty or malformed secret is named, its value never shown") {
    testing::TempDir dir;
    CHECK_THROWS_WITH_AS(http::read_auth_header(dir / "none", ""),
                         doctest::Contains("cannot read auth_header_file"), std::runtime_error);
    CHECK_THROWS_WITH_AS(http::read_auth_header(write_file(dir / "empty", "", 0600), ""),
                         doctest::Contains("is empty"), std::runtime_error);
    try {
      http::read_auth_header(write_file(dir / "bad", "Bearer s3cret\n", 0600), "");
      FAIL("a line without a header name was accepted");
    } catch (const std::runtime_error& e) {
      CHECK(has(e.what(), "must hold one header line"));
      CHECK_FALSE(has(e.what(), "s3cret"));
    }
    CHECK_THROWS_WITH_AS(http::read_auth_header(write_file(dir / "host", "Host: x", 0600), ""),
                         doctest::Contains("is set by the sink"), std::runtime_error);
    ::unsetenv("TAILBOX_TEST_AUTH_SECRET");
    CHECK_THROWS_WITH_AS(http::read_auth_header("", "TAILBOX_TEST_AUTH_SECRET"),
                         doctest::Contains("TAILBOX_TEST_AUTH_SECRET (auth_header_env) is not set"),
                         std::runtime_error);
    ::setenv("TAILBOX_TEST_AUTH_SECRET", "X-Api-Key: k", 1);
    CHECK(http::read_auth_header("", "TAILBOX_TEST_AUTH_SECRET") == std::pair<std::string, std::string>{"X-Api-Key", "k"});
    ::unsetenv("TAILBOX_TEST_AUTH_SECRET");
  }
}
