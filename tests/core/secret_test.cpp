// read_secret(): a secret from a file or from an environment variable, with
// real files in a temporary directory and a real variable.
#include "core/secret.hpp"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

#include "../support/log_capture.hpp"
#include "../support/temp_dir.hpp"

using namespace tailbox;
using testing::logged;
using testing::write_file;

namespace {

// The message read_secret throws, or "" when it returns.
std::string refusal(const std::string& file, const std::string& env) {
  try {
    (void)read_secret("password", file, env);
    return "";
  } catch (const std::runtime_error& e) {
    return e.what();
  }
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Sets an environment variable for one test; unsets it after.
struct EnvVar {
  std::string name;
  EnvVar(std::string n, const std::string& value) : name(std::move(n)) {
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  ~EnvVar() { ::unsetenv(name.c_str()); }
};

}  // namespace

TEST_SUITE("core.secret") {
  TEST_CASE("from a file: trailing newlines cut, other bytes kept") {
    testing::TempDir dir;
    auto file = write_file(dir / "pw", "  s3 cret\r\n\n", 0600);
    CHECK(read_secret("password", file, "") == "  s3 cret");
  }

  TEST_CASE("a file other users can read is warned about (mode named), the secret never logged") {
    testing::TempDir dir;
    auto open_file = write_file(dir / "open", "s3cret\n", 0644);
    std::string secret;
    std::string log = logged([&] { secret = read_secret("password", open_file, ""); });
    CHECK(secret == "s3cret");
    CHECK(has(log, "password_file " + open_file + " can be read by other users (mode 644)"));
    CHECK_FALSE(has(log, "s3cret"));
    auto closed = write_file(dir / "closed", "s3cret\n", 0600);
    log = logged([&] { secret = read_secret("password", closed, ""); });
    CHECK(secret == "s3cret");
    CHECK(log.empty());
  }

  TEST_CASE("a file that is missing or holds only newlines is refused, naming the setting") {
    testing::TempDir dir;
    CHECK(refusal(dir / "missing", "") == "cannot read password_file " + (dir / "missing"));
    auto empty = write_file(dir / "empty", "\n\n", 0600);
    CHECK(refusal(empty, "") == "password_file " + empty + " is empty");
  }

  TEST_CASE("from the environment; an unset or empty variable is refused") {
    {
      EnvVar v("TAILBOX_TEST_SECRET", "from-env");
      CHECK(read_secret("password", "", "TAILBOX_TEST_SECRET") == "from-env");
    }
    CHECK(has(refusal("", "TAILBOX_TEST_SECRET"),
              "the environment variable TAILBOX_TEST_SECRET (password_env) is not set"));
    EnvVar empty("TAILBOX_TEST_SECRET", "");
    CHECK(has(refusal("", "TAILBOX_TEST_SECRET"), "is not set"));
  }

  TEST_CASE("a file and a variable both named is refused: which one wins would be a guess") {
    testing::TempDir dir;
    auto file = write_file(dir / "pw", "from-file", 0600);
    EnvVar v("TAILBOX_TEST_SECRET", "from-env");
    std::string why = refusal(file, "TAILBOX_TEST_SECRET");
    CHECK(why == "password_file and password_env are both set: set one of them");
    CHECK_FALSE(has(why, "from-"));
  }
}
