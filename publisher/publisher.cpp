#include "publisher.hpp"

#include <unistd.h>

#include <algorithm>
#include <limits>
#include <set>


#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/except>
#include <pqxx/nontransaction>
#include <pqxx/notification>
#include <spdlog/spdlog.h>

#include "message_plan.hpp"
#include "pgfanout/log_text.hpp"
#include "pgfanout/masking.hpp"
#include "pgfanout/message_chunks.hpp"
#include "pgfanout/stop_signal.hpp"
#include "pgfanout/pg_connection.hpp"
#include "slot_reader.hpp"

namespace pgfanout {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

constexpr const char* kChannel = "pgfanout";
// pgfanout.set_capture() notifies here when it switches the capture mode.
constexpr const char* kCaptureChannel = "pgfanout_capture";

// The header that carries the publisher's lease epoch on every message (README,
// "Leadership and fencing"): listeners drop messages of an epoch older than one they
// applied, which only a deposed publisher still sends.
constexpr const char* kEpochHeader = "x-pgfanout-epoch";

// How long a stop may take before the process leaves without finishing it (see run()).
constexpr std::chrono::seconds kStopGrace{3};

/// LISTENs on `channel` and sets `woken` when notified; the payload is irrelevant: the
/// outbox, or pgfanout.capture, is the truth.
class WakeReceiver : public pqxx::notification_receiver {
 public:
  WakeReceiver(pqxx::connection_base& conn, const char* channel, bool& woken)
      : pqxx::notification_receiver(conn, channel), woken_(woken) {}
  void operator()(const std::string&, int) override { woken_ = true; }

 private:
  bool& woken_;
};

}  // namespace

Publisher::Publisher(PublisherConfig config, MetricsRegistry& metrics)
    : config_(std::move(config)), metrics_(metrics), timer_(io_), brokers_(config_.brokers) {
  using T = MetricsRegistry::Type;
  metrics_.describe("pgfanout_publisher_changes_published_total", T::Counter,
                    "Changes confirmed by the broker and removed from the outbox, by table.");
  metrics_.describe("pgfanout_publisher_messages_published_total", T::Counter,
                    "Messages confirmed by the broker.");
  metrics_.describe("pgfanout_publisher_unroutable_total", T::Counter,
                    "Changes the broker returned because no queue was bound for their table.");
  metrics_.describe("pgfanout_publisher_outbox_depth", T::Gauge,
                    "Changes waiting in pgfanout.changes (sampled).");
  metrics_.describe("pgfanout_publisher_oldest_change_age_seconds", T::Gauge,
                    "Age of the oldest change still in the outbox (sampled).");
  metrics_.describe("pgfanout_publisher_confirm_latency_seconds", T::Histogram,
                    "Time from publishing a batch to the broker confirming all of it.",
                    {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  metrics_.describe("pgfanout_publisher_reconnects_total", T::Counter,
                    "Times the publisher lost a server and reconnected, by server.");
  metrics_.describe("pgfanout_publisher_last_shipped_change_id", T::Gauge,
                    "Id of the last change confirmed and removed from the outbox.");
  metrics_.describe("pgfanout_publisher_active", T::Gauge,
                    "1 while this publisher holds the leader lease and ships, 0 as standby.");
  metrics_.describe("pgfanout_publisher_epoch", T::Gauge,
                    "Epoch of the lease this publisher last took (sent in x-pgfanout-epoch).");
  metrics_.describe("pgfanout_publisher_slot_lag_bytes", T::Gauge,
                    "Logical capture: WAL between the primary's position and what the slot has confirmed (sampled).");
  metrics_.describe("pgfanout_publisher_slot_lag_seconds", T::Gauge,
                    "Logical capture: age of the oldest commit read from the slot and not yet confirmed.");
  metrics_.describe("pgfanout_publisher_slot_invalidated", T::Gauge,
                    "Logical capture: 1 when the slot is gone or invalidated (max_slot_wal_keep_size).");
  metrics_.set("pgfanout_publisher_active", {}, 0);
  metrics_.set("pgfanout_publisher_outbox_depth", {}, 0);
  metrics_.set("pgfanout_publisher_oldest_change_age_seconds", {}, 0);
  metrics_.set("pgfanout_publisher_last_shipped_change_id", {}, 0);
}

Publisher::~Publisher() { disconnect(); }

int Publisher::run() {
  // If the loop has not stopped kStopGrace after a signal, leaving at once loses nothing:
  // a change leaves the outbox only once the broker confirmed it, and the lease lapses
  // with the PostgreSQL session.
  StopSignal signals(
      [this] {
        stopping_ = true;
        asio::post(io_, [this] { stop(); });
      },
      kStopGrace, "unconfirmed changes stay in the outbox");
  asio::co_spawn(io_, main_loop(), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  io_.run();
  disconnect();
  spdlog::info("stopped");
  return 0;
}

void Publisher::stop() {
  stopping_ = true;
  timer_.cancel();
  if (pg_socket_) pg_socket_->cancel();
}

void Publisher::disconnect() {
  if (pg_socket_) {
    // The descriptor is our dup() of libpq's socket: closing it leaves libpq's intact.
    boost::system::error_code ec;
    pg_socket_->close(ec);
    pg_socket_.reset();
  }
  // Closed before the receiver goes, so that it does not try to UNLISTEN on a connection
  // that may be dead.
  if (pg_) pg_->disconnect();
  wake_.reset();
  capture_wake_.reset();
  slot_.reset();
  outbox_tables_.clear();
  outbox_.reset();
  pg_.reset();
  if (amqp_) amqp_->close();
  amqp_.reset();
  idle_ = false;
  metrics_.set("pgfanout_publisher_active", {}, 0);
}

asio::awaitable<void> Publisher::pause(std::chrono::milliseconds delay) {
  if (stopping_) co_return;
  timer_.expires_after(delay);
  boost::system::error_code ec;
  co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

asio::awaitable<void> Publisher::main_loop() {
  spdlog::info("pgfanout-publisher {} starting: source {}, broker {}, exchange '{}', pack {}, "
               "messages up to {} bytes",
               PGFANOUT_VERSION, mask_conninfo(config_.source), brokers_.masked(),
               config_.exchange, config_.pack, config_.max_message_bytes);
  while (!stopping_) {
    std::string server = "postgresql";
    try {
      co_await session();
      if (switching_) {
        // The capture mode changed: the next session follows it at once.
        switching_ = false;
        disconnect();
        continue;
      }
    } catch (const AmqpError& e) {
      server = "rabbitmq";
      spdlog::warn("RabbitMQ: {}", e.what());
      brokers_.failed();
    } catch (const LeaseLost& e) {
      spdlog::warn("{}", e.what());
    } catch (const pqxx::failure& e) {
      spdlog::warn("PostgreSQL: {}", one_line(e.what()));
    } catch (const std::exception& e) {
      server = "other";
      spdlog::error("{}", e.what());
    }
    disconnect();
    if (stopping_) break;
    metrics_.add("pgfanout_publisher_reconnects_total", {{"server", server}});
    auto delay = backoff_.next_delay();
    spdlog::info("reconnecting in {:.1f} s (attempt {})", delay.count() / 1000.0, backoff_.attempts());
    co_await pause(delay);
  }
}

void Publisher::connect_broker() {
  amqp_ = brokers_.connect("pgfanout-publisher");
  amqp_->enable_confirms();
  amqp_->declare_exchange(config_.exchange);
  spdlog::info("connected to RabbitMQ {} (heartbeat {} s); exchange '{}' declared",
               brokers_.current().masked(), amqp_->heartbeat().count(), config_.exchange);
  metrics_.set("pgfanout_publisher_active", {}, 1);
  backoff_.reset();
  last_summary_ = std::chrono::steady_clock::now();
}

asio::awaitable<void> Publisher::session() {
  pg_ = connect_pg(config_.source, "pgfanout-publisher");
  {
    // Losing a DELETE of confirmed changes in a crash only publishes them again (at least
    // once), so this session need not wait for WAL flushes.
    pqxx::nontransaction tx(*pg_);
    tx.exec0("SET synchronous_commit = off");
  }
  outbox_ = std::make_unique<OutboxReader>(*pg_);
  spdlog::info("connected to PostgreSQL {}", mask_conninfo(config_.source));
  if (!outbox_->installed()) {
    throw std::runtime_error(
        "schema pgfanout is not installed on the source database, or is older than this "
        "publisher: run psql -f sql/install.sql (safe to run again; keeps pending changes)");
  }
  bool said_standby = false;
  while (!outbox_->try_lead()) {
    if (!said_standby) {
      spdlog::info("another publisher is active on this database; waiting as standby");
      said_standby = true;
    }
    co_await pause(1s);
    if (stopping_) co_return;
  }
  if (said_standby) spdlog::info("the active publisher is gone; taking over");
  spdlog::info("leading with epoch {}", outbox_->epoch());
  metrics_.set("pgfanout_publisher_epoch", {}, static_cast<double>(outbox_->epoch()));
  if (!vacuum_) vacuum_ = std::make_unique<OutboxVacuum>(config_.source, metrics_);

  // LISTEN before reading the mode: a switch committed after the LISTEN wakes this
  // session, and one committed before it (maybe while this publisher was disconnected,
  // when its NOTIFY reached nobody) is in the mode read now.
  capture_wake_ = std::make_unique<WakeReceiver>(*pg_, kCaptureChannel, capture_notified_);
  capture_notified_ = false;
  OutboxReader::Capture capture = outbox_->capture();
  if (!capture.slot.empty()) {
    // The slot's stream shows a switch back at its place in the WAL (SlotReader).
    capture_wake_.reset();
    co_await stream_slot(capture);
    co_return;
  }

  wake_ = std::make_unique<WakeReceiver>(*pg_, kChannel, woken_);
  // Asio watches a dup() of libpq's socket, re-read after every (re)connect: libpq owns
  // its descriptor and may change it, and Asio must never close it.
  int fd = ::dup(pg_->sock());
  if (fd < 0) throw std::runtime_error("dup of the PostgreSQL socket failed");
  pg_socket_ = std::make_unique<asio::posix::stream_descriptor>(io_, fd);
  spdlog::info("LISTENing on channel '{}'", kChannel);

  connect_broker();

  auto outbox_depth = outbox_->depth(held_from());
  metrics_.set("pgfanout_publisher_outbox_depth", {}, static_cast<double>(outbox_depth.rows));
  metrics_.set("pgfanout_publisher_oldest_change_age_seconds", {}, outbox_depth.oldest_age_seconds);
  spdlog::info("outbox holds {} changes; draining", with_thousands(static_cast<std::uint64_t>(outbox_depth.rows)));

  auto heartbeat = amqp_->heartbeat();
  auto wait_limit = config_.poll_interval;
  if (heartbeat.count() > 0) {
    wait_limit = std::min<std::chrono::milliseconds>(wait_limit, std::chrono::duration_cast<std::chrono::milliseconds>(heartbeat) / 2);
  }

  // A publisher killed while idle leaves idle = true behind: clear it with the first
  // batch, or writers would NOTIFY at every commit through the whole catch-up.
  idle_ = true;
  while (!stopping_) {
    co_await drain();
    if (stopping_ || switching_) break;
    // Going idle: from now on writers NOTIFY. A change committed between the last empty
    // read and the flag flip has no NOTIFY, so read once more after flipping it.
    outbox_->set_idle(true);
    idle_ = true;
    if (outbox_->pending(held_now())) continue;
    if (capture_switched()) {
      spdlog::info("the capture switched to logical; following it");
      switching_ = true;
      break;
    }
    maybe_log_summary(false);
    co_await wait_for_wake(wait_limit);
    consume_notifications();
    amqp_->tick();
  }
  if (pg_) outbox_->set_idle(false);
}

bool Publisher::capture_switched() {
  consume_notifications();
  if (!capture_notified_) return false;
  capture_notified_ = false;
  return !outbox_->capture().slot.empty();
}

void Publisher::consume_notifications() {
  // get_notifs() also reads what libpq buffered earlier; a dead server surfaces here
  // as pqxx::broken_connection.
  pg_->get_notifs();
  if (!pg_->is_open()) throw pqxx::broken_connection("connection to PostgreSQL lost");
}

asio::awaitable<void> Publisher::wait_for_wake(std::chrono::milliseconds timeout) {
  consume_notifications();
  if (woken_ || capture_notified_ || stopping_) co_return;
  co_await wait_readable(timeout);
}

asio::awaitable<void> Publisher::wait_readable(std::chrono::milliseconds timeout) {
  timer_.expires_after(timeout);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && pg_socket_) pg_socket_->cancel();
  });
  boost::system::error_code ec;
  co_await pg_socket_->async_wait(asio::posix::stream_descriptor::wait_read,
                                  asio::redirect_error(asio::use_awaitable, ec));
  timer_.cancel();
}

asio::awaitable<void> Publisher::pause_before_next_read(
    std::size_t read, std::chrono::steady_clock::time_point read_at,
    std::optional<std::chrono::steady_clock::time_point> previous_read) {
  auto interval = config_.trickle_interval;
  if (previous_read) {
    double seconds = std::chrono::duration<double>(read_at - *previous_read).count();
    if (static_cast<double>(read) >= config_.busy_rate * seconds) interval = config_.busy_interval;
  }
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(read_at + interval - std::chrono::steady_clock::now());
  if (left.count() > 0) {
    co_await pause(left);
  } else {
    co_await asio::post(io_, asio::use_awaitable);
  }
}

asio::awaitable<void> Publisher::drain() {
  woken_ = false;
  std::optional<std::chrono::steady_clock::time_point> previous_read;
  while (!stopping_) {
    auto read_at = std::chrono::steady_clock::now();
    std::size_t read = ship_batch();
    if (read == 0) break;
    if (idle_) {
      outbox_->set_idle(false);
      idle_ = false;
    }
    maybe_log_summary(false);
    if (read >= static_cast<std::size_t>(config_.batch_rows)) {
      // More is waiting: ship it at once, letting the signal handler and timers run first.
      co_await asio::post(io_, asio::use_awaitable);
    } else {
      // Everything committed had been read: let the next batch fill for a while. Every
      // batch costs about 2 ms of CPU along the chain however small it is (head read and
      // DELETE, the broker's fsync and routing, a commit on each replica), and on a small
      // machine that CPU is taken from the writers. Under a steady stream (bench cost runs,
      // 4,000-5,000 single-row commits/s) reading every 20 ms instead of 5 ms after each
      // batch halved the batches and cut the chain's CPU per change by ~15%; and since
      // the batches now arrive more than 10 ms apart, the listeners no longer merge them
      // for up to 50 ms, so the p99 latency under that load fell from ~77 to ~35 ms. A
      // slow trickle keeps 5 ms for its latency (the change that started the drain has
      // already gone out).
      co_await pause_before_next_read(read, read_at, previous_read);
    }
    previous_read = read_at;
    amqp_->tick();
  }
}

std::vector<OutboxReader::TableName> Publisher::held_now() {
  std::vector<OutboxReader::TableName> out;
  auto now = std::chrono::steady_clock::now();
  for (const auto& [table, h] : held_) {
    if (now < h.retry_at) out.push_back(table);
  }
  return out;
}

std::int64_t Publisher::held_from() const {
  std::int64_t from = std::numeric_limits<std::int64_t>::max();
  for (const auto& [table, h] : held_) from = std::min(from, h.from_id);
  return from;
}

asio::awaitable<void> Publisher::stream_slot(const OutboxReader::Capture& capture) {
  spdlog::info("capture mode {}: streaming replication slot {}", capture.mode, capture.slot);
  std::string wal_status = outbox_->slot_wal_status(capture.slot);
  metrics_.set("pgfanout_publisher_slot_invalidated", {}, wal_status == "lost" || wal_status.empty() ? 1 : 0);
  if (wal_status == "lost" || wal_status.empty()) {
    throw std::runtime_error(
        "replication slot " + capture.slot + (wal_status.empty() ? " does not exist" : " was invalidated (max_slot_wal_keep_size)") +
        ": the changes it should have kept are gone. To go on: SELECT pgfanout.set_capture('trigger'); "
        "then, once this publisher is told the slot is gone, UPDATE pgfanout.capture SET slot_name = NULL as the installer; "
        "SELECT pgfanout.set_capture('logical'); and copy every replica again with --snapshot=truncate");
  }
  // This publisher holds the lease: a session still streaming the slot belongs to one
  // that lost it (its host cut off, or paused), and ends here.
  if (outbox_->end_other_stream(capture.slot)) {
    spdlog::warn("ended the replication session of a deposed publisher on slot {}", capture.slot);
  }
  slot_ = std::make_unique<SlotReader>(config_.source, *pg_, capture.slot, outbox_->epoch());
  int fd = ::dup(slot_->socket());
  if (fd < 0) throw std::runtime_error("dup of the replication socket failed");
  pg_socket_ = std::make_unique<asio::posix::stream_descriptor>(io_, fd);
  connect_broker();
  // Changes of a table that still has some in the outbox (left by the trigger capture, or
  // parked) go there too, behind them.
  for (auto& table : outbox_->tables()) outbox_tables_.insert(std::move(table));
  auto outbox_depth = outbox_->depth(held_from());
  metrics_.set("pgfanout_publisher_outbox_depth", {}, static_cast<double>(outbox_depth.rows));
  spdlog::info("outbox holds {} changes; draining them and streaming the slot",
               with_thousands(static_cast<std::uint64_t>(outbox_depth.rows)));
  auto wait_limit = std::chrono::milliseconds(1000);
  if (amqp_->heartbeat().count() > 0) {
    wait_limit = std::min<std::chrono::milliseconds>(
        wait_limit, std::chrono::duration_cast<std::chrono::milliseconds>(amqp_->heartbeat()) / 2);
  }
  // After a switch back to triggers, the outbox fills with changes whose ids lie above
  // those of every change the slot still holds (set_capture): they wait for the trigger
  // capture's session, and so do the changes parked before the switch. The slot's
  // changes of their tables join them there (ship()), in id order.
  const bool read_outbox = capture.mode == "logical";
  std::optional<std::chrono::steady_clock::time_point> previous_read;
  while (!stopping_) {
    auto read_at = std::chrono::steady_clock::now();
    std::size_t read = 0;
    if (read_outbox && !outbox_tables_.empty()) {
      std::vector<OutboxChange> parked = outbox_->head(config_.batch_rows, config_.batch_bytes, held_now());
      if (!parked.empty() && parked.back().id > slot_->last_id() && outbox_->capture().mode != "logical") {
        // The capture switched back meanwhile, and this read holds changes of the trigger
        // capture: a new session leaves them in the outbox until the slot is shipped (the
        // read moved the outbox cursor past them, so this session cannot).
        spdlog::info("the capture switched back to triggers; shipping replication slot {} first",
                     capture.slot);
        switching_ = true;
        co_return;
      }
      if (!parked.empty()) {
        read += parked.size();
        ship(parked, Source::Outbox);
        // Shipping may have taken a table's last changes out of the outbox; nothing else
        // does, and ship() and settle() add the tables they park to the set. What the
        // trigger capture writes after a switch back has ids above all of the slot's, so
        // no slot change need wait behind it. So the set is read again only here and at
        // the start of a session, not at every turn while a table has changes parked.
        outbox_tables_.clear();
        for (auto& table : outbox_->tables()) outbox_tables_.insert(std::move(table));
      }
    }
    std::vector<OutboxChange> changes = slot_->read(config_.batch_rows, config_.batch_bytes);
    if (!changes.empty()) {
      read += changes.size();
      ship(changes, Source::Slot);
    }
    slot_->tick();
    amqp_->tick();
    maybe_log_summary(false);
    if (slot_->switched_back() && slot_->idle()) {
      spdlog::info("the capture switched back to triggers and replication slot {} is shipped; dropping it",
                   capture.slot);
      pg_socket_.reset();
      slot_.reset();
      // The walsender lets the slot go once it has seen the connection end. (Should the
      // drop still fail, the next session gets the switch again and drops it then.)
      for (int i = 0; i < 100 && !stopping_; ++i) {
        bool active = false;
        {
          pqxx::nontransaction tx(*pg_);
          active = tx.exec_params1("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active",
                                   capture.slot)[0].as<int>() > 0;
        }
        if (!active) break;
        co_await pause(50ms);
      }
      outbox_->drop_slot(capture.slot);
      switching_ = true;
      co_return;
    }
    if (read >= static_cast<std::size_t>(config_.batch_rows)) {
      co_await asio::post(io_, asio::use_awaitable);
    } else if (read > 0) {
      // As in drain(): under a steady stream of small transactions, let the next batch
      // fill for a few milliseconds; each batch costs a broker confirm round, a position
      // write and a status update, whatever its size.
      co_await pause_before_next_read(read, read_at, previous_read);
    } else {
      // Wait until the stream has more, or for the next status update or held-table retry.
      co_await wait_readable(wait_limit);
    }
    previous_read = read_at;
  }
}

std::size_t Publisher::ship_batch() {
  std::vector<OutboxChange> changes = outbox_->head(config_.batch_rows, config_.batch_bytes, held_now());
  if (changes.empty()) return 0;
  // A switch to logical capture since this session began (and maybe back already): the
  // slot's changes come before the trigger capture's after a switch back, which this
  // read may hold, so the session ends here and the next one follows the mode
  // (stream_slot). Checked after the outbox read, without a query of its own unless
  // set_capture() notified: its NOTIFY is queued before its commit and signalled to this
  // session's backend before the call returns, so before the switch back, and before any
  // change this read can see behind it; and a backend sends what it was signalled during
  // a statement before that statement's ReadyForQuery, so it is in libpq's buffer now.
  if (capture_switched()) {
    spdlog::info("the capture switched to logical; following it");
    switching_ = true;
    return 0;
  }
  ship(changes, Source::Outbox);
  return changes.size();
}

void Publisher::ship(const std::vector<OutboxChange>& changes, Source source) {
  std::vector<bool> settled(changes.size(), false);
  // Logical mode: a change of a table that has changes in the outbox goes there too,
  // behind them, and is done with as far as the slot is concerned.
  if (source == Source::Slot && !outbox_tables_.empty()) {
    std::vector<OutboxChange> parked;
    for (std::size_t i = 0; i < changes.size(); ++i) {
      if (outbox_tables_.contains(OutboxReader::TableName{changes[i].schema, changes[i].table})) {
        parked.push_back(changes[i]);
        settled[i] = true;
      }
    }
    outbox_->park(parked);
  }
  std::vector<OutboxChange> to_publish;
  std::vector<std::size_t> index;  // position in `changes` of each change to publish
  for (std::size_t i = 0; i < changes.size(); ++i) {
    if (settled[i]) continue;
    index.push_back(i);
    to_publish.push_back(changes[i]);
  }
  std::optional<std::uint64_t> nacked;
  if (!to_publish.empty()) {
    PublishResult result = publish(to_publish);
    for (std::size_t i = 0; i < result.confirmed_changes; ++i) settled[index[i]] = true;
    settle(to_publish, result, source);
    nacked = result.nacked;
  }
  if (source == Source::Slot) {
    std::size_t prefix = 0;
    while (prefix < settled.size() && settled[prefix]) ++prefix;
    slot_->confirmed(prefix);
  }
  if (nacked) {
    throw AmqpError("the broker refused (nack) message " + std::to_string(*nacked) +
                    "; publishing it and the rest of its batch again");
  }
}

Publisher::PublishResult Publisher::publish(const std::vector<OutboxChange>& changes) {
  // Bodies stay kMessageMargin under the limit, which leaves room for the properties.
  const std::size_t max_body = config_.max_message_bytes - kMessageMargin;
  std::vector<PlannedMessage> plan = plan_messages(changes, config_.pack, max_body);

  auto started = std::chrono::steady_clock::now();
  std::uint64_t first_tag = 0;
  // The plan index of each message published, in delivery tag order: a change too big for
  // one message goes out as several chunks, and counts as confirmed once all of them are.
  std::vector<std::size_t> published;
  std::map<std::string, std::size_t> message_index;  // message_id -> plan index
  for (std::size_t i = 0; i < plan.size(); ++i) message_index[std::to_string(changes[plan[i].begin].id)] = i;
  // For each table the broker returned a message of: the first change id returned.
  std::map<OutboxReader::TableName, std::int64_t> returned_from;
  std::set<std::size_t> returned;  // plan indexes, counted once however many chunks came back
  for (std::size_t i = 0; i < plan.size(); ++i) {
    const PlannedMessage& m = plan[i];
    std::span<const OutboxChange> part(changes.data() + m.begin, m.end - m.begin);
    std::string body = message_body(part);
    std::string key = routing_key(part.front().schema, part.front().table);
    std::string message_id = std::to_string(part.front().id);
    std::vector<std::string_view> chunks = split_body(body, max_body);
    for (std::size_t k = 0; k < chunks.size(); ++k) {
      OutgoingMessage message{config_.exchange, key, chunks[k], message_id, "application/json", {}};
      if (chunks.size() > 1) {
        message.content_type = kChunkContentType;
        message.headers = chunk_headers(static_cast<std::int64_t>(k),
                                        static_cast<std::int64_t>(chunks.size()), body.size());
      } else if (part.size() > 1) {
        message.headers.emplace_back("x-pgfanout-count", static_cast<std::int64_t>(part.size()));
      }
      message.headers.emplace_back(kEpochHeader, outbox_->epoch());
      std::uint64_t tag = amqp_->publish(message, true);
      if (first_tag == 0) first_tag = tag;
      published.push_back(i);
    }
    if (chunks.size() > 1) {
      spdlog::debug("change {} ({} bytes) sent in {} chunks", message_id, body.size(), chunks.size());
    }
  }

  // Wait until the broker confirmed every message of the batch, in any order of acks.
  std::vector<bool> acked(published.size(), false);
  std::size_t acked_count = 0;
  std::optional<std::uint64_t> nacked;
  auto deadline = started + config_.confirm_timeout;
  auto mark = [&](std::uint64_t tag, bool multiple) {
    std::uint64_t from = multiple ? first_tag : tag;
    for (std::uint64_t t = std::max(from, first_tag); t <= tag && t < first_tag + published.size(); ++t) {
      if (!acked[t - first_tag]) {
        acked[t - first_tag] = true;
        ++acked_count;
      }
    }
  };
  while (acked_count < published.size() && !nacked) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      throw AmqpError("the broker did not confirm " + std::to_string(published.size() - acked_count) +
                      " messages within " + std::to_string(config_.confirm_timeout.count()) + " s");
    }
    auto event = amqp_->next_event(left);
    if (!event) continue;
    if (const auto* ack = std::get_if<ConfirmAck>(&*event)) {
      mark(ack->delivery_tag, ack->multiple);
    } else if (const auto* nack = std::get_if<ConfirmNack>(&*event)) {
      nacked = nack->delivery_tag;
    } else if (const auto* ret = std::get_if<ReturnedMessage>(&*event)) {
      auto it = message_index.find(ret->message_id);
      if (it == message_index.end() || !returned.insert(it->second).second) continue;
      const OutboxChange& first = changes[plan[it->second].begin];
      auto [pos, fresh] = returned_from.emplace(OutboxReader::TableName{first.schema, first.table}, first.id);
      if (!fresh) pos->second = std::min(pos->second, first.id);
      metrics_.add("pgfanout_publisher_unroutable_total", {{"table", ret->routing_key}},
                   static_cast<double>(plan[it->second].end - plan[it->second].begin));
    }
  }

  // Only the confirmed prefix is done: what follows a nacked message is published again,
  // after it, so no replica sees a change before an older one of the same row.
  std::size_t first_unconfirmed = 0;
  while (first_unconfirmed < published.size() && acked[first_unconfirmed]) ++first_unconfirmed;
  PublishResult result;
  result.confirmed_messages = first_unconfirmed == published.size() ? plan.size() : published[first_unconfirmed];
  result.confirmed_changes = result.confirmed_messages == 0 ? 0 : plan[result.confirmed_messages - 1].end;
  result.returned_from = std::move(returned_from);
  result.nacked = nacked;
  result.started = started;
  return result;
}

void Publisher::settle(const std::vector<OutboxChange>& changes, const PublishResult& result, Source source) {
  const std::size_t confirmed_changes = result.confirmed_changes;
  const std::size_t confirmed_messages = result.confirmed_messages;
  const auto& returned_from = result.returned_from;
  const auto started = result.started;
  // A change the broker returned had no queue to go to: it stays in the outbox, and so
  // does every later change of its table (a queue bound meanwhile may have received
  // those), until a queue is bound; then they are all shipped again in id order, so a
  // replica that saw a later change sees it again after the earlier ones.
  std::vector<OutboxChange> done;
  done.reserve(confirmed_changes);
  std::map<OutboxReader::TableName, std::size_t> kept;
  std::vector<OutboxChange> kept_changes;
  for (std::size_t i = 0; i < confirmed_changes; ++i) {
    const OutboxChange& c = changes[i];
    auto r = returned_from.find(OutboxReader::TableName{c.schema, c.table});
    if (r != returned_from.end() && c.id >= r->second) {
      ++kept[r->first];
      if (source == Source::Slot) kept_changes.push_back(c);
    } else {
      done.push_back(c);
    }
  }
  if (source == Source::Outbox) {
    outbox_->remove(done);
    vacuum_->deleted(done.size());
  } else {
    // Logical mode: what the broker returned goes into the outbox, where the held
    // table's changes wait (and its later changes from the stream go behind them).
    outbox_->park(kept_changes);
    for (const auto& [table, n] : kept) outbox_tables_.insert(table);
  }
  auto now = std::chrono::steady_clock::now();
  for (const auto& [table, n] : kept) {
    HeldTable& h = held_[table];
    h.from_id = std::min(h.from_id, returned_from.at(table));
    if (h.retry_at.time_since_epoch().count() != 0) h.wait = std::min<std::chrono::seconds>(h.wait * 2, 30s);
    h.retry_at = now + h.wait;
    if (h.warned_at.time_since_epoch().count() == 0 || now - h.warned_at > 60s) {
      h.warned_at = now;
      spdlog::warn("no queue is bound for table {} on exchange '{}': its changes stay in the outbox "
                   "until one is (retrying every {} s at most; start its listener, or untrack it)",
                   routing_key(table.first, table.second), config_.exchange, 30);
    }
  }
  for (const auto& c : done) {
    auto h = held_.find(OutboxReader::TableName{c.schema, c.table});
    if (h != held_.end()) {
      spdlog::info("table {} is routable again; its held changes are being shipped",
                   routing_key(c.schema, c.table));
      held_.erase(h);
    }
  }

  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  metrics_.observe("pgfanout_publisher_confirm_latency_seconds", {}, seconds);
  std::map<std::string, double> by_table;
  for (const auto& c : done) by_table[routing_key(c.schema, c.table)] += 1;
  for (const auto& [table, n] : by_table) {
    metrics_.add("pgfanout_publisher_changes_published_total", {{"table", table}}, n);
  }
  metrics_.add("pgfanout_publisher_messages_published_total", {}, static_cast<double>(confirmed_messages));
  if (!done.empty()) {
    metrics_.set("pgfanout_publisher_last_shipped_change_id", {}, static_cast<double>(done.back().id));
  }
  shipped_since_summary_ += done.size();
  spdlog::debug("shipped {} changes in {} messages ({:.1f} ms to confirm)", done.size(),
                confirmed_messages, seconds * 1000);
}

void Publisher::maybe_log_summary(bool force) {
  auto now = std::chrono::steady_clock::now();
  auto elapsed = now - last_summary_;
  if (!force && elapsed < config_.summary_interval) return;
  if (slot_) {
    auto lag = outbox_->wal_since(slot_->flushed());
    metrics_.set("pgfanout_publisher_slot_lag_bytes", {}, static_cast<double>(lag));
    metrics_.set("pgfanout_publisher_slot_lag_seconds", {}, slot_->lag_seconds());
  }
  auto depth = outbox_->depth(held_from());
  metrics_.set("pgfanout_publisher_outbox_depth", {}, static_cast<double>(depth.rows));
  metrics_.set("pgfanout_publisher_oldest_change_age_seconds", {}, depth.oldest_age_seconds);
  if (shipped_since_summary_ > 0 || depth.rows > 0) {
    spdlog::info("shipped {} changes in {:.0f} s; outbox {}; oldest {:.3f} s",
                 with_thousands(shipped_since_summary_), std::chrono::duration<double>(elapsed).count(),
                 with_thousands(static_cast<std::uint64_t>(depth.rows)), depth.oldest_age_seconds);
  }
  shipped_since_summary_ = 0;
  last_summary_ = now;
}

}  // namespace pgfanout
