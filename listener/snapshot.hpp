#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include <pqxx/connection>

#include "table_catalog.hpp"

namespace pgfanout {

/// The snapshot cannot start (a replica table is not empty, or missing): the listener
/// exits non-zero instead of retrying, because only the user can fix it.
class SnapshotRefused : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Copies every table tracked on the source (pgfanout.tracked) whose `schema.table`
/// matches one of `patterns` into the replica, reading all of them in one REPEATABLE READ
/// snapshot and writing them in one replica transaction. The caller binds its queue first,
/// so every change after the snapshot is queued; replaying the ones the snapshot already
/// holds is harmless (upserts and deletes in commit order converge).
/// Refuses a non-empty replica table unless `truncate`.
///
/// Once per queue: the tables copied are recorded in pgfanout.listener_snapshots on the
/// replica, in the same transaction as their rows. Without `truncate`, tables already
/// recorded for `queue` are not copied again (a restart with the same flags copies
/// nothing; a wider --tables copies the tables it adds). An interrupted copy committed
/// nothing, so the next start copies again. `truncate` always copies every table.
/// Most rows one snapshot FETCH asks for, and the bytes of row text it aims to stay under.
inline constexpr std::size_t kSnapshotFetchRows = 5000;
inline constexpr std::size_t kSnapshotFetchBytes = std::size_t{64} << 20;

/// How many rows the next FETCH of a table asks for: doubling from 1 after `previous`
/// (0 for the first), at most kSnapshotFetchRows, and at most `budget` bytes at the widest
/// row seen so far, so that a table of 20 MB rows is read a few rows at a time.
std::size_t next_fetch_rows(std::size_t previous, std::size_t widest_row,
                            std::size_t budget = kSnapshotFetchBytes);

void copy_snapshot(const std::string& source_conninfo, pqxx::connection& target,
                   TableCatalog& catalog, const std::vector<std::string>& patterns,
                   const std::string& queue, bool truncate);

}  // namespace pgfanout
