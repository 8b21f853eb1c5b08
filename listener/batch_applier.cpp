#include "batch_applier.hpp"

#include <numeric>

#include <pqxx/pqxx>

#include "pgfanout/log_text.hpp"
#include "pgfanout/pg_connection.hpp"

namespace pgfanout {
namespace {

constexpr const char* kRecordSql = R"(
INSERT INTO pgfanout.listener_state AS s (queue, last_change_id, last_change_ts, applied_changes, updated_at)
VALUES ($1, $2, nullif($3, '')::timestamptz, $4, clock_timestamp())
ON CONFLICT (queue) DO UPDATE SET last_change_id = EXCLUDED.last_change_id,
  last_change_ts = coalesce(EXCLUDED.last_change_ts, s.last_change_ts),
  applied_changes = s.applied_changes + EXCLUDED.applied_changes, updated_at = EXCLUDED.updated_at
RETURNING coalesce(extract(epoch FROM clock_timestamp() - s.last_change_ts), 0)::float8)";

}  // namespace

BatchApplier::BatchApplier(pqxx::connection& conn, std::string queue)
    : conn_(conn), queue_(std::move(queue)) {}

void BatchApplier::run(pqxx::nontransaction& tx, const std::vector<std::size_t>& subset,
                       const std::vector<const ParsedChange*>& changes,
                       const std::vector<const TableInfo*>& tables) {
  std::vector<const ParsedChange*> c;
  std::vector<const TableInfo*> t;
  c.reserve(subset.size());
  t.reserve(subset.size());
  for (auto i : subset) {
    c.push_back(changes[i]);
    t.push_back(tables[i]);
  }
  for (const ApplyStep& step : plan_steps(c, t)) {
    if (step.kind == StepKind::Truncate) {
      tx.exec0(step_sql(step));
    } else {
      tx.exec_params(step_sql(step), rows_json(step));
    }
  }
}

void BatchApplier::isolate(pqxx::nontransaction& tx, const std::vector<std::size_t>& subset,
                           const std::vector<const ParsedChange*>& changes,
                           const std::vector<const TableInfo*>& tables,
                           std::vector<RejectedChange>& rejected) {
  std::string error;
  tx.exec0("SAVEPOINT pgfanout_isolate");
  try {
    run(tx, subset, changes, tables);
    tx.exec0("RELEASE SAVEPOINT pgfanout_isolate");
    return;
  } catch (const pqxx::broken_connection&) {
    throw;
  } catch (const pqxx::sql_error& e) {
    if (is_transient_error(e)) throw;
    error = one_line(e.what());
  }
  tx.exec0("ROLLBACK TO SAVEPOINT pgfanout_isolate");
  tx.exec0("RELEASE SAVEPOINT pgfanout_isolate");
  // Split in halves, but never inside a run of consecutive TRUNCATEs: the replica applies
  // them as one statement (plan_steps), and tables linked by a foreign key can only be
  // truncated together. A run that fails whole is rejected whole.
  auto truncate_pair = [&](std::size_t i) {
    return changes[subset[i - 1]]->op == Op::Truncate && changes[subset[i]]->op == Op::Truncate;
  };
  std::size_t middle = subset.size() / 2;
  while (middle > 0 && middle < subset.size() && truncate_pair(middle)) ++middle;
  if (middle == subset.size()) {
    middle = subset.size() / 2;
    while (middle > 0 && truncate_pair(middle)) --middle;
  }
  if (middle == 0) {
    for (auto i : subset) rejected.push_back({i, error});
    return;
  }
  auto split = subset.begin() + static_cast<std::ptrdiff_t>(middle);
  isolate(tx, std::vector<std::size_t>(subset.begin(), split), changes, tables, rejected);
  isolate(tx, std::vector<std::size_t>(split, subset.end()), changes, tables, rejected);
}

double BatchApplier::record(pqxx::nontransaction& tx, const std::vector<const ParsedChange*>& changes,
                            std::size_t applied) {
  const ParsedChange& last = *changes.back();
  return tx.exec_params1(kRecordSql, queue_, last.id, last.ts, static_cast<std::int64_t>(applied))[0]
      .as<double>();
}

ApplyResult BatchApplier::apply(const std::vector<const ParsedChange*>& changes,
                                const std::vector<const TableInfo*>& tables) {
  ApplyResult result;
  if (changes.empty()) return result;
  std::vector<std::size_t> all(changes.size());
  std::iota(all.begin(), all.end(), 0);
  pqxx::nontransaction tx(conn_);
  tx.exec0("BEGIN");
  try {
    run(tx, all, changes, tables);
    result.lag_seconds = record(tx, changes, changes.size());
    tx.exec0("COMMIT");
    return result;
  } catch (const pqxx::broken_connection&) {
    throw;
  } catch (const pqxx::sql_error& e) {
    if (is_transient_error(e)) throw;
  }
  tx.exec0("ROLLBACK");
  tx.exec0("BEGIN");
  isolate(tx, all, changes, tables, result.rejected);
  result.lag_seconds = record(tx, changes, changes.size() - result.rejected.size());
  tx.exec0("COMMIT");
  return result;
}

}  // namespace pgfanout
