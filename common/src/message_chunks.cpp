#include "pgfanout/message_chunks.hpp"

#include <algorithm>
#include <string>

namespace pgfanout {

std::vector<std::string_view> split_body(std::string_view body, std::size_t max_chunk) {
  std::vector<std::string_view> out;
  if (body.size() <= max_chunk) {
    out.push_back(body);
    return out;
  }
  out.reserve((body.size() + max_chunk - 1) / max_chunk);
  for (std::size_t at = 0; at < body.size(); at += max_chunk) {
    out.push_back(body.substr(at, std::min(max_chunk, body.size() - at)));
  }
  return out;
}

Headers chunk_headers(std::int64_t index, std::int64_t count, std::size_t body_bytes) {
  return Headers{{std::string(kChunkIndexHeader), index},
                 {std::string(kChunkCountHeader), count},
                 {std::string(kChunkedBytesHeader), static_cast<std::int64_t>(body_bytes)}};
}

bool has_chunk_headers(const Headers& headers) {
  return std::any_of(headers.begin(), headers.end(), [](const auto& h) {
    return h.first == kChunkIndexHeader || h.first == kChunkCountHeader ||
           h.first == kChunkedBytesHeader;
  });
}

}  // namespace pgfanout
