// TRUNCATE of partitions of a tracked partitioned table (sql/install.sql,
// pgfanout.capture_partition_truncate): a partition, a sub-partition or a mid-level
// partition is captured as one DELETE per removed row under the root's name; the root as
// one TRUNCATE change, although PostgreSQL fires the partitions' TRUNCATE triggers too.
// SQL-level tests count what lands in the outbox; chain tests check that replicas end up
// with the primary's rows.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;
using ::testing::UnorderedElementsAreArray;

// A three-level tree: parted -> parted_eu, parted_us -> (parted_us_low, parted_us_high),
// parted_other (DEFAULT). The primary key includes the partition keys, as it must. Ids
// of 200 and more in 'us' have no partition yet.
constexpr const char* kTreeSql = R"SQL(
CREATE TABLE public.parted (region text, id int, v text, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE public.parted_eu PARTITION OF public.parted FOR VALUES IN ('eu');
CREATE TABLE public.parted_us PARTITION OF public.parted FOR VALUES IN ('us') PARTITION BY RANGE (id);
CREATE TABLE public.parted_us_low PARTITION OF public.parted_us FOR VALUES FROM (MINVALUE) TO (100);
CREATE TABLE public.parted_us_high PARTITION OF public.parted_us FOR VALUES FROM (100) TO (200);
CREATE TABLE public.parted_other PARTITION OF public.parted DEFAULT;
)SQL";

// 3 rows in each leaf: eu 1-3, us_low 1-3, us_high 101-103, other ('xx', 1-3).
constexpr const char* kFillSql = R"SQL(
INSERT INTO public.parted SELECT 'eu', g, 'e' || g FROM generate_series(1, 3) g;
INSERT INTO public.parted SELECT 'us', g, 'u' || g FROM generate_series(1, 3) g;
INSERT INTO public.parted SELECT 'us', g, 'h' || g FROM generate_series(101, 103) g;
INSERT INTO public.parted SELECT 'xx', g, 'x' || g FROM generate_series(1, 3) g;
)SQL";

// ---------------------------------------------------------------------------------------
// SQL level: what the capture writes into the outbox.

class PartitionTruncateSql : public ::testing::Test {
 protected:
  void SetUp() override {
    db_.emplace("pgft_ptrunc");
    install_schema(db_->conninfo());
    sql_.emplace(db_->conninfo());
    sql().exec(kTreeSql);
    sql().exec("SELECT pgfanout.track('public.parted')");
  }

  PgSession& sql() { return *sql_; }

  // Empties the tree and the outbox, then writes kFillSql and empties the outbox again.
  void refill() {
    sql().exec("TRUNCATE public.parted");
    sql().exec(kFillSql);
    sql().exec("DELETE FROM pgfanout.changes");
  }
  // The outbox as "schema.table op old_key" lines, in id order.
  std::vector<std::string> outbox() {
    std::vector<std::string> out;
    for (const auto& r : sql().query(
             "SELECT schema_name || '.' || table_name || ' ' || op || coalesce(' ' || old_key::text, '') "
             "FROM pgfanout.changes ORDER BY id"))
      out.push_back(r[0].value_or("NULL"));
    return out;
  }
  static std::vector<std::string> deletes(const std::string& region, std::vector<int> ids) {
    std::vector<std::string> out;
    for (int id : ids)
      out.push_back("public.parted DELETE {\"id\": " + std::to_string(id) + ", \"region\": \"" + region +
                    "\"}");
    return out;
  }
  static std::vector<std::string> concat(std::vector<std::vector<std::string>> parts) {
    std::vector<std::string> out;
    for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  }
  // The TRUNCATE triggers (pgfanout.capture_partition_truncate) on `table`.
  std::int64_t truncate_triggers(const std::string& table) {
    return sql().integer(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = " + sql_literal(table) +
        "::regclass AND tgfoid = 'pgfanout.capture_partition_truncate()'::regprocedure");
  }
  std::int64_t stale_count() { return sql().integer("SELECT count(*) FROM pgfanout.stale_tracking(NULL)"); }

  std::optional<ScratchDatabase> db_;
  std::optional<PgSession> sql_;
};

const std::string kRootTruncate = "public.parted TRUNCATE";

TEST_F(PartitionTruncateSql, TrackPutsBeforeAndAfterTriggersOnTheRootAndEveryLeaf) {
  for (const char* t : {"public.parted", "public.parted_eu", "public.parted_us_low", "public.parted_us_high",
                        "public.parted_other"})
    EXPECT_EQ(truncate_triggers(t), 2) << t;
  EXPECT_EQ(truncate_triggers("public.parted_us"), 0) << "a mid-level partition has no rows of its own";
  EXPECT_EQ(stale_count(), 0);
}

TEST_F(PartitionTruncateSql, TruncateOfAPartitionWritesOneDeletePerRowUnderTheRootsName) {
  refill();
  sql().exec("TRUNCATE public.parted_eu");
  EXPECT_THAT(outbox(), UnorderedElementsAreArray(deletes("eu", {1, 2, 3})));
  // The same for a bigger partition: exactly N rows, all distinct keys.
  sql().exec("INSERT INTO public.parted SELECT 'eu', g, 'big' FROM generate_series(1, 1000) g");
  sql().exec("DELETE FROM pgfanout.changes");
  sql().exec("TRUNCATE public.parted_eu");
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pgfanout.changes WHERE op = 'DELETE' "
                          "AND schema_name = 'public' AND table_name = 'parted'"),
            1000);
  EXPECT_EQ(sql().integer("SELECT count(DISTINCT old_key) FROM pgfanout.changes"), 1000);
  EXPECT_EQ(outbox_count(sql()), 1000);
}

TEST_F(PartitionTruncateSql, TruncateOfASubPartitionOrAMidLevelPartitionDeletesEachLeafRowOnce) {
  refill();
  sql().exec("TRUNCATE public.parted_us_high");
  EXPECT_THAT(outbox(), UnorderedElementsAreArray(deletes("us", {101, 102, 103})));

  refill();
  sql().exec("TRUNCATE public.parted_us");
  EXPECT_THAT(outbox(), UnorderedElementsAreArray(deletes("us", {1, 2, 3, 101, 102, 103})));

  refill();
  sql().exec("TRUNCATE public.parted_us_low, public.parted_us");  // a leaf named twice, in effect
  EXPECT_THAT(outbox(), UnorderedElementsAreArray(deletes("us", {1, 2, 3, 101, 102, 103})));
}

TEST_F(PartitionTruncateSql, TruncateOfSeveralPartitionsInOneStatement) {
  refill();
  sql().exec("TRUNCATE public.parted_eu, public.parted_us_high, public.parted_other");
  EXPECT_THAT(outbox(), UnorderedElementsAreArray(concat(
                            {deletes("eu", {1, 2, 3}), deletes("us", {101, 102, 103}), deletes("xx", {1, 2, 3})})));
  EXPECT_EQ(sql().integer("SELECT count(*) FROM public.parted"), 3);
}

TEST_F(PartitionTruncateSql, TruncateOfTheRootWritesOneTruncateAndNoDeletes) {
  refill();
  sql().exec("TRUNCATE public.parted");
  EXPECT_EQ(outbox(), std::vector<std::string>{kRootTruncate});

  // A partition named before the root fires its triggers first; its DELETEs are taken
  // back by the root's trigger.
  refill();
  sql().exec("TRUNCATE public.parted_eu, public.parted_us_low, public.parted");
  EXPECT_EQ(outbox(), std::vector<std::string>{kRootTruncate});

  refill();
  sql().exec("TRUNCATE public.parted, public.parted_eu");
  EXPECT_EQ(outbox(), std::vector<std::string>{kRootTruncate});
}

TEST_F(PartitionTruncateSql, TruncateCascadeReachingTheRootWritesOneTruncate) {
  // CASCADE adds the referencing tables in OID order, so a partition older than its root
  // (attached later) comes before it.
  sql().exec(R"SQL(
CREATE TABLE public.owner (id int PRIMARY KEY);
CREATE TABLE public.old_part (region text NOT NULL, id int NOT NULL, owner_id int, PRIMARY KEY (region, id));
CREATE TABLE public.owned (region text, id int, owner_id int REFERENCES public.owner, PRIMARY KEY (region, id))
  PARTITION BY LIST (region);
CREATE TABLE public.owned_a PARTITION OF public.owned FOR VALUES IN ('a');
ALTER TABLE public.owned ATTACH PARTITION public.old_part FOR VALUES IN ('old');
SELECT pgfanout.track('public.owner');
SELECT pgfanout.track('public.owned');
INSERT INTO public.owner SELECT g FROM generate_series(1, 3) g;
INSERT INTO public.owned SELECT r, g, g FROM unnest(ARRAY['a', 'old']) r, generate_series(1, 3) g;
DELETE FROM pgfanout.changes;
)SQL");
  ASSERT_LT(sql().integer("SELECT 'public.old_part'::regclass::oid::bigint"),
            sql().integer("SELECT 'public.owned'::regclass::oid::bigint"));
  EXPECT_EQ(truncate_triggers("public.old_part"), 2) << "an attached partition gets the triggers";
  sql().exec("TRUNCATE public.owner CASCADE");
  EXPECT_THAT(outbox(), UnorderedElementsAreArray({"public.owner TRUNCATE", "public.owned TRUNCATE"}));

  // CASCADE from a partition: the referencing table is truncated, the partition's rows are
  // DELETEs.
  refill();
  sql().exec(R"SQL(
CREATE TABLE public.ref (id int PRIMARY KEY, region text, pid int, FOREIGN KEY (region, pid) REFERENCES public.parted);
SELECT pgfanout.track('public.ref');
INSERT INTO public.ref VALUES (1, 'eu', 1);
DELETE FROM pgfanout.changes;
)SQL");
  sql().exec("TRUNCATE public.parted_eu CASCADE");
  EXPECT_THAT(outbox(), UnorderedElementsAreArray(concat({deletes("eu", {1, 2, 3}), {"public.ref TRUNCATE"}})));
}

TEST_F(PartitionTruncateSql, TwoTruncatesInOneTransactionAreCapturedEachAsItWas) {
  refill();
  sql().exec("BEGIN; TRUNCATE public.parted_eu; TRUNCATE public.parted; COMMIT;");
  EXPECT_EQ(outbox(), concat({deletes("eu", {1, 2, 3}), {kRootTruncate}}));

  refill();
  sql().exec(
      "BEGIN; TRUNCATE public.parted; INSERT INTO public.parted VALUES ('eu', 7, 'again'); "
      "TRUNCATE public.parted_eu; COMMIT;");
  auto rows = outbox();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], kRootTruncate);
  EXPECT_EQ(rows[1], "public.parted INSERT");
  EXPECT_EQ(rows[2], deletes("eu", {7})[0]);

  // A statement that named the root leaves nothing behind for the next one.
  refill();
  sql().exec("BEGIN; TRUNCATE public.parted_eu, public.parted; TRUNCATE public.parted_us; COMMIT;");
  EXPECT_EQ(outbox(), std::vector<std::string>{kRootTruncate});  // parted_us was empty by then
  sql().exec(kFillSql);
  sql().exec("DELETE FROM pgfanout.changes");
  sql().exec(
      "DO $$ BEGIN TRUNCATE public.parted_eu, public.parted; "
      "INSERT INTO public.parted VALUES ('us', 5, 'x'); TRUNCATE public.parted_us; END $$");
  EXPECT_EQ(outbox(), (std::vector<std::string>{kRootTruncate, "public.parted INSERT",
                                                deletes("us", {5})[0]}));
}

TEST_F(PartitionTruncateSql, AStatementRolledBackToASavepointLeavesNoMarker) {
  sql().exec(R"SQL(
CREATE TABLE public.boom (id int);
CREATE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
CREATE TRIGGER boom BEFORE TRUNCATE ON public.boom EXECUTE FUNCTION public.boom();
)SQL");
  refill();
  // The root's BEFORE trigger runs (marker set), then boom's fails: the savepoint's
  // rollback must take the marker with it, or the next TRUNCATE of a leaf would be lost.
  sql().exec(
      "BEGIN; SAVEPOINT s; "
      "DO $$ BEGIN TRUNCATE public.parted, public.boom; EXCEPTION WHEN raise_exception THEN NULL; END $$; "
      "TRUNCATE public.parted_eu; COMMIT;");
  EXPECT_THAT(outbox(), UnorderedElementsAreArray(deletes("eu", {1, 2, 3})));
}

TEST_F(PartitionTruncateSql, DeleteKeysAreThoseOfARowLevelDelete) {
  sql().exec(R"SQL(
CREATE TABLE public."Odd Keys" (k numeric, t timestamptz, "Name ""q""" text, payload jsonb,
  PRIMARY KEY (k, t, "Name ""q""")) PARTITION BY RANGE (k);
CREATE TABLE public."Odd Keys p" PARTITION OF public."Odd Keys" FOR VALUES FROM (MINVALUE) TO (MAXVALUE);
SELECT pgfanout.track('public."Odd Keys"');
INSERT INTO public."Odd Keys" VALUES (1.10, '2026-01-02 03:04:05.678+01', 'it''s "x"', '{"a": 1}'),
                                     (-0.000001, 'infinity', '', NULL);
DELETE FROM pgfanout.changes;
DELETE FROM public."Odd Keys";
)SQL");
  auto by_delete = sql().query(
      "SELECT schema_name, table_name, old_key::text FROM pgfanout.changes ORDER BY old_key::text");
  ASSERT_EQ(by_delete.size(), 2u);
  sql().exec(R"SQL(
INSERT INTO public."Odd Keys" VALUES (1.10, '2026-01-02 03:04:05.678+01', 'it''s "x"', '{"a": 1}'),
                                     (-0.000001, 'infinity', '', NULL);
DELETE FROM pgfanout.changes;
TRUNCATE public."Odd Keys p";
)SQL");
  auto by_truncate = sql().query(
      "SELECT schema_name, table_name, old_key::text FROM pgfanout.changes ORDER BY old_key::text");
  EXPECT_EQ(by_truncate, by_delete);
  ASSERT_EQ(by_truncate.size(), 2u);
  EXPECT_EQ(by_truncate[0][1], "Odd Keys");
}

TEST_F(PartitionTruncateSql, PartitionsCreatedOrAttachedAfterTrackGetTheTriggers) {
  sql().exec(R"SQL(
CREATE TABLE public.parted_us_top PARTITION OF public.parted_us FOR VALUES FROM (200) TO (MAXVALUE);
CREATE TABLE public.parted_fr PARTITION OF public.parted FOR VALUES IN ('fr') PARTITION BY RANGE (id);
CREATE TABLE public.parted_fr_all PARTITION OF public.parted_fr FOR VALUES FROM (MINVALUE) TO (MAXVALUE);
CREATE TABLE public.parted_de (region text NOT NULL, id int NOT NULL, v text, PRIMARY KEY (region, id));
ALTER TABLE public.parted ATTACH PARTITION public.parted_de FOR VALUES IN ('de');
)SQL");
  for (const char* t : {"public.parted_us_top", "public.parted_fr_all", "public.parted_de"})
    EXPECT_EQ(truncate_triggers(t), 2) << t;
  EXPECT_EQ(stale_count(), 0);

  sql().exec(R"SQL(
INSERT INTO public.parted VALUES ('us', 250, 'a'), ('us', 251, 'b'), ('fr', 1, 'c'), ('de', 1, 'd');
DELETE FROM pgfanout.changes;
TRUNCATE public.parted_us_top, public.parted_fr, public.parted_de;
)SQL");
  EXPECT_THAT(outbox(), UnorderedElementsAreArray(
                            concat({deletes("us", {250, 251}), deletes("fr", {1}), deletes("de", {1})})));
}

TEST_F(PartitionTruncateSql, ADetachedPartitionLosesItsTriggersAndReportsNothing) {
  refill();
  sql().exec("ALTER TABLE public.parted DETACH PARTITION public.parted_eu");
  EXPECT_EQ(truncate_triggers("public.parted_eu"), 0);
  sql().exec("ALTER TABLE public.parted_us DETACH PARTITION public.parted_us_low");
  EXPECT_EQ(truncate_triggers("public.parted_us_low"), 0);
  sql().exec("DELETE FROM pgfanout.changes; TRUNCATE public.parted_eu; TRUNCATE public.parted_us_low;");
  EXPECT_EQ(outbox(), std::vector<std::string>{});
  EXPECT_EQ(stale_count(), 0);

  // Without the event trigger the detached table keeps its triggers, which then write
  // nothing; installing again drops them.
  sql().exec(R"SQL(
ALTER TABLE public.parted ATTACH PARTITION public.parted_eu FOR VALUES IN ('eu');
ALTER EVENT TRIGGER pgfanout_ddl DISABLE;
ALTER TABLE public.parted DETACH PARTITION public.parted_eu;
ALTER EVENT TRIGGER pgfanout_ddl ENABLE;
INSERT INTO public.parted_eu VALUES ('eu', 1, 'alone');
DELETE FROM pgfanout.changes;
)SQL");
  ASSERT_EQ(truncate_triggers("public.parted_eu"), 2);
  sql().exec("TRUNCATE public.parted_eu");
  EXPECT_EQ(outbox(), std::vector<std::string>{}) << "a detached partition reported to its old root";
  install_schema(db_->conninfo());
  EXPECT_EQ(truncate_triggers("public.parted_eu"), 0);

  // Attached to another tracked table, its rows are reported under that one's name.
  sql().exec(R"SQL(
CREATE TABLE public.other_tree (region text, id int, v text, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
SELECT pgfanout.track('public.other_tree');
INSERT INTO public.parted_eu VALUES ('eu', 1, 'alone');
ALTER TABLE public.other_tree ATTACH PARTITION public.parted_eu FOR VALUES IN ('eu');
INSERT INTO public.parted_eu VALUES ('eu', 2, 'moved');
DELETE FROM pgfanout.changes;
TRUNCATE public.parted_eu;
)SQL");
  // Row 1 came in with ATTACH (not captured, like any DDL); both go as DELETEs.
  EXPECT_THAT(outbox(), UnorderedElementsAreArray({"public.other_tree DELETE {\"id\": 1, \"region\": \"eu\"}",
                                                   "public.other_tree DELETE {\"id\": 2, \"region\": \"eu\"}"}));
}

TEST_F(PartitionTruncateSql, InstallingAgainAddsTheTriggersToPartitionsOfTrackedTables) {
  // The shape an earlier version left: the root's AFTER TRUNCATE trigger only.
  sql().exec(R"SQL(
DROP TRIGGER pgfanout_truncate_before ON public.parted;
DROP TRIGGER pgfanout_truncate ON public.parted;
CREATE TRIGGER pgfanout_truncate AFTER TRUNCATE ON public.parted
  FOR EACH STATEMENT EXECUTE FUNCTION pgfanout.capture_truncate();
DO $$
DECLARE t record;
BEGIN
  FOR t IN SELECT tgname, tgrelid::regclass AS rel FROM pg_trigger
           WHERE tgfoid = 'pgfanout.capture_partition_truncate()'::regprocedure LOOP
    EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
  END LOOP;
END $$;
)SQL");
  ASSERT_EQ(truncate_triggers("public.parted_eu"), 0);
  EXPECT_EQ(stale_count(), 1);
  refill();
  sql().exec("INSERT INTO public.parted VALUES ('eu', 9, 'pending')");
  std::string pending = sql().value("SELECT string_agg(c::text, E'\\n' ORDER BY id) FROM pgfanout.changes c")
                            .value_or("");

  install_schema(db_->conninfo());

  EXPECT_EQ(sql().value("SELECT string_agg(c::text, E'\\n' ORDER BY id) FROM pgfanout.changes c").value_or(""),
            pending)
      << "installing again changed pending changes";
  for (const char* t : {"public.parted", "public.parted_eu", "public.parted_us_low", "public.parted_us_high",
                        "public.parted_other"})
    EXPECT_EQ(truncate_triggers(t), 2) << t;
  EXPECT_EQ(stale_count(), 0);
  sql().exec("DELETE FROM pgfanout.changes; TRUNCATE public.parted_eu;");
  EXPECT_THAT(outbox(), UnorderedElementsAreArray(deletes("eu", {1, 2, 3, 9})));
  sql().exec("DELETE FROM pgfanout.changes; TRUNCATE public.parted;");
  EXPECT_EQ(outbox(), std::vector<std::string>{kRootTruncate});

  // And a third install changes nothing.
  auto triggers = sql().query("SELECT tgrelid::regclass::text, tgname, tgfoid::regproc::text FROM pg_trigger "
                              "WHERE NOT tgisinternal ORDER BY 1, 2");
  install_schema(db_->conninfo());
  EXPECT_EQ(sql().query("SELECT tgrelid::regclass::text, tgname, tgfoid::regproc::text FROM pg_trigger "
                        "WHERE NOT tgisinternal ORDER BY 1, 2"),
            triggers);
}

TEST_F(PartitionTruncateSql, UntrackAndUninstallRemoveThePartitionTriggers) {
  sql().exec("SELECT pgfanout.untrack('public.parted')");
  // (pgfanout's own tables keep theirs: publisher_state's keeps the idle flag's sequence.)
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
                          "JOIN pg_class c ON c.oid = t.tgrelid "
                          "WHERE p.pronamespace = 'pgfanout'::regnamespace "
                          "AND c.relnamespace <> 'pgfanout'::regnamespace"),
            0);
  refill();
  sql().exec("TRUNCATE public.parted_eu; TRUNCATE public.parted;");
  EXPECT_EQ(outbox_count(sql()), 0);

  sql().exec("SELECT pgfanout.track('public.parted')");
  ASSERT_EQ(truncate_triggers("public.parted_eu"), 2);
  uninstall_schema(db_->conninfo());
  EXPECT_EQ(sql().integer("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgfanout%'"), 0);
  sql().exec(kFillSql);
  sql().exec("TRUNCATE public.parted_eu; TRUNCATE public.parted;");  // no capture left to fail
}

// In READ COMMITTED the DELETEs are read after TRUNCATE got its lock, so a row that a
// writer committed while the TRUNCATE waited for it is deleted on the replicas too.
TEST_F(PartitionTruncateSql, ATruncateThatWaitedForAWriterCapturesItsRows) {
  refill();
  PgSession writer(db_->conninfo());
  writer.exec("BEGIN; INSERT INTO public.parted VALUES ('eu', 50, 'late');");
  std::exception_ptr failure;
  std::thread truncater([&] {
    try {
      PgSession s(db_->conninfo());
      s.exec("TRUNCATE public.parted_eu");
    } catch (...) {
      failure = std::current_exception();
    }
  });
  // Commit once the TRUNCATE is waiting for the writer's lock.
  eventually(
      [&] {
        return sql().integer("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = "
                             "'public.parted_eu'::regclass") > 0;
      },
      kPatience, "the TRUNCATE to wait for the writer");
  writer.exec("COMMIT");
  truncater.join();
  if (failure) std::rethrow_exception(failure);
  auto rows = outbox();
  EXPECT_THAT(rows, UnorderedElementsAreArray(concat({{"public.parted INSERT"}, deletes("eu", {1, 2, 3, 50})})));
  ASSERT_FALSE(rows.empty());
  EXPECT_EQ(rows.front(), "public.parted INSERT") << "the INSERT must come before its DELETE";
}

// Under REPEATABLE READ the DELETEs would be read with the transaction's snapshot and miss
// rows committed since, so such a TRUNCATE of a partition is refused (nothing lost), while
// a TRUNCATE of the whole partitioned table, one TRUNCATE change, is fine.
TEST_F(PartitionTruncateSql, TruncateOfAPartitionUnderRepeatableReadIsRefused) {
  refill();
  PgSession s(db_->conninfo());
  s.exec("BEGIN ISOLATION LEVEL REPEATABLE READ");
  try {
    s.exec("TRUNCATE public.parted_eu");
    ADD_FAILURE() << "TRUNCATE of a partition under REPEATABLE READ was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("REPEATABLE READ"), std::string::npos) << e.what();
  }
  s.exec("ROLLBACK");
  EXPECT_EQ(sql().integer("SELECT count(*) FROM public.parted_eu"), 3);
  EXPECT_EQ(outbox_count(sql()), 0);
  s.exec("BEGIN ISOLATION LEVEL REPEATABLE READ; TRUNCATE public.parted; COMMIT;");
  EXPECT_EQ(outbox(), std::vector<std::string>{kRootTruncate});
}

// ---------------------------------------------------------------------------------------
// The whole chain: a primary, one replica, the publisher and a listener.

class PartitionTruncateChain : public ::testing::Test, public SmallChain {
 protected:
  PartitionTruncateChain() : SmallChain(kTreeSql, {"public.parted"}) {}

  // Everything applied, the replica's parted equal to the primary's (md5 of all rows in
  // key order, and the count), and nothing dead-lettered.
  void expect_converged() {
    wait_applied();
    EXPECT_EQ(queue_depth(dead.name()), 0u) << "dead letters: " << listener->count_in_log("dead-lettered");
    const char* order = "t.region, t.id";
    EXPECT_EQ(table_md5(replica, "public.parted", order), table_md5(primary, "public.parted", order));
    EXPECT_EQ(replica.integer("SELECT count(*) FROM public.parted"),
              primary.integer("SELECT count(*) FROM public.parted"));
  }

  // Fills the tree and waits until the replica holds the rows, so that a TRUNCATE after
  // it has something to remove there.
  void fill_and_replicate() {
    primary.exec(kFillSql);
    wait_applied();
    ASSERT_EQ(replica.integer("SELECT count(*) FROM public.parted"), 12);
  }
};

TEST_F(PartitionTruncateChain, TruncateOfAPartitionRemovesItsRowsOnlyOnTheReplica) {
  fill_and_replicate();
  primary.exec("TRUNCATE public.parted_eu");
  expect_converged();
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.parted WHERE region = 'eu'"), 0);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.parted"), 9);
}

TEST_F(PartitionTruncateChain, TruncateOfASubPartitionAndOfAMidLevelPartition) {
  fill_and_replicate();
  primary.exec("TRUNCATE public.parted_us_high");
  expect_converged();
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.parted"), 9);
  primary.exec("INSERT INTO public.parted VALUES ('us', 150, 'back'); TRUNCATE public.parted_us;");
  expect_converged();
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.parted"), 6);
}

TEST_F(PartitionTruncateChain, TruncateOfTheRootAndOfSeveralPartitionsInOneStatement) {
  fill_and_replicate();
  primary.exec("TRUNCATE public.parted_eu, public.parted_us_low, public.parted_other");
  expect_converged();
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.parted"), 3);

  primary.exec("DELETE FROM public.parted");
  fill_and_replicate();
  primary.exec("TRUNCATE public.parted_us, public.parted; INSERT INTO public.parted VALUES ('eu', 1, 'after');");
  expect_converged();
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.parted"), 1);

  // Mixed in one transaction with other writes.
  primary.exec("DELETE FROM public.parted");
  fill_and_replicate();
  primary.exec(
      "BEGIN; TRUNCATE public.parted_other; UPDATE public.parted SET v = 'u' WHERE region = 'eu'; "
      "TRUNCATE public.parted_us_high; INSERT INTO public.parted VALUES ('xx', 9, 'new'); COMMIT;");
  expect_converged();
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.parted"), 7);
}

TEST_F(PartitionTruncateChain, TruncateOfAPartitionCreatedAfterTrack) {
  fill_and_replicate();
  const char* ddl = R"SQL(
CREATE TABLE public.parted_us_top PARTITION OF public.parted_us FOR VALUES FROM (200) TO (MAXVALUE);
CREATE TABLE public.parted_fr PARTITION OF public.parted FOR VALUES IN ('fr');
)SQL";
  replica.exec(ddl);
  primary.exec(ddl);
  primary.exec(
      "INSERT INTO public.parted SELECT 'us', g, 't' FROM generate_series(200, 204) g; "
      "INSERT INTO public.parted SELECT 'fr', g, 'f' FROM generate_series(1, 5) g;");
  wait_applied();
  ASSERT_EQ(replica.integer("SELECT count(*) FROM public.parted"), 22);
  primary.exec("TRUNCATE public.parted_us_top; TRUNCATE public.parted_fr;");
  expect_converged();
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.parted"), 12);
}

}  // namespace
}  // namespace pgfanout::test
