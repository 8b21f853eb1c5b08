#pragma once

#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include <pqxx/connection>

namespace pgfanout {

/// Opens a libpqxx connection and names it (`application_name`) so that it shows in
/// pg_stat_activity. Automatic reactivation is off: a lost connection surfaces as
/// pqxx::broken_connection and the caller rebuilds its state (LISTEN, prepared statements)
/// on a fresh connection. Throws pqxx::broken_connection when the server is unreachable.
std::unique_ptr<pqxx::connection> connect_pg(const std::string& conninfo,
                                             std::string_view application_name);

/// True when `e` means the connection is gone or the server is shutting down or not
/// accepting (retry on a new connection), false for an error in the data or the SQL.
bool is_connection_error(const std::exception& e);

/// True when `e` may well succeed if tried again later and says nothing against the data:
/// a connection error, or a deadlock, serialization failure, lock or statement timeout,
/// out of disk, memory or connections, or an I/O error. A change that fails so is retried
/// (never dead-lettered).
bool is_transient_error(const std::exception& e);

/// `name` as a quoted SQL identifier ("a""b"), whatever it contains.
std::string quote_ident(std::string_view name);

}  // namespace pgfanout
