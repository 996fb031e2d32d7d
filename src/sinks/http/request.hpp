// The http sink's request and response logic without I/O: the body, the
// idempotency key, gzip, what a status or a Retry-After means, and the
// Authorization-style header read from a secret. Pure (read_auth_header reads
// a file or the environment); thread-safe. The TLS connection pool and the
// exchange itself are in http_sink.cpp.
#pragma once

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "core/record.hpp"
#include "sinks/http/options.hpp"
#include "sinks/sink.hpp"

namespace tailbox::sinks::http {

// What an HTTP status means for the batch (see the file comment).
Delivery::Outcome classify(int status);
// True for statuses that say the sink's configuration is wrong (they retry).
bool configuration_problem(int status);

// A Retry-After value (delay-seconds or an HTTP-date) as a delay from `now`,
// clamped to [0, kMaxRetryAfter]; nullopt when malformed.
inline constexpr std::chrono::milliseconds kMaxRetryAfter{300'000};
std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now);

// Appends the batch's body: NDJSON (each object ends with "\n") or a JSON array.
void append_body(std::string& out, std::span<const Record> batch, Format format,
                 std::string_view id_field);

// 32 hex digits of SHA-256 over the batch's keys in order: the same rows give
// the same key on every retry and after a restart.
std::string idempotency_key(std::span<const Record> batch);

// gzip (RFC 1952) of `data`, at zlib's fastest level.
std::string gzip(std::string_view data);

// Parses the auth header secret: "Name: value", one line (one trailing
// newline allowed), a name the sink does not set itself. `where` names the
// source in messages; messages never include the value. Throws
// std::runtime_error.
std::pair<std::string, std::string> auth_header(const std::string& text, const std::string& where);

// The auth header from auth_header_file or auth_header_env through
// core/secret's read_secret() (which warns when the file can be read by other
// users). REQUIRES: exactly one of `file`, `env` non-empty. Throws
// std::runtime_error.
std::pair<std::string, std::string> read_auth_header(const std::string& file, const std::string& env);

}  // namespace tailbox::sinks::http
