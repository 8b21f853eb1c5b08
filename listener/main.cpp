#include <cstdlib>
#include <optional>

#include "listener.hpp"
#include "pgfanout/cli.hpp"
#include "pgfanout/metrics_server.hpp"
#include "pgfanout/topic_pattern.hpp"
#include "snapshot.hpp"

int main(int argc, char** argv) {
  using namespace pgfanout;
  const char* program = "pgfanout-listener";
  CLI::App app("Consumes one replica's durable queue and applies the row changes to the replica "
               "database in batches (upserts and deletes), acking only after commit.",
               program);
  app.set_version_flag("--version", PGFANOUT_VERSION);
  std::string target, queue, source, tables = "#", snapshot, queue_type = "classic";
  unsigned snapshot_workers = default_snapshot_workers();
  CommonOptions common;
  app.add_option("--target", target, "libpq conninfo or URI of the replica")->envname("PGFANOUT_TARGET");
  app.add_option("--queue", queue, "the replica's durable queue (one per replica)")->envname("PGFANOUT_QUEUE");
  app.add_option("--queue-type", queue_type,
                 "type of the queue and its dead-letter queue: classic or quorum (a queue keeps "
                 "the type it was created with)")
      ->envname("PGFANOUT_QUEUE_TYPE")
      ->check(CLI::IsMember({"classic", "quorum"}))
      ->capture_default_str();
  common.add_to(app);
  app.add_option("--tables", tables, "topic binding patterns on schema.table, comma-separated")
      ->envname("PGFANOUT_TABLES")
      ->capture_default_str();
  app.add_flag("--snapshot{copy}", snapshot,
               "before consuming, copy the tracked tables from --source in one snapshot; "
               "--snapshot=truncate empties non-empty replica tables first");
  app.add_option("--source", source, "libpq conninfo or URI of the primary (for --snapshot)")
      ->envname("PGFANOUT_SOURCE");
  app.add_option("--snapshot-workers", snapshot_workers,
                 "connections that copy the snapshot, each a source and a replica one; a big table "
                 "is cut into page ranges among them (default: the cores, 2 to 8)")
      ->envname("PGFANOUT_SNAPSHOT_WORKERS")
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str();

  if (int code = parse_command_line(app, argc, argv); code >= 0) return code;
  if (target.empty()) return usage_error(program, "--target (or PGFANOUT_TARGET) is required");
  if (queue.empty()) return usage_error(program, "--queue (or PGFANOUT_QUEUE) is required");
  if (int code = common.check(program); code >= 0) return code;

  ListenerConfig config;
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
  config.target = target;
  config.queue = queue;
  config.queue_type = queue_type == "quorum" ? QueueType::Quorum : QueueType::Classic;
  config.brokers = common.brokers;
  config.exchange = common.exchange;
  config.source = source;
  config.snapshot_workers = snapshot_workers;
  MetricsRegistry metrics;
  std::optional<MetricsServer> server;
  if (int code = common.start(program, metrics, server); code >= 0) return code;
  Listener listener(std::move(config), metrics);
  return listener.run();
}
