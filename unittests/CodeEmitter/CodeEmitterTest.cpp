//===- CodeEmitterTest.cpp - Tests for CodeEmitter ------------------------===//
//
// Part of dispatch-gen.
// SPDX-License-Identifier: Apache-2.0 WITH LLVM-exception
//
//===----------------------------------------------------------------------===//
//
// Unit tests for target machine creation, module preparation and emission as
// IR, assembly and ELF objects. The disassembly tests decode the dispatcher's
// machine code with LLVM's MC disassembler and check what DESIGN.md requires
// of a live image: the only indirect branch is the fallback, and with a
// retpoline fallback there is none at all.
//
//===----------------------------------------------------------------------===//

#include "dispatch-gen/CodeEmitter.h"

#include "TestingSupport.h"
#include "dispatch-gen/DispatchIRBuilder.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/AsmParser/Parser.h"
#include "llvm/IR/BasicBlock.h"
#include "llvm/IR/DerivedTypes.h"
#include "llvm/IR/Function.h"
#include "llvm/IR/Instructions.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/MCAsmInfo.h"
#include "llvm/MC/MCContext.h"
#include "llvm/MC/MCDisassembler/MCDisassembler.h"
#include "llvm/MC/MCInst.h"
#include "llvm/MC/MCInstPrinter.h"
#include "llvm/MC/MCInstrAnalysis.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Object/ELFObjectFile.h"
#include "llvm/Object/ObjectFile.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

using namespace llvm;
using namespace dispatchgen;
using namespace dispatchgen::unittest;
using ::testing::AllOf;
using ::testing::HasSubstr;

namespace {

const char *const X86Triple = "x86_64-pc-linux-gnu";
const char *const AArch64Triple = "aarch64-unknown-linux-gnu";
const char *const TargetSymbols[] = {"a", "b", "c"};

EmitOptions makeOptions(StringRef Triple, EmitKind Kind) {
  EmitOptions Opts;
  Opts.Triple = Triple.str();
  Opts.Kind = Kind;
  return Opts;
}

std::string printModule(const Module &M) {
  std::string Text;
  raw_string_ostream OS(Text);
  M.print(OS, nullptr);
  return Text;
}

/// How the dispatcher under test reaches its targets.
enum class DispatchForm { Symbols, Addresses };

/// Prepares M for Opts and builds into it the dispatcher `dispatch` for
/// `i32 (ptr, ptr)` over the targets a, b and c.
void buildDispatcher(Module &M, const EmitOptions &Opts, DispatchForm Form,
                     bool Retpoline = false) {
  ASSERT_THAT(takeError(prepareModule(M, Opts)), Succeeded());
  auto SigOrErr = parseSignature("i32 (ptr, ptr)", M.getContext());
  ASSERT_THAT(takeError(SigOrErr), Succeeded());
  DispatcherSpec Spec;
  Spec.Name = "dispatch";
  Spec.Signature = *SigOrErr;
  Spec.RetpolineFallback = Retpoline;
  uint64_t Address = 0x7f0000001000;
  for (const char *Symbol : TargetSymbols) {
    DispatchTarget T;
    T.Symbol = Symbol;
    if (Form == DispatchForm::Addresses)
      T.Address = Address;
    Address += 0x1000;
    Spec.Targets.push_back(std::move(T));
  }
  ASSERT_THAT(takeError(DispatchIRBuilder(M).build(Spec)), Succeeded());
}

/// The instructions of Function in textual assembly, as (mnemonic, operands)
/// pairs, between its label and LLVM's `.Lfunc_end` label.
std::vector<std::pair<std::string, std::string>>
getAsmInstructions(StringRef Asm, StringRef Function) {
  std::vector<std::pair<std::string, std::string>> Insts;
  SmallVector<StringRef, 64> Lines;
  Asm.split(Lines, '\n');
  bool InFunction = false;
  for (StringRef Line : Lines) {
    Line = Line.trim();
    if (Line == (Function + ":").str()) {
      InFunction = true;
      continue;
    }
    if (!InFunction)
      continue;
    if (Line.starts_with(".Lfunc_end"))
      break;
    // Directives, labels and comments.
    if (Line.empty() || Line.starts_with(".") || Line.ends_with(":") ||
        Line.starts_with("#") || Line.starts_with("//"))
      continue;
    auto [Mnemonic, Operands] = getToken(Line);
    Insts.emplace_back(Mnemonic.str(), Operands.trim().str());
  }
  return Insts;
}

/// Whether Insts hold a branch with one of Mnemonics to Symbol (directly or
/// through the PLT, which the linker resolves to a direct branch within an
/// executable).
bool hasBranchTo(ArrayRef<std::pair<std::string, std::string>> Insts,
                 ArrayRef<StringRef> Mnemonics, StringRef Symbol) {
  for (const auto &[Mnemonic, Operands] : Insts)
    if (is_contained(Mnemonics, Mnemonic) &&
        (Operands == Symbol || Operands == (Symbol + "@PLT").str()))
      return true;
  return false;
}

/// A function's machine code found in a relocatable object.
struct FunctionCode {
  object::SectionRef Section;
  /// Offset of the function in Section, and its bytes.
  uint64_t Offset = 0;
  ArrayRef<uint8_t> Bytes;
};

Expected<FunctionCode> findFunction(const object::ObjectFile &Obj,
                                    StringRef Name) {
  for (const object::SymbolRef &Sym : Obj.symbols()) {
    Expected<StringRef> SymName = Sym.getName();
    if (!SymName)
      return SymName.takeError();
    if (*SymName != Name)
      continue;
    Expected<object::section_iterator> Sec = Sym.getSection();
    if (!Sec)
      return Sec.takeError();
    if (*Sec == Obj.section_end())
      return createStringError("symbol '%s' is not defined in a section",
                               Name.str().c_str());
    Expected<uint64_t> Address = Sym.getAddress();
    if (!Address)
      return Address.takeError();
    Expected<StringRef> Contents = (*Sec)->getContents();
    if (!Contents)
      return Contents.takeError();
    FunctionCode Code;
    Code.Section = **Sec;
    Code.Offset = *Address - (*Sec)->getAddress();
    uint64_t Size = object::ELFSymbolRef(Sym).getSize();
    if (Size == 0 || Code.Offset + Size > Contents->size())
      return createStringError("symbol '%s' has a bad size %llu",
                               Name.str().c_str(),
                               static_cast<unsigned long long>(Size));
    Code.Bytes = arrayRefFromStringRef(Contents->substr(Code.Offset, Size));
    return Code;
  }
  return createStringError("no symbol '%s' in the object", Name.str().c_str());
}

/// One decoded instruction of a function, classified for the tests.
struct DecodedInst {
  /// Offset in the function's section.
  uint64_t Offset = 0;
  uint64_t Size = 0;
  bool IsConditionalBranch = false;
  /// A branch or call to a PC-relative target (an address or relocation).
  bool IsDirect = false;
  /// A branch or call through a register or memory.
  bool IsIndirect = false;
  std::string Text;
};

/// The decoded machine code of a function and the relocations inside it.
struct DisassembledFunction {
  std::vector<DecodedInst> Insts;
  /// Section offset and symbol of each relocation inside the function.
  std::vector<std::pair<uint64_t, std::string>> Relocations;

  unsigned countIndirect() const {
    return count_if(Insts, [](const DecodedInst &I) { return I.IsIndirect; });
  }
  unsigned countDirectConditional() const {
    return count_if(Insts, [](const DecodedInst &I) {
      return I.IsConditionalBranch && I.IsDirect;
    });
  }
  /// Whether a direct branch or call holds a relocation against a symbol
  /// that matches Pred.
  template <typename PredT> bool hasDirectBranchTo(PredT Pred) const {
    for (const auto &[Offset, Symbol] : Relocations)
      for (const DecodedInst &I : Insts)
        if (I.IsDirect && Offset >= I.Offset && Offset < I.Offset + I.Size &&
            Pred(Symbol))
          return true;
    return false;
  }
  bool hasDirectBranchTo(StringRef Symbol) const {
    return hasDirectBranchTo([&](StringRef S) { return S == Symbol; });
  }

  /// An objdump-like listing for failure messages.
  std::string listing() const {
    std::string Text;
    raw_string_ostream OS(Text);
    for (const DecodedInst &I : Insts) {
      OS << format_hex(I.Offset, 6) << ": " << I.Text;
      for (const auto &[Offset, Symbol] : Relocations)
        if (Offset >= I.Offset && Offset < I.Offset + I.Size)
          OS << "    <reloc " << Symbol << ">";
      OS << (I.IsIndirect ? "    [indirect]" : "") << "\n";
    }
    return Text;
  }
};

/// Decodes the function Name in the relocatable object Object, built for
/// TM's target, with LLVM's MC disassembler.
Expected<DisassembledFunction>
disassembleFunction(StringRef Object, StringRef Name, const TargetMachine &TM) {
  auto ObjOrErr = object::ObjectFile::createObjectFile(
      MemoryBufferRef(Object, "dispatcher.o"));
  if (!ObjOrErr)
    return ObjOrErr.takeError();
  object::ObjectFile &Obj = **ObjOrErr;
  Expected<FunctionCode> Code = findFunction(Obj, Name);
  if (!Code)
    return Code.takeError();

  const Triple &TT = TM.getTargetTriple();
  const MCSubtargetInfo &STI = *TM.getMCSubtargetInfo();
  MCContext Ctx(TT, TM.getMCAsmInfo(), TM.getMCRegisterInfo(), &STI);
  std::unique_ptr<MCDisassembler> Disassembler(
      TM.getTarget().createMCDisassembler(STI, Ctx));
  std::unique_ptr<MCInstrAnalysis> Analysis(
      TM.getTarget().createMCInstrAnalysis(TM.getMCInstrInfo()));
  std::unique_ptr<MCInstPrinter> Printer(TM.getTarget().createMCInstPrinter(
      TT, TM.getMCAsmInfo()->getAssemblerDialect(), *TM.getMCAsmInfo(),
      *TM.getMCInstrInfo(), *TM.getMCRegisterInfo()));
  if (!Disassembler || !Analysis || !Printer)
    return createStringError("no disassembler for '%s'", TT.str().c_str());

  DisassembledFunction Result;
  for (uint64_t Pos = 0; Pos < Code->Bytes.size();) {
    MCInst Inst;
    uint64_t Size = 0;
    uint64_t Address = Code->Offset + Pos;
    if (Disassembler->getInstruction(Inst, Size, Code->Bytes.slice(Pos),
                                     Address,
                                     nulls()) != MCDisassembler::Success ||
        Size == 0)
      return createStringError("cannot decode '%s' at offset %llu",
                               Name.str().c_str(),
                               static_cast<unsigned long long>(Address));
    DecodedInst Decoded;
    Decoded.Offset = Address;
    Decoded.Size = Size;
    bool IsTransfer = Analysis->isBranch(Inst) || Analysis->isCall(Inst);
    uint64_t Target = 0;
    Decoded.IsDirect =
        IsTransfer && Analysis->evaluateBranch(Inst, Address, Size, Target);
    Decoded.IsIndirect =
        Analysis->isIndirectBranch(Inst) || (IsTransfer && !Decoded.IsDirect);
    Decoded.IsConditionalBranch = Analysis->isConditionalBranch(Inst);
    raw_string_ostream OS(Decoded.Text);
    Printer->printInst(&Inst, Address, "", STI, OS);
    Result.Insts.push_back(std::move(Decoded));
    Pos += Size;
  }

  uint64_t End = Code->Offset + Code->Bytes.size();
  for (const object::SectionRef &RelSec : Obj.sections()) {
    Expected<object::section_iterator> Relocated = RelSec.getRelocatedSection();
    if (!Relocated)
      return Relocated.takeError();
    if (*Relocated == Obj.section_end() || **Relocated != Code->Section)
      continue;
    for (const object::RelocationRef &Reloc : RelSec.relocations()) {
      uint64_t Offset = Reloc.getOffset();
      object::symbol_iterator Sym = Reloc.getSymbol();
      if (Offset < Code->Offset || Offset >= End || Sym == Obj.symbol_end())
        continue;
      Expected<StringRef> SymName = Sym->getName();
      if (!SymName)
        return SymName.takeError();
      Result.Relocations.emplace_back(Offset, SymName->str());
    }
  }
  return Result;
}

class CodeEmitterTest : public testing::Test {
protected:
  /// Emits M for Opts into a string; records a failure if emission fails.
  std::string emit(Module &M, const EmitOptions &Opts) {
    SmallString<0> Buffer;
    raw_svector_ostream OS(Buffer);
    EXPECT_THAT(takeError(emitModule(M, Opts, OS)), Succeeded());
    return Buffer.str().str();
  }

  LLVMContext Ctx;
  Module M{"dispatcher", Ctx};
};

//===----------------------------------------------------------------------===//
// createTargetMachine and prepareModule
//===----------------------------------------------------------------------===//

TEST_F(CodeEmitterTest, UnknownTripleIsAnErrorNamingIt) {
  EmitOptions Opts = makeOptions("nosucharch-unknown-linux", EmitKind::Object);
  EXPECT_THAT(takeError(createTargetMachine(Opts)),
              Failed(AllOf(HasSubstr("unknown target triple"),
                           HasSubstr("'nosucharch-unknown-linux'"))));
}

TEST_F(CodeEmitterTest, EmptyTripleSelectsTheHost) {
  auto TMOrErr = createTargetMachine(EmitOptions());
  ASSERT_THAT(takeError(TMOrErr), Succeeded());
  EXPECT_EQ((*TMOrErr)->getTargetTriple().str(),
            Triple(sys::getDefaultTargetTriple()).str());
}

TEST_F(CodeEmitterTest, PrepareModuleSetsTripleAndDataLayout) {
  for (const char *TripleName :
       {X86Triple, AArch64Triple, "i386-pc-linux-gnu"}) {
    SCOPED_TRACE(TripleName);
    EmitOptions Opts = makeOptions(TripleName, EmitKind::Object);
    Module Fresh("fresh", Ctx);
    ASSERT_THAT(takeError(prepareModule(Fresh, Opts)), Succeeded());
    auto TMOrErr = createTargetMachine(Opts);
    ASSERT_THAT(takeError(TMOrErr), Succeeded());
    EXPECT_EQ(Fresh.getTargetTriple().str(), TripleName);
    EXPECT_EQ(Fresh.getDataLayoutStr(),
              (*TMOrErr)->createDataLayout().getStringRepresentation());
  }
}

TEST_F(CodeEmitterTest, PreparedModuleHasTheTargetsPointerSize) {
  Module X86("x86", Ctx), I386("i386", Ctx);
  ASSERT_THAT(
      takeError(prepareModule(X86, makeOptions(X86Triple, EmitKind::Object))),
      Succeeded());
  ASSERT_THAT(takeError(prepareModule(
                  I386, makeOptions("i386-pc-linux-gnu", EmitKind::Object))),
              Succeeded());
  EXPECT_EQ(X86.getDataLayout().getPointerSizeInBits(), 64u);
  EXPECT_EQ(I386.getDataLayout().getPointerSizeInBits(), 32u);
}

TEST_F(CodeEmitterTest, PrepareModuleForUnknownTripleLeavesModuleAlone) {
  std::string Before = printModule(M);
  EXPECT_THAT(takeError(prepareModule(M, makeOptions("nosucharch-unknown-linux",
                                                     EmitKind::Object))),
              Failed(HasSubstr("nosucharch-unknown-linux")));
  EXPECT_EQ(printModule(M), Before);
}

//===----------------------------------------------------------------------===//
// emitModule
//===----------------------------------------------------------------------===//

TEST_F(CodeEmitterTest, LLVMIROutputIsTheDispatcherModule) {
  EmitOptions Opts = makeOptions(X86Triple, EmitKind::LLVMIR);
  buildDispatcher(M, Opts, DispatchForm::Symbols);
  std::string IR = emit(M, Opts);
  EXPECT_THAT(IR, HasSubstr("define i32 @dispatch(ptr"));
  EXPECT_THAT(IR, HasSubstr("target triple = \"x86_64-pc-linux-gnu\""));

  // The text is the module: it parses back, with the dispatcher defined.
  SMDiagnostic Diag;
  LLVMContext OtherCtx;
  std::unique_ptr<Module> Parsed = parseAssemblyString(IR, Diag, OtherCtx);
  ASSERT_TRUE(Parsed) << Diag.getMessage().str() << "\n" << IR;
  Function *F = Parsed->getFunction("dispatch");
  ASSERT_TRUE(F);
  EXPECT_FALSE(F->isDeclaration());
}

TEST_F(CodeEmitterTest, X86AssemblyBranchesDirectlyToEveryTarget) {
  for (DispatchForm Form : {DispatchForm::Symbols, DispatchForm::Addresses}) {
    SCOPED_TRACE(Form == DispatchForm::Symbols ? "symbol form"
                                               : "address form");
    LLVMContext FormCtx;
    Module FormM("dispatcher", FormCtx);
    EmitOptions Opts = makeOptions(X86Triple, EmitKind::Assembly);
    buildDispatcher(FormM, Opts, Form);
    std::string Asm = emit(FormM, Opts);
    EXPECT_THAT(Asm, HasSubstr(".globl\tdispatch"));
    auto Insts = getAsmInstructions(Asm, "dispatch");
    ASSERT_FALSE(Insts.empty()) << Asm;
    for (StringRef Symbol : TargetSymbols)
      EXPECT_TRUE(hasBranchTo(Insts, {"je", "jmp"}, Symbol))
          << "no je/jmp to '" << Symbol.str() << "' in\n"
          << Asm;
  }
}

TEST_F(CodeEmitterTest, X86ObjectIsELFDefiningTheDispatcher) {
  EmitOptions Opts = makeOptions(X86Triple, EmitKind::Object);
  buildDispatcher(M, Opts, DispatchForm::Symbols);
  std::string Object = emit(M, Opts);

  auto ObjOrErr = object::ObjectFile::createObjectFile(
      MemoryBufferRef(Object, "dispatcher.o"));
  ASSERT_THAT(takeError(ObjOrErr), Succeeded());
  object::ObjectFile &Obj = **ObjOrErr;
  EXPECT_TRUE(Obj.isELF());
  EXPECT_EQ(Obj.getArch(), Triple::x86_64);

  bool FoundDispatcher = false;
  std::vector<std::string> Undefined;
  for (const object::SymbolRef &Sym : Obj.symbols()) {
    Expected<StringRef> Name = Sym.getName();
    ASSERT_THAT(takeError(Name), Succeeded());
    Expected<uint32_t> Flags = Sym.getFlags();
    ASSERT_THAT(takeError(Flags), Succeeded());
    if (*Flags & object::SymbolRef::SF_Undefined) {
      Undefined.push_back(Name->str());
      continue;
    }
    if (*Name != "dispatch")
      continue;
    FoundDispatcher = true;
    EXPECT_TRUE(*Flags & object::SymbolRef::SF_Global);
    Expected<object::SymbolRef::Type> Type = Sym.getType();
    ASSERT_THAT(takeError(Type), Succeeded());
    EXPECT_EQ(*Type, object::SymbolRef::ST_Function);
    EXPECT_GT(object::ELFSymbolRef(Sym).getSize(), 0u);
  }
  EXPECT_TRUE(FoundDispatcher);
  // The targets are left to the linker.
  for (StringRef Symbol : TargetSymbols)
    EXPECT_TRUE(is_contained(Undefined, Symbol)) << Symbol.str();
}

TEST_F(CodeEmitterTest, AArch64AssemblyAndObjectAreEmitted) {
  EmitOptions AsmOpts = makeOptions(AArch64Triple, EmitKind::Assembly);
  buildDispatcher(M, AsmOpts, DispatchForm::Symbols);
  std::string Asm = emit(M, AsmOpts);
  auto Insts = getAsmInstructions(Asm, "dispatch");
  for (StringRef Symbol : TargetSymbols)
    EXPECT_TRUE(hasBranchTo(Insts, {"b", "b.eq"}, Symbol))
        << "no b/b.eq to '" << Symbol.str() << "' in\n"
        << Asm;

  std::string Object = emit(M, makeOptions(AArch64Triple, EmitKind::Object));
  auto ObjOrErr = object::ObjectFile::createObjectFile(
      MemoryBufferRef(Object, "dispatcher.o"));
  ASSERT_THAT(takeError(ObjOrErr), Succeeded());
  EXPECT_TRUE((*ObjOrErr)->isELF());
  EXPECT_EQ((*ObjOrErr)->getArch(), Triple::aarch64);
  EXPECT_THAT(takeError(findFunction(**ObjOrErr, "dispatch")), Succeeded());
}

TEST_F(CodeEmitterTest, EmittingForAnotherTripleIsAnError) {
  buildDispatcher(M, makeOptions(AArch64Triple, EmitKind::Object),
                  DispatchForm::Symbols);
  for (EmitKind Kind : {EmitKind::Assembly, EmitKind::Object}) {
    SCOPED_TRACE(Kind == EmitKind::Assembly ? "assembly" : "object");
    SmallString<0> Buffer;
    raw_svector_ostream OS(Buffer);
    EXPECT_THAT(takeError(emitModule(M, makeOptions(X86Triple, Kind), OS)),
                Failed(AllOf(HasSubstr(AArch64Triple), HasSubstr(X86Triple))));
    EXPECT_TRUE(Buffer.empty()) << "wrote output for the wrong target";
  }
}

TEST_F(CodeEmitterTest, WhatABackendCannotLowerIsAnErrorNotAnAbort) {
  // These backends end the process (report_fatal_error) on a dispatcher's
  // code: PowerPC, MIPS and AMDGPU on the musttail call that forwards a
  // selector given as a parameter (--selector-arg), R600 on a function's
  // address, SPIR-V on an indirect call. A library in a host's process
  // returns an error instead, before the backend runs, and writes nothing.
  struct Case {
    const char *Triple;
    bool ForwardSelector;
    const char *Expected;
  };
  const Case Cases[] = {
      {"powerpc64le-unknown-linux-gnu", true, "musttail"},
      {"powerpc-unknown-linux-gnu", true, "musttail"},
      {"mips-unknown-linux-gnu", true, "musttail"},
      {"mips64el-unknown-linux-gnuabi64", true, "musttail"},
      {"amdgcn-amd-amdhsa", true, "musttail"},
      {"r600-unknown-unknown", false, "function pointer"},
      {"spirv64-unknown-unknown", false, "function pointer"},
  };
  for (const Case &C : Cases) {
    SCOPED_TRACE(C.Triple);
    LLVMContext Context;
    Module Mod("dispatcher", Context);
    EmitOptions Opts = makeOptions(C.Triple, EmitKind::Object);
    ASSERT_THAT(takeError(prepareModule(Mod, Opts)), Succeeded());
    auto SigOrErr = parseSignature("i32 (ptr)", Context);
    ASSERT_THAT(takeError(SigOrErr), Succeeded());
    DispatcherSpec Spec;
    Spec.Name = "dispatch";
    Spec.Signature = *SigOrErr;
    if (C.ForwardSelector)
      Spec.SelectorArg = 0;
    for (const char *Symbol : TargetSymbols) {
      DispatchTarget T;
      T.Symbol = Symbol;
      Spec.Targets.push_back(std::move(T));
    }
    ASSERT_THAT(takeError(DispatchIRBuilder(Mod).build(Spec)), Succeeded());
    SmallString<0> Buffer;
    raw_svector_ostream OS(Buffer);
    EXPECT_THAT(takeError(emitModule(Mod, Opts, OS)),
                Failed(AllOf(HasSubstr(C.Expected),
                             HasSubstr(Triple(C.Triple).getArchName().str()))));
    EXPECT_TRUE(Buffer.empty());
  }
  // The same dispatchers without musttail lower on the first three.
  for (const char *T : {"powerpc64le-unknown-linux-gnu",
                        "mips-unknown-linux-gnu", "amdgcn-amd-amdhsa"}) {
    SCOPED_TRACE(T);
    LLVMContext Context;
    Module Mod("dispatcher", Context);
    EmitOptions Opts = makeOptions(T, EmitKind::Object);
    buildDispatcher(Mod, Opts, DispatchForm::Symbols);
    SmallString<0> Buffer;
    raw_svector_ostream OS(Buffer);
    EXPECT_THAT(takeError(emitModule(Mod, Opts, OS)), Succeeded());
    EXPECT_FALSE(Buffer.empty());
  }
}

TEST_F(CodeEmitterTest, ABackendDiagnosticIsTheReturnedError) {
  // A float returned with SSE disabled: the backend reports it through
  // the context's diagnostic handler, which printed it and went on.
  const DiagnosticHandler *Before = Ctx.getDiagHandlerPtr();
  EmitOptions Opts = makeOptions(X86Triple, EmitKind::Assembly);
  Opts.Features = "-sse,-sse2";
  ASSERT_THAT(takeError(prepareModule(M, Opts)), Succeeded());
  Type *Float = Type::getFloatTy(Ctx);
  Function *F = Function::Create(FunctionType::get(Float, {Float}, false),
                                 GlobalValue::ExternalLinkage, "f", M);
  ReturnInst::Create(Ctx, F->getArg(0), BasicBlock::Create(Ctx, "entry", F));
  SmallString<0> Buffer;
  raw_svector_ostream OS(Buffer);
  EXPECT_THAT(
      takeError(emitModule(M, Opts, OS)),
      Failed(AllOf(HasSubstr("cannot generate code for"),
                   HasSubstr("SSE register return with SSE disabled"))));
  // The context's own handler is back.
  EXPECT_EQ(Ctx.getDiagHandlerPtr(), Before);
}

TEST_F(CodeEmitterTest, EmittingAnUnpreparedModuleIsAnError) {
  Function::Create(FunctionType::get(Type::getVoidTy(Ctx), false),
                   GlobalValue::ExternalLinkage, "f", M);
  SmallString<0> Buffer;
  raw_svector_ostream OS(Buffer);
  EXPECT_THAT(
      takeError(emitModule(M, makeOptions(X86Triple, EmitKind::Object), OS)),
      Failed(HasSubstr(X86Triple)));
  EXPECT_TRUE(Buffer.empty());
}

TEST_F(CodeEmitterTest, EmittingAnInvalidModuleIsAnError) {
  EmitOptions Opts = makeOptions(X86Triple, EmitKind::Object);
  ASSERT_THAT(takeError(prepareModule(M, Opts)), Succeeded());
  // A block without a terminator.
  Function *F = Function::Create(FunctionType::get(Type::getVoidTy(Ctx), false),
                                 GlobalValue::ExternalLinkage, "broken", M);
  BasicBlock::Create(Ctx, "entry", F);
  for (EmitKind Kind :
       {EmitKind::LLVMIR, EmitKind::Assembly, EmitKind::Object}) {
    SCOPED_TRACE("emit kind " + std::to_string(static_cast<int>(Kind)));
    SmallString<0> Buffer;
    raw_svector_ostream OS(Buffer);
    Opts.Kind = Kind;
    EXPECT_THAT(takeError(emitModule(M, Opts, OS)),
                Failed(HasSubstr("invalid")));
    EXPECT_TRUE(Buffer.empty());
  }
}

//===----------------------------------------------------------------------===//
// The dispatcher's machine code
//===----------------------------------------------------------------------===//

/// Emits an object of the three-target dispatcher for a triple and decodes
/// the dispatcher function.
class CodeEmitterDisassemblyTest : public CodeEmitterTest {
protected:
  DisassembledFunction disassembleDispatcher(StringRef TripleName,
                                             DispatchForm Form,
                                             bool Retpoline = false) {
    EmitOptions Opts = makeOptions(TripleName, EmitKind::Object);
    auto TMOrErr = createTargetMachine(Opts);
    EXPECT_THAT(takeError(TMOrErr), Succeeded());
    if (!TMOrErr)
      return {};
    buildDispatcher(M, Opts, Form, Retpoline);
    std::string Object = emit(M, Opts);
    auto CodeOrErr = disassembleFunction(Object, "dispatch", **TMOrErr);
    EXPECT_THAT(takeError(CodeOrErr), Succeeded());
    if (!CodeOrErr)
      return {};
    EXPECT_FALSE(CodeOrErr->Insts.empty());
    return std::move(*CodeOrErr);
  }
};

TEST_F(CodeEmitterDisassemblyTest, X86SymbolDispatcherOnlyFallbackIsIndirect) {
  DisassembledFunction Code =
      disassembleDispatcher(X86Triple, DispatchForm::Symbols);
  EXPECT_EQ(Code.countIndirect(), 1u) << Code.listing();
}

TEST_F(CodeEmitterDisassemblyTest, X86AddressDispatcherOnlyFallbackIsIndirect) {
  DisassembledFunction Code =
      disassembleDispatcher(X86Triple, DispatchForm::Addresses);
  EXPECT_EQ(Code.countIndirect(), 1u) << Code.listing();
}

TEST_F(CodeEmitterDisassemblyTest,
       AArch64SymbolDispatcherOnlyFallbackIsIndirect) {
  DisassembledFunction Code =
      disassembleDispatcher(AArch64Triple, DispatchForm::Symbols);
  EXPECT_EQ(Code.countIndirect(), 1u) << Code.listing();
}

TEST_F(CodeEmitterDisassemblyTest, X86RetpolineSymbolDispatcherHasNoIndirect) {
  DisassembledFunction Code = disassembleDispatcher(
      X86Triple, DispatchForm::Symbols, /*Retpoline=*/true);
  EXPECT_EQ(Code.countIndirect(), 0u) << Code.listing();
  // The fallback is still there, as a jump to the retpoline thunk.
  EXPECT_TRUE(Code.hasDirectBranchTo([](StringRef Symbol) {
    return Symbol.contains("retpoline");
  })) << Code.listing();
}

TEST_F(CodeEmitterDisassemblyTest, X86RetpolineAddressDispatcherHasNoIndirect) {
  DisassembledFunction Code = disassembleDispatcher(
      X86Triple, DispatchForm::Addresses, /*Retpoline=*/true);
  EXPECT_EQ(Code.countIndirect(), 0u) << Code.listing();
  EXPECT_TRUE(Code.hasDirectBranchTo([](StringRef Symbol) {
    return Symbol.contains("retpoline");
  })) << Code.listing();
}

TEST_F(CodeEmitterDisassemblyTest, X86SymbolDispatcherBranchesToEachTarget) {
  DisassembledFunction Code =
      disassembleDispatcher(X86Triple, DispatchForm::Symbols);
  EXPECT_GE(Code.countDirectConditional(), std::size(TargetSymbols))
      << Code.listing();
  for (StringRef Symbol : TargetSymbols)
    EXPECT_TRUE(Code.hasDirectBranchTo(Symbol))
        << "no direct branch to '" << Symbol.str() << "' in\n"
        << Code.listing();
}

TEST_F(CodeEmitterDisassemblyTest, X86AddressDispatcherBranchesToEachTarget) {
  DisassembledFunction Code =
      disassembleDispatcher(X86Triple, DispatchForm::Addresses);
  for (StringRef Symbol : TargetSymbols)
    EXPECT_TRUE(Code.hasDirectBranchTo(Symbol))
        << "no direct branch to '" << Symbol.str() << "' in\n"
        << Code.listing();
}

} // namespace
