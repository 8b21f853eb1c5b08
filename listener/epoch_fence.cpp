#include "epoch_fence.hpp"

#include <string>
#include <variant>

#include "change_parser.hpp"

namespace pgfanout {

std::optional<std::int64_t> message_epoch(const Headers& headers) {
  std::optional<std::int64_t> epoch;
  for (const auto& [key, value] : headers) {
    if (key != kEpochHeader) continue;
    const auto* n = std::get_if<std::int64_t>(&value);
    if (!n || *n < 0) {
      throw BadMessage("bad-shape", std::string("header ") + std::string(kEpochHeader) +
                                        " is not a non-negative integer");
    }
    epoch = *n;
  }
  return epoch;
}

EpochVerdict judge_epochs(std::optional<std::int64_t> applied,
                          const std::vector<std::optional<std::int64_t>>& epochs) {
  EpochVerdict verdict;
  verdict.stale.reserve(epochs.size());
  verdict.highest = applied;
  for (const auto& epoch : epochs) {
    bool stale = epoch && verdict.highest && *epoch < *verdict.highest;
    verdict.stale.push_back(stale);
    if (epoch && !stale) verdict.highest = epoch;
  }
  return verdict;
}

}  // namespace pgfanout
