#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/connection>

#include "pgfanout/change.hpp"
#include "pgfanout/pg_replication.hpp"
#include "pgoutput.hpp"
#include "type_catalog.hpp"

namespace pgfanout {

/// The logical capture's source (README, "Capture modes"): streams the slot over a
/// replication connection (pgoutput), turns each row change of a tracked table into the
/// change the trigger capture would have written, and tells the server how far it may
/// free the WAL: only to the end of transactions whose every change the broker confirmed.
///
/// Ids count on from pgfanout.logical_position (the last id of the last transaction
/// shipped), so a transaction decoded again after a restart gets the same ids. That row
/// is written (synchronously) before the slot's flush position moves past a transaction;
/// a transaction the server sends again that ends before it was shipped and is skipped.
/// Rows written into pgfanout.partition_truncates become the changes they stand for (a
/// DELETE or TRUNCATE of the partitioned table they name); its other changes are not shipped.
/// The publisher's pqxx connection `sql` reads the catalog (types, key columns) and
/// writes that position; it is used from the same thread only.
class SlotReader {
 public:
  /// `epoch`: the lease this publisher holds; the position is stored only while it does
  /// (LeaseLost otherwise).
  SlotReader(const std::string& conninfo, pqxx::connection& sql, std::string slot, std::int64_t epoch);

  int socket() const { return stream_.socket(); }
  /// Changes that have arrived, in commit order (never blocks): at most `max_rows`, and
  /// no more once `max_bytes` of row JSON is reached. Nothing after a switch back to the
  /// trigger capture (switched_back()).
  std::vector<OutboxChange> read(int max_rows, std::int64_t max_bytes);
  /// The broker confirmed (or the outbox took) the next `n` changes read, in order.
  void confirmed(std::size_t n);
  /// Whether the stream reached set_capture('trigger'): once everything read before it
  /// is confirmed (idle()), the slot has nothing more for the publisher.
  bool switched_back() const { return switched_back_; }
  /// Nothing read is waiting for a confirmation.
  bool idle() const { return txns_.empty() && !in_transaction_; }
  /// Sends a status update when one is due (every few seconds, well within
  /// wal_sender_timeout) or the server asked for one.
  void tick();
  /// How far the server may free the WAL: sent as the flush position.
  pgoutput::Lsn flushed() const { return flushed_; }
  /// Age of the oldest commit read and not yet confirmed (0 when nothing is in flight).
  double lag_seconds() const;
  /// The id given to the last change read (pgfanout.logical_position's last_id before
  /// the first): every change parked from the slot, and every change the trigger capture
  /// wrote before the switch to logical, has an id up to it.
  std::int64_t last_id() const { return last_id_; }

 private:
  /// Where the columns of pgfanout.partition_truncates are in its rows.
  struct PartitionTruncateColumns {
    std::size_t root_schema = 0, root_name = 0, op = 0, old_key = 0, old_text = 0;
  };
  struct RelationInfo {
    pgoutput::Relation relation;
    std::vector<std::size_t> key;  ///< indexes of the primary-key columns, in key order
    bool is_capture_table = false; ///< pgfanout.capture: a switch of the capture mode
    /// pgfanout.partition_truncates: a TRUNCATE of a partition (set when it is that table)
    std::optional<PartitionTruncateColumns> partition_truncates;
    bool tracked = true;           ///< has a primary key (tracked now, or untracked since)
  };
  struct Txn {
    pgoutput::Lsn end_lsn = 0;
    std::int64_t commit_time = 0;
    std::int64_t last_id = 0;
    std::size_t pending = 0;  ///< changes read and not yet confirmed
    bool committed = false;
    bool switch_back = false;  ///< holds set_capture('trigger')
  };

  void handle(std::string_view copy_data, std::vector<OutboxChange>& out, std::int64_t& bytes);
  void on_relation(pgoutput::Relation relation);
  const RelationInfo& relation(std::uint32_t oid) const;
  /// The relation of a row change of pgfanout.partition_truncates; nullptr for anything else.
  const RelationInfo* partition_truncates_of(const pgoutput::Message& message) const;
  /// Whether a row change's table has a key to ship it with (false: skipped, with a warning).
  bool keyed(const pgoutput::Message& message);
  OutboxChange change(const RelationInfo& rel, Op op);
  OutboxChange change(std::string schema, std::string table, Op op);
  /// A row the partition-TRUNCATE capture wrote into pgfanout.partition_truncates: a
  /// DELETE or TRUNCATE of the partitioned table it names.
  void partition_truncate(const RelationInfo& rel, const pgoutput::Tuple& row, std::vector<OutboxChange>& out);
  void append_row(std::string& out, std::string& json_nulls, std::string& texts, const RelationInfo& rel,
                  const pgoutput::Tuple& row, const pgoutput::Tuple* old);
  /// Appends a column's JSON form; when its text does not fit the type's shape even read
  /// again, appends the text as a JSON string and returns false (send it as a text form).
  bool append_converted(std::string& out, const RelationInfo& rel, const pgoutput::Column& column,
                        std::shared_ptr<const TypeShape>& shape, std::string_view text);
  void append_key(std::string& out, std::string& texts, const RelationInfo& rel, const pgoutput::Tuple& row);
  void send_status(bool reply_requested);

  pqxx::connection& sql_;
  std::string slot_;
  std::int64_t epoch_;
  ReplicationConnection stream_;
  TypeCatalog types_;
  /// When append_converted last read the types again for a value of each type.
  std::map<std::uint32_t, std::chrono::steady_clock::time_point> reread_at_;
  static constexpr std::chrono::seconds kTypeRereadInterval{1};
  std::map<std::uint32_t, RelationInfo> relations_;
  std::deque<Txn> txns_;
  bool in_transaction_ = false;
  bool skipping_ = false;  ///< a transaction shipped before the last restart
  bool switch_in_txn_ = false;
  bool switched_back_ = false;
  /// Tables (routing keys) that a TRUNCATE row of pgfanout.partition_truncates truncated
  /// in this transaction, with no change of them since: pgoutput's own TRUNCATE of them,
  /// which follows, is not sent again.
  std::set<std::string> truncated_;
  std::int64_t commit_time_ = 0;
  std::int64_t last_id_ = 0;
  pgoutput::Lsn stored_lsn_ = 0;
  pgoutput::Lsn flushed_ = 0;
  pgoutput::Lsn sent_lsn_ = 0;  ///< the server's last reported position (keepalives)
  bool reply_due_ = false;
  std::chrono::steady_clock::time_point last_status_;
};

}  // namespace pgfanout
