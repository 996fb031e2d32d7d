// ScriptedSink: a test sink whose answer to each batch is decided by a script,
// and which records what it saw: how often each key was delivered, the order
// per path, and whether two batches in flight ever shared a key.
#pragma once

#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "sinks/sink.hpp"

namespace tailbox::testing {

class ScriptedSink : public sinks::Sink {
 public:
  using Script = std::function<sinks::Delivery(std::span<const Record>)>;
  explicit ScriptedSink(Script script = {}, bool serial = false)
      : script_(std::move(script)), serial_(serial) {}

  const std::string& name() const override { return name_; }
  std::string guarantee() const override { return "test"; }
  bool serial() const override { return serial_; }

  boost::asio::awaitable<sinks::Delivery> deliver(std::span<const Record> batch) override {
    {
      std::lock_guard lock(mu_);
      for (const auto& r : batch)
        if (!in_flight_.insert(std::string(r.key)).second) overlap_ = true;
      ++concurrent_;
      max_concurrent_ = std::max(max_concurrent_, concurrent_);
    }
    // Let other workers run while this batch is "on the wire".
    for (int i = 0; i < 3; ++i)
      co_await boost::asio::post(co_await boost::asio::this_coro::executor, boost::asio::use_awaitable);
    std::lock_guard lock(mu_);
    sinks::Delivery d = script_ ? script_(batch) : sinks::Delivery::delivered();
    if (d.outcome == sinks::Delivery::Outcome::delivered) {
      for (const auto& r : batch) {
        ++delivered_[std::string(r.key)];
        order_[std::string(r.path)].push_back(r.offset);
      }
    }
    for (const auto& r : batch) in_flight_.erase(std::string(r.key));
    --concurrent_;
    ++calls_;
    co_return d;
  }

  void committed(const std::string& state) override {
    std::lock_guard lock(mu_);
    committed_.push_back(state);
  }
  // The states committed() was told of, in order.
  std::vector<std::string> committed_states() {
    std::lock_guard lock(mu_);
    return committed_;
  }
  size_t distinct_delivered() {
    std::lock_guard lock(mu_);
    return delivered_.size();
  }
  std::map<std::string, int> delivered() {
    std::lock_guard lock(mu_);
    return delivered_;
  }
  std::map<std::string, std::vector<int64_t>> order() {
    std::lock_guard lock(mu_);
    return order_;
  }
  bool overlap() {
    std::lock_guard lock(mu_);
    return overlap_;
  }
  int max_concurrent() {
    std::lock_guard lock(mu_);
    return max_concurrent_;
  }

 private:
  Script script_;
  bool serial_;
  std::string name_ = "scripted";
  std::mutex mu_;
  std::set<std::string> in_flight_;
  std::map<std::string, int> delivered_;
  std::map<std::string, std::vector<int64_t>> order_;
  std::vector<std::string> committed_;
  bool overlap_ = false;
  int concurrent_ = 0, max_concurrent_ = 0, calls_ = 0;
};

}  // namespace tailbox::testing
