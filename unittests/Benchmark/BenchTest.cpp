//===- BenchTest.cpp - Tests of the benchmarks' pure parts ----------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Call patterns, statistics, reports and the call sequence the timed loops
// follow: the measurements themselves are benchmarks, and tests never assert
// timings.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Benchmark.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include "gtest/gtest.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <sstream>

using namespace dispatchgen;
using namespace dispatchgen::bench;

namespace {

TEST(PatternTest, OneHotSelectsOnlyTheFirstProgram) {
  std::vector<uint32_t> P = makePattern(Pattern::OneHot, 48, 1024);
  ASSERT_EQ(P.size(), 1024u);
  EXPECT_TRUE(
      std::all_of(P.begin(), P.end(), [](uint32_t X) { return X == 0; }));
}

TEST(PatternTest, RoundRobinVisitsEveryProgramInTurn) {
  std::vector<uint32_t> P = makePattern(Pattern::RoundRobin, 5, 12);
  EXPECT_EQ(P, (std::vector<uint32_t>{0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1}));
}

TEST(PatternTest, SameSeedGivesSamePattern) {
  for (Pattern Pt : {Pattern::Uniform, Pattern::Zipf}) {
    EXPECT_EQ(makePattern(Pt, 48, 4096, 7), makePattern(Pt, 48, 4096, 7));
    EXPECT_NE(makePattern(Pt, 48, 4096, 7), makePattern(Pt, 48, 4096, 8));
  }
}

TEST(PatternTest, UniformStaysInRangeAndCoversEveryProgram) {
  std::vector<uint32_t> P = makePattern(Pattern::Uniform, 16, 1u << 14);
  std::vector<uint64_t> F = frequencies(P, 16);
  for (uint64_t Count : F) {
    // Expected 1024 each; a fair draw is far inside these bounds.
    EXPECT_GT(Count, 800u);
    EXPECT_LT(Count, 1250u);
  }
}

TEST(PatternTest, UnregisteredSelectsOnlyTheFirstUnregisteredProgram) {
  constexpr unsigned N = 48;
  std::vector<uint32_t> P = makePattern(Pattern::Unregistered, N, 1024);
  ASSERT_EQ(P.size(), 1024u);
  EXPECT_TRUE(llvm::all_of(P, [](uint32_t X) { return X == N; }));
  // None of the registered programs.
  std::vector<uint64_t> F = frequencies(P, N);
  EXPECT_EQ(std::accumulate(F.begin(), F.end(), uint64_t(0)), 0u);
  CallSequence S = makeSequence(Pattern::Unregistered, N, 1024);
  EXPECT_EQ(S.CallsPerPhase, 0u);
  ASSERT_EQ(S.Phases.size(), 1u);
  EXPECT_EQ(S.Phases[0], P);
  EXPECT_EQ(S.at(0), N);
  EXPECT_EQ(S.at(5 * PhaseCalls + 17), N);
}

TEST(PatternTest, PhaseMovesTheHotTargetAmongUnregisteredPrograms) {
  constexpr unsigned N = 48;
  CallSequence S = makeSequence(Pattern::Phase, N, 1024);
  EXPECT_EQ(S.CallsPerPhase, PhaseCalls);
  ASSERT_EQ(S.Phases.size(), UnregisteredPrograms);
  // Every call of two full cycles and one more phase: one program per
  // phase, unregistered, another one after each boundary.
  std::vector<uint32_t> Hot;
  for (uint64_t K = 0; K < 2 * UnregisteredPrograms + 1; ++K) {
    uint64_t First = K * PhaseCalls;
    uint32_t X = S.at(First);
    EXPECT_GE(X, N) << "phase " << K;
    EXPECT_LT(X, N + UnregisteredPrograms) << "phase " << K;
    if (K)
      EXPECT_NE(X, Hot.back()) << "phase " << K;
    uint64_t Others = 0;
    for (uint64_t C = First; C < First + PhaseCalls; ++C)
      Others += S.at(C) != X;
    EXPECT_EQ(Others, 0u) << "phase " << K;
    Hot.push_back(X);
  }
  // The first cycle visits every unregistered program once, in order, and
  // the next ones repeat it.
  for (unsigned K = 0; K < UnregisteredPrograms; ++K)
    EXPECT_EQ(Hot[K], N + K);
  for (size_t K = UnregisteredPrograms; K < Hot.size(); ++K)
    EXPECT_EQ(Hot[K], Hot[K - UnregisteredPrograms]);
  // makePattern gives the first calls of the sequence, across a boundary.
  std::vector<uint32_t> P = makePattern(Pattern::Phase, 2, PhaseCalls + 4);
  CallSequence Two = makeSequence(Pattern::Phase, 2, 4);
  EXPECT_EQ(P.front(), 2u);
  EXPECT_EQ(P[PhaseCalls - 1], 2u);
  EXPECT_EQ(P[PhaseCalls], 3u);
  for (uint64_t C : {uint64_t(0), PhaseCalls - 1, PhaseCalls, PhaseCalls + 3})
    EXPECT_EQ(P[C], Two.at(C));
}

TEST(CallLoopSetTest, RunsGoOnFromWhereTheLastOneStopped) {
  // The loops call through live dispatchers.
  RCUReaderThread Reader(RCUFlavor::Memb);
  constexpr unsigned N = 4;
  auto Set = CallLoopSet::create(N);
  ASSERT_TRUE(static_cast<bool>(Set)) << llvm::toString(Set.takeError());
  // Phase's shape with short phases: N + 1, N + 2, then program 0.
  CallSequence S;
  S.CallsPerPhase = 1000;
  S.Phases = {std::vector<uint32_t>(8, N + 1), std::vector<uint32_t>(8, N + 2),
              std::vector<uint32_t>(8, 0)};
  ASSERT_FALSE(llvm::errorToBool((*Set)->setSequence(S)));
  // Every variant, the direct one included, agrees over all three phases
  // and the wrap back to the first.
  ASSERT_FALSE(llvm::errorToBool((*Set)->check(3500)));
  for (CallVariant V : AllVariants)
    EXPECT_EQ((*Set)->position(V), 3500u) << variantName(V).str();

  // Two loops that cross a boundary make the calls one loop makes.
  ASSERT_FALSE(llvm::errorToBool((*Set)->setSequence(S)));
  uint64_t Split = (*Set)->run(CallVariant::Indirect, 600);
  Split += (*Set)->run(CallVariant::Indirect, 900);
  EXPECT_EQ((*Set)->position(CallVariant::Indirect), 1500u);
  EXPECT_EQ((*Set)->position(CallVariant::Direct), 0u);
  ASSERT_FALSE(llvm::errorToBool((*Set)->setSequence(S)));
  EXPECT_EQ((*Set)->run(CallVariant::Indirect, 1500), Split);
  // ... and not those of the first phase forever.
  ASSERT_FALSE(llvm::errorToBool((*Set)->setPattern(S.Phases[0])));
  EXPECT_NE((*Set)->run(CallVariant::Indirect, 1500), Split);

  // Out of range: past the unregistered programs.
  S.Phases[2].assign(8, N + UnregisteredPrograms);
  EXPECT_TRUE(llvm::errorToBool((*Set)->setSequence(S)));
}

TEST(CallLoopSetTest, TheAdaptiveVariantPromotesTheHotUnregisteredTarget) {
  RCUReaderThread Reader(RCUFlavor::Memb);
  constexpr unsigned N = 4;
  auto Set = CallLoopSet::create(N);
  ASSERT_TRUE(static_cast<bool>(Set)) << llvm::toString(Set.takeError());
  ASSERT_FALSE(llvm::errorToBool(
      (*Set)->setSequence(makeSequence(Pattern::Unregistered, N, 1u << 12))));
  // A new dispatcher for the sequence: it has learned nothing yet.
  LearnedLayout Before = (*Set)->learned();
  EXPECT_EQ(Before.Windows, 0u);
  EXPECT_TRUE(Before.Promoted.empty());
  // One warm-up loop and three timed samples, all in the window, each of
  // as many loops as span five of the learner's on/off cycles.
  ASSERT_FALSE(llvm::errorToBool((*Set)->learn(1u << 14, 3)));
  uint64_t Calls = (*Set)->position(CallVariant::Adaptive);
  EXPECT_EQ(Calls % (3u << 14), 1u << 14);
  EXPECT_GE(Calls, 4u << 14);
  LearnedLayout L = (*Set)->learned();
  EXPECT_EQ(L.Windows, 1u);
  EXPECT_EQ(L.Promoted, std::vector<uint64_t>{(*Set)->programAddress(N)});
  EXPECT_EQ(L.Error, "");
  // Promoted, the hot target is the first compare of a hot scan.
  EXPECT_EQ(L.Layout, "hot-scan");
  EXPECT_GT(L.PredictedCost, 0);
  EXPECT_LT(L.PredictedCost, 20);
  // The window's calls were timed.
  EXPECT_GT(L.LearningNsPerCall, 0);
  EXPECT_EQ(Before.LearningNsPerCall, 0);
  // The learned image answers as the indirect call does, and so do the
  // others.
  ASSERT_FALSE(llvm::errorToBool((*Set)->check(4096)));

  // The next sequence gets a dispatcher of its own, which forgets.
  ASSERT_FALSE(llvm::errorToBool(
      (*Set)->setSequence(makeSequence(Pattern::RoundRobin, N, 1u << 12))));
  EXPECT_TRUE((*Set)->learned().Promoted.empty());
  ASSERT_FALSE(llvm::errorToBool((*Set)->learn(1u << 14)));
  EXPECT_TRUE((*Set)->learned().Promoted.empty());
  ASSERT_FALSE(llvm::errorToBool((*Set)->check(4096)));
}

TEST(CallLoopSetTest, TheAdaptiveVariantFollowsAMovingTargetInTheBackground) {
  RCUReaderThread Reader(RCUFlavor::Memb);
  constexpr unsigned N = 4;
  auto Set = CallLoopSet::create(N);
  ASSERT_TRUE(static_cast<bool>(Set)) << llvm::toString(Set.takeError());
  // Phase's shape with shorter phases: N, then N + 1, for 2^24 calls each.
  CallSequence S;
  S.CallsPerPhase = 1u << 24;
  S.Phases = {std::vector<uint32_t>(8, N), std::vector<uint32_t>(8, N + 1)};
  ASSERT_FALSE(llvm::errorToBool((*Set)->setSequence(S)));
  // The host does not learn: the background learner does, while called.
  ASSERT_FALSE(llvm::errorToBool((*Set)->learn(1u << 14)));
  EXPECT_EQ((*Set)->position(CallVariant::Adaptive), 0u);
  // Calls until the hot target of the phase is promoted, phase after
  // phase (a generous deadline: the machine may be loaded).
  for (uint32_t Hot : {N, N + 1, N}) {
    uint64_t Phase = (*Set)->position(CallVariant::Adaptive) / S.CallsPerPhase;
    ASSERT_EQ(S.Phases[Phase % 2][0], Hot);
    auto Deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    bool Promoted = false;
    while (!Promoted && std::chrono::steady_clock::now() < Deadline &&
           (*Set)->position(CallVariant::Adaptive) / S.CallsPerPhase == Phase) {
      (*Set)->run(CallVariant::Adaptive, 1u << 14);
      Promoted = llvm::is_contained((*Set)->learned().Promoted,
                                    (*Set)->programAddress(Hot));
    }
    EXPECT_TRUE(Promoted) << "program " << Hot << " in phase " << Phase;
    // On to the next phase.
    uint64_t Pos = (*Set)->position(CallVariant::Adaptive);
    (*Set)->run(CallVariant::Adaptive, (Phase + 1) * S.CallsPerPhase - Pos);
  }
  LearnedLayout L = (*Set)->learned();
  EXPECT_GT(L.Windows, 1u);
  EXPECT_EQ(L.Error, "");
  ASSERT_FALSE(llvm::errorToBool((*Set)->check(1u << 16)));
}

TEST(ZipfTest, ProbabilitiesSumToOneAndFallAsRankToTheMinusS) {
  std::vector<double> P = zipfProbabilities(100, ZipfExponent);
  EXPECT_NEAR(std::accumulate(P.begin(), P.end(), 0.0), 1.0, 1e-12);
  EXPECT_NEAR(P[0] / P[1], std::pow(2.0, ZipfExponent), 1e-9);
  EXPECT_NEAR(P[0] / P[9], std::pow(10.0, ZipfExponent), 1e-9);
  EXPECT_TRUE(std::is_sorted(P.rbegin(), P.rend()));
}

TEST(ZipfTest, PatternFrequenciesFollowTheDistribution) {
  constexpr unsigned N = 48;
  constexpr size_t Length = 1u << 18;
  std::vector<uint64_t> F =
      frequencies(makePattern(Pattern::Zipf, N, Length), N);
  std::vector<uint64_t> Sorted = F;
  std::sort(Sorted.rbegin(), Sorted.rend());
  std::vector<double> P = zipfProbabilities(N, ZipfExponent);
  for (unsigned Rank : {0u, 1u, 4u, 20u})
    EXPECT_NEAR(static_cast<double>(Sorted[Rank]) / Length, P[Rank],
                0.1 * P[Rank])
        << "rank " << Rank + 1;
  // The hot programs are spread over the set, not the first ones.
  EXPECT_NE(std::max_element(F.begin(), F.end()) - F.begin(), 0);
}

TEST(FrequenciesTest, CountsEachIndexAndIgnoresOutOfRange) {
  EXPECT_EQ(frequencies({0, 2, 2, 7, 1, 2}, 3),
            (std::vector<uint64_t>{1, 1, 3}));
}

TEST(StatisticsTest, MedianOfOddAndEvenCounts) {
  EXPECT_EQ(median({}), 0);
  EXPECT_EQ(median({5}), 5);
  EXPECT_EQ(median({9, 1, 5}), 5);
  // The upper of the two middle samples.
  EXPECT_EQ(median({4, 1, 3, 2}), 3);
}

TEST(StatisticsTest, PercentileIsNearestRank) {
  std::vector<double> Samples(100);
  std::iota(Samples.begin(), Samples.end(), 1.0); // 1..100
  std::reverse(Samples.begin(), Samples.end());
  EXPECT_EQ(percentile(Samples, 0.99), 99);
  EXPECT_EQ(percentile(Samples, 0.50), 50);
  EXPECT_EQ(percentile(Samples, 1.0), 100);
  // With fewer than 100 samples p99 is the maximum.
  EXPECT_EQ(percentile({3, 1, 2}, 0.99), 3);
  EXPECT_EQ(percentile({}, 0.99), 0);
}

/// Report lines with their runs of spaces collapsed to one.
std::vector<std::string> reportLines(const Report &R) {
  std::string Text;
  llvm::raw_string_ostream OS(Text);
  printReport(R, OS);
  std::vector<std::string> Lines;
  std::istringstream In(Text);
  for (std::string Line; std::getline(In, Line);) {
    std::istringstream Words(Line);
    std::string Word, Joined;
    while (Words >> Word)
      Joined += (Joined.empty() ? "" : " ") + Word;
    Lines.push_back(Joined);
  }
  return Lines;
}

TEST(ModelFitTest, RecoversTheConstantsTheCallCostsWereMadeWith) {
  // Call costs made from known constants (one unit 0.5 ns, a predicted
  // test 0.3 units, a misprediction 18, an indirect one 16, entering a
  // dispatcher 0.2 ns): the fit gives the constants back, and none when
  // a measurement it needs is missing.
  const double Unit = 0.5, Compare = 0.3, Mispredict = 18, Indirect = 16;
  const double Direct = 0.5, Entry = 0.2;
  auto Terms = [](std::vector<uint64_t> Weights, bool Weighted) {
    std::vector<LayoutCase> Cases, Plain;
    for (size_t K = 0; K < Weights.size(); ++K) {
      Cases.push_back({0x100000 + 16 * K, Weights[K]});
      Plain.push_back({0x100000 + 16 * K, 0});
    }
    LayoutOptions O;
    O.RetpolineFallback = true;
    DispatchLayout::CallTerms T =
        DispatchLayout::choose(Weighted ? Cases : Plain, O)
            .termsUnder(Cases, O);
    return std::make_pair(T.Compares, T.Mispredicts);
  };
  std::vector<uint64_t> Hot2 = {1, 0}, Hot4096(4096, 0);
  Hot4096[0] = 1;
  auto [HotC2, HotM2] = Terms(Hot2, false);
  auto [HotC4096, HotM4096] = Terms(Hot4096, false);
  auto [ScanC, ScanM] = Terms(std::vector<uint64_t>(8, 1), true);
  EXPECT_EQ(HotM2 + HotM4096, 0);
  double Ns = Compare * Unit;
  std::vector<CallCost> Calls = {
      {4096, Pattern::OneHot, CallVariant::Retpoline, Direct + 20 * Unit},
      {4096, Pattern::OneHot, CallVariant::Direct, Direct},
      {2, Pattern::OneHot, CallVariant::Dispatcher,
       Direct + Entry + HotC2 * Ns},
      {4096, Pattern::OneHot, CallVariant::Dispatcher,
       Direct + Entry + HotC4096 * Ns},
      {8, Pattern::Uniform, CallVariant::Direct, Direct},
      {8, Pattern::Uniform, CallVariant::Weighted,
       Direct + Entry + ScanC * Ns + ScanM * Mispredict * Unit},
      {8, Pattern::OneHot, CallVariant::Indirect, 1.2},
      {8, Pattern::Uniform, CallVariant::Indirect,
       1.2 + 7.0 / 8 * Indirect * Unit},
  };
  std::optional<LayoutCostModel> M = fitCostModel(Calls);
  ASSERT_TRUE(M.has_value());
  EXPECT_NEAR(M->Compare, Compare, 1e-9);
  EXPECT_NEAR(M->Mispredict, Mispredict, 1e-9);
  EXPECT_NEAR(M->IndirectMispredict, Indirect, 1e-9);
  // The rest of the model is left as it was.
  EXPECT_EQ(M->Retpoline, LayoutCostModel().Retpoline);
  Calls.pop_back();
  EXPECT_FALSE(fitCostModel(Calls).has_value());
}

TEST(ReportTest, UpdateP99OnlyFromEnoughSamplesAndAlwaysTheCountAndMaximum) {
  Report R;
  R.Updates.push_back(
      {48, ReclaimMode::Asynchronous, MinP99Samples, 100, 900, 500.0});
  R.Updates.push_back(
      {4096, ReclaimMode::Synchronous, 10, 6000, 8000, std::nullopt});
  std::vector<std::string> Lines = reportLines(R);
  EXPECT_TRUE(llvm::is_contained(Lines, "mode N updates median p99 max"));
  EXPECT_TRUE(llvm::is_contained(Lines, "async 48 200 100.0 500.0 900.0"));
  EXPECT_TRUE(llvm::is_contained(Lines, "sync 4096 10 6000.0 - 8000.0"));

  std::string JSON;
  llvm::raw_string_ostream OS(JSON);
  writeJSON(R, OS);
  llvm::Expected<llvm::json::Value> V = llvm::json::parse(JSON);
  ASSERT_TRUE(static_cast<bool>(V)) << llvm::toString(V.takeError());
  const llvm::json::Array *Updates = V->getAsObject()->getArray("updates");
  ASSERT_TRUE(Updates && Updates->size() == 2);
  const llvm::json::Object &Many = *(*Updates)[0].getAsObject();
  const llvm::json::Object &Few = *(*Updates)[1].getAsObject();
  EXPECT_EQ(Many.getInteger("updates"), MinP99Samples);
  EXPECT_EQ(Many.getNumber("p99_us"), 500.0);
  EXPECT_EQ(Many.getNumber("max_us"), 900.0);
  EXPECT_EQ(Few.getInteger("updates"), 10);
  EXPECT_FALSE(Few.getNumber("p99_us"));
  EXPECT_EQ(Few.getNumber("max_us"), 8000.0);
}

TEST(ReportTest, NamesTheMachineAndTheSamplesOfTheCallCost) {
  Report R;
  R.Machine = MachineInfo{"Some CPU", 2, 0.25, "22.1.0", "RelWithDebInfo"};
  R.CallLoops = 21;
  R.CallsPerLoop = 1024;
  R.Calls = {{1, Pattern::OneHot, CallVariant::Direct, 1.0}};
  std::vector<std::string> Lines = reportLines(R);
  ASSERT_GE(Lines.size(), 3u);
  EXPECT_EQ(Lines[0], "machine: Some CPU, 2 CPUs, 1-minute load average 0.25 "
                      "before measuring; LLVM 22.1.0, RelWithDebInfo build");
  EXPECT_EQ(Lines[2], "call cost: ns per call (ratio to the direct call), "
                      "median of 21 timed loops of 1024 calls");

  std::string JSON;
  llvm::raw_string_ostream OS(JSON);
  writeJSON(R, OS);
  llvm::Expected<llvm::json::Value> V = llvm::json::parse(JSON);
  ASSERT_TRUE(static_cast<bool>(V)) << llvm::toString(V.takeError());
  const llvm::json::Object *Machine = V->getAsObject()->getObject("machine");
  ASSERT_TRUE(Machine);
  EXPECT_EQ(Machine->getString("cpu_model"), "Some CPU");
  EXPECT_EQ(Machine->getInteger("cpus"), 2);
  EXPECT_EQ(V->getAsObject()->getInteger("call_loops"), 21);
}

TEST(ReportTest, TheAdaptiveVariantsLayoutAndGoals) {
  Report R;
  R.CallLoops = 5;
  R.CallsPerLoop = 1024;
  R.PhaseCallsPerLoop = PhaseCalls;
  using CV = CallVariant;
  for (Pattern P : {Pattern::Uniform, Pattern::Phase}) {
    R.Calls.push_back({8, P, CV::Direct, 1.0});
    R.Calls.push_back({8, P, CV::Retpoline, 10.0});
    R.Calls.push_back({8, P, CV::Dispatcher, 2.0});
  }
  R.Calls.push_back({8, Pattern::Uniform, CV::Adaptive, 2.0,
                     LearnedLayout{"hot-scan", 3.5, 1, {}, "", 3.0}});
  R.Calls.push_back({8, Pattern::Phase, CV::Adaptive, 6.0,
                     LearnedLayout{"hot-scan", 1.0, 40, {0x1000}, ""}});
  std::vector<std::string> Lines = reportLines(R);
  EXPECT_TRUE(llvm::is_contained(
      Lines, "call cost: ns per call (ratio to the direct call), median of 5 "
             "timed loops of 1024 calls (10000000 calls for phase: one move "
             "of the hot target in each)"));
  EXPECT_TRUE(llvm::is_contained(Lines, "uniform 8 hot-scan 3.50 1 0 2.00 "
                                        "10.00 2.00 5.00x 3.00"));
  EXPECT_TRUE(llvm::is_contained(Lines, "phase 8 hot-scan 1.00 40 1 6.00 "
                                        "10.00 2.00 1.67x -"));
  // The window's calls (3.00 ns) against the dispatcher's (2.00 ns).
  EXPECT_TRUE(llvm::is_contained(
      Lines, "while a window is open, adaptive <= 2x the dispatcher: 1.50x "
             "at worst (uniform, N=8): met"));
  EXPECT_TRUE(llvm::is_contained(
      Lines, "uniform, N <= 8: adaptive >= 1.1x faster than the retpoline: "
             "5.00x at worst (N=8): met"));
  EXPECT_TRUE(llvm::is_contained(
      Lines, "phase, adaptive >= 2x faster than the retpoline: 1.67x at "
             "worst (N=8): NOT met"));
  EXPECT_TRUE(llvm::is_contained(
      Lines, "phase, where the dispatcher beats the retpoline, adaptive <= "
             "1.05x the dispatcher: 3.00x at worst (N=8): NOT met"));

  std::string JSON;
  llvm::raw_string_ostream OS(JSON);
  writeJSON(R, OS);
  llvm::Expected<llvm::json::Value> V = llvm::json::parse(JSON);
  ASSERT_TRUE(static_cast<bool>(V)) << llvm::toString(V.takeError());
  EXPECT_EQ(V->getAsObject()->getInteger("phase_calls_per_loop"),
            int64_t(PhaseCalls));
  const llvm::json::Array *Calls = V->getAsObject()->getArray("calls");
  ASSERT_TRUE(Calls && Calls->size() == R.Calls.size());
  const llvm::json::Object &Phase = *Calls->back().getAsObject();
  EXPECT_EQ(Phase.getString("variant"), "adaptive");
  EXPECT_EQ(Phase.getString("layout"), "hot-scan");
  EXPECT_EQ(Phase.getNumber("predicted_cost"), 1.0);
  EXPECT_EQ(Phase.getInteger("learning_windows"), 40);
  EXPECT_EQ(Phase.getInteger("promoted"), 1);
  // Only the adaptive variant learns.
  EXPECT_FALSE((*Calls)[0].getAsObject()->get("layout"));
}

TEST(MachineTest, DescribesThisMachine) {
  MachineInfo M = describeMachine();
  EXPECT_FALSE(M.CPUModel.empty());
  EXPECT_GE(M.CPUs, 1u);
  EXPECT_EQ(M.LLVMVersion.substr(0, 3), "22.");
}

} // namespace
