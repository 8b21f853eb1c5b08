#pragma once

#include <optional>
#include <string_view>

#include <spdlog/spdlog.h>

namespace pgfanout {

/// Parses a `--log-level` value (trace, debug, info, warn, error, critical, off).
std::optional<spdlog::level::level_enum> parse_log_level(std::string_view text);

/// Sends every log line to stderr, one line per event, at `level`.
void setup_logging(std::string_view program, spdlog::level::level_enum level);

}  // namespace pgfanout
