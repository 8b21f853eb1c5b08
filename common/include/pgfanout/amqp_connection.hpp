#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "pgfanout/amqp_url.hpp"

// rabbitmq-c types, declared here so that its headers stay out of ours.
struct amqp_connection_state_t_;
struct amqp_frame_t_;
struct amqp_rpc_reply_t_;

namespace pgfanout {

/// The broker connection or channel failed (refused, closed, heartbeat missed, channel
/// closed by the broker). Transient: drop the connection, back off, reconnect.
class AmqpError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The broker refused a declaration because what exists differs (AMQP 406
/// PRECONDITION_FAILED), e.g. a queue declared before with another type or other
/// arguments. Not transient: declaring again gives the same answer.
class AmqpPreconditionFailed : public AmqpError {
 public:
  using AmqpError::AmqpError;
};

/// RabbitMQ's queue types pgfanout declares (x-queue-type). A queue keeps the type it was
/// declared with; the broker refuses to declare it again with another.
enum class QueueType { Classic, Quorum };

/// A message header value: rabbitmq-c tables hold more types, pgfanout needs these two.
/// A received header of another type (float, boolean, table ...) or an unsigned integer
/// beyond int64 arrives as a string in parentheses that names it.
using HeaderValue = std::variant<std::string, std::int64_t>;
using Headers = std::vector<std::pair<std::string, HeaderValue>>;

struct OutgoingMessage {
  std::string_view exchange;
  std::string_view routing_key;
  std::string_view body;
  std::string_view message_id;
  std::string_view content_type = "application/json";
  Headers headers;
};

/// Spare bytes a delivered body is allocated with past its end: a JSON parser may read
/// that far (simdjson's padding), so the listener parses the body where it is, uncopied.
inline constexpr std::size_t kDeliveryBodySlack = 64;

/// A message delivered to a consumer. Ack it (after it has been applied) on the same
/// connection that delivered it: its delivery tag means nothing on any other.
struct Delivery {
  std::uint64_t delivery_tag = 0;
  bool redelivered = false;
  std::string routing_key;
  std::string body;
  std::string message_id;
  std::string content_type;
  /// 2 for a persistent message, 1 transient, 0 when the publisher did not say.
  std::uint8_t delivery_mode = 0;
  Headers headers;
};

/// What the broker says about published messages on a confirm channel.
struct ConfirmAck {
  std::uint64_t delivery_tag;
  bool multiple;
};
struct ConfirmNack {
  std::uint64_t delivery_tag;
  bool multiple;
};
/// A mandatory message no queue was bound to (a basic.ack for it follows).
struct ReturnedMessage {
  std::string routing_key;
  std::string reply_text;
  std::string message_id;
};
using BrokerEvent = std::variant<ConfirmAck, ConfirmNack, ReturnedMessage>;

namespace detail {
struct ConnectionDeleter {
  void operator()(::amqp_connection_state_t_* state) const;
};
}  // namespace detail

/// One AMQP 0-9-1 connection with one channel, owned by one thread. Every rabbitmq-c
/// status and RPC reply goes through one checking function that throws AmqpError; the
/// rest of the code never sees a return code. Heartbeats are negotiated from the URL and
/// serviced by every blocking call here; an idle owner must call tick() at least every
/// heartbeat/2.
class AmqpConnection {
 public:
  AmqpConnection(const AmqpUrl& url, std::string_view connection_name);
  ~AmqpConnection();
  AmqpConnection(const AmqpConnection&) = delete;
  AmqpConnection& operator=(const AmqpConnection&) = delete;

  void declare_exchange(std::string_view name);
  /// Declares a durable queue of `type`; `single_active_consumer` makes further consumers
  /// standbys. Throws AmqpPreconditionFailed when the queue exists with other arguments.
  void declare_queue(std::string_view name, bool single_active_consumer,
                     QueueType type = QueueType::Classic);
  void bind_queue(std::string_view queue, std::string_view exchange, std::string_view key);
  void unbind_queue(std::string_view queue, std::string_view exchange, std::string_view key);
  /// Number of ready messages in an existing queue (passive declare).
  std::uint32_t queue_depth(std::string_view queue);

  /// Puts the channel in publisher-confirm mode: every publish gets a delivery tag
  /// (1, 2, 3, ...) that the broker later acks or nacks through next_event().
  void enable_confirms();
  /// Publishes a persistent message. With `mandatory`, an unroutable message comes back
  /// as a ReturnedMessage event. Returns the confirm delivery tag (0 without confirms).
  std::uint64_t publish(const OutgoingMessage& message, bool mandatory);
  /// Waits up to `timeout` for the broker's next confirm or return.
  std::optional<BrokerEvent> next_event(std::chrono::milliseconds timeout);

  void set_prefetch(std::uint16_t count);
  void consume(std::string_view queue);
  /// Waits up to `timeout` for the next delivery; nullopt on timeout.
  std::optional<Delivery> next_delivery(std::chrono::milliseconds timeout);
  /// True when a delivery can be read without waiting on the socket.
  bool has_buffered_input() const;
  void ack(std::uint64_t delivery_tag, bool multiple);

  /// Services heartbeats (send ours, notice a silent broker) without blocking; throws
  /// AmqpError when the connection is dead. Confirms and returns that arrive meanwhile
  /// are queued for next_event(), deliveries (after consume()) for next_delivery(). An
  /// owner busy with other work calls it at least every heartbeat/2.
  void tick();
  /// Sends connection.close and waits (bounded) for the broker's reply.
  void close() noexcept;

  int socket_fd() const;
  std::chrono::seconds heartbeat() const { return heartbeat_; }

 private:
  /// Checks the reply of the library's last RPC (amqp_get_rpc_reply).
  void check_reply(const char* what);
  /// Throws AmqpError for a reply that is not AMQP_RESPONSE_NORMAL; returns otherwise.
  void check_reply(const ::amqp_rpc_reply_t_& reply, const char* what);
  void handle_method_frame(const ::amqp_frame_t_& frame, std::vector<BrokerEvent>* events);
  ReturnedMessage read_returned(const ::amqp_frame_t_& frame);
  std::optional<Delivery> read_delivery(std::chrono::milliseconds timeout);

  std::unique_ptr<::amqp_connection_state_t_, detail::ConnectionDeleter> state_;
  std::chrono::seconds heartbeat_;
  std::uint64_t next_publish_tag_ = 0;
  bool confirms_ = false;
  bool open_ = false;
  std::vector<BrokerEvent> pending_events_;
  bool consuming_ = false;
  std::deque<Delivery> buffered_;  // read by tick() while the owner was busy
};

}  // namespace pgfanout
