// The harness itself: other integration tests trust its waits, cleanups and failures, so
// its less obvious promises are checked here.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include "harness.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(Harness, ProcessReportsExitCodesSignalsAndLogs) {
  Process ok("/bin/sh", {"-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(ok.wait_exit(10s), 3);
  EXPECT_EQ(ok.wait_exit(0ms), 3) << "the code is kept once reaped";
  EXPECT_THAT(ok.log(), HasSubstr("out\n"));
  EXPECT_THAT(ok.log(), HasSubstr("err\n"));

  Process sleeper("/bin/sleep", {"60"});
  EXPECT_TRUE(sleeper.running());
  EXPECT_EQ(sleeper.wait_exit(50ms), std::nullopt);
  sleeper.signal(SIGTERM);
  EXPECT_EQ(sleeper.wait_exit(10s), 128 + SIGTERM);
  EXPECT_FALSE(sleeper.running());

  Process killed("/bin/sleep", {"60"});
  EXPECT_EQ(killed.kill(), 128 + SIGKILL);

  Process missing("/nonexistent/binary", {});
  EXPECT_EQ(missing.wait_exit(10s), 127);
}

TEST(Harness, ProcessWaitForLogFailsWhenTheChildExitsFirst) {
  Process quiet("/bin/sh", {"-c", "echo hello"});
  quiet.wait_for_log("hello", 10s);
  try {
    quiet.wait_for_log("never printed", 10s);
    FAIL() << "no exception";
  } catch (const HarnessError& e) {
    EXPECT_THAT(e.what(), HasSubstr("exited"));
    EXPECT_THAT(e.what(), HasSubstr("never printed"));
  }
}

TEST(Harness, ChildrenDoNotInheritTheProgramsSettings) {
  ::setenv("PGFANOUT_EXCHANGE", "from-the-developer-shell", 1);
  CommandResult r = run_command({"/bin/sh", "-c", "echo \"x=$PGFANOUT_EXCHANGE y=$EXTRA\""}, 10s, {{"EXTRA", "1"}});
  ::unsetenv("PGFANOUT_EXCHANGE");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "x= y=1\n");
  EXPECT_EQ(r.err, "");
}

TEST(Harness, RunCommandTimesOut) {
  auto started = std::chrono::steady_clock::now();
  EXPECT_THROW(run_command({"/bin/sleep", "60"}, 200ms), HarnessError);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 30s);
}

TEST(Harness, EventuallyReportsWhatAndTheLastValue) {
  int calls = 0;
  EXPECT_EQ(eventually_value([&] { return ++calls; }, [](int n) { return n >= 3; }, 10s, "three calls"), 3);
  try {
    eventually_value([] { return 41; }, [](int n) { return n == 42; }, 100ms, "the answer");
    FAIL() << "no exception";
  } catch (const HarnessError& e) {
    EXPECT_THAT(e.what(), HasSubstr("waiting for the answer"));
    EXPECT_THAT(e.what(), HasSubstr("last observed: 41"));
  }
  try {
    eventually([]() -> bool { throw std::runtime_error("server restarting"); }, 100ms, "a server");
    FAIL() << "no exception";
  } catch (const HarnessError& e) {
    EXPECT_THAT(e.what(), HasSubstr("server restarting"));
  }
}

TEST(Harness, ConninfoForReplacesTheDatabase) {
  EXPECT_EQ(conninfo_for("host=h dbname=postgres user=u", "x"), "host=h user=u dbname='x'");
  EXPECT_EQ(conninfo_for("host=h dbname = 'a b' port=1", "it's"), "host=h port=1 dbname='it\\'s'");
  EXPECT_EQ(conninfo_for("postgresql://u@h/postgres", "x y"), "postgresql://u@h/postgres?dbname=x%20y");
  EXPECT_EQ(conninfo_for("postgres://h/d?sslmode=disable", "x"), "postgres://h/d?sslmode=disable&dbname=x");
}

TEST(Harness, UniqueNamesAreDistinctAndFitIdentifiers) {
  std::string a = unique_name("Some Prefix.With-Odd chars and a very long tail that goes on and on");
  std::string b = unique_name("Some Prefix.With-Odd chars and a very long tail that goes on and on");
  EXPECT_NE(a, b);
  EXPECT_LE(a.size(), 63u);
  EXPECT_EQ(a.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_"), std::string::npos) << a;
}

TEST(Harness, ScratchDatabaseIsCreatedAndDropped) {
  std::string name;
  {
    ScratchDatabase db;
    name = db.name();
    EXPECT_EQ(db.session().value("SELECT current_database()"), name);
  }
  PgSession admin(pg_admin_conninfo());
  EXPECT_EQ(admin.integer("SELECT count(*) FROM pg_database WHERE datname = " + sql_literal(name)), 0);
}

TEST(Harness, SqlErrorsCarryTheServersMessageAndState) {
  ScratchDatabase db;
  PgSession s = db.session();
  try {
    s.exec("SELECT * FROM no_such_table");
    FAIL() << "no exception";
  } catch (const SqlError& e) {
    EXPECT_EQ(e.sqlstate(), "42P01");
    EXPECT_THAT(e.what(), HasSubstr("no_such_table"));
  }
  EXPECT_EQ(s.integer("SELECT 1"), 1) << "the session survives an error";
  s.exec("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (2, 'b'), (1, 'a')");
  EXPECT_EQ(table_md5(s, "t", "id"), s.value("SELECT md5('(1,a)|(2,b)')"));
  s.exec("TRUNCATE t");
  EXPECT_EQ(table_md5(s, "t", "id"), std::nullopt);
}

TEST(Harness, QueuesCarryMessagesWithTheirProperties) {
  TestExchange exchange;
  TestQueue queue(exchange.name(), {"s.*"});
  publish_message(exchange.name(), "s.t", R"({"a":1})", {{"x-n", std::int64_t{3}}, {"x-s", std::string("v")}}, "17");
  publish_message(exchange.name(), "other.t", "ignored");
  Delivery d = queue.take(1)[0];
  EXPECT_EQ(d.routing_key, "s.t");
  EXPECT_EQ(d.body, R"({"a":1})");
  EXPECT_EQ(d.message_id, "17");
  EXPECT_EQ(d.content_type, "application/json");
  EXPECT_EQ(d.delivery_mode, 2);
  EXPECT_EQ(d.headers, (Headers{{"x-n", std::int64_t{3}}, {"x-s", std::string("v")}}));
  EXPECT_EQ(queue.remaining(), 0u);
  EXPECT_FALSE(queue.next(100ms).has_value());

  publish_message(exchange.name(), "s.u", "1");
  publish_message(exchange.name(), "s.u", "2");
  EXPECT_EQ(queue.take(1)[0].body, "1");
  EXPECT_EQ(queue.remaining(), 1u) << "a message delivered but not taken is still in the queue";
  queue.purge();
  EXPECT_EQ(queue.remaining(), 0u);
  try {
    queue.take(1, 100ms);
    FAIL() << "no exception";
  } catch (const HarnessError& e) {
    EXPECT_THAT(e.what(), HasSubstr("got 0"));
  }
}

TEST(Harness, PostgresStoppedRestartsTheCluster) {
  PgSession admin(pg_admin_conninfo());
  {
    PostgresStopped down;
    EXPECT_THROW(PgSession probe(pg_admin_conninfo()), HarnessError);
  }
  // The first statement on the old connection may fail; the session then reconnects.
  eventually([&] { return admin.integer("SELECT 1") == 1; }, kPatience, "the old session to work again");
}

}  // namespace
}  // namespace pgfanout::test
