//===- EmitCommand.cpp - dispatch-gen emit --------------------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// `dispatch-gen emit` builds an ahead-of-time dispatcher for a fixed target
// set and writes it as LLVM IR, assembly or an object file.
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "dispatch-gen/CodeEmitter.h"
#include "dispatch-gen/CodeInspector.h"
#include "dispatch-gen/DispatchIRBuilder.h"
#include "dispatch-gen/X86ImageEmitter.h"

#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Target/TargetMachine.h"

#include <cmath>

using namespace llvm;

namespace dispatchgen::tool {

static cl::OptionCategory EmitCategory("emit options");
static cl::OptionCategory CodeGenCategory("Code generation options");

ArrayRef<const cl::OptionCategory *> getCategories() {
  static const cl::OptionCategory *Categories[] = {
      &EmitCategory, &CodeGenCategory, &getFrontendCategory()};
  return Categories;
}

static cl::list<std::string>
    Targets(cl::Positional, cl::sub(emitCommand()), cl::cat(EmitCategory),
            cl::desc("<symbol[@address][:weight]>... | <file.c>... "
                     "[-- clang-args]"));

static cl::opt<std::string> Signature(
    "signature", cl::sub(emitCommand()), cl::cat(EmitCategory),
    cl::value_desc("type"),
    cl::desc("The programs' function type in LLVM syntax, e.g. "
             "'i32 (ptr, ptr)' (required for symbol targets; derived from "
             "the C prototype for C files)"));

static cl::opt<std::string> Name("name", cl::sub(emitCommand()),
                                 cl::cat(EmitCategory), cl::init("dispatch"),
                                 cl::value_desc("symbol"),
                                 cl::desc("Name of the dispatcher function"));

static cl::opt<unsigned> SelectorArg(
    "selector-arg", cl::sub(emitCommand()), cl::cat(EmitCategory),
    cl::value_desc("index"),
    cl::desc("Dispatch on this (pointer) parameter of the signature and "
             "forward it; by default the dispatcher takes the target as an "
             "extra trailing parameter"));

static cl::opt<bool> Retpoline(
    "retpoline", cl::sub(emitCommand()), cl::cat(EmitCategory),
    cl::desc("Lower the fallback indirect call through a retpoline (x86)"));

static cl::opt<uint64_t> FallbackWeight(
    "fallback-weight", cl::sub(emitCommand()), cl::cat(EmitCategory),
    cl::init(1), cl::value_desc("count"),
    cl::desc("Branch weight of the fallback when targets carry weights"));

namespace {
/// What `--emit` writes.
enum class Output { LLVM, Asm, Obj, Bin, Layout };
/// How the layout becomes code.
enum class Lowering { IR, Direct };
} // namespace

static cl::list<double> CostModel(
    "cost-model", cl::sub(emitCommand()), cl::cat(EmitCategory),
    cl::CommaSeparated, cl::value_desc("compare,mispredict,indirect"),
    cl::desc("The cost model that lays out weighted targets: a predicted "
             "compare, a mispredicted one and a mispredicted indirect "
             "branch, in units of a twentieth of a retpoline, as `bench "
             "--calibrate` prints them on the machine the dispatcher will "
             "run on (default: LayoutCostModel's, 0.25,20,16)"));

static cl::opt<Output> Emit(
    "emit", cl::sub(emitCommand()), cl::cat(EmitCategory),
    cl::init(Output::Asm), cl::desc("What to write"),
    cl::values(clEnumValN(Output::LLVM, "llvm",
                          "Textual LLVM IR (--lowering=ir)"),
               clEnumValN(Output::Asm, "asm",
                          "Assembly, or the image disassembled (default)"),
               clEnumValN(Output::Obj, "obj", "Object file (--lowering=ir)"),
               clEnumValN(Output::Bin, "bin",
                          "The image's raw bytes (--lowering=direct)"),
               clEnumValN(Output::Layout, "layout",
                          "The compare tree both lowerings make, as text")));

static cl::opt<Lowering> LoweringKind(
    "lowering", cl::sub(emitCommand()), cl::cat(EmitCategory),
    cl::init(Lowering::IR), cl::desc("How the layout becomes code"),
    cl::values(clEnumValN(Lowering::IR, "ir",
                          "LLVM IR through the code generator (default)"),
               clEnumValN(Lowering::Direct, "direct",
                          "x86-64 machine code laid out directly, as a "
                          "live dispatcher does (address targets only)")));

static cl::opt<uint64_t> ImageAddress(
    "image-address", cl::sub(emitCommand()), cl::cat(EmitCategory),
    cl::value_desc("address"),
    cl::desc("--lowering=direct: where the image is placed (default: 64 "
             "KiB below the lowest target, aligned to 64 KiB)"));

static cl::opt<std::string> OutputPath("o", cl::sub(emitCommand()),
                                       cl::cat(EmitCategory), cl::init("-"),
                                       cl::value_desc("file"),
                                       cl::desc("Output file ('-' = stdout)"));

static cl::opt<std::string>
    TargetTriple("target-triple", cl::sub(emitCommand()),
                 cl::cat(CodeGenCategory), cl::value_desc("triple"),
                 cl::desc("Target triple (default: the host's)"));

static cl::opt<std::string> MCPU("mcpu", cl::sub(emitCommand()),
                                 cl::cat(CodeGenCategory),
                                 cl::value_desc("cpu"),
                                 cl::desc("Target CPU (default: generic for "
                                          "a foreign triple, else the host)"));

static cl::opt<std::string> MAttr("mattr", cl::sub(emitCommand()),
                                  cl::cat(CodeGenCategory),
                                  cl::value_desc("a1,+a2,-a3"),
                                  cl::desc("Target features"));

static cl::opt<char> OptLevel("O", cl::sub(emitCommand()),
                              cl::cat(CodeGenCategory), cl::Prefix,
                              cl::init('2'), cl::value_desc("0-3"),
                              cl::desc("Code generation optimisation level "
                                       "(default 2)"));

/// Targets and signature from C files: every non-static program, with the
/// signature Clang's ABI lowering gives their prototype.
static Error fillFromC(DispatcherSpec &Spec, const Invocation &Inv,
                       LLVMContext &Ctx, Triple &CTriple) {
  std::vector<std::string> Files(Targets.begin(), Targets.end());
  // Only the programs' names and type are needed: no code, no optimiser.
  auto Units = compileFiles(Files, Inv, /*ExposePrograms=*/false, Ctx,
                            /*FindOnly=*/true);
  if (!Units)
    return Units.takeError();
  // The triple Clang compiled for: the host's, or a `--target=` among the
  // Clang arguments. The signature was derived for it.
  if (!Units->empty())
    CTriple = Units->front().M->getTargetTriple();
  // Clang discards value names in the context it compiles in; the
  // dispatcher's IR reads better with them.
  Ctx.setDiscardValueNames(false);
  auto Sig = commonSignature(*Units, Files);
  if (!Sig)
    return Sig.takeError();
  if (Signature.getNumOccurrences()) {
    auto Given = parseSignature(Signature, Ctx);
    if (!Given)
      return Given.takeError();
    if (*Given != Sig->Type)
      return createStringError(
          inconvertibleErrorCode(),
          formatv("--signature='{0}' differs from the programs' '{1}' (C: "
                  "{2})",
                  Signature, Sig->Text, Sig->CType));
  }
  Spec.Signature = Sig->Type;
  Spec.ReturnExtension = Sig->ReturnExtension;
  Spec.ParamExtensions = Sig->ParamExtensions;
  for (const CompiledUnit &U : *Units)
    for (const FoundProgram &P : U.Programs) {
      if (P.Static) {
        warn(Inv.ToolName,
             formatv("{0}:{1}: program '{2}' is static: another object "
                     "cannot call it, so it is left to the fallback",
                     P.File, P.Line, P.Name));
        continue;
      }
      DispatchTarget T;
      T.Symbol = P.Symbol;
      Spec.Targets.push_back(std::move(T));
    }
  return Error::success();
}

/// Writes Bytes to Path: a regular file (or a new one) is replaced at once
/// by a complete temporary file renamed over it (over the file a symbolic
/// link names, not the link), so a failure leaves the old one whole; "-"
/// is standard output, and an existing file of another kind (a device, a
/// pipe) is written in place.
static Error writeOutput(StringRef Path, StringRef Bytes) {
  auto Failed = [&](const Twine &Why) {
    return createStringError(inconvertibleErrorCode(),
                             "cannot write '" + Path + "': " + Why);
  };
  auto WriteTo = [&](raw_fd_ostream &OS) -> Error {
    OS << Bytes;
    OS.flush();
    if (!OS.has_error())
      return Error::success();
    std::string Why = OS.error().message();
    // A stream destroyed with a pending error aborts the process.
    OS.clear_error();
    return Failed(Why);
  };
  if (Path == "-")
    return WriteTo(outs());
  sys::fs::file_status Status;
  bool Exists = !sys::fs::status(Path, Status);
  if (Exists && sys::fs::is_directory(Status))
    return Failed("it is a directory");
  if (Exists && !sys::fs::is_regular_file(Status)) {
    std::error_code EC;
    raw_fd_ostream OS(Path, EC);
    if (EC)
      return Failed(EC.message());
    return WriteTo(OS);
  }
  SmallString<256> Target(Path);
  if (Exists)
    if (std::error_code EC = sys::fs::real_path(Path, Target))
      return Failed(EC.message());
  auto Temp = sys::fs::TempFile::create(Target + ".tmp-%%%%%%");
  if (!Temp)
    return Failed(toString(Temp.takeError()));
  Error E = Error::success();
  {
    raw_fd_ostream OS(Temp->FD, /*shouldClose=*/false);
    E = WriteTo(OS);
  }
  if (E)
    return joinErrors(std::move(E), Temp->discard());
  if (Error KeepErr = Temp->keep(Target))
    return Failed(toString(std::move(KeepErr)));
  return Error::success();
}

/// The direct lowering of Spec for Triple: the laid-out x86-64 image,
/// relocated for --image-address, as raw bytes (Bin) or disassembled.
static Error emitDirect(const DispatcherSpec &Spec, const Triple &TT,
                        raw_ostream &OS) {
  auto Failed = [](const Twine &Why) {
    return createStringError(inconvertibleErrorCode(),
                             "--lowering=direct: " + Why);
  };
  if (TT.getArch() != Triple::x86_64)
    return Failed("it makes x86-64 code, and the target is '" + TT.str() +
                  "'; use --lowering=ir");
  for (const DispatchTarget &T : Spec.Targets)
    if (!T.Address)
      return Failed("target '" + T.Symbol +
                    "' has no address; the image jumps to addresses "
                    "(SYMBOL@ADDRESS)");
  std::optional<unsigned> Reg =
      getX86SelectorRegister(Spec.Signature, Spec.SelectorArg);
  if (!Reg)
    return Failed("the selector of this signature does not arrive in a "
                  "general-purpose register by counting; use --lowering=ir");
  std::vector<LayoutCase> Layout = DispatchIRBuilder::getLayoutCases(Spec);
  std::vector<ImageCase> Cases;
  uint64_t Lowest = UINT64_MAX;
  for (size_t I = 0; I < Layout.size(); ++I) {
    Cases.push_back({Layout[I].Key, Layout[I].Key, Layout[I].Weight});
    Lowest = std::min(Lowest, Layout[I].Key);
  }
  // A retpoline fallback is the image's own, on the selector's register, as
  // a live dispatcher's laid-out image has it: the bytes need no thunk.
  // The layout the IR lowering makes of the spec: its weights, fallback
  // weight and cost model.
  DispatchLayout Chosen = DispatchIRBuilder::getLayout(Spec);
  X86ImageOptions Options;
  Options.InlineRetpoline = Spec.RetpolineFallback;
  Options.Layout = &Chosen;
  auto Image = emitX86Image(Cases, *Reg, Options);
  if (!Image)
    return Failed(toString(Image.takeError()));
  constexpr uint64_t Align = 64 * 1024;
  uint64_t Base = ImageAddress.getNumOccurrences() ? ImageAddress.getValue()
                  : Lowest != UINT64_MAX && Lowest >= 2 * Align
                      ? alignDown(Lowest, Align) - Align
                      : 0;
  auto Bytes = relocateX86Image(*Image, Cases, Base, /*Thunk=*/0);
  if (!Bytes)
    return Failed(toString(Bytes.takeError()));
  if (Emit == Output::Bin) {
    OS.write(reinterpret_cast<const char *>(Bytes->data()), Bytes->size());
    return Error::success();
  }
  auto Inspector = CodeInspector::create(TT.str());
  if (!Inspector)
    return Inspector.takeError();
  auto Insts = (*Inspector)->disassemble(*Bytes, Base);
  if (!Insts)
    return Insts.takeError();
  DenseMap<uint64_t, StringRef> Names;
  for (const DispatchTarget &T : Spec.Targets)
    Names[*T.Address] = T.Symbol;
  OS << formatv("{0}: direct lowering, {1} bytes at {2:x}\n", Spec.Name,
                Bytes->size(), Base);
  (*Inspector)->print(*Insts, OS, [&](uint64_t Address) -> std::string {
    return Names.lookup(Address).str();
  });
  return Error::success();
}

int runEmit(const Invocation &Inv) {
  StringRef ToolName = Inv.ToolName;
  std::optional<CodeGenOptLevel> Level = CodeGenOpt::parseLevel(OptLevel);
  if (!Level)
    return fail(ToolName, formatv("invalid optimisation level -O{0}: expected "
                                  "0, 1, 2 or 3",
                                  OptLevel.getValue()));
  EmitOptions Opts;
  Opts.Triple = TargetTriple;
  Opts.CPU = MCPU;
  Opts.Features = MAttr;
  Opts.OptLevel = *Level;
  Opts.Kind = Emit == Output::LLVM  ? EmitKind::LLVMIR
              : Emit == Output::Obj ? EmitKind::Object
                                    : EmitKind::Assembly;
  bool Direct = LoweringKind == Lowering::Direct;
  if (Direct && (Emit == Output::LLVM || Emit == Output::Obj))
    return fail(ToolName, "--lowering=direct writes no LLVM IR or object "
                          "file: use --emit=asm, --emit=bin or "
                          "--emit=layout");
  if (!Direct && Emit == Output::Bin)
    return fail(ToolName, "--emit=bin writes the image of --lowering=direct");

  if ((Emit == Output::Obj || Emit == Output::Bin) && OutputPath == "-" &&
      sys::Process::StandardOutIsDisplayed())
    return fail(ToolName, "refusing to write binary output to a terminal; "
                          "use -o FILE");

  LLVMContext Ctx;
  Module M(Name, Ctx);
  if (Error E = prepareModule(M, Opts))
    return fail(ToolName, std::move(E));

  DispatcherSpec Spec;
  Spec.Name = Name;
  Spec.RetpolineFallback = Retpoline;
  Spec.FallbackWeight = FallbackWeight;
  if (!CostModel.empty()) {
    if (CostModel.size() != 3 ||
        any_of(CostModel, [](double V) { return !std::isfinite(V) || V < 0; }))
      return fail(ToolName, "--cost-model takes three costs, finite and not "
                            "negative: compare,mispredict,indirect");
    Spec.CostModel.Compare = CostModel[0];
    Spec.CostModel.Mispredict = CostModel[1];
    Spec.CostModel.IndirectMispredict = CostModel[2];
  }
  if (SelectorArg.getNumOccurrences())
    Spec.SelectorArg = SelectorArg;
  size_t CFiles =
      llvm::count_if(Targets, [](const std::string &T) { return isCFile(T); });
  if (CFiles != 0 && CFiles != Targets.size())
    return fail(ToolName, "give either C files or target symbols, not both");
  if (CFiles) {
    // Clang compiles for --target-triple too, unless its own arguments name
    // a target.
    Invocation CInv = Inv;
    bool ClangTarget = llvm::any_of(Inv.ClangArgs, [](StringRef A) {
      return A.starts_with("--target=") || A == "-target" ||
             A.starts_with("-target=");
    });
    if (!TargetTriple.empty() && !ClangTarget)
      CInv.ClangArgs.push_back("--target=" + TargetTriple);
    Triple CTriple;
    if (Error E = fillFromC(Spec, CInv, Ctx, CTriple))
      return fail(ToolName, std::move(E));
    // The dispatcher must be made for the target the signature was derived
    // for: take Clang's, or refuse a --target-triple that differs (the
    // vendor aside, which normalisation fills in differently).
    const Triple &Mine = M.getTargetTriple();
    if (!CTriple.str().empty() &&
        (CTriple.getArch() != Mine.getArch() ||
         CTriple.getOS() != Mine.getOS() ||
         CTriple.getEnvironment() != Mine.getEnvironment())) {
      if (!TargetTriple.empty())
        return fail(ToolName,
                    formatv("the C files were compiled for '{0}' (the Clang "
                            "arguments) but --target-triple is '{1}'; give "
                            "the same target to both",
                            CTriple.str(), M.getTargetTriple().str()));
      Opts.Triple = CTriple.str();
      if (Error E = prepareModule(M, Opts))
        return fail(ToolName, std::move(E));
    }
  } else {
    if (!Signature.getNumOccurrences())
      return fail(ToolName, "--signature is required for symbol targets "
                            "(e.g. --signature='i32 (ptr, ptr)')");
    if (!Inv.ClangArgs.empty())
      return fail(ToolName, "compiler flags after '--' need C files");
    auto SigOrErr = parseSignature(Signature, Ctx);
    if (!SigOrErr)
      return fail(ToolName, SigOrErr.takeError());
    Spec.Signature = *SigOrErr;
    for (const std::string &Text : Targets) {
      auto TargetOrErr = parseTargetSpec(Text);
      if (!TargetOrErr)
        return fail(ToolName, TargetOrErr.takeError());
      Spec.Targets.push_back(std::move(*TargetOrErr));
    }
  }
  if (Spec.Targets.empty())
    warn(ToolName, "no targets given: the dispatcher only does the indirect "
                   "call");

  // All of it in memory first: a failure (or a crash) in code generation
  // leaves an existing output file as it was.
  SmallString<0> Buffer;
  raw_svector_ostream BufferOS(Buffer);
  if (Emit == Output::Layout || Direct) {
    // Check the spec as build() does before laying anything out.
    if (auto FOrErr = DispatchIRBuilder(M).build(Spec); !FOrErr)
      return fail(ToolName, FOrErr.takeError());
    if (Emit == Output::Layout)
      DispatchIRBuilder::getLayout(Spec).print(
          BufferOS, DispatchIRBuilder::getLayoutCases(Spec),
          [&](uint32_t C) { return Spec.Targets[C].Symbol; });
    else if (Error E = emitDirect(Spec, M.getTargetTriple(), BufferOS))
      return fail(ToolName, std::move(E));
    if (Error E = writeOutput(OutputPath, Buffer))
      return fail(ToolName, std::move(E));
    return 0;
  }

  if (auto FOrErr = DispatchIRBuilder(M).build(Spec); !FOrErr)
    return fail(ToolName, FOrErr.takeError());

  // A return value the target passes in memory: the backend would abort
  // on the tail call; say why instead, before any code is made.
  if (Opts.Kind != EmitKind::LLVMIR) {
    auto TM = createTargetMachine(Opts);
    if (!TM)
      return fail(ToolName, TM.takeError());
    if (Error E = DispatchIRBuilder::checkLowerable(**TM, Spec.Signature))
      return fail(ToolName, std::move(E));
  }
  if (Error E = emitModule(M, Opts, BufferOS))
    return fail(ToolName, std::move(E));
  if (Error E = writeOutput(OutputPath, Buffer))
    return fail(ToolName, std::move(E));
  return 0;
}

} // namespace dispatchgen::tool
