//===- UpdateLatency.cpp - Update latency of a live dispatcher ------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// How long Dispatcher::change() takes on a dispatcher holding N programs,
// for N in {1, 48, 1024, 4096}, in both reclamation modes:
//
//  * update/async/N:<N>: ReclaimMode::Asynchronous. change() regenerates
//    the image (IR, codegen, JITLink into the inactive JITDylib), patches
//    the entry and queues the old image with call_rcu: the latency a caller
//    of change() sees, without the grace period. The old image is freed on
//    liburcu's call_rcu thread, which competes for the same cores.
//  * update/sync/N:<N>: ReclaimMode::Synchronous. The same, plus the
//    grace period (synchronize_rcu) and the free of the old image. No
//    thread is inside a read-side critical section meanwhile, so this is
//    the grace period's floor.
//
// The programs and the swaps are bench::UpdateDriver's (Benchmark.h), as in
// `dispatch-gen bench`: N + 1 stubs `mov $imm32, %eax; ret` in one
// executable block of this process, the dispatcher placed near them; the set
// starts with stubs 0..N-1 (one batch); each iteration swaps one registered
// stub for the one outside the set, so the image is regenerated every time.
// The first few swaps are run untimed (warm caches, first-use paths).
//
// Each iteration is one change(), timed with the wall clock around the
// call (manual time: the reported Time is the mean). Counters, in
// microseconds over the iterations of a run:
//   p50_us, max_us   median and maximum of change()
//   p99_us           99th percentile (nearest rank) of change(), only from
//                    at least MinP99Samples (200) iterations
//   regen_us         median of DispatcherStatus::LastUpdateLatency: build,
//                    link and patch as the dispatcher times it
//   retire_us        median of DispatcherStatus::LastGracePeriod: the
//                    grace period and the free (sync), or the call_rcu
//                    enqueue (async)
//   live_images_max  most JIT allocations alive after an update: 2 when
//                    frees keep up (the empty image and the live one),
//                    more while call_rcu lags behind (async)
// Every iteration checks that the generation advanced by one; calls
// through the entry are checked before and after the timed loop.
//
// Iteration counts are fixed per N, at least 200 for a p99, so the whole
// default run stays well under a minute on two shared cores;
// --benchmark_filter picks one case, --benchmark_repetitions=K repeats it.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Benchmark.h"
#include "dispatch-gen/Dispatcher.h"

#include "llvm/Support/FormatVariadic.h"

#include "benchmark/benchmark.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

using namespace dispatchgen;
using namespace dispatchgen::bench;
using namespace llvm;

namespace {

using Clock = std::chrono::steady_clock;
constexpr unsigned MaxPrograms = UpdateDriver::MaxPrograms;
constexpr unsigned WarmupUpdates = 3;

double toUs(std::chrono::nanoseconds D) { return D.count() / 1e3; }

void updateLatency(benchmark::State &State, unsigned N, ReclaimMode Mode) {
  auto UOrErr = UpdateDriver::create(N, Mode);
  if (!UOrErr)
    return State.SkipWithError(toString(UOrErr.takeError()).c_str());
  UpdateDriver &U = **UOrErr;
  Dispatcher &D = U.dispatcher();
  for (unsigned I = 0; I < WarmupUpdates; ++I)
    if (Error E = U.swap())
      return State.SkipWithError(toString(std::move(E)).c_str());
  if (Error E = U.checkCalls())
    return State.SkipWithError(toString(std::move(E)).c_str());

  std::vector<double> TotalUs, RegenUs, RetireUs;
  uint64_t LiveMax = 0;
  for (auto _ : State) {
    uint64_t Gen = D.status().Generation;
    auto Start = Clock::now();
    Error E = U.swap();
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
  }
  if (State.error_occurred())
    return;
  if (Error E = U.checkCalls())
    return State.SkipWithError(toString(std::move(E)).c_str());

  State.counters["p50_us"] = percentile(TotalUs, 0.50);
  if (TotalUs.size() >= MinP99Samples)
    State.counters["p99_us"] = percentile(TotalUs, 0.99);
  State.counters["max_us"] = percentile(TotalUs, 1.0);
  State.counters["regen_us"] = percentile(RegenUs, 0.50);
  State.counters["retire_us"] = percentile(RetireUs, 0.50);
  State.counters["live_images_max"] = static_cast<double>(LiveMax);
}

/// Enough updates for a p99 at every N, more where they are cheap.
int64_t iterationsFor(unsigned N) { return N <= 48 ? 300 : MinP99Samples; }

} // namespace

int main(int Argc, char **Argv) {
  for (ReclaimMode Mode : {ReclaimMode::Asynchronous, ReclaimMode::Synchronous})
    for (unsigned N : {1u, 48u, 1024u, MaxPrograms}) {
      std::string Name =
          formatv("update/{0}/N:{1}",
                  Mode == ReclaimMode::Asynchronous ? "async" : "sync", N)
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
