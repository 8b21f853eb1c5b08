#pragma once

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "change_parser.hpp"

namespace pgfanout {

/// A replica table as the listener resolved it from the replica's own catalog. Only names
/// read from the catalog are ever put into SQL, always quoted.
struct TableInfo {
  std::string schema;
  std::string name;
  std::vector<std::string> columns;       // insertable columns, in table order
  std::vector<std::string> key_columns;   // primary key, in key order
  /// SQL type of every column (format_type from the catalog, so already quoted).
  std::map<std::string, std::string, std::less<>> types;
  std::set<std::string, std::less<>> json_columns;  // json, jsonb or a domain over them
  bool partitioned = false;               // relkind 'p': TRUNCATE cannot take ONLY
  std::string qualified() const;          // "schema"."name"
};

/// What a run of changes does to one table.
enum class StepKind { Upsert, Delete, Truncate };

/// Consecutive changes of one table and one kind, applied by one set-based statement.
/// `rows` are the JSON objects to apply (new rows for Upsert, old keys for Delete), after
/// dropping all but the last version of each key; `changes` the indices of the changes.
/// Consecutive TRUNCATEs form one step whatever their tables (`truncated`, each once, in
/// order): tables linked by a foreign key can only be truncated in one statement, and the
/// primary's `TRUNCATE a, b` arrives as a TRUNCATE change per table.
struct ApplyStep {
  const TableInfo* table = nullptr;
  StepKind kind = StepKind::Upsert;
  std::vector<const RawObject*> rows;
  std::vector<std::size_t> changes;
  std::vector<const TableInfo*> truncated;
  /// Upsert: for each row, its columns holding a JSON null (nullptr or empty: none).
  std::vector<const std::vector<std::string>*> json_nulls;
  /// Upsert: for each row, its columns whose value is their text form (nullptr: none).
  std::vector<const std::vector<std::string>*> texts;
};

/// True when an UPDATE moved the row to another primary key.
bool key_changed(const ParsedChange& change);

/// Turns changes (in message order, each with its resolved table) into steps, in order.
/// An UPDATE that changes the key becomes a Delete of the old key followed by an Upsert.
std::vector<ApplyStep> plan_steps(const std::vector<const ParsedChange*>& changes,
                                  const std::vector<const TableInfo*>& tables);

/// The SQL of a step; `$1` is a JSON array of the step's rows, whose text is `rows_bytes`
/// long (a batch past what jsonb holds is read as json).
std::string step_sql(const ApplyStep& step, std::size_t rows_bytes = 0);

/// The step's rows as one JSON array text, for `$1`.
std::string rows_json(const ApplyStep& step);

}  // namespace pgfanout
