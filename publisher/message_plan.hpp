#pragma once

#include <cstddef>
#include <limits>
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
/// A pack is cut before the change that would make its body longer than
/// `max_body_bytes`; a single change longer than that is a message of its own (the
/// publisher sends it in chunks).
std::vector<PlannedMessage> plan_messages(
    std::span<const OutboxChange> changes, std::size_t pack,
    std::size_t max_body_bytes = std::numeric_limits<std::size_t>::max());

}  // namespace pgfanout
