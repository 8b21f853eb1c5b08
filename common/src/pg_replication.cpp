#include "pgfanout/pg_replication.hpp"

#include <libpq-fe.h>

#include <stdexcept>

#include <pqxx/except>

#include "pgfanout/log_text.hpp"
#include "pgfanout/pg_connection.hpp"

namespace pgfanout {

ReplicationConnection::ReplicationConnection(const std::string& conninfo,
                                             std::string_view application_name,
                                             std::string_view options)
    : conn_(connect_libpq(conninfo,
                          {{"replication", "database"},
                           {"application_name", application_name},
                           {"options", options}},
                          "replication connection")) {}

void ReplicationConnection::fail(std::string_view what) {
  std::string message = std::string(what) + ": " + one_line(PQerrorMessage(conn_.get()));
  if (PQstatus(conn_.get()) != CONNECTION_OK) throw pqxx::broken_connection(message);
  throw std::runtime_error(message);
}

void ReplicationConnection::start_logical(std::string_view slot, std::string_view plugin_options) {
  std::string command = "START_REPLICATION SLOT " + quote_ident(slot) + " LOGICAL 0/0 (" +
                        std::string(plugin_options) + ")";
  PGresult* result = PQexec(conn_.get(), command.c_str());
  ExecStatusType status = result ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  PQclear(result);
  if (status != PGRES_COPY_BOTH) fail("START_REPLICATION of slot " + std::string(slot));
  if (PQsetnonblocking(conn_.get(), 1) != 0) fail("setting the replication connection non-blocking");
}

std::optional<std::string> ReplicationConnection::read() {
  char* buffer = nullptr;
  int n = PQgetCopyData(conn_.get(), &buffer, 1);
  if (n == 0) {
    if (PQconsumeInput(conn_.get()) == 0) fail("reading the replication stream");
    n = PQgetCopyData(conn_.get(), &buffer, 1);
    if (n == 0) return std::nullopt;
  }
  if (n > 0) {
    std::string out(buffer, static_cast<std::size_t>(n));
    PQfreemem(buffer);
    return out;
  }
  if (n == -1) {
    // The server ended the stream: its final result says why.
    PGresult* result = PQgetResult(conn_.get());
    std::string message = result ? one_line(PQresultErrorMessage(result)) : "";
    PQclear(result);
    if (PQstatus(conn_.get()) != CONNECTION_OK) throw pqxx::broken_connection("replication stream ended: " + message);
    throw std::runtime_error("replication stream ended" + (message.empty() ? std::string() : ": " + message));
  }
  fail("reading the replication stream");
}

void ReplicationConnection::send(std::string_view data) {
  if (PQputCopyData(conn_.get(), data.data(), static_cast<int>(data.size())) != 1) fail("sending a status update");
  // Non-blocking: a status update is small; a flush that cannot finish now completes with
  // the next one (libpq keeps the rest).
  if (PQflush(conn_.get()) < 0) fail("sending a status update");
}

int ReplicationConnection::socket() const { return PQsocket(conn_.get()); }

int ReplicationConnection::backend_pid() const { return PQbackendPID(conn_.get()); }

}  // namespace pgfanout
