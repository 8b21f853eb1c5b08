#include "pgfanout/backoff.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace pgfanout {
namespace {

using namespace std::chrono_literals;
using ms = std::chrono::milliseconds;

TEST(Backoff, DoublesFromInitialUpToTheCap) {
  Backoff b(100ms, 1000ms);
  std::vector<ms> got;
  for (int i = 0; i < 7; ++i) got.push_back(b.next_delay());
  EXPECT_EQ(got, (std::vector<ms>{100ms, 200ms, 400ms, 800ms, 1000ms, 1000ms, 1000ms}));
}

TEST(Backoff, FirstDelayIsTheInitialOne) {
  Backoff b(500ms, 30000ms);
  EXPECT_EQ(b.next_delay(), 500ms);
}

TEST(Backoff, StaysAtTheCapForever) {
  Backoff b(1ms, 30000ms);
  for (int i = 0; i < 200; ++i) b.next_delay();  // far past any doubling overflow
  EXPECT_EQ(b.next_delay(), 30000ms);
  EXPECT_EQ(b.attempts(), 201);
}

TEST(Backoff, InitialAboveCapIsCapped) {
  Backoff b(5000ms, 1000ms);
  EXPECT_EQ(b.next_delay(), 1000ms);
  EXPECT_EQ(b.next_delay(), 1000ms);
}

TEST(Backoff, CountsAttemptsFromOne) {
  Backoff b(10ms, 100ms);
  EXPECT_EQ(b.attempts(), 0);
  b.next_delay();
  EXPECT_EQ(b.attempts(), 1);
  b.next_delay();
  b.next_delay();
  EXPECT_EQ(b.attempts(), 3);
}

TEST(Backoff, ResetStartsOverFromInitial) {
  Backoff b(100ms, 1000ms);
  for (int i = 0; i < 5; ++i) b.next_delay();
  b.reset();
  EXPECT_EQ(b.attempts(), 0);
  EXPECT_EQ(b.next_delay(), 100ms);
  EXPECT_EQ(b.next_delay(), 200ms);
  EXPECT_EQ(b.attempts(), 2);
}

TEST(Backoff, RetryLoopMakesExactlyTheAttemptsItCounts) {
  // The ClickHouse-style off-by-one: a loop that retries while attempts() < 3 must try three
  // times and report the third attempt as the last one, not lose it.
  Backoff b(1ms, 8ms);
  int tries = 0;
  while (b.attempts() < 3) {
    b.next_delay();
    ++tries;
  }
  EXPECT_EQ(tries, 3);
  EXPECT_EQ(b.attempts(), 3);
}

}  // namespace
}  // namespace pgfanout
