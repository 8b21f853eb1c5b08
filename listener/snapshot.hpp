#pragma once

#include <cstdint>
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

/// A table is cut into ctid ranges of at least this many pages (8 MB of 8 kB pages), about
/// kRangesPerWorker per worker, so that a worker that finishes early takes another range.
inline constexpr std::uint64_t kMinRangeBlocks = 1024;
inline constexpr unsigned kRangesPerWorker = 4;

/// The page numbers where a table of `blocks` pages is cut for `workers` workers, in
/// ascending order; none (one range, the whole table) for a table too small to cut.
std::vector<std::uint64_t> ctid_cuts(std::uint64_t blocks, unsigned workers);

/// The default of --snapshot-workers: the machine's cores, at least 2 and at most 8.
unsigned default_snapshot_workers();

/// Copies every table tracked on the source (pgfanout.tracked) whose `schema.table`
/// matches one of `patterns` into the replica, consistent as of one source snapshot: a
/// coordinator connection exports it (pg_export_snapshot) and `workers` connections import
/// it, each streaming ranges of rows with COPY TO STDOUT into COPY FROM STDIN on a replica
/// connection of its own (`target_conninfo`). COPY's text form carries every value exactly
/// as PostgreSQL writes it. The caller binds its queue first, so every change after the
/// snapshot is queued; replaying the ones the snapshot already holds is harmless (upserts
/// and deletes in commit order converge). Refuses a non-empty replica table unless
/// `truncate`.
///
/// Once per queue: before copying, the tables are marked in pgfanout.listener_snapshot_copies
/// on the replica (committed); every worker keeps its replica transaction open until all
/// have copied, then they commit, and one transaction records the tables in
/// pgfanout.listener_snapshots and drops the marks. Without `truncate`, tables already
/// recorded for `queue` are not copied again (a restart with the same flags copies nothing;
/// a wider --tables copies the tables it adds), and a marked table holds what an
/// interrupted copy left: it is emptied and copied again. `truncate` always copies.
void copy_snapshot(const std::string& source_conninfo, const std::string& target_conninfo,
                   pqxx::connection& target, TableCatalog& catalog,
                   const std::vector<std::string>& patterns, const std::string& queue,
                   bool truncate, unsigned workers);

}  // namespace pgfanout
