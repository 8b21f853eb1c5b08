#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <pqxx/connection>

#include "pgfanout/change.hpp"

namespace pgfanout {

/// The publisher's view of `pgfanout.changes` on its one PostgreSQL connection: reads the
/// head of the outbox in id order, deletes what the broker confirmed, flips the idle flag
/// that tells writers whether to NOTIFY. Every statement is a short autocommit statement,
/// so notifications are never held back by an open transaction on this connection.
/// Errors surface as pqxx exceptions; the caller decides whether they are transient.
class OutboxReader {
 public:
  explicit OutboxReader(pqxx::connection& conn);

  /// True when install.sql has been run on this database.
  bool installed();
  /// Tries to become the one active publisher of this database (session advisory lock,
  /// released by PostgreSQL when this connection ends). False while another holds it.
  bool try_lead();
  using TableName = std::pair<std::string, std::string>;  // schema, table

  /// The oldest changes still in the outbox, in id order, leaving out the tables in
  /// `held`: at most `max_rows`, and no more than about `max_bytes` of row data (but
  /// always at least one change).
  std::vector<OutboxChange> head(int max_rows, std::int64_t max_bytes,
                                 const std::vector<TableName>& held = {});
  /// Deletes exactly these (confirmed) changes.
  void remove(std::span<const OutboxChange> changes);
  /// Tells writers whether to wake the publisher with NOTIFY (only while it waits).
  void set_idle(bool idle);

  struct Depth {
    std::int64_t rows = 0;
    double oldest_age_seconds = 0;
  };
  Depth depth();

 private:
  pqxx::connection& conn_;
};

}  // namespace pgfanout
