#include "snapshot.hpp"

#include <gtest/gtest.h>

namespace pgfanout {
namespace {

TEST(SnapshotFetch, GrowsFromOneRowToTheRowLimit) {
  std::size_t rows = 0;
  std::vector<std::size_t> seen;
  for (int i = 0; i < 16; ++i) seen.push_back(rows = next_fetch_rows(rows, 100));
  EXPECT_EQ(seen.front(), 1u);
  EXPECT_EQ(seen[1], 2u);
  EXPECT_EQ(seen.back(), kSnapshotFetchRows);
}

TEST(SnapshotFetch, WideRowsAreFetchedWithinTheByteBudget) {
  const std::size_t mb20 = 20u << 20;
  EXPECT_EQ(next_fetch_rows(kSnapshotFetchRows, mb20), kSnapshotFetchBytes / mb20);
  EXPECT_LE(next_fetch_rows(kSnapshotFetchRows, mb20) * mb20, kSnapshotFetchBytes);
  // A row wider than the whole budget is still fetched, alone.
  EXPECT_EQ(next_fetch_rows(kSnapshotFetchRows, kSnapshotFetchBytes * 4), 1u);
  EXPECT_EQ(next_fetch_rows(0, 0), 1u);
}

}  // namespace
}  // namespace pgfanout
