//===- Report.cpp - Tables, JSON and plots of benchmark results -----------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Every statistic says how many samples it comes from, and every report
// which machine and build it was measured on: utils/bench-tables.py builds
// the README's tables from the JSON of the runs kept in bench/results/.
//
//===----------------------------------------------------------------------===//

#include "CallTable.h"
#include "ReportAdaptive.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <map>
#include <sched.h>
#include <set>
#include <thread>

#ifndef DISPATCHGEN_BUILD_TYPE
#define DISPATCHGEN_BUILD_TYPE ""
#endif

using namespace llvm;

namespace dispatchgen::bench {

namespace {

StringRef modeName(ReclaimMode M) {
  return M == ReclaimMode::Asynchronous ? "async" : "sync";
}

void printCalls(const CallTable &T, const Report &R, raw_ostream &OS) {
  OS << "call cost: ns per call (ratio to the direct call), median of ";
  if (R.CallLoops)
    OS << formatv("{0} timed loop{1} of {2} calls", R.CallLoops,
                  R.CallLoops == 1 ? "" : "s", R.CallsPerLoop);
  else
    OS << "the repetitions";
  // Phase's loops are one phase long: each crosses one move of the target.
  if (R.PhaseCallsPerLoop && is_contained(T.Patterns, Pattern::Phase))
    OS << formatv(" ({0} calls for phase: one move of the hot target in "
                  "each)",
                  R.PhaseCallsPerLoop);
  OS << "\n";
  OS << formatv("{0,-12} {1,5}", "pattern", "N");
  for (CallVariant V : AllVariants)
    OS << formatv(" {0,19}", variantName(V));
  OS << "\n";
  for (Pattern P : T.Patterns)
    for (unsigned N : T.Ns) {
      OS << formatv("{0,-12} {1,5}", patternName(P), N);
      for (CallVariant V : AllVariants) {
        auto X = T.get(P, N, V);
        auto R = T.ratio(P, N, V);
        if (X && R)
          OS << formatv(" {0,19}", formatv("{0:f2} ({1:f2}x)", *X, *R).str());
        else
          OS << formatv(" {0,19}", "-");
      }
      OS << "\n";
    }
}

void printSummary(const CallTable &T, const Report &R, raw_ostream &OS) {
  OS << "summary:\n";
  using CV = CallVariant;
  if (auto D = T.ratio(Pattern::OneHot, 48, CV::Dispatcher)) {
    auto Retp = T.get(Pattern::OneHot, 48, CV::Retpoline);
    auto Disp = T.get(Pattern::OneHot, 48, CV::Dispatcher);
    OS << formatv("  one hot target, N=48: dispatcher {0:f2}x direct, "
                  "{1:f2}x faster than the retpoline\n",
                  *D, *Retp / *Disp);
  }
  for (Pattern P : T.Patterns)
    if (auto D = T.ratio(P, 1024, CV::Dispatcher))
      OS << formatv("  {0}, N=1024: dispatcher {1:f2}x direct\n",
                    patternName(P), *D);
  for (unsigned N : T.Ns) {
    auto W = T.get(Pattern::Zipf, N, CV::Weighted);
    auto S = T.get(Pattern::Zipf, N, CV::SortedTree);
    if (W && S && N > 1)
      OS << formatv("  zipf, N={0}: weighted dispatcher {1:f2}x faster than "
                    "the address-sorted tree\n",
                    N, *S / *W);
  }
  printAdaptiveGoals(R, OS);
  if (std::optional<LayoutCostModel> M = fitCostModel(R.Calls)) {
    LayoutCostModel D;
    OS << formatv("  the cost model on this machine (DispatcherConfig::"
                  "CostModel; a retpoline = 20): Compare {0:f2}, Mispredict "
                  "{1:f1}, IndirectMispredict {2:f1} (the defaults: {3:f2}, "
                  "{4:f1}, {5:f1})\n",
                  M->Compare, M->Mispredict, M->IndirectMispredict, D.Compare,
                  D.Mispredict, D.IndirectMispredict);
  }
  if (const std::optional<CostCalibration> &C = R.Calibration) {
    if (C->Calibrated)
      OS << formatv("  the cost model this process calibrated ({0:f0} us; "
                    "the weighted and adaptive variants use it): Compare "
                    "{1:f2}, Mispredict {2:f1}, IndirectMispredict {3:f1}\n",
                    C->Micros, C->Model.Compare, C->Model.Mispredict,
                    C->Model.IndirectMispredict);
    else
      OS << formatv("  the cost model: the defaults (not calibrated: {0})\n",
                    C->Why);
  }
  std::map<unsigned, double> OneThread;
  for (const ReadScaling &S : R.Scaling)
    if (S.Threads == 1)
      OneThread[S.UpdatesPerSecond] = S.CallsPerSecond;
  for (const ReadScaling &S : R.Scaling) {
    if (S.Threads == 1 || !OneThread.count(S.UpdatesPerSecond))
      continue;
    OS << formatv("  {0} threads, {1} updates/s: {2:f2}x the calls/s of "
                  "one thread",
                  S.Threads, S.UpdatesPerSecond,
                  S.CallsPerSecond / OneThread[S.UpdatesPerSecond]);
    // Each reader needs a CPU, and so does the thread that updates (with
    // the rest of the machine); with fewer, the ratio measures the
    // scheduler.
    if (R.Machine && S.Threads + 1 > R.Machine->CPUs)
      OS << formatv(" ({0} readers and the updater on {1} CPUs: not a "
                    "scaling figure)",
                    S.Threads, R.Machine->CPUs);
    OS << "\n";
  }
}

void printMachine(const MachineInfo &M, raw_ostream &OS) {
  OS << formatv("machine: {0}, {1} CPUs", M.CPUModel, M.CPUs);
  if (M.LoadAverage)
    OS << formatv(", 1-minute load average {0:f2} before measuring",
                  *M.LoadAverage);
  OS << formatv("; LLVM {0}", M.LLVMVersion);
  if (!M.BuildType.empty())
    OS << ", " << M.BuildType << " build";
  OS << "\n\n";
}

} // namespace

MachineInfo describeMachine() {
  MachineInfo M{"unknown", std::max(1u, std::thread::hardware_concurrency()),
                std::nullopt, LLVM_VERSION_STRING, DISPATCHGEN_BUILD_TYPE};
  // /proc files report a size of 0: read them as a stream.
  if (auto Buf = MemoryBuffer::getFileAsStream("/proc/cpuinfo")) {
    SmallVector<StringRef, 32> Lines;
    (*Buf)->getBuffer().split(Lines, '\n');
    for (StringRef Line : Lines)
      if (Line.starts_with("model name")) {
        M.CPUModel = Line.split(':').second.trim().str();
        break;
      }
  }
  cpu_set_t Set;
  if (sched_getaffinity(0, sizeof(Set), &Set) == 0)
    M.CPUs = CPU_COUNT(&Set);
  double Load;
  if (getloadavg(&Load, 1) == 1)
    M.LoadAverage = Load;
  return M;
}

void printReport(const Report &R, raw_ostream &OS) {
  CallTable T(R.Calls);
  if (R.Machine)
    printMachine(*R.Machine, OS);
  if (!R.Calls.empty()) {
    printCalls(T, R, OS);
    printAdaptive(R, OS);
  }
  if (!R.Updates.empty()) {
    OS << formatv("\nupdate latency: one change() (regenerate + patch; sync "
                  "adds the grace period), microseconds; p99 only from {0} "
                  "updates or more\n",
                  MinP99Samples);
    OS << formatv("{0,-6} {1,5} {2,8} {3,12} {4,12} {5,12}\n", "mode", "N",
                  "updates", "median", "p99", "max");
    for (const UpdateLatency &U : R.Updates)
      OS << formatv("{0,-6} {1,5} {2,8} {3,12:f1} {4,12} {5,12:f1}\n",
                    modeName(U.Mode), U.N, U.Updates, U.MedianUs,
                    U.P99Us ? formatv("{0:f1}", *U.P99Us).str() : "-", U.MaxUs);
  }
  if (!R.Scaling.empty()) {
    OS << "\nread-side scaling: calls through a 48-program dispatcher while "
          "an updater churns, one run of each\n";
    OS << formatv("{0,-7} {1,16} {2,16} {3,14} {4,8}\n", "threads",
                  "updates/s asked", "updates/s done", "M calls/s", "seconds");
    for (const ReadScaling &S : R.Scaling)
      OS << formatv("{0,-7} {1,16} {2,16:f1} {3,14:f2} {4,8:f2}\n", S.Threads,
                    S.UpdatesPerSecond, S.AchievedUpdatesPerSecond,
                    S.CallsPerSecond / 1e6, S.Seconds);
  }
  if (!R.Memory.empty()) {
    OS << "\nmemory: resident set growth from one dispatcher with N "
          "programs\n";
    for (const MemoryUse &M : R.Memory)
      OS << formatv("  N={0,-5} {1:f1} KiB\n", M.N, M.ResidentBytes / 1024.0);
  }
  if (const std::optional<ManyDispatchers> &M = R.Many) {
    auto P99 = [](const std::optional<double> &V) {
      return V ? formatv("{0:f1}", *V).str() : std::string("-");
    };
    OS << formatv("\nmany dispatchers: {0} alive at once, {1} programs each, "
                  "one process\n",
                  M->Dispatchers, M->ProgramsEach);
    OS << formatv("  create()          median {0:f1} us, p99 {1} us, max "
                  "{2:f1} us ({3} samples)\n",
                  M->CreateMedianUs, P99(M->CreateP99Us), M->CreateMaxUs,
                  M->Dispatchers);
    OS << formatv("  add {0} programs    median {1:f1} us, p99 {2} us, max "
                  "{3:f1} us\n",
                  M->ProgramsEach, M->RegisterMedianUs, P99(M->RegisterP99Us),
                  M->RegisterMaxUs);
    OS << formatv("  resident set      {0:f0} bytes per dispatcher; {1} "
                  "mappings added in all\n",
                  M->ResidentBytesEach, M->MappingsAdded);
    OS << formatv("  every program reached directly: {0}; destroy {1:f1} us "
                  "each\n",
                  M->AllDirect ? "yes" : "NO", M->DestroyEachUs);
    OS << formatv("  {0} create/destroy cycles, one dispatcher at a time:\n",
                  M->Cycles);
    OS << formatv("  {0,10} {1,14} {2,9} {3,5}\n", "cycle", "resident KiB",
                  "mappings", "fds");
    for (const ManyDispatchers::Sample &S : M->Churn)
      OS << formatv("  {0,10} {1,14:f0} {2,9} {3,5}\n", S.Cycle,
                    S.ResidentBytes / 1024.0, S.Mappings, S.FileDescriptors);
    if (const std::optional<ManyDispatchers::AdaptiveCost> &A = M->Adaptive) {
      OS << formatv("  {0} adaptive dispatchers (default AdaptiveConfig, "
                    "no calls):\n",
                    M->Dispatchers);
      OS << formatv("  create() and add  median {0:f1} us\n",
                    A->CreateMedianUs);
      OS << formatv("  resident set      {0:f0} bytes per dispatcher; {1} "
                    "mappings added in all\n",
                    A->ResidentBytesEach, A->MappingsAdded);
      OS << formatv("  the learner       {0:f0}% of a CPU, {1} windows "
                    "closed per second\n",
                    A->LearnerCPUShare * 100, A->WindowsPerSecond);
    }
  }
  if (!R.Calls.empty() || !R.Scaling.empty()) {
    OS << "\n";
    printSummary(T, R, OS);
  }
}

void writeJSON(const Report &R, raw_ostream &OS) {
  CallTable T(R.Calls);
  json::OStream J(OS, 2);
  J.object([&] {
    if (const std::optional<MachineInfo> &M = R.Machine)
      J.attributeObject("machine", [&] {
        J.attribute("cpu_model", M->CPUModel);
        J.attribute("cpus", M->CPUs);
        if (M->LoadAverage)
          J.attribute("load_average", *M->LoadAverage);
        J.attribute("llvm_version", M->LLVMVersion);
        J.attribute("build_type", M->BuildType);
      });
    if (R.CallLoops) {
      J.attribute("call_loops", R.CallLoops);
      J.attribute("calls_per_loop", R.CallsPerLoop);
      if (R.PhaseCallsPerLoop)
        J.attribute("phase_calls_per_loop", R.PhaseCallsPerLoop);
    }
    if (std::optional<LayoutCostModel> M = fitCostModel(R.Calls))
      J.attributeObject("cost_model", [&] {
        J.attribute("compare", M->Compare);
        J.attribute("mispredict", M->Mispredict);
        J.attribute("indirect_mispredict", M->IndirectMispredict);
      });
    if (const std::optional<CostCalibration> &C = R.Calibration)
      J.attributeObject("calibration", [&] {
        J.attribute("calibrated", C->Calibrated);
        J.attribute("compare", C->Model.Compare);
        J.attribute("mispredict", C->Model.Mispredict);
        J.attribute("indirect_mispredict", C->Model.IndirectMispredict);
        J.attribute("micros", C->Micros);
        if (!C->Calibrated)
          J.attribute("why", C->Why);
      });
    J.attributeArray("calls", [&] {
      for (const CallCost &C : R.Calls)
        J.object([&] {
          J.attribute("n", C.N);
          J.attribute("pattern", patternName(C.P));
          J.attribute("variant", variantName(C.V));
          J.attribute("ns_per_call", C.NsPerCall);
          if (auto Ratio = T.ratio(C.P, C.N, C.V))
            J.attribute("ratio_to_direct", *Ratio);
          if (const std::optional<LearnedLayout> &L = C.Learned) {
            J.attribute("layout", L->Layout);
            J.attribute("predicted_cost", L->PredictedCost);
            J.attribute("learning_windows", L->Windows);
            J.attribute("promoted", L->Promoted.size());
            if (L->LearningNsPerCall > 0)
              J.attribute("learning_ns_per_call", L->LearningNsPerCall);
          }
        });
    });
    J.attributeArray("updates", [&] {
      for (const UpdateLatency &U : R.Updates)
        J.object([&] {
          J.attribute("n", U.N);
          J.attribute("mode", modeName(U.Mode));
          J.attribute("updates", U.Updates);
          J.attribute("median_us", U.MedianUs);
          if (U.P99Us)
            J.attribute("p99_us", *U.P99Us);
          J.attribute("max_us", U.MaxUs);
        });
    });
    J.attributeArray("scaling", [&] {
      for (const ReadScaling &S : R.Scaling)
        J.object([&] {
          J.attribute("threads", S.Threads);
          J.attribute("updates_per_second", S.UpdatesPerSecond);
          J.attribute("achieved_updates_per_second",
                      S.AchievedUpdatesPerSecond);
          J.attribute("calls_per_second", S.CallsPerSecond);
          J.attribute("seconds", S.Seconds);
        });
    });
    J.attributeArray("memory", [&] {
      for (const MemoryUse &M : R.Memory)
        J.object([&] {
          J.attribute("n", M.N);
          J.attribute("resident_bytes", M.ResidentBytes);
        });
    });
    if (const std::optional<ManyDispatchers> &M = R.Many)
      J.attributeObject("many_dispatchers", [&] {
        J.attribute("dispatchers", M->Dispatchers);
        J.attribute("programs_each", M->ProgramsEach);
        J.attribute("create_median_us", M->CreateMedianUs);
        if (M->CreateP99Us)
          J.attribute("create_p99_us", *M->CreateP99Us);
        J.attribute("create_max_us", M->CreateMaxUs);
        J.attribute("register_median_us", M->RegisterMedianUs);
        if (M->RegisterP99Us)
          J.attribute("register_p99_us", *M->RegisterP99Us);
        J.attribute("register_max_us", M->RegisterMaxUs);
        J.attribute("resident_bytes_each", M->ResidentBytesEach);
        J.attribute("mappings_added", M->MappingsAdded);
        J.attribute("all_direct", M->AllDirect);
        J.attribute("destroy_each_us", M->DestroyEachUs);
        J.attribute("cycles", M->Cycles);
        J.attributeArray("churn", [&] {
          for (const ManyDispatchers::Sample &S : M->Churn)
            J.object([&] {
              J.attribute("cycle", S.Cycle);
              J.attribute("resident_bytes", S.ResidentBytes);
              J.attribute("mappings", S.Mappings);
              J.attribute("file_descriptors", S.FileDescriptors);
            });
        });
        if (const std::optional<ManyDispatchers::AdaptiveCost> &A = M->Adaptive)
          J.attributeObject("adaptive", [&] {
            J.attribute("create_median_us", A->CreateMedianUs);
            J.attribute("resident_bytes_each", A->ResidentBytesEach);
            J.attribute("mappings_added", A->MappingsAdded);
            J.attribute("learner_cpu_share", A->LearnerCPUShare);
            J.attribute("windows_per_second", A->WindowsPerSecond);
          });
      });
  });
  OS << "\n";
}

Error writePlot(const Report &R, StringRef Path) {
  StringRef Ext = sys::path::extension(Path);
  StringRef Terminal;
  if (Ext.equals_insensitive(".svg"))
    Terminal = "svg size 1200,900 dynamic background rgb 'white'";
  else if (Ext.equals_insensitive(".png"))
    Terminal = "png size 1200,900";
  else
    return createStringError(inconvertibleErrorCode(),
                             "cannot plot to '" + Path +
                                 "': the name must end in .svg or .png");
  if (R.Calls.empty())
    return createStringError(inconvertibleErrorCode(),
                             "no call cost was measured: nothing to plot");
  auto Gnuplot = sys::findProgramByName("gnuplot");
  if (!Gnuplot)
    return createStringError(inconvertibleErrorCode(),
                             "cannot plot to '" + Path +
                                 "': gnuplot not found (Debian package "
                                 "gnuplot-nox)");

  CallTable T(R.Calls);
  SmallString<128> DataPath, ScriptPath, LogPath;
  for (auto [Suffix, Out] :
       {std::pair{"dat", &DataPath}, std::pair{"gp", &ScriptPath},
        std::pair{"log", &LogPath}})
    if (std::error_code EC =
            sys::fs::createTemporaryFile("dispatch-gen-plot", Suffix, *Out))
      return errorCodeToError(EC);
  scope_exit Cleanup([&] {
    for (StringRef P : {DataPath.str(), ScriptPath.str(), LogPath.str()})
      sys::fs::remove(P);
  });

  {
    std::error_code EC;
    raw_fd_ostream Data(DataPath, EC);
    if (EC)
      return errorCodeToError(EC);
    // One block per pattern (gnuplot's `index`): N, then one column per
    // variant.
    for (Pattern P : T.Patterns) {
      for (unsigned N : T.Ns) {
        Data << N;
        for (CallVariant V : AllVariants) {
          auto X = T.get(P, N, V);
          Data << ' ' << (X ? formatv("{0:f4}", *X).str() : "NaN");
        }
        Data << "\n";
      }
      Data << "\n\n";
    }
  }
  {
    std::error_code EC;
    raw_fd_ostream Script(ScriptPath, EC);
    if (EC)
      return errorCodeToError(EC);
    // The paths are passed as ARG1 and ARG2 (`gnuplot -c`), never pasted
    // into the script: a quote in a path would end the string there and
    // the rest would run as gnuplot commands (`system` runs a shell).
    Script << "set terminal " << Terminal << "\n";
    Script << "set output ARG1\n";
    unsigned Cols = T.Patterns.size() > 1 ? 2 : 1;
    unsigned Rows = (T.Patterns.size() + Cols - 1) / Cols;
    Script << formatv("set multiplot layout {0},{1} title 'dispatch-gen: ns "
                      "per call against the number of programs'\n",
                      Rows, Cols);
    Script << "set logscale x 2\nset xlabel 'N (programs)'\n"
              "set ylabel 'ns per call'\nset key top left font ',9'\n"
              "set grid\nset yrange [0:*]\n";
    for (size_t I = 0; I < T.Patterns.size(); ++I) {
      Script << "set title '" << patternName(T.Patterns[I]) << "'\nplot";
      for (size_t C = 0; C < std::size(AllVariants); ++C)
        Script << (C ? ", \\\n     " : " ") << "ARG2 index " << I
               << " using 1:" << C + 2 << " with linespoints title '"
               << variantName(AllVariants[C]) << "'";
      Script << "\n";
    }
    Script << "unset multiplot\n";
  }
  std::optional<StringRef> Redirects[] = {std::nullopt, LogPath.str(),
                                          LogPath.str()};
  std::string ErrMsg;
  int RC = sys::ExecuteAndWait(
      *Gnuplot, {*Gnuplot, "-c", ScriptPath.str(), Path, DataPath.str()},
      std::nullopt, Redirects, 0, 0, &ErrMsg);
  if (RC != 0) {
    std::string Log;
    if (auto Buf = MemoryBuffer::getFile(LogPath))
      Log = (*Buf)->getBuffer().trim().str();
    return createStringError(inconvertibleErrorCode(),
                             formatv("gnuplot failed to plot to '{0}': {1}",
                                     Path, Log.empty() ? ErrMsg : Log));
  }
  return Error::success();
}

} // namespace dispatchgen::bench
