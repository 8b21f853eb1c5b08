// pgfanout-publisher against the real servers: what INTERFACE.md promises about its
// messages, its command line, and keeping every change while the broker is away.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>

#include "harness.hpp"

namespace pgfanout::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

json body_of(const Delivery& d) { return json::parse(d.body); }

std::optional<std::int64_t> header_count(const Delivery& d) {
  for (const auto& [key, value] : d.headers) {
    if (key == "x-pgfanout-count") {
      if (const auto* n = std::get_if<std::int64_t>(&value)) return *n;
      ADD_FAILURE() << "x-pgfanout-count is not an integer";
    }
  }
  return std::nullopt;
}

class PublisherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_.emplace("pgft_pub");
    install_schema(db_->conninfo());
    sql_.emplace(db_->conninfo());
    exchange_.emplace("pgft_pub");
  }

  PgSession& sql() { return *sql_; }
  const std::string& exchange() { return exchange_->name(); }
  Process publisher(std::vector<std::string> extra = {}) {
    return start_publisher(db_->conninfo(), exchange(), std::move(extra));
  }

  /// PostgreSQL's clock in the format of the messages' ts, to bracket a change.
  std::string now_utc() {
    return *sql().value(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')");
  }

  /// to_jsonb of the rows of `table` matching `where`, as PostgreSQL prints it.
  std::string row_json(const std::string& table, const std::string& where) {
    return *sql().value("SELECT to_jsonb(t)::text FROM " + table + " t WHERE " + where);
  }

  std::optional<ScratchDatabase> db_;
  std::optional<PgSession> sql_;
  std::optional<TestExchange> exchange_;
};

struct Expected {
  std::string schema;
  std::string name;
  std::string op;
  std::optional<std::string> new_row;  // to_jsonb text; nullopt for JSON null
  std::optional<std::string> old_key;
  std::string ts_from;
  std::string ts_to;
};

// One change object as INTERFACE.md specifies it.
void expect_change(const json& change, const std::string& body, const Expected& e) {
  ASSERT_TRUE(change.is_object()) << body;
  std::set<std::string> keys;
  for (const auto& [k, v] : change.items()) keys.insert(k);
  EXPECT_EQ(keys, (std::set<std::string>{"id", "table", "schema", "name", "op", "new", "old", "ts"}));
  EXPECT_TRUE(change["id"].is_number_integer()) << body;
  EXPECT_EQ(change["table"], e.schema + "." + e.name);
  EXPECT_EQ(change["schema"], e.schema);
  EXPECT_EQ(change["name"], e.name);
  EXPECT_EQ(change["op"], e.op);
  if (e.new_row) {
    EXPECT_EQ(change["new"], json::parse(*e.new_row)) << body;
    // Trigger mode: values keep PostgreSQL's exact text (big numerics, floats), spliced
    // verbatim. Logical mode builds the same values in column order (README, "Message
    // format"): the same meaning, checked above.
    if (!logical_capture()) {
      EXPECT_THAT(body, HasSubstr("\"new\":" + *e.new_row));
    }
  } else {
    EXPECT_TRUE(change["new"].is_null()) << body;
  }
  if (e.old_key) {
    EXPECT_EQ(change["old"], json::parse(*e.old_key)) << body;
  } else {
    EXPECT_TRUE(change["old"].is_null()) << body;
  }
  ASSERT_TRUE(change["ts"].is_string()) << body;
  std::string ts = change["ts"];
  EXPECT_TRUE(std::regex_match(ts, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00)"))) << ts;
  EXPECT_LE(e.ts_from, ts) << "the change is older than the statement that made it";
  EXPECT_LE(ts, e.ts_to) << "the change is newer than the statement that made it";
}

// A message carrying one change: its properties and its body.
std::int64_t expect_single(const Delivery& d, const Expected& e) {
  EXPECT_EQ(d.routing_key, e.schema + "." + e.name);
  EXPECT_EQ(d.delivery_mode, 2) << "not persistent";
  EXPECT_EQ(d.content_type, "application/json");
  EXPECT_FALSE(header_count(d)) << "x-pgfanout-count on a single change";
  json j = body_of(d);
  expect_change(j, d.body, e);
  if (!j.is_object() || !j["id"].is_number_integer()) return -1;
  auto id = j["id"].get<std::int64_t>();
  EXPECT_EQ(d.message_id, std::to_string(id));
  return id;
}

TEST_F(PublisherTest, EachOperationYieldsExactlyTheSpecifiedMessage) {
  sql().exec(R"(
    CREATE TABLE public.items (
      id int PRIMARY KEY, name text, price numeric, huge numeric, ratio float8, tags text[],
      meta jsonb, at timestamptz, flag boolean, nothing text, raw bytea);
    SELECT pgfanout.track('public.items');)");
  TestQueue queue(exchange(), {"public.items"});
  Process pub = publisher();
  std::vector<std::int64_t> ids;

  std::string t0 = now_utc();
  sql().exec(R"(INSERT INTO public.items VALUES (1, 'ana "q" \ é', 12.50,
      123456789012345678901234567890.123456789000, 0.1, '{a,"b c",NULL}',
      '{"k": [1, {"n": null}], "s": "x"}', '2026-11-21 05:18:39.123456+00', true, NULL, '\x00ff'))");
  std::string t1 = now_utc();
  std::string row = row_json("public.items", "id = 1");
  ids.push_back(expect_single(queue.take(1)[0], {"public", "items", "INSERT", row, std::nullopt, t0, t1}));

  t0 = now_utc();
  sql().exec("UPDATE public.items SET name = 'bo', flag = false WHERE id = 1");
  t1 = now_utc();
  row = row_json("public.items", "id = 1");
  ids.push_back(expect_single(queue.take(1)[0], {"public", "items", "UPDATE", row, R"({"id": 1})", t0, t1}));

  t0 = now_utc();
  sql().exec("UPDATE public.items SET id = 2 WHERE id = 1");
  t1 = now_utc();
  row = row_json("public.items", "id = 2");
  ids.push_back(expect_single(queue.take(1)[0], {"public", "items", "UPDATE", row, R"({"id": 1})", t0, t1}));

  t0 = now_utc();
  sql().exec("DELETE FROM public.items WHERE id = 2");
  t1 = now_utc();
  ids.push_back(
      expect_single(queue.take(1)[0], {"public", "items", "DELETE", std::nullopt, R"({"id": 2})", t0, t1}));

  sql().exec("INSERT INTO public.items (id) VALUES (3)");
  queue.take(1);
  t0 = now_utc();
  sql().exec("TRUNCATE public.items");
  t1 = now_utc();
  ids.push_back(
      expect_single(queue.take(1)[0], {"public", "items", "TRUNCATE", std::nullopt, std::nullopt, t0, t1}));

  for (std::size_t i = 1; i < ids.size(); ++i) EXPECT_LT(ids[i - 1], ids[i]) << "ids out of order";
  wait_outbox_empty(sql());
  EXPECT_EQ(queue.remaining(), 0u) << "more messages than changes";
}

TEST_F(PublisherTest, QuotedSchemaDottedNameAndCompositeKey) {
  sql().exec(R"(
    CREATE SCHEMA "Sales Dept";
    CREATE TABLE "Sales Dept"."order.lines" (
      "Order Id" int, line int, "qty""x" int, note text, PRIMARY KEY ("Order Id", line));
    SELECT pgfanout.track('"Sales Dept"."order.lines"');)");
  const std::string table = R"("Sales Dept"."order.lines")";
  TestQueue queue(exchange(), {"Sales Dept.order.lines"});
  Process pub = publisher();

  std::string t0 = now_utc();
  sql().exec("INSERT INTO " + table + R"( VALUES (7, 1, 3, 'first'))");
  std::string inserted = row_json(table, "line = 1");
  EXPECT_EQ(json::parse(inserted), json::parse(R"({"Order Id": 7, "line": 1, "qty\"x": 3, "note": "first"})"));
  sql().exec("UPDATE " + table + R"( SET line = 2, "qty""x" = 4 WHERE "Order Id" = 7 AND line = 1)");
  std::string row = row_json(table, "line = 2");
  sql().exec("DELETE FROM " + table + R"( WHERE "Order Id" = 7 AND line = 2)");
  std::string t1 = now_utc();

  auto messages = queue.take(3);
  expect_single(messages[0], {"Sales Dept", "order.lines", "INSERT", inserted, std::nullopt, t0, t1});
  expect_single(messages[1], {"Sales Dept", "order.lines", "UPDATE", row, R"({"Order Id": 7, "line": 1})", t0, t1});
  expect_single(messages[2],
                {"Sales Dept", "order.lines", "DELETE", std::nullopt, R"({"Order Id": 7, "line": 2})", t0, t1});
  wait_outbox_empty(sql());
  EXPECT_EQ(queue.remaining(), 0u);
}

TEST_F(PublisherTest, PackPutsConsecutiveChangesOfOneTableIntoArrays) {
  sql().exec(R"(
    CREATE TABLE public.a (id int PRIMARY KEY, v int);
    CREATE TABLE public.b (id int PRIMARY KEY, v int);
    SELECT pgfanout.track('public.a'), pgfanout.track('public.b');)");
  TestQueue queue(exchange(), {"public.*"});
  // Written before the publisher starts, so that it sees them all in one batch.
  std::string t0 = now_utc();
  sql().exec(R"(
    INSERT INTO public.a SELECT g, g FROM generate_series(1, 25) g;
    INSERT INTO public.b SELECT g, g FROM generate_series(1, 3) g;
    UPDATE public.a SET v = -v WHERE id <= 5;
    INSERT INTO public.b VALUES (4, 4);)");
  std::string t1 = now_utc();
  ASSERT_EQ(pending_changes(sql()), 34);
  Process pub = publisher({"--pack", "10"});

  struct Shape {
    std::string table;
    std::size_t count;
  };
  const std::vector<Shape> shapes{{"a", 10}, {"a", 10}, {"a", 5}, {"b", 3}, {"a", 5}, {"b", 1}};
  auto messages = queue.take(shapes.size());
  std::int64_t last_id = 0;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    SCOPED_TRACE("message " + std::to_string(i));
    const Delivery& d = messages[i];
    EXPECT_EQ(d.routing_key, "public." + shapes[i].table);
    EXPECT_EQ(d.delivery_mode, 2);
    EXPECT_EQ(d.content_type, "application/json");
    json j = body_of(d);
    std::vector<json> changes;
    if (shapes[i].count == 1) {
      ASSERT_TRUE(j.is_object()) << "a run of one change travels as an object: " << d.body;
      EXPECT_FALSE(header_count(d));
      changes.push_back(j);
    } else {
      ASSERT_TRUE(j.is_array()) << d.body;
      EXPECT_EQ(header_count(d), static_cast<std::int64_t>(shapes[i].count));
      changes.assign(j.begin(), j.end());
    }
    ASSERT_EQ(changes.size(), shapes[i].count);
    EXPECT_EQ(d.message_id, std::to_string(changes.front()["id"].get<std::int64_t>()));
    for (const json& c : changes) {
      ASSERT_TRUE(c.is_object());
      EXPECT_EQ(c["table"], "public." + shapes[i].table);
      EXPECT_EQ(c["schema"], "public");
      EXPECT_EQ(c["name"], shapes[i].table);
      std::int64_t id = c["id"];
      EXPECT_GT(id, last_id) << "changes out of order";
      last_id = id;
      std::string ts = c["ts"];
      EXPECT_LE(t0, ts);
      EXPECT_LE(ts, t1);
    }
  }
  // The fifth message holds the five updates, with their old keys.
  json updates = body_of(messages[4]);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(updates[i]["op"], "UPDATE");
    EXPECT_EQ(updates[i]["new"]["v"], -updates[i]["new"]["id"].get<int>());
    EXPECT_EQ(updates[i]["old"], json({{"id", updates[i]["new"]["id"]}}));
  }
  wait_outbox_empty(sql());
  EXPECT_EQ(queue.remaining(), 0u);
}

TEST_F(PublisherTest, OneMegabyteRowIsShippedWhole) {
  sql().exec(R"(
    CREATE TABLE public.big (id int PRIMARY KEY, payload text);
    SELECT pgfanout.track('public.big');)");
  TestQueue queue(exchange(), {"public.big"});
  Process pub = publisher();
  sql().exec(
      "INSERT INTO public.big SELECT 1, string_agg(md5(g::text), '' ORDER BY g) "
      "FROM generate_series(1, 32768) g");
  std::string payload = *sql().value("SELECT payload FROM public.big");
  ASSERT_EQ(payload.size(), 1u << 20);
  Delivery d = queue.take(1)[0];
  json j = body_of(d);
  EXPECT_EQ(j["op"], "INSERT");
  ASSERT_TRUE(j["new"]["payload"].is_string());
  EXPECT_EQ(j["new"]["payload"].get<std::string>().size(), payload.size());
  EXPECT_TRUE(j["new"]["payload"] == payload) << "the payload arrived altered";
  wait_outbox_empty(sql());
}

TEST_F(PublisherTest, ChangesCommittedWhileThePublisherIsStoppedAreShippedOnStart) {
  sql().exec(R"(
    CREATE TABLE public.t (id int PRIMARY KEY, v text);
    SELECT pgfanout.track('public.t');)");
  TestQueue queue(exchange(), {"public.t"});
  {
    Process pub = publisher();
    sql().exec("INSERT INTO public.t VALUES (1, 'a'), (2, 'b')");
    queue.take(2);
    wait_outbox_empty(sql());
    EXPECT_EQ(pub.stop(), 0);
  }
  sql().exec(R"(
    INSERT INTO public.t VALUES (3, 'c');
    UPDATE public.t SET v = 'A' WHERE id = 1;
    DELETE FROM public.t WHERE id = 2;
    BEGIN; INSERT INTO public.t VALUES (4, 'd'); UPDATE public.t SET id = 5 WHERE id = 4; COMMIT;)");
  ASSERT_EQ(pending_changes(sql()), 5) << "changes must wait while no publisher runs";

  Process pub = publisher();
  auto messages = queue.take(5);
  std::vector<std::string> ops;
  std::vector<std::int64_t> ids;
  for (const auto& d : messages) {
    json j = body_of(d);
    ops.push_back(j["op"]);
    ids.push_back(j["id"]);
  }
  EXPECT_EQ(ops, (std::vector<std::string>{"INSERT", "UPDATE", "DELETE", "INSERT", "UPDATE"}));
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(body_of(messages[4])["old"], json({{"id", 4}}));
  EXPECT_EQ(body_of(messages[4])["new"]["id"], 5);
  wait_outbox_empty(sql());
  EXPECT_EQ(queue.remaining(), 0u);
}

TEST_F(PublisherTest, ChangesOfATableNoQueueIsBoundForWaitInTheOutboxUntilOneIs) {
  sql().exec(R"(
    CREATE TABLE public.t (id int PRIMARY KEY, v text);
    CREATE TABLE public.other (id int PRIMARY KEY);
    SELECT pgfanout.track('public.t');
    SELECT pgfanout.track('public.other');)");
  TestQueue others(exchange(), {"public.other"});
  Process pub = publisher();
  sql().exec(R"(
    INSERT INTO public.t VALUES (1, 'a'), (2, 'b');
    INSERT INTO public.other VALUES (1);
    UPDATE public.t SET v = 'A' WHERE id = 1;
    INSERT INTO public.other VALUES (2);)");
  // The bound table flows; the unbound one is returned by the broker and kept.
  others.take(2);
  pub.wait_for_log("no queue is bound for table public.t");
  eventually([&] { return outbox_count(sql()) == 3; }, kPatience,
             "the three changes of public.t to stay in the outbox, and only them");

  TestQueue late(exchange(), {"public.t"});
  sql().exec("UPDATE public.t SET v = 'B' WHERE id = 2");
  auto messages = late.take(4);
  std::vector<std::string> ops;
  std::vector<std::int64_t> ids;
  for (const auto& d : messages) {
    json j = body_of(d);
    ops.push_back(j["op"]);
    ids.push_back(j["id"]);
  }
  EXPECT_EQ(ops, (std::vector<std::string>{"INSERT", "INSERT", "UPDATE", "UPDATE"}));
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end())) << "held changes must go out in id order";
  wait_outbox_empty(sql());
  EXPECT_EQ(late.remaining(), 0u);
  EXPECT_EQ(others.remaining(), 0u);
  EXPECT_EQ(pub.stop(), 0);
}

// A returned message (no queue bound for its table) whose content the publisher cannot
// read: the broker's confirm of the message follows anyway, and a publisher that took the
// failed read for an empty return deleted the change as shipped, although no queue had
// it. The relay mangles the returned message's content header, so the read fails on a
// connection that stays up.
TEST_F(PublisherTest, AReturnedMessageWhoseReadFailsKeepsItsChangeInTheOutbox) {
  sql().exec(R"(
    CREATE TABLE public.t (id int PRIMARY KEY, v text);
    SELECT pgfanout.track('public.t');)");
  FreezableRelay relay;
  relay.mangle_returns(true);
  Process pub(publisher_binary(), {"--source", db_->conninfo(), "--amqp", relay.url(15), "--exchange",
                                   exchange(), "--log-level", "debug"});
  sql().exec("INSERT INTO public.t VALUES (1, 'unroutable')");
  eventually([&] { return relay.returns_mangled() >= 2; }, kPatience,
             "the broker to return the change, and the publisher to try again after a failed read");
  // (In logical mode it stays in the slot, which its publisher holds: that it arrives
  // below is the check.)
  if (!logical_capture()) {
    EXPECT_EQ(outbox_count(sql()), 1) << "a change whose return could not be read left the outbox";
  }
  EXPECT_NE(pub.log().find("reading a returned message"), std::string::npos) << pub.log();

  // Once a queue is bound and returns are read whole again, the change reaches it.
  relay.mangle_returns(false);
  TestQueue late(exchange(), {"public.t"});
  auto messages = late.take(1);
  EXPECT_EQ(body_of(messages[0])["new"]["v"], "unroutable");
  wait_outbox_empty(sql());
  EXPECT_EQ(pub.stop(), 0);
}

TEST_F(PublisherTest, OutboxKeepsEveryChangeWhileTheBrokerIsDown) {
  sql().exec(R"(
    CREATE TABLE public.t (id int PRIMARY KEY, v text);
    SELECT pgfanout.track('public.t');)");
  TestQueue queue(exchange(), {"public.t"});
  Process pub = publisher();
  sql().exec("INSERT INTO public.t VALUES (0, 'before')");
  queue.take(1);

  {
    std::size_t reconnects = pub.count_in_log("reconnecting in");
    BrokerStopped broker;
    sql().exec("INSERT INTO public.t SELECT g, 'during' FROM generate_series(1, 5) g");
    sql().exec("UPDATE public.t SET v = 'later' WHERE id = 1");
    // Two reconnect messages: the lost connection, then at least one refused attempt.
    eventually([&] { return pub.count_in_log("reconnecting in") >= reconnects + 2; }, kPatience,
               "the publisher to notice the broker is down and fail to reconnect");
    EXPECT_TRUE(pub.running()) << "the publisher must never exit because the broker went away";
    if (!logical_capture()) {
      EXPECT_EQ(outbox_count(sql()), 6) << "changes must stay in the outbox while the broker is down";
    }
    broker.start();
  }

  auto messages = queue.take(6, 60s);
  std::vector<std::int64_t> ids;
  for (const auto& d : messages) ids.push_back(body_of(d)["id"]);
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(body_of(messages[5])["op"], "UPDATE");
  wait_outbox_empty(sql());
  EXPECT_EQ(queue.remaining(), 0u);
  EXPECT_TRUE(pub.running());
}

TEST_F(PublisherTest, NackedChangesStayInTheOutboxUntilTheBrokerTakesThem) {
  sql().exec(R"(
    CREATE TABLE public.t (id int PRIMARY KEY);
    SELECT pgfanout.track('public.t');)");
  // A queue that holds two messages and makes the broker nack any publish beyond that.
  QueueOptions full;
  full.max_length = 2;
  full.reject_publish = true;
  TestQueue queue(exchange(), {"public.t"}, full);
  Process pub = publisher();
  sql().exec("INSERT INTO public.t SELECT g FROM generate_series(1, 5) g");

  // The broker confirms the two it keeps only once they are on disk but nacks the rest at
  // once, so the first nack may come before those acks: either way the publisher must
  // keep retrying, and what the queue cannot hold must stay in the outbox.
  eventually([&] { return pub.count_in_log("refused (nack)") >= 2; }, kPatience,
             "the broker to refuse the publisher twice");
  EXPECT_TRUE(pub.running());
  EXPECT_EQ(queue_depth(queue.name()), 2u);
  if (!logical_capture()) {  // in logical mode they stay in the slot; all arriving below is the check
    EXPECT_GE(outbox_count(sql()), 3) << "a nacked change must never leave the outbox";
    std::string kept = *sql().value(
        "SELECT string_agg(new_row->>'id', ',' ORDER BY id) FROM pgfanout.changes");
    EXPECT_THAT(kept, ::testing::EndsWith("3,4,5")) << "rows left in the outbox: " << kept;
  }

  // Reading makes room; each retry ships what fits. Delivery is at least once, so a
  // change may come twice, but none may be missing.
  std::set<std::int64_t> seen_rows;
  auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (seen_rows.size() < 5 && std::chrono::steady_clock::now() < deadline) {
    if (auto d = queue.next(1s)) seen_rows.insert(body_of(*d)["new"]["id"].get<std::int64_t>());
  }
  EXPECT_EQ(seen_rows, (std::set<std::int64_t>{1, 2, 3, 4, 5}));
  wait_outbox_empty(sql());
}

TEST_F(PublisherTest, WaitsForInstallAndShipsOnceInstalled) {
  ScratchDatabase bare("pgft_bare");
  Process pub = start_publisher(bare.conninfo(), exchange());
  pub.wait_for_log("not installed");
  EXPECT_TRUE(pub.running()) << "a source without the schema is retried, not fatal";
  install_schema(bare.conninfo());
  PgSession bare_sql(bare.conninfo());
  bare_sql.exec("CREATE TABLE public.t (id int PRIMARY KEY); SELECT pgfanout.track('public.t')");
  TestQueue queue(exchange(), {"public.t"});
  bare_sql.exec("INSERT INTO public.t VALUES (1)");
  EXPECT_EQ(body_of(queue.take(1)[0])["new"], json({{"id", 1}}));
  wait_outbox_empty(bare_sql);
}

TEST_F(PublisherTest, SigtermAndSigintExitZero) {
  for (int sig : {SIGTERM, SIGINT}) {
    SCOPED_TRACE(sig == SIGTERM ? "SIGTERM" : "SIGINT");
    Process pub = publisher();
    pub.wait_for_log("leading with epoch");
    pub.signal(sig);
    EXPECT_EQ(pub.wait_exit(15s), 0);
  }
}

TEST_F(PublisherTest, SigtermExitsZeroWhileRetryingAnUnreachableBroker) {
  // Port 1 on the loopback refuses at once: the publisher keeps retrying, never exits.
  Process pub(publisher_binary(), {"--source", db_->conninfo(), "--amqp", "amqp://guest:guest@127.0.0.1:1/%2f",
                                   "--exchange", exchange(), "--log-level", "debug"});
  eventually([&] { return pub.count_in_log("reconnecting in") >= 2; }, kPatience,
             "two failed attempts to reach the broker");
  EXPECT_TRUE(pub.running());
  pub.signal(SIGTERM);
  EXPECT_EQ(pub.wait_exit(15s), 0);
}

TEST(PublisherCommandLine, HelpAndVersionExitZero) {
  CommandResult help = run_command({publisher_binary(), "--help"}, 15s);
  EXPECT_EQ(help.exit_code, 0) << help.err;
  for (const char* flag : {"--source", "--amqp", "--exchange", "--pack", "--metrics", "--log-level"}) {
    EXPECT_THAT(help.out, HasSubstr(flag));
  }
  CommandResult version = run_command({publisher_binary(), "--version"}, 15s);
  EXPECT_EQ(version.exit_code, 0) << version.err;
  EXPECT_THAT(version.out, HasSubstr(PGFANOUT_VERSION));
}

TEST(PublisherCommandLine, MalformedFlagsExitTwoWithOneLineOnStderr) {
  struct Case {
    std::vector<std::string> args;
    std::string names;
  };
  const std::vector<Case> cases{
      {{"--bogus"}, "--bogus"},
      {{}, "--source"},
      {{"--source", "dbname=x", "--amqp", "ftp://h/"}, "--amqp"},
      {{"--source", "dbname=x", "--amqp", "amqp://h:99999/"}, "--amqp"},
      {{"--source", "dbname=x", "--amqp", "amqp://h/?colour=blue"}, "--amqp"},
      {{"--source", "dbname=x", "--pack", "0"}, "--pack"},
      {{"--source", "dbname=x", "--pack", "many"}, "--pack"},
      {{"--source", "dbname=x", "--metrics", "nope"}, "--metrics"},
      {{"--source", "dbname=x", "--log-level", "loud"}, "--log-level"},
      {{"--source", "dbname=x", "--exchange", ""}, "--exchange"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv{publisher_binary()};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    std::string shown;
    for (const auto& a : c.args) shown += " '" + a + "'";
    SCOPED_TRACE("pgfanout-publisher" + shown);
    CommandResult r = run_command(argv, 15s);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr: " << r.err;
    EXPECT_TRUE(r.err.ends_with('\n')) << "stderr: " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.names));
    EXPECT_EQ(r.out, "");
  }
}

}  // namespace
}  // namespace pgfanout::test
