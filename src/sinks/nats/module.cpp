// The nats sink as a module (module.hpp): the sink and the audit's reader of its stream.
#include <boost/asio/any_io_executor.hpp>
#include <string>
#include <utility>
#include <vector>

#include "sinks/module.hpp"
#include "sinks/nats/connection.hpp"
#include "sinks/nats/nats_sink.hpp"

namespace tailbox::sinks {
namespace {

// NATS JetStream: the stream read back on this host's subjects (an ordered,
// ephemeral consumer, headers only; nothing acknowledged), keyed by Nats-Msg-Id.
class NatsKeys : public CountedKeys {
 public:
  NatsKeys(nats::Options o, const std::string& host_id)
      : CountedKeys(host_id), o_(std::move(o)), host_id_(host_id),
        conn_(o_, host_id, "tailbox audit", nats::display_url(o_.url)) {
    conn_.connect();
  }
  void load() override {
    const auto st = conn_.stream_state(false);
    if (st.last == 0 || st.last < st.first) return;   // empty
    conn_.read_back(st.first - 1, st.last, nats::host_filter(o_.subject, host_id_), "",
                    [&](std::vector<std::pair<std::string, uint64_t>>& found) {
                      for (const auto& [key, seq] : found) add(key);
                      found.clear();
                    });
    last_ = st.last;
  }
  std::string remark() const override {
    return summary("messages", "stream " + o_.stream + " (up to sequence " +
                                   std::to_string(last_) + ", subjects " +
                                   nats::host_filter(o_.subject, host_id_) + ")");
  }

 private:
  const nats::Options o_;
  const std::string host_id_;
  nats::Connection conn_;
  uint64_t last_ = 0;
};

std::unique_ptr<KeyReader> key_reader(const config::SinkConfig& sink, const std::string& host_id,
                                      std::string&) {
  config::Settings s = sink.settings;   // a copy: reading marks keys used
  return std::make_unique<NatsKeys>(nats::parse_options(s), host_id);
}

std::unique_ptr<Sink> make(config::SinkConfig& config, boost::asio::any_io_executor executor) {
  return std::make_unique<NatsSink>(config.settings, config.host_id, executor);
}

}  // namespace
}  // namespace tailbox::sinks

TAILBOX_SINK_MODULE("nats", make, key_reader)
