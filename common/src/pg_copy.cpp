#include "pgfanout/pg_copy.hpp"

#include <libpq-fe.h>

#include <memory>
#include <pqxx/except>

#include "pgfanout/log_text.hpp"

namespace pgfanout {
namespace {

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

}  // namespace

CopyConnection::CopyConnection(const std::string& conninfo, std::string_view application_name)
    : conn_(connect_libpq(conninfo, {{"application_name", application_name}})),
      cancel_(PQgetCancel(conn_.get())) {}

CopyConnection::~CopyConnection() {
  if (cancel_) PQfreeCancel(cancel_);
}

void CopyConnection::fail(std::string_view what, const std::string& sql, const char* sqlstate) {
  std::string message = std::string(what) + ": " + one_line(PQerrorMessage(conn_.get()));
  if (PQstatus(conn_.get()) != CONNECTION_OK) throw pqxx::broken_connection(message);
  throw pqxx::sql_error(message, sql, sqlstate);
}

void CopyConnection::exec(const std::string& sql) {
  Result r(PQexec(conn_.get(), sql.c_str()));
  ExecStatusType status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    fail("query failed", sql, r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr);
  }
}

std::vector<std::optional<std::string>> CopyConnection::column(
    const std::string& sql, const std::vector<std::string>& params) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  Result r(PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                        nullptr, nullptr, 0));
  if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    fail("query failed", sql, r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr);
  }
  std::vector<std::optional<std::string>> out;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    if (PQgetisnull(r.get(), i, 0)) {
      out.emplace_back();
    } else {
      out.emplace_back(std::string(PQgetvalue(r.get(), i, 0),
                                   static_cast<std::size_t>(PQgetlength(r.get(), i, 0))));
    }
  }
  return out;
}

std::string CopyConnection::quote_literal(std::string_view value) {
  std::unique_ptr<char, decltype(&PQfreemem)> quoted(
      PQescapeLiteral(conn_.get(), value.data(), value.size()), &PQfreemem);
  if (!quoted) fail("quoting a literal", "");
  return quoted.get();
}

void CopyConnection::cancel() {
  char error[256];
  if (cancel_) PQcancel(cancel_, error, sizeof error);
}

std::int64_t copy_rows(CopyConnection& from, const std::string& copy_out, CopyConnection& to,
                       const std::string& copy_in) {
  // The writer first: a replica that refuses the COPY (a missing column, a lock timeout)
  // stops the copy before the source starts its scan.
  {
    Result r(PQexec(to.conn_.get(), copy_in.c_str()));
    if (!r || PQresultStatus(r.get()) != PGRES_COPY_IN) {
      to.fail("COPY FROM STDIN", copy_in,
              r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr);
    }
  }
  {
    Result r(PQexec(from.conn_.get(), copy_out.c_str()));
    if (!r || PQresultStatus(r.get()) != PGRES_COPY_OUT) {
      from.fail("COPY TO STDOUT", copy_out,
                r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr);
    }
  }
  std::int64_t rows = 0;
  for (;;) {
    char* buffer = nullptr;
    // Blocking: a row at a time (text COPY sends one CopyData message per row).
    int n = PQgetCopyData(from.conn_.get(), &buffer, 0);
    if (n == -1) break;
    if (n < 0) from.fail("reading COPY data", copy_out);
    std::unique_ptr<char, decltype(&PQfreemem)> row(buffer, &PQfreemem);
    // Blocking too: libpq sends what it has buffered when it must, so the bytes held stay
    // within a row and libpq's buffer.
    if (PQputCopyData(to.conn_.get(), row.get(), n) != 1) to.fail("writing COPY data", copy_in);
    ++rows;
  }
  for (Result r(PQgetResult(from.conn_.get())); r; r.reset(PQgetResult(from.conn_.get()))) {
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      from.fail("COPY TO STDOUT", copy_out, PQresultErrorField(r.get(), PG_DIAG_SQLSTATE));
    }
  }
  if (PQputCopyEnd(to.conn_.get(), nullptr) != 1) to.fail("ending COPY FROM STDIN", copy_in);
  for (Result r(PQgetResult(to.conn_.get())); r; r.reset(PQgetResult(to.conn_.get()))) {
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      to.fail("COPY FROM STDIN", copy_in, PQresultErrorField(r.get(), PG_DIAG_SQLSTATE));
    }
  }
  return rows;
}

}  // namespace pgfanout
