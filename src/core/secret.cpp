#include "core/secret.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace tailbox {

std::string read_secret(const std::string& what, const std::string& file, const std::string& env) {
  if (!file.empty() && !env.empty())
    throw std::runtime_error(what + "_file and " + what + "_env are both set: set one of them");
  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + what + "_file " + file);
    std::ostringstream text;
    text << in.rdbuf();
    std::string secret = text.str();
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
    if (secret.empty()) throw std::runtime_error(what + "_file " + file + " is empty");
    struct stat st {};
    if (::stat(file.c_str(), &st) == 0 && (st.st_mode & 077))
      spdlog::warn("{}_file {} can be read by other users (mode {:o}); chmod 600 it", what, file,
                   st.st_mode & 0777);
    return secret;
  }
  const char* v = std::getenv(env.c_str());
  if (!v || !*v)
    throw std::runtime_error("the environment variable " + env + " (" + what + "_env) is not set");
  return v;
}

}  // namespace tailbox
