// Messages a listener cannot use go to QUEUE.dead with the reason in a header, are logged,
// and never block the valid messages behind them. Poison is published straight to the
// exchange (or the queue), interleaved with valid changes in the publisher's format.

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "change_json.hpp"
#include "harness.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

json change(std::int64_t id, const std::string& schema, const std::string& name,
            const std::string& op, json new_row, json old_key) {
  return change_json(id, schema, name, op, std::move(new_row), std::move(old_key));
}


// The listener's queue and its QUEUE.dead, declared here so that the test owns (deletes)
// them, the first bound to `patterns`.
struct ListenerQueues {
  ListenerQueues(const std::string& exchange, const std::vector<std::string>& patterns)
      : queue(exchange, patterns, QueueOptions::listener_compatible()),
        dead(exchange, {}, QueueOptions::dead_letter_compatible(), queue.name() + ".dead") {}
  TestQueue queue;
  TestQueue dead;
};

constexpr const char* kReplicaSql = R"SQL(
CREATE TABLE public.items (id int PRIMARY KEY, name text, qty int);
-- Constraints only the replica has: the primary let these rows through.
CREATE TABLE public.strict (id int PRIMARY KEY, note text NOT NULL);
CREATE TABLE public.guarded (id int PRIMARY KEY, qty int CHECK (qty >= 0));
CREATE TABLE public.nopk (id int, v text);
CREATE TABLE public.victims (id int PRIMARY KEY);
INSERT INTO public.victims VALUES (1);
-- A real table whose name and column are injection attempts: applied, safely quoted.
CREATE TABLE public."x""; DROP TABLE victims; --" (id int PRIMARY KEY, """; DROP TABLE victims; --" text);
)SQL";

struct Poison {
  std::string message_id;
  std::string routing_key;
  std::string body;
  std::string reason;
  Headers headers = {};
};

TEST(DeadLetters, PoisonIsSetAsideAndValidChangesBehindItApply) {
  ScratchDatabase replica_db("pgft_dead_r");
  PgSession replica = replica_db.session();
  replica.exec(kReplicaSql);
  TestExchange exchange("pgft_dead_x");
  ListenerQueues queues(exchange.name(), {"#"});

  const std::string injection_schema = "public\"; DROP TABLE victims; --";
  const std::string injection_name = "users; DROP TABLE victims; --";
  const std::string weird_name = "x\"; DROP TABLE victims; --";
  const std::string weird_column = "\"; DROP TABLE victims; --";

  std::vector<Poison> poison{
      {"p-not-json", "public.items", "not json {", "not-json"},
      {"p-no-op", "public.items",
       [] {
         json c = change(3, "public", "items", "INSERT", {{"id", 90}}, nullptr);
         c.erase("op");
         return c.dump();
       }(),
       "bad-shape"},
      {"p-merge", "public.items",
       change(4, "public", "items", "MERGE", {{"id", 91}}, nullptr).dump(), "bad-shape"},
      {"p-insert-without-new", "public.items",
       change(5, "public", "items", "INSERT", nullptr, nullptr).dump(), "bad-shape"},
      {"p-array-bad-element", "public.items",
       json::array(
           {change(6, "public", "items", "INSERT", {{"id", 100}, {"name", "in bad pack"}}, nullptr),
            change(7, "public", "items", "DELETE", nullptr, nullptr)})
           .dump(),
       "bad-shape", Headers{{"x-pgfanout-count", std::int64_t{2}}}},
      {"p-empty-array", "public.items", "[]", "bad-shape"},
      {"p-table-mismatch", "public.items",
       [] {
         json c = change(8, "public", "items", "INSERT", {{"id", 92}}, nullptr);
         c["table"] = "public.other";
         return c.dump();
       }(),
       "bad-shape"},
      {"p-unknown-table", "public.nosuch",
       change(9, "public", "nosuch", "INSERT", {{"id", 1}}, nullptr).dump(), "unknown-table"},
      {"p-injection", injection_schema + "." + injection_name,
       change(10, injection_schema, injection_name, "INSERT", {{"id", 1}}, nullptr).dump(),
       "unknown-table"},
      {"p-type-error", "public.items",
       change(11, "public", "items", "INSERT", {{"id", 50}, {"qty", "lots"}}, nullptr).dump(),
       "apply-failed"},
      {"p-not-null", "public.strict",
       change(12, "public", "strict", "INSERT", {{"id", 1}, {"note", nullptr}}, nullptr).dump(),
       "apply-failed"},
      {"p-check", "public.guarded",
       change(13, "public", "guarded", "INSERT", {{"id", 1}, {"qty", -5}}, nullptr).dump(),
       "apply-failed"},
      {"p-pack-one-fails", "public.items",
       json::array(
           {change(14, "public", "items", "INSERT", {{"id", 10}, {"name", "ten"}}, nullptr),
            change(15, "public", "items", "INSERT", {{"id", 11}, {"qty", "eleven"}}, nullptr),
            change(16, "public", "items", "INSERT", {{"id", 12}, {"name", "twelve"}}, nullptr)})
           .dump(),
       "apply-failed", Headers{{"x-pgfanout-count", std::int64_t{3}}}},
      {"p-no-key", "public.nopk",
       change(17, "public", "nopk", "INSERT", {{"id", 1}}, nullptr).dump(), "no-primary-key"},
  };
  std::vector<std::pair<std::string, std::string>> valid{
      {"public.items",
       change(1, "public", "items", "INSERT", {{"id", 1}, {"name", "one"}, {"qty", 1}}, nullptr)
           .dump()},
      {"public.items",
       change(2, "public", "items", "INSERT", {{"id", 2}, {"name", "two"}, {"qty", 2}}, nullptr)
           .dump()},
      {"public.items", change(20, "public", "items", "UPDATE",
                              {{"id", 1}, {"name", "one!"}, {"qty", 11}}, {{"id", 1}})
                           .dump()},
      {"public." + weird_name, change(21, "public", weird_name, "INSERT",
                                      {{"id", 7}, {weird_column, "stays a value"}}, nullptr)
                                   .dump()},
      {"public.guarded",
       change(22, "public", "guarded", "INSERT", {{"id", 2}, {"qty", 5}}, nullptr).dump()},
      {"public.items", change(23, "public", "items", "DELETE", nullptr, {{"id", 2}}).dump()},
      {"public.strict",
       change(24, "public", "strict", "INSERT", {{"id", 2}, {"note", "fine"}}, nullptr).dump()},
  };

  // Interleaved: a valid change before, between and after the poison, all queued before
  // the listener starts, so that they meet in the same batches.
  for (std::size_t i = 0; i < poison.size() || i < valid.size(); ++i) {
    if (i < valid.size()) {
      std::string id = "v";
      id += std::to_string(i);
      publish_message(exchange.name(), valid[i].first, valid[i].second, {}, id);
    }
    if (i < poison.size()) {
      const Poison& p = poison[i];
      publish_message(exchange.name(), p.routing_key, p.body, p.headers, p.message_id);
    }
  }
  Process listener = start_listener(replica_db.conninfo(), queues.queue.name(), exchange.name());

  auto state = [&] {
    return replica.value(
        "SELECT (SELECT string_agg(format('%s:%s:%s', id, name, qty), ',' ORDER BY id) FROM "
        "public.items)"
        " || ' | ' || (SELECT string_agg(id::text, ',' ORDER BY id) FROM public.guarded)"
        " || ' | ' || (SELECT string_agg(id::text, ',' ORDER BY id) FROM public.strict)"
        " || ' | ' || (SELECT string_agg(format('%s:%s', id, \"\"\"; DROP TABLE victims; --\"), "
        "',')"
        "              FROM public.\"x\"\"; DROP TABLE victims; --\")");
  };
  eventually_value(
      state,
      [](const auto& s) { return s == "1:one!:11,10:ten:,12:twelve: | 2 | 2 | 7:stays a value"; },
      kPatience, "the valid changes to be applied");

  // Every poison message is in QUEUE.dead with its reason; nothing else is.
  std::vector<Delivery> dead = queues.dead.take(poison.size());
  std::map<std::string, const Delivery*> by_id;
  for (const auto& d : dead) by_id[d.message_id] = &d;
  for (const Poison& p : poison) {
    SCOPED_TRACE(p.message_id);
    ASSERT_TRUE(by_id.count(p.message_id)) << "no dead letter for " << p.message_id;
    const Delivery& d = *by_id[p.message_id];
    EXPECT_EQ(header_text(d, "x-pgfanout-reason"), p.reason);
    EXPECT_EQ(header_text(d, "x-pgfanout-routing-key"), p.routing_key);
    EXPECT_NE(header_text(d, "x-pgfanout-error"), "");
    EXPECT_EQ(header_text(d, "x-pgfanout-error").find("(no "), std::string::npos);
    if (p.message_id == "p-pack-one-fails") {
      // Only the failing change of the pack is set aside, as one change object.
      json body = json::parse(d.body);
      EXPECT_EQ(body["id"], 15);
      EXPECT_EQ(body["new"]["id"], 11);
      EXPECT_NE(header_text(d, "x-pgfanout-error").find("integer"), std::string::npos)
          << header_text(d, "x-pgfanout-error");
    } else {
      EXPECT_EQ(d.body, p.body);
    }
  }
  EXPECT_EQ(by_id.size(), poison.size());
  EXPECT_NE(header_text(*by_id["p-check"], "x-pgfanout-error").find("guarded_qty_check"),
            std::string::npos);
  EXPECT_NE(header_text(*by_id["p-not-null"], "x-pgfanout-error").find("null value"),
            std::string::npos);
  EXPECT_EQ(queues.dead.remaining(), 0u);

  // The injection attempts did nothing but fail to resolve (or be applied as plain data).
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.victims"), 1);
  EXPECT_EQ(
      replica.integer("SELECT count(*) FROM public.items WHERE id IN (11, 50, 90, 91, 92, 100)"),
      0);

  // One log line per dead letter, and the listener is still running and consuming.
  // (Logged once the broker has confirmed them, which may come after they are readable.)
  eventually([&] { return listener.count_in_log("dead-lettered message") == poison.size(); },
             kPatience, "one log line per dead letter");
  ASSERT_TRUE(listener.running());
  publish_message(exchange.name(), "public.items", "still not json", {}, "p-late");
  publish_message(
      exchange.name(), "public.items",
      change(30, "public", "items", "INSERT", {{"id", 200}, {"name", "late"}}, nullptr).dump(), {},
      "v-late");
  eventually(
      [&] { return replica.integer("SELECT count(*) FROM public.items WHERE id = 200") == 1; },
      kPatience, "the change behind a late poison message to be applied");
  auto late = queues.dead.take(1);
  EXPECT_EQ(late[0].message_id, "p-late");
  EXPECT_EQ(header_text(late[0], "x-pgfanout-reason"), "not-json");
  eventually([&] { return listener.count_in_log("dead-lettered message") == poison.size() + 1; },
             kPatience, "the late dead letter to be logged");
  EXPECT_TRUE(listener.running());
  EXPECT_EQ(listener.stop(), 0);
}

// --tables limits what a listener receives (its queue's bindings) and what it applies.
TEST(DeadLetters, TablesFilterKeepsOtherTablesOff) {
  constexpr const char* kTables = R"SQL(
CREATE TABLE public.a (id int PRIMARY KEY, v text);
CREATE TABLE public.b (id int PRIMARY KEY, v text);
CREATE TABLE public.ab (id int PRIMARY KEY, v text);
)SQL";
  ScratchDatabase primary_db("pgft_tables_p"), replica_db("pgft_tables_r");
  PgSession primary = primary_db.session();
  PgSession replica = replica_db.session();
  primary.exec(kTables);
  replica.exec(kTables);
  install_schema(primary_db.conninfo());
  primary.exec(
      "SELECT pgfanout.track('public.a'); SELECT pgfanout.track('public.b'); "
      "SELECT pgfanout.track('public.ab');");

  TestExchange exchange("pgft_tables_x");
  ListenerQueues queues(exchange.name(), {});
  Process listener = start_listener(replica_db.conninfo(), queues.queue.name(), exchange.name(),
                                    {"--tables", "public.a"});
  listener.wait_for_log("consuming from");
  Process publisher = start_publisher(primary_db.conninfo(), exchange.name(), {"--pack", "10"});

  primary.exec(R"SQL(
INSERT INTO public.a SELECT g, 'a' || g FROM generate_series(1, 20) g;
INSERT INTO public.b SELECT g, 'b' || g FROM generate_series(1, 20) g;
INSERT INTO public.ab SELECT g, 'ab' || g FROM generate_series(1, 5) g;
UPDATE public.a SET v = v || '!' WHERE id % 2 = 0;
UPDATE public.b SET v = v || '!';
DELETE FROM public.a WHERE id > 15;
)SQL");
  // No queue is bound for public.b and public.ab: the broker returns their changes and
  // the publisher keeps them (20 + 20 + 5), while every change of public.a is shipped.
  eventually_value([&] { return primary.integer("SELECT count(*) FROM pgfanout.changes"); },
                   [](std::int64_t n) { return n == 45; }, kPatience,
                   "only the changes of the tables nobody binds to remain in the outbox");
  EXPECT_EQ(primary.integer("SELECT count(*) FROM pgfanout.changes "
                            "WHERE table_name NOT IN ('b', 'ab')"),
            0);
  auto a_rows = [](PgSession& db) { return table_md5(db, "public.a", "t.id"); };
  auto want = a_rows(primary);
  eventually_value([&] { return a_rows(replica); }, [&](const auto& got) { return got == want; },
                   kPatience, "public.a to converge");

  // A change of another table that reaches the queue anyway (published to it directly) is
  // not applied but dead-lettered as not replicated.
  publish_message(
      "", queues.queue.name(),
      change(1000, "public", "b", "INSERT", {{"id", 1000}, {"v", "direct"}}, nullptr).dump(), {},
      "p-not-replicated");
  auto dead = queues.dead.take(1);
  EXPECT_EQ(dead[0].message_id, "p-not-replicated");
  EXPECT_EQ(header_text(dead[0], "x-pgfanout-reason"), "not-replicated");
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.b"), 0);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.ab"), 0);
  EXPECT_EQ(queues.dead.remaining(), 0u);
  eventually([&] { return listener.count_in_log("dead-lettered message") == 1; }, kPatience,
             "the dead letter to be logged");
  EXPECT_EQ(publisher.stop(), 0);
  EXPECT_EQ(listener.stop(), 0);
}

// TRUNCATE parent, child on the primary arrives as two TRUNCATE changes, which the replica
// can only apply as one statement. Even when the second one arrives a little later (here
// 30 ms, as if the publisher had ended a batch between them), the listener waits for it
// instead of truncating the parent alone, which PostgreSQL refuses.
TEST(DeadLetters, TruncatesOfLinkedTablesArrivingApartAreAppliedTogether) {
  ScratchDatabase replica_db("pgft_dead_r");
  PgSession replica = replica_db.session();
  replica.exec(R"SQL(
CREATE TABLE public.parent (id int PRIMARY KEY);
CREATE TABLE public.child (id int PRIMARY KEY, parent_id int REFERENCES public.parent);
INSERT INTO public.parent SELECT g FROM generate_series(1, 5) g;
INSERT INTO public.child SELECT g, g FROM generate_series(1, 5) g;
)SQL");
  TestExchange exchange("pgft_dead_x");
  ListenerQueues queues(exchange.name(), {"#"});
  Process listener = start_listener(replica_db.conninfo(), queues.queue.name(), exchange.name());
  listener.wait_for_log("consuming from");
  publish_message(exchange.name(), "public.parent",
                  change(1, "public", "parent", "TRUNCATE", nullptr, nullptr).dump());
  std::this_thread::sleep_for(30ms);
  publish_message(exchange.name(), "public.child",
                  change(2, "public", "child", "TRUNCATE", nullptr, nullptr).dump());
  publish_message(exchange.name(), "public.parent",
                  change(3, "public", "parent", "INSERT", {{"id", 10}}, nullptr).dump());
  eventually([&] { return replica.value("SELECT string_agg(id::text, ',') FROM public.parent") == "10"; },
             kPatience, "the parent to hold only the row inserted after the truncate");
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.child"), 0);
  EXPECT_EQ(queues.dead.remaining(), 0u);
  EXPECT_EQ(listener.stop(), 0);
}

// A batch that fails is split in halves to find the change at fault. A split between
// TRUNCATE parent and TRUNCATE child would truncate the parent alone, which PostgreSQL
// refuses, and dead-letter it: the replica would keep the parent's rows. The linked
// TRUNCATEs stay together whatever the bad change beside them.
TEST(DeadLetters, FindingABadChangeNeverSplitsLinkedTruncates) {
  ScratchDatabase replica_db("pgft_dead_r");
  PgSession replica = replica_db.session();
  replica.exec(R"SQL(
CREATE TABLE public.parent (id int PRIMARY KEY);
CREATE TABLE public.child (id int PRIMARY KEY, parent_id int REFERENCES public.parent);
INSERT INTO public.parent SELECT g FROM generate_series(1, 5) g;
INSERT INTO public.child SELECT g, g FROM generate_series(1, 5) g;
)SQL");
  TestExchange exchange("pgft_dead_x");
  ListenerQueues queues(exchange.name(), {"#"});
  // All three wait in the queue, so the listener takes them as one batch.
  publish_message(exchange.name(), "public.parent",
                  change(1, "public", "parent", "TRUNCATE", nullptr, nullptr).dump());
  publish_message(exchange.name(), "public.child",
                  change(2, "public", "child", "TRUNCATE", nullptr, nullptr).dump());
  publish_message(exchange.name(), "public.child",
                  change(3, "public", "child", "INSERT", {{"id", "not a number"}}, nullptr).dump());
  Process listener = start_listener(replica_db.conninfo(), queues.queue.name(), exchange.name());
  eventually([&] { return listener.count_in_log("dead-lettered message") == 1; }, kPatience,
             "the bad insert to be dead-lettered");
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.parent"), 0);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.child"), 0);
  auto dead = queues.dead.take(1);
  EXPECT_NE(dead.front().body.find("not a number"), std::string::npos) << dead.front().body;
  EXPECT_EQ(queues.dead.remaining(), 0u);
  EXPECT_EQ(listener.stop(), 0);
}

// A transient SQL error (here lock_timeout while a replica session holds the row; likewise
// deadlocks, serialization failures, statement_timeout, a full disk) is not the change's
// fault: the batch is retried on a new connection, never dead-lettered.
TEST(DeadLetters, TransientErrorsAreRetriedNotDeadLettered) {
  ScratchDatabase replica_db("pgft_dead_r");
  PgSession replica = replica_db.session();
  replica.exec("CREATE TABLE public.items (id int PRIMARY KEY, name text, qty int)");
  replica.exec("ALTER DATABASE " + replica_db.name() + " SET lock_timeout = '100ms'");
  TestExchange exchange("pgft_dead_x");
  ListenerQueues queues(exchange.name(), {"#"});
  Process listener = start_listener(replica_db.conninfo(), queues.queue.name(), exchange.name());
  publish_message(
      exchange.name(), "public.items",
      change(1, "public", "items", "INSERT", {{"id", 1}, {"name", "one"}}, nullptr).dump());
  eventually([&] { return replica.integer("SELECT count(*) FROM public.items") == 1; }, kPatience,
             "the first change to be applied");

  PgSession holder = replica_db.session();
  holder.exec("BEGIN; SELECT * FROM public.items WHERE id = 1 FOR UPDATE;");
  publish_message(
      exchange.name(), "public.items",
      change(2, "public", "items", "UPDATE", {{"id", 1}, {"name", "updated"}}, {{"id", 1}}).dump());
  listener.wait_for_log("lock timeout");
  holder.exec("COMMIT");

  eventually(
      [&] { return replica.value("SELECT name FROM public.items WHERE id = 1") == "updated"; },
      kPatience, "the update to be applied once the lock is gone");
  EXPECT_EQ(queues.dead.remaining(), 0u);
  EXPECT_EQ(listener.stop(), 0);
}

}  // namespace
}  // namespace pgfanout::test
