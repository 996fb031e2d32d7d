// The http sink's configuration ([sink] type = "http"), read and checked once
// at start-up, without I/O, and the URL and header-line parsing it needs.
// Pure; thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/settings.hpp"

namespace tailbox::sinks::http {

enum class Format { ndjson, json_array };

// A parsed http:// or https:// URL. No user info, no fragment.
struct Url {
  bool tls = false;
  std::string host;            // without brackets for IPv6
  uint16_t port = 0;           // 80 / 443 when not written
  std::string target = "/";    // path and query, as sent in the request line
  // "http://host:port/path" without the query (which may hold a token): for logs.
  std::string display() const;
};

// The sink's configuration, with the default next to each field.
struct Options {
  Url url;                                                   // `url`, required
  Format format = Format::ndjson;                            // "ndjson" | "json_array"
  std::string id_field = "_id";                              // the key's field in each object
  std::vector<std::pair<std::string, std::string>> headers;  // extra "Name: value" headers
  std::string auth_header_file;                              // one header line, read at open()
  std::string auth_header_env;                               // or: the variable that holds it
  std::chrono::milliseconds timeout{30'000};                 // per request, connect to last byte
  int connections = 2;                                       // requests in flight at most
  bool gzip = false;                                         // `compression` = "none" | "gzip"
  std::string tls_ca_file;        // PEM CA bundle; default: the system's trust store
  std::string tls_cert_file;      // client certificate chain (PEM), for mutual TLS
  std::string tls_key_file;       // its private key (PEM)
  std::string tls_server_name;    // SNI and the name verified; default: the URL's host
  bool tls_verify = true;         // false: no certificate or host name check (logged)
};

// Reads every key of the [sink] table that the http sink knows, without I/O.
// Throws config::ConfigError naming the key. The caller runs finish().
Options parse_options(config::Settings& settings);

// Parses an http:// or https:// URL; on failure returns nullopt and says why.
std::optional<Url> parse_url(std::string_view text, std::string& why);

// Splits "Name: value" into a header; nullopt unless the name is an HTTP token
// and the value holds no CR, LF or NUL. Surrounding blanks of the value go.
std::optional<std::pair<std::string, std::string>> parse_header_line(std::string_view line);

// Headers the sink writes itself (or that would break the framing),
// compared without case.
bool reserved_header(std::string_view name);

// True when `host` is an IPv4 or IPv6 address literal.
bool is_ip_literal(const std::string& host);

}  // namespace tailbox::sinks::http
