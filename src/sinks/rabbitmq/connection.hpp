// Connection: one AMQP 0-9-1 connection to RabbitMQ through rabbitmq-c, with
// channel 1 in publisher-confirm mode (confirm.select) and channel 2 for
// reading a stream back. The library's handles live and die here; the sink
// holds no rabbitmq-c type.
//
// Every call blocks (rabbitmq-c has no asynchronous API) for at most the
// timeout given at construction; failures throw ConnectionError carrying a
// classify() Failure. After any throw the connection is broken(): the owner
// destroys it and opens a new one. rabbitmq-c answers heartbeats only inside
// its calls: a connection idle for longer than the heartbeat may have been
// closed by the broker (idle_for() tells the owner).
//
// Thread-safety: none; one thread at a time (the sink's own thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include "sinks/rabbitmq/classify.hpp"
#include "sinks/rabbitmq/options.hpp"

namespace tailbox::sinks::rabbitmq {

class ConnectionError : public std::runtime_error {
 public:
  explicit ConnectionError(Failure f) : std::runtime_error(f.text), failure(std::move(f)) {}
  Failure failure;
};

// One message to publish on channel 1.
struct OutMessage {
  std::string_view exchange, routing_key;
  std::string_view message_id;  // the idempotency key
  std::string_view body;
  std::string_view type;        // the `type` property, or empty
  // Headers (strings; offset as a long): tailbox-host, -source, -path, -offset.
  std::string_view host, source, path;
  int64_t offset = -1;          // < 0: no tailbox-* headers
};

// What the broker sent: a confirm, a return, a delivery of the read-back.
struct Event {
  enum class Type { timeout, ack, nack, returned, delivery };
  Type type = Type::timeout;
  uint64_t tag = 0;          // delivery tag (ack, nack, delivery)
  bool multiple = false;     // ack/nack: every tag up to `tag`
  std::string message_id;    // returned, delivery
  int code = 0;              // returned: reply code
  std::string text;          // returned: reply text
  int64_t stream_offset = -1;  // delivery: the x-stream-offset header
};

class Connection {
 public:
  // Connects (TCP or TLS), logs in, opens channel 1 in confirm mode.
  // `password` is used and forgotten. Throws ConnectionError.
  Connection(const Options& o, const std::string& password, const std::string& client_name);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // queue.declare on channel 1: durable with x-queue-type, or passive (the
  // queue must exist). A type mismatch is a ConnectionError (406).
  // Returns the broker's message count (for a stream: from its metrics, a
  // few seconds late; never more than the stream's next offset).
  uint64_t declare_queue(const std::string& queue, QueueType type, bool passive);
  // An exclusive, auto-delete queue of this connection: fails with code 405
  // (RESOURCE_LOCKED) while another connection holds it.
  void lock(const std::string& name);
  // basic.publish on channel 1; returns the message's delivery tag.
  uint64_t publish(const OutMessage& m, bool mandatory);
  // The next event, or Event::Type::timeout at `deadline`.
  Event next(std::chrono::steady_clock::time_point deadline);
  // Channel 2: basic.qos(prefetch) and basic.consume of `queue` from stream
  // offset `from`, or from "first" when `from` < 0 (manual acks: credit for
  // more, a stream keeps its messages). end_read() closes channel 2.
  void start_read(const std::string& queue, int64_t from, int prefetch);
  void ack_delivery(uint64_t tag);
  void end_read();

  bool broken() const { return broken_; }
  std::chrono::steady_clock::duration idle_for() const {
    return std::chrono::steady_clock::now() - last_used_;
  }

 private:
  [[noreturn]] void fail(Failure f);
  void check_reply(const char* what);  // amqp_get_rpc_reply
  struct Handles;
  std::unique_ptr<Handles> h_;
  std::chrono::milliseconds timeout_;
  uint64_t next_tag_ = 1;
  bool broken_ = false;
  bool reading_ = false;
  std::chrono::steady_clock::time_point last_used_;
};

}  // namespace tailbox::sinks::rabbitmq
