// Leadership and fencing of publishers (README, "Leadership and fencing"): one publisher
// per primary holds the lease in pgfanout.publisher_lease, which no other role can take
// or block; every new leader takes a larger epoch and sends it in each message; listeners
// drop what a deposed leader still sends, so that it never takes a replica back in time.

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "harness.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;

// A few hot rows, the same on the primary and the replica before tracking starts.
constexpr const char* kHotTable =
    "CREATE TABLE public.hot (id integer PRIMARY KEY, ver integer NOT NULL, val text NOT NULL);"
    "INSERT INTO public.hot SELECT g, 0, 'seed' FROM generate_series(1, 5) g";

std::int64_t lease_epoch(PgSession& primary) {
  return primary.integer("SELECT epoch FROM pgfanout.publisher_lease");
}

std::optional<std::int64_t> epoch_header(const Delivery& d) {
  for (const auto& [key, value] : d.headers) {
    if (key == "x-pgfanout-epoch") {
      if (const auto* n = std::get_if<std::int64_t>(&value)) return *n;
    }
  }
  return std::nullopt;
}

/// The value of an unlabelled metric the program on `port` serves; throws when absent.
double metric(int port, const std::string& name) {
  std::istringstream lines(http_get(port, "/metrics"));
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with(name + " ")) return std::stod(line.substr(name.size() + 1));
  }
  throw HarnessError("metric " + name + " not served on port " + std::to_string(port));
}

/// A login role of the test cluster, dropped on destruction: declare it before the
/// databases that grant it rights, so that they are dropped first.
class TestRole {
 public:
  TestRole() : name_(unique_name("pgft_role")) {
    PgSession(pg_admin_conninfo()).exec("CREATE ROLE " + name_ + " LOGIN");
  }
  ~TestRole() {
    try {
      PgSession(pg_admin_conninfo()).exec("DROP ROLE IF EXISTS " + name_);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cannot drop role " << name_ << ": " << e.what();
    }
  }
  TestRole(const TestRole&) = delete;
  TestRole& operator=(const TestRole&) = delete;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

/// UPDATEs of the hot rows in turn, one per autocommit transaction, on a thread of its own
/// until stop() (or 90 s): every row keeps getting newer versions.
class HotRowUpdates {
 public:
  explicit HotRowUpdates(std::string conninfo)
      : conninfo_(std::move(conninfo)), thread_([this] { run(); }) {}
  ~HotRowUpdates() { stop(); }
  HotRowUpdates(const HotRowUpdates&) = delete;
  HotRowUpdates& operator=(const HotRowUpdates&) = delete;

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    check();
  }
  void wait_for_more(std::int64_t n) {
    std::int64_t target = committed_ + n;
    eventually([&] { return committed_ >= target || failed_; }, kPatience,
               std::to_string(n) + " more updates of the hot rows");
    check();
  }

 private:
  void run() {
    try {
      PgSession db(conninfo_);
      auto until = std::chrono::steady_clock::now() + 90s;
      for (std::int64_t k = 0; !stop_ && std::chrono::steady_clock::now() < until; ++k) {
        db.exec("UPDATE public.hot SET ver = ver + 1, val = md5(random()::text) WHERE id = " +
                std::to_string(k % 5 + 1));
        ++committed_;
        std::this_thread::sleep_for(10ms);
      }
    } catch (const std::exception& e) {
      error_ = e.what();
      failed_ = true;
    }
  }
  void check() const {
    if (failed_) throw HarnessError("the update load failed: " + error_);
  }

  std::string conninfo_;
  std::atomic<bool> stop_{false};
  std::atomic<std::int64_t> committed_{0};
  std::atomic<bool> failed_{false};
  std::string error_;  // written by the thread before it sets failed_
  std::thread thread_;
};

// #11: the publisher used a session advisory lock, which any role that may connect could
// take first and so stall every publisher. A role that writes a tracked table, and does
// everything it may to the leadership, does not keep a publisher from shipping.
TEST(Leadership, NoOtherRoleCanStallThePublisher) {
  TestRole writer;
  ScratchDatabase primary_db("pgft_lead_p");
  PgSession primary = primary_db.session();
  install_schema(primary_db.conninfo());
  primary.exec("CREATE TABLE public.t (id integer PRIMARY KEY, v text)");
  primary.exec("SELECT pgfanout.track('public.t')");
  primary.exec("GRANT SELECT, INSERT, UPDATE, DELETE ON public.t TO " + writer.name());

  PgSession intruder(primary_db.conninfo() + " user=" + writer.name());
  EXPECT_EQ(intruder.value("SELECT pg_try_advisory_lock(1886809697, 1)"), "t");  // the old leader lock
  for (const char* attempt : {"SELECT * FROM pgfanout.publisher_lease",
                              "UPDATE pgfanout.publisher_lease SET holder_pid = pg_backend_pid()",
                              "BEGIN; LOCK TABLE pgfanout.publisher_lease IN ACCESS SHARE MODE; COMMIT"}) {
    try {
      intruder.exec(attempt);
      ADD_FAILURE() << "a writer of a tracked table may run: " << attempt;
    } catch (const SqlError& e) {
      EXPECT_NE(std::string(e.what()).find("permission denied"), std::string::npos) << e.what();
    }
    intruder.exec("ROLLBACK");
  }
  // Holds its session (and the advisory lock) open while the publisher starts.
  intruder.exec("INSERT INTO public.t VALUES (1, 'written by another role')");

  TestExchange exchange("pgft_lead_x");
  TestQueue queue(exchange.name(), {"public.t"});
  Process publisher = start_publisher(primary_db.conninfo(), exchange.name());
  auto shipped = queue.take(1);
  EXPECT_NE(shipped[0].body.find("written by another role"), std::string::npos) << shipped[0].body;
  EXPECT_EQ(publisher.count_in_log("waiting as standby"), 0u);
  EXPECT_EQ(intruder.value("SELECT 'still connected'"), "still connected");
}

// A primary with public.t tracked, and a queue bound for it.
class TrackedPrimary : public ::testing::Test {
 protected:
  void SetUp() override {
    primary.exec("CREATE TABLE public.t (id integer PRIMARY KEY, v text)");
    install_schema(primary_db.conninfo());
    primary.exec("SELECT pgfanout.track('public.t')");
  }
  ScratchDatabase primary_db{"pgft_lead_p"};
  PgSession primary = primary_db.session();
  TestExchange exchange{"pgft_lead_x"};
  TestQueue queue{exchange.name(), {"public.t"}};
};

// Every new leader takes a larger epoch, sends it in every message, and keeps it larger
// across a takeover and a reinstall (uninstall.sql drops the lease table).
TEST_F(TrackedPrimary, EpochGrowsAcrossTakeoverAndReinstall) {

  std::optional<Process> first(start_publisher(primary_db.conninfo(), exchange.name()));
  first->wait_for_log("leading with epoch");
  std::int64_t epoch1 = lease_epoch(primary);
  EXPECT_GT(epoch1, 0);
  primary.exec("INSERT INTO public.t VALUES (1, 'one')");
  EXPECT_EQ(epoch_header(queue.take(1)[0]), epoch1);

  Process second = start_publisher(primary_db.conninfo(), exchange.name());
  second.wait_for_log("waiting as standby");
  EXPECT_EQ(lease_epoch(primary), epoch1) << "a standby took the lease of a live leader";
  first->kill();
  second.wait_for_log("taking over");
  std::int64_t epoch2 = lease_epoch(primary);
  EXPECT_GT(epoch2, epoch1);
  primary.exec("INSERT INTO public.t VALUES (2, 'two')");
  EXPECT_EQ(epoch_header(queue.take(1)[0]), epoch2);
  EXPECT_EQ(second.stop(), 0);

  uninstall_schema(primary_db.conninfo());
  install_schema(primary_db.conninfo());
  primary.exec("SELECT pgfanout.track('public.t')");
  Process third = start_publisher(primary_db.conninfo(), exchange.name());
  third.wait_for_log("leading with epoch");
  EXPECT_GT(lease_epoch(primary), epoch2) << "the epoch went back after a reinstall";
  primary.exec("INSERT INTO public.t VALUES (3, 'three')");
  EXPECT_EQ(epoch_header(queue.take(1)[0]), lease_epoch(primary));
}

// Contenders queue on the lease's row lock, and each one that waited checks the holder
// that committed meanwhile: while that session lives, nobody takes the lease over.
TEST(Leadership, ContendersThatWaitedRecheckTheNewHolder) {
  ScratchDatabase primary_db("pgft_lead_p");
  PgSession primary = primary_db.session();
  install_schema(primary_db.conninfo());
  TestExchange exchange("pgft_lead_x");

  // A session takes the lease as a publisher does, but keeps its transaction open.
  std::optional<PgSession> holder(primary_db.session());
  holder->exec(
      "BEGIN; UPDATE pgfanout.publisher_lease SET holder_pid = pg_backend_pid(), "
      "holder_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), "
      "epoch = epoch + 1");
  Process a = start_publisher(primary_db.conninfo(), exchange.name());
  Process b = start_publisher(primary_db.conninfo(), exchange.name());
  eventually([&] {
    return primary.integer("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                           "'pgfanout-publisher' AND wait_event_type = 'Lock'") == 2;
  }, kPatience, "both publishers to wait for the lease's row lock");
  holder->exec("COMMIT");
  a.wait_for_log("waiting as standby");
  b.wait_for_log("waiting as standby");
  EXPECT_EQ(primary.integer("SELECT holder_pid FROM pgfanout.publisher_lease"),
            holder->integer("SELECT pg_backend_pid()"));

  holder.reset();  // its session ends: one of them takes over
  eventually([&] { return a.count_in_log("taking over") + b.count_in_log("taking over") > 0; },
             kPatience, "a publisher to take over");
  Process& leader = a.count_in_log("taking over") ? a : b;
  Process& standby = &leader == &a ? b : a;
  EXPECT_EQ(standby.count_in_log("taking over"), 0u);
  leader.kill();
  standby.wait_for_log("taking over");
}

// A leader whose lease was taken while its session lives (only an operator's UPDATE can
// do that) deletes nothing from the outbox and steps down: what it shipped stays for the
// holder, and it leads again, with a new epoch, once the holder is gone.
TEST_F(TrackedPrimary, ALeaderThatLostItsLeaseDeletesNothing) {
  Process publisher = start_publisher(primary_db.conninfo(), exchange.name());
  publisher.wait_for_log("leading with epoch");
  // In logical mode the publisher checks its lease whenever it stores its position, also
  // for the transaction of set_capture() at the start of the slot: let it pass that first.
  wait_outbox_empty(primary);
  std::int64_t epoch1 = lease_epoch(primary);

  std::optional<PgSession> usurper(primary_db.session());
  usurper->exec(
      "UPDATE pgfanout.publisher_lease SET holder_pid = pg_backend_pid(), "
      "holder_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), "
      "epoch = epoch + 1");
  primary.exec("INSERT INTO public.t VALUES (1, 'one')");
  EXPECT_EQ(epoch_header(queue.take(1)[0]), epoch1);  // shipped, then not deleted
  publisher.wait_for_log("no longer holds the lease");
  publisher.wait_for_log("waiting as standby");
  // In logical mode the slot keeps it (peeked once the deposed leader's walsender is gone).
  eventually_value([&] { return pending_changes(primary); }, [](std::int64_t n) { return n == 1; }, kPatience,
                   "the change to stay captured");

  usurper.reset();  // the holder's session ends
  publisher.wait_for_log("taking over");
  auto again = queue.take(1);
  EXPECT_NE(again[0].body.find("\"one\""), std::string::npos) << again[0].body;
  EXPECT_GT(epoch_header(again[0]).value_or(0), epoch1 + 1);
  wait_outbox_empty(primary);
}

// #12, fencing: a leader paused in the middle of shipping a batch is deposed (its session
// ends, the standby takes over and ships newer versions of the same rows); when it wakes
// up, its stale batch reaches the queue behind them. The listener drops it, counts it and
// logs it, and the replica stays equal to the primary instead of going back in time.
TEST(Fencing, ADeposedLeaderCannotTakeAReplicaBackInTime) {
  ScratchDatabase primary_db("pgft_fence_p");
  ScratchDatabase replica_db("pgft_fence_r");
  PgSession primary = primary_db.session();
  PgSession replica = replica_db.session();
  primary.exec(kHotTable);
  replica.exec(kHotTable);
  install_schema(primary_db.conninfo());
  primary.exec("SELECT pgfanout.track('public.hot')");
  TestExchange exchange("pgft_fence_x");
  TestQueue queue(exchange.name(), {}, QueueOptions::listener_compatible());
  TestQueue dead(exchange.name(), {}, QueueOptions::dead_letter_compatible(), queue.name() + ".dead");
  int listener_port = free_port();
  Process listener = start_listener(replica_db.conninfo(), queue.name(), exchange.name(),
                                    {"--metrics", "127.0.0.1:" + std::to_string(listener_port)});
  listener.wait_for_log("consuming from");

  // The leader reaches the broker through a relay that can hold what it publishes; with
  // 60 s heartbeats the broker keeps its connection meanwhile.
  FreezableRelay relay;
  Process leader(publisher_binary(), {"--source", conninfo_as(primary_db.conninfo(), kPublisherRole), "--amqp", relay.url(60),
                                      "--exchange", exchange.name(), "--log-level", "debug"});
  leader.wait_for_log("leading with epoch");
  Process standby = start_publisher(primary_db.conninfo(), exchange.name());
  standby.wait_for_log("waiting as standby");

  HotRowUpdates load(primary_db.conninfo());
  eventually([&] { return replica.integer("SELECT sum(ver) FROM public.hot") >= 50; }, kPatience,
             "the replica to follow the updates");

  // The leader's next batch stays in the relay, unconfirmed (confirms of earlier ones
  // still reach it), and the leader is paused right there.
  relay.hold_uploads();
  eventually([&] { return relay.held_upload_bytes() > 100; }, kPatience,
             "the leader to publish a batch into the relay");
  leader.signal(SIGSTOP);
  std::int64_t deposed_epoch = lease_epoch(primary);

  // Its session ends, as when its host is cut off; the standby takes over and ships the
  // changes the leader had in flight, and newer versions of the same rows.
  primary.exec("SELECT pg_terminate_backend(holder_pid) FROM pgfanout.publisher_lease");
  standby.wait_for_log("taking over");
  EXPECT_GT(lease_epoch(primary), deposed_epoch);
  load.wait_for_more(100);
  load.stop();
  wait_outbox_empty(primary);
  auto want = table_md5(primary, "public.hot", "id");
  eventually_value([&] { return table_md5(replica, "public.hot", "id"); },
                   [&](const std::optional<std::string>& got) { return got == want; }, kPatience,
                   "the replica to equal the primary after the takeover");

  // The deposed leader wakes up: its stale batch reaches the queue and is confirmed; then
  // it finds its session gone and waits as a standby.
  relay.thaw();
  leader.signal(SIGCONT);
  leader.wait_for_log("waiting as standby");
  // A change behind the stale batch in the queue: once it is applied, so was the batch.
  primary.exec("INSERT INTO public.hot VALUES (1000, 0, 'behind the stale batch')");
  wait_outbox_empty(primary);
  eventually([&] { return replica.integer("SELECT count(*) FROM public.hot WHERE id = 1000") == 1; },
             kPatience, "the change behind the stale batch to be applied");

  EXPECT_EQ(table_md5(replica, "public.hot", "id"), table_md5(primary, "public.hot", "id"))
      << "the deposed leader's batch took the replica back in time";
  EXPECT_GT(metric(listener_port, "pgfanout_listener_stale_messages_total"), 0);
  EXPECT_GE(listener.count_in_log("from a deposed publisher"), 1u);
  EXPECT_EQ(replica.integer("SELECT epoch FROM pgfanout.listener_epoch"), lease_epoch(primary));
  EXPECT_EQ(dead.remaining(), 0u) << "stale messages must not be dead-lettered";
}

// Dead letters carry no epoch, so replaying them as the README says (a shovel from
// QUEUE.dead into QUEUE) applies them although the queue has seen newer epochs since.
TEST(Fencing, DeadLetterReplayStillApplies) {
  ScratchDatabase primary_db("pgft_fence_p");
  ScratchDatabase replica_db("pgft_fence_r");
  PgSession primary = primary_db.session();
  PgSession replica = replica_db.session();
  primary.exec(kHotTable);
  replica.exec(kHotTable);
  primary.exec("CREATE TABLE public.late (id integer PRIMARY KEY, v text)");
  install_schema(primary_db.conninfo());
  primary.exec("SELECT pgfanout.track('public.hot'); SELECT pgfanout.track('public.late')");
  TestExchange exchange("pgft_fence_x");
  TestQueue queue(exchange.name(), {}, QueueOptions::listener_compatible());
  TestQueue dead(exchange.name(), {}, QueueOptions::dead_letter_compatible(), queue.name() + ".dead");
  std::optional<Process> listener(
      start_listener(replica_db.conninfo(), queue.name(), exchange.name()));
  listener->wait_for_log("consuming from");
  Process publisher = start_publisher(primary_db.conninfo(), exchange.name());

  // The replica has no table public.late yet: both changes are dead-lettered.
  primary.exec("INSERT INTO public.late VALUES (1, 'inspected')");
  primary.exec("INSERT INTO public.late VALUES (2, 'replayed')");
  eventually([&] { return queue_depth(dead.name()) == 2; }, kPatience,
             "both changes to be dead-lettered");
  auto inspected = dead.take(1);
  EXPECT_EQ(epoch_header(inspected[0]), std::nullopt) << "a dead letter carries the epoch header";
  EXPECT_EQ(dead.remaining(), 1u);

  // The queue applies newer messages meanwhile; then a new leader raises its epoch.
  primary.exec("UPDATE public.hot SET ver = 1");
  publisher.kill();
  Process successor = start_publisher(primary_db.conninfo(), exchange.name());
  successor.wait_for_log("leading with epoch");
  primary.exec("UPDATE public.hot SET ver = 2");
  eventually([&] { return replica.integer("SELECT min(ver) FROM public.hot") == 2; }, kPatience,
             "the updates to be applied");
  EXPECT_EQ(replica.integer("SELECT epoch FROM pgfanout.listener_epoch"), lease_epoch(primary));

  // The cause is fixed (and the listener restarted, so that it finds the new table at
  // once), and the README's shovel replays the dead letters.
  replica.exec("CREATE TABLE public.late (id integer PRIMARY KEY, v text)");
  EXPECT_EQ(listener->stop(), 0);
  listener.reset();
  listener.emplace(start_listener(replica_db.conninfo(), queue.name(), exchange.name()));
  listener->wait_for_log("consuming from");
  std::string shovel = "replay-" + queue.name();
  auto set = rabbitmqctl({"set_parameter", "shovel", shovel,
                          R"({"src-uri": "amqp://", "src-queue": ")" + dead.name() +
                              R"(", "dest-uri": "amqp://", "dest-queue": ")" + queue.name() +
                              R"(", "src-delete-after": "queue-length"})"});
  ASSERT_EQ(set.exit_code, 0) << set.out << set.err;
  eventually([&] { return replica.value("SELECT v FROM public.late WHERE id = 2") == "replayed"; },
             kPatience, "the replayed dead letter to be applied");
  rabbitmqctl({"clear_parameter", "shovel", shovel});  // gone already once the queue was moved
  EXPECT_EQ(listener->count_in_log("from a deposed publisher"), 0u);
}

}  // namespace
}  // namespace pgfanout::test
