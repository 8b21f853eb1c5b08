#include <utility>  // Boost 1.74's asio/awaitable.hpp uses std::exchange without it.

#include "pgfanout/metrics_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

namespace pgfanout {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct MetricsServer::State {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  const MetricsRegistry& registry;
  explicit State(const MetricsRegistry& r) : registry(r) {}
};

namespace {

asio::awaitable<void> serve_connection(tcp::socket socket, const MetricsRegistry& registry) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  try {
    for (;;) {
      http::request<http::string_body> request;
      stream.expires_after(std::chrono::seconds(30));
      co_await http::async_read(stream, buffer, request, asio::use_awaitable);
      http::response<http::string_body> response;
      response.version(request.version());
      response.keep_alive(request.keep_alive());
      std::string_view target(request.target().data(), request.target().size());
      if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
      if (request.method() != http::verb::get && request.method() != http::verb::head) {
        response.result(http::status::method_not_allowed);
        response.set(http::field::allow, "GET, HEAD");
        response.body() = "method not allowed\n";
      } else if (target == "/metrics") {
        response.result(http::status::ok);
        response.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
        response.body() = registry.render();
      } else if (target == "/" || target == "/healthz") {
        response.result(http::status::ok);
        response.set(http::field::content_type, "text/plain");
        response.body() = "ok, see /metrics\n";
      } else {
        response.result(http::status::not_found);
        response.body() = "not found\n";
      }
      response.prepare_payload();
      co_await http::async_write(stream, response, asio::use_awaitable);
      if (!response.keep_alive()) break;
    }
  } catch (const std::exception&) {
    // A client that went away or sent garbage ends its own connection only.
  }
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

asio::awaitable<void> accept_loop(MetricsServer* /*owner*/, tcp::acceptor& acceptor,
                                  const MetricsRegistry& registry) {
  for (;;) {
    tcp::socket socket = co_await acceptor.async_accept(asio::use_awaitable);
    asio::co_spawn(acceptor.get_executor(), serve_connection(std::move(socket), registry),
                   asio::detached);
  }
}

}  // namespace

MetricsServer::MetricsServer(const HostPort& address, const MetricsRegistry& registry)
    : state_(std::make_unique<State>(registry)) {
  tcp::resolver resolver(state_->io);
  tcp::endpoint endpoint =
      resolver.resolve(address.host, std::to_string(address.port), tcp::resolver::passive)
          .begin()
          ->endpoint();
  state_->acceptor.open(endpoint.protocol());
  state_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  state_->acceptor.bind(endpoint);
  state_->acceptor.listen();
  asio::co_spawn(state_->io, accept_loop(this, state_->acceptor, state_->registry),
                 [](std::exception_ptr e) {
                   if (!e) return;
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& ex) {
                     spdlog::debug("metrics endpoint stopped: {}", ex.what());
                   }
                 });
  spdlog::info("serving metrics at http://{}:{}/metrics", address.host, port());
  thread_ = std::thread([s = state_.get()] { s->io.run(); });
}

MetricsServer::~MetricsServer() {
  state_->io.stop();
  if (thread_.joinable()) thread_.join();
}

unsigned short MetricsServer::port() const { return state_->acceptor.local_endpoint().port(); }

}  // namespace pgfanout
