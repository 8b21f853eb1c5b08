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

  /// A value within split_depth, by offsets into the text (24 bytes: a hostile pack may
  /// hold millions of them). The root is node 0.
  struct Node {
    std::uint32_t name_at = 0;    // the member name's offset, or its index in decoded_
    std::uint32_t name_size = 0;  // kNone when the name had escapes and was decoded
    std::uint32_t text_at = 0;
    std::uint32_t text_size = 0;
    std::uint32_t first_child = kNone;  // members or elements, within split_depth
    std::uint32_t next_sibling = kNone;
  };

  /// Throws std::invalid_argument saying what is wrong (and where, when simdjson knows).
  /// `capacity` is how many bytes from text.data() may be read: simdjson reads up to
  /// SIMDJSON_PADDING bytes past the end, so with less room the text is copied first.
  JsonIndex(std::string_view text, std::size_t split_depth, std::size_t max_depth = kMaxJsonDepth,
            std::size_t capacity = 0);
  ~JsonIndex();
  JsonIndex(const JsonIndex&) = delete;
  JsonIndex& operator=(const JsonIndex&) = delete;

  static constexpr std::uint32_t root() { return 0; }
  std::uint32_t first_child(std::uint32_t i) const { return nodes_[i].first_child; }
  std::uint32_t next_sibling(std::uint32_t i) const { return nodes_[i].next_sibling; }
  /// The value's raw text, without surrounding whitespace.
  std::string_view text(std::uint32_t i) const { return text_.substr(nodes_[i].text_at, nodes_[i].text_size); }
  /// '{', '[', '"', 't', 'f', 'n' or a number's first character.
  char kind(std::uint32_t i) const { return text_[nodes_[i].text_at]; }
  /// The decoded member name; empty for the root and array elements.
  std::string_view name(std::uint32_t i) const {
    const Node& n = nodes_[i];
    return n.name_size == kNone ? std::string_view(decoded_[n.name_at]) : text_.substr(n.name_at, n.name_size);
  }
  /// A string value's decoded text (the node must be a string).
  std::string_view string(std::uint32_t i) const;

 private:
  friend class JsonWalker;
  std::string_view text_;
  std::vector<Node> nodes_;
  std::deque<std::string> decoded_;  // names and strings that had escapes, decoded
  std::vector<std::pair<std::uint32_t, std::uint32_t>> decoded_strings_;  // node, index in decoded_
};

/// Checks that `text` is exactly one JSON value in valid UTF-8 nested at most `max_depth`
/// deep (see JsonIndex). Throws std::invalid_argument saying what is wrong.
void validate_json(std::string_view text, std::size_t max_depth = kMaxJsonDepth);

}  // namespace pgfanout
