#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "pgfanout/amqp_connection.hpp"

namespace pgfanout {

/// The chunk format (README, Message format): a body bigger than a broker takes travels
/// as consecutive messages with the same routing key and message_id, each holding the
/// next slice of the body's bytes and these headers. Shared by the publisher, which
/// splits, and the listener, which puts the body together again and dead-letters a
/// refused change as the same chunks.
inline constexpr std::string_view kChunkIndexHeader = "x-pgfanout-chunk";   ///< 0, 1, ...
inline constexpr std::string_view kChunkCountHeader = "x-pgfanout-chunks";  ///< how many
inline constexpr std::string_view kChunkedBytesHeader = "x-pgfanout-chunked-bytes";  ///< whole body
inline constexpr std::string_view kChunkContentType = "application/octet-stream";

/// What --max-message-bytes keeps free for a message's properties and headers (message_id,
/// routing key, content type, the headers above): a body is at most the limit minus this.
/// RabbitMQ 3.x counts the body alone against max_message_size; the margin keeps a broker
/// that counts the properties too under its limit as well.
inline constexpr std::size_t kMessageMargin = 4096;

/// The largest body the listener puts together, and the most chunks it waits for: more is
/// dead-lettered. A row is one jsonb value on the primary, at most 256 MiB, so a body
/// never needs more; and the listener's prefetch (2,000) must hold every chunk of one
/// change, or it would wait for the rest forever.
inline constexpr std::size_t kMaxChunkedBytes = std::size_t{512} << 20;
inline constexpr std::int64_t kMaxChunks = 1024;

/// The bounds of --max-message-bytes: the body of a change of kMaxChunkedBytes must fit
/// in kMaxChunks chunks, and RabbitMQ takes no message over 512 MiB.
inline constexpr std::int64_t kMinMessageBytes = std::int64_t{1} << 20;
inline constexpr std::int64_t kMaxMessageBytes = std::int64_t{512} << 20;
inline constexpr std::int64_t kDefaultMessageBytes = std::int64_t{16} << 20;

/// `body` cut into consecutive slices of at most `max_chunk` bytes (max_chunk > 0), all
/// of the same size but the last. A body of at most `max_chunk` bytes is one slice.
std::vector<std::string_view> split_body(std::string_view body, std::size_t max_chunk);

/// The headers of chunk `index` of `count` of a body of `body_bytes` bytes.
Headers chunk_headers(std::int64_t index, std::int64_t count, std::size_t body_bytes);

/// True when `headers` hold any of the chunk headers: such a message is a chunk (or claims
/// to be one) and goes to the listener's ChunkAssembler.
bool has_chunk_headers(const Headers& headers);

}  // namespace pgfanout
