//===- Dispatcher.h - A live dispatcher -------------------------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// A Dispatcher owns a ProgramSet and keeps a machine-code image that
// reaches every registered program with a direct jump. Each membership
// change regenerates the image:
//
//   1. the programs' DispatchLayout (the compare tree over their absolute
//      addresses, weighted by setWeights) is lowered: laid out as x86-64
//      machine code (X86ImageEmitter.h), or, where that does not apply
//      (another architecture, a selector the convention does not put in a
//      register, ImageLowering::Codegen), built by DispatchIRBuilder as IR
//      branches of the same layout and compiled by a reused TargetMachine;
//   2. a laid-out image is relocated for its address and copied into the
//      process's code arena, shared by every dispatcher, within 1 GiB of
//      the entry so every `je/jmp rel32` is in range; a compiled one is
//      linked by ORC into the inactive one of two JITDylibs (A/B,
//      alternating), in the same arena;
//   3. the trampoline is patched to the new image (one atomic store);
//   4. after an RCU grace period the old image is removed and the programs
//      whose last reference went are handed to the release callback;
//   5. with synchronous reclamation, a JIT entry then takes a copy of the
//      image into its resident area and runs it in place (ResidentBytes).
//
// A failure at any step before 3 leaves the live image and the registry
// exactly as they were and returns an Error that says what failed.
//
// Updates are serialised by the Dispatcher; calls through entry() take no
// lock, allocate nothing and write no shared memory. Callers must be RCU
// readers of the configured flavour (see Reclamation.h).
//
// Programs that no image can reach with rel32 (more than 1 GiB from the
// entry) are still registered but take the fallback; status() counts them.
//
// Dispatchers are cheap: a process can hold tens of thousands. The code of
// all of them (entries, resident areas, images) is packed into one arena of
// shared memory, reserved lazily in 1 MiB chunks; a dispatcher whose images
// are laid out directly has no ORC session, TargetMachine or JITDylib of
// its own (`dispatch-gen bench` measures create() and the memory each
// takes: see the README).
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_DISPATCHER_H
#define DISPATCH_GEN_DISPATCHER_H

#include "dispatch-gen/DispatchIRBuilder.h"
#include "dispatch-gen/DispatchLayout.h"
#include "dispatch-gen/FaultPoint.h"
#include "dispatch-gen/ProgramSet.h"
#include "dispatch-gen/Reclamation.h"

#include "llvm/ADT/FunctionExtras.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/CodeGen.h"
#include "llvm/Support/Error.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace llvm {
class raw_ostream;
namespace orc {
class ExecutionSession;
class JITDylib;
class LLJIT;
} // namespace orc
} // namespace llvm

namespace dispatchgen {

/// Which grace period a deliberately broken dispatcher skips (testing
/// only: DispatcherConfig::SkipGracePeriodForTesting).
enum class SkippedGracePeriod {
  /// None: the dispatcher as shipped.
  None,
  /// Programs that left the set go to OnRelease at once.
  Programs,
  /// The old image is freed at once.
  Images,
  /// The resident area is rewritten at once after the gate closed.
  Resident,
};

/// How a dispatcher makes its images.
enum class ImageLowering {
  /// Lay the compare tree out as machine code directly where it can (x86-64,
  /// the selector in a register): an update then costs microseconds per
  /// program instead of the codegen pipeline's tens. Elsewhere, codegen.
  Auto,
  /// Always build IR and compile it (what `dispatch-gen emit` does).
  Codegen,
};

/// Adaptive dispatch: the dispatcher measures its call site itself and
/// lays its image out for what it saw. A learning window runs a counting
/// image (X86ImageEmitter.h: per-CPU counts of each target and a sample of
/// the selectors that took the fallback; no cache line written by every
/// caller); when it closes, the counts become the layout's weights,
/// unregistered targets hot at the fallback are *promoted* (the next image
/// compares with them and jumps to them directly, as the indirect call
/// would), cold promoted ones are demoted, and the cost model
/// (DispatchLayout.h) picks the layout, none at all included where the
/// plain fallback is cheapest. Between windows the image has no counting
/// code. Every image goes through the normal update path.
///
/// Promoted targets take no reference and get no OnRelease call: the
/// dispatcher jumps to them only when a caller asked for exactly that
/// address, as the fallback would. Adaptive dispatch needs images laid out
/// directly (x86-64, ImageLowering::Auto, the selector in a register).
struct AdaptiveConfig {
  /// Off by default: an adaptive dispatcher reserves counter blocks of its
  /// own, one per possible CPU rounded up to a power of two (about 1.5 KB
  /// each at the default Capacity: 368 KB of address space on a 256-CPU
  /// host, resident only where a CPU counted calls), each window is two
  /// updates of the image (grace periods, membarrier IPIs), the process
  /// gains a learner thread (Background), and a layout the model picks
  /// wrongly can cost (README, "Adaptive dispatch"). Turn it on for the
  /// hot call sites whose targets are not known in advance.
  bool Enabled = false;
  /// Windows are opened and closed by a thread of the library, one for
  /// the whole process (false: only by the host, with beginLearning() and
  /// endLearning()).
  bool Background = true;
  /// How long a window stays open.
  std::chrono::microseconds Window{2000};
  /// The time from one window's close to the next window's open; doubles
  /// after a window that changed nothing, up to MaxPeriod, and goes back to
  /// Period after one that changed the image.
  std::chrono::microseconds Period{10000};
  std::chrono::microseconds MaxPeriod{320000};
  /// At most this many promoted targets at once.
  unsigned MaxPromoted = 8;
  /// A fallback target is promoted once its share of a window's calls
  /// reaches this, and demoted when it falls below half of it.
  double PromoteShare = 0.02;
  /// A new layout replaces the current one only when the model predicts it
  /// at least this much cheaper (relative) for the calls just counted.
  double Hysteresis = 0.1;
  /// Selectors of the fallback kept per CPU and window (a power of two):
  /// the most recent ones, a fair sample of a window whose calls are mixed,
  /// and the newest hot targets of a call site whose target moves.
  unsigned FallbackSamples = 64;
  /// Sampling inside a window: per CPU, SampleBurst calls in a row are
  /// counted, then SampleSkip calls are not, and so on (the default counts
  /// one call in 8, in bursts of 32 so that the order of consecutive calls
  /// is still seen). A call that is not counted costs a window one load, a
  /// decrement and a branch; a counted one a few increments more. The
  /// counts (LearningReport, status()) are of the counted calls.
  /// SampleSkip = 0 counts every call.
  unsigned SampleBurst = 32;
  unsigned SampleSkip = 224;
  /// Sampling in time (Background only): the learner lets a window count
  /// for SampleOn, then stops it for SampleOff, and so on until the
  /// window closes, also a window the host opened with beginLearning().
  /// While it is stopped a call costs one load and a branch more than a
  /// steady image's, and writes nothing: a caller calling in a tight loop
  /// no longer waits for its previous call's count (the sampling's
  /// countdown) on most calls. The defaults count an eighth of a window's
  /// time. SampleOff = 0: the whole window counts (so do windows of a
  /// dispatcher without Background). SampleOn 10 us to 60 s, SampleOff 0
  /// or 10 us to 60 s.
  std::chrono::microseconds SampleOn{100};
  std::chrono::microseconds SampleOff{700};
  /// The trigger (Background only): with TriggerPoll above 0, steady
  /// images count the calls that reach their fallback, per CPU and on that
  /// path only (registered and promoted targets pay nothing; a fallback
  /// call pays about 1 ns on top of its indirect jump or retpoline), and
  /// every TriggerPoll the learner opens the next window at once when more
  /// calls reached the fallback since its last look than twice what the
  /// last window saw reach it at that rate, plus TriggerCalls: a hot
  /// target that moved is promoted within about TriggerPoll + Window
  /// instead of waiting out a Period that doubled while nothing changed.
  /// 0 (the default): no trigger, and steady images have no counting code.
  /// Not while the image has no tree (every call takes the fallback
  /// there). 0 or 100 us to 60 s.
  std::chrono::microseconds TriggerPoll{0};
  uint64_t TriggerCalls = 1000;
  /// Counting images read the CPU number from the rseq area glibc
  /// registers for each thread it starts (one load through %fs), where
  /// glibc registered one; else with `rdpid` (about 2 ns) or `lsl`. A host
  /// whose calling threads were not started by glibc (their %fs not
  /// glibc's thread block) sets this false.
  bool UseRSeq = true;
};

/// What one learning window saw and did (Dispatcher::endLearning()).
struct LearningReport {
  /// Calls counted: to image cases (registered and promoted), and to the
  /// fallback.
  uint64_t CaseCalls = 0;
  uint64_t FallbackCalls = 0;
  /// How much better than independent draws the order of the calls was
  /// predicted by the previous call (LayoutOptions::Predictability).
  double Predictability = 0;
  std::vector<uint64_t> Promoted, Demoted;
  /// Whether the window's counts replaced the layout's weights (a target
  /// promoted or demoted, or the model predicting the new layout cheaper
  /// by more than the hysteresis).
  bool LayoutChanged = false;
  /// The layout now live, as DispatchLayout names its shape, and the
  /// model's cost of an average call under the counts.
  std::string Layout;
  double PredictedCost = 0;
};

struct DispatcherConfig {
  /// Base name of the dispatcher's symbols (images, JITDylibs, the entry).
  std::string Name = "dispatch";
  /// The programs' function type in LLVM syntax, e.g. "i32 (ptr, ptr)".
  std::string Signature;
  /// As DispatcherSpec::SelectorArg: unset, the entry takes the program as
  /// an extra trailing pointer parameter.
  std::optional<unsigned> SelectorArg;
  /// ABI extensions of the return value and parameters (as
  /// DispatcherSpec's; the Clang frontend derives them from a C prototype).
  ArgExtension ReturnExtension = ArgExtension::None;
  std::vector<ArgExtension> ParamExtensions;
  /// Distinct programs the dispatcher holds (the kernel's is 48).
  unsigned Capacity = ProgramSet::DefaultCapacity;
  /// How callers read (see Reclamation.h) and how old images are freed.
  RCUFlavor Flavor = RCUFlavor::Memb;
  ReclaimMode Reclaim = ReclaimMode::Synchronous;
  /// Route the fallback indirect call through a retpoline. A laid-out
  /// image is its own retpoline on the selector's register (`call 1f;
  /// 2: pause; lfence; jmp 2b; 1: mov %sel, (%rsp); ret`); a compiled one
  /// calls LLVM's thunk through %r11.
  bool RetpolineFallback = false;
  /// How images are made.
  ImageLowering Lowering = ImageLowering::Auto;
  /// Codegen level of images that are compiled. O1 is the cheapest that folds
  /// the direct tail calls into `je rel32`.
  llvm::CodeGenOptLevel OptLevel = llvm::CodeGenOptLevel::Less;
  /// Place the entry and the images near this address: a program's, or any
  /// function of the module (executable or shared library) the programs
  /// live in. 0: wherever mmap puts new memory when the dispatcher is
  /// made, next to the shared libraries, which is where JIT-compiled code
  /// usually lands too (not where the process's other dispatchers were
  /// placed, which may be near an executable's text). Ignored
  /// with CompiledEntry, which is itself the anchor.
  uint64_t Near = 0;
  /// Adopt this entry, defined with DISPATCHGEN_DEFINE_DISPATCHER, instead
  /// of creating one in JIT memory.
  void *CompiledEntry = nullptr;
  /// At most this many bytes right behind a JIT entry run the live image
  /// in place (Trampoline.h), which saves callers a jump: with synchronous
  /// reclamation, for images laid out directly. The area is sized for an
  /// image of Capacity programs (about 16 bytes each), up to this limit; a
  /// larger image (a weighted layout can be) runs where it was placed, a
  /// jump away. 0: callers always jump to the image.
  size_t ResidentBytes = 64u << 10;
  /// Check each new image as verify() does before it goes live, and refuse
  /// it if the check fails.
  bool VerifyImages = false;
  /// Append each image to /tmp/perf-<pid>.map so perf names it.
  bool PerfMap = false;
  /// Register each image with the GDB JIT interface so debuggers name it.
  /// The interface takes object files, so images are then always compiled
  /// (ImageLowering::Codegen): milliseconds per update.
  bool RegisterWithDebugger = false;
  /// The cost model weighted and adaptive layouts are chosen by. Unset
  /// (the default): the process's calibration (CostCalibration.h),
  /// measured once per process (about 5 ms) on the thread that first
  /// creates an adaptive dispatcher or sets weights (create(),
  /// setWeights(), before they take any lock; a host may call
  /// processCostCalibration() earlier, at a time of its choosing), falling
  /// back to LayoutCostModel's defaults where it cannot measure. Set it to pin
  /// the layouts to known constants: LayoutCostModel() for the defaults
  /// (measured on the project's Xeon), or the constants `dispatch-gen
  /// bench` fits from its full run ("the cost model on this machine").
  std::optional<LayoutCostModel> CostModel;
  /// Adaptive dispatch (see AdaptiveConfig); off by default.
  AdaptiveConfig Adaptive;
  /// Called once for each program whose last reference went, after no
  /// caller can still reach it through an image: on the updating thread
  /// (Synchronous) or on liburcu's call_rcu thread (Asynchronous).
  /// Also called, at destruction, for every program still registered.
  /// Each call pairs with one registration: with Asynchronous, the
  /// release of a program removed and quickly added again may arrive after
  /// the new add, so count references rather than free on release.
  llvm::unique_function<void(const ProgramEntry &)> OnRelease;
  /// Testing only: called at each FaultPoint of every update; an error
  /// fails the update there.
  llvm::unique_function<llvm::Error(FaultPoint)> InjectFault;
  /// Testing only, never set in production: skip one grace period, a
  /// deliberately broken reclamation that dispatch-gen-torture
  /// --broken-reclamation must catch by its own count of the matching
  /// event. A test that passes with it proves nothing.
  SkippedGracePeriod SkipGracePeriodForTesting = SkippedGracePeriod::None;
  /// Testing only: each laid-out image starts with this many `pause`
  /// instructions (a loop over %eax), so that callers linger in images and
  /// in the resident area, where a torture can catch them when memory is
  /// freed or rewritten too early. Compiled images have none.
  unsigned ImageDelayForTesting = 0;
  /// Testing only: every call that takes the fallback first calls this
  /// with its selector (from a thunk that saves the argument registers and
  /// %xmm0-7, on the calling thread), so a test can count registered
  /// programs that the image failed to reach directly. Images then end in
  /// a jump to that thunk, as with RetpolineFallback.
  void (*FallbackHookForTesting)(uint64_t Selector) = nullptr;
  /// Testing only: freed image memory stays inaccessible in a quarantine
  /// of the last 64 frees before it is reused, and the resident area is
  /// filled with int3 (and every thread serialised) before it is
  /// rewritten, so a caller left behind in either traps instead of running
  /// the next image's code.
  bool PoisonForTesting = false;
};

/// A snapshot of a dispatcher's state.
struct DispatcherStatus {
  /// Whether images are generated (x86-64 Linux); otherwise the entry is
  /// the plain indirect call and updates only maintain the registry.
  bool Supported = false;
  /// Updates that changed the image.
  uint64_t Generation = 0;
  size_t Programs = 0;
  /// Programs reached with a direct jump, and programs out of rel32 reach
  /// that take the fallback.
  size_t DirectTargets = 0;
  size_t FallbackTargets = 0;
  uint64_t EntryAddress = 0;
  /// The live image; 0 when the entry does the plain indirect call.
  uint64_t ImageAddress = 0;
  uint64_t ImageSize = 0;
  /// Whether the live image (or the next, while there is none) is laid out
  /// directly rather than compiled (see ImageLowering).
  bool LaidOutDirectly = false;
  /// Whether calls run a copy of the live image in place behind the entry
  /// (ImageAddress is then that copy's address).
  bool Resident = false;
  /// Regenerate and patch, and the grace period after it, of the last
  /// update that changed the image.
  std::chrono::nanoseconds LastUpdateLatency{0};
  std::chrono::nanoseconds LastGracePeriod{0};
  /// JIT allocations alive (images waiting for reclamation included).
  uint64_t LiveAllocations = 0;
  /// Adaptive dispatch: whether a learning window is open (the live image
  /// counts), windows closed so far, the targets promoted now, the counts
  /// of the last window per image case (registered and promoted, by
  /// address) and of its fallback, and the live layout with its predicted
  /// cost per call (DispatchLayout::predictedCost()).
  bool Learning = false;
  uint64_t LearningWindows = 0;
  /// Of those, the windows the trigger opened early.
  uint64_t TriggeredWindows = 0;
  std::vector<uint64_t> Promoted;
  std::vector<std::pair<uint64_t, uint64_t>> LearnedCounts;
  uint64_t LearnedFallbackCalls = 0;
  double LearnedPredictability = 0;
  std::string Layout;
  double PredictedCost = 0;
  /// The cost model layouts are chosen by (DispatcherConfig::CostModel)
  /// and where it came from: "configured", "calibrated" (measured on this
  /// CPU, once per process), or "defaults" (a plain dispatcher, whose
  /// layout does not depend on it, or a calibration that could not
  /// measure: CostModelNote says why).
  LayoutCostModel CostModel;
  std::string CostModelSource;
  std::string CostModelNote;
  /// The last background window's failure; empty when none failed.
  std::string LearningError;
  /// The counter blocks of adaptive dispatch: reserved (one per possible
  /// CPU, and the gate's line), and resident now (only the pages of CPUs
  /// whose calls a window counted).
  uint64_t CounterBytes = 0;
  uint64_t CounterResidentBytes = 0;
};

class Dispatcher {
public:
  /// A dispatcher with its own ORC ExecutionSession.
  static llvm::Expected<std::unique_ptr<Dispatcher>>
  create(DispatcherConfig Config);

  /// A dispatcher inside an embedding JIT: its JITDylibs and layers are
  /// added to ES, and programs can be named by symbol in ES's JITDylibs.
  /// ES must outlive the dispatcher.
  static llvm::Expected<std::unique_ptr<Dispatcher>>
  create(DispatcherConfig Config, llvm::orc::ExecutionSession &ES);
  static llvm::Expected<std::unique_ptr<Dispatcher>>
  create(DispatcherConfig Config, llvm::orc::LLJIT &J);

  /// Waits for pending reclamation, puts a compiled-in entry back to its
  /// indirect call, frees every image and releases every program.
  ///
  /// Lifetime rules: destroy a dispatcher before the ExecutionSession (or
  /// LLJIT) it was created in. Calls already inside a read-side section
  /// when destruction begins finish safely (it waits for a grace period);
  /// no call may start after that: a JIT entry's memory is filled with
  /// `hlt`, so a late call faults (SIGSEGV) until another dispatcher reuses
  /// the memory and runs its own code there, while a compiled-in entry
  /// goes back to the plain indirect call and stays callable. Destroying a
  /// synchronous or asynchronous Memb dispatcher from inside a read-side
  /// section on the same thread would wait forever for that section: it reports
  /// that on stderr and aborts instead.
  ~Dispatcher();
  Dispatcher(const Dispatcher &) = delete;
  Dispatcher &operator=(const Dispatcher &) = delete;

  /// The address callers call, with the dispatcher's signature.
  uint64_t entry() const;
  template <typename FnT> FnT *entryAs() const {
    return reinterpret_cast<FnT *>(entry());
  }
  /// The JITDylib holding the absolute symbol Name (the entry) for JIT
  /// callers to link against; null for a standalone dispatcher. It is the
  /// session's "dispatch-gen.entries", shared by every dispatcher of the
  /// session and alive until the session ends, so a host may keep it in
  /// any link order after the dispatcher is gone: destroying a dispatcher
  /// removes only its symbol, and a later lookup of it fails with ORC's
  /// "Symbols not found" (code already linked against the entry address
  /// must not call it any more; see ~Dispatcher).
  llvm::orc::JITDylib *entryDylib() const;

  /// ProgramSet's operations; each regenerates the image when the
  /// membership changed. With synchronous reclamation and Memb readers,
  /// calling them inside a read-side section of this thread is an error
  /// (the update would wait for its own grace period). The dispatcher's
  /// own entry is refused as a program.
  llvm::Error add(uint64_t Program, llvm::StringRef Name = "");
  /// Adds the program defined by Symbol in JD (materialising it).
  llvm::Error add(llvm::StringRef Symbol, llvm::orc::JITDylib &JD);
  llvm::Error remove(uint64_t Program);
  llvm::Error change(uint64_t From, uint64_t To, llvm::StringRef ToName = "");
  /// Applies a whole batch with at most one regeneration.
  llvm::Error apply(const ProgramSet::Batch &Batch);

  /// Observed call counts; the next regeneration (or regenerate()) weights
  /// the image's compare tree by them. Unknown programs are ignored.
  void setWeights(llvm::ArrayRef<std::pair<uint64_t, uint64_t>> Weights);
  /// Rebuilds the image for the current set (e.g. after setWeights).
  llvm::Error regenerate();

  /// Adaptive dispatch (DispatcherConfig::Adaptive): opens a learning
  /// window (the live image becomes a counting one), and closes it: the
  /// counts become weights, hot fallback targets are promoted, cold ones
  /// demoted, and the image is laid out anew without counting code. The
  /// background learner calls these; a host that drives windows itself
  /// (Background = false) calls them in pairs. A host may also open a
  /// window of a Background dispatcher: the learner then samples it in
  /// time (SampleOn/SampleOff), does not open another meanwhile, and leaves
  /// closing it to the host. An error for a dispatcher without adaptive
  /// dispatch, or for a window already open (begin) or not open (end).
  llvm::Error beginLearning();
  llvm::Expected<LearningReport> endLearning();

  DispatcherStatus status() const;
  /// The registered programs, by address, then the promoted targets
  /// (Promoted set, no Users: they hold no reference).
  std::vector<ProgramEntry> programs() const;
  /// Writes the live image's disassembly, naming the programs it reaches.
  llvm::Error dump(llvm::raw_ostream &OS) const;
  /// Checks the live image (and its resident copy): exactly one indirect
  /// branch (the fallback; none with a retpoline) and every other branch
  /// direct to a program or within the image; then, where the selector
  /// arrives in a register (always for laid-out images), proves the
  /// routing by running the image's code for keys: every registered
  /// program within reach leaves by a direct jump to itself, and keys of
  /// no program (below, between and above the programs) by the fallback
  /// with the selector intact.
  llvm::Error verify() const;

  class Impl;

private:
  explicit Dispatcher(std::unique_ptr<Impl> I);
  std::unique_ptr<Impl> I;
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_DISPATCHER_H
