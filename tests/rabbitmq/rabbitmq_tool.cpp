// A small AMQP client for the rabbitmq sink's integration tests (rabbitmq-c;
// the tests are Python with the standard library only, which has no AMQP).
//
//   rabbitmq_tool PORT read QUEUE      every message of a stream (from offset 0
//                                      up to a marker it publishes) or of a
//                                      classic/quorum queue (basic.get, never
//                                      acked: the queue keeps them), one JSON
//                                      object per line
//   rabbitmq_tool PORT count QUEUE     the broker's message count
//   rabbitmq_tool PORT publish QUEUE MESSAGE_ID BODY
//                                      one persistent message through the
//                                      default exchange, confirmed (e.g. a
//                                      copy of a record: the same message_id)
//   rabbitmq_tool PORT bind QUEUE EXCHANGE KEY
//   rabbitmq_tool PORT delete QUEUE
//
// Logs in as guest/guest on 127.0.0.1. Exits 1 with a message on failure.
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <sys/time.h>

#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>

namespace {

amqp_connection_state_t conn;

[[noreturn]] void die(const std::string& why) {
  std::cerr << "rabbitmq_tool: " << why << "\n";
  std::exit(1);
}

std::string text(amqp_bytes_t b) { return std::string(static_cast<const char*>(b.bytes), b.len); }

void check(const char* what) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
  if (r.reply_type == AMQP_RESPONSE_NORMAL) return;
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
    die(std::string(what) + ": " + text(static_cast<amqp_channel_close_t*>(r.reply.decoded)->reply_text));
  die(std::string(what) + ": " + amqp_error_string2(r.library_error));
}

std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8 | (unsigned char)in[i + 2];
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += t[v & 63];
  }
  if (i + 1 == in.size()) {
    unsigned v = (unsigned char)in[i] << 16;
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8;
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

boost::json::object describe(const amqp_basic_properties_t& p, const std::string& body, int64_t* offset) {
  boost::json::object o;
  boost::json::object headers;
  if (p._flags & AMQP_BASIC_HEADERS_FLAG) {
    for (int i = 0; i < p.headers.num_entries; ++i) {
      const auto& e = p.headers.entries[i];
      std::string k = text(e.key);
      switch (e.value.kind) {
        case AMQP_FIELD_KIND_UTF8:
        case AMQP_FIELD_KIND_BYTES: headers[k] = text(e.value.value.bytes); break;
        case AMQP_FIELD_KIND_I64: headers[k] = e.value.value.i64; break;
        case AMQP_FIELD_KIND_U64: headers[k] = e.value.value.u64; break;
        case AMQP_FIELD_KIND_I32: headers[k] = e.value.value.i32; break;
        default: headers[k] = "?";
      }
      if (k == "x-stream-offset" && offset && headers[k].is_int64()) *offset = headers[k].as_int64();
    }
  }
  o["headers"] = headers;
  o["id"] = (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? text(p.message_id) : "";
  o["type"] = (p._flags & AMQP_BASIC_TYPE_FLAG) ? text(p.type) : "";
  o["delivery_mode"] = (p._flags & AMQP_BASIC_DELIVERY_MODE_FLAG) ? p.delivery_mode : 0;
  o["body_b64"] = base64(body);
  return o;
}

void read_stream(const std::string& queue) {
  char marker[64];
  std::random_device rd;
  snprintf(marker, sizeof marker, "test-marker/%08x%08x", rd(), rd());
  amqp_confirm_select(conn, 1);
  check("confirm.select");
  amqp_basic_properties_t p{};
  p._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG;
  p.message_id = amqp_cstring_bytes(marker);
  p.type = amqp_cstring_bytes("tailbox.test-marker");
  if (amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue.c_str()), 1, 0, &p,
                         amqp_empty_bytes) != AMQP_STATUS_OK)
    die("publish marker");
  for (;;) {
    amqp_frame_t f;
    timeval tv{30, 0};
    if (amqp_simple_wait_frame_noblock(conn, &f, &tv) != AMQP_STATUS_OK) die("marker confirm");
    if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_ACK_METHOD) break;
    if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id != AMQP_BASIC_ACK_METHOD)
      die(std::string("marker: ") + amqp_method_name(f.payload.method.id));
  }
  amqp_basic_qos(conn, 1, 0, 2000, 0);
  check("basic.qos");
  amqp_table_entry_t e{};
  e.key = amqp_cstring_bytes("x-stream-offset");
  e.value.kind = AMQP_FIELD_KIND_UTF8;
  e.value.value.bytes = amqp_cstring_bytes("first");
  amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue.c_str()), amqp_empty_bytes, 0, 0, 0,
                     amqp_table_t{1, &e});
  check("basic.consume");
  for (int n = 0;; ++n) {
    amqp_maybe_release_buffers(conn);
    amqp_envelope_t env;
    timeval tv{30, 0};
    amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) die("consume: nothing within 30 s before the marker");
    int64_t offset = -1;
    std::string body = text(env.message.body);
    boost::json::object o = describe(env.message.properties, body, &offset);
    o["offset"] = offset;
    bool done = o["id"].as_string() == marker;
    if (n % 500 == 0 || done) amqp_basic_ack(conn, 1, env.delivery_tag, 1);
    amqp_destroy_envelope(&env);
    if (done) break;
    std::cout << boost::json::serialize(o) << "\n";
  }
}

void read_queue(const std::string& queue) {
  for (;;) {
    amqp_maybe_release_buffers(conn);
    amqp_rpc_reply_t r = amqp_basic_get(conn, 1, amqp_cstring_bytes(queue.c_str()), 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) die("basic.get");
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) return;
    amqp_message_t msg;
    r = amqp_read_message(conn, 1, &msg, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) die("read message");
    boost::json::object o = describe(msg.properties, text(msg.body), nullptr);
    std::cout << boost::json::serialize(o) << "\n";
    amqp_destroy_message(&msg);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) die("usage: rabbitmq_tool PORT read|count|publish|bind|delete QUEUE [EXCHANGE KEY | MESSAGE_ID BODY]");
  const std::string cmd = argv[2], queue = argv[3];
  conn = amqp_new_connection();
  amqp_socket_t* sock = amqp_tcp_socket_new(conn);
  if (amqp_socket_open(sock, "127.0.0.1", std::atoi(argv[1])) != AMQP_STATUS_OK) die("cannot connect");
  amqp_rpc_reply_t r = amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest");
  if (r.reply_type != AMQP_RESPONSE_NORMAL) die("login");
  amqp_channel_open(conn, 1);
  check("channel.open");
  if (cmd == "count") {
    amqp_queue_declare_ok_t* ok = amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue.c_str()), 1, 0, 0, 0, amqp_empty_table);
    check("queue.declare");
    std::cout << ok->message_count << "\n";
  } else if (cmd == "read") {
    bool stream = argc > 4 && std::string(argv[4]) == "stream";
    stream ? read_stream(queue) : read_queue(queue);
  } else if (cmd == "bind" && argc == 6) {
    amqp_queue_bind(conn, 1, amqp_cstring_bytes(queue.c_str()), amqp_cstring_bytes(argv[4]),
                    amqp_cstring_bytes(argv[5]), amqp_empty_table);
    check("queue.bind");
  } else if (cmd == "publish" && argc == 6) {
    amqp_confirm_select(conn, 1);
    check("confirm.select");
    amqp_basic_properties_t p{};
    p._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.message_id = amqp_cstring_bytes(argv[4]);
    p.delivery_mode = 2;
    if (amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue.c_str()), 1, 0, &p,
                           amqp_cstring_bytes(argv[5])) != AMQP_STATUS_OK)
      die("basic.publish");
    for (;;) {
      amqp_frame_t f;
      timeval tv{30, 0};
      if (amqp_simple_wait_frame_noblock(conn, &f, &tv) != AMQP_STATUS_OK) die("no confirm");
      if (f.frame_type != AMQP_FRAME_METHOD) continue;
      if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) break;
      die(std::string("publish: ") + amqp_method_name(f.payload.method.id));
    }
  } else if (cmd == "delete") {
    amqp_queue_delete(conn, 1, amqp_cstring_bytes(queue.c_str()), 0, 0);
    check("queue.delete");
  } else {
    die("unknown command " + cmd);
  }
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
  return 0;
}
