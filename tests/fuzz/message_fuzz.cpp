// libFuzzer target: a message body as a broker may deliver it, through everything the
// listener does with it before SQL reaches the replica. Any exception other than
// BadMessage, any sanitizer report, and a planned batch whose rows are not valid JSON are
// findings.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "apply_plan.hpp"
#include "change_parser.hpp"
#include "raw_json.hpp"

namespace {

using namespace pgfanout;

// A replica table that has every column the changes mention (so planning does real
// work): the first member of the first row or key is its primary key, and every other
// column is jsonb, so that json_nulls are honoured too.
TableInfo table_for(const std::vector<ParsedChange>& changes, std::string name) {
  TableInfo t;
  t.schema = "s";
  t.name = std::move(name);
  std::set<std::string> seen;
  auto add = [&](const RawObject& o) {
    if (!o.is_object()) return;
    for (const auto& [column, value] : o.members()) {
      if (!seen.insert(column).second) continue;
      t.columns.push_back(column);
      bool key = t.key_columns.empty();
      if (key) t.key_columns.push_back(column);
      t.types.emplace(column, key ? "text" : "jsonb");
      if (!key) t.json_columns.insert(column);
    }
  };
  for (const auto& c : changes) {
    add(c.old_key);
    add(c.new_row);
  }
  if (t.key_columns.empty()) {
    t.columns.push_back("id");
    t.key_columns.push_back("id");
    t.types.emplace("id", "text");
  }
  return t;
}

// COPY's text of an upsert step, when it has one, is one line per row of exactly one field
// per column: every tab and newline in a value escaped.
void check_copy_text(const ApplyStep& step) {
  std::vector<std::string> columns = upsert_columns(step);
  std::string text;
  if (!copy_rows(step, columns, text)) return;
  std::size_t lines = 0, tabs = 0;
  for (char c : text) {
    if (c == '\n') {
      if (tabs + 1 != columns.size()) std::abort();
      ++lines;
      tabs = 0;
    } else if (c == '\t') {
      ++tabs;
    }
  }
  if (lines != step.rows.size() || tabs != 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  std::vector<ParsedChange> changes;
  try {
    changes = parse_message(body);
  } catch (const BadMessage&) {
    return 0;
  }
  // The count header is checked against what the body holds, never trusted.
  for (std::int64_t n : {std::int64_t{-1}, std::int64_t{0}, static_cast<std::int64_t>(changes.size()),
                         static_cast<std::int64_t>(size) * 1'000'000'007}) {
    try {
      check_change_count({{kChangeCountHeader, n}}, changes.size());
    } catch (const BadMessage&) {
    }
  }

  // Two tables, the changes dealt to them by id, so that runs start and end.
  TableInfo a = table_for(changes, "a"), b = table_for(changes, "b");
  std::vector<const ParsedChange*> pointers;
  std::vector<const TableInfo*> tables;
  for (const auto& c : changes) {
    pointers.push_back(&c);
    tables.push_back(c.id % 2 ? &a : &b);
  }
  for (const ApplyStep& step : plan_steps(pointers, tables)) {
    std::string sql = step_sql(step);
    if (sql.empty()) std::abort();
    if (step.kind == StepKind::Truncate) continue;
    std::string rows = rows_json(step);
    try {
      validate_json(rows, kMaxJsonDepth + 2);
    } catch (const std::invalid_argument&) {
      std::abort();  // the replica would be sent rows that are not JSON
    }
    if (step.kind != StepKind::Upsert) continue;
    // COPY's text of the same rows, as they are (jsonb columns) and into text columns.
    TableInfo as_text = *step.table;
    for (auto& [column, type] : as_text.types) type = "text";
    as_text.json_columns.clear();
    ApplyStep text_step = step;
    text_step.table = &as_text;
    check_copy_text(step);
    check_copy_text(text_step);
  }
  return 0;
}
