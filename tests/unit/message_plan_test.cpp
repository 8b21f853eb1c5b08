#include "message_plan.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace pgfanout {
namespace {

using Plan = std::vector<std::pair<std::size_t, std::size_t>>;

// The plan as [begin, end) pairs, which GoogleTest can compare and print.
Plan plan(std::span<const OutboxChange> changes, std::size_t pack,
          std::size_t max_body_bytes = std::numeric_limits<std::size_t>::max()) {
  Plan out;
  for (const PlannedMessage& m : plan_messages(changes, pack, max_body_bytes)) out.emplace_back(m.begin, m.end);
  return out;
}

std::vector<OutboxChange> changes_of(const std::vector<std::pair<std::string, std::string>>& tables) {
  std::vector<OutboxChange> out;
  std::int64_t id = 100;
  for (const auto& [schema, table] : tables) {
    OutboxChange c;
    c.id = ++id;
    c.schema = schema;
    c.table = table;
    out.push_back(c);
  }
  return out;
}

std::vector<OutboxChange> of_one_table(std::size_t n) {
  return changes_of(std::vector<std::pair<std::string, std::string>>(n, {"public", "t"}));
}

TEST(PlanMessages, EmptyInputPlansNothing) {
  EXPECT_TRUE(plan({}, 1).empty());
  EXPECT_TRUE(plan({}, 10).empty());
}

TEST(PlanMessages, PackOneIsOneMessagePerChange) {
  auto c = of_one_table(3);
  EXPECT_EQ(plan(c, 1), (Plan{{0, 1}, {1, 2}, {2, 3}}));
}

TEST(PlanMessages, PackZeroBehavesAsOne) {
  auto c = of_one_table(2);
  EXPECT_EQ(plan(c, 0), (Plan{{0, 1}, {1, 2}}));
}

TEST(PlanMessages, PackNGroupsConsecutiveChangesOfOneTable) {
  auto c = of_one_table(5);
  EXPECT_EQ(plan(c, 10), (Plan{{0, 5}}));
}

TEST(PlanMessages, LimitNIsRespected) {
  auto c = of_one_table(25);
  EXPECT_EQ(plan(c, 10), (Plan{{0, 10}, {10, 20}, {20, 25}}));
  auto exact = of_one_table(20);
  EXPECT_EQ(plan(exact, 10), (Plan{{0, 10}, {10, 20}}));
  auto two = of_one_table(5);
  EXPECT_EQ(plan(two, 2), (Plan{{0, 2}, {2, 4}, {4, 5}}));
}

TEST(PlanMessages, ATableChangeBreaksTheRun) {
  auto c = changes_of({{"public", "a"}, {"public", "a"}, {"public", "b"}, {"public", "a"},
                       {"public", "a"}, {"public", "a"}});
  EXPECT_EQ(plan(c, 10), (Plan{{0, 2}, {2, 3}, {3, 6}}));
  EXPECT_EQ(plan(c, 2), (Plan{{0, 2}, {2, 3}, {3, 5}, {5, 6}}));
}

TEST(PlanMessages, SameTableNameInAnotherSchemaIsAnotherTable) {
  auto c = changes_of({{"s1", "t"}, {"s2", "t"}, {"s2", "t"}});
  EXPECT_EQ(plan(c, 10), (Plan{{0, 1}, {1, 3}}));
}

TEST(PlanMessages, NamesThatConcatenateAlikeAreDifferentTables) {
  // "a.b"."c" and "a"."b.c" share the routing key a.b.c but are different tables.
  auto c = changes_of({{"a.b", "c"}, {"a", "b.c"}});
  EXPECT_EQ(plan(c, 10), (Plan{{0, 1}, {1, 2}}));
}

TEST(PlanMessages, PlanCoversEveryChangeInOrder) {
  auto c = changes_of({{"p", "x"}, {"p", "y"}, {"p", "y"}, {"p", "y"}, {"p", "x"}, {"q", "x"}});
  for (std::size_t pack : {1u, 2u, 3u, 100u}) {
    std::size_t next = 0;
    for (const PlannedMessage& m : plan_messages(c, pack)) {
      EXPECT_EQ(m.begin, next);
      EXPECT_GT(m.end, m.begin);
      EXPECT_LE(m.end - m.begin, pack);
      for (std::size_t i = m.begin; i < m.end; ++i) {
        EXPECT_EQ(c[i].schema, c[m.begin].schema);
        EXPECT_EQ(c[i].table, c[m.begin].table);
      }
      next = m.end;
    }
    EXPECT_EQ(next, c.size());
  }
}

// Changes of one table whose rows make bodies of the given sizes, roughly.
std::vector<OutboxChange> of_row_sizes(const std::vector<std::size_t>& sizes) {
  auto out = of_one_table(sizes.size());
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    out[i].new_row = "{\"v\":\"" + std::string(sizes[i], 'x') + "\"}";
    out[i].ts = "2026-11-21T05:18:39.123456+00:00";
  }
  return out;
}

TEST(PlanMessages, APackIsCutBeforeItsBodyPassesTheLimit) {
  auto c = of_row_sizes({400, 400, 400, 400, 400});
  const std::size_t one = change_json_size(c[0]);
  // Room for two changes in a pack ('[' a ',' b ']'), not three.
  const std::size_t limit = 2 + 2 * one + 1;
  EXPECT_EQ(plan(c, 10, limit), (Plan{{0, 2}, {2, 4}, {4, 5}}));
  EXPECT_EQ(plan(c, 10, limit - 1), (Plan{{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}}));
  for (const PlannedMessage& m : plan_messages(c, 10, limit)) {
    EXPECT_LE(message_body(std::span(c).subspan(m.begin, m.end - m.begin)).size(), limit);
  }
}

TEST(PlanMessages, AChangeOverTheLimitIsAMessageOfItsOwn) {
  auto c = of_row_sizes({100, 5000, 100, 100});
  EXPECT_EQ(plan(c, 10, 1000), (Plan{{0, 1}, {1, 2}, {2, 4}}));
}

TEST(PlanMessages, EveryPackWithMoreThanOneChangeFitsTheLimit) {
  std::vector<std::size_t> sizes;
  for (std::size_t i = 0; i < 60; ++i) sizes.push_back((i * 7919) % 3000);
  auto c = of_row_sizes(sizes);
  for (std::size_t limit : {500u, 2000u, 4000u, 10000u, 100000u}) {
    std::size_t next = 0;
    for (const PlannedMessage& m : plan_messages(c, 100, limit)) {
      EXPECT_EQ(m.begin, next);
      std::size_t size = message_body(std::span(c).subspan(m.begin, m.end - m.begin)).size();
      if (m.end - m.begin > 1) {
        EXPECT_LE(size, limit);
      }
      next = m.end;
    }
    EXPECT_EQ(next, c.size());
  }
}

}  // namespace
}  // namespace pgfanout
