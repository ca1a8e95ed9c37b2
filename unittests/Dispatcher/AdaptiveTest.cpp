//===- AdaptiveTest.cpp - Tests for adaptive dispatch ---------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Learning windows (counting images), promotion and demotion of
// unregistered targets, the layout the counts choose, hysteresis, and the
// background learner under concurrent calls and updates.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Dispatcher.h"

#include "TestingSupport.h"
#include "dispatch-gen/DispatchLayout.h"
#include "dispatch-gen/Reclamation.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include "gtest/gtest.h"

#include <array>
#include <atomic>
#include <random>
#include <sched.h>
#include <thread>

#include <sys/wait.h>
#if __has_feature(address_sanitizer)
#include <sanitizer/lsan_interface.h>
#endif
#include <unistd.h>
#include <utility>

using namespace dispatchgen;
using namespace llvm;
using namespace dispatchgen::unittest;

namespace {

using Prog = int (*)(int);
using EntryFn = int(int, Prog);

constexpr int NumProgs = 64;

template <int N> __attribute__((noinline)) int prog(int X) {
  return N * 1000 + X;
}

template <int... Ns>
constexpr std::array<Prog, sizeof...(Ns)>
makeProgs(std::integer_sequence<int, Ns...>) {
  return {prog<Ns>...};
}
const std::array<Prog, NumProgs> Progs =
    makeProgs(std::make_integer_sequence<int, NumProgs>());

uint64_t addr(int I) { return reinterpret_cast<uint64_t>(Progs[I]); }

std::atomic<int> Releases{0};

DispatcherConfig adaptiveConfig(bool Background = false) {
  DispatcherConfig C;
  C.Name = "adaptive_dispatch";
  C.Signature = "i32 (i32)";
  C.Near = addr(0);
  C.VerifyImages = true;
  C.Adaptive.Enabled = true;
  C.Adaptive.Background = Background;
  // The layouts these tests expect are the default model's, on any CPU.
  C.CostModel = LayoutCostModel();
  // The host-driven tests count every call, to check exact counts; the
  // background ones sample as the default does.
  if (!Background)
    C.Adaptive.SampleSkip = 0;
  C.OnRelease = [](const ProgramEntry &) { ++Releases; };
  return C;
}

/// Makes every update of C's dispatcher fail ("injected fault") while the
/// returned flag is set.
std::shared_ptr<std::atomic<bool>> failWhileSet(DispatcherConfig &C) {
  auto Fail = std::make_shared<std::atomic<bool>>(false);
  C.InjectFault = [Fail](FaultPoint) -> Error {
    return *Fail ? createStringError("injected fault") : Error::success();
  };
  return Fail;
}

std::unique_ptr<Dispatcher> make(DispatcherConfig C) {
  auto D = Dispatcher::create(std::move(C));
  EXPECT_THAT(takeError(D), Succeeded());
  return D ? std::move(*D) : nullptr;
}

void expectOk(Error E) { EXPECT_THAT(takeError(std::move(E)), Succeeded()); }

class AdaptiveTest : public ::testing::Test {
protected:
  void SetUp() override { Releases = 0; }
  /// Calls program I through D Times times, checking each result.
  void call(const Dispatcher &D, int I, int Times) {
    RCUReadGuard Guard;
    auto *Entry = D.entryAs<EntryFn>();
    for (int K = 0; K < Times; ++K)
      ASSERT_EQ(Entry(K, Progs[I]), I * 1000 + K) << "program " << I;
  }
  uint64_t countOf(const DispatcherStatus &S, int I) {
    for (const auto &[Address, Count] : S.LearnedCounts)
      if (Address == addr(I))
        return Count;
    return 0;
  }
  RCUReaderThread Reader{RCUFlavor::Memb};
};

std::string dumpOf(const Dispatcher &D) {
  std::string Text;
  raw_string_ostream OS(Text);
  EXPECT_FALSE(!!D.dump(OS));
  return Text;
}

TEST_F(AdaptiveTest, AWindowCountsEachProgramAndTheLayoutFollows) {
  auto D = make(adaptiveConfig());
  ASSERT_TRUE(D);
  for (int I = 0; I < 4; ++I)
    expectOk(D->add(addr(I)));
  expectOk(D->beginLearning());
  EXPECT_TRUE(D->status().Learning);
  expectOk(D->verify());
  std::string Counting = dumpOf(*D);
  EXPECT_NE(Counting.find("learning (counting image)"), std::string::npos);
  call(*D, 2, 1000);
  call(*D, 1, 10);
  call(*D, 0, 1);
  call(*D, 3, 1);

  auto R = D->endLearning();
  ASSERT_TRUE(!!R) << toString(R.takeError());
  // One thread: exact, unless it was preempted between reading its CPU
  // number and counting (then a count may be lost).
  EXPECT_NEAR(double(R->CaseCalls), 1012, 2);
  EXPECT_EQ(R->FallbackCalls, 0u);
  EXPECT_TRUE(R->LayoutChanged);
  EXPECT_TRUE(R->Promoted.empty());
  DispatcherStatus S = D->status();
  EXPECT_FALSE(S.Learning);
  EXPECT_EQ(S.LearningWindows, 1u);
  EXPECT_NEAR(double(countOf(S, 2)), 1000, 2);
  EXPECT_NEAR(double(countOf(S, 1)), 10, 1);
  // One hot program: the hot prefix tests it first, at about a compare.
  EXPECT_EQ(S.Layout, "hot-scan");
  EXPECT_LT(S.PredictedCost, 2.0);
  EXPECT_EQ(S.DirectTargets, 4u);
  expectOk(D->verify());
  // The steady image has no counting code.
  std::string Steady = dumpOf(*D);
  for (const char *Op : {"rdpid", "lsl", "%fs", "inc"})
    EXPECT_EQ(Steady.find(Op), std::string::npos) << Op << "\n" << Steady;
  EXPECT_NE(Counting.find("inc"), std::string::npos) << Counting;
  for (int I = 0; I < 4; ++I)
    call(*D, I, 3);
}

TEST_F(AdaptiveTest, ASampledWindowCountsBurstsAndLearnsTheSame) {
  // The default samples: per CPU, 32 calls in a row counted, then about
  // 224 not. An unregistered hot target is still found and promoted, and
  // the layout follows the sample.
  DispatcherConfig C = adaptiveConfig();
  C.Adaptive.SampleSkip = AdaptiveConfig().SampleSkip;
  C.Adaptive.SampleBurst = AdaptiveConfig().SampleBurst;
  ASSERT_EQ(C.Adaptive.SampleBurst, 32u);
  ASSERT_EQ(C.Adaptive.SampleSkip, 224u);
  auto D = make(std::move(C));
  ASSERT_TRUE(D);
  for (int I = 0; I < 4; ++I)
    expectOk(D->add(addr(I)));
  cpu_set_t Old, One;
  sched_getaffinity(0, sizeof(Old), &Old);
  CPU_ZERO(&One);
  CPU_SET(sched_getcpu(), &One);
  ASSERT_EQ(sched_setaffinity(0, sizeof(One), &One), 0);
  expectOk(D->beginLearning());
  expectOk(D->verify());
  std::string Sampled = dumpOf(*D);
  EXPECT_NE(Sampled.find("dec"), std::string::npos) << Sampled;
  call(*D, 2, 4000);
  call(*D, 5, 6000);
  call(*D, 1, 256);
  auto R = D->endLearning();
  sched_setaffinity(0, sizeof(Old), &Old);
  ASSERT_TRUE(!!R) << toString(R.takeError());
  // About one call in 8 counted: the skips after each burst vary around
  // 224 (160 to 287).
  EXPECT_NEAR(double(R->CaseCalls), 4256 / 8.0, 4256 / 8.0 * 0.4);
  EXPECT_NEAR(double(R->FallbackCalls), 6000 / 8.0, 6000 / 8.0 * 0.4);
  ASSERT_EQ(R->Promoted.size(), 1u);
  EXPECT_EQ(R->Promoted[0], addr(5));
  DispatcherStatus S = D->status();
  EXPECT_NEAR(double(countOf(S, 2)), 4000 / 8.0, 4000 / 8.0 * 0.4);
  EXPECT_EQ(S.Layout, "hot-scan");
  expectOk(D->verify());
  for (int I : {0, 1, 2, 3, 5})
    call(*D, I, 3);
}

TEST_F(AdaptiveTest, AHotUnregisteredTargetIsPromotedAndReachedDirectly) {
  auto D = make(adaptiveConfig());
  ASSERT_TRUE(D);
  expectOk(D->add(addr(0)));
  expectOk(D->add(addr(1)));
  expectOk(D->beginLearning());
  call(*D, 5, 1000); // never registered: the fallback
  call(*D, 0, 10);
  auto R = D->endLearning();
  ASSERT_TRUE(!!R) << toString(R.takeError());
  EXPECT_NEAR(double(R->FallbackCalls), 1000, 2);
  ASSERT_EQ(R->Promoted.size(), 1u);
  EXPECT_EQ(R->Promoted[0], addr(5));
  DispatcherStatus S = D->status();
  ASSERT_EQ(S.Promoted.size(), 1u);
  EXPECT_EQ(S.Promoted[0], addr(5));
  EXPECT_EQ(S.Programs, 2u);
  // Registered and promoted alike are direct; verify() runs the image's
  // routes for each (a promoted one must leave by a jump to itself).
  EXPECT_EQ(S.DirectTargets, 2u);
  expectOk(D->verify());
  std::vector<ProgramEntry> All = D->programs();
  ASSERT_EQ(All.size(), 3u);
  EXPECT_EQ(All.back().Address, addr(5));
  EXPECT_TRUE(All.back().Promoted);
  EXPECT_EQ(All.back().Users, 0u);
  EXPECT_NE(dumpOf(*D).find(formatv("promoted {0:x}", addr(5)).str()),
            std::string::npos);
  call(*D, 5, 10);
  call(*D, 1, 10);
  // Promoted targets hold no reference: only the two registered programs
  // are released.
  D.reset();
  EXPECT_EQ(Releases.load(), 2);
}

TEST_F(AdaptiveTest, ACooledPromotedTargetIsDemoted) {
  auto D = make(adaptiveConfig());
  ASSERT_TRUE(D);
  expectOk(D->add(addr(0)));
  expectOk(D->beginLearning());
  call(*D, 7, 500);
  auto First = D->endLearning();
  ASSERT_TRUE(!!First) << toString(First.takeError());
  ASSERT_EQ(First->Promoted.size(), 1u);
  // The call site moves on: program 7 is no longer called.
  expectOk(D->beginLearning());
  call(*D, 0, 500);
  auto Second = D->endLearning();
  ASSERT_TRUE(!!Second) << toString(Second.takeError());
  ASSERT_EQ(Second->Demoted.size(), 1u);
  EXPECT_EQ(Second->Demoted[0], addr(7));
  EXPECT_TRUE(D->status().Promoted.empty());
  EXPECT_EQ(D->programs().size(), 1u);
  call(*D, 7, 5); // the fallback again, still right
  expectOk(D->verify());
}

TEST_F(AdaptiveTest, ARegisteredPromotedTargetFreesItsSlot) {
  // Promoted, then registered by the host: it is a program now, no longer
  // a promotion, and the one slot goes to the next hot target.
  DispatcherConfig C = adaptiveConfig();
  C.Adaptive.MaxPromoted = 1;
  auto D = make(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(addr(0)));
  expectOk(D->beginLearning());
  call(*D, 5, 1000);
  auto First = D->endLearning();
  ASSERT_TRUE(!!First) << toString(First.takeError());
  ASSERT_EQ(First->Promoted, std::vector<uint64_t>{addr(5)});
  expectOk(D->add(addr(5)));
  EXPECT_TRUE(D->status().Promoted.empty());
  expectOk(D->beginLearning());
  call(*D, 6, 1000);
  auto Second = D->endLearning();
  ASSERT_TRUE(!!Second) << toString(Second.takeError());
  EXPECT_EQ(Second->Promoted, std::vector<uint64_t>{addr(6)});
  EXPECT_EQ(D->status().Promoted, std::vector<uint64_t>{addr(6)});
  std::vector<ProgramEntry> All = D->programs();
  ASSERT_EQ(All.size(), 3u);
  EXPECT_EQ(
      llvm::count_if(All, [](const ProgramEntry &P) { return P.Promoted; }), 1);
  call(*D, 5, 3);
  call(*D, 6, 3);
  expectOk(D->verify());
}

TEST_F(AdaptiveTest, PromotionsAreBoundedAndNeedTheirShare) {
  DispatcherConfig C = adaptiveConfig();
  C.Adaptive.MaxPromoted = 2;
  C.Adaptive.PromoteShare = 0.1;
  auto D = make(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(addr(0)));
  expectOk(D->beginLearning());
  // Mixed calls, as a call site makes them: the ring's most recent
  // selectors (64 per CPU by default) are then a fair sample of the 920
  // that took the fallback.
  for (int Round = 0; Round < 20; ++Round) {
    call(*D, 10, 20);
    call(*D, 11, 15);
    call(*D, 12, 10);
    call(*D, 13, 1); // 2% of the window: below the share
    call(*D, 0, 5);
  }
  auto R = D->endLearning();
  ASSERT_TRUE(!!R) << toString(R.takeError());
  // The two hottest of those above 10% make it.
  ASSERT_EQ(R->Promoted.size(), 2u);
  EXPECT_TRUE(is_contained(R->Promoted, addr(10)));
  EXPECT_TRUE(is_contained(R->Promoted, addr(11)) ||
              is_contained(R->Promoted, addr(12)));
  EXPECT_FALSE(is_contained(R->Promoted, addr(13)));
  EXPECT_LE(D->status().Promoted.size(), 2u);
}

TEST_F(AdaptiveTest, UnchangedCountsKeepTheLayout) {
  auto D = make(adaptiveConfig());
  ASSERT_TRUE(D);
  for (int I = 0; I < 8; ++I)
    expectOk(D->add(addr(I)));
  for (int Window = 0; Window < 3; ++Window) {
    expectOk(D->beginLearning());
    call(*D, 3, 600);
    call(*D, 4, 300);
    for (int I = 0; I < 8; ++I)
      call(*D, I, 10);
    auto R = D->endLearning();
    ASSERT_TRUE(!!R) << toString(R.takeError());
    // The first window sets the weights; the same counts again predict
    // no better layout, so it stays.
    EXPECT_EQ(R->LayoutChanged, Window == 0) << "window " << Window;
  }
}

TEST_F(AdaptiveTest, CountsWithoutAClearWinKeepThePlainLayout) {
  // Zipf-like draws over 8 programs: the counts' layout is predicted
  // within the hysteresis of the plain dispatcher's bisection,
  // so the image stays laid out as a plain dispatcher's; one program far
  // hotter than the rest is a clear win and takes the hot scan.
  DispatcherConfig C = adaptiveConfig();
  C.RetpolineFallback = true;
  auto Fail = failWhileSet(C);
  auto D = make(std::move(C));
  ASSERT_TRUE(D);
  for (int I = 0; I < 8; ++I)
    expectOk(D->add(addr(I)));
  const std::string PlainShape = D->status().Layout;
  const double Share[8] = {55, 396, 40, 117, 185, 47, 86, 68};
  auto Window = [&](ArrayRef<double> Weights) {
    std::mt19937 Rng(61);
    std::discrete_distribution<int> Pick(Weights.begin(), Weights.end());
    std::vector<uint64_t> Calls(8);
    expectOk(D->beginLearning());
    for (int K = 0; K < 8000; ++K) {
      int I = Pick(Rng);
      ++Calls[I];
      call(*D, I, 1);
    }
    auto R = D->endLearning();
    EXPECT_TRUE(!!R) << toString(R.takeError());
    // What the model makes of these counts, as the dispatcher saw them.
    std::vector<LayoutCase> Counted, Unweighted;
    for (int I = 0; I < 8; ++I) {
      Counted.push_back({addr(I), Calls[I]});
      Unweighted.push_back({addr(I), 0});
    }
    LayoutOptions Options;
    Options.RetpolineFallback = true;
    Options.AllowFallbackOnly = true;
    Options.Predictability = R ? R->Predictability : 0;
    DispatchLayout Next = DispatchLayout::choose(Counted, Options);
    LayoutOptions PlainOptions;
    PlainOptions.RetpolineFallback = true;
    double Plain = DispatchLayout::choose(Unweighted, PlainOptions)
                       .costUnder(Counted, Options);
    return std::make_pair(Next, Plain);
  };
  auto [Next, Plain] = Window(Share);
  // The precondition: the counts make another layout (its cost differs),
  // which the model cannot tell from the plain one by 10%.
  EXPECT_NE(Next.predictedCost(), Plain);
  EXPECT_GE(Next.predictedCost(), Plain * 0.9);
  // The plain layout, its cost under the counts.
  DispatcherStatus S = D->status();
  EXPECT_EQ(S.Layout, PlainShape);
  EXPECT_NEAR(S.PredictedCost, Plain, 1e-9);
  expectOk(D->verify());

  // A window whose image fails to go live changes nothing: an image made
  // after it is still laid out plain, at the same cost for the same
  // counts (a failed update restored every learned setting).
  const double OneHot[8] = {9000, 10, 10, 10, 10, 10, 10, 10};
  expectOk(D->beginLearning());
  {
    std::mt19937 Rng(67);
    std::discrete_distribution<int> Pick(std::begin(OneHot), std::end(OneHot));
    for (int K = 0; K < 8000; ++K)
      call(*D, Pick(Rng), 1);
  }
  *Fail = true;
  auto Failed = D->endLearning();
  ASSERT_FALSE(!!Failed);
  consumeError(Failed.takeError());
  *Fail = false;
  expectOk(D->regenerate());
  EXPECT_NEAR(D->status().PredictedCost, Plain, 1e-9);
  expectOk(D->endLearning().takeError());

  auto [Hot, PlainHot] = Window(OneHot);
  EXPECT_LT(Hot.predictedCost(), PlainHot * 0.9);
  EXPECT_EQ(D->status().Layout, "hot-scan");
  expectOk(D->verify());
}

TEST_F(AdaptiveTest, UnpredictableCallsBehindARetpolineDropTheTree) {
  // 64 equally likely programs: any tree costs more mispredictions than
  // the retpoline it replaces, so the model keeps none; every call is still
  // right, through the fallback.
  DispatcherConfig C = adaptiveConfig();
  C.RetpolineFallback = true;
  C.Capacity = NumProgs;
  auto D = make(std::move(C));
  ASSERT_TRUE(D);
  for (int I = 0; I < NumProgs; ++I)
    expectOk(D->add(addr(I)));
  expectOk(D->beginLearning());
  {
    // In random order: runs of one program would be predictable.
    RCUReadGuard Guard;
    auto *Entry = D->entryAs<EntryFn>();
    uint64_t X = 88172645463325252ull;
    for (int K = 0; K < NumProgs * 50; ++K) {
      X ^= X << 13, X ^= X >> 7, X ^= X << 17;
      int I = int(X % NumProgs);
      ASSERT_EQ(Entry(K, Progs[I]), I * 1000 + K);
    }
  }
  auto R = D->endLearning();
  ASSERT_TRUE(!!R) << toString(R.takeError());
  EXPECT_EQ(R->Layout, "fallback-only");
  DispatcherStatus S = D->status();
  EXPECT_EQ(S.Layout, "fallback-only");
  EXPECT_EQ(S.DirectTargets, 0u);
  EXPECT_EQ(S.FallbackTargets, size_t(NumProgs));
  expectOk(D->verify());
  {
    // Nothing before the retpoline: no rebase of the selector for
    // compares that are not there (the programs lie above 2 GiB).
    ASSERT_GT(addr(0), uint64_t(INT32_MAX));
    std::string Dump;
    raw_string_ostream OS(Dump);
    expectOk(D->dump(OS));
    EXPECT_EQ(Dump.find("movabs"), std::string::npos) << Dump;
    size_t Image = Dump.find(" bytes\n");
    ASSERT_NE(Image, std::string::npos) << Dump;
    size_t First = Dump.find('\n', Image + 7);
    EXPECT_NE(Dump.substr(Image, First - Image).find("callq"),
              std::string::npos)
        << Dump;
  }
  for (int I = 0; I < NumProgs; ++I)
    call(*D, I, 2);
  // A window counts again (a counting image always has its tree).
  expectOk(D->beginLearning());
  EXPECT_EQ(D->status().Layout, "hot-scan");
  call(*D, 9, 100);
  expectOk(D->endLearning().takeError());
  EXPECT_NE(D->status().Layout, "fallback-only");
}

TEST_F(AdaptiveTest, TheLearnerSamplesAWindowInTime) {
  // A background dispatcher whose host opens a window: the learner lets
  // it count for SampleOn, stops it for SampleOff, and so on. Calls for
  // 150 ms with the counting on 0.5 ms in 10 are counted far less than
  // half; without SampleOff every call is. Meanwhile the learner's own
  // schedule (a Period of 100 ms, which passes during the window) opens
  // no window of its own, and fails at nothing.
  for (bool Stops : {true, false}) {
    SCOPED_TRACE(Stops ? "SampleOff 9.5 ms" : "SampleOff 0");
    DispatcherConfig C = adaptiveConfig(/*Background=*/true);
    C.Adaptive.Period = std::chrono::milliseconds(100);
    C.Adaptive.MaxPeriod = std::chrono::seconds(60);
    C.Adaptive.SampleSkip = 0;
    C.Adaptive.SampleOn = std::chrono::microseconds(500);
    C.Adaptive.SampleOff = std::chrono::microseconds(Stops ? 9500 : 0);
    auto D = make(std::move(C));
    ASSERT_TRUE(D);
    for (int I = 0; I < 4; ++I)
      expectOk(D->add(addr(I)));
    expectOk(D->beginLearning());
    std::string Window = dumpOf(*D);
    // The gate's compare is in the counting image only where it stops.
    EXPECT_EQ(Window.find("cmpb") != std::string::npos, Stops) << Window;
    uint64_t Calls = 0;
    auto End =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(150);
    while (std::chrono::steady_clock::now() < End) {
      call(*D, int(Calls / 1000 % 4), 1000);
      Calls += 1000;
    }
    DispatcherStatus During = D->status();
    EXPECT_TRUE(During.Learning);
    EXPECT_EQ(During.LearningWindows, 0u);
    auto R = D->endLearning();
    ASSERT_TRUE(!!R) << toString(R.takeError());
    if (Stops) {
      EXPECT_GT(R->CaseCalls, 0u);
      EXPECT_LT(R->CaseCalls * 2, Calls);
    } else {
      EXPECT_EQ(R->CaseCalls, Calls);
    }
    EXPECT_EQ(D->status().LearningError, "");
  }
}

TEST_F(AdaptiveTest, EveryBackgroundDispatcherGetsItsWindows) {
  // 100 background dispatchers on one learner, each on its own schedule
  // (periods of 1 to 4 ms, windows of 0.2 ms, sampled in time): every one
  // of them has its windows, none fails, and removing half of them midway
  // leaves the others' schedules whole.
  std::vector<std::unique_ptr<Dispatcher>> Ds;
  for (int K = 0; K < 100; ++K) {
    DispatcherConfig C = adaptiveConfig(/*Background=*/true);
    C.Name = "adaptive_" + std::to_string(K);
    C.Capacity = 4;
    C.Adaptive.Window = std::chrono::microseconds(200);
    C.Adaptive.Period = std::chrono::milliseconds(1 + K % 4);
    C.Adaptive.MaxPeriod = std::chrono::milliseconds(4);
    C.Adaptive.SampleOn = std::chrono::microseconds(50);
    C.Adaptive.SampleOff = std::chrono::microseconds(50);
    Ds.push_back(make(std::move(C)));
    ASSERT_TRUE(Ds.back());
    expectOk(Ds.back()->add(addr(K % NumProgs)));
  }
  auto WaitForWindows = [&](uint64_t Windows) {
    auto Deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (auto &D : Ds) {
      if (!D)
        continue;
      while (D->status().LearningWindows < Windows &&
             std::chrono::steady_clock::now() < Deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      DispatcherStatus S = D->status();
      EXPECT_GE(S.LearningWindows, Windows) << S.Layout;
      EXPECT_EQ(S.LearningError, "");
    }
  };
  WaitForWindows(2);
  for (size_t K = 0; K < Ds.size(); K += 2)
    Ds[K].reset();
  WaitForWindows(4);
}

TEST_F(AdaptiveTest, ACPUThatNeverCountedCostsNoMemory) {
  // Counter blocks are reserved for every possible CPU, but a page is
  // mapped only once a CPU counts in it: one thread pinned to one CPU
  // through a window (and the learner's reads of every block at its close,
  // and status()) leaves the other CPUs' blocks unmapped. Blocks of 4096
  // ring slots span several pages each.
  if (sysconf(_SC_NPROCESSORS_CONF) < 2)
    GTEST_SKIP() << "one possible CPU: one block";
  cpu_set_t Old, One;
  ASSERT_EQ(sched_getaffinity(0, sizeof(Old), &Old), 0);
  CPU_ZERO(&One);
  CPU_SET(sched_getcpu(), &One);
  ASSERT_EQ(sched_setaffinity(0, sizeof(One), &One), 0);
  DispatcherConfig C = adaptiveConfig();
  C.Adaptive.FallbackSamples = 4096;
  auto D = make(std::move(C));
  ASSERT_TRUE(D);
  for (int I = 0; I < 4; ++I)
    expectOk(D->add(addr(I)));
  DispatcherStatus Before = D->status();
  EXPECT_GT(Before.CounterBytes, 2u * 4096 * 8);
  EXPECT_EQ(Before.CounterResidentBytes, 0u);
  expectOk(D->beginLearning());
  for (int I = 0; I < 6; ++I)
    call(*D, I, 1000); // 4 registered, 2 not
  auto R = D->endLearning();
  ASSERT_TRUE(!!R) << toString(R.takeError());
  EXPECT_EQ(R->CaseCalls + R->FallbackCalls, 6000u);
  expectOk(D->beginLearning());
  call(*D, 0, 1000);
  ASSERT_TRUE(!!D->endLearning());
  DispatcherStatus After = D->status();
  sched_setaffinity(0, sizeof(Old), &Old);
  EXPECT_GT(After.CounterResidentBytes, 0u);
  EXPECT_LE(After.CounterResidentBytes, After.CounterBytes / 2)
      << "of " << After.CounterBytes << " bytes";
}

TEST_F(AdaptiveTest, AWindowThatFailedToCloseIsClosedLater) {
  // The learner's close of a window fails (an injected fault in its
  // update): the window stays open, the error is reported, and the learner
  // tries again later, closing it once updates work again.
  DispatcherConfig C = adaptiveConfig(/*Background=*/true);
  C.Adaptive.Window = std::chrono::milliseconds(200);
  C.Adaptive.Period = std::chrono::milliseconds(50);
  C.Adaptive.MaxPeriod = std::chrono::milliseconds(100);
  auto Fail = failWhileSet(C);
  auto D = make(std::move(C));
  ASSERT_TRUE(D);
  for (int I = 0; I < 2; ++I)
    expectOk(D->add(addr(I)));
  auto WaitFor = [&](auto Done) {
    auto Deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!Done(D->status()) && std::chrono::steady_clock::now() < Deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return Done(D->status());
  };
  ASSERT_TRUE(WaitFor([](const DispatcherStatus &S) { return S.Learning; }));
  *Fail = true;
  ASSERT_TRUE(WaitFor(
      [](const DispatcherStatus &S) { return !S.LearningError.empty(); }));
  DispatcherStatus Failed = D->status();
  EXPECT_TRUE(Failed.Learning);
  EXPECT_EQ(Failed.LearningWindows, 0u);
  EXPECT_NE(Failed.LearningError.find("injected fault"), std::string::npos)
      << Failed.LearningError;
  *Fail = false;
  EXPECT_TRUE(WaitFor([](const DispatcherStatus &S) {
    return !S.Learning && S.LearningWindows >= 1;
  }));
  call(*D, 1, 100);
}

TEST_F(AdaptiveTest, WithoutATreeTheTriggerCountsNothing) {
  // The trigger on, windows a minute apart: once the layout has no tree,
  // every call takes the fallback, which says nothing of a target that
  // moved. That image counts nothing, and a stream of calls opens no
  // window.
  DispatcherConfig C = adaptiveConfig(/*Background=*/true);
  C.RetpolineFallback = true;
  C.Capacity = NumProgs;
  C.Adaptive.Period = std::chrono::seconds(60);
  C.Adaptive.MaxPeriod = std::chrono::seconds(60);
  C.Adaptive.TriggerPoll = std::chrono::microseconds(1000);
  C.Adaptive.SampleSkip = 0;
  C.Adaptive.SampleOff = std::chrono::microseconds(0); // count every call
  auto D = make(std::move(C));
  ASSERT_TRUE(D);
  for (int I = 0; I < NumProgs; ++I)
    expectOk(D->add(addr(I)));
  auto *Entry = D->entryAs<EntryFn>();
  auto Random = [&](int Calls) {
    RCUReadGuard Guard;
    uint64_t X = 88172645463325252ull;
    for (int K = 0; K < Calls; ++K) {
      X ^= X << 13, X ^= X >> 7, X ^= X << 17;
      int I = int(X % NumProgs);
      ASSERT_EQ(Entry(K, Progs[I]), I * 1000 + K);
    }
  };
  expectOk(D->beginLearning());
  Random(NumProgs * 50);
  auto R = D->endLearning();
  ASSERT_TRUE(!!R) << toString(R.takeError());
  ASSERT_EQ(R->Layout, "fallback-only");
  std::string Steady = dumpOf(*D);
  for (const char *Op : {"%fs", "rdpid", "lsl", "incq"})
    EXPECT_EQ(Steady.find(Op), std::string::npos) << Op << "\n" << Steady;
  for (int Round = 0; Round < 40; ++Round) {
    Random(5000);
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  DispatcherStatus S = D->status();
  EXPECT_EQ(S.TriggeredWindows, 0u);
  EXPECT_EQ(S.LearningWindows, 1u);
}

TEST_F(AdaptiveTest, ARoundRobinBehindARetpolineKeepsItsTree) {
  // The same 48 programs called equally often, but in turn: the counting
  // image sees each call follow from the previous one, which a branch
  // predictor with history exploits, so the model keeps a tree instead of
  // paying the retpoline on every call.
  DispatcherConfig C = adaptiveConfig();
  C.RetpolineFallback = true;
  auto D = make(std::move(C));
  ASSERT_TRUE(D);
  for (int I = 0; I < 48; ++I)
    expectOk(D->add(addr(I)));
  expectOk(D->beginLearning());
  {
    RCUReadGuard Guard;
    auto *Entry = D->entryAs<EntryFn>();
    for (int K = 0; K < 48 * 40; ++K)
      ASSERT_EQ(Entry(K, Progs[K % 48]), (K % 48) * 1000 + K);
  }
  auto R = D->endLearning();
  ASSERT_TRUE(!!R) << toString(R.takeError());
  EXPECT_GT(R->Predictability, 0.9);
  EXPECT_NE(R->Layout, "fallback-only");
  EXPECT_GT(D->status().LearnedPredictability, 0.9);
  EXPECT_EQ(D->status().DirectTargets, 48u);
  // Drawn at random instead, the tree goes.
  expectOk(D->beginLearning());
  {
    RCUReadGuard Guard;
    auto *Entry = D->entryAs<EntryFn>();
    uint64_t X = 88172645463325252ull;
    for (int K = 0; K < 48 * 40; ++K) {
      X ^= X << 13, X ^= X >> 7, X ^= X << 17;
      int I = int(X % 48);
      ASSERT_EQ(Entry(K, Progs[I]), I * 1000 + K);
    }
  }
  auto Random = D->endLearning();
  ASSERT_TRUE(!!Random) << toString(Random.takeError());
  EXPECT_LT(Random->Predictability, 0.2);
  EXPECT_EQ(Random->Layout, "fallback-only");
}

TEST_F(AdaptiveTest, MisuseIsAnError) {
  auto Plain = [] {
    DispatcherConfig C = adaptiveConfig();
    C.Adaptive.Enabled = false;
    return C;
  }();
  auto P = make(std::move(Plain));
  ASSERT_TRUE(P);
  EXPECT_NE(toString(P->beginLearning()).find("no adaptive dispatch"),
            std::string::npos);
  auto D = make(adaptiveConfig());
  ASSERT_TRUE(D);
  EXPECT_NE(toString(D->endLearning().takeError()).find("no learning window"),
            std::string::npos);
  expectOk(D->beginLearning());
  EXPECT_NE(toString(D->beginLearning()).find("open already"),
            std::string::npos);
  expectOk(D->endLearning().takeError());

  DispatcherConfig Codegen = adaptiveConfig();
  Codegen.Lowering = ImageLowering::Codegen;
  auto Refused = Dispatcher::create(std::move(Codegen));
  ASSERT_FALSE(!!Refused);
  EXPECT_NE(toString(Refused.takeError()).find("laid out directly"),
            std::string::npos);
  DispatcherConfig Samples = adaptiveConfig();
  Samples.Adaptive.FallbackSamples = 48;
  auto Bad = Dispatcher::create(std::move(Samples));
  ASSERT_FALSE(!!Bad);
  EXPECT_NE(toString(Bad.takeError()).find("power of two"), std::string::npos);
  // A trigger that would spin the learner, or overflow its clock.
  for (auto Poll : {std::chrono::microseconds(10),
                    std::chrono::microseconds(std::chrono::hours(24))}) {
    DispatcherConfig Trigger = adaptiveConfig(/*Background=*/true);
    Trigger.Adaptive.TriggerPoll = Poll;
    auto Refused = Dispatcher::create(std::move(Trigger));
    ASSERT_FALSE(!!Refused);
    EXPECT_NE(toString(Refused.takeError()).find("TriggerPoll"),
              std::string::npos);
  }
}

TEST_F(AdaptiveTest, TheTriggerOpensAWindowWhenTheFallbackRateRises) {
  // Windows a minute apart: only the trigger can open one within the test.
  // A hot unregistered target is promoted, then the hot target moves to
  // another unregistered one, which is promoted too; calls to promoted
  // targets alone trigger nothing.
  DispatcherConfig C = adaptiveConfig(/*Background=*/true);
  C.Adaptive.Window = std::chrono::microseconds(1000);
  C.Adaptive.Period = std::chrono::seconds(60);
  C.Adaptive.MaxPeriod = std::chrono::seconds(60);
  C.Adaptive.TriggerPoll = std::chrono::microseconds(1000);
  auto D = make(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(addr(0)));
  expectOk(D->add(addr(1)));
  // The steady image counts its fallback's calls, there only.
  std::string Steady = dumpOf(*D);
  EXPECT_NE(Steady.find("incq"), std::string::npos) << Steady;
  auto *Entry = D->entryAs<EntryFn>();
  auto CallUntilPromoted = [&](int I) {
    for (int Round = 0; Round < 5000; ++Round) {
      {
        RCUReadGuard Guard;
        // Well above TriggerCalls (1000) per look.
        for (int K = 0; K < 5000; ++K)
          if (Entry(K, Progs[I]) != I * 1000 + K)
            return false;
      }
      if (is_contained(D->status().Promoted, addr(I)))
        return true;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    return false;
  };
  ASSERT_TRUE(CallUntilPromoted(5)) << "no window opened for program 5";
  DispatcherStatus S = D->status();
  EXPECT_GE(S.TriggeredWindows, 1u);
  EXPECT_EQ(S.LearningError, "");
  ASSERT_TRUE(CallUntilPromoted(6)) << "no window opened for program 6";
  uint64_t Triggered = D->status().TriggeredWindows;
  EXPECT_GE(Triggered, 2u);
  // Let a window still open close, then the promoted targets' calls
  // alone: no fallback, no trigger.
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  Triggered = D->status().TriggeredWindows;
  for (int Round = 0; Round < 200; ++Round) {
    call(*D, 6, 100);
    call(*D, 0, 10);
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  EXPECT_EQ(D->status().TriggeredWindows, Triggered);
  expectOk(D->verify());
  std::string Dump = dumpOf(*D);
  EXPECT_NE(Dump.find("windows triggered"), std::string::npos) << Dump;
}

TEST_F(AdaptiveTest, AForkedChildLearnsWithItsOwnThread) {
#if __has_feature(thread_sanitizer)
  GTEST_SKIP() << "fork() with threads is not supported under TSan";
#endif
  // The parent's learner is busy with windows every few milliseconds when
  // the process forks; the child's dispatcher works, and once the child
  // updates it, a learner of the child's own opens windows again and
  // promotes what the child calls.
  DispatcherConfig C = adaptiveConfig(/*Background=*/true);
  C.Adaptive.Window = std::chrono::microseconds(1000);
  C.Adaptive.Period = std::chrono::microseconds(1000);
  C.Adaptive.MaxPeriod = std::chrono::microseconds(2000);
  auto D = make(std::move(C));
  ASSERT_TRUE(D);
  expectOk(D->add(addr(0)));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  pid_t Child = fork();
  ASSERT_GE(Child, 0);
  if (Child == 0) {
    alarm(10); // a hang fails the test instead of stalling it
    // This thread stays the reader the fixture registered.
    auto *Entry = D->entryAs<EntryFn>();
    if (D->add(addr(1)))
      _exit(2);
    uint64_t Before = D->status().LearningWindows;
    bool Promoted = false;
    for (int Round = 0; Round < 2000 && !Promoted; ++Round) {
      {
        RCUReadGuard Guard;
        for (int K = 0; K < 50; ++K)
          if (Entry(K, Progs[30]) != 30 * 1000 + K ||
              Entry(K, Progs[1]) != 1000 + K)
            _exit(3);
      }
      Promoted = is_contained(D->status().Promoted, addr(30));
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (!Promoted || D->status().LearningWindows <= Before)
      _exit(4);
    _exit(0);
  }
  int Status = 0;
  ASSERT_EQ(waitpid(Child, &Status, 0), Child);
  ASSERT_TRUE(WIFEXITED(Status)) << "the child was killed (hung?)";
  EXPECT_EQ(WEXITSTATUS(Status), 0);
  // The parent's dispatcher is still its own.
  call(*D, 0, 10);
  expectOk(D->verify());
}

TEST_F(AdaptiveTest, AProcessExitsCleanlyWithItsLearnerBusy) {
#if __has_feature(thread_sanitizer)
  GTEST_SKIP() << "fork() with threads is not supported under TSan";
#endif
  // A host that never destroys its adaptive dispatcher and calls exit():
  // static destructors run while the learner opens and closes windows
  // every hundred microseconds. The process must end with its own status,
  // not a crash in a half-torn-down process.
  for (int Round = 0; Round < 20; ++Round) {
    pid_t Child = fork();
    ASSERT_GE(Child, 0);
    if (Child == 0) {
      alarm(10);
      DispatcherConfig C = adaptiveConfig(/*Background=*/true);
      C.Adaptive.Window = std::chrono::microseconds(100);
      C.Adaptive.Period = std::chrono::microseconds(100);
      C.Adaptive.MaxPeriod = std::chrono::microseconds(200);
      auto D = Dispatcher::create(std::move(C));
      if (!D)
        _exit(2);
      if ((*D)->add(addr(0)))
        _exit(3);
      auto *Entry = (*D)->entryAs<EntryFn>();
      for (int K = 0; K < 2000 + Round * 100; ++K) {
        RCUReadGuard Guard;
        if (Entry(K, Progs[K % 3]) != (K % 3) * 1000 + K)
          _exit(4);
      }
#if __has_feature(address_sanitizer)
      __lsan_ignore_object(D->get()); // the leak is the point
#endif
      (void)(*D).release(); // leaked, as hosts do at exit
      exit(0);
    }
    int Status = 0;
    ASSERT_EQ(waitpid(Child, &Status, 0), Child);
    ASSERT_TRUE(WIFEXITED(Status))
        << "round " << Round << ": killed by signal " << WTERMSIG(Status);
    ASSERT_EQ(WEXITSTATUS(Status), 0) << "round " << Round;
  }
}

TEST_F(AdaptiveTest,
       TheBackgroundLearnerPromotesAndDemotesUnderCallsAndUpdates) {
  // Two calling threads (a hot unregistered target and the registered
  // programs), an updater changing the set, and the learner opening and
  // closing windows every few milliseconds. Midway the callers' hot target
  // moves from program 40 to 41: 40 must be demoted, 41 promoted. Every
  // call returns its program's answer, and every registration is released
  // exactly once.
  DispatcherConfig C = adaptiveConfig(/*Background=*/true);
  C.Adaptive.Window = std::chrono::microseconds(1000);
  C.Adaptive.Period = std::chrono::microseconds(2000);
  C.Adaptive.MaxPeriod = std::chrono::microseconds(8000);
  C.Reclaim = ReclaimMode::Asynchronous;
  auto D = make(std::move(C));
  ASSERT_TRUE(D);
  for (int I = 0; I < 4; ++I)
    expectOk(D->add(addr(I)));
  std::atomic<bool> Stop{false};
  std::atomic<int> Hot{40};
  std::atomic<uint64_t> Wrong{0}, Calls{0};
  auto Caller = [&] {
    RCUReaderThread R(RCUFlavor::Memb);
    auto *Entry = D->entryAs<EntryFn>();
    for (uint64_t K = 0; !Stop; ++K) {
      RCUReadGuard Guard;
      int I = K % 8 == 0 ? int(K / 8 % 4) : Hot.load();
      if (Entry(int(K & 0xff), Progs[I]) != I * 1000 + int(K & 0xff))
        ++Wrong;
      ++Calls;
    }
  };
  std::thread T1(Caller), T2(Caller);
  enum { Promoting, Moving, Done } Phase = Promoting;
  auto Deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int Round = 0;
  while (Phase != Done && std::chrono::steady_clock::now() < Deadline) {
    // The updater: program 20 + Round % 4 in and out.
    int P = 20 + Round++ % 4;
    expectOk(D->add(addr(P)));
    expectOk(D->remove(addr(P)));
    DispatcherStatus S = D->status();
    if (Phase == Promoting && is_contained(S.Promoted, addr(40))) {
      Hot = 41;
      Phase = Moving;
    } else if (Phase == Moving && is_contained(S.Promoted, addr(41)) &&
               !is_contained(S.Promoted, addr(40))) {
      Phase = Done;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  Stop = true;
  T1.join();
  T2.join();
  EXPECT_EQ(Wrong.load(), 0u);
  EXPECT_GT(Calls.load(), 0u);
  EXPECT_EQ(Phase, Done) << "40 promoted, then demoted for 41";
  DispatcherStatus S = D->status();
  EXPECT_GT(S.LearningWindows, 1u);
  EXPECT_EQ(S.LearningError, "");
  D.reset();
  // Each add of the updater was matched by a remove; the four registered
  // programs are released at destruction; promoted ones never are.
  EXPECT_EQ(Releases.load(), Round + 4);
}

} // namespace
