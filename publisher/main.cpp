#include <cstdlib>
#include <iostream>
#include <optional>

#include "pgfanout/amqp_url.hpp"
#include "pgfanout/cli.hpp"
#include "pgfanout/logging.hpp"
#include "pgfanout/metrics_server.hpp"
#include "publisher.hpp"

int main(int argc, char** argv) {
  using namespace pgfanout;
  const char* program = "pgfanout-publisher";
  CLI::App app("Ships row changes captured in pgfanout.changes on a PostgreSQL primary to a "
               "RabbitMQ topic exchange, as persistent messages with publisher confirms.",
               program);
  app.set_version_flag("--version", PGFANOUT_VERSION);
  std::string source, amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f", exchange = "pgfanout";
  std::string metrics_address, log_level = "info";
  int pack = 1;
  app.add_option("--source", source, "libpq conninfo or URI of the primary")->envname("PGFANOUT_SOURCE");
  app.add_option("--amqp", amqp_url, "RabbitMQ URL (amqp:// or amqps://)")
      ->envname("PGFANOUT_AMQP_URL")
      ->capture_default_str();
  app.add_option("--exchange", exchange, "topic exchange to publish to")
      ->envname("PGFANOUT_EXCHANGE")
      ->capture_default_str();
  app.add_option("--pack", pack, "most changes of one table per message (1 = one per message)")
      ->envname("PGFANOUT_PACK")
      ->capture_default_str();
  app.add_option("--metrics", metrics_address, "serve Prometheus metrics at HOST:PORT/metrics")
      ->envname("PGFANOUT_METRICS");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->envname("PGFANOUT_LOG_LEVEL")
      ->capture_default_str();

  if (int code = parse_command_line(app, argc, argv); code >= 0) return code;

  if (source.empty()) return usage_error(program, "--source (or PGFANOUT_SOURCE) is required");
  if (pack < 1 || pack > 100000) return usage_error(program, "--pack must be between 1 and 100000");
  if (exchange.empty()) return usage_error(program, "--exchange must not be empty");
  auto level = parse_log_level(log_level);
  if (!level) return usage_error(program, "--log-level '" + log_level + "' is not a log level");
  PublisherConfig config;
  try {
    config.amqp = AmqpUrl::parse(amqp_url);
  } catch (const std::invalid_argument& e) {
    return usage_error(program, std::string("--amqp: ") + e.what());
  }
  std::optional<HostPort> metrics_at;
  if (!metrics_address.empty()) {
    try {
      metrics_at = HostPort::parse(metrics_address);
    } catch (const std::invalid_argument& e) {
      return usage_error(program, std::string("--metrics: ") + e.what());
    }
  }
  config.source = source;
  config.exchange = exchange;
  config.pack = static_cast<std::size_t>(pack);
  // Bound every connection attempt so that the event loop stays responsive to signals.
  setenv("PGCONNECT_TIMEOUT", "10", 0);

  setup_logging(program, *level);
  MetricsRegistry metrics;
  std::optional<MetricsServer> server;
  if (metrics_at) {
    try {
      server.emplace(*metrics_at, metrics);
    } catch (const std::exception& e) {
      return usage_error(program, "--metrics: cannot listen on " + metrics_address + ": " + e.what());
    }
  }
  Publisher publisher(std::move(config), metrics);
  return publisher.run();
}
