// --metrics: the publisher and the listeners serve Prometheus text at /metrics, and the
// counters move by exactly what went through the chain.

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;

using LabelSet = std::map<std::string, std::string>;

// One scrape, parsed and checked against the text exposition format: every line is a
// HELP, a TYPE or a sample; every sample belongs to a family whose TYPE came first;
// histogram buckets are cumulative and end in le="+Inf" equal to _count.
class Scrape {
 public:
  explicit Scrape(const std::string& text) : text_(text) {
    static const std::regex help(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .*$)");
    static const std::regex type(
        R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
    static const std::regex sample(
        R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (NaN|[+-]Inf|[-+]?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?)$)");
    static const std::regex label(R"(^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)\"(,|$))");
    if (text.empty() || text.back() != '\n')
      errors_.push_back("the text does not end in a newline");
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      std::smatch m;
      if (std::regex_match(line, m, help)) {
        helped_.insert(m[1]);
      } else if (std::regex_match(line, m, type)) {
        if (types_.count(m[1])) errors_.push_back("TYPE given twice: " + line);
        types_[m[1]] = m[2];
      } else if (std::regex_match(line, m, sample)) {
        std::string name = m[1];
        LabelSet labels;
        std::string rest = m[3];
        while (!rest.empty()) {
          std::smatch l;
          if (!std::regex_search(rest, l, label)) {
            errors_.push_back("bad labels: " + line);
            break;
          }
          labels[l[1]] = l[2];
          rest = l.suffix();
        }
        std::string family = family_of(name);
        if (!types_.count(family)) errors_.push_back("sample before its TYPE: " + line);
        if (!helped_.count(family)) errors_.push_back("sample without HELP: " + line);
        std::string value = m[4];
        samples_[{name, labels}] = value == "NaN"    ? std::nan("")
                                   : value == "+Inf" ? INFINITY
                                   : value == "-Inf" ? -INFINITY
                                                     : std::stod(value);
      } else {
        errors_.push_back("not a valid exposition line: '" + line + "'");
      }
    }
    check_histograms();
  }

  const std::vector<std::string>& errors() const { return errors_; }
  const std::string& text() const { return text_; }
  bool has(const std::string& name, const LabelSet& labels = {}) const {
    return samples_.count({name, labels}) > 0;
  }
  /// The sample's value; 0 when absent (a counter that has not moved yet).
  double value(const std::string& name, const LabelSet& labels = {}) const {
    auto it = samples_.find({name, labels});
    return it == samples_.end() ? 0 : it->second;
  }
  std::string type(const std::string& family) const {
    auto it = types_.find(family);
    return it == types_.end() ? "" : it->second;
  }

 private:
  std::string family_of(const std::string& name) const {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      std::string s = suffix;
      if (name.size() > s.size() && name.ends_with(s)) {
        std::string base = name.substr(0, name.size() - s.size());
        auto it = types_.find(base);
        if (it != types_.end() && it->second == "histogram") return base;
      }
    }
    return name;
  }

  void check_histograms() {
    for (const auto& [key, value] : samples_) {
      const auto& [name, labels] = key;
      if (!name.ends_with("_count") || family_of(name) == name) continue;
      std::string base = family_of(name);
      LabelSet inf = labels;
      inf["le"] = "+Inf";
      auto bucket = samples_.find({base + "_bucket", inf});
      if (bucket == samples_.end()) {
        errors_.push_back(base + " has no le=\"+Inf\" bucket");
      } else if (bucket->second != value) {
        errors_.push_back(base + ": +Inf bucket differs from _count");
      }
      std::map<double, double> by_bound;  // le -> count, in numeric order
      for (const auto& [k, v] : samples_) {
        if (k.first != base + "_bucket" || !k.second.count("le")) continue;
        LabelSet rest = k.second;
        rest.erase("le");
        if (rest != labels) continue;
        const std::string& le = k.second.at("le");
        by_bound[le == "+Inf" ? INFINITY : std::stod(le)] = v;
      }
      double previous = 0;
      for (const auto& [bound, count] : by_bound) {
        if (count < previous) errors_.push_back(base + ": buckets are not cumulative");
        previous = count;
      }
    }
  }

  std::string text_;
  std::set<std::string> helped_;
  std::map<std::string, std::string> types_;
  std::map<std::pair<std::string, LabelSet>, double> samples_;
  std::vector<std::string> errors_;
};

Scrape scrape(int port) {
  Scrape s(http_get(port, "/metrics"));
  if (!s.errors().empty()) {
    std::string all;
    for (const auto& e : s.errors()) all += "\n  " + e;
    ADD_FAILURE() << "exposition format errors on port " << port << ":" << all << "\nfull text:\n"
                  << s.text();
  }
  return s;
}

// Waits until a metric reaches `expected` exactly (returning the last scrape).
Scrape wait_for_value(int port, const std::string& name, const LabelSet& labels, double expected) {
  std::string what =
      name + " on port " + std::to_string(port) + " to be " + std::to_string(expected);
  Scrape result("");
  eventually(
      [&] {
        Scrape s = scrape(port);
        if (s.value(name, labels) != expected) return false;
        result = s;
        return true;
      },
      kPatience, what);
  return result;
}

constexpr const char* kTablesSql = R"SQL(
CREATE TABLE public.m1 (id int PRIMARY KEY, v text);
CREATE TABLE public.m2 (id int PRIMARY KEY, v text);
)SQL";

TEST(Metrics, CountersFollowTheChangesThroughTheChain) {
  ScratchDatabase primary_db("pgft_metrics_p"), replica1_db("pgft_metrics_r1"),
      replica2_db("pgft_metrics_r2");
  PgSession primary = primary_db.session();
  for (const auto* db : {&primary_db, &replica1_db, &replica2_db}) db->session().exec(kTablesSql);
  install_schema(primary_db.conninfo());
  primary.exec("SELECT pgfanout.track('public.m1'); SELECT pgfanout.track('public.m2');");

  TestExchange exchange("pgft_metrics_x");
  TestQueue queue1(exchange.name(), {}, QueueOptions::listener_compatible());
  TestQueue queue2(exchange.name(), {}, QueueOptions::listener_compatible());
  TestQueue dead1(exchange.name(), {}, QueueOptions::dead_letter_compatible(), queue1.name() + ".dead");
  TestQueue dead2(exchange.name(), {}, QueueOptions::dead_letter_compatible(), queue2.name() + ".dead");

  const int publisher_port = free_port();
  const int listener1_port = free_port();
  const int listener2_port = free_port();
  auto at = [](int port) { return "127.0.0.1:" + std::to_string(port); };
  Process listener1 = start_listener(replica1_db.conninfo(), queue1.name(), exchange.name(),
                                     {"--metrics", at(listener1_port)});
  Process listener2 = start_listener(replica2_db.conninfo(), queue2.name(), exchange.name(),
                                     {"--metrics", at(listener2_port)});
  listener1.wait_for_log("consuming from");
  listener2.wait_for_log("consuming from");
  Process publisher =
      start_publisher(primary_db.conninfo(), exchange.name(), {"--metrics", at(publisher_port)});
  publisher.wait_for_log("draining");

  // Before any change: the families are there, the counters have not moved.
  Scrape p0 = scrape(publisher_port);
  EXPECT_EQ(p0.type("pgfanout_publisher_changes_published_total"), "counter");
  EXPECT_EQ(p0.type("pgfanout_publisher_outbox_depth"), "gauge");
  EXPECT_TRUE(p0.has("pgfanout_publisher_outbox_depth"));
  EXPECT_EQ(p0.value("pgfanout_publisher_changes_published_total", {{"table", "public.m1"}}), 0);
  const int listener_ports[] = {listener1_port, listener2_port};
  for (int port : listener_ports) {
    Scrape l0 = scrape(port);
    EXPECT_EQ(l0.type("pgfanout_listener_changes_applied_total"), "counter");
    EXPECT_EQ(l0.type("pgfanout_listener_batch_size"), "histogram");
    EXPECT_EQ(l0.type("pgfanout_listener_lag_seconds"), "gauge");
    EXPECT_TRUE(l0.has("pgfanout_listener_lag_seconds"));
    EXPECT_EQ(l0.value("pgfanout_listener_dead_letters_total", {{"reason", "not-json"}}), 0);
  }

  // 45 changes of m1 (30 inserts, 10 updates, 5 deletes) and 7 of m2.
  primary.exec(R"SQL(
INSERT INTO public.m1 SELECT g, 'v' || g FROM generate_series(1, 30) g;
INSERT INTO public.m2 SELECT g, 'w' || g FROM generate_series(1, 7) g;
UPDATE public.m1 SET v = v || '!' WHERE id <= 10;
DELETE FROM public.m1 WHERE id > 25;
)SQL");
  wait_outbox_empty(primary);

  wait_for_value(publisher_port, "pgfanout_publisher_changes_published_total",
                 {{"table", "public.m1"}}, 45);
  Scrape p1 = wait_for_value(publisher_port, "pgfanout_publisher_changes_published_total",
                             {{"table", "public.m2"}}, 7);
  EXPECT_GE(p1.value("pgfanout_publisher_messages_published_total"), 52);
  EXPECT_GT(p1.value("pgfanout_publisher_confirm_latency_seconds_count"), 0);
  EXPECT_EQ(p1.value("pgfanout_publisher_active"), 1);
  wait_for_value(publisher_port, "pgfanout_publisher_outbox_depth", {}, 0);

  for (int port : listener_ports) {
    SCOPED_TRACE("listener on port " + std::to_string(port));
    wait_for_value(port, "pgfanout_listener_changes_applied_total",
                   {{"table", "public.m1"}, {"op", "INSERT"}}, 30);
    wait_for_value(port, "pgfanout_listener_changes_applied_total",
                   {{"table", "public.m1"}, {"op", "UPDATE"}}, 10);
    wait_for_value(port, "pgfanout_listener_changes_applied_total",
                   {{"table", "public.m1"}, {"op", "DELETE"}}, 5);
    Scrape l1 = wait_for_value(port, "pgfanout_listener_changes_applied_total",
                               {{"table", "public.m2"}, {"op", "INSERT"}}, 7);
    EXPECT_GT(l1.value("pgfanout_listener_batch_size_count"), 0);
    EXPECT_GE(l1.value("pgfanout_listener_batch_size_sum"), 52);
    EXPECT_GT(l1.value("pgfanout_listener_apply_duration_seconds_count"), 0);
    EXPECT_TRUE(l1.has("pgfanout_listener_lag_seconds"));
    EXPECT_GE(l1.value("pgfanout_listener_lag_seconds"), 0);
    EXPECT_GT(l1.value("pgfanout_listener_last_applied_change_id"), 0);
  }

  // A poison message moves both listeners' dead-letter counter by one.
  publish_message(exchange.name(), "public.m1", "this is not json", {}, "poison");
  for (int port : listener_ports) {
    wait_for_value(port, "pgfanout_listener_dead_letters_total", {{"reason", "not-json"}}, 1);
  }
  EXPECT_EQ(dead1.take(1)[0].message_id, "poison");
  EXPECT_EQ(dead2.take(1)[0].message_id, "poison");

  // Other paths answer too, and the format holds after all this traffic.
  EXPECT_NE(http_get(publisher_port, "/healthz").find("ok"), std::string::npos);
  EXPECT_THROW(http_get(publisher_port, "/nope"), HarnessError);
  scrape(publisher_port);

  EXPECT_EQ(publisher.stop(), 0);
  EXPECT_EQ(listener1.stop(), 0);
  EXPECT_EQ(listener2.stop(), 0);
}

}  // namespace
}  // namespace pgfanout::test
