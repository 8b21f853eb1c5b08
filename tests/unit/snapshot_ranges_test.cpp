#include <gtest/gtest.h>

#include "snapshot.hpp"

namespace pgfanout {
namespace {

TEST(SnapshotRanges, ASmallTableIsOneRange) {
  EXPECT_TRUE(ctid_cuts(0, 4).empty());
  EXPECT_TRUE(ctid_cuts(kMinRangeBlocks * 2 - 1, 4).empty());
}

TEST(SnapshotRanges, OneWorkerStillGetsSeveralRangesOfABigTable) {
  EXPECT_EQ(ctid_cuts(kMinRangeBlocks * 100, 1).size(), kRangesPerWorker - 1);
}

// pgbench scale 10: 1,000,000 rows on 16,394 pages.
TEST(SnapshotRanges, ABigTableIsCutIntoAscendingRangesOfAtLeastTheMinimum) {
  for (unsigned workers : {1u, 2u, 3u, 8u}) {
    std::vector<std::uint64_t> cuts = ctid_cuts(16394, workers);
    ASSERT_FALSE(cuts.empty());
    EXPECT_LE(cuts.size() + 1, std::size_t{workers} * kRangesPerWorker);
    std::uint64_t previous = 0;
    for (std::uint64_t cut : cuts) {
      EXPECT_GE(cut - previous, kMinRangeBlocks) << workers << " workers";
      previous = cut;
    }
    EXPECT_GE(16394 - previous, kMinRangeBlocks);
  }
}

TEST(SnapshotRanges, TheDefaultWorkersAreTwoToEight) {
  EXPECT_GE(default_snapshot_workers(), 2u);
  EXPECT_LE(default_snapshot_workers(), 8u);
}

}  // namespace
}  // namespace pgfanout
