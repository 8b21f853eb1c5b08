#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace pgfanout {

/// Takes SIGINT and SIGTERM on a thread of its own, so that a stop never waits for a call
/// to a server that does not answer (a connect attempt, a send to a broker that stopped
/// reading). On the first signal it calls `on_signal` from that thread; if the owner has
/// not destroyed this object `grace` later, it logs why leaving is safe (`what_is_kept`)
/// and ends the process with exit code 0.
class StopSignal {
 public:
  StopSignal(std::function<void()> on_signal, std::chrono::seconds grace, std::string what_is_kept);
  /// Marks the stop as done (no forced exit any more) and joins the signal thread.
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

 private:
  struct State;
  std::unique_ptr<State> state_;
  std::thread thread_;
};

}  // namespace pgfanout
