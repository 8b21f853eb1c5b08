#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "pgfanout/libpq_connect.hpp"

namespace pgfanout {

/// A libpq connection in replication mode (replication=database) streaming a logical
/// slot: libpqxx 6.4 has no replication support, so this small RAII wrapper is the one
/// place that holds such a libpq handle. Errors are pqxx::broken_connection when the
/// connection is lost or cannot be made (the caller reconnects), std::runtime_error with
/// the server's message otherwise.
class ReplicationConnection {
 public:
  /// Connects with the libpq conninfo or URI `conninfo`, in replication mode, with
  /// `options` as the session's libpq options (settings the output functions use).
  ReplicationConnection(const std::string& conninfo, std::string_view application_name,
                        std::string_view options);
  ReplicationConnection(const ReplicationConnection&) = delete;
  ReplicationConnection& operator=(const ReplicationConnection&) = delete;

  /// Runs START_REPLICATION SLOT `slot` LOGICAL 0/0 (...) with `plugin_options` (the
  /// parenthesised option list's inside, already quoted); the stream then starts at the
  /// slot's confirmed position.
  void start_logical(std::string_view slot, std::string_view plugin_options);
  /// The next CopyData message if one has arrived; nullopt when nothing is there now (it
  /// never blocks). Throws when the stream ended or failed.
  std::optional<std::string> read();
  /// Sends one CopyData message (a status update) and flushes it.
  void send(std::string_view data);
  /// The socket, to wait for it to become readable.
  int socket() const;
  /// The backend's process id (pg_replication_slots.active_pid).
  int backend_pid() const;

 private:
  [[noreturn]] void fail(std::string_view what);
  LibpqConnection conn_;
};

}  // namespace pgfanout
