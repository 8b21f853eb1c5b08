#include "pgfanout/topic_pattern.hpp"

#include <stdexcept>

namespace pgfanout {
namespace {

std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    auto dot = s.find('.', start);
    out.push_back(s.substr(start, dot == std::string_view::npos ? s.npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return out;
}

bool match(const std::vector<std::string_view>& p, size_t pi, const std::vector<std::string_view>& k,
           size_t ki) {
  while (pi < p.size()) {
    if (p[pi] == "#") {
      for (size_t skip = ki; skip <= k.size(); ++skip) {
        if (match(p, pi + 1, k, skip)) return true;
      }
      return false;
    }
    if (ki >= k.size()) return false;
    if (p[pi] != "*" && p[pi] != k[ki]) return false;
    ++pi;
    ++ki;
  }
  return ki == k.size();
}

}  // namespace

bool topic_matches(std::string_view pattern, std::string_view routing_key) {
  return match(words(pattern), 0, words(routing_key), 0);
}

std::vector<std::string> split_patterns(std::string_view list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    auto comma = list.find(',', start);
    std::string_view item = list.substr(start, comma == std::string_view::npos ? list.npos : comma - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) throw std::invalid_argument("--tables has an empty pattern");
    out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

bool topic_matches_any(const std::vector<std::string>& patterns, std::string_view routing_key) {
  for (const auto& p : patterns) {
    if (topic_matches(p, routing_key)) return true;
  }
  return false;
}

}  // namespace pgfanout
