#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgfanout {

/// An AMQP 0-9-1 endpoint parsed from `amqp://user:pass@host:port/vhost?options`.
/// Supported options: `heartbeat` (seconds), and for `amqps://` only `cacert`, `certfile`
/// and `keyfile` (both or neither: the client certificate and its key, PEM files),
/// `verify` (`true`/`false`, default true: the broker's certificate and host name).
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
  /// Parses comma-separated URLs (the nodes of a cluster), each with its own options. A
  /// comma inside a URL (in a password, a vhost or a file name) is written %2C. Throws
  /// std::invalid_argument naming the problem and which URL has it.
  static std::vector<AmqpUrl> parse_list(std::string_view urls);

  /// The URL as it may be logged: the password replaced by `****`.
  std::string masked() const;
};

}  // namespace pgfanout
