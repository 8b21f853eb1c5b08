#include <cstdlib>
#include <optional>

#include "listener.hpp"
#include "pgfanout/cli.hpp"
#include "pgfanout/logging.hpp"
#include "pgfanout/metrics_server.hpp"
#include "pgfanout/topic_pattern.hpp"

int main(int argc, char** argv) {
  using namespace pgfanout;
  const char* program = "pgfanout-listener";
  CLI::App app("Consumes one replica's durable queue and applies the row changes to the replica "
               "database in batches (upserts and deletes), acking only after commit.",
               program);
  app.set_version_flag("--version", PGFANOUT_VERSION);
  std::string target, queue, source, amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f";
  std::string exchange = "pgfanout", tables = "#", metrics_address, log_level = "info";
  std::string snapshot;
  app.add_option("--target", target, "libpq conninfo or URI of the replica")->envname("PGFANOUT_TARGET");
  app.add_option("--queue", queue, "the replica's durable queue (one per replica)")->envname("PGFANOUT_QUEUE");
  app.add_option("--amqp", amqp_url, "RabbitMQ URL (amqp:// or amqps://)")
      ->envname("PGFANOUT_AMQP_URL")
      ->capture_default_str();
  app.add_option("--exchange", exchange, "topic exchange the publisher ships to")
      ->envname("PGFANOUT_EXCHANGE")
      ->capture_default_str();
  app.add_option("--tables", tables, "topic binding patterns on schema.table, comma-separated")
      ->envname("PGFANOUT_TABLES")
      ->capture_default_str();
  app.add_option("--metrics", metrics_address, "serve Prometheus metrics at HOST:PORT/metrics")
      ->envname("PGFANOUT_METRICS");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->envname("PGFANOUT_LOG_LEVEL")
      ->capture_default_str();
  app.add_flag("--snapshot{copy}", snapshot,
               "before consuming, copy the tracked tables from --source in one snapshot; "
               "--snapshot=truncate empties non-empty replica tables first");
  app.add_option("--source", source, "libpq conninfo or URI of the primary (for --snapshot)")
      ->envname("PGFANOUT_SOURCE");

  if (int code = parse_command_line(app, argc, argv); code >= 0) return code;

  if (target.empty()) return usage_error(program, "--target (or PGFANOUT_TARGET) is required");
  if (queue.empty()) return usage_error(program, "--queue (or PGFANOUT_QUEUE) is required");
  if (exchange.empty()) return usage_error(program, "--exchange must not be empty");
  auto level = parse_log_level(log_level);
  if (!level) return usage_error(program, "--log-level '" + log_level + "' is not a log level");
  ListenerConfig config;
  try {
    config.amqp = AmqpUrl::parse(amqp_url);
  } catch (const std::invalid_argument& e) {
    return usage_error(program, std::string("--amqp: ") + e.what());
  }
  try {
    config.patterns = split_patterns(tables);
  } catch (const std::invalid_argument& e) {
    return usage_error(program, e.what());
  }
  if (snapshot == "copy") {
    config.snapshot = ListenerConfig::Snapshot::Copy;
  } else if (snapshot == "truncate") {
    config.snapshot = ListenerConfig::Snapshot::Truncate;
  } else if (!snapshot.empty()) {
    return usage_error(program, "--snapshot takes no value or =truncate, not '" + snapshot + "'");
  }
  if (config.snapshot != ListenerConfig::Snapshot::Off && source.empty()) {
    return usage_error(program, "--snapshot needs --source (or PGFANOUT_SOURCE)");
  }
  std::optional<HostPort> metrics_at;
  if (!metrics_address.empty()) {
    try {
      metrics_at = HostPort::parse(metrics_address);
    } catch (const std::invalid_argument& e) {
      return usage_error(program, std::string("--metrics: ") + e.what());
    }
  }
  config.target = target;
  config.queue = queue;
  config.exchange = exchange;
  config.source = source;
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
  Listener listener(std::move(config), metrics);
  return listener.run();
}
