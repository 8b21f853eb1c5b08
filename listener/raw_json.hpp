#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace pgfanout {

/// A JSON object kept as the text it arrived in, with its members split into decoded
/// names and raw value texts. Row values travel to jsonb_populate_recordset exactly as
/// PostgreSQL wrote them: parsing them into C++ numbers would round numerics beyond a
/// double's precision (and turn 0.10 into 0.1), and merge distinct big keys.
class RawObject {
 public:
  RawObject() = default;  // absent: JSON null
  /// From an already parsed value (null gives an absent object). Numbers are as precise
  /// as nlohmann kept them; for tests and objects built in code.
  RawObject(const nlohmann::json& value);  // NOLINT: implicit on purpose
  RawObject(std::nullptr_t) {}             // NOLINT

  /// From the text of a JSON object that has already been validated as JSON.
  static RawObject from_text(std::string_view text);

  bool is_object() const { return present_; }
  bool empty() const { return members_.empty(); }
  /// The object's JSON text, or "null" when absent.
  const std::string& dump() const { return text_; }
  const std::vector<std::pair<std::string, std::string>>& members() const { return members_; }
  /// The raw JSON text of a member's value, or nullptr.
  const std::string* find(std::string_view name) const;
  /// A copy whose members named in `values` (name, raw JSON text) hold those values
  /// instead (duplicates of a name too); names it lacks are not added.
  RawObject with_values(const std::vector<std::pair<std::string, std::string>>& values) const;

 private:
  bool present_ = false;
  std::string text_ = "null";
  std::vector<std::pair<std::string, std::string>> members_;
};

/// The deepest nesting of arrays and objects a message may have. PostgreSQL parses jsonb
/// recursively, so a value nested much deeper fails there; the listener refuses it first.
inline constexpr std::size_t kMaxJsonDepth = 1000;

/// Checks that `text` is exactly one JSON value (RFC 8259) in valid UTF-8, nested at most
/// `max_depth` deep. No number is converted, so a number of any length or precision is
/// valid (PostgreSQL's numeric holds them; a double-based parser would refuse 1e400).
/// Iterative: no input can exhaust the stack. Throws std::invalid_argument saying what is
/// wrong and at which byte.
void validate_json(std::string_view text, std::size_t max_depth = kMaxJsonDepth);

/// The raw texts of the members of a JSON object text (names decoded). The text must be
/// valid JSON; throws std::invalid_argument when it is not an object.
std::vector<std::pair<std::string, std::string>> raw_members(std::string_view object_text);

/// The raw texts of the elements of a JSON array text (valid JSON).
std::vector<std::string_view> raw_elements(std::string_view array_text);

}  // namespace pgfanout
