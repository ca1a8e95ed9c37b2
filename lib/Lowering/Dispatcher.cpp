//===- Dispatcher.cpp - A live dispatcher lowered through ORC -------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Dispatcher.h"

#include "ImageLinker.h"
#include "ResidentImage.h"

#include "dispatch-gen/CodeInspector.h"
#include "dispatch-gen/DispatchIRBuilder.h"
#include "dispatch-gen/Trampoline.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include <cstdlib>
#include <mutex>

using namespace llvm;
using namespace llvm::orc;

namespace dispatchgen {

static Error makeError(const Twine &Msg) {
  return make_error<StringError>(Msg, inconvertibleErrorCode());
}

using Clock = std::chrono::steady_clock;

/// Whether a synchronous update or a destruction on this thread would wait
/// for a grace period that its own read-side section holds up forever.
static bool waitsForItself(const DispatcherConfig &Config) {
  return Config.Flavor == RCUFlavor::RF_Memb && rcuReadOngoing(Config.Flavor);
}

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
  explicit operator bool() const { return bool(Linked); }
};

class Dispatcher::Impl {
public:
  explicit Impl(DispatcherConfig C)
      : Config(std::move(C)), Set(Config.Capacity),
        Reclaim(Config.Flavor, Config.Reclaim) {}

  Error init(ExecutionSession *ES);
  ~Impl();

  Error update(const ProgramSet::Batch &B, bool Force);
  DispatcherStatus status() const;
  Error dump(raw_ostream &OS) const;
  Error verify() const;

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
  DenseMap<uint64_t, uint64_t> Weights;
  /// Where compiled images are built (made by the first one).
  std::unique_ptr<LLVMContext> Ctx;
  FunctionType *Signature = nullptr;
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
  /// (x86-64 and ImageLowering::IL_Auto); immutable after init().
  std::optional<unsigned> SelectorReg;
  /// Where it arrives whatever the lowering (x86-64, a register by a
  /// simple rule): what verify() runs images from. Immutable after init().
  std::optional<unsigned> RouteReg;
  /// Whether the fallback jumps to the thunk (a retpoline, or the testing
  /// hook's) rather than through the selector; immutable.
  bool ThunkFallback = false;

  Reclaimer Reclaim;
  /// Made on first use; used under UpdateMutex only (not thread-safe).
  mutable std::unique_ptr<CodeInspector> Inspector;

private:
  Expected<CodeInspector &> inspector() const;
  Error verifyImage(const LinkedImage &Image,
                    ArrayRef<uint64_t> Programs) const;
  /// Runs the image for every program and for keys of none (see verify()).
  Error verifyRoutes(const CodeInspector &I, ArrayRef<uint8_t> Bytes,
                     uint64_t Address, ArrayRef<uint64_t> Programs,
                     uint64_t Thunk) const;
  /// Makes the image for the current set; Laid tells whether it was laid
  /// out directly (X86ImageEmitter) rather than compiled.
  Expected<BuiltImage> build(uint64_t Gen);
  Expected<LinkedImage> buildWithCodegen(uint64_t Gen, StringRef ImageSymbol,
                                         ArrayRef<ImageCase> Cases);
  /// The resident copy while calls run it; null otherwise.
  const ResidentImage *residentCopy() const {
    return Resident && Resident->isOpen() ? Resident.get() : nullptr;
  }
  /// Has Resident copy the image the entry leads to behind the entry and
  /// open the gate (see ResidentImage::settle()).
  void settleResident();
  Error switchTo(LinkedImage &Image);
  void resetContextIfOld();
};

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
    return makeError(formatv("{0} parameter extensions for a signature of {1} "
                             "parameter(s)",
                             Config.ParamExtensions.size(),
                             Signature->getNumParams()));
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
      return makeError(It->second);
  }
  if (Triple(sys::getProcessTriple()).getArch() != Triple::x86_64)
    return std::nullopt;
  return getX86SelectorRegister(Signature, Config.SelectorArg);
}

Error Dispatcher::Impl::init(ExecutionSession *ES) {
  if (Config.Capacity == 0)
    return makeError("a dispatcher's capacity must be at least 1");
  if (Config.Name.empty())
    return makeError("a dispatcher needs a name");
  ThunkFallback = Config.RetpolineFallback || Config.FallbackHookForTesting;
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
  if (Config.Lowering == ImageLowering::IL_Auto && !Config.RegisterWithDebugger)
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
  return Error::success();
}

void Dispatcher::Impl::settleResident() {
  if (!Resident)
    return;
  const BuiltImage &Current = Live ? Live : Empty;
  auto Verify = [this](uint64_t Address, uint64_t Size) -> Error {
    LinkedImage Copy;
    Copy.Address = Address;
    Copy.Size = Size;
    std::vector<uint64_t> Programs;
    if (Live)
      for (const ImageCase &C : Live.Cases)
        Programs.push_back(C.Target);
    return verifyImage(Copy, Programs);
  };
  Resident->settle(Current.Code, Current.Cases,
                   Config.VerifyImages ? ResidentImage::Verifier(Verify)
                                       : ResidentImage::Verifier(),
                   formatv("{0}.image.g{1}", Config.Name, Generation));
}

Dispatcher::Impl::~Impl() {
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

void Dispatcher::Impl::resetContextIfOld() {
  // Constants and metadata of past images accumulate in a context; a fresh
  // one now and then keeps memory flat over millions of updates. Made on
  // the first compile: laid-out images need none.
  if (Ctx && Generation % 1024 != 0)
    return;
  Ctx = std::make_unique<LLVMContext>();
  Signature = cantFail(parseSignature(Config.Signature, *Ctx),
                       "parsed successfully in init()");
}

Expected<BuiltImage> Dispatcher::Impl::build(uint64_t Gen) {
  std::string ImageSymbol = formatv("{0}.image.g{1}", Config.Name, Gen).str();
  BuiltImage Built;
  for (const ProgramEntry &P : Set.entries()) {
    // A program out of rel32 reach would need a stub, an indirect jump:
    // leave it to the fallback and say so in the status.
    if (!Linker->reaches(P.Address)) {
      ++Built.Fallback;
      continue;
    }
    ++Built.Direct;
    Built.Cases.push_back({P.Address, P.Address,
                           Weights.empty() ? 0 : Weights.lookup(P.Address)});
  }

  Expected<LinkedImage> Image = makeError("no image");
  if (SelectorReg) {
    // Programs spread over more than 2 GiB are left to codegen's 64-bit
    // compares.
    if (auto Code = emitX86Image(Built.Cases, *SelectorReg, ThunkFallback,
                                 Config.ImageDelayForTesting)) {
      consumeError(Image.takeError());
      Image = Linker->place(*Code, Built.Cases);
      Built.Laid = true;
      Built.Code = std::move(*Code);
    } else {
      consumeError(Code.takeError());
    }
  }
  if (!Built.Laid) {
    consumeError(Image.takeError());
    Image = buildWithCodegen(Gen, ImageSymbol, Built.Cases);
  }
  if (!Image)
    return Image.takeError();
  Built.Linked = std::move(*Image);
  if (Config.VerifyImages) {
    std::vector<uint64_t> Programs;
    for (const ImageCase &C : Built.Cases)
      Programs.push_back(C.Target);
    if (Error E = verifyImage(Built.Linked, Programs)) {
      consumeError(Linker->remove(Built.Linked));
      return makeError(formatv("image of generation {0} failed verification: "
                               "{1}",
                               Gen, toString(std::move(E))));
    }
  }
  if (Config.PerfMap)
    Linker->writePerfMap(Built.Linked.Address, Built.Linked.Size, ImageSymbol);
  return std::move(Built);
}

Expected<LinkedImage>
Dispatcher::Impl::buildWithCodegen(uint64_t Gen, StringRef ImageSymbol,
                                   ArrayRef<ImageCase> Cases) {
  auto TMOrErr = Linker->targetMachine();
  if (!TMOrErr)
    return TMOrErr.takeError();
  const TargetMachine &TM = *TMOrErr;
  resetContextIfOld();
  Module M(formatv("{0}.g{1}", Config.Name, Gen).str(), *Ctx);
  M.setDataLayout(TM.createDataLayout());
  M.setTargetTriple(TM.getTargetTriple());

  DispatcherSpec Spec;
  Spec.Name = ImageSymbol.str();
  Spec.Signature = Signature;
  Spec.SelectorArg = Config.SelectorArg;
  Spec.RetpolineFallback = ThunkFallback;
  Spec.ExternalRetpolineThunk = ThunkFallback;
  Spec.ReturnExtension = Config.ReturnExtension;
  Spec.ParamExtensions = Config.ParamExtensions;
  std::vector<ImageTarget> Targets;
  for (const ImageCase &C : Cases) {
    DispatchTarget T;
    T.Symbol = formatv("{0}.g{1}.p{2}", Config.Name, Gen, Targets.size()).str();
    T.Address = C.Target;
    if (!Weights.empty())
      T.Weight = C.Weight;
    Targets.push_back({T.Symbol, C.Target});
    Spec.Targets.push_back(std::move(T));
  }
  if (Error E = DispatchIRBuilder(M).build(Spec).takeError())
    return std::move(E);
  return Linker->link(M, Targets, Gen % 2, Spec.Name);
}

Error Dispatcher::Impl::switchTo(LinkedImage &Image) {
  if (Config.InjectFault)
    if (Error E = Config.InjectFault(FaultPoint::FP_Patch))
      return makeError("cannot patch the entry: " + toString(std::move(E)));
  if (Image)
    return Entry->retarget(Image.Address);
  return Config.CompiledEntry ? Entry->reset()
                              : Entry->retarget(Empty.Linked.Address);
}

Error Dispatcher::Impl::update(const ProgramSet::Batch &B, bool Force) {
  if (Config.Reclaim == ReclaimMode::RM_Synchronous && waitsForItself(Config))
    return makeError(formatv("dispatcher '{0}': update called inside a "
                             "read-side section on this thread; it would wait "
                             "forever for its own grace period",
                             Config.Name));
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
        return makeError(formatv("program {0:x} is dispatcher '{1}''s own "
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
  if (Supported && !Set.empty()) {
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

Expected<CodeInspector &> Dispatcher::Impl::inspector() const {
  if (!Inspector) {
    auto I = CodeInspector::create();
    if (!I)
      return I.takeError();
    Inspector = std::move(*I);
  }
  return *Inspector;
}

/// Keys of no program to route through an image of Programs (sorted):
/// each program's neighbours, the midpoints between programs, and the
/// extremes.
static std::vector<uint64_t> keysOfNoProgram(ArrayRef<uint64_t> Programs) {
  std::vector<uint64_t> Keys = {1, UINT64_MAX};
  for (size_t I = 0; I < Programs.size(); ++I) {
    Keys.push_back(Programs[I] - 1);
    Keys.push_back(Programs[I] + 1);
    if (I + 1 < Programs.size())
      Keys.push_back(Programs[I] + (Programs[I + 1] - Programs[I]) / 2);
  }
  llvm::sort(Keys);
  Keys.erase(llvm::unique(Keys), Keys.end());
  llvm::erase_if(Keys, [&](uint64_t K) {
    return K == 0 || std::binary_search(Programs.begin(), Programs.end(), K);
  });
  return Keys;
}

Error Dispatcher::Impl::verifyImage(const LinkedImage &Image,
                                    ArrayRef<uint64_t> Programs) const {
  auto I = inspector();
  if (!I)
    return I.takeError();
  if (Image.Size == 0)
    return makeError(formatv("the image at {0:x} has no size", Image.Address));
  std::vector<uint64_t> Allowed(Programs.begin(), Programs.end());
  Allowed.insert(Allowed.end(), Image.Helpers.begin(), Image.Helpers.end());
  uint64_t Thunk = 0;
  if (ThunkFallback) {
    auto T = Linker->fallbackThunk();
    if (!T)
      return T.takeError();
    Thunk = *T;
    Allowed.push_back(Thunk);
  }
  ArrayRef<uint8_t> Bytes(reinterpret_cast<const uint8_t *>(Image.Address),
                          Image.Size);
  ImageCheck C = I->check(Bytes, Image.Address, Allowed);
  size_t Expected = ThunkFallback ? 0 : 1;
  std::string Problems;
  if (!C.DecodeErrors.empty())
    Problems += formatv(" undecodable bytes at {0:x};", C.DecodeErrors[0]);
  if (C.IndirectBranches.size() != Expected)
    Problems += formatv(" {0} indirect branches where {1} (the fallback) "
                        "belong;",
                        C.IndirectBranches.size(), Expected);
  for (uint64_t T : C.UnknownTargets)
    Problems += formatv(" a direct branch to {0:x}, which is no program;", T);
  // Every program of the image must be reached directly.
  for (uint64_t P : Programs)
    if (!llvm::is_contained(C.DirectTargets, P))
      Problems += formatv(" no direct branch to program {0:x};", P);
  if (Problems.empty() && RouteReg)
    if (Error E = verifyRoutes(*I, Bytes, Image.Address, Programs, Thunk))
      Problems += " " + toString(std::move(E)) + ";";
  if (Problems.empty())
    return Error::success();
  Problems.pop_back();
  return makeError(StringRef(Problems).ltrim());
}

Error Dispatcher::Impl::verifyRoutes(const CodeInspector &I,
                                     ArrayRef<uint8_t> Bytes, uint64_t Address,
                                     ArrayRef<uint64_t> Programs,
                                     uint64_t Thunk) const {
  static const char *const RegNames[] = {
      "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
      "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};
  std::vector<uint64_t> Sorted(Programs.begin(), Programs.end());
  llvm::sort(Sorted);
  std::vector<uint64_t> Keys = Sorted;
  size_t NumPrograms = Keys.size();
  llvm::append_range(Keys, keysOfNoProgram(Sorted));
  // Each route runs the image's delay loop too.
  unsigned MaxSteps = 4 * Config.ImageDelayForTesting + 4096;
  auto Routes =
      I.followSelector(Bytes, Address, RegNames[*RouteReg], Keys, MaxSteps);
  if (!Routes)
    return Routes.takeError();
  std::string Problems;
  unsigned Shown = 0;
  auto Describe = [&](const SelectorRoute &R) -> std::string {
    if (R.Kind == BranchKind::BK_Direct)
      return formatv("a direct jump to {0:x} at {1:x}", *R.Target, R.From);
    if (R.Target)
      return formatv("an indirect jump to {0:x} at {1:x}", *R.Target, R.From);
    return formatv("an indirect jump at {0:x}", R.From).str();
  };
  auto Fallback = [&](const SelectorRoute &R) {
    if (Thunk)
      return R.Kind == BranchKind::BK_Direct && R.Target == Thunk &&
             R.valueOf("r11") == R.Key;
    return R.Kind == BranchKind::BK_Indirect && R.Target == R.Key;
  };
  for (size_t K = 0; K < Routes->size() && Shown < 4; ++K) {
    const SelectorRoute &R = (*Routes)[K];
    if (K < NumPrograms) {
      if (R.Kind == BranchKind::BK_Direct && R.Target == R.Key)
        continue;
      Problems += formatv(" program {0:x} is routed to {1}{2};", R.Key,
                          Describe(R), Fallback(R) ? " (the fallback)" : "");
    } else {
      if (Fallback(R))
        continue;
      Problems += formatv(" {0:x}, which is no program, is routed to {1} "
                          "instead of the fallback;",
                          R.Key, Describe(R));
    }
    ++Shown;
  }
  if (Problems.empty())
    return Error::success();
  Problems.pop_back();
  return makeError(StringRef(Problems).ltrim());
}

Error Dispatcher::Impl::verify() const {
  std::lock_guard<std::mutex> Lock(UpdateMutex);
  if (!Supported)
    return Trampoline::checkSupported();
  const LinkedImage &Image = Live ? Live.Linked : Empty.Linked;
  if (!Image)
    return Error::success(); // A compiled-in entry's own indirect call.
  std::vector<uint64_t> Programs;
  for (const ProgramEntry &P : Set.entries())
    if (Linker->reaches(P.Address))
      Programs.push_back(P.Address);
  if (Error E = verifyImage(Image, Programs))
    return E;
  const ResidentImage *Copied = residentCopy();
  if (!Copied)
    return Error::success();
  // What callers run: the copy behind the entry.
  LinkedImage Copy;
  Copy.Address = Copied->address();
  Copy.Size = Copied->size();
  if (Error E = verifyImage(Copy, Programs))
    return makeError("the resident copy: " + toString(std::move(E)));
  return Error::success();
}

Error Dispatcher::Impl::dump(raw_ostream &OS) const {
  std::lock_guard<std::mutex> Lock(UpdateMutex);
  if (!Supported)
    return Trampoline::checkSupported();
  const LinkedImage &Image = Live ? Live.Linked : Empty.Linked;
  OS << formatv("dispatcher '{0}': generation {1}, {2} programs ({3} direct, "
                "{4} through the fallback)\n",
                Config.Name, Generation, Set.size(), DirectTargets,
                FallbackTargets);
  OS << formatv("entry {0:x} -> ", Entry->address());
  if (!Image) {
    OS << "its own indirect call (no image)\n";
    return Error::success();
  }
  uint64_t Address = Image.Address, Size = Image.Size;
  if (const ResidentImage *Copied = residentCopy()) {
    // What callers run.
    Address = Copied->address();
    Size = Copied->size();
    OS << formatv("resident copy of image {0:x}: ", Image.Address);
  }
  OS << formatv("image {0:x}, {1} bytes\n", Address, Size);
  auto I = inspector();
  if (!I)
    return I.takeError();
  auto Insts = I->disassemble(
      ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(Address), Size),
      Address);
  if (!Insts)
    return Insts.takeError();
  DenseMap<uint64_t, std::string> Names;
  for (const ProgramEntry &P : Set.entries())
    Names[P.Address] =
        P.Name.empty() ? formatv("program {0:x}", P.Address).str() : P.Name;
  I->print(*Insts, OS, [&](uint64_t Address) {
    auto It = Names.find(Address);
    return It == Names.end() ? std::string() : It->second;
  });
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
  return S;
}

//===----------------------------------------------------------------------===//
// Dispatcher
//===----------------------------------------------------------------------===//

Dispatcher::Dispatcher(std::unique_ptr<Impl> I) : I(std::move(I)) {}
Dispatcher::~Dispatcher() = default;

static Expected<std::unique_ptr<Dispatcher::Impl>>
createImpl(DispatcherConfig Config, ExecutionSession *ES) {
  auto I = std::make_unique<Dispatcher::Impl>(std::move(Config));
  if (Error E = I->init(ES))
    return makeError(formatv("cannot create dispatcher '{0}': {1}",
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
    return makeError("cannot add a program with an empty symbol name");
  ExecutionSession &ES = JD.getExecutionSession();
  auto DL = ImageLinker::hostDataLayout();
  if (!DL)
    return DL.takeError();
  auto Sym = ES.lookup({&JD}, MangleAndInterner(ES, *DL)(Symbol));
  if (!Sym)
    return makeError(formatv("cannot add program '{0}': {1}", Symbol,
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
  return I->Set.entries();
}

} // namespace dispatchgen
