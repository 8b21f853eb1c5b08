#include "pgfanout/topic_pattern.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

namespace pgfanout {
namespace {

TEST(TopicMatches, ExactKey) {
  EXPECT_TRUE(topic_matches("public.users", "public.users"));
  EXPECT_FALSE(topic_matches("public.users", "public.user"));
  EXPECT_FALSE(topic_matches("public.users", "public.users.x"));
  EXPECT_FALSE(topic_matches("public.users", "other.users"));
}

TEST(TopicMatches, StarIsExactlyOneWord) {
  EXPECT_TRUE(topic_matches("public.*", "public.users"));
  EXPECT_TRUE(topic_matches("*.users", "sales.users"));
  EXPECT_TRUE(topic_matches("*.*", "a.b"));
  EXPECT_FALSE(topic_matches("public.*", "public"));
  EXPECT_FALSE(topic_matches("public.*", "public.a.b"));
  EXPECT_FALSE(topic_matches("*", "a.b"));
  EXPECT_TRUE(topic_matches("*", "a"));
  EXPECT_FALSE(topic_matches("*.*", "a.b.c"));
}

TEST(TopicMatches, HashIsZeroOrMoreWords) {
  EXPECT_TRUE(topic_matches("#", "public.users"));
  EXPECT_TRUE(topic_matches("#", "a"));
  EXPECT_TRUE(topic_matches("#", "a.b.c.d"));
  EXPECT_TRUE(topic_matches("public.#", "public.users"));
  EXPECT_TRUE(topic_matches("public.#", "public"));
  EXPECT_TRUE(topic_matches("public.#", "public.a.b"));
  EXPECT_FALSE(topic_matches("public.#", "other.users"));
  EXPECT_TRUE(topic_matches("#.users", "public.users"));
  EXPECT_TRUE(topic_matches("#.users", "users"));
  EXPECT_FALSE(topic_matches("#.users", "public.orders"));
  EXPECT_TRUE(topic_matches("a.#.b", "a.b"));
  EXPECT_TRUE(topic_matches("a.#.b", "a.x.y.b"));
  EXPECT_FALSE(topic_matches("a.#.b", "a.x.y.c"));
  EXPECT_TRUE(topic_matches("#.#", "a.b"));
  EXPECT_TRUE(topic_matches("*.#", "a"));
  EXPECT_FALSE(topic_matches("*.#.*", "a"));
  EXPECT_TRUE(topic_matches("*.#.*", "a.b"));
}

TEST(TopicMatches, TableNamesWithDotsAreMoreWords) {
  // Table "a.b" in schema "public" routes as "public.a.b": three words.
  EXPECT_TRUE(topic_matches("public.a.b", "public.a.b"));
  EXPECT_FALSE(topic_matches("public.*", "public.a.b"));
  EXPECT_TRUE(topic_matches("public.*.*", "public.a.b"));
  EXPECT_TRUE(topic_matches("public.#", "public.a.b"));
}

TEST(TopicMatches, StarDoesNotMatchAPartialWord) {
  EXPECT_FALSE(topic_matches("pub*.users", "public.users"));
  EXPECT_TRUE(topic_matches("pub*.users", "pub*.users"));
}

TEST(SplitPatterns, OneOrMany) {
  EXPECT_EQ(split_patterns("#"), (std::vector<std::string>{"#"}));
  EXPECT_EQ(split_patterns("public.*,sales.orders"),
            (std::vector<std::string>{"public.*", "sales.orders"}));
  EXPECT_EQ(split_patterns(" public.* , sales.# "), (std::vector<std::string>{"public.*", "sales.#"}));
  EXPECT_EQ(split_patterns("a.b.c"), (std::vector<std::string>{"a.b.c"}));
}

TEST(SplitPatterns, EmptyPatternIsAnError) {
  for (const char* list : {"", " ", ",", "a,", ",a", "a,,b", "a, ,b"}) {
    EXPECT_THROW(split_patterns(list), std::invalid_argument) << "'" << list << "'";
  }
}

TEST(TopicMatches, AnyOfSeveralPatterns) {
  std::vector<std::string> patterns{"sales.*", "public.users"};
  EXPECT_TRUE(topic_matches_any(patterns, "sales.orders"));
  EXPECT_TRUE(topic_matches_any(patterns, "public.users"));
  EXPECT_FALSE(topic_matches_any(patterns, "public.orders"));
  EXPECT_FALSE(topic_matches_any({}, "public.users"));
}

}  // namespace
}  // namespace pgfanout
