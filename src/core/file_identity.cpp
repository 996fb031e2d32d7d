#include "core/file_identity.hpp"

namespace tailbox {

uint64_t fnv1a64(const void* data, size_t len, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = seed;
  for (size_t i = 0; i < len; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::string to_hex(uint64_t value) {
  static const char* digits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, value >>= 4) s[i] = digits[value & 0xf];
  return s;
}

std::string file_uid(const FileIdentity& id, int generation, std::string_view salt) {
  uint64_t parts[3] = {id.dev, id.inode, id.fingerprint};
  uint64_t h = fnv1a64(parts, sizeof parts);
  if (!salt.empty()) h = fnv1a64(salt.data(), salt.size(), h);
  std::string uid = to_hex(h);
  if (generation > 0) uid += "-" + std::to_string(generation);
  return uid;
}

}  // namespace tailbox
