#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <pqxx/connection>

#include "outbox_cursor.hpp"
#include "pgfanout/change.hpp"

namespace pgfanout {

/// The publisher lost its lease to another (only an operator's UPDATE of the lease can do
/// that while its session lives): it must stop shipping and wait as a standby.
class LeaseLost : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

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
  /// Tries to become the one active publisher of this database: takes the lease
  /// (pgfanout.publisher_lease) for this connection's session once the holder's session
  /// has ended, with a new, larger epoch. False while another session holds it. Writers
  /// of tracked tables have no rights on the lease, so no other role can block it.
  bool try_lead();
  /// The epoch of the lease this reader took (0 before try_lead() succeeded).
  std::int64_t epoch() const { return epoch_; }
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
  /// Deletes exactly these (confirmed) changes, if this session still holds the lease;
  /// throws LeaseLost (deleting nothing) otherwise.
  void remove(std::span<const OutboxChange> changes);
  /// Tells writers whether to wake the publisher with NOTIFY (only while it waits).
  void set_idle(bool idle);

  /// The capture mode set_capture() chose, and the logical slot the publisher streams:
  /// set in logical mode, and after a switch back to triggers until the publisher has
  /// shipped what the slot held (empty otherwise).
  struct Capture {
    std::string mode;
    std::string slot;
  };
  Capture capture();
  /// Logical mode: puts changes into the outbox instead of publishing them (pgfanout.park),
  /// with their ids: those of a table the broker had no queue for, and those of a table
  /// that still has changes there (which must go out first).
  void park(std::span<const OutboxChange> changes);
  /// The tables that have changes in the outbox.
  std::vector<TableName> tables();
  /// pg_replication_slots.wal_status of `slot` ("reserved", "extended", "unreserved",
  /// "lost"), empty when there is no such slot.
  std::string slot_wal_status(const std::string& slot);
  /// Ends the replication session that still streams `slot` for a publisher that lost the
  /// lease (its SQL session ended, its walsender may live on); true if there was one.
  bool end_other_stream(const std::string& slot);
  /// Bytes of WAL the primary has written past `lsn`.
  std::int64_t wal_since(std::uint64_t lsn);
  /// Drops the logical slot left after a switch back to triggers, once it is shipped.
  void drop_slot(const std::string& slot);

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
  std::int64_t epoch_ = 0;
  std::vector<TableName> held_;  // left out of the last head()
};

}  // namespace pgfanout
