#include "harness.hpp"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <pqxx/pqxx>
#include <random>
#include <regex>

#include "pgfanout/amqp_url.hpp"
#include "pgfanout/pg_connection.hpp"

extern char** environ;

namespace pgfanout::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------
// Environment and paths

std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    throw HarnessError(std::string(name) +
                       " is not set: the integration tests need the test servers. From the "
                       "repository root run `scripts/servers.sh start` and then "
                       "`source .run/env` in the shell that runs ctest.");
  }
  return value;
}

std::string pg_admin_conninfo() { return required_env("PGFANOUT_TEST_PG"); }
std::string amqp_url() { return required_env("PGFANOUT_TEST_AMQP"); }
std::string publisher_binary() { return PGFANOUT_TEST_PUBLISHER_BIN; }
std::string listener_binary() { return PGFANOUT_TEST_LISTENER_BIN; }
std::string sql_dir() { return PGFANOUT_TEST_SQL_DIR; }

std::string test_log_dir() {
  std::string leaf = "outside-tests";
  if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
    leaf = std::string(info->test_suite_name()) + "." + info->name();
    for (char& c : leaf) {
      if (c == '/') c = '_';
    }
  }
  fs::path dir = fs::path(PGFANOUT_TEST_LOG_DIR) / leaf;
  fs::create_directories(dir);
  return dir.string();
}

std::string unique_name(std::string_view prefix) {
  static std::atomic<unsigned> counter{0};
  static const unsigned salt = std::random_device{}() & 0xffffff;
  std::string clean;
  for (char c : prefix) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u)) {
      clean += static_cast<char>(std::tolower(u));
    } else {
      clean += '_';
    }
  }
  char tail[64];
  std::snprintf(tail, sizeof tail, "_%d_%u_%06x", static_cast<int>(::getpid()), ++counter, salt);
  std::size_t room = 63 - std::strlen(tail);
  if (clean.size() > room) clean.resize(room);
  return clean + tail;
}

std::string conninfo_for(const std::string& base, const std::string& dbname) {
  if (base.starts_with("postgresql://") || base.starts_with("postgres://")) {
    // Query parameters override the URI's path.
    std::string encoded;
    for (unsigned char c : dbname) {
      if (std::isalnum(c) || c == '_' || c == '-' || c == '.') {
        encoded += static_cast<char>(c);
      } else {
        char hex[4];
        std::snprintf(hex, sizeof hex, "%%%02X", c);
        encoded += hex;
      }
    }
    return base + (base.find('?') == std::string::npos ? "?" : "&") + "dbname=" + encoded;
  }
  // key=value form: replace the dbname keyword (a later one would win anyway, but one
  // dbname reads better in logs).
  static const std::regex dbname_keyword(R"((^|\s)dbname\s*=\s*('([^'\\]|\\.)*'|\S+))");
  std::string quoted = "'";
  for (char c : dbname) {
    if (c == '\'' || c == '\\') quoted += '\\';
    quoted += c;
  }
  quoted += "'";
  std::string rest = std::regex_replace(base, dbname_keyword, "");
  while (!rest.empty() && rest.back() == ' ') rest.pop_back();
  return (rest.empty() ? "" : rest + " ") + "dbname=" + quoted;
}

// ---------------------------------------------------------------------------------------
// One test at a time on the shared servers

namespace {

std::string server_lock_path() {
  const char* run_dir = std::getenv("PGFANOUT_RUN_DIR");
  return (run_dir && *run_dir) ? std::string(run_dir) + "/integration-tests.lock"
                               : std::string("/tmp/pgfanout-integration-tests.lock");
}

// Holds an exclusive flock for the whole test program (one test, under ctest). The kernel
// drops it when the process ends, however it ends.
class ServerLock : public ::testing::Environment {
 public:
  void SetUp() override {
    const std::string path = server_lock_path();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd_ < 0) {
      GTEST_FAIL() << "cannot open the integration test lock " << path << ": " << std::strerror(errno);
    }
    auto deadline = std::chrono::steady_clock::now() + kLockWait;
    while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) {
        GTEST_FAIL() << "cannot lock " << path << ": " << std::strerror(errno);
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        char holder[64] = {0};
        [[maybe_unused]] auto n = ::pread(fd_, holder, sizeof holder - 1, 0);
        GTEST_FAIL() << "another integration test (pid " << holder << ") has held " << path << " for "
                     << kLockWait.count() << " s; the tests share the servers and run one at a time";
      }
      std::this_thread::sleep_for(50ms);
    }
    std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) == 0) {
      [[maybe_unused]] auto n = ::pwrite(fd_, pid.data(), pid.size(), 0);
    }
  }
  void TearDown() override {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
    fd_ = -1;
  }

 private:
  static constexpr std::chrono::seconds kLockWait{150};
  int fd_ = -1;
};

// Registered before main(): every program linked with the harness takes the lock.
[[maybe_unused]] ::testing::Environment* const server_lock =
    ::testing::AddGlobalTestEnvironment(new ServerLock);

}  // namespace

// ---------------------------------------------------------------------------------------
// Polling

void detail::eventually_failed(std::string_view what, std::chrono::milliseconds timeout,
                               const std::string& last) {
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%.1f", timeout.count() / 1000.0);
  throw HarnessError("timed out after " + std::string(seconds) + " s waiting for " +
                     std::string(what) + "; last observed: " + last);
}

void eventually(const std::function<bool()>& predicate, std::chrono::milliseconds timeout,
                std::string_view what) {
  eventually_value(predicate, [](bool ok) { return ok; }, timeout, what);
}

// ---------------------------------------------------------------------------------------
// Processes

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string tail_lines(const std::string& text, std::size_t lines) {
  std::size_t pos = text.size();
  if (pos > 0 && text.back() == '\n') --pos;
  for (std::size_t n = 0; n < lines; ++n) {
    if (pos == 0) return text;
    auto newline = text.rfind('\n', pos - 1);
    if (newline == std::string::npos) return text;
    pos = newline;
  }
  return text.substr(pos + 1);
}

// The environment of a child: ours without the programs' own settings (PGFANOUT_* other
// than the test variables), plus `extra`.
std::vector<std::string> child_environment(const EnvVars& extra) {
  std::vector<std::string> out;
  for (char** e = environ; *e; ++e) {
    std::string_view entry(*e);
    if (entry.starts_with("PGFANOUT_") && !entry.starts_with("PGFANOUT_TEST_") &&
        !entry.starts_with("PGFANOUT_RUN_DIR=")) {
      continue;
    }
    bool overridden = false;
    for (const auto& [name, value] : extra) {
      if (entry.starts_with(name + "=")) overridden = true;
    }
    if (!overridden) out.emplace_back(entry);
  }
  for (const auto& [name, value] : extra) out.push_back(name + "=" + value);
  return out;
}

void close_inherited_descriptors() {
  if (::close_range(3, ~0U, 0) == 0) return;
  rlimit limit{};
  rlim_t max = (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
                   ? limit.rlim_cur
                   : 65536;
  for (rlim_t fd = 3; fd < max && fd < 65536; ++fd) ::close(static_cast<int>(fd));
}

// Forks and execs argv with stdin from /dev/null and stdout/stderr on the given files.
// Everything the child needs is prepared before fork: a threaded parent's child may only
// call async-signal-safe functions.
pid_t spawn(const std::vector<std::string>& argv, const EnvVars& env, int out_fd, int err_fd) {
  if (argv.empty()) throw HarnessError("spawn: empty command");
  std::vector<std::string> envs = child_environment(env);
  std::vector<char*> args, envp;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (auto& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) throw HarnessError("cannot open /dev/null: " + std::string(std::strerror(errno)));
  const pid_t parent = ::getpid();
  const char* exec_failed = "harness: exec failed\n";
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(null_fd);
    throw HarnessError("fork failed: " + std::string(std::strerror(err)));
  }
  if (pid == 0) {
    // Die with the test process, however it ends (crash, ctest timeout).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(null_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    close_inherited_descriptors();
    ::execvpe(args[0], args.data(), envp.data());
    [[maybe_unused]] auto n = ::write(2, exec_failed, std::strlen(exec_failed));
    ::_exit(127);
  }
  ::close(null_fd);
  return pid;
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Waits for pid with a deadline; nullopt if it still runs.
std::optional<int> wait_pid(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return decode_status(status);
    if (r < 0 && errno != EINTR) throw HarnessError("waitpid failed: " + std::string(std::strerror(errno)));
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

int open_log(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw HarnessError("cannot create " + path + ": " + std::strerror(errno));
  return fd;
}

std::string command_line(const std::string& binary, const std::vector<std::string>& args) {
  std::string line = binary;
  for (const auto& a : args) line += " '" + a + "'";
  return line;
}

std::atomic<unsigned> log_counter{0};

}  // namespace

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                          const EnvVars& env) {
  if (argv.empty()) throw HarnessError("run_command: empty command");
  std::string base = test_log_dir() + "/" + fs::path(argv[0]).filename().string() + "." +
                     std::to_string(++log_counter);
  std::string out_path = base + ".out", err_path = base + ".err";
  int out_fd = open_log(out_path);
  int err_fd = open_log(err_path);
  pid_t pid;
  try {
    pid = spawn(argv, env, out_fd, err_fd);
  } catch (...) {
    ::close(out_fd);
    ::close(err_fd);
    throw;
  }
  ::close(out_fd);
  ::close(err_fd);
  std::optional<int> code = wait_pid(pid, timeout);
  if (!code) {
    ::kill(pid, SIGKILL);
    wait_pid(pid, 60s);
    throw HarnessError("`" + command_line(argv[0], {argv.begin() + 1, argv.end()}) +
                       "` did not finish within " + std::to_string(timeout.count()) +
                       " ms; stderr: " + tail_lines(read_file(err_path), 20));
  }
  return CommandResult{*code, read_file(out_path), read_file(err_path)};
}

Process::Process(std::string binary, std::vector<std::string> args, EnvVars env)
    : name_(fs::path(binary).filename().string()) {
  log_path_ = test_log_dir() + "/" + name_ + "." + std::to_string(++log_counter) + ".log";
  int fd = open_log(log_path_);
  std::string header = "$ " + command_line(binary, args) + "\n";
  [[maybe_unused]] auto n = ::write(fd, header.data(), header.size());
  std::vector<std::string> argv{binary};
  argv.insert(argv.end(), args.begin(), args.end());
  try {
    pid_ = spawn(argv, env, fd, fd);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

Process::Process(Process&& other) noexcept
    : name_(std::move(other.name_)),
      log_path_(std::move(other.log_path_)),
      pid_(std::exchange(other.pid_, -1)),
      exit_code_(other.exit_code_) {}

Process::~Process() {
  if (pid_ <= 0) return;
  try {
    kill();
    if (::testing::Test::HasFailure()) {
      std::cerr << "---- last lines of " << log_path_ << " ----\n"
                << tail_lines(log(), 60) << "---- end of " << name_ << " log ----\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "harness: cleaning up " << name_ << " (pid " << pid_ << "): " << e.what() << "\n";
  }
}

void Process::signal(int sig) {
  if (pid_ > 0 && !exit_code_) ::kill(pid_, sig);
}

std::optional<int> Process::wait_exit(std::chrono::milliseconds timeout) {
  if (exit_code_ || pid_ <= 0) return exit_code_;
  exit_code_ = wait_pid(pid_, timeout);
  return exit_code_;
}

bool Process::running() { return pid_ > 0 && !wait_exit(0ms); }

int Process::kill() {
  if (pid_ <= 0) return -1;
  if (!exit_code_) {
    ::kill(pid_, SIGKILL);
    // SIGKILL cannot be caught; the bound only guards against a process stuck in the kernel.
    if (!wait_exit(60s)) throw HarnessError(name_ + " (pid " + std::to_string(pid_) + ") survived SIGKILL");
  }
  return *exit_code_;
}

std::optional<int> Process::stop(std::chrono::milliseconds timeout) {
  signal(SIGTERM);
  if (auto code = wait_exit(timeout)) return code;
  kill();
  return std::nullopt;
}

std::string Process::log() const { return read_file(log_path_); }

std::size_t Process::count_in_log(std::string_view needle) const {
  std::string text = log();
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

void Process::wait_for_log(std::string_view needle, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (log().find(needle) != std::string::npos) return;
    bool exited = !running();
    if (exited || std::chrono::steady_clock::now() >= deadline) {
      if (log().find(needle) != std::string::npos) return;
      throw HarnessError(name_ + (exited ? " exited (code " + std::to_string(*exit_code_) + ")"
                                         : " did not log it within " +
                                               std::to_string(timeout.count()) + " ms") +
                         " before logging '" + std::string(needle) + "'; log tail:\n" +
                         tail_lines(log(), 30));
    }
    std::this_thread::sleep_for(20ms);
  }
}

std::string conninfo_as(const std::string& base, const std::string& user) {
  if (base.starts_with("postgresql://") || base.starts_with("postgres://")) {
    // Test role names are plain identifiers: nothing to percent-encode.
    return base + (base.find('?') == std::string::npos ? "?" : "&") + "user=" + user;
  }
  static const std::regex user_keyword(R"((^|\s)user\s*=\s*('([^'\\]|\\.)*'|\S+))");
  std::string rest = std::regex_replace(base, user_keyword, "");
  while (!rest.empty() && rest.back() == ' ') rest.pop_back();
  return (rest.empty() ? "" : rest + " ") + "user=" + user;
}

namespace {
// Whether a conninfo points at the test cluster (conninfo_for of its admin conninfo), so
// that roles.sql can be run there; tests also start programs on servers that never answer.
bool on_test_cluster(const std::string& conninfo) {
  std::string base = conninfo_for(pg_admin_conninfo(), "x");
  base = base.substr(0, base.rfind("dbname="));
  return conninfo.starts_with(base);
}
}  // namespace

Process start_publisher(const std::string& source, const std::string& exchange,
                        std::vector<std::string> extra, RunAs run_as) {
  std::vector<std::string> args{
      "--source",    run_as == RunAs::superuser ? source : conninfo_as(source, kPublisherRole),
      "--amqp",      amqp_url(),
      "--exchange",  exchange,
      "--log-level", "debug"};
  args.insert(args.end(), extra.begin(), extra.end());
  return Process(publisher_binary(), std::move(args));
}

Process start_listener(const std::string& target, const std::string& queue,
                       const std::string& exchange, std::vector<std::string> extra, RunAs run_as) {
  if (!fs::exists(listener_binary())) {
    throw HarnessError(listener_binary() + " does not exist: build the listener first");
  }
  std::string as_target = target;
  if (run_as == RunAs::least_privilege) {
    if (on_test_cluster(target)) {
      grant_roles(target, "replica", {"schemas=*"});
      // Tables and schemas the test creates on the replica after this.
      PgSession(target).exec(
          std::string("ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON "
                      "TABLES TO ") +
          kListenerRole + "; ALTER DEFAULT PRIVILEGES GRANT USAGE ON SCHEMAS TO " + kListenerRole);
    }
    as_target = conninfo_as(target, kListenerRole);
    for (std::size_t i = 0; i + 1 < extra.size(); ++i) {
      if (extra[i] != "--source") continue;
      if (on_test_cluster(extra[i + 1])) grant_roles(extra[i + 1], "primary");
      extra[i + 1] = conninfo_as(extra[i + 1], kSnapshotRole);
    }
  }
  std::vector<std::string> args{"--target", as_target,    "--queue", queue,         "--amqp",
                                amqp_url(), "--exchange", exchange,  "--log-level", "debug"};
  args.insert(args.end(), extra.begin(), extra.end());
  return Process(listener_binary(), std::move(args));
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

struct PgSession::Impl {
  std::unique_ptr<pqxx::connection> conn;
};

PgSession::PgSession(const std::string& conninfo) : conninfo_(conninfo), impl_(std::make_unique<Impl>()) {
  try {
    impl_->conn = std::make_unique<pqxx::connection>(conninfo);
  } catch (const std::exception& e) {
    throw HarnessError("cannot connect to PostgreSQL (" + conninfo + "): " + e.what());
  }
}

PgSession::~PgSession() = default;
PgSession::PgSession(PgSession&&) noexcept = default;
PgSession& PgSession::operator=(PgSession&&) noexcept = default;

Rows PgSession::query(std::string_view sql) {
  try {
    // After a server restart the old connection is dead: open a new one.
    if (!impl_->conn || !impl_->conn->is_open()) impl_->conn = std::make_unique<pqxx::connection>(conninfo_);
    pqxx::nontransaction tx(*impl_->conn);
    pqxx::result r = tx.exec(std::string(sql));
    Rows rows;
    rows.reserve(r.size());
    for (const auto& row : r) {
      Row out;
      out.reserve(row.size());
      for (const auto& field : row) {
        if (field.is_null()) {
          out.emplace_back(std::nullopt);
        } else {
          out.emplace_back(std::string(field.c_str(), field.size()));
        }
      }
      rows.push_back(std::move(out));
    }
    return rows;
  } catch (const pqxx::broken_connection& e) {
    impl_->conn.reset();
    throw HarnessError(std::string("PostgreSQL connection lost: ") + e.what());
  } catch (const pqxx::sql_error& e) {
    throw SqlError(std::string(e.what()) + "(in: " + std::string(sql.substr(0, 300)) + ")", e.sqlstate());
  } catch (const HarnessError&) {
    throw;
  } catch (const std::exception& e) {
    throw HarnessError(std::string("SQL failed: ") + e.what());
  }
}

std::optional<std::string> PgSession::value(std::string_view sql) {
  Rows rows = query(sql);
  if (rows.size() != 1 || rows[0].size() != 1) {
    throw HarnessError("expected one value from: " + std::string(sql) + "; got " +
                       std::to_string(rows.size()) + " rows");
  }
  return rows[0][0];
}

std::int64_t PgSession::integer(std::string_view sql) {
  auto v = value(sql);
  if (!v) throw HarnessError("NULL where an integer was expected from: " + std::string(sql));
  return std::stoll(*v);
}

std::string sql_literal(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

namespace {

constexpr const char* kScratchComment = "pgfanout test scratch database of pid ";

// Drops scratch databases whose test process is gone (it crashed or was killed).
void drop_leaked_databases(PgSession& admin) {
  Rows rows = admin.query(
      "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
      "WHERE shobj_description(oid, 'pg_database') LIKE 'pgfanout test scratch database of pid %'");
  for (const auto& row : rows) {
    if (!row[0] || !row[1]) continue;
    pid_t pid = static_cast<pid_t>(std::stol(row[1]->substr(std::strlen(kScratchComment))));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno == EPERM) continue;
    try {
      admin.exec("DROP DATABASE IF EXISTS " + quote_ident(*row[0]) + " WITH (FORCE)");
    } catch (const HarnessError&) {
      // Another test process may be dropping it at the same time.
    }
  }
}

}  // namespace

ScratchDatabase::ScratchDatabase(std::string_view prefix, std::string_view encoding) : name_(unique_name(prefix)) {
  PgSession admin(pg_admin_conninfo());
  drop_leaked_databases(admin);
  admin.exec("CREATE DATABASE " + quote_ident(name_) + " TEMPLATE template0 ENCODING " + sql_literal(encoding) +
             (encoding == "UTF8" ? "" : " LOCALE 'C'"));
  admin.exec("COMMENT ON DATABASE " + quote_ident(name_) + " IS " +
             sql_literal(kScratchComment + std::to_string(::getpid())));
  conninfo_ = conninfo_for(pg_admin_conninfo(), name_);
}

ScratchDatabase::~ScratchDatabase() {
  try {
    PgSession admin(pg_admin_conninfo());
    admin.exec("DROP DATABASE IF EXISTS " + quote_ident(name_) + " WITH (FORCE)");
  } catch (const std::exception& e) {
    std::cerr << "harness: could not drop database " << name_ << ": " << e.what() << "\n";
  }
}

CommandResult psql_file(const std::string& conninfo, const std::string& file) {
  return run_command({"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f", file}, 120s);
}

CommandResult psql_command(const std::string& conninfo, const std::string& sql) {
  return run_command({"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql}, 120s);
}

namespace {
void run_sql_file(const std::string& conninfo, const std::string& file) {
  if (!fs::exists(file)) throw HarnessError(file + " does not exist");
  CommandResult r = psql_file(conninfo, file);
  if (r.exit_code != 0) {
    throw HarnessError("psql -f " + file + " failed (exit " + std::to_string(r.exit_code) + "): " + r.err);
  }
}
}  // namespace

bool logical_capture() {
  const char* mode = std::getenv("PGFANOUT_TEST_CAPTURE");
  return mode != nullptr && std::string_view(mode) == "logical";
}

void install_schema(const std::string& conninfo) {
  run_sql_file(conninfo, sql_dir() + "/install.sql");
  if (!logical_capture()) {
    grant_roles(conninfo, "primary");
    return;
  }
  grant_roles(conninfo, "primary", {"logical=on"});
  CommandResult r = psql_command(conninfo, "SELECT pgfanout.set_capture('logical')");
  if (r.exit_code != 0) throw HarnessError("set_capture('logical') failed: " + r.err);
}

void grant_roles(const std::string& conninfo, const std::string& side,
                 const std::vector<std::string>& vars) {
  std::vector<std::string> argv{"psql", "-X",           "-q", "-v",      "ON_ERROR_STOP=1",
                                "-v",   "side=" + side, "-v", "login=on"};
  for (const auto& v : vars) {
    argv.push_back("-v");
    argv.push_back(v);
  }
  argv.insert(argv.end(), {"-d", conninfo, "-f", sql_dir() + "/roles.sql"});
  CommandResult r = run_command(argv, 120s);
  if (r.exit_code != 0) {
    throw HarnessError("psql -f roles.sql (side=" + side + ") failed (exit " +
                       std::to_string(r.exit_code) + "): " + r.err);
  }
}

void uninstall_schema(const std::string& conninfo) { run_sql_file(conninfo, sql_dir() + "/uninstall.sql"); }

std::optional<std::string> table_md5(PgSession& db, std::string_view table, std::string_view order_by) {
  return db.value("SELECT md5(string_agg(t::text, '|' ORDER BY " + std::string(order_by) + ")) FROM " +
                  std::string(table) + " t");
}

std::int64_t outbox_count(PgSession& db) { return db.integer("SELECT count(*) FROM pgfanout.changes"); }

std::int64_t pending_changes(PgSession& db) {
  // pgoutput's Insert, Update and Delete messages start with 'I', 'U', 'D'; the capture
  // table's own changes (mode switches) are not changes of a tracked table. (<< and | bind
  // alike in SQL, left to right: the parentheses make the relid of OIDs above 65535.)
  return outbox_count(db) +
         db.integer("SELECT count(*) FROM (SELECT slot_name FROM pgfanout.capture WHERE slot_name IS NOT NULL) c, "
                    "LATERAL pg_logical_slot_peek_binary_changes(c.slot_name, NULL, NULL, "
                    "'proto_version', '1', 'publication_names', 'pgfanout') p "
                    "WHERE get_byte(p.data, 0) IN (73, 85, 68) "
                    "AND ((get_byte(p.data, 1)::int8 << 24) | (get_byte(p.data, 2) << 16) | "
                    "     (get_byte(p.data, 3) << 8) | get_byte(p.data, 4)) <> 'pgfanout.capture'::regclass::oid::int8");
}

void wait_outbox_empty(PgSession& db, std::chrono::milliseconds timeout) {
  eventually_value([&] { return outbox_count(db); }, [](std::int64_t n) { return n == 0; }, timeout,
                   "the outbox pgfanout.changes to be empty (rows left)");
  if (db.integer("SELECT count(*) FROM pgfanout.capture WHERE slot_name IS NOT NULL") == 0) return;
  std::string target = *db.value("SELECT pg_current_wal_lsn()::text");
  eventually_value(
      [&] {
        return db.value("SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::text || ' bytes, ' || "
                        "CASE WHEN confirmed_flush_lsn >= " + sql_literal(target) + "::pg_lsn THEN 'done' ELSE 'behind' END "
                        "FROM pg_replication_slots s JOIN pgfanout.capture c ON s.slot_name = c.slot_name")
            .value_or("no slot, done");
      },
      [](const std::string& state) { return state.ends_with("done"); }, timeout,
      "the publisher to confirm the slot up to the WAL written so far (behind by)");
}

void wait_applied(PgSession& primary, PgSession& replica, const std::string& dead_queue,
                  std::chrono::milliseconds timeout) {
  wait_outbox_empty(primary, timeout);
  // The last id given: by the outbox's sequence, or in logical mode by the publisher.
  auto shipped = primary.integer(
      "SELECT greatest((SELECT coalesce(max(last_value), 0) FROM pg_sequences "
      "                 WHERE schemaname = 'pgfanout' AND sequencename LIKE 'changes%'), "
      "                (SELECT coalesce(max(last_id), 0) FROM pgfanout.logical_position))");
  eventually(
      [&] {
        return replica.integer("SELECT coalesce(max(last_change_id), 0) FROM pgfanout.listener_state") >=
                   shipped ||
               queue_depth(dead_queue) > 0;
      },
      timeout, "the listener to reach the last change");
}

// ---------------------------------------------------------------------------------------
// RabbitMQ

namespace {

amqp_bytes_t bytes_of(std::string_view s) { return amqp_bytes_t{s.size(), const_cast<char*>(s.data())}; }

std::string text_of(amqp_bytes_t b) {
  return b.bytes ? std::string(static_cast<const char*>(b.bytes), b.len) : std::string();
}

/// A short-lived management connection for the test's own declarations and deletions,
/// with the queue arguments and deletions pgfanout's own AmqpConnection has no use for.
class AdminChannel {
 public:
  AdminChannel() : state_(amqp_new_connection()) {
    AmqpUrl url = AmqpUrl::parse(amqp_url());
    if (url.tls) throw HarnessError("the test harness supports amqp:// only");
    amqp_socket_t* socket = amqp_tcp_socket_new(state_.get());
    if (!socket) throw HarnessError("cannot create an AMQP socket");
    timeval connect_timeout{10, 0};
    int status = amqp_socket_open_noblock(socket, url.host.c_str(), url.port, &connect_timeout);
    if (status != AMQP_STATUS_OK) {
      throw HarnessError("cannot connect to RabbitMQ at " + url.masked() + ": " + amqp_error_string2(status));
    }
    timeval rpc_timeout{30, 0};
    amqp_set_rpc_timeout(state_.get(), &rpc_timeout);
    check(amqp_login(state_.get(), url.vhost.c_str(), 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                     url.user.c_str(), url.password.c_str()),
          "logging in to RabbitMQ");
    amqp_channel_open(state_.get(), 1);
    check(amqp_get_rpc_reply(state_.get()), "opening a channel");
    open_ = true;
  }
  ~AdminChannel() {
    if (!open_) return;
    amqp_channel_close(state_.get(), 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(state_.get(), AMQP_REPLY_SUCCESS);
  }
  AdminChannel(const AdminChannel&) = delete;
  AdminChannel& operator=(const AdminChannel&) = delete;

  void declare_exchange(const std::string& name) {
    amqp_exchange_declare(state_.get(), 1, bytes_of(name), amqp_cstring_bytes("topic"), 0, 1, 0, 0,
                          amqp_empty_table);
    check(amqp_get_rpc_reply(state_.get()), "declaring exchange " + name);
  }
  void delete_exchange(const std::string& name) {
    amqp_exchange_delete(state_.get(), 1, bytes_of(name), 0);
    check(amqp_get_rpc_reply(state_.get()), "deleting exchange " + name);
  }
  void declare_queue(const std::string& name, const QueueOptions& o) {
    std::vector<amqp_table_entry_t> args;
    auto add = [&](const char* key) -> amqp_field_value_t& {
      amqp_table_entry_t e{};
      e.key = amqp_cstring_bytes(key);
      args.push_back(e);
      return args.back().value;
    };
    if (o.single_active_consumer) {
      auto& v = add("x-single-active-consumer");
      v.kind = AMQP_FIELD_KIND_BOOLEAN;
      v.value.boolean = 1;
    }
    if (o.max_length) {
      auto& v = add("x-max-length");
      v.kind = AMQP_FIELD_KIND_I64;
      v.value.i64 = *o.max_length;
    }
    if (o.reject_publish) {
      auto& v = add("x-overflow");
      v.kind = AMQP_FIELD_KIND_UTF8;
      v.value.bytes = amqp_cstring_bytes("reject-publish");
    }
    if (o.expires.count() > 0) {
      auto& v = add("x-expires");
      v.kind = AMQP_FIELD_KIND_I64;
      v.value.i64 = o.expires.count();
    }
    amqp_table_t table{static_cast<int>(args.size()), args.empty() ? nullptr : args.data()};
    amqp_queue_declare(state_.get(), 1, bytes_of(name), 0, 1, 0, 0, table);
    check(amqp_get_rpc_reply(state_.get()), "declaring queue " + name);
  }
  void bind(const std::string& queue, const std::string& exchange, const std::string& key) {
    amqp_queue_bind(state_.get(), 1, bytes_of(queue), bytes_of(exchange), bytes_of(key), amqp_empty_table);
    check(amqp_get_rpc_reply(state_.get()), "binding queue " + queue + " to " + exchange + " with " + key);
  }
  void delete_queue(const std::string& name) {
    amqp_queue_delete(state_.get(), 1, bytes_of(name), 0, 0);
    check(amqp_get_rpc_reply(state_.get()), "deleting queue " + name);
  }
  void purge(const std::string& name) {
    amqp_queue_purge(state_.get(), 1, bytes_of(name));
    check(amqp_get_rpc_reply(state_.get()), "purging queue " + name);
  }
  std::uint32_t depth(const std::string& name) {
    auto* ok = amqp_queue_declare(state_.get(), 1, bytes_of(name), 1, 0, 0, 0, amqp_empty_table);
    check(amqp_get_rpc_reply(state_.get()), "inspecting queue " + name);
    return ok ? ok->message_count : 0;
  }

 private:
  void check(amqp_rpc_reply_t r, const std::string& what) {
    if (r.reply_type == AMQP_RESPONSE_NORMAL) return;
    open_ = false;
    std::string reason;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
      reason = amqp_error_string2(r.library_error);
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
      auto* m = static_cast<amqp_channel_close_t*>(r.reply.decoded);
      reason = std::to_string(m->reply_code) + " " + text_of(m->reply_text);
      amqp_channel_close_ok_t ok{};
      amqp_send_method(state_.get(), 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
      amqp_connection_close(state_.get(), AMQP_REPLY_SUCCESS);
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
      auto* m = static_cast<amqp_connection_close_t*>(r.reply.decoded);
      reason = std::to_string(m->reply_code) + " " + text_of(m->reply_text);
      amqp_connection_close_ok_t ok{};
      amqp_send_method(state_.get(), 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    } else {
      reason = "no reply";
    }
    throw HarnessError(what + ": " + reason);
  }

  struct Deleter {
    void operator()(amqp_connection_state_t_* s) const { amqp_destroy_connection(s); }
  };
  std::unique_ptr<amqp_connection_state_t_, Deleter> state_;
  bool open_ = false;
};

}  // namespace

void delete_queue(const std::string& name) { AdminChannel().delete_queue(name); }
void delete_exchange(const std::string& name) { AdminChannel().delete_exchange(name); }
std::uint32_t queue_depth(const std::string& name) { return AdminChannel().depth(name); }

void publish_message(const std::string& exchange, const std::string& routing_key, const std::string& body,
                     const Headers& headers, const std::string& message_id) {
  AmqpConnection conn(AmqpUrl::parse(amqp_url()), "pgfanout-test-publisher");
  conn.enable_confirms();
  OutgoingMessage m{exchange, routing_key, body, message_id, "application/json", headers};
  std::uint64_t tag = conn.publish(m, false);
  auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (std::chrono::steady_clock::now() < deadline) {
    auto event = conn.next_event(1s);
    if (!event) continue;
    if (const auto* ack = std::get_if<ConfirmAck>(&*event); ack && ack->delivery_tag >= tag) return;
    if (std::holds_alternative<ConfirmNack>(*event)) throw HarnessError("the broker nacked the test message");
  }
  throw HarnessError("the broker did not confirm the test message");
}

TestExchange::TestExchange(std::string_view prefix) : name_(unique_name(prefix)) {
  AdminChannel().declare_exchange(name_);
}

TestExchange::~TestExchange() {
  try {
    delete_exchange(name_);
  } catch (const std::exception& e) {
    std::cerr << "harness: could not delete exchange " << name_ << ": " << e.what() << "\n";
  }
}

TestQueue::TestQueue(const std::string& exchange, const std::vector<std::string>& patterns,
                     QueueOptions options, std::string name)
    : name_(name.empty() ? unique_name("pgft_q") : std::move(name)) {
  AdminChannel admin;
  admin.declare_exchange(exchange);
  admin.declare_queue(name_, options);
  for (const auto& pattern : patterns) admin.bind(name_, exchange, pattern);
}

TestQueue::~TestQueue() {
  close_consumer();
  try {
    delete_queue(name_);
  } catch (const std::exception& e) {
    std::cerr << "harness: could not delete queue " << name_ << ": " << e.what() << "\n";
  }
}

void TestQueue::close_consumer() {
  if (consumer_) consumer_->close();
  consumer_.reset();
}

std::optional<Delivery> TestQueue::next(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    try {
      if (!consumer_) {
        consumer_ = std::make_unique<AmqpConnection>(AmqpUrl::parse(amqp_url()), "pgfanout-test-reader");
        consumer_->set_prefetch(50);
        consumer_->consume(name_);
      }
      if (auto d = consumer_->next_delivery(std::min<std::chrono::milliseconds>(left, 1s))) {
        consumer_->ack(d->delivery_tag, false);
        return d;
      }
    } catch (const AmqpError&) {
      // The broker went away (a test may restart it): read again on a new connection.
      consumer_.reset();
      std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(left, 200ms));
    }
  }
}

std::vector<Delivery> TestQueue::take(std::size_t n, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<Delivery> out;
  while (out.size() < n) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    auto d = left.count() > 0 ? next(left) : std::nullopt;
    if (!d) {
      std::string got;
      for (const auto& m : out) {
        got += "\n  " + m.routing_key + " id " + m.message_id + ": " + m.body.substr(0, 200);
      }
      throw HarnessError("expected " + std::to_string(n) + " messages on queue " + name_ + " within " +
                         std::to_string(timeout.count()) + " ms, got " + std::to_string(out.size()) +
                         (got.empty() ? "" : ":" + got));
    }
    out.push_back(std::move(*d));
  }
  return out;
}

std::uint32_t TestQueue::remaining() {
  close_consumer();
  return queue_depth(name_);
}

void TestQueue::purge() {
  close_consumer();
  AdminChannel().purge(name_);
}

// ---------------------------------------------------------------------------------------
// Server control

CommandResult rabbitmqctl(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv{required_env("PGFANOUT_TEST_RABBITMQCTL")};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, timeout);
}

CommandResult pg_ctl(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv{required_env("PGFANOUT_TEST_PG_CTL")};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, timeout);
}

void wait_for_broker(std::chrono::milliseconds timeout) {
  eventually([&] {
    AdminChannel probe;
    return true;
  }, timeout, "RabbitMQ to accept an AMQP login");
}

void wait_for_postgres(std::chrono::milliseconds timeout) {
  std::string conninfo = pg_admin_conninfo();
  eventually([&] {
    PgSession probe(conninfo);
    return probe.integer("SELECT 1") == 1;
  }, timeout, "PostgreSQL to accept connections");
}

ServerStopped::ServerStopped(Control control) : control_(std::move(control)) {
  std::string problem;
  try {
    CommandResult r = control_.stop();
    if (r.exit_code == 0) {
      stopped_ = true;
      return;
    }
    problem = r.err + r.out;
  } catch (const std::exception& e) {
    problem = e.what();
  }
  stopped_ = true;
  try {
    start();
  } catch (const std::exception& e) {
    problem += "; and restarting it failed: " + std::string(e.what());
  }
  throw HarnessError("stopping " + control_.name + " failed: " + problem);
}

void ServerStopped::start() {
  if (!stopped_) return;
  CommandResult r = control_.start();
  if (r.exit_code != 0) throw HarnessError("starting " + control_.name + " failed: " + r.err + r.out);
  control_.wait_ready();
  stopped_ = false;
}

ServerStopped::~ServerStopped() {
  try {
    start();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "could not restart " << control_.name << ": " << e.what();
  }
}

BrokerStopped::BrokerStopped()
    : ServerStopped({"the test broker (rabbitmqctl stop_app / start_app)",
                     [] { return rabbitmqctl({"stop_app"}); }, [] { return rabbitmqctl({"start_app"}); },
                     [] { wait_for_broker(); }}) {}

PostgresStopped::PostgresStopped(std::string_view mode)
    : ServerStopped({"the test PostgreSQL cluster (pg_ctl stop -m " + std::string(mode) + " / start)",
                     [m = std::string(mode)] { return pg_ctl({"stop", "-m", m, "-w", "-t", "60"}); },
                     [] { return pg_ctl({"start", "-w", "-t", "60"}); }, [] { wait_for_postgres(); }}) {}

// A port that was free a moment ago: bind port 0, read what the kernel chose, close.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw HarnessError(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int err = errno;
    ::close(fd);
    throw HarnessError(std::string("cannot pick a free port: ") + std::strerror(err));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// GET http://127.0.0.1:port/path with plain sockets (HTTP/1.0: the server closes after
// the response). Returns the body; throws on a refused connection or a non-200 status.
std::string http_get(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw HarnessError(std::string("socket: ") + std::strerror(errno));
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    throw HarnessError("cannot connect to 127.0.0.1:" + std::to_string(port) + ": " +
                       std::strerror(err));
  }
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    ::close(fd);
    throw HarnessError("cannot send the HTTP request");
  }
  std::string response;
  char buffer[8192];
  for (;;) {
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n > 0) {
      response.append(buffer, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) break;
    int err = errno;
    ::close(fd);
    throw HarnessError(std::string("reading the HTTP response: ") + std::strerror(err));
  }
  ::close(fd);
  auto end_of_head = response.find("\r\n\r\n");
  if (end_of_head == std::string::npos) throw HarnessError("no HTTP response head in: " + response);
  std::string status = response.substr(0, response.find("\r\n"));
  if (status.find(" 200 ") == std::string::npos) throw HarnessError("HTTP status: " + status);
  return response.substr(end_of_head + 4);
}

// ---------------------------------------------------------------------------------------
// A relay to the broker

FreezableRelay::FreezableRelay() {
  AmqpUrl broker = AmqpUrl::parse(amqp_url());
  std::string host = broker.host == "localhost" ? "127.0.0.1" : broker.host;
  in_addr address4{};
  if (::inet_pton(AF_INET, host.c_str(), &address4) != 1) {
    throw HarnessError("the relay needs an IPv4 broker address, not " + broker.host);
  }
  upstream_address_ = address4.s_addr;
  upstream_port_ = htons(static_cast<std::uint16_t>(broker.port));
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      ::listen(listen_fd_, 16) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (listen_fd_ >= 0) ::close(listen_fd_);
    throw HarnessError("cannot listen on a loopback port");
  }
  port_ = ntohs(address.sin_port);
  thread_ = std::thread([this] { run(); });
}

FreezableRelay::~FreezableRelay() {
  stop_ = true;
  thread_.join();
  for (const auto& [a, b] : pairs_) {
    ::close(a);
    ::close(b);
  }
  ::close(listen_fd_);
}

std::string FreezableRelay::url(int heartbeat) const {
  AmqpUrl broker = AmqpUrl::parse(amqp_url());
  return "amqp://" + broker.user + ":" + broker.password + "@127.0.0.1:" + std::to_string(port_) + "/" +
         (broker.vhost == "/" ? std::string("%2f") : broker.vhost) + "?heartbeat=" + std::to_string(heartbeat);
}

void FreezableRelay::run() {
  while (!stop_) {
    bool frozen = frozen_, holding = holding_;
    std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
    std::size_t held = 0;
    for (const auto& [client, server] : pairs_) {
      if (frozen || holding) {
        int n = 0;
        if (::ioctl(client, FIONREAD, &n) == 0) held += static_cast<std::size_t>(n);
      }
      if (!frozen) {
        // poll() skips a negative fd: two entries per pair, whatever is held.
        fds.push_back({holding ? -1 : client, POLLIN, 0});
        fds.push_back({server, POLLIN, 0});
      }
    }
    held_ = held;
    if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
    if (fds[0].revents & POLLIN) accept_one();
    std::vector<int> dead;
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      const auto& pair = pairs_[(i - 1) / 2];
      int from = fds[i].fd, to = from == pair.first ? pair.second : pair.first;
      char buffer[65536];
      ssize_t n = ::recv(from, buffer, sizeof buffer, 0);
      bool ok = n > 0;
      if (ok && from == pair.second) {
        ok = forward_frames(from, to, buffer, static_cast<std::size_t>(n));
      } else {
        for (ssize_t sent = 0; ok && sent < n;) {
          ssize_t m = ::send(to, buffer + sent, static_cast<std::size_t>(n - sent), MSG_NOSIGNAL);
          ok = m > 0;
          sent += std::max<ssize_t>(m, 0);
        }
      }
      if (!ok) dead.push_back(from);
    }
    std::erase_if(pairs_, [&](const std::pair<int, int>& p) {
      bool gone = std::find(dead.begin(), dead.end(), p.first) != dead.end() ||
                  std::find(dead.begin(), dead.end(), p.second) != dead.end();
      if (gone) {
        ::close(p.first);
        ::close(p.second);
        downstream_.erase(p.second);
      }
      return gone;
    });
  }
}

bool FreezableRelay::forward_frames(int broker, int client, const char* data, std::size_t size) {
  // AMQP 0-9-1 frames: type (1 byte), channel (2), payload size (4, big-endian), payload,
  // 0xCE. A method frame's payload starts with its class and method ids (2 bytes each);
  // basic.return is 60/50, followed by the returned message's content header (type 2).
  Downstream& d = downstream_[broker];
  d.pending.append(data, size);
  std::size_t complete = 0;
  for (;;) {
    if (d.pending.size() - complete < 7) break;
    const auto* f = reinterpret_cast<const unsigned char*>(d.pending.data() + complete);
    std::size_t payload = (std::size_t{f[3]} << 24) | (std::size_t{f[4]} << 16) | (std::size_t{f[5]} << 8) | f[6];
    if (d.pending.size() - complete < 8 + payload) break;
    if (f[0] == 1 && payload >= 4) {
      d.after_return = f[7] == 0 && f[8] == 60 && f[9] == 0 && f[10] == 50;
    } else if (f[0] == 2 && d.after_return) {
      d.after_return = false;
      if (mangle_returns_) {
        d.pending[complete] = 3;
        ++mangled_;
      }
    }
    complete += 8 + payload;
  }
  for (std::size_t sent = 0; sent < complete;) {
    ssize_t m = ::send(client, d.pending.data() + sent, complete - sent, MSG_NOSIGNAL);
    if (m <= 0) return false;
    sent += static_cast<std::size_t>(m);
  }
  d.pending.erase(0, complete);
  return true;
}

void FreezableRelay::accept_one() {
  int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (client < 0) return;
  sockaddr_in upstream{};
  upstream.sin_family = AF_INET;
  upstream.sin_addr.s_addr = upstream_address_;
  upstream.sin_port = upstream_port_;
  int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (server < 0 || ::connect(server, reinterpret_cast<const sockaddr*>(&upstream), sizeof upstream) != 0) {
    if (server >= 0) ::close(server);
    ::close(client);
    return;
  }
  pairs_.emplace_back(client, server);
}

BackgroundWriter::BackgroundWriter(std::string conninfo,
                                   std::function<std::string(std::int64_t)> statement,
                                   std::chrono::milliseconds pause)
    : conninfo_(std::move(conninfo)), statement_(std::move(statement)), pause_(pause) {
  thread_ = std::thread([this] {
    std::optional<PgSession> db;
    for (std::int64_t i = 0; !stopping_; ++i) {
      try {
        if (!db) db.emplace(conninfo_);
        db->exec(statement_(i));
        ++commits_;
        if (pause_.count() > 0) std::this_thread::sleep_for(pause_);
      } catch (const std::exception&) {
        db.reset();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  });
}

BackgroundWriter::~BackgroundWriter() { stop(); }

void BackgroundWriter::stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

std::string header_text(const Delivery& d, std::string_view key) {
  for (const auto& [k, v] : d.headers) {
    if (k != key) continue;
    if (const auto* s = std::get_if<std::string>(&v)) return *s;
    return std::to_string(std::get<std::int64_t>(v));
  }
  return "(no " + std::string(key) + " header)";
}

SmallChain::SmallChain(const std::string& tables_sql, const std::vector<std::string>& tracked) {
  primary.exec(tables_sql);
  replica.exec(tables_sql);
  install_schema(primary_db.conninfo());
  for (const auto& t : tracked) primary.exec("SELECT pgfanout.track(" + sql_literal(t) + ")");
  listener.emplace(start_listener(replica_db.conninfo(), queue.name(), exchange.name()));
  listener->wait_for_log("consuming from");
  publisher.emplace(start_publisher(primary_db.conninfo(), exchange.name(), {"--pack", "10"}));
}

void SmallChain::wait_applied() { test::wait_applied(primary, replica, dead.name()); }

}  // namespace pgfanout::test
