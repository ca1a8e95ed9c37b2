//===- Torture.h - dispatch-gen-torture's run -------------------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// One run of dispatch-gen-torture (DispatchTorture.cpp says what it does):
// the dispatcher, the slots the updater publishes programs in, the readers'
// and the updater's loops (TortureLoops.cpp), and what they count, which
// the report judges (TortureReport.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_UTILS_TORTURE_TORTURE_H
#define DISPATCH_GEN_UTILS_TORTURE_TORTURE_H

#include "AdaptiveTorture.h"
#include "ProgramPool.h"

#include "dispatch-gen/Dispatcher.h"

#include "llvm/Support/Error.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <vector>

namespace llvm::orc {
class LLJIT;
} // namespace llvm::orc

namespace dispatchgen::torture {

/// The command line, as main reads it (DispatchTorture.cpp describes the
/// options).
struct TortureOptions {
  unsigned Seconds{};
  /// 0: every core but one, at least one.
  unsigned Readers{};
  unsigned MinUpdateRate{};
  /// Operations per update (--batch).
  unsigned BatchOps{};
  bool Sync{};
  SkippedGracePeriod BrokenReclamation = SkippedGracePeriod::None;
  unsigned ImageDelay{};
  bool Adaptive{};
  /// Microseconds.
  unsigned LearnWindow{}, LearnPeriod{};
  /// Milliseconds.
  unsigned HotPhase{};
};

struct Counters {
  std::atomic<uint64_t> Calls{0}, Misrouted{0}, IntoReleased{0},
      IntoReleasedImages{0}, IntoRewrittenResident{0}, OtherFaults{0},
      ObservedReleased{0}, RegisteredToFallback{0}, CriticalSections{0};
  /// --adaptive: calls to unregistered targets, by the way they went.
  std::atomic<uint64_t> UnregisteredDirect{0}, UnregisteredFallback{0};
  /// Ages (updates since removal) of removed, not yet released programs
  /// that readers reached: 0, 1, 2-3, 4-15, 16-63, 64+.
  std::array<std::atomic<uint64_t>, 6> AgeHist{};
  std::array<std::atomic<uint64_t>, 3> StageHist{};
};

using EntryFn = uint64_t(uint64_t Spins, uint64_t Program);

class Torture {
public:
  explicit Torture(const TortureOptions &Opts);
  ~Torture();
  llvm::Error run();

private:
  static constexpr unsigned NumSlots = 32;

  void readerLoop(unsigned Index);
  void callUnregistered(std::minstd_rand &Rng);
  llvm::Error updaterLoop(Clock::time_point End);
  /// Prints the report and judges the run: an error if it failed.
  llvm::Error report(unsigned NumReaders, double Elapsed,
                     const DispatcherStatus &St, const AdaptiveMonitor *Monitor,
                     llvm::Error UpdateError);

  TortureOptions Opts;
  std::unique_ptr<llvm::orc::LLJIT> J;
  std::optional<ProgramPool> Pool;
  std::unique_ptr<Dispatcher> D;
  EntryFn *Entry = nullptr;

  /// Slot k holds the id of a registered program, or 0. The updater
  /// stores (release) after registering and before removing; readers load
  /// (acquire) inside their critical section.
  std::array<std::atomic<uint64_t>, NumSlots> Slots{};
  /// Updates started (seq_cst: compared against slot loads, see
  /// TortureLoops.cpp).
  std::atomic<uint64_t> Seq{0};
  std::atomic<bool> Stop{false};
  /// Set by the updater when some registered program is out of rel32 reach
  /// of the images, so its calls take the fallback legitimately.
  std::atomic<bool> OutOfReach{false};
  Counters C;
  /// --adaptive: the targets never registered, and per reader its calls
  /// for a registered program that took the fallback (judged at the end,
  /// against what the monitor saw).
  UnregisteredTargets Unregistered;
  std::vector<std::vector<FallbackCall>> FallbackCalls;
  uint64_t ExcusedFallbackCalls = 0;
  uint64_t Updates = 0, Adds = 0, Removes = 0, Changes = 0;
};

} // namespace dispatchgen::torture

#endif // DISPATCH_GEN_UTILS_TORTURE_TORTURE_H
