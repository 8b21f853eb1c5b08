// --queue-type: the listener declares its queue and dead-letter queue as quorum queues on
// request (single active consumer kept), changes flow through them, and a queue that
// already exists with the other type is a configuration error with the way out, not a
// reconnect loop.

#include <gtest/gtest.h>

#include "harness.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;

// "name<TAB>type<TAB>arguments" of one queue, from the broker itself.
std::string queue_line(const std::string& name) {
  CommandResult r = rabbitmqctl({"list_queues", "-q", "--no-table-headers", "name", "type", "arguments"});
  if (r.exit_code != 0) throw HarnessError("rabbitmqctl list_queues failed: " + r.err);
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + "\t", 0) == 0) return line;
  }
  return {};
}

// Deletes the listener's queues, whatever happens in the test.
struct ListenerQueues {
  std::string name;
  ~ListenerQueues() {
    try {
      delete_queue(name);
      delete_queue(name + ".dead");
    } catch (...) {
    }
  }
};

TEST(QueueType, QuorumQueuesCarryChangesWithASingleActiveConsumer) {
  const char* tables = "CREATE TABLE public.items (id int PRIMARY KEY, label text);";
  ScratchDatabase primary_db("pgft_qt_p");
  ScratchDatabase replica_db("pgft_qt_r");
  PgSession primary = primary_db.session();
  PgSession replica = replica_db.session();
  primary.exec(tables);
  replica.exec(tables);
  install_schema(primary_db.conninfo());
  primary.exec("SELECT pgfanout.track('public.items')");
  TestExchange exchange("pgft_qt_x");
  ListenerQueues queues{unique_name("pgft_qt_q")};

  Process listener = start_listener(replica_db.conninfo(), queues.name, exchange.name(),
                                    {"--queue-type", "quorum"});
  listener.wait_for_log("consuming from");
  std::string line = queue_line(queues.name);
  EXPECT_NE(line.find("\tquorum\t"), std::string::npos) << line;
  EXPECT_NE(line.find("x-single-active-consumer"), std::string::npos) << line;
  std::string dead = queue_line(queues.name + ".dead");
  EXPECT_NE(dead.find("\tquorum\t"), std::string::npos) << dead;

  Process publisher = start_publisher(primary_db.conninfo(), exchange.name());
  primary.exec("INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 50) g;"
               "UPDATE public.items SET label = 'changed' WHERE id <= 10;"
               "DELETE FROM public.items WHERE id > 40");
  wait_applied(primary, replica, queues.name + ".dead");
  EXPECT_EQ(table_md5(replica, "public.items", "id"), table_md5(primary, "public.items", "id"));
  EXPECT_EQ(replica.integer("SELECT count(*) FROM public.items"), 40);
  EXPECT_EQ(queue_depth(queues.name + ".dead"), 0u);

  // Started again with the same flags, it declares the same queue without complaint.
  ASSERT_EQ(listener.stop(), 0);
  Process again = start_listener(replica_db.conninfo(), queues.name, exchange.name(),
                                 {"--queue-type", "quorum"});
  again.wait_for_log("consuming from");
}

TEST(QueueType, AClassicQueueIsNotRedeclaredAsQuorumButNamedWithTheWayToMigrate) {
  ScratchDatabase replica_db("pgft_qt_r");
  TestExchange exchange("pgft_qt_x");
  ListenerQueues queues{unique_name("pgft_qt_q")};
  {
    // A listener of an earlier version (or without --queue-type) made a classic queue.
    Process classic = start_listener(replica_db.conninfo(), queues.name, exchange.name());
    classic.wait_for_log("consuming from");
    ASSERT_EQ(classic.stop(), 0);
  }
  ASSERT_NE(queue_line(queues.name).find("\tclassic\t"), std::string::npos);

  Process quorum = start_listener(replica_db.conninfo(), queues.name, exchange.name(),
                                  {"--queue-type", "quorum"});
  std::optional<int> code = quorum.wait_exit(60s);
  ASSERT_TRUE(code.has_value()) << "the listener kept retrying a declaration the broker refuses";
  EXPECT_EQ(*code, 2);
  std::string log = quorum.log();
  EXPECT_NE(log.find("queue '" + queues.name + "' exists with other arguments"), std::string::npos) << log;
  EXPECT_NE(log.find("Queue types"), std::string::npos) << log;
  EXPECT_NE(queue_line(queues.name).find("\tclassic\t"), std::string::npos)
      << "the existing queue must be left as it was";
}

TEST(QueueType, AnUnknownQueueTypeIsAUsageError) {
  CommandResult r = run_command({listener_binary(), "--target", "dbname=x", "--queue", "q",
                                 "--queue-type", "mirrored"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("queue-type"), std::string::npos) << r.err;
  r = run_command({listener_binary(), "--target", "dbname=x", "--queue", "q"}, kPatience,
                  {{"PGFANOUT_QUEUE_TYPE", "stream"}});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
}

}  // namespace
}  // namespace pgfanout::test
