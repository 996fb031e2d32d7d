// What makes a file the same file across renames: (dev, inode) plus a
// fingerprint of its first bytes, and the uid derived from it that every
// idempotency key carries. How an open file's identity is read is tail/'s
// (tail/file_identity.hpp); the outbox stores these values. Pure functions and
// plain values: thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tailbox {

struct FileIdentity {
  uint64_t dev = 0;
  uint64_t inode = 0;
  uint64_t fingerprint = 0;      // FNV-1a 64 of the first fingerprint_len bytes
  int64_t fingerprint_len = 0;   // < the configured length while the file is shorter
  int64_t size = 0;
  int64_t mtime_ms = 0;
};

uint64_t fnv1a64(const void* data, size_t len, uint64_t seed = 0xcbf29ce484222325ULL);
std::string to_hex(uint64_t value);

// The identity string used in idempotency keys: stable for the file's life.
// `salt` is the outbox's instance salt (schema/002_instance.sql): two outboxes
// never mint the same uid for one file; empty only for uids of a v1 outbox.
std::string file_uid(const FileIdentity& id, int generation, std::string_view salt = {});

}  // namespace tailbox
