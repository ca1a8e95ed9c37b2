//===- UpdateLatency.cpp - Update latency of a live dispatcher ------------===//
//
// Part of dispatch-gen.
//
//===----------------------------------------------------------------------===//
//
// How long Dispatcher::change() takes on a dispatcher holding N programs,
// for N in {1, 48, 1024, 4096}, in both reclamation modes:
//
//  * update/async/N:<N>: ReclaimMode::RM_Asynchronous. change() regenerates
//    the image (IR, codegen, JITLink into the inactive JITDylib), patches
//    the entry and queues the old image with call_rcu: the latency a caller
//    of change() sees, without the grace period. The old image is freed on
//    liburcu's call_rcu thread, which competes for the same cores.
//  * update/sync/N:<N>: ReclaimMode::RM_Synchronous. The same, plus the
//    grace period (synchronize_rcu) and the free of the old image. No
//    thread is inside a read-side critical section meanwhile, so this is
//    the grace period's floor.
//
// The programs are N + 1 stubs `mov $imm32, %eax; ret` in one executable
// block of this process, 16 bytes apart; the dispatcher is placed near the
// block (DispatcherConfig::Near). The set starts with stubs 0..N-1 (one
// batch); each iteration swaps one registered stub for the one outside the
// set, so the membership changes and the image is regenerated every time.
// The first few swaps are run untimed (warm caches, first-use paths).
//
// Each iteration is one change(), timed with the wall clock around the
// call (manual time: the reported Time is the mean). Counters, in
// microseconds over the iterations of a run:
//   p50_us, p99_us   median and 99th percentile (nearest rank) of change()
//   regen_us         median of DispatcherStatus::LastUpdateLatency: build,
//                    link and patch as the dispatcher times it
//   retire_us        median of DispatcherStatus::LastGracePeriod: the
//                    grace period and the free (sync), or the call_rcu
//                    enqueue (async)
//   live_images_max  most JIT allocations alive after an update: 2 when
//                    frees keep up (the empty image and the live one),
//                    more while call_rcu lags behind (async)
// With fewer than 100 iterations (N >= 1024) p99 is the maximum.
// Every iteration checks that the generation advanced by one; calls
// through the entry are checked before and after the timed loop.
//
// Iteration counts are fixed per N so the whole default run stays well
// under a minute on two shared cores; --benchmark_filter picks one case,
// --benchmark_repetitions=K repeats it.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Dispatcher.h"

#include "llvm/Support/FormatVariadic.h"

#include "benchmark/benchmark.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

using namespace dispatchgen;
using namespace llvm;

namespace {

using Clock = std::chrono::steady_clock;
using Program = int (*)(int);
/// The entry of a dispatcher of signature "i32 (i32)" with no selector
/// argument: the program comes as a trailing parameter.
using EntryFn = int(int, Program);

constexpr unsigned MaxPrograms = 4096;
constexpr size_t StubSize = 16;
/// Stub I returns StubBase + I, so a misrouted call shows.
constexpr int StubBase = 1000000;
constexpr unsigned WarmupUpdates = 3;

/// MaxPrograms + 1 program stubs in one read+execute block; never unmapped.
/// Returns null when the block cannot be mapped.
const uint8_t *stubBlock() {
  static const uint8_t *Block = []() -> const uint8_t * {
    size_t PS = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    size_t Bytes = ((MaxPrograms + 1) * StubSize + PS - 1) / PS * PS;
    void *P = mmap(nullptr, Bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (P == MAP_FAILED)
      return nullptr;
    auto *Code = static_cast<uint8_t *>(P);
    std::memset(Code, 0xcc, Bytes); // int3 between the stubs
    for (unsigned I = 0; I <= MaxPrograms; ++I) {
      uint8_t *S = Code + I * StubSize;
      int32_t Imm = StubBase + static_cast<int32_t>(I);
      S[0] = 0xb8; // mov $imm32, %eax
      std::memcpy(S + 1, &Imm, sizeof(Imm));
      S[5] = 0xc3; // ret
    }
    if (mprotect(P, Bytes, PROT_READ | PROT_EXEC))
      return nullptr;
    return Code;
  }();
  return Block;
}

uint64_t stubAddress(unsigned I) {
  return reinterpret_cast<uint64_t>(stubBlock() + I * StubSize);
}

/// Calls through the entry with registered programs and with the one
/// outside the set (the fallback); empty on success. The thread is an RCU
/// reader only meanwhile, so it never holds up a grace period of the
/// timed updates.
std::string checkCalls(const Dispatcher &D, const std::vector<unsigned> &InSet,
                       unsigned Spare) {
  RCUReaderThread Reader(RCUFlavor::RF_Memb);
  auto *Entry = D.entryAs<EntryFn>();
  for (unsigned I :
       {InSet.front(), InSet[InSet.size() / 2], InSet.back(), Spare}) {
    int Got;
    {
      RCUReadGuard Guard;
      Got = Entry(0, reinterpret_cast<Program>(stubAddress(I)));
    }
    if (Got != StubBase + static_cast<int>(I))
      return formatv("a call of stub {0} returned {1}", I, Got).str();
  }
  return "";
}

double percentileUs(std::vector<double> &SamplesUs, double Fraction) {
  if (SamplesUs.empty())
    return 0;
  std::sort(SamplesUs.begin(), SamplesUs.end());
  auto Rank = static_cast<size_t>(std::ceil(Fraction * SamplesUs.size()));
  return SamplesUs[std::clamp<size_t>(Rank, 1, SamplesUs.size()) - 1];
}

double toUs(std::chrono::nanoseconds D) { return D.count() / 1e3; }

void updateLatency(benchmark::State &State, unsigned N, ReclaimMode Mode) {
  if (!stubBlock())
    return State.SkipWithError("cannot map the program stubs");

  DispatcherConfig C;
  C.Name = "bench_dispatch";
  C.Signature = "i32 (i32)";
  C.Capacity = N;
  C.Reclaim = Mode;
  C.Near = stubAddress(0);
  auto DOrErr = Dispatcher::create(std::move(C));
  if (!DOrErr)
    return State.SkipWithError(toString(DOrErr.takeError()).c_str());
  Dispatcher &D = **DOrErr;

  std::vector<unsigned> InSet;
  ProgramSet::Batch Initial;
  for (unsigned I = 0; I < N; ++I) {
    InSet.push_back(I);
    Initial.add(stubAddress(I));
  }
  unsigned Spare = N;
  if (Error E = D.apply(Initial))
    return State.SkipWithError(toString(std::move(E)).c_str());
  if (D.status().DirectTargets != N)
    return State.SkipWithError("not every program is reached directly");

  // Swaps the Slot-th registered stub with the spare one.
  auto Swap = [&](size_t Slot) -> Error {
    if (Error E = D.change(stubAddress(InSet[Slot]), stubAddress(Spare)))
      return E;
    std::swap(InSet[Slot], Spare);
    return Error::success();
  };
  for (unsigned I = 0; I < WarmupUpdates; ++I)
    if (Error E = Swap(I % N))
      return State.SkipWithError(toString(std::move(E)).c_str());
  std::string Problem = checkCalls(D, InSet, Spare);
  if (!Problem.empty())
    return State.SkipWithError(Problem.c_str());

  std::vector<double> TotalUs, RegenUs, RetireUs;
  uint64_t LiveMax = 0;
  size_t Slot = 0;
  for (auto _ : State) {
    uint64_t Gen = D.status().Generation;
    auto Start = Clock::now();
    Error E = Swap(Slot);
    auto End = Clock::now();
    if (E) {
      State.SkipWithError(toString(std::move(E)).c_str());
      break;
    }
    State.SetIterationTime(std::chrono::duration<double>(End - Start).count());
    DispatcherStatus S = D.status();
    if (S.Generation != Gen + 1) {
      State.SkipWithError("an update did not regenerate the image");
      break;
    }
    TotalUs.push_back(
        std::chrono::duration<double, std::micro>(End - Start).count());
    RegenUs.push_back(toUs(S.LastUpdateLatency));
    RetireUs.push_back(toUs(S.LastGracePeriod));
    LiveMax = std::max(LiveMax, S.LiveAllocations);
    Slot = (Slot + 1) % N;
  }
  if (State.error_occurred())
    return;
  Problem = checkCalls(D, InSet, Spare);
  if (!Problem.empty())
    return State.SkipWithError(Problem.c_str());

  State.counters["p50_us"] = percentileUs(TotalUs, 0.50);
  State.counters["p99_us"] = percentileUs(TotalUs, 0.99);
  State.counters["regen_us"] = percentileUs(RegenUs, 0.50);
  State.counters["retire_us"] = percentileUs(RetireUs, 0.50);
  State.counters["live_images_max"] = static_cast<double>(LiveMax);
}

/// Enough updates for a stable median and a meaningful p99 where they are
/// cheap, fewer where each one compiles thousands of cases.
int64_t iterationsFor(unsigned N) {
  if (N <= 48)
    return 300;
  if (N <= 1024)
    return 40;
  return 10;
}

} // namespace

int main(int Argc, char **Argv) {
  for (ReclaimMode Mode :
       {ReclaimMode::RM_Asynchronous, ReclaimMode::RM_Synchronous})
    for (unsigned N : {1u, 48u, 1024u, MaxPrograms}) {
      std::string Name =
          formatv("update/{0}/N:{1}",
                  Mode == ReclaimMode::RM_Asynchronous ? "async" : "sync", N)
              .str();
      benchmark::RegisterBenchmark(Name.c_str(), updateLatency, N, Mode)
          ->Iterations(iterationsFor(N))
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  benchmark::Initialize(&Argc, Argv);
  if (benchmark::ReportUnrecognizedArguments(Argc, Argv))
    return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
