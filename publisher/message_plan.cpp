#include "message_plan.hpp"

namespace pgfanout {

std::vector<PlannedMessage> plan_messages(std::span<const OutboxChange> changes, std::size_t pack,
                                          std::size_t max_body_bytes) {
  std::vector<PlannedMessage> out;
  if (pack == 0) pack = 1;
  std::size_t i = 0;
  while (i < changes.size()) {
    std::size_t j = i + 1;
    // A pack's body is '[' change (',' change)* ']' (message_body).
    std::size_t bytes = 2 + change_json_size(changes[i]);
    while (j < changes.size() && j - i < pack && changes[j].schema == changes[i].schema &&
           changes[j].table == changes[i].table) {
      std::size_t more = 1 + change_json_size(changes[j]);
      if (bytes + more > max_body_bytes) break;
      bytes += more;
      ++j;
    }
    out.push_back({i, j});
    i = j;
  }
  return out;
}

}  // namespace pgfanout
