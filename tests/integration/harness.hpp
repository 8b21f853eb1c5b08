#pragma once

// Shared helpers for pgfanout's integration tests: real PostgreSQL and RabbitMQ servers
// (started by `scripts/servers.sh start`, found through `.run/env`), real pgfanout
// processes.
//
// Rules every helper here keeps, so that tests can rely on them:
//   - Nothing waits without a bound. Every wait takes a timeout (default kPatience) and,
//     when it runs out, throws HarnessError saying what it waited for and what it saw
//     last. GoogleTest reports the exception as the test's failure and moves on.
//   - Nothing is left behind: databases, queues, exchanges and child processes are owned
//     by RAII objects that remove them (processes by PID: SIGKILL, then reaped), and
//     their names are unique per test process and per object.
//   - A missing PGFANOUT_TEST_* variable is a failure with instructions, never a skip.
//   - One test at a time per set of servers: every program linked with the harness holds
//     an exclusive flock on $PGFANOUT_RUN_DIR/integration-tests.lock while its tests run
//     (a GoogleTest global environment; ctest runs one test per process), so tests from
//     concurrent ctest runs, other build directories or a shell never overlap, and one
//     that stops a server cannot break another. It waits up to 150 s for the lock.
//
// Helpers throw HarnessError (or let a server's own error through) instead of using
// ASSERT_*, so they can be used anywhere, including in fixtures and lambdas.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "pgfanout/amqp_connection.hpp"

namespace pgfanout::test {

/// How long any helper waits by default before declaring failure: generous, since a
/// loaded 2-core machine is slow, and only ever spent when something is wrong.
inline constexpr std::chrono::milliseconds kPatience{30000};

/// A helper could not do what it was asked (a server refused, a wait timed out, a
/// required environment variable is missing). The message says what and why.
class HarnessError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A statement failed on the server; what() holds PostgreSQL's message (and hint).
class SqlError : public HarnessError {
 public:
  SqlError(const std::string& message, std::string sqlstate)
      : HarnessError(message), sqlstate_(std::move(sqlstate)) {}
  /// The SQLSTATE, e.g. "P0001" for RAISE EXCEPTION, "42P01" for an unknown table.
  const std::string& sqlstate() const { return sqlstate_; }

 private:
  std::string sqlstate_;
};

// ---------------------------------------------------------------------------------------
// Environment and paths

/// The value of a required environment variable; throws HarnessError naming it and
/// explaining how to start the test servers when it is unset or empty.
std::string required_env(const char* name);

/// Superuser conninfo of the test cluster's `postgres` database (PGFANOUT_TEST_PG).
std::string pg_admin_conninfo();
/// URL of the test RabbitMQ node (PGFANOUT_TEST_AMQP), as the programs' --amqp takes it.
std::string amqp_url();

/// Paths baked in at build time: the programs under test, the repository's sql/ directory
/// and the directory where process logs go (build/test-logs/<suite>.<test>/).
std::string publisher_binary();
std::string listener_binary();
std::string sql_dir();
/// The log directory of the currently running test (created on demand).
std::string test_log_dir();

/// A name no other test (in this or any concurrent test process) uses:
/// `<prefix>_<pid>_<n>_<random>`, lower-case ASCII letters, digits and '_', at most 63
/// bytes, so it fits a PostgreSQL identifier, a queue and an exchange name alike.
std::string unique_name(std::string_view prefix);

/// `base` (key=value conninfo or postgres:// URI) pointed at database `dbname`.
std::string conninfo_for(const std::string& base, const std::string& dbname);

// ---------------------------------------------------------------------------------------
// Polling

namespace detail {
template <class T>
std::string describe(const T& value);

template <class T>
std::string describe_one(const T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    return value ? "true" : "false";
  } else if constexpr (requires(std::ostream& os) { os << value; }) {
    std::ostringstream s;
    s << value;
    return s.str();
  } else if constexpr (requires { value.has_value(); *value; }) {
    return value.has_value() ? describe(*value) : std::string("(none)");
  } else if constexpr (requires { value.begin(); value.end(); value.size(); }) {
    std::string out = "[";
    std::size_t shown = 0;
    for (const auto& item : value) {
      if (shown) out += ", ";
      if (++shown > 20) {
        out += "... (" + std::to_string(value.size()) + " in all)";
        break;
      }
      out += describe(item);
    }
    return out + "]";
  } else {
    return "(a value that cannot be printed)";
  }
}
template <class T>
std::string describe(const T& value) {
  return describe_one(value);
}

[[noreturn]] void eventually_failed(std::string_view what, std::chrono::milliseconds timeout,
                                    const std::string& last);
}  // namespace detail

/// Calls `observe()` every `interval` until `accept(value)` holds and returns that value.
/// An exception thrown by `observe` counts as "not yet" (a server may be restarting) and
/// is what is reported as the last observation. After `timeout`, throws HarnessError:
/// "timed out after N s waiting for <what>; last observed: <value or exception>".
template <class Observe, class Accept>
auto eventually_value(Observe&& observe, Accept&& accept, std::chrono::milliseconds timeout,
                      std::string_view what,
                      std::chrono::milliseconds interval = std::chrono::milliseconds(50))
    -> std::invoke_result_t<Observe&> {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last = "(nothing observed yet)";
  for (;;) {
    try {
      auto value = observe();
      if (accept(value)) return value;
      last = detail::describe(value);
    } catch (const std::exception& e) {
      last = std::string("exception: ") + e.what();
    }
    if (std::chrono::steady_clock::now() >= deadline) detail::eventually_failed(what, timeout, last);
    std::this_thread::sleep_for(interval);
  }
}

/// Polls `predicate` (every 50 ms) until it returns true; throws HarnessError naming
/// `what` after `timeout`. Exceptions from the predicate count as false and the last one
/// is reported.
void eventually(const std::function<bool()>& predicate, std::chrono::milliseconds timeout,
                std::string_view what);

// ---------------------------------------------------------------------------------------
// Processes

/// Extra environment for a child: (name, value) pairs set on top of the inherited ones.
using EnvVars = std::vector<std::pair<std::string, std::string>>;

/// What a finished command printed and how it ended. `exit_code` is the exit status, or
/// 128 + the signal number when a signal ended it (the shell's convention).
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

/// Runs `argv` (argv[0] is looked up in PATH when it has no '/') to completion with stdin
/// from /dev/null and captures stdout and stderr apart. Throws HarnessError when it
/// cannot start or does not finish within `timeout` (it is then SIGKILLed and reaped).
/// Inherited PGFANOUT_* variables other than PGFANOUT_TEST_* are removed, as for Process.
CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = kPatience, const EnvVars& env = {});

/// A child process under test. Started with fork/exec: stdin from /dev/null, stdout and
/// stderr together into a log file under test_log_dir(), no inherited descriptors beyond
/// 0-2, inherited environment minus the programs' own PGFANOUT_* variables (so that a
/// developer's shell cannot change a test) plus `env`. The child gets SIGKILL if the test
/// process dies (PR_SET_PDEATHSIG), so a crashed or timed-out test leaks no process.
/// Destruction SIGKILLs the child if it still runs and reaps it; if the current test has
/// failed, the last lines of its log are printed to help the diagnosis.
class Process {
 public:
  Process(std::string binary, std::vector<std::string> args, EnvVars env = {});
  ~Process();
  Process(Process&& other) noexcept;
  Process& operator=(Process&&) = delete;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  /// Sends `sig` to the child (no-op once it has been reaped).
  void signal(int sig);
  /// Waits up to `timeout` for the child to exit; its exit code (128 + signal if a signal
  /// ended it), or nullopt if it still runs. Once reaped, keeps returning the same code.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  /// True while the child has not exited.
  bool running();
  /// SIGKILL and reap (what the destructor does); returns the exit code.
  int kill();
  /// SIGTERM, then wait_exit(timeout); SIGKILL if it did not exit. Returns the exit code
  /// of the graceful exit, or nullopt when it had to be killed.
  std::optional<int> stop(std::chrono::milliseconds timeout = kPatience);

  const std::string& log_path() const { return log_path_; }
  /// Everything the child has written so far.
  std::string log() const;
  /// Waits until the log contains `needle`; throws HarnessError (with the log's tail) if
  /// it does not within `timeout` or if the child exits first.
  void wait_for_log(std::string_view needle, std::chrono::milliseconds timeout = kPatience);
  /// Number of occurrences of `needle` in the log so far (to wait for the next one).
  std::size_t count_in_log(std::string_view needle) const;

 private:
  std::string name_;
  std::string log_path_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

/// Which PostgreSQL role a program under test connects as. The chain runs as the
/// least-privilege roles of sql/roles.sql (README "Security"): the publisher as
/// kPublisherRole, the listener as kListenerRole on its replica and as kSnapshotRole on
/// its --source. A test that needs what only a superuser (or the outbox's owner) may do,
/// such as VACUUM of the outbox, asks for the superuser.
enum class RunAs { least_privilege, superuser };
inline constexpr const char* kPublisherRole = "pgfanout_publisher";
inline constexpr const char* kListenerRole = "pgfanout_listener";
inline constexpr const char* kSnapshotRole = "pgfanout_snapshot";

/// `base` (key=value conninfo or postgres:// URI) connecting as role `user`.
std::string conninfo_as(const std::string& base, const std::string& user);

/// Starts pgfanout-publisher on `source` with the test broker and `--exchange exchange`,
/// at log level debug, plus `extra` flags (e.g. {"--pack", "10"}). It connects as
/// kPublisherRole, whose grants install_schema() made (or as `source`'s own user).
Process start_publisher(const std::string& source, const std::string& exchange,
                        std::vector<std::string> extra = {}, RunAs run_as = RunAs::least_privilege);

/// Starts pgfanout-listener on `target` consuming `queue` bound to `exchange` of the test
/// broker, at log level debug, plus `extra` flags (e.g. {"--tables", "public.*"}). It
/// connects as kListenerRole: a `target` on the test cluster first gets sql/roles.sql's
/// replica grants on all its schemas (and default privileges for the tables the test
/// creates later); a `--source` in `extra` gets the primary's grants and kSnapshotRole.
Process start_listener(const std::string& target, const std::string& queue,
                       const std::string& exchange, std::vector<std::string> extra = {},
                       RunAs run_as = RunAs::least_privilege);

// ---------------------------------------------------------------------------------------
// PostgreSQL

/// Result rows as text, NULL as nullopt.
using Row = std::vector<std::optional<std::string>>;
using Rows = std::vector<Row>;

/// One autocommit connection (libpqxx) for a test's own SQL. Each exec/query is one
/// simple-protocol round trip, so a string may hold several statements (a BEGIN ...
/// COMMIT block too). A failed statement throws SqlError with the server's message; a
/// lost connection throws HarnessError and the next call connects again.
class PgSession {
 public:
  explicit PgSession(const std::string& conninfo);
  ~PgSession();
  PgSession(PgSession&&) noexcept;
  PgSession& operator=(PgSession&&) noexcept;

  /// Runs `sql`; returns the rows of its last statement.
  Rows query(std::string_view sql);
  void exec(std::string_view sql) { query(sql); }
  /// The only value of a one-row, one-column result (nullopt for NULL); throws otherwise.
  std::optional<std::string> value(std::string_view sql);
  /// value() as an integer (e.g. a count); throws on NULL.
  std::int64_t integer(std::string_view sql);
  const std::string& conninfo() const { return conninfo_; }

 private:
  struct Impl;
  std::string conninfo_;
  std::unique_ptr<Impl> impl_;
};

/// A write load: runs `statement(i)` for i = 0, 1, 2, ... on `conninfo`, one round trip
/// each, from a thread of its own until stopped, with `pause` between statements. It rides
/// over servers that go away (a failover, a restart): after a failed statement it waits
/// 100 ms, connects again and goes on with the next i. commits() counts the statements
/// that succeeded.
class BackgroundWriter {
 public:
  BackgroundWriter(std::string conninfo, std::function<std::string(std::int64_t)> statement,
                   std::chrono::milliseconds pause = std::chrono::milliseconds(0));
  ~BackgroundWriter();
  BackgroundWriter(const BackgroundWriter&) = delete;
  BackgroundWriter& operator=(const BackgroundWriter&) = delete;
  /// Stops after the statement in flight; idempotent.
  void stop();
  std::int64_t commits() const { return commits_; }

 private:
  std::string conninfo_;
  std::function<std::string(std::int64_t)> statement_;
  std::chrono::milliseconds pause_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::int64_t> commits_{0};
  std::thread thread_;
};

/// `text` as a SQL string literal ('it''s'), for building test SQL.
std::string sql_literal(std::string_view text);

/// A database of its own on the test cluster: created (empty, from template0, UTF8) with a
/// unique name by the constructor, dropped WITH (FORCE) by the destructor, which also
/// ends sessions still connected to it. Databases leaked by test processes that no
/// longer run are dropped when the next one is created.
class ScratchDatabase {
 public:
  /// A database in `encoding` (any but UTF8 with the C locale).
  explicit ScratchDatabase(std::string_view prefix = "pgft", std::string_view encoding = "UTF8");
  ~ScratchDatabase();
  ScratchDatabase(const ScratchDatabase&) = delete;
  ScratchDatabase& operator=(const ScratchDatabase&) = delete;

  const std::string& name() const { return name_; }
  /// Conninfo of this database as the superuser of the test cluster.
  const std::string& conninfo() const { return conninfo_; }
  /// A fresh autocommit session on it.
  PgSession session() const { return PgSession(conninfo_); }

 private:
  std::string name_;
  std::string conninfo_;
};

/// Runs `psql -X -v ON_ERROR_STOP=1 -f <file>` on `conninfo`; the result is returned
/// whatever the exit code (check it yourself, or use install_schema for the usual case).
CommandResult psql_file(const std::string& conninfo, const std::string& file);
/// Runs `psql -X -v ON_ERROR_STOP=1 -c <sql>` on `conninfo` and returns the result.
CommandResult psql_command(const std::string& conninfo, const std::string& sql);
/// The capture mode the suite runs in: PGFANOUT_TEST_CAPTURE=logical makes install_schema
/// switch every primary to the logical capture (README, "Tests"); trigger otherwise.
bool logical_capture();
/// Runs sql/install.sql on `conninfo`, then sql/roles.sql for the primary (roles with
/// LOGIN, as the test cluster trusts local connections), then, when the suite runs in
/// logical mode, pgfanout.set_capture('logical'); throws HarnessError with psql's stderr
/// on failure.
void install_schema(const std::string& conninfo);
/// Runs sql/roles.sql on `conninfo` with `-v side=<side>` and the psql variables `vars`
/// ("name=value"), login=on; throws HarnessError with psql's stderr on failure.
void grant_roles(const std::string& conninfo, const std::string& side,
                 const std::vector<std::string>& vars = {});
/// Runs sql/uninstall.sql on `conninfo`; throws HarnessError with psql's stderr on failure.
void uninstall_schema(const std::string& conninfo);

/// md5 of a table's rows in primary-key order:
/// SELECT md5(string_agg(t::text, '|' ORDER BY <order_by>)) FROM <table> t.
/// `table` is spliced as given (quote it yourself); nullopt for an empty table.
std::optional<std::string> table_md5(PgSession& db, std::string_view table, std::string_view order_by);
/// Rows in pgfanout.changes, the outbox.
std::int64_t outbox_count(PgSession& db);
/// Changes captured and not shipped while no publisher runs: the outbox's rows, and in
/// logical mode the row changes the slot holds (peeked, so they stay; `db` must be a
/// superuser's session).
std::int64_t pending_changes(PgSession& db);
/// Waits until everything captured so far is shipped: pgfanout.changes is empty, and in
/// logical mode the slot's confirmed position has reached the WAL written before the
/// call; throws with what is left.
void wait_outbox_empty(PgSession& db, std::chrono::milliseconds timeout = kPatience);

// ---------------------------------------------------------------------------------------
// RabbitMQ

/// Queue arguments a test may ask for.
struct QueueOptions {
  /// x-single-active-consumer, as pgfanout-listener declares its queue.
  bool single_active_consumer = false;
  /// x-max-length: the most ready messages the queue holds.
  std::optional<std::int64_t> max_length;
  /// x-overflow = reject-publish: beyond max_length the broker nacks publishes (a way to
  /// make the broker refuse a publisher without stopping it).
  bool reject_publish = false;
  /// x-expires: the broker deletes the queue after this long unused, in case a test
  /// process dies before its destructor runs. 0 = never (needed for a queue that
  /// pgfanout-listener declares too: arguments must match).
  std::chrono::milliseconds expires{std::chrono::minutes(10)};

  /// The arguments pgfanout-listener uses, so that both may declare the queue.
  static QueueOptions listener_compatible() {
    QueueOptions o;
    o.single_active_consumer = true;
    o.expires = std::chrono::milliseconds(0);
    return o;
  }
  /// The arguments of QUEUE.dead as pgfanout-listener declares it.
  static QueueOptions dead_letter_compatible() {
    QueueOptions o;
    o.expires = std::chrono::milliseconds(0);
    return o;
  }
};

/// A durable topic exchange with a unique name, declared on construction (as
/// pgfanout-publisher declares it) and deleted on destruction.
class TestExchange {
 public:
  explicit TestExchange(std::string_view prefix = "pgft_x");
  ~TestExchange();
  TestExchange(const TestExchange&) = delete;
  TestExchange& operator=(const TestExchange&) = delete;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

/// A durable queue with a unique name (or the given one), bound to `exchange` with each
/// of `patterns`, deleted on destruction. Messages are read one at a time with a
/// timeout and acked as they are handed out; reads survive a broker restart (the
/// consumer reconnects within the same deadline).
class TestQueue {
 public:
  TestQueue(const std::string& exchange, const std::vector<std::string>& patterns,
            QueueOptions options = {}, std::string name = {});
  ~TestQueue();
  TestQueue(const TestQueue&) = delete;
  TestQueue& operator=(const TestQueue&) = delete;

  const std::string& name() const { return name_; }

  /// The next message, acked, or nullopt if none arrived within `timeout`.
  std::optional<Delivery> next(std::chrono::milliseconds timeout = kPatience);
  /// Exactly the next `n` messages, in queue order; throws HarnessError listing what did
  /// arrive if fewer than `n` come within `timeout`.
  std::vector<Delivery> take(std::size_t n, std::chrono::milliseconds timeout = kPatience);
  /// How many messages are still in the queue: closes this reader's consumer first, so
  /// messages delivered to it but not yet handed out count too. Once the publisher's
  /// outbox is empty, every message it shipped is in the queue, so `remaining() == 0`
  /// after take(n) proves that exactly n were shipped, without waiting for silence.
  std::uint32_t remaining();
  /// Drops every ready message.
  void purge();

 private:
  void close_consumer();
  std::string name_;
  std::unique_ptr<AmqpConnection> consumer_;
};

/// The value of header `key` of a delivery as text (a number in decimal), or
/// "(no KEY header)" when it has none.
std::string header_text(const Delivery& d, std::string_view key);

/// Deletes a queue / an exchange if it exists (used by the destructors above; for names a
/// program under test declared, e.g. a listener's queue and its QUEUE.dead).
void delete_queue(const std::string& name);
void delete_exchange(const std::string& name);
/// Ready messages in an existing queue; throws HarnessError if it does not exist.
std::uint32_t queue_depth(const std::string& name);

/// Waits until the publisher has shipped every change written to `primary` so far (its
/// outbox is empty) and the listener of `replica` has applied up to the last change id,
/// or until something reached `dead_queue` (the caller checks that it is empty).
void wait_applied(PgSession& primary, PgSession& replica, const std::string& dead_queue,
                  std::chrono::milliseconds timeout = kPatience);
/// Publishes one persistent message with publisher confirms and waits for the confirm,
/// as a test-only publisher (e.g. for bad messages). Throws HarnessError on a nack.
void publish_message(const std::string& exchange, const std::string& routing_key,
                     const std::string& body, const Headers& headers = {},
                     const std::string& message_id = {});

// ---------------------------------------------------------------------------------------
// Server control (the shared servers: use inside tests that hold the integration lock)

/// Runs the test node's rabbitmqctl wrapper (PGFANOUT_TEST_RABBITMQCTL) with `args`.
CommandResult rabbitmqctl(const std::vector<std::string>& args,
                          std::chrono::milliseconds timeout = std::chrono::seconds(90));
/// Runs the test cluster's pg_ctl wrapper (PGFANOUT_TEST_PG_CTL) with `args`.
CommandResult pg_ctl(const std::vector<std::string>& args,
                     std::chrono::milliseconds timeout = std::chrono::seconds(90));

/// Waits until an AMQP login to the test broker succeeds / a connection to the test
/// cluster succeeds.
void wait_for_broker(std::chrono::milliseconds timeout = std::chrono::seconds(60));
void wait_for_postgres(std::chrono::milliseconds timeout = std::chrono::seconds(60));

/// A test server stopped for the lifetime of this object, or until start(). The destructor
/// always starts it again and waits until it is ready, whatever the test did, so one test
/// cannot break the next. A stop that fails starts it again too (half stopped is the worst
/// state to leave behind) and throws.
class ServerStopped {
 public:
  ~ServerStopped();
  ServerStopped(const ServerStopped&) = delete;
  ServerStopped& operator=(const ServerStopped&) = delete;
  /// Starts the server, then waits until it is ready. Idempotent.
  void start();

 protected:
  struct Control {
    std::string name;                      // for messages, e.g. "the test broker"
    std::function<CommandResult()> stop;   // exit code 0 when stopped
    std::function<CommandResult()> start;  // exit code 0 when started
    std::function<void()> wait_ready;
  };
  explicit ServerStopped(Control control);

 private:
  Control control_;
  bool stopped_ = false;
};

/// The broker application stopped (`rabbitmqctl stop_app`: every connection dropped, the
/// port closed, durable queues and persistent messages kept); start() is
/// `rabbitmqctl start_app` and waits until it accepts logins.
class BrokerStopped : public ServerStopped {
 public:
  BrokerStopped();
};

/// The PostgreSQL cluster stopped (`pg_ctl stop -m <mode>`; "immediate" is a crash);
/// start() is `pg_ctl start -w` and waits until it accepts connections.
class PostgresStopped : public ServerStopped {
 public:
  explicit PostgresStopped(std::string_view mode = "fast");
};

// ---------------------------------------------------------------------------------------
// HTTP (--metrics)

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0 and closed again).
int free_port();
/// GET http://127.0.0.1:port/path (HTTP/1.0); the body. Throws HarnessError on a refused
/// connection, a timeout (5 s) or a status other than 200.
std::string http_get(int port, const std::string& path);

// ---------------------------------------------------------------------------------------
// A relay to the broker

/// A TCP relay to the test broker on a loopback port, on a thread of its own, that can go
/// silent: frozen, it forwards nothing in either direction and closes nothing, like a hung
/// broker node or a dead network path (what only heartbeats reveal); holding uploads, it
/// forwards only what the broker sends, so a client's publishes wait in the relay (a slow
/// path to the broker) while confirms of earlier ones still reach it. Connections accepted
/// meanwhile behave the same. Destruction closes every connection.
class FreezableRelay {
 public:
  FreezableRelay();
  ~FreezableRelay();
  FreezableRelay(const FreezableRelay&) = delete;
  FreezableRelay& operator=(const FreezableRelay&) = delete;

  /// The test broker's URL through this relay, with the given heartbeat (seconds).
  std::string url(int heartbeat) const;
  void freeze() { frozen_ = true; }
  void hold_uploads() { holding_ = true; }
  /// Forwards everything again, what was held first.
  void thaw() {
    frozen_ = false;
    holding_ = false;
  }
  /// Bytes that clients sent and the relay holds (while frozen or holding uploads).
  std::size_t held_upload_bytes() const { return held_; }
  /// While on, the content header of every message the broker returns (basic.return) is
  /// mangled on its way to the client (sent as a body frame), so that the client's read
  /// of the returned message fails while its connection stays up. Counts the ones mangled.
  void mangle_returns(bool on) { mangle_returns_ = on; }
  std::size_t returns_mangled() const { return mangled_; }

 private:
  void run();
  void accept_one();

  std::uint32_t upstream_address_ = 0;  // IPv4, network byte order
  std::uint16_t upstream_port_ = 0;     // network byte order
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> frozen_{false};
  std::atomic<bool> holding_{false};
  std::atomic<std::size_t> held_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> mangle_returns_{false};
  std::atomic<std::size_t> mangled_{0};
  std::vector<std::pair<int, int>> pairs_;  // (client, broker), touched by the relay thread only
  /// Per broker socket: bytes received but not yet forwarded (an incomplete frame), and
  /// whether the next content header is a returned message's.
  struct Downstream {
    std::string pending;
    bool after_return = false;
  };
  std::map<int, Downstream> downstream_;
  /// Forwards what `broker` sent, frame by frame (mangling returns when asked); false when
  /// the client is gone.
  bool forward_frames(int broker, int client, const char* data, std::size_t size);
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------
// A whole chain

/// A primary and one replica (each created with `tables_sql`), `tracked` tracked on the
/// primary, a listener consuming for the replica (started and consuming) and a publisher
/// (--pack 10), for focused end-to-end tests.
struct SmallChain {
  SmallChain(const std::string& tables_sql, const std::vector<std::string>& tracked);
  /// Waits until everything written so far has reached the replica, or was dead-lettered.
  void wait_applied();

  ScratchDatabase primary_db{"pgft_chain_p"};
  ScratchDatabase replica_db{"pgft_chain_r"};
  PgSession primary = primary_db.session();
  PgSession replica = replica_db.session();
  TestExchange exchange{"pgft_chain_x"};
  TestQueue queue{exchange.name(), {}, QueueOptions::listener_compatible()};
  TestQueue dead{exchange.name(), {}, QueueOptions::dead_letter_compatible(), queue.name() + ".dead"};
  std::optional<Process> listener;
  std::optional<Process> publisher;
};

}  // namespace pgfanout::test
