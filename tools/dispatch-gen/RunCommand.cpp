//===- RunCommand.cpp - dispatch-gen run ----------------------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// `dispatch-gen run` compiles C programs, JITs them, registers them in a
// live dispatcher and calls them from several threads through the
// dispatcher's entry, then swaps them while the threads call, and ends with
// a verdict. The harness is the library's (RunHarness.h); this driver turns
// the options into RunOptions, runs the phases one by one and prints each
// result as it comes.
//
// What stays here is what only a process may do: a program or hook that
// crashes (a signal) or never returns cannot be recovered from, so the
// crash handlers and the watchdog end the process with one line that says
// where, from what the harness tells (getRunPhase, getCallingProgram).
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "dispatch-gen/RunHarness.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <mutex>
#include <thread>

#include <unistd.h>

using namespace llvm;

namespace dispatchgen::tool {

static cl::OptionCategory RunCategory("run options");

static cl::list<std::string> Files(cl::Positional, cl::sub(runCommand()),
                                   cl::cat(RunCategory),
                                   cl::desc("<file.c>... [-- clang-args]"));

static cl::opt<unsigned> Timeout(
    "timeout", cl::sub(runCommand()), cl::cat(RunCategory), cl::init(600),
    cl::value_desc("seconds"),
    cl::desc("Stop with an error when the run takes longer (a program or "
             "dispatchgen_drive that never returns); 0: no limit (default "
             "600)"));

static cl::opt<unsigned> Threads("threads", cl::sub(runCommand()),
                                 cl::cat(RunCategory), cl::init(2),
                                 cl::desc("Calling threads (default 2)"));

static cl::opt<uint64_t>
    Calls("calls", cl::sub(runCommand()), cl::cat(RunCategory),
          cl::init(2000000),
          cl::desc("Calls per thread in each phase (default 2000000)"));

static cl::opt<unsigned>
    SwapEvery("swap-every", cl::sub(runCommand()), cl::cat(RunCategory),
              cl::init(10), cl::value_desc("ms"),
              cl::desc("Milliseconds between swaps in the live phase "
                       "(default 10)"));

static cl::opt<bool> PrintImage("print-image", cl::sub(runCommand()),
                                cl::cat(RunCategory),
                                cl::desc("Print the live image's disassembly"));

static cl::opt<std::string>
    EntryName("entry", cl::sub(runCommand()), cl::cat(RunCategory),
              cl::value_desc("symbol"),
              cl::desc("The dispatcher entry the C code calls (default: "
                       "the one declaration of the dispatcher's type)"));

static cl::opt<bool> AsyncReclaim(
    "async", cl::sub(runCommand()), cl::cat(RunCategory),
    cl::desc("Reclaim old images with call_rcu instead of waiting for the "
             "grace period in each update"));

static cl::opt<bool> NoRetpoline(
    "no-retpoline", cl::sub(runCommand()), cl::cat(RunCategory),
    cl::desc("Make the dispatcher's fallback a plain indirect call instead "
             "of a retpoline (the retpoline baseline phase is then the "
             "plain indirect call through the entry)"));

static cl::opt<bool> Adaptive(
    "adaptive", cl::sub(runCommand()), cl::cat(RunCategory),
    cl::desc("Adaptive dispatch: the library's background learner measures "
             "the calls in short windows, promotes hot unregistered "
             "programs and lays the image out for the counts (the report "
             "ends with what it did)"));

static cl::opt<unsigned>
    MinSwaps("swaps", cl::sub(runCommand()), cl::cat(RunCategory), cl::init(20),
             cl::desc("Keep calling in the live phase until at least this "
                      "many swaps happened (default 20)"));

namespace {

void writeErr(const char *S) { (void)!::write(2, S, std::strlen(S)); }

/// A program or hook that crashes: say where, in one line, and exit 1.
/// Only async-signal-safe calls.
void onCrash(int Sig) {
  // Two threads may crash at once: the first reports and exits, the
  // others wait for that (their lines would mix with its).
  static std::atomic<bool> Reporting{false};
  if (Reporting.exchange(true))
    for (;;)
      ::pause();
  const char *What = Sig == SIGSEGV  ? "a segmentation fault"
                     : Sig == SIGBUS ? "a bus error"
                     : Sig == SIGILL ? "an illegal instruction"
                     : Sig == SIGFPE ? "an arithmetic exception"
                                     : "a fatal signal";
  writeErr("dispatch-gen: error: ");
  writeErr(What);
  writeErr(" while ");
  writeErr(getRunPhase());
  if (const char *Program = getCallingProgram()) {
    writeErr(", calling program ");
    writeErr(Program);
  }
  writeErr("\n");
  ::_exit(1);
}

void installCrashHandlers() {
  struct sigaction SA;
  std::memset(&SA, 0, sizeof(SA));
  SA.sa_handler = onCrash;
  // On the thread's alternate stack where it has one (the harness's calling
  // threads do): a program that recurses without end overflows its own.
  SA.sa_flags = SA_ONSTACK;
  sigemptyset(&SA.sa_mask);
  for (int Sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE})
    sigaction(Sig, &SA, nullptr);
}

/// Ends the process with an error if the run outlives --timeout seconds.
class Watchdog {
public:
  explicit Watchdog(unsigned Seconds) {
    if (Seconds)
      Thread = std::thread([this, Seconds] {
        std::unique_lock<std::mutex> Lock(M);
        if (CV.wait_for(Lock, std::chrono::seconds(Seconds),
                        [this] { return Done; }))
          return;
        std::string Line =
            formatv("dispatch-gen: error: the run did not finish within {0} "
                    "s, while {1}: a program or dispatchgen_drive may never "
                    "return (--timeout)\n",
                    Seconds, getRunPhase())
                .str();
        writeErr(Line.c_str());
        ::_exit(1);
      });
  }
  ~Watchdog() {
    if (!Thread.joinable())
      return;
    {
      std::lock_guard<std::mutex> Lock(M);
      Done = true;
    }
    CV.notify_one();
    Thread.join();
  }

private:
  std::mutex M;
  std::condition_variable CV;
  bool Done = false;
  std::thread Thread;
};

void printPhase(StringRef What, const PhaseResult &R) {
  outs() << formatv("  {0}: {1:N} calls in {2:f3} s = {3:f2} M calls/s, "
                    "{4:f2} ns per call per thread\n",
                    What, R.Calls, R.Seconds, R.callsPerSecond() / 1e6,
                    R.nsPerCallPerThread());
}

/// With --adaptive: what the learner did, at the end of the report.
void printAdaptive(const RunHarness &H, const LiveResult &Live) {
  const DispatcherStatus &S = Live.Status;
  auto NameOf = [&](uint64_t Address) {
    for (const RunProgram &P : H.programs())
      if (P.Address == Address)
        return P.Name;
    return formatv("{0:x}", Address).str();
  };
  std::string Promoted;
  for (uint64_t Address : S.Promoted)
    Promoted += (Promoted.empty() ? "" : ", ") + NameOf(Address);
  outs() << formatv("  adaptive: {0} learning windows ({1} in the live "
                    "phase); {2} promoted{3}{4}\n",
                    S.LearningWindows, Live.LearningWindows, S.Promoted.size(),
                    Promoted.empty() ? "" : ": ", Promoted);
  outs() << formatv("  adaptive: layout {0}, predicted {1:f1} units per "
                    "call{2}\n",
                    S.Layout.empty() ? "none" : S.Layout, S.PredictedCost,
                    S.Learning ? " (a learning window is open)" : "");
  outs() << formatv("  adaptive: cost model {0}{1}{2}: compare {3:f2}, "
                    "mispredict {4:f1}, indirect mispredict {5:f1} (a "
                    "retpoline {6:f0})\n",
                    S.CostModelSource, S.CostModelNote.empty() ? "" : ", ",
                    S.CostModelNote, S.CostModel.Compare,
                    S.CostModel.Mispredict, S.CostModel.IndirectMispredict,
                    S.CostModel.Retpoline);
  if (!S.LearningError.empty())
    outs() << "  adaptive: a learning window failed: " << S.LearningError
           << "\n";
}

void printVerdict(const RunHarness &H, const LiveResult &Live) {
  printPhase("during swaps", Live.Calls);
  const DispatcherStatus &S = Live.Status;
  outs() << formatv("  {0} swaps; update (regenerate + patch) median {1:f2} "
                    "ms, max {2:f2} ms; grace period median {3:f0} us\n",
                    Live.swaps(), Live.medianUpdateMs(), Live.maxUpdateMs(),
                    Live.medianGraceUs());
  outs() << formatv("  generation {0}, {1} programs, {2} direct, {3} through "
                    "the fallback\n",
                    S.Generation, S.Programs, S.DirectTargets,
                    S.FallbackTargets);
  outs() << "  calls per program (asked = by the callers, ran = counted by "
            "the program):\n";
  for (auto [P, C] : zip(H.programs(), Live.Counts))
    outs() << formatv("    {0,-28} asked {1,12:N}  ran {2,12:N}{3}\n", P.Name,
                      C.Asked, C.Ran, C.Asked == C.Ran ? "" : "  <--");
  if (H.options().Adaptive)
    printAdaptive(H, Live);
  if (Live.ok())
    outs() << formatv("verdict: OK: all {0:N} calls reached the program they "
                      "asked for, each registered when called; none ran "
                      "after its release\n",
                      Live.Calls.Calls);
  else
    outs() << formatv("verdict: FAILED: {0} calls misrouted, {1} ran after "
                      "their release{2}\n",
                      Live.Misrouted, Live.RanAfterRelease,
                      Live.ImageError.empty() ? std::string()
                                              : "; image: " + Live.ImageError);
}

} // namespace

int runRun(const Invocation &Inv) {
  ExitOnError ExitOnErr((Inv.ToolName + ": error: ").str());
  if (Threads == 0 || Calls == 0 || SwapEvery == 0)
    ExitOnErr(createStringError(
        "--threads, --calls and --swap-every must be at least 1"));
  RunOptions Opts;
  Opts.Files = Files;
  Opts.Frontend = ExitOnErr(getFrontendOptions(Inv, /*ExposePrograms=*/true));
  Opts.Entry = EntryName;
  Opts.Threads = Threads;
  Opts.CallsPerThread = Calls;
  Opts.SwapInterval = std::chrono::milliseconds(SwapEvery);
  Opts.MinSwaps = MinSwaps;
  Opts.AsyncReclaim = AsyncReclaim;
  Opts.RetpolineFallback = !NoRetpoline;
  Opts.Adaptive = Adaptive;

  // A program, a hook or the compiler that crashes or never returns ends
  // the run with one line saying where.
  installCrashHandlers();
  Watchdog Guard(Timeout);
  if (!Files.empty()) {
    outs() << formatv("==> compiling {0}\n", join(Files, " "));
    outs().flush();
  }
  std::unique_ptr<RunHarness> H = ExitOnErr(RunHarness::compile(Opts));
  outs() << formatv("found {0} programs of type {1} ({2}); entry '{3}'\n",
                    H->programs().size(), H->signature().CType,
                    H->signature().Text, H->entry());
  for (const RunProgram &P : H->programs())
    outs() << formatv("  {0,-28} {1}\n", P.Name, P.Where);
  ExitOnErr(H->link());

  // Baselines: the plain indirect call (the file's own, if it has
  // dispatchgen_expect), then the entry with no program registered: every
  // call takes the fallback, a retpoline unless --no-retpoline (with
  // --adaptive, unless the learner promoted the program).
  outs() << formatv("==> {0} threads x {1:N} calls each, programs "
                    "round-robin\n",
                    unsigned(Threads), uint64_t(Calls));
  outs().flush();
  std::optional<PhaseResult> Plain = ExitOnErr(H->callPlain());
  if (Plain)
    printPhase("plain indirect call   ", *Plain);
  PhaseResult Fallback = ExitOnErr(H->callFallback());
  printPhase(Adaptive      ? "adaptive, no program  "
             : NoRetpoline ? "entry, no program     "
                           : "retpoline (no program)",
             Fallback);

  DispatcherStatus S = ExitOnErr(H->registerAll());
  outs() << formatv("==> registered {0} programs: image {1:x}, {2} bytes, "
                    "{3} direct, {4} through the fallback; update took "
                    "{5:f2} ms\n",
                    S.Programs, S.ImageAddress, S.ImageSize, S.DirectTargets,
                    S.FallbackTargets, S.LastUpdateLatency.count() / 1e6);
  if (PrintImage)
    ExitOnErr(H->dumpImage(outs()));
  PhaseResult Direct = ExitOnErr(H->callDirect());
  printPhase("dispatcher (direct)   ", Direct);
  outs() << formatv("  dispatcher: {0:f2}x the calls/s of the {1}",
                    Direct.callsPerSecond() / Fallback.callsPerSecond(),
                    Adaptive      ? "adaptive entry with no program"
                    : NoRetpoline ? "entry's indirect call"
                                  : "retpoline");
  if (Plain)
    outs() << formatv(", {0:f2}x the plain indirect call's",
                      Direct.callsPerSecond() / Plain->callsPerSecond());
  outs() << "\n";

  outs() << formatv("==> live swap: one program swapped every {0} ms while "
                    "the threads call{1}\n",
                    unsigned(SwapEvery),
                    Adaptive ? ", and the learner opens windows" : "");
  outs().flush();
  LiveResult Live = ExitOnErr(H->swapLive());
  printVerdict(*H, Live);
  return Live.ok() ? 0 : 1;
}

} // namespace dispatchgen::tool
