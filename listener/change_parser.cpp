#include "change_parser.hpp"

namespace pgfanout {
namespace {

const nlohmann::json& field(const nlohmann::json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end()) throw BadMessage("bad-shape", std::string("change has no \"") + key + "\"");
  return *it;
}

std::string string_field(const nlohmann::json& o, const char* key) {
  const auto& v = field(o, key);
  if (!v.is_string()) throw BadMessage("bad-shape", std::string("\"") + key + "\" is not a string");
  return v.get<std::string>();
}

}  // namespace

ParsedChange parse_change(const nlohmann::json& o) { return parse_change(o, o.is_object() ? o.dump() : "{}"); }

ParsedChange parse_change(const nlohmann::json& o, std::string_view raw) {
  if (!o.is_object()) throw BadMessage("bad-shape", "a change is not a JSON object");
  ParsedChange c;
  const auto& id = field(o, "id");
  if (!id.is_number_integer()) throw BadMessage("bad-shape", "\"id\" is not an integer");
  c.id = id.get<std::int64_t>();
  c.schema = string_field(o, "schema");
  c.name = string_field(o, "name");
  if (c.schema.empty() || c.name.empty()) throw BadMessage("bad-shape", "empty schema or name");
  if (auto t = o.find("table"); t != o.end()) {
    if (!t->is_string() || t->get<std::string>() != routing_key(c.schema, c.name)) {
      throw BadMessage("bad-shape", "\"table\" does not match \"schema\".\"name\"");
    }
  }
  auto op = parse_op(string_field(o, "op"));
  if (!op) throw BadMessage("bad-shape", "\"op\" is not INSERT, UPDATE, DELETE or TRUNCATE");
  c.op = *op;
  auto n = o.find("new");
  auto old = o.find("old");
  bool needs_new = c.op == Op::Insert || c.op == Op::Update;
  bool needs_old = c.op == Op::Update || c.op == Op::Delete;
  if (needs_new && (n == o.end() || !n->is_object() || n->empty())) {
    throw BadMessage("bad-shape", std::string(to_string(c.op)) + " without a \"new\" row object");
  }
  if (needs_old && (old == o.end() || !old->is_object() || old->empty())) {
    throw BadMessage("bad-shape", std::string(to_string(c.op)) + " without an \"old\" key object");
  }
  if (needs_new || needs_old) {
    for (auto& [key, value] : raw_members(raw)) {
      if (needs_new && key == "new") c.new_row = RawObject::from_text(value);
      if (needs_old && key == "old") c.old_key = RawObject::from_text(value);
    }
  }
  if (auto ts = o.find("ts"); ts != o.end() && ts->is_string()) c.ts = ts->get<std::string>();
  return c;
}

std::vector<ParsedChange> parse_message(std::string_view body) {
  nlohmann::json doc = nlohmann::json::parse(body, nullptr, false);
  if (doc.is_discarded()) throw BadMessage("not-json", "the body is not valid JSON");
  std::vector<ParsedChange> out;
  if (doc.is_array()) {
    if (doc.empty()) throw BadMessage("bad-shape", "an empty array of changes");
    out.reserve(doc.size());
    std::vector<std::string_view> raw = raw_elements(body);
    for (std::size_t i = 0; i < doc.size(); ++i) out.push_back(parse_change(doc[i], raw[i]));
    return out;
  }
  if (!doc.is_object()) throw BadMessage("bad-shape", "the body is neither a change nor an array");
  out.push_back(parse_change(doc, body));
  return out;
}

}  // namespace pgfanout
