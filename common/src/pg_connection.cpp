#include "pgfanout/pg_connection.hpp"

#include <pqxx/except>
#include <pqxx/nontransaction>

namespace pgfanout {

std::unique_ptr<pqxx::connection> connect_pg(const std::string& conninfo,
                                             std::string_view application_name) {
  auto conn = std::make_unique<pqxx::connection>(conninfo);
  // libpqxx 6 quietly opens a new session on the next statement after a break, without
  // what the old one held (LISTEN, the leader lease, session settings); a break must end
  // the session instead, so that the caller sets it up again.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  conn->inhibit_reactivation(true);
#pragma GCC diagnostic pop
  pqxx::nontransaction tx(*conn);
  // Messages are JSON, UTF-8 by definition: a session in the database's own encoding
  // (LATIN1, say) would read and write their bytes as that encoding's characters.
  tx.exec_params("SELECT set_config('application_name', $1, false), set_config('client_encoding', 'UTF8', false)",
                 std::string(application_name));
  return conn;
}

bool is_connection_error(const std::exception& e) {
  if (dynamic_cast<const pqxx::broken_connection*>(&e)) return true;
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e)) return true;
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    const std::string& state = sql->sqlstate();
    // 08: connection exception; 57P01-03: admin shutdown, crash shutdown, cannot connect
    // now; 53300: too many connections; 40001/40P01 are retried by callers anyway.
    return state.starts_with("08") || state == "57P01" || state == "57P02" ||
           state == "57P03" || state == "53300" || state.empty();
  }
  return false;
}

bool is_transient_error(const std::exception& e) {
  if (is_connection_error(e)) return true;
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    const std::string& state = sql->sqlstate();
    // 40: transaction rollback (deadlock, serialization); 53: insufficient resources;
    // 57: operator intervention (statement timeout, shutdown); 58: system (I/O) error;
    // 55P03 lock not available; 55006 object in use.
    return state.starts_with("40") || state.starts_with("53") || state.starts_with("57") ||
           state.starts_with("58") || state == "55P03" || state == "55006";
  }
  return false;
}

std::string quote_ident(std::string_view name) {
  std::string out;
  out.reserve(name.size() + 2);
  out += '"';
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace pgfanout
