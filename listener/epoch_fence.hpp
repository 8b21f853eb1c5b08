#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "pgfanout/amqp_connection.hpp"

namespace pgfanout {

/// The header in which a publisher sends the epoch of its lease (README, "Leadership and
/// fencing").
inline constexpr std::string_view kEpochHeader = "x-pgfanout-epoch";

/// The epoch a message carries, nullopt without the header (messages of other publishers,
/// dead letters replayed). Throws BadMessage("bad-shape") when it is not a non-negative
/// integer.
std::optional<std::int64_t> message_epoch(const Headers& headers);

/// Which changes of a batch come from a deposed publisher.
///
/// Every new leader of a primary takes a larger epoch than any before it, and only after
/// the previous leader's PostgreSQL session ended. A change leaves the outbox only through
/// the leader's session, and only once the broker confirmed it. So everything a deposed
/// leader still sends after its successor's first message is a change still in the outbox
/// when the successor started reading: the successor ships it again, with its own epoch,
/// in commit order. Such a message is the only one to arrive behind a message of a larger
/// epoch, and dropping it loses nothing, while applying it could write a row version over
/// a newer one. Messages a deposed leader got confirmed before it was deposed sit in the
/// queue ahead of its successor's and are applied as usual.
struct EpochVerdict {
  /// One per change: true for a change to drop.
  std::vector<bool> stale;
  /// The largest epoch seen, `applied` included; nullopt when there was none at all.
  std::optional<std::int64_t> highest;
};

/// Judges the changes of a batch, in delivery order, each with the epoch of its message
/// (nullopt: none, always applied), against `applied`, the largest epoch applied on this
/// queue before. A change is stale when an earlier message (in this batch or before it)
/// had a larger epoch.
EpochVerdict judge_epochs(std::optional<std::int64_t> applied,
                          const std::vector<std::optional<std::int64_t>>& epochs);

}  // namespace pgfanout
