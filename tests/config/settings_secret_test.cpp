// Settings::secret(): the "<name>_file or <name>_env, not both" keys every
// sink uses for its secrets.
#include <doctest/doctest.h>

#include "config/settings.hpp"

using namespace tailbox;

namespace {

using Values = std::map<std::string, config::SettingValue>;

// The source, or the error message.
std::string source(const Values& v) {
  config::Settings s("sink", v, 1);
  try {
    auto src = s.secret("password");
    s.finish();
    return (src.given() ? "given " : "none ") + src.file + "|" + src.env;
  } catch (const config::ConfigError& e) {
    return e.what();
  }
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_SUITE("config.settings.secret") {
  TEST_CASE("a file or a variable, not both, neither empty") {
    CHECK(source({}) == "none |");
    CHECK(source({{"password_file", {std::string("/etc/p"), 2}}}) == "given /etc/p|");
    CHECK(source({{"password_env", {std::string("PW"), 2}}}) == "given |PW");
    CHECK(has(source({{"password_file", {std::string("/etc/p"), 2}}, {"password_env", {std::string("PW"), 3}}}),
              "sink.password_env: set password_file or password_env, not both"));
    CHECK(has(source({{"password_file", {std::string(""), 2}}}), "sink.password_file: must not be empty"));
    CHECK(has(source({{"password_env", {std::string(""), 2}}}), "sink.password_env: must not be empty"));
    CHECK(has(source({{"password_env", {int64_t(3), 2}}}), "password_env"));
  }
}
