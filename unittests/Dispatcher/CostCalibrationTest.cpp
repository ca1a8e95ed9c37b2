//===- CostCalibrationTest.cpp - Tests for the cost model's calibration ---===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The fit from timings (synthetic, from known constants), its refusals and
// clamps, the measurement on this CPU, the process's one calibration
// (threads, fork), and the dispatchers that use it.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/CostCalibration.h"

#include "TestingSupport.h"
#include "dispatch-gen/DispatchLayout.h"
#include "dispatch-gen/Dispatcher.h"

#include "llvm/Support/raw_ostream.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstddef>
#include <limits>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace dispatchgen;
using namespace dispatchgen::unittest;

namespace {

/// Timings made from known constants: a unit of UnitNs, a predicted test
/// Compare units, a mispredicted compare Mispredict, a mispredicted
/// indirect branch Indirect; entering an image costs EntryNs.
CalibrationTimings timingsOf(double UnitNs, double Compare, double Mispredict,
                             double Indirect, double EntryNs = 1.0) {
  std::vector<LayoutCase> Scan;
  for (uint64_t K = 0; K < 8; ++K)
    Scan.push_back({0x200000 + 32 * K, 1});
  LayoutOptions Options;
  Options.RetpolineFallback = true;
  DispatchLayout::CallTerms Terms =
      DispatchLayout::choose(Scan, Options).termsUnder(Scan, Options);
  double CompareNs = Compare * UnitNs;
  CalibrationTimings T;
  T.ChainCompares = 16;
  T.ChainOne = EntryNs + CompareNs;
  T.ChainLong = EntryNs + 16 * CompareNs;
  T.Retpoline = EntryNs + 20 * UnitNs;
  T.ScanRandom = EntryNs + Terms.Compares * CompareNs +
                 Terms.Mispredicts * Mispredict * UnitNs;
  T.IndirectOne = 1.2;
  T.IndirectRandom = 1.2 + 7.0 / 8 * Indirect * UnitNs;
  return T;
}

TEST(CostCalibrationTest, TheFitRecoversTheConstantsTheTimingsWereMadeWith) {
  CostCalibration C = fitCalibration(timingsOf(0.5, 0.3, 18, 16));
  ASSERT_TRUE(C.Calibrated) << C.Why;
  EXPECT_TRUE(C.Why.empty());
  EXPECT_NEAR(C.Model.Compare, 0.3, 1e-9);
  EXPECT_NEAR(C.Model.Mispredict, 18, 1e-9);
  EXPECT_NEAR(C.Model.IndirectMispredict, 16, 1e-9);
  EXPECT_NEAR(C.UnitNs, 0.5, 1e-9);
  EXPECT_NEAR(C.MispredictNs, 9, 1e-9);
  // What it does not measure stays as it was.
  LayoutCostModel Defaults;
  EXPECT_EQ(C.Model.Retpoline, Defaults.Retpoline);
  EXPECT_EQ(C.Model.IndirectBranch, Defaults.IndirectBranch);
  EXPECT_EQ(C.Model.PredictorCapacity, Defaults.PredictorCapacity);

  // Another CPU: a retpoline half as dear next to a misprediction.
  CostCalibration Cheap = fitCalibration(timingsOf(0.25, 0.5, 40, 30));
  ASSERT_TRUE(Cheap.Calibrated);
  EXPECT_NEAR(Cheap.Model.Mispredict, 40, 1e-9);
  EXPECT_NEAR(Cheap.Model.IndirectMispredict, 30, 1e-9);
}

TEST(CostCalibrationTest, ImplausibleTimingsKeepTheDefaults) {
  auto ExpectDefaults = [](const CostCalibration &C, const char *Why) {
    EXPECT_FALSE(C.Calibrated);
    EXPECT_NE(C.Why.find(Why), std::string::npos) << C.Why;
    LayoutCostModel Defaults;
    EXPECT_EQ(C.Model.Compare, Defaults.Compare);
    EXPECT_EQ(C.Model.Mispredict, Defaults.Mispredict);
    EXPECT_EQ(C.Model.IndirectMispredict, Defaults.IndirectMispredict);
  };
  CalibrationTimings T = timingsOf(0.5, 0.3, 18, 16);
  // A retpoline no dearer than a compare: no unit.
  T.Retpoline = T.ChainOne * 0.9;
  ExpectDefaults(fitCalibration(T), "no dearer than a predicted compare");
  // A timer that did not move, or a timing that is not a number.
  T = timingsOf(0.5, 0.3, 18, 16);
  T.ScanRandom = 0;
  ExpectDefaults(fitCalibration(T), "not a positive number");
  T = timingsOf(0.5, 0.3, 18, 16);
  T.IndirectRandom = std::numeric_limits<double>::quiet_NaN();
  ExpectDefaults(fitCalibration(T), "not a positive number");
  T = timingsOf(0.5, 0.3, 18, 16);
  T.ChainCompares = 1;
  ExpectDefaults(fitCalibration(T), "fewer than two compares");
}

TEST(CostCalibrationTest, ConstantsOutOfRangeAreClamped) {
  // A preempted round can make one timing absurd: the constants stay in
  // the range where the model's choices still make sense.
  CalibrationTimings T = timingsOf(0.5, 0.3, 18, 16);
  T.ScanRandom *= 50;
  T.IndirectRandom = T.IndirectOne; // an indirect miss cost nothing
  T.ChainLong = T.ChainOne / 2;     // a compare cost less than nothing
  CostCalibration C = fitCalibration(T);
  ASSERT_TRUE(C.Calibrated) << C.Why;
  EXPECT_EQ(C.Model.Mispredict, 60);
  EXPECT_EQ(C.Model.IndirectMispredict, 1);
  EXPECT_EQ(C.Model.Compare, 0.01);
}

TEST(CostCalibrationTest, ADispatcherRefusesAModelItCannotChooseBy) {
  auto Refused = [](LayoutCostModel M) {
    DispatcherConfig C;
    C.Signature = "i32 (i32)";
    C.CostModel = M;
    auto D = Dispatcher::create(std::move(C));
    return takeError(D);
  };
  LayoutCostModel M;
  M.Mispredict = -1;
  EXPECT_THAT(Refused(M), Failed(testing::HasSubstr(
                              "CostModel's costs must be finite and not "
                              "negative, and its ResidualMispredict 0 to 1")));
  M = LayoutCostModel();
  M.Compare = std::numeric_limits<double>::infinity();
  EXPECT_THAT(Refused(M), Failed(testing::HasSubstr("must be finite")));
  M = LayoutCostModel();
  M.ResidualMispredict = 2;
  EXPECT_THAT(Refused(M), Failed(testing::HasSubstr("ResidualMispredict")));
  EXPECT_THAT(Refused(LayoutCostModel()), Succeeded());
}

#if defined(__x86_64__) && defined(__linux__)
TEST(CostCalibrationTest, MeasuresThisCPU) {
  auto C = calibrateCostModel();
  ASSERT_THAT(takeError(C), Succeeded());
  ASSERT_TRUE(C->Calibrated) << C->Why;
  const CalibrationTimings &T = C->Timings;
  // The images were called as meant: a random scan mispredicts where one
  // compare does not, the retpoline is never predicted, and a random
  // indirect jump misses where one to the same target does not. (Each
  // image ends at `ret` targets: a call routed anywhere else traps.)
  EXPECT_GT(T.ScanRandom, T.ChainOne);
  EXPECT_GT(T.Retpoline, T.ChainOne);
  EXPECT_GT(T.IndirectRandom, T.IndirectOne);
  EXPECT_GE(T.ChainLong, T.ChainOne * 0.5);
  EXPECT_GT(C->UnitNs, 0);
  EXPECT_GT(C->Micros, 0);
  // The fit of what was timed.
  CostCalibration Again = fitCalibration(T);
  EXPECT_EQ(Again.Model.Compare, C->Model.Compare);
  EXPECT_EQ(Again.Model.Mispredict, C->Model.Mispredict);
  EXPECT_EQ(C->Model.Retpoline, LayoutCostModel().Retpoline);
}

/// In a child: a seccomp filter that fails every mprotect() asking for
/// PROT_EXEC with EPERM, as a sandbox that forbids making memory
/// executable does. Returns false where the filter cannot be installed.
bool forbidExecutableMemory() {
  struct sock_filter Filter[] = {
      // Another architecture's system call numbers: allowed as they are.
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mprotect, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
               offsetof(struct seccomp_data, args[2])),
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog Program = {static_cast<unsigned short>(std::size(Filter)),
                               Filter};
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &Program) == 0;
}

TEST(CostCalibrationTest, ASandboxWithoutExecutableMemoryKeepsTheDefaults) {
  // The calibration needs code of its own: where the host's sandbox
  // forbids making memory executable, it fails with a clear error, and
  // the process's model is the defaults, saying why. (Dispatchers cannot
  // make images there either; this is about not crashing on the way.)
  pid_t Child = fork();
  ASSERT_NE(Child, -1);
  if (Child == 0) {
    if (!forbidExecutableMemory())
      _exit(3);
    auto C = calibrateCostModel();
    if (C)
      _exit(1);
    std::string Message = llvm::toString(C.takeError());
    if (Message.find("cannot make the calibration's code executable") ==
        std::string::npos)
      _exit(2);
    // The process's: the defaults, saying why, unless it was measured
    // before the fork (by another test of this process; ctest runs each
    // test in a process of its own).
    const CostCalibration &P = processCostCalibration();
    if (P.Calibrated)
      _exit(0);
    bool Defaults = P.Model.Mispredict == LayoutCostModel().Mispredict &&
                    P.Model.Compare == LayoutCostModel().Compare;
    _exit(Defaults && P.Why.find("executable") != std::string::npos ? 0 : 4);
  }
  int Status = 0;
  ASSERT_EQ(waitpid(Child, &Status, 0), Child);
  ASSERT_TRUE(WIFEXITED(Status));
  if (WEXITSTATUS(Status) == 3)
    GTEST_SKIP() << "no seccomp here";
  EXPECT_EQ(WEXITSTATUS(Status), 0);
}

TEST(CostCalibrationTest, TheProcessMeasuresOnceForAllThreadsAndItsForks) {
  // Four threads ask at once: one measures, the others wait for it, and
  // all see the same calibration (a second measurement would have taken
  // another time).
  const CostCalibration *Seen[4] = {};
  double Micros[4] = {};
  std::vector<std::thread> Threads;
  for (int I = 0; I < 4; ++I)
    Threads.emplace_back([&, I] {
      Seen[I] = &processCostCalibration();
      Micros[I] = Seen[I]->Micros;
    });
  for (std::thread &T : Threads)
    T.join();
  for (int I = 1; I < 4; ++I) {
    EXPECT_EQ(Seen[I], Seen[0]);
    EXPECT_EQ(Micros[I], Micros[0]);
  }
  EXPECT_TRUE(Seen[0]->Calibrated) << Seen[0]->Why;
  // A child of fork() keeps it.
  pid_t Child = fork();
  ASSERT_NE(Child, -1);
  if (Child == 0)
    _exit(processCostCalibration().Micros == Micros[0] ? 0 : 1);
  int Status = 0;
  ASSERT_EQ(waitpid(Child, &Status, 0), Child);
  ASSERT_TRUE(WIFEXITED(Status));
  EXPECT_EQ(WEXITSTATUS(Status), 0);
}

__attribute__((noinline)) int progA(int X) { return X + 1; }
__attribute__((noinline)) int progB(int X) { return X + 2; }
__attribute__((noinline)) int progC(int X) { return X + 3; }
uint64_t addr(int (*F)(int)) { return reinterpret_cast<uint64_t>(F); }

TEST(CostCalibrationTest, WeightedAndAdaptiveDispatchersUseTheProcesssModel) {
  const CostCalibration &Process = processCostCalibration();
  ASSERT_TRUE(Process.Calibrated) << Process.Why;
  auto Make = [](bool Adaptive, std::optional<LayoutCostModel> Model) {
    DispatcherConfig C;
    C.Name = "calibrated";
    C.Signature = "i32 (i32)";
    C.Near = addr(progA);
    C.Adaptive.Enabled = Adaptive;
    C.CostModel = Model;
    auto D = Dispatcher::create(std::move(C));
    EXPECT_THAT(takeError(D), Succeeded());
    return D ? std::move(*D) : nullptr;
  };
  std::vector<LayoutCase> Cases;
  std::vector<std::pair<uint64_t, uint64_t>> Weights;
  uint64_t W = 1000;
  for (auto *F : {progA, progB, progC}) {
    Cases.push_back({addr(F), W});
    Weights.push_back({addr(F), W});
    W /= 2;
  }
  auto Weigh = [&](Dispatcher &D) {
    ProgramSet::Batch B;
    for (const LayoutCase &C : Cases)
      B.add(C.Key);
    ASSERT_THAT(takeError(D.apply(B)), Succeeded());
    D.setWeights(Weights);
    ASSERT_THAT(takeError(D.regenerate()), Succeeded());
  };

  // Weighted, no model configured: the process's calibration chooses.
  auto Weighted = Make(false, std::nullopt);
  ASSERT_TRUE(Weighted);
  Weigh(*Weighted);
  DispatcherStatus S = Weighted->status();
  EXPECT_EQ(S.CostModelSource, "calibrated");
  EXPECT_EQ(S.CostModel.Mispredict, Process.Model.Mispredict);
  EXPECT_EQ(S.CostModel.Compare, Process.Model.Compare);
  DispatchLayout Expected = DispatchLayout::choose(Cases, {}, Process.Model);
  EXPECT_EQ(S.Layout, Expected.shapeName());
  EXPECT_NEAR(S.PredictedCost, Expected.predictedCost(), 1e-9);
  std::string Dump;
  llvm::raw_string_ostream OS(Dump);
  ASSERT_THAT(takeError(Weighted->dump(OS)), Succeeded());
  EXPECT_NE(Dump.find("cost model (calibrated): compare"), std::string::npos)
      << Dump;

  // A configured model is the one used.
  LayoutCostModel Pinned;
  Pinned.Compare = 3;
  auto Configured = Make(false, Pinned);
  ASSERT_TRUE(Configured);
  Weigh(*Configured);
  S = Configured->status();
  EXPECT_EQ(S.CostModelSource, "configured");
  EXPECT_EQ(S.CostModel.Compare, 3);
  EXPECT_NEAR(S.PredictedCost,
              DispatchLayout::choose(Cases, {}, Pinned).predictedCost(), 1e-9);

  // Plain: the layout does not depend on a model; none is measured for it.
  auto Plain = Make(false, std::nullopt);
  ASSERT_TRUE(Plain);
  EXPECT_EQ(Plain->status().CostModelSource, "defaults");
  // Adaptive, none configured: calibrated.
  auto Adaptive = Make(true, std::nullopt);
  ASSERT_TRUE(Adaptive);
  EXPECT_EQ(Adaptive->status().CostModelSource, "calibrated");
}
#endif

} // namespace
