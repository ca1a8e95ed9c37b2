//===- Benchmark.h - Dispatch cost and update latency -----------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// The measurements behind `dispatch-gen bench` and the Google Benchmark
// binaries in bench/: what a call through a dispatcher costs next to its
// peers (DESIGN.md, "Peers to measure against"), how long an update takes,
// how the read side scales with threads while updates churn, and what one
// dispatcher costs in resident memory.
//
// Call cost: CallLoopSet JIT-compiles, in one LLJIT, N tiny programs
// `i32 prog_K(i32 x) { return x + K; }` registered with the dispatchers,
// UnregisteredPrograms more of the same shape (K = N, N + 1, ...) that are
// never registered, and one caller loop per variant:
//
//   for (i = start; i < end; ++i) {
//     sel = targets[pattern[i & mask]];
//     acc += call(x = i ^ sel, sel);     // the variant's call
//   }
//
// so every variant runs the same code around its call and only the call
// differs. i counts the calls of the variant's call sequence, across its
// loops. The dispatchers live in the same session (their entries are called
// directly from the loop), placed next to the programs.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_BENCHMARK_H
#define DISPATCH_GEN_BENCHMARK_H

#include "dispatch-gen/CostCalibration.h"
#include "dispatch-gen/DispatchLayout.h"
#include "dispatch-gen/Reclamation.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
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
class Twine;
} // namespace llvm

namespace dispatchgen {
class Dispatcher;

namespace bench {

//===-- Call patterns and statistics (pure) -------------------------------===//

/// Program indices: 0 to N - 1 are the N programs registered with the
/// dispatchers; N to N + UnregisteredPrograms - 1 are programs of the same
/// signature and body, compiled with them, that no dispatcher holds (a
/// dispatcher sends them to its fallback).
constexpr unsigned UnregisteredPrograms = 4;

/// Which program each call selects.
enum class Pattern {
  OneHot,       ///< always program 0
  RoundRobin,   ///< 0, 1, ..., N-1, 0, ...
  Uniform,      ///< uniformly random (fixed seed)
  Zipf,         ///< Zipf, s = 1.1, over a fixed shuffle of the programs
  Unregistered, ///< always program N, the first unregistered one
  /// One unregistered program for PhaseCalls calls, then the next one:
  /// N, N + 1, ..., N + UnregisteredPrograms - 1, N, ... A property of the
  /// call sequence: the phase goes on across timed loops (CallLoopSet).
  Phase,
};
constexpr Pattern AllPatterns[] = {Pattern::OneHot,       Pattern::RoundRobin,
                                   Pattern::Uniform,      Pattern::Zipf,
                                   Pattern::Unregistered, Pattern::Phase};
llvm::StringRef patternName(Pattern P);

/// The Zipf exponent of Zipf.
constexpr double ZipfExponent = 1.1;

/// Calls in each phase of Phase.
constexpr uint64_t PhaseCalls = 10'000'000;

/// Probabilities of ranks 1..N under Zipf with exponent S (sum 1).
std::vector<double> zipfProbabilities(unsigned N, double S);

/// The program indices of the first Length calls following P (each
/// < N + UnregisteredPrograms); the same arguments give the same indices on
/// every run. All but Phase repeat them: call C selects Indices[C % Length].
std::vector<uint32_t> makePattern(Pattern P, unsigned N, size_t Length,
                                  uint64_t Seed = 0x5eed);

/// A call sequence: call C selects Phases[K][C % Length], K = (C /
/// CallsPerPhase) % Phases.size(), with Length the phases' common length;
/// with CallsPerPhase 0, Phases[0][C % Length] forever.
struct CallSequence {
  std::vector<std::vector<uint32_t>> Phases;
  uint64_t CallsPerPhase = 0;

  /// The program index call C selects.
  uint32_t at(uint64_t Call) const;
};

/// P's calls, with phases of Length indices each: makePattern's indices,
/// or for Phase one phase of PhaseCalls calls per unregistered program.
CallSequence makeSequence(Pattern P, unsigned N, size_t Length,
                          uint64_t Seed = 0x5eed);

/// How often each of the N programs occurs in Indices.
std::vector<uint64_t> frequencies(llvm::ArrayRef<uint32_t> Indices, unsigned N);

/// Median (the upper one of an even count) and nearest-rank percentile
/// (Fraction in (0, 1]); 0 for no samples.
double median(std::vector<double> Samples);
double percentile(std::vector<double> Samples, double Fraction);

/// The fewest samples a p99 is reported from. The nearest-rank p99 of 100
/// samples or fewer is the largest one or the one below it; with fewer than
/// this the reports give the maximum only, under that name.
constexpr unsigned MinP99Samples = 200;

//===-- Call cost ---------------------------------------------------------===//

/// How the loop makes its call.
enum class CallVariant {
  /// `call prog_0`, the limit; while every call of the phase selects one
  /// program, a direct call of that one (one-hot, unregistered, phase).
  Direct,
  Indirect,   ///< `call *sel`
  Retpoline,  ///< `call *sel` through a retpoline thunk
  Dispatcher, ///< dispatch-gen's live entry, no weights
  Weighted,   ///< dispatch-gen's entry, weighted by the pattern's counts
  SortedTree, ///< the kernel's address-sorted binary search (no weights)
  /// An adaptive dispatcher (AdaptiveConfig, Dispatcher.h) standing in for
  /// a retpolined call (RetpolineFallback), measured after it learned the
  /// pattern: one made for each sequence set (CallLoopSet::setSequence).
  /// A sequence of one phase is learned by the host before timing
  /// (CallLoopSet::learn(): one window over untimed calls, then a steady
  /// image); one of several phases (Phase) by the background learner with
  /// short windows (AdaptiveWindow...), while it is timed, as the hot
  /// target moves.
  Adaptive,
};
constexpr CallVariant AllVariants[] = {
    CallVariant::Direct,     CallVariant::Indirect, CallVariant::Retpoline,
    CallVariant::Dispatcher, CallVariant::Weighted, CallVariant::SortedTree,
    CallVariant::Adaptive};
llvm::StringRef variantName(CallVariant V);

/// The background learner's schedule for the Adaptive variant of a
/// sequence of several phases (AdaptiveConfig's Window, Period, MaxPeriod
/// and TriggerPoll): windows of 1 ms, the default periods (10 ms doubling
/// to 320 ms while nothing changes) and the trigger looking every 1 ms, so
/// a new hot target is promoted about 2 ms after the change, against the
/// tens of milliseconds a phase of PhaseCalls calls lasts.
constexpr std::chrono::microseconds AdaptiveWindow{1000};
constexpr std::chrono::microseconds AdaptivePeriod{10000};
constexpr std::chrono::microseconds AdaptiveMaxPeriod{320000};
constexpr std::chrono::microseconds AdaptiveTriggerPoll{1000};

/// What the Adaptive variant's dispatcher has learned (its status()).
struct LearnedLayout {
  /// The live layout as DispatchLayout names it ("hot-scan", "bisect",
  /// "fallback-only", ...), and the cost model's prediction of an average
  /// call under the last window's counts (LayoutCostModel units: the
  /// retpoline is 20, a predicted compare 0.25).
  std::string Layout;
  double PredictedCost = 0;
  /// Learning windows closed, and the unregistered targets promoted now.
  uint64_t Windows = 0;
  std::vector<uint64_t> Promoted;
  /// The last background window's failure, if any.
  std::string Error;
  /// ns per call of the calls made while the window was open (through the
  /// counting image), timed by learn(); 0 when learned in the background.
  double LearningNsPerCall = 0;
};

/// Calls a read-side section of CallLoopSet::run() holds at most.
constexpr uint64_t CallsPerGuard = 1u << 14;

/// N registered and UnregisteredPrograms unregistered programs, the caller
/// loops of every variant and three live dispatchers (plain, weighted,
/// adaptive), JIT-compiled in one LLJIT.
///
/// Each variant makes its own calls of the sequence set: run() goes on from
/// the call where the variant's previous run() stopped, so a pattern longer
/// than one timed loop (Phase: 10^7 calls a phase against 2^18 or 2^16 calls
/// a loop) unfolds over the loops, and every variant sees the same calls.
/// A variant crosses a phase only after 10^7 calls of its own:
/// measureCallCost times Phase in loops of PhaseIterations calls (one phase
/// each), so that every sample crosses one move of the hot target.
///
/// Read-side sections: run() holds an RCUReadGuard per batch of
/// CallsPerGuard calls, not across a whole loop, so a grace period (the
/// background learner's, with synchronous reclamation) waits for one batch
/// at most.
class CallLoopSet {
public:
  static llvm::Expected<std::unique_ptr<CallLoopSet>> create(unsigned N);
  ~CallLoopSet();

  unsigned size() const;
  /// Selects the calls' programs (indices < N + UnregisteredPrograms; the
  /// phases' common length must be a power of two), weights the Weighted
  /// dispatcher by their counts over the phases' entries (unregistered
  /// programs have none), makes a new Adaptive dispatcher that knows
  /// nothing yet (background learning for a sequence of several phases)
  /// and starts every variant at call 0.
  llvm::Error setSequence(const CallSequence &S);
  /// setSequence() of Indices forever.
  llvm::Error setPattern(llvm::ArrayRef<uint32_t> Indices);
  /// Runs V's loop for the next Iterations calls of its sequence (one loop
  /// per phase touched) and returns their sum. The calling thread must be
  /// an Memb RCU reader (RCUReaderThread).
  uint64_t run(CallVariant V, uint64_t Iterations);
  /// Calls V's loops have made since the sequence was set.
  uint64_t position(CallVariant V) const;
  /// The Adaptive variant learns the sequence: with a host-driven
  /// dispatcher (a sequence of one phase), one learning window over its
  /// next 1 + Repetitions loops of Iterations calls (the median of the
  /// last Repetitions is LearnedLayout::LearningNsPerCall); with the background
  /// learner, nothing (it learns as it is called).
  llvm::Error learn(uint64_t Iterations, unsigned Repetitions = 1);
  /// What the Adaptive variant's dispatcher has learned so far.
  LearnedLayout learned() const;
  /// The address of program K (< N + UnregisteredPrograms).
  uint64_t programAddress(unsigned K) const;
  /// Runs every variant over the same Iterations calls, from the indirect
  /// call's position, and checks that they agree (the direct call too when
  /// it calls what the sequence selects); every variant ends after them.
  llvm::Error check(uint64_t Iterations);

  class Impl;

private:
  explicit CallLoopSet(std::unique_ptr<Impl> I);
  std::unique_ptr<Impl> I;
};

struct CallCostOptions {
  std::vector<unsigned> Ns = {1, 2, 4, 8, 16, 48, 256, 1024, 4096};
  std::vector<Pattern> Patterns{std::begin(AllPatterns), std::end(AllPatterns)};
  /// Calls per timed loop, and timed loops per variant (the median counts).
  /// Many short loops rather than a few long ones: on a shared machine a
  /// preemption then spoils a few samples instead of most.
  uint64_t Iterations = 1u << 18;
  /// Calls per timed loop of Phase: one phase, so that every sample holds
  /// one move of the hot target (and the Adaptive variant's re-learning).
  uint64_t PhaseIterations = PhaseCalls;
  unsigned Repetitions = 21;
  /// Entries of each pattern (a power of two).
  size_t PatternLength = 1u << 16;
};

struct CallCost {
  unsigned N;
  Pattern P;
  CallVariant V;
  double NsPerCall;
  /// Adaptive only: what its dispatcher had learned after the timed loops.
  std::optional<LearnedLayout> Learned;
};

/// The cost model's constants (LayoutCostModel, a retpoline = 20) that
/// these call costs give: Compare from the plain dispatcher's one-hot
/// calls at the smallest and largest N, Mispredict from the weighted
/// dispatcher's scan of eight equally likely programs, IndirectMispredict
/// from the indirect call among them. None without those measurements.
std::optional<LayoutCostModel> fitCostModel(llvm::ArrayRef<CallCost> Calls);

/// Progress lines ("N=48 zipf"), for stderr.
using ProgressFn = llvm::function_ref<void(const llvm::Twine &)>;

/// Times every variant for every N and pattern: repetitions interleave the
/// variants, so drift hits all of them alike.
llvm::Expected<std::vector<CallCost>>
measureCallCost(const CallCostOptions &Opts, ProgressFn Progress = {});

//===-- Updates, read-side scaling, memory --------------------------------===//

/// A dispatcher of signature "i32 (i32)" over N of N + 1 program stubs
/// (`mov $imm32, %eax; ret` in one block of this process, never unmapped);
/// each swap() exchanges one registered stub for the one outside the set,
/// so every swap regenerates the image.
class UpdateDriver {
public:
  using EntryFn = int(int, int (*)(int));
  static constexpr unsigned MaxPrograms = 4096;

  static llvm::Expected<std::unique_ptr<UpdateDriver>> create(unsigned N,
                                                              ReclaimMode Mode);
  ~UpdateDriver();

  llvm::Error swap();
  /// Calls the entry with registered programs and the spare one; the
  /// thread must not be an RCU reader.
  llvm::Error checkCalls() const;
  Dispatcher &dispatcher() { return *D; }
  EntryFn *entry() const;
  /// The address of stub I (I <= MaxPrograms); it returns StubBase + I.
  static uint64_t stubAddress(unsigned I);
  static constexpr int StubBase = 1000000;

private:
  UpdateDriver() = default;
  std::unique_ptr<Dispatcher> D;
  std::vector<unsigned> InSet;
  unsigned Spare = 0;
  size_t Slot = 0;
};

struct UpdateLatency {
  unsigned N;
  ReclaimMode Mode;
  /// Timed updates: the samples of every statistic below.
  unsigned Updates;
  /// Around each change(), in microseconds.
  double MedianUs, MaxUs;
  /// Only from at least MinP99Samples updates.
  std::optional<double> P99Us;
};

/// Times Updates swaps (after a few untimed ones).
llvm::Expected<UpdateLatency> measureUpdateLatency(unsigned N, ReclaimMode Mode,
                                                   unsigned Updates);

struct ReadScaling {
  unsigned Threads;
  /// Updates per second asked for, and achieved (each waits for its grace
  /// period, so slow updates cap the rate).
  unsigned UpdatesPerSecond;
  double AchievedUpdatesPerSecond;
  double CallsPerSecond;
  /// How long the callers ran: one sample of each rate.
  double Seconds;
};

/// Threads callers (RCU readers, one read-side section per 1024 calls)
/// calling round-robin through a 48-program dispatcher for Seconds, while
/// the main thread swaps programs UpdatesPerSecond times a second.
llvm::Expected<ReadScaling>
measureReadScaling(unsigned Threads, unsigned UpdatesPerSecond, double Seconds);

struct MemoryUse {
  unsigned N;
  /// Growth of the resident set from creating the dispatcher and
  /// registering N programs.
  int64_t ResidentBytes;
};
llvm::Expected<MemoryUse> measureMemory(unsigned N);

/// Count dispatchers alive at once in one process, then Cycles dispatchers
/// created, used and destroyed one after another.
struct ManyDispatchers {
  unsigned Dispatchers = 0, ProgramsEach = 0, Cycles = 0;
  /// Dispatcher::create(), and apply() of its programs in one batch, in
  /// microseconds; Dispatchers samples each (p99 from MinP99Samples).
  double CreateMedianUs = 0, CreateMaxUs = 0;
  std::optional<double> CreateP99Us;
  double RegisterMedianUs = 0, RegisterMaxUs = 0;
  std::optional<double> RegisterP99Us;
  /// Growth of the resident set, divided by Dispatchers.
  double ResidentBytesEach = 0;
  /// Lines added to /proc/self/maps by all of them.
  int64_t MappingsAdded = 0;
  /// Whether every program of every dispatcher was reached directly
  /// (status(); each answered its calls, and a sample passed verify()).
  bool AllDirect = false;
  /// Destroying them all, per dispatcher.
  double DestroyEachUs = 0;
  /// During the cycles: the resident set, mappings and file descriptors,
  /// sampled eleven times from the first cycle to after the last.
  struct Sample {
    unsigned Cycle;
    int64_t ResidentBytes, Mappings, FileDescriptors;
  };
  std::vector<Sample> Churn;
  /// As many adaptive dispatchers (AdaptiveConfig's defaults, which
  /// include the background learner), each with its programs and no
  /// calls: create() and apply() together, the resident set and mappings
  /// they add, and over one second after a warm-up the CPU the process
  /// spends (all of it the learner's: the measuring thread sleeps) and the
  /// learning windows closed.
  struct AdaptiveCost {
    double CreateMedianUs = 0;
    double ResidentBytesEach = 0;
    int64_t MappingsAdded = 0;
    double LearnerCPUShare = 0;
    uint64_t WindowsPerSecond = 0;
  };
  std::optional<AdaptiveCost> Adaptive;
};
llvm::Expected<ManyDispatchers>
measureManyDispatchers(unsigned Count, unsigned ProgramsEach, unsigned Cycles,
                       ProgressFn Progress = {});

//===-- Reports -----------------------------------------------------------===//

/// Where and with what a report was measured.
struct MachineInfo {
  std::string CPUModel; ///< "model name" of /proc/cpuinfo, or "unknown"
  unsigned CPUs;        ///< CPUs this process may run on, as nproc counts
  std::optional<double> LoadAverage; ///< 1-minute, before measuring
  std::string LLVMVersion, BuildType;
};
MachineInfo describeMachine();

struct Report {
  std::optional<MachineInfo> Machine;
  /// The samples behind each call cost: timed loops, and calls in each
  /// (those of Phase; 0 when not measured).
  unsigned CallLoops = 0;
  uint64_t CallsPerLoop = 0;
  uint64_t PhaseCallsPerLoop = 0;
  std::vector<CallCost> Calls;
  std::vector<UpdateLatency> Updates;
  std::vector<ReadScaling> Scaling;
  std::vector<MemoryUse> Memory;
  std::optional<ManyDispatchers> Many;
  /// The process's cost model calibration (processCostCalibration()),
  /// which the weighted and adaptive variants choose their layouts by.
  std::optional<CostCalibration> Calibration;
};

/// The call-cost table (ns per call and the ratio to the direct call), the
/// Adaptive variant's learned layouts next to its measured cost, then the
/// update, scaling and memory figures, and a summary with the goals.
void printReport(const Report &R, llvm::raw_ostream &OS);
void writeJSON(const Report &R, llvm::raw_ostream &OS);
/// Plots ns per call against N, one line per variant and one panel per
/// pattern, with gnuplot, as SVG or PNG after Path's extension.
llvm::Error writePlot(const Report &R, llvm::StringRef Path);

} // namespace bench
} // namespace dispatchgen

#endif // DISPATCH_GEN_BENCHMARK_H
