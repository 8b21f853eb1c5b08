// Every flag of INTERFACE.md can come from the environment instead (PGFANOUT_*): a
// publisher and a listener started with no flags at all, configured only by their
// environment, replicate, pack, filter tables, log at the level asked for and serve
// metrics. (PGFANOUT_SOURCE for the listener's --snapshot is not covered here.)

#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "harness.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;

TEST(Environment, BothProgramsRunConfiguredByTheEnvironmentAlone) {
  constexpr const char* kTables = R"SQL(
CREATE TABLE public.wanted (id int PRIMARY KEY, v text);
CREATE TABLE public.other (id int PRIMARY KEY, v text);
)SQL";
  ScratchDatabase primary_db("pgft_env_p");
  ScratchDatabase replica_db("pgft_env_r");
  PgSession primary = primary_db.session();
  PgSession replica = replica_db.session();
  primary.exec(kTables);
  replica.exec(kTables);
  install_schema(primary_db.conninfo());
  primary.exec("SELECT pgfanout.track('public.wanted'); SELECT pgfanout.track('public.other');");
  TestExchange exchange("pgft_env_x");
  TestQueue queue(exchange.name(), {}, QueueOptions::listener_compatible());
  TestQueue dead(exchange.name(), {}, QueueOptions::dead_letter_compatible(), queue.name() + ".dead");

  Process listener(listener_binary(), {},
                   {{"PGFANOUT_TARGET", replica_db.conninfo()},
                    {"PGFANOUT_QUEUE", queue.name()},
                    {"PGFANOUT_AMQP_URL", amqp_url()},
                    {"PGFANOUT_EXCHANGE", exchange.name()},
                    {"PGFANOUT_TABLES", "public.wanted"},
                    {"PGFANOUT_LOG_LEVEL", "debug"}});
  listener.wait_for_log("consuming from");
  const int metrics_port = free_port();
  Process publisher(publisher_binary(), {},
                    {{"PGFANOUT_SOURCE", primary_db.conninfo()},
                     {"PGFANOUT_METRICS", "127.0.0.1:" + std::to_string(metrics_port)},
                     {"PGFANOUT_AMQP_URL", amqp_url()},
                     {"PGFANOUT_EXCHANGE", exchange.name()},
                     {"PGFANOUT_PACK", "5"},
                     {"PGFANOUT_LOG_LEVEL", "debug"}});

  primary.exec(
      "INSERT INTO public.wanted SELECT g, 'v' || g FROM generate_series(1, 10) g;"
      "INSERT INTO public.other VALUES (1, 'no queue is bound for this table');");
  eventually([&] { return replica.integer("SELECT count(*) FROM public.wanted") == 10; }, kPatience,
             "the rows of public.wanted on the replica");
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.other"), 0);
  // --tables from the environment bound only public.wanted, so the broker returned the
  // change of public.other and the publisher keeps it in the outbox.
  eventually([&] { return primary.integer("SELECT count(*) FROM pgfanout.changes") == 1; }, kPatience,
             "only the change of public.other left in the outbox");

  // --pack 5 from the environment: the 10 changes of one statement travel as 2 messages.
  std::string log = listener.log();
  std::regex applied(R"(applied (\d+) changes from (\d+) messages)");
  long changes = 0, messages = 0;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), applied); it != std::sregex_iterator(); ++it) {
    changes += std::stol((*it)[1]);
    messages += std::stol((*it)[2]);
  }
  EXPECT_EQ(changes, 10) << log;
  EXPECT_EQ(messages, 2) << log;
  EXPECT_NE(publisher.log().find(" debug: "), std::string::npos) << "PGFANOUT_LOG_LEVEL=debug was not applied";
  // PGFANOUT_METRICS: the publisher serves its metrics there.
  EXPECT_NE(http_get(metrics_port, "/metrics").find("pgfanout_publisher_changes_published_total{table=\"public.wanted\"} 10"),
            std::string::npos);
  EXPECT_EQ(dead.remaining(), 0u);
  EXPECT_EQ(publisher.stop(), 0);
  EXPECT_EQ(listener.stop(), 0);
}

}  // namespace
}  // namespace pgfanout::test
