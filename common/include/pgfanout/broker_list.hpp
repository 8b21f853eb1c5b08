#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pgfanout/amqp_connection.hpp"
#include "pgfanout/amqp_url.hpp"

namespace pgfanout {

/// The broker nodes given to --amqp (nodes of one cluster, or one broker). connect()
/// returns a connection to the first node that answers, trying them in turn from the one
/// it used last; after failed(), from the node after it, so that a node that just failed
/// is tried last and a reconnect does not wait on it first.
class BrokerList {
 public:
  /// `nodes` must not be empty.
  explicit BrokerList(std::vector<AmqpUrl> nodes);

  /// Connects (and logs in) to the first node that answers. Throws AmqpError with every
  /// node's reason when none does.
  std::unique_ptr<AmqpConnection> connect(std::string_view connection_name);
  /// The connection to the current node failed: start with the next node next time.
  void failed();

  /// The node of the last successful connect() (the first before any).
  const AmqpUrl& current() const { return nodes_[current_]; }
  /// Every node, passwords masked, comma-separated: for logs.
  std::string masked() const;
  std::size_t size() const { return nodes_.size(); }

 private:
  std::vector<AmqpUrl> nodes_;
  std::size_t current_ = 0;
};

}  // namespace pgfanout
