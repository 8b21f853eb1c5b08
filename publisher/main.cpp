#include <cstdlib>
#include <optional>

#include "pgfanout/cli.hpp"
#include "pgfanout/message_chunks.hpp"
#include "pgfanout/metrics_server.hpp"
#include "publisher.hpp"

int main(int argc, char** argv) {
  using namespace pgfanout;
  const char* program = "pgfanout-publisher";
  CLI::App app("Ships row changes captured in pgfanout.changes on a PostgreSQL primary to a "
               "RabbitMQ topic exchange, as persistent messages with publisher confirms.",
               program);
  app.set_version_flag("--version", PGFANOUT_VERSION);
  std::string source;
  int pack = 1;
  std::int64_t max_message_bytes = kDefaultMessageBytes;
  CommonOptions common;
  app.add_option("--source", source, "libpq conninfo or URI of the primary")->envname("PGFANOUT_SOURCE");
  common.add_to(app);
  app.add_option("--pack", pack, "most changes of one table per message (1 = one per message)")
      ->envname("PGFANOUT_PACK")
      ->capture_default_str();
  app.add_option("--max-message-bytes", max_message_bytes,
                 "largest message sent, properties included (keep it at or below the broker's "
                 "max_message_size); a bigger change travels in chunks")
      ->envname("PGFANOUT_MAX_MESSAGE_BYTES")
      ->capture_default_str();

  if (int code = parse_command_line(app, argc, argv); code >= 0) return code;
  if (source.empty()) return usage_error(program, "--source (or PGFANOUT_SOURCE) is required");
  if (pack < 1 || pack > 100000) return usage_error(program, "--pack must be between 1 and 100000");
  if (max_message_bytes < kMinMessageBytes || max_message_bytes > kMaxMessageBytes) {
    return usage_error(program, "--max-message-bytes must be between " + std::to_string(kMinMessageBytes) +
                                    " (1 MiB) and " + std::to_string(kMaxMessageBytes) + " (512 MiB)");
  }
  if (int code = common.check(program); code >= 0) return code;

  PublisherConfig config;
  config.source = source;
  config.brokers = common.brokers;
  config.exchange = common.exchange;
  config.pack = static_cast<std::size_t>(pack);
  config.max_message_bytes = static_cast<std::size_t>(max_message_bytes);
  MetricsRegistry metrics;
  std::optional<MetricsServer> server;
  if (int code = common.start(program, metrics, server); code >= 0) return code;
  Publisher publisher(std::move(config), metrics);
  return publisher.run();
}
