//===- CostCalibration.h - This CPU's LayoutCostModel ------------*- C++
//-*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The cost model's constants measured on the CPU the process runs on. What
// a misprediction costs next to a retpoline differs from one CPU to the
// next, and the layout a weighted or adaptive dispatcher takes follows
// from those ratios. So they are measured once per process, in about 5 ms,
// on the thread that first creates an adaptive dispatcher or sets weights
// (DispatcherConfig::CostModel unset), before it takes any lock:
//
//   - the unit: an image that is a retpoline to its selector, against an
//     image whose one compare is taken (a retpoline is 20 units);
//   - a predicted test: a chain of 16 compares whose last is taken, every
//     call the same, against a chain of one;
//   - a mispredicted compare: the scan of 8 equally likely programs that
//     a weighted dispatcher lays out, called at random (its tests and
//     mispredictions counted as the model counts them);
//   - a mispredicted indirect branch: an image that is `jmp *%sel`, called
//     at random among 8 programs and always to one.
//
// The images are the direct lowering's (X86ImageEmitter), called as a
// host calls a dispatcher: `i32 (i32 x, ptr sel)`, the selector loaded
// from a table by an index loaded from an array as long as the bench's
// call patterns (where the selector comes from sets how long a
// mispredicted compare takes to resolve), the programs `x + K`. Random
// indices are fresh for every round, since a predictor learns a few
// thousand draws it sees again. Each figure is the median of 15 rounds of
// 8192 calls, interleaved, in a mapping of the calibration's own that is
// writable or executable, never both, and unmapped afterwards (not under
// a shadow stack, where the retpoline image would fault). A
// measurement that makes no sense (a retpoline no dearer than a compare,
// a timer that did not move) keeps the defaults, and the calibration says
// why. `dispatch-gen bench --calibrate` prints measurements;
// `dispatch-gen bench` prints the process's next to the constants it fits
// from its full run.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_COSTCALIBRATION_H
#define DISPATCH_GEN_COSTCALIBRATION_H

#include "dispatch-gen/DispatchLayout.h"

#include "llvm/Support/Error.h"

#include <string>

namespace dispatchgen {

/// What the calibration timed: nanoseconds per call, medians.
struct CalibrationTimings {
  /// A chain of one compare, taken (every call the same).
  double ChainOne = 0;
  /// A chain of ChainCompares compares, the last taken (every call the
  /// same).
  double ChainLong = 0;
  unsigned ChainCompares = 16;
  /// An image that is a retpoline to its selector.
  double Retpoline = 0;
  /// The weighted layout of 8 equally likely cases, called at random.
  double ScanRandom = 0;
  /// `jmp *%sel`: always to one target, and at random among 8.
  double IndirectOne = 0;
  double IndirectRandom = 0;
};

struct CostCalibration {
  /// The model: measured when Calibrated, else the defaults.
  LayoutCostModel Model;
  bool Calibrated = false;
  /// Why the defaults were kept (empty when Calibrated).
  std::string Why;
  /// What was measured, and what it came to in nanoseconds: the model's
  /// unit (a twentieth of a retpoline above a taken compare), a predicted
  /// test, a mispredicted compare and a mispredicted indirect branch.
  CalibrationTimings Timings;
  double UnitNs = 0, CompareNs = 0, MispredictNs = 0, IndirectMispredictNs = 0;
  /// How long the measuring took, in microseconds.
  double Micros = 0;
};

/// The model Timings give, with the model's own counts of the tests and
/// mispredictions of the timed layouts. Constants outside a plausible
/// range are clamped into it (Compare 0.01 to 4, either misprediction 1
/// to 60, with a retpoline 20); timings that give no unit keep the defaults
/// (Calibrated false, Why says which).
CostCalibration fitCalibration(const CalibrationTimings &Timings);

/// Measures this CPU now (x86-64 only) and fits the result. Fails when no
/// code can be mapped executable (a sandbox that forbids it), under a
/// shadow stack (CET: the retpoline image would fault) or where the CPU is
/// not x86-64.
llvm::Expected<CostCalibration> calibrateCostModel();

/// The process's calibration: measured by the first call (on the calling
/// thread; others wait for it), then kept for the life of the process. A
/// failed measurement gives the defaults with Why set, and is not retried.
/// A child of fork() keeps its parent's, or measures anew if the fork cut
/// the parent's short. Dispatchers call it from create() (adaptive) and
/// setWeights(), before they take any lock; a host may call it earlier, at
/// a moment of its choosing. Not async-signal-safe.
const CostCalibration &processCostCalibration();

} // namespace dispatchgen

#endif // DISPATCH_GEN_COSTCALIBRATION_H
