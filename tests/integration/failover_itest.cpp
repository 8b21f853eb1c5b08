// The primary fails under load and its synchronous streaming standby (pg_basebackup -R)
// is promoted: the publisher, given both hosts in one multi-host conninfo with
// target_session_attrs=read-write, follows to the new primary by itself, with a larger
// fencing epoch, and the replica converges to it. Trigger capture only: the outbox travels in the WAL, so the standby has
// every committed change that was not yet shipped (a PostgreSQL 15 replication slot would
// not survive this).

#include <gtest/gtest.h>

#include "harness.hpp"
#include "pg_cluster.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kTables =
    "CREATE TABLE public.accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);";

// A transaction of an upsert, an update and a delete of the 300 rows, the i-th.
std::string write_transaction(std::int64_t i) {
  return "BEGIN;"
         "INSERT INTO public.accounts VALUES (" + std::to_string(i % 300 + 1) + ", " + std::to_string(i) +
         ", 'w') ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, note = 'u';"
         "UPDATE public.accounts SET balance = balance + 1 WHERE id = " + std::to_string((i * 7) % 300 + 1) + ";"
         "DELETE FROM public.accounts WHERE id = " + std::to_string((i * 13) % 300 + 1) + " AND balance % 5 = 0;"
         "COMMIT";
}

TEST(Failover, ThePublisherFollowsAPromotedSynchronousStandbyAndTheReplicaConverges) {
  PgCluster primary;
  {
    PgSession admin(primary.conninfo());
    admin.exec("CREATE DATABASE app");
  }
  PgSession app(primary.conninfo("app"));
  app.exec(kTables);
  install_schema(primary.conninfo("app"));
  app.exec("SELECT pgfanout.track('public.accounts')");
  PgCluster standby(primary, "standby1");
  // Synchronous: a commit the writer saw is on the standby too.
  primary.set("synchronous_standby_names", "'standby1'");
  eventually([&] { return app.value("SELECT sync_state FROM pg_stat_replication") == "sync"; }, kPatience,
             "the standby to replicate synchronously");

  ScratchDatabase replica_db("pgft_fo_r");
  PgSession replica = replica_db.session();
  replica.exec(kTables);
  TestExchange exchange("pgft_fo_x");
  TestQueue queue{exchange.name(), {}, QueueOptions::listener_compatible()};
  TestQueue dead{exchange.name(), {}, QueueOptions::dead_letter_compatible(), queue.name() + ".dead"};
  Process listener = start_listener(replica_db.conninfo(), queue.name(), exchange.name());
  listener.wait_for_log("consuming from");

  std::string both = "host=127.0.0.1,127.0.0.1 port=" + std::to_string(primary.port()) + "," +
                     std::to_string(standby.port()) +
                     " user=postgres dbname=app target_session_attrs=read-write connect_timeout=5";
  Process publisher = start_publisher(both, exchange.name(), {"--pack", "20"});
  // A transaction in flight at the crash is simply tried again later: whether it
  // committed is for the new primary to say.
  BackgroundWriter writer(both, write_transaction);
  eventually([&] { return writer.commits() >= 300; }, kPatience, "300 commits on the primary");

  // The epoch of the publisher's lease on the old primary; the lease table is replicated.
  std::int64_t epoch_before = app.integer("SELECT epoch FROM pgfanout.publisher_lease");
  primary.stop("immediate");
  standby.promote();
  std::int64_t at_failover = writer.commits();
  eventually([&] { return writer.commits() >= at_failover + 300; }, std::chrono::seconds(60),
             "300 commits on the promoted standby");
  writer.stop();

  PgSession new_primary(standby.conninfo("app"));
  wait_outbox_empty(new_primary, std::chrono::seconds(60));
  eventually_value([&] { return table_md5(replica, "public.accounts", "id"); },
                   [&](const std::optional<std::string>& md5) {
                     return md5 == table_md5(new_primary, "public.accounts", "id");
                   },
                   std::chrono::seconds(60), "the replica to equal the promoted standby");
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.accounts"),
            new_primary.integer("SELECT count(*) FROM public.accounts"));
  EXPECT_EQ(queue_depth(queue.name() + ".dead"), 0u);
  EXPECT_TRUE(publisher.running()) << "the publisher must ride over the failover, not exit";
  // Leadership on the new primary is a new lease with a larger epoch, and the listener
  // has applied messages of it (so a message of the old leader would now be stale).
  std::int64_t epoch_after = new_primary.integer("SELECT epoch FROM pgfanout.publisher_lease");
  EXPECT_GT(epoch_after, epoch_before);
  EXPECT_EQ(replica.integer("SELECT max(epoch) FROM pgfanout.listener_epoch"), epoch_after);
}

}  // namespace
}  // namespace pgfanout::test
