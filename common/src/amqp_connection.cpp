#include "pgfanout/amqp_connection.hpp"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/time.h>

#include <filesystem>
#include <limits>

namespace pgfanout {

void detail::ConnectionDeleter::operator()(amqp_connection_state_t_* state) const {
  amqp_destroy_connection(state);
}

namespace {

constexpr amqp_channel_t kChannel = 1;

amqp_bytes_t bytes(std::string_view s) {
  return amqp_bytes_t{s.size(), const_cast<char*>(s.data())};
}

std::string to_string(amqp_bytes_t b) {
  return b.bytes ? std::string(static_cast<const char*>(b.bytes), b.len) : std::string();
}

timeval to_timeval(std::chrono::milliseconds timeout) {
  if (timeout.count() < 0) timeout = std::chrono::milliseconds(0);
  return timeval{static_cast<time_t>(timeout.count() / 1000),
                 static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
}

bool is_tls_status(int status) {
  return status <= AMQP_STATUS_SSL_ERROR && status > _AMQP_STATUS_SSL_NEXT_VALUE;
}

// rabbitmq-c says only "a SSL error occurred"; OpenSSL's error queue of this thread (which
// rabbitmq-c leaves as it was) says why, e.g. "tlsv13 alert certificate required".
std::string status_text(int status) {
  std::string text = amqp_error_string2(status);
  if (!is_tls_status(status)) return text;
  std::string reasons;
  while (unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    if (reason == nullptr || reasons.find(reason) != std::string::npos) continue;
    reasons += reasons.empty() ? "" : "; ";
    reasons += reason;
  }
  return reasons.empty() ? text : text + ": " + reasons;
}

void check_status(int status, const char* what) {
  if (status < 0) {
    throw AmqpError(std::string(what) + ": " + status_text(status));
  }
}

// rabbitmq-c 0.11 lets the handshake finish and checks the broker's certificate after it,
// keeping OpenSSL's reason to itself. This callback notes the reason (e.g. "certificate has
// expired") into the std::string the context's app data points to while it connects; it
// decides nothing: `ok` passes through, and rabbitmq-c refuses what OpenSSL refused.
int note_verify_error(int ok, X509_STORE_CTX* store) {
  if (ok) return ok;
  auto* ssl = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* reason = ssl ? static_cast<std::string*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)))
                     : nullptr;
  if (reason != nullptr && reason->empty()) {
    *reason = X509_verify_cert_error_string(X509_STORE_CTX_get_error(store));
  }
  return ok;
}

// Why opening the socket failed, in words an operator can act on.
std::string open_failure(int status, const AmqpUrl& url, const std::string& cacert,
                         const std::string& verify_error) {
  std::string where = url.host + ":" + std::to_string(url.port);
  switch (status) {
    case AMQP_STATUS_SSL_PEER_VERIFY_FAILED:
      return "TLS: the broker's certificate at " + where + " is not trusted (" +
             (verify_error.empty() ? std::string("no certificate") : verify_error) +
             "): it must chain to a CA in " +
             (cacert.empty() ? std::string("cacert, and none was given (nor is there a system "
                                           "bundle, /etc/ssl/certs/ca-certificates.crt)")
                             : "cacert " + cacert);
    case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED:
      return "TLS: the broker's certificate at " + where + " is not issued for host name '" +
             url.host +
             "' (rabbitmq-c matches the certificate's DNS names only, never an IP address: "
             "connect by a DNS name the certificate lists)";
    default:
      if (is_tls_status(status)) {
        return "TLS handshake with " + where + " failed: " + status_text(status);
      }
      return "connecting to " + where + ": " + status_text(status);
  }
}

Headers read_headers(const amqp_basic_properties_t& props) {
  Headers out;
  if (!(props._flags & AMQP_BASIC_HEADERS_FLAG)) return out;
  for (int i = 0; i < props.headers.num_entries; ++i) {
    const amqp_table_entry_t& e = props.headers.entries[i];
    std::string key = to_string(e.key);
    switch (e.value.kind) {
      case AMQP_FIELD_KIND_UTF8:
      case AMQP_FIELD_KIND_BYTES: out.emplace_back(key, to_string(e.value.value.bytes)); break;
      case AMQP_FIELD_KIND_I8: out.emplace_back(key, std::int64_t{e.value.value.i8}); break;
      case AMQP_FIELD_KIND_U8: out.emplace_back(key, std::int64_t{e.value.value.u8}); break;
      case AMQP_FIELD_KIND_I16: out.emplace_back(key, std::int64_t{e.value.value.i16}); break;
      case AMQP_FIELD_KIND_U16: out.emplace_back(key, std::int64_t{e.value.value.u16}); break;
      case AMQP_FIELD_KIND_I32: out.emplace_back(key, std::int64_t{e.value.value.i32}); break;
      case AMQP_FIELD_KIND_U32: out.emplace_back(key, std::int64_t{e.value.value.u32}); break;
      case AMQP_FIELD_KIND_I64: out.emplace_back(key, std::int64_t{e.value.value.i64}); break;
      case AMQP_FIELD_KIND_U64:
        if (e.value.value.u64 > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
          out.emplace_back(key, std::string("(an unsigned integer beyond int64)"));
        } else {
          out.emplace_back(key, static_cast<std::int64_t>(e.value.value.u64));
        }
        break;
      default:
        // Kept as a placeholder rather than dropped: a header of an unexpected type (a
        // float x-pgfanout-count, say) must read as wrong, not as absent.
        out.emplace_back(key, std::string("(an AMQP field of kind '") +
                                  static_cast<char>(e.value.kind) + "')");
        break;
    }
  }
  return out;
}

}  // namespace

AmqpConnection::AmqpConnection(const AmqpUrl& url, std::string_view connection_name)
    : state_(amqp_new_connection()), heartbeat_(url.heartbeat) {
  if (!state_) throw AmqpError("cannot allocate an AMQP connection");
  amqp_socket_t* socket = nullptr;
  std::string cacert = url.cacert;
  SSL_CTX* tls = nullptr;
  std::string verify_error;
  if (url.tls) {
    socket = amqp_ssl_socket_new(state_.get());
    if (!socket) throw AmqpError("cannot create a TLS socket");
    amqp_ssl_socket_set_verify_peer(socket, url.verify ? 1 : 0);
    amqp_ssl_socket_set_verify_hostname(socket, url.verify ? 1 : 0);
    if (cacert.empty() && std::filesystem::exists("/etc/ssl/certs/ca-certificates.crt")) {
      cacert = "/etc/ssl/certs/ca-certificates.crt";
    }
    if (!cacert.empty()) {
      check_status(amqp_ssl_socket_set_cacert(socket, cacert.c_str()),
                   ("loading the CA certificates of " + cacert).c_str());
    }
    if (!url.certfile.empty()) {
      check_status(amqp_ssl_socket_set_key(socket, url.certfile.c_str(), url.keyfile.c_str()),
                   ("loading the client certificate " + url.certfile + " and key " + url.keyfile)
                       .c_str());
    }
    if (url.verify) {
      tls = static_cast<SSL_CTX*>(amqp_ssl_socket_get_context(socket));
      // SSL_VERIFY_NONE is rabbitmq-c's own mode: it checks the result itself.
      SSL_CTX_set_verify(tls, SSL_VERIFY_NONE, note_verify_error);
      SSL_CTX_set_app_data(tls, &verify_error);
    }
    ERR_clear_error();
  } else {
    socket = amqp_tcp_socket_new(state_.get());
    if (!socket) throw AmqpError("cannot create a TCP socket");
  }
  timeval connect_timeout{10, 0};
  int opened = amqp_socket_open_noblock(socket, url.host.c_str(), url.port, &connect_timeout);
  // verify_error lives only as long as this constructor.
  if (tls) SSL_CTX_set_app_data(tls, nullptr);
  if (opened < 0) throw AmqpError(open_failure(opened, url, cacert, verify_error));
  timeval rpc_timeout{30, 0};
  amqp_set_rpc_timeout(state_.get(), &rpc_timeout);

  amqp_table_entry_t props_entries[1];
  props_entries[0].key = amqp_cstring_bytes("connection_name");
  props_entries[0].value.kind = AMQP_FIELD_KIND_UTF8;
  props_entries[0].value.value.bytes = bytes(connection_name);
  amqp_table_t client_props{1, props_entries};
  amqp_rpc_reply_t login = amqp_login_with_properties(
      state_.get(), url.vhost.c_str(), 0, 131072, static_cast<int>(url.heartbeat.count()),
      &client_props, AMQP_SASL_METHOD_PLAIN, url.user.c_str(), url.password.c_str());
  // With TLS 1.3 the client's handshake ends before the broker has looked at the client
  // certificate, so a broker that refuses it (or its absence) does so only here, often
  // without a reason.
  if (login.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && is_tls_status(login.library_error)) {
    throw AmqpError("logging in over TLS: " + status_text(login.library_error) +
                    (url.certfile.empty()
                         ? " (does the broker require a client certificate? give certfile and "
                           "keyfile)"
                         : " (is the client certificate from a CA the broker trusts?)"));
  }
  // amqp_login returns its reply rather than keeping it for amqp_get_rpc_reply.
  check_reply(login, "logging in");
  heartbeat_ = std::chrono::seconds(amqp_get_heartbeat(state_.get()));
  amqp_channel_open(state_.get(), kChannel);
  check_reply("opening a channel");
  open_ = true;
}

AmqpConnection::~AmqpConnection() { close(); }

void AmqpConnection::close() noexcept {
  if (!open_ || !state_) return;
  open_ = false;
  // A healthy broker answers at once; one that does not must not hold up a stop, and
  // after an unanswered channel.close the connection is not worth a second wait.
  timeval quick{1, 0};
  amqp_set_rpc_timeout(state_.get(), &quick);
  amqp_rpc_reply_t r = amqp_channel_close(state_.get(), kChannel, AMQP_REPLY_SUCCESS);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) return;
  amqp_connection_close(state_.get(), AMQP_REPLY_SUCCESS);
}

// Only the library's RPCs (declare, bind, qos, ...) leave their reply for
// amqp_get_rpc_reply; login, amqp_read_message and amqp_consume_message return theirs and
// leave an older one there, which must not stand for their outcome.
void AmqpConnection::check_reply(const char* what) {
  check_reply(amqp_get_rpc_reply(state_.get()), what);
}

void AmqpConnection::check_reply(const amqp_rpc_reply_t& r, const char* what) {
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: return;
    case AMQP_RESPONSE_NONE: open_ = false; throw AmqpError(std::string(what) + ": no reply");
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      open_ = false;
      throw AmqpError(std::string(what) + ": " + status_text(r.library_error));
    case AMQP_RESPONSE_SERVER_EXCEPTION: break;
  }
  open_ = false;
  std::string reason;
  if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    auto* m = static_cast<amqp_connection_close_t*>(r.reply.decoded);
    reason = "broker closed the connection: " + std::to_string(m->reply_code) + " " +
             to_string(m->reply_text);
    amqp_connection_close_ok_t ok{};
    amqp_send_method(state_.get(), 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
  } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    auto* m = static_cast<amqp_channel_close_t*>(r.reply.decoded);
    reason = "broker closed the channel: " + std::to_string(m->reply_code) + " " +
             to_string(m->reply_text);
    amqp_channel_close_ok_t ok{};
    amqp_send_method(state_.get(), kChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    if (m->reply_code == AMQP_PRECONDITION_FAILED) {
      throw AmqpPreconditionFailed(std::string(what) + ": " + reason);
    }
  } else {
    reason = "unexpected broker method " + std::to_string(r.reply.id);
  }
  throw AmqpError(std::string(what) + ": " + reason);
}

void AmqpConnection::declare_exchange(std::string_view name) {
  amqp_exchange_declare(state_.get(), kChannel, bytes(name), amqp_cstring_bytes("topic"), 0, 1, 0,
                        0, amqp_empty_table);
  check_reply(("declaring exchange " + std::string(name)).c_str());
}

void AmqpConnection::declare_queue(std::string_view name, bool single_active_consumer,
                                   QueueType type) {
  // A classic queue is declared without x-queue-type, as before queue types existed, so
  // that queues declared by earlier versions keep matching.
  amqp_table_entry_t entries[2];
  int count = 0;
  if (single_active_consumer) {
    entries[count].key = amqp_cstring_bytes("x-single-active-consumer");
    entries[count].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    entries[count].value.value.boolean = 1;
    ++count;
  }
  if (type == QueueType::Quorum) {
    entries[count].key = amqp_cstring_bytes("x-queue-type");
    entries[count].value.kind = AMQP_FIELD_KIND_UTF8;
    entries[count].value.value.bytes = amqp_cstring_bytes("quorum");
    ++count;
  }
  amqp_table_t args{count, entries};
  amqp_queue_declare(state_.get(), kChannel, bytes(name), 0, 1, 0, 0, args);
  check_reply(("declaring queue " + std::string(name)).c_str());
}

std::uint32_t AmqpConnection::queue_depth(std::string_view queue) {
  auto* ok = amqp_queue_declare(state_.get(), kChannel, bytes(queue), 1, 0, 0, 0, amqp_empty_table);
  check_reply(("inspecting queue " + std::string(queue)).c_str());
  return ok ? ok->message_count : 0;
}

void AmqpConnection::bind_queue(std::string_view queue, std::string_view exchange,
                                std::string_view key) {
  amqp_queue_bind(state_.get(), kChannel, bytes(queue), bytes(exchange), bytes(key),
                  amqp_empty_table);
  check_reply(("binding queue " + std::string(queue) + " to " + std::string(key)).c_str());
}

void AmqpConnection::unbind_queue(std::string_view queue, std::string_view exchange,
                                  std::string_view key) {
  amqp_queue_unbind(state_.get(), kChannel, bytes(queue), bytes(exchange), bytes(key),
                    amqp_empty_table);
  check_reply(("unbinding queue " + std::string(queue) + " from " + std::string(key)).c_str());
}

void AmqpConnection::enable_confirms() {
  amqp_confirm_select(state_.get(), kChannel);
  check_reply("enabling publisher confirms");
  confirms_ = true;
  next_publish_tag_ = 0;
}

std::uint64_t AmqpConnection::publish(const OutgoingMessage& m, bool mandatory) {
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                 AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_APP_ID_FLAG;
  props.content_type = bytes(m.content_type);
  props.delivery_mode = 2;
  props.message_id = bytes(m.message_id);
  props.app_id = amqp_cstring_bytes("pgfanout");
  std::vector<amqp_table_entry_t> entries(m.headers.size());
  for (size_t i = 0; i < m.headers.size(); ++i) {
    entries[i].key = bytes(m.headers[i].first);
    if (const auto* s = std::get_if<std::string>(&m.headers[i].second)) {
      entries[i].value.kind = AMQP_FIELD_KIND_UTF8;
      entries[i].value.value.bytes = bytes(*s);
    } else {
      entries[i].value.kind = AMQP_FIELD_KIND_I64;
      entries[i].value.value.i64 = std::get<std::int64_t>(m.headers[i].second);
    }
  }
  if (!entries.empty()) {
    props._flags |= AMQP_BASIC_HEADERS_FLAG;
    props.headers = amqp_table_t{static_cast<int>(entries.size()), entries.data()};
  }
  int status = amqp_basic_publish(state_.get(), kChannel, bytes(m.exchange), bytes(m.routing_key),
                                  mandatory ? 1 : 0, 0, &props, bytes(m.body));
  if (status < 0) open_ = false;
  check_status(status, "publishing");
  return confirms_ ? ++next_publish_tag_ : 0;
}

ReturnedMessage AmqpConnection::read_returned(const amqp_frame_t_& frame) {
  auto* r = static_cast<amqp_basic_return_t*>(frame.payload.method.decoded);
  ReturnedMessage out{to_string(r->routing_key), to_string(r->reply_text), {}};
  amqp_message_t message;
  amqp_rpc_reply_t reply = amqp_read_message(state_.get(), frame.channel, &message, 0);
  check_reply(reply, "reading a returned message");
  if (message.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
    out.message_id = to_string(message.properties.message_id);
  }
  amqp_destroy_message(&message);
  return out;
}

void AmqpConnection::handle_method_frame(const amqp_frame_t_& frame,
                                         std::vector<BrokerEvent>* events) {
  switch (frame.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
      auto* a = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
      events->push_back(ConfirmAck{a->delivery_tag, a->multiple != 0});
      return;
    }
    case AMQP_BASIC_NACK_METHOD: {
      auto* n = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
      events->push_back(ConfirmNack{n->delivery_tag, n->multiple != 0});
      return;
    }
    case AMQP_BASIC_RETURN_METHOD: events->push_back(read_returned(frame)); return;
    case AMQP_CHANNEL_CLOSE_METHOD: {
      open_ = false;
      auto* m = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
      std::string text = to_string(m->reply_text);
      amqp_channel_close_ok_t ok{};
      amqp_send_method(state_.get(), frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
      throw AmqpError("broker closed the channel: " + std::to_string(m->reply_code) + " " + text);
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
      open_ = false;
      auto* m = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
      std::string text = to_string(m->reply_text);
      amqp_connection_close_ok_t ok{};
      amqp_send_method(state_.get(), 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
      throw AmqpError("broker closed the connection: " + std::to_string(m->reply_code) + " " + text);
    }
    case AMQP_BASIC_CANCEL_METHOD:
      throw AmqpError("broker cancelled the consumer (queue deleted?)");
    default: return;
  }
}

std::optional<BrokerEvent> AmqpConnection::next_event(std::chrono::milliseconds timeout) {
  if (!pending_events_.empty()) {
    BrokerEvent e = std::move(pending_events_.front());
    pending_events_.erase(pending_events_.begin());
    return e;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<BrokerEvent> events;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    timeval tv = to_timeval(left);
    amqp_frame_t frame;
    int status = amqp_simple_wait_frame_noblock(state_.get(), &frame, &tv);
    if (status == AMQP_STATUS_TIMEOUT) return std::nullopt;
    if (status < 0) open_ = false;
    check_status(status, "waiting for the broker");
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    handle_method_frame(frame, &events);
    if (!events.empty()) {
      BrokerEvent e = std::move(events.front());
      pending_events_.insert(pending_events_.end(), std::make_move_iterator(events.begin() + 1),
                             std::make_move_iterator(events.end()));
      return e;
    }
  }
}

void AmqpConnection::tick() {
  if (consuming_) {
    // Deliveries are read whole and kept for next_delivery(): the frame loop below would
    // drop their content frames.
    while (auto d = read_delivery(std::chrono::milliseconds(0))) buffered_.push_back(std::move(*d));
    return;
  }
  for (;;) {
    timeval zero{0, 0};
    amqp_frame_t frame;
    int status = amqp_simple_wait_frame_noblock(state_.get(), &frame, &zero);
    if (status == AMQP_STATUS_TIMEOUT) return;
    if (status < 0) open_ = false;
    check_status(status, "checking the broker connection");
    if (frame.frame_type == AMQP_FRAME_METHOD) handle_method_frame(frame, &pending_events_);
  }
}

void AmqpConnection::set_prefetch(std::uint16_t count) {
  amqp_basic_qos(state_.get(), kChannel, 0, count, 0);
  check_reply("setting the prefetch count");
}

void AmqpConnection::consume(std::string_view queue) {
  amqp_basic_consume(state_.get(), kChannel, bytes(queue), amqp_empty_bytes, 0, 0, 0,
                     amqp_empty_table);
  check_reply(("consuming from " + std::string(queue)).c_str());
  consuming_ = true;
}

std::optional<Delivery> AmqpConnection::next_delivery(std::chrono::milliseconds timeout) {
  if (!buffered_.empty()) {
    Delivery d = std::move(buffered_.front());
    buffered_.pop_front();
    return d;
  }
  return read_delivery(timeout);
}

std::optional<Delivery> AmqpConnection::read_delivery(std::chrono::milliseconds timeout) {
  amqp_maybe_release_buffers(state_.get());
  amqp_envelope_t envelope;
  timeval tv = to_timeval(timeout);
  amqp_rpc_reply_t r = amqp_consume_message(state_.get(), &envelope, &tv, 0);
  if (r.reply_type == AMQP_RESPONSE_NORMAL) {
    Delivery d;
    d.delivery_tag = envelope.delivery_tag;
    d.redelivered = envelope.redelivered != 0;
    d.routing_key = to_string(envelope.routing_key);
    d.body.reserve(envelope.message.body.len + kDeliveryBodySlack);
    if (envelope.message.body.len) {
      d.body.append(static_cast<const char*>(envelope.message.body.bytes), envelope.message.body.len);
    }
    if (envelope.message.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
      d.message_id = to_string(envelope.message.properties.message_id);
    }
    if (envelope.message.properties._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
      d.content_type = to_string(envelope.message.properties.content_type);
    }
    if (envelope.message.properties._flags & AMQP_BASIC_DELIVERY_MODE_FLAG) {
      d.delivery_mode = envelope.message.properties.delivery_mode;
    }
    d.headers = read_headers(envelope.message.properties);
    amqp_destroy_envelope(&envelope);
    return d;
  }
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
    if (r.library_error == AMQP_STATUS_TIMEOUT) return std::nullopt;
    if (r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
      amqp_frame_t frame;
      check_status(amqp_simple_wait_frame(state_.get(), &frame), "reading a broker frame");
      if (frame.frame_type == AMQP_FRAME_METHOD) handle_method_frame(frame, &pending_events_);
      pending_events_.clear();  // a consumer connection publishes nothing to confirm
      return std::nullopt;
    }
    open_ = false;
    throw AmqpError(std::string("consuming: ") + amqp_error_string2(r.library_error));
  }
  check_reply(r, "consuming");
  return std::nullopt;
}

bool AmqpConnection::has_buffered_input() const {
  return !buffered_.empty() || amqp_frames_enqueued(state_.get()) || amqp_data_in_buffer(state_.get());
}

void AmqpConnection::ack(std::uint64_t delivery_tag, bool multiple) {
  int status = amqp_basic_ack(state_.get(), kChannel, delivery_tag, multiple ? 1 : 0);
  if (status < 0) open_ = false;
  check_status(status, "acknowledging");
}

int AmqpConnection::socket_fd() const { return amqp_get_sockfd(state_.get()); }

}  // namespace pgfanout
