#include "sinks/http/request.hpp"

#include <openssl/evp.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <stdexcept>

#include "core/secret.hpp"
#include "sinks/ndjson.hpp"

namespace tailbox::sinks::http {

using std::chrono::milliseconds;

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool configuration_problem(int status) {
  if (status >= 300 && status < 400) return true;   // redirects are not followed
  switch (status) {
    case 401: case 403:     // credentials
    case 404: case 405:     // url
    case 407:               // a proxy wants credentials
    case 415:               // format / compression not accepted
    case 421:               // misdirected: TLS server name
    case 426:               // wants another protocol (TLS)
    case 431:               // headers too large
      return true;
    default:
      return false;
  }
}

Delivery::Outcome classify(int status) {
  if (status >= 200 && status < 300) return Delivery::Outcome::delivered;
  if (status == 408 || status == 425 || status == 429 || status >= 500) return Delivery::Outcome::retry;
  if (configuration_problem(status)) return Delivery::Outcome::retry;
  if (status >= 400 && status < 500) return Delivery::Outcome::reject;
  return Delivery::Outcome::retry;   // 1xx and anything unknown
}

std::optional<milliseconds> parse_retry_after(std::string_view value,
                                              std::chrono::system_clock::time_point now) {
  value = trim(value);
  if (value.empty()) return std::nullopt;
  auto clamp = [](int64_t ms) { return std::clamp(milliseconds(ms), milliseconds(0), kMaxRetryAfter); };
  if (std::all_of(value.begin(), value.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    if (value.size() > 9) return kMaxRetryAfter;
    return clamp(std::stoll(std::string(value)) * 1000);
  }
  // HTTP-date: IMF-fixdate, or the obsolete RFC 850 and asctime forms.
  std::string text(value);
  for (const char* format : {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"}) {
    std::tm tm{};
    const char* end = strptime(text.c_str(), format, &tm);
    if (end == nullptr || *end != '\0') continue;
    auto at = std::chrono::system_clock::from_time_t(timegm(&tm));
    return clamp(std::chrono::duration_cast<milliseconds>(at - now).count());
  }
  return std::nullopt;
}

void append_body(std::string& out, std::span<const Record> batch, Format format,
                 std::string_view id_field) {
  if (format == Format::ndjson) {
    for (const Record& r : batch) append_ndjson(out, r, id_field);
    return;
  }
  out += '[';
  for (size_t i = 0; i < batch.size(); ++i) {
    if (i > 0) out += ',';
    append_ndjson(out, batch[i], id_field);
    out.pop_back();   // the object's "\n"
  }
  out += "]\n";
}

std::string idempotency_key(std::span<const Record> batch) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("OpenSSL: cannot start SHA-256");
  for (const Record& r : batch) {
    EVP_DigestUpdate(ctx.get(), r.key.data(), r.key.size());
    EVP_DigestUpdate(ctx.get(), "\n", 1);
  }
  EVP_DigestFinal_ex(ctx.get(), digest, &size);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < 16 && i < size; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

std::string gzip(std::string_view data) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("zlib: deflateInit2 failed");
  std::string out;
  out.resize(deflateBound(&zs, static_cast<uLong>(data.size())) + 64);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  size_t in_left = data.size();
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (zs.avail_in == 0 && in_left > 0) {
      zs.avail_in = static_cast<uInt>(std::min<size_t>(in_left, 1u << 30));
      in_left -= zs.avail_in;
    }
    if (zs.total_out == out.size()) out.resize(out.size() * 2);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + zs.total_out);
    zs.avail_out = static_cast<uInt>(std::min<size_t>(out.size() - zs.total_out, 1u << 30));
    rc = deflate(&zs, in_left == 0 ? Z_FINISH : Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      deflateEnd(&zs);
      throw std::runtime_error("zlib: deflate failed");
    }
  }
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// Reads "Name: value" (one line, one optional trailing newline) from a file
// or a variable. Messages never include the value.
std::pair<std::string, std::string> auth_header(const std::string& text, const std::string& where) {
  std::string_view line(text);
  if (line.ends_with("\n")) line.remove_suffix(1);
  if (line.ends_with("\r")) line.remove_suffix(1);
  auto header = line.find_first_of("\r\n") == std::string_view::npos ? parse_header_line(line)
                                                                     : std::nullopt;
  if (!header || header->second.empty())
    throw std::runtime_error(where + " must hold one header line such as \"Authorization: Bearer ...\"");
  if (reserved_header(header->first))
    throw std::runtime_error(where + ": \"" + header->first + "\" is set by the sink");
  return *header;
}

std::pair<std::string, std::string> read_auth_header(const std::string& file, const std::string& env) {
  std::string text = read_secret("auth_header", file, env);
  std::pair<std::string, std::string> header =
      auth_header(text, file.empty() ? "the environment variable " + env + " (auth_header_env)"
                                     : "auth_header_file " + file);
  std::fill(text.begin(), text.end(), '\0');
  return header;
}

}  // namespace tailbox::sinks::http
