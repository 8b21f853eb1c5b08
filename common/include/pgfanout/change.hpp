#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace pgfanout {

enum class Op { Insert, Update, Delete, Truncate };

std::string_view to_string(Op op);
/// Parses "INSERT", "UPDATE", "DELETE" or "TRUNCATE"; nullopt for anything else.
std::optional<Op> parse_op(std::string_view text);

/// One row of the outbox as the publisher reads it. `new_row` and `old_key` hold the JSON
/// text PostgreSQL produced (jsonb::text), empty when SQL NULL; `ts` is ISO 8601 in UTC.
struct OutboxChange {
  std::int64_t id = 0;
  std::string schema;
  std::string table;
  Op op = Op::Insert;
  std::string new_row;
  std::string old_key;
  std::string ts;
  /// JSON array text of the columns of new_row that hold a JSON null (not SQL NULL);
  /// empty when there are none.
  std::string json_nulls;
  /// JSON object texts of the text forms of columns of new_row and old_key (README,
  /// "Message format"); empty when there are none.
  std::string new_text;
  std::string old_text;
};

/// The routing key of a table: `schema.table`, names as PostgreSQL stores them.
std::string routing_key(std::string_view schema, std::string_view table);

/// Appends the JSON object INTERFACE.md specifies for one change. Row JSON is spliced in as
/// PostgreSQL wrote it (already valid JSON), so values keep their exact `to_jsonb` form.
void append_change_json(std::string& out, const OutboxChange& change);

/// The exact length of what append_change_json appends for `change` (to plan messages
/// under a byte limit without building them).
std::size_t change_json_size(const OutboxChange& change);

/// The body of a message carrying `changes`: one object for a single change, a JSON array
/// of objects in order for a pack (all of one table).
std::string message_body(std::span<const OutboxChange> changes);

/// Appends `text` as a JSON string literal (quoted, escaped).
void append_json_string(std::string& out, std::string_view text);

}  // namespace pgfanout
