// libFuzzer target: text as the logical capture converts it (publisher/row_json), after a
// first byte that picks the type shape. The text comes from output functions in the
// walsender session, some of them written by table owners (their composite and enum
// types' contents), so any exception other than std::runtime_error, any sanitizer report,
// and a result that is not one JSON value are findings.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "row_json.hpp"

namespace {

using namespace pgfanout;
using Kind = TypeShape::Kind;
using Shape = std::shared_ptr<const TypeShape>;

Shape make(Kind kind, Shape element = nullptr, char delimiter = ',',
           std::vector<std::pair<std::string, Shape>> fields = {}, bool bare = false) {
  auto s = std::make_shared<TypeShape>();
  s->kind = kind;
  s->element = std::move(element);
  s->delimiter = delimiter;
  s->fields = std::move(fields);
  s->bare = bare;
  return s;
}

std::vector<Shape> shapes() {
  std::vector<Shape> all;
  for (Kind k : {Kind::Bool, Kind::Number, Kind::String, Kind::Json, Kind::Jsonb, Kind::Date, Kind::Timestamp,
                 Kind::TimestampTz, Kind::TextForm}) {
    all.push_back(make(k));
    all.push_back(make(Kind::Array, make(k)));
  }
  all.push_back(make(Kind::Array, make(Kind::String), ';'));
  all.push_back(make(Kind::Array, make(Kind::Number), ',', {}, true));
  auto pair = make(Kind::Composite, nullptr, ',',
                   {{"n", make(Kind::Number)}, {"s", make(Kind::String)}, {"j", make(Kind::Json)}});
  all.push_back(pair);
  all.push_back(make(Kind::Array, pair));
  auto nest = make(Kind::Composite, nullptr, ',',
                   {{"p", pair}, {"ps", make(Kind::Array, pair)}, {"t", make(Kind::TimestampTz)}});
  all.push_back(nest);
  all.push_back(make(Kind::Array, nest));
  all.push_back(make(Kind::Composite));
  return all;
}

bool is_ascii(std::string_view text) {
  for (unsigned char c : text) {
    if (c >= 0x80) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::vector<Shape> all = shapes();
  if (size == 0) return 0;
  const Shape& shape = all[data[0] % all.size()];
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string out;
  try {
    append_value_json(out, *shape, text);
  } catch (const std::runtime_error&) {
    return 0;
  }
  // The server's text is valid in its encoding; only then is the result valid UTF-8 JSON.
  if (!is_ascii(text)) return 0;
  try {
    (void)nlohmann::json::parse(out);
  } catch (const nlohmann::json::out_of_range&) {
    // A number beyond a double (1e992): valid JSON, and numeric's to jsonb.
  } catch (const nlohmann::json::parse_error&) {
    std::abort();
  }
  return 0;
}
