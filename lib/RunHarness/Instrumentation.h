//===- Instrumentation.h - Programs that count their calls ------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// To check routing, the harness instruments each program, before it is
// JIT-compiled, to count its calls and to notice running after its release,
// whenever the run enables it (one predictable load and branch otherwise).
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_RUNHARNESS_INSTRUMENTATION_H
#define DISPATCH_GEN_LIB_RUNHARNESS_INSTRUMENTATION_H

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace llvm {
class Function;
} // namespace llvm

namespace dispatchgen::run {

/// Per-program state the instrumentation and the release callback update.
struct alignas(64) ProgramCounters {
  std::atomic<uint64_t> Calls{0};
  /// Registrations not yet released; a call while it is 0 ran after a
  /// release.
  std::atomic<int32_t> Outstanding{0};
};

struct Instrumentation {
  std::atomic<uint8_t> Enabled{0};
  std::atomic<uint64_t> RunAfterRelease{0};
  /// One per program; the instrumented code holds their addresses, so the
  /// vector is sized once, before instrument().
  std::vector<ProgramCounters> Counters;
};

/// Makes F count its calls in Inst.Counters[Index] and count a call while
/// that program has no registration in Inst.RunAfterRelease, whenever
/// Inst.Enabled is non-zero.
void instrument(llvm::Function &F, Instrumentation &Inst, size_t Index);

} // namespace dispatchgen::run

#endif // DISPATCH_GEN_LIB_RUNHARNESS_INSTRUMENTATION_H
