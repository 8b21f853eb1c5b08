#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <pqxx/connection>

#include "pgfanout/metrics.hpp"

namespace pgfanout {

/// Vacuums the outbox after every `every` changes the publisher deleted, on a connection
/// and a thread of its own, so the shipping loop never waits for it.
///
/// Every change is inserted into pgfanout.changes once and deleted once. Autovacuum visits
/// a database once per autovacuum_naptime (a minute by default), and the table grows by
/// what was deleted in between: 311 MiB after 1,000,000 changes in 56 s, measured, and it
/// never shrinks. Vacuuming every 20,000 deleted changes keeps it to a size that is
/// reused, whatever the load: a 28-30 MiB peak over the same 1,000,000 changes. While an old transaction holds vacuum back, a vacuum removes
/// little; then the next one waits for twice as many deletes (up to 32 times as many),
/// until one removes most of them again. A role that may not vacuum the table (only its
/// owner, the database owner or a superuser may) leaves it to autovacuum, and says so once.
class OutboxVacuum {
 public:
  static constexpr std::size_t kEvery = 20000;

  OutboxVacuum(std::string conninfo, MetricsRegistry& metrics, std::size_t every = kEvery);
  ~OutboxVacuum();
  OutboxVacuum(const OutboxVacuum&) = delete;
  OutboxVacuum& operator=(const OutboxVacuum&) = delete;

  /// The publisher deleted `n` more changes from the outbox. Never blocks.
  void deleted(std::size_t n);

 private:
  void work();
  void vacuum(std::size_t deleted_since);

  std::string conninfo_;
  MetricsRegistry& metrics_;
  std::size_t every_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::size_t pending_ = 0;  // deletes not yet followed by a vacuum
  std::size_t due_at_;       // vacuum once pending_ reaches this
  bool requested_ = false;
  bool stopping_ = false;
  std::unique_ptr<pqxx::connection> conn_;  // used by the worker; cancelled by the destructor
  std::atomic<bool> allowed_{true};
  std::thread worker_;
};

}  // namespace pgfanout
