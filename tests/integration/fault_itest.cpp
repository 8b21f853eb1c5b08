// Fault tolerance: processes killed, servers stopped and restarted, a replica cut off, a
// broker gone silent (heartbeats), a standby publisher taking over, a backlog built while
// no publisher runs, and stops by signal in every state, also while a server does not
// answer. Each fault happens under a continuous write load
// on the primary, with one publisher and two listeners on two replica databases, and each
// test ends with both replicas equal to the primary and the outbox empty: nothing lost,
// nothing applied out of order.
//
// These tests stop the shared test servers (ctest runs them one at a time, see
// tests/CMakeLists.txt) and carry the ctest label `fault` besides `integration`.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "pgfanout/pg_connection.hpp"

namespace pgfanout::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kTable = "public.items";
constexpr const char* kCreateTable =
    "CREATE TABLE public.items (id bigint PRIMARY KEY, val text NOT NULL, ver integer NOT NULL)";

// Bounds of every wait for the system to catch up after a fault: generous for a loaded
// 2-core machine, and only spent when something is wrong.
constexpr auto kConverge = 60s;
// How long a process may take to exit after SIGTERM: a few seconds, whatever it is doing
// (both programs leave at once when a server call still blocks 3 s after the signal).
constexpr auto kStopBound = 6s;

/// Single-row autocommit INSERT, UPDATE and DELETE transactions on the primary, at a steady
/// rate, on a thread of its own, until stop() or its bounds (count and time). Updates and
/// deletes favour recent rows, and deleted keys come back, so that the same row is often
/// changed several times in quick succession (what would expose a reordering). A failed
/// statement (a server restarting) is counted and the load goes on on a new connection:
/// the primary's final content is the reference, whatever the outcome of that statement.
class WriteLoad {
 public:
  explicit WriteLoad(std::string conninfo, int per_second = 300, std::int64_t max_ops = 40000,
                     std::chrono::seconds max_time = 90s)
      : conninfo_(std::move(conninfo)),
        per_second_(per_second),
        max_ops_(max_ops),
        max_time_(max_time),
        thread_([this] { run(); }) {}
  ~WriteLoad() { stop(); }
  WriteLoad(const WriteLoad&) = delete;
  WriteLoad& operator=(const WriteLoad&) = delete;

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::int64_t committed() const { return committed_; }
  std::int64_t failed() const { return failed_; }

  /// Waits until `n` more statements committed than when called.
  void wait_for_more(std::int64_t n, std::chrono::milliseconds timeout = 30s) {
    std::int64_t target = committed_ + n;
    eventually_value([&] { return committed_.load(); }, [&](std::int64_t c) { return c >= target; },
                     timeout, "the write load to commit " + std::to_string(n) + " more statements");
  }

 private:
  void run() {
    std::mt19937_64 random(std::random_device{}());
    std::deque<std::int64_t> live;     // recently inserted keys, oldest first
    std::deque<std::int64_t> deleted;  // recently deleted keys
    std::optional<std::int64_t> next_id;  // above every key in the table when the load starts
    std::optional<PgSession> db;
    auto started = Clock::now();
    auto next_at = started;
    auto period = std::chrono::microseconds(1000000 / per_second_);
    auto pick = [&](std::deque<std::int64_t>& keys) -> std::size_t {
      // Mostly among the 50 newest.
      std::size_t window = std::min<std::size_t>(keys.size(), 50);
      return keys.size() - 1 - std::uniform_int_distribution<std::size_t>(0, window - 1)(random);
    };
    auto text = [&] {
      std::string s(std::uniform_int_distribution<int>(8, 80)(random), 'x');
      for (char& c : s) c = static_cast<char>('a' + random() % 26);
      return s;
    };
    for (std::int64_t op = 0; op < max_ops_ && !stop_ && Clock::now() - started < max_time_; ++op) {
      next_at += period;
      auto now = Clock::now();
      if (next_at > now) {
        std::this_thread::sleep_until(next_at);
      } else if (now - next_at > 1s) {
        next_at = now;  // fell behind (a server was down): do not burst to catch up
      }
      try {
        if (!db) db.emplace(conninfo_);
        if (!next_id) next_id = db->integer("SELECT coalesce(max(id), 0) + 1 FROM public.items");
      } catch (const std::exception&) {
        ++failed_;
        db.reset();
        std::this_thread::sleep_for(50ms);
        continue;
      }
      int dice = std::uniform_int_distribution<int>(0, 99)(random);
      std::string sql;
      if (live.size() < 20 || dice < 40) {
        std::int64_t id = (*next_id)++;
        sql = "INSERT INTO public.items VALUES (" + std::to_string(id) + ", '" + text() + "', 0)";
        live.push_back(id);
      } else if (dice < 75) {
        std::int64_t id = live[pick(live)];
        sql = "UPDATE public.items SET val = '" + text() + "', ver = ver + 1 WHERE id = " + std::to_string(id);
      } else if (dice < 92 || deleted.empty()) {
        std::size_t i = pick(live);
        std::int64_t id = live[i];
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
        deleted.push_back(id);
        if (deleted.size() > 200) deleted.pop_front();
        sql = "DELETE FROM public.items WHERE id = " + std::to_string(id);
      } else {
        std::size_t i = pick(deleted);
        std::int64_t id = deleted[i];
        deleted.erase(deleted.begin() + static_cast<std::ptrdiff_t>(i));
        live.push_back(id);
        sql = "INSERT INTO public.items VALUES (" + std::to_string(id) + ", '" + text() +
              "', 100) ON CONFLICT (id) DO UPDATE SET val = EXCLUDED.val, ver = EXCLUDED.ver";
      }
      if (live.size() > 5000) live.pop_front();
      try {
        db->exec(sql);
        ++committed_;
      } catch (const std::exception&) {
        ++failed_;
        db.reset();
        std::this_thread::sleep_for(50ms);
      }
    }
  }

  std::string conninfo_;
  int per_second_;
  std::int64_t max_ops_;
  std::chrono::seconds max_time_;
  std::atomic<bool> stop_{false};
  std::atomic<std::int64_t> committed_{0};
  std::atomic<std::int64_t> failed_{0};
  std::thread thread_;
};

/// A TCP port that accepts connections (the kernel completes the handshake) and never
/// answers: a server that hangs, for a client stuck in a connect attempt.
class SilentServer {
 public:
  SilentServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw HarnessError("socket() failed");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof address;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      ::close(fd_);
      throw HarnessError("cannot listen on a loopback port");
    }
    port_ = ntohs(address.sin_port);
  }
  ~SilentServer() { ::close(fd_); }
  SilentServer(const SilentServer&) = delete;
  SilentServer& operator=(const SilentServer&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

/// Deletes the queues a listener declared (QUEUE and QUEUE.dead) when the test ends.
class ListenerQueues {
 public:
  explicit ListenerQueues(std::string name) : name_(std::move(name)) {}
  ~ListenerQueues() {
    for (const auto& q : {name_, name_ + ".dead"}) {
      try {
        delete_queue(q);
      } catch (const std::exception&) {
        // Never declared (the test failed before its listener started).
      }
    }
  }
  ListenerQueues(const ListenerQueues&) = delete;
  ListenerQueues& operator=(const ListenerQueues&) = delete;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

/// One primary with the tracked table, two replicas with the same table, an exchange, a
/// listener per replica (started and consuming in SetUp), and a publisher started by the
/// test. Processes die (SIGKILL, by PID) before the queues, exchange and databases go.
class FaultTest : public ::testing::Test {
 protected:
  FaultTest()
      : primary_("pgft_fault_src"),
        replica_a_("pgft_fault_ra"),
        replica_b_("pgft_fault_rb"),
        exchange_("pgft_fault_x"),
        queue_a_(unique_name("pgft_fault_qa")),
        queue_b_(unique_name("pgft_fault_qb")) {}

  void SetUp() override {
    install_schema(primary_.conninfo());
    for (const ScratchDatabase* db : {&primary_, &replica_a_, &replica_b_}) db->session().exec(kCreateTable);
    primary_.session().exec(std::string("SELECT pgfanout.track('") + kTable + "')");
    // Both queues exist before the first publish: a change published while no queue is
    // bound for its table is returned by the broker and held back in the outbox.
    start_listener_a();
    start_listener_b();
  }

  void start_publisher() {
    publisher_.reset();
    publisher_.emplace(pgfanout::test::start_publisher(primary_.conninfo(), exchange_.name()));
    publisher_->wait_for_log("outbox holds");
  }
  void start_listener_a() {
    listener_a_.reset();
    listener_a_.emplace(start_listener(replica_a_.conninfo(), queue_a_.name(), exchange_.name()));
    listener_a_->wait_for_log("consuming from");
  }
  void start_listener_b() {
    listener_b_.reset();
    listener_b_.emplace(start_listener(replica_b_.conninfo(), queue_b_.name(), exchange_.name()));
    listener_b_->wait_for_log("consuming from");
  }
  void start_load(int per_second = 300) { load_.emplace(primary_.conninfo(), per_second); }

  /// Stops the load, then waits until the outbox is empty and both replicas hold exactly
  /// the primary's rows; nothing may have been dead-lettered. Unless the primary went away
  /// during the test, every statement of the load must have committed.
  void expect_converged(bool primary_went_away = false) {
    if (load_) {
      load_->stop();
      EXPECT_GE(load_->committed(), 300) << "the write load barely ran";
      if (!primary_went_away) {
        EXPECT_EQ(load_->failed(), 0) << "statements of the write load failed";
      }
    }
    PgSession primary = primary_.session();
    wait_outbox_empty(primary, kConverge);
    auto want = table_md5(primary, kTable, "id");
    ASSERT_TRUE(want.has_value()) << "the primary's table is empty";
    for (const ScratchDatabase* replica : {&replica_a_, &replica_b_}) {
      PgSession db = replica->session();
      eventually_value([&] { return table_md5(db, kTable, "id"); },
                       [&](const std::optional<std::string>& got) { return got == want; }, kConverge,
                       "replica " + replica->name() + " to equal the primary (md5 of its rows)");
    }
    EXPECT_EQ(outbox_count(primary), 0);
    EXPECT_EQ(queue_depth(queue_a_.name() + ".dead"), 0u);
    EXPECT_EQ(queue_depth(queue_b_.name() + ".dead"), 0u);
  }

  /// Live publisher sessions named by the leader lease of the primary.
  std::int64_t leader_locks() {
    PgSession db = primary_.session();
    return db.integer(
        "SELECT count(*) FROM pgfanout.publisher_lease l JOIN pg_stat_activity a "
        "ON a.pid = l.holder_pid AND a.backend_start = l.holder_start "
        "AND a.application_name = 'pgfanout-publisher'");
  }

  /// Waits until `process` logged `needle` once more than `before` times.
  static void wait_for_another(Process& process, std::string_view needle, std::size_t before,
                               std::chrono::milliseconds timeout = 30s) {
    eventually([&] { return process.count_in_log(needle) > before; }, timeout,
               std::string(needle) + " logged again by pid " + std::to_string(process.pid()));
  }

  static void expect_prompt_clean_exit(Process& process, std::string_view what) {
    process.signal(SIGTERM);
    auto code = process.wait_exit(kStopBound);
    ASSERT_TRUE(code.has_value()) << what << " did not exit within " << kStopBound.count()
                                  << " s of SIGTERM";
    EXPECT_EQ(*code, 0) << what;
  }

  ScratchDatabase primary_;
  ScratchDatabase replica_a_;
  ScratchDatabase replica_b_;
  TestExchange exchange_;
  ListenerQueues queue_a_;
  ListenerQueues queue_b_;
  std::optional<Process> listener_a_;
  std::optional<Process> listener_b_;
  std::optional<Process> publisher_;
  std::optional<WriteLoad> load_;
};

std::chrono::milliseconds random_between(int low_ms, int high_ms) {
  static std::mt19937 random(std::random_device{}());
  return std::chrono::milliseconds(std::uniform_int_distribution<int>(low_ms, high_ms)(random));
}

// a) The publisher is killed (-9) three times while it ships: what it had published but
// not yet deleted from the outbox is published again by its successor.
TEST_F(FaultTest, PublisherKilledThreeTimes) {
  start_publisher();
  start_load();
  for (int round = 0; round < 3; ++round) {
    load_->wait_for_more(150);
    std::this_thread::sleep_for(random_between(100, 800));
    EXPECT_EQ(publisher_->kill(), 128 + SIGKILL);
    load_->wait_for_more(100);  // changes pile up in the outbox meanwhile
    start_publisher();
  }
  load_->wait_for_more(150);
  expect_converged();
}

// b) Listeners are killed (-9) three times while they apply: what they had not acked
// (applied or not) is delivered again and applied again.
TEST_F(FaultTest, ListenerKilledThreeTimes) {
  start_publisher();
  start_load();
  for (int round = 0; round < 3; ++round) {
    load_->wait_for_more(150);
    std::this_thread::sleep_for(random_between(100, 800));
    bool a = round != 1;
    Process& victim = a ? *listener_a_ : *listener_b_;
    EXPECT_EQ(victim.kill(), 128 + SIGKILL);
    load_->wait_for_more(100);  // messages pile up in its queue meanwhile
    if (a) {
      start_listener_a();
    } else {
      start_listener_b();
    }
  }
  load_->wait_for_more(150);
  expect_converged();
}

// c) The broker application is stopped and started again; no process is restarted: they
// reconnect by themselves, and the unconfirmed and unacked messages are sent again.
TEST_F(FaultTest, BrokerStoppedAndStarted) {
  start_publisher();
  start_load();
  load_->wait_for_more(300);
  std::size_t pub_lost = publisher_->count_in_log("RabbitMQ: ");
  std::size_t a_lost = listener_a_->count_in_log("RabbitMQ: ");
  std::size_t b_lost = listener_b_->count_in_log("RabbitMQ: ");
  std::size_t pub_connected = publisher_->count_in_log("connected to RabbitMQ");
  std::size_t a_consuming = listener_a_->count_in_log("consuming from");
  std::size_t b_consuming = listener_b_->count_in_log("consuming from");
  {
    BrokerStopped broker;  // its destructor starts the broker again, whatever happens here
    wait_for_another(*publisher_, "RabbitMQ: ", pub_lost);
    wait_for_another(*listener_a_, "RabbitMQ: ", a_lost);
    wait_for_another(*listener_b_, "RabbitMQ: ", b_lost);
    load_->wait_for_more(300);  // the outbox grows while the broker is away
    broker.start();
  }
  wait_for_another(*publisher_, "connected to RabbitMQ", pub_connected, kConverge);
  wait_for_another(*listener_a_, "consuming from", a_consuming, kConverge);
  wait_for_another(*listener_b_, "consuming from", b_consuming, kConverge);
  load_->wait_for_more(300);
  EXPECT_TRUE(publisher_->running());
  EXPECT_TRUE(listener_a_->running());
  EXPECT_TRUE(listener_b_->running());
  expect_converged();
}

// d) The PostgreSQL cluster is restarted (fast shutdown): the primary, and the replicas,
// which share the test cluster. No process is restarted.
TEST_F(FaultTest, PostgresRestarted) {
  start_publisher();
  start_load();
  load_->wait_for_more(300);
  std::size_t pub_draining = publisher_->count_in_log("outbox holds");
  std::size_t a_consuming = listener_a_->count_in_log("consuming from");
  std::size_t b_consuming = listener_b_->count_in_log("consuming from");
  CommandResult r = pg_ctl({"restart", "-m", "fast", "-w", "-t", "60"});
  if (r.exit_code != 0) {
    // Leave the cluster running for the next test, whatever state the restart left.
    pg_ctl({"start", "-w", "-t", "60"});
  }
  ASSERT_EQ(r.exit_code, 0) << "pg_ctl restart failed: " << r.err << r.out;
  wait_for_postgres();
  load_->wait_for_more(300, kConverge);
  wait_for_another(*publisher_, "outbox holds", pub_draining, kConverge);
  wait_for_another(*listener_a_, "consuming from", a_consuming, kConverge);
  wait_for_another(*listener_b_, "consuming from", b_consuming, kConverge);
  EXPECT_TRUE(publisher_->running());
  EXPECT_TRUE(listener_a_->running());
  EXPECT_TRUE(listener_b_->running());
  expect_converged(true);
}

/// A replica "down" for as long as it lives. The replicas share the test cluster with the
/// primary, so stopping the cluster would take everything down: instead the database
/// refuses new connections (ALLOW_CONNECTIONS false) and its sessions (the listener's) are
/// terminated, which is what the listener sees of a replica going away (its session ends,
/// reconnecting fails) while the primary and the other replica go on.
class ReplicaCutOff {
 public:
  explicit ReplicaCutOff(const ScratchDatabase& replica) : name_(replica.name()) {
    PgSession admin(pg_admin_conninfo());
    admin.exec("ALTER DATABASE " + quote_ident(name_) + " ALLOW_CONNECTIONS false");
    try {
      // Every session, not only those already named pgfanout-listener: a listener that was
      // connecting a moment ago has passed the ALLOW_CONNECTIONS check but may not have set
      // its application_name yet, or even be visible in pg_stat_activity; so terminate
      // until none is left.
      eventually([&] {
        admin.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = " +
                   sql_literal(name_) + " AND pid <> pg_backend_pid()");
        std::this_thread::sleep_for(100ms);
        return admin.integer("SELECT count(*) FROM pg_stat_activity WHERE datname = " +
                             sql_literal(name_)) == 0;
      }, 10s, "the sessions on " + name_ + " to end");
    } catch (...) {
      restore();
      throw;
    }
  }
  ~ReplicaCutOff() {
    try {
      restore();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "could not allow connections to " << name_ << " again: " << e.what();
    }
  }
  ReplicaCutOff(const ReplicaCutOff&) = delete;
  ReplicaCutOff& operator=(const ReplicaCutOff&) = delete;
  void restore() {
    if (restored_) return;
    PgSession admin(pg_admin_conninfo());
    admin.exec("ALTER DATABASE " + quote_ident(name_) + " ALLOW_CONNECTIONS true");
    restored_ = true;
  }

 private:
  std::string name_;
  bool restored_ = false;
};

// e) Replica A is unreachable for 10 s: its listener stops, retries, and resumes; the
// batch it was applying when its session was cut is delivered and applied again.
TEST_F(FaultTest, ReplicaDownTenSeconds) {
  start_publisher();
  start_load();
  load_->wait_for_more(300);
  std::size_t a_lost = listener_a_->count_in_log("PostgreSQL: ");
  std::size_t a_retries = listener_a_->count_in_log("reconnecting in");
  std::size_t a_consuming = listener_a_->count_in_log("consuming from");
  {
    ReplicaCutOff down(replica_a_);
    auto until = Clock::now() + 10s;
    wait_for_another(*listener_a_, "PostgreSQL: ", a_lost);
    std::this_thread::sleep_until(until);
    // It kept trying (backoff: 0.5 s, 1 s, 2 s, ...) and is still trying.
    EXPECT_GE(listener_a_->count_in_log("reconnecting in"), a_retries + 3);
    down.restore();
  }
  wait_for_another(*listener_a_, "consuming from", a_consuming, kConverge);
  load_->wait_for_more(300);
  EXPECT_TRUE(listener_a_->running());
  expect_converged();
}

// f) Two publishers on one primary: one ships, the other waits as standby for the leader
// lease and never connects to the broker; when the active one is killed (-9), the standby
// takes over.
TEST_F(FaultTest, StandbyPublisherTakesOver) {
  start_publisher();
  Process standby = pgfanout::test::start_publisher(primary_.conninfo(), exchange_.name());
  standby.wait_for_log("waiting as standby");
  start_load();
  load_->wait_for_more(300);
  EXPECT_EQ(leader_locks(), 1);
  EXPECT_EQ(standby.count_in_log("outbox holds"), 0u) << "the standby shipped";
  EXPECT_EQ(standby.count_in_log("connected to RabbitMQ"), 0u) << "the standby connected to the broker";
  EXPECT_EQ(publisher_->count_in_log("waiting as standby"), 0u);

  EXPECT_EQ(publisher_->kill(), 128 + SIGKILL);
  standby.wait_for_log("taking over", kConverge);
  standby.wait_for_log("outbox holds");
  EXPECT_EQ(leader_locks(), 1);
  load_->wait_for_more(300);
  expect_converged();
  EXPECT_EQ(leader_locks(), 1);
}

// Heartbeats: an idle publisher and an idle listener keep their broker connections alive
// (the broker drops a client silent for two heartbeat intervals), and notice a broker that
// went silent without closing anything within two intervals, then reconnect by themselves.
TEST_F(FaultTest, HeartbeatsDetectSilentBroker) {
  FreezableRelay relay;
  std::string url = relay.url(2);
  listener_b_.reset();
  listener_b_.emplace(listener_binary(), std::vector<std::string>{
      "--target", replica_b_.conninfo(), "--queue", queue_b_.name(), "--amqp", url,
      "--exchange", exchange_.name(), "--log-level", "debug"});
  listener_b_->wait_for_log("consuming from");
  publisher_.emplace(publisher_binary(), std::vector<std::string>{
      "--source", primary_.conninfo(), "--amqp", url, "--exchange", exchange_.name(),
      "--log-level", "debug"});
  publisher_->wait_for_log("outbox holds");
  EXPECT_NE(publisher_->log().find("(heartbeat 2 s)"), std::string::npos);

  std::this_thread::sleep_for(5s);  // idle for more than two heartbeat intervals
  EXPECT_EQ(publisher_->count_in_log("RabbitMQ: "), 0u) << "an idle publisher lost the broker";
  EXPECT_EQ(listener_b_->count_in_log("RabbitMQ: "), 0u) << "an idle listener lost the broker";

  relay.freeze();
  publisher_->wait_for_log("heartbeat timeout", 15s);
  listener_b_->wait_for_log("heartbeat timeout", 15s);
  std::size_t pub_connected = publisher_->count_in_log("connected to RabbitMQ");
  std::size_t b_consuming = listener_b_->count_in_log("consuming from");
  start_load();
  load_->wait_for_more(300);  // the outbox grows while the broker is silent
  relay.thaw();
  wait_for_another(*publisher_, "connected to RabbitMQ", pub_connected, kConverge);
  wait_for_another(*listener_b_, "consuming from", b_consuming, kConverge);
  load_->wait_for_more(300);
  expect_converged();
}

// g) Changes written while no publisher runs at all stay in the outbox; a publisher started
// later ships every one of them.
TEST_F(FaultTest, BacklogShippedWhenPublisherStarts) {
  start_load(500);
  load_->wait_for_more(1500);
  load_->stop();
  PgSession primary = primary_.session();
  EXPECT_GE(pending_changes(primary), 1000);
  EXPECT_EQ(queue_depth(queue_a_.name()), 0u);
  start_load();  // and the load goes on while the publisher catches up
  start_publisher();
  load_->wait_for_more(300);
  expect_converged();
}

// SIGTERM makes each process exit 0 within a few seconds: under load, while a server is
// down and it is backing off, and while it is stuck in a connect attempt to a server that
// does not answer. What was in flight is shipped or applied by their successors.
TEST_F(FaultTest, SigtermExitsPromptlyInEveryState) {
  start_publisher();
  start_load();
  load_->wait_for_more(300);

  // Under load.
  expect_prompt_clean_exit(*publisher_, "the publisher under load");
  expect_prompt_clean_exit(*listener_a_, "listener A under load");
  start_listener_a();
  start_publisher();
  load_->wait_for_more(300);

  // While the broker is down: both back off between attempts to reconnect.
  std::size_t a_consuming = listener_a_->count_in_log("consuming from");
  {
    std::size_t pub_retries = publisher_->count_in_log("reconnecting in");
    std::size_t b_retries = listener_b_->count_in_log("reconnecting in");
    BrokerStopped broker;
    wait_for_another(*publisher_, "reconnecting in", pub_retries);
    wait_for_another(*listener_b_, "reconnecting in", b_retries);
    expect_prompt_clean_exit(*publisher_, "the publisher while the broker is down");
    expect_prompt_clean_exit(*listener_b_, "listener B while the broker is down");
  }
  start_listener_b();
  start_publisher();
  wait_for_another(*listener_a_, "consuming from", a_consuming, kConverge);  // A stayed up
  load_->wait_for_more(300);

  // While its replica is down.
  {
    std::size_t a_retries = listener_a_->count_in_log("reconnecting in");
    ReplicaCutOff down(replica_a_);
    wait_for_another(*listener_a_, "reconnecting in", a_retries);
    expect_prompt_clean_exit(*listener_a_, "listener A while its replica is down");
  }
  start_listener_a();
  load_->wait_for_more(300);

  // Stuck in connect attempts to servers that accept connections and never answer.
  SilentServer silent;
  std::string silent_pg = "host=127.0.0.1 port=" + std::to_string(silent.port()) +
                          " dbname=postgres user=postgres connect_timeout=30";
  std::string silent_amqp = "amqp://guest:guest@127.0.0.1:" + std::to_string(silent.port()) + "/%2f";
  std::vector<std::pair<std::string, Process>> stuck;
  stuck.emplace_back("a publisher connecting to PostgreSQL",
                     pgfanout::test::start_publisher(silent_pg, exchange_.name()));
  stuck.emplace_back("a listener connecting to PostgreSQL",
                     start_listener(silent_pg, unique_name("pgft_fault_qs"), exchange_.name()));
  stuck.emplace_back("a listener connecting to RabbitMQ",
                     Process(listener_binary(), {"--target", replica_b_.conninfo(), "--queue",
                                                 unique_name("pgft_fault_qs"), "--amqp", silent_amqp,
                                                 "--exchange", exchange_.name(), "--log-level", "debug"}));
  for (auto& [what, process] : stuck) process.wait_for_log("starting");
  std::this_thread::sleep_for(1500ms);  // into the connect attempt
  for (auto& [what, process] : stuck) {
    EXPECT_TRUE(process.running()) << what << " gave up connecting already";
    expect_prompt_clean_exit(process, what);
  }
  // The live publisher stops so that one stuck on the broker can take the leader lease.
  expect_prompt_clean_exit(*publisher_, "the publisher under load");
  {
    Process pub(publisher_binary(), {"--source", primary_.conninfo(), "--amqp", silent_amqp,
                                     "--exchange", exchange_.name(), "--log-level", "debug"});
    pub.wait_for_log("leading with epoch");
    std::this_thread::sleep_for(1500ms);
    EXPECT_TRUE(pub.running());
    expect_prompt_clean_exit(pub, "a publisher connecting to RabbitMQ");
  }
  start_publisher();
  load_->wait_for_more(300);
  expect_converged();
}

}  // namespace
}  // namespace pgfanout::test
