#include "slot_reader.hpp"

#include <algorithm>
#include <stdexcept>

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "outbox_reader.hpp"
#include "row_json.hpp"

namespace pgfanout {

namespace {

using namespace std::chrono_literals;

// Status updates go out at least this often: wal_sender_timeout is 60 s by default, and
// a quiet stream's keepalives then carry the position the slot may move to.
constexpr auto kStatusInterval = 5s;

// JSON text of json and jsonb columns that is the JSON null: listed in json_nulls, as the
// trigger capture does, to tell it from SQL NULL.
bool is_json_null(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\n' || text.front() == '\t' || text.front() == '\r'))
    text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\n' || text.back() == '\t' || text.back() == '\r'))
    text.remove_suffix(1);
  return text == "null";
}

// Adds column's text form to the object texts (opened here, closed by the caller) when
// its JSON form would not read back as the same value (README, "Message format").
void append_text_form(std::string& texts, std::string_view column, const TypeShape& shape, std::string_view text) {
  if (shape.text_need == TypeShape::TextNeed::None ||
      (shape.text_need == TypeShape::TextNeed::Bounds && !has_array_bounds(text)))
    return;
  texts += texts.empty() ? '{' : ',';
  append_json_string(texts, column);
  texts += ':';
  append_json_string(texts, text);
}

}  // namespace

SlotReader::SlotReader(const std::string& conninfo, pqxx::connection& sql, std::string slot, std::int64_t epoch)
    : sql_(sql), slot_(std::move(slot)), epoch_(epoch), stream_(conninfo, "pgfanout-publisher-stream", kPinnedSettings),
      types_(sql) {
  {
    pqxx::nontransaction tx(sql_);
    auto row = tx.exec1("SELECT lsn::text, last_id FROM pgfanout.logical_position");
    auto lsn = pgoutput::parse_lsn(row[0].c_str());
    if (!lsn) throw std::runtime_error("pgfanout.logical_position holds a bad LSN");
    stored_lsn_ = *lsn;
    last_id_ = row[1].as<std::int64_t>();
  }
  stream_.start_logical(slot_, "proto_version '1', publication_names '\"pgfanout\"'");
  last_status_ = std::chrono::steady_clock::now();
  spdlog::info("streaming replication slot {} (shipped up to {}, last id {})", slot_,
               pgoutput::format_lsn(stored_lsn_), last_id_);
}

std::vector<OutboxChange> SlotReader::read(int max_rows, std::int64_t max_bytes) {
  std::vector<OutboxChange> out;
  std::int64_t bytes = 0;
  while (!switched_back_ && static_cast<int>(out.size()) < max_rows && bytes < max_bytes) {
    auto data = stream_.read();
    if (!data) break;
    handle(*data, out, bytes);
  }
  return out;
}

void SlotReader::handle(std::string_view copy_data, std::vector<OutboxChange>& out, std::int64_t& bytes) {
  auto frame = pgoutput::parse_copy_data(copy_data);
  if (const auto* keepalive = std::get_if<pgoutput::Keepalive>(&frame)) {
    sent_lsn_ = std::max(sent_lsn_, keepalive->wal_end);
    if (keepalive->reply_requested) reply_due_ = true;
    return;
  }
  const auto& data = std::get<pgoutput::XLogData>(frame);
  pgoutput::Message message = pgoutput::parse_message(data.payload);
  // Row changes and Commit belong inside a transaction, Begin outside one: anything else
  // is a broken stream, not a reason to read a transaction that is not there.
  bool opens = std::holds_alternative<pgoutput::Begin>(message);
  bool in_txn_only = std::holds_alternative<pgoutput::Commit>(message) ||
                     std::holds_alternative<pgoutput::Insert>(message) ||
                     std::holds_alternative<pgoutput::Update>(message) ||
                     std::holds_alternative<pgoutput::Delete>(message) ||
                     std::holds_alternative<pgoutput::Truncate>(message);
  if ((opens && in_transaction_) || (in_txn_only && !in_transaction_)) {
    throw pgoutput::ProtocolError(opens ? "a Begin came inside a transaction"
                                        : "a change or Commit came outside a transaction");
  }
  std::size_t before = out.size();
  if (auto* begin = std::get_if<pgoutput::Begin>(&message)) {
    in_transaction_ = true;
    // A transaction that committed before the shipped position was shipped before a
    // restart whose status update did not reach the server.
    skipping_ = begin->final_lsn < stored_lsn_;
    switch_in_txn_ = false;
    truncated_.clear();
    commit_time_ = begin->commit_time;
    if (!skipping_) txns_.push_back(Txn{0, begin->commit_time, last_id_, 0, false, false});
  } else if (auto* commit = std::get_if<pgoutput::Commit>(&message)) {
    in_transaction_ = false;
    sent_lsn_ = std::max(sent_lsn_, commit->end_lsn);
    if (!skipping_) {
      txns_.back().end_lsn = commit->end_lsn;
      txns_.back().committed = true;
      txns_.back().switch_back = switch_in_txn_;
    }
    // Also when the switch was shipped before a restart: the slot was not dropped then.
    if (switch_in_txn_) switched_back_ = true;
    skipping_ = false;
    confirmed(0);
  } else if (auto* rel = std::get_if<pgoutput::Relation>(&message)) {
    on_relation(std::move(*rel));
  } else if (std::holds_alternative<pgoutput::Type>(message)) {
    types_.forget_all();
  } else if (auto* update = std::get_if<pgoutput::Update>(&message);
             update && relations_.contains(update->relid) && relations_.at(update->relid).is_capture_table) {
    // set_capture() wrote the mode: a switch back to triggers ends what the slot holds.
    const RelationInfo& r = relations_.at(update->relid);
    for (std::size_t i = 0; i < r.relation.columns.size() && i < update->row.size(); ++i) {
      if (r.relation.columns[i].name == "mode" && update->row[i].kind == pgoutput::ValueKind::Text &&
          update->row[i].bytes == "trigger")
        switch_in_txn_ = true;
    }
    return;
  } else if (const RelationInfo* r = partition_truncates_of(message)) {
    // Only the rows written count: the capture deletes them again at once (and renews a
    // TRUNCATE row while it checks it).
    if (const auto* insert = std::get_if<pgoutput::Insert>(&message); insert && !skipping_)
      partition_truncate(*r, insert->row, out);
  } else if (skipping_ || !keyed(message)) {
    return;
  } else if (auto* insert = std::get_if<pgoutput::Insert>(&message)) {
    const RelationInfo& r = relation(insert->relid);
    if (r.is_capture_table) return;
    OutboxChange c = change(r, Op::Insert);
    append_row(c.new_row, c.json_nulls, c.new_text, r, insert->row, nullptr);
    out.push_back(std::move(c));
  } else if (auto* update = std::get_if<pgoutput::Update>(&message)) {
    const RelationInfo& r = relation(update->relid);
    OutboxChange c = change(r, Op::Update);
    const pgoutput::Tuple* old = update->old_kind == 'O' ? &update->old : nullptr;
    append_row(c.new_row, c.json_nulls, c.new_text, r, update->row, old);
    append_key(c.old_key, c.old_text, r, update->old_kind != 0 ? update->old : update->row);
    out.push_back(std::move(c));
  } else if (auto* del = std::get_if<pgoutput::Delete>(&message)) {
    const RelationInfo& r = relation(del->relid);
    if (r.is_capture_table) return;
    OutboxChange c = change(r, Op::Delete);
    append_key(c.old_key, c.old_text, r, del->old);
    out.push_back(std::move(c));
  } else if (auto* truncate = std::get_if<pgoutput::Truncate>(&message)) {
    for (std::uint32_t relid : truncate->relids) {
      const RelationInfo& r = relation(relid);
      if (r.is_capture_table || r.partition_truncates) continue;
      if (!truncated_.empty() && truncated_.contains(routing_key(r.relation.schema, r.relation.name))) continue;
      out.push_back(change(r, Op::Truncate));
    }
  }
  for (std::size_t i = before; i < out.size(); ++i) {
    OutboxChange& c = out[i];
    if (!truncated_.empty() && c.op != Op::Truncate) truncated_.erase(routing_key(c.schema, c.table));
    c.id = ++last_id_;
    txns_.back().last_id = c.id;
    ++txns_.back().pending;
    bytes += static_cast<std::int64_t>(c.new_row.size() + c.old_key.size() + c.new_text.size() + c.old_text.size());
  }
}

void SlotReader::on_relation(pgoutput::Relation relation) {
  types_.forget_all();
  RelationInfo info;
  info.is_capture_table = relation.schema == "pgfanout" && relation.name == "capture";
  if (relation.schema == "pgfanout" && relation.name == "partition_truncates") {
    auto column = [&](std::string_view name) {
      auto it = std::find_if(relation.columns.begin(), relation.columns.end(),
                             [&](const pgoutput::Column& c) { return c.name == name; });
      if (it == relation.columns.end()) {
        throw std::runtime_error("column " + std::string(name) +
                                 " of pgfanout.partition_truncates is not in the stream: run sql/install.sql again");
      }
      return static_cast<std::size_t>(it - relation.columns.begin());
    };
    info.partition_truncates =
        PartitionTruncateColumns{column("root_schema"), column("root_name"), column("op"), column("old_key"),
                                 column("old_text")};
  } else if (!info.is_capture_table) {
    // The key of a table tracked now; or, for one untracked since its changes were
    // written (they are still published), its primary key as it is now. pgoutput also
    // describes a partition before a change it publishes under its root's name; and a
    // table dropped since has no key to find: a change of either is wrong or skipped.
    pqxx::nontransaction tx(sql_);
    auto rows = tx.exec_params(
        "SELECT coalesce((SELECT key_columns FROM pgfanout.tracked WHERE relid = $1::oid), "
        "                pgfanout.primary_key($1::oid::regclass))",
        std::to_string(relation.oid));
    info.tracked = !rows.empty() && !rows[0][0].is_null();
    auto keys = info.tracked ? rows[0][0].as_array() : pqxx::array_parser("{}");
    for (auto item = keys.get_next(); item.first != pqxx::array_parser::done; item = keys.get_next()) {
      if (item.first != pqxx::array_parser::string_value) continue;
      auto it = std::find_if(relation.columns.begin(), relation.columns.end(),
                             [&](const pgoutput::Column& c) { return c.name == item.second; });
      if (it == relation.columns.end()) {
        throw std::runtime_error("key column " + item.second + " of " +
                                 routing_key(relation.schema, relation.name) + " is not in the stream");
      }
      info.key.push_back(static_cast<std::size_t>(it - relation.columns.begin()));
    }
  }
  info.relation = std::move(relation);
  relations_[info.relation.oid] = std::move(info);
}

bool SlotReader::keyed(const pgoutput::Message& message) {
  std::uint32_t relid = 0;
  if (const auto* m = std::get_if<pgoutput::Insert>(&message)) relid = m->relid;
  if (const auto* m = std::get_if<pgoutput::Update>(&message)) relid = m->relid;
  if (const auto* m = std::get_if<pgoutput::Delete>(&message)) relid = m->relid;
  if (relid == 0) return true;
  const RelationInfo& r = relation(relid);
  if (r.tracked || r.is_capture_table) return true;
  // Dropped since (a table untracked since keeps its primary key): nothing to replicate
  // it to any more.
  spdlog::warn("skipping a change of table {}, which is neither tracked nor has a primary key any more",
               routing_key(r.relation.schema, r.relation.name));
  return false;
}

const SlotReader::RelationInfo& SlotReader::relation(std::uint32_t oid) const {
  auto it = relations_.find(oid);
  if (it == relations_.end()) {
    throw pgoutput::ProtocolError("a change of relation " + std::to_string(oid) + " came before its Relation message");
  }
  return it->second;
}

OutboxChange SlotReader::change(const RelationInfo& rel, Op op) {
  return change(rel.relation.schema, rel.relation.name, op);
}

OutboxChange SlotReader::change(std::string schema, std::string table, Op op) {
  OutboxChange c;
  c.schema = std::move(schema);
  c.table = std::move(table);
  c.op = op;
  c.ts = pgoutput::iso_utc(commit_time_);
  return c;
}

const SlotReader::RelationInfo* SlotReader::partition_truncates_of(const pgoutput::Message& message) const {
  std::uint32_t relid = 0;
  if (const auto* m = std::get_if<pgoutput::Insert>(&message)) relid = m->relid;
  if (const auto* m = std::get_if<pgoutput::Update>(&message)) relid = m->relid;
  if (const auto* m = std::get_if<pgoutput::Delete>(&message)) relid = m->relid;
  if (relid == 0) return nullptr;
  const RelationInfo& r = relation(relid);
  return r.partition_truncates ? &r : nullptr;
}

void SlotReader::partition_truncate(const RelationInfo& rel, const pgoutput::Tuple& row,
                                    std::vector<OutboxChange>& out) {
  const PartitionTruncateColumns& at = *rel.partition_truncates;
  auto text = [&](std::size_t i) -> const std::string* {
    return i < row.size() && row[i].kind == pgoutput::ValueKind::Text ? &row[i].bytes : nullptr;
  };
  const std::string* schema = text(at.root_schema);
  const std::string* name = text(at.root_name);
  const std::string* op = text(at.op);
  const std::string* old_key = text(at.old_key);
  // The table's policy and NOT NULL columns admit nothing else; a row that is still odd
  // has no change to give, and stopping on it would stop the whole stream.
  if (schema && name && op && *op == "DELETE" && old_key) {
    OutboxChange c = change(*schema, *name, Op::Delete);
    c.old_key = *old_key;  // jsonb text, as the outbox gives it
    if (const std::string* old_text = text(at.old_text)) c.old_text = *old_text;
    out.push_back(std::move(c));
  } else if (schema && name && op && *op == "TRUNCATE") {
    out.push_back(change(*schema, *name, Op::Truncate));
    truncated_.insert(routing_key(*schema, *name));
  } else {
    spdlog::warn("skipping a row of pgfanout.partition_truncates that is neither a DELETE with a key nor a TRUNCATE");
  }
}

bool SlotReader::append_converted(std::string& out, const RelationInfo& rel, const pgoutput::Column& column,
                                  std::shared_ptr<const TypeShape>& shape, std::string_view text) {
  const std::size_t mark = out.size();
  try {
    append_value_json(out, *shape, text);
    return true;
  } catch (const std::runtime_error&) {
    out.resize(mark);
  }
  // The text does not fit the shape. pgoutput sends no Relation message when a composite
  // type a column uses is altered (ALTER TYPE ... ADD/DROP ATTRIBUTE), so the shape may be
  // older than the type: read the types again, at most once a second per type, so that a
  // backlog of values that fit no shape does not read the catalog for each.
  const auto now = std::chrono::steady_clock::now();
  auto [last, first_time] = reread_at_.try_emplace(column.type_oid, now);
  const bool reread = first_time || now - last->second >= kTypeRereadInterval;
  if (reread) {
    last->second = now;
    types_.forget_all();
    shape = types_.shape(column.type_oid);
    try {
      append_value_json(out, *shape, text);
      return true;
    } catch (const std::runtime_error&) {
      out.resize(mark);
    }
  }
  // Written with the type as it was before an ALTER TYPE that the catalog no longer shows
  // (the publisher was behind): no JSON form of it can be told, and throwing would stop
  // the slot at this change for good. The value goes as its text, which the listener
  // applies as it applies any text form, or dead-letters if the replica's type cannot
  // read it. Logged once per reread, not per value.
  if (reread) {
    spdlog::warn("a value of column {} of {} does not fit its type as the catalog has it now; sending it, and "
                 "values like it, as their text form",
                 column.name, routing_key(rel.relation.schema, rel.relation.name));
  }
  append_json_string(out, text);
  return false;
}

void SlotReader::append_row(std::string& out, std::string& json_nulls, std::string& texts, const RelationInfo& rel,
                            const pgoutput::Tuple& row, const pgoutput::Tuple* old) {
  const auto& columns = rel.relation.columns;
  if (row.size() != columns.size()) {
    throw pgoutput::ProtocolError("a row of " + routing_key(rel.relation.schema, rel.relation.name) + " has " +
                                  std::to_string(row.size()) + " columns, its relation " +
                                  std::to_string(columns.size()));
  }
  out += '{';
  for (std::size_t i = 0; i < columns.size(); ++i) {
    if (i) out += ',';
    append_json_string(out, columns[i].name);
    out += ':';
    const pgoutput::Value* value = &row[i];
    if (value->kind == pgoutput::ValueKind::Unchanged) {
      // An unchanged TOASTed value: REPLICA IDENTITY FULL (set by track()) puts it in the
      // old row.
      if (old == nullptr || i >= old->size() || (*old)[i].kind == pgoutput::ValueKind::Unchanged) {
        throw std::runtime_error("column " + columns[i].name + " of " +
                                 routing_key(rel.relation.schema, rel.relation.name) +
                                 " came as an unchanged TOASTed value without the old row: its REPLICA "
                                 "IDENTITY is not FULL; run SELECT pgfanout.track(...) on it again");
      }
      value = &(*old)[i];
    }
    switch (value->kind) {
      case pgoutput::ValueKind::Null: out += "null"; break;
      case pgoutput::ValueKind::Text: {
        auto shape = types_.shape(columns[i].type_oid);
        if ((shape->kind == TypeShape::Kind::Json || shape->kind == TypeShape::Kind::Jsonb) &&
            is_json_null(value->bytes)) {
          out += "null";
          json_nulls += json_nulls.empty() ? '[' : ',';
          append_json_string(json_nulls, columns[i].name);
          append_text_form(texts, columns[i].name, *shape, value->bytes);
        } else if (append_converted(out, rel, columns[i], shape, value->bytes)) {
          append_text_form(texts, columns[i].name, *shape, value->bytes);
        } else {
          // Sent as its text form, as a type whose JSON form does not read back is.
          texts += texts.empty() ? '{' : ',';
          append_json_string(texts, columns[i].name);
          texts += ':';
          append_json_string(texts, value->bytes);
        }
        break;
      }
      default:
        throw pgoutput::ProtocolError("column " + columns[i].name + " came in binary form, which was not asked for");
    }
  }
  out += '}';
  if (!json_nulls.empty()) json_nulls += ']';
  if (!texts.empty()) texts += '}';
}

void SlotReader::append_key(std::string& out, std::string& texts, const RelationInfo& rel, const pgoutput::Tuple& row) {
  out += '{';
  bool first = true;
  for (std::size_t i : rel.key) {
    if (i >= row.size() || row[i].kind != pgoutput::ValueKind::Text) {
      throw std::runtime_error("the old row of a change of " + routing_key(rel.relation.schema, rel.relation.name) +
                               " lacks key column " + rel.relation.columns[i].name);
    }
    if (!first) out += ',';
    first = false;
    append_json_string(out, rel.relation.columns[i].name);
    out += ':';
    const auto shape = types_.shape(rel.relation.columns[i].type_oid);
    append_value_json(out, *shape, row[i].bytes);
    append_text_form(texts, rel.relation.columns[i].name, *shape, row[i].bytes);
  }
  out += '}';
  if (!texts.empty()) texts += '}';
}

void SlotReader::confirmed(std::size_t n) {
  std::optional<Txn> done;
  while (!txns_.empty()) {
    Txn& front = txns_.front();
    std::size_t take = std::min(n, front.pending);
    front.pending -= take;
    n -= take;
    if (front.pending > 0 || !front.committed) break;
    done = front;
    txns_.pop_front();
  }
  if (!done || done->end_lsn <= flushed_) return;
  // The position is stored before the server hears of it: a restart then skips what was
  // shipped, and gives what follows the ids that follow.
  if (done->end_lsn > stored_lsn_) {
    pqxx::work tx(sql_);
    tx.exec0("SET LOCAL synchronous_commit = on");
    auto updated = tx.exec_params(
        "UPDATE pgfanout.logical_position SET lsn = $1::pg_lsn, last_id = $2 "
        "WHERE EXISTS (SELECT FROM pgfanout.publisher_lease WHERE holder_pid = pg_backend_pid() AND epoch = $3)",
        pgoutput::format_lsn(done->end_lsn), done->last_id, epoch_);
    if (updated.affected_rows() != 1) {
      throw LeaseLost("this publisher no longer holds the lease of epoch " + std::to_string(epoch_) +
                      "; the slot stays where it was shipped to for the new leader");
    }
    tx.commit();
    stored_lsn_ = done->end_lsn;
  }
  // The server keeps the switch back to triggers until the publisher drops the slot: a
  // publisher that stops before the drop gets it again, and drops the slot then.
  if (done->switch_back) return;
  flushed_ = done->end_lsn;
  send_status(false);
}

double SlotReader::lag_seconds() const {
  if (txns_.empty()) return 0;
  return static_cast<double>(std::max<std::int64_t>(pgoutput::pg_now_us() - txns_.front().commit_time, 0)) / 1e6;
}

void SlotReader::tick() {
  // With nothing in flight, everything the server has sent is done with: the slot may
  // move on even while no tracked table changes and other WAL is written.
  bool moved = idle() && !switched_back_ && sent_lsn_ > flushed_;
  if (moved) flushed_ = sent_lsn_;
  if (moved || reply_due_ || std::chrono::steady_clock::now() - last_status_ >= kStatusInterval) send_status(false);
}

void SlotReader::send_status(bool reply_requested) {
  stream_.send(pgoutput::standby_status_update(flushed_, flushed_, flushed_, pgoutput::pg_now_us(), reply_requested));
  reply_due_ = false;
  last_status_ = std::chrono::steady_clock::now();
}

}  // namespace pgfanout
