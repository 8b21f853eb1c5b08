// Rows bigger than a broker takes in one message (issue 12): RabbitMQ 3.13 and 4.x refuse
// messages over 16 MiB by default (max_message_size). These tests set the test broker's
// limit to 16 MiB (3.10's default is 128 MiB) and restore it afterwards; the broker reads
// it when a channel opens, so every connection a test makes sees it.

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <variant>
#include <vector>

#include "change_json.hpp"
#include "harness.hpp"
#include "pgfanout/message_chunks.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;

constexpr std::chrono::milliseconds kBigPatience{120000};

std::string broker_eval(const std::string& expression) {
  CommandResult r = rabbitmqctl({"eval", expression});
  if (r.exit_code != 0) throw HarnessError("rabbitmqctl eval " + expression + ": " + r.err + r.out);
  return r.out;
}

// Tables whose rows are big; `small` takes the changes that must not wait behind them.
constexpr const char* kTables = R"SQL(
CREATE TABLE public.big (id int PRIMARY KEY, payload text);
CREATE TABLE public.small (id int PRIMARY KEY, v int);
)SQL";

// `bytes` of hex digits (md5s), which PostgreSQL's compression cannot shrink, so the row is
// as big in the outbox as in the message.
std::string random_text_sql(std::size_t bytes) {
  return "(SELECT left(string_agg(md5(i::text || random()::text), ''), " + std::to_string(bytes) +
         ") FROM generate_series(1, " + std::to_string(bytes / 32 + 1) + ") AS i)";
}

std::int64_t header_int(const Delivery& d, std::string_view key) {
  for (const auto& [k, v] : d.headers) {
    if (k == key) {
      if (const auto* n = std::get_if<std::int64_t>(&v)) return *n;
    }
  }
  return -1;
}


class SixteenMiBBroker : public ::testing::Test {
 protected:
  void SetUp() override {
    previous_ = broker_eval("application:get_env(rabbit, max_message_size).");
    broker_eval("application:set_env(rabbit, max_message_size, 16777216).");
  }
  void TearDown() override {
    // {ok,134217728} as printed by get_env, or undefined.
    auto open = previous_.find("{ok,");
    if (open != std::string::npos) {
      auto close = previous_.find('}', open);
      broker_eval("application:set_env(rabbit, max_message_size, " +
                  previous_.substr(open + 4, close - open - 4) + ").");
    } else {
      broker_eval("application:unset_env(rabbit, max_message_size).");
    }
  }

 private:
  std::string previous_;
};

// The premise of the tests below: the limit holds on this broker for new channels.
TEST_F(SixteenMiBBroker, TheBrokerRefusesAMessageOver16MiB) {
  TestExchange exchange("pgft_big_x");
  TestQueue queue(exchange.name(), {"#"});
  publish_message(exchange.name(), "public.t", std::string((16u << 20) - 4096, 'a'));
  EXPECT_THROW(publish_message(exchange.name(), "public.t", std::string((16u << 20) + 1024, 'b')),
               std::exception);
  auto got = queue.next(10s);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->body.size(), (16u << 20) - 4096);
}

// Fails before chunking: the broker closed the publisher's channel at the 20 MB row, the
// publisher sent it again forever and nothing behind it arrived.
TEST_F(SixteenMiBBroker, ATwentyMegabyteRowReplicatesAndLaterChangesOfOtherTablesFollow) {
  SmallChain chain(kTables, {"public.big", "public.small"});
  chain.primary.exec("INSERT INTO public.small SELECT i, i FROM generate_series(1, 50) AS i");
  chain.primary.exec("INSERT INTO public.big VALUES (1, " + random_text_sql(20'000'000) + ")");
  chain.primary.exec("INSERT INTO public.small SELECT i, i FROM generate_series(51, 100) AS i");
  chain.primary.exec("UPDATE public.small SET v = v * 2 WHERE id % 3 = 0");
  // Three 6 MB rows in one statement: one pack of three (--pack 10) would be 18 MB.
  chain.primary.exec("INSERT INTO public.big SELECT i, " + random_text_sql(6'000'000) +
                     " FROM generate_series(2, 4) AS i");
  chain.primary.exec("INSERT INTO public.small SELECT i, -i FROM generate_series(101, 150) AS i");
  EXPECT_EQ(chain.primary.integer("SELECT count(*) FROM pgfanout.changes "
                                  "WHERE pg_column_compression(new_row) IS NOT NULL"),
            0)
      << "the rows must be as big in the outbox as in the messages";
  test::wait_applied(chain.primary, chain.replica, chain.dead.name(), kBigPatience);

  EXPECT_EQ(queue_depth(chain.dead.name()), 0u);
  EXPECT_EQ(table_md5(chain.replica, "public.small", "id"), table_md5(chain.primary, "public.small", "id"));
  EXPECT_EQ(chain.replica.value("SELECT string_agg(id || ':' || md5(payload), ',' ORDER BY id) FROM public.big"),
            chain.primary.value("SELECT string_agg(id || ':' || md5(payload), ',' ORDER BY id) FROM public.big"));
  EXPECT_EQ(chain.replica.integer("SELECT length(payload) FROM public.big WHERE id = 1"), 20'000'000);
  EXPECT_GE(chain.publisher->count_in_log("sent in 2 chunks"), 1u) << "the 20 MB row travels in chunks";
}

// A row past jsonb's 256 MB (PostgreSQL takes text values up to 1 GB): the capture keeps
// it as json (new_json), it travels in chunks, and the replica reads it with
// json_to_recordset, which has no such limit. Compressible text keeps the outbox small.
TEST(BigRows, ARowPastJsonbsLimitReplicates) {
  SmallChain chain(kTables, {"public.big", "public.small"});
  chain.primary.exec("INSERT INTO public.big VALUES (1, repeat('x', 270000000))");
  chain.primary.exec("INSERT INTO public.small VALUES (1, 1)");
  EXPECT_EQ(chain.primary.integer("SELECT count(*) FROM pgfanout.changes WHERE new_row IS NULL AND new_json IS NOT NULL"),
            logical_capture() ? 0 : 1);
  test::wait_applied(chain.primary, chain.replica, chain.dead.name(), kBigPatience);
  EXPECT_EQ(queue_depth(chain.dead.name()), 0u);
  EXPECT_EQ(chain.replica.value("SELECT length(payload)::text || ' ' || md5(payload) FROM public.big"),
            chain.primary.value("SELECT length(payload)::text || ' ' || md5(payload) FROM public.big"));
  EXPECT_EQ(chain.replica.integer("SELECT count(*) FROM public.small"), 1);
}

// --max-message-bytes 1 MiB: a copy of every message the publisher sends is taken from a
// second queue; none is over the limit, packs are cut, big rows come in several chunks,
// and the replica gets every row.
TEST(BigRows, NoMessageIsOverMaxMessageBytes) {
  SmallChain chain(kTables, {"public.big", "public.small"});
  chain.publisher.reset();
  TestQueue copies(chain.exchange.name(), {"#"});
  chain.publisher.emplace(start_publisher(chain.primary_db.conninfo(), chain.exchange.name(),
                                          {"--pack", "10", "--max-message-bytes", "1048576"}));
  // 20 rows of 300 kB (a pack of 10 would be 3 MB), 2 of 2.5 MB (3 chunks each), and
  // small rows around them.
  chain.primary.exec("INSERT INTO public.small SELECT i, i FROM generate_series(1, 30) AS i");
  chain.primary.exec("INSERT INTO public.big SELECT i, " + random_text_sql(300'000) +
                     " FROM generate_series(1, 20) AS i");
  chain.primary.exec("INSERT INTO public.big SELECT i, " + random_text_sql(2'500'000) +
                     " FROM generate_series(21, 22) AS i");
  chain.primary.exec("INSERT INTO public.small SELECT i, i FROM generate_series(31, 60) AS i");
  test::wait_applied(chain.primary, chain.replica, chain.dead.name(), kBigPatience);
  EXPECT_EQ(queue_depth(chain.dead.name()), 0u);
  EXPECT_EQ(table_md5(chain.replica, "public.small", "id"), table_md5(chain.primary, "public.small", "id"));
  EXPECT_EQ(chain.replica.value("SELECT string_agg(id || ':' || md5(payload), ',' ORDER BY id) FROM public.big"),
            chain.primary.value("SELECT string_agg(id || ':' || md5(payload), ',' ORDER BY id) FROM public.big"));

  std::size_t messages = 0, chunks = 0, packs = 0, big_changes = 0;
  while (auto d = copies.next(2s)) {
    ++messages;
    EXPECT_LE(d->body.size(), (1u << 20) - kMessageMargin);
    if (header_int(*d, kChunkCountHeader) > 0) {
      ++chunks;
      EXPECT_EQ(header_int(*d, kChunkCountHeader), 3);
      EXPECT_EQ(d->content_type, kChunkContentType);
    } else if (d->routing_key == "public.big") {
      ++big_changes;
      std::int64_t count = header_int(*d, "x-pgfanout-count");
      if (count > 1) ++packs;
      EXPECT_LE(count, 3);  // 300 kB rows: three fit under 1 MiB
    }
  }
  EXPECT_EQ(chunks, 6u);
  EXPECT_GE(packs, 1u);
  EXPECT_GE(big_changes, 7u);  // 20 rows, at most 3 per message
  EXPECT_GT(messages, chunks + big_changes);  // and the small rows' packs
}

// The publisher's read holds about 16 MB of rows at most. PostgreSQL compresses a row of
// repeated text to a hundredth of its size; before rows were measured as they are read,
// such rows counted by their compressed size and one read took all 30 (90 MB) at once.
TEST(BigRows, AReadOfCompressibleRowsHoldsAbout16MB) {
  SmallChain chain(kTables, {"public.big", "public.small"});
  chain.primary.exec("INSERT INTO public.big SELECT i, repeat('x', 3000000) || i "
                     "FROM generate_series(1, 30) AS i");
  if (!logical_capture()) {
    EXPECT_EQ(chain.primary.integer("SELECT count(*) FROM pgfanout.changes "
                                    "WHERE pg_column_compression(new_row) IS NOT NULL"),
              30);
  }
  test::wait_applied(chain.primary, chain.replica, chain.dead.name(), kBigPatience);
  EXPECT_EQ(queue_depth(chain.dead.name()), 0u);
  EXPECT_EQ(chain.replica.value("SELECT string_agg(id || ':' || md5(payload), ',' ORDER BY id) FROM public.big"),
            chain.primary.value("SELECT string_agg(id || ':' || md5(payload), ',' ORDER BY id) FROM public.big"));
  // "debug: shipped N changes in M messages" per batch: 3 MB rows, so 6 at most (the
  // last one read may start before 16 MB and end after).
  const std::string line = "debug: shipped ";
  std::string log = chain.publisher->log();
  std::size_t batches = 0;
  for (std::size_t at = log.find(line); at != std::string::npos; at = log.find(line, at + 1)) {
    ++batches;
    EXPECT_LE(std::stoul(log.substr(at + line.size())), 6u) << log.substr(at, 60);
  }
  EXPECT_GE(batches, 5u);
}

// A chunked change the replica refuses goes to QUEUE.dead as its chunks; replayed into the
// queue with the README's shovel, it is put together and applied.
TEST_F(SixteenMiBBroker, ARefusedBigRowIsDeadLetteredAsChunksAndAReplayAppliesIt) {
  SmallChain chain(kTables, {"public.big", "public.small"});
  chain.replica.exec("ALTER TABLE public.big ADD CONSTRAINT short CHECK (length(payload) < 1000)");
  chain.primary.exec("INSERT INTO public.big VALUES (1, " + random_text_sql(20'000'000) + ")");
  chain.primary.exec("INSERT INTO public.small VALUES (1, 1)");

  eventually([&] { return queue_depth(chain.dead.name()) == 2; }, kBigPatience,
             "the refused row's two chunks in the dead letters");
  wait_outbox_empty(chain.primary, kBigPatience);
  eventually([&] { return chain.replica.integer("SELECT count(*) FROM public.small") == 1; }, kPatience,
             "the change behind the refused row to be applied");
  // Looked at without taking them off the queue (a reader's unacked messages go back).
  std::vector<Delivery> dead;
  {
    AmqpConnection peek(AmqpUrl::parse(amqp_url()), "pgft-peek");
    peek.set_prefetch(2);
    peek.consume(chain.dead.name());
    while (dead.size() < 2) {
      auto d = peek.next_delivery(kPatience);
      if (!d) throw HarnessError("the dead letters were not delivered to the test");
      dead.push_back(std::move(*d));
    }
  }
  ASSERT_EQ(queue_depth(chain.dead.name()), 2u);
  std::size_t total = 0;
  for (std::size_t k = 0; k < dead.size(); ++k) {
    EXPECT_EQ(header_int(dead[k], kChunkIndexHeader), static_cast<std::int64_t>(k));
    EXPECT_EQ(header_int(dead[k], kChunkCountHeader), 2);
    EXPECT_EQ(header_text(dead[k], "x-pgfanout-reason"), "apply-failed");
    EXPECT_EQ(dead[k].message_id, dead[0].message_id);
    EXPECT_LE(dead[k].body.size(), (16u << 20) - kMessageMargin);
    total += dead[k].body.size();
  }
  EXPECT_EQ(header_int(dead[0], kChunkedBytesHeader), static_cast<std::int64_t>(total));

  // The replay of the README: a shovel moves the dead letters into the queue, in order.
  chain.replica.exec("ALTER TABLE public.big DROP CONSTRAINT short");
  std::string shovel = "replay-" + chain.queue.name();
  auto set = rabbitmqctl({"set_parameter", "shovel", shovel,
                          R"({"src-uri": "amqp://", "src-queue": ")" + chain.dead.name() +
                              R"(", "dest-uri": "amqp://", "dest-queue": ")" + chain.queue.name() +
                              R"(", "src-delete-after": "queue-length"})"});
  ASSERT_EQ(set.exit_code, 0) << set.out << set.err;
  eventually(
      [&] {
        return chain.replica.value("SELECT md5(payload) FROM public.big WHERE id = 1") ==
               chain.primary.value("SELECT md5(payload) FROM public.big WHERE id = 1");
      },
      kBigPatience, "the replayed row on the replica");
  rabbitmqctl({"clear_parameter", "shovel", shovel});  // gone already once the queue was moved
  EXPECT_EQ(queue_depth(chain.dead.name()), 0u);
}

// Chunks a broker can deliver that do not make a change: each is dead-lettered with the
// reason bad-chunk, and a chunked change and plain changes around them are applied.
TEST(HostileChunks, AreDeadLetteredAndTheChangesAroundThemApply) {
  ScratchDatabase replica_db("pgft_chunks_r");
  PgSession replica = replica_db.session();
  replica.exec("CREATE TABLE public.items (id int PRIMARY KEY, name text)");
  TestExchange exchange("pgft_chunks_x");
  TestQueue queue(exchange.name(), {"#"}, QueueOptions::listener_compatible());
  TestQueue dead(exchange.name(), {}, QueueOptions::dead_letter_compatible(), queue.name() + ".dead");

  auto body = [](std::int64_t id, const std::string& name) {
    return change_json(id, "public", "items", "INSERT", {{"id", id}, {"name", name}}, nullptr).dump();
  };
  // Sends the chunks `which` of `whole` cut in four.
  auto send_chunks = [&](const std::string& id, const std::string& whole,
                         const std::vector<std::size_t>& which, Headers extra = {}) {
    auto parts = split_body(whole, (whole.size() + 3) / 4);
    for (std::size_t k : which) {
      Headers h = chunk_headers(static_cast<std::int64_t>(k), static_cast<std::int64_t>(parts.size()), whole.size());
      h.insert(h.end(), extra.begin(), extra.end());
      publish_message(exchange.name(), "public.items", std::string(parts[k]), h, id);
    }
  };
  const std::string one = body(1, std::string(300, 'a'));
  const std::string two = body(2, std::string(300, 'b'));
  const std::string three = body(3, std::string(300, 'c'));

  std::size_t refused = 0;
  send_chunks("1", one, {0, 1, 2, 3});  // a whole change: applied
  send_chunks("9", two, {0, 1});        // cut short by the next message
  refused += 2;
  publish_message(exchange.name(), "public.items", body(4, "plain"), {}, "4");
  send_chunks("9", two, {2, 3});        // the rest, without its beginning
  refused += 2;
  send_chunks("8", two, {0, 1, 1, 2, 3});  // a duplicated chunk
  refused += 5;
  send_chunks("7", two, {0});
  publish_message(exchange.name(), "public.items", "x", chunk_headers(0, 1 << 30, 1), "6");  // too many
  refused += 2;
  publish_message(exchange.name(), "public.items", "x", chunk_headers(0, 2, std::int64_t{1} << 40), "5");
  refused += 1;
  publish_message(exchange.name(), "public.items", "x",
                  Headers{{"x-pgfanout-chunk", std::string("zero")}, {"x-pgfanout-chunks", std::int64_t{2}},
                          {"x-pgfanout-chunked-bytes", std::int64_t{2}}},
                  "5");
  refused += 1;
  send_chunks("3", three, {0, 1, 2, 3});  // a whole change again: applied

  Process listener = start_listener(replica_db.conninfo(), queue.name(), exchange.name());
  eventually([&] { return replica.integer("SELECT count(*) FROM public.items") == 3; }, kPatience,
             "the three good changes on the replica");
  std::vector<Delivery> got = dead.take(refused);
  EXPECT_EQ(dead.remaining(), 0u);
  for (const Delivery& d : got) EXPECT_EQ(header_text(d, "x-pgfanout-reason"), "bad-chunk") << d.message_id;
  EXPECT_EQ(replica.value("SELECT string_agg(id || ':' || length(name), ',' ORDER BY id) FROM public.items"),
            "1:300,3:300,4:5");
  EXPECT_TRUE(listener.running());
}

TEST(MaxMessageBytesFlag, NonsenseValuesExitTwoWithOneLineNamingTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, EnvVars>> cases{
      {{"--max-message-bytes", "0"}, {}},
      {{"--max-message-bytes", "-1"}, {}},
      {{"--max-message-bytes", "4096"}, {}},           // no room for a body beside the margin
      {{"--max-message-bytes", "1048575"}, {}},        // under 1 MiB
      {{"--max-message-bytes", "536870913"}, {}},      // over RabbitMQ's own ceiling
      {{"--max-message-bytes", "99999999999999999999"}, {}},
      {{"--max-message-bytes", "16MiB"}, {}},
      {{"--max-message-bytes", ""}, {}},
      {{}, {{"PGFANOUT_MAX_MESSAGE_BYTES", "lots"}}},
      {{}, {{"PGFANOUT_MAX_MESSAGE_BYTES", "100"}}},
  };
  for (const auto& [args, env] : cases) {
    std::vector<std::string> argv{publisher_binary(), "--source", "dbname=x"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string shown;
    for (const auto& a : args) shown += " '" + a + "'";
    for (const auto& [k, v] : env) shown += " " + k + "=" + v;
    SCOPED_TRACE("pgfanout-publisher" + shown);
    CommandResult r = run_command(argv, 15s, env);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr: " << r.err;
    EXPECT_NE(r.err.find("--max-message-bytes"), std::string::npos) << "stderr: " << r.err;
  }
}

}  // namespace
}  // namespace pgfanout::test
