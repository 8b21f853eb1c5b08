#include "row_json.hpp"

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "pgfanout/change.hpp"

namespace pgfanout {
namespace {

// The message names the shape and the length, not the value: it ends up in logs, and a
// row's contents are not the log's to keep.
[[noreturn]] void malformed(std::string_view what, std::string_view text) {
  throw std::runtime_error("row_json: malformed " + std::string(what) + " text (" + std::to_string(text.size()) +
                           " bytes)");
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// The length of the JSON number (RFC 8259 grammar) at the start of `text`, 0 when none.
std::size_t json_number_length(std::string_view text) {
  std::size_t i = 0;
  auto digits = [&] {
    std::size_t start = i;
    while (i < text.size() && is_digit(text[i])) ++i;
    return i - start;
  };
  if (i < text.size() && text[i] == '-') ++i;
  if (i < text.size() && text[i] == '0') {
    ++i;
  } else if (digits() == 0) {
    return 0;
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    if (digits() == 0) return 0;
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    if (digits() == 0) return 0;
  }
  return i;
}

// Copies the JSON string literal at text[i] (a '"') to `out` as it is, after checking its
// escapes; i ends past the closing quote. A \u escape of a UTF-16 surrogate must be half of
// a pair (high then low), as PostgreSQL's json input requires: a lone half is not a
// character, and no reader downstream could store it.
void copy_json_string(std::string& out, std::string_view text, std::size_t& i) {
  std::size_t start = i++;
  bool want_low = false;  // the last escape was a high surrogate
  for (;;) {
    if (i >= text.size()) malformed("json", text);
    char c = text[i++];
    if (c == '\\' && i < text.size() && text[i] == 'u') {
      ++i;
      unsigned code = 0;
      const char* digits = text.data() + i;
      if (text.size() - i < 4 || std::from_chars(digits, digits + 4, code, 16).ptr != digits + 4) {
        malformed("json", text);
      }
      i += 4;
      bool high = code >= 0xD800 && code <= 0xDBFF;
      bool low = code >= 0xDC00 && code <= 0xDFFF;
      if (low != want_low) malformed("json", text);
      want_low = high;
      continue;
    }
    if (want_low) malformed("json", text);
    if (c == '"') break;
    if (static_cast<unsigned char>(c) < 0x20) malformed("json", text);
    if (c != '\\') continue;
    if (i >= text.size()) malformed("json", text);
    char e = text[i++];
    if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) malformed("json", text);
  }
  out.append(text.substr(start, i - start));
}

// Appends the JSON document `text` without its insignificant white space, after checking
// it is one (walking it without recursion: a deeply nested value cannot exhaust the
// stack). json and jsonb values are spliced this way, so a message never carries text
// that is not JSON whatever a type's output function wrote.
void append_json_document(std::string& out, std::string_view text) {
  enum class Want { Value, FirstValueOrEnd, Key, FirstKeyOrEnd, CommaOrEnd };
  std::vector<char> open;  // the closing brackets of the containers we are in
  Want want = Want::Value;
  std::size_t i = 0;
  for (;;) {
    while (i < text.size() && is_json_space(text[i])) ++i;
    if (want == Want::CommaOrEnd && open.empty()) {
      if (i != text.size()) malformed("json", text);
      return;
    }
    if (i >= text.size()) malformed("json", text);
    char c = text[i];
    if (want == Want::CommaOrEnd ||
        ((want == Want::FirstValueOrEnd || want == Want::FirstKeyOrEnd) && c == open.back())) {
      if (c == open.back()) {
        out += c;
        ++i;
        open.pop_back();
        want = Want::CommaOrEnd;
      } else if (c == ',' && want == Want::CommaOrEnd) {
        out += c;
        ++i;
        want = open.back() == '}' ? Want::Key : Want::Value;
      } else {
        malformed("json", text);
      }
      continue;
    }
    if (want == Want::Key || want == Want::FirstKeyOrEnd) {
      if (c != '"') malformed("json", text);
      copy_json_string(out, text, i);
      while (i < text.size() && is_json_space(text[i])) ++i;
      if (i >= text.size() || text[i] != ':') malformed("json", text);
      out += ':';
      ++i;
      want = Want::Value;
      continue;
    }
    // A value.
    want = Want::CommaOrEnd;
    if (c == '{' || c == '[') {
      out += c;
      ++i;
      open.push_back(c == '{' ? '}' : ']');
      want = c == '{' ? Want::FirstKeyOrEnd : Want::FirstValueOrEnd;
    } else if (c == '"') {
      copy_json_string(out, text, i);
    } else if (c == '-' || is_digit(c)) {
      std::size_t n = json_number_length(text.substr(i));
      if (n == 0) malformed("json", text);
      out.append(text.substr(i, n));
      i += n;
    } else {
      bool literal = false;
      for (std::string_view word : {"true", "false", "null"}) {
        if (text.substr(i, word.size()) == word) {
          out.append(word);
          i += word.size();
          literal = true;
          break;
        }
      }
      if (!literal) malformed("json", text);
    }
  }
}

void append_number(std::string& out, std::string_view text) {
  if (!text.empty() && json_number_length(text) == text.size()) {
    out.append(text);
  } else if (text == "NaN" || text == "Infinity" || text == "-Infinity") {
    // Not JSON numbers: to_jsonb makes strings of them.
    append_json_string(out, text);
  } else {
    malformed("number", text);
  }
}

// Checks `count` digits at text[i], moving i past them.
bool skip_digits(std::string_view text, std::size_t& i, std::size_t count) {
  for (std::size_t k = 0; k < count; ++k, ++i) {
    if (i >= text.size() || !is_digit(text[i])) return false;
  }
  return true;
}

// ISO dates as DateStyle=ISO writes them: at least 4 digits of year, "-MM-DD"; i ends
// past them.
bool skip_iso_date(std::string_view text, std::size_t& i) {
  if (!skip_digits(text, i, 4)) return false;
  while (i < text.size() && is_digit(text[i])) ++i;
  return i < text.size() && text[i++] == '-' && skip_digits(text, i, 2) && i < text.size() &&
         text[i++] == '-' && skip_digits(text, i, 2);
}

bool is_special_datetime(std::string_view text) { return text == "infinity" || text == "-infinity"; }

// to_jsonb writes dates in XSD style, which for a date is ISO's own ("0044-03-15 BC").
void append_date(std::string& out, std::string_view text) {
  std::size_t i = 0;
  if (!is_special_datetime(text)) {
    if (!skip_iso_date(text, i)) malformed("date", text);
    if (text.substr(i) != "" && text.substr(i) != " BC") malformed("date", text);
  }
  append_json_string(out, text);
}

// ISO "YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]][ BC]" becomes XSD
// "YYYY-MM-DDTHH:MM:SS[.ffffff][+HH:MM[:SS]][ BC]": a 'T' between date and time, and the
// offset's minutes always written.
void append_timestamp(std::string& out, std::string_view text, bool with_zone) {
  if (is_special_datetime(text)) {
    append_json_string(out, text);
    return;
  }
  std::string_view what = with_zone ? "timestamptz" : "timestamp";
  std::size_t i = 0;
  if (!skip_iso_date(text, i)) malformed(what, text);
  std::size_t date_end = i;
  if (i >= text.size() || text[i++] != ' ') malformed(what, text);
  if (!(skip_digits(text, i, 2) && i < text.size() && text[i++] == ':' && skip_digits(text, i, 2) &&
        i < text.size() && text[i++] == ':' && skip_digits(text, i, 2))) {
    malformed(what, text);
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    if (i >= text.size() || !is_digit(text[i])) malformed(what, text);
    while (i < text.size() && is_digit(text[i])) ++i;
  }
  std::string result(text.substr(0, date_end));
  result += 'T';
  result.append(text.substr(date_end + 1, i - date_end - 1));
  if (with_zone) {
    if (i >= text.size() || (text[i] != '+' && text[i] != '-')) malformed(what, text);
    std::size_t zone = i++;
    if (!skip_digits(text, i, 2)) malformed(what, text);
    int parts = 1;
    while (parts < 3 && i < text.size() && text[i] == ':') {
      ++i;
      if (!skip_digits(text, i, 2)) malformed(what, text);
      ++parts;
    }
    result.append(text.substr(zone, i - zone));
    if (parts == 1) result += ":00";
  }
  std::string_view rest = text.substr(i);
  if (rest != "" && rest != " BC") malformed(what, text);
  result.append(rest);
  append_json_string(out, result);
}

// An array's text as array_out writes it: optional dimensions ("[0:1]="), then braces
// nested once per dimension, elements split by the element type's delimiter, an element
// in double quotes (backslash escapes) when it would otherwise be ambiguous, and an
// unquoted NULL for a null. to_jsonb keeps the nesting and drops the bounds.
class ArrayParser {
 public:
  ArrayParser(const TypeShape& shape, std::string_view text) : shape_(shape), text_(text) {}

  void append(std::string& out) {
    if (!shape_.element) throw std::invalid_argument("row_json: an array shape without its element's");
    if (shape_.bare) {
      append_bare(out);
      return;
    }
    if (peek() == '[') skip_dimensions();
    level(out, 1);
    if (pos_ != text_.size()) fail();
  }

 private:
  [[noreturn]] void fail() { malformed("array", text_); }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void expect(char c) {
    if (peek() != c || pos_ >= text_.size()) fail();
    ++pos_;
  }

  void append_bare(std::string& out) {
    out += '[';
    for (std::size_t start = 0; start < text_.size();) {
      std::size_t end = std::min(text_.find(' ', start), text_.size());
      if (end == start) fail();
      if (start > 0) out += ',';
      append_value_json(out, *shape_.element, text_.substr(start, end - start));
      start = end + 1;
      if (end + 1 == text_.size()) fail();  // a trailing space
    }
    out += ']';
  }

  void skip_dimensions() {
    while (peek() == '[') {
      ++pos_;
      for (int bound = 0; bound < 2; ++bound) {
        if (peek() == '-') ++pos_;
        if (!is_digit(peek())) fail();
        while (is_digit(peek())) ++pos_;
        expect(bound == 0 ? ':' : ']');
      }
    }
    expect('=');
  }

  // PostgreSQL's arrays have at most MAXDIM (6) dimensions, so array_out never nests
  // braces deeper; deeper text is refused before its recursion could exhaust the stack.
  static constexpr int kMaxDimensions = 6;

  void level(std::string& out, int depth) {
    if (depth > kMaxDimensions) fail();
    expect('{');
    out += '[';
    if (peek() == '}') {
      ++pos_;
      out += ']';
      return;
    }
    const bool nested = peek() == '{';
    for (bool first = true;; first = false) {
      if (!first) out += ',';
      if (nested) {
        level(out, depth + 1);
      } else {
        element(out);
      }
      if (peek() == '}') break;
      expect(shape_.delimiter);
      // Every element of a level is a sub-array, or none is.
      if ((peek() == '{') != nested) fail();
    }
    ++pos_;
    out += ']';
  }

  void element(std::string& out) {
    std::string value;
    bool quoted = false;
    for (;;) {
      char c = peek();
      if (pos_ >= text_.size()) fail();
      if (c == '"') {
        if (quoted || !value.empty()) fail();
        quoted = true;
        ++pos_;
        for (;;) {
          if (pos_ >= text_.size()) fail();
          c = text_[pos_++];
          if (c == '"') break;
          if (c == '\\') {
            if (pos_ >= text_.size()) fail();
            c = text_[pos_++];
          }
          value += c;
        }
        if (peek() != shape_.delimiter && peek() != '}') fail();
        continue;
      }
      if (c == shape_.delimiter || c == '}') break;
      if (quoted || c == '{') fail();
      if (c == '\\') {
        ++pos_;
        if (pos_ >= text_.size()) fail();
        c = text_[pos_];
      }
      value += c;
      ++pos_;
    }
    if (!quoted && value.empty()) fail();
    if (!quoted && value.size() == 4 && (value[0] | 0x20) == 'n' && (value[1] | 0x20) == 'u' &&
        (value[2] | 0x20) == 'l' && (value[3] | 0x20) == 'l') {
      out += "null";
    } else {
      append_value_json(out, *shape_.element, value);
    }
  }

  const TypeShape& shape_;
  std::string_view text_;
  std::size_t pos_ = 0;
};

// A composite's text as record_out writes it: "(" fields split by "," ")", a null field
// empty, a field in double quotes when it would otherwise be ambiguous (an empty string is
// ""), quotes and backslashes inside doubled. record_in's backslash escapes are read too.
//
// Text with fewer fields than the shape gives null for the missing last ones: the
// walsender writes a value with the type as it was when the change was written, the shape
// is the type as it is now, and ALTER TYPE ... ADD ATTRIBUTE (allowed while columns use
// the type) appends attributes that a stored value lacks and reads as null. More fields
// than the shape cannot be placed (an attribute was dropped since) and throw.
void append_composite(std::string& out, const TypeShape& shape, std::string_view text) {
  auto fail = [&] { malformed("composite", text); };
  if (text.size() < 2 || text.front() != '(' || text.back() != ')') fail();
  std::size_t pos = 1;
  const std::size_t end = text.size() - 1;
  out += '{';
  if (shape.fields.empty()) {
    if (end != 1) fail();
    out += '}';
    return;
  }
  bool text_done = false;  // every field of the text was read
  for (std::size_t f = 0; f < shape.fields.size(); ++f) {
    if (f > 0) out += ',';
    append_json_string(out, shape.fields[f].first);
    out += ':';
    if (text_done) {
      out += "null";
      continue;
    }
    std::string value;
    bool present = false;  // anything quoted or unquoted: not a null
    while (pos < end && text[pos] != ',') {
      present = true;
      char c = text[pos++];
      if (c == '"') {
        for (;;) {
          if (pos >= end) fail();
          c = text[pos++];
          if (c == '"') {
            if (pos < end && text[pos] == '"') {
              ++pos;
            } else {
              break;
            }
          } else if (c == '\\') {
            if (pos >= end) fail();
            c = text[pos++];
          }
          value += c;
        }
        continue;
      }
      if (c == '\\') {
        if (pos >= end) fail();
        c = text[pos++];
      }
      value += c;
    }
    text_done = pos == end;
    ++pos;  // past the ',' or the ')'
    if (!present) {
      out += "null";
    } else {
      const auto& field = shape.fields[f].second;
      if (!field) throw std::invalid_argument("row_json: a composite shape without a field's");
      append_value_json(out, *field, value);
    }
  }
  if (!text_done) fail();
  out += '}';
}

}  // namespace

void append_value_json(std::string& out, const TypeShape& shape, std::string_view text) {
  using Kind = TypeShape::Kind;
  switch (shape.kind) {
    case Kind::Bool:
      if (text == "t") {
        out += "true";
      } else if (text == "f") {
        out += "false";
      } else {
        malformed("bool", text);
      }
      return;
    case Kind::Number: append_number(out, text); return;
    case Kind::String:
    case Kind::TextForm: append_json_string(out, text); return;
    case Kind::Json:
    case Kind::Jsonb: append_json_document(out, text); return;
    case Kind::Date: append_date(out, text); return;
    case Kind::Timestamp: append_timestamp(out, text, false); return;
    case Kind::TimestampTz: append_timestamp(out, text, true); return;
    case Kind::Array: ArrayParser(shape, text).append(out); return;
    case Kind::Composite: append_composite(out, shape, text); return;
  }
  throw std::logic_error("row_json: unknown shape kind");
}

bool holds_text_form(const TypeShape& shape) {
  switch (shape.kind) {
    case TypeShape::Kind::TextForm: return true;
    case TypeShape::Kind::Array: return shape.element && holds_text_form(*shape.element);
    case TypeShape::Kind::Composite:
      for (const auto& [name, field] : shape.fields) {
        if (field && holds_text_form(*field)) return true;
      }
      return false;
    default: return false;
  }
}

void set_text_need(TypeShape& shape) {
  using Need = TypeShape::TextNeed;
  switch (shape.kind) {
    case TypeShape::Kind::Json:
    case TypeShape::Kind::TextForm: shape.text_need = Need::Always; break;
    case TypeShape::Kind::Array:
      shape.text_need = shape.element && shape.element->text_need == Need::Always ? Need::Always : Need::Bounds;
      break;
    case TypeShape::Kind::Composite:
      shape.text_need = Need::None;
      for (const auto& field : shape.fields) shape.text_need = std::max(shape.text_need, field.second->text_need);
      break;
    default: shape.text_need = Need::None;
  }
}

bool has_array_bounds(std::string_view text) { return text.find("]={") != std::string_view::npos; }

}  // namespace pgfanout
