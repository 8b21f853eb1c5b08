#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <pqxx/connection>

#include "outbox_cursor.hpp"
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

  /// The oldest changes still in the outbox that this reader has not read yet, in id
  /// order, leaving out the tables in `held`: at most `max_rows`, and no more than about
  /// `max_bytes` of row data (but always at least one change). The next call returns the
  /// ones after them (see OutboxCursor): the caller deletes each change once the broker
  /// confirmed it. Changes it keeps must be of tables it then holds (leaves out of reads):
  /// when a held table is read again, the reader starts from the lowest id again. (A
  /// change kept for any other reason needs a new reader.)
  std::vector<OutboxChange> head(int max_rows, std::int64_t max_bytes,
                                 const std::vector<TableName>& held = {});
  /// Whether head() would return anything now (it does not move on).
  bool pending(const std::vector<TableName>& held = {});
  /// Deletes exactly these (confirmed) changes.
  void remove(std::span<const OutboxChange> changes);
  /// Tells writers whether to wake the publisher with NOTIFY (only while it waits).
  void set_idle(bool idle);

  struct Depth {
    std::int64_t rows = 0;
    double oldest_age_seconds = 0;
  };
  /// Rows in the outbox: those head() has still to read, and those with an id from
  /// `kept_from` on (changes that were read and stay, see Publisher::held_).
  Depth depth(std::int64_t kept_from = std::numeric_limits<std::int64_t>::max());

 private:
  std::vector<OutboxChange> read(int max_rows, std::int64_t max_bytes, const std::vector<TableName>& held,
                                 bool advance);

  pqxx::connection& conn_;
  OutboxCursor cursor_;
  std::vector<TableName> held_;  // left out of the last head()
};

}  // namespace pgfanout
