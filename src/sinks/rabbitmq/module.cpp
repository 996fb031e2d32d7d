// The rabbitmq sink as a module (module.hpp): the sink and the audit's reader of a stream queue.
#include <boost/asio/any_io_executor.hpp>
#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/secret.hpp"
#include "sinks/module.hpp"
#include "sinks/rabbitmq/connection.hpp"
#include "sinks/rabbitmq/rabbitmq_sink.hpp"

namespace tailbox::sinks {
namespace {

// A RabbitMQ stream queue read from "first" without consuming (a stream keeps
// its messages; acks only grant credit), keyed by message_id. Where it ends:
// at or after the broker's message count (a lower bound, a few seconds late),
// once nothing more arrives for kQuiet. A queue configured as a stream that
// is not one: the broker refuses the x-stream-offset argument (406); should
// one accept it, its first delivery (no x-stream-offset) stops the read
// before anything is acknowledged, and closing the channel requeues it.
class RabbitStreamKeys : public CountedKeys {
 public:
  static constexpr std::chrono::milliseconds kQuiet{1000};
  static constexpr int kPrefetch = 1000;

  RabbitStreamKeys(rabbitmq::Options o, const std::string& host_id)
      : CountedKeys(host_id), o_(std::move(o)) {
    std::string password = read_secret("password", o_.password_file, o_.password_env);
    conn_ = std::make_unique<rabbitmq::Connection>(o_, password, "tailbox audit " + host_id);
    std::fill(password.begin(), password.end(), '\0');
  }
  void load() override {
    using clock = std::chrono::steady_clock;
    const int64_t known =
        static_cast<int64_t>(conn_->declare_queue(o_.queue, o_.queue_type, true));
    try {
      conn_->start_read(o_.queue, -1, kPrefetch);
    } catch (const rabbitmq::ConnectionError& e) {
      if (e.failure.code != 406) throw;
      throw std::runtime_error("queue " + o_.queue + " is not a stream (" + e.what() + ")");
    }
    int64_t unacked = 0;
    for (;;) {
      const bool reached = next_ >= known;
      rabbitmq::Event e = conn_->next(clock::now() + (reached ? kQuiet : o_.timeout));
      if (e.type == rabbitmq::Event::Type::timeout) {
        if (reached) break;
        throw std::runtime_error("reading stream " + o_.queue + ": nothing within " +
                                 std::to_string(o_.timeout.count()) + " ms after offset " +
                                 std::to_string(next_) + " (the broker counts " +
                                 std::to_string(known) + " messages)");
      }
      if (e.type != rabbitmq::Event::Type::delivery) continue;
      if (e.stream_offset < 0) {
        conn_->end_read();
        throw std::runtime_error(
            "queue " + o_.queue + " is not a stream (its messages carry no x-stream-offset): "
            "nothing was acknowledged, and reading a classic or quorum queue would consume it");
      }
      if (++unacked >= kPrefetch / 4) {
        conn_->ack_delivery(e.tag);
        unacked = 0;
      }
      next_ = std::max(next_, e.stream_offset + 1);
      add(e.message_id);
    }
    conn_->end_read();
  }
  std::string remark() const override {
    return summary("messages", "stream " + o_.queue + " (up to offset " + std::to_string(next_) +
                                   ")");
  }

 private:
  const rabbitmq::Options o_;
  std::unique_ptr<rabbitmq::Connection> conn_;
  int64_t next_ = 0;   // after the last message read
};

std::unique_ptr<KeyReader> key_reader(const config::SinkConfig& sink, const std::string& host_id,
                                      std::string& why_not) {
  config::Settings s = sink.settings;   // a copy: reading marks keys used
  rabbitmq::Options o = rabbitmq::parse_options(s);
  if (o.queue_type == rabbitmq::QueueType::stream)
    return std::make_unique<RabbitStreamKeys>(std::move(o), host_id);
  why_not = "not possible for a " + std::string(rabbitmq::queue_type_name(o.queue_type)) +
            " queue: reading would consume it (only a stream queue can be read without "
            "taking its messages)";
  return nullptr;
}

std::unique_ptr<Sink> make(config::SinkConfig& config, boost::asio::any_io_executor executor) {
  return std::make_unique<RabbitmqSink>(config.settings, config.host_id, executor);
}

}  // namespace
}  // namespace tailbox::sinks

TAILBOX_SINK_MODULE("rabbitmq", make, key_reader)
