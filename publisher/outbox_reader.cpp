#include "outbox_reader.hpp"

#include <pqxx/pqxx>

namespace pgfanout {
namespace {

// The advisory lock that makes one publisher active per primary database; any other
// publisher waits as a standby until the holder's session ends.
constexpr const char* kLeaderLockSql = "SELECT pg_try_advisory_lock(1886809697, 1)";

// Installed, and recent enough for this publisher (the outbox has json_nulls).
constexpr const char* kInstalledSql =
    "SELECT to_regclass('pgfanout.changes') IS NOT NULL "
    "AND to_regclass('pgfanout.publisher_state') IS NOT NULL "
    "AND EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('pgfanout.changes') "
    "            AND attname = 'json_nulls' AND NOT attisdropped)";

// Reads the head of the outbox. The running byte total keeps one batch from holding many
// very large rows in memory at once; the first row is always returned.
constexpr const char* kHeadSql = R"(
SELECT id, schema_name, table_name, op, new_row::text, old_key::text,
       to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
       to_json(json_nulls)::text
FROM (SELECT c.*, sum(coalesce(pg_column_size(c.new_row), 0) + 64) OVER (ORDER BY c.id) AS running,
             coalesce(pg_column_size(c.new_row), 0) + 64 AS own
      FROM (SELECT * FROM pgfanout.changes
            WHERE (schema_name, table_name) NOT IN (SELECT * FROM unnest($3::text[], $4::text[]))
            ORDER BY id LIMIT $1) c) h
WHERE running - own < $2
ORDER BY id)";

constexpr const char* kDeleteSql = "DELETE FROM pgfanout.changes WHERE id = ANY($1::bigint[])";
constexpr const char* kSetIdleSql = "UPDATE pgfanout.publisher_state SET idle = $1 WHERE idle <> $1";
constexpr const char* kDepthSql =
    "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(ts)), 0)::float8 "
    "FROM pgfanout.changes";

// A PostgreSQL array literal of texts, every element quoted and escaped.
std::string text_array(const std::vector<std::string>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    out += '"';
    for (char c : items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

}  // namespace

OutboxReader::OutboxReader(pqxx::connection& conn) : conn_(conn) {}

bool OutboxReader::installed() {
  pqxx::nontransaction tx(conn_);
  return tx.exec1(kInstalledSql)[0].as<bool>();
}

bool OutboxReader::try_lead() {
  pqxx::nontransaction tx(conn_);
  return tx.exec1(kLeaderLockSql)[0].as<bool>();
}

std::vector<OutboxChange> OutboxReader::head(int max_rows, std::int64_t max_bytes,
                                             const std::vector<TableName>& held) {
  std::vector<std::string> schemas, tables;
  for (const auto& [schema, table] : held) {
    schemas.push_back(schema);
    tables.push_back(table);
  }
  pqxx::nontransaction tx(conn_);
  pqxx::result r = tx.exec_params(kHeadSql, max_rows, max_bytes, text_array(schemas), text_array(tables));
  std::vector<OutboxChange> out;
  out.reserve(r.size());
  for (const auto& row : r) {
    OutboxChange c;
    c.id = row[0].as<std::int64_t>();
    c.schema = row[1].c_str();
    c.table = row[2].c_str();
    auto op = parse_op(row[3].c_str());
    if (!op) throw std::runtime_error("outbox row " + std::to_string(c.id) + " has unknown op");
    c.op = *op;
    if (!row[4].is_null()) c.new_row.assign(row[4].c_str(), row[4].size());
    if (!row[5].is_null()) c.old_key.assign(row[5].c_str(), row[5].size());
    c.ts = row[6].c_str();
    if (!row[7].is_null()) c.json_nulls.assign(row[7].c_str(), row[7].size());
    out.push_back(std::move(c));
  }
  return out;
}

void OutboxReader::remove(std::span<const OutboxChange> changes) {
  if (changes.empty()) return;
  std::string ids = "{";
  for (size_t i = 0; i < changes.size(); ++i) {
    if (i) ids += ',';
    ids += std::to_string(changes[i].id);
  }
  ids += '}';
  pqxx::nontransaction tx(conn_);
  tx.exec_params(kDeleteSql, ids);
}

void OutboxReader::set_idle(bool idle) {
  pqxx::nontransaction tx(conn_);
  tx.exec_params(kSetIdleSql, idle);
}

OutboxReader::Depth OutboxReader::depth() {
  pqxx::nontransaction tx(conn_);
  auto row = tx.exec1(kDepthSql);
  return Depth{row[0].as<std::int64_t>(), row[1].as<double>()};
}

}  // namespace pgfanout
