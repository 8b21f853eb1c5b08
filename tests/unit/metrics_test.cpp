#include "pgfanout/metrics.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>
#include <stdexcept>

namespace pgfanout {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using T = MetricsRegistry::Type;

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The value of a sample line "name{labels} value".
double sample_value(const std::string& line) { return std::stod(line.substr(line.rfind(' ') + 1)); }

TEST(MetricsRegistry, CounterWithoutSeriesRendersZero) {
  MetricsRegistry r;
  r.describe("pgf_events_total", T::Counter, "Events seen.");
  EXPECT_THAT(lines(r.render()), ElementsAre("# HELP pgf_events_total Events seen.",
                                             "# TYPE pgf_events_total counter", "pgf_events_total 0"));
}

TEST(MetricsRegistry, CounterAddsPerLabelSet) {
  MetricsRegistry r;
  r.describe("pgf_changes_total", T::Counter, "Changes.");
  r.add("pgf_changes_total", {{"table", "public.a"}});
  r.add("pgf_changes_total", {{"table", "public.a"}}, 2);
  r.add("pgf_changes_total", {{"table", "public.b"}}, 5);
  EXPECT_EQ(r.value("pgf_changes_total", {{"table", "public.a"}}), 3);
  EXPECT_EQ(r.value("pgf_changes_total", {{"table", "public.b"}}), 5);
  EXPECT_EQ(r.value("pgf_changes_total", {{"table", "public.c"}}), 0);
  EXPECT_EQ(r.value("pgf_nothing"), 0);
  EXPECT_THAT(lines(r.render()),
              ElementsAre("# HELP pgf_changes_total Changes.", "# TYPE pgf_changes_total counter",
                          "pgf_changes_total{table=\"public.a\"} 3",
                          "pgf_changes_total{table=\"public.b\"} 5"));
}

TEST(MetricsRegistry, GaugeSetsAndUnsetGaugeHasNoSample) {
  MetricsRegistry r;
  r.describe("pgf_depth", T::Gauge, "Depth.");
  EXPECT_THAT(lines(r.render()), ElementsAre("# HELP pgf_depth Depth.", "# TYPE pgf_depth gauge"));
  r.set("pgf_depth", {}, 42);
  r.set("pgf_depth", {}, 7.5);
  EXPECT_EQ(r.value("pgf_depth"), 7.5);
  EXPECT_THAT(lines(r.render()),
              ElementsAre("# HELP pgf_depth Depth.", "# TYPE pgf_depth gauge", "pgf_depth 7.5"));
}

TEST(MetricsRegistry, LargeCounterValuesKeepEveryDigit) {
  MetricsRegistry r;
  r.describe("pgf_big", T::Gauge, "Big.");
  r.set("pgf_big", {}, 123456789012.0);
  EXPECT_THAT(r.render(), HasSubstr("pgf_big 123456789012\n"));
}

TEST(MetricsRegistry, LabelValuesAreEscaped) {
  MetricsRegistry r;
  r.describe("pgf_x_total", T::Counter, "X.");
  r.add("pgf_x_total", {{"table", "we\"ird\\ta\nble"}, {"server", "pg"}});
  EXPECT_THAT(r.render(), HasSubstr("pgf_x_total{table=\"we\\\"ird\\\\ta\\nble\",server=\"pg\"} 1\n"));
}

TEST(MetricsRegistry, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  MetricsRegistry r;
  r.describe("pgf_latency_seconds", T::Histogram, "Latency.", {0.5, 1, 2.5});
  for (double v : {0.25, 0.5, 0.75, 2.0, 10.0}) r.observe("pgf_latency_seconds", {}, v);
  auto l = lines(r.render());
  ASSERT_EQ(l.size(), 8u) << r.render();
  EXPECT_EQ(l[0], "# HELP pgf_latency_seconds Latency.");
  EXPECT_EQ(l[1], "# TYPE pgf_latency_seconds histogram");
  EXPECT_EQ(l[2], "pgf_latency_seconds_bucket{le=\"0.5\"} 2");
  EXPECT_EQ(l[3], "pgf_latency_seconds_bucket{le=\"1\"} 3");
  EXPECT_EQ(l[4], "pgf_latency_seconds_bucket{le=\"2.5\"} 4");
  EXPECT_EQ(l[5], "pgf_latency_seconds_bucket{le=\"+Inf\"} 5");
  EXPECT_EQ(l[6], "pgf_latency_seconds_sum 13.5");
  EXPECT_EQ(l[7], "pgf_latency_seconds_count 5");
}

TEST(MetricsRegistry, HistogramWithLabelsAndFractionalBounds) {
  MetricsRegistry r;
  r.describe("pgf_h", T::Histogram, "H.", {0.001, 0.1});
  r.observe("pgf_h", {{"table", "t"}}, 0.05);
  r.observe("pgf_h", {{"table", "t"}}, 0.2);
  auto l = lines(r.render());
  ASSERT_EQ(l.size(), 7u) << r.render();
  // Bounds are compared as numbers: any exact textual form of 0.1 is valid exposition.
  auto le_of = [](const std::string& line) {
    auto start = line.rfind("le=\"") + 4;
    return std::stod(line.substr(start, line.find('"', start) - start));
  };
  EXPECT_THAT(l[2], HasSubstr("pgf_h_bucket{table=\"t\",le=\""));
  EXPECT_EQ(le_of(l[2]), 0.001);
  EXPECT_EQ(sample_value(l[2]), 0);
  EXPECT_EQ(le_of(l[3]), 0.1);
  EXPECT_EQ(sample_value(l[3]), 1);
  EXPECT_EQ(l[4], "pgf_h_bucket{table=\"t\",le=\"+Inf\"} 2");
  EXPECT_THAT(l[5], HasSubstr("pgf_h_sum{table=\"t\"} "));
  EXPECT_DOUBLE_EQ(sample_value(l[5]), 0.25);
  EXPECT_EQ(l[6], "pgf_h_count{table=\"t\"} 2");
}

TEST(MetricsRegistry, HistogramWithoutObservationsHasNoSamples) {
  MetricsRegistry r;
  r.describe("pgf_h", T::Histogram, "H.", {1});
  EXPECT_THAT(lines(r.render()), ElementsAre("# HELP pgf_h H.", "# TYPE pgf_h histogram"));
}

TEST(MetricsRegistry, FamiliesRenderEachOnceWithHelpBeforeType) {
  MetricsRegistry r;
  r.describe("pgf_b_total", T::Counter, "B.");
  r.describe("pgf_a", T::Gauge, "A.");
  r.set("pgf_a", {{"k", "1"}}, 1);
  r.set("pgf_a", {{"k", "2"}}, 2);
  std::string text = r.render();
  EXPECT_EQ(text.back(), '\n');
  auto l = lines(text);
  int help_a = 0, type_a = 0;
  for (std::size_t i = 0; i < l.size(); ++i) {
    if (l[i] == "# HELP pgf_a A.") help_a += 1;
    if (l[i] == "# TYPE pgf_a gauge") {
      type_a += 1;
      ASSERT_GT(i, 0u);
      EXPECT_EQ(l[i - 1], "# HELP pgf_a A.");
    }
  }
  EXPECT_EQ(help_a, 1);
  EXPECT_EQ(type_a, 1);
  EXPECT_THAT(text, HasSubstr("pgf_a{k=\"1\"} 1\npgf_a{k=\"2\"} 2\n"));
}

TEST(MetricsRegistry, UpdatingAnUndescribedFamilyThrows) {
  MetricsRegistry r;
  EXPECT_THROW(r.add("pgf_unknown", {}), std::logic_error);
  EXPECT_THROW(r.set("pgf_unknown", {}, 1), std::logic_error);
  EXPECT_THROW(r.observe("pgf_unknown", {}, 1), std::logic_error);
  EXPECT_THAT(r.render(), Not(HasSubstr("pgf_unknown")));
}

}  // namespace
}  // namespace pgfanout
