#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/connection>

#include "batch_applier.hpp"
#include "chunk_assembler.hpp"
#include "pgfanout/amqp_connection.hpp"
#include "pgfanout/amqp_url.hpp"
#include "pgfanout/backoff.hpp"
#include "pgfanout/broker_list.hpp"
#include "pgfanout/metrics.hpp"
#include "table_catalog.hpp"

namespace pgfanout {

struct ListenerConfig {
  std::string target;
  std::string queue;
  /// The broker nodes (--amqp), tried in turn.
  std::vector<AmqpUrl> brokers;
  std::string exchange = "pgfanout";
  std::vector<std::string> patterns{"#"};
  enum class Snapshot { Off, Copy, Truncate } snapshot = Snapshot::Off;
  std::string source;
  /// Connections that copy the snapshot's ranges (--snapshot-workers), each a source and
  /// a replica connection.
  unsigned snapshot_workers = 2;
  QueueType queue_type = QueueType::Classic;
  std::uint16_t prefetch = 2000;
  std::size_t batch_changes = 5000;
  /// A batch stops taking messages once their bodies reach this many bytes (at least one
  /// message goes), so big rows do not pile up in memory.
  std::size_t batch_bytes = std::size_t{16} << 20;
  std::chrono::milliseconds batch_age{50};
  std::chrono::seconds summary_interval{10};
};

/// Applies one replica's queue. Deliveries are gathered into a batch (bounded by count and
/// age), applied in one replica transaction, and acked up to the batch's last delivery tag
/// on the connection that delivered them only after the commit (and after any dead letters
/// are confirmed by the broker). Any connection failure drops both connections without
/// acking, so the broker redelivers the unacked messages in order; applying them again is
/// harmless (upserts, deletes of missing rows). Replica work (a batch, the snapshot) runs
/// on a thread of its own while this one keeps the broker connections alive.
class Listener {
 public:
  Listener(ListenerConfig config, MetricsRegistry& metrics);
  ~Listener();

  /// Runs until SIGINT or SIGTERM. Returns the exit code: 0 after a clean stop, 1 when a
  /// requested snapshot is refused, 2 when the queue exists with another type or other
  /// arguments (a configuration error: retrying cannot help).
  int run();

 private:
  struct Batch;
  void session();
  void setup_replica();
  void setup_broker();
  Batch gather();
  /// Adds a delivery to the batch through the chunk assembler.
  void take(Batch& batch, Delivery&& delivery);
  void process(Batch& batch);
  void pause(std::chrono::milliseconds delay);
  template <class Work>
  auto keeping_connections(Work work) -> decltype(work());
  void service_connections();
  void disconnect();
  void maybe_log_summary();

  ListenerConfig config_;
  MetricsRegistry& metrics_;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<pqxx::connection> pg_;
  BrokerList brokers_;
  std::unique_ptr<AmqpConnection> consumer_;
  std::unique_ptr<AmqpConnection> dead_letters_;
  std::unique_ptr<BatchApplier> applier_;
  TableCatalog catalog_;
  ChunkAssembler chunks_;
  Backoff backoff_{std::chrono::milliseconds(500), std::chrono::seconds(30)};
  bool snapshot_done_ = false;
  bool warned_replication_role_ = false;

  std::chrono::steady_clock::time_point last_summary_;
  std::chrono::steady_clock::time_point last_batch_end_;
  std::uint64_t applied_since_summary_ = 0;
  std::uint64_t dead_since_summary_ = 0;
  double last_lag_ = 0;
};

}  // namespace pgfanout
