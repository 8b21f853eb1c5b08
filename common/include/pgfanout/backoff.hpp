#pragma once

#include <chrono>

namespace pgfanout {

/// Capped exponential backoff for reconnecting to a server that went away: the first
/// delay is `initial`, each failure doubles it up to `cap`, and reset() after a success
/// starts again from `initial`. Pure: it only computes delays, the caller waits.
class Backoff {
 public:
  using duration = std::chrono::milliseconds;

  Backoff(duration initial, duration cap) : initial_(initial), cap_(cap), next_(initial) {}

  /// The delay to wait before the next attempt; advances the schedule.
  duration next_delay();
  /// How many delays were handed out since the last reset (the attempt number).
  int attempts() const { return attempts_; }
  void reset();

 private:
  duration initial_;
  duration cap_;
  duration next_;
  int attempts_ = 0;
};

}  // namespace pgfanout
