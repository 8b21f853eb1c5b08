#include "epoch_fence.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "change_parser.hpp"

namespace pgfanout {
namespace {

using Epochs = std::vector<std::optional<std::int64_t>>;
constexpr std::nullopt_t none = std::nullopt;

TEST(EpochFence, NothingIsStaleWithoutEpochs) {
  EpochVerdict v = judge_epochs(none, Epochs{none, none});
  EXPECT_EQ(v.stale, (std::vector<bool>{false, false}));
  EXPECT_EQ(v.highest, none);
  v = judge_epochs(7, Epochs{none, none});
  EXPECT_EQ(v.stale, (std::vector<bool>{false, false}));
  EXPECT_EQ(v.highest, 7);
}

TEST(EpochFence, AnOlderEpochThanTheAppliedOneIsStale) {
  EpochVerdict v = judge_epochs(10, Epochs{9, 10, 11, none, 3});
  EXPECT_EQ(v.stale, (std::vector<bool>{true, false, false, false, true}));
  EXPECT_EQ(v.highest, 11);
}

TEST(EpochFence, ANewerEpochInTheBatchFencesWhatFollowsIt) {
  // The new leader's first message, then the deposed one's batch, then the new leader's.
  EpochVerdict v = judge_epochs(none, Epochs{5, 5, 8, 5, 5, 8});
  EXPECT_EQ(v.stale, (std::vector<bool>{false, false, false, true, true, false}));
  EXPECT_EQ(v.highest, 8);
}

TEST(EpochFence, MessagesWithoutTheHeaderAreAlwaysApplied) {
  // Other publishers and replayed dead letters carry none, also behind a newer epoch.
  EpochVerdict v = judge_epochs(20, Epochs{none, 21, none});
  EXPECT_EQ(v.stale, (std::vector<bool>{false, false, false}));
  EXPECT_EQ(v.highest, 21);
}

TEST(EpochFence, ReadsTheHeader) {
  EXPECT_EQ(message_epoch({}), none);
  EXPECT_EQ(message_epoch({{"x-pgfanout-count", std::int64_t{3}}}), none);
  EXPECT_EQ(message_epoch({{"x-pgfanout-epoch", std::int64_t{1796545462347268}}}), 1796545462347268);
  EXPECT_EQ(message_epoch({{"x-pgfanout-epoch", std::int64_t{0}}}), 0);
}

TEST(EpochFence, AHeaderOfTheWrongTypeOrRangeIsABadShape) {
  for (const Headers& h : {Headers{{"x-pgfanout-epoch", std::string("12")}},
                           Headers{{"x-pgfanout-epoch", std::int64_t{-1}}}}) {
    try {
      message_epoch(h);
      ADD_FAILURE() << "accepted a bad epoch header";
    } catch (const BadMessage& e) {
      EXPECT_EQ(e.reason(), "bad-shape");
    }
  }
}

}  // namespace
}  // namespace pgfanout
