#pragma once

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <string_view>
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
  /// COPY FROM writes rows as the upsert would: no row-level security (COPY FROM refuses
  /// it), no rules (COPY ignores them), a key checked at once and the UPDATE right (without
  /// either the upsert fails, and so must the rows whatever the batch's size).
  bool copyable = false;
  /// GENERATED ALWAYS AS IDENTITY: an INSERT writes them (OVERRIDING SYSTEM VALUE), an
  /// UPDATE only to DEFAULT, so the upsert's DO UPDATE leaves them as they are.
  std::set<std::string, std::less<>> identity_always;
  /// Of json_columns, the domains: "json" or "jsonb", the type at the bottom of the
  /// domain. The statement reads such a column as that type and lets the INSERT make it
  /// the domain, so the domain's checks see the value written, not a text form or a JSON
  /// null on the way to it.
  std::map<std::string, std::string, std::less<>> json_domain_base;
  /// The replica's server_encoding is UTF8: jsonb takes any character a message holds.
  /// In another encoding it refuses those the encoding lacks, even in members no column
  /// takes, and COPY, which never sends such members, would not.
  bool server_utf8 = true;
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
  /// Upsert: every row is an INSERT's, so on the primary none of them existed before.
  bool inserts_only = true;
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

/// The columns an upsert step writes: those its rows carry, in table order.
std::vector<std::string> upsert_columns(const ApplyStep& step);

/// `"schema"."table" ("a", "b")`, what COPY ... FROM STDIN writes for an upsert step.
std::string copy_target(const ApplyStep& step, const std::vector<std::string>& columns);

/// Appends the upsert step's rows over `columns` in COPY's text format (one line per row,
/// tab-separated, `\N` for NULL) to `out`, each value read by its column's input function
/// as the step's statement would read it. Returns false, with `out` in an unknown state,
/// when some value has no such form here (an array or object for a column that is not
/// json/jsonb, a number in exponent notation, an escape PostgreSQL would refuse): the
/// statement then applies the step instead.
bool copy_rows(const ApplyStep& step, const std::vector<std::string>& columns, std::string& out);

/// Appends the contents of `token`, the text of one JSON string quotes included, as one
/// field of COPY's text format. Returns false when it is not a well-formed JSON string or
/// holds U+0000, which no PostgreSQL text holds.
bool json_string_to_copy(std::string_view token, std::string& out);

}  // namespace pgfanout
