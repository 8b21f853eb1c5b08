#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pgfanout {

/// True when an AMQP topic binding `pattern` (words split on '.', `*` one word, `#` zero
/// or more words) matches `routing_key`, as RabbitMQ's topic exchange decides it.
bool topic_matches(std::string_view pattern, std::string_view routing_key);

/// True when any of `patterns` matches `routing_key`.
bool topic_matches_any(const std::vector<std::string>& patterns, std::string_view routing_key);

/// Splits a comma-separated `--tables` value into patterns; throws std::invalid_argument
/// on an empty pattern.
std::vector<std::string> split_patterns(std::string_view list);

}  // namespace pgfanout
