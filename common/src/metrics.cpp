#include "pgfanout/metrics.hpp"

#include <charconv>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace pgfanout {
namespace {

std::string escape_label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // The shortest text that reads back as the same double (0.1, not 0.10000000000000001).
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v);
  return ec == std::errc() ? std::string(buffer, end) : std::string("NaN");
}

std::string label_text(const Labels& labels, const std::pair<std::string, std::string>* extra = nullptr) {
  if (labels.empty() && !extra) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    out += k + "=\"" + escape_label(v) + "\"";
  }
  if (extra) {
    if (!first) out += ',';
    out += extra->first + "=\"" + extra->second + "\"";
  }
  return out + "}";
}

}  // namespace

void MetricsRegistry::describe(std::string name, Type type, std::string help,
                               std::vector<double> buckets) {
  std::lock_guard lock(mutex_);
  families_.emplace(std::move(name), Family{type, std::move(help), std::move(buckets), {}});
}

MetricsRegistry::Family& MetricsRegistry::family(std::string_view name) {
  auto it = families_.find(name);
  if (it == families_.end()) throw std::logic_error("metric not described: " + std::string(name));
  return it->second;
}

void MetricsRegistry::add(std::string_view name, const Labels& labels, double delta) {
  std::lock_guard lock(mutex_);
  family(name).series[labels].value += delta;
}

void MetricsRegistry::set(std::string_view name, const Labels& labels, double value) {
  std::lock_guard lock(mutex_);
  family(name).series[labels].value = value;
}

void MetricsRegistry::observe(std::string_view name, const Labels& labels, double value) {
  std::lock_guard lock(mutex_);
  Family& f = family(name);
  Series& s = f.series[labels];
  if (s.bucket_counts.empty()) s.bucket_counts.assign(f.buckets.size(), 0);
  for (size_t i = 0; i < f.buckets.size(); ++i) {
    if (value <= f.buckets[i]) s.bucket_counts[i] += 1;
  }
  s.sum += value;
  s.count += 1;
}

double MetricsRegistry::value(std::string_view name, const Labels& labels) const {
  std::lock_guard lock(mutex_);
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  auto s = it->second.series.find(labels);
  return s == it->second.series.end() ? 0 : s->second.value;
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n";
    out += "# TYPE " + name + " ";
    out += f.type == Type::Counter ? "counter" : f.type == Type::Gauge ? "gauge" : "histogram";
    out += "\n";
    if (f.type != Type::Histogram) {
      if (f.series.empty() && f.type == Type::Gauge) continue;
      if (f.series.empty()) {
        out += name + " 0\n";
        continue;
      }
      for (const auto& [labels, s] : f.series) {
        out += name + label_text(labels) + " " + format_number(s.value) + "\n";
      }
      continue;
    }
    for (const auto& [labels, s] : f.series) {
      for (size_t i = 0; i < f.buckets.size(); ++i) {
        std::pair<std::string, std::string> le{"le", format_number(f.buckets[i])};
        out += name + "_bucket" + label_text(labels, &le) + " " + format_number(s.bucket_counts[i]) + "\n";
      }
      std::pair<std::string, std::string> inf{"le", "+Inf"};
      out += name + "_bucket" + label_text(labels, &inf) + " " + format_number(s.count) + "\n";
      out += name + "_sum" + label_text(labels) + " " + format_number(s.sum) + "\n";
      out += name + "_count" + label_text(labels) + " " + format_number(s.count) + "\n";
    }
  }
  return out;
}

}  // namespace pgfanout
