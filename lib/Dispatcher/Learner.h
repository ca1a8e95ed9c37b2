//===- Learner.h - The process's thread of learning windows -----*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// One thread per process opens and closes the learning windows of every
// adaptive dispatcher with AdaptiveConfig::Background, each on its own
// schedule: a window of Window, then Period until the next; the period
// doubles (up to MaxPeriod) after a window that changed nothing and goes
// back to Period after one that changed the image. The thread starts with
// the first such dispatcher; after fork() the child starts its own when a
// dispatcher is added or updated there. Errors of a window are kept for
// status() (Dispatcher::Impl::LearningError), never thrown at callers.
//
// Private to the Dispatcher component.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_DISPATCHER_LEARNER_H
#define DISPATCH_GEN_LIB_DISPATCHER_LEARNER_H

#include "dispatch-gen/Dispatcher.h"

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <vector>

namespace dispatchgen {

class Learner {
public:
  using Clock = std::chrono::steady_clock;

  static Learner &get();

  /// Schedules I's first window Period from now.
  void add(Dispatcher::Impl *I, std::chrono::microseconds Period);
  /// Unschedules I, waiting for a window step on it to finish.
  void remove(Dispatcher::Impl *I);
  /// Starts the thread if this process has none (a forked child).
  void ensureRunning();
  /// I's window Serial went live (this opens its gate) or closed: the
  /// thread samples an open one in time, stopping its counting for
  /// SampleOff after each SampleOn (AdaptiveConfig), whoever opened it. A
  /// word of an earlier window than the last one opened is ignored.
  void sampleWindow(Dispatcher::Impl *I, uint64_t Serial, bool Open);

private:
  Learner() = default;
  void run();
  void startLocked();

  struct Entry {
    Dispatcher::Impl *I;
    Clock::time_point Due;
    Clock::duration Period;
    bool Open = false;
    /// The trigger: when it looks next, when it looked last and the
    /// steady fallback calls it saw then.
    Clock::time_point NextPoll{}, LastPoll{};
    uint64_t SeenFallback = 0;
    /// The window's sampling in time: when its gate opens or closes next
    /// (max: no window, or no gate), and whether it is open.
    Clock::time_point GateDue = Clock::time_point::max();
    uint64_t GateSerial = 0;
    /// Where it stands in Queue: wakeOf() when it was last queued.
    Clock::time_point Queued{};
  };
  /// When E needs the thread next: its window's open or close, its
  /// gate's, or the trigger's look, whichever comes first.
  static Clock::time_point wakeOf(const Entry &E);
  /// The trigger's look at E (closed, TriggerPoll set): whether to open
  /// its window now.
  static bool triggerFires(Entry &E, Clock::time_point Now);
  /// Puts E in Queue at wakeOf(E) (after a change of its times).
  void requeue(Entry &E);
  Entry *find(Dispatcher::Impl *I);
  std::mutex M;
  std::condition_variable CV;
  /// The dispatchers, and the same by when each needs the thread next: a
  /// step costs O(log n) in the number of adaptive dispatchers.
  std::map<Dispatcher::Impl *, Entry> Entries;
  std::set<std::pair<Clock::time_point, Dispatcher::Impl *>> Queue;
  /// The dispatcher a step runs on, outside M.
  Dispatcher::Impl *Busy = nullptr;
  /// The process that started the thread (a forked child has none).
  int Owner = 0;
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_LIB_DISPATCHER_LEARNER_H
