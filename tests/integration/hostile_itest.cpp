// Issue 12: whatever a broker can carry is applied or dead-lettered with a reason; the
// listener never crashes, stalls or loops on it, and long or failing replica work does
// not make it loop either.

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>
#include <vector>

#include "change_json.hpp"
#include "harness.hpp"
#include "pgfanout/amqp_url.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

json change(std::int64_t id, const std::string& name, const std::string& op, json new_row,
            json old_key = nullptr) {
  return change_json(id, "public", name, op, std::move(new_row), std::move(old_key));
}


// Publishes `body` to `queue` with one header `key` of a type AmqpConnection never sends
// (through rabbitmq-c directly), and waits for the broker's confirm.
void publish_with_odd_header(const std::string& queue, const std::string& body, const char* key,
                             amqp_field_value_t value) {
  AmqpUrl url = AmqpUrl::parse(amqp_url());
  std::unique_ptr<amqp_connection_state_t_, decltype(&amqp_destroy_connection)> conn(
      amqp_new_connection(), &amqp_destroy_connection);
  amqp_socket_t* socket = amqp_tcp_socket_new(conn.get());
  ASSERT_EQ(amqp_socket_open(socket, url.host.c_str(), url.port), AMQP_STATUS_OK);
  ASSERT_EQ(amqp_login(conn.get(), url.vhost.c_str(), 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                       url.user.c_str(), url.password.c_str()).reply_type,
            AMQP_RESPONSE_NORMAL);
  amqp_channel_open(conn.get(), 1);
  ASSERT_EQ(amqp_get_rpc_reply(conn.get()).reply_type, AMQP_RESPONSE_NORMAL);
  amqp_confirm_select(conn.get(), 1);
  ASSERT_EQ(amqp_get_rpc_reply(conn.get()).reply_type, AMQP_RESPONSE_NORMAL);
  amqp_table_entry_t entry{amqp_cstring_bytes(key), value};
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
  props.delivery_mode = 2;
  props.message_id = amqp_cstring_bytes("odd-header");
  props.headers = amqp_table_t{1, &entry};
  ASSERT_EQ(amqp_basic_publish(conn.get(), 1, amqp_empty_bytes, amqp_cstring_bytes(queue.c_str()), 0, 0,
                               &props, amqp_bytes_t{body.size(), const_cast<char*>(body.data())}),
            AMQP_STATUS_OK);
  amqp_frame_t frame;
  timeval timeout{30, 0};
  ASSERT_EQ(amqp_simple_wait_frame_noblock(conn.get(), &frame, &timeout), AMQP_STATUS_OK);
  ASSERT_EQ(frame.payload.method.id, AMQP_BASIC_ACK_METHOD);
  amqp_channel_close(conn.get(), 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn.get(), AMQP_REPLY_SUCCESS);
}

struct ListenerQueues {
  explicit ListenerQueues(const std::string& exchange)
      : queue(exchange, {"#"}, QueueOptions::listener_compatible()),
        dead(exchange, {}, QueueOptions::dead_letter_compatible(), queue.name() + ".dead") {}
  TestQueue queue;
  TestQueue dead;
};

struct Poison {
  std::string message_id;
  std::string body;
  std::string reason;
  Headers headers = {};
};

TEST(HostileMessages, AreAppliedOrDeadLetteredNeverObeyed) {
  ScratchDatabase replica_db("pgft_hostile_r");
  PgSession replica = replica_db.session();
  replica.exec("CREATE TABLE public.items (id int PRIMARY KEY, name text, n numeric)");
  TestExchange exchange("pgft_hostile_x");
  ListenerQueues queues(exchange.name());

  auto insert = [](std::int64_t id, json row) { return change(id, "items", "INSERT", std::move(row)); };
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += "[";
  deep += std::string(100000, ']');
  std::string deep_body = insert(1, {{"id", 1}}).dump();
  deep_body.replace(deep_body.find("\"new\":{"), 7, "\"new\":{\"doc\":" + deep + ",");
  json unknown_columns = {{"id", 4}, {"name", "wide"}};
  for (int i = 0; i < 3000; ++i) unknown_columns["nosuch_" + std::to_string(i)] = i;
  json bad_ts = insert(5, {{"id", 5}, {"name", "odd ts"}});
  bad_ts["ts"] = "the day after tomorrow";
  const std::string huge_number = "1" + std::string(400, '0');
  std::string big_number = insert(6, {{"id", 6}, {"name", "big"}, {"n", 0}}).dump();
  big_number.replace(big_number.find("\"n\":0"), 5, "\"n\":" + huge_number);
  json no_op = insert(13, {{"id", 13}});
  no_op.erase("op");

  std::vector<Poison> poison{
      {"h-huge-count", insert(10, {{"id", 10}}).dump(), "bad-shape",
       Headers{{"x-pgfanout-count", std::int64_t{4'000'000'000'000'000'000}}}},
      {"h-negative-count", insert(11, {{"id", 11}}).dump(), "bad-shape",
       Headers{{"x-pgfanout-count", std::int64_t{-5}}}},
      {"h-text-count", json::array({insert(12, {{"id", 12}}), insert(13, {{"id", 13}})}).dump(),
       "bad-shape", Headers{{"x-pgfanout-count", std::string("2")}}},
      {"h-count-disagrees", json::array({insert(14, {{"id", 14}}), insert(15, {{"id", 15}})}).dump(),
       "bad-shape", Headers{{"x-pgfanout-count", std::int64_t{3}}}},
      {"h-empty", "", "not-json"},
      {"h-deep", deep_body, "not-json"},
      {"h-bad-utf8", "{\"id\": 1, \"schema\": \"public\", \"name\": \"it\xffms\", \"op\": \"TRUNCATE\"}",
       "not-json"},
      {"h-nul-in-name",
       R"({"id": 16, "schema": "public", "name": "items\u0000x", "op": "INSERT", "new": {"id": 16}})",
       "bad-shape"},
      {"h-long-name", change(17, std::string(300000, 'x'), "INSERT", {{"id", 17}}).dump(),
       "unknown-table"},
      {"h-unknown-op", change(18, "items", "UPSERT", {{"id", 18}}).dump(), "bad-shape"},
      {"h-missing-op", no_op.dump(), "bad-shape"},
      {"h-nul-in-value", insert(19, {{"id", 19}, {"name", std::string("a\0b", 3)}}).dump(),
       "apply-failed"},
  };
  std::vector<std::pair<std::string, std::string>> valid{
      {"v-first", insert(1, {{"id", 1}, {"name", "one"}}).dump()},
      {"v-unknown-columns", insert(4, unknown_columns).dump()},
      {"v-bad-ts", bad_ts.dump()},
      {"v-big-number", big_number},
      {"v-last", insert(20, {{"id", 20}, {"name", "last"}}).dump()},
  };
  for (std::size_t i = 0; i < poison.size() || i < valid.size(); ++i) {
    if (i < valid.size()) publish_message("", queues.queue.name(), valid[i].second, {}, valid[i].first);
    if (i < poison.size()) {
      const Poison& p = poison[i];
      publish_message("", queues.queue.name(), p.body, p.headers, p.message_id);
    }
  }
  Process listener = start_listener(replica_db.conninfo(), queues.queue.name(), exchange.name());

  eventually_value(
      [&] {
        return replica.value(
            "SELECT string_agg(format('%s:%s:%s', id, name, length(n::text)), ',' ORDER BY id) "
            "FROM public.items");
      },
      [](const auto& s) { return s == "1:one:,4:wide:,5:odd ts:,6:big:401,20:last:"; }, kPatience,
      "the valid messages to be applied");
  std::vector<Delivery> dead = queues.dead.take(poison.size());
  std::map<std::string, const Delivery*> by_id;
  for (const auto& d : dead) by_id[d.message_id] = &d;
  for (const Poison& p : poison) {
    SCOPED_TRACE(p.message_id);
    ASSERT_TRUE(by_id.count(p.message_id));
    EXPECT_EQ(header_text(*by_id[p.message_id], "x-pgfanout-reason"), p.reason);
    EXPECT_LE(header_text(*by_id[p.message_id], "x-pgfanout-error").size(), 2000u);
    EXPECT_EQ(by_id[p.message_id]->body, p.body);
  }
  EXPECT_EQ(queues.dead.remaining(), 0u);
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.items WHERE id BETWEEN 10 AND 19"), 0);
  EXPECT_TRUE(listener.running());
  EXPECT_EQ(listener.log().find("reconnecting"), std::string::npos);
  EXPECT_EQ(listener.stop(), 0);
}

// A count header of a type pgfanout never sends (here a double, as another producer may)
// reads as wrong, not as absent.
TEST(HostileMessages, ACountHeaderOfAnotherTypeIsABadShape) {
  ScratchDatabase replica_db("pgft_hostile_r");
  PgSession replica = replica_db.session();
  replica.exec("CREATE TABLE public.items (id int PRIMARY KEY)");
  TestExchange exchange("pgft_hostile_x");
  ListenerQueues queues(exchange.name());
  std::string pack = json::array({change(1, "items", "INSERT", {{"id", 1}}),
                                  change(2, "items", "INSERT", {{"id", 2}})}).dump();
  amqp_field_value_t two{};
  two.kind = AMQP_FIELD_KIND_F64;
  two.value.f64 = 2.0;
  publish_with_odd_header(queues.queue.name(), pack, "x-pgfanout-count", two);
  publish_message("", queues.queue.name(), change(3, "items", "INSERT", {{"id", 3}}).dump(), {}, "after");
  Process listener = start_listener(replica_db.conninfo(), queues.queue.name(), exchange.name());
  auto dead = queues.dead.take(1);
  EXPECT_EQ(dead[0].message_id, "odd-header");
  EXPECT_EQ(header_text(dead[0], "x-pgfanout-reason"), "bad-shape");
  eventually([&] { return replica.integer("SELECT count(*) FROM public.items WHERE id = 3") == 1; }, kPatience,
             "the message behind it to be applied");
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.items"), 1);
  EXPECT_EQ(listener.stop(), 0);
}

// A deferred check fails at COMMIT, after every statement succeeded: the failing change
// is found and dead-lettered, the others are applied, and nothing is delivered again.
TEST(HostileMessages, AChangeRefusedAtCommitIsDeadLettered) {
  ScratchDatabase replica_db("pgft_hostile_r");
  PgSession replica = replica_db.session();
  replica.exec(R"SQL(
CREATE TABLE public.items (id int PRIMARY KEY, name text);
CREATE FUNCTION public.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poison refused at commit'; END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER refuse_poison AFTER INSERT OR UPDATE ON public.items
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.refuse_poison();
ALTER TABLE public.items ENABLE ALWAYS TRIGGER refuse_poison;
)SQL");
  TestExchange exchange("pgft_hostile_x");
  ListenerQueues queues(exchange.name());
  for (int id = 1; id <= 6; ++id) {
    publish_message("", queues.queue.name(),
                    change(id, "items", "INSERT", {{"id", id}, {"name", id == 4 ? "poison" : "fine"}}).dump(),
                    {}, "c" + std::to_string(id));
  }
  Process listener = start_listener(replica_db.conninfo(), queues.queue.name(), exchange.name());
  auto dead = queues.dead.take(1);
  EXPECT_EQ(dead[0].message_id, "c4");
  EXPECT_EQ(header_text(dead[0], "x-pgfanout-reason"), "apply-failed");
  EXPECT_NE(header_text(dead[0], "x-pgfanout-error").find("poison refused at commit"), std::string::npos);
  eventually_value([&] { return replica.value("SELECT string_agg(id::text, ',' ORDER BY id) FROM public.items"); },
                   [](const auto& s) { return s == "1,2,3,5,6"; }, kPatience, "the other changes to be applied");
  EXPECT_EQ(listener.stop(), 0);
  EXPECT_EQ(queue_depth(queues.queue.name()), 0u);
  EXPECT_EQ(queues.dead.remaining(), 0u);
}

// A change of a table the replica lacks is dead-lettered; once the table is created, the
// next change of it is applied within seconds, not after the catalog's 60 s lifetime.
TEST(HostileMessages, ATableCreatedAfterItsChangesWereDeadLetteredIsFoundSoon) {
  ScratchDatabase replica_db("pgft_hostile_r");
  PgSession replica = replica_db.session();
  TestExchange exchange("pgft_hostile_x");
  ListenerQueues queues(exchange.name());
  Process listener = start_listener(replica_db.conninfo(), queues.queue.name(), exchange.name());
  listener.wait_for_log("consuming from");
  publish_message("", queues.queue.name(), change(1, "late", "INSERT", {{"id", 1}}).dump(), {}, "early");
  auto dead = queues.dead.take(1);
  EXPECT_EQ(header_text(dead[0], "x-pgfanout-reason"), "unknown-table");
  replica.exec("CREATE TABLE public.late (id int PRIMARY KEY)");
  publish_message("", queues.queue.name(), change(2, "late", "INSERT", {{"id", 2}}).dump(), {}, "later");
  eventually([&] { return replica.integer("SELECT count(*) FROM public.late") == 1; }, 15s,
             "the change of the new table to be applied");
  EXPECT_EQ(queues.dead.remaining(), 0u);
  EXPECT_EQ(listener.stop(), 0);
}

TEST(HostileBroker, AWrongPasswordIsReportedAsSuch) {
  AmqpUrl url = AmqpUrl::parse(amqp_url());
  url.password = "certainly-not-the-password";
  try {
    AmqpConnection connection(url, "pgfanout test wrong password");
    FAIL() << "the broker accepted a wrong password";
  } catch (const AmqpError& e) {
    EXPECT_NE(std::string(e.what()).find("ACCESS_REFUSED"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("certainly-not"), std::string::npos) << e.what();
  }
}

// A batch that takes longer than three heartbeat intervals to apply (a trigger on the
// replica sleeps) is applied once and acked, not delivered again after the broker gave
// the silent connection up.
TEST(HostileBroker, ABatchLongerThanThreeHeartbeatsIsAppliedOnce) {
  ScratchDatabase replica_db("pgft_hostile_r");
  PgSession replica = replica_db.session();
  replica.exec(R"SQL(
CREATE TABLE public.slow (id int PRIMARY KEY, v text);
CREATE TABLE public.marker (id int PRIMARY KEY);
CREATE TABLE public.firings (at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION public.slow_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.firings DEFAULT VALUES;
  PERFORM pg_sleep(4);
  RETURN NEW;
END $$;
CREATE TRIGGER slow_apply BEFORE INSERT ON public.slow FOR EACH ROW EXECUTE FUNCTION public.slow_apply();
ALTER TABLE public.slow ENABLE ALWAYS TRIGGER slow_apply;
)SQL");
  TestExchange exchange("pgft_hostile_x");
  ListenerQueues queues(exchange.name());
  publish_message("", queues.queue.name(), change(1, "slow", "INSERT", {{"id", 1}, {"v", "x"}}).dump(), {}, "slow");
  publish_message("", queues.queue.name(), change(2, "marker", "INSERT", {{"id", 1}}).dump(), {}, "marker");
  std::string url = amqp_url();
  url += url.find('?') == std::string::npos ? "?heartbeat=1" : "&heartbeat=1";
  Process listener(listener_binary(), {"--target", replica_db.conninfo(), "--queue", queues.queue.name(),
                                       "--amqp", url, "--exchange", exchange.name(), "--log-level", "debug"});
  eventually([&] { return replica.integer("SELECT count(*) FROM public.marker") == 1; }, 60s,
             "the batch behind the slow change to be applied");
  EXPECT_EQ(listener.stop(), 0);
  EXPECT_EQ(queue_depth(queues.queue.name()), 0u) << "the batch was not acked";
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.firings"), 1);
  EXPECT_EQ(queues.dead.remaining(), 0u);
}

}  // namespace
}  // namespace pgfanout::test

namespace pgfanout::test {
namespace {

// A backlog of big messages is applied in batches of a bounded size: without the byte
// budget, a batch took whatever arrived within its 50 ms, tens of megabytes of bodies
// (and their parsed copies) at once.
TEST(HostileMessages, ABacklogOfBigMessagesIsAppliedInBatchesOfBoundedBytes) {
  ScratchDatabase replica_db("pgft_hostile_r");
  PgSession replica = replica_db.session();
  replica.exec("CREATE TABLE public.big (id int PRIMARY KEY, payload text)");
  TestExchange exchange("pgft_hostile_x");
  ListenerQueues queues(exchange.name());
  const std::size_t kMessages = 40;
  const std::string payload(2 << 20, 'x');  // 2 MiB: 16 MiB of bodies is 8 of them
  for (std::size_t i = 0; i < kMessages; ++i) {
    publish_message("", queues.queue.name(),
                    change(static_cast<std::int64_t>(i + 1), "big", "INSERT",
                           {{"id", i + 1}, {"payload", payload}})
                        .dump(),
                    {}, "big-" + std::to_string(i));
  }
  Process listener = start_listener(replica_db.conninfo(), queues.queue.name(), exchange.name());
  eventually([&] { return replica.integer("SELECT count(*) FROM public.big") == static_cast<std::int64_t>(kMessages); },
             std::chrono::seconds(120), "the backlog to be applied");
  // "applied N changes from M messages in ..." at debug level, one line per batch.
  std::size_t largest = 0, batches = 0;
  std::string log = listener.log();
  for (std::size_t at = log.find("applied "); at != std::string::npos; at = log.find("applied ", at + 1)) {
    std::size_t from = log.find(" changes from ", at);
    if (from == std::string::npos || from > log.find('\n', at)) continue;
    largest = std::max<std::size_t>(largest, std::stoul(log.substr(from + 14)));
    ++batches;
  }
  EXPECT_GT(batches, 1u);
  // 16 MiB of bodies: the batch that reaches it takes one message more, at most.
  EXPECT_LE(largest, 9u) << "a batch held " << largest << " messages of 2 MiB";
  EXPECT_EQ(queues.dead.remaining(), 0u);
  EXPECT_EQ(listener.stop(), 0);
}

}  // namespace
}  // namespace pgfanout::test
