//===- DispatcherImpl.h - A live dispatcher's state -------------*- C++ -*-===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Dispatcher::Impl, private to the Dispatcher component: Dispatcher.cpp creates
// it and runs updates, DispatcherBuild.cpp makes each image (and picks its
// lowering), DispatcherInspection.cpp checks and prints the images (verify(),
// dump()). The resident copy is a ResidentImage's.
//
//===----------------------------------------------------------------------===//

#ifndef DISPATCH_GEN_LIB_DISPATCHER_DISPATCHERIMPL_H
#define DISPATCH_GEN_LIB_DISPATCHER_DISPATCHERIMPL_H

#include "ImageLinker.h"
#include "ResidentImage.h"

#include "dispatch-gen/CodeInspector.h"
#include "dispatch-gen/Dispatcher.h"
#include "dispatch-gen/Trampoline.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/LLVMContext.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>

namespace dispatchgen {

/// An image as built for one program set: where it runs, how it was made
/// and what it reaches. The live image and the empty set's are two of these.
struct BuiltImage {
  LinkedImage Linked;
  /// The layout, while laid out directly: what a resident copy is
  /// relocated from.
  std::optional<X86Image> Code;
  /// The programs it reaches directly, as laid out.
  std::vector<ImageCase> Cases;
  /// Programs reached directly, and left to the fallback (out of reach).
  size_t Direct = 0, Fallback = 0;
  /// Laid out without codegen.
  bool Laid = false;
  /// Its fallback is a retpoline in the image.
  bool InlineRetpoline = false;
  /// A counting image (a learning window's): Cases[C] counts at counter C.
  bool Counting = false;
  /// The layout's shape (DispatchLayout) and the model's cost of a call.
  std::string Layout;
  double PredictedCost = 0;
  explicit operator bool() const { return bool(Linked); }
};

class Dispatcher::Impl {
public:
  using Clock = std::chrono::steady_clock;

  explicit Impl(DispatcherConfig C)
      : Config(std::move(C)), Set(Config.Capacity),
        Reclaim(Config.Flavor, Config.Reclaim) {}

  llvm::Error init(llvm::orc::ExecutionSession *ES);
  ~Impl();

  llvm::Error update(const ProgramSet::Batch &B, bool Force);
  DispatcherStatus status() const;
  llvm::Error dump(llvm::raw_ostream &OS) const;
  llvm::Error verify() const;

  /// Immutable after init().
  DispatcherConfig Config;
  /// Set once init() succeeded and the dispatcher went to its owner.
  bool Created = false;
  bool Supported = false;
  /// The address callers call, set once init() succeeded; it never changes,
  /// so entry() reads it without the mutex.
  uint64_t EntryAddress = 0;
  std::unique_ptr<Trampoline> Entry;
  std::unique_ptr<ImageLinker> Linker;

  /// Everything below is guarded by UpdateMutex: updates are serialised, and
  /// status()/dump() read under it. Reclamation callbacks touch only what
  /// they captured, and the linker (thread-safe through ORC).
  mutable std::mutex UpdateMutex;
  ProgramSet Set;
  llvm::DenseMap<uint64_t, uint64_t> Weights;
  /// Where compiled images are built (made by the first one).
  std::unique_ptr<llvm::LLVMContext> Ctx;
  llvm::FunctionType *Signature = nullptr;
  /// The image the entry jumps to; none while the set is empty (then a JIT
  /// entry leads to Empty, and a compiled-in one does its own indirect
  /// call).
  BuiltImage Live;
  /// A JIT entry's image for the empty set (the indirect call), made once.
  BuiltImage Empty;
  uint64_t Generation = 0;
  size_t DirectTargets = 0, FallbackTargets = 0;
  /// The copy of the image in the entry's resident area; made by init()
  /// for a JIT entry that has an area.
  std::unique_ptr<ResidentImage> Resident;
  Clock::duration LastUpdate{}, LastGrace{};

  /// Where the selector arrives when images can be laid out directly
  /// (x86-64 and ImageLowering::Auto); immutable after init().
  std::optional<unsigned> SelectorReg;
  /// Where it arrives whatever the lowering (x86-64, a register by a
  /// simple rule): what verify() runs images from. Immutable after init().
  std::optional<unsigned> RouteReg;
  /// Whether the fallback jumps to the thunk (a retpoline, or the testing
  /// hook's) rather than through the selector; immutable.
  bool ThunkFallback = false;
  /// Laid-out images fall back through a retpoline of their own
  /// (X86ImageOptions::InlineRetpoline) instead of the linker's thunk.
  bool InlineRetpoline = false;

  Reclaimer Reclaim;
  /// Made on first use; used under UpdateMutex only (not thread-safe).
  mutable std::unique_ptr<CodeInspector> Inspector;

  // Adaptive dispatch (DispatcherLearning.cpp), guarded by UpdateMutex but
  // for the counters, which callers write while a window is open.
  /// Per-CPU counter blocks of counting images; made by init().
  std::optional<X86CountingPlan> CountingPlan;
  void *CounterMemory = nullptr;
  size_t CounterBytes = 0;
  /// A window is open: images are made counting.
  /// Atomic: the learner reads it without UpdateMutex.
  std::atomic<bool> Learning{false};
  /// Counts the windows opened, so that the learner can tell a late word
  /// of an earlier window from one of the window open now.
  uint64_t WindowSerial = 0;
  uint64_t LearningWindows = 0;
  /// Unregistered targets the image reaches directly.
  std::vector<uint64_t> Promoted;
  /// The weights the steady layout is made from (by address) and the
  /// fallback's, from the window that last changed the layout.
  llvm::DenseMap<uint64_t, uint64_t> Learned;
  uint64_t LearnedFallback = 0;
  /// The counts did not make a layout predicted cheaper than the plain
  /// dispatcher's by the hysteresis: the image is laid out as a
  /// dispatcher without counts lays it out (Learned still says what was
  /// counted).
  bool LearnedPlain = false;
  /// The layout a dispatcher without counts makes of Cases.
  DispatchLayout plainLayout(llvm::ArrayRef<LayoutCase> Cases) const;
  /// The model layouts are chosen by: the configured one, else the
  /// process's calibration (CostCalibration.h) for an adaptive or weighted
  /// dispatcher (measured by create() or setWeights() before they lock,
  /// so never under UpdateMutex), else the defaults (a plain layout does
  /// not depend on the model).
  const LayoutCostModel &costModel() const;
  /// Where costModel() comes from, as DispatcherStatus::CostModelSource,
  /// and the calibration's note when it kept the defaults.
  std::pair<llvm::StringRef, llvm::StringRef> costModelSource() const;
  /// How much better than independent draws the order of calls was
  /// predicted (LayoutOptions::Predictability).
  double LearnedPredictability = 0;
  /// What the last window counted, for status().
  std::vector<std::pair<uint64_t, uint64_t>> LastCounts;
  uint64_t LastFallback = 0;
  /// When the window opened.
  Clock::time_point WindowStart{};
  /// The window's gate (X86CountingPlan::Gate, with Background and
  /// AdaptiveConfig::SampleOff): the learner opens and closes it; the time
  /// it was open is the time the window counted. GateMutex is taken last.
  std::mutex GateMutex;
  bool GateOpen = false;
  Clock::time_point GateOpenedAt{};
  Clock::duration GateOpenFor{};
  void setGate(bool Open);
  /// Opens a shut gate, shuts an open one; returns whether it is open.
  bool toggleGate();
  void setGateLocked(bool Open);
  /// Shuts the gate and returns the time the window counted (with no
  /// gate: since it opened).
  Clock::duration stopCounting();
  /// Whether a window is open.
  bool learningNow() const { return Learning; }
  /// The counter pages ever seen written (TouchedPages).
  mutable std::mutex CounterPagesMutex;
  mutable std::vector<unsigned char> CounterPagesSeen;
  /// The bytes of the counter blocks' pages that are resident.
  uint64_t counterResidentBytes() const;
  /// The trigger (AdaptiveConfig::TriggerPoll): the fallback calls per
  /// second the last window saw go on reaching the fallback (sampled counts
  /// scaled back), and the windows the trigger opened. Read and written by
  /// the learner without UpdateMutex.
  std::atomic<double> FallbackRateSeen{0};
  std::atomic<uint64_t> TriggeredWindows{0};
  /// The calls steady images sent to their fallback since the last window
  /// opened (the blocks' steadyFallbackCounter()s, summed).
  uint64_t steadyFallbackCalls() const;
  /// The last background window's failure, for status().
  std::string LearningError;

  llvm::Error initLearning();
  void freeLearning();
  llvm::Error beginLearning();
  llvm::Expected<LearningReport> endLearning();

private:
  /// The resident copy while calls run it; null otherwise.
  const ResidentImage *residentCopy() const {
    return Resident && Resident->isOpen() ? Resident.get() : nullptr;
  }

  // DispatcherInspection.cpp.
  llvm::Expected<CodeInspector &> inspector() const;
  /// Counting: a learning window's image, whose routes are not run (its
  /// counting code is beyond followSelector), only its branches checked.
  /// InlineRetpoline: the fallback is the image's own retpoline.
  llvm::Error verifyImage(const LinkedImage &Image,
                          llvm::ArrayRef<uint64_t> Programs,
                          bool Counting = false,
                          bool InlineRetpoline = false) const;
  /// Runs the image for every program and for keys of none (see verify()).
  llvm::Error verifyRoutes(const CodeInspector &I,
                           llvm::ArrayRef<uint8_t> Bytes, uint64_t Address,
                           llvm::ArrayRef<uint64_t> Programs,
                           uint64_t Thunk) const;

  // DispatcherBuild.cpp.
  /// Makes the image for the current set; Laid tells whether it was laid
  /// out directly (X86ImageEmitter) rather than compiled.
  llvm::Expected<BuiltImage> build(uint64_t Gen);
  llvm::Expected<LinkedImage> buildWithCodegen(uint64_t Gen,
                                               llvm::StringRef ImageSymbol,
                                               llvm::ArrayRef<ImageCase> Cases);
  void resetContextIfOld();

  // Dispatcher.cpp.
  /// Has Resident copy the image the entry leads to behind the entry and
  /// open the gate (see ResidentImage::settle()).
  void settleResident();
  llvm::Error switchTo(LinkedImage &Image);
};

} // namespace dispatchgen

#endif // DISPATCH_GEN_LIB_DISPATCHER_DISPATCHERIMPL_H
