#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "pgfanout/amqp_connection.hpp"
#include "pgfanout/change.hpp"
#include "raw_json.hpp"

namespace pgfanout {

/// A message the listener cannot use. `reason` is a short machine-readable word that goes
/// into the dead-letter header and the metrics label; what() says what exactly is wrong.
class BadMessage : public std::runtime_error {
 public:
  BadMessage(std::string reason, const std::string& detail)
      : std::runtime_error(detail), reason_(std::move(reason)) {}
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

/// One change as a listener reads it from a message body.
struct ParsedChange {
  std::int64_t id = 0;
  std::string schema;
  std::string name;
  Op op = Op::Insert;
  RawObject new_row;  // object for INSERT/UPDATE, absent otherwise; values as received
  RawObject old_key;  // object for UPDATE/DELETE, absent otherwise; values as received
  std::string ts;
  /// Columns of new_row whose null is a JSON null (a json/jsonb value), not SQL NULL.
  std::vector<std::string> json_nulls;
  /// The text forms as received (JSON object texts, empty when absent), README "Message
  /// format": a column's text form replaces its JSON form when the change is applied.
  std::string new_text;
  std::string old_text;
  /// new_row and old_key with the text forms in place of those columns' values, as JSON
  /// strings (absent when the change has none), and the columns replaced in new_row.
  RawObject text_row;
  RawObject text_key;
  std::vector<std::string> texts;

  /// The row and key to apply.
  const RawObject& row() const { return text_row.is_object() ? text_row : new_row; }
  const RawObject& key() const { return text_key.is_object() ? text_key : old_key; }
};

/// Parses a message body in either form of INTERFACE.md (one change object, or a packed
/// array of them). Throws BadMessage("not-json" | "bad-shape", ...) on anything else,
/// whatever the bytes: no other exception, no crash, memory and time linear in the body.
/// `capacity` is how many bytes may be read from body.data(): with SIMDJSON_PADDING (64)
/// more than the body's size, it is parsed where it is, without a copy.
std::vector<ParsedChange> parse_message(std::string_view body, std::size_t capacity = 0);

/// The header in which a packing publisher says how many changes a message holds.
inline constexpr const char* kChangeCountHeader = "x-pgfanout-count";

/// The body decides how many changes a message holds; the header is only checked against
/// it. Throws BadMessage("bad-shape", ...) when `x-pgfanout-count` is present but not an
/// integer, or not `changes`. A message without the header is fine.
void check_change_count(const Headers& headers, std::size_t changes);

/// Parses one change object from an already parsed value (its numbers as nlohmann keeps
/// them). Throws BadMessage("bad-shape", ...).
ParsedChange parse_change(const nlohmann::json& object);

}  // namespace pgfanout
