#include "change_parser.hpp"

#include <charconv>

namespace pgfanout {
namespace {

// A message is validated once (validate_json, no document built) and then read straight
// from its text: building a DOM and scanning the text again cost most of the listener's
// CPU.

using Members = std::vector<std::pair<std::string, std::string>>;

const std::string* member(const Members& m, std::string_view key) {
  const std::string* found = nullptr;
  for (const auto& [k, v] : m) {
    if (k == key) found = &v;  // the last one wins, as in PostgreSQL's jsonb
  }
  return found;
}

const std::string& field(const Members& m, const char* key) {
  const std::string* v = member(m, key);
  if (!v) throw BadMessage("bad-shape", std::string("change has no \"") + key + "\"");
  return *v;
}

std::string string_field(const Members& m, const char* key) {
  const std::string& raw = field(m, key);
  if (raw.empty() || raw.front() != '"') {
    throw BadMessage("bad-shape", std::string("\"") + key + "\" is not a string");
  }
  if (raw.find('\\') == std::string::npos) return raw.substr(1, raw.size() - 2);
  return nlohmann::json::parse(raw).get<std::string>();
}

std::int64_t integer_field(const Members& m, const char* key) {
  const std::string& raw = field(m, key);
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(raw.data(), raw.data() + raw.size(), value);
  if (raw.empty() || ec != std::errc() || end != raw.data() + raw.size()) {
    throw BadMessage("bad-shape", std::string("\"") + key + "\" is not an integer");
  }
  return value;
}

// The object in member `key`, or an absent object when it is missing or null; a value
// that is neither a non-empty object nor null is an error when `required`.
RawObject object_field(const Members& m, const char* key, bool required, Op op) {
  const std::string* raw = member(m, key);
  bool is_object = raw && !raw->empty() && raw->front() == '{';
  if (is_object) {
    RawObject o = RawObject::from_text(*raw);
    if (!o.empty()) return o;
  }
  if (required) {
    throw BadMessage("bad-shape", std::string(to_string(op)) + " without " +
                                      (std::string_view(key) == "new" ? "a \"new\" row object"
                                                                      : "an \"old\" key object"));
  }
  return RawObject();
}

// The optional list of columns holding a JSON null: absent or null, or an array of strings.
std::vector<std::string> json_nulls_field(const Members& m) {
  std::vector<std::string> out;
  const std::string* raw = member(m, "json_nulls");
  if (!raw || *raw == "null") return out;
  if (raw->empty() || raw->front() != '[') throw BadMessage("bad-shape", "\"json_nulls\" is not an array");
  for (std::string_view e : raw_elements(*raw)) {
    if (e.empty() || e.front() != '"') throw BadMessage("bad-shape", "\"json_nulls\" holds a non-string");
    out.push_back(nlohmann::json::parse(e).get<std::string>());
  }
  return out;
}

// The optional object of text forms in member `key`: absent or null, or an object whose
// values are strings. Returns its raw text ("" when absent) and fills `values` with the
// members `row` has (name, the string's raw JSON text).
std::string texts_field(const Members& m, const char* key, const RawObject& row,
                        std::vector<std::pair<std::string, std::string>>& values) {
  const std::string* raw = member(m, key);
  if (!raw || *raw == "null") return {};
  if (raw->empty() || raw->front() != '{') throw BadMessage("bad-shape", std::string("\"") + key + "\" is not an object");
  for (auto& [name, value] : raw_members(*raw)) {
    if (value.empty() || value.front() != '"') {
      throw BadMessage("bad-shape", std::string("\"") + key + "\" holds a non-string");
    }
    if (row.find(name)) values.emplace_back(std::move(name), std::move(value));
  }
  return *raw;
}

ParsedChange parse_raw_change(std::string_view raw) {
  if (raw.empty() || raw.front() != '{') throw BadMessage("bad-shape", "a change is not a JSON object");
  Members m = raw_members(raw);
  ParsedChange c;
  c.id = integer_field(m, "id");
  c.schema = string_field(m, "schema");
  c.name = string_field(m, "name");
  if (c.schema.empty() || c.name.empty()) throw BadMessage("bad-shape", "empty schema or name");
  // libpq passes values as C strings: a name cut at a NUL could resolve another table.
  if (c.schema.find('\0') != std::string::npos || c.name.find('\0') != std::string::npos) {
    throw BadMessage("bad-shape", "a schema or table name holds a NUL character");
  }
  if (member(m, "table")) {
    const std::string& t = *member(m, "table");
    if (t.empty() || t.front() != '"' || string_field(m, "table") != routing_key(c.schema, c.name)) {
      throw BadMessage("bad-shape", "\"table\" does not match \"schema\".\"name\"");
    }
  }
  auto op = parse_op(string_field(m, "op"));
  if (!op) throw BadMessage("bad-shape", "\"op\" is not INSERT, UPDATE, DELETE or TRUNCATE");
  c.op = *op;
  bool needs_new = c.op == Op::Insert || c.op == Op::Update;
  bool needs_old = c.op == Op::Update || c.op == Op::Delete;
  if (needs_new) c.new_row = object_field(m, "new", true, c.op);
  if (needs_old) c.old_key = object_field(m, "old", true, c.op);
  if (needs_new) c.json_nulls = json_nulls_field(m);
  std::vector<std::pair<std::string, std::string>> values;
  if (needs_new) c.new_text = texts_field(m, "new_text", c.new_row, values);
  if (!values.empty()) {
    c.text_row = c.new_row.with_values(values);
    for (auto& v : values) c.texts.push_back(std::move(v.first));
    values.clear();
  }
  if (needs_old) c.old_text = texts_field(m, "old_text", c.old_key, values);
  if (!values.empty()) c.text_key = c.old_key.with_values(values);
  if (const std::string* ts = member(m, "ts"); ts && !ts->empty() && ts->front() == '"') {
    c.ts = string_field(m, "ts");
  }
  return c;
}

}  // namespace

ParsedChange parse_change(const nlohmann::json& o) {
  if (!o.is_object()) throw BadMessage("bad-shape", "a change is not a JSON object");
  return parse_raw_change(o.dump());
}

ParsedChange parse_change(const nlohmann::json& o, std::string_view raw) {
  if (!o.is_object()) throw BadMessage("bad-shape", "a change is not a JSON object");
  return parse_raw_change(raw);
}

std::vector<ParsedChange> parse_message(std::string_view body) {
  if (body.empty()) throw BadMessage("not-json", "the body is empty");
  try {
    validate_json(body);
  } catch (const std::invalid_argument& e) {
    throw BadMessage("not-json", std::string("the body is not valid JSON: ") + e.what());
  }
  std::size_t start = body.find_first_not_of(" \t\r\n");
  char first = start == std::string_view::npos ? '\0' : body[start];
  std::vector<ParsedChange> out;
  if (first == '[') {
    std::vector<std::string_view> elements = raw_elements(body);
    if (elements.empty()) throw BadMessage("bad-shape", "an empty array of changes");
    out.reserve(elements.size());
    for (std::string_view e : elements) out.push_back(parse_raw_change(e));
    return out;
  }
  if (first != '{') throw BadMessage("bad-shape", "the body is neither a change nor an array");
  out.push_back(parse_raw_change(body.substr(start)));
  return out;
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
