#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "pgfanout/change.hpp"

namespace pgfanout {

/// A run of consecutive changes [begin, end) that travels as one message.
struct PlannedMessage {
  std::size_t begin;
  std::size_t end;
};

/// Splits changes (in outbox order) into messages: each message holds up to `pack`
/// consecutive changes of one table, so the order of changes is the order of messages.
std::vector<PlannedMessage> plan_messages(std::span<const OutboxChange> changes, std::size_t pack);

}  // namespace pgfanout
