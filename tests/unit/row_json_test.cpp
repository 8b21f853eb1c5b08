// The logical capture's text-to-JSON conversion (publisher/row_json.hpp): the parsers of
// array_out's and record_out's text and the reshaping of dates, on the edge cases the
// server writes. tests/integration/row_json_itest.cpp checks the same against to_jsonb.

#include "row_json.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>

namespace pgfanout {
namespace {

using Kind = TypeShape::Kind;
using Shape = std::shared_ptr<const TypeShape>;

Shape scalar(Kind kind) {
  auto s = std::make_shared<TypeShape>();
  s->kind = kind;
  return s;
}

Shape array_of(Shape element, char delimiter = ',') {
  auto s = std::make_shared<TypeShape>();
  s->kind = Kind::Array;
  s->element = std::move(element);
  s->delimiter = delimiter;
  return s;
}

Shape composite(std::vector<std::pair<std::string, Shape>> fields) {
  auto s = std::make_shared<TypeShape>();
  s->kind = Kind::Composite;
  s->fields = std::move(fields);
  return s;
}

std::string json(const Shape& shape, std::string_view text) {
  std::string out;
  append_value_json(out, *shape, text);
  return out;
}

TEST(RowJson, ScalarsKeepToJsonbsTypes) {
  EXPECT_EQ(json(scalar(Kind::Bool), "t"), "true");
  EXPECT_EQ(json(scalar(Kind::Bool), "f"), "false");
  EXPECT_EQ(json(scalar(Kind::Number), "-42"), "-42");
  EXPECT_EQ(json(scalar(Kind::Number), "1.5e-07"), "1.5e-07");
  EXPECT_EQ(json(scalar(Kind::Number), "1e+100"), "1e+100");
  EXPECT_EQ(json(scalar(Kind::Number), "0.000100"), "0.000100");
  EXPECT_EQ(json(scalar(Kind::Number), "NaN"), "\"NaN\"");
  EXPECT_EQ(json(scalar(Kind::Number), "Infinity"), "\"Infinity\"");
  EXPECT_EQ(json(scalar(Kind::Number), "-Infinity"), "\"-Infinity\"");
  EXPECT_EQ(json(scalar(Kind::String), "a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
  EXPECT_EQ(json(scalar(Kind::TextForm), "\"k\"=>\"v\""), "\"\\\"k\\\"=>\\\"v\\\"\"");
}

TEST(RowJson, DatesAndTimestampsTakeTheXsdForm) {
  EXPECT_EQ(json(scalar(Kind::Date), "2024-02-29"), "\"2024-02-29\"");
  EXPECT_EQ(json(scalar(Kind::Date), "0044-03-15 BC"), "\"0044-03-15 BC\"");
  EXPECT_EQ(json(scalar(Kind::Date), "-infinity"), "\"-infinity\"");
  EXPECT_EQ(json(scalar(Kind::Timestamp), "2024-01-02 03:04:05"), "\"2024-01-02T03:04:05\"");
  EXPECT_EQ(json(scalar(Kind::Timestamp), "0044-03-15 10:00:00.5 BC"), "\"0044-03-15T10:00:00.5 BC\"");
  EXPECT_EQ(json(scalar(Kind::Timestamp), "infinity"), "\"infinity\"");
  EXPECT_EQ(json(scalar(Kind::TimestampTz), "2024-01-02 03:04:05.123456+00"),
            "\"2024-01-02T03:04:05.123456+00:00\"");
  EXPECT_EQ(json(scalar(Kind::TimestampTz), "12344-12-31 18:42:30+05:30 BC"),
            "\"12344-12-31T18:42:30+05:30 BC\"");
  EXPECT_EQ(json(scalar(Kind::TimestampTz), "1900-01-01 00:00:00-00:17:30"), "\"1900-01-01T00:00:00-00:17:30\"");
}

TEST(RowJson, JsonIsCheckedAndCompacted) {
  EXPECT_EQ(json(scalar(Kind::Json), " { \"a\" : [1, 2.5e3, true, null, \"x\\u00e9\"] , \"a\": {}} "),
            "{\"a\":[1,2.5e3,true,null,\"x\\u00e9\"],\"a\":{}}");
  EXPECT_EQ(json(scalar(Kind::Jsonb), "\"s\""), "\"s\"");
  EXPECT_EQ(json(scalar(Kind::Jsonb), "[[], {}]"), "[[],{}]");
  std::string deep(100000, '[');
  deep += std::string(100000, ']');
  EXPECT_EQ(json(scalar(Kind::Jsonb), deep), deep);
  // A surrogate pair, in either case of hex digit, is one character and passes.
  EXPECT_EQ(json(scalar(Kind::Json), "\"\\uD83D\\ude00\""), "\"\\uD83D\\ude00\"");
}

// Found by a long fuzzer run: array text nested thousands of braces deep overflowed the
// stack. PostgreSQL's arrays have at most 6 dimensions, so deeper text is malformed.
TEST(RowJson, ArraysNestAtMostSixDeep) {
  auto ints = array_of(scalar(Kind::Number));
  EXPECT_EQ(json(ints, "{{{{{{1}}}}}}"), "[[[[[[1]]]]]]");
  EXPECT_EQ(json(ints, "[1:1][1:1][1:1][1:1][1:1][1:1]={{{{{{1}}}}}}"), "[[[[[[1]]]]]]");
  for (std::size_t depth : {7, 100000}) {
    std::string text = std::string(depth, '{') + "1" + std::string(depth, '}');
    std::string out;
    EXPECT_THROW(append_value_json(out, *ints, text), std::runtime_error) << depth;
  }
}

// Found by the fuzzer in CI: a lone UTF-16 surrogate escape passed the check, and the
// message carried a string no JSON reader accepts. PostgreSQL's json input refuses it too.
TEST(RowJson, ALoneSurrogateEscapeIsNotJson) {
  for (std::string_view text : {"\"x\\uD9D0\"", "\"\\uD9D0x\"", "\"\\uDC00\"", "\"\\uD800\\uD800\"",
                                "\"\\uD800\\n\"", "{\"a\\udbff\":1}", "[1, 2.5e3, \"x\\uD9D0\"]"}) {
    std::string out;
    EXPECT_THROW(append_value_json(out, *scalar(Kind::Json), text), std::runtime_error) << text;
  }
}

TEST(RowJson, ArraysDropTheirBoundsAndKeepNesting) {
  auto ints = array_of(scalar(Kind::Number));
  EXPECT_EQ(json(ints, "{}"), "[]");
  EXPECT_EQ(json(ints, "{1,NULL,-3}"), "[1,null,-3]");
  EXPECT_EQ(json(ints, "[0:1]={5,6}"), "[5,6]");
  EXPECT_EQ(json(ints, "[-2:-1][1:2]={{1,2},{3,NULL}}"), "[[1,2],[3,null]]");
  auto texts = array_of(scalar(Kind::String));
  EXPECT_EQ(json(texts, R"x({"",NULL,"NULL",null2,"a,b","q\"q","b\\s","{x}"," sp "})x"),
            R"x(["",null,"NULL","null2","a,b","q\"q","b\\s","{x}"," sp "])x");
  auto boxes = array_of(scalar(Kind::String), ';');
  EXPECT_EQ(json(boxes, "{(1,1),(0,0);(2,2),(1,1)}"), R"x(["(1,1),(0,0)","(2,2),(1,1)"])x");
  auto jsons = array_of(scalar(Kind::Json));
  EXPECT_EQ(json(jsons, R"({"{\"a\": 1}",NULL})"), R"([{"a":1},null])");
  auto stores = array_of(scalar(Kind::TextForm));
  EXPECT_EQ(json(stores, R"({"\"a\"=>\"1\"",NULL})"), R"(["\"a\"=>\"1\"",null])");
}

TEST(RowJson, VectorsAreArraysWithoutBraces) {
  auto vector = std::make_shared<TypeShape>();
  vector->kind = Kind::Array;
  vector->element = scalar(Kind::Number);
  vector->bare = true;
  EXPECT_EQ(json(vector, "1 -2 3"), "[1,-2,3]");
  EXPECT_EQ(json(vector, ""), "[]");
  std::string out;
  EXPECT_THROW(append_value_json(out, *vector, "1  2"), std::runtime_error);
  EXPECT_THROW(append_value_json(out, *vector, "1 "), std::runtime_error);
  EXPECT_THROW(append_value_json(out, *vector, " 1"), std::runtime_error);
}

TEST(RowJson, CompositesTellEmptyFromNull) {
  auto pair = composite({{"n", scalar(Kind::Number)}, {"s", scalar(Kind::String)}, {"t", scalar(Kind::String)}});
  EXPECT_EQ(json(pair, R"x((1,"a,b",))x"), R"({"n":1,"s":"a,b","t":null})");
  EXPECT_EQ(json(pair, R"x((,"",""""))x"), R"({"n":null,"s":"","t":"\""})");
  EXPECT_EQ(json(pair, R"x((2,"x""y\\z",a"(b)"c))x"), R"({"n":2,"s":"x\"y\\z","t":"a(b)c"})");
  auto empty = composite({});
  EXPECT_EQ(json(empty, "()"), "{}");
  auto one = composite({{"only", scalar(Kind::String)}});
  EXPECT_EQ(json(one, "()"), R"({"only":null})");
}

TEST(RowJson, ACompositeWrittenBeforeAnAttributeWasAddedReadsItAsNull) {
  auto grown = composite({{"a", scalar(Kind::Number)}, {"c", scalar(Kind::String)}, {"b", scalar(Kind::String)}});
  EXPECT_EQ(json(grown, "(1,q)"), R"({"a":1,"c":"q","b":null})");
  EXPECT_EQ(json(grown, "(1)"), R"({"a":1,"c":null,"b":null})");
  EXPECT_EQ(json(array_of(grown), R"x({"(2,w)"})x"), R"([{"a":2,"c":"w","b":null}])");
  // A value with more attributes than the type has now cannot be placed.
  std::string out;
  EXPECT_THROW(append_value_json(out, *grown, "(1,q,r,s)"), std::runtime_error);
}

TEST(RowJson, NestedCompositesAndArraysOfThem) {
  auto inner = composite({{"a", scalar(Kind::Number)}, {"h", scalar(Kind::TextForm)}});
  auto outer = composite({{"in", inner}, {"list", array_of(inner)}, {"b", scalar(Kind::Bool)}});
  EXPECT_EQ(json(outer, R"x(("(1,""""""k""""=>""""v"""""")","{""(2,)"",NULL,""(,)""}",t))x"),
            R"({"in":{"a":1,"h":"\"k\"=>\"v\""},"list":[{"a":2,"h":null},null,{"a":null,"h":null}],"b":true})");
  EXPECT_TRUE(holds_text_form(*outer));
  EXPECT_TRUE(holds_text_form(*array_of(inner)));
  EXPECT_FALSE(holds_text_form(*array_of(composite({{"a", scalar(Kind::Number)}}))));
  EXPECT_FALSE(holds_text_form(*scalar(Kind::Json)));
}

TEST(RowJson, MalformedTextThrows) {
  const auto throws = [](const Shape& shape, std::string_view text) {
    std::string out;
    EXPECT_THROW(append_value_json(out, *shape, text), std::runtime_error) << text;
  };
  throws(scalar(Kind::Bool), "true");
  throws(scalar(Kind::Number), "");
  throws(scalar(Kind::Number), "1.");
  throws(scalar(Kind::Number), "0x10");
  throws(scalar(Kind::Number), "nan");
  throws(scalar(Kind::Number), "1,5");
  throws(scalar(Kind::Date), "2024-1-2");
  throws(scalar(Kind::Date), "2024-01-02 AD");
  throws(scalar(Kind::Timestamp), "2024-01-02T03:04:05");
  throws(scalar(Kind::Timestamp), "2024-01-02 03:04");
  throws(scalar(Kind::TimestampTz), "2024-01-02 03:04:05");
  throws(scalar(Kind::TimestampTz), "2024-01-02 03:04:05+0");
  throws(scalar(Kind::Json), "{\"a\":}");
  throws(scalar(Kind::Json), "[1,]");
  throws(scalar(Kind::Json), "{} {}");
  throws(scalar(Kind::Json), "\"a\nb\"");
  throws(scalar(Kind::Json), "[");
  throws(scalar(Kind::Json), "\"\\x\"");
  throws(scalar(Kind::Jsonb), "");
  auto ints = array_of(scalar(Kind::Number));
  throws(ints, "");
  throws(ints, "{1,2");
  throws(ints, "{1,,2}");
  throws(ints, "{1,2}x");
  throws(ints, "{1,{2}}");
  throws(ints, "{{1},2}");
  throws(ints, "[0:1]{5,6}");
  throws(ints, "[0]={5}");
  throws(ints, "{\"1\"2}");
  throws(ints, "{\"1}");
  throws(ints, "{a}");
  auto pair = composite({{"a", scalar(Kind::String)}, {"b", scalar(Kind::String)}});
  throws(pair, "(a,b,c)");
  throws(pair, "a,b");
  throws(pair, "(\"a,b)");
  throws(pair, "(a,b)x");
  throws(composite({}), "(a)");
}

}  // namespace
TEST(RowJson, TextNeedFollowsWhatAValueHolds) {
  using Need = TypeShape::TextNeed;
  auto shape = [](TypeShape::Kind kind, std::shared_ptr<const TypeShape> element = nullptr) {
    auto s = std::make_shared<TypeShape>();
    s->kind = kind;
    s->element = std::move(element);
    set_text_need(*s);
    return s;
  };
  EXPECT_EQ(shape(TypeShape::Kind::Jsonb)->text_need, Need::None);
  EXPECT_EQ(shape(TypeShape::Kind::Json)->text_need, Need::Always);
  EXPECT_EQ(shape(TypeShape::Kind::TextForm)->text_need, Need::Always);
  EXPECT_EQ(shape(TypeShape::Kind::Array, shape(TypeShape::Kind::Number))->text_need, Need::Bounds);
  EXPECT_EQ(shape(TypeShape::Kind::Array, shape(TypeShape::Kind::TextForm))->text_need, Need::Always);
  auto composite = std::make_shared<TypeShape>();
  composite->kind = TypeShape::Kind::Composite;
  composite->fields = {{"a", shape(TypeShape::Kind::String)}, {"b", shape(TypeShape::Kind::Array, shape(TypeShape::Kind::Bool))}};
  set_text_need(*composite);
  EXPECT_EQ(composite->text_need, Need::Bounds);
  EXPECT_TRUE(has_array_bounds("[0:1]={5,6}"));
  EXPECT_TRUE(has_array_bounds(R"((1,"[2:2]={x}"))"));
  EXPECT_FALSE(has_array_bounds("{5,6}"));
  EXPECT_FALSE(has_array_bounds("[1,2]"));
}

}  // namespace pgfanout
