#include "change_parser.hpp"

#include <charconv>
#include <optional>

namespace pgfanout {
namespace {

// A message is read in one pass of simdjson (JsonIndex): it is validated and split into
// the members the listener reads, each kept as its raw text. Building a DOM and scanning
// the text again cost most of the listener's CPU.

using Node = JsonIndex::Node;

// The member `key` of the object at `object`, or nullptr; the last one wins, as in
// PostgreSQL's jsonb.
const Node* member(const JsonIndex& index, std::uint32_t object, std::string_view key) {
  const Node* found = nullptr;
  for (std::uint32_t i = index.node(object).first_child; i != JsonIndex::kNone; i = index.node(i).next_sibling) {
    if (index.node(i).name == key) found = &index.node(i);
  }
  return found;
}

const Node& field(const JsonIndex& index, std::uint32_t object, const char* key) {
  const Node* v = member(index, object, key);
  if (!v) throw BadMessage("bad-shape", std::string("change has no \"") + key + "\"");
  return *v;
}

std::string string_field(const JsonIndex& index, std::uint32_t object, const char* key) {
  const Node& v = field(index, object, key);
  if (v.kind() != '"') throw BadMessage("bad-shape", std::string("\"") + key + "\" is not a string");
  return std::string(v.string());
}

std::int64_t integer_field(const JsonIndex& index, std::uint32_t object, const char* key) {
  std::string_view raw = field(index, object, key).text;
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(raw.data(), raw.data() + raw.size(), value);
  if (ec != std::errc() || end != raw.data() + raw.size()) {
    throw BadMessage("bad-shape", std::string("\"") + key + "\" is not an integer");
  }
  return value;
}

// The members of the object node `n` (names moved out of the index).
RawObject raw_object(JsonIndex& index, const Node& n) {
  RawObject::Members members;
  for (std::uint32_t i = n.first_child; i != JsonIndex::kNone; i = index.node(i).next_sibling) {
    Node& m = index.node(i);
    members.emplace_back(std::move(m.name), std::string(m.text));
  }
  return RawObject::from_parts(std::string(n.text), std::move(members));
}

// The object in member `key`, or an absent object when it is missing or null; a value
// that is neither a non-empty object nor null is an error when `required`.
RawObject object_field(JsonIndex& index, std::uint32_t object, const char* key, bool required, Op op) {
  const Node* n = member(index, object, key);
  if (n && n->kind() == '{' && n->first_child != JsonIndex::kNone) return raw_object(index, *n);
  if (required) {
    throw BadMessage("bad-shape", std::string(to_string(op)) + " without " +
                                      (std::string_view(key) == "new" ? "a \"new\" row object"
                                                                      : "an \"old\" key object"));
  }
  return RawObject();
}

// The optional list of columns holding a JSON null: absent or null, or an array of strings.
std::vector<std::string> json_nulls_field(const JsonIndex& index, std::uint32_t object) {
  std::vector<std::string> out;
  const Node* n = member(index, object, "json_nulls");
  if (!n || n->text == "null") return out;
  if (n->kind() != '[') throw BadMessage("bad-shape", "\"json_nulls\" is not an array");
  for (std::uint32_t i = n->first_child; i != JsonIndex::kNone; i = index.node(i).next_sibling) {
    const Node& e = index.node(i);
    if (e.kind() != '"') throw BadMessage("bad-shape", "\"json_nulls\" holds a non-string");
    out.emplace_back(e.string());
  }
  return out;
}

// The optional object of text forms in member `key`: absent or null, or an object whose
// values are strings. Returns its raw text ("" when absent) and fills `values` with the
// members `row` has (name, the string's raw JSON text).
std::string texts_field(const JsonIndex& index, std::uint32_t object, const char* key, const RawObject& row,
                        std::vector<std::pair<std::string, std::string>>& values) {
  const Node* n = member(index, object, key);
  if (!n || n->text == "null") return {};
  if (n->kind() != '{') throw BadMessage("bad-shape", std::string("\"") + key + "\" is not an object");
  for (std::uint32_t i = n->first_child; i != JsonIndex::kNone; i = index.node(i).next_sibling) {
    const Node& m = index.node(i);
    if (m.kind() != '"') throw BadMessage("bad-shape", std::string("\"") + key + "\" holds a non-string");
    if (row.find(m.name)) values.emplace_back(m.name, std::string(m.text));
  }
  return std::string(n->text);
}

ParsedChange parse_change_at(JsonIndex& index, std::uint32_t object) {
  if (index.node(object).kind() != '{') throw BadMessage("bad-shape", "a change is not a JSON object");
  ParsedChange c;
  c.id = integer_field(index, object, "id");
  c.schema = string_field(index, object, "schema");
  c.name = string_field(index, object, "name");
  if (c.schema.empty() || c.name.empty()) throw BadMessage("bad-shape", "empty schema or name");
  // libpq passes values as C strings: a name cut at a NUL could resolve another table.
  if (c.schema.find('\0') != std::string::npos || c.name.find('\0') != std::string::npos) {
    throw BadMessage("bad-shape", "a schema or table name holds a NUL character");
  }
  if (const Node* t = member(index, object, "table")) {
    if (t->kind() != '"' || t->string() != routing_key(c.schema, c.name)) {
      throw BadMessage("bad-shape", "\"table\" does not match \"schema\".\"name\"");
    }
  }
  auto op = parse_op(string_field(index, object, "op"));
  if (!op) throw BadMessage("bad-shape", "\"op\" is not INSERT, UPDATE, DELETE or TRUNCATE");
  c.op = *op;
  bool needs_new = c.op == Op::Insert || c.op == Op::Update;
  bool needs_old = c.op == Op::Update || c.op == Op::Delete;
  if (needs_new) c.new_row = object_field(index, object, "new", true, c.op);
  if (needs_old) c.old_key = object_field(index, object, "old", true, c.op);
  if (needs_new) c.json_nulls = json_nulls_field(index, object);
  std::vector<std::pair<std::string, std::string>> values;
  if (needs_new) c.new_text = texts_field(index, object, "new_text", c.new_row, values);
  if (!values.empty()) {
    c.text_row = c.new_row.with_values(values);
    for (auto& v : values) c.texts.push_back(std::move(v.first));
    values.clear();
  }
  if (needs_old) c.old_text = texts_field(index, object, "old_text", c.old_key, values);
  if (!values.empty()) c.text_key = c.old_key.with_values(values);
  if (const Node* ts = member(index, object, "ts"); ts && ts->kind() == '"') c.ts = ts->string();
  return c;
}

}  // namespace

// The values nested this deep are split: a change's members (1 in a pack), a row's (2), a
// row's values (3, kept whole).
constexpr std::size_t kChangeDepth = 2;

std::vector<ParsedChange> parse_message(std::string_view body, std::size_t capacity) {
  if (body.empty()) throw BadMessage("not-json", "the body is empty");
  std::size_t start = body.find_first_not_of(" \t\r\n");
  bool pack = start != std::string_view::npos && body[start] == '[';
  std::optional<JsonIndex> index;
  try {
    index.emplace(body, kChangeDepth + (pack ? 1 : 0), kMaxJsonDepth, capacity);
  } catch (const std::invalid_argument& e) {
    throw BadMessage("not-json", std::string("the body is not valid JSON: ") + e.what());
  }
  const Node& root = index->root();
  std::vector<ParsedChange> out;
  if (root.kind() == '[') {
    if (root.first_child == JsonIndex::kNone) throw BadMessage("bad-shape", "an empty array of changes");
    for (std::uint32_t i = root.first_child; i != JsonIndex::kNone; i = index->node(i).next_sibling) {
      out.push_back(parse_change_at(*index, i));
    }
    return out;
  }
  if (root.kind() != '{') throw BadMessage("bad-shape", "the body is neither a change nor an array");
  out.push_back(parse_change_at(*index, index->root_index()));
  return out;
}

ParsedChange parse_change(const nlohmann::json& o) {
  if (!o.is_object()) throw BadMessage("bad-shape", "a change is not a JSON object");
  std::string text = o.dump();
  JsonIndex index(text, kChangeDepth);
  return parse_change_at(index, index.root_index());
}

void check_change_count(const Headers& headers, std::size_t changes) {
  for (const auto& [key, value] : headers) {
    if (key != kChangeCountHeader) continue;
    const auto* n = std::get_if<std::int64_t>(&value);
    if (!n) throw BadMessage("bad-shape", std::string(kChangeCountHeader) + " is not an integer");
    if (*n < 1 || static_cast<std::uint64_t>(*n) != changes) {
      throw BadMessage("bad-shape", std::string(kChangeCountHeader) + " says " + std::to_string(*n) +
                                        " changes, the body holds " + std::to_string(changes));
    }
  }
}

}  // namespace pgfanout
