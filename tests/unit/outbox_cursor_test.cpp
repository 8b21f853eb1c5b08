#include "outbox_cursor.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace pgfanout {
namespace {

using Gaps = std::vector<OutboxCursor::Gap>;
constexpr std::int64_t kAll = std::numeric_limits<std::int64_t>::max();  // read not cut short

void read(OutboxCursor& c, std::vector<std::int64_t> ids, std::uint64_t xmin, std::uint64_t next_xid,
          std::int64_t complete_through = kAll) {
  c.observe(ids, complete_through, xmin, next_xid);
}

TEST(OutboxCursor, StartsFromTheLowestIdAndMovesPastWhatItRead) {
  OutboxCursor c;
  EXPECT_EQ(c.after(), OutboxCursor::kStart);
  read(c, {1, 2, 3}, 100, 100);  // nothing was running: no gap below 1 can fill any more
  EXPECT_EQ(c.after(), 3);
  read(c, {}, 101, 101);
  EXPECT_EQ(c.after(), 3);
  EXPECT_TRUE(c.gaps().empty());
  EXPECT_EQ(c.floor(), 3);
}

TEST(OutboxCursor, AnIdCommittedLateIsReadOnceItIsVisible) {
  OutboxCursor c;
  read(c, {1}, 50, 50);
  read(c, {2, 4, 5}, 60, 70);  // 3 is still running
  EXPECT_EQ(c.after(), 5);
  ASSERT_EQ(c.gaps(), (Gaps{{3, 3, 70}}));
  read(c, {}, 65, 72);  // a transaction older than the gap still runs: keep it
  ASSERT_EQ(c.gaps(), (Gaps{{3, 3, 70}}));
  read(c, {3}, 66, 73);  // committed: seen
  EXPECT_TRUE(c.gaps().empty());
  EXPECT_EQ(c.after(), 5);
}

TEST(OutboxCursor, ARolledBackIdIsForgottenOnceEveryOlderTransactionEnded) {
  OutboxCursor c;
  read(c, {10, 12}, 80, 90);
  EXPECT_EQ(c.gaps(), (Gaps{{OutboxCursor::kStart + 1, 9, 90}, {11, 11, 90}}));
  read(c, {}, 89, 95);  // xid 89 may still commit id 11
  EXPECT_EQ(c.gaps().size(), 2u);
  read(c, {13}, 90, 96);  // every transaction below 90 has ended and 11 was not returned
  EXPECT_TRUE(c.gaps().empty());
  EXPECT_EQ(c.after(), 13);
}

TEST(OutboxCursor, AGapIsOnlyForgottenByAReadThatCoveredIt) {
  OutboxCursor c;
  read(c, {1, 3}, 10, 10);
  read(c, {5}, 10, 20);  // gap 4
  ASSERT_EQ(c.gaps(), (Gaps{{4, 4, 20}}));
  // Every old transaction has ended, but the read stopped at id 2 (its row limit) and
  // did not look at 4.
  read(c, {2}, 30, 30, 2);
  EXPECT_EQ(c.gaps(), (Gaps{{4, 4, 20}}));
  read(c, {}, 30, 30, 4);
  EXPECT_TRUE(c.gaps().empty());
}

TEST(OutboxCursor, IdsSeenInsideAGapSplitIt) {
  OutboxCursor c;
  read(c, {100}, 5, 5);
  read(c, {200}, 5, 9);
  ASSERT_EQ(c.gaps(), (Gaps{{101, 199, 9}}));
  read(c, {101, 150, 151, 199, 201}, 6, 11);
  EXPECT_EQ(c.gaps(), (Gaps{{102, 149, 9}, {152, 198, 9}}));
  EXPECT_EQ(c.floor(), 101);
  EXPECT_EQ(c.after(), 201);
}

TEST(OutboxCursor, ManyGapsAreMergedIntoOneThatStillCoversThemAll) {
  OutboxCursor c;
  read(c, {0}, 1, 1);
  std::vector<std::int64_t> every_other;
  for (std::int64_t id = 2; id <= 2 * static_cast<std::int64_t>(OutboxCursor::kMaxGaps) + 2; id += 2) every_other.push_back(id);
  read(c, every_other, 1, 40);
  ASSERT_EQ(c.gaps().size(), 1u);
  EXPECT_EQ(c.gaps().front().lo, 1);
  EXPECT_EQ(c.gaps().front().hi, every_other.back() - 1);
  EXPECT_EQ(c.gaps().front().before_xid, 40u);
}

TEST(OutboxCursor, RewindReadsFromTheStartAgain) {
  OutboxCursor c;
  read(c, {1, 3}, 7, 9);
  c.rewind();
  EXPECT_EQ(c.after(), OutboxCursor::kStart);
  EXPECT_TRUE(c.gaps().empty());
}

}  // namespace
}  // namespace pgfanout
