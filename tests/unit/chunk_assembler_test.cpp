#include "chunk_assembler.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "pgfanout/message_chunks.hpp"

namespace pgfanout {
namespace {

std::uint64_t next_tag = 0;

Delivery plain(const std::string& id, const std::string& body = "{}") {
  Delivery d;
  d.delivery_tag = ++next_tag;
  d.routing_key = "public.t";
  d.message_id = id;
  d.body = body;
  d.content_type = "application/json";
  d.delivery_mode = 2;
  return d;
}

// The chunks the publisher sends for `body` (message_id `id`), at most `size` bytes each.
std::vector<Delivery> chunks_of(const std::string& id, const std::string& body, std::size_t size) {
  std::vector<Delivery> out;
  auto parts = split_body(body, size);
  for (std::size_t k = 0; k < parts.size(); ++k) {
    Delivery d = plain(id, std::string(parts[k]));
    d.content_type = std::string(kChunkContentType);
    d.headers = chunk_headers(static_cast<std::int64_t>(k), static_cast<std::int64_t>(parts.size()), body.size());
    out.push_back(std::move(d));
  }
  return out;
}

std::vector<ChunkAssembler::Output> feed(ChunkAssembler& a, std::vector<Delivery> ds) {
  std::vector<ChunkAssembler::Output> out;
  for (auto& d : ds) {
    for (auto& o : a.add(std::move(d))) out.push_back(std::move(o));
  }
  return out;
}

std::size_t refused_count(const std::vector<ChunkAssembler::Output>& out) {
  std::size_t n = 0;
  for (const auto& o : out) n += o.refused.has_value();
  return n;
}

void set_header(Delivery& d, std::string_view key, HeaderValue value) {
  for (auto& h : d.headers) {
    if (h.first == key) h.second = std::move(value);
  }
}

const std::string kBody = R"({"id":7,"table":"public.t","op":"INSERT","new":{"id":1,"v":"abcdefghijklmnopqrstuvwxyz"}})";

TEST(ChunkAssembler, PlainMessagesPassThrough) {
  ChunkAssembler a;
  auto out = feed(a, {plain("1"), plain("2")});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].delivery.message_id, "1");
  EXPECT_FALSE(out[0].refused);
  EXPECT_EQ(out[0].chunk_bytes, 0u);
  EXPECT_FALSE(a.holding());
}

TEST(ChunkAssembler, ConsecutiveChunksBecomeTheChangeTaggedWithTheLastChunk) {
  ChunkAssembler a;
  auto cs = chunks_of("7", kBody, 10);
  ASSERT_GT(cs.size(), 5u);
  std::uint64_t last_tag = cs.back().delivery_tag;
  cs.front().headers.emplace_back("x-other", std::string("kept"));
  std::vector<ChunkAssembler::Output> out;
  for (std::size_t i = 0; i < cs.size(); ++i) {
    auto o = a.add(std::move(cs[i]));
    if (i + 1 < 10 && i + 1 < cs.size()) {
      EXPECT_TRUE(o.empty());
      EXPECT_TRUE(a.holding());
    }
    for (auto& x : o) out.push_back(std::move(x));
  }
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].refused);
  EXPECT_EQ(out[0].delivery.body, kBody);
  EXPECT_EQ(out[0].delivery.delivery_tag, last_tag);
  EXPECT_EQ(out[0].delivery.message_id, "7");
  EXPECT_EQ(out[0].delivery.routing_key, "public.t");
  EXPECT_EQ(out[0].delivery.content_type, "application/json");
  EXPECT_EQ(out[0].chunk_bytes, 10u);
  EXPECT_FALSE(has_chunk_headers(out[0].delivery.headers));
  ASSERT_EQ(out[0].delivery.headers.size(), 1u);
  EXPECT_EQ(out[0].delivery.headers[0].first, "x-other");
  EXPECT_FALSE(a.holding());
}

TEST(ChunkAssembler, ChangesKeepTheirOrderAmongPlainMessages) {
  ChunkAssembler a;
  std::vector<Delivery> in{plain("1")};
  for (auto& c : chunks_of("2", kBody, 40)) in.push_back(std::move(c));
  in.push_back(plain("3"));
  for (auto& c : chunks_of("4", kBody + " ", 30)) in.push_back(std::move(c));
  auto out = feed(a, std::move(in));
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(refused_count(out), 0u);
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < out.size(); ++i) {
    ids.push_back(out[i].delivery.message_id);
    if (i) {
      EXPECT_GT(out[i].delivery.delivery_tag, out[i - 1].delivery.delivery_tag);
    }
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"1", "2", "3", "4"}));
  EXPECT_EQ(out[3].delivery.body, kBody + " ");
}

TEST(ChunkAssembler, OneChunkIsAChangeToo) {
  ChunkAssembler a;
  auto out = feed(a, chunks_of("9", kBody, 1000));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(has_chunk_headers(chunks_of("9", kBody, 1000)[0].headers));
  EXPECT_FALSE(out[0].refused);
  EXPECT_EQ(out[0].delivery.body, kBody);
}

TEST(ChunkAssembler, AMissingChunkRefusesTheOthersAsTheyCame) {
  ChunkAssembler a;
  auto cs = chunks_of("7", kBody, 20);
  cs.erase(cs.begin() + 2);
  std::vector<std::string> bodies;
  for (const auto& c : cs) bodies.push_back(c.body);
  auto out = feed(a, std::move(cs));
  // The two before the gap, then each after it alone (none is a first chunk).
  ASSERT_EQ(out.size(), bodies.size());
  EXPECT_EQ(refused_count(out), out.size());
  for (std::size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].delivery.body, bodies[i]);
    EXPECT_TRUE(has_chunk_headers(out[i].delivery.headers));
    EXPECT_EQ(out[i].delivery.content_type, kChunkContentType);
  }
  EXPECT_FALSE(a.holding());
}

TEST(ChunkAssembler, AChangeCutShortByAnotherMessageIsRefusedAndTheMessageGoesOn) {
  ChunkAssembler a;
  auto cs = chunks_of("7", kBody, 20);
  std::vector<Delivery> in;
  in.push_back(std::move(cs[0]));
  in.push_back(std::move(cs[1]));
  in.push_back(plain("8"));
  auto out = feed(a, std::move(in));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_TRUE(out[0].refused);
  EXPECT_TRUE(out[1].refused);
  EXPECT_FALSE(out[2].refused);
  EXPECT_EQ(out[2].delivery.message_id, "8");
  EXPECT_NE(out[0].refused->find("stop at chunk 2 of"), std::string::npos) << *out[0].refused;
}

TEST(ChunkAssembler, AChangePublishedAgainAfterACutOffCopyIsApplied) {
  // A publisher that lost its connection in the middle of a change publishes it again.
  ChunkAssembler a;
  auto first = chunks_of("7", kBody, 20);
  std::vector<Delivery> in;
  in.push_back(std::move(first[0]));
  in.push_back(std::move(first[1]));
  for (auto& c : chunks_of("7", kBody, 20)) in.push_back(std::move(c));
  auto out = feed(a, std::move(in));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_TRUE(out[0].refused);
  EXPECT_TRUE(out[1].refused);
  EXPECT_FALSE(out[2].refused);
  EXPECT_EQ(out[2].delivery.body, kBody);
}

TEST(ChunkAssembler, DuplicatedAndReorderedChunksAreRefused) {
  for (int variant = 0; variant < 2; ++variant) {
    ChunkAssembler a;
    auto cs = chunks_of("7", kBody, 20);
    std::size_t n = cs.size();
    if (variant == 0) {
      Delivery dup = cs[1];
      dup.delivery_tag = ++next_tag;
      cs.insert(cs.begin() + 2, std::move(dup));
    } else {
      std::swap(cs[1], cs[2]);
    }
    auto out = feed(a, std::move(cs));
    EXPECT_EQ(refused_count(out), out.size()) << "variant " << variant;
    EXPECT_EQ(out.size(), variant == 0 ? n + 1 : n);
    EXPECT_FALSE(a.holding());
  }
}

TEST(ChunkAssembler, ChunksOfAnotherChangeOrKeyDoNotContinueIt) {
  ChunkAssembler a;
  auto cs = chunks_of("7", kBody, 20);
  cs[1].message_id = "70";
  auto out = feed(a, std::move(cs));
  EXPECT_EQ(refused_count(out), out.size());

  auto ks = chunks_of("7", kBody, 20);
  ks[1].routing_key = "public.other";
  out = feed(a, std::move(ks));
  EXPECT_EQ(refused_count(out), out.size());
}

TEST(ChunkAssembler, LengthsThatDisagreeWithTheDeclaredOneAreRefused) {
  ChunkAssembler a;
  // Fewer bytes than declared at the last chunk.
  auto shorter = chunks_of("7", kBody, 20);
  for (auto& c : shorter) set_header(c, kChunkedBytesHeader, std::int64_t(kBody.size() + 5));
  auto out = feed(a, std::move(shorter));
  EXPECT_EQ(out.size(), refused_count(out));
  EXPECT_GT(out.size(), 0u);
  // More bytes than declared before the last chunk.
  auto longer = chunks_of("7", kBody, 20);
  for (auto& c : longer) set_header(c, kChunkedBytesHeader, std::int64_t(30));
  out = feed(a, std::move(longer));
  EXPECT_EQ(out.size(), refused_count(out));
  EXPECT_FALSE(a.holding());
  // Chunks whose declared counts disagree.
  auto counts = chunks_of("7", kBody, 20);
  set_header(counts[1], kChunkCountHeader, std::int64_t(50));
  out = feed(a, std::move(counts));
  EXPECT_EQ(out.size(), refused_count(out));
}

TEST(ChunkAssembler, HostileHeadersAreRefusedWithoutHoldingAnything) {
  std::vector<Headers> hostile{
      {{"x-pgfanout-chunk", std::int64_t{0}}},                                 // the rest missing
      {{"x-pgfanout-chunk", std::string("0")}, {"x-pgfanout-chunks", std::int64_t{2}},
       {"x-pgfanout-chunked-bytes", std::int64_t{10}}},                        // a string
      chunk_headers(0, 0, 10),                                                 // no chunks
      chunk_headers(0, -3, 10),
      chunk_headers(0, kMaxChunks + 1, 10),                                    // too many
      chunk_headers(0, std::numeric_limits<std::int64_t>::max(), 10),
      chunk_headers(-1, 2, 10),
      chunk_headers(2, 2, 10),                                                 // index past count
      chunk_headers(0, 2, 0),
      chunk_headers(0, 2, kMaxChunkedBytes + 1),                               // over the bound
      chunk_headers(0, 2, 3),                                                  // body longer than declared
  };
  Headers twice = chunk_headers(0, 2, 10);
  twice.emplace_back("x-pgfanout-chunk", std::int64_t{1});
  hostile.push_back(twice);
  for (const auto& h : hostile) {
    ChunkAssembler a;
    Delivery d = plain("5", "0123456789");
    d.headers = h;
    auto out = a.add(std::move(d));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_TRUE(out[0].refused);
    EXPECT_FALSE(a.holding());
  }
  ChunkAssembler a;
  Delivery empty = plain("5", "");
  empty.headers = chunk_headers(0, 2, 10);
  auto out = a.add(std::move(empty));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].refused);
}

TEST(ChunkAssembler, AMalformedChunkAlsoEndsTheChangeAtHand) {
  ChunkAssembler a;
  auto cs = chunks_of("7", kBody, 20);
  set_header(cs[1], kChunkIndexHeader, std::string("one"));
  auto out = feed(a, std::move(cs));
  EXPECT_EQ(out.size(), refused_count(out));
}

TEST(ChunkAssembler, ClearForgetsAPartialChange) {
  ChunkAssembler a;
  auto cs = chunks_of("7", kBody, 20);
  EXPECT_TRUE(a.add(std::move(cs[0])).empty());
  EXPECT_TRUE(a.holding());
  EXPECT_EQ(a.held_bytes(), 20u);
  a.clear();
  EXPECT_FALSE(a.holding());
  auto out = feed(a, chunks_of("7", kBody, 20));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].refused);
}

TEST(DeadLetterParts, AChangeThatCameInChunksGoesAsTheSameChunks) {
  ChunkAssembler a;
  auto original = chunks_of("7", kBody, 20);
  auto out = feed(a, original);
  ASSERT_EQ(out.size(), 1u);
  auto parts = dead_letter_parts(out[0].delivery.body, out[0].delivery, out[0].chunk_bytes);
  ASSERT_EQ(parts.size(), original.size());
  for (std::size_t i = 0; i < parts.size(); ++i) {
    EXPECT_EQ(parts[i].body, original[i].body);
    EXPECT_EQ(parts[i].headers, original[i].headers);
    EXPECT_EQ(parts[i].content_type, kChunkContentType);
  }
  // Dead letters in that form are put together again (a replay).
  std::vector<Delivery> replay;
  for (const auto& p : parts) {
    Delivery d = plain("7", std::string(p.body));
    d.headers = p.headers;
    d.headers.emplace_back("x-pgfanout-reason", std::string("apply-failed"));
    replay.push_back(std::move(d));
  }
  auto again = feed(a, std::move(replay));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_FALSE(again[0].refused);
  EXPECT_EQ(again[0].delivery.body, kBody);
}

TEST(DeadLetterParts, OneChangeOfAChunkedPackIsCutAtTheSameSize) {
  Delivery d = plain("7", std::string(100, 'p'));
  auto parts = dead_letter_parts(std::string(45, 'c'), d, 20);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[2].body.size(), 5u);
  auto small = dead_letter_parts("tiny", d, 20);
  ASSERT_EQ(small.size(), 1u);
  EXPECT_TRUE(small[0].headers.empty());
  EXPECT_EQ(small[0].content_type, "application/json");
}

TEST(DeadLetterParts, ARefusedChunkKeepsItsChunkHeadersAndPlainMessagesNone) {
  Delivery chunk = plain("7", "abc");
  chunk.content_type = "application/octet-stream";
  chunk.headers = chunk_headers(1, 3, 9);
  chunk.headers.emplace_back("x-pgfanout-count", std::int64_t{4});
  auto parts = dead_letter_parts(chunk.body, chunk, 0);
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0].headers, chunk_headers(1, 3, 9));
  EXPECT_EQ(parts[0].content_type, "application/octet-stream");
  Delivery d = plain("8", "{}");
  d.headers.emplace_back("x-pgfanout-count", std::int64_t{4});
  parts = dead_letter_parts(d.body, d, 0);
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_TRUE(parts[0].headers.empty());
}

}  // namespace
}  // namespace pgfanout
