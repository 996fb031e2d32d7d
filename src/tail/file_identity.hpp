// What makes a file the same file across renames: (dev, inode) plus a
// fingerprint of its first bytes. A reused inode with other first bytes is a
// different file; two files with the same first bytes but other inodes are two
// files. Thread-safe (pure functions and plain values).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tailbox::tail {

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

// Reads the identity of an open file: fstat plus up to `fingerprint_bytes`
// bytes from offset 0. Returns nullopt (errno set) when it cannot.
std::optional<FileIdentity> identify(int fd, int64_t fingerprint_bytes);

// The longer fingerprint of the open file recorded as `was`, once it has grown
// past was.fingerprint_len (up to `fingerprint_bytes`): nullopt unless the
// bytes `was` hashed are still its first bytes (read once, together with the
// longer prefix: a file rewritten in between, e.g. copytruncate, must not have
// its new first bytes taken for the old file's). nullopt too when it has not
// grown, is complete, or cannot be read.
std::optional<FileIdentity> grown_identity(int fd, const FileIdentity& was,
                                           int64_t fingerprint_bytes, int64_t file_size);

// Whether `now` can be the file recorded as `was`: same dev and inode, and the
// bytes `was` hashed are still the file's first bytes.
// `rehash` gives the hash of the first `len` bytes of the file now.
bool same_file(const FileIdentity& was, const FileIdentity& now, uint64_t now_prefix_hash);

// The identity string used in idempotency keys: stable for the file's life.
// `salt` is the outbox's instance salt (schema/002_instance.sql): two outboxes
// never mint the same uid for one file; empty only for uids of a v1 outbox.
std::string file_uid(const FileIdentity& id, int generation, std::string_view salt = {});

}  // namespace tailbox::tail
