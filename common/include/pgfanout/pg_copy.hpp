#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pgfanout/libpq_connect.hpp"

struct pg_cancel;

namespace pgfanout {

/// A plain libpq connection for COPY streams: libpqxx 6.4 streams whole tables only
/// (stream_from takes no query), and a snapshot copies ctid ranges of a table. Errors are
/// libpqxx's exceptions, so that is_connection_error() and is_transient_error() judge them
/// as they judge the rest: pqxx::broken_connection when the connection is lost or cannot
/// be made, pqxx::sql_error with the server's SQLSTATE otherwise.
class CopyConnection {
 public:
  CopyConnection(const std::string& conninfo, std::string_view application_name);
  ~CopyConnection();
  CopyConnection(const CopyConnection&) = delete;
  CopyConnection& operator=(const CopyConnection&) = delete;

  /// Runs `sql`, one or more commands without parameters.
  void exec(const std::string& sql);
  /// Runs one query with text parameters (bound, never pasted); each row's first column
  /// (an SQL NULL as nullopt).
  std::vector<std::optional<std::string>> column(const std::string& sql,
                                                 const std::vector<std::string>& params = {});
  /// `value` as an SQL string literal, for the commands that take no parameters (SET
  /// TRANSACTION SNAPSHOT).
  std::string quote_literal(std::string_view value);
  /// Asks the server to cancel what this connection runs now. Safe from another thread.
  void cancel();

 private:
  friend std::int64_t copy_rows(CopyConnection&, const std::string&, CopyConnection&,
                                const std::string&);
  [[noreturn]] void fail(std::string_view what, const std::string& sql,
                         const char* sqlstate = nullptr);
  LibpqConnection conn_;
  pg_cancel* cancel_ = nullptr;
};

/// Streams the rows of `copy_out` (COPY ... TO STDOUT) run on `from` into `copy_in` (COPY
/// ... FROM STDIN) run on `to`, a row at a time: memory holds one row (one CopyData
/// message) whatever the table's size. Returns the rows copied. After an exception both
/// connections are in an unknown state: the caller drops them (and their transactions).
std::int64_t copy_rows(CopyConnection& from, const std::string& copy_out, CopyConnection& to,
                       const std::string& copy_in);

}  // namespace pgfanout
