#include "sinks/nats/connection.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>

#include "core/secret.hpp"

namespace tailbox::sinks::nats {

using std::chrono::milliseconds;

std::string status_text(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  const char* detail = nats_GetLastError(nullptr);
  if (detail && *detail && text.find(detail) == std::string::npos) text += std::string(": ") + detail;
  return text;
}

namespace {

void check(natsStatus s, const std::string& what) {
  if (s != NATS_OK) throw std::runtime_error(what + ": " + status_text(s));
}

// The secret from `file` or `env` (core/secret.hpp), or "" when neither is set.
std::string optional_secret(const char* what, const std::string& file, const std::string& env) {
  return file.empty() && env.empty() ? std::string() : read_secret(what, file, env);
}

}  // namespace

// libnats runs its callbacks on its own threads, and may still run one after
// natsConnection_Destroy() (the closed callback is queued), so the closure is
// not the Connection but a number that close() retires: under live()'s mutex
// a callback either finds its Connection alive or does nothing, and close()
// cannot retire the number while a callback uses it.
struct Connection::Live {
  std::mutex mu;
  std::unordered_map<uintptr_t, Connection*> connections;
  uintptr_t next = 1;
};

Connection::Live& Connection::live() {
  static Live* l = new Live;  // never destroyed: callbacks may run at exit
  return *l;
}

template <typename F>
void Connection::with_connection(void* closure, F&& f) {
  Live& l = live();
  std::lock_guard lock(l.mu);
  auto it = l.connections.find(reinterpret_cast<uintptr_t>(closure));
  if (it != l.connections.end()) f(*it->second);
}

Connection::Connection(const Options& o, std::string host_id, std::string name, std::string display)
    : o_(o), host_id_(std::move(host_id)), name_(std::move(name)), display_(std::move(display)) {}

Connection::~Connection() { close(); }

void Connection::close() {
  if (nc_) {
    closing_ = true;
    natsConnection_Close(nc_.get());  // queues the closed callback (once per connection)
    // Let the callbacks queued before it (disconnected, errors) run while
    // this Connection is still theirs; bounded: a stuck callback thread must not
    // hold up a shutdown (later callbacks then find nothing).
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::min<milliseconds>(o_.timeout, milliseconds(2000)),
                [&] { return closed_; });
  }
  if (conn_id_) {
    Live& l = live();
    std::lock_guard lock(l.mu);
    l.connections.erase(conn_id_);
    conn_id_ = 0;
  }
  js_.reset();
  nc_.reset();
  opts_.reset();
}

void Connection::connect() {
  close();
  {
    Live& l = live();
    std::lock_guard lock(l.mu);
    conn_id_ = l.next++;
    l.connections.emplace(conn_id_, this);
  }
  {
    std::lock_guard lock(mu_);
    closed_ = false;
  }
  closing_ = false;
  void* closure = reinterpret_cast<void*>(conn_id_);
  std::string password = optional_secret("password", o_.password_file, o_.password_env);
  std::string token = optional_secret("token", o_.token_file, o_.token_env);
  {
    natsOptions* raw = nullptr;
    check(natsOptions_Create(&raw), "natsOptions_Create");
    opts_.reset(raw);
  }
  std::vector<std::string> servers = nats::server_list(o_.url);
  std::vector<const char*> server_ptrs;
  for (const auto& server : servers) server_ptrs.push_back(server.c_str());
  check(natsOptions_SetServers(opts_.get(), server_ptrs.data(), static_cast<int>(server_ptrs.size())),
        "url " + display_);
  check(natsOptions_SetName(opts_.get(), ("tailbox " + host_id_).c_str()), "name");
  check(natsOptions_SetTimeout(opts_.get(), std::min<int64_t>(o_.timeout.count(), 5000)), "timeout");
  check(natsOptions_SetMaxReconnect(opts_.get(), -1), "max reconnect");
  check(natsOptions_SetReconnectWait(opts_.get(), 500), "reconnect wait");
  check(natsOptions_SetDisconnectedCB(opts_.get(), on_disconnected, closure), "callbacks");
  check(natsOptions_SetReconnectedCB(opts_.get(), on_reconnected, closure), "callbacks");
  check(natsOptions_SetClosedCB(opts_.get(), on_closed, closure), "callbacks");
  check(natsOptions_SetErrorHandler(opts_.get(), on_error, closure), "callbacks");
  if (!o_.user.empty()) check(natsOptions_SetUserInfo(opts_.get(), o_.user.c_str(), password.c_str()), "user");
  if (!token.empty()) check(natsOptions_SetToken(opts_.get(), token.c_str()), "token");
  std::fill(password.begin(), password.end(), '\0');
  std::fill(token.begin(), token.end(), '\0');
  if (!o_.credentials_file.empty())
    check(natsOptions_SetUserCredentialsFromFiles(opts_.get(), o_.credentials_file.c_str(), nullptr),
          "credentials_file " + o_.credentials_file);
  bool tls = !o_.tls_ca_file.empty() || !o_.tls_cert_file.empty() ||
             o_.url.find("tls://") != std::string::npos;
  if (tls) check(natsOptions_SetSecure(opts_.get(), true), "tls");
  if (!o_.tls_ca_file.empty())
    check(natsOptions_LoadCATrustedCertificates(opts_.get(), o_.tls_ca_file.c_str()),
          "tls_ca_file " + o_.tls_ca_file);
  if (!o_.tls_cert_file.empty())
    check(natsOptions_LoadCertificatesChain(opts_.get(), o_.tls_cert_file.c_str(), o_.tls_key_file.c_str()),
          "tls_cert_file/tls_key_file");

  natsConnection* raw_nc = nullptr;
  natsStatus s = natsConnection_Connect(&raw_nc, opts_.get());
  if (s != NATS_OK)  // libnats hands out no connection then
    throw std::runtime_error("cannot connect to " + display_ + ": " + status_text(s));
  nc_.reset(raw_nc);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = o_.timeout.count();
  jo.PublishAsync.AckHandler = on_ack;
  jo.PublishAsync.AckHandlerClosure = closure;
  jsCtx* raw_js = nullptr;
  check(natsConnection_JetStream(&raw_js, nc_.get(), &jo), "JetStream context");
  js_.reset(raw_js);
}

bool Connection::usable() const { return nc_ && js_ && !natsConnection_IsClosed(nc_.get()); }

bool Connection::connected() const {
  return nc_ && natsConnection_Status(nc_.get()) == NATS_CONN_STATUS_CONNECTED;
}

int64_t Connection::max_payload() const { return natsConnection_GetMaxPayload(nc_.get()); }

void Connection::on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  with_connection(closure, [&](Connection& m) {
    const char* id = nullptr;
    if (natsMsgHeader_Get(msg, kMsgId, &id) == NATS_OK && id) {
      std::lock_guard lock(m.mu_);
      auto it = m.waiting_.find(id);
      // Not found or answered already: an ack of an attempt given up on, or
      // of the first copy of a retried message.
      if (it != m.waiting_.end() && it->second == 0) {
        if (pa) {
          it->second = std::max<uint64_t>(pa->Sequence, 1);
          --m.outstanding_;
        } else if (pae) {
          it->second = kRefused;
          if (m.failure_.empty()) {
            m.failure_err_ = pae->ErrCode;
            m.failure_ = pae->ErrText && *pae->ErrText ? pae->ErrText : status_text(pae->Err);
          }
        }
      }
    }
    m.cv_.notify_all();
  });
  natsMsg_Destroy(msg);
}

void Connection::on_disconnected(natsConnection* nc, void* closure) {
  with_connection(closure, [&](Connection& m) {
    {
      std::lock_guard lock(m.mu_);
      ++m.disconnects_;
    }
    m.cv_.notify_all();
    if (!m.closing_.load() && !natsConnection_IsClosed(nc))
      spdlog::warn("{}: disconnected from NATS; reconnecting", m.name_);
  });
}
void Connection::on_closed(natsConnection* nc, void* closure) {
  with_connection(closure, [&](Connection& m) {
    {
      std::lock_guard lock(m.mu_);
      m.closed_ = true;
      ++m.disconnects_;  // a delivery waiting for PubAcks gives up now
    }
    m.cv_.notify_all();
    if (!m.closing_.load()) {
      const char* text = nullptr;
      natsStatus s = natsConnection_GetLastError(nc, &text);
      spdlog::warn("{}: libnats closed the connection to NATS ({}); the next delivery connects "
                   "again", m.name_, text && *text ? text : natsStatus_GetText(s));
    }
  });
}
void Connection::on_reconnected(natsConnection* nc, void* closure) {
  with_connection(closure, [&](Connection& m) {
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    spdlog::info("{}: reconnected to {}", m.name_, nats::display_url(url));
  });
}
void Connection::on_error(natsConnection*, natsSubscription*, natsStatus err, void* closure) {
  with_connection(closure, [&](Connection& m) {
    spdlog::warn("{}: NATS: {}", m.name_, natsStatus_GetText(err));
  });
}

void Connection::begin_batch(const std::vector<std::string>& keys) {
  std::lock_guard lock(mu_);
  waiting_.clear();
  for (const auto& key : keys) waiting_.emplace(key, 0);
  outstanding_ = keys.size();
  failure_.clear();
  failure_err_ = static_cast<jsErrCode>(0);
  disconnects_before_ = disconnects_.load();
}

std::optional<Failure> Connection::wait_batch(std::chrono::steady_clock::time_point deadline,
                                              size_t sent) {
  std::unique_lock lock(mu_);
  bool done = cv_.wait_until(lock, deadline, [&] {
    return outstanding_ == 0 || !failure_.empty() || disconnects_.load() != disconnects_before_ ||
           closed_;
  });
  if (!failure_.empty()) return Failure{Failure::Kind::pub_ack, NATS_OK, failure_err_, 0, 0, failure_};
  if (outstanding_ > 0)
    return Failure{Failure::Kind::no_ack, NATS_OK, {}, 0, 0,
                   done ? "disconnected from NATS while waiting for PubAcks"
                        : "no PubAck for " + std::to_string(outstanding_) + " of " +
                              std::to_string(sent) + " messages within " +
                              std::to_string(o_.timeout.count()) + " ms"};
  return std::nullopt;
}

std::unordered_map<std::string, uint64_t> Connection::end_batch(bool give_up) {
  if (give_up) {
    natsMsgList pending{};
    if (js_ && js_PublishAsyncGetPendingList(&pending, js_.get()) == NATS_OK) natsMsgList_Destroy(&pending);
  }
  std::lock_guard lock(mu_);
  std::unordered_map<std::string, uint64_t> answers;
  answers.swap(waiting_);
  outstanding_ = 0;
  failure_.clear();
  failure_err_ = static_cast<jsErrCode>(0);
  return answers;
}

// The stream's info; creates the stream when asked (and `create`). The caller
// destroys it.
jsStreamInfo* Connection::stream_info(bool create) {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, js_.get(), o_.stream.c_str(), nullptr, &jerr);
  if (s == NATS_OK) return si;
  if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
    throw std::runtime_error("cannot read stream " + o_.stream + ": " + status_text(s));
  if (!o_.create_stream || !create)
    throw std::runtime_error("stream " + o_.stream +
                             " does not exist (create it, or set create_stream = true)");
  std::vector<const char*> subjects;
  for (const auto& subject : o_.stream_subjects) subjects.push_back(subject.c_str());
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  sc.Name = o_.stream.c_str();
  sc.Subjects = subjects.data();
  sc.SubjectsLen = static_cast<int>(subjects.size());
  sc.Storage = js_FileStorage;
  sc.Replicas = o_.replicas;
  sc.Duplicates = static_cast<int64_t>(o_.duplicate_window.count()) * 1'000'000;
  jerr = static_cast<jsErrCode>(0);
  s = js_AddStream(&si, js_.get(), &sc, nullptr, &jerr);
  if (s == NATS_OK) {
    std::string list;
    for (const auto& subject : o_.stream_subjects) list += (list.empty() ? "" : " ") + subject;
    spdlog::info("{}: created stream {} (subjects {}, duplicate window {} ms, {} replicas)", name_,
                 o_.stream, list, o_.duplicate_window.count(), o_.replicas);
    return si;
  }
  if (jerr == JSStreamNameExistErr) {  // created meanwhile by someone else
    check(js_GetStreamInfo(&si, js_.get(), o_.stream.c_str(), nullptr, &jerr), "stream " + o_.stream);
    return si;
  }
  throw std::runtime_error("cannot create stream " + o_.stream + ": " + status_text(s));
}

Connection::StreamState Connection::stream_state(bool create) {
  jsStreamInfo* si = stream_info(create);
  StreamState st{si->State.FirstSeq, si->State.LastSeq,
                 milliseconds(si->Config ? si->Config->Duplicates / 1'000'000 : 0)};
  jsStreamInfo_Destroy(si);
  return st;
}

uint64_t Connection::read_back(uint64_t after, uint64_t last, const std::string& filter,
                               const std::string& key_prefix, const Found& on_found) {
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = o_.stream.c_str();
  so.Ordered = true;
  so.Config.DeliverPolicy = js_DeliverByStartSequence;
  so.Config.OptStartSeq = after + 1;
  so.Config.HeadersOnly = true;
  natsSubscription* sub = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  const std::string what =
      "reading stream " + o_.stream + " back after sequence " + std::to_string(after);
  check(js_SubscribeSync(&sub, js_.get(), filter.c_str(), nullptr, &so, &jerr),
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
  uint64_t seen = 0;
  std::vector<std::pair<std::string, uint64_t>> found;
  while (more) {
    natsMsg* msg = nullptr;
    check(natsSubscription_NextMsg(&msg, sub, o_.timeout.count()), what);
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
      ++seen;
      const char* id = nullptr;
      if (natsMsgHeader_Get(msg, kMsgId, &id) == NATS_OK && id &&
          std::string_view(id).starts_with(key_prefix))
        found.emplace_back(id, seq);
    }
    natsMsg_Destroy(msg);
    if (found.size() >= 4096) on_found(found);
  }
  if (!found.empty()) on_found(found);
  return seen;
}

}  // namespace tailbox::sinks::nats
