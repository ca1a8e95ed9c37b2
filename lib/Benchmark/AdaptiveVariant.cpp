//===- AdaptiveVariant.cpp - The adaptive dispatcher of the call bench ----===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The Adaptive variant (Benchmark.h): an adaptive dispatcher with a
// retpolined fallback, made anew for each call sequence so that what it
// learned of one pattern never helps it in the next. Its entry is a new
// symbol each time, so its caller loop is compiled with it, in a module of
// its own (the loops of the other variants are compiled once).
//
// A sequence of one phase is learned by the host: learn() opens a window,
// times calls through the counting image and closes it; the timed loops
// then run a steady image with no counting code. The dispatcher is still
// one of the background learner's (with a schedule of an hour, which no
// run reaches): it samples the host's window in time as it samples its
// own (AdaptiveConfig::SampleOn/SampleOff), so the window's cost is the
// default configuration's. A sequence whose
// hot target moves is learned by the background learner, with the short
// schedule of AdaptiveWindow/AdaptivePeriod/AdaptiveMaxPeriod, while the
// loops are timed: re-learning after each move is part of what is measured.
//
// Reclamation is synchronous, as for the other dispatchers (the live image
// then runs in the entry's resident area): the learner thread's grace
// periods wait for the caller's read-side sections, which run() keeps to
// one batch of CallsPerGuard calls.
//
//===----------------------------------------------------------------------===//

#include "CallLoopSetImpl.h"

#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>

using namespace llvm;

namespace dispatchgen::bench {

Error CallLoopSet::Impl::makeAdaptive(bool Background) {
  // The old one goes first: its background windows must not run on while
  // the next one learns.
  Adaptive.reset();
  Loops[static_cast<size_t>(CallVariant::Adaptive)] = nullptr;
  unsigned K = AdaptiveCount++;
  std::string Entry = formatv("dg_bench_adaptive_{0}", K).str();
  std::string LoopName = formatv("loop_adaptive_{0}", K).str();

  AdaptiveConfig A;
  A.Enabled = true;
  A.Background = true;
  if (Background) {
    A.Window = AdaptiveWindow;
    A.Period = AdaptivePeriod;
    A.MaxPeriod = AdaptiveMaxPeriod;
    A.TriggerPoll = AdaptiveTriggerPoll;
  } else {
    A.Period = A.MaxPeriod = std::chrono::hours(1);
  }
  auto D = makeDispatcher(Entry, &A);
  if (!D)
    return D.takeError();

  auto Ctx = std::make_unique<LLVMContext>();
  auto M = std::make_unique<Module>("bench-" + LoopName, *Ctx);
  M->setDataLayout(J->getDataLayout());
  M->setTargetTriple(J->getTargetTriple());
  IRBuilder<> B(*Ctx);
  auto *EntryTy =
      FunctionType::get(B.getInt32Ty(), {B.getInt32Ty(), B.getPtrTy()}, false);
  FunctionCallee EntryFn = M->getOrInsertFunction(Entry, EntryTy);
  buildLoop(*M, LoopName, CPU, Features,
            [&](IRBuilder<> &B, Value *X, Value *Sel) -> Value * {
              return B.CreateCall(EntryFn, {X, Sel});
            });
  std::string VerifyErrors;
  raw_string_ostream VOS(VerifyErrors);
  if (verifyModule(*M, &VOS))
    return createStringError("the adaptive benchmark loop does not verify: " +
                             VerifyErrors);
  if (Error E =
          J->addIRModule(orc::ThreadSafeModule(std::move(M), std::move(Ctx))))
    return E;
  auto Addr = J->lookup(LoopName);
  if (!Addr)
    return Addr.takeError();
  Adaptive = std::move(*D);
  AdaptiveBackground = Background;
  Loops[static_cast<size_t>(CallVariant::Adaptive)] = Addr->toPtr<LoopFn>();
  return Error::success();
}

Error CallLoopSet::learn(uint64_t Iterations, unsigned Repetitions) {
  // Not timed in the background: no figure rather than the last pattern's.
  I->LearningNs = 0;
  if (I->AdaptiveBackground)
    return Error::success();
  if (Error E = I->Adaptive->beginLearning())
    return E;
  // Timed as the other columns are, after one loop that warms the
  // counting image up: the median of Repetitions samples while the window
  // is open. The learner stops and restarts the window's counting in time,
  // so a call costs one thing or the other depending on when it comes:
  // each sample spans at least five of those cycles (loops of Iterations
  // calls in a row), and is their average.
  auto Start = std::chrono::steady_clock::now();
  run(CallVariant::Adaptive, Iterations);
  std::chrono::duration<double> First =
      std::chrono::steady_clock::now() - Start;
  AdaptiveConfig Defaults;
  std::chrono::duration<double> Span =
      5 * (Defaults.SampleOn + Defaults.SampleOff);
  uint64_t Loops = std::max<uint64_t>(
      1, uint64_t(std::ceil(Span.count() / std::max(First.count(), 1e-9))));
  std::vector<double> Samples;
  for (unsigned R = 0; R < Repetitions; ++R) {
    Start = std::chrono::steady_clock::now();
    for (uint64_t L = 0; L < Loops; ++L)
      run(CallVariant::Adaptive, Iterations);
    std::chrono::duration<double, std::nano> T =
        std::chrono::steady_clock::now() - Start;
    Samples.push_back(Iterations ? T.count() / double(Iterations * Loops) : 0);
  }
  I->LearningNs = median(Samples);
  auto R = I->Adaptive->endLearning();
  if (!R)
    return R.takeError();
  return Error::success();
}

LearnedLayout CallLoopSet::learned() const {
  if (!I->Adaptive)
    return {};
  DispatcherStatus S = I->Adaptive->status();
  return {S.Layout,   S.PredictedCost, S.LearningWindows,
          S.Promoted, S.LearningError, I->LearningNs};
}

uint64_t CallLoopSet::programAddress(unsigned K) const {
  assert(K < I->Targets.size() && "no such program");
  return I->Targets[K];
}

} // namespace dispatchgen::bench
