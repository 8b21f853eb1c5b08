#include "apply_plan.hpp"

#include <algorithm>
#include <optional>
#include <set>
#include <unordered_map>

#include "pgfanout/pg_connection.hpp"

namespace pgfanout {

std::string TableInfo::qualified() const { return quote_ident(schema) + "." + quote_ident(name); }

bool key_changed(const ParsedChange& c) {
  if (c.op != Op::Update || !c.old_key.is_object() || !c.new_row.is_object()) return false;
  // Compared as text: both come from jsonb output on the primary, so equal values print
  // alike. A foreign producer that formats them differently gets a delete and an upsert
  // of the same key, which lands in the same state.
  for (const auto& [k, v] : c.old_key.members()) {
    const std::string* now = c.new_row.find(k);
    if (!now || *now != v) return true;
  }
  return false;
}

namespace {

// The identity of a row in a run: its key values as received (exact, not rounded), or
// nothing when a key column is missing, so that such a row is never merged with another.
std::optional<std::string> key_of(const RawObject& row, const TableInfo& table) {
  std::string key;
  for (const auto& k : table.key_columns) {
    const std::string* value = row.find(k);
    if (!value) return std::nullopt;
    key += *value;
    key += '\x1f';
  }
  return key;
}

void keep_last_per_key(ApplyStep& step) {
  if (step.kind == StepKind::Truncate || step.rows.size() < 2) return;
  std::vector<std::optional<std::string>> keys;
  keys.reserve(step.rows.size());
  std::unordered_map<std::string, std::size_t> last;
  last.reserve(step.rows.size());
  for (std::size_t i = 0; i < step.rows.size(); ++i) {
    keys.push_back(key_of(*step.rows[i], *step.table));
    if (keys.back()) last[*keys.back()] = i;
  }
  std::vector<const RawObject*> kept;
  kept.reserve(step.rows.size());
  for (std::size_t i = 0; i < step.rows.size(); ++i) {
    if (!keys[i] || last[*keys[i]] == i) kept.push_back(step.rows[i]);
  }
  step.rows = std::move(kept);
}

}  // namespace

std::vector<ApplyStep> plan_steps(const std::vector<const ParsedChange*>& changes,
                                  const std::vector<const TableInfo*>& tables) {
  std::vector<ApplyStep> steps;
  auto add = [&](std::size_t index, StepKind kind, const RawObject* row) {
    const TableInfo* table = tables[index];
    bool joins = !steps.empty() && steps.back().kind == kind &&
                 (kind == StepKind::Truncate || steps.back().table == table);
    if (!joins) steps.push_back(ApplyStep{table, kind, {}, {}, {}});
    ApplyStep& step = steps.back();
    if (kind == StepKind::Truncate &&
        std::find(step.truncated.begin(), step.truncated.end(), table) == step.truncated.end()) {
      step.truncated.push_back(table);
    }
    if (row) step.rows.push_back(row);
    if (step.changes.empty() || step.changes.back() != index) step.changes.push_back(index);
  };
  for (std::size_t i = 0; i < changes.size(); ++i) {
    const ParsedChange& c = *changes[i];
    switch (c.op) {
      case Op::Insert: add(i, StepKind::Upsert, &c.new_row); break;
      case Op::Update:
        if (key_changed(c)) add(i, StepKind::Delete, &c.old_key);
        add(i, StepKind::Upsert, &c.new_row);
        break;
      case Op::Delete: add(i, StepKind::Delete, &c.old_key); break;
      case Op::Truncate: add(i, StepKind::Truncate, nullptr); break;
    }
  }
  for (auto& step : steps) keep_last_per_key(step);
  return steps;
}

namespace {

// `jsonb_to_recordset($1::jsonb) AS k("a" int4, ...)` over just these columns: unlike
// jsonb_populate_recordset over the whole row type, a column the rows do not carry is
// not built at all, so a NOT NULL domain elsewhere in the table cannot reject it.
std::string recordset(const TableInfo& t, const std::vector<std::string>& columns) {
  std::string out = "jsonb_to_recordset($1::jsonb) AS k(";
  for (std::size_t i = 0; i < columns.size(); ++i) {
    if (i) out += ", ";
    out += quote_ident(columns[i]);
    out += ' ';
    auto type = t.types.find(columns[i]);
    out += type == t.types.end() ? std::string("text") : type->second;
  }
  out += ')';
  return out;
}

std::string joined(const std::vector<std::string>& names, std::string_view prefix = "") {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i) out += ", ";
    out += prefix;
    out += quote_ident(names[i]);
  }
  return out;
}

}  // namespace

std::string step_sql(const ApplyStep& step) {
  const TableInfo& t = *step.table;
  const std::string q = t.qualified();
  if (step.kind == StepKind::Truncate) {
    // ONLY: the primary captured the truncation of this table; an inheritance child is a
    // table of its own with its own change (a partitioned table cannot take ONLY).
    std::string sql = "TRUNCATE ";
    for (std::size_t i = 0; i < step.truncated.size(); ++i) {
      if (i) sql += ", ";
      if (!step.truncated[i]->partitioned) sql += "ONLY ";
      sql += step.truncated[i]->qualified();
    }
    return sql;
  }
  if (step.kind == StepKind::Delete) {
    std::string sql = "DELETE FROM " + q + " AS t USING " + recordset(t, t.key_columns) + " WHERE ";
    for (std::size_t i = 0; i < t.key_columns.size(); ++i) {
      if (i) sql += " AND ";
      std::string c = quote_ident(t.key_columns[i]);
      sql += "t." + c + " = k." + c;
    }
    return sql;
  }
  // Only columns the rows carry are written, so a replica column the primary lacks keeps
  // its own value (or default) instead of being overwritten with NULL.
  std::set<std::string, std::less<>> present;
  for (const auto* row : step.rows) {
    for (const auto& member : row->members()) present.insert(member.first);
  }
  std::vector<std::string> cols;
  for (const auto& c : t.columns) {
    if (present.count(c)) cols.push_back(c);
  }
  std::string list = joined(cols);
  std::string sql = "INSERT INTO " + q + " (" + list + ") OVERRIDING SYSTEM VALUE SELECT " +
                    joined(cols, "k.") + " FROM " + recordset(t, cols) + " ON CONFLICT (" +
                    joined(t.key_columns) + ") DO ";
  std::string updates;
  for (const auto& c : cols) {
    if (std::find(t.key_columns.begin(), t.key_columns.end(), c) != t.key_columns.end()) continue;
    if (!updates.empty()) updates += ", ";
    std::string qc = quote_ident(c);
    updates += qc + " = EXCLUDED." + qc;
  }
  sql += updates.empty() ? "NOTHING" : "UPDATE SET " + updates;
  return sql;
}

std::string rows_json(const ApplyStep& step) {
  std::string out = "[";
  for (std::size_t i = 0; i < step.rows.size(); ++i) {
    if (i) out += ',';
    out += step.rows[i]->dump();
  }
  out += ']';
  return out;
}

}  // namespace pgfanout
