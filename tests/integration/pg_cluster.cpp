#include "pg_cluster.hpp"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace pgfanout::test {
namespace fs = std::filesystem;

namespace {
const std::string kBin = "/usr/lib/postgresql/15/bin/";

std::string make_dir() {
  std::string pattern = (fs::temp_directory_path() / "pgfanout-cluster.XXXXXX").string();
  if (!mkdtemp(pattern.data())) throw HarnessError("cannot create a directory for a cluster");
  fs::permissions(pattern, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec);
  if (geteuid() == 0) {
    CommandResult r = run_command({"chown", "postgres:postgres", pattern});
    if (r.exit_code != 0) throw HarnessError("chown postgres " + pattern + ": " + r.err);
  }
  return pattern;
}

void check(const CommandResult& r, const std::string& what) {
  if (r.exit_code != 0) throw HarnessError(what + " failed (exit " + std::to_string(r.exit_code) + "): " + r.err + r.out);
}
}  // namespace

CommandResult PgCluster::as_postgres(std::vector<std::string> argv, std::chrono::milliseconds timeout) {
  if (geteuid() == 0) argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  return run_command(argv, timeout);
}

PgCluster::PgCluster() : dir_(make_dir()), data_(dir_ + "/data"), port_(free_port()) {
  check(as_postgres({kBin + "initdb", "-D", data_, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                     "--locale=C.UTF-8"}, std::chrono::seconds(120)),
        "initdb");
  std::ofstream conf(data_ + "/postgresql.conf", std::ios::app);
  conf << "listen_addresses = '127.0.0.1'\nport = " << port_ << "\nunix_socket_directories = '" << dir_
       << "'\nwal_level = replica\nmax_wal_senders = 5\nshared_buffers = 32MB\n"
       << "fsync = off\n";
  conf.close();
  std::ofstream hba(data_ + "/pg_hba.conf", std::ios::app);
  hba << "host replication postgres 127.0.0.1/32 trust\n";
  hba.close();
  start();
}

PgCluster::PgCluster(const PgCluster& primary, const std::string& application_name)
    : dir_(make_dir()), data_(dir_ + "/data"), port_(free_port()) {
  check(as_postgres({kBin + "pg_basebackup", "-h", "127.0.0.1", "-p", std::to_string(primary.port()),
                     "-U", "postgres", "-D", data_, "-X", "stream", "-R", "-c", "fast",
                     "-d", "application_name=" + application_name},
                    std::chrono::seconds(120)),
        "pg_basebackup");
  std::ofstream conf(data_ + "/postgresql.conf", std::ios::app);
  conf << "port = " << port_ << "\nunix_socket_directories = '" << dir_ << "'\n";
  conf.close();
  start();
}

void PgCluster::start() {
  check(as_postgres({kBin + "pg_ctl", "-D", data_, "-l", dir_ + "/server.log", "-w", "-t", "90", "start"},
                    std::chrono::seconds(120)),
        "pg_ctl start");
  running_ = true;
  eventually([&] { PgSession s(conninfo()); return s.integer("SELECT 1") == 1; }, kPatience,
             "the cluster on port " + std::to_string(port_) + " to accept connections");
}

PgCluster::~PgCluster() {
  try {
    if (running_) as_postgres({kBin + "pg_ctl", "-D", data_, "-m", "immediate", "-w", "stop"});
  } catch (...) {
  }
  std::error_code ignored;
  fs::remove_all(dir_, ignored);
}

std::string PgCluster::conninfo(const std::string& dbname) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=" + dbname;
}

void PgCluster::stop(const std::string& mode) {
  check(as_postgres({kBin + "pg_ctl", "-D", data_, "-m", mode, "-w", "stop"}, std::chrono::seconds(90)),
        "pg_ctl stop");
  running_ = false;
}

void PgCluster::promote() {
  check(as_postgres({kBin + "pg_ctl", "-D", data_, "-w", "promote"}, std::chrono::seconds(90)),
        "pg_ctl promote");
}

void PgCluster::set(const std::string& name, const std::string& value) {
  PgSession s(conninfo());
  s.exec("ALTER SYSTEM SET " + name + " = " + value);
  s.exec("SELECT pg_reload_conf()");
}

}  // namespace pgfanout::test
