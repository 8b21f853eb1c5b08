// sql/install.sql and sql/uninstall.sql on a real PostgreSQL: the capture layer's contract
// (INTERFACE.md, "SQL on the primary"), without any pgfanout process.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <pqxx/pqxx>

#include "harness.hpp"

namespace pgfanout::test {
namespace {

using ::testing::HasSubstr;

class SqlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_.emplace("pgft_sql");
    install_schema(db_->conninfo());
    sql_.emplace(db_->conninfo());
  }

  PgSession& sql() { return *sql_; }

  /// The capture triggers (those calling a pgfanout function) on `table`.
  std::int64_t capture_triggers(const std::string& table) {
    return sql().integer(
        "SELECT count(*) FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE tg.tgrelid = " + sql_literal(table) + "::regclass AND n.nspname = 'pgfanout'");
  }
  bool tracked(const std::string& table) {
    return sql().integer("SELECT count(*) FROM pgfanout.tracked WHERE relid = " + sql_literal(table) +
                         "::regclass") == 1;
  }
  /// The outbox as text, in id order, to compare it before and after.
  std::string outbox_text() {
    return sql().value("SELECT coalesce(string_agg(c::text, E'\\n' ORDER BY id), '') FROM pgfanout.changes c")
        .value_or("");
  }

  std::optional<ScratchDatabase> db_;
  std::optional<PgSession> sql_;
};

TEST_F(SqlTest, InstallCreatesTheDocumentedObjects) {
  auto columns = sql().value(
      "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute "
      "WHERE attrelid = 'pgfanout.changes'::regclass AND attnum > 0 AND NOT attisdropped");
  EXPECT_EQ(columns, "id,schema_name,table_name,op,new_row,old_key,ts,json_nulls,new_text,old_text,new_json");
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pgfanout.tracked"), 0);
  EXPECT_EQ(sql().value("SELECT idle::text FROM pgfanout.publisher_state"), "true");
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pg_proc WHERE oid IN "
                          "('pgfanout.track(regclass)'::regprocedure, 'pgfanout.untrack(regclass)'::regprocedure)"),
            2);
}

// Writers wake the publisher (NOTIFY pgfanout) only while it says it is idle. The captures
// read that flag from the sequence pgfanout.publisher_idle, which a trigger keeps equal
// to publisher_state.idle: every capture path notifies while it is true, none while false.
TEST_F(SqlTest, CapturesNotifyOnlyWhileThePublisherIsIdle) {
  sql().exec(R"(
    CREATE TABLE public.t (id int PRIMARY KEY, v text, j jsonb);
    CREATE TABLE public.parted (region text, id int, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
    CREATE TABLE public.parted_eu PARTITION OF public.parted FOR VALUES IN ('eu');
    SELECT pgfanout.track('public.t');
    SELECT pgfanout.track('public.parted');)");
  struct Counter : pqxx::notification_receiver {
    explicit Counter(pqxx::connection_base& c) : pqxx::notification_receiver(c, "pgfanout") {}
    void operator()(const std::string&, int) override { ++count; }
    int count = 0;
  };
  pqxx::connection listener(db_->conninfo());
  Counter heard(listener);  // LISTEN pgfanout
  // The notifications a statement's commit sent: waits up to 5 s for the first (none
  // expected: 300 ms), then takes any that came with it.
  auto notified_by = [&](const std::string& statement, bool expect) {
    heard.count = 0;
    sql().exec(statement);
    auto until = std::chrono::steady_clock::now() + (expect ? std::chrono::seconds(5) : std::chrono::milliseconds(300));
    while (heard.count == 0 && std::chrono::steady_clock::now() < until) listener.await_notification(0, 50000);
    listener.get_notifs();
    return heard.count > 0;
  };
  const std::vector<std::string> writes = {
      "INSERT INTO public.t VALUES (1, 'a', '{}')",           // statement-level INSERT capture
      "UPDATE public.t SET v = 'b'",                          // row-level capture
      "DELETE FROM public.t",                                 //
      "INSERT INTO public.parted VALUES ('eu', 1)",           // partition row capture
      "TRUNCATE public.t",                                    // TRUNCATE capture
      "TRUNCATE public.parted_eu"};                           // partition TRUNCATE capture
  for (bool idle : {true, false, true}) {
    sql().exec(std::string("UPDATE pgfanout.publisher_state SET idle = ") + (idle ? "true" : "false"));
    EXPECT_EQ(sql().integer("SELECT pg_sequence_last_value('pgfanout.publisher_idle')"), idle ? 1 : 0);
    sql().exec("DELETE FROM pgfanout.changes");
    for (const auto& w : writes) EXPECT_EQ(notified_by(w, idle), idle) << w << " with idle = " << idle;
    EXPECT_EQ(sql().integer("SELECT count(*) FROM pgfanout.changes"), 6) << "idle = " << idle;
  }
}

// The statement-level INSERT capture runs in the writer's search_path and hands a row of
// the transition table to helpers that read it back as the table's row type under
// pg_catalog's. A regclass value prints without its schema where the writer's path
// reaches it: the text form must be made on the helpers' side, or the read-back fails
// and with it the writer's INSERT.
TEST_F(SqlTest, ARegclassValueInAWritersPathIsCapturedWhereTheRowIsReadBack) {
  sql().exec(R"(
    CREATE TABLE public.regs (id int PRIMARY KEY, j jsonb, a int[], c regclass);
    SELECT pgfanout.track('public.regs');
    SET search_path = public;
    INSERT INTO public.regs VALUES (1, 'null', '[0:0]={1}', 'public.regs');
    RESET search_path;)");
  EXPECT_EQ(sql().value("SELECT json_nulls::text || ' ' || new_text::text || ' ' || (new_row ->> 'c') "
                        "FROM pgfanout.changes"),
            "{j} {\"a\": \"[0:0]={1}\"} regs");
}

TEST_F(SqlTest, TrackCapturesEveryOperationIntoTheOutbox) {
  sql().exec(R"(
    CREATE TABLE public.t (id int PRIMARY KEY, v text);
    SELECT pgfanout.track('public.t');
    INSERT INTO public.t VALUES (1, 'a'), (2, 'b');
    UPDATE public.t SET v = 'c' WHERE id = 1;
    UPDATE public.t SET id = 3 WHERE id = 2;
    DELETE FROM public.t WHERE id = 1;
    TRUNCATE public.t;)");
  Rows rows = sql().query(
      "SELECT schema_name, table_name, op, new_row::text, old_key::text FROM pgfanout.changes ORDER BY id");
  using R = Row;
  EXPECT_EQ(rows, (Rows{R{"public", "t", "INSERT", R"({"v": "a", "id": 1})", std::nullopt},
                        R{"public", "t", "INSERT", R"({"v": "b", "id": 2})", std::nullopt},
                        R{"public", "t", "UPDATE", R"({"v": "c", "id": 1})", R"({"id": 1})"},
                        R{"public", "t", "UPDATE", R"({"v": "b", "id": 3})", R"({"id": 2})"},
                        R{"public", "t", "DELETE", std::nullopt, R"({"id": 1})"},
                        R{"public", "t", "TRUNCATE", std::nullopt, std::nullopt}}));
}

TEST_F(SqlTest, TrackRefusesATableWithoutPrimaryKey) {
  sql().exec("CREATE TABLE public.nokey (a int, b text)");
  try {
    sql().exec("SELECT pgfanout.track('public.nokey')");
    FAIL() << "track() accepted a table without a primary key";
  } catch (const SqlError& e) {
    EXPECT_THAT(e.what(), HasSubstr("primary key"));
    EXPECT_THAT(e.what(), HasSubstr("nokey"));
  }
  EXPECT_EQ(capture_triggers("public.nokey"), 0);
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pgfanout.tracked"), 0);
  sql().exec("INSERT INTO public.nokey VALUES (1, 'x')");
  EXPECT_EQ(outbox_count(sql()), 0);
}

TEST_F(SqlTest, TrackAcceptsQuotedNamesAndCompositeKeys) {
  sql().exec(R"(
    CREATE SCHEMA "Odd ""Schema""";
    CREATE TABLE "Odd ""Schema"""."a.b" (k1 int, "K 2" text, v int, PRIMARY KEY ("K 2", k1));
    SELECT pgfanout.track('"Odd ""Schema"""."a.b"');
    INSERT INTO "Odd ""Schema"""."a.b" VALUES (1, 'x', 0);
    DELETE FROM "Odd ""Schema"""."a.b";)");
  Rows rows = sql().query("SELECT schema_name, table_name, key_columns::text FROM pgfanout.tracked");
  EXPECT_EQ(rows, (Rows{Row{"Odd \"Schema\"", "a.b", R"({"K 2",k1})"}}));
  EXPECT_EQ(sql().value("SELECT old_key::text FROM pgfanout.changes WHERE op = 'DELETE'"),
            R"({"k1": 1, "K 2": "x"})");
}

TEST_F(SqlTest, InstallingAgainKeepsPendingChangesAndTracking) {
  sql().exec(R"(
    CREATE TABLE public.t (id int PRIMARY KEY, v text);
    SELECT pgfanout.track('public.t');
    INSERT INTO public.t VALUES (1, 'a'), (2, 'b');
    UPDATE public.t SET v = 'c' WHERE id = 2;)");
  std::string before = outbox_text();
  ASSERT_EQ(outbox_count(sql()), 3);
  std::int64_t last_id = sql().integer("SELECT max(id) FROM pgfanout.changes");

  install_schema(db_->conninfo());

  EXPECT_EQ(outbox_text(), before) << "re-installing changed or lost pending changes";
  EXPECT_TRUE(tracked("public.t"));
  EXPECT_EQ(capture_triggers("public.t"), 4) << "one trigger per operation, not duplicated";
  sql().exec("INSERT INTO public.t VALUES (3, 'd')");
  EXPECT_EQ(outbox_count(sql()), 4) << "capture after re-install: exactly one change per row";
  EXPECT_GT(sql().integer("SELECT max(id) FROM pgfanout.changes"), last_id)
      << "ids keep growing across re-installs";
}

// An install from before json_nulls (simulated: the two columns dropped, the tracked
// table's triggers without probes) is upgraded by installing again: pending changes
// stay, and a tracked table with a jsonb column gets its probes, so a JSON null is told
// from SQL NULL at once.
TEST_F(SqlTest, InstallingAgainUpgradesAnInstallFromBeforeJsonNulls) {
  sql().exec(R"(
    CREATE TABLE public.docs (id int PRIMARY KEY, j jsonb);
    SELECT pgfanout.track('public.docs');
    ALTER EVENT TRIGGER pgfanout_ddl DISABLE;  -- today's version would judge the old layout
    -- The triggers of that install (its view of the outbox for the table goes with them).
    SELECT pgfanout.drop_triggers('public.docs');
    ALTER TABLE pgfanout.changes DROP COLUMN json_nulls;
    ALTER TABLE pgfanout.tracked DROP COLUMN json_columns;
    CREATE TRIGGER pgfanout_insert AFTER INSERT ON public.docs REFERENCING NEW TABLE AS pgfanout_new
      FOR EACH STATEMENT EXECUTE FUNCTION pgfanout.capture_insert('id');
    CREATE TRIGGER pgfanout_update AFTER UPDATE ON public.docs FOR EACH ROW EXECUTE FUNCTION pgfanout.capture_row('id');
    CREATE TRIGGER pgfanout_delete AFTER DELETE ON public.docs FOR EACH ROW EXECUTE FUNCTION pgfanout.capture_row('id');
    CREATE TRIGGER pgfanout_truncate AFTER TRUNCATE ON public.docs FOR EACH STATEMENT EXECUTE FUNCTION pgfanout.capture_truncate();
    INSERT INTO public.docs VALUES (1, 'null');)");
  const char* pending = "SELECT id, op, new_row::text, ts FROM pgfanout.changes ORDER BY id";
  Rows before = sql().query(pending);
  ASSERT_EQ(before.size(), 1u);

  install_schema(db_->conninfo());

  EXPECT_EQ(sql().query(pending), before) << "re-installing changed or lost pending changes";
  EXPECT_EQ(sql().value("SELECT json_columns::text FROM pgfanout.tracked"), "{j}");
  // The table's INSERTs moved to its own capture function (and view of the outbox).
  EXPECT_EQ(sql().value("SELECT (tgfoid = to_regprocedure(pgfanout.capture_function(tgrelid) || '()') "
                        "AND tgfoid <> 'pgfanout.capture_insert()'::regprocedure)::text "
                        "FROM pg_trigger WHERE tgrelid = 'public.docs'::regclass AND tgname = 'pgfanout_insert'"),
            "true");
  sql().exec("INSERT INTO public.docs VALUES (2, 'null'), (3, NULL); UPDATE public.docs SET j = 'null' WHERE id = 3;");
  EXPECT_EQ(sql().query("SELECT op, new_row->>'id', coalesce(json_nulls::text, '-') FROM pgfanout.changes ORDER BY id"),
            (Rows{Row{"INSERT", "1", "-"}, Row{"INSERT", "2", "{j}"}, Row{"INSERT", "3", "-"},
                  Row{"UPDATE", "3", "{j}"}}));
}

// A table's own INSERT capture function is made from capture_insert's body by track():
// re-running install.sql makes it again from the new body, so an upgrade reaches tables
// whose triggers did not change.
TEST_F(SqlTest, InstallingAgainRemakesEachTablesInsertCaptureFromTheNewBody) {
  sql().exec("CREATE TABLE public.t (id int PRIMARY KEY, v text); SELECT pgfanout.track('public.t')");
  const std::string function = *sql().value("SELECT pgfanout.capture_function('public.t')");
  // An older body, which captured nothing.
  sql().exec("CREATE OR REPLACE FUNCTION " + function +
             "() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'");
  sql().exec("INSERT INTO public.t VALUES (1, 'old body')");
  ASSERT_EQ(sql().integer("SELECT count(*) FROM pgfanout.changes"), 0);

  install_schema(db_->conninfo());
  sql().exec("INSERT INTO public.t VALUES (2, 'new body'), (3, 'new body')");
  EXPECT_EQ(sql().query("SELECT table_name, op, new_row->>'id' FROM pgfanout.changes ORDER BY id"),
            (Rows{Row{"t", "INSERT", "2"}, Row{"t", "INSERT", "3"}}));
}

// PostgreSQL accepts rows jsonb cannot hold: a json value with \u0000 in it, a row past
// jsonb's 256 MB. The capture must not fail such a write: the change carries the row as
// to_json writes it (new_json), and the json column's text form.
TEST_F(SqlTest, WritesThatJsonbCannotHoldAreCapturedNotRefused) {
  sql().exec(R"(
    CREATE TABLE public.docs (id int PRIMARY KEY, j json, b jsonb);
    CREATE TABLE public.inh (id int PRIMARY KEY, j json);
    CREATE TABLE public.inh_child () INHERITS (public.inh);
    CREATE TABLE public.parts (id int PRIMARY KEY, j json) PARTITION BY RANGE (id);
    CREATE TABLE public.parts_1 PARTITION OF public.parts FOR VALUES FROM (0) TO (100);
    CREATE TABLE public.big (id int PRIMARY KEY, v text);
    SELECT pgfanout.track('public.docs'); SELECT pgfanout.track('public.inh');
    SELECT pgfanout.track('public.parts'); SELECT pgfanout.track('public.big');)");
  sql().exec(R"(
    INSERT INTO public.docs VALUES (1, '{"a":"\u0000"}', 'null'), (2, '{"a":1}', NULL);
    UPDATE public.docs SET b = '{"k":1}' WHERE id = 1;
    UPDATE public.docs SET j = '["\u0000"]' WHERE id = 2;
    DELETE FROM public.docs WHERE id = 1;
    INSERT INTO public.inh VALUES (1, '"\u0000"');
    INSERT INTO public.parts VALUES (1, '"\u0000"');
    UPDATE public.parts SET j = '{}' WHERE id = 1;)");
  EXPECT_EQ(sql().query("SELECT table_name, op, (new_row IS NULL)::text, coalesce(new_json::text, '-'), "
                        "coalesce(old_key::text, '-'), coalesce(json_nulls::text, '-'), coalesce(new_text->>'j', '-') "
                        "FROM pgfanout.changes ORDER BY id"),
            (Rows{Row{"docs", "INSERT", "true", R"({"id":1,"j":{"a":"\u0000"},"b":null})", "-", "{b}", R"({"a":"\u0000"})"},
                  Row{"docs", "INSERT", "false", "-", "-", "-", R"({"a":1})"},
                  Row{"docs", "UPDATE", "true", R"({"id":1,"j":{"a":"\u0000"},"b":{"k": 1}})", R"({"id": 1})", "-",
                      R"({"a":"\u0000"})"},
                  Row{"docs", "UPDATE", "true", R"({"id":2,"j":["\u0000"],"b":null})", R"({"id": 2})", "-", R"(["\u0000"])"},
                  Row{"docs", "DELETE", "true", "-", R"({"id": 1})", "-", "-"},
                  Row{"inh", "INSERT", "true", R"({"id":1,"j":"\u0000"})", "-", "-", R"("\u0000")"},
                  Row{"parts", "INSERT", "true", R"({"id":1,"j":"\u0000"})", "-", "-", R"("\u0000")"},
                  Row{"parts", "UPDATE", "false", "-", R"({"id": 1})", "-", "{}"}}));
  sql().exec("DELETE FROM pgfanout.changes");
  // 270 MB of text: jsonb holds 256 MB at most (to_jsonb would fail the INSERT).
  sql().exec("INSERT INTO public.big VALUES (1, repeat('x', 270000000)); UPDATE public.big SET v = v || 'y'");
  EXPECT_EQ(sql().query("SELECT op, (new_row IS NULL)::text, octet_length(new_json::text)::text, "
                        "coalesce(old_key::text, '-') FROM pgfanout.changes ORDER BY id"),
            (Rows{Row{"INSERT", "true", "270000015", "-"}, Row{"UPDATE", "true", "270000016", R"({"id": 1})"}}));
}

// The text forms (README, "Message format"): only the columns whose to_jsonb form would
// not read back, and a bounds column only where the value has other lower bounds.
TEST_F(SqlTest, TextFormsGoWithTheColumnsThatNeedThem) {
  sql().exec(R"(
    CREATE TYPE public.mood AS ENUM ('ok', 'sad');
    CREATE TYPE public.pair AS (a int, m public.mood);
    CREATE TABLE public.t (id int PRIMARY KEY, a int[], m public.mood, p public.pair, j json, b jsonb, x text);
    SELECT pgfanout.track('public.t');
    INSERT INTO public.t VALUES (1, '[0:1]={1,2}', 'ok', ROW(1, 'ok'), '{"b":1,"a":2}', '{}', 'x'),
                                (2, '{1,2}', 'ok', NULL, NULL, '{}', 'x');)");
  EXPECT_EQ(sql().query("SELECT coalesce(new_text::text, '-') FROM pgfanout.changes ORDER BY id"),
            (Rows{Row{R"({"a": "[0:1]={1,2}", "j": "{\"b\":1,\"a\":2}"})"}, Row{"-"}}));
  // A cast to json made later makes the enum (and the composite holding it) need them,
  // once the table is tracked again.
  sql().exec(R"(
    CREATE FUNCTION public.mood_json(public.mood) RETURNS json LANGUAGE sql IMMUTABLE AS $$ SELECT '1'::json $$;
    CREATE CAST (public.mood AS json) WITH FUNCTION public.mood_json(public.mood);
    SELECT pgfanout.track('public.t');
    DELETE FROM pgfanout.changes;
    INSERT INTO public.t VALUES (3, '{1}', 'sad', ROW(2, 'sad'), NULL, NULL, NULL);)");
  EXPECT_EQ(sql().value("SELECT new_text::text FROM pgfanout.changes"), R"x({"m": "sad", "p": "(2,sad)"})x");
}

// The logical capture parks the changes of a table no queue is bound for in the outbox
// (pgfanout.park): a row jsonb cannot hold is parked as json, with its text forms, where
// a jsonb parameter made the publisher fail and retry forever.
TEST_F(SqlTest, ParkKeepsARowJsonbCannotHoldAndItsTextForms) {
  sql().exec(R"(SELECT pgfanout.park(900, 'public', 'docs', 'INSERT', '{"id":1,"j":{"a":"\u0000"}}', NULL, now(),
                                     NULL, '{"j": "{\"a\":\"\\u0000\"}"}', NULL);
                SELECT pgfanout.park(901, 'public', 'docs', 'UPDATE', '{"id":1,"j":null}', '{"id":1}', now(),
                                     '["j"]', NULL, '{"id": "1"}');
                SELECT pgfanout.park(901, 'public', 'docs', 'UPDATE', '{"id":2}', NULL, now(), NULL, NULL, NULL);)");
  EXPECT_EQ(sql().query("SELECT id::text, op, coalesce(new_row::text, '-'), coalesce(new_json::text, '-'), "
                        "coalesce(json_nulls::text, '-'), coalesce(new_text::text, '-'), coalesce(old_text::text, '-') "
                        "FROM pgfanout.changes ORDER BY id"),
            (Rows{Row{"900", "INSERT", "-", R"({"id":1,"j":{"a":"\u0000"}})", "-", R"({"j": "{\"a\":\"\\u0000\"}"})", "-"},
                  Row{"901", "UPDATE", R"({"j": null, "id": 1})", "-", "{j}", "-", R"({"id": "1"})"}}))
      << "a change parked again (same id) is kept once";
}

TEST_F(SqlTest, UntrackStopsCapture) {
  sql().exec(R"(
    CREATE TABLE public.t (id int PRIMARY KEY, v text);
    SELECT pgfanout.track('public.t');
    INSERT INTO public.t VALUES (1, 'a');)");
  ASSERT_EQ(outbox_count(sql()), 1);
  sql().exec("SELECT pgfanout.untrack('public.t')");
  EXPECT_FALSE(tracked("public.t"));
  EXPECT_EQ(capture_triggers("public.t"), 0);
  sql().exec(R"(
    INSERT INTO public.t VALUES (2, 'b');
    UPDATE public.t SET v = 'z';
    DELETE FROM public.t WHERE id = 1;
    TRUNCATE public.t;)");
  EXPECT_EQ(outbox_count(sql()), 1) << "an untracked table is still captured";
  // Changes captured before untrack() stay for the publisher.
  EXPECT_EQ(sql().value("SELECT op FROM pgfanout.changes"), "INSERT");
}

TEST_F(SqlTest, UninstallRemovesEverything) {
  sql().exec(R"(
    CREATE TABLE public.t (id int PRIMARY KEY, v text);
    SELECT pgfanout.track('public.t');
    INSERT INTO public.t VALUES (1, 'a');)");
  uninstall_schema(db_->conninfo());

  EXPECT_EQ(sql().integer("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgfanout'"), 0);
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                          "WHERE n.nspname = 'pgfanout'"),
            0);
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgfanout%'"), 0);
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.t'::regclass "
                          "AND NOT tgisinternal"),
            0);
  // The user's table and data are untouched and writable without the capture.
  sql().exec("INSERT INTO public.t VALUES (2, 'b'); UPDATE public.t SET v = 'c'; DELETE FROM public.t WHERE id = 1");
  EXPECT_EQ(sql().integer("SELECT count(*) FROM public.t"), 1);
  // DDL works again without the event trigger, and installing anew starts clean.
  sql().exec("ALTER TABLE public.t ADD COLUMN w int");
  install_schema(db_->conninfo());
  EXPECT_EQ(outbox_count(sql()), 0);
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pgfanout.tracked"), 0);
}

TEST_F(SqlTest, UninstallIsSafeWhenNotInstalled) {
  uninstall_schema(db_->conninfo());
  uninstall_schema(db_->conninfo());
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgfanout'"), 0);
}

}  // namespace
}  // namespace pgfanout::test
