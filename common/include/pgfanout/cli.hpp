#pragma once

#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

namespace pgfanout {

/// An address for the metrics endpoint, from `HOST:PORT` (IPv6 as `[::1]:9187`).
struct HostPort {
  std::string host;
  unsigned short port = 0;
  /// Throws std::invalid_argument naming the problem.
  static HostPort parse(std::string_view text);
};

/// Runs CLI11's parse with the contract of INTERFACE.md: `--help`/`--version` print and
/// return 0; any malformed flag prints one line on stderr and returns 2; otherwise -1.
int parse_command_line(CLI::App& app, int argc, char** argv);

/// One line on stderr, `program: message`, and the exit code 2 for the caller to return.
int usage_error(std::string_view program, std::string_view message);

}  // namespace pgfanout
