#include <utility>  // Boost 1.74's asio/awaitable.hpp uses std::exchange without it.

#include "pgfanout/stop_signal.hpp"

#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <mutex>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

namespace pgfanout {

struct StopSignal::State {
  boost::asio::io_context io;
  boost::asio::signal_set signals{io, SIGINT, SIGTERM};
  std::mutex mutex;
  std::condition_variable cv;
  bool stopped = false;
};

StopSignal::StopSignal(std::function<void()> on_signal, std::chrono::seconds grace,
                       std::string what_is_kept)
    : state_(std::make_unique<State>()) {
  State* s = state_.get();
  s->signals.async_wait([s, on_signal = std::move(on_signal), grace,
                         kept = std::move(what_is_kept)](const boost::system::error_code& ec, int signal) {
    if (ec) return;
    spdlog::info("received {}, stopping", signal == SIGINT ? "SIGINT" : "SIGTERM");
    on_signal();
    std::unique_lock lock(s->mutex);
    if (s->cv.wait_for(lock, grace, [s] { return s->stopped; })) return;
    spdlog::warn("not stopped {} s after the signal (a server does not answer); exiting now, {}",
                 grace.count(), kept);
    spdlog::default_logger()->flush();
    std::_Exit(0);
  });
  thread_ = std::thread([s] { s->io.run(); });
}

StopSignal::~StopSignal() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stopped = true;
  }
  state_->cv.notify_all();
  state_->io.stop();
  thread_.join();
}

}  // namespace pgfanout
