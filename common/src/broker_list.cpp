#include "pgfanout/broker_list.hpp"

#include <stdexcept>

#include <spdlog/spdlog.h>

namespace pgfanout {

BrokerList::BrokerList(std::vector<AmqpUrl> nodes) : nodes_(std::move(nodes)) {
  if (nodes_.empty()) throw std::invalid_argument("no broker URL");
}

std::unique_ptr<AmqpConnection> BrokerList::connect(std::string_view connection_name) {
  std::string reasons;
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    std::size_t node = (current_ + i) % nodes_.size();
    try {
      auto connection = std::make_unique<AmqpConnection>(nodes_[node], connection_name);
      current_ = node;
      return connection;
    } catch (const AmqpError& e) {
      if (nodes_.size() == 1) throw;
      spdlog::warn("RabbitMQ node {}: {}", nodes_[node].masked(), e.what());
      reasons += (reasons.empty() ? "" : "; ") + nodes_[node].masked() + ": " + e.what();
    }
  }
  throw AmqpError("no RabbitMQ node answered (" + reasons + ")");
}

void BrokerList::failed() {
  if (nodes_.size() > 1) current_ = (current_ + 1) % nodes_.size();
}

std::string BrokerList::masked() const {
  std::string out;
  for (const auto& node : nodes_) {
    if (!out.empty()) out += ", ";
    out += node.masked();
  }
  return out;
}

}  // namespace pgfanout
