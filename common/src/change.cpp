#include "pgfanout/change.hpp"

#include <array>

namespace pgfanout {

std::string_view to_string(Op op) {
  switch (op) {
    case Op::Insert: return "INSERT";
    case Op::Update: return "UPDATE";
    case Op::Delete: return "DELETE";
    case Op::Truncate: return "TRUNCATE";
  }
  return "?";
}

std::optional<Op> parse_op(std::string_view text) {
  if (text == "INSERT") return Op::Insert;
  if (text == "UPDATE") return Op::Update;
  if (text == "DELETE") return Op::Delete;
  if (text == "TRUNCATE") return Op::Truncate;
  return std::nullopt;
}

std::string routing_key(std::string_view schema, std::string_view table) {
  std::string key;
  key.reserve(schema.size() + table.size() + 1);
  key += schema;
  key += '.';
  key += table;
  return key;
}

void append_json_string(std::string& out, std::string_view text) {
  static constexpr std::array<char, 16> hex{'0', '1', '2', '3', '4', '5', '6', '7',
                                            '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};
  out += '"';
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out += hex[u >> 4];
          out += hex[u & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

namespace {

// What append_json_string appends for `text`.
std::size_t json_string_size(std::string_view text) {
  std::size_t n = 2;
  for (char c : text) {
    switch (c) {
      case '"':
      case '\\':
      case '\n':
      case '\r':
      case '\t':
      case '\b':
      case '\f': n += 2; break;
      default: n += static_cast<unsigned char>(c) < 0x20 ? 6 : 1;
    }
  }
  return n;
}

}  // namespace

std::size_t change_json_size(const OutboxChange& c) {
  constexpr std::string_view null = "null";
  std::size_t n = std::string_view("{\"id\":,\"table\":,\"schema\":,\"name\":,\"op\":\"\",\"new\":,\"old\":,\"ts\":}").size();
  n += std::to_string(c.id).size();
  n += json_string_size(routing_key(c.schema, c.table)) + json_string_size(c.schema) +
       json_string_size(c.table);
  n += to_string(c.op).size();
  n += c.new_row.empty() ? null.size() : c.new_row.size();
  n += c.old_key.empty() ? null.size() : c.old_key.size();
  if (!c.json_nulls.empty()) n += std::string_view(",\"json_nulls\":").size() + c.json_nulls.size();
  if (!c.new_text.empty()) n += std::string_view(",\"new_text\":").size() + c.new_text.size();
  if (!c.old_text.empty()) n += std::string_view(",\"old_text\":").size() + c.old_text.size();
  n += json_string_size(c.ts);
  return n;
}

void append_change_json(std::string& out, const OutboxChange& c) {
  out += "{\"id\":";
  out += std::to_string(c.id);
  out += ",\"table\":";
  append_json_string(out, routing_key(c.schema, c.table));
  out += ",\"schema\":";
  append_json_string(out, c.schema);
  out += ",\"name\":";
  append_json_string(out, c.table);
  out += ",\"op\":\"";
  out += to_string(c.op);
  out += "\",\"new\":";
  out += c.new_row.empty() ? std::string_view("null") : std::string_view(c.new_row);
  out += ",\"old\":";
  out += c.old_key.empty() ? std::string_view("null") : std::string_view(c.old_key);
  if (!c.json_nulls.empty()) {
    out += ",\"json_nulls\":";
    out += c.json_nulls;
  }
  if (!c.new_text.empty()) {
    out += ",\"new_text\":";
    out += c.new_text;
  }
  if (!c.old_text.empty()) {
    out += ",\"old_text\":";
    out += c.old_text;
  }
  out += ",\"ts\":";
  append_json_string(out, c.ts);
  out += '}';
}

std::string message_body(std::span<const OutboxChange> changes) {
  std::string out;
  size_t size = 2;
  for (const auto& c : changes) size += c.new_row.size() + c.old_key.size() + c.new_text.size() + c.old_text.size() + 160;
  out.reserve(size);
  if (changes.size() == 1) {
    append_change_json(out, changes.front());
    return out;
  }
  out += '[';
  for (size_t i = 0; i < changes.size(); ++i) {
    if (i) out += ',';
    append_change_json(out, changes[i]);
  }
  out += ']';
  return out;
}

}  // namespace pgfanout
