//===- RunCommand.cpp - dispatch-gen run ----------------------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// `dispatch-gen run` compiles C programs, JITs them, registers them in a
// live dispatcher and calls them from several threads through the
// dispatcher's entry, first with no program registered (every call is the
// plain indirect call), then with all registered (direct calls), then while
// the main thread swaps programs in and out. It ends with a verdict.
//
// The C files follow a small contract (examples/xdp/README.md): they
// declare the entry (any function of the dispatcher's type that no file
// defines) and define `unsigned long dispatchgen_drive(unsigned long
// iteration, PROG prog)`, which makes one call of prog through the entry;
// `int dispatchgen_setup(void)` is run first if defined.
//
// To check routing, each program is instrumented (while the swap phase
// runs) to count its calls and to notice running after its release; the
// callers count what they asked for. The two counts must agree.
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "dispatch-gen/Dispatcher.h"
#include "dispatch-gen/Reclamation.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Transforms/Utils/BasicBlockUtils.h"

#include <algorithm>
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

static cl::opt<unsigned>
    MinSwaps("swaps", cl::sub(runCommand()), cl::cat(RunCategory), cl::init(20),
             cl::desc("Keep calling in the live phase until at least this "
                      "many swaps happened (default 20)"));

namespace {

/// Per-program state the instrumentation and the release callback update.
struct alignas(64) ProgramCounters {
  std::atomic<uint64_t> Calls{0};
  /// Registrations not yet released; a call while it is 0 ran after a
  /// release.
  std::atomic<int32_t> Outstanding{0};
};

struct Instrumentation {
  std::atomic<uint8_t> Enabled{0};
  std::atomic<uint64_t> RunAfterRelease{0};
  std::vector<ProgramCounters> Counters;
};

using DriveFn = uint64_t (*)(uint64_t, uint64_t);
using SetupFn = int (*)();

struct Program {
  std::string Name, Symbol, Where;
  uint64_t Address = 0;
};

/// Makes F count its calls and notice running after its release, whenever
/// the run enables it (one predictable load and branch otherwise).
void instrument(Function &F, Instrumentation &Inst, size_t Index) {
  LLVMContext &Ctx = F.getContext();
  // After the entry block's allocas, which must stay in the entry block.
  BasicBlock::iterator At = F.getEntryBlock().getFirstInsertionPt();
  while (isa<AllocaInst>(*At))
    ++At;
  IRBuilder<> B(&*At);
  auto Ptr = [&](const void *P) {
    return B.CreateIntToPtr(B.getInt64(reinterpret_cast<uint64_t>(P)),
                            PointerType::getUnqual(Ctx));
  };
  auto *Enabled = B.CreateLoad(B.getInt8Ty(), Ptr(&Inst.Enabled), "dg.on");
  Enabled->setAtomic(AtomicOrdering::Monotonic);
  Value *On = B.CreateICmpNE(Enabled, B.getInt8(0));
  Instruction *Then = SplitBlockAndInsertIfThen(On, B.GetInsertPoint(), false);
  B.SetInsertPoint(Then);
  ProgramCounters &C = Inst.Counters[Index];
  B.CreateAtomicRMW(AtomicRMWInst::Add, Ptr(&C.Calls), B.getInt64(1),
                    MaybeAlign(8), AtomicOrdering::Monotonic);
  auto *Outstanding =
      B.CreateLoad(B.getInt32Ty(), Ptr(&C.Outstanding), "dg.outstanding");
  Outstanding->setAtomic(AtomicOrdering::Monotonic);
  Instruction *Late = SplitBlockAndInsertIfThen(
      B.CreateICmpSLE(Outstanding, B.getInt32(0)), Then, false);
  B.SetInsertPoint(Late);
  B.CreateAtomicRMW(AtomicRMWInst::Add, Ptr(&Inst.RunAfterRelease),
                    B.getInt64(1), MaybeAlign(8), AtomicOrdering::Monotonic);
}

std::string typeText(Type *Ty) {
  std::string S;
  raw_string_ostream(S) << *Ty;
  return S;
}

/// The entry: a declaration, in some file, of the dispatcher's type.
Expected<std::string> findEntry(ArrayRef<CompiledUnit> Units,
                                const DerivedSignature &Sig) {
  FunctionType *Own = Sig.Type;
  SmallVector<Type *, 8> Params(Own->params());
  Params.push_back(PointerType::getUnqual(Own->getContext()));
  std::string Wanted =
      typeText(FunctionType::get(Own->getReturnType(), Params, false));
  std::vector<std::string> Found;
  for (const CompiledUnit &U : Units)
    for (Function &F : *U.M)
      if (F.isDeclaration() && !F.isIntrinsic() &&
          typeText(F.getFunctionType()) == Wanted &&
          !is_contained(Found, F.getName().str()))
        Found.push_back(F.getName().str());
  if (!EntryName.empty()) {
    if (!is_contained(Found, EntryName))
      return createStringError(
          inconvertibleErrorCode(),
          formatv("no file declares the entry '{0}' with the dispatcher's "
                  "type {1}",
                  EntryName, Wanted));
    return EntryName.getValue();
  }
  if (Found.size() == 1)
    return Found.front();
  if (Found.empty())
    return createStringError(
        inconvertibleErrorCode(),
        formatv("no file declares a dispatcher entry of type {0} (the "
                "programs' parameters, then the program); declare one and "
                "call it from dispatchgen_drive, see examples/xdp/README.md",
                Wanted));
  return createStringError(inconvertibleErrorCode(),
                           formatv("several entries could be the dispatcher "
                                   "({0}); choose one with --entry",
                                   join(Found, ", ")));
}

/// What the run is doing, for the crash handler and the watchdog, which
/// read it without locks: the phase, and on each calling thread the program
/// it is calling.
std::atomic<const char *> CurrentPhase{"starting"};
/// "name (file:line)" of each program, made before any is called.
std::vector<std::string> ProgramLabels;
thread_local long CurrentProgram = -1;

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
  writeErr(CurrentPhase.load());
  long P = CurrentProgram;
  if (P >= 0 && static_cast<size_t>(P) < ProgramLabels.size()) {
    writeErr(", calling program ");
    writeErr(ProgramLabels[P].c_str());
  }
  writeErr("\n");
  ::_exit(1);
}

void installCrashHandlers() {
  struct sigaction SA;
  std::memset(&SA, 0, sizeof(SA));
  SA.sa_handler = onCrash;
  // On the thread's alternate stack where it has one: a program that
  // recurses without end overflows its own.
  SA.sa_flags = SA_ONSTACK;
  sigemptyset(&SA.sa_mask);
  for (int Sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE})
    sigaction(Sig, &SA, nullptr);
}

/// A stack for the crash handler on the calling thread, for its lifetime.
class AltStack {
public:
  AltStack() : Memory(64 * 1024) {
    stack_t SS;
    std::memset(&SS, 0, sizeof(SS));
    SS.ss_sp = Memory.data();
    SS.ss_size = Memory.size();
    Installed = sigaltstack(&SS, nullptr) == 0;
  }
  ~AltStack() {
    if (!Installed)
      return;
    stack_t SS;
    std::memset(&SS, 0, sizeof(SS));
    SS.ss_flags = SS_DISABLE;
    sigaltstack(&SS, nullptr);
  }

private:
  std::vector<char> Memory;
  bool Installed = false;
};

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
                    Seconds, CurrentPhase.load())
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

struct PhaseResult {
  uint64_t Calls = 0;
  double Seconds = 0;
  /// Why the threads could not all be started (then nothing was called).
  std::string StartError;
};

/// Runs Threads threads that each make Calls calls through Drive, and go on
/// while More() says so; Pick chooses the program of every call (inside a
/// read-side section). Requests, if given, gets each thread's calls per
/// program.
template <typename PickFn, typename MoreFn>
PhaseResult runThreads(DriveFn Drive, ArrayRef<Program> Progs, PickFn Pick,
                       MoreFn More,
                       std::vector<std::vector<uint64_t>> *Requests) {
  std::atomic<uint64_t> Total{0};
  std::atomic<unsigned> Ready{0};
  std::atomic<bool> Go{false}, Abandon{false};
  std::vector<std::thread> Workers;
  auto Start = std::chrono::steady_clock::now();
  auto Work = [&](unsigned T) {
    AltStack CrashStack;
    RCUReaderThread Reader(RCUFlavor::RF_Memb);
    std::vector<uint64_t> Asked(Progs.size(), 0);
    size_t Cursor = T;
    Ready.fetch_add(1);
    while (!Go.load(std::memory_order_acquire))
      std::this_thread::yield();
    if (Abandon.load())
      return;
    constexpr uint64_t Batch = 64;
    uint64_t I = 0;
    while (I < Calls || More()) {
      // One read-side section per batch keeps the guard off each call.
      RCUReadGuard Guard;
      uint64_t End = More() ? I + Batch : std::min<uint64_t>(Calls, I + Batch);
      for (; I < End; ++I) {
        size_t P = Pick(Cursor);
        ++Asked[P];
        CurrentProgram = static_cast<long>(P);
        Drive(I * Threads + T, Progs[P].Address);
      }
    }
    Total.fetch_add(I);
    if (Requests)
      (*Requests)[T] = std::move(Asked);
  };
  // The system may refuse a thread (a memory or process limit): stop the
  // ones started and say so, rather than let std::thread's exception end
  // the process.
  try {
    for (unsigned T = 0; T < Threads; ++T)
      Workers.emplace_back(Work, T);
  } catch (const std::system_error &E) {
    Abandon = true;
    Go.store(true, std::memory_order_release);
    for (std::thread &W : Workers)
      W.join();
    PhaseResult R;
    R.StartError = formatv("cannot start calling thread {0} of {1}: {2}",
                           Workers.size() + 1, unsigned(Threads), E.what())
                       .str();
    return R;
  }
  while (Ready.load() != Threads)
    std::this_thread::yield();
  Start = std::chrono::steady_clock::now();
  Go.store(true, std::memory_order_release);
  for (std::thread &W : Workers)
    W.join();
  PhaseResult R;
  R.Calls = Total.load();
  R.Seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - Start)
          .count();
  return R;
}

/// Checks that each hook the harness calls, where a file defines it, is a
/// function of the type the harness calls it with.
Error checkHooks(ArrayRef<CompiledUnit> Units, ArrayRef<std::string> Files) {
  struct Hook {
    const char *Name, *C;
    unsigned Params; // 0: none; 1: (i64); 2: (i64, ptr); 3: (ptr)
    bool ReturnsPtr, Returns32;
  };
  static const Hook Hooks[] = {
      {"dispatchgen_drive",
       "unsigned long dispatchgen_drive(unsigned long iteration, PROG prog)", 2,
       false, false},
      {"dispatchgen_expect",
       "unsigned long dispatchgen_expect(unsigned long iteration, PROG prog)",
       2, false, false},
      {"dispatchgen_setup", "int dispatchgen_setup(void)", 0, false, true},
      {"dispatchgen_describe",
       "const char *dispatchgen_describe(unsigned long iteration)", 1, true,
       false},
      {"dispatchgen_stateful", "int dispatchgen_stateful(PROG prog)", 3, false,
       true},
  };
  for (size_t U = 0; U < Units.size(); ++U) {
    Module &M = *Units[U].M;
    LLVMContext &Ctx = M.getContext();
    Type *I64 = Type::getInt64Ty(Ctx), *Ptr = PointerType::getUnqual(Ctx);
    for (const Hook &H : Hooks) {
      GlobalValue *GV = M.getNamedValue(H.Name);
      if (!GV || GV->isDeclaration())
        continue;
      auto *F = dyn_cast<Function>(GV);
      SmallVector<Type *, 2> Params;
      if (H.Params == 1 || H.Params == 2)
        Params.push_back(I64);
      if (H.Params == 2 || H.Params == 3)
        Params.push_back(Ptr);
      Type *Ret = H.ReturnsPtr  ? Ptr
                  : H.Returns32 ? Type::getInt32Ty(Ctx)
                                : I64;
      if (!F || F->getFunctionType() != FunctionType::get(Ret, Params, false))
        return createStringError(
            inconvertibleErrorCode(),
            formatv("{0} defines '{1}' as {2}; the harness calls it as '{3}'",
                    Files[U], H.Name,
                    F ? "a function of another type"
                      : "something that is not a function",
                    H.C));
    }
  }
  return Error::success();
}

void printPhase(StringRef What, const PhaseResult &R) {
  outs() << formatv("  {0}: {1:N} calls in {2:f3} s = {3:f2} M calls/s, "
                    "{4:f2} ns per call per thread\n",
                    What, R.Calls, R.Seconds, R.Calls / R.Seconds / 1e6,
                    R.Seconds * 1e9 * Threads / R.Calls);
}

double median(std::vector<double> V) {
  if (V.empty())
    return 0;
  std::sort(V.begin(), V.end());
  return V[V.size() / 2];
}

} // namespace

int runRun(const Invocation &Inv) {
  StringRef Tool = Inv.ToolName;
  if (Threads == 0 || Calls == 0 || SwapEvery == 0)
    return fail(Tool, "--threads, --calls and --swap-every must be at least 1");
  InitializeNativeTarget();
  InitializeNativeTargetAsmPrinter();

  if (Files.empty())
    return fail(Tool, "no C file given");
  // A program, a hook or the compiler that crashes or never returns ends
  // the run with one line saying where.
  installCrashHandlers();
  Watchdog Guard(Timeout);
  CurrentPhase = "compiling";
  // 1. Compile; each file gets its own context, as the JIT wants.
  outs() << formatv("==> compiling {0}\n", join(Files, " "));
  outs().flush();
  std::vector<std::unique_ptr<LLVMContext>> Contexts;
  std::vector<CompiledUnit> Units;
  for (const std::string &File : Files) {
    Contexts.push_back(std::make_unique<LLVMContext>());
    auto U =
        compileFiles({File}, Inv, /*ExposePrograms=*/true, *Contexts.back());
    if (!U)
      return fail(Tool, U.takeError());
    Units.push_back(std::move(U->front()));
  }
  auto Sig = commonSignature(Units, Files);
  if (!Sig)
    return fail(Tool, Sig.takeError());
  auto Entry = findEntry(Units, *Sig);
  if (!Entry)
    return fail(Tool, Entry.takeError());

  std::vector<Program> Progs;
  for (const CompiledUnit &U : Units)
    for (const FoundProgram &P : U.Programs)
      Progs.push_back({P.Name, P.Symbol, formatv("{0}:{1}", P.File, P.Line)});
  outs() << formatv("found {0} programs of type {1} ({2}); entry '{3}'\n",
                    Progs.size(), Sig->CType, Sig->Text, *Entry);
  for (const Program &P : Progs) {
    outs() << formatv("  {0,-28} {1}\n", P.Name, P.Where);
    ProgramLabels.push_back(formatv("{0} ({1})", P.Name, P.Where).str());
  }
  CurrentPhase = "linking the programs";

  // The harness's hooks are called through function pointers of these
  // types: anything else defined under their names (a variable, another
  // type) would be called as if it were one.
  if (Error E = checkHooks(Units, Files))
    return fail(Tool, std::move(E));

  // 2. Instrument, JIT, and create the dispatcher in the same session.
  Instrumentation Inst;
  Inst.Counters = std::vector<ProgramCounters>(Progs.size());
  size_t Index = 0;
  for (CompiledUnit &U : Units)
    for (const FoundProgram &P : U.Programs)
      instrument(*U.M->getFunction(P.Symbol), Inst, Index++);

  auto J = orc::LLJITBuilder().create();
  if (!J)
    return fail(Tool, J.takeError());
  DispatcherConfig Config;
  Config.Name = *Entry;
  Config.Signature = Sig->Text;
  Config.ReturnExtension = Sig->ReturnExtension;
  Config.ParamExtensions = Sig->ParamExtensions;
  Config.Capacity =
      std::max<unsigned>(ProgramSet::DefaultCapacity, Progs.size());
  Config.Reclaim =
      AsyncReclaim ? ReclaimMode::RM_Asynchronous : ReclaimMode::RM_Synchronous;
  Config.RetpolineFallback = !NoRetpoline;
  Config.OnRelease = [&](const ProgramEntry &P) {
    for (size_t I = 0; I < Progs.size(); ++I)
      if (Progs[I].Address == P.Address)
        Inst.Counters[I].Outstanding.fetch_sub(1);
  };
  auto D = Dispatcher::create(std::move(Config), **J);
  if (!D)
    return fail(Tool, D.takeError());
  orc::JITDylib &Main = (*J)->getMainJITDylib();
  Main.addToLinkOrder(*(*D)->entryDylib());
  for (size_t I = 0; I < Units.size(); ++I)
    if (Error E = (*J)->addIRModule(orc::ThreadSafeModule(
            std::move(Units[I].M), std::move(Contexts[I]))))
      return fail(Tool, std::move(E));
  for (Program &P : Progs) {
    auto Addr = (*J)->lookup(P.Symbol);
    if (!Addr)
      return fail(Tool, Addr.takeError());
    P.Address = Addr->getValue();
  }
  auto DriveAddr = (*J)->lookup("dispatchgen_drive");
  if (!DriveAddr) {
    consumeError(DriveAddr.takeError());
    return fail(Tool, "no file defines 'unsigned long dispatchgen_drive("
                      "unsigned long iteration, PROG prog)', which calls "
                      "prog through the entry; see examples/xdp/README.md");
  }
  auto Drive = DriveAddr->toPtr<DriveFn>();
  if (auto Setup = (*J)->lookup("dispatchgen_setup")) {
    CurrentPhase = "running dispatchgen_setup";
    if (int RC = Setup->toPtr<SetupFn>()())
      return fail(Tool, formatv("dispatchgen_setup() returned {0}", RC));
  } else {
    consumeError(Setup.takeError());
  }

  // 3. Baselines: the plain indirect call (the file's own, if it has
  //    dispatchgen_expect), then the entry with no program registered: every
  //    call takes the fallback, a retpoline unless --no-retpoline.
  auto RoundRobin = [&](size_t &Cursor) {
    Cursor = (Cursor + 1) % Progs.size();
    return Cursor;
  };
  auto Never = [] { return false; };
  outs() << formatv("==> {0} threads x {1:N} calls each, programs "
                    "round-robin\n",
                    unsigned(Threads), uint64_t(Calls));
  outs().flush();
  std::optional<PhaseResult> Plain;
  if (auto Expect = (*J)->lookup("dispatchgen_expect")) {
    CurrentPhase = "calling each program directly (dispatchgen_expect)";
    Plain =
        runThreads(Expect->toPtr<DriveFn>(), Progs, RoundRobin, Never, nullptr);
    if (!Plain->StartError.empty())
      return fail(Tool, Plain->StartError);
    printPhase("plain indirect call   ", *Plain);
  } else {
    consumeError(Expect.takeError());
  }
  CurrentPhase = "calling through the entry with no program registered";
  PhaseResult Fallback = runThreads(Drive, Progs, RoundRobin, Never, nullptr);
  if (!Fallback.StartError.empty())
    return fail(Tool, Fallback.StartError);
  printPhase(NoRetpoline ? "entry, no program     " : "retpoline (no program)",
             Fallback);

  // 4. Register every program.
  ProgramSet::Batch All;
  for (size_t I = 0; I < Progs.size(); ++I) {
    Inst.Counters[I].Outstanding.fetch_add(1);
    All.add(Progs[I].Address, Progs[I].Name);
  }
  if (Error E = (*D)->apply(All))
    return fail(Tool, std::move(E));
  DispatcherStatus S = (*D)->status();
  outs() << formatv("==> registered {0} programs: image {1:x}, {2} bytes, "
                    "{3} direct, {4} through the fallback; update took "
                    "{5:f2} ms\n",
                    S.Programs, S.ImageAddress, S.ImageSize, S.DirectTargets,
                    S.FallbackTargets, S.LastUpdateLatency.count() / 1e6);
  if (Error E = (*D)->verify())
    return fail(Tool, formatv("the image failed verification: {0}",
                              toString(std::move(E))));
  if (PrintImage)
    if (Error E = (*D)->dump(outs()))
      return fail(Tool, std::move(E));
  CurrentPhase = "calling through the dispatcher";
  PhaseResult Direct = runThreads(Drive, Progs, RoundRobin, Never, nullptr);
  if (!Direct.StartError.empty())
    return fail(Tool, Direct.StartError);
  printPhase("dispatcher (direct)   ", Direct);
  auto Rate = [](const PhaseResult &R) { return R.Calls / R.Seconds; };
  outs() << formatv("  dispatcher: {0:f2}x the calls/s of the {1}",
                    Rate(Direct) / Rate(Fallback),
                    NoRetpoline ? "entry's indirect call" : "retpoline");
  if (Plain)
    outs() << formatv(", {0:f2}x the plain indirect call's",
                      Rate(Direct) / Rate(*Plain));
  outs() << "\n";

  // 5. Live swap: callers pick programs from the published set while the
  //    main thread swaps one out and the previous one back in.
  outs() << formatv("==> live swap: one program swapped every {0} ms while "
                    "the threads call\n",
                    unsigned(SwapEvery));
  outs().flush();
  std::unique_ptr<std::atomic<bool>[]> Published(
      new std::atomic<bool>[Progs.size()]);
  for (size_t I = 0; I < Progs.size(); ++I)
    Published[I].store(true);
  auto PickPublished = [&](size_t &Cursor) {
    for (size_t Tries = 0; Tries < Progs.size(); ++Tries) {
      Cursor = (Cursor + 1) % Progs.size();
      if (Published[Cursor].load(std::memory_order_acquire))
        return Cursor;
    }
    // Not reached: the swapper publishes a program before it unpublishes
    // another, so one is always published.
    return Cursor;
  };
  std::vector<std::vector<uint64_t>> Requests(Threads);
  Inst.Enabled.store(1);
  std::atomic<bool> Done{false};
  std::vector<double> UpdateMs, GraceUs;
  Error SwapError = Error::success();
  std::atomic<bool> SwapFailed{false};
  std::atomic<unsigned> Swaps{0};
  std::thread Swapper([&] {
    std::optional<size_t> Out;
    for (size_t Next = 0; !Done.load(); Next = (Next + 1) % Progs.size()) {
      // In short naps, so that the end of the calls is not kept waiting
      // for a long interval.
      auto Due = std::chrono::steady_clock::now() +
                 std::chrono::milliseconds(SwapEvery);
      while (!Done.load() && std::chrono::steady_clock::now() < Due)
        std::this_thread::sleep_for(
            std::min<std::chrono::steady_clock::duration>(
                std::chrono::milliseconds(10),
                Due - std::chrono::steady_clock::now()));
      if (Progs.size() < 2 || Done.load())
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
        Inst.Counters[*Out].Outstanding.fetch_add(1);
        To = Progs[*Out].Address;
        Published[*Out].store(true, std::memory_order_release);
      }
      Published[Next].store(false, std::memory_order_release);
      if (Error E = (*D)->change(Progs[Next].Address, To,
                                 Out ? StringRef(Progs[*Out].Name) : "")) {
        SwapError = std::move(E);
        SwapFailed.store(true);
        return;
      }
      Out = Next;
      Swaps.fetch_add(1);
      DispatcherStatus St = (*D)->status();
      UpdateMs.push_back(St.LastUpdateLatency.count() / 1e6);
      GraceUs.push_back(St.LastGracePeriod.count() / 1e3);
    }
  });
  CurrentPhase = "calling during the live swap";
  PhaseResult Live = runThreads(
      Drive, Progs, PickPublished,
      [&] {
        return Progs.size() > 1 && !SwapFailed.load() &&
               Swaps.load() < MinSwaps;
      },
      &Requests);
  Done.store(true);
  Swapper.join();
  Inst.Enabled.store(0);
  if (SwapError)
    return fail(Tool, std::move(SwapError));
  if (!Live.StartError.empty())
    return fail(Tool, Live.StartError);
  printPhase("during swaps", Live);
  S = (*D)->status();
  outs() << formatv("  {0} swaps; update (regenerate + patch) median {1:f2} "
                    "ms, max {2:f2} ms; grace period median {3:f0} us\n",
                    UpdateMs.size(), median(UpdateMs),
                    UpdateMs.empty() ? 0.0 : *max_element(UpdateMs),
                    median(GraceUs));
  outs() << formatv("  generation {0}, {1} programs, {2} direct, {3} through "
                    "the fallback\n",
                    S.Generation, S.Programs, S.DirectTargets,
                    S.FallbackTargets);
  Error Verified = (*D)->verify();

  // 6. Per-program calls, and the verdict.
  outs() << "  calls per program (asked = by the callers, ran = counted by "
            "the program):\n";
  uint64_t Misrouted = 0;
  for (size_t I = 0; I < Progs.size(); ++I) {
    uint64_t Asked = 0;
    for (const std::vector<uint64_t> &R : Requests)
      Asked += R[I];
    uint64_t Ran = Inst.Counters[I].Calls.load();
    Misrouted += Asked > Ran ? Asked - Ran : Ran - Asked;
    outs() << formatv("    {0,-28} asked {1,12:N}  ran {2,12:N}{3}\n",
                      Progs[I].Name, Asked, Ran, Asked == Ran ? "" : "  <--");
  }
  uint64_t Late = Inst.RunAfterRelease.load();
  bool Ok = Misrouted == 0 && Late == 0 && !Verified;
  if (Ok)
    outs() << formatv("verdict: OK: all {0:N} calls reached the program they "
                      "asked for, each registered when called; none ran "
                      "after its release\n",
                      Live.Calls);
  else
    outs() << formatv("verdict: FAILED: {0} calls misrouted, {1} ran after "
                      "their release{2}\n",
                      Misrouted, Late,
                      Verified ? "; image: " + toString(std::move(Verified))
                               : std::string());
  consumeError(std::move(Verified));
  D->reset(); // before the JIT whose session it uses
  return Ok ? 0 : 1;
}

} // namespace dispatchgen::tool
