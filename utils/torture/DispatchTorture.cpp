//===- DispatchTorture.cpp - RCU torture test of a live dispatcher --------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// dispatch-gen-torture, in the spirit of Linux's rcutorture: every core but
// one calls through a dispatcher's entry in a tight loop, as RCU readers,
// while an updater thread adds, removes and changes programs as fast as it
// can (Asynchronous, so updates do not wait for grace periods; --sync:
// Synchronous, where the entry also runs each image in place, so the
// resident area behind it is rewritten under the readers every update).
//
// Programs are JIT-compiled in an LLJIT of this process, in batches (one
// JITDylib each), and never reused: each has a unique id, its generation
// stamp, which it returns, after spinning for as long as the caller asks so
// that readers are inside programs when updates happen. When the dispatcher
// releases a program (OnRelease, after the grace period) its code is
// poisoned with int3, so a later call into it traps; a reader that traps
// counts a call into released code and leaves the call (siglongjmp).
//
// The pipeline count: each program records the update that removed it and
// whether it was released. After each call, still inside its read-side
// critical section, a reader looks up the program that answered: released
// means a grace period ended while the reader could still reach the program
// (a failure); removed but not yet released is legitimate and the reader
// histograms how many updates ago the removal happened.
//
// Readers also linger in images: every image starts with a delay loop
// (--image-delay pauses; DispatcherConfig::ImageDelayForTesting), freed
// images hold `hlt` in a quarantine before reuse and the resident
// area is filled with int3 before each rewrite (PoisonForTesting), so a
// reader left in an image that was freed, or in a resident area that was
// rewritten, faults; the signal handler tells which by where it stopped.
// The fallback calls a hook (FallbackHookForTesting): a call that took it
// for a program registered throughout the call is a routing failure.
//
// A failure is: a misrouted call (answered by another program than the one
// asked for, or by one not registered at any time during the call), a call
// into a released program, a released image or a rewritten resident area,
// an observed released program, a registered program sent to the
// fallback, or an update error. --broken-reclamation=programs|images|
// resident skips that one grace period
// (DispatcherConfig::SkipGracePeriodForTesting): the test must then fail,
// and report the matching count.
//
// --adaptive makes the dispatcher adaptive, with the background learner
// opening short windows, and the readers also call targets that are never
// registered, some hot (promoted, then demoted as the hot set moves), some
// rarely: each must answer, by the fallback or a promoted direct jump
// (AdaptiveTorture.h). A registered program may then take the fallback
// where the layout has no tree; the monitor of the dispatcher's status
// tells which calls could have.
//
// The pieces: this file reads the command line, sets the dispatcher up and
// runs the threads (Torture.h); ProgramPool.h compiles the programs and
// poisons the released ones; TortureFaults.h takes a reader out of a call
// that faulted and tells why; TortureLoops.cpp holds the readers' and the
// updater's loops, TortureReport.cpp the report and the verdict.
//
//===----------------------------------------------------------------------===//

#include "Torture.h"
#include "TortureFaults.h"

#include "dispatch-gen/Dispatcher.h"

#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

using namespace llvm;
using namespace dispatchgen;
using namespace dispatchgen::torture;

static cl::OptionCategory TortureCategory("dispatch-gen-torture options");
static cl::opt<unsigned> Seconds("seconds", cl::desc("How long to run"),
                                 cl::init(20), cl::cat(TortureCategory));
static cl::opt<unsigned>
    Readers("readers",
            cl::desc("Reader threads (default: every core but one, at "
                     "least one)"),
            cl::init(0), cl::cat(TortureCategory));
static cl::opt<unsigned> MinUpdateRate(
    "min-update-rate",
    cl::desc("Fail unless at least this many updates per second were made"),
    cl::init(0), cl::cat(TortureCategory));
static cl::opt<unsigned> BatchOps(
    "batch",
    cl::desc("Operations (add, remove, change) per update: one "
             "regeneration each (default 16; 1: one operation per update)"),
    cl::init(16), cl::cat(TortureCategory));
static cl::opt<bool>
    Sync("sync",
         cl::desc("Synchronous reclamation: each update waits for its grace "
                  "period, and images run resident behind the entry"),
         cl::init(false), cl::cat(TortureCategory));
static cl::opt<SkippedGracePeriod> BrokenReclamation(
    "broken-reclamation",
    cl::desc("Testing the test: skip one grace period; must fail"),
    cl::values(clEnumValN(SkippedGracePeriod::Programs, "programs",
                          "release programs at once"),
               clEnumValN(SkippedGracePeriod::Images, "images",
                          "free old images at once"),
               clEnumValN(SkippedGracePeriod::Resident, "resident",
                          "rewrite the resident area at once (implies "
                          "--sync)")),
    cl::init(SkippedGracePeriod::None), cl::cat(TortureCategory));
static cl::opt<unsigned> ImageDelay(
    "image-delay",
    cl::desc("pause instructions at the start of every image, so readers "
             "linger there longer than an update takes to free or rewrite "
             "what they left (default 4096, about 0.1 ms)"),
    cl::init(4096), cl::cat(TortureCategory));
static cl::opt<bool> Adaptive(
    "adaptive",
    cl::desc("Adaptive dispatch with the background learner; readers also "
             "call unregistered targets, hot ones (promoted) and rare ones"),
    cl::init(false), cl::cat(TortureCategory));
static cl::opt<unsigned>
    LearnWindow("learn-window",
                cl::desc("With --adaptive: microseconds a learning window "
                         "stays open (default 1000)"),
                cl::init(1000), cl::cat(TortureCategory));
static cl::opt<unsigned> LearnPeriod(
    "learn-period",
    cl::desc("With --adaptive: microseconds from a window to the next "
             "(default 2000; up to 4 times that after windows that "
             "changed nothing)"),
    cl::init(2000), cl::cat(TortureCategory));
static cl::opt<unsigned>
    HotPhase("hot-phase",
             cl::desc("With --adaptive: milliseconds before the hot "
                      "unregistered targets move on (default 250)"),
             cl::init(250), cl::cat(TortureCategory));

namespace dispatchgen::torture {

Torture::Torture(const TortureOptions &Opts) : Opts(Opts) {}
Torture::~Torture() = default;

Error Torture::run() {
  auto JOrErr = orc::LLJITBuilder().create();
  if (!JOrErr)
    return JOrErr.takeError();
  J = std::move(*JOrErr);

  // The programs first, so that the images go near them.
  Pool.emplace(*J);
  if (Error E = Pool->compileBatch())
    return E;
  if (Opts.Adaptive)
    if (Error E = Unregistered.compile(*J))
      return E;

  if (Opts.BrokenReclamation == SkippedGracePeriod::Resident)
    Opts.Sync = true;
  DispatcherConfig Config;
  Config.Name = "torture_dispatch";
  Config.Signature = "i64 (i64)";
  Config.Reclaim =
      Opts.Sync ? ReclaimMode::Synchronous : ReclaimMode::Asynchronous;
  // A change in a batch may add before it removes.
  Config.Capacity = 2 * NumSlots;
  Config.Near = Pool->get(1)->Address;
  Config.SkipGracePeriodForTesting = Opts.BrokenReclamation;
  Config.ImageDelayForTesting = Opts.ImageDelay;
  Config.FallbackHookForTesting = onFallback;
  Config.PoisonForTesting = true;
  Config.OnRelease = [this](const ProgramEntry &P) {
    Pool->release(P.Address);
  };
  if (Opts.Adaptive) {
    Config.Adaptive.Enabled = true;
    Config.Adaptive.Background = true;
    Config.Adaptive.Window =
        std::chrono::microseconds(std::max(1u, Opts.LearnWindow));
    Config.Adaptive.Period =
        std::chrono::microseconds(std::max(1u, Opts.LearnPeriod));
    Config.Adaptive.MaxPeriod = 4 * Config.Adaptive.Period;
  }
  auto DOrErr = Dispatcher::create(std::move(Config), *J);
  if (!DOrErr)
    return DOrErr.takeError();
  D = std::move(*DOrErr);
  Entry = D->entryAs<EntryFn>();
  if (!D->status().Supported)
    WithColor::warning() << "no image generation on this host: the entry is "
                            "the plain indirect call\n";
  setResidentArea(D->entry(), D->entry() + 8 + (64u << 10));

  installFaultHandlers();
  unsigned NumReaders = Opts.Readers;
  if (!NumReaders)
    NumReaders = std::max(2u, std::thread::hardware_concurrency()) - 1;
  FallbackCalls.resize(NumReaders);
  std::optional<AdaptiveMonitor> Monitor;
  if (Opts.Adaptive) {
    Monitor.emplace(*D, Unregistered);
    Monitor->start(std::chrono::microseconds(100));
  }
  std::vector<std::thread> Threads;
  for (unsigned R = 0; R < NumReaders; ++R)
    Threads.emplace_back([this, R] { readerLoop(R); });

  auto Start = Clock::now();
  Error UpdateError = updaterLoop(Start + std::chrono::seconds(Opts.Seconds));
  double Elapsed = std::chrono::duration<double>(Clock::now() - Start).count();
  Stop = true;
  for (std::thread &T : Threads)
    T.join();
  DispatcherStatus St = D->status();
  if (Monitor) {
    Monitor->stop();
    for (const std::vector<FallbackCall> &Calls : FallbackCalls)
      for (const FallbackCall &Call : Calls)
        if (Monitor->mayHaveTakenFallback(Call))
          ++ExcusedFallbackCalls;
        else
          C.RegisteredToFallback.fetch_add(1, std::memory_order_relaxed);
  }
  // Releases every program still registered, after pending grace periods.
  D.reset();
  return report(NumReaders, Elapsed, St, Monitor ? &*Monitor : nullptr,
                std::move(UpdateError));
}

} // namespace dispatchgen::torture

int main(int argc, char **argv) {
  InitLLVM X(argc, argv);
  cl::HideUnrelatedOptions(TortureCategory);
  cl::ParseCommandLineOptions(argc, argv,
                              "RCU torture test of a live dispatcher\n");
  InitializeNativeTarget();
  InitializeNativeTargetAsmPrinter();
  // The programs' `pause` is inline assembly.
  InitializeNativeTargetAsmParser();
  ExitOnError ExitOnErr("dispatch-gen-torture: ");
  TortureOptions Opts;
  Opts.Seconds = Seconds;
  Opts.Readers = Readers;
  Opts.MinUpdateRate = MinUpdateRate;
  Opts.BatchOps = BatchOps;
  Opts.Sync = Sync;
  Opts.BrokenReclamation = BrokenReclamation;
  Opts.ImageDelay = ImageDelay;
  Opts.Adaptive = Adaptive;
  Opts.LearnWindow = LearnWindow;
  Opts.LearnPeriod = LearnPeriod;
  Opts.HotPhase = HotPhase;
  Torture T(Opts);
  ExitOnErr(T.run());
  return 0;
}
