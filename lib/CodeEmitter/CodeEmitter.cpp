//===- CodeEmitter.cpp - Lower a dispatcher module to a file --------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/CodeEmitter.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/IR/DiagnosticHandler.h"
#include "llvm/IR/DiagnosticInfo.h"
#include "llvm/IR/DiagnosticPrinter.h"
#include "llvm/IR/Instructions.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include <mutex>

using namespace llvm;

namespace dispatchgen {

void initializeTargets() {
  static std::once_flag Once;
  std::call_once(Once, [] {
    InitializeAllTargetInfos();
    InitializeAllTargets();
    InitializeAllTargetMCs();
    InitializeAllAsmPrinters();
    InitializeAllAsmParsers();
    InitializeAllDisassemblers();
  });
}

Expected<std::unique_ptr<TargetMachine>>
createTargetMachine(const EmitOptions &Opts) {
  initializeTargets();
  bool IsHost = Opts.Triple.empty();
  Triple TT(IsHost ? sys::getDefaultTargetTriple()
                   : Triple::normalize(Opts.Triple));
  std::string Err;
  const Target *T = TargetRegistry::lookupTarget(TT, Err);
  if (!T)
    return createStringError(
        formatv("unknown target triple '{0}': LLVM {1} has no "
                "target for it",
                TT.str(), LLVM_VERSION_STRING));
  std::string CPU = Opts.CPU;
  if (CPU.empty() && IsHost)
    CPU = sys::getHostCPUName().str();
  // LLVM warns about an unknown CPU or feature (once per subtarget made)
  // and goes on with defaults: refuse them instead, naming the target. The
  // features LLVM gets are the checked ones, trimmed.
  std::string FeatureString;
  if (!Opts.CPU.empty() || !Opts.Features.empty()) {
    std::unique_ptr<MCSubtargetInfo> STI(T->createMCSubtargetInfo(TT, "", ""));
    if (STI && !Opts.CPU.empty() && !STI->isCPUStringValid(Opts.CPU))
      return createStringError(
          formatv("unknown CPU '{0}' for target '{1}'", Opts.CPU, TT.str()));
    SmallVector<StringRef, 8> Features;
    StringRef(Opts.Features).split(Features, ',', -1, /*KeepEmpty=*/false);
    for (StringRef F : Features) {
      StringRef Name = F.trim();
      if (!Name.consume_front("+") && !Name.consume_front("-"))
        return createStringError(
            formatv("feature '{0}' must start with '+' or '-'", F.trim()));
      if (STI && !llvm::any_of(STI->getAllProcessorFeatures(),
                               [&](const SubtargetFeatureKV &KV) {
                                 return Name == KV.Key;
                               }))
        return createStringError(
            formatv("unknown feature '{0}' for target '{1}'", Name, TT.str()));
      if (!FeatureString.empty())
        FeatureString += ',';
      FeatureString += F.trim().str();
    }
  }
  // x86-64 code on a CPU without 64-bit mode (--mcpu=geode, or
  // --mattr=-64bit) is a fatal error deep in the backend: refuse it here.
  if (TT.getArch() == Triple::x86_64) {
    std::unique_ptr<MCSubtargetInfo> STI(
        T->createMCSubtargetInfo(TT, CPU, FeatureString));
    if (STI && !STI->checkFeatures("+64bit"))
      return createStringError(
          formatv("CPU '{0}' with features '{1}' cannot run "
                  "64-bit code for '{2}'",
                  CPU, FeatureString, TT.str()));
  }
  TargetOptions TO;
  std::unique_ptr<TargetMachine> TM(
      T->createTargetMachine(TT, CPU, FeatureString, TO, Opts.RelocModel,
                             std::nullopt, Opts.OptLevel));
  if (!TM)
    return createStringError(
        formatv("cannot create a target machine for '{0}'", TT.str()));
  return std::move(TM);
}

Error prepareModule(Module &M, const EmitOptions &Opts) {
  auto TMOrErr = createTargetMachine(Opts);
  if (!TMOrErr)
    return TMOrErr.takeError();
  M.setTargetTriple((*TMOrErr)->getTargetTriple());
  M.setDataLayout((*TMOrErr)->createDataLayout());
  return Error::success();
}

/// What some backends cannot lower and, instead of reporting it, end the
/// process on (report_fatal_error, "Cannot select"): refused here, before
/// they run, so that a host's process goes on. PowerPC, MIPS and AMDGPU
/// cannot make the musttail call that forwards a selector given as a
/// parameter; R600 cannot take a function's address and SPIR-V cannot
/// call through one, and a dispatcher does both.
static Error checkBackendLimits(const Module &M, const Triple &TT) {
  bool NoMustTail = TT.isPPC() || TT.isMIPS() || TT.isAMDGCN();
  bool NoFunctionPointers = TT.getArch() == Triple::r600 || TT.isSPIRV();
  if (!NoMustTail && !NoFunctionPointers)
    return Error::success();
  auto NoPointers = [&](const Function &F) {
    return createStringError(
        formatv("'{0}' cannot take a function's address or call through a "
                "function pointer, which a dispatcher does ('{1}')",
                TT.str(), F.getName()));
  };
  for (const Function &F : M) {
    if (NoFunctionPointers && F.hasAddressTaken())
      return NoPointers(F);
    for (const BasicBlock &BB : F)
      for (const Instruction &I : BB) {
        const auto *Call = dyn_cast<CallInst>(&I);
        if (!Call)
          continue;
        if (NoMustTail && Call->isMustTailCall())
          return createStringError(formatv(
              "'{0}' cannot lower the musttail call in '{1}' that forwards "
              "the selector as a parameter: pass the selector as an extra "
              "trailing parameter instead (no --selector-arg)",
              TT.str(), F.getName()));
        if (NoFunctionPointers && Call->isIndirectCall())
          return NoPointers(F);
      }
  }
  return Error::success();
}

Error emitModule(Module &M, const EmitOptions &Opts, raw_pwrite_stream &OS) {
  std::string VerifyMsg;
  raw_string_ostream VerifyOS(VerifyMsg);
  if (verifyModule(M, &VerifyOS))
    return createStringError(formatv("module '{0}' is invalid: {1}",
                                     M.getModuleIdentifier(), VerifyMsg));
  if (Opts.Kind == EmitKind::LLVMIR) {
    M.print(OS, nullptr);
    return Error::success();
  }
  auto TMOrErr = createTargetMachine(Opts);
  if (!TMOrErr)
    return TMOrErr.takeError();
  TargetMachine &TM = **TMOrErr;
  if (M.getTargetTriple() != TM.getTargetTriple())
    return createStringError(
        formatv("module '{0}' was prepared for '{1}', not '{2}'",
                M.getModuleIdentifier(), M.getTargetTriple().str(),
                TM.getTargetTriple().str()));
  if (Error E = checkBackendLimits(M, TM.getTargetTriple()))
    return E;
  // The backend reports what it cannot do (say, a float return with SSE
  // disabled) through the context's diagnostic handler, which by default
  // prints it and lets code generation go on: collect the errors instead
  // and return the first as this function's Error.
  struct Collector : DiagnosticHandler {
    std::string First;
    unsigned Errors = 0;
    bool handleDiagnostics(const DiagnosticInfo &DI) override {
      if (DI.getSeverity() != DS_Error)
        return true; // warnings and remarks: not failures
      if (Errors++ == 0) {
        raw_string_ostream OS(First);
        DiagnosticPrinterRawOStream DP(OS);
        DI.print(DP);
      }
      return true;
    }
  };
  LLVMContext &Ctx = M.getContext();
  std::unique_ptr<DiagnosticHandler> Saved = Ctx.getDiagnosticHandler();
  Ctx.setDiagnosticHandler(std::make_unique<Collector>());
  scope_exit Restore([&] { Ctx.setDiagnosticHandler(std::move(Saved)); });
  legacy::PassManager PM;
  CodeGenFileType FT = Opts.Kind == EmitKind::Assembly
                           ? CodeGenFileType::AssemblyFile
                           : CodeGenFileType::ObjectFile;
  if (TM.addPassesToEmitFile(PM, OS, nullptr, FT))
    return createStringError(formatv("target '{0}' cannot emit this file type",
                                     TM.getTargetTriple().str()));
  PM.run(M);
  const auto *C = static_cast<const Collector *>(Ctx.getDiagHandlerPtr());
  if (C->Errors)
    return createStringError(formatv("cannot generate code for '{0}': {1}",
                                     TM.getTargetTriple().str(),
                                     StringRef(C->First).trim()));
  return Error::success();
}

} // namespace dispatchgen
