#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/common.h>

#include "pgfanout/amqp_url.hpp"
#include "pgfanout/metrics.hpp"

namespace pgfanout {
class MetricsServer;
}

namespace pgfanout {

/// An address for the metrics endpoint, from `HOST:PORT` (IPv6 as `[::1]:9187`).
struct HostPort {
  std::string host;
  unsigned short port = 0;
  /// Throws std::invalid_argument naming the problem.
  static HostPort parse(std::string_view text);
};

/// The flags both programs take (INTERFACE.md): --amqp, --exchange, --metrics, --log-level,
/// each also read from its PGFANOUT_* variable, and --amqp-password-file (or the password
/// itself in PGFANOUT_AMQP_PASSWORD).
struct CommonOptions {
  std::string amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f";
  std::string amqp_password_file;
  std::string exchange = "pgfanout";
  std::string metrics;
  std::string log_level = "info";

  void add_to(CLI::App& app);

  /// Checked and parsed; filled by check(). `brokers` holds every --amqp URL in order
  /// (several nodes are separated by commas); `amqp` is the first. The password from
  /// --amqp-password-file or PGFANOUT_AMQP_PASSWORD, if any, replaces each URL's.
  AmqpUrl amqp;
  std::vector<AmqpUrl> brokers;
  std::optional<HostPort> metrics_at;
  spdlog::level::level_enum level = spdlog::level::info;
  /// Returns -1 when every value is valid, else prints one line and returns 2.
  int check(std::string_view program);

  /// What both programs do once the flags are checked: bound connection attempts (so a
  /// stop is never held up for long), log at the chosen level, and serve `registry` if
  /// --metrics asks for it (into `server`). Returns -1, or 2 after one line on stderr
  /// when the metrics address cannot be bound.
  int start(std::string_view program, const MetricsRegistry& registry,
            std::optional<MetricsServer>& server);
};

/// Runs CLI11's parse with the contract of INTERFACE.md: `--help`/`--version` print and
/// return 0; any malformed flag prints one line on stderr and returns 2; otherwise -1.
int parse_command_line(CLI::App& app, int argc, char** argv);

/// One line on stderr, `program: message`, and the exit code 2 for the caller to return.
int usage_error(std::string_view program, std::string_view message);

}  // namespace pgfanout
