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

[[noreturn]] void invalid(std::string_view what, std::size_t at) {
  throw std::invalid_argument(std::string(what) + " at byte " + std::to_string(at));
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// The length of the well-formed UTF-8 sequence at s[i] (Unicode 15, table 3-7), or 0.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;  // no UTF-16 surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() - i < n || byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return n;
}

// The UTF-16 unit of the \u escape at s[i] == '\\', or -1 when it is not one.
long unicode_escape(std::string_view s, std::size_t i) {
  if (s.size() - i < 6 || s[i + 1] != 'u') return -1;
  for (std::size_t k = 2; k < 6; ++k) {
    if (!is_hex(s[i + k])) return -1;
  }
  return std::stol(std::string(s.substr(i + 2, 4)), nullptr, 16);
}

// Checks the string literal at s[i] == '"'; returns the index just past it. Surrogate
// escapes must pair up: a lone one is refused by PostgreSQL and by the name decoder.
std::size_t checked_string_end(std::string_view s, std::size_t i) {
  std::size_t start = i;
  for (++i; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '"') return i + 1;
    if (c < 0x20) invalid("a control character in a string", i);
    if (c != '\\') {
      std::size_t n = utf8_length(s, i);
      if (n == 0) invalid("invalid UTF-8", i);
      i += n;
      continue;
    }
    if (i + 1 >= s.size()) break;
    char e = s[i + 1];
    if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
        e == 't') {
      i += 2;
      continue;
    }
    long unit = unicode_escape(s, i);
    if (unit < 0) invalid("a bad escape in a string", i);
    if (unit >= 0xDC00 && unit <= 0xDFFF) invalid("a lone low surrogate escape", i);
    if (unit >= 0xD800 && unit <= 0xDBFF) {
      long low = i + 6 < s.size() && s[i + 6] == '\\' ? unicode_escape(s, i + 6) : -1;
      if (low < 0xDC00 || low > 0xDFFF) invalid("a lone high surrogate escape", i);
      i += 6;
    }
    i += 6;
  }
  invalid("an unterminated string", start);
}

// Checks the number at s[i]; returns the index just past it. Any length is fine.
std::size_t checked_number_end(std::string_view s, std::size_t i) {
  std::size_t start = i;
  auto digits = [&] {
    std::size_t from = i;
    while (i < s.size() && is_digit(s[i])) ++i;
    if (i == from) invalid("a malformed number", start);
  };
  if (s[i] == '-') ++i;
  if (i < s.size() && s[i] == '0') {
    ++i;
  } else {
    digits();
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    digits();
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    digits();
  }
  return i;
}

std::string decode_name(std::string_view literal) {
  if (literal.find('\\') == std::string_view::npos) {
    return std::string(literal.substr(1, literal.size() - 2));
  }
  return nlohmann::json::parse(literal).get<std::string>();
}

}  // namespace

void validate_json(std::string_view s, std::size_t max_depth) {
  std::vector<char> open;  // the containers around the current position: '{' or '['
  std::size_t i = 0;
  // After '{' or ',' in an object: a member name and its colon.
  auto member_name = [&] {
    skip_space(s, i);
    if (i >= s.size() || s[i] != '"') invalid("expected a member name", i);
    i = checked_string_end(s, i);
    skip_space(s, i);
    if (i >= s.size() || s[i] != ':') invalid("expected ':'", i);
    ++i;
  };
  for (;;) {
    // A value starts here.
    skip_space(s, i);
    if (i >= s.size()) invalid("a missing value", i);
    char c = s[i];
    if (c == '{' || c == '[') {
      if (open.size() >= max_depth) {
        invalid("nesting deeper than " + std::to_string(max_depth) + " levels", i);
      }
      open.push_back(c);
      ++i;
      skip_space(s, i);
      char close = c == '{' ? '}' : ']';
      if (i >= s.size() || s[i] != close) {
        if (c == '{') member_name();
        continue;
      }
      open.pop_back();
      ++i;
    } else if (c == '"') {
      i = checked_string_end(s, i);
    } else if (c == '-' || is_digit(c)) {
      i = checked_number_end(s, i);
    } else if (s.substr(i, 4) == "true" || s.substr(i, 4) == "null") {
      i += 4;
    } else if (s.substr(i, 5) == "false") {
      i += 5;
    } else {
      invalid("an unexpected character", i);
    }
    // A value ended: close containers until the next value starts, or the text ends.
    for (;;) {
      skip_space(s, i);
      if (open.empty()) {
        if (i != s.size()) invalid("text after the JSON value", i);
        return;
      }
      if (i >= s.size()) invalid("an unterminated array or object", i);
      if (s[i] == ',') {
        ++i;
        if (open.back() == '{') member_name();
        break;
      }
      if (s[i] != (open.back() == '{' ? '}' : ']')) invalid("expected ',' or a closing bracket", i);
      open.pop_back();
      ++i;
    }
  }
}

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
  // The last of duplicate members, as PostgreSQL's jsonb keeps it.
  for (auto it = members_.rbegin(); it != members_.rend(); ++it) {
    if (it->first == name) return &it->second;
  }
  return nullptr;
}

RawObject RawObject::with_values(const std::vector<std::pair<std::string, std::string>>& values) const {
  RawObject o;
  o.present_ = present_;
  o.members_ = members_;
  for (auto& [name, value] : o.members_) {
    for (const auto& [n, v] : values) {
      if (n == name) value = v;
    }
  }
  o.text_ = "{";
  for (std::size_t i = 0; i < o.members_.size(); ++i) {
    if (i) o.text_ += ',';
    o.text_ += nlohmann::json(o.members_[i].first).dump();
    o.text_ += ':';
    o.text_ += o.members_[i].second;
  }
  o.text_ += '}';
  return o;
}

}  // namespace pgfanout
