#include "outbox_reader.hpp"

#include <algorithm>
#include <limits>

#include <pqxx/pqxx>

#include "pgoutput.hpp"

namespace pgfanout {
namespace {

// Takes the lease that makes one publisher active per primary database (install.sql,
// pgfanout.publisher_lease) when its holder's session has ended, and returns the new
// epoch; no row while the holder lives. One autocommit statement: contenders queue on the
// row lock, and the one that waited re-checks the new holder (PostgreSQL re-evaluates
// the WHERE clause for the new row version) and finds it alive. The check must stay a
// scalar subquery: NOT EXISTS becomes an anti-join, which that re-check does not run
// again, and both contenders would lead.
// pg_stat_activity hides backend_start of other roles' sessions (unless
// pg_read_all_stats): a holder whose pid is listed with it hidden counts as alive, so a
// live leader is never taken over; only its pid being reused by a session of another
// role would make standbys wait longer. The epoch exceeds the last one by at least 1, and
// is at least the clock in microseconds, so that it also grows across a reinstall (the
// table is dropped and starts at 0) and a failover whose standby missed the last lease.
constexpr const char* kTakeLeaseSql = R"(
UPDATE pgfanout.publisher_lease AS l
SET holder_pid = pg_backend_pid(),
    holder_start = (SELECT a.backend_start FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()),
    epoch = greatest(l.epoch + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint),
    acquired_at = clock_timestamp()
WHERE (SELECT count(*) FROM pg_stat_activity a
       WHERE a.pid = l.holder_pid
         AND (a.backend_start IS NULL OR a.backend_start = l.holder_start)) = 0
RETURNING l.epoch)";

// Installed, and recent enough for this publisher (the outbox has the text forms, the
// lease and capture tables exist).
constexpr const char* kInstalledSql =
    "SELECT to_regclass('pgfanout.changes') IS NOT NULL "
    "AND to_regclass('pgfanout.publisher_state') IS NOT NULL "
    "AND to_regclass('pgfanout.publisher_lease') IS NOT NULL "
    "AND to_regclass('pgfanout.capture') IS NOT NULL "
    "AND EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('pgfanout.changes') "
    "            AND attname = 'new_text' AND NOT attisdropped)";

// The head CTE without gaps, and with them ($6, $7): two texts, because most reads have
// no gaps and need not plan the gap branch.
constexpr const char* kHeadAfterSql = R"(
  SELECT * FROM pgfanout.changes
  WHERE id > $5 AND (schema_name, table_name) NOT IN (SELECT * FROM unnest($3::text[], $4::text[]))
  ORDER BY id LIMIT $1 + 1)";
constexpr const char* kHeadAfterAndGapsSql = R"(
  SELECT u.* FROM (
      (SELECT * FROM pgfanout.changes
       WHERE id > $5 AND (schema_name, table_name) NOT IN (SELECT * FROM unnest($3::text[], $4::text[]))
       ORDER BY id LIMIT $1 + 1)
      UNION ALL
      (SELECT g.* FROM unnest($6::bigint[], $7::bigint[]) AS r(lo, hi),
         LATERAL (SELECT * FROM pgfanout.changes
                  WHERE id BETWEEN r.lo AND r.hi
                    AND (schema_name, table_name) NOT IN (SELECT * FROM unnest($3::text[], $4::text[]))
                  ORDER BY id LIMIT $1 + 1) AS g)) AS u
  ORDER BY u.id LIMIT $1 + 1)";

// Reads the head of the outbox: rows with an id above $5 or in one of the ranges $6..$7
// (OutboxCursor), leaving out the tables $3.$4, in id order, at most $1 of them. One row
// more is fetched, and rows past the byte limit $2 (a running total that keeps one batch
// from holding many very large rows in memory; the first row always goes) come back
// without their payload: either tells that the read was cut short.
// The limit counts each row's size as the publisher will hold it. pg_column_size() is
// that size for a row stored as it is, and costs nothing; for a compressed row it is the
// compressed size, which can be a hundredth of the row (a 20 MB row of repeated text is
// stored in 230 kB), so such a row is measured as text. Measuring takes a conversion, so
// only rows that pass the cheap bound are measured, and among them compressed rows only
// while their stored sizes add up to $2 / 16: compression shrinks a value at most a few
// hundred times, which bounds what a read converts and throws away.
// Also returned, on every row (and on a single row of NULLs when the read found nothing):
// the snapshot's xmin and the next xid at the time of the read, for the cursor's gaps.
// There is no function for the next xid that does not assign one; age(xid) is measured
// from it in a transaction without an xid, so it is xmax + age(xmax) (xmax's 32 bits:
// age takes an xid).
std::string head_sql(const char* head) {
  return std::string(R"(
WITH snap AS MATERIALIZED (
  SELECT pg_snapshot_xmin(s)::text::bigint AS xmin,
         pg_snapshot_xmax(s)::text::bigint
           + age((pg_snapshot_xmax(s)::text::bigint % 4294967296)::text::xid) AS next_xid
  FROM pg_current_snapshot() AS s),
head AS ()") + head + R"(),
stored AS (
  SELECT h.*, coalesce(pg_column_size(h.new_row), 0) + coalesce(pg_column_size(h.new_json), 0)
                + coalesce(pg_column_size(h.new_text), 0) + coalesce(pg_column_size(h.old_text), 0) + 64 AS stored_size,
         CASE WHEN pg_column_compression(h.new_row) IS NULL AND pg_column_compression(h.new_json) IS NULL
                   AND pg_column_compression(h.new_text) IS NULL THEN 0
              ELSE coalesce(pg_column_size(h.new_row), 0) + coalesce(pg_column_size(h.new_json), 0)
                   + coalesce(pg_column_size(h.new_text), 0) END AS compressed_size
  FROM head h),
candidates AS (
  SELECT c.*, row_number() OVER w <= $1
                AND sum(c.stored_size) OVER w - c.stored_size < $2
                AND sum(c.compressed_size) OVER w - c.compressed_size < $2 / 16 AS candidate
  FROM stored c WINDOW w AS (ORDER BY c.id)),
measured AS (
  SELECT m.*, CASE WHEN NOT m.candidate THEN 0
                   WHEN m.compressed_size = 0 THEN m.stored_size
                   ELSE coalesce(octet_length(m.new_row::text), octet_length(m.new_json::text), 0)
                        + coalesce(octet_length(m.new_text::text), 0) + coalesce(octet_length(m.old_text::text), 0) + 64 END AS size
  FROM candidates m),
sized AS (
  SELECT z.*, z.candidate AND sum(z.size) OVER w - z.size < $2 AS keep
  FROM measured z WINDOW w AS (ORDER BY z.id))
SELECT snap.xmin, snap.next_xid, s.id, s.keep,
       CASE WHEN s.keep THEN s.schema_name END, CASE WHEN s.keep THEN s.table_name END,
       CASE WHEN s.keep THEN s.op END, CASE WHEN s.keep THEN coalesce(s.new_row::text, s.new_json::text) END,
       CASE WHEN s.keep THEN s.old_key::text END,
       CASE WHEN s.keep THEN to_char(s.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') END,
       CASE WHEN s.keep THEN to_json(s.json_nulls)::text END,
       CASE WHEN s.keep THEN s.new_text::text END, CASE WHEN s.keep THEN s.old_text::text END
FROM snap LEFT JOIN sized AS s ON true
ORDER BY s.id)";
}

// Deletes confirmed changes only while this session holds the lease with this epoch,
// and says whether it does. Fencing relies on it: a change leaves the outbox only through
// the current leader, so whatever a deposed leader shipped and listeners drop as stale is
// still there for its successor (README, "Leadership and fencing").
constexpr const char* kDeleteSql = R"(
WITH lease AS (SELECT FROM pgfanout.publisher_lease WHERE holder_pid = pg_backend_pid() AND epoch = $2),
     deleted AS (DELETE FROM pgfanout.changes WHERE id = ANY($1::bigint[]) AND EXISTS (SELECT FROM lease))
SELECT EXISTS (SELECT FROM lease))";
// Also when the flag already reads $1 but its sequence, which the captures read, does not:
// setval is not transactional, so a flip rolled back (a statement cut off with its
// connection) leaves the sequence turned. Without this the writers of an idle publisher
// would not NOTIFY until a poll found a change and the flag flipped twice.
constexpr const char* kSetIdleSql =
    "UPDATE pgfanout.publisher_state SET idle = $1 "
    "WHERE idle <> $1 OR pg_catalog.pg_sequence_last_value('pgfanout.publisher_idle'::pg_catalog.regclass) "
    "IS DISTINCT FROM "
    "CASE WHEN $1 THEN 1 ELSE 0 END";
constexpr const char* kDepthSql =
    "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(ts)), 0)::float8 "
    "FROM pgfanout.changes WHERE id > $1";

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

std::string bigint_array(const std::vector<std::int64_t>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(items[i]);
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
  pqxx::result r = tx.exec(kTakeLeaseSql);
  if (r.empty()) return false;
  epoch_ = r[0][0].as<std::int64_t>();
  return true;
}

std::vector<OutboxChange> OutboxReader::read(int max_rows, std::int64_t max_bytes,
                                             const std::vector<TableName>& held, bool advance) {
  std::vector<std::string> schemas, tables;
  for (const auto& [schema, table] : held) {
    schemas.push_back(schema);
    tables.push_back(table);
  }
  std::vector<std::int64_t> lo, hi;
  for (const OutboxCursor::Gap& g : cursor_.gaps()) {
    lo.push_back(g.lo);
    hi.push_back(g.hi);
  }
  pqxx::nontransaction tx(conn_);
  static const std::string after_sql = head_sql(kHeadAfterSql);
  static const std::string after_and_gaps_sql = head_sql(kHeadAfterAndGapsSql);
  pqxx::result r =
      lo.empty() ? tx.exec_params(after_sql, max_rows, max_bytes, text_array(schemas), text_array(tables),
                                  cursor_.after())
                 : tx.exec_params(after_and_gaps_sql, max_rows, max_bytes, text_array(schemas),
                                  text_array(tables), cursor_.after(), bigint_array(lo), bigint_array(hi));
  std::vector<OutboxChange> out;
  out.reserve(r.size());
  bool cut = false;
  for (const auto& row : r) {
    if (row[2].is_null()) break;  // the read found nothing
    if (!row[3].as<bool>()) {
      cut = true;
      break;
    }
    OutboxChange c;
    c.id = row[2].as<std::int64_t>();
    c.schema = row[4].c_str();
    c.table = row[5].c_str();
    auto op = parse_op(row[6].c_str());
    if (!op) throw std::runtime_error("outbox row " + std::to_string(c.id) + " has unknown op");
    c.op = *op;
    if (!row[7].is_null()) c.new_row.assign(row[7].c_str(), row[7].size());
    if (!row[8].is_null()) c.old_key.assign(row[8].c_str(), row[8].size());
    c.ts = row[9].c_str();
    if (!row[10].is_null()) c.json_nulls.assign(row[10].c_str(), row[10].size());
    if (!row[11].is_null()) c.new_text.assign(row[11].c_str(), row[11].size());
    if (!row[12].is_null()) c.old_text.assign(row[12].c_str(), row[12].size());
    out.push_back(std::move(c));
  }
  if (advance) {
    std::vector<std::int64_t> ids;
    ids.reserve(out.size());
    for (const auto& c : out) ids.push_back(c.id);
    std::int64_t complete_through = !cut        ? std::numeric_limits<std::int64_t>::max()
                                    : ids.empty() ? OutboxCursor::kStart
                                                  : ids.back();
    cursor_.observe(ids, complete_through, r[0][0].as<std::uint64_t>(), r[0][1].as<std::uint64_t>());
  }
  return out;
}

std::vector<OutboxChange> OutboxReader::head(int max_rows, std::int64_t max_bytes,
                                             const std::vector<TableName>& held) {
  // A held table read again has changes that were read before and stayed, behind the cursor.
  for (const auto& table : held_) {
    if (std::find(held.begin(), held.end(), table) == held.end()) {
      cursor_.rewind();
      break;
    }
  }
  held_ = held;
  return read(max_rows, max_bytes, held, true);
}

bool OutboxReader::pending(const std::vector<TableName>& held) { return !read(1, 1, held, false).empty(); }

void OutboxReader::remove(std::span<const OutboxChange> changes) {
  if (changes.empty()) return;
  std::vector<std::int64_t> ids;
  ids.reserve(changes.size());
  for (const auto& c : changes) ids.push_back(c.id);
  pqxx::nontransaction tx(conn_);
  if (!tx.exec_params1(kDeleteSql, bigint_array(ids), epoch_)[0].as<bool>()) {
    throw LeaseLost("this publisher no longer holds the lease of epoch " + std::to_string(epoch_) +
                    "; its confirmed changes stay in the outbox for the new leader");
  }
}

OutboxReader::Capture OutboxReader::capture() {
  pqxx::nontransaction tx(conn_);
  auto row = tx.exec1("SELECT mode, coalesce(slot_name::text, '') FROM pgfanout.capture");
  return Capture{row[0].c_str(), row[1].c_str()};
}

void OutboxReader::park(std::span<const OutboxChange> changes) {
  if (changes.empty()) return;
  pqxx::work tx(conn_);
  for (const auto& c : changes) {
    tx.exec_params("SELECT pgfanout.park($1, $2, $3, $4, $5::json, $6::jsonb, $7::timestamptz, $8::jsonb, $9::jsonb, "
                   "$10::jsonb)",
                   c.id,
                    c.schema, c.table, std::string(to_string(c.op)),
                    c.new_row.empty() ? std::optional<std::string>() : std::optional<std::string>(c.new_row),
                    c.old_key.empty() ? std::optional<std::string>() : std::optional<std::string>(c.old_key), c.ts,
                    c.json_nulls.empty() ? std::optional<std::string>() : std::optional<std::string>(c.json_nulls),
                    c.new_text.empty() ? std::optional<std::string>() : std::optional<std::string>(c.new_text),
                    c.old_text.empty() ? std::optional<std::string>() : std::optional<std::string>(c.old_text));
  }
  tx.commit();
}

std::vector<OutboxReader::TableName> OutboxReader::tables() {
  pqxx::nontransaction tx(conn_);
  std::vector<TableName> out;
  for (const auto& row : tx.exec("SELECT DISTINCT schema_name, table_name FROM pgfanout.changes")) {
    out.emplace_back(row[0].c_str(), row[1].c_str());
  }
  return out;
}

std::string OutboxReader::slot_wal_status(const std::string& slot) {
  pqxx::nontransaction tx(conn_);
  auto rows = tx.exec_params("SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1", slot);
  return rows.empty() ? std::string() : std::string(rows[0][0].c_str());
}

bool OutboxReader::end_other_stream(const std::string& slot) {
  pqxx::nontransaction tx(conn_);
  auto rows = tx.exec_params(
      "SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots "
      "WHERE slot_name = $1 AND active AND active_pid <> pg_backend_pid()",
      slot);
  return !rows.empty();
}

std::int64_t OutboxReader::wal_since(std::uint64_t lsn) {
  pqxx::nontransaction tx(conn_);
  return tx.exec_params1("SELECT greatest(pg_current_wal_lsn() - $1::pg_lsn, 0)::bigint", pgoutput::format_lsn(lsn))[0]
      .as<std::int64_t>();
}

void OutboxReader::drop_slot(const std::string& slot) {
  pqxx::nontransaction tx(conn_);
  tx.exec_params("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slot);
  tx.exec_params("UPDATE pgfanout.capture SET slot_name = NULL WHERE slot_name = $1", slot);
}

void OutboxReader::set_idle(bool idle) {
  pqxx::nontransaction tx(conn_);
  tx.exec_params(kSetIdleSql, idle);
}

OutboxReader::Depth OutboxReader::depth(std::int64_t kept_from) {
  pqxx::nontransaction tx(conn_);
  auto row = tx.exec_params1(kDepthSql, std::min(cursor_.floor(), kept_from - 1));
  return Depth{row[0].as<std::int64_t>(), row[1].as<double>()};
}

}  // namespace pgfanout
