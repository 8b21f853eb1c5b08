#pragma once

#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgfanout {

using Labels = std::vector<std::pair<std::string, std::string>>;

/// A thread-safe set of Prometheus metric families, rendered in the text exposition
/// format. Updates happen per batch, not per row, so one mutex is cheap enough.
class MetricsRegistry {
 public:
  enum class Type { Counter, Gauge, Histogram };

  /// Declares a family; must precede updates of it. `buckets` are upper bounds, for
  /// histograms only.
  void describe(std::string name, Type type, std::string help, std::vector<double> buckets = {});

  void add(std::string_view name, const Labels& labels, double delta = 1.0);
  void set(std::string_view name, const Labels& labels, double value);
  void observe(std::string_view name, const Labels& labels, double value);

  /// The current value of a counter or gauge (0 if never set), for logs and tests.
  double value(std::string_view name, const Labels& labels = {}) const;

  std::string render() const;

 private:
  struct Series {
    double value = 0;
    std::vector<double> bucket_counts;
    double sum = 0;
    double count = 0;
  };
  struct Family {
    Type type;
    std::string help;
    std::vector<double> buckets;
    std::map<Labels, Series> series;
  };
  Family& family(std::string_view name);

  mutable std::mutex mutex_;
  std::map<std::string, Family, std::less<>> families_;
};

}  // namespace pgfanout
