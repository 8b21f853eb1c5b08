#include "pgfanout/change.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <vector>

namespace pgfanout {
namespace {

using json = nlohmann::json;

OutboxChange change(std::int64_t id, Op op, std::string new_row, std::string old_key) {
  OutboxChange c;
  c.id = id;
  c.schema = "public";
  c.table = "users";
  c.op = op;
  c.new_row = std::move(new_row);
  c.old_key = std::move(old_key);
  c.ts = "2026-11-21T05:18:39.123456+00:00";
  return c;
}

std::string body_of(const OutboxChange& c) { return message_body(std::span(&c, 1)); }

void expect_shape(const json& j) {
  ASSERT_TRUE(j.is_object()) << j.dump();
  std::set<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.insert(k);
  EXPECT_EQ(keys, (std::set<std::string>{"id", "table", "schema", "name", "op", "new", "old", "ts"}));
  EXPECT_TRUE(j["id"].is_number_integer());
  EXPECT_TRUE(j["table"].is_string());
  EXPECT_TRUE(j["schema"].is_string());
  EXPECT_TRUE(j["name"].is_string());
  EXPECT_TRUE(j["op"].is_string());
  EXPECT_TRUE(j["ts"].is_string());
}

TEST(Op, RoundTrips) {
  for (Op op : {Op::Insert, Op::Update, Op::Delete, Op::Truncate}) {
    EXPECT_EQ(parse_op(to_string(op)), op);
  }
  EXPECT_EQ(to_string(Op::Insert), "INSERT");
  EXPECT_EQ(to_string(Op::Truncate), "TRUNCATE");
  EXPECT_FALSE(parse_op("insert"));
  EXPECT_FALSE(parse_op(""));
  EXPECT_FALSE(parse_op("UPSERT"));
}

TEST(RoutingKey, SchemaDotTable) {
  EXPECT_EQ(routing_key("public", "users"), "public.users");
  EXPECT_EQ(routing_key("My Schema", "a.b"), "My Schema.a.b");
}

TEST(MessageBody, Insert) {
  json j = json::parse(body_of(change(1234, Op::Insert, R"({"id": 1, "name": "ana"})", "")));
  expect_shape(j);
  EXPECT_EQ(j, json::parse(R"({"id": 1234, "table": "public.users", "schema": "public",
      "name": "users", "op": "INSERT", "new": {"id": 1, "name": "ana"}, "old": null,
      "ts": "2026-11-21T05:18:39.123456+00:00"})"));
}

// json_nulls appears only when some column holds a JSON null, so every other message is
// exactly INTERFACE.md's shape.
TEST(MessageBody, JsonNullsOnlyWhenThereAreAny) {
  OutboxChange c = change(3, Op::Insert, R"({"id": 1, "doc": null, "note": null})", "");
  EXPECT_EQ(body_of(c).find("json_nulls"), std::string::npos);
  c.json_nulls = R"(["doc"])";
  json j = json::parse(body_of(c));
  EXPECT_EQ(j["json_nulls"], json::array({"doc"}));
  j.erase("json_nulls");
  expect_shape(j);
  EXPECT_EQ(j["new"]["doc"], nullptr);
}

TEST(MessageBody, Update) {
  json j = json::parse(body_of(change(7, Op::Update, R"({"id": 2, "name": "bo"})", R"({"id": 1})")));
  expect_shape(j);
  EXPECT_EQ(j["op"], "UPDATE");
  EXPECT_EQ(j["new"], json::parse(R"({"id": 2, "name": "bo"})"));
  EXPECT_EQ(j["old"], json::parse(R"({"id": 1})"));
  EXPECT_EQ(j["id"], 7);
}

TEST(MessageBody, Delete) {
  json j = json::parse(body_of(change(8, Op::Delete, "", R"({"a": 1, "b": "x"})")));
  expect_shape(j);
  EXPECT_EQ(j["op"], "DELETE");
  EXPECT_TRUE(j["new"].is_null());
  EXPECT_EQ(j["old"], json::parse(R"({"a": 1, "b": "x"})"));
}

TEST(MessageBody, Truncate) {
  json j = json::parse(body_of(change(9, Op::Truncate, "", "")));
  expect_shape(j);
  EXPECT_EQ(j["op"], "TRUNCATE");
  EXPECT_TRUE(j["new"].is_null());
  EXPECT_TRUE(j["old"].is_null());
  EXPECT_EQ(j["table"], "public.users");
}

TEST(MessageBody, LargeIdsKeepEveryDigit) {
  std::string body = body_of(change(9007199254740993, Op::Truncate, "", ""));
  EXPECT_NE(body.find("\"id\":9007199254740993"), std::string::npos) << body;
  EXPECT_EQ(json::parse(body)["id"].get<std::int64_t>(), 9007199254740993);
}

TEST(MessageBody, NamesAreEscaped) {
  OutboxChange c = change(1, Op::Truncate, "", "");
  c.schema = "we\"ird\\sch.ema";
  c.table = std::string("t\xC3\xA9st \xE2\x9C\x93.\x01\x1f\n\t\r\b\f\x7f", 19);
  std::string body = body_of(c);
  for (char ch : body) {
    EXPECT_GE(static_cast<unsigned char>(ch), 0x20) << "raw control character in " << body;
  }
  json j = json::parse(body);
  expect_shape(j);
  EXPECT_EQ(j["schema"].get<std::string>(), c.schema);
  EXPECT_EQ(j["name"].get<std::string>(), c.table);
  EXPECT_EQ(j["table"].get<std::string>(), c.schema + "." + c.table);
}

TEST(AppendJsonString, EscapesExactly) {
  std::string out;
  append_json_string(out, std::string("a\"b\\c\n\x01\x1f/\xC3\xA9", 11));
  EXPECT_EQ(out, "\"a\\\"b\\\\c\\n\\u0001\\u001f/\xC3\xA9\"");
  std::string empty;
  append_json_string(empty, "");
  EXPECT_EQ(empty, "\"\"");
}

TEST(MessageBody, RowJsonIsSplicedVerbatim) {
  // As PostgreSQL's jsonb::text prints it: numerics of any size and scale, strings with
  // escapes, nested arrays and objects, booleans and nulls.
  const std::string row =
      R"({"a": 1, "b": 123456789012345678901234567890.123456789000, "c": -0.5, "d": 1.0E-7, )"
      R"("e": "x\"y\\z\n\u0001é", "f": [1, [2, {"g": null}], "h"], "i": {"j": {"k": []}}, )"
      R"("l": true, "m": false, "n": null, "o": {}, "p": 0.10)";
  const std::string row_closed = row + "}";
  const std::string key = R"({"a": 1, "b": 123456789012345678901234567890.123456789000})";
  std::string body = body_of(change(5, Op::Update, row_closed, key));
  EXPECT_NE(body.find(",\"new\":" + row_closed + ","), std::string::npos) << body;
  EXPECT_NE(body.find(",\"old\":" + key + ","), std::string::npos) << body;
  json j = json::parse(body);
  expect_shape(j);
  EXPECT_EQ(j["new"], json::parse(row_closed));
  EXPECT_EQ(j["new"]["e"], "x\"y\\z\n\x01\xC3\xA9");
  EXPECT_TRUE(j["new"]["n"].is_null());
  EXPECT_EQ(j["new"]["f"][1][1]["g"], nullptr);
}

TEST(MessageBody, OneChangeIsAnObjectAPackIsAnArrayInOrder) {
  std::vector<OutboxChange> pack{change(10, Op::Insert, R"({"id": 1})", ""),
                                 change(11, Op::Update, R"({"id": 1, "v": 2})", R"({"id": 1})"),
                                 change(12, Op::Delete, "", R"({"id": 1})")};
  json single = json::parse(message_body(std::span(pack.data(), 1)));
  EXPECT_TRUE(single.is_object());
  json array = json::parse(message_body(pack));
  ASSERT_TRUE(array.is_array());
  ASSERT_EQ(array.size(), 3u);
  for (std::size_t i = 0; i < pack.size(); ++i) {
    expect_shape(array[i]);
    EXPECT_EQ(array[i], json::parse(body_of(pack[i])));
    EXPECT_EQ(array[i]["id"], pack[i].id);
  }
  EXPECT_EQ(array[0]["op"], "INSERT");
  EXPECT_EQ(array[1]["op"], "UPDATE");
  EXPECT_EQ(array[2]["op"], "DELETE");
}

}  // namespace
}  // namespace pgfanout
