#pragma once

#include <utility>  // Boost 1.74's asio/awaitable.hpp uses std::exchange without it.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <pqxx/connection>
#include <pqxx/notification>

#include "outbox_reader.hpp"
#include "outbox_vacuum.hpp"
#include "slot_reader.hpp"
#include "pgfanout/amqp_connection.hpp"
#include "pgfanout/amqp_url.hpp"
#include "pgfanout/backoff.hpp"
#include "pgfanout/broker_list.hpp"
#include "pgfanout/metrics.hpp"

namespace pgfanout {

struct PublisherConfig {
  std::string source;
  /// The broker nodes (--amqp), tried in turn.
  std::vector<AmqpUrl> brokers;
  std::string exchange = "pgfanout";
  std::size_t pack = 1;
  /// The largest message sent (--max-message-bytes): a pack is cut before it gets bigger,
  /// and a single change bigger than this travels in chunks (message_chunks.hpp).
  std::size_t max_message_bytes = std::size_t{16} << 20;
  int batch_rows = 2000;
  std::int64_t batch_bytes = 16 << 20;
  std::chrono::milliseconds poll_interval{500};
  /// While changes keep coming, a read that does not fill a batch is followed by the next
  /// one this long after it started: `trickle_interval` for a slow trickle (latency), and
  /// `busy_interval` once changes come at `busy_rate` per second or more (see drain()).
  std::chrono::milliseconds trickle_interval{5};
  std::chrono::milliseconds busy_interval{20};
  double busy_rate = 1000;
  std::chrono::seconds confirm_timeout{60};
  std::chrono::seconds summary_interval{10};
};

/// Ships the outbox to the exchange. One io_context thread owns the LISTEN connection and
/// the AMQP connection. A change leaves the outbox only after the broker confirmed it, and
/// batches are published, confirmed and deleted in id order; any failure drops both
/// connections, backs off, reconnects and reads the outbox again from its head, so what
/// was unconfirmed is published again (at least once, never lost).
class Publisher {
 public:
  Publisher(PublisherConfig config, MetricsRegistry& metrics);
  ~Publisher();

  /// Runs until SIGINT or SIGTERM; returns the process exit code (0). A stop finishes the
  /// batch in flight; if a server does not answer within a few seconds of the signal, the
  /// process exits 0 at once instead, leaving what was not confirmed in the outbox.
  int run();

 private:
  boost::asio::awaitable<void> main_loop();
  boost::asio::awaitable<void> session();
  boost::asio::awaitable<void> pause(std::chrono::milliseconds delay);
  boost::asio::awaitable<void> wait_for_wake(std::chrono::milliseconds timeout);
  /// Waits until the PostgreSQL socket Asio watches is readable, or `timeout`.
  boost::asio::awaitable<void> wait_readable(std::chrono::milliseconds timeout);
  boost::asio::awaitable<void> drain();
  /// After a read of `read` changes that did not fill a batch: pauses until the next read
  /// is due (see drain()).
  boost::asio::awaitable<void> pause_before_next_read(
      std::size_t read, std::chrono::steady_clock::time_point read_at,
      std::optional<std::chrono::steady_clock::time_point> previous_read);
  /// Logical mode: streams the slot (and ships what waits in the outbox) until the capture
  /// switches back to triggers and the slot is shipped.
  boost::asio::awaitable<void> stream_slot(const OutboxReader::Capture& capture);
  /// Ships one batch from the head of the outbox; returns how many changes it read.
  std::size_t ship_batch();
  enum class Source { Outbox, Slot };
  /// Publishes `changes` (read from `source`, in order), waits for the broker's confirms,
  /// and settles them with their source: deleted from the outbox, or confirmed to the slot.
  void ship(const std::vector<OutboxChange>& changes, Source source);
  struct PublishResult {
    std::size_t confirmed_messages = 0;
    std::size_t confirmed_changes = 0;  ///< the prefix of the changes the broker confirmed
    /// For each table the broker returned a message of: the first change id returned.
    std::map<OutboxReader::TableName, std::int64_t> returned_from;
    std::optional<std::uint64_t> nacked;
    std::chrono::steady_clock::time_point started;
  };
  PublishResult publish(const std::vector<OutboxChange>& changes);
  void settle(const std::vector<OutboxChange>& changes, const PublishResult& result, Source source);
  void connect_broker();
  void consume_notifications();
  /// Trigger mode: whether the capture switched to logical (pgfanout.capture names a
  /// slot). Reads pgfanout.capture only when set_capture() has notified since the last read.
  bool capture_switched();
  void maybe_log_summary(bool force);
  void disconnect();
  void stop();

  PublisherConfig config_;
  MetricsRegistry& metrics_;
  boost::asio::io_context io_;
  boost::asio::steady_timer timer_;
  std::unique_ptr<pqxx::connection> pg_;
  std::unique_ptr<pqxx::notification_receiver> wake_;
  std::unique_ptr<pqxx::notification_receiver> capture_wake_;  ///< trigger mode: set_capture's NOTIFY
  std::unique_ptr<OutboxReader> outbox_;
  /// Logical mode: the slot being streamed, and the tables with changes in the outbox.
  std::unique_ptr<SlotReader> slot_;
  std::set<OutboxReader::TableName> outbox_tables_;
  bool switching_ = false;  ///< the session ended to follow a switch of capture mode
  /// Vacuums the outbox from a thread of its own; made when this publisher first leads.
  std::unique_ptr<OutboxVacuum> vacuum_;
  BrokerList brokers_;
  std::unique_ptr<AmqpConnection> amqp_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> pg_socket_;
  Backoff backoff_{std::chrono::milliseconds(500), std::chrono::seconds(30)};
  /// Set by the signal thread; everything else runs on the io_context thread.
  std::atomic<bool> stopping_{false};
  bool idle_ = false;
  bool woken_ = false;
  bool capture_notified_ = false;

  std::chrono::steady_clock::time_point last_summary_;
  std::uint64_t shipped_since_summary_ = 0;
  /// Tables whose changes the broker returned because no queue is bound for them: their
  /// changes stay in the outbox, and are left out of reads until `retry_at`.
  struct HeldTable {
    std::chrono::steady_clock::time_point retry_at;
    std::chrono::seconds wait{1};
    std::chrono::steady_clock::time_point warned_at;
    std::int64_t from_id = std::numeric_limits<std::int64_t>::max();  ///< its first change kept
  };
  std::map<OutboxReader::TableName, HeldTable> held_;
  std::vector<OutboxReader::TableName> held_now();
  std::int64_t held_from() const;
};

}  // namespace pgfanout
