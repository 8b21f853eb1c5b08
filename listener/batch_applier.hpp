#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/connection>
#include <pqxx/nontransaction>

#include "apply_plan.hpp"

namespace pgfanout {

/// A change the replica refused (constraint, type, missing key ...), with the error.
struct RejectedChange {
  std::size_t index;
  std::string error;
};

struct ApplyResult {
  std::vector<RejectedChange> rejected;
  double lag_seconds = 0;  // replica clock now minus `ts` of the last change applied
  /// Changes dropped unapplied: their message came from a deposed publisher (epoch_fence.hpp).
  std::vector<std::size_t> stale;
  /// The largest publisher epoch applied on this queue, this batch included.
  std::optional<std::int64_t> epoch;
  /// Rows written by COPY rather than by the upsert statement (BatchApplier::copy_step).
  std::size_t copied_rows = 0;
};

/// Applies a batch of changes to the replica in one transaction, as set-based statements
/// in message order. If the replica refuses the batch, it is applied again with each half
/// in a savepoint, recursively, until the refused changes are isolated; every other change
/// is applied and committed. A COMMIT that fails (a deferred check) is isolated the same
/// way with every check immediate; if even that does not commit, the whole batch is
/// rejected. Transient errors (connection lost, deadlock, timeouts, out
/// of resources) propagate instead of condemning a change (nothing is committed, the caller
/// must not ack). The listener's bookkeeping row is written in the same transaction, and
/// so is the largest publisher epoch applied on the queue: changes whose message carries
/// a smaller one are dropped (ApplyResult::stale), see epoch_fence.hpp.
/// Transaction control (BEGIN, SAVEPOINT, ROLLBACK TO) is explicit SQL on a
/// nontransaction: after a failed statement the session state is then exactly what the
/// code says, whatever the client library does on its own.
class BatchApplier {
 public:
  BatchApplier(pqxx::connection& conn, std::string queue);

  /// `epochs` holds the epoch of each change's message (nullopt: none).
  ApplyResult apply(const std::vector<const ParsedChange*>& changes,
                    const std::vector<const TableInfo*>& tables,
                    const std::vector<std::optional<std::int64_t>>& epochs);

 private:
  /// Applies the changes of `subset`. With `copy`, a step of new rows is first tried as a
  /// COPY (see copy_step), which the passes that isolate a failure do not use. Returns the
  /// rows COPY wrote.
  std::size_t run(pqxx::nontransaction& tx, const std::vector<std::size_t>& subset,
           const std::vector<const ParsedChange*>& changes,
           const std::vector<const TableInfo*>& tables, bool copy);
  /// Writes an upsert step of INSERTs' rows with COPY, under a savepoint; false (and the
  /// savepoint rolled back) when COPY cannot carry a value or the replica refused it, so
  /// that the statement applies the step instead.
  bool copy_step(pqxx::nontransaction& tx, const ApplyStep& step);
  void isolate(pqxx::nontransaction& tx, const std::vector<std::size_t>& subset,
               const std::vector<const ParsedChange*>& changes,
               const std::vector<const TableInfo*>& tables, std::vector<RejectedChange>& rejected);
  /// Locks the queue's epoch row and judges the batch against it; the indices to apply.
  std::vector<std::size_t> fence(pqxx::nontransaction& tx,
                                 const std::vector<std::optional<std::int64_t>>& epochs,
                                 ApplyResult& result);
  /// Writes the bookkeeping row (result.lag_seconds); `careful` keeps a `ts` the replica
  /// cannot read from failing the transaction (it is then left out).
  void record(pqxx::nontransaction& tx, const std::vector<const ParsedChange*>& changes,
              const std::vector<std::size_t>& live, std::size_t rejected, bool careful,
              ApplyResult& result);

  pqxx::connection& conn_;
  std::string queue_;
};

}  // namespace pgfanout
