#include "table_catalog.hpp"

#include <pqxx/pqxx>

namespace pgfanout {
namespace {

constexpr const char* kResolveSql = R"(
SELECT a.attname, a.attgenerated = '' AS insertable,
       array_position(i.indkey::int2[], a.attnum) AS key_position,
       format_type(a.atttypid, a.atttypmod) AS type, c.relkind = 'p' AS partitioned,
       -- json or jsonb, or a domain over one at any depth (as install.sql's json_columns):
       -- which of the two, else NULL
       (WITH RECURSIVE base(typ) AS (
          SELECT a.atttypid
          UNION ALL
          SELECT t.typbasetype FROM base JOIN pg_type t ON t.oid = base.typ WHERE t.typtype = 'd')
        SELECT format_type(typ, NULL) FROM base WHERE typ IN ('json'::regtype, 'jsonb'::regtype)) AS json,
       -- COPY writes new rows as the upsert would: the statement needs UPDATE and a key
       -- checked at once (ON CONFLICT takes no deferrable arbiter), COPY neither.
       NOT c.relrowsecurity AND NOT c.relhasrules AND coalesce(i.indimmediate, true)
         AND has_table_privilege(c.oid, 'UPDATE') AS copyable,
       a.attidentity = 'a' AS identity_always,
       current_setting('server_encoding') = 'UTF8' AS server_utf8
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
ORDER BY a.attnum)";

// PostgreSQL's longest name (NAMEDATALEN - 1): it cuts a longer one when casting to
// `name`, so a longer name from a message could otherwise resolve to another table.
constexpr std::size_t kMaxNameBytes = 63;

}  // namespace

std::shared_ptr<const TableInfo> TableCatalog::resolve(pqxx::connection& conn, const std::string& schema,
                                                       const std::string& name) {
  if (schema.size() > kMaxNameBytes || name.size() > kMaxNameBytes) return nullptr;
  auto now = std::chrono::steady_clock::now();
  if (now - loaded_at_ > ttl_) {
    tables_.clear();
    loaded_at_ = now;
  }
  auto key = std::make_pair(schema, name);
  if (auto it = tables_.find(key); it != tables_.end()) return it->second;

  pqxx::nontransaction tx(conn);
  pqxx::result r = tx.exec_params(kResolveSql, schema, name);
  if (r.empty()) {
    tables_[key] = nullptr;
    return nullptr;
  }
  auto info = std::make_shared<TableInfo>();
  info->schema = schema;
  info->name = name;
  info->partitioned = r[0][4].as<bool>();
  info->copyable = r[0][6].as<bool>();
  info->server_utf8 = r[0][8].as<bool>();
  std::map<int, std::string> keys;
  for (const auto& row : r) {
    std::string column = row[0].c_str();
    if (row[1].as<bool>()) info->columns.push_back(column);
    info->types.emplace(column, row[3].c_str());
    if (!row[5].is_null()) {
      info->json_columns.insert(column);
      if (row[5].c_str() != info->types.at(column)) info->json_domain_base.emplace(column, row[5].c_str());
    }
    if (row[7].as<bool>()) info->identity_always.insert(column);
    if (!row[2].is_null()) keys.emplace(row[2].as<int>(), column);
  }
  for (auto& [pos, column] : keys) info->key_columns.push_back(column);
  tables_[key] = info;
  return info;
}

std::shared_ptr<const TableInfo> TableCatalog::resolve_for(pqxx::connection& conn, const std::string& schema,
                                           const std::string& name, const RawObject& row,
                                           std::chrono::milliseconds recheck) {
  std::shared_ptr<const TableInfo> t = resolve(conn, schema, name);
  if (!t || !row.is_object()) return t;
  bool unknown = false;
  for (const auto& member : row.members()) {
    if (!t->types.count(member.first)) {
      unknown = true;
      break;
    }
  }
  if (!unknown) return t;
  auto key = std::make_pair(schema, name);
  auto now = std::chrono::steady_clock::now();
  auto& last = rechecked_[key];
  if (last.time_since_epoch().count() != 0 && now - last < recheck) return t;
  last = now;
  tables_.erase(key);
  return resolve(conn, schema, name);
}

}  // namespace pgfanout
