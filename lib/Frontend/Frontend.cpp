//===- Frontend.cpp - Compile C programs and find them with Clang ---------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// compileC() runs what `clang -O2 -c` runs, in this process: the driver
// turns the flags into a CompilerInvocation, an ASTFrontendAction parses the
// file into Clang's code generator and the ProgramFinder, and Clang's own
// backend pipeline optimises the module. Between code generation and
// optimisation the programs are made external (or pinned), so that the
// optimiser can neither drop an unused static program nor change its
// signature.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/Frontend.h"
#include "dispatch-gen/CodeEmitter.h"

#include "ProgramFinder.h"

#include "clang/Basic/DiagnosticOptions.h"
#include "clang/Basic/TargetInfo.h"
#include "clang/Basic/Version.h"
#include "clang/CodeGen/BackendUtil.h"
#include "clang/CodeGen/ModuleBuilder.h"
#include "clang/Driver/CreateInvocationFromArgs.h"
#include "clang/Frontend/CompilerInstance.h"
#include "clang/Frontend/CompilerInvocation.h"
#include "clang/Frontend/FrontendAction.h"
#include "clang/Frontend/MultiplexConsumer.h"
#include "clang/Frontend/TextDiagnosticPrinter.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/IR/DiagnosticInfo.h"
#include "llvm/IR/DiagnosticPrinter.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/VirtualFileSystem.h"
#include "llvm/Support/xxhash.h"
#include "llvm/Transforms/Utils/ModuleUtils.h"

#include <cctype>
#include <mutex>

#ifndef DISPATCHGEN_CLANG_EXECUTABLE
#error "DISPATCHGEN_CLANG_EXECUTABLE must name Clang's driver (see CMake)"
#endif

using namespace clang;

namespace dispatchgen {

static llvm::Error compileFailure(llvm::StringRef File, unsigned Errors) {
  return llvm::createStringError(
      llvm::formatv("cannot compile '{0}': {1} error{2}", File, Errors,
                    Errors == 1 ? "" : "s"));
}

static llvm::raw_ostream &diagnosticsOf(const FrontendOptions &Opts) {
  return Opts.Diagnostics ? *Opts.Diagnostics : llvm::errs();
}

/// The suffix of exposed static programs by default: the file's stem and a
/// hash of its path, so statics of two files never clash.
static std::string defaultStaticSuffix(llvm::StringRef File) {
  std::string Stem = llvm::sys::path::stem(File).str();
  for (char &C : Stem)
    if (!std::isalnum(static_cast<unsigned char>(C)) && C != '_')
      C = '_';
  return llvm::formatv("{0}.{1}", Stem,
                       llvm::format_hex_no_prefix(
                           llvm::xxh3_64bits(File) & 0xffffffffu, 8))
      .str();
}

namespace {

/// Prints the optimiser's warnings and errors (rare: e.g. a loop pragma it
/// could not honour) with Clang's, instead of LLVMContext's default of
/// printing to stderr and exiting on an error.
class OptimiserDiagnostics : public llvm::DiagnosticHandler {
public:
  OptimiserDiagnostics(llvm::raw_ostream &OS, llvm::StringRef File)
      : OS(OS), File(File) {}

  bool handleDiagnostics(const llvm::DiagnosticInfo &DI) override {
    if (DI.getSeverity() == llvm::DS_Error)
      ++Errors;
    if (DI.getSeverity() != llvm::DS_Error &&
        DI.getSeverity() != llvm::DS_Warning)
      return true;
    std::string Where = File;
    std::string Message;
    llvm::raw_string_ostream MessageOS(Message);
    // Clang's form, "file:line:col: warning: message", where LLVM knows the
    // place; otherwise the function.
    if (const auto *Opt =
            llvm::dyn_cast<llvm::DiagnosticInfoOptimizationBase>(&DI)) {
      if (Opt->isLocationAvailable())
        Where = Opt->getLocationStr();
      MessageOS << Opt->getMsg();
      if (!Opt->isLocationAvailable())
        MessageOS << " (in function '" << Opt->getFunction().getName() << "')";
    } else {
      llvm::DiagnosticPrinterRawOStream DP(MessageOS);
      DI.print(DP);
    }
    OS << Where << ": "
       << llvm::LLVMContext::getDiagnosticMessagePrefix(DI.getSeverity())
       << ": " << Message << "\n";
    return true;
  }

  unsigned Errors = 0;

private:
  llvm::raw_ostream &OS;
  std::string File;
};

/// Parses the file into Clang's code generator and a ProgramFinder, then
/// finishes the module while the AST and the code generator still exist.
class CompileAction : public ASTFrontendAction {
public:
  CompileAction(llvm::StringRef File, const FrontendOptions &Opts,
                llvm::LLVMContext &Ctx)
      : File(File), Opts(Opts), Ctx(Ctx) {}

  /// The compiled unit; only after an ExecuteAction without errors.
  llvm::Expected<CompiledUnit> takeResult() { return std::move(Result); }

protected:
  std::unique_ptr<ASTConsumer> CreateASTConsumer(CompilerInstance &CI,
                                                 llvm::StringRef) override {
    std::unique_ptr<CodeGenerator> CodeGen = CreateLLVMCodeGen(CI, File, Ctx);
    auto Finder = std::make_unique<ProgramFinder>(File, Opts, *CodeGen);
    Gen = CodeGen.get();
    this->Finder = Finder.get();
    std::vector<std::unique_ptr<ASTConsumer>> Consumers;
    Consumers.push_back(std::move(Finder));
    if (Opts.FindOnly)
      // The generator sees the AST context (its CodeGenModule lowers the
      // programs' types and names them) but no declaration: no code.
      Consumers.push_back(std::make_unique<InitializeOnly>(std::move(CodeGen)));
    else
      Consumers.push_back(std::move(CodeGen));
    return std::make_unique<MultiplexConsumer>(std::move(Consumers));
  }

  /// Owns a consumer and passes it Initialize() only.
  class InitializeOnly : public ASTConsumer {
  public:
    explicit InitializeOnly(std::unique_ptr<ASTConsumer> Inner)
        : Inner(std::move(Inner)) {}
    void Initialize(ASTContext &Context) override {
      Inner->Initialize(Context);
    }

  private:
    std::unique_ptr<ASTConsumer> Inner;
  };

  void ExecuteAction() override {
    ASTFrontendAction::ExecuteAction();
    CompilerInstance &CI = getCompilerInstance();
    if (CI.getDiagnostics().hasErrorOccurred() || !Gen)
      return;
    Result = finish(CI);
  }

private:
  llvm::Expected<CompiledUnit> finish(CompilerInstance &CI);
  llvm::Error prepareProgram(llvm::Module &M, const DerivedSignature &Sig,
                             FoundProgram &P);
  llvm::Error optimise(CompilerInstance &CI, llvm::Module &M);

  std::string File;
  const FrontendOptions &Opts;
  llvm::LLVMContext &Ctx;
  /// Owned by the consumer CreateASTConsumer returned, which lives until
  /// the end of the action.
  CodeGenerator *Gen = nullptr;
  ProgramFinder *Finder = nullptr;
  llvm::Expected<CompiledUnit> Result =
      llvm::createStringError("internal: the frontend action did not run");
};

} // namespace

/// Checks that F, P as Clang emitted it, has the derived signature: the
/// same type and the same extensions. Clang lowered both from one
/// CGFunctionInfo, so a difference is a bug here.
static llvm::Error checkEmitted(const llvm::Function &F,
                                const DerivedSignature &Sig,
                                const FoundProgram &P) {
  std::string Emitted;
  llvm::raw_string_ostream OS(Emitted);
  F.getFunctionType()->print(OS);
  auto Mismatch = [&](const llvm::Twine &What) {
    return llvm::createStringError(
        llvm::formatv("{0}:{1}: program '{2}' was emitted as "
                      "'{3}', unlike its signature '{4}': {5}",
                      P.File, P.Line, P.Name, Emitted, Sig.Text, What.str()));
  };
  if (F.getFunctionType() != Sig.Type)
    return Mismatch("another type");
  llvm::AttributeList Expected = Sig.getAttributes(F.getContext());
  llvm::AttributeList Actual = F.getAttributes();
  for (llvm::Attribute::AttrKind Kind :
       {llvm::Attribute::ZExt, llvm::Attribute::SExt}) {
    if (Expected.hasRetAttr(Kind) != Actual.hasRetAttr(Kind))
      return Mismatch("the return value's extension");
    for (unsigned I = 0, E = Sig.Type->getNumParams(); I != E; ++I)
      if (Expected.hasParamAttr(I, Kind) != Actual.hasParamAttr(I, Kind))
        return Mismatch("parameter " + llvm::Twine(I) + "'s extension");
  }
  return llvm::Error::success();
}

llvm::Error CompileAction::prepareProgram(llvm::Module &M,
                                          const DerivedSignature &Sig,
                                          FoundProgram &P) {
  llvm::Function *F = M.getFunction(P.Symbol);
  if (!F || F->isDeclaration() || F->hasAvailableExternallyLinkage())
    return llvm::createStringError(llvm::formatv(
        "{0}:{1}: program '{2}' is an inline definition that Clang emits no "
        "code for; declare it 'static' or 'extern'",
        P.File, P.Line, P.Name));
  if (llvm::Error E = checkEmitted(*F, Sig, P))
    return E;
  if (!Opts.ExposePrograms) {
    // A use the optimiser cannot see through: it keeps an internal program
    // alive and its signature as it is.
    if (F->hasLocalLinkage())
      llvm::appendToCompilerUsed(M, {F});
    return llvm::Error::success();
  }
  if (F->hasLocalLinkage()) {
    F->setLinkage(llvm::GlobalValue::ExternalLinkage);
    std::string Suffix = Opts.StaticSuffix.empty() ? defaultStaticSuffix(File)
                                                   : Opts.StaticSuffix;
    F->setName(P.Symbol + "." + Suffix);
    P.Symbol = F->getName().str();
  }
  F->setVisibility(llvm::GlobalValue::DefaultVisibility);
  return llvm::Error::success();
}

llvm::Error CompileAction::optimise(CompilerInstance &CI, llvm::Module &M) {
  std::unique_ptr<llvm::DiagnosticHandler> Saved = Ctx.getDiagnosticHandler();
  auto Handler =
      std::make_unique<OptimiserDiagnostics>(diagnosticsOf(Opts), File);
  OptimiserDiagnostics &Diags = *Handler;
  Ctx.setDiagnosticHandler(std::move(Handler));
  // Backend_EmitNothing runs the optimisation pipeline of the invocation's
  // -O level, as `clang -emit-llvm` would, and no code generation.
  emitBackendOutput(CI, CI.getCodeGenOpts(),
                    CI.getTarget().getDataLayoutString(), &M,
                    Backend_EmitNothing, CI.getVirtualFileSystemPtr(),
                    /*OS=*/nullptr);
  unsigned Errors = Diags.Errors + CI.getDiagnostics().getNumErrors();
  Ctx.setDiagnosticHandler(std::move(Saved));
  if (Errors)
    return compileFailure(File, Errors);
  return llvm::Error::success();
}

llvm::Expected<CompiledUnit> CompileAction::finish(CompilerInstance &CI) {
  if (llvm::Error E = Finder->takeError())
    return std::move(E);
  CompiledUnit Unit;
  Unit.M = Gen->ReleaseModule();
  if (!Unit.M)
    return compileFailure(File,
                          std::max(1u, CI.getDiagnostics().getNumErrors()));
  Unit.Programs = Finder->takePrograms();
  Unit.Signature = Finder->takeSignature();
  if (Opts.FindOnly)
    return Unit;
  for (FoundProgram &P : Unit.Programs)
    if (llvm::Error E = prepareProgram(*Unit.M, *Unit.Signature, P))
      return std::move(E);
  if (llvm::Error E = optimise(CI, *Unit.M))
    return std::move(E);
  return Unit;
}

/// The invocation `clang -O2 ARGS... File` would run, with the driver's
/// diagnostics printed to Opts.Diagnostics.
static llvm::Expected<std::shared_ptr<CompilerInvocation>>
createInvocation(llvm::StringRef File, const FrontendOptions &Opts) {
  // The driver derives the resource directory (builtin headers such as
  // stddef.h) from its own path: <prefix>/bin/clang -> <prefix>/lib/clang/N.
  std::vector<const char *> Args = {DISPATCHGEN_CLANG_EXECUTABLE, "-O2"};
  for (const std::string &Arg : Opts.ClangArgs)
    Args.push_back(Arg.c_str());
  std::string FileArg = File.str();
  Args.push_back(FileArg.c_str());

  DiagnosticOptions DiagOpts;
  auto *Printer = new TextDiagnosticPrinter(diagnosticsOf(Opts), DiagOpts);
  llvm::IntrusiveRefCntPtr<llvm::vfs::FileSystem> FS =
      llvm::vfs::getRealFileSystem();
  CreateInvocationOptions CIOpts;
  CIOpts.Diags = CompilerInstance::createDiagnostics(*FS, DiagOpts, Printer);
  CIOpts.VFS = FS;
  std::unique_ptr<CompilerInvocation> Inv =
      clang::createInvocation(Args, CIOpts);
  // The driver goes on after an error (an unknown flag), as clang's does
  // before it gives up.
  if (!Inv || CIOpts.Diags->hasErrorOccurred())
    return compileFailure(File, std::max(1u, CIOpts.Diags->getNumErrors()));

  // cc1 parses -mllvm flags into LLVM's process-wide cl::opts, which other
  // threads' compilations (and the embedder) share.
  if (!Inv->getFrontendOpts().LLVMArgs.empty())
    return llvm::createStringError(
        "cannot compile '" + File +
        "': -mllvm options would change process-wide LLVM "
        "settings; they are not supported");
  // A library must free what it allocates; the driver asks cc1 not to
  // (the frontend's and the backend's own -disable-free: without the
  // latter, emitBackendOutput buries its TargetMachine on every compile).
  Inv->getFrontendOpts().DisableFree = false;
  Inv->getCodeGenOpts().DisableFree = false;
  const HeaderSearchOptions &HSOpts = Inv->getHeaderSearchOpts();
  if (HSOpts.UseBuiltinIncludes) {
    llvm::SmallString<128> StdDef(HSOpts.ResourceDir);
    llvm::sys::path::append(StdDef, "include", "stddef.h");
    if (!llvm::sys::fs::exists(StdDef))
      return llvm::createStringError(
          "cannot compile '" + File + "': Clang's builtin " +
          "headers are not in '" + HSOpts.ResourceDir +
          "/include' (on Debian: install libclang-common-" +
          llvm::Twine(CLANG_VERSION_MAJOR) + "-dev)");
  }
  return std::shared_ptr<CompilerInvocation>(std::move(Inv));
}

llvm::Expected<CompiledUnit> compileC(llvm::StringRef File,
                                      const FrontendOptions &Opts,
                                      llvm::LLVMContext &Ctx) {
  llvm::sys::fs::file_status Status;
  if (std::error_code EC = llvm::sys::fs::status(File, Status))
    return llvm::createStringError("cannot open '" + File +
                                   "': " + EC.message());
  if (llvm::sys::fs::is_directory(Status))
    return llvm::createStringError("cannot compile '" + File +
                                   "': it is a directory");
  initializeTargets();

  llvm::Expected<std::shared_ptr<CompilerInvocation>> Inv =
      createInvocation(File, Opts);
  if (!Inv)
    return Inv.takeError();
  llvm::raw_ostream &OS = diagnosticsOf(Opts);
  // Colours only where clang would use them: on a terminal.
  (*Inv)->getDiagnosticOpts().ShowColors &= OS.has_colors();

  // The printer outlives the CompilerInstance, which does not own it.
  TextDiagnosticPrinter Printer(OS, (*Inv)->getDiagnosticOpts());
  CompilerInstance CI(std::move(*Inv));
  CI.createVirtualFileSystem(llvm::vfs::getRealFileSystem(), &Printer);
  CI.createDiagnostics(&Printer, /*ShouldOwnClient=*/false);
  // "N errors generated." goes where the diagnostics go.
  CI.setVerboseOutputStream(OS);

  CompileAction Action(File, Opts, Ctx);
  if (!CI.ExecuteAction(Action) || CI.getDiagnostics().hasErrorOccurred()) {
    llvm::consumeError(Action.takeResult().takeError());
    return compileFailure(File,
                          std::max(1u, CI.getDiagnostics().getNumErrors()));
  }
  return Action.takeResult();
}

llvm::Expected<DerivedSignature>
commonSignature(llvm::ArrayRef<CompiledUnit> Units,
                llvm::ArrayRef<std::string> Files) {
  const DerivedSignature *First = nullptr;
  std::string FirstFile;
  // Where a unit's type comes from: its first program, else the file.
  auto Where = [&](size_t I) {
    if (Units[I].Programs.empty())
      return Files[I];
    const FoundProgram &P = Units[I].Programs.front();
    return llvm::formatv("{0}:{1}", P.File, P.Line).str();
  };
  for (size_t I = 0; I < Units.size(); ++I) {
    if (!Units[I].Signature)
      continue;
    if (!First) {
      First = &*Units[I].Signature;
      FirstFile = Where(I);
      continue;
    }
    const DerivedSignature &S = *Units[I].Signature;
    if (S.Text != First->Text || S.ParamExtensions != First->ParamExtensions ||
        S.ReturnExtension != First->ReturnExtension)
      return llvm::createStringError(llvm::formatv(
          "the programs of '{0}' have type '{1}' ({2}), those "
          "of '{3}' '{4}' ({5})",
          Where(I), S.CType, S.Text, FirstFile, First->CType, First->Text));
  }
  if (!First)
    return llvm::createStringError(
        "no program found: mark programs with "
        "DISPATCHGEN_PROGRAM (dispatch-gen/program.h) or name "
        "their type with --prototype");
  return *First;
}

} // namespace dispatchgen
