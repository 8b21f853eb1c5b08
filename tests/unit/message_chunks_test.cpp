#include "pgfanout/message_chunks.hpp"

#include <gtest/gtest.h>

#include <string>
#include <variant>

#include "pgfanout/change.hpp"

namespace pgfanout {
namespace {

std::string joined(const std::vector<std::string_view>& parts) {
  std::string out;
  for (auto p : parts) out += p;
  return out;
}

TEST(SplitBody, ABodyUnderTheLimitIsOnePart) {
  EXPECT_EQ(split_body("abc", 3), (std::vector<std::string_view>{"abc"}));
  EXPECT_EQ(split_body("", 3), (std::vector<std::string_view>{""}));
}

TEST(SplitBody, ConsecutiveSlicesOfTheLimitAndTheRest) {
  EXPECT_EQ(split_body("abcdefgh", 3), (std::vector<std::string_view>{"abc", "def", "gh"}));
  EXPECT_EQ(split_body("abcdef", 3), (std::vector<std::string_view>{"abc", "def"}));
  std::string big(100003, 'q');
  big[5] = 'z';
  auto parts = split_body(big, 1000);
  EXPECT_EQ(parts.size(), 101u);
  EXPECT_EQ(joined(parts), big);
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) EXPECT_EQ(parts[i].size(), 1000u);
}

TEST(ChunkHeaders, NameIndexCountAndWholeLength) {
  Headers h = chunk_headers(2, 5, 12345);
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0].first, "x-pgfanout-chunk");
  EXPECT_EQ(std::get<std::int64_t>(h[0].second), 2);
  EXPECT_EQ(h[1].first, "x-pgfanout-chunks");
  EXPECT_EQ(std::get<std::int64_t>(h[1].second), 5);
  EXPECT_EQ(h[2].first, "x-pgfanout-chunked-bytes");
  EXPECT_EQ(std::get<std::int64_t>(h[2].second), 12345);
  EXPECT_TRUE(has_chunk_headers(h));
  EXPECT_FALSE(has_chunk_headers(Headers{{"x-pgfanout-count", std::int64_t{3}}}));
  EXPECT_TRUE(has_chunk_headers(Headers{{"x-pgfanout-chunks", std::string("3")}}));
}

TEST(MessageLimits, TheLargestChangeFitsInTheMostChunksAtTheSmallestLimit) {
  std::size_t body = kMinMessageBytes - kMessageMargin;
  EXPECT_LE((kMaxChunkedBytes + body - 1) / body, static_cast<std::size_t>(kMaxChunks));
}

TEST(ChangeJsonSize, IsTheLengthOfTheBody) {
  OutboxChange c;
  c.id = 987654321;
  c.schema = "we\"ird\\ sch\nema\x01";
  c.table = "t\tab.le\b\f\r";
  c.op = Op::Update;
  c.new_row = R"({"id": 1, "v": "x"})";
  c.old_key = R"({"id": 1})";
  c.ts = "2026-11-21T05:18:39.123456+00:00";
  std::string body = message_body(std::span(&c, 1));
  EXPECT_EQ(change_json_size(c), body.size());
  c.json_nulls = R"(["v"])";
  c.op = Op::Truncate;
  c.new_row.clear();
  c.old_key.clear();
  body = message_body(std::span(&c, 1));
  EXPECT_EQ(change_json_size(c), body.size());
}

}  // namespace
}  // namespace pgfanout
