//===- Dispatcher.cpp - A live dispatcher ---------------------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Dispatcher and its Impl's life: creation, updates (a new image, the
// entry switched to it, the old one reclaimed after a grace period) and
// status. Images are made in DispatcherBuild.cpp, checked and printed in
// DispatcherInspection.cpp; the resident copy is a ResidentImage's.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Dispatcher.h"

#include "DispatcherImpl.h"
#include "Learner.h"
#include "ShadowStack.h"

#include "dispatch-gen/CostCalibration.h"
#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include <cmath>
#include <cstdlib>
#include <mutex>

using namespace llvm;
using namespace llvm::orc;

namespace dispatchgen {

/// Whether a synchronous update or a destruction on this thread would wait
/// for a grace period that its own read-side section holds up forever.
static bool waitsForItself(const DispatcherConfig &Config) {
  return Config.Flavor == RCUFlavor::Memb && rcuReadOngoing(Config.Flavor);
}

/// Checks Config's signature and returns the register the selector arrives
/// in on x86-64 (see getX86SelectorRegister), nothing elsewhere. Parsed in
/// one context shared by every dispatcher of the process, where types are
/// uniqued: a dispatcher needs a context of its own only to compile.
static Expected<std::optional<unsigned>>
checkSignature(const DispatcherConfig &Config) {
  static std::mutex M;
  static LLVMContext *Shared = new LLVMContext();
  std::lock_guard<std::mutex> Lock(M);
  auto Sig = parseSignature(Config.Signature, *Shared);
  if (!Sig)
    return Sig.takeError();
  FunctionType *Signature = *Sig;
  if (Config.ParamExtensions.size() > Signature->getNumParams())
    return createStringError(
        formatv("{0} parameter extensions for a signature of {1} "
                "parameter(s)",
                Config.ParamExtensions.size(), Signature->getNumParams()));
  if (auto T =
          DispatchIRBuilder::getDispatcherType(Signature, Config.SelectorArg);
      !T)
    return T.takeError();
  // A return value the backend cannot pass in registers would make it
  // abort the host while compiling an image: ask it first, once per type.
  Type *Ret = Signature->getReturnType();
  if (Ret->isAggregateType() || Ret->isVectorTy() ||
      Ret->getPrimitiveSizeInBits() > 64) {
    static auto *Checked = new DenseMap<FunctionType *, std::string>();
    auto [It, New] = Checked->try_emplace(Signature);
    if (New) {
      auto TM = ImageLinker::hostTargetMachine();
      if (!TM)
        return TM.takeError();
      if (Error E = DispatchIRBuilder::checkLowerable(*TM, Signature))
        It->second = toString(std::move(E));
    }
    if (!It->second.empty())
      return createStringError(It->second);
  }
  if (Triple(sys::getProcessTriple()).getArch() != Triple::x86_64)
    return std::nullopt;
  return getX86SelectorRegister(Signature, Config.SelectorArg);
}

Error Dispatcher::Impl::init(ExecutionSession *ES) {
  if (Config.Capacity == 0)
    return createStringError("a dispatcher's capacity must be at least 1");
  if (Config.Name.empty())
    return createStringError("a dispatcher needs a name");
  if (const std::optional<LayoutCostModel> &M = Config.CostModel) {
    auto Cost = [](double V) { return std::isfinite(V) && V >= 0; };
    if (!Cost(M->Compare) || !Cost(M->Mispredict) || !Cost(M->IndirectBranch) ||
        !Cost(M->Retpoline) || !Cost(M->IndirectMispredict) ||
        !Cost(M->PredictorCapacity) ||
        !(M->ResidualMispredict >= 0 && M->ResidualMispredict <= 1))
      return createStringError(
          "DispatcherConfig::CostModel's costs must be finite and not "
          "negative, and its ResidualMispredict 0 to 1");
  }
  if (Config.RetpolineFallback && shadowStackEnabled())
    return createStringError(
        "RetpolineFallback: a retpoline returns to an address it wrote over "
        "its return address, which this thread's shadow stack (CET) "
        "forbids");
  ThunkFallback = Config.RetpolineFallback || Config.FallbackHookForTesting;
  InlineRetpoline = Config.RetpolineFallback && !Config.FallbackHookForTesting;
  auto Reg = checkSignature(Config);
  if (!Reg)
    return Reg.takeError();

  if (Error E = Trampoline::checkSupported()) {
    // The kernel's -ENOTSUPP: a compiled-in entry keeps its indirect call
    // and the registry still works; a JIT entry cannot exist.
    if (!Config.CompiledEntry)
      return E;
    consumeError(std::move(E));
    return Error::success();
  }
  Supported = true;

  RouteReg = *Reg;
  // The GDB JIT interface takes object files, which only codegen makes.
  if (Config.Lowering == ImageLowering::Auto && !Config.RegisterWithDebugger)
    SelectorReg = RouteReg;
  auto T = Config.CompiledEntry
               ? Trampoline::adopt(Config.CompiledEntry)
               : Trampoline::create(Config.Near,
                                    ResidentImage::areaSize(Config, SelectorReg,
                                                            ThunkFallback));
  if (!T)
    return T.takeError();
  Entry = std::move(*T);
  Entry->setPoisonForTesting(Config.PoisonForTesting);

  ImageLinkerOptions LinkerOptions;
  LinkerOptions.Name = Config.Name;
  LinkerOptions.OptLevel = Config.OptLevel;
  LinkerOptions.RegisterWithDebugger = Config.RegisterWithDebugger;
  LinkerOptions.RetpolineFallback = Config.RetpolineFallback;
  LinkerOptions.PerfMap = Config.PerfMap;
  LinkerOptions.FallbackHook = Config.FallbackHookForTesting;
  LinkerOptions.Faults = &Config.InjectFault;
  auto L = ImageLinker::create(ES, LinkerOptions, Entry->address());
  if (!L)
    return L.takeError();
  Linker = std::move(*L);
  if (Entry->residentCapacity())
    Resident = std::make_unique<ResidentImage>(*Entry, *Linker);
  if (Config.PoisonForTesting)
    NearArena::get().setQuarantineForTesting(64);
  if (ThunkFallback)
    if (auto Thunk = Linker->fallbackThunk(); !Thunk)
      return Thunk.takeError();
  if (ES)
    if (auto JD = Linker->defineEntry(Config.Name, Entry->address()); !JD)
      return JD.takeError();

  if (Config.CompiledEntry)
    return Error::success();
  // A JIT entry starts on the image of the empty set: the indirect call.
  auto Image = build(Generation);
  if (!Image)
    return Image.takeError();
  Empty = std::move(*Image);
  if (Error E = Entry->retarget(Empty.Linked.Address))
    return E;
  // No caller knows the entry yet.
  settleResident();
  return initLearning();
}

void Dispatcher::Impl::settleResident() {
  if (!Resident)
    return;
  const BuiltImage &Current = Live ? Live : Empty;
  auto Verify = [this, &Current](uint64_t Address, uint64_t Size) -> Error {
    LinkedImage Copy;
    Copy.Address = Address;
    Copy.Size = Size;
    std::vector<uint64_t> Programs;
    if (Live && Live.Layout != "fallback-only")
      for (const ImageCase &C : Live.Cases)
        Programs.push_back(C.Target);
    return verifyImage(Copy, Programs, Current.Counting,
                       Current.InlineRetpoline);
  };
  Resident->settle(Current.Code, Current.Cases,
                   Config.VerifyImages ? ResidentImage::Verifier(Verify)
                                       : ResidentImage::Verifier(),
                   formatv("{0}.image.g{1}", Config.Name, Generation));
}

Dispatcher::Impl::~Impl() {
  // First: the learner thread may be opening a window on this dispatcher.
  freeLearning();
  // A dispatcher whose creation failed was never seen by a caller: nothing
  // to wait for (and a create() that fails inside a read-side section must
  // return its error, not wait for itself).
  if (!Created) {
    if (Entry && Config.CompiledEntry)
      consumeError(Entry->reset());
    if (Linker) {
      consumeError(Linker->remove(Live.Linked));
      consumeError(Linker->remove(Empty.Linked));
    }
    return;
  }
  if (waitsForItself(Config)) {
    // A destructor cannot return an error, and waiting would never end.
    errs() << formatv("dispatch-gen: dispatcher '{0}' destroyed inside a "
                      "read-side section on this thread; it would wait "
                      "forever for its own grace period\n",
                      Config.Name);
    std::abort();
  }
  Reclaim.drain();
  // No caller may be inside an image once the entry no longer leads there
  // and a grace period has passed.
  if (Entry && Config.CompiledEntry)
    consumeError(Entry->reset());
  Reclaim.synchronize();
  if (Linker) {
    consumeError(Linker->remove(Live.Linked));
    consumeError(Linker->remove(Empty.Linked));
  }
  if (Config.OnRelease)
    for (const ProgramEntry &P : Set.entries())
      Config.OnRelease(P);
}

Error Dispatcher::Impl::switchTo(LinkedImage &Image) {
  if (Config.InjectFault)
    if (Error E = Config.InjectFault(FaultPoint::Patch))
      return createStringError("cannot patch the entry: " +
                               toString(std::move(E)));
  if (Image)
    return Entry->retarget(Image.Address);
  return Config.CompiledEntry ? Entry->reset()
                              : Entry->retarget(Empty.Linked.Address);
}

Error Dispatcher::Impl::update(const ProgramSet::Batch &B, bool Force) {
  if (Config.Reclaim == ReclaimMode::Synchronous && waitsForItself(Config))
    return createStringError(
        formatv("dispatcher '{0}': update called inside a "
                "read-side section on this thread; it would wait "
                "forever for its own grace period",
                Config.Name));
  if (Config.Adaptive.Enabled && Config.Adaptive.Background && Created)
    Learner::get().ensureRunning();
  std::lock_guard<std::mutex> Lock(UpdateMutex);
  // On a failure below, Set.revert(*Delta) puts the set back as it was.
  auto Delta = Set.apply(B);
  if (!Delta)
    return Delta.takeError();
  // The entry as a program would call itself forever.
  if (Entry)
    for (const ProgramEntry &P : Delta->Added)
      if (P.Address >= Entry->address() &&
          P.Address < Entry->address() + Entry->span()) {
        Set.revert(*Delta);
        return createStringError(
            formatv("program {0:x} is dispatcher '{1}''s own "
                    "entry: a call would loop forever",
                    P.Address, Config.Name));
      }
  if (!Delta->changed() && !Force)
    return Error::success();

  auto Start = Clock::now();
  uint64_t Gen = Generation + 1;
  BuiltImage Next;
  // Without an image (unsupported, or the empty set) every program takes
  // the entry's own indirect call.
  Next.Fallback = Set.size();
  // Adaptive dispatch: promoted targets, or a window's counting, need an
  // image even for an empty set.
  if (Supported && (!Set.empty() || !Promoted.empty() || Learning)) {
    auto Image = build(Gen);
    if (!Image) {
      Set.revert(*Delta);
      return Image.takeError();
    }
    Next = std::move(*Image);
  }
  if (Supported) {
    if (Error E = switchTo(Next.Linked)) {
      consumeError(Linker->remove(Next.Linked));
      Set.revert(*Delta);
      return E;
    }
  }
  LastUpdate = Clock::now() - Start;
  Generation = Gen;
  // A promoted target the host registered is a program now: its slot goes
  // back to the learner.
  llvm::erase_if(Promoted, [&](uint64_t P) { return Set.contains(P); });
  DirectTargets = Next.Direct;
  FallbackTargets = Next.Fallback;
  // switchTo() closed the gate.
  if (Resident)
    Resident->closed();
  LinkedImage Old = std::exchange(Live, std::move(Next)).Linked;
  std::vector<ProgramEntry> Removed = std::move(Delta->Removed);
  auto RemoveImage = [this](LinkedImage &Image) {
    if (Linker)
      if (Error E = Linker->remove(Image))
        Linker->reportError(std::move(E));
  };
  auto Release = [this](ArrayRef<ProgramEntry> Programs) {
    if (Config.OnRelease)
      for (const ProgramEntry &P : Programs)
        Config.OnRelease(P);
  };
  // Testing only: each skips the one grace period the torture must catch.
  SkippedGracePeriod Skip = Config.SkipGracePeriodForTesting;
  if (Skip == SkippedGracePeriod::Programs)
    Release(std::exchange(Removed, {}));
  if (Skip == SkippedGracePeriod::Images)
    RemoveImage(Old);
  bool Settle = Supported && ResidentImage::allowed(Config);
  if (Skip == SkippedGracePeriod::Resident && Settle)
    settleResident();

  // After the grace period no caller can be in the old image or in a
  // program that left the set.
  auto GraceStart = Clock::now();
  Reclaim.retire([RemoveImage, Release, Old = std::move(Old),
                  Removed = std::move(Removed)]() mutable {
    RemoveImage(Old);
    Release(Removed);
  });
  LastGrace = Clock::now() - GraceStart;
  // Synchronous: a grace period has passed since the entry left the
  // resident area for the new image.
  if (Skip != SkippedGracePeriod::Resident && Settle)
    settleResident();
  return Error::success();
}

DispatcherStatus Dispatcher::Impl::status() const {
  std::lock_guard<std::mutex> Lock(UpdateMutex);
  DispatcherStatus S;
  S.Supported = Supported;
  S.Generation = Generation;
  S.Programs = Set.size();
  S.DirectTargets = DirectTargets;
  S.FallbackTargets = FallbackTargets;
  S.EntryAddress = EntryAddress;
  const LinkedImage &Image = Live ? Live.Linked : Empty.Linked;
  S.ImageAddress = Image.Address;
  S.ImageSize = Image.Size;
  if (const ResidentImage *Copied = residentCopy()) {
    S.Resident = true;
    S.ImageAddress = Copied->address();
    S.ImageSize = Copied->size();
  }
  S.LaidOutDirectly = Live ? Live.Laid : SelectorReg.has_value();
  S.LastUpdateLatency =
      std::chrono::duration_cast<std::chrono::nanoseconds>(LastUpdate);
  S.LastGracePeriod =
      std::chrono::duration_cast<std::chrono::nanoseconds>(LastGrace);
  S.LiveAllocations = Linker ? Linker->liveAllocations() : 0;
  S.Learning = Learning;
  S.LearningWindows = LearningWindows;
  S.TriggeredWindows = TriggeredWindows.load(std::memory_order_relaxed);
  S.Promoted = Promoted;
  S.LearnedCounts = LastCounts;
  S.LearnedFallbackCalls = LastFallback;
  S.LearnedPredictability = LearnedPredictability;
  S.LearningError = LearningError;
  const BuiltImage &Current = Live ? Live : Empty;
  S.Layout = Current ? Current.Layout : "";
  S.PredictedCost = Current ? Current.PredictedCost : 0;
  S.CostModel = costModel();
  auto [Source, Note] = costModelSource();
  S.CostModelSource = Source.str();
  S.CostModelNote = Note.str();
  S.CounterBytes = CounterBytes;
  S.CounterResidentBytes = counterResidentBytes();
  return S;
}

//===----------------------------------------------------------------------===//
// Dispatcher
//===----------------------------------------------------------------------===//

Dispatcher::Dispatcher(std::unique_ptr<Impl> I) : I(std::move(I)) {}
Dispatcher::~Dispatcher() = default;

static Expected<std::unique_ptr<Dispatcher::Impl>>
createImpl(DispatcherConfig Config, ExecutionSession *ES) {
  // An adaptive dispatcher chooses its layouts by the process's cost model:
  // measured now, on the creating thread, before any lock is taken (once
  // per process; later calls return at once).
  if (Config.Adaptive.Enabled && !Config.CostModel)
    processCostCalibration();
  auto I = std::make_unique<Dispatcher::Impl>(std::move(Config));
  if (Error E = I->init(ES))
    return createStringError(formatv("cannot create dispatcher '{0}': {1}",
                                     I->Config.Name, toString(std::move(E))));
  // A compiled-in entry stays its own address where no trampoline could
  // adopt it (not supported).
  I->EntryAddress = I->Entry
                        ? I->Entry->address()
                        : reinterpret_cast<uint64_t>(I->Config.CompiledEntry);
  I->Created = true;
  return std::move(I);
}

Expected<std::unique_ptr<Dispatcher>>
Dispatcher::create(DispatcherConfig Config) {
  auto I = createImpl(std::move(Config), nullptr);
  if (!I)
    return I.takeError();
  return std::unique_ptr<Dispatcher>(new Dispatcher(std::move(*I)));
}

Expected<std::unique_ptr<Dispatcher>>
Dispatcher::create(DispatcherConfig Config, ExecutionSession &ES) {
  auto I = createImpl(std::move(Config), &ES);
  if (!I)
    return I.takeError();
  return std::unique_ptr<Dispatcher>(new Dispatcher(std::move(*I)));
}

Expected<std::unique_ptr<Dispatcher>>
Dispatcher::create(DispatcherConfig Config, LLJIT &J) {
  return create(std::move(Config), J.getExecutionSession());
}

uint64_t Dispatcher::entry() const { return I->EntryAddress; }

JITDylib *Dispatcher::entryDylib() const {
  return I->Linker ? I->Linker->entryDylib() : nullptr;
}

Error Dispatcher::add(uint64_t Program, StringRef Name) {
  return I->update(ProgramSet::Batch().add(Program, Name), false);
}

Error Dispatcher::add(StringRef Symbol, JITDylib &JD) {
  // ORC would answer "Symbols not found: [  ]".
  if (Symbol.empty())
    return createStringError("cannot add a program with an empty symbol name");
  ExecutionSession &ES = JD.getExecutionSession();
  auto DL = ImageLinker::hostDataLayout();
  if (!DL)
    return DL.takeError();
  auto Sym = ES.lookup({&JD}, MangleAndInterner(ES, *DL)(Symbol));
  if (!Sym)
    return createStringError(formatv("cannot add program '{0}': {1}", Symbol,
                                     toString(Sym.takeError())));
  return add(Sym->getAddress().getValue(), Symbol);
}

Error Dispatcher::remove(uint64_t Program) {
  return I->update(ProgramSet::Batch().remove(Program), false);
}

Error Dispatcher::change(uint64_t From, uint64_t To, StringRef ToName) {
  return I->update(ProgramSet::Batch().change(From, To, ToName), false);
}

Error Dispatcher::apply(const ProgramSet::Batch &Batch) {
  return I->update(Batch, false);
}

void Dispatcher::setWeights(ArrayRef<std::pair<uint64_t, uint64_t>> Weights) {
  // Weights choose the layout by the process's cost model: measured before
  // the lock, as at the creation of an adaptive dispatcher.
  if (!I->Config.CostModel && !Weights.empty())
    processCostCalibration();
  std::lock_guard<std::mutex> Lock(I->UpdateMutex);
  for (const auto &[Address, Count] : Weights)
    if (I->Set.contains(Address))
      I->Weights[Address] = Count;
}

Error Dispatcher::regenerate() { return I->update(ProgramSet::Batch(), true); }

DispatcherStatus Dispatcher::status() const { return I->status(); }

Error Dispatcher::dump(raw_ostream &OS) const { return I->dump(OS); }

Error Dispatcher::verify() const { return I->verify(); }

std::vector<ProgramEntry> Dispatcher::programs() const {
  std::lock_guard<std::mutex> Lock(I->UpdateMutex);
  std::vector<ProgramEntry> All = I->Set.entries();
  for (uint64_t P : I->Promoted)
    if (!I->Set.contains(P)) {
      ProgramEntry E;
      E.Address = P;
      E.Promoted = true;
      All.push_back(E);
    }
  return All;
}

Error Dispatcher::beginLearning() { return I->beginLearning(); }

Expected<LearningReport> Dispatcher::endLearning() { return I->endLearning(); }

} // namespace dispatchgen
