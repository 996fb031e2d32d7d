// Reading a file's identity (core/file_identity.hpp) from an open descriptor,
// and comparing it with a recorded one. A reused inode with other first bytes
// is a different file; two files with the same first bytes but other inodes
// are two files. Thread-safe (pure functions and plain values).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

#include "core/file_identity.hpp"

namespace tailbox::tail {

using tailbox::FileIdentity;
using tailbox::file_uid;
using tailbox::fnv1a64;
using tailbox::to_hex;

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



}  // namespace tailbox::tail
