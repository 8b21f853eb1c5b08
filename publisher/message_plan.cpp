#include "message_plan.hpp"

namespace pgfanout {

std::vector<PlannedMessage> plan_messages(std::span<const OutboxChange> changes, std::size_t pack) {
  std::vector<PlannedMessage> out;
  if (pack == 0) pack = 1;
  std::size_t i = 0;
  while (i < changes.size()) {
    std::size_t j = i + 1;
    while (j < changes.size() && j - i < pack && changes[j].schema == changes[i].schema &&
           changes[j].table == changes[i].table) {
      ++j;
    }
    out.push_back({i, j});
    i = j;
  }
  return out;
}

}  // namespace pgfanout
