//===- BenchCommand.cpp - dispatch-gen bench ------------------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// `dispatch-gen bench` measures a call through a dispatcher side by side
// with its peers (direct, indirect, retpoline, weighted dispatcher,
// address-sorted tree, adaptive dispatcher), the update latency, read-side
// scaling under update churn and the memory of one dispatcher, and prints one
// report. The measuring is the library's (dispatch-gen/Benchmark.h); this file
// only picks what to run.
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "dispatch-gen/Benchmark.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>
#include <unistd.h>

using namespace llvm;
using namespace dispatchgen::bench;

namespace dispatchgen::tool {

static cl::OptionCategory BenchCategory("bench options");

static cl::opt<bool>
    Quick("quick", cl::sub(benchCommand()), cl::cat(BenchCategory),
          cl::desc("Fewer N, iterations and updates: under a minute on two "
                   "cores (a smoke test, not a measurement)"));

static cl::list<unsigned>
    Ns("n", cl::sub(benchCommand()), cl::cat(BenchCategory), cl::CommaSeparated,
       cl::value_desc("N,..."),
       cl::desc("Numbers of programs for the call cost (default "
                "1,2,4,8,16,48,256,1024,4096; with --quick 1,8,48,1024)"));

static cl::list<std::string>
    PatternNames("patterns", cl::sub(benchCommand()), cl::cat(BenchCategory),
                 cl::CommaSeparated, cl::value_desc("name,..."),
                 cl::desc("Call patterns: one-hot, round-robin, uniform, "
                          "zipf, unregistered, phase (default: all)"));

static cl::opt<uint64_t>
    Iterations("iterations", cl::sub(benchCommand()), cl::cat(BenchCategory),
               cl::desc("Calls per timed loop (default 262144; with "
                        "--quick 65536)"));

static cl::opt<unsigned>
    Repetitions("repetitions", cl::sub(benchCommand()), cl::cat(BenchCategory),
                cl::desc("Timed loops per variant; the median counts "
                         "(default 21; with --quick 5)"));

static cl::opt<bool>
    NoUpdates("no-updates", cl::sub(benchCommand()), cl::cat(BenchCategory),
              cl::desc("Skip update latency, read-side scaling, memory and "
                       "many dispatchers"));

static cl::opt<bool> NoMany(
    "no-many", cl::sub(benchCommand()), cl::cat(BenchCategory),
    cl::desc("Skip the many-dispatchers section (10,000 dispatchers at once, "
             "100,000 create/destroy cycles; with --quick 1,000 and 2,000)"));

static cl::opt<bool>
    OnlyMany("only-many", cl::sub(benchCommand()), cl::cat(BenchCategory),
             cl::desc("Run only the many-dispatchers section"));

static cl::opt<bool> CalibrateOnly(
    "calibrate", cl::sub(benchCommand()), cl::cat(BenchCategory),
    cl::desc("Only measure the cost model's constants on this CPU, as a "
             "weighted or adaptive dispatcher does once per process "
             "(CostCalibration.h): --repetitions times (default 5), each "
             "measurement and the medians"));

static cl::opt<unsigned> ManyCount(
    "many-dispatchers", cl::sub(benchCommand()), cl::cat(BenchCategory),
    cl::value_desc("N"),
    cl::desc("Dispatchers alive at once in the many-dispatchers section "
             "(default 10000; with --quick 1000)"));

static cl::opt<unsigned> ManyCycles(
    "many-cycles", cl::sub(benchCommand()), cl::cat(BenchCategory),
    cl::value_desc("N"),
    cl::desc("Create/destroy cycles in the many-dispatchers section (default "
             "100000; with --quick 2000)"));

static cl::opt<std::string>
    JSONFile("json", cl::sub(benchCommand()), cl::cat(BenchCategory),
             cl::value_desc("file"),
             cl::desc("Also write the results as JSON to this file"));

static cl::opt<std::string>
    PlotFile("plot", cl::sub(benchCommand()), cl::cat(BenchCategory),
             cl::value_desc("file.svg|file.png"),
             cl::desc("Plot ns per call against N with gnuplot"));

namespace {

void progress(const Twine &Msg) {
  errs() << "==> " << Msg << "\n";
  errs().flush();
}

Expected<std::vector<Pattern>> selectedPatterns() {
  if (PatternNames.empty())
    return std::vector<Pattern>(std::begin(AllPatterns), std::end(AllPatterns));
  std::vector<Pattern> Out;
  for (const std::string &Name : PatternNames) {
    auto It =
        find_if(AllPatterns, [&](Pattern P) { return patternName(P) == Name; });
    if (It == std::end(AllPatterns))
      return createStringError(inconvertibleErrorCode(),
                               formatv("unknown pattern '{0}'; expected "
                                       "one-hot, round-robin, uniform, zipf, "
                                       "unregistered or phase",
                                       Name));
    if (!is_contained(Out, *It))
      Out.push_back(*It);
  }
  return Out;
}

/// `bench --calibrate`: Times measurements of the cost model's constants,
/// each with what it timed, then the medians.
int calibrate(StringRef Tool, unsigned Times) {
  std::vector<double> Compare, Mispredict, Indirect;
  outs() << "calibration  unit-ns  compare-ns  mispredict-ns  "
            "indirect-mispredict-ns  Compare  Mispredict  "
            "IndirectMispredict  us\n";
  for (unsigned I = 0; I < Times; ++I) {
    Expected<CostCalibration> C = calibrateCostModel();
    if (!C)
      return fail(Tool, C.takeError());
    if (!C->Calibrated)
      return fail(Tool, formatv("calibration {0} kept the defaults: {1}", I + 1,
                                C->Why));
    outs() << formatv("{0,11}  {1,7:f3}  {2,10:f3}  {3,13:f2}  {4,22:f2}  "
                      "{5,7:f2}  {6,10:f1}  {7,18:f1}  {8,2:f0}\n",
                      I + 1, C->UnitNs, C->CompareNs, C->MispredictNs,
                      C->IndirectMispredictNs, C->Model.Compare,
                      C->Model.Mispredict, C->Model.IndirectMispredict,
                      C->Micros);
    Compare.push_back(C->Model.Compare);
    Mispredict.push_back(C->Model.Mispredict);
    Indirect.push_back(C->Model.IndirectMispredict);
  }
  LayoutCostModel D;
  outs() << formatv("median: Compare {0:f2}, Mispredict {1:f1}, "
                    "IndirectMispredict {2:f1} (a retpoline = 20; the "
                    "defaults: {3:f2}, {4:f1}, {5:f1})\n",
                    median(Compare), median(Mispredict), median(Indirect),
                    D.Compare, D.Mispredict, D.IndirectMispredict);
  return 0;
}

Error measureUpdates(Report &R) {
  struct Case {
    unsigned N, Updates;
  };
  // Enough updates for a p99 (MinP99Samples) at every N of a full run;
  // --quick reports only the maximum at N = 1024.
  std::vector<Case> Cases =
      Quick ? std::vector<Case>{{1, MinP99Samples},
                                {48, MinP99Samples},
                                {1024, 5}}
            : std::vector<Case>{{1, 300}, {48, 300}, {1024, 200}, {4096, 200}};
  for (ReclaimMode Mode : {ReclaimMode::Asynchronous, ReclaimMode::Synchronous})
    for (Case C : Cases) {
      progress(formatv("update latency: N={0}, {1}", C.N,
                       Mode == ReclaimMode::Asynchronous ? "async" : "sync"));
      auto U = measureUpdateLatency(C.N, Mode, C.Updates);
      if (!U)
        return U.takeError();
      R.Updates.push_back(*U);
    }

  unsigned MaxThreads = std::max(1u, std::thread::hardware_concurrency());
  double Seconds = Quick ? 0.25 : 1.0;
  for (unsigned Rate : {0u, 100u, 1000u})
    for (unsigned T = 1; T <= MaxThreads; ++T) {
      progress(
          formatv("read-side scaling: {0} threads, {1} updates/s", T, Rate));
      auto S = measureReadScaling(T, Rate, Seconds);
      if (!S)
        return S.takeError();
      R.Scaling.push_back(*S);
    }
  return Error::success();
}

Error measureMemoryUse(Report &R) {
  for (unsigned N : {48u, 4096u}) {
    progress(formatv("memory: one dispatcher with {0} programs", N));
    auto M = measureMemory(N);
    if (!M)
      return M.takeError();
    R.Memory.push_back(*M);
  }
  return Error::success();
}

} // namespace

/// Whether a file can be created or replaced at Path: its directory exists
/// and is writable, and Path is not a directory.
static Error checkWritable(StringRef Path) {
  auto Fail = [&](const Twine &Why) {
    return createStringError(inconvertibleErrorCode(),
                             "cannot write '" + Path + "': " + Why);
  };
  if (sys::fs::is_directory(Path))
    return Fail("it is a directory");
  SmallString<256> Dir(Path);
  sys::path::remove_filename(Dir);
  if (Dir.empty())
    Dir = ".";
  if (!sys::fs::is_directory(Dir))
    return Fail("no directory '" + Dir + "'");
  if (::access(Dir.c_str(), W_OK) != 0)
    return Fail(errnoAsErrorCode().message());
  return Error::success();
}

/// Writes the report as JSON to Out, and says so if that failed (a full
/// disk, /dev/full) instead of leaving it to raw_fd_ostream's destructor.
static int writeJSONTo(StringRef Tool, const Report &R, raw_fd_ostream &Out) {
  writeJSON(R, Out);
  Out.flush();
  if (!Out.has_error())
    return 0;
  std::string Why = Out.error().message();
  Out.clear_error();
  return fail(Tool,
              formatv("cannot write '{0}': {1}", JSONFile.getValue(), Why));
}

int runBench(const Invocation &Inv) {
  StringRef Tool = Inv.ToolName;
  CallCostOptions Opts;
  if (Quick) {
    Opts.Ns = {1, 8, 48, 1024};
    Opts.Iterations = 1u << 16;
    Opts.Repetitions = 5;
  }
  if (!Ns.empty())
    Opts.Ns.assign(Ns.begin(), Ns.end());
  for (unsigned N : Opts.Ns)
    if (N == 0 || N > UpdateDriver::MaxPrograms)
      return fail(Tool, formatv("--n: {0} programs is out of range (1 to {1})",
                                N, UpdateDriver::MaxPrograms));
  if (Iterations.getNumOccurrences()) {
    if (Iterations == 0)
      return fail(Tool, "--iterations must be at least 1");
    Opts.Iterations = Iterations;
  }
  if (Repetitions.getNumOccurrences()) {
    if (Repetitions == 0)
      return fail(Tool, "--repetitions must be at least 1");
    Opts.Repetitions = Repetitions;
  }
  auto Patterns = selectedPatterns();
  if (!Patterns)
    return fail(Tool, Patterns.takeError());
  Opts.Patterns = std::move(*Patterns);
  if (!PlotFile.empty()) {
    StringRef Ext = sys::path::extension(PlotFile);
    if (!Ext.equals_insensitive(".svg") && !Ext.equals_insensitive(".png"))
      return fail(Tool, formatv("--plot: '{0}' must end in .svg or .png",
                                PlotFile.getValue()));
    if (!sys::findProgramByName("gnuplot"))
      return fail(Tool, "--plot needs gnuplot (Debian package gnuplot-nox)");
    // gnuplot writes the file at the end: check now that it can.
    if (Error E = checkWritable(PlotFile))
      return fail(Tool, formatv("--plot: {0}", toString(std::move(E))));
  }

  // Opened now, so that a bad path fails before minutes of measuring.
  std::optional<raw_fd_ostream> JSONOut;
  if (!JSONFile.empty()) {
    std::error_code EC;
    JSONOut.emplace(JSONFile, EC, sys::fs::OF_Text);
    if (EC)
      return fail(Tool, formatv("cannot write '{0}': {1}", JSONFile.getValue(),
                                EC.message()));
  }

  if (CalibrateOnly) {
    if (OnlyMany || NoUpdates || NoMany || Quick || !Ns.empty() ||
        !PatternNames.empty() || Iterations.getNumOccurrences() ||
        !JSONFile.empty() || !PlotFile.empty())
      return fail(Tool, "--calibrate takes no option but --repetitions");
    return calibrate(Tool, Repetitions.getNumOccurrences() ? Repetitions : 5);
  }
  if (NoMany && OnlyMany)
    return fail(Tool, "--no-many and --only-many exclude each other");
  unsigned ManyN = Quick ? 1000 : 10000, ManyC = Quick ? 2000 : 100000;
  if (ManyCount.getNumOccurrences())
    ManyN = ManyCount;
  if (ManyCycles.getNumOccurrences())
    ManyC = ManyCycles;
  if (ManyN == 0)
    return fail(Tool, "--many-dispatchers must be at least 1");

  Report R;
  R.Machine = describeMachine();
  // The cost model the weighted and adaptive dispatchers choose by, before
  // any of them is created: no timed create() or loop measures it.
  R.Calibration = processCostCalibration();
  R.CallLoops = Opts.Repetitions;
  R.CallsPerLoop = Opts.Iterations;
  if (is_contained(Opts.Patterns, Pattern::Phase))
    R.PhaseCallsPerLoop = Opts.PhaseIterations;
  if (!NoUpdates && !OnlyMany)
    if (Error E = measureMemoryUse(R))
      return fail(Tool, std::move(E));
  if ((!NoUpdates && !NoMany) || OnlyMany) {
    progress(formatv("many dispatchers: {0} of 4 programs, then {1} "
                     "create/destroy cycles",
                     ManyN, ManyC));
    auto M = measureManyDispatchers(ManyN, 4, ManyC, progress);
    if (!M)
      return fail(Tool, M.takeError());
    R.Many = std::move(*M);
  }
  if (OnlyMany) {
    R.CallLoops = 0;
    printReport(R, outs());
    outs().flush();
    if (JSONOut)
      return writeJSONTo(Tool, R, *JSONOut);
    return 0;
  }
  auto Calls = measureCallCost(Opts, progress);
  if (!Calls)
    return fail(Tool, Calls.takeError());
  R.Calls = std::move(*Calls);
  if (!NoUpdates)
    if (Error E = measureUpdates(R))
      return fail(Tool, std::move(E));

  printReport(R, outs());
  outs().flush();
  if (JSONOut)
    if (int RC = writeJSONTo(Tool, R, *JSONOut))
      return RC;
  if (!PlotFile.empty())
    if (Error E = writePlot(R, PlotFile))
      return fail(Tool, std::move(E));
  return 0;
}

} // namespace dispatchgen::tool
