// Metrics: counters, gauges and histograms rendered in the Prometheus text
// exposition format (version 0.0.4). No Debian package offers a Prometheus
// client for C++, so this is the small subset tailbox needs.
//
// Values live in the components that count them (their own atomics, a
// Histogram a component owns); the registry reads them when scraped.
// Registration, removal and render() take a mutex and are safe from any
// thread; Histogram updates are lock-free atomics, safe from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace tailbox::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative counts per bound, then the +Inf count; and the sum.
  std::vector<int64_t> cumulative() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<int64_t>[]> counts_;   // one per bound, plus +Inf
  std::atomic<double> sum_{0};
};

class Registry {
 public:
  // A histogram a component owns (e.g. the dispatcher's batch durations);
  // it must outlive the registry.
  void histogram(const std::string& name, const std::string& help, const Labels& labels,
                 const Histogram& histogram);
  // A gauge computed when scraped. `fn` must be safe to call from any thread.
  void gauge_fn(const std::string& name, const std::string& help, const Labels& labels,
                std::function<double()> fn);
  // A counter computed when scraped (from a component's own atomic).
  void counter_fn(const std::string& name, const std::string& help, const Labels& labels,
                  std::function<double()> fn);
  // Appends already formatted families whose series come and go (e.g. one per
  // followed file). Use format_family() to write them.
  void add_collector(std::function<std::string()> collector);
  // Drops one series (e.g. the lag of a file that was released).
  void remove(const std::string& name, const Labels& labels);

  std::string render() const;

 private:
  enum class Type { counter, gauge, histogram };
  struct Series {
    Labels labels;
    const Histogram* histogram = nullptr;
    std::function<double()> fn;
  };
  std::vector<std::function<std::string()>> collectors_;
  struct Family {
    Type type;
    std::string help;
    std::map<std::string, Series> series;   // by rendered labels
  };
  Series& series(const std::string& name, const std::string& help, Type type, const Labels& labels);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

// Escapes a label value for the text format.
std::string escape_label(const std::string& value);
// One family in the text format: HELP, TYPE, then one line per (labels, value).
std::string format_family(const std::string& name, const std::string& type, const std::string& help,
                          const std::vector<std::pair<Labels, double>>& series);

}  // namespace tailbox::metrics
