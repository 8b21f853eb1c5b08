#pragma once

// A PostgreSQL 15 cluster of a test's own (not the shared test cluster): initdb'd into a
// temporary directory, or made a streaming standby of another with pg_basebackup -R, on a
// free port of 127.0.0.1, run as the `postgres` user when the test runs as root (the
// server refuses root). The destructor stops it (immediate) and deletes its directory, so
// a test may crash it, promote it or leave it running.

#include <string>

#include "harness.hpp"

namespace pgfanout::test {

class PgCluster {
 public:
  /// A new primary (initdb, wal_level = replica, room for a standby) started and ready.
  PgCluster();
  /// A streaming standby of `primary` (pg_basebackup -R, replication slot-less), started
  /// and ready; `primary` lists it as `application_name`.
  PgCluster(const PgCluster& primary, const std::string& application_name);
  ~PgCluster();
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  int port() const { return port_; }
  /// Conninfo of database `dbname` as the cluster's superuser.
  std::string conninfo(const std::string& dbname = "postgres") const;
  /// pg_ctl stop -m `mode` ("immediate" is a crash); throws on failure.
  void stop(const std::string& mode = "immediate");
  /// pg_ctl promote -w: the standby becomes a primary; throws on failure.
  void promote();
  /// ALTER SYSTEM SET `name` = `value` (a literal) and reload.
  void set(const std::string& name, const std::string& value);

 private:
  void start();
  CommandResult as_postgres(std::vector<std::string> argv, std::chrono::milliseconds timeout = kPatience);
  std::string dir_;
  std::string data_;
  int port_ = 0;
  bool running_ = false;
};

}  // namespace pgfanout::test
