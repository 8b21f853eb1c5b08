#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
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
  using Members = std::vector<std::pair<std::string, std::string>>;

  RawObject() = default;  // absent: JSON null
  /// From an already parsed value (null gives an absent object). Numbers are as precise
  /// as nlohmann kept them; for tests and objects built in code.
  RawObject(const nlohmann::json& value);  // NOLINT: implicit on purpose
  RawObject(std::nullptr_t) {}             // NOLINT

  /// From the text of a JSON object. Throws std::invalid_argument when it is not one.
  static RawObject from_text(std::string_view text);
  /// From an object's text and its members as JsonIndex split them.
  static RawObject from_parts(std::string text, Members members);

  bool is_object() const { return present_; }
  bool empty() const { return members_.empty(); }
  /// The object's JSON text, or "null" when absent.
  const std::string& dump() const { return text_; }
  const Members& members() const { return members_; }
  /// The raw JSON text of a member's value, or nullptr.
  const std::string* find(std::string_view name) const;
  /// A copy whose members named in `values` (name, raw JSON text) hold those values
  /// instead (duplicates of a name too); names it lacks are not added.
  RawObject with_values(const std::vector<std::pair<std::string, std::string>>& values) const;

 private:
  bool present_ = false;
  std::string text_ = "null";
  Members members_;
};

/// The deepest nesting of arrays and objects a message may have. PostgreSQL parses jsonb
/// recursively, so a value nested much deeper fails there; the listener refuses it first.
inline constexpr std::size_t kMaxJsonDepth = 1000;

/// One pass of simdjson over a JSON text: it checks that the text is exactly one JSON value
/// (RFC 8259) in valid UTF-8, nested at most `max_depth` deep, and keeps the values nested
/// at most `split_depth` deep (the root is at 0) as their raw text, with their member names
/// decoded. Numbers are never converted, so a number of any length or precision is valid
/// and kept as written (PostgreSQL's numeric holds them; a double would round 1.10 and
/// refuse 1e400). The walk keeps its own stack: no input can exhaust the thread's stack,
/// and time and memory are linear in the text. The nodes point into `text`, which must
/// outlive the index.
class JsonIndex {
 public:
  static constexpr std::uint32_t kNone = UINT32_MAX;

  struct Node {
    std::string_view name;     // decoded member name; empty for the root and array elements
    std::string_view text;     // the value's raw text, without surrounding whitespace
    std::string_view decoded;  // a string value's decoded text when it holds escapes, else empty
    std::uint32_t first_child = kNone;  // members or elements, within split_depth
    std::uint32_t next_sibling = kNone;

    char kind() const { return text.front(); }  // '{', '[', '"', 't', 'f', 'n' or a number's first
    /// A string value's decoded text (the node must be a string).
    std::string_view string() const { return decoded.data() ? decoded : text.substr(1, text.size() - 2); }
  };

  /// Throws std::invalid_argument saying what is wrong (and where, when simdjson knows).
  /// `capacity` is how many bytes from text.data() may be read: simdjson reads up to
  /// SIMDJSON_PADDING bytes past the end, so with less room the text is copied first.
  JsonIndex(std::string_view text, std::size_t split_depth, std::size_t max_depth = kMaxJsonDepth,
            std::size_t capacity = 0);
  ~JsonIndex();
  JsonIndex(const JsonIndex&) = delete;
  JsonIndex& operator=(const JsonIndex&) = delete;

  const Node& root() const { return nodes_.front(); }
  const Node& node(std::uint32_t i) const { return nodes_[i]; }
  std::uint32_t root_index() const { return 0; }

 private:
  friend class JsonWalker;
  std::vector<Node> nodes_;
  std::deque<std::string> decoded_;  // names and strings with escapes, decoded (stable addresses)
};

/// Checks that `text` is exactly one JSON value in valid UTF-8 nested at most `max_depth`
/// deep (see JsonIndex). Throws std::invalid_argument saying what is wrong.
void validate_json(std::string_view text, std::size_t max_depth = kMaxJsonDepth);

}  // namespace pgfanout
