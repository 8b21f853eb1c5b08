#pragma once

#include <memory>
#include <thread>

#include "pgfanout/cli.hpp"
#include "pgfanout/metrics.hpp"

namespace pgfanout {

/// Serves `GET /metrics` (Prometheus text) from its own thread and io_context, so a slow
/// scraper never stalls replication. Binding fails at construction (std::system_error).
class MetricsServer {
 public:
  MetricsServer(const HostPort& address, const MetricsRegistry& registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  /// The port actually bound (useful with port 0).
  unsigned short port() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
  std::thread thread_;
};

}  // namespace pgfanout
