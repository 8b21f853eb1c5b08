#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include <pqxx/connection>

#include "apply_plan.hpp"

namespace pgfanout {

/// Resolves `schema.name` from a message against the replica's catalog (pg_class,
/// pg_attribute, pg_index), never by pasting the names into SQL. Results are cached and
/// forgotten after `ttl` or on clear(), so DDL on the replica is picked up. Entries are
/// shared: a batch that holds one keeps it valid whatever the cache forgets meanwhile.
class TableCatalog {
 public:
  explicit TableCatalog(std::chrono::seconds ttl = std::chrono::seconds(60)) : ttl_(ttl) {}

  /// The table, or nullptr when the replica has no such ordinary or partitioned table.
  /// Throws pqxx errors (connection lost, ...).
  std::shared_ptr<const TableInfo> resolve(pqxx::connection& conn, const std::string& schema,
                                           const std::string& name);
  void clear() { tables_.clear(); }
  /// Forgets which tables the replica lacked. The listener calls it before each batch: a
  /// table created after its first changes were dead-lettered is found by the next change
  /// that names it, while a batch full of changes of a missing table costs one query.
  void forget_missing() { std::erase_if(tables_, [](const auto& e) { return !e.second; }); }

  /// Like resolve(), but reads the catalog again when `row` carries a member the cached
  /// table has no column for (a column added on the replica, then on the primary), at
  /// most once per `recheck` per table: a row that truly has an extra column does not
  /// cost a catalog query per batch.
  std::shared_ptr<const TableInfo> resolve_for(pqxx::connection& conn, const std::string& schema,
                                               const std::string& name, const RawObject& row,
                                               std::chrono::milliseconds recheck = std::chrono::seconds(5));

 private:
  std::chrono::seconds ttl_;
  std::chrono::steady_clock::time_point loaded_at_{};
  // nullptr: the replica has no such table
  std::map<std::pair<std::string, std::string>, std::shared_ptr<const TableInfo>> tables_;
  std::map<std::pair<std::string, std::string>, std::chrono::steady_clock::time_point> rechecked_;
};

}  // namespace pgfanout
