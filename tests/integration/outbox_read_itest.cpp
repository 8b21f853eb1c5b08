// How pgfanout-publisher reads the outbox: it starts each read after the changes it has
// already read (OutboxCursor), and still ships every change that commits late with a
// lower id, while a rolled-back id holds nothing up.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <atomic>
#include <csignal>
#include <random>
#include <set>
#include <thread>

#include "harness.hpp"

namespace pgfanout::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

class OutboxRead : public ::testing::Test {
 protected:
  void SetUp() override {
    db_.emplace("pgft_read");
    install_schema(db_->conninfo());
    sql_.emplace(db_->conninfo());
    exchange_.emplace("pgft_read");
    sql().exec("CREATE TABLE t (id int PRIMARY KEY); SELECT pgfanout.track('t')");
  }

  PgSession& sql() { return *sql_; }
  Process publisher(std::vector<std::string> extra = {}, RunAs run_as = RunAs::least_privilege) {
    return start_publisher(db_->conninfo(), exchange_->name(), std::move(extra), run_as);
  }

  /// The rows of t carried by these single-change messages, in order.
  static std::vector<int> rows_of(const std::vector<Delivery>& ds) {
    std::vector<int> out;
    for (const auto& d : ds) out.push_back(json::parse(d.body)["new"]["id"].get<int>());
    return out;
  }

  std::optional<ScratchDatabase> db_;
  std::optional<PgSession> sql_;
  std::optional<TestExchange> exchange_;
};

TEST_F(OutboxRead, AChangeCommittedAfterOnesWithHigherIdsIsShipped) {
  TestQueue queue(exchange_->name(), {"public.t"});
  auto pub = publisher();
  PgSession late(db_->conninfo());
  late.exec("BEGIN; INSERT INTO t VALUES (1)");  // takes the lower id, commits last
  sql().exec("INSERT INTO t VALUES (2)");
  sql().exec("INSERT INTO t VALUES (3)");
  EXPECT_EQ(rows_of(queue.take(2)), (std::vector<int>{2, 3}));  // the publisher read past id 1
  std::this_thread::sleep_for(300ms);  // more reads, and idle, while id 1 is still in flight
  late.exec("COMMIT");
  EXPECT_EQ(rows_of(queue.take(1)), (std::vector<int>{1}));

  // A rolled-back id below shipped ones does not hold up what follows.
  PgSession undone(db_->conninfo());
  undone.exec("BEGIN; INSERT INTO t VALUES (4)");
  sql().exec("INSERT INTO t VALUES (5)");
  EXPECT_EQ(rows_of(queue.take(1)), (std::vector<int>{5}));
  undone.exec("ROLLBACK");
  sql().exec("INSERT INTO t VALUES (6)");
  EXPECT_EQ(rows_of(queue.take(1)), (std::vector<int>{6}));

  // Late commits while an older transaction keeps every gap open.
  PgSession old_tx(db_->conninfo());
  old_tx.exec("BEGIN; SELECT pg_current_xact_id()");
  late.exec("BEGIN; INSERT INTO t VALUES (7)");
  sql().exec("INSERT INTO t SELECT g FROM generate_series(8, 10) g");
  EXPECT_EQ(rows_of(queue.take(3)), (std::vector<int>{8, 9, 10}));
  std::this_thread::sleep_for(300ms);
  late.exec("COMMIT");
  EXPECT_EQ(rows_of(queue.take(1)), (std::vector<int>{7}));
  old_tx.exec("COMMIT");

  wait_outbox_empty(sql());
  EXPECT_EQ(queue.remaining(), 0u);
}

// Writers commit and roll back out of id order while two old transactions, one that
// commits and one that rolls back, keep every gap open until the end: every committed row
// is shipped exactly once and nothing else is.
TEST_F(OutboxRead, ConcurrentWritersWithRollbacksAndLateCommitsLoseNothing) {
  TestQueue queue(exchange_->name(), {"public.t"});
  auto pub = publisher();
  PgSession old_commit(db_->conninfo()), old_rollback(db_->conninfo());
  old_commit.exec("BEGIN; INSERT INTO t VALUES (-1)");
  old_rollback.exec("BEGIN; INSERT INTO t VALUES (-2)");

  constexpr int kWriters = 4;
  auto until = std::chrono::steady_clock::now() + 4s;
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      try {
        PgSession s(db_->conninfo());
        std::mt19937 random(static_cast<unsigned>(w) + 7);
        int next = (w + 1) * 1000000;
        while (std::chrono::steady_clock::now() < until) {
          int rows = 1 + static_cast<int>(random() % 3);
          std::string values;
          for (int i = 0; i < rows; ++i) values += (i ? ", (" : "(") + std::to_string(next++) + ")";
          s.exec("BEGIN; INSERT INTO t VALUES " + values);
          std::this_thread::sleep_for(std::chrono::milliseconds(random() % 8));
          s.exec(random() % 10 < 3 ? "ROLLBACK" : "COMMIT");
        }
      } catch (const std::exception& e) {
        ++failures;
        ADD_FAILURE() << "writer " << w << ": " << e.what();
      }
    });
  }
  for (auto& t : writers) t.join();
  ASSERT_EQ(failures.load(), 0);
  old_rollback.exec("ROLLBACK");
  old_commit.exec("COMMIT");

  std::set<int> committed;
  for (const auto& row : sql().query("SELECT id FROM t")) committed.insert(std::stoi(*row[0]));
  ASSERT_TRUE(committed.count(-1));
  std::vector<int> shipped = rows_of(queue.take(committed.size(), 60s));
  wait_outbox_empty(sql());
  EXPECT_EQ(queue.remaining(), 0u) << "more messages than committed rows";
  EXPECT_EQ(std::set<int>(shipped.begin(), shipped.end()), committed);
  EXPECT_EQ(shipped.size(), committed.size()) << "a row was shipped twice";
}

// The captures read the idle flag from the sequence pgfanout.publisher_idle, which a
// trigger on publisher_state turns with setval, and setval is not transactional: a flip
// rolled back (the publisher's statement cut off with its connection) leaves the sequence
// turned while the table says otherwise. An idle publisher puts it back when it next sets
// the flag, so its writers NOTIFY again; before, it stayed turned until a poll found a
// change and the flag flipped twice.
TEST_F(OutboxRead, AnIdleFlagFlipRolledBackIsPutRightByTheIdlePublisher) {
  TestQueue queue(exchange_->name(), {"public.t"});
  auto flag = [&] { return sql().integer("SELECT pg_sequence_last_value('pgfanout.publisher_idle')"); };
  // The flag's row as install.sql left it (idle); the publisher, once it has shipped a
  // change, has updated it twice (busy, then idle again).
  const auto installed = sql().value("SELECT xmin::text FROM pgfanout.publisher_state");
  auto pub = publisher();
  sql().exec("INSERT INTO t VALUES (1)");
  EXPECT_EQ(rows_of(queue.take(1)), (std::vector<int>{1}));
  eventually(
      [&] {
        return sql().value("SELECT CASE WHEN idle THEN xmin::text END FROM pgfanout.publisher_state") != installed &&
               sql().value("SELECT idle::text FROM pgfanout.publisher_state") == "true" && flag() == 1;
      },
      20s, "the publisher to go idle after shipping");

  // Stopped meanwhile, so that it cannot set the flag between the rollback and the check.
  // A statement it sent just before may still run after the rollback (and put the
  // sequence right): roll back again until the flag stays turned.
  pub.signal(SIGSTOP);
  eventually(
      [&] {
        sql().exec("BEGIN; UPDATE pgfanout.publisher_state SET idle = false; ROLLBACK");
        return sql().value("SELECT idle::int || ',' || pg_sequence_last_value('pgfanout.publisher_idle') "
                           "FROM pgfanout.publisher_state") == "1,0";
      },
      10s, "a rolled-back flip to leave the sequence turned (setval is not transactional)");
  pub.signal(SIGCONT);

  eventually([&] { return flag() == 1; }, 20s,
             "the idle publisher to put the idle flag's sequence back to 1 (writers NOTIFY only then)");
  sql().exec("INSERT INTO t VALUES (2)");
  EXPECT_EQ(rows_of(queue.take(1)), (std::vector<int>{2}));
}

// The outbox's primary-key index keeps an entry for every shipped (deleted) change until
// vacuum removes it, and vacuum cannot while an older transaction runs. A read from the
// lowest id walks all of those entries, every time (idx_tup_read counts them); a read
// from after the last change read does not.
TEST_F(OutboxRead, ReadsDoNotWalkOverShippedChangesWhileVacuumIsHeldBack) {
  TestQueue queue(exchange_->name(), {"public.t"});
  PgSession old_tx(db_->conninfo());
  old_tx.exec("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT pg_current_xact_id()");
  auto pub = publisher({"--pack", "100"});
  constexpr int kShipped = 5000;
  sql().exec("INSERT INTO t SELECT g FROM generate_series(1, " + std::to_string(kShipped) + ") g");
  queue.take(kShipped / 100);
  wait_outbox_empty(sql());

  auto index_stats = [&] {
    auto row = sql().query(
        "SELECT idx_scan, idx_tup_read FROM pg_stat_user_indexes "
        "WHERE relid = 'pgfanout.changes'::regclass AND indexrelname = 'changes_pkey'");
    if (row.size() != 1) throw std::runtime_error("no statistics for changes_pkey");
    return std::pair<std::int64_t, std::int64_t>{std::stoll(*row[0][0]), std::stoll(*row[0][1])};
  };
  // Let the publisher's statistics of the reads so far reach the shared counters (a
  // backend reports them at most once a second; the idle publisher reads twice a second).
  std::this_thread::sleep_for(2500ms);
  auto before = index_stats();
  for (int i = 1; i <= 10; ++i) {
    sql().exec("INSERT INTO t VALUES (" + std::to_string(kShipped + i) + ")");
    queue.take(1);
  }
  std::pair<std::int64_t, std::int64_t> after;
  eventually(
      [&] {
        after = index_stats();
        return after.first >= before.first + 10;  // this window's reads have been reported
      },
      20s, "the publisher's index scans of the outbox to show in pg_stat_user_indexes");
  EXPECT_LT(after.second - before.second, kShipped)
      << "index entries read by " << after.first - before.first << " reads of the outbox";
  old_tx.exec("COMMIT");
}

// Autovacuum comes once a minute at most (autovacuum_naptime), and the outbox grows by
// every change deleted in between; the publisher vacuums it after every 20,000 it deleted.
// On PostgreSQL 15 only the outbox's owner, the database's owner or a superuser may
// (README "Security" says why the least-privilege publisher is none of them).
TEST_F(OutboxRead, ThePublisherVacuumsTheOutboxAsItDeletesChanges) {
  TestQueue queue(exchange_->name(), {"public.t"});
  auto vacuums = [&] {
    return sql().integer("SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'pgfanout.changes'::regclass");
  };
  auto dead = [&] {
    return sql().integer("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'pgfanout.changes'::regclass");
  };
  ASSERT_EQ(vacuums(), 0);
  auto pub = publisher({"--pack", "100"}, RunAs::superuser);
  constexpr int kChanges = 45000;
  for (int first = 1; first <= kChanges; first += 5000) {
    sql().exec("INSERT INTO t SELECT g FROM generate_series(" + std::to_string(first) + ", " +
               std::to_string(first + 4999) + ") g");
  }
  queue.take(kChanges / 100, 60s);
  wait_outbox_empty(sql());
  eventually([&] { return vacuums() >= 1; }, 20s, "a VACUUM of pgfanout.changes by the publisher");
  EXPECT_LT(dead(), kChanges) << "the vacuum removed none of the deleted changes";
  EXPECT_EQ(queue.remaining(), 0u);
}

}  // namespace
}  // namespace pgfanout::test
