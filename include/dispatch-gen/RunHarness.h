//===- RunHarness.h - C programs called through a dispatcher ----*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The harness behind `dispatch-gen run`: it compiles C programs, JITs them,
// registers them in a live dispatcher and calls them from several threads
// through the dispatcher's entry, first with no program registered (every
// call is the fallback), then with all registered (direct calls), then while
// the main thread swaps programs in and out. The live phase ends with a
// verdict: each program counts the calls it ran and notices running after
// its release, the callers count the calls they asked for, and the two
// counts must agree.
//
// The C files follow a small contract (examples/xdp/README.md): they
// declare the entry (a function of the programs' parameters plus the
// program, which no file defines) and define `unsigned long
// dispatchgen_drive(unsigned long iteration, PROG prog)`, which makes one
// call of prog through the entry. Optional hooks: `int
// dispatchgen_setup(void)`, run once after linking (non-zero fails the
// run), and `dispatchgen_expect(iteration, prog)`, the same call through a
// plain function pointer, measured as the baseline.
//
// RunHarness runs the phases one call at a time, so that a driver can print
// each result as it comes; runHarness() runs them all. Every failure is an
// llvm::Error. What a library cannot do is left to the process: a program
// that crashes or never returns cannot be recovered from, so the signal
// handlers and the watchdog that end the process belong to the host. For
// them the harness says, async-signal-safely, what it is doing
// (getRunPhase(), getCallingProgram()), and its calling threads run with an
// alternate signal stack, so that an SA_ONSTACK handler runs even when a
// program overflows its stack.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_RUNHARNESS_H
#define DISPATCH_GEN_RUNHARNESS_H

#include "dispatch-gen/Dispatcher.h"
#include "dispatch-gen/Frontend.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace llvm {
class raw_ostream;
} // namespace llvm

namespace dispatchgen {

struct RunOptions {
  /// The C files; each is compiled in its own LLVMContext.
  std::vector<std::string> Files;
  /// How to compile them and find the programs. ExposePrograms and FindOnly
  /// are overridden: the JIT finds the programs by name, and runs them.
  FrontendOptions Frontend;
  /// The entry's symbol; empty: the one function of the dispatcher's type
  /// that the files declare.
  std::string Entry;
  /// Calling threads, and calls per thread in each phase (at least 1).
  unsigned Threads = 2;
  uint64_t CallsPerThread = 2000000;
  /// Time between swaps in the live phase (at least 1 ms).
  std::chrono::milliseconds SwapInterval{10};
  /// The live phase goes on calling until at least this many swaps happened
  /// (with two programs or more).
  unsigned MinSwaps = 20;
  /// Reclaim old images with call_rcu instead of waiting for the grace
  /// period in each update.
  bool AsyncReclaim = false;
  /// The dispatcher's fallback is a retpoline (otherwise the plain indirect
  /// call).
  bool RetpolineFallback = true;
  /// Adaptive dispatch (AdaptiveConfig), with the background learner:
  /// windows of 1 ms, every 2 ms or more. The learner runs from link() on,
  /// so the baselines are measured under it too (with no program
  /// registered, the hot programs get promoted); the live phase goes on
  /// calling until a learning window closed during it, or one failed.
  bool Adaptive = false;
};

/// A program found in the files.
struct RunProgram {
  /// Its C name, its symbol in the JIT, and "file:line".
  std::string Name, Symbol, Where;
  /// Its address once linked; 0 before.
  uint64_t Address = 0;
};

/// The calls of one phase, by all threads.
struct PhaseResult {
  uint64_t Calls = 0;
  double Seconds = 0;
  unsigned Threads = 0;

  double callsPerSecond() const { return Calls / Seconds; }
  double nsPerCallPerThread() const { return Seconds * 1e9 * Threads / Calls; }
};

/// The calls to one program in the live phase.
struct ProgramCount {
  /// Counted by the callers, and by the program itself.
  uint64_t Asked = 0, Ran = 0;
};

/// The live phase and its verdict.
struct LiveResult {
  PhaseResult Calls;
  /// Update (regenerate + patch) latency and grace period of each swap.
  std::vector<double> UpdateMs, GraceUs;
  /// The dispatcher after the last swap.
  DispatcherStatus Status;
  /// One per program, in the order of RunHarness::programs().
  std::vector<ProgramCount> Counts;
  /// Calls that reached another program than the one asked for (the sum,
  /// over programs, of |Asked - Ran|), and calls that ran a program after
  /// its registration was released.
  uint64_t Misrouted = 0, RanAfterRelease = 0;
  /// Why the final image failed verification; empty: it passed.
  std::string ImageError;
  /// With RunOptions::Adaptive: the learning windows that closed during
  /// the live phase (Status has the dispatcher's total, the promoted
  /// targets and the layout).
  uint64_t LearningWindows = 0;

  size_t swaps() const { return UpdateMs.size(); }
  /// Median and maximum update latency, median grace period; 0 without
  /// swaps.
  double medianUpdateMs() const;
  double maxUpdateMs() const;
  double medianGraceUs() const;
  /// The verdict: every call reached the program it asked for, none ran
  /// after its release, and the image verifies.
  bool ok() const {
    return Misrouted == 0 && RanAfterRelease == 0 && ImageError.empty();
  }
};

/// Everything runHarness() measured.
struct RunReport {
  std::vector<RunProgram> Programs;
  std::string Entry;
  /// The programs' C type and LLVM type.
  std::string CType, Signature;
  /// The plain indirect call (only with dispatchgen_expect).
  std::optional<PhaseResult> Plain;
  /// The entry with no program registered, and with all.
  PhaseResult Fallback, Direct;
  /// The dispatcher once all programs were registered.
  DispatcherStatus Registered;
  LiveResult Live;
};

/// One run, phase by phase, in the order they are declared: link(), then
/// the baselines callPlain() and callFallback(), registerAll(), callDirect()
/// and swapLive(); the measuring phases may be left out. A phase called out
/// of order fails and changes nothing.
class RunHarness {
public:
  /// Checks Opts, compiles the files, derives the programs' signature, finds
  /// the entry and checks that the hooks the files define have the types
  /// the harness calls them with.
  static llvm::Expected<std::unique_ptr<RunHarness>> compile(RunOptions Opts);
  ~RunHarness();

  const RunOptions &options() const { return Opts; }
  llvm::ArrayRef<RunProgram> programs() const { return Programs; }
  const DerivedSignature &signature() const { return Sig; }
  llvm::StringRef entry() const { return Entry; }

  /// Instruments the programs, JITs them with a dispatcher for the entry in
  /// the same session, and runs dispatchgen_setup.
  llvm::Error link();
  /// Calls through dispatchgen_expect; std::nullopt when no file defines it.
  llvm::Expected<std::optional<PhaseResult>> callPlain();
  /// Calls through the entry with no program registered.
  llvm::Expected<PhaseResult> callFallback();
  /// Registers every program and verifies the image.
  llvm::Expected<DispatcherStatus> registerAll();
  /// Prints the live image's disassembly (Dispatcher::dump).
  llvm::Error dumpImage(llvm::raw_ostream &OS) const;
  /// Calls through the entry with every program registered.
  llvm::Expected<PhaseResult> callDirect();
  /// Calls the published programs while the main thread swaps one out and
  /// the previous one back in, then counts.
  llvm::Expected<LiveResult> swapLive();

private:
  struct Impl;
  explicit RunHarness(RunOptions Opts);

  RunOptions Opts;
  std::vector<RunProgram> Programs;
  DerivedSignature Sig;
  std::string Entry;
  std::unique_ptr<Impl> I;
};

/// Runs every phase of a RunHarness and returns what each measured.
llvm::Expected<RunReport> runHarness(const RunOptions &Opts);

/// What the harness of this process is doing ("compiling", "calling
/// through the dispatcher", ...), for a crash handler or a watchdog; never
/// null. Async-signal-safe.
const char *getRunPhase();
/// "name (file:line)" of the program the calling thread is calling, on a
/// calling thread of the harness; null elsewhere. Async-signal-safe.
const char *getCallingProgram();

} // namespace dispatchgen

#endif // DISPATCH_GEN_RUNHARNESS_H
