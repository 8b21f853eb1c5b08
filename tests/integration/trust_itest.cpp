// Who can do what through pgfanout's capture (sql/install.sql, README "Security"): no code a
// writer chooses runs with rights the writer lacks, no role forges a change of a table it
// may not write, no setting a session can set keeps a write out of the capture, and
// install.sql adopts nothing another role made. Each test plays the roles for real:
// LOGIN roles of the test cluster, connected as themselves.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "harness.hpp"
#include "pgfanout/pg_connection.hpp"

namespace pgfanout::test {
namespace {

using ::testing::HasSubstr;

// A LOGIN role with a unique name, dropped on destruction. Declare it before the databases
// it owns objects in: they are dropped first, and with them its objects and grants.
class TestRole {
 public:
  explicit TestRole(std::string_view prefix) : name_(unique_name(prefix)) {
    PgSession(pg_admin_conninfo()).exec("CREATE ROLE " + quote_ident(name_) + " LOGIN");
  }
  ~TestRole() {
    try {
      PgSession(pg_admin_conninfo()).exec("DROP ROLE IF EXISTS " + quote_ident(name_));
    } catch (const std::exception& e) {
      std::cerr << "trust_itest: could not drop role " << name_ << ": " << e.what() << "\n";
    }
  }
  TestRole(const TestRole&) = delete;
  TestRole& operator=(const TestRole&) = delete;
  const std::string& name() const { return name_; }
  std::string ident() const { return quote_ident(name_); }

 private:
  std::string name_;
};

class TrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_.emplace("pgft_trust");
    install_schema(db_->conninfo());
    sql_.emplace(db_->conninfo());
    // alice owns a schema of her own and its tables; bob is granted what each test says.
    sql().exec("CREATE SCHEMA app AUTHORIZATION " + alice.ident() +
               "; GRANT USAGE ON SCHEMA app TO " + bob.ident());
  }

  PgSession& sql() { return *sql_; }
  // A session of `role` on the test database.
  PgSession as(const TestRole& role) { return PgSession(db_->conninfo() + " user=" + role.name()); }
  // The outbox as "schema.table op new old" lines, in id order.
  std::vector<std::string> outbox() {
    std::vector<std::string> out;
    for (const auto& r :
         sql().query("SELECT schema_name || '.' || table_name || ' ' || op || coalesce(' ' || "
                     "new_row::text, '') "
                     "|| coalesce(' ' || old_key::text, '') FROM pgfanout.changes ORDER BY id"))
      out.push_back(r[0].value_or("NULL"));
    return out;
  }
  bool superuser(const TestRole& role) {
    return sql().value("SELECT rolsuper::text FROM pg_roles WHERE rolname = " +
                       sql_literal(role.name())) == "true";
  }
  // The SqlError a statement raises, or a failure if it raises none.
  static SqlError error_of(PgSession& s, const std::string& statement) {
    try {
      s.exec(statement);
    } catch (const SqlError& e) {
      return e;
    }
    throw HarnessError("expected an error from: " + statement);
  }

  // Whether a statement is refused for want of rights (a privilege or a row-level security
  // policy; libpqxx 6.4 does not always pass the SQLSTATE on).
  static bool refused(PgSession& s, const std::string& statement) {
    std::string what = error_of(s, statement).what();
    return what.find("permission denied") != std::string::npos ||
           what.find("must be owner") != std::string::npos ||
           what.find("violates row-level security policy") != std::string::npos ||
           what.find("violates check option for view") != std::string::npos;
  }

  TestRole alice{"pgft_alice"};
  TestRole bob{"pgft_bob"};
  TestRole mallory{"pgft_mallory"};  // owns what other roles must not run
  TestRole carol{"pgft_carol"};      // owns a table whose foreign key cascades from alice's
  std::optional<ScratchDatabase> db_;
  std::optional<PgSession> sql_;
};

// ---------------------------------------------------------------------------------------
// No code a writer chooses runs with rights the writer lacks.

// The escalation of the security review: the owner of a tracked table defines a cast to
// json for a type of her own; to_jsonb calls it in the capture. Capture functions that
// ran as the installer (a superuser) ran it as superuser.
TEST_F(TrustTest, ACastToJsonOfAWritersTypeRunsAsTheWriterNotAsTheInstaller) {
  {
    PgSession a = as(alice);
    a.exec("CREATE TYPE app.mood AS ENUM ('sad', 'happy')");
    a.exec(
        "CREATE FUNCTION app.mood_json(app.mood) RETURNS json LANGUAGE plpgsql AS $$ BEGIN "
        "  BEGIN EXECUTE format('ALTER ROLE %I SUPERUSER', session_user); "
        "  EXCEPTION WHEN insufficient_privilege THEN NULL; END; "
        "  RETURN to_json($1::text || ' (cast as ' || current_user || ')'); END $$");
    a.exec("CREATE CAST (app.mood AS json) WITH FUNCTION app.mood_json(app.mood)");
    a.exec("CREATE TABLE app.feelings (id int PRIMARY KEY, m app.mood)");
  }
  sql().exec("SELECT pgfanout.track('app.feelings')");
  PgSession a = as(alice);
  a.exec("INSERT INTO app.feelings VALUES (1, 'happy')");
  a.exec("UPDATE app.feelings SET m = 'sad'");

  EXPECT_FALSE(superuser(alice)) << "the writer's cast ran with the installer's rights";
  EXPECT_THAT(outbox(), ::testing::ElementsAre("app.feelings INSERT {\"m\": \"happy (cast as " +
                                                   alice.name() + ")\", \"id\": 1}",
                                               "app.feelings UPDATE {\"m\": \"sad (cast as " +
                                                   alice.name() + ")\", \"id\": 1} {\"id\": 1}"));
}

// The row captures run in the writer's search_path (a SET clause on them cost 2.5 us a
// write), so every name in them is schema-qualified. Another role's schema on that path,
// ahead of pg_catalog, holding a stand-in for every pg_catalog function named in their
// bodies, every operator and the types they use, must change nothing: no stand-in runs
// (each raises), and the changes are what they are on any path.
TEST_F(TrustTest, AnotherRolesObjectsOnTheWritersSearchPathNeverRunInTheCapture) {
  sql().exec("CREATE SCHEMA evil AUTHORIZATION " + mallory.ident());
  {
    PgSession a = as(alice);
    a.exec(R"SQL(
CREATE TABLE app.nojson (id int PRIMARY KEY, v text);
CREATE TABLE app.withjsonb (id int PRIMARY KEY, j jsonb, n numeric);  -- n: as the captures' alias
CREATE TABLE app.withjson (id int, k int, j json, PRIMARY KEY (id, k));
CREATE TABLE app.bounds (id int PRIMARY KEY, a int[]);
CREATE TABLE app.parted (region text, id int, j jsonb, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE app.parted_eu PARTITION OF app.parted FOR VALUES IN ('eu');
)SQL");
    a.exec("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA app TO " + bob.ident());
  }
  for (const char* t : {"app.nojson", "app.withjsonb", "app.withjson", "app.bounds", "app.parted"})
    sql().exec("SELECT pgfanout.track(" + sql_literal(t) + ")");

  PgSession m = as(mallory);
  m.exec("GRANT USAGE ON SCHEMA evil TO PUBLIC");
  m.exec(R"SQL(
DO $$
DECLARE
    names text[];
    f record;
    o record;
    t text;
BEGIN
    SELECT array_agg(DISTINCT x[1]) INTO names
    FROM pg_proc p, regexp_matches(p.prosrc, '([a-z_][a-z0-9_]*)\s*\(', 'g') AS x
    WHERE p.oid IN ('pgfanout.capture_insert'::regproc, 'pgfanout.capture_row'::regproc,
                    'pgfanout.capture_partition_row'::regproc);
    -- PL/pgSQL takes no "any": anyelement stands in for it.
    FOR f IN SELECT p.oid, p.proname,
                    replace(pg_get_function_identity_arguments(p.oid), '"any"', 'anyelement') AS args,
                    pg_get_function_result(p.oid) AS result
             FROM pg_proc p
             WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY (names) AND p.prokind = 'f' LOOP
        BEGIN
            EXECUTE format('CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE plpgsql AS %L',
                           f.proname, f.args, f.result,
                           format('BEGIN RAISE EXCEPTION %L; END', 'evil.' || f.proname || ' ran'));
        EXCEPTION WHEN OTHERS THEN NULL;  -- a signature PL/pgSQL cannot take (internal)
        END;
    END LOOP;
    FOR o IN SELECT op.oid, op.oprname, op.oprleft::regtype AS l, op.oprright::regtype AS r,
                    op.oprresult::regtype AS res
             FROM pg_operator op
             WHERE op.oprnamespace = 'pg_catalog'::regnamespace AND op.oprleft <> 0
               AND op.oprname IN ('=', '<>', '<', '>', '<=', '>=', '+', '-', '@>', '?', '->', '->>', '||')
               AND op.oprleft IN ('int4'::regtype, 'int8'::regtype, 'text'::regtype, 'jsonb'::regtype,
                                  'json'::regtype, 'bool'::regtype, 'oid'::regtype, 'name'::regtype,
                                  'text[]'::regtype, 'jsonb[]'::regtype, 'anyarray'::regtype,
                                  'anycompatiblearray'::regtype)
               AND op.oprright IN ('int4'::regtype, 'int8'::regtype, 'text'::regtype, 'jsonb'::regtype,
                                   'json'::regtype, 'bool'::regtype, 'oid'::regtype, 'name'::regtype,
                                   'text[]'::regtype, 'jsonb[]'::regtype, 'anyarray'::regtype,
                                   'anycompatible'::regtype, 'anycompatiblearray'::regtype) LOOP
        BEGIN
            EXECUTE format('CREATE FUNCTION evil.op_%s(%s, %s) RETURNS %s LANGUAGE plpgsql AS %L',
                           o.oid, o.l, o.r, o.res,
                           format('BEGIN RAISE EXCEPTION %L; END', 'evil operator ' || o.oprname || ' ran'));
            EXECUTE format('CREATE OPERATOR evil.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = evil.op_%s)',
                           o.oprname, o.l, o.r, o.oid);
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END LOOP;
    FOREACH t IN ARRAY ARRAY['jsonb', 'json', 'text', 'int4', 'bool', 'oid', 'regclass'] LOOP
        EXECUTE format('CREATE DOMAIN evil.%I AS pg_catalog.int8', t);
    END LOOP;
END
$$;
)SQL");
  // The stand-ins that matter most are there.
  for (const char* f : {"to_jsonb", "to_json", "pg_column_size", "array_position", "cardinality",
                        "strpos", "pg_sequence_last_value", "pg_notify", "current_setting",
                        "pg_trigger_depth", "pg_partition_root"})
    EXPECT_GE(sql().integer("SELECT count(*) FROM pg_proc WHERE pronamespace = 'evil'::regnamespace "
                            "AND proname = " + sql_literal(f)),
              1)
        << f;
  EXPECT_EQ(sql().integer("SELECT count(DISTINCT oprname) FROM pg_operator WHERE oprnamespace = "
                          "'evil'::regnamespace AND oprname IN ('=', '<>', '<', '>', '+', '-', "
                          "'@>', '?', '->')"),
            9);

  PgSession b = as(bob);
  b.exec("SET search_path = evil, pg_catalog");
  EXPECT_EQ(*b.value("SHOW search_path"), "evil, pg_catalog");
  b.exec("INSERT INTO app.nojson VALUES (1, 'a'), (2, 'b')");
  // The writer's own statements name pg_catalog's = too.
  b.exec("UPDATE app.nojson SET v = 'c' WHERE id OPERATOR(pg_catalog.=) 1");
  b.exec("DELETE FROM app.nojson WHERE id OPERATOR(pg_catalog.=) 2");
  b.exec("INSERT INTO app.withjsonb VALUES (1, '{\"n\": 1}', 1.5), (2, 'null', NULL)");
  b.exec("UPDATE app.withjsonb SET j = 'null' WHERE id OPERATOR(pg_catalog.=) 1");
  b.exec("INSERT INTO app.withjson VALUES (1, 1, '{\"a\": 1}')");
  b.exec("UPDATE app.withjson SET j = '[1]'");
  b.exec("DELETE FROM app.withjson");
  b.exec("INSERT INTO app.bounds VALUES (1, '[0:1]={5,6}')");
  b.exec("UPDATE app.bounds SET a = '{7}'");
  b.exec("INSERT INTO app.parted VALUES ('eu', 1, 'null')");
  b.exec("UPDATE app.parted SET j = '{}'");
  b.exec("DELETE FROM app.parted");

  EXPECT_THAT(
      outbox(),
      ::testing::ElementsAre(
          "app.nojson INSERT {\"v\": \"a\", \"id\": 1}", "app.nojson INSERT {\"v\": \"b\", \"id\": 2}",
          "app.nojson UPDATE {\"v\": \"c\", \"id\": 1} {\"id\": 1}", "app.nojson DELETE {\"id\": 2}",
          "app.withjsonb INSERT {\"j\": {\"n\": 1}, \"n\": 1.5, \"id\": 1}",
          "app.withjsonb INSERT {\"j\": null, \"n\": null, \"id\": 2}",
          "app.withjsonb UPDATE {\"j\": null, \"n\": 1.5, \"id\": 1} {\"id\": 1}",
          "app.withjson INSERT {\"j\": {\"a\": 1}, \"k\": 1, \"id\": 1}",
          "app.withjson UPDATE {\"j\": [1], \"k\": 1, \"id\": 1} {\"k\": 1, \"id\": 1}",
          "app.withjson DELETE {\"k\": 1, \"id\": 1}",
          "app.bounds INSERT {\"a\": [5, 6], \"id\": 1}",
          "app.bounds UPDATE {\"a\": [7], \"id\": 1} {\"id\": 1}",
          "app.parted INSERT {\"j\": null, \"id\": 1, \"region\": \"eu\"}",
          "app.parted UPDATE {\"j\": {}, \"id\": 1, \"region\": \"eu\"} {\"id\": 1, \"region\": \"eu\"}",
          "app.parted DELETE {\"id\": 1, \"region\": \"eu\"}"));
  // What tells a JSON null from SQL NULL, and the array's bounds, came through too.
  EXPECT_EQ(sql().value("SELECT string_agg(coalesce(json_nulls::text, '-') || ' ' || "
                        "coalesce(new_text::text, '-'), ', ' ORDER BY id) FROM pgfanout.changes "
                        "WHERE table_name IN ('withjsonb', 'bounds', 'parted') AND op <> 'DELETE'"),
            "- -, {j} -, {j} -, - {\"a\": \"[0:1]={5,6}\"}, - -, {j} -, - -");
}

// ---------------------------------------------------------------------------------------
// No role forges a change of a table it may not write.

TEST_F(TrustTest, ARoleInsertsIntoTheOutboxOnlyChangesOfTablesItMayWrite) {
  {
    PgSession a = as(alice);
    a.exec(
        "CREATE TABLE app.t (id int PRIMARY KEY, v text); CREATE TABLE app.other (id int PRIMARY "
        "KEY)");
    a.exec("GRANT INSERT (v) ON app.t TO " + bob.ident());
  }
  sql().exec("SELECT pgfanout.track('app.t'); SELECT pgfanout.track('app.other')");
  PgSession b = as(bob);
  const std::string insert =
      "INSERT INTO pgfanout.changes (schema_name, table_name, op, old_key) VALUES ";
  // Rights on a column are rights to write the table: such a change could come from a real write.
  b.exec(insert + "('app', 't', 'DELETE', '{\"id\": 1}')");
  EXPECT_TRUE(refused(b, insert + "('app', 't', 'TRUNCATE', NULL)"))
      << "a TRUNCATE change empties the table on every replica: it needs TRUNCATE";
  EXPECT_TRUE(refused(b, insert + "('app', 'other', 'DELETE', '{\"id\": 1}')"));
  EXPECT_TRUE(refused(b, insert + "('app', 'nowhere', 'DELETE', '{\"id\": 1}')"));
  EXPECT_TRUE(refused(b,
                      "INSERT INTO pgfanout.changes (id, schema_name, table_name, op) "
                      "OVERRIDING SYSTEM VALUE VALUES (1, 'app', 't', 'INSERT')"));
  EXPECT_TRUE(refused(b, "SELECT * FROM pgfanout.changes"));
  EXPECT_TRUE(refused(b, "DELETE FROM pgfanout.changes"));
  EXPECT_TRUE(refused(b, "UPDATE pgfanout.publisher_state SET idle = false"));
  EXPECT_TRUE(refused(b, "SELECT pgfanout.track('app.t')"));
  EXPECT_EQ(outbox(), std::vector<std::string>{"app.t DELETE {\"id\": 1}"});
}

// track() gives an ordinary table a view of the outbox of its own, into which its INSERT
// capture writes (checked once per statement, not per row; sql/install.sql,
// make_insert_capture). Every role may insert into it, so it must admit no more than the
// outbox's policy: only changes of that table, only from a role that may write the table
// now named so, never a chosen id, time, name or operation, not even through a view of
// the role's own stacked on it (whose defaults PostgreSQL does not check against the
// column grants); and no role's view on it may keep track() or untrack() from working.
TEST_F(TrustTest, ATablesOwnViewOfTheOutboxAdmitsOnlyWhatThePolicyWould) {
  {
    PgSession a = as(alice);
    a.exec("CREATE TABLE app.t (id int PRIMARY KEY, v text); CREATE TABLE app.other (id int PRIMARY KEY)");
    a.exec("GRANT INSERT (id, v) ON app.t TO " + bob.ident());
  }
  sql().exec("SELECT pgfanout.track('app.t'); SELECT pgfanout.track('app.other')");
  const std::string t_view = "pgfanout.changes_of_" + *sql().value("SELECT pgfanout.insert_capture_key('app', 't')");
  const std::string other_view =
      "pgfanout.changes_of_" + *sql().value("SELECT pgfanout.insert_capture_key('app', 'other')");
  ASSERT_EQ(sql().value("SELECT (tgfoid = to_regprocedure(pgfanout.capture_function(tgrelid) || '()') "
                        "AND tgfoid <> 'pgfanout.capture_insert()'::regprocedure)::text "
                        "FROM pg_trigger WHERE tgrelid = 'app.t'::regclass AND tgname = 'pgfanout_insert'"),
            "true");

  PgSession b = as(bob);
  b.exec("INSERT INTO app.t VALUES (1, 'written')");
  // A change bob could have made by writing app.t: admitted, under app.t's name.
  b.exec("INSERT INTO " + t_view + " (new_row) VALUES ('{\"id\": 2}')");
  EXPECT_TRUE(refused(b, "INSERT INTO " + other_view + " (new_row) VALUES ('{\"id\": 1}')"));
  // Names and op are the view's defaults, granted to no one; id, ts, old_key and
  // old_text are not in the view (the outbox's own defaults fill them).
  for (const char* column : {"schema_name", "table_name", "op"})
    EXPECT_TRUE(refused(b, "INSERT INTO " + t_view + " (" + column + ", new_row) VALUES (NULL, '{}')"))
        << column;
  for (const char* column : {"id", "ts", "old_key", "old_text"})
    EXPECT_THAT(error_of(b, "INSERT INTO " + t_view + " (" + column + ", new_row) VALUES (NULL, '{}')").what(),
                HasSubstr("does not exist"))
        << column;
  EXPECT_TRUE(refused(b, "SELECT * FROM " + t_view));
  PgSession m = as(mallory);
  EXPECT_TRUE(refused(m, "INSERT INTO " + t_view + " (new_row) VALUES ('{\"id\": 3}')"));
  // A view of bob's own on top, whose defaults name another table, a TRUNCATE, an id.
  b.exec("CREATE TEMP VIEW forge AS SELECT * FROM " + t_view);
  for (const char* set_default : {"schema_name SET DEFAULT 'app'", "table_name SET DEFAULT 'other'",
                                  "op SET DEFAULT 'TRUNCATE'"})
    b.exec(std::string("ALTER VIEW forge ALTER COLUMN ") + set_default);
  EXPECT_TRUE(refused(b, "INSERT INTO forge (new_row) VALUES (NULL)"));
  EXPECT_THAT(error_of(b, "CREATE TEMP VIEW forge_id AS SELECT id FROM " + t_view).what(),
              HasSubstr("does not exist"));
  // bob's view stays on it: track() and untrack() still work (and drop his view).
  sql().exec("SELECT pgfanout.track('app.t')");
  b.exec("CREATE TEMP VIEW stays AS SELECT * FROM " + t_view);

  // With no DDL event trigger to track it again, a renamed table's changes carry its new
  // name (as they did before it had a view), and its view admits writers of whatever
  // table now has the old name, not of the renamed one.
  sql().exec("ALTER EVENT TRIGGER pgfanout_ddl DISABLE");
  as(alice).exec("ALTER TABLE app.t RENAME TO t2; CREATE TABLE app.t (id int PRIMARY KEY)");
  b.exec("INSERT INTO app.t2 VALUES (4, 'renamed')");
  EXPECT_TRUE(refused(b, "INSERT INTO " + t_view + " (new_row) VALUES ('{\"id\": 5}')"));
  as(alice).exec("GRANT INSERT ON app.t TO " + bob.ident());
  b.exec("INSERT INTO " + t_view + " (new_row) VALUES ('{\"id\": 6}')");
  sql().exec("ALTER EVENT TRIGGER pgfanout_ddl ENABLE");

  EXPECT_THAT(outbox(), ::testing::ElementsAre("app.t INSERT {\"v\": \"written\", \"id\": 1}",
                                               "app.t INSERT {\"id\": 2}",
                                               "app.t2 INSERT {\"v\": \"renamed\", \"id\": 4}",
                                               "app.t INSERT {\"id\": 6}"));

  // untrack() and DROP TABLE (through the event trigger) take the views and functions away.
  sql().exec("SELECT pgfanout.untrack('app.t2')");
  as(alice).exec("DROP TABLE app.other");
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pg_class WHERE relnamespace = 'pgfanout'::regnamespace "
                          "AND relname LIKE 'changes\\_of\\_%'"),
            0);
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgfanout'::regnamespace "
                          "AND proname LIKE 'capture\\_insert\\_%'"),
            0);
}

// A table's name goes into its INSERT capture function as a literal: quotes, a dollar
// sign and a newline in it are captured as they are.
TEST_F(TrustTest, ATableWhoseNameHoldsANewlineOrQuotesIsCaptured) {
  const std::string table = "app.\"odd\n'name$$ -- x\"";
  as(alice).exec("CREATE TABLE " + table + " (id int PRIMARY KEY)");
  sql().exec("SELECT pgfanout.track(" + sql_literal(table) + ")");
  as(alice).exec("INSERT INTO " + table + " VALUES (1), (2)");
  EXPECT_THAT(outbox(), ::testing::ElementsAre("app.odd\n'name$$ -- x INSERT {\"id\": 1}",
                                               "app.odd\n'name$$ -- x INSERT {\"id\": 2}"));
}

// The capture never fails a write PostgreSQL accepts, whichever rights let the writer make
// it: a column grant without SELECT, a partition's own grants, an inheritance parent's
// grants (UPDATE and TRUNCATE through it), a foreign-key cascade (run as the referencing
// table's owner).
TEST_F(TrustTest, EveryWritePostgresqlAllowsIsCapturedWhateverRightsAllowedIt) {
  sql().exec("CREATE SCHEMA refs AUTHORIZATION " + carol.ident() +
             "; GRANT USAGE ON SCHEMA app TO " + carol.ident());
  {
    PgSession a = as(alice);
    a.exec(R"SQL(
CREATE TABLE app.plain (id int PRIMARY KEY, v text);
CREATE TABLE app.parted (region text, id int, v text, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE app.parted_eu PARTITION OF app.parted FOR VALUES IN ('eu');
CREATE TABLE app.parent (id int PRIMARY KEY, v text);
CREATE TABLE app.child (PRIMARY KEY (id)) INHERITS (app.parent);
CREATE TABLE app.target (id int PRIMARY KEY);
INSERT INTO app.parted VALUES ('eu', 1, 'a');
INSERT INTO app.child VALUES (1, 'a');
INSERT INTO app.target VALUES (1);
GRANT REFERENCES ON app.target TO PUBLIC;
)SQL");
    a.exec("GRANT INSERT (id, v) ON app.plain TO " + bob.ident());
    a.exec("GRANT INSERT, UPDATE, SELECT ON app.parted_eu TO " + bob.ident());
    a.exec("GRANT UPDATE, SELECT, TRUNCATE ON app.parent TO " + bob.ident());
  }
  {
    PgSession c = as(carol);
    c.exec(
        "CREATE TABLE refs.r (id int PRIMARY KEY, t int REFERENCES app.target ON DELETE CASCADE)");
    c.exec("INSERT INTO refs.r VALUES (7, 1)");
  }
  for (const char* t :
       {"app.plain", "app.parted", "app.parent", "app.child", "app.target", "refs.r"})
    sql().exec("SELECT pgfanout.track(" + sql_literal(t) + ")");

  PgSession b = as(bob);
  b.exec("INSERT INTO app.plain VALUES (1, 'x')");
  b.exec("INSERT INTO app.parted_eu VALUES ('eu', 2, 'b')");
  b.exec("UPDATE app.parted_eu SET v = 'c' WHERE id = 1");
  b.exec("UPDATE app.parent SET v = 'through parent'");
  b.exec("TRUNCATE app.parent");
  as(alice).exec("DELETE FROM app.target");

  EXPECT_THAT(outbox(), ::testing::ElementsAre(
                            "app.plain INSERT {\"v\": \"x\", \"id\": 1}",
                            "app.parted INSERT {\"v\": \"b\", \"id\": 2, \"region\": \"eu\"}",
                            "app.parted UPDATE {\"v\": \"c\", \"id\": 1, \"region\": \"eu\"} "
                            "{\"id\": 1, \"region\": \"eu\"}",
                            "app.child UPDATE {\"v\": \"through parent\", \"id\": 1} {\"id\": 1}",
                            "app.parent TRUNCATE", "app.child TRUNCATE",
                            "app.target DELETE {\"id\": 1}", "refs.r DELETE {\"id\": 7}"));
}

// ---------------------------------------------------------------------------------------
// No setting a session can set keeps a write out of the capture.

TEST_F(TrustTest, PgfanoutInstallingCountsOnlyForTheOwnerOfPgfanout) {
  as(alice).exec("CREATE TABLE app.t (id int PRIMARY KEY, v text)");
  sql().exec("SELECT pgfanout.track('app.t')");
  PgSession a = as(alice);
  a.exec("SET pgfanout.installing = on");
  auto e = error_of(a, "ALTER TABLE app.t DROP CONSTRAINT t_pkey");
  EXPECT_THAT(e.what(), HasSubstr("has no primary key"));
  EXPECT_THAT(sql().value("SELECT pgfanout.primary_key('app.t')"),
              ::testing::Optional(std::string("{id}")));

  // The installer's session is trusted with it (install.sql sets it).
  sql().exec(
      "SET pgfanout.installing = on; ALTER TABLE app.t ADD COLUMN w int; RESET "
      "pgfanout.installing");
}

// TRUNCATE of a partition is captured as DELETEs unless the whole partitioned table is
// truncated in the same statement; the word passes in a setting any session can set.
TEST_F(TrustTest, ForgedPartitionTruncateSettingsNeverHideATruncatedPartition) {
  as(alice).exec(R"SQL(
CREATE TABLE app.parted (region text, id int, v text, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE app.parted_eu PARTITION OF app.parted FOR VALUES IN ('eu');
CREATE TABLE app.parted_us PARTITION OF app.parted FOR VALUES IN ('us');
)SQL");
  as(alice).exec("GRANT SELECT, INSERT, TRUNCATE ON app.parted, app.parted_eu, app.parted_us TO " +
                 bob.ident());
  sql().exec("SELECT pgfanout.track('app.parted')");
  const std::string root_oid = *sql().value("SELECT 'app.parted'::regclass::oid::text");
  const std::string marker = "pgfanout.truncate_" + root_oid + "_1";
  as(alice).exec("INSERT INTO app.parted VALUES ('eu', 1, 'a'), ('eu', 2, 'b')");
  sql().exec("DELETE FROM pgfanout.changes");

  PgSession b = as(bob);
  // The value an earlier version's root trigger set.
  b.exec("BEGIN; SELECT set_config(" + sql_literal(marker) +
         ", 'root', true); TRUNCATE app.parted_eu; COMMIT");
  EXPECT_THAT(outbox(),
              ::testing::ElementsAre("app.parted DELETE {\"id\": 1, \"region\": \"eu\"}",
                                     "app.parted DELETE {\"id\": 2, \"region\": \"eu\"}"));

  // A real TRUNCATE change of the root, of this transaction, but a row written after it:
  // the partition's TRUNCATE must still delete that row on the replicas.
  sql().exec("DELETE FROM pgfanout.changes");
  b.exec(
      "BEGIN; TRUNCATE app.parted; "
      "SELECT set_config('trust.truncate_id', currval(pg_get_serial_sequence('pgfanout.changes', "
      "'id'))::text, true); "
      "INSERT INTO app.parted VALUES ('us', 3, 'c'); "
      "SELECT set_config(" +
      sql_literal(marker) +
      ", 'root:' || current_setting('trust.truncate_id'), true); "
      "TRUNCATE app.parted_us; COMMIT");
  EXPECT_THAT(outbox(), ::testing::ElementsAre(
                            "app.parted TRUNCATE",
                            "app.parted INSERT {\"v\": \"c\", \"id\": 3, \"region\": \"us\"}",
                            "app.parted DELETE {\"id\": 3, \"region\": \"us\"}"));

  // A TRUNCATE change of another table (one bob may truncate) covers nothing here.
  as(alice).exec("CREATE TABLE app.other (id int PRIMARY KEY); GRANT TRUNCATE ON app.other TO " +
                 bob.ident());
  sql().exec("SELECT pgfanout.track('app.other')");
  as(alice).exec("INSERT INTO app.parted VALUES ('eu', 4, 'd')");
  sql().exec("DELETE FROM pgfanout.changes");
  b.exec(
      "BEGIN; TRUNCATE app.other; "
      "SELECT set_config(" +
      sql_literal(marker) +
      ", 'root:' || currval(pg_get_serial_sequence('pgfanout.changes', 'id')), true); "
      "TRUNCATE app.parted_eu; COMMIT");
  EXPECT_THAT(outbox(),
              ::testing::ElementsAre("app.other TRUNCATE",
                                     "app.parted DELETE {\"id\": 4, \"region\": \"eu\"}"));

  // The real thing still writes one TRUNCATE, whichever order the tables come in.
  as(alice).exec("INSERT INTO app.parted VALUES ('eu', 1, 'a'), ('us', 2, 'b')");
  sql().exec("DELETE FROM pgfanout.changes");
  b.exec("TRUNCATE app.parted_eu, app.parted");
  EXPECT_THAT(outbox(), ::testing::ElementsAre("app.parted TRUNCATE"));
}

// A change made deeper in the trigger nesting than another of the same table is captured
// as the row's state; the markers that say so are settings too. Forged, they only make
// the capture state-based, which is always right.
TEST_F(TrustTest, ForgedNestingSettingsStillCaptureEveryWrite) {
  as(alice).exec("CREATE TABLE app.t (id int PRIMARY KEY, v text)");
  as(alice).exec("GRANT SELECT, INSERT, UPDATE, DELETE ON app.t TO " + bob.ident());
  sql().exec("SELECT pgfanout.track('app.t')");
  const std::string oid = *sql().value("SELECT 'app.t'::regclass::oid::text");
  PgSession b = as(bob);
  b.exec("SET pgfanout.nested = on; SET pgfanout.depth_" + oid + " = 99");
  b.exec("INSERT INTO app.t VALUES (1, 'a'), (2, 'b')");
  b.exec("UPDATE app.t SET v = 'c' WHERE id = 1");
  b.exec("DELETE FROM app.t WHERE id = 2");
  EXPECT_THAT(outbox(), ::testing::ElementsAre("app.t INSERT {\"v\": \"a\", \"id\": 1}",
                                               "app.t INSERT {\"v\": \"b\", \"id\": 2}",
                                               "app.t UPDATE {\"v\": \"c\", \"id\": 1} {\"id\": 1}",
                                               "app.t DELETE {\"id\": 2}"));
}

// What the capture cannot do for a writer, refused with a clear error rather than
// captured wrong: reading the rows it must read as that writer.
TEST_F(TrustTest, ACaptureThatMustReadRowsTheWriterMayNotReadIsRefusedClearly) {
  as(alice).exec(R"SQL(
CREATE TABLE app.t (id int PRIMARY KEY, v text);
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN UPDATE app.t SET v = 'touched' WHERE id = NEW.id AND v IS DISTINCT FROM 'touched'; RETURN NULL; END $$;
CREATE TRIGGER a_touch AFTER INSERT ON app.t FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE TABLE app.parted (region text, id int, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE app.parted_eu PARTITION OF app.parted FOR VALUES IN ('eu');
INSERT INTO app.parted VALUES ('eu', 1);
)SQL");
  as(alice).exec("GRANT INSERT ON app.t TO " + bob.ident() + "; GRANT UPDATE (v) ON app.t TO " +
                 bob.ident() + "; GRANT TRUNCATE ON app.parted_eu TO " + bob.ident());
  sql().exec("SELECT pgfanout.track('app.t'); SELECT pgfanout.track('app.parted')");
  PgSession b = as(bob);
  auto nested = error_of(b, "INSERT INTO app.t VALUES (1, 'x')");
  EXPECT_THAT(nested.what(), HasSubstr("may not read all of its rows"));
  auto truncate = error_of(b, "TRUNCATE app.parted_eu");
  EXPECT_THAT(truncate.what(), HasSubstr("may not read all of its keys"));

  as(alice).exec("GRANT SELECT ON app.t, app.parted_eu TO " + bob.ident());
  b.exec("INSERT INTO app.t VALUES (1, 'x')");
  b.exec("TRUNCATE app.parted_eu");
  EXPECT_THAT(outbox(), ::testing::Contains("app.parted DELETE {\"id\": 1, \"region\": \"eu\"}"));
  EXPECT_THAT(outbox(), ::testing::Contains("app.t INSERT {\"v\": \"touched\", \"id\": 1}"));
}

// Where a superuser installed, the DDL event trigger refuses what would switch the
// capture off for a tracked table; the table's owner could do it otherwise.
TEST_F(TrustTest, TheOwnerOfATrackedTableCannotSwitchItsCaptureOff) {
  as(alice).exec(R"SQL(
CREATE TABLE app.t (id int PRIMARY KEY, v text);
CREATE TABLE app.parted (region text, id int, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE app.parted_eu PARTITION OF app.parted FOR VALUES IN ('eu');
)SQL");
  sql().exec("SELECT pgfanout.track('app.t'); SELECT pgfanout.track('app.parted')");
  PgSession a = as(alice);
  for (const char* ddl :
       {"ALTER TABLE app.t DISABLE TRIGGER pgfanout_update",
        "ALTER TABLE app.t DISABLE TRIGGER ALL", "ALTER TABLE app.t DISABLE TRIGGER USER",
        "ALTER TABLE app.t ENABLE REPLICA TRIGGER pgfanout_insert",
        "ALTER TABLE app.parted_eu DISABLE TRIGGER pgfanout_truncate_before",
        "ALTER TABLE app.parted_eu DISABLE TRIGGER pgfanout_insert",
        "ALTER TABLE app.t SET UNLOGGED", "ALTER TABLE app.parted_eu SET UNLOGGED"}) {
    auto e = error_of(a, ddl);
    EXPECT_THAT(e.what(), HasSubstr("pgfanout: refused")) << ddl;
  }
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pg_trigger WHERE tgrelid IN ('app.t'::regclass, "
                          "'app.parted_eu'::regclass) "
                          "AND tgenabled <> 'O'"),
            0);
  EXPECT_EQ(sql().value("SELECT string_agg(relpersistence::text, '') FROM pg_class "
                        "WHERE oid IN ('app.t'::regclass, 'app.parted_eu'::regclass)"),
            "pp");
  a.exec("ALTER TABLE app.t ENABLE ALWAYS TRIGGER pgfanout_update");  // still fires
  a.exec("INSERT INTO app.t VALUES (1, 'a')");
  EXPECT_EQ(outbox(), std::vector<std::string>{"app.t INSERT {\"v\": \"a\", \"id\": 1}"});
}

// ---------------------------------------------------------------------------------------
// install.sql adopts nothing another role made, and upgrades an older install.

TEST_F(TrustTest, InstallRefusesASchemaOrATableAnotherRoleCreatedFirst) {
  ScratchDatabase fresh("pgft_trust_adopt");
  PgSession admin(fresh.conninfo());
  admin.exec("GRANT CREATE ON DATABASE " + quote_ident(fresh.name()) + " TO " + alice.ident());
  PgSession a(fresh.conninfo() + " user=" + alice.name());
  a.exec("CREATE SCHEMA pgfanout; CREATE TABLE pgfanout.changes (id bigint)");
  CommandResult r = psql_file(fresh.conninfo(), sql_dir() + "/install.sql");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err,
              HasSubstr("schema pgfanout already exists and belongs to role " + alice.name()));
  EXPECT_EQ(
      admin.integer("SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgfanout'::regnamespace"),
      0);

  // The schema is the installer's, but a table in it is not (alice was let create there).
  a.exec("DROP SCHEMA pgfanout CASCADE");
  admin.exec("CREATE SCHEMA pgfanout; GRANT CREATE, USAGE ON SCHEMA pgfanout TO " + alice.ident());
  a.exec("CREATE TABLE pgfanout.tracked (relid regclass PRIMARY KEY)");
  r = psql_file(fresh.conninfo(), sql_dir() + "/install.sql");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err,
              HasSubstr("schema pgfanout holds relation pgfanout.tracked of role " + alice.name()));
  a.exec("DROP TABLE pgfanout.tracked");
  admin.exec("REVOKE ALL ON SCHEMA pgfanout FROM " + alice.ident() +
             "; REVOKE CREATE ON DATABASE " + quote_ident(fresh.name()) + " FROM " + alice.ident());
  install_schema(fresh.conninfo());
}

TEST_F(TrustTest, InstallingAgainUpgradesGrantsAndRowSecurityAndKeepsPendingChanges) {
  as(alice).exec("CREATE TABLE app.t (id int PRIMARY KEY, v text)");
  sql().exec("SELECT pgfanout.track('app.t')");
  as(alice).exec("INSERT INTO app.t VALUES (1, 'pending')");
  // The shape of an install before this one: definer captures, no grants, no policies.
  sql().exec(R"SQL(
ALTER FUNCTION pgfanout.capture_insert() SECURITY DEFINER;
ALTER FUNCTION pgfanout.capture_row() SECURITY DEFINER;
ALTER TABLE pgfanout.changes DISABLE ROW LEVEL SECURITY;
DROP POLICY pgfanout_capture ON pgfanout.changes;
REVOKE ALL ON SCHEMA pgfanout FROM PUBLIC;
REVOKE ALL ON pgfanout.changes, pgfanout.tracked, pgfanout.publisher_state FROM PUBLIC;
)SQL");
  install_schema(db_->conninfo());
  EXPECT_EQ(
      sql().integer("SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgfanout'::regnamespace "
                    "AND prosecdef AND proname LIKE 'capture%'"),
      0);
  EXPECT_EQ(
      sql().value(
          "SELECT relrowsecurity::text FROM pg_class WHERE oid = 'pgfanout.changes'::regclass"),
      "true");
  as(alice).exec("UPDATE app.t SET v = 'after'");
  PgSession b = as(bob);
  EXPECT_TRUE(refused(b,
                      "INSERT INTO pgfanout.changes (schema_name, table_name, op) VALUES ('app', "
                      "'t', 'TRUNCATE')"));
  EXPECT_THAT(outbox(),
              ::testing::ElementsAre("app.t INSERT {\"v\": \"pending\", \"id\": 1}",
                                     "app.t UPDATE {\"v\": \"after\", \"id\": 1} {\"id\": 1}"));
}

// ---------------------------------------------------------------------------------------
// sql/roles.sql: each role can do its job and no more.

TEST_F(TrustTest, RolesSqlGivesEachRoleItsJobAndNoMore) {
  as(alice).exec(
      "CREATE TABLE app.t (id int PRIMARY KEY, v text); INSERT INTO app.t VALUES (1, 'a')");
  sql().exec("SELECT pgfanout.track('app.t')");
  // Roles are the cluster's: a logical-mode test before this one gave the publisher
  // REPLICATION (roles.sql -v logical=on), which roles.sql never takes away.
  sql().exec(std::string("ALTER ROLE ") + kPublisherRole + " NOREPLICATION");
  grant_roles(db_->conninfo(), "primary");  // again: the snapshot role reads app.t now
  as(alice).exec("INSERT INTO app.t VALUES (2, 'b')");

  for (const char* role : {kPublisherRole, kSnapshotRole, kListenerRole}) {
    EXPECT_EQ(
        sql().value(
            std::string("SELECT (rolsuper OR rolreplication OR rolbypassrls OR rolcreaterole OR "
                        "rolcreatedb)::text FROM pg_roles WHERE rolname = ") +
            sql_literal(role)),
        "false")
        << role;
  }
  PgSession publisher(conninfo_as(db_->conninfo(), kPublisherRole));
  EXPECT_EQ(publisher.integer("SELECT count(*) FROM pgfanout.changes"), 1);
  publisher.exec("UPDATE pgfanout.publisher_state SET idle = false");
  publisher.exec("DELETE FROM pgfanout.changes");
  EXPECT_TRUE(refused(publisher, "SELECT * FROM app.t"));
  EXPECT_TRUE(refused(publisher, "TRUNCATE pgfanout.changes"));
  EXPECT_TRUE(refused(publisher,
                      "INSERT INTO pgfanout.changes (schema_name, table_name, op) VALUES ('app', "
                      "'t', 'TRUNCATE')"));
  EXPECT_TRUE(refused(publisher, "ALTER TABLE pgfanout.changes DISABLE ROW LEVEL SECURITY"));
  EXPECT_TRUE(refused(publisher, "SELECT pgfanout.untrack('app.t')"));

  PgSession snapshot(conninfo_as(db_->conninfo(), kSnapshotRole));
  EXPECT_EQ(snapshot.integer("SELECT count(*) FROM app.t"), 2);
  EXPECT_EQ(snapshot.value(
                "SELECT string_agg(schema_name || '.' || table_name, ',') FROM pgfanout.tracked"),
            "app.t");
  EXPECT_TRUE(refused(snapshot, "DELETE FROM app.t"));
  EXPECT_TRUE(refused(snapshot, "SELECT * FROM pgfanout.changes"));

  // A replica: the listener owns its bookkeeping schema and may switch triggers off for
  // its own session only; it writes the replicated tables and nothing else.
  ScratchDatabase replica("pgft_trust_replica");
  PgSession admin(replica.conninfo());
  admin.exec(
      "CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY, v text); CREATE TABLE "
      "public.other (id int)");
  grant_roles(replica.conninfo(), "replica", {"schemas=app"});
  EXPECT_EQ(
      admin.value("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgfanout'"),
      kListenerRole);
  PgSession listener(conninfo_as(replica.conninfo(), kListenerRole));
  listener.exec("SET session_replication_role = replica");
  listener.exec("INSERT INTO app.t VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v");
  listener.exec("DELETE FROM app.t WHERE id = 1; TRUNCATE app.t");
  listener.exec(
      "CREATE TABLE pgfanout.listener_probe (id int); DROP TABLE pgfanout.listener_probe");
  EXPECT_TRUE(refused(listener, "INSERT INTO public.other VALUES (1)"));
  EXPECT_TRUE(refused(listener, "CREATE SCHEMA elsewhere"));
  EXPECT_TRUE(refused(listener, "ALTER SYSTEM SET work_mem = '1GB'"));

  // A bookkeeping schema the listener does not own is not taken over.
  ScratchDatabase other("pgft_trust_replica2");
  PgSession(other.conninfo()).exec("CREATE SCHEMA pgfanout");
  EXPECT_THROW(grant_roles(other.conninfo(), "replica"), HarnessError);

  // The logical capture's one extra: REPLICATION for the publisher, when asked for.
  grant_roles(db_->conninfo(), "primary", {"logical=on"});
  EXPECT_EQ(sql().value(std::string("SELECT rolreplication::text FROM pg_roles WHERE rolname = ") +
                        sql_literal(kPublisherRole)),
            "true");
}

}  // namespace
}  // namespace pgfanout::test
