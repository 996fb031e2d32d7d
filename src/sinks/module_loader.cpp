#include "sinks/module_loader.hpp"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

namespace tailbox::sinks {
namespace {

constexpr std::array<std::string_view, 5> kModuleTypes = {"postgres", "http", "kafka", "nats",
                                                          "rabbitmq"};

// The libraries the modules link, and the Debian 12 packages that ship them.
constexpr std::array<std::pair<std::string_view, std::string_view>, 7> kPackages = {{
    {"libpq.so", "libpq5"},
    {"librdkafka.so", "librdkafka1"},
    {"libnats.so", "libnats3.4"},
    {"librabbitmq.so", "librabbitmq4"},
    {"libssl.so", "libssl3"},
    {"libcrypto.so", "libssl3"},
    {"libboost_url.so", "libboost-url1.81.0"},
}};

std::string binary_dir() {
  std::string exe(4096, '\0');
  ssize_t n = ::readlink("/proc/self/exe", exe.data(), exe.size());
  if (n <= 0) return ".";
  exe.resize(static_cast<size_t>(n));
  const auto slash = exe.rfind('/');
  return slash == 0 ? "/" : slash == std::string::npos ? "." : exe.substr(0, slash);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// "libpq.so.5: cannot open shared object file: ..." -> "; libpq.so.5 is
// missing: Debian 12 ships libpq.so in the package libpq5 (...)", or "" for
// other errors.
std::string package_hint(const std::string& error) {
  const auto colon = error.find(": cannot open shared object file");
  if (colon == std::string::npos) return "";
  const std::string lib = error.substr(0, colon);
  for (const auto& [prefix, package] : kPackages)
    if (lib.starts_with(prefix))
      return "; " + lib + " is missing: Debian 12 ships " + std::string(prefix) +
             " in the package " + std::string(package) + " (apt-get install " +
             std::string(package) + ")";
  return "; find the package that ships " + lib + " with: apt-file search " + lib;
}

[[noreturn]] void fail(const std::string& type, const std::string& why) {
  throw config::ConfigError("sink \"" + type + "\": " + why);
}

const SinkModule& open_module(const std::string& type) {
  const std::string file = module_file_name(type);
  const std::vector<std::string> dirs = module_dirs();
  std::string path;
  for (const auto& d : dirs)
    if (exists(d + "/" + file)) {
      path = d + "/" + file;
      break;
    }
  if (path.empty()) {
    std::string where;
    for (const auto& d : dirs) where += (where.empty() ? "" : ", ") + d;
    fail(type, "its module " + file + " is not installed (looked in " + where +
                   (std::getenv("TAILBOX_SINK_DIR") ? ", from TAILBOX_SINK_DIR" : "") + ")");
  }
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* e = ::dlerror();
    const std::string why = e ? e : "unknown error";
    fail(type, "cannot load its module " + path + ": " + why + package_hint(why));
  }
  using Entry = const SinkModule* (*)();
  auto entry = reinterpret_cast<Entry>(::dlsym(handle, TAILBOX_SINK_MODULE_ENTRY));
  if (!entry) fail(type, path + " is not a tailbox sink module (no " TAILBOX_SINK_MODULE_ENTRY ")");
  const SinkModule* m = entry();
  if (!m || m->abi_version != kSinkModuleAbi || std::string_view(m->version) != TAILBOX_VERSION)
    fail(type, path + " was built for another tailbox (module " +
                   (m ? std::string(m->version) + ", ABI " + std::to_string(m->abi_version)
                      : std::string("without a table")) +
                   "; this binary " TAILBOX_VERSION ", ABI " + std::to_string(kSinkModuleAbi) +
                   "): install the modules of this build");
  if (std::string_view(m->type) != type || !m->make_sink)
    fail(type, path + " builds sink \"" + m->type + "\", not \"" + type + "\"");
  return *m;   // the handle stays open for the life of the process
}

}  // namespace

bool is_module_type(std::string_view type) {
  for (auto t : kModuleTypes)
    if (t == type) return true;
  return false;
}

std::string module_file_name(std::string_view type) {
  return "tailbox-sink-" + std::string(type) + ".so";
}

std::vector<std::string> module_dirs() {
  if (const char* d = std::getenv("TAILBOX_SINK_DIR"); d && *d) return {d};
  const std::string bin = binary_dir();
  return {bin, bin + "/../lib/tailbox/sinks"};
}

const SinkModule& load_module(const std::string& type) {
  static std::mutex mutex;
  static std::map<std::string, const SinkModule*> loaded;
  std::lock_guard lock(mutex);
  if (auto it = loaded.find(type); it != loaded.end()) return *it->second;
  const SinkModule& m = open_module(type);
  loaded.emplace(type, &m);
  return m;
}

}  // namespace tailbox::sinks
