// Connection: the nats sink's libnats handles (options, connection, JetStream
// context), the callbacks libnats runs on its own threads, the batch of
// PubAcks in flight, and the stream administration the sink needs (stream
// info, creation, the read-back of our messages after a sequence).
//
// libnats reconnects by itself; a connection it closed for good is opened
// anew by connect(), with the secrets read again. Every blocking call is
// bounded by Options::timeout.
//
// Thread-safety: one thread (the sink's delivering thread) calls the
// methods; libnats' callbacks meet it under an internal mutex. They reach the
// Connection through a registry that close() retires, so a late callback
// never touches a destroyed one. Errors are std::runtime_error (connect,
// stream administration) or values (the batch in flight).
#pragma once

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sinks/nats/classify.hpp"
#include "sinks/nats/options.hpp"

namespace tailbox::sinks::nats {

inline constexpr const char* kMsgId = "Nats-Msg-Id";

// libnats' text for `s`, with its last error's detail when that adds to it.
std::string status_text(natsStatus s);

class Connection {
 public:
  // The answer for a message in flight the stream refused.
  static constexpr uint64_t kRefused = std::numeric_limits<uint64_t>::max();

  // `o` must outlive the Connection. No I/O.
  Connection(const Options& o, std::string host_id, std::string name, std::string display);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Closes any connection, reads the secrets, connects and opens the
  // JetStream context. Throws std::runtime_error.
  void connect();
  // Closes and destroys the handles; waits (bounded) for libnats' closed
  // callback. Never throws.
  void close();
  // Whether there is a connection libnats has not given up on.
  bool usable() const;
  bool connected() const;
  int64_t max_payload() const;
  jsCtx* js() const { return js_.get(); }

  // The batch in flight: every key waits for its PubAck.
  void begin_batch(const std::vector<std::string>& keys);
  // Waits until every key is answered, a negative PubAck, a disconnection or
  // `deadline`; nullopt when every key was acknowledged. `sent` of the keys
  // were published.
  std::optional<Failure> wait_batch(std::chrono::steady_clock::time_point deadline, size_t sent);
  // Ends the batch: late PubAcks are then ignored. Returns each key's answer
  // (0: none, a sequence, or kRefused). `give_up`: libnats forgets the
  // messages it still waits for.
  std::unordered_map<std::string, uint64_t> end_batch(bool give_up);

  struct StreamState {
    uint64_t first = 0, last = 0;
    std::chrono::milliseconds window{0};  // the stream's duplicate window
  };
  // The stream's first and last sequences and duplicate window; creates the
  // stream when Options::create_stream and `create`. Throws.
  StreamState stream_state(bool create);

  // Reads the stream's messages after `after` up to `last` on `filter`
  // (headers only). Messages whose Nats-Msg-Id starts with `key_prefix` are
  // handed to `found` as (key, sequence), a few thousand at a time (it
  // empties the vector). Returns how many messages were looked at. Throws.
  using Found = std::function<void(std::vector<std::pair<std::string, uint64_t>>&)>;
  uint64_t read_back(uint64_t after, uint64_t last, const std::string& filter,
                     const std::string& key_prefix, const Found& found);

 private:
  struct Live;
  static Live& live();
  template <typename F>
  static void with_connection(void* closure, F&& f);
  static void on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure);
  static void on_disconnected(natsConnection* nc, void* closure);
  static void on_closed(natsConnection* nc, void* closure);
  static void on_reconnected(natsConnection* nc, void* closure);
  static void on_error(natsConnection*, natsSubscription*, natsStatus err, void* closure);
  jsStreamInfo* stream_info(bool create);

  const Options& o_;
  const std::string host_id_, name_, display_;

  struct OptionsDeleter {
    void operator()(natsOptions* p) const { natsOptions_Destroy(p); }
  };
  struct ConnectionDeleter {
    void operator()(natsConnection* p) const { natsConnection_Destroy(p); }
  };
  struct ContextDeleter {
    void operator()(jsCtx* p) const { jsCtx_Destroy(p); }
  };
  // Destroyed in this order by close(): the context, the connection, the options.
  std::unique_ptr<natsOptions, OptionsDeleter> opts_;
  std::unique_ptr<natsConnection, ConnectionDeleter> nc_;
  std::unique_ptr<jsCtx, ContextDeleter> js_;
  uintptr_t conn_id_ = 0;  // the callbacks' closure for nc_ (see live())

  // The batch in flight, shared with libnats' callback threads under mu_.
  std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<std::string, uint64_t> waiting_;  // key -> 0, its sequence, or kRefused
  size_t outstanding_ = 0;
  std::string failure_;  // the first negative PubAck
  jsErrCode failure_err_ = static_cast<jsErrCode>(0);
  std::atomic<uint64_t> disconnects_{0};
  uint64_t disconnects_before_ = 0;  // at begin_batch()
  bool closed_ = false;              // the closed callback of conn_id_ ran
  std::atomic<bool> closing_{false};  // our own close(): not worth a warning
};

}  // namespace tailbox::sinks::nats
