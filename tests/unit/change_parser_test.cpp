#include "change_parser.hpp"
#include "change_json.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pgfanout {
namespace {

using nlohmann::json;

json change(std::int64_t id, const std::string& op, json new_row, json old_key,
            const std::string& schema = "public", const std::string& name = "users") {
  return test::change_json(id, schema, name, op, std::move(new_row), std::move(old_key));
}

// A row or key as parsed JSON (null when absent), to compare with expectations.
json parsed(const RawObject& r) { return r.is_object() ? json::parse(r.dump()) : json(nullptr); }

// The reason of the BadMessage that parsing `body` throws, or "(parsed)".
std::string reason_of(const std::string& body) {
  try {
    parse_message(body);
  } catch (const BadMessage& e) {
    EXPECT_NE(std::string(e.what()), "") << "a BadMessage must say what is wrong";
    return e.reason();
  }
  return "(parsed)";
}

std::string reason_of(const json& body) { return reason_of(body.dump()); }

TEST(ChangeParser, ParsesOneChangeObject) {
  auto changes =
      parse_message(change(1234, "UPDATE", {{"id", 1}, {"name", "ana"}}, {{"id", 7}}).dump());
  ASSERT_EQ(changes.size(), 1u);
  const ParsedChange& c = changes[0];
  EXPECT_EQ(c.id, 1234);
  EXPECT_EQ(c.schema, "public");
  EXPECT_EQ(c.name, "users");
  EXPECT_EQ(c.op, Op::Update);
  EXPECT_EQ(parsed(c.new_row), (json{{"id", 1}, {"name", "ana"}}));
  EXPECT_EQ(parsed(c.old_key), (json{{"id", 7}}));
  EXPECT_EQ(c.ts, "2026-11-21T05:18:39.123456+00:00");
}

TEST(ChangeParser, ParsesEveryOperation) {
  EXPECT_EQ(parse_message(change(1, "INSERT", {{"id", 1}}, nullptr).dump())[0].op, Op::Insert);
  EXPECT_EQ(parse_message(change(1, "UPDATE", {{"id", 1}}, {{"id", 1}}).dump())[0].op, Op::Update);
  EXPECT_EQ(parse_message(change(1, "DELETE", nullptr, {{"id", 1}}).dump())[0].op, Op::Delete);
  EXPECT_EQ(parse_message(change(1, "TRUNCATE", nullptr, nullptr).dump())[0].op, Op::Truncate);
}

TEST(ChangeParser, KeepsOnlyWhatTheOperationUses) {
  // A DELETE's "new" and an INSERT's "old" mean nothing; they are not kept.
  auto del = parse_message(change(1, "DELETE", {{"id", 1}}, {{"id", 1}}).dump())[0];
  EXPECT_FALSE(del.new_row.is_object());
  auto ins = parse_message(change(1, "INSERT", {{"id", 1}}, {{"id", 2}}).dump())[0];
  EXPECT_FALSE(ins.old_key.is_object());
  auto truncate = parse_message(change(1, "TRUNCATE", nullptr, nullptr).dump())[0];
  EXPECT_FALSE(truncate.new_row.is_object());
  EXPECT_FALSE(truncate.old_key.is_object());
}

TEST(ChangeParser, ParsesAPackedArrayInOrder) {
  json pack = json::array(
      {change(10, "INSERT", {{"id", 1}}, nullptr), change(11, "UPDATE", {{"id", 2}}, {{"id", 1}}),
       change(12, "DELETE", nullptr, {{"id", 2}}), change(13, "TRUNCATE", nullptr, nullptr)});
  auto changes = parse_message(pack.dump());
  ASSERT_EQ(changes.size(), 4u);
  for (std::size_t i = 0; i < changes.size(); ++i)
    EXPECT_EQ(changes[i].id, 10 + static_cast<std::int64_t>(i));
  EXPECT_EQ(changes[0].op, Op::Insert);
  EXPECT_EQ(changes[1].op, Op::Update);
  EXPECT_EQ(changes[2].op, Op::Delete);
  EXPECT_EQ(changes[3].op, Op::Truncate);
}

TEST(ChangeParser, NamesMayHoldDotsQuotesAndUnicode) {
  auto c = parse_message(
      change(1, "INSERT", {{"Id", 1}}, nullptr, "Sales Q", "odd.Name\"x\" é").dump())[0];
  EXPECT_EQ(c.schema, "Sales Q");
  EXPECT_EQ(c.name, "odd.Name\"x\" é");
  // "table" is optional; when present it must be schema.name.
  json no_table = change(1, "INSERT", {{"id", 1}}, nullptr, "a.b", "c");
  no_table.erase("table");
  EXPECT_EQ(parse_message(no_table.dump())[0].schema, "a.b");
}

TEST(ChangeParser, ToleratesAMissingOrOddTimestampAndExtraFields) {
  json c = change(1, "INSERT", {{"id", 1}}, nullptr);
  c.erase("ts");
  EXPECT_EQ(parse_message(c.dump())[0].ts, "");
  c["ts"] = 12;
  EXPECT_EQ(parse_message(c.dump())[0].ts, "");
  c["something_new"] = {1, 2};
  EXPECT_EQ(parse_message(c.dump()).size(), 1u);
}

TEST(ChangeParser, KeepsRowValuesAsJson) {
  json row = {{"id", 1},
              {"t", "quote \" backslash \\ newline \n é 😀"},
              {"a", {1, nullptr, 3}},
              {"j", {{"nested", {{"deep", true}}}}},
              {"n", nullptr},
              {"big", 9223372036854775807LL}};
  auto c = parse_message(change(1, "INSERT", row, nullptr).dump())[0];
  EXPECT_EQ(parsed(c.new_row), row);
  EXPECT_EQ(*c.new_row.find("big"), "9223372036854775807");
}

// Values travel as the text PostgreSQL wrote: a numeric keeps every digit and its scale,
// which a double would not.
TEST(ChangeParser, KeepsTheExactTextOfNumbers) {
  const std::string body =
      R"({"id": 5, "table": "public.t", "schema": "public", "name": "t", "op": "UPDATE",)"
      R"( "new": {"id": 123456789012345678901234567890, "n": 1.10, "j": {"x": [0.1000000000000000055511151231257827, 1e-30]}},)"
      R"( "old": {"id": 123456789012345678901234567891}, "ts": "2026-01-01T00:00:00.000000+00:00"})";
  auto c = parse_message(body)[0];
  EXPECT_EQ(*c.new_row.find("id"), "123456789012345678901234567890");
  EXPECT_EQ(*c.new_row.find("n"), "1.10");
  EXPECT_EQ(*c.new_row.find("j"), R"({"x": [0.1000000000000000055511151231257827, 1e-30]})");
  EXPECT_EQ(*c.old_key.find("id"), "123456789012345678901234567891");
  EXPECT_EQ(c.new_row.find("missing"), nullptr);

  // The same in a packed array, element by element.
  auto pack = parse_message("[" + body + ",\n " + body + "]");
  ASSERT_EQ(pack.size(), 2u);
  EXPECT_EQ(*pack[1].new_row.find("n"), "1.10");
  EXPECT_EQ(pack[1].new_row.dump(), pack[0].new_row.dump());
}

TEST(ChangeParser, DecodesEscapedMemberNames) {
  const std::string body =
      R"({"id": 1, "schema": "public", "name": "t", "op": "INSERT", "new": {"caf\u00e9": 1, "q\"uote": "x"}})";
  auto c = parse_message(body)[0];
  ASSERT_NE(c.new_row.find("café"), nullptr);
  EXPECT_EQ(*c.new_row.find("café"), "1");
  ASSERT_NE(c.new_row.find("q\"uote"), nullptr);
  EXPECT_EQ(*c.new_row.find("q\"uote"), "\"x\"");
}

TEST(ChangeParser, NotJson) {
  for (const char* body :
       {"", "not json {", "{", "{\"id\": 1,", "[1, 2", "nul", "{'id': 1}", "\xff\xfe"}) {
    EXPECT_EQ(reason_of(std::string(body)), "not-json") << body;
  }
}

TEST(ChangeParser, BadShapeOfTheMessage) {
  EXPECT_EQ(reason_of(std::string("[]")), "bad-shape");
  EXPECT_EQ(reason_of(std::string("42")), "bad-shape");
  EXPECT_EQ(reason_of(std::string("\"INSERT\"")), "bad-shape");
  EXPECT_EQ(reason_of(std::string("null")), "bad-shape");
  EXPECT_EQ(reason_of(std::string("true")), "bad-shape");
  EXPECT_EQ(reason_of(std::string("{}")), "bad-shape");
  EXPECT_EQ(reason_of(std::string("[1]")), "bad-shape");
  EXPECT_EQ(reason_of(std::string("[[]]")), "bad-shape");
}

TEST(ChangeParser, APackWithOneBadElementIsBad) {
  json pack = json::array(
      {change(1, "INSERT", {{"id", 1}}, nullptr), change(2, "DELETE", nullptr, nullptr)});
  EXPECT_EQ(reason_of(pack), "bad-shape");
  pack = json::array({change(1, "INSERT", {{"id", 1}}, nullptr), "oops"});
  EXPECT_EQ(reason_of(pack), "bad-shape");
}

TEST(ChangeParser, BadShapeOfTheFields) {
  const json good = change(1, "UPDATE", {{"id", 1}}, {{"id", 1}});
  ASSERT_EQ(reason_of(good), "(parsed)");
  auto without = [&](const char* key) {
    json c = good;
    c.erase(key);
    return c;
  };
  auto with = [&](const char* key, json value) {
    json c = good;
    c[key] = std::move(value);
    return c;
  };
  for (const char* key : {"id", "schema", "name", "op", "new", "old"}) {
    EXPECT_EQ(reason_of(without(key)), "bad-shape") << "without " << key;
  }
  EXPECT_EQ(reason_of(with("id", "1")), "bad-shape");
  EXPECT_EQ(reason_of(with("id", 1.5)), "bad-shape");
  EXPECT_EQ(reason_of(with("id", nullptr)), "bad-shape");
  EXPECT_EQ(reason_of(with("schema", 1)), "bad-shape");
  EXPECT_EQ(reason_of(with("schema", "")), "bad-shape");
  EXPECT_EQ(reason_of(with("name", nullptr)), "bad-shape");
  EXPECT_EQ(reason_of(with("name", "")), "bad-shape");
  EXPECT_EQ(reason_of(with("table", "public.other")), "bad-shape");
  EXPECT_EQ(reason_of(with("table", 1)), "bad-shape");
  EXPECT_EQ(reason_of(with("op", "MERGE")), "bad-shape");
  EXPECT_EQ(reason_of(with("op", "update")), "bad-shape");
  EXPECT_EQ(reason_of(with("op", "")), "bad-shape");
  EXPECT_EQ(reason_of(with("op", 1)), "bad-shape");
  EXPECT_EQ(reason_of(with("new", nullptr)), "bad-shape");
  EXPECT_EQ(reason_of(with("new", json::object())), "bad-shape");
  EXPECT_EQ(reason_of(with("new", json::array({1}))), "bad-shape");
  EXPECT_EQ(reason_of(with("new", "row")), "bad-shape");
  EXPECT_EQ(reason_of(with("old", nullptr)), "bad-shape");
  EXPECT_EQ(reason_of(with("old", json::object())), "bad-shape");
  EXPECT_EQ(reason_of(with("old", 7)), "bad-shape");
}

TEST(ChangeParser, ReadsTheColumnsHoldingAJsonNull) {
  json c = change(1, "INSERT", {{"id", 1}, {"doc", nullptr}, {"odd \"name\"", nullptr}}, nullptr);
  EXPECT_TRUE(parse_message(c.dump())[0].json_nulls.empty());
  c["json_nulls"] = nullptr;
  EXPECT_TRUE(parse_message(c.dump())[0].json_nulls.empty());
  c["json_nulls"] = json::array({"doc", "odd \"name\""});
  EXPECT_EQ(parse_message(c.dump())[0].json_nulls, (std::vector<std::string>{"doc", "odd \"name\""}));
  c["json_nulls"] = "doc";
  EXPECT_EQ(reason_of(c), "bad-shape");
  c["json_nulls"] = json::array({"doc", 1});
  EXPECT_EQ(reason_of(c), "bad-shape");
  c["json_nulls"] = json::object();
  EXPECT_EQ(reason_of(c), "bad-shape");
}

TEST(ChangeParser, ReadsTheTextFormsAndRefusesBadOnes) {
  json c = change(1, "UPDATE", {{"id", 1}, {"h", {{"a", "1"}}}}, {{"id", 1}});
  c["new_text"] = {{"h", "\"a\"=>\"1\""}};
  c["old_text"] = nullptr;
  auto parsed_changes = parse_message(c.dump());
  ASSERT_EQ(parsed_changes.size(), 1u);
  EXPECT_EQ(parsed(parsed_changes[0].row()), json({{"id", 1}, {"h", "\"a\"=>\"1\""}}));
  EXPECT_EQ(parsed(parsed_changes[0].new_row), json({{"id", 1}, {"h", {{"a", "1"}}}}));
  EXPECT_EQ(parsed(parsed_changes[0].key()), json({{"id", 1}}));
  EXPECT_EQ(json::parse(parsed_changes[0].new_text), c["new_text"]);
  for (const json& bad : {json::array(), json(1), json("h"), json({{"h", 1}}), json({{"h", {{"a", 1}}}})}) {
    json b = c;
    b["new_text"] = bad;
    EXPECT_EQ(reason_of(b), "bad-shape") << bad.dump();
    b = c;
    b["old_text"] = bad;
    EXPECT_EQ(reason_of(b), "bad-shape") << bad.dump();
  }
}

TEST(ChangeParser, EachOperationNeedsItsRowOrKey) {
  EXPECT_EQ(reason_of(change(1, "INSERT", nullptr, nullptr)), "bad-shape");
  EXPECT_EQ(reason_of(change(1, "INSERT", json::object(), nullptr)), "bad-shape");
  EXPECT_EQ(reason_of(change(1, "UPDATE", {{"id", 1}}, nullptr)), "bad-shape");
  EXPECT_EQ(reason_of(change(1, "UPDATE", nullptr, {{"id", 1}})), "bad-shape");
  EXPECT_EQ(reason_of(change(1, "DELETE", nullptr, nullptr)), "bad-shape");
  EXPECT_EQ(reason_of(change(1, "DELETE", {{"id", 1}}, nullptr)), "bad-shape");
  EXPECT_EQ(reason_of(change(1, "TRUNCATE", nullptr, nullptr)), "(parsed)");
}

TEST(ChangeParser, ParseChangeRejectsANonObject) {
  try {
    parse_change(json::array());
    FAIL() << "parse_change accepted an array";
  } catch (const BadMessage& e) {
    EXPECT_EQ(e.reason(), "bad-shape");
  }
}

// Hostile input (issue 12): whatever a broker can carry is parsed or refused with a
// BadMessage, never another exception, a crash or a stall.

std::string insert_body(const std::string& new_row_text, const std::string& name = "\"users\"") {
  return R"({"id": 1, "schema": "public", "name": )" + name + R"(, "op": "INSERT", "new": )" +
         new_row_text + "}";
}

TEST(ChangeParserHostile, NumbersOfAnyLengthAreValuesNotErrors) {
  // PostgreSQL's numeric holds them; a double-based parser calls them an overflow.
  const std::string huge = "1" + std::string(400, '0');
  auto c = parse_message(insert_body(R"({"id": 1, "n": )" + huge + R"(, "e": 1e400, "m": -1E-400})"))[0];
  EXPECT_EQ(*c.new_row.find("n"), huge);
  EXPECT_EQ(*c.new_row.find("e"), "1e400");
  EXPECT_EQ(*c.new_row.find("m"), "-1E-400");
  // An id out of range is a bad shape, not a wrapped number.
  EXPECT_EQ(reason_of(std::string(R"({"id": 99999999999999999999, "schema": "public", "name": "u", "op": "TRUNCATE"})")),
            "bad-shape");
  EXPECT_EQ(reason_of(std::string(R"({"id": 1e3, "schema": "public", "name": "u", "op": "TRUNCATE"})")),
            "bad-shape");
}

TEST(ChangeParserHostile, MalformedNumbersAndLiteralsAreNotJson) {
  for (const char* v : {"01", "-", "1.", ".5", "1e", "1e+", "+1", "0x10", "NaN", "Infinity", "tru",
                        "nulll", "1 2", "\"a\" \"b\""}) {
    EXPECT_EQ(reason_of(insert_body(std::string(R"({"id": 1, "v": )") + v + "}")), "not-json") << v;
  }
}

TEST(ChangeParserHostile, DeepNestingIsRefusedWithoutRecursion) {
  const std::size_t deep = 1'000'000;
  EXPECT_EQ(reason_of(std::string(deep, '[') + std::string(deep, ']')), "not-json");
  EXPECT_EQ(reason_of(std::string(deep, '[')), "not-json");
  std::string nested;
  for (std::size_t i = 0; i < 100'000; ++i) nested += "{\"a\":";
  nested += "1" + std::string(100'000, '}');
  EXPECT_EQ(reason_of(insert_body(R"({"id": 1, "doc": )" + nested + "}")), "not-json");
  // Within the limit, a deep value is a value.
  std::string ok = std::string(900, '[') + std::string(900, ']');
  EXPECT_EQ(reason_of(insert_body(R"({"id": 1, "doc": )" + ok + "}")), "(parsed)");
}

TEST(ChangeParserHostile, InvalidUtf8AndBadEscapesAreNotJson) {
  for (const std::string& bad : {std::string("\"\xff\""), std::string("\"\xc0\xaf\""),
                                std::string("\"\xed\xa0\x80\""), std::string("\"\xf4\x90\x80\x80\""),
                                std::string("\"\xe2\x82\""), std::string("\"a\x01\""),
                                std::string(R"("\ud800")"), std::string(R"("\udc00x")"),
                                std::string(R"("\ud800\u0041")"), std::string(R"("\x41")"),
                                std::string(R"("\u12")")}) {
    EXPECT_EQ(reason_of(insert_body(R"({"id": 1, "t": )" + bad + "}")), "not-json") << bad;
    EXPECT_EQ(reason_of(insert_body(R"({"id": 1})", bad)), "not-json") << bad;
  }
  EXPECT_EQ(reason_of(insert_body(R"({"id": 1, "t": "\ud83d\ude00 \u00e9 é 😀"})")), "(parsed)");
}

TEST(ChangeParserHostile, ANulInANameIsABadShapeAndAValueIsLeftToTheReplica) {
  EXPECT_EQ(reason_of(insert_body(R"({"id": 1})", R"("users\u0000evil")")), "bad-shape");
  EXPECT_EQ(reason_of(std::string(R"({"id": 1, "schema": "pub\u0000lic", "name": "u", "op": "TRUNCATE"})")),
            "bad-shape");
  // PostgreSQL refuses \u0000 in a jsonb value: the replica's error isolates that change.
  EXPECT_EQ(reason_of(insert_body(R"({"id": 1, "t": "a\u0000b", "c\u0000": 1})")), "(parsed)");
}

TEST(ChangeParserHostile, StructureAfterAStringValueIsChecked) {
  // A string value followed by ':' looks like a member name to a lenient skip; the rest
  // of such a body must still be checked, not skipped.
  EXPECT_EQ(reason_of(insert_body(R"({"id": 1, "a": "x":  "y, "m": ["d]})")), "not-json");
  EXPECT_EQ(reason_of(std::string(R"({"id": 1, "schema": "s": "n", "name": "t", "op": "TRUNCATE"})")), "not-json");
  EXPECT_EQ(reason_of(std::string(R"(["a": 1])")), "not-json");
}

TEST(ChangeParserHostile, BadEscapesInMemberNamesAreNotJsonAtAnyDepth) {
  for (const std::string& name : {std::string(R"("k\x41")"), std::string(R"("\ud800")"), std::string(R"("\udc00x")"),
                                  std::string(R"("\u12")"), std::string("\"a\x01\""), std::string("\"\xff\"")}) {
    EXPECT_EQ(reason_of(insert_body(R"({"id": 1, )" + name + ": 1}")), "not-json") << name;
    EXPECT_EQ(reason_of(insert_body(R"({"id": 1, "doc": {"a": [{)" + name + ": 1}]}}")), "not-json") << name;
    std::string pack = "[";
    pack += insert_body(R"({"id": 1})");
    pack += ", {";
    pack += name;
    pack += ": 1}]";
    EXPECT_EQ(reason_of(pack), "not-json") << name;
  }
  auto c = parse_message("[" + insert_body(R"({"id": 1, "a\u0062c": 2, "doc": {"\u00e9": 1}})") + "]")[0];
  EXPECT_EQ(*c.new_row.find("abc"), "2");
  EXPECT_EQ(*c.new_row.find("doc"), R"({"\u00e9": 1})");
}

TEST(ChangeParserHostile, ABodyReadInPlaceIgnoresTheBytesAfterIt) {
  // A delivery's body is parsed where it is; the parser may read the bytes past its end,
  // which may be anything, closing brackets included.
  const std::string good = insert_body(R"({"id": 1, "n": 1.10})");
  auto reason_in_place = [](const std::string& body, char pad) -> std::string {
    std::string buffer = body + std::string(64, pad);
    try {
      auto changes = parse_message(std::string_view(buffer.data(), body.size()), buffer.size());
      EXPECT_EQ(*changes.at(0).new_row.find("n"), "1.10");
    } catch (const BadMessage& e) {
      return e.reason();
    }
    return "(parsed)";
  };
  for (char pad : {' ', '}', ']', '"', ',', '\0'}) {
    EXPECT_EQ(reason_in_place(good, pad), "(parsed)") << pad;
    EXPECT_EQ(reason_in_place("[" + good, pad), "not-json") << pad;
    EXPECT_EQ(reason_in_place("[[" + good + "]", pad), "not-json") << pad;
    EXPECT_EQ(reason_in_place(good.substr(0, good.size() - 1), pad), "not-json") << pad;
  }
}

TEST(ChangeParserHostile, EmptyAndWhitespaceBodiesAreNotJson) {
  EXPECT_EQ(reason_of(std::string()), "not-json");
  EXPECT_EQ(reason_of(std::string(" \n\t")), "not-json");
  EXPECT_EQ(reason_of(std::string(1, '\0')), "not-json");
}

TEST(ChangeParserHostile, ThousandsOfUnknownColumnsAreKeptAsReceived) {
  std::string row = R"({"id": 1)";
  for (int i = 0; i < 5000; ++i) row += ",\"c" + std::to_string(i) + "\": " + std::to_string(i);
  row += "}";
  auto c = parse_message(insert_body(row))[0];
  EXPECT_EQ(c.new_row.members().size(), 5001u);
}

TEST(ChangeParserHostile, DuplicateMembersKeepTheLastAsJsonbDoes) {
  auto c = parse_message(insert_body(R"({"id": 1, "id": 2})"))[0];
  EXPECT_EQ(*c.new_row.find("id"), "2");
}

TEST(ChangeParserHostile, TheBodyDecidesThePackSizeAndTheHeaderMustAgree) {
  EXPECT_NO_THROW(check_change_count({}, 3));
  EXPECT_NO_THROW(check_change_count({{"x-pgfanout-count", std::int64_t{3}}}, 3));
  EXPECT_NO_THROW(check_change_count({{"other", std::string("x")}}, 1));
  auto reason = [](const Headers& h, std::size_t n) -> std::string {
    try {
      check_change_count(h, n);
    } catch (const BadMessage& e) {
      return e.reason();
    }
    return "(accepted)";
  };
  EXPECT_EQ(reason({{"x-pgfanout-count", std::int64_t{2}}}, 3), "bad-shape");
  EXPECT_EQ(reason({{"x-pgfanout-count", std::int64_t{4'000'000'000'000'000'000}}}, 1), "bad-shape");
  EXPECT_EQ(reason({{"x-pgfanout-count", std::int64_t{-1}}}, 1), "bad-shape");
  EXPECT_EQ(reason({{"x-pgfanout-count", std::int64_t{0}}}, 1), "bad-shape");
  EXPECT_EQ(reason({{"x-pgfanout-count", std::string("3")}}, 3), "bad-shape");
  EXPECT_EQ(reason({{"x-pgfanout-count", std::int64_t{3}}, {"x-pgfanout-count", std::int64_t{2}}}, 3),
            "bad-shape");
}

}  // namespace
}  // namespace pgfanout
