//===- AdaptiveTorture.h - dispatch-gen-torture --adaptive ------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// What `dispatch-gen-torture --adaptive` adds to the torture: targets that
// are never registered, which the readers call too, and a monitor of the
// dispatcher's adaptive state.
//
// The unregistered targets are JIT-compiled once and live for the whole run
// (the dispatcher never releases a promoted target, and the torture never
// poisons these). Half of them form a hot pool: in each phase four of them
// are hot (a reader's call to an unregistered target goes to one of them 31
// times in 32), and each new phase moves two of the four on, so the learner
// promotes the new ones and demotes those that cooled. The other half are
// called rarely, throughout. Each returns its own tag, so a call to one is
// right exactly when the tag comes back, by the fallback or by a promoted
// direct jump alike.
//
// The monitor polls Dispatcher::status() while the torture runs: it counts
// the promotions and demotions it sees, the layouts, and records, for each
// generation of image, whether its layout had no tree (fallback-only: the
// adaptive dispatcher's choice where the fallback is cheapest, which sends
// registered programs to the fallback legitimately). A reader's call for a
// registered program that took the fallback is a routing failure only if
// every image that could have been live during the call is known, and has
// a tree.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_UTILS_TORTURE_ADAPTIVETORTURE_H
#define DISPATCH_GEN_UTILS_TORTURE_ADAPTIVETORTURE_H

#include "dispatch-gen/Dispatcher.h"

#include "llvm/Support/Error.h"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace llvm {
class raw_ostream;
namespace orc {
class LLJIT;
} // namespace orc
} // namespace llvm

namespace dispatchgen::torture {

using Clock = std::chrono::steady_clock;

/// Targets the readers call but the dispatcher never registers.
class UnregisteredTargets {
public:
  static constexpr unsigned PoolSize = 8, HotAtOnce = 4, NumRare = 8,
                            Count = PoolSize + NumRare;
  /// A target's answer: far above any program id of the torture.
  static constexpr uint64_t TagBase = uint64_t(1) << 40;

  /// Compiles the targets in J (their own JITDylib).
  llvm::Error compile(llvm::orc::LLJIT &J);

  /// The target of a reader's call: a hot one of the phase 31 times in 32.
  unsigned pick(std::minstd_rand &Rng) const;
  uint64_t address(unsigned K) const { return Addresses[K]; }
  static uint64_t tag(unsigned K) { return TagBase + K; }
  static bool isPool(unsigned K) { return K < PoolSize; }
  /// The target at Address, or -1.
  int indexOf(uint64_t Address) const;

  /// The updater moves the phases on.
  void setPhase(unsigned P) { Phase.store(P, std::memory_order_relaxed); }
  unsigned phase() const { return Phase.load(std::memory_order_relaxed); }

private:
  std::array<uint64_t, Count> Addresses{};
  std::atomic<unsigned> Phase{0};
};

/// A reader's call for a registered program that took the fallback.
struct FallbackCall {
  Clock::time_point Begin, End;
};

/// Polls an adaptive dispatcher's status while the torture runs.
class AdaptiveMonitor {
public:
  AdaptiveMonitor(const Dispatcher &D, const UnregisteredTargets &U)
      : D(D), U(U) {}
  ~AdaptiveMonitor() { stop(); }

  void start(std::chrono::microseconds Interval);
  /// Polls once more and stops; the queries below are for after it.
  void stop();

  /// Whether a call made from Begin to End may have run an image without a
  /// tree (fallback-only, none at all, or one the monitor never saw).
  bool mayHaveTakenFallback(const FallbackCall &Call) const;
  /// Writes what the monitor saw, as lines of the torture's report.
  void print(llvm::raw_ostream &OS, const DispatcherStatus &Final) const;

  uint64_t promotions() const {
    return PoolPromotions + RarePromotions + OtherPromotions;
  }
  uint64_t demotions() const { return Demotions; }
  uint64_t polls() const { return NumPolls; }

private:
  void poll();

  const Dispatcher &D;
  const UnregisteredTargets &U;
  std::thread Thread;
  std::atomic<bool> Stop{false};

  /// One per poll: when it was made (status() ran within) and the image
  /// generation it saw.
  struct Poll {
    Clock::time_point Before, After;
    uint64_t Generation;
  };
  std::vector<Poll> Polls;
  /// Generation -> whether its image has a tree.
  std::map<uint64_t, bool> HasTree;
  std::vector<uint64_t> Promoted;
  uint64_t PoolPromotions = 0, RarePromotions = 0, OtherPromotions = 0,
           Demotions = 0;
  /// Layout name -> generations seen with it.
  std::map<std::string, uint64_t> Layouts;
  uint64_t LastGeneration = ~uint64_t(0);
  uint64_t MaxPromotedAtOnce = 0, NumPolls = 0;
};

} // namespace dispatchgen::torture

#endif // DISPATCH_GEN_UTILS_TORTURE_ADAPTIVETORTURE_H
