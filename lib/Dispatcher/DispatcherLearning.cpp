//===- DispatcherLearning.cpp - Adaptive dispatch: learning windows -------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// An adaptive dispatcher's learning windows (AdaptiveConfig in
// Dispatcher.h). beginLearning() zeroes the per-CPU counter blocks and
// makes the live image a counting one; endLearning() reads the blocks,
// promotes the unregistered targets hot at the fallback and demotes cold
// ones, keeps the counts as the layout's weights when the model predicts
// the new layout enough cheaper (hysteresis), and makes the live image a
// steady one again. Both go through update(), the normal path: A/B images,
// a grace period, reclamation.
//
//===----------------------------------------------------------------------===//

#include "DispatcherImpl.h"
#include "Learner.h"

#include "dispatch-gen/DispatchLayout.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>

#include <sys/mman.h>
#include <unistd.h>

using namespace llvm;

namespace dispatchgen {

namespace {

uint64_t loadCounter(uint64_t Address) {
  // Callers increment it from JIT code; a relaxed load is all a sample
  // needs.
  return __atomic_load_n(reinterpret_cast<const uint64_t *>(Address),
                         __ATOMIC_RELAXED);
}

/// Which pages of the counter memory a counting image wrote to. The
/// others are not mapped yet, and the learner does not read them: a read
/// maps the zero page there, which the first count then replaces with a
/// TLB shootdown of every CPU running the process; unread, a page costs
/// nothing until a CPU counts in it (a host with 256 possible CPUs and a
/// call site on 4 of them pays for 4 blocks).
/// A page once written stays counted as touched (Seen), even if it was
/// swapped out since: mincore() reports it absent then, but its counts
/// are still there.
class TouchedPages {
public:
  TouchedPages(const void *Memory, size_t Bytes,
               std::vector<unsigned char> *Seen = nullptr,
               std::mutex *SeenMutex = nullptr)
      : Base(reinterpret_cast<uint64_t>(Memory)),
        PageSize(static_cast<uint64_t>(sysconf(_SC_PAGESIZE))) {
    Resident.resize((Bytes + PageSize - 1) / PageSize);
    if (mincore(const_cast<void *>(Memory), Bytes, Resident.data()) != 0)
      std::fill(Resident.begin(), Resident.end(), 1); // unknown: read all
    if (!Seen)
      return;
    std::lock_guard<std::mutex> Lock(*SeenMutex);
    Seen->resize(Resident.size());
    for (size_t P = 0; P < Resident.size(); ++P)
      Resident[P] = (*Seen)[P] |= Resident[P] & 1;
  }
  bool touched(uint64_t Address, uint64_t Bytes) const {
    for (uint64_t P = (Address - Base) / PageSize,
                  E = (Address + Bytes - 1 - Base) / PageSize;
         P <= E && P < Resident.size(); ++P)
      if (Resident[P] & 1)
        return true;
    return false;
  }
  /// The counter at Address, or 0 where no CPU wrote its page.
  uint64_t load(uint64_t Address) const {
    return touched(Address, 8) ? loadCounter(Address) : 0;
  }
  uint64_t residentBytes() const {
    return PageSize * static_cast<uint64_t>(llvm::count_if(
                          Resident, [](unsigned char R) { return R & 1; }));
  }
  /// Sets every word of the touched pages that holds something to 0,
  /// atomically: the learner's trigger reads them meanwhile.
  void clear() const {
    for (uint64_t P = 0; P < Resident.size(); ++P) {
      if (!(Resident[P] & 1))
        continue;
      auto *Words = reinterpret_cast<uint64_t *>(Base + P * PageSize);
      for (uint64_t I = 0; I < PageSize / sizeof(uint64_t); ++I)
        if (__atomic_load_n(Words + I, __ATOMIC_RELAXED))
          __atomic_store_n(Words + I, 0, __ATOMIC_RELAXED);
    }
  }

private:
  uint64_t Base, PageSize;
  std::vector<unsigned char> Resident;
};

} // namespace

Error Dispatcher::Impl::initLearning() {
  if (!Config.Adaptive.Enabled)
    return Error::success();
  const AdaptiveConfig &A = Config.Adaptive;
  if (!SelectorReg)
    return createStringError(
        "adaptive dispatch needs images laid out directly (x86-64, "
        "ImageLowering::Auto, no RegisterWithDebugger, the selector in a "
        "register)");
  if (!isPowerOf2_32(A.FallbackSamples) || A.FallbackSamples > 4096)
    return createStringError(formatv("AdaptiveConfig::FallbackSamples must "
                                     "be a power of two up to 4096, not {0}",
                                     A.FallbackSamples));
  if (!(A.PromoteShare > 0 && A.PromoteShare <= 1) || A.Hysteresis < 0 ||
      A.Window.count() <= 0 || A.Period.count() <= 0 || A.MaxPeriod < A.Period)
    return createStringError(
        "AdaptiveConfig needs a PromoteShare in (0, 1], a Hysteresis of at "
        "least 0, a Window and a Period above 0 and a MaxPeriod of at least "
        "the Period");
  if (A.SampleSkip && (A.SampleBurst == 0 || A.SampleBurst > (1u << 30) ||
                       A.SampleSkip > (1u << 30)))
    return createStringError(
        formatv("AdaptiveConfig::SampleBurst must be 1 to 2^30 and "
                "SampleSkip 0 to 2^30, not {0} and {1}",
                A.SampleBurst, A.SampleSkip));
  if (A.TriggerPoll.count() != 0 &&
      (A.TriggerPoll < std::chrono::microseconds(100) ||
       A.TriggerPoll > std::chrono::seconds(60)))
    return createStringError(
        formatv("AdaptiveConfig::TriggerPoll must be 0 (no trigger) or "
                "100 us to 60 s, not {0} us",
                A.TriggerPoll.count()));
  auto Within = [](std::chrono::microseconds T) {
    return T >= std::chrono::microseconds(10) && T <= std::chrono::seconds(60);
  };
  if (!Within(A.SampleOn) || (A.SampleOff.count() != 0 && !Within(A.SampleOff)))
    return createStringError(
        formatv("AdaptiveConfig::SampleOn must be 10 us to 60 s and "
                "SampleOff 0 or 10 us to 60 s, not {0} us and {1} us",
                A.SampleOn.count(), A.SampleOff.count()));
  long CPUs = sysconf(_SC_NPROCESSORS_CONF);
  X86CountingPlan Plan;
  Plan.NumBlocks = static_cast<uint32_t>(
      std::min<uint64_t>(PowerOf2Ceil(std::max<long>(CPUs, 1)), 1024));
  Plan.RingSlots = A.FallbackSamples;
  Plan.MaxCases = Config.Capacity + A.MaxPromoted;
  Plan.BlockBytes =
      X86CountingPlan::blockBytesFor(Plan.MaxCases, Plan.RingSlots);
  Plan.useCheapestCPUSource();
  if (!A.UseRSeq && Plan.CPU == X86CountingPlan::CPUSource::RSeq)
    Plan.CPU = X86CountingPlan::hostHasRDPID()
                   ? X86CountingPlan::CPUSource::RDPID
                   : X86CountingPlan::CPUSource::LSL;
  Plan.SampleSkip = A.SampleSkip;
  Plan.SampleBurst = A.SampleSkip ? A.SampleBurst : 0;
  CounterBytes = size_t(Plan.NumBlocks) * Plan.BlockBytes;
  // The gate's byte has a cache line of its own after the blocks: callers
  // read it, only the learner writes it.
  bool Gated = A.Background && A.SampleOff.count() > 0;
  if (Gated)
    CounterBytes += 64;
  // Private, writable, never executable: only the images' counting code
  // writes it. Reserved, not committed: a page costs memory once a CPU's
  // calls count in it.
  void *Memory = mmap(nullptr, CounterBytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (Memory == MAP_FAILED)
    return createStringError("cannot map the learning counters: " +
                             errnoAsErrorCode().message());
  CounterMemory = Memory;
  Plan.Base = reinterpret_cast<uint64_t>(Memory);
  if (Gated)
    Plan.Gate = Plan.Base + uint64_t(Plan.NumBlocks) * Plan.BlockBytes;
  CountingPlan = Plan;
  if (A.Background)
    Learner::get().add(this, A.Period);
  return Error::success();
}

DispatchLayout Dispatcher::Impl::plainLayout(ArrayRef<LayoutCase> Cases) const {
  std::vector<LayoutCase> Unweighted;
  for (const LayoutCase &C : Cases)
    Unweighted.push_back({C.Key, 0});
  LayoutOptions Options;
  Options.RetpolineFallback = Config.RetpolineFallback;
  return DispatchLayout::choose(Unweighted, Options, costModel());
}

uint64_t Dispatcher::Impl::steadyFallbackCalls() const {
  if (!CountingPlan)
    return 0;
  TouchedPages Touched(CounterMemory, CounterBytes, &CounterPagesSeen,
                       &CounterPagesMutex);
  uint64_t Sum = 0;
  for (uint32_t B = 0; B < CountingPlan->NumBlocks; ++B)
    Sum += Touched.load(CountingPlan->Base +
                        uint64_t(B) * CountingPlan->BlockBytes +
                        X86CountingPlan::steadyFallbackCounter());
  return Sum;
}

void Dispatcher::Impl::setGate(bool Open) {
  if (!CountingPlan || !CountingPlan->Gate)
    return;
  std::lock_guard<std::mutex> Lock(GateMutex);
  setGateLocked(Open);
}

bool Dispatcher::Impl::toggleGate() {
  std::lock_guard<std::mutex> Lock(GateMutex);
  setGateLocked(!GateOpen);
  return GateOpen;
}

void Dispatcher::Impl::setGateLocked(bool Open) {
  if (!CountingPlan || !CountingPlan->Gate)
    return;
  auto Now = Clock::now();
  if (GateOpen && !Open)
    GateOpenFor += Now - GateOpenedAt;
  if (Open && !GateOpen)
    GateOpenedAt = Now;
  GateOpen = Open;
  __atomic_store_n(reinterpret_cast<uint8_t *>(CountingPlan->Gate),
                   uint8_t(Open), __ATOMIC_RELAXED);
}

Dispatcher::Impl::Clock::duration Dispatcher::Impl::stopCounting() {
  if (!CountingPlan || !CountingPlan->Gate)
    return Clock::now() - WindowStart;
  std::lock_guard<std::mutex> Lock(GateMutex);
  setGateLocked(false);
  return GateOpenFor;
}

uint64_t Dispatcher::Impl::counterResidentBytes() const {
  return CounterMemory
             ? TouchedPages(CounterMemory, CounterBytes).residentBytes()
             : 0;
}

void Dispatcher::Impl::freeLearning() {
  if (Config.Adaptive.Enabled && Config.Adaptive.Background)
    Learner::get().remove(this);
  if (CounterMemory)
    munmap(CounterMemory, CounterBytes);
  CounterMemory = nullptr;
}

Error Dispatcher::Impl::beginLearning() {
  uint64_t Serial = 0;
  {
    std::lock_guard<std::mutex> Lock(UpdateMutex);
    if (!CountingPlan)
      return createStringError(
          formatv("dispatcher '{0}' has no adaptive dispatch to learn with",
                  Config.Name));
    if (Learning)
      return createStringError(formatv(
          "dispatcher '{0}' has a learning window open already", Config.Name));
    // A caller still in the last window's image may add a count or two.
    // The learner's trigger reads the steady fallback counters meanwhile,
    // so the words are cleared as they are read: atomically.
    TouchedPages(CounterMemory, CounterBytes, &CounterPagesSeen,
                 &CounterPagesMutex)
        .clear();
    {
      // Shut (the clear wrote 0) until the counting image is live: the
      // learner then opens it and keeps its time.
      std::lock_guard<std::mutex> GateLock(GateMutex);
      GateOpen = false;
      GateOpenFor = Clock::duration();
    }
    Serial = ++WindowSerial;
    Learning = true;
    WindowStart = Clock::now();
  }
  if (Error E = update(ProgramSet::Batch(), /*Force=*/true)) {
    std::lock_guard<std::mutex> Lock(UpdateMutex);
    Learning = false;
    return E;
  }
  if (CountingPlan->Gate)
    Learner::get().sampleWindow(this, Serial, /*Open=*/true);
  return Error::success();
}

Expected<LearningReport> Dispatcher::Impl::endLearning() {
  LearningReport R;
  // The state before, for a failed update to restore.
  bool Changed = false;
  std::vector<uint64_t> OldPromoted;
  DenseMap<uint64_t, uint64_t> OldLearned;
  uint64_t OldFallback = 0;
  double OldPredictability = 0;
  bool OldPlain = false;
  uint64_t Serial = 0;
  {
    std::lock_guard<std::mutex> Lock(UpdateMutex);
    if (!Learning)
      return createStringError(
          formatv("dispatcher '{0}' has no learning window open", Config.Name));
    OldPromoted = Promoted;
    OldLearned = Learned;
    OldFallback = LearnedFallback;
    OldPredictability = LearnedPredictability;
    OldPlain = LearnedPlain;
    Serial = WindowSerial;
    // The time counted, with the gate shut from here: the counts read
    // below are of that time.
    double Seconds = std::chrono::duration<double>(stopCounting()).count();
    const X86CountingPlan &Plan = *CountingPlan;
    // What the counting image counted: its cases in order, the fallback,
    // and a sample of the fallback's selectors.
    ArrayRef<ImageCase> Cases =
        Live.Counting ? ArrayRef<ImageCase>(Live.Cases) : ArrayRef<ImageCase>();
    size_t N = Cases.size();
    std::vector<uint64_t> Counts(N);
    DenseMap<uint64_t, uint64_t> Sampled;
    uint64_t Samples = 0, Predicted = 0;
    TouchedPages Touched(CounterMemory, CounterBytes, &CounterPagesSeen,
                         &CounterPagesMutex);
    for (uint32_t B = 0; B < Plan.NumBlocks; ++B) {
      uint64_t Block = Plan.Base + uint64_t(B) * Plan.BlockBytes;
      for (size_t C = 0; C < N; ++C)
        Counts[C] += Touched.load(Block + X86CountingPlan::caseCounter(C));
      Predicted += Touched.load(Block + X86CountingPlan::predictedCounter());
      uint64_t F = Touched.load(Block + X86CountingPlan::fallbackCounter());
      R.FallbackCalls += F;
      for (uint64_t K = 0; K < std::min<uint64_t>(F, Plan.RingSlots); ++K) {
        uint64_t Sel = Touched.load(Block + Plan.ringSlot(uint32_t(K)));
        ++Sampled[Sel];
        ++Samples;
      }
    }
    for (uint64_t C : Counts)
      R.CaseCalls += C;
    uint64_t Total = R.CaseCalls + R.FallbackCalls;
    double Threshold = Config.Adaptive.PromoteShare * double(Total);

    // Demote promoted targets that went cold (below half the threshold).
    DenseMap<uint64_t, uint64_t> CountOf;
    for (size_t C = 0; C < N; ++C)
      CountOf[Cases[C].Key] = Counts[C];
    std::vector<uint64_t> Kept;
    for (uint64_t P : Promoted) {
      if (Set.contains(P))
        continue; // registered since: a program, not a promotion
      if (double(CountOf.lookup(P)) * 2 >= Threshold)
        Kept.push_back(P);
      else
        R.Demoted.push_back(P);
    }
    // Promote the fallback's hot targets: each sampled selector stands for
    // its share of the fallback's calls.
    std::vector<std::pair<uint64_t, uint64_t>> Hot;
    for (auto &[Sel, Seen] : Sampled) {
      uint64_t Estimate = Samples ? R.FallbackCalls * Seen / Samples : 0;
      bool Own = Entry && Sel >= Entry->address() &&
                 Sel < Entry->address() + Entry->span();
      if (Sel == 0 || Own || Set.contains(Sel) || is_contained(Kept, Sel) ||
          double(Estimate) < Threshold || !Linker->reaches(Sel))
        continue;
      Hot.push_back({Sel, Estimate});
    }
    llvm::sort(Hot, [](auto &L, auto &R) {
      return L.second != R.second ? L.second > R.second : L.first < R.first;
    });
    uint64_t PromotedCalls = 0;
    for (auto &[Sel, Estimate] : Hot) {
      if (Kept.size() >= Config.Adaptive.MaxPromoted)
        break;
      Kept.push_back(Sel);
      R.Promoted.push_back(Sel);
      CountOf[Sel] = Estimate;
      PromotedCalls += Estimate;
    }

    // The counts as weights, by address: every case of the next image.
    DenseMap<uint64_t, uint64_t> NewLearned;
    std::vector<LayoutCase> NewCases, OldCases;
    for (const ProgramEntry &P : Set.entries()) {
      NewLearned[P.Address] = CountOf.lookup(P.Address);
      NewCases.push_back({P.Address, CountOf.lookup(P.Address)});
      OldCases.push_back({P.Address, Learned.lookup(P.Address)});
    }
    for (uint64_t P : Kept)
      if (!Set.contains(P)) {
        NewLearned[P] = CountOf.lookup(P);
        NewCases.push_back({P, CountOf.lookup(P)});
        OldCases.push_back({P, Learned.lookup(P)});
      }
    uint64_t NewFallback =
        R.FallbackCalls - std::min(R.FallbackCalls, PromotedCalls);
    // How much better than independent draws the previous call predicted
    // the next: its hit rate above what draws of these shares would give
    // (the sum of their squares), as a share of what is left to predict.
    double Independent = 0;
    for (uint64_t C : Counts)
      if (R.CaseCalls)
        Independent +=
            double(C) * double(C) / (double(R.CaseCalls) * double(R.CaseCalls));
    double Hit = R.CaseCalls ? double(Predicted) / double(R.CaseCalls) : 0;
    R.Predictability =
        Independent < 1
            ? std::clamp((Hit - Independent) / (1 - Independent), 0.0, 1.0)
            : 0;
    LayoutOptions Options;
    Options.RetpolineFallback = Config.RetpolineFallback;
    Options.AllowFallbackOnly = true;
    Options.FallbackWeight = NewFallback;
    Options.Predictability = R.Predictability;
    const LayoutCostModel &Model = costModel();
    DispatchLayout Next = DispatchLayout::choose(NewCases, Options, Model);
    // The layout a plain dispatcher of these cases has (no counts): kept
    // unless the counts' layout is predicted cheaper by the hysteresis for
    // the calls just counted. Where the model cannot tell two layouts
    // apart it does not know which one the CPU runs faster, and the plain
    // one is what the host would have had without adaptive dispatch.
    double H = Config.Adaptive.Hysteresis;
    double PlainCost =
        plainLayout(NewCases).costUnder(NewCases, Options, Model);
    bool NewPlain = !(Next.predictedCost() < PlainCost * (1 - H));
    double NewCost = NewPlain ? PlainCost : Next.predictedCost();
    // Hysteresis: keep the current layout unless the set of cases changed
    // or the new one is predicted enough cheaper for the same calls.
    LayoutOptions OldOptions = Options;
    OldOptions.FallbackWeight = LearnedFallback;
    OldOptions.Predictability = LearnedPredictability;
    double Keep =
        (LearnedPlain ? plainLayout(OldCases)
                      : DispatchLayout::choose(OldCases, OldOptions, Model))
            .costUnder(NewCases, Options, Model);
    bool NewSet = !R.Promoted.empty() || !R.Demoted.empty();
    if (NewSet || Learned.empty() || NewCost < Keep * (1 - H)) {
      Changed = true;
      Learned = std::move(NewLearned);
      LearnedFallback = NewFallback;
      LearnedPredictability = R.Predictability;
      LearnedPlain = NewPlain;
    }
    Promoted = std::move(Kept);
    // The fallback's calls the next image leaves there, per second: the
    // trigger's baseline.
    const AdaptiveConfig &A = Config.Adaptive;
    double Scale =
        A.SampleSkip ? double(A.SampleSkip + A.SampleBurst) / A.SampleBurst : 1;
    FallbackRateSeen.store(Seconds > 0 ? double(NewFallback) * Scale / Seconds
                                       : 0,
                           std::memory_order_relaxed);
    LastCounts.clear();
    for (size_t C = 0; C < N; ++C)
      LastCounts.push_back({Cases[C].Key, Counts[C]});
    LastFallback = R.FallbackCalls;
    Learning = false;
    ++LearningWindows;
  }
  R.LayoutChanged = Changed;
  if (Error E = update(ProgramSet::Batch(), /*Force=*/true)) {
    std::lock_guard<std::mutex> Lock(UpdateMutex);
    Promoted = std::move(OldPromoted);
    Learned = std::move(OldLearned);
    LearnedFallback = OldFallback;
    LearnedPredictability = OldPredictability;
    LearnedPlain = OldPlain;
    Learning = true;
    --LearningWindows; // it did not close
    return std::move(E);
  }
  if (CountingPlan->Gate)
    Learner::get().sampleWindow(this, Serial, /*Open=*/false);
  std::lock_guard<std::mutex> Lock(UpdateMutex);
  R.Layout = Live ? Live.Layout : "none";
  R.PredictedCost = Live ? Live.PredictedCost : 0;
  return R;
}

} // namespace dispatchgen
