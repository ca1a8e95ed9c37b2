//===- CallLoopSetImpl.h - The JIT session of the call benchmark -*- C++
//-*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// CallLoopSet's state, shared by CallCost.cpp (the programs, the loops of
// the fixed variants, running them) and AdaptiveVariant.cpp (the Adaptive
// variant's dispatcher and loop, made anew for each sequence).
//
// Private to the Benchmark component.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_BENCHMARK_CALLLOOPSETIMPL_H
#define DISPATCH_GEN_LIB_BENCHMARK_CALLLOOPSETIMPL_H

#include "dispatch-gen/Benchmark.h"
#include "dispatch-gen/Dispatcher.h"

#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/IRBuilder.h"

#include <memory>
#include <string>
#include <vector>

namespace dispatchgen::bench {

/// Makes calls Start to End - 1 of a sequence: call I selects
/// Targets[Pattern[I & Mask]].
using LoopFn = uint64_t (*)(const uint64_t *Targets, const uint32_t *Pattern,
                            uint64_t Mask, uint64_t Start, uint64_t End);

constexpr size_t NumVariants = std::size(AllVariants);

std::string programName(unsigned K);

/// Adds to M the caller loop of one variant, named Name; MakeCall emits the
/// call of X with selector Sel and returns its i32 result.
llvm::Function *
buildLoop(llvm::Module &M, llvm::StringRef Name, llvm::StringRef CPU,
          llvm::StringRef Features,
          llvm::function_ref<llvm::Value *(llvm::IRBuilder<> &, llvm::Value *X,
                                           llvm::Value *Sel)>
              MakeCall);

class CallLoopSet::Impl {
public:
  ~Impl() {
    // The dispatchers live in the LLJIT's session.
    Plain.reset();
    Weighted.reset();
    Adaptive.reset();
  }

  llvm::Error init(unsigned N);
  /// A dispatcher of the N programs, next to them; adaptive with
  /// RetpolineFallback when Adaptive is given.
  llvm::Expected<std::unique_ptr<Dispatcher>>
  makeDispatcher(const std::string &Name,
                 const AdaptiveConfig *Adaptive = nullptr);
  llvm::Error buildLoops();
  /// Replaces the Adaptive variant's dispatcher with a new one (learning in
  /// the background when Background) and compiles its loop.
  llvm::Error makeAdaptive(bool Background);

  /// The loop V runs for the calls of phase K.
  LoopFn loop(CallVariant V, size_t K) const {
    return V == CallVariant::Direct ? PhaseDirect[K]
                                    : Loops[static_cast<size_t>(V)];
  }

  unsigned N = 0;
  std::unique_ptr<llvm::orc::LLJIT> J;
  std::unique_ptr<Dispatcher> Plain, Weighted, Adaptive;
  /// Whether Adaptive learns in the background, and how many adaptive
  /// dispatchers (and loops) were made: each has a name of its own.
  bool AdaptiveBackground = false;
  unsigned AdaptiveCount = 0;
  /// ns per call through the counting image in learn()'s window.
  double LearningNs = 0;
  /// The host's CPU and features, for loops compiled later.
  std::string CPU, Features;
  /// The registered programs, then the unregistered ones.
  std::vector<uint64_t> Targets;
  CallSequence Sequence{{{0}}};
  /// Per phase of Sequence: the direct loop, and whether it calls what the
  /// phase selects.
  std::vector<LoopFn> PhaseDirect;
  std::vector<bool> PhaseDirectExact;
  uint64_t Position[NumVariants] = {};
  LoopFn Loops[NumVariants] = {};
  /// The direct loop of each unregistered program.
  std::vector<LoopFn> UnregisteredDirect;
};

} // namespace dispatchgen::bench

#endif // DISPATCH_GEN_LIB_BENCHMARK_CALLLOOPSETIMPL_H
