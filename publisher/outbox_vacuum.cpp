#include "outbox_vacuum.hpp"

#include <algorithm>
#include <chrono>

#include <pqxx/nontransaction>
#include <spdlog/spdlog.h>

#include "pgfanout/log_text.hpp"
#include "pgfanout/pg_connection.hpp"

namespace pgfanout {
namespace {

// Whether this role may vacuum the outbox (VACUUM only warns and skips otherwise).
constexpr const char* kMayVacuumSql = R"(
SELECT pg_has_role(c.relowner, 'USAGE')
       OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')
       OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
FROM pg_class c WHERE c.oid = 'pgfanout.changes'::regclass)";

constexpr const char* kDeadSql =
    "SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables WHERE relid = 'pgfanout.changes'::regclass";

}  // namespace

OutboxVacuum::OutboxVacuum(std::string conninfo, MetricsRegistry& metrics, std::size_t every)
    : conninfo_(std::move(conninfo)), metrics_(metrics), every_(every), due_at_(every) {
  metrics_.describe("pgfanout_publisher_outbox_vacuums_total", MetricsRegistry::Type::Counter,
                    "VACUUMs of pgfanout.changes run by the publisher (every 20,000 deleted changes).");
  worker_ = std::thread([this] { work(); });
}

OutboxVacuum::~OutboxVacuum() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    // A vacuum in progress is only cancelled: the table is left as a cancelled VACUUM
    // leaves it, which is consistent.
    if (conn_) {
      try {
        conn_->cancel_query();
      } catch (const std::exception&) {
      }
    }
  }
  wake_.notify_all();
  worker_.join();
}

void OutboxVacuum::deleted(std::size_t n) {
  if (n == 0 || !allowed_) return;
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    pending_ += n;
    if (pending_ >= due_at_ && !requested_) requested_ = wake = true;
  }
  if (wake) wake_.notify_one();
}

void OutboxVacuum::work() {
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [this] { return stopping_ || requested_; });
    if (stopping_) break;
    std::size_t deleted_since = pending_;
    lock.unlock();
    vacuum(deleted_since);
    lock.lock();
    requested_ = false;
  }
  conn_.reset();
}

void OutboxVacuum::vacuum(std::size_t deleted_since) {
  try {
    if (!conn_) {
      auto conn = connect_pg(conninfo_, "pgfanout-publisher vacuum");
      pqxx::nontransaction tx(*conn);
      if (!tx.exec1(kMayVacuumSql)[0].as<bool>(false)) {
        spdlog::info("this role may not VACUUM pgfanout.changes (only its owner, the database owner or a "
                     "superuser may); autovacuum keeps it in check alone");
        allowed_ = false;
        return;
      }
      tx.commit();
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      conn_ = std::move(conn);
    }
    auto started = std::chrono::steady_clock::now();
    pqxx::nontransaction tx(*conn_);
    tx.exec0("VACUUM pgfanout.changes");
    auto dead = static_cast<std::size_t>(tx.exec1(kDeadSql)[0].as<std::int64_t>(0));
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    metrics_.add("pgfanout_publisher_outbox_vacuums_total", {});
    std::lock_guard lock(mutex_);
    pending_ -= std::min(pending_, deleted_since);
    // Dead rows it could not remove: an old transaction still sees them. Wait longer.
    if (dead * 2 > deleted_since) {
      due_at_ = std::min(due_at_ * 2, every_ * 32);
    } else {
      due_at_ = every_;
    }
    spdlog::debug("vacuumed the outbox after {} deleted changes in {:.1f} ms; {} dead rows left; next after {}",
                  deleted_since, ms, dead, due_at_);
  } catch (const std::exception& e) {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    spdlog::warn("vacuum of pgfanout.changes failed (autovacuum will do it): {}", one_line(e.what()));
    conn_.reset();
    pending_ = 0;  // try again after another `every` deletes
  }
}

}  // namespace pgfanout
