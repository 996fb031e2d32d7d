#include "sinks/nats/nats_sink.hpp"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <condition_variable>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "core/blocking.hpp"
#include "core/secret.hpp"
#include "sinks/ndjson.hpp"

namespace tailbox::sinks {

namespace asio = boost::asio;
using std::chrono::milliseconds;

namespace nats {

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

  auto one_of = [&](const char* file_key, const char* env_key, std::string& file, std::string& env) {
    auto f = s.optional_string(file_key);
    auto e = s.optional_string(env_key);
    if (f && e) s.fail(env_key, std::string("set ") + file_key + " or " + env_key + ", not both");
    if (f && f->empty()) s.fail(file_key, "must not be empty");
    if (e && e->empty()) s.fail(env_key, "must not be empty");
    file = f.value_or("");
    env = e.value_or("");
  };
  o.user = s.string("user", "");
  one_of("password_file", "password_env", o.password_file, o.password_env);
  one_of("token_file", "token_env", o.token_file, o.token_env);
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

}  // namespace nats

namespace {

constexpr const char* kMsgId = "Nats-Msg-Id";

std::string status_text(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  const char* detail = nats_GetLastError(nullptr);
  if (detail && *detail && text.find(detail) == std::string::npos) text += std::string(": ") + detail;
  return text;
}

// A header value must not hold CR or LF (it would end the header).
std::string header_value(std::string_view v) {
  std::string out(v);
  for (char& c : out)
    if (c == '\r' || c == '\n') c = ' ';
  return out;
}

// The secret from `file` or `env` (core/secret.hpp), or "" when neither is set.
std::string optional_secret(const char* what, const std::string& file, const std::string& env) {
  return file.empty() && env.empty() ? std::string() : read_secret(what, file, env);
}

}  // namespace

struct NatsSink::Impl {
  static constexpr uint64_t kRefused = std::numeric_limits<uint64_t>::max();

  // A message of this process (the libnats message is built before publishing).
  struct Out {
    std::string key;
    natsMsg* msg = nullptr;
  };

  nats::Options o;
  std::string host_id, name, display;
  std::string host_prefix;    // "<host_id>/": the keys this relay wrote
  KeysInOutbox in_outbox;     // set by the relay; unset: every key read back holds
  asio::thread_pool pool{1};  // runs the blocking part of deliver()

  natsOptions* opts = nullptr;
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  uintptr_t conn_id = 0;      // the callbacks' closure for nc (see live())

  // Owned by the delivering thread (one delivery at a time).
  // Messages published and stored (read back at open(), or acked in a failed
  // attempt) whose rows are still in the outbox: their records are
  // acknowledged without publishing them again, and until then the committed
  // state stays below their sequence (key -> sequence).
  std::unordered_map<std::string, uint64_t> skip;
  // Published in a failed attempt without an answer: maybe stored, above
  // `bound` - 1, not before `since`. Published again while the window surely
  // drops a second copy (less than half of it since then); later the stream
  // is read back first (recheck_unsure()).
  struct Unsure {
    uint64_t bound = 0;
    std::chrono::steady_clock::time_point since;
  };
  std::unordered_map<std::string, Unsure> unsure;
  uint64_t high = 0;  // every message of ours at or below it is confirmed or held
  milliseconds window{0};  // the stream's duplicate window (stream info)
  std::chrono::steady_clock::time_point attempt_start;  // of the attempt in flight
  std::string buffer;

  // The batch in flight, shared with libnats' PubAck callback thread.
  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<std::string, uint64_t> waiting;  // key -> 0, its sequence, or kRefused
  size_t outstanding = 0;
  std::string failure;     // the first negative PubAck
  bool too_large = false;  // the stream refused a message as too large
  std::atomic<uint64_t> disconnects{0};
  bool closed = false;                 // the closed callback of conn_id ran
  std::atomic<bool> closing{false};    // our own close(): not worth a warning

  ~Impl() {
    pool.join();
    close();
  }

  // libnats runs its callbacks on its own threads, and may still run one
  // after natsConnection_Destroy() (the closed callback is queued), so the
  // closure is not the Impl but a number that close() retires: under live()'s
  // mutex a callback either finds its Impl alive or does nothing, and close()
  // cannot retire the number while a callback uses it.
  struct Live {
    std::mutex mu;
    std::unordered_map<uintptr_t, Impl*> impls;
    uintptr_t next = 1;
  };
  static Live& live() {
    static Live* l = new Live;  // never destroyed: callbacks may run at exit
    return *l;
  }
  template <typename F>
  static void with_impl(void* closure, F&& f) {
    Live& l = live();
    std::lock_guard lock(l.mu);
    auto it = l.impls.find(reinterpret_cast<uintptr_t>(closure));
    if (it != l.impls.end()) f(*it->second);
  }

  void close() {
    if (nc) {
      closing = true;
      natsConnection_Close(nc);  // queues the closed callback (once per connection)
      // Let the callbacks queued before it (disconnected, errors) run while
      // this Impl is still theirs; bounded: a stuck callback thread must not
      // hold up a shutdown (later callbacks then find nothing).
      std::unique_lock lock(mu);
      cv.wait_for(lock, std::min<milliseconds>(o.timeout, milliseconds(2000)),
                  [&] { return closed; });
    }
    if (conn_id) {
      Live& l = live();
      std::lock_guard lock(l.mu);
      l.impls.erase(conn_id);
      conn_id = 0;
    }
    if (js) jsCtx_Destroy(js);
    if (nc) natsConnection_Destroy(nc);
    if (opts) natsOptions_Destroy(opts);
    js = nullptr;
    nc = nullptr;
    opts = nullptr;
  }

  static void on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    with_impl(closure, [&](Impl& m) {
      const char* id = nullptr;
      if (natsMsgHeader_Get(msg, kMsgId, &id) == NATS_OK && id) {
        std::lock_guard lock(m.mu);
        auto it = m.waiting.find(id);
        // Not found or answered already: an ack of an attempt given up on, or
        // of the first copy of a retried message.
        if (it != m.waiting.end() && it->second == 0) {
          if (pa) {
            it->second = std::max<uint64_t>(pa->Sequence, 1);
            --m.outstanding;
          } else if (pae) {
            it->second = kRefused;
            if (m.failure.empty()) {
              m.too_large = pae->ErrCode == JSStreamMessageExceedsMaximumErr;
              m.failure = pae->ErrText && *pae->ErrText ? pae->ErrText : status_text(pae->Err);
            }
          }
        }
      }
      m.cv.notify_all();
    });
    natsMsg_Destroy(msg);
  }

  static void on_disconnected(natsConnection* nc, void* closure) {
    with_impl(closure, [&](Impl& m) {
      {
        std::lock_guard lock(m.mu);
        ++m.disconnects;
      }
      m.cv.notify_all();
      if (!m.closing.load() && !natsConnection_IsClosed(nc))
        spdlog::warn("{}: disconnected from NATS; reconnecting", m.name);
    });
  }
  static void on_closed(natsConnection* nc, void* closure) {
    with_impl(closure, [&](Impl& m) {
      {
        std::lock_guard lock(m.mu);
        m.closed = true;
        ++m.disconnects;  // a delivery waiting for PubAcks gives up now
      }
      m.cv.notify_all();
      if (!m.closing.load()) {
        const char* text = nullptr;
        natsStatus s = natsConnection_GetLastError(nc, &text);
        spdlog::warn("{}: libnats closed the connection to NATS ({}); the next delivery connects "
                     "again", m.name, text && *text ? text : natsStatus_GetText(s));
      }
    });
  }
  static void on_reconnected(natsConnection* nc, void* closure) {
    with_impl(closure, [&](Impl& m) {
      char url[256] = "";
      natsConnection_GetConnectedUrl(nc, url, sizeof url);
      spdlog::info("{}: reconnected to {}", m.name, nats::display_url(url));
    });
  }
  static void on_error(natsConnection*, natsSubscription*, natsStatus err, void* closure) {
    with_impl(closure, [&](Impl& m) {
      spdlog::warn("{}: NATS: {}", m.name, natsStatus_GetText(err));
    });
  }

  static void check(natsStatus s, const std::string& what) {
    if (s != NATS_OK) throw std::runtime_error(what + ": " + status_text(s));
  }

  void connect() {
    close();
    {
      Live& l = live();
      std::lock_guard lock(l.mu);
      conn_id = l.next++;
      l.impls.emplace(conn_id, this);
    }
    {
      std::lock_guard lock(mu);
      closed = false;
    }
    closing = false;
    void* closure = reinterpret_cast<void*>(conn_id);
    std::string password = optional_secret("password", o.password_file, o.password_env);
    std::string token = optional_secret("token", o.token_file, o.token_env);
    check(natsOptions_Create(&opts), "natsOptions_Create");
    std::vector<std::string> servers;
    for (std::string_view u : nats::split(o.url, ',')) servers.emplace_back(nats::trim(u));
    std::vector<const char*> server_ptrs;
    for (const auto& server : servers) server_ptrs.push_back(server.c_str());
    check(natsOptions_SetServers(opts, server_ptrs.data(), static_cast<int>(server_ptrs.size())),
          "url " + display);
    check(natsOptions_SetName(opts, ("tailbox " + host_id).c_str()), "name");
    check(natsOptions_SetTimeout(opts, std::min<int64_t>(o.timeout.count(), 5000)), "timeout");
    check(natsOptions_SetMaxReconnect(opts, -1), "max reconnect");
    check(natsOptions_SetReconnectWait(opts, 500), "reconnect wait");
    check(natsOptions_SetDisconnectedCB(opts, on_disconnected, closure), "callbacks");
    check(natsOptions_SetReconnectedCB(opts, on_reconnected, closure), "callbacks");
    check(natsOptions_SetClosedCB(opts, on_closed, closure), "callbacks");
    check(natsOptions_SetErrorHandler(opts, on_error, closure), "callbacks");
    if (!o.user.empty()) check(natsOptions_SetUserInfo(opts, o.user.c_str(), password.c_str()), "user");
    if (!token.empty()) check(natsOptions_SetToken(opts, token.c_str()), "token");
    std::fill(password.begin(), password.end(), '\0');
    std::fill(token.begin(), token.end(), '\0');
    if (!o.credentials_file.empty())
      check(natsOptions_SetUserCredentialsFromFiles(opts, o.credentials_file.c_str(), nullptr),
            "credentials_file " + o.credentials_file);
    bool tls = !o.tls_ca_file.empty() || !o.tls_cert_file.empty() ||
               o.url.find("tls://") != std::string::npos;
    if (tls) check(natsOptions_SetSecure(opts, true), "tls");
    if (!o.tls_ca_file.empty())
      check(natsOptions_LoadCATrustedCertificates(opts, o.tls_ca_file.c_str()),
            "tls_ca_file " + o.tls_ca_file);
    if (!o.tls_cert_file.empty())
      check(natsOptions_LoadCertificatesChain(opts, o.tls_cert_file.c_str(), o.tls_key_file.c_str()),
            "tls_cert_file/tls_key_file");

    natsStatus s = natsConnection_Connect(&nc, opts);
    if (s != NATS_OK) {
      nc = nullptr;
      throw std::runtime_error("cannot connect to " + display + ": " + status_text(s));
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = o.timeout.count();
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = closure;
    check(natsConnection_JetStream(&js, nc, &jo), "JetStream context");
  }

  // The stream's info; creates the stream when asked (and `create`). The
  // caller destroys it.
  jsStreamInfo* stream_info(bool create = true) {
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_GetStreamInfo(&si, js, o.stream.c_str(), nullptr, &jerr);
    if (s == NATS_OK) return si;
    if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
      throw std::runtime_error("cannot read stream " + o.stream + ": " + status_text(s));
    if (!o.create_stream || !create)
      throw std::runtime_error("stream " + o.stream +
                               " does not exist (create it, or set create_stream = true)");
    std::vector<const char*> subjects;
    for (const auto& subject : o.stream_subjects) subjects.push_back(subject.c_str());
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = o.stream.c_str();
    sc.Subjects = subjects.data();
    sc.SubjectsLen = static_cast<int>(subjects.size());
    sc.Storage = js_FileStorage;
    sc.Replicas = o.replicas;
    sc.Duplicates = static_cast<int64_t>(o.duplicate_window.count()) * 1'000'000;
    jerr = static_cast<jsErrCode>(0);
    s = js_AddStream(&si, js, &sc, nullptr, &jerr);
    if (s == NATS_OK) {
      std::string list;
      for (const auto& subject : o.stream_subjects) list += (list.empty() ? "" : " ") + subject;
      spdlog::info("{}: created stream {} (subjects {}, duplicate window {} ms, {} replicas)", name,
                   o.stream, list, o.duplicate_window.count(), o.replicas);
      return si;
    }
    if (jerr == JSStreamNameExistErr) {  // created meanwhile by someone else
      check(js_GetStreamInfo(&si, js, o.stream.c_str(), nullptr, &jerr), "stream " + o.stream);
      return si;
    }
    throw std::runtime_error("cannot create stream " + o.stream + ": " + status_text(s));
  }

  struct StreamState {
    uint64_t first = 0, last = 0;
  };
  // The stream's first and last sequences; also refreshes `window`.
  StreamState stream_state(bool create) {
    jsStreamInfo* si = stream_info(create);
    StreamState st{si->State.FirstSeq, si->State.LastSeq};
    window = milliseconds(si->Config ? si->Config->Duplicates / 1'000'000 : 0);
    jsStreamInfo_Destroy(si);
    return st;
  }

  struct ReadBack {
    uint64_t seen = 0;   // messages looked at
    uint64_t stale = 0;  // this host's, whose rows are no longer in the outbox
  };

  // Of the keys read back, those whose rows are still in the outbox (pending
  // or dead) go into `skip`; the others were confirmed (or purged) after they
  // were published, and are forgotten.
  void keep_in_outbox(std::vector<std::pair<std::string, uint64_t>>& found, ReadBack& rb,
                      const KeysInOutbox& lookup) {
    if (found.empty()) return;
    std::vector<std::string> keys;
    keys.reserve(found.size());
    for (const auto& [key, seq] : found) keys.push_back(key);
    std::vector<bool> in = lookup ? lookup(keys) : std::vector<bool>(keys.size(), true);
    if (in.size() != keys.size())
      throw std::runtime_error("the outbox lookup answered " + std::to_string(in.size()) +
                               " of " + std::to_string(keys.size()) + " keys");
    for (size_t i = 0; i < found.size(); ++i) {
      if (!in[i]) {
        ++rb.stale;
        continue;
      }
      uint64_t& seq = skip[found[i].first];
      seq = std::max(seq, found[i].second);  // the last copy: the read-back finds it
    }
    found.clear();
  }

  // Reads this host's messages after sequence `after`, up to `last`, into
  // `skip` (those whose rows are still in the outbox, asked through `lookup`).
  ReadBack read_back(uint64_t after, uint64_t last, const KeysInOutbox& lookup) {
    std::string filter = nats::host_filter(o.subject, host_id);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = o.stream.c_str();
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = after + 1;
    so.Config.HeadersOnly = true;
    natsSubscription* sub = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    const std::string what =
        "reading stream " + o.stream + " back after sequence " + std::to_string(after);
    check(js_SubscribeSync(&sub, js, filter.c_str(), nullptr, &so, &jerr),
          what + " (filter " + filter + ")");
    struct Unsubscribe {
      natsSubscription* sub;
      ~Unsubscribe() {
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
      }
    } unsubscribe{sub};

    jsConsumerInfo* ci = nullptr;
    check(natsSubscription_GetConsumerInfo(&ci, sub, nullptr, &jerr), what);
    bool more = ci->NumPending > 0 || ci->Delivered.Consumer > 0;
    jsConsumerInfo_Destroy(ci);
    ReadBack rb;
    std::vector<std::pair<std::string, uint64_t>> found;
    while (more) {
      natsMsg* msg = nullptr;
      check(natsSubscription_NextMsg(&msg, sub, o.timeout.count()), what);
      jsMsgMetaData* meta = nullptr;
      natsStatus s = natsMsg_GetMetaData(&meta, msg);
      if (s != NATS_OK) {
        natsMsg_Destroy(msg);
        check(s, what);
      }
      uint64_t seq = meta->Sequence.Stream;
      more = meta->NumPending > 0 && seq < last;
      jsMsgMetaData_Destroy(meta);
      if (seq <= last) {
        ++rb.seen;
        const char* id = nullptr;
        if (natsMsgHeader_Get(msg, kMsgId, &id) == NATS_OK && id &&
            std::string_view(id).starts_with(host_prefix))
          found.emplace_back(id, seq);
      }
      natsMsg_Destroy(msg);
      if (found.size() >= 4096) keep_in_outbox(found, rb, lookup);
    }
    keep_in_outbox(found, rb, lookup);
    return rb;
  }

  std::optional<std::string> open(const std::optional<std::string>& committed) {
    skip.clear();
    unsure.clear();
    connect();
    const auto [first, last] = stream_state(true);
    const int64_t window_ms = window.count();

    std::optional<uint64_t> from;
    if (committed) {
      size_t colon = committed->rfind(':');
      if (colon != std::string::npos && committed->compare(0, colon, o.stream) == 0 &&
          colon == o.stream.size()) {
        try {
          from = std::stoull(committed->substr(colon + 1));
        } catch (const std::exception&) {
        }
      }
      if (!from)
        spdlog::info("{}: the committed state \"{}\" is not a sequence of stream {}; starting at "
                     "its end", name, *committed, o.stream);
    }
    if (from && *from > last) {
      spdlog::warn("{}: stream {} ends at sequence {}, before the last acknowledged one ({}): it "
                   "was purged or recreated; nothing is read back, and lines not yet confirmed "
                   "are published again", name, o.stream, last, *from);
      from.reset();
    }
    if (!from) {
      high = last;
      spdlog::info("{}: connected to {}; stream {} (duplicate window {} ms); starting after "
                   "sequence {}", name, display, o.stream, window_ms, last);
      return o.stream + ":" + std::to_string(last);
    }
    high = *from;
    if (*from + 1 < first)
      spdlog::warn("{}: stream {} no longer holds sequences {}..{} (retention removed them before "
                   "tailbox confirmed them): lines published then may be published again",
                   name, o.stream, *from + 1, first - 1);
    ReadBack rb = *from < last ? read_back(*from, last, in_outbox) : ReadBack{};
    spdlog::info("{}: connected to {}; stream {} (duplicate window {} ms); read back {} messages "
                 "after sequence {}: {} of this host's were published but not confirmed and will "
                 "not be published again ({} more were confirmed already){}", name, display,
                 o.stream, window_ms, rb.seen, *from, skip.size(), rb.stale,
                 in_outbox ? "" : " (no outbox lookup: every one holds the state)");
    return std::nullopt;
  }

  // The state to commit: every message of ours still pending in the outbox
  // lies above it.
  std::string state() const {
    uint64_t s = high;
    for (const auto& [key, seq] : skip) s = std::min(s, seq - 1);
    for (const auto& [key, u] : unsure) s = std::min(s, u.bound - 1);
    return o.stream + ":" + std::to_string(s);
  }

  // Forgets the batch in flight: late PubAcks are then ignored. What was
  // acked is stored (not published again); what was sent without an answer
  // may be (the state stays below it).
  void end_attempt(const std::vector<Out>& outs, size_t sent) {
    natsMsgList pending{};
    if (js && js_PublishAsyncGetPendingList(&pending, js) == NATS_OK) natsMsgList_Destroy(&pending);
    std::lock_guard lock(mu);
    for (size_t i = 0; i < sent && i < outs.size(); ++i) {
      auto it = waiting.find(outs[i].key);
      uint64_t seq = it == waiting.end() ? 0 : it->second;
      if (seq == kRefused) continue;
      if (seq != 0) {
        skip[outs[i].key] = seq;
        unsure.erase(outs[i].key);
      } else {
        unsure.emplace(outs[i].key, Unsure{high + 1, attempt_start});
      }
    }
    waiting.clear();
    outstanding = 0;
    failure.clear();
    too_large = false;
  }

  // Before records sent in an earlier attempt without an answer are published
  // again: when half of the duplicate window or more has passed since then,
  // the window may no longer drop a second copy, so the stream is read back
  // first (as open() does, from below the oldest of them up to its current
  // end). Those found there go into `skip` and are acknowledged without being
  // published; the others were not stored by the time the read-back began, and
  // count from then on. Returns a retry when the stream cannot be read back
  // (they are never published blindly), nullopt to go on.
  std::optional<Delivery> recheck_unsure(std::span<const Record> batch) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    uint64_t after = std::numeric_limits<uint64_t>::max();
    clock::time_point oldest = start;
    std::vector<std::string> keys;
    for (const Record& r : batch) {
      std::string key = header_value(r.key);
      auto it = unsure.find(key);
      if (it == unsure.end() || skip.count(key)) continue;
      keys.push_back(std::move(key));
      after = std::min(after, it->second.bound - 1);
      oldest = std::min(oldest, it->second.since);
    }
    if (keys.empty() || start - oldest < window / 2) return std::nullopt;
    const auto age = std::chrono::duration_cast<milliseconds>(start - oldest).count();
    size_t found = 0;
    try {
      const StreamState st = stream_state(false);
      // Only our own records without an answer (or already held) are still
      // pending in the outbox: every other key of ours was confirmed.
      KeysInOutbox pending = [this](const std::vector<std::string>& ks) {
        std::vector<bool> in;
        in.reserve(ks.size());
        for (const auto& k : ks) in.push_back(unsure.count(k) > 0 || skip.count(k) > 0);
        return in;
      };
      ReadBack rb = after < st.last ? read_back(after, st.last, pending) : ReadBack{};
      for (const auto& key : keys) {
        auto it = unsure.find(key);
        if (skip.count(key)) {
          ++found;
          if (it != unsure.end()) unsure.erase(it);
        } else if (it != unsure.end()) {  // not stored up to st.last
          it->second.bound = std::max(it->second.bound, st.last + 1);
          it->second.since = start;
        }
      }
      spdlog::info("{}: {} lines of this batch were sent {} ms ago without an answer (duplicate "
                   "window {} ms): read back {} messages of stream {} after sequence {}: {} were "
                   "stored and will not be published again", name, keys.size(), age,
                   window.count(), rb.seen, o.stream, after, found);
    } catch (const std::exception& e) {
      return Delivery::retry("reading stream " + o.stream + " back before publishing again lines "
                             "sent " + std::to_string(age) + " ms ago without an answer: " +
                             e.what());
    }
    return std::nullopt;
  }

  // One batch, on the sink's thread. Never throws.
  Delivery publish(std::span<const Record> batch) noexcept {
    std::vector<Out> outs;
    size_t sent = 0;
    try {
      Delivery d = publish(batch, outs, sent);
      for (auto& out : outs) natsMsg_Destroy(out.msg);
      return d;
    } catch (const std::exception& e) {
      try {
        end_attempt(outs, sent);
      } catch (...) {
      }
      for (auto& out : outs) natsMsg_Destroy(out.msg);
      return Delivery::retry(e.what());
    } catch (...) {
      return Delivery::retry("unexpected exception");
    }
  }

  Delivery publish(std::span<const Record> batch, std::vector<Out>& outs, size_t& sent) {
    if (!nc || !js || natsConnection_IsClosed(nc)) {
      // libnats gave the connection up (e.g. an authorization error on
      // reconnect) and will not reconnect by itself: open a new one, with the
      // secrets read again. skip, unsure and high are kept.
      try {
        connect();
      } catch (const std::exception& e) {
        return Delivery::retry(std::string("connecting to NATS again: ") + e.what());
      }
      spdlog::info("{}: connected to {} again", name, display);
    }
    if (natsConnection_Status(nc) != NATS_CONN_STATUS_CONNECTED)
      return Delivery::retry("not connected to NATS (reconnecting to " + display + ")");
    if (auto d = recheck_unsure(batch)) return std::move(*d);
    attempt_start = std::chrono::steady_clock::now();
    const int64_t max_payload = natsConnection_GetMaxPayload(nc);

    // Build every message first: one too large for the server rejects the
    // batch before anything is sent (the dispatcher splits it to find it).
    std::vector<std::string> hits;
    outs.reserve(batch.size());
    for (const Record& r : batch) {
      std::string key = header_value(r.key);
      if (skip.count(key)) {
        hits.push_back(std::move(key));
        continue;
      }
      buffer.clear();
      if (o.ndjson) {
        append_ndjson(buffer, r);
        buffer.pop_back();  // the newline: a message is one object
      } else {
        buffer.append(r.line);
      }
      std::string offset = std::to_string(r.offset);
      std::string host = header_value(r.host), source = header_value(r.source),
                  path = header_value(r.path);
      // HPUB counts the header block ("NATS/1.0\r\n", "Name: value\r\n"
      // each, "\r\n") and the body against max_payload.
      int64_t size = static_cast<int64_t>(buffer.size() + 12 + 6 * 24 + key.size() + host.size() +
                                          source.size() + path.size() + offset.size() +
                                          o.stream.size());
      if (size > max_payload)
        return Delivery::reject("the message (" + std::to_string(size) +
                                " bytes with headers) is larger than the server's max_payload (" +
                                std::to_string(max_payload) + " bytes)");
      std::string subject = nats::subject_for(o.subject, r.host, r.source);
      natsMsg* msg = nullptr;
      natsStatus s = natsMsg_Create(&msg, subject.c_str(), nullptr, buffer.data(),
                                    static_cast<int>(buffer.size()));
      if (s != NATS_OK) return Delivery::retry("cannot build a message: " + status_text(s));
      outs.push_back({std::move(key), msg});
      for (auto [k, v] : {std::pair{kMsgId, outs.back().key.c_str()},
                          std::pair{"Tailbox-Host", host.c_str()},
                          std::pair{"Tailbox-Source", source.c_str()},
                          std::pair{"Tailbox-Path", path.c_str()},
                          std::pair{"Tailbox-Offset", offset.c_str()}})
        if (s == NATS_OK) s = natsMsgHeader_Set(msg, k, v);
      if (s != NATS_OK) return Delivery::retry("cannot build a message: " + status_text(s));
    }
    if (buffer.capacity() > (4u << 20)) std::string().swap(buffer);

    std::string error;
    if (!outs.empty()) {
      uint64_t disconnects_before = 0;
      {
        std::lock_guard lock(mu);
        waiting.clear();
        for (const auto& out : outs) waiting.emplace(out.key, 0);
        outstanding = outs.size();
        failure.clear();
        too_large = false;
        disconnects_before = disconnects.load();
      }
      jsPubOptions po;
      jsPubOptions_Init(&po);
      po.ExpectStream = o.stream.c_str();  // a subject caught by another stream is an error
      const auto deadline = std::chrono::steady_clock::now() + o.timeout;
      for (auto& out : outs) {
        natsStatus s = js_PublishMsgAsync(js, &out.msg, &po);
        if (s == NATS_MAX_PAYLOAD) {
          end_attempt(outs, sent);
          return Delivery::reject("the message is larger than the server's max_payload");
        }
        if (s != NATS_OK) {
          error = "publish: " + status_text(s);
          break;
        }
        ++sent;
      }
      bool refused = false;
      if (error.empty()) {
        std::unique_lock lock(mu);
        bool done = cv.wait_until(lock, deadline, [&] {
          return outstanding == 0 || !failure.empty() || disconnects.load() != disconnects_before ||
                 closed;
        });
        if (!failure.empty()) {
          error = failure;
          refused = too_large;
        } else if (outstanding > 0) {
          error = done ? "disconnected from NATS while waiting for PubAcks"
                       : "no PubAck for " + std::to_string(outstanding) + " of " +
                             std::to_string(sent) + " messages within " +
                             std::to_string(o.timeout.count()) + " ms";
        }
      }
      if (!error.empty()) {
        end_attempt(outs, sent);
        return refused ? Delivery::reject(error) : Delivery::retry(error);
      }
      std::lock_guard lock(mu);
      for (const auto& [key, seq] : waiting) high = std::max(high, seq);
      for (const auto& out : outs) unsure.erase(out.key);
      waiting.clear();
    }
    std::string before = state();
    for (const auto& key : hits) {
      auto it = skip.find(key);
      high = std::max(high, it->second);
      skip.erase(it);
      unsure.erase(key);
    }
    std::string now = state();
    if (outs.empty() && now == before) return Delivery::delivered();
    return Delivery::delivered(now);
  }
};

NatsSink::NatsSink(config::Settings& settings, std::string host_id, asio::any_io_executor)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.o = nats::parse_options(settings);
  m.host_id = std::move(host_id);
  m.host_prefix = m.host_id + "/";
  m.name = "nats:" + m.o.stream;
  m.display = nats::display_url(m.o.url);
}

NatsSink::~NatsSink() = default;

const std::string& NatsSink::name() const { return impl_->name; }

std::string NatsSink::guarantee() const {
  return "exactly-once: Nats-Msg-Id dedup inside the stream's duplicate window; beyond it the "
         "stream is read back from the last acknowledged sequence at start";
}

void NatsSink::set_outbox_lookup(KeysInOutbox lookup) { impl_->in_outbox = std::move(lookup); }

std::optional<std::string> NatsSink::open(const std::optional<std::string>& committed_state) {
  return impl_->open(committed_state);
}

asio::awaitable<Delivery> NatsSink::deliver(std::span<const Record> batch) {
  Impl* m = impl_.get();
  auto work = [m, batch] { return m->publish(batch); };
  co_return co_await run_blocking(m->pool, work);
}

}  // namespace tailbox::sinks
