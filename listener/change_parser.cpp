#include "change_parser.hpp"

#include <charconv>
#include <optional>

namespace pgfanout {
namespace {

// A message is read in one pass of simdjson (JsonIndex): it is validated and split into
// the members the listener reads, each kept as its raw text. Building a DOM and scanning
// the text again cost most of the listener's CPU.

constexpr std::uint32_t kNone = JsonIndex::kNone;

// The members of a change the listener reads (node indices, kNone when missing), found in
// one pass over its members; the last of duplicates wins, as in PostgreSQL's jsonb.
struct Members {
  std::uint32_t id = kNone;
  std::uint32_t schema = kNone;
  std::uint32_t name = kNone;
  std::uint32_t table = kNone;
  std::uint32_t op = kNone;
  std::uint32_t new_row = kNone;
  std::uint32_t old_key = kNone;
  std::uint32_t json_nulls = kNone;
  std::uint32_t new_text = kNone;
  std::uint32_t old_text = kNone;
  std::uint32_t ts = kNone;

  Members(const JsonIndex& index, std::uint32_t object) {
    for (std::uint32_t i = index.first_child(object); i != kNone; i = index.next_sibling(i)) {
      if (std::uint32_t* slot = slot_of(index.name(i))) *slot = i;
    }
  }

 private:
  std::uint32_t* slot_of(std::string_view key) {
    using namespace std::string_view_literals;
    for (auto [member, slot] : {std::pair{"id"sv, &id}, {"schema"sv, &schema}, {"name"sv, &name},
                                {"table"sv, &table}, {"op"sv, &op}, {"new"sv, &new_row}, {"old"sv, &old_key},
                                {"json_nulls"sv, &json_nulls}, {"new_text"sv, &new_text},
                                {"old_text"sv, &old_text}, {"ts"sv, &ts}}) {
      if (key == member) return slot;
    }
    return nullptr;
  }
};

std::uint32_t field(std::uint32_t node, const char* key) {
  if (node == kNone) throw BadMessage("bad-shape", std::string("change has no \"") + key + "\"");
  return node;
}

std::string string_field(const JsonIndex& index, std::uint32_t node, const char* key) {
  std::uint32_t v = field(node, key);
  if (index.kind(v) != '"') throw BadMessage("bad-shape", std::string("\"") + key + "\" is not a string");
  return std::string(index.string(v));
}

std::int64_t integer_field(const JsonIndex& index, std::uint32_t node, const char* key) {
  std::string_view raw = index.text(field(node, key));
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(raw.data(), raw.data() + raw.size(), value);
  if (ec != std::errc() || end != raw.data() + raw.size()) {
    throw BadMessage("bad-shape", std::string("\"") + key + "\" is not an integer");
  }
  return value;
}

// The object in member `key` (node `n`), or an absent object when it is missing or null; a
// value that is neither a non-empty object nor null is an error when `required`.
RawObject object_field(const JsonIndex& index, std::uint32_t n, const char* key, bool required, Op op) {
  if (n != kNone && index.kind(n) == '{' && index.first_child(n) != kNone) {
    RawObject::Members members;
    for (std::uint32_t i = index.first_child(n); i != kNone; i = index.next_sibling(i)) {
      members.emplace_back(index.name(i), index.text(i));
    }
    return RawObject::from_parts(std::string(index.text(n)), std::move(members));
  }
  if (required) {
    throw BadMessage("bad-shape", std::string(to_string(op)) + " without " +
                                      (std::string_view(key) == "new" ? "a \"new\" row object"
                                                                      : "an \"old\" key object"));
  }
  return RawObject();
}

// The optional list of columns holding a JSON null: absent or null, or an array of strings.
std::vector<std::string> json_nulls_field(const JsonIndex& index, std::uint32_t n) {
  std::vector<std::string> out;
  if (n == kNone || index.text(n) == "null") return out;
  if (index.kind(n) != '[') throw BadMessage("bad-shape", "\"json_nulls\" is not an array");
  for (std::uint32_t i = index.first_child(n); i != kNone; i = index.next_sibling(i)) {
    if (index.kind(i) != '"') throw BadMessage("bad-shape", "\"json_nulls\" holds a non-string");
    out.emplace_back(index.string(i));
  }
  return out;
}

// The optional object of text forms in member `key` (node `n`): absent or null, or an
// object whose values are strings. Returns its raw text ("" when absent) and fills `values`
// with the members `row` has (name, the string's raw JSON text).
std::string texts_field(const JsonIndex& index, std::uint32_t n, const char* key, const RawObject& row,
                        std::vector<std::pair<std::string, std::string>>& values) {
  if (n == kNone || index.text(n) == "null") return {};
  if (index.kind(n) != '{') throw BadMessage("bad-shape", std::string("\"") + key + "\" is not an object");
  for (std::uint32_t i = index.first_child(n); i != kNone; i = index.next_sibling(i)) {
    if (index.kind(i) != '"') throw BadMessage("bad-shape", std::string("\"") + key + "\" holds a non-string");
    if (row.find(index.name(i))) values.emplace_back(index.name(i), index.text(i));
  }
  return std::string(index.text(n));
}

ParsedChange parse_change_at(const JsonIndex& index, std::uint32_t object) {
  if (index.kind(object) != '{') throw BadMessage("bad-shape", "a change is not a JSON object");
  Members m(index, object);
  ParsedChange c;
  c.id = integer_field(index, m.id, "id");
  c.schema = string_field(index, m.schema, "schema");
  c.name = string_field(index, m.name, "name");
  if (c.schema.empty() || c.name.empty()) throw BadMessage("bad-shape", "empty schema or name");
  // libpq passes values as C strings: a name cut at a NUL could resolve another table.
  if (c.schema.find('\0') != std::string::npos || c.name.find('\0') != std::string::npos) {
    throw BadMessage("bad-shape", "a schema or table name holds a NUL character");
  }
  if (m.table != kNone && (index.kind(m.table) != '"' || index.string(m.table) != routing_key(c.schema, c.name))) {
    throw BadMessage("bad-shape", "\"table\" does not match \"schema\".\"name\"");
  }
  auto op = parse_op(string_field(index, m.op, "op"));
  if (!op) throw BadMessage("bad-shape", "\"op\" is not INSERT, UPDATE, DELETE or TRUNCATE");
  c.op = *op;
  bool needs_new = c.op == Op::Insert || c.op == Op::Update;
  bool needs_old = c.op == Op::Update || c.op == Op::Delete;
  if (needs_new) c.new_row = object_field(index, m.new_row, "new", true, c.op);
  if (needs_old) c.old_key = object_field(index, m.old_key, "old", true, c.op);
  if (needs_new) c.json_nulls = json_nulls_field(index, m.json_nulls);
  std::vector<std::pair<std::string, std::string>> values;
  if (needs_new) c.new_text = texts_field(index, m.new_text, "new_text", c.new_row, values);
  if (!values.empty()) {
    c.text_row = c.new_row.with_values(values);
    for (auto& v : values) c.texts.push_back(std::move(v.first));
    values.clear();
  }
  if (needs_old) c.old_text = texts_field(index, m.old_text, "old_text", c.old_key, values);
  if (!values.empty()) c.text_key = c.old_key.with_values(values);
  if (m.ts != kNone && index.kind(m.ts) == '"') c.ts = index.string(m.ts);
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
  std::uint32_t root = JsonIndex::root();
  std::vector<ParsedChange> out;
  if (index->kind(root) == '[') {
    if (index->first_child(root) == kNone) throw BadMessage("bad-shape", "an empty array of changes");
    std::size_t count = 0;
    for (std::uint32_t i = index->first_child(root); i != kNone; i = index->next_sibling(i)) ++count;
    out.reserve(count);
    for (std::uint32_t i = index->first_child(root); i != kNone; i = index->next_sibling(i)) {
      out.push_back(parse_change_at(*index, i));
    }
    return out;
  }
  if (index->kind(root) != '{') throw BadMessage("bad-shape", "the body is neither a change nor an array");
  out.push_back(parse_change_at(*index, root));
  return out;
}

ParsedChange parse_change(const nlohmann::json& o) {
  if (!o.is_object()) throw BadMessage("bad-shape", "a change is not a JSON object");
  std::string text = o.dump();
  JsonIndex index(text, kChangeDepth);
  return parse_change_at(index, JsonIndex::root());
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
