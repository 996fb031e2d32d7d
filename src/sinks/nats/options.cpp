#include "sinks/nats/options.hpp"

#include <algorithm>
#include <optional>

namespace tailbox::sinks::nats {

namespace {

bool unsafe_subject_char(unsigned char c) {
  return c == '.' || c == '*' || c == '>' || c <= 0x20 || c == 0x7f;
}

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    size_t at = text.find(sep);
    out.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return out;
    text.remove_prefix(at + 1);
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

// A NATS stream name: no '.', '*', '>', whitespace or path separators.
bool valid_stream_name(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  return std::none_of(name.begin(), name.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return unsafe_subject_char(c) || c == '/' || c == '\\';
  });
}

}  // namespace

std::vector<std::string> server_list(std::string_view urls) {
  std::vector<std::string> out;
  for (std::string_view u : split(urls, ',')) out.emplace_back(trim(u));
  return out;
}

std::string subject_token(std::string_view value) {
  if (value.empty()) return "_";
  std::string out(value);
  for (char& ch : out)
    if (unsafe_subject_char(static_cast<unsigned char>(ch))) ch = '_';
  return out;
}

std::string subject_for(std::string_view tmpl, std::string_view host, std::string_view source) {
  std::string out = replace_all(std::string(tmpl), "{host}", subject_token(host));
  return replace_all(std::move(out), "{source}", subject_token(source));
}

std::string wildcard_subject(std::string_view tmpl) {
  std::string out;
  for (std::string_view token : split(tmpl, '.')) {
    if (!out.empty()) out += '.';
    if (token.find('{') != std::string_view::npos) out += '*';
    else out += token;
  }
  return out;
}

std::string host_filter(std::string_view tmpl, std::string_view host) {
  std::string out;
  for (std::string_view token : split(tmpl, '.')) {
    if (!out.empty()) out += '.';
    if (token.find("{source}") != std::string_view::npos) out += '*';
    else out += replace_all(std::string(token), "{host}", subject_token(host));
  }
  return out;
}

std::string template_problem(std::string_view tmpl) {
  if (tmpl.empty()) return "must not be empty";
  for (std::string_view token : split(tmpl, '.')) {
    if (token.empty()) return "has an empty token (\"..\", or a '.' at either end)";
    std::string rest = replace_all(replace_all(std::string(token), "{host}", "h"), "{source}", "s");
    for (char ch : rest) {
      auto c = static_cast<unsigned char>(ch);
      if (c == '*' || c == '>') return "must not hold the wildcards '*' or '>'";
      if (c <= 0x20 || c == 0x7f) return "must not hold whitespace or control characters";
      if (c == '{' || c == '}') return "knows only the placeholders {host} and {source}";
    }
  }
  return "";
}

std::string display_url(std::string_view urls) {
  std::string out;
  for (std::string_view u : split(urls, ',')) {
    u = trim(u);
    if (!out.empty()) out += ',';
    size_t scheme = u.find("://");
    size_t start = scheme == std::string_view::npos ? 0 : scheme + 3;
    size_t at = u.find('@', start);
    if (at != std::string_view::npos) {
      out += u.substr(0, start);
      out += u.substr(at + 1);
    } else {
      out += u;
    }
  }
  return out;
}

Options parse_options(config::Settings& s) {
  Options o;
  o.url = s.string("url", o.url);
  for (std::string_view u : split(o.url, ','))
    if (trim(u).empty()) s.fail("url", "has an empty server in its list");
  o.stream = s.required_string("stream");
  if (!valid_stream_name(o.stream))
    s.fail("stream", "must be a NATS stream name (no '.', '*', '>', whitespace, '/' or '\\'), got \"" +
                         o.stream + "\"");
  o.subject = s.string("subject", o.subject);
  if (std::string why = template_problem(o.subject); !why.empty()) s.fail("subject", why);
  o.create_stream = s.boolean("create_stream", false);
  o.stream_subjects = s.string_list("stream_subjects", false);
  for (const auto& subject : o.stream_subjects)
    if (std::any_of(subject.begin(), subject.end(),
                    [](char c) { return static_cast<unsigned char>(c) <= 0x20; }))
      s.fail("stream_subjects", "must not hold whitespace or control characters");
  if (o.stream_subjects.empty()) o.stream_subjects = {wildcard_subject(o.subject)};
  o.duplicate_window = s.duration("duplicate_window", o.duplicate_window);
  if (o.duplicate_window.count() <= 0) s.fail("duplicate_window", "must be more than 0");
  o.replicas = static_cast<int>(s.integer("replicas", 1, 1, 5));
  o.timeout = s.duration("timeout", o.timeout);
  if (o.timeout.count() <= 0) s.fail("timeout", "must be more than 0");
  o.ndjson = s.choice("format", "ndjson", {"ndjson", "raw"}) == "ndjson";

  o.user = s.string("user", "");
  auto password_source = s.secret("password");
  o.password_file = password_source.file;
  o.password_env = password_source.env;
  auto token_source = s.secret("token");
  o.token_file = token_source.file;
  o.token_env = token_source.env;
  o.credentials_file = s.string("credentials_file", "");
  bool password = !o.password_file.empty() || !o.password_env.empty();
  bool token = !o.token_file.empty() || !o.token_env.empty();
  if (password && o.user.empty())
    s.fail(o.password_file.empty() ? "password_env" : "password_file", "needs user");
  if (!o.user.empty() && !password) s.fail("user", "needs password_file or password_env");
  int methods = int(!o.user.empty()) + int(token) + int(!o.credentials_file.empty());
  if (methods > 1)
    s.fail(token ? (o.token_file.empty() ? "token_env" : "token_file") : "credentials_file",
           "choose one authentication: user + password, a token, or credentials_file");
  o.tls_ca_file = s.string("tls_ca_file", "");
  o.tls_cert_file = s.string("tls_cert_file", "");
  o.tls_key_file = s.string("tls_key_file", "");
  if (o.tls_cert_file.empty() != o.tls_key_file.empty())
    s.fail(o.tls_cert_file.empty() ? "tls_key_file" : "tls_cert_file",
           "tls_cert_file and tls_key_file go together");
  return o;
}

}  // namespace tailbox::sinks::nats
