#include "listener.hpp"

#include <algorithm>
#include <future>
#include <map>
#include <set>
#include <thread>

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "change_parser.hpp"
#include "epoch_fence.hpp"
#include "pgfanout/log_text.hpp"
#include "pgfanout/masking.hpp"
#include "pgfanout/stop_signal.hpp"
#include "pgfanout/pg_connection.hpp"
#include "pgfanout/topic_pattern.hpp"
#include "snapshot.hpp"

namespace pgfanout {

using namespace std::chrono_literals;

namespace {

// How long a stop may take before the process leaves without finishing it (see run()).
constexpr std::chrono::seconds kStopGrace{3};

// The queue exists with other arguments than this listener declares (RabbitMQ refuses to
// change a queue's type or arguments): only the user can resolve it.
class QueueMismatch : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// CREATE SCHEMA needs CREATE on the database even when the schema exists, so it is only
// run when it is missing: a least-privilege listener gets the schema from sql/roles.sql.
constexpr const char* kBookkeepingSql = R"(
DO $$ BEGIN IF to_regnamespace('pgfanout') IS NULL THEN CREATE SCHEMA pgfanout; END IF; END $$;
CREATE TABLE IF NOT EXISTS pgfanout.listener_state (
  queue text PRIMARY KEY,
  last_change_id bigint,
  last_change_ts timestamptz,
  applied_changes bigint NOT NULL DEFAULT 0,
  updated_at timestamptz);
CREATE TABLE IF NOT EXISTS pgfanout.listener_snapshots (
  queue text NOT NULL,
  schema_name text NOT NULL,
  table_name text NOT NULL,
  copied_at timestamptz NOT NULL,
  PRIMARY KEY (queue, schema_name, table_name));
-- Tables a snapshot is copying (committed before its workers write): a start that finds
-- one knows the table's rows as what its own interrupted copy left.
CREATE TABLE IF NOT EXISTS pgfanout.listener_snapshot_copies (
  queue text NOT NULL,
  schema_name text NOT NULL,
  table_name text NOT NULL,
  started_at timestamptz NOT NULL,
  PRIMARY KEY (queue, schema_name, table_name));
CREATE TABLE IF NOT EXISTS pgfanout.listener_bindings (
  queue text NOT NULL,
  exchange text NOT NULL,
  pattern text NOT NULL,
  PRIMARY KEY (queue, exchange, pattern));
CREATE TABLE IF NOT EXISTS pgfanout.listener_epoch (
  queue text PRIMARY KEY,
  epoch bigint NOT NULL,
  updated_at timestamptz NOT NULL);
)";

// How many changes a delivery adds to a batch being gathered, before its body is parsed:
// the packing publisher's count header, within [1, limit]. Only an estimate that ends a
// batch sooner or later: process() takes the count from the body and checks the header.
std::size_t estimated_changes(const Delivery& d, std::size_t limit) {
  for (const auto& [k, v] : d.headers) {
    if (k != kChangeCountHeader) continue;
    if (const auto* n = std::get_if<std::int64_t>(&v)) {
      return static_cast<std::size_t>(std::clamp<std::int64_t>(*n, 1, static_cast<std::int64_t>(limit)));
    }
  }
  return 1;
}

// Dead-letter headers and log lines carry at most this much of an error: a message's
// names and PostgreSQL's errors (which quote values) may be megabytes, and an AMQP
// header table must fit in one frame.
constexpr std::size_t kMaxErrorBytes = 1024;

std::string bounded_error(std::string text) {
  if (text.size() <= kMaxErrorBytes) return text;
  std::size_t cut = kMaxErrorBytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // UTF-8
  text.resize(cut);
  return text + "...";
}

// Whether a message may hold a TRUNCATE change; a false "yes" only makes a batch wait a
// little longer, so a plain text search is enough.
bool may_truncate(const Delivery& d) { return d.body.find("\"TRUNCATE\"") != std::string::npos; }

// How long a batch that ends with a TRUNCATE waits for the change right behind it.
constexpr std::chrono::milliseconds kTruncateFollowUp{200};

// How long after a batch's first delivery gather() still waits for more to arrive; after
// it, a batch only takes what has already arrived (see gather()). At 200 commits/s the
// publisher sends a batch every 5 ms: 20 ms of merging here was most of the p99 (34 ms,
// issue 14 asks for < 20; bench/README.md, Latency).
constexpr std::chrono::milliseconds kMergeWindow{5};

// One change as a message body of its own, its row values spliced in as received.
std::string change_body(const ParsedChange& c) {
  OutboxChange change{c.id, c.schema, c.name, c.op,
                      c.new_row.is_object() ? c.new_row.dump() : std::string(),
                      c.old_key.is_object() ? c.old_key.dump() : std::string(), c.ts, {}, {}, {}};
  if (!c.json_nulls.empty()) {
    change.json_nulls = "[";
    for (std::size_t i = 0; i < c.json_nulls.size(); ++i) {
      if (i) change.json_nulls += ',';
      append_json_string(change.json_nulls, c.json_nulls[i]);
    }
    change.json_nulls += ']';
  }
  change.new_text = c.new_text;
  change.old_text = c.old_text;
  return message_body(std::span<const OutboxChange>(&change, 1));
}

}  // namespace

// How often the broker connections are serviced while replica work runs: well within
// the shortest heartbeat a URL can ask for (1 s).
constexpr std::chrono::milliseconds kServiceInterval{100};

struct Listener::Batch {
  std::vector<Delivery> deliveries;
  std::size_t changes = 0;
  std::size_t bytes = 0;
  /// Per delivery (ChunkAssembler::Output): the chunk size of a change put together, and
  /// why a delivery is refused by the assembler.
  std::vector<std::size_t> chunk_bytes;
  std::vector<std::optional<std::string>> refused;
};

// rabbitmq-c sends heartbeats only inside its own calls, and a broker that hears nothing
// for two heartbeat intervals drops the connection and delivers the batch again, to be
// applied again, forever if the work always takes that long. So `work` (which uses the
// replica connection, never a broker one: rabbitmq-c is not thread-safe) runs on a thread
// of its own while this thread services both broker connections. If one fails, the
// future's destructor still waits for `work` before the connections are torn down.
template <class Work>
auto Listener::keeping_connections(Work work) -> decltype(work()) {
  auto done = std::async(std::launch::async, std::move(work));
  while (done.wait_for(kServiceInterval) != std::future_status::ready) service_connections();
  return done.get();
}

void Listener::service_connections() {
  if (consumer_) consumer_->tick();
  if (dead_letters_) dead_letters_->tick();
}

Listener::Listener(ListenerConfig config, MetricsRegistry& metrics)
    : config_(std::move(config)), metrics_(metrics), brokers_(config_.brokers) {
  snapshot_done_ = config_.snapshot == ListenerConfig::Snapshot::Off;
  using T = MetricsRegistry::Type;
  metrics_.describe("pgfanout_listener_changes_applied_total", T::Counter,
                    "Changes applied to the replica, by table and operation.");
  metrics_.describe("pgfanout_listener_dead_letters_total", T::Counter,
                    "Messages or changes moved to the dead-letter queue, by reason.");
  metrics_.describe("pgfanout_listener_batch_size", T::Histogram, "Changes per applied batch.",
                    {1, 10, 50, 100, 500, 1000, 2000, 5000, 10000});
  metrics_.describe("pgfanout_listener_apply_duration_seconds", T::Histogram,
                    "Time to apply and commit one batch on the replica.",
                    {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5});
  metrics_.describe("pgfanout_listener_lag_seconds", T::Gauge,
                    "Replica clock at commit minus the primary's ts of the last applied change.");
  metrics_.describe("pgfanout_listener_reconnects_total", T::Counter,
                    "Times the listener lost a server and reconnected, by server.");
  metrics_.describe("pgfanout_listener_last_applied_change_id", T::Gauge,
                    "Id of the last change applied to the replica.");
  metrics_.describe("pgfanout_listener_stale_messages_total", T::Counter,
                    "Messages dropped because a deposed publisher sent them (older epoch).");
  metrics_.describe("pgfanout_listener_copied_rows_total", T::Counter,
                    "Rows of INSERTs written to the replica with COPY instead of the upsert statement.");
  metrics_.add("pgfanout_listener_stale_messages_total", {}, 0);
  metrics_.add("pgfanout_listener_copied_rows_total", {}, 0);
  metrics_.set("pgfanout_listener_lag_seconds", {}, 0);
}

Listener::~Listener() { disconnect(); }

void Listener::disconnect() {
  chunks_.clear();
  applier_.reset();
  pg_.reset();
  if (consumer_) consumer_->close();
  consumer_.reset();
  if (dead_letters_) dead_letters_->close();
  dead_letters_.reset();
}

void Listener::pause(std::chrono::milliseconds delay) {
  auto until = std::chrono::steady_clock::now() + delay;
  while (!stopping_ && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(50ms);
}

int Listener::run() {
  // The main thread may be blocked in a call to a server that does not answer. If it has
  // not stopped kStopGrace after a signal, leaving at once loses nothing: what was not
  // acked is delivered again and an uncommitted batch is rolled back by PostgreSQL.
  StopSignal signals([this] { stopping_ = true; }, kStopGrace,
                     "unacked messages will be delivered again");

  spdlog::info("pgfanout-listener {} starting: target {}, queue '{}', broker {}, exchange '{}'",
               PGFANOUT_VERSION, mask_conninfo(config_.target), config_.queue,
               brokers_.masked(), config_.exchange);
  while (!stopping_) {
    std::string server = "postgresql";
    try {
      session();
    } catch (const SnapshotRefused& e) {
      spdlog::error("{}", e.what());
      disconnect();
      return 1;
    } catch (const QueueMismatch& e) {
      spdlog::error("{}", e.what());
      disconnect();
      return 2;
    } catch (const AmqpError& e) {
      server = "rabbitmq";
      spdlog::warn("RabbitMQ: {}", e.what());
      brokers_.failed();
    } catch (const pqxx::failure& e) {
      spdlog::warn("PostgreSQL: {}", one_line(e.what()));
    } catch (const std::exception& e) {
      server = "other";
      spdlog::error("{}", one_line(e.what()));
    }
    disconnect();
    if (stopping_) break;
    metrics_.add("pgfanout_listener_reconnects_total", {{"server", server}});
    auto delay = backoff_.next_delay();
    spdlog::info("reconnecting in {:.1f} s (attempt {})", delay.count() / 1000.0, backoff_.attempts());
    pause(delay);
  }
  spdlog::info("stopped");
  return 0;
}

void Listener::setup_replica() {
  pg_ = connect_pg(config_.target, "pgfanout-listener");
  {
    pqxx::nontransaction tx(*pg_);
    tx.exec0(kBookkeepingSql);
  }
  try {
    pqxx::nontransaction tx(*pg_);
    // Replica mode keeps the replica's own triggers and FK checks from firing on changes
    // the primary already checked. It needs superuser; without it, apply still works.
    tx.exec0("SET session_replication_role = replica");
  } catch (const pqxx::sql_error& e) {
    if (is_connection_error(e)) throw;
    if (!warned_replication_role_) {
      spdlog::warn("cannot SET session_replication_role = replica ({}); applying with the "
                   "replica's triggers and foreign keys active", one_line(e.what()));
      warned_replication_role_ = true;
    }
  }
  catalog_.clear();
  applier_ = std::make_unique<BatchApplier>(*pg_, config_.queue);
  spdlog::info("connected to replica {}", mask_conninfo(config_.target));
}

void Listener::setup_broker() {
  consumer_ = brokers_.connect("pgfanout-listener " + config_.queue);
  consumer_->declare_exchange(config_.exchange);
  for (const auto& [name, single_active] :
       {std::pair{config_.queue, true}, std::pair{config_.queue + ".dead", false}}) {
    try {
      consumer_->declare_queue(name, single_active, config_.queue_type);
    } catch (const AmqpPreconditionFailed& e) {
      throw QueueMismatch(fmt::format(
          "queue '{}' exists with other arguments than --queue-type {} declares ({}); RabbitMQ "
          "cannot change a queue's type: drain it and declare it anew (README, \"Queue types\")",
          name, config_.queue_type == QueueType::Quorum ? "quorum" : "classic", e.what()));
    }
  }

  // Bind the wanted patterns and drop the bindings an earlier run made that are no longer
  // wanted, so that changing --tables takes effect on the broker too.
  std::vector<std::string> previous;
  {
    pqxx::nontransaction tx(*pg_);
    for (const auto& row : tx.exec_params(
             "SELECT pattern FROM pgfanout.listener_bindings WHERE queue = $1 AND exchange = $2",
             config_.queue, config_.exchange)) {
      previous.emplace_back(row[0].c_str());
    }
  }
  for (const auto& p : config_.patterns) consumer_->bind_queue(config_.queue, config_.exchange, p);
  for (const auto& p : previous) {
    if (std::find(config_.patterns.begin(), config_.patterns.end(), p) == config_.patterns.end()) {
      consumer_->unbind_queue(config_.queue, config_.exchange, p);
      spdlog::info("unbound pattern '{}' that --tables no longer lists", p);
    }
  }
  {
    pqxx::work tx(*pg_);
    tx.exec_params("DELETE FROM pgfanout.listener_bindings WHERE queue = $1 AND exchange = $2",
                   config_.queue, config_.exchange);
    for (const auto& p : config_.patterns) {
      tx.exec_params("INSERT INTO pgfanout.listener_bindings VALUES ($1, $2, $3)", config_.queue,
                     config_.exchange, p);
    }
    tx.commit();
  }

  dead_letters_ = brokers_.connect("pgfanout-listener " + config_.queue + " dead letters");
  dead_letters_->enable_confirms();
}

void Listener::session() {
  setup_replica();
  setup_broker();
  std::string bound;
  for (const auto& p : config_.patterns) bound += (bound.empty() ? "" : ", ") + p;
  spdlog::info("connected to RabbitMQ {}; queue '{}' bound to exchange '{}' for {}; dead letters to '{}.dead'",
               brokers_.current().masked(), config_.queue, config_.exchange, bound, config_.queue);
  if (!snapshot_done_) {
    keeping_connections([&] {
      copy_snapshot(config_.source, config_.target, *pg_, catalog_, config_.patterns, config_.queue,
                    config_.snapshot == ListenerConfig::Snapshot::Truncate, config_.snapshot_workers);
    });
    snapshot_done_ = true;
  }
  consumer_->set_prefetch(config_.prefetch);
  consumer_->consume(config_.queue);
  spdlog::info("consuming from '{}' (prefetch {}, batches up to {} changes)", config_.queue,
               config_.prefetch, config_.batch_changes);
  backoff_.reset();
  last_summary_ = std::chrono::steady_clock::now();
  while (!stopping_) {
    Batch batch = gather();
    if (!batch.deliveries.empty()) {
      process(batch);
      last_batch_end_ = std::chrono::steady_clock::now();
    }
    dead_letters_->tick();
    maybe_log_summary();
  }
}

Listener::Batch Listener::gather() {
  Batch batch;
  auto first = consumer_->next_delivery(500ms);
  if (!first) return batch;
  take(batch, std::move(*first));
  auto started = std::chrono::steady_clock::now();
  auto deadline = started + config_.batch_age;
  auto merge_until = started + kMergeWindow;
  // Take what is already here or arrives right behind it; a quiet queue ends the batch,
  // so a lone change is applied without waiting for the age bound. While changes keep
  // coming (the last batch ended moments ago) a longer quiet gap is allowed: every batch
  // costs the replica a commit, and a trickle of tiny batches would spend its CPU there.
  // Waiting for arrivals stops kMergeWindow after the first delivery, though: a moderate
  // stream (100-200 changes/s, each arriving within the quiet gap) would otherwise hold
  // the batch's first change for the whole batch_age (p99 36-53 ms under such a load).
  // After the window the batch still takes, without waiting, what has already arrived (in
  // the client's buffer or the socket's), up to batch_age, batch_changes and prefetch, so
  // a backlog still forms big batches.
  bool flowing = started - last_batch_end_ < 10ms;
  auto quiet = flowing ? 10ms : 2ms;
  while (batch.changes < config_.batch_changes && batch.deliveries.size() < config_.prefetch &&
         batch.bytes < config_.batch_bytes) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    auto wait = 0ms;
    if (!consumer_->has_buffered_input() && now < merge_until) {
      wait = std::min<std::chrono::milliseconds>(
          quiet, std::chrono::ceil<std::chrono::milliseconds>(merge_until - now));
    }
    auto next = consumer_->next_delivery(wait);
    if (!next) break;
    take(batch, std::move(*next));
  }
  // `TRUNCATE a, b` on the primary (tables linked by a foreign key must be truncated
  // together) arrives as consecutive TRUNCATE changes, and the replica can only apply them
  // as one statement too (plan_steps merges them). So a batch does not end on a TRUNCATE
  // while the next message is at hand or comes right behind it.
  while (!batch.deliveries.empty() && batch.deliveries.size() < config_.prefetch &&
         may_truncate(batch.deliveries.back())) {
    auto next = consumer_->next_delivery(consumer_->has_buffered_input() ? 0ms : kTruncateFollowUp);
    if (!next) break;
    take(batch, std::move(*next));
  }
  return batch;
}

// A batch holds whole changes only: chunks of a change still coming stay in the assembler,
// unacked (the batch is acked up to its last delivery tag, and they came after it), until
// a later batch takes the change.
void Listener::take(Batch& batch, Delivery&& delivery) {
  for (ChunkAssembler::Output& out : chunks_.add(std::move(delivery))) {
    batch.changes += estimated_changes(out.delivery, config_.batch_changes);
    batch.bytes += out.delivery.body.size();
    batch.chunk_bytes.push_back(out.chunk_bytes);
    batch.refused.push_back(std::move(out.refused));
    batch.deliveries.push_back(std::move(out.delivery));
  }
}

void Listener::process(Batch& batch) {
  struct DeadLetter {
    std::size_t delivery;
    std::string body;
    std::string reason;
    std::string detail;
  };
  std::vector<DeadLetter> dead;
  std::vector<ParsedChange> changes;
  std::vector<std::size_t> owner;            // delivery index of each change
  std::vector<std::size_t> delivery_changes(batch.deliveries.size(), 0);
  catalog_.forget_missing();
  // The batch owns its tables: the catalog may forget an entry (TTL, a new column) while
  // the batch is planned and applied.
  std::vector<std::shared_ptr<const TableInfo>> held;
  std::vector<const TableInfo*> tables;
  std::vector<std::optional<std::int64_t>> epochs;  // of each change's message

  for (std::size_t i = 0; i < batch.deliveries.size(); ++i) {
    const Delivery& d = batch.deliveries[i];
    if (batch.refused[i]) {
      dead.push_back({i, d.body, "bad-chunk", *batch.refused[i]});
      continue;
    }
    try {
      std::optional<std::int64_t> epoch = message_epoch(d.headers);
      std::vector<ParsedChange> parsed = parse_message(d.body, d.body.capacity());
      check_change_count(d.headers, parsed.size());
      std::vector<std::shared_ptr<const TableInfo>> resolved;
      for (const auto& c : parsed) {
        std::string key = routing_key(c.schema, c.name);
        if (!topic_matches_any(config_.patterns, key)) throw BadMessage("not-replicated", "table " + key + " is not in --tables of this listener");
        std::shared_ptr<const TableInfo> t = catalog_.resolve_for(*pg_, c.schema, c.name, c.new_row);
        if (!t) throw BadMessage("unknown-table", "the replica has no table " + quote_ident(c.schema) + "." + quote_ident(c.name));
        if (t->key_columns.empty()) throw BadMessage("no-primary-key", "replica table " + t->qualified() + " has no primary key");
        resolved.push_back(t);
      }
      for (std::size_t k = 0; k < parsed.size(); ++k) {
        changes.push_back(std::move(parsed[k]));
        owner.push_back(i);
        tables.push_back(resolved[k].get());
        held.push_back(std::move(resolved[k]));
        epochs.push_back(epoch);
      }
      delivery_changes[i] = parsed.size();
    } catch (const BadMessage& e) {
      dead.push_back({i, d.body, e.reason(), bounded_error(e.what())});
    }
  }

  std::vector<const ParsedChange*> pointers;
  pointers.reserve(changes.size());
  for (const auto& c : changes) pointers.push_back(&c);

  auto started = std::chrono::steady_clock::now();
  ApplyResult result;
  if (!pointers.empty()) {
    result = keeping_connections([&] { return applier_->apply(pointers, tables, epochs); });
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  if (!result.rejected.empty()) catalog_.clear();  // the replica's tables may have changed
  for (const auto& r : result.rejected) {
    const ParsedChange& c = changes[r.index];
    std::size_t d = owner[r.index];
    std::string body = delivery_changes[d] == 1 ? batch.deliveries[d].body : change_body(c);
    dead.push_back({d, std::move(body), "apply-failed", bounded_error(r.error)});
  }

  // Dead letters are confirmed by the broker before the batch is acked, so a crash in
  // between leaves them to be dead-lettered again rather than lost.
  if (!dead.empty()) {
    std::string dead_queue = config_.queue + ".dead";
    std::set<std::uint64_t> pending;
    for (const auto& dl : dead) {
      const Delivery& d = batch.deliveries[dl.delivery];
      // A change that came in chunks goes as chunks again (see dead_letter_parts).
      for (DeadLetterPart& part : dead_letter_parts(dl.body, d, batch.chunk_bytes[dl.delivery])) {
        OutgoingMessage m{"", dead_queue, part.body, d.message_id, part.content_type, std::move(part.headers)};
        m.headers.emplace_back("x-pgfanout-reason", dl.reason);
        m.headers.emplace_back("x-pgfanout-error", dl.detail);
        m.headers.emplace_back("x-pgfanout-routing-key", d.routing_key);
        m.headers.emplace_back("x-pgfanout-queue", config_.queue);
        pending.insert(dead_letters_->publish(m, false));
      }
    }
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!pending.empty()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) throw AmqpError("the broker did not confirm the dead letters");
      auto event = dead_letters_->next_event(std::min<std::chrono::milliseconds>(left, kServiceInterval));
      consumer_->tick();  // its heartbeats, while the broker takes its time to confirm
      if (!event) continue;
      if (const auto* ack = std::get_if<ConfirmAck>(&*event)) {
        if (ack->multiple) {
          pending.erase(pending.begin(), pending.upper_bound(ack->delivery_tag));
        } else {
          pending.erase(ack->delivery_tag);
        }
      } else if (std::holds_alternative<ConfirmNack>(*event)) {
        throw AmqpError("the broker refused a dead letter");
      }
    }
    for (const auto& dl : dead) {
      const Delivery& d = batch.deliveries[dl.delivery];
      spdlog::warn("dead-lettered message {} (routing key '{}') to '{}.dead': {}: {}",
                   d.message_id.empty() ? "?" : d.message_id, d.routing_key, config_.queue,
                   dl.reason, dl.detail);
      metrics_.add("pgfanout_listener_dead_letters_total", {{"reason", dl.reason}});
    }
  }

  consumer_->ack(batch.deliveries.back().delivery_tag, true);

  std::map<std::pair<std::string, std::string>, double> applied;
  std::vector<bool> rejected(changes.size(), false);
  for (const auto& r : result.rejected) rejected[r.index] = true;
  if (!result.stale.empty()) {
    // Dropped, not dead-lettered: the new leader ships these changes again (epoch_fence.hpp).
    std::set<std::size_t> messages;
    for (std::size_t i : result.stale) {
      rejected[i] = true;  // not applied either
      messages.insert(owner[i]);
    }
    const Delivery& first = batch.deliveries[*messages.begin()];
    spdlog::warn("dropped {} messages ({} changes, first message {}) from a deposed publisher: "
                 "epoch {} is older than epoch {} already applied on queue '{}'",
                 messages.size(), result.stale.size(),
                 first.message_id.empty() ? "?" : first.message_id,
                 epochs[result.stale.front()].value_or(0), result.epoch.value_or(0), config_.queue);
    metrics_.add("pgfanout_listener_stale_messages_total", {},
                 static_cast<double>(messages.size()));
  }
  std::size_t applied_count = 0;
  std::int64_t last_applied_id = 0;
  for (std::size_t i = 0; i < changes.size(); ++i) {
    if (rejected[i]) continue;
    applied[{routing_key(changes[i].schema, changes[i].name), std::string(to_string(changes[i].op))}] += 1;
    ++applied_count;
    last_applied_id = changes[i].id;
  }
  for (const auto& [k, n] : applied) {
    metrics_.add("pgfanout_listener_changes_applied_total", {{"table", k.first}, {"op", k.second}}, n);
  }
  if (result.copied_rows > 0) {
    metrics_.add("pgfanout_listener_copied_rows_total", {}, static_cast<double>(result.copied_rows));
  }
  if (!changes.empty()) {
    metrics_.observe("pgfanout_listener_batch_size", {}, static_cast<double>(changes.size()));
    metrics_.observe("pgfanout_listener_apply_duration_seconds", {}, seconds);
  }
  if (applied_count > 0) {
    metrics_.set("pgfanout_listener_lag_seconds", {}, result.lag_seconds);
    metrics_.set("pgfanout_listener_last_applied_change_id", {},
                 static_cast<double>(last_applied_id));
    last_lag_ = result.lag_seconds;
  }
  applied_since_summary_ += applied_count;
  dead_since_summary_ += dead.size();
  spdlog::debug("applied {} changes from {} messages in {:.1f} ms; {} dead letters", applied_count,
                batch.deliveries.size(), seconds * 1000, dead.size());
}

void Listener::maybe_log_summary() {
  auto now = std::chrono::steady_clock::now();
  auto elapsed = now - last_summary_;
  if (elapsed < config_.summary_interval) return;
  if (applied_since_summary_ > 0 || dead_since_summary_ > 0) {
    spdlog::info("applied {} changes in {:.0f} s; dead letters {}; lag {:.3f} s",
                 with_thousands(applied_since_summary_), std::chrono::duration<double>(elapsed).count(),
                 dead_since_summary_, last_lag_);
  }
  applied_since_summary_ = 0;
  dead_since_summary_ = 0;
  last_summary_ = now;
}

}  // namespace pgfanout
