// A 3-node RabbitMQ cluster (scripts/cluster.sh) with quorum queues: under a write load,
// the node that leads the replica's queue is stopped and later started again. Publisher
// and listener, given all three nodes in --amqp, move to another node, and the replica
// converges to the primary with nothing lost: every row ends at the primary's version
// (a lost or reordered update of a row would leave it at another). Messages whose
// confirm was lost with the node are published again, so the replica may see a version
// twice on the way (at-least-once, as after any broker failure).
//
// Label `cluster`: needs PGFANOUT_TEST_CLUSTER_AMQP and PGFANOUT_TEST_CLUSTER_CTL from
// `scripts/cluster.sh start` besides the usual test servers.

#include <gtest/gtest.h>

#include <sstream>

#include "harness.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kTables =
    "CREATE TABLE public.counters (id int PRIMARY KEY, version bigint NOT NULL, note text);";

// rabbitmqctl of node n (1-3) of the test cluster.
CommandResult cluster_ctl(int n, std::vector<std::string> args,
                          std::chrono::milliseconds timeout = std::chrono::seconds(90)) {
  args.insert(args.begin(), std::to_string(n));
  args.insert(args.begin(), required_env("PGFANOUT_TEST_CLUSTER_CTL"));
  return run_command(args, timeout);
}

std::vector<std::string> words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// The number (1-3) of the node that leads quorum queue `queue`: its pid, as
// `list_queues name pid` shows it (<node.N.N.N>), asked of the first node that answers.
int leader_of(const std::string& queue) {
  std::vector<std::string> nodes = words(required_env("PGFANOUT_TEST_CLUSTER_NODES"));
  std::string seen;
  for (int asked = 1; asked <= 3; ++asked) {
    CommandResult r = cluster_ctl(asked, {"list_queues", "-q", "--no-table-headers", "name", "pid"});
    seen += r.out + r.err;
    if (r.exit_code != 0) continue;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);) {
      auto w = words(line);
      if (w.size() != 2 || w[0] != queue || !w[1].starts_with("<")) continue;
      std::string node = w[1].substr(1, w[1].find('.') - 1);
      for (std::size_t i = 0; i < nodes.size(); ++i) {
        if (nodes[i] == node) return static_cast<int>(i) + 1;
      }
    }
  }
  throw HarnessError("no leader found for queue " + queue + " in: " + seen);
}

// Bumps the version of one of 200 rows (inserting it the first time), the i-th.
std::string bump(std::int64_t i) {
  return "INSERT INTO public.counters VALUES (" + std::to_string((i * 37) % 200 + 1) +
         ", 1, 'new') ON CONFLICT (id) DO UPDATE SET version = counters.version + 1, note = 'v' || counters.version + 1";
}

TEST(Cluster, QuorumQueuesKeepEveryChangeInOrderWhenTheLeaderNodeStopsAndComesBack) {
  const std::string brokers = required_env("PGFANOUT_TEST_CLUSTER_AMQP");
  ScratchDatabase primary_db("pgft_cl_p");
  ScratchDatabase replica_db("pgft_cl_r");
  PgSession primary = primary_db.session();
  PgSession replica = replica_db.session();
  primary.exec(kTables);
  replica.exec(kTables);
  install_schema(primary_db.conninfo());
  primary.exec("SELECT pgfanout.track('public.counters')");

  const std::string exchange = unique_name("pgft_cl_x");
  const std::string queue = unique_name("pgft_cl_q");
  struct Cleanup {
    std::string queue, exchange;
    ~Cleanup() {
      for (const auto& args : std::vector<std::vector<std::string>>{
               {"delete_queue", queue}, {"delete_queue", queue + ".dead"}}) {
        try {
          cluster_ctl(1, args);
        } catch (...) {
        }
      }
    }
  } cleanup{queue, exchange};

  std::vector<std::string> common{"--amqp", brokers, "--exchange", exchange, "--log-level", "debug"};
  auto listener_args = common;
  listener_args.insert(listener_args.end(), {"--target", replica_db.conninfo(), "--queue", queue,
                                             "--queue-type", "quorum"});
  Process listener(listener_binary(), listener_args);
  listener.wait_for_log("consuming from");
  auto publisher_args = common;
  publisher_args.insert(publisher_args.end(), {"--source", primary_db.conninfo(), "--pack", "10"});
  Process publisher(publisher_binary(), publisher_args);

  BackgroundWriter writer(primary_db.conninfo(), bump, 2ms);
  eventually([&] { return writer.commits() >= 500; }, kPatience, "500 commits before the node stops");
  int leader = leader_of(queue);
  CommandResult stop = cluster_ctl(leader, {"stop_app"});
  ASSERT_EQ(stop.exit_code, 0) << stop.err;
  std::int64_t at_stop = writer.commits();
  eventually([&] { return writer.commits() >= at_stop + 1000; }, std::chrono::seconds(90),
             "1000 commits while the leader node is down");
  eventually_value([&] { return leader_of(queue); }, [&](int n) { return n != leader; },
                   std::chrono::seconds(60), "another node to lead the queue");
  CommandResult start = cluster_ctl(leader, {"start_app"});
  ASSERT_EQ(start.exit_code, 0) << start.err;
  std::int64_t at_start = writer.commits();
  eventually([&] { return writer.commits() >= at_start + 500; }, std::chrono::seconds(60),
             "500 commits after the node is back");
  writer.stop();

  wait_outbox_empty(primary, std::chrono::seconds(90));
  eventually_value([&] { return table_md5(replica, "public.counters", "id"); },
                   [&](const std::optional<std::string>& md5) {
                     return md5.has_value() && md5 == table_md5(primary, "public.counters", "id");
                   },
                   std::chrono::seconds(90), "the replica to equal the primary");
  CommandResult dead = cluster_ctl(leader, {"list_queues", "-q", "--no-table-headers", "name", "messages"});
  for (std::istringstream lines(dead.out); !lines.eof();) {
    std::string line;
    std::getline(lines, line);
    auto w = words(line);
    if (w.size() == 2 && w[0] == queue + ".dead") {
      EXPECT_EQ(w[1], "0") << "dead letters: " << line;
    }
  }
  EXPECT_TRUE(publisher.running());
  EXPECT_TRUE(listener.running());
}

}  // namespace
}  // namespace pgfanout::test
