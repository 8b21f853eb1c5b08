#include "snapshot.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <exception>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "pgfanout/change.hpp"
#include "pgfanout/log_text.hpp"
#include "pgfanout/pg_connection.hpp"
#include "pgfanout/pg_copy.hpp"
#include "pgfanout/topic_pattern.hpp"

namespace pgfanout {
namespace {

// COPY's text form is written under the reading session's settings and read under the
// writing session's: both sides use the same ones, so that dates, intervals, floats, bytea
// and money read back as the values they were. No idle timeout: the coordinator holds the
// exported snapshot, and a worker its replica transaction, while the others copy.
constexpr const char* kCopySettings =
    "SET client_encoding = 'UTF8'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 3; SET bytea_output = 'hex'; SET TimeZone = 'UTC'; "
    "SET lc_monetary = 'C'; SET idle_in_transaction_session_timeout = 0";

// A snapshot's name as pg_export_snapshot() returns it (hex digits and dashes): checked
// before it is quoted into SET TRANSACTION SNAPSHOT, which takes no parameter.
bool plausible_snapshot_name(const std::string& name) {
  return !name.empty() && name.size() < 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isxdigit(static_cast<unsigned char>(c)) || c == '-';
  });
}

std::string tid(std::uint64_t block) { return "'(" + std::to_string(block) + ",0)'::tid"; }

struct TableCopy {
  const TableInfo* table = nullptr;
  std::string columns;  // the columns both sides have, quoted, in the source's order
  std::atomic<std::int64_t> rows{0};
  std::size_t ranges = 1;
  std::atomic<std::size_t> ranges_left{0};
};

// One COPY of a table's rows, all of them or those of a range of pages.
struct Range {
  TableCopy* copy = nullptr;
  std::string copy_out;
  std::string copy_in;
};

struct Worker {
  std::unique_ptr<CopyConnection> source;
  std::unique_ptr<CopyConnection> replica;
};

}  // namespace

std::vector<std::uint64_t> ctid_cuts(std::uint64_t blocks, unsigned workers) {
  std::uint64_t ranges =
      std::min<std::uint64_t>(std::uint64_t{workers} * kRangesPerWorker, blocks / kMinRangeBlocks);
  std::vector<std::uint64_t> cuts;
  for (std::uint64_t i = 1; i < ranges; ++i) cuts.push_back(blocks * i / ranges);
  return cuts;
}

unsigned default_snapshot_workers() {
  return std::clamp(std::thread::hardware_concurrency(), 2u, 8u);
}

void copy_snapshot(const std::string& source_conninfo, const std::string& target_conninfo,
                   pqxx::connection& target, TableCatalog& catalog,
                   const std::vector<std::string>& patterns, const std::string& queue,
                   bool truncate, unsigned workers) {
  CopyConnection src(source_conninfo, "pgfanout-listener-snapshot");
  src.exec(kCopySettings);
  src.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  if (src.column("SELECT to_regclass('pgfanout.tracked') IS NULL").at(0) == "t") {
    throw SnapshotRefused(
        "--snapshot: pgfanout is not installed on the source (no pgfanout.tracked)");
  }
  std::vector<std::pair<std::string, std::string>> wanted;
  {
    auto schemas =
        src.column("SELECT schema_name FROM pgfanout.tracked ORDER BY schema_name, table_name");
    auto names =
        src.column("SELECT table_name FROM pgfanout.tracked ORDER BY schema_name, table_name");
    for (std::size_t i = 0; i < schemas.size() && i < names.size(); ++i) {
      if (topic_matches_any(patterns, routing_key(*schemas[i], *names[i])))
        wanted.emplace_back(*schemas[i], *names[i]);
    }
  }
  std::set<std::pair<std::string, std::string>> interrupted;
  {
    pqxx::nontransaction read(target);
    for (const auto& row : read.exec_params("SELECT schema_name, table_name FROM "
                                            "pgfanout.listener_snapshot_copies WHERE queue = $1",
                                            queue)) {
      interrupted.emplace(row[0].c_str(), row[1].c_str());
    }
    if (!truncate) {
      std::set<std::pair<std::string, std::string>> done;
      for (const auto& row : read.exec_params(
               "SELECT schema_name, table_name FROM pgfanout.listener_snapshots WHERE queue = $1",
               queue)) {
        done.emplace(row[0].c_str(), row[1].c_str());
      }
      std::size_t before = wanted.size();
      std::erase_if(wanted, [&](const auto& table) { return done.count(table) > 0; });
      if (wanted.empty()) {
        spdlog::info(
            "snapshot: queue '{}' has its snapshot of {} tables already (taken before); "
            "consuming (use --snapshot=truncate to copy again)",
            queue, before);
        return;
      }
      if (wanted.size() < before) {
        spdlog::info(
            "snapshot: {} of {} tables were copied for queue '{}' before; copying the {} others",
            before - wanted.size(), before, queue, wanted.size());
      }
    }
  }
  // Owned here: resolving a later table may make the catalog forget an earlier one.
  std::vector<std::shared_ptr<const TableInfo>> held;
  std::vector<const TableInfo*> tables;
  for (const auto& [schema, name] : wanted) {
    std::shared_ptr<const TableInfo> info = catalog.resolve(target, schema, name);
    if (!info)
      throw SnapshotRefused("--snapshot: the replica has no table " + routing_key(schema, name));
    if (info->key_columns.empty()) {
      throw SnapshotRefused("--snapshot: replica table " + info->qualified() +
                            " has no primary key");
    }
    tables.push_back(info.get());
    held.push_back(std::move(info));
  }

  // Several replica transactions cannot see each other's rows: without replica mode a
  // foreign key between two tables copied by different workers would fail its check, and
  // the replica's triggers would fire. Then one worker copies everything, in one
  // transaction, as before.
  bool replica_mode;
  {
    pqxx::nontransaction read(target);
    replica_mode =
        read.exec1("SELECT current_setting('session_replication_role') = 'replica'")[0].as<bool>();
  }
  if (!replica_mode && workers > 1) {
    spdlog::info(
        "snapshot: copying with one worker (the replica refused session_replication_role = "
        "replica)");
    workers = 1;
  }
  workers = std::max(workers, 1u);

  // The source side of every table: its columns (the replica may have others, or order
  // them otherwise) and pages. Read after the snapshot was taken (the transaction's first
  // query), so every row it sees is on a page counted here.
  std::vector<std::unique_ptr<TableCopy>> copies;
  std::vector<Range> ranges;
  for (const TableInfo* t : tables) {
    auto copy = std::make_unique<TableCopy>();
    copy->table = t;
    for (const auto& c :
         src.column("SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass "
                    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    {t->qualified()})) {
      if (std::find(t->columns.begin(), t->columns.end(), *c) == t->columns.end()) continue;
      copy->columns += (copy->columns.empty() ? "" : ", ") + quote_ident(*c);
    }
    if (copy->columns.empty()) {
      throw SnapshotRefused("--snapshot: replica table " + t->qualified() +
                            " has no column of the source's");
    }
    bool partitioned =
        src.column("SELECT relkind = 'p' FROM pg_class WHERE oid = $1::regclass", {t->qualified()})
            .at(0) == "t";
    std::uint64_t blocks = std::stoull(
        src.column("SELECT pg_relation_size($1::regclass) / current_setting('block_size')::bigint",
                   {t->qualified()})
            .at(0)
            .value_or("0"));
    // A partitioned table is read through its root (the snapshot role may read only the
    // root), in one range: its partitions' ctids overlap. ONLY: an inheritance child's rows
    // are the child's.
    std::vector<std::uint64_t> cuts =
        partitioned ? std::vector<std::uint64_t>{} : ctid_cuts(blocks, workers);
    std::string select =
        "SELECT " + copy->columns + " FROM " + (partitioned ? "" : "ONLY ") + t->qualified();
    std::string copy_in = "COPY " + t->qualified() + " (" + copy->columns + ") FROM STDIN";
    for (std::size_t i = 0; i <= cuts.size(); ++i) {
      std::string where;
      if (i > 0) where = " WHERE ctid >= " + tid(cuts[i - 1]);
      // The last range is open: pages the table grew since hold no row the snapshot sees,
      // but an open end needs no such argument.
      if (i < cuts.size())
        where += (where.empty() ? " WHERE" : " AND") + std::string(" ctid < ") + tid(cuts[i]);
      ranges.push_back(Range{copy.get(), "COPY (" + select + where + ") TO STDOUT", copy_in});
    }
    copy->ranges = cuts.size() + 1;
    copy->ranges_left = copy->ranges;
    copies.push_back(std::move(copy));
  }
  std::string snapshot = src.column("SELECT pg_export_snapshot()").at(0).value_or("");
  if (!plausible_snapshot_name(snapshot))
    throw std::runtime_error("pg_export_snapshot() returned an unexpected name");

  // Mark the tables (and empty them) in a transaction of its own, committed before the
  // workers write: a copy cut off from here on leaves the marks, by which the next start
  // knows the rows as its own.
  {
    pqxx::work dst(target);
    std::vector<const TableInfo*> emptied;
    for (const TableInfo* t : tables) {
      if (truncate || interrupted.count({t->schema, t->name})) emptied.push_back(t);
    }
    if (!emptied.empty()) {
      if (!truncate) {
        spdlog::info(
            "snapshot: emptying {} tables an interrupted copy for queue '{}' left, to copy them "
            "again",
            emptied.size(), queue);
      }
      // One statement for all of them: tables linked by a foreign key can only be
      // truncated together.
      ApplyStep all{emptied.front(), StepKind::Truncate, {}, {}, emptied, {}, {}};
      try {
        dst.exec0(step_sql(all));
      } catch (const pqxx::sql_error& e) {
        if (e.sqlstate() != "0A000") throw;
        throw SnapshotRefused(std::string(truncate ? "--snapshot=truncate" : "--snapshot") +
                              ": the replica refused to empty the tables: " + one_line(e.what()) +
                              " (a replica table outside --tables references one of them)");
      }
    }
    for (const TableInfo* t : tables) {
      if (!truncate && !interrupted.count({t->schema, t->name}) &&
          dst.exec1("SELECT EXISTS (SELECT 1 FROM " + t->qualified() + ")")[0].as<bool>()) {
        throw SnapshotRefused("--snapshot: replica table " + t->qualified() +
                              " is not empty (use --snapshot=truncate to replace its rows)");
      }
      // Emptied, it is no longer a copy taken: a cut-off copy must not pass for one.
      dst.exec_params(
          "DELETE FROM pgfanout.listener_snapshots WHERE queue = $1 AND schema_name = $2 AND "
          "table_name = $3",
          queue, t->schema, t->name);
      dst.exec_params(
          "INSERT INTO pgfanout.listener_snapshot_copies (queue, schema_name, table_name, "
          "started_at) "
          "VALUES ($1, $2, $3, now()) ON CONFLICT (queue, schema_name, table_name) DO UPDATE SET "
          "started_at = EXCLUDED.started_at",
          queue, t->schema, t->name);
    }
    dst.commit();
  }

  std::vector<Worker> crew(std::min<std::size_t>(workers, ranges.size()));
  for (Worker& w : crew) {
    w.source = std::make_unique<CopyConnection>(source_conninfo, "pgfanout-listener-snapshot");
    w.source->exec(kCopySettings);
    w.source->exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    w.source->exec("SET TRANSACTION SNAPSHOT " + w.source->quote_literal(snapshot));
    w.replica = std::make_unique<CopyConnection>(target_conninfo, "pgfanout-listener-snapshot");
    w.replica->exec(kCopySettings);
    if (replica_mode) w.replica->exec("SET session_replication_role = replica");
    w.replica->exec("BEGIN");
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex first_error_mutex;
  std::exception_ptr first_error;
  auto work = [&](Worker& w) {
    try {
      for (std::size_t i = next++; i < ranges.size() && !failed; i = next++) {
        Range& r = ranges[i];
        r.copy->rows += copy_rows(*w.source, r.copy_out, *w.replica, r.copy_in);
        if (--r.copy->ranges_left == 0) {
          spdlog::info("snapshot: copied {} rows of {} in {} {}", r.copy->rows.load(),
                       r.copy->table->qualified(), r.copy->ranges,
                       r.copy->ranges == 1 ? "range" : "ctid ranges");
        }
      }
    } catch (...) {
      std::lock_guard lock(first_error_mutex);
      if (!failed.exchange(true)) {
        first_error = std::current_exception();
        // The others may be waiting on a lock or a long range: stop them now.
        for (Worker& other : crew) {
          if (&other == &w) continue;
          other.source->cancel();
          other.replica->cancel();
        }
      }
    }
  };
  {
    std::vector<std::jthread> threads;
    for (Worker& w : crew) threads.emplace_back(work, std::ref(w));
  }
  if (first_error) std::rethrow_exception(first_error);

  // Every worker has copied: their transactions commit, then one records the copy. A cut
  // between the two leaves the marks, and the next start copies again.
  for (Worker& w : crew) w.replica->exec("COMMIT");
  std::int64_t total = 0;
  {
    pqxx::work dst(target);
    for (const auto& c : copies) {
      total += c->rows;
      dst.exec_params(
          "INSERT INTO pgfanout.listener_snapshots (queue, schema_name, table_name, copied_at) "
          "VALUES ($1, $2, $3, now()) ON CONFLICT (queue, schema_name, table_name) "
          "DO UPDATE SET copied_at = EXCLUDED.copied_at",
          queue, c->table->schema, c->table->name);
      dst.exec_params(
          "DELETE FROM pgfanout.listener_snapshot_copies WHERE queue = $1 AND schema_name = $2 AND "
          "table_name = $3",
          queue, c->table->schema, c->table->name);
    }
    dst.commit();
  }
  src.exec("COMMIT");
  spdlog::info("snapshot: {} tables, {} rows, consistent as of one source snapshot ({} workers)",
               tables.size(), total, crew.size());
}

}  // namespace pgfanout
