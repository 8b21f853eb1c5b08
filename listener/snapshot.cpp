#include "snapshot.hpp"

#include <algorithm>
#include <set>

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "pgfanout/change.hpp"
#include "pgfanout/log_text.hpp"
#include "pgfanout/pg_connection.hpp"
#include "pgfanout/topic_pattern.hpp"

namespace pgfanout {
std::size_t next_fetch_rows(std::size_t previous, std::size_t widest_row, std::size_t budget) {
  std::size_t rows = std::min(kSnapshotFetchRows, std::max<std::size_t>(1, previous * 2));
  if (widest_row > 0) rows = std::min(rows, std::max<std::size_t>(1, budget / widest_row));
  return rows;
}

void copy_snapshot(const std::string& source_conninfo, pqxx::connection& target,
                   TableCatalog& catalog, const std::vector<std::string>& patterns,
                   const std::string& queue, bool truncate) {
  auto source = connect_pg(source_conninfo, "pgfanout-listener-snapshot");
  pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> src(*source);
  if (src.exec1("SELECT to_regclass('pgfanout.tracked') IS NULL")[0].as<bool>()) {
    throw SnapshotRefused("--snapshot: pgfanout is not installed on the source (no pgfanout.tracked)");
  }
  std::vector<std::pair<std::string, std::string>> wanted;
  for (const auto& row : src.exec("SELECT schema_name, table_name FROM pgfanout.tracked ORDER BY 1, 2")) {
    std::string schema = row[0].c_str(), name = row[1].c_str();
    if (topic_matches_any(patterns, routing_key(schema, name))) wanted.emplace_back(schema, name);
  }
  if (!truncate) {
    std::set<std::pair<std::string, std::string>> done;
    pqxx::nontransaction read(target);
    for (const auto& row : read.exec_params(
             "SELECT schema_name, table_name FROM pgfanout.listener_snapshots WHERE queue = $1", queue)) {
      done.emplace(row[0].c_str(), row[1].c_str());
    }
    std::size_t before = wanted.size();
    std::erase_if(wanted, [&](const auto& table) { return done.count(table) > 0; });
    if (wanted.empty()) {
      spdlog::info("snapshot: queue '{}' has its snapshot of {} tables already (taken before); "
                   "consuming (use --snapshot=truncate to copy again)", queue, before);
      return;
    }
    if (wanted.size() < before) {
      spdlog::info("snapshot: {} of {} tables were copied for queue '{}' before; copying the {} others",
                   before - wanted.size(), before, queue, wanted.size());
    }
  }
  // Owned here: resolving a later table may make the catalog forget an earlier one.
  std::vector<std::shared_ptr<const TableInfo>> held;
  std::vector<const TableInfo*> tables;
  for (const auto& [schema, name] : wanted) {
    std::shared_ptr<const TableInfo> info = catalog.resolve(target, schema, name);
    if (!info) throw SnapshotRefused("--snapshot: the replica has no table " + routing_key(schema, name));
    if (info->key_columns.empty()) {
      throw SnapshotRefused("--snapshot: replica table " + info->qualified() + " has no primary key");
    }
    tables.push_back(info.get());
    held.push_back(std::move(info));
  }

  pqxx::work dst(target);
  if (truncate && !tables.empty()) {
    // One statement for all of them: tables linked by a foreign key can only be truncated
    // together.
    ApplyStep all{tables.front(), StepKind::Truncate, {}, {}, tables, {}};
    try {
      dst.exec0(step_sql(all));
    } catch (const pqxx::sql_error& e) {
      if (e.sqlstate() != "0A000") throw;
      throw SnapshotRefused("--snapshot=truncate: the replica refused to empty the tables: " +
                            one_line(e.what()) +
                            " (a replica table outside --tables references one of them)");
    }
  }
  for (const TableInfo* t : tables) {
    if (!truncate && dst.exec1("SELECT EXISTS (SELECT 1 FROM " + t->qualified() + ")")[0].as<bool>()) {
      throw SnapshotRefused("--snapshot: replica table " + t->qualified() +
                            " is not empty (use --snapshot=truncate to replace its rows)");
    }
  }
  std::int64_t total = 0;
  for (const TableInfo* t : tables) {
    // to_jsonb writes SQL NULL and a JSON null alike: one flag per json/jsonb column tells,
    // for the columns that are json/jsonb on both sides (the replica may have its own).
    std::vector<std::string> json_columns;
    for (const auto& row : src.exec_params("SELECT unnest(pgfanout.json_columns($1::regclass))", t->qualified())) {
      std::string c = row[0].c_str();
      if (t->json_columns.count(c)) json_columns.push_back(std::move(c));
    }
    std::string flags;
    for (const auto& c : json_columns) flags += ", to_jsonb(t." + quote_ident(c) + ") = 'null'::jsonb";
    // ONLY: an inheritance child's rows are the child's (a partitioned table has none of
    // its own, and its partitions' rows are reported under its name).
    bool partitioned = src.exec_params1("SELECT relkind = 'p' FROM pg_class WHERE oid = $1::regclass",
                                        t->qualified())[0].as<bool>();
    src.exec0("DECLARE pgfanout_snapshot NO SCROLL CURSOR FOR SELECT to_jsonb(t.*)::text" + flags +
              " FROM " + (partitioned ? "" : "ONLY ") + t->qualified() + " t");
    std::int64_t copied = 0;
    std::size_t fetch = 0, widest = 0;
    for (;;) {
      fetch = next_fetch_rows(fetch, widest);
      pqxx::result r = src.exec("FETCH " + std::to_string(fetch) + " FROM pgfanout_snapshot");
      if (r.empty()) break;
      std::vector<RawObject> rows;
      std::vector<std::vector<std::string>> nulls(r.size());
      rows.reserve(r.size());
      for (std::size_t i = 0; i < r.size(); ++i) {
        const auto& row = r[static_cast<pqxx::result::size_type>(i)];
        rows.push_back(RawObject::from_text(std::string_view(row[0].c_str(), row[0].size())));
        widest = std::max(widest, row[0].size());
        for (std::size_t k = 0; k < json_columns.size(); ++k) {
          const auto& flag = row[static_cast<pqxx::row::size_type>(k + 1)];
          if (!flag.is_null() && flag.as<bool>()) nulls[i].push_back(json_columns[k]);
        }
      }
      ApplyStep step{t, StepKind::Upsert, {}, {}, {}, {}};
      for (std::size_t i = 0; i < rows.size(); ++i) {
        step.rows.push_back(&rows[i]);
        step.json_nulls.push_back(&nulls[i]);
      }
      dst.exec_params(step_sql(step), rows_json(step));
      copied += static_cast<std::int64_t>(r.size());
    }
    src.exec0("CLOSE pgfanout_snapshot");
    spdlog::info("snapshot: copied {} rows of {}", copied, t->qualified());
    total += copied;
  }
  for (const TableInfo* t : tables) {
    dst.exec_params(
        "INSERT INTO pgfanout.listener_snapshots (queue, schema_name, table_name, copied_at) "
        "VALUES ($1, $2, $3, now()) ON CONFLICT (queue, schema_name, table_name) "
        "DO UPDATE SET copied_at = EXCLUDED.copied_at",
        queue, t->schema, t->name);
  }
  dst.commit();
  src.commit();
  spdlog::info("snapshot: {} tables, {} rows, consistent as of one source snapshot", tables.size(), total);
}

}  // namespace pgfanout
