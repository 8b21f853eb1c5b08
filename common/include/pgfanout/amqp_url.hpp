#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace pgfanout {

/// An AMQP 0-9-1 endpoint parsed from `amqp://user:pass@host:port/vhost?options`.
/// Supported options: `heartbeat` (seconds), and for `amqps://` `cacert`, `certfile`,
/// `keyfile`, `verify` (`true`/`false`, default true).
struct AmqpUrl {
  bool tls = false;
  std::string user = "guest";
  std::string password = "guest";
  std::string host = "127.0.0.1";
  int port = 5672;
  std::string vhost = "/";
  std::chrono::seconds heartbeat{15};
  std::string cacert;
  std::string certfile;
  std::string keyfile;
  bool verify = true;

  /// Parses a URL; throws std::invalid_argument naming the problem.
  static AmqpUrl parse(std::string_view url);

  /// The URL as it may be logged: the password replaced by `****`.
  std::string masked() const;
};

}  // namespace pgfanout
