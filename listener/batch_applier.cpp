#include "batch_applier.hpp"

#include <algorithm>
#include <optional>
#include <string>

#include <pqxx/pqxx>
#include <pqxx/tablewriter>

#include <spdlog/spdlog.h>

#include "epoch_fence.hpp"
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

// The largest publisher epoch applied on the queue, locked for the batch's transaction
// (a standby listener taking over the queue waits for it).
constexpr const char* kEpochSql =
    "SELECT epoch FROM pgfanout.listener_epoch WHERE queue = $1 FOR UPDATE";
constexpr const char* kRecordEpochSql = R"(
INSERT INTO pgfanout.listener_epoch AS e (queue, epoch, updated_at) VALUES ($1, $2, clock_timestamp())
ON CONFLICT (queue) DO UPDATE SET epoch = EXCLUDED.epoch, updated_at = EXCLUDED.updated_at
WHERE e.epoch < EXCLUDED.epoch)";

// Runs `work` and returns the replica's refusal of it (a non-transient SQL error, as one
// line), or nullopt when it went through. A lost connection or a transient error (nothing
// to blame on the changes) propagates.
template <class Work>
std::optional<std::string> refusal_of(Work&& work) {
  try {
    work();
    return std::nullopt;
  } catch (const pqxx::broken_connection&) {
    throw;
  } catch (const pqxx::sql_error& e) {
    if (is_transient_error(e)) throw;
    return one_line(e.what());
  }
}

// The fewest rows worth a COPY: it costs a savepoint (two round trips) more than the
// statement.
constexpr std::size_t kCopyMinRows = 16;
constexpr std::size_t kCopyPiece = std::size_t{1} << 20;

}  // namespace

BatchApplier::BatchApplier(pqxx::connection& conn, std::string queue)
    : conn_(conn), queue_(std::move(queue)) {}

std::size_t BatchApplier::run(pqxx::nontransaction& tx, const std::vector<std::size_t>& subset,
                       const std::vector<const ParsedChange*>& changes,
                       const std::vector<const TableInfo*>& tables, bool copy) {
  std::vector<const ParsedChange*> c;
  std::vector<const TableInfo*> t;
  c.reserve(subset.size());
  t.reserve(subset.size());
  for (auto i : subset) {
    c.push_back(changes[i]);
    t.push_back(tables[i]);
  }
  std::size_t copied = 0;
  for (const ApplyStep& step : plan_steps(c, t)) {
    if (step.kind == StepKind::Truncate) {
      tx.exec0(step_sql(step));
    } else if (copy && copy_step(tx, step)) {
      copied += step.rows.size();
    } else {
      std::string rows = rows_json(step);
      tx.exec_params(step_sql(step, rows.size()), rows);
    }
  }
  return copied;
}

bool BatchApplier::copy_step(pqxx::nontransaction& tx, const ApplyStep& step) {
  if (step.kind != StepKind::Upsert || !step.inserts_only || !step.table->copyable ||
      step.rows.size() < kCopyMinRows) {
    return false;
  }
  std::vector<std::string> columns = upsert_columns(step);
  std::string text;
  if (!copy_rows(step, columns, text)) return false;
  tx.exec0("SAVEPOINT pgfanout_copy");
  auto refused = refusal_of([&] {
    // libpqxx 6.4's only way to send COPY data already in COPY's text format. The target
    // and columns are pasted as given: copy_target quotes them.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    std::vector<std::string> none;
    pqxx::tablewriter writer(tx, copy_target(step, columns), none.begin(), none.end());
#pragma GCC diagnostic pop
    // In pieces of whole rows, each copied once more by libpqxx (it appends the newline),
    // rather than the whole text at once.
    std::size_t at = 0;
    while (at < text.size()) {
      std::size_t end = std::min(text.size(), at + kCopyPiece);
      if (end < text.size()) end = std::min(text.size(), text.find('\n', end - 1) + 1);
      writer.write_raw_line(text.substr(at, end - at));
      at = end;
    }
    writer.complete();
  });
  if (!refused) {
    tx.exec0("RELEASE SAVEPOINT pgfanout_copy");
    return true;
  }
  tx.exec0("ROLLBACK TO SAVEPOINT pgfanout_copy");
  tx.exec0("RELEASE SAVEPOINT pgfanout_copy");
  spdlog::debug("COPY of {} rows into {} refused ({}); the statement applies them", step.rows.size(),
                step.table->qualified(), *refused);
  return false;
}

void BatchApplier::isolate(pqxx::nontransaction& tx, const std::vector<std::size_t>& subset,
                           const std::vector<const ParsedChange*>& changes,
                           const std::vector<const TableInfo*>& tables,
                           std::vector<RejectedChange>& rejected) {
  tx.exec0("SAVEPOINT pgfanout_isolate");
  std::optional<std::string> error = refusal_of([&] { run(tx, subset, changes, tables, false); });
  if (!error) {
    tx.exec0("RELEASE SAVEPOINT pgfanout_isolate");
    return;
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
    for (auto i : subset) rejected.push_back({i, *error});
    return;
  }
  auto split = subset.begin() + static_cast<std::ptrdiff_t>(middle);
  isolate(tx, std::vector<std::size_t>(subset.begin(), split), changes, tables, rejected);
  isolate(tx, std::vector<std::size_t>(split, subset.end()), changes, tables, rejected);
}

std::vector<std::size_t> BatchApplier::fence(pqxx::nontransaction& tx,
                                             const std::vector<std::optional<std::int64_t>>& epochs,
                                             ApplyResult& result) {
  std::optional<std::int64_t> applied;
  bool any = false;
  for (const auto& e : epochs) any = any || e.has_value();
  if (any) {
    pqxx::result r = tx.exec_params(kEpochSql, queue_);
    if (!r.empty()) applied = r[0][0].as<std::int64_t>();
  }
  EpochVerdict verdict = judge_epochs(applied, epochs);
  result.stale.clear();
  std::vector<std::size_t> live;
  for (std::size_t i = 0; i < epochs.size(); ++i) {
    (verdict.stale[i] ? result.stale : live).push_back(i);
  }
  if (verdict.highest && verdict.highest != applied) {
    tx.exec_params(kRecordEpochSql, queue_, *verdict.highest);
  }
  result.epoch = verdict.highest;
  return live;
}

void BatchApplier::record(pqxx::nontransaction& tx, const std::vector<const ParsedChange*>& changes,
                          const std::vector<std::size_t>& live, std::size_t rejected, bool careful,
                          ApplyResult& result) {
  if (live.empty()) return;
  const ParsedChange& last = *changes[live.back()];
  auto applied = static_cast<std::int64_t>(live.size() - rejected);
  auto write = [&](const std::string& ts) {
    return tx.exec_params1(kRecordSql, queue_, last.id, ts, applied)[0].as<double>();
  };
  if (!careful) {
    result.lag_seconds = write(last.ts);
    return;
  }
  // `ts` comes from the message: one the replica cannot read as a timestamp must not fail
  // a batch whose changes are fine, or it would be delivered again forever.
  tx.exec0("SAVEPOINT pgfanout_record");
  if (!refusal_of([&] { result.lag_seconds = write(last.ts); })) {
    tx.exec0("RELEASE SAVEPOINT pgfanout_record");
    return;
  }
  tx.exec0("ROLLBACK TO SAVEPOINT pgfanout_record");
  tx.exec0("RELEASE SAVEPOINT pgfanout_record");
  result.lag_seconds = write("");
}

ApplyResult BatchApplier::apply(const std::vector<const ParsedChange*>& changes,
                                const std::vector<const TableInfo*>& tables,
                                const std::vector<std::optional<std::int64_t>>& epochs) {
  ApplyResult result;
  if (changes.empty()) return result;
  pqxx::nontransaction tx(conn_);
  tx.exec0("BEGIN");
  bool at_commit = false;
  std::size_t copied = 0;
  auto first = refusal_of([&] {
    std::vector<std::size_t> live = fence(tx, epochs, result);
    copied = run(tx, live, changes, tables, true);
    record(tx, changes, live, 0, false, result);
    at_commit = true;
    tx.exec0("COMMIT");
  });
  if (!first) {
    result.copied_rows = copied;
    return result;
  }
  tx.exec0("ROLLBACK");
  // A failure at COMMIT comes from a deferred check (a deferred constraint trigger, foreign
  // key or unique index): savepoints cannot isolate it while it waits for the COMMIT, so
  // such a pass checks everything at once with its statement (SET CONSTRAINTS ALL
  // IMMEDIATE). The first pass after a failed statement keeps the replica's own deferral
  // (a deferred foreign key may need a later change of the batch); if its COMMIT fails,
  // the next pass is immediate.
  std::vector<bool> passes{true};
  if (!at_commit) passes.insert(passes.begin(), false);
  std::string error;
  for (bool immediate : passes) {
    result.rejected.clear();
    tx.exec0("BEGIN");
    auto refused = refusal_of([&] {
      if (immediate) tx.exec0("SET CONSTRAINTS ALL IMMEDIATE");
      std::vector<std::size_t> live = fence(tx, epochs, result);
      if (!live.empty()) isolate(tx, live, changes, tables, result.rejected);
      record(tx, changes, live, result.rejected.size(), true, result);
      tx.exec0("COMMIT");
    });
    if (!refused) return result;
    error = *refused;
    tx.exec0("ROLLBACK");
  }
  // Nothing isolated the failure: the batch goes to the dead letters whole rather than
  // being delivered again forever (its stale changes, as judged by the last pass, are
  // still dropped, not dead-lettered).
  result.rejected.clear();
  result.lag_seconds = 0;
  result.epoch.reset();
  std::vector<bool> stale(changes.size(), false);
  for (auto i : result.stale) stale[i] = true;
  for (std::size_t i = 0; i < changes.size(); ++i) {
    if (!stale[i]) result.rejected.push_back({i, "the replica refused the batch at COMMIT: " + error});
  }
  return result;
}

}  // namespace pgfanout
