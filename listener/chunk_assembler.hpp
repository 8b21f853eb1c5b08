#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pgfanout/amqp_connection.hpp"

namespace pgfanout {

/// Puts chunked changes (pgfanout/message_chunks.hpp, README "Message format") together
/// again from deliveries in queue order. Pure logic: it never acks; the listener acks
/// through the delivery tag of what it hands out, so the chunks of a change are acked
/// with the change, only after it was applied.
///
/// The chunks of one change are consecutive in the queue (one publisher channel publishes
/// them in order, and the broker puts unacked messages back in place), so anything else is
/// refused: a chunk that does not continue the change at hand (missing, duplicated, out of
/// order, another message_id or routing key, headers that disagree or are out of range,
/// more bytes than declared, or fewer at the last chunk), and a change whose chunks are
/// interrupted by any other message. Refused deliveries are handed out one by one with a
/// reason, to be dead-lettered as they came. A change whose chunks were cut off by a
/// publisher that lost its connection is published again in full right behind them; its
/// first copy is refused as incomplete, and the second applied.
class ChunkAssembler {
 public:
  struct Output {
    /// A delivery as received, or a change put together: its body the whole body, its
    /// delivery tag that of its last chunk (acking it acks every chunk), its headers those
    /// of its first chunk without the chunk headers, content type application/json.
    Delivery delivery;
    /// For a change put together: the size of its first chunk, at which it is cut again to
    /// be dead-lettered. 0 otherwise.
    std::size_t chunk_bytes = 0;
    /// Set when the delivery is to be dead-lettered as it is (reason `bad-chunk`): why.
    std::optional<std::string> refused;
  };

  /// Takes the next delivery of the queue. Returns what is ready, in delivery order: the
  /// delivery itself when it is not a chunk; nothing while a change's chunks are still
  /// coming; the change once its last chunk is in; refused deliveries as they are found
  /// out (a partial change before the delivery that interrupts it).
  std::vector<Output> add(Delivery delivery);

  /// Forgets a partial change (after a reconnect the broker delivers its chunks again).
  void clear();
  /// Whether chunks of a change are held, not handed out yet (and so not acked).
  bool holding() const { return !pieces_.empty(); }
  /// Body bytes held.
  std::size_t held_bytes() const { return body_.size(); }

 private:
  struct Piece {
    std::uint64_t delivery_tag;
    bool redelivered;
    std::size_t size;
    Headers headers;
    std::string content_type;
    std::uint8_t delivery_mode;
  };
  struct ChunkHeaders {
    std::int64_t index;
    std::int64_t count;
    std::int64_t bytes;
  };
  static std::optional<ChunkHeaders> read_headers(const Delivery& d, std::string& error);
  void start(Delivery&& d, const ChunkHeaders& h);
  void append(Delivery&& d);
  Output complete();
  /// Hands out every held chunk as refused, with `why`, and forgets the change.
  void refuse_held(const std::string& why, std::vector<Output>& out);

  std::vector<Piece> pieces_;
  std::string body_;
  std::string routing_key_;
  std::string message_id_;
  ChunkHeaders expected_{};
};

/// One message that dead-letters (part of) a delivery.
struct DeadLetterPart {
  std::string_view body;
  std::string_view content_type;
  Headers headers;  ///< the chunk headers it carries, if any (the caller adds the reason)
};

/// How `body` (a delivery's own body, or one change of it) goes to QUEUE.dead, so that it
/// stays under the broker's message size limit and a replay into the queue works:
/// - a change that came in chunks (`chunk_bytes` > 0) goes as chunks of that size again;
/// - a refused chunk keeps its chunk headers and content type;
/// - anything else goes as one application/json message.
std::vector<DeadLetterPart> dead_letter_parts(std::string_view body, const Delivery& delivery,
                                              std::size_t chunk_bytes);

}  // namespace pgfanout
