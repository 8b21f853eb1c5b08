#include "pgfanout/backoff.hpp"

#include <algorithm>

namespace pgfanout {

Backoff::duration Backoff::next_delay() {
  duration d = std::min(next_, cap_);
  next_ = std::min(next_ * 2, cap_);
  ++attempts_;
  return d;
}

void Backoff::reset() {
  next_ = initial_;
  attempts_ = 0;
}

}  // namespace pgfanout
