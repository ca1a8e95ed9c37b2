//===- CostCalibration.cpp - This CPU's LayoutCostModel ------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Times a few images the direct lowering makes, in a mapping of its own,
// and fits the cost model's constants to them (CostCalibration.h).
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/CostCalibration.h"
#include "ShadowStack.h"
#include "dispatch-gen/X86ImageEmitter.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/Support/Errno.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

using namespace llvm;

namespace dispatchgen {

namespace {

// The cases of the timed scan, and how many of them a random call picks.
constexpr unsigned ScanCases = 8;
// Calls per timed round, and rounds (the first warms up and is dropped).
constexpr size_t CallsPerRound = 8192;
constexpr unsigned Rounds = 16;
constexpr size_t IndexLength = size_t(1) << 16;
// The mapping: targets first, then one image per page.
constexpr size_t TargetSpacing = 64;
constexpr size_t PageBytes = 4096;

/// Equally likely cases, as a weighted dispatcher of them has them.
std::vector<LayoutCase> scanCases(ArrayRef<uint64_t> Keys) {
  std::vector<LayoutCase> Cases;
  for (uint64_t Key : Keys)
    Cases.push_back({Key, 1});
  return Cases;
}

LayoutOptions scanOptions() {
  LayoutOptions Options;
  Options.RetpolineFallback = true;
  return Options;
}

double median(std::vector<double> Values) {
  std::nth_element(Values.begin(), Values.begin() + Values.size() / 2,
                   Values.end());
  return Values[Values.size() / 2];
}

} // namespace

CostCalibration fitCalibration(const CalibrationTimings &T) {
  CostCalibration C;
  C.Timings = T;
  auto Keep = [&](const Twine &Why) {
    C.Model = LayoutCostModel();
    C.Calibrated = false;
    C.Why = Why.str();
    return C;
  };
  for (double V : {T.ChainOne, T.ChainLong, T.Retpoline, T.ScanRandom,
                   T.IndirectOne, T.IndirectRandom})
    if (!std::isfinite(V) || V <= 0)
      return Keep("a timing was not a positive number of nanoseconds");
  if (T.ChainCompares < 2)
    return Keep("the long chain has fewer than two compares");

  // A predicted test, and what entering an image costs besides its tests.
  C.CompareNs =
      std::max(0.0, (T.ChainLong - T.ChainOne) / (T.ChainCompares - 1));
  double Entry = T.ChainOne - C.CompareNs;
  double RetpolineNs = T.Retpoline - Entry;
  LayoutCostModel Defaults;
  if (!(RetpolineNs > C.CompareNs))
    return Keep(formatv("the retpoline ({0:f2} ns) measured no dearer than a "
                        "predicted compare ({1:f2} ns)",
                        RetpolineNs, C.CompareNs));
  C.UnitNs = RetpolineNs / Defaults.Retpoline;

  std::vector<uint64_t> Keys;
  for (unsigned K = 0; K < ScanCases; ++K)
    Keys.push_back(0x100000 + TargetSpacing * K);
  std::vector<LayoutCase> Cases = scanCases(Keys);
  DispatchLayout::CallTerms Scan = DispatchLayout::choose(Cases, scanOptions())
                                       .termsUnder(Cases, scanOptions());
  if (Scan.Mispredicts > 0)
    C.MispredictNs =
        std::max(0.0, T.ScanRandom - Entry - Scan.Compares * C.CompareNs) /
        Scan.Mispredicts;
  // `jmp *%sel` among ScanCases equally likely targets misses all but one
  // draw in ScanCases; to one target, never.
  C.IndirectMispredictNs =
      std::max(0.0, T.IndirectRandom - T.IndirectOne) / (1 - 1.0 / ScanCases);

  C.Model = Defaults;
  C.Model.Compare = std::clamp(C.CompareNs / C.UnitNs, 0.01, 4.0);
  C.Model.Mispredict = std::clamp(C.MispredictNs / C.UnitNs, 1.0, 60.0);
  C.Model.IndirectMispredict =
      std::clamp(C.IndirectMispredictNs / C.UnitNs, 1.0, 60.0);
  C.Calibrated = true;
  return C;
}

Expected<CostCalibration> calibrateCostModel() {
#if !defined(__x86_64__) || !defined(__linux__)
  return createStringError("the cost model is calibrated on x86-64 Linux only");
#else
  // The retpoline image returns to an address it wrote over its return
  // address, which a shadow stack forbids (the `ret` faults).
  if (shadowStackEnabled())
    return createStringError("this thread runs with a shadow stack (CET), "
                             "under which the retpoline image would fault");
  auto Start = std::chrono::steady_clock::now();
  LLVMContext Ctx;
  // Calls as a host makes them: `i32 (i32 x, ptr sel)`, the selector a
  // program loaded from a table by an index loaded before it, x depending
  // on it, the result summed (the shape of `dispatch-gen bench`'s loops).
  // Where the selector comes from matters: a mispredicted compare costs
  // until the selector's loads let it resolve.
  auto *Signature = FunctionType::get(
      Type::getInt32Ty(Ctx),
      {Type::getInt32Ty(Ctx), PointerType::getUnqual(Ctx)}, false);
  std::optional<unsigned> Reg = getX86SelectorRegister(Signature, 1);
  if (!Reg)
    return createStringError("no selector register for i32 (i32, ptr)");

  // The programs (x + K), then the images, one per page.
  enum Image { ChainOne, ChainLong, Retpoline, Scan, Indirect, NumImages };
  constexpr unsigned NumTargets = 16;
  size_t Bytes = PageBytes * (1 + NumImages);
  void *Map = mmap(nullptr, Bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (Map == MAP_FAILED)
    return createStringError(errnoAsErrorCode(),
                             "cannot map the calibration's code");
  scope_exit Unmap([&] { munmap(Map, Bytes); });
  auto *Mem = static_cast<uint8_t *>(Map);
  uint64_t Base = reinterpret_cast<uint64_t>(Mem);
  std::memset(Mem, 0xCC, Bytes); // int3
  std::vector<uint64_t> Targets;
  for (unsigned K = 0; K < NumTargets; ++K) {
    // lea K(%rdi), %eax; ret: x + K.
    uint8_t Program[] = {0x8D, 0x47, static_cast<uint8_t>(K), 0xC3};
    std::memcpy(Mem + TargetSpacing * K, Program, sizeof(Program));
    Targets.push_back(Base + TargetSpacing * K);
  }

  auto Place = [&](Image I, ArrayRef<LayoutCase> Layout, bool Weighted,
                   bool InlineRetpoline) -> Error {
    std::vector<ImageCase> Cases;
    std::vector<LayoutCase> ForLayout;
    for (const LayoutCase &C : Layout) {
      Cases.push_back({C.Key, C.Key, C.Weight});
      ForLayout.push_back(C);
    }
    DispatchLayout L = Weighted
                           ? DispatchLayout::choose(ForLayout, scanOptions())
                           : DispatchLayout::chain(ForLayout);
    X86ImageOptions Options;
    Options.InlineRetpoline = InlineRetpoline;
    Options.Layout = &L;
    Expected<X86Image> Code = emitX86Image(Cases, *Reg, Options);
    if (!Code)
      return Code.takeError();
    uint64_t At = Base + PageBytes * (1 + I);
    Expected<std::vector<uint8_t>> Placed =
        relocateX86Image(*Code, Cases, At, 0);
    if (!Placed)
      return Placed.takeError();
    if (Placed->size() > PageBytes)
      return createStringError("a calibration image is over a page");
    std::memcpy(Mem + PageBytes * (1 + I), Placed->data(), Placed->size());
    return Error::success();
  };
  auto Unweighted = [&](size_t N) {
    std::vector<LayoutCase> Cases;
    for (size_t K = 0; K < N; ++K)
      Cases.push_back({Targets[K], 0});
    return Cases;
  };
  CalibrationTimings T;
  T.ChainCompares = NumTargets;
  if (Error E = Place(ChainOne, Unweighted(1), false, false))
    return std::move(E);
  if (Error E = Place(ChainLong, Unweighted(NumTargets), false, false))
    return std::move(E);
  if (Error E = Place(Retpoline, {}, false, true))
    return std::move(E);
  if (Error E = Place(Scan, scanCases(ArrayRef(Targets).take_front(ScanCases)),
                      true, false))
    return std::move(E);
  if (Error E = Place(Indirect, {}, false, false))
    return std::move(E);
  if (mprotect(Map, Bytes, PROT_READ | PROT_EXEC) != 0)
    return createStringError(errnoAsErrorCode(),
                             "cannot make the calibration's code executable");

  // Indices into Targets: always one, or drawn at random among ScanCases.
  // IndexLength of them (as many as the bench's patterns: 256 KiB, read
  // from the L2 cache), each run reading the next CallsPerRound, and the
  // random ones drawn anew before each run that reads them: a predictor
  // with a long history learns a few thousand draws it sees again (the
  // same 8192 draws every round measured a misprediction 40% cheaper by
  // the tenth calibration), and where the index comes from sets how long
  // a mispredicted compare waits to resolve.
  std::vector<uint32_t> One(IndexLength, 0);
  std::vector<uint32_t> Last(IndexLength, NumTargets - 1);
  std::vector<uint32_t> Random(IndexLength);
  uint64_t State =
      0x9E3779B97F4A7C15ull ^
      static_cast<uint64_t>(
          std::chrono::steady_clock::now().time_since_epoch().count());
  auto Draw = [&](MutableArrayRef<uint32_t> Into) {
    for (uint32_t &S : Into) {
      State ^= State << 13;
      State ^= State >> 7;
      State ^= State << 17;
      S = (State >> 32) % ScanCases;
    }
  };
  Draw(Random);
  using EntryFn = uint32_t (*)(uint32_t, uint64_t);
  struct Timed {
    Image I;
    const std::vector<uint32_t> *Indices;
    double *Into;
  };
  double IndirectOneNs = 0;
  Timed Runs[] = {
      {ChainOne, &One, &T.ChainOne},    {ChainLong, &Last, &T.ChainLong},
      {Retpoline, &One, &T.Retpoline},  {Scan, &Random, &T.ScanRandom},
      {Indirect, &One, &IndirectOneNs}, {Indirect, &Random, &T.IndirectRandom}};
  std::vector<std::vector<double>> Samples(std::size(Runs));
  uint64_t Sum = 0;
  for (unsigned Round = 0; Round < Rounds; ++Round) {
    for (size_t R = 0; R < std::size(Runs); ++R) {
      // Through a volatile so that the calls stay calls.
      EntryFn volatile F = reinterpret_cast<EntryFn>(
          reinterpret_cast<uintptr_t>(Mem + PageBytes * (1 + Runs[R].I)));
      EntryFn Call = F;
      size_t Window =
          (size_t(Round) * std::size(Runs) + R) * CallsPerRound % IndexLength;
      if (Runs[R].Indices == &Random)
        Draw(MutableArrayRef(Random).slice(Window, CallsPerRound));
      const uint32_t *Index = Runs[R].Indices->data() + Window;
      const uint64_t *Table = Targets.data();
      auto T0 = std::chrono::steady_clock::now();
      for (size_t J = 0; J < CallsPerRound; ++J) {
        uint64_t Sel = Table[Index[J]];
        Sum += Call(static_cast<uint32_t>(J ^ Sel), Sel);
      }
      auto T1 = std::chrono::steady_clock::now();
      if (Round > 0)
        Samples[R].push_back(
            std::chrono::duration<double, std::nano>(T1 - T0).count() /
            CallsPerRound);
    }
  }
  // Keep the sums alive.
  volatile uint64_t Sink = Sum;
  (void)Sink;
  for (size_t R = 0; R < std::size(Runs); ++R)
    *Runs[R].Into = median(Samples[R]);
  T.IndirectOne = IndirectOneNs;
  CostCalibration C = fitCalibration(T);
  C.Micros = std::chrono::duration<double, std::micro>(
                 std::chrono::steady_clock::now() - Start)
                 .count();
  return C;
#endif
}

namespace {

// The process's calibration, published once and never freed (a learner
// thread may read it while the process exits): the pointer is constant-
// initialised, so a static constructor elsewhere may already ask. State:
// 0 not measured, 1 a thread is measuring; a child of fork() resets 1 to 0,
// since the measuring thread is not in it.
std::atomic<const CostCalibration *> Published{nullptr};
std::atomic<int> State{0};

void resetInChild() {
  if (!Published.load(std::memory_order_relaxed))
    State.store(0, std::memory_order_relaxed);
}

} // namespace

const CostCalibration &processCostCalibration() {
  static const int AtFork = pthread_atfork(nullptr, nullptr, resetInChild);
  (void)AtFork;
  for (;;) {
    if (const CostCalibration *P = Published.load(std::memory_order_acquire))
      return *P;
    int Idle = 0;
    if (!State.compare_exchange_strong(Idle, 1, std::memory_order_acq_rel)) {
      // Another thread is measuring: about 5 ms.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      continue;
    }
    auto *C = new CostCalibration();
    if (Expected<CostCalibration> M = calibrateCostModel())
      *C = std::move(*M);
    else
      C->Why = toString(M.takeError());
    Published.store(C, std::memory_order_release);
    return *C;
  }
}

} // namespace dispatchgen
