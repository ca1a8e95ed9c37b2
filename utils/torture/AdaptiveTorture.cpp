//===- AdaptiveTorture.cpp - dispatch-gen-torture --adaptive --------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "AdaptiveTorture.h"
#include "ProgramPool.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/ExecutionEngine/Orc/ThreadSafeModule.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/IRReader/IRReader.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>

using namespace llvm;

namespace dispatchgen::torture {

Error UnregisteredTargets::compile(orc::LLJIT &J) {
  // The programs' shape (ProgramPool.cpp): spin for %spins pauses,
  // then answer; here with the target's tag.
  std::string IR;
  raw_string_ostream OS(IR);
  for (unsigned K = 0; K < Count; ++K)
    OS << spinningProgramIR(formatv("torture_unregistered_{0}", K).str(),
                            tag(K), 64);
  auto Ctx = std::make_unique<LLVMContext>();
  SMDiagnostic Diag;
  auto M = parseIR(MemoryBufferRef(IR, "torture-unregistered"), Diag, *Ctx);
  if (!M)
    return createStringError("cannot parse the unregistered targets: " +
                             Diag.getMessage().str());
  auto JD = J.createJITDylib("torture_unregistered");
  if (!JD)
    return JD.takeError();
  if (Error E = J.addIRModule(
          *JD, orc::ThreadSafeModule(std::move(M), std::move(Ctx))))
    return E;
  for (unsigned K = 0; K < Count; ++K) {
    auto Address = J.lookup(*JD, formatv("torture_unregistered_{0}", K).str());
    if (!Address)
      return Address.takeError();
    Addresses[K] = Address->getValue();
  }
  return Error::success();
}

unsigned UnregisteredTargets::pick(std::minstd_rand &Rng) const {
  uint32_t R = Rng();
  if (R % 32 == 0)
    return PoolSize + (R >> 5) % NumRare;
  // Phase P heats pool targets 2P .. 2P + 3: two of them stay hot into the
  // next phase, two cool down.
  return (phase() * 2 + (R >> 5) % HotAtOnce) % PoolSize;
}

int UnregisteredTargets::indexOf(uint64_t Address) const {
  const auto *It = llvm::find(Addresses, Address);
  return It == Addresses.end() ? -1 : int(It - Addresses.begin());
}

void AdaptiveMonitor::start(std::chrono::microseconds Interval) {
  poll();
  Thread = std::thread([this, Interval] {
    while (!Stop.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(Interval);
      poll();
    }
  });
}

void AdaptiveMonitor::stop() {
  if (!Thread.joinable())
    return;
  Stop = true;
  Thread.join();
  poll();
}

void AdaptiveMonitor::poll() {
  Poll P;
  P.Before = Clock::now();
  DispatcherStatus St = D.status();
  P.After = Clock::now();
  P.Generation = St.Generation;
  ++NumPolls;
  // Of a run of polls that saw one generation, the first and the last are
  // enough to bound any call by generations (mayHaveTakenFallback).
  size_t N = Polls.size();
  if (N >= 2 && Polls[N - 1].Generation == P.Generation &&
      Polls[N - 2].Generation == P.Generation)
    Polls.back() = P;
  else
    Polls.push_back(P);
  // No image at all is the entry's own indirect call: the fallback too.
  HasTree[St.Generation] = St.ImageAddress != 0 && St.Layout != "fallback-only";
  if (St.Generation != LastGeneration)
    ++Layouts[St.Layout.empty() ? "none" : St.Layout];
  LastGeneration = St.Generation;

  for (uint64_t A : St.Promoted) {
    if (is_contained(Promoted, A))
      continue;
    int K = U.indexOf(A);
    if (K < 0)
      ++OtherPromotions;
    else if (UnregisteredTargets::isPool(K))
      ++PoolPromotions;
    else
      ++RarePromotions;
  }
  for (uint64_t A : Promoted)
    if (!is_contained(St.Promoted, A))
      ++Demotions;
  Promoted = std::move(St.Promoted);
  MaxPromotedAtOnce = std::max<uint64_t>(MaxPromotedAtOnce, Promoted.size());
}

bool AdaptiveMonitor::mayHaveTakenFallback(const FallbackCall &Call) const {
  // The last poll done before the call began saw generation Lo: the call
  // entered Lo or a later image. The first poll begun after it ended saw
  // Hi: the call ran no image after Hi.
  auto Before = llvm::partition_point(
      Polls, [&](const Poll &P) { return P.After <= Call.Begin; });
  auto After = llvm::partition_point(
      Polls, [&](const Poll &P) { return P.Before < Call.End; });
  if (Before == Polls.begin() || After == Polls.end())
    return true;
  uint64_t Lo = std::prev(Before)->Generation, Hi = After->Generation;
  for (uint64_t G = Lo; G <= Hi; ++G) {
    auto It = HasTree.find(G);
    if (It == HasTree.end() || !It->second)
      return true;
  }
  return false;
}

void AdaptiveMonitor::print(raw_ostream &OS,
                            const DispatcherStatus &Final) const {
  OS << formatv("  learning:        {0} windows; {1} promotions ({2} of "
                "hot-pool targets, {3} of rarely called ones, {4} of "
                "removed programs), {5} demotions; at most {6} promoted at "
                "once, {7} at the end\n",
                Final.LearningWindows, promotions(), PoolPromotions,
                RarePromotions, OtherPromotions, Demotions, MaxPromotedAtOnce,
                Final.Promoted.size());
  std::string Seen;
  for (const auto &[Name, Generations] : Layouts)
    Seen += formatv("{0}{1} {2}", Seen.empty() ? "" : ", ", Name, Generations)
                .str();
  OS << formatv("  layouts:         {0} (generations seen in {1} polls); at "
                "the end {2}, predicted {3:f1} units per call\n",
                Seen, NumPolls, Final.Layout.empty() ? "none" : Final.Layout,
                Final.PredictedCost);
  if (!Final.LearningError.empty())
    OS << "  learning error:  " << Final.LearningError << "\n";
}

} // namespace dispatchgen::torture
