// The logical capture (sql/install.sql, pgfanout.set_capture; publisher/slot_reader.cpp)
// and the switches between it and the trigger capture, on the real servers: what
// set_capture() does to the tracked tables, the slot and the publication; that no change
// is lost, reordered or given a second id across a switch or a publisher crash; the
// cases pgoutput makes special (unchanged TOASTed values, TRUNCATE ... CASCADE, key
// changes, partitions, spilled transactions, DDL mid-stream, tables no queue is bound
// for); and uninstall.sql's and install.sql's refusals.
//
// Not tested here: wal_level below logical (set_capture's error) needs a server restart
// with another wal_level, which the shared test cluster cannot take.

#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "harness.hpp"
#include "pgfanout/pg_connection.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;

// Ends the walsenders of every replication slot of database `dbname` and drops the
// slots: DROP DATABASE refuses a database that a slot belongs to, and a slot left behind
// keeps WAL on the shared cluster.
void drop_slots_of(const std::string& dbname) {
  PgSession admin(pg_admin_conninfo());
  const std::string db = sql_literal(dbname);
  eventually(
      [&] {
        admin.exec("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                   "WHERE database = " + db + " AND active_pid IS NOT NULL");
        admin.exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                   "WHERE database = " + db + " AND NOT active");
        return admin.integer("SELECT count(*) FROM pg_replication_slots WHERE database = " + db) == 0;
      },
      kPatience, "the replication slots of " + dbname + " to be dropped");
}

// A database that may get replication slots: they are dropped before it is.
struct SlotDatabase {
  explicit SlotDatabase(std::string_view prefix) : db(prefix) {}
  ~SlotDatabase() {
    try {
      drop_slots_of(db.name());
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
  }
  ScratchDatabase db;
};

// A primary and a replica, each created with `tables_sql`, `tracked` tracked on the
// primary, in logical capture when asked (the publisher's role then gets REPLICATION),
// a listener for the replica, a publisher (one change per message) unless asked not to,
// and `tap`, a queue bound to every table that sees every message the publisher sends.
struct Chain {
  Chain(const std::string& tables_sql, const std::vector<std::string>& tracked, bool logical,
        bool run_publisher = true, std::vector<std::string> listener_flags = {}) {
    primary.exec(tables_sql);
    replica.exec(tables_sql);
    install_schema(primary_db.db.conninfo());
    grant_roles(primary_db.db.conninfo(), "primary", {"logical=on"});
    for (const auto& t : tracked) primary.exec("SELECT pgfanout.track(" + sql_literal(t) + ")");
    if (logical) {
      EXPECT_EQ(primary.value("SELECT pgfanout.set_capture('logical')"), "logical");
    }
    listener.emplace(start_listener(replica_db.conninfo(), queue.name(), exchange.name(), listener_flags));
    listener->wait_for_log("consuming from");
    if (run_publisher) start();
  }
  ~Chain() {
    publisher.reset();
    listener.reset();
  }
  void start() { publisher.emplace(start_publisher(primary_db.db.conninfo(), exchange.name())); }
  void stop() {
    EXPECT_EQ(publisher->stop(), std::optional<int>(0));
    publisher.reset();
  }
  // Waits until `table` holds the same rows on the replica as on the primary; then no
  // message may have been dead-lettered.
  void converge(const std::string& table, const std::string& order_by = "k",
                std::chrono::milliseconds timeout = kPatience) {
    std::optional<std::string> want;
    eventually(
        [&] {
          want = table_md5(primary, table, order_by);
          return table_md5(replica, table, order_by) == want;
        },
        timeout, "the replica's " + table + " to match the primary's");
    EXPECT_EQ(queue_depth(dead.name()), 0u) << "dead-lettered changes of " << table;
  }
  std::string mode() { return primary.value("SELECT mode FROM pgfanout.capture").value_or("NULL"); }
  std::optional<std::string> slot_name() { return primary.value("SELECT slot_name FROM pgfanout.capture"); }
  std::int64_t slots() {
    return primary.integer("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()");
  }

  SlotDatabase primary_db{"pgft_cap_p"};
  ScratchDatabase replica_db{"pgft_cap_r"};
  PgSession primary = primary_db.db.session();
  PgSession replica = replica_db.session();
  TestExchange exchange{"pgft_cap_x"};
  TestQueue queue{exchange.name(), {}, QueueOptions::listener_compatible()};
  TestQueue dead{exchange.name(), {}, QueueOptions::dead_letter_compatible(), queue.name() + ".dead"};
  TestQueue tap{exchange.name(), {"#"}};
  std::optional<Process> listener;
  std::optional<Process> publisher;
};

constexpr const char* kTwoTables = R"SQL(
CREATE TABLE public.t (k int PRIMARY KEY, v text);
CREATE TABLE public.u (k int PRIMARY KEY, v text);
)SQL";

// Catalog facts about a table on `db`.
std::int64_t pgfanout_triggers(PgSession& db, const std::string& table) {
  return db.integer("SELECT count(*) FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid "
                    "WHERE tg.tgrelid = " + sql_literal(table) + "::regclass "
                    "AND p.pronamespace = 'pgfanout'::regnamespace");
}
std::string replica_identity(PgSession& db, const std::string& table) {
  return db.value("SELECT relreplident::text FROM pg_class WHERE oid = " + sql_literal(table) + "::regclass")
      .value_or("NULL");
}
// Members of publication pgfanout, sorted, as regclass text.
std::vector<std::string> publication_members(PgSession& db) {
  std::vector<std::string> out;
  for (const auto& r : db.query("SELECT pr.prrelid::regclass::text FROM pg_publication_rel pr "
                                "JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = 'pgfanout' "
                                "ORDER BY 1"))
    out.push_back(r[0].value_or("NULL"));
  return out;
}

// Every message in `tap` until it stays empty for a few seconds (call once the replica
// has every change: the tap got each message when the listener's queue did).
std::vector<Delivery> drain(TestQueue& tap) {
  std::vector<Delivery> out;
  while (auto d = tap.next(3s)) out.push_back(std::move(*d));
  return out;
}

// The key column k of the change in a message (one change per message: the publisher
// runs with --pack 1), or nullopt for a change without one (TRUNCATE).
std::optional<long> key_of(const Delivery& d) {
  static const std::regex key(R"re("k":\s*(-?[0-9]+))re");
  std::smatch m;
  if (!std::regex_search(d.body, m, key)) return std::nullopt;
  return std::stol(m[1].str());
}

// Checks the ids of the messages: one id per change (the same id again only as the same
// message, published again), and per table and row, strictly increasing in the order
// the messages arrived. Returns how many distinct changes there were.
std::size_t check_ids(const std::vector<Delivery>& messages) {
  std::map<long long, std::string> body_of;
  std::map<std::pair<std::string, long>, long long> last_of_row;
  std::size_t distinct = 0;
  for (const auto& d : messages) {
    long long id = std::stoll(d.message_id);
    auto [it, fresh] = body_of.emplace(id, d.body);
    if (!fresh) {
      EXPECT_EQ(it->second, d.body) << "id " << id << " was published with two different changes";
      continue;  // published again after a restart: already counted
    }
    ++distinct;
    auto k = key_of(d);
    if (!k) continue;
    auto row = std::make_pair(d.routing_key, *k);
    auto last = last_of_row.find(row);
    if (last != last_of_row.end()) {
      EXPECT_GT(id, last->second) << "row " << d.routing_key << " k=" << *k << ": id " << id
                                  << " arrived after id " << last->second << " (" << d.body << ")";
    }
    last_of_row[row] = id;
  }
  return distinct;
}

// ---------------------------------------------------------------------------------------
// 1. What set_capture() does to the tables, the publication and the slot.

TEST(Capture, SwitchMovesTrackedTablesToThePublicationAndBack) {
  Chain chain(kTwoTables, {"public.t", "public.u"}, /*logical=*/false);
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.t SELECT g, 'trigger' FROM generate_series(1, 10) g");
  chain.converge("public.t");
  EXPECT_EQ(chain.slots(), 0);

  // The publisher follows the switch by itself.
  EXPECT_EQ(p.value("SELECT pgfanout.set_capture('logical')"), "logical");
  EXPECT_EQ(chain.mode(), "logical");
  for (const char* t : {"public.t", "public.u"}) {
    EXPECT_EQ(pgfanout_triggers(p, t), 0) << t;
    EXPECT_EQ(replica_identity(p, t), "f") << t;
  }
  EXPECT_EQ(publication_members(p),
            (std::vector<std::string>{"pgfanout.capture", "pgfanout.partition_truncates", "t", "u"}));
  ASSERT_TRUE(chain.slot_name().has_value());
  EXPECT_EQ(p.integer("SELECT count(*) FROM pg_replication_slots WHERE slot_name = "
                      "(SELECT slot_name FROM pgfanout.capture) AND plugin = 'pgoutput' "
                      "AND database = current_database()"),
            1);
  EXPECT_EQ(chain.slots(), 1);

  p.exec("INSERT INTO public.t SELECT g, 'logical' FROM generate_series(11, 20) g");
  p.exec("UPDATE public.t SET v = v || '+' WHERE k % 3 = 0");
  p.exec("INSERT INTO public.u SELECT g, 'logical' FROM generate_series(1, 5) g");
  p.exec("DELETE FROM public.t WHERE k IN (1, 12)");
  chain.converge("public.t");
  chain.converge("public.u");
  EXPECT_EQ(outbox_count(p), 0) << "logical mode writes no outbox rows";

  EXPECT_EQ(p.value("SELECT pgfanout.set_capture('trigger')"), "trigger");
  for (const char* t : {"public.t", "public.u"}) {
    EXPECT_GT(pgfanout_triggers(p, t), 0) << t;
    EXPECT_EQ(replica_identity(p, t), "d") << t;
  }
  EXPECT_EQ(publication_members(p), (std::vector<std::string>{"pgfanout.capture", "pgfanout.partition_truncates"}));
  p.exec("UPDATE public.u SET v = 'trigger again'");
  p.exec("INSERT INTO public.t VALUES (100, 'trigger again')");
  chain.converge("public.t");
  chain.converge("public.u");
  // Once the publisher shipped the slot's changes up to the switch, it drops the slot.
  eventually([&] { return chain.slots() == 0; }, kPatience, "the slot to be dropped");
  EXPECT_EQ(chain.slot_name(), std::nullopt);
}

// ---------------------------------------------------------------------------------------
// 2. Switches with changes pending: none lost, none out of order, one increasing id each.

TEST(Capture, TriggerToLogicalWithPendingOutboxKeepsOrderAndIds) {
  Chain chain("CREATE TABLE public.t (k int PRIMARY KEY, v text);", {"public.t"}, /*logical=*/false,
              /*run_publisher=*/false);
  PgSession& p = chain.primary;
  std::size_t changes = 0;
  p.exec("INSERT INTO public.t SELECT g, 'a' FROM generate_series(1, 5) g");
  p.exec("UPDATE public.t SET v = 'b'");
  changes += 10;
  EXPECT_EQ(outbox_count(p), 10);
  EXPECT_EQ(p.value("SELECT pgfanout.set_capture('logical')"), "logical");
  p.exec("INSERT INTO public.t SELECT g, 'c' FROM generate_series(6, 10) g");
  p.exec("UPDATE public.t SET v = v || 'd'");
  p.exec("BEGIN; UPDATE public.t SET v = v || 'e' WHERE k <= 3; DELETE FROM public.t WHERE k = 2; COMMIT");
  changes += 5 + 10 + 3 + 1;
  EXPECT_EQ(outbox_count(p), 10) << "logical mode adds nothing to the outbox";

  chain.start();
  chain.converge("public.t");
  wait_outbox_empty(p);
  EXPECT_EQ(check_ids(drain(chain.tap)), changes);
}

TEST(Capture, LogicalToTriggerWithUndrainedSlotKeepsOrderAndIds) {
  Chain chain("CREATE TABLE public.t (k int PRIMARY KEY, v text);", {"public.t"}, /*logical=*/true);
  PgSession& p = chain.primary;
  std::size_t changes = 0;
  p.exec("INSERT INTO public.t SELECT g, 'a' FROM generate_series(1, 5) g");
  changes += 5;
  chain.converge("public.t");
  chain.stop();

  // Kept by the slot while the publisher is down.
  p.exec("UPDATE public.t SET v = v || 'b'");
  p.exec("INSERT INTO public.t SELECT g, 'c' FROM generate_series(6, 8) g");
  changes += 8;
  EXPECT_EQ(p.value("SELECT pgfanout.set_capture('trigger')"), "trigger");
  // In the outbox, with ids above every id the slot's changes get.
  p.exec("UPDATE public.t SET v = v || 'd'");
  p.exec("DELETE FROM public.t WHERE k = 4");
  p.exec("INSERT INTO public.t VALUES (9, 'e')");
  changes += 8 + 1 + 1;
  EXPECT_TRUE(chain.slot_name().has_value()) << "the slot stays until it is shipped";

  chain.start();
  chain.converge("public.t");
  wait_outbox_empty(p);
  eventually([&] { return chain.slots() == 0; }, kPatience, "the drained slot to be dropped");
  EXPECT_EQ(chain.slot_name(), std::nullopt);
  EXPECT_EQ(check_ids(drain(chain.tap)), changes);
}

// A second replica of kTwoTables whose listener binds public.u only (its queue is the
// first one bound for it).
struct SecondReplica {
  explicit SecondReplica(const std::string& exchange)
      : queue{exchange, {}, QueueOptions::listener_compatible()},
        dead{exchange, {}, QueueOptions::dead_letter_compatible(), queue.name() + ".dead"} {
    session.exec(kTwoTables);
    listener.emplace(start_listener(db.conninfo(), queue.name(), exchange, {"--tables", "public.u"}));
  }
  ScratchDatabase db{"pgft_cap_r2"};
  PgSession session = db.session();
  TestQueue queue;
  TestQueue dead;
  std::optional<Process> listener;
};

// A switch back while the publisher streams, with changes of an unbound table parked in
// the outbox (so that it reads the outbox as it streams) and a big transaction in the
// slot just before the switch: the trigger capture's changes, which the publisher may see
// in the outbox before it has read the slot up to the switch, go out after the slot's.
TEST(Capture, LiveSwitchBackWithParkedChangesKeepsEachRowsOrder) {
  Chain chain(kTwoTables, {"public.t", "public.u"}, /*logical=*/true, /*run_publisher=*/true,
              {"--tables", "public.t"});
  delete_queue(chain.tap.name());
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.u VALUES (1, 'parked')");
  eventually([&] { return outbox_count(p) == 1; }, kPatience, "the change of public.u to be parked");
  p.exec("INSERT INTO public.t SELECT g, 'logical' FROM generate_series(1, 20000) g");
  p.exec("SELECT pgfanout.set_capture('trigger')");
  p.exec("UPDATE public.t SET v = 'trigger' WHERE k % 1000 = 0");
  p.exec("UPDATE public.u SET v = 'trigger'");
  chain.converge("public.t", "k", 120s);
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.t WHERE v = 'trigger'"), 20);
  eventually([&] { return chain.slots() == 0; }, kPatience, "the drained slot to be dropped");

  SecondReplica second(chain.exchange.name());
  PgSession& r2 = second.session;
  eventually([&] { return r2.value("SELECT v FROM public.u WHERE k = 1") == std::optional<std::string>("trigger"); },
             60s, "replica 2 to get public.u's changes in order");
  wait_outbox_empty(p, 60s);
  EXPECT_EQ(queue_depth(second.dead.name()), 0u);
}

// Switches back and forth while a writer keeps updating the same rows and the
// publisher runs: every change arrives once, in each row's order, with increasing ids.
TEST(Capture, SwitchesUnderAWriteLoadKeepEachRowsOrderAndIds) {
  Chain chain("CREATE TABLE public.t (k int PRIMARY KEY, v text, n int);", {"public.t"}, /*logical=*/false);
  PgSession& p = chain.primary;
  {
    BackgroundWriter writer(chain.primary_db.db.conninfo(), [](std::int64_t i) {
      return "INSERT INTO public.t VALUES (" + std::to_string(i % 40) + ", 'w" + std::to_string(i) +
             "', 0) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, n = public.t.n + 1";
    });
    for (const char* mode : {"logical", "trigger", "logical", "trigger", "logical"}) {
      std::int64_t before = writer.commits();
      eventually([&] { return writer.commits() >= before + 150; }, kPatience, "the writer to write");
      EXPECT_EQ(p.value(std::string("SELECT pgfanout.set_capture('") + mode + "')"), mode);
      // The next switch to logical waits for the publisher to ship the last slot.
      if (std::string_view(mode) == "trigger")
        eventually([&] { return !chain.slot_name().has_value(); }, kPatience, "the publisher to drop the slot");
    }
    std::int64_t before = writer.commits();
    eventually([&] { return writer.commits() >= before + 150; }, kPatience, "the writer to write");
    writer.stop();
  }
  chain.converge("public.t", "k", 60s);
  wait_outbox_empty(p);
  std::size_t distinct = check_ids(drain(chain.tap));
  EXPECT_EQ(static_cast<std::int64_t>(distinct), p.integer("SELECT count(*) + sum(n) FROM public.t"))
      << "one id per change";
  EXPECT_EQ(chain.slots(), 1) << "the slots of the earlier logical periods are dropped";
}

// Switch after switch with the publisher running: each time, the slot is shipped up to
// the switch back, dropped (its walsender may still hold it for a moment after the
// publisher closed the stream), and the trigger capture's changes follow.
TEST(Capture, SwitchBackAgainAndAgainDropsEachSlotAndShipsWhatFollows) {
  Chain chain("CREATE TABLE public.t (k int PRIMARY KEY, v text);", {"public.t"}, /*logical=*/false);
  PgSession& p = chain.primary;
  for (int round = 0; round < 6; ++round) {
    const std::string r = std::to_string(round);
    EXPECT_EQ(p.value("SELECT pgfanout.set_capture('logical')"), "logical");
    p.exec("INSERT INTO public.t VALUES (" + r + ", 'logical " + r + "')");
    EXPECT_EQ(p.value("SELECT pgfanout.set_capture('trigger')"), "trigger");
    p.exec("UPDATE public.t SET v = 'trigger " + r + "' WHERE k = " + r);
    chain.converge("public.t");
    eventually([&] { return chain.slots() == 0 && !chain.slot_name().has_value(); }, kPatience,
               "the slot of round " + r + " to be dropped");
  }
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.t WHERE v LIKE 'trigger %'"), 6);
}

// In trigger mode the publisher reads pgfanout.capture when a session starts and when
// set_capture() notifies it, not once per batch (a round trip each): a row-level security
// policy on the table counts the publisher's reads.
TEST(Capture, TriggerModeReadsTheModeAtStartNotAtEveryBatch) {
  Chain chain("CREATE TABLE public.t (k int PRIMARY KEY, v text);", {"public.t"}, /*logical=*/false,
              /*run_publisher=*/false);
  PgSession& p = chain.primary;
  p.exec("CREATE SEQUENCE public.capture_reads; "
         "GRANT USAGE ON SEQUENCE public.capture_reads TO pgfanout_publisher; "
         "ALTER TABLE pgfanout.capture ENABLE ROW LEVEL SECURITY; "
         "CREATE POLICY counted ON pgfanout.capture FOR SELECT TO pgfanout_publisher "
         "USING (nextval('public.capture_reads') > 0)");
  auto reads = [&] {
    return p.integer("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.capture_reads");
  };
  chain.start();
  constexpr int kBatches = 20;
  for (int i = 0; i < kBatches; ++i) {
    p.exec("INSERT INTO public.t VALUES (" + std::to_string(i) + ", 'x')");
    wait_outbox_empty(p);  // shipped in a batch of its own
  }
  chain.converge("public.t");
  EXPECT_GE(reads(), 1) << "the session reads the mode when it starts";
  EXPECT_LT(reads(), kBatches / 2) << "the mode was read at every batch";
}

// untrack() while the slot still holds changes of the table (the publisher is down):
// as in trigger mode, where changes already in the outbox are still published, they are
// shipped, and the publisher goes on with the other tables.
TEST(Capture, UntrackWithChangesStillInTheSlotShipsThem) {
  Chain chain(kTwoTables, {"public.t", "public.u"}, /*logical=*/true, /*run_publisher=*/false);
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.u SELECT g, 'before untrack' FROM generate_series(1, 5) g");
  p.exec("SELECT pgfanout.untrack('public.u')");
  p.exec("INSERT INTO public.u VALUES (100, 'after untrack')");
  p.exec("INSERT INTO public.t SELECT g, 't' FROM generate_series(1, 5) g");
  chain.start();
  chain.converge("public.t");
  EXPECT_EQ(chain.replica.value("SELECT string_agg(k::text, ',' ORDER BY k) FROM public.u"), "1,2,3,4,5");
}

// DROP TABLE of a tracked table while the slot still holds its changes (the publisher is
// down): its primary key is gone, so they are skipped (with a warning; the trigger
// capture would have shipped them from the outbox), and the other tables' changes still
// get through.
TEST(Capture, DroppedTableWithChangesStillInTheSlotDoesNotStopThePublisher) {
  Chain chain(kTwoTables, {"public.t", "public.u"}, /*logical=*/true, /*run_publisher=*/false);
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.u SELECT g, 'before drop' FROM generate_series(1, 5) g");
  p.exec("UPDATE public.u SET v = 'updated' WHERE k = 1");
  p.exec("DROP TABLE public.u");
  p.exec("INSERT INTO public.t SELECT g, 't' FROM generate_series(1, 5) g");
  chain.start();
  chain.converge("public.t");
}

// track() and untrack() in logical mode; install.sql run again keeps the mode.
TEST(Capture, TrackUntrackAndReinstallInLogicalMode) {
  Chain chain(kTwoTables, {"public.t"}, /*logical=*/true);
  PgSession& p = chain.primary;
  const auto slot = chain.slot_name();
  p.exec("ALTER TABLE public.u REPLICA IDENTITY NOTHING");
  p.exec("SELECT pgfanout.track('public.u')");
  EXPECT_EQ(pgfanout_triggers(p, "public.u"), 0);
  EXPECT_EQ(replica_identity(p, "public.u"), "f");
  EXPECT_EQ(publication_members(p),
            (std::vector<std::string>{"pgfanout.capture", "pgfanout.partition_truncates", "t", "u"}));
  p.exec("INSERT INTO public.u SELECT g, 'u' FROM generate_series(1, 5) g");
  p.exec("UPDATE public.u SET v = 'u2' WHERE k < 3");
  chain.converge("public.u");

  CommandResult again = psql_file(p.conninfo(), sql_dir() + "/install.sql");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(chain.mode(), "logical");
  EXPECT_EQ(chain.slot_name(), slot);
  EXPECT_EQ(chain.slots(), 1);
  EXPECT_EQ(publication_members(p),
            (std::vector<std::string>{"pgfanout.capture", "pgfanout.partition_truncates", "t", "u"}));
  for (const char* t : {"public.t", "public.u"}) {
    EXPECT_EQ(pgfanout_triggers(p, t), 0) << t;
    EXPECT_EQ(replica_identity(p, t), "f") << t;
  }
  p.exec("INSERT INTO public.t VALUES (1, 'after reinstall')");
  chain.converge("public.t");

  p.exec("SELECT pgfanout.untrack('public.u')");
  EXPECT_EQ(replica_identity(p, "public.u"), "n") << "untrack puts back the identity the table had";
  EXPECT_EQ(publication_members(p),
            (std::vector<std::string>{"pgfanout.capture", "pgfanout.partition_truncates", "t"}));
  p.exec("INSERT INTO public.u VALUES (100, 'untracked')");
  p.exec("INSERT INTO public.t VALUES (2, 'after untrack')");
  chain.converge("public.t");
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.u WHERE k = 100"), 0);
}

// ---------------------------------------------------------------------------------------
// 3. Repeated calls, a call rolled back, a call in a transaction that wrote.

std::int64_t slots_here(PgSession& db) {
  return db.integer("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()");
}

TEST(Capture, RepeatedCallMakesNoSecondSlot) {
  SlotDatabase sdb("pgft_cap_rep");
  install_schema(sdb.db.conninfo());
  PgSession db = sdb.db.session();
  EXPECT_EQ(db.value("SELECT pgfanout.set_capture('logical')"), "logical");
  auto slot = db.value("SELECT slot_name FROM pgfanout.capture");
  EXPECT_EQ(db.value("SELECT pgfanout.set_capture('logical')"), "logical");
  EXPECT_EQ(db.value("SELECT slot_name FROM pgfanout.capture"), slot);
  EXPECT_EQ(slots_here(db), 1);
}

TEST(Capture, CallRolledBackLeavesTriggerModeAndTheNextCallSucceeds) {
  SlotDatabase sdb("pgft_cap_rb");
  install_schema(sdb.db.conninfo());
  PgSession db = sdb.db.session();
  db.exec("CREATE TABLE public.t (k int PRIMARY KEY, v text); SELECT pgfanout.track('public.t')");
  db.exec("BEGIN; SELECT pgfanout.set_capture('logical'); ROLLBACK");
  EXPECT_EQ(db.value("SELECT mode FROM pgfanout.capture"), "trigger");
  EXPECT_EQ(db.value("SELECT slot_name FROM pgfanout.capture"), std::nullopt);
  EXPECT_GT(pgfanout_triggers(db, "public.t"), 0);
  EXPECT_EQ(replica_identity(db, "public.t"), "d");

  EXPECT_EQ(db.value("SELECT pgfanout.set_capture('logical')"), "logical");
  EXPECT_EQ(slots_here(db), 1) << "the slot the rolled-back call left is made anew, not doubled";
  EXPECT_EQ(db.integer("SELECT count(*) FROM pg_replication_slots WHERE database = current_database() "
                       "AND slot_name = (SELECT slot_name FROM pgfanout.capture)"),
            1);
  EXPECT_EQ(pgfanout_triggers(db, "public.t"), 0);
}

TEST(Capture, CallInATransactionThatWroteFailsClearlyAndLeavesNoSlot) {
  SlotDatabase sdb("pgft_cap_wr");
  install_schema(sdb.db.conninfo());
  PgSession db = sdb.db.session();
  db.exec("CREATE TABLE public.t (k int PRIMARY KEY, v text); SELECT pgfanout.track('public.t')");
  try {
    db.exec("BEGIN; INSERT INTO public.t VALUES (1, 'x'); SELECT pgfanout.set_capture('logical'); COMMIT");
    ADD_FAILURE() << "set_capture('logical') succeeded in a transaction that had written";
  } catch (const SqlError& e) {
    EXPECT_NE(std::string(e.what()).find("replication slot"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("writes"), std::string::npos) << e.what();
  }
  db.exec("ROLLBACK");
  EXPECT_EQ(slots_here(db), 0);
  EXPECT_EQ(db.value("SELECT mode FROM pgfanout.capture"), "trigger");
  EXPECT_EQ(db.integer("SELECT count(*) FROM public.t"), 0);
}

// ---------------------------------------------------------------------------------------
// 4. A new logical period while the last one's slot is not drained.

TEST(Capture, SwitchToLogicalIsRefusedWhileTheLastSlotIsUndrained) {
  Chain chain("CREATE TABLE public.t (k int PRIMARY KEY, v text);", {"public.t"}, /*logical=*/true,
              /*run_publisher=*/false);
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.t SELECT g, 'a' FROM generate_series(1, 5) g");
  EXPECT_EQ(p.value("SELECT pgfanout.set_capture('trigger')"), "trigger");
  auto old_slot = chain.slot_name();
  ASSERT_TRUE(old_slot.has_value());
  try {
    p.exec("SELECT pgfanout.set_capture('logical')");
    ADD_FAILURE() << "set_capture('logical') went ahead with an undrained slot";
  } catch (const SqlError& e) {
    EXPECT_NE(std::string(e.what()).find("still holds changes"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(*old_slot), std::string::npos) << e.what();
  }
  EXPECT_EQ(chain.mode(), "trigger");
  EXPECT_EQ(chain.slots(), 1);

  // Drained, the way is open again.
  chain.start();
  chain.converge("public.t");
  eventually([&] { return !chain.slot_name().has_value(); }, kPatience, "the publisher to drop the slot");
  EXPECT_EQ(p.value("SELECT pgfanout.set_capture('logical')"), "logical");
  p.exec("UPDATE public.t SET v = 'b'");
  chain.converge("public.t");
}

// ---------------------------------------------------------------------------------------
// 5. install.sql does not take over a publication another role made.

TEST(Capture, InstallRefusesAPublicationPgfanoutOfAnotherRole) {
  const std::string role = unique_name("pgft_squatter");
  struct RoleGuard {
    std::string name;
    ~RoleGuard() {
      try {
        PgSession(pg_admin_conninfo()).exec("DROP ROLE IF EXISTS \"" + name + "\"");
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
      }
    }
  } guard{role};
  ScratchDatabase db("pgft_cap_pub");
  PgSession s = db.session();
  s.exec("CREATE ROLE \"" + role + "\" NOLOGIN; GRANT CREATE ON DATABASE \"" + db.name() + "\" TO \"" + role + "\"");
  s.exec("SET ROLE \"" + role + "\"; CREATE PUBLICATION pgfanout; RESET ROLE");

  CommandResult r = psql_file(db.conninfo(), sql_dir() + "/install.sql");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("publication pgfanout already exists and belongs to role " + role), std::string::npos)
      << r.err;
  EXPECT_EQ(s.integer("SELECT count(*) FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid "
                      "WHERE p.pubname = 'pgfanout'"),
            0);
  s.exec("DROP PUBLICATION pgfanout");  // before the role goes
}

// ---------------------------------------------------------------------------------------
// 6. uninstall.sql and a streaming publisher.

TEST(Capture, UninstallRefusesWhileStreamingThenDropsSlotAndPublication) {
  Chain chain(R"SQL(
CREATE TABLE public.t (k int PRIMARY KEY, v text);
CREATE TABLE public.u (k int PRIMARY KEY, v text NOT NULL UNIQUE);
ALTER TABLE public.u REPLICA IDENTITY USING INDEX u_v_key;
)SQL",
              {"public.t", "public.u"}, /*logical=*/true);
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.t VALUES (1, 'a'); INSERT INTO public.u VALUES (1, 'a')");
  chain.converge("public.t");
  ASSERT_TRUE(chain.slot_name().has_value());
  const std::string slot = *chain.slot_name();
  eventually([&] { return p.integer("SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name = " +
                                    sql_literal(slot)) == 1; },
             kPatience, "the publisher to stream the slot");

  CommandResult refused = psql_file(p.conninfo(), sql_dir() + "/uninstall.sql");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("is in use by process"), std::string::npos) << refused.err;
  EXPECT_EQ(p.integer("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgfanout'"), 1);

  chain.stop();
  eventually([&] { return p.integer("SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name = " +
                                    sql_literal(slot)) == 0; },
             kPatience, "the walsender to let the slot go");
  uninstall_schema(p.conninfo());
  EXPECT_EQ(chain.slots(), 0);
  EXPECT_EQ(p.integer("SELECT count(*) FROM pg_publication WHERE pubname = 'pgfanout'"), 0);
  EXPECT_EQ(p.integer("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgfanout'"), 0);
  EXPECT_EQ(replica_identity(p, "public.t"), "d");
  EXPECT_EQ(replica_identity(p, "public.u"), "i");
  EXPECT_EQ(p.value("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'public.u'::regclass "
                    "AND indisreplident"),
            "u_v_key");
}

// ---------------------------------------------------------------------------------------
// 7. An unchanged TOASTed value.

TEST(Capture, UnchangedToastedValueReachesTheReplicaIntact) {
  Chain chain("CREATE TABLE public.t (k int PRIMARY KEY, n int, big text);", {"public.t"}, /*logical=*/true);
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.t SELECT 1, 0, string_agg(md5(random()::text), '') FROM generate_series(1, 2000)");
  ASSERT_GT(p.integer("SELECT pg_column_size(big) FROM public.t"), 8000) << "the value must be TOASTed";
  chain.converge("public.t");
  p.exec("UPDATE public.t SET n = n + 1");
  p.exec("UPDATE public.t SET n = n + 1");
  chain.converge("public.t");
  EXPECT_EQ(chain.replica.integer("SELECT length(big) FROM public.t"), 64000);
  EXPECT_EQ(chain.replica.integer("SELECT n FROM public.t"), 2);
}

// ---------------------------------------------------------------------------------------
// 8. What pgoutput sends apart: key changes, TRUNCATE ... CASCADE, partitions, spilled
// transactions.

TEST(Capture, PrimaryKeyChangeConverges) {
  Chain chain("CREATE TABLE public.t (k int PRIMARY KEY, v text);", {"public.t"}, /*logical=*/true);
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 10) g");
  p.exec("UPDATE public.t SET k = k + 100 WHERE k <= 3");
  p.exec("UPDATE public.t SET k = k - 100, v = 'back' WHERE k = 102");
  p.exec("UPDATE public.t SET k = -k WHERE k BETWEEN 5 AND 7");
  chain.converge("public.t");
}

// Types whose to_jsonb would call a cast to json (hstore's, PostGIS's) travel in their
// text form in logical mode (the publisher runs no user code), which their input
// functions read back exactly: an hstore, a geometry keeping its SRID, an hstore[] and a
// composite holding an hstore.
TEST(Capture, TypesWithACastToJsonReplicateExactlyInLogicalMode) {
  const std::string tables = R"SQL(
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE TYPE public.tagged AS (label text, tags hstore);
CREATE TABLE public.t (k int PRIMARY KEY, h hstore, g geometry(Point, 4326), hs hstore[], c public.tagged);
)SQL";
  Chain chain(tables, {"public.t"}, /*logical=*/true);
  PgSession& p = chain.primary;
  p.exec(R"SQL(
INSERT INTO public.t VALUES
  (1, 'a=>1, "b c"=>"x\"y", n=>NULL', ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326),
   ARRAY['x=>1'::hstore, NULL], ROW('first', 'k=>v')::public.tagged),
  (2, '', NULL, '{}', NULL);
UPDATE public.t SET h = h || 'z=>9'::hstore WHERE k = 1;
)SQL");
  chain.converge("public.t");
  EXPECT_EQ(chain.replica.value("SELECT ST_SRID(g)::text FROM public.t WHERE k = 1"), "4326");
}

TEST(Capture, TruncateCascadeOfTablesLinkedByAForeignKeyConverges) {
  Chain chain(R"SQL(
CREATE TABLE public.parent (k int PRIMARY KEY, v text);
CREATE TABLE public.child (k int PRIMARY KEY, parent_k int REFERENCES public.parent, v text);
)SQL",
              {"public.parent", "public.child"}, /*logical=*/true);
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.parent SELECT g, 'p' FROM generate_series(1, 5) g");
  p.exec("INSERT INTO public.child SELECT g, g % 5 + 1, 'c' FROM generate_series(1, 10) g");
  chain.converge("public.parent");
  chain.converge("public.child");
  p.exec("TRUNCATE public.parent CASCADE");
  p.exec("INSERT INTO public.parent VALUES (7, 'after')");
  p.exec("INSERT INTO public.child VALUES (1, 7, 'after')");
  chain.converge("public.parent");
  chain.converge("public.child");
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.child"), 1);
}

// A table partitioned in two, tracked through its root, and 20 rows in it.
const char* const kPartitioned = R"SQL(
CREATE TABLE public.pt (region text, k int, v text, PRIMARY KEY (region, k)) PARTITION BY LIST (region);
CREATE TABLE public.pt_a PARTITION OF public.pt FOR VALUES IN ('a');
CREATE TABLE public.pt_b PARTITION OF public.pt FOR VALUES IN ('b');
)SQL";
void fill_partitioned(PgSession& p) {
  p.exec("INSERT INTO public.pt SELECT CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, g, 'v' FROM generate_series(1, 20) g");
}

TEST(Capture, PartitionedTableThroughItsRootWithAPartitionMadeLaterConverges) {
  Chain chain(kPartitioned, {"public.pt"}, /*logical=*/true);
  PgSession& p = chain.primary;
  EXPECT_EQ(publication_members(p),
            (std::vector<std::string>{"pgfanout.capture", "pgfanout.partition_truncates", "pt"}));
  fill_partitioned(p);
  p.exec("UPDATE public.pt SET v = 'moved', region = 'a' WHERE region = 'b' AND k < 6");  // across partitions
  chain.converge("public.pt", "region, k");
  const char* later = "CREATE TABLE public.pt_c PARTITION OF public.pt FOR VALUES IN ('c')";
  chain.replica.exec(later);
  p.exec(later);
  // Values TOASTed out of line, unchanged by the UPDATE of the key below: the new
  // partition needs REPLICA IDENTITY FULL too.
  p.exec("INSERT INTO public.pt SELECT 'c', g, (SELECT string_agg(md5(random()::text || i), '') "
         "FROM generate_series(1, 300) i) FROM generate_series(1, 10) g");
  EXPECT_EQ(replica_identity(p, "public.pt_c"), "f");
  p.exec("UPDATE public.pt SET v = v || '+' WHERE region = 'c' AND k <= 5");
  p.exec("UPDATE public.pt SET k = k + 100 WHERE region = 'c' AND k > 8");
  p.exec("DELETE FROM public.pt WHERE region = 'c' AND k = 6");
  chain.converge("public.pt", "region, k");
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt_c"), 9);
}

// TRUNCATE of partitions (sql/install.sql, pgfanout.capture_partition_truncate):
// pgoutput, publishing through the root, sends nothing for a partition's, so the
// partition's trigger writes its rows' keys into pgfanout.partition_truncates, whose
// inserts the publisher ships as DELETEs of the root, as the trigger capture does.

// A three-level tree: pt -> pt_a, pt_b -> (pt_b_low, pt_b_high); 10 rows in pt_a, 5 in
// each of pt_b's partitions.
const char* const kSubPartitioned = R"SQL(
CREATE TABLE public.pt (region text, k int, v text, PRIMARY KEY (region, k)) PARTITION BY LIST (region);
CREATE TABLE public.pt_a PARTITION OF public.pt FOR VALUES IN ('a');
CREATE TABLE public.pt_b PARTITION OF public.pt FOR VALUES IN ('b') PARTITION BY RANGE (k);
CREATE TABLE public.pt_b_low PARTITION OF public.pt_b FOR VALUES FROM (MINVALUE) TO (10);
CREATE TABLE public.pt_b_high PARTITION OF public.pt_b FOR VALUES FROM (10) TO (MAXVALUE);
)SQL";

// How many of `messages` carry operation `op` (one change per message).
std::size_t count_op(const std::vector<Delivery>& messages, const std::string& op) {
  const std::string field = "\"op\":\"" + op + "\"";
  return static_cast<std::size_t>(std::count_if(messages.begin(), messages.end(), [&](const Delivery& d) {
    return d.body.find(field) != std::string::npos;
  }));
}

// What is left in pgfanout.partition_truncates: nothing, once no transaction is writing.
std::int64_t leftover_rows(PgSession& p) { return p.integer("SELECT count(*) FROM pgfanout.partition_truncates"); }

TEST(Capture, TruncateOfOnePartitionConvergesAsDeletesOfTheRoot) {
  Chain chain(kPartitioned, {"public.pt"}, /*logical=*/true);
  PgSession& p = chain.primary;
  EXPECT_EQ(publication_members(p),
            (std::vector<std::string>{"pgfanout.capture", "pgfanout.partition_truncates", "pt"}));
  fill_partitioned(p);
  chain.converge("public.pt", "region, k");
  drain(chain.tap);
  // Changes before and after it in the same transaction keep their places: the row
  // inserted before is removed with the partition, the one inserted after stays.
  p.exec("BEGIN; INSERT INTO public.pt VALUES ('a', 100, 'before'); UPDATE public.pt SET v = 'u' WHERE k = 1; "
         "TRUNCATE public.pt_a; INSERT INTO public.pt VALUES ('a', 2, 'after'); COMMIT");
  chain.converge("public.pt", "region, k");
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt WHERE region = 'a'"), 1);
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt WHERE region = 'b'"), 10);
  auto messages = drain(chain.tap);
  // 11 DELETEs (10 rows and the one inserted before), each with its own id, under the
  // root's name.
  EXPECT_EQ(count_op(messages, "DELETE"), 11u);
  EXPECT_EQ(check_ids(messages), messages.size());
  for (const auto& d : messages) EXPECT_EQ(d.routing_key, "public.pt") << d.body;
  EXPECT_EQ(leftover_rows(p), 0);

  // TRUNCATE of the whole table stays one TRUNCATE, although its partitions' triggers fire.
  p.exec("TRUNCATE public.pt");
  p.exec("INSERT INTO public.pt VALUES ('b', 100, 'after')");
  chain.converge("public.pt", "region, k");
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt"), 1);
  messages = drain(chain.tap);
  EXPECT_EQ(count_op(messages, "TRUNCATE"), 1u);
  EXPECT_EQ(count_op(messages, "DELETE"), 0u);
  EXPECT_EQ(leftover_rows(p), 0);
}

TEST(Capture, TruncateOfASubPartitionAndOfAMidLevelPartitionConverges) {
  Chain chain(kSubPartitioned, {"public.pt"}, /*logical=*/true);
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.pt SELECT 'a', g, 'a' FROM generate_series(1, 10) g; "
         "INSERT INTO public.pt SELECT 'b', g, 'b' FROM generate_series(5, 14) g");
  chain.converge("public.pt", "region, k");
  p.exec("TRUNCATE public.pt_b_low");
  chain.converge("public.pt", "region, k");
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt WHERE region = 'b'"), 5);
  p.exec("INSERT INTO public.pt VALUES ('b', 1, 'again')");
  p.exec("TRUNCATE public.pt_b");  // mid-level: both of its partitions
  chain.converge("public.pt", "region, k");
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt WHERE region = 'b'"), 0);
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt WHERE region = 'a'"), 10);
  EXPECT_EQ(leftover_rows(p), 0);
}

// A partition and its root in one statement, in either order, and CASCADE reaching a
// partitioned table through a foreign key (and from a partition to a table that
// references the partitioned table).
TEST(Capture, TruncateOfAPartitionWithItsRootAndThroughCascadeConverges) {
  Chain chain(R"SQL(
CREATE TABLE public.owner (k int PRIMARY KEY);
CREATE TABLE public.pt (region text, k int, owner_k int REFERENCES public.owner, v text, PRIMARY KEY (region, k))
  PARTITION BY LIST (region);
CREATE TABLE public.pt_a PARTITION OF public.pt FOR VALUES IN ('a');
CREATE TABLE public.pt_b PARTITION OF public.pt FOR VALUES IN ('b') PARTITION BY RANGE (k);
CREATE TABLE public.pt_b_low PARTITION OF public.pt_b FOR VALUES FROM (MINVALUE) TO (10);
CREATE TABLE public.pt_b_high PARTITION OF public.pt_b FOR VALUES FROM (10) TO (MAXVALUE);
CREATE TABLE public.ref (k int PRIMARY KEY, region text, pt_k int, FOREIGN KEY (region, pt_k) REFERENCES public.pt);
)SQL",
              {"public.owner", "public.pt", "public.ref"}, /*logical=*/true);
  PgSession& p = chain.primary;
  auto fill = [&] {
    p.exec("INSERT INTO public.owner SELECT g FROM generate_series(1, 3) g ON CONFLICT DO NOTHING; "
           "INSERT INTO public.pt SELECT r, g, g % 3 + 1, r FROM unnest(ARRAY['a', 'b']) r, generate_series(1, 15) g "
           "ON CONFLICT DO NOTHING; "
           "INSERT INTO public.ref SELECT g, 'b', g FROM generate_series(1, 5) g ON CONFLICT DO NOTHING");
  };
  auto converged = [&] {
    chain.converge("public.owner");
    chain.converge("public.pt", "region, k");
    chain.converge("public.ref");
  };
  fill();
  converged();
  p.exec("TRUNCATE public.pt_a, public.pt CASCADE");  // the partition first: its DELETEs, then the TRUNCATE
  p.exec("INSERT INTO public.pt VALUES ('b', 1, 1, 'after')");
  converged();
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt"), 1);
  fill();
  p.exec("BEGIN; INSERT INTO public.pt VALUES ('a', 99, 1, 'x'); TRUNCATE public.pt, public.pt_b_low CASCADE; "
         "INSERT INTO public.pt VALUES ('a', 98, 1, 'y'); COMMIT");
  converged();
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt"), 1);
  fill();
  p.exec("TRUNCATE public.pt_b_low CASCADE");  // reaches public.ref, which references pt
  converged();
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.ref"), 0);
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt WHERE region = 'b'"), 6);
  fill();
  p.exec("TRUNCATE public.owner CASCADE");  // reaches pt, all of its partitions, and ref
  p.exec("INSERT INTO public.owner VALUES (7)");
  converged();
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt"), 0);
  EXPECT_EQ(leftover_rows(p), 0);
}

TEST(Capture, RolledBackTruncateOfAPartitionLeavesTheReplicaIntact) {
  Chain chain(kPartitioned, {"public.pt"}, /*logical=*/true);
  PgSession& p = chain.primary;
  fill_partitioned(p);
  chain.converge("public.pt", "region, k");
  p.exec("BEGIN; TRUNCATE public.pt_a; ROLLBACK");
  p.exec("BEGIN; INSERT INTO public.pt VALUES ('b', 101, 'kept'); SAVEPOINT s; TRUNCATE public.pt_a; "
         "ROLLBACK TO SAVEPOINT s; INSERT INTO public.pt VALUES ('b', 102, 'last'); COMMIT");
  chain.converge("public.pt", "region, k");
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt WHERE region = 'a'"), 10);
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt WHERE k = 102"), 1);
  EXPECT_EQ(leftover_rows(p), 0);
}

// An install from before pgfanout.partition_truncates, in logical mode with its slot
// streaming: running install.sql again adds the table to the publication, and the
// publisher ships TRUNCATE of a partition from then on.
TEST(Capture, ReinstallOverAnInstallWithoutPartitionTruncatesCapturesThem) {
  Chain chain(kPartitioned, {"public.pt"}, /*logical=*/true);
  PgSession& p = chain.primary;
  p.exec("ALTER PUBLICATION pgfanout DROP TABLE pgfanout.partition_truncates; "
         "DROP TABLE pgfanout.partition_truncates");
  fill_partitioned(p);
  chain.converge("public.pt", "region, k");
  CommandResult again = psql_file(p.conninfo(), sql_dir() + "/install.sql");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(publication_members(p),
            (std::vector<std::string>{"pgfanout.capture", "pgfanout.partition_truncates", "pt"}));
  p.exec("TRUNCATE public.pt_b");
  chain.converge("public.pt", "region, k");
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt"), 10);
  EXPECT_EQ(leftover_rows(p), 0);
}

// A role, dropped at the end (declare it before the Chain, whose databases hold its grants).
class ScratchRole {
 public:
  ScratchRole() : name_(unique_name("pgft_cap_role")) {
    PgSession(pg_admin_conninfo()).exec("CREATE ROLE " + quote_ident(name_));
  }
  ~ScratchRole() {
    try {
      PgSession(pg_admin_conninfo()).exec("DROP ROLE IF EXISTS " + quote_ident(name_));
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
  }
  ScratchRole(const ScratchRole&) = delete;
  ScratchRole& operator=(const ScratchRole&) = delete;
  std::string ident() const { return quote_ident(name_); }

 private:
  std::string name_;
};

// The message of the error a statement raises ("" if it raises none).
std::string error_of(PgSession& s, const std::string& statement) {
  try {
    s.exec(statement);
  } catch (const SqlError& e) {
    return e.what();
  }
  return "";
}

// The trigger runs as the role truncating: one that may not read the partition's keys
// cannot have its rows captured, so its TRUNCATE is refused, as in trigger mode; and
// REPEATABLE READ is refused as there.
TEST(Capture, TruncateOfAPartitionByARoleThatMayNotReadItsKeysIsRefused) {
  ScratchRole role;
  Chain chain(kPartitioned, {"public.pt"}, /*logical=*/true);
  PgSession& p = chain.primary;
  fill_partitioned(p);
  chain.converge("public.pt", "region, k");
  p.exec("GRANT TRUNCATE ON public.pt_a TO " + role.ident());
  PgSession as_role(chain.primary_db.db.conninfo());
  as_role.exec("SET ROLE " + role.ident());
  EXPECT_NE(error_of(as_role, "TRUNCATE public.pt_a").find("may not read all of its keys"), std::string::npos);
  EXPECT_NE(error_of(p, "BEGIN ISOLATION LEVEL REPEATABLE READ; TRUNCATE public.pt_a").find("REPEATABLE READ"),
            std::string::npos);
  p.exec("ROLLBACK");
  p.exec("INSERT INTO public.pt VALUES ('b', 100, 'last')");
  chain.converge("public.pt", "region, k");
  EXPECT_EQ(p.integer("SELECT count(*) FROM public.pt_a"), 10);
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt WHERE region = 'a'"), 10);
  // With SELECT on the keys it may.
  p.exec("GRANT SELECT (region, k) ON public.pt_a TO " + role.ident());
  as_role.exec("TRUNCATE public.pt_a");
  chain.converge("public.pt", "region, k");
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt WHERE region = 'a'"), 0);
}

// pgfanout.partition_truncates is shipped as changes of the tables its rows name: a role
// writes there only what a TRUNCATE it may run would write. And a TRUNCATE row written by
// hand (which truncates the replicas as any TRUNCATE of the root would) does not let a
// later TRUNCATE of a partition skip rows written since.
TEST(Capture, NoRoleForgesPartitionTruncatesItMayNotTruncate) {
  ScratchRole writer;   // every right on the tree but TRUNCATE
  ScratchRole leaf;     // TRUNCATE of pt_a only
  Chain chain(kPartitioned + std::string("CREATE TABLE public.other (k int PRIMARY KEY);"),
              {"public.pt", "public.other"}, /*logical=*/true);
  PgSession& p = chain.primary;
  fill_partitioned(p);
  chain.converge("public.pt", "region, k");
  p.exec("GRANT SELECT, INSERT, UPDATE, DELETE ON public.pt, public.pt_a, public.pt_b TO " + writer.ident());
  p.exec("GRANT SELECT, TRUNCATE ON public.pt_a TO " + leaf.ident());
  auto forge = [&](const ScratchRole& role, const std::string& values) {
    PgSession s(chain.primary_db.db.conninfo());
    s.exec("SET ROLE " + role.ident());
    return error_of(s, "INSERT INTO pgfanout.partition_truncates (root_schema, root_name, rel, op, old_key) VALUES " +
                           values);
  };
  const std::string rls = "violates row-level security policy";
  EXPECT_NE(forge(writer, "('public', 'pt', 'public.pt_a', 'DELETE', '{\"region\": \"b\", \"k\": 1}')").find(rls),
            std::string::npos);
  EXPECT_NE(forge(writer, "('public', 'pt', 'public.pt', 'TRUNCATE', NULL)").find(rls), std::string::npos);
  // The partition's own truncater: not the whole table, not another table's rows, not
  // under another name.
  EXPECT_NE(forge(leaf, "('public', 'pt', 'public.pt', 'TRUNCATE', NULL)").find(rls), std::string::npos);
  EXPECT_NE(forge(leaf, "('public', 'pt', 'public.pt_b', 'DELETE', '{\"region\": \"b\", \"k\": 1}')").find(rls),
            std::string::npos);
  EXPECT_NE(forge(leaf, "('public', 'other', 'public.pt_a', 'DELETE', '{\"k\": 1}')").find(rls), std::string::npos);
  EXPECT_NE(forge(leaf, "('public', 'pt', 'public.other', 'DELETE', '{\"k\": 1}')").find(rls), std::string::npos);
  {
    PgSession s(chain.primary_db.db.conninfo());
    s.exec("SET ROLE " + leaf.ident());
    EXPECT_NE(error_of(s, "DELETE FROM pgfanout.partition_truncates").find("permission denied"), std::string::npos);
    EXPECT_NE(error_of(s, "UPDATE pgfanout.partition_truncates SET op = 'TRUNCATE'").find("permission denied"),
              std::string::npos);
  }
  p.exec("INSERT INTO public.pt VALUES ('b', 100, 'last')");
  chain.converge("public.pt", "region, k");
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt"), 21);

  // A TRUNCATE row of pt written by hand, a row written into pt_a, and the setting the
  // root's trigger would have left: the row is still captured.
  p.exec("BEGIN; "
         "INSERT INTO pgfanout.partition_truncates (root_schema, root_name, rel, op) "
         "  VALUES ('public', 'pt', 'public.pt', 'TRUNCATE'); "
         "INSERT INTO public.pt VALUES ('a', 500, 'written since'); "
         // The check itself, called by hand, renews the row only when it passes.
         "SELECT pgfanout.truncate_marked(currval(pg_get_serial_sequence('pgfanout.partition_truncates', 'id')), "
         "  'public', 'pt'); "
         "SELECT set_config(format('pgfanout.truncate_%s_1', 'public.pt'::regclass::oid), "
         "  'mark:' || currval(pg_get_serial_sequence('pgfanout.partition_truncates', 'id')), true); "
         "TRUNCATE public.pt_a; COMMIT");
  p.exec("INSERT INTO public.pt VALUES ('b', 600, 'last')");
  eventually([&] { return chain.replica.integer("SELECT count(*) FROM public.pt WHERE k = 600") == 1; }, kPatience,
             "the last row to reach the replica");
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.pt WHERE region = 'a'"), 0);
}

TEST(Capture, TransactionBiggerThanLogicalDecodingWorkMemConverges) {
  struct WorkMemGuard {
    WorkMemGuard() {
      PgSession(pg_admin_conninfo()).exec("ALTER SYSTEM SET logical_decoding_work_mem = '64kB'");
      PgSession(pg_admin_conninfo()).exec("SELECT pg_reload_conf()");
    }
    ~WorkMemGuard() {
      try {
        PgSession(pg_admin_conninfo()).exec("ALTER SYSTEM RESET logical_decoding_work_mem");
        PgSession(pg_admin_conninfo()).exec("SELECT pg_reload_conf()");
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
      }
    }
  } guard;
  Chain chain("CREATE TABLE public.t (k int PRIMARY KEY, v text);", {"public.t"}, /*logical=*/true);
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.t VALUES (0, 'first')");
  chain.converge("public.t");
  // About 5 MB of changes in one transaction: spilled to disk many times over.
  p.exec("BEGIN; INSERT INTO public.t SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 20000) g; "
         "UPDATE public.t SET v = left(v, 10) WHERE k % 2 = 0; DELETE FROM public.t WHERE k % 7 = 0; COMMIT");
  chain.converge("public.t", "k", 120s);
  EXPECT_GT(p.integer("SELECT spill_count FROM pg_stat_replication_slots WHERE slot_name = "
                      "(SELECT slot_name FROM pgfanout.capture)"),
            0)
      << "the transaction was not spilled: the test did not test what it says";
}

// ---------------------------------------------------------------------------------------
// 9. A table no queue is bound for.

TEST(Capture, ChangesOfAnUnboundTableAreParkedThenShippedInOrder) {
  Chain chain(kTwoTables, {"public.t", "public.u"}, /*logical=*/true, /*run_publisher=*/true,
              {"--tables", "public.t"});
  // The tap would bind public.u: it must see nothing here.
  delete_queue(chain.tap.name());
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.u SELECT g, '1' FROM generate_series(1, 5) g");
  p.exec("INSERT INTO public.t SELECT g, 't' FROM generate_series(1, 5) g");
  eventually([&] { return p.integer("SELECT count(*) FROM pgfanout.changes WHERE table_name = 'u'") == 5; },
             kPatience, "the unroutable changes of public.u to be parked in the outbox");
  // Later changes of the table go behind the parked ones, whatever the broker says now.
  p.exec("UPDATE public.u SET v = v || '2'");
  p.exec("BEGIN; UPDATE public.u SET v = v || '3' WHERE k <= 3; DELETE FROM public.u WHERE k = 5; COMMIT");
  p.exec("UPDATE public.t SET v = 't2'");
  chain.converge("public.t");
  eventually([&] { return p.integer("SELECT count(*) FROM pgfanout.changes WHERE table_name = 'u'") == 14; },
             kPatience, "every change of public.u to be parked");
  EXPECT_EQ(p.integer("SELECT count(*) FROM pgfanout.changes WHERE table_name <> 'u'"), 0);
  // Parked in the order they were made, ids increasing.
  EXPECT_EQ(p.value("SELECT string_agg(op || coalesce(new_row->>'v', ''), ',' ORDER BY id) FROM pgfanout.changes "
                    "WHERE coalesce(new_row->>'k', old_key->>'k') = '1'"),
            "INSERT1,UPDATE12,UPDATE123");

  SecondReplica second(chain.exchange.name());
  PgSession& r2 = second.session;
  std::optional<std::string> want;
  eventually(
      [&] {
        want = table_md5(p, "public.u", "k");
        return table_md5(r2, "public.u", "k") == want;
      },
      60s, "replica 2's public.u to match the primary's");
  wait_outbox_empty(p, 60s);
  EXPECT_EQ(queue_depth(second.dead.name()), 0u);
  EXPECT_EQ(r2.value("SELECT string_agg(k || '=' || v, ',' ORDER BY k) FROM public.u"), "1=123,2=123,3=123,4=12");
  // Still following the stream once the outbox is empty.
  p.exec("UPDATE public.u SET v = 'after'");
  eventually([&] { return r2.integer("SELECT count(*) FROM public.u WHERE v = 'after'") == 4; }, kPatience,
             "a change of public.u after the parked ones");
}

// While a table has changes parked, the publisher keeps the set of tables with changes in
// the outbox itself: it reads it again after shipping from the outbox, not at every turn
// of its loop. A restrictive row-level security policy counts the publisher's reads of
// that set (the outbox holds one row, so one count per read).
TEST(Capture, ParkedChangesDoNotMakeThePublisherReadTheOutboxTablesAtEveryTurn) {
  Chain chain(kTwoTables, {"public.t", "public.u"}, /*logical=*/true, /*run_publisher=*/true,
              {"--tables", "public.t"});
  delete_queue(chain.tap.name());
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.u VALUES (1, 'parked')");
  eventually([&] { return outbox_count(p) == 1; }, kPatience, "the change of public.u to be parked");
  p.exec("CREATE SEQUENCE public.table_reads; "
         "GRANT USAGE ON SEQUENCE public.table_reads TO pgfanout_publisher; "
         "CREATE POLICY counted ON pgfanout.changes AS RESTRICTIVE FOR SELECT TO pgfanout_publisher "
         "USING (CASE WHEN current_query() LIKE '%DISTINCT schema_name, table_name%' "
         "THEN nextval('public.table_reads') > 0 ELSE true END)");
  auto reads = [&] {
    return p.integer("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.table_reads");
  };
  constexpr int kBatches = 20;
  for (int i = 0; i < kBatches; ++i) {
    p.exec("INSERT INTO public.t VALUES (" + std::to_string(i) + ", 'x')");
    eventually([&] { return chain.replica.integer("SELECT count(*) FROM public.t") == i + 1; }, kPatience,
               "change " + std::to_string(i) + " of public.t to reach the replica");
  }
  EXPECT_EQ(outbox_count(p), 1) << "public.u's change stays parked";
  EXPECT_LT(reads(), kBatches / 2) << "the tables in the outbox were read at every turn";
}

// A publisher that stops after it parked changes and before it stored its position in
// the slot gets the same changes again from the slot, with the same ids, and parks them
// again. The state such a crash leaves is made here exactly: the slot and the position
// are put back to where they were before the changes were parked.
TEST(Capture, ChangesParkedAgainAfterARestartDoNotStopThePublisher) {
  Chain chain(kTwoTables, {"public.t", "public.u"}, /*logical=*/true, /*run_publisher=*/false,
              {"--tables", "public.t"});
  delete_queue(chain.tap.name());
  PgSession& p = chain.primary;
  ASSERT_TRUE(chain.slot_name().has_value());
  const std::string slot = *chain.slot_name();
  const std::string saved = unique_name("pgft_saved_slot");
  p.exec("SELECT pg_copy_logical_replication_slot(" + sql_literal(slot) + ", " + sql_literal(saved) + ")");
  Rows position = p.query("SELECT lsn::text, last_id FROM pgfanout.logical_position");

  p.exec("INSERT INTO public.u SELECT g, 'parked' FROM generate_series(1, 5) g");
  chain.start();
  eventually(
      [&] {
        return p.integer("SELECT count(*) FROM pgfanout.changes WHERE table_name = 'u'") == 5 &&
               p.value("SELECT lsn::text FROM pgfanout.logical_position") != position[0][0];
      },
      kPatience, "the changes of public.u to be parked and the position stored");
  Rows parked = p.query("SELECT id, new_row::text FROM pgfanout.changes ORDER BY id");
  chain.stop();
  eventually([&] { return p.integer("SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name = " +
                                    sql_literal(slot)) == 0; },
             kPatience, "the walsender to let the slot go");
  p.exec("SELECT pg_drop_replication_slot(" + sql_literal(slot) + ")");
  p.exec("SELECT pg_copy_logical_replication_slot(" + sql_literal(saved) + ", " + sql_literal(slot) + ")");
  p.exec("SELECT pg_drop_replication_slot(" + sql_literal(saved) + ")");
  p.exec("UPDATE pgfanout.logical_position SET lsn = " + sql_literal(*position[0][0]) +
         ", last_id = " + *position[0][1]);

  chain.start();
  p.exec("INSERT INTO public.t VALUES (1, 'after the restart')");
  chain.converge("public.t");
  EXPECT_EQ(p.query("SELECT id, new_row::text FROM pgfanout.changes ORDER BY id"), parked)
      << "the changes parked again are the same ones, once";
}

// ---------------------------------------------------------------------------------------
// 10. A publisher killed mid-stream.

TEST(Capture, PublisherKilledMidStreamGivesEachChangeOneIdAndLosesNothing) {
  Chain chain("CREATE TABLE public.t (k int PRIMARY KEY, v text, n int);", {"public.t"}, /*logical=*/true);
  PgSession& p = chain.primary;
  {
    BackgroundWriter writer(chain.primary_db.db.conninfo(), [](std::int64_t i) {
      std::string k = std::to_string(i % 50);
      return "INSERT INTO public.t VALUES (" + k + ", 'w" + std::to_string(i) + "', 0) "
             "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, n = public.t.n + 1";
    });
    for (int round = 0; round < 3; ++round) {
      std::int64_t before = writer.commits();
      eventually([&] { return writer.commits() >= before + 200; }, kPatience, "the writer to write");
      EXPECT_EQ(chain.publisher->kill(), 128 + SIGKILL);
      chain.publisher.reset();
      before = writer.commits();
      eventually([&] { return writer.commits() >= before + 100; }, kPatience, "the writer to write");
      chain.start();
    }
    std::int64_t before = writer.commits();
    eventually([&] { return writer.commits() >= before + 100; }, kPatience, "the writer to write");
    writer.stop();
  }
  chain.converge("public.t", "k", 60s);
  auto messages = drain(chain.tap);
  std::size_t distinct = check_ids(messages);
  EXPECT_EQ(static_cast<std::int64_t>(distinct), p.integer("SELECT count(*) + sum(n) FROM public.t"))
      << "one id per change";
}

// A standby publisher takes the slot over when the active one dies.
TEST(Capture, StandbyPublisherTakesTheSlotOver) {
  Chain chain("CREATE TABLE public.t (k int PRIMARY KEY, v text, n int);", {"public.t"}, /*logical=*/true);
  PgSession& p = chain.primary;
  // The chain's publisher leads first, or the one started here might take the lease.
  chain.publisher->wait_for_log("streaming replication slot");
  Process standby = start_publisher(chain.primary_db.db.conninfo(), chain.exchange.name());
  standby.wait_for_log("waiting as standby");
  {
    BackgroundWriter writer(chain.primary_db.db.conninfo(), [](std::int64_t i) {
      return "INSERT INTO public.t VALUES (" + std::to_string(i % 30) + ", 'w" + std::to_string(i) +
             "', 0) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, n = public.t.n + 1";
    });
    eventually([&] { return writer.commits() >= 200; }, kPatience, "the writer to write");
    EXPECT_EQ(chain.publisher->kill(), 128 + SIGKILL);
    chain.publisher.reset();
    standby.wait_for_log("streaming replication slot");
    std::int64_t before = writer.commits();
    eventually([&] { return writer.commits() >= before + 200; }, kPatience, "the writer to write");
    writer.stop();
  }
  chain.converge("public.t", "k", 60s);
  std::size_t distinct = check_ids(drain(chain.tap));
  EXPECT_EQ(static_cast<std::int64_t>(distinct), p.integer("SELECT count(*) + sum(n) FROM public.t"));
}

// While the tracked tables are idle and other tables write WAL, the publisher lets the
// slot move on, so that it does not hold that WAL back.
TEST(Capture, SlotMovesOnWhileTrackedTablesAreIdle) {
  Chain chain(kTwoTables, {"public.t"}, /*logical=*/true);
  PgSession& p = chain.primary;
  p.exec("INSERT INTO public.t VALUES (1, 'a')");
  chain.converge("public.t");
  p.exec("INSERT INTO public.u SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g");
  const std::string after = *p.value("SELECT pg_current_wal_lsn()::text");
  eventually(
      [&] {
        return p.value("SELECT confirmed_flush_lsn >= " + sql_literal(after) + "::pg_lsn AND restart_lsn >= " +
                       sql_literal(after) + "::pg_lsn FROM pg_replication_slots "
                       "WHERE slot_name = (SELECT slot_name FROM pgfanout.capture)") == "t";
      },
      90s, "the slot to move past the untracked table's WAL (restart_lsn waits for a running-xacts record)");
}

// ---------------------------------------------------------------------------------------
// 11. DDL mid-stream.

TEST(Capture, AddColumnMidStreamIsFollowed) {
  Chain chain("CREATE TABLE public.t (k int PRIMARY KEY, v text);", {"public.t"}, /*logical=*/true);
  PgSession& p = chain.primary;
  chain.replica.exec("ALTER TABLE public.t ADD COLUMN w int");
  {
    BackgroundWriter writer(chain.primary_db.db.conninfo(), [](std::int64_t i) {
      return "INSERT INTO public.t (k, v) VALUES (" + std::to_string(i % 100) + ", 'w" + std::to_string(i) +
             "') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v";
    });
    eventually([&] { return writer.commits() >= 150; }, kPatience, "the writer to write");
    p.exec("ALTER TABLE public.t ADD COLUMN w int");
    std::int64_t before = writer.commits();
    eventually([&] { return writer.commits() >= before + 150; }, kPatience, "the writer to write");
    p.exec("UPDATE public.t SET w = k * 2 WHERE k % 3 = 0");
    before = writer.commits();
    eventually([&] { return writer.commits() >= before + 50; }, kPatience, "the writer to write");
    writer.stop();
  }
  chain.converge("public.t", "k", 60s);
  EXPECT_GT(chain.replica.integer("SELECT count(*) FROM public.t WHERE w IS NOT NULL"), 0);
}

}  // namespace
}  // namespace pgfanout::test
