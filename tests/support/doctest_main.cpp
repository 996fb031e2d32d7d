// Test main: doctest, with the relay's logging silenced unless TAILBOX_TEST_LOG is set.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

int main(int argc, char** argv) {
  spdlog::set_level(std::getenv("TAILBOX_TEST_LOG") ? spdlog::level::debug : spdlog::level::off);
  doctest::Context context(argc, argv);
  return context.run();
}
