#include "chunk_assembler.hpp"

#include <utility>
#include <variant>

#include "pgfanout/message_chunks.hpp"

namespace pgfanout {

namespace {

std::string describe(std::int64_t index, std::int64_t count) {
  return "chunk " + std::to_string(index + 1) + " of " + std::to_string(count);
}

Headers without_chunk_headers(const Headers& headers) {
  Headers out;
  for (const auto& h : headers) {
    if (!has_chunk_headers(Headers{h})) out.push_back(h);
  }
  return out;
}

}  // namespace

std::optional<ChunkAssembler::ChunkHeaders> ChunkAssembler::read_headers(const Delivery& d,
                                                                         std::string& error) {
  std::optional<std::int64_t> index, count, bytes;
  for (const auto& [key, value] : d.headers) {
    std::optional<std::int64_t>* slot = key == kChunkIndexHeader    ? &index
                                        : key == kChunkCountHeader  ? &count
                                        : key == kChunkedBytesHeader ? &bytes
                                                                     : nullptr;
    if (!slot) continue;
    const auto* n = std::get_if<std::int64_t>(&value);
    if (!n) {
      error = "header " + key + " is not an integer";
      return std::nullopt;
    }
    if (*slot) {
      error = "header " + key + " appears twice";
      return std::nullopt;
    }
    *slot = *n;
  }
  if (!index || !count || !bytes) {
    error = "a chunk needs the headers " + std::string(kChunkIndexHeader) + ", " +
            std::string(kChunkCountHeader) + " and " + std::string(kChunkedBytesHeader);
    return std::nullopt;
  }
  if (*count < 1 || *count > kMaxChunks) {
    error = "a change in " + std::to_string(*count) + " chunks (at most " +
            std::to_string(kMaxChunks) + ")";
    return std::nullopt;
  }
  if (*index < 0 || *index >= *count) {
    error = "chunk index " + std::to_string(*index) + " of " + std::to_string(*count) + " chunks";
    return std::nullopt;
  }
  if (*bytes < 1 || static_cast<std::uint64_t>(*bytes) > kMaxChunkedBytes) {
    error = "a change of " + std::to_string(*bytes) + " bytes (at most " +
            std::to_string(kMaxChunkedBytes) + ")";
    return std::nullopt;
  }
  if (d.body.empty() || d.body.size() > static_cast<std::uint64_t>(*bytes)) {
    error = describe(*index, *count) + " holds " + std::to_string(d.body.size()) +
            " bytes of a change of " + std::to_string(*bytes);
    return std::nullopt;
  }
  return ChunkHeaders{*index, *count, *bytes};
}

std::vector<ChunkAssembler::Output> ChunkAssembler::add(Delivery delivery) {
  std::vector<Output> out;
  if (!has_chunk_headers(delivery.headers)) {
    if (holding()) {
      refuse_held("its chunks stop at " + describe(expected_.index - 1, expected_.count) +
                      ": a message that is not one of them follows",
                  out);
    }
    out.push_back({std::move(delivery), 0, std::nullopt});
    return out;
  }
  std::string error;
  std::optional<ChunkHeaders> h = read_headers(delivery, error);
  if (!h) {
    if (holding()) refuse_held("its chunks stop at " + describe(expected_.index - 1, expected_.count) + ": " + error, out);
    out.push_back({std::move(delivery), 0, error});
    return out;
  }
  if (holding()) {
    bool continues = delivery.message_id == message_id_ && delivery.routing_key == routing_key_ &&
                     h->count == expected_.count && h->bytes == expected_.bytes &&
                     h->index == expected_.index;
    if (!continues) {
      refuse_held("its chunks stop at " + describe(expected_.index - 1, expected_.count) + ": " +
                      describe(h->index, h->count) + " of message " + delivery.message_id +
                      " follows",
                  out);
    } else if (body_.size() + delivery.body.size() > static_cast<std::size_t>(h->bytes)) {
      append(std::move(delivery));
      refuse_held("its chunks hold more bytes than the " + std::to_string(h->bytes) + " declared", out);
      return out;
    } else {
      append(std::move(delivery));
      if (expected_.index == expected_.count) {
        if (body_.size() != static_cast<std::size_t>(expected_.bytes)) {
          refuse_held("its " + std::to_string(expected_.count) + " chunks hold " +
                          std::to_string(body_.size()) + " bytes, not the " +
                          std::to_string(expected_.bytes) + " declared",
                      out);
        } else {
          out.push_back(complete());
        }
      }
      return out;
    }
  }
  if (h->index != 0) {
    out.push_back({std::move(delivery), 0,
                   describe(h->index, h->count) + " without the chunks before it"});
    return out;
  }
  start(std::move(delivery), *h);
  if (expected_.index == expected_.count) {
    if (body_.size() != static_cast<std::size_t>(expected_.bytes)) {
      refuse_held("its one chunk holds " + std::to_string(body_.size()) + " bytes, not the " +
                      std::to_string(expected_.bytes) + " declared",
                  out);
    } else {
      out.push_back(complete());
    }
  }
  return out;
}

void ChunkAssembler::start(Delivery&& d, const ChunkHeaders& h) {
  routing_key_ = d.routing_key;
  message_id_ = d.message_id;
  expected_ = h;
  append(std::move(d));
}

void ChunkAssembler::append(Delivery&& d) {
  pieces_.push_back({d.delivery_tag, d.redelivered, d.body.size(), std::move(d.headers),
                     std::move(d.content_type), d.delivery_mode});
  if (body_.empty()) {
    body_ = std::move(d.body);
  } else {
    // Once: the declared size is bounded (kMaxChunkedBytes), and growing by doubling
    // would hold up to twice the body. The slack lets the parser read it in place.
    std::size_t room = static_cast<std::size_t>(expected_.bytes) + kDeliveryBodySlack;
    if (body_.capacity() < room) body_.reserve(room);
    body_ += d.body;
  }
  ++expected_.index;
}

ChunkAssembler::Output ChunkAssembler::complete() {
  Output o;
  Delivery& d = o.delivery;
  d.delivery_tag = pieces_.back().delivery_tag;
  for (const Piece& p : pieces_) d.redelivered = d.redelivered || p.redelivered;
  d.routing_key = std::move(routing_key_);
  d.body = std::move(body_);
  d.message_id = std::move(message_id_);
  d.content_type = "application/json";
  d.delivery_mode = pieces_.front().delivery_mode;
  d.headers = without_chunk_headers(pieces_.front().headers);
  o.chunk_bytes = pieces_.front().size;
  clear();
  return o;
}

void ChunkAssembler::refuse_held(const std::string& why, std::vector<Output>& out) {
  std::string reason = "change " + message_id_ + " (" + routing_key_ + "): " + why;
  std::size_t at = 0;
  for (Piece& p : pieces_) {
    Delivery d;
    d.delivery_tag = p.delivery_tag;
    d.redelivered = p.redelivered;
    d.routing_key = routing_key_;
    d.body = body_.substr(at, p.size);
    d.message_id = message_id_;
    d.content_type = std::move(p.content_type);
    d.delivery_mode = p.delivery_mode;
    d.headers = std::move(p.headers);
    at += p.size;
    out.push_back({std::move(d), 0, reason});
  }
  clear();
}

void ChunkAssembler::clear() {
  pieces_.clear();
  body_.clear();
  body_.shrink_to_fit();
  routing_key_.clear();
  message_id_.clear();
  expected_ = {};
}

std::vector<DeadLetterPart> dead_letter_parts(std::string_view body, const Delivery& delivery,
                                              std::size_t chunk_bytes) {
  std::vector<DeadLetterPart> out;
  if (chunk_bytes > 0) {
    std::vector<std::string_view> slices = split_body(body, chunk_bytes);
    if (slices.size() > 1) {
      for (std::size_t k = 0; k < slices.size(); ++k) {
        out.push_back({slices[k], kChunkContentType,
                       chunk_headers(static_cast<std::int64_t>(k),
                                     static_cast<std::int64_t>(slices.size()), body.size())});
      }
      return out;
    }
  } else if (has_chunk_headers(delivery.headers)) {
    Headers kept;
    for (const auto& h : delivery.headers) {
      if (has_chunk_headers(Headers{h})) kept.push_back(h);
    }
    out.push_back({body, delivery.content_type, std::move(kept)});
    return out;
  }
  out.push_back({body, "application/json", {}});
  return out;
}

}  // namespace pgfanout
