// The nats sink's configuration ([sink] type = "nats"), read and checked once
// at start-up, without I/O, and the subject templates it uses. Pure
// functions; thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "config/settings.hpp"

namespace tailbox::sinks::nats {

// The sink's configuration, with the default next to each field.
struct Options {
  std::string url = "nats://127.0.0.1:4222";       // one server, or a comma-separated list
  std::string stream;                               // required
  std::string subject = "logs.{host}.{source}";     // placeholders {host} {source}
  bool create_stream = false;                       // false: the stream must exist
  std::vector<std::string> stream_subjects;         // create_stream: default wildcard_subject(subject)
  std::chrono::milliseconds duplicate_window{120'000};  // create_stream only
  int replicas = 1;                                 // create_stream only (1..5)
  std::chrono::milliseconds timeout{10'000};        // per batch (all PubAcks); connect, API calls
  bool ndjson = true;                               // `format` "ndjson" | "raw" (the line)
  std::string user;                                 // with password_file or password_env
  std::string password_file, password_env;
  std::string token_file, token_env;
  std::string credentials_file;                     // a NATS .creds file (JWT + NKey seed)
  std::string tls_ca_file, tls_cert_file, tls_key_file;
};

// Reads every key of the [sink] table that the nats sink knows, without I/O.
// Throws config::ConfigError naming the key. The caller runs finish().
Options parse_options(config::Settings& settings);

// A value made safe as one subject token: '.', '*', '>', whitespace and
// control characters become '_'; an empty value becomes "_".
std::string subject_token(std::string_view value);

// The template with {host} and {source} replaced by their subject_token()s.
std::string subject_for(std::string_view tmpl, std::string_view host, std::string_view source);

// The template with every token that holds a placeholder replaced by "*": the
// subjects a stream needs to catch every host and source.
std::string wildcard_subject(std::string_view tmpl);

// A filter that matches every subject this host publishes on: tokens with
// {source} become "*", {host} is replaced. Without {host} in the template it
// is wildcard_subject(tmpl).
std::string host_filter(std::string_view tmpl, std::string_view host);

// Why the template cannot be used ("" when it can): empty tokens, wildcards,
// whitespace, unknown placeholders.
std::string template_problem(std::string_view tmpl);

// The servers of the comma-separated URL list, trimmed.
std::vector<std::string> server_list(std::string_view urls);

// The URL list without user info ("nats://u:p@h:4222" -> "nats://h:4222").
std::string display_url(std::string_view urls);

}  // namespace tailbox::sinks::nats
