#include "metrics/metrics.hpp"

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace tailbox::metrics {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<int64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i] = 0;
}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  double cur = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

std::vector<int64_t> Histogram::cumulative() const {
  std::vector<int64_t> out(bounds_.size() + 1);
  int64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    out[i] = total;
  }
  return out;
}

std::string escape_label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

namespace {
std::string render_labels(const Labels& labels, const std::string& extra = {}) {
  if (labels.empty() && extra.empty()) return {};
  std::string s = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) s += ',';
    s += labels[i].first + "=\"" + escape_label(labels[i].second) + "\"";
  }
  if (!extra.empty()) s += (labels.empty() ? "" : ",") + extra;
  return s + "}";
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
}  // namespace

Registry::Series& Registry::series(const std::string& name, const std::string& help, Type type,
                                   const Labels& labels) {
  std::lock_guard lock(mu_);
  auto [it, fresh] = families_.try_emplace(name);
  Family& fam = it->second;
  if (fresh) {
    fam.type = type;
    fam.help = help;
  } else if (fam.type != type) {
    throw std::logic_error("metric " + name + " registered with two types");
  }
  Series& s = fam.series[render_labels(labels)];
  s.labels = labels;
  return s;
}

void Registry::histogram(const std::string& name, const std::string& help, const Labels& labels,
                         const Histogram& histogram) {
  Series& s = series(name, help, Type::histogram, labels);
  std::lock_guard lock(mu_);
  s.histogram = &histogram;
}

void Registry::gauge_fn(const std::string& name, const std::string& help, const Labels& labels,
                        std::function<double()> fn) {
  Series& s = series(name, help, Type::gauge, labels);
  std::lock_guard lock(mu_);
  s.fn = std::move(fn);
}

void Registry::counter_fn(const std::string& name, const std::string& help, const Labels& labels,
                          std::function<double()> fn) {
  Series& s = series(name, help, Type::counter, labels);
  std::lock_guard lock(mu_);
  s.fn = std::move(fn);
}

void Registry::add_collector(std::function<std::string()> collector) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::string format_family(const std::string& name, const std::string& type, const std::string& help,
                          const std::vector<std::pair<Labels, double>>& series) {
  std::string out = "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  for (const auto& [labels, value] : series) out += name + render_labels(labels) + " " + number(value) + "\n";
  return out;
}

void Registry::remove(const std::string& name, const Labels& labels) {
  std::lock_guard lock(mu_);
  auto it = families_.find(name);
  if (it != families_.end()) it->second.series.erase(render_labels(labels));
}

std::string Registry::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, fam] : families_) {
    if (fam.series.empty()) continue;
    const char* type = fam.type == Type::counter ? "counter"
                       : fam.type == Type::gauge ? "gauge" : "histogram";
    out += "# HELP " + name + " " + fam.help + "\n# TYPE " + name + " " + type + "\n";
    for (const auto& [key, s] : fam.series) {
      if (s.fn) {
        out += name + key + " " + number(s.fn()) + "\n";
      } else if (s.histogram) {
        auto cum = s.histogram->cumulative();
        const auto& b = s.histogram->bounds();
        for (size_t i = 0; i < b.size(); ++i)
          out += name + "_bucket" + render_labels(s.labels, "le=\"" + number(b[i]) + "\"") + " " +
                 std::to_string(cum[i]) + "\n";
        out += name + "_bucket" + render_labels(s.labels, "le=\"+Inf\"") + " " +
               std::to_string(cum.back()) + "\n";
        out += name + "_sum" + key + " " + number(s.histogram->sum()) + "\n";
        out += name + "_count" + key + " " + std::to_string(cum.back()) + "\n";
      }
    }
  }
  for (const auto& c : collectors_) out += c();
  return out;
}

}  // namespace tailbox::metrics
