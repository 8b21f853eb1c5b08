#include "apply_plan.hpp"
#include "change_parser.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgfanout {
namespace {

using nlohmann::json;

TableInfo table(std::string schema, std::string name, std::vector<std::string> columns,
                std::vector<std::string> keys) {
  TableInfo t{std::move(schema), std::move(name), std::move(columns), std::move(keys), {}, {}, false};
  for (const auto& c : t.columns) t.types[c] = c == "id" || c.ends_with("_id") ? "bigint" : "text";
  for (const auto& c : t.key_columns) t.types.emplace(c, "bigint");
  return t;
}

// Changes and their tables, kept at stable addresses for plan_steps' pointers.
class Batch {
 public:
  Batch& insert(const TableInfo& t, const json& row) { return add(t, Op::Insert, row, {}); }
  Batch& insert_raw(const TableInfo& t, std::string_view row) {
    return add(t, Op::Insert, RawObject::from_text(row), {});
  }
  Batch& update(const TableInfo& t, const json& old_key, const json& row) {
    return add(t, Op::Update, row, old_key);
  }
  Batch& remove(const TableInfo& t, const json& old_key) { return add(t, Op::Delete, {}, old_key); }
  Batch& truncate(const TableInfo& t) { return add(t, Op::Truncate, {}, {}); }

  std::vector<ApplyStep> plan() const { return plan_steps(pointers_, tables_); }
  ParsedChange& last() { return changes_.back(); }

 private:
  Batch& add(const TableInfo& t, Op op, RawObject row, RawObject old_key) {
    ParsedChange& c = changes_.emplace_back();
    c.id = static_cast<std::int64_t>(changes_.size());
    c.schema = t.schema;
    c.name = t.name;
    c.op = op;
    c.new_row = std::move(row);
    c.old_key = std::move(old_key);
    pointers_.push_back(&c);
    tables_.push_back(&t);
    return *this;
  }
  std::deque<ParsedChange> changes_;
  std::vector<const ParsedChange*> pointers_;
  std::vector<const TableInfo*> tables_;
};

std::string kind_name(StepKind k) {
  switch (k) {
    case StepKind::Upsert:
      return "Upsert";
    case StepKind::Delete:
      return "Delete";
    case StepKind::Truncate:
      return "Truncate";
  }
  return "?";
}

// A step as "Kind table [row, row] changes(0,1)", which GoogleTest can compare and print.
std::string describe(const ApplyStep& s) {
  std::string out = kind_name(s.kind) + " " + s.table->name + " [";
  for (std::size_t i = 0; i < s.rows.size(); ++i) {
    if (i) out += ", ";
    out += s.rows[i]->dump();
  }
  out += "] changes(";
  for (std::size_t i = 0; i < s.changes.size(); ++i) {
    if (i) out += ",";
    out += std::to_string(s.changes[i]);
  }
  return out + ")";
}

std::vector<std::string> describe(const std::vector<ApplyStep>& steps) {
  std::vector<std::string> out;
  for (const auto& s : steps) out.push_back(describe(s));
  return out;
}

const TableInfo users = table("public", "users", {"id", "name", "age"}, {"id"});
const TableInfo orders = table("public", "orders", {"id", "total"}, {"id"});
const TableInfo lines =
    table("shop", "lines", {"order_id", "line", "sku", "qty"}, {"order_id", "line"});

TEST(ApplyPlan, SplitsRunsByTableAndKindInOrder) {
  Batch b;
  b.insert(users, {{"id", 1}, {"name", "a"}})
      .insert(users, {{"id", 2}, {"name", "b"}})
      .update(users, {{"id", 2}}, {{"id", 2}, {"name", "b2"}})
      .remove(users, {{"id", 1}})
      .remove(users, {{"id", 3}})
      .insert(orders, {{"id", 10}, {"total", 5}})
      .insert(users, {{"id", 4}})
      .truncate(users)
      .truncate(users)
      .insert(users, {{"id", 5}});
  EXPECT_EQ(describe(b.plan()),
            (std::vector<std::string>{
                R"(Upsert users [{"id":1,"name":"a"}, {"id":2,"name":"b2"}] changes(0,1,2))",
                R"(Delete users [{"id":1}, {"id":3}] changes(3,4))",
                R"(Upsert orders [{"id":10,"total":5}] changes(5))",
                R"(Upsert users [{"id":4}] changes(6))",
                R"(Truncate users [] changes(7,8))",
                R"(Upsert users [{"id":5}] changes(9))",
            }));
}

// jsonb_to_recordset reads JSON null as SQL NULL; rows whose change lists json_nulls
// carry the positions of those columns, and the statement writes 'null' there. Steps
// without any stay exactly as before; a listed column that is not json/jsonb on the
// replica (or not written) is ignored.
TEST(ApplyPlan, JsonNullsAreWrittenAsJsonNull) {
  TableInfo docs = table("public", "docs", {"id", "note", "doc", "extra"}, {"id"});
  docs.types["doc"] = "jsonb";
  docs.types["extra"] = "public.\"my json\"";
  docs.json_columns = {"doc", "extra"};
  std::vector<std::string> doc_null{"doc"}, both{"doc", "extra", "note", "missing"};
  RawObject plain = RawObject::from_text(R"({"id":1,"note":"a","doc":{"k":1}})");
  RawObject one = RawObject::from_text(R"({"id":2,"note":null,"doc":null})");
  RawObject two = RawObject::from_text(R"({"id":3,"note":null,"doc":null,"extra":null})");
  RawObject superseded = RawObject::from_text(R"({"id":3,"doc":null})");
  ApplyStep step{&docs, StepKind::Upsert, {&plain, &superseded, &one, &two}, {0, 1, 2, 3}, {}, {nullptr, &doc_null, &doc_null, &both}, {}};
  EXPECT_EQ(
      step_sql(step),
      R"(INSERT INTO "public"."docs" ("id", "note", "doc", "extra") OVERRIDING SYSTEM VALUE SELECT k."id", k."note", )"
      R"(CASE WHEN 2 = ANY (k."pgfanout.json_nulls") THEN 'null'::jsonb ELSE k."doc" END, )"
      R"(CASE WHEN 3 = ANY (k."pgfanout.json_nulls") THEN 'null'::public."my json" ELSE k."extra" END )"
      R"(FROM jsonb_to_recordset($1::jsonb) AS k("id" bigint, "note" text, "doc" jsonb, "extra" public."my json", "pgfanout.json_nulls" int[]) )"
      R"(ON CONFLICT ("id") DO UPDATE SET "note" = EXCLUDED."note", "doc" = EXCLUDED."doc", "extra" = EXCLUDED."extra")");
  EXPECT_EQ(rows_json(step),
            R"([{"id":1,"note":"a","doc":{"k":1},"pgfanout.json_nulls":null},{"id":3,"doc":null,"pgfanout.json_nulls":[2]},)"
            R"({"id":2,"note":null,"doc":null,"pgfanout.json_nulls":[2]},)"
            R"({"id":3,"note":null,"doc":null,"extra":null,"pgfanout.json_nulls":[2,3]}])");

  // A batch past what jsonb holds is read as json.
  EXPECT_NE(step_sql(step, 300u << 20).find("FROM json_to_recordset($1::json) AS k("), std::string::npos);

  ApplyStep no_nulls{&docs, StepKind::Upsert, {&plain}, {0}, {}, {nullptr}, {}};
  EXPECT_EQ(step_sql(no_nulls).find("pgfanout.json_nulls"), std::string::npos);
  EXPECT_EQ(rows_json(no_nulls), R"([{"id":1,"note":"a","doc":{"k":1}}])");
}

// A column's text form (README, "Message format") replaces its JSON form as a JSON
// string, which input functions read; json/jsonb columns get the string's contents cast,
// by position, as JSON nulls are. Text forms of columns the row lacks are ignored; the
// key's text forms are what it is matched with.
TEST(ApplyPlan, TextFormsReplaceJsonFormsAndJsonColumnsCastTheirContents) {
  TableInfo docs = table("public", "docs", {"id", "h", "j", "b"}, {"id"});
  docs.types["h"] = "public.hstore";
  docs.types["j"] = "json";
  docs.types["b"] = "jsonb";
  docs.json_columns = {"j", "b"};
  auto changes = parse_message(
      R"([{"id":1,"schema":"public","name":"docs","op":"INSERT","new":{"id":[1],"h":{"a":"1"},"j":{"a":2},"b":null},)"
      R"("new_text":{"h":"\"a\"=>\"1\"","j":"{\"a\":1, \"a\":2}","zz":"x","id":"[0:0]={1}"},"json_nulls":["b"]},)"
      R"({"id":2,"schema":"public","name":"docs","op":"UPDATE","new":{"id":[2],"h":null,"j":null,"b":{}},)"
      R"("old":{"id":[2]},"old_text":{"id":"[5:5]={2}"}}])");
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].texts, (std::vector<std::string>{"h", "j", "id"})) << "in the order of new_text";
  EXPECT_EQ(changes[0].new_row.dump().find("=>"), std::string::npos) << "new keeps its JSON form";
  std::vector<const ParsedChange*> pointers{&changes[0], &changes[1]};
  auto steps = plan_steps(pointers, {&docs, &docs});
  ASSERT_EQ(steps.size(), 3u) << "the UPDATE's key text differs from its new row's: delete, then upsert";
  EXPECT_EQ(steps[0].kind, StepKind::Upsert);
  EXPECT_EQ(
      step_sql(steps[0]),
      R"(INSERT INTO "public"."docs" ("id", "h", "j", "b") OVERRIDING SYSTEM VALUE SELECT k."id", k."h", )"
      R"(CASE WHEN 2 = ANY (k."pgfanout.json_texts") THEN (k."j" #>> '{}')::json ELSE k."j" END, )"
      R"(CASE WHEN 3 = ANY (k."pgfanout.json_nulls") THEN 'null'::jsonb ELSE k."b" END )"
      R"(FROM jsonb_to_recordset($1::jsonb) AS k("id" bigint, "h" public.hstore, "j" json, "b" jsonb, )"
      R"("pgfanout.json_nulls" int[], "pgfanout.json_texts" int[]) )"
      R"(ON CONFLICT ("id") DO UPDATE SET "h" = EXCLUDED."h", "j" = EXCLUDED."j", "b" = EXCLUDED."b")");
  EXPECT_EQ(rows_json(steps[0]),
            R"([{"id":"[0:0]={1}","h":"\"a\"=>\"1\"","j":"{\"a\":1, \"a\":2}","b":null,)"
            R"("pgfanout.json_nulls":[3],"pgfanout.json_texts":[2]}])");
  EXPECT_EQ(steps[1].kind, StepKind::Delete);
  EXPECT_EQ(rows_json(steps[1]), R"([{"id":"[5:5]={2}"}])");
  EXPECT_EQ(rows_json(steps[2]), R"([{"id":[2],"h":null,"j":null,"b":{}}])");
}

TEST(ApplyPlan, KeepingTheLastVersionOfAKeyKeepsItsJsonNulls) {
  TableInfo docs = table("public", "docs", {"id", "doc"}, {"id"});
  docs.types["doc"] = "jsonb";
  docs.json_columns = {"doc"};
  Batch b;
  b.insert_raw(docs, R"({"id":1,"doc":null})").insert_raw(docs, R"({"id":2,"doc":null})");
  b.last().json_nulls = {"doc"};
  b.insert_raw(docs, R"({"id":1,"doc":{"a":1}})");
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(rows_json(steps[0]),
            R"([{"id":2,"doc":null,"pgfanout.json_nulls":[1]},{"id":1,"doc":{"a":1},"pgfanout.json_nulls":null}])");
}

TEST(ApplyPlan, KeyChangingUpdateBecomesDeleteThenUpsert) {
  Batch b;
  b.insert(users, {{"id", 1}, {"name", "a"}})
      .update(users, {{"id", 1}}, {{"id", 2}, {"name", "a"}})
      .update(users, {{"id", 2}}, {{"id", 2}, {"name", "same key"}});
  EXPECT_EQ(describe(b.plan()), (std::vector<std::string>{
                                    R"(Upsert users [{"id":1,"name":"a"}] changes(0))",
                                    R"(Delete users [{"id":1}] changes(1))",
                                    R"(Upsert users [{"id":2,"name":"same key"}] changes(1,2))",
                                }));
}

TEST(ApplyPlan, KeyChangedLooksAtEveryKeyColumn) {
  auto update = [](const json& old_key, const json& row) {
    ParsedChange c;
    c.op = Op::Update;
    c.old_key = old_key;
    c.new_row = row;
    return c;
  };
  EXPECT_FALSE(key_changed(update({{"id", 1}}, {{"id", 1}, {"name", "x"}})));
  EXPECT_TRUE(key_changed(update({{"id", 1}}, {{"id", 2}, {"name", "x"}})));
  EXPECT_TRUE(key_changed(update({{"id", 1}}, {{"id", "1"}})));
  EXPECT_TRUE(key_changed(update({{"id", 1}}, {{"name", "key missing in new"}})));
  EXPECT_FALSE(key_changed(
      update({{"order_id", 1}, {"line", 2}}, {{"line", 2}, {"order_id", 1}, {"qty", 3}})));
  EXPECT_TRUE(key_changed(update({{"order_id", 1}, {"line", 2}}, {{"order_id", 1}, {"line", 3}})));
  EXPECT_TRUE(key_changed(update({{"order_id", 1}, {"line", 2}}, {{"order_id", 9}, {"line", 2}})));
  ParsedChange insert;
  insert.op = Op::Insert;
  insert.new_row = json{{"id", 1}};
  EXPECT_FALSE(key_changed(insert));
  ParsedChange del;
  del.op = Op::Delete;
  del.old_key = json{{"id", 1}};
  EXPECT_FALSE(key_changed(del));
}

TEST(ApplyPlan, KeepsTheLastVersionOfEachKeyInARun) {
  Batch b;
  b.insert(users, {{"id", 1}, {"name", "v1"}})
      .update(users, {{"id", 1}}, {{"id", 1}, {"name", "v2"}})
      .insert(users, {{"id", 2}, {"name", "other"}})
      .update(users, {{"id", 1}}, {{"id", 1}, {"name", "v3"}})
      .remove(users, {{"id", 5}})
      .remove(users, {{"id", 5}})
      .remove(users, {{"id", 6}});
  EXPECT_EQ(describe(b.plan()),
            (std::vector<std::string>{
                R"(Upsert users [{"id":2,"name":"other"}, {"id":1,"name":"v3"}] changes(0,1,2,3))",
                R"(Delete users [{"id":5}, {"id":6}] changes(4,5,6))",
            }));
}

TEST(ApplyPlan, DoesNotMergeAcrossRunsOrTables) {
  // The same key in two runs keeps both versions: the Delete between them matters.
  Batch b;
  b.insert(users, {{"id", 1}, {"name", "first"}})
      .remove(users, {{"id", 1}})
      .insert(users, {{"id", 1}, {"name", "second"}})
      .insert(orders, {{"id", 1}, {"total", 1}});
  EXPECT_EQ(describe(b.plan()), (std::vector<std::string>{
                                    R"(Upsert users [{"id":1,"name":"first"}] changes(0))",
                                    R"(Delete users [{"id":1}] changes(1))",
                                    R"(Upsert users [{"id":1,"name":"second"}] changes(2))",
                                    R"(Upsert orders [{"id":1,"total":1}] changes(3))",
                                }));
}

TEST(ApplyPlan, CompositeKeysMergeOnlyWhenEveryPartIsEqual) {
  Batch b;
  b.insert(lines, {{"order_id", 1}, {"line", 1}, {"qty", 1}})
      .insert(lines, {{"order_id", 1}, {"line", 2}, {"qty", 1}})
      .insert(lines, {{"order_id", 2}, {"line", 1}, {"qty", 1}})
      .update(lines, {{"order_id", 1}, {"line", 2}}, {{"line", 2}, {"order_id", 1}, {"qty", 9}})
      .update(lines, {{"order_id", 2}, {"line", 1}}, {{"order_id", 2}, {"line", 7}, {"qty", 1}});
  EXPECT_EQ(
      describe(b.plan()),
      (std::vector<std::string>{
          R"(Upsert lines [{"line":1,"order_id":1,"qty":1}, {"line":1,"order_id":2,"qty":1}, {"line":2,"order_id":1,"qty":9}] changes(0,1,2,3))",
          R"(Delete lines [{"line":1,"order_id":2}] changes(4))",
          R"(Upsert lines [{"line":7,"order_id":2,"qty":1}] changes(4))",
      }));
}

TEST(ApplyPlan, RowsWithoutTheirKeyAreNeverMerged) {
  Batch b;
  b.insert(users, {{"name", "no key"}}).insert(users, {{"name", "no key"}});
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].rows.size(), 2u);
}

TEST(ApplyPlan, UpsertSqlWritesOnlyThePresentColumnsInTableOrder) {
  Batch b;
  b.insert(users, {{"name", "a"}, {"id", 1}, {"not_a_column", true}}).insert(users, {{"id", 2}});
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(
      step_sql(steps[0]),
      R"(INSERT INTO "public"."users" ("id", "name") OVERRIDING SYSTEM VALUE SELECT k."id", k."name" )"
      R"(FROM jsonb_to_recordset($1::jsonb) AS k("id" bigint, "name" text) )"
      R"(ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name")");
  EXPECT_EQ(rows_json(steps[0]), R"([{"id":1,"name":"a","not_a_column":true},{"id":2}])");
}

TEST(ApplyPlan, UpsertSqlOfEveryColumn) {
  Batch b;
  b.insert(lines, {{"order_id", 1}, {"line", 1}, {"sku", "x"}, {"qty", 2}});
  EXPECT_EQ(
      step_sql(b.plan()[0]),
      R"(INSERT INTO "shop"."lines" ("order_id", "line", "sku", "qty") OVERRIDING SYSTEM VALUE )"
      R"(SELECT k."order_id", k."line", k."sku", k."qty" FROM jsonb_to_recordset($1::jsonb) )"
      R"(AS k("order_id" bigint, "line" text, "sku" text, "qty" text) )"
      R"(ON CONFLICT ("order_id", "line") DO UPDATE SET "sku" = EXCLUDED."sku", "qty" = EXCLUDED."qty")");
}

TEST(ApplyPlan, GeneratedColumnsAreNotWritten) {
  // The catalog leaves generated columns out of `columns`; the row still carries them.
  const TableInfo t = table("public", "g", {"id", "v"}, {"id"});
  Batch b;
  b.insert(t, {{"id", 1}, {"v", "x"}, {"doubled", 2}});
  EXPECT_EQ(step_sql(b.plan()[0]).find("doubled"), std::string::npos);
}

TEST(ApplyPlan, AllKeyTableDoesNothingOnConflict) {
  const TableInfo pairs = table("public", "pairs", {"a", "b"}, {"a", "b"});
  Batch b;
  b.insert(pairs, {{"a", 1}, {"b", 2}});
  EXPECT_EQ(
      step_sql(b.plan()[0]),
      R"(INSERT INTO "public"."pairs" ("a", "b") OVERRIDING SYSTEM VALUE SELECT k."a", k."b" )"
      R"(FROM jsonb_to_recordset($1::jsonb) AS k("a" text, "b" text) ON CONFLICT ("a", "b") DO NOTHING)");
  // So does a row that carries only its key.
  Batch only_key;
  only_key.insert(users, {{"id", 1}});
  EXPECT_TRUE(step_sql(only_key.plan()[0]).ends_with("ON CONFLICT (\"id\") DO NOTHING"));
}

TEST(ApplyPlan, DeleteSqlMatchesEveryKeyColumn) {
  Batch b;
  b.remove(lines, {{"order_id", 1}, {"line", 2}});
  EXPECT_EQ(
      step_sql(b.plan()[0]),
      R"(DELETE FROM "shop"."lines" AS t USING jsonb_to_recordset($1::jsonb) AS k("order_id" bigint, "line" text) )"
      R"(WHERE t."order_id" = k."order_id" AND t."line" = k."line")");
  EXPECT_EQ(rows_json(b.plan()[0]), R"([{"line":2,"order_id":1}])");
}

TEST(ApplyPlan, TruncateSql) {
  Batch b;
  b.truncate(users);
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(step_sql(steps[0]), R"(TRUNCATE ONLY "public"."users")");
  EXPECT_TRUE(steps[0].rows.empty());
}

// TRUNCATE a, b on the primary arrives as one TRUNCATE change per table; tables linked by
// a foreign key can only be truncated in one statement, so consecutive TRUNCATEs are one
// step, each table named once, in order. A partitioned table cannot be named with ONLY.
TEST(ApplyPlan, ConsecutiveTruncatesOfAnyTablesAreOneStatement) {
  TableInfo parted = table("public", "parted", {"id"}, {"id"});
  parted.partitioned = true;
  Batch b;
  b.insert(users, {{"id", 1}})
      .truncate(users)
      .truncate(orders)
      .truncate(users)
      .truncate(parted)
      .insert(orders, {{"id", 2}})
      .truncate(lines);
  auto steps = b.plan();
  EXPECT_EQ(describe(steps), (std::vector<std::string>{
                                 R"(Upsert users [{"id":1}] changes(0))",
                                 R"(Truncate users [] changes(1,2,3,4))",
                                 R"(Upsert orders [{"id":2}] changes(5))",
                                 R"(Truncate lines [] changes(6))",
                             }));
  ASSERT_EQ(steps.size(), 4u);
  EXPECT_EQ(step_sql(steps[1]),
            R"(TRUNCATE ONLY "public"."users", ONLY "public"."orders", "public"."parted")");
  EXPECT_EQ(step_sql(steps[3]), R"(TRUNCATE ONLY "shop"."lines")");
}

TEST(ApplyPlan, QuotesIdentifiersContainingQuotes) {
  const TableInfo odd =
      table("Sales \"Q\"", "odd.Name\"; DROP TABLE x; --", {"I\"d", "va\"l ue"}, {"I\"d"});
  EXPECT_EQ(odd.qualified(), R"("Sales ""Q"""."odd.Name""; DROP TABLE x; --")");
  Batch b;
  b.insert(odd, {{"I\"d", 1}, {"va\"l ue", "x"}}).remove(odd, {{"I\"d", 1}}).truncate(odd);
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(
      step_sql(steps[0]),
      R"(INSERT INTO "Sales ""Q"""."odd.Name""; DROP TABLE x; --" ("I""d", "va""l ue") OVERRIDING SYSTEM VALUE )"
      R"(SELECT k."I""d", k."va""l ue" FROM jsonb_to_recordset($1::jsonb) AS k("I""d" text, "va""l ue" text) )"
      R"(ON CONFLICT ("I""d") DO UPDATE SET "va""l ue" = EXCLUDED."va""l ue")");
  EXPECT_EQ(
      step_sql(steps[1]),
      R"(DELETE FROM "Sales ""Q"""."odd.Name""; DROP TABLE x; --" AS t USING )"
      R"(jsonb_to_recordset($1::jsonb) AS k("I""d" text) )"
      R"(WHERE t."I""d" = k."I""d")");
  EXPECT_EQ(step_sql(steps[2]), R"(TRUNCATE ONLY "Sales ""Q"""."odd.Name""; DROP TABLE x; --")");
}

TEST(ApplyPlan, ColumnNamesFromTheMessageNeverReachTheSql) {
  // Only catalog names are written; a JSON key that is not a column is just data in $1.
  Batch b;
  b.insert(users, {{"id", 1}, {"name\" = 1; DROP TABLE users; --", "x"}});
  std::string sql = step_sql(b.plan()[0]);
  EXPECT_EQ(sql.find("DROP"), std::string::npos) << sql;
}

TEST(ApplyPlan, RowsJsonKeepsStringsExact) {
  Batch b;
  b.insert(users, {{"id", 1}, {"name", "quote \" backslash \\ newline \n tab \t é 😀 \x01"}});
  auto steps = b.plan();
  EXPECT_EQ(json::parse(rows_json(steps[0]))[0]["name"],
            "quote \" backslash \\ newline \n tab \t é 😀 \x01");
}

// Rows as received: numbers keep their text, keys that differ only beyond a double's
// precision stay apart, and equal texts merge.
TEST(ApplyPlan, RowsKeepTheirTextAndExactKeys) {
  const TableInfo t = table("public", "n", {"k", "v"}, {"k"});
  Batch b;
  b.insert_raw(t, R"({"k": 0.1000000000000000001, "v": 1.10})")
      .insert_raw(t, R"({"k": 0.1000000000000000002, "v": 2})")
      .insert_raw(t, R"({"k": 0.1000000000000000001, "v": 123456789012345678901234567890})");
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(rows_json(steps[0]),
            R"([{"k": 0.1000000000000000002, "v": 2},)"
            R"({"k": 0.1000000000000000001, "v": 123456789012345678901234567890}])");
}

TEST(ApplyPlan, KeyChangeIsSeenBeyondADoublesPrecision) {
  ParsedChange c;
  c.op = Op::Update;
  c.old_key = RawObject::from_text(R"({"k": 12345678901234567890123})");
  c.new_row = RawObject::from_text(R"({"k": 12345678901234567890124, "v": 1})");
  EXPECT_TRUE(key_changed(c));
  c.new_row = RawObject::from_text(R"({"v": 1, "k": 12345678901234567890123})");
  EXPECT_FALSE(key_changed(c));
}

TEST(ApplyPlan, EmptyBatchHasNoSteps) {
  Batch b;
  EXPECT_TRUE(b.plan().empty());
}

// ---- COPY of new rows (BatchApplier::copy_step)

std::optional<std::string> copy_field(std::string_view token) {
  std::string out;
  if (!json_string_to_copy(token, out)) return std::nullopt;
  return out;
}

TEST(CopyText, JsonStringsBecomeCopyFields) {
  EXPECT_EQ(copy_field(R"("plain é")"), "plain é");
  EXPECT_EQ(copy_field(R"("")"), "");
  // JSON's escapes of these are COPY's too; a quote and a solidus need none in COPY.
  EXPECT_EQ(copy_field(R"("a\\b\nc\rd\te\bf\fg\"h\/i")"), R"(a\\b\nc\rd\te\bf\fg"h/i)");
  // \u of ASCII: control characters and a backslash in octal (three digits, whatever
  // follows), the rest as themselves.
  EXPECT_EQ(copy_field(R"("\u00011\u001f\u005c\u0009\u0041")"), R"(\0011\037\134\011A)");
}

TEST(CopyText, WhatPostgreSQLWouldRefuseIsNotCopied) {
  // \u of anything but ASCII too: jsonb_in converts it to the server's encoding, or
  // refuses it (SQL_ASCII); to_jsonb never writes one.
  for (std::string_view bad : {R"("\u0000")", R"("\u00e9")", R"("\ud83d\ude00")", R"("\ude00")", R"("\ud83d")",
                               R"("\x41")", R"("\u12")", R"("\u12G4")", R"("a\")",
                               "\"tab\there\"", R"(plain)", R"(")", R"("a"b")"}) {
    EXPECT_EQ(copy_field(bad), std::nullopt) << bad;
  }
}

TableInfo typed_table() {
  TableInfo t = table("public", "c", {"id", "t", "n", "ok", "jb", "js", "later"}, {"id"});
  t.types["n"] = "numeric";
  t.types["ok"] = "boolean";
  t.types["jb"] = "jsonb";
  t.types["js"] = "json";
  t.json_columns = {"jb", "js"};
  t.copyable = true;
  return t;
}

std::optional<std::string> copied(const ApplyStep& step) {
  std::string out;
  if (!copy_rows(step, upsert_columns(step), out)) return std::nullopt;
  return out;
}

TEST(CopyText, RowsBecomeLinesOfFieldsInTheStepsColumns) {
  const TableInfo t = typed_table();
  Batch b;
  b.insert_raw(t, R"({"id": 1, "t": "a\tb\\", "n": 1.10, "ok": true, "jb": {"k": "x\ny", "n": null}, "js": null})")
      .insert_raw(t, R"({"jb": null, "ok": false, "n": -0, "t": null, "id": 2})")  // another order
      .insert_raw(t, R"({"id": 3, "t": "first", "t": "last", "nobody": 1})")       // the last name wins
      .insert_raw(t, "{\"id\": 4, \"jb\": [1,\n\"\\\\\"], \"js\": true}");
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_TRUE(steps[0].inserts_only);
  EXPECT_EQ(upsert_columns(steps[0]), (std::vector<std::string>{"id", "t", "n", "ok", "jb", "js"}));
  EXPECT_EQ(copy_target(steps[0], upsert_columns(steps[0])),
            R"("public"."c" ("id", "t", "n", "ok", "jb", "js"))");
  EXPECT_EQ(copied(steps[0]),
            "1\ta\\tb\\\\\t1.10\ttrue\t{\"k\": \"x\\\\ny\", \"n\": null}\t\\N\n"
            "2\t\\N\t-0\tfalse\t\\N\t\\N\n"
            "3\tlast\t\\N\t\\N\t\\N\t\\N\n"
            "4\t\\N\t\\N\t\\N\t[1,\\n\"\\\\\\\\\"]\ttrue\n");
}

TEST(CopyText, JsonNullsAndTextFormsOfJsonColumns) {
  const TableInfo t = typed_table();
  Batch b;
  b.insert_raw(t, R"({"id": 1, "jb": null, "js": null})");
  b.last().json_nulls = {"jb"};
  b.insert_raw(t, R"({"id": 2, "jb": "{\"b\":1,  \"a\":2}", "js": "[1, \"\\u00e9\"]"})");
  b.last().texts = {"jb", "js"};
  b.last().json_nulls.clear();
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(copied(steps[0]), "1\tnull\t\\N\n"
                              "2\t{\"b\":1,  \"a\":2}\t[1, \"\\\\u00e9\"]\n");
}

TEST(CopyText, ValuesWithoutACopyFormHereLeaveTheStepToTheStatement) {
  TableInfo t = typed_table();
  t.types["f"] = "double precision";
  t.columns.push_back("f");
  for (std::string_view row : {R"({"id": 1, "t": [1, 2]})",      // an array for a text column
                               R"({"id": 1, "t": {"a": 1}})",     // an object, a composite maybe
                               R"({"id": 1e2, "t": "x"})",        // numeric prints no exponent
                               R"({"id": 1, "t": "\u0000"})",
                               R"({"id": 1, "js": {"b": 1}})",    // json keeps numeric's text
                               R"({"id": 1, "js": "x"})",
                               R"({"id": 1, "js": 1e2})",
                               R"({"id": 1, "t": -0.0})",         // numeric drops the sign
                               R"({"id": 1, "f": -0})",
                               R"({"id": 1, "f": 1e1000})",       // past what numeric_in takes
                               R"({"id": 1, "nobody": [1]})",     // jsonb_in reads what the
                               R"({"id": 1, "nobody": "\u0000"})",  // table lacks; COPY skips it
                               R"({"id": 1, "nobody": 1e99999})"}) {
    Batch b;
    b.insert_raw(t, row);
    auto steps = b.plan();
    ASSERT_EQ(steps.size(), 1u);
    EXPECT_EQ(copied(steps[0]), std::nullopt) << row;
  }
}

TEST(CopyText, ExponentsGoToColumnsWhoseInputReadsThemAsNumericDoes) {
  TableInfo t = typed_table();
  t.types["f"] = "double precision";
  t.columns.push_back("f");
  Batch b;
  b.insert_raw(t, R"({"id": 1, "n": 1.5e+3, "f": 1e+308})");
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(copied(steps[0]), "1\t1.5e+3\t1e+308\n");
}

// An upsert cannot set a GENERATED ALWAYS identity column (only to DEFAULT): its INSERT
// writes the primary's value, its DO UPDATE leaves it.
TEST(ApplyPlan, UpsertLeavesAnIdentityGeneratedAlwaysAsItIs) {
  TableInfo t = table("public", "g", {"id", "seq", "v"}, {"id"});
  t.identity_always = {"seq"};
  Batch b;
  b.insert(t, {{"id", 1}, {"seq", 5}, {"v", "a"}});
  std::string sql = step_sql(b.plan().at(0));
  EXPECT_NE(sql.find(R"(INSERT INTO "public"."g" ("id", "seq", "v") OVERRIDING SYSTEM VALUE)"), std::string::npos) << sql;
  EXPECT_NE(sql.find(R"(DO UPDATE SET "v" = EXCLUDED."v")"), std::string::npos) << sql;
  EXPECT_EQ(sql.find(R"("seq" = EXCLUDED)"), std::string::npos) << sql;
}

TEST(CopyText, NumbersThatReadAlikeAndJsonNullListsAsTheStatementReadsThem) {
  TableInfo t = typed_table();
  Batch b;
  b.insert_raw(t, R"({"id": -0, "n": -0.0, "t": 12345678901234567890.5, "jb": -0, "js": false})");
  b.insert_raw(t, R"({"id": 2, "jb": 5, "js": "x"})");
  b.last().json_nulls = {"jb", "js"};  // the statement puts null there whatever the value
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(copied(steps[0]), "-0\t12345678901234567890.5\t-0.0\t-0\tfalse\n"
                              "2\t\\N\t\\N\tnull\tnull\n");
  t.types["pgfanout.json_nulls"] = "jsonb";  // a real column of that name: the lists do not count
  Batch c;
  c.insert_raw(t, R"({"id": 1})");
  EXPECT_EQ(copied(c.plan().at(0)), std::nullopt);
}

// Found by review: members COPY never writes (a name the table lacks, the earlier of two
// values of one name) still go through jsonb_in in the statement's $1::jsonb, which
// refuses \u0000 in a name or in any string: the statement dead-letters such a row, COPY
// stored it. So does a non-UTF8 replica for characters beyond ASCII.
TEST(CopyText, MembersCopySkipsAreStillReadByJsonbIn) {
  const TableInfo t = typed_table();
  for (std::string_view row : {R"({"id": 1, "t": "x", "a\u0000b": 1})",   // name jsonb refuses
                               R"({"id": 1, "t": "a\u0000", "t": "x"})"}) {  // overridden value
    Batch b;
    b.insert_raw(t, row);
    EXPECT_EQ(copied(b.plan().at(0)), std::nullopt) << row;
  }
  TableInfo latin1 = typed_table();
  latin1.server_utf8 = false;
  for (std::string_view row : {R"({"id": 1, "note": "\u00e9"})", "{\"id\": 1, \"note\": \"\xc3\xa9\"}",
                               "{\"id\": 1, \"n\xc3\xa9\": 1}"}) {
    Batch b;
    b.insert_raw(latin1, row);
    EXPECT_EQ(copied(b.plan().at(0)), std::nullopt) << row;
  }
  Batch ascii;
  ascii.insert_raw(latin1, R"({"id": 1, "note": "plain"})");
  EXPECT_EQ(copied(ascii.plan().at(0)), std::optional<std::string>("1\n"));
}

// Found by review: a row member named like the statement's own marker was obeyed by the statement
// (for rows without their own list, when another row of the step has one) but skipped by
// COPY: the statement stored a JSON null in "jb", COPY the object. Now every row of such
// a step ends with the marker the listener wrote (the last of a name is what jsonb keeps),
// and COPY leaves a row carrying one to the statement.
TEST(CopyText, ARowMemberNamedLikeTheStatementsMarkerIsOverridden) {
  const TableInfo t = typed_table();
  Batch b;
  b.insert_raw(t, R"({"id": 1, "jb": null})");
  b.last().json_nulls = {"jb"};
  b.insert_raw(t, R"({"id": 2, "jb": {"a": 1}, "pgfanout.json_nulls": "{1}"})");
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(rows_json(steps[0]),
            R"([{"id": 1, "jb": null,"pgfanout.json_nulls":[1]},)"
            R"({"id": 2, "jb": {"a": 1}, "pgfanout.json_nulls": "{1}","pgfanout.json_nulls":null}])");
  EXPECT_EQ(copied(steps[0]), std::nullopt);
}

// Found by review: json_nulls naming a json column the row does not carry: the statement
// wrote 'null' there when another row of the step carried the column (SQL NULL when none
// did), COPY SQL NULL. Now both write SQL NULL, as for any column a row lacks.
TEST(CopyText, JsonNullsOfAColumnTheRowLacksIsNull) {
  const TableInfo t = typed_table();
  Batch b;
  b.insert_raw(t, R"({"id": 1})");
  b.last().json_nulls = {"jb"};
  b.insert_raw(t, R"({"id": 2, "jb": 1})");
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 1u);
  std::string rows = rows_json(steps[0]);
  EXPECT_EQ(rows, R"([{"id": 1,"pgfanout.json_nulls":null},{"id": 2, "jb": 1,"pgfanout.json_nulls":null}])");
  EXPECT_EQ(copied(steps[0]), std::optional<std::string>("1\t\\N\n2\t1\n"));
}

TEST(CopyText, AStepWithAnUpdateIsNotAllNewRows) {
  const TableInfo t = typed_table();
  Batch b;
  b.insert(t, {{"id", 1}}).insert(t, {{"id", 2}});
  EXPECT_TRUE(b.plan().at(0).inserts_only);
  b.update(t, {{"id", 3}}, {{"id", 3}, {"t", "x"}});
  auto steps = b.plan();
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_FALSE(steps[0].inserts_only);
}

}  // namespace
}  // namespace pgfanout
