#include "sinks/rabbitmq/connection.hpp"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <sys/time.h>

#include <algorithm>

namespace tailbox::sinks::rabbitmq {

namespace {

using std::chrono::steady_clock;

amqp_bytes_t bytes(std::string_view s) {
  return amqp_bytes_t{s.size(), const_cast<char*>(s.data())};
}

std::string text(amqp_bytes_t b) {
  return std::string(static_cast<const char*>(b.bytes), b.len);
}

timeval to_timeval(std::chrono::microseconds us) {
  if (us.count() < 0) us = std::chrono::microseconds(0);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(us.count() / 1'000'000);
  tv.tv_usec = static_cast<suseconds_t>(us.count() % 1'000'000);
  return tv;
}

amqp_table_entry_t utf8_entry(const char* key, std::string_view value) {
  amqp_table_entry_t e{};
  e.key = amqp_cstring_bytes(key);
  e.value.kind = AMQP_FIELD_KIND_UTF8;
  e.value.value.bytes = bytes(value);
  return e;
}

amqp_table_entry_t long_entry(const char* key, int64_t value) {
  amqp_table_entry_t e{};
  e.key = amqp_cstring_bytes(key);
  e.value.kind = AMQP_FIELD_KIND_I64;
  e.value.value.i64 = value;
  return e;
}

std::string message_id(const amqp_basic_properties_t& p) {
  return (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? text(p.message_id) : std::string();
}

int64_t stream_offset(const amqp_basic_properties_t& p) {
  if (!(p._flags & AMQP_BASIC_HEADERS_FLAG)) return -1;
  for (int i = 0; i < p.headers.num_entries; ++i) {
    const amqp_table_entry_t& e = p.headers.entries[i];
    if (text(e.key) != "x-stream-offset") continue;
    switch (e.value.kind) {
      case AMQP_FIELD_KIND_I64: return e.value.value.i64;
      case AMQP_FIELD_KIND_U64: return static_cast<int64_t>(e.value.value.u64);
      case AMQP_FIELD_KIND_I32: return e.value.value.i32;
      case AMQP_FIELD_KIND_U32: return e.value.value.u32;
      default: return -1;
    }
  }
  return -1;
}

// The Failure an rpc reply describes (reply_type is not NORMAL).
Failure failure_of(const amqp_rpc_reply_t& r, const char* what) {
  Failure f;
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
    f.kind = r.library_error == AMQP_STATUS_TIMEOUT ? Failure::Kind::timeout : Failure::Kind::library;
    f.text = std::string(what) + ": " + amqp_error_string2(r.library_error);
  } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION) {
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
      auto* c = static_cast<amqp_channel_close_t*>(r.reply.decoded);
      f.kind = Failure::Kind::channel_close;
      f.code = c->reply_code;
      f.text = std::string(what) + ": " + text(c->reply_text);
    } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
      auto* c = static_cast<amqp_connection_close_t*>(r.reply.decoded);
      f.kind = Failure::Kind::connection_close;
      f.code = c->reply_code;
      f.text = std::string(what) + ": " + text(c->reply_text);
    } else {
      f.text = std::string(what) + ": unexpected method " + amqp_method_name(r.reply.id);
    }
  } else {
    f.text = std::string(what) + ": no reply";
  }
  return f;
}

}  // namespace

struct Connection::Handles {
  amqp_connection_state_t conn = nullptr;
  ~Handles() {
    if (conn) amqp_destroy_connection(conn);  // closes the socket
  }
};

void Connection::fail(Failure f) {
  broken_ = true;
  throw ConnectionError(std::move(f));
}

void Connection::check_reply(const char* what) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(h_->conn);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) fail(failure_of(r, what));
}

Connection::Connection(const Options& o, const std::string& password, const std::string& client_name)
    : h_(std::make_unique<Handles>()), timeout_(o.timeout), last_used_(steady_clock::now()) {
  h_->conn = amqp_new_connection();
  if (!h_->conn) fail({Failure::Kind::library, 0, "amqp_new_connection failed"});
  const std::string where = o.host + ":" + std::to_string(o.port);
  amqp_socket_t* sock = nullptr;
  if (o.tls) {
    sock = amqp_ssl_socket_new(h_->conn);
    if (!sock) fail({Failure::Kind::library, 0, "cannot create a TLS socket"});
    amqp_ssl_socket_set_verify_peer(sock, o.tls_verify);
    amqp_ssl_socket_set_verify_hostname(sock, o.tls_verify);
    if (!o.tls_ca_file.empty()) {
      int rc = amqp_ssl_socket_set_cacert(sock, o.tls_ca_file.c_str());
      if (rc != AMQP_STATUS_OK)
        fail({Failure::Kind::library, 0, "tls_ca_file " + o.tls_ca_file + ": " + amqp_error_string2(rc)});
    }
    if (!o.tls_cert_file.empty()) {
      int rc = amqp_ssl_socket_set_key(sock, o.tls_cert_file.c_str(), o.tls_key_file.c_str());
      if (rc != AMQP_STATUS_OK)
        fail({Failure::Kind::library, 0, "tls_cert_file/tls_key_file: " + std::string(amqp_error_string2(rc))});
    }
  } else {
    sock = amqp_tcp_socket_new(h_->conn);
    if (!sock) fail({Failure::Kind::library, 0, "cannot create a socket"});
  }
  timeval tv = to_timeval(timeout_);
  int rc = amqp_socket_open_noblock(sock, o.host.c_str(), o.port, &tv);
  if (rc != AMQP_STATUS_OK)
    fail({rc == AMQP_STATUS_TIMEOUT ? Failure::Kind::timeout : Failure::Kind::library, 0,
          "cannot connect to " + where + ": " + amqp_error_string2(rc)});
  amqp_set_handshake_timeout(h_->conn, &tv);
  amqp_set_rpc_timeout(h_->conn, &tv);
  amqp_table_entry_t props[] = {utf8_entry("connection_name", client_name),
                                utf8_entry("product", "tailbox")};
  amqp_table_t client_props{2, props};
  const int heartbeat = static_cast<int>((o.heartbeat.count() + 999) / 1000);
  amqp_rpc_reply_t r = amqp_login_with_properties(
      h_->conn, o.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE, heartbeat, &client_props,
      AMQP_SASL_METHOD_PLAIN, o.user.c_str(), password.c_str());
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    Failure f = failure_of(r, "login");
    f.text = "cannot log in to " + where + " vhost " + o.vhost + " as " + o.user + ": " + f.text;
    fail(std::move(f));
  }
  amqp_channel_open(h_->conn, 1);
  check_reply("channel.open");
  amqp_confirm_select(h_->conn, 1);
  check_reply("confirm.select");
}

Connection::~Connection() {
  if (!broken_ && h_->conn) {
    // A clean close: the broker has handled everything this connection sent
    // once connection.close-ok arrives (bounded by the rpc timeout).
    amqp_connection_close(h_->conn, AMQP_REPLY_SUCCESS);
  }
}

uint64_t Connection::declare_queue(const std::string& queue, QueueType type, bool passive) {
  last_used_ = steady_clock::now();
  amqp_table_entry_t args[] = {utf8_entry("x-queue-type", queue_type_name(type))};
  amqp_table_t table = passive ? amqp_empty_table : amqp_table_t{1, args};
  amqp_queue_declare_ok_t* ok = amqp_queue_declare(h_->conn, 1, bytes(queue), passive, 1, 0, 0, table);
  check_reply(passive ? "queue.declare (passive)" : "queue.declare");
  return ok ? ok->message_count : 0;
}

void Connection::lock(const std::string& name) {
  last_used_ = steady_clock::now();
  amqp_queue_declare(h_->conn, 1, bytes(name), 0, 0, 1, 1, amqp_empty_table);
  check_reply("queue.declare (exclusive lock queue)");
}

uint64_t Connection::publish(const OutMessage& m, bool mandatory) {
  last_used_ = steady_clock::now();
  amqp_basic_properties_t p{};
  p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
  p.delivery_mode = 2;  // persistent
  p.message_id = bytes(m.message_id);
  if (!m.type.empty()) {
    p._flags |= AMQP_BASIC_TYPE_FLAG;
    p.type = bytes(m.type);
  }
  amqp_table_entry_t headers[] = {utf8_entry("tailbox-host", m.host),
                                  utf8_entry("tailbox-source", m.source),
                                  utf8_entry("tailbox-path", m.path),
                                  long_entry("tailbox-offset", m.offset)};
  if (m.offset >= 0) {
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    p.headers = amqp_table_t{4, headers};
  }
  int rc = amqp_basic_publish(h_->conn, 1, bytes(m.exchange), bytes(m.routing_key), mandatory, 0,
                              &p, bytes(m.body));
  if (rc != AMQP_STATUS_OK)
    fail({Failure::Kind::library, 0, std::string("basic.publish: ") + amqp_error_string2(rc)});
  return next_tag_++;
}

Event Connection::next(steady_clock::time_point deadline) {
  last_used_ = steady_clock::now();
  amqp_maybe_release_buffers(h_->conn);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - steady_clock::now());
    timeval tv = to_timeval(left);
    amqp_frame_t frame{};
    int rc = amqp_simple_wait_frame_noblock(h_->conn, &frame, &tv);
    if (rc == AMQP_STATUS_TIMEOUT) return Event{};
    if (rc != AMQP_STATUS_OK)
      fail({Failure::Kind::library, 0, std::string("connection lost: ") + amqp_error_string2(rc)});
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    void* decoded = frame.payload.method.decoded;
    switch (frame.payload.method.id) {
      case AMQP_BASIC_ACK_METHOD: {
        auto* a = static_cast<amqp_basic_ack_t*>(decoded);
        Event e;
        e.type = Event::Type::ack;
        e.tag = a->delivery_tag;
        e.multiple = a->multiple;
        return e;
      }
      case AMQP_BASIC_NACK_METHOD: {
        auto* a = static_cast<amqp_basic_nack_t*>(decoded);
        Event e;
        e.type = Event::Type::nack;
        e.tag = a->delivery_tag;
        e.multiple = a->multiple;
        return e;
      }
      case AMQP_BASIC_RETURN_METHOD:
      case AMQP_BASIC_DELIVER_METHOD: {
        Event e;
        if (frame.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
          auto* r = static_cast<amqp_basic_return_t*>(decoded);
          e.type = Event::Type::returned;
          e.code = r->reply_code;
          e.text = text(r->reply_text);
        } else {
          auto* d = static_cast<amqp_basic_deliver_t*>(decoded);
          e.type = Event::Type::delivery;
          e.tag = d->delivery_tag;
        }
        amqp_message_t msg{};
        amqp_rpc_reply_t r = amqp_read_message(h_->conn, frame.channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) fail(failure_of(r, "reading a message"));
        e.message_id = message_id(msg.properties);
        e.stream_offset = stream_offset(msg.properties);
        amqp_destroy_message(&msg);
        if (e.type == Event::Type::delivery && !reading_) continue;  // after end_read()
        return e;
      }
      case AMQP_CHANNEL_CLOSE_METHOD: {
        auto* c = static_cast<amqp_channel_close_t*>(decoded);
        fail({Failure::Kind::channel_close, c->reply_code,
              "channel " + std::to_string(frame.channel) + " closed by the broker: " +
                  text(c->reply_text)});
      }
      case AMQP_CONNECTION_CLOSE_METHOD: {
        auto* c = static_cast<amqp_connection_close_t*>(decoded);
        fail({Failure::Kind::connection_close, c->reply_code,
              "connection closed by the broker: " + text(c->reply_text)});
      }
      case AMQP_BASIC_CANCEL_METHOD:
        fail({Failure::Kind::library, 0, "the broker cancelled the read-back's consumer"});
      default:
        continue;
    }
  }
}

void Connection::start_read(const std::string& queue, int64_t from, int prefetch) {
  last_used_ = steady_clock::now();
  amqp_channel_open(h_->conn, 2);
  check_reply("channel.open (read-back)");
  amqp_basic_qos(h_->conn, 2, 0, static_cast<uint16_t>(std::clamp(prefetch, 1, 65535)), 0);
  check_reply("basic.qos (read-back)");
  amqp_table_entry_t args[] = {from < 0 ? utf8_entry("x-stream-offset", "first")
                                        : long_entry("x-stream-offset", from)};
  amqp_basic_consume(h_->conn, 2, bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_table_t{1, args});
  check_reply("basic.consume (read-back)");
  reading_ = true;
}

void Connection::ack_delivery(uint64_t tag) {
  int rc = amqp_basic_ack(h_->conn, 2, tag, 1);
  if (rc != AMQP_STATUS_OK)
    fail({Failure::Kind::library, 0, std::string("basic.ack (read-back): ") + amqp_error_string2(rc)});
}

void Connection::end_read() {
  reading_ = false;
  amqp_channel_close(h_->conn, 2, AMQP_REPLY_SUCCESS);
  check_reply("channel.close (read-back)");
}

}  // namespace tailbox::sinks::rabbitmq
