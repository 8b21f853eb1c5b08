// --snapshot: a new replica gets the rows that were on the primary before it existed, then
// the live changes, and converges; a non-empty replica table stops it unless =truncate.

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "harness.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kTablesSql = R"SQL(
CREATE TABLE public.accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12, 2), tags text[]);
CREATE TABLE public.events (day date, seq int, what jsonb, PRIMARY KEY (day, seq));
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Mixed.Case" ("Key" text PRIMARY KEY, "Value" int);
CREATE TABLE public.untracked (id int PRIMARY KEY, v text);
-- Named like the alias a query may give the table: "t" must still mean the row.
CREATE TABLE public.letters (id int PRIMARY KEY, t text, k int);
)SQL";

// Rows written before the listener (or even the capture) existed: only a snapshot can
// bring them to a replica.
constexpr const char* kExistingRowsSql = R"SQL(
INSERT INTO public.accounts SELECT g, 'owner ' || g, g * 10.25, ARRAY['t' || g, NULL] FROM generate_series(1, 12000) g;
INSERT INTO public.events SELECT date '2024-01-01' + g % 30, g, jsonb_build_object('n', g, 's', repeat('é', g % 5))
  FROM generate_series(1, 300) g;
-- A JSON null and an SQL NULL, which to_jsonb writes alike.
INSERT INTO public.events VALUES ('2030-01-01', 1, 'null'), ('2030-01-01', 2, NULL);
INSERT INTO "Odd Schema"."Mixed.Case" SELECT 'k' || g, g FROM generate_series(1, 50) g;
INSERT INTO public.untracked VALUES (1, 'not replicated');
INSERT INTO public.letters SELECT g, chr(96 + g), g FROM generate_series(1, 26) g;
)SQL";

constexpr const char* kTrackSql = R"SQL(
SELECT pgfanout.track('public.accounts');
SELECT pgfanout.track('public.events');
SELECT pgfanout.track('"Odd Schema"."Mixed.Case"');
SELECT pgfanout.track('public.letters');
)SQL";

constexpr const char* kLiveChangesSql = R"SQL(
UPDATE public.accounts SET balance = balance + 1 WHERE id % 100 = 0;
DELETE FROM public.accounts WHERE id BETWEEN 500 AND 520;
INSERT INTO public.accounts VALUES (20000, 'new', 1.5, '{}');
UPDATE public.accounts SET id = 30000 WHERE id = 1;
DELETE FROM public.events WHERE seq % 7 = 0;
UPDATE "Odd Schema"."Mixed.Case" SET "Value" = -"Value" WHERE "Value" <= 10;
UPDATE public.letters SET t = upper(t) WHERE id % 5 = 0;
INSERT INTO "Odd Schema"."Mixed.Case" VALUES ('late', 0);
)SQL";

struct Checked {
  std::string table;
  std::string order_by;
};
const std::vector<Checked> kChecked{
    {"public.accounts", "t.id"},
    {"public.events", "t.day, t.seq"},
    {"\"Odd Schema\".\"Mixed.Case\"", "t.\"Key\""},
    {"public.letters", "t.id"},
};

// md5 of a table's rows in key order; ROW(t.*) rather than t, which a column "t" shadows.
std::optional<std::string> rows_md5(PgSession& db, const Checked& c) {
  return db.value("SELECT md5(string_agg(ROW(t.*)::text, '|' ORDER BY " + c.order_by + ")) FROM " +
                  c.table + " t");
}

std::vector<std::string> differences(PgSession& primary, PgSession& replica) {
  std::vector<std::string> out;
  for (const auto& c : kChecked) {
    auto want = rows_md5(primary, c);
    auto got = rows_md5(replica, c);
    if (want != got) {
      out.push_back(c.table + ": replica has " +
                    std::to_string(replica.integer("SELECT count(*) FROM " + c.table)) +
                    " rows, primary " +
                    std::to_string(primary.integer("SELECT count(*) FROM " + c.table)));
    }
  }
  return out;
}

void wait_converged(PgSession& primary, PgSession& replica) {
  eventually_value([&] { return differences(primary, replica); },
                   [](const std::vector<std::string>& d) { return d.empty(); }, kPatience,
                   "the replica to converge with the primary (tables that differ)");
}

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    primary.exec(kTablesSql);
    replica.exec(kTablesSql);
    primary.exec(kExistingRowsSql);
    install_schema(primary_db.conninfo());
    primary.exec(kTrackSql);
    ASSERT_EQ(outbox_count(primary), 0) << "the existing rows must not be in the outbox";
  }

  Process start_snapshot_listener(const std::string& mode, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{mode, "--source", primary_db.conninfo()};
    args.insert(args.end(), extra.begin(), extra.end());
    return start_listener(replica_db.conninfo(), queue.name(), exchange.name(), args);
  }

  ScratchDatabase primary_db{"pgft_snap_p"};
  ScratchDatabase replica_db{"pgft_snap_r"};
  PgSession primary = primary_db.session();
  PgSession replica = replica_db.session();
  TestExchange exchange{"pgft_snap_x"};
  TestQueue queue{exchange.name(), {}, QueueOptions::listener_compatible()};
  TestQueue dead{exchange.name(),
                 {},
                 [] {
                   QueueOptions o;
                   o.expires = 0ms;
                   return o;
                 }(),
                 queue.name() + ".dead"};
};

TEST_F(SnapshotTest, CopiesExistingRowsThenFollowsLiveChanges) {
  // The publisher runs from the start, and writes go on while the snapshot is taken: the
  // listener binds its queue before it reads, so nothing falls between the two.
  Process publisher = start_publisher(primary_db.conninfo(), exchange.name(), {"--pack", "20"});
  primary.exec("INSERT INTO public.accounts VALUES (15000, 'before the listener', 0, NULL)");
  Process listener = start_snapshot_listener("--snapshot");
  primary.exec(
      "UPDATE public.accounts SET owner = owner || ' (during)' WHERE id BETWEEN 100 AND 110");
  listener.wait_for_log("consuming from");
  EXPECT_NE(listener.log().find("snapshot: 4 tables"), std::string::npos);
  EXPECT_NE(listener.log().find("\"Odd Schema\".\"Mixed.Case\""), std::string::npos);
  primary.exec(kLiveChangesSql);
  wait_outbox_empty(primary);
  wait_converged(primary, replica);

  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.untracked"), 0);
  EXPECT_EQ(replica.value("SELECT owner FROM public.accounts WHERE id = 15000"),
            "before the listener");
  EXPECT_EQ(queue_depth(dead.name()), 0u);
  EXPECT_EQ(publisher.stop(), 0);
  EXPECT_EQ(listener.stop(), 0);
}

TEST_F(SnapshotTest, RefusesANonEmptyReplicaTableNamingIt) {
  replica.exec("INSERT INTO public.events VALUES ('1999-12-31', 1, '{\"stale\": true}')");
  Process listener = start_snapshot_listener("--snapshot");
  auto code = listener.wait_exit(kPatience);
  ASSERT_TRUE(code.has_value()) << "the listener kept running with a non-empty replica table";
  EXPECT_NE(*code, 0);
  std::string log = listener.log();
  EXPECT_NE(log.find("\"public\".\"events\" is not empty"), std::string::npos) << log;
  // Nothing was copied: the snapshot is one replica transaction.
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.accounts"), 0);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.events"), 1);
}

// A replica-only table that references a snapshot table cannot be emptied with it: the
// listener refuses (exit non-zero, saying why) and changes nothing, instead of retrying.
TEST_F(SnapshotTest, TruncateRefusedByAReplicaOnlyReferenceExitsSayingWhy) {
  replica.exec(R"SQL(
INSERT INTO public.accounts VALUES (1, 'stale owner', -1, NULL);
CREATE TABLE public.local_notes (id int PRIMARY KEY, account_id int REFERENCES public.accounts);
INSERT INTO public.local_notes VALUES (1, 1);
)SQL");
  Process listener = start_snapshot_listener("--snapshot=truncate");
  auto code = listener.wait_exit(kPatience);
  ASSERT_TRUE(code.has_value()) << "the listener kept running although the truncate was refused";
  EXPECT_NE(*code, 0);
  std::string log = listener.log();
  EXPECT_NE(log.find("references one of them"), std::string::npos) << log;
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.accounts"), 1);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.local_notes"), 1);
}

TEST_F(SnapshotTest, TruncateReplacesTheReplicaRowsAndConverges) {
  replica.exec(R"SQL(
INSERT INTO public.events VALUES ('1999-12-31', 1, '{"stale": true}');
INSERT INTO public.accounts VALUES (1, 'stale owner', -1, NULL), (99999, 'only on the replica', 0, NULL);
)SQL");
  Process listener = start_snapshot_listener("--snapshot=truncate");
  listener.wait_for_log("consuming from");
  Process publisher = start_publisher(primary_db.conninfo(), exchange.name());
  primary.exec(kLiveChangesSql);
  wait_outbox_empty(primary);
  wait_converged(primary, replica);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.accounts WHERE id = 99999"), 0);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.events WHERE day = '1999-12-31'"), 0);
  EXPECT_EQ(publisher.stop(), 0);
  EXPECT_EQ(listener.stop(), 0);
}

// A replica may have columns of its own, json/jsonb ones too (the listener leaves them
// alone): the snapshot reads from the source only the columns the source has.
TEST_F(SnapshotTest, AReplicaOnlyJsonColumnIsLeftAlone) {
  replica.exec("ALTER TABLE public.letters ADD COLUMN local_notes jsonb DEFAULT '{\"kept\": true}'");
  Process listener = start_snapshot_listener("--snapshot");
  listener.wait_for_log("consuming from");
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.letters WHERE local_notes = '{\"kept\": true}'"), 26);
  EXPECT_EQ(replica.value("SELECT string_agg(t, '' ORDER BY id) FROM public.letters"),
            primary.value("SELECT string_agg(t, '' ORDER BY id) FROM public.letters"));
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.events WHERE what = 'null'::jsonb"), 1);
  EXPECT_EQ(listener.stop(), 0);
}

// An inheritance parent's own rows are its rows: its children's rows are copied to the
// children (when tracked), not into the parent, as the changes say.
TEST_F(SnapshotTest, AnInheritanceParentGetsOnlyItsOwnRows) {
  for (PgSession* db : {&primary, &replica}) {
    db->exec("CREATE TABLE public.base (id int PRIMARY KEY, v text);"
             "CREATE TABLE public.derived (PRIMARY KEY (id)) INHERITS (public.base)");
  }
  primary.exec("INSERT INTO public.base VALUES (1, 'base'); INSERT INTO public.derived VALUES (2, 'derived');"
               "SELECT pgfanout.track('public.base'); SELECT pgfanout.track('public.derived')");
  Process listener = start_snapshot_listener("--snapshot");
  listener.wait_for_log("consuming from");
  EXPECT_EQ(replica.value("SELECT string_agg(id || ' ' || v, ',' ORDER BY id) FROM ONLY public.base"), "1 base");
  EXPECT_EQ(replica.value("SELECT string_agg(id || ' ' || v, ',' ORDER BY id) FROM public.derived"), "2 derived");
  EXPECT_EQ(listener.stop(), 0);
}

// A partitioned table has no rows of its own: its partitions' rows are copied under its
// name, as its changes are reported.
TEST_F(SnapshotTest, APartitionedTableGetsItsPartitionsRows) {
  for (PgSession* db : {&primary, &replica}) {
    db->exec("CREATE TABLE public.parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);"
             "CREATE TABLE public.parted_low PARTITION OF public.parted FOR VALUES FROM (0) TO (100);"
             "CREATE TABLE public.parted_high PARTITION OF public.parted FOR VALUES FROM (100) TO (200)");
  }
  primary.exec("INSERT INTO public.parted VALUES (1, 'low'), (150, 'high'); SELECT pgfanout.track('public.parted')");
  Process listener = start_snapshot_listener("--snapshot");
  listener.wait_for_log("consuming from");
  EXPECT_EQ(replica.value("SELECT string_agg(id || ' ' || v, ',' ORDER BY id) FROM public.parted"), "1 low,150 high");
  EXPECT_EQ(listener.stop(), 0);
}

TEST_F(SnapshotTest, CopiesOnlyTheTablesOfTables) {
  // Only public.accounts is replicated here: the other tables' replica contents (even a
  // non-empty one) are none of the snapshot's business.
  replica.exec("INSERT INTO public.events VALUES ('1999-12-31', 1, '{\"stale\": true}')");
  Process listener = start_snapshot_listener("--snapshot", {"--tables", "public.accounts"});
  listener.wait_for_log("consuming from");
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.accounts"), 12000);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.events"), 1);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM \"Odd Schema\".\"Mixed.Case\""), 0);
  EXPECT_EQ(table_md5(replica, "public.accounts", "t.id"),
            table_md5(primary, "public.accounts", "t.id"));
  EXPECT_EQ(listener.stop(), 0);
}

// Tables linked by a foreign key can only be truncated in one statement (PostgreSQL refuses
// "TRUNCATE parent" while another table references it, whatever session_replication_role
// says), so --snapshot=truncate empties all its tables at once.
TEST_F(SnapshotTest, TruncateModeWithForeignKeysBetweenTrackedTables) {
  constexpr const char* kNotes =
      "CREATE TABLE public.notes (id int PRIMARY KEY, account_id int REFERENCES public.accounts);";
  primary.exec(kNotes);
  replica.exec(kNotes);
  primary.exec(
      "INSERT INTO public.notes SELECT g, g FROM generate_series(1, 10) g;"
      "SELECT pgfanout.track('public.notes');");
  replica.exec(
      "INSERT INTO public.accounts VALUES (1, 'stale', 0, NULL); INSERT INTO public.notes VALUES "
      "(1, 1);");
  Process listener = start_snapshot_listener("--snapshot=truncate");
  listener.wait_for_log("consuming from");
  EXPECT_EQ(rows_md5(replica, {"public.notes", "t.id"}),
            rows_md5(primary, {"public.notes", "t.id"}));
  EXPECT_EQ(rows_md5(replica, {"public.accounts", "t.id"}),
            rows_md5(primary, {"public.accounts", "t.id"}));
  EXPECT_EQ(listener.stop(), 0);
}

}  // namespace
}  // namespace pgfanout::test

namespace pgfanout::test {
namespace {

// A service manager restarts the listener with the flags it was given: --snapshot must
// copy once, not make the second start exit because the tables are no longer empty.
TEST_F(SnapshotTest, ARestartWithTheSameFlagsAfterTheSnapshotGoesOnConsuming) {
  Process publisher = start_publisher(primary_db.conninfo(), exchange.name(), {"--pack", "20"});
  {
    Process first = start_snapshot_listener("--snapshot");
    first.wait_for_log("consuming from");
    ASSERT_EQ(first.stop(), 0);
  }
  primary.exec(kLiveChangesSql);
  Process again = start_snapshot_listener("--snapshot");
  again.wait_for_log("consuming from");
  EXPECT_NE(again.log().find("has its snapshot of 4 tables already"), std::string::npos) << again.log();
  EXPECT_TRUE(again.running());
  wait_outbox_empty(primary);
  wait_converged(primary, replica);
  EXPECT_EQ(queue_depth(dead.name()), 0u);
}

// A wider --tables copies the tables it adds, and only those: the others hold rows now
// (which a copy would refuse) and are already followed by the queue.
TEST_F(SnapshotTest, AWiderTablesCopiesOnlyTheTablesItAdds) {
  Process publisher = start_publisher(primary_db.conninfo(), exchange.name(), {"--pack", "20"});
  {
    Process first = start_snapshot_listener("--snapshot", {"--tables", "public.accounts"});
    first.wait_for_log("consuming from");
    ASSERT_EQ(first.stop(), 0);
  }
  ASSERT_EQ(replica.integer("SELECT count(*) FROM public.events"), 0);
  primary.exec("UPDATE public.accounts SET owner = 'after the first snapshot' WHERE id = 7");
  Process wider = start_snapshot_listener("--snapshot", {"--tables", "public.accounts,public.events"});
  wider.wait_for_log("consuming from");
  std::string log = wider.log();
  EXPECT_NE(log.find("1 of 2 tables were copied for queue"), std::string::npos) << log;
  EXPECT_NE(log.find("copied 302 rows of \"public\".\"events\""), std::string::npos) << log;
  EXPECT_EQ(log.find("rows of \"public\".\"accounts\""), std::string::npos) << log;
  wait_outbox_empty(primary);
  for (const auto& c : {kChecked[0], kChecked[1]}) {
    eventually_value([&] { return rows_md5(replica, c); },
                     [&](const std::optional<std::string>& md5) { return md5 == rows_md5(primary, c); },
                     kPatience, c.table + " on the replica to equal the primary");
  }
}

// A copy cut off (here: the listener killed while the replica's table lock holds up its
// writes) committed nothing, so the next start copies again, as if it never ran.
TEST_F(SnapshotTest, AStartAfterAnInterruptedCopyCopiesAgain) {
  {
    PgSession blocker = replica_db.session();
    // SHARE: reads go on (the emptiness check), the snapshot's writes wait.
    blocker.exec("BEGIN; LOCK TABLE public.letters IN SHARE MODE");
    Process first = start_snapshot_listener("--snapshot");
    first.wait_for_log("snapshot: copied");
    eventually([&] {
      PgSession probe = replica_db.session();
      return probe.integer("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'public.letters'::regclass") > 0;
    }, kPatience, "the snapshot to wait for the replica's table lock");
    first.kill();
    blocker.exec("ROLLBACK");
  }
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.accounts"), 0);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM pgfanout.listener_snapshots"), 0);
  Process again = start_snapshot_listener("--snapshot");
  again.wait_for_log("consuming from");
  EXPECT_NE(again.log().find("snapshot: 4 tables"), std::string::npos) << again.log();
  wait_converged(primary, replica);
}

// --snapshot=truncate is the way to force a fresh copy: it copies although the snapshot
// is recorded, and replaces what the replica holds.
TEST_F(SnapshotTest, TruncateAlwaysCopiesAgain) {
  {
    Process first = start_snapshot_listener("--snapshot");
    first.wait_for_log("consuming from");
    ASSERT_EQ(first.stop(), 0);
  }
  replica.exec("DELETE FROM public.accounts WHERE id <= 100");
  Process again = start_snapshot_listener("--snapshot=truncate");
  again.wait_for_log("consuming from");
  EXPECT_NE(again.log().find("snapshot: 4 tables"), std::string::npos) << again.log();
  wait_converged(primary, replica);
}

}  // namespace
}  // namespace pgfanout::test

namespace pgfanout::test {
namespace {

// Big enough to be cut into ctid ranges (over 2 x 1024 pages of 8 kB).
constexpr const char* kBigTableSql =
    "CREATE TABLE public.big (id int PRIMARY KEY, payload text, n bigint)";
constexpr const char* kBigRowsSql =
    "INSERT INTO public.big SELECT g, repeat(md5(g::text), 3), g * 7 FROM generate_series(1, 200000) g;"
    "SELECT pgfanout.track('public.big');";

// Several workers copy ranges of one table in the same exported snapshot, each on a
// replica connection of its own: together they copy every row once, under writes.
TEST_F(SnapshotTest, ABigTableIsCopiedBySeveralWorkersAndEqualsTheSource) {
  primary.exec(kBigTableSql);
  replica.exec(kBigTableSql);
  primary.exec(kBigRowsSql);
  Process publisher = start_publisher(primary_db.conninfo(), exchange.name(), {"--pack", "20"});
  Process listener = start_snapshot_listener("--snapshot", {"--snapshot-workers", "3"});
  // Writes go on while the ranges are copied: rows move to new pages (updates), leave
  // (deletes) and arrive (inserts at the end); each row is copied once, as of the snapshot,
  // and the queue brings the rest.
  for (int i = 0; i < 40 && listener.log().find("consuming from") == std::string::npos; ++i) {
    primary.exec("UPDATE public.big SET n = -n WHERE id % 997 = " + std::to_string(i) + ";" +
                 "DELETE FROM public.big WHERE id = " + std::to_string(1000 + i * 4001) + ";" +
                 "INSERT INTO public.big VALUES (" + std::to_string(300000 + i) + ", 'late', 0)");
  }
  listener.wait_for_log("consuming from");
  std::string log = listener.log();
  EXPECT_NE(log.find("rows of \"public\".\"big\" in 3 ctid ranges"), std::string::npos) << log;
  EXPECT_NE(log.find("snapshot: 5 tables"), std::string::npos) << log;
  EXPECT_NE(log.find("(3 workers)"), std::string::npos) << log;
  wait_outbox_empty(primary);
  eventually_value([&] { return table_md5(replica, "public.big", "t.id"); },
                   [&](const std::optional<std::string>& md5) { return md5 == table_md5(primary, "public.big", "t.id"); },
                   kPatience, "public.big on the replica to equal the primary");
  EXPECT_TRUE(differences(primary, replica).empty());
  EXPECT_EQ(queue_depth(dead.name()), 0u);
  EXPECT_EQ(publisher.stop(), 0);
  EXPECT_EQ(listener.stop(), 0);
}

// COPY carries the text PostgreSQL writes, so values to_jsonb would change read back the
// same: hstore (whose json form hstore's input cannot read), arrays whose lower bound is
// not 1, json with duplicate keys, odd spacing and key order, hstore[], and a column
// order that differs on the replica.
TEST_F(SnapshotTest, ValuesWhoseJsonFormDiffersAreCopiedExactly) {
  primary.exec("CREATE EXTENSION hstore;"
               "CREATE TABLE public.exact (id int PRIMARY KEY, h hstore, a int[], j json, hs hstore[], "
               "m int[][], b bytea, f float8, ts timestamptz, iv interval)");
  replica.exec("CREATE EXTENSION hstore;"
               "CREATE TABLE public.exact (local text DEFAULT 'mine', iv interval, ts timestamptz, f float8, "
               "b bytea, m int[][], hs hstore[], j json, a int[], h hstore, id int PRIMARY KEY)");
  primary.exec(R"SQL(
INSERT INTO public.exact VALUES
  (1, 'a=>1, "b c"=>NULL, "q\"x"=>"y\\z"', '[0:1]={5,6}', '{"k": 1, "k": 2,  "a" :[1, 2]}',
   ARRAY['x=>1'::hstore, 'y=>NULL'], '[-1:0][2:3]={{1,2},{3,4}}', '\x00ff0a', 0.1 + 0.2,
   '2024-02-29 23:59:59.123456+05:30', '1 year 2 months -3 days 04:05:06.789'),
  (2, NULL, '{}', 'null', NULL, NULL, NULL, 'NaN', '-infinity', NULL),
  (3, '', '[5:5]={NULL}', '"\u00e9\t"', '{}', NULL, '', '-0', 'infinity', '0');
SELECT pgfanout.track('public.exact');
)SQL");
  Process listener = start_snapshot_listener("--snapshot", {"--tables", "public.exact"});
  listener.wait_for_log("consuming from");
  const std::string columns =
      "id, h::text, a::text, j::text, hs::text, m::text, b::text, f::text, ts::text, iv::text";
  for (int id = 1; id <= 3; ++id) {
    const std::string sql = "SELECT ROW(" + columns + ")::text FROM public.exact WHERE id = " + std::to_string(id);
    EXPECT_EQ(replica.value(sql), primary.value(sql)) << "row " << id;
  }
  EXPECT_EQ(replica.value("SELECT a::text FROM public.exact WHERE id = 1"), "[0:1]={5,6}");
  EXPECT_EQ(replica.value("SELECT j::text FROM public.exact WHERE id = 1"), "{\"k\": 1, \"k\": 2,  \"a\" :[1, 2]}");
  EXPECT_EQ(replica.value("SELECT h -> 'q\"x' FROM public.exact WHERE id = 1"), "y\\z");
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.exact WHERE local = 'mine'"), 3);
  EXPECT_EQ(listener.stop(), 0);
}

// kill -9 in the middle of the copy of a big table: the workers' replica transactions
// never committed, the tables stay marked as being copied, and a restart with the same
// flags empties them, copies again and records the snapshot once.
TEST_F(SnapshotTest, AKilledCopyRestartedWithTheSameFlagsEndsEqualAndRecordedOnce) {
  primary.exec(kBigTableSql);
  replica.exec(kBigTableSql);
  primary.exec(kBigRowsSql);
  {
    PgSession blocker = replica_db.session();
    // The last table waits for this lock, so the copy cannot end before the kill.
    blocker.exec("BEGIN; LOCK TABLE public.letters IN SHARE MODE");
    Process first = start_snapshot_listener("--snapshot");
    eventually([&] {
      PgSession probe = replica_db.session();
      return probe.integer("SELECT count(*) FROM pg_stat_progress_copy WHERE relid = 'public.big'::regclass "
                           "AND tuples_processed > 0") > 0;
    }, kPatience, "the snapshot to be copying public.big");
    first.kill();
    blocker.exec("ROLLBACK");
  }
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.big"), 0);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM pgfanout.listener_snapshots"), 0);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM pgfanout.listener_snapshot_copies"), 5);

  primary.exec("UPDATE public.big SET n = -n WHERE id % 1000 = 0");
  Process publisher = start_publisher(primary_db.conninfo(), exchange.name(), {"--pack", "20"});
  Process again = start_snapshot_listener("--snapshot");
  again.wait_for_log("consuming from");
  EXPECT_NE(again.log().find("snapshot: 5 tables"), std::string::npos) << again.log();
  wait_outbox_empty(primary);
  wait_converged(primary, replica);
  eventually_value([&] { return table_md5(replica, "public.big", "t.id"); },
                   [&](const std::optional<std::string>& md5) { return md5 == table_md5(primary, "public.big", "t.id"); },
                   kPatience, "public.big on the replica to equal the primary");
  EXPECT_EQ(replica.integer("SELECT count(*) FROM pgfanout.listener_snapshots WHERE queue = " +
                            sql_literal(queue.name())), 5);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM pgfanout.listener_snapshot_copies"), 0);
  EXPECT_EQ(queue_depth(dead.name()), 0u);
}

// The workers commit one after the other: a copy cut off between two commits leaves rows
// of its own in a table still marked as being copied. The next start empties it and
// copies again (an unmarked non-empty table is still refused: RefusesANonEmptyReplicaTable).
TEST_F(SnapshotTest, RowsAnInterruptedCopyCommittedAreEmptiedAndCopiedAgain) {
  {
    // A first start makes the listener's bookkeeping tables.
    Process first = start_snapshot_listener("--snapshot", {"--tables", "public.letters"});
    first.wait_for_log("consuming from");
    ASSERT_EQ(first.stop(), 0);
  }
  replica.exec("INSERT INTO public.accounts SELECT g, 'half-copied', 0, NULL FROM generate_series(1, 100) g;"
               "INSERT INTO pgfanout.listener_snapshot_copies VALUES (" + sql_literal(queue.name()) +
               ", 'public', 'accounts', now())");
  Process again = start_snapshot_listener("--snapshot");
  again.wait_for_log("consuming from");
  std::string log = again.log();
  EXPECT_NE(log.find("emptying 1 tables an interrupted copy"), std::string::npos) << log;
  EXPECT_NE(log.find("snapshot: 3 tables"), std::string::npos) << log;
  EXPECT_TRUE(differences(primary, replica).empty());
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.accounts WHERE owner = 'half-copied'"), 0);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM pgfanout.listener_snapshot_copies"), 0);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM pgfanout.listener_snapshots"), 4);
  EXPECT_EQ(again.stop(), 0);
}

// A worker count that is not a whole number from 1 to 64, from the command line or the
// environment, is a usage error naming the flag, before any connection is tried.
TEST(SnapshotCommandLine, MalformedSnapshotWorkersExitTwoWithOneLineNamingTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, EnvVars>> cases{
      {{"--snapshot-workers", "0"}, {}},
      {{"--snapshot-workers", "-1"}, {}},
      {{"--snapshot-workers", "abc"}, {}},
      {{"--snapshot-workers", "1x"}, {}},
      {{"--snapshot-workers", "65"}, {}},
      {{"--snapshot-workers", "4294967297"}, {}},  // 1 as a 32-bit number
      {{"--snapshot-workers", "99999999999999999999"}, {}},
      {{"--snapshot-workers", ""}, {}},
      {{}, {{"PGFANOUT_SNAPSHOT_WORKERS", "many"}}},
      {{}, {{"PGFANOUT_SNAPSHOT_WORKERS", "0"}}},
  };
  for (const auto& [args, env] : cases) {
    std::vector<std::string> argv{listener_binary(), "--target", "dbname=x", "--queue", "q",
                                  "--snapshot", "--source", "dbname=y"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string shown;
    for (const auto& a : args) shown += " '" + a + "'";
    for (const auto& [k, v] : env) shown += " " + k + "=" + v;
    SCOPED_TRACE("pgfanout-listener" + shown);
    CommandResult r = run_command(argv, 15s, env);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr: " << r.err;
    EXPECT_NE(r.err.find("--snapshot-workers"), std::string::npos) << "stderr: " << r.err;
    EXPECT_NE(r.err.find("1 to 64"), std::string::npos) << "stderr: " << r.err;
    EXPECT_EQ(r.out, "");
  }
}

}  // namespace
}  // namespace pgfanout::test
