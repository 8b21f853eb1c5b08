#pragma once

#include <cstddef>
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
  double lag_seconds = 0;  // replica clock now minus `ts` of the batch's last change
};

/// Applies a batch of changes to the replica in one transaction, as set-based statements
/// in message order. If the replica refuses the batch, it is applied again with each half
/// in a savepoint, recursively, until the refused changes are isolated; every other change
/// is applied and committed. A COMMIT that fails (a deferred check) is isolated the same
/// way with every check immediate; if even that does not commit, the whole batch is
/// rejected. Transient errors (connection lost, deadlock, timeouts, out
/// of resources) propagate instead of condemning a change (nothing is committed, the caller
/// must not ack). The listener's bookkeeping row is written in the same transaction.
/// Transaction control (BEGIN, SAVEPOINT, ROLLBACK TO) is explicit SQL on a
/// nontransaction: after a failed statement the session state is then exactly what the
/// code says, whatever the client library does on its own.
class BatchApplier {
 public:
  BatchApplier(pqxx::connection& conn, std::string queue);

  ApplyResult apply(const std::vector<const ParsedChange*>& changes,
                    const std::vector<const TableInfo*>& tables);

 private:
  void run(pqxx::nontransaction& tx, const std::vector<std::size_t>& subset,
           const std::vector<const ParsedChange*>& changes,
           const std::vector<const TableInfo*>& tables);
  void isolate(pqxx::nontransaction& tx, const std::vector<std::size_t>& subset,
               const std::vector<const ParsedChange*>& changes,
               const std::vector<const TableInfo*>& tables, std::vector<RejectedChange>& rejected);
  /// Writes the bookkeeping row; `careful` keeps a `ts` the replica cannot read from
  /// failing the transaction (it is then left out).
  double record(pqxx::nontransaction& tx, const std::vector<const ParsedChange*>& changes,
                std::size_t applied, bool careful);

  pqxx::connection& conn_;
  std::string queue_;
};

}  // namespace pgfanout
