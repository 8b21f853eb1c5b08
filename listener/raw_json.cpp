#include "raw_json.hpp"

#include <stdexcept>

namespace pgfanout {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

void skip_space(std::string_view s, std::size_t& i) {
  while (i < s.size() && is_space(s[i])) ++i;
}

// Returns the index just past the string literal starting at s[i] == '"'.
std::size_t string_end(std::string_view s, std::size_t i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  throw std::invalid_argument("unterminated JSON string");
}

// Returns the index just past the JSON value starting at s[i].
std::size_t value_end(std::string_view s, std::size_t i) {
  if (i >= s.size()) throw std::invalid_argument("missing JSON value");
  if (s[i] == '"') return string_end(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      char c = s[i];
      if (c == '"') {
        i = string_end(s, i);
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) return i + 1;
      }
      ++i;
    }
    throw std::invalid_argument("unterminated JSON container");
  }
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && !is_space(s[i])) ++i;
  return i;
}

std::string decode_name(std::string_view literal) {
  if (literal.find('\\') == std::string_view::npos) {
    return std::string(literal.substr(1, literal.size() - 2));
  }
  return nlohmann::json::parse(literal).get<std::string>();
}

}  // namespace

std::vector<std::pair<std::string, std::string>> raw_members(std::string_view s) {
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t i = 0;
  skip_space(s, i);
  if (i >= s.size() || s[i] != '{') throw std::invalid_argument("not a JSON object");
  ++i;
  for (;;) {
    skip_space(s, i);
    if (i < s.size() && s[i] == '}') return out;
    if (i >= s.size() || s[i] != '"') throw std::invalid_argument("malformed JSON object");
    std::size_t name_end = string_end(s, i);
    std::string name = decode_name(s.substr(i, name_end - i));
    i = name_end;
    skip_space(s, i);
    if (i >= s.size() || s[i] != ':') throw std::invalid_argument("malformed JSON object");
    ++i;
    skip_space(s, i);
    std::size_t end = value_end(s, i);
    out.emplace_back(std::move(name), std::string(s.substr(i, end - i)));
    i = end;
    skip_space(s, i);
    if (i < s.size() && s[i] == ',') {
      ++i;
      continue;
    }
    if (i < s.size() && s[i] == '}') return out;
    throw std::invalid_argument("malformed JSON object");
  }
}

std::vector<std::string_view> raw_elements(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  skip_space(s, i);
  if (i >= s.size() || s[i] != '[') throw std::invalid_argument("not a JSON array");
  ++i;
  for (;;) {
    skip_space(s, i);
    if (i < s.size() && s[i] == ']') return out;
    std::size_t end = value_end(s, i);
    out.push_back(s.substr(i, end - i));
    i = end;
    skip_space(s, i);
    if (i < s.size() && s[i] == ',') {
      ++i;
      continue;
    }
    if (i < s.size() && s[i] == ']') return out;
    throw std::invalid_argument("malformed JSON array");
  }
}

RawObject::RawObject(const nlohmann::json& value) {
  if (value.is_null()) return;
  *this = from_text(value.dump());
}

RawObject RawObject::from_text(std::string_view text) {
  RawObject o;
  o.members_ = raw_members(text);
  o.text_ = std::string(text);
  o.present_ = true;
  return o;
}

const std::string* RawObject::find(std::string_view name) const {
  for (const auto& [k, v] : members_) {
    if (k == name) return &v;
  }
  return nullptr;
}

}  // namespace pgfanout
