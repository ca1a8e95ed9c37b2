//===- CallCost.cpp - The cost of one call, dispatcher and peers ----------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Google Benchmark's view of `dispatch-gen bench`'s call-cost table: one
// case call/<variant>/<pattern>/N:<n> per variant (direct, indirect,
// retpoline, dispatcher, dispatcher+weights, sorted-tree, adaptive),
// pattern (one-hot, round-robin, uniform, zipf, unregistered, phase) and N.
// The adaptive dispatcher learns as in the CLI (CallLoopSet::learn()), but
// a case's iterations cross a phase of `phase` only after 10^7 calls. Each
// iteration runs the variant's JIT-compiled caller loop (bench::CallLoopSet,
// Benchmark.h) for CallsPerIteration calls; the counter ns_per_call is the time
// per call. The loops, programs and dispatchers are the library's, so these
// figures and the CLI's come from the same code.
//
// Pick cases with --benchmark_filter, e.g. 'call/.*/zipf/N:48$'.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Benchmark.h"

#include "llvm/Support/FormatVariadic.h"

#include "benchmark/benchmark.h"

#include <chrono>
#include <map>
#include <memory>
#include <string>

using namespace dispatchgen;
using namespace dispatchgen::bench;
using namespace llvm;

namespace {

constexpr uint64_t CallsPerIteration = 1u << 16;
constexpr size_t PatternLength = 1u << 16;

/// One CallLoopSet per N, made on first use and kept: each costs a JIT
/// session and N compiled programs.
Expected<CallLoopSet &> loopSet(unsigned N) {
  static std::map<unsigned, std::unique_ptr<CallLoopSet>> Sets;
  auto It = Sets.find(N);
  if (It == Sets.end()) {
    auto S = CallLoopSet::create(N);
    if (!S)
      return S.takeError();
    It = Sets.emplace(N, std::move(*S)).first;
  }
  return *It->second;
}

void callCost(benchmark::State &State, CallVariant V, Pattern P, unsigned N) {
  auto Set = loopSet(N);
  if (!Set)
    return State.SkipWithError(toString(Set.takeError()).c_str());
  if (Error E = Set->setSequence(makeSequence(P, N, PatternLength)))
    return State.SkipWithError(toString(std::move(E)).c_str());
  if (Error E = Set->learn(CallsPerIteration))
    return State.SkipWithError(toString(std::move(E)).c_str());
  if (Error E = Set->check(PatternLength))
    return State.SkipWithError(toString(std::move(E)).c_str());
  uint64_t Sum = 0;
  std::chrono::duration<double, std::nano> Spent{0};
  for (auto _ : State) {
    auto Start = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(Sum += Set->run(V, CallsPerIteration));
    Spent += std::chrono::steady_clock::now() - Start;
  }
  State.counters["ns_per_call"] =
      Spent.count() / (State.iterations() * CallsPerIteration);
}

} // namespace

int main(int Argc, char **Argv) {
  // The loops call through live dispatchers: the thread is an RCU reader.
  RCUReaderThread Reader(RCUFlavor::Memb);
  for (unsigned N : CallCostOptions().Ns)
    for (Pattern P : AllPatterns)
      for (CallVariant V : AllVariants) {
        std::string Name =
            formatv("call/{0}/{1}/N:{2}", variantName(V), patternName(P), N)
                .str();
        benchmark::RegisterBenchmark(Name.c_str(), callCost, V, P, N);
      }
  benchmark::Initialize(&Argc, Argv);
  if (benchmark::ReportUnrecognizedArguments(Argc, Argv))
    return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
