#include "outbox_cursor.hpp"

#include <algorithm>

namespace pgfanout {

void OutboxCursor::observe(std::span<const std::int64_t> ids, std::int64_t complete_through,
                           std::uint64_t snapshot_xmin, std::uint64_t next_xid) {
  // A gap whose transactions had all ended when this read's snapshot was taken, and that
  // the read covered, holds nothing that can still appear.
  std::erase_if(gaps_, [&](const Gap& g) { return g.before_xid <= snapshot_xmin && g.hi <= complete_through; });

  std::vector<Gap> next;
  next.reserve(gaps_.size() + 4);
  // Ids returned from inside a gap have been seen: cut them out of it.
  std::size_t i = 0;
  for (const Gap& g : gaps_) {
    std::int64_t lo = g.lo;
    while (i < ids.size() && ids[i] < lo) ++i;
    for (; i < ids.size() && ids[i] <= g.hi; ++i) {
      if (ids[i] > lo) next.push_back({lo, ids[i] - 1, g.before_xid});
      lo = ids[i] + 1;
    }
    if (lo <= g.hi) next.push_back({lo, g.hi, g.before_xid});
  }
  // Above the old start: every id between two returned ids is a new gap.
  auto above = std::upper_bound(ids.begin(), ids.end(), after_);
  if (above != ids.end()) {
    std::int64_t expect = after_ + 1;
    for (; above != ids.end(); ++above) {
      if (*above > expect) next.push_back({expect, *above - 1, next_xid});
      expect = *above + 1;
    }
    after_ = ids.back();
  }
  if (next.size() > kMaxGaps) {
    Gap all{next.front().lo, next.back().hi, 0};
    for (const Gap& g : next) all.before_xid = std::max(all.before_xid, g.before_xid);
    next.assign(1, all);
  }
  gaps_ = std::move(next);
}

}  // namespace pgfanout
