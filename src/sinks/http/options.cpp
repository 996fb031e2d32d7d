#include "sinks/http/options.hpp"

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <boost/url/parse.hpp>
#include <cctype>

namespace tailbox::sinks::http {

namespace asio = boost::asio;
using std::chrono::milliseconds;

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

bool token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}


bool reserved_header(std::string_view name) {
  for (std::string_view r : {"host", "content-length", "transfer-encoding", "connection", "keep-alive",
                             "te", "upgrade", "content-encoding", "idempotency-key"})
    if (iequals(name, r)) return true;
  return false;
}


std::string Url::display() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return (tls ? "https://" : "http://") + h + ":" + std::to_string(port) +
         target.substr(0, target.find('?'));
}

std::optional<Url> parse_url(std::string_view text, std::string& why) {
  // Messages never echo the URL: its query may hold a token.
  auto parsed = boost::urls::parse_uri(text);
  if (!parsed) {
    why = "is not an absolute http:// or https:// URL (" + parsed.error().message() +
          "; percent-encode spaces, control characters and non-ASCII bytes)";
    return std::nullopt;
  }
  const boost::urls::url_view& u = *parsed;
  Url url;
  if (u.scheme_id() == boost::urls::scheme::http) url.tls = false;
  else if (u.scheme_id() == boost::urls::scheme::https) url.tls = true;
  else {
    why = "must start with http:// or https://";
    return std::nullopt;
  }
  if (u.has_fragment()) {
    why = "must not have a fragment (#...)";
    return std::nullopt;
  }
  if (u.has_userinfo()) {
    why = "must not hold a user or password (use auth_header_file or auth_header_env)";
    return std::nullopt;
  }
  switch (u.host_type()) {
    case boost::urls::host_type::ipv6:
      url.host = u.host_address();   // without brackets
      break;
    case boost::urls::host_type::ipv4:
    case boost::urls::host_type::name:
      url.host = u.encoded_host();
      for (char c : url.host)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
          why = "has a host with characters other than letters, digits, '.', '-' and '_'";
          return std::nullopt;
        }
      break;
    default:
      why = "has a bracketed host that is not an IPv6 address";
      return std::nullopt;
  }
  if (url.host.empty()) {
    why = "has no host";
    return std::nullopt;
  }
  // Boost.URL 1.81 takes "host:12a/" for port 12 and a path "a/" (a path
  // after an authority must start with '/').
  std::string_view target = u.encoded_target();
  if (!target.empty() && target.front() != '/' && target.front() != '?') {
    why = u.has_port() ? "has a port that is not a number from 1 to 65535"
                       : "has a path that does not start with /";
    return std::nullopt;
  }
  url.port = url.tls ? 443 : 80;
  if (u.has_port()) {
    std::string_view port_text = u.port();
    bool digits = !port_text.empty() && port_text.size() <= 5 &&
                  std::all_of(port_text.begin(), port_text.end(),
                              [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    long port = digits ? std::stol(std::string(port_text)) : 0;
    if (port < 1 || port > 65535) {
      why = "has a port that is not a number from 1 to 65535";
      return std::nullopt;
    }
    url.port = static_cast<uint16_t>(port);
  }
  if (target.empty()) url.target = "/";
  else if (target.front() == '?') url.target = "/" + std::string(target);
  else url.target = std::string(target);
  return url;
}

std::optional<std::pair<std::string, std::string>> parse_header_line(std::string_view line) {
  size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  std::string_view name = line.substr(0, colon);
  if (!std::all_of(name.begin(), name.end(), token_char)) return std::nullopt;
  std::string_view value = trim(line.substr(colon + 1));
  if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) return std::nullopt;
  return std::pair{std::string(name), std::string(value)};
}

Options parse_options(config::Settings& s) {
  Options o;
  std::string why;
  auto url = parse_url(s.required_string("url"), why);
  if (!url) s.fail("url", why);
  o.url = *url;
  o.format = s.choice("format", "ndjson", {"ndjson", "json_array"}) == "ndjson" ? Format::ndjson
                                                                               : Format::json_array;
  o.id_field = s.string("id_field", o.id_field);
  if (o.id_field.empty()) s.fail("id_field", "must not be empty");
  auto lines = s.string_list("headers", false);
  for (size_t i = 0; i < lines.size(); ++i) {
    // The line is not echoed: it may hold a secret.
    std::string entry = "entry " + std::to_string(i + 1);
    auto header = parse_header_line(lines[i]);
    if (!header) s.fail("headers", entry + " is not a header line \"Name: value\"");
    if (reserved_header(header->first))
      s.fail("headers", entry + ": \"" + header->first + "\" is set by the sink");
    o.headers.push_back(std::move(*header));
  }
  o.auth_header_file = s.string("auth_header_file", "");
  o.auth_header_env = s.string("auth_header_env", "");
  if (!o.auth_header_file.empty() && !o.auth_header_env.empty())
    s.fail("auth_header_env", "give auth_header_file or auth_header_env, not both");
  if (!o.auth_header_env.empty()) {
    bool ok = !std::isdigit(static_cast<unsigned char>(o.auth_header_env[0]));
    for (char c : o.auth_header_env) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
    if (!ok) s.fail("auth_header_env", "must be an environment variable name (letters, digits, _)");
  }
  o.timeout = s.duration("timeout", o.timeout);
  if (o.timeout <= milliseconds(0)) s.fail("timeout", "must be more than 0");
  o.connections = static_cast<int>(s.integer("connections", o.connections, 1, 64));
  o.gzip = s.choice("compression", "none", {"none", "gzip"}) == "gzip";

  o.tls_ca_file = s.string("tls_ca_file", "");
  o.tls_cert_file = s.string("tls_cert_file", "");
  o.tls_key_file = s.string("tls_key_file", "");
  o.tls_server_name = s.string("tls_server_name", "");
  o.tls_verify = s.boolean("tls_verify", true);
  struct Given { const char* key; bool given; };
  for (Given g : {Given{"tls_ca_file", !o.tls_ca_file.empty()}, Given{"tls_cert_file", !o.tls_cert_file.empty()},
                  Given{"tls_key_file", !o.tls_key_file.empty()}, Given{"tls_server_name", !o.tls_server_name.empty()},
                  Given{"tls_verify", !o.tls_verify}})
    if (g.given && !o.url.tls) s.fail(g.key, "needs an https:// url");
  if (o.tls_cert_file.empty() != o.tls_key_file.empty())
    s.fail(o.tls_cert_file.empty() ? "tls_key_file" : "tls_cert_file",
           "tls_cert_file and tls_key_file go together");
  for (char c : o.tls_server_name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_' && c != ':')
      s.fail("tls_server_name", "must be a host name or an IP address");
  return o;
}

}  // namespace tailbox::sinks::http
