#include "apply_plan.hpp"

#include <algorithm>
#include <charconv>
#include <optional>
#include <set>
#include <unordered_map>

#include "pgfanout/pg_connection.hpp"

namespace pgfanout {

std::string TableInfo::qualified() const { return quote_ident(schema) + "." + quote_ident(name); }

bool key_changed(const ParsedChange& c) {
  if (c.op != Op::Update || !c.key().is_object() || !c.row().is_object()) return false;
  // Compared as text: both come from jsonb output on the primary (or are both text
  // forms), so equal values print alike. A foreign producer that formats them
  // differently gets a delete and an upsert of the same key, which lands in the same state.
  for (const auto& [k, v] : c.key().members()) {
    const std::string* now = c.row().find(k);
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
  bool nulls = step.json_nulls.size() == step.rows.size();
  bool texts = step.texts.size() == step.rows.size();
  std::vector<std::optional<std::string>> keys;
  keys.reserve(step.rows.size());
  std::unordered_map<std::string, std::size_t> last;
  last.reserve(step.rows.size());
  for (std::size_t i = 0; i < step.rows.size(); ++i) {
    keys.push_back(key_of(*step.rows[i], *step.table));
    if (keys.back()) last[*keys.back()] = i;
  }
  std::vector<const RawObject*> kept;
  std::vector<const std::vector<std::string>*> kept_nulls;
  std::vector<const std::vector<std::string>*> kept_texts;
  kept.reserve(step.rows.size());
  for (std::size_t i = 0; i < step.rows.size(); ++i) {
    if (keys[i] && last[*keys[i]] != i) continue;
    kept.push_back(step.rows[i]);
    if (nulls) kept_nulls.push_back(step.json_nulls[i]);
    if (texts) kept_texts.push_back(step.texts[i]);
  }
  step.rows = std::move(kept);
  if (nulls) step.json_nulls = std::move(kept_nulls);
  if (texts) step.texts = std::move(kept_texts);
}

}  // namespace

std::vector<ApplyStep> plan_steps(const std::vector<const ParsedChange*>& changes,
                                  const std::vector<const TableInfo*>& tables) {
  std::vector<ApplyStep> steps;
  auto add = [&](std::size_t index, StepKind kind, const RawObject* row,
                 const std::vector<std::string>* json_nulls = nullptr,
                 const std::vector<std::string>* texts = nullptr, bool insert = false) {
    const TableInfo* table = tables[index];
    bool joins = !steps.empty() && steps.back().kind == kind &&
                 (kind == StepKind::Truncate || steps.back().table == table);
    if (!joins) steps.push_back(ApplyStep{table, kind, {}, {}, {}, {}, {}});
    ApplyStep& step = steps.back();
    if (kind == StepKind::Truncate &&
        std::find(step.truncated.begin(), step.truncated.end(), table) == step.truncated.end()) {
      step.truncated.push_back(table);
    }
    if (row) step.rows.push_back(row);
    if (row && kind == StepKind::Upsert) {
      step.json_nulls.push_back(json_nulls);
      step.texts.push_back(texts);
      step.inserts_only = step.inserts_only && insert;
    }
    if (step.changes.empty() || step.changes.back() != index) step.changes.push_back(index);
  };
  for (std::size_t i = 0; i < changes.size(); ++i) {
    const ParsedChange& c = *changes[i];
    switch (c.op) {
      case Op::Insert: add(i, StepKind::Upsert, &c.row(), &c.json_nulls, &c.texts, true); break;
      case Op::Update:
        if (key_changed(c)) add(i, StepKind::Delete, &c.key());
        add(i, StepKind::Upsert, &c.row(), &c.json_nulls, &c.texts);
        break;
      case Op::Delete: add(i, StepKind::Delete, &c.key()); break;
      case Op::Truncate: add(i, StepKind::Truncate, nullptr); break;
    }
  }
  for (auto& step : steps) keep_last_per_key(step);
  return steps;
}

namespace {

// jsonb_to_recordset reads a JSON null as SQL NULL whatever the column type. Rows with a
// JSON null in a json/jsonb column carry this extra member, the positions (in the step's
// column list) of those columns, and the statement puts 'null' back there.
constexpr const char* kJsonNullsMember = "pgfanout.json_nulls";
// A text form (README, "Message format") arrives as a JSON string, which the input
// function of any type but json and jsonb reads as its text. A json/jsonb column would
// keep the string itself: rows whose text form is in such a column list its position in
// this member, and the statement casts the string's contents there instead.
constexpr const char* kJsonTextsMember = "pgfanout.json_texts";

// Which function reads the rows: jsonb_to_recordset, except for a batch past what jsonb
// holds (256 MB; json holds 1 GB). bench/apply_forms.sh measures the forms on the replica:
// json_to_recordset costs the same for scalars and arrays and half again more for rows
// with a jsonb column (it parses each such value's text again); COPY into a staging table
// saves up to a quarter, but needs every value in COPY's text form (README, "Performance").
constexpr std::size_t kJsonbBatchLimit = 200u << 20;
bool read_as_json(std::size_t rows_bytes) { return rows_bytes > kJsonbBatchLimit; }

// `jsonb_to_recordset($1::jsonb) AS k("a" int4, ...)` over just these columns: unlike
// jsonb_populate_recordset over the whole row type, a column the rows do not carry is
// not built at all, so a NOT NULL domain elsewhere in the table cannot reject it.
std::string recordset(const TableInfo& t, const std::vector<std::string>& columns, std::size_t rows_bytes,
                      bool json_nulls = false, bool json_texts = false) {
  std::string out = read_as_json(rows_bytes) ? "json_to_recordset($1::json) AS k(" : "jsonb_to_recordset($1::jsonb) AS k(";
  for (std::size_t i = 0; i < columns.size(); ++i) {
    if (i) out += ", ";
    out += quote_ident(columns[i]);
    out += ' ';
    if (auto base = t.json_domain_base.find(columns[i]); base != t.json_domain_base.end()) {
      out += base->second;
      continue;
    }
    auto type = t.types.find(columns[i]);
    out += type == t.types.end() ? std::string("text") : type->second;
  }
  for (auto [wanted, member] : {std::pair{json_nulls, kJsonNullsMember}, std::pair{json_texts, kJsonTextsMember}}) {
    if (!wanted) continue;
    out += ", ";
    out += quote_ident(member);
    out += " int[]";
  }
  out += ')';
  return out;
}

using ColumnLists = std::vector<const std::vector<std::string>*>;

// Whether some row of the step lists a column (almost never): the cheap test that keeps
// every other step from working out column positions.
bool any_listed(const ColumnLists& lists) {
  return std::any_of(lists.begin(), lists.end(),
                     [](const std::vector<std::string>* names) { return names && !names->empty(); });
}

// Positions in `cols` of the json/jsonb columns that some row of the step lists (empty
// for almost every step).
std::vector<std::size_t> json_positions(const ApplyStep& step, const ColumnLists& lists,
                                        const std::vector<std::string>& cols) {
  std::vector<std::size_t> out;
  const TableInfo& t = *step.table;
  // A real column of either member's name: give up.
  if (t.types.count(kJsonNullsMember) || t.types.count(kJsonTextsMember)) return out;
  for (const auto* names : lists) {
    if (!names) continue;
    for (const auto& name : *names) {
      if (!t.json_columns.count(name)) continue;
      auto it = std::find(cols.begin(), cols.end(), name);
      if (it == cols.end()) continue;
      auto pos = static_cast<std::size_t>(it - cols.begin());
      if (std::find(out.begin(), out.end(), pos) == out.end()) out.push_back(pos);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct JsonMarks {
  std::vector<std::size_t> nulls;
  std::vector<std::size_t> texts;
};

JsonMarks json_marks(const ApplyStep& step, const std::vector<std::string>& cols) {
  JsonMarks m;
  if (step.kind != StepKind::Upsert) return m;
  if (any_listed(step.json_nulls)) m.nulls = json_positions(step, step.json_nulls, cols);
  if (any_listed(step.texts)) m.texts = json_positions(step, step.texts, cols);
  return m;
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

// The member `member` listing which of `positions` name a column in `names` that `row`
// carries. A row with none gets the member as null all the same: the statement reads the
// member for every row, and a row's own member of that name (only a forged message has
// one) must not count; the last of a duplicated name is the one jsonb keeps.
std::string positions_member(const char* member, const std::vector<std::size_t>& positions,
                             const std::vector<std::string>* names, const std::vector<std::string>& cols,
                             const RawObject& row) {
  std::string list;
  for (std::size_t p : positions) {
    if (!names || std::find(names->begin(), names->end(), cols[p]) == names->end()) continue;
    if (!row.find(cols[p])) continue;  // as COPY: a column the row lacks is NULL, listed or not
    if (!list.empty()) list += ',';
    list += std::to_string(p);
  }
  if (list.empty()) return ",\"" + std::string(member) + "\":null";
  return ",\"" + std::string(member) + "\":[" + list + "]";
}

}  // namespace

// The columns an upsert step writes: those its rows carry, in table order. Only columns
// the rows carry are written, so a replica column the primary lacks keeps its own value
// (or default) instead of being overwritten with NULL.
std::vector<std::string> upsert_columns(const ApplyStep& step) {
  const TableInfo& t = *step.table;
  std::set<std::string, std::less<>> present;
  const RawObject::Members* previous = nullptr;
  auto same_names = [](const RawObject::Members& a, const RawObject::Members& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                      [](const auto& x, const auto& y) { return x.first == y.first; });
  };
  for (const auto* row : step.rows) {
    // The rows of a run nearly always carry the same names in the same order: only a row
    // whose names differ from the one before can add any.
    const RawObject::Members& members = row->members();
    if (previous && same_names(*previous, members)) continue;
    for (const auto& member : members) present.insert(member.first);
    previous = &members;
  }
  std::vector<std::string> cols;
  for (const auto& c : t.columns) {
    if (present.count(c)) cols.push_back(c);
  }
  return cols;
}

std::string step_sql(const ApplyStep& step, std::size_t rows_bytes) {
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
    std::string sql = "DELETE FROM " + q + " AS t USING " + recordset(t, t.key_columns, rows_bytes) + " WHERE ";
    for (std::size_t i = 0; i < t.key_columns.size(); ++i) {
      if (i) sql += " AND ";
      std::string c = quote_ident(t.key_columns[i]);
      sql += "t." + c + " = k." + c;
    }
    return sql;
  }
  std::vector<std::string> cols = upsert_columns(step);
  JsonMarks marks = json_marks(step, cols);
  std::string values;
  for (std::size_t i = 0; i < cols.size(); ++i) {
    if (i) values += ", ";
    std::string qc = "k." + quote_ident(cols[i]);
    bool text = std::binary_search(marks.texts.begin(), marks.texts.end(), i);
    bool null = std::binary_search(marks.nulls.begin(), marks.nulls.end(), i);
    if (!text && !null) {
      values += qc;
      continue;
    }
    const std::string& type = t.types.at(cols[i]);
    values += "CASE";
    if (text) {
      values += " WHEN " + std::to_string(i) + " = ANY (k." + quote_ident(kJsonTextsMember) + ") THEN (" + qc +
                " #>> '{}')::" + type;
    }
    if (null) {
      values += " WHEN " + std::to_string(i) + " = ANY (k." + quote_ident(kJsonNullsMember) + ") THEN 'null'::" + type;
    }
    values += " ELSE " + qc + " END";
  }
  std::string list = joined(cols);
  std::string sql = "INSERT INTO " + q + " (" + list + ") OVERRIDING SYSTEM VALUE SELECT " + values + " FROM " +
                    recordset(t, cols, rows_bytes, !marks.nulls.empty(), !marks.texts.empty()) + " ON CONFLICT (" +
                    joined(t.key_columns) + ") DO ";
  std::string updates;
  for (const auto& c : cols) {
    if (std::find(t.key_columns.begin(), t.key_columns.end(), c) != t.key_columns.end()) continue;
    if (t.identity_always.count(c)) continue;
    if (!updates.empty()) updates += ", ";
    std::string qc = quote_ident(c);
    updates += qc + " = EXCLUDED." + qc;
  }
  sql += updates.empty() ? "NOTHING" : "UPDATE SET " + updates;
  return sql;
}

std::string rows_json(const ApplyStep& step) {
  std::vector<std::string> cols;
  JsonMarks marks;
  if (step.kind == StepKind::Upsert && (any_listed(step.json_nulls) || any_listed(step.texts))) {
    cols = upsert_columns(step);
    marks = json_marks(step, cols);
  }
  std::string out = "[";
  for (std::size_t i = 0; i < step.rows.size(); ++i) {
    if (i) out += ',';
    std::string extra;
    const auto* nulls = i < step.json_nulls.size() ? step.json_nulls[i] : nullptr;
    const auto* texts = i < step.texts.size() ? step.texts[i] : nullptr;
    if (!marks.nulls.empty()) extra += positions_member(kJsonNullsMember, marks.nulls, nulls, cols, *step.rows[i]);
    if (!marks.texts.empty()) extra += positions_member(kJsonTextsMember, marks.texts, texts, cols, *step.rows[i]);
    if (extra.empty()) {
      out += step.rows[i]->dump();
      continue;
    }
    std::string row = step.rows[i]->dump();  // a non-empty object: '}' ends it
    row.pop_back();
    row += extra;
    row += '}';
    out += row;
  }
  out += ']';
  return out;
}

namespace {

// A JSON text as one COPY field: COPY's text format reads a backslash and the line and
// field separators only when escaped.
void json_text_to_copy(std::string_view text, std::string& out) {
  std::size_t from = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char* escape = nullptr;
    switch (text[i]) {
      case '\\': escape = "\\\\"; break;
      case '\n': escape = "\\n"; break;
      case '\r': escape = "\\r"; break;
      case '\t': escape = "\\t"; break;
      default: continue;
    }
    out.append(text, from, i - from);
    out += escape;
    from = i + 1;
  }
  out.append(text, from, text.size() - from);
}

}  // namespace

bool json_string_to_copy(std::string_view token, std::string& out) {
  if (token.size() < 2 || token.front() != '"' || token.back() != '"') return false;
  std::string_view s = token.substr(1, token.size() - 2);
  std::size_t from = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == '"') return false;  // raw in a JSON string: not JSON
    if (c != '\\') continue;
    out.append(s, from, i - from);
    if (++i == s.size()) return false;
    switch (s[i]) {
      // JSON's and COPY's escapes of these are the same two characters.
      case '\\': case 'b': case 'f': case 'n': case 'r': case 't':
        out += '\\';
        out += s[i];
        break;
      case '"': out += '"'; break;
      case '/': out += '/'; break;
      case 'u': {
        // Only ASCII: jsonb_in turns other escapes into the server's encoding or refuses
        // them (SQL_ASCII, a character the encoding lacks), which a COPY of their UTF-8
        // would not; to_jsonb writes such characters as they are, never escaped.
        unsigned cp = 0;
        const char* digits = s.data() + i + 1;
        if (s.size() - i < 5 || std::from_chars(digits, digits + 4, cp, 16).ptr != digits + 4) return false;
        i += 4;
        if (cp == 0 || cp >= 0x80) return false;
        if (cp < 0x20 || cp == '\\') {
          // Octal, which COPY reads as at most three digits, whatever follows.
          out += '\\';
          out += static_cast<char>('0' + ((cp >> 6) & 7));
          out += static_cast<char>('0' + ((cp >> 3) & 7));
          out += static_cast<char>('0' + (cp & 7));
        } else {
          out += static_cast<char>(cp);
        }
        break;
      }
      default: return false;
    }
    from = i + 1;
  }
  out.append(s, from, s.size() - from);
  return true;
}

std::string copy_target(const ApplyStep& step, const std::vector<std::string>& columns) {
  return step.table->qualified() + " (" + joined(columns) + ")";
}

namespace {

// Whether a JSON number reads the same through the recordset (jsonb_in's numeric, then
// numeric's text into the column's input function) and through COPY (its text straight
// into the input function): `exponent` where the input reads an exponent as numeric does
// (float, numeric), `negative_zero` where it drops the sign of a zero as numeric does
// (integers, numeric). A number longer than numeric is sure to take is left to the
// statement, which refuses what jsonb refuses.
bool number_copies_alike(std::string_view number, bool exponent, bool negative_zero) {
  if (number.size() > 100) return false;
  std::size_t e = number.find_first_of("eE");
  if (e != std::string_view::npos) {
    std::string_view digits = number.substr(e + 1);
    if (!digits.empty() && (digits.front() == '+' || digits.front() == '-')) digits.remove_prefix(1);
    if (!exponent || digits.size() > 3) return false;  // |exponent| < 1000
  }
  if (number.front() == '-' && !negative_zero &&
      number.substr(0, e).find_first_of("123456789") == std::string_view::npos) {
    return false;
  }
  return true;
}

bool has_non_ascii(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

// Whether jsonb_in takes a member the table lacks as the recordset's $1::jsonb would
// (COPY skips it): scalars it surely takes; objects and arrays are left to the statement.
// So are a name jsonb refuses (\u0000) or could (the statement's own members), and, in a
// replica whose encoding is not UTF8, any character beyond ASCII or escape, which that
// encoding may lack.
bool unknown_member_copies_alike(std::string_view name, const std::string& raw, bool server_utf8) {
  if (raw.empty() || name.find('\0') != std::string_view::npos || name == kJsonNullsMember ||
      name == kJsonTextsMember) {
    return false;
  }
  if (!server_utf8 && (has_non_ascii(name) || has_non_ascii(raw) || raw.find("\\u") != std::string::npos)) {
    return false;
  }
  std::string scratch;
  switch (raw.front()) {
    case '"': return json_string_to_copy(raw, scratch);
    case 't': case 'f': case 'n': return true;
    case '{': case '[': return false;
    default: return number_copies_alike(raw, true, true);
  }
}

}  // namespace

bool copy_rows(const ApplyStep& step, const std::vector<std::string>& columns, std::string& out) {
  const TableInfo& t = *step.table;
  // A real column of either member's name: the statement ignores both lists.
  if (t.types.count(kJsonNullsMember) || t.types.count(kJsonTextsMember)) return false;
  const std::size_t n = columns.size();
  // Per column: 0 not json, 1 jsonb (its input reads any JSON text as the recordset would
  // have built it), 2 json or a domain (whose text the recordset would have normalised).
  std::vector<char> json(n, 0);
  std::vector<char> exponent(n, 0), negative_zero(n, 0);  // number_copies_alike
  std::unordered_map<std::string_view, std::size_t> position;
  position.reserve(n);
  for (std::size_t c = 0; c < n; ++c) {
    position.emplace(columns[c], c);
    const std::string& type = t.types.at(columns[c]);
    if (t.json_columns.count(columns[c])) json[c] = type == "jsonb" ? 1 : 2;
    bool numeric = type == "numeric" || type.starts_with("numeric(");
    exponent[c] = numeric || type == "double precision" || type == "real";
    negative_zero[c] = numeric || type == "bigint" || type == "integer" || type == "smallint";
  }
  auto listed = [](const std::vector<const std::vector<std::string>*>& lists, std::size_t row,
                   const std::string& name) {
    if (row >= lists.size() || !lists[row]) return false;
    const auto& names = *lists[row];
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  std::vector<const std::string*> values(n);
  for (std::size_t r = 0; r < step.rows.size(); ++r) {
    std::fill(values.begin(), values.end(), nullptr);
    // The last of a duplicated name wins, as in jsonb. Members usually come in the
    // table's order, so the next column is tried before the map.
    std::size_t guess = 0;
    for (const auto& [name, raw] : step.rows[r]->members()) {
      std::size_t at = n;
      if (guess < n && columns[guess] == name) {
        at = guess;
      } else if (auto it = position.find(name); it != position.end()) {
        at = it->second;
      }
      if (at == n) {
        if (!unknown_member_copies_alike(name, raw, t.server_utf8)) return false;
        continue;
      }
      // A name twice (never from a primary): the last value wins, as in jsonb, which
      // still reads the earlier one and may refuse it.
      if (values[at] && !unknown_member_copies_alike(name, *values[at], t.server_utf8)) return false;
      values[at] = &raw;
      guess = at + 1;
    }
    for (std::size_t c = 0; c < n; ++c) {
      if (c) out += '\t';
      const std::string* v = values[c];
      if (!v || v->empty()) {
        out += "\\N";
        continue;
      }
      const char first = v->front();
      if (json[c]) {
        // As the statement's CASE: the text form first, then the JSON null list (whatever
        // the value), then the value, which for json (not jsonb) only a literal keeps.
        if (listed(step.texts, r, columns[c])) {
          if (first != '"' || !json_string_to_copy(*v, out)) return false;
        } else if (listed(step.json_nulls, r, columns[c])) {
          out += "null";
        } else if (first == 'n') {
          out += "\\N";
        } else if (json[c] == 2 && first != 't' && first != 'f') {
          return false;
        } else if (first == '"' || first == '{' || first == '[' || first == 't' || first == 'f' ||
                   number_copies_alike(*v, true, true)) {
          json_text_to_copy(*v, out);
        } else {
          return false;
        }
        continue;
      }
      switch (first) {
        case '"':
          if (!json_string_to_copy(*v, out)) return false;
          break;
        case 'n': out += "\\N"; break;
        case 't': case 'f': out += *v; break;
        case '{': case '[': return false;
        default:
          if (!number_copies_alike(*v, exponent[c], negative_zero[c])) return false;
          out += *v;
      }
    }
    out += '\n';
  }
  return true;
}

}  // namespace pgfanout
