//===- X86ImageEmitterTest.cpp - Tests of directly laid-out images --------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Images are linked by hand into one executable mapping next to small
// stubs (`mov $id, %eax; ret`) and called. Each case's key and jump target
// are different stubs: a call with a registered key that the tree misses
// falls back to the key's own stub and returns its id instead of the
// target's, so the test tells a direct hit from the fallback.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/X86ImageEmitter.h"

#include "dispatch-gen/DispatchLayout.h"

#include "dispatch-gen/CodeInspector.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/Support/FormatVariadic.h"

#include "gtest/gtest.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <sched.h>
#include <set>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

using namespace dispatchgen;
using namespace llvm;

namespace {

constexpr unsigned RDI = 7, RSI = 6, RDX = 2, RCX = 1, R8 = 8, R9 = 9;
constexpr unsigned ArgRegs[] = {RDI, RSI, RDX, RCX, R8, R9};

using Call6 = int (*)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                      uint64_t);

/// An executable mapping: NumStubs stubs of 16 bytes, then room for images.
class CodeArea {
public:
  static constexpr size_t NumStubs = 4096, StubBytes = 16,
                          ImageOffset = NumStubs * StubBytes,
                          Size = ImageOffset + (256u << 10);
  /// Returned by the thunk stub: see RetpolineFallbackGoesThroughTheThunk.
  static constexpr size_t ThunkStub = NumStubs - 1;

  explicit CodeArea(void *Hint = nullptr, int ExtraFlags = 0) {
    void *P = mmap(Hint, Size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | ExtraFlags, -1, 0);
    if (P == MAP_FAILED)
      return;
    Base = static_cast<uint8_t *>(P);
    for (size_t I = 0; I < NumStubs; ++I) {
      uint8_t *S = Base + I * StubBytes;
      if (I == ThunkStub) {
        // mov %r11, %rax; ret: returns what the fallback left in %r11.
        const uint8_t Code[] = {0x4C, 0x89, 0xD8, 0xC3};
        memcpy(S, Code, sizeof(Code));
        continue;
      }
      S[0] = 0xB8; // mov $I, %eax
      uint32_t Id = static_cast<uint32_t>(I);
      memcpy(S + 1, &Id, 4);
      S[5] = 0xC3; // ret
    }
  }
  ~CodeArea() {
    if (Base)
      munmap(Base, Size);
  }
  bool valid() const { return Base != nullptr; }
  uint64_t stub(size_t I) const {
    return reinterpret_cast<uint64_t>(Base + I * StubBytes);
  }
  uint64_t image() const {
    return reinterpret_cast<uint64_t>(Base + ImageOffset);
  }

  /// Copies Img in place, relocated by relocateX86Image (as the
  /// dispatcher places images and their resident copies), and makes the
  /// area executable.
  void install(const X86Image &Img, ArrayRef<ImageCase> Cases) {
    ASSERT_EQ(mprotect(Base, Size, PROT_READ | PROT_WRITE), 0);
    ASSERT_LE(Img.Code.size(), Size - ImageOffset);
    auto Bytes = relocateX86Image(Img, Cases, image(), stub(ThunkStub));
    ASSERT_TRUE(!!Bytes) << toString(Bytes.takeError());
    memcpy(Base + ImageOffset, Bytes->data(), Bytes->size());
    ASSERT_EQ(mprotect(Base, Size, PROT_READ | PROT_EXEC), 0);
  }

  /// Calls the image with Selector in argument register Reg.
  int call(unsigned Reg, uint64_t Selector) const {
    uint64_t Args[6] = {};
    for (unsigned I = 0; I < 6; ++I)
      if (ArgRegs[I] == Reg)
        Args[I] = Selector;
    auto F = reinterpret_cast<Call6>(image());
    return F(Args[0], Args[1], Args[2], Args[3], Args[4], Args[5]);
  }

private:
  uint8_t *Base = nullptr;
};

/// N cases over random distinct stubs: keys from the first half of the
/// stubs, targets from the second. Returns the keys' stub indices too.
std::vector<ImageCase> randomCases(const CodeArea &Area, size_t N,
                                   bool Weighted, std::mt19937_64 &Rng,
                                   std::vector<size_t> &KeyStubs,
                                   std::vector<size_t> &TargetStubs) {
  constexpr size_t Half = (CodeArea::NumStubs - 1) / 2;
  std::vector<size_t> Pool(Half);
  for (size_t I = 0; I < Half; ++I)
    Pool[I] = I;
  std::shuffle(Pool.begin(), Pool.end(), Rng);
  KeyStubs.assign(Pool.begin(), Pool.begin() + N);
  std::shuffle(Pool.begin(), Pool.end(), Rng);
  TargetStubs.clear();
  std::vector<ImageCase> Cases;
  std::uniform_int_distribution<uint64_t> Weight(0, 1000000);
  for (size_t I = 0; I < N; ++I) {
    TargetStubs.push_back(Half + Pool[I]);
    Cases.push_back({Area.stub(KeyStubs[I]), Area.stub(TargetStubs.back()),
                     Weighted ? Weight(Rng) : 0});
  }
  return Cases;
}

/// The first stub (above 0) whose address is no case's key.
size_t firstStubOfNoCase(ArrayRef<size_t> KeyStubs) {
  std::set<size_t> Members(KeyStubs.begin(), KeyStubs.end());
  size_t S = 1;
  while (Members.count(S))
    ++S;
  return S;
}

/// Checks the installed image: it decodes, has IndirectBranches indirect
/// branches (the fallback's; none for a retpoline) and a direct one to
/// every case's target and nowhere else outside itself.
void expectEveryCaseReachedDirectly(CodeArea &Area, size_t Size,
                                    ArrayRef<ImageCase> Cases,
                                    size_t IndirectBranches = 1) {
  auto Inspector = CodeInspector::create();
  ASSERT_TRUE(!!Inspector) << toString(Inspector.takeError());
  std::vector<uint64_t> Allowed;
  for (const ImageCase &C : Cases)
    Allowed.push_back(C.Target);
  ArrayRef<uint8_t> Installed(reinterpret_cast<const uint8_t *>(Area.image()),
                              Size);
  ImageCheck Check = (*Inspector)->check(Installed, Area.image(), Allowed);
  EXPECT_TRUE(Check.DecodeErrors.empty());
  EXPECT_EQ(Check.IndirectBranches.size(), IndirectBranches);
  EXPECT_TRUE(Check.UnknownTargets.empty());
  for (const ImageCase &C : Cases)
    EXPECT_TRUE(is_contained(Check.DirectTargets, C.Target));
}

/// Checks every case hits its target directly, every other key stub
/// takes the fallback, and the image has one indirect branch.
void checkRouting(CodeArea &Area, ArrayRef<ImageCase> Cases,
                  ArrayRef<size_t> KeyStubs, ArrayRef<size_t> TargetStubs,
                  unsigned Reg) {
  auto Img = emitX86Image(Cases, Reg, /*ThunkFallback=*/false);
  ASSERT_TRUE(!!Img) << toString(Img.takeError());
  Area.install(*Img, Cases);
  for (size_t I = 0; I < Cases.size(); ++I)
    ASSERT_EQ(Area.call(Reg, Cases[I].Key), static_cast<int>(TargetStubs[I]))
        << "case " << I << " of " << Cases.size() << " in register " << Reg;
  std::set<size_t> Members(KeyStubs.begin(), KeyStubs.end());
  for (size_t S = 0; S < (CodeArea::NumStubs - 1) / 2; ++S)
    if (!Members.count(S))
      ASSERT_EQ(Area.call(Reg, Area.stub(S)), static_cast<int>(S))
          << "non-member stub " << S << " of " << Cases.size();

  expectEveryCaseReachedDirectly(Area, Img->Code.size(), Cases);
}

TEST(RelocateX86ImageTest, EachFieldGetsItsTargetAndFarTargetsAreErrors) {
  std::vector<ImageCase> Cases = {{0x1000, 0x1000, 0}, {0x2000, 0x2000, 0}};
  auto Img = emitX86Image(Cases, /*SelectorReg=*/7, /*ThunkFallback=*/true);
  ASSERT_TRUE(!!Img) << toString(Img.takeError());
  uint64_t Base = 0x10000000, Thunk = 0x10100000;
  auto Bytes = relocateX86Image(*Img, Cases, Base, Thunk);
  ASSERT_TRUE(!!Bytes) << toString(Bytes.takeError());
  auto Field = [&](uint32_t Offset) {
    int32_t D;
    memcpy(&D, Bytes->data() + Offset, 4);
    return Base + Offset + 4 + static_cast<int64_t>(D);
  };
  for (const X86Image::CaseBranch &B : Img->Branches)
    EXPECT_EQ(Field(B.Offset), Cases[B.Case].Target);
  ASSERT_TRUE(Img->ThunkBranch.has_value());
  EXPECT_EQ(Field(*Img->ThunkBranch), Thunk);
  // More than 2 GiB away: an error naming the target, nothing patched.
  auto Far = relocateX86Image(*Img, Cases, Base + (3ull << 30), Thunk);
  ASSERT_FALSE(!!Far);
  EXPECT_NE(toString(Far.takeError()).find("out of rel32 reach"),
            std::string::npos);
}

TEST(X86ImageEmitterTest, EveryCaseHitsAndEveryOtherKeyFallsBack) {
  CodeArea Area;
  ASSERT_TRUE(Area.valid());
  std::mt19937_64 Rng(20261125);
  for (size_t N : {0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 47, 48, 49, 100, 300, 1024})
    for (bool Weighted : {false, true}) {
      SCOPED_TRACE(formatv("N={0} weighted={1}", N, Weighted).str());
      std::vector<size_t> Keys, Targets;
      auto Cases = randomCases(Area, N, Weighted, Rng, Keys, Targets);
      checkRouting(Area, Cases, Keys, Targets, ArgRegs[N % 6]);
    }
}

TEST(X86ImageEmitterTest, EveryArgumentRegisterCanHoldTheSelector) {
  CodeArea Area;
  ASSERT_TRUE(Area.valid());
  std::mt19937_64 Rng(7);
  for (unsigned Reg : ArgRegs) {
    SCOPED_TRACE(formatv("register {0}", Reg).str());
    std::vector<size_t> Keys, Targets;
    auto Cases = randomCases(Area, 20, false, Rng, Keys, Targets);
    checkRouting(Area, Cases, Keys, Targets, Reg);
  }
}

TEST(X86ImageEmitterTest, SkewedWeightsStillRouteEverything) {
  // One case far heavier than the rest (a prefix of one), and all-equal
  // weights at the top of the range (sums past 64 bits).
  CodeArea Area;
  ASSERT_TRUE(Area.valid());
  std::mt19937_64 Rng(3);
  std::vector<size_t> Keys, Targets;
  auto Cases = randomCases(Area, 64, true, Rng, Keys, Targets);
  for (ImageCase &C : Cases)
    C.Weight = 1;
  Cases[17].Weight = UINT64_MAX;
  checkRouting(Area, Cases, Keys, Targets, RDI);
  for (ImageCase &C : Cases)
    C.Weight = UINT64_MAX;
  checkRouting(Area, Cases, Keys, Targets, RDI);
}

TEST(X86ImageEmitterTest, SkewedWeightsTestTheHottestFirst) {
  // Zipf-like weights: the hottest cases are tested one by one, hottest
  // first, before the tree.
  CodeArea Area;
  ASSERT_TRUE(Area.valid());
  std::mt19937_64 Rng(13);
  std::vector<size_t> Keys, Targets;
  auto Cases = randomCases(Area, 48, true, Rng, Keys, Targets);
  std::vector<uint32_t> Rank(Cases.size());
  for (uint32_t I = 0; I < Rank.size(); ++I)
    Rank[I] = I;
  std::shuffle(Rank.begin(), Rank.end(), Rng);
  for (uint32_t R = 0; R < Rank.size(); ++R)
    Cases[Rank[R]].Weight = static_cast<uint64_t>(1e9 / std::pow(R + 1, 1.1));
  auto Img = emitX86Image(Cases, RDI, false);
  ASSERT_TRUE(!!Img) << toString(Img.takeError());
  ASSERT_GE(Img->Branches.size(), 4u);
  for (uint32_t R = 0; R < 4; ++R)
    EXPECT_EQ(Img->Branches[R].Case, Rank[R]) << "rank " << R;
  checkRouting(Area, Cases, Keys, Targets, RDI);
}

TEST(X86ImageEmitterTest, WeightedImagesTestInTheLayoutsOrder) {
  // Whatever layout the model picks for a distribution, the image makes its
  // tests: the prefix first, in order, and each chain's cases in the
  // chain's order (hottest first; DispatchLayoutTest checks that).
  CodeArea Area;
  ASSERT_TRUE(Area.valid());
  std::mt19937_64 Rng(29);
  for (size_t N : {4u, 9u, 16u, 40u}) {
    for (double Skew : {0.0, 0.3, 1.1}) {
      SCOPED_TRACE(formatv("N = {0}, skew {1}", N, Skew).str());
      std::vector<size_t> Keys, Targets;
      auto Cases = randomCases(Area, N, true, Rng, Keys, Targets);
      std::vector<uint32_t> Rank(N);
      for (uint32_t I = 0; I < N; ++I)
        Rank[I] = I;
      std::shuffle(Rank.begin(), Rank.end(), Rng);
      // Distinct weights: 1000 + a little per rank, or Zipf-like.
      for (uint32_t R = 0; R < N; ++R)
        Cases[Rank[R]].Weight =
            1000 * 1000 / static_cast<uint64_t>(1000 * std::pow(R + 1, Skew)) +
            (N - R);
      auto Img = emitX86Image(Cases, RDI, false);
      ASSERT_TRUE(!!Img) << toString(Img.takeError());
      ASSERT_EQ(Img->Branches.size(), N);
      std::vector<uint32_t> Order;
      for (const X86Image::CaseBranch &B : Img->Branches)
        Order.push_back(B.Case);

      std::vector<LayoutCase> ForLayout;
      for (const ImageCase &C : Cases)
        ForLayout.push_back({C.Key, C.Weight});
      DispatchLayout L = DispatchLayout::choose(ForLayout);
      ASSERT_GE(Order.size(), L.prefix().size());
      EXPECT_TRUE(
          std::equal(L.prefix().begin(), L.prefix().end(), Order.begin()));
      for (size_t I = 0; I < L.numNodes(); ++I) {
        if (L.node(I).Kind != DispatchLayout::NodeKind::Chain)
          continue;
        auto Pos = [&](uint32_t C) { return llvm::find(Order, C); };
        ArrayRef<uint32_t> Chain = L.node(I).Cases;
        for (size_t J = 1; J < Chain.size(); ++J)
          EXPECT_LT(Pos(Chain[J - 1]), Pos(Chain[J])) << "chain " << I;
      }
      checkRouting(Area, Cases, Keys, Targets, RDI);
    }
  }
}

using CPUSource = X86CountingPlan::CPUSource;

/// The sources of the CPU number this process and CPU offer.
std::vector<CPUSource> availableCPUSources() {
  std::vector<CPUSource> Sources = {CPUSource::LSL};
  if (X86CountingPlan::hostHasRDPID())
    Sources.push_back(CPUSource::RDPID);
  if (X86CountingPlan::hostRSeqOffset())
    Sources.push_back(CPUSource::RSeq);
  return Sources;
}

const char *sourceName(CPUSource S) {
  switch (S) {
  case CPUSource::LSL:
    return "lsl";
  case CPUSource::RDPID:
    return "rdpid";
  case CPUSource::RSeq:
    return "rseq";
  }
  return "?";
}

/// The cheapest source, as a dispatcher picks it.
CPUSource cheapestCPUSource() {
  X86CountingPlan Plan;
  Plan.useCheapestCPUSource();
  return Plan.CPU;
}

/// Zeroed counter blocks for a counting image, 64-byte aligned.
class CounterBlocks {
public:
  CounterBlocks(size_t NumCases, uint32_t NumBlocks, uint32_t RingSlots,
                CPUSource Source)
      : NumCases(NumCases) {
    Plan.NumBlocks = NumBlocks;
    Plan.RingSlots = RingSlots;
    Plan.MaxCases = static_cast<uint32_t>(NumCases);
    Plan.BlockBytes = X86CountingPlan::blockBytesFor(Plan.MaxCases, RingSlots);
    Plan.CPU = Source;
    if (Source == CPUSource::RSeq)
      Plan.RSeqOffset = X86CountingPlan::hostRSeqOffset().value_or(0);
    Words.assign(size_t(NumBlocks) * Plan.BlockBytes / 8 + 8, 0);
    uint64_t Raw = reinterpret_cast<uint64_t>(Words.data());
    Plan.Base = alignTo(Raw, 64);
  }
  const X86CountingPlan &plan() const { return Plan; }
  uint64_t at(uint32_t Block, uint32_t Offset) const {
    return *reinterpret_cast<const uint64_t *>(
        Plan.Base + Block * Plan.BlockBytes + Offset);
  }
  uint64_t caseCount(uint32_t C) const {
    uint64_t Sum = 0;
    for (uint32_t B = 0; B < Plan.NumBlocks; ++B)
      Sum += at(B, X86CountingPlan::caseCounter(C));
    return Sum;
  }
  uint64_t fallbackCount(uint32_t Block) const {
    return at(Block, X86CountingPlan::fallbackCounter());
  }
  uint64_t ring(uint32_t Block, uint32_t Slot) const {
    return at(Block, Plan.ringSlot(Slot));
  }
  /// Every word of the blocks, to tell whether a call wrote any.
  const std::vector<uint64_t> &words() const { return Words; }

private:
  size_t NumCases;
  X86CountingPlan Plan;
  std::vector<uint64_t> Words;
};

/// Pins the calling thread to the CPU it runs on, for its lifetime.
class PinToThisCPU {
public:
  PinToThisCPU() {
    sched_getaffinity(0, sizeof(Old), &Old);
    CPU = sched_getcpu();
    cpu_set_t One;
    CPU_ZERO(&One);
    CPU_SET(CPU, &One);
    Pinned = sched_setaffinity(0, sizeof(One), &One) == 0;
  }
  ~PinToThisCPU() { sched_setaffinity(0, sizeof(Old), &Old); }
  int CPU = 0;
  bool Pinned = false;

private:
  cpu_set_t Old;
};

TEST(X86ImageEmitterTest, CountingImagesCountEveryCallAndRecordTheFallback) {
  // One pinned thread: every call lands in its CPU's block, exactly.
  // Every source of the CPU number this machine has: rseq's is checked
  // against sched_getcpu(), which reads the same field.
  EXPECT_EQ(cheapestCPUSource(), availableCPUSources().back());
  for (CPUSource Source : availableCPUSources()) {
    for (bool Low : {false, true}) {
      SCOPED_TRACE(formatv("{0}, {1} addresses", sourceName(Source),
                           Low ? "low" : "high")
                       .str());
      CodeArea Area(Low ? reinterpret_cast<void *>(uint64_t(0x30000000))
                        : nullptr,
                    Low ? MAP_FIXED_NOREPLACE : 0);
      if (!Area.valid())
        continue;
      std::mt19937_64 Rng(31);
      std::vector<size_t> Keys, Targets;
      auto Cases = randomCases(Area, 9, /*Weighted=*/false, Rng, Keys, Targets);
      CounterBlocks Counters(Cases.size(), 64, 8, Source);
      X86ImageOptions Options;
      Options.Counting = Counters.plan();
      auto Img = emitX86Image(Cases, RDX, Options);
      ASSERT_TRUE(!!Img) << toString(Img.takeError());
      Area.install(*Img, Cases);

      PinToThisCPU Pin;
      ASSERT_TRUE(Pin.Pinned);
      for (size_t I = 0; I < Cases.size(); ++I)
        for (size_t K = 0; K < 3 * (I + 1); ++K)
          ASSERT_EQ(Area.call(RDX, Cases[I].Key), static_cast<int>(Targets[I]));
      // Ten selectors of no case: the ring of 8 keeps the last eight.
      std::set<size_t> Members(Keys.begin(), Keys.end());
      std::vector<uint64_t> Others;
      for (size_t S = 0; Others.size() < 10; ++S)
        if (!Members.count(S))
          Others.push_back(Area.stub(S));
      for (uint64_t Sel : Others)
        ASSERT_EQ(Area.call(RDX, Sel),
                  static_cast<int>((Sel - Area.stub(0)) / CodeArea::StubBytes));

      for (size_t I = 0; I < Cases.size(); ++I)
        EXPECT_EQ(Counters.caseCount(I), 3 * (I + 1)) << "case " << I;
      uint32_t Block = Pin.CPU % 64;
      EXPECT_EQ(Counters.fallbackCount(Block), 10u);
      for (uint32_t K = 2; K < 10; ++K)
        EXPECT_EQ(Counters.ring(Block, K % 8), Others[K]) << "call " << K;

      // Still one indirect branch, the fallback; every program direct.
      expectEveryCaseReachedDirectly(Area, Img->Code.size(), Cases);
    }
  }
}

TEST(X86ImageEmitterTest, SampledImagesCountBurstsAndRouteEveryCall) {
  // Skip 5, burst 3: of each 8 calls on a CPU the first 3 take the
  // counting compares, the other 5 the plain ones. Every call is routed
  // either way, high addresses (rebased twice) and low.
  for (bool Low : {false, true}) {
    SCOPED_TRACE(Low ? "low addresses" : "high addresses");
    CodeArea Area(Low ? reinterpret_cast<void *>(uint64_t(0x30000000))
                      : nullptr,
                  Low ? MAP_FIXED_NOREPLACE : 0);
    if (!Area.valid())
      continue;
    std::mt19937_64 Rng(47);
    std::vector<size_t> Keys, Targets;
    auto Cases = randomCases(Area, 7, /*Weighted=*/false, Rng, Keys, Targets);
    CounterBlocks Counters(Cases.size(), 64, 8, cheapestCPUSource());
    X86ImageOptions Options;
    Options.Counting = Counters.plan();
    Options.Counting->SampleSkip = 5;
    Options.Counting->SampleBurst = 3;
    Options.Counting->JitterSkip = false;
    auto Img = emitX86Image(Cases, RDX, Options);
    ASSERT_TRUE(!!Img) << toString(Img.takeError());
    Area.install(*Img, Cases);

    PinToThisCPU Pin;
    ASSERT_TRUE(Pin.Pinned);
    uint64_t Other = firstStubOfNoCase(Keys);
    // Calls 0-799: case K % 7; 800-839: the selector of no case.
    std::vector<uint64_t> Expected(Cases.size());
    uint64_t ExpectedFallback = 0;
    for (size_t K = 0; K < 840; ++K) {
      bool Counted = K % 8 < 3;
      if (K < 800) {
        size_t I = K % Cases.size();
        ASSERT_EQ(Area.call(RDX, Cases[I].Key), static_cast<int>(Targets[I]));
        Expected[I] += Counted;
      } else {
        ASSERT_EQ(Area.call(RDX, Area.stub(Other)), static_cast<int>(Other));
        ExpectedFallback += Counted;
      }
    }
    for (size_t I = 0; I < Cases.size(); ++I)
      EXPECT_EQ(Counters.caseCount(I), Expected[I]) << "case " << I;
    uint32_t Block = Pin.CPU % 64;
    EXPECT_EQ(Counters.fallbackCount(Block), ExpectedFallback);
    EXPECT_EQ(Counters.ring(Block, 0), Area.stub(Other));
    // Within a burst the round-robin's second and third calls follow a
    // counted call; the first follows none and scores no prediction.
    EXPECT_LE(Counters.at(Block, X86CountingPlan::predictedCounter()),
              2 * 100u);

    // Two bodies, one indirect branch: every program reached directly.
    expectEveryCaseReachedDirectly(Area, Img->Code.size(), Cases);
  }
  // A burst of none is refused.
  CounterBlocks Counters(3, 64, 8, CPUSource::LSL);
  X86ImageOptions Options;
  Options.Counting = Counters.plan();
  Options.Counting->SampleSkip = 5;
  std::mt19937_64 Rng(53);
  CodeArea Area;
  std::vector<size_t> Keys, Targets;
  auto Cases = randomCases(Area, 3, /*Weighted=*/false, Rng, Keys, Targets);
  auto Refused = emitX86Image(Cases, RDX, Options);
  ASSERT_FALSE(!!Refused);
  EXPECT_NE(toString(Refused.takeError()).find("per burst"), std::string::npos);
}

TEST(X86ImageEmitterTest, AClosedGateCountsNothingAndWritesNothing) {
  // A gated image, sampled (skip 5, burst 3) and not: while the gate's
  // byte is 0 every call is routed and no word of the blocks changes (not
  // even the countdown); while it is 1 the calls are counted as without a
  // gate; closed again, the counts stay.
  for (uint32_t Skip : {5u, 0u}) {
    SCOPED_TRACE(Skip ? "sampled" : "every call");
    CodeArea Area;
    ASSERT_TRUE(Area.valid());
    std::mt19937_64 Rng(61);
    std::vector<size_t> Keys, Targets;
    auto Cases = randomCases(Area, 7, /*Weighted=*/false, Rng, Keys, Targets);
    CounterBlocks Counters(Cases.size(), 64, 8, cheapestCPUSource());
    alignas(64) static volatile uint8_t Gate = 0;
    Gate = 0;
    X86ImageOptions Options;
    Options.Counting = Counters.plan();
    Options.Counting->SampleSkip = Skip;
    Options.Counting->SampleBurst = Skip ? 3 : 0;
    Options.Counting->JitterSkip = false;
    Options.Counting->Gate = reinterpret_cast<uint64_t>(&Gate);
    auto Img = emitX86Image(Cases, RDX, Options);
    ASSERT_TRUE(!!Img) << toString(Img.takeError());
    Area.install(*Img, Cases);
    expectEveryCaseReachedDirectly(Area, Img->Code.size(), Cases);

    PinToThisCPU Pin;
    ASSERT_TRUE(Pin.Pinned);
    uint64_t Other = firstStubOfNoCase(Keys);
    // 800 calls to the cases in turn, 40 to the selector of no case.
    auto Calls = [&] {
      for (size_t K = 0; K < 840; ++K) {
        if (K < 800) {
          size_t I = K % Cases.size();
          ASSERT_EQ(Area.call(RDX, Cases[I].Key), static_cast<int>(Targets[I]));
        } else {
          ASSERT_EQ(Area.call(RDX, Area.stub(Other)), static_cast<int>(Other));
        }
      }
    };
    std::vector<uint64_t> Before = Counters.words();
    Calls();
    EXPECT_TRUE(Counters.words() == Before) << "a closed gate wrote";

    Gate = 1;
    Calls();
    std::vector<uint64_t> Expected(Cases.size());
    uint64_t ExpectedFallback = 0;
    for (size_t K = 0; K < 840; ++K) {
      bool Counted = !Skip || K % 8 < 3;
      if (K < 800)
        Expected[K % Cases.size()] += Counted;
      else
        ExpectedFallback += Counted;
    }
    for (size_t I = 0; I < Cases.size(); ++I)
      EXPECT_EQ(Counters.caseCount(I), Expected[I]) << "case " << I;
    uint32_t Block = Pin.CPU % 64;
    EXPECT_EQ(Counters.fallbackCount(Block), ExpectedFallback);

    Gate = 0;
    std::vector<uint64_t> Open = Counters.words();
    Calls();
    EXPECT_TRUE(Counters.words() == Open) << "a closed gate wrote";
  }
}

TEST(X86ImageEmitterTest, SamplingJitterSeesEveryTargetOfAPeriodicPattern) {
  // A round-robin over 64 targets, sampled 32 in 256: without jitter each
  // burst sees the same 32 targets and the other 32 are never counted;
  // with it every target is, about equally.
  CodeArea Area;
  ASSERT_TRUE(Area.valid());
  std::mt19937_64 Rng(59);
  std::vector<size_t> Keys, Targets;
  constexpr size_t N = 64, Rounds = 2000;
  auto Cases = randomCases(Area, N, /*Weighted=*/false, Rng, Keys, Targets);
  for (bool Jitter : {false, true}) {
    SCOPED_TRACE(Jitter ? "jitter" : "no jitter");
    CounterBlocks Counters(Cases.size(), 64, 8, cheapestCPUSource());
    X86ImageOptions Options;
    Options.Counting = Counters.plan();
    Options.Counting->SampleSkip = 224;
    Options.Counting->SampleBurst = 32;
    Options.Counting->JitterSkip = Jitter;
    auto Img = emitX86Image(Cases, RSI, Options);
    ASSERT_TRUE(!!Img) << toString(Img.takeError());
    Area.install(*Img, Cases);
    PinToThisCPU Pin;
    ASSERT_TRUE(Pin.Pinned);
    for (size_t K = 0; K < N * Rounds; ++K)
      ASSERT_EQ(Area.call(RSI, Cases[K % N].Key),
                static_cast<int>(Targets[K % N]));
    uint64_t Total = 0, Unseen = 0, Least = UINT64_MAX, Most = 0;
    for (size_t I = 0; I < N; ++I) {
      uint64_t C = Counters.caseCount(I);
      Total += C;
      Unseen += C == 0;
      Least = std::min(Least, C);
      Most = std::max(Most, C);
    }
    // One call in 8 counted, either way.
    EXPECT_NEAR(double(Total), N * Rounds / 8.0, N * Rounds / 80.0);
    if (!Jitter) {
      EXPECT_EQ(Unseen, N / 2);
    } else {
      EXPECT_EQ(Unseen, 0u);
      EXPECT_GT(Least * 2, Most) << Least << " to " << Most;
    }
  }
}

TEST(X86ImageEmitterTest, CountingImagesScoreHowPredictableTheOrderIs) {
  // A call whose case is the one that followed the previous call's case
  // the last time counts as predicted: in a round-robin order every call
  // after the first round is; in a random order about one in N.
  CodeArea Area;
  ASSERT_TRUE(Area.valid());
  std::mt19937_64 Rng(41);
  std::vector<size_t> Keys, Targets;
  constexpr size_t N = 16, Rounds = 200;
  auto Cases = randomCases(Area, N, /*Weighted=*/false, Rng, Keys, Targets);
  for (bool RoundRobin : {true, false}) {
    SCOPED_TRACE(RoundRobin ? "round-robin" : "random");
    CounterBlocks Counters(Cases.size(), 64, 8, cheapestCPUSource());
    X86ImageOptions Options;
    Options.Counting = Counters.plan();
    auto Img = emitX86Image(Cases, RSI, Options);
    ASSERT_TRUE(!!Img) << toString(Img.takeError());
    Area.install(*Img, Cases);
    PinToThisCPU Pin;
    ASSERT_TRUE(Pin.Pinned);
    std::uniform_int_distribution<size_t> Pick(0, N - 1);
    for (size_t K = 0; K < N * Rounds; ++K) {
      size_t I = RoundRobin ? K % N : Pick(Rng);
      ASSERT_EQ(Area.call(RSI, Cases[I].Key), static_cast<int>(Targets[I]));
    }
    uint32_t Block = Pin.CPU % 64;
    uint64_t Predicted =
        Counters.at(Block, X86CountingPlan::predictedCounter());
    if (RoundRobin) {
      // The first round teaches the table all but the wrap-around, which
      // the second round's first call teaches.
      EXPECT_EQ(Predicted, N * Rounds - N - 1);
    } else {
      EXPECT_LT(Predicted, N * Rounds / 8);
      EXPECT_GT(Predicted, N * Rounds / 32);
    }
    // The previous case is the last call's.
    size_t Last = RoundRobin ? (N * Rounds - 1) % N : 0;
    if (RoundRobin)
      EXPECT_EQ(Counters.at(Block, X86CountingPlan::previousSlot()), Last + 1);
  }
}

TEST(X86ImageEmitterTest, CountingImagesOfAnyCaseCountShareTheBlocks) {
  // A window's set may change: images of 3, then 12, then 5 cases count
  // into the same blocks without a reset. Every field keeps its offset, so
  // nothing one image wrote makes another index out of its block (the
  // successor table is indexed by the previous case), and every call is
  // still routed and counted.
  CodeArea Area;
  ASSERT_TRUE(Area.valid());
  std::mt19937_64 Rng(43);
  std::vector<size_t> Keys, Targets;
  auto All = randomCases(Area, 12, /*Weighted=*/false, Rng, Keys, Targets);
  CounterBlocks Counters(12, 64, 8, cheapestCPUSource());
  PinToThisCPU Pin;
  ASSERT_TRUE(Pin.Pinned);
  uint64_t Calls = 0;
  for (size_t N : {3u, 12u, 5u, 12u}) {
    SCOPED_TRACE(N);
    ArrayRef<ImageCase> Cases = ArrayRef(All).take_front(N);
    X86ImageOptions Options;
    Options.Counting = Counters.plan();
    auto Img = emitX86Image(Cases, RDI, Options);
    ASSERT_TRUE(!!Img) << toString(Img.takeError());
    Area.install(*Img, Cases);
    for (size_t K = 0; K < 40 * N; ++K) {
      size_t I = K % N;
      ASSERT_EQ(Area.call(RDI, Cases[I].Key), static_cast<int>(Targets[I]));
      ++Calls;
    }
    // A selector of no case between rounds: the fallback resets the
    // previous case.
    ASSERT_EQ(Area.call(RDI, Area.stub(CodeArea::NumStubs / 2 - 1)),
              static_cast<int>(CodeArea::NumStubs / 2 - 1));
  }
  uint64_t Counted = 0;
  for (uint32_t C = 0; C < 12; ++C)
    Counted += Counters.caseCount(C);
  EXPECT_EQ(Counted, Calls);
  EXPECT_EQ(Counters.fallbackCount(Pin.CPU % 64), 4u);
  // More cases than the plan has room for is refused.
  CounterBlocks Small(4, 64, 8, CPUSource::LSL);
  X86ImageOptions Options;
  Options.Counting = Small.plan();
  auto TooMany = emitX86Image(All, RDI, Options);
  ASSERT_FALSE(!!TooMany);
  EXPECT_NE(toString(TooMany.takeError()).find("room for every case"),
            std::string::npos);
}

TEST(X86ImageEmitterTest, CountingThreadsWriteTheirOwnCPUsBlocks) {
  // Two threads free to migrate: each call is counted in the block of the
  // CPU it ran on, so only blocks of CPUs that exist are written, and
  // (without a lock prefix) nearly every call is counted.
  CodeArea Area;
  ASSERT_TRUE(Area.valid());
  std::mt19937_64 Rng(37);
  std::vector<size_t> Keys, Targets;
  auto Cases = randomCases(Area, 16, /*Weighted=*/false, Rng, Keys, Targets);
  for (CPUSource Source : availableCPUSources()) {
    SCOPED_TRACE(sourceName(Source));
    CounterBlocks Counters(Cases.size(), 256, 4, Source);
    X86ImageOptions Options;
    Options.Counting = Counters.plan();
    auto Img = emitX86Image(Cases, RDI, Options);
    ASSERT_TRUE(!!Img) << toString(Img.takeError());
    Area.install(*Img, Cases);
    constexpr size_t Rounds = 20000;
    std::atomic<size_t> Wrong{0};
    auto Work = [&] {
      for (size_t R = 0; R < Rounds; ++R)
        for (size_t I = 0; I < Cases.size(); ++I)
          if (Area.call(RDI, Cases[I].Key) != static_cast<int>(Targets[I]))
            ++Wrong;
    };
    std::thread T1(Work), T2(Work);
    T1.join();
    T2.join();
    EXPECT_EQ(Wrong.load(), 0u);
    long CPUs = sysconf(_SC_NPROCESSORS_CONF);
    for (size_t I = 0; I < Cases.size(); ++I) {
      EXPECT_LE(Counters.caseCount(I), 2 * Rounds);
      EXPECT_GE(Counters.caseCount(I), 2 * Rounds * 99 / 100) << "case " << I;
      for (uint32_t B = static_cast<uint32_t>(CPUs); B < 256; ++B)
        ASSERT_EQ(Counters.at(B, X86CountingPlan::caseCounter(I)), 0u)
            << "block " << B << " of no CPU";
    }
  }
}

TEST(X86ImageEmitterTest, AnInlineRetpolineIsTheFallback) {
  // The fallback as a retpoline on the selector's own register: a key of
  // no case still reaches its target (run for real), the routes see an
  // indirect jump through the selector at the retpoline's call, and the
  // image has no other indirect branch, no thunk and no other exit than
  // the programs' jumps.
  for (unsigned Reg : {unsigned(RDX), unsigned(RSI), 9u /*r9*/}) {
    SCOPED_TRACE(Reg);
    CodeArea Area;
    ASSERT_TRUE(Area.valid());
    std::mt19937_64 Rng(67);
    std::vector<size_t> Keys, Targets;
    auto Cases = randomCases(Area, 12, /*Weighted=*/false, Rng, Keys, Targets);
    X86ImageOptions Options;
    Options.InlineRetpoline = true;
    auto Img = emitX86Image(Cases, Reg, Options);
    ASSERT_TRUE(!!Img) << toString(Img.takeError());
    EXPECT_FALSE(Img->ThunkBranch);
    Area.install(*Img, Cases);
    std::set<size_t> Members(Keys.begin(), Keys.end());
    std::vector<uint64_t> Others;
    for (size_t I = 0; I < Cases.size(); ++I)
      ASSERT_EQ(Area.call(Reg, Cases[I].Key), static_cast<int>(Targets[I]));
    for (size_t S = 0; Others.size() < 5; ++S)
      if (!Members.count(S)) {
        Others.push_back(Area.stub(S));
        ASSERT_EQ(Area.call(Reg, Area.stub(S)), static_cast<int>(S));
      }

    expectEveryCaseReachedDirectly(Area, Img->Code.size(), Cases,
                                   /*IndirectBranches=*/0);
    static const char *const Names[] = {"rax", "rcx", "rdx", "rbx", "rsp",
                                        "rbp", "rsi", "rdi", "r8",  "r9"};
    auto Inspector = cantFail(CodeInspector::create());
    ArrayRef<uint8_t> Installed(reinterpret_cast<const uint8_t *>(Area.image()),
                                Img->Code.size());
    auto Routes =
        Inspector->followSelector(Installed, Area.image(), Names[Reg], Others);
    ASSERT_TRUE(!!Routes) << toString(Routes.takeError());
    for (const SelectorRoute &R : *Routes) {
      EXPECT_EQ(R.Kind, BranchKind::Indirect);
      EXPECT_EQ(R.Target, std::optional<uint64_t>(R.Key));
    }
  }
  X86ImageOptions Both;
  Both.InlineRetpoline = Both.ThunkFallback = true;
  CodeArea Area;
  std::mt19937_64 Rng(71);
  std::vector<size_t> Keys, Targets;
  auto Cases = randomCases(Area, 3, /*Weighted=*/false, Rng, Keys, Targets);
  auto Refused = emitX86Image(Cases, RDX, Both);
  ASSERT_FALSE(!!Refused);
  EXPECT_NE(toString(Refused.takeError()).find("not both"), std::string::npos);
}

TEST(X86ImageEmitterTest, LowAddressesNeedNoRebase) {
  // Below 2 GiB the keys are compared as they are: no movabs, no sub.
  CodeArea Area(reinterpret_cast<void *>(uint64_t(0x30000000)),
                MAP_FIXED_NOREPLACE);
  if (!Area.valid() || Area.stub(CodeArea::NumStubs) > uint64_t(INT32_MAX))
    GTEST_SKIP() << "no free address space below 2 GiB";
  std::mt19937_64 Rng(11);
  std::vector<size_t> Keys, Targets;
  auto Cases = randomCases(Area, 33, false, Rng, Keys, Targets);
  auto Img = emitX86Image(Cases, RDI, false);
  ASSERT_TRUE(!!Img) << toString(Img.takeError());
  ASSERT_GE(Img->Code.size(), 2u);
  EXPECT_FALSE(Img->Code[0] == 0x48 && Img->Code[1] == 0xB8)
      << "starts with movabs $Base, %rax";
  checkRouting(Area, Cases, Keys, Targets, RDI);
}

TEST(X86ImageEmitterTest, RetpolineFallbackGoesThroughTheThunk) {
  CodeArea Area;
  ASSERT_TRUE(Area.valid());
  std::mt19937_64 Rng(5);
  std::vector<size_t> Keys, Targets;
  auto Cases = randomCases(Area, 10, false, Rng, Keys, Targets);
  for (unsigned Reg : {RDI, R9}) {
    auto Img = emitX86Image(Cases, Reg, /*ThunkFallback=*/true);
    ASSERT_TRUE(!!Img) << toString(Img.takeError());
    ASSERT_TRUE(Img->ThunkBranch.has_value());
    Area.install(*Img, Cases);
    EXPECT_EQ(Area.call(Reg, Cases[3].Key), static_cast<int>(Targets[3]));
    // The thunk stub returns %r11, which must hold the selector.
    uint64_t Miss = Area.stub(CodeArea::NumStubs - 2);
    EXPECT_EQ(static_cast<uint32_t>(Area.call(Reg, Miss)),
              static_cast<uint32_t>(Miss));
    auto Inspector = CodeInspector::create();
    ASSERT_TRUE(!!Inspector);
    ArrayRef<uint8_t> Installed(reinterpret_cast<const uint8_t *>(Area.image()),
                                Img->Code.size());
    EXPECT_TRUE((*Inspector)
                    ->check(Installed, Area.image(), {})
                    .IndirectBranches.empty());
  }
}

TEST(X86ImageEmitterTest, RefusesWhatItCannotLayOut) {
  std::vector<ImageCase> Wide = {{0x100000000, 0x100000000},
                                 {0x200000000, 0x200000000}};
  auto Img = emitX86Image(Wide, RDI, false);
  ASSERT_FALSE(!!Img);
  EXPECT_NE(toString(Img.takeError()).find("more than a 32-bit compare"),
            std::string::npos);
  std::vector<ImageCase> Twice = {{0x1000, 0x1000}, {0x1000, 0x2000}};
  Img = emitX86Image(Twice, RDI, false);
  ASSERT_FALSE(!!Img);
  EXPECT_NE(toString(Img.takeError()).find("two programs have the address"),
            std::string::npos);
  Img = emitX86Image({}, /*%r11*/ 11, false);
  ASSERT_FALSE(!!Img);
  EXPECT_NE(toString(Img.takeError()).find("cannot hold the selector"),
            std::string::npos);
}

TEST(X86ImageEmitterTest, SelectorRegisterFollowsTheSysVConvention) {
  LLVMContext Ctx;
  Type *I32 = Type::getInt32Ty(Ctx), *I64 = Type::getInt64Ty(Ctx),
       *Ptr = PointerType::getUnqual(Ctx), *F64 = Type::getDoubleTy(Ctx),
       *I128 = Type::getInt128Ty(Ctx);
  auto Sig = [&](Type *Ret, ArrayRef<Type *> Params) {
    return FunctionType::get(Ret, Params, false);
  };
  // A trailing selector after the programs' own parameters.
  EXPECT_EQ(getX86SelectorRegister(Sig(I32, {Ptr, Ptr}), std::nullopt), RDX);
  EXPECT_EQ(getX86SelectorRegister(Sig(I32, {}), std::nullopt), RDI);
  // Doubles go in XMM registers and take no GPR.
  EXPECT_EQ(getX86SelectorRegister(Sig(F64, {F64, Ptr, F64}), 1u), RDI);
  EXPECT_EQ(getX86SelectorRegister(Sig(I32, {I64, I32, I64, I64, Ptr}), 4u),
            R8);
  EXPECT_EQ(
      getX86SelectorRegister(Sig(I32, {I64, I64, I64, I64, I64}), std::nullopt),
      R9);
  // The seventh integer argument is on the stack.
  EXPECT_EQ(getX86SelectorRegister(Sig(I32, {I64, I64, I64, I64, I64, I64}),
                                   std::nullopt),
            std::nullopt);
  // An aggregate return may take %rdi as a hidden pointer; i128 takes two.
  EXPECT_EQ(getX86SelectorRegister(
                Sig(StructType::get(Ctx, {I64, I64, I64}), {Ptr}), 0u),
            std::nullopt);
  EXPECT_EQ(getX86SelectorRegister(Sig(I32, {I128, Ptr}), 1u), std::nullopt);
  // The selector must be a pointer parameter.
  EXPECT_EQ(getX86SelectorRegister(Sig(I32, {I64}), 0u), std::nullopt);
  EXPECT_EQ(getX86SelectorRegister(Sig(I32, {Ptr}), 1u), std::nullopt);
}

} // namespace
