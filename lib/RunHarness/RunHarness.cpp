//===- RunHarness.cpp - C programs called through a dispatcher ------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The phases of a run: compile, link (instrument, JIT, dispatcher, setup),
// the baselines, registration, the direct calls and the live swap with its
// verdict.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/RunHarness.h"
#include "dispatch-gen/Benchmark.h"
#include "dispatch-gen/CodeEmitter.h"

#include "CallingThreads.h"
#include "Hooks.h"
#include "Instrumentation.h"

#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/TargetSelect.h"

#include <algorithm>
#include <atomic>
#include <thread>

using namespace llvm;

namespace dispatchgen {

using run::DriveFn;

namespace {

/// How far a run has got; each phase needs one stage.
enum class Stage { Compiled, Linked, Registered, Swapped };

const char *stageName(Stage S) {
  switch (S) {
  case Stage::Compiled:
    return "compile()";
  case Stage::Linked:
    return "link()";
  case Stage::Registered:
    return "registerAll()";
  case Stage::Swapped:
    return "swapLive()";
  }
  return "?";
}

} // namespace

struct RunHarness::Impl {
  Stage At = Stage::Compiled;
  /// Each file's context and unit, until link() hands them to the JIT.
  std::vector<std::unique_ptr<LLVMContext>> Contexts;
  std::vector<CompiledUnit> Units;
  /// "name (file:line)" of each program, for getCallingProgram().
  std::vector<std::string> Labels;
  std::vector<const char *> LabelPtrs;
  std::vector<uint64_t> Addresses;
  run::Instrumentation Inst;
  // The dispatcher is destroyed before the JIT whose session it uses.
  std::unique_ptr<orc::LLJIT> J;
  std::unique_ptr<Dispatcher> D;
  DriveFn Drive = nullptr, Expect = nullptr;

  Error need(Stage Wanted, StringRef Phase) const {
    if (At == Wanted)
      return Error::success();
    return createStringError(
        inconvertibleErrorCode(),
        formatv("RunHarness::{0} runs after {1}, but the run is at {2}", Phase,
                stageName(Wanted), stageName(At)));
  }
};

RunHarness::RunHarness(RunOptions Opts)
    : Opts(std::move(Opts)), I(std::make_unique<Impl>()) {}

RunHarness::~RunHarness() {
  if (I)
    I->D.reset(); // before the JIT whose session it uses
}

Expected<std::unique_ptr<RunHarness>> RunHarness::compile(RunOptions Opts) {
  if (Opts.Threads == 0 || Opts.CallsPerThread == 0 ||
      Opts.SwapInterval.count() < 1)
    return createStringError(
        inconvertibleErrorCode(),
        formatv("a run needs at least 1 thread, 1 call per thread and a swap "
                "interval of 1 ms; got {0} threads, {1} calls per thread, "
                "{2} ms",
                Opts.Threads, Opts.CallsPerThread, Opts.SwapInterval.count()));
  if (Opts.Files.empty())
    return createStringError(inconvertibleErrorCode(), "no C file given");
  Opts.Frontend.ExposePrograms = true;
  Opts.Frontend.FindOnly = false;
  std::unique_ptr<RunHarness> H(new RunHarness(std::move(Opts)));
  Impl &S = *H->I;

  run::setRunPhase("compiling");
  // Each file gets its own context, as the JIT wants.
  for (const std::string &File : H->Opts.Files) {
    S.Contexts.push_back(std::make_unique<LLVMContext>());
    auto U = compileC(File, H->Opts.Frontend, *S.Contexts.back());
    if (!U)
      return U.takeError();
    S.Units.push_back(std::move(*U));
  }
  auto Sig = commonSignature(S.Units, H->Opts.Files);
  if (!Sig)
    return Sig.takeError();
  H->Sig = std::move(*Sig);
  auto Entry = run::findEntry(S.Units, H->Sig, H->Opts.Entry);
  if (!Entry)
    return Entry.takeError();
  H->Entry = std::move(*Entry);
  // The harness's hooks are called through function pointers of these
  // types: anything else defined under their names (a variable, another
  // type) would be called as if it were one.
  if (Error E = run::checkHooks(S.Units, H->Opts.Files))
    return std::move(E);

  for (const CompiledUnit &U : S.Units)
    for (const FoundProgram &P : U.Programs)
      H->Programs.push_back(
          {P.Name, P.Symbol, formatv("{0}:{1}", P.File, P.Line).str()});
  for (const RunProgram &P : H->Programs)
    S.Labels.push_back(formatv("{0} ({1})", P.Name, P.Where).str());
  // The labels are complete: their strings no longer move.
  for (const std::string &L : S.Labels)
    S.LabelPtrs.push_back(L.c_str());
  return std::move(H);
}

Error RunHarness::link() {
  Impl &S = *I;
  if (Error E = S.need(Stage::Compiled, "link()"))
    return E;
  run::setRunPhase("linking the programs");
  initializeTargets();

  S.Inst.Counters = std::vector<run::ProgramCounters>(Programs.size());
  size_t Index = 0;
  for (CompiledUnit &U : S.Units)
    for (const FoundProgram &P : U.Programs)
      run::instrument(*U.M->getFunction(P.Symbol), S.Inst, Index++);

  auto J = orc::LLJITBuilder().create();
  if (!J)
    return J.takeError();
  S.J = std::move(*J);
  DispatcherConfig Config;
  Config.Name = Entry;
  Config.Signature = Sig.Text;
  Config.ReturnExtension = Sig.ReturnExtension;
  Config.ParamExtensions = Sig.ParamExtensions;
  Config.Capacity =
      std::max<unsigned>(ProgramSet::DefaultCapacity, Programs.size());
  Config.Reclaim =
      Opts.AsyncReclaim ? ReclaimMode::Asynchronous : ReclaimMode::Synchronous;
  Config.RetpolineFallback = Opts.RetpolineFallback;
  if (Opts.Adaptive) {
    Config.Adaptive.Enabled = true;
    Config.Adaptive.Background = true;
    Config.Adaptive.Window = std::chrono::milliseconds(1);
    Config.Adaptive.Period = std::chrono::milliseconds(2);
    Config.Adaptive.MaxPeriod = std::chrono::milliseconds(64);
  }
  Config.OnRelease = [&S](const ProgramEntry &P) {
    for (size_t K = 0; K < S.Addresses.size(); ++K)
      if (S.Addresses[K] == P.Address)
        S.Inst.Counters[K].Outstanding.fetch_sub(1);
  };
  auto D = Dispatcher::create(std::move(Config), *S.J);
  if (!D)
    return D.takeError();
  S.D = std::move(*D);
  orc::JITDylib &Main = S.J->getMainJITDylib();
  Main.addToLinkOrder(*S.D->entryDylib());
  for (size_t K = 0; K < S.Units.size(); ++K)
    if (Error E = S.J->addIRModule(orc::ThreadSafeModule(
            std::move(S.Units[K].M), std::move(S.Contexts[K]))))
      return E;
  S.Units.clear();
  S.Contexts.clear();
  for (RunProgram &P : Programs) {
    auto Addr = S.J->lookup(P.Symbol);
    if (!Addr)
      return Addr.takeError();
    P.Address = Addr->getValue();
    S.Addresses.push_back(P.Address);
  }
  auto Drive = S.J->lookup("dispatchgen_drive");
  if (!Drive) {
    consumeError(Drive.takeError());
    return createStringError(
        inconvertibleErrorCode(),
        "no file defines 'unsigned long dispatchgen_drive(unsigned long "
        "iteration, PROG prog)', which calls prog through the entry; see "
        "examples/xdp/README.md");
  }
  S.Drive = Drive->toPtr<DriveFn>();
  if (auto Expect = S.J->lookup("dispatchgen_expect"))
    S.Expect = Expect->toPtr<DriveFn>();
  else
    consumeError(Expect.takeError());
  if (auto Setup = S.J->lookup("dispatchgen_setup")) {
    run::setRunPhase("running dispatchgen_setup");
    if (int RC = Setup->toPtr<int (*)()>()())
      return createStringError(inconvertibleErrorCode(),
                               formatv("dispatchgen_setup() returned {0}", RC));
  } else {
    consumeError(Setup.takeError());
  }
  S.At = Stage::Linked;
  return Error::success();
}

// The baselines and the direct calls: each thread calls the programs
// round-robin.
static size_t roundRobin(size_t &Cursor, size_t N) {
  Cursor = (Cursor + 1) % N;
  return Cursor;
}

Expected<std::optional<PhaseResult>> RunHarness::callPlain() {
  Impl &S = *I;
  if (Error E = S.need(Stage::Linked, "callPlain()"))
    return std::move(E);
  if (!S.Expect)
    return std::nullopt;
  run::setRunPhase("calling each program directly (dispatchgen_expect)");
  size_t N = Programs.size();
  auto R = run::runThreads(
      Opts.Threads, Opts.CallsPerThread, S.Expect, S.Addresses, S.LabelPtrs,
      [N](size_t &Cursor) { return roundRobin(Cursor, N); },
      [] { return false; }, nullptr);
  if (!R)
    return R.takeError();
  return std::optional<PhaseResult>(*R);
}

Expected<PhaseResult> RunHarness::callFallback() {
  Impl &S = *I;
  if (Error E = S.need(Stage::Linked, "callFallback()"))
    return std::move(E);
  run::setRunPhase("calling through the entry with no program registered");
  size_t N = Programs.size();
  return run::runThreads(
      Opts.Threads, Opts.CallsPerThread, S.Drive, S.Addresses, S.LabelPtrs,
      [N](size_t &Cursor) { return roundRobin(Cursor, N); },
      [] { return false; }, nullptr);
}

Expected<DispatcherStatus> RunHarness::registerAll() {
  Impl &S = *I;
  if (Error E = S.need(Stage::Linked, "registerAll()"))
    return std::move(E);
  run::setRunPhase("registering the programs");
  ProgramSet::Batch All;
  for (const RunProgram &P : Programs)
    All.add(P.Address, P.Name);
  // Counted before the update, which may release them again if it fails.
  for (run::ProgramCounters &C : S.Inst.Counters)
    C.Outstanding.fetch_add(1);
  if (Error E = S.D->apply(All)) {
    for (run::ProgramCounters &C : S.Inst.Counters)
      C.Outstanding.fetch_sub(1);
    return std::move(E);
  }
  S.At = Stage::Registered;
  if (Error E = S.D->verify())
    return createStringError(inconvertibleErrorCode(),
                             "the image failed verification: " +
                                 toString(std::move(E)));
  return S.D->status();
}

Error RunHarness::dumpImage(raw_ostream &OS) const {
  if (I->At != Stage::Registered && I->At != Stage::Swapped)
    return I->need(Stage::Registered, "dumpImage()");
  return I->D->dump(OS);
}

Expected<PhaseResult> RunHarness::callDirect() {
  Impl &S = *I;
  if (Error E = S.need(Stage::Registered, "callDirect()"))
    return std::move(E);
  run::setRunPhase("calling through the dispatcher");
  size_t N = Programs.size();
  return run::runThreads(
      Opts.Threads, Opts.CallsPerThread, S.Drive, S.Addresses, S.LabelPtrs,
      [N](size_t &Cursor) { return roundRobin(Cursor, N); },
      [] { return false; }, nullptr);
}

Expected<LiveResult> RunHarness::swapLive() {
  Impl &S = *I;
  if (Error E = S.need(Stage::Registered, "swapLive()"))
    return std::move(E);
  S.At = Stage::Swapped;
  size_t N = Programs.size();
  // Callers pick programs from the published set while the main thread
  // swaps one out and the previous one back in.
  std::unique_ptr<std::atomic<bool>[]> Published(new std::atomic<bool>[N]);
  for (size_t K = 0; K < N; ++K)
    Published[K].store(true);
  auto PickPublished = [&](size_t &Cursor) {
    for (size_t Tries = 0; Tries < N; ++Tries) {
      Cursor = (Cursor + 1) % N;
      if (Published[Cursor].load(std::memory_order_acquire))
        return Cursor;
    }
    // Not reached: the swapper publishes a program before it unpublishes
    // another, so one is always published.
    return Cursor;
  };
  std::vector<std::vector<uint64_t>> Requests(Opts.Threads);
  LiveResult Live;
  std::atomic<bool> Done{false};
  Error SwapError = Error::success();
  std::atomic<bool> SwapFailed{false};
  std::atomic<unsigned> Swaps{0};
  auto Swap = [&] {
    std::optional<size_t> Out;
    for (size_t Next = 0; !Done.load(); Next = (Next + 1) % N) {
      // In short naps, so that the end of the calls is not kept waiting
      // for a long interval.
      auto Due = std::chrono::steady_clock::now() + Opts.SwapInterval;
      while (!Done.load() && std::chrono::steady_clock::now() < Due)
        std::this_thread::sleep_for(
            std::min<std::chrono::steady_clock::duration>(
                std::chrono::milliseconds(10),
                Due - std::chrono::steady_clock::now()));
      if (N < 2 || Done.load())
        break;
      if (Out && *Out == Next)
        continue;
      // Count a registration, then publish the program coming back before
      // unpublishing the one leaving: callers always have one to pick (with
      // two programs, both out at once left them none). Until the change,
      // a call to the one coming back takes the fallback, which is right.
      // The one leaving is unpublished before it is removed, so only
      // callers that picked it earlier (inside their read-side section,
      // which its release waits for) still call it.
      uint64_t To = 0;
      if (Out) {
        S.Inst.Counters[*Out].Outstanding.fetch_add(1);
        To = Programs[*Out].Address;
        Published[*Out].store(true, std::memory_order_release);
      }
      Published[Next].store(false, std::memory_order_release);
      if (Error E = S.D->change(Programs[Next].Address, To,
                                Out ? StringRef(Programs[*Out].Name) : "")) {
        SwapError = std::move(E);
        SwapFailed.store(true);
        return;
      }
      Out = Next;
      Swaps.fetch_add(1);
      DispatcherStatus St = S.D->status();
      Live.UpdateMs.push_back(St.LastUpdateLatency.count() / 1e6);
      Live.GraceUs.push_back(St.LastGracePeriod.count() / 1e3);
    }
  };
  // Adaptive: the live phase lasts until a learning window closed in it
  // (or one failed, which the status then tells).
  uint64_t WindowsBefore = S.D->status().LearningWindows;
  std::atomic<bool> Learned{!Opts.Adaptive};
  auto Watch = [&] {
    while (!Done.load() && !Learned.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      DispatcherStatus St = S.D->status();
      if (St.LearningWindows > WindowsBefore || !St.LearningError.empty())
        Learned.store(true);
    }
  };
  S.Inst.Enabled.store(1);
  std::thread Swapper, Watcher;
  try {
    Swapper = std::thread(Swap);
    if (!Learned.load())
      Watcher = std::thread(Watch);
  } catch (const std::system_error &E) {
    Done.store(true);
    if (Swapper.joinable())
      Swapper.join();
    S.Inst.Enabled.store(0);
    return createStringError(
        inconvertibleErrorCode(),
        formatv("cannot start the thread that swaps programs{0}: {1}",
                Opts.Adaptive ? " or the one that watches the learner" : "",
                E.what()));
  }
  run::setRunPhase("calling during the live swap");
  unsigned MinSwaps = Opts.MinSwaps;
  auto Calls = run::runThreads(
      Opts.Threads, Opts.CallsPerThread, S.Drive, S.Addresses, S.LabelPtrs,
      PickPublished,
      [&] {
        if (SwapFailed.load())
          return false;
        return (N > 1 && Swaps.load() < MinSwaps) || !Learned.load();
      },
      &Requests);
  Done.store(true);
  Swapper.join();
  if (Watcher.joinable())
    Watcher.join();
  S.Inst.Enabled.store(0);
  if (SwapError) {
    consumeError(Calls.takeError());
    return std::move(SwapError);
  }
  if (!Calls)
    return Calls.takeError();
  Live.Calls = *Calls;
  Live.Status = S.D->status();
  Live.LearningWindows = Live.Status.LearningWindows - WindowsBefore;
  if (Error E = S.D->verify())
    Live.ImageError = toString(std::move(E));

  // The verdict: what the callers asked for against what ran.
  for (size_t K = 0; K < N; ++K) {
    ProgramCount C;
    for (const std::vector<uint64_t> &R : Requests)
      C.Asked += R[K];
    C.Ran = S.Inst.Counters[K].Calls.load();
    Live.Misrouted += C.Asked > C.Ran ? C.Asked - C.Ran : C.Ran - C.Asked;
    Live.Counts.push_back(C);
  }
  Live.RanAfterRelease = S.Inst.RunAfterRelease.load();
  return std::move(Live);
}

double LiveResult::medianUpdateMs() const { return bench::median(UpdateMs); }
double LiveResult::maxUpdateMs() const {
  return UpdateMs.empty() ? 0.0
                          : *std::max_element(UpdateMs.begin(), UpdateMs.end());
}
double LiveResult::medianGraceUs() const { return bench::median(GraceUs); }

Expected<RunReport> runHarness(const RunOptions &Opts) {
  auto H = RunHarness::compile(Opts);
  if (!H)
    return H.takeError();
  RunHarness &R = **H;
  if (Error E = R.link())
    return std::move(E);
  RunReport Report;
  Report.Entry = R.entry().str();
  Report.CType = R.signature().CType;
  Report.Signature = R.signature().Text;
  auto Plain = R.callPlain();
  if (!Plain)
    return Plain.takeError();
  Report.Plain = *Plain;
  auto Fallback = R.callFallback();
  if (!Fallback)
    return Fallback.takeError();
  Report.Fallback = *Fallback;
  auto Registered = R.registerAll();
  if (!Registered)
    return Registered.takeError();
  Report.Registered = *Registered;
  auto Direct = R.callDirect();
  if (!Direct)
    return Direct.takeError();
  Report.Direct = *Direct;
  auto Live = R.swapLive();
  if (!Live)
    return Live.takeError();
  Report.Live = std::move(*Live);
  Report.Programs.assign(R.programs().begin(), R.programs().end());
  return std::move(Report);
}

} // namespace dispatchgen
