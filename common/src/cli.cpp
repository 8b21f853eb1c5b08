#include "pgfanout/cli.hpp"

#include "pgfanout/amqp_password.hpp"
#include "pgfanout/logging.hpp"
#include "pgfanout/metrics_server.hpp"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>

namespace pgfanout {

HostPort HostPort::parse(std::string_view text) {
  HostPort out;
  std::string_view port;
  if (text.starts_with('[')) {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      throw std::invalid_argument("expected [HOST]:PORT, got '" + std::string(text) + "'");
    }
    out.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      throw std::invalid_argument("expected HOST:PORT, got '" + std::string(text) + "'");
    }
    out.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  if (out.host.empty()) throw std::invalid_argument("missing host in '" + std::string(text) + "'");
  unsigned value = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || p != port.data() + port.size() || value > 65535) {
    throw std::invalid_argument("invalid port in '" + std::string(text) + "'");
  }
  out.port = static_cast<unsigned short>(value);
  return out;
}

void CommonOptions::add_to(CLI::App& app) {
  app.add_option("--amqp", amqp_url,
                 "RabbitMQ URL (amqp:// or amqps://); several nodes of a cluster comma-separated")
      ->envname("PGFANOUT_AMQP_URL")
      ->capture_default_str();
  app.add_option("--amqp-password-file", amqp_password_file,
                 "file holding the RabbitMQ password (for every --amqp URL; else "
                 "PGFANOUT_AMQP_PASSWORD, else the URL's)");
  app.add_option("--exchange", exchange, "the topic exchange changes travel through")
      ->envname("PGFANOUT_EXCHANGE")
      ->capture_default_str();
  app.add_option("--metrics", metrics, "serve Prometheus metrics at HOST:PORT/metrics")
      ->envname("PGFANOUT_METRICS");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->envname("PGFANOUT_LOG_LEVEL")
      ->capture_default_str();
}

int CommonOptions::check(std::string_view program) {
  if (exchange.empty()) return usage_error(program, "--exchange must not be empty");
  auto parsed_level = parse_log_level(log_level);
  if (!parsed_level) return usage_error(program, "--log-level '" + log_level + "' is not a log level");
  level = *parsed_level;
  try {
    brokers = AmqpUrl::parse_list(amqp_url);
  } catch (const std::invalid_argument& e) {
    return usage_error(program, std::string("--amqp: ") + e.what());
  }
  try {
    // One password for every broker URL: they are nodes of one cluster.
    if (auto password =
            amqp_password(amqp_password_file, std::getenv("PGFANOUT_AMQP_PASSWORD"))) {
      for (AmqpUrl& broker : brokers) broker.password = *password;
    }
  } catch (const std::invalid_argument& e) {
    return usage_error(program, std::string("--amqp-password-file: ") + e.what());
  }
  amqp = brokers.front();
  // A TLS file that cannot be read is a configuration error, not a broker to wait for.
  using TlsFile = std::pair<std::string_view, const std::string*>;
  for (const AmqpUrl& broker : brokers) {
    for (auto [option, path] :
         {TlsFile{"cacert", &broker.cacert}, TlsFile{"certfile", &broker.certfile},
          TlsFile{"keyfile", &broker.keyfile}}) {
      if (!path->empty() && ::access(path->c_str(), R_OK) != 0) {
        return usage_error(program, "--amqp: " + std::string(option) + " '" + *path +
                                        "' cannot be read: " + std::strerror(errno));
      }
    }
  }
  if (!metrics.empty()) {
    try {
      metrics_at = HostPort::parse(metrics);
    } catch (const std::invalid_argument& e) {
      return usage_error(program, std::string("--metrics: ") + e.what());
    }
  }
  return -1;
}

int CommonOptions::start(std::string_view program, const MetricsRegistry& registry,
                         std::optional<MetricsServer>& server) {
  setenv("PGCONNECT_TIMEOUT", "10", 0);
  setup_logging(program, level);
  if (!metrics_at) return -1;
  try {
    server.emplace(*metrics_at, registry);
  } catch (const std::exception& e) {
    return usage_error(program, "--metrics: cannot listen on " + metrics + ": " + e.what());
  }
  return -1;
}

int usage_error(std::string_view program, std::string_view message) {
  std::string line(message);
  for (char& c : line) {
    if (c == '\n') c = ' ';
  }
  std::cerr << program << ": " << line << " (see --help)\n";
  return 2;
}

int parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion&) {
    std::cout << app.get_name() << " " << PGFANOUT_VERSION << "\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    return usage_error(app.get_name(), e.what());
  }
  return -1;
}

}  // namespace pgfanout
