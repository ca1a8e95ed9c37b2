//===- ImageLinkerORC.cpp - Compile and link images through ORC -----------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// ImageLinker's ORC half, made on first use: the host's TargetMachines, the
// session, layer and JITDylibs, compiled images, the fallback thunk and the
// entries' symbols, and the JITLink plugin that sees every graph.
//
//===----------------------------------------------------------------------===//

#include "ImageLinker.h"

#include "dispatch-gen/CodeEmitter.h"

#include "llvm/ExecutionEngine/JITLink/JITLink.h"
#include "llvm/ExecutionEngine/JITLink/x86_64.h"
#include "llvm/ExecutionEngine/Orc/AbsoluteSymbols.h"
#include "llvm/ExecutionEngine/Orc/CompileUtils.h"
#include "llvm/ExecutionEngine/Orc/Debugging/ELFDebugObjectPlugin.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/ExecutionEngine/Orc/Mangling.h"
#include "llvm/ExecutionEngine/Orc/SelfExecutorProcessControl.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"

#include <atomic>
#include <mutex>

using namespace llvm;
using namespace llvm::orc;

namespace dispatchgen {

/// Sees every graph of the linker's layer: injects link faults, refuses
/// branches left going through stubs, records code ranges, and keeps the
/// text of the last failure, which ORC otherwise sends only to the
/// session's error reporter.
class ImageLinker::Plugin : public ObjectLinkingLayer::Plugin {
public:
  explicit Plugin(FaultHook *Faults) : Faults(Faults) {}

  void modifyPassConfig(MaterializationResponsibility &MR,
                        jitlink::LinkGraph &G,
                        jitlink::PassConfiguration &Config) override {
    Config.PostAllocationPasses.push_back(
        [this](jitlink::LinkGraph &) -> Error {
          if (Faults && *Faults)
            return record((*Faults)(FaultPoint::Link));
          return Error::success();
        });
    if (G.getTargetTriple().getArch() == Triple::x86_64)
      Config.PreFixupPasses.push_back(
          [this](jitlink::LinkGraph &G) { return record(checkNoStubs(G)); });
    Config.PostFixupPasses.push_back([this](jitlink::LinkGraph &G) {
      std::lock_guard<std::mutex> Lock(M);
      for (jitlink::Symbol *S : G.defined_symbols())
        if (S->hasName() && S->isCallable())
          Ranges.push_back({(*S->getName()).str(), S->getAddress().getValue(),
                            S->getSize()});
      return Error::success();
    });
  }

  Error notifyFailed(MaterializationResponsibility &) override {
    return Error::success();
  }
  Error notifyRemovingResources(JITDylib &, ResourceKey) override {
    return Error::success();
  }
  void notifyTransferringResources(JITDylib &, ResourceKey,
                                   ResourceKey) override {}

  /// Keeps E's message as the last failure and returns E.
  Error record(Error E) {
    if (!E)
      return E;
    std::string Msg = toString(std::move(E));
    {
      std::lock_guard<std::mutex> Lock(M);
      LastFailure = Msg;
    }
    return createStringError(Msg);
  }

  std::string takeLastFailure() {
    std::lock_guard<std::mutex> Lock(M);
    return std::exchange(LastFailure, std::string());
  }

  struct Range {
    std::string Name;
    uint64_t Address, Size;
  };
  /// The functions linked since the last call (links are serialised).
  std::vector<Range> takeRanges() {
    std::lock_guard<std::mutex> Lock(M);
    return std::exchange(Ranges, {});
  }

private:
  /// JITLink routes an external branch through a stub (`jmp *GOT`) and
  /// bypasses it only when the target is within rel32 reach; one left in
  /// place is an indirect jump on the hot path.
  static Error checkNoStubs(jitlink::LinkGraph &G) {
    std::string Far;
    for (jitlink::Block *B : G.blocks()) {
      if (B->getSection().getName() ==
          jitlink::x86_64::PLTTableManager::getSectionName())
        continue;
      for (jitlink::Edge &E : B->edges()) {
        if (E.getKind() !=
            jitlink::x86_64::BranchPCRel32ToPtrJumpStubBypassable)
          continue;
        // Edge -> stub -> GOT entry -> the real target.
        jitlink::Block &Stub = E.getTarget().getBlock();
        jitlink::Block &GOT = Stub.edges().begin()->getTarget().getBlock();
        jitlink::Symbol &Target = GOT.edges().begin()->getTarget();
        Far += formatv(" {0} at {1:x} (from {2:x})",
                       Target.hasName() ? *Target.getName() : "<anonymous>",
                       Target.getAddress().getValue(),
                       B->getFixupAddress(E).getValue());
      }
    }
    if (Far.empty())
      return Error::success();
    return createStringError("targets out of rel32 reach of the image:" + Far);
  }

  FaultHook *Faults;
  std::mutex M;
  std::vector<Range> Ranges;
  std::string LastFailure;
};

std::shared_ptr<ImageLinker::Plugin>
ImageLinker::makePlugin(FaultHook *Faults) {
  return std::make_shared<Plugin>(Faults);
}

/// A unique suffix for the JITDylibs of each linker in a session.
static unsigned nextLinkerId() {
  static std::atomic<unsigned> Next{0};
  return Next++;
}

/// The host's TargetMachine builder for images. The JIT default code model
/// on x86-64 is Large, which calls through `movabs; jmp *%reg`; Small + PIC
/// gives rel32 branches.
static Expected<JITTargetMachineBuilder> hostBuilder() {
  initializeTargets();
  auto JTMB = JITTargetMachineBuilder::detectHost();
  if (!JTMB)
    return JTMB.takeError();
  JTMB->setCodeModel(CodeModel::Small).setRelocationModel(Reloc::PIC_);
  return JTMB;
}

Expected<const TargetMachine &> ImageLinker::hostTargetMachine() {
  static std::mutex M;
  static TargetMachine *Host = nullptr;
  std::lock_guard<std::mutex> Lock(M);
  if (!Host) {
    auto JTMB = hostBuilder();
    if (!JTMB)
      return JTMB.takeError();
    auto TM = JTMB->createTargetMachine();
    if (!TM)
      return TM.takeError();
    // Never destroyed: dispatchers may be created until the process ends.
    Host = TM->release();
  }
  return *Host;
}

Expected<DataLayout> ImageLinker::hostDataLayout() {
  auto TM = hostTargetMachine();
  if (!TM)
    return TM.takeError();
  return TM->createDataLayout();
}

Error ImageLinker::ensureORC() {
  if (ObjLayer)
    return Error::success();
  auto JTMB = hostBuilder();
  if (!JTMB)
    return JTMB.takeError();
  JTMB->setCodeGenOptLevel(OptLevel);
  auto NewTM = JTMB->createTargetMachine();
  if (!NewTM)
    return NewTM.takeError();

  auto MM = std::make_unique<NearMemoryManager>(Near);
  if (Faults)
    MM->setAllocationHook([this]() -> Error {
      return ThePlugin->record(fault(FaultPoint::Allocate));
    });

  std::unique_ptr<ExecutionSession> NewES;
  if (!ES) {
    auto EPC = SelfExecutorProcessControl::Create();
    if (!EPC)
      return EPC.takeError();
    NewES = std::make_unique<ExecutionSession>(std::move(*EPC));
    // Failures come back through link(); the plugin keeps their text.
    NewES->setErrorReporter([P = ThePlugin.get()](Error E) {
      consumeError(P->record(std::move(E)));
    });
  }
  ExecutionSession &S = NewES ? *NewES : *ES;
  auto Layer = std::make_unique<ObjectLinkingLayer>(S, *MM);
  Layer->addPlugin(ThePlugin);
  if (RegisterWithDebugger) {
    // Symbols only (images carry no debug info): GDB and LLDB name them.
    Error Err = Error::success();
    auto Debug = std::make_shared<ELFDebugObjectPlugin>(
        S, /*RequireDebugSections=*/false, /*AutoRegisterCode=*/true, Err);
    if (Err) {
      Layer.reset();
      if (NewES)
        consumeError(NewES->endSession());
      return Err;
    }
    Layer->addPlugin(std::move(Debug));
  }
  TM = std::move(*NewTM);
  MemMgr = std::move(MM);
  if (NewES) {
    OwnedES = std::move(NewES);
    ES = OwnedES.get();
  }
  ObjLayer = std::move(Layer);
  unsigned Id = nextLinkerId();
  for (unsigned Slot = 0; Slot < 2; ++Slot)
    Dylibs[Slot] = &ES->createBareJITDylib(
        formatv("dispatch-gen.{0}.{1}.{2}", Name, Id, Slot ? 'B' : 'A').str());
  return Error::success();
}

Expected<const TargetMachine &> ImageLinker::targetMachine() {
  if (Error E = ensureORC())
    return std::move(E);
  return *TM;
}

Error ImageLinker::fail(Error E) {
  std::string Detail = ThePlugin->takeLastFailure();
  if (Detail.empty())
    return E;
  consumeError(std::move(E));
  return createStringError(Detail);
}

Expected<LinkedImage> ImageLinker::link(Module &M,
                                        ArrayRef<ImageTarget> Targets,
                                        unsigned Slot, StringRef ImageSymbol) {
  assert(Slot < 2 && "two JITDylibs");
  if (Error E = ensureORC())
    return std::move(E);
  if (Error E = startLink())
    return std::move(E);
  SimpleCompiler Compile(*TM);
  auto Obj = Compile(M);
  if (!Obj)
    return createStringError("cannot compile image: " +
                             toString(Obj.takeError()));

  JITDylib &JD = *Dylibs[Slot];
  MangleAndInterner Mangle(*ES, M.getDataLayout());
  SymbolMap Absolute;
  for (const ImageTarget &T : Targets)
    Absolute[Mangle(T.Symbol)] = {ExecutorAddr(T.Address),
                                  JITSymbolFlags::Exported |
                                      JITSymbolFlags::Callable};
  LinkedImage Image;
  Image.RT = JD.createResourceTracker();
  auto Discard = [&](Error E) -> Error {
    return joinErrors(std::move(E), Image.RT->remove());
  };
  if (!Absolute.empty())
    if (Error E = JD.define(absoluteSymbols(std::move(Absolute)), Image.RT))
      return Discard(std::move(E));
  if (Error E = ObjLayer->add(Image.RT, std::move(*Obj)))
    return Discard(std::move(E));
  if (Error E = lookupImage(Image, JD, Mangle(ImageSymbol)))
    return Discard(std::move(E));
  return Image;
}

Error ImageLinker::startLink() {
  ThePlugin->takeLastFailure();
  ThePlugin->takeRanges();
  if (Error E = fault(FaultPoint::Compile))
    return createStringError("cannot compile image: " + toString(std::move(E)));
  return Error::success();
}

Error ImageLinker::lookupImage(LinkedImage &Image, JITDylib &JD,
                               SymbolStringPtr ImageSymbol) {
  auto Sym = ES->lookup({&JD}, std::move(ImageSymbol));
  if (!Sym)
    return createStringError("cannot link image: " +
                             toString(fail(Sym.takeError())));
  Image.Address = Sym->getAddress().getValue();
  for (const Plugin::Range &R : ThePlugin->takeRanges()) {
    if (R.Address == Image.Address)
      Image.Size = R.Size;
    else
      Image.Helpers.push_back(R.Address);
  }
  return Error::success();
}

Expected<JITDylib *> ImageLinker::defineEntry(StringRef Symbol,
                                              uint64_t Address) {
  if (EntryJD)
    return EntryJD;
  static constexpr const char *EntriesName = "dispatch-gen.entries";
  JITDylib *JD;
  {
    // Two dispatchers created at once in one session make one JITDylib.
    static std::mutex CreateMutex;
    std::lock_guard<std::mutex> Lock(CreateMutex);
    JD = ES->getJITDylibByName(EntriesName);
    if (!JD)
      JD = &ES->createBareJITDylib(EntriesName);
  }
  if (!ES)
    return createStringError("an entry symbol needs a host's session");
  auto DL = hostDataLayout();
  if (!DL)
    return DL.takeError();
  MangleAndInterner Mangle(*ES, *DL);
  SymbolStringPtr Interned = Mangle(Symbol);
  if (Error E = JD->define(absoluteSymbols(
          {{Interned,
            {ExecutorAddr(Address),
             JITSymbolFlags::Exported | JITSymbolFlags::Callable}}}))) {
    consumeError(std::move(E));
    return createStringError(
        formatv("another dispatcher of this session is named "
                "'{0}'",
                Symbol));
  }
  EntryJD = JD;
  EntrySymbol = std::move(Interned);
  return EntryJD;
}

/// The testing hook's call: the argument registers (and %r10, %rax) and
/// %xmm0-7 saved around a call of Hook(%r11). Entered by a jump from an
/// image, with the stack as the dispatcher's caller left it (8 mod 16), so
/// nine pushes and 128 bytes leave it aligned for the call.
static std::string hookCall(void (*Hook)(uint64_t)) {
  std::string S;
  raw_string_ostream OS(S);
  const char *Saved[] = {"rdi", "rsi", "rdx", "rcx", "r8",
                         "r9",  "r10", "r11", "rax"};
  for (const char *R : Saved)
    OS << "  pushq %" << R << "\n";
  OS << "  subq $128, %rsp\n";
  for (unsigned X = 0; X < 8; ++X)
    OS << formatv("  movdqu %xmm{0}, {1}(%rsp)\n", X, 16 * X);
  OS << "  movq %r11, %rdi\n";
  OS << formatv("  movabsq ${0}, %rax\n", reinterpret_cast<uint64_t>(Hook));
  OS << "  callq *%rax\n";
  for (unsigned X = 0; X < 8; ++X)
    OS << formatv("  movdqu {1}(%rsp), %xmm{0}\n", X, 16 * X);
  OS << "  addq $128, %rsp\n";
  for (const char *R : llvm::reverse(Saved))
    OS << "  popq %" << R << "\n";
  return S;
}

Expected<uint64_t> ImageLinker::fallbackThunk() {
  if (ThunkAddress)
    return ThunkAddress;
  if (Error E = ensureORC())
    return std::move(E);
  LLVMContext Ctx;
  Module M("dispatch-gen.fallback", Ctx);
  M.setDataLayout(TM->createDataLayout());
  M.setTargetTriple(TM->getTargetTriple());
  std::string Asm = ".text\n"
                    ".globl __x86_indirect_thunk_r11\n"
                    ".type __x86_indirect_thunk_r11,@function\n"
                    ".p2align 4\n"
                    "__x86_indirect_thunk_r11:\n";
  if (FallbackHook)
    Asm += hookCall(FallbackHook);
  if (Retpoline)
    // LLVM's own retpoline sequence, as its X86IndirectThunks pass emits it.
    Asm += "  call .Ldispatchgen_thunk_set\n"
           ".Ldispatchgen_thunk_capture:\n"
           "  pause\n"
           "  lfence\n"
           "  jmp .Ldispatchgen_thunk_capture\n"
           ".p2align 4\n"
           ".Ldispatchgen_thunk_set:\n"
           "  movq %r11, (%rsp)\n"
           "  retq\n";
  else
    Asm += "  jmpq *%r11\n";
  Asm += ".size __x86_indirect_thunk_r11, .-__x86_indirect_thunk_r11\n";
  M.setModuleInlineAsm(Asm);
  SimpleCompiler Compile(*TM);
  auto Obj = Compile(M);
  if (!Obj)
    return Obj.takeError();
  JITDylib &JD = ES->createBareJITDylib(
      formatv("dispatch-gen.thunk.{0}", nextLinkerId()).str());
  if (Error E = ObjLayer->add(JD, std::move(*Obj)))
    return std::move(E);
  auto Sym = ES->lookup({&JD}, MangleAndInterner(*ES, M.getDataLayout())(
                                   "__x86_indirect_thunk_r11"));
  if (!Sym)
    return createStringError("cannot link the fallback thunk: " +
                             toString(fail(Sym.takeError())));
  ThunkJD = &JD;
  for (JITDylib *Image : Dylibs)
    Image->addToLinkOrder(JD);
  ThunkAddress = Sym->getAddress().getValue();
  return ThunkAddress;
}

} // namespace dispatchgen
